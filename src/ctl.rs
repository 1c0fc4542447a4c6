//! `switchyard ctl`: the control API from a terminal or a pipeline (SPEC §7).
//!
//! kubectl-like verbs over the admin API's `/api/v1`: every command is one or two HTTP
//! requests (hyper's client, HTTP/1.1) and a rendering of the answer — aligned tables for
//! people by default, the API's own JSON with `-o json` for scripts. The admin URL and token
//! come from `--admin`/`--token` or `SWITCHYARD_ADMIN`/`SWITCHYARD_ADMIN_TOKEN`.
//!
//! Exit codes: 0 done, 1 the command failed (admin unreachable, token refused, the API said
//! no), 2 usage error (clap's own exit code for bad arguments).

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use clap::{Args, Subcommand, ValueEnum};
use http::{header, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

mod names;
mod watch;

/// Where the admin API listens unless told otherwise (SPEC §3 `admin.address`).
pub const DEFAULT_ADMIN: &str = "http://127.0.0.1:9901";

/// Upper bound for one API call: mutations answer after an fsync, so allow for slow disks.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Args)]
#[command(args_override_self = true)]
pub struct CtlArgs {
    /// Base URL of the admin API.
    #[arg(long, env = "SWITCHYARD_ADMIN", default_value = DEFAULT_ADMIN, global = true)]
    admin: String,
    /// Bearer token for changes (needed whenever the proxy has one configured).
    #[arg(
        long,
        env = "SWITCHYARD_ADMIN_TOKEN",
        hide_env_values = true,
        global = true
    )]
    token: Option<String>,
    /// Output format: aligned tables for people, or the API's JSON for scripts.
    #[arg(
        short = 'o',
        long = "output",
        value_enum,
        default_value = "table",
        global = true
    )]
    output: Output,
    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Subcommand)]
