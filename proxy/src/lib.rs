//! Switchyard's data path: from an accepted connection to an upstream response.
//!
//! The request's journey, module by module:
//! [`listener`] accepts and speaks HTTP/1.1 + h2c (HTTP/1.1 requests without a body
//! take the fast path in `h1`, which runs the same phases on raw bytes) → [`pipeline`] runs the phases over the
//! current [`table::RoutingTable`]: [`route`] finds the service, [`pick`] the version,
//! the table's version route the backend, [`headers`] rewrites, [`upstream`] sends over a
//! pooled connection, [`stats`] records the outcome once, and [`error`] renders anything the
//! proxy answers itself. At the edge, [`tls`] terminates TLS (SNI, ALPN, hot-swapped
//! certificates), [`framing`] catches request smuggling hyper's parser hides, and
//! [`access_log`] writes one line per request off the request path.
//!
//! This crate knows nothing about the admin API or disks: the control plane compiles tables
//! and `store()`s them into the [`TableHandle`]; the data path only ever `load()`s.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod access_log;
pub mod body;
pub mod error;
pub mod framing;
mod h1;
pub mod headers;
pub mod listener;
pub mod pick;
pub mod pipeline;
pub mod route;
pub mod stats;
pub mod table;
pub mod tls;
pub mod upstream;

pub use table::{RoutingTable, ServiceTraffic, TrafficState};

/// The one shared slot holding the current routing table.
pub type TableHandle = std::sync::Arc<arc_swap::ArcSwap<RoutingTable>>;
