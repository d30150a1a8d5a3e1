//! Per-tenant server pools with a cap per PostgreSQL instance.
//!
//! A client asks its tenant's pool for a connection: an idle one (most recently used first),
//! else a new one if the tenant is under its size and the instance under its cap; at the cap
//! the oldest idle connection of another tenant on that instance is closed to make room.
//! Otherwise the client waits in line, up to `query_wait_timeout_ms`, then gets `53300`.
//! A connection checked in while clients wait is handed to the first of them directly, as
//! PgBouncer does: waiters are served in order and each wakes once, with a connection,
//! instead of all racing (and mostly losing) to newcomers for the idle list.
//! Locks are never held across `.await`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use foldhash::{HashMap, HashMapExt};
use parking_lot::Mutex;
use tokio::sync::{oneshot, Notify};

use super::params::ServerParams;
use super::server::{BackendError, ServerConn};
use super::tls::ServerTls;
use crate::catalog::Tenant;
use crate::config::{PoolConfig, TcpConfig};

/// Why a pool could not hand out a connection.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("timed out after {0} ms waiting for a server connection")]
    Timeout(u64),
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The pool was replaced (the tenant moved) while the caller waited: use the new one.
    #[error("the tenant's placement changed")]
    Retired,
}

/// All pools of the proxy. Cheap to clone.
#[derive(Clone)]
pub struct Pools {
    inner: Arc<PoolsInner>,
}

struct PoolsInner {
    config: ArcSwap<PoolConfig>,
    /// The two settings every checkout and checkin read, kept beside `config` as plain
    /// numbers: reading them costs no `ArcSwap` guard (about 55 instructions each).
    lifetime_ms: AtomicU64,
    check_delay_ms: AtomicU64,
    /// Socket options of new server connections.
    tcp: ArcSwap<TcpConfig>,
    /// TLS client configurations by placement settings, built (root certificates read)
    /// at a placement's first connection and again after each reload.
    tls: Mutex<HashMap<ServerTls, TlsSetup>>,
    tenants: Mutex<HashMap<String, Arc<TenantPool>>>,
    instances: Mutex<HashMap<String, Arc<Instance>>>,
    pause: Pause,
}

/// Paused tenants: new transactions wait, running ones finish (admin PAUSE, tenant moves).
#[derive(Default)]
struct Pause {
    /// Anything paused at all (the fast path reads only this).
    any: AtomicBool,
    all: AtomicBool,
    tenants: Mutex<std::collections::HashSet<String>>,
    /// Tenants paused by the catalog (moves), tracked apart from admin pauses' source.
    catalog: Mutex<std::collections::HashSet<String>>,
    resumed: Notify,
}

impl Pause {
    fn holds(&self, tenant: &str) -> bool {
        self.any.load(Ordering::Acquire)
            && (self.all.load(Ordering::Acquire)
                || self.tenants.lock().contains(tenant)
                || self.catalog.lock().contains(tenant))
    }

    fn update_any(&self) {
        let any = self.all.load(Ordering::Acquire)
            || !self.tenants.lock().is_empty()
            || !self.catalog.lock().is_empty();
        self.any.store(any, Ordering::Release);
        if !any {
            self.resumed.notify_waiters();
        }
    }
}

/// Connection accounting for one PostgreSQL instance.
struct Instance {
    open: AtomicUsize,
    cap: AtomicUsize,
    /// A connection closed here (a slot freed), or one went idle while `capped` waiters
    /// wait (it can be closed to make room for them).
    released: Notify,
    /// Waiters held by the cap: a checkin that leaves a connection idle wakes them.
    capped: AtomicUsize,
    members: Mutex<Vec<Weak<TenantPool>>>,
    /// Server connections found dead while in use (a restart, a crash, a terminated
    /// backend). Idle connections put back before the latest loss are checked before
    /// they are handed out, however recently they were used: an idle connection is not
    /// watched, and the same event has likely ended it too.
    losses: AtomicU64,
}

