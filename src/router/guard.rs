//! The statement guard: defense in depth on top of the per-tenant roles. Pure: a statement
//! text is analysed once (tokens + sqlparser AST, tenant-independent, cacheable by text),
//! then checked against a tenant's context.
//!
//! Refused (SQLSTATE 42501, with the reason):
//! - references to schemas outside the tenant (other tenants', or any not in the allow list)
//! - role or session-authorization changes (`SET ROLE`, `RESET ROLE`,
//!   `SET SESSION AUTHORIZATION`, `set_config('role', ...)`)
//! - `search_path` pointing outside the tenant (`SET search_path`, `set_config`)
//! - server-side file and program access (`COPY ... PROGRAM`, `COPY ... FROM/TO 'file'`,
//!   `pg_read_file`, `lo_import`, ...)
//! - `standard_conforming_strings` off (`SET`, `set_config`): every check here reads
//!   strings as standard SQL
//! - Unicode-escaped identifiers (`U&"..."`), whose escapes could spell any name above
//! - a `client_encoding` whose characters can contain ASCII bytes (`SET client_encoding`,
//!   `SET NAMES`, a role's or function's `SET` clause; see [`super::encoding`])
//!
//! [`startup_setting`] applies the same rules to settings a client asks for at login.
//!
//! Statements sqlparser cannot parse still get the token-level checks; they pass by
//! default (PostgreSQL's privileges still hold) and are refused in strict mode.

use std::ops::ControlFlow;

use sqlparser::ast::{visit_expressions, visit_relations, Expr, ObjectName, Statement};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, Tokenizer};

/// Functions that reach the server's files, programs or other databases.
const FORBIDDEN_FUNCTIONS: &[&str] = &[
    "pg_read_file",
    "pg_read_binary_file",
    "pg_ls_dir",
    "pg_stat_file",
    "pg_ls_logdir",
    "pg_ls_waldir",
    "pg_ls_tmpdir",
    "pg_ls_archive_statusdir",
    "pg_file_write",
    "pg_file_rename",
    "pg_file_unlink",
    "lo_import",
    "lo_export",
    "lo_from_bytea",
    "dblink",
    "dblink_exec",
    "dblink_connect",
    "dblink_connect_u",
    "pg_terminate_backend",
    "pg_cancel_backend",
    "pg_reload_conf",
    "pg_rotate_logfile",
    "pg_promote",
];

/// Settings that must not be changed through `set_config`. With
/// `standard_conforming_strings` off, backslashes in plain string literals escape quotes,
/// and the proxy's checks would read different statement boundaries than the server; so
/// would they in some client encodings ([`super::encoding`]).
const GUARDED_SETTINGS: &[&str] = &[
    "role",
    "session_authorization",
    "search_path",
    "standard_conforming_strings",
    "client_encoding",
];

/// Statements with more tokens than this are not parsed (see [`analyze`]).
const MAX_PARSE_TOKENS: usize = 4096;

/// Schemas every tenant may name.
const SYSTEM_SCHEMAS: &[&str] = &["pg_catalog", "information_schema", "pg_temp", "pg_toast"];

/// What a statement text does, independent of the tenant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Analysis {
    /// sqlparser understood the text.
    pub parsed: bool,
    /// Schema names the statement qualifies objects with (case-folded like PostgreSQL).
    pub schemas: Vec<String>,
    pub role_change: bool,
    /// Values of `SET search_path` (case-folded, quotes removed).
    pub search_path: Option<Vec<String>>,
    /// `set_config` of role/session_authorization/search_path.
    pub guarded_set_config: Option<String>,
    /// `COPY ... PROGRAM` or `COPY` to/from a server file.
    pub server_file_copy: bool,
    pub forbidden_function: Option<String>,
    /// `SET standard_conforming_strings` to a value other than on (see
    /// [`GUARDED_SETTINGS`]).
    pub nonstandard_strings: bool,
    /// A `U&"..."` identifier: its escapes can spell any name the checks look for.
    pub unicode_identifier: bool,
    /// A `client_encoding` set to an encoding the checks cannot read (as written).
    pub split_encoding: Option<String>,
    /// An `UPDATE` of `pg_settings` (`set_config` by another name).
    pub settings_table_write: bool,
    /// Why the checks cannot read the text as the server will (text the tokenizer
    /// rejects that holds a word some check needs, escapes the tokens show undone).
    pub unreadable: Option<String>,
    /// Schemas of `schema.f(` at the top level, counted when the text does not parse.
    call_schemas: Vec<String>,
}

/// Why a text is unreadable when an `E'...'` or `U&'...'` literal continues on the next line.
const CONTINUED: &str = "an escaped string continues on the next line";

/// Words that every token-level refusal needs one of (with the forbidden functions).
const RISKY_WORDS: &[&str] = &[
    "role",
    "authorization",
    "search_path",
    "set_config",
    "standard_conforming_strings",
    "client_encoding",
    "names",
    "pg_settings",
    "copy",
];

/// The first word of `text` (ignoring case; a word is letters, digits, `_` and `$`) that a
/// refusal could hang on, for text the tokenizer cannot read. `U&"` counts as one.
fn risky_word(text: &str) -> Option<&'static str> {
    let lower = text.to_ascii_lowercase();
    if lower.contains("u&\"") {
        return Some("U&\"");
    }
    lower
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '$'))
        .find_map(|w| {
            RISKY_WORDS
                .iter()
                .chain(FORBIDDEN_FUNCTIONS)
                .find(|r| **r == w)
                .copied()
        })
}

/// The tenant a statement runs for.
#[derive(Debug, Clone, Copy)]
pub struct GuardContext<'a> {
    /// The tenant's schema; `None` for a placement used as it is (schema checks off).
    pub tenant_schema: Option<&'a str>,
    /// The schema applications believe they use (default `public`).
    pub logical_schema: &'a str,
    /// Refuse statements the parser does not understand.
    pub strict: bool,
}

/// The decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Refuse(String),
}

/// Cheap proof that a text cannot trip any check (outside strict mode); see
/// [`TextFacts::trivially_allowed`](super::facts::TextFacts::trivially_allowed), which the
/// relay reads from the facts it has already found.
pub fn trivially_allowed(sql: &[u8]) -> bool {
    super::facts::TextFacts::of(sql).trivially_allowed()
}

/// A cache key for the analysis: the text with numeric literals outside strings,
/// identifiers and comments replaced by `0` (the analysis never depends on them), so
/// statements that differ only in numbers share one entry.
pub fn cache_key(sql: &str) -> std::borrow::Cow<'_, str> {
    let b = sql.as_bytes();
    // Numbers inside E'...' (whose `\'` the scan below would take for the end) and
    // dollar-quoted strings (routine bodies, checked too) are left alone: such texts
    // are their own keys.
    let dollar_quote = b.windows(2).any(|p| p[0] == b'$' && !p[1].is_ascii_digit());
    // So are texts with block comments, which nest in PostgreSQL but not in this scan.
    let block_comment = b.windows(2).any(|p| p == b"/*");
    if !b.iter().any(u8::is_ascii_digit) || b.contains(&b'\\') || dollar_quote || block_comment {
        return std::borrow::Cow::Borrowed(sql);
    }
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'\'' | b'"' => {
                let end = b[i + 1..]
                    .iter()
                    .position(|&x| x == c)
                    .map_or(b.len(), |p| i + 1 + p + 1);
                out.extend_from_slice(&b[i..end]);
                i = end;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                let end = b[i..]
                    .iter()
                    .position(|&x| x == b'\n')
                    .map_or(b.len(), |p| i + p);
                out.extend_from_slice(&b[i..end]);
                i = end;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let end = b[i + 2..]
                    .windows(2)
                    .position(|w| w == b"*/")
                    .map_or(b.len(), |p| i + 2 + p + 2);
                out.extend_from_slice(&b[i..end]);
                i = end;
            }
            b'$' => {
                // $n parameters and $tag$ quotes are kept as they are
                let end = b[i + 1..]
                    .iter()
                    .position(|x| !(x.is_ascii_alphanumeric() || *x == b'_'))
                    .map_or(b.len(), |p| i + 1 + p);
                out.extend_from_slice(&b[i..end]);
                i = end;
            }
            d if d.is_ascii_digit()
                && !i
                    .checked_sub(1)
                    .is_some_and(|p| b[p].is_ascii_alphanumeric() || b[p] == b'_') =>
            {
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
                out.push(b'0');
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    std::borrow::Cow::Owned(String::from_utf8(out).unwrap_or_else(|_| sql.to_owned()))
}

/// Analyse a statement text (one or more statements): as the proxy reads it, and as a
/// session whose lexing settings changed unseen would ([`for_each_other_reading`]: a
/// backslash or a non-ASCII character read otherwise), each refusal found in any reading
/// counting.
///
/// [`for_each_other_reading`]: super::escapes::for_each_other_reading
pub fn analyze(sql: &str) -> Analysis {
    let (mut a, _) = analyze_one(sql);
    super::escapes::for_each_other_reading(sql, |other, setting_off| {
        match analyze_one(other) {
            (o, true) => a.add_findings(o, setting_off),
            // As for a text the tokenizer rejects: the words every refusal needs.
            (o, false) => {
                if a.unreadable.is_none() {
                    a.unreadable = o.unreadable.map(|why| {
                        format!(
                            "a backslash or a character reads otherwise if the session's \
                             standard_conforming_strings or client_encoding changed, and \
                             then {why}"
                        )
                    });
                }
            }
        }
    });
    a.schemas.sort();
    a.schemas.dedup();
    a
}

/// One reading of a text, and whether the tokenizer read it.
fn analyze_one(sql: &str) -> (Analysis, bool) {
    let mut a = Analysis::default();
    let (sql, tokens) = match tokenize(sql) {
        Some((text, t)) => (text, t),
        None => {
            // PostgreSQL may accept what the tokenizer rejects: the words every refusal
            // needs are looked for in the bare text instead.
            a.unreadable =
                risky_word(sql).map(|w| format!("its tokenizer rejects text that mentions {w}"));
            return (a, false);
        }
    };
    let mut bodies_read = true;
    scan_tokens(&tokens, &mut a, (0, None), &mut bodies_read);
    // Very long token streams (deeply nested expressions) are not parsed: walking or even
    // dropping such an AST recurses deeper than a worker stack allows. They count as
    // unparsed (token checks only; refused in strict mode).
    if !tokens.is_empty() && tokens.len() <= MAX_PARSE_TOKENS {
        if let Ok(stmts) = Parser::parse_sql(&PostgreSqlDialect {}, &sql) {
            // A routine body the tokenizer could not read was not checked.
            a.parsed = bodies_read;
            scan_ast(&stmts, &mut a);
        }
    }
    let calls = std::mem::take(&mut a.call_schemas);
    if !a.parsed {
        a.schemas.extend(calls);
    }
    (a, true)
}

