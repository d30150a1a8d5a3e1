//! Per-tenant limits and shared state: query rate and daily quota, client connection caps,
//! feature flags, live sessions and cancel routing across replicas, and the result cache.
//!
//! With `redis.url` set, replicas share all of it through Redis ([`shared`]); without it the
//! same features work inside this process. When a configured Redis is unreachable, each call
//! gives up after `redis.timeout_ms`, statements keep flowing under local enforcement
//! (`redis.fail_closed = true` refuses limited tenants' statements instead), and everything
//! recovers by itself when Redis answers again.
//!
//! Rates use a token bucket held in Redis by a Lua script; a replica takes tokens in small
//! batches ([`rate::Lease`]) so most statements are admitted without a round trip. Daily
//! quotas count locally and add to a Redis counter every second, so replicas may overshoot
//! a quota by about one second of traffic.

pub mod cache;
pub mod flags;
pub mod rate;
pub mod sessions;
pub mod shared;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use foldhash::{HashMap, HashMapExt};
use parking_lot::{Mutex, RwLock};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::catalog::Tenant;
use crate::config::RedisConfig;
use crate::protocol::PgError;
use flags::{FlagError, Flags};
use rate::{Bucket, Lease};
use shared::Shared;

/// A tenant's plan limits (0 = unlimited).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TenantLimits {
    pub queries_per_second: u32,
    pub queries_per_day: u64,
    pub max_connections: u32,
}

/// Live state of one tenant's limits on this replica.
pub struct TenantState {
    key: String,
    /// Local bucket (no Redis, or Redis down); created full at first use.
    bucket: Mutex<Option<Bucket>>,
    lease: Mutex<Lease>,
    day: AtomicI64,
    quota_pending: AtomicU64,
    quota_shared: AtomicU64,
    pub(crate) local_conns: AtomicU64,
    flags: ArcSwap<Flags>,
    flags_loaded: AtomicBool,
    /// Flag reloads issued, and the number of the one last stored: reloads run at once
    /// (pub/sub, a change made here, the periodic refresh) and may finish out of order;
    /// an older read must not replace a newer one.
    flags_reads: AtomicU64,
    flags_stored: Mutex<u64>,
    pub(crate) cache_gen: AtomicU64,
    pub(crate) gen_loaded: AtomicBool,
    /// Statements admitted in the current and previous second (for SHOW LIMITS).
    second: Mutex<(i64, u64, u64)>,
}

impl TenantState {
    fn new(key: &str) -> Self {
        TenantState {
            key: key.to_owned(),
            bucket: Mutex::new(None),
            lease: Mutex::new(Lease::default()),
            day: AtomicI64::new(today()),
            quota_pending: AtomicU64::new(0),
            quota_shared: AtomicU64::new(0),
            local_conns: AtomicU64::new(0),
            flags: ArcSwap::from_pointee(Flags::default()),
            flags_loaded: AtomicBool::new(false),
            flags_reads: AtomicU64::new(0),
            flags_stored: Mutex::new(0),
            cache_gen: AtomicU64::new(0),
            gen_loaded: AtomicBool::new(false),
            second: Mutex::new((0, 0, 0)),
        }
    }

    pub fn flags(&self) -> Arc<Flags> {
        self.flags.load_full()
    }

    /// A handle for a reader of the flags on every statement (a session): while they are
    /// unchanged, a read is one atomic load instead of [`Self::flags`]'s shared-count dance.
    pub fn flags_cache(self: &Arc<Self>) -> FlagsCache {
        arc_swap::cache::Cache::new(FlagsOf(self.clone()))
    }

    pub fn key(&self) -> &str {
        &self.key
    }
}

/// See [`TenantState::flags_cache`]; `load()` gives the current flags.
pub type FlagsCache = arc_swap::cache::Cache<FlagsOf, Arc<Flags>>;

/// A tenant's flags, as the cache reads them.
pub struct FlagsOf(Arc<TenantState>);

