//! TLS termination (rustls, ring provider): certificates chosen by SNI, hot-swapped on reload.
//!
//! Each TLS listener owns a [`CertStore`]: an `ArcSwap` of the compiled [`CertSet`] that
//! rustls asks for a certificate on every handshake (SNI exact name → `*.wildcard` → the
//! first configured certificate, which is also the default for clients that send no SNI or an
//! unknown name). Reloading builds a whole new set off to the side and swaps it in only if
//! every file loaded and every key matched its certificate — a reload with a bad file logs
//! the error (naming the file) and keeps serving the old certificates.
//!
//! Reloads come from two places: the config (the listener's `tls.certificates` may name other
//! files) through [`TlsReloader::apply`], and the certificate files themselves changing on disk
//! through [`TlsReloader::watch_files`]. Protocol policy is fixed: TLS 1.3 and 1.2 only,
//! rustls' default (AEAD-only) cipher suites, ALPN `h2` then `http/1.1`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::crypto::ring as provider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use switchyard_config::{CertificatePair, Config};

/// The certificates of one TLS listener, compiled for lookup by SNI.
#[derive(Debug)]
pub struct CertSet {
    default: Arc<CertifiedKey>,
    exact: HashMap<Box<str>, Arc<CertifiedKey>>,
    /// `(".example.com", key)` for `*.example.com`, longest suffix first.
    wildcard: Vec<(Box<str>, Arc<CertifiedKey>)>,
    /// Every DNS name served, for logs and tests.
    pub names: Vec<String>,
}

impl CertSet {
    /// Reads and checks every pair; the first one is the default certificate. Errors name the
    /// file at fault (unreadable, no PEM block, unsupported key, key not matching the cert).
    pub fn load(pairs: &[CertificatePair]) -> Result<CertSet, String> {
        let mut keys = Vec::with_capacity(pairs.len());
        for pair in pairs {
            keys.push(load_pair(pair)?);
        }
        let Some((default, _)) = keys.first().cloned() else {
            return Err("a TLS listener needs at least one certificate".into());
        };
        let mut exact = HashMap::new();
        let mut wildcard: Vec<(Box<str>, Arc<CertifiedKey>)> = Vec::new();
        let mut all = Vec::new();
        for (key, names) in keys {
            for name in names {
                let name = name.to_ascii_lowercase();
                // The first certificate to claim a name keeps it.
                match name.strip_prefix('*') {
                    Some(suffix) => {
                        if !wildcard.iter().any(|(s, _)| **s == *suffix) {
                            wildcard.push((suffix.into(), Arc::clone(&key)));
                        }
                    }
                    None => {
                        exact
                            .entry(name.clone().into_boxed_str())
                            .or_insert_with(|| Arc::clone(&key));
                    }
                }
                all.push(name);
            }
        }
        wildcard.sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        Ok(CertSet {
            default,
            exact,
            wildcard,
            names: all,
        })
    }

    fn resolve(&self, sni: Option<&str>) -> Arc<CertifiedKey> {
        let Some(sni) = sni else {
            return Arc::clone(&self.default);
        };
        let lower;
        let name = if sni.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = sni.to_ascii_lowercase();
            lower.as_str()
        } else {
            sni
        };
        if let Some(key) = self.exact.get(name) {
            return Arc::clone(key);
        }
        for (suffix, key) in &self.wildcard {
            // `*.example.com` covers exactly one more label.
            if let Some(label) = name.strip_suffix(&**suffix) {
                if !label.is_empty() && !label.contains('.') {
                    return Arc::clone(key);
                }
            }
        }
        Arc::clone(&self.default)
    }
}

/// One certificate chain and its key, checked against each other, with the DNS names the
/// certificate is valid for.
fn load_pair(pair: &CertificatePair) -> Result<(Arc<CertifiedKey>, Vec<String>), String> {
    let cert_path = pair.cert.display();
    let key_path = pair.key.display();
    let cert_pem = read(&pair.cert, "certificate")?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{cert_path}: not a valid PEM certificate file: {e}"))?;
    if chain.is_empty() {
        return Err(format!(
            "{cert_path}: no certificate found (expected a PEM `BEGIN CERTIFICATE` block)"
        ));
    }
    let key_pem = read(&pair.key, "private key")?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        format!("{key_path}: no private key found (expected a PEM PKCS#8, PKCS#1 or SEC1 key): {e}")
    })?;
    let signing = provider::sign::any_supported_type(&key)
        .map_err(|e| format!("{key_path}: unsupported private key: {e}"))?;
    let end_entity = webpki::EndEntityCert::try_from(&chain[0])
        .map_err(|e| format!("{cert_path}: cannot parse the certificate: {e:?}"))?;
    let names: Vec<String> = end_entity.valid_dns_names().map(str::to_string).collect();
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|e| {
        format!("{key_path}: this private key does not belong to the certificate {cert_path} ({e})")
    })?;
    Ok((Arc::new(certified), names))
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{}: cannot read {what}: {e}", path.display()))
}

