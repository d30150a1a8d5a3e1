//! The master catalog against real PostgreSQL: setup, provisioning (schema, role, grants,
//! template, catalog rows, audit), isolation of the created roles, idempotency, concurrent
//! creates, failures that leave nothing behind, suspend/resume through the proxy, catalog
//! changes seen by a running proxy, drop, secret rotation, and tenant migrations.

mod common;

use std::time::Duration;

use common::{admin, code, eventually};
use tenantgate::catalog::crypto::SecretKey;
use tenantgate::catalog::migrate::{migrate_all, MigrateOptions};
use tenantgate::catalog::migrations::{self, Migration};
use tenantgate::catalog::provision::{role_of, schema_of, NewTenant};
use tenantgate::catalog::{Catalog, CatalogError};
use tenantgate::config::Config;
use tokio_postgres::NoTls;

/// A catalog in its own database; tenants get unique keys (roles are cluster-wide).
struct Cat {
    db: String,
    url: String,
    key: String,
    catalog: Catalog,
    prefix: String,
}

impl Cat {
    async fn new() -> Cat {
        let c = common::catalog_db::CatalogDb::new("tg_cat", "t").await;
        let all: Vec<String> = migrations::master()
            .into_iter()
            .map(|m| m.version)
            .collect();
        assert_eq!(c.setup.applied, all);
        assert!(c.setup.primary_registered);
        Cat {
            db: c.db,
            url: c.url,
            key: c.key,
            catalog: c.catalog,
            prefix: c.prefix,
        }
    }

    fn key(&self, name: &str) -> String {
        format!("{}_{name}", self.prefix)
    }

    fn req(&self, name: &str, plan: &str) -> NewTenant {
        NewTenant {
            key: self.key(name),
            display_name: None,
            plan: plan.into(),
            instance: None,
            user: "app".into(),
            password: Some(format!("{name}-pw")),
            actor: "test".into(),
        }
    }

    async fn client(&self) -> tokio_postgres::Client {
        admin(&self.db).await
    }

    fn config(&self) -> Config {
        common::catalog_db::proxy_config(&self.url, &self.key, &self.db)
    }

    async fn cleanup(self) {
        common::catalog_db::drop_catalog(&self.db, &self.prefix).await;
    }
}

async fn connect(
    port: u16,
    user: &str,
    tenant: &str,
    password: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let dsn = format!("host=127.0.0.1 port={port} user={user}@{tenant} password={password} dbname=x connect_timeout=5");
    let (c, conn) = tokio_postgres::connect(&dsn, NoTls).await?;
    tokio::spawn(conn);
    Ok(c)
}

