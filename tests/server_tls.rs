//! TLS from the proxy to PostgreSQL, per instance, with libpq's sslmode meanings: against
//! a private server that takes TCP logins only over TLS (and the tenant's role only with
//! SCRAM), a private server without TLS, and a fake that agrees to TLS and then fails the
//! handshake.

mod common;

use std::path::Path;

use common::certs::{make_ca, make_server_cert};
use common::code;
use common::pg_instance::PgInstance;
use futures_util::SinkExt;
use tenantgate::config::{AuthMethod, AuthRule, Config, InstanceConfig, TenantConfig};
use tokio_postgres::NoTls;

async fn superuser(pg: &PgInstance) -> tokio_postgres::Client {
    // Over the socket directory would need its path; TCP with TLS is what the server takes.
    tenantgate::catalog::conninfo::connect(&format!("{} sslmode=require", pg.url("postgres")))
        .await
        .unwrap()
}

fn instance(name: &str, host: &str, port: u16, mode: &str, root: &Path) -> InstanceConfig {
    InstanceConfig {
        sslmode: mode.into(),
        sslrootcert: if root.as_os_str().is_empty() {
            String::new()
        } else {
            root.display().to_string()
        },
        ..common::instance_config(name, host, port, "postgres")
    }
}

/// Tenant `key` in schema `acme` of `instance`, as role `tg_acme` with `password`.
fn tenant(key: &str, instance: &str, password: &str) -> TenantConfig {
    TenantConfig {
        backend_password: password.into(),
        pool_size: 2,
        ..common::tenant_config(key, instance, "acme", "tg_acme", "x")
    }
}

async fn client(port: u16, tenant: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    common::try_connect(&format!(
        "host=127.0.0.1 port={port} user=app@{tenant} password=x dbname=postgres"
    ))
    .await
}

/// `c` runs `pg_sleep(30)` and is cancelled through the proxy (cancels are sent until the
/// statement has started and ended): 57014.
async fn sleep_cancelled(c: tokio_postgres::Client) {
    let token = c.cancel_token();
    let sleeper = tokio::spawn(async move { c.simple_query("SELECT pg_sleep(30)").await });
    let mut cancels = 0;
    while !sleeper.is_finished() && cancels < 40 {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        token.cancel_query(NoTls).await.unwrap();
        cancels += 1;
    }
    let e = tokio::time::timeout(std::time::Duration::from_secs(10), sleeper)
        .await
        .expect("cancelled in time")
        .unwrap()
        .unwrap_err();
    assert_eq!(code(&e), "57014", "{e}");
}

/// TCP logins only over TLS, trusted.
const TLS_ONLY: &str = "local all all trust\n\
                        hostssl all all 127.0.0.1/32 trust\n\
                        host all all 127.0.0.1/32 reject\n";

