//! Pooling behaviour: clean hand-over between clients, limits, queueing, eviction across
//! tenants, vanished clients, and servers that die.

mod common;

use std::time::Duration;

use common::{admin, code, eventually, tenant_pool, Env};
use tenantgate::config::PoolMode;
use tokio_postgres::{NoTls, SimpleQueryMessage};

#[tokio::test]
async fn session_state_never_leaks_to_the_next_client() {
    let env = Env::with(|c| tenant_pool(c, "acme", PoolMode::Transaction, 1)).await;
    {
        let a = env.client("acme").await;
        a.batch_execute("SET work_mem = '7MB'").await.unwrap();
        a.batch_execute("CREATE TEMP TABLE scratch (x int)")
            .await
            .unwrap();
        a.batch_execute("SELECT pg_advisory_lock(4242)")
            .await
            .unwrap();
        a.batch_execute("PREPARE sqlprep AS SELECT 1")
            .await
            .unwrap();
        a.batch_execute("LISTEN leaky").await.unwrap();
        // transaction left open when the client vanishes
        a.batch_execute("BEGIN; INSERT INTO items VALUES (500, 'acme')")
            .await
            .unwrap();
    }
    // same single server connection, another client
    let b = env.client("acme").await;
    let ok = eventually(Duration::from_secs(5), || async {
        let r = b
            .query_one(
                "SELECT current_setting('work_mem'),
                        (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'
                           AND pid = pg_backend_pid()),
                        (SELECT count(*) FROM pg_prepared_statements WHERE name = 'sqlprep'),
                        (SELECT count(*) FROM pg_listening_channels()),
                        to_regclass('pg_temp.scratch') IS NULL,
                        (SELECT count(*) FROM items WHERE id = 500)",
                &[],
            )
            .await
            .unwrap();
        r.get::<_, String>(0) == "4MB"
            && r.get::<_, i64>(1) == 0
            && r.get::<_, i64>(2) == 0
            && r.get::<_, i64>(3) == 0
            && r.get::<_, bool>(4)
            && r.get::<_, i64>(5) == 0
    })
    .await;
    assert!(ok, "server connection was reset before reuse");
    env.finish().await;
}

#[tokio::test]
async fn queue_timeout_gives_53300_and_the_client_stays_usable() {
    let env = Env::with(|c| {
        tenant_pool(c, "acme", PoolMode::Transaction, 1);
        c.pool.query_wait_timeout_ms = 300;
    })
    .await;
    let holder = env.client("acme").await;
    holder.batch_execute("BEGIN").await.unwrap();
    let waiter = env.client("acme").await;
    let e = waiter.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(code(&e), "53300");
    // another tenant is unaffected
    env.client("globex")
        .await
        .simple_query("SELECT 1")
        .await
        .unwrap();
    holder.batch_execute("COMMIT").await.unwrap();
    waiter.simple_query("SELECT 1").await.unwrap();
    env.finish().await;
}

#[tokio::test]
async fn waiters_are_served_in_arrival_order_and_one_that_leaves_loses_nothing() {
    let env = Env::with(|c| {
        tenant_pool(c, "acme", PoolMode::Transaction, 1);
        c.pool.query_wait_timeout_ms = 30_000;
    })
    .await;
    let acme = || env.pool("acme");
    let holder = env.client("acme").await;
    holder.batch_execute("BEGIN").await.unwrap();
    // Five clients queue one after another; the third leaves while in line.
    let served = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    // Connections driven here, so the third's socket can be closed while it waits.
    let mut clients = Vec::new();
    let mut sockets = Vec::new();
    for _ in 0..5 {
        let (c, conn) = tokio_postgres::connect(&env.dsn("app@acme", "acme-pw"), NoTls)
            .await
            .unwrap();
        sockets.push(tokio::spawn(conn));
        clients.push(c);
    }
    let mut waiters = Vec::new();
    for (c, i) in clients.into_iter().zip(1..=5i32) {
        let served = served.clone();
        waiters.push(tokio::spawn(async move {
            // Simple protocol: one statement, one checkout.
            let rows = c.simple_query(&format!("SELECT {i}")).await.unwrap();
            let r = rows
                .iter()
                .find_map(|m| match m {
                    SimpleQueryMessage::Row(r) => Some(r),
                    _ => None,
                })
                .expect("one row");
            served
                .lock()
                .unwrap()
                .push(r.get(0).unwrap().parse::<i32>().unwrap());
        }));
        let queued = eventually(Duration::from_secs(5), || async {
            acme().waiting == i as usize
        })
        .await;
        assert!(queued, "waiter {i} in line");
    }
    waiters[2].abort();
    sockets[2].abort();
    assert!(
        eventually(Duration::from_secs(5), || async { acme().waiting == 4 }).await,
        "the client that left is out of the line"
    );
    holder.batch_execute("COMMIT").await.unwrap();
    for (i, w) in waiters.into_iter().enumerate() {
        if i != 2 {
            tokio::time::timeout(Duration::from_secs(10), w)
                .await
                .expect("served")
                .unwrap();
        }
    }
    assert_eq!(*served.lock().unwrap(), vec![1, 2, 4, 5]);
    // The one connection went round the line and is back, idle.
    let s = acme();
    assert_eq!((s.open, s.idle, s.waiting), (1, 1, 0));
    env.finish().await;
}

