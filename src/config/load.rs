//! Reading a config file with environment overrides, then validating it.

use std::collections::HashSet;
use std::path::Path;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;

use super::{Config, PoolMode};

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config: {0}")]
    Parse(#[from] Box<figment::Error>),
    #[error("config: {0}")]
    Invalid(String),
}

/// Top-level keys of [`Config`], the only names `TENANTGATE_*` variables may start with.
const TOP_LEVEL_KEYS: &[&str] = &[
    "listen",
    "reuse_port",
    "catalog_url",
    "catalog_key",
    "migrate",
    "guard",
    "metrics",
    "telemetry",
    "redis",
    "instance_name",
    "workers",
    "tls",
    "pool",
    "limits",
    "tcp",
    "auth",
    "instances",
    "tenants",
    "service_users",
    "admin_users",
];

/// Load `path` (if given), apply `TENANTGATE_*` environment overrides, validate.
pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
    let mut fig = Figment::from(Serialized::defaults(Config::default()));
    if let Some(p) = path {
        if !p.exists() {
            return Err(ConfigError::Invalid(format!(
                "file {} does not exist",
                p.display()
            )));
        }
        fig = fig.merge(Toml::file(p));
    }
    // Only variables naming a config section or key are config; others with the prefix
    // (TENANTGATE_LOG, TENANTGATE_CONFIG, test helpers) belong to other parts.
    fig = fig.merge(
        Env::prefixed("TENANTGATE_")
            .filter(|k| {
                let first = k.as_str().split("__").next().unwrap_or_default();
                TOP_LEVEL_KEYS.iter().any(|t| t.eq_ignore_ascii_case(first))
            })
            .split("__"),
    );
    let cfg: Config = fig.extract().map_err(Box::new)?;
    validate(&cfg)?;
    Ok(cfg)
}

/// Check cross-field rules that serde cannot express.
pub fn validate(cfg: &Config) -> Result<(), ConfigError> {
    let bad = |m: String| Err(ConfigError::Invalid(m));
    if cfg.listen.parse::<std::net::SocketAddr>().is_err() {
        return bad(format!("listen = {:?} is not an address:port", cfg.listen));
    }
    if cfg.tls.cert.is_empty() != cfg.tls.key.is_empty() {
        return bad("tls.cert and tls.key must be set together".into());
    }
    if !cfg.catalog_url.is_empty() {
        if let Err(e) = crate::catalog::crypto::SecretKey::from_base64(&cfg.catalog_key) {
            return bad(format!("catalog_key: {e}"));
        }
    }
    if !cfg.metrics.listen.is_empty() && cfg.metrics.listen.parse::<std::net::SocketAddr>().is_err()
    {
        return bad(format!(
            "metrics.listen = {:?} is not an address:port",
            cfg.metrics.listen
        ));
    }
    let t = &cfg.telemetry;
    if t.queue_capacity == 0 || t.batch_size == 0 || t.flush_ms == 0 || t.rollup_interval_ms == 0 {
        return bad("telemetry queue_capacity, batch_size, flush_ms and rollup_interval_ms must be at least 1".into());
    }
    if !t.mongodb_url.is_empty() && !t.mongodb_url.starts_with("mongodb") {
        return bad(format!(
            "telemetry.mongodb_url = {:?} is not a mongodb:// URL",
            t.mongodb_url
        ));
    }
    if cfg.migrate.concurrency == 0 {
        return bad("migrate.concurrency must be at least 1".into());
    }
    if cfg.tcp.keepalive
        && (cfg.tcp.keepalive_idle_s == 0
            || cfg.tcp.keepalive_interval_s == 0
            || cfg.tcp.keepalive_count == 0)
    {
        return bad(
            "tcp keepalive_idle_s, keepalive_interval_s and keepalive_count must be at least 1"
                .into(),
        );
    }
    if cfg.pool.default_size == 0 || cfg.pool.instance_max_connections == 0 {
        return bad("pool sizes must be at least 1".into());
    }
    let mut names = HashSet::new();
    for i in &cfg.instances {
        if !names.insert(i.name.as_str()) {
            return bad(format!("instance {:?} is defined twice", i.name));
        }
        if !i.sslmode.is_empty() {
            if let Err(e) = crate::backend::tls::SslMode::parse_named(&i.sslmode) {
                return bad(format!("instance {:?}: {e}", i.name));
            }
        }
        if let Err(e) = i.tls().check() {
            return bad(format!("instance {:?}: {e}", i.name));
        }
    }
    let mut keys = HashSet::new();
    for t in &cfg.tenants {
        if !crate::catalog::valid_key(&t.key) {
            return bad(format!(
                "tenant key {:?} must be 1-63 lower-case letters, digits or '_', starting with a letter",
                t.key
            ));
        }
        if !keys.insert(t.key.as_str()) {
            return bad(format!("tenant {:?} is defined twice", t.key));
        }
        if !names.contains(t.instance.as_str()) {
            return bad(format!(
                "tenant {:?} names unknown instance {:?}",
                t.key, t.instance
            ));
        }
        if !t.pool_mode.is_empty() && parse_mode(&t.pool_mode).is_none() {
            return bad(format!(
                "tenant {:?}: pool_mode must be transaction or session",
                t.key
            ));
        }
        for u in &t.users {
            if u.password.is_empty() && u.scram_verifier.is_empty() {
                return bad(format!(
                    "tenant {:?} user {:?} needs password or scram_verifier",
                    t.key, u.name
                ));
            }
            if !u.scram_verifier.is_empty()
                && crate::frontend::auth::ScramVerifier::parse(&u.scram_verifier).is_none()
            {
                return bad(format!(
                    "tenant {:?} user {:?}: scram_verifier is malformed",
                    t.key, u.name
                ));
            }
        }
    }
    Ok(())
}

