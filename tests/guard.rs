//! The isolation battery: statements that try to leave tenant `acme` for `globex`'s data,
//! each run through the proxy against real PostgreSQL. None may return globex's rows;
//! the ones the guard owns must be refused by it with 42501.

mod common;

use common::{admin, code, wire, Env};
use tenantgate::config::{AuthMethod, AuthRule, ClientAddress};
use tokio_postgres::SimpleQueryMessage;

const SECRET: &str = "globex-secret";

async fn env() -> Env {
    let env = Env::with(|c| {
        c.auth = vec![AuthRule {
            user: "*".into(),
            address: ClientAddress::Any,
            method: AuthMethod::Trust,
        }];
    })
    .await;
    let a = admin(&env.db.db).await;
    a.batch_execute(&format!(
        "UPDATE globex.items SET owner = '{SECRET}-' || id;
         CREATE SEQUENCE globex.seq; ALTER SEQUENCE globex.seq OWNER TO {};",
        env.db.role("globex")
    ))
    .await
    .unwrap();
    env
}

/// Run `sql` as acme; returns Err(code, message) or every cell returned.
async fn run(env: &Env, sql: &str) -> Result<Vec<String>, (String, String)> {
    let c = env.client("acme").await;
    match c.simple_query(sql).await {
        Ok(msgs) => Ok(msgs
            .iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(r) => Some(
                    (0..r.len())
                        .filter_map(|i| r.get(i).map(str::to_owned))
                        .collect::<Vec<_>>(),
                ),
                _ => None,
            })
            .flatten()
            .collect()),
        Err(e) => Err((
            code(&e),
            e.as_db_error()
                .map(|d| d.message().to_owned())
                .unwrap_or_default(),
        )),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escape_battery() {
    let env = env().await;
    let g = env.db.role("globex");
    // (statement, must the guard itself refuse it?)
    let cases: Vec<(String, bool)> = vec![
        ("SELECT * FROM globex.items".into(), true),
        ("SELECT * FROM GLOBEX.items".into(), true),
        ("SELECT * FROM \"globex\".items".into(), true),
        ("SELECT * FROM \"globex\".\"items\"".into(), true),
        ("SELECT * FROM globex . items".into(), true),
        ("SELECT * FROM /*x*/globex/*y*/./*z*/items".into(), true),
        ("SeLeCt * FrOm GlObEx.ItEmS".into(), true),
        ("select * from globex.items -- trailing comment".into(), true),
        ("SELECT (SELECT owner FROM globex.items LIMIT 1)".into(), true),
        ("WITH g AS (SELECT * FROM globex.items) SELECT * FROM g".into(), true),
        ("SELECT * FROM items UNION ALL SELECT * FROM globex.items".into(), true),
        ("SELECT globex.items.owner FROM globex.items".into(), true),
        ("SELECT * FROM items, LATERAL (SELECT * FROM globex.items) x".into(), true),
        ("SELECT * FROM ONLY globex.items".into(), true),
        ("TABLE globex.items".into(), false),
        ("SELECT * FROM globex.items FOR UPDATE".into(), true),
        ("EXPLAIN ANALYZE SELECT * FROM globex.items".into(), true),
        ("SELECT 1; SELECT * FROM globex.items".into(), true),
        ("INSERT INTO items SELECT id + 100, owner FROM globex.items".into(), true),
        ("UPDATE globex.items SET owner = 'x'".into(), true),
        ("DELETE FROM globex.items".into(), true),
        ("TRUNCATE globex.items".into(), false),
        ("CREATE TEMP TABLE t AS SELECT * FROM globex.items".into(), true),
        ("CREATE VIEW v AS SELECT * FROM globex.items".into(), true),
        ("CREATE TABLE globex.evil (x int)".into(), true),
        ("PREPARE p AS SELECT * FROM globex.items".into(), false),
        ("COPY globex.items TO STDOUT".into(), true),
        ("COPY (SELECT * FROM globex.items) TO STDOUT".into(), true),
        ("SELECT * FROM \"GLOBEX\".items".into(), true),
        ("SELECT * FROM \"globex\" . \"items\"".into(), true),
        ("SET search_path TO globex".into(), true),
        ("SET search_path = globex, acme".into(), true),
        ("SET search_path TO 'globex'".into(), true),
        ("SET search_path TO \"$user\", globex".into(), true),
        ("SET SESSION search_path TO globex".into(), true),
        ("SET LOCAL search_path TO globex".into(), true),
        ("SELECT set_config('search_path', 'globex', false)".into(), true),
        ("SELECT set_config('search_path', 'globex', false); SELECT * FROM items".into(), true),
        (format!("SET ROLE {g}"), true),
        (format!("set role {g}"), true),
        (format!("SET SESSION ROLE {g}"), true),
        (format!("BEGIN; SET LOCAL ROLE {g}; SELECT * FROM globex.items; COMMIT"), true),
        ("RESET ROLE".into(), true),
        (format!("SET SESSION AUTHORIZATION {g}"), true),
        ("SET SESSION AUTHORIZATION postgres".into(), true),
        ("RESET SESSION AUTHORIZATION".into(), true),
        (format!("SELECT set_config('role', '{g}', false)"), true),
        ("SELECT set_config('ROLE', 'postgres', true)".into(), true),
        ("SELECT set_config(lower('ROLE'), 'postgres', true)".into(), true),
        ("COPY items TO PROGRAM 'cat'".into(), true),
        ("COPY items FROM '/etc/passwd'".into(), true),
        ("COPY (SELECT 1) TO '/tmp/tg-escape'".into(), true),
        ("SELECT pg_read_file('/etc/passwd')".into(), true),
        ("SELECT PG_READ_FILE('/etc/passwd')".into(), true),
        ("SELECT pg_read_binary_file('/etc/passwd')".into(), true),
        ("SELECT lo_import('/etc/passwd')".into(), true),
        ("SELECT lo_export(1, '/tmp/tg-escape')".into(), true),
        ("SELECT * FROM pg_ls_dir('.')".into(), true),
        ("SELECT pg_terminate_backend(pg_backend_pid())".into(), true),
        // routine bodies, and dynamic SQL written out as a literal, get the same checks
        ("DO $$ BEGIN EXECUTE 'SELECT * FROM globex.items'; END $$".into(), true),
        ("DO $$ BEGIN PERFORM * FROM globex.items; END $$".into(), true),
        (format!("DO $$ BEGIN IF true THEN SET ROLE {g}; END IF; END $$"), true),
        ("CREATE FUNCTION acme.peek() RETURNS bigint LANGUAGE sql AS 'SELECT count(*) FROM globex.items'".into(), true),
        ("DO $$ BEGIN SET standard_conforming_strings = off; END $$".into(), true),
        // dynamic SQL built at run time: the guard cannot see it; the tenant's role has no
        // privilege on globex's schema, so PostgreSQL refuses them
        ("DO $$ DECLARE r text; BEGIN SELECT owner INTO r FROM glo || 'bex.items'; END $$".into(), false),
        ("CREATE FUNCTION acme.leak() RETURNS SETOF text LANGUAGE plpgsql AS $$ BEGIN RETURN QUERY EXECUTE 'SELECT owner FROM glo' || 'bex.items'; END $$; SELECT acme.leak()".into(), false),
        ("SELECT query_to_xml('select * from globex.items', true, true, '')".into(), false),
        ("SELECT currval('globex.seq')".into(), false),
        ("SELECT nextval('globex.seq')".into(), false),
        ("SELECT * FROM pg_catalog.pg_class c WHERE c.relname = 'items' AND pg_catalog.has_table_privilege(c.oid, 'SELECT') AND c.relnamespace = 'globex'::regnamespace".into(), false),
        ("GRANT SELECT ON ALL TABLES IN SCHEMA globex TO PUBLIC".into(), false),
        ("ALTER DEFAULT PRIVILEGES IN SCHEMA globex GRANT SELECT ON TABLES TO PUBLIC".into(), false),
        ("CREATE TEMP VIEW tv AS SELECT 1; SELECT * FROM pg_temp.tv".into(), false),
        ("SELECT * FROM tenantgate.tenant_users".into(), true),
        // names spelled with escapes, or split across adjacent string literals
        ("SELECT * FROM U&\"glob\\0065x\".items".into(), true),
        ("SELECT U&\"pg\\005Fread\\005Ffile\"('/etc/passwd')".into(), true),
        ("SELECT set_config('search_'\n'path', 'globex', false); SELECT * FROM items".into(), true),
        // standard_conforming_strings off would let a backslash hide the rest of the text
        // from the checks
        ("SET standard_conforming_strings = off".into(), true),
        ("SELECT set_config('standard_conforming_strings', 'off', false)".into(), true),
        // so would a client encoding whose characters can hold a backslash byte
        ("SET client_encoding = 'SJIS'".into(), true),
        ("SET NAMES 'BIG5'".into(), true),
        // byte escapes of UTF-8 characters, which PostgreSQL accepts and the tokenizer
        // does not decode: the rest of such a text is checked all the same
        ("SELECT E'caf\\xC3\\xA9', owner FROM globex.items".into(), true),
        (format!("DO $$ BEGIN PERFORM E'\\303\\251'; EXECUTE E'SET \\x52OLE {g}'; END $$"), true),
    ];
    assert!(cases.len() >= 60, "battery has {} statements", cases.len());
    let mut guard_refusals = 0;
    for (sql, guard_owns) in &cases {
        match run(&env, sql).await {
            Ok(cells) => {
                assert!(
                    !cells.iter().any(|c| c.contains(SECRET)),
                    "LEAK: {sql} returned {cells:?}"
                );
                assert!(!guard_owns, "the guard should have refused: {sql}");
            }
            Err((code, msg)) => {
                if *guard_owns {
                    assert_eq!(code, "42501", "{sql}: {msg}");
                    assert!(
                        msg.contains("tenantgate"),
                        "{sql}: refused by the guard, with a reason: {msg}"
                    );
                    guard_refusals += 1;
                }
            }
        }
    }
    assert!(guard_refusals >= 50);
    // acme's own data stays reachable, also through the logical schema name
    let own = run(&env, "SELECT owner FROM items ORDER BY id LIMIT 1")
        .await
        .unwrap();
    assert_eq!(own, vec!["acme".to_string()]);
    let own = run(&env, "SELECT owner FROM acme.items LIMIT 1")
        .await
        .unwrap();
    assert_eq!(own, vec!["acme".to_string()]);
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_keep_protocol_order_and_transaction_semantics() {
    let env = env().await;
    let mut c = env.client("acme").await;
    // extended protocol, no server held: refused at Parse
    let e = c.prepare("SELECT * FROM globex.items").await.unwrap_err();
    assert_eq!(code(&e), "42501");
    // inside a transaction the server raises it, so the transaction is aborted as in PostgreSQL
    let tx = c.transaction().await.unwrap();
    tx.execute("INSERT INTO items VALUES (77, 'acme')", &[])
        .await
        .unwrap();
    let e = tx
        .batch_execute("SELECT * FROM globex.items")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "42501");
    assert!(e.as_db_error().unwrap().message().contains("tenantgate"));
    assert_eq!(code(&tx.query("SELECT 1", &[]).await.unwrap_err()), "25P02");
    tx.rollback().await.unwrap();
    // pipelined: a refused statement between two good ones, replies in order
    let good = c.prepare("SELECT count(*) FROM items").await.unwrap();
    let (a, b, d) = tokio::join!(
        c.query_one(&good, &[]),
        c.prepare("SELECT owner FROM globex.items"),
        c.query_one(&good, &[])
    );
    assert_eq!(a.unwrap().get::<_, i64>(0), 10);
    assert_eq!(code(&b.unwrap_err()), "42501");
    assert_eq!(d.unwrap().get::<_, i64>(0), 10);
    // the same statement text prepared by two tenants runs on each tenant's own data
    let gl = env.client("globex").await;
    let sa = c
        .prepare("SELECT owner FROM items ORDER BY id LIMIT 1")
        .await
        .unwrap();
    let sg = gl
        .prepare("SELECT owner FROM items ORDER BY id LIMIT 1")
        .await
        .unwrap();
    for _ in 0..3 {
        assert_eq!(
            c.query_one(&sa, &[]).await.unwrap().get::<_, String>(0),
            "acme"
        );
        assert!(gl
            .query_one(&sg, &[])
            .await
            .unwrap()
            .get::<_, String>(0)
            .starts_with(SECRET));
    }
    env.finish().await;
}

