//! `switchyard check`: exit 0 with a summary for a valid file; every error with
//! `file:line:col` and exit 1 otherwise (SPEC §2, §3).

use crate::harness::*;

const VALID: &str = r#"
    listeners:
      - name: public
        address: 127.0.0.1:18080
    admin:
      address: 127.0.0.1:19901
    services:
      api:
        match: { hosts: ["api.example.com"], path_prefix: / }
        versions:
          blue:  { release: v1.0, backends: ["127.0.0.1:9001", "127.0.0.1:9002"], weight: 90 }
          green: { release: v2.0, backends: ["127.0.0.1:9003"], weight: "10%" }
        sticky: { header: x-user-id }
        overrides:
          - { header: x-canary, value: always, version: green }
          - { cookie: canary, value: "1", version: green }
        timeouts: { connect: 1s, request: 30s, idle: 60s }
"#;

/// Three independent mistakes, on lines 13, 16 and 19 of the dedented file.
const THREE_MISTAKES: &str = r#"
    listeners:
      - name: public
        address: 127.0.0.1:18080
    admin:
      address: 127.0.0.1:19901
    services:
      api:
        versions:
          blue:
            release: v1
            backends: ["127.0.0.1:9001"]
            weight: 100
            colour: blue
          green:
            release: v2
            backends: ["10.0.1.1"]
            weight: 0
        overrides:
          - { header: x-canary, value: always, version: purple }
"#;

#[tokio::test]
async fn valid_file_exits_zero_with_a_one_line_summary() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "ok.yaml", VALID);

    let (status, stdout, stderr) = run_cli(&["check", "--config", path.to_str().unwrap()]).await;

    assert_eq!(
        status.code(),
        Some(0),
        "stdout {stdout:?} stderr {stderr:?}"
    );
    assert_eq!(
        stdout.trim().lines().count(),
        1,
        "one-line summary, got {stdout:?}"
    );
}

#[tokio::test]
async fn every_mistake_is_reported_with_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "bad.yaml", THREE_MISTAKES);
    let file = path.to_str().unwrap();

    let (status, stdout, stderr) = run_cli(&["check", "--config", file]).await;
    let output = format!("{stdout}{stderr}");

    assert_eq!(status.code(), Some(1), "output: {output}");
    let line_reporting = |line: usize| -> Option<&str> {
        let prefix = format!("{file}:{line}:");
        output.lines().find(|l| {
            l.find(&prefix).is_some_and(|at| {
                let rest = &l[at + prefix.len()..];
                let col: String = rest.chars().take_while(char::is_ascii_digit).collect();
                !col.is_empty() && col != "0" && rest[col.len()..].starts_with(':')
            })
        })
    };
    let unknown = line_reporting(13).unwrap_or_else(|| {
        panic!("no `{file}:13:<col>:` error for the unknown field in:\n{output}")
    });
    let address = line_reporting(16)
        .unwrap_or_else(|| panic!("no `{file}:16:<col>:` error for the bad address in:\n{output}"));
    let version = line_reporting(19).unwrap_or_else(|| {
        panic!("no `{file}:19:<col>:` error for the unknown version in:\n{output}")
    });
    assert!(unknown.contains("colour"), "{unknown}");
    assert!(
        address.contains("services.api.versions.green.backends[0]"),
        "{address}"
    );
    assert!(version.contains("purple"), "{version}");
}

#[tokio::test]
async fn missing_config_flag_is_a_usage_error() {
    let (status, stdout, stderr) = run_cli(&["check"]).await;

    assert_eq!(
        status.code(),
        Some(2),
        "stdout {stdout:?} stderr {stderr:?}"
    );
}

#[tokio::test]
async fn serve_refuses_an_invalid_file_with_exit_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "bad.yaml", THREE_MISTAKES);

    let (status, stdout, stderr) = run_cli(&["serve", "--config", path.to_str().unwrap()]).await;

    assert_eq!(
        status.code(),
        Some(1),
        "stdout {stdout:?} stderr {stderr:?}"
    );
    assert!(
        format!("{stdout}{stderr}").contains("purple"),
        "the errors are printed: {stderr}"
    );
}

#[tokio::test]
async fn the_file_is_named_by_argument_by_c_or_by_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "ok.yaml", VALID);
    let file = path.to_str().unwrap();

    for args in [
        &["check", file][..],
        &["check", "-c", file][..],
        &["check", "--config", file][..],
    ] {
        let (status, stdout, stderr) = run_cli_env(args, &[]).await;
        assert_eq!(status.code(), Some(0), "{args:?}: {stdout} {stderr}");
        assert!(stdout.contains(": ok ("), "{args:?}: {stdout}");
    }
    // Both at once is a usage error, not a guess.
    let (status, _, stderr) = run_cli_env(&["check", "-c", file, file], &[]).await;
    assert_eq!(status.code(), Some(2), "{stderr}");
}

