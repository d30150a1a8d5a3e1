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

/// The settings the proxy holds on a tenant's server sessions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Held {
    /// `read_only`: `default_transaction_read_only = on`.
    pub read_only: bool,
    /// `max_statement_ms`: `statement_timeout`.
    pub statement_timeout: bool,
}

impl Held {
    /// Does the proxy hold any setting (is there anything to check)?
    pub fn any(self) -> bool {
        self.read_only || self.statement_timeout
    }

    /// Is every setting held here held in `other` too (a text checked under `other` needs
    /// no check under `self`)?
    pub fn within(self, other: Held) -> bool {
        (!self.read_only || other.read_only) && (!self.statement_timeout || other.statement_timeout)
    }

    /// The settings held in either.
    pub fn union(self, other: Held) -> Held {
        Held {
            read_only: self.read_only || other.read_only,
            statement_timeout: self.statement_timeout || other.statement_timeout,
        }
    }

    /// The held settings' names.
    fn names(self) -> impl Iterator<Item = &'static str> {
        let ro: &[&str] = if self.read_only {
            &["default_transaction_read_only", "transaction_read_only"]
        } else {
            &[]
        };
        let timeout: &[&str] = if self.statement_timeout {
            &["statement_timeout"]
        } else {
            &[]
        };
        ro.iter().chain(timeout).copied()
    }

    /// The violation of changing setting `name` (one of [`Self::names`]), or of changing
    /// settings the check cannot name.
    fn changing(self, name: Option<&str>) -> Violation {
        match name {
            Some("statement_timeout") => Violation::Setting("statement_timeout"),
            _ if self.read_only => Violation::ReadOnly("READ WRITE".into()),
            _ => Violation::Setting("statement_timeout"),
        }
    }
}

/// What a statement would do against a tenant's limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// The tenant is read-only and the statement writes (or may write), or would switch
    /// read-only mode off; names what it would execute (`INSERT`, `READ WRITE`).
    ReadOnly(String),
    /// It changes (or may change) this setting, which the proxy holds for the tenant.
    Setting(&'static str),
}

/// Check `sql` against the settings the proxy holds for its tenant.
///
/// Reading a held setting is allowed (`SHOW statement_timeout`, `current_setting(...)`, a
/// column that happens to be called `read_only`). Refused: a statement other than a read
/// that names a held setting or `READ WRITE` (`SET`, `RESET`, `BEGIN READ WRITE`, `SET
/// SESSION CHARACTERISTICS`, a `DO` block calling `set_config`), a `set_config` call
/// whose setting is held or not a plain literal (a bind parameter could name one), a
/// Unicode-escaped identifier (`U&"..."`, which could spell any name), and, for a
/// read-only tenant, a statement that writes. `RESET ALL` and `DISCARD ALL` are not
/// refused: drivers send them when a pooled connection is returned, and the tenant's
/// server connections start with the held settings, which they return to.
pub fn check(sql: &str, held: Held) -> Option<Violation> {
    if !held.any() {
        return None;
    }
    // Text the tokenizer rejects is searched as plain words, and any set_config in it is
    // taken to name a held setting.
    let (tokens, words): (Vec<Token>, Vec<String>) =
        match Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize() {
            Ok(t) => {
                let t: Vec<Token> = t
                    .into_iter()
                    .filter(|t| !matches!(t, Token::Whitespace(_)))
                    .collect();
                let w = t.iter().filter_map(token_text).collect();
                (t, w)
            }
            Err(_) => {
                let lower = sql.to_ascii_lowercase();
                let w = lower
                    .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '$'))
                    .filter(|w| !w.is_empty())
                    .map(str::to_owned)
                    .collect();
                (Vec::new(), w)
            }
        };
    if super::guard::unicode_escaped_identifier(&tokens) {
        return Some(held.changing(None));
    }
    let names = set_config_names(&tokens);
    let unread_set_config = tokens.is_empty() && words.iter().any(|w| has_word(w, "set_config"));
    for name in names.chain(unread_set_config.then_some(None)) {
        match name {
            Some(n) => {
                let n = n.trim().to_ascii_lowercase();
                if let Some(h) = held.names().find(|h| *h == n) {
                    return Some(held.changing(Some(h)));
                }
            }
            None => return Some(held.changing(None)),
        }
    }
    let mentions = |name: &str| words.iter().any(|w| has_word(w, name));
    let pair = |a: &str, b: &str| words.windows(2).any(|w| w[0] == a && w[1] == b);
    let named = held.names().find(|n| mentions(n));
    let read_write = held.read_only && pair("read", "write");
    let set_config = mentions("set_config");
    // Parsed only when the answer depends on it (a read-only tenant's writes; whether
    // a statement that names a held setting only reads it).
    let stmts = (held.read_only || named.is_some() || set_config)
        .then(|| Parser::parse_sql(&PostgreSqlDialect {}, sql).ok())
        .flatten();
    let reads = stmts
        .as_ref()
        .is_some_and(|s| s.iter().all(reads_settings_only));
    if !reads {
        if let Some(n) = named {
            return Some(held.changing(Some(n)));
        }
        if read_write {
            return Some(held.changing(None));
        }
        // A function body (`DO $$ ... $$`) may build a setting's name.
        if set_config {
            return Some(held.changing(None));
        }
    }
    if held.read_only {
        return stmts
            .as_deref()
            .and_then(first_write)
            .map(Violation::ReadOnly);
    }
    None
}