/// A COPY FROM STDIN that fails after the server asked for data (a view cannot be
/// copied to) answers the Sync sent behind its Execute, which the proxy took as ignored
/// during the COPY; refusals on that server connection later still arrive as themselves
/// (not as the server's error for the marker the proxy sent in their place).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_after_a_failed_copy_keep_their_own_error() {
    // Session pooling: the server connection, and what the relay counted on it, stays.
    let env = Env::with(|c| {
        c.auth[0].method = AuthMethod::Trust;
        common::tenant_pool(c, "acme", tenantgate::config::PoolMode::Session, 2);
    })
    .await;
    let c = env.client("acme").await;
    c.batch_execute("CREATE VIEW items_v AS SELECT * FROM items")
        .await
        .unwrap();
    let mut s = wire::login(&env, "app@acme").await;
    let parse = |sql: &str| wire::raw(b'P', &[b"\0", sql.as_bytes(), b"\0\0\0"]);
    let bind = wire::raw(b'B', &[b"\0\0\0\0\0\0\0\0"]);
    let execute = wire::raw(b'E', &[b"\0\0\0\0\0"]);
    let sync = wire::raw(b'S', &[]);
    let copy_done = wire::raw(b'c', &[]);
    // As libpq does: the COPY's Execute and Sync, then (the server asked for data)
    // CopyDone and Sync, then the next statement.
    let copy = [
        parse("COPY items_v FROM STDIN"),
        bind.clone(),
        execute.clone(),
        sync.clone(),
    ];
    let mut codes = wire::raw_round(&mut s, &copy, 1).await;
    codes.extend(wire::raw_round(&mut s, &[copy_done, sync.clone()], 1).await);
    let refused = [parse("SELECT * FROM globex.items"), bind, execute, sync];
    codes.extend(wire::raw_round(&mut s, &refused, 1).await);
    assert_eq!(codes, ["42809", "42501"]);
    env.finish().await;
}

