//! Pure checks behind the `read_only` and `max_statement_ms` tenant flags: does a statement
//! write, and does it try to lift a limit the proxy set on the server session?
//!
//! PostgreSQL enforces the flags too (`default_transaction_read_only`, `statement_timeout`
//! on the tenant's server sessions); these checks give the clear error first and refuse
//! the statements that would switch those settings off.

use sqlparser::ast::Statement;
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, Tokenizer};

/// What a statement would do against a tenant's limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// It writes (or may write) while the tenant is read-only.
    Write(String),
    /// It changes a setting the proxy holds for the tenant.
    Setting(&'static str),
}

/// Check `sql` for a tenant with `read_only` and/or a statement time limit.
pub fn check(sql: &str, read_only: bool, timeout_held: bool) -> Option<Violation> {
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql)
        .tokenize()
        .unwrap_or_default();
    let words: Vec<String> = tokens
        .iter()
        .filter_map(|t| match t {
            Token::Word(w) => Some(w.value.to_ascii_lowercase()),
            Token::SingleQuotedString(s) | Token::EscapedStringLiteral(s) => {
                Some(s.to_ascii_lowercase())
            }
            _ => None,
        })
        .collect();
    let mentions = |name: &str| words.iter().any(|w| w.contains(name));
    if read_only {
        if mentions("read_only") || words.windows(2).any(|w| w[0] == "read" && w[1] == "write") {
            return Some(Violation::Setting("read-only mode"));
        }
        if let Some(what) = writes(sql) {
            return Some(Violation::Write(what));
        }
    }
    if timeout_held && mentions("statement_timeout") {
        return Some(Violation::Setting("statement_timeout"));
    }
    None
}

/// The first statement of `sql` that writes, named by its first keyword; `None` when all
/// only read. Text the parser does not understand is left to PostgreSQL's read-only
/// transaction (it refuses writes with 25006 itself).
pub fn writes(sql: &str) -> Option<String> {
    let stmts = Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()?;
    stmts.iter().find(|s| !reads_only(s)).map(|s| {
        s.to_string()
            .split_whitespace()
            .next()
            .unwrap_or("statement")
            .to_ascii_uppercase()
    })
}

/// Exactly one plain query (SELECT / VALUES / set operation) without locking or INTO: the
/// only statements the result cache answers. Unparsed text is not one.
pub fn plain_select(sql: &str) -> bool {
    let Ok(stmts) = Parser::parse_sql(&PostgreSqlDialect {}, sql) else {
        return false;
    };
    match stmts.as_slice() {
        [Statement::Query(q)] => {
            q.locks.is_empty()
                && q.with.is_none()
                && match q.body.as_ref() {
                    sqlparser::ast::SetExpr::Select(sel) => sel.into.is_none(),
                    sqlparser::ast::SetExpr::SetOperation { .. }
                    | sqlparser::ast::SetExpr::Values(_) => true,
                    _ => false,
                }
        }
        _ => false,
    }
}

fn reads_only(s: &Statement) -> bool {
    match s {
        Statement::Query(q) => {
            q.locks.is_empty()
                && match q.body.as_ref() {
                    sqlparser::ast::SetExpr::Select(sel) => sel.into.is_none(),
                    sqlparser::ast::SetExpr::Insert(_)
                    | sqlparser::ast::SetExpr::Update(_)
                    | sqlparser::ast::SetExpr::Delete(_) => false,
                    _ => true,
                }
                && q.with.as_ref().is_none_or(|w| {
                    w.cte_tables.iter().all(|c| {
                        !matches!(
                            c.query.body.as_ref(),
                            sqlparser::ast::SetExpr::Insert(_)
                                | sqlparser::ast::SetExpr::Update(_)
                                | sqlparser::ast::SetExpr::Delete(_)
                        )
                    })
                })
        }
        Statement::Explain {
            analyze, statement, ..
        } => !*analyze || reads_only(statement),
        Statement::ExplainTable { .. }
        | Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::Savepoint { .. }
        | Statement::ReleaseSavepoint { .. }
        | Statement::Set(_)
        | Statement::ShowVariable { .. }
        | Statement::ShowVariables { .. }
        | Statement::ShowTables { .. }
        | Statement::ShowColumns { .. }
        | Statement::Declare { .. }
        | Statement::Fetch { .. }
        | Statement::Close { .. }
        | Statement::Discard { .. }
        | Statement::Deallocate { .. } => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes() {
        for sql in [
            "SELECT * FROM t",
            "WITH x AS (SELECT 1) SELECT * FROM x",
            "EXPLAIN SELECT 1",
            "BEGIN",
            "COMMIT",
            "SHOW search_path",
            "SET application_name = 'x'",
            "SELECT 1; SELECT 2",
        ] {
            assert_eq!(check(sql, true, false), None, "{sql}");
        }
        for (sql, what) in [
            ("INSERT INTO t VALUES (1)", "INSERT"),
            ("update t set a = 1", "UPDATE"),
            ("DELETE FROM t", "DELETE"),
            ("CREATE TABLE x (a int)", "CREATE"),
            ("SELECT * FROM t FOR UPDATE", "SELECT"),
            ("SELECT 1 INTO x", "SELECT"),
            ("SELECT 1; DROP TABLE t", "DROP"),
            ("TRUNCATE t", "TRUNCATE"),
            ("EXPLAIN ANALYZE DELETE FROM t", "EXPLAIN"),
            (
                "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
                "WITH",
            ),
        ] {
            assert_eq!(
                check(sql, true, false),
                Some(Violation::Write(what.into())),
                "{sql}"
            );
        }
    }

    #[test]
    fn settings_held_by_the_proxy() {
        for sql in [
            "SET default_transaction_read_only = off",
            "SET transaction_read_only TO off",
            "BEGIN READ WRITE",
            "START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ WRITE",
            "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
            "SELECT set_config('default_transaction_read_only', 'off', false)",
        ] {
            assert_eq!(
                check(sql, true, false),
                Some(Violation::Setting("read-only mode")),
                "{sql}"
            );
        }
        assert_eq!(
            check("SET statement_timeout = 0", false, true),
            Some(Violation::Setting("statement_timeout"))
        );
        assert_eq!(check("SET statement_timeout = 0", false, false), None);
        assert!(plain_select("/* cache: 5s */ SELECT a FROM t WHERE b = 1"));
        for s in [
            "BEGIN",
            "SET x = 1",
            "SELECT 1; SELECT 2",
            "SELECT * FROM t FOR UPDATE",
            "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
            "SELECT 1 INTO x",
            "not sql",
        ] {
            assert!(!plain_select(s), "{s}");
        }
        assert_eq!(check("INSERT INTO t VALUES (1)", false, true), None);
    }
}
