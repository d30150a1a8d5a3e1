//! The per-tenant result cache: read-only simple-query statements that ask for it with a
//! `/* cache: 30s */` comment, for tenants whose `query_cache` flag is on. An entry is the
//! exact bytes PostgreSQL sent for the statement (RowDescription through CommandComplete),
//! keyed by tenant, the tenant's cache generation and the statement text (literals
//! included, so parameters are part of the key). A write by the tenant bumps its generation,
//! which orphans all its entries at once. Entries are never shared between tenants: the
//! tenant is part of every key.
//!
//! In Redis when configured (shared by replicas, expiring by TTL), else in a bounded map
//! in this process.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;

use super::{Limits, TenantState};

/// In-process entries, bounded by total bytes (oldest evicted first).
pub struct LocalCache {
    max_bytes: usize,
    inner: Mutex<Local>,
}

#[derive(Default)]
struct Local {
    map: HashMap<String, (Bytes, Instant)>,
    order: VecDeque<String>,
    bytes: usize,
}

impl LocalCache {
    pub fn new(max_bytes: usize) -> Self {
        LocalCache {
            max_bytes,
            inner: Mutex::new(Local::default()),
        }
    }

    fn get(&self, key: &str) -> Option<Bytes> {
        let mut l = self.inner.lock();
        match l.map.get(key) {
            Some((b, exp)) if *exp > Instant::now() => Some(b.clone()),
            Some(_) => {
                if let Some((b, _)) = l.map.remove(key) {
                    l.bytes -= b.len();
                }
                None
            }
            None => None,
        }
    }

    fn put(&self, key: String, value: Bytes, ttl: Duration) {
        if value.len() > self.max_bytes {
            return;
        }
        let mut l = self.inner.lock();
        if let Some((old, _)) = l.map.remove(&key) {
            l.bytes -= old.len();
        }
        while l.bytes + value.len() > self.max_bytes {
            let Some(k) = l.order.pop_front() else { break };
            if let Some((b, _)) = l.map.remove(&k) {
                l.bytes -= b.len();
            }
        }
        l.bytes += value.len();
        l.order.push_back(key.clone());
        l.map.insert(key, (value, Instant::now() + ttl));
        // Keys replaced or expired stay in `order`: prune it before it outgrows the map.
        if l.order.len() > 2 * l.map.len() + 64 {
            let Local { map, order, .. } = &mut *l;
            let mut seen = std::collections::HashSet::new();
            let kept: Vec<String> = order
                .iter()
                .rev()
                .filter(|k| map.contains_key(*k) && seen.insert((*k).clone()))
                .cloned()
                .collect();
            *order = kept.into_iter().rev().collect();
        }
    }

    /// Entries held (tests, reports).
    pub fn len(&self) -> usize {
        self.inner.lock().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The TTL a statement asks for with a leading `/* cache: 30s */` (s, ms or m), if any.
pub fn requested_ttl(sql: &[u8]) -> Option<Duration> {
    // Most statements start without a comment: answered before validating the text.
    let sql = sql.trim_ascii_start();
    if !sql.starts_with(b"/*") {
        return None;
    }
    // Any of the leading comments (a tenant header may come first).
    let mut s = std::str::from_utf8(sql).ok()?;
    let v = loop {
        let body = s.strip_prefix("/*")?;
        let end = body.find("*/")?;
        if let Some((k, v)) = body[..end].split_once(':') {
            if k.trim().eq_ignore_ascii_case("cache") {
                break v.trim().to_ascii_lowercase();
            }
        }
        s = body[end + 2..].trim_ascii_start();
    };
    let (num, unit) = v.split_at(v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len()));
    let n: u64 = num.parse().ok()?;
    let d = match unit.trim() {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" | "min" => Duration::from_secs(n * 60),
        _ => return None,
    };
    (d > Duration::ZERO && d <= Duration::from_secs(86_400)).then_some(d)
}

impl Limits {
    /// `salt` covers what else shapes the answer: the tenant's incarnation (a tenant dropped
    /// and created again under the same key gets a new backend secret) and the session
    /// settings that change result text (TimeZone, DateStyle, encoding).
    fn cache_key(&self, t: &TenantState, text: &[u8], salt: u64) -> String {
        format!(
            "cache:{}:{}:{salt:016x}:{:016x}{:x}",
            t.key,
            t.cache_gen.load(Ordering::Acquire),
            crate::telemetry::fingerprint::fnv1a(text),
            text.len()
        )
    }

