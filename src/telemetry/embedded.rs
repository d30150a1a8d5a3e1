//! The embedded telemetry store, used when no MongoDB is configured so that a single proxy
//! records and answers usage out of the box. Events are appended to a local JSON-lines file
//! (rotated once, so at most `max_bytes` on disk); minute and day rollups and per-fingerprint
//! statistics are kept in memory and rebuilt from the files on start. Minute rollups older
//! than `minute_hours` are pruned from memory; day rollups are kept.
//!
//! Blocking file IO: callers run [`Embedded::append`] on a blocking thread.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use tracing::warn;

use super::event::EventDoc;
use super::rollup::{day_of, minute_of, Rollup, SlowQuery, Usage, DAY_MS, MINUTE_MS};

/// Per-fingerprint totals of one tenant and day.
#[derive(Debug, Clone, Default)]
struct FpStats {
    fingerprint: String,
    count: u64,
    sum_us: u64,
    max_us: u64,
}

/// Period start → tenant → (plan, totals).
type Periods = BTreeMap<i64, HashMap<String, (String, Rollup)>>;

#[derive(Default)]
struct Tables {
    minutes: Periods,
    days: Periods,
    /// Day → tenant → fingerprint hash → totals.
    fps: BTreeMap<i64, HashMap<String, HashMap<String, FpStats>>>,
    audit: Vec<serde_json::Value>,
}

/// The value under `key`, inserted by `make` first if missing, without allocating a key
/// for lookups that hit.
fn slot<'a, V>(map: &'a mut HashMap<String, V>, key: &str, make: impl FnOnce() -> V) -> &'a mut V {
    if !map.contains_key(key) {
        map.insert(key.to_owned(), make());
    }
    map.get_mut(key).expect("inserted")
}

impl Tables {
    fn add(&mut self, ev: &EventDoc) {
        for (map, start) in [
            (&mut self.minutes, minute_of(ev.ts_ms)),
            (&mut self.days, day_of(ev.ts_ms)),
        ] {
            let e = slot(map.entry(start).or_default(), &ev.tenant, || {
                (ev.plan.clone(), Rollup::default())
            });
            if e.0 != ev.plan {
                e.0.clone_from(&ev.plan);
            }
            e.1.add(ev);
        }
        let tenants = self.fps.entry(day_of(ev.ts_ms)).or_default();
        let f = slot(
            slot(tenants, &ev.tenant, HashMap::new),
            &ev.fp_hash,
            FpStats::default,
        );
        if f.fingerprint.is_empty() {
            f.fingerprint.clone_from(&ev.fingerprint);
        }
        f.count += 1;
        f.sum_us += ev.latency_us;
        f.max_us = f.max_us.max(ev.latency_us);
    }
}

/// Handle to the embedded store (cheap to clone).
#[derive(Clone)]
pub struct Embedded {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    dir: PathBuf,
    out: BufWriter<File>,
    written: u64,
    max_bytes: u64,
    minute_keep_ms: i64,
    tables: Tables,
}

const CURRENT: &str = "events.jsonl";
const ROTATED: &str = "events.1.jsonl";

impl Embedded {
    /// Open the store in `dir`, rebuilding rollups from the files there.
    pub fn open(dir: &Path, max_bytes: u64, minute_hours: u64) -> io::Result<Embedded> {
        fs::create_dir_all(dir)?;
        let mut tables = Tables::default();
        for name in [ROTATED, CURRENT] {
            let Ok(f) = File::open(dir.join(name)) else {
                continue;
            };
            for line in BufReader::new(f).split(b'\n') {
                match serde_json::from_slice::<EventDoc>(&line?) {
                    Ok(ev) => tables.add(&ev),
                    Err(e) => {
                        warn!(error = %e, file = name, "skipping an unreadable telemetry line")
                    }
                }
            }
        }
        let path = dir.join(CURRENT);
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let written = file.metadata()?.len();
        let mut inner = Inner {
            dir: dir.to_owned(),
            out: BufWriter::new(file),
            written,
            max_bytes,
            minute_keep_ms: (minute_hours as i64).max(1) * 3_600_000,
            tables,
        };
        inner.prune();
        Ok(Embedded {
            inner: Arc::new(Mutex::new(inner)),
        })
    }

