//! The admin virtual database end to end, through psql and tokio-postgres, against a proxy
//! on a real catalog with five tenants (unique keys, the sample display names), live
//! traffic recorded by telemetry: every command, the listed English sentences, SQL-comment
//! forms, permission denied for non-admins, and bad input.

mod common;

use std::time::Duration;

use common::catalog_db::{drop_catalog, proxy_config, CatalogDb};
use common::{admin, code, eventually, psql};
use tenantgate::catalog::provision::NewTenant;
use tenantgate::catalog::sample::SAMPLE_TENANTS;
use tenantgate::catalog::Catalog;
use tokio_postgres::{NoTls, SimpleQueryMessage};

const ADMIN_PW: &str = "admin-secret";

struct World {
    db: String,
    prefix: String,
    catalog: Catalog,
    proxy: tenantgate::app::Running,
}

impl World {
    async fn new() -> World {
        let CatalogDb {
            db,
            url,
            key,
            catalog,
            prefix,
            ..
        } = CatalogDb::new("tg_adm", "a").await;
        // The sample tenants' names and plans, under unique keys.
        for (name, display, plan, _, _) in SAMPLE_TENANTS {
            catalog
                .create_tenant(&NewTenant {
                    key: format!("{prefix}_{name}"),
                    display_name: Some(display.to_string()),
                    plan: plan.to_string(),
                    instance: None,
                    user: "app".into(),
                    password: Some(format!("{name}-pw")),
                    actor: "test".into(),
                })
                .await
                .unwrap();
        }
        // Users in acme's own schema: 2 active this month, 1 not.
        admin(&db)
            .await
            .batch_execute(&format!(
                "INSERT INTO {}.users (email, name, last_login) VALUES
                   ('a@x', 'Ann', now() - interval '1 day'),
                   ('b@x', 'Bob', now() - interval '3 days'),
                   ('c@x', 'Cid', now() - interval '90 days')",
                tenantgate::catalog::provision::schema_of(&format!("{prefix}_acme"))
            ))
            .await
            .unwrap();
        catalog
            .add_admin_user("ops", ADMIN_PW, "test")
            .await
            .unwrap();
        let mut cfg = proxy_config(&url, &key, &db);
        cfg.telemetry.flush_ms = 50;
        let proxy = tenantgate::app::start(cfg, None).await.unwrap();
        World {
            db,
            prefix,
            catalog,
            proxy,
        }
    }

    fn key(&self, name: &str) -> String {
        format!("{}_{name}", self.prefix)
    }