impl Instance {
    fn try_reserve(&self) -> bool {
        let cap = self.cap.load(Ordering::Relaxed);
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < cap).then_some(n + 1)
            })
            .is_ok()
    }

    fn release(&self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
        // Every waiter re-checks: a waiter of a tenant at its own size cannot use the slot,
        // so waking only one could strand a waiter that can.
        self.released.notify_waiters();
    }

    /// Close the longest-idle connection of a tenant other than `except`. True if one closed.
    fn evict_idle(&self, except: &TenantPool) -> bool {
        let members: Vec<Arc<TenantPool>> = {
            let mut m = self.members.lock();
            m.retain(|w| w.strong_count() > 0);
            m.iter().filter_map(Weak::upgrade).collect()
        };
        let victim = members
            .iter()
            .filter(|p| !std::ptr::eq(p.as_ref(), except))
            .filter_map(|p| p.oldest_idle_since().map(|t| (t, p)))
            .min_by_key(|(t, _)| *t)
            .map(|(_, p)| p.clone());
        match victim {
            Some(p) => p.close_oldest_idle(),
            None => false,
        }
    }
}

/// Snapshot of one pool for reporting.
#[derive(Debug, Clone, Default)]
pub struct PoolStats {
    pub tenant: String,
    pub instance: String,
    pub size: usize,
    pub open: usize,
    pub idle: usize,
    pub waiting: usize,
    pub acquired: u64,
    pub timeouts: u64,
}

/// The pool of one tenant (one placement).
pub struct TenantPool {
    pub tenant: Arc<Tenant>,
    config: Arc<PoolsInner>,
    instance: Arc<Instance>,
    size: AtomicUsize,
    state: Mutex<PoolState>,
    returned: Notify,
    retired: AtomicBool,
    server_params: Mutex<Option<Arc<ServerParams>>>,
    acquired: AtomicU64,
    timeouts: AtomicU64,
    /// Settings new connections start with (the tenant's held flag settings), and their
    /// generation: a connection of another generation is closed instead of reused.
    held: Mutex<Arc<[(String, String)]>>,
    held_gen: AtomicU64,
    holds: AtomicBool,
}

/// A placement's rustls configuration (`None`: sslmode disable), or why it has none.
type TlsSetup = Result<Option<Arc<rustls::ClientConfig>>, String>;

#[derive(Default)]
struct PoolState {
    idle: VecDeque<Box<ServerConn>>,
    /// Idle plus checked-out connections.
    open: usize,
    /// Clients waiting for a connection (stats).
    waiting: usize,
    /// The line: a checked-in connection goes to the first live entry. An entry whose
    /// waiter gave up is closed and skipped.
    line: VecDeque<oneshot::Sender<Box<ServerConn>>>,
}

/// A waiter: counted in `waiting`, and in line once it found nothing to take. Dropped
/// (served, timed out, or the client left while waiting) it is uncounted, leaves the line
/// and checks back in a connection handed to it meanwhile.
struct Place<'a> {
    pool: &'a Arc<TenantPool>,
    rx: Option<oneshot::Receiver<Box<ServerConn>>>,
    /// Counted in the instance's `capped`.
    capped: bool,
}

impl<'a> Place<'a> {
    fn new(pool: &'a Arc<TenantPool>) -> Self {
        pool.state.lock().waiting += 1;
        Place {
            pool,
            rx: None,
            capped: false,
        }
    }

    /// Held by the instance's cap: counted before looking for a connection to evict, so a
    /// checkin after the look sees the count and wakes this waiter.
    fn held_by_cap(&mut self) {
        if !self.capped {
            self.capped = true;
            self.pool.instance.capped.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Step out of the line; a connection handed over meanwhile is returned.
    fn leave(&mut self) -> Option<Box<ServerConn>> {
        let mut rx = self.rx.take()?;
        rx.close();
        rx.try_recv().ok()
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.leave() {
            self.pool.checkin(conn);
        }
        if self.capped {
            self.pool.instance.capped.fetch_sub(1, Ordering::SeqCst);
        }
        self.pool.state.lock().waiting -= 1;
    }
}

/// A slot reserved for a connection being opened (counted in `open` and the instance's
/// count). Dropped before it is kept (the connect failed, or the waiting client left and
/// the connect was abandoned), it gives the slot back.
struct Reservation<'a> {
    pool: &'a TenantPool,
    kept: bool,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.kept {
            self.pool.forget_one();
        }
    }
}

