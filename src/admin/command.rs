//! Admin commands: the SQL-style grammar, parsed case-insensitively, and the canonical text
//! of each command (what the English parser's answers name). Pure.

use std::fmt;

/// One admin command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    ShowTenants,
    ShowTenant(String),
    CreateTenant {
        key: String,
        name: Option<String>,
        plan: String,
        instance: Option<String>,
    },
    AlterTenantPlan {
        key: String,
        plan: String,
    },
    SuspendTenant(String),
    ResumeTenant(String),
    DropTenant {
        key: String,
        force: bool,
    },
    ShowPlans,
    ShowInstances,
    ShowPools,
    ShowClients,
    ShowServers,
    ShowStats,
    ShowConfig,
    Reload,
    Pause(Option<String>),
    Resume,
    KillClient(String),
    ShowUsage {
        tenant: Option<String>,
        since: Option<String>,
    },
    ShowSlowQueries {
        tenant: Option<String>,
        limit: Option<u32>,
    },
    ShowResponseTime(String),
    ShowActiveUsers,
    ShowLimits,
    ShowRevenueByPlan,
    ShowUsers(String),
    MigrateTenants,
    /// `None` target: a dedicated instance.
    MoveTenant {
        key: String,
        to: Option<String>,
    },
    SetFlag {
        tenant: String,
        name: String,
        value: String,
    },
    ShowFlags(Option<String>),
}

impl Command {
    /// Commands that change or end things; never run from English.
    pub fn destructive(&self) -> bool {
        matches!(
            self,
            Command::SuspendTenant(_) | Command::DropTenant { .. } | Command::KillClient(_)
        )
    }
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Command::*;
        match self {
            ShowTenants => write!(f, "SHOW TENANTS"),
            ShowTenant(k) => write!(f, "SHOW TENANT {k}"),
            CreateTenant {
                key,
                name,
                plan,
                instance,
            } => {
                write!(f, "CREATE TENANT {key}")?;
                if let Some(n) = name {
                    write!(f, " NAME {}", quote(n))?;
                }
                write!(f, " PLAN {plan}")?;
                if let Some(i) = instance {
                    write!(f, " ON {i}")?;
                }
                Ok(())
            }
            AlterTenantPlan { key, plan } => write!(f, "ALTER TENANT {key} SET PLAN {plan}"),
            SuspendTenant(k) => write!(f, "SUSPEND TENANT {k}"),
            ResumeTenant(k) => write!(f, "RESUME TENANT {k}"),
            DropTenant { key, force } => {
                write!(f, "DROP TENANT {key}{}", if *force { " FORCE" } else { "" })
            }
            ShowPlans => write!(f, "SHOW PLANS"),
            ShowInstances => write!(f, "SHOW INSTANCES"),
            ShowPools => write!(f, "SHOW POOLS"),
            ShowClients => write!(f, "SHOW CLIENTS"),
            ShowServers => write!(f, "SHOW SERVERS"),
            ShowStats => write!(f, "SHOW STATS"),
            ShowConfig => write!(f, "SHOW CONFIG"),
            Reload => write!(f, "RELOAD"),
            Pause(None) => write!(f, "PAUSE"),
            Pause(Some(k)) => write!(f, "PAUSE TENANT {k}"),
            Resume => write!(f, "RESUME"),
            KillClient(id) => write!(f, "KILL CLIENT {id}"),
            ShowUsage { tenant, since } => {
                write!(f, "SHOW USAGE")?;
                if let Some(t) = tenant {
                    write!(f, " FOR {t}")?;
                }
                if let Some(s) = since {
                    write!(f, " SINCE {}", quote(s))?;
                }
                Ok(())
            }
            ShowSlowQueries { tenant, limit } => {
                write!(f, "SHOW SLOW QUERIES")?;
                if let Some(t) = tenant {
                    write!(f, " FOR {t}")?;
                }
                if let Some(n) = limit {
                    write!(f, " LIMIT {n}")?;
                }
                Ok(())
            }
            ShowResponseTime(t) => write!(f, "SHOW RESPONSE TIME FOR {t}"),
            ShowActiveUsers => write!(f, "SHOW ACTIVE USERS"),
            ShowLimits => write!(f, "SHOW LIMITS"),
            ShowRevenueByPlan => write!(f, "SHOW REVENUE BY PLAN"),
            ShowUsers(t) => write!(f, "SHOW USERS FOR {t}"),
            MigrateTenants => write!(f, "MIGRATE TENANTS"),
            MoveTenant { key, to: None } => write!(f, "MOVE TENANT {key} TO DEDICATED"),
            MoveTenant { key, to: Some(i) } => write!(f, "MOVE TENANT {key} TO {i}"),
            SetFlag {
                tenant,
                name,
                value,
            } => write!(f, "SET FLAG {name} = {value} FOR TENANT {tenant}"),
            ShowFlags(None) => write!(f, "SHOW FLAGS"),
            ShowFlags(Some(t)) => write!(f, "SHOW FLAGS FOR TENANT {t}"),
        }
    }
}

