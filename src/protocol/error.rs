//! Client-visible errors. Every error a client sees is built here with an explicit SQLSTATE;
//! internal error text (IO errors, server addresses) never goes into these messages.

use bytes::{BufMut, BytesMut};

/// ErrorResponse severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The statement failed; the connection stays usable.
    Error,
    /// The connection is closed after this message.
    Fatal,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
        }
    }
}

/// A PostgreSQL-style error the proxy reports to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgError {
    pub severity: Severity,
    pub code: std::borrow::Cow<'static, str>,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.severity.as_str(),
            self.code,
            self.message
        )
    }
}

impl std::error::Error for PgError {}

impl PgError {
    fn new(severity: Severity, code: &'static str, message: impl Into<String>) -> Self {
        PgError {
            severity,
            code: code.into(),
            message: message.into(),
            detail: None,
            hint: None,
        }
    }

    pub fn with_detail(mut self, d: impl Into<String>) -> Self {
        self.detail = Some(d.into());
        self
    }

    pub fn with_hint(mut self, h: impl Into<String>) -> Self {
        self.hint = Some(h.into());
        self
    }

    /// The same error at severity ERROR: the session goes on (for errors that are FATAL
    /// at login and not for a later statement).
    pub fn recoverable(mut self) -> Self {
        self.severity = Severity::Error;
        self
    }

    pub fn is_fatal(&self) -> bool {
        self.severity == Severity::Fatal
    }

    /// An error PostgreSQL itself raised about the client's own request (e.g. an unknown
    /// setting in the startup packet), passed on with its SQLSTATE and message.
    pub fn from_server(severity: Severity, code: &str, message: &str) -> Self {
        PgError {
            severity,
            code: if code.len() == 5 {
                code.to_owned().into()
            } else {
                "XX000".into()
            },
            message: message.to_owned(),
            detail: None,
            hint: None,
        }
    }

    /// 28P01: wrong password, unknown user or unknown tenant (deliberately the same).
    pub fn auth_failed(user: &str) -> Self {
        Self::new(
            Severity::Fatal,
            "28P01",
            format!("password authentication failed for user \"{user}\""),
        )
    }

    /// 28000: an auth rule rejects the client, or the method cannot be used.
    pub fn auth_rejected(user: &str, why: &str) -> Self {
        Self::new(
            Severity::Fatal,
            "28000",
            format!("authentication rejected for user \"{user}\": {why}"),
        )
    }

    /// 08P01: the client broke the protocol. Fatal.
    pub fn protocol_violation(msg: impl Into<String>) -> Self {
        Self::new(Severity::Fatal, "08P01", msg)
    }

    /// 0A000 at startup: unsupported protocol or feature. Fatal.
    pub fn unsupported(msg: impl Into<String>) -> Self {
        Self::new(Severity::Fatal, "0A000", msg)
    }

    /// 53300: no server connection became free in time. Recoverable.
    pub fn pool_timeout(tenant: &str, waited_ms: u64) -> Self {
        Self::new(
            Severity::Error,
            "53300",
            format!("no server connection available for tenant \"{tenant}\""),
        )
        .with_detail(format!("Waited {waited_ms} ms for a pooled connection."))
        .with_hint("Retry later, or raise the tenant's pool_size / pool.query_wait_timeout_ms.")
    }

    /// 53400: a tenant's plan limit was reached. Recoverable: the connection stays usable.
    pub fn limit_exceeded(tenant: &str, limit: &str, value: u64, retry_after_ms: u64) -> Self {
        Self::new(
            Severity::Error,
            "53400",
            format!("tenant \"{tenant}\" is over its {limit} limit ({value})"),
        )
        .with_detail(format!("Retry after {retry_after_ms} ms."))
        .with_hint("Slow down, or move the tenant to a plan with a higher limit.")
    }

