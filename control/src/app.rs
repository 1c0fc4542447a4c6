//! Wiring: everything `switchyard serve` starts, in the order it must start and stop.
//!
//! Start: load the config (refuse to start on any error) → bind every socket (so a taken port
//! is reported before anything runs) → start the controller, the admin API and the listeners
//! → watch the config file → mark ready. Stop (SIGTERM/SIGINT): mark not ready, stop
//! accepting, let in-flight requests finish up to the drain deadline, return.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use switchyard_proxy::access_log::AccessLog;
use switchyard_proxy::listener::Listener;
use switchyard_proxy::workers::Workers;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use crate::admin::{self, AdminState};
use crate::auth::Auth;
use crate::certs::TlsReloader;
use crate::controller::StartOptions;
use crate::discovery::Discovery;
use crate::exporter::Exporter;
use crate::status::{Bound, Status};
use crate::store::etcd::EtcdStore;
use crate::store::file::FileStore;
use crate::store::memory::MemoryStore;
use crate::store::StateStore;

/// How long the watcher waits for a burst of file events to settle before reloading.
const RELOAD_DEBOUNCE: Duration = Duration::from_millis(200);

pub struct ServeOptions {
    pub config_path: PathBuf,
    /// How long in-flight requests may take to finish after SIGTERM.
    pub drain_timeout: Duration,
    /// Where the listeners accept and serve (`--workers`).
    pub workers: Workers,
}

