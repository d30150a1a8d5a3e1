//! A master catalog in its own database on the shared server, set up, with a unique
//! prefix for tenant keys (backend roles are cluster-wide), and its cleanup.

use tenantgate::catalog::crypto::SecretKey;
use tenantgate::catalog::store::SetupReport;
use tenantgate::catalog::Catalog;
use tenantgate::config::{AuthMethod, AuthRule, Config};

use super::{admin, scratch_dir, unique, PG_HOST, PG_PORT};

pub struct CatalogDb {
    pub db: String,
    pub url: String,
    pub key: String,
    pub catalog: Catalog,
    /// Prefix for this test's tenant keys.
    pub prefix: String,
    /// What `setup` did.
    pub setup: SetupReport,
}

impl CatalogDb {
    /// Database `<db_prefix>_<id>`, tenant key prefix `<key_prefix><id>`.
    pub async fn new(db_prefix: &str, key_prefix: &str) -> CatalogDb {
        let id = unique();
        let db = format!("{db_prefix}_{id}");
        admin("postgres")
            .await
            .batch_execute(&format!("CREATE DATABASE {db}"))
            .await
            .unwrap();
        let url = format!("postgresql://postgres@{PG_HOST}:{PG_PORT}/{db}");
        let key = SecretKey::generate();
        let catalog = Catalog::connect(&url, &key).await.unwrap();
        let setup = catalog.setup().await.unwrap();
        CatalogDb {
            db,
            url,
            key,
            catalog,
            prefix: format!("{key_prefix}{id}"),
            setup,
        }
    }
}

/// A proxy reading tenants from the catalog at `url` (secret `key`): SCRAM for everyone,
/// listening on port 0, telemetry into a scratch directory named after `db`.
pub fn proxy_config(url: &str, key: &str, db: &str) -> Config {
    Config {
        listen: "127.0.0.1:0".into(),
        catalog_url: url.into(),
        catalog_key: key.into(),
        auth: vec![AuthRule {
            user: "*".into(),
            address: "*".parse().unwrap(),
            method: AuthMethod::ScramSha256,
        }],
        telemetry: tenantgate::config::TelemetryConfig {
            dir: scratch_dir(db),
            ..Default::default()
        },
        ..Config::default()
    }
}

/// Drop the catalog database and the backend roles of tenants with `prefix`.
pub async fn drop_catalog(db: &str, prefix: &str) {
    let a = admin("postgres").await;
    let _ = a
        .batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        .await;
    let roles: Vec<String> = a
        .query(
            "SELECT rolname::text FROM pg_roles WHERE rolname LIKE $1",
            &[&format!("tg_{prefix}%")],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for r in roles {
        let _ = a.batch_execute(&format!("DROP ROLE IF EXISTS {r}")).await;
    }
}
