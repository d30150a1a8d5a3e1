//! A tenant directory built from the `[[tenants]]` tables of the config file.

use std::sync::Arc;

use foldhash::{HashMap, HashMapExt};

use super::{LoginUser, Placement, Tenant, TenantDirectory, TenantLogins};
use crate::config::{load::parse_mode, Config};
use crate::frontend::auth::ScramVerifier;

/// Immutable snapshot of the configured tenants; reload builds a new one.
pub struct StaticDirectory {
    tenants: HashMap<String, Arc<Tenant>>,
    users: TenantLogins,
    services: HashMap<String, Arc<LoginUser>>,
    admins: HashMap<String, Arc<LoginUser>>,
}

impl StaticDirectory {
    /// Build from a validated config.
    pub fn from_config(cfg: &Config) -> Self {
        let instances: HashMap<_, _> = cfg.instances.iter().map(|i| (i.name.as_str(), i)).collect();
        let mut tenants = HashMap::new();
        let mut users = TenantLogins::default();
        for t in &cfg.tenants {
            let inst = instances[t.instance.as_str()];
            let placement = Placement {
                instance: inst.name.clone(),
                host: inst.host.clone(),
                port: inst.port,
                database: if t.database.is_empty() {
                    inst.dbname.clone()
                } else {
                    t.database.clone()
                },
                schema: (!t.schema.is_empty()).then(|| t.schema.clone()),
                backend_user: t.backend_user.clone(),
                backend_password: if t.backend_password.is_empty() {
                    inst.password.clone()
                } else {
                    t.backend_password.clone()
                },
                tls: inst.tls(),
            };
            let tenant = Tenant {
                key: t.key.clone(),
                status: super::TenantStatus::Active,
                placement,
                pool_mode: parse_mode(&t.pool_mode).unwrap_or(cfg.pool.mode),
                pool_size: if t.pool_size == 0 {
                    cfg.pool.default_size
                } else {
                    t.pool_size
                },
                plan: t.plan.clone(),
                paused: false,
                limits: crate::limits::TenantLimits {
                    queries_per_second: t.queries_per_second,
                    queries_per_day: t.queries_per_day,
                    max_connections: t.max_connections,
                },
                rates: crate::telemetry::event::CostRates {
                    per_ms: cfg.telemetry.cost_per_ms,
                    per_row: cfg.telemetry.cost_per_row,
                    per_kib: cfg.telemetry.cost_per_kib,
                },
            };
            tenants.insert(t.key.clone(), Arc::new(tenant));
            for u in &t.users {
                users.insert(&t.key, login_user(u));
            }
        }
        let services = cfg
            .service_users
            .iter()
            .map(|u| (u.name.clone(), Arc::new(login_user(u))))
            .collect();
        let admins = cfg
            .admin_users
            .iter()
            .map(|u| (u.name.clone(), Arc::new(login_user(u))))
            .collect();
        StaticDirectory {
            tenants,
            users,
            services,
            admins,
        }
    }
}

fn login_user(u: &crate::config::LoginUserConfig) -> LoginUser {
    let scram = if u.scram_verifier.is_empty() {
        ScramVerifier::from_password(&u.password)
    } else {
        ScramVerifier::parse(&u.scram_verifier).expect("validated")
    };
    LoginUser {
        name: u.name.clone(),
        password: (!u.password.is_empty()).then(|| u.password.clone()),
        scram,
    }
}

impl TenantDirectory for StaticDirectory {
    fn tenant(&self, key: &str) -> Option<Arc<Tenant>> {
        self.tenants.get(key).cloned()
    }

    fn login(&self, tenant: &str, user: &str) -> Option<Arc<LoginUser>> {
        self.users.get(tenant, user)
    }

    fn tenants(&self) -> Vec<Arc<Tenant>> {
        self.tenants.values().cloned().collect()
    }

    fn service_user(&self, name: &str) -> Option<Arc<LoginUser>> {
        self.services.get(name).cloned()
    }
    fn admin_user(&self, name: &str) -> Option<Arc<LoginUser>> {
        self.admins.get(name).cloned()
    }
}
