//! Readings of the data path's counters, kept as short rings of cumulative [`Window`]s.
//!
//! The data path only ever adds to atomics. The run loop reads them: every tick (250 ms) for
//! the canary and stable of each running rollout — fast-fail needs the last second *now* —
//! and once a second for every version, for the API's live numbers and the dashboard's
//! sparklines. Every question about recent traffic is a difference of two readings
//! (DESIGN §3). The loop alone owns the [`Sampler`]; what readers need is published as an
//! immutable [`TelemetryView`] (`ArcSwap`), so an API request never takes a lock the loop
//! needs, and an idle version's published series is shared, not rebuilt, every second.

pub mod window;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use serde::Serialize;
use switchyard_proxy::table::{ServiceRoute, VersionRoute};
use switchyard_proxy::RoutingTable;

use crate::clock::Millis;
use window::Window;

/// Tick readings kept (one second at a 250 ms tick, plus the newest).
const TICKS_KEPT: usize = 6;
/// Per-second readings kept for the live numbers (ten seconds).
const SECONDS_KEPT: usize = 11;
/// Per-minute readings kept (five minutes: the stable's recent latency).
const MINUTES_KEPT: usize = 6;
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

/// Recent traffic of one version (the last ten seconds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Live {
    pub rps: f64,
    pub error_rate: f64,
    pub p99_ms: f64,
}

/// What readers see of one version.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SeriesView {
    pub live: Live,
    pub points: Vec<Point>,
}

/// One published series: (version, release, what readers see).
type Published = (Arc<str>, Arc<str>, Arc<SeriesView>);

/// What readers see of every version, by service.
#[derive(Debug, Default)]
pub struct TelemetryView {
    services: HashMap<Arc<str>, Vec<Published>>,
}

impl TelemetryView {
    /// The published series of one version (empty before its first second).
    pub fn get(&self, service: &str, version: &VersionRoute) -> Arc<SeriesView> {
        self.services
            .get(service)
            .and_then(|vs| {
                vs.iter()
                    .find(|(v, r, _)| *v == version.name && *r == version.release)
            })
            .map(|(_, _, view)| Arc::clone(view))
            .unwrap_or_default()
    }
}

#[derive(Debug)]
struct Series {
    version: Arc<str>,
    release: Arc<str>,
    ticks: VecDeque<(Millis, Window)>,
    seconds: VecDeque<(Millis, Window)>,
    minutes: VecDeque<(Millis, Window)>,
    points: VecDeque<Point>,
    view: Arc<SeriesView>,
    seen: bool,
}

impl Series {
    fn new(version: &VersionRoute) -> Series {
        Series {
            version: Arc::clone(&version.name),
            release: Arc::clone(&version.release),
            ticks: VecDeque::new(),
            seconds: VecDeque::new(),
            minutes: VecDeque::new(),
            points: VecDeque::new(),
            view: Arc::default(),
            seen: true,
        }
    }

    fn newest(&self) -> Option<&Window> {
        self.ticks.back().map(|(_, w)| w)
    }
}

/// The loop's readings; see the module doc.
#[derive(Debug, Default)]
pub struct Sampler {
    services: HashMap<Arc<str>, Vec<Series>>,
}

impl Sampler {
    /// Reads one service's versions now (every tick, for running rollouts).
    pub fn tick(&mut self, service: &ServiceRoute, now: Millis) {
        let series = self.services.entry(Arc::clone(&service.name)).or_default();
        for version in service.versions.iter() {
            let i = match series
                .iter()
                .position(|s| s.version == version.name && s.release == version.release)
            {
                Some(i) => i,
                None => {
                    series.push(Series::new(version));
                    series.len() - 1
                }
            };
            let s = &mut series[i];
            s.seen = true;
            let reading = Window::read(version, s.newest());
            push_bounded(&mut s.ticks, (now, reading), TICKS_KEPT);
        }
    }

