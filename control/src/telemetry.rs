//! Windows over the data path's counters: the last second, the last ten, the last five minutes.
//!
//! The data path only ever adds to cumulative atomics. On every controller tick this module
//! snapshots each version's counters, and every question about "recent" traffic is answered as
//! a difference between two snapshots (DESIGN §3): fast-fail looks at the last second, the API
//! at the last ten, the dashboard's sparklines at one point per second for five minutes.
//! Nothing here is on the request path; it is shared with the admin API behind a mutex that
//! only the controller's tick and API reads take.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use switchyard_proxy::stats::VersionSnapshot;
use switchyard_proxy::table::VersionRoute;
use switchyard_proxy::RoutingTable;

/// Snapshots kept at tick granularity (one second at a 250 ms tick, plus the newest).
const TICKS_KEPT: usize = 5;
/// Per-second snapshots kept for the live numbers.
const SECONDS_KEPT: usize = 11;
/// Per-second points kept for sparklines (five minutes).
const POINTS_KEPT: usize = 300;

/// One second of one version's traffic, for sparklines.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point {
    /// Unix time, seconds.
    pub t: u64,
    pub rps: f64,
    pub error_rate: f64,
    pub p99_ms: f64,
}

/// Recent traffic of one version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Live {
    pub rps: f64,
    pub error_rate: f64,
    pub p99_ms: f64,
}

#[derive(Debug, Default)]
struct Series {
    ticks: VecDeque<(Instant, VersionSnapshot)>,
    seconds: VecDeque<(Instant, VersionSnapshot)>,
    points: VecDeque<Point>,
    seen: bool,
}

/// (service, version, release): a new release starts a new series.
type Key = (Arc<str>, Arc<str>, Arc<str>);

#[derive(Debug, Default)]
pub struct Telemetry {
    series: HashMap<Key, Series>,
}

pub fn snapshot(version: &VersionRoute) -> VersionSnapshot {
    version
        .stats
        .snapshot(version.backend_stats.iter().map(|s| &**s))
}

fn snapshot_after(version: &VersionRoute, previous: Option<&VersionSnapshot>) -> VersionSnapshot {
    version
        .stats
        .snapshot_after(version.backend_stats.iter().map(|s| &**s), previous)
}

impl Telemetry {
    /// Takes this tick's snapshots of every version in `table`.
    pub fn sample(&mut self, table: &RoutingTable, now: Instant) {
        for s in self.series.values_mut() {
            s.seen = false;
        }
        for service in table.services.iter() {
            for version in service.versions.iter() {
                let key = (
                    Arc::clone(&service.name),
                    Arc::clone(&version.name),
                    Arc::clone(&version.release),
                );
                let series = self.series.entry(key).or_default();
                series.seen = true;
                let snap = snapshot_after(version, series.ticks.back().map(|(_, s)| s));
                let new_second = series
                    .seconds
                    .back()
                    .is_none_or(|(at, _)| now.duration_since(*at) >= Duration::from_millis(990));
                if new_second {
                    if let Some((at, prev)) = series.seconds.back() {
                        let window = snap.since(prev);
                        let secs = now.duration_since(*at).as_secs_f64().max(0.001);
                        let p = point(&window, secs);
                        if p.rps == 0.0 && series.points.iter().all(|q| q.rps == 0.0) {
                            // Five idle minutes draw no line: keep nothing for them (a
                            // config with 10,000 services is mostly idle versions).
                            series.points = VecDeque::new();
                        } else {
                            push_bounded(&mut series.points, p, POINTS_KEPT);
                        }
                    }
                    push_bounded(&mut series.seconds, (now, snap.clone()), SECONDS_KEPT);
                }
                push_bounded(&mut series.ticks, (now, snap), TICKS_KEPT);
            }
        }
        self.series.retain(|_, s| s.seen);
    }

    fn get(&self, service: &str, version: &VersionRoute) -> Option<&Series> {
        let key = (
            Arc::from(service),
            Arc::clone(&version.name),
            Arc::clone(&version.release),
        );
        self.series.get(&key)
    }

    /// The version's traffic within the last second: since the oldest tick snapshot that is
    /// at most a second old. Fast-fail judges this, so a canary failing everything trips as
    /// soon as `min_requests` of its requests have failed, not a whole second later.
    pub fn last_second(&self, service: &str, version: &VersionRoute) -> Option<VersionSnapshot> {
        let series = self.get(service, version)?;
        let (newest_at, newest) = series.ticks.back()?;
        series
            .ticks
            .iter()
            .find(|(at, _)| {
                at < newest_at && newest_at.duration_since(*at) <= Duration::from_secs(1)
            })
            .map(|(_, old)| newest.since(old))
    }

    /// Request rate, error % and p99 over the last ten seconds.
    pub fn live(&self, service: &str, version: &VersionRoute) -> Live {
        let Some(series) = self.get(service, version) else {
            return Live::default();
        };
        match (series.seconds.front(), series.seconds.back()) {
            (Some((t0, first)), Some((t1, last))) if t1 > t0 => {
                let window = last.since(first);
                let p = point(&window, t1.duration_since(*t0).as_secs_f64());
                Live {
                    rps: p.rps,
                    error_rate: p.error_rate,
                    p99_ms: p.p99_ms,
                }
            }
            _ => Live::default(),
        }
    }

    /// Per-second points for the last five minutes, oldest first.
    pub fn points(&self, service: &str, version: &VersionRoute) -> Vec<Point> {
        self.get(service, version)
            .map(|s| s.points.iter().copied().collect())
            .unwrap_or_default()
    }
}

fn point(window: &VersionSnapshot, secs: f64) -> Point {
    Point {
        t: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        rps: round2(window.total as f64 / secs),
        error_rate: round2(window.error_rate().unwrap_or(0.0)),
        p99_ms: round2(
            window
                .quantile(0.99)
                .map_or(0.0, |d| d.as_secs_f64() * 1000.0),
        ),
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn push_bounded<T>(q: &mut VecDeque<T>, item: T, cap: usize) {
    if q.len() == cap {
        q.pop_front();
    }
    q.push_back(item);
}
