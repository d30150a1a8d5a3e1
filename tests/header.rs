//! Header-comment routing: trusted service users name the tenant per transaction with
//! `/* tenant: key */` or `-- tenant: key`; others may not switch tenants.

mod common;

use common::{code, Env};

async fn env() -> Env {
    Env::with(common::service_user).await
}

async fn owner(c: &tokio_postgres::Client, sql: &str) -> Result<String, String> {
    match c.simple_query(sql).await {
        Ok(msgs) => Ok(msgs
            .iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                _ => None,
            })
            .unwrap_or_default()),
        Err(e) => Err(code(&e)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_user_names_the_tenant_per_transaction() {
    let env = env().await;
    let svc = env.try_client("svc", "svc-pw").await.unwrap();
    // no header, no tenant
    assert_eq!(owner(&svc, "SELECT 1").await, Err("3D000".into()));
    assert_eq!(
        owner(&svc, "/* tenant: acme */ SELECT owner FROM items LIMIT 1")
            .await
            .unwrap(),
        "acme"
    );
    assert_eq!(
        owner(&svc, "/* tenant: globex */ SELECT owner FROM items LIMIT 1")
            .await
            .unwrap(),
        "globex"
    );
    assert_eq!(
        owner(&svc, "-- tenant: acme\nSELECT current_schema()")
            .await
            .unwrap(),
        "acme"
    );
    assert_eq!(
        owner(&svc, "/*tenant:globex*/ SELECT current_user::text")
            .await
            .unwrap(),
        env.db.role("globex"),
        "runs as the tenant's own role"
    );
    // without a header the last tenant stays
    assert_eq!(
        owner(&svc, "SELECT current_schema()").await.unwrap(),
        "globex"
    );
    // unknown tenant: clear error, connection usable
    assert_eq!(
        owner(&svc, "/* tenant: nosuch */ SELECT 1").await,
        Err("3D000".into())
    );
    // switching inside a transaction is refused; the same tenant is fine
    svc.batch_execute("/* tenant: acme */ BEGIN").await.unwrap();
    assert_eq!(
        owner(&svc, "/* tenant: acme */ SELECT current_schema()")
            .await
            .unwrap(),
        "acme"
    );
    assert_eq!(
        owner(&svc, "/* tenant: globex */ SELECT 1").await,
        Err("25001".into())
    );
    svc.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(
        owner(&svc, "/* tenant: globex */ SELECT current_schema()")
            .await
            .unwrap(),
        "globex"
    );
    // extended protocol: the header inside Parse routes too
    let st = svc
        .prepare("/* tenant: acme */ SELECT owner FROM items ORDER BY id LIMIT 1")
        .await
        .unwrap();
    assert_eq!(
        svc.query_one(&st, &[]).await.unwrap().get::<_, String>(0),
        "acme"
    );
    // ...and a statement prepared for acme never runs for globex
    assert_eq!(
        owner(&svc, "/* tenant: globex */ SELECT 1").await.unwrap(),
        "1"
    );
    let e = svc.query_one(&st, &[]).await.unwrap_err();
    assert_eq!(code(&e), "26000", "{e}");
    // the guard applies to the tenant the header names
    assert_eq!(
        owner(&svc, "/* tenant: globex */ SELECT owner FROM acme.items").await,
        Err("42501".into())
    );
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_trusted_users_switch_tenants() {
    let env = env().await;
    let app = env.client("acme").await;
    assert_eq!(
        owner(&app, "/* tenant: acme */ SELECT owner FROM items LIMIT 1")
            .await
            .unwrap(),
        "acme"
    );
    assert_eq!(
        owner(&app, "/* tenant: globex */ SELECT owner FROM items LIMIT 1").await,
        Err("42501".into())
    );
    assert_eq!(
        owner(&app, "SELECT owner FROM items LIMIT 1")
            .await
            .unwrap(),
        "acme",
        "still acme"
    );
    // a service user may start with a tenant; unknown tenants and bad passwords are refused
    let svc = env.try_client("svc@globex", "svc-pw").await.unwrap();
    assert_eq!(
        owner(&svc, "SELECT owner FROM items LIMIT 1")
            .await
            .unwrap(),
        "globex"
    );
    assert_eq!(
        code(&env.try_client("svc@nosuch", "svc-pw").await.unwrap_err()),
        "3D000"
    );
    assert_eq!(
        code(&env.try_client("svc", "wrong").await.unwrap_err()),
        "28P01"
    );
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logical_schema_is_rewritten_to_the_tenants() {
    let env = env().await;
    let c = env.client("acme").await;
    assert_eq!(
        owner(&c, "SELECT owner FROM public.items LIMIT 1")
            .await
            .unwrap(),
        "acme"
    );
    assert_eq!(
        owner(&c, "SELECT owner FROM \"public\".items LIMIT 1")
            .await
            .unwrap(),
        "acme"
    );
    // literals are left alone
    assert_eq!(
        owner(&c, "SELECT 'public.items'").await.unwrap(),
        "public.items"
    );
    // SET search_path TO public lands on the tenant's schema; SHOW reports the logical name
    c.batch_execute("BEGIN; SET LOCAL search_path TO public")
        .await
        .unwrap();
    assert_eq!(
        owner(&c, "SELECT current_setting('search_path')")
            .await
            .unwrap(),
        "acme"
    );
    assert_eq!(owner(&c, "SHOW search_path").await.unwrap(), "public");
    assert_eq!(
        owner(&c, "SELECT owner FROM items LIMIT 1").await.unwrap(),
        "acme"
    );
    c.batch_execute("COMMIT").await.unwrap();
    // extended protocol too
    let st = c
        .prepare("SELECT owner FROM public.items WHERE id = $1")
        .await
        .unwrap();
    assert_eq!(
        c.query_one(&st, &[&3i32])
            .await
            .unwrap()
            .get::<_, String>(0),
        "acme"
    );
    // a service user's public is whichever tenant its header names
    let svc = env.try_client("svc", "svc-pw").await.unwrap();
    assert_eq!(
        owner(
            &svc,
            "/* tenant: globex */ SELECT owner FROM public.items LIMIT 1"
        )
        .await
        .unwrap(),
        "globex"
    );
    env.finish().await;
}

// One runtime thread: both queries of a `join!` are queued before the connection task
// writes, so they reach the proxy in one write, the second while the first is running.
#[tokio::test]
async fn pipelined_statements_switch_tenants_once_the_earlier_ones_are_answered() {
    let env = env().await;
    let svc = env.try_client("svc", "svc-pw").await.unwrap();
    for _ in 0..3 {
        let (a, g) = tokio::join!(
            owner(&svc, "/* tenant: acme */ SELECT current_schema()"),
            owner(&svc, "/* tenant: globex */ SELECT current_schema()"),
        );
        assert_eq!((a, g), (Ok("acme".into()), Ok("globex".into())));
    }
    // A transaction still open once the earlier replies are in: refused, as unpipelined.
    let (begin, g) = tokio::join!(
        svc.simple_query("/* tenant: acme */ BEGIN"),
        owner(&svc, "/* tenant: globex */ SELECT 1"),
    );
    begin.unwrap();
    assert_eq!(g, Err("25001".into()));
    svc.batch_execute("ROLLBACK").await.unwrap();
    // A statement tokio-postgres prepared and dropped is closed in the background (Close +
    // Sync), just ahead of the next tenant's statement.
    for i in 0..3 {
        let n: i32 = svc
            .query_one("/* tenant: acme */ SELECT $1::int", &[&i])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, i);
        assert_eq!(
            owner(&svc, "/* tenant: globex */ SELECT current_schema()").await,
            Ok("globex".into())
        );
    }
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_user_logged_in_to_a_session_pooled_tenant_stays_with_it() {
    // Session pooling holds the tenant's server connection for the whole session, so a
    // header naming another tenant cannot be honoured there: a clear error (not "inside a
    // transaction"), and the session goes on with its own tenant.
    let env = Env::with(|c| {
        common::tenant_pool(c, "acme", tenantgate::config::PoolMode::Session, 2);
        common::service_user(c);
    })
    .await;
    let svc = env.try_client("svc@acme", "svc-pw").await.unwrap();
    let e = svc
        .simple_query("/* tenant: globex */ SELECT 1")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "0A000", "{e}");
    assert!(
        e.as_db_error()
            .unwrap()
            .message()
            .contains("session pooling"),
        "{e}"
    );
    assert_eq!(
        owner(&svc, "/* tenant: acme */ SELECT current_schema()").await,
        Ok("acme".into())
    );
    // Without a tenant at login, the same user names session-pooled tenants per
    // transaction (their statements are pooled per transaction for it).
    let any = env.try_client("svc", "svc-pw").await.unwrap();
    assert_eq!(
        owner(&any, "/* tenant: acme */ SELECT current_schema()").await,
        Ok("acme".into())
    );
    assert_eq!(
        owner(&any, "/* tenant: globex */ SELECT current_schema()").await,
        Ok("globex".into())
    );
    env.finish().await;
}
