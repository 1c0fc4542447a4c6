//! The black-box harness: real backends, the real `switchyard` binary, a keep-alive client.
//!
//! Every integration test follows the same shape — start a few [`Backend`]s, write a config
//! that points at them, [`Proxy::start`] the binary on ports chosen with [`free_port`], send
//! traffic with [`Client`] or [`versions_of`], and assert on what the backends saw. Nothing is
//! mocked: the proxy is the compiled binary talking TCP, so these tests check the contract in
//! SPEC.md, not the internals. Every wait is bounded; nothing asserts on a sleep.
#![allow(dead_code)]

pub mod browser;
pub mod demo;
pub mod disk;
pub mod dns;
pub mod etcd;

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::fmt;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue, HOST};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout};

/// Upper bound for one request through the proxy (connect + response + body).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bound for the binary to report `/ready` after spawn.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Upper bound for a config change to show up in behaviour or in `/api/v1/status`.
pub const RELOAD_TIMEOUT: Duration = Duration::from_secs(15);

/// The request body type every helper sends.
pub type Body = BoxBody<Bytes, Infallible>;

// ---------------------------------------------------------------------------------------------
// Ports
// ---------------------------------------------------------------------------------------------

/// A port on 127.0.0.1 that is free now and that nothing else in this process will be given.
///
/// Binding `:0` and dropping the socket is racy twice over: the kernel may hand the same port
/// to the next `bind(:0)` (CI saw the admin API and a listener get one port), or to an outgoing
/// connection, before the proxy binds it. So ports come from below the kernel's ephemeral
/// range, which neither `bind(:0)` nor `connect` ever uses, walked by a process-wide counter
/// that never repeats, from a start spread by pid so two test processes take different ports.
pub fn free_port() -> u16 {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let (low, high) = unassigned_port_range();
    let span = high - low;
    let start = (std::process::id() as usize).wrapping_mul(7919) % span;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(
            n < span,
            "free_port: every port in {low}..{high} was handed out once"
        );
        let port = (low + (start + n) % span) as u16;
        if StdTcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Ports the kernel never assigns on its own: from 10,000 up to its ephemeral range's start.
fn unassigned_port_range() -> (usize, usize) {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<usize>().ok())
        .unwrap_or(32_768);
    if ephemeral_low >= 12_000 {
        (10_000, ephemeral_low)
    } else {
        // An unusual kernel setting: use the range above the ephemeral ones' default end.
        (61_000, 65_535)
    }
}

/// An address with nothing listening: connecting to it is refused.
pub fn refusing_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

// ---------------------------------------------------------------------------------------------
// Backends
// ---------------------------------------------------------------------------------------------

/// A real upstream: answers every request 200 with `x-backend: <name>` and a JSON echo of the
/// method, path, headers and the body's length and FNV-1a hash.
///
/// A request with `x-response-bytes: N` is instead answered with N bytes of a fixed pattern
/// (and `x-body-hash`), to check downloads stream intact.
pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    fail_per_mille: Arc<AtomicUsize>,
    accept_loop: JoinHandle<()>,
}

struct BackendState {
    name: String,
    delay: Duration,
    hits: Arc<AtomicUsize>,
    /// Share of (non-health-check) requests answered 500, in thousandths, spread evenly.
    fail_per_mille: Arc<AtomicUsize>,
}

impl Backend {
    /// A backend that answers at once.
    pub async fn start(name: &str) -> Backend {
        Backend::start_with_delay(name, Duration::ZERO).await
    }

