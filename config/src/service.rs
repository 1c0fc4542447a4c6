//! Decoding one service: how requests reach it (`match`), where they go (`versions`), and the
//! knobs around that (sticky key, overrides, health checks, timeouts, upstream protocol).
//!
//! The checks that need the whole service live here too: every version named elsewhere must
//! exist, and the weights must let some request through. Route conflicts between services are
//! caught by [`Routes`], which sees every service's `match` as it is decoded.

use std::collections::HashMap;

use crate::decoder::{child, item, Decoder, Fields};
use crate::rollout::rollout;
use crate::schema::*;
use crate::yaml::{Node, Pos};

const SERVICE_FIELDS: &[&str] = &[
    "match",
    "versions",
    "sticky",
    "overrides",
    "health_check",
    "timeouts",
    "upstream",
    "rollout",
];

pub(crate) fn service(
    d: &mut Decoder,
    name: &str,
    key_pos: Pos,
    node: &Node,
    path: &str,
    routes: &mut Routes,
) -> Option<Service> {
    let f = d.map(node, path, SERVICE_FIELDS)?;

    // Outer `None`: `match` is present but invalid (already reported).
    let matcher: Option<Option<Match>> = match f.get("match") {
        None => {
            routes.claim_default(d, name, key_pos, path);
            Some(None)
        }
        Some(match_node) => {
            let match_path = f.path("match");
            let matcher = matcher(d, match_node, &match_path);
            if let Some(m) = &matcher {
                routes.claim(d, name, match_node, &match_path, m);
            }
            matcher.map(Some)
        }
    };

    let names = VersionNames(f.get("versions").and_then(Node::keys));
    let versions = f.req(d, "versions", versions);
    let sticky = f.opt(d, "sticky", sticky);
    let overrides = f
        .opt(d, "overrides", |d, n, p| {
            d.list_of(n, p, |d, n, p| override_rule(d, n, p, &names))
        })
        .unwrap_or_default();
    let health_check = f.opt(d, "health_check", health_check);
    let timeouts = f.opt(d, "timeouts", timeouts).unwrap_or_default();
    let upstream = f.opt(d, "upstream", upstream).unwrap_or_default();
    let rollout = f.opt(d, "rollout", |d, n, p| rollout(d, n, p, &names));

    Some(Service {
        name: name.to_string(),
        matcher: matcher?,
        versions: versions?,
        sticky,
        overrides,
        health_check,
        timeouts,
        upstream,
        rollout,
    })
}

/// The version names a service declares, read straight from the `versions` keys so that a
/// mistake inside one version does not hide a misspelt version name in an override or rollout.
pub(crate) struct VersionNames<'n>(Option<Vec<&'n str>>);

impl VersionNames<'_> {
    /// Reads a version name and reports it if the service has no such version.
    pub fn check(&self, d: &mut Decoder, node: &Node, path: &str) -> Option<String> {
        let name = d.string(node, path)?;
        if let Some(names) = &self.0 {
            if !names.contains(&name.as_str()) {
                d.error(
                    node.pos,
                    path,
                    format!(
                        "unknown version {name:?} (this service's versions are: {})",
                        names.join(", ")
                    ),
                );
                return None;
            }
        }
        Some(name)
    }
}

// ---- match ------------------------------------------------------------------------------

fn matcher(d: &mut Decoder, node: &Node, path: &str) -> Option<Match> {
    let f = d.map(node, path, &["hosts", "path_prefix"])?;
    let hosts = f.opt_or(d, "hosts", Vec::new(), |d, n, p| d.list_of(n, p, host));
    let path_prefix = f.opt_or(d, "path_prefix", "/".to_string(), request_path);
    Some(Match {
        hosts: hosts?,
        path_prefix: path_prefix?,
    })
}

