//! Statement events: what the relay hands over per statement ([`StmtEvent`], cheap to build,
//! no text processing) and the stored record the writer makes of it ([`EventDoc`]), with the
//! cost model and the latency buckets that rollups keep for percentiles.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Per-plan prices. Cost of a statement =
/// `latency_ms × per_ms + rows × per_row + (bytes_in + bytes_out) / 1024 × per_kib`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct CostRates {
    pub per_ms: f64,
    pub per_row: f64,
    pub per_kib: f64,
}

impl CostRates {
    pub fn cost(&self, latency_us: u64, rows: u64, bytes: u64) -> f64 {
        latency_us as f64 / 1000.0 * self.per_ms
            + rows as f64 * self.per_row
            + bytes as f64 / 1024.0 * self.per_kib
    }
}

/// Who ran a statement: shared by every event of a session (per tenant, for service users).
#[derive(Debug, Clone, PartialEq)]
pub struct EventContext {
    pub tenant: String,
    pub plan: String,
    pub rates: CostRates,
    pub user: String,
    pub application: String,
    pub session: u64,
    /// The PostgreSQL instance holding the tenant (empty when the proxy answered itself).
    pub pg_instance: String,
}

/// Where a statement's text is.
#[derive(Debug, Clone)]
pub enum StmtText {
    /// A simple Query message body; the event is statement `ordinal` of it.
    Query { body: Bytes, ordinal: u16 },
    /// A Parse message body (extended protocol).
    Parse(Bytes),
    /// Text not known (an Execute of a statement prepared before the proxy saw it).
    Unknown,
}

/// One statement as the relay saw it.
#[derive(Debug, Clone)]
pub struct StmtEvent {
    pub ctx: Arc<EventContext>,
    pub text: StmtText,
    /// Wall-clock time the statement's first message arrived.
    pub start: SystemTime,
    pub latency_us: u64,
    pub wait_us: u64,
    pub rows: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub sqlstate: Option<[u8; 5]>,
}

/// Statement kinds stored on events.
pub const KINDS: [&str; 6] = ["select", "insert", "update", "delete", "ddl", "other"];

/// The event kind of a statement text.
pub fn kind(sql: &str) -> &'static str {
    // The metrics classifier also knows `transaction`; events fold it into `other`.
    let k = super::metrics::kind_index(sql.as_bytes());
    KINDS.get(k).copied().filter(|_| k < 5).unwrap_or("other")
}

/// Upper bounds (µs, exclusive) of the latency buckets; the last bucket is everything above.
pub const BUCKETS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];
/// Number of buckets (the bounds plus the overflow bucket).
pub const NBUCKETS: usize = BUCKETS_US.len() + 1;

pub fn bucket(latency_us: u64) -> usize {
    BUCKETS_US.partition_point(|&b| b <= latency_us)
}

/// The `q`-quantile (0..1) of a bucketed histogram, interpolated inside its bucket; `max`
/// caps the overflow bucket.
pub fn percentile(hist: &[u64], q: f64, max_us: u64) -> u64 {
    let total: u64 = hist.iter().sum();
    if total == 0 {
        return 0;
    }
    let rank = (q * total as f64).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, &n) in hist.iter().enumerate() {
        if seen + n >= rank {
            let lo = if i == 0 { 0 } else { BUCKETS_US[i - 1] };
            let hi = BUCKETS_US.get(i).copied().unwrap_or(max_us.max(lo));
            let frac = (rank - seen) as f64 / n as f64;
            return (lo as f64 + frac * (hi - lo) as f64)
                .round()
                .min(max_us as f64) as u64;
        }
        seen += n;
    }
    max_us
}

/// The stored form of an event (MongoDB document, spool line, embedded store record).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventDoc {
    /// Unique per event, stable through spooling: replays never insert it twice.
    #[serde(rename = "_id")]
    pub id: String,
    pub tenant: String,
    pub plan: String,
    pub user: String,
    pub app: String,
    pub session: u64,
    pub proxy: String,
    pub pg_instance: String,
    /// Normalised statement text and its hash.
    pub fingerprint: String,
    pub fp_hash: String,
    /// The statement as sent, cut to the configured length.
    pub sample: String,
    pub kind: String,
    /// Start time, milliseconds since the Unix epoch.
    pub ts_ms: i64,
    pub latency_us: u64,
    pub wait_us: u64,
    pub rows: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub sqlstate: Option<String>,
    pub cost: f64,
}

impl EventDoc {
    pub fn bucket(&self) -> usize {
        bucket(self.latency_us)
    }

    pub fn is_error(&self) -> bool {
        self.sqlstate.is_some()
    }
}

/// Milliseconds since the Unix epoch.
pub fn epoch_ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Rows from a CommandComplete tag (`SELECT 5`, `INSERT 0 3`, `UPDATE 2`, `COPY 10`).
pub fn tag_rows(tag: &[u8]) -> u64 {
    let last = tag.rsplit(|&c| c == b' ').next().unwrap_or(b"");
    if tag.len() == last.len() {
        return 0;
    }
    std::str::from_utf8(last)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_from_tags() {
        for (tag, n) in [
            ("SELECT 5", 5),
            ("INSERT 0 3", 3),
            ("UPDATE 0", 0),
            ("COPY 10", 10),
            ("BEGIN", 0),
            ("CREATE TABLE", 0),
            ("", 0),
        ] {
            assert_eq!(tag_rows(tag.as_bytes()), n, "{tag}");
        }
    }

    #[test]
    fn buckets_and_percentiles() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(99), 0);
        assert_eq!(bucket(100), 1);
        assert_eq!(bucket(20_000_000), NBUCKETS - 1);
        let mut hist = [0u64; NBUCKETS];
        // 90 statements under 100 µs, 10 between 1 and 2.5 ms.
        hist[0] = 90;
        hist[4] = 10;
        assert!(percentile(&hist, 0.5, 2_000) <= 100);
        let p95 = percentile(&hist, 0.95, 2_000);
        assert!((1_000..=2_000).contains(&p95), "{p95}");
        assert_eq!(percentile(&[0; NBUCKETS], 0.95, 0), 0);
    }

    #[test]
    fn cost_model() {
        let r = CostRates {
            per_ms: 0.001,
            per_row: 0.0001,
            per_kib: 0.01,
        };
        let c = r.cost(2_000, 10, 2048);
        assert!((c - (0.002 + 0.001 + 0.02)).abs() < 1e-12, "{c}");
        assert_eq!(kind("BEGIN"), "other");
        assert_eq!(kind("delete from t"), "delete");
    }
}
