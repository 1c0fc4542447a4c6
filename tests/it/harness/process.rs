//! Running the binary's other commands and looking at processes: `switchyard <args>`, `ctl`
//! output, RSS, programs on `PATH`.

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use serde_json::Value;
use tokio::time::timeout;

/// Runs `switchyard <args>` to completion (bounded) and returns (exit status, stdout, stderr).
pub async fn run_cli(args: &[&str]) -> (ExitStatus, String, String) {
    let out = timeout(
        Duration::from_secs(20),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("switchyard {args:?} did not finish within 20s"))
    .expect("run switchyard");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `switchyard <args>` with `env` set and the ctl variables (`SWITCHYARD_ADMIN`,
/// `SWITCHYARD_ADMIN_TOKEN`) otherwise cleared; bounded like [`run_cli`].
pub async fn run_cli_env(args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String, String) {
    let out = timeout(
        Duration::from_secs(40),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(args)
            .env_remove("SWITCHYARD_ADMIN")
            .env_remove("SWITCHYARD_ADMIN_TOKEN")
            .envs(env.iter().copied())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("switchyard {args:?} did not finish within 40s"))
    .expect("run switchyard");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What one `switchyard ctl` run printed, and how it exited.
#[derive(Debug)]
pub struct CtlRun {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CtlRun {
    /// The stdout as JSON (for `-o json`), panicking with both streams if it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("ctl output is not JSON ({e}): {self:?}"))
    }

    /// Asserts exit 0 and returns stdout.
    pub fn ok(&self) -> &str {
        assert_eq!(self.code, Some(0), "ctl failed: {self:?}");
        &self.stdout
    }
}

/// Resident set size of a process in KiB (`VmRSS` in `/proc/PID/status`; Linux only).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

/// The full path of `program` if it is on `PATH` (or in the usual sbin dirs).
pub fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}
