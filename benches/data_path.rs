//! Micro-benchmarks of the data path's per-request work (issue 8 goals in brackets):
//!
//! - `record`: one `BackendStats::record` + `VersionStats::record_latency` (≤ 50 ns), and two
//!   threads recording into the same backend (contended atomics);
//! - `route_pick`: `ServiceMatcher::find` + `WeightedPick::pick_random` / `pick_bucket` at
//!   3 versions (≤ 100 ns);
//! - `table_load`: one `ArcSwap` load of the routing table (≤ 20 ns);
//! - `route_lookup`: exact-host lookup at 1, 100 and 10,000 services (flat: a hash map);
//! - `compile`: compiling a 10,000-service `RoutingTable` (≤ 200 ms).
//!
//! Configs are built as YAML text and parsed with `switchyard_config::parse`, as the binary
//! does. Run with `cargo bench --bench data_path`; results go to `docs/PERFORMANCE.md`.

use std::fmt::Write;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use switchyard_proxy::pick::sticky_bucket;
use switchyard_proxy::stats::{BackendStats, FailureReason, VersionStats};
use switchyard_proxy::{RoutingTable, TrafficState};

/// A config with `services` services, each on its own exact host `svc-N.example.com`, with
/// `versions` versions of one backend each.
fn config_yaml(services: usize, versions: usize) -> String {
    let mut y = String::from(
        "listeners: [{ name: public, address: \"127.0.0.1:8080\" }]\n\
         admin: { address: \"127.0.0.1:9901\" }\nservices:\n",
    );
    for s in 0..services {
        let _ = writeln!(
            y,
            "  svc-{s}:\n    match: {{ hosts: [\"svc-{s}.example.com\"], path_prefix: / }}\n    versions:"
        );
        for v in 0..versions {
            // 10.x.y.z:8080, distinct per (service, version).
            let n = s * versions + v;
            let _ = writeln!(
                y,
                "      v{v}: {{ release: r{v}, backends: [\"10.{}.{}.{}:8080\"], weight: {} }}",
                (n >> 16) & 0xff,
                (n >> 8) & 0xff,
                n & 0xff,
                [80, 15, 5][v % 3],
            );
        }
    }
    y
}

fn table(services: usize, versions: usize) -> RoutingTable {
    let config = switchyard_config::parse(&config_yaml(services, versions), "bench.yaml")
        .unwrap_or_else(|e| panic!("bench config: {e:?}"));
    RoutingTable::compile(&config, &TrafficState::default(), None)
}

fn record(c: &mut Criterion) {
    let mut g = c.benchmark_group("record");
    g.throughput(Throughput::Elements(1));
    let version = VersionStats::default();
    let backend = BackendStats::default();
    g.bench_function("single_thread", |b| {
        let mut i = 0u64;
        b.iter(|| {
            // Vary status and latency a little so nothing is hoisted out of the loop.
            i = i.wrapping_add(1);
            let status = if i % 100 == 0 { 503 } else { 200 };
            let failure = (status >= 500).then_some(FailureReason::Status);
            backend.record(black_box(status), black_box(failure));
            version.record_latency(black_box(Duration::from_micros(200 + (i & 1023))));
        })
    });
    // Two threads hammering the same backend's and version's counters (worst-case sharing).
    let shared = Arc::new((VersionStats::default(), BackendStats::default()));
    g.bench_function("two_threads_same_backend", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            let threads: Vec<_> = (0..2)
                .map(|_| {
                    let shared = Arc::clone(&shared);
                    std::thread::spawn(move || {
                        for i in 0..iters {
                            shared.1.record(black_box(200), None);
                            shared
                                .0
                                .record_latency(black_box(Duration::from_micros(200 + (i & 1023))));
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().expect("recording thread");
            }
            // Time per record call *per thread* (each did `iters` calls in parallel).
            start.elapsed()
        })
    });
    g.finish();
}

fn route_pick(c: &mut Criterion) {
    let mut g = c.benchmark_group("route_pick");
    let t = table(3, 3);
    let host: Option<&[u8]> = Some(b"svc-1.example.com:8080");
    g.bench_function("find+pick_random/3_versions", |b| {
        b.iter(|| {
            let s = t
                .matcher
                .find(black_box(host), black_box(b"/v1/users"))
                .unwrap();
            t.services[s].pick.pick_random(rand::random())
        })
    });
    g.bench_function("find+pick_bucket/3_versions", |b| {
        b.iter(|| {
            let s = t
                .matcher
                .find(black_box(host), black_box(b"/v1/users"))
                .unwrap();
            t.services[s]
                .pick
                .pick_bucket(sticky_bucket(black_box(b"user-12345")))
        })
    });
    g.finish();
}

fn table_load(c: &mut Criterion) {
    let mut g = c.benchmark_group("table_load");
    let handle = Arc::new(ArcSwap::from_pointee(table(3, 3)));
    g.bench_function("load", |b| b.iter(|| black_box(handle.load()).generation));
    // What the pipeline does: an owned Arc for the request's lifetime.
    g.bench_function("load_full", |b| {
        b.iter(|| black_box(handle.load_full()).generation)
    });
    g.finish();
}

fn route_lookup(c: &mut Criterion) {
    let mut g = c.benchmark_group("route_lookup");
    for n in [1usize, 100, 10_000] {
        let t = table(n, 2);
        // Look up hosts spread over the table (the last one, too).
        let hosts: Vec<String> = (0..64)
            .map(|i| format!("svc-{}.example.com", (i * 7919) % n))
            .collect();
        g.bench_with_input(BenchmarkId::from_parameter(n), &hosts, |b, hosts| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) & 63;
                t.matcher
                    .find(Some(hosts[i].as_bytes()), black_box(b"/"))
                    .unwrap()
            })
        });
    }
    g.finish();
}

fn compile(c: &mut Criterion) {
    let mut g = c.benchmark_group("compile");
    g.sample_size(10);
    let yaml = config_yaml(10_000, 2);
    let config = switchyard_config::parse(&yaml, "bench.yaml").expect("bench config");
    g.bench_function("parse_10000_services", |b| {
        b.iter(|| switchyard_config::parse(black_box(&yaml), "bench.yaml").unwrap())
    });
    g.bench_function("compile_10000_services", |b| {
        b.iter(|| RoutingTable::compile(black_box(&config), &TrafficState::default(), None))
    });
    // A reload: compile against the previous table (carrying pools and counters over).
    let previous = RoutingTable::compile(&config, &TrafficState::default(), None);
    g.bench_function("recompile_10000_services_with_carry_over", |b| {
        b.iter(|| {
            RoutingTable::compile(
                black_box(&config),
                &TrafficState::default(),
                Some(&previous),
            )
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    record,
    route_pick,
    table_load,
    route_lookup,
    compile
);
criterion_main!(benches);