    /// A backend that waits `delay` before answering (the request still counts on arrival).
    pub async fn start_with_delay(name: &str, delay: Duration) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        Backend::serve(name, listener, delay, Duration::ZERO)
    }

    /// A backend listening on `addr` (e.g. `127.0.0.3:PORT`, for a name resolving there).
    pub async fn start_at(name: &str, addr: SocketAddr) -> std::io::Result<Backend> {
        let listener = TcpListener::bind(addr).await?;
        Ok(Backend::serve(
            name,
            listener,
            Duration::ZERO,
            Duration::ZERO,
        ))
    }

    /// A backend that is slow to accept: its kernel accept queue holds only `backlog`
    /// connections and it takes one every `accept_every`, so a burst of connects overflows
    /// the queue and the kernel drops SYNs (the client retransmits a second later).
    pub async fn start_slow_accepting(name: &str, backlog: u32, accept_every: Duration) -> Backend {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind("127.0.0.1:0".parse().expect("addr"))
            .expect("bind backend");
        let listener = socket.listen(backlog).expect("listen");
        Backend::serve(name, listener, Duration::ZERO, accept_every)
    }

    fn serve(
        name: &str,
        listener: TcpListener,
        delay: Duration,
        accept_every: Duration,
    ) -> Backend {
        let addr = listener.local_addr().expect("backend addr");
        let hits = Arc::new(AtomicUsize::new(0));
        let fail_per_mille = Arc::new(AtomicUsize::new(0));
        let state = Arc::new(BackendState {
            name: name.to_string(),
            delay,
            hits: hits.clone(),
            fail_per_mille: fail_per_mille.clone(),
        });
        let accept_loop = tokio::spawn(async move {
            loop {
                if !accept_every.is_zero() {
                    sleep(accept_every).await;
                }
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let state = state.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(state.answer(req).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Backend {
            name: name.to_string(),
            addr,
            hits,
            fail_per_mille,
            accept_loop,
        }
    }

    /// A backend that answers `per_mille`/1000 of its requests (evenly spread) with 500.
    pub async fn start_failing(name: &str, per_mille: usize) -> Backend {
        let backend = Backend::start(name).await;
        backend.set_failure_rate(per_mille);
        backend
    }

    /// Changes the share of requests answered 500 (thousandths); health checks stay 200.
    pub fn set_failure_rate(&self, per_mille: usize) {
        self.fail_per_mille.store(per_mille, Ordering::SeqCst);
    }

    /// Requests received so far, not counting health checks (`GET /health`).
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

impl BackendState {
    async fn answer(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        let mut fail = false;
        if req.uri().path() != "/health" {
            let n = self.hits.fetch_add(1, Ordering::SeqCst);
            let p = self.fail_per_mille.load(Ordering::SeqCst);
            // Request n fails when the running count of failures due steps up: evenly spread.
            fail = (n + 1) * p / 1000 > n * p / 1000;
        }
        if !self.delay.is_zero() {
            sleep(self.delay).await;
        }
        if fail {
            return Response::builder()
                .status(StatusCode::INTERNAL_SERVER_ERROR)
                .header("x-backend", &self.name)
                .body(Full::new(Bytes::from_static(b"injected failure")))
                .expect("response");
        }
        let method = req.method().to_string();
        let version = format!("{:?}", req.version());
        let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, value) in req.headers() {
            headers
                .entry(name.as_str().to_string())
                .or_default()
                .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
        }
        let response_bytes: Option<usize> = req
            .headers()
            .get("x-response-bytes")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let (len, hash) = match req.into_body().collect().await {
            Ok(body) => {
                let body = body.to_bytes();
                (body.len(), fnv1a(&body))
            }
            Err(e) => {
                return Response::builder()
                    .status(StatusCode::BAD_REQUEST)
                    .header("x-backend", &self.name)
                    .body(Full::new(Bytes::from(format!("body error: {e}"))))
                    .expect("response");
            }
        };
        let builder = Response::builder()
            .status(StatusCode::OK)
            .header("x-backend", &self.name);
        if let Some(n) = response_bytes {
            let body = pattern_bytes(n);
            return builder
                .header("content-type", "application/octet-stream")
                .header("x-body-hash", fnv1a(&body).to_string())
                .body(Full::new(body))
                .expect("response");
        }
        let echo = json!({
            "backend": self.name,
            "method": method,
            "path": path,
            "http_version": version,
            "headers": headers,
            "body_len": len,
            "body_fnv1a": hash.to_string(),
        });
        builder
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(echo.to_string())))
            .expect("response")
    }
}

/// FNV-1a, 64 bit: a dependency-free checksum for "the bytes arrived intact".
pub fn fnv1a(data: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// `n` bytes of a non-repeating-looking pattern (so truncation or reordering changes the hash).
pub fn pattern_bytes(n: usize) -> Bytes {
    let mut x: u32 = 0x1234_5678;
    let v: Vec<u8> = (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x & 0xff) as u8
        })
        .collect();
    Bytes::from(v)
}

