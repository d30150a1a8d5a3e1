//! Hostile and broken clients: malformed startup packets, oversized messages, silent
//! clients, TLS negotiation. The proxy answers with a clear error and stays up.

mod common;

use std::time::Duration;

use common::{code, Env};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Read whatever the proxy sends until it closes (bounded).
async fn read_all(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    out
}

/// Connect, send `bytes` at once, and read what the proxy sends until it closes.
async fn exchange(env: &Env, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(env.addr()).await.unwrap();
    s.write_all(bytes).await.unwrap();
    read_all(&mut s).await
}

fn sqlstate(reply: &[u8]) -> Option<String> {
    let pos = reply.iter().position(|&b| b == b'E')?;
    let body = &reply[pos + 5..];
    let mut i = 0;
    while i < body.len() && body[i] != 0 {
        let tag = body[i];
        let end = body[i + 1..].iter().position(|&b| b == 0)? + i + 1;
        if tag == b'C' {
            return Some(String::from_utf8_lossy(&body[i + 1..end]).into_owned());
        }
        i = end + 1;
    }
    None
}

#[tokio::test]
async fn malformed_startup_packets_get_08p01_and_close() {
    let env = Env::new().await;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "negative length",
            vec![0xff, 0xff, 0xff, 0xff, 0, 3, 0, 0],
            "08P01",
        ),
        (
            "huge length",
            [20_000i32.to_be_bytes().to_vec(), vec![0; 8]].concat(),
            "08P01",
        ),
        (
            "no terminator",
            [
                15i32.to_be_bytes().to_vec(),
                196_608i32.to_be_bytes().to_vec(),
                b"user\0a\0x".to_vec(),
            ]
            .concat(),
            "08P01",
        ),
        (
            "no user",
            [
                22i32.to_be_bytes().to_vec(),
                196_608i32.to_be_bytes().to_vec(),
                b"database\0d\0\0\0\0".to_vec(),
            ]
            .concat(),
            "08P01",
        ),
        (
            "protocol 2",
            [
                8i32.to_be_bytes().to_vec(),
                (2i32 << 16).to_be_bytes().to_vec(),
            ]
            .concat(),
            "0A000",
        ),
    ];
    for (name, bytes, want) in cases {
        let reply = exchange(&env, &bytes).await;
        assert_eq!(sqlstate(&reply).as_deref(), Some(want), "{name}: {reply:?}");
    }
    // truncated packet then close: no reply needed, proxy must survive
    let mut s = TcpStream::connect(env.addr()).await.unwrap();
    s.write_all(&[0, 0, 0, 50, 0, 3]).await.unwrap();
    drop(s);
    env.still_alive().await;
    env.finish().await;
}

fn startup_packet(user: &str) -> Vec<u8> {
    let mut body = 196_608i32.to_be_bytes().to_vec();
    body.extend_from_slice(format!("user\0{user}\0database\0tg\0\0").as_bytes());
    [((body.len() + 4) as i32).to_be_bytes().to_vec(), body].concat()
}

/// A message after startup: tag, length, body.
fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    [
        vec![tag],
        ((body.len() + 4) as i32).to_be_bytes().to_vec(),
        body.to_vec(),
    ]
    .concat()
}

fn query_message(sql: &str) -> Vec<u8> {
    message(b'Q', &[sql.as_bytes(), b"\0"].concat())
}

#[tokio::test]
async fn messages_sent_with_the_startup_packet_are_served_in_order() {
    // Trust auth: nothing to wait for, so a client may send everything at once, down to
    // its Terminate; as with PostgreSQL, what came before Terminate runs and is answered.
    let env = Env::with(|c| c.auth[0].method = tenantgate::config::AuthMethod::Trust).await;
    let bytes = [
        startup_packet("app@acme"),
        query_message("SELECT current_schema()"),
        query_message("CREATE TABLE pipelined AS SELECT 'second' AS x"),
        message(b'X', b""),
        query_message("DROP TABLE pipelined"),
    ]
    .concat();
    let reply = exchange(&env, &bytes).await;
    assert_eq!(sqlstate(&reply), None, "{reply:?}");
    let text = String::from_utf8_lossy(&reply);
    let (first, second) = (
        text.find("acme").expect(&text),
        text.find("SELECT 1").expect(&text),
    );
    assert!(first < second, "{text:?}");
    // login's ReadyForQuery and one per query; nothing after Terminate ran
    assert_eq!(
        reply.windows(6).filter(|w| w == b"Z\0\0\0\x05I").count(),
        3,
        "{text:?}"
    );
    let c = env.client("acme").await;
    let x: String = common::scalar(&c, "SELECT x FROM pipelined", &[]).await;
    assert_eq!(x, "second");
    env.still_alive().await;
    env.finish().await;
}

