//! Backend names (SPEC §12) resolved by the control plane's discovery against a real DNS
//! server: the in-test authoritative server of `harness::dns` on loopback, asked by the real
//! hickory resolver through `resolver.nameservers`. This file drives
//! `switchyard_control::discovery` itself and asserts on what it publishes (the addresses each
//! (service, version) sends traffic to), which shows its timing and state machine closely;
//! [`serve`] runs the real binary and asserts on the traffic.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchyard_control::discovery::{Discovery, LookupResult, Snapshot, VersionEndpoints};

use crate::harness::dns::{v4, Answering, DnsServer};
use crate::harness::*;

mod serve;

/// Short clamps so tests re-resolve quickly: records with TTL 1 are asked again within 1 s.
const FAST_RESOLVER: &str = "min_ttl: 100ms, max_ttl: 1s";

/// Upper bound for anything discovery should do within a TTL or two (generous: the machine
/// is shared).
const SETTLE: Duration = Duration::from_secs(20);

fn config(dns: Option<&DnsServer>, versions: &str) -> switchyard_config::Config {
    let resolver = match dns {
        Some(dns) => format!(
            "resolver: {{ nameservers: [\"{}\"], {FAST_RESOLVER} }}\n",
            dns.address
        ),
        None => String::new(),
    };
    let text = format!(
        "listeners:\n  - {{ name: public, address: 127.0.0.1:0 }}\n{resolver}services:\n  api:\n    versions:\n{versions}"
    );
    switchyard_config::parse(&text, "test.yaml").unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn start(dns: &DnsServer, versions: &str) -> Discovery {
    Discovery::with_hickory(&config(Some(dns), versions)).expect("resolver")
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn addresses(v: &VersionEndpoints) -> Vec<SocketAddr> {
    v.endpoints.iter().map(|e| e.address).collect()
}

/// Polls the snapshot until `version` of service `api` satisfies `check`.
async fn until(
    discovery: &Discovery,
    version: &str,
    what: &str,
    check: impl Fn(&VersionEndpoints) -> bool,
) -> VersionEndpoints {
    eventually(SETTLE, what, async || {
        let snapshot = discovery.snapshot();
        match snapshot.version("api", version) {
            Some(v) if check(v) => Ok(v.clone()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
}

fn count(discovery: &Discovery, version: &str, result: LookupResult) -> u64 {
    discovery
        .lookups()
        .iter()
        .find(|c| &*c.service == "api" && &*c.version == version && c.result == result)
        .map_or(0, |c| c.count)
}

/// Waits until `version` has had `n` more lookups with `result` than `from`.
async fn until_counted(discovery: &Discovery, version: &str, result: LookupResult, n: u64) -> u64 {
    let from = count(discovery, version, result);
    eventually(
        SETTLE,
        &format!("{n} more {result:?} lookups"),
        async || {
            let now = count(discovery, version, result);
            if now >= from + n {
                Ok(now)
            } else {
                Err(format!("{:?}", discovery.lookups()))
            }
        },
    )
    .await
}

/// Every snapshot `discovery` publishes from now on, for "never" assertions.
fn record(discovery: &Discovery) -> Arc<Mutex<Vec<Arc<Snapshot>>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut rx = discovery.subscribe();
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            log.lock()
                .unwrap()
                .push(Arc::clone(&rx.borrow_and_update()));
            if rx.changed().await.is_err() {
                return;
            }
        }
    });
    seen
}

#[tokio::test]
async fn an_a_record_change_is_followed_within_its_ttl_and_the_set_is_never_empty() {
    let dns = DnsServer::start().await;
    dns.set_a("api.switchyard.test", &[v4("127.0.0.2")], 1);
    let discovery = start(
        &dns,
        "      blue: { release: v1, backends: [\"api.switchyard.test:8080\"] }\n",
    );
    let v = until(&discovery, "blue", "first resolution", |v| {
        !v.endpoints.is_empty()
    })
    .await;
    assert_eq!(addresses(&v), [addr("127.0.0.2:8080")]);
    let name = v.endpoints[0].name.as_deref();
    assert_eq!(name, Some("api.switchyard.test:8080"));
    assert!(v.unresolved.is_empty());
    let seen = record(&discovery);

    let both = [v4("127.0.0.3"), v4("127.0.0.4")];
    dns.set_a("api.switchyard.test", &both, 1);
    let changed_at = Instant::now();
    let v = until(&discovery, "blue", "the new addresses", |v| {
        addresses(v) == [addr("127.0.0.3:8080"), addr("127.0.0.4:8080")]
    })
    .await;
    // TTL 1 s: asked again within a second, answered in milliseconds.
    let took = changed_at.elapsed();
    assert!(took < Duration::from_secs(3), "followed after {took:?}");
    let weight = v.endpoints[0].weight;
    assert!(v.endpoints.iter().all(|e| e.weight == weight), "{v:?}");

    // A TTL of an hour: max_ttl (1 s here) still bounds how long a change goes unseen, so
    // nothing may keep the answer for its TTL.
    dns.set_a("api.switchyard.test", &[v4("127.0.0.5")], 3600);
    until(&discovery, "blue", "the long-TTL answer", |v| {
        addresses(v) == [addr("127.0.0.5:8080")]
    })
    .await;
    dns.set_a("api.switchyard.test", &[v4("127.0.0.6")], 3600);
    let changed_at = Instant::now();
    until(&discovery, "blue", "the change despite its TTL", |v| {
        addresses(v) == [addr("127.0.0.6:8080")]
    })
    .await;
    let took = changed_at.elapsed();
    assert!(took < Duration::from_secs(3), "followed after {took:?}");

    for s in seen.lock().unwrap().iter() {
        let v = s.version("api", "blue").expect("blue is in every snapshot");
        assert!(!v.endpoints.is_empty(), "an empty set was published: {s:?}");
    }
    assert!(count(&discovery, "blue", LookupResult::Ok) >= 4);
}

/// With a literal address beside the name the version would not be empty without the name,
/// so what keeps the name's addresses here is the name's own rule (a failed lookup keeps the
/// last good set), not the version's never-empty rule.
const NAME_AND_LITERAL: &str =
    "      blue: { release: v1, backends: [\"127.0.0.9:8080\", \"api.switchyard.test:8080\"] }\n";

fn name_and_literal(v: &VersionEndpoints) -> bool {
    addresses(v) == [addr("127.0.0.2:8080"), addr("127.0.0.9:8080")]
}

#[tokio::test]
async fn a_stopped_server_keeps_the_last_good_set() {
    let mut dns = DnsServer::start().await;
    dns.set_a("api.switchyard.test", &[v4("127.0.0.2")], 1);
    let discovery = start(&dns, NAME_AND_LITERAL);
    until(&discovery, "blue", "first resolution", name_and_literal).await;
    let seen = record(&discovery);

    dns.stop();
    until_counted(&discovery, "blue", LookupResult::Error, 2).await;
    let v = discovery.snapshot().version("api", "blue").cloned();
    assert!(name_and_literal(&v.unwrap()));
    assert_eq!(seen.lock().unwrap().len(), 1, "nothing changed: {seen:?}");
}

#[tokio::test]
async fn servfail_and_a_server_that_stops_answering_keep_the_last_good_set() {
    let dns = DnsServer::start().await;
    dns.set_a("api.switchyard.test", &[v4("127.0.0.2")], 1);
    let discovery = start(&dns, NAME_AND_LITERAL);
    until(&discovery, "blue", "first resolution", name_and_literal).await;
    let seen = record(&discovery);

    dns.answer(Answering::ServFail);
    until_counted(&discovery, "blue", LookupResult::Error, 2).await;
    // Timeouts: each lookup waits out the resolver's query timeout, then counts as an error.
    dns.answer(Answering::Silent);
    until_counted(&discovery, "blue", LookupResult::Error, 1).await;

    let v = discovery.snapshot().version("api", "blue").cloned();
    assert!(name_and_literal(&v.unwrap()));
    assert_eq!(seen.lock().unwrap().len(), 1, "nothing changed: {seen:?}");
    // And answers again: followed as before.
    dns.set_a("api.switchyard.test", &[v4("127.0.0.5")], 1);
    dns.answer(Answering::Zone);
    until(&discovery, "blue", "the server back", |v| {
        addresses(v) == [addr("127.0.0.5:8080"), addr("127.0.0.9:8080")]
    })
    .await;
}

#[tokio::test]
async fn empty_answers_never_empty_a_version_and_only_three_in_a_row_drop_a_name() {
    let dns = DnsServer::start().await;
    dns.set_a("a.switchyard.test", &[v4("127.0.0.2")], 1);
    dns.set_a("b.switchyard.test", &[v4("127.0.0.3")], 1);
    dns.set_a("c.switchyard.test", &[v4("127.0.0.4")], 1);
    let discovery = start(
        &dns,
        "      blue: { release: v1, backends: [\"a.switchyard.test:80\", \"b.switchyard.test:80\"], weight: 100 }\n      \
         green: { release: v2, backends: [\"c.switchyard.test:80\"], weight: 0 }\n",
    );
    until(&discovery, "blue", "both names", |v| v.endpoints.len() == 2).await;
    until(&discovery, "green", "c", |v| v.endpoints.len() == 1).await;
    let seen = record(&discovery);

    // b exists but has no A records (nor AAAA): empty answers.
    dns.set_a("b.switchyard.test", &[], 1);
    dns.set_aaaa("b.switchyard.test", &[], 1);
    // c: the whole server answers empty for it and everything else, below.
    until(&discovery, "blue", "b's addresses to go", |v| {
        addresses(v) == [addr("127.0.0.2:80")]
    })
    .await;
    let empties = count(&discovery, "blue", LookupResult::Empty);
    assert!(empties >= 3, "b went after {empties} empty answers");
    // Before the third empty answer, every snapshot still had b.
    let before_gone: Vec<_> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| addresses(s.version("api", "blue").unwrap()).len())
        .collect();
    assert_eq!(before_gone, [2, 1], "b stayed until it went, once");

    // Every answer empty now: a version whose names all answer empty keeps what it had,
    // however many empty answers come (green: c; blue: a, not b that already went).
    dns.answer(Answering::Empty);
    until_counted(&discovery, "green", LookupResult::Empty, 5).await;
    until_counted(&discovery, "blue", LookupResult::Empty, 5).await;
    let s = discovery.snapshot();
    assert_eq!(
        addresses(s.version("api", "green").unwrap()),
        [addr("127.0.0.4:80")]
    );
    assert_eq!(
        addresses(s.version("api", "blue").unwrap()),
        [addr("127.0.0.2:80")]
    );
}

#[tokio::test]
async fn srv_with_two_targets_gives_both_by_weight() {
    let dns = DnsServer::start().await;
    dns.set_srv(
        "_http._tcp.api.switchyard.test",
        &[
            (10, 1, 9001, "one.switchyard.test"),
            (10, 3, 9002, "two.switchyard.test"),
            // A higher priority number: only used when neither of the above resolves.
            (20, 1, 9003, "spare.switchyard.test"),
        ],
        1,
    );
    dns.set_a("one.switchyard.test", &[v4("127.0.0.2")], 1);
    dns.set_a("two.switchyard.test", &[v4("127.0.0.3")], 1);
    dns.set_a("spare.switchyard.test", &[v4("127.0.0.9")], 1);
    let discovery = start(
        &dns,
        "      blue: { release: v1, backends: [\"srv+_http._tcp.api.switchyard.test\"] }\n",
    );
    let v = until(&discovery, "blue", "the SRV targets", |v| {
        !v.endpoints.is_empty()
    })
    .await;
    let got: Vec<(SocketAddr, u32, Option<&str>)> = v
        .endpoints
        .iter()
        .map(|e| (e.address, e.weight, e.name.as_deref()))
        .collect();
    let name = Some("srv+_http._tcp.api.switchyard.test");
    assert_eq!(
        got,
        [
            (addr("127.0.0.2:9001"), 50, name),
            (addr("127.0.0.3:9002"), 150, name)
        ]
    );

    // The records change to the spare target alone: it takes over.
    dns.set_srv(
        "_http._tcp.api.switchyard.test",
        &[(20, 1, 9003, "spare.switchyard.test")],
        1,
    );
    until(&discovery, "blue", "the spare target", |v| {
        addresses(v) == [addr("127.0.0.9:9003")]
    })
    .await;
}

#[tokio::test]
async fn a_name_that_never_resolved_leaves_its_version_without_addresses_and_is_named() {
    let dns = DnsServer::start().await;
    let discovery = start(
        &dns,
        "      blue: { release: v1, backends: [\"nowhere.switchyard.test:8080\"], weight: 100 }\n      \
         green: { release: v2, backends: [\"127.0.0.7:8080\", \"nowhere.switchyard.test:8080\"], weight: 0 }\n",
    );
    until_counted(&discovery, "blue", LookupResult::Error, 2).await;
    until_counted(&discovery, "green", LookupResult::Error, 1).await;
    assert!(dns.queries("nowhere.switchyard.test") >= 3);
    let s = discovery.snapshot();
    let blue = s.version("api", "blue").unwrap();
    assert!(blue.endpoints.is_empty(), "{blue:?}");
    assert_eq!(blue.unresolved, [Arc::from("nowhere.switchyard.test:8080")]);
    let green = s.version("api", "green").unwrap();
    assert_eq!(addresses(green), [addr("127.0.0.7:8080")]);
    assert_eq!(
        green.endpoints[0].name, None,
        "a literal address has no name"
    );
    assert_eq!(
        green.unresolved,
        [Arc::from("nowhere.switchyard.test:8080")]
    );

    // Once it resolves it joins, and is no longer listed as unresolved.
    dns.set_a("nowhere.switchyard.test", &[v4("127.0.0.8")], 1);
    let blue = until(&discovery, "blue", "the name to resolve", |v| {
        !v.endpoints.is_empty()
    })
    .await;
    assert_eq!(addresses(&blue), [addr("127.0.0.8:8080")]);
    assert!(blue.unresolved.is_empty());
}

#[tokio::test]
async fn lookups_are_counted_by_version_and_result() {
    let dns = DnsServer::start().await;
    dns.set_a("good.switchyard.test", &[v4("127.0.0.2")], 1);
    dns.set_a("hollow.switchyard.test", &[], 1);
    dns.set_aaaa("hollow.switchyard.test", &[], 1);
    let discovery = start(
        &dns,
        "      ok: { release: v1, backends: [\"good.switchyard.test:80\"], weight: 1 }\n      \
         empty: { release: v1, backends: [\"hollow.switchyard.test:80\"], weight: 1 }\n      \
         error: { release: v1, backends: [\"missing.switchyard.test:80\"], weight: 1 }\n",
    );
    // Every version has all three results from the start, so rate() works on them.
    let series: Vec<(String, &str)> = discovery
        .lookups()
        .iter()
        .map(|c| (c.version.to_string(), c.result.as_str()))
        .collect();
    assert_eq!(series.len(), 9, "{series:?}");
    until_counted(&discovery, "ok", LookupResult::Ok, 2).await;
    until_counted(&discovery, "empty", LookupResult::Empty, 2).await;
    until_counted(&discovery, "error", LookupResult::Error, 2).await;
    for (version, never) in [
        ("ok", [LookupResult::Error, LookupResult::Empty]),
        ("empty", [LookupResult::Ok, LookupResult::Error]),
        ("error", [LookupResult::Ok, LookupResult::Empty]),
    ] {
        for result in never {
            assert_eq!(
                count(&discovery, version, result),
                0,
                "{version} {result:?}"
            );
        }
    }
}

#[tokio::test]
async fn a_reload_keeps_what_names_that_stay_know() {
    let dns = DnsServer::start().await;
    dns.set_a("a.switchyard.test", &[v4("127.0.0.2")], 1);
    dns.set_a("b.switchyard.test", &[v4("127.0.0.3")], 1);
    let versions =
        "      blue: { release: v1, backends: [\"127.0.0.9:80\", \"a.switchyard.test:80\"] }\n";
    let discovery = start(&dns, versions);
    until(&discovery, "blue", "a", |v| v.endpoints.len() == 2).await;

    // The server fails from now on; a reload that adds green keeps blue's set.
    dns.answer(Answering::ServFail);
    discovery.reconfigure(&config(
        Some(&dns),
        "      blue: { release: v2, backends: [\"127.0.0.9:80\", \"a.switchyard.test:80\"], weight: 100 }\n      \
         green: { release: v2, backends: [\"b.switchyard.test:80\"], weight: 0 }\n",
    ));
    // Blue's name was asked again since the reload (and failed): it still has what it knew.
    until_counted(&discovery, "blue", LookupResult::Error, 1).await;
    let green = until(&discovery, "green", "green to appear", |_| true).await;
    assert!(green.endpoints.is_empty(), "b never resolved: {green:?}");
    let blue = discovery
        .snapshot()
        .version("api", "blue")
        .cloned()
        .unwrap();
    assert_eq!(
        addresses(&blue),
        [addr("127.0.0.2:80"), addr("127.0.0.9:80")]
    );

    // A reload without names: nothing left to publish, and no counts.
    discovery.reconfigure(&config(
        Some(&dns),
        "      blue: { release: v1, backends: [\"127.0.0.1:80\"] }\n",
    ));
    eventually(SETTLE, "an empty snapshot", async || {
        match discovery.snapshot().versions.is_empty() && discovery.lookups().is_empty() {
            true => Ok(()),
            false => Err(format!("{:?}", discovery.snapshot())),
        }
    })
    .await;
}

/// `localhost:PORT` works through the system's configuration (no `resolver:` block):
/// `/etc/hosts` is read before any DNS server is asked (and hickory answers `localhost` itself
/// too, RFC 6761), so no query leaves the machine. `localhost` is the one name these tests
/// let the machine answer.
#[tokio::test]
async fn localhost_resolves_through_etc_hosts() {
    let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    let listed = hosts.lines().any(|l| {
        let mut words = l.split_whitespace();
        words.next() == Some("127.0.0.1") && words.any(|w| w == "localhost")
    });
    assert!(
        listed,
        "this test needs `127.0.0.1 localhost` in /etc/hosts:\n{hosts}"
    );
    let port = free_port();
    let config = config(
        None,
        &format!("      blue: {{ release: v1, backends: [\"localhost:{port}\"] }}\n"),
    );
    let discovery = Discovery::with_hickory(&config).expect("system resolver");
    let v = until(&discovery, "blue", "localhost", |v| !v.endpoints.is_empty()).await;
    assert_eq!(addresses(&v), [SocketAddr::from(([127, 0, 0, 1], port))]);
    assert_eq!(
        v.endpoints[0].name.as_deref(),
        Some(&*format!("localhost:{port}"))
    );
}

/// CPU seconds (user + system) this process has used, from /proc/self/stat.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("read /proc/self/stat");
    // Fields after the command name, which is in parentheses and may contain spaces.
    let fields: Vec<&str> = stat[stat.rfind(')').expect("stat") + 2..]
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0 // USER_HZ is 100 on Linux
}

