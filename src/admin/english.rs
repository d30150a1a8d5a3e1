//! Plain-English admin commands: a deterministic parser of intents with slots. Tenant and
//! plan names are resolved against the catalog's vocabulary (case-insensitive, quotes
//! optional, display names and plan aliases such as "premium"); the result is one of the
//! SQL-style [`Command`]s, so English never does anything a command could not. Text that
//! matches no intent is `None` (the caller answers with the closest commands, never a
//! guess that runs something). Pure.

use super::command::Command;

/// Names the parser resolves against.
#[derive(Debug, Clone, Default)]
pub struct Vocab {
    /// (key, display name)
    pub tenants: Vec<(String, String)>,
    /// (key, aliases)
    pub plans: Vec<(String, Vec<String>)>,
    pub instances: Vec<String>,
}

impl Vocab {
    /// The vocabulary of the sample catalog (`tenantgate setup --sample`): its tenants and
    /// the plans with aliases of `migrations/master/0001_catalog.sql`, plus `instances`.
    pub fn sample(instances: &[&str]) -> Vocab {
        Vocab {
            tenants: crate::catalog::sample::SAMPLE_TENANTS
                .iter()
                .map(|(k, n, ..)| (k.to_string(), n.to_string()))
                .collect(),
            plans: [
                ("free", &[][..]),
                ("starter", &["basic"][..]),
                ("pro", &["premium", "professional"][..]),
                ("enterprise", &["business"][..]),
            ]
            .iter()
            .map(|(k, a)| (k.to_string(), a.iter().map(|x| x.to_string()).collect()))
            .collect(),
            instances: instances.iter().map(|i| i.to_string()).collect(),
        }
    }
}

/// Lowercase alphanumerics only: "Acme Corp" and "acme-corp" compare equal.
fn squash(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// A tenant key for a new tenant's name: lowercase, runs of other characters become `_`.
pub fn key_for(name: &str) -> String {
    let mut k = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            k.push(c.to_ascii_lowercase());
        } else if !k.ends_with('_') {
            k.push('_');
        }
    }
    let k = k.trim_matches('_').to_owned();
    if k.starts_with(|c: char| c.is_ascii_digit()) {
        format!("t_{k}")
    } else {
        k
    }
}

struct Text {
    /// Lowercase words (letters, digits, `_`, `-` kept inside words).
    words: Vec<String>,
    /// The same words as written.
    orig: Vec<String>,
    /// Quoted strings as written.
    quoted: Vec<String>,
}

impl Text {
    fn new(s: &str) -> Text {
        let mut quoted = Vec::new();
        let mut rest = String::new();
        let mut chars = s.chars().peekable();
        let mut prev_alpha = false;
        while let Some(c) = chars.next() {
            let close = match c {
                '\'' if !prev_alpha => Some('\''),
                '"' => Some('"'),
                '‘' => Some('’'),
                '“' => Some('”'),
                _ => None,
            };
            if let Some(close) = close {
                let mut q = String::new();
                let mut ended = false;
                for d in chars.by_ref() {
                    if d == close {
                        ended = true;
                        break;
                    }
                    q.push(d);
                }
                if ended && !q.trim().is_empty() {
                    quoted.push(q.trim().to_owned());
                    rest.push(' ');
                    rest.push_str(&q);
                    rest.push(' ');
                    prev_alpha = false;
                    continue;
                }
                rest.push(' ');
                rest.push_str(&q);
                continue;
            }
            prev_alpha = c.is_alphanumeric();
            rest.push(c);
        }
        let orig: Vec<String> = rest
            .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-'))
            .map(|w| w.trim_matches('-').to_owned())
            .filter(|w| !w.is_empty())
            .collect();
        let words = orig
            .iter()
            .map(|w| number_word(&w.to_lowercase()).unwrap_or_else(|| w.to_lowercase()))
            .collect();
        Text {
            words,
            orig,
            quoted,
        }
    }

    fn has(&self, w: &str) -> bool {
        self.words.iter().any(|x| x == w)
    }

    fn any(&self, ws: &[&str]) -> bool {
        ws.iter().any(|w| self.has(w))
    }

    fn starts(&self, prefixes: &[&str]) -> bool {
        self.words
            .iter()
            .any(|x| prefixes.iter().any(|p| x.starts_with(p)))
    }

    /// Like [`Text::phrase`], each word matching as a prefix ("response time" matches
    /// "response times").
    fn phrase_prefix(&self, p: &str) -> bool {
        let ps: Vec<&str> = p.split(' ').collect();
        self.words
            .windows(ps.len())
            .any(|w| w.iter().zip(&ps).all(|(a, b)| a.starts_with(b)))
    }