#[tokio::test]
async fn terminate_before_sync_ends_the_session_without_committing() {
    // Parse/Bind/Execute and Terminate with no Sync: PostgreSQL never commits such a
    // statement. The proxy must end the session (not wait for answers that cannot come)
    // and the row must not appear.
    let env = Env::with(|c| c.auth[0].method = tenantgate::config::AuthMethod::Trust).await;
    let c = env.client("acme").await;
    c.batch_execute("CREATE TABLE unsynced (x int)")
        .await
        .unwrap();
    let mut s = TcpStream::connect(env.addr()).await.unwrap();
    let bytes = [
        startup_packet("app@acme"),
        message(b'P', b"\0INSERT INTO unsynced VALUES (1)\0\0\0"),
        message(b'B', b"\0\0\0\0\0\0\0\0"),
        message(b'E', b"\0\0\0\0\0"),
        message(b'X', b""),
    ]
    .concat();
    s.write_all(&bytes).await.unwrap();
    let started = std::time::Instant::now();
    let reply = read_all(&mut s).await;
    // read_all gives up after 5 s; the proxy closes long before that
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "session not ended"
    );
    assert_eq!(sqlstate(&reply), None, "{reply:?}");
    let n: i64 = common::scalar(&c, "SELECT count(*) FROM unsynced", &[]).await;
    assert_eq!(n, 0);
    env.still_alive().await;
    env.finish().await;
}

#[tokio::test]
async fn a_statement_waiting_for_a_connection_runs_after_goodbye_but_not_after_a_hang_up() {
    // One server connection, held: both raw clients below wait in line for it. One sends
    // its INSERT and Terminate and closes (PostgreSQL would run the INSERT); the other
    // hangs up without Terminate (a crashed or timed-out client: it leaves the line).
    let env = Env::with(|c| {
        c.auth[0].method = tenantgate::config::AuthMethod::Trust;
        common::tenant_pool(c, "acme", tenantgate::config::PoolMode::Transaction, 1);
        c.pool.query_wait_timeout_ms = 30_000;
    })
    .await;
    let waiting = || env.pool("acme").waiting;
    let holder = env.client("acme").await;
    holder
        .batch_execute("CREATE TABLE goodbye (x text); BEGIN")
        .await
        .unwrap();
    let mut polite = TcpStream::connect(env.addr()).await.unwrap();
    let bytes = [
        startup_packet("app@acme"),
        query_message("INSERT INTO goodbye VALUES ('polite')"),
        message(b'X', b""),
    ]
    .concat();
    polite.write_all(&bytes).await.unwrap();
    drop(polite);
    let mut rude = TcpStream::connect(env.addr()).await.unwrap();
    let bytes = [
        startup_packet("app@acme"),
        query_message("INSERT INTO goodbye VALUES ('rude')"),
    ]
    .concat();
    rude.write_all(&bytes).await.unwrap();
    let both = common::eventually(Duration::from_secs(5), || async { waiting() == 2 }).await;
    assert!(both, "both clients wait in line");
    drop(rude);
    let left = common::eventually(Duration::from_secs(5), || async { waiting() == 1 }).await;
    assert!(left, "the client that hung up left the line");
    holder.batch_execute("COMMIT").await.unwrap();
    let rows = || async {
        let rows = holder
            .query("SELECT x FROM goodbye ORDER BY x", &[])
            .await
            .unwrap();
        rows.iter().map(|r| r.get(0)).collect::<Vec<String>>()
    };
    let ran = common::eventually(Duration::from_secs(5), || async {
        rows().await == ["polite"]
    })
    .await;
    assert!(ran, "the polite client's INSERT ran: {:?}", rows().await);
    assert_eq!(waiting(), 0);
    env.finish().await;
}

