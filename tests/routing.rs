//! Tenant identification, authentication and isolation, against real PostgreSQL.

mod common;

use common::{code, Env};
use tenantgate::config::{AuthMethod, AuthRule};
use tokio_postgres::NoTls;

#[tokio::test]
async fn each_tenant_sees_only_its_own_rows() {
    let env = Env::new().await;
    for t in common::TENANTS {
        let c = env.client(t).await;
        let row = c
            .query_one(
                "SELECT current_schema(), count(*), min(owner), max(owner) FROM items",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), t);
        assert_eq!(row.get::<_, i64>(1), 10);
        assert_eq!(row.get::<_, String>(2), t);
        assert_eq!(row.get::<_, String>(3), t);
        let user: String = c
            .query_one("SELECT current_user::text", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            user,
            env.db.role(t),
            "server connection logs in as the tenant's role"
        );
    }
    // Schema-qualified access to the other tenant is refused by PostgreSQL's grants.
    let acme = env.client("acme").await;
    let e = acme
        .query("SELECT * FROM globex.items", &[])
        .await
        .unwrap_err();
    assert_eq!(code(&e), "42501");
    // ...and the connection is still usable afterwards.
    assert_eq!(
        acme.query_one("SELECT 1", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        1
    );
    env.finish().await;
}

#[tokio::test]
async fn tenant_comes_from_options_then_user_then_database() {
    let env = Env::new().await;
    let port = env.addr().port();
    let db = env.db.db.clone();
    let schema_of = |dsn: String| async move {
        let (c, conn) = tokio_postgres::connect(&dsn, NoTls)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let s: String = c
            .query_one("SELECT current_schema()", &[])
            .await
            .unwrap()
            .get(0);
        Ok::<_, String>(s)
    };
    // options beats the user suffix
    let dsn = format!("host=127.0.0.1 port={port} user=app password=globex-pw dbname={db} options='-c tenant=globex'");
    assert_eq!(schema_of(dsn).await.unwrap(), "globex");
    // user@tenant
    let dsn = format!("host=127.0.0.1 port={port} user=app@acme password=acme-pw dbname={db}");
    assert_eq!(schema_of(dsn).await.unwrap(), "acme");
    // database name that is a tenant
    let dsn = format!("host=127.0.0.1 port={port} user=app password=globex-pw dbname=globex");
    assert_eq!(schema_of(dsn).await.unwrap(), "globex");
    // options with acme's password for globex: refused
    let dsn = format!("host=127.0.0.1 port={port} user=app password=acme-pw dbname={db} options='-c tenant=globex'");
    assert!(schema_of(dsn).await.is_err());
    env.finish().await;
}

#[tokio::test]
async fn wrong_password_and_unknown_tenant_look_the_same() {
    let env = Env::new().await;
    let wrong = env.try_client("app@acme", "nope").await.unwrap_err();
    let unknown = env.try_client("app@nosuch", "nope").await.unwrap_err();
    let no_user = env.try_client("ghost@acme", "nope").await.unwrap_err();
    let no_tenant = env.try_client("app", "acme-pw").await.unwrap_err();
    for e in [&wrong, &unknown, &no_user, &no_tenant] {
        assert_eq!(code(e), "28P01", "{e}");
    }
    let msg =
        |e: &tokio_postgres::Error| e.as_db_error().unwrap().message().replace("nosuch", "acme");
    assert_eq!(
        msg(&wrong),
        msg(&unknown),
        "no difference except the echoed user name"
    );
    // the proxy is fine afterwards
    env.still_alive().await;
    env.finish().await;
}

