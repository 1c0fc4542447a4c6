//! Ports for what cannot report its own (etcd, `demo --port`, scripts): handed out once per
//! process from below the kernel's ephemeral range. The proxy under test binds `:0` instead
//! and tells the harness what it got ([`super::Proxy`]).

use std::net::SocketAddr;
use std::net::TcpListener as StdTcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A port on 127.0.0.1 that is free now and that nothing else in this process will be given.
///
/// Binding `:0` and dropping the socket is racy twice over: the kernel may hand the same port
/// to the next `bind(:0)` (CI saw the admin API and a listener get one port), or to an outgoing
/// connection, before the proxy binds it. So ports come from below the kernel's ephemeral
/// range, which neither `bind(:0)` nor `connect` ever uses, walked by a process-wide counter
/// that never repeats, from a start spread by pid so two test processes take different ports.
pub fn free_port() -> u16 {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let (low, high) = unassigned_port_range();
    let span = high - low;
    let start = (std::process::id() as usize).wrapping_mul(7919) % span;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(
            n < span,
            "free_port: every port in {low}..{high} was handed out once"
        );
        let port = (low + (start + n) % span) as u16;
        if StdTcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Ports the kernel never assigns on its own: from 10,000 up to its ephemeral range's start.
fn unassigned_port_range() -> (usize, usize) {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<usize>().ok())
        .unwrap_or(32_768);
    if ephemeral_low >= 12_000 {
        (10_000, ephemeral_low)
    } else {
        // An unusual kernel setting: use the range above the ephemeral ones' default end.
        (61_000, 65_535)
    }
}

/// An address with nothing listening: connecting to it is refused.
pub fn refusing_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}
