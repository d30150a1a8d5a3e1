//! The telemetry writer: one background task that turns statement events into stored
//! records and writes them in batches.
//!
//! With MongoDB: a batch is inserted with a timeout; when that fails, the batch and every
//! later one go to the spool (in order) until a background ping finds MongoDB back, then the
//! spool is replayed chunk by chunk before new batches go direct again. Minutes that got
//! events are recomputed into rollups every `rollup_interval_ms`. Embedded: batches are
//! appended to the embedded store. Spool and embedded file IO run on blocking threads.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::event::{self, EventDoc, StmtEvent, StmtText};
use super::fingerprint::{self, Fingerprint};
use super::metrics as names;
use super::mongo::MongoSink;
use super::rollup::{day_of, minute_of, MINUTE_MS};
use super::spool::Spool;
use super::{Msg, Stats, Store};
use crate::config::TelemetryConfig;
use crate::protocol::frame;

/// Spool chunks replayed per writer turn (new events keep flowing in between).
const REPLAY_CHUNKS_PER_TURN: usize = 8;

pub struct Writer {
    cfg: TelemetryConfig,
    proxy: String,
    run_id: String,
    seq: u64,
    store: Store,
    stats: Arc<Stats>,
    pending: Vec<EventDoc>,
    mongo: Option<MongoState>,
    labels: Labels,
}

/// MongoDB sink state.
struct MongoState {
    sink: MongoSink,
    spool: Option<Spool>,
    /// Inserts go direct (else to the spool).
    up: bool,
    probing: Arc<AtomicBool>,
    probe_ok: Arc<AtomicBool>,
    last_probe: Option<Instant>,
    indexes_ready: bool,
    dirty_minutes: BTreeSet<i64>,
    last_rollup: Instant,
    /// Events dropped (spool full) not yet reported in the audit collection.
    unreported_drops: u64,
}

impl Writer {
    pub fn new(
        cfg: &TelemetryConfig,
        proxy: &str,
        store: Store,
        stats: Arc<Stats>,
    ) -> std::io::Result<Writer> {
        let mongo = match &store {
            Store::Mongo(sink) => {
                let spool = Spool::open(std::path::Path::new(&cfg.dir), cfg.spool_max_bytes)?;
                stats
                    .spool_bytes
                    .store(spool.pending_bytes(), Ordering::Relaxed);
                if !spool.is_empty() {
                    info!(
                        bytes = spool.pending_bytes(),
                        "telemetry spool holds events to replay"
                    );
                }
                // Minutes the previous run may not have rolled up yet.
                let now = minute_of(event::epoch_ms(std::time::SystemTime::now()));
                Some(MongoState {
                    sink: sink.clone(),
                    spool: Some(spool),
                    up: false,
                    probing: Default::default(),
                    probe_ok: Default::default(),
                    last_probe: None,
                    indexes_ready: false,
                    dirty_minutes: (0..5).map(|i| now - i * MINUTE_MS).collect(),
                    last_rollup: Instant::now(),
                    unreported_drops: 0,
                })
            }
            Store::Embedded(_) => None,
        };
        Ok(Writer {
            cfg: cfg.clone(),
            proxy: proxy.to_owned(),
            run_id: format!("{:016x}", rand::random::<u64>()),
            seq: 0,
            store,
            stats,
            pending: Vec::new(),
            mongo,
            labels: Labels::new(cfg.top_tenants),
        })
    }

