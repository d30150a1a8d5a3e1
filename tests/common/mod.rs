//! Test harness: a private database with two tenants on the local PostgreSQL, and an
//! in-process proxy in front of it. Every test gets unique database and role names, so
//! tests run in parallel and on a server that holds old data.
#![allow(dead_code)]

pub mod catalog_db;
pub mod certs;
pub mod mongo;
pub mod pg_instance;
pub mod wire;

use std::net::SocketAddr;
use std::time::Duration;

use tenantgate::app::{self, Running};
use tenantgate::config::{
    AuthMethod, AuthRule, Config, InstanceConfig, LoginUserConfig, PoolMode, TenantConfig,
};
use tokio_postgres::types::{FromSql, ToSql};
use tokio_postgres::{Client, NoTls};

pub const PG_HOST: &str = "127.0.0.1";
pub const PG_PORT: u16 = 5432;
pub const TENANTS: [&str; 2] = ["acme", "globex"];

/// An `[[instances]]` entry: plain TCP, no password.
pub fn instance_config(name: &str, host: &str, port: u16, dbname: &str) -> InstanceConfig {
    InstanceConfig {
        name: name.into(),
        host: host.into(),
        port,
        dbname: dbname.into(),
        password: String::new(),
        sslmode: String::new(),
        sslrootcert: String::new(),
    }
}

/// A `[[tenants]]` entry: schema `schema` of `instance`'s database, backend role
/// `backend_user` without a password, login user `app` with `app_password`, the default
/// plan without limits, the default pool.
pub fn tenant_config(
    key: &str,
    instance: &str,
    schema: &str,
    backend_user: &str,
    app_password: &str,
) -> TenantConfig {
    TenantConfig {
        instance: instance.into(),
        schema: schema.into(),
        users: vec![LoginUserConfig {
            name: "app".into(),
            password: app_password.into(),
            scram_verifier: String::new(),
        }],
        ..TenantConfig::new(key, backend_user)
    }
}

/// A free port held until released: bound (not listening, so connections to it are
/// refused) so that no other test is given it meanwhile. A port found free and let go at
/// once can be handed to the next test that asks, whose server then answers in its place.
pub struct PortHold {
    sock: Option<socket2::Socket>,
    pub port: u16,
}

impl PortHold {
    pub fn new() -> PortHold {
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        sock.bind(&any.into()).expect("bind a free port");
        let port = sock
            .local_addr()
            .unwrap()
            .as_socket()
            .expect("an inet address")
            .port();
        PortHold {
            sock: Some(sock),
            port,
        }
    }

    /// Let the port go, for the server about to bind it.
    pub fn release(&mut self) {
        self.sock = None;
    }
}

/// A unique suffix for names.
pub fn unique() -> String {
    format!(
        "{:x}{:06x}",
        std::process::id(),
        rand::random::<u32>() & 0xff_ffff
    )
}

/// A client for `dsn` (its connection driven by a task); panics when it cannot connect.
pub async fn connect_dsn(dsn: &str) -> Client {
    try_connect(dsn)
        .await
        .unwrap_or_else(|e| panic!("connect {dsn}: {e}"))
}

/// A plain connection to `dsn`, its connection driven by a task of its own.
pub async fn try_connect(dsn: &str) -> Result<Client, tokio_postgres::Error> {
    let (c, conn) = tokio_postgres::connect(dsn, NoTls).await?;
    tokio::spawn(conn);
    Ok(c)
}

/// Superuser connection to `db` on the real server.
pub async fn admin(db: &str) -> Client {
    let (c, conn) = tokio_postgres::connect(
        &format!("host={PG_HOST} port={PG_PORT} user=postgres dbname={db}"),
        NoTls,
    )
    .await
    .expect("PostgreSQL at 127.0.0.1:5432 (run scripts/services.sh)");
    tokio::spawn(conn);
    c
}

/// A private database with tenants `acme` and `globex`, each a schema owned by its own role
/// with a `items` table holding rows that name the tenant.
pub struct TestDb {
    pub db: String,
    pub roles: Vec<String>,
}

impl TestDb {
    pub async fn new() -> TestDb {
        let id = unique();
        let db = format!("tg_test_{id}");
        let a = admin("postgres").await;
        a.batch_execute(&format!("CREATE DATABASE {db}"))
            .await
            .expect("create database");
        let d = admin(&db).await;
        d.batch_execute("REVOKE ALL ON SCHEMA public FROM PUBLIC")
            .await
            .unwrap();
        let mut roles = Vec::new();
        for t in TENANTS {
            let role = format!("tgt_{id}_{t}");
            d.batch_execute(&format!(
                "CREATE ROLE {role} LOGIN NOSUPERUSER NOINHERIT;
                 GRANT CONNECT ON DATABASE {db} TO {role};
                 CREATE SCHEMA {t} AUTHORIZATION {role};
                 REVOKE ALL ON SCHEMA {t} FROM PUBLIC;
                 SET ROLE {role};
                 CREATE TABLE {t}.items (id int PRIMARY KEY, owner text NOT NULL);
                 INSERT INTO {t}.items SELECT g, '{t}' FROM generate_series(1, 10) g;
                 RESET ROLE;"
            ))
            .await
            .expect("create tenant");
            roles.push(role);
        }
        TestDb { db, roles }
    }

    pub fn role(&self, tenant: &str) -> String {
        self.roles
            .iter()
            .find(|r| r.ends_with(&format!("_{tenant}")))
            .unwrap()
            .clone()
    }

