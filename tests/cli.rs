//! The `tenantgate` binary: config from file and environment, SIGHUP reload, SIGTERM drain.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{code, eventually, TestDb};
use tokio::process::{Child, Command};
use tokio_postgres::NoTls;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn write_config(path: &std::path::Path, db: &TestDb, tenants: &[&str]) {
    let mut cfg = db.config();
    cfg.tenants.retain(|t| tenants.contains(&t.key.as_str()));
    cfg.listen = "127.0.0.1:1".into(); // overridden by TENANTGATE_LISTEN
    std::fs::write(path, toml::to_string(&cfg).unwrap()).unwrap();
}

async fn spawn(config: &std::path::Path, port: u16) -> Child {
    let child = Command::new(env!("CARGO_BIN_EXE_tenantgate"))
        .args(["serve", "--config"])
        .arg(config)
        .env("TENANTGATE_LISTEN", format!("127.0.0.1:{port}"))
        .env("TENANTGATE_LIMITS__SHUTDOWN_TIMEOUT_MS", "10000")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let up = eventually(Duration::from_secs(10), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await;
    assert!(up, "proxy did not start");
    child
}

async fn connect(
    port: u16,
    db: &TestDb,
    tenant: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let dsn = format!(
        "host=127.0.0.1 port={port} user=app@{tenant} password={tenant}-pw dbname={}",
        db.db
    );
    let (c, conn) = tokio_postgres::connect(&dsn, NoTls).await?;
    tokio::spawn(conn);
    Ok(c)
}

fn signal(child: &Child, sig: &str) {
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-s", sig, &pid])
        .status()
        .unwrap()
        .success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_overrides_sighup_reload_and_sigterm_drain() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tenantgate.toml");
    write_config(&path, &db, &["acme"]);
    let port = free_port();
    let mut child = spawn(&path, port).await;

    // TENANTGATE_LISTEN took effect; globex is not configured yet.
    connect(port, &db, "acme")
        .await
        .unwrap()
        .simple_query("SELECT 1")
        .await
        .unwrap();
    assert_eq!(
        code(&connect(port, &db, "globex").await.unwrap_err()),
        "28P01"
    );

    // Add globex and reload with SIGHUP: existing clients stay connected.
    let kept = connect(port, &db, "acme").await.unwrap();
    write_config(&path, &db, &["acme", "globex"]);
    signal(&child, "HUP");
    let reloaded = eventually(Duration::from_secs(5), || async {
        connect(port, &db, "globex").await.is_ok()
    })
    .await;
    assert!(reloaded, "globex routable after SIGHUP");
    kept.simple_query("SELECT 1")
        .await
        .expect("client survived reload");

    // A broken config is refused and the running one kept.
    std::fs::write(
        &path,
        "[[tenants]]\nkey = \"Bad Key\"\nbackend_user = \"x\"\n",
    )
    .unwrap();
    signal(&child, "HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    connect(port, &db, "globex")
        .await
        .unwrap()
        .simple_query("SELECT 1")
        .await
        .unwrap();

    // SIGTERM: a transaction in flight finishes, then the client is told the proxy stops.
    let busy = connect(port, &db, "acme").await.unwrap();
    busy.batch_execute("BEGIN").await.unwrap();
    signal(&child, "TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let n: i64 = busy
        .query_one("SELECT count(*) FROM items", &[])
        .await
        .expect("in-flight transaction continues")
        .get(0);
    assert_eq!(n, 10);
    busy.batch_execute("COMMIT").await.unwrap();
    // new connections are no longer accepted
    let refused = eventually(Duration::from_secs(5), || async {
        connect(port, &db, "acme").await.is_err()
    })
    .await;
    assert!(refused);
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("exits")
        .unwrap();
    assert!(status.success(), "clean exit: {status}");
    db.cleanup().await;
}

#[tokio::test]
async fn check_config_rejects_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[tenants]]\nkey = \"Bad Key\"\nbackend_user = \"x\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tenantgate"))
        .args(["check-config", "--config"])
        .arg(&bad)
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("tenant key"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let example = format!(
        "{}/config/tenantgate.example.toml",
        env!("CARGO_MANIFEST_DIR")
    );
    let out = Command::new(env!("CARGO_BIN_EXE_tenantgate"))
        .args(["check-config", "--config", &example])
        .env("TENANTGATE_POOL__DEFAULT_SIZE", "33")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("default_size = 33"),
        "env override applies"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_and_tenant_commands() {
    let id = common::unique();
    let db = format!("tg_clicat_{id}");
    common::admin("postgres")
        .await
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .await
        .unwrap();
    let url = format!("postgresql://postgres@127.0.0.1:5432/{db}");
    let key = tenantgate::catalog::crypto::SecretKey::generate();
    let run = |args: Vec<String>, stdin: Option<&'static str>| {
        let (url, key) = (url.clone(), key.clone());
        async move {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_tenantgate"));
            cmd.args(&args)
                .env("TENANTGATE_CATALOG_URL", &url)
                .env("TENANTGATE_CATALOG_KEY", &key)
                .env("TENANTGATE_LOG", "warn")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut child = cmd.spawn().unwrap();
            let mut input = child.stdin.take().unwrap();
            if let Some(s) = stdin {
                use tokio::io::AsyncWriteExt;
                input.write_all(s.as_bytes()).await.unwrap();
            }
            drop(input);
            let out = child.wait_with_output().await.unwrap();
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
    };
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let (ok, out, err) = run(s(&["setup"]), None).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("0001_catalog"), "{out}");
    let t = format!("c{id}");
    let (ok, out, err) = run(
        s(&[
            "tenant",
            "create",
            &t,
            "--plan",
            "premium",
            "--password-stdin",
        ]),
        Some("from-stdin\n"),
    )
    .await;
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("plan pro") && !out.contains("from-stdin"),
        "{out}"
    );
    let (ok, out, _) = run(s(&["tenant", "list"]), None).await;
    assert!(ok && out.contains(&t), "{out}");
    let (ok, _, err) = run(s(&["tenant", "create", "Bad;Key", "--plan", "free"]), None).await;
    assert!(!ok && err.contains("invalid tenant key"), "{err}");
    let (ok, _, err) = run(s(&["tenant", "create", "zz", "--plan", "gold"]), None).await;
    assert!(!ok && err.contains("unknown plan"), "{err}");
    let (ok, _, err) = run(s(&["tenant", "suspend", "nosuch"]), None).await;
    assert!(!ok && err.contains("does not exist"), "{err}");
    let (ok, out, err) = run(
        s(&[
            "tenant",
            "user",
            "add",
            &t,
            "bob",
            "--password-env",
            "NOPE_NOT_SET",
        ]),
        None,
    )
    .await;
    assert!(!ok && err.contains("NOPE_NOT_SET"), "{out}{err}");
    let (ok, out, err) = run(s(&["admin-user", "add", "ops", "--password", "x"]), None).await;
    assert!(ok, "{out}{err}");
    let (ok, out, err) = run(s(&["migrate"]), None).await;
    assert!(ok && out.contains("1 up to date"), "{out}{err}");
    let (ok, _, err) = run(s(&["tenant", "drop", &t, "--force"]), None).await;
    assert!(ok, "{err}");
    common::admin("postgres")
        .await
        .batch_execute(&format!("DROP DATABASE {db} WITH (FORCE)"))
        .await
        .unwrap();
}
