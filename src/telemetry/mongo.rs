//! The MongoDB sink (official `mongodb` crate): raw events with a TTL index, minute and day
//! rollups recomputed from them by aggregation (`$merge`, so recomputing is idempotent and
//! late events from the spool are counted exactly once), and the audit collection.
//!
//! Collections: `events` (TTL on `ts`), `rollups_minute`, `rollups_day` (kept), `audit`.
//! Percentiles come from the `hist` bucket counts (MongoDB 6.0 has no `$percentile`).

use std::time::Duration;

use futures_util::TryStreamExt;
use mongodb::bson::{doc, Bson, DateTime, Document};
use mongodb::error::{Error, ErrorKind};
use mongodb::options::{ClientOptions, CollectionOptions, IndexOptions, WriteConcern};
use mongodb::{Client, Collection, Database, IndexModel};

use super::event::{EventDoc, NBUCKETS};
use super::rollup::{minute_of, Rollup, SlowQuery, Usage, DAY_MS, MINUTE_MS};

pub const EVENTS: &str = "events";
pub const MINUTES: &str = "rollups_minute";
pub const DAYS: &str = "rollups_day";
pub const AUDIT: &str = "audit";

/// MongoDB's duplicate key error.
const DUPLICATE_KEY: i32 = 11000;

#[derive(Clone)]
pub struct MongoSink {
    db: Database,
    events: Collection<Document>,
}

impl MongoSink {
    /// A client for `url` (no IO yet). `timeout` bounds server selection and connecting, so
    /// a down server fails calls quickly instead of stalling the writer.
    pub async fn new(url: &str, database: &str, timeout: Duration) -> Result<MongoSink, Error> {
        let mut opts = ClientOptions::parse(url).await?;
        opts.server_selection_timeout = Some(timeout);
        opts.connect_timeout = Some(timeout);
        opts.app_name.get_or_insert_with(|| "tenantgate".into());
        let db = Client::with_options(opts)?.database(database);
        // Journaled writes: an acknowledged event survives a mongod crash; the spool
        // holds it until then.
        let journaled = CollectionOptions::builder()
            .write_concern(WriteConcern::builder().journal(true).build())
            .build();
        Ok(MongoSink {
            events: db.collection_with_options(EVENTS, journaled),
            db,
        })
    }

    pub async fn ping(&self) -> Result<(), Error> {
        self.db.run_command(doc! { "ping": 1 }).await.map(|_| ())
    }

    /// Create the indexes (idempotent). Raw events expire after `retention_days`.
    pub async fn ensure_indexes(&self, retention_days: u64) -> Result<(), Error> {
        let ttl = IndexOptions::builder()
            .name("ts_ttl".to_owned())
            .expire_after(Duration::from_secs(retention_days.max(1) * 86_400))
            .build();
        let ev = &self.events;
        if let Err(e) = ev
            .create_index(
                IndexModel::builder()
                    .keys(doc! {"ts": 1})
                    .options(ttl.clone())
                    .build(),
            )
            .await
        {
            // IndexOptionsConflict: the retention changed; update the TTL in place.
            if !is_code(&e, 85) {
                return Err(e);
            }
            self.db
                .run_command(doc! {
                    "collMod": EVENTS,
                    "index": {"name": "ts_ttl", "expireAfterSeconds": (retention_days.max(1) * 86_400) as i64},
                })
                .await?;
        }
        ev.create_index(
            IndexModel::builder()
                .keys(doc! {"tenant": 1, "ts": 1})
                .build(),
        )
        .await?;
        ev.create_index(
            IndexModel::builder()
                .keys(doc! {"tenant": 1, "fp_hash": 1, "ts": 1})
                .build(),
        )
        .await?;
        for c in [MINUTES, DAYS] {
            self.db
                .collection::<Document>(c)
                .create_index(
                    IndexModel::builder()
                        .keys(doc! {"tenant": 1, "start": 1})
                        .build(),
                )
                .await?;
            self.db
                .collection::<Document>(c)
                .create_index(IndexModel::builder().keys(doc! {"start": 1}).build())
                .await?;
        }
        self.db
            .collection::<Document>(AUDIT)
            .create_index(IndexModel::builder().keys(doc! {"ts": 1}).build())
            .await?;
        Ok(())
    }

