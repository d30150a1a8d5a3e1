//! The command line: `serve`, `setup`, `tenant ...`, `admin-user add`, `migrate`,
//! `instance add`, `gen-key`, `check-config`. Each command loads the config (file plus
//! `TENANTGATE_*` environment) and talks to the catalog; passwords can come from an
//! argument, an environment variable or stdin, and are never printed unless generated.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};

use crate::catalog::migrate::{migrate_all, MigrateOptions, TenantOutcome};
use crate::catalog::provision::NewTenant;
use crate::catalog::{crypto, migrations, sample, Catalog};
use crate::config::{self, Config};

#[derive(Parser)]
#[command(
    name = "tenantgate",
    version,
    about = "PostgreSQL routing proxy for schema-per-tenant SaaS"
)]
pub struct Cli {
    /// Config file (TOML). Every key can also come from TENANTGATE_* variables.
    #[arg(long, short, global = true, env = "TENANTGATE_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the proxy.
    Serve,
    /// Validate the config and print the effective configuration.
    CheckConfig,
    /// Print a new random catalog_key.
    GenKey,
    /// Create or upgrade the master catalog; with --sample, also the five sample tenants.
    Setup {
        #[arg(long)]
        sample: bool,
    },
    /// Manage tenants.
    #[command(subcommand)]
    Tenant(TenantCmd),
    /// Manage admin logins of the admin database.
    #[command(subcommand, name = "admin-user")]
    AdminUser(AdminUserCmd),
    /// Manage trusted service users (name the tenant per transaction with /* tenant: key */).
    #[command(subcommand, name = "service-user")]
    ServiceUser(AdminUserCmd),
    /// Register PostgreSQL instances tenants can live on.
    #[command(subcommand)]
    Instance(InstanceCmd),
    /// Walk through the product against a running proxy with the sample tenants: provision,
    /// per-tenant queries, usage and cost, slow queries, cross-tenant analytics.
    Demo {
        /// The proxy's address.
        #[arg(long, default_value = "127.0.0.1:6432")]
        proxy: String,
        /// Admin login of the admin database (default: the sample admin).
        #[arg(long, default_value = "admin")]
        admin_user: String,
        #[arg(
            long,
            default_value = "admin-demo-password",
            env = "TENANTGATE_ADMIN_PASSWORD"
        )]
        admin_password: String,
        /// Database name tenant clients use (the demo's catalog database).
        #[arg(long, default_value = "tenantgate")]
        dbname: String,
    },
    /// Per-tenant feature flags in the shared Redis (`[redis] url`).
    #[command(subcommand)]
    Flags(FlagsCmd),
    /// Apply pending tenant migrations to every tenant schema.
    Migrate {
        /// Tenants migrated at once (default: migrate.concurrency).
        #[arg(long)]
        concurrency: Option<usize>,
        /// Stop scheduling tenants after the first failure.
        #[arg(long)]
        fail_fast: bool,
        /// Read NNNN_*.sql tenant migrations from this directory instead of the built-in ones.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Only these tenants.
        #[arg(long = "tenant")]
        tenants: Vec<String>,
    },
}

#[derive(Subcommand)]
pub enum FlagsCmd {
    /// Set a flag (read_only, query_cache, slow_query_ms, max_statement_ms, or your own).
    Set {
        tenant: String,
        name: String,
        value: String,
    },
    /// Remove a flag.
    Unset { tenant: String, name: String },
    /// List a tenant's flags.
    List { tenant: String },
}

#[derive(Args, Clone, Default)]
pub struct PasswordArgs {
    /// The password (visible in shell history; prefer --password-env or --password-stdin).
    #[arg(long)]
    password: Option<String>,
    /// Read the password from this environment variable.
    #[arg(long)]
    password_env: Option<String>,
    /// Read the password from the first line of stdin.
    #[arg(long)]
    password_stdin: bool,
}