impl std::ops::Deref for FlagsOf {
    type Target = ArcSwap<Flags>;
    fn deref(&self) -> &ArcSwap<Flags> {
        &self.0.flags
    }
}

/// Use of a tenant's limits right now (SHOW LIMITS).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LimitUse {
    pub queries_last_second: u64,
    pub queries_today: u64,
    pub connections: u64,
}

/// Handle to limits (cheap to clone).
#[derive(Clone)]
pub struct Limits {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: RedisConfig,
    enforce: bool,
    shared: Option<Arc<Shared>>,
    tenants: RwLock<HashMap<String, Arc<TenantState>>>,
    sessions: sessions::Registry,
    cache: cache::LocalCache,
}

impl Limits {
    /// Start limits: connect to Redis in the background (when configured), subscribe to
    /// flag and cache changes, flush quota counters and session heartbeats.
    pub fn start(
        cfg: &RedisConfig,
        enforce: bool,
        replica: &str,
        advertise: &str,
        shutdown: CancellationToken,
    ) -> Result<Limits, redis::RedisError> {
        let shared = if cfg.url.is_empty() {
            None
        } else {
            Some(Shared::new(
                &cfg.url,
                &cfg.key_prefix,
                Duration::from_millis(cfg.timeout_ms),
            )?)
        };
        let limits = Limits {
            inner: Arc::new(Inner {
                cfg: cfg.clone(),
                enforce,
                sessions: sessions::Registry::new(replica, advertise, cfg.heartbeat_ms),
                cache: cache::LocalCache::new(cfg.cache_max_bytes),
                shared,
                tenants: RwLock::new(HashMap::new()),
            }),
        };
        if let Some(s) = &limits.inner.shared {
            s.connect(shutdown.clone());
            tokio::spawn(limits.clone().subscribe(shutdown.clone()));
        }
        tokio::spawn(limits.clone().background(shutdown));
        Ok(limits)
    }

    pub fn shared(&self) -> Option<&Arc<Shared>> {
        self.inner.shared.as_ref()
    }

    /// This tenant's state, created on first use.
    pub fn tenant(&self, key: &str) -> Arc<TenantState> {
        if let Some(t) = self.inner.tenants.read().get(key) {
            return t.clone();
        }
        self.inner
            .tenants
            .write()
            .entry(key.to_owned())
            .or_insert_with(|| Arc::new(TenantState::new(key)))
            .clone()
    }

    /// Load the tenant's flags and cache generation if not loaded yet (at login).
    /// Whether [`Limits::warm`] has nothing left to load for `t`.
    pub fn warmed(&self, t: &TenantState) -> bool {
        t.flags_loaded.load(Ordering::Acquire) && t.gen_loaded.load(Ordering::Acquire)
    }

    pub async fn warm(&self, t: &TenantState) {
        if !t.flags_loaded.load(Ordering::Acquire) {
            self.reload_flags(t).await;
        }
        if !t.gen_loaded.load(Ordering::Acquire) {
            self.reload_gen(t).await;
        }
    }

    /// Admit one statement of a tenant under its rate and daily quota. Decided without IO
    /// on the first poll unless the shared bucket in Redis must be asked.
    pub async fn admit(&self, t: &TenantState, limits: &TenantLimits) -> Result<(), PgError> {
        match self.admit_now(t, limits) {
            Some(decided) => decided,
            // Boxed: callers' futures stay small for the common case decided above.
            None => Box::pin(self.admit_shared(t, limits.queries_per_second)).await,
        }
    }

