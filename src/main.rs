//! The `switchyard` binary: command-line parsing and nothing else.
//!
//! Every command is a thin call into a library crate: `serve` into the control plane's
//! wiring, `check` into the config crate, `demo` into [`demo`], `ctl` into [`ctl`] (a client
//! of the control API).

mod ctl;
mod demo;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    about = "Shift live traffic between versions of a service; roll back a bad release by itself."
)]
struct Cli {
    /// Log level or filter (overridden by RUST_LOG) [default: info; warn for `demo`, whose
    /// timeline is the output].
    #[arg(long, global = true)]
    log_level: Option<String>,
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Serve {
        #[arg(long)]
        config: PathBuf,
        /// Runtime worker threads (default: CPU count).
        #[arg(long)]
        workers: Option<usize>,
        /// How long in-flight requests may take to finish after SIGTERM (e.g. 30s).
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        drain_timeout: Duration,
    },
    /// Validate a config file: exit 0, or print every error and exit 1.
    Check {
        #[arg(long)]
        config: PathBuf,
    },
    /// Self-contained demo: a canary rollout that goes bad and is rolled back by itself.
    Demo {
        /// Data-path port (127.0.0.1).
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// Admin port (127.0.0.1): the API and the dashboard.
        #[arg(long, default_value_t = 9901)]
        admin_port: u16,
        /// Run the same rollout with a good v2, which gets promoted.
        #[arg(long)]
        healthy: bool,
    },
    /// Drive a running proxy through its control API (kubectl-like verbs).
    Ctl(ctl::CtlArgs),
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    switchyard_config::parse_duration(s)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Demo { .. } => "warn",
        _ => "info",
    };
    init_logging(
        cli.log_level.as_deref().unwrap_or(default_level),
        cli.log_format,
    );
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Serve {
            config,
            workers,
            drain_timeout,
        } => run(workers, async move {
            switchyard_control::app::serve(switchyard_control::app::ServeOptions {
                config_path: config,
                drain_timeout,
            })
            .await
        }),
        Command::Demo {
            port,
            admin_port,
            healthy,
        } => run(
            None,
            demo::run(demo::Options {
                port,
                admin_port,
                healthy,
            }),
        ),
        Command::Ctl(args) => ctl::run(args),
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match switchyard_config::load(path) {
        Ok(config) => {
            // Certificates too: unreadable files and keys that do not match, named.
            if let Err(e) = switchyard_proxy::tls::TlsReloader::load(&config) {
                eprintln!("{}: {e}", path.display());
                eprintln!("{}: 1 error(s)", path.display());
                return ExitCode::from(1);
            }
            let versions: usize = config.services.iter().map(|s| s.versions.len()).sum();
            let backends: usize = config
                .services
                .iter()
                .flat_map(|s| &s.versions)
                .map(|v| v.backends.len())
                .sum();
            println!(
                "{}: ok ({} listeners, {} services, {} versions, {} backends)",
                path.display(),
                config.listeners.len(),
                config.services.len(),
                versions,
                backends
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("{}: {} error(s)", path.display(), errors.0.len());
            ExitCode::from(1)
        }
    }
}

fn run(
    workers: Option<usize>,
    main: impl std::future::Future<Output = Result<(), String>>,
) -> ExitCode {
    // One worker: a single-threaded runtime, like one nginx or HAProxy worker — no work
    // stealing, no cross-thread wake-ups. More: tokio's multi-threaded scheduler.
    let mut builder = match workers {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n.max(1));
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(main) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn init_logging(level: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