impl PoolsInner {
    fn tls_for(&self, t: &ServerTls) -> TlsSetup {
        if let Some(setup) = self.tls.lock().get(t) {
            return setup.clone();
        }
        // Read outside the lock; a racing connection may read the files too.
        let setup = t.client_config();
        self.tls.lock().insert(t.clone(), setup.clone());
        setup
    }
}

impl Pools {
    pub fn new(config: PoolConfig, tcp: TcpConfig) -> Self {
        Pools {
            inner: Arc::new(PoolsInner {
                lifetime_ms: AtomicU64::new(config.lifetime_ms),
                check_delay_ms: AtomicU64::new(config.server_check_delay_ms),
                config: ArcSwap::from_pointee(config),
                tcp: ArcSwap::from_pointee(tcp),
                tls: Mutex::new(HashMap::new()),
                tenants: Mutex::new(HashMap::new()),
                instances: Mutex::new(HashMap::new()),
                pause: Pause::default(),
            }),
        }
    }

    pub fn config(&self) -> Arc<PoolConfig> {
        self.inner.config.load_full()
    }

    /// Apply new pool settings (reload). Sizes, caps, socket options and the TLS root
    /// certificates (read again) take effect for new connections.
    pub fn reconfigure(&self, config: PoolConfig, tcp: TcpConfig) {
        let cap = config.instance_max_connections;
        let inner = &self.inner;
        inner
            .lifetime_ms
            .store(config.lifetime_ms, Ordering::Relaxed);
        inner
            .check_delay_ms
            .store(config.server_check_delay_ms, Ordering::Relaxed);
        inner.config.store(Arc::new(config));
        self.inner.tcp.store(Arc::new(tcp));
        // Root certificate files are read again (a renewed CA) for new connections.
        self.inner.tls.lock().clear();
        for i in self.inner.instances.lock().values() {
            i.cap.store(cap, Ordering::Relaxed);
            i.released.notify_waiters();
        }
    }

    /// The pool for `tenant`, replacing (and retiring) one whose placement changed.
    pub fn for_tenant(&self, tenant: &Arc<Tenant>) -> Arc<TenantPool> {
        let mut map = self.inner.tenants.lock();
        if let Some(p) = map.get(&tenant.key) {
            if p.tenant.placement == tenant.placement {
                p.size.store(tenant.pool_size, Ordering::Relaxed);
                return p.clone();
            }
            p.retire();
        }
        let instance = self.instance(&tenant.placement.instance);
        let pool = Arc::new(TenantPool {
            tenant: tenant.clone(),
            config: self.inner.clone(),
            instance: instance.clone(),
            size: AtomicUsize::new(tenant.pool_size),
            state: Mutex::new(PoolState::default()),
            returned: Notify::new(),
            retired: AtomicBool::new(false),
            server_params: Mutex::new(None),
            acquired: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            held: Mutex::new(Arc::new([])),
            held_gen: AtomicU64::new(0),
            holds: AtomicBool::new(false),
        });
        instance.members.lock().push(Arc::downgrade(&pool));
        map.insert(tenant.key.clone(), pool.clone());
        pool
    }

    fn instance(&self, name: &str) -> Arc<Instance> {
        let cap = self.inner.config.load().instance_max_connections;
        self.inner
            .instances
            .lock()
            .entry(name.to_owned())
            .or_insert_with(|| {
                Arc::new(Instance {
                    open: AtomicUsize::new(0),
                    cap: AtomicUsize::new(cap),
                    released: Notify::new(),
                    capped: AtomicUsize::new(0),
                    members: Mutex::new(Vec::new()),
                    losses: AtomicU64::new(0),
                })
            })
            .clone()
    }