/// A private PostgreSQL with TLS and `hba` as its whole pg_hba.conf. Its certificate names
/// localhost and is signed by `ca.crt` of the returned directory, which also holds an
/// unrelated `other_ca.crt`.
async fn tls_server(hba: &'static str) -> (tempfile::TempDir, PgInstance) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_ca(d, "ca");
    make_ca(d, "other_ca");
    make_server_cert(d, "ca");
    let (cert, key) = (d.join("server.crt"), d.join("server.key"));
    let pg = tokio::task::spawn_blocking(move || PgInstance::start_tls(&cert, &key, hba))
        .await
        .unwrap();
    (dir, pg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_connections_use_tls_as_each_instance_asks() {
    let _ = common::tracing_subscriber_init();
    // TCP logins only over TLS; the tenant's role only with SCRAM (channel binding offered).
    let hba = "local all all trust\n\
               hostssl all tg_acme 127.0.0.1/32 scram-sha-256\n\
               hostssl all all 127.0.0.1/32 trust\n\
               host all all 127.0.0.1/32 reject\n";
    let (dir, tls_pg) = tls_server(hba).await;
    let d = dir.path();
    let plain_pg = tokio::task::spawn_blocking(PgInstance::start)
        .await
        .unwrap();
    superuser(&tls_pg)
        .await
        .batch_execute(
            "SET password_encryption = 'scram-sha-256';
             CREATE ROLE tg_acme LOGIN PASSWORD 'backend-pw'; CREATE SCHEMA acme AUTHORIZATION tg_acme;
             CREATE TABLE acme.items (id int); GRANT ALL ON acme.items TO tg_acme;
             INSERT INTO acme.items VALUES (1), (2);",
        )
        .await
        .unwrap();
    let c = common::connect_dsn(&plain_pg.url("postgres")).await;
    c.batch_execute(
        "CREATE ROLE tg_acme LOGIN; CREATE SCHEMA acme AUTHORIZATION tg_acme;
         CREATE TABLE acme.items (id int); GRANT ALL ON acme.items TO tg_acme;
         INSERT INTO acme.items VALUES (7);",
    )
    .await
    .unwrap();

    let (t, p, none) = (tls_pg.port, plain_pg.port, Path::new(""));
    let (ca, other) = (d.join("ca.crt"), d.join("other_ca.crt"));
    let mut cfg = Config {
        listen: "127.0.0.1:0".into(),
        auth: vec![AuthRule {
            user: "*".into(),
            address: "*".parse().unwrap(),
            method: AuthMethod::Trust,
        }],
        instances: vec![
            instance("req", "127.0.0.1", t, "require", none),
            instance("pref", "127.0.0.1", t, "prefer", none),
            instance("full", "localhost", t, "verify-full", &ca),
            instance("ca_only", "127.0.0.1", t, "verify-ca", &ca),
            instance("full_ip", "127.0.0.1", t, "verify-full", &ca),
            instance("wrong_ca", "localhost", t, "verify-full", &other),
            instance("req_ca", "localhost", t, "require", &other),
            instance("off", "127.0.0.1", t, "disable", none),
            instance("plain_pref", "127.0.0.1", p, "prefer", none),
            instance("plain_req", "127.0.0.1", p, "require", none),
            instance(
                "rotated",
                "localhost",
                t,
                "verify-full",
                &d.join("live_ca.crt"),
            ),
        ],
        tenants: vec![
            tenant("req", "req", "backend-pw"),
            tenant("pref", "pref", "backend-pw"),
            tenant("full", "full", "backend-pw"),
            tenant("ca_only", "ca_only", "backend-pw"),
            tenant("full_ip", "full_ip", "backend-pw"),
            tenant("wrong_ca", "wrong_ca", "backend-pw"),
            tenant("req_ca", "req_ca", "backend-pw"),
            tenant("off", "off", "backend-pw"),
            tenant("plain_pref", "plain_pref", ""),
            tenant("plain_req", "plain_req", ""),
            tenant("rotated", "rotated", "backend-pw"),
        ],
        ..Config::default()
    };
    cfg.pool.connect_timeout_ms = 3000;
    cfg.telemetry.dir = common::scratch_dir("server_tls");
    // The CA file of instance "rotated" trusts the wrong CA until it is renewed.
    std::fs::copy(d.join("other_ca.crt"), d.join("live_ca.crt")).unwrap();
    let path = d.join("tenantgate.toml");
    std::fs::write(&path, toml::to_string(&cfg).unwrap()).unwrap();
    let proxy = tenantgate::app::start(cfg, Some(path)).await.unwrap();
    let port = proxy.addr.port();

    // Encrypted, the exchange bound to the certificate (the server offers -PLUS over TLS),
    // rows from the tenant's schema, across several statements and a transaction.
    for key in ["req", "pref", "full", "ca_only"] {
        let c = client(port, key)
            .await
            .unwrap_or_else(|e| panic!("{key}: {e}"));
        let row = c
            .query_one(
                "SELECT s.ssl, (SELECT count(*) FROM items)
                   FROM pg_stat_ssl s WHERE s.pid = pg_backend_pid()",
                &[],
            )
            .await
            .unwrap_or_else(|e| panic!("{key}: {e}"));
        assert!(
            row.get::<_, bool>(0),
            "{key}: server connection not encrypted"
        );
        assert_eq!(row.get::<_, i64>(1), 2, "{key}");
        c.batch_execute("BEGIN; INSERT INTO items VALUES (3); ROLLBACK")
            .await
            .unwrap();
        let big: i64 = c
            .query_one(
                "SELECT sum(length(repeat('x', g))) FROM generate_series(1, 3000) g",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(big, 4_501_500, "{key}");
        let rows = c
            .query(
                "SELECT repeat('y', 100000) FROM generate_series(1, 20)",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(rows.len(), 20, "{key}: a large result over TLS");
    }
    // Client to server in bulk: 7 MB of COPY data through the TLS writer, which holds
    // what the socket does not take until it is flushed.
    let c = client(port, "req").await.unwrap();
    c.batch_execute("BEGIN").await.unwrap();
    let sink = c.copy_in("COPY items FROM STDIN").await.unwrap();
    let mut sink = std::pin::pin!(sink);
    let chunk = bytes::Bytes::from("123456\n".repeat(100_000));
    for _ in 0..10 {
        sink.send(chunk.clone()).await.unwrap();
    }
    assert_eq!(sink.finish().await.unwrap(), 1_000_000);
    let n: i64 = c
        .query_one("SELECT count(*) FROM items", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1_000_002);
    c.batch_execute("ROLLBACK").await.unwrap();
    // A large message written while the server is busy and not reading: the socket fills,
    // the TLS writer keeps the tail, and only a flush once the server reads again sends
    // it (without one, both sides would wait for ever).
    let big = "x".repeat(16 << 20);
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&big];
    let (slept, len) = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        tokio::join!(
            c.simple_query("SELECT pg_sleep(1)"),
            c.query_one("SELECT length($1::text)", &params)
        )
    })
    .await
    .expect("the large message reached the server");
    slept.unwrap();
    assert_eq!(len.unwrap().get::<_, i32>(0), 16 << 20);
    // A server that reads slowly (a trigger sleeps per row of a COPY of 20 MB): the
    // socket stays full, so the last write leaves bytes in the TLS writer that only a
    // flush sends.
    c.batch_execute(
        "CREATE TABLE wide (t text);
         CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN PERFORM pg_sleep(0.002); RETURN NULL; END $$;
         CREATE TRIGGER slow BEFORE INSERT ON wide FOR EACH ROW EXECUTE FUNCTION slow();",
    )
    .await
    .unwrap();
    let copied = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        let sink = c.copy_in("COPY wide FROM STDIN").await.unwrap();
        let mut sink = std::pin::pin!(sink);
        let row = bytes::Bytes::from(format!("{}\n", "w".repeat(20_000)));
        for _ in 0..1000 {
            sink.send(row.clone()).await.unwrap();
        }
        sink.finish().await.unwrap()
    })
    .await
    .expect("the COPY's last bytes reached the server");
    assert_eq!(copied, 0, "the trigger keeps the rows out");
    // A cancel reaches the statement running on the encrypted connection.
    sleep_cancelled(c).await;
    // The server refuses non-TLS logins: a plain connection is turned away (08004, the
    // server rejected the proxy's login).
    let Err(e) = client(port, "off").await else {
        panic!("plain login accepted")
    };
    assert_eq!(code(&e), "08004", "{e}");
    // Certificates that do not check out: another CA (also for require with a root
    // certificate, as libpq), or verify-full by an address the certificate does not name.
    for key in ["wrong_ca", "req_ca", "full_ip"] {
        let Err(e) = client(port, key).await else {
            panic!("{key}: certificate accepted")
        };
        assert_eq!(code(&e), "08006", "{key}: {e}");
    }
    // A server without TLS: prefer falls back to a plain connection, require refuses.
    let c = client(port, "plain_pref").await.unwrap();
    let n: i64 = c
        .query_one("SELECT count(*) FROM items", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    let Err(e) = client(port, "plain_req").await else {
        panic!("require accepted a server without TLS")
    };
    assert_eq!(code(&e), "08006", "{e}");
    // A renewed root certificate file is read again at reload.
    let Err(e) = client(port, "rotated").await else {
        panic!("certificate of another CA accepted")
    };
    assert_eq!(code(&e), "08006", "{e}");
    std::fs::copy(d.join("ca.crt"), d.join("live_ca.crt")).unwrap();
    proxy.proxy.reload().unwrap();
    let c = client(port, "rotated")
        .await
        .expect("renewed CA read at reload");
    c.simple_query("SELECT 1").await.unwrap();
    // The proxy is still serving.
    assert!(client(port, "full").await.is_ok());
    proxy.shutdown().await;
}