/// Does `text` hold `word` (lower case) delimited by characters that cannot continue an
/// identifier? `asset_config` does not hold `set_config`; `perform set_config(` does.
fn has_word(text: &str, word: &str) -> bool {
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80;
    let bytes = text.as_bytes();
    text.match_indices(word).any(|(i, _)| {
        let end = i + word.len();
        (i == 0 || !ident(bytes[i - 1])) && (end == bytes.len() || !ident(bytes[end]))
    })
}

/// A word or the text of a string literal, lower-case.
fn token_text(t: &Token) -> Option<String> {
    match t {
        Token::Word(w) => Some(w.value.to_ascii_lowercase()),
        Token::SingleQuotedString(s)
        | Token::EscapedStringLiteral(s)
        | Token::UnicodeStringLiteral(s) => Some(s.to_ascii_lowercase()),
        Token::DollarQuotedString(s) => Some(s.value.to_ascii_lowercase()),
        _ => None,
    }
}

/// The setting name of each `set_config(...)` call among `tokens` (whitespace left out):
/// `Some` when the first argument is a plain string literal, `None` when it is anything
/// else (a bind parameter, an expression).
fn set_config_names(tokens: &[Token]) -> impl Iterator<Item = Option<&str>> {
    tokens.windows(4).filter_map(|w| match w {
        [Token::Word(f), Token::LParen, arg, next]
            if f.value.eq_ignore_ascii_case("set_config") =>
        {
            Some(match (arg, next) {
                (Token::SingleQuotedString(s), Token::Comma) => Some(s.as_str()),
                _ => None,
            })
        }
        _ => None,
    })
}

/// A statement that cannot change a setting unless it calls a function that does: a
/// query, SHOW, or EXPLAIN of one.
fn reads_settings_only(s: &Statement) -> bool {
    match s {
        Statement::Query(_) | Statement::ShowVariable { .. } | Statement::ExplainTable { .. } => {
            true
        }
        Statement::Explain { statement, .. } => reads_settings_only(statement),
        _ => false,
    }
}

/// The first statement of `sql` that may write, named by its first keyword; `None` when
/// all only read. For the result cache: an `EXECUTE` may run a prepared write, so it
/// counts as one. Text the parser does not understand is not a write here.
pub fn writes(sql: &str) -> Option<String> {
    let stmts = Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()?;
    if let Some(e) = stmts
        .iter()
        .find(|s| matches!(s, Statement::Execute { .. }))
    {
        return Some(keyword(e));
    }
    first_write(&stmts)
}

/// The first of `stmts` that writes, named by its first keyword. An `EXECUTE` runs a
/// statement prepared earlier, which a read-only tenant's server transaction holds to
/// read-only (a PREPARE of a write is refused here).
fn first_write(stmts: &[Statement]) -> Option<String> {
    stmts.iter().find(|s| !reads_only(s)).map(keyword)
}

