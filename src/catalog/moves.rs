//! Online tenant moves between PostgreSQL instances.
//!
//! 1. Checks: the target is reachable and has no such schema, the source has
//!    `wal_level = logical`, no other move of the tenant is open (recorded in
//!    `tenantgate.tenant_moves`).
//! 2. Copy: the tenant's backend role (same password) and its schema DDL (`pg_dump
//!    --schema-only`, grants included) on the target; tables without a primary key get
//!    `REPLICA IDENTITY FULL` on the source so their updates and deletes replicate; then a
//!    publication `FOR TABLES IN SCHEMA` on the source and a subscription on the target copy
//!    the data and stream changes while the tenant keeps working.
//! 3. Cutover: the tenant is paused through the catalog (every proxy replica holds its new
//!    transactions; other tenants never pause), its running transactions finish, the
//!    target catches up until row counts and checksums of every table match, sequences are
//!    set, the subscription is dropped, and the placement is switched and the tenant
//!    resumed in one catalog transaction. The pause time is reported.
//! 4. The source schema is kept, renamed `<schema>_moved_<id>` and read-only, until
//!    `cleanup`. Any failure before the switch rolls back: the tenant is resumed where it
//!    was, the publication, subscription and target schema are removed.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio_postgres::Client;

use super::store::{audit, db_message, not_set_up, Catalog, CatalogError};
use crate::backend::server::{quote_ident, quote_literal};

/// How a move went.
#[derive(Debug, Clone)]
pub struct MoveReport {
    pub tenant: String,
    pub from: String,
    pub to: String,
    pub tables: usize,
    pub rows: i64,
    pub copy_time: Duration,
    pub pause_time: Duration,
    pub total: Duration,
    pub kept_schema: String,
}

/// Limits of the waits of a move.
#[derive(Debug, Clone)]
pub struct MoveOptions {
    /// Initial copy of all tables.
    pub copy_timeout: Duration,
    /// Running transactions finishing after the pause, and the target catching up.
    pub cutover_timeout: Duration,
}

impl Default for MoveOptions {
    fn default() -> Self {
        MoveOptions {
            copy_timeout: Duration::from_secs(3600),
            cutover_timeout: Duration::from_secs(30),
        }
    }
}

/// How often a running move says it is alive, and after how long without that a proxy
/// rolls it back.
const HEARTBEAT: Duration = Duration::from_secs(2);
pub const STALE_AFTER_SECS: i64 = 30;

/// Roll back moves whose mover stopped (its process died): the tenants resume where they
/// were. Returns the tenants rolled back. Proxies run this periodically.
pub async fn abort_stale(cat: &Catalog) -> Result<Vec<String>, CatalogError> {
    let conn = cat.pool().get().await?;
    let stale: Vec<String> = conn
        .query(
            "SELECT tenant FROM tenantgate.tenant_moves
              WHERE finished_at IS NULL AND heartbeat_at < now() - make_interval(secs => $1)",
            &[&(STALE_AFTER_SECS as f64)],
        )
        .await
        .map_err(not_set_up)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    drop(conn);
    let mut out = Vec::new();
    for t in stale {
        match abort(cat, &t).await {
            Ok(true) => out.push(t),
            Ok(false) => {}
            Err(e) => tracing::warn!(tenant = %t, error = %e, "stale move not fully rolled back"),
        }
    }
    Ok(out)
}

fn refused(m: impl Into<String>) -> CatalogError {
    CatalogError::Refused(m.into())
}

fn db(what: &str) -> impl Fn(tokio_postgres::Error) -> CatalogError + '_ {
    move |e| refused(format!("{what}: {}", db_message(&e)))
}

struct Plan {
    id: i64,
    key: String,
    schema: String,
    role: String,
    password: String,
    from: String,
    to: String,
    from_url: String,
    to_url: String,
    name: String,
}

impl Plan {
    fn slot(&self) -> String {
        format!("tg_move_{}_{}", self.key, self.id)
    }
}