#[tokio::test]
async fn oversized_message_closes_only_that_client() {
    let env = Env::with(|c| c.limits.max_message_bytes = 4096).await;
    let c = env.client("acme").await;
    let big = format!("SELECT '{}'", "x".repeat(10_000));
    let e = c.simple_query(&big).await.unwrap_err();
    let db = e.as_db_error().map(|d| d.code().code().to_owned());
    assert_eq!(db.as_deref(), Some("08P01"), "{e}");
    assert!(c.is_closed() || c.simple_query("SELECT 1").await.is_err());
    // COPY data is streamed and not subject to the limit
    let c2 = env.client("acme").await;
    c2.batch_execute("CREATE TABLE big (t text)").await.unwrap();
    let sink = c2.copy_in("COPY big FROM STDIN").await.unwrap();
    let mut sink = std::pin::pin!(sink);
    use futures_util::SinkExt;
    let line = format!("{}\n", "y".repeat(100_000));
    sink.send(bytes::Bytes::from(line)).await.unwrap();
    assert_eq!(sink.finish().await.unwrap(), 1);
    env.still_alive().await;
    env.finish().await;
}

#[tokio::test]
async fn silent_client_is_dropped_after_login_timeout() {
    let env = Env::with(|c| c.limits.client_login_timeout_ms = 300).await;
    let mut s = TcpStream::connect(env.addr()).await.unwrap();
    let started = std::time::Instant::now();
    let reply = read_all(&mut s).await;
    assert!(started.elapsed() < Duration::from_secs(4));
    assert_eq!(sqlstate(&reply).as_deref(), Some("08006"));
    env.still_alive().await;
    env.finish().await;
}

#[tokio::test]
async fn ssl_and_gss_requests_are_declined_without_tls() {
    let env = Env::new().await;
    for code in [80_877_103i32, 80_877_104] {
        let mut s = TcpStream::connect(env.addr()).await.unwrap();
        s.write_all(&[8i32.to_be_bytes(), code.to_be_bytes()].concat())
            .await
            .unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.unwrap();
        assert_eq!(b[0], b'N');
    }
    // psql with sslmode=require fails cleanly, sslmode=prefer falls back
    let run = |mode: &'static str| {
        let dsn = format!("{} sslmode={mode}", env.dsn("app@acme", "acme-pw"));
        async move { common::psql(&dsn, &["-Atc", "SELECT 1"]).await }
    };
    assert!(!run("require").await.status.success());
    assert!(run("prefer").await.status.success());
    env.still_alive().await;
    env.finish().await;
}

#[tokio::test]
async fn tls_is_offered_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    // A self-signed certificate (a CA's serves as well as any).
    common::certs::make_ca(dir.path(), "self");
    let (cert, key) = (dir.path().join("self.crt"), dir.path().join("self.key"));
    let env = Env::with(|c| {
        c.tls.cert = cert.display().to_string();
        c.tls.key = key.display().to_string();
    })
    .await;
    let out = common::psql(
        &format!("{} sslmode=require", env.dsn("app@acme", "acme-pw")),
        &["-Atc", "SELECT current_schema()", "-c", "\\conninfo"],
    )
    .await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.starts_with("acme"), "{text}");
    assert!(text.contains("SSL connection"), "{text}");
    // SCRAM-SHA-256-PLUS: the password exchange is bound to our certificate
    let out = common::psql(
        &format!(
            "{} sslmode=require channel_binding=require",
            env.dsn("app@acme", "acme-pw")
        ),
        &["-Atc", "SELECT 1"],
    )
    .await;
    assert!(
        out.status.success(),
        "channel binding: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = common::psql(
        &format!(
            "{} sslmode=require channel_binding=require",
            env.dsn("app@acme", "wrong")
        ),
        &["-Atc", "SELECT 1"],
    )
    .await;
    assert!(!out.status.success());
    // bytes sent in the clear behind SSLRequest are refused, not read as if encrypted
    let ssl = [8i32.to_be_bytes(), 80_877_103i32.to_be_bytes()].concat();
    let reply = exchange(&env, &[ssl, startup_packet("app@acme")].concat()).await;
    assert_eq!(reply.first(), Some(&b'E'), "{reply:?}");
    assert_eq!(sqlstate(&reply).as_deref(), Some("08P01"), "{reply:?}");
    // plain connections still work when the client does not ask for TLS
    let out = common::psql(
        &format!("{} sslmode=disable", env.dsn("app@acme", "acme-pw")),
        &["-Atc", "SELECT 1"],
    )
    .await;
    assert!(out.status.success());
    env.finish().await;
}

