//! A PostgreSQL server that restarts or goes away under the proxy: clients get errors,
//! never hangs, and the pool heals by itself. Uses a private server (not the shared one).

mod common;

use std::time::Duration;

use common::pg_instance::PgInstance;
use common::{code, eventually};
use tenantgate::config::{AuthMethod, AuthRule, Config, TenantConfig};
use tokio_postgres::NoTls;

async fn setup_with(f: impl FnOnce(&mut Config)) -> (PgInstance, tenantgate::app::Running) {
    let _ = common::tracing_subscriber_init();
    let pg = tokio::task::spawn_blocking(PgInstance::start)
        .await
        .unwrap();
    let c = common::connect_dsn(&pg.url("postgres")).await;
    c.batch_execute(
        "CREATE ROLE tg_acme LOGIN; CREATE SCHEMA acme AUTHORIZATION tg_acme;
         CREATE TABLE acme.items (id int); GRANT ALL ON acme.items TO tg_acme;
         INSERT INTO acme.items VALUES (1), (2);",
    )
    .await
    .unwrap();
    let mut cfg = Config {
        listen: "127.0.0.1:0".into(),
        auth: vec![AuthRule {
            user: "*".into(),
            address: "*".parse().unwrap(),
            method: AuthMethod::Trust,
        }],
        instances: vec![common::instance_config(
            "primary",
            "127.0.0.1",
            pg.port,
            "postgres",
        )],
        tenants: vec![TenantConfig {
            pool_size: 2,
            ..common::tenant_config("acme", "primary", "acme", "tg_acme", "x")
        }],
        ..Config::default()
    };
    cfg.pool.connect_timeout_ms = 2000;
    cfg.telemetry.dir = common::scratch_dir("resilience");
    f(&mut cfg);
    let proxy = tenantgate::app::start(cfg, None).await.unwrap();
    (pg, proxy)
}

/// A new client connects and runs a statement.
async fn serves_a_new_client(port: u16) {
    client(port, "")
        .await
        .unwrap()
        .simple_query("SELECT 1")
        .await
        .unwrap();
}

async fn client(port: u16, extra: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    common::try_connect(&format!(
        "host=127.0.0.1 port={port} user=app@acme dbname=x {extra}"
    ))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_while_its_server_connection_opens_gives_the_slot_back() {
    // The server stops answering new connections; a client whose statement is waiting for
    // one to open hangs up. The slot it reserved must come back at once, not be counted
    // as open for ever (the pool would refuse everyone once all its slots leaked).
    let (pg, proxy) = setup_with(|c| c.pool.connect_timeout_ms = 30_000).await;
    let port = proxy.addr.port();
    let open = || {
        proxy
            .proxy
            .pools()
            .stats()
            .into_iter()
            .find(|s| s.tenant == "acme")
            .map_or(0, |s| s.open)
    };
    let holder = client(port, "").await.unwrap();
    holder.batch_execute("BEGIN").await.unwrap();
    let (leaver, conn) = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={port} user=app@acme dbname=x"),
        NoTls,
    )
    .await
    .unwrap();
    let socket = tokio::spawn(conn);
    assert_eq!(open(), 1);
    pg.freeze(true);
    let query = tokio::spawn(async move { leaver.simple_query("SELECT 1").await });
    let connecting = eventually(Duration::from_secs(5), || async { open() == 2 }).await;
    assert!(connecting, "a second connection is being opened");
    query.abort();
    socket.abort();
    let given_back = eventually(Duration::from_secs(5), || async { open() == 1 }).await;
    pg.freeze(false);
    assert!(given_back, "the reserved slot came back: open = {}", open());
    holder.batch_execute("COMMIT").await.unwrap();
    serves_a_new_client(port).await;
    drop(pg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restart_gives_errors_not_hangs_and_the_pool_heals() {
    // No check by idle time before the restart's aftermath: what keeps dead connections
    // from clients below is the lost connection, not how long ago they were used.
    let (pg, proxy) = setup_with(|c| c.pool.server_check_delay_ms = 60_000).await;
    let port = proxy.addr.port();
    // One server connection held in a transaction, another idle in the pool (the one the
    // idle client last used).
    let in_tx = client(port, "").await.unwrap();
    in_tx.batch_execute("BEGIN").await.unwrap();
    let idle = client(port, "").await.unwrap();
    // Kept across the restart: it must be prepared again on whichever connection the
    // client gets next.
    let count = idle.prepare("SELECT count(*) FROM items").await.unwrap();
    let n: i64 = idle.query_one(&count, &[]).await.unwrap().get(0);
    assert_eq!(n, 2);
    // The proxy gives the connection back just after the reply reaches the client.
    let held = || {
        let s = proxy.proxy.pools().stats();
        let s = s.iter().find(|s| s.tenant == "acme").expect("acme's pool");
        (s.open, s.idle)
    };
    assert!(
        eventually(Duration::from_secs(5), || async { held() == (2, 1) }).await,
        "one held by the transaction, one idle: {:?}",
        held()
    );

    let pg = tokio::task::spawn_blocking(move || {
        pg.restart();
        pg
    })
    .await
    .unwrap();

    // the client whose transaction was on the restarted server gets an error, promptly
    let r = tokio::time::timeout(Duration::from_secs(5), in_tx.simple_query("SELECT 1"))
        .await
        .expect("no hang");
    assert!(r.is_err());
    // The idle client (no server held) is not affected: the lost connection above marks
    // the instance's idle connections for a check before their next use, so the dead one
    // it last used is not handed to it, however recently it was used.
    let n: i64 = idle
        .query_one(&count, &[])
        .await
        .expect("the pool healed: no dead connection handed out after the restart")
        .get(0);
    assert_eq!(n, 2);
    serves_a_new_client(port).await;

    // server down: statements fail fast with 08006, the connection stays usable
    let pg = tokio::task::spawn_blocking(move || {
        pg.stop();
        pg
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let e = tokio::time::timeout(Duration::from_secs(5), idle.simple_query("SELECT 1"))
        .await
        .expect("no hang")
        .unwrap_err();
    assert_eq!(code(&e), "08006", "{e}");
    // ...and when it is back, the same client continues
    let pg = tokio::task::spawn_blocking(move || {
        pg.start_again();
        pg
    })
    .await
    .unwrap();
    let back = eventually(Duration::from_secs(10), || async {
        idle.simple_query("SELECT 1").await.is_ok()
    })
    .await;
    assert!(back);
    proxy.shutdown().await;
    drop(pg);
}