    /// Store events (blocking file IO).
    pub fn append(&self, events: &[EventDoc]) -> io::Result<()> {
        let mut inner = self.inner.lock();
        // One buffer for the batch's lines, written at once; the tables count the events
        // once the file has them.
        let mut lines = Vec::with_capacity(events.len() * 512);
        for ev in events {
            serde_json::to_writer(&mut lines, ev).map_err(io::Error::other)?;
            lines.push(b'\n');
        }
        inner.out.write_all(&lines)?;
        inner.written += lines.len() as u64;
        for ev in events {
            inner.tables.add(ev);
        }
        inner.out.flush()?;
        if inner.written > inner.max_bytes / 2 {
            inner.rotate()?;
        }
        inner.prune();
        Ok(())
    }

    /// Record an admin action.
    pub fn audit(&self, entry: serde_json::Value) {
        let mut inner = self.inner.lock();
        inner.tables.audit.push(entry);
        let n = inner.tables.audit.len();
        if n > 10_000 {
            inner.tables.audit.drain(..n - 10_000);
        }
    }

    pub fn audit_log(&self) -> Vec<serde_json::Value> {
        self.inner.lock().tables.audit.clone()
    }

    /// Per-tenant totals of statements started at or after `since_ms`, from minute
    /// rollups (day rollups for the part older than the minutes kept).
    pub fn usage(&self, tenant: Option<&str>, since_ms: i64) -> Vec<Usage> {
        let inner = self.inner.lock();
        let t = &inner.tables;
        let minutes_from = t.minutes.keys().next().copied().unwrap_or(i64::MAX);
        let mut out: BTreeMap<String, Usage> = BTreeMap::new();
        let mut add = |tenants: &HashMap<String, (String, Rollup)>| {
            for (key, (plan, r)) in tenants {
                if tenant.is_some_and(|want| want != key) {
                    continue;
                }
                let u = out.entry(key.clone()).or_insert_with(|| Usage {
                    tenant: key.clone(),
                    plan: plan.clone(),
                    totals: Rollup::default(),
                });
                u.plan.clone_from(plan);
                u.totals.merge(r);
            }
        };
        if since_ms < minutes_from {
            // Whole days before the minutes kept.
            for (day, tenants) in t.days.range(day_of(since_ms)..) {
                if day + DAY_MS <= minutes_from {
                    add(tenants);
                }
            }
        }
        for tenants in t.minutes.range(minute_of(since_ms)..).map(|(_, v)| v) {
            add(tenants);
        }
        out.into_values().collect()
    }

    /// Minute rollups of a tenant from `since_ms`.
    pub fn minutes(&self, tenant: &str, since_ms: i64) -> Vec<(i64, Rollup)> {
        let inner = self.inner.lock();
        periods(&inner.tables.minutes, minute_of(since_ms), tenant)
    }

    /// Day rollups of a tenant from `since_ms`.
    pub fn days(&self, tenant: &str, since_ms: i64) -> Vec<(i64, Rollup)> {
        let inner = self.inner.lock();
        periods(&inner.tables.days, day_of(since_ms), tenant)
    }

    /// Slowest fingerprints by mean latency (day granularity for `since_ms`).
    pub fn slow_queries(
        &self,
        tenant: Option<&str>,
        since_ms: i64,
        limit: usize,
    ) -> Vec<SlowQuery> {
        let inner = self.inner.lock();
        let mut acc: BTreeMap<(String, String), SlowQuery> = BTreeMap::new();
        let all = inner
            .tables
            .fps
            .range(day_of(since_ms)..)
            .flat_map(|(_, ts)| {
                ts.iter()
                    .flat_map(|(t, fps)| fps.iter().map(move |(h, f)| (t, h, f)))
            });
        for (t, h, f) in all {
            if tenant.is_some_and(|want| want != t) {
                continue;
            }
            let q = acc
                .entry((t.clone(), h.clone()))
                .or_insert_with(|| SlowQuery {
                    tenant: t.clone(),
                    fp_hash: h.clone(),
                    fingerprint: f.fingerprint.clone(),
                    count: 0,
                    mean_us: 0.0,
                    max_us: 0,
                });
            q.mean_us = (q.mean_us * q.count as f64 + f.sum_us as f64) / (q.count + f.count) as f64;
            q.count += f.count;
            q.max_us = q.max_us.max(f.max_us);
        }
        let mut v: Vec<SlowQuery> = acc.into_values().collect();
        v.sort_by(|a, b| b.mean_us.total_cmp(&a.mean_us));
        v.truncate(limit);
        v
    }
}

