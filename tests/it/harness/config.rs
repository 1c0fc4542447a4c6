//! A config builder, so tests say what their proxy has instead of copying YAML: listeners
//! (plain or TLS), the admin API (token), `state_dir`, services with versions, backends and
//! weights, sticky sessions and rollout blocks, plus the way the process is started (extra
//! arguments, environment, a ConfigMap mount). Every socket is on port 0 unless a test names
//! one: the proxy reports the ports it bound ([`Proxy`]).
//!
//! It writes YAML, the file format the binary reads, so [`ProxyBuilder::yaml`] is also what a
//! test rewrites the config to. Settings the builder has no method for go in as YAML lines
//! ([`ProxyBuilder::top`], [`Service::line`], [`Rollout::line`]). Tests that are about YAML
//! itself (parse errors, validation messages) keep writing it by hand.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;

use super::*;

/// Everything [`Proxy::builder`] starts: the config and how the process is run.
#[derive(Debug, Clone)]
pub struct ProxyBuilder {
    listeners: Vec<String>,
    admin: String,
    state_dir: Option<String>,
    top: Vec<String>,
    services: Vec<Service>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    configmap: bool,
}

impl Proxy {
    /// A proxy with a `public` listener and the admin API on port 0 and no services yet.
    pub fn builder() -> ProxyBuilder {
        ProxyBuilder {
            listeners: Vec::new(),
            admin: "address: \"127.0.0.1:0\"".into(),
            state_dir: None,
            top: Vec::new(),
            services: Vec::new(),
            args: Vec::new(),
            env: Vec::new(),
            configmap: false,
        }
    }
}

impl ProxyBuilder {
    /// A plain listener (HTTP/1.1 and h2c) named `name` on `address` (`127.0.0.1:0`: the
    /// OS chooses). Without any, the config has `public` on `127.0.0.1:0`.
    pub fn listener(mut self, name: &str, address: &str) -> Self {
        self.listeners
            .push(format!("{{ name: {name}, address: \"{address}\" }}"));
        self
    }

    /// A TLS listener with `(cert, key)` PEM file pairs.
    pub fn tls_listener(mut self, name: &str, address: &str, pairs: &[(&Path, &Path)]) -> Self {
        let certificates: Vec<String> = pairs
            .iter()
            .map(|(cert, key)| {
                format!(
                    "{{ cert: \"{}\", key: \"{}\" }}",
                    cert.display(),
                    key.display()
                )
            })
            .collect();
        self.listeners.push(format!(
            "{{ name: {name}, address: \"{address}\", tls: {{ certificates: [{}] }} }}",
            certificates.join(", ")
        ));
        self
    }

    /// The admin API on `address` (default `127.0.0.1:0`).
    pub fn admin_address(mut self, address: &str) -> Self {
        self.admin = format!("address: \"{address}\"");
        self
    }

    /// The admin API on port 0 with a token read from `token_file`.
    pub fn admin_token_file(mut self, token_file: &Path) -> Self {
        self.admin = format!(
            "address: \"127.0.0.1:0\", token_file: \"{}\"",
            token_file.display()
        );
        self
    }

    /// `state_dir:` (relative paths are relative to the config file's directory).
    pub fn state_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.state_dir = Some(dir.as_ref().display().to_string());
        self
    }

    /// Top-level YAML the builder has no method for (`limits:`, `access_log:`, `cluster:`…).
    pub fn top(mut self, yaml: &str) -> Self {
        self.top.push(dedent(yaml));
        self
    }

    pub fn service(mut self, service: Service) -> Self {
        self.services.push(service);
        self
    }

    /// An extra argument to `switchyard serve`.
    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_string());
        self
    }

    /// An environment variable for the process.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Mounts the config the way the kubelet mounts a ConfigMap ([`Proxy::start_configmap`]).
    pub fn configmap(mut self) -> Self {
        self.configmap = true;
        self
    }

    /// The config file this builder describes.
    pub fn yaml(&self) -> String {
        let mut out = String::from("listeners:\n");
        if self.listeners.is_empty() {
            out.push_str("  - { name: public, address: \"127.0.0.1:0\" }\n");
        }
        for l in &self.listeners {
            let _ = writeln!(out, "  - {l}");
        }
        let _ = writeln!(out, "admin: {{ {} }}", self.admin);
        if let Some(dir) = &self.state_dir {
            let _ = writeln!(out, "state_dir: \"{dir}\"");
        }
        for yaml in &self.top {
            out.push_str(yaml);
        }
        if !self.services.is_empty() {
            out.push_str("services:\n");
        }
        for s in &self.services {
            s.write(&mut out);
        }
        out
    }

    /// Writes the config and starts the binary; returns once it is ready.
    pub async fn start(&self) -> Proxy {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        Proxy::spawn(&self.yaml(), &args, &env, self.configmap).await
    }
}

/// One entry under `services:`.
#[derive(Debug, Clone)]
pub struct Service {
    name: String,
    hosts: Vec<String>,
    versions: Vec<String>,
    sticky: Option<String>,
    lines: Vec<String>,
    rollout: Option<Rollout>,
}

impl Service {
    pub fn new(name: &str) -> Service {
        Service {
            name: name.to_string(),
            hosts: Vec::new(),
            versions: Vec::new(),
            sticky: None,
            lines: Vec::new(),
            rollout: None,
        }
    }

