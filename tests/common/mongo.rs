//! MongoDB for tests: the shared mongod that `scripts/mongod.sh` runs on 127.0.0.1:27017,
//! and private mongod processes (same binary) that a test may stop and restart.

use std::path::PathBuf;
use std::time::Duration;

use mongodb::bson::{doc, Document};
use tokio::process::{Child, Command};

/// The shared server (scripts/mongod.sh, started by scripts/test.sh).
pub const SHARED_URL: &str = "mongodb://127.0.0.1:27017";

/// The mongod binary installed by scripts/mongod.sh.
pub fn mongod_bin() -> PathBuf {
    let dir = std::env::var("TENANTGATE_MONGO_DIR").map_or_else(
        |_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/tenantgate/mongo"),
        PathBuf::from,
    );
    dir.join("fiftyone/db/bin/mongod")
}

/// A database name no other test uses.
pub fn unique_db() -> String {
    format!("tg_test_{}", super::unique())
}

/// A collection of the shared or a private server.
pub async fn collection(url: &str, db: &str, name: &str) -> mongodb::Collection<Document> {
    let mut opts = mongodb::options::ClientOptions::parse(url).await.unwrap();
    opts.server_selection_timeout = Some(Duration::from_secs(5));
    mongodb::Client::with_options(opts)
        .unwrap()
        .database(db)
        .collection(name)
}

pub async fn drop_db(url: &str, db: &str) {
    let c = collection(url, db, "x").await;
    let _ = c.client().database(db).drop().await;
}

/// A private mongod on a free port with its own data directory.
pub struct PrivateMongo {
    pub port: u16,
    hold: super::PortHold,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl PrivateMongo {
    /// A port and data directory, not started.
    pub fn new() -> PrivateMongo {
        let hold = super::PortHold::new();
        PrivateMongo {
            port: hold.port,
            hold,
            dir: tempfile::tempdir().unwrap(),
            child: None,
        }
    }

    pub fn url(&self) -> String {
        format!("mongodb://127.0.0.1:{}", self.port)
    }

    /// Start mongod and wait until it answers.
    pub async fn start(&mut self) {
        let bin = mongod_bin();
        assert!(
            bin.exists(),
            "{} missing: run scripts/mongod.sh",
            bin.display()
        );
        self.hold.release();
        let child = Command::new(bin)
            .arg("--dbpath")
            .arg(self.dir.path())
            .args(["--bind_ip", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--wiredTigerCacheSizeGB", "0.25", "--quiet"])
            .arg("--logpath")
            .arg(self.dir.path().join("mongod.log"))
            .kill_on_drop(true)
            .spawn()
            .expect("start mongod");
        self.child = Some(child);
        let c = collection(&self.url(), "admin", "x").await;
        let ok = super::eventually(Duration::from_secs(30), || {
            let db = c.client().database("admin");
            async move { db.run_command(doc! {"ping": 1}).await.is_ok() }
        })
        .await;
        assert!(ok, "private mongod did not start");
    }

    /// Kill mongod (SIGKILL: as abrupt as a crash).
    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
            let _ = c.wait().await;
        }
    }
}
