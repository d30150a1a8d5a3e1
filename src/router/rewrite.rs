//! search_path rewriting: applications written for one logical schema (default `public`)
//! run unchanged per tenant. Pure text rewriting at token positions; a statement that needs
//! no change is returned as `None` and passes through byte for byte.
//!
//! - `public.users` (and `"public".users`) → `tenant_acme.users`
//! - `SET [SESSION|LOCAL] search_path TO public, x` → `... TO tenant_acme, x`
//! - `SHOW search_path` → a query returning the setting with the tenant's schema shown as
//!   the logical one, under the same column name
//!
//! `current_schema()` is left alone on purpose: it returns the tenant's schema, which is
//! what queries like `information_schema.tables WHERE table_schema = current_schema()` need.

use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::tokenizer::{Location, Token, TokenWithSpan, Tokenizer};

use super::facts::TextFacts;
use super::text::contains_ci;
use crate::backend::server::{quote_literal, search_path_item};

/// Rewrite `sql` for a tenant whose schema is `schema`; `None` when nothing changes.
pub fn rewrite(sql: &str, logical: &str, schema: &str) -> Option<String> {
    let facts = TextFacts::of(sql.as_bytes());
    if !may_rewrite(sql.as_bytes(), &facts, logical, schema) {
        return None;
    }
    rewrite_tokens(sql, logical, schema)
}

/// [`rewrite`] without its pre-check.
fn rewrite_tokens(sql: &str, logical: &str, schema: &str) -> Option<String> {
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql)
        .tokenize_with_location()
        .ok()?;
    let offsets = LineOffsets::new(sql);
    let mut edits: Vec<(usize, usize, String)> = Vec::new();
    let significant: Vec<&TokenWithSpan> = tokens
        .iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_)))
        .collect();
    for stmt in significant.split(|t| matches!(t.token, Token::SemiColon)) {
        let lower = |i: usize| match stmt.get(i).map(|t| &t.token) {
            Some(Token::Word(w)) if w.quote_style.is_none() => Some(w.value.to_ascii_lowercase()),
            _ => None,
        };
        // SHOW search_path
        if stmt.len() == 2
            && lower(0).as_deref() == Some("show")
            && lower(1).as_deref() == Some("search_path")
        {
            let (start, end) = (
                offsets.at(stmt[0].span.start)?,
                offsets.at(stmt[1].span.end)?,
            );
            let pattern = format!("(^|[ ,\"]){}([ ,\"]|$)", regex_escape(schema));
            edits.push((
                start,
                end,
                format!(
                    "SELECT regexp_replace(current_setting('search_path'), {}, {}, 'g') AS search_path",
                    quote_literal(&pattern),
                    quote_literal(&format!("\\1{logical}\\2"))
                ),
            ));
            continue;
        }
        // SET [SESSION|LOCAL] search_path TO|= items
        let mut i = 1;
        if matches!(lower(1).as_deref(), Some("session") | Some("local")) {
            i = 2;
        }
        let is_set_path =
            lower(0).as_deref() == Some("set") && lower(i).as_deref() == Some("search_path");
        for (j, t) in stmt.iter().enumerate() {
            let is_logical_word = matches!(&t.token, Token::Word(w)
                if (w.quote_style.is_none() && w.value.eq_ignore_ascii_case(logical))
                    || (w.quote_style == Some('"') && w.value == logical));
            let qualifies = matches!(stmt.get(j + 1).map(|n| &n.token), Some(Token::Period));
            if is_logical_word && (qualifies || (is_set_path && j > i)) {
                edits.push((
                    offsets.at(t.span.start)?,
                    offsets.at(t.span.end)?,
                    search_path_item(schema),
                ));
            } else if let (true, Token::SingleQuotedString(s)) = (is_set_path && j > i, &t.token) {
                let items: Vec<String> = s
                    .split(',')
                    .map(|x| {
                        let x = x.trim();
                        if x == logical || x.trim_matches('"') == logical {
                            search_path_item(schema)
                        } else {
                            x.to_owned()
                        }
                    })
                    .collect();
                let new = items.join(", ");
                if new != *s {
                    edits.push((
                        offsets.at(t.span.start)?,
                        offsets.at(t.span.end)?,
                        quote_literal(&new),
                    ));
                }
            }
        }
    }
    if edits.is_empty() {
        return None;
    }
    edits.sort_by_key(|e| e.0);
    let mut out = String::with_capacity(sql.len() + 32);
    let mut pos = 0;
    for (start, end, text) in edits {
        if start < pos || end > sql.len() {
            return None;
        }
        out.push_str(&sql[pos..start]);
        out.push_str(&text);
        pos = end;
    }
    out.push_str(&sql[pos..]);
    Some(out)
}