#[test]
fn an_unknown_sslmode_or_a_verifying_mode_without_roots_is_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let write = |body: &str| {
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            format!("catalog_url = \"\"\n[[instances]]\nname = \"i\"\n{body}\n"),
        )
        .unwrap();
        tenantgate::config::load::load(Some(&p))
    };
    let e = write("sslmode = \"allow\"").unwrap_err().to_string();
    assert!(
        e.contains("sslmode \\\"allow\\\"") || e.contains("sslmode \"allow\""),
        "{e}"
    );
    let e = write("sslmode = \"verify-full\"").unwrap_err().to_string();
    assert!(e.contains("needs sslrootcert"), "{e}");
    assert!(write("sslmode = \"require\"").is_ok());
    // The public roots: verify-full by default, nothing weaker (libpq 16).
    let e = write("sslmode = \"require\"\nsslrootcert = \"system\"")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("sslrootcert=system needs sslmode verify-full"),
        "{e}"
    );
    let c = write("sslrootcert = \"system\"").unwrap();
    assert_eq!(
        c.instances[0].tls().mode,
        tenantgate::backend::tls::SslMode::VerifyFull
    );
}

/// The catalog's connection strings take libpq's sslmode verify-ca/verify-full and
/// sslrootcert (tokio-postgres reads neither): a catalog on a server that takes TCP logins
/// only over TLS, reached by `verify-full` against the CA of its localhost certificate, is
/// set up, provisions a tenant and feeds a proxy whose server connections to that
/// instance verify the same way. Another CA, the public roots (`sslrootcert=system`) and
/// verify-full by an address the certificate does not name are refused with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_urls_verify_the_server_certificate_as_libpq() {
    use tenantgate::catalog::provision::NewTenant;
    use tenantgate::catalog::Catalog;
    let _ = common::tracing_subscriber_init();
    let (dir, pg) = tls_server(TLS_ONLY).await;
    let d = dir.path();
    let url = |host: &str, query: String| {
        format!("postgresql://postgres@{host}:{}/postgres?{query}", pg.port)
    };
    let ca = d.join("ca.crt").display().to_string();
    let other = d.join("other_ca.crt").display().to_string();
    // Percent-encoded, as a URL's parameters may be.
    let verified = url(
        "localhost",
        format!(
            "application_name=tg%20catalog&sslmode=verify-full&sslrootcert={}",
            ca.replace('/', "%2F")
        ),
    );

    let secret = tenantgate::catalog::crypto::SecretKey::generate();
    let catalog = Catalog::connect(&verified, &secret).await.unwrap();
    catalog.setup().await.unwrap();
    let c = catalog.pool().get().await.unwrap();
    let row = c
        .query_one(
            "SELECT ssl, current_setting('application_name') FROM pg_stat_ssl \
             WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert!(
        row.get::<_, bool>(0),
        "the catalog connection is not encrypted"
    );
    assert_eq!(row.get::<_, String>(1), "tg catalog");
    drop(c);
    let t = catalog
        .create_tenant(&NewTenant {
            key: "vacme".into(),
            display_name: None,
            plan: "pro".into(),
            instance: None,
            user: "app".into(),
            password: Some("x".into()),
            actor: "test".into(),
        })
        .await
        .unwrap();

    let cfg = common::catalog_db::proxy_config(&verified, &secret, "tls_catalog");
    let proxy = tenantgate::app::start(cfg, None).await.unwrap();
    let port = proxy.addr.port();
    let c = client(port, &t.key).await.unwrap();
    let ssl: bool = c
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(ssl, "the proxy's server connection is not encrypted");
    proxy.shutdown().await;

    let refused = |u: String| {
        let catalog = catalog.clone();
        async move {
            catalog
                .instance_client(&u)
                .await
                .map(|_| ())
                .unwrap_err()
                .to_string()
        }
    };
    let e = refused(url(
        "localhost",
        format!("sslmode=verify-full&sslrootcert={other}"),
    ))
    .await;
    assert!(e.contains("certificate"), "{e}");
    let e = refused(url("localhost", "sslrootcert=system".into())).await;
    assert!(e.contains("certificate"), "{e}");
    let e = refused(url(
        "127.0.0.1",
        format!("sslmode=verify-full&sslrootcert={ca}"),
    ))
    .await;
    assert!(e.contains("certificate"), "{e}");
    // verify-ca does not compare the name.
    catalog
        .instance_client(&url(
            "127.0.0.1",
            format!("sslmode=verify-ca&sslrootcert={ca}"),
        ))
        .await
        .unwrap();
    // And require with a root file checks the chain, as libpq does.
    let e = refused(url(
        "localhost",
        format!("sslmode=require&sslrootcert={other}"),
    ))
    .await;
    assert!(e.contains("certificate"), "{e}");
}

