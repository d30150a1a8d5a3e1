//! Server side: connections to PostgreSQL and the per-tenant pools that hold them.
//!
//! - [`server`]: one authenticated server connection and its tracked session state.
//! - [`pool`]: per-tenant pools with a per-instance cap, queueing, idle/lifetime expiry.
//! - [`params`]: a server's ParameterStatus report, kept encoded for the logins that repeat it.
//! - [`prepared`]: the per-connection cache of statements prepared by the proxy.
//! - [`settings`]: a client's settings, named by an id shared by equal lists.
//! - [`tls`] and [`stream`]: TLS to the server (libpq's sslmode), and the stream it gives.

pub mod params;
pub mod pool;
pub mod prepared;
pub mod server;
pub mod settings;
pub mod stream;
pub mod tls;

pub use server::{BackendError, ServerConn};
