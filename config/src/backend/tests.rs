//! Backend names and the `resolver:` block (SPEC §12): what parses, and the exact message for
//! what does not.

use std::time::Duration;

use super::parse;
use crate::tests::{errors, ok, only_error, summary, MINIMAL};
use crate::*;

fn name(host: &str, port: u16) -> Backend {
    Backend::Name {
        host: host.into(),
        port,
    }
}

fn srv(name: &str) -> Backend {
    Backend::Srv { name: name.into() }
}

#[test]
fn literal_addresses_stay_literal() {
    for text in [
        "10.0.0.1:8080",
        "[::1]:8080",
        "127.0.0.1:0",
        "[fe80::1]:443",
    ] {
        assert_eq!(
            parse(text),
            Ok(Backend::Address(text.parse().unwrap())),
            "{text}"
        );
    }
}

#[test]
fn host_names_with_a_port() {
    assert_eq!(parse("api.internal:8080"), Ok(name("api.internal", 8080)));
    // Docker Compose service names: one label, and `_` is allowed there.
    assert_eq!(parse("web:80"), Ok(name("web", 80)));
    assert_eq!(parse("my_service:9000"), Ok(name("my_service", 9000)));
    assert_eq!(parse("localhost:9001"), Ok(name("localhost", 9001)));
    // Case-insensitive, so kept lower-cased; an absolute name keeps its dot.
    assert_eq!(parse("API.Internal:8080"), Ok(name("api.internal", 8080)));
    assert_eq!(parse("api.internal.:8080"), Ok(name("api.internal.", 8080)));
    assert_eq!(
        parse("a-b.c-d.example:65535"),
        Ok(name("a-b.c-d.example", 65535))
    );
    // At the limits: a 63-character label, a 253-character name.
    let label = "a".repeat(63);
    assert_eq!(
        parse(&format!("{label}.x:1")),
        Ok(name(&format!("{label}.x"), 1))
    );
    let long = [
        &*"a".repeat(63),
        &"b".repeat(63),
        &"c".repeat(63),
        &"d".repeat(61),
    ]
    .join(".");
    assert_eq!(long.len(), 253);
    assert!(parse(&format!("{long}:80")).is_ok());
    // A numeric label is fine anywhere but last.
    assert_eq!(parse("10.api.internal:80"), Ok(name("10.api.internal", 80)));
}

#[test]
fn srv_names() {
    assert_eq!(
        parse("srv+_http._tcp.api.internal"),
        Ok(srv("_http._tcp.api.internal"))
    );
    assert_eq!(
        parse("srv+_HTTP._TCP.Api.Internal."),
        Ok(srv("_http._tcp.api.internal."))
    );
    assert_eq!(
        parse("srv+_grpc-web._tcp.svc"),
        Ok(srv("_grpc-web._tcp.svc"))
    );
    // Shown as written.
    assert_eq!(
        srv("_http._tcp.api.internal").to_string(),
        "srv+_http._tcp.api.internal"
    );
    assert_eq!(name("api.internal", 8080).to_string(), "api.internal:8080");
}

