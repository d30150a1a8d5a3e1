//! One server connection: connect, authenticate as the tenant's backend role, and track the
//! session state the proxy must restore (settings, prepared statements, transaction status).

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use foldhash::{HashMap, HashMapExt};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use rustls::ClientConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use super::prepared::PreparedCache;
use super::settings::ClientSettings;
use super::stream::ServerStream;
use super::tls::SslMode;
use crate::catalog::Placement;
use crate::config::TcpConfig;
use crate::protocol::{frame, write};

/// Why a server connection could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("could not connect to {addr}: {source}")]
    Connect { addr: String, source: io::Error },
    #[error("timed out connecting to the server")]
    Timeout,
    #[error("server refused login: {code} {message}")]
    Login { code: String, message: String },
    #[error("server error {code}: {message}")]
    Query { code: String, message: String },
    #[error("server protocol error: {0}")]
    Protocol(String),
    #[error("TLS to the server: {0}")]
    Tls(String),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Where a server listens: a TCP address, or the socket file of a server on the same host
/// (a placement whose host is a directory, as in libpq: `/var/run/postgresql` and port
/// 5432 are `/var/run/postgresql/.s.PGSQL.5432`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerAddr {
    Tcp(SocketAddr),
    /// Shared: each checkout copies its connection's cancel key.
    Unix(Arc<Path>),
}

impl ServerAddr {
    /// The socket file for `host` and `port` when `host` is a directory (an absolute path).
    pub fn unix_socket(host: &str, port: u16) -> Option<PathBuf> {
        host.starts_with('/')
            .then(|| Path::new(host).join(format!(".s.PGSQL.{port}")))
    }
}

impl std::fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerAddr::Tcp(a) => a.fmt(f),
            ServerAddr::Unix(p) => p.display().fmt(f),
        }
    }
}

/// Where a CancelRequest for a server connection goes, and how: its address and key, and
/// the TLS it was opened with. A cancel for an encrypted connection is sent encrypted
/// too (as libpq 17 and PgBouncer send them), so the key never crosses the network in
/// the clear and a server reachable only through TLS can be reached.
#[derive(Debug, Clone)]
pub struct CancelKey {
    pub addr: ServerAddr,
    pub pid: i32,
    pub secret: i32,
    pub tls: Option<Arc<CancelTls>>,
}

/// The TLS settings a server connection was opened with, as its cancels use them.
pub struct CancelTls {
    config: Arc<ClientConfig>,
    host: String,
    /// The connection's sslmode, `prefer` taken as `require`: that connection got TLS,
    /// so its cancel never falls back to plain.
    mode: SslMode,
}

impl std::fmt::Debug for CancelTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CancelTls({} {})", self.host, self.mode.as_str())
    }
}

/// An authenticated server connection.
#[derive(Debug)]
pub struct ServerConn {
    pub stream: ServerStream,
    pub addr: ServerAddr,
    pub pid: i32,
    pub secret: i32,
    /// ParameterStatus values reported at startup, names as the server spells them.
    pub reported: Vec<(String, String)>,
    /// What the proxy believes each setting is now (lower-case names).
    settings: HashMap<String, String>,
    startup_settings: HashMap<String, String>,
    /// Settings the proxy applied for a client (lower-case name → value).
    applied: HashMap<String, String>,
    /// The id of the client settings list `settings` and `applied` were last brought in
    /// line with ([`ClientSettings::id`]): the next client with the same list skips the
    /// comparison. 0 (none) whenever either map changes.
    synced: u64,
    /// Statements the proxy prepared here (transaction pooling).
    pub prepared: PreparedCache,
    /// Session state changed by a client that must be reset before reuse.
    pub dirty: bool,
    /// The generation of its pool's held settings it started with, and those settings.
    pub held_gen: u64,
    pub started_held: Arc<[(String, String)]>,
    pub created: Instant,
    /// When it last answered a client (its last ReadyForQuery), stamped by the relay as it
    /// reads the clock for the statement's latency; else when it was opened.
    pub last_used: Instant,
    /// Until when it may be handed out again without a liveness check (set at checkin).
    pub check_after: Instant,
    /// Its instance's count of lost connections when it was last put back in the pool.
    pub losses_seen: u64,
    /// The client relay's state for this connection (buffers, replies owed), kept here
    /// between checkouts so a transaction neither allocates nor builds it.
    pub relay: crate::frontend::relay::ConnRelay,
    /// Set when the connection is encrypted: its cancel requests go the same way.
    cancel_tls: Option<Arc<CancelTls>>,
}