    fn phrase(&self, p: &str) -> bool {
        let ps: Vec<&str> = p.split(' ').collect();
        self.words
            .windows(ps.len())
            .any(|w| w.iter().zip(&ps).all(|(a, b)| a == b))
    }

    /// The first number in the text.
    fn number(&self) -> Option<u32> {
        self.words.iter().find_map(|w| w.parse().ok())
    }
}

impl Vocab {
    /// The tenant a text names: a quoted name first, then 1–3 word runs.
    fn tenant(&self, t: &Text) -> Option<String> {
        let find = |s: &str| {
            let q = squash(s);
            if q.is_empty() {
                return None;
            }
            self.tenants
                .iter()
                .find(|(k, n)| squash(k) == q || squash(n) == q)
                .or_else(|| {
                    // "Acme" for "Acme Corp", when no other tenant's name starts so.
                    let mut by_first = self.tenants.iter().filter(|(_, n)| {
                        n.split_whitespace().count() > 1
                            && n.split_whitespace().next().is_some_and(|f| squash(f) == q)
                    });
                    let one = by_first.next();
                    by_first.next().is_none().then_some(one).flatten()
                })
                .map(|(k, _)| k.clone())
        };
        if let Some(k) = t.quoted.iter().find_map(|q| find(q)) {
            return Some(k);
        }
        for n in [3, 2, 1] {
            for w in t.words.windows(n) {
                let joined = w.join(" ");
                // "acme's" reads as "acme s": try without a trailing possessive too.
                if let Some(k) = find(&joined).or_else(|| find(joined.trim_end_matches("s"))) {
                    if n == 1 && STOP.contains(&w[0].as_str()) {
                        continue;
                    }
                    return Some(k);
                }
            }
        }
        None
    }

    fn plan(&self, t: &Text) -> Option<String> {
        let find = |w: &str| {
            self.plans
                .iter()
                .find(|(k, a)| k == w || a.iter().any(|x| x == w))
                .map(|(k, _)| k.clone())
        };
        t.quoted
            .iter()
            .find_map(|q| find(&q.to_lowercase()))
            .or_else(|| t.words.iter().find_map(|w| find(w)))
            .or_else(|| t.words.iter().flat_map(|w| w.split('-')).find_map(find))
    }

    /// The instance a move names: a known instance anywhere, else the word after
    /// "to"/"onto" (past articles and "instance"/"server") that looks like one.
    fn instance(&self, t: &Text) -> Option<String> {
        if let Some(i) = self.instances.iter().find(|i| t.has(i)) {
            return Some(i.clone());
        }
        let skip = [
            "a", "an", "the", "instance", "server", "database", "db", "cluster", "host",
        ];
        let i = t.words.iter().position(|w| w == "to" || w == "onto")?;
        let w = t.words[i + 1..]
            .iter()
            .find(|w| !skip.contains(&w.as_str()))?;
        w.chars()
            .any(|c| c.is_ascii_digit() || c == '_' || c == '-')
            .then(|| w.clone())
    }
}

/// "three" → "3" (small counts written as words).
fn number_word(w: &str) -> Option<String> {
    const N: [&str; 21] = [
        "zero",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "eleven",
        "twelve",
        "thirteen",
        "fourteen",
        "fifteen",
        "sixteen",
        "seventeen",
        "eighteen",
        "nineteen",
        "twenty",
    ];
    N.iter().position(|n| *n == w).map(|i| i.to_string())
}

/// Words that are never tenant names on their own.
const STOP: &[&str] = &["a", "all", "the", "for", "to", "of", "me", "show", "new"];

/// Intervals: "7 days", "last week", "today" → '7 days', '7 days', '1 day'.
fn interval(t: &Text) -> Option<String> {
    for w in t.words.windows(2) {
        if let Ok(n) = w[0].parse::<u32>() {
            let unit = w[1].trim_end_matches('s');
            if ["minute", "hour", "day", "week", "month"].contains(&unit) {
                let plural = if n == 1 { "" } else { "s" };
                return Some(format!("{n} {unit}{plural}"));
            }
        }
    }
    if t.any(&["today", "yesterday"]) || t.phrase("last day") || t.phrase("past day") {
        return Some("1 day".into());
    }
    if t.phrase("this week") || t.phrase("last week") || t.phrase("past week") {
        return Some("7 days".into());
    }
    if t.phrase("this month") || t.phrase("last month") || t.phrase("past month") {
        return Some("30 days".into());
    }
    if t.phrase("last hour") || t.phrase("past hour") {
        return Some("1 hour".into());
    }
    None
}