#[tokio::test]
async fn instance_cap_closes_idle_connections_of_other_tenants() {
    let env = Env::with(|c| {
        c.pool.instance_max_connections = 2;
        tenant_pool(c, "acme", PoolMode::Transaction, 2);
        tenant_pool(c, "globex", PoolMode::Transaction, 2);
    })
    .await;
    // acme opens two server connections (two concurrent transactions), then goes idle
    let a1 = env.client("acme").await;
    let a2 = env.client("acme").await;
    a1.batch_execute("BEGIN").await.unwrap();
    a2.batch_execute("BEGIN").await.unwrap();
    a1.batch_execute("COMMIT").await.unwrap();
    a2.batch_execute("COMMIT").await.unwrap();
    assert_eq!(env.proxy.proxy.pools().instance_open("primary"), 2);
    // globex needs connections: acme's idle ones make room
    let g1 = env.client("globex").await;
    let g2 = env.client("globex").await;
    g1.batch_execute("BEGIN").await.unwrap();
    g2.batch_execute("BEGIN").await.unwrap();
    assert!(env.proxy.proxy.pools().instance_open("primary") <= 2);
    g1.batch_execute("COMMIT").await.unwrap();
    g2.batch_execute("COMMIT").await.unwrap();
    // count real server connections of both roles
    let a = admin(&env.db.db).await;
    let n: i64 = a
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = ANY($1)",
            &[&env.db.roles],
        )
        .await
        .unwrap()
        .get(0);
    assert!(n <= 2, "instance cap holds at the server: {n}");
    env.finish().await;
}

#[tokio::test]
async fn a_waiter_held_by_the_instance_cap_takes_the_next_idle_connection_of_another_tenant() {
    // The instance is full with acme's two busy connections; globex waits. When one of
    // acme's goes idle, globex must close it and get its own at once, not wait for a
    // connection to close by itself (or for its timeout).
    let env = Env::with(|c| {
        c.pool.instance_max_connections = 2;
        c.pool.query_wait_timeout_ms = 20_000;
        tenant_pool(c, "acme", PoolMode::Transaction, 2);
        tenant_pool(c, "globex", PoolMode::Transaction, 2);
    })
    .await;
    // globex's login learns its server's parameters first (one connection, then idle).
    let g = env.client("globex").await;
    let a1 = env.client("acme").await;
    let a2 = env.client("acme").await;
    a1.batch_execute("BEGIN").await.unwrap();
    a2.batch_execute("BEGIN").await.unwrap();
    assert_eq!(
        env.pool("globex").open,
        0,
        "globex's idle one made room for acme"
    );
    let waiting = tokio::spawn(async move { g.simple_query("SELECT 1").await.map(|_| ()) });
    let held = eventually(Duration::from_secs(5), || async {
        env.pool("globex").waiting == 1
    })
    .await;
    assert!(held, "globex waits at the instance cap");
    a1.batch_execute("COMMIT").await.unwrap();
    let served = tokio::time::timeout(Duration::from_secs(5), waiting).await;
    assert!(
        matches!(served, Ok(Ok(Ok(())))),
        "globex served once acme had an idle connection: {served:?}"
    );
    assert!(env.proxy.proxy.pools().instance_open("primary") <= 2);
    a2.batch_execute("COMMIT").await.unwrap();
    env.finish().await;
}

