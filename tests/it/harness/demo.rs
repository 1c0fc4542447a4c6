//! The real `switchyard demo` process, for the demo and dashboard tests.
//!
//! Runs the compiled binary on ports chosen with `free_port`, keeps its output in a temp dir
//! (printed when a test fails), and polls its admin API for the rollout's state. Killed on
//! drop; [`Demo::interrupt`] sends SIGINT like Ctrl-C.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::time::sleep;

use crate::harness::{free_port, get_once};

pub struct Demo {
    child: Child,
    _dir: tempfile::TempDir,
    out_path: PathBuf,
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
}

impl Demo {
    /// Starts `switchyard demo --port P --admin-port A [extra]`.
    pub fn start(extra: &[&str]) -> Demo {
        let (port, admin_port) = (free_port(), free_port());
        let dir = tempfile::tempdir().expect("tempdir");
        let out_path = dir.path().join("demo.out");
        let out = std::fs::File::create(&out_path).expect("create demo.out");
        let child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .arg("demo")
            .args([
                "--port",
                &port.to_string(),
                "--admin-port",
                &admin_port.to_string(),
            ])
            .args(extra)
            .current_dir(dir.path())
            // The demo's generated config and state go under the test's temp dir, which is
            // removed even though the process is killed.
            .env("TMPDIR", dir.path())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("clone"))
            .stderr(out)
            .spawn()
            .expect("spawn switchyard demo");
        Demo {
            child,
            _dir: dir,
            out_path,
            proxy: SocketAddr::from(([127, 0, 0, 1], port)),
            admin: SocketAddr::from(([127, 0, 0, 1], admin_port)),
        }
    }

    /// Everything the demo printed so far (stdout and stderr).
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.out_path).unwrap_or_default()
    }

    /// `GET /api/v1/services/shop`, if the admin API answers.
    pub async fn shop(&self) -> Result<Value, String> {
        let reply = get_once(self.admin, "/api/v1/services/shop").await?;
        if reply.status != http::StatusCode::OK {
            return Err(format!("status {}: {}", reply.status, reply.text()));
        }
        serde_json::from_slice(&reply.body).map_err(|e| e.to_string())
    }

    /// Polls the API until the rollout reaches `state`; returns the service document.
    pub async fn wait_for_state(&mut self, state: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the demo exited with {status}:\n{}", self.output());
            }
            let last = match self.shop().await {
                Ok(svc) if svc["rollout"]["state"] == state => return svc,
                Ok(svc) => format!("rollout: {}", svc["rollout"]),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                panic!(
                    "the demo's rollout did not reach {state} within {within:?} ({last})\n--- output ---\n{}",
                    self.output()
                );
            }
            sleep(Duration::from_millis(200)).await;
        }
    }

    /// Polls the demo's output until it contains `text`.
    pub async fn wait_for_output(&self, text: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let out = self.output();
            if out.contains(text) {
                return out;
            }
            if Instant::now() >= deadline {
                panic!("the demo did not print {text:?} within {within:?}\n--- output ---\n{out}");
            }
            sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGINT (Ctrl-C) and the exit status, waiting at most `within`.
    pub async fn interrupt(&mut self, within: Duration) -> Option<ExitStatus> {
        let sent = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -INT failed");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- switchyard demo output ---\n{}\n--- end ---",
                self.output()
            );
        }
    }
}

/// The share of `version` in a service document.
pub fn weight_of(svc: &Value, version: &str) -> f64 {
    svc["versions"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["name"] == version))
        .and_then(|v| v["weight"].as_f64())
        .unwrap_or_else(|| panic!("no weight for {version} in {svc}"))
}
