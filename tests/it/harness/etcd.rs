//! A real etcd (Debian's `etcd-server`, the reference server of SPEC §11) for fleet tests, and
//! a fleet of real `switchyard serve` replicas on 127.0.0.2, .3, … sharing it.
//!
//! etcd runs on free loopback ports with a temp data dir and is stopped by its pid: SIGSTOP
//! (a stopped etcd still accepts connections — the case every deadline exists for), SIGCONT,
//! kill -9. Nothing is mocked: the replicas talk gRPC to the same etcd an operator runs.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::time::sleep;

use super::{free_port, get_once, Proxy};

/// Upper bound for etcd to answer `/health` after spawn.
const ETCD_READY: Duration = Duration::from_secs(20);

/// One etcd member, its data in a temp dir; killed on drop.
pub struct Etcd {
    child: Child,
    dir: tempfile::TempDir,
    /// `127.0.0.1:PORT`, as a replica's `cluster.etcd.endpoints` names it.
    pub endpoint: String,
    log: PathBuf,
}

impl Etcd {
    pub async fn start() -> Etcd {
        let dir = tempfile::tempdir().expect("tempdir");
        let (client, peer) = (free_port(), free_port());
        let log = dir.path().join("etcd.log");
        let out = std::fs::File::create(&log).expect("etcd log");
        let child = Command::new("etcd")
            .arg("--name=t")
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--listen-client-urls=http://127.0.0.1:{client}"))
            .arg(format!("--advertise-client-urls=http://127.0.0.1:{client}"))
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
            .arg(format!(
                "--initial-advertise-peer-urls=http://127.0.0.1:{peer}"
            ))
            .arg(format!("--initial-cluster=t=http://127.0.0.1:{peer}"))
            .arg("--log-level=warn")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("clone log"))
            .stderr(out)
            .spawn()
            .expect("spawn etcd (Debian package etcd-server)");
        let etcd = Etcd {
            child,
            dir,
            endpoint: format!("127.0.0.1:{client}"),
            log,
        };
        let addr: SocketAddr = etcd.endpoint.parse().expect("addr");
        let deadline = Instant::now() + ETCD_READY;
        loop {
            if let Ok(reply) = get_once(addr, "/health").await {
                if reply.text().contains("true") {
                    return etcd;
                }
            }
            assert!(
                Instant::now() < deadline,
                "etcd not healthy within {ETCD_READY:?}\n{}",
                etcd.log()
            );
            sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGSTOP: the process stops, its sockets keep accepting (the kernel completes TCP
    /// handshakes), nothing answers.
    pub fn stop(&self) {
        self.signal("STOP");
    }

    /// SIGCONT after [`Etcd::stop`].
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{sig} etcd {}", self.pid());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-CONT")
            .arg(self.pid().to_string())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- etcd log ---\n{}\n--- end ---", self.log());
        }
        let _ = &self.dir;
    }
}

/// The `cluster:` block of replica `name` (lease in seconds).
pub fn cluster_block(etcd: &Etcd, prefix: &str, name: &str, lease_s: u64) -> String {
    format!(
        "cluster:\n  etcd: {{ endpoints: [\"{}\"], prefix: {prefix}, dial_timeout: 1s }}\n  replica: {name}\n  lease: {lease_s}s\n",
        etcd.endpoint
    )
}

/// The config of replica `i` (0-based) on 127.0.0.(2+i): listener, admin, cluster, services.
pub fn replica_config(etcd: &Etcd, prefix: &str, i: usize, lease_s: u64, services: &str) -> String {
    let ip = format!("127.0.0.{}", 2 + i);
    let services: String = super::dedent(services)
        .lines()
        .map(|l| format!("  {l}\n"))
        .collect();
    format!(
        "listeners: [{{ name: public, address: \"{ip}:0\" }}]\n\
         admin: {{ address: \"{ip}:0\" }}\n\
         {}services:\n{services}",
        cluster_block(etcd, prefix, &replica_name(i), lease_s)
    )
}

/// `edge-1`, `edge-2`, …
pub fn replica_name(i: usize) -> String {
    format!("edge-{}", i + 1)
}

/// `n` replicas of one fleet, started one after another.
pub async fn start_fleet(etcd: &Etcd, n: usize, lease_s: u64, services: &str) -> Vec<Proxy> {
    let prefix = format!("/switchyard/t{}", free_port());
    let mut replicas = Vec::new();
    for i in 0..n {
        replicas.push(Proxy::start(&replica_config(etcd, &prefix, i, lease_s, services)).await);
    }
    replicas
}

/// `GET /api/v1/fleet` of one replica.
pub async fn fleet_of(replica: &Proxy) -> Value {
    replica.api("/fleet").await
}

/// The replica the fleet names as leader (as `replica` sees it), once every replica in
/// `replicas` is live and one leads.
pub async fn leader_of(replicas: &[&Proxy]) -> String {
    super::eventually(Duration::from_secs(15), "a fleet leader", async || {
        let doc = fleet_of(replicas[0]).await;
        let live = doc["replicas"].as_array().map_or(0, Vec::len);
        match doc["leader"].as_str() {
            Some(l) if live >= replicas.len() => Ok(l.to_string()),
            _ => Err(format!("{doc}")),
        }
    })
    .await
}
