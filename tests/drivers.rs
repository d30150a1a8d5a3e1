//! Real clients with their own protocol code through the proxy: psql, pgbench (simple,
//! extended, prepared, new connection per transaction), asyncpg and psycopg.
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