/// Move `key` to instance `to` online. `progress` gets one line per step.
pub async fn move_tenant(
    cat: &Catalog,
    key: &str,
    to: &str,
    actor: &str,
    opts: &MoveOptions,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<MoveReport, CatalogError> {
    let started = Instant::now();
    let plan = prepare(cat, key, to).await?;
    progress(&format!("moving {key} from {} to {to}", plan.from));
    let src = connect(
        cat,
        &plan,
        &plan.from_url,
        &format!("source instance {}", plan.from),
    )
    .await?;
    let dst = connect(cat, &plan, &plan.to_url, &format!("target instance {to}")).await?;
    // While this runs, the move's heartbeat says its mover is alive.
    let beat = {
        let (cat, id) = (cat.clone(), plan.id);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(HEARTBEAT).await;
                if let Ok(c) = cat.pool().get().await {
                    let _ = c
                        .execute(
                            "UPDATE tenantgate.tenant_moves SET heartbeat_at = now() WHERE id = $1",
                            &[&id],
                        )
                        .await;
                }
            }
        })
    };
    let outcome = copy_and_cutover(cat, &plan, &src, &dst, actor, opts, progress, started).await;
    beat.abort();
    match outcome {
        Ok(r) => Ok(r),
        Err((e, created_schema)) => {
            progress(&format!(
                "move failed: {e}; rolling back, {key} stays on {}",
                plan.from
            ));
            rollback(cat, &plan, &src, &dst, created_schema).await;
            finish(cat, &plan, "failed", json!({"error": e.to_string()})).await;
            Err(e)
        }
    }
}

/// A connection to one of the move's instances; when it fails, the move is recorded as
/// failed (nothing was changed yet).
async fn connect(cat: &Catalog, p: &Plan, url: &str, what: &str) -> Result<Client, CatalogError> {
    match cat.instance_client(url).await {
        Ok(c) => Ok(c),
        Err(e) => {
            let error = format!("{what} is unreachable: {e}");
            finish(cat, p, "failed", json!({ "error": error })).await;
            Err(refused(error))
        }
    }
}

async fn prepare(cat: &Catalog, key: &str, to: &str) -> Result<Plan, CatalogError> {
    let conn = cat.pool().get().await?;
    let row = conn
        .query_opt(
            "SELECT schema_name, backend_role, backend_secret, instance FROM tenantgate.tenants WHERE key = $1",
            &[&key],
        )
        .await
        .map_err(not_set_up)?
        .ok_or_else(|| CatalogError::NotFound(format!("tenant {key} does not exist")))?;
    let from: String = row.get(3);
    if from == to {
        return Err(CatalogError::Invalid(format!(
            "tenant {key} is already on {to}"
        )));
    }
    let secret: Vec<u8> = row.get(2);
    let password =
        String::from_utf8(cat.key().open(&secret)?).map_err(|_| refused("bad secret"))?;
    let from_url = cat.instance_url(&from).await?;
    let to_url = cat.instance_url(to).await?;
    let id: i64 = conn
        .query_one(
            "INSERT INTO tenantgate.tenant_moves (tenant, from_instance, to_instance, state)
             VALUES ($1, $2, $3, 'copying') RETURNING id",
            &[&key, &from, &to],
        )
        .await
        .map_err(|e| {
            if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
                refused(format!("a move of {key} is unfinished; run `tenantgate tenant move {key} --abort` first"))
            } else {
                not_set_up(e)
            }
        })?
        .get(0);
    let (_, _, name) = super::store::instance_address(&to_url)?;
    Ok(Plan {
        id,
        key: key.to_owned(),
        schema: row.get(0),
        role: row.get(1),
        password,
        from,
        to: to.to_owned(),
        from_url,
        to_url,
        name,
    })
}