/// A client's settings are applied with SET on each server connection: a value with
/// quotes and backslashes arrives intact and runs nothing. standard_conforming_strings
/// off, under which a backslash would escape a quote, is refused at login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_settings_cannot_inject_sql() {
    let env = Env::new().await;
    let evil = "x\\'; SET search_path = globex; --";
    let escaped: String = evil
        .chars()
        .flat_map(|c| {
            if c == '\\' || c == ' ' {
                vec!['\\', c]
            } else {
                vec![c]
            }
        })
        .collect();
    let connect = |options: String| {
        let mut cfg: tokio_postgres::Config = env.dsn("app@acme", "acme-pw").parse().unwrap();
        cfg.options(options);
        async move { cfg.connect(tokio_postgres::NoTls).await }
    };
    let e = connect(format!(
        "-c standard_conforming_strings=off -c application_name={escaped}"
    ))
    .await
    .err()
    .expect("refused");
    assert_eq!(code(&e), "0A000", "{e}");
    let (c, conn) = connect(format!("-c application_name={escaped}"))
        .await
        .unwrap();
    tokio::spawn(conn);
    let r = c
        .query_one(
            "SELECT current_setting('application_name'), current_setting('search_path')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.get::<_, String>(0), evil, "the value arrives intact");
    assert_eq!(r.get::<_, String>(1), "acme", "and nothing else ran");
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_statement_does_not_take_the_proxy_down() {
    let env = Env::new().await;
    let c = env.client("acme").await;
    let deep = format!("SELECT {} FROM globex.items", vec!["1"; 100_000].join("+"));
    let e = c.simple_query(&deep).await.unwrap_err();
    assert_eq!(
        e.as_db_error().map(|d| d.code().code()),
        Some("42501"),
        "{e}"
    );
    let deep_ok = format!("SELECT {}", vec!["1"; 50_000].join("+"));
    let _ = c.simple_query(&deep_ok).await; // PostgreSQL may refuse it (stack depth); either way
    env.still_alive().await;
    env.finish().await;
}

#[tokio::test]
async fn shutdown_drains_registered_sessions_and_ones_that_register_during_it() {
    use std::task::{Context, Waker};
    let env = Env::new().await;
    let p = &env.proxy.proxy;
    let cx = Context::from_waker(Waker::noop());
    // A connected client, idle: the drain ends it at once, with 57P01.
    let c = env.client("acme").await;
    let (early, before) = p.session_enter("acme");
    assert!(!before.poll(&cx).drain());
    p.shutdown();
    assert!(before.poll(&cx).drain() && !before.poll(&cx).end());
    // A login that gets past the listener while the shutdown begins is told too.
    let (late, after) = p.session_enter("acme");
    assert!(after.poll(&cx).drain());
    p.session_leave(early);
    p.session_leave(late);
    let e = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match c.simple_query("SELECT 1").await {
                Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(e) => return e,
            }
        }
    })
    .await
    .expect("the idle session ends");
    assert!(
        e.is_closed() || e.code().map(|c| c.code()) == Some("57P01"),
        "{e}"
    );
    env.finish().await;
}

