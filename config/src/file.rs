//! Decoding the whole file: listeners, admin, state, limits, access log, resolver and the
//! services map.
//!
//! Checks that compare entries with each other live here, next to the loops that see them
//! all: listener names and addresses are unique, the admin listener does not collide with a
//! proxy listener, and (through [`Routes`]) no two services claim the same requests.

use std::collections::HashMap;
use std::net::SocketAddr;

use crate::decoder::{child, item, Decoder};
use crate::schema::*;
use crate::service::{service, Routes};
use crate::yaml::{Node, Pos};

const TOP_FIELDS: &[&str] = &[
    "listeners",
    "admin",
    "state_dir",
    "limits",
    "access_log",
    "cluster",
    "resolver",
    "services",
];

pub(crate) fn config(d: &mut Decoder, root: &Node) -> Option<Config> {
    let f = d.map(root, "", TOP_FIELDS)?;
    let listeners = f.req(d, "listeners", listeners);
    let admin = f.opt(d, "admin", admin).unwrap_or_default();
    let state_dir = f.opt(d, "state_dir", Decoder::path_buf);
    let limits = f.opt(d, "limits", limits).unwrap_or_default();
    let access_log = f.opt(d, "access_log", access_log);
    let cluster = f.opt(d, "cluster", crate::cluster::cluster);
    let resolver = f.opt(d, "resolver", crate::resolver::resolver);
    let services = f.opt(d, "services", services).unwrap_or_default();

    if let Some(listeners) = &listeners {
        let admin_address = f.get("admin").and_then(|a| a.get("address"));
        check_admin_address(d, &admin, admin_address, listeners, root);
    }

    let mut config = Config::new(listeners?, admin, state_dir, limits, access_log, services)
        .with_resolver(resolver.unwrap_or_default());
    config.cluster = cluster;
    Some(config)
}

// ---- listeners --------------------------------------------------------------------------

fn listeners(d: &mut Decoder, node: &Node, path: &str) -> Option<Vec<Listener>> {
    let items = d.list(node, path)?;
    if items.is_empty() {
        d.error(
            node.pos,
            path,
            "at least one listener is needed, e.g. - { name: public, address: 0.0.0.0:8080 }",
        );
        return None;
    }
    let decoded: Vec<Option<Listener>> = items
        .iter()
        .enumerate()
        .map(|(i, n)| listener(d, n, &item(path, i)))
        .collect();
    check_listeners_unique(d, items, path);
    decoded.into_iter().collect()
}

/// Listener names and ports must not repeat. Read from the raw nodes, so a listener with an
/// unrelated mistake still takes part and every clash is reported in one go.
fn check_listeners_unique(d: &mut Decoder, items: &[Node], path: &str) {
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut addresses: Vec<(SocketAddr, usize)> = Vec::new();
    for (i, n) in items.iter().enumerate() {
        let path = item(path, i);
        if let Some(name_node) = n.get("name") {
            if let Some(name) = name_node.scalar() {
                match names.get(name) {
                    Some(first) => d.error(
                        name_node.pos,
                        &child(&path, "name"),
                        format!("listener name {name:?} is already used by listeners[{first}]"),
                    ),
                    None => {
                        names.insert(name, i);
                    }
                }
            }
        }
        let Some(address_node) = n.get("address") else {
            continue;
        };
        let Some(address) = address_node.scalar().and_then(|a| a.parse().ok()) else {
            continue;
        };
        match addresses.iter().find(|(other, _)| overlaps(*other, address)) {
            Some((other, first)) => d.error(
                address_node.pos,
                &child(&path, "address"),
                format!(
                    "address {address} collides with listeners[{first}] ({other}); each listener needs its own port"
                ),
            ),
            None => addresses.push((address, i)),
        }
    }
}

/// Whether two listen addresses would fight over one port: the same address, or the same
/// port where one side listens on every interface. Port 0 asks the OS for a free port, so
/// it never collides (tests rely on this).
fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

fn listener(d: &mut Decoder, node: &Node, path: &str) -> Option<Listener> {
    let f = d.map(node, path, &["name", "address", "tls"])?;
    let name = f.req(d, "name", |d, n, p| d.name(n, p, "listener"));
    let address = f.req(d, "address", Decoder::socket_addr);
    let tls = f.opt_or(d, "tls", None, |d, n, p| tls(d, n, p).map(Some));
    Some(Listener {
        name: name?,
        address: address?,
        tls: tls?,
    })
}

fn tls(d: &mut Decoder, node: &Node, path: &str) -> Option<Tls> {
    let f = d.map(node, path, &["certificates"])?;
    let certificates = f.req(d, "certificates", |d, n, p| {
        let pairs = d.list_of(n, p, certificate_pair)?;
        if pairs.is_empty() {
            d.error(
                n.pos,
                p,
                "TLS needs at least one certificate, e.g. - { cert: certs/api.pem, key: certs/api-key.pem }",
            );
            return None;
        }
        Some(pairs)
    });
    Some(Tls {
        certificates: certificates?,
    })
}

