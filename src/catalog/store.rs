//! The master catalog in PostgreSQL (tokio-postgres over a bb8 pool): setup, reading the
//! routing snapshot, and the audit log. Provisioning lives in [`super::provision`].

use std::sync::Arc;

use bb8::Pool;
use bb8_postgres::PostgresConnectionManager;
use foldhash::HashMap;

use super::crypto::{CryptoError, SecretKey};
use super::{migrations, LoginUser, Placement, Tenant, TenantLogins, TenantStatus};
use crate::config::{PoolConfig, PoolMode};
use crate::frontend::auth::ScramVerifier;

pub type PgPool = Pool<PostgresConnectionManager<tokio_postgres_rustls::MakeRustlsConnect>>;

/// Why a catalog operation failed. `sqlstate` maps it for the admin database.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("database: {}", db_message(.0))]
    Db(#[from] tokio_postgres::Error),
    #[error("catalog database unavailable: {0}")]
    Pool(String),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Exists(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Refused(String),
    #[error("the catalog is not set up: run `tenantgate setup`")]
    NotSetUp,
}

impl CatalogError {
    pub fn sqlstate(&self) -> &'static str {
        match self {
            CatalogError::NotFound(_) => "42704",
            CatalogError::Exists(_) => "42710",
            CatalogError::Invalid(_) => "22023",
            CatalogError::Refused(_) => "55000",
            CatalogError::NotSetUp => "55000",
            CatalogError::Crypto(_) => "XX000",
            CatalogError::Db(_) | CatalogError::Pool(_) => "08006",
        }
    }
}

impl From<bb8::RunError<tokio_postgres::Error>> for CatalogError {
    fn from(e: bb8::RunError<tokio_postgres::Error>) -> Self {
        match e {
            bb8::RunError::User(e) => CatalogError::Db(e),
            bb8::RunError::TimedOut => CatalogError::Pool("timed out".into()),
        }
    }
}

/// Logs why a pooled connection (catalog, migrations) could not be made: the pool
/// retries until its timeout and then reports only that it timed out.
#[derive(Debug, Clone, Copy)]
pub(super) struct LogErrors;

impl bb8::ErrorSink<tokio_postgres::Error> for LogErrors {
    fn sink(&self, e: tokio_postgres::Error) {
        tracing::warn!(error = %db_message(&e), "connection from a pool failed");
    }

    fn boxed_clone(&self) -> Box<dyn bb8::ErrorSink<tokio_postgres::Error>> {
        Box::new(*self)
    }
}

/// Handle to the catalog. Cheap to clone.
#[derive(Clone)]
pub struct Catalog {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    key: SecretKey,
    url: String,
}

/// What `setup` did.
#[derive(Debug, Default)]
pub struct SetupReport {
    pub applied: Vec<String>,
    pub primary_registered: bool,
}

/// The routing view of the catalog.
#[derive(Default)]
pub struct Snapshot {
    pub tenants: HashMap<String, Arc<Tenant>>,
    pub users: TenantLogins,
    pub admins: HashMap<String, Arc<LoginUser>>,
    pub services: HashMap<String, Arc<LoginUser>>,
}

impl Catalog {
    /// Connect (lazily) to the catalog database.
    pub async fn connect(url: &str, key: &str) -> Result<Catalog, CatalogError> {
        let key = SecretKey::from_base64(key)?;
        let (config, tls) = super::conninfo::client_parts(url)
            .map_err(|e| CatalogError::Invalid(format!("catalog_url: {e}")))?;
        let pool = Pool::builder()
            .max_size(8)
            .connection_timeout(std::time::Duration::from_secs(10))
            .error_sink(Box::new(LogErrors))
            .build(PostgresConnectionManager::new(config, tls))
            .await?;
        Ok(Catalog {
            inner: Arc::new(Inner {
                pool,
                key,
                url: url.to_owned(),
            }),
        })
    }

    pub fn url(&self) -> &str {
        &self.inner.url
    }

    pub fn key(&self) -> &SecretKey {
        &self.inner.key
    }

    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// Create or upgrade the catalog (idempotent, versioned, one transaction) and register
    /// the catalog's own server as instance `primary`.
    pub async fn setup(&self) -> Result<SetupReport, CatalogError> {
        let mut conn = self.inner.pool.get().await?;
        let tx = conn.transaction().await?;
        // Serialise concurrent setups.
        tx.batch_execute(
            "SELECT pg_advisory_xact_lock(hashtext('tenantgate.setup'));
             CREATE SCHEMA IF NOT EXISTS tenantgate;
             CREATE TABLE IF NOT EXISTS tenantgate.schema_migrations (
                 version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now());",
        )
        .await?;
        let done: Vec<String> = tx
            .query("SELECT version FROM tenantgate.schema_migrations", &[])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut report = SetupReport::default();
        for m in migrations::master() {
            if done.contains(&m.version) {
                continue;
            }
            tx.batch_execute(&m.sql).await?;
            tx.execute(
                "INSERT INTO tenantgate.schema_migrations (version) VALUES ($1)",
                &[&m.version],
            )
            .await?;
            report.applied.push(m.version);
        }
        let n = tx
            .execute(
                "INSERT INTO tenantgate.instances (name, url) VALUES ('primary', $1) ON CONFLICT DO NOTHING",
                &[&self.inner.url],
            )
            .await?;
        report.primary_registered = n == 1;
        tx.commit().await?;
        Ok(report)
    }

