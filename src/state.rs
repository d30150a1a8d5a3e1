//! Shared proxy state: a cheap-to-clone handle passed explicitly to every task.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use foldhash::{HashMap, HashMapExt};
use parking_lot::Mutex;

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::backend::pool::Pools;
use crate::catalog::static_dir::StaticDirectory;
use crate::catalog::TenantDirectory;
use crate::config::{self, Config, ConfigError};
use crate::frontend::cancel::CancelRegistry;
use crate::frontend::signal::SessionSignal;
use crate::frontend::tls::ClientTls;

/// Handle to the proxy's state.
#[derive(Clone)]
pub struct Proxy {
    inner: Arc<Inner>,
}

struct Inner {
    config: ArcSwap<Config>,
    config_path: Option<PathBuf>,
    directory: ArcSwap<Box<dyn TenantDirectory>>,
    pools: Pools,
    cancels: CancelRegistry,
    /// Clients' TLS; replaced at reload (the files are read again).
    tls: ArcSwapOption<ClientTls>,
    mock_secret: [u8; 32],
    clients: AtomicUsize,
    /// A client idle limit is set (`limits.idle_transaction_timeout_ms` or
    /// `client_idle_timeout_ms`): the relay's one check per turn while both are off.
    idle_limits: AtomicBool,
    shutdown: CancellationToken,
    /// Tenants come from the catalog (reload keeps the directory).
    uses_catalog: bool,
    sessions: Mutex<HashMap<u64, (String, Arc<SessionSignal>)>>,
    next_session: AtomicU64,
    guard: crate::frontend::guard::GuardCache,
    metrics: crate::telemetry::metrics::Metrics,
    telemetry: std::sync::OnceLock<crate::telemetry::Telemetry>,
    limits: std::sync::OnceLock<crate::limits::Limits>,
    catalog: std::sync::OnceLock<crate::catalog::Catalog>,
}

/// See [`Proxy::config_cache`]; `load()` gives the current config.
pub type ConfigCache = arc_swap::cache::Cache<ConfigOf, Arc<Config>>;

/// The proxy's config, as the cache reads it.
pub struct ConfigOf(Proxy);

impl std::ops::Deref for ConfigOf {
    type Target = ArcSwap<Config>;
    fn deref(&self) -> &ArcSwap<Config> {
        &self.0.inner.config
    }
}

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("tls: {0}")]
    Tls(String),
}

impl Proxy {
    /// Build state from a validated config, with tenants from the config file.
    pub fn new(cfg: Config, config_path: Option<PathBuf>) -> Result<Self, StartError> {
        let directory: Box<dyn TenantDirectory> = Box::new(StaticDirectory::from_config(&cfg));
        Self::with_directory(cfg, config_path, directory, false)
    }

    /// Build state around a tenant directory (`uses_catalog`: reloads keep it).
    pub fn with_directory(
        cfg: Config,
        config_path: Option<PathBuf>,
        directory: Box<dyn TenantDirectory>,
        uses_catalog: bool,
    ) -> Result<Self, StartError> {
        let tls = load_tls(&cfg).map_err(StartError::Tls)?;
        let idle_limits = idle_limits_set(&cfg);
        let mut mock_secret = [0u8; 32];
        rand::Rng::fill(&mut rand::thread_rng(), &mut mock_secret[..]);
        Ok(Proxy {
            inner: Arc::new(Inner {
                pools: Pools::new(cfg.pool.clone(), cfg.tcp.clone()),
                config: ArcSwap::from_pointee(cfg),
                config_path,
                directory: ArcSwap::from_pointee(directory),
                cancels: CancelRegistry::default(),
                tls: ArcSwapOption::new(tls),
                mock_secret,
                clients: AtomicUsize::new(0),
                idle_limits: AtomicBool::new(idle_limits),
                shutdown: CancellationToken::new(),
                uses_catalog,
                sessions: Mutex::new(HashMap::new()),
                next_session: AtomicU64::new(1),
                guard: Default::default(),
                metrics: crate::telemetry::metrics::Metrics::new(),
                telemetry: std::sync::OnceLock::new(),
                limits: std::sync::OnceLock::new(),
                catalog: std::sync::OnceLock::new(),
            }),
        })
    }

