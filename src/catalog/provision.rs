//! Tenant lifecycle on the catalog and on the tenant's PostgreSQL instance: create (schema,
//! least-privilege role, template, first login user, catalog row, audit — all or nothing),
//! drop, suspend/resume, users, plan changes, secret rotation.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio_postgres::GenericClient;

use super::crypto::generate_password;
use super::migrations;
use super::store::{audit, not_set_up, Catalog, CatalogError};
use super::valid_key;
use crate::backend::server::{quote_ident, quote_literal};

/// A request to create a tenant.
#[derive(Debug, Clone)]
pub struct NewTenant {
    pub key: String,
    pub display_name: Option<String>,
    pub plan: String,
    pub instance: Option<String>,
    /// First login user (default `app`) and its password (generated when `None`).
    pub user: String,
    pub password: Option<String>,
    /// Who asked (CLI user, admin name) for the audit log.
    pub actor: String,
}

/// What `create_tenant` did.
#[derive(Debug, Clone)]
pub struct Provisioned {
    pub key: String,
    pub schema: String,
    pub instance: String,
    pub plan: String,
    pub user: String,
    /// The first user's password when the proxy generated it (shown once).
    pub generated_password: Option<String>,
    /// False when the tenant already existed as asked (idempotent retry).
    pub created: bool,
    pub elapsed: Duration,
}

/// A tenant as listed.
#[derive(Debug, Clone)]
pub struct TenantRow {
    pub key: String,
    pub display_name: String,
    pub plan: String,
    pub status: String,
    pub instance: String,
    pub schema: String,
    pub users: i64,
    pub created_at: String,
}

/// Role and schema names of a tenant key (keys are validated identifiers).
pub fn role_of(key: &str) -> String {
    format!("tg_{key}")
}
pub fn schema_of(key: &str) -> String {
    format!("tenant_{key}")
}