#[tokio::test]
async fn strict_mode_refuses_what_it_cannot_parse() {
    let env = Env::with(|c| {
        c.guard.strict = true;
        c.auth = vec![AuthRule {
            user: "*".into(),
            address: ClientAddress::Any,
            method: AuthMethod::Trust,
        }];
    })
    .await;
    let c = env.client("acme").await;
    let e = c.simple_query("SELEC 1").await.unwrap_err();
    assert_eq!(code(&e), "42501");
    c.simple_query("SELECT 1").await.unwrap();
    assert!(
        env.proxy
            .proxy
            .guard()
            .unparsed
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
    env.finish().await;
}

/// Settings asked for at login are applied with SET on every server connection: they get
/// the checks a SET gets, and a search_path naming the logical schema means the tenant's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_settings_get_the_guards_checks() {
    let env = env().await;
    let with_options = |opts: &str| format!("{} options='{opts}'", env.dsn("app@acme", "acme-pw"));
    // JDBC's currentSchema=public, psql's PGOPTIONS: the tenant's own tables.
    let c = common::try_connect(&with_options("-c search_path=public"))
        .await
        .unwrap();
    let rows = c
        .simple_query("SELECT owner FROM items ORDER BY id LIMIT 1")
        .await
        .unwrap();
    let owner = rows.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
        _ => None,
    });
    assert_eq!(owner.as_deref(), Some("acme"));
    for (opts, want) in [
        ("-c search_path=globex", "42501"),
        ("-c role=postgres", "42501"),
        ("-c session_authorization=postgres", "42501"),
        ("-c standard_conforming_strings=off", "0A000"),
    ] {
        let e = common::try_connect(&with_options(opts)).await.unwrap_err();
        assert_eq!(code(&e), want, "{opts}: {e}");
    }
    env.still_alive().await;
    env.finish().await;
}