    /// Retire pools of tenants that no longer exist (reload).
    pub fn retain_tenants(&self, keep: impl Fn(&str) -> bool) {
        self.inner.tenants.lock().retain(|k, p| {
            let k_ok = keep(k);
            if !k_ok {
                p.retire();
            }
            k_ok
        });
    }

    /// Close idle connections past their idle timeout or lifetime. Called periodically.
    pub fn reap(&self) {
        let cfg = self.inner.config.load();
        let pools: Vec<_> = self.inner.tenants.lock().values().cloned().collect();
        for p in pools {
            p.reap(&cfg);
        }
    }

    /// Close every idle connection (shutdown).
    pub fn close_idle(&self) {
        let pools: Vec<_> = self.inner.tenants.lock().values().cloned().collect();
        for p in pools {
            while p.close_oldest_idle() {}
        }
    }

    pub fn stats(&self) -> Vec<PoolStats> {
        let mut v: Vec<_> = self
            .inner
            .tenants
            .lock()
            .values()
            .map(|p| p.stats())
            .collect();
        v.sort_by(|a, b| a.tenant.cmp(&b.tenant));
        v
    }

    /// Hold new transactions of `tenant` (all tenants with `None`); running ones go on.
    pub fn pause(&self, tenant: Option<&str>) {
        let p = &self.inner.pause;
        match tenant {
            Some(t) => {
                p.tenants.lock().insert(t.to_owned());
            }
            None => p.all.store(true, Ordering::Release),
        }
        p.update_any();
    }

    /// Let held transactions go (`None`: everything paused, all tenants and each one).
    pub fn resume(&self, tenant: Option<&str>) {
        let p = &self.inner.pause;
        match tenant {
            Some(t) => {
                p.tenants.lock().remove(t);
            }
            None => {
                p.all.store(false, Ordering::Release);
                p.tenants.lock().clear();
            }
        }
        p.update_any();
        p.resumed.notify_waiters();
        self.kick_waiters();
    }

    /// Waiters in line while a tenant was paused got no hand-off: wake them to look again.
    fn kick_waiters(&self) {
        for p in self.inner.tenants.lock().values() {
            p.returned.notify_waiters();
        }
    }

    /// Follow the catalog's pause flag of a tenant (set by a tenant move).
    pub fn set_catalog_pause(&self, tenant: &str, paused: bool) {
        // Kept apart from admin pauses: an admin RESUME does not lift a move's pause, and a
        // finished move does not lift an admin PAUSE.
        let p = &self.inner.pause;
        let changed = {
            let mut set = p.catalog.lock();
            if paused {
                set.insert(tenant.to_owned())
            } else {
                set.remove(tenant)
            }
        };
        if changed {
            p.update_any();
            p.resumed.notify_waiters();
            if !paused {
                self.kick_waiters();
            }
        }
    }

    pub fn is_paused(&self, tenant: &str) -> bool {
        self.inner.pause.holds(tenant)
    }

    /// Server connections in use (checked out) by `tenant`, or by all tenants.
    pub fn busy(&self, tenant: Option<&str>) -> usize {
        self.inner
            .tenants
            .lock()
            .values()
            .filter(|p| tenant.is_none_or(|t| p.tenant.key == t))
            .map(|p| {
                let st = p.state.lock();
                st.open - st.idle.len()
            })
            .sum()
    }

    /// Open connections on instance `name`.
    pub fn instance_open(&self, name: &str) -> usize {
        self.inner
            .instances
            .lock()
            .get(name)
            .map_or(0, |i| i.open.load(Ordering::Relaxed))
    }
}

impl TenantPool {
    /// Get a connection: idle, new, or after waiting.
    pub async fn acquire(self: &Arc<Self>) -> Result<Pooled, PoolError> {
        if self.config.pause.any.load(Ordering::Acquire) {
            self.wait_while_paused().await;
            if self.is_retired() {
                return Err(PoolError::Retired);
            }
        }
        if let Some(conn) = self.try_acquire() {
            return Ok(conn);
        }
        // Boxed so callers' futures do not carry the waiting and connecting state.
        Box::pin(self.acquire_slow(self.config.config.load_full())).await
    }