impl Analysis {
    /// Add what another reading of the same text found to refuse. Not whether it parsed:
    /// another reading is often not valid SQL (a string now ends elsewhere), and a
    /// server that read it so would fail the statement. In a reading with
    /// standard_conforming_strings off (`setting_off`) not an escape string continued on
    /// the next line either: it writes each plain string as one, and the tokenizer
    /// decodes a continuation written so.
    fn add_findings(&mut self, o: Analysis, setting_off: bool) {
        let Analysis {
            parsed: _,
            schemas,
            role_change,
            search_path,
            guarded_set_config,
            server_file_copy,
            forbidden_function,
            nonstandard_strings,
            unicode_identifier,
            split_encoding,
            settings_table_write,
            unreadable,
            call_schemas: _,
        } = o;
        if self.unreadable.is_none() {
            self.unreadable = unreadable.filter(|why| !(setting_off && why == CONTINUED));
        }
        self.schemas.extend(schemas);
        self.role_change |= role_change;
        if let Some(p) = search_path {
            self.search_path.get_or_insert_with(Vec::new).extend(p);
        }
        self.guarded_set_config = self.guarded_set_config.take().or(guarded_set_config);
        self.server_file_copy |= server_file_copy;
        self.forbidden_function = self.forbidden_function.take().or(forbidden_function);
        self.nonstandard_strings |= nonstandard_strings;
        self.unicode_identifier |= unicode_identifier;
        self.split_encoding = self.split_encoding.take().or(split_encoding);
        self.settings_table_write |= settings_table_write;
    }
}

/// A word, quoted or not, case-folded: setting names are case-insensitive even quoted
/// (`SET "ROLE" TO x` is `SET ROLE x`).
fn word(t: &Token) -> Option<String> {
    match t {
        Token::Word(w) => Some(w.value.to_ascii_lowercase()),
        _ => None,
    }
}

fn ident(t: &Token) -> Option<String> {
    match t {
        Token::Word(w) if w.quote_style.is_some() => Some(w.value.clone()),
        Token::Word(w) => Some(w.value.to_ascii_lowercase()),
        Token::SingleQuotedString(s) => Some(s.clone()),
        _ => None,
    }
}

fn string(t: &Token) -> Option<&str> {
    match t {
        Token::SingleQuotedString(s) | Token::EscapedStringLiteral(s) => Some(s),
        Token::DollarQuotedString(d) => Some(&d.value),
        _ => None,
    }
}

/// The value a `SET` clause gives, however it is written (a word or any string literal).
fn setting_value(t: &Token) -> Option<String> {
    match t {
        Token::UnicodeStringLiteral(s) | Token::NationalStringLiteral(s) => Some(s.clone()),
        _ => ident(t).or_else(|| string(t).map(str::to_owned)),
    }
}

/// The values a `SET` clause at `stmt[at..]` gives: `[=|TO] value [, value ...]`, string
/// literals continued on the next line joined as PostgreSQL joins them; none for
/// `FROM CURRENT`.
fn setting_values(stmt: &[Token], mut at: usize) -> Vec<String> {
    while matches!(stmt.get(at), Some(Token::Eq))
        || stmt.get(at).and_then(word).as_deref() == Some("to")
    {
        at += 1;
    }
    let mut vals = Vec::new();
    if stmt.get(at).and_then(word).as_deref() == Some("from") {
        return vals;
    }
    while let Some(t) = stmt.get(at) {
        if let Some((text, next)) = literal_at(stmt, at) {
            vals.push(text);
            at = next;
        } else if let Some(v) = setting_value(t) {
            vals.push(v);
            at += 1;
        } else {
            break;
        }
        if !matches!(stmt.get(at), Some(Token::Comma)) {
            break;
        }
        at += 1;
    }
    vals
}

/// A text's tokens without whitespace; `None` when the tokenizer cannot read it.
/// The tokens of `sql`, and the text they were read from: `sql`, or `sql` with the byte
/// escapes PostgreSQL accepts and the tokenizer rejects made ASCII (`E'caf\xC3\xA9'`,
/// [`super::escapes`]; every token where it was).
fn tokenize(sql: &str) -> Option<(std::borrow::Cow<'_, str>, Vec<Token>)> {
    match tokens_of(sql) {
        Some(t) => Some((std::borrow::Cow::Borrowed(sql), t)),
        None => {
            let neutral = super::escapes::neutral_escapes(sql)?;
            let t = tokens_of(&neutral)?;
            Some((std::borrow::Cow::Owned(neutral), t))
        }
    }
}

/// The tokens of `sql` but whitespace, if the tokenizer reads it.
fn tokens_of(sql: &str) -> Option<Vec<Token>> {
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize().ok()?;
    Some(
        tokens
            .into_iter()
            // A form feed or vertical tab is whitespace to PostgreSQL (\v from 17);
            // the tokenizer makes them characters, which would split adjacent strings.
            .filter(|t| !matches!(t, Token::Whitespace(_) | Token::Char('\x0c' | '\x0b')))
            .collect(),
    )
}

/// Does `tokens[i]` follow AS (so a word there is a name, whatever it spells)? A quoted
/// `"as"` is no key word to the tokenizer.
fn after_as(tokens: &[Token], i: usize) -> bool {
    i > 0 && matches!(&tokens[i - 1], Token::Word(p) if p.keyword == Keyword::AS)
}

/// Is `tokens[i]` a PL/pgSQL block word (BEGIN, THEN, ELSE, LOOP) that opens a block or
/// branch? Not a name spelled so: after `.` or AS, or before what follows a table alias
/// (`FROM users loop(a), ...`, `begin JOIN ...`, `loop, ...`); no statement starts with
/// any of those, so a statement after a real block word is never missed.
fn is_block_word(tokens: &[Token], i: usize) -> bool {
    let Token::Word(w) = &tokens[i] else {
        return false;
    };
    if w.quote_style.is_some()
        || !["begin", "then", "else", "loop"]
            .iter()
            .any(|k| w.value.eq_ignore_ascii_case(k))
    {
        return false;
    }
    if i > 0 && matches!(tokens[i - 1], Token::Period) || after_as(tokens, i) {
        return false;
    }
    match tokens.get(i + 1) {
        Some(Token::Period | Token::Comma | Token::LParen | Token::RParen) => false,
        Some(Token::Word(n)) if n.quote_style.is_none() => !matches!(
            n.keyword,
            Keyword::JOIN
                | Keyword::INNER
                | Keyword::LEFT
                | Keyword::RIGHT
                | Keyword::FULL
                | Keyword::CROSS
                | Keyword::NATURAL
                | Keyword::ON
                | Keyword::USING
                | Keyword::WHERE
                | Keyword::GROUP
                | Keyword::HAVING
                | Keyword::ORDER
                | Keyword::LIMIT
                | Keyword::OFFSET
                | Keyword::UNION
                | Keyword::EXCEPT
                | Keyword::INTERSECT
                | Keyword::WINDOW
                | Keyword::RETURNING
                | Keyword::TABLESAMPLE
        ),
        _ => true,
    }
}

/// The statements of `tokens`: split at semicolons, and in a PL/pgSQL `body` also after
/// the words that open a block or branch (`BEGIN SET ROLE x; END`, `THEN`, `ELSE`,
/// `LOOP`), so that a statement there starts where the checks look for its first word.
/// Such a word next to a `.` is a name (`begin.items`), not a block.
fn statements(tokens: &[Token], body: bool) -> Vec<&[Token]> {
    let block_word = |i: usize| is_block_word(tokens, i);
    let mut out = Vec::new();
    let mut start = 0;
    for i in 0..tokens.len() {
        if matches!(tokens[i], Token::SemiColon) {
            out.push(&tokens[start..i]);
            start = i + 1;
        } else if body && block_word(i) {
            out.push(&tokens[start..=i]);
            start = i + 1;
        }
    }
    out.push(&tokens[start..]);
    out
}

/// How deep routine bodies inside routine bodies are read (each level needs its own
/// quoting, so real code rarely nests more than twice).
const MAX_BODY_DEPTH: usize = 4;

