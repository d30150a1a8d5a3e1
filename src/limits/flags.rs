//! Per-tenant feature flags: names, validation, and what the proxy does with them. Pure.
//!
//! Any flag `name = value` is visible to the tenant's sessions as the custom setting
//! `tenantgate.<name>` (`SELECT current_setting('tenantgate.read_only', true)`). The proxy
//! itself honours `read_only` (writes refused with 25006, and the server session runs with
//! `default_transaction_read_only = on`), `query_cache` (the result cache may serve the
//! tenant), `slow_query_ms` (slower statements are logged and counted) and
//! `max_statement_ms` (`statement_timeout` on the tenant's server sessions).

use std::collections::BTreeMap;

use crate::backend::settings::ClientSettings;

/// A tenant's flags, parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flags {
    pub all: BTreeMap<String, String>,
    pub read_only: bool,
    pub query_cache: bool,
    /// 0 = off.
    pub slow_query_ms: u64,
    /// 0 = off.
    pub max_statement_ms: u64,
    /// Server settings the flags ask for, applied on every checkout.
    pub settings: Vec<(String, String)>,
    /// The ones the proxy holds (`default_transaction_read_only`, `statement_timeout`):
    /// server connections start with them, so that `RESET ALL` and `DISCARD ALL` return
    /// to them.
    pub held: Vec<(String, String)>,
}

/// Why a flag cannot be set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlagError {
    #[error("flag name {0:?} must be 1-63 characters of a-z, 0-9 and _, starting with a letter")]
    Name(String),
    #[error("flag {0} takes {1}, not {2:?}")]
    Value(String, &'static str, String),
}

/// Check a flag and normalise its value (`on`/`true`/`1` → `true` for booleans).
pub fn validate(name: &str, value: &str) -> Result<String, FlagError> {
    if !crate::catalog::valid_key(name) {
        return Err(FlagError::Name(name.to_owned()));
    }
    let v = value.trim();
    match name {
        "read_only" | "query_cache" => parse_bool(v)
            .map(|b| b.to_string())
            .ok_or_else(|| FlagError::Value(name.into(), "true or false", value.into())),
        // PostgreSQL's statement_timeout takes at most i32::MAX milliseconds.
        "slow_query_ms" | "max_statement_ms" => v
            .parse::<u64>()
            .ok()
            .filter(|&n| n <= i32::MAX as u64)
            .map(|n| n.to_string())
            .ok_or_else(|| {
                FlagError::Value(
                    name.into(),
                    "a number of milliseconds up to 2147483647",
                    value.into(),
                )
            }),
        _ if v.len() > 1024 || v.contains('\0') => Err(FlagError::Value(
            name.into(),
            "at most 1024 characters",
            value.chars().take(40).collect(),
        )),
        _ => Ok(v.to_owned()),
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "on" | "1" | "yes" => Some(true),
        "false" | "off" | "0" | "no" => Some(false),
        _ => None,
    }
}

impl Flags {
    /// Parse stored flags; unknown or malformed values of known flags count as unset.
    pub fn from_map(all: BTreeMap<String, String>) -> Flags {
        let b = |k: &str| all.get(k).and_then(|v| parse_bool(v)).unwrap_or(false);
        // As `validate` bounds them (PostgreSQL's statement_timeout takes at most
        // i32::MAX ms): a value stored otherwise counts as unset.
        let n = |k: &str| {
            all.get(k)
                .and_then(|v| v.parse::<u64>().ok())
                .filter(|&n| n <= i32::MAX as u64)
                .unwrap_or(0)
        };
        let mut f = Flags {
            read_only: b("read_only"),
            query_cache: b("query_cache"),
            slow_query_ms: n("slow_query_ms"),
            max_statement_ms: n("max_statement_ms"),
            settings: Vec::new(),
            held: Vec::new(),
            all,
        };
        for (k, v) in &f.all {
            f.settings.push((format!("tenantgate.{k}"), v.clone()));
        }
        if f.read_only {
            f.held
                .push(("default_transaction_read_only".into(), "on".into()));
        }
        if f.max_statement_ms > 0 {
            f.held
                .push(("statement_timeout".into(), f.max_statement_ms.to_string()));
        }
        f.settings.extend(f.held.iter().cloned());
        f
    }

    /// Client settings plus the flags' settings (which win), made for one checkout (so
    /// unnamed: see [`ClientSettings::unnamed`]); `None` when the flags set nothing and
    /// the client's own list applies as it is.
    pub fn merge_settings(&self, client: &[(String, String)]) -> Option<ClientSettings> {
        if self.settings.is_empty() {
            return None;
        }
        let mut out: Vec<(String, String)> = client
            .iter()
            .filter(|(k, _)| !self.settings.iter().any(|(f, _)| f == k))
            .cloned()
            .collect();
        out.extend(self.settings.iter().cloned());
        Some(ClientSettings::unnamed(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_settings() {
        let mut m = BTreeMap::new();
        m.insert("read_only".to_string(), "true".to_string());
        m.insert("max_statement_ms".to_string(), "250".to_string());
        m.insert("beta_ui".to_string(), "on".to_string());
        let f = Flags::from_map(m);
        assert!(f.read_only && !f.query_cache);
        assert_eq!(f.max_statement_ms, 250);
        let merged = f
            .merge_settings(&[
                ("statement_timeout".into(), "0".into()),
                ("application_name".into(), "x".into()),
            ])
            .expect("the flags set settings");
        assert!(merged.contains(&("statement_timeout".into(), "250".into())));
        assert!(!merged.contains(&("statement_timeout".into(), "0".into())));
        assert!(merged.contains(&("tenantgate.beta_ui".into(), "on".into())));
        assert!(merged.contains(&("default_transaction_read_only".into(), "on".into())));
        assert!(merged.contains(&("application_name".into(), "x".into())));
        let no_flags = Flags::from_map(BTreeMap::new());
        assert!(no_flags
            .merge_settings(&[("a".into(), "b".into())])
            .is_none());
        let custom = Flags::from_map(BTreeMap::from([("beta_ui".into(), "on".into())]));
        assert!(
            custom.merge_settings(&[]).is_some(),
            "a custom flag is a setting"
        );
    }

    #[test]
    fn validation() {
        assert_eq!(validate("read_only", "ON").unwrap(), "true");
        assert!(validate("read_only", "maybe").is_err());
        assert_eq!(
            validate("max_statement_ms", "2147483647").unwrap(),
            "2147483647"
        );
        assert!(validate("max_statement_ms", "3000000000").is_err());
        assert_eq!(validate("slow_query_ms", " 100 ").unwrap(), "100");
        assert!(validate("max_statement_ms", "-1").is_err());
        assert!(validate("Bad-Name", "x").is_err());
        assert_eq!(validate("beta_ui", "on").unwrap(), "on");
    }
}
