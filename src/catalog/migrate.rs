//! Apply pending tenant migrations to every tenant schema: N tenants at a time, each tenant
//! in its own transaction (as the tenant's role, with its schema as search_path) with its
//! own version records, resumable, and a failure report that does not stop the others
//! unless `fail_fast`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bb8::Pool;
use bb8_postgres::PostgresConnectionManager;
use futures_util::StreamExt;

use super::migrations::Migration;
use super::store::{db_message, not_set_up, Catalog, CatalogError, PgPool};
use crate::backend::server::quote_ident;

/// How to run.
#[derive(Clone)]
pub struct MigrateOptions {
    pub concurrency: usize,
    pub fail_fast: bool,
    pub migrations: Vec<Migration>,
    /// Only these tenants (all when empty).
    pub only: Vec<String>,
}

/// The outcome for one tenant.
#[derive(Debug, Clone)]
pub enum TenantOutcome {
    UpToDate,
    Applied(Vec<String>),
    Failed { version: String, error: String },
    Skipped,
}

/// What a run did.
#[derive(Debug, Default)]
pub struct MigrateReport {
    pub tenants: usize,
    pub migrated: usize,
    pub versions_applied: usize,
    pub up_to_date: usize,
    pub skipped: usize,
    pub failed: Vec<(String, String, String)>,
    pub elapsed: Duration,
}

struct Target {
    key: String,
    schema: String,
    role: String,
    instance: String,
    done: HashSet<String>,
}

/// Run the migrations; `progress(tenant, outcome)` is called as each tenant finishes.
pub async fn migrate_all(
    catalog: &Catalog,
    opts: &MigrateOptions,
    progress: &(dyn Fn(&str, &TenantOutcome) + Sync),
) -> Result<MigrateReport, CatalogError> {
    let started = Instant::now();
    let targets = load_targets(catalog, &opts.only).await?;
    let mut pools: HashMap<String, PgPool> = HashMap::new();
    for t in &targets {
        if !pools.contains_key(&t.instance) {
            let url = catalog.instance_url(&t.instance).await?;
            let (config, tls) = super::conninfo::client_parts(&url)
                .map_err(|e| CatalogError::Invalid(format!("instance URL: {e}")))?;
            let pool = Pool::builder()
                .max_size(opts.concurrency.max(1) as u32)
                .error_sink(Box::new(super::store::LogErrors))
                .build(PostgresConnectionManager::new(config, tls))
                .await?;
            pools.insert(t.instance.clone(), pool);
        }
    }
    let same_db: HashSet<String> = {
        let mut s = HashSet::new();
        for name in pools.keys() {
            if catalog.instance_url(name).await? == catalog.url() {
                s.insert(name.clone());
            }
        }
        s
    };
    let stop = AtomicBool::new(false);
    let mut report = MigrateReport {
        tenants: targets.len(),
        ..Default::default()
    };
    // Owned targets: a stream of futures borrowing them is not `Send` for every lifetime,
    // which callers that spawn (the admin database) need.
    let results: Vec<(String, TenantOutcome)> = futures_util::stream::iter(targets)
        .map(|t| {
            let pool = pools[&t.instance].clone();
            let same = same_db.contains(&t.instance);
            let stop = &stop;
            async move {
                let outcome = if stop.load(Ordering::Relaxed) {
                    TenantOutcome::Skipped
                } else {
                    migrate_one(catalog, &pool, same, &t, &opts.migrations).await
                };
                if matches!(outcome, TenantOutcome::Failed { .. }) && opts.fail_fast {
                    stop.store(true, Ordering::Relaxed);
                }
                progress(&t.key, &outcome);
                (t.key, outcome)
            }
        })
        .buffer_unordered(opts.concurrency.max(1))
        .collect()
        .await;
    for (key, o) in results {
        match o {
            TenantOutcome::UpToDate => report.up_to_date += 1,
            TenantOutcome::Applied(v) => {
                report.migrated += 1;
                report.versions_applied += v.len();
            }
            TenantOutcome::Failed { version, error } => report.failed.push((key, version, error)),
            TenantOutcome::Skipped => report.skipped += 1,
        }
    }
    report.failed.sort();
    report.elapsed = started.elapsed();
    Ok(report)
}

