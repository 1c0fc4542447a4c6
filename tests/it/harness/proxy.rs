//! The proxy under test: the real `switchyard serve` process, its config in a temp dir, the
//! addresses it bound read back from it, and its lifecycle (signals, kill -9, restart).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::StatusCode;
use tokio::time::sleep;

use super::*;

/// The real `switchyard serve` process, with its config in a temp dir. Killed on drop; its
/// stderr is printed when the test is failing.
pub struct Proxy {
    child: Child,
    extra_args: Vec<String>,
    /// Environment variables set for the process (e.g. `SWITCHYARD_ADMIN_TOKEN`).
    env: Vec<(String, String)>,
    dir: tempfile::TempDir,
    pub config_path: PathBuf,
    /// The first listener's address as bound (where to send traffic). A config that says
    /// port 0 gets its port from the OS; the harness reads it back from the binary.
    pub listen: SocketAddr,
    /// The admin listener's address as bound.
    pub admin: SocketAddr,
    /// Every listener's `(name, bound address)`, in config order.
    pub listeners: Vec<(String, SocketAddr)>,
    /// What the config file says (port 0 where the OS chooses).
    configured: Configured,
    log_path: PathBuf,
}

impl Proxy {
    /// Writes `yaml` (dedented) to a temp dir, runs `switchyard serve --config`, waits for
    /// `GET /ready` → 200 on the admin address.
    pub async fn start(yaml: &str) -> Proxy {
        Proxy::start_with_args(yaml, &[]).await
    }

    /// The usual test proxy: a `public` listener and the admin API on ports the OS chooses,
    /// and `services` (the YAML under `services:`, indented as you like).
    pub async fn start_services(services: &str) -> Proxy {
        let services: String = dedent(services)
            .lines()
            .map(|l| format!("  {l}\n"))
            .collect();
        Proxy::start(&format!(
            "listeners: [{{ name: public, address: \"127.0.0.1:0\" }}]\n\
             admin: {{ address: \"127.0.0.1:0\" }}\n\
             services:\n{services}"
        ))
        .await
    }

    pub async fn start_with_args(yaml: &str, extra_args: &[&str]) -> Proxy {
        Proxy::start_with_env(yaml, extra_args, &[]).await
    }

    /// Like [`Proxy::start_with_args`], with extra environment variables for the process.
    pub async fn start_with_env(yaml: &str, extra_args: &[&str], env: &[(&str, &str)]) -> Proxy {
        Proxy::spawn(yaml, extra_args, env, false).await
    }

    /// Like [`Proxy::start`], with the config mounted the way the kubelet mounts a ConfigMap
    /// volume: `config/switchyard.yaml -> ..data/switchyard.yaml`, `..data -> ..<version>/`.
    /// [`Proxy::update_configmap`] then updates it the way the kubelet does.
    pub async fn start_configmap(yaml: &str) -> Proxy {
        Proxy::spawn(yaml, &[], &[], true).await
    }

    pub(super) async fn spawn(
        yaml: &str,
        extra_args: &[&str],
        env: &[(&str, &str)],
        configmap: bool,
    ) -> Proxy {
        let yaml = dedent(yaml);
        let configured = addresses_in(&yaml);
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = if configmap {
            let volume = dir.path().join("config");
            std::fs::create_dir(&volume).expect("create the ConfigMap volume");
            configmap_write(&volume, "switchyard.yaml", &yaml);
            volume.join("switchyard.yaml")
        } else {
            let path = dir.path().join("switchyard.yaml");
            std::fs::write(&path, &yaml).expect("write config");
            path
        };
        let log_path = dir.path().join("switchyard.stderr.log");
        let extra_args: Vec<String> = extra_args.iter().map(|a| a.to_string()).collect();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let child = spawn_serve(dir.path(), &config_path, &log_path, &extra_args, &env);
        let unknown = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut proxy = Proxy {
            child,
            extra_args,
            env,
            dir,
            config_path,
            listen: unknown,
            admin: unknown,
            listeners: Vec::new(),
            configured,
            log_path,
        };
        proxy.learn_addresses(0).await;
        proxy
    }