/// Each wrong entry with the whole message: which shape it was taken for, what was wrong.
#[test]
fn bad_names_say_which_shape_is_expected() {
    const ANY: &str = "expected IP:port such as 10.0.1.1:8080, host:port such as api.internal:8080, or srv+_service._proto.name such as srv+_http._tcp.api.internal";
    const IP: &str = "expected IP:port, e.g. 10.0.1.1:8080 or [::1]:8080";
    const NAME: &str = "expected host:port, e.g. api.internal:8080";
    const SRV: &str = "expected srv+_service._proto.name, e.g. srv+_http._tcp.api.internal";
    let cases: &[(&str, &str, &str)] = &[
        ("10.0.1.1", "no port", IP),
        (
            "api.internal",
            "no port",
            "expected host:port such as api.internal:8080, or srv+_service._proto.name to take ports from SRV records",
        ),
        ("http://api.internal:8080", "remove \"http://\": a backend has no scheme", ANY),
        ("[::1]", "no port after the brackets", IP),
        ("[::g]:80", "not an IPv6 address in brackets", IP),
        ("::1", "an IPv6 address needs brackets and a port: [::1]:PORT", IP),
        ("fe80::1:8080", "an IPv6 address needs brackets and a port: [fe80::1:8080]:PORT", IP),
        ("2001:db8::x:80", "more than one ':'", IP),
        ("api.internal:", "no port after \":\"", NAME),
        (":8080", "no host name before \":PORT\"", NAME),
        ("api.internal:0", "port 0 cannot be connected to (use 1 to 65535)", NAME),
        ("api.internal:65536", "port \"65536\" is not a number from 1 to 65535", NAME),
        ("api.internal:http", "port \"http\" is not a number from 1 to 65535", NAME),
        ("api.internal:+80", "port \"+80\" is not a number from 1 to 65535", NAME),
        (
            "api..internal:8080",
            "empty label in a host name (two dots in a row, or a leading dot)",
            NAME,
        ),
        (
            ".api:8080",
            "empty label in a host name (two dots in a row, or a leading dot)",
            NAME,
        ),
        (
            "api.inter nal:8080",
            "' ' is not allowed in a host name (letters, digits, '-', '_' and '.')",
            NAME,
        ),
        (
            "api/v1:8080",
            "'/' is not allowed in a host name (letters, digits, '-', '_' and '.')",
            NAME,
        ),
        ("-api.internal:8080", "label \"-api\" starts or ends with '-'", NAME),
        ("api-.internal:8080", "label \"api-\" starts or ends with '-'", NAME),
        ("10.0.0.256:8080", "not an IPv4 address (four numbers from 0 to 255)", NAME),
        (
            "api.123:8080",
            "the last label \"123\" is all digits, which no host name's is",
            NAME,
        ),
        ("srv+", "nothing after \"srv+\"", SRV),
        (
            "srv+api.internal",
            "the service label \"api\" must start with '_' (e.g. _http)",
            SRV,
        ),
        (
            "srv+_http.api.internal",
            "the protocol label \"api\" must start with '_' (e.g. _tcp)",
            SRV,
        ),
        ("srv+_http", "no protocol label (e.g. _tcp)", SRV),
        ("srv+_http._tcp", "no domain after _service._proto.", SRV),
        ("srv+_http._tcp.", "no domain after _service._proto.", SRV),
        (
            "srv+_http._tcp.api.internal:8080",
            "the SRV records give the ports; remove \":8080\"",
            SRV,
        ),
        (
            "srv+_._tcp.api",
            "the service label \"_\" needs a name after '_' (e.g. _http)",
            SRV,
        ),
        (
            "srv+_h%p._tcp.api",
            "service label \"_h%p\": '%' is not allowed in an SRV label (letters, digits, '-', '_' and '.')",
            SRV,
        ),
        (
            "srv+_http._tcp.api..internal",
            "in the domain \"api..internal\": empty label in a host name (two dots in a row, or a leading dot)",
            SRV,
        ),
    ];
    for (text, problem, shape) in cases {
        assert_eq!(
            parse(text),
            Err(format!("invalid backend {text:?} ({problem}; {shape})")),
            "{text}"
        );
    }
    let label = "a".repeat(64);
    assert_eq!(
        parse(&format!("{label}.x:80")),
        Err(format!(
            "invalid backend \"{label}.x:80\" (label \"{label}\" is 64 characters long (at most 63); {NAME})"
        ))
    );
    let long = format!("{}.com", "a.".repeat(125));
    assert_eq!(long.len(), 254);
    assert_eq!(
        parse(&format!("{long}:80")),
        Err(format!(
            "invalid backend \"{long}:80\" (the host name is 254 characters long (at most 253); {NAME})"
        ))
    );
}

#[test]
fn a_file_with_names_parses_and_keeps_them_apart_from_addresses() {
    let c = ok(&MINIMAL.replace(
        "backends: [\"10.0.0.1:8080\"]",
        "backends: [\"10.0.0.1:8080\", \"api.internal:8080\", \"srv+_http._tcp.api.internal\"]",
    ));
    let v1 = &c.service("api").unwrap().versions[0];
    assert_eq!(
        v1.backends,
        [
            Backend::Address("10.0.0.1:8080".parse().unwrap()),
            name("api.internal", 8080),
            srv("_http._tcp.api.internal"),
        ]
    );
    // What the data path builds its backends from today: the literal addresses only.
    assert_eq!(
        v1.addresses().collect::<Vec<_>>(),
        ["10.0.0.1:8080".parse().unwrap()]
    );
    assert!(v1.has_names());
    assert_eq!(c.resolver, Resolver::default());
}

#[test]
fn a_bad_name_is_reported_at_its_entry() {
    let source = MINIMAL.replace(
        "backends: [\"10.0.0.1:8080\"]",
        "backends: [\"api.internal:8080\", \"api_.internal:99999\", \"srv+_http.api\"]",
    );
    assert_eq!(
        summary(&errors(&source)),
        [
            (
                7,
                58,
                "services.api.versions.v1.backends[1]",
                "invalid backend \"api_.internal:99999\" (port \"99999\" is not a number from 1 to 65535; expected host:port, e.g. api.internal:8080)"
            ),
            (
                7,
                81,
                "services.api.versions.v1.backends[2]",
                "invalid backend \"srv+_http.api\" (the protocol label \"api\" must start with '_' (e.g. _tcp); expected srv+_service._proto.name, e.g. srv+_http._tcp.api.internal)"
            ),
        ]
    );
    // As `switchyard check` prints it.
    assert_eq!(
        errors(&source)[0].to_string(),
        "test.yaml:7:58: services.api.versions.v1.backends[1]: invalid backend \"api_.internal:99999\" (port \"99999\" is not a number from 1 to 65535; expected host:port, e.g. api.internal:8080)"
    );
}