/// Startup parameters for `placement`: user, database, and via options search_path,
/// standard_conforming_strings = on (the proxy reads every statement as standard SQL:
/// backslashes in plain strings are characters) and the `held` settings. Startup values
/// beat the role's and database's own defaults, and `RESET ALL` / `DISCARD ALL` return
/// to them.
fn startup_params(p: &Placement, held: &[(String, String)]) -> Vec<(&'static str, String)> {
    let mut options = "-c standard_conforming_strings=on".to_owned();
    if let Some(schema) = &p.schema {
        options.push_str(" -c search_path=");
        options.push_str(&options_escape(&search_path_item(schema)));
    }
    for (k, v) in held {
        options.push_str(&format!(" -c {}={}", options_escape(k), options_escape(v)));
    }
    vec![
        ("user", p.backend_user.clone()),
        ("database", p.database.clone()),
        ("application_name", "tenantgate".to_owned()),
        ("options", options),
    ]
}

/// Double-quote an identifier for SQL.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// A schema name as a `search_path` element: bare when it is a plain lower-case name (so
/// `SHOW search_path` reads naturally), double-quoted otherwise.
pub fn search_path_item(s: &str) -> String {
    let plain = s
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if plain {
        s.to_owned()
    } else {
        quote_ident(s)
    }
}

/// Quote a literal for SQL.
/// An escape-string literal (`E'...'`) reads the same whatever the client set
/// standard_conforming_strings to, so client-chosen values can never end it early.
pub fn quote_literal(s: &str) -> String {
    format!("E'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

/// Escape a value for the libpq `options` word syntax.
fn options_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        if c == '\\' || c.is_whitespace() {
            o.push('\\');
        }
        o.push(c);
    }
    o
}

impl ServerConn {
    /// Open and authenticate a connection for `placement`; `tls` is its placement's
    /// client configuration (`None` for sslmode disable).
    /// `held`: settings the session starts with (the tenant's held flag settings).
    pub async fn connect(
        placement: &Placement,
        held: &[(String, String)],
        tls: Option<&Arc<ClientConfig>>,
        tcp: &TcpConfig,
        timeout: Duration,
        prepared_cap: usize,
    ) -> Result<ServerConn, BackendError> {
        tokio::time::timeout(
            timeout,
            Self::connect_inner(placement, held, tls, tcp, prepared_cap),
        )
        .await
        .map_err(|_| BackendError::Timeout)?
    }

    async fn connect_inner(
        p: &Placement,
        held: &[(String, String)],
        tls: Option<&Arc<ClientConfig>>,
        tcp_cfg: &TcpConfig,
        prepared_cap: usize,
    ) -> Result<ServerConn, BackendError> {
        if let Some(path) = ServerAddr::unix_socket(&p.host, p.port) {
            // No TLS over a local socket (libpq does not ask for it either).
            let stream = unix_connect(&path).await?;
            let mut conn =
                ServerConn::new(stream, ServerAddr::Unix(path.into()), None, prepared_cap);
            conn.startup(p, held).await?;
            return Ok(conn);
        }
        let target = format!("{}:{}", p.host, p.port);
        let tcp = tcp_connect(&target, tcp_cfg).await?;
        let addr = ServerAddr::Tcp(tcp.peer_addr()?);
        let stream = match tls {
            Some(config) => match negotiate_tls(tcp, config, &p.host, p.tls.mode).await {
                // As libpq: prefer retries without TLS when the handshake fails.
                Err(BackendError::Tls(e)) if p.tls.mode == SslMode::Prefer => {
                    tracing::debug!(%target, error = %e, "TLS failed, sslmode prefer: plain");
                    ServerStream::Plain(tcp_connect(&target, tcp_cfg).await?)
                }
                other => other?,
            },
            None => ServerStream::Plain(tcp),
        };
        let cancel_tls = match (tls, stream.is_tls()) {
            (Some(config), true) => Some(Arc::new(CancelTls {
                config: config.clone(),
                host: p.host.clone(),
                mode: match p.tls.mode {
                    SslMode::Prefer => SslMode::Require,
                    m => m,
                },
            })),
            _ => None,
        };
        let mut conn = ServerConn::new(stream, addr, cancel_tls, prepared_cap);
        conn.startup(p, held).await?;
        Ok(conn)
    }

