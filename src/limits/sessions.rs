//! Live client sessions across replicas: admission under a tenant's connection cap,
//! heartbeats that keep them registered (a replica that dies stops refreshing and its
//! sessions expire after three heartbeats), the list behind `SHOW CLIENTS`, and the cancel
//! keys that let any replica forward a CancelRequest to the one holding the session.
//!
//! Without Redis (or while it is down) the same happens for this replica alone.

use std::sync::atomic::Ordering;

use foldhash::{HashMap, HashMapExt};

use parking_lot::Mutex;
use redis::Script;
use serde::{Deserialize, Serialize};

use super::{Limits, TenantState};
use crate::protocol::PgError;

/// Refresh (or re-create, after a Redis restart) every local session. ARGV: ttl_ms, prefix,
/// advertise address, then (tenant, id, json, cancel key or "") per session.
const HEARTBEAT_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
local p = ARGV[2]
for i = 4, #ARGV, 4 do
  local tenant, id, json, ck = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  redis.call('ZADD', p .. 'conns:' .. tenant, now + ttl, id)
  redis.call('PEXPIRE', p .. 'conns:' .. tenant, ttl * 2)
  redis.call('ZADD', p .. 'sessions', now + ttl, id)
  redis.call('SET', p .. 'session:' .. id, json, 'PX', ttl)
  if ck ~= '' then redis.call('SET', p .. ck, ARGV[3], 'PX', ttl) end
end
redis.call('ZREMRANGEBYSCORE', p .. 'sessions', '-inf', now)
return 1
"#;

/// Live members of a zset of expiries. KEYS[1]: the zset. Returns the member list.
const LIVE_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZRANGE', KEYS[1], 0, -1)
"#;

/// A client session as other replicas see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    /// `replica/number`.
    pub id: String,
    pub tenant: String,
    pub user: String,
    pub application: String,
    /// Formatted only when shown or shared (a login need not pay for it).
    pub client_addr: std::net::SocketAddr,
    pub replica: String,
    pub started_ms: i64,
    /// The BackendKeyData the client got (cancel key).
    pub cancel_key: Option<(i32, i32)>,
}

pub struct Registry {
    replica: String,
    advertise: String,
    heartbeat_ms: u64,
    local: Mutex<HashMap<String, SessionInfo>>,
    /// Ended sessions not yet removed from Redis.
    departed: Mutex<Vec<SessionInfo>>,
    heartbeat: Script,
    live: Script,
}

fn cancel_key((pid, secret): (i32, i32)) -> String {
    format!("cancel:{pid}:{secret}")
}

impl Registry {
    pub fn new(replica: &str, advertise: &str, heartbeat_ms: u64) -> Self {
        Registry {
            replica: replica.to_owned(),
            advertise: advertise.to_owned(),
            heartbeat_ms: heartbeat_ms.max(100),
            local: Mutex::new(HashMap::new()),
            departed: Mutex::new(Vec::new()),
            heartbeat: Script::new(HEARTBEAT_LUA),
            live: Script::new(LIVE_LUA),
        }
    }

    pub fn replica(&self) -> &str {
        &self.replica
    }

    fn ttl_ms(&self) -> u64 {
        self.heartbeat_ms * 3
    }

    /// Register a session under its tenant's cap (0 = none). Refused with a FATAL 53300.
    pub async fn enter(
        &self,
        limits: &Limits,
        t: &TenantState,
        cap: u32,
        info: SessionInfo,
    ) -> Result<(), PgError> {
        let full = || Err(PgError::tenant_connections_full(&t.key, cap));
        let local_check = || {
            if cap > 0
                && limits.inner.enforce
                && t.local_conns.load(Ordering::Acquire) >= u64::from(cap)
            {
                return full();
            }
            Ok(())
        };
        match limits.shared() {
            None => local_check()?,
            // No cap to check: the login does not wait for Redis. The next heartbeat
            // registers the session (SHOW CLIENTS, counts); only its cancel key is written
            // now, in the background, so cross-replica cancel works from the start.
            Some(s) if cap == 0 || !limits.inner.enforce => {
                if let Some(k) = info.cancel_key {
                    let (s, key, owner) =
                        (s.clone(), s.key(&cancel_key(k)), self.advertise.clone());
                    let ttl = self.ttl_ms();
                    tokio::spawn(async move {
                        let _ = s
                            .call(|mut c| async move {
                                redis::cmd("SET")
                                    .arg(key)
                                    .arg(owner)
                                    .arg("PX")
                                    .arg(ttl)
                                    .query_async::<()>(&mut c)
                                    .await
                            })
                            .await;
                    });
                }
            }
            Some(s) => {
                let key = s.key(&format!("conns:{}", t.key));
                let cap_arg = if limits.inner.enforce { cap } else { 0 };
                let script = s.admit.clone();
                let (id, ttl) = (info.id.clone(), self.ttl_ms());
                let admitted = s
                    .call(|mut c| async move {
                        script
                            .key(key)
                            .arg(id)
                            .arg(ttl)
                            .arg(cap_arg)
                            .invoke_async::<i64>(&mut c)
                            .await
                    })
                    .await;
                match admitted {
                    Ok(1) => self.refresh(limits, std::slice::from_ref(&info)).await,
                    Ok(_) => return full(),
                    Err(_) if limits.fail_closed() && cap > 0 => {
                        return Err(PgError {
                            severity: crate::protocol::Severity::Fatal,
                            ..PgError::limiter_unavailable(&t.key)
                        })
                    }
                    Err(_) => local_check()?,
                }
            }
        }
        t.local_conns.fetch_add(1, Ordering::AcqRel);
        self.local.lock().insert(info.id.clone(), info);
        Ok(())
    }

