//! Pure routing decisions: no IO, no shared state.
//!
//! - [`startup`] decides which tenant and login user a new client is, from its startup
//!   parameters.
//! - [`guard`] checks statements against a tenant's isolation policy.
//! - [`header`] reads `/* tenant: key */` header comments.

pub mod guard;
pub mod header;
pub mod startup;