enum CtlCommand {
    /// Show every service, or one in detail (weights, health, live traffic, rollout).
    Status {
        /// One service to describe.
        service: Option<String>,
        #[command(flatten)]
        watch: watch::WatchArgs,
    },
    /// Set weights: `ctl weights api blue=90 green=10` (one new revision).
    Weights {
        /// The service, as named under `services:` in the config.
        service: String,
        /// VERSION=WEIGHT pairs; a weight is a whole number or a percentage like 10%.
        #[arg(required = true, value_name = "VERSION=WEIGHT", value_parser = parse_weight)]
        weights: Vec<(String, Value)>,
    },
    /// Blue/green: send 100% of the service's traffic to one version, atomically.
    Switch {
        /// The service, as named under `services:` in the config.
        service: String,
        /// The version that gets all the traffic.
        version: String,
    },
    /// Drive a canary rollout, or read and undo its history.
    #[command(subcommand)]
    Rollout(RolloutCommand),
    /// Roll the canary back now: 0% for it, 100% for the stable.
    Rollback {
        /// The service, as named under `services:` in the config.
        service: String,
        /// Why, for the history and the events.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Recent rollout events, oldest first.
    Events {
        /// Only events after this id.
        #[arg(long)]
        since: Option<u64>,
    },
    /// The fleet (with `cluster:`): replicas, the leader, each replica's applied revisions
    /// and config drift.
    Fleet,
}

#[derive(Subcommand)]
enum RolloutCommand {
    /// Start a rollout of the service's canary.
    Start {
        /// The service, as named under `services:` in the config.
        service: String,
    },
    /// Hold the rollout at its current step.
    Pause {
        /// The service, as named under `services:` in the config.
        service: String,
    },
    /// Continue a paused rollout (or restart a rolled-back canary).
    Resume {
        /// The service, as named under `services:` in the config.
        service: String,
    },
    /// Give the canary 100% now and make it the stable version.
    Promote {
        /// The service, as named under `services:` in the config.
        service: String,
    },
    /// Stop the rollout and send 100% back to the stable version.
    Abort {
        /// The service, as named under `services:` in the config.
        service: String,
    },
    /// Where the rollout stands (same as `ctl status SERVICE`).
    Status {
        /// The service, as named under `services:` in the config.
        service: String,
        #[command(flatten)]
        watch: watch::WatchArgs,
    },
    /// The service's revisions: every change of its weights, and why.
    History {
        /// The service, as named under `services:` in the config.
        service: String,
    },
    /// Restore an earlier revision's weights as a new revision (default: the previous one).
    Undo {
        /// The service, as named under `services:` in the config.
        service: String,
        /// The revision whose weights to restore (see `ctl rollout history`).
        #[arg(long, value_name = "N")]
        to_revision: Option<u64>,
    },
}

/// `blue=90` or `green=10%` → (version, JSON weight); anything else is a usage error.
fn parse_weight(s: &str) -> Result<(String, Value), String> {
    let (version, weight) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not VERSION=WEIGHT (e.g. blue=90)"))?;
    if version.is_empty() {
        return Err(format!("{s:?} names no version (e.g. blue=90)"));
    }
    let value = match weight.strip_suffix('%') {
        Some(p) => match p.parse::<u32>() {
            Ok(n) if n <= 100 => Value::String(format!("{n}%")),
            _ => return Err(format!("{weight:?} is not a percentage from 0% to 100%")),
        },
        None => match weight.parse::<u32>() {
            Ok(n) => json!(n),
            Err(_) => {
                return Err(format!(
                    "weight {weight:?} of {version} is not a whole number or a percentage like 10%"
                ))
            }
        },
    };
    Ok((version.to_string(), value))
}

/// Runs one `ctl` command; prints the result or the error.
pub fn run(args: CtlArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(execute(args)) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

async fn execute(args: CtlArgs) -> Result<String, String> {
    let api = Api::new(&args.admin, args.token.as_deref())?;
    let json_out = args.output == Output::Json;
    let render = |doc: Value, human: &dyn Fn(&Value) -> String| -> String {
        if json_out {
            format!("{:#}\n", doc)
        } else {
            human(&doc)
        }
    };
    let now = SystemTime::now();
    Ok(match args.command {
        CtlCommand::Status { service, watch } => {
            if watch.watch {
                return watch::run(&api, service.as_deref(), json_out, &watch).await;
            }
            status(&api, service.as_deref(), json_out, now).await?
        }
        CtlCommand::Rollout(RolloutCommand::Status { service, watch }) => {
            if watch.watch {
                return watch::run(&api, Some(&service), json_out, &watch).await;
            }
            status(&api, Some(&service), json_out, now).await?
        }
        CtlCommand::Weights { service, weights } => {
            let body: serde_json::Map<String, Value> = weights.into_iter().collect();
            let doc = api
                .send(
                    Method::PUT,
                    &format!("/services/{}/weights", segment(&service)),
                    Some(Value::Object(body)),
                )
                .await?;
            render(doc, &|d| {
                mutation_summary(d, &format!("weights set (revision {})", d["revision"]))
            })
        }
        CtlCommand::Switch { service, version } => {
            let doc = api
                .send(
                    Method::POST,
                    &format!("/services/{}/switch", segment(&service)),
                    Some(json!({ "to": version })),
                )
                .await?;
            render(doc, &|d| {
                mutation_summary(
                    d,
                    &format!("switched 100% to {version} (revision {})", d["revision"]),
                )
            })
        }
        CtlCommand::Rollback { service, reason } => {
            let body = reason.map(|r| json!({ "reason": r }));
            let doc = api
                .send(
                    Method::POST,
                    &format!("/services/{}/rollback", segment(&service)),
                    body,
                )
                .await?;
            render(doc, &|d| {
                let canary = d["rollout"]["canary"].as_str().unwrap_or("the canary");
                mutation_summary(
                    d,
                    &format!("rolled back {canary} (revision {})", d["revision"]),
                )
            })
        }
        CtlCommand::Events { since } => {
            let path = match since {
                Some(n) => format!("/events?since={n}"),
                None => "/events".to_string(),
            };
            let doc = api.get(&path).await?;
            render(doc, &|d| events_table(d, now))
        }
        CtlCommand::Fleet => {
            let doc = api.get("/fleet").await?;
            render(doc, &fleet_table)
        }
        CtlCommand::Rollout(RolloutCommand::History { service }) => {
            let doc = api
                .get(&format!("/services/{}/history", segment(&service)))
                .await?;
            render(doc, &|d| history_table(d, now))
        }
        CtlCommand::Rollout(RolloutCommand::Undo {
            service,
            to_revision,
        }) => {
            let body = to_revision.map(|n| json!({ "to_revision": n }));
            let doc = api
                .send(
                    Method::POST,
                    &format!("/services/{}/undo", segment(&service)),
                    body,
                )
                .await?;
            render(doc, &|d| {
                let what = match to_revision {
                    Some(n) => format!("revision {n}"),
                    None => "the previous revision".to_string(),
                };
                mutation_summary(
                    d,
                    &format!(
                        "restored the weights of {what} as revision {}",
                        d["revision"]
                    ),
                )
            })
        }
        CtlCommand::Rollout(action) => {
            let (verb, done, service) = match action {
                RolloutCommand::Start { service } => ("start", "started", service),
                RolloutCommand::Pause { service } => ("pause", "paused", service),
                RolloutCommand::Resume { service } => ("resume", "resumed", service),
                RolloutCommand::Promote { service } => ("promote", "promoted", service),
                RolloutCommand::Abort { service } => ("abort", "aborted", service),
                RolloutCommand::Status { .. }
                | RolloutCommand::History { .. }
                | RolloutCommand::Undo { .. } => unreachable!("handled above"),
            };
            let doc = api
                .send(
                    Method::POST,
                    &format!("/services/{}/rollout/{verb}", segment(&service)),
                    None,
                )
                .await?;
            render(doc, &|d| {
                mutation_summary(d, &format!("rollout {done}; now {}", rollout_state(d)))
            })
        }
    })
}

/// `ctl status [SERVICE]`: every service as one table (with the process line), or one
/// service in detail; `-o json` is the API's own document.
async fn status(
    api: &Api,
    service: Option<&str>,
    json_out: bool,
    now: SystemTime,
) -> Result<String, String> {
    match service {
        None => {
            let services = api.get("/services").await?;
            if json_out {
                return Ok(format!("{services:#}\n"));
            }
            let status = api.get("/status").await?;
            Ok(format!(
                "{}{}",
                process_line(&status, &api.base, now),
                services_table(&services)
            ))
        }
        Some(svc) => {
            let doc = api.get(&format!("/services/{}", segment(svc))).await?;
            Ok(if json_out {
                format!("{doc:#}\n")
            } else {
                service_detail(&doc, now)
            })
        }
    }
}

// ---- the HTTP client ------------------------------------------------------------------------

struct Api {
    /// `http://host:port` (plus any path prefix), no trailing slash.
    base: String,
    token: Option<String>,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

impl Api {
    fn new(admin: &str, token: Option<&str>) -> Result<Api, String> {
        let admin = admin.trim().trim_end_matches('/');
        let base = if admin.contains("://") {
            admin.to_string()
        } else {
            format!("http://{admin}")
        };
        let uri: Uri = base
            .parse()
            .map_err(|e| format!("--admin {admin:?} is not a URL ({e}); e.g. {DEFAULT_ADMIN}"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(other) => {
                return Err(format!(
                    "--admin {admin:?}: only http:// is supported (not {other}://); the admin API speaks plain HTTP"
                ))
            }
            None => return Err(format!("--admin {admin:?} is not a URL; e.g. {DEFAULT_ADMIN}")),
        }
        if uri.host().is_none() {
            return Err(format!(
                "--admin {admin:?} has no host; e.g. {DEFAULT_ADMIN}"
            ));
        }
        let client = Client::builder(TokioExecutor::new()).build_http();
        Ok(Api {
            base,
            token: token
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_string),
            client,
        })
    }

    async fn get(&self, path: &str) -> Result<Value, String> {
        self.send(Method::GET, path, None).await
    }

    /// One call to `/api/v1{path}`; `Ok` is the 2xx answer's JSON, `Err` says what went wrong
    /// in words an operator can act on.
    async fn send(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}/api/v1{path}", self.base);
        let mut req = Request::builder()
            .method(method.clone())
            .uri(&url)
            .header(header::ACCEPT, "application/json");
        // Every mutation says it is JSON, body or not: the API refuses others (415).
        if body.is_some() || method != Method::GET {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        if let Some(token) = &self.token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let bytes = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let req = req
            .body(Full::new(bytes))
            .map_err(|e| format!("cannot build a request for {url}: {e}"))?;
        let exchange = async {
            let response = self.client.request(req).await.map_err(|e| {
                format!(
                    "cannot reach the admin API at {} ({}); is `switchyard serve` running there? \
                     Point ctl at it with --admin or SWITCHYARD_ADMIN",
                    self.base,
                    error_chain(&e)
                )
            })?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("reading the answer from {url}: {e}"))?
                .to_bytes();
            Ok::<_, String>((status, body))
        };
        let (status, body) = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| {
                format!(
                    "the admin API at {} did not answer {method} {path} within {}s",
                    self.base,
                    REQUEST_TIMEOUT.as_secs()
                )
            })??;
        let doc: Option<Value> = serde_json::from_slice(&body).ok();
        if status.is_success() {
            return doc.ok_or_else(|| {
                format!(
                    "{url} answered {status} with something that is not JSON: {:?}",
                    String::from_utf8_lossy(&body[..body.len().min(200)])
                )
            });
        }
        let message = doc
            .as_ref()
            .and_then(|d| d["error"].as_str())
            .map(str::to_string)
            .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_string());
        let field = doc
            .as_ref()
            .and_then(|d| d["field"].as_str())
            .map(|f| format!(" (field {f:?})"))
            .unwrap_or_default();
        Err(match status {
            StatusCode::UNAUTHORIZED => format!(
                "the admin API at {} refused the change: {message}; {}",
                self.base,
                if self.token.is_some() {
                    "check the token given with --token or SWITCHYARD_ADMIN_TOKEN"
                } else {
                    "pass the admin token with --token or SWITCHYARD_ADMIN_TOKEN"
                }
            ),
            _ => format!("{message}{field} [{status}]"),
        })
    }
}

