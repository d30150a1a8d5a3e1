//! Every metric the proxy exports, declared and described in one place, with handles cached
//! so the hot path only does atomic adds. Labels have bounded cardinality (statement kind,
//! SQLSTATE class, protocol); per-tenant labels come with the telemetry issue's top-N.

use std::net::SocketAddr;

use metrics::{
    describe_counter, describe_gauge, describe_histogram, Counter, Gauge, Histogram, Unit,
};
use tracing::{info, warn};

pub const CLIENT_CONNECTIONS: &str = "tenantgate_client_connections_total";
pub const CLIENTS: &str = "tenantgate_clients";
pub const LOGIN_FAILURES: &str = "tenantgate_login_failures_total";
pub const QUERIES: &str = "tenantgate_queries_total";
pub const QUERY_ERRORS: &str = "tenantgate_query_errors_total";
pub const TRANSACTIONS: &str = "tenantgate_server_checkouts_total";
pub const POOL_WAIT: &str = "tenantgate_pool_wait_seconds";
pub const POOL_TIMEOUTS: &str = "tenantgate_pool_timeouts_total";
pub const IDLE_TIMEOUTS: &str = "tenantgate_client_idle_timeouts_total";
pub const GUARD_REFUSED: &str = "tenantgate_guard_refused_total";
pub const GUARD_UNPARSED: &str = "tenantgate_guard_unparsed_total";
pub const SESSIONS_ENDED: &str = "tenantgate_tenant_sessions_ended_total";
pub const QUERY_SECONDS: &str = "tenantgate_query_seconds";
pub const PLAN_QUERIES: &str = "tenantgate_plan_queries_total";
pub const PLAN_QUERY_ERRORS: &str = "tenantgate_plan_query_errors_total";
pub const TENANT_QUERIES: &str = "tenantgate_tenant_queries_total";
pub const TENANT_QUERY_ERRORS: &str = "tenantgate_tenant_query_errors_total";
pub const EVENTS_WRITTEN: &str = "tenantgate_events_written_total";
pub const EVENTS_DROPPED: &str = "tenantgate_events_dropped_total";
pub const EVENTS_SPOOLED: &str = "tenantgate_events_spooled_total";
pub const EVENTS_REPLAYED: &str = "tenantgate_events_replayed_total";
pub const SPOOL_BYTES: &str = "tenantgate_spool_bytes";
pub const SINK_UP: &str = "tenantgate_telemetry_sink_up";
pub const REDIS_UP: &str = "tenantgate_redis_up";
pub const REDIS_ERRORS: &str = "tenantgate_redis_errors_total";
pub const LIMIT_REFUSALS: &str = "tenantgate_limit_refusals_total";
pub const CACHE_LOOKUPS: &str = "tenantgate_cache_lookups_total";
pub const SLOW_QUERIES: &str = "tenantgate_slow_queries_total";

/// Statement kinds used as the `kind` label.
pub const KINDS: [&str; 7] = [
    "select",
    "insert",
    "update",
    "delete",
    "ddl",
    "transaction",
    "other",
];

