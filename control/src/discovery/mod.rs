//! DNS service discovery (SPEC §12): backends named `api.internal:8080` or
//! `srv+_http._tcp.api.internal` are resolved in the background and re-resolved when their TTL
//! runs out, and the result is published as a [`Snapshot`] of every such version's addresses.
//!
//! Why a separate, watch-shaped piece: the request path must never wait on DNS, so names are
//! never looked up where a request could see it. Instead this module keeps, per (service,
//! version), the set of addresses with the configured name each came from and its weight, and
//! a consumer (the controller, which owns the routing table) subscribes to changes and adds or
//! drains backends keyed by (service, version, address). Only versions with at least one name
//! are in a snapshot; a version with literal addresses only needs no discovery at all.
//!
//! The parts, from the outside in:
//! - [`Discovery`] (run.rs): the background task — one timer queue over all names, bounded
//!   concurrent lookups, the lookup counts of `switchyard_dns_lookups_total`.
//! - lookup.rs: what one resolution of one entry asks (one A/AAAA lookup, or SRV then its
//!   targets) and the outcome it adds up to.
//! - name.rs: the pure per-name state machine — the last good set, the empty-answer count
//!   ([`EMPTY_ANSWERS_TO_REMOVE`]), TTL clamps, jitter and backoff, all on virtual time.
//! - version.rs: a version's endpoints from its literals and names, SRV weights, and the
//!   rule that DNS never empties a version.
//! - resolve.rs: the [`Resolve`] trait those are written against; hickory.rs: the real one.
//!
//! ```no_run
//! # async fn wire(config: &switchyard_config::Config) -> Result<(), String> {
//! use switchyard_control::discovery::Discovery;
//! let discovery = Discovery::with_hickory(config)?;
//! let mut changes = discovery.subscribe();
//! loop {
//!     for v in changes.borrow_and_update().versions.iter() {
//!         // add / drain (v.service, v.version, e.address) for e in &v.endpoints
//!     }
//!     if changes.changed().await.is_err() {
//!         break; // discovery stopped
//!     }
//! }
//! # Ok(()) }
//! ```

mod hickory;
mod lookup;
mod name;
mod resolve;
mod run;
mod version;

pub use hickory::HickoryResolver;
pub use name::EMPTY_ANSWERS_TO_REMOVE;
pub use resolve::{Failure, Lookup, LookupResult, Record, Resolve, SrvRecord};
pub use run::{Discovery, LookupCount, Snapshot, VersionEndpoints};
pub use version::{Endpoint, UNIT_WEIGHT};