/// Text in a statement that the server runs as SQL later.
struct Body {
    text: String,
    kind: BodyKind,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum BodyKind {
    /// A `DO` block or a `plpgsql` routine: statements, but not SQL the parser reads.
    Plpgsql,
    /// A `LANGUAGE sql` routine: SQL statements.
    Sql,
    /// A string literal run by PL/pgSQL's `EXECUTE`: often only the start of a statement
    /// built at run time (`EXECUTE 'UPDATE t SET x = ''' || v || ''''`).
    Dynamic,
}

/// The string literal at `stmt[i]` (any kind PostgreSQL runs as a body), with the
/// literals right after it (adjacent literals on separate lines are one string), and the
/// index after them.
fn literal_at(stmt: &[Token], mut i: usize) -> Option<(String, usize)> {
    fn lit(t: &Token) -> Option<&str> {
        match t {
            Token::UnicodeStringLiteral(s) => Some(s),
            t => string(t),
        }
    }
    let mut text = lit(stmt.get(i)?)?.to_owned();
    i += 1;
    while let Some(more) = stmt.get(i).and_then(lit) {
        text.push_str(more);
        i += 1;
    }
    Some((text, i))
}

/// The texts in statement `stmt` (its `words`, see [`word`]) that the server runs as SQL
/// later: the body of a `DO` block or of a `CREATE FUNCTION` / `CREATE PROCEDURE` in
/// `sql` or `plpgsql` (or with no language named), and in a PL/pgSQL body (`plpgsql`)
/// the string literals of an `EXECUTE` (dynamic SQL, as far as it is written out).
fn sql_bodies(stmt: &[Token], words: &[Option<String>], plpgsql: bool) -> Vec<Body> {
    let w = |i: usize| words.get(i).and_then(|x| x.as_deref());
    // LANGUAGE outside parentheses (a parameter may be called `language`).
    let mut depth = 0usize;
    let mut language = None;
    for (i, t) in stmt.iter().enumerate() {
        match t {
            Token::LParen => depth += 1,
            Token::RParen => depth = depth.saturating_sub(1),
            // not a routine named `language`, nor part of a qualified name
            _ if depth == 0
                && w(i) == Some("language")
                && !matches!(stmt.get(i + 1), Some(Token::LParen | Token::Period))
                && !(i > 0 && matches!(stmt[i - 1], Token::Period)) =>
            {
                language = stmt
                    .get(i + 1)
                    .and_then(setting_value)
                    .map(|l| l.to_ascii_lowercase());
                break;
            }
            _ => {}
        }
    }
    let routine =
        w(0) == Some("create") && (1..4).any(|i| matches!(w(i), Some("function" | "procedure")));
    // A DO block is PL/pgSQL unless it says otherwise; a routine that names no language
    // has SQL statements for its body.
    let kind = match (language.as_deref(), routine) {
        (Some("plpgsql"), _) | (None, false) => Some(BodyKind::Plpgsql),
        (Some("sql"), _) | (None, true) => Some(BodyKind::Sql),
        (Some(_), _) => None,
    };
    let mut bodies = Vec::new();
    let mut i = 0;
    while i < stmt.len() {
        let prev = i.checked_sub(1).and_then(w);
        let found = match (w(0), kind) {
            (Some("do"), Some(_)) => Some(BodyKind::Plpgsql),
            (_, Some(k)) if routine && prev == Some("as") => Some(k),
            // (SQL's own EXECUTE runs a prepared statement: its literals are values)
            _ if plpgsql && prev == Some("execute") => {
                // The literals of the whole expression, joined (`'SELECT 1; ' || 'SET
                // ROLE x'`, `format('SET ROLE %I', r)`), up to INTO or USING.
                let mut text = String::new();
                while i < stmt.len() && !matches!(w(i), Some("into" | "using")) {
                    match literal_at(stmt, i) {
                        Some((lit, next)) => {
                            text.push_str(&lit);
                            i = next;
                        }
                        None => i += 1,
                    }
                }
                if !text.is_empty() {
                    bodies.push(Body {
                        text,
                        kind: BodyKind::Dynamic,
                    });
                }
                continue;
            }
            _ => None,
        };
        match found.and_then(|k| literal_at(stmt, i).map(|l| (k, l))) {
            Some((kind, (text, next))) => {
                bodies.push(Body { text, kind });
                i = next;
            }
            None => i += 1,
        }
    }
    bodies
}

/// Check a routine body found `depth` levels down as its own text.
fn scan_body(body: &Body, a: &mut Analysis, depth: usize, bodies_read: &mut bool) {
    if depth > MAX_BODY_DEPTH {
        *bodies_read = false;
        if a.unreadable.is_none() {
            a.unreadable = risky_word(&body.text)
                .map(|w| format!("routine bodies nest too deep, one mentioning {w}"));
        }
        return;
    }
    // Dynamic SQL is often the start of a statement that ends in an open quote
    // (`'... SET x = ''' || v`): read it with the quote closed.
    let read = tokenize(&body.text).or_else(|| {
        (body.kind == BodyKind::Dynamic)
            .then(|| {
                let closed = format!("{}'", body.text);
                tokenize(&closed)
                    .map(|(t, tokens)| (std::borrow::Cow::Owned(t.into_owned()), tokens))
            })
            .flatten()
    });
    let Some((text, tokens)) = read else {
        if body.kind != BodyKind::Dynamic {
            // As for a whole text the tokenizer rejects.
            *bodies_read = false;
            if a.unreadable.is_none() {
                a.unreadable = risky_word(&body.text)
                    .map(|w| format!("its tokenizer rejects a routine body that mentions {w}"));
            }
        }
        return;
    };
    scan_tokens(&tokens, a, (depth, Some(body.kind)), bodies_read);
    match body.kind {
        // Only the tokens were checked: strict mode cannot count it as verified.
        BodyKind::Plpgsql => *bodies_read = false,
        BodyKind::Sql if tokens.len() <= MAX_PARSE_TOKENS => {
            match Parser::parse_sql(&PostgreSqlDialect {}, &text) {
                Ok(stmts) => scan_ast(&stmts, a),
                Err(_) => *bodies_read = false,
            }
        }
        BodyKind::Sql => *bodies_read = false,
        BodyKind::Dynamic => {}
    }
}

/// Token-level checks: they work on statements the parser does not understand too.
/// Routine bodies found in them are checked alike, `depth` levels down (`plpgsql` when
/// the tokens are a PL/pgSQL body); `bodies_read` turns false when one could not be
/// read in full.
fn scan_tokens(
    tokens: &[Token],
    a: &mut Analysis,
    (depth, kind): (usize, Option<BodyKind>),
    bodies_read: &mut bool,
) {
    let plpgsql = kind == Some(BodyKind::Plpgsql);
    // Table names, in a PL/pgSQL body also read in each statement up to its semicolon:
    // the block words (THEN, ELSE, ...) that split a statement for the checks of its
    // first word can also stand inside one (`ON CASE WHEN a THEN b END, other.t`).
    if plpgsql {
        for stmt in statements(tokens, false) {
            let words: Vec<Option<String>> = stmt.iter().map(word).collect();
            table_rules(stmt, &words, plpgsql, a);
        }
    }
    for stmt in statements(tokens, plpgsql) {
        let words: Vec<Option<String>> = stmt.iter().map(word).collect();
        let w = |i: usize| words.get(i).and_then(|x| x.as_deref());
        for body in sql_bodies(stmt, &words, plpgsql) {
            scan_body(&body, a, depth + 1, bodies_read);
        }
        // SET/RESET [SESSION|LOCAL] ROLE, SET/RESET SESSION AUTHORIZATION
        if matches!(w(0), Some("set") | Some("reset")) {
            let mut i = 1;
            if matches!(w(i), Some("session") | Some("local")) && w(i + 1) != Some("authorization")
            {
                i += 1;
            }
            if matches!(w(i), Some("role" | "session_authorization"))
                || (w(i) == Some("session") && w(i + 1) == Some("authorization"))
            {
                a.role_change = true;
            }
            if w(0) == Some("set")
                && w(i) == Some("standard_conforming_strings")
                && !stmt
                    .iter()
                    .skip(i + 1)
                    .filter(|t| !matches!(t, Token::Eq) && word(t).as_deref() != Some("to"))
                    .all(|t| ident(t).is_some_and(|v| pg_bool(&v) == Some(true) || v == "default"))
            {
                a.nonstandard_strings = true;
            }
        }
        if unicode_escaped_identifier(stmt) {
            a.unicode_identifier = true;
        }
        // SET [SESSION|LOCAL] client_encoding, SET NAMES, and the SET clauses of
        // ALTER ROLE / DATABASE / FUNCTION and CREATE FUNCTION
        // (an UPDATE's SET names a column)
        let sets_settings = matches!(w(0), Some("set" | "alter" | "create"));
        for j in 1..stmt.len() {
            if !(sets_settings && matches!(w(j - 1), Some("set" | "session" | "local"))) {
                continue;
            }
            match w(j) {
                Some("client_encoding" | "names") if a.split_encoding.is_none() => {
                    a.split_encoding = setting_values(stmt, j + 1)
                        .into_iter()
                        .find(|v| super::encoding::splits_ascii(v));
                }
                Some("search_path") => {
                    let path = a.search_path.get_or_insert_with(Vec::new);
                    for v in setting_values(stmt, j + 1) {
                        // a quoted string may itself hold a list
                        path.extend(v.split(',').map(|s| s.trim().trim_matches('"').to_owned()));
                    }
                }
                _ => {}
            }
        }
        // UPDATE pg_settings SET setting = ... is set_config by another name, and so is
        // an UPDATE of a view over it: only reading it is allowed.
        if words.iter().any(|x| x.as_deref() == Some("pg_settings"))
            && (words.iter().any(|x| x.as_deref() == Some("update"))
                || !matches!(w(0), Some("select" | "with" | "table" | "explain")))
        {
            a.settings_table_write = true;
        }
        // Escapes PostgreSQL applies where the tokens show them undone: an E'...' or
        // U&'...' literal continued on the next line (the continuation is decoded alike),
        // and UESCAPE (another escape character).
        let escaped_continued = stmt.windows(2).any(|p| {
            matches!(
                p[0],
                Token::EscapedStringLiteral(_) | Token::UnicodeStringLiteral(_)
            ) && (string(&p[1]).is_some() || matches!(p[1], Token::UnicodeStringLiteral(_)))
        });
        if escaped_continued {
            a.unreadable.get_or_insert_with(|| CONTINUED.into());
        }
        if words.iter().any(|x| x.as_deref() == Some("uescape")) {
            a.unreadable
                .get_or_insert_with(|| "UESCAPE changes the escape character".into());
        }
        // function calls by name: name '(' ...
        for (i, t) in stmt.iter().enumerate() {
            let Token::Word(wd) = t else { continue };
            if !matches!(stmt.get(i + 1), Some(Token::LParen)) {
                continue;
            }
            let name = if wd.quote_style.is_some() {
                wd.value.clone()
            } else {
                wd.value.to_ascii_lowercase()
            };
            if FORBIDDEN_FUNCTIONS.contains(&name.as_str()) {
                a.forbidden_function.get_or_insert(name.clone());
            }
            // schema.function(...): in a routine body the only sight of it; at the top
            // level counted only if the text does not parse (the syntax tree shows
            // calls, and a type's modifier `s.vector(3)` is no call). Not a reserved
            // word, which no unquoted schema name is (`'INSERT INTO ' || s || '.log('`
            // joins to `INTO .log(`), nor in dynamic SQL a format() placeholder
            // (`%I.f(`; elsewhere `%` is an operator).
            if i >= 2 && matches!(stmt[i - 1], Token::Period) {
                if let Token::Word(s) = &stmt[i - 2] {
                    let placeholder = kind == Some(BodyKind::Dynamic)
                        && i >= 3
                        && matches!(stmt[i - 3], Token::Mod);
                    if !placeholder && (s.quote_style.is_some() || !is_reserved(&s.value)) {
                        let schema = fold(&s.value, s.quote_style.is_some());
                        if depth == 0 {
                            a.call_schemas.push(schema);
                        } else {
                            a.schemas.push(schema);
                        }
                    }
                }
            }
            if name == "set_config" {
                // A literal name only when a comma follows it: adjacent literals on
                // separate lines are one string to PostgreSQL ('search_' newline 'path').
                let literal = stmt
                    .get(i + 2)
                    .and_then(string)
                    .filter(|_| matches!(stmt.get(i + 3), Some(Token::Comma)));
                if let Some(arg) = literal {
                    let arg = arg.trim().to_ascii_lowercase();
                    if GUARDED_SETTINGS.contains(&arg.as_str()) {
                        a.guarded_set_config.get_or_insert(arg);
                    }
                } else {
                    // the setting name is computed: cannot prove it harmless
                    a.guarded_set_config.get_or_insert("(computed)".into());
                }
            }
        }
        table_rules(stmt, &words, plpgsql, a);
    }
}

/// Schema-qualified table names the parser may miss, from the tokens of one statement:
/// what follows FROM / JOIN / INTO / UPDATE / TABLE / COPY / TRUNCATE, `USING` in a
/// DELETE or MERGE, and every item of a FROM, USING, TRUNCATE, LOCK or DROP TABLE list.
/// Not a table: `extract(epoch FROM t.ts)` and the other functions whose argument list
/// has a FROM, `IS DISTINCT FROM t.x`, a column named like a key word (`t.from`), and
/// in a PL/pgSQL body the variable after INTO (`SELECT ... INTO NEW.id`, `RETURNING id
/// INTO r.x`) unless it is an INSERT's or MERGE's. One pass: a list open at each
/// parenthesis level. Also the one place COPY to or from a program or a server file is
/// found, for every COPY that starts a statement.
fn table_rules(stmt: &[Token], words: &[Option<String>], plpgsql: bool, a: &mut Analysis) {
    let w = |i: usize| words.get(i).and_then(|x| x.as_deref());
    let bare = |i: usize, names: &[&str]| {
        matches!(stmt.get(i), Some(Token::Word(x)) if x.quote_style.is_none()
            && names.iter().any(|n| x.value.eq_ignore_ascii_case(n)))
    };
    // Per open parenthesis: is it the argument list of one of those functions (a name
    // before it that is not a table's, and no subquery right inside)? And is a list of
    // tables open at that level?
    let mut calls: Vec<bool> = Vec::new();
    let mut lists: Vec<bool> = vec![false];
    let mut dml = false;
    let mut cases = 0usize;
    let mut inserts: Vec<bool> = vec![false];
    for (i, t) in stmt.iter().enumerate() {
        match t {
            Token::LParen => {
                calls.push(
                    i.checked_sub(1).is_some_and(|f| {
                        bare(f, &["extract", "substring", "trim", "overlay", "position"])
                            && !f.checked_sub(1).is_some_and(|p| {
                                matches!(stmt[p], Token::Period)
                                    || matches!(
                                        w(p),
                                        Some(
                                            "into" | "table" | "from" | "join" | "update" | "only"
                                        )
                                    )
                            })
                    }) && !matches!(stmt.get(i + 1), Some(Token::LParen))
                        && !bare(i + 1, &["select", "with", "values", "table"]),
                );
                lists.push(false);
                inserts.push(false);
            }
            Token::RParen => {
                calls.pop();
                if lists.len() > 1 {
                    lists.pop();
                    inserts.pop();
                }
            }
            Token::Comma if lists.last() == Some(&true) => table_at(stmt, i + 1, a),
            _ => {}
        }
        let Token::Word(kw) = t else { continue };
        if i > 0 && matches!(stmt[i - 1], Token::Period) {
            continue;
        }
        if matches!(kw.keyword, Keyword::DELETE | Keyword::MERGE) {
            dml = true;
        }
        // In a PL/pgSQL statement read up to its semicolon, a block word ends the lists
        // open at its level (`FOR r IN SELECT * FROM t LOOP RAISE '%', r.id`), but not
        // the THEN/ELSE of a CASE expression (`ON CASE WHEN a THEN b END, other.t`); a
        // CASE that starts a statement is PL/pgSQL's CASE statement, whose THENs do.
        if plpgsql && kw.quote_style.is_none() {
            let after_as = after_as(stmt, i);
            // (inside a CASE expression a CASE after THEN is another expression)
            let starts_statement = cases == 0 && (i == 0 || is_block_word(stmt, i - 1));
            match kw.keyword {
                Keyword::CASE if !after_as && !starts_statement => cases += 1,
                Keyword::END if cases > 0 && !after_as => cases -= 1,
                // only where a statement follows: `loop` can also be a name in an
                // expression (`ON loop IS NOT NULL, other.t`)
                _ if cases == 0 && is_block_word(stmt, i) && starts_a_statement(stmt, i + 1) => {
                    *lists.last_mut().expect("level 0") = false;
                }
                _ => {}
            }
        }
        // INSERT INTO at this parenthesis level (not a name `insert`, nor one in a CTE),
        // whose ON CONFLICT ends the lists
        if kw.keyword == Keyword::INSERT
            && !after_as(stmt, i)
            && matches!(stmt.get(i + 1), Some(Token::Word(n)) if n.keyword == Keyword::INTO)
        {
            *inserts.last_mut().expect("level 0") = true;
        }
        // COPY ... PROGRAM / a server file, where a COPY starts a statement (also read up
        // to the semicolon: `COPY (SELECT CASE WHEN a THEN 1 END) TO PROGRAM 'x'`)
        if kw.keyword == Keyword::COPY && (i == 0 || is_block_word(stmt, i - 1)) {
            copy_rules(&stmt[i..], a);
        }
        if lists.last() == Some(&true) && ends_list(stmt, i, inserts.last() == Some(&true)) {
            *lists.last_mut().expect("level 0") = false;
        }
        let not_a_table = match kw.keyword {
            Keyword::FROM => {
                (i >= 2 && bare(i - 1, &["distinct"]) && bare(i - 2, &["is", "not"]))
                    || calls.last() == Some(&true)
            }
            Keyword::INTO => {
                plpgsql && !matches!(i.checked_sub(1).and_then(w), Some("insert" | "merge"))
            }
            _ => false,
        };
        if not_a_table {
            continue;
        }
        // DELETE ... USING t, MERGE ... USING t (not PL/pgSQL's EXECUTE ... USING
        // values; JOIN ... USING (col) names no qualified table)
        let using_tables = kw.keyword == Keyword::USING && dml;
        // LOCK [TABLE] a, b and DROP TABLE a, b name lists of tables too
        let table_list = (kw.keyword == Keyword::LOCK && i == 0)
            || (kw.keyword == Keyword::TABLE
                && matches!(
                    i.checked_sub(1).and_then(w),
                    Some("drop" | "lock" | "truncate")
                ));
        if !using_tables
            && !table_list
            && !matches!(
                kw.keyword,
                Keyword::FROM
                    | Keyword::JOIN
                    | Keyword::INTO
                    | Keyword::UPDATE
                    | Keyword::TABLE
                    | Keyword::COPY
                    | Keyword::TRUNCATE
            )
        {
            continue;
        }
        table_at(stmt, i + 1, a);
        // the other items of a list: FROM a, b.t / USING a, b.t / TRUNCATE a, b.t
        if using_tables || table_list || matches!(kw.keyword, Keyword::FROM | Keyword::TRUNCATE) {
            *lists.last_mut().expect("level 0") = true;
        }
    }
}

/// A COPY statement `stmt` (from its COPY) to or from a program or a server file.
fn copy_rules(stmt: &[Token], a: &mut Analysis) {
    let mut after_direction = false;
    for t in stmt {
        let lw = word(t);
        if lw.as_deref() == Some("program") {
            a.server_file_copy = true;
        }
        if after_direction && string(t).is_some() {
            a.server_file_copy = true;
        }
        after_direction = matches!(lw.as_deref(), Some("from") | Some("to"));
    }
}

/// Does a PL/pgSQL statement start at `stmt[j]`: a statement's first key word, a
/// `<<label>>`, or an assignment (`x := ...`, `r.f = ...`)? (Conservative the other
/// way: a statement this misses only leaves a list open.)
fn starts_a_statement(stmt: &[Token], j: usize) -> bool {
    const FIRST: &[&str] = &[
        "alter",
        "analyze",
        "assert",
        "begin",
        "call",
        "case",
        "close",
        "comment",
        "commit",
        "continue",
        "copy",
        "create",
        "declare",
        "delete",
        "discard",
        "drop",
        "else",
        "elsif",
        "end",
        "execute",
        "exit",
        "fetch",
        "for",
        "foreach",
        "get",
        "grant",
        "if",
        "insert",
        "listen",
        "lock",
        "loop",
        "merge",
        "move",
        "notify",
        "null",
        "open",
        "perform",
        "raise",
        "refresh",
        "reset",
        "return",
        "revoke",
        "rollback",
        "savepoint",
        "select",
        "set",
        "truncate",
        "update",
        "vacuum",
        "while",
        "with",
    ];
    match stmt.get(j) {
        None | Some(Token::SemiColon) => true,
        // `<<label>>`, not the operator
        Some(Token::ShiftLeft) => {
            matches!(stmt.get(j + 1), Some(Token::Word(_)))
                && matches!(stmt.get(j + 2), Some(Token::ShiftRight))
        }
        Some(Token::Word(w))
            if w.quote_style.is_none() && FIRST.iter().any(|k| w.value.eq_ignore_ascii_case(k)) =>
        {
            true
        }
        Some(Token::Word(_)) => {
            let mut k = j + 1;
            while matches!(stmt.get(k), Some(Token::Period))
                && matches!(stmt.get(k + 1), Some(Token::Word(_)))
            {
                k += 2;
            }
            matches!(
                stmt.get(k),
                Some(Token::Assignment | Token::Eq | Token::LBracket)
            )
        }
        _ => false,
    }
}

/// `schema.table` (after `ONLY` or `LATERAL`) at `stmt[j..]`: its schema.
fn table_at(stmt: &[Token], mut j: usize, a: &mut Analysis) {
    // `(a.t JOIN b ...)`: a parenthesised join's first table; `ONLY (a.t)`,
    // `IF EXISTS a.t`
    let prefix = |w: &sqlparser::tokenizer::Word| {
        w.quote_style.is_none()
            && matches!(
                w.keyword,
                Keyword::ONLY | Keyword::LATERAL | Keyword::TABLE | Keyword::IF | Keyword::EXISTS
            )
    };
    while matches!(stmt.get(j), Some(Token::LParen))
        || matches!(stmt.get(j), Some(Token::Word(w)) if prefix(w))
    {
        j += 1;
    }
    if let (Some(Token::Word(s)), Some(Token::Period), Some(Token::Word(_))) =
        (stmt.get(j), stmt.get(j + 1), stmt.get(j + 2))
    {
        a.schemas.push(fold(&s.value, s.quote_style.is_some()));
    }
}

/// A word that ends a FROM or USING list at its level: a clause that may itself hold a
/// comma-separated list of qualified column names (ORDER BY a.x, b.y). All are reserved
/// in PostgreSQL, so none is an alias (unless after AS); in an INSERT `ON CONFLICT`
/// ends it too (its `DO UPDATE SET` list).
fn ends_list(stmt: &[Token], j: usize, insert: bool) -> bool {
    let Token::Word(w) = &stmt[j] else {
        return false;
    };
    if w.quote_style.is_some() || after_as(stmt, j) {
        return false;
    }
    matches!(
        w.keyword,
        Keyword::WHERE
            | Keyword::GROUP
            | Keyword::HAVING
            | Keyword::ORDER
            | Keyword::LIMIT
            | Keyword::OFFSET
            | Keyword::FETCH
            | Keyword::UNION
            | Keyword::EXCEPT
            | Keyword::INTERSECT
            | Keyword::WINDOW
            | Keyword::FOR
            | Keyword::RETURNING
            | Keyword::INTO
    ) || (insert
        && w.keyword == Keyword::ON
        && matches!(stmt.get(j + 1), Some(Token::Word(c))
            if c.value.eq_ignore_ascii_case("conflict"))
        // not a join on a table called `conflict` (ON conflict.id = ...)
        && (matches!(stmt.get(j + 2), Some(Token::LParen))
            || matches!(stmt.get(j + 2), Some(Token::Word(n))
                if matches!(n.keyword, Keyword::ON | Keyword::DO))))
}

/// PostgreSQL's reserved key words (its documentation's Appendix C, "reserved" and
/// "reserved (can be function or type)"): never an unquoted schema name.
fn is_reserved(w: &str) -> bool {
    const RESERVED: &[&str] = &[
        "all",
        "analyse",
        "analyze",
        "and",
        "any",
        "array",
        "as",
        "asc",
        "asymmetric",
        "authorization",
        "binary",
        "both",
        "case",
        "cast",
        "check",
        "collate",
        "collation",
        "column",
        "concurrently",
        "constraint",
        "create",
        "cross",
        "current_catalog",
        "current_date",
        "current_role",
        "current_schema",
        "current_time",
        "current_timestamp",
        "current_user",
        "default",
        "deferrable",
        "desc",
        "distinct",
        "do",
        "else",
        "end",
        "except",
        "false",
        "fetch",
        "for",
        "foreign",
        "freeze",
        "from",
        "full",
        "grant",
        "group",
        "having",
        "ilike",
        "in",
        "initially",
        "inner",
        "intersect",
        "into",
        "is",
        "isnull",
        "join",
        "lateral",
        "leading",
        "left",
        "like",
        "limit",
        "localtime",
        "localtimestamp",
        "natural",
        "not",
        "notnull",
        "null",
        "offset",
        "on",
        "only",
        "or",
        "order",
        "outer",
        "overlaps",
        "placing",
        "primary",
        "references",
        "returning",
        "right",
        "select",
        "session_user",
        "similar",
        "some",
        "symmetric",
        "system_user",
        "table",
        "tablesample",
        "then",
        "to",
        "trailing",
        "true",
        "union",
        "unique",
        "user",
        "using",
        "variadic",
        "verbose",
        "when",
        "where",
        "window",
        "with",
    ];
    RESERVED.iter().any(|r| w.eq_ignore_ascii_case(r))
}

/// A `U&"..."` identifier among `tokens` (whitespace left out): its escapes can spell any
/// name the checks look for. (`U&'...'` strings arrive decoded.)
pub fn unicode_escaped_identifier(tokens: &[Token]) -> bool {
    tokens.windows(3).any(|w| {
        matches!(w, [Token::Word(u), Token::Ampersand, Token::Word(id)]
            if u.quote_style.is_none() && u.value.eq_ignore_ascii_case("u")
                && id.quote_style == Some('"'))
    })
}

fn fold(s: &str, quoted: bool) -> String {
    if quoted {
        s.to_owned()
    } else {
        s.to_ascii_lowercase()
    }
}

fn schema_of(name: &ObjectName, parts_after: usize) -> Option<String> {
    let idents: Vec<_> = name.0.iter().filter_map(|p| p.as_ident()).collect();
    if idents.len() > parts_after {
        let s = idents[idents.len() - 1 - parts_after];
        Some(fold(&s.value, s.quote_style.is_some()))
    } else {
        None
    }
}

fn scan_ast(stmts: &Vec<Statement>, a: &mut Analysis) {
    let _ = visit_relations(stmts, |rel: &ObjectName| {
        if let Some(s) = schema_of(rel, 1) {
            a.schemas.push(s);
        }
        ControlFlow::<()>::Continue(())
    });
    let _ = visit_expressions(stmts, |e: &Expr| {
        match e {
            Expr::Function(f) => {
                if let Some(s) = schema_of(&f.name, 1) {
                    a.schemas.push(s);
                }
            }
            Expr::CompoundIdentifier(parts) if parts.len() >= 3 => {
                let s = &parts[parts.len() - 3];
                a.schemas.push(fold(&s.value, s.quote_style.is_some()));
            }
            _ => {}
        }
        ControlFlow::<()>::Continue(())
    });
    for s in stmts {
        if let Statement::Copy { target, .. } = s {
            if matches!(
                target,
                sqlparser::ast::CopyTarget::Program { .. }
                    | sqlparser::ast::CopyTarget::File { .. }
            ) {
                a.server_file_copy = true;
            }
        }
    }
}

const NONSTANDARD_STRINGS: &str =
    "standard_conforming_strings must stay on: the proxy reads strings as standard SQL";

/// May a tenant whose schema is `schema` name schema `s`?
fn schema_allowed(s: &str, schema: &str, ctx: &GuardContext<'_>) -> bool {
    s == schema
        || s == ctx.logical_schema
        || SYSTEM_SCHEMAS.contains(&s)
        || s.starts_with("pg_temp")
}

/// May a tenant whose schema is `schema` put `s` in its search_path?
fn path_item_allowed(s: &str, schema: &str, ctx: &GuardContext<'_>) -> bool {
    schema_allowed(s, schema, ctx) || s == "$user" || s.eq_ignore_ascii_case("default")
}

fn search_path_refusal(bad: &str) -> String {
    format!("search_path may only name the tenant's own schema, not \"{bad}\"")
}

/// A boolean setting's value as PostgreSQL reads it (`on`, `true`, `yes`, `1` and their
/// opposites, any case); `None` for anything else.
pub fn pg_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "t" | "yes" | "y" | "1" => Some(true),
        "off" | "false" | "f" | "no" | "n" | "0" => Some(false),
        _ => None,
    }
}

