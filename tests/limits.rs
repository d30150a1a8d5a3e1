//! Plan limits, flags, sessions, cancel and the result cache against the real Redis
//! (127.0.0.1:6379, every test under its own key prefix) and two proxy replicas sharing
//! it; a private redis-server stopped and restarted under load; and the in-process mode.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{code, eventually, wire, Env};
use tenantgate::app::Running;
use tenantgate::config::Config;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};
use wire::{raw, raw_round};

const REDIS: &str = "redis://127.0.0.1:6379";

fn shared(prefix: &str) -> impl Fn(&mut Config) + Clone + '_ {
    move |c: &mut Config| {
        c.redis.url = REDIS.into();
        c.redis.key_prefix = format!("tgtest:{prefix}:");
        c.redis.heartbeat_ms = 300;
    }
}

fn limit(c: &mut Config, tenant: &str, qps: u32, per_day: u64, conns: u32) {
    let t = c.tenants.iter_mut().find(|t| t.key == tenant).unwrap();
    t.queries_per_second = qps;
    t.queries_per_day = per_day;
    t.max_connections = conns;
}

/// A second replica in front of the same database, configured like the first.
async fn replica(env: &Env, f: impl FnOnce(&mut Config)) -> Running {
    let mut cfg = env.db.config();
    f(&mut cfg);
    tenantgate::app::start(cfg, None).await.unwrap()
}

async fn connect(port: u16, db: &str, tenant: &str) -> Result<Client, tokio_postgres::Error> {
    let dsn = format!(
        "host=127.0.0.1 port={port} user=app@{tenant} password={tenant}-pw dbname={db} connect_timeout=10"
    );
    let (c, conn) = tokio_postgres::connect(&dsn, NoTls).await?;
    tokio::spawn(conn);
    Ok(c)
}

/// The first value `sql` returns.
async fn show(c: &Client, sql: &str) -> String {
    first_value(&c.simple_query(sql).await.unwrap())
}