    /// 53400: limits cannot be checked (Redis unreachable, `redis.fail_closed`). Recoverable.
    pub fn limiter_unavailable(tenant: &str) -> Self {
        Self::new(
            Severity::Error,
            "53400",
            format!("limits for tenant \"{tenant}\" cannot be checked right now"),
        )
        .with_detail(
            "The shared limit store is unreachable and the proxy is configured to fail closed.",
        )
        .with_hint("Retry later.")
    }

    /// 53300 at login: the tenant has as many client connections as its plan allows. Fatal.
    pub fn tenant_connections_full(tenant: &str, cap: u32) -> Self {
        Self::new(
            Severity::Fatal,
            "53300",
            format!("too many connections for tenant \"{tenant}\""),
        )
        .with_detail(format!(
            "The tenant's plan allows {cap} client connections."
        ))
    }

    /// 25006: the tenant is read-only (feature flag `read_only`). Recoverable.
    pub fn tenant_read_only(tenant: &str, what: &str) -> Self {
        Self::new(
            Severity::Error,
            "25006",
            format!("cannot execute {what}: tenant \"{tenant}\" is read-only"),
        )
        .with_hint("The tenant's read_only flag is set.")
    }

    /// 42501: a statement tries to change a setting the proxy holds for the tenant.
    pub fn setting_held(tenant: &str, setting: &str) -> Self {
        Self::new(
            Severity::Error,
            "42501",
            format!("{setting} is set by tenantgate for tenant \"{tenant}\" and cannot be changed"),
        )
    }

    /// 57P01, fatal: a session-pooled client's server session started before the
    /// tenant's read_only or max_statement_ms flag changed.
    pub fn tenant_settings_changed(tenant: &str) -> Self {
        Self::new(
            Severity::Fatal,
            "57P01",
            format!("terminating connection: the read_only or max_statement_ms flag of tenant \"{tenant}\" changed"),
        )
        .with_hint("Reconnect: the new session starts with the tenant's current settings.")
    }

    /// 0A000, fatal: the server session turned standard_conforming_strings off.
    pub fn nonstandard_strings() -> Self {
        Self::new(
            Severity::Fatal,
            "0A000",
            "standard_conforming_strings was turned off: tenantgate reads strings as standard SQL and closes the session",
        )
    }

    /// 0A000, fatal: the server session switched to a client encoding the proxy cannot
    /// read statements in ([`crate::router::encoding`]).
    pub fn unreadable_client_encoding(name: &str) -> Self {
        Self::new(
            Severity::Fatal,
            "0A000",
            format!(
                "{}; tenantgate closes the session",
                crate::router::encoding::refusal(name)
            ),
        )
    }

    /// 0A000: a feature this proxy (configuration) does not offer. Recoverable.
    pub fn feature_unsupported(msg: &str) -> Self {
        Self::new(Severity::Error, "0A000", msg)
    }

    /// An admin command failed with `code` (a catalog, telemetry or limits error).
    pub fn admin_failed(code: &str, msg: &str) -> Self {
        PgError {
            severity: Severity::Error,
            code: std::borrow::Cow::Owned(code.to_owned()),
            message: msg.to_owned(),
            detail: None,
            hint: None,
        }
    }

    /// 42501 at login: the admin database is for admin users only. Fatal.
    pub fn admin_only(user: &str) -> Self {
        Self::new(
            Severity::Fatal,
            "42501",
            format!("permission denied: \"{user}\" is not an admin user of the admin database"),
        )
    }

    /// 42601: text that is neither an admin command nor understood English. Recoverable.
    pub fn admin_unknown(suggestions: &[String]) -> Self {
        let mut e = Self::new(
            Severity::Error,
            "42601",
            "not an admin command, and not understood as English",
        );
        if !suggestions.is_empty() {
            e.hint = Some(format!("Did you mean: {}", suggestions.join("; ")));
        }
        e
    }

