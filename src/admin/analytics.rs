//! The reporting commands: tenants and plans from the catalog, usage and latency from the
//! telemetry rollups, active users and storage from each tenant's own schema, plan limits
//! from the limits counters, revenue from plan prices plus metered cost, and the tenant
//! migration runner with per-tenant progress notices.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use super::exec::{Answer, Ctx};
use crate::catalog::migrate::{migrate_all, MigrateOptions, TenantOutcome};
use crate::catalog::provision::TenantRow;
use crate::protocol::PgError;
use crate::telemetry::event::epoch_ms;

type Rows = Vec<Vec<Option<String>>>;

fn s(v: impl ToString) -> Option<String> {
    Some(v.to_string())
}

fn ms(us: f64) -> String {
    format!("{:.3}", us / 1000.0)
}

fn db_err(e: impl std::fmt::Display) -> PgError {
    PgError::admin_failed("08006", &format!("catalog: {e}"))
}

fn tele_err(e: crate::telemetry::TelemetryError) -> PgError {
    PgError::admin_failed("58000", &format!("telemetry store: {e}"))
}

/// `YYYY-MM-DD HH:MM:SS` UTC of epoch milliseconds.
pub fn timestamp(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The start of `since` ('7 days', '24 hours', '30 minutes', '2 weeks') before now.
pub fn since_ms(since: Option<&str>, default: Duration) -> Result<i64, PgError> {
    let d = match since {
        None => default,
        Some(text) => {
            let mut it = text.split_whitespace();
            let bad = || {
                PgError::admin_failed(
                    "22007",
                    &format!("interval {text:?} is not like '7 days', '24 hours' or '30 minutes'"),
                )
            };
            let n: u64 = it.next().and_then(|n| n.parse().ok()).ok_or_else(bad)?;
            let unit = it.next().unwrap_or("days").trim_end_matches('s');
            let secs = match unit {
                "minute" | "min" => 60,
                "hour" | "h" => 3600,
                "day" | "d" => 86_400,
                "week" => 7 * 86_400,
                "month" => 30 * 86_400,
                _ => return Err(bad()),
            };
            Duration::from_secs(n * secs)
        }
    };
    Ok(epoch_ms(SystemTime::now()) - d.as_millis() as i64)
}

/// The telemetry handle, or a clear error when it is not running.
fn telemetry<'a>(ctx: &'a Ctx<'_>) -> Result<&'a crate::telemetry::Telemetry, PgError> {
    ctx.proxy
        .telemetry()
        .ok_or_else(|| PgError::admin_failed("55000", "telemetry is not running"))
}

/// `Ok` when `key` (if any) is a tenant of the directory.
fn known(ctx: &Ctx<'_>, key: Option<&str>) -> Result<(), PgError> {
    match key {
        Some(k) if ctx.proxy.directory().tenant(k).is_none() => Err(PgError::unknown_tenant(k)),
        _ => Ok(()),
    }
}

async fn tenant_rows(ctx: &Ctx<'_>) -> Result<Vec<TenantRow>, PgError> {
    match ctx.proxy.catalog() {
        Some(c) => c.list_tenants().await.map_err(db_err),
        None => {
            let mut v: Vec<TenantRow> = ctx
                .proxy
                .directory()
                .tenants()
                .iter()
                .map(|t| TenantRow {
                    key: t.key.clone(),
                    display_name: t.key.clone(),
                    plan: t.plan.clone(),
                    status: t.status.as_str().into(),
                    instance: t.placement.instance.clone(),
                    schema: t.placement.schema.clone().unwrap_or_default(),
                    users: 0,
                    created_at: String::new(),
                })
                .collect();
            v.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(v)
        }
    }
}

pub async fn tenants(ctx: &Ctx<'_>) -> Result<Rows, PgError> {
    Ok(tenant_rows(ctx)
        .await?
        .into_iter()
        .map(|t| {
            vec![
                s(&t.key),
                s(&t.display_name),
                s(&t.plan),
                s(&t.status),
                s(&t.instance),
                s(&t.schema),
                s(t.users),
                (!t.created_at.is_empty()).then(|| t.created_at.clone()),
            ]
        })
        .collect())
}

pub async fn tenant(ctx: &Ctx<'_>, key: &str) -> Result<Rows, PgError> {
    let t = tenant_rows(ctx)
        .await?
        .into_iter()
        .find(|t| t.key == key)
        .ok_or_else(|| PgError::unknown_tenant(key))?;
    let live = ctx.proxy.directory().tenant(key);
    let mut out = vec![
        vec![s("key"), s(&t.key)],
        vec![s("name"), s(&t.display_name)],
        vec![s("plan"), s(&t.plan)],
        vec![s("status"), s(&t.status)],
        vec![s("instance"), s(&t.instance)],
        vec![s("schema"), s(&t.schema)],
        vec![s("login_users"), s(t.users)],
        vec![s("created_at"), s(&t.created_at)],
    ];
    if let Some(l) = live {
        out.push(vec![
            s("pool_mode"),
            s(format!("{:?}", l.pool_mode).to_lowercase()),
        ]);
        out.push(vec![s("pool_size"), s(l.pool_size)]);
        out.push(vec![
            s("queries_per_second"),
            s(l.limits.queries_per_second),
        ]);
        out.push(vec![s("queries_per_day"), s(l.limits.queries_per_day)]);
        out.push(vec![s("max_connections"), s(l.limits.max_connections)]);
    }
    out.push(vec![s("paused"), s(ctx.proxy.pools().is_paused(key))]);
    if let Some(l) = ctx.proxy.limits() {
        let u = l.usage(key).await;
        out.push(vec![s("connections"), s(u.connections)]);
        out.push(vec![s("queries_today"), s(u.queries_today)]);
    }
    Ok(out)
}

pub async fn plans(ctx: &Ctx<'_>) -> Result<Rows, PgError> {
    let conn = ctx.catalog()?.pool().get().await.map_err(db_err)?;
    let rows = conn
        .query(
            "SELECT key, display_name, array_to_string(aliases, ', '), monthly_price::text,
                    queries_per_second::text, queries_per_day::text, max_connections::text,
                    max_users::text, storage_gb::text, cost_per_ms::text, cost_per_row::text,
                    cost_per_kib::text
               FROM tenantgate.plans ORDER BY monthly_price, key",
            &[],
        )
        .await
        .map_err(db_err)?;
    Ok(rows
        .iter()
        .map(|r| (0..12).map(|i| r.get::<_, Option<String>>(i)).collect())
        .collect())
}

pub async fn instances(ctx: &Ctx<'_>) -> Result<Rows, PgError> {
    let conn = ctx.catalog()?.pool().get().await.map_err(db_err)?;
    let rows = conn
        .query(
            "SELECT i.name, i.url, i.dedicated, i.capacity,
                    (SELECT count(*) FROM tenantgate.tenants t WHERE t.instance = i.name)
               FROM tenantgate.instances i ORDER BY i.name",
            &[],
        )
        .await
        .map_err(db_err)?;
    Ok(rows
        .iter()
        .map(|r| {
            let name: String = r.get(0);
            let url: String = r.get(1);
            let address = crate::catalog::store::instance_address(&url)
                .map(|(h, p, d)| format!("{h}:{p}/{d}"))
                .unwrap_or_else(|_| "?".into());
            vec![
                s(&name),
                s(address),
                s(r.get::<_, bool>(2)),
                s(r.get::<_, i32>(3)),
                s(r.get::<_, i64>(4)),
                s(ctx.proxy.pools().instance_open(&name)),
            ]
        })
        .collect())
}

pub fn stats(ctx: &Ctx<'_>) -> Rows {
    let p = ctx.proxy;
    let mut out = vec![
        vec![s("clients"), s(p.clients())],
        vec![s("server_connections_in_use"), s(p.pools().busy(None))],
        vec![s("pools"), s(p.pools().stats().len())],
        vec![s("tenants"), s(p.directory().tenants().len())],
    ];
    let checkouts: u64 = p.pools().stats().iter().map(|s| s.acquired).sum();
    out.push(vec![s("server_checkouts"), s(checkouts)]);
    if let Some(t) = p.telemetry() {
        use crate::telemetry::Stats;
        let st = t.stats();
        for (k, v) in [
            ("events_queued", &st.queued),
            ("events_written", &st.written),
            ("events_spooled", &st.spooled),
            ("events_replayed", &st.replayed),
            ("events_dropped_queue", &st.dropped_queue),
            ("events_dropped_spool", &st.dropped_spool),
            ("spool_bytes", &st.spool_bytes),
            ("telemetry_sink_up", &st.sink_up),
        ] {
            out.push(vec![s(k), s(Stats::get(v))]);
        }
    }
    if let Some(l) = p.limits() {
        out.push(vec![
            s("redis_up"),
            s(l.shared()
                .map_or("not configured".to_string(), |s| s.is_up().to_string())),
        ]);
    }
    out
}

/// The effective configuration, flattened, with secrets hidden.
pub fn config(ctx: &Ctx<'_>) -> Rows {
    let cfg = ctx.proxy.config();
    let value = toml::Value::try_from(&*cfg).unwrap_or(toml::Value::Table(Default::default()));
    let mut out = Vec::new();
    flatten("", &value, &mut out);
    out.into_iter().map(|(k, v)| vec![s(k), s(v)]).collect()
}

fn flatten(prefix: &str, v: &toml::Value, out: &mut Vec<(String, String)>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        toml::Value::Array(a) if a.iter().any(|x| x.is_table()) => {
            for (i, x) in a.iter().enumerate() {
                flatten(&format!("{prefix}[{i}]"), x, out);
            }
        }
        other => {
            let secret = ["password", "key", "secret", "verifier"]
                .iter()
                .any(|w| prefix.rsplit('.').next().unwrap_or("").contains(w))
                && !prefix.ends_with("key_prefix")
                && !prefix.ends_with(".key");
            let text = match other {
                toml::Value::String(s) => s.clone(),
                o => o.to_string(),
            };
            let text = if secret && !text.is_empty() {
                "********".into()
            } else if prefix.ends_with("url") {
                redact_url(&text)
            } else {
                text
            };
            out.push((prefix.to_owned(), text));
        }
    }
}

