//! Configuration: serde structs, defaults, environment overrides and validation.
//!
//! Owns the shape of `config/tenantgate.example.toml`. Every field documents its default and
//! whether a reload (SIGHUP / admin `RELOAD`) applies it. Loading never touches the network.

pub mod load;

pub use load::{load, ConfigError};

use serde::{Deserialize, Serialize};

/// The whole configuration file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Client listen address. Default `127.0.0.1:6432`. Reload: no.
    pub listen: String,
    /// SO_REUSEPORT on the listener: several processes share the address (restarts and
    /// upgrades without refused connections). Default false. Reload: no.
    pub reuse_port: bool,
    /// Tenant catalog URL; empty means tenants come from this file. Reload: no.
    pub catalog_url: String,
    /// Base64 of 32 bytes encrypting tenant backend-role passwords in the catalog
    /// (`tenantgate gen-key`). Required with `catalog_url`. Reload: no.
    pub catalog_key: String,
    /// Tenant migrations. Reload: yes.
    pub migrate: MigrateConfig,
    /// Statement guard. Reload: yes.
    pub guard: GuardConfig,
    /// Prometheus metrics. Reload: no.
    pub metrics: MetricsConfig,
    /// Per-statement events, cost and rollups (MongoDB or the embedded store). Reload: no.
    pub telemetry: TelemetryConfig,
    /// Redis: state shared by replicas (limits, flags, sessions, cache). Reload: no.
    pub redis: RedisConfig,
    /// Name of this replica for logs and telemetry; default the host name. Reload: no.
    pub instance_name: String,
    /// Runtime worker threads; 0 means one per CPU core; 1 runs tokio's current-thread
    /// scheduler. Default 0. Reload: no.
    pub workers: usize,
    /// TLS for clients. Reload: yes (the files are read again).
    pub tls: TlsConfig,
    /// Server pools. Reload: yes.
    pub pool: PoolConfig,
    /// Client limits. Reload: yes.
    pub limits: LimitsConfig,
    /// TCP options of client and server connections. Reload: yes (new connections).
    pub tcp: TcpConfig,
    /// Client authentication rules, first match wins. Reload: yes.
    pub auth: Vec<AuthRule>,
    /// PostgreSQL instances. Reload: yes.
    pub instances: Vec<InstanceConfig>,
    /// Tenants (when `catalog_url` is empty). Reload: yes.
    pub tenants: Vec<TenantConfig>,
    /// Trusted service users that name the tenant per transaction with a header comment
    /// (when `catalog_url` is empty; the catalog has its own). Reload: yes.
    pub service_users: Vec<LoginUserConfig>,
    /// Logins of the admin database (`dbname=admin`) when `catalog_url` is empty (the
    /// catalog has its own: `tenantgate admin-user add`). Reload: yes.
    pub admin_users: Vec<LoginUserConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:6432".into(),
            reuse_port: false,
            catalog_url: String::new(),
            catalog_key: String::new(),
            migrate: MigrateConfig::default(),
            guard: GuardConfig::default(),
            metrics: MetricsConfig::default(),
            telemetry: TelemetryConfig::default(),
            redis: RedisConfig::default(),
            instance_name: String::new(),
            workers: 0,
            tls: TlsConfig::default(),
            pool: PoolConfig::default(),
            limits: LimitsConfig::default(),
            tcp: TcpConfig::default(),
            auth: Vec::new(),
            instances: Vec::new(),
            tenants: Vec::new(),
            service_users: Vec::new(),
            admin_users: Vec::new(),
        }
    }
}

/// The statement guard (isolation checks before statements reach PostgreSQL).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GuardConfig {
    /// Check statements. Default true.
    pub enabled: bool,
    /// Refuse statements the SQL parser does not understand. Default false.
    pub strict: bool,
    /// The schema applications believe they use; references to it (`public.users`,
    /// `SET search_path TO public`, `SHOW search_path`) are rewritten to the tenant's
    /// schema. Empty disables the rewriting. Default `public`.
    pub logical_schema: String,
    /// Statement analyses cached by text. Default 10000.
    pub cache_size: usize,
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            enabled: true,
            strict: false,
            logical_schema: "public".into(),
            cache_size: 10_000,
        }
    }
}

/// Prometheus exporter.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address serving `/metrics`; empty disables. Default empty.
    pub listen: String,
}

