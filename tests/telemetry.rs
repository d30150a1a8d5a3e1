//! Statement telemetry against real servers: events and rollups for a known workload in the
//! embedded store and in a real mongod; MongoDB killed under load (spool, replay, exactly
//! once); a proxy restarted with a non-empty spool; the spool bound counted.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::mongo::{self, PrivateMongo, SHARED_URL};
use common::{eventually, Env};
use mongodb::bson::{doc, Document};
use tenantgate::config::Config;
use tenantgate::telemetry::event::EventDoc;
use tenantgate::telemetry::Stats;

/// Rates making cost easy to check: one unit per row and per KiB.
fn priced(c: &mut Config) {
    c.telemetry.cost_per_ms = 0.0;
    c.telemetry.cost_per_row = 1.0;
    c.telemetry.cost_per_kib = 1.0;
    c.telemetry.flush_ms = 50;
    c.telemetry.rollup_interval_ms = 100;
}

/// The known workload: 8 statements for acme (one failing), 2 for globex.
async fn workload(env: &Env) {
    let acme = env.client("acme").await;
    for _ in 0..3 {
        acme.simple_query("SELECT 1").await.unwrap();
    }
    let e = acme
        .simple_query("SELECT * FROM missing_table")
        .await
        .unwrap_err();
    assert_eq!(common::code(&e), "42P01");
    // One query string, three statements.
    acme.simple_query("BEGIN; UPDATE items SET owner = owner WHERE id <= 4; COMMIT")
        .await
        .unwrap();
    // Extended protocol: one Execute.
    let rows = acme
        .query("SELECT id FROM items WHERE id > $1", &[&7i32])
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);
    let globex = env.client("globex").await;
    globex.simple_query("SELECT * FROM items").await.unwrap();
    globex
        .execute("INSERT INTO items VALUES ($1, 'globex')", &[&99i32])
        .await
        .unwrap();
}

fn check_events(events: &[EventDoc], run_id_unique: bool) {
    let acme: Vec<_> = events.iter().filter(|e| e.tenant == "acme").collect();
    let globex: Vec<_> = events.iter().filter(|e| e.tenant == "globex").collect();
    assert_eq!(acme.len(), 8, "{acme:#?}");
    assert_eq!(globex.len(), 2, "{globex:#?}");
    if run_id_unique {
        let ids: HashSet<_> = events.iter().map(|e| &e.id).collect();
        assert_eq!(ids.len(), events.len(), "event ids are unique");
    }
    let selects: Vec<_> = acme.iter().filter(|e| e.sample == "SELECT 1").collect();
    assert_eq!(selects.len(), 3);
    for e in &selects {
        assert_eq!((e.kind.as_str(), e.rows), ("select", 1));
        assert_eq!(e.fingerprint, "select ?");
        assert_eq!(e.user, "app");
        assert_eq!(e.plan, "default");
        assert_eq!(e.pg_instance, "primary");
        assert!(e.bytes_in > 0 && e.bytes_out > 0, "{e:?}");
        assert!(e.latency_us > 0);
        assert!(e.sqlstate.is_none());
    }
    assert_eq!(selects[0].fp_hash, selects[2].fp_hash);
    let failed: Vec<_> = acme.iter().filter(|e| e.sqlstate.is_some()).collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].sqlstate.as_deref(), Some("42P01"));
    let update = acme
        .iter()
        .find(|e| e.kind == "update")
        .expect("update event");
    assert_eq!(update.rows, 4);
    assert_eq!(
        update.fingerprint,
        "update items set owner = owner where id <= ?"
    );
    assert_eq!(
        acme.iter()
            .filter(|e| e.fingerprint == "begin" || e.fingerprint == "commit")
            .count(),
        2
    );
    let ext = acme
        .iter()
        .find(|e| e.fingerprint == "select id from items where id > $1")
        .expect("extended-protocol event");
    assert_eq!(ext.rows, 3);
    let insert = globex
        .iter()
        .find(|e| e.kind == "insert")
        .expect("insert event");
    assert_eq!(insert.rows, 1);
    for e in events {
        let want = e.rows as f64 + (e.bytes_in + e.bytes_out) as f64 / 1024.0;
        assert!((e.cost - want).abs() < 1e-9, "cost of {e:?}");
    }
}

