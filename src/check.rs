//! `switchyard check FILE`: everything `serve` would refuse, found before a deploy does.
//!
//! The config crate reports what is wrong *in* the file (every error, with line, column and
//! field path). `serve` refuses more at start: a token file it cannot read, an admin address
//! other machines can reach with no token, certificate files it cannot load. A pipeline that
//! runs `check` must learn all of that too, each problem once, naming the file — so this
//! module runs the same loaders `serve` runs (nothing is bound, nothing is written) and
//! collects their answers instead of stopping at the first. What would serve but surprise an
//! operator (a weighted version with no backends) is a warning: printed, exit 0.

use std::path::Path;
use std::process::ExitCode;

use switchyard_config::{AccessLogPath, Config};

/// Prints every problem (stderr) or the one-line summary (stdout); exit 1 on any error.
pub fn run(path: &Path) -> ExitCode {
    let file = path.display();
    let config = match switchyard_config::load(path) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("{file}: {} error(s)", errors.0.len());
            return ExitCode::from(1);
        }
    };
    let errors = start_up_refusals(&config);
    for e in &errors {
        eprintln!("{file}: {e}");
    }
    let warnings = warnings(&config);
    for w in &warnings {
        eprintln!("{file}: warning: {w}");
    }
    if !errors.is_empty() {
        eprintln!("{file}: {} error(s)", errors.len());
        return ExitCode::from(1);
    }
    let versions: usize = config.services.iter().map(|s| s.versions.len()).sum();
    let backends: usize = config
        .services
        .iter()
        .flat_map(|s| &s.versions)
        .map(|v| v.backends.len())
        .sum();
    let warned = match warnings.len() {
        0 => String::new(),
        n => format!(", {n} warning(s)"),
    };
    println!(
        "{file}: ok ({} listeners, {} services, {versions} versions, {backends} backends{warned})",
        config.listeners.len(),
        config.services.len(),
    );
    ExitCode::SUCCESS
}

/// What `serve` would stop on after the file parsed, each with the file it concerns. The
/// same functions `serve` calls, so the words match its start-up error.
fn start_up_refusals(config: &Config) -> Vec<String> {
    let mut errors = Vec::new();
    // The admin token: a token file that is missing, unreadable or empty, or a non-loopback
    // admin address without any token (file or SWITCHYARD_ADMIN_TOKEN).
    if let Err(e) = switchyard_control::auth::Auth::load(&config.admin) {
        errors.push(e);
    }
    // Certificates, pair by pair, so that every bad file is named (serve stops at the first).
    for listener in &config.listeners {
        for pair in listener.tls.iter().flat_map(|t| &t.certificates) {
            if let Err(e) = switchyard_control::certs::compile(std::slice::from_ref(pair)) {
                errors.push(format!("listener {:?}: TLS: {e}", listener.name));
            }
        }
    }
    // The access log file is opened for appending at start. An existing file is opened (for
    // appending, nothing written); a new one needs its directory.
    if let Some(AccessLogPath::File(log)) = config.access_log.as_ref().map(|a| &a.path) {
        let problem = if log.exists() {
            std::fs::OpenOptions::new()
                .append(true)
                .open(log)
                .err()
                .map(|e| e.to_string())
        } else {
            match log.parent().filter(|p| !p.as_os_str().is_empty()) {
                Some(dir) if !dir.is_dir() => Some(format!(
                    "its directory {} does not exist; create it or log to stdout",
                    dir.display()
                )),
                _ => None,
            }
        };
        if let Some(p) = problem {
            errors.push(format!("access_log.path {}: {p}", log.display()));
        }
    }
    errors
}

/// What would serve, but not as the operator probably meant.
fn warnings(config: &Config) -> Vec<String> {
    let mut warnings = Vec::new();
    for service in &config.services {
        let total: u64 = service.versions.iter().map(|v| u64::from(v.weight)).sum();
        let canary = service.rollout.as_ref().map(|r| r.canary.as_str());
        for v in service.versions.iter().filter(|v| v.backends.is_empty()) {
            let path = format!("services.{}.versions.{}", service.name, v.name);
            if v.weight > 0 && total > 0 {
                let share = f64::from(v.weight) * 100.0 / total as f64;
                warnings.push(format!(
                    "{path}: weight {} ({share:.0}% of requests) but no backends: those requests \
                     get 503 \"no healthy backend\"; add backends or set weight: 0",
                    v.weight
                ));
            } else if canary == Some(v.name.as_str()) {
                warnings.push(format!(
                    "{path}: the rollout's canary has no backends: its steps send it traffic, \
                     which is answered 503; add backends"
                ));
            }
        }
        if let Some(ca) = &service.upstream.ca {
            if let Err(e) = std::fs::read(ca) {
                warnings.push(format!(
                    "services.{}.upstream.ca {}: cannot read it ({e}): every request to this \
                     service will fail with 502 until it can",
                    service.name,
                    ca.display()
                ));
            }
        }
    }
    warnings
}