    /// The writer wakes every `flush_ms` (or when woken: a flush request, a backlog of a
    /// batch) and drains the queue then, so sessions never pay for waking it per event.
    pub async fn run(
        mut self,
        mut rx: mpsc::Receiver<Msg>,
        wake: Arc<tokio::sync::Notify>,
        shutdown: CancellationToken,
    ) {
        let tick =
            Duration::from_millis(self.cfg.flush_ms.min(self.cfg.rollup_interval_ms).min(1000));
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = wake.notified() => {}
                _ = shutdown.cancelled() => break,
            }
            let mut flushes = Vec::new();
            let mut closed = false;
            loop {
                match rx.try_recv() {
                    Ok(m) => {
                        self.take(m, &mut flushes);
                        if self.pending.len() >= self.cfg.batch_size {
                            self.flush().await;
                        }
                    }
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        closed = true;
                        break;
                    }
                }
            }
            self.flush().await;
            for f in flushes {
                let _ = f.send(());
            }
            self.maintain().await;
            if closed {
                break;
            }
        }
        // Shutdown: drain the queue, write, and roll up what was written.
        rx.close();
        let mut flushes = Vec::new();
        while let Ok(m) = rx.try_recv() {
            self.take(m, &mut flushes);
            if self.pending.len() >= self.cfg.batch_size {
                self.flush().await;
            }
        }
        self.flush().await;
        for f in flushes {
            let _ = f.send(());
        }
        if let Some(m) = self.mongo.as_mut() {
            m.last_rollup = Instant::now() - Duration::from_secs(3600);
        }
        self.maintain().await;
        info!(
            written = Stats::get(&self.stats.written),
            spooled_pending = Stats::get(&self.stats.spool_bytes),
            "telemetry writer stopped"
        );
    }

    fn take(&mut self, m: Msg, flushes: &mut Vec<tokio::sync::oneshot::Sender<()>>) {
        match m {
            Msg::Event(ev) => {
                let doc = self.make_doc(ev);
                self.labels.count(&doc);
                self.pending.push(doc);
            }
            Msg::Audit(entry) => self.audit(entry),
            Msg::Flush(tx) => flushes.push(tx),
        }
    }

    /// Fingerprint, price and identify an event.
    fn make_doc(&mut self, ev: StmtEvent) -> EventDoc {
        let ctx = &ev.ctx;
        let (text, ordinal) = match &ev.text {
            StmtText::Query { body, ordinal } => {
                (frame::parse_query(body).unwrap_or(body), *ordinal)
            }
            StmtText::Parse(body) => (frame::parse_parse(body).map_or(&b""[..], |m| m.query), 0),
            StmtText::Unknown => (&b""[..], 0),
        };
        let mut fps = self.fingerprints(text);
        let pick = (ordinal as usize).min(fps.len().saturating_sub(1));
        // `fingerprints` always returns at least one entry.
        let fp = fps.swap_remove(pick);
        self.seq += 1;
        EventDoc {
            id: format!("{}-{:x}", self.run_id, self.seq),
            tenant: ctx.tenant.clone(),
            plan: ctx.plan.clone(),
            user: ctx.user.clone(),
            app: ctx.application.clone(),
            session: ctx.session,
            proxy: self.proxy.clone(),
            pg_instance: ctx.pg_instance.clone(),
            kind: event::kind(&fp.sample).to_owned(),
            sample: fingerprint::cut(&fp.sample, self.cfg.sample_bytes).to_owned(),
            fingerprint: fp.text,
            fp_hash: fp.hash,
            ts_ms: event::epoch_ms(ev.start),
            latency_us: ev.latency_us,
            wait_us: ev.wait_us,
            rows: ev.rows,
            bytes_in: ev.bytes_in,
            bytes_out: ev.bytes_out,
            sqlstate: ev
                .sqlstate
                .map(|c| String::from_utf8_lossy(&c).into_owned()),
            cost: ctx
                .rates
                .cost(ev.latency_us, ev.rows, ev.bytes_in + ev.bytes_out),
        }
    }

    /// Fingerprints of a query string (one pass over the bytes: no cache needed, and
    /// statements with changing literals would defeat one).
    fn fingerprints(&mut self, text: &[u8]) -> Vec<Fingerprint> {
        fingerprint::fingerprints(&String::from_utf8_lossy(text))
    }

    fn audit(&mut self, entry: serde_json::Value) {
        match &self.store {
            Store::Embedded(e) => e.audit(entry),
            Store::Mongo(sink) => {
                let sink = sink.clone();
                tokio::spawn(async move {
                    let doc = match mongodb::bson::to_document(&entry) {
                        Ok(d) => d,
                        Err(e) => return warn!(error = %e, "audit entry not recorded"),
                    };
                    if let Err(e) = sink.audit(doc).await {
                        warn!(error = %e, audit = %entry, "audit entry not recorded in mongodb");
                    }
                });
            }
        }
    }

    /// Write the pending batch.
    async fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.pending);
        let n = batch.len() as u64;
        match &self.store {
            Store::Embedded(e) => {
                let e = e.clone();
                let res = tokio::task::spawn_blocking(move || e.append(&batch)).await;
                match res {
                    Ok(Ok(())) => self.written(n),
                    Ok(Err(err)) => self.dropped_on_error(n, &err.to_string()),
                    Err(err) => self.dropped_on_error(n, &err.to_string()),
                }
            }
            Store::Mongo(_) => self.flush_mongo(batch).await,
        }
    }

    async fn flush_mongo(&mut self, batch: Vec<EventDoc>) {
        let timeout = Duration::from_millis(self.cfg.mongodb_timeout_ms);
        let m = self.mongo.as_mut().expect("mongo store");
        let spooling = !m.up || m.spool.as_ref().is_some_and(|s| !s.is_empty());
        if !spooling {
            match tokio::time::timeout(timeout, m.sink.insert(&batch)).await {
                Ok(Ok(())) => {
                    for ev in &batch {
                        m.dirty_minutes.insert(minute_of(ev.ts_ms));
                    }
                    self.written(batch.len() as u64);
                    return;
                }
                Ok(Err(e)) => warn!(error = %e, "mongodb insert failed; spooling events"),
                Err(_) => warn!("mongodb insert timed out; spooling events"),
            }
            m.up = false;
            self.stats.sink_up.store(0, Ordering::Relaxed);
        }
        self.spool(batch).await;
    }

    async fn spool(&mut self, batch: Vec<EventDoc>) {
        let m = self.mongo.as_mut().expect("mongo store");
        let n = batch.len() as u64;
        let Some(res) = on_spool(&mut m.spool, &self.stats, move |s| s.append(&batch)).await else {
            return;
        };
        match res {
            Ok(refused) => {
                let refused = refused as u64;
                self.stats.spooled.fetch_add(n - refused, Ordering::Relaxed);
                ::metrics::counter!(names::EVENTS_SPOOLED).increment(n - refused);
                if refused > 0 {
                    m.unreported_drops += refused;
                    self.stats
                        .dropped_spool
                        .fetch_add(refused, Ordering::Relaxed);
                    ::metrics::counter!(names::EVENTS_DROPPED, "reason" => "spool_full")
                        .increment(refused);
                    warn!(dropped = refused, "telemetry spool is full; events dropped");
                }
            }
            Err(e) => {
                m.unreported_drops += n;
                self.dropped_on_error(n, &e.to_string());
            }
        }
    }

    fn written(&self, n: u64) {
        self.stats.written.fetch_add(n, Ordering::Relaxed);
        ::metrics::counter!(names::EVENTS_WRITTEN).increment(n);
    }

    fn dropped_on_error(&self, n: u64, error: &str) {
        self.stats.dropped_spool.fetch_add(n, Ordering::Relaxed);
        ::metrics::counter!(names::EVENTS_DROPPED, "reason" => "io_error").increment(n);
        warn!(dropped = n, %error, "telemetry events could not be stored");
    }

    /// Periodic work: probe a down MongoDB, replay the spool, roll up, relabel.
    async fn maintain(&mut self) {
        self.labels.maybe_relabel();
        let Some(m) = self.mongo.as_mut() else { return };
        let timeout = Duration::from_millis(self.cfg.mongodb_timeout_ms);
        if !m.up {
            if m.probe_ok.swap(false, Ordering::AcqRel) {
                if !m.indexes_ready {
                    let ready = tokio::time::timeout(
                        timeout * 5,
                        m.sink.ensure_indexes(self.cfg.retention_days),
                    )
                    .await;
                    match ready {
                        Ok(Ok(())) => m.indexes_ready = true,
                        Ok(Err(e)) => warn!(error = %e, "mongodb indexes not created yet"),
                        Err(_) => warn!("mongodb index creation timed out; will retry"),
                    }
                }
                if m.indexes_ready {
                    info!("mongodb is reachable; writing events there");
                    m.up = true;
                    self.stats.sink_up.store(1, Ordering::Relaxed);
                }
            } else if !m.probing.load(Ordering::Acquire)
                && m.last_probe
                    .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
            {
                m.last_probe = Some(Instant::now());
                m.probing.store(true, Ordering::Release);
                let (sink, probing, ok) = (m.sink.clone(), m.probing.clone(), m.probe_ok.clone());
                tokio::spawn(async move {
                    let up = matches!(tokio::time::timeout(timeout, sink.ping()).await, Ok(Ok(())));
                    ok.store(up, Ordering::Release);
                    probing.store(false, Ordering::Release);
                });
            }
        }
        ::metrics::gauge!(names::SINK_UP).set(if m.up { 1.0 } else { 0.0 });
        if m.up {
            self.replay().await;
        }
        self.rollups().await;
    }

    /// Replay spooled events (a few chunks per turn) while MongoDB takes them.
    async fn replay(&mut self) {
        let timeout = Duration::from_millis(self.cfg.mongodb_timeout_ms);
        let batch = self.cfg.batch_size;
        for _ in 0..REPLAY_CHUNKS_PER_TURN {
            let m = self.mongo.as_mut().expect("mongo store");
            if m.spool.as_ref().is_none_or(Spool::is_empty) {
                break;
            }
            let chunk = match on_spool(&mut m.spool, &self.stats, move |s| s.read(batch)).await {
                Some(Ok(c)) => c,
                Some(Err(e)) => return warn!(error = %e, "telemetry spool unreadable"),
                None => return,
            };
            match tokio::time::timeout(timeout, m.sink.insert(&chunk.events)).await {
                Ok(Ok(())) => {}
                _ => {
                    warn!("mongodb failed during spool replay; will retry");
                    m.up = false;
                    self.stats.sink_up.store(0, Ordering::Relaxed);
                    return;
                }
            }
            for ev in &chunk.events {
                m.dirty_minutes.insert(minute_of(ev.ts_ms));
            }
            let n = chunk.events.len() as u64;
            if chunk.corrupt > 0 {
                m.unreported_drops += chunk.corrupt;
                self.stats
                    .dropped_spool
                    .fetch_add(chunk.corrupt, Ordering::Relaxed);
                warn!(lines = chunk.corrupt, "unreadable spool lines skipped");
            }
            let res = on_spool(&mut m.spool, &self.stats, move |s| s.commit(&chunk))
                .await
                .expect("spool present");
            let done = m.spool.as_ref().is_none_or(Spool::is_empty);
            if let Err(e) = res {
                warn!(error = %e, "spool position not saved (events may be replayed again, harmlessly)");
            }
            self.stats.replayed.fetch_add(n, Ordering::Relaxed);
            self.written(n);
            ::metrics::counter!(names::EVENTS_REPLAYED).increment(n);
            if done {
                info!("telemetry spool replayed");
                break;
            }
        }
        let m = self.mongo.as_mut().expect("mongo store");
        if m.unreported_drops > 0 {
            let n = std::mem::take(&mut m.unreported_drops);
            self.audit(serde_json::json!({
                "ts_ms": event::epoch_ms(std::time::SystemTime::now()),
                "actor": self.proxy,
                "action": "telemetry_events_dropped",
                "detail": {"count": n},
            }));
        }
    }

    /// Recompute the rollups of minutes (and their days) that got events.
    async fn rollups(&mut self) {
        let Some(m) = self.mongo.as_mut() else { return };
        if !m.up
            || m.dirty_minutes.is_empty()
            || m.last_rollup.elapsed() < Duration::from_millis(self.cfg.rollup_interval_ms)
        {
            return;
        }
        m.last_rollup = Instant::now();
        let minutes = std::mem::take(&mut m.dirty_minutes);
        let mut days = BTreeSet::new();
        let now = minute_of(event::epoch_ms(std::time::SystemTime::now()));
        // Bounded: a MongoDB that stops answering must not stall the writer.
        let timeout = Duration::from_millis(self.cfg.mongodb_timeout_ms) * 5;
        for minute in minutes {
            let done = tokio::time::timeout(timeout, m.sink.recompute_minute(minute))
                .await
                .unwrap_or_else(|_| Err(mongodb::error::Error::custom("rollup timed out")));
            match done {
                Ok(()) => {
                    days.insert(day_of(minute));
                    // The open minute gets more events: compute it again next time.
                    if minute >= now {
                        m.dirty_minutes.insert(minute);
                    }
                }
                Err(e) => {
                    warn!(error = %e, "rollup failed; will retry");
                    m.dirty_minutes.insert(minute);
                }
            }
        }
        for day in days {
            match tokio::time::timeout(timeout, m.sink.recompute_day(day)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => warn!(error = %e, "day rollup failed"),
                Err(_) => warn!("day rollup timed out"),
            }
        }
    }
}