    /// A cached answer for this statement text of the tenant.
    pub async fn cache_get(&self, t: &TenantState, text: &[u8], salt: u64) -> Option<Bytes> {
        let key = self.cache_key(t, text, salt);
        let hit = match self.shared() {
            Some(s) => s.get::<Vec<u8>>(&key).await.ok().flatten().map(Bytes::from),
            None => self.cache().get(&key),
        };
        let outcome = if hit.is_some() { "hit" } else { "miss" };
        ::metrics::counter!(crate::telemetry::metrics::CACHE_LOOKUPS, "outcome" => outcome)
            .increment(1);
        hit
    }

    /// Store an answer (written in the background when shared).
    #[allow(clippy::too_many_arguments)]
    pub fn cache_put(
        &self,
        t: &TenantState,
        text: &[u8],
        salt: u64,
        value: Bytes,
        ttl: Duration,
        gen: u64,
    ) {
        if t.cache_gen.load(Ordering::Acquire) != gen {
            return; // the tenant wrote meanwhile: this answer may be stale already
        }
        let key = self.cache_key(t, text, salt);
        match self.shared().cloned() {
            Some(s) => {
                tokio::spawn(async move {
                    let k = s.key(&key);
                    let _ = s
                        .call(|mut c| async move {
                            redis::cmd("SET")
                                .arg(k)
                                .arg(value.as_ref())
                                .arg("PX")
                                .arg(ttl.as_millis() as u64)
                                .query_async::<()>(&mut c)
                                .await
                        })
                        .await;
                });
            }
            None => self.cache().put(key, value, ttl),
        }
    }

    /// The tenant wrote: orphan its cached answers on every replica.
    pub fn cache_invalidate(&self, t: &TenantState) {
        t.cache_gen.fetch_add(1, Ordering::AcqRel);
        let Some(s) = self.shared().cloned() else {
            return;
        };
        let t = self.tenant(&t.key);
        tokio::spawn(async move {
            let key = s.key(&format!("cachegen:{}", t.key));
            let local = t.cache_gen.load(Ordering::Acquire);
            let res = s
                .call(|mut c| async move {
                    // Never below the local generation (Redis may have restarted empty).
                    let (g,): (u64,) = redis::pipe()
                        .cmd("INCR")
                        .arg(&key)
                        .query_async(&mut c)
                        .await?;
                    if g < local {
                        redis::cmd("SET")
                            .arg(&key)
                            .arg(local)
                            .query_async::<()>(&mut c)
                            .await?;
                        return Ok(local);
                    }
                    Ok(g)
                })
                .await;
            match res {
                Ok(g) => {
                    t.cache_gen.fetch_max(g, Ordering::AcqRel);
                    let _ = s.publish(format!("cache:{}:{g}", t.key)).await;
                }
                // Other replicas did not hear of this write: no cached answers for this
                // tenant here until the generation is read from Redis again.
                Err(_) => t.gen_loaded.store(false, Ordering::Release),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_comment() {
        assert_eq!(
            requested_ttl(b"/* cache: 30s */ SELECT 1"),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            requested_ttl(b"  /*cache:500ms*/ SELECT 1"),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            requested_ttl(b"/* cache: 2m */ SELECT 1"),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            requested_ttl(b"/* cache: 10 */ SELECT 1"),
            Some(Duration::from_secs(10))
        );
        assert_eq!(requested_ttl(b"SELECT 1 /* cache: 30s */"), None);
        assert_eq!(requested_ttl(b"/* tenant: acme */ SELECT 1"), None);
        assert_eq!(
            requested_ttl(b"/* tenant: acme */ /* cache: 5s */ SELECT 1"),
            Some(Duration::from_secs(5))
        );
        assert_eq!(requested_ttl(b"/* cache: forever */ SELECT 1"), None);
        assert_eq!(requested_ttl(b"/* cache: 0s */ SELECT 1"), None);
    }

    #[test]
    fn local_cache_is_bounded_and_expires() {
        let c = LocalCache::new(10);
        c.put(
            "a".into(),
            Bytes::from_static(b"12345"),
            Duration::from_secs(60),
        );
        c.put(
            "b".into(),
            Bytes::from_static(b"12345"),
            Duration::from_secs(60),
        );
        c.put(
            "c".into(),
            Bytes::from_static(b"123"),
            Duration::from_secs(60),
        );
        assert!(c.get("a").is_none(), "oldest evicted");
        assert!(c.get("b").is_some() && c.get("c").is_some());
        c.put("d".into(), Bytes::from_static(b"1"), Duration::ZERO);
        assert!(c.get("d").is_none(), "expired");
    }
}
