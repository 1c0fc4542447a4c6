//! The addresses a version's backend *names* stand for, as the table compiler takes them.
//!
//! Why here: a config backend may be a DNS name (SPEC §12), and the data path must never look
//! one up. The control plane resolves names in the background and hands the compiler what it
//! knows through [`Resolved`]; the compiler turns each address into a backend of its own
//! (pool, health, counters, carried over across tables by (service, version, address)). This
//! crate only defines the shape: it knows nothing about DNS.

use std::net::SocketAddr;
use std::sync::Arc;

/// The weight of one literal or A/AAAA address; an SRV name's targets share multiples of it.
pub const UNIT_WEIGHT: u32 = 100;

/// One address a version sends traffic to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub address: SocketAddr,
    /// The configured entry it came from (`api.internal:8080`, `srv+_http._tcp.api.internal`);
    /// `None` for a literal address. When several names give the same address, the first in
    /// file order (a literal before any name).
    pub name: Option<Arc<str>>,
    /// Relative to the version's other endpoints; literals weigh [`UNIT_WEIGHT`].
    pub weight: u32,
}

/// What is known of one version with backend names.
#[derive(Debug, Clone, Copy)]
pub struct VersionEndpoints<'a> {
    /// Its literal addresses and every name's current addresses, one per address. Empty only
    /// while none of its names has resolved (and it has no literal address): it answers 503.
    pub endpoints: &'a [Endpoint],
    /// Configured names that have never resolved, in file order (shown by the API).
    pub unresolved: &'a [Arc<str>],
}

/// The resolved endpoints of every version that has backend names.
pub trait Resolved {
    /// `None`: nothing known yet for this version; the table uses its literal addresses.
    fn version(&self, service: &str, version: &str) -> Option<VersionEndpoints<'_>>;
}

/// No names resolved (tests, benchmarks, a config without names).
pub struct NoNames;

impl Resolved for NoNames {
    fn version(&self, _service: &str, _version: &str) -> Option<VersionEndpoints<'_>> {
        None
    }
}