/// Login user names: letters, digits, `_ . -`, 1-63 chars.
pub fn valid_user(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

fn check_key(key: &str) -> Result<(), CatalogError> {
    if valid_key(key) {
        Ok(())
    } else {
        Err(CatalogError::Invalid(format!(
            "invalid tenant key \"{key}\": use 1-63 lower-case letters, digits or '_', starting with a letter"
        )))
    }
}

impl Catalog {
    /// Create a tenant: one transaction on its instance and one on the catalog, committed
    /// together; any failure leaves nothing behind. A retry of the same request succeeds
    /// without changing anything.
    pub async fn create_tenant(&self, req: &NewTenant) -> Result<Provisioned, CatalogError> {
        let started = Instant::now();
        check_key(&req.key)?;
        if !valid_user(&req.user) {
            return Err(CatalogError::Invalid(format!(
                "invalid user name \"{}\"",
                req.user
            )));
        }
        let plan = self.resolve_plan(&req.plan).await?;
        let instance = req.instance.clone().unwrap_or_else(|| "primary".into());
        let instance_url = self.instance_url(&instance).await?;
        let (role, schema) = (role_of(&req.key), schema_of(&req.key));

        if let Some(existing) = self.existing(&req.key).await? {
            return if existing.0 == plan && existing.1 == instance {
                Ok(Provisioned {
                    key: req.key.clone(),
                    schema,
                    instance,
                    plan,
                    user: req.user.clone(),
                    generated_password: None,
                    created: false,
                    elapsed: started.elapsed(),
                })
            } else {
                Err(CatalogError::Exists(format!(
                    "tenant \"{}\" already exists (plan {}, instance {})",
                    req.key, existing.0, existing.1
                )))
            };
        }

        let backend_password = generate_password();
        let (user_password, generated) = match &req.password {
            Some(p) if !p.is_empty() => (p.clone(), None),
            _ => {
                let p = generate_password();
                (p.clone(), Some(p))
            }
        };
        let verifier = postgres_protocol::password::scram_sha_256(user_password.as_bytes());
        let sealed = self.key().seal(backend_password.as_bytes());
        let template = migrations::tenant();
        let versions: Vec<String> = template.iter().map(|m| m.version.clone()).collect();
        let name = req.display_name.clone().unwrap_or_else(|| req.key.clone());

        let mut cat = self.pool().get().await?;
        let same_server = instance_url == self.url();
        let mut inst_client = None;
        if !same_server {
            inst_client = Some(super::conninfo::connect(&instance_url).await?);
        }
        let cat_tx = cat.transaction().await?;
        let inst_tx = match inst_client.as_mut() {
            Some(c) => Some(c.transaction().await?),
            None => None,
        };
        // 1. schema, role, template on the instance
        let result = async {
            let ddl_target: &tokio_postgres::Transaction<'_> = inst_tx.as_ref().unwrap_or(&cat_tx);
            provision_schema(ddl_target, &role, &schema, &backend_password, &template).await?;
            // 2. catalog rows and audit
            cat_tx
                .execute(
                    "INSERT INTO tenantgate.tenants
                        (key, display_name, plan, schema_name, instance, backend_role, backend_secret)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    &[&req.key, &name, &plan, &schema, &instance, &role, &sealed],
                )
                .await?;
            cat_tx
                .execute(
                    "INSERT INTO tenantgate.tenant_users (tenant, name, scram_verifier) VALUES ($1, $2, $3)",
                    &[&req.key, &req.user, &verifier],
                )
                .await?;
            cat_tx
                .execute(
                    "INSERT INTO tenantgate.tenant_migrations (tenant, version) SELECT $1, unnest($2::text[])",
                    &[&req.key, &versions],
                )
                .await?;
            audit(
                &cat_tx,
                &req.actor,
                "tenant.create",
                Some(&req.key),
                json!({"plan": plan, "instance": instance, "schema": schema, "user": req.user}),
            )
            .await?;
            Ok::<(), CatalogError>(())
        }
        .await;
        if let Err(e) = result {
            // Both transactions roll back when dropped.
            return Err(self.explain_create_failure(&req.key, e).await);
        }
        // 3. commit the instance first; if the catalog commit then fails, undo the instance.
        if let Some(tx) = inst_tx {
            tx.commit().await?;
            if let Err(e) = cat_tx.commit().await {
                if let Ok(c) = self.instance_client(&instance_url).await {
                    let _ = c.batch_execute(&drop_sql(&role, &schema)).await;
                }
                return Err(e.into());
            }
        } else {
            cat_tx.commit().await?;
        }
        Ok(Provisioned {
            key: req.key.clone(),
            schema,
            instance,
            plan,
            user: req.user.clone(),
            generated_password: generated,
            created: true,
            elapsed: started.elapsed(),
        })
    }

    /// A concurrent create of the same key wins the race: report it as existing.
    async fn explain_create_failure(&self, key: &str, e: CatalogError) -> CatalogError {
        if let CatalogError::Db(db) = &e {
            let dup = db.code().is_some_and(|c| {
                *c == tokio_postgres::error::SqlState::DUPLICATE_OBJECT
                    || *c == tokio_postgres::error::SqlState::DUPLICATE_SCHEMA
                    || *c == tokio_postgres::error::SqlState::UNIQUE_VIOLATION
            });
            if dup {
                return CatalogError::Exists(format!(
                    "tenant \"{key}\" (or its role/schema) already exists"
                ));
            }
        }
        e
    }

    async fn existing(&self, key: &str) -> Result<Option<(String, String)>, CatalogError> {
        let conn = self.pool().get().await?;
        Ok(conn
            .query_opt(
                "SELECT plan, instance FROM tenantgate.tenants WHERE key = $1",
                &[&key],
            )
            .await
            .map_err(not_set_up)?
            .map(|r| (r.get(0), r.get(1))))
    }

    /// Tenants with their plan, status and user count.
    pub async fn list_tenants(&self) -> Result<Vec<TenantRow>, CatalogError> {
        let conn = self.pool().get().await?;
        let rows = conn
            .query(
                "SELECT t.key, t.display_name, t.plan, t.status, t.instance, t.schema_name,
                        (SELECT count(*) FROM tenantgate.tenant_users u WHERE u.tenant = t.key),
                        to_char(t.created_at, 'YYYY-MM-DD HH24:MI:SS')
                   FROM tenantgate.tenants t ORDER BY t.key",
                &[],
            )
            .await
            .map_err(not_set_up)?;
        Ok(rows
            .iter()
            .map(|r| TenantRow {
                key: r.get(0),
                display_name: r.get(1),
                plan: r.get(2),
                status: r.get(3),
                instance: r.get(4),
                schema: r.get(5),
                users: r.get(6),
                created_at: r.get(7),
            })
            .collect())
    }

    /// Suspend or resume (status `suspended` / `active`).
    pub async fn set_status(
        &self,
        key: &str,
        status: &str,
        actor: &str,
    ) -> Result<(), CatalogError> {
        let mut conn = self.pool().get().await?;
        let tx = conn.transaction().await?;
        let n = tx
            .execute(
                "UPDATE tenantgate.tenants SET status = $2, updated_at = now() WHERE key = $1",
                &[&key, &status],
            )
            .await
            .map_err(not_set_up)?;
        if n == 0 {
            return Err(not_found(key));
        }
        let action = if status == "suspended" {
            "tenant.suspend"
        } else {
            "tenant.resume"
        };
        audit(&tx, actor, action, Some(key), json!({"status": status})).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Change the plan (name or alias).
    pub async fn set_plan(
        &self,
        key: &str,
        plan: &str,
        actor: &str,
    ) -> Result<String, CatalogError> {
        let plan = self.resolve_plan(plan).await?;
        let mut conn = self.pool().get().await?;
        let tx = conn.transaction().await?;
        let old: Option<String> = tx
            .query_opt(
                "SELECT plan FROM tenantgate.tenants WHERE key = $1 FOR UPDATE",
                &[&key],
            )
            .await?
            .map(|r| r.get(0));
        let Some(old) = old else {
            return Err(not_found(key));
        };
        tx.execute(
            "UPDATE tenantgate.tenants SET plan = $2, updated_at = now() WHERE key = $1",
            &[&key, &plan],
        )
        .await?;
        audit(
            &tx,
            actor,
            "tenant.set_plan",
            Some(key),
            json!({"from": old, "to": plan}),
        )
        .await?;
        tx.commit().await?;
        Ok(plan)
    }

    /// Add a login user to a tenant.
    pub async fn add_user(
        &self,
        key: &str,
        user: &str,
        password: &str,
        service: bool,
        actor: &str,
    ) -> Result<(), CatalogError> {
        if !valid_user(user) {
            return Err(CatalogError::Invalid(format!(
                "invalid user name \"{user}\""
            )));
        }
        if password.is_empty() {
            return Err(CatalogError::Invalid(
                "the password must not be empty".into(),
            ));
        }
        let verifier = postgres_protocol::password::scram_sha_256(password.as_bytes());
        let mut conn = self.pool().get().await?;
        let tx = conn.transaction().await?;
        let r = tx
            .execute(
                "INSERT INTO tenantgate.tenant_users (tenant, name, scram_verifier, is_service)
                 SELECT key, $2, $3, $4 FROM tenantgate.tenants WHERE key = $1",
                &[&key, &user, &verifier, &service],
            )
            .await;
        let n = r.map_err(|e| {
            exists_or(e, || {
                format!("user \"{user}\" of tenant \"{key}\" already exists")
            })
        })?;
        if n == 0 {
            return Err(not_found(key));
        }
        audit(
            &tx,
            actor,
            "tenant.user_add",
            Some(key),
            json!({"user": user, "service": service}),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Add an admin login for the admin database.
    pub async fn add_admin_user(
        &self,
        name: &str,
        password: &str,
        actor: &str,
    ) -> Result<(), CatalogError> {
        self.add_global_user("admin_users", "admin user", name, password, actor)
            .await
    }

    /// Add a trusted service user (names the tenant per transaction with a header comment).
    pub async fn add_service_user(
        &self,
        name: &str,
        password: &str,
        actor: &str,
    ) -> Result<(), CatalogError> {
        self.add_global_user("service_users", "service user", name, password, actor)
            .await
    }

    async fn add_global_user(
        &self,
        table: &str,
        what: &str,
        name: &str,
        password: &str,
        actor: &str,
    ) -> Result<(), CatalogError> {
        if !valid_user(name) || password.is_empty() {
            return Err(CatalogError::Invalid(format!(
                "a {what} needs a valid name and a non-empty password"
            )));
        }
        let verifier = postgres_protocol::password::scram_sha_256(password.as_bytes());
        let mut conn = self.pool().get().await?;
        let tx = conn.transaction().await?;
        let q = format!("INSERT INTO tenantgate.{table} (name, scram_verifier) VALUES ($1, $2)");
        tx.execute(q.as_str(), &[&name, &verifier])
            .await
            .map_err(|e| exists_or(e, || format!("{what} \"{name}\" already exists")))?;
        audit(
            &tx,
            actor,
            &format!("{}.add", table.trim_end_matches('s')),
            None,
            json!({"name": name}),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// New backend-role password: changed on the instance, then stored encrypted.
    pub async fn rotate_secret(&self, key: &str, actor: &str) -> Result<(), CatalogError> {
        let (role, instance) = self.role_and_instance(key).await?;
        let url = self.instance_url(&instance).await?;
        let password = generate_password();
        let inst = self.instance_client(&url).await?;
        inst.batch_execute(&format!(
            "ALTER ROLE {} PASSWORD {}",
            quote_ident(&role),
            quote_literal(&postgres_protocol::password::scram_sha_256(
                password.as_bytes()
            ))
        ))
        .await?;
        let sealed = self.key().seal(password.as_bytes());
        let mut conn = self.pool().get().await?;
        let tx = conn.transaction().await?;
        tx.execute(
            "UPDATE tenantgate.tenants SET backend_secret = $2, updated_at = now() WHERE key = $1",
            &[&key, &sealed],
        )
        .await?;
        audit(&tx, actor, "tenant.rotate_secret", Some(key), json!({})).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Drop a tenant. Refuses when its schema holds data, unless `force`.
    pub async fn drop_tenant(
        &self,
        key: &str,
        force: bool,
        actor: &str,
    ) -> Result<(), CatalogError> {
        let (role, instance) = self.role_and_instance(key).await?;
        let schema = schema_of(key);
        let url = self.instance_url(&instance).await?;
        let inst = self.instance_client(&url).await?;
        if !force {
            let tables = tables_with_rows(&inst, &schema).await?;
            if !tables.is_empty() {
                return Err(CatalogError::Refused(format!(
                    "tenant \"{key}\" has data in {} table(s) ({}); drop it with --force (FORCE)",
                    tables.len(),
                    tables.join(", ")
                )));
            }
        }
        let mut conn = self.pool().get().await?;
        let tx = conn.transaction().await?;
        tx.execute("DELETE FROM tenantgate.tenants WHERE key = $1", &[&key])
            .await?;
        audit(
            &tx,
            actor,
            "tenant.drop",
            Some(key),
            json!({"force": force, "schema": schema}),
        )
        .await?;
        // Catalog first (routing stops), then the data.
        tx.commit().await?;
        // End the role's sessions so DROP ROLE can proceed.
        inst.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
            &[&role],
        )
        .await?;
        inst.batch_execute(&drop_sql(&role, &schema)).await?;
        Ok(())
    }

    async fn role_and_instance(&self, key: &str) -> Result<(String, String), CatalogError> {
        let conn = self.pool().get().await?;
        conn.query_opt(
            "SELECT backend_role, instance FROM tenantgate.tenants WHERE key = $1",
            &[&key],
        )
        .await
        .map_err(not_set_up)?
        .map(|r| (r.get(0), r.get(1)))
        .ok_or_else(|| not_found(key))
    }

    /// A connection to an instance with the catalog's privileges.
    pub async fn instance_client(&self, url: &str) -> Result<tokio_postgres::Client, CatalogError> {
        super::conninfo::connect(url).await
    }
}

/// A unique violation as `Exists(msg)`; any other error as it is.
fn exists_or(e: tokio_postgres::Error, msg: impl FnOnce() -> String) -> CatalogError {
    if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
        CatalogError::Exists(msg())
    } else {
        not_set_up(e)
    }
}

fn not_found(key: &str) -> CatalogError {
    CatalogError::NotFound(format!("tenant \"{key}\" does not exist"))
}

/// Create the tenant's role and schema and apply the template as that role.
async fn provision_schema(
    tx: &tokio_postgres::Transaction<'_>,
    role: &str,
    schema: &str,
    password: &str,
    template: &[migrations::Migration],
) -> Result<(), CatalogError> {
    // One provisioning at a time per database: concurrent GRANTs on the same database
    // object fail with "tuple concurrently updated".
    tx.batch_execute("SELECT pg_advisory_xact_lock(hashtext('tenantgate.provision'))")
        .await?;
    let db: String = tx.query_one("SELECT current_database()", &[]).await?.get(0);
    let (r, s) = (quote_ident(role), quote_ident(schema));
    // The password goes over as a SCRAM verifier, so server logs never hold it.
    let verifier = postgres_protocol::password::scram_sha_256(password.as_bytes());
    tx.batch_execute(&format!(
        "CREATE ROLE {r} LOGIN NOINHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD {pw};
         CREATE SCHEMA {s} AUTHORIZATION {r};
         REVOKE ALL ON SCHEMA {s} FROM PUBLIC;
         GRANT CONNECT ON DATABASE {d} TO {r};
         ALTER ROLE {r} SET search_path = {s};
         SET LOCAL ROLE {r};
         SET LOCAL search_path = {s};",
        pw = quote_literal(&verifier),
        d = quote_ident(&db),
    ))
    .await?;
    for m in template {
        tx.batch_execute(&m.sql).await?;
    }
    tx.batch_execute("RESET ROLE; SET LOCAL search_path TO DEFAULT;")
        .await?;
    Ok(())
}

fn drop_sql(role: &str, schema: &str) -> String {
    let (r, s) = (quote_ident(role), quote_ident(schema));
    format!("DROP SCHEMA IF EXISTS {s} CASCADE; DROP OWNED BY {r}; DROP ROLE IF EXISTS {r};")
}

/// Tables of `schema` that hold at least one row.
async fn tables_with_rows<C: GenericClient>(
    c: &C,
    schema: &str,
) -> Result<Vec<String>, CatalogError> {
    let tables: Vec<String> = c
        .query(
            "SELECT tablename FROM pg_tables WHERE schemaname = $1 ORDER BY tablename",
            &[&schema],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut full = Vec::new();
    for t in tables {
        let q = format!(
            "SELECT EXISTS (SELECT 1 FROM {}.{})",
            quote_ident(schema),
            quote_ident(&t)
        );
        if c.query_one(q.as_str(), &[]).await?.get::<_, bool>(0) {
            full.push(t);
        }
    }
    Ok(full)
}

#[cfg(test)]
mod tests {
    #[test]
    fn names() {
        assert_eq!(super::role_of("acme"), "tg_acme");
        assert_eq!(super::schema_of("acme"), "tenant_acme");
        assert!(super::valid_user("app.user-1"));
        assert!(!super::valid_user("a b"));
        assert!(!super::valid_user("x';--"));
    }
}