    /// [`Limits::admit`] without IO: `None` when a token must come from the shared bucket
    /// in Redis ([`Limits::admit_shared`]), which most statements do not need (leases).
    /// The statement is counted either way: `None` is finished by `admit_shared` alone.
    pub fn admit_now(&self, t: &TenantState, limits: &TenantLimits) -> Option<Result<(), PgError>> {
        // One clock read for both counters.
        let sec = epoch_secs();
        self.count_second(t, sec);
        let day = sec / 86_400;
        if t.day.swap(day, Ordering::AcqRel) != day {
            t.quota_shared.store(0, Ordering::Release);
        }
        if !self.inner.enforce {
            t.quota_pending.fetch_add(1, Ordering::Relaxed);
            return Some(Ok(()));
        }
        if limits.queries_per_day > 0 {
            let used =
                t.quota_shared.load(Ordering::Acquire) + t.quota_pending.load(Ordering::Acquire);
            if used >= limits.queries_per_day {
                count_refusal("queries_per_day");
                return Some(Err(PgError::limit_exceeded(
                    &t.key,
                    "queries_per_day",
                    limits.queries_per_day,
                    ms_until_tomorrow(),
                )));
            }
        }
        if limits.queries_per_second > 0 {
            match self.token_now(t, limits.queries_per_second) {
                Some(Ok(())) => {}
                Some(Err(e)) => return Some(Err(e)),
                None => return None,
            }
        }
        t.quota_pending.fetch_add(1, Ordering::Relaxed);
        Some(Ok(()))
    }