#[tokio::test]
async fn md5_trust_and_reject_rules() {
    let env = Env::with(|c| {
        c.auth = vec![
            AuthRule {
                user: "trusted".into(),
                address: "127.0.0.0/8".parse().unwrap(),
                method: AuthMethod::Trust,
            },
            AuthRule {
                user: "legacy".into(),
                address: "*".parse().unwrap(),
                method: AuthMethod::Md5,
            },
            AuthRule {
                user: "blocked".into(),
                address: "*".parse().unwrap(),
                method: AuthMethod::Reject,
            },
            AuthRule {
                user: "*".into(),
                address: "*".parse().unwrap(),
                method: AuthMethod::ScramSha256,
            },
        ];
        for t in &mut c.tenants {
            for name in ["trusted", "legacy", "blocked"] {
                t.users.push(tenantgate::config::LoginUserConfig {
                    name: name.into(),
                    password: format!("{name}-pw"),
                    scram_verifier: String::new(),
                });
            }
        }
    })
    .await;
    // trust: any password
    let c = env.try_client("trusted@acme", "whatever").await.unwrap();
    c.simple_query("SELECT 1").await.unwrap();
    // trust still refuses unknown tenants
    assert_eq!(
        code(&env.try_client("trusted@nosuch", "x").await.unwrap_err()),
        "28P01"
    );
    // md5 through libpq (psql) - tokio-postgres speaks md5 too
    let c = env.try_client("legacy@globex", "legacy-pw").await.unwrap();
    c.simple_query("SELECT 1").await.unwrap();
    assert_eq!(
        code(&env.try_client("legacy@globex", "bad").await.unwrap_err()),
        "28P01"
    );
    let out = common::psql(
        &env.dsn("legacy@acme", "legacy-pw"),
        &["-Atc", "SELECT current_schema()"],
    )
    .await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "acme",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // reject
    assert_eq!(
        code(
            &env.try_client("blocked@acme", "blocked-pw")
                .await
                .unwrap_err()
        ),
        "28000"
    );
    env.finish().await;
}

#[tokio::test]
async fn a_setting_changed_by_set_follows_its_client_across_checkouts() {
    // One server connection for the tenant: every transaction of every client below runs
    // on it, so each checkout must bring it in line with that client's settings.
    let env = Env::with(|c| {
        c.tenants
            .iter_mut()
            .find(|t| t.key == "acme")
            .unwrap()
            .pool_size = 1;
    })
    .await;
    let connect = |app: &str| {
        let dsn = env.dsn("app@acme", "acme-pw") + &format!(" application_name={app}");
        async move {
            let (c, conn) = tokio_postgres::connect(&dsn, NoTls).await.unwrap();
            tokio::spawn(conn);
            c
        }
    };
    let a = connect("first").await;
    let b = connect("second").await;
    async fn current(c: &tokio_postgres::Client) -> String {
        c.query_one("SELECT current_setting('application_name')", &[])
            .await
            .unwrap()
            .get(0)
    }
    assert_eq!(current(&a).await, "first");
    a.batch_execute("SET application_name = 'renamed'")
        .await
        .unwrap();
    assert_eq!(current(&a).await, "renamed");
    assert_eq!(current(&b).await, "second");
    assert_eq!(current(&a).await, "renamed");
    // A new client with the list the first one started with gets that list, not the
    // first client's changed one.
    let c = connect("first").await;
    assert_eq!(current(&c).await, "first");
    assert_eq!(current(&a).await, "renamed");
    // Back to its startup value: the same list as the third client's.
    a.batch_execute("SET application_name = 'first'")
        .await
        .unwrap();
    assert_eq!(current(&c).await, "first");
    assert_eq!(current(&a).await, "first");
    assert_eq!(current(&b).await, "second");
    env.finish().await;
}

#[tokio::test]
async fn startup_settings_apply_and_bad_ones_are_refused() {
    let env = Env::new().await;
    let dsn = env.dsn("app@acme", "acme-pw")
        + " application_name=myapp options='-c statement_timeout=1234'";
    let (c, conn) = tokio_postgres::connect(&dsn, NoTls).await.unwrap();
    tokio::spawn(conn);
    for _ in 0..3 {
        let r = c
            .query_one(
                "SELECT current_setting('application_name'), current_setting('statement_timeout')",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(r.get::<_, String>(0), "myapp");
        assert_eq!(r.get::<_, String>(1), "1234ms");
    }
    // a client without those settings on the same pool does not inherit them
    let other = env.client("acme").await;
    let r = other
        .query_one("SELECT current_setting('statement_timeout')", &[])
        .await
        .unwrap();
    assert_eq!(r.get::<_, String>(0), "0");
    // an unknown setting is refused at login, as PostgreSQL does
    let bad = env.dsn("app@globex", "globex-pw") + " options='-c no_such_setting=1'";
    let e = tokio_postgres::connect(&bad, NoTls)
        .await
        .err()
        .expect("refused");
    assert!(
        code(&e) == "42704" || e.to_string().contains("no_such_setting"),
        "{e}"
    );
    env.finish().await;
}