    /// A config serving both tenants (users `app`, password `<tenant>-pw`), listen on port 0.
    pub fn config(&self) -> Config {
        let mut c = Config {
            listen: "127.0.0.1:0".into(),
            auth: vec![AuthRule {
                user: "*".into(),
                address: "*".parse().unwrap(),
                method: AuthMethod::ScramSha256,
            }],
            instances: vec![instance_config("primary", PG_HOST, PG_PORT, &self.db)],
            ..Config::default()
        };
        c.pool.query_wait_timeout_ms = 3000;
        c.telemetry.dir = scratch_dir(&self.db);
        c.tenants = TENANTS
            .iter()
            .map(|t| tenant_config(t, "primary", t, &self.role(t), &format!("{t}-pw")))
            .collect();
        c
    }

    pub async fn cleanup(self) {
        let a = admin("postgres").await;
        let _ = a
            .batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.db))
            .await;
        for r in &self.roles {
            let _ = a.batch_execute(&format!("DROP ROLE IF EXISTS {r}")).await;
        }
    }
}

/// A fresh directory path under the system temp dir (telemetry spool/embedded store).
pub fn scratch_dir(tag: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir()
        .join(format!("tenantgate-{tag}-{}-{n}", std::process::id()))
        .to_string_lossy()
        .into_owned()
}

/// Add the trusted service user `svc` (password `svc-pw`), who names tenants per
/// transaction with a header comment.
pub fn service_user(c: &mut Config) {
    c.service_users = vec![LoginUserConfig {
        name: "svc".into(),
        password: "svc-pw".into(),
        scram_verifier: String::new(),
    }];
}

/// Set a tenant's pool mode and size in a config.
pub fn tenant_pool(c: &mut Config, tenant: &str, mode: PoolMode, size: usize) {
    let t = c.tenants.iter_mut().find(|t| t.key == tenant).unwrap();
    t.pool_mode = match mode {
        PoolMode::Session => "session".into(),
        PoolMode::Transaction => "transaction".into(),
    };
    t.pool_size = size;
}

/// A running proxy plus its database.
pub struct Env {
    pub db: TestDb,
    pub proxy: Running,
}

impl Env {
    pub async fn new() -> Env {
        Self::with(|_| {}).await
    }

    pub async fn with(f: impl FnOnce(&mut Config)) -> Env {
        let _ = tracing_subscriber_init();
        let db = TestDb::new().await;
        let mut cfg = db.config();
        f(&mut cfg);
        let proxy = app::start(cfg, None).await.expect("proxy starts");
        Env { db, proxy }
    }

    pub fn addr(&self) -> SocketAddr {
        self.proxy.addr
    }

    /// libpq-style connection string for `user` through the proxy.
    pub fn dsn(&self, user: &str, password: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={user} password={password} dbname={} connect_timeout=10",
            self.addr().port(),
            self.db.db
        )
    }

    /// Connect as `app@tenant`.
    pub async fn client(&self, tenant: &str) -> Client {
        self.try_client(&format!("app@{tenant}"), &format!("{tenant}-pw"))
            .await
            .expect("connect through proxy")
    }

    pub async fn try_client(
        &self,
        user: &str,
        password: &str,
    ) -> Result<Client, tokio_postgres::Error> {
        try_connect(&self.dsn(user, password)).await
    }

    /// The proxy's pool of `tenant` as SHOW POOLS reports it (all zero before its first
    /// client).
    pub fn pool(&self, tenant: &str) -> tenantgate::backend::pool::PoolStats {
        self.proxy
            .proxy
            .pools()
            .stats()
            .into_iter()
            .find(|s| s.tenant == tenant)
            .unwrap_or_default()
    }

    /// The proxy still serves a new client of `acme`.
    pub async fn still_alive(&self) {
        self.client("acme")
            .await
            .simple_query("SELECT 1")
            .await
            .expect("proxy still serves");
    }

    pub async fn finish(self) {
        self.proxy.shutdown().await;
        self.db.cleanup().await;
    }
}

/// Logs for debugging a test: `TG_TEST_LOG=tenantgate=trace cargo test ...`.
pub fn tracing_subscriber_init() -> Option<()> {
    let filter = std::env::var("TG_TEST_LOG").ok()?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init()
        .ok()
}

/// SQLSTATE of a tokio-postgres error.
pub fn code(e: &tokio_postgres::Error) -> String {
    e.code()
        .map(|c| c.code().to_owned())
        .unwrap_or_else(|| format!("no code: {e}"))
}

/// The value of a query returning one row of one column.
pub async fn scalar<T>(c: &Client, sql: &str, params: &[&(dyn ToSql + Sync)]) -> T
where
    T: for<'a> FromSql<'a>,
{
    c.query_one(sql, params).await.unwrap().get(0)
}

/// Poll `f` until it returns true or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < end {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Run psql (libpq) with `conninfo` and extra args, without blocking the runtime.
pub async fn psql(conninfo: &str, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new("psql")
        .arg(conninfo)
        .arg("-X")
        .args(args)
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .await
        .expect("psql is installed")
}

/// Clients of one tenant running statements back to back until stopped; every statement
/// must succeed (the test fails with `what` otherwise).
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<(u64, Client)>>,
}

impl Load {
    /// `clients` clients of `tenant`; the n-th statement of each is `statement(n)`.
    pub async fn start(
        env: &Env,
        tenant: &str,
        clients: usize,
        statement: fn(u64) -> String,
        what: &'static str,
    ) -> Load {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let c = env.client(tenant).await;
            let stop = stop.clone();
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    c.simple_query(&statement(n)).await.expect(what);
                    n += 1;
                }
                (n, c)
            }));
        }
        Load { stop, tasks }
    }

    /// Stop: the statements run in all, and the clients, still connected.
    pub async fn stop(self) -> (u64, Vec<Client>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut total = 0;
        let mut clients = Vec::new();
        for t in self.tasks {
            let (n, c) = t.await.unwrap();
            total += n;
            clients.push(c);
        }
        (total, clients)
    }
}