/// standard_conforming_strings stays on: a role default cannot turn it off for new
/// connections, and a session that turns it off where the guard cannot see (a DO block)
/// ends, while the next client of the tenant gets a connection with it on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standard_conforming_strings_stays_on() {
    let env = env().await;
    let c = env.client("acme").await;
    c.simple_query("ALTER ROLE CURRENT_USER SET standard_conforming_strings = off")
        .await
        .unwrap();
    let (fresh, dsn) = fresh_proxy(&env).await;
    let d = common::try_connect(&dsn).await.unwrap();
    assert_eq!(show(&d).await, "on");
    ends_the_session(
        &d,
        "DO $$BEGIN EXECUTE 'SET standard_' || chr(99) || 'onforming_strings = off'; END$$",
    )
    .await;
    let d = common::try_connect(&dsn).await.unwrap();
    assert_eq!(show(&d).await, "on");
    assert_eq!(show(&c).await, "on");
    fresh.shutdown().await;
    env.finish().await;
}

/// A second proxy on the test's database, whose server connections are all opened from
/// now on (so they start from the roles' current defaults), and acme's DSN for it.
async fn fresh_proxy(env: &Env) -> (tenantgate::app::Running, String) {
    let fresh = tenantgate::app::start(env.db.config(), None).await.unwrap();
    let dsn = format!(
        "host=127.0.0.1 port={} user=app@acme password=acme-pw dbname={}",
        fresh.addr.port(),
        env.db.db
    );
    (fresh, dsn)
}

