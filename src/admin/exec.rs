//! Running admin commands against the proxy's state, the catalog, telemetry and limits.
//! Every answer is a result set of text columns (fixed per command, so Describe can answer
//! before Execute) plus notices; failures are `PgError`s with their SQLSTATE.

use std::time::{Duration, SystemTime};

use tokio::sync::mpsc::UnboundedSender;

use super::analytics;
use super::command::Command;
use crate::catalog::provision::NewTenant;
use crate::catalog::{Catalog, CatalogError};
use crate::protocol::PgError;
use crate::state::Proxy;
use crate::telemetry::event::epoch_ms;

/// A command's answer.
#[derive(Debug, Default)]
pub struct Answer {
    pub rows: Vec<Vec<Option<String>>>,
    pub tag: String,
}

/// Who runs the command, and where progress notices go (streamed to the client).
pub struct Ctx<'a> {
    pub proxy: &'a Proxy,
    pub actor: &'a str,
    pub notices: UnboundedSender<String>,
}

impl Ctx<'_> {
    pub fn notice(&self, m: impl Into<String>) {
        let _ = self.notices.send(m.into());
    }

    pub fn catalog(&self) -> Result<&Catalog, PgError> {
        self.proxy.catalog().ok_or_else(|| {
            PgError::feature_unsupported(
                "this command needs the tenant catalog (catalog_url); tenants of this proxy come from its config file",
            )
        })
    }

    fn audit(&self, action: &str, detail: serde_json::Value) {
        if let Some(t) = self.proxy.telemetry() {
            t.audit(self.actor, action, detail);
        }
    }
}

/// The columns of a command's result (empty: no rows, only a command tag).
pub fn columns(cmd: &Command) -> &'static [&'static str] {
    use Command::*;
    match cmd {
        ShowTenants => &[
            "key",
            "name",
            "plan",
            "status",
            "instance",
            "schema",
            "users",
            "created_at",
        ],
        ShowTenant(_) => &["field", "value"],
        CreateTenant { .. } => &[
            "tenant",
            "schema",
            "instance",
            "plan",
            "login_user",
            "password",
            "elapsed_ms",
        ],
        ShowPlans => &[
            "plan",
            "name",
            "aliases",
            "monthly_price",
            "queries_per_second",
            "queries_per_day",
            "max_connections",
            "max_users",
            "storage_gb",
            "cost_per_ms",
            "cost_per_row",
            "cost_per_kib",
        ],
        ShowInstances => &[
            "name",
            "address",
            "dedicated",
            "capacity",
            "tenants",
            "open_connections",
        ],
        ShowPools => &[
            "tenant",
            "instance",
            "mode",
            "size",
            "open",
            "idle",
            "in_use",
            "waiting",
            "checkouts",
            "timeouts",
            "paused",
        ],
        ShowClients => &[
            "id",
            "tenant",
            "user",
            "application",
            "client_addr",
            "replica",
            "connected_at",
        ],
        ShowServers => &["instance", "tenant", "open", "in_use", "idle"],
        ShowStats | ShowConfig => &["name", "value"],
        ShowUsage { .. } => &[
            "tenant",
            "plan",
            "queries",
            "errors",
            "avg_ms",
            "p95_ms",
            "rows",
            "bytes_in",
            "bytes_out",
            "cost",
            "storage_bytes",
            "connections",
        ],
        ShowSlowQueries { .. } => &["tenant", "fingerprint", "calls", "mean_ms", "max_ms"],
        ShowResponseTime(_) => &[
            "tenant", "queries", "avg_ms", "p50_ms", "p95_ms", "max_ms", "errors", "since",
        ],
        ShowActiveUsers => &[
            "tenant",
            "plan",
            "monthly_active_users",
            "users",
            "active_pct",
        ],
        ShowLimits => &[
            "tenant", "plan", "limit", "used", "allowed", "pct", "status",
        ],
        ShowRevenueByPlan => &[
            "plan",
            "tenants",
            "monthly_price",
            "mrr",
            "usage_cost_30d",
            "total",
        ],
        ShowUsers(_) => &["id", "email", "name", "role", "active", "last_login"],
        MigrateTenants => &[
            "tenants",
            "migrated",
            "versions_applied",
            "up_to_date",
            "failed",
            "elapsed_ms",
        ],
        ShowFlags(_) => &["tenant", "flag", "value"],
        MoveTenant { .. } => &[
            "tenant",
            "from",
            "to",
            "tables",
            "rows",
            "copy_ms",
            "pause_ms",
            "source_kept_as",
        ],
        _ => &[],
    }
}

