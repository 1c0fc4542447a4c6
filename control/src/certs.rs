//! TLS certificate files: read them for each TLS listener, hand the compiled sets to the
//! proxy's stores, and re-read them when they change on disk or the config is reloaded.
//!
//! The proxy crate knows no files: it compiles PEM bytes it is handed
//! (`switchyard_proxy::tls::CertSet::compile`) and swaps them into a listener's
//! [`CertStore`]. Reading (`switchyard_config::read_certificates`) and watching happen here,
//! off the data path. A set whose files fail to read or compile is never swapped in: the
//! error names the file, and the previous certificates keep serving.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use switchyard_config::{CertificatePair, Config};
use switchyard_proxy::tls::{CertSet, CertStore};

/// Reads and compiles one listener's certificates.
pub fn compile(pairs: &[CertificatePair]) -> Result<CertSet, String> {
    CertSet::compile(&switchyard_config::read_certificates(pairs)?)
}

/// One TLS listener's store and the files its current certificates came from.
struct Listener {
    store: Arc<CertStore>,
    pairs: ArcSwap<Vec<CertificatePair>>,
}

impl Listener {
    /// Re-reads `pairs` and swaps them in; on any error the old certificates stay.
    fn reload(&self, pairs: &[CertificatePair]) -> Result<(), String> {
        match compile(pairs) {
            Ok(set) => {
                self.store.swap(set);
                self.pairs.store(Arc::new(pairs.to_vec()));
                Ok(())
            }
            Err(e) => {
                let e = format!("listener {:?}: TLS: {e}", self.store.listener());
                tracing::error!(error = %e, "certificate reload failed; the previous certificates keep serving");
                Err(e)
            }
        }
    }
}

/// Every TLS listener's store, and the file watchers that reload them.
#[derive(Clone, Default)]
pub struct TlsReloader {
    listeners: Arc<Vec<Listener>>,
    watchers: Arc<Mutex<Vec<switchyard_config::ConfigWatcher>>>,
}

impl TlsReloader {
    /// Loads the certificates of every TLS listener in `config`; the first bad file stops
    /// start-up with an error that names it.
    pub fn load(config: &Config) -> Result<TlsReloader, String> {
        let mut listeners = Vec::new();
        for l in &config.listeners {
            if let Some(tls) = &l.tls {
                let set = compile(&tls.certificates)
                    .map_err(|e| format!("listener {:?}: TLS: {e}", l.name))?;
                listeners.push(Listener {
                    store: CertStore::new(&l.name, set),
                    pairs: ArcSwap::from_pointee(tls.certificates.clone()),
                });
            }
        }
        Ok(TlsReloader {
            listeners: Arc::new(listeners),
            watchers: Arc::default(),
        })
    }

    /// The store of the named listener, if it terminates TLS.
    pub fn store(&self, listener: &str) -> Option<Arc<CertStore>> {
        self.listeners
            .iter()
            .find(|l| l.store.listener() == listener)
            .map(|l| Arc::clone(&l.store))
    }

    /// Applies a newly loaded config: each TLS listener re-reads the files its config names.
    /// Listeners whose files fail keep their old certificates; every failure is returned.
    pub fn apply(&self, config: &Config) -> Result<(), String> {
        let mut errors = Vec::new();
        for listener in self.listeners.iter() {
            let Some(tls) = config
                .listeners
                .iter()
                .find(|l| l.name == listener.store.listener())
                .and_then(|l| l.tls.as_ref())
            else {
                continue; // TLS on/off and addresses change at restart only.
            };
            if let Err(e) = listener.reload(&tls.certificates) {
                errors.push(e);
            }
        }
        self.rewatch();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    /// Re-reads the config file and applies its TLS sections; an invalid config is ignored
    /// here (the controller reports it) and only the current files are re-read.
    pub fn reload_config_file(&self, path: &Path) {
        if self.listeners.is_empty() {
            return;
        }
        match switchyard_config::load(path) {
            Ok(config) => {
                let _ = self.apply(&config);
            }
            Err(_) => self.reload_files(),
        }
    }

    /// Re-reads the files every store currently uses.
    pub fn reload_files(&self) {
        for listener in self.listeners.iter() {
            let pairs = listener.pairs.load_full();
            let _ = listener.reload(&pairs);
        }
    }

    /// Watches every certificate and key file; a change reloads all stores (debounced).
    pub fn watch_files(&self) {
        self.rewatch();
    }

    fn rewatch(&self) {
        const DEBOUNCE: Duration = Duration::from_millis(200);
        let mut watchers = self.watchers.lock().unwrap_or_else(|e| e.into_inner());
        watchers.clear();
        let mut files: Vec<_> = self
            .listeners
            .iter()
            .flat_map(|l| {
                l.pairs
                    .load()
                    .iter()
                    .flat_map(|p| [p.cert.clone(), p.key.clone()])
                    .collect::<Vec<_>>()
            })
            .collect();
        files.sort();
        files.dedup();
        for file in files {
            let me = TlsReloader {
                listeners: Arc::clone(&self.listeners),
                watchers: Arc::default(),
            };
            match switchyard_config::watch(&file, DEBOUNCE, move || me.reload_files()) {
                Ok(w) => watchers.push(w),
                Err(e) => {
                    tracing::warn!(file = %file.display(), error = %e, "cannot watch certificate file")
                }
            }
        }
    }
}
