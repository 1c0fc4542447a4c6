//! Tests of [`crate::parse`] as a whole: whole files in, `Config` or every error out.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::*;

/// SPEC §3's example, verbatim.
const SPEC_EXAMPLE: &str = r#"
listeners:
  - name: public
    address: 0.0.0.0:8080            # HTTP/1.1 and HTTP/2 (h2c prior knowledge) on one port
  - name: public-tls
    address: 0.0.0.0:8443
    tls:                             # rustls; HTTP/2 and HTTP/1.1 by ALPN; SNI picks the cert
      certificates:
        - { cert: certs/api.pem, key: certs/api-key.pem }
admin:
  address: 127.0.0.1:9901            # metrics, health, control API, dashboard
  token_file: /etc/switchyard/token  # or env SWITCHYARD_ADMIN_TOKEN; required if address is not loopback
state_dir: /var/lib/switchyard       # revision history and rollout state (see §8)
limits:                              # all optional; defaults shown
  max_header_bytes: 65536            # → 431
  header_read_timeout: 10s           # slowloris
  max_connections: 100000
  max_request_body: null             # bytes; → 413 when set
access_log: { path: stdout, format: json }   # optional; off when absent; never blocks a request
services:
  api:
    match: { hosts: ["api.example.com", "*.api.example.com"], path_prefix: / }
    versions:
      blue:  { release: v1.0, backends: ["10.0.0.1:8080", "10.0.0.2:8080"], weight: 100 }
      green: { release: v2.0, backends: ["10.0.1.1:8080"], weight: 0 }
    sticky: { header: x-user-id }    # or { cookie: session }; absent = random per request
    overrides:                       # feature-flag style forcing, checked before weights
      - { header: x-canary, value: always, version: green }
      - { cookie: canary, value: "1", version: green }
    health_check: { path: /health, interval: 5s, timeout: 1s, unhealthy_threshold: 3, healthy_threshold: 2 }
    timeouts: { connect: 1s, request: 30s, idle: 60s }
    upstream: { protocol: http1 }    # http1 (default) | h2c | h2 (TLS; optional ca: path)
    rollout:                         # optional; see §6
      stable: blue
      canary: green
      steps:                         # runbook-style stages: traffic may be "10%" or 10
        - { traffic: 10%, duration: 5m }
        - { traffic: 50%, duration: 5m }
        - { traffic: 100% }          # last step = promotion
      analysis:                      # Flagger-style block; this exact shape parses as-is
        interval: 30s
        threshold: 5
        min_requests: 50
        fast_fail: { error_rate: 50, min_requests: 20 }   # default; `fast_fail: off` disables
        metrics:
          - { name: error-rate, threshold: 1 }     # percent of requests that failed
          # optional per metric: max_increase: 0.5 — canary minus stable in the same window
          - { name: latency-p99, threshold: 500 }  # milliseconds
      webhooks:
        - { type: gate, url: "http://127.0.0.1:7000/confirm" }    # must answer 2xx to start/advance
        - { type: event, url: "http://127.0.0.1:7000/events" }    # told of every rollout event
"#;

/// The smallest useful file, for tests that add one thing to it.
pub(crate) const MINIMAL: &str = "
listeners:
  - { name: public, address: 127.0.0.1:8080 }