    /// 53300 at login: too many clients. Fatal.
    pub fn too_many_clients() -> Self {
        Self::new(Severity::Fatal, "53300", "sorry, too many clients already")
    }

    /// 08006: the server for this tenant could not be reached. Recoverable.
    pub fn server_unavailable(tenant: &str) -> Self {
        Self::new(
            Severity::Error,
            "08006",
            format!("could not connect to the database server of tenant \"{tenant}\""),
        )
        .with_hint("The proxy will retry on the next statement.")
    }

    /// 08006: the server connection was lost mid-session. Fatal.
    pub fn server_lost() -> Self {
        Self::new(
            Severity::Fatal,
            "08006",
            "server closed the connection unexpectedly",
        )
        .with_detail(
            "The database server connection serving this session ended while it was in use.",
        )
    }

    /// 08006: the client hung up while its statement waited for a server connection (for
    /// the statement's event; the client is gone). Fatal.
    pub fn client_left() -> Self {
        Self::new(
            Severity::Fatal,
            "08006",
            "client closed the connection while waiting for a server connection",
        )
    }

    /// 25P03, fatal: the client sat idle inside a transaction past
    /// `limits.idle_transaction_timeout_ms` (PostgreSQL's own words and code).
    pub fn idle_in_transaction_timeout() -> Self {
        Self::new(
            Severity::Fatal,
            "25P03",
            "terminating connection due to idle-in-transaction timeout",
        )
    }

    /// 57P05, fatal: the client sat idle past `limits.client_idle_timeout_ms`.
    pub fn idle_session_timeout() -> Self {
        Self::new(
            Severity::Fatal,
            "57P05",
            "terminating connection due to idle-session timeout",
        )
    }

    /// 57P01: the proxy is shutting down. Fatal.
    pub fn shutting_down() -> Self {
        Self::new(
            Severity::Fatal,
            "57P01",
            "terminating connection because the proxy is shutting down",
        )
    }

    /// 57P03 at login: the tenant exists but may not connect now. Fatal.
    pub fn tenant_unavailable(tenant: &str, status: &str) -> Self {
        Self::new(
            Severity::Fatal,
            "57P03",
            format!("tenant \"{tenant}\" is {status} and cannot accept connections"),
        )
        .with_hint("Contact the service operator.")
    }

    /// 57P01: the tenant was suspended or removed while connected. Fatal.
    pub fn tenant_ended(tenant: &str) -> Self {
        Self::new(
            Severity::Fatal,
            "57P01",
            format!("terminating connection because tenant \"{tenant}\" is no longer active"),
        )
    }

    /// 3D000: a service user's statement names no tenant and the session has none.
    pub fn no_tenant() -> Self {
        Self::new(Severity::Error, "3D000", "no tenant selected for this statement")
            .with_hint("Start the statement with a header comment such as /* tenant: acme */, or name the tenant at login.")
    }

    /// 3D000: a header names a tenant that does not exist.
    pub fn unknown_tenant(tenant: &str) -> Self {
        Self::new(
            Severity::Error,
            "3D000",
            format!("tenant \"{tenant}\" does not exist"),
        )
    }

    /// 25001: a header names another tenant inside a transaction.
    pub fn tenant_switch_in_transaction(tenant: &str) -> Self {
        Self::new(
            Severity::Error,
            "25001",
            format!("cannot switch to tenant \"{tenant}\" inside a transaction"),
        )
        .with_hint("Name the tenant in the first statement of the transaction.")
    }

    /// 0A000: a header names another tenant in a session that holds its tenant's server
    /// connection for good (session pooling).
    pub fn tenant_switch_in_session(tenant: &str, current: &str) -> Self {
        Self::new(
            Severity::Error,
            "0A000",
            format!(
                "cannot switch to tenant \"{tenant}\": this session holds a server connection of tenant \"{current}\" (session pooling)"
            ),
        )
        .with_hint("Log in as the service user without a tenant to name tenants per transaction.")
    }