    /// A connection not yet logged in.
    fn new(
        stream: ServerStream,
        addr: ServerAddr,
        cancel_tls: Option<Arc<CancelTls>>,
        prepared_cap: usize,
    ) -> ServerConn {
        let now = Instant::now();
        ServerConn {
            stream,
            addr,
            pid: 0,
            secret: 0,
            reported: Vec::new(),
            settings: HashMap::new(),
            startup_settings: HashMap::new(),
            applied: HashMap::new(),
            synced: 0,
            prepared: PreparedCache::new(prepared_cap),
            dirty: false,
            held_gen: 0,
            started_held: Arc::new([]),
            created: now,
            last_used: now,
            check_after: now,
            losses_seen: 0,
            relay: Default::default(),
            cancel_tls,
        }
    }

    async fn startup(
        &mut self,
        p: &Placement,
        held: &[(String, String)],
    ) -> Result<(), BackendError> {
        let params = startup_params(p, held);
        // Known to be set (not every one is reported back): a checkout wanting them has
        // nothing to send.
        for (k, v) in held {
            self.settings.insert(k.clone(), v.clone());
        }
        let mut out = BytesMut::new();
        frontend::startup_message(params.iter().map(|(k, v)| (*k, v.as_str())), &mut out)?;
        self.send(&out).await?;
        let mut buf = BytesMut::with_capacity(4096);
        let mut scram: Option<ScramSha256> = None;
        loop {
            let msg = read_message(&mut self.stream, &mut buf).await?;
            out.clear();
            match msg {
                Message::AuthenticationOk => {}
                Message::AuthenticationCleartextPassword => {
                    frontend::password_message(p.backend_password.as_bytes(), &mut out)?;
                }
                Message::AuthenticationMd5Password(b) => {
                    let inner = postgres_protocol::password::md5(
                        p.backend_password.as_bytes(),
                        &p.backend_user,
                    );
                    let expected = crate::frontend::auth::md5_expected_from_inner(&inner, b.salt());
                    frontend::password_message(expected.as_bytes(), &mut out)?;
                }
                Message::AuthenticationSasl(b) => {
                    let mut mechs = b.mechanisms();
                    let (mut plain, mut plus) = (false, false);
                    while let Some(m) = mechs.next()? {
                        plain |= m == "SCRAM-SHA-256";
                        plus |= m == "SCRAM-SHA-256-PLUS";
                    }
                    // Over TLS the exchange is bound to the server's certificate when the
                    // server offers it, so a man in the middle cannot relay it.
                    let (mech, binding) = match self.end_point_hash() {
                        Some(hash) if plus => (
                            "SCRAM-SHA-256-PLUS",
                            ChannelBinding::tls_server_end_point(hash),
                        ),
                        Some(_) if plain => ("SCRAM-SHA-256", ChannelBinding::unrequested()),
                        None if plain => ("SCRAM-SHA-256", ChannelBinding::unsupported()),
                        _ => {
                            return Err(BackendError::Protocol(
                                "server offers no SCRAM-SHA-256".into(),
                            ))
                        }
                    };
                    let s = ScramSha256::new(p.backend_password.as_bytes(), binding);
                    frontend::sasl_initial_response(mech, s.message(), &mut out)?;
                    scram = Some(s);
                }
                Message::AuthenticationSaslContinue(b) => {
                    let s = scram
                        .as_mut()
                        .ok_or_else(|| BackendError::Protocol("unexpected SASL continue".into()))?;
                    s.update(b.data())?;
                    frontend::sasl_response(s.message(), &mut out)?;
                }
                Message::AuthenticationSaslFinal(b) => {
                    let s = scram
                        .as_mut()
                        .ok_or_else(|| BackendError::Protocol("unexpected SASL final".into()))?;
                    s.finish(b.data())?;
                }
                Message::BackendKeyData(b) => {
                    self.pid = b.process_id();
                    self.secret = b.secret_key();
                }
                Message::ParameterStatus(b) => {
                    let (k, v) = (b.name()?.to_owned(), b.value()?.to_owned());
                    self.settings.insert(k.to_ascii_lowercase(), v.clone());
                    self.reported.push((k, v));
                }
                Message::ErrorResponse(b) => {
                    let (code, message) = error_fields(b.fields())?;
                    return Err(BackendError::Login { code, message });
                }
                Message::ReadyForQuery(_) => {
                    if let Some(e) = self.settings.get("client_encoding") {
                        if crate::router::encoding::splits_ascii(e) {
                            // A role's or database's default: the proxy could not read
                            // the statements of a client that keeps it.
                            return Err(BackendError::Login {
                                code: "0A000".into(),
                                message: crate::router::encoding::refusal(e),
                            });
                        }
                    }
                    self.startup_settings = self.settings.clone();
                    return Ok(());
                }
                Message::NoticeResponse(_) => {}
                _ => {
                    return Err(BackendError::Protocol(
                        "unexpected message during startup".into(),
                    ))
                }
            }
            if !out.is_empty() {
                self.send(&out).await?;
            }
        }
    }