    /// An idle connection right now, without waiting or connecting: `None` when the tenant
    /// is paused or no idle connection is fit to hand out. Other tenants' pauses do not
    /// matter (one atomic read when nothing is paused).
    pub fn try_acquire(self: &Arc<Self>) -> Option<Pooled> {
        if self.config.pause.holds(&self.tenant.key) {
            return None;
        }
        let lifetime_ms = self.config.lifetime_ms.load(Ordering::Relaxed);
        match self.try_take_idle(lifetime_ms) {
            Take::Idle(conn) => {
                self.acquired.fetch_add(1, Ordering::Relaxed);
                Some(conn)
            }
            _ => None,
        }
    }

    /// Hold a new transaction while the tenant is paused.
    async fn wait_while_paused(&self) {
        let p = &self.config.pause;
        loop {
            let resumed = p.resumed.notified();
            tokio::pin!(resumed);
            resumed.as_mut().enable();
            if !p.holds(&self.tenant.key) {
                return;
            }
            resumed.await;
        }
    }

    async fn acquire_slow(self: &Arc<Self>, cfg: Arc<PoolConfig>) -> Result<Pooled, PoolError> {
        // One timer for the whole wait, not one per wake-up.
        let deadline = tokio::time::sleep(Duration::from_millis(cfg.query_wait_timeout_ms));
        tokio::pin!(deadline);
        let mut place = None;
        let result = loop {
            let returned = self.returned.notified();
            let released = self.instance.released.notified();
            tokio::pin!(returned, released);
            returned.as_mut().enable();
            released.as_mut().enable();
            // This waiter's place: counted from the first look, in line once a look
            // finds nothing (see `try_take`).
            let place = place.get_or_insert_with(|| Place::new(self));

            // A pause or a move may have happened while we waited. A held waiter leaves
            // the line (a connection handed to it just now goes back, idle), so it does
            // not hold one through the pause.
            if self.config.pause.holds(&self.tenant.key) {
                if let Some(conn) = place.leave() {
                    self.checkin(conn);
                }
                self.wait_while_paused().await;
                continue;
            }
            if self.is_retired() {
                break Err(PoolError::Retired);
            }
            match self.try_take(&cfg, place) {
                Take::Idle(conn) => break Ok(conn),
                Take::Reserved => {
                    // Out of the line first: a connection handed over while this one
                    // connects would sit unused. One handed over already is taken
                    // instead, and the slot given back.
                    if let Some(conn) = place.leave() {
                        self.forget_one();
                        break Ok(self.pooled(conn));
                    }
                    break self.open_new(&cfg).await;
                }
                Take::Full => {}
                Take::InstanceFull => {
                    place.held_by_cap();
                    if self.instance.evict_idle(self) {
                        continue;
                    }
                }
            }
            let in_line = place.rx.is_some();
            tokio::select! {
                biased;
                handed = async { place.rx.as_mut().expect("in line").await }, if in_line => {
                    place.rx = None;
                    match handed {
                        // Handed over just before a pause took hold: back it goes (idle),
                        // and this waiter waits for the resume like the rest.
                        Ok(conn) if self.config.pause.holds(&self.tenant.key) => {
                            self.checkin(conn);
                            continue;
                        }
                        Ok(conn) => break Ok(self.pooled(conn)),
                        // The entry was dropped unserved: take a new place.
                        Err(_) => continue,
                    }
                }
                _ = &mut returned => {}
                _ = &mut released => {}
                _ = &mut deadline => {
                    self.timeouts.fetch_add(1, Ordering::Relaxed);
                    break Err(PoolError::Timeout(cfg.query_wait_timeout_ms));
                }
            }
        };
        // Leave the line: a connection handed over meanwhile goes to the next waiter.
        drop(place);
        if result.is_ok() {
            self.acquired.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    /// Only an idle connection; never opens one.
    fn try_take_idle(self: &Arc<Self>, lifetime_ms: u64) -> Take {
        let mut stale = Vec::new();
        let losses = self.instance.losses.load(Ordering::Acquire);
        let gen = self.held_gen.load(Ordering::Acquire);
        let found = pop_usable(&mut self.state.lock(), lifetime_ms, losses, gen, &mut stale);
        self.close_stale(stale);
        match found {
            Some(c) => Take::Idle(self.pooled(c)),
            None => Take::Full,
        }
    }

    /// An idle connection, else a reserved slot to open one; when neither, `place` joins
    /// the line (under the same lock as the look, so no checkin falls between).
    fn try_take(self: &Arc<Self>, cfg: &PoolConfig, place: &mut Place<'_>) -> Take {
        let mut stale = Vec::new();
        let take = {
            let losses = self.instance.losses.load(Ordering::Acquire);
            let gen = self.held_gen.load(Ordering::Acquire);
            let mut st = self.state.lock();
            let take = match pop_usable(&mut st, cfg.lifetime_ms, losses, gen, &mut stale) {
                Some(c) => Take::Idle(self.pooled(c)),
                None if st.open >= self.size.load(Ordering::Relaxed) => Take::Full,
                None if self.instance.try_reserve() => {
                    st.open += 1;
                    Take::Reserved
                }
                None => Take::InstanceFull,
            };
            if matches!(take, Take::Full | Take::InstanceFull) && place.rx.is_none() {
                // Entries of waiters that gave up are dropped from the back as the line
                // grows (checkins skip the rest).
                while st.line.back().is_some_and(|tx| tx.is_closed()) {
                    st.line.pop_back();
                }
                let (tx, rx) = oneshot::channel();
                st.line.push_back(tx);
                place.rx = Some(rx);
            }
            take
        };
        self.close_stale(stale);
        take
    }

    fn pooled(self: &Arc<Self>, c: Box<ServerConn>) -> Pooled {
        Pooled {
            conn: Some(c),
            pool: self.clone(),
        }
    }

    /// Close connections found unusable (their slots were already given back).
    #[allow(clippy::vec_box)] // the idle list's boxes, closed as they are
    fn close_stale(&self, stale: Vec<Box<ServerConn>>) {
        for c in stale {
            self.instance.release();
            self.returned.notify_one();
            tokio::spawn(c.terminate());
        }
    }

    /// Open a connection in a slot [`Self::try_take`] reserved.
    async fn open_new(self: &Arc<Self>, cfg: &PoolConfig) -> Result<Pooled, PoolError> {
        let mut slot = Reservation {
            pool: self,
            kept: false,
        };
        let tls = self.config.tls_for(&self.tenant.placement.tls);
        // Both under the lock `hold_settings` changes them under: the settings and their
        // generation always match.
        let (held, gen) = {
            let h = self.held.lock();
            (h.clone(), self.held_gen.load(Ordering::Acquire))
        };
        let res = match &tls {
            Ok(tls) => {
                ServerConn::connect(
                    &self.tenant.placement,
                    &held,
                    tls.as_ref(),
                    &self.config.tcp.load(),
                    Duration::from_millis(cfg.connect_timeout_ms),
                    cfg.prepared_statements_cache,
                )
                .await
            }
            Err(e) => Err(BackendError::Tls(e.clone())),
        };
        match res {
            Ok(mut conn) => {
                conn.held_gen = gen;
                conn.started_held = held.clone();
                slot.kept = true;
                let mut sp = self.server_params.lock();
                if sp.is_none() {
                    // What clients are told at login: a held read-only mode is the flag's
                    // (login adds it), not the server's own default.
                    let mut reported = conn.reported.clone();
                    if held
                        .iter()
                        .any(|(k, _)| k == "default_transaction_read_only")
                    {
                        for (k, v) in &mut reported {
                            if k == "default_transaction_read_only" {
                                *v = "off".into();
                            }
                        }
                    }
                    *sp = Some(Arc::new(ServerParams::new(reported)));
                }
                Ok(self.pooled(Box::new(conn)))
            }
            // The slot is given back as `slot` drops.
            Err(e) => Err(e.into()),
        }
    }

    /// A server connection of this pool died while in use: its instance's idle
    /// connections are checked before their next use.
    pub fn server_lost(&self) {
        self.instance.losses.fetch_add(1, Ordering::AcqRel);
    }

    /// Start new server connections with `held` (the tenant's held flag settings). When
    /// they differ from the current ones, the idle connections are closed and those in
    /// use are closed when they come back: `RESET ALL` and `DISCARD ALL` return a session
    /// to its startup values, which must be the held ones.
    pub fn hold_settings(&self, held: &[(String, String)]) {
        {
            let mut cur = self.held.lock();
            if **cur == *held {
                return;
            }
            *cur = held.into();
            self.holds.store(!held.is_empty(), Ordering::Relaxed);
            self.held_gen.fetch_add(1, Ordering::AcqRel);
        }
        while self.close_oldest_idle() {}
    }

    /// Does this pool start its connections with held settings? (One atomic read: the
    /// quick checkout path of a tenant without flag settings checks it.)
    pub fn holds_settings(&self) -> bool {
        self.holds.load(Ordering::Relaxed)
    }

    /// Replaced by a pool with a new placement or removed (reload, catalog change).
    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Relaxed)
    }