services:
  api:
    versions:
      v1: { release: v1, backends: [\"10.0.0.1:8080\"] }
";

pub(crate) fn ok(source: &str) -> Config {
    match parse(source, "test.yaml") {
        Ok(config) => config,
        Err(errors) => panic!("expected a valid config, got:\n{errors}"),
    }
}

pub(crate) fn errors(source: &str) -> Vec<ConfigError> {
    match parse(source, "test.yaml") {
        Ok(config) => panic!("expected errors, got {config:#?}"),
        Err(ConfigErrors(errors)) => {
            assert!(!errors.is_empty());
            errors
        }
    }
}

/// The only error of `source`, which must be at `path`.
pub(crate) fn only_error(source: &str, path: &str) -> ConfigError {
    let errors = errors(source);
    assert_eq!(errors.len(), 1, "expected one error, got {errors:#?}");
    assert_eq!(errors[0].path, path, "{:#?}", errors[0]);
    errors[0].clone()
}

/// `(line, column, path, message)` of each error, for compact assertions.
pub(crate) fn summary(errors: &[ConfigError]) -> Vec<(usize, usize, &str, &str)> {
    errors
        .iter()
        .map(|e| (e.line, e.column, e.path.as_str(), e.message.as_str()))
        .collect()
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn the_spec_example_parses_fully() {
    let c = ok(SPEC_EXAMPLE);

    assert_eq!(c.listeners.len(), 2);
    assert_eq!(c.listeners[0].name, "public");
    assert_eq!(c.listeners[0].address, addr("0.0.0.0:8080"));
    assert_eq!(c.listeners[0].tls, None);
    let tls = c.listeners[1].tls.as_ref().unwrap();
    assert_eq!(
        tls.certificates,
        vec![CertificatePair {
            cert: "certs/api.pem".into(),
            key: "certs/api-key.pem".into()
        }]
    );

    assert_eq!(c.admin.address, addr("127.0.0.1:9901"));
    assert_eq!(
        c.admin.token_file,
        Some(PathBuf::from("/etc/switchyard/token"))
    );
    assert_eq!(c.state_dir, Some(PathBuf::from("/var/lib/switchyard")));
    assert_eq!(c.limits, Limits::default());
    assert_eq!(
        c.access_log,
        Some(AccessLog {
            path: AccessLogPath::Stdout,
            format: AccessLogFormat::Json
        })
    );

    assert_eq!(c.services.len(), 1);
    let api = c.service("api").unwrap();
    assert_eq!(
        api.matcher,
        Some(Match {
            hosts: vec!["api.example.com".into(), "*.api.example.com".into()],
            path_prefix: "/".into()
        })
    );
    let names: Vec<&str> = api.versions.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["blue", "green"]);
    let blue = api.version("blue").unwrap();
    assert_eq!(blue.release, "v1.0");
    assert_eq!(
        blue.backends,
        vec![
            Backend::Address(addr("10.0.0.1:8080")),
            Backend::Address(addr("10.0.0.2:8080"))
        ]
    );
    assert_eq!(blue.weight, 100);
    let green = api.version("green").unwrap();
    assert_eq!(green.release, "v2.0");
    assert_eq!(green.weight, 0);

    assert_eq!(api.sticky, Some(Sticky::Header("x-user-id".into())));
    assert_eq!(
        api.overrides,
        vec![
            Override {
                when: OverrideMatch::Header {
                    name: "x-canary".into(),
                    value: "always".into()
                },
                version: "green".into()
            },
            Override {
                when: OverrideMatch::Cookie {
                    name: "canary".into(),
                    value: "1".into()
                },
                version: "green".into()
            },
        ]
    );
    assert_eq!(api.health_check, Some(HealthCheck::default()));
    // The SPEC example's `connect: 1s` is below the 5 s default.
    let timeouts = Timeouts {
        connect: Duration::from_secs(1),
        ..Timeouts::default()
    };
    assert_eq!(api.timeouts, timeouts);
    assert_eq!(api.upstream, Upstream::default());

    let rollout = api.rollout.as_ref().unwrap();
    assert_eq!(rollout.stable, "blue");
    assert_eq!(rollout.canary, "green");
    let five_min = Some(Duration::from_secs(300));
    assert_eq!(
        rollout.steps,
        vec![
            Step {
                traffic: 10,
                mirror: None,
                duration: five_min
            },
            Step {
                traffic: 50,
                mirror: None,
                duration: five_min
            },
            Step {
                traffic: 100,
                mirror: None,
                duration: None
            },
        ]
    );
    let analysis = &rollout.analysis;
    // The Flagger-style block means what it meant before `judge:` existed.
    assert_eq!(analysis.judge, JudgeKind::Threshold);
    assert_eq!(analysis.alpha, 0.01);
    assert_eq!(analysis.interval, Duration::from_secs(30));
    assert_eq!(analysis.threshold, 5);
    assert_eq!(analysis.min_requests, 50);
    assert_eq!(
        analysis.fast_fail,
        Some(FastFail {
            error_rate: 50.0,
            min_requests: 20
        })
    );
    assert_eq!(
        analysis.metrics,
        vec![
            MetricCheck {
                metric: MetricName::ErrorRate,
                threshold: 1.0,
                max_increase: None
            },
            MetricCheck {
                metric: MetricName::LatencyP99,
                threshold: 500.0,
                max_increase: None
            },
        ]
    );
    assert_eq!(
        rollout.webhooks,
        vec![
            Webhook {
                kind: WebhookKind::Gate,
                url: "http://127.0.0.1:7000/confirm".into(),
                timeout: Duration::from_secs(5)
            },
            Webhook {
                kind: WebhookKind::Event,
                url: "http://127.0.0.1:7000/events".into(),
                timeout: Duration::from_secs(5)
            },
        ]
    );
}

#[test]
fn defaults_fill_what_the_file_leaves_out() {
    let c = ok(MINIMAL);
    assert_eq!(c.admin, Admin::default());
    assert_eq!(c.state_dir, None);
    assert_eq!(c.limits, Limits::default());
    assert_eq!(c.access_log, None);
    let api = &c.services[0];
    assert_eq!(api.matcher, None);
    assert_eq!(
        api.versions[0].weight, 100,
        "a lone version takes all traffic"
    );
    assert_eq!(api.sticky, None);
    assert!(api.overrides.is_empty());
    assert_eq!(api.health_check, None);
    assert_eq!(api.timeouts, Timeouts::default());
    assert_eq!(api.upstream, Upstream::default());
    assert_eq!(api.rollout, None);
}

#[test]
fn json_is_accepted() {
    let json = r#"{
  "listeners": [{"name": "public", "address": "127.0.0.1:8080"}],
  "admin": {"address": "127.0.0.1:9999"},
  "limits": {"max_request_body": 1048576, "header_read_timeout": "5s"},
  "services": {
    "api": {
      "match": {"hosts": ["API.Example.com"], "path_prefix": "/api"},
      "versions": {
        "blue": {"release": "1.0", "backends": ["10.0.0.1:8080"], "weight": 90},
        "green": {"release": "2.0", "backends": ["10.0.1.1:8080"], "weight": "10%"}
      },
      "rollout": {"stable": "blue", "canary": "green", "steps": [{"traffic": 100}],
                  "analysis": {"fast_fail": false}}
    }
  }
}"#;
    let c = ok(json);
    assert_eq!(c.admin.address, addr("127.0.0.1:9999"));
    assert_eq!(c.limits.max_request_body, Some(1_048_576));
    assert_eq!(c.limits.header_read_timeout, Duration::from_secs(5));
    let api = &c.services[0];
    assert_eq!(api.matcher.as_ref().unwrap().hosts, ["api.example.com"]);
    assert_eq!(api.matcher.as_ref().unwrap().path_prefix, "/api");
    assert_eq!(api.versions[1].weight, 10);
    let rollout = api.rollout.as_ref().unwrap();
    assert_eq!(rollout.analysis.fast_fail, None);
    assert!(rollout.analysis.metrics.is_empty());

    let errors = errors(r#"{"listeners": [], "services": {}, "extra": 1}"#);
    assert_eq!(
        summary(&errors),
        [
            (
                1,
                15,
                "listeners",
                "at least one listener is needed, e.g. - { name: public, address: 0.0.0.0:8080 }"
            ),
            (
                1,
                35,
                "extra",
                "unknown field \"extra\" (expected one of: listeners, admin, state_dir, limits, access_log, cluster, resolver, services)"
            ),
        ]
    );
}

#[test]
fn releases_keep_their_source_text() {
    let c = ok(&MINIMAL.replace("release: v1", "release: 1.10"));
    assert_eq!(c.services[0].versions[0].release, "1.10");
    let c = ok(&MINIMAL.replace("release: v1", "release: 2"));
    assert_eq!(c.services[0].versions[0].release, "2");
    let c = ok(&MINIMAL.replace("release: v1", "release: \"3.0\""));
    assert_eq!(c.services[0].versions[0].release, "3.0");
}

#[test]
fn several_mistakes_are_all_reported_with_positions() {
    let source = "\
listeners:
  - name: public
    address: 10.0.0.1
  - name: public
    address: 0.0.0.0:8081
services:
  api:
    versions:
      blue: { release: v1, backends: [\"10.0.0.1:8080\"], weight: 100 }
      green:
        release: v2
        backends: [\"10.0.1.1\"]
        wieght: 0
    timeouts: { connect: 5 min }
    rollout:
      stable: blue
      canary: greem
      steps:
        - { traffic: 10% }
        - { traffic: 100% }
";
    let errors = errors(source);
    assert_eq!(
        summary(&errors),
        [
            (
                3,
                14,
                "listeners[0].address",
                "invalid socket address \"10.0.0.1\" (expected IP:port, e.g. 10.0.1.1:8080)"
            ),
            (
                4,
                11,
                "listeners[1].name",
                "listener name \"public\" is already used by listeners[0]"
            ),
            (
                11,
                9,
                "services.api.versions.green",
                "missing required field \"weight\" (with several versions each one needs a weight, e.g. weight: 100 or weight: 0)"
            ),
            (
                12,
                20,
                "services.api.versions.green.backends[0]",
                "invalid backend \"10.0.1.1\" (no port; expected IP:port, e.g. 10.0.1.1:8080 or [::1]:8080)"
            ),
            (
                13,
                9,
                "services.api.versions.green.wieght",
                "unknown field \"wieght\" (expected one of: release, backends, weight)"
            ),
            (
                14,
                26,
                "services.api.timeouts.connect",
                "duration \"5 min\" not understood (use e.g. 500ms, 30s, 5m, 1h)"
            ),
            (
                17,
                15,
                "services.api.rollout.canary",
                "unknown version \"greem\" (this service's versions are: blue, green)"
            ),
            (
                19,
                11,
                "services.api.rollout.steps[0]",
                "missing required field \"duration\" (every step but the last holds its traffic for a while, e.g. duration: 5m)"
            ),
        ]
    );
    // Display is what `switchyard check` prints.
    assert_eq!(
        errors[0].to_string(),
        "test.yaml:3:14: listeners[0].address: invalid socket address \"10.0.0.1\" (expected IP:port, e.g. 10.0.1.1:8080)"
    );
}

#[test]
fn a_yaml_syntax_error_is_one_error_with_its_position() {
    let errors = errors("listeners:\n  - name: [public\nservices: {}\n");
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!((errors[0].line, errors[0].path.as_str()), (3, ""));
    assert!(errors[0].message.starts_with("YAML syntax error"));

    // Duplicate keys are refused by the YAML loader, at the repeated key.
    let e = only_error("listeners: []\nservices: {}\nservices: {}\n", "");
    assert_eq!((e.line, e.column), (3, 1));
    assert_eq!(e.message, "YAML syntax error: duplicated key in mapping");
}

#[test]
fn empty_and_multi_document_files_are_refused() {
    let e = errors("");
    assert!(e[0].message.contains("empty"), "{e:#?}");
    let e = errors("# only a comment\n");
    assert!(e[0].message.contains("empty"), "{e:#?}");
    let e = errors(&format!("{MINIMAL}---\nmore: 1\n"));
    assert!(e[0].message.contains("one YAML document"), "{e:#?}");
    let e = only_error("- 1\n", "");
    assert_eq!(e.message, "expected a mapping, found a list");
}

#[test]
fn unknown_fields_are_errors_everywhere() {
    let cases = [
        ("127.0.0.1:8080 }", "127.0.0.1:8080, port: 1 }", "listeners[0].port"),
        ("services:", "admin: { adress: 127.0.0.1:1 }\nservices:", "admin.adress"),
        ("services:", "limits: { max_body: 1 }\nservices:", "limits.max_body"),
        ("services:", "servises: {}\nservices:", "servises"),
        ("    versions:", "    matches: {}\n    versions:", "services.api.matches"),
        ("release: v1,", "release: v1, wieght: 1,", "services.api.versions.v1.wieght"),
        (
            "    versions:",
            "    health_check: { intervall: 5s }\n    versions:",
            "services.api.health_check.intervall",
        ),
        (
            "      v1: { release: v1, backends: [\"10.0.0.1:8080\"] }",
            "      v1: { release: v1, weight: 100 }\n      v2: { release: v2, weight: 0 }\n    rollout:\n      stable: v1\n      canary: v2\n      steps: [{ traffic: 100 }]\n      analysis: { metrics: [{ name: error-rate, threshold: 1, trheshold: 2 }] }",
            "services.api.rollout.analysis.metrics[0].trheshold",
        ),
    ];
    for (find, replace, path) in cases {
        let source = MINIMAL.replace(find, replace);
        let e = only_error(&source, path);
        assert!(e.message.starts_with("unknown field"), "{e}");
    }
    let e = only_error(
        &MINIMAL.replace("release: v1,", "release: v1, wieght: 1,"),
        "services.api.versions.v1.wieght",
    );
    assert_eq!(
        e.message,
        "unknown field \"wieght\" (expected one of: release, backends, weight)"
    );
    assert_eq!((e.line, e.column), (7, 26), "points at the key");
}

#[test]
fn wrong_types_are_errors() {
    let e = only_error(
        &MINIMAL.replace("services:", "limits: [1]\nservices:"),
        "limits",
    );
    assert_eq!(e.message, "expected a mapping, found a list");
    let e = only_error(
        &MINIMAL.replace("backends: [\"10.0.0.1:8080\"]", "backends: 10.0.0.1:8080"),
        "services.api.versions.v1.backends",
    );
    assert_eq!(e.message, "expected a list, found \"10.0.0.1:8080\"");
    let e = only_error(
        &MINIMAL.replace("release: v1", "release: { name: v1 }"),
        "services.api.versions.v1.release",
    );
    assert_eq!(e.message, "expected a non-empty string, found a mapping");
    let e = only_error(
        &MINIMAL.replace("services:", "limits: { max_connections: lots }\nservices:"),
        "limits.max_connections",
    );
    assert_eq!(e.message, "expected a whole number, found \"lots\"");
}

#[test]
fn missing_required_fields_point_at_the_mapping() {
    let e = only_error(
        "listeners:\n  - { name: public }\nservices: {}\n",
        "listeners[0]",
    );
    assert_eq!((e.line, e.column), (2, 5));
    assert_eq!(e.message, "missing required field \"address\"");
    let e = only_error(
        &MINIMAL.replace("release: v1, ", ""),
        "services.api.versions.v1",
    );
    assert_eq!(e.message, "missing required field \"release\"");
    let e = only_error("services: {}\n", "");
    assert_eq!(e.message, "missing required field \"listeners\"");
}

#[test]
fn bad_durations() {
    let with_timeout = |t: &str| {
        MINIMAL.replace(
            "    versions:",
            &format!("    timeouts: {{ idle: {t} }}\n    versions:"),
        )
    };
    let path = "services.api.timeouts.idle";
    assert_eq!(
        only_error(&with_timeout("5 min"), path).message,
        "duration \"5 min\" not understood (use e.g. 500ms, 30s, 5m, 1h)"
    );
    assert_eq!(
        only_error(&with_timeout("30"), path).message,
        "duration \"30\" has no unit (use e.g. 500ms, 30s, 5m, 1h)"
    );
    assert_eq!(
        only_error(&with_timeout("0s"), path).message,
        "must be longer than 0 (e.g. 500ms or 5s)"
    );
    assert_eq!(
        only_error(&with_timeout("[1s]"), path).message,
        "expected a duration such as 30s, found a list"
    );
    let c = ok(&with_timeout("1m30s"));
    assert_eq!(c.services[0].timeouts.idle, Duration::from_secs(90));
}

#[test]
fn weights() {
    let two = |blue: &str, green: &str| {
        MINIMAL.replace(
            "      v1: { release: v1, backends: [\"10.0.0.1:8080\"] }",
            &format!(
                "      blue: {{ release: v1, backends: [\"10.0.0.1:8080\"], weight: {blue} }}\n      green: {{ release: v2, backends: [\"10.0.0.2:8080\"], weight: {green} }}"
            ),
        )
    };
    let c = ok(&two("\"90%\"", "10%"));
    let weights: Vec<u32> = c.services[0].versions.iter().map(|v| v.weight).collect();
    assert_eq!(weights, [90, 10]);
    let c = ok(&two("4294967295", "0"));
    assert_eq!(c.services[0].versions[0].weight, u32::MAX);

    let path = "services.api.versions.green.weight";
    let cases = [
        ("abc%", "invalid weight \"abc%\" (expected a whole number such as 90, or a percentage such as 90%)"),
        ("abc", "invalid weight \"abc\" (expected a whole number such as 90, or a percentage such as 90%)"),
        ("1.5", "invalid weight \"1.5\" (expected a whole number such as 90, or a percentage such as 90%)"),
        ("-1", "invalid weight: -1 is negative (expected a whole number ≥ 0)"),
        ("4294967296", "invalid weight: 4294967296 is too large (at most 4294967295)"),
        ("150%", "weight 150% is more than 100%"),
    ];
    for (weight, message) in cases {
        let e = only_error(&two("100", weight), path);
        assert_eq!(e.message, message, "weight {weight}");
        assert_eq!((e.line, e.column), (8, 66), "weight {weight}");
    }
}

#[test]
fn all_zero_weights_are_refused_unless_nothing_has_backends() {
    let source = MINIMAL.replace(
        "      v1: { release: v1, backends: [\"10.0.0.1:8080\"] }",
        "      blue: { release: v1, backends: [\"10.0.0.1:8080\"], weight: 0 }\n      green: { release: v2, weight: 0 }",
    );
    let e = only_error(&source, "services.api.versions");
    assert_eq!((e.line, e.column), (7, 7), "the first version");
    assert!(e.message.starts_with("every version has weight 0"), "{e}");

    // A service whose versions have no backends yet serves 503 either way; that is allowed.
    let source = source.replace("backends: [\"10.0.0.1:8080\"], ", "");
    ok(&source);
}

#[test]
fn versions_named_in_overrides_and_rollout_must_exist() {
    let source = MINIMAL.replace(
        "    versions:",
        "    overrides:\n      - { header: X-Canary, value: always, version: green }\n    rollout:\n      stable: blue\n      canary: v1\n      steps: [{ traffic: 100 }]\n    versions:",
    );
    let errors = errors(&source);
    assert_eq!(
        summary(&errors),
        [
            (
                7,
                53,
                "services.api.overrides[0].version",
                "unknown version \"green\" (this service's versions are: v1)"
            ),
            (
                9,
                15,
                "services.api.rollout.stable",
                "unknown version \"blue\" (this service's versions are: v1)"
            ),
        ]
    );

    let e = only_error(
        &MINIMAL.replace(
            "    versions:",
            "    rollout: { stable: v1, canary: v1, steps: [{ traffic: 100 }] }\n    versions:",
        ),
        "services.api.rollout.canary",
    );
    assert!(e.message.contains("must be another version"), "{e}");
}

#[test]
fn overrides_and_sticky_keys() {
    let source = MINIMAL.replace(
        "    versions:",
        "    sticky: { header: X-User-ID }\n    overrides:\n      - { header: X-Canary, value: always, version: v1 }\n      - { cookie: Canary, value: \"\", version: v1 }\n    versions:",
    );
    let api = &ok(&source).services[0];
    assert_eq!(api.sticky, Some(Sticky::Header("x-user-id".into())));
    assert_eq!(
        api.overrides[0].when,
        OverrideMatch::Header {
            name: "x-canary".into(),
            value: "always".into()
        }
    );
    assert_eq!(
        api.overrides[1].when,
        OverrideMatch::Cookie {
            name: "Canary".into(),
            value: "".into()
        }
    );

    let e = only_error(
        &MINIMAL.replace(
            "    versions:",
            "    sticky: { header: a, cookie: b }\n    versions:",
        ),
        "services.api.sticky",
    );
    assert_eq!(e.message, "give either header or cookie, not both");
    let e = only_error(
        &MINIMAL.replace("    versions:", "    sticky: {}\n    versions:"),
        "services.api.sticky",
    );
    assert!(e.message.starts_with("missing header or cookie"), "{e}");
    let e = only_error(
        &MINIMAL.replace(
            "    versions:",
            "    sticky: { header: \"x user\" }\n    versions:",
        ),
        "services.api.sticky.header",
    );
    assert!(e.message.starts_with("invalid header name"), "{e}");
}

#[test]
fn listeners_must_be_unique_and_present() {
    let source = "
listeners:
  - { name: a, address: 127.0.0.1:8080 }
  - { name: a, address: 127.0.0.1:8080 }
  - { name: c, address: 0.0.0.0:8080 }
  - { name: d, address: 127.0.0.1:0 }
  - { name: e, address: 127.0.0.1:0 }
services: {}
";
    let errors = errors(source);
    assert_eq!(
        summary(&errors),
        [
            (4, 13, "listeners[1].name", "listener name \"a\" is already used by listeners[0]"),
            (
                4,
                25,
                "listeners[1].address",
                "address 127.0.0.1:8080 collides with listeners[0] (127.0.0.1:8080); each listener needs its own port"
            ),
            (
                5,
                25,
                "listeners[2].address",
                "address 0.0.0.0:8080 collides with listeners[0] (127.0.0.1:8080); each listener needs its own port"
            ),
        ]
    );

    let e = only_error("listeners: []\nservices: {}\n", "listeners");
    assert!(e.message.starts_with("at least one listener"));

    let e = only_error(
        "listeners: [{ name: a, address: 127.0.0.1:9901 }]\nservices: {}\n",
        "listeners[0].address",
    );
    assert!(e.message.contains("admin address"), "{e}");
}

#[test]
fn sockets_on_port_zero_never_collide() {
    // Port 0 asks the OS for a free port each: the listeners and the admin API all get their
    // own (`GET /api/v1/status` reports which), on one address or on every interface.
    let source = "
listeners:
  - { name: a, address: 127.0.0.1:0 }
  - { name: b, address: 127.0.0.1:0 }
  - { name: c, address: 0.0.0.0:0 }
admin: { address: 127.0.0.1:0 }
services: {}
";
    let config = ok(source);
    assert_eq!(config.listeners.len(), 3);
    assert_eq!(config.admin.address.port(), 0);
}

#[test]
fn hosts_and_route_conflicts() {
    let service = |name: &str, matcher: &str| {
        format!(
            "  {name}:\n    {matcher}\n    versions: {{ v1: {{ release: v1, backends: [\"10.0.0.1:8080\"] }} }}\n"
        )
    };
    let file = |services: &[String]| {
        format!(
            "listeners: [{{ name: a, address: 127.0.0.1:8080 }}]\nservices:\n{}",
            services.concat()
        )
    };

    let c = ok(&file(&[
        service("a", "match: { hosts: [\"*.Example.COM\", example.com] }"),
        service("b", "match: { hosts: [example.com], path_prefix: /b }"),
        service("c", "match: { path_prefix: /c }"),
        service("d", "sticky: null"),
    ]));
    assert_eq!(
        c.services[0].matcher.as_ref().unwrap().hosts,
        ["*.example.com", "example.com"]
    );

    let errors = errors(&file(&[
        service("a", "match: { hosts: [api.example.com] }"),
        service(
            "b",
            "match: { hosts: [API.example.com, \"a.*.com\", \"*\", \"api.example.com:80\"] }",
        ),
        service("c", "sticky: null"),
        service("d", "sticky: null"),
    ]));
    assert_eq!(
        summary(&errors),
        [
            (
                7,
                39,
                "services.b.match.hosts[1]",
                "invalid host \"a.*.com\" (a wildcard is only allowed as a leading \"*.\", e.g. *.example.com)"
            ),
            (
                7,
                50,
                "services.b.match.hosts[2]",
                "invalid host \"*\" (a wildcard is only allowed as a leading \"*.\", e.g. *.example.com)"
            ),
            (
                7,
                55,
                "services.b.match.hosts[3]",
                "invalid host \"api.example.com:80\" (hosts are matched without the port; remove \":PORT\")"
            ),
            (
                12,
                3,
                "services.d",
                "service \"c\" has no match either; only one service may omit match (it is the default for unmatched requests), so add match: to one of them"
            ),
        ]
    );

    let e = only_error(
        &file(&[
            service("a", "match: { hosts: [api.example.com] }"),
            service("b", "match: { hosts: [API.example.com] }"),
        ]),
        "services.b.match.hosts[0]",
    );
    assert_eq!(
        e.message,
        "host \"api.example.com\" with path_prefix \"/\" is already routed to service \"a\" (give one of them another host or path_prefix)"
    );

    let e = only_error(
        &file(&[service("a", "match: { path_prefix: api }")]),
        "services.a.match.path_prefix",
    );
    assert_eq!(e.message, "\"api\" must start with \"/\" (e.g. /api)");
}

#[test]
fn rollout_rules() {
    let with_rollout = |rollout: &str| {
        MINIMAL.replace(
            "      v1: { release: v1, backends: [\"10.0.0.1:8080\"] }",
            &format!(
                "      blue: {{ release: v1, backends: [\"10.0.0.1:8080\"], weight: 100 }}\n      green: {{ release: v2, backends: [\"10.0.0.2:8080\"], weight: 0 }}\n    rollout:\n{rollout}"
            ),
        )
    };
    let base = "      stable: blue\n      canary: green\n";

    let c = ok(&with_rollout(&format!(
        "{base}      steps: [{{ traffic: 25, duration: 1m30s }}, {{ traffic: 100 }}]\n      analysis:\n        fast_fail: off\n        metrics: [{{ name: latency-p99, threshold: 250.5, max_increase: 0.5 }}]\n      webhooks: [{{ type: event, url: \"https://hooks.example.com/x\", timeout: 2s }}]\n"
    )));
    let rollout = c.services[0].rollout.as_ref().unwrap();
    assert_eq!(rollout.steps[0].duration, Some(Duration::from_secs(90)));
    assert_eq!(rollout.safety_net, None, "the safety net is off by default");
    assert_eq!(rollout.mirror.max_body, 64 * 1024);

    assert_eq!(rollout.analysis.fast_fail, None);
    assert_eq!(rollout.analysis.interval, Duration::from_secs(30));
    assert_eq!(rollout.analysis.metrics[0].max_increase, Some(0.5));
    assert_eq!(rollout.webhooks[0].timeout, Duration::from_secs(2));

    // SPEC §13's block: the safety net, a mirror step first.
    let c = ok(&with_rollout(&format!(
        "{base}      safety_net: {{ retry_on_stable: true, budget: 30% }}\n      mirror: {{ max_body: 1MiB }}\n      steps: [{{ mirror: 100%, duration: 2m }}, {{ traffic: 10%, duration: 5m }}, {{ traffic: 100% }}]\n"
    )));
    let r = c.services[0].rollout.as_ref().unwrap();
    assert_eq!(r.safety_net, Some(SafetyNet { budget: 30 }));
    assert_eq!(r.mirror.max_body, 1 << 20);
    assert_eq!((r.steps[0].traffic, r.steps[0].mirror), (0, Some(100)));
    assert_eq!((r.steps[1].traffic, r.steps[1].mirror), (10, None));
    let c = ok(&with_rollout(&format!(
        "{base}      safety_net: {{ retry_on_stable: false }}\n      steps: [{{ traffic: 100 }}]\n"
    )));
    assert_eq!(c.services[0].rollout.as_ref().unwrap().safety_net, None);

    let c = ok(&with_rollout(&format!(
        "{base}      steps: [{{ traffic: 100 }}]\n      analysis: {{ fast_fail: {{ min_requests: 5 }} }}\n"
    )));
    assert_eq!(
        c.services[0].rollout.as_ref().unwrap().analysis.fast_fail,
        Some(FastFail {
            error_rate: 50.0,
            min_requests: 5
        })
    );

    // SPEC §14's block: the sequential judge on top of the same ceilings.
    let c = ok(&with_rollout(&format!(
        "{base}      steps: [{{ traffic: 100 }}]\n      analysis:\n        judge: sequential\n        alpha: 0.05\n        interval: 30s\n        threshold: 5\n        metrics:\n          - {{ name: error-rate, threshold: 1 }}\n          - {{ name: latency-p99, threshold: 500 }}\n"
    )));
    let analysis = &c.services[0].rollout.as_ref().unwrap().analysis;
    assert_eq!(analysis.judge, JudgeKind::Sequential);
    assert_eq!(analysis.judge.as_str(), "sequential");
    assert_eq!(analysis.alpha, 0.05);
    assert_eq!(analysis.metrics.len(), 2);
    let c = ok(&with_rollout(&format!(
        "{base}      steps: [{{ traffic: 100 }}]\n      analysis: {{ judge: sequential, alpha: 1e-6 }}\n"
    )));
    assert_eq!(c.services[0].rollout.as_ref().unwrap().analysis.alpha, 1e-6);

    let cases = [
        ("      steps: []\n", "services.api.rollout.steps", "a rollout needs at least one step"),
        ("      steps: [{ traffic: 100 }]\n      analysis: { judge: bayesian }\n", "services.api.rollout.analysis.judge", "unknown judge \"bayesian\" (expected one of: threshold, sequential)"),
        ("      steps: [{ traffic: 100 }]\n      analysis: { alpha: 0 }\n", "services.api.rollout.analysis.alpha", "alpha 0 must be more than 0 and less than 1 (a probability, not a percentage: 0.01 is 1%)"),
        ("      steps: [{ traffic: 100 }]\n      analysis: { alpha: 1 }\n", "services.api.rollout.analysis.alpha", "alpha 1 must be more than 0 and less than 1"),
        ("      steps: [{ traffic: 100 }]\n      analysis: { judge: sequential, alpha: 5 }\n", "services.api.rollout.analysis.alpha", "alpha 5 must be more than 0 and less than 1"),
        ("      steps: [{ traffic: 100 }]\n      analysis: { alpha: -0.01 }\n", "services.api.rollout.analysis.alpha", "-0.01 is negative"),
        ("      steps: [{ traffic: 100 }]\n      analysis: { alpha: 1% }\n", "services.api.rollout.analysis.alpha", "expected a number such as 1 or 0.5, found \"1%\""),
        ("      steps: [{ traffic: 101 }]\n", "services.api.rollout.steps[0].traffic", "invalid traffic: 101 is too large (at most 100)"),
        ("      steps: [{ traffic: 100, duration: 5m }]\n", "services.api.rollout.steps[0].duration", "the last step is the promotion"),
        ("      steps: [{ traffic: 100 }]\n      analysis: { threshold: 0 }\n", "services.api.rollout.analysis.threshold", "must be at least 1"),
        ("      steps: [{ traffic: 100 }]\n      analysis: { interval: 0ms }\n", "services.api.rollout.analysis.interval", "must be longer than 0"),
        ("      steps: [{ traffic: 100 }]\n      analysis: { fast_fail: sometimes }\n", "services.api.rollout.analysis.fast_fail", "expected off or a mapping"),
        ("      steps: [{ traffic: 100 }]\n      analysis: { metrics: [{ name: error-rate, threshold: 1 }, { name: error-rate, threshold: 2 }] }\n", "services.api.rollout.analysis.metrics[1].name", "metric \"error-rate\" is already checked at metrics[0]"),
        ("      steps: [{ traffic: 100 }]\n      analysis: { metrics: [{ name: error-ratio, threshold: 1 }] }\n", "services.api.rollout.analysis.metrics[0].name", "unknown metric \"error-ratio\" (expected one of: error-rate, latency-p99)"),
        ("      steps: [{ traffic: 100 }]\n      analysis: { metrics: [{ name: error-rate, threshold: 150 }] }\n", "services.api.rollout.analysis.metrics[0].threshold", "150 is not a percentage (0 up to 100)"),
        ("      steps: [{ traffic: 100 }]\n      webhooks: [{ type: gate, url: ftp://x }]\n", "services.api.rollout.webhooks[0].url", "invalid webhook url \"ftp://x\""),
        ("      steps: [{ traffic: 100 }]\n      webhooks: [{ type: hook, url: http://x }]\n", "services.api.rollout.webhooks[0].type", "unknown webhook type \"hook\" (expected one of: gate, event)"),
        ("      steps: [{ traffic: 10%, mirror: 50%, duration: 1m }, { traffic: 100 }]\n", "services.api.rollout.steps[0].mirror", "a step is either traffic (users' share) or mirror (copies only), not both"),
        ("      steps: [{ mirror: 100% }]\n", "services.api.rollout.steps[0]", "the last step is the promotion and cannot be a mirror step"),
        ("      steps: [{ traffic: 100 }]\n      safety_net: { retry_on_stable: maybe }\n", "services.api.rollout.safety_net.retry_on_stable", "expected true or false, found \"maybe\""),
        ("      steps: [{ traffic: 100 }]\n      safety_net: { retry_on_stable: true, budget: 0% }\n", "services.api.rollout.safety_net.budget", "a budget of 0% allows only the floor"),
        ("      steps: [{ traffic: 100 }]\n      mirror: { max_body: lots }\n", "services.api.rollout.mirror.max_body", "invalid size \"lots\""),
    ];
    for (steps, path, message) in cases {
        let e = only_error(&with_rollout(&format!("{base}{steps}")), path);
        assert!(e.message.starts_with(message), "{path}: {e}");
    }
}

#[test]
fn service_and_version_names() {
    let e = only_error(&MINIMAL.replace("  api:", "  \"\":"), "services.");
    assert_eq!(e.message, "service name is empty");
    let e = only_error(&MINIMAL.replace("  api:", "  my api:"), "services.my api");
    assert!(e.message.contains("may only contain"), "{e}");
    let e = only_error(
        &MINIMAL.replace("      v1:", "      v/1:"),
        "services.api.versions.v/1",
    );
    assert!(e.message.starts_with("version name"), "{e}");
    let e = only_error(
        &MINIMAL.replace(
            "      v1: { release: v1, backends: [\"10.0.0.1:8080\"] }",
            "      {}",
        ),
        "services.api.versions",
    );
    assert!(
        e.message
            .starts_with("a service needs at least one version"),
        "{e}"
    );
}

#[test]
fn limits_access_log_and_upstream() {
    let c = ok(&MINIMAL.replace(
        "services:",
        "limits: { max_header_bytes: 8192, max_request_body: 10 }\naccess_log: { path: /var/log/sy.log, format: combined }\nservices:",
    ));
    assert_eq!(c.limits.max_header_bytes, 8192);
    assert_eq!(c.limits.max_request_body, Some(10));
    assert_eq!(c.limits.max_connections, 100_000);
    assert_eq!(
        c.access_log,
        Some(AccessLog {
            path: AccessLogPath::File("/var/log/sy.log".into()),
            format: AccessLogFormat::Combined
        })
    );

    let e = only_error(
        &MINIMAL.replace("services:", "access_log: { format: xml }\nservices:"),
        "access_log.format",
    );
    assert_eq!(
        e.message,
        "unknown format \"xml\" (expected one of: json, combined)"
    );

    let c = ok(&MINIMAL.replace(
        "    versions:",
        "    upstream: { protocol: h2, ca: /etc/ca.pem }\n    health_check: { path: /ready }\n    versions:",
    ));
    let api = &c.services[0];
    assert_eq!(api.upstream.protocol, UpstreamProtocol::H2);
    assert_eq!(api.upstream.ca, Some(PathBuf::from("/etc/ca.pem")));
    assert_eq!(api.health_check.as_ref().unwrap().path, "/ready");
    assert_eq!(
        api.health_check.as_ref().unwrap().interval,
        Duration::from_secs(5)
    );

    let e = only_error(
        &MINIMAL.replace(
            "    versions:",
            "    upstream: { ca: /etc/ca.pem }\n    versions:",
        ),
        "services.api.upstream.ca",
    );
    assert!(
        e.message.starts_with("ca is only used with protocol: h2"),
        "{e}"
    );
}

#[test]
fn load_reports_an_unreadable_file() {
    let errors = load(std::path::Path::new("/nonexistent/switchyard.yaml")).unwrap_err();
    assert_eq!(errors.0.len(), 1);
    assert!(errors.0[0]
        .to_string()
        .starts_with("/nonexistent/switchyard.yaml: cannot read config file"));
}

#[test]
fn anchors_work_and_merge_keys_are_explained() {
    let source = MINIMAL.replace(
        "  api:\n",
        "  api:\n    health_check: &hc { path: /healthz }\n",
    ) + "  web:\n    match: { hosts: [web.example.com] }\n    health_check: *hc\n    versions: { v1: { release: v1 } }\n";
    let c = ok(&source);
    assert_eq!(
        c.services[1].health_check.as_ref().unwrap().path,
        "/healthz"
    );

    let e = only_error(
        &MINIMAL.replace(
            "    versions:",
            "    <<: { sticky: { header: x } }\n    versions:",
        ),
        "services.api.<<",
    );
    assert!(
        e.message
            .starts_with("YAML merge keys (<<) are not supported"),
        "{e}"
    );
}

#[test]
fn tags_force_strings_or_are_refused() {
    let c = ok(&MINIMAL.replace("release: v1", "release: !!str 1.0"));
    assert_eq!(c.services[0].versions[0].release, "1.0");
    let e = only_error(
        &MINIMAL.replace("release: v1", "release: !custom v1"),
        "services.api.versions.v1.release",
    );
    assert_eq!(e.message, "YAML tag !custom is not supported (remove it)");
}

#[test]
fn edge_timeouts_and_the_trace_policy_have_defaults_and_clear_errors() {
    let c = ok(MINIMAL);
    assert_eq!(c.limits.client_body_timeout, Duration::from_secs(60));
    assert_eq!(c.limits.trace, TracePolicy::Reject);
    assert_eq!(c.services[0].timeouts.connect, Duration::from_secs(5));

    let c = ok(&MINIMAL.replace(
        "services:",
        "limits: { client_body_timeout: 5s, trace: forward }\nservices:",
    ));
    assert_eq!(c.limits.client_body_timeout, Duration::from_secs(5));
    assert_eq!(c.limits.trace, TracePolicy::Forward);

    let e = only_error(
        &MINIMAL.replace("services:", "limits: { trace: allow }\nservices:"),
        "limits.trace",
    );
    assert_eq!(
        e.message,
        "unknown trace \"allow\" (expected one of: reject, forward)"
    );
    let e = only_error(
        &MINIMAL.replace(
            "services:",
            "limits: { client_body_timeout: 0s }\nservices:",
        ),
        "limits.client_body_timeout",
    );
    assert_eq!(e.message, "must be longer than 0 (e.g. 500ms or 5s)");
}

const FLEET_BASE: &str = "listeners: [{ name: public, address: 127.0.0.1:0 }]\n";

#[test]
fn the_spec_cluster_block_parses_with_defaults() {
    let c = ok(&format!(
        "{FLEET_BASE}cluster:\n  etcd:\n    endpoints: [\"127.0.0.1:2379\", \"etcd-1.etcd:2379\"]\n    prefix: /switchyard/prod\n    dial_timeout: 2s\n  replica: edge-1\n  lease: 5s\n"
    ));
    let cluster = c.cluster.expect("cluster");
    assert_eq!(
        cluster.etcd.endpoints,
        ["127.0.0.1:2379", "etcd-1.etcd:2379"]
    );
    assert_eq!(cluster.etcd.prefix, "/switchyard/prod");
    assert_eq!(cluster.replica.as_deref(), Some("edge-1"));
    assert_eq!(cluster.lease, Duration::from_secs(5));
    let minimal = ok(&format!(
        "{FLEET_BASE}cluster: {{ etcd: {{ endpoints: [\"127.0.0.1:2379\"], prefix: /a }} }}\n"
    ));
    let cluster = minimal.cluster.unwrap();
    assert_eq!(cluster.lease, Cluster::DEFAULT_LEASE);
    assert_eq!(cluster.etcd.dial_timeout, Etcd::DEFAULT_DIAL_TIMEOUT);
    assert_eq!(cluster.replica, None);
    assert!(ok(FLEET_BASE).cluster.is_none(), "no block, no fleet");
}

#[test]
fn cluster_mistakes_are_named_precisely() {
    let cases = [
        (
            "{ etcd: { endpoints: [], prefix: /a } }",
            "cluster.etcd.endpoints",
            "at least one etcd endpoint",
        ),
        (
            "{ etcd: { endpoints: [\"etcd\"], prefix: /a } }",
            "cluster.etcd.endpoints[0]",
            "has no port",
        ),
        (
            "{ etcd: { endpoints: [\"h:0\"], prefix: /a } }",
            "cluster.etcd.endpoints[0]",
            "invalid port",
        ),
        (
            "{ etcd: { endpoints: [\"h:1/x\"], prefix: /a } }",
            "cluster.etcd.endpoints[0]",
            "has a path",
        ),
        (
            "{ etcd: { endpoints: [\"https://h:1\"], prefix: /a } }",
            "cluster.etcd.endpoints[0]",
            "is https but cluster.etcd.tls is not set",
        ),
        (
            "{ etcd: { endpoints: [\"h:1\"], prefix: a } }",
            "cluster.etcd.prefix",
            "must start with /",
        ),
        (
            "{ etcd: { endpoints: [\"h:1\"], prefix: /a/ } }",
            "cluster.etcd.prefix",
            "must not end with /",
        ),
        (
            "{ etcd: { endpoints: [\"h:1\"], prefix: / } }",
            "cluster.etcd.prefix",
            "must name the fleet",
        ),
        (
            "{ etcd: { endpoints: [\"h:1\"] } }",
            "cluster.etcd",
            "missing required field \"prefix\"",
        ),
        (
            "{ etcd: { endpoints: [\"h:1\"], prefix: /a }, lease: 1s }",
            "cluster.lease",
            "at least 2s",
        ),
        (
            "{ etcd: { endpoints: [\"h:1\"], prefix: /a }, lease: 2500ms }",
            "cluster.lease",
            "whole number of seconds",
        ),
        (
            "{ etcd: { endpoints: [\"h:1\"], prefix: /a }, replica: \"edge 1\" }",
            "cluster.replica",
            "may only contain",
        ),
        (
            "{ etcd: { endpoints: [\"h:1\"], prefix: /a, tls: { cert: c.pem } } }",
            "cluster.etcd.tls",
            "cert and key go together",
        ),
        (
            "{ etcd: { endpoints: [\"h:1\"], prefix: /a, auth: { username: u } } }",
            "cluster.etcd.auth",
            "missing required field \"password_file\"",
        ),
        (
            "{ etcd: { endpoints: [\"h:1\"], prefix: /a }, leader: x }",
            "cluster.leader",
            "unknown field \"leader\"",
        ),
        (
            "{ replica: a }",
            "cluster",
            "missing required field \"etcd\"",
        ),
    ];
    for (block, path, message) in cases {
        let e = only_error(&format!("{FLEET_BASE}cluster: {block}\n"), path);
        assert!(e.message.contains(message), "{block}: {}", e.message);
        assert_eq!(e.line, 2, "{block}");
    }
}