/// Describe every metric (names, units, help).
pub fn describe_all() {
    describe_counter!(CLIENT_CONNECTIONS, "Client connections accepted.");
    describe_gauge!(CLIENTS, "Client connections open now.");
    describe_counter!(LOGIN_FAILURES, "Refused logins, by SQLSTATE.");
    describe_counter!(QUERIES, "Statements relayed: simple-query statements by kind, extended-protocol Executes as kind=extended.");
    describe_counter!(
        QUERY_ERRORS,
        "ErrorResponses from servers relayed to clients."
    );
    describe_counter!(
        TRANSACTIONS,
        "Server connections checked out of a pool (one per transaction in transaction pooling)."
    );
    describe_histogram!(
        POOL_WAIT,
        Unit::Seconds,
        "Time waiting for a pooled server connection."
    );
    describe_counter!(
        POOL_TIMEOUTS,
        "Clients that gave up waiting for a server connection (53300)."
    );
    describe_counter!(
        IDLE_TIMEOUTS,
        "Clients closed by an idle limit: kind=transaction (25P03), kind=session (57P05)."
    );
    describe_counter!(GUARD_REFUSED, "Statements refused by the isolation guard.");
    describe_counter!(
        GUARD_UNPARSED,
        "Statements the guard could not parse (passed unless strict)."
    );
    describe_counter!(
        SESSIONS_ENDED,
        "Sessions ended because their tenant was suspended or removed."
    );
    describe_counter!(
        PLAN_QUERIES,
        "Statement events by tenant plan and statement kind."
    );
    describe_counter!(
        PLAN_QUERY_ERRORS,
        "Failed statement events by tenant plan and statement kind."
    );
    describe_counter!(
        TENANT_QUERIES,
        "Statement events of the busiest tenants (telemetry.top_tenants); the rest as tenant=_other."
    );
    describe_counter!(
        TENANT_QUERY_ERRORS,
        "Failed statement events of the busiest tenants; the rest as tenant=_other."
    );
    describe_counter!(
        EVENTS_WRITTEN,
        "Statement events stored (MongoDB or the embedded store), replayed ones included."
    );
    describe_counter!(
        EVENTS_DROPPED,
        "Statement events lost, by reason (queue full, spool full, io_error)."
    );
    describe_counter!(
        EVENTS_SPOOLED,
        "Statement events written to the spool while MongoDB was unavailable."
    );
    describe_counter!(EVENTS_REPLAYED, "Spooled events replayed into MongoDB.");
    describe_gauge!(SPOOL_BYTES, Unit::Bytes, "Spooled events awaiting replay.");
    describe_gauge!(
        SINK_UP,
        "1 while MongoDB takes telemetry writes, 0 while events spool."
    );
    describe_gauge!(
        REDIS_UP,
        "1 while Redis answers, 0 while limits are enforced locally."
    );
    describe_counter!(REDIS_ERRORS, "Redis calls that failed or timed out.");
    describe_counter!(
        LIMIT_REFUSALS,
        "Statements refused by a tenant's plan limit, by limit (53400)."
    );
    describe_counter!(
        CACHE_LOOKUPS,
        "Result cache lookups, by outcome (hit, miss)."
    );
    describe_counter!(
        SLOW_QUERIES,
        "Statements slower than their tenant's slow_query_ms flag."
    );
    describe_histogram!(
        QUERY_SECONDS,
        Unit::Seconds,
        "Statement latency, from the first message forwarded to the server's ReadyForQuery, by kind (a simple query string or an extended-protocol batch up to Sync)."
    );
}

/// Install the Prometheus exporter on `listen` (once per process). Failure is logged, not
/// fatal: the proxy serves without metrics rather than not at all.
pub fn install(listen: &str) {
    let addr: SocketAddr = match listen.parse() {
        Ok(a) => a,
        Err(_) => return warn!(%listen, "metrics.listen is not an address; metrics disabled"),
    };
    let builder = metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full(POOL_WAIT.into()),
            &[0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0],
        )
        .and_then(|b| {
            b.set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Full(QUERY_SECONDS.into()),
                &[
                    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                    0.5, 1.0, 2.5, 5.0, 10.0,
                ],
            )
        })
        .expect("static buckets are valid");
    match builder.install() {
        Ok(()) => {
            describe_all();
            info!(%addr, "metrics on /metrics");
        }
        Err(e) => warn!(error = %e, "metrics exporter not installed"),
    }
}