// ---------------------------------------------------------------------------------------------
// The proxy under test
// ---------------------------------------------------------------------------------------------

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

    async fn spawn(
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

    /// A request to the admin listener with an optional JSON body and bearer token.
    pub async fn admin_send(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let body = body.map(|b| full(b.to_string())).unwrap_or_else(empty);
        let req = req.body(body).expect("request");
        Client::http1(self.admin)
            .send(req)
            .await
            .unwrap_or_else(|e| panic!("admin {method} {path}: {e}"))
    }

    /// `GET /api/v1{path}` → JSON, asserting 200.
    pub async fn api(&self, path: &str) -> Value {
        let reply = self.admin_get(&format!("/api/v1{path}")).await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "GET /api/v1{path}: {}",
            reply.text()
        );
        serde_json::from_slice(&reply.body)
            .unwrap_or_else(|e| panic!("GET /api/v1{path} is not JSON ({e}): {}", reply.text()))
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

    /// `GET path` on the admin listener, on a fresh connection.
    pub async fn admin_get(&self, path: &str) -> Reply {
        get_once(self.admin, path)
            .await
            .unwrap_or_else(|e| panic!("admin GET {path}: {e}"))
    }

    /// `GET /api/v1/status` parsed as JSON.
    pub async fn status_json(&self) -> Value {
        let reply = self.admin_get("/api/v1/status").await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "/api/v1/status: {}",
            reply.text()
        );
        serde_json::from_slice(&reply.body)
            .unwrap_or_else(|e| panic!("/api/v1/status is not JSON ({e}): {}", reply.text()))
    }

    /// `(reloads.ok, reloads.error)` from the status API.
    pub async fn reload_counts(&self) -> (u64, u64) {
        let status = self.status_json().await;
        let ok = status["reloads"]["ok"].as_u64();
        let err = status["reloads"]["error"].as_u64();
        match (ok, err) {
            (Some(ok), Some(err)) => (ok, err),
            _ => panic!("status has no numeric reloads.ok/error: {status}"),
        }
    }

    /// The sum of a metric's samples whose labels include all of `labels`.
    pub async fn metric_sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let text = self.admin_get("/metrics").await.text();
        parse_metrics(&text)
            .iter()
            .filter(|s| s.name == name && labels.iter().all(|(k, v)| s.label(k) == *v))
            .map(|s| s.value)
            .sum()
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

impl Proxy {
    /// `switchyard ctl --admin http://<admin> <args>` with only `env` in its environment's
    /// ctl variables.
    pub async fn ctl_env(&self, args: &[&str], env: &[(&str, &str)]) -> CtlRun {
        let admin = format!("http://{}", self.admin);
        let mut all = vec!["ctl", "--admin", admin.as_str()];
        all.extend_from_slice(args);
        let (status, stdout, stderr) = run_cli_env(&all, env).await;
        CtlRun {
            code: status.code(),
            stdout,
            stderr,
        }
    }

    /// `switchyard ctl --admin http://<admin> <args>`, no token.
    pub async fn ctl(&self, args: &[&str]) -> CtlRun {
        self.ctl_env(args, &[]).await
    }

    /// A request to the admin listener with a raw body (for malformed JSON and the like).
    pub async fn admin_send_raw(
        &self,
        method: &str,
        path: &str,
        body: impl Into<Bytes>,
        token: Option<&str>,
    ) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = req.body(full(body)).expect("request");
        Client::http1(self.admin)
            .send(req)
            .await
            .unwrap_or_else(|e| panic!("admin {method} {path}: {e}"))
    }

    /// `PUT`/`POST` to `/api/v1{path}` with a JSON body and optional token → (status, JSON).
    pub async fn api_send(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> (StatusCode, Value) {
        let reply = self
            .admin_send(method, &format!("/api/v1{path}"), body, token)
            .await;
        let doc = serde_json::from_slice(&reply.body).unwrap_or_else(|e| {
            panic!(
                "{method} /api/v1{path} answered {} with non-JSON ({e}): {}",
                reply.status,
                reply.text()
            )
        });
        (reply.status, doc)
    }
}

/// Strips the common leading indentation so tests can indent YAML with the code.
pub fn dedent(text: &str) -> String {
    let indent = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    let mut out: String = text
        .lines()
        .map(|l| if l.len() >= indent { &l[indent..] } else { "" })
        .collect::<Vec<_>>()
        .join("\n");
    out.push('\n');
    out.trim_start_matches('\n').to_string()
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

// ---------------------------------------------------------------------------------------------
// Requests and replies
// ---------------------------------------------------------------------------------------------

pub fn empty() -> Body {
    Full::new(Bytes::new()).boxed()
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

/// A body sent with `Transfer-Encoding: chunked` (no length known up front), in `chunk`-sized
/// frames.
pub fn chunked(data: Bytes, chunk: usize) -> Body {
    let mut frames = VecDeque::new();
    let mut rest = data;
    while !rest.is_empty() {
        let n = chunk.min(rest.len());
        frames.push_back(rest.split_to(n));
    }
    Chunks(frames).boxed()
}

struct Chunks(VecDeque<Bytes>);

impl hyper::body::Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }
}