/// Per-statement telemetry: events, cost, rollups, and where they are stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Record an event per statement. Default true.
    pub enabled: bool,
    /// MongoDB URL (`mongodb://host:port`); empty stores events in the embedded store under
    /// `dir`. Default empty.
    pub mongodb_url: String,
    /// MongoDB database. Default `tenantgate`.
    pub mongodb_database: String,
    /// Directory of the spool (and of the embedded store). Default `data/telemetry`.
    pub dir: String,
    /// Events queued between the relay and the writer; a full queue drops (and counts)
    /// events rather than slow queries down. Default 100000.
    pub queue_capacity: usize,
    /// Events per MongoDB insert. Default 1000.
    pub batch_size: usize,
    /// Longest wait before a partial batch is written, ms. Default 500.
    pub flush_ms: u64,
    /// Bound on a MongoDB call (insert, ping), ms; slower means down, events spool. Default 2000.
    pub mongodb_timeout_ms: u64,
    /// Bound on the spool file; past it events are dropped and counted. Default 1 GiB.
    pub spool_max_bytes: u64,
    /// Raw events are kept this many days (TTL index); rollups are kept. Default 30.
    pub retention_days: u64,
    /// How often rollups of minutes with new events are recomputed, ms. Default 10000.
    pub rollup_interval_ms: u64,
    /// Statement sample text kept per event, bytes. Default 1024.
    pub sample_bytes: usize,
    /// Embedded store: bytes of event files kept on disk. Default 256 MiB.
    pub embedded_max_bytes: u64,
    /// Embedded store: hours of minute rollups kept in memory. Default 6.
    pub embedded_minute_hours: u64,
    /// Tenants with their own metric labels (the busiest); the rest are `_other`. Default 20.
    pub top_tenants: usize,
    /// Cost rates for tenants whose plan has none (tenants from the config file).
    pub cost_per_ms: f64,
    pub cost_per_row: f64,
    pub cost_per_kib: f64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            enabled: true,
            mongodb_url: String::new(),
            mongodb_database: "tenantgate".into(),
            dir: "data/telemetry".into(),
            queue_capacity: 100_000,
            batch_size: 1000,
            flush_ms: 500,
            mongodb_timeout_ms: 2000,
            spool_max_bytes: 1 << 30,
            retention_days: 30,
            rollup_interval_ms: 10_000,
            sample_bytes: 1024,
            embedded_max_bytes: 256 << 20,
            embedded_minute_hours: 6,
            top_tenants: 20,
            cost_per_ms: 0.0,
            cost_per_row: 0.0,
            cost_per_kib: 0.0,
        }
    }
}

/// Redis, shared by proxy replicas for limits, flags, sessions, cancel routing and the
/// result cache. Without a URL the same features work inside one process.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://127.0.0.1:6379/0`; empty keeps everything in this process. Default empty.
    pub url: String,
    /// Prefix of every key and of the pub/sub channel. Default `tenantgate:`.
    pub key_prefix: String,
    /// Bound on each Redis call, ms; slower counts as down. Default 100.
    pub timeout_ms: u64,
    /// While Redis is down: false enforces limits per replica (fail open); true refuses
    /// statements and logins of limited tenants (53400). Default false.
    pub fail_closed: bool,
    /// Session heartbeat, ms; a session missing three is gone. Default 5000.
    pub heartbeat_ms: u64,
    /// Address other replicas forward CancelRequests for this replica's clients to.
    /// Default empty: the listen address.
    pub advertise: String,
    /// In-process result cache bound (without Redis), bytes. Default 64 MiB.
    pub cache_max_bytes: usize,
    /// Largest single cached answer, bytes. Default 1 MiB.
    pub cache_entry_max_bytes: usize,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: String::new(),
            key_prefix: "tenantgate:".into(),
            timeout_ms: 100,
            fail_closed: false,
            heartbeat_ms: 5000,
            advertise: String::new(),
            cache_max_bytes: 64 << 20,
            cache_entry_max_bytes: 1 << 20,
        }
    }
}

/// Tenant migration runner settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MigrateConfig {
    /// Tenants migrated at once. Default 4.
    pub concurrency: usize,
}

impl Default for MigrateConfig {
    fn default() -> Self {
        MigrateConfig { concurrency: 4 }
    }
}

/// TLS certificate and key (PEM). Both empty: SSLRequest is answered 'N'.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain path. Default empty.
    pub cert: String,
    /// PEM private key path. Default empty.
    pub key: String,
}

impl TlsConfig {
    pub fn enabled(&self) -> bool {
        !self.cert.is_empty() && !self.key.is_empty()
    }
}

