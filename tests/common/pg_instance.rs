//! A private PostgreSQL server for tests that must stop or restart it: initdb under a
//! temporary directory, run as the unprivileged `postgres` OS user when the tests run as
//! root, on a free port, with trust auth on 127.0.0.1. Stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct PgInstance {
    pub port: u16,
    /// Held until the server first starts.
    hold: std::sync::Mutex<super::PortHold>,
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// Extra `-c` settings.
    extra: String,
}

fn bindir() -> PathBuf {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if p.join("initdb").exists() {
            return p;
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries under /usr/lib/postgresql")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    found.sort();
    found.pop().expect("initdb")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false)
}

/// Run a PostgreSQL binary as the unprivileged user (PostgreSQL refuses to run as root).
fn run(bin: &Path, args: &[&str]) -> std::process::Output {
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    };
    cmd.args(args)
        .current_dir("/tmp")
        .output()
        .expect("run PostgreSQL binary")
}

impl PgInstance {
    /// initdb and start; blocking, so call it from `spawn_blocking` or before the runtime.
    pub fn start() -> PgInstance {
        Self::start_with("")
    }

    /// With `wal_level = logical` and replication slots (tenant moves).
    pub fn start_logical() -> PgInstance {
        Self::start_with("-c wal_level=logical -c max_replication_slots=8 -c max_wal_senders=8")
    }

    /// initdb and start with extra server options (`-c name=value ...`).
    pub fn start_with(extra: &str) -> PgInstance {
        let inst = Self::init(extra);
        inst.ctl(&["start"]);
        inst
    }

    /// With TLS on (`ssl=on`), the server's certificate and key from PEM files, and
    /// `hba` as its whole pg_hba.conf.
    pub fn start_tls(cert: &Path, key: &Path, hba: &str) -> PgInstance {
        let inst = Self::init("-c ssl=on");
        let data = inst.dir.path().join("data");
        std::fs::copy(cert, data.join("server.crt")).unwrap();
        std::fs::copy(key, data.join("server.key")).unwrap();
        std::fs::write(data.join("pg_hba.conf"), hba).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            data.join("server.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        if is_root() {
            let out = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&data)
                .output()
                .unwrap();
            assert!(out.status.success());
        }
        inst.ctl(&["start"]);
        inst
    }

    /// initdb on a free port, not started.
    fn init(extra: &str) -> PgInstance {
        let bin = bindir();
        let dir = tempfile::Builder::new().prefix("tg-pg-").tempdir().unwrap();
        if is_root() {
            let out = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .output()
                .unwrap();
            assert!(out.status.success());
        }
        let data = dir.path().join("data");
        let out = run(
            &bin.join("initdb"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let hold = super::PortHold::new();
        PgInstance {
            port: hold.port,
            hold: std::sync::Mutex::new(hold),
            dir,
            bin,
            extra: extra.to_owned(),
        }
    }

    fn ctl(&self, action: &[&str]) {
        self.hold.lock().unwrap().release();
        let data = self.dir.path().join("data");
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50 {}",
            self.port,
            self.dir.path().display(),
            self.extra
        );
        let log = self.dir.path().join("log");
        let mut args = vec![
            "-D",
            data.to_str().unwrap(),
            "-o",
            &opts,
            "-l",
            log.to_str().unwrap(),
            "-w",
            "-m",
            "fast",
        ];
        args.extend_from_slice(action);
        let out = run(&self.bin.join("pg_ctl"), &args);
        assert!(
            out.status.success(),
            "pg_ctl {action:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Freeze (`true`) or thaw the postmaster with SIGSTOP/SIGCONT: while frozen, new
    /// connections are accepted by the kernel but never answered.
    pub fn freeze(&self, frozen: bool) {
        let pidfile = self.dir.path().join("data").join("postmaster.pid");
        let text = std::fs::read_to_string(pidfile).unwrap();
        let pid = text.lines().next().unwrap().trim().to_owned();
        let sig = if frozen { "-STOP" } else { "-CONT" };
        let ok = Command::new("kill").args([sig, &pid]).status().unwrap();
        assert!(ok.success(), "kill {sig} {pid}");
    }

    pub fn restart(&self) {
        self.ctl(&["restart"]);
    }

    pub fn stop(&self) {
        self.ctl(&["stop"]);
    }

    pub fn start_again(&self) {
        self.ctl(&["start"]);
    }

    pub fn url(&self, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={db}",
            self.port
        )
    }
}

impl Drop for PgInstance {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = run(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
    }
}