fn read_jsonl(dir: &str) -> Vec<EventDoc> {
    let text = std::fs::read_to_string(std::path::Path::new(dir).join("events.jsonl")).unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn embedded_store_records_events_and_rollups() {
    let env = Env::with(priced).await;
    workload(&env).await;
    let tele = env.proxy.proxy.telemetry().unwrap().clone();
    tele.flush().await;
    let dir = env.proxy.proxy.config().telemetry.dir.clone();
    let events = read_jsonl(&dir);
    check_events(&events, true);

    let usage = tele.usage(None, 0).await.unwrap();
    let acme = usage.iter().find(|u| u.tenant == "acme").unwrap();
    assert_eq!((acme.totals.count, acme.totals.errors), (8, 1));
    assert_eq!(acme.totals.rows, 3 + 4 + 3);
    assert_eq!(acme.totals.hist.iter().sum::<u64>(), 8);
    let want_cost: f64 = events
        .iter()
        .filter(|e| e.tenant == "acme")
        .map(|e| e.cost)
        .sum();
    assert!((acme.totals.cost - want_cost).abs() < 1e-9);
    assert!(acme.totals.p95_us() <= acme.totals.latency_max_us);
    let days = tele.days("acme", 0).await.unwrap();
    assert_eq!(days.iter().map(|d| d.1.count).sum::<u64>(), 8);
    let slow = tele.slow_queries(Some("acme"), 0, 3).await.unwrap();
    assert_eq!(slow.len(), 3);
    assert!(slow.windows(2).all(|w| w[0].mean_us >= w[1].mean_us));
    assert_eq!(Stats::get(&tele.stats().dropped_queue), 0);
    env.finish().await;
}

fn mongo_events(docs: Vec<Document>) -> Vec<EventDoc> {
    docs.into_iter()
        .map(|mut d| {
            d.remove("ts");
            d.remove("lb");
            mongodb::bson::from_document(d).unwrap()
        })
        .collect()
}

async fn all_events(url: &str, db: &str) -> Vec<Document> {
    use futures_util::TryStreamExt;
    let c = mongo::collection(url, db, "events").await;
    c.find(doc! {}).await.unwrap().try_collect().await.unwrap()
}

#[tokio::test]
async fn mongodb_gets_events_rollups_and_indexes() {
    let db = mongo::unique_db();
    let env = Env::with(|c| {
        priced(c);
        c.telemetry.mongodb_url = SHARED_URL.into();
        c.telemetry.mongodb_database = db.clone();
        c.telemetry.retention_days = 7;
    })
    .await;
    let tele = env.proxy.proxy.telemetry().unwrap().clone();
    // Up once the writer's probe found the server.
    assert!(
        eventually(Duration::from_secs(15), || async {
            Stats::get(&tele.stats().sink_up) == 1
        })
        .await
    );
    workload(&env).await;
    tele.flush().await;
    let events = mongo_events(all_events(SHARED_URL, &db).await);
    check_events(&events, true);

    // Raw events expire (TTL on ts); the retention is the configured one.
    use futures_util::TryStreamExt;
    let idx: Vec<_> = mongo::collection(SHARED_URL, &db, "events")
        .await
        .list_indexes()
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let ttl = idx
        .iter()
        .find_map(|i| i.options.as_ref()?.expire_after)
        .expect("TTL index");
    assert_eq!(ttl, Duration::from_secs(7 * 86_400));

    // Rollups arrive with the same totals.
    let ok = eventually(Duration::from_secs(20), || async {
        let u = tele.usage(Some("acme"), 0).await.unwrap();
        let d = tele.days("acme", 0).await.unwrap();
        u.first().is_some_and(|u| u.totals.count == 8)
            && d.iter().map(|d| d.1.count).sum::<u64>() == 8
    })
    .await;
    assert!(ok, "rollups: {:?}", tele.usage(Some("acme"), 0).await);
    let u = tele.usage(Some("acme"), 0).await.unwrap().remove(0);
    assert_eq!(
        (u.totals.errors, u.totals.rows, u.plan.as_str()),
        (1, 10, "default")
    );
    assert_eq!(u.totals.hist.iter().sum::<u64>(), 8);
    let want_cost: f64 = events
        .iter()
        .filter(|e| e.tenant == "acme")
        .map(|e| e.cost)
        .sum();
    assert!((u.totals.cost - want_cost).abs() < 1e-6);
    let max = events
        .iter()
        .filter(|e| e.tenant == "acme")
        .map(|e| e.latency_us)
        .max();
    assert_eq!(Some(u.totals.latency_max_us), max);
    let slow = tele.slow_queries(Some("globex"), 0, 10).await.unwrap();
    assert_eq!(slow.len(), 2);
    env.finish().await;
    mongo::drop_db(SHARED_URL, &db).await;
}

/// Run `n` simple queries as acme; all must succeed.
async fn queries(env: &Env, n: usize) {
    let c = env.client("acme").await;
    for i in 0..n {
        c.simple_query(&format!("SELECT {i}"))
            .await
            .expect("query while mongodb is down");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_killed_under_load_loses_nothing_and_duplicates_nothing() {
    let mut m = PrivateMongo::new();
    m.start().await;
    let url = m.url();
    let env = Env::with(|c| {
        priced(c);
        c.telemetry.mongodb_url = url.clone();
        c.telemetry.mongodb_database = "tg".into();
        c.telemetry.mongodb_timeout_ms = 500;
    })
    .await;
    let tele = env.proxy.proxy.telemetry().unwrap().clone();
    let up = || async { Stats::get(&tele.stats().sink_up) == 1 };
    assert!(eventually(Duration::from_secs(15), up).await);
    // Four clients keep querying while mongod is killed and restarted; queries never
    // wait on MongoDB, so every one succeeds.
    let load = common::Load::start(
        &env,
        "acme",
        4,
        |n| format!("SELECT {n}"),
        "query under load",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    m.kill().await;
    let spooling = eventually(Duration::from_secs(15), || async {
        Stats::get(&tele.stats().spooled) > 0
    })
    .await;
    assert!(spooling, "events were spooled while mongod was down");
    tokio::time::sleep(Duration::from_millis(500)).await;
    m.start().await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (total, _) = load.stop().await;
    tele.flush().await;
    let ok = eventually(Duration::from_secs(30), || async {
        Stats::get(&tele.stats().spool_bytes) == 0 && Stats::get(&tele.stats().sink_up) == 1
    })
    .await;
    assert!(ok, "spool replayed");
    tele.flush().await;
    let events = mongo_events(all_events(&url, "tg").await);
    let selects = events
        .iter()
        .filter(|e| e.fingerprint == "select ?")
        .count() as u64;
    assert_eq!(selects, total, "every event exactly once");
    let ids: HashSet<_> = events.iter().map(|e| &e.id).collect();
    assert_eq!(ids.len(), events.len());
    assert_eq!(Stats::get(&tele.stats().dropped_spool), 0);
    assert_eq!(Stats::get(&tele.stats().dropped_queue), 0);
    env.finish().await;
    m.kill().await;
}

#[tokio::test]
async fn proxy_restart_replays_its_spool() {
    let mut m = PrivateMongo::new();
    let url = m.url();
    let spool_dir = common::scratch_dir("spool");
    let cfg = |c: &mut Config| {
        priced(c);
        c.telemetry.mongodb_url = url.clone();
        c.telemetry.mongodb_database = "tg".into();
        c.telemetry.mongodb_timeout_ms = 300;
        c.telemetry.dir = spool_dir.clone();
    };
    // MongoDB is not running: everything spools.
    let env = Env::with(&cfg).await;
    queries(&env, 40).await;
    let tele = env.proxy.proxy.telemetry().unwrap().clone();
    tele.flush().await;
    let db = env.db;
    env.proxy.shutdown().await;
    let spool = std::fs::metadata(std::path::Path::new(&spool_dir).join("events.spool")).unwrap();
    assert!(spool.len() > 0, "spool kept across the restart");
    assert_eq!(mongo_events_count(&url).await, None);

    m.start().await;
    let mut cfg2 = db.config();
    cfg(&mut cfg2);
    let proxy = tenantgate::app::start(cfg2, None).await.unwrap();
    let tele = proxy.proxy.telemetry().unwrap().clone();
    let ok = eventually(Duration::from_secs(30), || async {
        Stats::get(&tele.stats().replayed) == 40
    })
    .await;
    assert!(ok, "replayed {}", Stats::get(&tele.stats().replayed));
    assert_eq!(mongo_events_count(&url).await, Some(40));
    proxy.shutdown().await;
    db.cleanup().await;
    m.kill().await;
}

async fn mongo_events_count(url: &str) -> Option<u64> {
    let c = mongo::collection(url, "tg", "events").await;
    tokio::time::timeout(Duration::from_secs(3), c.count_documents(doc! {}))
        .await
        .ok()?
        .ok()
}

#[tokio::test]
async fn spool_bound_drops_are_counted_and_reported() {
    let mut m = PrivateMongo::new();
    let url = m.url();
    let env = Env::with(|c| {
        priced(c);
        c.telemetry.mongodb_url = url.clone();
        c.telemetry.mongodb_database = "tg".into();
        c.telemetry.mongodb_timeout_ms = 300;
        c.telemetry.spool_max_bytes = 4096;
    })
    .await;
    queries(&env, 60).await;
    let tele = env.proxy.proxy.telemetry().unwrap().clone();
    tele.flush().await;
    let spooled = Stats::get(&tele.stats().spooled);
    let dropped = Stats::get(&tele.stats().dropped_spool);
    assert!(
        spooled > 0 && dropped > 0,
        "spooled {spooled}, dropped {dropped}"
    );
    assert_eq!(spooled + dropped, 60);
    // MongoDB comes up: the spooled ones arrive, the drop is on record in the audit log.
    m.start().await;
    let audit = mongo::collection(&url, "tg", "audit").await;
    let ok = eventually(Duration::from_secs(30), || async {
        audit
            .count_documents(
                doc! {"action": "telemetry_events_dropped", "detail.count": dropped as i64},
            )
            .await
            .unwrap_or(0)
            == 1
    })
    .await;
    assert!(ok, "drop reported in the audit collection");
    assert_eq!(mongo_events_count(&url).await, Some(spooled));
    env.finish().await;
    m.kill().await;
}
