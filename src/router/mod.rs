//! Pure routing decisions: no IO, no shared state.
//!
//! - [`startup`] decides which tenant and login user a new client is, from its startup
//!   parameters.
//! - [`guard`] checks statements against a tenant's isolation policy.
//! - [`header`] reads `/* tenant: key */` header comments.
//! - [`rewrite`] maps the logical schema (`public`) to the tenant's schema.
//! - [`facts`] reads what the per-statement checks need from a text, in one pass.
//! - [`encoding`] knows the client encodings the checks cannot read.
//! - [`escapes`] rewrites string escapes the tokenizer rejects into ones it reads.
//! - [`text`] has the case-insensitive searches these checks share.

pub mod encoding;
pub mod escapes;
pub mod facts;
pub mod guard;
pub mod header;
pub mod readonly;
pub mod rewrite;
pub mod startup;
pub mod text;