/// A request body fed piece by piece through the returned sender; it ends when the sender
/// is dropped.
pub fn body_channel() -> (tokio::sync::mpsc::Sender<Bytes>, Body) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    let frames = futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    });
    (tx, http_body_util::StreamBody::new(frames).boxed())
}

/// `GET path` with no extra headers.
pub fn get(path: &str) -> Request<Body> {
    get_with(path, &[])
}

/// `GET path` with extra headers (a `host` header here sets the Host).
pub fn get_with(path: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut builder = Request::get(path);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(empty()).expect("request")
}

/// A complete response, body read.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// The `x-backend` header: which backend answered (`blue-1`), if any did.
    pub fn backend(&self) -> Option<String> {
        self.headers
            .get("x-backend")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }

    /// The version whose backend answered: `blue-1` → `blue`.
    pub fn version(&self) -> Option<String> {
        self.backend().map(|b| version_of(&b).to_string())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The backend's JSON echo of the request it received.
    pub fn echo(&self) -> Echo {
        Echo(serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not a backend echo ({e}): status {} body {:?}",
                self.status,
                self.text()
            )
        }))
    }
}

/// What a backend saw: method, path, headers, body length/hash.
pub struct Echo(pub Value);

impl Echo {
    /// All values of a request header as the backend received them, joined with ", ".
    pub fn header(&self, name: &str) -> Option<String> {
        let values = self.0["headers"][name.to_ascii_lowercase()].as_array()?;
        Some(
            values
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", "),
        )
    }

    pub fn header_names(&self) -> Vec<String> {
        self.0["headers"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    pub fn path(&self) -> String {
        self.0["path"].as_str().unwrap_or_default().to_string()
    }

    pub fn method(&self) -> String {
        self.0["method"].as_str().unwrap_or_default().to_string()
    }

    pub fn body_len(&self) -> u64 {
        self.0["body_len"].as_u64().expect("body_len")
    }

    pub fn body_hash(&self) -> u64 {
        self.0["body_fnv1a"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("body_fnv1a")
    }
}

/// `blue-1` → `blue`; a name without a dash is its own version.
pub fn version_of(backend: &str) -> &str {
    backend.split('-').next().unwrap_or(backend)
}

enum Sender {
    H1(http1::SendRequest<Body>),
    H2(http2::SendRequest<Body>),
}

/// One client connection that is kept alive across requests and reopened when the server
/// closes it. HTTP/1.1 by default; [`Client::h2c`] speaks prior-knowledge HTTP/2.
pub struct Client {
    addr: SocketAddr,
    h2: bool,
    sender: Option<Sender>,
    /// How many TCP connections this client has opened.
    pub connects: usize,
}

impl Client {
    pub fn http1(addr: SocketAddr) -> Client {
        Client {
            addr,
            h2: false,
            sender: None,
            connects: 0,
        }
    }

    pub fn h2c(addr: SocketAddr) -> Client {
        Client {
            addr,
            h2: true,
            sender: None,
            connects: 0,
        }
    }

    async fn connect(&mut self) -> Result<Sender, String> {
        let stream = timeout(Duration::from_secs(5), TcpStream::connect(self.addr))
            .await
            .map_err(|_| format!("connect to {} timed out", self.addr))?
            .map_err(|e| format!("connect to {}: {e}", self.addr))?;
        let _ = stream.set_nodelay(true);
        self.connects += 1;
        let io = TokioIo::new(stream);
        if self.h2 {
            let (sender, conn) = http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| format!("h2 handshake: {e}"))?;
            tokio::spawn(conn);
            Ok(Sender::H2(sender))
        } else {
            let (sender, conn) = http1::handshake(io)
                .await
                .map_err(|e| format!("h1 handshake: {e}"))?;
            tokio::spawn(conn);
            Ok(Sender::H1(sender))
        }
    }

    /// Sends one request (bounded by [`REQUEST_TIMEOUT`]) and reads the whole response.
    /// A `path`-only URI is completed with this client's address; `host` defaults to it too.
    pub async fn send(&mut self, req: Request<Body>) -> Result<Reply, String> {
        match timeout(REQUEST_TIMEOUT, self.send_inner(req)).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(e)) => {
                self.sender = None;
                Err(e)
            }
            Err(_) => {
                self.sender = None;
                Err(format!("no response within {REQUEST_TIMEOUT:?}"))
            }
        }
    }

    pub async fn get(&mut self, path: &str) -> Result<Reply, String> {
        self.send(get(path)).await
    }

    async fn send_inner(&mut self, mut req: Request<Body>) -> Result<Reply, String> {
        let default_host = self.addr.to_string();
        if self.h2 {
            // HTTP/2 carries the host in :authority, taken from an absolute URI.
            let host = req
                .headers_mut()
                .remove(HOST)
                .and_then(|h| h.to_str().ok().map(str::to_string))
                .unwrap_or(default_host);
            let path = req
                .uri()
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_else(|| "/".into());
            *req.uri_mut() = format!("http://{host}{path}")
                .parse::<Uri>()
                .map_err(|e| format!("bad uri: {e}"))?;
        } else if !req.headers().contains_key(HOST) {
            req.headers_mut().insert(
                HOST,
                HeaderValue::from_str(&default_host).expect("host header"),
            );
        }

        // Reuse the kept-alive connection when it is still usable; else open a new one.
        if let Some(sender) = &mut self.sender {
            let usable = match sender {
                Sender::H1(s) => s.ready().await.is_ok(),
                Sender::H2(s) => s.ready().await.is_ok(),
            };
            if !usable {
                self.sender = None;
            }
        }
        if self.sender.is_none() {
            let sender = self.connect().await?;
            self.sender = Some(sender);
        }
        let response = match self.sender.as_mut().expect("sender") {
            Sender::H1(s) => {
                s.ready().await.map_err(|e| format!("h1 not ready: {e}"))?;
                s.send_request(req).await
            }
            Sender::H2(s) => {
                s.ready().await.map_err(|e| format!("h2 not ready: {e}"))?;
                s.send_request(req).await
            }
        }
        .map_err(|e| format!("request failed: {e}"))?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| format!("reading response body: {e}"))?
            .to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}

