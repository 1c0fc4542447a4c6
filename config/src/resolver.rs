//! Decoding the `resolver:` block (SPEC §12): which name servers answer for backend names,
//! and the bounds on how often a name is asked again.
//!
//! Leaving the block out is the common case — the system's resolver, as every other program on
//! the machine uses — so every field has a default; what is checked is that the servers are
//! addresses (a name server cannot itself be a name to look up) and that the two TTL bounds
//! leave room between them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::decoder::{item, Decoder};
use crate::schema::Resolver;
use crate::yaml::Node;

pub(crate) fn resolver(d: &mut Decoder, node: &Node, path: &str) -> Option<Resolver> {
    let f = d.map(node, path, &["nameservers", "min_ttl", "max_ttl"])?;
    let nameservers = f.opt_or(d, "nameservers", Vec::new(), nameservers);
    let min_ttl = f.opt_or(
        d,
        "min_ttl",
        Resolver::DEFAULT_MIN_TTL,
        Decoder::positive_duration,
    );
    let max_ttl = f.opt_or(
        d,
        "max_ttl",
        Resolver::DEFAULT_MAX_TTL,
        Decoder::positive_duration,
    );
    let (min_ttl, max_ttl) = (min_ttl?, max_ttl?);
    if min_ttl > max_ttl {
        let written = |name: &str, default: Duration| match f.get(name).and_then(Node::scalar) {
            Some(text) => text.to_string(),
            None => format!("{} (the default)", seconds(default)),
        };
        let message = format!(
            "min_ttl {} is longer than max_ttl {}; min_ttl must not be longer than max_ttl",
            written("min_ttl", Resolver::DEFAULT_MIN_TTL),
            written("max_ttl", Resolver::DEFAULT_MAX_TTL),
        );
        // Point at whichever of the two was written; min_ttl when both were.
        let at = if f.get("min_ttl").is_some() {
            "min_ttl"
        } else {
            "max_ttl"
        };
        let pos = f.get(at).map_or(f.pos, |n| n.pos);
        d.error(pos, &f.path(at), message);
        return None;
    }
    Some(Resolver {
        nameservers: nameservers?,
        min_ttl,
        max_ttl,
    })
}

fn nameservers(d: &mut Decoder, node: &Node, path: &str) -> Option<Vec<SocketAddr>> {
    let items = d.list(node, path)?;
    if items.is_empty() {
        d.error(
            node.pos,
            path,
            "give at least one name server, e.g. [\"10.0.0.2:53\"], or leave nameservers out to use the system's (/etc/resolv.conf)",
        );
        return None;
    }
    let mut seen = HashMap::new();
    let mut servers = Some(Vec::with_capacity(items.len()));
    for (i, n) in items.iter().enumerate() {
        let path = item(path, i);
        let Some(address) = d.socket_addr(n, &path) else {
            servers = None;
            continue;
        };
        if let Some(first) = seen.insert(address, i) {
            d.error(
                n.pos,
                &path,
                format!("name server {address} is already listed at [{first}]"),
            );
            servers = None;
        }
        if let Some(list) = servers.as_mut() {
            list.push(address);
        }
    }
    servers
}

/// The defaults are whole seconds; said the way they would be written.
fn seconds(d: Duration) -> String {
    format!("{}s", d.as_secs())
}
