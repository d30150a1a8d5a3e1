//! The tenant directory: which tenants exist, where each lives, and who may log in.
//!
//! [`TenantDirectory`] is the seam the proxy routes through. Lookups are synchronous reads of
//! an in-memory snapshot so the connection path never waits on IO; implementations refresh
//! their snapshot in the background. [`static_dir::StaticDirectory`] reads the config file;
//! [`pg_dir::CatalogDirectory`] reads the master catalog ([`store`]) and follows its changes
//! by LISTEN/NOTIFY; [`conninfo`] reads their connection strings. [`provision`] creates and changes tenants; [`migrate`] keeps tenant
//! schemas in step with `migrations/tenant/`; [`moves`] moves a tenant to another instance
//! online.

pub mod conninfo;
pub mod crypto;
pub mod migrate;
pub mod migrations;
pub mod moves;
pub mod pg_dir;
pub mod provision;
pub mod sample;
pub mod static_dir;
pub mod store;

pub use store::{Catalog, CatalogError};

use std::sync::Arc;

use crate::config::PoolMode;
use crate::frontend::auth::ScramVerifier;

/// Where a tenant's data lives and how the proxy logs in to it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Placement {
    /// Instance name (for the per-instance connection cap and reporting).
    pub instance: String,
    pub host: String,
    pub port: u16,
    pub database: String,
    /// The tenant's schema; `None` when the placement is used as it is.
    pub schema: Option<String>,
    pub backend_user: String,
    pub backend_password: String,
    /// TLS to the instance.
    pub tls: crate::backend::tls::ServerTls,
}

/// Lifecycle state of a tenant. Only `Trial` and `Active` tenants may connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantStatus {
    Trial,
    Active,
    Suspended,
    Cancelled,
}

impl TenantStatus {
    pub fn parse(s: &str) -> Self {
        match s {
            "trial" => TenantStatus::Trial,
            "suspended" => TenantStatus::Suspended,
            "cancelled" => TenantStatus::Cancelled,
            _ => TenantStatus::Active,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TenantStatus::Trial => "trial",
            TenantStatus::Active => "active",
            TenantStatus::Suspended => "suspended",
            TenantStatus::Cancelled => "cancelled",
        }
    }

    pub fn may_connect(self) -> bool {
        matches!(self, TenantStatus::Trial | TenantStatus::Active)
    }
}

/// A tenant as the proxy routes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Tenant {
    pub key: String,
    pub status: TenantStatus,
    pub placement: Placement,
    pub pool_mode: PoolMode,
    pub pool_size: usize,
    /// Plan key (telemetry labels and cost).
    pub plan: String,
    /// The plan's cost rates.
    pub rates: crate::telemetry::event::CostRates,
    /// The plan's limits with the tenant's overrides.
    pub limits: crate::limits::TenantLimits,
    /// New transactions are held (a move is cutting over).
    pub paused: bool,
}

/// A login credential of a tenant user.
#[derive(Debug, Clone)]
pub struct LoginUser {
    pub name: String,
    /// Plain password when known (enables md5).
    pub password: Option<String>,
    pub scram: ScramVerifier,
}

/// Tenants' login users, by tenant key and then user name: a login looks one up without
/// building a key.
#[derive(Debug, Default)]
pub struct TenantLogins(foldhash::HashMap<String, foldhash::HashMap<String, Arc<LoginUser>>>);

impl TenantLogins {
    pub fn insert(&mut self, tenant: &str, user: LoginUser) {
        self.0
            .entry(tenant.to_owned())
            .or_default()
            .insert(user.name.clone(), Arc::new(user));
    }

    pub fn get(&self, tenant: &str, user: &str) -> Option<Arc<LoginUser>> {
        self.0.get(tenant)?.get(user).cloned()
    }
}

/// Source of tenants and their login users.
pub trait TenantDirectory: Send + Sync + 'static {
    fn tenant(&self, key: &str) -> Option<Arc<Tenant>>;
    fn login(&self, tenant: &str, user: &str) -> Option<Arc<LoginUser>>;
    /// All tenants, for pool maintenance and reporting.
    fn tenants(&self) -> Vec<Arc<Tenant>>;
    /// A trusted service user: not tied to one tenant, names it per transaction.
    fn service_user(&self, _name: &str) -> Option<Arc<LoginUser>> {
        None
    }
    /// An admin login of the admin database.
    fn admin_user(&self, _name: &str) -> Option<Arc<LoginUser>> {
        None
    }
}

impl<T: TenantDirectory> TenantDirectory for Arc<T> {
    fn tenant(&self, key: &str) -> Option<Arc<Tenant>> {
        (**self).tenant(key)
    }
    fn login(&self, tenant: &str, user: &str) -> Option<Arc<LoginUser>> {
        (**self).login(tenant, user)
    }
    fn tenants(&self) -> Vec<Arc<Tenant>> {
        (**self).tenants()
    }
    fn service_user(&self, name: &str) -> Option<Arc<LoginUser>> {
        (**self).service_user(name)
    }
    fn admin_user(&self, name: &str) -> Option<Arc<LoginUser>> {
        (**self).admin_user(name)
    }
}

/// A tenant key: 1-63 chars of `[a-z0-9_]`, starting with a letter, so it is always a
/// safe identifier.
pub fn valid_key(key: &str) -> bool {
    let b = key.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys() {
        for ok in ["acme", "a1", "big_corp"] {
            assert!(super::valid_key(ok), "{ok}");
        }
        for bad in ["", "1a", "Acme", "a-b", "a;drop", "a b", &"a".repeat(64)] {
            assert!(!super::valid_key(bad), "{bad}");
        }
    }
}
