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