    /// Read everything the proxy routes by.
    pub async fn snapshot(&self, pool_cfg: &PoolConfig) -> Result<Snapshot, CatalogError> {
        let conn = self.inner.pool.get().await?;
        let rows = conn
            .query(
                "SELECT t.key, t.status, t.schema_name, t.backend_role, t.backend_secret,
                        t.pool_mode, t.pool_size, i.name, i.url, t.plan,
                        p.cost_per_ms::float8, p.cost_per_row::float8, p.cost_per_kib::float8,
                        coalesce((t.limit_overrides->>'queries_per_second')::int, p.queries_per_second),
                        coalesce((t.limit_overrides->>'queries_per_day')::bigint, p.queries_per_day),
                        coalesce((t.limit_overrides->>'max_connections')::int, p.max_connections),
                        t.paused
                   FROM tenantgate.tenants t
                   JOIN tenantgate.instances i ON i.name = t.instance
                   JOIN tenantgate.plans p ON p.key = t.plan",
                &[],
            )
            .await
            .map_err(not_set_up)?;
        let mut snap = Snapshot::default();
        for r in rows {
            let key: String = r.get(0);
            let secret: Vec<u8> = r.get(4);
            let password =
                String::from_utf8(self.inner.key.open(&secret)?).map_err(|_| CryptoError::Open)?;
            let (host, port, database) = instance_address(r.get(8))?;
            let tls = instance_tls(r.get(8))?;
            let pool_mode: Option<String> = r.get(5);
            let pool_size: Option<i32> = r.get(6);
            let tenant = Tenant {
                key: key.clone(),
                status: TenantStatus::parse(r.get(1)),
                placement: Placement {
                    instance: r.get(7),
                    host,
                    port,
                    database,
                    schema: Some(r.get(2)),
                    backend_user: r.get(3),
                    backend_password: password,
                    tls,
                },
                pool_mode: match pool_mode.as_deref() {
                    Some("session") => PoolMode::Session,
                    Some("transaction") => PoolMode::Transaction,
                    _ => pool_cfg.mode,
                },
                pool_size: pool_size.map_or(pool_cfg.default_size, |s| s as usize),
                plan: r.get(9),
                rates: crate::telemetry::event::CostRates {
                    per_ms: r.get(10),
                    per_row: r.get(11),
                    per_kib: r.get(12),
                },
                paused: r.get(16),
                limits: crate::limits::TenantLimits {
                    queries_per_second: r.get::<_, i32>(13).max(0) as u32,
                    queries_per_day: r.get::<_, i64>(14).max(0) as u64,
                    max_connections: r.get::<_, i32>(15).max(0) as u32,
                },
            };
            snap.tenants.insert(key, Arc::new(tenant));
        }
        for r in conn
            .query(
                "SELECT tenant, name, scram_verifier FROM tenantgate.tenant_users",
                &[],
            )
            .await?
        {
            if let Some(v) = ScramVerifier::parse(r.get(2)) {
                let (t, n): (String, String) = (r.get(0), r.get(1));
                snap.users.insert(
                    &t,
                    LoginUser {
                        name: n,
                        password: None,
                        scram: v,
                    },
                );
            }
        }
        for (table, map) in [
            ("admin_users", &mut snap.admins),
            ("service_users", &mut snap.services),
        ] {
            let q = format!("SELECT name, scram_verifier FROM tenantgate.{table}");
            for r in conn.query(q.as_str(), &[]).await.map_err(not_set_up)? {
                if let Some(v) = ScramVerifier::parse(r.get(1)) {
                    let n: String = r.get(0);
                    map.insert(
                        n.clone(),
                        Arc::new(LoginUser {
                            name: n,
                            password: None,
                            scram: v,
                        }),
                    );
                }
            }
        }
        Ok(snap)
    }

