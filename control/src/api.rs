//! The control API under `/api/v1` (SPEC §7): reads from published snapshots, mutations as
//! commands to the controller.
//!
//! Reads never wait on the controller: they combine the controller's published [`View`],
//! the live routing table and the telemetry windows. Mutations are parsed and checked here
//! (shape, types, ranges — bad input changes nothing and says which field), then sent to the
//! controller, which answers only after the change is applied *and* persisted.

use std::collections::BTreeMap;

use http::{Method, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{json, Value};
use switchyard_proxy::RoutingTable;

use crate::admin::{error_response, json_response, AdminResponse, AdminState};
use crate::controller::{ApiError, Command, ServiceView, View};
use crate::events;
use crate::rollout::{Phase, RolloutAction};
use crate::telemetry::Telemetry;

/// Largest JSON body the API reads.
const MAX_BODY: usize = 64 * 1024;

/// Routes `/api/v1/...`; `path` is what follows `/api/v1`.
pub async fn route(state: &AdminState, req: http::Request<Incoming>, path: &str) -> AdminResponse {
    let method = req.method().clone();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let query = req.uri().query().unwrap_or("").to_string();
    match (segments.as_slice(), &method) {
        (["status"], &Method::GET) => json_response(StatusCode::OK, &state.status.load().to_json()),
        (["services"], &Method::GET) => {
            let view = state.readers.view.load();
            let table = state.table.load();
            let telemetry = state.readers.telemetry.lock().ok();
            let services: Vec<Value> = view
                .services
                .iter()
                .map(|(name, sv)| service_json(name, &view, sv, &table, telemetry.as_deref()))
                .collect();
            json_response(StatusCode::OK, &json!({ "services": services }))
        }
        (["services", svc], &Method::GET) => {
            with_service(state, svc, |name, view, sv, table, t| {
                json_response(StatusCode::OK, &service_json(name, view, sv, table, t))
            })
        }
        (["services", svc, "history"], &Method::GET) => {
            with_service(state, svc, |_, _, sv, _, _| {
                json_response(StatusCode::OK, &json!({ "revisions": &*sv.history }))
            })
        }
        (["events"], &Method::GET) => {
            let since = match query_u64(&query, "since") {
                Ok(s) => s.unwrap_or(0),
                Err(e) => return error_response(StatusCode::BAD_REQUEST, &e, Some("since")),
            };
            let all = state.readers.events.load();
            json_response(
                StatusCode::OK,
                &json!({ "events": events::since(&all, since) }),
            )
        }
        (["services", svc, "weights"], &Method::PUT) => {
            mutate(state, req, svc, |body| {
                parse_weights(body).map(Command::SetWeights)
            })
            .await
        }
        (["services", svc, "switch"], &Method::POST) => {
            mutate(state, req, svc, |body| {
                let b: SwitchBody = parse_json(body)?;
                Ok(Command::Switch { to: b.to })
            })
            .await
        }
        (["services", svc, "rollback"], &Method::POST) => {
            mutate(state, req, svc, |body| {
                let b: RollbackBody = parse_json_or_empty(body)?;
                Ok(Command::Rollback { reason: b.reason })
            })
            .await
        }
        (["services", svc, "undo"], &Method::POST) => {
            mutate(state, req, svc, |body| {
                let b: UndoBody = parse_json_or_empty(body)?;
                Ok(Command::Undo {
                    to_revision: b.to_revision,
                })
            })
            .await
        }
        (["services", svc, "rollout", action], &Method::POST) => match RolloutAction::parse(action)
        {
            Some(action) => mutate(state, req, svc, |_| Ok(Command::Rollout(action))).await,
            None => error_response(
                StatusCode::NOT_FOUND,
                &format!(
                    "no rollout action {action:?} (use start, pause, resume, promote or abort)"
                ),
                None,
            ),
        },
        (
            ["status"]
            | ["services"]
            | ["services", _]
            | ["services", _, "history"]
            | ["events"]
            | ["services", _, "weights"]
            | ["services", _, "switch"]
            | ["services", _, "rollback"]
            | ["services", _, "undo"]
            | ["services", _, "rollout", _],
            _,
        ) => error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("{method} is not allowed on /api/v1{path}"),
            None,
        ),
        _ => error_response(
            StatusCode::NOT_FOUND,
            &format!("no such endpoint: /api/v1{path}"),
            None,
        ),
    }
}

fn with_service(
    state: &AdminState,
    svc: &str,
    f: impl FnOnce(&str, &View, &ServiceView, &RoutingTable, Option<&Telemetry>) -> AdminResponse,
) -> AdminResponse {
    let view = state.readers.view.load();
    let Some(sv) = view.services.get(svc) else {
        return error_response(
            StatusCode::NOT_FOUND,
            &format!("no service named {svc:?}"),
            None,
        );
    };
    let table = state.table.load();
    let telemetry = state.readers.telemetry.lock().ok();
    f(svc, &view, sv, &table, telemetry.as_deref())
}