#[tokio::test]
async fn close_and_sync_between_transactions_are_answered_like_postgresql() {
    // Answered by the proxy (no server is needed between transactions): a Close of a
    // statement or portal that may not exist is no error; a Close of another kind is an
    // error (08P01), after which nothing is answered until Sync; the session goes on.
    let env = Env::with(|c| c.auth[0].method = tenantgate::config::AuthMethod::Trust).await;
    let bytes = [
        startup_packet("app@acme"),
        message(b'C', b"Snever_prepared\0"),
        message(b'C', b"P\0"),
        message(b'S', b""),
        message(b'C', b"Xwhat\0"),
        message(b'C', b"Sskipped\0"),
        message(b'S', b""),
        query_message("SELECT 'still here'"),
        message(b'X', b""),
    ]
    .concat();
    let reply = exchange(&env, &bytes).await;
    let text = String::from_utf8_lossy(&reply);
    // (not `sqlstate`: the ParameterStatus values ahead of it hold an 'E' of their own)
    let error_at = reply
        .windows(21)
        .position(|w| w == b"SERROR\0VERROR\0C08P01\0")
        .expect(&text);
    // Two CloseCompletes, then the error; the Close after it is skipped.
    assert_eq!(
        reply.windows(5).filter(|w| w == b"3\0\0\0\x04").count(),
        2,
        "{text:?}"
    );
    let last_close = reply.windows(5).rposition(|w| w == b"3\0\0\0\x04").unwrap();
    assert!(last_close < error_at, "{text:?}");
    // Login's ReadyForQuery, one per Sync and one for the query.
    assert_eq!(
        reply.windows(6).filter(|w| w == b"Z\0\0\0\x05I").count(),
        4,
        "{text:?}"
    );
    assert!(text.contains("still here"), "{text:?}");
    env.still_alive().await;
    env.finish().await;
}

#[tokio::test]
async fn a_query_with_a_nul_inside_its_text_runs_nothing_and_the_session_goes_on() {
    // The checks read a Query's text up to the message's last byte; PostgreSQL refuses a
    // Query whose text ends before that (08P01): neither statement runs.
    let env = Env::with(|c| c.auth[0].method = tenantgate::config::AuthMethod::Trust).await;
    let bytes = [
        startup_packet("app@acme"),
        message(b'Q', b"SELECT 'first-part'\0SELECT 'second-part'\0"),
        query_message("SELECT 'still here'"),
        message(b'X', b""),
    ]
    .concat();
    let reply = exchange(&env, &bytes).await;
    let text = String::from_utf8_lossy(&reply);
    assert!(text.contains("C08P01\0"), "{text:?}");
    assert!(
        !text.contains("first-part") && !text.contains("second-part"),
        "{text:?}"
    );
    assert!(text.contains("still here"), "{text:?}");
    env.still_alive().await;
    env.finish().await;
}

/// Keepalive timers of the established TCP sockets `ss` lists for `filter`, in seconds
/// (u64::MAX for a minute or more), with the owning process id (`None`: no keepalive
/// timer on that socket). Once no socket has data in flight (whose retransmission timer
/// `ss` would show instead), within 5 s.
async fn keepalive_timers(filter: &str) -> Vec<(Option<u64>, Option<u32>)> {
    let mut last = Vec::new();
    for _ in 0..50 {
        let out = std::process::Command::new("ss")
            .args(["-tnopH", "state", "established", filter])
            .output()
            .expect("ss (iproute2) runs");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !text.contains("timer:(on,") {
            return parse_keepalive_timers(&text);
        }
        last = parse_keepalive_timers(&text);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    last
}

fn parse_keepalive_timers(ss: &str) -> Vec<(Option<u64>, Option<u32>)> {
    ss.lines()
        .map(|l| {
            // "36sec", "950ms"; a minute or more ("1min16sec", "80min") as u64::MAX.
            let timer = l.split("timer:(keepalive,").nth(1).map(|t| {
                let t = t.split(',').next().unwrap_or_default();
                match (t.strip_suffix("sec"), t.strip_suffix("ms")) {
                    (Some(s), _) if s.bytes().all(|b| b.is_ascii_digit()) => {
                        s.parse().unwrap_or(u64::MAX)
                    }
                    (_, Some(ms)) if ms.bytes().all(|b| b.is_ascii_digit()) => 0,
                    _ => u64::MAX,
                }
            });
            let pid = l
                .split("pid=")
                .nth(1)
                .and_then(|p| p.split(',').next())
                .and_then(|p| p.parse().ok());
            (timer, pid)
        })
        .collect()
}

/// Keepalive interval (s), probe count and user timeout (ms) of this process's TCP
/// sockets whose (local port, peer port) `pick` selects.
fn socket_options(pick: impl Fn(u16, u16) -> bool) -> Vec<(u64, u32, u128)> {
    use std::os::fd::BorrowedFd;
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let is_socket = std::fs::read_link(entry.path())
            .is_ok_and(|l| l.to_string_lossy().starts_with("socket:"));
        let Some(fd) = entry.file_name().to_str().and_then(|f| f.parse().ok()) else {
            continue;
        };
        if !is_socket {
            continue;
        }
        // SAFETY: only read through (getsockopt/getsockname) while this loop runs; a
        // descriptor closed meanwhile gives an error, which skips it.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let s = socket2::SockRef::from(&fd);
        let ports = (s.local_addr(), s.peer_addr());
        let (Ok(local), Ok(peer)) = ports else {
            continue;
        };
        let (Some(local), Some(peer)) = (local.as_socket(), peer.as_socket()) else {
            continue;
        };
        if !pick(local.port(), peer.port()) {
            continue;
        }
        if let (Ok(i), Ok(n), Ok(u)) = (
            s.tcp_keepalive_interval(),
            s.tcp_keepalive_retries(),
            s.tcp_user_timeout(),
        ) {
            found.push((i.as_secs(), n, u.map_or(0, |u| u.as_millis())));
        }
    }
    found
}

