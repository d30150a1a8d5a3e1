//! Wiring: build state, bind the listener, spawn tasks, run until shutdown.
//!
//! Shutdown order (SIGTERM/SIGINT or [`Running::shutdown`]):
//! 1. stop accepting; 2. sessions close at their next transaction boundary with 57P01;
//! 3. after `limits.shutdown_timeout_ms` the remaining sessions are dropped;
//! 4. idle server connections are terminated; 5. the telemetry writer drains its queue
//!    (to MongoDB, the spool or the embedded store) and stops.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use std::sync::Arc;

use crate::catalog::pg_dir::{CatalogDirectory, OnChange};
use crate::catalog::Catalog;
use crate::config::Config;
use crate::frontend::listener;
use crate::state::Proxy;

/// A started proxy.
pub struct Running {
    pub addr: SocketAddr,
    pub proxy: Proxy,
    tracker: TaskTracker,
    tasks: Vec<JoinHandle<()>>,
    telemetry: Option<(tokio_util::sync::CancellationToken, JoinHandle<()>)>,
}

/// Bind and start serving; returns once the listener is bound.
pub async fn start(cfg: Config, config_path: Option<PathBuf>) -> anyhow::Result<Running> {
    // The recorder first: metric handles made before it would be no-ops.
    if !cfg.metrics.listen.is_empty() {
        crate::telemetry::metrics::install(&cfg.metrics.listen);
    }
    let listener = crate::net::listen(&cfg.listen, &cfg.tcp, cfg.reuse_port).await?;
    let addr = listener.local_addr()?;
    let mut tasks = Vec::new();
    let proxy = if cfg.catalog_url.is_empty() {
        Proxy::new(cfg, config_path)?
    } else {
        // Tenants from the master catalog, followed by LISTEN/NOTIFY.
        let catalog = Catalog::connect(&cfg.catalog_url, &cfg.catalog_key).await?;
        let dir = CatalogDirectory::load(catalog.clone(), cfg.pool.clone()).await?;
        let proxy = Proxy::with_directory(cfg, config_path, Box::new(dir.clone()), true)?;
        proxy.set_catalog(catalog);
        let p = proxy.clone();
        let on_change: OnChange = Arc::new(move |_, _| p.tenants_changed());
        tasks.push(dir.watch(on_change, proxy.shutdown_token()));
        // Moves whose mover died (a proxy restarted mid-move, a killed CLI) roll back, so
        // their tenant is never left paused.
        let (cat, token) = (proxy.catalog().cloned(), proxy.shutdown_token());
        tasks.push(tokio::spawn(async move {
            let Some(cat) = cat else { return };
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = tick.tick() => {}
                }
                match crate::catalog::moves::abort_stale(&cat).await {
                    Ok(t) if !t.is_empty() => {
                        warn!(tenants = ?t, "rolled back tenant moves whose mover stopped")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::debug!(error = %e, "stale move check failed"),
                }
            }
        }));
        proxy
    };
    // Telemetry before the listener, so the first session records its statements.
    let stop = tokio_util::sync::CancellationToken::new();
    let name = replica_name(&proxy.config().instance_name, addr);
    let (telemetry, writer) =
        crate::telemetry::Telemetry::start(&proxy.config().telemetry, &name, stop.clone()).await?;
    proxy.set_telemetry(telemetry);
    let cfg = proxy.config();
    let advertise = if cfg.redis.advertise.is_empty() {
        addr.to_string()
    } else {
        cfg.redis.advertise.clone()
    };
    let limits = crate::limits::Limits::start(
        &cfg.redis,
        cfg.limits.enforce_plans,
        &name,
        &advertise,
        proxy.shutdown_token(),
    )?;
    proxy.set_limits(limits);
    let tracker = TaskTracker::new();
    tasks.push(tokio::spawn(listener::run(
        proxy.clone(),
        listener,
        tracker.clone(),
    )));
    let reaper = proxy.clone();
    tasks.push(tokio::spawn(async move {
        let token = reaper.shutdown_token();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = token.cancelled() => break,
                _ = tick.tick() => reaper.pools().reap(),
            }
        }
    }));
    info!(%addr, "tenantgate listening");
    Ok(Running {
        addr,
        proxy,
        tracker,
        tasks,
        telemetry: Some((stop, writer)),
    })
}

/// This replica's name on telemetry events: `instance_name`, else `host:port`.
fn replica_name(configured: &str, addr: SocketAddr) -> String {
    if !configured.is_empty() {
        return configured.to_owned();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "tenantgate".into());
    format!("{host}:{}", addr.port())
}

impl Running {
    /// Drain and stop (steps in the module docs).
    pub async fn shutdown(mut self) {
        let limit = Duration::from_millis(self.proxy.config().limits.shutdown_timeout_ms);
        self.proxy.shutdown();
        for t in self.tasks {
            let _ = t.await;
        }
        self.tracker.close();
        if tokio::time::timeout(limit, self.tracker.wait())
            .await
            .is_err()
        {
            warn!("shutdown timeout reached; closing remaining clients");
        }
        self.proxy.pools().close_idle();
        if let Some((stop, writer)) = self.telemetry.take() {
            stop.cancel();
            // Bounded: events not written by then are in the spool only if MongoDB failed
            // fast; a hung MongoDB must not hang shutdown.
            if tokio::time::timeout(Duration::from_secs(30), writer)
                .await
                .is_err()
            {
                warn!("telemetry writer did not finish in 30 s; stopping without it");
            }
        }
        // Let the spawned Terminate messages go out.
        tokio::time::sleep(Duration::from_millis(50)).await;
        info!("tenantgate stopped");
    }
}

/// Run until SIGTERM/SIGINT; SIGHUP reloads the config.
pub async fn run(cfg: Config, config_path: Option<PathBuf>) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let running = start(cfg, config_path).await?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    loop {
        tokio::select! {
            _ = hup.recv() => {
                let result = running.proxy.reload();
                if let Some(t) = running.proxy.telemetry() {
                    let ok = result.is_ok();
                    t.audit("SIGHUP", "reload", serde_json::json!({"ok": ok}));
                }
                if let Err(e) = result {
                    error!(error = %e, "reload failed; keeping the running configuration");
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    info!("shutting down");
    running.shutdown().await;
    Ok(())
}
