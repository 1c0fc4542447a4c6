//! From what each name resolved to, the addresses of a version: literal addresses, then every
//! name's last good set, with weights — and the rule that DNS never empties a version.
//!
//! Pure functions over [`NameState`]s. Weights are relative within a version: a literal or an
//! A/AAAA address weighs [`UNIT_WEIGHT`], as every backend weighs the same today; an SRV name
//! with `k` usable targets brings `k × UNIT_WEIGHT` shared by the records' weights (SPEC §12:
//! "shared by their weights"), so it counts like `k` addresses next to other entries.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use super::name::NameState;
use super::resolve::SrvRecord;

// One type from the resolver to the table compiler: the proxy's.
pub use switchyard_proxy::endpoints::{Endpoint, UNIT_WEIGHT};

/// One configured name of a version and what discovery knows of it.
pub struct NameView<'a> {
    pub name: &'a Arc<str>,
    pub state: &'a NameState,
}

/// The version's endpoints, sorted by address, one per address (weights of duplicates add
/// up): its literal addresses and the current set of every name that is not gone
/// ([`NameState::gone`]).
///
/// The never-empty rule: when that would leave the version with nothing, it keeps what it had
/// (`previous`, the endpoints last published, of the names it still has) — an answer that
/// would empty a version changes nothing. Without such a set (just reloaded), the gone names'
/// last good sets stay instead.
pub fn endpoints(
    literals: &[SocketAddr],
    names: &[NameView<'_>],
    previous: &[Endpoint],
) -> Vec<Endpoint> {
    let collect = |include_gone: bool| {
        let mut out: Vec<Endpoint> = literals
            .iter()
            .map(|&address| Endpoint {
                address,
                name: None,
                weight: UNIT_WEIGHT,
            })
            .collect();
        for n in names.iter().filter(|n| include_gone || !n.state.gone()) {
            for &(address, weight) in n.state.addresses().unwrap_or_default() {
                out.push(Endpoint {
                    address,
                    name: Some(Arc::clone(n.name)),
                    weight,
                });
            }
        }
        // Stable, so the first entry of an address (file order) keeps its name.
        out.sort_by_key(|e| e.address);
        out.dedup_by(|later, first| {
            let same = later.address == first.address;
            if same {
                first.weight = first.weight.saturating_add(later.weight);
            }
            same
        });
        out
    };
    let out = collect(false);
    if !out.is_empty() {
        return out;
    }
    let still_named = |e: &&Endpoint| {
        e.name
            .as_ref()
            .is_some_and(|name| names.iter().any(|n| n.name == name))
    };
    let kept: Vec<Endpoint> = previous.iter().filter(still_named).cloned().collect();
    if !kept.is_empty() {
        return kept;
    }
    collect(true)
}

/// The configured names of a version that have never resolved (shown by the API, SPEC §12).
pub fn unresolved(names: &[NameView<'_>]) -> Vec<Arc<str>> {
    names
        .iter()
        .filter(|n| !n.state.resolved())
        .map(|n| Arc::clone(n.name))
        .collect()
}

/// SRV targets of one priority, each with the addresses it resolved to, as weighted
/// endpoints: `k` targets share `k × UNIT_WEIGHT` by their SRV weights, each target's share
/// split evenly over its addresses. RFC 2782: when every weight is 0 the targets share
/// equally; a weight-0 target among weighted ones gets a very small share (1), not none.
pub fn srv_endpoints(targets: &[(&SrvRecord, &[IpAddr])]) -> Vec<(SocketAddr, u32)> {
    let targets: Vec<_> = targets.iter().filter(|(_, ips)| !ips.is_empty()).collect();
    let total_weight: u64 = targets.iter().map(|(r, _)| u64::from(r.weight)).sum();
    let pool = u64::from(UNIT_WEIGHT) * targets.len() as u64;
    let mut out = Vec::new();
    for (record, ips) in targets {
        let share = (pool * u64::from(record.weight))
            .checked_div(total_weight)
            .map_or(u64::from(UNIT_WEIGHT), |share| share.max(1));
        let each = (share / ips.len() as u64).max(1);
        let each = u32::try_from(each).unwrap_or(u32::MAX);
        out.extend(
            ips.iter()
                .map(|&ip| (SocketAddr::new(ip, record.port), each)),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::discovery::name::{Outcome, Ttls, EMPTY_ANSWERS_TO_REMOVE};

    const TTLS: Ttls = Ttls {
        min: Duration::from_secs(1),
        max: Duration::from_secs(30),
    };

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn state(addrs: &[&str]) -> NameState {
        let mut s = NameState::new(Duration::ZERO);
        if !addrs.is_empty() {
            let endpoints = addrs.iter().map(|a| (addr(a), UNIT_WEIGHT)).collect();
            let ttl = Duration::from_secs(5);
            s.apply(
                Duration::ZERO,
                &Outcome::Resolved { endpoints, ttl },
                TTLS,
                0.5,
            );
        }
        s
    }

    fn empty_out(s: &mut NameState) {
        for i in 0..EMPTY_ANSWERS_TO_REMOVE {
            s.apply(
                Duration::from_secs(u64::from(i) + 1),
                &Outcome::Empty,
                TTLS,
                0.5,
            );
        }
        assert!(s.gone());
    }

    fn view<'a>(name: &'a Arc<str>, state: &'a NameState) -> NameView<'a> {
        NameView { name, state }
    }

    fn addresses(endpoints: &[Endpoint]) -> Vec<SocketAddr> {
        endpoints.iter().map(|e| e.address).collect()
    }

    #[test]
    fn literals_and_names_together_sorted_with_their_names() {
        let a: Arc<str> = "a.internal:80".into();
        let sa = state(&["10.0.0.9:80", "10.0.0.2:80"]);
        let out = endpoints(&[addr("10.0.0.5:80")], &[view(&a, &sa)], &[]);
        assert_eq!(
            out,
            [
                Endpoint {
                    address: addr("10.0.0.2:80"),
                    name: Some(a.clone()),
                    weight: 100
                },
                Endpoint {
                    address: addr("10.0.0.5:80"),
                    name: None,
                    weight: 100
                },
                Endpoint {
                    address: addr("10.0.0.9:80"),
                    name: Some(a.clone()),
                    weight: 100
                },
            ]
        );
    }

    #[test]
    fn a_never_resolved_name_adds_nothing_and_is_listed() {
        let a: Arc<str> = "a.internal:80".into();
        let sa = state(&[]);
        let names = [view(&a, &sa)];
        assert_eq!(endpoints(&[], &names, &[]), []);
        assert_eq!(unresolved(&names), [a]);
    }

    #[test]
    fn a_gone_name_leaves_only_if_something_else_remains() {
        let (a, b): (Arc<str>, Arc<str>) = ("a:80".into(), "b:80".into());
        let mut sa = state(&["10.0.0.1:80"]);
        let sb = state(&["10.0.0.2:80"]);
        empty_out(&mut sa);
        let both = [view(&a, &sa), view(&b, &sb)];
        let now = endpoints(&[], &both, &[]);
        assert_eq!(addresses(&now), [addr("10.0.0.2:80")]);
        // Alone, it keeps its last good set: DNS never empties a version.
        assert_eq!(
            addresses(&endpoints(&[], &both[..1], &[])),
            [addr("10.0.0.1:80")]
        );
        // A literal address is something else.
        assert_eq!(
            addresses(&endpoints(&[addr("10.0.0.7:80")], &both[..1], &[])),
            [addr("10.0.0.7:80")]
        );
        // Then b goes too: the version keeps what it had (b), not a that already went.
        let mut sb = sb;
        empty_out(&mut sb);
        let both = [view(&a, &sa), view(&b, &sb)];
        assert_eq!(
            addresses(&endpoints(&[], &both, &now)),
            [addr("10.0.0.2:80")]
        );
        // With nothing published before (a reload), every gone name's last good set stays.
        assert_eq!(
            addresses(&endpoints(&[], &both, &[])),
            [addr("10.0.0.1:80"), addr("10.0.0.2:80")]
        );
        // What it had, of the names it still has: a name a reload removed is not kept.
        assert_eq!(
            addresses(&endpoints(&[], &both[..1], &now)),
            [addr("10.0.0.1:80")]
        );
    }

    #[test]
    fn one_address_from_two_entries_is_one_endpoint_named_by_the_first() {
        let (a, b): (Arc<str>, Arc<str>) = ("a:80".into(), "b:80".into());
        let sa = state(&["10.0.0.1:80"]);
        let sb = state(&["10.0.0.1:80"]);
        let out = endpoints(&[], &[view(&a, &sa), view(&b, &sb)], &[]);
        assert_eq!(
            out,
            [Endpoint {
                address: addr("10.0.0.1:80"),
                name: Some(a),
                weight: 200
            }]
        );
    }

    fn srv(weight: u16, port: u16) -> SrvRecord {
        SrvRecord {
            priority: 10,
            weight,
            port,
            target: "t".into(),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn srv_targets_share_by_weight() {
        let (r1, r3) = (srv(1, 8001), srv(3, 8002));
        let (ips1, ips3) = ([ip("10.0.0.1")], [ip("10.0.0.2")]);
        assert_eq!(
            srv_endpoints(&[(&r1, &ips1), (&r3, &ips3)]),
            [(addr("10.0.0.1:8001"), 50), (addr("10.0.0.2:8002"), 150)]
        );
        // A target with two addresses splits its share.
        let ips3 = [ip("10.0.0.2"), ip("10.0.0.3")];
        assert_eq!(
            srv_endpoints(&[(&r1, &ips1), (&r3, &ips3)]),
            [
                (addr("10.0.0.1:8001"), 50),
                (addr("10.0.0.2:8002"), 75),
                (addr("10.0.0.3:8002"), 75)
            ]
        );
        // All weights 0: equal shares; one 0 among weighted ones: a sliver.
        let (z1, z2) = (srv(0, 1), srv(0, 2));
        assert_eq!(
            srv_endpoints(&[(&z1, &ips1), (&z2, &ips1)]),
            [(addr("10.0.0.1:1"), 100), (addr("10.0.0.1:2"), 100)]
        );
        assert_eq!(
            srv_endpoints(&[(&z1, &ips1), (&r3, &[ip("10.0.0.2")])]),
            [(addr("10.0.0.1:1"), 1), (addr("10.0.0.2:8002"), 200)]
        );
        // A target without addresses takes no share.
        assert_eq!(
            srv_endpoints(&[(&r1, &ips1), (&r3, &[])]),
            [(addr("10.0.0.1:8001"), 100)]
        );
    }
}