#[derive(Subcommand)]
pub enum TenantCmd {
    /// Create a tenant: schema, role, template, first login user, catalog row, audit entry.
    Create {
        key: String,
        #[arg(long)]
        plan: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        instance: Option<String>,
        /// First login user.
        #[arg(long, default_value = "app")]
        user: String,
        #[command(flatten)]
        password: PasswordArgs,
    },
    /// List tenants.
    List,
    /// Drop a tenant and its schema (refused when it holds data, unless --force).
    Drop {
        key: String,
        #[arg(long)]
        force: bool,
    },
    /// Suspend a tenant: logins get 57P03, running sessions end.
    Suspend { key: String },
    /// Resume a suspended tenant.
    Resume { key: String },
    /// Change a tenant's plan.
    SetPlan { key: String, plan: String },
    /// Move a tenant to another instance online (logical replication; only it pauses, at
    /// cutover). `--abort` rolls back an interrupted move; `--cleanup` drops the source
    /// copies kept by finished moves.
    Move {
        key: String,
        #[arg(long, required_unless_present_any = ["abort", "cleanup"])]
        to: Option<String>,
        #[arg(long)]
        abort: bool,
        #[arg(long)]
        cleanup: bool,
    },
    /// Give the tenant's backend role a new password.
    RotateSecret { key: String },
    /// Tenant login users.
    #[command(subcommand)]
    User(UserCmd),
}

#[derive(Subcommand)]
pub enum UserCmd {
    /// Add a login user to a tenant.
    Add {
        key: String,
        user: String,
        /// A trusted service user (may name tenants per transaction).
        #[arg(long)]
        service: bool,
        #[command(flatten)]
        password: PasswordArgs,
    },
}

#[derive(Subcommand)]
pub enum AdminUserCmd {
    /// Add an admin login.
    Add {
        name: String,
        #[command(flatten)]
        password: PasswordArgs,
    },
}

#[derive(Subcommand)]
pub enum InstanceCmd {
    /// Register an instance by libpq URL (a role that may create roles and schemas).
    Add {
        name: String,
        #[arg(long)]
        url: String,
        #[arg(long)]
        dedicated: bool,
    },
}

/// Who runs CLI commands, for the audit log.
fn actor() -> String {
    format!(
        "cli:{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into())
    )
}

fn read_password(p: &PasswordArgs) -> anyhow::Result<Option<String>> {
    let n = p.password.is_some() as u8 + p.password_env.is_some() as u8 + p.password_stdin as u8;
    if n > 1 {
        bail!("give the password one way: --password, --password-env or --password-stdin");
    }
    if let Some(pw) = &p.password {
        return Ok(Some(pw.clone()));
    }
    if let Some(var) = &p.password_env {
        return std::env::var(var)
            .map(Some)
            .with_context(|| format!("environment variable {var} is not set"));
    }
    if p.password_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        let pw = line.trim_end_matches(['\r', '\n']).to_owned();
        if pw.is_empty() {
            bail!("no password on stdin");
        }
        return Ok(Some(pw));
    }
    Ok(None)
}

async fn catalog(cfg: &Config) -> anyhow::Result<Catalog> {
    if cfg.catalog_url.is_empty() {
        bail!("catalog_url is not set (config file or TENANTGATE_CATALOG_URL)");
    }
    Ok(Catalog::connect(&cfg.catalog_url, &cfg.catalog_key).await?)
}