#[tokio::test]
async fn setup_is_idempotent_and_versioned() {
    let cat = Cat::new().await;
    let again = cat.catalog.setup().await.unwrap();
    assert!(again.applied.is_empty() && !again.primary_registered);
    let c = cat.client().await;
    let plans: Vec<String> = c
        .query(
            "SELECT key FROM tenantgate.plans ORDER BY monthly_price",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(plans, ["free", "starter", "pro", "enterprise"]);
    assert_eq!(cat.catalog.resolve_plan("Premium").await.unwrap(), "pro");
    assert_eq!(
        cat.catalog.resolve_plan("professional").await.unwrap(),
        "pro"
    );
    assert!(matches!(
        cat.catalog.resolve_plan("gold").await,
        Err(CatalogError::Invalid(_))
    ));
    cat.cleanup().await;
}

#[tokio::test]
async fn provisioning_creates_an_isolated_tenant() {
    let cat = Cat::new().await;
    let p = cat
        .catalog
        .create_tenant(&cat.req("acme", "premium"))
        .await
        .unwrap();
    assert!(p.created);
    assert_eq!(p.plan, "pro");
    let b = cat
        .catalog
        .create_tenant(&cat.req("beta", "free"))
        .await
        .unwrap();
    let (role, schema) = (role_of(&p.key), schema_of(&p.key));
    let c = cat.client().await;
    // the role: login, no superuser/createdb/createrole, does not inherit
    let r = c
        .query_one("SELECT rolcanlogin, rolsuper, rolcreatedb, rolcreaterole, rolinherit FROM pg_roles WHERE rolname = $1", &[&role])
        .await
        .unwrap();
    assert_eq!(
        (
            r.get::<_, bool>(0),
            r.get::<_, bool>(1),
            r.get::<_, bool>(2),
            r.get::<_, bool>(3),
            r.get::<_, bool>(4)
        ),
        (true, false, false, false, false)
    );
    // the schema is owned by the role and closed to PUBLIC
    let r = c
        .query_one(
            "SELECT nspowner::regrole::text, has_schema_privilege('public', $1, 'USAGE')
               FROM pg_namespace WHERE nspname = $1",
            &[&schema],
        )
        .await
        .unwrap();
    assert_eq!(r.get::<_, String>(0), role);
    assert!(!r.get::<_, bool>(1));
    // the template: the sample app's tables, owned by the role
    let owners: Vec<String> = c
        .query(
            "SELECT tableowner::text FROM pg_tables WHERE schemaname = $1 ORDER BY tablename",
            &[&schema],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(owners, vec![role.clone(); 3]);
    // catalog rows: tenant (secret encrypted), first user as SCRAM verifier, versions, audit
    let r = c
        .query_one(
            "SELECT t.plan, t.status, t.backend_secret, u.scram_verifier,
                    (SELECT count(*) FROM tenantgate.tenant_migrations m WHERE m.tenant = t.key),
                    (SELECT count(*) FROM tenantgate.audit_log a WHERE a.tenant = t.key AND a.action = 'tenant.create')
               FROM tenantgate.tenants t JOIN tenantgate.tenant_users u ON u.tenant = t.key WHERE t.key = $1",
            &[&p.key],
        )
        .await
        .unwrap();
    assert_eq!(r.get::<_, String>(0), "pro");
    assert_eq!(r.get::<_, String>(1), "active");
    let secret: Vec<u8> = r.get(2);
    let plain = SecretKey::from_base64(&cat.key)
        .unwrap()
        .open(&secret)
        .unwrap();
    assert_eq!(plain.len(), 32);
    assert!(!String::from_utf8_lossy(&secret).contains(std::str::from_utf8(&plain).unwrap()));
    assert!(r.get::<_, String>(3).starts_with("SCRAM-SHA-256$"));
    assert_eq!(r.get::<_, i64>(4), migrations::tenant().len() as i64);
    assert_eq!(r.get::<_, i64>(5), 1);
    // isolation: one tenant's role cannot read the other's schema, even qualified,
    // nor the catalog
    c.batch_execute(&format!("SET ROLE {role}")).await.unwrap();
    let e = c
        .query(&format!("SELECT * FROM {}.users", schema_of(&b.key)), &[])
        .await
        .unwrap_err();
    assert_eq!(code(&e), "42501");
    let e = c
        .query("SELECT * FROM tenantgate.tenant_users", &[])
        .await
        .unwrap_err();
    assert_eq!(code(&e), "42501");
    c.batch_execute("RESET ROLE").await.unwrap();
    cat.cleanup().await;
}

#[tokio::test]
async fn create_is_idempotent_validates_input_and_leaves_nothing_on_failure() {
    let cat = Cat::new().await;
    let p = cat
        .catalog
        .create_tenant(&cat.req("acme", "pro"))
        .await
        .unwrap();
    let again = cat
        .catalog
        .create_tenant(&cat.req("acme", "pro"))
        .await
        .unwrap();
    assert!(!again.created, "retry of the same request is a no-op");
    assert!(matches!(
        cat.catalog.create_tenant(&cat.req("acme", "free")).await,
        Err(CatalogError::Exists(_))
    ));
    for (key, plan) in [
        ("Bad Key", "pro"),
        ("x'; DROP TABLE y; --", "pro"),
        ("1abc", "pro"),
    ] {
        let mut r = cat.req("z", plan);
        r.key = key.into();
        assert!(
            matches!(
                cat.catalog.create_tenant(&r).await,
                Err(CatalogError::Invalid(_))
            ),
            "{key}"
        );
    }
    assert!(matches!(
        cat.catalog.create_tenant(&cat.req("y", "gold")).await,
        Err(CatalogError::Invalid(_))
    ));
    let mut r = cat.req("y", "pro");
    r.user = "a b".into();
    assert!(matches!(
        cat.catalog.create_tenant(&r).await,
        Err(CatalogError::Invalid(_))
    ));
    // a role that already exists makes the create fail, and nothing is left half-made
    let c = cat.client().await;
    let clash = cat.key("clash");
    c.batch_execute(&format!("CREATE ROLE {}", role_of(&clash)))
        .await
        .unwrap();
    let e = cat
        .catalog
        .create_tenant(&cat.req("clash", "pro"))
        .await
        .unwrap_err();
    assert!(matches!(e, CatalogError::Exists(_)), "{e}");
    let left: i64 = c
        .query_one(
            "SELECT (SELECT count(*) FROM pg_namespace WHERE nspname = $1)
                  + (SELECT count(*) FROM tenantgate.tenants WHERE key = $2)",
            &[&schema_of(&clash), &clash],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
    // generated password when none is given, shown once
    let mut r = cat.req("gen", "free");
    r.password = None;
    let g = cat.catalog.create_tenant(&r).await.unwrap();
    assert_eq!(g.generated_password.as_deref().map(str::len), Some(32));
    assert!(p.generated_password.is_none());
    cat.cleanup().await;
}

#[tokio::test]
async fn concurrent_creates() {
    let cat = Cat::new().await;
    let mut tasks = Vec::new();
    for i in 0..6 {
        let c = cat.catalog.clone();
        let r = cat.req(&format!("c{i}"), "starter");
        tasks.push(tokio::spawn(async move { c.create_tenant(&r).await }));
    }
    // the same key three times at once: exactly one creates, the others see it exist
    for _ in 0..3 {
        let c = cat.catalog.clone();
        let r = cat.req("same", "starter");
        tasks.push(tokio::spawn(async move { c.create_tenant(&r).await }));
    }
    let mut created_same = 0;
    for (i, t) in tasks.into_iter().enumerate() {
        match t.await.unwrap() {
            Ok(p) if i >= 6 && p.created => created_same += 1,
            Ok(_) => {}
            Err(CatalogError::Exists(_)) if i >= 6 => {}
            Err(e) => panic!("create {i}: {e}"),
        }
    }
    assert_eq!(created_same, 1);
    assert_eq!(cat.catalog.list_tenants().await.unwrap().len(), 7);
    cat.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_proxy_follows_the_catalog() {
    let cat = Cat::new().await;
    let acme = cat
        .catalog
        .create_tenant(&cat.req("acme", "pro"))
        .await
        .unwrap();
    let proxy = tenantgate::app::start(cat.config(), None).await.unwrap();
    let port = proxy.addr.port();
    let c = connect(port, "app", &acme.key, "acme-pw").await.unwrap();
    let r = c
        .query_one("SELECT current_user::text, current_schema()::text", &[])
        .await
        .unwrap();
    assert_eq!(r.get::<_, String>(0), role_of(&acme.key));
    assert_eq!(r.get::<_, String>(1), schema_of(&acme.key));
    assert_eq!(
        code(&connect(port, "app", &acme.key, "wrong").await.unwrap_err()),
        "28P01"
    );

    // a tenant created after start is routable within a second (LISTEN/NOTIFY)
    let late = cat
        .catalog
        .create_tenant(&cat.req("late", "free"))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    assert!(
        eventually(Duration::from_secs(3), || async {
            connect(port, "app", &late.key, "late-pw").await.is_ok()
        })
        .await
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "seen in {:?}",
        started.elapsed()
    );
    // a new login user too
    cat.catalog
        .add_user(&late.key, "second", "second-pw", false, "test")
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(3), || async {
            connect(port, "second", &late.key, "second-pw")
                .await
                .is_ok()
        })
        .await
    );

    // suspend: the running session ends, new logins get 57P03 (after a correct password)
    cat.catalog
        .set_status(&acme.key, "suspended", "test")
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(3), || async {
            c.simple_query("SELECT 1").await.is_err()
        })
        .await,
        "session ended"
    );
    let e = connect(port, "app", &acme.key, "acme-pw")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "57P03");
    assert_eq!(
        code(&connect(port, "app", &acme.key, "wrong").await.unwrap_err()),
        "28P01",
        "no status without the password"
    );
    // resume
    cat.catalog
        .set_status(&acme.key, "active", "test")
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(3), || async {
            connect(port, "app", &acme.key, "acme-pw").await.is_ok()
        })
        .await
    );

    // rotating the backend secret keeps the tenant reachable
    cat.catalog.rotate_secret(&acme.key, "test").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let c2 = connect(port, "app", &acme.key, "acme-pw").await.unwrap();
    c2.simple_query("SELECT 1").await.unwrap();

    // drop: refused while data exists, then forced; the tenant is gone from the proxy
    let d = connect(port, "app", &late.key, "late-pw").await.unwrap();
    d.batch_execute("INSERT INTO users (email, name) VALUES ('a@b', 'A')")
        .await
        .unwrap();
    drop(d);
    assert!(matches!(
        cat.catalog.drop_tenant(&late.key, false, "test").await,
        Err(CatalogError::Refused(_))
    ));
    cat.catalog
        .drop_tenant(&late.key, true, "test")
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(3), || async {
            connect(port, "app", &late.key, "late-pw")
                .await
                .err()
                .is_some_and(|e| code(&e) == "28P01")
        })
        .await
    );
    let gone: i64 = admin(&cat.db)
        .await
        .query_one(
            "SELECT count(*) FROM pg_roles WHERE rolname = $1",
            &[&role_of(&late.key)],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(gone, 0);
    proxy.shutdown().await;
    cat.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_many_tenants_with_a_failure_and_a_resumed_run() {
    let cat = Cat::new().await;
    let mut keys = Vec::new();
    for i in 0..12 {
        keys.push(
            cat.catalog
                .create_tenant(&cat.req(&format!("m{i}"), "free"))
                .await
                .unwrap()
                .key,
        );
    }
    // one tenant lacks a column the new migration needs
    let c = cat.client().await;
    let broken = keys[5].clone();
    c.batch_execute(&format!(
        "ALTER TABLE {}.tasks DROP COLUMN priority",
        schema_of(&broken)
    ))
    .await
    .unwrap();
    let mut list = migrations::tenant();
    list.push(Migration {
        version: "0002_priority_index".into(),
        sql: "CREATE INDEX tasks_priority_idx ON tasks (priority);".into(),
    });
    let opts = MigrateOptions {
        concurrency: 4,
        fail_fast: false,
        migrations: list.clone(),
        only: vec![],
    };
    let seen = std::sync::Mutex::new(0usize);
    let r = migrate_all(&cat.catalog, &opts, &|_, _| *seen.lock().unwrap() += 1)
        .await
        .unwrap();
    assert_eq!(*seen.lock().unwrap(), 12, "progress reported per tenant");
    assert_eq!(r.migrated, 11);
    assert_eq!(r.failed.len(), 1);
    assert_eq!(r.failed[0].0, broken);
    assert_eq!(r.failed[0].1, "0002_priority_index");
    assert!(r.failed[0].2.contains("priority"), "{}", r.failed[0].2);
    // the index exists in a migrated schema and is owned by the tenant role
    let owner: String = c
        .query_one("SELECT tableowner::text FROM pg_indexes i JOIN pg_tables t USING (schemaname, tablename) WHERE i.indexname = 'tasks_priority_idx' AND schemaname = $1", &[&schema_of(&keys[0])])
        .await
        .unwrap()
        .get(0);
    assert_eq!(owner, role_of(&keys[0]));
    // fix the broken tenant and resume: only it is migrated
    c.batch_execute(&format!(
        "ALTER TABLE {}.tasks ADD COLUMN priority int",
        schema_of(&broken)
    ))
    .await
    .unwrap();
    let r = migrate_all(&cat.catalog, &opts, &|_, _| {}).await.unwrap();
    assert_eq!((r.migrated, r.up_to_date, r.failed.len()), (1, 11, 0));
    // fail-fast stops scheduling after a failure
    list.push(Migration {
        version: "0003_bad".into(),
        sql: "SELECT no_such_function();".into(),
    });
    let ff = MigrateOptions {
        concurrency: 1,
        fail_fast: true,
        migrations: list,
        only: vec![],
    };
    let r = migrate_all(&cat.catalog, &ff, &|_, _| {}).await.unwrap();
    assert_eq!(r.failed.len(), 1);
    assert_eq!(r.skipped, 11);
    // new tenants get every version at creation
    let n = cat
        .catalog
        .create_tenant(&cat.req("newer", "free"))
        .await
        .unwrap();
    let versions: i64 = c
        .query_one(
            "SELECT count(*) FROM tenantgate.tenant_migrations WHERE tenant = $1",
            &[&n.key],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(versions, migrations::tenant().len() as i64);
    cat.cleanup().await;
}

/// An instance whose URL asks for TLS: provisioning and the proxy's server connections
/// both go encrypted (the shared server has TLS on; sslmode=require takes its certificate
/// unchecked, as libpq does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_url_with_sslmode_require_is_reached_over_tls() {
    let cat = Cat::new().await;
    let url = format!(
        "postgresql://postgres@127.0.0.1:5432/{}?sslmode=require",
        cat.db
    );
    admin(&cat.db)
        .await
        .execute(
            "INSERT INTO tenantgate.instances (name, url) VALUES ('tls1', $1)",
            &[&url],
        )
        .await
        .unwrap();
    let mut req = cat.req("sealed", "pro");
    req.instance = Some("tls1".into());
    let p = cat.catalog.create_tenant(&req).await.unwrap();
    assert_eq!(p.instance, "tls1");
    // And one on the catalog's own instance, whose URL names no sslmode.
    let q = cat
        .catalog
        .create_tenant(&cat.req("open", "pro"))
        .await
        .unwrap();
    let proxy = tenantgate::app::start(cat.config(), None).await.unwrap();
    let c = connect(proxy.addr.port(), "app", &p.key, "sealed-pw")
        .await
        .unwrap();
    async fn encrypted(c: &tokio_postgres::Client) -> bool {
        c.query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0)
    }
    assert!(
        encrypted(&c).await,
        "the proxy's server connection is not encrypted"
    );
    // That one's server connections stay plain, as PgBouncer's by default.
    let c = connect(proxy.addr.port(), "app", &q.key, "open-pw")
        .await
        .unwrap();
    assert!(!encrypted(&c).await);
    proxy.shutdown().await;
    cat.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_on_another_instance() {
    let cat = Cat::new().await;
    let pg = tokio::task::spawn_blocking(common::pg_instance::PgInstance::start)
        .await
        .unwrap();
    let url = format!("postgresql://postgres@127.0.0.1:{}/postgres", pg.port);
    admin(&cat.db)
        .await
        .execute(
            "INSERT INTO tenantgate.instances (name, url, dedicated) VALUES ('big1', $1, true)",
            &[&url],
        )
        .await
        .unwrap();
    let mut req = cat.req("remote", "enterprise");
    req.instance = Some("big1".into());
    let p = cat.catalog.create_tenant(&req).await.unwrap();
    assert_eq!(p.instance, "big1");
    // the schema lives on the other server, not on the catalog's
    let remote = common::connect_dsn(&pg.url("postgres")).await;
    let n: i64 = remote
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = $1",
            &[&schema_of(&p.key)],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 3);
    let local: i64 = admin(&cat.db)
        .await
        .query_one(
            "SELECT count(*) FROM pg_namespace WHERE nspname = $1",
            &[&schema_of(&p.key)],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(local, 0);
    // and the proxy routes there, logging in with the encrypted secret
    let proxy = tenantgate::app::start(cat.config(), None).await.unwrap();
    let c = connect(proxy.addr.port(), "app", &p.key, "remote-pw")
        .await
        .unwrap();
    let port: String = c
        .query_one("SELECT current_setting('port')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(port, pg.port.to_string());
    // migrations reach it too (version recorded in the catalog after the instance commits)
    let mut list = migrations::tenant();
    list.push(Migration {
        version: "0002_x".into(),
        sql: "CREATE TABLE notes (id int);".into(),
    });
    let r = migrate_all(
        &cat.catalog,
        &MigrateOptions {
            concurrency: 2,
            fail_fast: false,
            migrations: list,
            only: vec![p.key.clone()],
        },
        &|_, _| {},
    )
    .await
    .unwrap();
    assert_eq!(r.migrated, 1);
    c.simple_query("SELECT * FROM notes").await.unwrap();
    proxy.shutdown().await;
    cat.catalog.drop_tenant(&p.key, true, "test").await.unwrap();
    drop(pg);
    cat.cleanup().await;
}