    pub fn config(&self) -> Arc<Config> {
        self.inner.config.load_full()
    }

    /// Is a client idle limit set? (One atomic load; the limits are in the config.)
    #[inline]
    pub fn idle_limits_on(&self) -> bool {
        self.inner.idle_limits.load(Ordering::Relaxed)
    }

    /// A handle for a reader of the config on every statement (a session): while it is
    /// unchanged, a read is one atomic load; a reload is seen at the next read.
    pub fn config_cache(&self) -> ConfigCache {
        arc_swap::cache::Cache::new(ConfigOf(self.clone()))
    }

    pub fn directory(&self) -> Arc<Box<dyn TenantDirectory>> {
        self.inner.directory.load_full()
    }

    pub fn pools(&self) -> &Pools {
        &self.inner.pools
    }

    pub fn guard(&self) -> &crate::frontend::guard::GuardCache {
        &self.inner.guard
    }

    pub fn metrics(&self) -> &crate::telemetry::metrics::Metrics {
        &self.inner.metrics
    }

    /// Statement telemetry, once started (sessions record through it when enabled).
    pub fn telemetry(&self) -> Option<&crate::telemetry::Telemetry> {
        self.inner.telemetry.get()
    }

    /// Attach telemetry (once; later calls are ignored).
    pub fn set_telemetry(&self, t: crate::telemetry::Telemetry) {
        let _ = self.inner.telemetry.set(t);
    }

    /// The master catalog, when tenants come from it.
    pub fn catalog(&self) -> Option<&crate::catalog::Catalog> {
        self.inner.catalog.get()
    }

    pub fn set_catalog(&self, c: crate::catalog::Catalog) {
        let _ = self.inner.catalog.set(c);
    }

    /// Plan limits, flags, sessions and cache, once started.
    pub fn limits(&self) -> Option<&crate::limits::Limits> {
        self.inner.limits.get()
    }

    /// Attach limits (once; later calls are ignored).
    pub fn set_limits(&self, l: crate::limits::Limits) {
        let _ = self.inner.limits.set(l);
    }

    pub fn cancels(&self) -> &CancelRegistry {
        &self.inner.cancels
    }

    /// The clients' TLS now (`None`: SSLRequest is answered 'N').
    pub fn tls(&self) -> Option<Arc<ClientTls>> {
        self.inner.tls.load_full()
    }

    pub fn mock_secret(&self) -> &[u8; 32] {
        &self.inner.mock_secret
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.inner.shutdown.clone()
    }

    /// Count a new client; false when `max_clients` is reached.
    pub fn client_enter(&self) -> bool {
        let max = self.config().limits.max_clients;
        let entered = self
            .inner
            .clients
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok();
        if entered {
            self.inner.metrics.client_connections.increment(1);
            self.inner.metrics.clients.increment(1.0);
        }
        entered
    }

    pub fn client_leave(&self) {
        self.inner.clients.fetch_sub(1, Ordering::AcqRel);
        self.inner.metrics.clients.decrement(1.0);
    }

    pub fn clients(&self) -> usize {
        self.inner.clients.load(Ordering::Acquire)
    }

    /// Register a client session of `tenant`; its signal tells it to drain or end.
    pub fn session_enter(&self, tenant: &str) -> (u64, Arc<SessionSignal>) {
        let id = self.inner.next_session.fetch_add(1, Ordering::Relaxed);
        let signal = Arc::new(SessionSignal::default());
        self.inner
            .sessions
            .lock()
            .insert(id, (tenant.to_owned(), signal.clone()));
        // After the insert: `shutdown` cancels the token before it signals the
        // registered sessions, so a session is either signalled there or sees it here.
        if self.inner.shutdown.is_cancelled() {
            signal.drain();
        }
        (id, signal)
    }

    /// Begin the graceful shutdown: the listener and background tasks stop (the shutdown
    /// token), and each session ends at its next transaction boundary.
    pub fn shutdown(&self) {
        self.inner.shutdown.cancel();
        for (_, signal) in self.inner.sessions.lock().values() {
            signal.drain();
        }
    }

