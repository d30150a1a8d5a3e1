//! Tenant identification at startup.
//!
//! Order: `options=-c tenant=acme`, then a user name `app@acme`, then a database name that
//! is a known tenant. The remaining `-c name=value` options and other startup parameters become
//! session settings the proxy applies to whichever server connection the client gets.

/// Where the tenant came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantSource {
    Options,
    UserSuffix,
    Database,
}

/// The startup decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupRoute {
    /// The login user the client authenticates as (without any `@tenant`).
    pub login_user: String,
    /// The tenant key, if any source named one.
    pub tenant: Option<(String, TenantSource)>,
    /// Session settings to apply on server connections, lower-case names, in order.
    pub settings: Vec<(String, String)>,
}

/// Startup parameters that describe the connection rather than a setting.
const NOT_SETTINGS: &[&str] = &["user", "database", "options", "replication", "tenant"];

/// Decide the route. `is_tenant` answers whether a database name is a known tenant.
pub fn resolve(params: &[(String, String)], is_tenant: impl Fn(&str) -> bool) -> StartupRoute {
    let get = |k: &str| {
        params
            .iter()
            .find(|(pk, _)| pk == k)
            .map(|(_, v)| v.as_str())
    };
    let user = get("user").unwrap_or_default();
    let mut settings: Vec<(String, String)> = params
        .iter()
        .filter(|(k, _)| !NOT_SETTINGS.contains(&k.as_str()))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect();
    let mut opt_tenant = None;
    for (k, v) in parse_options(get("options").unwrap_or_default()) {
        if k == "tenant" {
            opt_tenant = Some(v);
        } else {
            settings.retain(|(sk, _)| *sk != k);
            settings.push((k, v));
        }
    }
    // A `tenant` startup parameter (some drivers pass arbitrary keys) counts like the option.
    if opt_tenant.is_none() {
        opt_tenant = get("tenant").map(str::to_owned);
    }
    let split = user
        .rsplit_once('@')
        .filter(|(u, t)| !u.is_empty() && !t.is_empty());
    let (login_user, tenant) = match (opt_tenant, split) {
        (Some(t), Some((u, ut))) if ut == t => (u.to_owned(), Some((t, TenantSource::Options))),
        (Some(t), _) => (user.to_owned(), Some((t, TenantSource::Options))),
        (None, Some((u, t))) => (u.to_owned(), Some((t.to_owned(), TenantSource::UserSuffix))),
        (None, None) => {
            let db = get("database").unwrap_or(user);
            let t = is_tenant(db).then(|| (db.to_owned(), TenantSource::Database));
            (user.to_owned(), t)
        }
    };
    StartupRoute {
        login_user,
        tenant,
        settings,
    }
}

/// Parse a libpq `options` string: `-c a=b`, `-ca=b`, `--a=b`, with backslash escapes.
/// Names are lower-cased and `-` in names becomes `_`, as PostgreSQL does.
pub fn parse_options(s: &str) -> Vec<(String, String)> {
    let words = split_words(s);
    let mut out = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let w = &words[i];
        let kv = if w == "-c" {
            i += 1;
            words.get(i).cloned()
        } else if let Some(r) = w.strip_prefix("--") {
            Some(r.to_owned())
        } else {
            w.strip_prefix("-c").map(str::to_owned)
        };
        if let Some((k, v)) = kv.as_deref().and_then(|kv| kv.split_once('=')) {
            out.push((k.to_ascii_lowercase().replace('-', "_"), v.to_owned()));
        }
        i += 1;
    }
    out
}

fn split_words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            c if c.is_whitespace() => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn tenant(r: &StartupRoute) -> Option<(&str, TenantSource)> {
        r.tenant.as_ref().map(|(t, s)| (t.as_str(), *s))
    }

    #[test]
    fn resolution_order_table() {
        let known = |d: &str| d == "acme" || d == "globex";
        type Case<'a> = (
            &'a [(&'a str, &'a str)],
            &'a str,
            Option<(&'a str, TenantSource)>,
        );
        let cases: &[Case] = &[
            (
                &[("user", "app"), ("options", "-c tenant=acme")],
                "app",
                Some(("acme", TenantSource::Options)),
            ),
            (
                &[("user", "app@acme")],
                "app",
                Some(("acme", TenantSource::UserSuffix)),
            ),
            (
                &[("user", "app"), ("database", "globex")],
                "app",
                Some(("globex", TenantSource::Database)),
            ),
            (&[("user", "app"), ("database", "nope")], "app", None),
            // options beat the user suffix; a matching suffix is stripped
            (
                &[("user", "app@globex"), ("options", "-c tenant=acme")],
                "app@globex",
                Some(("acme", TenantSource::Options)),
            ),
            (
                &[("user", "app@acme"), ("options", "-ctenant=acme")],
                "app",
                Some(("acme", TenantSource::Options)),
            ),
            // user suffix beats the database
            (
                &[("user", "app@acme"), ("database", "globex")],
                "app",
                Some(("acme", TenantSource::UserSuffix)),
            ),
            // a trailing or leading @ is not a tenant
            (&[("user", "app@"), ("database", "x")], "app@", None),
            (&[("user", "@acme"), ("database", "x")], "@acme", None),
            // the last @ separates, so e-mail style users work
            (
                &[("user", "jo@example.com@acme")],
                "jo@example.com",
                Some(("acme", TenantSource::UserSuffix)),
            ),
            // database defaults to the user name, as in PostgreSQL
            (
                &[("user", "acme")],
                "acme",
                Some(("acme", TenantSource::Database)),
            ),
            (
                &[("user", "app"), ("options", "--tenant=acme")],
                "app",
                Some(("acme", TenantSource::Options)),
            ),
            (
                &[("user", "app"), ("tenant", "acme")],
                "app",
                Some(("acme", TenantSource::Options)),
            ),
        ];
        for (params, user, t) in cases {
            let r = resolve(&p(params), known);
            assert_eq!(r.login_user, *user, "{params:?}");
            assert_eq!(tenant(&r), *t, "{params:?}");
        }
    }

    #[test]
    fn settings_come_from_params_and_options() {
        let r = resolve(
            &p(&[
                ("user", "app@acme"),
                ("database", "db"),
                ("application_name", "psql"),
                ("DateStyle", "ISO"),
                (
                    "options",
                    "-c statement_timeout=5s -c tenant=acme --work-mem=1MB -c search_path=a\\ b",
                ),
            ]),
            |_| false,
        );
        assert_eq!(
            r.settings,
            p(&[
                ("application_name", "psql"),
                ("datestyle", "ISO"),
                ("statement_timeout", "5s"),
                ("work_mem", "1MB"),
                ("search_path", "a b"),
            ])
        );
    }

    #[test]
    fn options_parser_handles_odd_input() {
        assert!(parse_options("").is_empty());
        assert!(parse_options("-c").is_empty());
        assert!(parse_options("-c novalue").is_empty());
        assert_eq!(parse_options("-c a=b=c"), p(&[("a", "b=c")]));
    }
}
