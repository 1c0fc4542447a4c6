//! The `cluster:` block (SPEC §11): how a replica finds its fleet's etcd, what it is called
//! there, and how long its lease lives.
//!
//! Without the block nothing changes: the proxy keeps its state in `state_dir` (or memory).
//! With it, every replica shares one routing state and one rollout decision through etcd, so
//! the checks here are the ones an operator would otherwise meet at 3 a.m.: endpoints that
//! cannot be dialled, a prefix that two fleets could share by accident, a lease too short to
//! survive one slow keep-alive, a replica name that cannot be a key or a metric label.

use std::time::Duration;

use crate::decoder::{Decoder, Fields};
use crate::schema::{Cluster, Etcd, EtcdAuth, EtcdTls};
use crate::yaml::Node;

/// Shortest lease that survives a missed keep-alive (they are sent every lease / 3).
pub const MIN_LEASE: Duration = Duration::from_secs(2);

pub(crate) fn cluster(d: &mut Decoder, node: &Node, path: &str) -> Option<Cluster> {
    let f = d.map(node, path, &["etcd", "replica", "lease"])?;
    let etcd = f.req(d, "etcd", etcd);
    let replica = f.opt(d, "replica", |d, n, p| d.name(n, p, "replica"));
    let lease = f.opt_or(d, "lease", Cluster::DEFAULT_LEASE, lease)?;
    Some(Cluster {
        etcd: etcd?,
        replica,
        lease,
    })
}

fn etcd(d: &mut Decoder, node: &Node, path: &str) -> Option<Etcd> {
    let f = d.map(
        node,
        path,
        &["endpoints", "prefix", "dial_timeout", "tls", "auth"],
    )?;
    let endpoints = f.req(d, "endpoints", endpoints);
    let prefix = f.req(d, "prefix", prefix);
    let dial_timeout = f.opt_or(
        d,
        "dial_timeout",
        Etcd::DEFAULT_DIAL_TIMEOUT,
        Decoder::positive_duration,
    );
    let tls = f.opt_or(d, "tls", None, |d, n, p| tls(d, n, p).map(Some));
    let auth = f.opt_or(d, "auth", None, |d, n, p| auth(d, n, p).map(Some));
    let (endpoints, tls) = (endpoints?, tls?);
    check_schemes(d, &f, &endpoints, tls.is_some());
    Some(Etcd {
        endpoints,
        prefix: prefix?,
        dial_timeout: dial_timeout?,
        tls,
        auth: auth?,
    })
}

fn endpoints(d: &mut Decoder, node: &Node, path: &str) -> Option<Vec<String>> {
    let list = d.list_of(node, path, endpoint)?;
    if list.is_empty() {
        d.error(
            node.pos,
            path,
            "at least one etcd endpoint is needed, e.g. [\"127.0.0.1:2379\"]",
        );
        return None;
    }
    Some(list)
}

/// `host:port`, optionally with `http://` or `https://` in front.
fn endpoint(d: &mut Decoder, node: &Node, path: &str) -> Option<String> {
    let text = d.string(node, path)?;
    let rest = text
        .strip_prefix("http://")
        .or_else(|| text.strip_prefix("https://"))
        .unwrap_or(&text);
    let problem = if rest.contains('/') {
        Some("has a path; give host:port only")
    } else {
        match rest.rsplit_once(':') {
            None => Some("has no port (etcd clients listen on 2379)"),
            Some((host, port)) => {
                if host.is_empty() || host == "[]" {
                    Some("has no host")
                } else if port.parse::<u16>().map_or(true, |p| p == 0) {
                    Some("has an invalid port (1-65535)")
                } else {
                    None
                }
            }
        }
    };
    match problem {
        Some(problem) => {
            d.error(
                node.pos,
                path,
                format!(
                    "etcd endpoint {text:?} {problem}: expected host:port, e.g. 127.0.0.1:2379 or etcd-0.etcd:2379"
                ),
            );
            None
        }
        None => Some(text),
    }
}

/// `https://` needs `tls` (else there is nothing to verify the server with), and `http://`
/// with `tls` would silently send nothing encrypted.
fn check_schemes(d: &mut Decoder, f: &Fields<'_>, endpoints: &[String], tls: bool) {
    let Some(node) = f.get("endpoints") else {
        return;
    };
    for (i, e) in endpoints.iter().enumerate() {
        let path = format!("{}[{i}]", f.path("endpoints"));
        let pos = node.items().get(i).map_or(node.pos, |n| n.pos);
        if e.starts_with("https://") && !tls {
            d.error(
                pos,
                &path,
                format!("etcd endpoint {e:?} is https but cluster.etcd.tls is not set; add tls: {{ ca: ... }} or use host:port"),
            );
        } else if e.starts_with("http://") && tls {
            d.error(
                pos,
                &path,
                format!("etcd endpoint {e:?} is plain http but cluster.etcd.tls is set; write it as host:port or https://host:port"),
            );
        }
    }
}

/// Starts with `/`, does not end with one, and has no empty segment, so keys under it are
/// `PREFIX/state/...` and two fleets never share a prefix by a stray slash.
fn prefix(d: &mut Decoder, node: &Node, path: &str) -> Option<String> {
    let text = d.string(node, path)?;
    let problem = if !text.starts_with('/') {
        Some("must start with /")
    } else if text.len() > 1 && text.ends_with('/') {
        Some("must not end with /")
    } else if text == "/" {
        Some("must name the fleet, not be the root")
    } else if text.contains("//") {
        Some("has an empty segment (//)")
    } else {
        None
    };
    match problem {
        Some(problem) => {
            d.error(
                node.pos,
                path,
                format!(
                    "etcd prefix {text:?} {problem}: one fleet = one prefix, e.g. /switchyard/prod"
                ),
            );
            None
        }
        None => Some(text),
    }
}

/// At least [`MIN_LEASE`], in whole seconds (etcd leases are granted in seconds).
fn lease(d: &mut Decoder, node: &Node, path: &str) -> Option<Duration> {
    let lease = d.positive_duration(node, path)?;
    let message = if lease < MIN_LEASE {
        "lease must be at least 2s: it is the leader's lease and the replica heartbeat's TTL, \
         and keep-alives go every lease/3 (e.g. 5s)"
    } else if lease.subsec_nanos() != 0 {
        "lease must be a whole number of seconds (etcd grants leases in seconds), e.g. 5s"
    } else {
        return Some(lease);
    };
    d.error(node.pos, path, message);
    None
}

fn tls(d: &mut Decoder, node: &Node, path: &str) -> Option<EtcdTls> {
    let f = d.map(node, path, &["ca", "cert", "key"])?;
    let ca = f.opt(d, "ca", Decoder::path_buf);
    let cert = f.opt(d, "cert", Decoder::path_buf);
    let key = f.opt(d, "key", Decoder::path_buf);
    let identity = match (cert, key) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        (Some(_), None) | (None, Some(_)) => {
            d.error(
                f.pos,
                path,
                "cert and key go together: give both for client certificates, or neither",
            );
            return None;
        }
    };
    Some(EtcdTls { ca, identity })
}

fn auth(d: &mut Decoder, node: &Node, path: &str) -> Option<EtcdAuth> {
    let f = d.map(node, path, &["username", "password_file"])?;
    let username = f.req(d, "username", Decoder::string);
    let password_file = f.req(d, "password_file", Decoder::path_buf);
    Some(EtcdAuth {
        username: username?,
        password_file: password_file?,
    })
}
