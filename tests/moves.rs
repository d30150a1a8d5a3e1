//! Online tenant moves between two private PostgreSQL instances (wal_level = logical),
//! through a running proxy, under load on the moving tenant and on another tenant of the
//! same source: data and sequences arrive, only the moving tenant pauses, no transaction
//! fails; failures (target has the schema, target unreachable) leave the tenant working.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::catalog_db::{drop_catalog, proxy_config, CatalogDb};
use common::pg_instance::PgInstance;
use common::{admin, connect_dsn};
use tenantgate::catalog::moves::{self, MoveOptions};
use tenantgate::catalog::provision::{schema_of, NewTenant};
use tenantgate::catalog::Catalog;

struct World {
    db: String,
    catalog: Catalog,
    proxy: tenantgate::app::Running,
    src: PgInstance,
    dst: PgInstance,
    prefix: String,
}

async fn instance_db(port: u16) {
    connect_dsn(&format!(
        "host=127.0.0.1 port={port} user=postgres dbname=postgres"
    ))
    .await
    .batch_execute("CREATE DATABASE app")
    .await
    .unwrap();
}

impl World {
    async fn new() -> World {
        let (src, dst) = tokio::task::spawn_blocking(|| {
            (PgInstance::start_logical(), PgInstance::start_logical())
        })
        .await
        .unwrap();
        instance_db(src.port).await;
        instance_db(dst.port).await;
        let CatalogDb {
            db,
            url,
            key,
            catalog,
            prefix,
            ..
        } = CatalogDb::new("tg_mv", "m").await;
        let c = catalog.pool().get().await.unwrap();
        for (name, port, dedicated) in [
            ("src", src.port, false),
            ("dst", dst.port, true),
            ("dead", 1, false),
        ] {
            c.execute(
                "INSERT INTO tenantgate.instances (name, url, dedicated) VALUES ($1, $2, $3)",
                &[
                    &name,
                    &format!("postgresql://postgres@127.0.0.1:{port}/app"),
                    &dedicated,
                ],
            )
            .await
            .unwrap();
        }
        drop(c);
        for t in ["acme", "other", "clash"] {
            catalog
                .create_tenant(&NewTenant {
                    key: format!("{prefix}_{t}"),
                    display_name: None,
                    plan: "pro".into(),
                    instance: Some("src".into()),
                    user: "app".into(),
                    password: Some(format!("{t}-pw")),
                    actor: "test".into(),
                })
                .await
                .unwrap();
        }
        let mut cfg = proxy_config(&url, &key, &db);
        // The load runs flat out; plan rate limits are not what this test is about.
        cfg.limits.enforce_plans = false;
        let proxy = tenantgate::app::start(cfg, None).await.unwrap();
        World {
            db,
            catalog,
            proxy,
            src,
            dst,
            prefix,
        }
    }

    fn key(&self, t: &str) -> String {
        format!("{}_{t}", self.prefix)
    }

    async fn client(&self, t: &str) -> tokio_postgres::Client {
        connect_dsn(&format!(
            "host=127.0.0.1 port={} user=app@{} password={t}-pw dbname=app connect_timeout=10",
            self.proxy.addr.port(),
            self.key(t)
        ))
        .await
    }

    async fn on(&self, port: u16) -> tokio_postgres::Client {
        connect_dsn(&format!(
            "host=127.0.0.1 port={port} user=postgres dbname=app"
        ))
        .await
    }

    async fn finish(self) {
        self.proxy.shutdown().await;
        drop_catalog(&self.db, &self.prefix).await;
        drop((self.src, self.dst));
    }
}