    /// The session ended. A capped tenant's slot is freed in Redis at once; other sessions
    /// are removed in one batch by the next tick.
    pub async fn leave(&self, limits: &Limits, t: &TenantState, id: &str, capped: bool) {
        t.local_conns.fetch_sub(1, Ordering::AcqRel);
        let info = self.local.lock().remove(id);
        let (Some(s), Some(info)) = (limits.shared(), info) else {
            return;
        };
        if capped {
            self.forget(s, &[info]).await;
        } else {
            self.departed.lock().push(info);
        }
    }

    /// Remove the sessions that ended since the last call (one pipeline).
    pub async fn flush_departed(&self, limits: &Limits) {
        let gone: Vec<SessionInfo> = std::mem::take(&mut *self.departed.lock());
        if let (Some(s), false) = (limits.shared(), gone.is_empty()) {
            self.forget(s, &gone).await;
        }
    }

    async fn forget(&self, s: &super::shared::Shared, infos: &[SessionInfo]) {
        let mut pipe = redis::pipe();
        for info in infos {
            pipe.cmd("ZREM")
                .arg(s.key(&format!("conns:{}", info.tenant)))
                .arg(&info.id)
                .ignore();
            pipe.cmd("ZREM")
                .arg(s.key("sessions"))
                .arg(&info.id)
                .ignore();
            pipe.cmd("DEL")
                .arg(s.key(&format!("session:{}", info.id)))
                .ignore();
            if let Some(k) = info.cancel_key {
                pipe.cmd("DEL").arg(s.key(&cancel_key(k))).ignore();
            }
        }
        let _ = s
            .call(|mut c| async move { pipe.query_async::<()>(&mut c).await })
            .await;
    }

    async fn refresh(&self, limits: &Limits, infos: &[SessionInfo]) {
        let Some(s) = limits.shared() else { return };
        if infos.is_empty() {
            return;
        }
        let mut inv = self.heartbeat.prepare_invoke();
        inv.arg(self.ttl_ms()).arg(s.key("")).arg(&self.advertise);
        for i in infos {
            inv.arg(&i.tenant)
                .arg(&i.id)
                .arg(serde_json::to_string(i).unwrap_or_default())
                .arg(i.cancel_key.map(cancel_key).unwrap_or_default());
        }
        let _ = s
            .call(|mut c| async move { inv.invoke_async::<i64>(&mut c).await })
            .await;
    }

    /// Refresh every local session in Redis.
    pub async fn heartbeat(&self, limits: &Limits) {
        let infos: Vec<SessionInfo> = self.local.lock().values().cloned().collect();
        self.refresh(limits, &infos).await;
    }

    /// Remove this replica's sessions from Redis (shutdown).
    pub async fn clear(&self, limits: &Limits) {
        let infos: Vec<SessionInfo> = self.local.lock().values().cloned().collect();
        if let Some(s) = limits.shared() {
            self.forget(s, &infos).await;
        }
    }

    /// Client connections of a tenant: across replicas when Redis answers.
    pub async fn count(&self, limits: &Limits, t: &TenantState) -> u64 {
        if let Some(s) = limits.shared() {
            let key = s.key(&format!("conns:{}", t.key));
            let script = self.live.clone();
            if let Ok(ids) = s
                .call(|mut c| async move { script.key(key).invoke_async::<Vec<String>>(&mut c).await })
                .await
            {
                return ids.len() as u64;
            }
        }
        t.local_conns.load(Ordering::Acquire)
    }

    /// Every live session: all replicas' when Redis answers, else this replica's.
    pub async fn list(&self, limits: &Limits) -> Vec<SessionInfo> {
        if let Some(s) = limits.shared() {
            let key = s.key("sessions");
            let script = self.live.clone();
            let prefix = s.key("session:");
            let res = s
                .call(|mut c| async move {
                    let ids: Vec<String> = script.key(key).invoke_async(&mut c).await?;
                    if ids.is_empty() {
                        return Ok(Vec::new());
                    }
                    let keys: Vec<String> = ids.iter().map(|i| format!("{prefix}{i}")).collect();
                    redis::cmd("MGET")
                        .arg(keys)
                        .query_async::<Vec<Option<String>>>(&mut c)
                        .await
                })
                .await;
            if let Ok(docs) = res {
                let mut v: Vec<SessionInfo> = docs
                    .into_iter()
                    .flatten()
                    .filter_map(|j| serde_json::from_str(&j).ok())
                    .collect();
                v.sort_by(|a, b| a.id.cmp(&b.id));
                return v;
            }
        }
        let mut v: Vec<SessionInfo> = self.local.lock().values().cloned().collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// The replica address holding the session with this cancel key, when another does.
    /// A client sends its cancel once: Redis is given time ([`Shared::call_patient`]).
    ///
    /// [`Shared::call_patient`]: super::shared::Shared::call_patient
    pub async fn cancel_owner(&self, limits: &Limits, key: (i32, i32)) -> Option<String> {
        let s = limits.shared()?;
        let key = s.key(&cancel_key(key));
        let owner = s
            .call_patient(|mut c| {
                let get = redis::cmd("GET").arg(&key).clone();
                async move { get.query_async::<Option<String>>(&mut c).await }
            })
            .await
            .ok()
            .flatten()?;
        (owner != self.advertise).then_some(owner)
    }
}