/// A server that says 'S' to SSLRequest and then does not speak TLS: prefer retries
/// without TLS, as libpq does, while require refuses. The fake answers the plain
/// connection by relaying it to the shared PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefer_falls_back_to_plain_when_the_handshake_fails() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fake = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fake_port = fake.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = fake.accept().await {
            tokio::spawn(async move {
                let mut first = [0u8; 8];
                if s.read_exact(&mut first).await.is_err() {
                    return;
                }
                if first == [0, 0, 0, 8, 4, 210, 22, 47] {
                    // SSLRequest: agree, then send what no TLS client can read.
                    let _ = s.write_all(b"Snot a TLS server hello\n").await;
                    return;
                }
                let Ok(mut pg) = tokio::net::TcpStream::connect("127.0.0.1:5432").await else {
                    return;
                };
                if pg.write_all(&first).await.is_ok() {
                    let _ = tokio::io::copy_bidirectional(&mut s, &mut pg).await;
                }
            });
        }
    });
    let env = common::Env::with(|c| {
        let mut req = c.instances[0].clone();
        c.instances[0].port = fake_port;
        c.instances[0].sslmode = "prefer".into();
        req.name = "fake_req".into();
        req.port = fake_port;
        req.sslmode = "require".into();
        c.instances.push(req);
        c.tenants[1].instance = "fake_req".into();
    })
    .await;
    // acme: prefer; the handshake fails, the retry without TLS serves the tenant's rows.
    let c = env.client("acme").await;
    let n: i64 = c
        .query_one("SELECT count(*) FROM items WHERE owner = 'acme'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 10);
    // globex: require; the failed handshake is a failed connection.
    let Err(e) = env.try_client("app@globex", "globex-pw").await else {
        panic!("require accepted a failed handshake")
    };
    assert_eq!(code(&e), "08006", "{e}");
    env.finish().await;
}

