//! Switchyard's data path: from an accepted connection to an upstream response.
//!
//! The request's journey, module by module:
//! [`listener`] accepts and speaks HTTP/1.1 + h2c → [`pipeline`] runs the phases over the
//! current [`table::RoutingTable`]: [`route`] finds the service, [`pick`] the version,
//! the table's version route the backend, [`headers`] rewrites, [`upstream`] sends over a
//! pooled connection, [`stats`] records the outcome once, and [`error`] renders anything the
//! proxy answers itself.
//!
//! This crate knows nothing about the admin API or disks: the control plane compiles tables
//! and `store()`s them into the [`TableHandle`]; the data path only ever `load()`s.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod body;
pub mod error;
pub mod headers;
pub mod listener;
pub mod pick;
pub mod pipeline;
pub mod route;
pub mod stats;
pub mod table;
pub mod upstream;

pub use table::{RoutingTable, ServiceTraffic, TrafficState};

/// The one shared slot holding the current routing table.
pub type TableHandle = std::sync::Arc<arc_swap::ArcSwap<RoutingTable>>;
