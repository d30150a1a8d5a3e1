//! From a decoded StartupMessage to a running session: resolve the tenant, authenticate,
//! attach pools, send ParameterStatus/BackendKeyData/ReadyForQuery, then relay.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tracing::{debug, info, info_span, warn, Instrument};

use super::auth::{self, ScramError, ScramServer, ScramVerifier};
use super::cancel::CancelTarget;
use super::deadline::LoginDeadline;
use super::session::Session;
use super::stream::{read_message, ClientStream};
use crate::backend::pool::PoolError;
use crate::backend::settings::ClientSettings;
use crate::backend::BackendError;
use crate::catalog::{LoginUser, Tenant};
use crate::config::{AuthMethod, PoolMode};
use crate::protocol::startup::StartupParams;
use crate::protocol::{write, PgError, Severity};
use crate::router::startup as route;
use crate::state::Proxy;

/// Longest password / SASL message accepted during authentication.
const MAX_AUTH_MESSAGE: usize = 8192;

/// What login produced: the session's pieces, ready to relay.
struct LoggedIn {
    /// `None` for a service user that named no tenant at login.
    tenant: Option<Arc<Tenant>>,
    login_user: String,
    settings: ClientSettings,
    /// A trusted service user.
    trusted: bool,
}

/// A logged-in client's session, for the client's task to run to its end. Handed back
/// rather than awaited where it is made: the task polls its future on every wake-up,
/// through each async fn between the task and the relay, and each level's state was
/// read from memory gone cold since the client's last statement (callgrind, 32 clients:
/// two levels fewer saved about 4 first-level cache misses per transaction).
pub type SessionRun = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Take a client from its StartupMessage to its session (`None`: the login failed, or an
/// admin session ran here). `cert_hash`: over TLS, the channel-binding data of the
/// certificate its handshake used.
pub async fn serve<S: ClientStream>(
    proxy: Proxy,
    mut stream: S,
    peer: SocketAddr,
    params: StartupParams,
    mut deadline: LoginDeadline,
    mut cin: BytesMut,
    cert_hash: Option<Arc<[u8]>>,
) -> Option<SessionRun> {
    let mut out = BytesMut::with_capacity(512);
    if params.minor != 0 || !params.protocol_options.is_empty() {
        write::negotiate_protocol_version(&mut out, 0, &params.protocol_options);
    }
    if params.get("database") == Some(ADMIN_DATABASE) {
        // Boxed, like the other one-off steps below: the task of a client lives as long
        // as the client, and its future is as large as its largest state.
        Box::pin(admin_login(
            proxy, stream, params, cin, out, deadline, cert_hash,
        ))
        .await;
        return None;
    }
    let login = deadline
        .run(Box::pin(authenticate(
            &proxy,
            &mut stream,
            peer,
            &params,
            &mut cin,
            &mut out,
            cert_hash.as_deref(),
        )))
        .await;
    // The session runs without the login's timer.
    drop(deadline);
    let who = match login {
        Some(Ok(w)) => w,
        Some(Err(e)) => {
            fail(&mut stream, out, e).await;
            return None;
        }
        None => {
            fail(&mut stream, out, PgError::login_timeout()).await;
            return None;
        }
    };
    let span = info_span!(
        "client",
        %peer,
        tenant = who.tenant.as_ref().map_or("", |t| t.key.as_str()),
        user = %who.login_user,
        trusted = who.trusted
    );
    // Boxed where it is made: the session's setup future is large, and each move of it
    // (into the span's wrapper, into this future) was a copy.
    match Box::pin(start_session(&proxy, who, stream, cin, out, peer, &span))
        .instrument(span.clone())
        .await
    {
        Ok(run) => Some(run),
        Err((mut stream, out, e)) => {
            fail(&mut stream, out, e).instrument(span).await;
            None
        }
    }
}

/// A session's id across replicas, `replica/sequence` (built without the formatting
/// machinery: once per login).
fn session_id(replica: &str, sid: u64) -> String {
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(sid);
    let mut id = String::with_capacity(replica.len() + 1 + digits.len());
    id.push_str(replica);
    id.push('/');
    id.push_str(digits);
    id
}

/// The admin virtual database's name.
pub const ADMIN_DATABASE: &str = "admin";

/// Admin users only, with SCRAM; anyone else gets 42501.
async fn admin_login<S: ClientStream>(
    proxy: Proxy,
    mut stream: S,
    params: StartupParams,
    mut cin: BytesMut,
    mut out: BytesMut,
    mut deadline: LoginDeadline,
    cert_hash: Option<Arc<[u8]>>,
) {
    let user = params.get("user").unwrap_or_default().to_owned();
    let Some(admin) = proxy.directory().admin_user(&user) else {
        return fail(&mut stream, out, PgError::admin_only(&user)).await;
    };
    let cert = cert_hash.as_deref();
    let ok = deadline
        .run(Box::pin(scram_exchange(
            &mut stream,
            &mut cin,
            &mut out,
            admin.scram.clone(),
            cert,
        )))
        .await;
    drop(deadline);
    match ok {
        Some(Ok(true)) => {}
        Some(Ok(false)) => return fail(&mut stream, out, PgError::auth_failed(&user)).await,
        Some(Err(e)) => return fail(&mut stream, out, e).await,
        None => return fail(&mut stream, out, PgError::login_timeout()).await,
    }
    write::auth_ok(&mut out);
    crate::admin::session::serve(proxy, stream, cin, out, user).await;
}

async fn fail<S: ClientStream>(stream: &mut S, mut out: BytesMut, e: PgError) {
    info!(code = %e.code, message = %e.message, "login refused");
    crate::telemetry::metrics::Metrics::login_failed(&e.code);
    e.encode(&mut out);
    let _ = stream.write_all(&out).await;
    let _ = stream.shutdown().await;
}

/// Decide the tenant and check the client's credentials.
async fn authenticate<S: ClientStream>(
    proxy: &Proxy,
    stream: &mut S,
    peer: SocketAddr,
    params: &StartupParams,
    cin: &mut BytesMut,
    out: &mut BytesMut,
    cert_hash: Option<&[u8]>,
) -> Result<LoggedIn, PgError> {
    let dir = proxy.directory();
    let r = route::resolve(&params.params, |db| dir.tenant(db).is_some());
    let startup_user = params.get("user").unwrap_or_default().to_owned();
    let cfg = proxy.config();
    let method = auth::method_for(&cfg.auth, &r.login_user, peer.ip());
    let tenant = r.tenant.as_ref().and_then(|(t, _)| dir.tenant(t));
    // A tenant's own login user first, then a trusted service user of that name.
    let (found, trusted): (Option<Arc<LoginUser>>, bool) = match tenant
        .as_ref()
        .and_then(|t| dir.login(&t.key, &r.login_user))
    {
        Some(u) => (Some(u), false),
        None => (dir.service_user(&r.login_user), true),
    };
    let ok = match method {
        AuthMethod::Reject => {
            return Err(PgError::auth_rejected(
                &startup_user,
                "rejected by an auth rule",
            ))
        }
        AuthMethod::Trust => found.is_some(),
        AuthMethod::Md5 if found.as_ref().is_some_and(|u| u.password.is_some()) => {
            let user = found.as_ref().expect("checked");
            md5_exchange(
                stream,
                cin,
                out,
                user.password.as_deref().expect("checked"),
                &startup_user,
            )
            .await?
        }
        // md5 without a plain password falls back to SCRAM, as PostgreSQL does.
        AuthMethod::Md5 | AuthMethod::ScramSha256 => {
            let verifier = match &found {
                Some(u) => u.scram.clone(),
                None => ScramVerifier::mock(proxy.mock_secret(), &startup_user),
            };
            scram_exchange(stream, cin, out, verifier, cert_hash).await? && found.is_some()
        }
    };
    if !ok {
        return Err(PgError::auth_failed(&startup_user));
    }
    let user = found.expect("ok implies found");
    if trusted && tenant.is_none() {
        if let Some((t, _)) = &r.tenant {
            return Err(PgError {
                severity: Severity::Fatal,
                ..PgError::unknown_tenant(t)
            });
        }
    }
    // Only after the password is proven, so status does not reveal tenants to strangers.
    if let Some(t) = tenant.as_ref().filter(|t| !t.status.may_connect()) {
        return Err(PgError::tenant_unavailable(&t.key, t.status.as_str()));
    }
    let settings = vet_settings(&cfg, tenant.as_deref(), trusted, r.settings)?;
    write::auth_ok(out);
    Ok(LoggedIn {
        tenant,
        login_user: user.name.clone(),
        settings: ClientSettings::new(settings),
        trusted,
    })
}

/// The settings a client asked for at login, as the statement guard takes them
/// ([`crate::router::guard::startup_setting`]): the proxy applies them with `SET` on
/// every server connection the client uses, so they get the checks a `SET` would.
fn vet_settings(
    cfg: &crate::config::Config,
    tenant: Option<&Tenant>,
    trusted: bool,
    settings: Vec<(String, String)>,
) -> Result<Vec<(String, String)>, PgError> {
    use crate::router::guard::{startup_setting, GuardContext};
    let ctx = GuardContext {
        tenant_schema: tenant.and_then(|t| t.placement.schema.as_deref()),
        logical_schema: &cfg.guard.logical_schema,
        strict: cfg.guard.strict,
    };
    let fatal = |e: PgError| PgError {
        severity: Severity::Fatal,
        ..e
    };
    settings
        .into_iter()
        .map(|(k, v)| {
            if trusted && k == "search_path" {
                // A service user's statements run for many tenants, each in its schema.
                return Err(fatal(PgError::feature_unsupported(
                    "a service user cannot set search_path at login: each tenant's connections have the tenant's own",
                )));
            }
            match startup_setting(&k, &v, &ctx, cfg.guard.enabled) {
                Ok(v) => Ok((k, v)),
                Err(reason) if k == "standard_conforming_strings" || k == "client_encoding" => {
                    Err(fatal(PgError::feature_unsupported(&reason)))
                }
                Err(reason) => Err(fatal(PgError::guard_refused(
                    &super::guard::refusal_message(&reason),
                ))),
            }
        })
        .collect()
}

async fn md5_exchange<S: ClientStream>(
    stream: &mut S,
    cin: &mut BytesMut,
    out: &mut BytesMut,
    password: &str,
    startup_user: &str,
) -> Result<bool, PgError> {
    let salt: [u8; 4] = rand::random();
    write::auth_md5(out, salt);
    flush(stream, out).await?;
    let (tag, body) = read_message(stream, cin, MAX_AUTH_MESSAGE).await?;
    if tag != b'p' {
        return Err(PgError::protocol_violation("expected password response"));
    }
    let got = body.strip_suffix(&[0]).unwrap_or(&body);
    Ok(auth::md5_matches(
        &auth::md5_expected(password, startup_user, salt),
        got,
    ))
}

async fn scram_exchange<S: ClientStream>(
    stream: &mut S,
    cin: &mut BytesMut,
    out: &mut BytesMut,
    verifier: ScramVerifier,
    cert_hash: Option<&[u8]>,
) -> Result<bool, PgError> {
    // Over TLS, SCRAM-SHA-256-PLUS (bound to our certificate) is offered first.
    if cert_hash.is_some() {
        write::auth_sasl(out, &["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"]);
    } else {
        write::auth_sasl(out, &["SCRAM-SHA-256"]);
    }
    flush(stream, out).await?;
    let (tag, body) = read_message(stream, cin, MAX_AUTH_MESSAGE).await?;
    if tag != b'p' {
        return Err(PgError::protocol_violation("expected SASL response"));
    }
    let (mech, rest) = crate::protocol::frame::cstr(&body)
        .ok_or_else(|| PgError::protocol_violation("malformed SASLInitialResponse"))?;
    let plus = match mech {
        b"SCRAM-SHA-256" => false,
        b"SCRAM-SHA-256-PLUS" if cert_hash.is_some() => true,
        _ => {
            return Err(PgError::protocol_violation(
                "client selected an invalid SASL authentication mechanism",
            ))
        }
    };
    let data = rest
        .get(4..)
        .ok_or_else(|| PgError::protocol_violation("malformed SASLInitialResponse"))?;
    let malformed = |e: ScramError| match e {
        ScramError::Malformed(m) => {
            PgError::protocol_violation(format!("malformed SCRAM message: {m}"))
        }
        ScramError::BadProof => PgError::protocol_violation("unexpected SCRAM result"),
    };
    let binding = super::auth::Binding { cert_hash, plus };
    let (server, first) = ScramServer::start(verifier, data, binding).map_err(malformed)?;
    write::auth_sasl_continue(out, &first);
    flush(stream, out).await?;
    let (tag, body) = read_message(stream, cin, MAX_AUTH_MESSAGE).await?;
    if tag != b'p' {
        return Err(PgError::protocol_violation("expected SASL response"));
    }
    match server.finish(&body) {
        Ok(fin) => {
            write::auth_sasl_final(out, &fin);
            Ok(true)
        }
        Err(ScramError::BadProof) => Ok(false),
        Err(e) => Err(malformed(e)),
    }
}

async fn flush<S: ClientStream>(stream: &mut S, out: &mut BytesMut) -> Result<(), PgError> {
    stream
        .write_all(out)
        .await
        .map_err(|_| PgError::protocol_violation("connection closed during authentication"))?;
    out.clear();
    Ok(())
}

/// Map a pool failure at login to a fatal error.
fn login_pool_error(tenant: &str, e: PoolError) -> PgError {
    match e {
        PoolError::Timeout(ms) => PgError {
            severity: Severity::Fatal,
            ..PgError::pool_timeout(tenant, ms)
        },
        PoolError::Backend(BackendError::Login { code, message }) => {
            warn!(%tenant, %code, %message, "backend login failed");
            PgError::backend_login_failed(tenant)
        }
        PoolError::Retired => PgError {
            severity: Severity::Fatal,
            ..PgError::server_unavailable(tenant)
        },
        PoolError::Backend(e) => {
            warn!(%tenant, error = %e, "backend unavailable at login");
            PgError {
                severity: Severity::Fatal,
                ..PgError::server_unavailable(tenant)
            }
        }
    }
}

type Failed<S> = (S, BytesMut, PgError);

/// Attach pools and cancel keys and greet the client: the session, relaying until the
/// client leaves and then letting go of what it registered, is the future returned (in
/// `span`; boxed where it is made, as each move of it is a copy).
async fn start_session<S: ClientStream>(
    proxy: &Proxy,
    who: LoggedIn,
    stream: S,
    cin: BytesMut,
    mut out: BytesMut,
    peer: SocketAddr,
    span: &tracing::Span,
) -> Result<SessionRun, Failed<S>> {
    let pool = who.tenant.as_ref().map(|t| proxy.pools().for_tenant(t));
    // A service user without a tenant gets the parameters of some tenant's server.
    let params_pool = pool.clone().or_else(|| {
        let mut all = proxy.directory().tenants();
        all.sort_by(|a, b| a.key.cmp(&b.key));
        all.first().map(|t| proxy.pools().for_tenant(t))
    });
    let mode = who
        .tenant
        .as_ref()
        .map_or(PoolMode::Transaction, |t| t.pool_mode);
    let tenant = who.tenant.clone();
    let key = tenant.as_ref().map_or("", |t| t.key.as_str());
    // Plan limits and flags of a tenant-bound login (service users: per statement).
    let limits = proxy.limits().cloned();
    let lim_state = match (&limits, &who.tenant) {
        (Some(l), Some(t)) if !who.trusted => {
            let ts = l.tenant(&t.key);
            if !l.warmed(&ts) {
                Box::pin(l.warm(&ts)).await;
            }
            Some(ts)
        }
        _ => None,
    };
    // The tenant's held flag settings (service users with a tenant included).
    let login_held: Option<Vec<(String, String)>> = match (&limits, &who.tenant) {
        (_, None) => None,
        (None, Some(_)) => Some(Vec::new()),
        (Some(l), Some(t)) => Some(match &lim_state {
            Some(ts) => ts.flags().held.clone(),
            None => {
                let ts = l.tenant(&t.key);
                if !l.warmed(&ts) {
                    Box::pin(l.warm(&ts)).await;
                }
                ts.flags().held.clone()
            }
        }),
    };
    let held_read_only = login_held
        .as_ref()
        .is_some_and(|h| h.iter().any(|(k, _)| k == "default_transaction_read_only"));
    // Session pooling holds a server from the start (its pid is the client's pid);
    // transaction pooling needs one only to learn the server's parameters the first time.
    let mut held = None;
    if let Some(pool) = params_pool
        .as_ref()
        .filter(|p| mode == PoolMode::Session || p.server_params().is_none())
    {
        // The connection starts with the tenant's held flag settings (not for a service
        // user without a tenant: `params_pool` is only some tenant's pool).
        if let Some(h) = &login_held {
            pool.hold_settings(h);
        }
        let mut conn = match pool.acquire().await {
            Ok(c) => c,
            Err(e) => return Err((stream, out, login_pool_error(key, e))),
        };
        let merged = lim_state
            .as_ref()
            .and_then(|ts| ts.flags().merge_settings(&who.settings));
        if let Err(e) = conn
            .sync_settings(merged.as_ref().unwrap_or(&who.settings))
            .await
        {
            let err = match e {
                BackendError::Query { code, message } => {
                    PgError::from_server(Severity::Fatal, &code, &message)
                }
                other => login_pool_error(key, PoolError::Backend(other)),
            };
            return Err((stream, out, err));
        }
        held = Some(conn);
    }
    if let Some(params) = params_pool.as_ref().and_then(|p| p.server_params()) {
        // The server's report, with the values of the settings the client carries.
        // Setting names are lowercase (router::startup); the server reports "DateStyle".
        params.write(&mut out, |k| {
            if held_read_only && k == "default_transaction_read_only" {
                return Some("on");
            }
            who.settings
                .iter()
                .find(|(sk, _)| sk.eq_ignore_ascii_case(k) && super::relay::is_carried_setting(sk))
                .map(|(_, v)| v.as_str())
        });
    }
    let session_pid = (mode == PoolMode::Session)
        .then(|| held.as_ref().map(|c| c.pid))
        .flatten();
    let (ckey, cancel): ((i32, i32), Arc<CancelTarget>) = proxy.cancels().register(session_pid);
    // Service users move between tenants; their tenant's status is checked per transaction.
    let (sid, signal) = proxy.session_enter(if who.trusted { "" } else { key });
    // Under the tenant's connection cap, across replicas.
    let mut registered = None;
    if let (Some(l), Some(ts), Some(t)) = (&limits, &lim_state, &who.tenant) {
        let info = crate::limits::sessions::SessionInfo {
            id: session_id(l.sessions().replica(), sid),
            tenant: t.key.clone(),
            user: who.login_user.clone(),
            application: super::relay::setting(&who.settings, "application_name")
                .unwrap_or_default()
                .to_owned(),
            client_addr: peer,
            replica: l.sessions().replica().to_owned(),
            started_ms: crate::telemetry::event::epoch_ms(std::time::SystemTime::now()),
            cancel_key: Some(ckey),
        };
        let id = info.id.clone();
        if let Err(e) = Box::pin(l.sessions().enter(l, ts, t.limits.max_connections, info)).await {
            proxy.session_leave(sid);
            proxy.cancels().unregister(ckey);
            if let Some(c) = held {
                c.release();
            }
            return Err((stream, out, e));
        }
        registered = Some(id);
    }
    write::backend_key_data(&mut out, ckey.0, ckey.1);
    write::ready_for_query(&mut out, b'I');
    let server = match (mode, held) {
        (PoolMode::Session, Some(c)) => {
            cancel.set(Some(c.cancel_key()));
            Some(c)
        }
        (_, Some(c)) => {
            c.release();
            None
        }
        (_, None) => None,
    };
    let (r, w) = stream.split_rw();
    let mut session = Session::new(
        proxy.clone(),
        r,
        w,
        cin,
        pool,
        mode,
        who.settings,
        cancel,
        server,
        signal,
    );
    session.cout = out;
    session.trusted = who.trusted;
    session.user = who.login_user.clone();
    session.session_id = sid;
    if let (Some(l), Some(ts)) = (limits.clone(), lim_state.clone()) {
        session.set_limits(l, ts);
    }
    let capped = who
        .tenant
        .as_ref()
        .is_some_and(|t| t.limits.max_connections > 0);
    let proxy = proxy.clone();
    Ok(Box::pin(
        async move {
            let end = session.run().await;
            proxy.session_leave(sid);
            if let (Some(l), Some(ts), Some(id)) = (&limits, &lim_state, &registered) {
                Box::pin(l.sessions().leave(l, ts, id, capped)).await;
            }
            proxy.cancels().unregister(ckey);
            S::close(session.cr, session.cw);
            debug!(?end, "client left");
        }
        .instrument(span.clone()),
    ))
}