/// Hide the password of a URL (`postgresql://u:secret@h/db` → `postgresql://u:****@h/db`).
fn redact_url(u: &str) -> String {
    match (u.find("://"), u.rfind('@')) {
        (Some(a), Some(at)) if at > a => match u[a + 3..at].find(':') {
            Some(c) => format!("{}:****{}", &u[..a + 3 + c], &u[at..]),
            None => u.to_owned(),
        },
        _ => u.to_owned(),
    }
}

/// Per-tenant values read from each tenant's schema, one connection per instance.
async fn per_schema(
    ctx: &Ctx<'_>,
    sql_for: impl Fn(&str) -> String,
) -> Result<HashMap<String, Vec<Option<String>>>, PgError> {
    let cat = ctx.catalog()?;
    let tenants = cat.list_tenants().await.map_err(db_err)?;
    let mut by_instance: HashMap<String, Vec<TenantRow>> = HashMap::new();
    for t in tenants {
        by_instance.entry(t.instance.clone()).or_default().push(t);
    }
    let mut out = HashMap::new();
    for (instance, ts) in by_instance {
        let url = cat.instance_url(&instance).await.map_err(db_err)?;
        let client = cat.instance_client(&url).await.map_err(db_err)?;
        for t in ts {
            let schema = crate::backend::server::quote_ident(&t.schema);
            match client.query_one(sql_for(&schema).as_str(), &[]).await {
                Ok(r) => {
                    let vals = (0..r.len())
                        .map(|i| r.get::<_, Option<String>>(i))
                        .collect();
                    out.insert(t.key.clone(), vals);
                }
                Err(e) => ctx.notice(format!(
                    "tenant {}: {}",
                    t.key,
                    crate::catalog::store::db_message(&e)
                )),
            }
        }
    }
    Ok(out)
}

