//! Socket options shared by client and server connections.

use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};

use crate::config::TcpConfig;

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