/// A statement's first keyword, upper case.
fn keyword(s: &Statement) -> String {
    s.to_string()
        .split_whitespace()
        .next()
        .unwrap_or("statement")
        .to_ascii_uppercase()
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
        Statement::Query(q) => query_reads_only(q),
        Statement::Explain {
            analyze, statement, ..
        } => !*analyze || reads_only(statement),
        // The statement it prepares; an EXECUTE runs one prepared earlier, which the
        // server's read-only transaction still holds to it.
        Statement::Prepare { statement, .. } => reads_only(statement),
        Statement::Copy {
            to: true, source, ..
        } => match source {
            sqlparser::ast::CopySource::Query(q) => query_reads_only(q),
            sqlparser::ast::CopySource::Table { .. } => true,
        },
        Statement::ExplainTable { .. }
        | Statement::Execute { .. }
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

fn query_reads_only(q: &sqlparser::ast::Query) -> bool {
    use sqlparser::ast::SetExpr;
    let writes = |e: &SetExpr| {
        matches!(
            e,
            SetExpr::Insert(_) | SetExpr::Update(_) | SetExpr::Delete(_)
        )
    };
    q.locks.is_empty()
        && match q.body.as_ref() {
            SetExpr::Select(sel) => sel.into.is_none(),
            body => !writes(body),
        }
        && q.with
            .as_ref()
            .is_none_or(|w| w.cte_tables.iter().all(|c| !writes(c.query.body.as_ref())))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RO: Held = Held {
        read_only: true,
        statement_timeout: false,
    };
    const TIMEOUT: Held = Held {
        read_only: false,
        statement_timeout: true,
    };
    const BOTH: Held = Held {
        read_only: true,
        statement_timeout: true,
    };

    fn ro(what: &str) -> Option<Violation> {
        Some(Violation::ReadOnly(what.into()))
    }

    const TIMEOUT_HELD: Option<Violation> = Some(Violation::Setting("statement_timeout"));

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
            "PREPARE p AS SELECT * FROM t",
            "EXECUTE p",
            "COPY t TO STDOUT",
            "COPY (SELECT a FROM t) TO STDOUT",
            "DECLARE c CURSOR FOR SELECT * FROM t",
            "DECLARE c CURSOR FOR SELECT read_only FROM accounts",
        ] {
            assert_eq!(check(sql, RO), None, "{sql}");
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
            ("PREPARE p AS DELETE FROM t", "PREPARE"),
            ("COPY (DELETE FROM t RETURNING *) TO STDOUT", "COPY"),
        ] {
            assert_eq!(check(sql, RO), ro(what), "{sql}");
        }
        assert_eq!(check("INSERT INTO t VALUES (1)", TIMEOUT), None);
        assert_eq!(check("INSERT INTO t VALUES (1)", Held::default()), None);
        // For the result cache an EXECUTE may be a write.
        assert_eq!(writes("EXECUTE p(1)").as_deref(), Some("EXECUTE"));
        assert_eq!(writes("SELECT 1"), None);
    }

    #[test]
    fn held_settings_cannot_be_changed() {
        for sql in [
            "SET default_transaction_read_only = off",
            "SET transaction_read_only TO off",
            "RESET default_transaction_read_only",
            "SET default_transaction_read_only TO DEFAULT",
            "BEGIN READ WRITE",
            "START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ WRITE",
            "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
            "SELECT 1; SET LOCAL \"default_transaction_read_only\" = 0",
            "SELECT set_config('default_transaction_read_only', 'off', false)",
            "select pg_catalog.SET_CONFIG( 'Transaction_Read_Only' , 'off', true)",
            "SELECT set_config($1, $2, false)",
            "SELECT set_config('default_transaction_' || 'read_only', 'off', false)",
            "SELECT set_config(E'default_transaction_read_only', 'off', false)",
            "SELECT set_config(U&'default\\005Ftransaction\\005Fread\\005Fonly', 'off', false)",
            "SET U&\"default\\005Ftransaction\\005Fread\\005Fonly\" = off; INSERT INTO t VALUES (1)",
        ] {
            assert_eq!(check(sql, RO), ro("READ WRITE"), "{sql}");
        }
        for sql in [
            "SET statement_timeout = 0",
            "set local STATEMENT_TIMEOUT to '1h'",
            "RESET statement_timeout",
            "SELECT set_config('statement_timeout', '0', false)",
            "SELECT set_config($1, '0', false)",
            "DO $$BEGIN PERFORM set_config('statement' || '_timeout', '0', false); END$$",
            "PREPARE p AS SELECT set_config($1, '0', false)",
            "SET U&\"statement\\005Ftimeout\" = 0",
            "SELECT U&\"set\\005Fconfig\"('statement' || '_timeout', '0', false)",
        ] {
            assert_eq!(check(sql, TIMEOUT), TIMEOUT_HELD, "{sql}");
        }
        // Both held: the message names the setting a statement changes.
        assert_eq!(check("SET statement_timeout = 0", BOTH), TIMEOUT_HELD);
        assert_eq!(
            check("SELECT set_config('statement_timeout', '0', false)", BOTH),
            TIMEOUT_HELD
        );
        // Only what the proxy holds is guarded.
        assert_eq!(check("SET statement_timeout = 0", RO), None);
        assert_eq!(
            check("SET default_transaction_read_only = off", TIMEOUT),
            None
        );
        assert_eq!(
            check("SELECT set_config('application_name', 'x', false)", RO),
            None
        );
        assert_eq!(check("SET statement_timeout = 0", Held::default()), None);
    }

    #[test]
    fn resetting_every_setting_is_left_to_the_server() {
        // Drivers send these when a pooled connection is returned (asyncpg's reset ends
        // with RESET ALL, Npgsql's is DISCARD ALL). Server connections start with the
        // held settings, so these return to them.
        for sql in [
            "RESET ALL",
            "DISCARD ALL",
            "SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL;",
        ] {
            assert_eq!(check(sql, TIMEOUT), None, "{sql}");
        }
    }

    #[test]
    fn held_settings_can_be_read() {
        for sql in [
            "SHOW default_transaction_read_only",
            "SHOW transaction_read_only",
            "SHOW statement_timeout",
            "SHOW ALL",
            "SELECT current_setting('default_transaction_read_only')",
            "SELECT current_setting('statement_timeout'), current_setting('tenantgate.read_only', true)",
            "SELECT name, setting FROM pg_settings WHERE name IN ('statement_timeout', 'transaction_read_only')",
            "SELECT read_only, is_read_only FROM accounts",
            "SELECT read, write FROM (SELECT 1 AS read, 2 AS write) s",
            "EXPLAIN SELECT * FROM t WHERE read_only",
            "/* statement_timeout: 5s */ SELECT 1",
            "SELECT set_config FROM t",
            "SELECT * FROM audit WHERE action IN ('reset', 'all')",
        ] {
            assert_eq!(check(sql, BOTH), None, "{sql}");
        }
        // Names that merely contain a held one are other names.
        for sql in [
            "UPDATE asset_config SET statement_timeout_ms = 5",
            "INSERT INTO dataset_config VALUES (1)",
            "CREATE TABLE preset_config (statement_timeouts int)",
        ] {
            assert_eq!(check(sql, TIMEOUT), None, "{sql}");
        }
    }

    #[test]
    fn text_the_tokenizer_rejects_is_searched_word_by_word() {
        // An unterminated quoted identifier fails to tokenize.
        let bad = |s: &str| format!("{s} \"unterminated");
        assert!(Tokenizer::new(&PostgreSqlDialect {}, &bad("SELECT 1"))
            .tokenize()
            .is_err());
        assert_eq!(
            check(&bad("SELECT set_config('x', 'y', false)"), RO),
            ro("READ WRITE")
        );
        assert_eq!(
            check(&bad("SET statement_timeout = 0"), TIMEOUT),
            TIMEOUT_HELD
        );
        assert_eq!(check(&bad("BEGIN READ WRITE"), RO), ro("READ WRITE"));
        assert_eq!(check(&bad("SELECT asset_config"), BOTH), None);
    }

    #[test]
    fn plain_selects() {
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
    }
}
