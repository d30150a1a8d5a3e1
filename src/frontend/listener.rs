//! Accept loop and startup negotiation: SSLRequest (TLS or 'N'), GSSENCRequest ('N'),
//! CancelRequest, then the StartupMessage.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::deadline::LoginDeadline;
use super::login::SessionRun;
use crate::backend::server::CancelKey;
use crate::backend::ServerConn;
use crate::protocol::startup::{self, StartupPacket};
use crate::protocol::PgError;
use crate::state::Proxy;

/// Accept clients until shutdown; each runs in its own task on `tracker`.
pub async fn run(proxy: Proxy, listener: TcpListener, tracker: TaskTracker) {
    let shutdown = proxy.shutdown_token();
    // One wait for the whole loop: a new one per accept would join and leave the token's
    // waiter list each time.
    let stopped = shutdown.cancelled();
    tokio::pin!(stopped);
    // The listener's keepalive settings, which accepted sockets inherit (set before it
    // listened, `net::listen`): set again when a reload changes `[tcp]`.
    let mut tcp = proxy.config().tcp.clone();
    loop {
        let cfg = proxy.config();
        if tcp != cfg.tcp {
            if let Err(e) = crate::net::set_keepalive(socket2::SockRef::from(&listener), &cfg.tcp) {
                warn!(error = %e, "could not set TCP keepalive on the listener");
            }
            tcp = cfg.tcp.clone();
        }
        drop(cfg);
        let (sock, peer) = tokio::select! {
            biased;
            _ = &mut stopped => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let proxy = proxy.clone();
        let fut = async move {
            if !proxy.client_enter() {
                let mut out = BytesMut::new();
                PgError::too_many_clients().encode(&mut out);
                let mut sock = sock;
                let _ = sock.write_all(&out).await;
                return;
            }
            if let Some(session) = handle(proxy.clone(), sock, peer).await {
                session.await;
            }
            proxy.client_leave();
        };
        tracker.spawn(fut);
    }
    info!("listener stopped");
}

/// Where startup negotiation leaves a client.
enum Negotiated {
    /// With the bytes read past the StartupMessage (the client's first messages).
    Plain(TcpStream, startup::StartupParams, LoginDeadline, BytesMut),
    /// With the channel-binding hash of the certificate the handshake used.
    Tls(
        Box<tokio_rustls::server::TlsStream<TcpStream>>,
        LoginDeadline,
        std::sync::Arc<[u8]>,
    ),
    /// Answered (cancel, refusal) or gone.
    Done,
}

/// Each step is boxed and freed when it ends: a task lives as long as its client, and
/// its own future is sized by its largest state, so it holds only the session's box.
/// The session itself is handed back for the task to run (see [`SessionRun`]).
async fn handle(proxy: Proxy, sock: TcpStream, peer: SocketAddr) -> Option<SessionRun> {
    match Box::pin(negotiate(&proxy, sock, peer)).await {
        Negotiated::Plain(sock, params, deadline, cin) => {
            Box::pin(super::login::serve(
                proxy, sock, peer, params, deadline, cin, None,
            ))
            .await
        }
        Negotiated::Tls(tls, deadline, cert_hash) => {
            Box::pin(after_tls(proxy, *tls, peer, deadline, cert_hash)).await
        }
        Negotiated::Done => None,
    }
}

async fn negotiate(proxy: &Proxy, mut sock: TcpStream, peer: SocketAddr) -> Negotiated {
    let _ = sock.set_nodelay(true);
    let mut deadline = LoginDeadline::after(Duration::from_millis(
        proxy.config().limits.client_login_timeout_ms,
    ));
    let mut tls_refused = false;
    // Read as whole chunks: a startup packet usually arrives in one segment, and what
    // follows it (if anything) is the client's first messages, kept for the session.
    let mut buf = BytesMut::with_capacity(STARTUP_READ);
    loop {
        let pkt = match deadline.run(read_packet(&mut sock, &mut buf)).await {
            Some(Ok(p)) => p,
            Some(Err(e)) => {
                refuse(&mut sock, e).await;
                return Negotiated::Done;
            }
            None => {
                refuse(&mut sock, PgError::login_timeout()).await;
                return Negotiated::Done;
            }
        };
        match pkt {
            StartupPacket::Ssl if tls_refused => {
                refuse(
                    &mut sock,
                    PgError::protocol_violation("SSLRequest sent twice"),
                )
                .await;
                return Negotiated::Done;
            }
            StartupPacket::Ssl => match proxy.tls() {
                // Bytes sent in the clear after SSLRequest would be taken as if they had
                // come through TLS (CVE-2021-23214): PostgreSQL refuses them, so do we.
                Some(_) if !buf.is_empty() => {
                    refuse(
                        &mut sock,
                        PgError::protocol_violation("received unencrypted data after SSL request"),
                    )
                    .await;
                    return Negotiated::Done;
                }
                Some(tls) => {
                    if sock.write_all(b"S").await.is_err() {
                        return Negotiated::Done;
                    }
                    let cert_hash = tls.cert_hash.clone();
                    // Boxed: the handshake's state is large, and this future is moved whole.
                    let tls = match deadline.run(Box::pin(tls.acceptor.accept(sock))).await {
                        Some(Ok(t)) => t,
                        Some(Err(e)) => {
                            debug!(%peer, error = %e, "TLS handshake failed");
                            return Negotiated::Done;
                        }
                        None => {
                            debug!(%peer, "TLS handshake timed out");
                            return Negotiated::Done;
                        }
                    };
                    return Negotiated::Tls(Box::new(tls), deadline, cert_hash);
                }
                None => {
                    tls_refused = true;
                    if sock.write_all(b"N").await.is_err() {
                        return Negotiated::Done;
                    }
                }
            },
            StartupPacket::GssEnc => {
                if sock.write_all(b"N").await.is_err() {
                    return Negotiated::Done;
                }
            }
            StartupPacket::Cancel { pid, secret } => {
                cancel(proxy, pid, secret).await;
                return Negotiated::Done;
            }
            StartupPacket::Startup(params) => {
                return Negotiated::Plain(sock, params, deadline, buf)
            }
        }
    }
}

async fn after_tls(
    proxy: Proxy,
    mut tls: tokio_rustls::server::TlsStream<TcpStream>,
    peer: SocketAddr,
    mut deadline: LoginDeadline,
    cert_hash: std::sync::Arc<[u8]>,
) -> Option<SessionRun> {
    let mut buf = BytesMut::with_capacity(STARTUP_READ);
    match deadline.run(read_packet(&mut tls, &mut buf)).await {
        Some(Ok(StartupPacket::Startup(params))) => {
            Box::pin(super::login::serve(
                proxy,
                tls,
                peer,
                params,
                deadline,
                buf,
                Some(cert_hash),
            ))
            .await
        }
        Some(Ok(StartupPacket::Cancel { pid, secret })) => {
            cancel(&proxy, pid, secret).await;
            None
        }
        Some(Ok(_)) => {
            refuse(
                &mut tls,
                PgError::protocol_violation("unexpected negotiation inside TLS"),
            )
            .await;
            None
        }
        Some(Err(e)) => {
            refuse(&mut tls, e).await;
            None
        }
        None => {
            refuse(&mut tls, PgError::login_timeout()).await;
            None
        }
    }
}

async fn refuse<S: tokio::io::AsyncWrite + Unpin>(s: &mut S, e: PgError) {
    debug!(code = %e.code, message = %e.message, "startup refused");
    let mut out = bytes::BytesMut::new();
    e.encode(&mut out);
    let _ = s.write_all(&out).await;
    let _ = s.shutdown().await;
}

/// First read of a client's socket: room for any ordinary StartupMessage.
const STARTUP_READ: usize = 1024;

/// Read one untagged startup-phase packet, buffering in `buf`; bytes past the packet
/// stay there.
async fn read_packet<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut BytesMut,
) -> Result<StartupPacket, PgError> {
    let incomplete = || PgError::protocol_violation("incomplete startup packet");
    loop {
        if buf.len() >= 4 {
            let len = startup::check_len(i32::from_be_bytes(buf[..4].try_into().unwrap()))?;
            if buf.len() >= len {
                let pkt = startup::decode(&buf[4..len]);
                buf.advance(len);
                return pkt;
            }
            buf.reserve(len - buf.len());
        } else if buf.capacity() - buf.len() < 4 {
            buf.reserve(STARTUP_READ);
        }
        match s.read_buf(buf).await {
            Ok(0) | Err(_) => return Err(incomplete()),
            Ok(_) => {}
        }
    }
}