/// Split SQL-style text into words; `'quoted strings'` (with `''`) are one word, quotes
/// kept so callers can tell them apart.
fn words(s: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() || c == ';' {
            chars.next();
        } else if c == '\'' {
            chars.next();
            let mut w = String::from("'");
            loop {
                match chars.next()? {
                    '\'' if chars.peek() == Some(&'\'') => {
                        chars.next();
                        w.push('\'');
                    }
                    '\'' => break,
                    ch => w.push(ch),
                }
            }
            out.push(w);
        } else if c == '=' {
            chars.next();
            out.push("=".into());
        } else {
            let mut w = String::new();
            while let Some(&ch) = chars.peek() {
                if ch.is_whitespace() || ch == ';' || ch == '=' || ch == '\'' {
                    break;
                }
                w.push(ch);
                chars.next();
            }
            out.push(w);
        }
    }
    Some(out)
}

/// A tenant key, instance or plan name: an identifier, optionally quoted; lowercased.
fn ident(w: &str) -> Option<String> {
    let w = w.strip_prefix('\'').unwrap_or(w).trim_matches('"');
    (!w.is_empty()
        && w.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'))
    .then(|| w.to_ascii_lowercase())
}

fn string(w: &str) -> Option<String> {
    w.strip_prefix('\'').map(str::to_owned)
}

/// Parse a SQL-style admin command. `None` when the text is not one (it may be English).
pub fn parse(text: &str) -> Option<Command> {
    use Command::*;
    let w = words(text)?;
    let up: Vec<String> = w.iter().map(|s| s.to_ascii_uppercase()).collect();
    let u: Vec<&str> = up.iter().map(String::as_str).collect();
    let arg = |i: usize| w.get(i).and_then(|s| ident(s));
    let cmd = match u.as_slice() {
        ["SHOW", "TENANTS"] => ShowTenants,
        ["SHOW", "TENANT", _] => ShowTenant(arg(2)?),
        ["CREATE", "TENANT", _, rest @ ..] => {
            let (mut name, mut plan, mut instance) = (None, None, None);
            let mut i = 0;
            while i < rest.len() {
                let v = w.get(3 + i + 1)?;
                match rest[i] {
                    "NAME" => name = Some(string(v).unwrap_or_else(|| v.clone())),
                    "PLAN" => plan = Some(ident(v)?),
                    "ON" => instance = Some(ident(v)?),
                    _ => return None,
                }
                i += 2;
            }
            CreateTenant {
                key: arg(2)?,
                name,
                plan: plan?,
                instance,
            }
        }
        ["ALTER", "TENANT", _, "SET", "PLAN", _] => AlterTenantPlan {
            key: arg(2)?,
            plan: arg(5)?,
        },
        ["SUSPEND", "TENANT", _] => SuspendTenant(arg(2)?),
        ["RESUME", "TENANT", _] => ResumeTenant(arg(2)?),
        ["DROP", "TENANT", _] => DropTenant {
            key: arg(2)?,
            force: false,
        },
        ["DROP", "TENANT", _, "FORCE"] => DropTenant {
            key: arg(2)?,
            force: true,
        },
        ["SHOW", "PLANS"] => ShowPlans,
        ["SHOW", "INSTANCES"] => ShowInstances,
        ["SHOW", "POOLS"] => ShowPools,
        ["SHOW", "CLIENTS"] => ShowClients,
        ["SHOW", "SERVERS"] => ShowServers,
        ["SHOW", "STATS"] => ShowStats,
        ["SHOW", "CONFIG"] => ShowConfig,
        ["RELOAD"] => Reload,
        ["PAUSE"] => Pause(None),
        ["PAUSE", "TENANT", _] => Pause(Some(arg(2)?)),
        ["RESUME"] => Resume,
        ["KILL", "CLIENT", _] => KillClient(w[2].trim_matches('\'').to_owned()),
        ["SHOW", "USAGE", rest @ ..] => {
            let (mut tenant, mut since) = (None, None);
            let mut i = 0;
            while i < rest.len() {
                let v = w.get(2 + i + 1)?;
                match rest[i] {
                    "FOR" => tenant = Some(ident(v)?),
                    "SINCE" => since = Some(string(v).unwrap_or_else(|| v.clone())),
                    _ => return None,
                }
                i += 2;
            }
            ShowUsage { tenant, since }
        }
        ["SHOW", "SLOW", "QUERIES", rest @ ..] => {
            let (mut tenant, mut limit) = (None, None);
            let mut i = 0;
            while i < rest.len() {
                let v = w.get(3 + i + 1)?;
                match rest[i] {
                    "FOR" => tenant = Some(ident(v)?),
                    "LIMIT" => limit = Some(v.parse().ok()?),
                    _ => return None,
                }
                i += 2;
            }
            ShowSlowQueries { tenant, limit }
        }
        ["SHOW", "RESPONSE", "TIME", "FOR", _] => ShowResponseTime(arg(4)?),
        ["SHOW", "ACTIVE", "USERS"] => ShowActiveUsers,
        ["SHOW", "LIMITS"] => ShowLimits,
        ["SHOW", "REVENUE", "BY", "PLAN"] => ShowRevenueByPlan,
        ["SHOW", "USERS", "FOR", _] => ShowUsers(arg(3)?),
        ["MIGRATE", "TENANTS"] => MigrateTenants,
        ["MOVE", "TENANT", _, "TO", "DEDICATED"] => MoveTenant {
            key: arg(2)?,
            to: None,
        },
        ["MOVE", "TENANT", _, "TO", _] => MoveTenant {
            key: arg(2)?,
            to: Some(arg(4)?),
        },
        ["SET", "FLAG", _, "=", _, "FOR", "TENANT", _] => SetFlag {
            name: arg(2)?,
            value: string(&w[4]).unwrap_or_else(|| w[4].clone()),
            tenant: arg(7)?,
        },
        ["SHOW", "FLAGS"] => ShowFlags(None),
        ["SHOW", "FLAGS", "FOR", "TENANT", _] => ShowFlags(Some(arg(4)?)),
        _ => return None,
    };
    Some(cmd)
}

/// Every command's canonical form, for "did you mean" suggestions.
pub const SYNOPSIS: &[&str] = &[
    "SHOW TENANTS",
    "SHOW TENANT key",
    "CREATE TENANT key [NAME 'name'] PLAN plan [ON instance]",
    "ALTER TENANT key SET PLAN plan",
    "SUSPEND TENANT key",
    "RESUME TENANT key",
    "DROP TENANT key [FORCE]",
    "SHOW PLANS",
    "SHOW INSTANCES",
    "SHOW POOLS",
    "SHOW CLIENTS",
    "SHOW SERVERS",
    "SHOW STATS",
    "SHOW CONFIG",
    "RELOAD",
    "PAUSE [TENANT key]",
    "RESUME [TENANT key]",
    "KILL CLIENT id",
    "SHOW USAGE [FOR tenant] [SINCE 'interval']",
    "SHOW SLOW QUERIES [FOR tenant] [LIMIT n]",
    "SHOW RESPONSE TIME FOR tenant",
    "SHOW ACTIVE USERS",
    "SHOW LIMITS",
    "SHOW REVENUE BY PLAN",
    "SHOW USERS FOR tenant",
    "MIGRATE TENANTS",
    "MOVE TENANT key TO instance|DEDICATED",
    "SET FLAG name = value FOR TENANT key",
    "SHOW FLAGS [FOR TENANT key]",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for s in [
            "SHOW TENANTS",
            "SHOW TENANT acme",
            "CREATE TENANT bigcorp NAME 'Big ''Corp''' PLAN pro ON pg2",
            "CREATE TENANT bigcorp PLAN pro",
            "ALTER TENANT acme SET PLAN enterprise",
            "DROP TENANT acme FORCE",
            "PAUSE TENANT acme",
            "SHOW USAGE FOR acme SINCE '7 days'",
            "SHOW SLOW QUERIES FOR startup LIMIT 5",
            "SHOW RESPONSE TIME FOR techco",
            "MOVE TENANT acme TO DEDICATED",
            "MOVE TENANT acme TO pg2",
            "SET FLAG read_only = true FOR TENANT acme",
            "SHOW FLAGS FOR TENANT acme",
            "KILL CLIENT 42",
        ] {
            let c = parse(s).unwrap_or_else(|| panic!("{s}"));
            assert_eq!(c.to_string(), s);
        }
        assert_eq!(parse("show tenants;"), Some(Command::ShowTenants));
        assert_eq!(
            parse("alter tenant 'Acme' set plan PRO")
                .unwrap()
                .to_string(),
            "ALTER TENANT acme SET PLAN pro"
        );
        assert_eq!(parse("show me the tenants"), None);
        assert_eq!(parse("CREATE TENANT x"), None);
        assert_eq!(parse("SHOW TENANT a;b"), None);
    }
}
