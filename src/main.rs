//! Command line entry: parse, set up logging, hand over to `tenantgate::cli`.

use clap::Parser;
use tracing_subscriber::EnvFilter;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

extern "C" {
    /// mimalloc's option setter (in the library the `mimalloc` crate links).
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}

/// Options in mimalloc.h's option enum.
const MI_OPTION_ARENA_EAGER_COMMIT: std::ffi::c_int = 4;
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

/// Commit arena memory as it is used, not up front: with eager commit, 1,000 idle clients
/// cost ~31 MiB of RSS instead of ~21 MiB (benches/idle_clients.py). Set from the ELF
/// initialisers, before Rust's runtime makes its first allocation (and so before mimalloc
/// creates its first arena); set later, the option no longer applies to that arena.
extern "C" fn mimalloc_options() {
    // SAFETY: sets a plain integer option; no allocation has happened yet.
    unsafe {
        mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0);
        mi_option_set(MI_OPTION_PURGE_DELAY, 0);
    }
}

#[used]
#[cfg_attr(target_os = "linux", link_section = ".init_array")]
static MIMALLOC_OPTIONS: extern "C" fn() = mimalloc_options;

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let cli = tenantgate::cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("TENANTGATE_LOG")
                .unwrap_or_else(|_| EnvFilter::new("info,tokio_postgres=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let workers = tenantgate::config::load(cli.config.as_deref())
        .map(|c| c.workers)
        .unwrap_or(0);
    // One worker: the current-thread scheduler, which skips the work-stealing machinery
    // (blocking work still goes to tokio's blocking pool).
    let mut rt = match workers {
        1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            if n > 0 {
                b.worker_threads(n);
            }
            b
        }
    };
    rt.enable_all().build()?.block_on(tenantgate::cli::run(cli))
}