async fn load_targets(catalog: &Catalog, only: &[String]) -> Result<Vec<Target>, CatalogError> {
    let conn = catalog.pool().get().await?;
    let rows = conn
        .query(
            "SELECT t.key, t.schema_name, t.backend_role, t.instance,
                    coalesce(array_agg(m.version) FILTER (WHERE m.version IS NOT NULL), '{}')
               FROM tenantgate.tenants t
               LEFT JOIN tenantgate.tenant_migrations m ON m.tenant = t.key
              WHERE cardinality($1::text[]) = 0 OR t.key = ANY ($1)
              GROUP BY t.key ORDER BY t.key",
            &[&only],
        )
        .await
        .map_err(not_set_up)?;
    if !only.is_empty() && rows.len() != only.len() {
        return Err(CatalogError::NotFound(
            "some of the named tenants do not exist".into(),
        ));
    }
    Ok(rows
        .iter()
        .map(|r| Target {
            key: r.get(0),
            schema: r.get(1),
            role: r.get(2),
            instance: r.get(3),
            done: r.get::<_, Vec<String>>(4).into_iter().collect(),
        })
        .collect())
}

async fn migrate_one(
    catalog: &Catalog,
    pool: &PgPool,
    same_db: bool,
    t: &Target,
    all: &[Migration],
) -> TenantOutcome {
    let pending: Vec<&Migration> = all
        .iter()
        .filter(|m| !t.done.contains(&m.version))
        .collect();
    if pending.is_empty() {
        return TenantOutcome::UpToDate;
    }
    let fail = |version: &str, e: String| TenantOutcome::Failed {
        version: version.to_owned(),
        error: e,
    };
    let mut conn = match pool.get().await {
        Ok(c) => c,
        Err(e) => return fail(&pending[0].version, format!("connect: {e}")),
    };
    let tx = match conn.transaction().await {
        Ok(tx) => tx,
        Err(e) => return fail(&pending[0].version, e.to_string()),
    };
    let prelude = format!(
        "SET LOCAL ROLE {}; SET LOCAL search_path = {};",
        quote_ident(&t.role),
        quote_ident(&t.schema)
    );
    if let Err(e) = tx.batch_execute(&prelude).await {
        return fail(&pending[0].version, db_message(&e));
    }
    for m in &pending {
        if let Err(e) = tx.batch_execute(&m.sql).await {
            return fail(&m.version, db_message(&e));
        }
    }
    let versions: Vec<String> = pending.iter().map(|m| m.version.clone()).collect();
    let record =
        "INSERT INTO tenantgate.tenant_migrations (tenant, version) SELECT $1, unnest($2::text[])";
    if same_db {
        // Versions recorded in the same transaction as the change.
        if let Err(e) = tx.batch_execute("RESET ROLE").await {
            return fail(&pending[0].version, db_message(&e));
        }
        if let Err(e) = tx.execute(record, &[&t.key, &versions]).await {
            return fail(&pending[0].version, db_message(&e));
        }
        if let Err(e) = tx.commit().await {
            return fail(&pending[0].version, db_message(&e));
        }
    } else {
        if let Err(e) = tx.commit().await {
            return fail(&pending[0].version, db_message(&e));
        }
        let rec = async {
            let c = catalog.pool().get().await?;
            c.execute(record, &[&t.key, &versions]).await?;
            Ok::<_, CatalogError>(())
        };
        if let Err(e) = rec.await {
            return fail(
                &pending[0].version,
                format!("applied, but recording the version failed: {e}"),
            );
        }
    }
    TenantOutcome::Applied(versions)
}