/// Cached metric handles (no-ops when no exporter is installed).
#[derive(Clone)]
pub struct Metrics {
    pub client_connections: Counter,
    pub clients: Gauge,
    pub queries: [Counter; KINDS.len()],
    pub executes: Counter,
    pub query_errors: Counter,
    pub checkouts: Counter,
    pub pool_wait: Histogram,
    pub pool_timeouts: Counter,
    /// Clients closed by an idle limit: `[transaction, session]`.
    pub idle_timeouts: [Counter; 2],
    pub guard_refused: Counter,
    pub guard_unparsed: Counter,
    /// Statement latency by kind; the last entry is `extended`.
    pub query_seconds: [Histogram; KINDS.len() + 1],
    pub sessions_ended: Counter,
}

impl Metrics {
    pub fn new() -> Self {
        Metrics {
            client_connections: metrics::counter!(CLIENT_CONNECTIONS),
            clients: metrics::gauge!(CLIENTS),
            queries: KINDS.map(|k| metrics::counter!(QUERIES, "kind" => k)),
            executes: metrics::counter!(QUERIES, "kind" => "extended"),
            query_errors: metrics::counter!(QUERY_ERRORS),
            checkouts: metrics::counter!(TRANSACTIONS),
            pool_wait: metrics::histogram!(POOL_WAIT),
            pool_timeouts: metrics::counter!(POOL_TIMEOUTS),
            idle_timeouts: ["transaction", "session"]
                .map(|k| metrics::counter!(IDLE_TIMEOUTS, "kind" => k)),
            guard_refused: metrics::counter!(GUARD_REFUSED),
            guard_unparsed: metrics::counter!(GUARD_UNPARSED),
            query_seconds: std::array::from_fn(
                |i| metrics::histogram!(QUERY_SECONDS, "kind" => KINDS.get(i).copied().unwrap_or("extended")),
            ),
            sessions_ended: metrics::counter!(SESSIONS_ENDED),
        }
    }

