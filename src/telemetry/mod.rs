//! Telemetry: one event per statement (latency, rows, bytes, SQLSTATE, cost) recorded per
//! tenant, off the hot path; Prometheus metrics.
//!
//! The relay hands [`event::StmtEvent`]s to [`Telemetry::record`], which only queues them on a
//! bounded channel (a full queue drops and counts, it never blocks a query). The [`writer`]
//! task fingerprints them, prices them with the tenant's plan rates, and writes batches to
//! the sink: MongoDB ([`mongo`], with the [`spool`] file while MongoDB is down or slow) or
//! the [`embedded`] store when no MongoDB is configured.

pub mod embedded;
pub mod event;
pub mod fingerprint;
pub mod metrics;
pub mod mongo;
pub mod rollup;
pub mod spool;
pub mod writer;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::TelemetryConfig;
use event::StmtEvent;
use rollup::{Rollup, SlowQuery, Usage};

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("telemetry directory {0}: {1}")]
    Dir(String, std::io::Error),
    #[error("mongodb: {0}")]
    Mongo(#[from] mongodb::error::Error),
}

/// A message to the writer (built by [`Telemetry`] only).
pub enum Msg {
    Event(StmtEvent),
    Audit(serde_json::Value),
    /// Write everything queued before this, then answer.
    Flush(oneshot::Sender<()>),
}

/// Where events are stored (also what reports read).
#[derive(Clone)]
pub enum Store {
    Embedded(embedded::Embedded),
    Mongo(mongo::MongoSink),
}

/// Counters of the writer, readable by reports and tests.
#[derive(Debug, Default)]
pub struct Stats {
    pub queued: AtomicU64,
    pub written: AtomicU64,
    pub spooled: AtomicU64,
    pub replayed: AtomicU64,
    /// Dropped because the queue was full or closed.
    pub dropped_queue: AtomicU64,
    /// Dropped because the spool was full.
    pub dropped_spool: AtomicU64,
    pub spool_bytes: AtomicU64,
    /// 1 while the sink takes writes.
    pub sink_up: AtomicU64,
}

impl Stats {
    pub fn get(v: &AtomicU64) -> u64 {
        v.load(Ordering::Relaxed)
    }
}

/// Handle to telemetry (cheap to clone).
#[derive(Clone)]
pub struct Telemetry {
    inner: Arc<Inner>,
}

struct Inner {
    enabled: bool,
    tx: mpsc::Sender<Msg>,
    store: Store,
    stats: Arc<Stats>,
    dropped: ::metrics::Counter,
    /// Wakes the writer before its next tick (flush requests, a backlog).
    wake: Arc<tokio::sync::Notify>,
    capacity: usize,
    batch: usize,
}

impl Telemetry {
    /// Open the store and start the writer; it drains and stops when `shutdown` is
    /// cancelled. `proxy_name` names this replica on events.
    pub async fn start(
        cfg: &TelemetryConfig,
        proxy_name: &str,
        shutdown: CancellationToken,
    ) -> Result<(Telemetry, tokio::task::JoinHandle<()>), TelemetryError> {
        let dir = std::path::PathBuf::from(&cfg.dir);
        let store = if cfg.mongodb_url.is_empty() {
            let e =
                embedded::Embedded::open(&dir, cfg.embedded_max_bytes, cfg.embedded_minute_hours)
                    .map_err(|e| TelemetryError::Dir(cfg.dir.clone(), e))?;
            Store::Embedded(e)
        } else {
            let timeout = Duration::from_millis(cfg.mongodb_timeout_ms);
            Store::Mongo(
                mongo::MongoSink::new(&cfg.mongodb_url, &cfg.mongodb_database, timeout).await?,
            )
        };
        let (tx, rx) = mpsc::channel(cfg.queue_capacity);
        let stats = Arc::new(Stats::default());
        let w = writer::Writer::new(cfg, proxy_name, store.clone(), stats.clone())
            .map_err(|e| TelemetryError::Dir(cfg.dir.clone(), e))?;
        let wake = Arc::new(tokio::sync::Notify::new());
        let handle = tokio::spawn(w.run(rx, wake.clone(), shutdown));
        Ok((
            Telemetry {
                inner: Arc::new(Inner {
                    enabled: cfg.enabled,
                    tx,
                    store,
                    stats,
                    dropped: ::metrics::counter!(metrics::EVENTS_DROPPED, "reason" => "queue"),
                    wake,
                    capacity: cfg.queue_capacity,
                    batch: cfg.batch_size,
                }),
            },
            handle,
        ))
    }