/// Authorizes, reads and parses the body, sends the command, answers with the service.
async fn mutate(
    state: &AdminState,
    req: http::Request<Incoming>,
    svc: &str,
    parse: impl FnOnce(&[u8]) -> Result<Command, ApiError>,
) -> AdminResponse {
    if let Err(e) = state.auth.check(req.headers()) {
        return error_response(StatusCode::UNAUTHORIZED, &e, None);
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                &format!("cannot read the request body (at most {MAX_BODY} bytes): {e}"),
                None,
            )
        }
    };
    if !state.readers.view.load().services.contains_key(svc) {
        return error_response(
            StatusCode::NOT_FOUND,
            &format!("no service named {svc:?}"),
            None,
        );
    }
    let command = match parse(&body) {
        Ok(c) => c,
        Err(e) => return error_response(e.status, &e.message, e.field.as_deref()),
    };
    match state.controller.command(svc, command).await {
        Ok(_) => with_service(state, svc, |name, view, sv, table, t| {
            json_response(StatusCode::OK, &service_json(name, view, sv, table, t))
        }),
        Err(e) => error_response(e.status, &e.message, e.field.as_deref()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SwitchBody {
    to: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RollbackBody {
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct UndoBody {
    #[serde(default)]
    to_revision: Option<u64>,
}

fn bad(message: impl Into<String>, field: Option<&str>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, message, field)
}

fn parse_json<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| bad(format!("invalid JSON body: {e}"), None))
}

fn parse_json_or_empty<T: for<'de> Deserialize<'de> + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        Ok(T::default())
    } else {
        parse_json(body)
    }
}

/// `{"blue": 90, "green": "10%"}` → weights; every value checked with its field named.
fn parse_weights(body: &[u8]) -> Result<BTreeMap<String, u32>, ApiError> {
    let raw: BTreeMap<String, Value> = parse_json(body)?;
    if raw.is_empty() {
        return Err(bad(
            "give at least one version's weight, e.g. {\"blue\":90,\"green\":10}",
            None,
        ));
    }
    raw.into_iter()
        .map(|(version, value)| {
            let weight = match &value {
                Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
                Value::String(s) => s.strip_suffix('%').and_then(|n| n.trim().parse::<u32>().ok()).filter(|&n| n <= 100),
                _ => None,
            };
            match weight {
                Some(w) if w <= 1_000_000 => Ok((version, w)),
                _ => Err(bad(
                    format!("weight of {version:?} must be a whole number from 0 to 1000000 or a percentage like \"10%\", not {value}"),
                    Some(&version),
                )),
            }
        })
        .collect()
}

fn query_u64(query: &str, key: &str) -> Result<Option<u64>, String> {
    for pair in query.split('&') {
        if let Some((k, v)) = pair.split_once('=') {
            if k == key {
                return v
                    .parse()
                    .map(Some)
                    .map_err(|_| format!("{key} must be a non-negative whole number, not {v:?}"));
            }
        }
    }
    Ok(None)
}

/// The service document of SPEC §7.
pub fn service_json(
    name: &str,
    view: &View,
    sv: &ServiceView,
    table: &RoutingTable,
    telemetry: Option<&Telemetry>,
) -> Value {
    let route = table.service(name);
    let versions: Vec<Value> = route
        .map(|route| {
            route
                .versions
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let live = telemetry.map(|t| t.live(name, v)).unwrap_or_default();
                    let history = telemetry.map(|t| t.points(name, v)).unwrap_or_default();
                    json!({
                        "name": &*v.name,
                        "release": &*v.release,
                        "weight": round2(route.share_percent(i)),
                        "rolled_back": v.rolled_back,
                        "backends": v.backends.iter().map(|b| json!({
                            "address": b.address.to_string(),
                            "healthy": b.is_healthy(),
                        })).collect::<Vec<_>>(),
                        "live": live,
                        "series": history,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let rollout = view
        .config
        .service(name)
        .and_then(|cfg| cfg.rollout.as_ref())
        .map(|cfg| {
            let record = sv.rollout.as_ref();
            json!({
                "state": record.map_or(Phase::Idle, |r| r.phase).as_str(),
                "step": record.map_or(0, |r| if r.phase == Phase::Idle { 0 } else { r.step + 1 }),
                "steps": cfg.steps.len(),
                "stable": record.map_or(cfg.stable.as_str(), |r| r.stable.as_str()),
                "canary": record.map_or(cfg.canary.as_str(), |r| r.canary.as_str()),
                "release": record.map(|r| r.canary_release.as_str()),
                "failed_checks": record.map_or(0, |r| r.failed_checks),
                "threshold": sv.threshold,
                "awaiting_gate": record.is_some_and(|r| r.awaiting_gate),
                "reason": record.and_then(|r| r.reason.as_deref()),
                "started_at": record.map(|r| r.started_at.as_str()),
                "finished_at": record.and_then(|r| r.finished_at.as_deref()),
                "last_analysis": sv.last_analysis,
            })
        });
    json!({
        "name": name,
        "revision": sv.revision,
        "versions": versions,
        "rollout": rollout,
    })
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