/// A new tenant's display name: a quoted string that is not a plan, else the word after
/// "called"/"named".
fn new_name(t: &Text, v: &Vocab) -> Option<String> {
    let is_plan = |s: &str| {
        let s = s.to_lowercase();
        v.plans.iter().any(|(k, a)| *k == s || a.contains(&s))
    };
    if let Some(q) = t.quoted.iter().find(|q| !is_plan(q)) {
        return Some(q.clone());
    }
    for marker in [
        "called", "named", "name", "tenant", "customer", "account", "for",
    ] {
        if let Some(i) = t.words.iter().position(|x| x == marker) {
            if let (Some(w), Some(orig)) = (t.words.get(i + 1), t.orig.get(i + 1)) {
                let filler = ["a", "the", "on", "with", "plan", "called", "named", "new"];
                if !is_plan(w) && !filler.contains(&w.as_str()) {
                    return Some(orig.clone());
                }
            }
        }
    }
    // A capitalised word that is no command word: "Onboard Initrode as a new tenant".
    let common = [
        "I",
        "We",
        "Please",
        "Pls",
        "Can",
        "Could",
        "Would",
        "Create",
        "Add",
        "Onboard",
        "Open",
        "Provision",
        "Register",
        "Make",
        "New",
        "Set",
        "A",
        "An",
        "The",
    ];
    t.orig
        .iter()
        .skip(1)
        .find(|w| {
            w.chars().next().is_some_and(char::is_uppercase)
                && !common.contains(&w.as_str())
                && !is_plan(w)
        })
        .cloned()
}

fn flag(t: &Text) -> Option<(String, String)> {
    let off = t.any(&[
        "off",
        "disable",
        "false",
        "no",
        "stop",
        "writable",
        "deactivate",
        "out",
        "remove",
        "lift",
        "unset",
        "clear",
    ]) || t.phrase("read-write")
        || t.phrase("read write");
    let value = |on: bool| if on { "true" } else { "false" }.to_owned();
    if t.any(&["read-only", "readonly", "read_only"]) || t.phrase("read only") {
        return Some((
            "read_only".into(),
            value(!off || t.phrase("read-only mode on")),
        ));
    }
    if t.phrase("read-write") || t.phrase("read write") || t.has("writable") {
        return Some(("read_only".into(), "false".into()));
    }
    if t.has("query_cache")
        || t.phrase("query cache")
        || t.phrase("result cache")
        || t.phrase("caching")
    {
        return Some(("query_cache".into(), value(!off)));
    }
    for name in ["slow_query_ms", "max_statement_ms"] {
        if t.has(name) {
            return Some((name.into(), t.number()?.to_string()));
        }
    }
    if (t.phrase("slow query") || t.has("slow-query"))
        && t.any(&[
            "threshold",
            "cutoff",
            "cut-off",
            "limit",
            "ms",
            "milliseconds",
        ])
    {
        return Some(("slow_query_ms".into(), t.number()?.to_string()));
    }
    if t.phrase("statement timeout") || t.phrase("query timeout") {
        return Some(("max_statement_ms".into(), t.number()?.to_string()));
    }
    None
}