#[tokio::test]
async fn killed_server_connections_heal() {
    let env = Env::with(|c| tenant_pool(c, "acme", PoolMode::Transaction, 2)).await;
    let c = env.client("acme").await;
    c.simple_query("SELECT 1").await.unwrap();
    let role = env.db.role("acme");
    let a = admin(&env.db.db).await;
    // idle pooled connections die (as in a server restart)
    a.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
        &[&role],
    )
    .await
    .unwrap();
    // Idle connections are checked every second (and before use when idle longer than
    // pool.server_check_delay_ms), so within ~1 s the dead ones are gone.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // the client did not hold a server: its next query just works on a fresh one
    let r = c
        .query_one("SELECT count(*) FROM items", &[])
        .await
        .unwrap();
    assert_eq!(r.get::<_, i64>(0), 10);

    // a server killed mid-transaction: that client gets an error, not a hang
    let d = env.client("acme").await;
    d.batch_execute("BEGIN").await.unwrap();
    let pid: i32 = d
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    a.execute("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap();
    let e = tokio::time::timeout(Duration::from_secs(5), d.simple_query("SELECT 1"))
        .await
        .expect("no hang");
    assert!(e.is_err());
    // other clients and new ones keep working
    c.simple_query("SELECT 1").await.unwrap();
    env.still_alive().await;
    env.finish().await;
}

/// globex placed on `host`:`port`, where no server listens: its clients get a clear
/// error that does not show the address, and the other tenant is served.
async fn unreachable_server_is_a_clear_error(host: &str, port: u16) {
    let env = Env::with(|c| {
        c.instances
            .push(common::instance_config("down", host, port, "postgres"));
        c.tenants[1].instance = "down".into();
    })
    .await;
    let e = env.try_client("app@globex", "globex-pw").await.unwrap_err();
    assert_eq!(code(&e), "08006");
    let text = e.to_string();
    assert!(
        !text.contains(&port.to_string()) && !text.contains(host),
        "no server address leaked: {e}"
    );
    env.still_alive().await;
    env.finish().await;
}

#[tokio::test]
async fn unreachable_server_is_a_clear_error_and_recovers() {
    // A port nobody listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    unreachable_server_is_a_clear_error("127.0.0.1", dead_port).await;
    // A socket directory without a server.
    let dir = std::env::temp_dir().join(format!("tg-nosock-{}", common::unique()));
    std::fs::create_dir_all(&dir).unwrap();
    unreachable_server_is_a_clear_error(dir.to_str().unwrap(), 5432).await;
    let _ = std::fs::remove_dir(&dir);
}

