//! Command line: parse, set up logging, hand over to `tenantgate::app`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "tenantgate",
    version,
    about = "PostgreSQL routing proxy for schema-per-tenant SaaS"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Serve {
        /// Config file (TOML). Every key can also come from TENANTGATE_* variables.
        #[arg(long, short, env = "TENANTGATE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Validate a config file and print the effective configuration.
    CheckConfig {
        #[arg(long, short, env = "TENANTGATE_CONFIG")]
        config: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("TENANTGATE_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    match cli.command {
        Command::Serve { config } => {
            let cfg = tenantgate::config::load(config.as_deref())?;
            let mut rt = tokio::runtime::Builder::new_multi_thread();
            if cfg.workers > 0 {
                rt.worker_threads(cfg.workers);
            }
            let rt = rt.enable_all().build()?;
            rt.block_on(tenantgate::app::run(cfg, config))
        }
        Command::CheckConfig { config } => {
            let cfg = tenantgate::config::load(config.as_deref())?;
            println!("{}", toml::to_string_pretty(&cfg)?);
            Ok(())
        }
    }
}