/// Cheap pre-check for [`rewrite`]: false when the text cannot need a rewrite, without
/// decoding or tokenizing it. Outside `search_path` statements only a qualified name
/// (`public.users`) is rewritten, which needs a `.` and the logical schema's name.
pub fn may_rewrite(sql: &[u8], facts: &TextFacts, logical: &str, schema: &str) -> bool {
    logical != schema
        && !logical.is_empty()
        && (facts.names_search_path()
            || (facts.may_qualify() && contains_ci(sql, logical.as_bytes())))
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                vec![c]
            } else {
                vec!['\\', c]
            }
        })
        .collect()
}

/// Byte offsets of tokenizer locations (1-based line and character column).
struct LineOffsets<'a> {
    sql: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineOffsets<'a> {
    fn new(sql: &'a str) -> Self {
        let mut starts = vec![0];
        starts.extend(sql.match_indices('\n').map(|(i, _)| i + 1));
        LineOffsets { sql, starts }
    }

    fn at(&self, loc: Location) -> Option<usize> {
        let line_start = *self.starts.get((loc.line as usize).checked_sub(1)?)?;
        let col = (loc.column as usize).checked_sub(1)?;
        let line = &self.sql[line_start..];
        match line.char_indices().nth(col) {
            Some((b, _)) => Some(line_start + b),
            None => Some(self.sql.len().min(line_start + line.len())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::rewrite;

    fn rw(sql: &str) -> Option<String> {
        rewrite(sql, "public", "tenant_acme")
    }

    #[test]
    fn rewrites_only_what_must_change() {
        let cases: &[(&str, Option<&str>)] = &[
            ("SELECT * FROM users", None),
            (
                "SELECT * FROM public.users",
                Some("SELECT * FROM tenant_acme.users"),
            ),
            (
                "SELECT * FROM \"public\".users u JOIN PUBLIC.projects p ON true",
                Some("SELECT * FROM tenant_acme.users u JOIN tenant_acme.projects p ON true"),
            ),
            ("SELECT 'public.users', \"Public\".x FROM t", None),
            ("SELECT public FROM t", None),
            (
                "SET search_path TO public",
                Some("SET search_path TO tenant_acme"),
            ),
            (
                "SET search_path = public, pg_catalog",
                Some("SET search_path = tenant_acme, pg_catalog"),
            ),
            (
                "SET LOCAL search_path TO 'public'",
                Some("SET LOCAL search_path TO E'tenant_acme'"),
            ),
            ("SET search_path TO tenant_acme", None),
            (
                "SELECT é, public.f() FROM t",
                Some("SELECT é, tenant_acme.f() FROM t"),
            ),
            (
                "SELECT 1;\nINSERT INTO public.t VALUES (1)",
                Some("SELECT 1;\nINSERT INTO tenant_acme.t VALUES (1)"),
            ),
        ];
        for (sql, want) in cases {
            assert_eq!(rw(sql).as_deref(), *want, "{sql}");
        }
        let show = rw("SHOW search_path").unwrap();
        assert!(
            show.starts_with("SELECT regexp_replace(current_setting('search_path')"),
            "{show}"
        );
        assert!(show.ends_with("AS search_path"));
        assert_eq!(rewrite("SELECT * FROM public.t", "public", "public"), None);
    }

    /// The pre-check never skips a text the tokenizing rewrite would change.
    #[test]
    fn pre_check_keeps_every_text_that_changes() {
        use super::{may_rewrite, rewrite_tokens};
        use crate::router::facts::TextFacts;
        let texts = [
            "SELECT * FROM public.users",
            "SELECT * FROM public . users",
            "SELECT * FROM \"public\"\n.users",
            "select x from PUBLIC.t",
            "SET search_path TO public",
            "set search_path = 'public'",
            "SHOW search_path",
            "SELECT public FROM t",
            "SELECT * FROM users",
            "SELECT abalance FROM pgbench_accounts WHERE aid = 1",
            "SELECT 1.5, publicity FROM t",
        ];
        for sql in texts {
            let facts = TextFacts::of(sql.as_bytes());
            let checked = may_rewrite(sql.as_bytes(), &facts, "public", "tenant_acme");
            if rewrite_tokens(sql, "public", "tenant_acme").is_some() {
                assert!(checked, "skipped a text that changes: {sql}");
            }
        }
        // Without a `.` or `search_path` nothing is tokenized.
        for sql in [
            "SELECT public FROM t",
            "SELECT abalance FROM pgbench_accounts",
        ] {
            let facts = TextFacts::of(sql.as_bytes());
            assert!(
                !may_rewrite(sql.as_bytes(), &facts, "public", "tenant_acme"),
                "{sql}"
            );
        }
    }
}