/// An instance whose host is a directory is reached through its Unix-domain socket (as
/// in libpq), in both pool modes, and cancels reach it too.
#[tokio::test]
async fn an_instance_on_a_unix_socket_serves_its_tenants() {
    let dirs: String = admin("postgres")
        .await
        .query_one("SHOW unix_socket_directories", &[])
        .await
        .unwrap()
        .get(0);
    let dir = dirs.split(',').map(str::trim).find(|d| d.starts_with('/'));
    let dir = dir
        .expect("the server listens on a socket directory")
        .to_owned();
    let env = Env::with(|c| {
        c.instances[0].host = dir.clone();
        tenant_pool(c, "globex", PoolMode::Session, 2);
    })
    .await;
    for t in ["acme", "globex"] {
        let c = env.client(t).await;
        let row = c
            .query_one(
                "SELECT count(*), inet_server_addr() IS NULL, min(owner) FROM items",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(
            (
                row.get::<_, i64>(0),
                row.get::<_, bool>(1),
                row.get::<_, String>(2)
            ),
            (10, true, t.to_owned()),
            "{t} over the socket"
        );
        let token = c.cancel_token();
        let slow = tokio::spawn(async move { c.simple_query("SELECT pg_sleep(10)").await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        token.cancel_query(NoTls).await.unwrap();
        let e = slow.await.unwrap().unwrap_err();
        assert_eq!(code(&e), "57014", "{t}: {e}");
    }
    env.finish().await;
}

#[tokio::test]
async fn vanished_client_mid_query_does_not_poison_the_pool() {
    let env = Env::with(|c| tenant_pool(c, "acme", PoolMode::Transaction, 1)).await;
    {
        let (a, conn) =
            tokio_postgres::connect(&env.dsn("app@acme", "acme-pw"), tokio_postgres::NoTls)
                .await
                .unwrap();
        let conn = tokio::spawn(conn);
        let q = tokio::spawn(async move {
            let _ = a.simple_query("SELECT pg_sleep(30)").await;
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        conn.abort(); // the client's socket closes mid-query
        let _ = q.await;
    }
    let b = env.client("acme").await;
    let r = tokio::time::timeout(Duration::from_secs(5), b.query_one("SELECT 41 + 1", &[])).await;
    assert_eq!(r.expect("no hang").unwrap().get::<_, i32>(0), 42);
    env.finish().await;
}

#[tokio::test]
async fn idle_connections_close_after_idle_timeout() {
    let env = Env::with(|c| {
        c.pool.idle_timeout_ms = 300;
        tenant_pool(c, "acme", PoolMode::Transaction, 3);
    })
    .await;
    let c = env.client("acme").await;
    c.simple_query("SELECT 1").await.unwrap();
    let open = || env.pool("acme").open;
    assert_eq!(open(), 1);
    assert!(
        eventually(Duration::from_secs(5), || async { open() == 0 }).await,
        "idle connection reaped"
    );
    // and a new one is opened on demand
    c.simple_query("SELECT 1").await.unwrap();
    assert_eq!(open(), 1);
    env.finish().await;
}

#[tokio::test]
async fn placement_used_as_it_is_without_a_schema() {
    // globex: an existing database and role used as they are (no search_path set)
    let env = Env::with(|c| c.tenants[1].schema = String::new()).await;
    let g = env.client("globex").await;
    let path: String = g.query_one("SHOW search_path", &[]).await.unwrap().get(0);
    assert_eq!(path, "\"$user\", public");
    let n: i64 = g
        .query_one("SELECT count(*) FROM globex.items", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 10);
    // acme still gets its schema
    let a = env.client("acme").await;
    let path: String = a
        .query_one("SELECT current_setting('search_path')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(path, "acme");
    // ...which SHOW reports as the logical schema
    let path: String = a.query_one("SHOW search_path", &[]).await.unwrap().get(0);
    assert_eq!(path, "public");
    env.finish().await;
}

#[tokio::test]
async fn a_statement_closed_between_transactions_takes_no_server_connection() {
    // tokio-postgres closes a statement it is done with in the background (Close + Sync),
    // as other drivers do; between transactions that needs no checkout.
    let env = Env::new().await;
    let c = env.client("acme").await;
    let st = c.prepare("SELECT count(*) FROM items").await.unwrap();
    let n: i64 = c.query_one(&st, &[]).await.unwrap().get(0);
    let before = env.pool("acme").acquired;
    drop(st);
    // Sent alone (nothing else is queued behind it): no checkout, however long we look.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(
        env.pool("acme").acquired,
        before,
        "the Close + Sync took no server"
    );
    c.simple_query("SELECT 1").await.unwrap();
    assert_eq!(env.pool("acme").acquired, before + 1);
    // The same text prepared again (the server may still hold its copy) answers as before,
    // and so does a statement closed inside a transaction (that Close goes to the server).
    for _ in 0..3 {
        let again: i64 = c
            .query_one("SELECT count(*) FROM items", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(again, n);
    }
    c.batch_execute("BEGIN").await.unwrap();
    let st = c.prepare("SELECT count(*) FROM items").await.unwrap();
    assert_eq!(c.query_one(&st, &[]).await.unwrap().get::<_, i64>(0), n);
    drop(st);
    c.batch_execute("COMMIT").await.unwrap();
    assert_eq!(
        c.query_one("SELECT count(*) FROM items", &[])
            .await
            .unwrap()
            .get::<_, i64>(0),
        n
    );
    env.finish().await;
}

/// A connection through the proxy whose connection task's end is kept: a FATAL error the
/// proxy sends unasked ends it with that error.
async fn watched(
    env: &Env,
    tenant: &str,
) -> (
    tokio_postgres::Client,
    tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
) {
    let (c, conn) = tokio_postgres::connect(
        &env.dsn(&format!("app@{tenant}"), &format!("{tenant}-pw")),
        NoTls,
    )
    .await
    .unwrap();
    (c, tokio::spawn(conn))
}

/// `limits.idle_transaction_timeout_ms`: a client idle inside a transaction is closed
/// with 25P03, its transaction rolled back, and the tenant's only server connection goes
/// to the client waiting for it. A client that keeps working inside its transaction, or
/// idles outside one, is kept.
#[tokio::test]
async fn a_client_idle_in_a_transaction_is_closed_and_its_server_freed() {
    let env = Env::with(|c| {
        tenant_pool(c, "acme", PoolMode::Transaction, 1);
        c.limits.idle_transaction_timeout_ms = 300;
    })
    .await;
    let busy = env.client("acme").await;
    busy.batch_execute("BEGIN").await.unwrap();
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        busy.simple_query("SELECT 1").await.unwrap();
    }
    // A statement that runs longer than the limit is not idleness.
    busy.simple_query("SELECT pg_sleep(0.6)").await.unwrap();
    busy.batch_execute("COMMIT").await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    busy.simple_query("SELECT 1").await.unwrap();

    let (idler, conn) = watched(&env, "acme").await;
    idler
        .batch_execute("BEGIN; INSERT INTO items VALUES (600, 'acme')")
        .await
        .unwrap();
    // Waits for the one server connection the idler holds, and gets it once the idler is
    // closed: the idler's row is gone with its transaction.
    let n: i64 = common::scalar(&busy, "SELECT count(*) FROM items WHERE id = 600", &[]).await;
    assert_eq!(n, 0, "the idle transaction was rolled back");
    let e = tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .expect("the idle client is closed")
        .unwrap()
        .unwrap_err();
    assert_eq!(code(&e), "25P03", "{e}");
    assert!(idler.simple_query("SELECT 1").await.is_err());
    env.finish().await;
}

/// `limits.client_idle_timeout_ms`: a client idle between statements is closed with
/// 57P05, in transaction pooling and in session pooling (where it also gives back its
/// server connection); one that keeps working, or waits for a server connection longer
/// than the limit, is kept.
#[tokio::test]
async fn a_client_idle_past_client_idle_timeout_is_closed() {
    let env = Env::with(|c| {
        tenant_pool(c, "globex", PoolMode::Session, 1);
        tenant_pool(c, "acme", PoolMode::Transaction, 2);
        c.limits.client_idle_timeout_ms = 300;
    })
    .await;
    // Both of acme's server connections held in transactions (not this limit's idleness)
    // while a third client waits 600 ms for one. That client logs in last and asks at
    // once: a login takes about 100 ms in a debug build, near the 300 ms under test.
    let (h1, h2) = (env.client("acme").await, env.client("acme").await);
    h1.batch_execute("BEGIN").await.unwrap();
    h2.batch_execute("BEGIN").await.unwrap();
    let busy = env.client("acme").await;
    let waiting = tokio::spawn(async move {
        busy.simple_query("SELECT 1").await.unwrap();
        busy
    });
    tokio::time::sleep(Duration::from_millis(600)).await;
    h1.batch_execute("COMMIT").await.unwrap();
    let busy = waiting.await.unwrap();
    // From here on the busy client is never idle for long: it keeps querying while the
    // others log in (about 100 ms each in a debug build) and sit idle past the limit.
    let keep_busy = tokio::spawn(async move {
        for _ in 0..12 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            busy.simple_query("SELECT 1").await.unwrap();
        }
    });
    h2.batch_execute("COMMIT").await.unwrap();
    let (idle, conn) = watched(&env, "acme").await;
    idle.simple_query("SELECT 1").await.unwrap();
    let (idle_session, session_conn) = watched(&env, "globex").await;
    idle_session.simple_query("SELECT 1").await.unwrap();
    keep_busy.await.expect("the busy client is not closed");
    for conn in [conn, session_conn] {
        let e = tokio::time::timeout(Duration::from_secs(5), conn)
            .await
            .expect("the idle client is closed")
            .unwrap()
            .unwrap_err();
        assert_eq!(code(&e), "57P05", "{e}");
    }
    assert!(idle.simple_query("SELECT 1").await.is_err());
    // The session-pooled client's server connection serves the next client.
    env.client("globex")
        .await
        .simple_query("SELECT 1")
        .await
        .unwrap();
    env.finish().await;
}

/// A reload that raises `limits.idle_transaction_timeout_ms` reaches a client already idle
/// inside a transaction: it is kept past the old limit.
#[tokio::test]
async fn a_raised_idle_limit_reaches_clients_already_idle() {
    let _ = common::tracing_subscriber_init();
    let db = common::TestDb::new().await;
    let mut cfg = db.config();
    cfg.limits.idle_transaction_timeout_ms = 400;
    let file = ConfigFile::new(&cfg);
    let proxy = tenantgate::app::start(cfg.clone(), Some(file.path.clone()))
        .await
        .unwrap();
    let (c, conn) = acme_client(&proxy, &db).await;
    c.batch_execute("BEGIN").await.unwrap();
    cfg.limits.idle_transaction_timeout_ms = 60_000;
    file.reload(&proxy, &cfg);
    tokio::time::sleep(Duration::from_millis(900)).await;
    c.simple_query("SELECT 1").await.unwrap();
    assert!(!conn.is_finished());
    drop(c);
    proxy.shutdown().await;
    db.cleanup().await;
}

/// A reload that shortens `pool.lifetime_ms` reaches the connections already pooled, at
/// both ends: a connection past the new lifetime is closed at its next checkin, and is not
/// handed out by the next checkout once `pool.server_check_delay_ms` (reloaded too) asks
/// for a check. Each wait happens under the long lifetime and each check right after the
/// reload, so the reaper (every second, reading the reloaded config) has no time to close the
/// connection first and hide a checkout or checkin that missed the reload.
#[tokio::test]
async fn a_shortened_server_lifetime_reaches_pooled_connections() {
    let _ = common::tracing_subscriber_init();
    let db = common::TestDb::new().await;
    let mut cfg = db.config();
    cfg.pool.lifetime_ms = 3_600_000;
    cfg.pool.server_check_delay_ms = 60_000;
    let file = ConfigFile::new(&cfg);
    let proxy = tenantgate::app::start(cfg.clone(), Some(file.path.clone()))
        .await
        .unwrap();
    let reload = |cfg: &tenantgate::config::Config| file.reload(&proxy, cfg);
    let (c, _conn) = acme_client(&proxy, &db).await;
    // One transaction, so one checkout and one checkin, per call (an extended-protocol
    // query would take two: its prepare and its execution).
    let pid = || async {
        match &c.simple_query("SELECT pg_backend_pid()").await.unwrap()[1] {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).unwrap().to_owned(),
            m => panic!("not a row: {m:?}"),
        }
    };
    let first = pid().await;
    assert_eq!(
        pid().await,
        first,
        "one pooled connection serves the client"
    );

    // Checkin: handed out unchecked (the check delay is long), closed when it comes back.
    tokio::time::sleep(Duration::from_millis(300)).await;
    cfg.pool.lifetime_ms = 200;
    reload(&cfg);
    pid().await;
    let second = pid().await;
    assert_ne!(second, first, "kept past the reloaded lifetime at checkin");

    // Checkout: with no check delay (set at its next checkin), a connection of the same
    // age is checked, and not handed out, at the checkout after the second reload.
    cfg.pool.lifetime_ms = 3_600_000;
    cfg.pool.server_check_delay_ms = 0;
    reload(&cfg);
    assert_eq!(pid().await, second);
    tokio::time::sleep(Duration::from_millis(300)).await;
    cfg.pool.lifetime_ms = 200;
    reload(&cfg);
    assert_ne!(pid().await, second, "handed out past the reloaded lifetime");

    drop(c);
    proxy.shutdown().await;
    db.cleanup().await;
}

/// A config file a test rewrites and reloads (removed with it).
struct ConfigFile {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

impl ConfigFile {
    fn new(cfg: &tenantgate::config::Config) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tenantgate.toml");
        std::fs::write(&path, toml::to_string(cfg).unwrap()).unwrap();
        ConfigFile { _dir: dir, path }
    }

    /// Write `cfg` and have `proxy` reload it.
    fn reload(&self, proxy: &tenantgate::app::Running, cfg: &tenantgate::config::Config) {
        std::fs::write(&self.path, toml::to_string(cfg).unwrap()).unwrap();
        proxy.proxy.reload().unwrap();
    }
}

/// A client of tenant acme through `proxy`, with its connection's task.
async fn acme_client(
    proxy: &tenantgate::app::Running,
    db: &common::TestDb,
) -> (
    tokio_postgres::Client,
    tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
) {
    let (c, conn) = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} user=app@acme password=acme-pw dbname={}",
            proxy.addr.port(),
            db.db
        ),
        NoTls,
    )
    .await
    .unwrap();
    (c, tokio::spawn(conn))
}