/// One request on a fresh connection (for admin probes).
pub async fn get_once(addr: SocketAddr, path: &str) -> Result<Reply, String> {
    Client::http1(addr).get(path).await
}

// ---------------------------------------------------------------------------------------------
// Traffic helpers
// ---------------------------------------------------------------------------------------------

/// How many responses each version answered.
#[derive(Debug, Default, Clone)]
pub struct Tally(pub BTreeMap<String, usize>);

impl Tally {
    pub fn of<'a>(versions: impl IntoIterator<Item = &'a String>) -> Tally {
        let mut tally = Tally::default();
        for v in versions {
            tally.add(v);
        }
        tally
    }

    pub fn add(&mut self, version: &str) {
        *self.0.entry(version.to_string()).or_default() += 1;
    }

    pub fn merge(&mut self, other: &Tally) {
        for (k, v) in &other.0 {
            *self.0.entry(k.clone()).or_default() += v;
        }
    }

    pub fn total(&self) -> usize {
        self.0.values().sum()
    }

    pub fn count(&self, version: &str) -> usize {
        self.0.get(version).copied().unwrap_or(0)
    }

    /// The version's share of all responses, in percent.
    pub fn percent(&self, version: &str) -> f64 {
        if self.total() == 0 {
            return 0.0;
        }
        self.count(version) as f64 * 100.0 / self.total() as f64
    }

    /// `Ok` when every `(version, percent)` is within `tolerance` points.
    pub fn check_split(&self, expected: &[(&str, f64)], tolerance: f64) -> Result<(), String> {
        for (version, want) in expected {
            let got = self.percent(version);
            if (got - want).abs() > tolerance {
                return Err(format!(
                    "{version}: {got:.1}% (want {want}% ± {tolerance}) in {self}"
                ));
            }
        }
        Ok(())
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|(k, v)| format!("{k}={v} ({:.1}%)", self.percent(k)))
            .collect();
        write!(f, "[{}] of {}", parts.join(", "), self.total())
    }
}

/// Sends `n` requests built by `make(i)` over `conns` kept-alive connections and returns, in
/// order, the version that answered each one. Any transport error, non-200 or missing
/// `x-backend` is an `Err` describing the first such request.
pub async fn try_versions_of(
    addr: SocketAddr,
    n: usize,
    conns: usize,
    make: impl Fn(usize) -> Request<Body> + Send + Sync + 'static,
) -> Result<Vec<String>, String> {
    let make = Arc::new(make);
    let mut tasks = Vec::new();
    for t in 0..conns {
        let make = make.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = Client::http1(addr);
            let mut out = Vec::new();
            for i in (t..n).step_by(conns) {
                let reply = client
                    .send(make(i))
                    .await
                    .map_err(|e| format!("request {i}: {e}"))?;
                if reply.status != StatusCode::OK {
                    return Err(format!(
                        "request {i}: status {} body {:?}",
                        reply.status,
                        reply.text()
                    ));
                }
                let version = reply
                    .version()
                    .ok_or_else(|| format!("request {i}: no x-backend header"))?;
                out.push((i, version));
            }
            Ok::<_, String>(out)
        }));
    }
    let mut all = vec![String::new(); n];
    for task in tasks {
        for (i, v) in task.await.map_err(|e| format!("task: {e}"))?? {
            all[i] = v;
        }
    }
    Ok(all)
}

