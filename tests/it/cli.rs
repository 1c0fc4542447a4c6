//! The command line itself (SPEC §2): every flag explains itself in `--help`, logs carry no
//! colour codes into files and pipes, and a start-up error is printed once.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;

/// `switchyard <path> --help`, and the subcommands it lists, depth first.
fn help_pages(path: Vec<String>, pages: &mut Vec<(Vec<String>, String)>) {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(&path)
        .arg("--help")
        .env("NO_COLOR", "1")
        .output()
        .expect("run switchyard --help");
    assert!(out.status.success(), "{path:?} --help: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let subcommands: Vec<String> = section(&text, "Commands:")
        .iter()
        .filter_map(|(line, _)| line.split_whitespace().next().map(str::to_string))
        .filter(|name| name != "help")
        .collect();
    pages.push((path.clone(), text));
    for sub in subcommands {
        let mut p = path.clone();
        p.push(sub);
        help_pages(p, pages);
    }
}

/// The entries of one help section: (entry line, its help text or "").
fn section(text: &str, title: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let Some(start) = lines.iter().position(|l| *l == title) else {
        return Vec::new();
    };
    let mut entries = Vec::new();
    let mut i = start + 1;
    while i < lines.len() && !lines[i].is_empty() {
        let line = lines[i];
        // An entry starts at two spaces; deeper lines continue the one above.
        if line.starts_with("  ") && !line.starts_with("   ") {
            let body = line.trim_start();
            let help = match body.split_once("  ") {
                Some((_, help)) => help.trim().to_string(),
                None => lines
                    .get(i + 1)
                    .filter(|l| l.starts_with("   "))
                    .map(|l| l.trim().to_string())
                    .unwrap_or_default(),
            };
            entries.push((body.to_string(), help));
        }
        i += 1;
    }
    entries
}

#[test]
fn every_command_flag_and_argument_has_help_text() {
    let mut pages = Vec::new();
    help_pages(Vec::new(), &mut pages);
    assert!(pages.len() > 10, "walked only {} help pages", pages.len());
    let mut missing = Vec::new();
    for (path, text) in &pages {
        for title in ["Commands:", "Arguments:", "Options:"] {
            for (entry, help) in section(text, title) {
                if help.is_empty() {
                    missing.push(format!("switchyard {} — {entry}", path.join(" ")));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "entries without help text (add a /// doc comment in src/main.rs or src/ctl.rs):\n{}",
        missing.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_have_no_colour_codes_when_stderr_is_not_a_terminal() {
    let backend = Backend::start("blue-1").await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_file(
        dir.path(),
        "switchyard.yaml",
        &format!(
            r#"
            listeners: [{{ name: public, address: "127.0.0.1:0" }}]
            admin: {{ address: "127.0.0.1:0" }}
            services:
              api:
                versions:
                  blue: {{ release: v1, backends: ["{}"] }}
            "#,
            backend.addr
        ),
    );
    let log_path = dir.path().join("stderr.log");
    let log = std::fs::File::create(&log_path).unwrap();
    // As under systemd or `2>file`: stderr is a file, and nobody set NO_COLOR.
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["serve", "-c"])
        .arg(&config)
        .env_remove("NO_COLOR")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn switchyard");
    let deadline = Instant::now() + READY_TIMEOUT;
    let text = loop {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        if text.contains("switchyard is ready") || Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(text.contains("switchyard is ready"), "never ready: {text}");
    assert!(
        !text.contains('\u{1b}'),
        "escape codes in a log file:\n{}",
        text.escape_debug()
    );
}

#[tokio::test]
async fn a_start_up_error_is_printed_once() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.yaml");
    let missing = missing.to_str().unwrap();
    for args in [
        &["serve", missing][..],
        &["serve", "-c", missing][..],
        &["--log-format", "json", "serve", "--config", missing][..],
    ] {
        let (status, stdout, stderr) = run_cli_env(args, &[]).await;
        assert_eq!(status.code(), Some(1), "{args:?}: {stdout} {stderr}");
        let times = stderr.matches("cannot read config file").count();
        assert_eq!(
            times, 1,
            "{args:?} printed the error {times} times:\n{stderr}"
        );
    }
}