    /// Finds where the process listens, waiting for `/ready` on the way: the admin address
    /// from its startup line (`admin API listening address=…`) in the output written after
    /// `log_from`, the listeners from `GET /api/v1/status`. A fixed port in the config is
    /// taken as it is (so an older binary without those reports still runs, see
    /// [`switchyard_bin`]).
    async fn learn_addresses(&mut self, log_from: usize) {
        self.admin = match self.configured.admin {
            Some(a) if a.port() != 0 => a,
            _ => self.wait_for_admin_line(log_from).await,
        };
        self.wait_ready().await;
        let status = self.status_json().await;
        self.listeners = match status["listeners"].as_array() {
            Some(bound) => bound
                .iter()
                .map(|l| {
                    let name = l["name"].as_str().expect("listener name").to_string();
                    let address = l["address"].as_str().expect("listener address");
                    (name, address.parse().expect("listener address"))
                })
                .collect(),
            None => self.configured.listeners.clone(),
        };
        self.listen = self
            .listeners
            .first()
            .map(|(_, a)| *a)
            .unwrap_or_else(|| panic!("no listener address: {status}"));
    }

    async fn wait_for_admin_line(&mut self, log_from: usize) -> SocketAddr {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let log = self.stderr();
            if let Some(addr) = admin_address_in_log(log.get(log_from..).unwrap_or("")) {
                return addr;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "switchyard exited with {status} before binding the admin API\n--- stderr ---\n{log}"
                );
            }
            if Instant::now() >= deadline {
                panic!("switchyard logged no admin address within {READY_TIMEOUT:?}\n--- stderr ---\n{log}");
            }
            sleep(Duration::from_millis(20)).await;
        }
    }

    /// The bound address of the listener called `name`.
    pub fn listener(&self, name: &str) -> SocketAddr {
        self.listeners
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
            .unwrap_or_else(|| panic!("no listener {name:?} in {:?}", self.listeners))
    }

    /// `kill -9`: no chance to clean up, like a crash.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the binary again on the same config and directory (after [`Proxy::kill9`]).
    /// Ports the config leaves to the OS change: [`Proxy::listen`], [`Proxy::admin`] and
    /// [`Proxy::listeners`] are updated, so read them after this, not before.
    pub async fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let log_from = self.stderr().len();
        if let Ok(yaml) = std::fs::read_to_string(&self.config_path) {
            self.configured = addresses_in(&yaml);
        }
        self.child = spawn_serve(
            self.dir.path(),
            &self.config_path,
            &self.log_path,
            &self.extra_args,
            &self.env,
        );
        self.learn_addresses(log_from).await;
    }

    /// The temp directory holding the config (tests put `state_dir` and files here).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "switchyard exited with {status} before /ready\n--- stderr ---\n{}",
                    self.stderr()
                );
            }
            let last = match get_once(self.admin, "/ready").await {
                Ok(reply) if reply.status == StatusCode::OK => return,
                Ok(reply) => format!("/ready answered {}", reply.status),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                panic!(
                    "switchyard not ready within {READY_TIMEOUT:?} ({last})\n--- stderr ---\n{}",
                    self.stderr()
                );
            }
            sleep(Duration::from_millis(50)).await;
        }
    }

    /// Replaces the config like an editor does: write a temp file next to it, rename over.
    pub fn rewrite_config(&self, yaml: &str) {
        let tmp = self.dir.path().join(".switchyard.yaml.tmp");
        std::fs::write(&tmp, dedent(yaml)).expect("write temp config");
        std::fs::rename(&tmp, &self.config_path).expect("rename config");
    }

    /// Updates a [`Proxy::start_configmap`] config as the kubelet does: the new file in a
    /// fresh directory, `..data` swapped to it by one rename, the old directory removed.
    pub fn update_configmap(&self, yaml: &str) {
        let volume = self.config_path.parent().expect("the ConfigMap volume");
        configmap_write(volume, "switchyard.yaml", &dedent(yaml));
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn sighup(&self) {
        self.signal("HUP");
    }

    pub fn sigterm(&self) {
        self.signal("TERM");
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{sig} {} failed", self.pid());
    }

    /// Waits up to `within` for the process to exit.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
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

    /// Everything the process wrote to stderr/stdout so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// A keep-alive HTTP/1.1 client for the first listener.
    pub fn client(&self) -> Client {
        Client::http1(self.listen)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = self.stderr();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(200)..];
            eprintln!(
                "--- switchyard output ({}), last {} lines ---\n{}\n--- end ---",
                self.config_path.display(),
                tail.len(),
                tail.join("\n")
            );
        }
    }
}

/// The binary under test: the one cargo built, or `SWITCHYARD_BIN` (to check that a test
/// fails on an older build: `SWITCHYARD_BIN=/tmp/old/switchyard cargo test --test it x::`).
pub fn switchyard_bin() -> PathBuf {
    std::env::var_os("SWITCHYARD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_switchyard")))
}

