//! The routing decision (host, path, headers, cookies → service and version) never panics and
//! only ever names a service and version that exist, on a table with exact and wildcard
//! hosts, prefixes, a default service, header/cookie overrides and sticky keys.
#![no_main]

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use switchyard_proxy::{phases, RoutingTable, TrafficState};

const CONFIG: &str = r#"
listeners: [{ name: public, address: "127.0.0.1:8080" }]
services:
  api:
    match: { hosts: ["api.example.com", "*.api.example.com"], path_prefix: /v1 }
    versions:
      blue:  { release: v1, backends: ["127.0.0.1:9001"], weight: 90 }
      green: { release: v2, backends: ["127.0.0.1:9002"], weight: 10 }
    sticky: { header: x-user-id }
    overrides:
      - { header: x-canary, value: always, version: green }
      - { cookie: canary, value: "1", version: green }
  web:
    match: { hosts: ["*.example.com"] }
    versions:
      a: { release: a, backends: ["127.0.0.1:9003"], weight: 1 }
      b: { release: b, backends: ["127.0.0.1:9004"], weight: 1 }
    sticky: { cookie: session }
  static:
    match: { path_prefix: /static }
    versions:
      only: { release: s, backends: ["127.0.0.1:9005"], weight: 5 }
  fallback:
    versions:
      x: { release: x, backends: ["127.0.0.1:9006"], weight: 0 }
      y: { release: y, backends: ["127.0.0.1:9007"], weight: 3 }
"#;

fn table() -> &'static RoutingTable {
    static TABLE: OnceLock<RoutingTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        let config = switchyard_config::parse(CONFIG, "fuzz.yaml").expect("fuzz config");
        RoutingTable::compile(&config, &TrafficState::default(), None)
    })
}

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    authority: Option<&'a str>,
    host: Option<&'a [u8]>,
    path: &'a str,
    headers: Vec<(&'a str, &'a [u8])>,
    cookie: Option<&'a [u8]>,
}

fuzz_target!(|input: Input<'_>| {
    let uri = match input.authority {
        Some(a) => format!("http://{a}{}", input.path),
        None => input.path.to_string(),
    };
    let Ok(mut builder) = http::Request::get(uri.as_str()).body(()) else {
        return;
    };
    let headers = builder.headers_mut();
    if let Some(host) = input
        .host
        .and_then(|h| http::HeaderValue::from_bytes(h).ok())
    {
        headers.insert(http::header::HOST, host);
    }
    if let Some(c) = input
        .cookie
        .and_then(|c| http::HeaderValue::from_bytes(c).ok())
    {
        headers.append(http::header::COOKIE, c);
    }
    for (name, value) in input.headers {
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_bytes(value),
        ) {
            headers.append(n, v);
        }
    }
    let table = table();
    if let Some((s, v)) = phases::route(table, &builder) {
        assert!(s < table.services.len());
        let service = &table.services[s];
        assert!(v < service.versions.len());
        // A version with no weight is only reachable through an override.
        if service.versions[v].weight == 0 {
            assert!(
                !service.overrides.is_empty(),
                "{} got weight-0 version",
                service.name
            );
        }
    }
});