/// Run blocking spool IO on a blocking thread (the spool is moved there and back), then
/// publish its size. `None` when there is no spool.
async fn on_spool<T: Send + 'static>(
    slot: &mut Option<Spool>,
    stats: &Stats,
    f: impl FnOnce(&mut Spool) -> T + Send + 'static,
) -> Option<T> {
    let mut spool = slot.take()?;
    let (spool, out) = tokio::task::spawn_blocking(move || {
        let out = f(&mut spool);
        (spool, out)
    })
    .await
    .expect("spool task");
    stats
        .spool_bytes
        .store(spool.pending_bytes(), Ordering::Relaxed);
    ::metrics::gauge!(names::SPOOL_BYTES).set(spool.pending_bytes() as f64);
    *slot = Some(spool);
    Some(out)
}

/// Per-plan and top-N per-tenant metric labels.
struct Labels {
    top: usize,
    window: HashMap<String, u64>,
    labelled: HashMap<String, (::metrics::Counter, ::metrics::Counter)>,
    other: (::metrics::Counter, ::metrics::Counter),
    /// (plan, kind) → (queries, errors) counters.
    plans: PlanCounters,
    last: Instant,
}

/// Counters keyed by (plan, kind), looked up without allocating.
#[derive(Default)]
struct PlanCounters(HashMap<(String, String), (::metrics::Counter, ::metrics::Counter)>);