/// The kubelet's atomic update of a ConfigMap volume (its `AtomicWriter`): write the payload
/// into a new `..<timestamp>` directory, point a `..data_tmp` symlink at it and rename that
/// over `..data` (the one atomic step), create the user-visible `name -> ..data/name` link if
/// it is new, then remove the previous directory. The file's own path never changes.
pub fn configmap_write(volume: &Path, name: &str, text: &str) {
    use std::os::unix::fs::symlink;
    static VERSION: AtomicUsize = AtomicUsize::new(0);
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let version = format!(
        "..{}.{}",
        stamp.as_nanos(),
        VERSION.fetch_add(1, Ordering::Relaxed)
    );
    std::fs::create_dir(volume.join(&version)).expect("create the payload directory");
    std::fs::write(volume.join(&version).join(name), text).expect("write the payload");
    let data = volume.join("..data");
    let old = std::fs::read_link(&data).ok();
    let tmp = volume.join("..data_tmp");
    symlink(&version, &tmp).expect("symlink ..data_tmp");
    std::fs::rename(&tmp, &data).expect("rename ..data_tmp over ..data");
    let visible = volume.join(name);
    if std::fs::symlink_metadata(&visible).is_err() {
        symlink(Path::new("..data").join(name), &visible).expect("symlink the file");
    }
    if let Some(old) = old {
        std::fs::remove_dir_all(volume.join(old)).expect("remove the old payload");
    }
}

/// Spawns `switchyard serve --config` with output appended to `log_path`.
fn spawn_serve(
    dir: &Path,
    config_path: &Path,
    log_path: &Path,
    extra_args: &[String],
    env: &[(String, String)],
) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .expect("open log");
    let out = log.try_clone().expect("clone log");
    let mut cmd = Command::new(switchyard_bin());
    cmd.arg("serve")
        .arg("--config")
        .arg(config_path)
        // Two workers unless the test asks for its own count.
        .args(if extra_args.iter().any(|a| a == "--workers") {
            &[][..]
        } else {
            &["--workers", "2"][..]
        })
        .args(extra_args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(log);
    // Plain log lines: the output is printed into test failures.
    cmd.env("NO_COLOR", "1");
    // The harness reads the admin address from the startup line: keep it under any filter.
    match std::env::var("RUST_LOG") {
        Ok(filter) if !filter.is_empty() => {
            cmd.env("RUST_LOG", format!("{filter},switchyard_control::app=info"))
        }
        _ => cmd.env("RUST_LOG", "info"),
    };
    // A token from the developer's shell must not leak into tests that configure none.
    cmd.env_remove("SWITCHYARD_ADMIN_TOKEN");
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    cmd.spawn().expect("spawn switchyard")
}

/// The listener and admin addresses a config file names (port 0 where the OS chooses).
#[derive(Debug, Clone, Default)]
struct Configured {
    listeners: Vec<(String, SocketAddr)>,
    admin: Option<SocketAddr>,
}

/// Finds the listener addresses and the admin address in a config, whether written in
/// block or flow style (`admin: { address: 127.0.0.1:9901 }`). Listener names are not
/// read (the binary reports them): these are only the fallback for an older binary.
fn addresses_in(yaml: &str) -> Configured {
    let mut section = "";
    let mut found = Configured::default();
    for line in yaml.lines() {
        if !line.starts_with([' ', '\t', '#']) && line.contains(':') {
            section = line.split(':').next().unwrap_or("").trim();
        }
        let Some(at) = line.find("address:") else {
            continue;
        };
        let Ok(addr) = address_value(&line[at + "address:".len()..]).parse() else {
            continue;
        };
        match section {
            "listeners" => found.listeners.push((String::new(), addr)),
            "admin" if found.admin.is_none() => found.admin = Some(addr),
            _ => {}
        }
    }
    found
}

/// The address at the start of `text`, without quotes, up to a space, `,` or `}`.
fn address_value(text: &str) -> String {
    text.trim_start()
        .chars()
        .filter(|c| *c != '"' && *c != '\'')
        .take_while(|c| !c.is_whitespace() && *c != ',' && *c != '}')
        .collect()
}

/// The address in the binary's `admin API listening` startup line, text or JSON format.
fn admin_address_in_log(log: &str) -> Option<SocketAddr> {
    let line = log.lines().find(|l| l.contains("admin API listening"))?;
    let at = line
        .find("address=")
        .map(|i| i + "address=".len())
        .or_else(|| line.find("\"address\":").map(|i| i + "\"address\":".len()))?;
    address_value(&line[at..]).parse().ok()
}
