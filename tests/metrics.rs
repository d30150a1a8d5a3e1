//! The Prometheus endpoint reports what the proxy did (its own test binary: the metrics
//! recorder is process-wide).

mod common;

use common::Env;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn scrape(port: u16) -> String {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_counts_queries_logins_and_refusals() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let env = Env::with(|c| {
        c.metrics.listen = format!("127.0.0.1:{port}");
        c.telemetry.top_tenants = 1;
        c.telemetry.flush_ms = 50;
        c.limits.idle_transaction_timeout_ms = 200;
    })
    .await;
    // A client left idle in a transaction, closed by the limit by the time of the scrape.
    let idler = env.client("acme").await;
    idler.batch_execute("BEGIN").await.unwrap();
    let c = env.client("acme").await;
    for _ in 0..5 {
        c.simple_query("SELECT 1").await.unwrap();
    }
    c.simple_query("UPDATE items SET owner = owner WHERE id = 1")
        .await
        .unwrap();
    let _ = c
        .simple_query("SELECT * FROM globex.items")
        .await
        .unwrap_err();
    let _ = c.simple_query("SELECT 1/0").await.unwrap_err();
    let _ = env.try_client("app@acme", "wrong").await.unwrap_err();
    // Another tenant's statements: past top_tenants = 1, they count as tenant="_other".
    env.client("globex")
        .await
        .simple_query("SELECT 1; SELECT 2")
        .await
        .unwrap();
    env.proxy.proxy.telemetry().unwrap().flush().await;
    assert!(
        common::eventually(std::time::Duration::from_secs(5), || async {
            idler.is_closed()
        })
        .await
    );
    let text = scrape(port).await;
    assert_eq!(
        value(
            &text,
            "tenantgate_client_idle_timeouts_total{kind=\"transaction\"}"
        ),
        1.0,
        "{text}"
    );
    // Telemetry: events by plan and kind, by tenant for the busiest only, and the writer.
    assert!(
        value(
            &text,
            "tenantgate_plan_queries_total{plan=\"default\",kind=\"select\"}"
        ) >= 7.0,
        "{text}"
    );
    assert!(
        value(
            &text,
            "tenantgate_plan_query_errors_total{plan=\"default\",kind=\"select\"}"
        ) >= 1.0,
        "{text}"
    );
    assert_eq!(
        // The idler's BEGIN and c's eight statements.
        value(&text, "tenantgate_tenant_queries_total{tenant=\"acme\"}"),
        9.0,
        "{text}"
    );
    assert_eq!(
        value(&text, "tenantgate_tenant_queries_total{tenant=\"_other\"}"),
        2.0,
        "{text}"
    );
    assert!(!text.contains("tenant=\"globex\""), "{text}");
    assert!(
        value(&text, "tenantgate_events_written_total") >= 10.0,
        "{text}"
    );
    assert!(
        text.contains("# HELP tenantgate_events_dropped_total"),
        "{text}"
    );
    assert!(text.contains("# HELP tenantgate_queries_total"), "{text}");
    assert!(
        value(&text, "tenantgate_queries_total{kind=\"select\"}") >= 5.0,
        "{text}"
    );
    assert!(
        value(&text, "tenantgate_queries_total{kind=\"update\"}") >= 1.0,
        "{text}"
    );
    assert!(
        value(&text, "tenantgate_guard_refused_total") >= 1.0,
        "{text}"
    );
    assert!(
        value(&text, "tenantgate_query_errors_total") >= 1.0,
        "{text}"
    );
    assert!(
        value(&text, "tenantgate_login_failures_total{sqlstate=\"28P01\"}") >= 1.0,
        "{text}"
    );
    assert!(
        value(&text, "tenantgate_client_connections_total") >= 2.0,
        "{text}"
    );
    assert!(
        value(&text, "tenantgate_server_checkouts_total") >= 6.0,
        "{text}"
    );
    assert!(
        text.contains("tenantgate_pool_wait_seconds_bucket"),
        "{text}"
    );
    assert!(
        value(&text, "tenantgate_query_seconds_count{kind=\"select\"}") >= 5.0,
        "{text}"
    );
    assert!(
        value(&text, "tenantgate_query_seconds_count{kind=\"update\"}") >= 1.0,
        "{text}"
    );
    env.finish().await;
}