    /// ParameterStatus values of this tenant's server, once a connection has been made.
    pub fn server_params(&self) -> Option<Arc<ServerParams>> {
        self.server_params.lock().clone()
    }

    fn forget_one(&self) {
        self.state.lock().open -= 1;
        self.instance.release();
        self.returned.notify_one();
    }

    /// Put a connection back. Its `last_used` is when it last answered (the relay stamps
    /// it, so no clock read here); the lifetime is checked here, not at checkout.
    fn checkin(&self, mut conn: Box<ServerConn>) {
        let lifetime_ms = self.config.lifetime_ms.load(Ordering::Relaxed);
        let check_delay_ms = self.config.check_delay_ms.load(Ordering::Relaxed);
        conn.losses_seen = self.instance.losses.load(Ordering::Acquire);
        conn.check_after = conn.last_used + Duration::from_millis(check_delay_ms);
        let close = |conn: Box<ServerConn>| {
            self.forget_one();
            tokio::spawn(conn.terminate());
        };
        if expired(&conn, lifetime_ms, conn.last_used) {
            return close(conn);
        }
        let mut st = self.state.lock();
        // Read under the lock: `retire` and `hold_settings` drain the idle list after
        // changing them, so a connection put there after the drain would stay.
        if self.retired.load(Ordering::Relaxed)
            || conn.held_gen != self.held_gen.load(Ordering::Acquire)
        {
            drop(st);
            return close(conn);
        }
        // The first waiter in line gets it (not while the tenant is paused: a held
        // waiter must not start a transaction; resuming wakes the line). Read under the
        // lock too, so a resume cannot wake the line between this look and the push.
        if !self.config.pause.holds(&self.tenant.key) {
            while let Some(tx) = st.line.pop_front() {
                match tx.send(conn) {
                    Ok(()) => return,
                    Err(back) => conn = back,
                }
            }
        }
        st.idle.push_back(conn);
        drop(st);
        // Waiters of other tenants held by the instance's cap can now close it to make
        // room (one atomic read when none wait).
        if self.instance.capped.load(Ordering::SeqCst) > 0 {
            self.instance.released.notify_waiters();
        }
    }

    fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
        while self.close_oldest_idle() {}
        // Waiters in line learn at once that this pool is done.
        self.returned.notify_waiters();
    }

    fn oldest_idle_since(&self) -> Option<Instant> {
        self.state.lock().idle.front().map(|c| c.last_used)
    }

    fn close_oldest_idle(&self) -> bool {
        let c = {
            let mut st = self.state.lock();
            let c = st.idle.pop_front();
            if c.is_some() {
                st.open -= 1;
            }
            c
        };
        match c {
            Some(c) => {
                self.instance.release();
                self.returned.notify_one();
                tokio::spawn(c.terminate());
                true
            }
            None => false,
        }
    }

    fn reap(&self, cfg: &PoolConfig) {
        let now = Instant::now();
        let idle_limit = Duration::from_millis(cfg.idle_timeout_ms);
        let stale: Vec<Box<ServerConn>> = {
            let mut st = self.state.lock();
            let (keep, stale): (Vec<_>, Vec<_>) = st.idle.drain(..).partition(|c| {
                !(expired(c, cfg.lifetime_ms, now)
                    || !c.is_healthy()
                    || (cfg.idle_timeout_ms > 0 && now.duration_since(c.last_used) >= idle_limit))
            });
            st.idle = keep.into();
            st.open -= stale.len();
            stale
        };
        for c in stale {
            self.instance.release();
            tokio::spawn(c.terminate());
        }
    }

    pub fn stats(&self) -> PoolStats {
        let st = self.state.lock();
        PoolStats {
            tenant: self.tenant.key.clone(),
            instance: self.tenant.placement.instance.clone(),
            size: self.size.load(Ordering::Relaxed),
            open: st.open,
            idle: st.idle.len(),
            waiting: st.waiting,
            acquired: self.acquired.load(Ordering::Relaxed),
            timeouts: self.timeouts.load(Ordering::Relaxed),
        }
    }
}