    /// The rest of an admission [`Limits::admit_now`] could not decide.
    pub async fn admit_shared(&self, t: &TenantState, rate: u32) -> Result<(), PgError> {
        self.take_token_shared(t, rate).await?;
        t.quota_pending.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn refused_rate(t: &TenantState, rate: u32, wait: Duration) -> PgError {
        count_refusal("queries_per_second");
        PgError::limit_exceeded(
            &t.key,
            "queries_per_second",
            u64::from(rate),
            wait.as_millis() as u64 + 1,
        )
    }

    /// A token from the local bucket (no Redis) or this replica's lease of the shared one;
    /// `None` when the shared bucket must be asked.
    fn token_now(&self, t: &TenantState, rate: u32) -> Option<Result<(), PgError>> {
        let now = Instant::now();
        if self.inner.shared.is_none() {
            return Some(Self::take_local(t, rate, now));
        }
        t.lease.lock().take_one(now).then_some(Ok(()))
    }

    fn take_local(t: &TenantState, rate: u32, now: Instant) -> Result<(), PgError> {
        let mut slot = t.bucket.lock();
        let b = slot.get_or_insert_with(|| Bucket::new(f64::from(rate), rate::burst_for(rate)));
        if b.rate != f64::from(rate) {
            b.set_rate(f64::from(rate), rate::burst_for(rate));
        }
        match b.take(1, now) {
            (1, _) => Ok(()),
            (_, wait) => Err(Self::refused_rate(t, rate, wait)),
        }
    }

    /// A batch of tokens from the shared bucket in Redis; the local bucket when Redis is
    /// down (unless limits fail closed).
    async fn take_token_shared(&self, t: &TenantState, rate: u32) -> Result<(), PgError> {
        let Some(shared) = &self.inner.shared else {
            return Self::take_local(t, rate, Instant::now());
        };
        // Known down (a call failed or timed out; the background flush of quotas, every
        // second, finds it back): local enforcement without waiting on Redis for each
        // statement. A call that timed out may still have run and taken a batch from the
        // shared bucket; asking again per statement while Redis is slow would drain it
        // with batches nobody uses, and the tenant would be refused below its rate.
        if !shared.is_up() && !self.inner.cfg.fail_closed {
            return Self::take_local(t, rate, Instant::now());
        }
        let key = shared.key(&format!("bucket:{}", t.key));
        let batch = rate::batch_for(rate);
        let script = shared.bucket.clone();
        let res = shared
            .call(|mut c| async move {
                script
                    .key(key)
                    .arg(rate)
                    .arg(rate::burst_for(rate))
                    .arg(batch)
                    .invoke_async::<(u32, u64)>(&mut c)
                    .await
            })
            .await;
        match res {
            Ok((0, wait_ms)) => Err(Self::refused_rate(t, rate, Duration::from_millis(wait_ms))),
            Ok((n, _)) => {
                t.lease.lock().granted(n, Instant::now());
                Ok(())
            }
            Err(_) if self.inner.cfg.fail_closed => Err(PgError::limiter_unavailable(&t.key)),
            Err(_) => Self::take_local(t, rate, Instant::now()),
        }
    }

    fn count_second(&self, t: &TenantState, sec: i64) {
        let mut s = t.second.lock();
        if s.0 != sec {
            *s = (sec, 0, if s.0 == sec - 1 { s.1 } else { 0 });
        }
        s.1 += 1;
    }

    /// Current use of a tenant's limits on this replica (connections: across replicas
    /// when Redis is up).
    pub async fn usage(&self, key: &str) -> LimitUse {
        let t = self.tenant(key);
        let sec = epoch_secs();
        let last = {
            let s = t.second.lock();
            if s.0 == sec {
                s.2
            } else if s.0 == sec - 1 {
                s.1
            } else {
                0
            }
        };
        LimitUse {
            queries_last_second: last,
            queries_today: t.quota_shared.load(Ordering::Acquire)
                + t.quota_pending.load(Ordering::Acquire),
            connections: self.inner.sessions.count(self, &t).await,
        }
    }

    /// Flags of a tenant (cached; [`Limits::warm`] loads them at login).
    pub fn flags(&self, key: &str) -> Arc<Flags> {
        self.tenant(key).flags()
    }

    /// Set a flag for a tenant; every replica sees it within a second.
    pub async fn set_flag(&self, tenant: &str, name: &str, value: &str) -> Result<(), LimitsError> {
        let value = flags::validate(name, value)?;
        self.change_flag(tenant, name, Some(value)).await
    }

    /// Remove a flag.
    pub async fn unset_flag(&self, tenant: &str, name: &str) -> Result<(), LimitsError> {
        self.change_flag(tenant, name, None).await
    }

    async fn change_flag(
        &self,
        tenant: &str,
        name: &str,
        value: Option<String>,
    ) -> Result<(), LimitsError> {
        let t = self.tenant(tenant);
        match &self.inner.shared {
            Some(s) => {
                let key = s.key(&format!("flags:{tenant}"));
                let cmd = match &value {
                    Some(v) => redis::cmd("HSET").arg(&key).arg(name).arg(v).clone(),
                    None => redis::cmd("HDEL").arg(&key).arg(name).clone(),
                };
                // An operator's change: worth waiting for Redis rather than failing.
                s.call_patient(|mut c| {
                    let cmd = cmd.clone();
                    async move { cmd.query_async::<i64>(&mut c).await.map(|_| ()) }
                })
                .await
                .map_err(|_| LimitsError::Unavailable)?;
                let _ = s.publish(format!("flags:{tenant}")).await;
                self.reload_flags(&t).await;
            }
            None => {
                let mut all = t.flags().all.clone();
                match value {
                    Some(v) => all.insert(name.to_owned(), v),
                    None => all.remove(name),
                };
                let new = Flags::from_map(all);
                if new.query_cache && !t.flags().query_cache {
                    self.cache_invalidate(&t);
                }
                t.flags.store(Arc::new(new));
                t.flags_loaded.store(true, Ordering::Release);
            }
        }
        Ok(())
    }

    async fn reload_flags(&self, t: &TenantState) {
        let Some(s) = &self.inner.shared else {
            t.flags_loaded.store(true, Ordering::Release);
            return;
        };
        let key = s.key(&format!("flags:{}", t.key));
        let seq = t.flags_reads.fetch_add(1, Ordering::AcqRel) + 1;
        let res = s
            .call(|mut c| async move {
                redis::cmd("HGETALL")
                    .arg(key)
                    .query_async::<BTreeMap<String, String>>(&mut c)
                    .await
            })
            .await;
        if let Ok(all) = res {
            let new = Flags::from_map(all);
            let mut stored = t.flags_stored.lock();
            if seq < *stored {
                return; // a read issued later is already in
            }
            *stored = seq;
            // A switch from off to on (not the first load of the flags).
            let enabled =
                new.query_cache && !t.flags().query_cache && t.flags_loaded.load(Ordering::Acquire);
            t.flags.store(Arc::new(new));
            t.flags_loaded.store(true, Ordering::Release);
            drop(stored);
            // Answers cached before the cache was switched off may be stale by now.
            if enabled {
                self.cache_invalidate(t);
            }
        }
    }

    async fn reload_gen(&self, t: &TenantState) {
        let Some(s) = &self.inner.shared else {
            t.gen_loaded.store(true, Ordering::Release);
            return;
        };
        let res = s.get::<u64>(&format!("cachegen:{}", t.key)).await;
        if let Ok(g) = res {
            t.cache_gen.fetch_max(g.unwrap_or(0), Ordering::AcqRel);
            t.gen_loaded.store(true, Ordering::Release);
        }
    }

    /// All flags of a tenant.
    pub async fn list_flags(&self, tenant: &str) -> BTreeMap<String, String> {
        let t = self.tenant(tenant);
        self.reload_flags(&t).await;
        t.flags().all.clone()
    }

    /// Follow flag and cache changes from other replicas; on reconnect reload everything.
    async fn subscribe(self, shutdown: CancellationToken) {
        use futures_util::StreamExt;
        let shared = self.inner.shared.clone().expect("redis configured");
        let mut delay = Duration::from_millis(200);
        loop {
            let ps =
                tokio::time::timeout(Duration::from_secs(2), shared.client().get_async_pubsub())
                    .await;
            if let Ok(Ok(mut ps)) = ps {
                if ps.subscribe(shared.channel()).await.is_ok() {
                    delay = Duration::from_millis(200);
                    self.reload_all().await;
                    let mut stream = ps.on_message();
                    loop {
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            m = stream.next() => match m {
                                Some(m) => {
                                    let payload: String = m.get_payload().unwrap_or_default();
                                    self.on_event(&payload).await;
                                }
                                None => break,
                            },
                        }
                    }
                    debug!("redis subscription ended; resubscribing");
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }

    async fn on_event(&self, payload: &str) {
        if let Some(tenant) = payload.strip_prefix("flags:") {
            let t = self.inner.tenants.read().get(tenant).cloned();
            if let Some(t) = t {
                self.reload_flags(&t).await;
            }
        } else if let Some(rest) = payload.strip_prefix("cache:") {
            if let Some((tenant, gen)) = rest.rsplit_once(':') {
                let t = self.inner.tenants.read().get(tenant).cloned();
                if let (Some(t), Ok(g)) = (t, gen.parse()) {
                    t.cache_gen.fetch_max(g, Ordering::AcqRel);
                }
            }
        }
    }

    async fn reload_all(&self) {
        let all: Vec<Arc<TenantState>> = self.inner.tenants.read().values().cloned().collect();
        for t in all {
            self.reload_flags(&t).await;
            self.reload_gen(&t).await;
        }
    }

    /// Every second: add local quota counts to Redis; every heartbeat: refresh sessions;
    /// every 30 s: reload flags (a safety net under pub/sub).
    async fn background(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut last_beat = Instant::now();
        let mut last_reload = Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            self.flush_quotas().await;
            self.inner.sessions.flush_departed(&self).await;
            if last_beat.elapsed() >= Duration::from_millis(self.inner.cfg.heartbeat_ms) {
                last_beat = Instant::now();
                self.inner.sessions.heartbeat(&self).await;
            }
            if last_reload.elapsed() >= Duration::from_secs(30) {
                last_reload = Instant::now();
                self.reload_all().await;
            }
        }
        self.flush_quotas().await;
        self.inner.sessions.flush_departed(&self).await;
        self.inner.sessions.clear(&self).await;
    }

    /// Add local counts to the shared daily counters and read the others' use, in one
    /// round trip for all tenants seen.
    async fn flush_quotas(&self) {
        let all: Vec<Arc<TenantState>> = self.inner.tenants.read().values().cloned().collect();
        let pending: Vec<u64> = all
            .iter()
            .map(|t| t.quota_pending.load(Ordering::Acquire))
            .collect();
        let Some(s) = &self.inner.shared else {
            for (t, n) in all.iter().zip(&pending) {
                t.quota_pending.fetch_sub(*n, Ordering::AcqRel);
                t.quota_shared.fetch_add(*n, Ordering::AcqRel);
            }
            return;
        };
        if all.is_empty() {
            return;
        }
        let mut pipe = redis::pipe();
        for (t, n) in all.iter().zip(&pending) {
            let key = s.key(&format!(
                "quota:{}:{}",
                t.key,
                t.day.load(Ordering::Acquire)
            ));
            // INCRBY 0 reads the count (and creates nothing visible but a 0 key).
            pipe.cmd("INCRBY").arg(&key).arg(*n);
            pipe.cmd("EXPIRE").arg(&key).arg(2 * 86_400).ignore();
        }
        // Off the statement path, once a second for every tenant seen: given time (the
        // statements' short timeout could fail it every time with many tenants, and this
        // call is what finds Redis back for statements, which do not ask it while down).
        let res = s
            .call_within(shared::PATIENT, |mut c| async move {
                pipe.query_async::<Vec<u64>>(&mut c).await
            })
            .await;
        match res {
            Ok(totals) => {
                for ((t, n), total) in all.iter().zip(&pending).zip(totals) {
                    t.quota_pending.fetch_sub(*n, Ordering::AcqRel);
                    t.quota_shared.store(total, Ordering::Release);
                }
            }
            Err(_) => debug!("quota counts kept locally until redis is back"),
        }
    }

    pub fn sessions(&self) -> &sessions::Registry {
        &self.inner.sessions
    }

    pub fn cache(&self) -> &cache::LocalCache {
        &self.inner.cache
    }

    pub(crate) fn fail_closed(&self) -> bool {
        self.inner.cfg.fail_closed
    }

    /// Limits of a tenant as the directory knows them.
    pub fn limits_of(t: &Tenant) -> TenantLimits {
        t.limits
    }
}

/// Why a limits operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LimitsError {
    #[error(transparent)]
    Flag(#[from] FlagError),
    #[error("redis is unavailable")]
    Unavailable,
}

fn count_refusal(limit: &'static str) {
    ::metrics::counter!(crate::telemetry::metrics::LIMIT_REFUSALS, "limit" => limit).increment(1);
}

/// Seconds since the epoch, read once per statement. The kernel's coarse clock (its last
/// tick, a few milliseconds old at most) is enough for per-second and per-day counters,
/// and costs a fraction of a precise read.
fn epoch_secs() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; clock_gettime only writes to it.
    if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) } == 0 {
        return ts.tv_sec;
    }
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Days since the epoch (UTC): quotas reset at midnight UTC.
fn today() -> i64 {
    epoch_secs() / 86_400
}

fn ms_until_tomorrow() -> u64 {
    let s = epoch_secs();
    ((86_400 - s.rem_euclid(86_400)) * 1000) as u64
}

#[cfg(test)]
mod tests {
    #[test]
    fn coarse_epoch_seconds_follow_the_wall_clock() {
        let precise = |_| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64
        };
        let before = precise(());
        let coarse = super::epoch_secs();
        let after = precise(());
        // The coarse clock lags by at most a tick, never leads.
        assert!(
            coarse >= before - 1 && coarse <= after,
            "{before} {coarse} {after}"
        );
    }
}