/// [`try_versions_of`] over 4 connections, panicking on any failure.
pub async fn versions_of(
    addr: SocketAddr,
    n: usize,
    make: impl Fn(usize) -> Request<Body> + Send + Sync + 'static,
) -> Vec<String> {
    try_versions_of(addr, n, 4, make)
        .await
        .unwrap_or_else(|e| panic!("traffic through {addr} failed: {e}"))
}

/// `n` plain `GET /` requests; which versions answered.
pub async fn tally(addr: SocketAddr, n: usize) -> Tally {
    Tally::of(&versions_of(addr, n, |_| get("/")).await)
}

/// Polls `probe` until it returns `Ok`, at most `within`; panics with the last `Err` message.
pub async fn eventually<T>(
    within: Duration,
    what: &str,
    mut probe: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let last = match timeout(left.max(Duration::from_millis(100)), probe()).await {
            Ok(Ok(value)) => return value,
            Ok(Err(e)) => e,
            Err(_) => "probe did not finish in time".to_string(),
        };
        if Instant::now() >= deadline {
            panic!("timed out after {within:?} waiting for {what}; last: {last}");
        }
        sleep(Duration::from_millis(100)).await;
    }
}

/// Closed-loop load: `clients` tasks, each on its own kept-alive connection, sending
/// `GET /` back to back until [`Load::finish`].
pub struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<LoadReport>>,
}

/// What a [`Load`] saw.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub ok: usize,
    /// One line per failed request: transport error, non-200, or no `x-backend`.
    pub failures: Vec<String>,
    pub tally: Tally,
}

impl Load {
    pub fn start(addr: SocketAddr, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..clients)
            .map(|c| {
                let stop = stop.clone();
                tokio::spawn(async move {
                    let mut client = Client::http1(addr);
                    let mut report = LoadReport::default();
                    while !stop.load(Ordering::Relaxed) {
                        match client.get("/").await {
                            Ok(reply) if reply.status == StatusCode::OK => match reply.version() {
                                Some(v) => {
                                    report.ok += 1;
                                    report.tally.add(&v);
                                }
                                None => report
                                    .failures
                                    .push(format!("client {c}: 200 without x-backend")),
                            },
                            Ok(reply) => report.failures.push(format!(
                                "client {c}: status {} body {:?}",
                                reply.status,
                                reply.text()
                            )),
                            Err(e) => report.failures.push(format!("client {c}: {e}")),
                        }
                    }
                    report
                })
            })
            .collect();
        Load { stop, tasks }
    }

    /// Stops the clients and sums their reports.
    pub async fn finish(self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = LoadReport::default();
        for task in self.tasks {
            let report = timeout(REQUEST_TIMEOUT + Duration::from_secs(5), task)
                .await
                .expect("load client did not stop")
                .expect("load client panicked");
            total.ok += report.ok;
            total.failures.extend(report.failures);
            total.tally.merge(&report.tally);
        }
        total
    }
}

/// A raw TCP "backend" that reads a request head, then does whatever `act` does.
pub async fn raw_backend<F, Fut>(act: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let tcp = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind raw backend");
    let addr = tcp.local_addr().expect("raw backend addr");
    let act = Arc::new(act);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = tcp.accept().await {
            let act = act.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16384];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tokio::io::AsyncReadExt::read(&mut stream, &mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                act(stream).await;
            });
        }
    });
    addr
}

/// Convenience for tests that only need a path on disk.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, dedent(text)).expect("write file");
    path
}

/// Writes `request` as raw bytes on a new connection and returns what came back until the
/// server closed the connection or `within` passed (whichever first). For requests a
/// well-behaved client library refuses to send.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8], within: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .expect("connect timed out")
        .expect("connect");
    // The server may answer (and close) before it has read everything; that is fine.
    let _ = stream.write_all(request).await;
    let mut out = Vec::new();
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 8192];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The status code of the first response in a raw HTTP/1.1 exchange.
pub fn raw_status(response: &str) -> Option<u16> {
    let line = response.lines().next()?;
    let mut parts = line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    parts.next()?.parse().ok()
}