enum Take {
    Idle(Pooled),
    Reserved,
    Full,
    InstanceFull,
}

/// Pop the most recently used idle connection that is fit to hand out; unfit ones are
/// moved to `stale` and uncounted.
#[allow(clippy::vec_box)] // the idle list's boxes, moved as they are
fn pop_usable(
    st: &mut PoolState,
    lifetime_ms: u64,
    losses: u64,
    held_gen: u64,
    stale: &mut Vec<Box<ServerConn>>,
) -> Option<Box<ServerConn>> {
    while let Some(c) = st.idle.pop_back() {
        if c.held_gen == held_gen && usable(&c, lifetime_ms, losses, Instant::now()) {
            return Some(c);
        }
        st.open -= 1;
        stale.push(c);
    }
    None
}

/// Fit to hand out. One used less than `server_check_delay_ms` ago, and put back after
/// the instance's latest lost connection (`losses`), is handed out as it is: its checkin
/// checked its lifetime moments ago. Any other must be within its lifetime and still open
/// and silent (a non-blocking read). The reaper checks every idle connection each second.
fn usable(c: &ServerConn, lifetime_ms: u64, losses: u64, now: Instant) -> bool {
    if c.losses_seen == losses && now < c.check_after {
        return true;
    }
    !expired(c, lifetime_ms, now) && c.is_healthy()
}

/// Past `lifetime_ms` (`pool.lifetime_ms`; 0 is no limit) since it was opened.
fn expired(c: &ServerConn, lifetime_ms: u64, now: Instant) -> bool {
    lifetime_ms > 0 && now >= c.created + Duration::from_millis(lifetime_ms)
}

/// A checked-out server connection. `release` returns it to the pool; dropping it closes it.
pub struct Pooled {
    conn: Option<Box<ServerConn>>,
    pool: Arc<TenantPool>,
}

impl Pooled {
    /// Return the connection to its pool. It must be idle (ReadyForQuery 'I') and clean.
    pub fn release(mut self) {
        if let Some(c) = self.conn.take() {
            self.pool.checkin(c);
        }
    }

    pub fn pool(&self) -> &Arc<TenantPool> {
        &self.pool
    }

    /// The connection and its pool, borrowed together.
    pub fn parts_mut(&mut self) -> (&mut ServerConn, &Arc<TenantPool>) {
        (
            self.conn.as_mut().expect("present until release/drop"),
            &self.pool,
        )
    }
}

impl std::ops::Deref for Pooled {
    type Target = ServerConn;
    fn deref(&self) -> &ServerConn {
        self.conn.as_ref().expect("present until release/drop")
    }
}

impl std::ops::DerefMut for Pooled {
    fn deref_mut(&mut self) -> &mut ServerConn {
        self.conn.as_mut().expect("present until release/drop")
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take() {
            self.pool.forget_one();
            // Dropping the socket closes it; no Terminate, the session may be mid-query.
            drop(c);
        }
    }
}