/// `[tcp]`: keepalive probes on the proxy's client sockets and on its server
/// connections, after the configured idle time (the system's default is two hours, and
/// PostgreSQL's and tokio-postgres's own sockets use that), and none when turned off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_and_server_sockets_get_the_configured_keepalive() {
    let env = Env::with(|c| {
        c.tcp.keepalive_idle_s = 37;
        c.tcp.keepalive_interval_s = 5;
        c.tcp.keepalive_count = 3;
        c.tcp.user_timeout_ms = 20_000;
    })
    .await;
    let c = env.client("acme").await;
    c.simple_query("SELECT 1").await.unwrap();
    let port = env.addr().port();
    let clients = keepalive_timers(&format!("( sport = :{port} )")).await;
    assert_eq!(clients.len(), 1, "{clients:?}");
    assert!(
        clients[0].0.is_some_and(|s| s <= 37),
        "client socket: {clients:?}"
    );
    // The proxy's server connections (this process's sockets to PostgreSQL with a timer
    // of at most 37 s; the test's own admin connections have tokio-postgres's two hours).
    let me = std::process::id();
    let servers = keepalive_timers("( dport = :5432 )").await;
    assert!(
        servers
            .iter()
            .any(|(t, pid)| *pid == Some(me) && t.is_some_and(|s| s <= 37)),
        "no server connection with the configured keepalive: {servers:?}"
    );
    // The probe interval, count and user timeout, read back from the proxy's sockets (they
    // are this process's file descriptors).
    let opts = socket_options(|local, _| local == port);
    assert_eq!(opts, [(5, 3, 20_000)], "client socket");
    let opts = socket_options(|_, peer| peer == 5432);
    assert!(
        opts.contains(&(5, 3, 20_000)),
        "server connections: {opts:?}"
    );
    drop(c);
    env.finish().await;

    let env = Env::with(|c| c.tcp.keepalive = false).await;
    let c = env.client("acme").await;
    c.simple_query("SELECT 1").await.unwrap();
    let clients = keepalive_timers(&format!("( sport = :{} )", env.addr().port())).await;
    assert_eq!(clients.len(), 1, "{clients:?}");
    assert_eq!(clients[0].0, None, "keepalive off: {clients:?}");
    drop(c);
    env.finish().await;
}