    /// Reads every version (once a second) and returns what readers should see now.
    pub fn second(&mut self, table: &RoutingTable, now: Millis) -> TelemetryView {
        for list in self.services.values_mut() {
            for s in list.iter_mut() {
                s.seen = false;
            }
        }
        let mut view = TelemetryView::default();
        for service in table.services.iter() {
            self.tick(service, now);
            let list = self.services.get_mut(&service.name).expect("just read");
            let mut published = Vec::with_capacity(list.len());
            for s in list.iter_mut().filter(|s| s.seen) {
                let (_, reading) = s.ticks.back().cloned().expect("just read");
                if let Some((at, prev)) = s.seconds.back() {
                    let p = point(&reading.since(prev), now.saturating_sub(*at), now);
                    if p.rps == 0.0 && s.points.iter().all(|q| q.rps == 0.0) {
                        // Five idle minutes draw no line: keep nothing for them (a config
                        // with 10,000 services is mostly idle versions).
                        s.points = VecDeque::new();
                    } else {
                        push_bounded(&mut s.points, p, POINTS_KEPT);
                        s.view = Arc::new(SeriesView {
                            live: live(&s.seconds, &reading, now),
                            points: s.points.iter().copied().collect(),
                        });
                    }
                }
                if s.minutes
                    .back()
                    .is_none_or(|(at, _)| now.saturating_sub(*at) >= 60_000)
                {
                    push_bounded(&mut s.minutes, (now, reading.clone()), MINUTES_KEPT);
                }
                push_bounded(&mut s.seconds, (now, reading), SECONDS_KEPT);
                published.push((
                    Arc::clone(&s.version),
                    Arc::clone(&s.release),
                    Arc::clone(&s.view),
                ));
            }
            list.retain(|s| s.seen);
            view.services.insert(Arc::clone(&service.name), published);
        }
        self.services
            .retain(|name, _| view.services.contains_key(name));
        view
    }

    fn series(&self, service: &str, version: &VersionRoute) -> Option<&Series> {
        self.services
            .get(service)?
            .iter()
            .find(|s| s.version == version.name && s.release == version.release)
    }

    /// The newest cumulative reading of a version.
    pub fn reading(&self, service: &str, version: &VersionRoute) -> Window {
        self.series(service, version)
            .and_then(Series::newest)
            .cloned()
            .unwrap_or_default()
    }

    /// The version's traffic within the last second: since the oldest tick reading at most a
    /// second old. Fast-fail judges this, so a canary failing everything trips as soon as
    /// `min_requests` of its requests have failed, not a whole second later.
    pub fn last_second(&self, service: &str, version: &VersionRoute) -> Window {
        let Some(s) = self.series(service, version) else {
            return Window::default();
        };
        let Some((newest_at, newest)) = s.ticks.back() else {
            return Window::default();
        };
        s.ticks
            .iter()
            .find(|(at, _)| at < newest_at && newest_at - at <= 1000)
            .map(|(_, old)| newest.since(old))
            .unwrap_or_default()
    }

    /// The second that closed at the newest per-second reading (each second once).
    pub fn closed_second(&self, service: &str, version: &VersionRoute) -> Option<Window> {
        let s = self.series(service, version)?;
        let n = s.seconds.len();
        (n >= 2).then(|| s.seconds[n - 1].1.since(&s.seconds[n - 2].1))
    }

    /// The version's traffic over the previous minutes, up to the start of the current second.
    pub fn recent(&self, service: &str, version: &VersionRoute) -> Window {
        let Some(s) = self.series(service, version) else {
            return Window::default();
        };
        match (s.minutes.front(), s.seconds.back()) {
            (Some((_, old)), Some((_, new))) => new.since(old),
            _ => Window::default(),
        }
    }
}

fn live(seconds: &VecDeque<(Millis, Window)>, reading: &Window, now: Millis) -> Live {
    match seconds.front() {
        Some((t0, first)) if now > *t0 => {
            let p = point(&reading.since(first), now - t0, now);
            Live {
                rps: p.rps,
                error_rate: p.error_rate,
                p99_ms: p.p99_ms,
            }
        }
        _ => Live::default(),
    }
}

fn point(window: &Window, span_ms: u64, now: Millis) -> Point {
    let secs = (span_ms as f64 / 1000.0).max(0.001);
    Point {
        t: now / 1000,
        rps: round2(window.requests as f64 / secs),
        error_rate: round2(window.error_rate().unwrap_or(0.0)),
        p99_ms: round2(window.latency.quantile_ms(0.99).unwrap_or(0.0)),
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