#[allow(clippy::too_many_arguments)]
async fn copy_and_cutover(
    cat: &Catalog,
    p: &Plan,
    src: &Client,
    dst: &Client,
    actor: &str,
    opts: &MoveOptions,
    progress: &(dyn Fn(&str) + Sync),
    started: Instant,
) -> Result<MoveReport, (CatalogError, bool)> {
    let keep = |e: CatalogError| (e, false);
    let wal: String = src
        .query_one("SHOW wal_level", &[])
        .await
        .map_err(db("source"))
        .map_err(keep)?
        .get(0);
    if wal != "logical" {
        return Err(keep(refused(format!(
            "source instance {} has wal_level = {wal}; moves need logical",
            p.from
        ))));
    }
    let exists = dst
        .query_opt(
            "SELECT 1 FROM pg_namespace WHERE nspname = $1",
            &[&p.schema],
        )
        .await
        .map_err(db("target"))
        .map_err(keep)?
        .is_some();
    if exists {
        return Err(keep(refused(format!(
            "target instance {} already has schema {}",
            p.to, p.schema
        ))));
    }
    // From here on the target schema is ours to remove on failure.
    let made = |e: CatalogError| (e, true);
    let role = quote_ident(&p.role);
    dst.batch_execute(&format!(
        "DO $tg$BEGIN
           IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {r}) THEN
             CREATE ROLE {role} LOGIN NOSUPERUSER NOINHERIT PASSWORD {pw};
           ELSE ALTER ROLE {role} PASSWORD {pw}; END IF; END$tg$;
         GRANT CONNECT ON DATABASE {db} TO {role};",
        r = quote_literal(&p.role),
        pw = quote_literal(&p.password),
        db = quote_ident(&p.name),
    ))
    .await
    .map_err(db("target role"))
    .map_err(keep)?;
    progress("copying the schema (pg_dump --schema-only)");
    let ddl = tokio::process::Command::new("pg_dump")
        .args([
            "--schema-only",
            "--no-publications",
            "--no-subscriptions",
            "-n",
        ])
        .arg(&p.schema)
        .arg(&p.from_url)
        .output()
        .await
        .map_err(|e| keep(refused(format!("pg_dump: {e}"))))?;
    if !ddl.status.success() {
        return Err(keep(refused(format!(
            "pg_dump: {}",
            String::from_utf8_lossy(&ddl.stderr).trim()
        ))));
    }
    // pg_dump may emit psql meta-commands (`\restrict`); they are not SQL.
    let sql: String = String::from_utf8_lossy(&ddl.stdout)
        .lines()
        .filter(|l| !l.starts_with('\\'))
        .collect::<Vec<_>>()
        .join("\n");
    dst.batch_execute(&sql)
        .await
        .map_err(db("target schema"))
        .map_err(made)?;
    let schema = quote_ident(&p.schema);
    // Tables without a primary key replicate updates and deletes by whole row.
    let no_pk: Vec<String> = src
        .query(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = $1 AND c.relkind = 'r'
                AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)",
            &[&p.schema],
        )
        .await
        .map_err(db("source"))
        .map_err(made)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for t in &no_pk {
        src.batch_execute(&format!(
            "ALTER TABLE {schema}.{} REPLICA IDENTITY FULL",
            quote_ident(t)
        ))
        .await
        .map_err(db("replica identity"))
        .map_err(made)?;
    }
    let slot = p.slot();
    src.batch_execute(&format!(
        "CREATE PUBLICATION {slot} FOR TABLES IN SCHEMA {schema}"
    ))
    .await
    .map_err(db("source publication"))
    .map_err(made)?;
    let copy_start = Instant::now();
    dst.batch_execute(&format!(
        "CREATE SUBSCRIPTION {slot} CONNECTION {} PUBLICATION {slot}",
        quote_literal(&p.from_url)
    ))
    .await
    .map_err(db("target subscription (replication slots?)"))
    .map_err(made)?;
    set_state(cat, p, "syncing").await;
    // Initial copy: every table reaches 'r' (ready).
    let deadline = Instant::now() + opts.copy_timeout;
    let mut last = String::new();
    loop {
        let r = dst
            .query_one(
                "SELECT count(*) FILTER (WHERE r.srsubstate = 'r'), count(*)
                   FROM pg_subscription_rel r JOIN pg_subscription s ON s.oid = r.srsubid
                  WHERE s.subname = $1",
                &[&slot],
            )
            .await
            .map_err(db("target"))
            .map_err(made)?;
        let (ready, all): (i64, i64) = (r.get(0), r.get(1));
        let line = format!("initial copy: {ready}/{all} tables ready");
        if line != last {
            progress(&line);
            last = line;
        }
        if all > 0 && ready == all {
            break;
        }
        if Instant::now() > deadline {
            return Err(made(refused("initial copy did not finish in time")));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let copy_time = copy_start.elapsed();
    // Cutover: pause only this tenant, let its transactions finish, catch up, verify.
    set_paused(cat, &p.key, true).await.map_err(made)?;
    let pause_start = Instant::now();
    progress(&format!(
        "{} paused; waiting for its running transactions",
        p.key
    ));
    let cut_deadline = Instant::now() + opts.cutover_timeout;
    let mut quiet_checks = 0;
    while quiet_checks < 2 {
        let busy: i64 = src
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                  WHERE usename = $1 AND xact_start IS NOT NULL AND pid <> pg_backend_pid()",
                &[&p.role],
            )
            .await
            .map_err(db("source"))
            .map_err(made)?
            .get(0);
        quiet_checks = if busy == 0 { quiet_checks + 1 } else { 0 };
        if Instant::now() > cut_deadline {
            return Err(made(refused(
                "the tenant's transactions did not finish in time",
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Nothing may write to the source from here on, whatever a replica or a session-mode
    // client still holds: take the tenant's write privileges and end its server sessions.
    src.batch_execute(&format!(
        "REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA {schema} FROM {role};
         SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE usename = {r} AND pid <> pg_backend_pid();",
        r = quote_literal(&p.role)
    ))
    .await
    .map_err(db("source write freeze"))
    .map_err(made)?;
    let (tables, rows) = loop {
        let (a, b) = tokio::join!(checksums(src, &p.schema), checksums(dst, &p.schema));
        let (a, b) = (a.map_err(made)?, b.map_err(made)?);
        if a == b {
            break (a.len(), a.iter().map(|t| t.1).sum::<i64>());
        }
        if Instant::now() > cut_deadline {
            let diff: Vec<&String> = a
                .iter()
                .zip(&b)
                .filter(|(x, y)| x != y)
                .map(|(x, _)| &x.0)
                .collect();
            return Err(made(refused(format!(
                "source and target differ after catch-up: {diff:?}"
            ))));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    progress(&format!(
        "verified: {tables} tables, {rows} rows, checksums equal"
    ));
    copy_sequences(src, dst, &p.schema).await.map_err(made)?;
    dst.batch_execute(&format!("DROP SUBSCRIPTION {slot}"))
        .await
        .map_err(db("drop subscription"))
        .map_err(made)?;
    // Switch and resume in one catalog transaction.
    let kept = format!("{}_moved_{}", p.schema, p.id);
    let pause_time;
    {
        let mut conn = cat.pool().get().await.map_err(|e| made(e.into()))?;
        let tx = conn.transaction().await.map_err(|e| made(e.into()))?;
        pause_time = pause_start.elapsed();
        let detail = json!({
            "tables": tables, "rows": rows, "copy_ms": copy_time.as_millis() as u64,
            "pause_ms": pause_time.as_millis() as u64, "kept_schema": kept,
        });
        // Only a move nobody has rolled back meanwhile may switch.
        let claimed = tx
            .execute(
                "UPDATE tenantgate.tenant_moves SET state = 'done', finished_at = now(), detail = $2::text::jsonb
                  WHERE id = $1 AND finished_at IS NULL",
                &[&p.id, &detail.to_string()],
            )
            .await
            .map_err(|e| made(e.into()))?;
        if claimed == 0 {
            return Err(made(refused(
                "the move was rolled back meanwhile (its heartbeat lapsed)",
            )));
        }
        tx.execute(
            "UPDATE tenantgate.tenants SET instance = $2, paused = false, updated_at = now() WHERE key = $1",
            &[&p.key, &p.to],
        )
        .await
        .map_err(|e| made(e.into()))?;
        audit(
            &tx,
            actor,
            "tenant.move",
            Some(&p.key),
            json!({"from": p.from, "to": p.to, "pause_ms": pause_time.as_millis() as u64}),
        )
        .await
        .map_err(made)?;
        tx.commit().await.map_err(|e| made(e.into()))?;
    }
    progress(&format!(
        "switched {} to {} (paused {} ms)",
        p.key,
        p.to,
        pause_time.as_millis()
    ));
    // The source copy stays, renamed and read-only, until cleanup.
    let cleanup = format!(
        "DROP PUBLICATION IF EXISTS {slot};
         ALTER SCHEMA {schema} RENAME TO {k};
         REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA {k} FROM {role};",
        k = quote_ident(&kept)
    );
    if let Err(e) = src.batch_execute(&cleanup).await {
        progress(&format!("warning: source not renamed: {}", db_message(&e)));
    }
    Ok(MoveReport {
        tenant: p.key.clone(),
        from: p.from.clone(),
        to: p.to.clone(),
        tables,
        rows,
        copy_time,
        pause_time,
        total: started.elapsed(),
        kept_schema: kept,
    })
}

/// (table, rows, checksum) per table of a schema. The checksum is the sum of a hash of
/// every row's text: order-independent, one pass, no sort (it runs while the tenant is
/// paused).
async fn checksums(c: &Client, schema: &str) -> Result<Vec<(String, i64, String)>, CatalogError> {
    let tables: Vec<String> = c
        .query(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = $1 AND c.relkind = 'r' ORDER BY 1",
            &[&schema],
        )
        .await
        .map_err(db("checksum"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut out = Vec::new();
    for t in tables {
        let q = format!(
            "SELECT count(*), coalesce(sum(hashtext(x::text)::bigint), 0)::text FROM {}.{} x",
            quote_ident(schema),
            quote_ident(&t)
        );
        let r = c.query_one(q.as_str(), &[]).await.map_err(db("checksum"))?;
        out.push((t, r.get(0), r.get(1)));
    }
    Ok(out)
}

async fn copy_sequences(src: &Client, dst: &Client, schema: &str) -> Result<(), CatalogError> {
    let seqs: Vec<String> = src
        .query(
            "SELECT sequencename FROM pg_sequences WHERE schemaname = $1",
            &[&schema],
        )
        .await
        .map_err(db("sequences"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for s in seqs {
        let name = format!("{}.{}", quote_ident(schema), quote_ident(&s));
        let r = src
            .query_one(
                format!("SELECT last_value, is_called FROM {name}").as_str(),
                &[],
            )
            .await
            .map_err(db("sequence"))?;
        let (v, called): (i64, bool) = (r.get(0), r.get(1));
        dst.batch_execute(&format!(
            "SELECT setval({}, {v}, {called})",
            quote_literal(&name)
        ))
        .await
        .map_err(db("setval"))?;
    }
    Ok(())
}

async fn set_paused(cat: &Catalog, key: &str, paused: bool) -> Result<(), CatalogError> {
    cat.pool()
        .get()
        .await?
        .execute(
            "UPDATE tenantgate.tenants SET paused = $2 WHERE key = $1",
            &[&key, &paused],
        )
        .await?;
    Ok(())
}

async fn set_state(cat: &Catalog, p: &Plan, state: &str) {
    if let Ok(c) = cat.pool().get().await {
        let _ = c
            .execute(
                "UPDATE tenantgate.tenant_moves SET state = $2 WHERE id = $1",
                &[&p.id, &state],
            )
            .await;
    }
}

async fn finish(cat: &Catalog, p: &Plan, state: &str, detail: serde_json::Value) {
    if let Ok(c) = cat.pool().get().await {
        let _ = c
            .execute(
                "UPDATE tenantgate.tenant_moves SET state = $2, finished_at = now(), detail = $3::text::jsonb WHERE id = $1",
                &[&p.id, &state, &detail.to_string()],
            )
            .await;
    }
}

/// Undo a move that did not switch: resume the tenant where it is, remove what was made.
async fn rollback(cat: &Catalog, p: &Plan, src: &Client, dst: &Client, created_schema: bool) {
    // Writes back first (harmless when they were never taken), then resume.
    let _ = src
        .batch_execute(&format!(
            "GRANT ALL ON ALL TABLES IN SCHEMA {} TO {}",
            quote_ident(&p.schema),
            quote_ident(&p.role)
        ))
        .await;
    let _ = set_paused(cat, &p.key, false).await;
    let slot = p.slot();
    let _ = dst
        .batch_execute(&format!(
            "ALTER SUBSCRIPTION {slot} DISABLE; ALTER SUBSCRIPTION {slot} SET (slot_name = NONE)"
        ))
        .await;
    let _ = dst
        .batch_execute(&format!("DROP SUBSCRIPTION IF EXISTS {slot}"))
        .await;
    let _ = src
        .batch_execute(&format!(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = {}",
            quote_literal(&slot)
        ))
        .await;
    let _ = src
        .batch_execute(&format!("DROP PUBLICATION IF EXISTS {slot}"))
        .await;
    if created_schema {
        let _ = dst
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {} CASCADE",
                quote_ident(&p.schema)
            ))
            .await;
    }
}

/// Roll back an unfinished move (the mover died): the tenant resumes where it was.
pub async fn abort(cat: &Catalog, key: &str) -> Result<bool, CatalogError> {
    let conn = cat.pool().get().await?;
    // Claim the open move: whoever finishes it first (the mover's switch or an abort) wins.
    let Some(row) = conn
        .query_opt(
            "UPDATE tenantgate.tenant_moves m SET finished_at = now(), state = 'aborted'
               FROM tenantgate.tenants t
              WHERE m.tenant = $1 AND m.finished_at IS NULL AND t.key = m.tenant
          RETURNING m.id, m.from_instance, m.to_instance, t.schema_name, t.backend_role, t.instance",
            &[&key],
        )
        .await
        .map_err(not_set_up)?
    else {
        return Ok(false);
    };
    drop(conn);
    // The tenant resumes before anything that could fail on an instance.
    set_paused(cat, key, false).await?;
    let to: String = row.get(2);
    let from: String = row.get(1);
    let current: String = row.get(5);
    let p = Plan {
        id: row.get(0),
        key: key.to_owned(),
        schema: row.get(3),
        role: row.get(4),
        password: String::new(),
        from: from.clone(),
        to: to.clone(),
        from_url: cat.instance_url(&from).await?,
        to_url: cat.instance_url(&to).await?,
        name: String::new(),
    };
    // The target schema is only removed when the tenant is not served from there.
    let switched = current == to;
    let src = cat.instance_client(&p.from_url).await?;
    if let Ok(dst) = cat.instance_client(&p.to_url).await {
        rollback(cat, &p, &src, &dst, !switched).await;
    }
    Ok(true)
}

/// Drop the source copies (`<schema>_moved_<id>`) kept by finished moves of `key`.
pub async fn cleanup(cat: &Catalog, key: &str) -> Result<Vec<String>, CatalogError> {
    let conn = cat.pool().get().await?;
    let rows = conn
        .query(
            "SELECT id, from_instance, detail->>'kept_schema' FROM tenantgate.tenant_moves
              WHERE tenant = $1 AND state = 'done' AND NOT (detail ? 'cleaned')",
            &[&key],
        )
        .await
        .map_err(not_set_up)?;
    let mut dropped = Vec::new();
    for r in rows {
        let (id, from, kept): (i64, String, Option<String>) = (r.get(0), r.get(1), r.get(2));
        let Some(kept) = kept else { continue };
        let c = cat.instance_client(&cat.instance_url(&from).await?).await?;
        c.batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {} CASCADE",
            quote_ident(&kept)
        ))
        .await?;
        conn.execute(
            "UPDATE tenantgate.tenant_moves SET detail = detail || '{\"cleaned\": true}' WHERE id = $1",
            &[&id],
        )
        .await?;
        dropped.push(format!("{from}:{kept}"));
    }
    Ok(dropped)
}