impl PlanCounters {
    fn get(&self, k: &(&str, &str)) -> Option<&(::metrics::Counter, ::metrics::Counter)> {
        // Few entries (plans × kinds): a scan beats hashing an owned key.
        self.0
            .iter()
            .find(|(key, _)| key.0 == k.0 && key.1 == k.1)
            .map(|(_, v)| v)
    }

    fn insert(&mut self, k: (String, String), v: (::metrics::Counter, ::metrics::Counter)) {
        self.0.insert(k, v);
    }
}

impl std::ops::Index<&(&str, &str)> for PlanCounters {
    type Output = (::metrics::Counter, ::metrics::Counter);
    fn index(&self, k: &(&str, &str)) -> &Self::Output {
        self.get(k).expect("inserted")
    }
}

impl Labels {
    fn new(top: usize) -> Self {
        Labels {
            top,
            window: HashMap::new(),
            labelled: HashMap::new(),
            other: Self::handles("_other"),
            plans: PlanCounters::default(),
            last: Instant::now(),
        }
    }

    fn handles(tenant: &str) -> (::metrics::Counter, ::metrics::Counter) {
        let t = tenant.to_owned();
        (
            ::metrics::counter!(names::TENANT_QUERIES, "tenant" => t.clone()),
            ::metrics::counter!(names::TENANT_QUERY_ERRORS, "tenant" => t),
        )
    }