fn periods(map: &Periods, from: i64, tenant: &str) -> Vec<(i64, Rollup)> {
    map.range(from..)
        .filter_map(|(start, ts)| ts.get(tenant).map(|(_, r)| (*start, r.clone())))
        .collect()
}

impl Inner {
    fn rotate(&mut self) -> io::Result<()> {
        self.out.flush()?;
        fs::rename(self.dir.join(CURRENT), self.dir.join(ROTATED))?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(CURRENT))?;
        self.out = BufWriter::new(file);
        self.written = 0;
        Ok(())
    }

    fn prune(&mut self) {
        let Some(newest) = self.tables.minutes.keys().next_back().copied() else {
            return;
        };
        let keep_from = newest - self.minute_keep_ms + MINUTE_MS;
        if self
            .tables
            .minutes
            .keys()
            .next()
            .is_some_and(|&m| m < keep_from)
        {
            self.tables.minutes = self.tables.minutes.split_off(&keep_from);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: &str, tenant: &str, ts_ms: i64, latency_us: u64) -> EventDoc {
        EventDoc {
            id: id.into(),
            tenant: tenant.into(),
            plan: "pro".into(),
            user: "app".into(),
            app: String::new(),
            session: 1,
            proxy: "p".into(),
            pg_instance: "primary".into(),
            fingerprint: format!("select {latency_us}"),
            fp_hash: format!("{latency_us:016x}"),
            sample: String::new(),
            kind: "select".into(),
            ts_ms,
            latency_us,
            wait_us: 0,
            rows: 1,
            bytes_in: 10,
            bytes_out: 20,
            sqlstate: None,
            cost: 0.25,
        }
    }

    #[test]
    fn rollups_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let now = 1_800_000_000_000;
        let store = Embedded::open(dir.path(), 1 << 20, 6).unwrap();
        store
            .append(&[
                ev("1", "a", now, 100),
                ev("2", "a", now + 61_000, 300),
                ev("3", "b", now, 5_000),
            ])
            .unwrap();
        let check = |s: &Embedded| {
            let u = s.usage(None, now - 1);
            assert_eq!(u.len(), 2);
            assert_eq!((u[0].tenant.as_str(), u[0].totals.count), ("a", 2));
            assert_eq!(u[0].totals.latency_max_us, 300);
            assert!((u[0].totals.cost - 0.5).abs() < 1e-9);
            assert_eq!(s.minutes("a", now - 1).len(), 2);
            assert_eq!(
                s.days("a", now - 1).iter().map(|d| d.1.count).sum::<u64>(),
                2
            );
            let slow = s.slow_queries(None, now, 10);
            assert_eq!(slow[0].tenant, "b");
            assert_eq!(slow[0].max_us, 5_000);
            assert_eq!(s.slow_queries(Some("a"), now, 1).len(), 1);
        };
        check(&store);
        drop(store);
        check(&Embedded::open(dir.path(), 1 << 20, 6).unwrap());
    }

    #[test]
    fn rotates_within_bound() {
        let dir = tempfile::tempdir().unwrap();
        let store = Embedded::open(dir.path(), 4_000, 6).unwrap();
        for i in 0..50 {
            store.append(&[ev(&i.to_string(), "a", 1_000, 10)]).unwrap();
        }
        let total: u64 = [CURRENT, ROTATED]
            .iter()
            .filter_map(|n| fs::metadata(dir.path().join(n)).ok())
            .map(|m| m.len())
            .sum();
        assert!(total <= 4_000 + 400, "{total}");
        assert_eq!(store.usage(None, 0)[0].totals.count, 50);
    }
}