/// Forward a CancelRequest to the server the keyed client is using, if any.
async fn cancel(proxy: &Proxy, pid: i32, secret: i32) {
    match proxy.cancels().lookup((pid, secret)) {
        Some(key) => {
            debug!(pid, "forwarding cancel request");
            if let Err(e) = ServerConn::cancel(&key).await {
                warn!(error = %e, "cancel request to server failed");
            }
        }
        None if proxy.cancels().contains((pid, secret)) => {
            debug!(pid, "cancel request for no running query")
        }
        None => {
            // Not one of ours: the client may be on another replica (behind a load balancer).
            let Some(l) = proxy.limits() else { return };
            match l.sessions().cancel_owner(l, (pid, secret)).await {
                Some(owner) => match owner.parse() {
                    Ok(addr) => {
                        debug!(pid, %owner, "forwarding cancel request to the replica holding the session");
                        // The other replica's own listener, inside the deployment.
                        let key = CancelKey {
                            addr: crate::backend::server::ServerAddr::Tcp(addr),
                            pid,
                            secret,
                            tls: None,
                        };
                        if let Err(e) = ServerConn::cancel(&key).await {
                            warn!(error = %e, %owner, "cancel request to replica failed");
                        }
                    }
                    Err(_) => warn!(%owner, "cancel owner address is not an address"),
                },
                None => debug!(pid, "cancel request for an unknown key"),
            }
        }
    }
}