    /// Run internal statements (each its own simple Query, pipelined) and wait for all of
    /// them. ParameterStatus updates are applied to `settings`; the first error is returned
    /// after every statement has been answered, so the connection stays in sync.
    pub async fn run(&mut self, statements: &[&str]) -> Result<(), BackendError> {
        // Any statement may change settings.
        self.synced = 0;
        let mut out = BytesMut::new();
        for s in statements {
            frame::write_query(&mut out, s);
        }
        self.send(&out).await?;
        let mut buf = BytesMut::with_capacity(1024);
        let mut pending = statements.len();
        let mut first_err = None;
        while pending > 0 {
            match read_message(&mut self.stream, &mut buf).await? {
                Message::ReadyForQuery(_) => pending -= 1,
                Message::ParameterStatus(b) => {
                    self.settings
                        .insert(b.name()?.to_ascii_lowercase(), b.value()?.to_owned());
                }
                Message::ErrorResponse(b) if first_err.is_none() => {
                    let (code, message) = error_fields(b.fields())?;
                    first_err = Some(BackendError::Query { code, message });
                }
                _ => {}
            }
        }
        if !buf.is_empty() {
            return Err(BackendError::Protocol(
                "server sent data after ReadyForQuery".into(),
            ));
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Make the server's settings match `wanted` (client settings, lower-case names):
    /// SET what differs, RESET what an earlier client had applied and this one did not ask for.
    pub async fn sync_settings(&mut self, wanted: &ClientSettings) -> Result<(), BackendError> {
        if self.is_synced(wanted) {
            return Ok(());
        }
        if self.settings_differ(wanted) {
            Box::pin(self.apply_settings(wanted)).await?;
        }
        self.synced = wanted.id();
        Ok(())
    }

    /// Last brought in line with `wanted` and unchanged since: [`Self::sync_settings`] has
    /// nothing to do (checked first by the relay, which then builds no future for it).
    pub fn is_synced(&self, wanted: &ClientSettings) -> bool {
        wanted.id() != 0 && self.synced == wanted.id()
    }

    /// A setting the server reported (ParameterStatus) while relaying a client's statements.
    pub fn note_parameter(&mut self, name: String, value: String) {
        self.synced = 0;
        self.settings.insert(name, value);
    }

    /// Cheap check (no IO) whether [`Self::sync_settings`] has anything to do.
    fn settings_differ(&self, wanted: &[(String, String)]) -> bool {
        wanted.iter().any(|(k, v)| self.settings.get(k) != Some(v))
            || self
                .applied
                .keys()
                .any(|k| !wanted.iter().any(|(w, _)| w == k))
    }

    async fn apply_settings(&mut self, wanted: &[(String, String)]) -> Result<(), BackendError> {
        let mut stmts: Vec<String> = wanted
            .iter()
            .filter(|(k, v)| self.settings.get(k) != Some(v))
            .map(|(k, v)| format!("SET {} = {}", quote_ident(k), quote_literal(v)))
            .collect();
        let stale: Vec<String> = self
            .applied
            .keys()
            .filter(|k| !wanted.iter().any(|(w, _)| w == *k))
            .cloned()
            .collect();
        stmts.extend(stale.iter().map(|k| format!("RESET {}", quote_ident(k))));
        if stmts.is_empty() {
            return Ok(());
        }
        let refs: Vec<&str> = stmts.iter().map(String::as_str).collect();
        if let Err(e) = self.run(&refs).await {
            // Which of the statements took effect is not known: the next sync sends
            // every wanted setting again, and the connection is reset before reuse.
            for (k, _) in wanted {
                self.settings.remove(k);
            }
            self.dirty = true;
            return Err(e);
        }
        // Record the values as the client spelled them, so the next comparison matches
        // even where the server reports a canonical form ("ISO" vs "ISO, MDY").
        for k in stale {
            self.applied.remove(&k);
            match self.startup_settings.get(&k) {
                Some(v) => self.settings.insert(k, v.clone()),
                None => self.settings.remove(&k),
            };
        }
        for (k, v) in wanted {
            self.settings.insert(k.clone(), v.clone());
            self.applied.insert(k.clone(), v.clone());
        }
        Ok(())
    }

    /// Return the session to its startup state: roll back, then DISCARD ALL.
    pub async fn reset(&mut self, in_transaction: bool) -> Result<(), BackendError> {
        let res = if in_transaction {
            self.run(&["ROLLBACK", "DISCARD ALL"]).await
        } else {
            self.run(&["DISCARD ALL"]).await
        };
        self.prepared.clear();
        self.settings_reset();
        self.dirty = false;
        res
    }

    /// The server's settings are back at their startup values (a `DISCARD ALL` or `RESET
    /// ALL`): the next [`Self::sync_settings`] applies every wanted one again.
    pub fn settings_reset(&mut self) {
        self.settings = self.startup_settings.clone();
        self.applied.clear();
        self.synced = 0;
    }

    /// Non-blocking check that an idle connection is still open and silent.
    pub fn is_healthy(&self) -> bool {
        self.stream.is_quiet()
    }

    /// Write all of `bytes` and flush them (TLS holds written bytes until flushed).
    async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }

    /// The `tls-server-end-point` channel-binding data of the server's certificate.
    fn end_point_hash(&self) -> Option<Vec<u8>> {
        let ServerStream::Tls(s) = &self.stream else {
            return None;
        };
        let cert = s.get_ref().1.peer_certificates()?.first()?;
        Some(crate::frontend::tls::end_point_hash(cert))
    }

    /// Where a cancel request for this connection goes.
    pub fn cancel_key(&self) -> CancelKey {
        CancelKey {
            addr: self.addr.clone(),
            pid: self.pid,
            secret: self.secret,
            tls: self.cancel_tls.clone(),
        }
    }

    /// Ask the server to cancel whatever the connection of `key` is running: over TLS
    /// when that connection is encrypted (an SSLRequest first, as for a login), never
    /// falling back to plain. Bounded by ten seconds in all.
    pub async fn cancel(key: &CancelKey) -> Result<(), BackendError> {
        let send = async {
            let mut s = match (&key.addr, &key.tls) {
                (ServerAddr::Unix(path), _) => unix_connect(path).await?,
                (ServerAddr::Tcp(addr), tls) => {
                    let tcp = TcpStream::connect(addr).await?;
                    match tls {
                        Some(t) => negotiate_tls(tcp, &t.config, &t.host, t.mode).await?,
                        None => ServerStream::Plain(tcp),
                    }
                }
            };
            s.write_all(&write::cancel_request(key.pid, key.secret))
                .await?;
            s.flush().await?;
            // The server closes the connection once it has read the request.
            let mut b = [0u8; 1];
            let _ = s.read(&mut b).await;
            Ok(())
        };
        tokio::time::timeout(Duration::from_secs(10), send)
            .await
            .unwrap_or(Err(BackendError::Timeout))
    }

    /// Send Terminate and drop the connection.
    pub async fn terminate(mut self: Box<Self>) {
        let mut out = BytesMut::new();
        frontend::terminate(&mut out);
        let _ = tokio::time::timeout(Duration::from_millis(200), self.send(&out)).await;
    }
}

async fn unix_connect(path: &Path) -> Result<ServerStream, BackendError> {
    let s = UnixStream::connect(path)
        .await
        .map_err(|source| BackendError::Connect {
            addr: path.display().to_string(),
            source,
        })?;
    Ok(ServerStream::Unix(s))
}

async fn tcp_connect(target: &str, cfg: &TcpConfig) -> Result<TcpStream, BackendError> {
    let tcp = TcpStream::connect(target)
        .await
        .map_err(|source| BackendError::Connect {
            addr: target.to_owned(),
            source,
        })?;
    tcp.set_nodelay(true)?;
    crate::net::set_keepalive(socket2::SockRef::from(&tcp), cfg)?;
    Ok(tcp)
}

/// SSLRequest, then the TLS handshake when the server answers 'S'. A server without TLS
/// answers 'N': a plain connection for `prefer`, an error for the modes that require it.
/// SSLRequest and the handshake, for `sslmode` `mode` to `host`.
async fn negotiate_tls(
    mut tcp: TcpStream,
    config: &Arc<ClientConfig>,
    host: &str,
    mode: SslMode,
) -> Result<ServerStream, BackendError> {
    tcp.write_all(&write::ssl_request()).await?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await?;
    match answer[0] {
        b'S' => {}
        b'N' if mode == SslMode::Prefer => return Ok(ServerStream::Plain(tcp)),
        b'N' => {
            return Err(BackendError::Tls(format!(
                "server does not support SSL, but sslmode {} requires it",
                mode.as_str()
            )))
        }
        other => {
            return Err(BackendError::Protocol(format!(
                "unexpected answer to SSLRequest: {:?}",
                char::from(other)
            )))
        }
    }
    let name = rustls::pki_types::ServerName::try_from(host.to_owned())
        .map_err(|e| BackendError::Tls(format!("server name {host}: {e}")))?;
    let tls = tokio_rustls::TlsConnector::from(config.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| BackendError::Tls(e.to_string()))?;
    Ok(ServerStream::Tls(Box::new(tls)))
}

async fn read_message(
    stream: &mut ServerStream,
    buf: &mut BytesMut,
) -> Result<Message, BackendError> {
    loop {
        if let Some(m) = Message::parse(buf)? {
            return Ok(m);
        }
        if let Some(h) =
            frame::peek_header(buf).map_err(|e| BackendError::Protocol(e.to_string()))?
        {
            buf.reserve(h.total().saturating_sub(buf.len()));
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(BackendError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "server closed the connection",
            )));
        }
    }
}

