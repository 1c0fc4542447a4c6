//! The typed config: what a valid `switchyard.yaml` means once parsed.
//!
//! These types are the output of [`crate::parse`]; every value here has already been
//! checked (addresses parse, named versions exist, durations are positive), so the proxy and
//! the control plane can use them without re-validating. Defaults live here, next to the
//! field they belong to, so SPEC §3's "defaults shown" has exactly one home.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A whole, validated config file.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub listeners: Vec<Listener>,
    pub admin: Admin,
    /// Where revision history and rollout state are kept (SPEC §8). `None` = in memory only.
    pub state_dir: Option<PathBuf>,
    pub limits: Limits,
    pub access_log: Option<AccessLog>,
    /// Fleet mode (SPEC §11): shared state in etcd. `None` = this replica alone.
    pub cluster: Option<Cluster>,
    /// Services in file order. Names are unique.
    pub services: Vec<Service>,
    /// How backend names are resolved (SPEC §12).
    pub resolver: Resolver,
    /// Name → position in `services`, built on first use: the control plane looks services
    /// up by name once per service on every reload, which a scan made quadratic (10,000
    /// services: seconds).
    service_index: ServiceIndex,
}

impl Config {
    pub fn new(
        listeners: Vec<Listener>,
        admin: Admin,
        state_dir: Option<PathBuf>,
        limits: Limits,
        access_log: Option<AccessLog>,
        services: Vec<Service>,
    ) -> Config {
        Config {
            listeners,
            admin,
            state_dir,
            limits,
            access_log,
            cluster: None,
            services,
            resolver: Resolver::default(),
            service_index: ServiceIndex::default(),
        }
    }

    /// The same config with `resolver` as its resolver block.
    pub fn with_resolver(self, resolver: Resolver) -> Config {
        Config { resolver, ..self }
    }

    pub fn service(&self, name: &str) -> Option<&Service> {
        let index = self.service_index.0.get_or_init(|| {
            self.services
                .iter()
                .enumerate()
                .map(|(i, s)| (s.name.clone(), i))
                .collect()
        });
        // `services` is public: an index built before an edit may be stale, so a hit is
        // checked and a miss falls back to the scan.
        match index.get(name).and_then(|&i| self.services.get(i)) {
            Some(s) if s.name == name => Some(s),
            _ => self.services.iter().find(|s| s.name == name),
        }
    }
}

/// See [`Config::service`]. Not part of what a config means: always equal.
#[derive(Debug, Clone, Default)]
struct ServiceIndex(std::sync::OnceLock<std::collections::HashMap<String, usize>>);

impl PartialEq for ServiceIndex {
    fn eq(&self, _: &ServiceIndex) -> bool {
        true
    }
}

/// The `cluster:` block: the fleet this replica belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    pub etcd: Etcd,
    /// Unique in the fleet; `None` = the host name (a pod's name in Kubernetes).
    pub replica: Option<String>,
    /// The leader's lease and the replica heartbeat's TTL; whole seconds, at least 2s.
    pub lease: Duration,
}

impl Cluster {
    pub const DEFAULT_LEASE: Duration = Duration::from_secs(5);
}

#[derive(Debug, Clone, PartialEq)]
pub struct Etcd {
    /// `host:port` (or `http://` / `https://host:port`); the client fails over between them.
    pub endpoints: Vec<String>,
    /// One fleet = one prefix: starts with `/`, no trailing `/`.
    pub prefix: String,
    pub dial_timeout: Duration,
    pub tls: Option<EtcdTls>,
    pub auth: Option<EtcdAuth>,
}

impl Etcd {
    pub const DEFAULT_DIAL_TIMEOUT: Duration = Duration::from_secs(2);
}