/// `sql` changes a setting where the guard cannot see it: the session ends with 0A000.
async fn ends_the_session(c: &tokio_postgres::Client, sql: &str) {
    let e = c.simple_query(sql).await.unwrap_err();
    assert_eq!(code(&e), "0A000", "{e}");
    assert!(
        c.simple_query("SELECT 1").await.is_err(),
        "the session ended"
    );
}

async fn show(c: &tokio_postgres::Client) -> String {
    show_setting(c, "standard_conforming_strings").await
}

async fn show_setting(c: &tokio_postgres::Client, name: &str) -> String {
    match &c.simple_query(&format!("SHOW {name}")).await.unwrap()[1] {
        SimpleQueryMessage::Row(r) => r.get(0).unwrap().to_owned(),
        m => panic!("{m:?}"),
    }
}

/// Client encodings whose characters can contain ASCII bytes (SJIS, BIG5, GBK, UHC,
/// GB18030, JOHAB) would make the proxy read statements differently from the server:
/// asking for one at login, with SET, SET NAMES, set_config or a role default is refused,
/// and a session that switches to one where the guard cannot see (a DO block) ends.
/// ASCII-compatible encodings other than UTF8 still work.
/// A DO block that changes standard_conforming_strings or client_encoding where the
/// guard cannot see it (the name built at run time) gets the session ended when the
/// server reports the change, at its ReadyForQuery; a statement the client pipelined
/// behind it reaches the server first, and the server lexes it under the new setting.
/// The guard reads such a statement as that server would too: the statement that
/// `'x\''` would end early for (and a backslash an SJIS character takes) is refused,
/// and the table it would create is not there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_pipelined_behind_an_unseen_setting_change_are_read_as_the_server_will() {
    let env = env().await;
    let cases = [
        (
            "DO $$BEGIN EXECUTE 'SET standard_' || chr(99) || 'onforming_strings = off'; END$$",
            "SELECT 'x\\'' ; CREATE TABLE tg_hidden_a AS SELECT set_config('search_path', 'acme', false) AS v; --'",
            "tg_hidden_a",
        ),
        (
            "DO $$BEGIN EXECUTE 'SET client_' || chr(101) || 'ncoding = ''SJIS'''; END$$",
            "SELECT E'\u{141}\\'; CREATE TABLE tg_hidden_b AS SELECT set_config('search_path', 'acme', false) AS v; --'",
            "tg_hidden_b",
        ),
        // No backslash: in SJIS 0x81 (Ł's second byte) takes the `|`, and `$$` then
        // continues a name instead of opening a string.
        (
            "DO $$BEGIN EXECUTE 'SET client_' || chr(101) || 'ncoding = ''SJIS'''; END$$",
            "SELECT 1 AS \u{141}|$$; CREATE TABLE tg_hidden_c AS SELECT set_config('search_path', 'acme', false) AS v; SELECT 1 AS \u{141}|$$",
            "tg_hidden_c",
        ),
    ];
    for (change, hidden, table) in cases {
        let mut s = wire::login(&env, "app@acme").await;
        let codes = wire::raw_to_end(&mut s, &[wire::query(change), wire::query(hidden)]).await;
        assert!(codes.contains(&"0A000".to_owned()), "{change}: {codes:?}");
        let c = env.client("acme").await;
        let rows = c
            .simple_query(&format!("SELECT to_regclass('acme.{table}') IS NULL"))
            .await
            .unwrap();
        let gone = rows
            .iter()
            .any(|m| matches!(m, SimpleQueryMessage::Row(r) if r.get(0) == Some("t")));
        assert!(gone, "{hidden} ran behind {change}");
        // Sent on its own it is refused the same way.
        let e = c.simple_query(hidden).await.unwrap_err();
        assert_eq!(code(&e), "42501", "{e}");
        assert!(e.to_string().contains("tenantgate") || format!("{e:?}").contains("tenantgate"));
    }
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_encodings_the_proxy_cannot_read_are_refused() {
    let env = env().await;
    let c = env.client("acme").await;
    for sql in [
        "SET client_encoding = 'SJIS'",
        "SET NAMES 'win950'",
        "SET client_encoding TO gbk",
        "SELECT set_config('client_encoding', 'UHC', false)",
        "ALTER ROLE CURRENT_USER SET client_encoding = 'GB18030'",
    ] {
        let e = c.simple_query(sql).await.unwrap_err();
        assert_eq!(code(&e), "42501", "{sql}: {e}");
    }
    assert_eq!(show_setting(&c, "client_encoding").await, "UTF8");
    c.simple_query("SET client_encoding = 'LATIN1'")
        .await
        .unwrap();
    assert_eq!(show_setting(&c, "client_encoding").await, "LATIN1");
    c.simple_query("SET client_encoding = 'UTF8'")
        .await
        .unwrap();

    // Where the guard cannot see it, the server's report ends the session.
    ends_the_session(
        &c,
        "DO $$BEGIN EXECUTE 'SET client_' || chr(101) || 'ncoding = ''SJIS'''; END$$",
    )
    .await;
    let c = env.client("acme").await;
    assert_eq!(show_setting(&c, "client_encoding").await, "UTF8");

    // At login: a startup option, and psql's client_encoding.
    let opts = format!(
        "{} options='-c client_encoding=SJIS'",
        env.dsn("app@acme", "acme-pw")
    );
    let e = common::try_connect(&opts).await.unwrap_err();
    assert_eq!(code(&e), "0A000", "{e}");
    let out = common::psql(
        &format!("{} client_encoding=BIG5", env.dsn("app@acme", "acme-pw")),
        &["-c", "SELECT 1"],
    )
    .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("client_encoding \"BIG5\" is not supported"),
        "{err}"
    );

    // A role default set behind the proxy's back: its server connections are refused
    // (the log says why), not used.
    let a = admin(&env.db.db).await;
    let role = env.db.role("acme");
    a.batch_execute(&format!("ALTER ROLE {role} SET client_encoding = 'SJIS'"))
        .await
        .unwrap();
    let (fresh, dsn) = fresh_proxy(&env).await;
    let failed = match common::try_connect(&dsn).await {
        Err(e) => e,
        Ok(d) => d.simple_query("SELECT 1").await.unwrap_err(),
    };
    assert_eq!(code(&failed), "08004", "{failed}");
    a.batch_execute(&format!("ALTER ROLE {role} RESET client_encoding"))
        .await
        .unwrap();
    let d = common::try_connect(&dsn).await.unwrap();
    assert_eq!(show_setting(&d, "client_encoding").await, "UTF8");
    fresh.shutdown().await;
    env.still_alive().await;
    env.finish().await;
}