#[test]
fn a_name_listed_twice_is_refused_whatever_its_case() {
    let e = only_error(
        &MINIMAL.replace(
            "backends: [\"10.0.0.1:8080\"]",
            "backends: [\"api.internal:8080\", \"API.internal:8080\"]",
        ),
        "services.api.versions.v1.backends[1]",
    );
    assert_eq!(
        e.message,
        "backend api.internal:8080 is already listed at [0]"
    );
}

#[test]
fn a_backend_that_is_not_a_string() {
    let e = only_error(
        &MINIMAL.replace("[\"10.0.0.1:8080\"]", "[{ host: api }]"),
        "services.api.versions.v1.backends[0]",
    );
    assert_eq!(
        e.message,
        "expected a backend: IP:port such as 10.0.1.1:8080, host:port such as api.internal:8080, or srv+_service._proto.name such as srv+_http._tcp.api.internal, found a mapping"
    );
}

// ---- resolver ---------------------------------------------------------------------------

fn with_resolver(block: &str) -> String {
    format!("{MINIMAL}resolver:\n{block}")
}

#[test]
fn resolver_defaults_to_the_system_with_1s_to_30s() {
    let r = ok(MINIMAL).resolver;
    assert!(r.nameservers.is_empty());
    assert_eq!(r.min_ttl, Duration::from_secs(1));
    assert_eq!(r.max_ttl, Duration::from_secs(30));
    // An empty block is the defaults too.
    assert_eq!(ok(&format!("{MINIMAL}resolver: {{}}\n")).resolver, r);
}

#[test]
fn resolver_block_as_in_the_spec() {
    let r = ok(&with_resolver(
        "  nameservers: [\"127.0.0.1:5353\", \"[::1]:53\"]\n  min_ttl: 500ms\n  max_ttl: 1m\n",
    ))
    .resolver;
    assert_eq!(
        r.nameservers,
        [
            "127.0.0.1:5353".parse::<std::net::SocketAddr>().unwrap(),
            "[::1]:53".parse().unwrap()
        ]
    );
    assert_eq!(r.min_ttl, Duration::from_millis(500));
    assert_eq!(r.max_ttl, Duration::from_secs(60));
    // Equal bounds: re-resolve at exactly that period.
    let r = ok(&with_resolver("  min_ttl: 5s\n  max_ttl: 5s\n")).resolver;
    assert_eq!(
        (r.min_ttl, r.max_ttl),
        (Duration::from_secs(5), Duration::from_secs(5))
    );
}

#[test]
fn resolver_mistakes() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "  min_ttl: 10s\n  max_ttl: 5s\n",
            "resolver.min_ttl",
            "min_ttl 10s is longer than max_ttl 5s; min_ttl must not be longer than max_ttl",
        ),
        (
            "  min_ttl: 1m\n",
            "resolver.min_ttl",
            "min_ttl 1m is longer than max_ttl 30s (the default); min_ttl must not be longer than max_ttl",
        ),
        (
            "  max_ttl: 500ms\n",
            "resolver.max_ttl",
            "min_ttl 1s (the default) is longer than max_ttl 500ms; min_ttl must not be longer than max_ttl",
        ),
        (
            "  min_ttl: 0s\n",
            "resolver.min_ttl",
            "must be longer than 0 (e.g. 500ms or 5s)",
        ),
        (
            "  max_ttl: 30\n",
            "resolver.max_ttl",
            "duration \"30\" has no unit (use e.g. 500ms, 30s, 5m, 1h)",
        ),
        (
            "  nameservers: []\n",
            "resolver.nameservers",
            "give at least one name server, e.g. [\"10.0.0.2:53\"], or leave nameservers out to use the system's (/etc/resolv.conf)",
        ),
        (
            "  nameservers: [\"ns1.internal:53\"]\n",
            "resolver.nameservers[0]",
            "invalid socket address \"ns1.internal:53\" (expected IP:port, e.g. 10.0.1.1:8080; host names are not resolved, give an IP address)",
        ),
        (
            "  nameservers: [\"10.0.0.2\"]\n",
            "resolver.nameservers[0]",
            "invalid socket address \"10.0.0.2\" (expected IP:port, e.g. 10.0.1.1:8080)",
        ),
        (
            "  nameservers: [\"10.0.0.2:53\", \"10.0.0.2:53\"]\n",
            "resolver.nameservers[1]",
            "name server 10.0.0.2:53 is already listed at [0]",
        ),
        (
            "  timeout: 1s\n",
            "resolver.timeout",
            "unknown field \"timeout\" (expected one of: nameservers, min_ttl, max_ttl)",
        ),
    ];
    for (block, path, message) in cases {
        let e = only_error(&with_resolver(block), path);
        assert_eq!(&e.message, message, "{block}");
        assert_eq!(e.line, 9, "{block}: {e}");
    }
}