/// `tcp connect error: Connection refused (os error 111)` from a nested error.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

/// A service name as one path segment (names are plain words; escape anything else).
fn segment(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

// ---- rendering ------------------------------------------------------------------------------

/// Columns separated by three spaces, each as wide as its widest cell; the last one unpadded.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header_row: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header_row).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}   ", width = widths[i]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `90%`, `33.33%`.
fn percent(x: f64) -> String {
    if (x - x.round()).abs() < 1e-9 {
        format!("{}%", x.round() as i64)
    } else {
        format!("{}%", (x * 100.0).round() / 100.0)
    }
}

/// `3s`, `4m`, `2h`, `5d`: how long ago an RFC 3339 time was.
fn age(at: &Value, now: SystemTime) -> String {
    let Some(t) = at.as_str().and_then(|s| humantime::parse_rfc3339(s).ok()) else {
        return "-".to_string();
    };
    format!(
        "{} ago",
        short_duration(now.duration_since(t).unwrap_or_default())
    )
}

fn short_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

fn str_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_string(),
        other => other.to_string(),
    }
}

fn number(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

/// `switchyard 0.1.0 at http://…: up 5m, config /etc/switchyard.yaml loaded 5m ago`.
fn process_line(status: &Value, base: &str, now: SystemTime) -> String {
    let mut out = format!(
        "switchyard {} at {base}: up {}, config {} loaded {}\n",
        str_of(&status["version"]),
        short_duration(Duration::from_secs(
            status["uptime_s"].as_u64().unwrap_or(0)
        )),
        str_of(&status["config_path"]),
        age(&status["loaded_at"], now),
    );
    if let Some(e) = status["last_reload_error"].as_str() {
        let _ = writeln!(
            out,
            "last reload FAILED (the previous config keeps serving):\n{e}"
        );
    }
    if let Some(needed) = status["restart_needed"]
        .as_array()
        .filter(|n| !n.is_empty())
    {
        let list: Vec<String> = needed.iter().map(str_of).collect();
        let _ = writeln!(out, "restart needed to apply: {}", list.join(", "));
    }
    let p = &status["persistence"];
    if p["healthy"] == false {
        let _ = writeln!(
            out,
            "state NOT persisted since {} ({} change(s) pending): {}",
            age(&p["since"], now),
            p["pending"],
            str_of(&p["error"])
        );
    }
    out.push('\n');
    out
}

/// The role a version plays in the service's rollout, for the ROLE column: the API's
/// `role` (stable, canary, standby), the same names the dashboard shows.
fn role(version: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(role) = version["role"].as_str() {
        parts.push(role.to_string());
    }
    if version["rolled_back"] == true {
        parts.push("rolled back".to_string());
    }
    if parts.is_empty() {
        "-".to_string()
    } else {
        parts.join(", ")
    }
}

fn version_row(v: &Value) -> Vec<String> {
    let backends = v["backends"].as_array().cloned().unwrap_or_default();
    let healthy = backends.iter().filter(|b| b["healthy"] == true).count();
    let live = &v["live"];
    vec![
        str_of(&v["name"]),
        str_of(&v["release"]),
        percent(number(&v["weight"])),
        format!("{healthy}/{}", backends.len()),
        format!("{:.1}", number(&live["rps"])),
        format!("{:.1}%", number(&live["error_rate"])),
        format!("{:.1}ms", number(&live["p99_ms"])),
        role(v),
    ]
}

const VERSION_HEADERS: [&str; 8] = [
    "VERSION", "RELEASE", "WEIGHT", "HEALTHY", "RPS", "ERRORS", "P99", "ROLE",
];

/// Every version of every service, one row each.
fn services_table(doc: &Value) -> String {
    let mut rows = Vec::new();
    let mut rollouts = Vec::new();
    for svc in doc["services"].as_array().into_iter().flatten() {
        for v in svc["versions"].as_array().into_iter().flatten() {
            let mut row = vec![str_of(&svc["name"])];
            row.extend(version_row(v));
            rows.push(row);
        }
        if !svc["rollout"].is_null() {
            rollouts.push(format!(
                "{}: rollout {}",
                str_of(&svc["name"]),
                rollout_state(svc)
            ));
        }
    }
    let mut headers = vec!["SERVICE"];
    headers.extend(VERSION_HEADERS);
    let mut out = table(&headers, &rows);
    out.push_str(&names::section(
        doc["services"].as_array().into_iter().flatten(),
    ));
    if !rollouts.is_empty() {
        out.push('\n');
        for r in rollouts {
            out.push_str(&r);
            out.push('\n');
        }
    }
    out
}

/// `progressing, step 1/3 (green v2 over blue)`.
fn rollout_state(svc: &Value) -> String {
    let r = &svc["rollout"];
    if r.is_null() {
        return "none configured".to_string();
    }
    let state = str_of(&r["state"]);
    let mut out = state.clone();
    if state != "idle" {
        let _ = write!(out, ", step {}/{}", r["step"], r["steps"]);
    }
    let _ = write!(out, " ({}", str_of(&r["canary"]));
    if let Some(release) = r["release"].as_str() {
        let _ = write!(out, " {release}");
    }
    let _ = write!(out, " over {})", str_of(&r["stable"]));
    if r["awaiting_gate"] == true {
        out.push_str(", waiting for gate webhooks");
    }
    if let Some(e) = evidence(&r["evidence"]) {
        let _ = write!(out, "; {e}");
    }
    out
}

/// `sequential evidence: failures 3.2, slow 0.8 of limit 200` (SPEC §15's `rollout.evidence`).
fn evidence(e: &Value) -> Option<String> {
    let limit = e["limit"].as_f64()?;
    let value = |k: &str| {
        e[k].as_f64().map_or("-".to_string(), |v| {
            if v < 1e6 {
                format!("{v:.1}")
            } else {
                format!("{v:.1e}")
            }
        })
    };
    Some(format!(
        "sequential evidence: failures {}, slow {} of limit {limit}",
        value("failures"),
        value("slow")
    ))
}

/// `ctl status SERVICE`: the versions table, then the rollout and its last analysis.
fn service_detail(svc: &Value, now: SystemTime) -> String {
    let mut out = format!(
        "service {}   revision {}\n\n",
        str_of(&svc["name"]),
        svc["revision"]
    );
    out.push_str(&versions_table(svc));
    out.push_str(&names::section([svc]));
    let r = &svc["rollout"];
    if r.is_null() {
        out.push_str("\nrollout:   none configured\n");
        return out;
    }
    let _ = writeln!(out, "\nrollout:   {}", rollout_state(svc));
    let _ = write!(
        out,
        "           failed checks {}/{}",
        r["failed_checks"],
        str_of(&r["threshold"])
    );
    if !r["started_at"].is_null() {
        let _ = write!(out, "; started {}", age(&r["started_at"], now));
    }
    if !r["finished_at"].is_null() {
        let _ = write!(out, "; finished {}", age(&r["finished_at"], now));
    }
    out.push('\n');
    if let Some(reason) = r["reason"].as_str() {
        let _ = writeln!(out, "           {reason}");
    }
    if r["mode"] == "mirror" {
        let _ = writeln!(
            out,
            "           mirror step: {}% of requests copied to the canary (users stay on the stable)",
            r["mirror_pct"]
        );
    }
    let i = &r["impact"];
    if !i.is_null() {
        let _ = writeln!(
            out,
            "impact:    {} of {} users saw a failure ({}%); {} on the canary; {} requests failed for users",
            i["users_failed"], i["users_total"], number(&i["users_failed_pct"]), i["users_on_canary"], i["requests_failed"]
        );
    }
    let net = &r["safety_net"];
    if net["enabled"] == true {
        let n = &net["retries"];
        let _ = writeln!(
            out,
            "safety net: replayed on the stable {} ok, {} failed; not replayed {} over budget, {} unsafe",
            n["ok"], n["failed"], n["budget"], n["unsafe"]
        );
    }
    let m = &r["mirror"];
    if m["sent"].as_u64() > Some(0) || m["dropped"].as_u64() > Some(0) {
        let _ = writeln!(
            out,
            "mirror:    {} copies sent, {} dropped, {} failed by the canary",
            m["sent"], m["dropped"], m["failed"]
        );
    }
    let a = &r["last_analysis"];
    if !a.is_null() {
        let metrics: Vec<String> = a["metrics"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| {
                let unit = if m["name"] == "latency-p99" {
                    "ms"
                } else {
                    "%"
                };
                let value = m["value"]
                    .as_f64()
                    .map_or("-".to_string(), |v| format!("{v:.1}{unit}"));
                format!(
                    "{} {value} (threshold {}{unit}) {}",
                    str_of(&m["name"]),
                    m["threshold"],
                    str_of(&m["result"])
                )
            })
            .collect();
        let _ = writeln!(
            out,
            "analysis:  {} {} over {} requests in {:.0}s: {}",
            str_of(&a["verdict"]),
            age(&a["at"], now),
            a["requests"],
            number(&a["window_s"]),
            metrics.join("; ")
        );
    }
    out
}

fn versions_table(svc: &Value) -> String {
    let rows: Vec<Vec<String>> = svc["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(version_row)
        .collect();
    table(&VERSION_HEADERS, &rows)
}

/// A mutation's answer: what happened, then the service's versions as they are now.
fn mutation_summary(svc: &Value, what: &str) -> String {
    format!(
        "{}: {what}\n\n{}",
        str_of(&svc["name"]),
        versions_table(svc)
    )
}

/// `blue=90% green=10%`: a revision's weights as shares.
fn shares(weights: &Value) -> String {
    let Some(map) = weights.as_object() else {
        return "-".to_string();
    };
    let total: f64 = map.values().map(number).sum();
    map.iter()
        .map(|(k, w)| {
            let share = if total > 0.0 {
                number(w) * 100.0 / total
            } else {
                0.0
            };
            format!("{k}={}", percent(share))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `ctl rollout history`: like `kubectl rollout history`, oldest first.
fn history_table(doc: &Value, now: SystemTime) -> String {
    let rows: Vec<Vec<String>> = doc["revisions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            vec![
                str_of(&r["id"]),
                age(&r["at"], now),
                str_of(&r["source"]),
                shares(&r["weights"]),
                str_of(&r["reason"]),
            ]
        })
        .collect();
    table(&["REVISION", "AGE", "SOURCE", "WEIGHTS", "REASON"], &rows)
}

fn events_table(doc: &Value, now: SystemTime) -> String {
    let rows: Vec<Vec<String>> = doc["events"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            vec![
                str_of(&e["id"]),
                age(&e["at"], now),
                str_of(&e["service"]),
                str_of(&e["kind"]),
                str_of(&e["message"]),
            ]
        })
        .collect();
    if rows.is_empty() {
        return "no events\n".to_string();
    }
    table(&["ID", "AGE", "SERVICE", "KIND", "MESSAGE"], &rows)
}

fn fleet_table(doc: &Value) -> String {
    let rows: Vec<Vec<String>> = doc["replicas"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let applied = r["applied_revision"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(svc, n)| format!("{svc}={n}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            let drift = r["config_mismatch"]
                .as_array()
                .map(|a| a.iter().map(str_of).collect::<Vec<_>>().join(","))
                .unwrap_or_default();
            vec![
                str_of(&r["name"]),
                if r["leader"] == json!(true) { "*" } else { "" }.to_string(),
                str_of(&r["admin"]),
                applied,
                if drift.is_empty() {
                    "-".to_string()
                } else {
                    drift
                },
            ]
        })
        .collect();
    let store = &doc["store"];
    let mut out = format!(
        "leader: {}   store: {} ({})\n",
        doc["leader"].as_str().unwrap_or("none"),
        if store["healthy"] == json!(true) {
            "healthy"
        } else {
            "UNAVAILABLE"
        },
        store["endpoints"]
            .as_array()
            .map(|a| a.iter().map(str_of).collect::<Vec<_>>().join(", "))
            .unwrap_or_default(),
    );
    if let Some(e) = store["error"].as_str() {
        out.push_str(&format!("store error: {e}\n"));
    }
    out.push_str(&table(
        &["REPLICA", "LEADER", "ADMIN", "APPLIED", "CONFIG DRIFT"],
        &rows,
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_parse_as_numbers_or_percentages() {
        assert_eq!(parse_weight("blue=90").unwrap(), ("blue".into(), json!(90)));
        assert_eq!(
            parse_weight("green=10%").unwrap(),
            ("green".into(), json!("10%"))
        );
        assert!(parse_weight("blue").is_err());
        assert!(parse_weight("=5").is_err());
        assert!(parse_weight("blue=-1").is_err());
        assert!(parse_weight("blue=101%").is_err());
        assert!(parse_weight("blue=ten").is_err());
    }

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["A", "LONGER"],
            &[
                vec!["xxxx".into(), "1".into()],
                vec!["y".into(), "2".into()],
            ],
        );
        assert_eq!(t, "A      LONGER\nxxxx   1\ny      2\n");
    }

    #[test]
    fn ages_and_shares_read_like_kubectl() {
        let now = humantime::parse_rfc3339("2026-11-28T12:03:10Z").unwrap();
        assert_eq!(age(&json!("2026-11-28T12:00:00Z"), now), "3m ago");
        assert_eq!(age(&json!("2026-11-28T12:03:05Z"), now), "5s ago");
        assert_eq!(age(&json!("2026-11-26T12:00:00Z"), now), "2d ago");
        assert_eq!(
            shares(&json!({"blue": 90, "green": 10})),
            "blue=90% green=10%"
        );
        assert_eq!(shares(&json!({"a": 1, "b": 2})), "a=33.33% b=66.67%");
    }

    #[test]
    fn service_names_are_escaped_as_one_segment() {
        assert_eq!(segment("api"), "api");
        assert_eq!(segment("a/b c"), "a%2Fb%20c");
    }
}