    fn count(&mut self, ev: &EventDoc) {
        let (q, e) = match self.plans.get(&(ev.plan.as_str(), ev.kind.as_str())) {
            Some(h) => h,
            None => {
                let labels = [("plan", ev.plan.clone()), ("kind", ev.kind.clone())];
                let h = (
                    ::metrics::counter!(names::PLAN_QUERIES, &labels),
                    ::metrics::counter!(names::PLAN_QUERY_ERRORS, &labels),
                );
                self.plans.insert((ev.plan.clone(), ev.kind.clone()), h);
                &self.plans[&(ev.plan.as_str(), ev.kind.as_str())]
            }
        };
        q.increment(1);
        if ev.is_error() {
            e.increment(1);
        }
        match self.window.get_mut(ev.tenant.as_str()) {
            Some(n) => *n += 1,
            None => {
                self.window.insert(ev.tenant.clone(), 1);
            }
        }
        if !self.labelled.contains_key(&ev.tenant) && self.labelled.len() < self.top {
            self.labelled
                .insert(ev.tenant.clone(), Self::handles(&ev.tenant));
        }
        let (q, e) = self.labelled.get(&ev.tenant).unwrap_or(&self.other);
        q.increment(1);
        if ev.is_error() {
            e.increment(1);
        }
    }

    /// Every minute, label the busiest tenants of the last minute.
    fn maybe_relabel(&mut self) {
        if self.last.elapsed() < Duration::from_secs(60) {
            return;
        }
        self.last = Instant::now();
        let mut busiest: Vec<(String, u64)> = self.window.drain().collect();
        busiest.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        busiest.truncate(self.top);
        let keep: std::collections::HashSet<String> = busiest.into_iter().map(|b| b.0).collect();
        self.labelled.retain(|t, _| keep.contains(t));
        for t in keep {
            if let std::collections::hash_map::Entry::Vacant(v) = self.labelled.entry(t) {
                let h = Self::handles(v.key());
                v.insert(h);
            }
        }
    }
}