fn storage_sql(schema: &str) -> String {
    let lit = crate::backend::server::quote_literal(schema.trim_matches('"'));
    format!(
        "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::text
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = {lit} AND c.relkind IN ('r', 'm')"
    )
}

pub async fn usage(ctx: &Ctx<'_>, tenant: Option<&str>, since_ms: i64) -> Result<Rows, PgError> {
    known(ctx, tenant)?;
    let t = telemetry(ctx)?;
    let mut usage: HashMap<String, crate::telemetry::rollup::Usage> = t
        .usage(tenant, since_ms)
        .await
        .map_err(tele_err)?
        .into_iter()
        .map(|u| (u.tenant.clone(), u))
        .collect();
    let storage = if ctx.proxy.catalog().is_some() {
        per_schema(ctx, storage_sql).await.unwrap_or_default()
    } else {
        HashMap::new()
    };
    let mut keys: Vec<(String, String)> = tenant_rows(ctx)
        .await?
        .into_iter()
        .filter(|r| tenant.is_none_or(|k| k == r.key))
        .map(|r| (r.key, r.plan))
        .collect();
    keys.sort();
    let mut out = Vec::new();
    for (key, plan) in keys {
        let u = usage.remove(&key);
        let r = u.as_ref().map(|u| u.totals.clone()).unwrap_or_default();
        let conns = match ctx.proxy.limits() {
            Some(l) => l.usage(&key).await.connections,
            None => 0,
        };
        out.push(vec![
            s(&key),
            s(&plan),
            s(r.count),
            s(r.errors),
            s(ms(r.avg_us())),
            s(ms(r.p95_us() as f64)),
            s(r.rows),
            s(r.bytes_in),
            s(r.bytes_out),
            s(format!("{:.6}", r.cost)),
            storage.get(&key).and_then(|v| v.first().cloned().flatten()),
            s(conns),
        ]);
    }
    Ok(out)
}