fn first_value(msgs: &[SimpleQueryMessage]) -> String {
    msgs.iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .expect("a row")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_holds_across_two_replicas() {
    let prefix = common::unique();
    let setup = |c: &mut Config| {
        shared(&prefix)(c);
        limit(c, "acme", 20, 0, 0);
    };
    let env = Env::with(setup).await;
    let b = replica(&env, setup).await;
    let ports = [env.addr().port(), b.addr.port()];
    let ok = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let window = Duration::from_secs(2);
    let mut tasks = Vec::new();
    for i in 0..4 {
        let c = connect(ports[i % 2], &env.db.db, "acme").await.unwrap();
        let (ok, refused) = (ok.clone(), refused.clone());
        tasks.push(tokio::spawn(async move {
            while started.elapsed() < window {
                match c.simple_query("SELECT 1").await {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        assert_eq!(code(&e), "53400", "{e}");
                        let db = e.as_db_error().unwrap();
                        assert!(db.message().contains("queries_per_second"), "{db:?}");
                        assert!(db.detail().unwrap().starts_with("Retry after"), "{db:?}");
                        refused.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
            // The connection stays usable once the rate allows.
            tokio::time::sleep(Duration::from_millis(300)).await;
            c.simple_query("SELECT 1")
                .await
                .expect("usable after a refusal");
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (ok, refused) = (ok.load(Ordering::Relaxed), refused.load(Ordering::Relaxed));
    let secs = started.elapsed().as_secs_f64().min(2.5);
    // One second of burst plus the rate over the window, for both replicas together.
    let allowed = 20.0 + 20.0 * secs;
    assert!(refused > 0, "ok {ok}, refused {refused}");
    assert!((ok as f64) <= allowed + 8.0, "ok {ok} > allowed {allowed}");
    assert!(
        (ok as f64) >= allowed * 0.6,
        "ok {ok} < 60% of allowed {allowed}"
    );
    // The other tenant is not limited.
    let g = env.client("globex").await;
    for _ in 0..50 {
        g.simple_query("SELECT 1").await.unwrap();
    }
    b.shutdown().await;
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daily_quota_is_shared_and_exhausted() {
    let prefix = common::unique();
    let setup = |c: &mut Config| {
        shared(&prefix)(c);
        limit(c, "acme", 0, 30, 0);
    };
    let env = Env::with(setup).await;
    let b = replica(&env, setup).await;
    let a = env.client("acme").await;
    for _ in 0..30 {
        a.simple_query("SELECT 1").await.unwrap();
    }
    let e = a.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(code(&e), "53400");
    assert!(e
        .as_db_error()
        .unwrap()
        .message()
        .contains("queries_per_day"));
    // The other replica learns the count within a couple of seconds.
    let cb = connect(b.addr.port(), &env.db.db, "acme").await.unwrap();
    let refused = eventually(Duration::from_secs(5), || async {
        cb.simple_query("SELECT 1").await.is_err()
    })
    .await;
    assert!(
        refused,
        "replica b refuses once the shared quota is used up"
    );
    b.shutdown().await;
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_executes_are_admitted_in_order_under_the_shared_rate() {
    // Extended protocol, pipelined: each Execute is admitted in the order sent, those
    // after the first through the shared bucket in Redis while the client holds a server
    // connection with replies pending.
    let prefix = common::unique();
    let env = Env::with(|c| {
        shared(&prefix)(c);
        limit(c, "acme", 3, 0, 0);
    })
    .await;
    let a = env.client("acme").await;
    let st = a.prepare("SELECT $1::int").await.unwrap();
    let results = futures_util::future::join_all((0..8i32).map(|i| {
        let (a, st) = (&a, &st);
        async move { a.query(st, &[&i]).await }
    }))
    .await;
    // A second's burst, and the few tokens the rate adds while the batch runs.
    let admitted = results.iter().take_while(|r| r.is_ok()).count();
    assert!((3..=4).contains(&admitted), "{admitted} admitted");
    for (i, r) in results.iter().enumerate() {
        match r {
            Ok(rows) => assert_eq!(rows[0].get::<_, i32>(0), i as i32),
            Err(e) if i >= admitted => assert_eq!(code(e), "53400", "{e}"),
            Err(e) => panic!("execute {i}: {e}"),
        }
    }
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        admitted,
        "admitted in order"
    );
    // A refusal keeps the connection: it runs once the rate allows.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let rows = a.query(&st, &[&42i32]).await.unwrap();
    assert_eq!(rows[0].get::<_, i32>(0), 42);
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cap_holds_across_replicas_and_frees_on_disconnect() {
    let prefix = common::unique();
    let setup = |c: &mut Config| {
        shared(&prefix)(c);
        limit(c, "acme", 0, 0, 2);
    };
    let env = Env::with(setup).await;
    let b = replica(&env, setup).await;
    let c1 = env.client("acme").await;
    let _c2 = connect(b.addr.port(), &env.db.db, "acme").await.unwrap();
    for port in [env.addr().port(), b.addr.port()] {
        let e = connect(port, &env.db.db, "acme").await.unwrap_err();
        assert_eq!(code(&e), "53300", "{e}");
        let msg = e.as_db_error().unwrap().message().to_owned();
        assert!(msg.contains("too many connections for tenant"), "{msg}");
    }
    // Sessions are visible from either replica.
    let l = b.proxy.limits().unwrap();
    let all = l.sessions().list(l).await;
    assert_eq!(
        all.iter().filter(|s| s.tenant == "acme").count(),
        2,
        "{all:?}"
    );
    assert_eq!(l.usage("acme").await.connections, 2);
    drop(c1);
    let freed = eventually(Duration::from_secs(5), || async {
        connect(b.addr.port(), &env.db.db, "acme").await.is_ok()
    })
    .await;
    assert!(freed, "a slot frees when a client leaves");
    // Another tenant is not capped.
    let _g: Vec<Client> =
        futures_util::future::join_all((0..3).map(|_| env.client("globex"))).await;
    b.shutdown().await;
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flags_reach_the_other_replica_and_are_honoured() {
    let prefix = common::unique();
    let env = Env::with(shared(&prefix)).await;
    let b = replica(&env, shared(&prefix)).await;
    let cb = connect(b.addr.port(), &env.db.db, "acme").await.unwrap();
    cb.simple_query("INSERT INTO items VALUES (100, 'acme')")
        .await
        .unwrap();
    cb.simple_query(
        "CREATE FUNCTION bump() RETURNS int LANGUAGE sql AS
         'INSERT INTO items VALUES (200, ''acme'') RETURNING id'",
    )
    .await
    .unwrap();
    let la = env.proxy.proxy.limits().unwrap();
    la.set_flag("acme", "read_only", "on").await.unwrap();
    la.set_flag("acme", "beta_ui", "blue").await.unwrap();
    let t0 = Instant::now();
    let ro = eventually(Duration::from_secs(3), || async {
        cb.simple_query("INSERT INTO items VALUES (101, 'acme')")
            .await
            .is_err()
    })
    .await;
    assert!(
        ro && t0.elapsed() < Duration::from_secs(2),
        "propagated in {:?}",
        t0.elapsed()
    );
    let e = cb
        .simple_query("UPDATE items SET owner = owner")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "25006", "{e}");
    for sql in [
        "SET default_transaction_read_only = off",
        "BEGIN READ WRITE",
        "SELECT set_config('transaction_read_only', 'off', false)",
    ] {
        let e = cb.simple_query(sql).await.unwrap_err();
        assert_eq!(code(&e), "25006", "{sql}: {e}");
    }
    // Reads work; the application reads its flags through SQL.
    cb.simple_query("SELECT count(*) FROM items").await.unwrap();
    let v = first_value(
        &cb.simple_query("SELECT current_setting('tenantgate.beta_ui')")
            .await
            .unwrap(),
    );
    assert_eq!(v, "blue");
    // Even a write hidden in a function is stopped, by PostgreSQL itself.
    let e = cb.simple_query("SELECT bump()").await.unwrap_err();
    assert_eq!(code(&e), "25006", "{e}");
    // Another tenant is unaffected.
    env.client("globex")
        .await
        .simple_query("INSERT INTO items VALUES (100, 'globex')")
        .await
        .unwrap();
    // max_statement_ms: a server-side statement_timeout that clients cannot lift.
    la.unset_flag("acme", "read_only").await.unwrap();
    la.set_flag("acme", "max_statement_ms", "200")
        .await
        .unwrap();
    let lb = b.proxy.limits().unwrap();
    assert!(
        eventually(Duration::from_secs(3), || async {
            lb.flags("acme").max_statement_ms == 200 && !lb.flags("acme").read_only
        })
        .await
    );
    let e = cb.simple_query("SELECT pg_sleep(2)").await.unwrap_err();
    assert_eq!(code(&e), "57014", "{e}");
    let e = cb
        .simple_query("SET statement_timeout = 0")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "42501", "{e}");
    cb.simple_query("INSERT INTO items VALUES (102, 'acme')")
        .await
        .unwrap();
    assert_eq!(
        lb.list_flags("acme")
            .await
            .get("beta_ui")
            .map(String::as_str),
        Some("blue")
    );
    assert!(la.set_flag("acme", "read_only", "maybe").await.is_err());
    b.shutdown().await;
    env.finish().await;
}

/// The settings behind `read_only` and `max_statement_ms` can be read, reach clients
/// connected before the flag changed (also one that only binds a statement it prepared
/// before; a session-pooled one is disconnected, as its connection started without
/// them), and come back after `RESET ALL` and `DISCARD ALL` (which drivers send when a
/// pooled connection is returned; server connections start with them), also for a
/// statement in the same Query, pipelined right after one, and inside a transaction: in
/// session pooling (`globex`) and transaction pooling (`acme`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_settings_are_readable_reach_connected_clients_and_survive_resets() {
    let prefix = common::unique();
    let env = Env::with(|c| {
        shared(&prefix)(c);
        common::tenant_pool(c, "globex", tenantgate::config::PoolMode::Session, 2);
    })
    .await;
    let tenants = ["acme", "globex"];
    for t in tenants {
        env.client(t)
            .await
            .simple_query(
                "CREATE FUNCTION bump() RETURNS int LANGUAGE sql AS
                 'INSERT INTO items VALUES (200, current_schema()) RETURNING id'",
            )
            .await
            .unwrap();
    }
    // Clients connected before a flag changes see the change too, in both modes.
    let early: Vec<Client> = futures_util::future::join_all(tenants.map(|t| env.client(t))).await;
    let mut bumps = Vec::new();
    for c in &early {
        bumps.push(c.prepare("SELECT bump()").await.unwrap());
    }
    let l = env.proxy.proxy.limits().unwrap();
    // A flag the proxy does not hold reaches a session-pooled client by SET; its session
    // goes on.
    l.set_flag("globex", "beta_ui", "blue").await.unwrap();
    assert!(
        eventually(Duration::from_secs(3), || async {
            l.flags("globex").all.get("beta_ui").map(String::as_str) == Some("blue")
        })
        .await
    );
    assert_eq!(
        show(&early[1], "SELECT current_setting('tenantgate.beta_ui')").await,
        "blue"
    );
    for t in tenants {
        l.set_flag(t, "read_only", "on").await.unwrap();
    }
    assert!(
        eventually(Duration::from_secs(3), || async {
            tenants.iter().all(|t| l.flags(t).read_only)
        })
        .await
    );
    // Bind and Execute of a statement prepared before: only the server refuses it. A
    // session-pooled client owns a connection that started without the flag (what its
    // RESET ALL would return to): its session ends, and it reconnects.
    let e = early[0].query(&bumps[0], &[]).await.unwrap_err();
    assert_eq!(code(&e), "25006", "acme: {e}");
    assert_eq!(
        show(&early[0], "SHOW default_transaction_read_only").await,
        "on"
    );
    let e = early[1].query(&bumps[1], &[]).await.unwrap_err();
    assert_eq!(code(&e), "57P01", "globex: {e}");
    assert!(early[1].simple_query("SELECT 1").await.is_err());
    for t in tenants {
        let c = env.client(t).await;
        assert_eq!(show(&c, "SHOW default_transaction_read_only").await, "on");
        assert_eq!(
            show(
                &c,
                "SELECT current_setting('transaction_read_only') || 1 AS read_only"
            )
            .await,
            "on1"
        );
        // The setting's name as a bind parameter: the statement guard refuses a computed
        // set_config name before the flags are checked.
        let e = c
            .query(
                "SELECT set_config($1, 'off', false)",
                &[&"default_transaction_read_only"],
            )
            .await
            .unwrap_err();
        assert_eq!(code(&e), "42501", "{t}: {e}");
        for reset in ["RESET ALL", "DISCARD ALL"] {
            c.simple_query(reset).await.unwrap();
            assert_eq!(
                show(&c, "SHOW default_transaction_read_only").await,
                "on",
                "{t} after {reset}"
            );
            // A statement pipelined right behind it.
            let (r, bumped) = tokio::join!(c.simple_query(reset), c.simple_query("SELECT bump()"));
            r.unwrap();
            assert_eq!(code(&bumped.unwrap_err()), "25006", "{t} behind {reset}");
        }
        // In the same Query, with a new transaction started after it.
        let e = c
            .simple_query("RESET ALL; COMMIT; SELECT bump()")
            .await
            .unwrap_err();
        assert_eq!(code(&e), "25006", "{t}: {e}");
    }
    let read_only_session = env.client("globex").await;
    assert_eq!(
        show(&read_only_session, "SHOW default_transaction_read_only").await,
        "on"
    );
    for t in tenants {
        l.unset_flag(t, "read_only").await.unwrap();
        l.set_flag(t, "max_statement_ms", "300").await.unwrap();
    }
    assert!(
        eventually(Duration::from_secs(3), || async {
            tenants.iter().all(|t| {
                let f = l.flags(t);
                !f.read_only && f.max_statement_ms == 300
            })
        })
        .await
    );
    assert_eq!(
        show(&early[0], "SHOW default_transaction_read_only").await,
        "off"
    );
    assert_eq!(show(&early[0], "SHOW statement_timeout").await, "300ms");
    // A session-pooled client connected while read_only was set: its session ends too.
    let e = read_only_session
        .simple_query("SELECT 1")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "57P01", "{e}");
    for t in tenants {
        let c = env.client(t).await;
        assert_eq!(show(&c, "SHOW statement_timeout").await, "300ms", "{t}");
        for reset in [
            "RESET ALL",
            "DISCARD ALL",
            "DO $$BEGIN EXECUTE 'RESET ' || 'ALL'; END$$",
        ] {
            c.simple_query(reset).await.unwrap();
            let e = c.simple_query("SELECT pg_sleep(2)").await.unwrap_err();
            assert_eq!(code(&e), "57014", "{t} after {reset}: {e}");
        }
        let e = c
            .simple_query("RESET ALL; SELECT pg_sleep(2)")
            .await
            .unwrap_err();
        assert_eq!(code(&e), "57014", "{t} in the same Query: {e}");
        // Inside a transaction.
        c.simple_query("BEGIN").await.unwrap();
        c.simple_query("RESET ALL").await.unwrap();
        let e = c.simple_query("SELECT pg_sleep(2)").await.unwrap_err();
        assert_eq!(code(&e), "57014", "{t} in a transaction: {e}");
        c.simple_query("ROLLBACK").await.unwrap();
        c.simple_query("SELECT bump()").await.unwrap();
    }
    env.finish().await;
}

/// A server connection in use when a held flag changes started without it: it is closed
/// when it comes back, not handed to the next client, whose `RESET ALL` would return to
/// its old startup values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_in_use_when_a_held_flag_changes_is_not_reused() {
    let prefix = common::unique();
    let env = Env::with(|c| {
        shared(&prefix)(c);
        common::tenant_pool(c, "acme", tenantgate::config::PoolMode::Transaction, 1);
    })
    .await;
    let a = env.client("acme").await;
    a.simple_query(
        "CREATE FUNCTION bump() RETURNS int LANGUAGE sql AS
         'INSERT INTO items VALUES (300, ''acme'') RETURNING id'",
    )
    .await
    .unwrap();
    a.simple_query("BEGIN").await.unwrap();
    let l = env.proxy.proxy.limits().unwrap();
    l.set_flag("acme", "read_only", "on").await.unwrap();
    assert!(
        eventually(Duration::from_secs(3), || async {
            l.flags("acme").read_only
        })
        .await
    );
    // The pool's one connection is a's: b waits for it.
    let b = env.client("acme").await;
    let waiting = tokio::spawn(async move {
        let r = b.simple_query("RESET ALL; COMMIT; SELECT bump()").await;
        (b, r)
    });
    assert!(
        eventually(Duration::from_secs(3), || async {
            env.pool("acme").waiting == 1
        })
        .await
    );
    a.simple_query("COMMIT").await.unwrap();
    let (b, r) = waiting.await.unwrap();
    assert_eq!(code(&r.unwrap_err()), "25006");
    assert_eq!(show(&b, "SHOW default_transaction_read_only").await, "on");
    env.finish().await;
}

/// Turn acme's read_only flag on and max_statement_ms to 5 s, and wait until this replica
/// has them.
async fn hold_read_only_and_timeout(env: &Env) {
    let l = env.proxy.proxy.limits().unwrap();
    l.set_flag("acme", "max_statement_ms", "5000")
        .await
        .unwrap();
    l.set_flag("acme", "read_only", "on").await.unwrap();
    assert!(
        eventually(Duration::from_secs(3), || async {
            let f = l.flags("acme");
            f.read_only && f.max_statement_ms == 5000
        })
        .await
    );
}

/// Transaction pooling keeps a client's prepared statements for it across server
/// connections: one prepared before a held flag was set is checked again when it is
/// bound (outside a transaction and inside one), so it cannot lift the flag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_prepared_before_a_flag_was_set_are_checked_when_bound() {
    let prefix = common::unique();
    let env = Env::with(|c| {
        shared(&prefix)(c);
        common::tenant_pool(c, "acme", tenantgate::config::PoolMode::Transaction, 2);
    })
    .await;
    let a = env.client("acme").await;
    let lift = a.prepare("SET statement_timeout = 0").await.unwrap();
    let write = a.prepare("SET TRANSACTION READ WRITE").await.unwrap();
    let read = a.prepare("SELECT count(*) FROM items").await.unwrap();
    a.execute(&lift, &[]).await.unwrap();
    a.batch_execute("BEGIN").await.unwrap();
    a.execute(&write, &[]).await.unwrap();
    a.batch_execute("COMMIT").await.unwrap();

    hold_read_only_and_timeout(&env).await;
    let e = a.execute(&lift, &[]).await.unwrap_err();
    assert_eq!(code(&e), "42501", "{e}");
    a.batch_execute("BEGIN").await.unwrap();
    let e = a.execute(&write, &[]).await.unwrap_err();
    assert_eq!(code(&e), "25006", "{e}");
    assert_eq!(
        code(&a.execute(&read, &[]).await.unwrap_err()),
        "25P02",
        "the refusal aborted the transaction, as a server error would"
    );
    a.batch_execute("ROLLBACK").await.unwrap();
    let n: i64 = a.query_one(&read, &[]).await.unwrap().get(0);
    assert_eq!(n, 10, "a read prepared before is bound as before");
    assert_eq!(show(&a, "SHOW statement_timeout").await, "5s");
    env.finish().await;
}

/// A Describe prepares a client's statement on a server connection as a Bind does, so it
/// is checked against flags set after the Parse too (else the server-side copy could be
/// run by name with SQL `EXECUTE`). Refusals of several messages in one pipelined batch
/// give one error, as the server skips to Sync after the first; the next batch's own
/// refusal is its own, also when a real error came before a refusal in its batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_is_checked_and_refusals_in_a_batch_give_one_error_each_batch() {
    let prefix = common::unique();
    let env = Env::with(|c| {
        shared(&prefix)(c);
        common::tenant_pool(c, "acme", tenantgate::config::PoolMode::Transaction, 2);
        c.auth[0].method = tenantgate::config::AuthMethod::Trust;
    })
    .await;
    let mut s = wire::login(&env, "app@acme").await;
    let parse =
        |name: &str, sql: &str| raw(b'P', &[name.as_bytes(), b"\0", sql.as_bytes(), b"\0\0\0"]);
    let bind = |name: &str| raw(b'B', &[b"\0", name.as_bytes(), b"\0\0\0\0\0\0\0"]);
    let execute = raw(b'E', &[b"\0\0\0\0\0"]);
    let sync = raw(b'S', &[]);
    let query = |sql: &str| raw(b'Q', &[sql.as_bytes(), b"\0"]);
    let prepared = [
        parse("lift", "SET statement_timeout = 0"),
        parse("w", "INSERT INTO items VALUES (500, 'acme')"),
        sync.clone(),
    ];
    assert!(raw_round(&mut s, &prepared, 1).await.is_empty());

    hold_read_only_and_timeout(&env).await;
    let describe = raw(b'D', &[b"Slift\0"]);
    let codes = raw_round(
        &mut s,
        &[query("BEGIN"), describe, sync.clone(), query("ROLLBACK")],
        3,
    )
    .await;
    assert_eq!(codes, ["42501"]);

    // One pipeline, the server attached from its first message: a JDBC-style batch of a
    // refused statement, then a batch refused by the guard.
    let codes = raw_round(
        &mut s,
        &[
            parse("", "SELECT 1"),
            bind(""),
            execute.clone(),
            bind("w"),
            execute.clone(),
            bind("w"),
            execute.clone(),
            sync.clone(),
            parse("", "SELECT * FROM globex.items"),
            bind(""),
            execute.clone(),
            sync.clone(),
        ],
        2,
    )
    .await;
    assert_eq!(codes, ["25006", "42501"], "each batch's own refusal");

    // A real error before a refusal in its batch: the server skips the refusal's marker,
    // so that refusal is not reported, and the next batch's refusal (then a second
    // batch of the first kind in an open transaction, where the marker is answered
    // 25P02 as any statement would be) is still its own.
    let codes = raw_round(
        &mut s,
        &[
            parse("", "SELECT 1/0"),
            bind(""),
            execute.clone(),
            parse("", "SELECT * FROM globex.items"),
            sync.clone(),
            bind("w"),
            execute.clone(),
            sync.clone(),
            query("BEGIN"),
            parse("", "SELECT 1/0"),
            bind(""),
            execute.clone(),
            sync.clone(),
            parse("", "SELECT * FROM globex.items"),
            sync.clone(),
            query("ROLLBACK"),
            parse("", "SELECT * FROM globex.items"),
            bind(""),
            execute,
            sync,
        ],
        7,
    )
    .await;
    assert_eq!(codes, ["22012", "25006", "22012", "25P02", "42501"]);
    let c = env.client("acme").await;
    let n: i64 = common::scalar(&c, "SELECT count(*) FROM items WHERE id = 500", &[]).await;
    assert_eq!(n, 0);
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_reaching_another_replica_is_forwarded() {
    let prefix = common::unique();
    let env = Env::with(shared(&prefix)).await;
    let b = replica(&env, shared(&prefix)).await;
    let a = env.client("acme").await;
    let token = a.cancel_token();
    let sleeper = tokio::spawn(async move { a.simple_query("SELECT pg_sleep(20)").await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The CancelRequest goes to replica b, as a load balancer might send it.
    let s = tokio::net::TcpStream::connect(b.addr).await.unwrap();
    token.cancel_query_raw(s, NoTls).await.unwrap();
    let res = tokio::time::timeout(Duration::from_secs(10), sleeper)
        .await
        .expect("cancelled well before pg_sleep ends")
        .unwrap();
    assert_eq!(code(&res.unwrap_err()), "57014");
    b.shutdown().await;
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_cache_hits_invalidates_on_write_and_keeps_tenants_apart() {
    let prefix = common::unique();
    let env = Env::with(shared(&prefix)).await;
    let b = replica(&env, shared(&prefix)).await;
    let la = env.proxy.proxy.limits().unwrap();
    for t in ["acme", "globex"] {
        la.set_flag(t, "query_cache", "true").await.unwrap();
    }
    let q = "/* cache: 30s */ SELECT count(*), min(owner) FROM items";
    let a = env.client("acme").await;
    let first = a.simple_query(q).await.unwrap();
    assert_eq!(first_value(&first), "10");
    // The answer is written to the shared cache in the background: wait until it is there.
    let redis = redis::Client::open(REDIS).unwrap();
    let rc = redis.get_multiplexed_async_connection().await.unwrap();
    let pattern = format!("tgtest:{prefix}:cache:acme:*");
    let stored = eventually(Duration::from_secs(5), || {
        let (mut rc, pattern) = (rc.clone(), pattern.clone());
        async move {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(&pattern)
                .query_async(&mut rc)
                .await
                .unwrap();
            !keys.is_empty()
        }
    })
    .await;
    assert!(stored, "the answer reaches the shared cache");
    // Change the data behind the proxy's back: a cached answer does not see it.
    let su = common::admin(&env.db.db).await;
    su.batch_execute("INSERT INTO acme.items VALUES (50, 'acme')")
        .await
        .unwrap();
    let cached = a.simple_query(q).await.unwrap();
    assert_eq!(first_value(&cached), "10", "served from the cache");
    assert_eq!(format!("{cached:?}").len(), format!("{first:?}").len());
    // The other replica shares the cache.
    let cb = connect(b.addr.port(), &env.db.db, "acme").await.unwrap();
    let lb = b.proxy.limits().unwrap();
    assert!(
        eventually(Duration::from_secs(3), || async {
            lb.flags("acme").query_cache
        })
        .await
    );
    assert_eq!(first_value(&cb.simple_query(q).await.unwrap()), "10");
    // Another tenant, same text: its own answer.
    let g = env.client("globex").await;
    let gv = g.simple_query(q).await.unwrap();
    assert!(matches!(&gv[1], SimpleQueryMessage::Row(r) if r.get(1) == Some("globex")));
    // Without the comment, no cache.
    assert_eq!(
        first_value(&a.simple_query("SELECT count(*) FROM items").await.unwrap()),
        "11"
    );
    // A write through the proxy invalidates the tenant's answers on every replica.
    a.simple_query("DELETE FROM items WHERE id = 50")
        .await
        .unwrap();
    su.batch_execute("INSERT INTO acme.items VALUES (51, 'acme'), (52, 'acme')")
        .await
        .unwrap();
    assert_eq!(first_value(&a.simple_query(q).await.unwrap()), "12");
    let fresh = eventually(Duration::from_secs(3), || async {
        first_value(&cb.simple_query(q).await.unwrap()) == "12"
    })
    .await;
    assert!(fresh, "replica b sees the invalidation");
    // A write whose command tag looks like a read (a writing CTE) invalidates too.
    assert_eq!(first_value(&a.simple_query(q).await.unwrap()), "12");
    a.simple_query(
        "WITH d AS (INSERT INTO items VALUES (60, 'acme') RETURNING *) SELECT count(*) FROM d",
    )
    .await
    .unwrap();
    assert_eq!(
        first_value(&a.simple_query(q).await.unwrap()),
        "13",
        "writing CTE seen"
    );
    a.simple_query("DELETE FROM items WHERE id = 60")
        .await
        .unwrap();
    // Inside a transaction the cache is not used.
    a.simple_query("BEGIN").await.unwrap();
    a.simple_query("INSERT INTO items VALUES (53, 'acme')")
        .await
        .unwrap();
    assert_eq!(first_value(&a.simple_query(q).await.unwrap()), "13");
    a.simple_query("ROLLBACK").await.unwrap();
    assert_eq!(first_value(&a.simple_query(q).await.unwrap()), "12");
    b.shutdown().await;
    env.finish().await;
}

/// A private redis-server on a free port.
struct PrivateRedis {
    port: u16,
    child: Option<tokio::process::Child>,
}

impl PrivateRedis {
    fn new() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        PrivateRedis { port, child: None }
    }

    async fn start(&mut self) {
        let child = tokio::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server");
        self.child = Some(child);
        let port = self.port;
        assert!(
            eventually(Duration::from_secs(10), || async move {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
            })
            .await
        );
    }

    async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
            let _ = c.wait().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_and_restarted_under_load_fails_no_query() {
    let mut r = PrivateRedis::new();
    r.start().await;
    let url = format!("redis://127.0.0.1:{}", r.port);
    let env = Env::with(|c| {
        c.redis.url = url.clone();
        c.redis.timeout_ms = 50;
        c.redis.heartbeat_ms = 300;
        // A rate this load stays far below: any refusal is the fallback's fault.
        limit(c, "acme", 100_000, 1_000_000, 100);
    })
    .await;
    let l = env.proxy.proxy.limits().unwrap().clone();
    assert!(
        eventually(Duration::from_secs(5), || async {
            l.shared().unwrap().is_up()
        })
        .await
    );
    let load = common::Load::start(
        &env,
        "acme",
        4,
        |_| "SELECT 1".into(),
        "no query fails while redis is down",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    r.kill().await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            !l.shared().unwrap().is_up()
        })
        .await
    );
    // New clients still get in while Redis is down.
    env.client("acme")
        .await
        .simple_query("SELECT 1")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    r.start().await;
    let back = eventually(Duration::from_secs(10), || async {
        l.shared().unwrap().is_up()
    })
    .await;
    // The clients stay connected: their sessions are what the heartbeat re-registers.
    let (total, _clients) = load.stop().await;
    assert!(back, "limits use redis again after it returns");
    assert!(total > 100, "{total} queries");
    // Sessions are registered again by the heartbeat after the restart (Redis kept nothing).
    let listed = eventually(Duration::from_secs(10), || async {
        l.sessions().list(&l).await.len() >= 4
    })
    .await;
    assert!(listed);
    env.finish().await;
    r.kill().await;
}

#[tokio::test]
async fn without_redis_the_same_limits_hold_in_process() {
    let env = Env::with(|c| limit(c, "acme", 5, 0, 1)).await;
    let a = env.client("acme").await;
    let mut refused = 0;
    for _ in 0..10 {
        if let Err(e) = a.simple_query("SELECT 1").await {
            assert_eq!(code(&e), "53400");
            refused += 1;
        }
    }
    assert!(refused >= 4, "{refused}");
    let e = env.try_client("app@acme", "acme-pw").await.unwrap_err();
    assert_eq!(code(&e), "53300");
    let l = env.proxy.proxy.limits().unwrap();
    l.set_flag("acme", "read_only", "true").await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let e = a.simple_query("DELETE FROM items").await.unwrap_err();
    assert_eq!(code(&e), "25006");
    // Extended protocol: a refused Execute leaves the connection usable.
    l.unset_flag("acme", "read_only").await.unwrap();
    let mut refused_ext = 0;
    for _ in 0..10 {
        match a.query("SELECT $1::int", &[&1i32]).await {
            Ok(r) => assert_eq!(r.len(), 1),
            Err(e) => {
                assert_eq!(code(&e), "53400", "{e}");
                refused_ext += 1;
            }
        }
    }
    assert!(refused_ext > 0);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        a.query("SELECT $1::int", &[&7i32]).await.unwrap()[0].get::<_, i32>(0),
        7
    );
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_user_statements_count_against_the_tenant_they_name() {
    // A trusted service user's statements run under the limits of the tenant each one
    // names, not of the login (it has none): the quota of acme is acme's whoever spends it.
    let prefix = common::unique();
    let env = Env::with(|c| {
        shared(&prefix)(c);
        limit(c, "acme", 0, 4, 0);
        common::service_user(c);
    })
    .await;
    let svc = env.try_client("svc", "svc-pw").await.unwrap();
    for _ in 0..2 {
        svc.simple_query("/* tenant: acme */ SELECT 1")
            .await
            .unwrap();
        // Between acme's statements, another tenant's: the limits follow the header.
        svc.simple_query("/* tenant: globex */ SELECT 1")
            .await
            .unwrap();
    }
    // Extended protocol: the Execute is what counts.
    svc.query("/* tenant: acme */ SELECT $1::int", &[&1i32])
        .await
        .unwrap();
    let a = env.client("acme").await;
    a.simple_query("SELECT 1").await.unwrap();
    // acme's four are spent: by the service user (three) and acme's own login (one).
    let e = svc
        .simple_query("/* tenant: acme */ SELECT 1")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "53400", "{e}");
    assert!(e
        .as_db_error()
        .unwrap()
        .message()
        .contains("queries_per_day"));
    let e = svc
        .query("/* tenant: acme */ SELECT $1::int", &[&2i32])
        .await
        .unwrap_err();
    assert_eq!(code(&e), "53400", "{e}");
    assert_eq!(
        code(&a.simple_query("SELECT 1").await.unwrap_err()),
        "53400"
    );
    // globex has no quota, and the service user's connection is still usable.
    assert_eq!(
        first_value(
            &svc.simple_query("/* tenant: globex */ SELECT 7")
                .await
                .unwrap()
        ),
        "7"
    );
    env.finish().await;
}