/// A host name to match, lower-cased (host names are case-insensitive). `*.example.com`
/// matches any subdomain; a `*` anywhere else would need a pattern language we do not have.
fn host(d: &mut Decoder, node: &Node, path: &str) -> Option<String> {
    let host = d.string(node, path)?.to_ascii_lowercase();
    let name = host.strip_prefix("*.").unwrap_or(&host);
    let problem = if name.contains('*') {
        "a wildcard is only allowed as a leading \"*.\", e.g. *.example.com"
    } else if name.starts_with('[') {
        // An IPv6 literal such as [::1]: let the address parser judge it.
        match name
            .strip_prefix('[')
            .and_then(|n| n.strip_suffix(']'))
            .map(str::parse::<std::net::Ipv6Addr>)
        {
            Some(Ok(_)) => return Some(host),
            _ => "expected an IPv6 address in brackets, e.g. [::1]",
        }
    } else if name.contains(':') {
        "hosts are matched without the port; remove \":PORT\""
    } else if name.split('.').any(str::is_empty)
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
    {
        "expected a host name such as api.example.com or *.example.com"
    } else {
        return Some(host);
    };
    d.error(node.pos, path, format!("invalid host {host:?} ({problem})"));
    None
}

/// A URL path such as `/` or `/api`.
fn request_path(d: &mut Decoder, node: &Node, path: &str) -> Option<String> {
    let value = d.string(node, path)?;
    if !value.starts_with('/') {
        d.error(
            node.pos,
            path,
            format!("{value:?} must start with \"/\" (e.g. /{value})"),
        );
        return None;
    }
    Some(value)
}

/// Which service each (host, path_prefix) pair routes to, so two services never claim the
/// same requests, and which service (at most one) is the default for unmatched requests.
#[derive(Default)]
pub(crate) struct Routes {
    /// (host or "" for any host, path_prefix) → service name.
    claimed: HashMap<(String, String), String>,
    default: Option<String>,
}

impl Routes {
    fn claim(&mut self, d: &mut Decoder, service: &str, node: &Node, path: &str, m: &Match) {
        // Positions of the host entries, so a conflict points at the host that collides.
        let host_nodes = node.get("hosts").map(Node::items).unwrap_or_default();
        let hosts_path = child(path, "hosts");
        let claims: Vec<(String, Pos, String)> = if m.hosts.is_empty() {
            vec![(String::new(), node.pos, path.to_string())]
        } else {
            m.hosts
                .iter()
                .zip(host_nodes)
                .enumerate()
                .map(|(i, (host, n))| (host.clone(), n.pos, item(&hosts_path, i)))
                .collect()
        };
        for (host, pos, path) in claims {
            let key = (host, m.path_prefix.clone());
            let message = match self.claimed.get(&key) {
                None => {
                    self.claimed.insert(key, service.to_string());
                    continue;
                }
                Some(owner) if owner == service => format!("host {:?} is listed twice", key.0),
                Some(owner) => {
                    let hosts = if key.0.is_empty() {
                        "any host".to_string()
                    } else {
                        format!("host {:?}", key.0)
                    };
                    format!(
                        "{hosts} with path_prefix {:?} is already routed to service {owner:?} \
                         (give one of them another host or path_prefix)",
                        key.1
                    )
                }
            };
            d.error(pos, &path, message);
        }
    }

    fn claim_default(&mut self, d: &mut Decoder, service: &str, pos: Pos, path: &str) {
        match &self.default {
            None => self.default = Some(service.to_string()),
            Some(owner) => d.error(
                pos,
                path,
                format!(
                    "service {owner:?} has no match either; only one service may omit match \
                     (it is the default for unmatched requests), so add match: to one of them"
                ),
            ),
        }
    }
}

// ---- versions ---------------------------------------------------------------------------