pub async fn slow(
    ctx: &Ctx<'_>,
    tenant: Option<&str>,
    since: i64,
    limit: usize,
) -> Result<Rows, PgError> {
    known(ctx, tenant)?;
    let t = telemetry(ctx)?;
    Ok(t.slow_queries(tenant, since, limit)
        .await
        .map_err(tele_err)?
        .into_iter()
        .map(|q| {
            vec![
                s(&q.tenant),
                s(&q.fingerprint),
                s(q.count),
                s(ms(q.mean_us)),
                s(ms(q.max_us as f64)),
            ]
        })
        .collect())
}

pub async fn response_time(ctx: &Ctx<'_>, key: &str) -> Result<Rows, PgError> {
    let since = since_ms(None, Duration::from_secs(7 * 86_400))?;
    let rows = usage_of(ctx, key, since).await?;
    let r = rows.totals;
    Ok(vec![vec![
        s(key),
        s(r.count),
        s(ms(r.avg_us())),
        s(ms(r.p50_us() as f64)),
        s(ms(r.p95_us() as f64)),
        s(ms(r.latency_max_us as f64)),
        s(r.errors),
        s(timestamp(since)),
    ]])
}

async fn usage_of(
    ctx: &Ctx<'_>,
    key: &str,
    since: i64,
) -> Result<crate::telemetry::rollup::Usage, PgError> {
    known(ctx, Some(key))?;
    let t = telemetry(ctx)?;
    Ok(t.usage(Some(key), since)
        .await
        .map_err(tele_err)?
        .into_iter()
        .next()
        .unwrap_or(crate::telemetry::rollup::Usage {
            tenant: key.into(),
            plan: String::new(),
            totals: Default::default(),
        }))
}

pub async fn active_users(ctx: &Ctx<'_>) -> Result<Rows, PgError> {
    let counts = per_schema(ctx, |schema| {
        format!(
            "SELECT count(*) FILTER (WHERE active AND last_login > now() - interval '30 days')::text,
                    count(*)::text FROM {schema}.users"
        )
    })
    .await?;
    let mut out: Rows = tenant_rows(ctx)
        .await?
        .into_iter()
        .filter_map(|t| {
            let v = counts.get(&t.key)?;
            let mau: u64 = v.first()?.as_deref()?.parse().ok()?;
            let all: u64 = v.get(1)?.as_deref()?.parse().ok()?;
            let pct = if all == 0 {
                0.0
            } else {
                100.0 * mau as f64 / all as f64
            };
            Some(vec![
                s(&t.key),
                s(&t.plan),
                s(mau),
                s(all),
                s(format!("{pct:.1}")),
            ])
        })
        .collect();
    out.sort_by_key(|r| {
        std::cmp::Reverse(
            r[2].as_deref()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0),
        )
    });
    Ok(out)
}