/// Write and read continuously as a tenant; returns (transactions, failures).
fn load(
    c: tokio_postgres::Client,
    stop: Arc<AtomicBool>,
    table: &'static str,
) -> tokio::task::JoinHandle<(u64, Vec<String>)> {
    tokio::spawn(async move {
        let (mut n, mut failed) = (0u64, Vec::new());
        while !stop.load(Ordering::Relaxed) {
            let r = c
                .simple_query(&format!(
                    "INSERT INTO {table} (title) VALUES ('load {n}'); SELECT count(*) FROM {table}"
                ))
                .await;
            match r {
                Ok(_) => n += 1,
                Err(e) => {
                    let m = match e.as_db_error() {
                        Some(d) => format!("{} {}", d.code().code(), d.message()),
                        None => e.to_string(),
                    };
                    if !failed.contains(&m) {
                        failed.push(m);
                    }
                }
            }
        }
        (n, failed)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn move_under_load_pauses_only_that_tenant_and_loses_nothing() {
    let w = World::new().await;
    let acme = w.client("acme").await;
    // TG_MOVE_ROWS=1000000 for the measurement in README.md.
    let rows: i64 = std::env::var("TG_MOVE_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20000);
    acme.batch_execute(&format!(
        "CREATE TABLE notes (id bigserial PRIMARY KEY, title text NOT NULL);
         CREATE TABLE events (at timestamptz DEFAULT now(), title text);
         INSERT INTO notes (title) SELECT 'n' || g FROM generate_series(1, {rows}) g;
         INSERT INTO events (title) SELECT 'e' || g FROM generate_series(1, 5000) g;"
    ))
    .await
    .unwrap();
    let other = w.client("other").await;
    other
        .batch_execute("CREATE TABLE notes (id bigserial PRIMARY KEY, title text NOT NULL)")
        .await
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let l1 = load(acme, stop.clone(), "notes");
    let l2 = load(w.client("acme").await, stop.clone(), "events");
    let l3 = load(other, stop.clone(), "notes");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let steps = Arc::new(parking_lot::Mutex::new(Vec::<String>::new()));
    let s2 = steps.clone();
    let progress = move |m: &str| s2.lock().push(m.to_owned());
    let report = moves::move_tenant(
        &w.catalog,
        &w.key("acme"),
        "dst",
        "test",
        &MoveOptions::default(),
        &progress,
    )
    .await
    .unwrap_or_else(|e| panic!("move failed: {e}; steps {:?}", steps.lock()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let (a1, f1) = l1.await.unwrap();
    let (a2, f2) = l2.await.unwrap();
    let (o, f3) = l3.await.unwrap();
    println!(
        "moved {} rows in {} tables: copy {:?}, pause {:?}, total {:?}; load acme {} + {} txns, other {} txns",
        report.rows, report.tables, report.copy_time, report.pause_time, report.total, a1, a2, o
    );
    assert!(
        f1.is_empty() && f2.is_empty(),
        "acme failures: {f1:?} {f2:?}"
    );
    assert!(f3.is_empty(), "other tenant failures: {f3:?}");
    assert!(a1 > 0 && o > 0);
    assert!(
        report.pause_time < Duration::from_secs(5),
        "pause {:?}",
        report.pause_time
    );
    // Every row is on the target, sequences continue, the tenant now lives there.
    let schema = schema_of(&w.key("acme"));
    let dst = w.on(w.dst.port).await;
    let notes: i64 =
        common::scalar(&dst, &format!("SELECT count(*) FROM {schema}.notes"), &[]).await;
    assert_eq!(notes, rows + a1 as i64);
    let events: i64 =
        common::scalar(&dst, &format!("SELECT count(*) FROM {schema}.events"), &[]).await;
    assert_eq!(events, 5000 + a2 as i64, "table without a primary key");
    let acme = w.client("acme").await;
    acme.simple_query("INSERT INTO notes (title) VALUES ('after')")
        .await
        .expect("writes go to the target");
    let max: i64 = common::scalar(&dst, &format!("SELECT max(id) FROM {schema}.notes"), &[]).await;
    assert_eq!(
        max,
        rows + a1 as i64 + 1,
        "sequence continued on the target"
    );
    assert_eq!(
        w.proxy
            .proxy
            .directory()
            .tenant(&w.key("acme"))
            .unwrap()
            .placement
            .instance,
        "dst"
    );
    // The source copy is kept, renamed and read-only, until cleanup.
    let src = w.on(w.src.port).await;
    let kept: i64 = common::scalar(
        &src,
        "SELECT count(*) FROM pg_namespace WHERE nspname = $1",
        &[&report.kept_schema],
    )
    .await;
    assert_eq!(kept, 1);
    assert_eq!(
        moves::cleanup(&w.catalog, &w.key("acme"))
            .await
            .unwrap()
            .len(),
        1
    );
    let slots: i64 = common::scalar(&src, "SELECT count(*) FROM pg_replication_slots", &[]).await;
    assert_eq!(slots, 0, "replication slot dropped");
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_moves_leave_the_tenant_where_it_was_and_working() {
    let w = World::new().await;
    let clash = w.client("clash").await;
    clash
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    // The target already has the schema.
    w.on(w.dst.port)
        .await
        .batch_execute(&format!("CREATE SCHEMA {}", schema_of(&w.key("clash"))))
        .await
        .unwrap();
    let clash_key = w.key("clash");
    let opts = MoveOptions::default();
    let try_move =
        |to: &'static str| moves::move_tenant(&w.catalog, &clash_key, to, "test", &opts, &|_| {});
    let e = try_move("dst").await.unwrap_err();
    assert!(e.to_string().contains("already has schema"), "{e}");
    clash
        .simple_query("INSERT INTO t VALUES (2)")
        .await
        .expect("still served from the source");
    // The target is unreachable.
    let e = try_move("dead").await.unwrap_err();
    assert!(e.to_string().contains("unreachable"), "{e}");
    clash
        .simple_query("INSERT INTO t VALUES (3)")
        .await
        .expect("still served");
    let t = w.proxy.proxy.directory().tenant(&w.key("clash")).unwrap();
    assert_eq!(t.placement.instance, "src");
    assert!(!t.paused);
    // Moves are recorded.
    let c = w.catalog.pool().get().await.unwrap();
    let failed: i64 = common::scalar(
        &c,
        "SELECT count(*) FROM tenantgate.tenant_moves WHERE tenant = $1 AND state = 'failed'",
        &[&w.key("clash")],
    )
    .await;
    assert_eq!(failed, 2);
    drop(c);
    assert!(
        !moves::abort(&w.catalog, &w.key("clash")).await.unwrap(),
        "nothing left open"
    );
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_free_replication_slot_rolls_back() {
    let w = World::new().await;
    // A third instance, logical but without replication slots: the subscription cannot
    // get one on it.
    let tight = tokio::task::spawn_blocking(|| {
        PgInstance::start_with(
            "-c wal_level=logical -c max_replication_slots=0 -c max_wal_senders=2",
        )
    })
    .await
    .unwrap();
    instance_db(tight.port).await;
    let c = w.catalog.pool().get().await.unwrap();
    c.execute(
        "INSERT INTO tenantgate.instances (name, url) VALUES ('tight', $1)",
        &[&format!(
            "postgresql://postgres@127.0.0.1:{}/app",
            tight.port
        )],
    )
    .await
    .unwrap();
    drop(c);
    let key = format!("{}_tight", w.prefix);
    w.catalog
        .create_tenant(&NewTenant {
            key: key.clone(),
            display_name: None,
            plan: "pro".into(),
            instance: Some("tight".into()),
            user: "app".into(),
            password: Some("tight-pw".into()),
            actor: "test".into(),
        })
        .await
        .unwrap();
    let e = moves::move_tenant(
        &w.catalog,
        &key,
        "dst",
        "test",
        &MoveOptions::default(),
        &|_| {},
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("subscription"), "{e}");
    // Nothing is left on the target, and the tenant is not paused.
    let dst = w.on(w.dst.port).await;
    let left: i64 = common::scalar(
        &dst,
        "SELECT count(*) FROM pg_namespace WHERE nspname = $1",
        &[&schema_of(&key)],
    )
    .await;
    assert_eq!(left, 0);
    let subs: i64 = common::scalar(&dst, "SELECT count(*) FROM pg_subscription", &[]).await;
    assert_eq!(subs, 0);
    let c = w.catalog.pool().get().await.unwrap();
    let paused: bool = common::scalar(
        &c,
        "SELECT paused FROM tenantgate.tenants WHERE key = $1",
        &[&key],
    )
    .await;
    assert!(!paused);
    drop(c);
    let _ = admin("postgres")
        .await
        .batch_execute(&format!("DROP ROLE IF EXISTS tg_{key}"))
        .await;
    w.finish().await;
    drop(tight);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_restarted_mid_move_and_an_abandoned_move() {
    let w = World::new().await;
    let acme = w.client("acme").await;
    acme.batch_execute(
        "CREATE TABLE notes (id bigserial PRIMARY KEY, title text NOT NULL);
         INSERT INTO notes (title) SELECT 'n' || g FROM generate_series(1, 300000) g;",
    )
    .await
    .unwrap();
    drop(acme);
    // The move runs on its own (as the CLI does); the proxy restarts while it copies.
    let cat = w.catalog.clone();
    let key = w.key("acme");
    let mover = tokio::spawn(async move {
        moves::move_tenant(&cat, &key, "dst", "test", &MoveOptions::default(), &|_| {}).await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let World {
        db,
        catalog,
        proxy,
        src,
        dst,
        prefix,
    } = w;
    let cfg = proxy.proxy.config();
    let mut cfg = (*cfg).clone();
    cfg.listen = proxy.addr.to_string();
    proxy.shutdown().await;
    let proxy = tenantgate::app::start(cfg, None).await.unwrap();
    let w = World {
        db,
        catalog,
        proxy,
        src,
        dst,
        prefix,
    };
    let report = mover
        .await
        .unwrap()
        .expect("the move completes across the proxy restart");
    assert_eq!(report.rows, 300000);
    // The restarted proxy routes the tenant to its new home.
    let ok = common::eventually(Duration::from_secs(10), || async {
        w.proxy
            .proxy
            .directory()
            .tenant(&w.key("acme"))
            .is_some_and(|t| t.placement.instance == "dst" && !t.paused)
    })
    .await;
    assert!(ok);
    let n = w
        .client("acme")
        .await
        .simple_query("SELECT count(*) FROM notes")
        .await
        .unwrap();
    assert!(format!("{n:?}").contains("300000"));
    // A move whose mover died (no heartbeat for long) is rolled back by the proxy on its
    // own: the tenant is never left paused.
    let other = w.key("other");
    let c = w.catalog.pool().get().await.unwrap();
    c.batch_execute(&format!(
        "INSERT INTO tenantgate.tenant_moves (tenant, from_instance, to_instance, state, heartbeat_at)
           VALUES ('{other}', 'src', 'dst', 'syncing', now() - interval '5 minutes');
         UPDATE tenantgate.tenants SET paused = true WHERE key = '{other}';"
    ))
    .await
    .unwrap();
    drop(c);
    let ok = common::eventually(Duration::from_secs(20), || async {
        w.proxy
            .proxy
            .directory()
            .tenant(&other)
            .is_some_and(|t| !t.paused)
    })
    .await;
    assert!(ok, "the stale move was rolled back");
    let aborted = common::eventually(Duration::from_secs(10), || async {
        let c = w.catalog.pool().get().await.unwrap();
        let state: String = common::scalar(
            &c,
            "SELECT state FROM tenantgate.tenant_moves WHERE tenant = $1",
            &[&other],
        )
        .await;
        state == "aborted"
    })
    .await;
    assert!(aborted, "recorded as aborted");
    w.client("other")
        .await
        .simple_query("SELECT 1")
        .await
        .expect("served after abort");
    w.finish().await;
}