// ---------------------------------------------------------------------------------------------
// Metrics and processes
// ---------------------------------------------------------------------------------------------

/// One sample line of the Prometheus text format: `name{k="v",...} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    /// The label names, sorted.
    pub fn label_names(&self) -> Vec<&str> {
        self.labels.keys().map(String::as_str).collect()
    }

    pub fn label(&self, name: &str) -> &str {
        self.labels.get(name).map_or("", String::as_str)
    }
}

/// Parses a Prometheus text exposition (`GET /metrics`) into samples, skipping comments.
/// Panics on a line it cannot read: the exporter must produce valid text.
pub fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        fn fail(line: &str) -> ! {
            panic!("unreadable metrics line: {line:?}")
        }
        let (name, rest) = match line.find(['{', ' ']) {
            Some(i) => line.split_at(i),
            None => fail(line),
        };
        let mut labels = BTreeMap::new();
        let value_text = if let Some(body) = rest.strip_prefix('{') {
            // Label values may contain escaped quotes, '}' and ','; walk them char by char.
            let mut chars = body.char_indices().peekable();
            let end = loop {
                while chars.next_if(|(_, c)| *c == ',' || *c == ' ').is_some() {}
                match chars.peek() {
                    Some((i, '}')) => break *i,
                    None => fail(line),
                    _ => {}
                }
                let mut key = String::new();
                for (_, c) in chars.by_ref() {
                    if c == '=' {
                        break;
                    }
                    key.push(c);
                }
                if chars.next().map(|(_, c)| c) != Some('"') {
                    fail(line);
                }
                let mut value = String::new();
                loop {
                    match chars.next() {
                        Some((_, '\\')) => match chars.next() {
                            Some((_, 'n')) => value.push('\n'),
                            Some((_, c)) => value.push(c),
                            None => fail(line),
                        },
                        Some((_, '"')) => break,
                        Some((_, c)) => value.push(c),
                        None => fail(line),
                    }
                }
                labels.insert(key.trim().to_string(), value);
            };
            &body[end + 1..]
        } else {
            rest
        };
        let value_text = value_text
            .split_whitespace()
            .next()
            .unwrap_or_else(|| fail(line));

        let value = match value_text {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| fail(line)),
        };
        out.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    out
}

/// `# TYPE name kind` lines of a Prometheus text exposition, by metric name.
pub fn metric_types(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            Some((parts.next()?.to_string(), parts.next()?.to_string()))
        })
        .collect()
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

/// Percent-encodes a query-string value (RFC 3986 unreserved characters pass through).
pub fn url_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// TLS: a test CA, TLS clients, TLS/HTTP/2 backends (edge-hardening tests)
// ---------------------------------------------------------------------------------------------

/// A certificate authority made in the test; it signs leaf certificates for any names.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

/// A leaf certificate and key, PEM-encoded.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestCa {
    pub fn new() -> TestCa {
        let key = rcgen::KeyPair::generate().expect("CA key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "switchyard test CA");
        let cert = params.self_signed(&key).expect("self-sign CA");
        TestCa { cert, key }
    }

    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A leaf for `names` (DNS names or IP addresses), with `CN` set to the first one.
    pub fn leaf(&self, names: &[&str]) -> Leaf {
        let key = rcgen::KeyPair::generate().expect("leaf key");
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("leaf params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, names[0]);
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("sign leaf");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// A rustls client trusting only this CA, offering `alpn`.
    pub fn client_config(&self, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.der().clone()).expect("add CA");
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

/// The TLS connection a client got: the negotiated ALPN and the server's leaf certificate.
pub struct TlsInfo {
    pub alpn: Option<Vec<u8>>,
    /// DNS names in the presented certificate's subject alternative names (via its DER).
    pub peer_cert_der: Vec<u8>,
}

/// Connects with TLS to `addr`, sending `sni` (None = no SNI: connect by IP).
pub async fn tls_connect(
    addr: SocketAddr,
    sni: Option<&str>,
    config: Arc<rustls::ClientConfig>,
) -> Result<(tokio_rustls::client::TlsStream<TcpStream>, TlsInfo), String> {
    let stream = timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| format!("connect: {e}"))?;
    let name = match sni {
        Some(n) => rustls::pki_types::ServerName::try_from(n.to_string())
            .map_err(|e| format!("bad name: {e}"))?,
        None => rustls::pki_types::ServerName::IpAddress(addr.ip().into()),
    };
    let tls = timeout(
        Duration::from_secs(5),
        tokio_rustls::TlsConnector::from(config).connect(name, stream),
    )
    .await
    .map_err(|_| "TLS handshake timed out".to_string())?
    .map_err(|e| format!("TLS handshake: {e}"))?;
    let (_, session) = tls.get_ref();
    let info = TlsInfo {
        alpn: session.alpn_protocol().map(<[u8]>::to_vec),
        peer_cert_der: session
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec())
            .unwrap_or_default(),
    };
    Ok((tls, info))
}

/// One request over a fresh TLS connection, HTTP/2 if ALPN chose it, else HTTP/1.1.
pub async fn tls_request(
    addr: SocketAddr,
    sni: Option<&str>,
    config: Arc<rustls::ClientConfig>,
    req: Request<Body>,
) -> Result<(Reply, TlsInfo), String> {
    let (tls, info) = tls_connect(addr, sni, config).await?;
    let io = TokioIo::new(tls);
    let response = if info.alpn.as_deref() == Some(b"h2") {
        let (mut sender, conn) = http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| format!("h2 handshake: {e}"))?;
        tokio::spawn(conn);
        timeout(REQUEST_TIMEOUT, sender.send_request(req)).await
    } else {
        let (mut sender, conn) = http1::handshake(io)
            .await
            .map_err(|e| format!("h1 handshake: {e}"))?;
        tokio::spawn(conn);
        timeout(REQUEST_TIMEOUT, sender.send_request(req)).await
    }
    .map_err(|_| "no response in time".to_string())?
    .map_err(|e| format!("request failed: {e}"))?;
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    Ok((
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        },
        info,
    ))
}