/// Map English to a command, or `None`.
pub fn parse(text: &str, v: &Vocab) -> Option<Command> {
    use Command::*;
    let t = Text::new(text);
    if t.words.is_empty() {
        return None;
    }
    let tenant = v.tenant(&t);
    let plan = v.plan(&t);
    let tenantish = t.any(&[
        "tenant",
        "tenants",
        "customer",
        "customers",
        "account",
        "accounts",
        "organization",
        "organizations",
        "org",
        "orgs",
        "company",
        "companies",
        "workspace",
        "workspaces",
        "client",
    ]);

    // Feature flags.
    if t.starts(&["flag"]) && flag(&t).is_none() {
        return Some(ShowFlags(tenant));
    }
    if let (Some((name, value)), Some(k)) = (flag(&t), tenant.clone()) {
        if t.any(&[
            "set",
            "setting",
            "enable",
            "turn",
            "disable",
            "make",
            "switch",
            "put",
            "activate",
            "deactivate",
            "flag",
            "mark",
            "take",
            "raise",
            "lower",
            "change",
            "block",
            "allow",
        ]) {
            return Some(SetFlag {
                tenant: k,
                name,
                value,
            });
        }
    }
    let migrate_verb = t.any(&[
        "migrate", "move", "relocate", "transfer", "shift", "give", "put", "isolate", "host",
    ]);
    let target = t.any(&[
        "dedicated",
        "instance",
        "server",
        "cluster",
        "host",
        "database",
        "db",
    ]) || v.instance(&t).is_some();
    // Moving one tenant elsewhere.
    if migrate_verb && target && !t.starts(&["migration"]) {
        if let Some(k) = tenant.clone() {
            let to = if t.has("dedicated") || t.phrase("its own") {
                None
            } else {
                v.instance(&t)
            };
            if to.is_some() || t.has("dedicated") || t.phrase("its own") {
                return Some(MoveTenant { key: k, to });
            }
        }
    }
    // Schema migrations.
    let schemas_up = t.starts(&["schema"])
        && (t.phrase("up to date") || t.any(&["update", "upgrade", "latest", "apply"]));
    if (t.starts(&["migrat"])
        && (t.starts(&["schema", "migration", "pending"])
            || t.phrase("all tenants")
            || t.has("tenants"))
        && !(tenant.is_some() && target))
        || schemas_up
    {
        return Some(MigrateTenants);
    }
    let create = t.any(&[
        "create",
        "add",
        "new",
        "provision",
        "onboard",
        "register",
        "setup",
        "spin",
        "make",
        "signed",
        "fresh",
        "open",
        "opening",
    ]) || t.phrase("set up")
        || t.phrase("sign up")
        || t.phrase("set them up");
    if create && (tenantish || t.any(&["called", "named"])) {
        let existing = |n: &str| {
            v.tenants
                .iter()
                .any(|(k, d)| squash(k) == squash(n) || squash(d) == squash(n))
        };
        if let (Some(name), Some(plan)) = (new_name(&t, v).filter(|n| !existing(n)), plan.clone()) {
            return Some(CreateTenant {
                key: key_for(&name),
                name: Some(name),
                plan,
                instance: None,
            });
        }
    }
    if let (Some(k), Some(p)) = (tenant.clone(), plan.clone()) {
        if t.any(&[
            "upgrade",
            "downgrade",
            "change",
            "switch",
            "move",
            "put",
            "set",
            "bump",
            "plan",
            "tier",
        ]) {
            return Some(AlterTenantPlan { key: k, plan: p });
        }
    }
    if let Some(k) = tenant.clone() {
        if t.any(&["drop", "delete", "remove", "destroy", "erase", "purge"]) || t.phrase("get rid")
        {
            return Some(DropTenant {
                key: k,
                force: false,
            });
        }
        let lift = t.any(&["lift", "end", "remove", "undo", "cancel"]) && t.starts(&["suspen"]);
        if lift || t.any(&["reinstate", "reactivate", "unsuspend"]) {
            return Some(ResumeTenant(k));
        }
        if t.starts(&["suspen"])
            || t.any(&["deactivate", "block", "freeze", "lock", "ban"])
            || (t.has("disable") && !t.has("flag"))
        {
            return Some(SuspendTenant(k));
        }
        if t.any(&["pause", "hold", "halt"]) {
            return Some(Pause(Some(k)));
        }
        if t.any(&[
            "resume",
            "reactivate",
            "unsuspend",
            "unpause",
            "unblock",
            "unfreeze",
            "unlock",
            "restore",
            "reenable",
            "re-enable",
        ]) || (t.has("enable") && !t.has("flag"))
        {
            return Some(ResumeTenant(k));
        }
    }
    if t.any(&["kill", "disconnect", "terminate"]) && t.starts(&["client", "connection", "session"])
    {
        if let Some(n) = t.number() {
            return Some(KillClient(n.to_string()));
        }
    }
    if t.starts(&["revenue", "mrr", "income", "earning", "arr"])
        || t.phrase("recurring")
        || t.any(&["money", "earn", "earns", "earned"])
    {
        return Some(ShowRevenueByPlan);
    }
    if (t.has("active") && t.starts(&["user"])) || t.any(&["mau", "maus"]) {
        return Some(ShowActiveUsers);
    }
    if t.starts(&["limit", "quota"])
        || t.any(&[
            "approaching",
            "exceeding",
            "exceed",
            "nearing",
            "hitting",
            "outgrowing",
            "maxed",
        ])
        || t.phrase("close to")
        || t.phrase("max out")
    {
        return Some(ShowLimits);
    }
    if t.starts(&["slow", "sluggish"])
        || t.phrase("too long")
        || t.phrase_prefix("long running")
        || t.has("long-running")
    {
        return Some(ShowSlowQueries {
            tenant,
            limit: t.number(),
        });
    }
    let timing = t.phrase_prefix("response time")
        || t.starts(&["latenc", "respon", "response-time", "duration"])
        || t.any(&["quickly", "quick", "fast", "speed"])
        || t.phrase("how fast")
        || t.any(&["p95", "p50", "p99", "percentile"])
        || t.phrase("how long");
    if let (true, Some(k)) = (timing, tenant.as_ref()) {
        return Some(ShowResponseTime(k.clone()));
    }
    let reload = t.has("reload") || t.phrase("re-read") || t.phrase("reread");
    if tenant.is_none()
        && t.starts(&["config", "setting"])
        && !t.has("flag")
        && !reload
        && !t.starts(&["instance", "postgres"])
    {
        return Some(ShowConfig);
    }
    if t.starts(&[
        "usage",
        "resource",
        "cost",
        "bill",
        "consum",
        "spend",
        "spent",
        "utiliz",
        "utilis",
        "expensive",
        "cheap",
    ]) || t.any(&["use", "used", "uses", "using"])
        || t.phrase("how much")
    {
        return Some(ShowUsage {
            tenant,
            since: interval(&t),
        });
    }
    if let Some(k) = tenant.clone() {
        if t.starts(&["user", "member", "people", "staff", "employee", "seat"]) {
            return Some(ShowUsers(k));
        }
    }
    if t.starts(&["pool"]) {
        return Some(ShowPools);
    }
    let hosting = t.any(&[
        "database",
        "databases",
        "db",
        "live",
        "lives",
        "host",
        "hosted",
        "postgres",
        "postgresql",
        "run",
        "running",
    ]);
    if t.any(&["backend", "backends"])
        || t.phrase("server connections")
        || (t.has("servers") && !tenantish && !hosting)
    {
        return Some(ShowServers);
    }
    if t.starts(&["instance", "postgres"])
        || (t.starts(&["server"]) && (tenantish || hosting))
        || (t.any(&["hosts", "host"]) && t.any(&["database", "db", "databases"]))
    {
        return Some(ShowInstances);
    }
    if t.starts(&["client", "session", "connection", "connected"]) {
        return Some(ShowClients);
    }
    if t.any(&["stats", "statistics", "counters"]) || t.phrase("how busy") {
        return Some(ShowStats);
    }
    if t.has("reload") || t.phrase("re-read") || t.phrase("reread") {
        return Some(Reload);
    }
    if t.starts(&["config", "setting"]) {
        return Some(ShowConfig);
    }
    if t.starts(&["plan", "pricing", "tier"])
        && tenant.is_none()
        && !(t.any(&["tenants", "customers", "accounts"])
            || t.phrase("every tenant")
            || t.phrase("each tenant"))
    {
        return Some(ShowPlans);
    }
    if let Some(k) = tenant {
        return Some(ShowTenant(k));
    }
    if tenantish {
        return Some(ShowTenants);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn vocab() -> Vocab {
        Vocab::sample(&["primary", "pg2"])
    }

    #[test]
    fn the_nine_sentences() {
        let v = vocab();
        for (s, want) in [
            (
                "Create a new tenant called 'BigCorp' with premium plan",
                "CREATE TENANT bigcorp NAME 'BigCorp' PLAN pro",
            ),
            ("Show me all tenants and their resource usage", "SHOW USAGE"),
            (
                "Migrate tenant 'Acme' to a dedicated database instance",
                "MOVE TENANT acme TO DEDICATED",
            ),
            ("Show users for tenant 'Acme'", "SHOW USERS FOR acme"),
            (
                "What's the average response time for tenant 'TechCo' queries?",
                "SHOW RESPONSE TIME FOR techco",
            ),
            (
                "Find slow queries specific to tenant 'StartUp'",
                "SHOW SLOW QUERIES FOR startup",
            ),
            (
                "Compare monthly active users across all tenants",
                "SHOW ACTIVE USERS",
            ),
            (
                "Which tenants are approaching their plan limits?",
                "SHOW LIMITS",
            ),
            (
                "Show revenue by tenant tier (free, pro, enterprise)",
                "SHOW REVENUE BY PLAN",
            ),
        ] {
            assert_eq!(
                parse(s, &v).map(|c| c.to_string()).as_deref(),
                Some(want),
                "{s}"
            );
        }
        assert_eq!(parse("what is the meaning of life", &v), None);
        assert_eq!(key_for("Mega-Store 2"), "mega_store_2");
    }
}
