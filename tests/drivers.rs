//! Real clients with their own protocol code through the proxy: psql, pgbench (simple,
//! extended, prepared, new connection per transaction), asyncpg, psycopg, node-postgres,
//! JDBC and sqlx.
//! The Python drivers come from `scripts/test-deps.sh` (TENANTGATE_PYTHON).

mod common;

use common::{tenant_pool, Env};
use tenantgate::config::PoolMode;

fn python() -> String {
    if let Ok(p) = std::env::var("TENANTGATE_PYTHON") {
        return p;
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let venv = format!("{home}/.cache/tenantgate/venv/bin/python");
    assert!(
        std::path::Path::new(&venv).exists(),
        "Python drivers missing: run `bash scripts/test-deps.sh` (or the README test command)"
    );
    venv
}

fn url(env: &Env, tenant: &str) -> String {
    format!(
        "postgresql://app%40{tenant}:{tenant}-pw@127.0.0.1:{}/{}",
        env.addr().port(),
        env.db.db
    )
}

async fn run_script(script: &str, dsn: &str) {
    let out = tokio::process::Command::new(python())
        .arg(format!(
            "{}/tests/drivers/{script}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .arg(dsn)
        .output()
        .await
        .expect("python runs");
    assert_all_passed(script, &out);
}

/// A driver check passed: exit 0 and its own "N passed, 0 failed" line.
fn assert_all_passed(what: &str, out: &std::process::Output) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{what} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(" passed, 0 failed"), "{what}: {stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncpg_and_psycopg_in_transaction_and_session_pooling() {
    let env = Env::with(|c| {
        tenant_pool(c, "acme", PoolMode::Transaction, 3);
        tenant_pool(c, "globex", PoolMode::Session, 4);
    })
    .await;
    for tenant in ["acme", "globex"] {
        let dsn = url(&env, tenant);
        run_script("asyncpg_check.py", &dsn).await;
        run_script("psycopg_check.py", &dsn).await;
    }
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_pooling_reports_the_real_backend_pid() {
    let env = Env::with(|c| tenant_pool(c, "acme", PoolMode::Session, 2)).await;
    let code = "import psycopg, sys\n\
                c = psycopg.connect(sys.argv[1])\n\
                print(c.info.backend_pid, c.execute('select pg_backend_pid()').fetchone()[0])";
    let out = tokio::process::Command::new(python())
        .args(["-c", code, &url(&env, "acme")])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(
        v.len(),
        2,
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(v[0], v[1], "BackendKeyData pid == pg_backend_pid()");
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_scripts_with_copy_transactions_and_errors() {
    let env = Env::new().await;
    let script = r#"
\set ON_ERROR_STOP 0
CREATE TABLE notes (id serial PRIMARY KEY, body text);
COPY notes (body) FROM STDIN;
first
second
third
\.
BEGIN;
INSERT INTO notes (body) VALUES ('in tx');
SELECT 1/0;
ROLLBACK;
SELECT count(*) AS n FROM notes \gset
\echo notes=:n
\copy (SELECT body FROM notes ORDER BY id) TO STDOUT
SELECT current_schema() AS s \gset
\echo schema=:s
"#;
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("s.sql");
    std::fs::write(&f, script).unwrap();
    let out = common::psql(
        &env.dsn("app@globex", "globex-pw"),
        &["-q", "-f", f.to_str().unwrap()],
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("notes=3"), "{stdout}\n{stderr}");
    assert!(stdout.contains("first\nsecond\nthird"), "{stdout}");
    assert!(stdout.contains("schema=globex"), "{stdout}");
    assert!(stderr.contains("division by zero"), "{stderr}");
    env.finish().await;
}

async fn pgbench(env: &Env, args: &[&str]) -> String {
    let out = tokio::process::Command::new("pgbench")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &env.addr().port().to_string(),
            "-U",
            "app@acme",
            "-n",
        ])
        .args(args)
        .arg(&env.db.db)
        .env("PGPASSWORD", "acme-pw")
        .output()
        .await
        .expect("pgbench installed");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "pgbench {args:?} failed:\n{text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_simple_extended_prepared_and_reconnect() {
    let env = Env::with(|c| tenant_pool(c, "acme", PoolMode::Transaction, 2)).await;
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bench.sql");
    std::fs::write(
        &f,
        "\\set id random(1, 10)\nBEGIN;\nSELECT owner FROM items WHERE id = :id;\nUPDATE items SET owner = owner WHERE id = :id;\nEND;\n",
    )
    .unwrap();
    let f = f.to_str().unwrap();
    let single = dir.path().join("single.sql");
    std::fs::write(
        &single,
        "\\set id random(1, 10)\nSELECT owner FROM items WHERE id = :id;\n",
    )
    .unwrap();
    let single = single.to_str().unwrap();
    for mode in ["simple", "extended", "prepared"] {
        // 8 clients over 2 server connections: prepared statements move between servers.
        // Multi-statement transactions get a thread per client: pgbench prepares
        // synchronously, so a thread blocked preparing for one client would otherwise
        // stall another client of that thread that holds a server mid-transaction.
        let text = pgbench(
            &env,
            &["-M", mode, "-c", "8", "-j", "8", "-t", "50", "-f", f],
        )
        .await;
        assert!(
            text.contains("number of transactions actually processed: 400/400"),
            "{mode}: {text}"
        );
        assert!(
            text.contains("number of failed transactions: 0"),
            "{mode}: {text}"
        );
        let text = pgbench(
            &env,
            &["-M", mode, "-c", "8", "-j", "2", "-t", "100", "-f", single],
        )
        .await;
        assert!(
            text.contains("actually processed: 800/800"),
            "{mode}: {text}"
        );
    }
    let text = pgbench(&env, &["-C", "-c", "4", "-j", "2", "-t", "25", "-f", f]).await;
    assert!(text.contains("actually processed: 100/100"), "{text}");
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_postgres_in_transaction_and_session_pooling() {
    let home = std::env::var("HOME").unwrap_or_default();
    let modules = std::env::var("TENANTGATE_NODE_DIR")
        .unwrap_or(format!("{home}/.cache/tenantgate/node"))
        + "/node_modules";
    assert!(
        std::path::Path::new(&modules).join("pg").exists(),
        "node-postgres missing: run `bash scripts/test-deps.sh` (or the README test command)"
    );
    let env = Env::with(|c| {
        tenant_pool(c, "acme", PoolMode::Transaction, 2);
        tenant_pool(c, "globex", PoolMode::Session, 4);
    })
    .await;
    for tenant in ["acme", "globex"] {
        let out = tokio::process::Command::new("node")
            .arg(format!(
                "{}/tests/drivers/node_pg_check.js",
                env!("CARGO_MANIFEST_DIR")
            ))
            .arg(url(&env, tenant))
            .env("NODE_PATH", &modules)
            .output()
            .await
            .expect("node is installed");
        assert_all_passed(&format!("node-postgres ({tenant})"), &out);
    }
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jdbc_in_transaction_and_session_pooling() {
    let jar = "/usr/share/java/postgresql.jar";
    assert!(
        std::path::Path::new(jar).exists(),
        "PostgreSQL JDBC driver missing: run `bash scripts/test-deps.sh` (or the README test command)"
    );
    let classes = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new("javac")
        .arg("-d")
        .arg(classes.path())
        .arg(format!(
            "{}/tests/drivers/JdbcCheck.java",
            env!("CARGO_MANIFEST_DIR")
        ))
        .output()
        .await
        .expect("javac is installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let env = Env::with(|c| {
        tenant_pool(c, "acme", PoolMode::Transaction, 2);
        tenant_pool(c, "globex", PoolMode::Session, 4);
    })
    .await;
    for tenant in ["acme", "globex"] {
        let url = format!(
            "jdbc:postgresql://127.0.0.1:{}/{}",
            env.addr().port(),
            env.db.db
        );
        let out = tokio::process::Command::new("java")
            .arg("-cp")
            .arg(format!("{jar}:{}", classes.path().display()))
            .args([
                "JdbcCheck",
                &url,
                &format!("app@{tenant}"),
                &format!("{tenant}-pw"),
            ])
            .output()
            .await
            .expect("java is installed");
        assert_all_passed(&format!("JDBC ({tenant})"), &out);
    }
    env.finish().await;
}

/// sqlx (its own protocol code in Rust): a pool of client connections, each caching its
/// named prepared statements (`sqlx_s_N`) for the life of the connection, while in
/// transaction pooling the proxy gives them whichever server connection is free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlx_in_transaction_and_session_pooling() {
    use futures_util::TryStreamExt;
    use sqlx::Row;
    let env = Env::with(|c| {
        tenant_pool(c, "acme", PoolMode::Transaction, 2);
        tenant_pool(c, "globex", PoolMode::Session, 4);
    })
    .await;
    for tenant in ["acme", "globex"] {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect(&url(&env, tenant))
            .await
            .unwrap_or_else(|e| panic!("{tenant}: connect: {e}"));
        let t = format!("tg_sqlx_{}", common::unique());
        sqlx::query(&format!(
            "CREATE TABLE {t} (id int PRIMARY KEY, name text, at timestamptz)"
        ))
        .execute(&pool)
        .await
        .unwrap();
        // Parameters, and the same statements again on every client connection: each
        // caches them by name, so the proxy re-prepares them on other server connections.
        let insert = format!("INSERT INTO {t} VALUES ($1, $2, now())");
        for i in 0..60 {
            sqlx::query(&insert)
                .bind(i)
                .bind(format!("n{i}"))
                .execute(&pool)
                .await
                .unwrap_or_else(|e| panic!("{tenant}: insert {i}: {e}"));
        }
        let by_id = format!("SELECT name FROM {t} WHERE id = $1");
        let mut tasks = Vec::new();
        for k in 0..4 {
            let (pool, by_id) = (pool.clone(), by_id.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0..50 {
                    let id = (i * 7 + k) % 60;
                    let name: String = sqlx::query_scalar(&by_id)
                        .bind(id)
                        .fetch_one(&pool)
                        .await
                        .unwrap();
                    assert_eq!(name, format!("n{id}"));
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        // A transaction rolled back, and one committed, each on one connection.
        let mut tx = pool.begin().await.unwrap();
        sqlx::query(&insert)
            .bind(1000)
            .bind("gone")
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.rollback().await.unwrap();
        let mut tx = pool.begin().await.unwrap();
        sqlx::query(&insert)
            .bind(1001)
            .bind("kept")
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {t} WHERE id >= 1000"))
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(
            n, 1,
            "{tenant}: the rollback kept its row or the commit lost its row"
        );
        // Errors keep their SQLSTATE, and the connection stays usable.
        let e = sqlx::query("SELECT 1/0").execute(&pool).await.unwrap_err();
        let code = e
            .as_database_error()
            .and_then(|d| d.code())
            .map(|c| c.into_owned());
        assert_eq!(code.as_deref(), Some("22012"), "{tenant}: {e}");
        let e = sqlx::query(&insert)
            .bind(1)
            .bind("dup")
            .execute(&pool)
            .await
            .unwrap_err();
        let code = e
            .as_database_error()
            .and_then(|d| d.code())
            .map(|c| c.into_owned());
        assert_eq!(code.as_deref(), Some("23505"), "{tenant}: {e}");
        // A large result, streamed row by row.
        let mut rows = sqlx::query("SELECT g, md5(g::text) AS h FROM generate_series(1, 20000) g")
            .fetch(&pool);
        let (mut count, mut last) = (0, 0);
        while let Some(row) = rows.try_next().await.unwrap() {
            count += 1;
            last = row.get::<i32, _>("g");
        }
        drop(rows);
        assert_eq!((count, last), (20000, 20000), "{tenant}");
        // The tenant's own schema and rows, not another's.
        let owners: Vec<String> = sqlx::query_scalar("SELECT DISTINCT owner FROM items")
            .fetch_all(&pool)
            .await
            .unwrap();
        assert_eq!(owners, [tenant], "{tenant}");
        let schema: String = sqlx::query_scalar("SELECT current_schema()::text")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(schema, tenant);
        sqlx::query(&format!("DROP TABLE {t}"))
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    }
    env.finish().await;
}