    /// One version, `blue` (release v1, weight 100), on `backend`.
    pub fn blue(name: &str, backend: SocketAddr) -> Service {
        Service::new(name).version("blue", "v1", &[backend], 100)
    }

    /// `blue` (release v1) on `blue` and `green` (release v2) on `green`, with `weights`.
    pub fn two(
        name: &str,
        (blue, green): (SocketAddr, SocketAddr),
        (wb, wg): (u32, u32),
    ) -> Service {
        Service::new(name)
            .version("blue", "v1", &[blue], wb)
            .version("green", "v2", &[green], wg)
    }

    /// The usual canary service: [`Service::two`] with all traffic on `blue`.
    pub fn blue_green(name: &str, blue: SocketAddr, green: SocketAddr) -> Service {
        Service::two(name, (blue, green), (100, 0))
    }

    /// A version with `release`, backends and weight.
    pub fn version(self, name: &str, release: &str, backends: &[SocketAddr], weight: u32) -> Self {
        let backends: Vec<String> = backends.iter().map(SocketAddr::to_string).collect();
        self.version_raw(name, release, &backends, &weight.to_string())
    }

    /// A version whose backends are written as given (host names, `srv+…`) and whose weight
    /// is any YAML value (`50`, `12.5`).
    pub fn version_raw(
        mut self,
        name: &str,
        release: &str,
        backends: &[String],
        weight: &str,
    ) -> Self {
        let backends: Vec<String> = backends.iter().map(|b| format!("\"{b}\"")).collect();
        self.versions.push(format!(
            "{name}: {{ release: {release}, backends: [{}], weight: {weight} }}",
            backends.join(", ")
        ));
        self
    }

    /// `match: { hosts: [...] }`.
    pub fn hosts(mut self, hosts: &[&str]) -> Self {
        self.hosts = hosts.iter().map(|h| format!("\"{h}\"")).collect();
        self
    }

    /// `sticky: { header: NAME }`.
    pub fn sticky_header(mut self, header: &str) -> Self {
        self.sticky = Some(format!("{{ header: {header} }}"));
        self
    }

    /// Service-level YAML the builder has no method for (`upstream:`, `retries:`, `sticky:`
    /// with a cookie…), written under the service.
    pub fn line(mut self, yaml: &str) -> Self {
        self.lines.push(dedent(yaml));
        self
    }

    pub fn rollout(mut self, rollout: Rollout) -> Self {
        self.rollout = Some(rollout);
        self
    }

    fn write(&self, out: &mut String) {
        let _ = writeln!(out, "  {}:", self.name);
        if !self.hosts.is_empty() {
            let _ = writeln!(out, "    match: {{ hosts: [{}] }}", self.hosts.join(", "));
        }
        out.push_str("    versions:\n");
        for v in &self.versions {
            let _ = writeln!(out, "      {v}");
        }
        if let Some(sticky) = &self.sticky {
            let _ = writeln!(out, "    sticky: {sticky}");
        }
        for yaml in &self.lines {
            indent_into(out, yaml, 4);
        }
        if let Some(r) = &self.rollout {
            out.push_str("    rollout:\n");
            let _ = writeln!(out, "      stable: {}", r.stable);
            let _ = writeln!(out, "      canary: {}", r.canary);
            let _ = writeln!(out, "      steps: {}", r.steps);
            let _ = writeln!(out, "      analysis: {}", r.analysis);
            for yaml in &r.lines {
                indent_into(out, yaml, 6);
            }
        }
    }
}

/// A `rollout:` block: `stable` → `canary` through `steps`, judged by `analysis` (both YAML
/// flow values, e.g. `[{ traffic: 10%, duration: 1m }, { traffic: 100% }]`).
#[derive(Debug, Clone)]
pub struct Rollout {
    stable: String,
    canary: String,
    steps: String,
    analysis: String,
    lines: Vec<String>,
}

impl Rollout {
    /// `blue` (stable) to `green` (canary).
    pub fn new(steps: &str, analysis: &str) -> Rollout {
        Rollout {
            stable: "blue".into(),
            canary: "green".into(),
            steps: steps.to_string(),
            analysis: analysis.to_string(),
            lines: Vec::new(),
        }
    }

    /// Other stable and canary versions than blue and green.
    pub fn between(mut self, stable: &str, canary: &str) -> Self {
        self.stable = stable.to_string();
        self.canary = canary.to_string();
        self
    }

    /// Rollout YAML the builder has no method for (`safety_net:`, `mirror:`, `webhooks:`…).
    pub fn line(mut self, yaml: &str) -> Self {
        if !yaml.trim().is_empty() {
            self.lines.push(dedent(yaml));
        }
        self
    }
}

fn indent_into(out: &mut String, yaml: &str, by: usize) {
    for line in yaml.lines() {
        if line.trim().is_empty() {
            continue;
        }
        let _ = writeln!(out, "{:by$}{line}", "");
    }
}

/// The smallest useful proxy: service `api` with one version, `blue`, on `backend`.
pub fn one_service(backend: SocketAddr) -> ProxyBuilder {
    Proxy::builder().service(Service::blue("api", backend))
}