pub async fn limits(ctx: &Ctx<'_>) -> Result<Rows, PgError> {
    let p = ctx.proxy;
    let plan_caps: HashMap<String, (i64, i64)> = match p.catalog() {
        Some(c) => {
            let conn = c.pool().get().await.map_err(db_err)?;
            conn.query(
                "SELECT key, max_users::int8, storage_gb::int8 FROM tenantgate.plans",
                &[],
            )
            .await
            .map_err(db_err)?
            .iter()
            .map(|r| (r.get(0), (r.get(1), r.get(2))))
            .collect()
        }
        None => HashMap::new(),
    };
    let schema_use = if p.catalog().is_some() {
        per_schema(ctx, |schema| {
            let storage = storage_sql(schema);
            format!("SELECT (SELECT count(*) FROM {schema}.users)::text, ({storage})")
        })
        .await?
    } else {
        HashMap::new()
    };
    let mut out = Vec::new();
    let mut tenants = p.directory().tenants();
    tenants.sort_by(|a, b| a.key.cmp(&b.key));
    for t in tenants {
        let u = match p.limits() {
            Some(l) => l.usage(&t.key).await,
            None => Default::default(),
        };
        let mut checks: Vec<(&str, u64, u64)> = vec![
            (
                "queries_per_second",
                u.queries_last_second,
                u64::from(t.limits.queries_per_second),
            ),
            ("queries_per_day", u.queries_today, t.limits.queries_per_day),
            (
                "max_connections",
                u.connections,
                u64::from(t.limits.max_connections),
            ),
        ];
        if let (Some((max_users, storage_gb)), Some(vals)) =
            (plan_caps.get(&t.plan), schema_use.get(&t.key))
        {
            let n = |i: usize| {
                vals.get(i)
                    .cloned()
                    .flatten()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0u64)
            };
            checks.push(("max_users", n(0), *max_users as u64));
            checks.push(("storage_bytes", n(1), (*storage_gb as u64) << 30));
        }
        for (limit, used, allowed) in checks {
            if allowed == 0 {
                continue;
            }
            let pct = 100.0 * used as f64 / allowed as f64;
            let status = if pct >= 100.0 {
                "over"
            } else if pct >= 80.0 {
                "approaching"
            } else {
                "ok"
            };
            out.push(vec![
                s(&t.key),
                s(&t.plan),
                s(limit),
                s(used),
                s(allowed),
                s(format!("{pct:.1}")),
                s(status),
            ]);
        }
    }
    out.sort_by(|a, b| {
        let pct = |r: &Vec<Option<String>>| {
            r[5].as_deref()
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        pct(b).total_cmp(&pct(a))
    });
    let near = out.iter().filter(|r| r[6].as_deref() != Some("ok")).count();
    ctx.notice(format!("{near} limit(s) at 80% or more of the plan"));
    Ok(out)
}

pub async fn revenue(ctx: &Ctx<'_>) -> Result<Rows, PgError> {
    let conn = ctx.catalog()?.pool().get().await.map_err(db_err)?;
    let plans = conn
        .query(
            "SELECT p.key, p.monthly_price::float8,
                    (SELECT count(*) FROM tenantgate.tenants t
                      WHERE t.plan = p.key AND t.status IN ('active', 'trial'))
               FROM tenantgate.plans p ORDER BY p.monthly_price, p.key",
            &[],
        )
        .await
        .map_err(db_err)?;
    let since = since_ms(None, Duration::from_secs(30 * 86_400))?;
    let usage = match ctx.proxy.telemetry() {
        Some(t) => t.usage(None, since).await.map_err(tele_err)?,
        None => Vec::new(),
    };
    let dir = ctx.proxy.directory();
    let mut cost_by_plan: HashMap<String, f64> = HashMap::new();
    for u in usage {
        let plan = dir
            .tenant(&u.tenant)
            .map_or(u.plan.clone(), |t| t.plan.clone());
        *cost_by_plan.entry(plan).or_default() += u.totals.cost;
    }
    let mut out = Vec::new();
    let (mut all_mrr, mut all_cost, mut all_tenants) = (0.0, 0.0, 0i64);
    for r in plans {
        let key: String = r.get(0);
        let price: f64 = r.get(1);
        let n: i64 = r.get(2);
        let mrr = price * n as f64;
        let cost = cost_by_plan.get(&key).copied().unwrap_or(0.0);
        all_mrr += mrr;
        all_cost += cost;
        all_tenants += n;
        out.push(vec![
            s(&key),
            s(n),
            s(format!("{price:.2}")),
            s(format!("{mrr:.2}")),
            s(format!("{cost:.6}")),
            s(format!("{:.2}", mrr + cost)),
        ]);
    }
    out.push(vec![
        s("total"),
        s(all_tenants),
        None,
        s(format!("{all_mrr:.2}")),
        s(format!("{all_cost:.6}")),
        s(format!("{:.2}", all_mrr + all_cost)),
    ]);
    Ok(out)
}