fn versions(d: &mut Decoder, node: &Node, path: &str) -> Option<Vec<Version>> {
    let entries = d.entries(node, path)?;
    if entries.is_empty() {
        d.error(
            node.pos,
            path,
            "a service needs at least one version, e.g. v1: { release: v1.0, backends: [\"10.0.0.1:8080\"] }",
        );
        return None;
    }
    // With one version there is nothing to split, so its weight may be left out.
    let weight_default = (entries.len() == 1).then_some(100);
    let decoded: Vec<Option<Version>> = entries
        .iter()
        .map(|e| {
            let path = child(path, &e.key);
            let named = d.check_name(&e.key, e.key_pos, &path, "version");
            let version = version(d, &e.key, &e.value, &path, weight_default);
            version.filter(|_| named)
        })
        .collect();
    let versions: Vec<Version> = decoded.into_iter().collect::<Option<_>>()?;

    let has_backends = versions.iter().any(|v| !v.backends.is_empty());
    if has_backends && versions.iter().all(|v| v.weight == 0) {
        d.error(
            node.pos,
            path,
            "every version has weight 0, so no request could be served (give at least one version a weight above 0)",
        );
    }
    Some(versions)
}

fn version(
    d: &mut Decoder,
    name: &str,
    node: &Node,
    path: &str,
    weight_default: Option<u32>,
) -> Option<Version> {
    let f = d.map(node, path, &["release", "backends", "weight"])?;
    let release = f.req(d, "release", Decoder::string);
    let backends = f.opt_or(d, "backends", Vec::new(), backends);
    let weight = match (f.get("weight"), weight_default) {
        (Some(n), _) => d.share(n, &f.path("weight"), "weight", u32::MAX),
        (None, Some(default)) => Some(default),
        (None, None) => {
            d.error(
                f.pos,
                path,
                "missing required field \"weight\" (with several versions each one needs a weight, e.g. weight: 100 or weight: 0)",
            );
            None
        }
    };
    Some(Version {
        name: name.to_string(),
        release: release?,
        backends: backends?,
        weight: weight?,
    })
}

fn backends(d: &mut Decoder, node: &Node, path: &str) -> Option<Vec<Backend>> {
    let items = d.list(node, path)?;
    let mut seen = HashMap::new();
    let mut backends = Some(Vec::with_capacity(items.len()));
    for (i, n) in items.iter().enumerate() {
        let path = item(path, i);
        let Some(backend) = crate::backend::decode(d, n, &path) else {
            backends = None;
            continue;
        };
        match seen.get(&backend) {
            Some(first) => d.error(
                n.pos,
                &path,
                format!("backend {backend} is already listed at [{first}]"),
            ),
            None => {
                seen.insert(backend.clone(), i);
            }
        }
        if let Some(list) = backends.as_mut() {
            list.push(backend);
        }
    }
    backends
}

// ---- sticky and overrides ---------------------------------------------------------------

/// Where a per-request key comes from: a header or a cookie, never both.
enum KeySource {
    Header(String),
    Cookie(String),
}

/// Reads exactly one of `header:` / `cookie:` from `f`. Header names are lower-cased
/// (HTTP header names are case-insensitive); cookie names are not.
fn key_source(d: &mut Decoder, f: &Fields<'_>, example: &str) -> Option<KeySource> {
    let header = f.opt(d, "header", |d, n, p| d.token(n, p, "header"));
    let cookie = f.opt(d, "cookie", |d, n, p| d.token(n, p, "cookie"));
    match (f.get("header"), f.get("cookie")) {
        (Some(_), Some(_)) => {
            d.error(f.pos, &f.path, "give either header or cookie, not both");
            None
        }
        (None, None) => {
            d.error(
                f.pos,
                &f.path,
                format!("missing header or cookie (e.g. {example})"),
            );
            None
        }
        _ => header
            .map(|h| KeySource::Header(h.to_ascii_lowercase()))
            .or(cookie.map(KeySource::Cookie)),
    }
}

fn sticky(d: &mut Decoder, node: &Node, path: &str) -> Option<Sticky> {
    let f = d.map(node, path, &["header", "cookie"])?;
    Some(
        match key_source(d, &f, "{ header: x-user-id } or { cookie: session }")? {
            KeySource::Header(name) => Sticky::Header(name),
            KeySource::Cookie(name) => Sticky::Cookie(name),
        },
    )
}