/// The live certificates of one TLS listener; rustls' certificate resolver.
#[derive(Debug)]
pub struct CertStore {
    listener: String,
    current: ArcSwap<CertSet>,
    /// The files the current set came from (re-read when they change on disk).
    pairs: ArcSwap<Vec<CertificatePair>>,
}

impl CertStore {
    pub fn load(listener: &str, pairs: &[CertificatePair]) -> Result<Arc<CertStore>, String> {
        let set = CertSet::load(pairs).map_err(|e| format!("listener {listener:?}: TLS: {e}"))?;
        Ok(Arc::new(CertStore {
            listener: listener.to_string(),
            current: ArcSwap::from_pointee(set),
            pairs: ArcSwap::from_pointee(pairs.to_vec()),
        }))
    }

    /// Loads `pairs` and swaps them in; on any error the old certificates stay.
    pub fn reload(&self, pairs: &[CertificatePair]) -> Result<(), String> {
        match CertSet::load(pairs) {
            Ok(set) => {
                tracing::info!(listener = %self.listener, names = ?set.names, "TLS certificates loaded");
                self.current.store(Arc::new(set));
                self.pairs.store(Arc::new(pairs.to_vec()));
                Ok(())
            }
            Err(e) => {
                let e = format!("listener {:?}: TLS: {e}", self.listener);
                tracing::error!(error = %e, "certificate reload failed; the previous certificates keep serving");
                Err(e)
            }
        }
    }

    /// A rustls server config that resolves through this store (ALPN h2, http/1.1).
    pub fn server_config(self: &Arc<Self>) -> Arc<ServerConfig> {
        let mut config =
            ServerConfig::builder_with_provider(Arc::new(provider::default_provider()))
                .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
                .expect("ring supports TLS 1.2 and 1.3")
                .with_no_client_auth()
                .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load().resolve(hello.server_name()))
    }
}

/// Every TLS listener's store, and the file watchers that reload them.
#[derive(Clone, Default)]
pub struct TlsReloader {
    stores: Arc<Vec<Arc<CertStore>>>,
    watchers: Arc<Mutex<Vec<switchyard_config::ConfigWatcher>>>,
}

impl TlsReloader {
    /// Loads the certificates of every TLS listener in `config`; the first bad file stops
    /// start-up with an error that names it.
    pub fn load(config: &Config) -> Result<TlsReloader, String> {
        let mut stores = Vec::new();
        for l in &config.listeners {
            if let Some(tls) = &l.tls {
                stores.push(CertStore::load(&l.name, &tls.certificates)?);
            }
        }
        Ok(TlsReloader {
            stores: Arc::new(stores),
            watchers: Arc::default(),
        })
    }

    /// The store of the named listener, if it terminates TLS.
    pub fn store(&self, listener: &str) -> Option<Arc<CertStore>> {
        self.stores.iter().find(|s| s.listener == listener).cloned()
    }

    /// Applies a newly loaded config: each TLS listener re-reads the files its config names.
    /// Listeners whose files fail keep their old certificates; every failure is returned.
    pub fn apply(&self, config: &Config) -> Result<(), String> {
        let mut errors = Vec::new();
        for store in self.stores.iter() {
            let Some(tls) = config
                .listeners
                .iter()
                .find(|l| l.name == store.listener)
                .and_then(|l| l.tls.as_ref())
            else {
                continue; // TLS on/off and addresses change at restart only.
            };
            if let Err(e) = store.reload(&tls.certificates) {
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
        if self.stores.is_empty() {
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
        for store in self.stores.iter() {
            let pairs = store.pairs.load_full();
            let _ = store.reload(&pairs);
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
            .stores
            .iter()
            .flat_map(|s| {
                s.pairs
                    .load()
                    .iter()
                    .flat_map(|p| [p.cert.clone(), p.key.clone()])
                    .collect::<Vec<_>>()
            })
            .collect();
        files.sort();
        files.dedup();
        for file in files {
            let me = self.clone_without_watchers();
            match switchyard_config::watch(&file, DEBOUNCE, move || me.reload_files()) {
                Ok(w) => watchers.push(w),
                Err(e) => {
                    tracing::warn!(file = %file.display(), error = %e, "cannot watch certificate file")
                }
            }
        }
    }

    fn clone_without_watchers(&self) -> TlsReloader {
        TlsReloader {
            stores: Arc::clone(&self.stores),
            watchers: Arc::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_files_are_named() {
        let e = CertSet::load(&[CertificatePair {
            cert: "/nonexistent/cert.pem".into(),
            key: "/nonexistent/key.pem".into(),
        }])
        .unwrap_err();
        assert!(e.contains("/nonexistent/cert.pem"), "{e}");
    }
}