/// A cancel for an encrypted server connection goes encrypted too (as libpq 17 and
/// PgBouncer send them): a relay in front of the TLS-only server records how each
/// connection to it begins. The statement is cancelled (57014), and every connection, the
/// cancel's included, began with an SSLRequest; a cancel sent in the clear would show as
/// a CancelRequest code (80877102).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_requests_for_encrypted_connections_go_encrypted() {
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const SSL_REQUEST: u32 = 80877103;
    let _ = common::tracing_subscriber_init();
    let (_dir, pg) = tls_server(TLS_ONLY).await;
    superuser(&pg)
        .await
        .batch_execute("CREATE ROLE tg_acme LOGIN; CREATE SCHEMA acme AUTHORIZATION tg_acme;")
        .await
        .unwrap();

    let relay = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay_port = relay.local_addr().unwrap().port();
    let firsts: Arc<Mutex<Vec<u32>>> = Arc::default();
    let (seen, pg_port) = (firsts.clone(), pg.port);
    tokio::spawn(async move {
        while let Ok((mut c, _)) = relay.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                // Length and code: all an SSLRequest is, the start of a CancelRequest.
                let mut head = [0u8; 8];
                if c.read_exact(&mut head).await.is_err() {
                    return;
                }
                seen.lock()
                    .unwrap()
                    .push(u32::from_be_bytes(head[4..].try_into().unwrap()));
                let mut s = tokio::net::TcpStream::connect(("127.0.0.1", pg_port))
                    .await
                    .unwrap();
                s.write_all(&head).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut c, &mut s).await;
            });
        }
    });

    let cfg = Config {
        listen: "127.0.0.1:0".into(),
        auth: vec![AuthRule {
            user: "*".into(),
            address: "*".parse().unwrap(),
            method: AuthMethod::Trust,
        }],
        instances: vec![instance(
            "relayed",
            "127.0.0.1",
            relay_port,
            "require",
            Path::new(""),
        )],
        tenants: vec![tenant("acme", "relayed", "")],
        ..Config::default()
    };
    let proxy = tenantgate::app::start(cfg, None).await.unwrap();
    let c = client(proxy.addr.port(), "acme").await.unwrap();
    sleep_cancelled(c).await;
    // The cancel's connection is recorded once the relay has read its first bytes.
    assert!(
        common::eventually(std::time::Duration::from_secs(5), || {
            let n = firsts.lock().unwrap().len();
            async move { n >= 2 }
        })
        .await,
        "no cancel connection reached the server: {:?}",
        firsts.lock().unwrap()
    );
    let firsts = firsts.lock().unwrap().clone();
    assert!(
        firsts.iter().all(|&code| code == SSL_REQUEST),
        "a connection began without TLS: {firsts:?}"
    );
    proxy.shutdown().await;
}