    /// A refused login, by SQLSTATE (bounded: the proxy's own login errors).
    pub fn login_failed(code: &str) {
        metrics::counter!(LOGIN_FAILURES, "sqlstate" => code.to_owned()).increment(1);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The kind of a simple-query statement from its first keyword (comments skipped).
pub fn kind_index(sql: &[u8]) -> usize {
    let mut s = sql;
    loop {
        while let [c, rest @ ..] = s {
            if !c.is_ascii_whitespace() {
                break;
            }
            s = rest;
        }
        if let Some(rest) = s.strip_prefix(b"--") {
            s = rest
                .iter()
                .position(|&c| c == b'\n')
                .map_or(&[][..], |p| &rest[p..]);
        } else if let Some(rest) = s.strip_prefix(b"/*") {
            s = rest
                .windows(2)
                .position(|w| w == b"*/")
                .map_or(&[][..], |p| &rest[p + 2..]);
        } else {
            break;
        }
    }
    // The keyword, lower-cased and packed into an integer: a few comparisons in all.
    let mut len = 0;
    while len <= KEYWORD_MAX && len < s.len() && s[len].is_ascii_alphabetic() {
        len += 1;
    }
    if len == KEYWORD_MAX {
        // The one nine-letter keyword.
        return if s[..len].eq_ignore_ascii_case(b"savepoint") {
            5
        } else {
            6
        };
    }
    if len == 0 || len > 8 {
        return 6;
    }
    let raw = match s.first_chunk::<8>() {
        Some(eight) => u64::from_le_bytes(*eight),
        None => {
            let mut word = [0u8; 8];
            word[..s.len()].copy_from_slice(s);
            u64::from_le_bytes(word)
        }
    };
    // The word's bytes only; they are letters, so setting bit 5 of each lower-cases it.
    let mask = u64::MAX >> (8 * (8 - len));
    let key = (raw | 0x2020_2020_2020_2020) & mask;
    match key {
        SELECT | WITH | TABLE | VALUES | SHOW => 0,
        INSERT | COPY => 1,
        UPDATE => 2,
        DELETE | TRUNCATE => 3,
        CREATE | ALTER | DROP | GRANT | REVOKE | COMMENT => 4,
        BEGIN | COMMIT | ROLLBACK | START | END | RELEASE => 5,
        _ => 6,
    }
}

/// The longest keyword [`kind_index`] knows (`savepoint`).
const KEYWORD_MAX: usize = 9;

/// A keyword of up to eight letters as [`kind_index`] packs it.
const fn keyword(w: &[u8]) -> u64 {
    assert!(w.len() <= 8);
    let mut k = 0u64;
    let mut i = 0;
    while i < w.len() {
        k |= (w[i] as u64) << (8 * i);
        i += 1;
    }
    k
}

const SELECT: u64 = keyword(b"select");
const WITH: u64 = keyword(b"with");
const TABLE: u64 = keyword(b"table");
const VALUES: u64 = keyword(b"values");
const SHOW: u64 = keyword(b"show");
const INSERT: u64 = keyword(b"insert");
const COPY: u64 = keyword(b"copy");
const UPDATE: u64 = keyword(b"update");
const DELETE: u64 = keyword(b"delete");
const TRUNCATE: u64 = keyword(b"truncate");
const CREATE: u64 = keyword(b"create");
const ALTER: u64 = keyword(b"alter");
const DROP: u64 = keyword(b"drop");
const GRANT: u64 = keyword(b"grant");
const REVOKE: u64 = keyword(b"revoke");
const COMMENT: u64 = keyword(b"comment");
const BEGIN: u64 = keyword(b"begin");
const COMMIT: u64 = keyword(b"commit");
const ROLLBACK: u64 = keyword(b"rollback");
const START: u64 = keyword(b"start");
const END: u64 = keyword(b"end");
const RELEASE: u64 = keyword(b"release");

#[cfg(test)]
mod tests {
    #[test]
    fn kinds() {
        let k = |s: &str| super::KINDS[super::kind_index(s.as_bytes())];
        assert_eq!(k("SELECT 1"), "select");
        assert_eq!(k("  /* tenant: acme */ -- x\n update t set a=1"), "update");
        assert_eq!(k("with x as (select 1) select * from x"), "select");
        assert_eq!(k("CREATE TABLE t()"), "ddl");
        assert_eq!(k("BEGIN"), "transaction");
        assert_eq!(k("VACUUM"), "other");
        assert_eq!(k(""), "other");
        assert_eq!(k("SavePoint a"), "transaction");
        assert_eq!(k("savepoints"), "other", "longer than any keyword");
        assert_eq!(k("selects"), "other");
        assert_eq!(k("sel"), "other");
        assert_eq!(k("insert\ninto t"), "insert");
        assert_eq!(k("delete(1)"), "delete");
    }

    /// The packed comparison agrees with comparing the words themselves.
    #[test]
    fn kinds_agree_with_word_comparison() {
        let words: [(&str, &str); 23] = [
            ("select", "select"),
            ("with", "select"),
            ("table", "select"),
            ("values", "select"),
            ("show", "select"),
            ("insert", "insert"),
            ("copy", "insert"),
            ("update", "update"),
            ("delete", "delete"),
            ("truncate", "delete"),
            ("create", "ddl"),
            ("alter", "ddl"),
            ("drop", "ddl"),
            ("grant", "ddl"),
            ("revoke", "ddl"),
            ("comment", "ddl"),
            ("begin", "transaction"),
            ("commit", "transaction"),
            ("rollback", "transaction"),
            ("start", "transaction"),
            ("end", "transaction"),
            ("savepoint", "transaction"),
            ("release", "transaction"),
        ];
        let k = |s: &str| super::KINDS[super::kind_index(s.as_bytes())];
        for (w, kind) in words {
            assert_eq!(k(w), kind, "{w}");
            assert_eq!(k(&w.to_ascii_uppercase()), kind, "{w}");
            assert_eq!(k(&format!("{w} x")), kind, "{w}");
            // One letter more or less is another word.
            assert_eq!(k(&format!("{w}x")), "other", "{w}x");
            assert_eq!(k(&w[..w.len() - 1]), "other", "{w} shortened");
        }
    }
}
