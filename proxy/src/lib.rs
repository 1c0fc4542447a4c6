//! Switchyard's data path: from an accepted connection to an upstream response.
//!
//! The request's journey, module by module: [`listener`] accepts (connection cap, TLS by
//! [`tls`]) and hands each connection to a transport — the fast HTTP/1.1 path (`http1`,
//! bytes to bytes), the HTTP/2 server (`http2`, streams on the connection's task) or hyper's
//! general path (`general`, bodies, upgrades and HTTP/2 upstreams) — which share what a
//! listener's connections share ([`edge`]) and run the same [`phases`] over the current
//! [`table::RoutingTable`] (whose backends may come from names the control plane resolved,
//! [`endpoints`]): [`route`] finds the service, [`pick`] the version, the table's version
//! route the backend, [`headers`] rewrites, [`upstream`] sends over a pooled
//! connection (within the backend's connection caps), `retry` decides whether an attempt
//! that failed goes again (and, with a rollout's safety net, whether a failed canary request
//! is replayed on the stable — [`canary`] holds what a running rollout needs per request), [`request`] judges the outcome by the one failure rule and records
//! and logs it once ([`stats`], [`access_log`]), and [`error`] names anything the proxy
//! answers itself. At the edge, [`framing`] catches request smuggling hyper's parser hides,
//! and [`access_log`] writes one line per request off the request path.
//!
//! This crate knows nothing about the admin API: the control plane compiles tables and
//! `store()`s them into the [`TableHandle`]; the data path only ever `load()`s. Nor about
//! disks — certificates come compiled from PEM bytes the control plane read — with one
//! exception still to move out: an `h2` upstream's CA bundle, read on first use.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod access_log;
pub mod body;
mod budget;
pub mod canary;
mod chunked;
pub mod edge;
pub mod endpoints;
pub mod error;
pub mod framing;
mod general;
mod grpc;
pub mod headers;
mod http1;
mod http2;
mod idle;
pub mod listener;
mod mirror;
pub mod phases;
pub mod pick;
pub mod request;
pub mod response;
mod retry;
pub mod route;
pub mod stats;
pub mod table;
pub mod tls;
pub mod upstream;
pub mod workers;

#[cfg(test)]
mod layering;

pub use table::{RoutingTable, ServiceTraffic, TrafficState};

/// The one shared slot holding the current routing table.
pub type TableHandle = std::sync::Arc<arc_swap::ArcSwap<RoutingTable>>;