    /// Insert events; ones already present (same id, from an earlier attempt) are skipped.
    pub async fn insert(&self, events: &[EventDoc]) -> Result<(), Error> {
        if events.is_empty() {
            return Ok(());
        }
        let docs = events
            .iter()
            .map(to_document)
            .collect::<Result<Vec<_>, _>>()?;
        match self.events.insert_many(docs).ordered(false).await {
            Ok(_) => Ok(()),
            Err(e) if only_duplicates(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub async fn audit(&self, entry: Document) -> Result<(), Error> {
        self.db
            .collection::<Document>(AUDIT)
            .insert_one(entry)
            .await
            .map(|_| ())
    }

    /// Recompute the minute rollups of the minute starting at `minute_ms` from raw events.
    pub async fn recompute_minute(&self, minute_ms: i64) -> Result<(), Error> {
        let start = DateTime::from_millis(minute_ms);
        let end = DateTime::from_millis(minute_ms + MINUTE_MS);
        let mut group = doc! {
            "_id": "$tenant",
            "plan": {"$last": "$plan"},
            "count": {"$sum": 1},
            "errors": {"$sum": {"$cond": [{"$eq": [{"$type": "$sqlstate"}, "string"]}, 1, 0]}},
            "latency_sum_us": {"$sum": "$latency_us"},
            "latency_max_us": {"$max": "$latency_us"},
            "rows": {"$sum": "$rows"},
            "bytes_in": {"$sum": "$bytes_in"},
            "bytes_out": {"$sum": "$bytes_out"},
            "cost": {"$sum": "$cost"},
        };
        for i in 0..NBUCKETS {
            group.insert(
                format!("h{i}"),
                doc! {"$sum": {"$cond": [{"$eq": ["$lb", i as i32]}, 1, 0]}},
            );
        }
        let pipeline = vec![
            doc! {"$match": {"ts": {"$gte": start, "$lt": end}}},
            doc! {"$group": group},
        ];
        self.merge_rollups(&self.events, pipeline, start, MINUTES)
            .await
    }

    /// Recompute the day rollups of the day starting at `day_ms` from minute rollups.
    pub async fn recompute_day(&self, day_ms: i64) -> Result<(), Error> {
        let start = DateTime::from_millis(day_ms);
        let end = DateTime::from_millis(day_ms + DAY_MS);
        let mut group = doc! {
            "_id": "$tenant",
            "plan": {"$last": "$plan"},
            "latency_max_us": {"$max": "$latency_max_us"},
        };
        for f in [
            "count",
            "errors",
            "latency_sum_us",
            "rows",
            "bytes_in",
            "bytes_out",
            "cost",
        ] {
            group.insert(f, doc! {"$sum": format!("${f}")});
        }
        for i in 0..NBUCKETS {
            group.insert(
                format!("h{i}"),
                doc! {"$sum": {"$arrayElemAt": ["$hist", i as i32]}},
            );
        }
        let pipeline = vec![
            doc! {"$match": {"start": {"$gte": start, "$lt": end}}},
            doc! {"$sort": {"start": 1}},
            doc! {"$group": group},
        ];
        let minutes = self.db.collection::<Document>(MINUTES);
        self.merge_rollups(&minutes, pipeline, start, DAYS).await
    }

    /// Finish a rollup pipeline grouped by tenant: shape the documents and `$merge` them.
    async fn merge_rollups(
        &self,
        from: &Collection<Document>,
        pipeline: Vec<Document>,
        start: DateTime,
        into: &str,
    ) -> Result<(), Error> {
        let hist: Vec<Bson> = (0..NBUCKETS)
            .map(|i| Bson::String(format!("$h{i}")))
            .collect();
        let mut stages = pipeline;
        stages.push(doc! {"$project": {
            "_id": {"tenant": "$_id", "start": start},
            "tenant": "$_id",
            "start": start,
            "plan": 1, "count": 1, "errors": 1, "latency_sum_us": 1, "latency_max_us": 1,
            "rows": 1, "bytes_in": 1, "bytes_out": 1, "cost": 1,
            "hist": hist,
        }});
        stages.push(doc! {"$merge": {
            "into": into, "on": "_id", "whenMatched": "replace", "whenNotMatched": "insert",
        }});
        let mut cursor = from.aggregate(stages).await?;
        while cursor.try_next().await?.is_some() {}
        Ok(())
    }

    /// Per-tenant totals from minute rollups starting at or after `since_ms`.
    pub async fn usage(&self, tenant: Option<&str>, since_ms: i64) -> Result<Vec<Usage>, Error> {
        let mut filter = doc! {"start": {"$gte": DateTime::from_millis(minute_of(since_ms))}};
        if let Some(t) = tenant {
            filter.insert("tenant", t);
        }
        let mut cursor = self
            .db
            .collection::<Document>(MINUTES)
            .find(filter)
            .sort(doc! {"start": 1})
            .await?;
        let mut out: std::collections::BTreeMap<String, Usage> = Default::default();
        while let Some(d) = cursor.try_next().await? {
            let tenant = d.get_str("tenant").unwrap_or_default().to_owned();
            let u = out.entry(tenant.clone()).or_insert_with(|| Usage {
                tenant,
                plan: String::new(),
                totals: Rollup::default(),
            });
            d.get_str("plan")
                .unwrap_or_default()
                .clone_into(&mut u.plan);
            u.totals.merge(&rollup_of(&d));
        }
        Ok(out.into_values().collect())
    }

    /// Rollup documents of a tenant from a collection ([`MINUTES`] or [`DAYS`]).
    pub async fn rollups(
        &self,
        collection: &str,
        tenant: &str,
        since_ms: i64,
    ) -> Result<Vec<(i64, Rollup)>, Error> {
        let mut cursor = self
            .db
            .collection::<Document>(collection)
            .find(doc! {"tenant": tenant, "start": {"$gte": DateTime::from_millis(since_ms)}})
            .sort(doc! {"start": 1})
            .await?;
        let mut out = Vec::new();
        while let Some(d) = cursor.try_next().await? {
            let start = d.get_datetime("start").map_or(0, |t| t.timestamp_millis());
            out.push((start, rollup_of(&d)));
        }
        Ok(out)
    }

    /// Slowest fingerprints by mean latency among events since `since_ms`.
    pub async fn slow_queries(
        &self,
        tenant: Option<&str>,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<SlowQuery>, Error> {
        let mut filter = doc! {"ts": {"$gte": DateTime::from_millis(since_ms)}};
        if let Some(t) = tenant {
            filter.insert("tenant", t);
        }
        let pipeline = [
            doc! {"$match": filter},
            doc! {"$group": {
                "_id": {"tenant": "$tenant", "fp": "$fp_hash"},
                "fingerprint": {"$first": "$fingerprint"},
                "count": {"$sum": 1},
                "mean": {"$avg": "$latency_us"},
                "max": {"$max": "$latency_us"},
            }},
            doc! {"$sort": {"mean": -1}},
            doc! {"$limit": limit.max(1) as i64},
        ];
        let mut cursor = self.events.aggregate(pipeline).await?;
        let mut out = Vec::new();
        while let Some(d) = cursor.try_next().await? {
            let id = d.get_document("_id").cloned().unwrap_or_default();
            out.push(SlowQuery {
                tenant: id.get_str("tenant").unwrap_or_default().to_owned(),
                fp_hash: id.get_str("fp").unwrap_or_default().to_owned(),
                fingerprint: d.get_str("fingerprint").unwrap_or_default().to_owned(),
                count: num(&d, "count") as u64,
                mean_us: num(&d, "mean"),
                max_us: num(&d, "max") as u64,
            });
        }
        Ok(out)
    }

    /// Events stored for `tenant` (tests and reports).
    pub async fn count_events(&self, filter: Document) -> Result<u64, Error> {
        self.events.count_documents(filter).await
    }
}

/// The stored document of an event: its fields plus `ts` (a BSON date, for the TTL index
/// and range queries) and `lb` (its latency bucket).
pub fn to_document(ev: &EventDoc) -> Result<Document, Error> {
    let mut d = mongodb::bson::to_document(ev).map_err(|e| Error::custom(e.to_string()))?;
    d.insert("ts", DateTime::from_millis(ev.ts_ms));
    d.insert("lb", ev.bucket() as i32);
    Ok(d)
}

fn rollup_of(d: &Document) -> Rollup {
    let mut r = Rollup {
        count: num(d, "count") as u64,
        errors: num(d, "errors") as u64,
        latency_sum_us: num(d, "latency_sum_us") as u64,
        latency_max_us: num(d, "latency_max_us") as u64,
        rows: num(d, "rows") as u64,
        bytes_in: num(d, "bytes_in") as u64,
        bytes_out: num(d, "bytes_out") as u64,
        cost: num(d, "cost"),
        hist: vec![0; NBUCKETS],
    };
    if let Ok(h) = d.get_array("hist") {
        for (slot, b) in r.hist.iter_mut().zip(h) {
            *slot = bson_num(b) as u64;
        }
    }
    r
}

fn num(d: &Document, key: &str) -> f64 {
    d.get(key).map_or(0.0, bson_num)
}

fn bson_num(b: &Bson) -> f64 {
    match b {
        Bson::Int32(v) => f64::from(*v),
        Bson::Int64(v) => *v as f64,
        Bson::Double(v) => *v,
        _ => 0.0,
    }
}

fn is_code(e: &Error, code: i32) -> bool {
    matches!(&*e.kind, ErrorKind::Command(c) if c.code == code)
}

/// True when a failed insert_many failed only on ids already stored.
fn only_duplicates(e: &Error) -> bool {
    match &*e.kind {
        ErrorKind::InsertMany(m) => {
            m.write_concern_error.is_none()
                && m.write_errors
                    .as_ref()
                    .is_some_and(|w| w.iter().all(|w| w.code == DUPLICATE_KEY))
        }
        _ => false,
    }
}