    /// 42501: a user that is not a trusted service user names another tenant.
    pub fn tenant_not_allowed(tenant: &str) -> Self {
        Self::new(
            Severity::Error,
            "42501",
            format!("permission denied to use tenant \"{tenant}\": only trusted service users may name the tenant per statement"),
        )
    }

    /// 42501: the statement guard refused a statement. Recoverable.
    pub fn guard_refused(message: &str) -> Self {
        Self::new(Severity::Error, "42501", message)
    }

    /// 57P01: an administrator closed this client. Fatal.
    pub fn killed() -> Self {
        Self::new(
            Severity::Fatal,
            "57P01",
            "terminating connection due to administrator command",
        )
    }

    /// 08P01 for an oversized message. Fatal.
    pub fn message_too_large(len: usize, max: usize) -> Self {
        Self::new(
            Severity::Fatal,
            "08P01",
            format!("message of {len} bytes exceeds the proxy's limit of {max} bytes"),
        )
        .with_hint("Raise limits.max_message_bytes, or send large data with COPY.")
    }

    /// 57014-like login timeout. Fatal.
    pub fn login_timeout() -> Self {
        Self::new(
            Severity::Fatal,
            "08006",
            "client did not complete authentication in time",
        )
    }

    /// 08004: server-side login failed for the tenant's backend role. Fatal at login.
    pub fn backend_login_failed(tenant: &str) -> Self {
        Self::new(
            Severity::Fatal,
            "08004",
            format!("the proxy could not log in to the database of tenant \"{tenant}\""),
        )
        .with_hint("Check the tenant's backend role and password in the proxy configuration.")
    }

    /// Append this error as an ErrorResponse message.
    pub fn encode(&self, buf: &mut BytesMut) {
        let start = buf.len();
        buf.put_u8(b'E');
        buf.put_i32(0);
        let sev = self.severity.as_str();
        for (tag, val) in [
            (b'S', sev),
            (b'V', sev),
            (b'C', &*self.code),
            (b'M', self.message.as_str()),
        ] {
            field(buf, tag, val);
        }
        if let Some(d) = &self.detail {
            field(buf, b'D', d);
        }
        if let Some(h) = &self.hint {
            field(buf, b'H', h);
        }
        buf.put_u8(0);
        let len = (buf.len() - start - 1) as i32;
        buf[start + 1..start + 5].copy_from_slice(&len.to_be_bytes());
    }
}

fn field(buf: &mut BytesMut, tag: u8, val: &str) {
    buf.put_u8(tag);
    // A NUL inside a field would end it early; strip it rather than corrupt the frame.
    buf.extend(val.bytes().filter(|&b| b != 0));
    buf.put_u8(0);
}

/// Read the SQLSTATE and severity out of an ErrorResponse body (after the length).
pub fn parse_error_fields(body: &[u8]) -> (Option<&[u8]>, Option<&[u8]>) {
    let mut code = None;
    let mut sev = None;
    let mut rest = body;
    while let Some((&tag, tail)) = rest.split_first() {
        if tag == 0 {
            break;
        }
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        match tag {
            b'C' => code = Some(&tail[..end]),
            b'V' => sev = Some(&tail[..end]),
            b'S' if sev.is_none() => sev = Some(&tail[..end]),
            _ => {}
        }
        rest = tail.get(end + 1..).unwrap_or(&[]);
    }
    (code, sev)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_response_round_trips() {
        let mut b = BytesMut::new();
        PgError::pool_timeout("acme", 10).encode(&mut b);
        assert_eq!(b[0], b'E');
        let len = i32::from_be_bytes([b[1], b[2], b[3], b[4]]) as usize;
        assert_eq!(len + 1, b.len());
        let (code, sev) = parse_error_fields(&b[5..]);
        assert_eq!(code, Some(&b"53300"[..]));
        assert_eq!(sev, Some(&b"ERROR"[..]));
    }
}
