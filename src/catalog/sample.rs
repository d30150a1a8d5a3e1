//! The sample SaaS that `tenantgate setup --sample` creates: five tenants on different plans
//! with generated users, projects and tasks.

use serde_json::json;

use super::migrations;
use super::provision::{role_of, schema_of, NewTenant, Provisioned};
use super::store::{Catalog, CatalogError};
use crate::backend::server::quote_ident;

/// (key, display name, plan, users, session pooling)
pub const SAMPLE_TENANTS: &[(&str, &str, &str, u32, bool)] = &[
    ("acme", "Acme Corp", "enterprise", 200, false),
    ("techco", "TechCo", "pro", 80, true),
    ("startup", "StartUp", "free", 10, false),
    ("globex", "Globex", "starter", 30, false),
    ("initech", "Initech", "pro", 60, false),
];

/// The demo's admin login of the admin database (documented in README.md; demo only).
pub const SAMPLE_ADMIN: (&str, &str) = ("admin", "admin-demo-password");

/// The sample tenants' login password: `<key>-app-password` (documented in README.md).
pub fn sample_password(key: &str) -> String {
    format!("{key}-app-password")
}

/// Create the sample tenants (skipping existing ones) and fill empty ones with data.
pub async fn create_samples(
    catalog: &Catalog,
    actor: &str,
) -> Result<Vec<Provisioned>, CatalogError> {
    let mut out = Vec::new();
    for (key, name, plan, users, session) in SAMPLE_TENANTS {
        let p = catalog
            .create_tenant(&NewTenant {
                key: key.to_string(),
                display_name: Some(name.to_string()),
                plan: plan.to_string(),
                instance: None,
                user: "app".into(),
                password: Some(sample_password(key)),
                actor: actor.into(),
            })
            .await?;
        if *session {
            let c = catalog.pool().get().await?;
            c.execute(
                "UPDATE tenantgate.tenants SET pool_mode = 'session' WHERE key = $1",
                &[key],
            )
            .await?;
        }
        fill(catalog, key, *users).await?;
        out.push(p);
    }
    let c = catalog.pool().get().await?;
    c.execute(
        "INSERT INTO tenantgate.audit_log (actor, action, detail) VALUES ($1, 'setup.sample', $2::text::jsonb)",
        &[&actor, &json!({"tenants": SAMPLE_TENANTS.len()}).to_string()],
    )
    .await?;
    Ok(out)
}

async fn fill(catalog: &Catalog, key: &str, users: u32) -> Result<(), CatalogError> {
    let url = catalog.instance_url("primary").await?;
    let mut c = catalog.instance_client(&url).await?;
    let tx = c.transaction().await?;
    tx.batch_execute(&format!(
        "SET LOCAL ROLE {}; SET LOCAL search_path = {};",
        quote_ident(&role_of(key)),
        quote_ident(&schema_of(key))
    ))
    .await?;
    let empty: bool = tx
        .query_one("SELECT NOT EXISTS (SELECT 1 FROM users)", &[])
        .await?
        .get(0);
    if empty {
        tx.batch_execute(&migrations::sample_data(users)).await?;
    }
    tx.commit().await?;
    Ok(())
}