fn s(v: impl ToString) -> Option<String> {
    Some(v.to_string())
}

fn catalog_error(e: CatalogError) -> PgError {
    PgError::admin_failed(e.sqlstate(), &e.to_string())
}

/// Run a command.
pub fn run<'a>(
    cmd: &'a Command,
    ctx: &'a Ctx<'a>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Answer, PgError>> + Send + 'a>> {
    Box::pin(run_inner(cmd, ctx))
}

async fn run_inner(cmd: &Command, ctx: &Ctx<'_>) -> Result<Answer, PgError> {
    use Command::*;
    let p = ctx.proxy;
    let rows = |rows: Vec<Vec<Option<String>>>| {
        let tag = format!("SHOW {}", rows.len());
        Ok(Answer { rows, tag })
    };
    let done = |tag: &str| {
        Ok(Answer {
            rows: Vec::new(),
            tag: tag.to_owned(),
        })
    };
    match cmd {
        ShowTenants => rows(analytics::tenants(ctx).await?),
        ShowTenant(k) => rows(analytics::tenant(ctx, k).await?),
        CreateTenant {
            key,
            name,
            plan,
            instance,
        } => {
            let cat = ctx.catalog()?;
            let p = cat
                .create_tenant(&NewTenant {
                    key: key.clone(),
                    display_name: name.clone(),
                    plan: plan.clone(),
                    instance: instance.clone(),
                    user: "app".into(),
                    password: None,
                    actor: ctx.actor.to_owned(),
                })
                .await
                .map_err(catalog_error)?;
            ctx.audit(
                "tenant.create",
                serde_json::json!({"tenant": key, "plan": p.plan}),
            );
            if !p.created {
                ctx.notice(format!(
                    "tenant {key} already exists as asked; nothing changed"
                ));
            }
            let ans = vec![vec![
                s(&p.key),
                s(&p.schema),
                s(&p.instance),
                s(&p.plan),
                s(format!("app@{}", p.key)),
                p.generated_password.clone(),
                s(p.elapsed.as_millis()),
            ]];
            Ok(Answer {
                rows: ans,
                tag: "CREATE TENANT".into(),
            })
        }
        AlterTenantPlan { key, plan } => {
            let plan = ctx
                .catalog()?
                .set_plan(key, plan, ctx.actor)
                .await
                .map_err(catalog_error)?;
            ctx.audit(
                "tenant.set_plan",
                serde_json::json!({"tenant": key, "plan": plan}),
            );
            ctx.notice(format!("tenant {key} is now on plan {plan}"));
            done("ALTER TENANT")
        }
        SuspendTenant(k) => {
            ctx.catalog()?
                .set_status(k, "suspended", ctx.actor)
                .await
                .map_err(catalog_error)?;
            ctx.audit("tenant.suspend", serde_json::json!({"tenant": k}));
            done("SUSPEND TENANT")
        }
        ResumeTenant(k) => {
            p.pools().resume(Some(k));
            if let Some(cat) = p.catalog() {
                let suspended = p
                    .directory()
                    .tenant(k)
                    .is_some_and(|t| !t.status.may_connect());
                if suspended {
                    cat.set_status(k, "active", ctx.actor)
                        .await
                        .map_err(catalog_error)?;
                }
            } else if p.directory().tenant(k).is_none() {
                return Err(PgError::unknown_tenant(k));
            }
            ctx.audit("tenant.resume", serde_json::json!({"tenant": k}));
            done("RESUME TENANT")
        }
        DropTenant { key, force } => {
            ctx.catalog()?
                .drop_tenant(key, *force, ctx.actor)
                .await
                .map_err(catalog_error)?;
            ctx.audit(
                "tenant.drop",
                serde_json::json!({"tenant": key, "force": force}),
            );
            done("DROP TENANT")
        }
        ShowPlans => rows(analytics::plans(ctx).await?),
        ShowInstances => rows(analytics::instances(ctx).await?),
        ShowPools => {
            let modes = p.directory();
            rows(
                p.pools()
                    .stats()
                    .into_iter()
                    .map(|st| {
                        let mode = modes
                            .tenant(&st.tenant)
                            .map(|t| format!("{:?}", t.pool_mode).to_lowercase());
                        vec![
                            s(&st.tenant),
                            s(&st.instance),
                            mode,
                            s(st.size),
                            s(st.open),
                            s(st.idle),
                            s(st.open - st.idle),
                            s(st.waiting),
                            s(st.acquired),
                            s(st.timeouts),
                            s(p.pools().is_paused(&st.tenant)),
                        ]
                    })
                    .collect(),
            )
        }
        ShowClients => {
            let Some(l) = p.limits() else {
                return rows(Vec::new());
            };
            rows(
                l.sessions()
                    .list(l)
                    .await
                    .into_iter()
                    .map(|c| {
                        vec![
                            s(&c.id),
                            s(&c.tenant),
                            s(&c.user),
                            s(&c.application),
                            s(c.client_addr),
                            s(&c.replica),
                            s(analytics::timestamp(c.started_ms)),
                        ]
                    })
                    .collect(),
            )
        }
        ShowServers => rows(
            p.pools()
                .stats()
                .into_iter()
                .map(|st| {
                    vec![
                        s(&st.instance),
                        s(&st.tenant),
                        s(st.open),
                        s(st.open - st.idle),
                        s(st.idle),
                    ]
                })
                .collect(),
        ),
        ShowStats => rows(analytics::stats(ctx)),
        ShowConfig => rows(analytics::config(ctx)),
        Reload => {
            p.reload()
                .map_err(|e| PgError::admin_failed("F0000", &e.to_string()))?;
            ctx.audit("reload", serde_json::json!({}));
            done("RELOAD")
        }
        Pause(tenant) => {
            if let Some(k) = tenant {
                if p.directory().tenant(k).is_none() {
                    return Err(PgError::unknown_tenant(k));
                }
            }
            p.pools().pause(tenant.as_deref());
            ctx.audit("pause", serde_json::json!({"tenant": tenant}));
            // Running transactions finish; new ones wait.
            let started = std::time::Instant::now();
            let mut busy = p.pools().busy(tenant.as_deref());
            if busy > 0 {
                ctx.notice(format!(
                    "waiting for {busy} running transaction(s) to finish"
                ));
            }
            while busy > 0 && started.elapsed() < Duration::from_secs(30) {
                tokio::time::sleep(Duration::from_millis(10)).await;
                busy = p.pools().busy(tenant.as_deref());
            }
            let who = tenant
                .as_deref()
                .map_or("all tenants".into(), |k| format!("tenant {k}"));
            ctx.notice(if busy == 0 {
                format!("{who} paused: new transactions wait until RESUME")
            } else {
                format!("{who} paused; {busy} transaction(s) still running after 30 s")
            });
            done("PAUSE")
        }
        Resume => {
            p.pools().resume(None);
            ctx.audit("resume", serde_json::json!({}));
            done("RESUME")
        }
        KillClient(id) => {
            let l = p
                .limits()
                .ok_or_else(|| PgError::admin_failed("42704", "no client registry"))?;
            let Some((replica, sid)) = id.rsplit_once('/') else {
                return Err(PgError::admin_failed(
                    "22023",
                    &format!("client id {id:?} is not replica/number (see SHOW CLIENTS)"),
                ));
            };
            if replica != l.sessions().replica() {
                return Err(PgError::admin_failed(
                    "0A000",
                    &format!("client {id} is on replica {replica}; run KILL CLIENT there"),
                ));
            }
            let killed = sid.parse().ok().is_some_and(|sid| p.kill_session(sid));
            if !killed {
                return Err(PgError::admin_failed("42704", &format!("no client {id}")));
            }
            ctx.audit("kill_client", serde_json::json!({"client": id}));
            done("KILL CLIENT")
        }
        ShowUsage { tenant, since } => {
            let since_ms = analytics::since_ms(since.as_deref(), Duration::from_secs(30 * 86_400))?;
            rows(analytics::usage(ctx, tenant.as_deref(), since_ms).await?)
        }
        ShowSlowQueries { tenant, limit } => {
            let since = epoch_ms(SystemTime::now()) - 7 * 86_400_000;
            rows(
                analytics::slow(ctx, tenant.as_deref(), since, limit.unwrap_or(10) as usize)
                    .await?,
            )
        }
        ShowResponseTime(k) => rows(analytics::response_time(ctx, k).await?),
        ShowActiveUsers => rows(analytics::active_users(ctx).await?),
        ShowLimits => rows(analytics::limits(ctx).await?),
        ShowRevenueByPlan => rows(analytics::revenue(ctx).await?),
        ShowUsers(k) => rows(analytics::users(ctx, k).await?),
        MigrateTenants => analytics::migrate(ctx).await,
        MoveTenant { key, to } => {
            let cat = ctx.catalog()?;
            let to = match to {
                Some(i) => i.clone(),
                None => analytics::free_dedicated(ctx).await?,
            };
            let notices = ctx.notices.clone();
            let progress = move |m: &str| {
                let _ = notices.send(m.to_owned());
            };
            let r = crate::catalog::moves::move_tenant(
                cat,
                key,
                &to,
                ctx.actor,
                &Default::default(),
                &progress,
            )
            .await
            .map_err(catalog_error)?;
            ctx.audit("tenant.move", serde_json::json!({"tenant": key, "to": to, "pause_ms": r.pause_time.as_millis() as u64}));
            Ok(Answer {
                rows: vec![vec![
                    s(&r.tenant),
                    s(&r.from),
                    s(&r.to),
                    s(r.tables),
                    s(r.rows),
                    s(r.copy_time.as_millis()),
                    s(r.pause_time.as_millis()),
                    s(&r.kept_schema),
                ]],
                tag: "MOVE TENANT".into(),
            })
        }
        SetFlag {
            tenant,
            name,
            value,
        } => {
            if p.directory().tenant(tenant).is_none() {
                return Err(PgError::unknown_tenant(tenant));
            }
            let l = p
                .limits()
                .ok_or_else(|| PgError::admin_failed("55000", "limits are not running"))?;
            l.set_flag(tenant, name, value).await.map_err(|e| match e {
                crate::limits::LimitsError::Flag(f) => {
                    PgError::admin_failed("22023", &f.to_string())
                }
                crate::limits::LimitsError::Unavailable => {
                    PgError::admin_failed("08006", "redis is unavailable; the flag was not changed")
                }
            })?;
            ctx.audit(
                "flag.set",
                serde_json::json!({"tenant": tenant, "flag": name, "value": value}),
            );
            done("SET FLAG")
        }
        ShowFlags(tenant) => {
            let l = p
                .limits()
                .ok_or_else(|| PgError::admin_failed("55000", "limits are not running"))?;
            let keys: Vec<String> = match tenant {
                Some(t) => vec![t.clone()],
                None => {
                    let mut k: Vec<String> = p
                        .directory()
                        .tenants()
                        .iter()
                        .map(|t| t.key.clone())
                        .collect();
                    k.sort();
                    k
                }
            };
            let mut out = Vec::new();
            for k in keys {
                for (f, v) in l.list_flags(&k).await {
                    out.push(vec![s(&k), s(f), s(v)]);
                }
            }
            rows(out)
        }
    }
}