fn certificate_pair(d: &mut Decoder, node: &Node, path: &str) -> Option<CertificatePair> {
    let f = d.map(node, path, &["cert", "key"])?;
    let cert = f.req(d, "cert", Decoder::path_buf);
    let key = f.req(d, "key", Decoder::path_buf);
    Some(CertificatePair {
        cert: cert?,
        key: key?,
    })
}

// ---- admin, limits, access log ----------------------------------------------------------

fn admin(d: &mut Decoder, node: &Node, path: &str) -> Option<Admin> {
    let f = d.map(node, path, &["address", "token_file"])?;
    let def = Admin::default();
    Some(Admin {
        address: f
            .opt(d, "address", Decoder::socket_addr)
            .unwrap_or(def.address),
        // Only a path: the token is read when serving, so `check` works without the secret.
        token_file: f.opt(d, "token_file", Decoder::path_buf),
    })
}

/// The admin API and a proxy listener cannot share a port.
fn check_admin_address(
    d: &mut Decoder,
    admin: &Admin,
    admin_node: Option<&Node>,
    listeners: &[Listener],
    root: &Node,
) {
    let Some((i, listener)) = listeners
        .iter()
        .enumerate()
        .find(|(_, l)| overlaps(l.address, admin.address))
    else {
        return;
    };
    let message = format!(
        "admin address {} collides with listener {:?} ({}); give the admin API its own port",
        admin.address, listener.name, listener.address
    );
    match admin_node {
        Some(n) => d.error(n.pos, "admin.address", message),
        None => {
            // The default admin address is in the way: point at the listener instead.
            let pos = root
                .get("listeners")
                .and_then(|l| l.items().get(i))
                .and_then(|l| l.get("address"))
                .map_or(Pos { line: 1, column: 1 }, |n| n.pos);
            d.error(pos, &format!("listeners[{i}].address"), message);
        }
    }
}

fn limits(d: &mut Decoder, node: &Node, path: &str) -> Option<Limits> {
    let f = d.map(
        node,
        path,
        &[
            "max_header_bytes",
            "header_read_timeout",
            "client_body_timeout",
            "max_connections",
            "max_request_body",
            "trace",
        ],
    )?;
    let def = Limits::default();
    Some(Limits {
        max_header_bytes: f
            .opt(d, "max_header_bytes", Decoder::positive)
            .unwrap_or(def.max_header_bytes),
        header_read_timeout: f
            .opt(d, "header_read_timeout", Decoder::positive_duration)
            .unwrap_or(def.header_read_timeout),
        client_body_timeout: f
            .opt(d, "client_body_timeout", Decoder::positive_duration)
            .unwrap_or(def.client_body_timeout),
        max_connections: f
            .opt(d, "max_connections", Decoder::positive)
            .unwrap_or(def.max_connections),
        // `null` (or absent) = unlimited.
        max_request_body: f.opt(d, "max_request_body", Decoder::uint),
        trace: f.opt_or(d, "trace", def.trace, |d, n, p| {
            d.choice(
                n,
                p,
                "trace",
                &[
                    ("reject", TracePolicy::Reject),
                    ("forward", TracePolicy::Forward),
                ],
            )
        })?,
    })
}

fn access_log(d: &mut Decoder, node: &Node, path: &str) -> Option<AccessLog> {
    let f = d.map(node, path, &["path", "format"])?;
    let path = f
        .opt(d, "path", Decoder::string)
        .map_or(AccessLogPath::Stdout, |p| match p.as_str() {
            "stdout" => AccessLogPath::Stdout,
            _ => AccessLogPath::File(p.into()),
        });
    let format = f
        .opt(d, "format", |d, n, p| {
            d.choice(
                n,
                p,
                "format",
                &[
                    ("json", AccessLogFormat::Json),
                    ("combined", AccessLogFormat::Combined),
                ],
            )
        })
        .unwrap_or(AccessLogFormat::Json);
    Some(AccessLog { path, format })
}

// ---- services ---------------------------------------------------------------------------

fn services(d: &mut Decoder, node: &Node, path: &str) -> Option<Vec<Service>> {
    let entries = d.entries(node, path)?;
    let mut routes = Routes::default();
    let mut decoded = Some(Vec::with_capacity(entries.len()));
    for e in entries {
        let path = child(path, &e.key);
        let named = d.check_name(&e.key, e.key_pos, &path, "service");
        match service(d, &e.key, e.key_pos, &e.value, &path, &mut routes) {
            Some(s) if named => {
                if let Some(list) = decoded.as_mut() {
                    list.push(s);
                }
            }
            _ => decoded = None,
        }
    }
    decoded
}
