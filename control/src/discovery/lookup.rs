//! One resolution of one configured entry: the lookups it takes and the [`Outcome`] they add
//! up to.
//!
//! `host:port` is one A/AAAA lookup. `srv+name` is one SRV lookup and then an A/AAAA lookup per
//! target of the lowest priority — the next priority only when none of those resolves, as
//! RFC 2782 clients fall back. A target whose own lookup fails keeps the addresses it last
//! resolved to (the same rule as a name's), so one target's bad answer does not drop it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use super::name::Outcome;
use super::resolve::{Failure, Lookup, Resolve, SrvRecord};
use super::version::{srv_endpoints, UNIT_WEIGHT};

/// Upper bound on one lookup, over whatever the resolver's own timeouts are, so a stuck
/// lookup can never stall a name: it counts as an error and the name is asked again.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// What an SRV name's targets last resolved to, by target name.
pub type TargetCache = HashMap<String, Vec<IpAddr>>;

async fn bounded<T>(lookup: impl std::future::Future<Output = Lookup<T>>) -> Lookup<T> {
    tokio::time::timeout(LOOKUP_TIMEOUT, lookup)
        .await
        .unwrap_or_else(|_| {
            Err(Failure::Error(format!(
                "no answer within {LOOKUP_TIMEOUT:?}"
            )))
        })
}

fn failed(failure: Failure) -> Outcome {
    match failure {
        Failure::Empty => Outcome::Empty,
        Failure::Error(e) => Outcome::Error(e),
    }
}

fn min_ttl<T>(records: &[super::resolve::Record<T>]) -> Duration {
    records.iter().map(|r| r.ttl).min().unwrap_or_default()
}

/// `host:port`: every address of the answer, at `port`.
pub async fn resolve_name<R: Resolve>(resolver: Arc<R>, host: String, port: u16) -> Outcome {
    match bounded(resolver.lookup_ip(&host)).await {
        Ok(records) => Outcome::Resolved {
            endpoints: records
                .iter()
                .map(|r| (SocketAddr::new(r.value, port), UNIT_WEIGHT))
                .collect(),
            ttl: min_ttl(&records),
        },
        Err(failure) => failed(failure),
    }
}

/// `srv+name`: see the module doc. Returns the outcome and the updated target cache.
pub async fn resolve_srv<R: Resolve>(
    resolver: Arc<R>,
    name: String,
    mut cache: TargetCache,
) -> (Outcome, TargetCache) {
    let records = match bounded(resolver.lookup_srv(&name)).await {
        Ok(records) => records,
        Err(failure) => return (failed(failure), cache),
    };
    // Targets no longer in the records are forgotten.
    cache.retain(|target, _| records.iter().any(|r| r.value.target == *target));
    let mut ttl = min_ttl(&records);
    let mut priorities: Vec<u16> = records.iter().map(|r| r.value.priority).collect();
    priorities.sort_unstable();
    priorities.dedup();
    let mut target_error = None;
    for priority in priorities {
        // RFC 2782: a target of "." means the service is not offered there.
        let group: Vec<&SrvRecord> = records
            .iter()
            .map(|r| &r.value)
            .filter(|r| r.priority == priority && r.target != ".")
            .collect();
        let mut resolved: Vec<(&SrvRecord, Vec<IpAddr>)> = Vec::with_capacity(group.len());
        for record in group {
            match bounded(resolver.lookup_ip(&record.target)).await {
                Ok(ips) => {
                    ttl = ttl.min(min_ttl(&ips));
                    let ips: Vec<IpAddr> = ips.iter().map(|r| r.value).collect();
                    cache.insert(record.target.clone(), ips.clone());
                    resolved.push((record, ips));
                }
                Err(failure) => {
                    if let Failure::Error(e) = &failure {
                        tracing::debug!(srv = %name, target = %record.target, error = %e, "SRV target did not resolve");
                        target_error = Some(format!("target {}: {e}", record.target));
                    }
                    if let Some(ips) = cache.get(&record.target) {
                        resolved.push((record, ips.clone()));
                    }
                }
            }
        }
        let views: Vec<(&SrvRecord, &[IpAddr])> = resolved
            .iter()
            .map(|(r, ips)| (*r, ips.as_slice()))
            .collect();
        let endpoints = srv_endpoints(&views);
        if !endpoints.is_empty() {
            return (Outcome::Resolved { endpoints, ttl }, cache);
        }
    }
    // SRV records, but no target with an address: a target's error makes it an error,
    // otherwise the answer amounts to no records.
    let outcome = match target_error {
        Some(e) => Outcome::Error(e),
        None => Outcome::Empty,
    };
    (outcome, cache)
}
