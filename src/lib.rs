//! tenantgate: a PostgreSQL wire-protocol routing proxy for schema-per-tenant SaaS.
//!
//! Clients connect with any PostgreSQL driver; the proxy identifies the tenant at startup,
//! authenticates the client itself, and relays its statements over pooled server
//! connections that log in as the tenant's own role with `search_path` set to its schema.
//!
//! # Layout
//!
//! - [`admin`]: the admin virtual database (SQL-style and English commands).
//! - [`app`]: wiring, listener, signals, shutdown order.
//! - [`config`]: configuration structs, environment overrides, validation.
//! - [`state`]: the shared [`state::Proxy`] handle (config, directory, pools, cancel keys).
//! - [`protocol`]: the only module that knows wire bytes; client-visible errors.
//! - [`frontend`]: client side: negotiation, TLS, authentication, the relay loop.
//! - [`router`]: pure routing decisions (tenant resolution at startup).
//! - [`backend`]: server connections and per-tenant pools with per-instance caps.
//! - [`net`]: socket options of client and server connections (keepalive, user timeout).
//! - [`catalog`]: the tenant directory trait, config-file and PostgreSQL catalog, provisioning.
//! - [`telemetry`]: per-statement events, cost, rollups (MongoDB, spool, embedded store);
//!   metrics (names in one file, Prometheus exporter).
//! - [`limits`]: plan limits, feature flags, sessions across replicas, result cache (Redis
//!   or in-process).
//! - [`cli`]: the command line.

pub mod admin;
pub mod app;
pub mod backend;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod frontend;
pub mod limits;
pub mod net;
pub mod protocol;
pub mod router;
pub mod state;
pub mod telemetry;