#[derive(Debug, Clone, PartialEq)]
pub struct EtcdTls {
    /// CA bundle that signed the etcd servers' certificates; `None` = the system's roots.
    pub ca: Option<PathBuf>,
    /// Client certificate and key, for etcd's `--client-cert-auth`.
    pub identity: Option<(PathBuf, PathBuf)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EtcdAuth {
    pub username: String,
    /// A file holding the password (never the password itself in the config).
    pub password_file: PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Listener {
    pub name: String,
    pub address: SocketAddr,
    pub tls: Option<Tls>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tls {
    /// Certificates chosen by SNI; the first one is the default for clients without SNI.
    pub certificates: Vec<CertificatePair>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CertificatePair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Admin {
    pub address: SocketAddr,
    pub token_file: Option<PathBuf>,
}

impl Admin {
    pub const DEFAULT_ADDRESS: &'static str = "127.0.0.1:9901";
}

impl Default for Admin {
    fn default() -> Self {
        Admin {
            address: Self::DEFAULT_ADDRESS.parse().expect("valid default"),
            token_file: None,
        }
    }
}

/// Edge limits (SPEC §9). All optional in the file; defaults are SPEC §3's.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Larger request heads are answered 431.
    pub max_header_bytes: usize,
    /// A client that has not sent a full request head within this is disconnected (slowloris).
    pub header_read_timeout: Duration,
    /// A client that sends nothing of its request body for this long is answered 408 (the
    /// time between two reads, as nginx's `client_body_timeout`): a slow or stalled upload is
    /// the client's, never the backend's timeout.
    pub client_body_timeout: Duration,
    pub max_connections: usize,
    /// Larger request bodies are answered 413. `None` = unlimited.
    pub max_request_body: Option<u64>,
    /// What the edge does with `TRACE` requests.
    pub trace: TracePolicy,
}

/// `limits.trace`: TRACE echoes the request back, headers included — credentials a proxy
/// or the browser added among them (cross-site tracing) — so the edge refuses it by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TracePolicy {
    /// Answered 405 by the proxy; never forwarded.
    #[default]
    Reject,
    /// Forwarded like any other method.
    Forward,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 65536,
            header_read_timeout: Duration::from_secs(10),
            client_body_timeout: Duration::from_secs(60),
            max_connections: 100_000,
            max_request_body: None,
            trace: TracePolicy::Reject,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct AccessLog {
    pub path: AccessLogPath,
    pub format: AccessLogFormat,
}

#[derive(Debug, Clone, PartialEq)]
pub enum AccessLogPath {
    Stdout,
    File(PathBuf),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLogFormat {
    Json,
    Combined,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub name: String,
    /// `None` = the default service for requests no other service matches.
    pub matcher: Option<Match>,
    /// Versions in file order (the order sticky buckets are assigned in, after the canary).
    pub versions: Vec<Version>,
    pub sticky: Option<Sticky>,
    /// Checked in order; the first match forces its version.
    pub overrides: Vec<Override>,
    pub health_check: Option<HealthCheck>,
    pub timeouts: Timeouts,
    pub upstream: Upstream,
    pub rollout: Option<Rollout>,
}

impl Service {
    pub fn version(&self, name: &str) -> Option<&Version> {
        self.versions.iter().find(|v| v.name == name)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Match {
    /// Exact names (`api.example.com`) and wildcards (`*.api.example.com`), lower-cased.
    /// Empty = any host.
    pub hosts: Vec<String>,
    /// Always starts with `/`. Default `/`.
    pub path_prefix: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Version {
    pub name: String,
    pub release: String,
    /// In file order, no two alike.
    pub backends: Vec<Backend>,
    /// Relative weight; a version's share is weight / sum of weights. `"10%"` parses as 10.
    pub weight: u32,
}

impl Version {
    /// The backends written as literal `IP:port`, in file order. Names are not among them:
    /// their addresses come from DNS at run time (SPEC §12), never from the file.
    pub fn addresses(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.backends.iter().filter_map(Backend::address)
    }

    /// Whether any backend is a name to resolve.
    pub fn has_names(&self) -> bool {
        self.backends.iter().any(|b| b.address().is_none())
    }
}

/// One entry of a version's `backends` (SPEC §12). Names are kept lower-cased (DNS names are
/// case-insensitive), so two spellings of one name are one backend.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Backend {
    /// `10.0.0.1:8080`, `[::1]:8080`: used as written, never looked up.
    Address(SocketAddr),
    /// `api.internal:8080`: every address of the name's A records (its AAAA records when it
    /// has no A records), each at `port`. `/etc/hosts` is consulted first.
    Name { host: String, port: u16 },
    /// `srv+_http._tcp.api.internal`: the SRV records of `name` (written without `srv+`) give
    /// the targets, their ports and their weights.
    Srv { name: String },
}

impl Backend {
    /// The address of a literal backend; `None` for a name.
    pub fn address(&self) -> Option<SocketAddr> {
        match self {
            Backend::Address(a) => Some(*a),
            Backend::Name { .. } | Backend::Srv { .. } => None,
        }
    }
}

/// The entry as it is written in the file (and shown by the API as a backend's `name`).
impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backend::Address(a) => write!(f, "{a}"),
            Backend::Name { host, port } => write!(f, "{host}:{port}"),
            Backend::Srv { name } => write!(f, "srv+{name}"),
        }
    }
}

/// The `resolver:` block: where backend names are looked up and how often (SPEC §12).
#[derive(Debug, Clone, PartialEq)]
pub struct Resolver {
    /// Name servers asked over UDP (and TCP for long answers). Empty = the system's, from
    /// `/etc/resolv.conf`. `/etc/hosts` is read first either way, as every program on the
    /// machine does, so `localhost:9001` works.
    pub nameservers: Vec<SocketAddr>,
    /// A name is re-resolved no sooner than this after its last answer, whatever its TTL.
    pub min_ttl: Duration,
    /// ... and no later than this.
    pub max_ttl: Duration,
}

impl Resolver {
    /// 1 s: records with TTL 0 (common in service registries) would otherwise be asked for
    /// in a loop; one lookup per name per second is cheap for any DNS server.
    pub const DEFAULT_MIN_TTL: Duration = Duration::from_secs(1);
    /// 30 s: a deploy that moves a backend is followed within half a minute even when its
    /// records carry long TTLs (Docker's embedded DNS answers with 600 s), at one lookup per
    /// name per 30 s at most.
    pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(30);
}

impl Default for Resolver {
    fn default() -> Self {
        Resolver {
            nameservers: Vec::new(),
            min_ttl: Self::DEFAULT_MIN_TTL,
            max_ttl: Self::DEFAULT_MAX_TTL,
        }
    }
}

/// The key that keeps one user on one version while weights move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sticky {
    /// Header name, lower-cased.
    Header(String),
    /// Cookie name, case-sensitive.
    Cookie(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    pub when: OverrideMatch,
    /// Name of an existing version of the same service.
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OverrideMatch {
    /// Header name (lower-cased) whose value must equal `value` exactly.
    Header { name: String, value: String },
    /// Cookie name whose value must equal `value` exactly.
    Cookie { name: String, value: String },
}

#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheck {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub unhealthy_threshold: u32,
    pub healthy_threshold: u32,
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            path: "/health".into(),
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
            unhealthy_threshold: 3,
            healthy_threshold: 2,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timeouts {
    /// TCP connect to a backend (5 s, as operators of HAProxy and nginx expect: a backend
    /// whose accept queue drops a SYN answers the retransmit a second or three later).
    pub connect: Duration,
    /// From the moment the request (its body included) has been sent upstream to the
    /// response head: the backend's time, never the client's upload.
    pub request: Duration,
    /// How long an idle keep-alive connection (client or upstream) is kept.
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            request: Duration::from_secs(30),
            idle: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Upstream {
    pub protocol: UpstreamProtocol,
    /// CA bundle for `h2` over TLS; `None` = system roots.
    pub ca: Option<PathBuf>,
    /// Connections open to one backend at most, idle ones included (HAProxy's `maxconn`).
    /// HTTP/2 upstreams use one multiplexed connection.
    pub max_connections: usize,
    /// Connects under way to one backend at once (HTTP/2: always one).
    pub max_connecting: usize,
    /// Requests that may wait for a connection to one backend beyond the caps…
    pub queue: usize,
    /// …and for how long, before they are answered 503 (after a retry elsewhere).
    pub queue_timeout: Duration,
}

impl Default for Upstream {
    fn default() -> Self {
        Upstream {
            protocol: UpstreamProtocol::Http1,
            ca: None,
            max_connections: 1024,
            max_connecting: 32,
            queue: 1024,
            queue_timeout: Duration::from_secs(5),
        }
    }
}

impl Upstream {
    /// Whether connections made under `self` can serve under `other` (what a reload may
    /// change without closing a backend's pool: the caps, not the protocol or CA).
    pub fn same_connections(&self, other: &Upstream) -> bool {
        self.protocol == other.protocol && self.ca == other.ca
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamProtocol {
    #[default]
    Http1,
    H2c,
    H2,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rollout {
    pub stable: String,
    pub canary: String,
    /// At least one step; the last one is the promotion.
    pub steps: Vec<Step>,
    pub analysis: Analysis,
    pub webhooks: Vec<Webhook>,
    /// `safety_net:` (SPEC §13); `None` = off.
    pub safety_net: Option<SafetyNet>,
    /// `mirror:`: how mirror steps copy requests.
    pub mirror: Mirror,
}

/// A failed, replayable canary request is re-sent once to the stable (SPEC §13).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SafetyNet {
    /// Replays allowed, in percent of the canary's requests over the last 10 s (a floor of
    /// [`SafetyNet::FLOOR_PER_SECOND`] per second is always allowed).
    pub budget: u32,
}

impl SafetyNet {
    pub const DEFAULT_BUDGET: u32 = 20;
    /// Replays per second always allowed, whatever the canary's request count.
    pub const FLOOR_PER_SECOND: u32 = 10;
    /// The window the budget is counted over.
    pub const WINDOW_SECONDS: u32 = 10;
    /// The largest request body kept for a replay.
    pub const MAX_BODY: u64 = 64 * 1024;
}

/// How mirror steps copy requests to the canary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mirror {
    /// Requests with larger bodies are not mirrored.
    pub max_body: u64,
}

impl Default for Mirror {
    fn default() -> Self {
        Mirror {
            max_body: 64 * 1024,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// The canary's share of users' traffic in percent, 0..=100 (0 on a mirror step).
    pub traffic: u32,
    /// A mirror step: the percent of requests copied to the canary (users stay on the
    /// stable). `None` on a traffic step.
    pub mirror: Option<u32>,
    /// How long the step holds before the next one; `None` on the last step.
    pub duration: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Analysis {
    /// Who may roll back besides the threshold checks and fast-fail (SPEC §14).
    pub judge: JudgeKind,
    /// With `judge: sequential`: the bound on the chance of rolling back a canary that is no
    /// worse than the stable. Strictly between 0 and 1.
    pub alpha: f64,
    pub interval: Duration,
    /// Failed checks (across the rollout) that trigger a rollback.
    pub threshold: u32,
    /// Fewer canary requests in a window → the check is inconclusive.
    pub min_requests: u64,
    /// `None` = `fast_fail: off`.
    pub fast_fail: Option<FastFail>,
    pub metrics: Vec<MetricCheck>,
}

impl Default for Analysis {
    fn default() -> Self {
        Analysis {
            judge: JudgeKind::Threshold,
            alpha: Analysis::DEFAULT_ALPHA,
            interval: Duration::from_secs(30),
            threshold: 5,
            min_requests: 50,
            fast_fail: Some(FastFail::default()),
            metrics: Vec::new(),
        }
    }
}

impl Analysis {
    pub const DEFAULT_ALPHA: f64 = 0.01;
}

/// `analysis.judge`: how the canary is judged (SPEC §6, §14).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JudgeKind {
    /// The Flagger semantics of §6 alone: failed interval checks and fast-fail.
    #[default]
    Threshold,
    /// §6 plus the always-valid comparison against the stable, checked every second.
    Sequential,
}

impl JudgeKind {
    /// The name as written in the config and shown by the API.
    pub fn as_str(self) -> &'static str {
        match self {
            JudgeKind::Threshold => "threshold",
            JudgeKind::Sequential => "sequential",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FastFail {
    /// Percent.
    pub error_rate: f64,
    pub min_requests: u64,
}

impl Default for FastFail {
    fn default() -> Self {
        FastFail {
            error_rate: 50.0,
            min_requests: 20,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct MetricCheck {
    pub metric: MetricName,
    /// Percent for `error-rate`, milliseconds for `latency-p99`. Strictly above fails.
    pub threshold: f64,
    /// Canary minus stable in the same window; when set, the check fails only if the canary is
    /// above `threshold` *and* worse than the stable by more than this.
    pub max_increase: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricName {
    ErrorRate,
    LatencyP99,
}

impl MetricName {
    /// The name as written in the config and used in metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricName::ErrorRate => "error-rate",
            MetricName::LatencyP99 => "latency-p99",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Webhook {
    pub kind: WebhookKind,
    pub url: String,
    pub timeout: Duration,
}

impl Webhook {
    /// How long a webhook may take to answer when the config does not say.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookKind {
    /// Must answer 2xx before a rollout starts or advances.
    Gate,
    /// Told of every rollout event.
    Event,
}