/// Whether a DER certificate names `dns` (a cheap byte search, enough for test names).
pub fn cert_names(der: &[u8], dns: &str) -> bool {
    der.windows(dns.len()).any(|w| w == dns.as_bytes())
}

/// An HTTP/2 backend (h2c, or h2 over TLS with `tls`): answers every request with
/// `x-backend`, `x-http-version` and its body echoed frame by frame as it arrives, then
/// trailers: the request's trailers plus `grpc-status: 0` (a gRPC-style echo server).
pub struct H2Backend {
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    accept_loop: JoinHandle<()>,
}

impl H2Backend {
    pub async fn start(name: &str, tls: Option<&Leaf>) -> H2Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let hits = Arc::new(AtomicUsize::new(0));
        let acceptor = tls.map(|leaf| {
            let certs = rustls::pki_types::CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .expect("cert pem");
            let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes())
                .expect("key pem");
            let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("server cert");
            config.alpn_protocols = vec![b"h2".to_vec()];
            tokio_rustls::TlsAcceptor::from(Arc::new(config))
        });
        let name = name.to_string();
        let counter = hits.clone();
        let accept_loop = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let name = name.clone();
                let hits = counter.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        hits.fetch_add(1, Ordering::SeqCst);
                        let name = name.clone();
                        async move {
                            let version = format!("{:?}", req.version());
                            let response = Response::builder()
                                .header("x-backend", name)
                                .header("x-http-version", version)
                                .header("x-path", req.uri().path())
                                .body(EchoBody {
                                    inner: req.into_body(),
                                    done: false,
                                })
                                .expect("response");
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                    match acceptor {
                        Some(acceptor) => {
                            if let Ok(tls) = acceptor.accept(stream).await {
                                let _ = builder.serve_connection(TokioIo::new(tls), svc).await;
                            }
                        }
                        None => {
                            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                        }
                    }
                });
            }
        });
        H2Backend {
            addr,
            hits,
            accept_loop,
        }
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for H2Backend {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

use rustls::pki_types::pem::PemObject as _;

/// Streams the request body back and ends with trailers (`grpc-status: 0` + the request's).
struct EchoBody {
    inner: Incoming,
    done: bool,
}

impl hyper::body::Body for EchoBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if self.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => match frame.into_trailers() {
                Ok(mut trailers) => {
                    self.done = true;
                    trailers.insert("grpc-status", HeaderValue::from_static("0"));
                    Poll::Ready(Some(Ok(Frame::trailers(trailers))))
                }
                Err(frame) => Poll::Ready(Some(Ok(frame))),
            },
            Poll::Ready(None) => {
                self.done = true;
                let mut trailers = HeaderMap::new();
                trailers.insert("grpc-status", HeaderValue::from_static("0"));
                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
            }
            other => other,
        }
    }
}

/// Writes a file into a directory (no dedent: PEM text).
pub fn write_raw(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write file");
    path
}

impl Reply {
    /// A response header as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
}
