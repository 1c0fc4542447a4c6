//! What a version's `backends` entries may say (SPEC §12): a literal `IP:port`, a `host:port`
//! name whose A/AAAA records are the addresses, or `srv+_service._proto.name` whose SRV records
//! give targets, ports and weights.
//!
//! Only the *syntax* is checked here. `switchyard check` runs on laptops and in CI, where
//! production names do not resolve, and a name that resolves to nothing yet is not a mistake in
//! the file (its version answers 503 until it does), so nothing here looks anything up. What
//! a wrong entry gets instead is a message that says which of the three shapes it was taken
//! for and what that shape needs: the label, length and port rules of host names, and the
//! `_service._proto.` labels of SRV names.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use crate::decoder::Decoder;
use crate::schema::Backend;
use crate::yaml::Node;

/// Every shape, for entries that fit none of them well enough to say which was meant.
const ANY_SHAPE: &str = "IP:port such as 10.0.1.1:8080, host:port such as api.internal:8080, \
     or srv+_service._proto.name such as srv+_http._tcp.api.internal";
const IP_SHAPE: &str = "IP:port, e.g. 10.0.1.1:8080 or [::1]:8080";
const NAME_SHAPE: &str = "host:port, e.g. api.internal:8080";
const SRV_SHAPE: &str = "srv+_service._proto.name, e.g. srv+_http._tcp.api.internal";

/// The longest host name DNS can carry (RFC 1035 §2.3.4: 255 octets on the wire, 253 written).
const MAX_NAME: usize = 253;
/// The longest label (RFC 1035 §2.3.4).
const MAX_LABEL: usize = 63;

/// Decodes one `backends` entry, reporting a wrong one where it is written.
pub(crate) fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Backend> {
    let Some(text) = node.scalar() else {
        d.expected(node, path, &format!("a backend: {ANY_SHAPE}"));
        return None;
    };
    parse(text).map_err(|e| d.error(node.pos, path, e)).ok()
}

/// Reads one `backends` entry. The error is the whole message, entry quoted.
pub(crate) fn parse(text: &str) -> Result<Backend, String> {
    let invalid = |problem: String, shape: &str| {
        format!("invalid backend {text:?} ({problem}; expected {shape})")
    };
    if let Some(srv) = text.strip_prefix("srv+") {
        return srv_name(srv)
            .map(|name| Backend::Srv { name })
            .map_err(|p| invalid(p, SRV_SHAPE));
    }
    // Literal addresses first, parsed exactly as before names existed.
    if let Ok(address) = text.parse::<SocketAddr>() {
        return Ok(Backend::Address(address));
    }
    if let Some(scheme) = text.find("://") {
        let scheme = &text[..scheme + 3];
        return Err(invalid(
            format!("remove {scheme:?}: a backend has no scheme"),
            ANY_SHAPE,
        ));
    }
    if text.starts_with('[') {
        let problem = match text.rsplit_once("]:") {
            None if text.ends_with(']') => "no port after the brackets",
            _ => "not an IPv6 address in brackets",
        };
        return Err(invalid(problem.to_string(), IP_SHAPE));
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(match text.parse::<IpAddr>() {
            Ok(_) => invalid("no port".into(), IP_SHAPE),
            Err(_) => invalid(
                "no port".into(),
                "host:port such as api.internal:8080, or srv+_service._proto.name to take ports \
                 from SRV records",
            ),
        });
    };
    if host.contains(':') {
        let problem = match (text.parse::<Ipv6Addr>(), host.parse::<Ipv6Addr>()) {
            (Ok(ip), _) => format!("an IPv6 address needs brackets and a port: [{ip}]:PORT"),
            (_, Ok(ip)) => format!("an IPv6 address goes in brackets: [{ip}]:{port}"),
            _ => "more than one ':'".to_string(),
        };
        return Err(invalid(problem, IP_SHAPE));
    }
    let port = port_number(port).map_err(|p| invalid(p, NAME_SHAPE))?;
    host_name(host).map_err(|p| invalid(p, NAME_SHAPE))?;
    Ok(Backend::Name {
        host: host.to_ascii_lowercase(),
        port,
    })
}

