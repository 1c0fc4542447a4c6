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
use switchyard_proxy::table::VersionRoute;
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
    /// Per-second points, oldest first.
    pub points: Vec<Point>,
}

/// As the API's `series`: the points.
impl Serialize for SeriesView {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.points.serialize(s)
    }
}

/// One published series: (version, release, what readers see).
type Published = (Arc<str>, Arc<str>, Arc<SeriesView>);

/// Service name → position in the table the readings are aligned with.
type Index = Arc<HashMap<Arc<str>, usize>>;

/// What readers see of every version: one flat list in table order, so publishing it every
/// second is one allocation, not one per service.
#[derive(Debug, Default)]
pub struct TelemetryView {
    index: Index,
    /// `series[offsets[i]..offsets[i + 1]]` are service `i`'s versions.
    offsets: Vec<usize>,
    series: Vec<Published>,
}

impl TelemetryView {
    /// The published series of one version (empty before its first second).
    pub fn get(&self, service: &str, version: &VersionRoute) -> Arc<SeriesView> {
        let Some(&i) = self.index.get(service) else {
            return Arc::default();
        };
        let (Some(&from), Some(&to)) = (self.offsets.get(i), self.offsets.get(i + 1)) else {
            return Arc::default();
        };
        self.series[from..to]
            .iter()
            .find(|(v, r, _)| *v == version.name && *r == version.release)
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
        }
    }

    fn is(&self, version: &VersionRoute) -> bool {
        self.version == version.name && self.release == version.release
    }

    fn newest(&self) -> Option<&Window> {
        self.ticks.back().map(|(_, w)| w)
    }

    fn read(&mut self, version: &VersionRoute, now: Millis) {
        let reading = Window::read(version, self.newest());
        push_bounded(&mut self.ticks, (now, reading), TICKS_KEPT);
    }

    /// Once a second: the live numbers and the sparkline's next point.
    fn second(&mut self, now: Millis) {
        let (_, reading) = self.ticks.back().cloned().expect("read first");
        let unchanged = self
            .seconds
            .back()
            .is_some_and(|(_, prev)| prev.requests == reading.requests);
        if unchanged && self.points.is_empty() {
            // Idle and drawing nothing (most versions of a large config): keep one reading,
            // as of now, and the empty view as it is.
            let keep = self.seconds.len() - 1;
            self.seconds.drain(..keep);
            if let Some(last) = self.seconds.back_mut() {
                last.0 = now;
            }
            return;
        }
        if let Some((at, prev)) = self.seconds.back() {
            let p = point(&reading.since(prev), now.saturating_sub(*at), now);
            if p.rps == 0.0 && self.points.iter().all(|q| q.rps == 0.0) {
                // Five idle minutes draw no line: keep nothing for them.
                self.points = VecDeque::new();
                if *self.view != SeriesView::default() {
                    self.view = Arc::default();
                }
            } else {
                push_bounded(&mut self.points, p, POINTS_KEPT);
                self.view = Arc::new(SeriesView {
                    live: live(&self.seconds, &reading, now),
                    points: self.points.iter().copied().collect(),
                });
            }
        }
        if self
            .minutes
            .back()
            .is_none_or(|(at, _)| now.saturating_sub(*at) >= 60_000)
        {
            push_bounded(&mut self.minutes, (now, reading.clone()), MINUTES_KEPT);
        }
        push_bounded(&mut self.seconds, (now, reading), SECONDS_KEPT);
    }
}

/// The loop's readings, aligned with the routing table (service by service, version by
/// version); see the module doc.
#[derive(Debug, Default)]
pub struct Sampler {
    /// The table generation `services` is aligned with.
    generation: u64,
    services: Vec<Vec<Series>>,
    index: Index,
}

impl Sampler {
    /// Re-aligns with a newly compiled table, keeping the readings of versions it still has.
    fn align(&mut self, table: &RoutingTable) {
        if self.generation == table.generation && self.services.len() == table.services.len() {
            return;
        }
        let mut old: HashMap<Arc<str>, Vec<Series>> = self
            .index
            .iter()
            .filter_map(|(name, &i)| {
                let list = std::mem::take(self.services.get_mut(i)?);
                Some((Arc::clone(name), list))
            })
            .collect();
        self.services = table
            .services
            .iter()
            .map(|route| {
                let mut prev = old.remove(&route.name).unwrap_or_default();
                route
                    .versions
                    .iter()
                    .map(|v| match prev.iter().position(|s| s.is(v)) {
                        Some(k) => prev.swap_remove(k),
                        None => Series::new(v),
                    })
                    .collect()
            })
            .collect();
        self.index = Arc::new(
            table
                .services
                .iter()
                .enumerate()
                .map(|(i, s)| (Arc::clone(&s.name), i))
                .collect(),
        );
        self.generation = table.generation;
    }

    /// Reads one service's versions now (every tick, for running rollouts).
    pub fn tick(&mut self, table: &RoutingTable, service: &str, now: Millis) {
        self.align(table);
        let Some(&i) = self.index.get(service) else {
            return;
        };
        for (version, series) in table.services[i].versions.iter().zip(&mut self.services[i]) {
            series.read(version, now);
        }
    }

    /// Reads every version (once a second) and returns what readers should see now.
    pub fn second(&mut self, table: &RoutingTable, now: Millis) -> TelemetryView {
        self.align(table);
        let mut offsets = Vec::with_capacity(table.services.len() + 1);
        let mut series = Vec::with_capacity(table.services.len() * 2);
        for (route, list) in table.services.iter().zip(&mut self.services) {
            offsets.push(series.len());
            for (version, s) in route.versions.iter().zip(list.iter_mut()) {
                s.read(version, now);
                s.second(now);
                series.push((
                    Arc::clone(&s.version),
                    Arc::clone(&s.release),
                    Arc::clone(&s.view),
                ));
            }
        }
        offsets.push(series.len());
        TelemetryView {
            index: Arc::clone(&self.index),
            offsets,
            series,
        }
    }

    fn series(&self, service: &str, version: &VersionRoute) -> Option<&Series> {
        let &i = self.index.get(service)?;
        self.services.get(i)?.iter().find(|s| s.is(version))
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