    /// End one session (admin KILL CLIENT). False when there is no such session.
    pub fn kill_session(&self, id: u64) -> bool {
        match self.inner.sessions.lock().get(&id) {
            Some((_, signal)) => {
                signal.end();
                true
            }
            None => false,
        }
    }

    pub fn session_leave(&self, id: u64) {
        self.inner.sessions.lock().remove(&id);
    }

    /// End every session of `tenant` (suspended, cancelled or dropped). Returns how many.
    pub fn end_tenant_sessions(&self, tenant: &str) -> usize {
        let sessions = self.inner.sessions.lock();
        let mut n = 0;
        for (t, signal) in sessions.values() {
            if t == tenant {
                signal.end();
                n += 1;
            }
        }
        self.inner.metrics.sessions_ended.increment(n as u64);
        n
    }

    /// React to a new tenant directory snapshot: end sessions of tenants that may no
    /// longer connect, retire pools of tenants that are gone or moved.
    pub fn tenants_changed(&self) {
        let dir = self.directory();
        let ended: Vec<String> = {
            let sessions = self.inner.sessions.lock();
            let mut keys: Vec<String> = sessions.values().map(|(t, _)| t.clone()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter()
                .filter(|k| !k.is_empty() && dir.tenant(k).is_none_or(|t| !t.status.may_connect()))
                .collect()
        };
        for k in ended {
            let n = self.end_tenant_sessions(&k);
            info!(tenant = %k, sessions = n, "tenant no longer active; its sessions were ended");
        }
        self.inner.pools.retain_tenants(|k| dir.tenant(k).is_some());
        for t in dir.tenants() {
            self.inner.pools.for_tenant(&t);
            // A move pauses a tenant through the catalog, for every replica.
            self.inner.pools.set_catalog_pause(&t.key, t.paused);
        }
    }

    /// Reload the config file: build, validate, swap, then drain what changed.
    pub fn reload(&self) -> Result<(), ConfigError> {
        // 1. Build and validate the new config (environment overrides apply again).
        let cfg = config::load(self.inner.config_path.as_deref())?;
        let old = self.config();
        if cfg.listen != old.listen || cfg.catalog_url != old.catalog_url {
            warn!("listen and catalog_url changes need a restart; keeping the old values");
        }
        // The TLS files are read again (a rotated certificate); unreadable ones refuse the
        // whole reload, as a broken file does.
        let tls = load_tls(&cfg).map_err(|e| ConfigError::Invalid(format!("tls: {e}")))?;
        // 2. Build the new tenant directory (the catalog's follows the catalog instead).
        let dir: Option<Box<dyn TenantDirectory>> =
            (!self.inner.uses_catalog).then(|| Box::new(StaticDirectory::from_config(&cfg)) as _);
        // 3. Swap config, directory and pool settings; clients keep running.
        self.inner
            .pools
            .reconfigure(cfg.pool.clone(), cfg.tcp.clone());
        if let Some(dir) = dir {
            self.inner.directory.store(Arc::new(dir));
        }
        self.inner
            .idle_limits
            .store(idle_limits_set(&cfg), Ordering::Relaxed);
        self.inner.config.store(Arc::new(cfg));
        self.inner.tls.store(tls);
        // 4. Drain: retire pools of removed tenants and of tenants whose placement changed;
        //    their idle connections close now, busy ones when released.
        self.tenants_changed();
        info!(
            tenants = self.directory().tenants().len(),
            "configuration reloaded"
        );
        Ok(())
    }
}

/// The clients' TLS of `cfg`, when it has a certificate.
fn load_tls(cfg: &Config) -> Result<Option<Arc<ClientTls>>, String> {
    if !cfg.tls.enabled() {
        return Ok(None);
    }
    ClientTls::load(&cfg.tls).map(|t| Some(Arc::new(t)))
}

fn idle_limits_set(cfg: &Config) -> bool {
    cfg.limits.idle_transaction_timeout_ms > 0 || cfg.limits.client_idle_timeout_ms > 0
}