    pub fn enabled(&self) -> bool {
        self.inner.enabled
    }

    /// Queue a statement event; never waits.
    pub fn record(&self, ev: StmtEvent) {
        if !self.inner.enabled {
            return;
        }
        match self.inner.tx.try_send(Msg::Event(ev)) {
            Ok(()) => {
                self.inner.stats.queued.fetch_add(1, Ordering::Relaxed);
                // A batch is waiting: write it now rather than at the next tick.
                if self.inner.capacity - self.inner.tx.capacity() >= self.inner.batch {
                    self.inner.wake.notify_one();
                }
            }
            Err(_) => {
                self.inner
                    .stats
                    .dropped_queue
                    .fetch_add(1, Ordering::Relaxed);
                self.inner.dropped.increment(1);
            }
        }
    }

    /// Record an admin action in the audit collection.
    pub fn audit(&self, actor: &str, action: &str, detail: serde_json::Value) {
        let entry = serde_json::json!({
            "ts_ms": event::epoch_ms(std::time::SystemTime::now()),
            "actor": actor,
            "action": action,
            "detail": detail,
        });
        if self.inner.tx.try_send(Msg::Audit(entry)).is_err() {
            tracing::warn!(%actor, %action, "audit entry not recorded: telemetry queue full");
        }
    }

    /// Wait until everything queued so far is written (to the sink or the spool).
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.inner.tx.send(Msg::Flush(tx)).await.is_ok() {
            self.inner.wake.notify_one();
            let _ = rx.await;
        }
    }

    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Per-tenant totals since `since_ms` (rollups).
    pub async fn usage(
        &self,
        tenant: Option<&str>,
        since_ms: i64,
    ) -> Result<Vec<Usage>, TelemetryError> {
        Ok(match &self.inner.store {
            Store::Embedded(e) => e.usage(tenant, since_ms),
            Store::Mongo(m) => m.usage(tenant, since_ms).await?,
        })
    }

    /// Minute rollups of a tenant since `since_ms`.
    pub async fn minutes(
        &self,
        tenant: &str,
        since_ms: i64,
    ) -> Result<Vec<(i64, Rollup)>, TelemetryError> {
        Ok(match &self.inner.store {
            Store::Embedded(e) => e.minutes(tenant, since_ms),
            Store::Mongo(m) => m.rollups(mongo::MINUTES, tenant, since_ms).await?,
        })
    }

    /// Day rollups of a tenant since `since_ms`.
    pub async fn days(
        &self,
        tenant: &str,
        since_ms: i64,
    ) -> Result<Vec<(i64, Rollup)>, TelemetryError> {
        Ok(match &self.inner.store {
            Store::Embedded(e) => e.days(tenant, since_ms),
            Store::Mongo(m) => m.rollups(mongo::DAYS, tenant, since_ms).await?,
        })
    }

    /// Slowest statement fingerprints since `since_ms`.
    pub async fn slow_queries(
        &self,
        tenant: Option<&str>,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<SlowQuery>, TelemetryError> {
        Ok(match &self.inner.store {
            Store::Embedded(e) => e.slow_queries(tenant, since_ms, limit),
            Store::Mongo(m) => m.slow_queries(tenant, since_ms, limit).await?,
        })
    }
}
