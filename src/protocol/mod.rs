//! The only place that knows PostgreSQL wire bytes.
//!
//! - [`frame`]: message headers and the few message bodies the proxy must read or rewrite.
//! - [`startup`]: the untagged startup-phase packets (StartupMessage, SSLRequest, CancelRequest).
//! - [`write`]: messages the proxy itself sends to clients and servers.
//! - [`error`]: client-visible errors with explicit SQLSTATEs.
//!
//! Nothing here does IO or holds state beyond a buffer.

pub mod error;
pub mod frame;
pub mod startup;
pub mod write;

pub use error::{PgError, Severity};