pub async fn users(ctx: &Ctx<'_>, key: &str) -> Result<Rows, PgError> {
    let cat = ctx.catalog()?;
    let t = cat
        .list_tenants()
        .await
        .map_err(db_err)?
        .into_iter()
        .find(|t| t.key == key)
        .ok_or_else(|| PgError::unknown_tenant(key))?;
    let url = cat.instance_url(&t.instance).await.map_err(db_err)?;
    let client = cat.instance_client(&url).await.map_err(db_err)?;
    let schema = crate::backend::server::quote_ident(&t.schema);
    let rows = client
        .query(
            format!(
                "SELECT u.id::text, u.email, u.name, u.role, u.active::text,
                        to_char(u.last_login AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')
                   FROM {schema}.users u ORDER BY u.id LIMIT 1000"
            )
            .as_str(),
            &[],
        )
        .await
        .map_err(|e| PgError::admin_failed("42P01", &crate::catalog::store::db_message(&e)))?;
    if rows.len() == 1000 {
        ctx.notice("showing the first 1000 users");
    }
    Ok(rows
        .iter()
        .map(|r| (0..6).map(|i| r.get::<_, Option<String>>(i)).collect())
        .collect())
}

/// A registered dedicated instance that holds no tenant yet.
pub async fn free_dedicated(ctx: &Ctx<'_>) -> Result<String, PgError> {
    let conn = ctx.catalog()?.pool().get().await.map_err(db_err)?;
    conn.query_opt(
        "SELECT i.name FROM tenantgate.instances i
          WHERE i.dedicated
            AND NOT EXISTS (SELECT 1 FROM tenantgate.tenants t WHERE t.instance = i.name)
          ORDER BY i.name LIMIT 1",
        &[],
    )
    .await
    .map_err(db_err)?
    .map(|r| r.get(0))
    .ok_or_else(|| {
        PgError::admin_failed(
            "55000",
            "no free dedicated instance is registered: add one with `tenantgate instance add NAME --url URL --dedicated`",
        )
    })
}

pub async fn migrate(ctx: &Ctx<'_>) -> Result<Answer, PgError> {
    let cat = ctx.catalog()?;
    let opts = MigrateOptions {
        concurrency: ctx.proxy.config().migrate.concurrency,
        fail_fast: false,
        migrations: crate::catalog::migrations::tenant(),
        only: Vec::new(),
    };
    let notices = ctx.notices.clone();
    let progress = move |tenant: &str, o: &TenantOutcome| {
        let m = match o {
            TenantOutcome::UpToDate => format!("{tenant}: up to date"),
            TenantOutcome::Applied(v) => format!("{tenant}: applied {}", v.join(", ")),
            TenantOutcome::Failed { version, error } => {
                format!("{tenant}: FAILED at {version}: {error}")
            }
            TenantOutcome::Skipped => format!("{tenant}: skipped"),
        };
        let _ = notices.send(m);
    };
    // Owned and spawned: the runner's futures are not `Send` for every borrow lifetime.
    let cat = cat.clone();
    let r = tokio::spawn(async move { migrate_all(&cat, &opts, &progress).await })
        .await
        .map_err(|e| PgError::admin_failed("XX000", &e.to_string()))?
        .map_err(db_err)?;
    if let Some(t) = ctx.proxy.telemetry() {
        t.audit(
            ctx.actor,
            "migrate_tenants",
            serde_json::json!({"migrated": r.migrated, "failed": r.failed.len()}),
        );
    }
    Ok(Answer {
        rows: vec![vec![
            s(r.tenants),
            s(r.migrated),
            s(r.versions_applied),
            s(r.up_to_date),
            s(r.failed.len()),
            s(r.elapsed.as_millis()),
        ]],
        tag: "MIGRATE TENANTS".into(),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_and_urls() {
        assert_eq!(super::timestamp(0), "1970-01-01 00:00:00");
        assert_eq!(super::timestamp(1_700_000_000_000), "2023-11-14 22:13:20");
        assert_eq!(
            super::redact_url("postgresql://u:secret@h:5432/db"),
            "postgresql://u:****@h:5432/db"
        );
        assert_eq!(
            super::redact_url("postgresql://u@h/db"),
            "postgresql://u@h/db"
        );
        assert!(super::since_ms(Some("7 days"), std::time::Duration::ZERO).is_ok());
        assert!(super::since_ms(Some("soon"), std::time::Duration::ZERO).is_err());
    }
}