/// Run a parsed command line.
/// Manage flags through Redis; running replicas pick changes up within a second.
async fn flags(cfg: &Config, cmd: FlagsCmd) -> anyhow::Result<()> {
    if cfg.redis.url.is_empty() {
        bail!("flags live in Redis: set [redis] url (TENANTGATE_REDIS__URL); without Redis, use the admin database of the running proxy");
    }
    let stop = tokio_util::sync::CancellationToken::new();
    let limits = crate::limits::Limits::start(&cfg.redis, false, "cli", "", stop.clone())?;
    let up = async {
        while !limits.shared().is_some_and(|s| s.is_up()) {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(5), up)
        .await
        .context("redis unreachable")?;
    let result = match cmd {
        FlagsCmd::Set {
            tenant,
            name,
            value,
        } => limits.set_flag(&tenant, &name, &value).await.map(|()| {
            println!(
                "{tenant}: {name} = {}",
                limits
                    .flags(&tenant)
                    .all
                    .get(&name)
                    .cloned()
                    .unwrap_or_default()
            )
        }),
        FlagsCmd::Unset { tenant, name } => limits
            .unset_flag(&tenant, &name)
            .await
            .map(|()| println!("{tenant}: {name} removed")),
        FlagsCmd::List { tenant } => {
            for (k, v) in limits.list_flags(&tenant).await {
                println!("{k} = {v}");
            }
            Ok(())
        }
    };
    stop.cancel();
    result.map_err(Into::into)
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::GenKey = cli.command {
        println!("{}", crypto::SecretKey::generate());
        return Ok(());
    }
    let cfg = config::load(cli.config.as_deref())?;
    match cli.command {
        Command::GenKey => unreachable!(),
        Command::Serve => crate::app::run(cfg, cli.config).await,
        Command::Flags(cmd) => flags(&cfg, cmd).await,
        Command::Demo {
            proxy,
            admin_user,
            admin_password,
            dbname,
        } => crate::admin::demo::run(&proxy, &admin_user, &admin_password, &dbname).await,
        Command::CheckConfig => {
            println!("{}", toml::to_string_pretty(&cfg)?);
            Ok(())
        }
        Command::Setup { sample } => {
            let cat = catalog(&cfg).await?;
            let r = cat.setup().await?;
            if r.applied.is_empty() {
                println!("catalog is up to date");
            } else {
                println!("catalog migrations applied: {}", r.applied.join(", "));
            }
            if r.primary_registered {
                println!("registered instance primary ({})", redact(&cfg.catalog_url));
            }
            if sample {
                let (name, pw) = sample::SAMPLE_ADMIN;
                match cat.add_admin_user(name, pw, &actor()).await {
                    Ok(()) => println!("admin user {name} / {pw} created (admin database)"),
                    Err(crate::catalog::CatalogError::Exists(_)) => {}
                    Err(e) => return Err(e.into()),
                }
                for p in sample::create_samples(&cat, &actor()).await? {
                    let what = if p.created { "created" } else { "exists " };
                    println!(
                        "tenant {what} {:<8} plan {:<10} schema {:<16} login app@{} / {} ({} ms)",
                        p.key,
                        p.plan,
                        p.schema,
                        p.key,
                        sample::sample_password(&p.key),
                        p.elapsed.as_millis()
                    );
                }
            }
            Ok(())
        }
        Command::Tenant(cmd) => tenant(cmd, &cfg).await,
        Command::AdminUser(AdminUserCmd::Add { name, password }) => {
            let pw = read_password(&password)?.context("an admin user needs a password")?;
            catalog(&cfg)
                .await?
                .add_admin_user(&name, &pw, &actor())
                .await?;
            println!("admin user {name} added");
            Ok(())
        }
        Command::ServiceUser(AdminUserCmd::Add { name, password }) => {
            let pw = read_password(&password)?.context("a service user needs a password")?;
            catalog(&cfg)
                .await?
                .add_service_user(&name, &pw, &actor())
                .await?;
            println!("service user {name} added");
            Ok(())
        }
        Command::Instance(InstanceCmd::Add {
            name,
            url,
            dedicated,
        }) => {
            let cat = catalog(&cfg).await?;
            crate::catalog::store::instance_address(&url)?;
            let c = cat.pool().get().await?;
            c.execute(
                "INSERT INTO tenantgate.instances (name, url, dedicated) VALUES ($1, $2, $3)",
                &[&name, &url, &dedicated],
            )
            .await
            .map_err(crate::catalog::store::not_set_up)?;
            println!("instance {name} registered");
            Ok(())
        }
        Command::Migrate {
            concurrency,
            fail_fast,
            dir,
            tenants,
        } => migrate(&cfg, concurrency, fail_fast, dir, tenants).await,
    }
}

async fn tenant(cmd: TenantCmd, cfg: &Config) -> anyhow::Result<()> {
    let cat = catalog(cfg).await?;
    match cmd {
        TenantCmd::Create {
            key,
            plan,
            name,
            instance,
            user,
            password,
        } => {
            let p = cat
                .create_tenant(&NewTenant {
                    key,
                    display_name: name,
                    plan,
                    instance,
                    user,
                    password: read_password(&password)?,
                    actor: actor(),
                })
                .await?;
            if !p.created {
                println!(
                    "tenant {} already exists (plan {}, instance {})",
                    p.key, p.plan, p.instance
                );
                return Ok(());
            }
            println!(
                "tenant {} created in {} ms: plan {}, instance {}, schema {}",
                p.key,
                p.elapsed.as_millis(),
                p.plan,
                p.instance,
                p.schema
            );
            match p.generated_password {
                Some(pw) => println!(
                    "login user {}@{} password {pw}  (shown once)",
                    p.user, p.key
                ),
                None => println!("login user {}@{}", p.user, p.key),
            }
        }
        TenantCmd::List => {
            println!(
                "{:<20} {:<24} {:<11} {:<10} {:<12} {:>5}  created",
                "key", "name", "plan", "status", "instance", "users"
            );
            for t in cat.list_tenants().await? {
                println!(
                    "{:<20} {:<24} {:<11} {:<10} {:<12} {:>5}  {}",
                    t.key, t.display_name, t.plan, t.status, t.instance, t.users, t.created_at
                );
            }
        }
        TenantCmd::Drop { key, force } => {
            cat.drop_tenant(&key, force, &actor()).await?;
            println!("tenant {key} dropped");
        }
        TenantCmd::Suspend { key } => {
            cat.set_status(&key, "suspended", &actor()).await?;
            println!("tenant {key} suspended");
        }
        TenantCmd::Resume { key } => {
            cat.set_status(&key, "active", &actor()).await?;
            println!("tenant {key} resumed");
        }
        TenantCmd::SetPlan { key, plan } => {
            let plan = cat.set_plan(&key, &plan, &actor()).await?;
            println!("tenant {key} is on plan {plan}");
        }
        TenantCmd::Move {
            key,
            to,
            abort,
            cleanup,
        } => {
            if abort {
                let open = crate::catalog::moves::abort(&cat, &key).await?;
                println!(
                    "{}",
                    if open {
                        format!("move of {key} rolled back; it stays where it was")
                    } else {
                        format!("no unfinished move of {key}")
                    }
                );
            } else if cleanup {
                for s in crate::catalog::moves::cleanup(&cat, &key).await? {
                    println!("dropped {s}");
                }
            } else {
                let to = to.expect("clap requires --to");
                let bar = indicatif::ProgressBar::new_spinner();
                bar.enable_steady_tick(std::time::Duration::from_millis(120));
                let progress = |m: &str| bar.set_message(m.to_owned());
                let r = crate::catalog::moves::move_tenant(
                    &cat,
                    &key,
                    &to,
                    &actor(),
                    &Default::default(),
                    &progress,
                )
                .await;
                bar.finish_and_clear();
                let r = r?;
                println!(
                    "moved {} from {} to {}: {} tables, {} rows; copy {} ms, pause {} ms, total {} ms; source kept as {} (tenant move {} --cleanup)",
                    r.tenant, r.from, r.to, r.tables, r.rows, r.copy_time.as_millis(),
                    r.pause_time.as_millis(), r.total.as_millis(), r.kept_schema, r.tenant
                );
            }
        }
        TenantCmd::RotateSecret { key } => {
            cat.rotate_secret(&key, &actor()).await?;
            println!("backend secret of tenant {key} rotated");
        }
        TenantCmd::User(UserCmd::Add {
            key,
            user,
            service,
            password,
        }) => {
            let pw = read_password(&password)?.context("a login user needs a password")?;
            cat.add_user(&key, &user, &pw, service, &actor()).await?;
            println!("user {user}@{key} added");
        }
    }
    Ok(())
}

async fn migrate(
    cfg: &Config,
    concurrency: Option<usize>,
    fail_fast: bool,
    dir: Option<PathBuf>,
    tenants: Vec<String>,
) -> anyhow::Result<()> {
    let cat = catalog(cfg).await?;
    let list = match &dir {
        Some(d) => migrations::from_dir(d).with_context(|| format!("reading {}", d.display()))?,
        None => migrations::tenant(),
    };
    let opts = MigrateOptions {
        concurrency: concurrency.unwrap_or(cfg.migrate.concurrency),
        fail_fast,
        migrations: list,
        only: tenants,
    };
    let total = cat.list_tenants().await?.len() as u64;
    let bar = indicatif::ProgressBar::new(total);
    if std::io::stderr().is_terminal() {
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} tenants  {elapsed}  {msg}",
            )
            .expect("valid template"),
        );
    } else {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let report = migrate_all(&cat, &opts, &|key, outcome| {
        bar.inc(1);
        if let TenantOutcome::Failed { version, error } = outcome {
            bar.println(format!("FAILED {key} at {version}: {error}"));
        }
    })
    .await?;
    bar.finish_and_clear();
    println!(
        "migrated {} tenant(s) ({} version(s)), {} up to date, {} failed, {} skipped, of {} in {:.2} s",
        report.migrated,
        report.versions_applied,
        report.up_to_date,
        report.failed.len(),
        report.skipped,
        report.tenants,
        report.elapsed.as_secs_f64()
    );
    for (key, version, error) in &report.failed {
        println!("  {key}: {version}: {error}");
    }
    if !report.failed.is_empty() {
        bail!(
            "{} tenant(s) failed; rerun `tenantgate migrate` to resume",
            report.failed.len()
        );
    }
    Ok(())
}

/// A URL without its password, for printing.
fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((auth, host)) => {
                let user = auth.split(':').next().unwrap_or_default();
                format!("{scheme}://{user}@{host}")
            }
            None => url.to_owned(),
        },
        None => url
            .split_whitespace()
            .filter(|w| !w.starts_with("password="))
            .collect::<Vec<_>>()
            .join(" "),
    }
}