/// Runs the proxy until SIGTERM or SIGINT. Errors are start-up failures, worded for operators.
pub async fn serve(options: ServeOptions) -> Result<(), String> {
    let config = switchyard_config::load(&options.config_path).map_err(|e| e.to_string())?;
    // Certificates are read before anything binds: a bad file stops start-up, named.
    let tls = TlsReloader::load(&config)?;
    // So is the admin token: a public admin address without one never binds at all.
    let auth = Auth::load(&config.admin)?;

    let admin_tcp = admin::bind(config.admin.address).await?;
    let admin_address = admin_tcp.local_addr().unwrap_or(config.admin.address);
    let mut listeners = Vec::new();
    let mut bound_listeners = Vec::new();
    for l in &config.listeners {
        let bound = Listener::bind(&l.name, l.address).await.map_err(|e| {
            format!(
                "cannot listen on {} (listener {:?}): {e}",
                l.address, l.name
            )
        })?;
        let address = bound.tcp.local_addr().unwrap_or(l.address);
        bound_listeners.push((l.name.clone(), address, l.tls.is_some()));
        listeners.push(bound.with_tls(tls.store(&l.name)));
    }

    // A state directory that cannot be read or written never stops the start: the proxy
    // serves from the config and reports it (SPEC §16). With `cluster:`, etcd holds the
    // state; an etcd that is down now is reached in the background.
    let fleet = match &config.cluster {
        Some(cluster) => {
            let replica = replica_name(cluster)?;
            tracing::info!(replica = %replica, prefix = %cluster.etcd.prefix, endpoints = ?cluster.etcd.endpoints, "fleet mode: state in etcd");
            Some(
                EtcdStore::connect(
                    cluster,
                    &replica,
                    &admin_address.to_string(),
                    config.state_dir.as_deref(),
                )
                .await?,
            )
        }
        None => None,
    };
    let store: Arc<dyn StateStore> = match (&fleet, &config.state_dir) {
        (Some(etcd), _) => Arc::new(etcd.clone()),
        (None, Some(dir)) => Arc::new(FileStore::new(dir)),
        (None, None) => Arc::new(MemoryStore::new()),
    };
    // One line per bound socket with its real address: a configured port 0 shows the port
    // the OS chose (the same addresses are in `GET /api/v1/status`).
    tracing::info!(address = %admin_address, "admin API listening");
    let mut status = Status::new(options.config_path.clone());
    status.bound = Bound {
        admin: Some(admin_address),
        listeners: bound_listeners,
    };
    let status = Arc::new(ArcSwap::from_pointee(status));
    let limits = config.limits.clone();
    let access_log_config = config.access_log.clone();
    let exporter = Exporter::install(
        listeners
            .iter()
            .map(|l| (l.name.clone(), Arc::clone(&l.stats)))
            .collect(),
    )?;
    tokio::spawn(exporter.clone().upkeep());
    let access_log = access_log_config
        .as_ref()
        .map(AccessLog::start)
        .transpose()?;
    // Certificates follow every config reload, read on the blocking pool with the config.
    let on_reload = {
        let (tls, path) = (tls.clone(), options.config_path.clone());
        Arc::new(move || tls.reload_config_file(&path))
    };
    // Backend names are resolved in the background from the start; a version whose names
    // have not resolved yet answers 503 until they do (SPEC §12). A system without a readable
    // resolver configuration still serves a config of literal addresses.
    let has_names = config
        .services
        .iter()
        .any(|s| s.versions.iter().any(|v| v.has_names()));
    let discovery = match Discovery::with_hickory(&config) {
        Ok(d) => Some(Arc::new(d)),
        Err(e) if has_names => return Err(format!("cannot resolve backend names: {e}")),
        Err(e) => {
            tracing::warn!("{e}; backend names added by a reload will not resolve until a restart");
            None
        }
    };
    let exporter = exporter.with_discovery(discovery.clone());
    let (handle, readers, table) = crate::controller::start(StartOptions {
        config_path: options.config_path.clone(),
        config,
        store,
        status: Arc::clone(&status),
        on_reload,
        discovery,
    })
    .await?;
    tokio::spawn(crate::health::run(Arc::clone(&table)));

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let admin_state = AdminState {
        status: Arc::clone(&status),
        table: Arc::clone(&table),
        controller: handle.clone(),
        readers,
        exporter,
        auth,
        address: admin_address,
        fleet: fleet.clone(),
    };
    tokio::spawn(admin::serve(admin_tcp, admin_state, shutdown_rx.clone()));
    let serving: Vec<_> = listeners
        .into_iter()
        .map(|l| {
            tracing::info!(listener = %l.name, address = %l.tcp.local_addr().map(|a| a.to_string()).unwrap_or_default(), workers = options.workers.count(), "listening");
            tokio::spawn(l.with_access_log(access_log.clone()).serve(
                &options.workers,
                Arc::clone(&table),
                limits.clone(),
                shutdown_rx.clone(),
                options.drain_timeout,
            ))
        })
        .collect();

    let reload_handle = handle.clone();
    let _watcher =
        switchyard_config::watch::watch(&options.config_path, RELOAD_DEBOUNCE, move || {
            reload_handle.request_reload();
        })
        .map_err(|e| format!("cannot watch {}: {e}", options.config_path.display()))?;
    tls.watch_files();

    status.rcu(|s| Status {
        ready: true,
        ..Status::clone(s)
    });
    tracing::info!(config = %options.config_path.display(), "switchyard is ready");

    wait_for_shutdown(|| handle.request_reload()).await?;

    tracing::info!(drain = ?options.drain_timeout, "shutting down");
    status.rcu(|s| Status {
        ready: false,
        ..Status::clone(s)
    });
    let _ = shutdown_tx.send(true);
    if let Some(etcd) = &fleet {
        // Another replica leads at once, not after the lease.
        etcd.close().await;
    }
    for task in serving {
        let _ = task.await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// `cluster.replica`, or the host name (a pod's name in Kubernetes).
fn replica_name(cluster: &switchyard_config::Cluster) -> Result<String, String> {
    if let Some(name) = &cluster.replica {
        return Ok(name.clone());
    }
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let valid = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(host)
    } else {
        Err(format!(
            "cluster.replica is not set and the host name {host:?} cannot name a replica \
             (letters, digits, '-', '_' and '.'); set cluster.replica"
        ))
    }
}

/// Waits for SIGTERM or SIGINT; SIGHUP calls `on_hangup`, which only sends the reload intent: the file is read
/// by the controller, on the blocking pool.
async fn wait_for_shutdown(on_hangup: impl Fn()) -> Result<(), String> {
    let install =
        |kind: SignalKind| signal(kind).map_err(|e| format!("cannot install signal handler: {e}"));
    let mut hangup = install(SignalKind::hangup())?;
    let mut terminate = install(SignalKind::terminate())?;
    let mut interrupt = install(SignalKind::interrupt())?;
    loop {
        tokio::select! {
            _ = hangup.recv() => {
                tracing::info!("SIGHUP: reloading the config");
                on_hangup();
            }
            _ = terminate.recv() => return Ok(()),
            _ = interrupt.recv() => return Ok(()),
        }
    }
}
