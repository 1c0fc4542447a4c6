//! The one question discovery asks of DNS, as a trait: "what are the records of this name?",
//! answered with the records and their TTLs or with a classified failure.
//!
//! A trait so that everything above it — scheduling, keeping the last good set, SRV weights —
//! is written against two lookups and a three-way result, not against a DNS library's error
//! zoo. The real implementation ([`super::HickoryResolver`]) is hickory-resolver; tests run
//! that same implementation against a DNS server of their own on loopback.

use std::future::Future;
use std::net::IpAddr;
use std::time::Duration;

/// One record of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<T> {
    pub value: T,
    /// As the answer gave it; discovery clamps it to `resolver.min_ttl ..= max_ttl`.
    pub ttl: Duration,
}

/// The data of one SRV record (RFC 2782).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvRecord {
    /// Lower is preferred; only the lowest priority that resolves is used.
    pub priority: u16,
    /// Relative share among the targets of one priority.
    pub weight: u16,
    pub port: u16,
    /// A host name to resolve to addresses; `.` means "no service here".
    pub target: String,
}

/// Why a lookup gave no records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No usable answer: SERVFAIL, REFUSED, NXDOMAIN, a timeout, a socket error. The text is
    /// for the log.
    Error(String),
    /// An answer that says the name has no records of the type asked (NOERROR, none).
    Empty,
}

/// Records (never an empty list) or why there are none.
pub type Lookup<T> = Result<Vec<Record<T>>, Failure>;

/// An asynchronous DNS client for discovery's two kinds of lookup.
pub trait Resolve: Send + Sync + 'static {
    /// The addresses of `host`: its A records, or its AAAA records when it has no A records.
    fn lookup_ip(&self, host: &str) -> impl Future<Output = Lookup<IpAddr>> + Send;

    /// The SRV records of `name` (`_service._proto.domain`).
    fn lookup_srv(&self, name: &str) -> impl Future<Output = Lookup<SrvRecord>> + Send;
}

/// The `result` label of `switchyard_dns_lookups_total` (SPEC §12, §15).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LookupResult {
    Ok,
    Error,
    Empty,
}

impl LookupResult {
    pub const ALL: [LookupResult; 3] = [LookupResult::Ok, LookupResult::Error, LookupResult::Empty];

    pub fn as_str(self) -> &'static str {
        match self {
            LookupResult::Ok => "ok",
            LookupResult::Error => "error",
            LookupResult::Empty => "empty",
        }
    }
}
