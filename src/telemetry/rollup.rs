//! Rollups: per tenant per minute and per day totals of statement events, with latency
//! histogram buckets from which percentiles are computed (MongoDB 6.0 has no `$percentile`).
//! The same shape is kept by the embedded store and stored in MongoDB.

use serde::{Deserialize, Serialize};

use super::event::{percentile, EventDoc, NBUCKETS};

pub const MINUTE_MS: i64 = 60_000;
pub const DAY_MS: i64 = 86_400_000;

/// Totals of a set of events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollup {
    pub count: u64,
    pub errors: u64,
    pub latency_sum_us: u64,
    pub latency_max_us: u64,
    pub rows: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub cost: f64,
    /// Statement counts per latency bucket ([`super::event::BUCKETS_US`]).
    pub hist: Vec<u64>,
}

impl Default for Rollup {
    fn default() -> Self {
        Rollup {
            count: 0,
            errors: 0,
            latency_sum_us: 0,
            latency_max_us: 0,
            rows: 0,
            bytes_in: 0,
            bytes_out: 0,
            cost: 0.0,
            hist: vec![0; NBUCKETS],
        }
    }
}

impl Rollup {
    pub fn add(&mut self, ev: &EventDoc) {
        self.count += 1;
        self.errors += u64::from(ev.is_error());
        self.latency_sum_us += ev.latency_us;
        self.latency_max_us = self.latency_max_us.max(ev.latency_us);
        self.rows += ev.rows;
        self.bytes_in += ev.bytes_in;
        self.bytes_out += ev.bytes_out;
        self.cost += ev.cost;
        self.hist.resize(NBUCKETS, 0);
        self.hist[ev.bucket()] += 1;
    }

    pub fn merge(&mut self, o: &Rollup) {
        self.count += o.count;
        self.errors += o.errors;
        self.latency_sum_us += o.latency_sum_us;
        self.latency_max_us = self.latency_max_us.max(o.latency_max_us);
        self.rows += o.rows;
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
        self.cost += o.cost;
        self.hist.resize(NBUCKETS, 0);
        for (a, b) in self.hist.iter_mut().zip(&o.hist) {
            *a += b;
        }
    }

    pub fn avg_us(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.latency_sum_us as f64 / self.count as f64
        }
    }

    pub fn p95_us(&self) -> u64 {
        percentile(&self.hist, 0.95, self.latency_max_us)
    }

    pub fn p50_us(&self) -> u64 {
        percentile(&self.hist, 0.50, self.latency_max_us)
    }
}

/// A tenant's totals over a period.
#[derive(Debug, Clone, PartialEq)]
pub struct Usage {
    pub tenant: String,
    pub plan: String,
    pub totals: Rollup,
}

/// Statements of one fingerprint, slowest first.
#[derive(Debug, Clone, PartialEq)]
pub struct SlowQuery {
    pub tenant: String,
    pub fp_hash: String,
    pub fingerprint: String,
    pub count: u64,
    pub mean_us: f64,
    pub max_us: u64,
}

pub fn minute_of(ts_ms: i64) -> i64 {
    ts_ms.div_euclid(MINUTE_MS) * MINUTE_MS
}

pub fn day_of(ts_ms: i64) -> i64 {
    ts_ms.div_euclid(DAY_MS) * DAY_MS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_and_merge() {
        let mut ev = crate::telemetry::event::EventDoc {
            id: "a".into(),
            tenant: "t".into(),
            plan: "p".into(),
            user: String::new(),
            app: String::new(),
            session: 0,
            proxy: String::new(),
            pg_instance: String::new(),
            fingerprint: String::new(),
            fp_hash: String::new(),
            sample: String::new(),
            kind: "select".into(),
            ts_ms: 0,
            latency_us: 50,
            wait_us: 0,
            rows: 2,
            bytes_in: 10,
            bytes_out: 100,
            sqlstate: None,
            cost: 0.5,
        };
        let mut a = Rollup::default();
        a.add(&ev);
        ev.latency_us = 3_000;
        ev.sqlstate = Some("42P01".into());
        let mut b = Rollup::default();
        b.add(&ev);
        a.merge(&b);
        assert_eq!(
            (a.count, a.errors, a.rows, a.latency_max_us),
            (2, 1, 4, 3_000)
        );
        assert_eq!(a.avg_us(), 1_525.0);
        assert_eq!(a.hist.iter().sum::<u64>(), 2);
        assert!((a.cost - 1.0).abs() < 1e-12);
        assert_eq!(minute_of(125_000), 120_000);
        assert_eq!(day_of(DAY_MS + 5), DAY_MS);
    }
}
