//! The Redis side of limits: one `ConnectionManager` (it reconnects by itself), every call
//! bounded by `redis.timeout_ms`, health tracked (logged once per change, counted), and the
//! Lua scripts that make shared decisions atomic across replicas.
//!
//! Keys (all under `redis.key_prefix`): `bucket:{tenant}` (token bucket), `quota:{tenant}:{day}`,
//! `conns:{tenant}` (zset of live sessions by expiry), `sessions` (all live sessions),
//! `session:{id}` (hash), `cancel:{pid}:{secret}` (replica address), `flags:{tenant}` (hash),
//! `cachegen:{tenant}`, `cache:{tenant}:{gen}:{hash}`; channel `events`.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisResult, Script};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Token bucket: refill by elapsed time, take up to ARGV[3] whole tokens.
/// Returns {granted, wait_ms}.
const BUCKET_LUA: &str = r#"
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(b[1]) or burst
local ts = tonumber(b[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate / 1000)
local n = math.min(want, math.floor(tokens))
tokens = tokens - n
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
local wait = 0
if n == 0 then wait = math.ceil((1 - tokens) * 1000 / rate) end
return {n, wait}
"#;

/// Admit a session under a tenant's connection cap: drop expired members, check the count,
/// add this one with its expiry. ARGV: member, ttl_ms, cap (0 = none). Returns 1 or 0.
const ADMIT_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local cap = tonumber(ARGV[3])
if cap > 0 and redis.call('ZCARD', KEYS[1]) >= cap then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 2)
return 1
"#;

/// How long a call off the statement path may wait ([`Shared::call_patient`]).
pub const PATIENT: Duration = Duration::from_secs(2);

/// Redis could not be used for this call.
#[derive(Debug, thiserror::Error)]
#[error("redis unavailable")]
pub struct Down;

pub struct Shared {
    client: redis::Client,
    conn: ArcSwapOption<ConnectionManager>,
    prefix: String,
    timeout: Duration,
    up: AtomicBool,
    pub bucket: Script,
    pub admit: Script,
}

impl Shared {
    /// A client for `url` (no IO yet; [`Shared::connect`] connects in the background).
    pub fn new(url: &str, prefix: &str, timeout: Duration) -> RedisResult<Arc<Shared>> {
        Ok(Arc::new(Shared {
            client: redis::Client::open(url)?,
            conn: ArcSwapOption::empty(),
            prefix: prefix.to_owned(),
            timeout,
            up: AtomicBool::new(false),
            bucket: Script::new(BUCKET_LUA),
            admit: Script::new(ADMIT_LUA),
        }))
    }

    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// Connect, retrying until Redis answers (the manager then reconnects by itself).
    pub fn connect(self: &Arc<Self>, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let cfg = ConnectionManagerConfig::new()
                .set_connection_timeout(me.timeout.max(Duration::from_millis(200)))
                // Calls are bounded by `call_within`'s timeout; this only backs it up.
                .set_response_timeout(me.timeout.max(PATIENT))
                .set_number_of_retries(1)
                .set_max_delay(1000);
            let mut delay = Duration::from_millis(100);
            loop {
                match ConnectionManager::new_with_config(me.client.clone(), cfg.clone()).await {
                    Ok(c) => {
                        me.conn.store(Some(Arc::new(c)));
                        me.mark(true);
                        return;
                    }
                    Err(e) => {
                        if me.up.load(Ordering::Relaxed) || delay == Duration::from_millis(100) {
                            warn!(error = %e, "redis unreachable; limits are enforced locally until it is back");
                        }
                        me.mark(false);
                    }
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        })
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    fn mark(&self, up: bool) {
        let was = self.up.swap(up, Ordering::Relaxed);
        ::metrics::gauge!(crate::telemetry::metrics::REDIS_UP).set(if up { 1.0 } else { 0.0 });
        if was != up {
            if up {
                info!("redis reachable; limits, flags and sessions are shared again");
            } else {
                warn!("redis unreachable; falling back to local limits");
            }
        }
    }

    /// Run one Redis call with the timeout, tracking health.
    pub async fn call<T, F, Fut>(&self, f: F) -> Result<T, Down>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        self.call_within(self.timeout, f).await
    }

    /// [`Shared::call`] for rare calls off the statement path that should rather wait
    /// than fail (an operator's flag change, forwarding a cancel): a try may take
    /// [`PATIENT`], and while Redis cannot be reached (not connected yet, restarting) it
    /// is tried again until [`PATIENT`] has passed. `f` must be safe to run twice.
    pub async fn call_patient<T, F, Fut>(&self, f: F) -> Result<T, Down>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let started = std::time::Instant::now();
        loop {
            match self.call_within(PATIENT, &f).await {
                // Unreachable (not an error reply): worth another try.
                Err(Down) if !self.is_up() && started.elapsed() < PATIENT => {
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
                r => return r,
            }
        }
    }

    /// [`Shared::call`] with a timeout of its own (at least `redis.timeout_ms`): for
    /// calls off the statement path, which need not fail for a slow moment.
    pub async fn call_within<T, F, Fut>(&self, timeout: Duration, f: F) -> Result<T, Down>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let Some(conn) = self.conn.load_full() else {
            return Err(Down);
        };
        match tokio::time::timeout(timeout.max(self.timeout), f((*conn).clone())).await {
            Ok(Ok(v)) => {
                if !self.up.load(Ordering::Relaxed) {
                    self.mark(true);
                }
                Ok(v)
            }
            Ok(Err(e)) => {
                if self.up.load(Ordering::Relaxed) {
                    warn!(error = %e, "redis call failed");
                }
                ::metrics::counter!(crate::telemetry::metrics::REDIS_ERRORS).increment(1);
                // An error reply (a script error, READONLY) is this call's failure: Redis
                // is still there for the next one.
                if e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.is_timeout()
                {
                    self.mark(false);
                }
                Err(Down)
            }
            Err(_) => {
                ::metrics::counter!(crate::telemetry::metrics::REDIS_ERRORS).increment(1);
                self.mark(false);
                Err(Down)
            }
        }
    }

    /// A key under the prefix.
    pub fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix)
    }

    /// The pub/sub channel replicas tell each other about flag and cache changes on.
    pub fn channel(&self) -> String {
        self.key("events")
    }

    /// GET the key `rest` under the prefix.
    pub async fn get<T: redis::FromRedisValue>(&self, rest: &str) -> Result<Option<T>, Down> {
        let key = self.key(rest);
        self.call(|mut c| async move {
            redis::cmd("GET")
                .arg(key)
                .query_async::<Option<T>>(&mut c)
                .await
        })
        .await
    }

    /// Publish `msg` on the events channel.
    pub async fn publish(&self, msg: String) -> Result<(), Down> {
        let ch = self.channel();
        self.call(|mut c| async move {
            redis::cmd("PUBLISH")
                .arg(ch)
                .arg(msg)
                .query_async::<i64>(&mut c)
                .await
                .map(|_| ())
        })
        .await
    }
}