    fn dsn(&self, user: &str, password: &str, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={user} password={password} dbname={db} connect_timeout=10",
            self.proxy.addr.port()
        )
    }

    async fn tenant_client(&self, name: &str) -> tokio_postgres::Client {
        let (c, conn) = tokio_postgres::connect(
            &self.dsn(
                &format!("app@{}", self.key(name)),
                &format!("{name}-pw"),
                &self.db,
            ),
            NoTls,
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        c
    }

    async fn admin_client(&self) -> tokio_postgres::Client {
        let (c, conn) = tokio_postgres::connect(&self.dsn("ops", ADMIN_PW, "admin"), NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        c
    }

    /// psql -c: (stdout rows as `a|b|c`, stderr with notices, success).
    async fn psql(&self, sql: &str) -> (Vec<String>, String, bool) {
        let out = psql(
            &self.dsn("ops", ADMIN_PW, "admin"),
            &["-A", "-t", "-F", "|", "-c", sql],
        )
        .await;
        let rows = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        (
            rows,
            String::from_utf8_lossy(&out.stderr).into_owned(),
            out.status.success(),
        )
    }

    async fn finish(self) {
        self.proxy.shutdown().await;
        drop_catalog(&self.db, &self.prefix).await;
    }
}

fn rows(msgs: &[SimpleQueryMessage]) -> Vec<Vec<String>> {
    msgs.iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("").to_owned())
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_database_end_to_end() {
    let w = World::new().await;
    // Traffic for the analytics.
    let acme = w.tenant_client("acme").await;
    for i in 0..20 {
        acme.simple_query(&format!("SELECT count(*) FROM users WHERE id > {i}"))
            .await
            .unwrap();
    }
    acme.simple_query("SELECT pg_sleep(0.05)").await.unwrap();
    let techco = w.tenant_client("techco").await;
    for _ in 0..5 {
        techco.simple_query("SELECT 1").await.unwrap();
    }
    w.proxy.proxy.telemetry().unwrap().flush().await;
    let (acme_key, techco_key) = (w.key("acme"), w.key("techco"));

    // SQL-style commands through psql.
    let (r, _, ok) = w.psql("SHOW TENANTS").await;
    assert!(ok);
    assert!(
        r.iter()
            .any(|l| l.starts_with(&format!("{acme_key}|Acme Corp|enterprise|active"))),
        "{r:?}"
    );
    assert_eq!(r.len(), 5);
    let (r, _, _) = w.psql(&format!("show tenant {acme_key}")).await;
    assert!(r.contains(&"plan|enterprise".to_string()), "{r:?}");
    let (r, _, _) = w.psql("SHOW PLANS").await;
    assert!(
        r.iter()
            .any(|l| l.starts_with("pro|Pro|premium, professional|199.00")),
        "{r:?}"
    );
    let (r, _, _) = w.psql("SHOW INSTANCES").await;
    assert!(r[0].starts_with("primary|127.0.0.1:5432/"), "{r:?}");
    let (r, _, _) = w.psql("SHOW POOLS").await;
    assert!(r.iter().any(|l| l.starts_with(&acme_key)), "{r:?}");
    let (r, _, _) = w.psql("SHOW CLIENTS").await;
    assert!(
        r.iter()
            .filter(|l| l.contains(&acme_key) || l.contains(&techco_key))
            .count()
            >= 2,
        "{r:?}"
    );
    let (r, _, ok) = w.psql("SHOW SERVERS").await;
    assert!(ok && !r.is_empty());
    let (r, _, _) = w.psql("SHOW STATS").await;
    assert!(r.iter().any(|l| l.starts_with("events_written|")), "{r:?}");
    let (r, _, _) = w.psql("SHOW CONFIG").await;
    assert!(
        r.iter().any(|l| l == "catalog_key|********"),
        "secrets hidden: {r:?}"
    );
    let (_, _, ok) = w.psql("RELOAD").await;
    assert!(ok);

    // Usage and latency from telemetry.
    let (r, _, _) = w.psql(&format!("SHOW USAGE FOR {acme_key}")).await;
    let f: Vec<&str> = r[0].split('|').collect();
    assert_eq!((f[0], f[1]), (acme_key.as_str(), "enterprise"));
    assert_eq!(f[2], "21", "{r:?}");
    assert!(f[10].parse::<u64>().unwrap() > 0, "storage bytes: {r:?}");
    let (r, _, _) = w
        .psql(&format!("SHOW SLOW QUERIES FOR {acme_key} LIMIT 1"))
        .await;
    assert!(r[0].contains("pg_sleep"), "{r:?}");
    let (r, _, _) = w
        .psql(&format!("SHOW RESPONSE TIME FOR {techco_key}"))
        .await;
    assert!(r[0].starts_with(&format!("{techco_key}|5|")), "{r:?}");
    let (r, _, _) = w.psql("SHOW ACTIVE USERS").await;
    assert!(
        r.iter()
            .any(|l| l.starts_with(&format!("{acme_key}|enterprise|2|3|66.7"))),
        "{r:?}"
    );
    let (r, notices, _) = w.psql("SHOW LIMITS").await;
    assert!(notices.contains("at 80% or more"), "{notices}");
    assert!(r.iter().any(|l| l.contains("|max_users|")), "{r:?}");
    let (r, _, _) = w.psql("SHOW REVENUE BY PLAN").await;
    assert!(
        r.iter().any(|l| l.starts_with("pro|2|199.00|398.00|")),
        "{r:?}"
    );
    assert!(r.last().unwrap().starts_with("total|5|"), "{r:?}");
    let (r, _, _) = w.psql(&format!("SHOW USERS FOR {acme_key}")).await;
    assert_eq!(r.len(), 3, "{r:?}");
    let (r, notices, _) = w.psql("MIGRATE TENANTS").await;
    assert!(notices.contains("up to date"), "{notices}");
    assert!(r[0].starts_with("5|0|0|5|0|"), "{r:?}");

    // The listed English sentences (tenants named by display name).
    for (sentence, understood) in [
        (
            "Show me all tenants and their resource usage",
            "SHOW USAGE".to_string(),
        ),
        (
            "Show users for tenant 'Acme'",
            format!("SHOW USERS FOR {acme_key}"),
        ),
        (
            "What's the average response time for tenant 'TechCo' queries?",
            format!("SHOW RESPONSE TIME FOR {techco_key}"),
        ),
        (
            "Find slow queries specific to tenant 'StartUp'",
            format!("SHOW SLOW QUERIES FOR {}", w.key("startup")),
        ),
        (
            "Compare monthly active users across all tenants",
            "SHOW ACTIVE USERS".to_string(),
        ),
        (
            "Which tenants are approaching their plan limits?",
            "SHOW LIMITS".to_string(),
        ),
        (
            "Show revenue by tenant tier (free, pro, enterprise)",
            "SHOW REVENUE BY PLAN".to_string(),
        ),
    ] {
        let (_, notices, ok) = w.psql(sentence).await;
        assert!(ok, "{sentence}: {notices}");
        assert!(
            notices.contains(&format!("Understood as: {understood}")),
            "{sentence}: {notices}"
        );
    }
    // Role names are cluster-wide: on a server that already has a bigcorp tenant (another
    // catalog, an earlier run), the same sentence creates a uniquely named one instead.
    let taken = !admin("postgres")
        .await
        .query("SELECT 1 FROM pg_roles WHERE rolname = 'tg_bigcorp'", &[])
        .await
        .unwrap()
        .is_empty();
    let name = if taken {
        format!("BigCorp{}", w.prefix)
    } else {
        "BigCorp".into()
    };
    let big = name.to_lowercase();
    let (r, notices, ok) = w
        .psql(&format!(
            "Create a new tenant called '{name}' with premium plan"
        ))
        .await;
    assert!(
        ok && notices.contains(&format!("CREATE TENANT {big} NAME '{name}' PLAN pro")),
        "{notices}"
    );
    let f: Vec<&str> = r[0].split('|').collect();
    assert_eq!(
        (f[0], f[3], f[4]),
        (big.as_str(), "pro", format!("app@{big}").as_str())
    );
    let password = f[5].to_owned();
    // The new tenant serves clients once the proxy has seen the catalog change.
    let dsn = w.dsn(&format!("app@{big}"), &password, &w.db);
    let connected = eventually(Duration::from_secs(10), || {
        let dsn = dsn.clone();
        async move { tokio_postgres::connect(&dsn, NoTls).await.is_ok() }
    })
    .await;
    assert!(connected);
    let (_, notices, ok) = w
        .psql("Migrate tenant 'Acme' to a dedicated database instance")
        .await;
    // No dedicated instance is registered here: a clear error, the tenant stays put (the
    // move itself is tested in tests/moves.rs).
    assert!(
        !ok && notices.contains(&format!(
            "Understood as: MOVE TENANT {acme_key} TO DEDICATED"
        )) && notices.contains("no free dedicated instance"),
        "{notices}"
    );
    w.catalog.drop_tenant(&big, true, "test").await.unwrap();
    let _ = admin("postgres")
        .await
        .batch_execute(&format!("DROP ROLE IF EXISTS tg_{big}"))
        .await;

    // Comment forms.
    let (r, _, ok) = w.psql("/* admin: show tenants */").await;
    assert!(ok && r.len() >= 5, "{r:?}");
    let (_, notices, ok) = w
        .psql("-- which tenants are approaching their plan limits?")
        .await;
    assert!(
        ok && notices.contains("Understood as: SHOW LIMITS"),
        "{notices}"
    );

    // Destructive English is never run: the command is shown instead.
    let (r, notices, ok) = w.psql("please delete the Globex tenant").await;
    assert!(ok && notices.contains("Not run"), "{notices}");
    assert_eq!(r, vec![format!("DROP TENANT {}", w.key("globex"))]);
    assert!(w.proxy.proxy.directory().tenant(&w.key("globex")).is_some());

    // Bad input: a clear error and the closest commands, nothing run.
    let (_, err, ok) = w.psql("frobnicate the tenantz").await;
    assert!(
        !ok && err.contains("not an admin command") && err.contains("Did you mean"),
        "{err}"
    );
    let (_, err, ok) = w.psql("SHOW TENANT nosuch").await;
    assert!(!ok && err.contains("nosuch"), "{err}");
    let (_, err, ok) = w.psql("SHOW USAGE SINCE 'soon'").await;
    assert!(!ok && err.contains("interval"), "{err}");

    // tokio-postgres: simple and extended protocol, typed errors.
    let a = w.admin_client().await;
    let ext = a.query("SHOW PLANS", &[]).await.unwrap();
    assert_eq!(ext.len(), 4);
    assert_eq!(ext[0].get::<_, String>("plan"), "free");
    let stmt = a.prepare("SHOW TENANTS").await.unwrap();
    assert_eq!(stmt.columns()[0].name(), "key");
    assert_eq!(a.query(&stmt, &[]).await.unwrap().len(), 5);
    let simple = rows(&a.simple_query("SHOW FLAGS").await.unwrap());
    assert!(simple.is_empty());
    a.simple_query(&format!("SET FLAG beta = on FOR TENANT {acme_key}"))
        .await
        .unwrap();
    let flags = rows(
        &a.simple_query(&format!("SHOW FLAGS FOR TENANT {acme_key}"))
            .await
            .unwrap(),
    );
    assert_eq!(
        flags,
        vec![vec![acme_key.clone(), "beta".into(), "on".into()]]
    );
    let e = a
        .simple_query("SET FLAG read_only = maybe FOR TENANT x")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "3D000", "{e}");
    let e = a.query("bogus words here", &[]).await.unwrap_err();
    assert_eq!(code(&e), "42601");
    a.simple_query("SHOW STATS")
        .await
        .expect("usable after errors");

    // PAUSE holds only that tenant's new transactions; RESUME lets them go.
    a.simple_query(&format!("PAUSE TENANT {acme_key}"))
        .await
        .unwrap();
    let held = tokio::spawn(async move { acme.simple_query("SELECT 42").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!held.is_finished(), "acme waits while paused");
    techco
        .simple_query("SELECT 1")
        .await
        .expect("other tenants run");
    a.simple_query(&format!("RESUME TENANT {acme_key}"))
        .await
        .unwrap();
    let r = tokio::time::timeout(Duration::from_secs(5), held)
        .await
        .unwrap()
        .unwrap();
    assert!(r.is_ok());

    // KILL CLIENT ends one session.
    let clients = rows(&a.simple_query("SHOW CLIENTS").await.unwrap());
    let id = clients.iter().find(|c| c[1] == techco_key).unwrap()[0].clone();
    a.simple_query(&format!("KILL CLIENT {id}")).await.unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async {
            techco.simple_query("SELECT 1").await.is_err()
        })
        .await
    );
    w.finish().await;
}

#[tokio::test]
async fn only_admin_users_get_in() {
    let w = World::new().await;
    // A tenant's user: 42501 before any password exchange.
    let dsn = w.dsn(&format!("app@{}", w.key("acme")), "acme-pw", "admin");
    let e = tokio_postgres::connect(&dsn, NoTls).await.err().unwrap();
    assert_eq!(code(&e), "42501", "{e}");
    let e = tokio_postgres::connect(&w.dsn("nobody", "x", "admin"), NoTls)
        .await
        .err()
        .unwrap();
    assert_eq!(code(&e), "42501");
    // An admin with a wrong password: 28P01.
    let e = tokio_postgres::connect(&w.dsn("ops", "wrong", "admin"), NoTls)
        .await
        .err()
        .unwrap();
    assert_eq!(code(&e), "28P01");
    // An admin cannot use a tenant database through the admin login.
    assert!(
        tokio_postgres::connect(&w.dsn("ops", ADMIN_PW, &w.db), NoTls)
            .await
            .is_err()
    );
    w.finish().await;
}