/// A port a backend can be connected to: 1 to 65535.
fn port_number(port: &str) -> Result<u16, String> {
    if port.is_empty() {
        return Err("no port after \":\"".into());
    }
    match port.parse::<u16>() {
        Ok(0) => Err("port 0 cannot be connected to (use 1 to 65535)".into()),
        Ok(n) if port.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(format!("port {port:?} is not a number from 1 to 65535")),
    }
}

/// A host name as DNS and `/etc/hosts` take it (RFC 1123 §2.1), plus `_`, which Docker Compose
/// service names may contain. One trailing dot (an absolute name, no search domains) is allowed.
fn host_name(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("no host name before \":PORT\"".into());
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.len() > MAX_NAME {
        return Err(format!(
            "the host name is {} characters long (at most {MAX_NAME})",
            name.len()
        ));
    }
    let labels: Vec<&str> = name.split('.').collect();
    for label in &labels {
        check_label(label, "a host name")?;
    }
    let last = labels.last().copied().unwrap_or_default();
    if last.bytes().all(|b| b.is_ascii_digit()) {
        return Err(
            if labels.len() == 4 && labels.iter().all(|l| l.bytes().all(|b| b.is_ascii_digit())) {
                "not an IPv4 address (four numbers from 0 to 255)".to_string()
            } else {
                format!("the last label {last:?} is all digits, which no host name's is")
            },
        );
    }
    Ok(())
}

/// One label of a host name: 1 to 63 letters, digits, `-` or `_`, not starting or ending in `-`.
fn check_label(label: &str, what: &str) -> Result<(), String> {
    if label.is_empty() {
        return Err(format!(
            "empty label in {what} (two dots in a row, or a leading dot)"
        ));
    }
    if label.len() > MAX_LABEL {
        return Err(format!(
            "label {label:?} is {} characters long (at most {MAX_LABEL})",
            label.len()
        ));
    }
    if let Some(c) = label
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
    {
        return Err(format!(
            "{c:?} is not allowed in {what} (letters, digits, '-', '_' and '.')"
        ));
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err(format!("label {label:?} starts or ends with '-'"));
    }
    Ok(())
}

/// `_service._proto.name` (RFC 2782), lower-cased; `name` is a host name.
fn srv_name(srv: &str) -> Result<String, String> {
    if srv.is_empty() {
        return Err("nothing after \"srv+\"".into());
    }
    if let Some((_, port)) = srv.rsplit_once(':') {
        return Err(if port.bytes().all(|b| b.is_ascii_digit()) {
            format!("the SRV records give the ports; remove \":{port}\"")
        } else {
            "':' is not allowed in an SRV name".into()
        });
    }
    let mut labels = srv.splitn(3, '.');
    let mut underscored = |which: &str, example: &str| -> Result<(), String> {
        match labels.next() {
            Some("_") => Err(format!(
                "the {which} label \"_\" needs a name after '_' (e.g. {example})"
            )),
            Some(l) if l.starts_with('_') => check_label(&l[1..], "an SRV label")
                .map_err(|p| format!("{which} label {l:?}: {p}")),
            Some(l) => Err(format!(
                "the {which} label {l:?} must start with '_' (e.g. {example})"
            )),
            None => Err(format!("no {which} label (e.g. {example})")),
        }
    };
    underscored("service", "_http")?;
    underscored("protocol", "_tcp")?;
    match labels.next() {
        Some(domain) if !domain.is_empty() => {
            host_name(domain).map_err(|p| format!("in the domain {domain:?}: {p}"))?
        }
        _ => return Err("no domain after _service._proto.".into()),
    }
    Ok(srv.to_ascii_lowercase())
}

#[cfg(test)]
mod tests;
