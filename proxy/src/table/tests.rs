//! Compiling backends from resolved names: one backend per address with its name and
//! weight, state carried over by address across re-resolutions, removed addresses drained.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use super::*;
use crate::endpoints::VersionEndpoints;

/// (endpoints, unresolved names) by (service, version).
type Known = HashMap<(String, String), (Vec<Endpoint>, Vec<Arc<str>>)>;

#[derive(Default)]
struct Names(Known);

impl Resolved for Names {
    fn version(&self, service: &str, version: &str) -> Option<VersionEndpoints<'_>> {
        let (endpoints, unresolved) = self.0.get(&(service.into(), version.into()))?;
        Some(VersionEndpoints {
            endpoints,
            unresolved,
        })
    }
}

const NAME: &str = "api.internal:8080";

fn config(health_check: bool) -> Config {
    let check = if health_check {
        "\n    health_check: { path: /health }"
    } else {
        ""
    };
    let text = format!(
        "listeners: [{{ name: public, address: \"127.0.0.1:8000\" }}]\n\
         services:\n  api:{check}\n    versions:\n      \
         blue: {{ release: b1, weight: 100, backends: [\"10.0.0.1:80\", \"{NAME}\"] }}\n      \
         green: {{ release: g1, weight: 0, backends: [\"10.0.0.9:80\"] }}\n"
    );
    switchyard_config::parse(&text, "test.yaml").unwrap_or_else(|e| panic!("{e}"))
}

fn resolved(named: &[(&str, u32)], unresolved: &[&str]) -> Names {
    let mut endpoints = vec![Endpoint {
        address: "10.0.0.1:80".parse().unwrap(),
        name: None,
        weight: UNIT_WEIGHT,
    }];
    endpoints.extend(named.iter().map(|&(a, weight)| Endpoint {
        address: a.parse().unwrap(),
        name: Some(NAME.into()),
        weight,
    }));
    endpoints.sort_by_key(|e| e.address);
    let unresolved = unresolved.iter().map(|&n| n.into()).collect();
    let mut names = Names::default();
    names
        .0
        .insert(("api".into(), "blue".into()), (endpoints, unresolved));
    names
}

fn addresses(v: &VersionRoute) -> Vec<String> {
    v.backends.iter().map(|b| b.address.to_string()).collect()
}

#[test]
fn each_resolved_address_is_a_backend_with_its_name() {
    let table = RoutingTable::compile_resolved(
        &config(false),
        &TrafficState::default(),
        &resolved(&[("10.0.0.7:8080", 100), ("10.0.0.8:8080", 100)], &[]),
        None,
    );
    let blue = &table.services[0].versions[0];
    assert_eq!(
        addresses(blue),
        ["10.0.0.1:80", "10.0.0.7:8080", "10.0.0.8:8080"]
    );
    let names: Vec<Option<&str>> = blue.names.iter().map(|n| n.as_deref()).collect();
    assert_eq!(names, [None, Some(NAME), Some(NAME)]);
    assert!(blue.backends.iter().all(|b| b.is_healthy()));
    // Without anything resolved, a version keeps its literal addresses only.
    let plain = RoutingTable::compile(&config(false), &TrafficState::default(), None);
    assert_eq!(addresses(&plain.services[0].versions[0]), ["10.0.0.1:80"]);
}

#[test]
fn a_never_resolved_name_gives_no_backend_and_is_listed() {
    let mut names = resolved(&[], &[NAME]);
    // No literal either: the version has nothing to pick (503).
    names.0.values_mut().for_each(|(e, _)| e.clear());
    let table =
        RoutingTable::compile_resolved(&config(false), &TrafficState::default(), &names, None);
    let blue = &table.services[0].versions[0];
    assert!(blue.backends.is_empty());
    assert_eq!(blue.pick_backend(None), None);
    assert_eq!(&*blue.unresolved, [Arc::<str>::from(NAME)]);
}

#[test]
fn re_resolution_keeps_surviving_backends_and_drains_the_vanished() {
    let cfg = config(true);
    let traffic = TrafficState::default();
    let first = RoutingTable::compile_resolved(
        &cfg,
        &traffic,
        &resolved(&[("10.0.0.7:8080", 100), ("10.0.0.8:8080", 100)], &[]),
        None,
    );
    let blue = &first.services[0].versions[0];
    for _ in 0..5 {
        blue.pick_backend(None);
    }
    blue.backends[0].healthy.store(false, Relaxed);
    let second = RoutingTable::compile_resolved(
        &cfg,
        &traffic,
        &resolved(&[("10.0.0.8:8080", 100), ("10.0.0.9:8080", 100)], &[]),
        Some(&first),
    );
    let next = &second.services[0].versions[0];
    assert_eq!(
        addresses(next),
        ["10.0.0.1:80", "10.0.0.8:8080", "10.0.0.9:8080"]
    );
    // The literal and 10.0.0.8 are the same backends (health, pool) and counters.
    assert!(Arc::ptr_eq(&blue.backends[0], &next.backends[0]));
    assert!(!next.backends[0].is_healthy());
    assert!(Arc::ptr_eq(&blue.backends[2], &next.backends[1]));
    assert!(Arc::ptr_eq(&blue.backend_stats[2], &next.backend_stats[1]));
    // The round-robin position went on, and the other version's backend was kept too.
    assert_eq!(next.next_backend.load(Relaxed), 5);
    let green = |t: &RoutingTable| Arc::clone(&t.services[0].versions[1].backends[0]);
    assert!(Arc::ptr_eq(&green(&first), &green(&second)));
    // Only 10.0.0.7 left: it drains.
    assert_eq!(second.drain_removed(&first), 1);
}

#[test]
fn a_resolved_address_waits_for_its_first_health_check_a_literal_does_not() {
    let table = RoutingTable::compile_resolved(
        &config(true),
        &TrafficState::default(),
        &resolved(&[("10.0.0.7:8080", 100)], &[]),
        None,
    );
    let blue = &table.services[0].versions[0];
    let literal = &blue.backends[0];
    assert!(literal.is_healthy() && !literal.unchecked.load(Relaxed));
    let named = &blue.backends[1];
    assert!(!named.is_healthy() && named.unchecked.load(Relaxed));
    assert_eq!(blue.pick_backend(None), Some(0));
    // Checks turned off: nothing would bring it up, so it is up.
    let off = RoutingTable::compile_resolved(
        &config(false),
        &TrafficState::default(),
        &resolved(&[("10.0.0.7:8080", 100)], &[]),
        Some(&table),
    );
    assert!(off.services[0].versions[0].backends[1].is_healthy());
}

#[test]
fn srv_weights_share_turns() {
    let table = RoutingTable::compile_resolved(
        &config(false),
        &TrafficState::default(),
        &resolved(&[("10.0.0.7:8080", 50), ("10.0.0.8:8080", 150)], &[]),
        None,
    );
    let blue = &table.services[0].versions[0];
    let mut hits = [0usize; 3];
    for _ in 0..300 {
        hits[blue.pick_backend(None).unwrap()] += 1;
    }
    // Weights 100 (literal), 50, 150 of 300.
    assert_eq!(hits, [100, 50, 150]);
}