/// Parse a pool mode name.
pub fn parse_mode(s: &str) -> Option<PoolMode> {
    match s {
        "transaction" => Some(PoolMode::Transaction),
        "session" => Some(PoolMode::Session),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses_and_matches_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/tenantgate.example.toml");
        let cfg = load(Some(&path)).expect("example config must load");
        let d = Config::default();
        assert_eq!(cfg.listen, d.listen);
        assert_eq!(cfg.reuse_port, d.reuse_port);
        assert_eq!(cfg.pool, d.pool, "example documents the pool defaults");
        assert_eq!(cfg.limits, d.limits, "example documents the limit defaults");
        assert_eq!(
            cfg.telemetry, d.telemetry,
            "example documents the telemetry defaults"
        );
        assert_eq!(cfg.redis, d.redis, "example documents the redis defaults");
        assert_eq!(cfg.tcp, d.tcp, "example documents the tcp defaults");
        assert_eq!(cfg.tenants.len(), 1);
        assert_eq!(cfg.tenants[0].users[0].name, "app");
    }

    #[test]
    fn demo_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/demo.toml");
        let cfg = load(Some(&path)).expect("demo config must load");
        assert!(
            !cfg.catalog_url.is_empty(),
            "the demo routes from the catalog"
        );
    }

    #[test]
    fn top_level_keys_match_the_struct() {
        let v = toml::Value::try_from(Config::default()).unwrap();
        let mut keys: Vec<&str> = v.as_table().unwrap().keys().map(String::as_str).collect();
        let mut known = TOP_LEVEL_KEYS.to_vec();
        keys.sort();
        known.sort();
        assert_eq!(keys, known);
    }

    #[test]
    fn bad_values_are_refused() {
        let c = Config {
            listen: "nope".into(),
            ..Config::default()
        };
        assert!(validate(&c).is_err());
        let mut c = Config::default();
        c.tenants
            .push(crate::config::TenantConfig::new("Bad Key", "x"));
        assert!(validate(&c).is_err());
    }

    #[test]
    fn a_new_tenant_config_is_what_the_file_gives_with_its_defaults() {
        let parsed: crate::config::TenantConfig =
            toml::from_str("key = \"acme\"\nbackend_user = \"tenant_acme\"").unwrap();
        assert_eq!(
            crate::config::TenantConfig::new("acme", "tenant_acme"),
            parsed
        );
    }

    #[test]
    fn auth_addresses_are_parsed_once_at_load() {
        let rule = |addr: &str| {
            toml::from_str::<crate::config::AuthRule>(&format!(
                "address = {addr:?}\nmethod = \"trust\""
            ))
        };
        let net = rule("10.0.0.0/8").unwrap().address;
        assert!(net.covers("10.1.2.3".parse().unwrap()));
        assert!(!net.covers("11.0.0.1".parse().unwrap()));
        assert!(rule("::/0")
            .unwrap()
            .address
            .covers("1.2.3.4".parse().unwrap()));
        let err = rule("10.0.0.0/33").unwrap_err().to_string();
        assert!(err.contains("is not a CIDR"), "{err}");
        // Written back as it was read (admin SHOW CONFIG, reload comparisons).
        let v = toml::Value::try_from(rule("*").unwrap()).unwrap();
        assert_eq!(v["address"].as_str(), Some("*"));
    }
}