/// A session setting a client asked for at login (a startup parameter, or `-c name=value`
/// in `options`), which the proxy applies with `SET` on each server connection: the value
/// to apply, with the logical schema in a `search_path` replaced by the tenant's (as
/// `SET search_path` statements are rewritten), or why it is refused. `enforce` is the
/// guard's switch; `standard_conforming_strings` must stay on and `client_encoding`
/// readable ([`super::encoding`]) whatever it says, as every check and rewrite reads the
/// text as standard SQL in an ASCII-compatible encoding.
pub fn startup_setting(
    name: &str,
    value: &str,
    ctx: &GuardContext<'_>,
    enforce: bool,
) -> Result<String, String> {
    match name {
        "standard_conforming_strings" if pg_bool(value) != Some(true) => {
            Err(NONSTANDARD_STRINGS.into())
        }
        "client_encoding" if super::encoding::splits_ascii(value) => {
            Err(super::encoding::refusal(value))
        }
        "role" | "session_authorization" if enforce => {
            Err("changing role or session authorization is not allowed".into())
        }
        "search_path" => {
            let Some(schema) = ctx.tenant_schema else {
                return Ok(value.to_owned());
            };
            let mut items = Vec::new();
            for item in split_path(value) {
                // As PostgreSQL reads the list: quoted names as they are, others folded.
                let name = match item.strip_prefix('"').and_then(|i| i.strip_suffix('"')) {
                    Some(quoted) => quoted.replace("\"\"", "\""),
                    None => item.to_ascii_lowercase(),
                };
                if !ctx.logical_schema.is_empty() && name == ctx.logical_schema {
                    items.push(crate::backend::server::search_path_item(schema));
                } else if enforce && !path_item_allowed(&name, schema, ctx) {
                    return Err(search_path_refusal(&name));
                } else {
                    items.push(item.to_owned());
                }
            }
            Ok(items.join(", "))
        }
        _ => Ok(value.to_owned()),
    }
}