/// A renewed client certificate is picked up by a reload: new connections get the new
/// one (checked against each CA with verify-ca, and with channel binding, whose hash
/// follows the certificate), the connection made before keeps working, and unreadable
/// files refuse the reload and keep the running certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_reads_a_renewed_tls_certificate() {
    use common::certs::{make_ca, make_server_cert};
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    for d in [&a, &b] {
        std::fs::create_dir(d).unwrap();
        make_ca(d, "ca");
        make_server_cert(d, "ca");
    }
    let (live_crt, live_key) = (dir.path().join("live.crt"), dir.path().join("live.key"));
    let install = |from: &std::path::Path| {
        std::fs::copy(from.join("server.crt"), &live_crt).unwrap();
        std::fs::copy(from.join("server.key"), &live_key).unwrap();
    };
    install(&a);
    let db = common::TestDb::new().await;
    let mut cfg = db.config();
    cfg.tls.cert = live_crt.display().to_string();
    cfg.tls.key = live_key.display().to_string();
    let path = dir.path().join("tenantgate.toml");
    std::fs::write(&path, toml::to_string(&cfg).unwrap()).unwrap();
    let proxy = tenantgate::app::start(cfg, Some(path)).await.unwrap();
    let dsn = format!(
        "host=127.0.0.1 port={} user=app@acme password=acme-pw dbname={} connect_timeout=10",
        proxy.addr.port(),
        db.db
    );
    let trusting = |ca: &std::path::Path, extra: &str| {
        format!(
            "{dsn} sslmode=verify-ca sslrootcert={} {extra}",
            ca.join("ca.crt").display()
        )
    };
    let works = |conninfo: String| async move {
        common::psql(&conninfo, &["-Atc", "SELECT 1"])
            .await
            .status
            .success()
    };
    assert!(works(trusting(&a, "")).await);
    assert!(!works(trusting(&b, "")).await);
    let kept = tenantgate::catalog::conninfo::connect(&format!("{dsn} sslmode=require"))
        .await
        .unwrap();

    install(&b);
    proxy.proxy.reload().unwrap();
    assert!(works(trusting(&b, "")).await, "renewed certificate served");
    assert!(
        !works(trusting(&a, "")).await,
        "old certificate still served"
    );
    assert!(
        works(trusting(&b, "channel_binding=require")).await,
        "channel binding with the renewed certificate"
    );
    kept.simple_query("SELECT 1")
        .await
        .expect("a connection made before the reload keeps working");

    std::fs::write(&live_crt, "not a certificate").unwrap();
    let e = proxy.proxy.reload().unwrap_err().to_string();
    assert!(e.contains("tls"), "{e}");
    assert!(
        works(trusting(&b, "")).await,
        "the running certificate kept"
    );
    proxy.shutdown().await;
    db.cleanup().await;
}

/// `reuse_port`: a second proxy binds the address the first one listens on, and when the
/// first shuts down new clients are served by the second. Without it the second cannot
/// bind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reuse_port_lets_a_new_process_take_over_the_address() {
    let db = common::TestDb::new().await;
    let mut cfg = db.config();
    cfg.listen = "127.0.0.1:0".into();
    let alone = tenantgate::app::start(cfg.clone(), None).await.unwrap();
    let mut taken = cfg.clone();
    taken.listen = alone.addr.to_string();
    assert!(
        tenantgate::app::start(taken, None).await.is_err(),
        "bound an address in use without reuse_port"
    );
    alone.shutdown().await;

    cfg.reuse_port = true;
    let old = tenantgate::app::start(cfg.clone(), None).await.unwrap();
    cfg.listen = old.addr.to_string();
    let new = tenantgate::app::start(cfg, None).await.unwrap();
    let port = old.addr.port();
    let serve = |n: usize| {
        let dsn = format!(
            "host=127.0.0.1 port={port} user=app@acme password=acme-pw dbname={} connect_timeout=5",
            db.db
        );
        async move {
            for i in 0..n {
                let (c, conn) = tokio_postgres::connect(&dsn, tokio_postgres::NoTls)
                    .await
                    .unwrap_or_else(|e| panic!("connection {i} refused: {e}"));
                tokio::spawn(conn);
                c.simple_query("SELECT 1").await.unwrap();
            }
        }
    };
    serve(20).await;
    // The old process stops listening and drains; new clients go to the new one. (A
    // client caught in the old socket's accept queue at that instant is reset unless
    // net.ipv4.tcp_migrate_req = 1, which moves it to the new socket: README.)
    old.shutdown().await;
    serve(20).await;
    new.shutdown().await;
    db.cleanup().await;
}
