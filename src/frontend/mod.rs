//! Client side: accept connections, negotiate TLS, authenticate, then relay.
//!
//! - [`listener`]: accept loop and the startup-packet negotiation (SSL/GSS/cancel).
//! - [`login`]: tenant resolution, authentication and the session's first messages.
//! - [`auth`]: SCRAM-SHA-256 / md5 / trust logic without IO.
//! - [`session`] + [`relay`]: the relay loop and its pure bookkeeping; [`stmt_log`]: which
//!   statements await completion, for telemetry events.
//! - [`cancel`]: the proxy's cancel keys; [`deadline`]: the login's one timer; [`signal`]:
//!   a session's drain and end signal.
//! - [`tls`]: rustls acceptor.

pub mod auth;
pub mod cancel;
pub mod deadline;
pub mod guard;
pub mod listener;
pub mod login;
pub mod relay;
pub mod session;
pub mod signal;
pub mod stmt_log;
pub mod stream;
pub mod tls;