/// A measurement, not a check (run it alone, in release): 1,000 names with TTL 0 under
/// `min_ttl: 1s, max_ttl: 1s`, so every name is re-resolved every 1–1.2 s, against the
/// in-test server in this same process. Prints lookups per second, CPU (the resolver, the
/// discovery task and the DNS server together) and the process's RSS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement: cargo test --release --test it discovery::thousand -- --ignored --nocapture"]
async fn thousand_names_re_resolving_every_second() {
    const NAMES: usize = 1000;
    const PER_VERSION: usize = 10;
    let dns = DnsServer::start().await;
    let mut text = format!(
        "listeners:\n  - {{ name: public, address: 127.0.0.1:0 }}\nresolver: {{ nameservers: [\"{}\"], min_ttl: 1s, max_ttl: 1s }}\nservices:\n  api:\n    versions:\n",
        dns.address
    );
    for v in 0..NAMES / PER_VERSION {
        let names: Vec<String> = (0..PER_VERSION)
            .map(|i| {
                let n = v * PER_VERSION + i;
                let ip = v4(&format!("127.0.{}.{}", n / 250, n % 250 + 1));
                dns.set_a(&format!("n{n}.switchyard.test"), &[ip], 0);
                format!("\"n{n}.switchyard.test:80\"")
            })
            .collect();
        text += &format!(
            "      v{v}: {{ release: r, backends: [{}], weight: 1 }}\n",
            names.join(", ")
        );
    }
    let config = switchyard_config::parse(&text, "thousand.yaml").expect("config");
    let rss_before = rss_kib(std::process::id());
    let discovery = Discovery::with_hickory(&config).expect("resolver");
    eventually(Duration::from_secs(60), "every name resolved", async || {
        let s = discovery.snapshot();
        let resolved = s
            .versions
            .iter()
            .filter(|v| v.unresolved.is_empty())
            .count();
        match resolved == NAMES / PER_VERSION {
            true => Ok(()),
            false => Err(format!("{resolved} versions resolved")),
        }
    })
    .await;
    let ok = |d: &Discovery| -> u64 {
        d.lookups()
            .iter()
            .filter(|c| c.result == LookupResult::Ok)
            .map(|c| c.count)
            .sum()
    };
    let (lookups0, cpu0, t0) = (ok(&discovery), cpu_seconds(), Instant::now());
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (lookups1, cpu1, elapsed) = (ok(&discovery), cpu_seconds(), t0.elapsed().as_secs_f64());
    let failed: u64 = discovery
        .lookups()
        .iter()
        .filter(|c| c.result != LookupResult::Ok)
        .map(|c| c.count)
        .sum();
    let rss_after = rss_kib(std::process::id());
    println!(
        "{NAMES} names: {:.0} lookups/s ok ({failed} not ok in all), CPU {:.1}% of one core, RSS {} KiB → {} KiB ({:+} KiB)",
        (lookups1 - lookups0) as f64 / elapsed,
        100.0 * (cpu1 - cpu0) / elapsed,
        rss_before,
        rss_after,
        rss_after as i64 - rss_before as i64,
    );
}