/// How long a client holds a server connection.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    /// One transaction (default).
    #[default]
    Transaction,
    /// The client's whole session.
    Session,
}

/// Server pool settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    /// Default pool mode. Default `transaction`.
    pub mode: PoolMode,
    /// Server connections per tenant. Default 10.
    pub default_size: usize,
    /// Server connections per instance across tenants. Default 100.
    pub instance_max_connections: usize,
    /// Wait for a server connection before `53300`. Default 5000 ms.
    pub query_wait_timeout_ms: u64,
    /// Idle server connections are closed after this. 0 disables. Default 600000 ms.
    pub idle_timeout_ms: u64,
    /// Server connections are retired after this. 0 disables. Default 3600000 ms.
    pub lifetime_ms: u64,
    /// Timeout to open and authenticate a server connection. Default 5000 ms.
    pub connect_timeout_ms: u64,
    /// Prepared statements kept per server connection. Default 256.
    pub prepared_statements_cache: usize,
    /// A connection idle this long is checked (non-blocking read) before it is handed out;
    /// idle connections are also checked every second. Default 1000 ms.
    pub server_check_delay_ms: u64,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            mode: PoolMode::Transaction,
            default_size: 10,
            instance_max_connections: 100,
            query_wait_timeout_ms: 5000,
            idle_timeout_ms: 600_000,
            lifetime_ms: 3_600_000,
            connect_timeout_ms: 5000,
            prepared_statements_cache: 256,
            server_check_delay_ms: 1000,
        }
    }
}

/// Client-side limits.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest non-COPY client message. Default 64 MiB.
    pub max_message_bytes: usize,
    /// Concurrent clients. Default 10000.
    pub max_clients: usize,
    /// Startup + authentication deadline. Default 15000 ms.
    pub client_login_timeout_ms: u64,
    /// Drain time on SIGTERM. Default 30000 ms.
    pub shutdown_timeout_ms: u64,
    /// Enforce tenants' plan limits (query rate, daily quota, client connections).
    /// Default true.
    pub enforce_plans: bool,
    /// A client idle inside a transaction this long is disconnected (25P03) and its
    /// transaction rolled back, freeing the server connection. 0 disables. Default 0.
    pub idle_transaction_timeout_ms: u64,
    /// A client idle outside a transaction this long is disconnected (57P05). 0 disables.
    /// Default 0.
    pub client_idle_timeout_ms: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_message_bytes: 64 << 20,
            max_clients: 10_000,
            client_login_timeout_ms: 15_000,
            shutdown_timeout_ms: 30_000,
            enforce_plans: true,
            idle_transaction_timeout_ms: 0,
            client_idle_timeout_ms: 0,
        }
    }
}

/// TCP options of every client and server socket. A peer that vanished without closing
/// (a host that crashed, a NAT or firewall that dropped the connection) is noticed by
/// keepalive probes while the connection is idle, and by the user timeout while data waits
/// unacknowledged: its client's transaction is rolled back and the server connection freed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TcpConfig {
    /// Send keepalive probes on idle connections. Default true.
    pub keepalive: bool,
    /// Idle time before the first probe. Default 60 s.
    pub keepalive_idle_s: u64,
    /// Time between probes. Default 10 s.
    pub keepalive_interval_s: u64,
    /// Unanswered probes before the connection is dropped. Default 6.
    pub keepalive_count: u32,
    /// Data unacknowledged this long drops the connection (TCP_USER_TIMEOUT). 0 leaves the
    /// system's retransmission limit (about 15 minutes). Default 0.
    pub user_timeout_ms: u64,
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            keepalive: true,
            keepalive_idle_s: 60,
            keepalive_interval_s: 10,
            keepalive_count: 6,
            user_timeout_ms: 0,
        }
    }
}

/// Client authentication method.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum AuthMethod {
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    Md5,
    Trust,
    Reject,
}

/// One authentication rule.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuthRule {
    /// Login user name or `*`. Default `*`.
    #[serde(default = "star")]
    pub user: String,
    /// Client address CIDR, or `*` (the default) for any address.
    #[serde(default)]
    pub address: ClientAddress,
    /// Method to use.
    pub method: AuthMethod,
}

fn star() -> String {
    "*".into()
}

/// The client addresses an auth rule covers: `*`, or a CIDR parsed once at load (a login
/// only compares). A `/0` network of either family covers every address, as `*` does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum ClientAddress {
    #[default]
    Any,
    Net(ipnet::IpNet),
}

