//! The `switchyard` binary: command-line parsing and nothing else.
//!
//! Every command is a thin call into a library crate: `serve` into the control plane's
//! wiring, `check` into [`check`] (the config crate plus what `serve` would refuse at
//! start), `demo` into [`demo`], `ctl` into [`ctl`] (a client of the control API).

mod check;
mod ctl;
mod demo;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

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
    /// Log line format: `text` for people, `json` (one object per line) for log shippers.
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

/// The config file, named the way operators of nginx, Envoy and HAProxy are used to:
/// `-c FILE`, `--config FILE`, or just `FILE`.
#[derive(Args)]
#[group(required = true, multiple = false)]
struct ConfigFile {
    /// The config file (YAML; JSON is YAML too). Reference: docs/CONFIG.md.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: Option<PathBuf>,
    /// The config file, as a plain argument (same as --config FILE).
    #[arg(value_name = "FILE")]
    file: Option<PathBuf>,
}

impl ConfigFile {
    fn path(self) -> PathBuf {
        // The group is required: clap has refused the command line if both are missing.
        self.config.or(self.file).unwrap_or_default()
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Serve {
        #[command(flatten)]
        config: ConfigFile,
        /// Data-path worker threads, each a single-threaded runtime that accepts and serves
        /// its connections alone (default: one per CPU; 1 = everything on one thread).
        #[arg(long, value_name = "N")]
        workers: Option<usize>,
        /// How long in-flight requests may take to finish after SIGTERM (e.g. 30s).
        #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
        drain_timeout: Duration,
    },
    /// Validate a config file and what `serve` would refuse at start (token file, TLS
    /// certificates, ...): exit 0 (warnings allowed), or print every error and exit 1.
    Check {
        #[command(flatten)]
        config: ConfigFile,
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
        /// Run it without the safety net: users then see the bad v2's failures.
        #[arg(long)]
        no_safety_net: bool,
        /// When v2 turns bad, after the proxy is ready (0s: bad from the start, so the
        /// mirror step catches it before any user reaches it).
        #[arg(long, value_parser = parse_duration, default_value = "12s")]
        bad_after: Duration,
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
    let format = cli.log_format;
    match cli.command {
        Command::Check { config } => check::run(&config.path()),
        Command::Serve {
            config,
            workers,
            drain_timeout,
        } => run(Threads::serve(workers), format, |workers| {
            switchyard_control::app::serve(switchyard_control::app::ServeOptions {
                config_path: config.path(),
                drain_timeout,
                workers,
            })
        }),
        Command::Demo {
            port,
            admin_port,
            healthy,
            no_safety_net,
            bad_after,
        } => run(Threads::Shared, format, |_| {
            demo::run(demo::Options {
                port,
                admin_port,
                healthy,
                safety_net: !no_safety_net,
                bad_after,
            })
        }),
        Command::Ctl(args) => ctl::run(args),
    }
}

/// How `run` lays out its threads.
enum Threads {
    /// `serve --workers 1`: one current-thread runtime for everything, like one nginx or
    /// HAProxy worker (the controller still has its thread).
    One,
    /// `serve --workers N` (N > 1): N worker threads, each a current-thread runtime serving
    /// the listeners (`switchyard_proxy::workers`); the control plane — admin API, health
    /// checks, DNS, etcd, signals — on a current-thread runtime of its own on this thread.
    PerCore(usize),
    /// `demo`: tokio's multi-threaded runtime, everything on it.
    Shared,
}

impl Threads {
    /// `--workers N`; without it, one worker per CPU this process may run on.
    fn serve(workers: Option<usize>) -> Threads {
        let n = workers.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        });
        if n <= 1 {
            Threads::One
        } else {
            Threads::PerCore(n)
        }
    }
}

fn run<F>(
    threads: Threads,
    format: LogFormat,
    main: impl FnOnce(switchyard_proxy::workers::Workers) -> F,
) -> ExitCode
where
    F: std::future::Future<Output = Result<(), String>>,
{
    use switchyard_proxy::workers::Workers;
    let built = match threads {
        Threads::One => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map(|r| (r, Workers::inline())),
        Threads::PerCore(n) => Workers::start(n).and_then(|workers| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map(|r| (r, workers))
        }),
        Threads::Shared => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map(|r| (r, Workers::inline())),
    };
    let (runtime, workers) = match built {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(main(workers)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Once: as a log line for log shippers, or as plain text for a person (a config
            // error list keeps its one-error-per-line shape that way).
            match format {
                LogFormat::Json => tracing::error!("{e}"),
                LogFormat::Text => eprintln!("error: {e}"),
            }
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
        .with_ansi(colour_on_stderr())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Colour codes only for a person at a terminal: never into a file, a pipe or journald, and
/// never when `NO_COLOR` is set (<https://no-color.org>).
fn colour_on_stderr() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}