fn override_rule(
    d: &mut Decoder,
    node: &Node,
    path: &str,
    versions: &VersionNames<'_>,
) -> Option<Override> {
    let f = d.map(node, path, &["header", "cookie", "value", "version"])?;
    let source = key_source(d, &f, "{ header: x-canary, value: always, version: green }");
    let value = f.req(d, "value", Decoder::any_string);
    let version = f.req(d, "version", |d, n, p| versions.check(d, n, p));
    let value = value?;
    let when = match source? {
        KeySource::Header(name) => OverrideMatch::Header { name, value },
        KeySource::Cookie(name) => OverrideMatch::Cookie { name, value },
    };
    Some(Override {
        when,
        version: version?,
    })
}

// ---- health checks, timeouts, upstream --------------------------------------------------

fn health_check(d: &mut Decoder, node: &Node, path: &str) -> Option<HealthCheck> {
    let f = d.map(
        node,
        path,
        &[
            "path",
            "interval",
            "timeout",
            "unhealthy_threshold",
            "healthy_threshold",
        ],
    )?;
    let def = HealthCheck::default();
    Some(HealthCheck {
        path: f.opt(d, "path", request_path).unwrap_or(def.path),
        interval: f
            .opt(d, "interval", Decoder::positive_duration)
            .unwrap_or(def.interval),
        timeout: f
            .opt(d, "timeout", Decoder::positive_duration)
            .unwrap_or(def.timeout),
        unhealthy_threshold: f
            .opt(d, "unhealthy_threshold", Decoder::positive)
            .unwrap_or(def.unhealthy_threshold),
        healthy_threshold: f
            .opt(d, "healthy_threshold", Decoder::positive)
            .unwrap_or(def.healthy_threshold),
    })
}

fn timeouts(d: &mut Decoder, node: &Node, path: &str) -> Option<Timeouts> {
    let f = d.map(node, path, &["connect", "request", "idle"])?;
    let def = Timeouts::default();
    let mut read = |name, default| {
        f.opt(d, name, Decoder::positive_duration)
            .unwrap_or(default)
    };
    Some(Timeouts {
        connect: read("connect", def.connect),
        request: read("request", def.request),
        idle: read("idle", def.idle),
    })
}

fn upstream(d: &mut Decoder, node: &Node, path: &str) -> Option<Upstream> {
    let f = d.map(
        node,
        path,
        &[
            "protocol",
            "ca",
            "max_connections",
            "max_connecting",
            "queue",
            "queue_timeout",
        ],
    )?;
    let def = Upstream::default();
    let protocol = f.opt_or(d, "protocol", UpstreamProtocol::Http1, |d, n, p| {
        d.choice(
            n,
            p,
            "protocol",
            &[
                ("http1", UpstreamProtocol::Http1),
                ("h2c", UpstreamProtocol::H2c),
                ("h2", UpstreamProtocol::H2),
            ],
        )
    });
    let ca = f.opt(d, "ca", Decoder::path_buf);
    if let (Some(ca_node), Some(protocol)) = (f.get("ca"), protocol) {
        if protocol != UpstreamProtocol::H2 {
            d.error(
                ca_node.pos,
                &f.path("ca"),
                "ca is only used with protocol: h2 (TLS to the backends); remove it or set protocol: h2",
            );
        }
    }
    let protocol = protocol.unwrap_or_default();
    Some(Upstream {
        protocol,
        ca,
        max_connections: f
            .opt(d, "max_connections", Decoder::positive)
            .unwrap_or(def.max_connections),
        max_connecting: f
            .opt(d, "max_connecting", Decoder::positive)
            .unwrap_or(def.max_connecting),
        queue: f.opt(d, "queue", Decoder::uint).unwrap_or(def.queue),
        queue_timeout: f
            .opt(d, "queue_timeout", Decoder::positive_duration)
            .unwrap_or(def.queue_timeout),
    })
}