/// A config that parses, but that `serve` refuses at start: the token file is a directory,
/// two certificate files and the access log's directory do not exist.
fn refused_at_start(dir: &std::path::Path) -> String {
    let d = dir.display();
    std::fs::create_dir_all(dir.join("token-dir")).unwrap();
    format!(
        r#"
        listeners:
          - {{ name: public, address: "127.0.0.1:{listen}" }}
          - name: secure
            address: "127.0.0.1:{tls}"
            tls:
              certificates:
                - {{ cert: {d}/missing-api.pem, key: {d}/missing-api-key.pem }}
                - {{ cert: {d}/missing-www.pem, key: {d}/missing-www-key.pem }}
        admin: {{ address: "127.0.0.1:{admin}", token_file: {d}/token-dir }}
        access_log: {{ path: {d}/no-such-dir/access.log }}
        services:
          api:
            versions:
              blue: {{ release: v1, backends: ["127.0.0.1:9001"] }}
        "#,
        listen = free_port(),
        tls = free_port(),
        admin = free_port(),
    )
}

#[tokio::test]
async fn check_reports_everything_serve_would_refuse_each_with_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "start.yaml", &refused_at_start(dir.path()));
    let file = path.to_str().unwrap();

    let (status, stdout, stderr) = run_cli_env(&["check", file], &[]).await;
    assert_eq!(status.code(), Some(1), "stdout {stdout} stderr {stderr}");
    for named in [
        "admin.token_file",
        "token-dir",
        "missing-api.pem",
        "missing-www.pem",
        "access_log.path",
        "no-such-dir",
    ] {
        assert!(
            stderr.contains(named),
            "check does not name {named}:\n{stderr}"
        );
    }
    assert!(stderr.contains("4 error(s)"), "{stderr}");

    // And serve does refuse it: what check found is what stops serve.
    let (status, _, serve_err) = run_cli_env(&["serve", file], &[]).await;
    assert_eq!(status.code(), Some(1), "{serve_err}");
    let first = serve_err.trim().trim_start_matches("error: ");
    assert!(
        stderr.contains(first),
        "serve stopped on {first:?}, which check did not report:\n{stderr}"
    );
}

#[tokio::test]
async fn check_refuses_a_public_admin_without_a_token_unless_the_environment_has_one() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        r#"
        listeners: [{{ name: public, address: "127.0.0.1:{}" }}]
        admin: {{ address: "0.0.0.0:{}" }}
        services:
          api:
            versions:
              blue: {{ release: v1, backends: ["127.0.0.1:9001"] }}
        "#,
        free_port(),
        free_port()
    );
    let path = write_file(dir.path(), "public.yaml", &yaml);
    let file = path.to_str().unwrap();

    let (status, _, stderr) = run_cli_env(&["check", file], &[]).await;
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no token is configured"), "{stderr}");
    assert!(stderr.contains("SWITCHYARD_ADMIN_TOKEN"), "{stderr}");

    let (status, stdout, stderr) =
        run_cli_env(&["check", file], &[("SWITCHYARD_ADMIN_TOKEN", "s3cret")]).await;
    assert_eq!(status.code(), Some(0), "{stdout} {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weighted_version_without_backends_is_a_warning_and_does_get_503s() {
    let blue = Backend::start("blue-1").await;
    let yaml = format!(
        r#"
        listeners: [{{ name: public, address: "127.0.0.1:0" }}]
        admin: {{ address: "127.0.0.1:0" }}
        services:
          api:
            versions:
              blue:  {{ release: v1, backends: ["{blue}"], weight: 50 }}
              green: {{ release: v2, weight: 50 }}
        "#,
        blue = blue.addr
    );
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "warn.yaml", &yaml);

    let (status, stdout, stderr) = run_cli_env(&["check", path.to_str().unwrap()], &[]).await;
    assert_eq!(
        status.code(),
        Some(0),
        "a warning is not an error: {stderr}"
    );
    assert!(stdout.contains("1 warning(s)"), "{stdout}");
    let warning = stderr
        .lines()
        .find(|l| l.contains("warning:"))
        .unwrap_or_else(|| panic!("no warning in {stderr:?}"));
    assert!(
        warning.contains("services.api.versions.green") && warning.contains("no backends"),
        "{warning}"
    );

    // What the warning says is what happens.
    let proxy = Proxy::start(&yaml).await;
    let mut client = proxy.client();
    let mut unavailable = 0;
    for _ in 0..40 {
        let reply = client.get("/").await.expect("request");
        if reply.status == http::StatusCode::SERVICE_UNAVAILABLE {
            assert!(
                reply.text().contains("no healthy backend"),
                "{}",
                reply.text()
            );
            unavailable += 1;
        }
    }
    assert!(unavailable > 0, "no request reached green's empty version");
}