/// The items of a `search_path` value, trimmed: split at commas outside double quotes
/// (`"a,b", c` is two items).
fn split_path(value: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, c) in value.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                items.push(value[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(value[start..].trim());
    items.retain(|i| !i.is_empty());
    items
}

/// Decide for a tenant.
pub fn check(a: &Analysis, ctx: &GuardContext<'_>) -> Verdict {
    if a.role_change {
        return Verdict::Refuse("changing role or session authorization is not allowed".into());
    }
    if let Some(s) = &a.guarded_set_config {
        return Verdict::Refuse(format!("set_config of \"{s}\" is not allowed"));
    }
    if a.server_file_copy {
        return Verdict::Refuse(
            "COPY with server files or programs is not allowed; use COPY FROM STDIN / TO STDOUT"
                .into(),
        );
    }
    if let Some(f) = &a.forbidden_function {
        return Verdict::Refuse(format!("function {f}() is not allowed"));
    }
    if a.nonstandard_strings {
        return Verdict::Refuse(NONSTANDARD_STRINGS.into());
    }
    if let Some(e) = &a.split_encoding {
        return Verdict::Refuse(super::encoding::refusal(e));
    }
    if a.settings_table_write {
        return Verdict::Refuse("writing pg_settings is not allowed; use SET".into());
    }
    if let Some(why) = &a.unreadable {
        return Verdict::Refuse(format!(
            "the guard cannot read this statement as the server will ({why}); write it more plainly"
        ));
    }
    if a.unicode_identifier {
        return Verdict::Refuse(
            "Unicode-escaped identifiers (U&\"...\") are not allowed; write the name as it is"
                .into(),
        );
    }
    if let Some(schema) = ctx.tenant_schema {
        let allowed = |s: &str| schema_allowed(s, schema, ctx);
        if let Some(path) = &a.search_path {
            if let Some(bad) = path.iter().find(|s| !path_item_allowed(s, schema, ctx)) {
                return Verdict::Refuse(search_path_refusal(bad));
            }
        }
        if let Some(bad) = a.schemas.iter().find(|s| !allowed(s)) {
            return Verdict::Refuse(format!(
                "statement references schema \"{bad}\", which is outside this tenant"
            ));
        }
    }
    if !a.parsed && ctx.strict {
        return Verdict::Refuse("statement could not be verified (guard strict mode)".into());
    }
    Verdict::Allow
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(sql: &str, strict: bool) -> Verdict {
        check(
            &analyze(sql),
            &GuardContext {
                tenant_schema: Some("tenant_acme"),
                logical_schema: "public",
                strict,
            },
        )
    }

    #[test]
    fn policy_table() {
        // (statement, allowed?)
        let cases: &[(&str, bool)] = &[
            ("SELECT * FROM users WHERE id = 1", true),
            ("SELECT * FROM tenant_acme.users", true),
            ("SELECT * FROM public.users", true),
            ("SELECT count(*) FROM pg_catalog.pg_class", true),
            ("SELECT * FROM information_schema.tables", true),
            ("INSERT INTO users (email) VALUES ('set role admin')", true),
            ("SELECT 'tenant_globex.users'", true),
            (
                "SELECT u.id FROM users u JOIN projects p ON p.owner_id = u.id",
                true,
            ),
            ("CREATE TEMP TABLE t (x int)", true),
            ("SET search_path TO tenant_acme, public", true),
            ("SET search_path = \"$user\", public", true),
            ("COPY users FROM STDIN", true),
            ("COPY (SELECT 1) TO STDOUT", true),
            ("SELECT set_config('application_name', 'x', false)", true),
            ("SELECT * FROM tenant_globex.users", false),
            ("SELECT * FROM TENANT_GLOBEX.users", false),
            ("SELECT * FROM \"tenant_globex\".users", false),
            (
                "SELECT * FROM users JOIN tenant_globex.users g ON true",
                false,
            ),
            ("SELECT * FROM ONLY tenant_globex.users", false),
            (
                "SELECT * FROM users WHERE id IN (SELECT id FROM tenant_globex.users)",
                false,
            ),
            (
                "WITH x AS (SELECT * FROM tenant_globex.users) SELECT * FROM x",
                false,
            ),
            ("SELECT tenant_globex.users.email FROM users", false),
            ("SELECT tenant_globex.secret_fn()", false),
            ("UPDATE tenant_globex.users SET name = 'x'", false),
            ("DELETE FROM tenant_globex.users", false),
            (
                "INSERT INTO tenant_globex.users (email) VALUES ('x')",
                false,
            ),
            ("TRUNCATE tenant_globex.users", false),
            ("COPY tenant_globex.users TO STDOUT", false),
            ("DROP TABLE tenant_globex.users", false),
            ("ALTER TABLE tenant_globex.users ADD COLUMN x int", false),
            ("SELECT * FROM /* x */ tenant_globex . users", false),
            ("select * from tenantgate.tenant_users", false),
            ("SET ROLE postgres", false),
            ("SET \"role\" TO postgres", false),
            ("SET \"search_path\" TO tenant_globex", false),
            ("set role postgres", false),
            ("SET LOCAL ROLE tg_globex", false),
            ("SET SESSION ROLE tg_globex", false),
            ("RESET ROLE", false),
            ("SET SESSION AUTHORIZATION postgres", false),
            ("RESET SESSION AUTHORIZATION", false),
            ("SELECT 1; SET ROLE postgres", false),
            ("SELECT set_config('role', 'postgres', false)", false),
            ("SELECT set_config('ROLE', 'postgres', true)", false),
            (
                "SELECT set_config('search_path', 'tenant_globex', false)",
                false,
            ),
            ("SELECT set_config(current_setting('x'), 'y', false)", false),
            ("SET search_path TO tenant_globex", false),
            ("SET search_path = 'tenant_globex, public'", false),
            ("SET LOCAL search_path TO tenant_globex", false),
            ("COPY users TO PROGRAM 'curl evil'", false),
            ("COPY users FROM '/etc/passwd'", false),
            ("COPY (SELECT 1) TO '/tmp/x'", false),
            ("SELECT pg_read_file('/etc/passwd')", false),
            ("SELECT PG_READ_FILE('/etc/passwd')", false),
            ("SELECT lo_import('/etc/passwd')", false),
            ("SELECT lo_export(1, '/tmp/x')", false),
            ("SELECT pg_ls_dir('.')", false),
            (
                "SELECT * FROM dblink('dbname=x', 'select 1') AS t(a int)",
                false,
            ),
            ("SELECT pg_terminate_backend(1)", false),
            ("SET standard_conforming_strings = on", true),
            ("SET standard_conforming_strings TO DEFAULT", true),
            ("SET standard_conforming_strings = off", false),
            ("set local standard_conforming_strings to 'false'", false),
            (
                "SELECT set_config('standard_conforming_strings', 'off', false)",
                false,
            ),
            // Adjacent literals on separate lines are one string to PostgreSQL.
            (
                "SELECT set_config('search_'\n'path', 'tenant_globex', false)",
                false,
            ),
            ("SELECT U&\"pg\\005Fread\\005Ffile\"('/etc/passwd')", false),
            ("SELECT * FROM U&\"tenant\\005Fglobex\".users", false),
            ("SELECT U&'caf\\00E9'", true),
            // Client encodings the checks cannot read (see super::encoding).
            ("SET client_encoding = 'SJIS'", false),
            ("SET client_encoding TO sjis", false),
            ("set session client_encoding to 'Shift-JIS'", false),
            ("SET LOCAL client_encoding = E'big5'", false),
            ("SET NAMES 'win932'", false),
            ("SET NAMES $$GBK$$", false),
            ("SET client_encoding = U&'UHC'", false),
            ("SELECT 1; SET client_encoding = 'GB18030'", false),
            ("ALTER ROLE CURRENT_USER SET client_encoding = 'JOHAB'", false),
            (
                "ALTER FUNCTION f() SET client_encoding TO 'SHIFT_JIS_2004'",
                false,
            ),
            (
                "SELECT set_config('client_encoding', 'SJIS', false)",
                false,
            ),
            ("SET client_encoding = 'UTF8'", true),
            ("SET NAMES 'LATIN1'", true),
            ("SET client_encoding TO DEFAULT", true),
            ("RESET client_encoding", true),
            ("SELECT names FROM t WHERE client_encoding = 'SJIS'", true),
            // Routine bodies the server runs as SQL get the same checks.
            ("DO $$BEGIN PERFORM * FROM tenant_globex.users; END$$", false),
            ("DO $$BEGIN SET ROLE postgres; END$$", false),
            (
                "DO LANGUAGE plpgsql $b$BEGIN SET standard_conforming_strings = off; END$b$",
                false,
            ),
            ("DO 'BEGIN PERFORM pg_read_file(''/etc/passwd''); END'", false),
            (
                "DO $a$BEGIN EXECUTE $q$SET client_encoding = 'SJIS'$q$; END$a$",
                false,
            ),
            (
                "DO $a$BEGIN EXECUTE 'DO $b$BEGIN EXECUTE ''SET ROLE x''; END$b$'; END$a$",
                false,
            ),
            (
                "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$SELECT count(*) FROM tenant_globex.users$$",
                false,
            ),
            (
                "CREATE OR REPLACE PROCEDURE p() AS $$BEGIN SET ROLE x; END$$ LANGUAGE plpgsql",
                false,
            ),
            ("DO $$BEGIN PERFORM * FROM users; RAISE NOTICE 'done'; END$$", true),
            ("DO $$BEGIN PERFORM * FROM begin.items; END$$", false),
            (
                "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$SELECT count(*) FROM public.users$$",
                true,
            ),
            // Another language's body is not SQL (Python's `from os.path import x`).
            (
                "CREATE FUNCTION f() RETURNS int LANGUAGE plpython3u AS $$from os.path import join$$",
                true,
            ),
            ("SELECT 'DO $$ SET ROLE x $$'", true),
            // Second review: more spellings, and bodies real applications have.
            ("SET SESSION NAMES 'SJIS'", false),
            ("SET LOCAL NAMES 'BIG5'", false),
            ("SET client_encoding = $$big-5$$", false),
            ("SET client_encoding = E'big\\'5'", false),
            (
                "UPDATE pg_settings SET setting = 'SJIS' WHERE name = 'client_encoding'",
                false,
            ),
            ("UPDATE prefs SET client_encoding = 'SJIS'", true),
            ("SET ROLE x; SELECT E'\\xC3\\xA9'", false),
            ("SELECT E'\\xC3\\xA9'", true),
            (
                "CREATE FUNCTION f(language text) RETURNS void LANGUAGE plpgsql AS $$BEGIN SET ROLE x; END$$",
                false,
            ),
            ("DO U&'BEGIN SET ROLE x; END'", false),
            ("DO 'BEGIN SET '\n'ROLE x; END'", false),
            ("DO $$BEGIN EXECUTE ('SET ROLE x'); END$$", false),
            (
                "DO $$BEGIN EXECUTE 'UPDATE t SET x = ''' || v || ''' WHERE id = 1'; END$$",
                true,
            ),
            (
                "CREATE FUNCTION trg() RETURNS trigger LANGUAGE plpgsql AS $$
                 BEGIN
                   IF NEW.status IS DISTINCT FROM OLD.status THEN
                     SELECT nextval('s') INTO NEW.id;
                     INSERT INTO audit(id) VALUES (NEW.id) RETURNING id INTO NEW.audit_id;
                     NEW.year := extract(year FROM NEW.ts);
                   END IF;
                   RETURN NEW;
                 END$$",
                true,
            ),
            (
                "DO $$BEGIN INSERT INTO tenant_globex.users VALUES (1); END$$",
                false,
            ),
            ("SELECT extract(year FROM u.created_at) FROM users u", true),
            // Dynamic SQL is SQL: its SELECT INTO creates a table.
            (
                "DO $$BEGIN EXECUTE 'SELECT * INTO tenant_globex.t FROM users'; END$$",
                false,
            ),
            ("SELECT trim(both ' ' FROM u.name) FROM users u", true),
            // Third review.
            ("/* /* */ ' */ SET client_encoding = 'big-5'", false),
            ("SET client_encoding = 'big'\n'5'", false),
            ("DO E'BEGIN SET '\n'\\x52OLE x; END'", false),
            ("DO U&'BEGIN SET !0052OLE x; END' UESCAPE '!'", false),
            ("SET client_encoding = U&'big!0035' UESCAPE '!'", false),
            (
                "DO $$BEGIN INSERT INTO trim (SELECT name FROM tenant_globex.users); END$$",
                false,
            ),
            (
                "DO $$BEGIN SELECT INTO r name \"distinct\" FROM tenant_globex.users; END$$",
                false,
            ),
            (
                "CREATE FUNCTION f() RETURNS void LANGUAGE $$sql$$ AS $b$SELECT * INTO tenant_globex.t2 FROM users$b$",
                false,
            ),
            (
                "CREATE FUNCTION language() RETURNS void LANGUAGE sql AS $$SELECT * INTO tenant_globex.t FROM users$$",
                false,
            ),
            (
                "DO $a$BEGIN EXECUTE $b$DO $c$BEGIN EXECUTE $d$DO $e$BEGIN SET ROLE x; END$e$$d$; END$c$$b$; END$a$",
                false,
            ),
            (
                "DO $$BEGIN EXECUTE 'SET ROLE x; SELECT ''' || 'x'''; END$$",
                false,
            ),
            ("DO $$BEGIN EXECUTE 'SELECT 1; ' || 'SET ROLE x'; END$$", false),
            ("DO $$BEGIN EXECUTE format('SET ROLE %I', r); END$$", false),
            ("CREATE VIEW v AS SELECT * FROM pg_settings", false),
            ("SELECT name, setting FROM pg_settings", true),
            ("SET search_path = $$tenant_globex$$", false),
            ("SET search_path = E'tenant_globex'", false),
            (
                "CREATE FUNCTION f() RETURNS int LANGUAGE sql SET search_path = tenant_globex AS $$SELECT 1$$",
                false,
            ),
            ("ALTER FUNCTION f() SET search_path = public, pg_catalog", true),
            ("ALTER FUNCTION f() SET search_path FROM CURRENT", true),
            ("SET session_authorization = 'x'", false),
            (
                "SELECT * FROM users WHERE (SELECT 1 FROM tenant_globex.users) = 1",
                false,
            ),
            // Byte escapes of UTF-8 characters: the tokenizer reads the text with them
            // made ASCII, so every check applies (before, none but the risky words).
            ("SELECT E'caf\\xC3\\xA9' FROM tenant_globex.users", false),
            ("SELECT E'caf\\303\\251', name FROM users", true),
            (
                "DO $$BEGIN PERFORM E'\\xC3\\xA9' FROM tenant_globex.users; END$$",
                false,
            ),
            (
                "DO $$BEGIN EXECUTE E'SELECT ''\\xC3\\xA9''; SET \\x52OLE x'; END$$",
                false,
            ),
            ("SELECT E'\\uD83D\\uDE00' FROM users", true),
            // PL/pgSQL bodies (tokens only): every item of a FROM or DELETE/MERGE USING
            // list, and schema-qualified calls; EXECUTE ... USING values and lists that
            // end (ORDER BY a.x, b.y) are not tables.
            ("DO $$BEGIN PERFORM * FROM users, tenant_globex.users; END$$", false),
            (
                "DO $$BEGIN PERFORM * FROM users u JOIN orders o ON u.id = o.uid, tenant_globex.t; END$$",
                false,
            ),
            (
                "DO $$BEGIN DELETE FROM users USING orders, tenant_globex.users g WHERE g.id = users.id; END$$",
                false,
            ),
            (
                "DO $$BEGIN MERGE INTO users u USING tenant_globex.users g ON g.id = u.id WHEN MATCHED THEN DELETE; END$$",
                false,
            ),
            ("DO $$BEGIN PERFORM tenant_globex.f(1); END$$", false),
            (
                "DO $$BEGIN PERFORM 1 FROM generate_series(1, 3) g, LATERAL tenant_globex.f(g) y; END$$",
                false,
            ),
            (
                "DO $$BEGIN EXECUTE format('UPDATE t SET a = $1 WHERE id = $2') USING NEW.a, NEW.id; END$$",
                true,
            ),
            (
                "DO $$DECLARE r record; BEGIN FOR r IN SELECT * FROM users u, orders o WHERE u.id = o.uid ORDER BY u.a, o.b LOOP RAISE NOTICE '%', r.id; END LOOP; END$$",
                true,
            ),
            (
                "DO $$BEGIN PERFORM * FROM users u, (SELECT o.a, o.b FROM orders o) x; PERFORM pg_catalog.now(), public.f(); END$$",
                true,
            ),
            ("SELECT * FROM users u JOIN orders o USING (id), tenant_globex.t", false),
            ("SELECT tenant_globex.f(1)", false),
            // After a review: dynamic SQL that builds a qualified name, types with a
            // modifier, and lists that go on past words that only look like their end.
            (
                "CREATE FUNCTION audit() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN
                   EXECUTE format('INSERT INTO %I.audit_log(op) VALUES ($1)', TG_TABLE_SCHEMA) USING TG_OP;
                   EXECUTE 'INSERT INTO ' || quote_ident(TG_TABLE_SCHEMA) || '.audit_log(op) VALUES ($1)' USING TG_OP;
                   RETURN NEW; END$$",
                true,
            ),
            ("CREATE TABLE docs (id int, embedding extensions.vector(1536))", true),
            (
                "INSERT INTO users SELECT * FROM orders ON CONFLICT (id) DO UPDATE SET a = 1, comp.f = 2",
                true,
            ),
            (
                "DO $$BEGIN RETURN CASE WHEN a THEN b ELSE c END; INSERT INTO users SELECT * FROM orders ON CONFLICT (id) DO UPDATE SET a = 1, comp.f = 2; END$$",
                true,
            ),
            (
                "DO $$BEGIN PERFORM 1 FROM unnest(ARRAY[1]) WITH ORDINALITY u(x,n), tenant_globex.users; END$$",
                false,
            ),
            (
                "DO $$BEGIN PERFORM 1 FROM users u JOIN orders o ON CASE WHEN true THEN true END, tenant_globex.users; END$$",
                false,
            ),
            ("DO $$BEGIN PERFORM 1 FROM users AS set, tenant_globex.users; END$$", false),
            ("DO $$BEGIN PERFORM 1 FROM users set, tenant_globex.users; END$$", false),
            ("DO $$BEGIN PERFORM 1 FROM users loop, tenant_globex.users; END$$", false),
            (
                "DO $$BEGIN PERFORM 1 FROM users, (tenant_globex.users CROSS JOIN orders) j; END$$",
                false,
            ),
            (
                "DO $$BEGIN WITH x AS (SELECT 1) DELETE FROM users USING tenant_globex.users g WHERE g.id = users.id; END$$",
                false,
            ),
            (
                "DO $$DECLARE r record; BEGIN FOR r IN DELETE FROM users USING tenant_globex.users g WHERE g.id = users.id RETURNING users.id LOOP END LOOP; END$$",
                false,
            ),
            ("DO $$BEGIN TRUNCATE users, tenant_globex.users; END$$", false),
            ("DO $$BEGIN LOCK TABLE users, tenant_globex.users; END$$", false),
            ("DO $$BEGIN DROP TABLE users, tenant_globex.users; END$$", false),
            // After a second review.
            (
                "DO $$DECLARE r record; BEGIN FOR r IN SELECT 1 AS case LOOP SET ROLE x; END LOOP; END$$",
                false,
            ),
            (
                "DO $$DECLARE r record; BEGIN IF r.case THEN SET ROLE x; END IF; END$$",
                false,
            ),
            ("DO $$BEGIN PERFORM 1 % tenant_globex.f(1); END$$", false),
            ("SELECT * FROM ONLY (tenant_globex.users)", false),
            (
                "DO $$BEGIN DELETE FROM users USING (tenant_globex.users g CROSS JOIN orders) WHERE g.id = users.id; END$$",
                false,
            ),
            ("DO $$BEGIN DROP TABLE IF EXISTS tenant_globex.users; END$$", false),
            ("DO $$BEGIN LOCK users, tenant_globex.users; END$$", false),
            (
                "SELECT 1 AS \u{141}|$$; CREATE TABLE t AS SELECT set_config('search_path', 'tenant_globex', false); SELECT 1 AS \u{141}|$$",
                false,
            ),
            ("SELECT E'\u{141}\\'\n'-- \\'' || '\\'; SET ROLE x; --'", false),
            (
                "SELECT * FROM users u WHERE u.role = $1 AND u.name LIKE $2 ESCAPE '\\'",
                true,
            ),
            ("COPY users FROM STDIN WITH (FORMAT csv, ESCAPE '\\')", true),
            ("SELECT replace(path, '\\', '/'), role FROM users", true),
            ("SELECT t.lock, t.id, t.truncate, a.b FROM users t, orders a", true),
            // After a third review.
            (
                "SELECT 1 AS \u{141}|$$; CREATE TABLE t AS SELECT set_config('search_path', 'tenant_globex', false); SELECT 1 AS \u{141}|$$ --\u{e9}",
                false,
            ),
            (
                "SELECT 1 AS \u{141}|$$; SELECT E'a'\n'\\''; SET ROLE x; SELECT 'x\\'; --$$",
                false,
            ),
            (
                "DO $$DECLARE r record; BEGIN FOR r IN SELECT * FROM users LOOP RAISE NOTICE '%, %', r.id, r.name; END LOOP; IF true THEN PERFORM 1; ELSE SELECT r.a, r.b INTO x, y FROM users; END IF; END$$",
                true,
            ),
            (
                "DO $$BEGIN PERFORM 1 FROM users JOIN orders conflict ON conflict.id = users.id, tenant_globex.users; END$$",
                false,
            ),
            ("SELECT '\u{65e5}\u{672c}', 'x', role FROM users WHERE a = '\u{20ac}|'", true),
            // After a fourth review.
            ("SELECT E'a'\x0c\n'\\'' ; SET ROLE x; SELECT 'x' -- '", false),
            (
                "DO $$BEGIN PERFORM 1 FROM users u JOIN orders o ON CASE WHEN (SELECT true AS end) THEN true END, tenant_globex.users; END$$",
                false,
            ),
            ("DO $$BEGIN PERFORM 1 FROM users loop(a), tenant_globex.users; END$$", false),
            // After a fifth review.
            (
                "DO $$BEGIN PERFORM 1 FROM users u JOIN orders o ON CASE WHEN true THEN CASE WHEN true THEN true END ELSE NULL END, tenant_globex.users; END$$",
                false,
            ),
            ("DO $$BEGIN COPY (SELECT CASE WHEN true THEN 1 END) TO PROGRAM 'id'; END$$", false),
            (
                "DO $$BEGIN PERFORM 1 FROM generate_series(1, 2) loop JOIN users u ON loop << 1 > 0, tenant_globex.users; END$$",
                false,
            ),
            (
                "DO $$BEGIN WITH w AS (INSERT INTO log VALUES (1) RETURNING 1) SELECT 1 INTO v FROM users u JOIN orders o ON conflict(u), tenant_globex.users; END$$",
                false,
            ),
            (
                "DO $$BEGIN SELECT 1 AS insert INTO v FROM users u JOIN orders o ON conflict(u), tenant_globex.users; END$$",
                false,
            ),
            (
                "DO $$BEGIN INSERT INTO users SELECT * FROM orders o ON CONFLICT (id) DO UPDATE SET a = 1, comp.f = 2; END$$",
                true,
            ),
            (
                "DO $$BEGIN PERFORM 1 FROM users loop JOIN orders o ON loop IS NOT NULL, tenant_globex.users; END$$",
                false,
            ),
            (
                "DO $$BEGIN PERFORM 1 AS insert FROM users u JOIN orders o ON conflict(u), tenant_globex.users; END$$",
                false,
            ),
            (
                "DO $$DECLARE r record; n int; BEGIN FOR r IN SELECT * FROM users LOOP n := r.id; END LOOP; FOR r IN SELECT * FROM users LOOP <<inner>> BEGIN RAISE NOTICE '%', r.id; END; END LOOP; END$$",
                true,
            ),
            (
                "DO $$BEGIN PERFORM 1 FROM users begin JOIN orders o ON true, tenant_globex.users; END$$",
                false,
            ),
            (
                "DO $$BEGIN PERFORM 1 FROM users JOIN orders ON conflict(users.id), tenant_globex.users; END$$",
                false,
            ),
            (
                "DO $$DECLARE r record; BEGIN CASE WHEN true THEN FOR r IN SELECT * FROM users LOOP RAISE NOTICE '%', r.id; END LOOP; END CASE; END$$",
                true,
            ),
            (
                "DO $$DECLARE r record; BEGIN LOOP SET ROLE x; END LOOP; FOR r IN SELECT 1 LOOP FOR s IN SELECT 2 LOOP RESET ROLE; END LOOP; END LOOP; END$$",
                false,
            ),
            // Read as a session whose standard_conforming_strings or client_encoding a
            // routine changed unseen would read it (statements pipelined behind that
            // routine run before the proxy ends the session).
            ("SELECT 'a\\'' ; SET ROLE x; -- '", false),
            ("SELECT 'x\\'' FROM tenant_globex.users --'", false),
            ("SELECT E'\u{141}\\'; SET ROLE x; --'", false),
            ("SELECT '\u{141}\\\\'' FROM tenant_globex.users --'", false),
            ("SELECT * FROM users WHERE name LIKE 'a\\_b%' AND dir = 'C:\\temp\\'", true),
            ("SELECT E'\u{65e5}\u{672c}\\n', E'caf\u{e9}\\n', 'x\\' FROM users", true),
        ];
        for (sql, ok) in cases {
            let v = verdict(sql, false);
            assert_eq!(v == Verdict::Allow, *ok, "{sql}: {v:?}");
        }
    }

    #[test]
    fn startup_settings_get_the_checks_a_set_would() {
        let ctx = GuardContext {
            tenant_schema: Some("tenant_acme"),
            logical_schema: "public",
            strict: false,
        };
        let vet = |k: &str, v: &str| startup_setting(k, v, &ctx, true);
        assert_eq!(vet("search_path", "public").unwrap(), "tenant_acme");
        assert_eq!(
            vet("search_path", "\"$user\", PUBLIC, pg_catalog").unwrap(),
            "\"$user\", tenant_acme, pg_catalog"
        );
        assert!(vet("search_path", "tenant_globex").is_err());
        assert!(vet("search_path", "\"tenant_acme,tenant_globex\"").is_err());
        let off_guard = startup_setting("search_path", "\"a,b\", public", &ctx, false);
        assert_eq!(off_guard.unwrap(), "\"a,b\", tenant_acme");
        // Quoted names keep their case: "Public" is another schema.
        assert!(vet("search_path", "\"Public\"").is_err());
        assert!(vet("role", "postgres").is_err());
        assert!(vet("session_authorization", "postgres").is_err());
        assert!(vet("standard_conforming_strings", "off").is_err());
        assert_eq!(vet("standard_conforming_strings", "on").unwrap(), "on");
        assert_eq!(vet("application_name", "x").unwrap(), "x");
        assert!(vet("client_encoding", "SJIS").is_err());
        assert_eq!(vet("client_encoding", "UTF8").unwrap(), "UTF8");
        // With the guard off only the rewrite and standard strings remain.
        let off = |k: &str, v: &str| startup_setting(k, v, &ctx, false);
        assert_eq!(
            off("search_path", "public, other").unwrap(),
            "tenant_acme, other"
        );
        assert!(off("role", "x").is_ok());
        assert!(off("standard_conforming_strings", "0").is_err());
        assert!(off("client_encoding", "big5").is_err());
        // A placement used as it is: no schema to map to.
        let whole = GuardContext {
            tenant_schema: None,
            ..ctx
        };
        assert_eq!(
            startup_setting("search_path", "public", &whole, true).unwrap(),
            "public"
        );
        assert_eq!(pg_bool("ON"), Some(true));
        assert_eq!(pg_bool("0"), Some(false));
        assert_eq!(pg_bool("maybe"), None);
    }

    #[test]
    fn routine_bodies_count_as_verified_only_when_parsed() {
        let sql_body =
            "CREATE FUNCTION f() RETURNS bigint LANGUAGE sql AS $$SELECT count(*) FROM users$$";
        assert_eq!(verdict(sql_body, true), Verdict::Allow);
        let qualified = "CREATE FUNCTION f() RETURNS bigint LANGUAGE sql AS $$SELECT count(*) FROM users, tenant_globex.users$$";
        assert!(matches!(verdict(qualified, false), Verdict::Refuse(_)));
        let plpgsql = "CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$BEGIN RETURN 1; END$$";
        assert_eq!(verdict(plpgsql, false), Verdict::Allow);
        assert!(matches!(verdict(plpgsql, true), Verdict::Refuse(_)));
        // Deeper than the guard reads: unverified.
        let mut nested = "SET ROLE x".to_owned();
        for level in 0..=MAX_BODY_DEPTH {
            nested =
                format!("DO $l{level}$BEGIN EXECUTE $e{level}${nested}$e{level}$; END$l{level}$");
        }
        assert!(!analyze(&nested).parsed);
        assert!(matches!(verdict(&nested, true), Verdict::Refuse(_)));
    }

    #[test]
    fn unparseable_statements_pass_unless_strict_but_still_get_token_checks() {
        let odd = "SELEC 1";
        assert!(!analyze(odd).parsed);
        assert_eq!(verdict(odd, false), Verdict::Allow);
        assert!(matches!(verdict(odd, true), Verdict::Refuse(_)));
        // token checks catch role changes and forbidden functions in unparseable text
        assert!(matches!(
            verdict("SET ROLE postgres GARBAGE (((", false),
            Verdict::Refuse(_)
        ));
        assert!(matches!(
            verdict("SELEC pg_read_file('/etc/passwd')", false),
            Verdict::Refuse(_)
        ));
    }

    #[test]
    fn quick_path_and_cache_key_never_change_a_decision() {
        let samples = [
            "SELECT abalance FROM pgbench_accounts WHERE aid = 48213",
            "SELECT * FROM tenant_globex.users WHERE id = 5",
            "SET ROLE x",
            "select pg_read_file('/x')",
            "SELECT 1",
            "SELECT U&\"\\0070g_read_file\"('/x')",
            "COPY t TO PROGRAM 'x'",
            "SELECT set_config('role', 'x', false)",
            "SELECT 'a.b', \"x1\" FROM t2 WHERE c3 = 4 -- 5\n AND d = $1",
            "SET client_encoding = $$big-5$$",
            "SET client_encoding = E'big\\'5'",
            "SET client_encoding = E'gb\\'18030'",
            "DO $$BEGIN PERFORM * FROM tenant_globex2.users; END$$",
            "/* /* */ ' */ SET client_encoding = 'big-5'",
        ];
        for s in samples {
            let full = verdict(s, false);
            if trivially_allowed(s.as_bytes()) {
                assert_eq!(full, Verdict::Allow, "{s}");
            }
            let keyed = check(
                &analyze(&cache_key(s)),
                &GuardContext {
                    tenant_schema: Some("tenant_acme"),
                    logical_schema: "public",
                    strict: false,
                },
            );
            assert_eq!(keyed, full, "{s}");
        }
        assert_eq!(
            cache_key("SELECT * FROM t WHERE a = 12 AND b = 'x9' AND c9 = $2"),
            "SELECT * FROM t WHERE a = 0 AND b = 'x9' AND c9 = $2"
        );
        assert!(trivially_allowed(
            b"SELECT abalance FROM pgbench_accounts WHERE aid = 1"
        ));
        assert!(!trivially_allowed(b"SELECT * FROM a.b"));
        assert!(!trivially_allowed(b"SELECT U&\"\\0070g\"()"));
        assert!(!trivially_allowed(b"SET ROLE x"));
    }

    #[test]
    fn deeply_nested_expressions_do_not_crash() {
        let deep = format!("SELECT {} FROM a.b", vec!["1"; 100_000].join("+"));
        let a = analyze(&deep);
        assert!(!a.parsed);
        assert_eq!(a.schemas, vec!["a".to_string()]);
        let parens = format!("SELECT {}1{} FROM t", "(".repeat(3000), ")".repeat(3000));
        let _ = analyze(&parens);
    }

    #[test]
    fn placement_without_schema_checks_roles_only() {
        let ctx = GuardContext {
            tenant_schema: None,
            logical_schema: "public",
            strict: false,
        };
        assert_eq!(
            check(&analyze("SELECT * FROM other.t"), &ctx),
            Verdict::Allow
        );
        assert!(matches!(
            check(&analyze("SET ROLE x"), &ctx),
            Verdict::Refuse(_)
        ));
    }
}