fn error_fields(
    mut f: postgres_protocol::message::backend::ErrorFields<'_>,
) -> Result<(String, String), BackendError> {
    let (mut code, mut message) = (String::new(), String::new());
    while let Some(field) = f.next()? {
        match field.type_() {
            b'C' => code = String::from_utf8_lossy(field.value_bytes()).into_owned(),
            b'M' => message = String::from_utf8_lossy(field.value_bytes()).into_owned(),
            _ => {}
        }
    }
    Ok((code, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_path_option_is_quoted_and_escaped() {
        let p = Placement {
            instance: "i".into(),
            host: "h".into(),
            port: 1,
            database: "d".into(),
            schema: Some("my schema\"x".into()),
            backend_user: "u".into(),
            backend_password: String::new(),
            tls: Default::default(),
        };
        let params = startup_params(&p, &[("statement_timeout".into(), "250".into())]);
        assert_eq!(
            params[3].1,
            "-c standard_conforming_strings=on -c search_path=\"my\\ schema\"\"x\" -c statement_timeout=250"
        );
        assert_eq!(quote_literal("it's"), "E'it''s'");
        assert_eq!(quote_literal("x\\'; --"), "E'x\\\\''; --'");
        assert_eq!(search_path_item("tenant_acme"), "tenant_acme");
        assert_eq!(search_path_item("Acme"), "\"Acme\"");
    }
}