/// SPEC §14's analysis block on a rollout, with `judge` and `alpha` as given.
fn with_judge(judge: &str, alpha: &str) -> String {
    format!(
        r#"
    listeners:
      - name: public
        address: 127.0.0.1:18080
    services:
      api:
        versions:
          blue:  {{ release: v1.0, backends: ["127.0.0.1:9001"], weight: 100 }}
          green: {{ release: v2.0, backends: ["127.0.0.1:9003"], weight: 0 }}
        rollout:
          stable: blue
          canary: green
          steps: [{{ traffic: 10%, duration: 5m }}, {{ traffic: 100% }}]
          analysis:
            judge: {judge}
            alpha: {alpha}
            interval: 30s
            threshold: 5
            metrics:
              - {{ name: error-rate, threshold: 1 }}
              - {{ name: latency-p99, threshold: 500 }}
"#
    )
}

/// `file:line:col` of the first occurrence of `needle` in the file as written (1-based).
fn position_of(file: &str, written: &str, needle: &str) -> String {
    let (line, text) = written
        .lines()
        .enumerate()
        .find(|(_, l)| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in the file"));
    // The value's column: just after the key.
    let key = needle.split(':').next().unwrap_or(needle);
    let column = text.find(key).unwrap() + key.len() + ": ".len() + 1;
    format!("{file}:{}:{column}:", line + 1)
}

#[tokio::test]
async fn the_sequential_judge_and_its_alpha_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "seq.yaml", &with_judge("sequential", "0.05"));

    let (status, stdout, stderr) = run_cli(&["check", "--config", path.to_str().unwrap()]).await;

    assert_eq!(
        status.code(),
        Some(0),
        "stdout {stdout:?} stderr {stderr:?}"
    );
}

#[tokio::test]
async fn a_bad_judge_or_alpha_is_reported_where_it_is_written() {
    let dir = tempfile::tempdir().unwrap();
    for (judge, alpha, needle, message) in [
        (
            "bayesian",
            "0.01",
            "judge: bayesian",
            "services.api.rollout.analysis.judge: unknown judge \"bayesian\" (expected one of: threshold, sequential)",
        ),
        (
            "sequential",
            "1",
            "alpha: 1",
            "services.api.rollout.analysis.alpha: alpha 1 must be more than 0 and less than 1",
        ),
        (
            "sequential",
            "0",
            "alpha: 0",
            "services.api.rollout.analysis.alpha: alpha 0 must be more than 0 and less than 1",
        ),
    ] {
        let path = write_file(dir.path(), "bad.yaml", &with_judge(judge, alpha));
        let file = path.to_str().unwrap();
        let written = std::fs::read_to_string(&path).unwrap();

        let (status, stdout, stderr) = run_cli(&["check", "--config", file]).await;
        let output = format!("{stdout}{stderr}");

        assert_eq!(status.code(), Some(1), "{judge}/{alpha}: {output}");
        let at = position_of(file, &written, needle);
        let line = output
            .lines()
            .find(|l| l.contains(&at))
            .unwrap_or_else(|| panic!("no `{at}` error in:\n{output}"));
        assert!(line.contains(message), "{line}");
    }
}

/// SPEC §12: `check` validates the syntax of backend names and never looks them up, so a
/// name that no DNS server knows (`.invalid` never resolves, RFC 6761) passes, and a
/// malformed one is refused with the shape it needs.
#[tokio::test]
async fn backend_names_are_checked_for_syntax_only() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_file(
        dir.path(),
        "names.yaml",
        r#"
        listeners:
          - { name: public, address: 127.0.0.1:18080 }
        admin: { address: 127.0.0.1:19901 }
        resolver: { nameservers: ["127.0.0.1:5353"], min_ttl: 1s, max_ttl: 30s }
        services:
          api:
            versions:
              blue:  { release: v1, backends: ["api.does-not-exist.invalid:8080", "127.0.0.1:9001"], weight: 100 }
              green: { release: v2, backends: ["srv+_http._tcp.nowhere.invalid"], weight: 0 }
        "#,
    );
    let (status, stdout, stderr) = run_cli(&["check", "--config", good.to_str().unwrap()]).await;
    assert_eq!(
        status.code(),
        Some(0),
        "stdout {stdout:?} stderr {stderr:?}"
    );

    let bad = write_file(
        dir.path(),
        "bad-name.yaml",
        r#"
        listeners:
          - { name: public, address: 127.0.0.1:18080 }
        services:
          api:
            versions:
              blue: { release: v1, backends: ["api..internal:8080"] }
        "#,
    );
    let file = bad.to_str().unwrap();
    let (status, stdout, stderr) = run_cli(&["check", "--config", file]).await;
    assert_eq!(
        status.code(),
        Some(1),
        "stdout {stdout:?} stderr {stderr:?}"
    );
    let expected = format!(
        "{file}:6:39: services.api.versions.blue.backends[0]: invalid backend \"api..internal:8080\" \
         (empty label in a host name (two dots in a row, or a leading dot); expected host:port, e.g. api.internal:8080)"
    );
    assert!(
        stderr.contains(&expected),
        "expected {expected:?} in {stderr:?}"
    );
}