impl ClientAddress {
    pub fn covers(&self, addr: std::net::IpAddr) -> bool {
        match self {
            ClientAddress::Any => true,
            ClientAddress::Net(n) => n.prefix_len() == 0 || n.contains(&addr),
        }
    }
}

impl std::str::FromStr for ClientAddress {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "*" {
            return Ok(ClientAddress::Any);
        }
        s.parse()
            .map(ClientAddress::Net)
            .map_err(|_| format!("auth address {s:?} is not a CIDR"))
    }
}

impl TryFrom<String> for ClientAddress {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<ClientAddress> for String {
    fn from(a: ClientAddress) -> String {
        match a {
            ClientAddress::Any => "*".into(),
            ClientAddress::Net(n) => n.to_string(),
        }
    }
}

/// A PostgreSQL server tenants live on.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InstanceConfig {
    pub name: String,
    #[serde(default = "localhost")]
    pub host: String,
    #[serde(default = "pg_port")]
    pub port: u16,
    #[serde(default = "postgres_db")]
    pub dbname: String,
    /// Password for backend roles without one of their own.
    #[serde(default)]
    pub password: String,
    /// TLS to this instance, as libpq's sslmode: disable (default), prefer, require,
    /// verify-ca or verify-full.
    #[serde(default)]
    pub sslmode: String,
    /// PEM file of the CAs to trust (verify-ca, verify-full; require checks it when given).
    #[serde(default)]
    pub sslrootcert: String,
}

impl InstanceConfig {
    /// The TLS settings (`sslmode` checked by validation). Without an sslmode,
    /// `sslrootcert = "system"` means verify-full, as in libpq.
    pub fn tls(&self) -> crate::backend::tls::ServerTls {
        use crate::backend::tls::{ServerTls, SslMode, SYSTEM_ROOTS};
        let mode = match SslMode::parse(&self.sslmode).unwrap_or_default() {
            SslMode::Disable if self.sslmode.is_empty() && self.sslrootcert == SYSTEM_ROOTS => {
                SslMode::VerifyFull
            }
            mode => mode,
        };
        ServerTls {
            mode,
            root_cert: self.sslrootcert.clone(),
        }
    }
}

fn localhost() -> String {
    "127.0.0.1".into()
}
fn pg_port() -> u16 {
    5432
}
fn postgres_db() -> String {
    "postgres".into()
}

/// A tenant defined in the file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    pub key: String,
    #[serde(default = "primary")]
    pub instance: String,
    /// Schema; empty means the placement is used as it is.
    #[serde(default)]
    pub schema: String,
    /// Database; empty means the instance's dbname.
    #[serde(default)]
    pub database: String,
    pub backend_user: String,
    #[serde(default)]
    pub backend_password: String,
    /// `transaction`/`session`; empty means `[pool] mode`.
    #[serde(default)]
    pub pool_mode: String,
    /// 0 means `[pool] default_size`.
    #[serde(default)]
    pub pool_size: usize,
    /// Plan name for telemetry labels; costs use `[telemetry]` rates. Default `default`.
    #[serde(default = "default_plan")]
    pub plan: String,
    /// Statements per second; 0 = unlimited. Default 0.
    #[serde(default)]
    pub queries_per_second: u32,
    /// Statements per UTC day; 0 = unlimited. Default 0.
    #[serde(default)]
    pub queries_per_day: u64,
    /// Client connections across replicas; 0 = unlimited. Default 0.
    #[serde(default)]
    pub max_connections: u32,
    #[serde(default)]
    pub users: Vec<LoginUserConfig>,
}

impl TenantConfig {
    /// A tenant as the file would give it with only `key` and `backend_user` set: on the
    /// `primary` instance, plan `default`, no schema, limits or login users.
    pub fn new(key: &str, backend_user: &str) -> Self {
        TenantConfig {
            key: key.into(),
            instance: primary(),
            schema: String::new(),
            database: String::new(),
            backend_user: backend_user.into(),
            backend_password: String::new(),
            pool_mode: String::new(),
            pool_size: 0,
            plan: default_plan(),
            queries_per_second: 0,
            queries_per_day: 0,
            max_connections: 0,
            users: Vec::new(),
        }
    }
}

fn default_plan() -> String {
    "default".into()
}

fn primary() -> String {
    "primary".into()
}

/// A tenant login user.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LoginUserConfig {
    pub name: String,
    #[serde(default)]
    pub password: String,
    #[serde(default)]
    pub scram_verifier: String,
}