    /// Resolve a plan name or alias (case-insensitive) to its key.
    pub async fn resolve_plan(&self, name: &str) -> Result<String, CatalogError> {
        let conn = self.inner.pool.get().await?;
        let row = conn
            .query_opt(
                "SELECT key FROM tenantgate.plans
                  WHERE key = lower($1) OR lower($1) = ANY (aliases)",
                &[&name],
            )
            .await
            .map_err(not_set_up)?;
        match row {
            Some(r) => Ok(r.get(0)),
            None => {
                let plans: Vec<String> = conn
                    .query(
                        "SELECT key FROM tenantgate.plans ORDER BY monthly_price",
                        &[],
                    )
                    .await?
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                Err(CatalogError::Invalid(format!(
                    "unknown plan \"{name}\"; plans are {}",
                    plans.join(", ")
                )))
            }
        }
    }

    /// URL of a registered instance.
    pub async fn instance_url(&self, name: &str) -> Result<String, CatalogError> {
        let conn = self.inner.pool.get().await?;
        conn.query_opt(
            "SELECT url FROM tenantgate.instances WHERE name = $1",
            &[&name],
        )
        .await
        .map_err(not_set_up)?
        .map(|r| r.get(0))
        .ok_or_else(|| CatalogError::NotFound(format!("instance \"{name}\" is not registered")))
    }
}

/// An instance URL read, or why it cannot be used.
pub fn instance_info(url: &str) -> Result<super::conninfo::ConnInfo, CatalogError> {
    super::conninfo::ConnInfo::parse(url)
        .map_err(|e| CatalogError::Invalid(format!("instance URL: {e}")))
}

/// Host, port and database of an instance URL. The host is the first one the URL names:
/// a name, an address, or a socket directory (`host=/var/run/postgresql`).
pub fn instance_address(url: &str) -> Result<(String, u16, String), CatalogError> {
    let cfg = instance_info(url)?.config;
    let host = cfg
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            tokio_postgres::config::Host::Unix(dir) => dir.to_string_lossy().into_owned(),
        })
        .unwrap_or_else(|| "127.0.0.1".into());
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    let db = cfg
        .get_dbname()
        .map(str::to_owned)
        .or_else(|| cfg.get_user().map(str::to_owned))
        .unwrap_or_else(|| "postgres".into());
    Ok((host, port, db))
}

/// TLS of the proxy's server connections to an instance, as its URL asks
/// ([`ConnInfo::pool_tls`](super::conninfo::ConnInfo::pool_tls)).
pub fn instance_tls(url: &str) -> Result<crate::backend::tls::ServerTls, CatalogError> {
    Ok(instance_info(url)?.pool_tls())
}

/// The server's own message for database errors (tokio-postgres prints only "db error"),
/// and the causes of others ("error performing TLS handshake: invalid peer certificate:
/// UnknownIssuer", where tokio-postgres prints only the first part).
pub fn db_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{} ({})", d.message(), d.code().code()),
        None => {
            let mut out = e.to_string();
            let mut cause = std::error::Error::source(e);
            while let Some(c) = cause {
                out.push_str(": ");
                out.push_str(&c.to_string());
                cause = c.source();
            }
            out
        }
    }
}

/// A missing catalog table means setup has not run.
pub fn not_set_up(e: tokio_postgres::Error) -> CatalogError {
    if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) {
        CatalogError::NotSetUp
    } else {
        CatalogError::Db(e)
    }
}

/// Record an audit entry inside `tx`.
pub async fn audit(
    tx: &tokio_postgres::Transaction<'_>,
    actor: &str,
    action: &str,
    tenant: Option<&str>,
    detail: serde_json::Value,
) -> Result<(), CatalogError> {
    tx.execute(
        "INSERT INTO tenantgate.audit_log (actor, action, tenant, detail) VALUES ($1, $2, $3, $4::text::jsonb)",
        &[&actor, &action, &tenant, &detail.to_string()],
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn instance_addresses() {
        let (h, p, d) = super::instance_address("postgresql://postgres@10.1.2.3:5433/app").unwrap();
        assert_eq!((h.as_str(), p, d.as_str()), ("10.1.2.3", 5433, "app"));
        let (h, p, d) = super::instance_address("host=db port=6000 dbname=x user=u").unwrap();
        assert_eq!((h.as_str(), p, d.as_str()), ("db", 6000, "x"));
        let (h, p, d) =
            super::instance_address("host=/var/run/postgresql port=5433 dbname=x").unwrap();
        assert_eq!(
            (h.as_str(), p, d.as_str()),
            ("/var/run/postgresql", 5433, "x")
        );
        assert!(super::instance_address("postgresql://[bad").is_err());
        use crate::backend::tls::SslMode;
        let mode = |u| super::instance_tls(u).unwrap().mode;
        assert_eq!(mode("postgresql://h/db?sslmode=require"), SslMode::Require);
        assert_eq!(mode("host=h sslmode=disable"), SslMode::Disable);
        assert_eq!(mode("postgresql://h/db?sslmode=prefer"), SslMode::Prefer);
        assert_eq!(mode("postgresql://h/db"), SslMode::Disable);
    }
}
