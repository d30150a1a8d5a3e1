//! Pure routing decisions: no IO, no shared state.
//!
//! [`startup`] decides which tenant and login user a new client is, from its startup parameters.

pub mod startup;
