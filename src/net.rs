//! Socket options shared by client and server connections.

use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::net::{TcpListener, TcpSocket};

use crate::config::TcpConfig;

/// Bind and listen on `addr` with `[tcp]` set before the socket listens, so that even
/// the first clients inherit it. As tokio's `TcpListener::bind`: SO_REUSEADDR, a backlog
/// of 1024, the first address that binds; SO_REUSEPORT when `reuse_port`.
pub async fn listen(addr: &str, cfg: &TcpConfig, reuse_port: bool) -> std::io::Result<TcpListener> {
    let mut last = None;
    for a in tokio::net::lookup_host(addr).await? {
        let sock = if a.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        sock.set_reuseaddr(true)?;
        if reuse_port {
            sock.set_reuseport(true)?;
        }
        set_keepalive(SockRef::from(&sock), cfg)?;
        match sock.bind(a) {
            Ok(()) => return sock.listen(1024),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{addr} resolves to no address"),
        )
    }))
}

/// Apply `[tcp]`'s keepalive probes and user timeout to a socket. Set on the listener,
/// they are inherited by every accepted socket (Linux copies a listener's TCP options to
/// its connections), so a login pays no system call for them.
pub fn set_keepalive(sock: SockRef<'_>, cfg: &TcpConfig) -> std::io::Result<()> {
    sock.set_keepalive(cfg.keepalive)?;
    if cfg.keepalive {
        sock.set_tcp_keepalive(
            &TcpKeepalive::new()
                .with_time(Duration::from_secs(cfg.keepalive_idle_s))
                .with_interval(Duration::from_secs(cfg.keepalive_interval_s))
                .with_retries(cfg.keepalive_count),
        )?;
    }
    sock.set_tcp_user_timeout(
        (cfg.user_timeout_ms > 0).then(|| Duration::from_millis(cfg.user_timeout_ms)),
    )
}
