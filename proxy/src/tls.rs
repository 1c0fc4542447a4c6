//! TLS termination (rustls, ring provider): certificates chosen by SNI, hot-swapped on reload.
//!
//! Each TLS listener owns a [`CertStore`]: an `ArcSwap` of the compiled [`CertSet`] that
//! rustls asks for a certificate on every handshake (SNI exact name → `*.wildcard` → the
//! first configured certificate, which is also the default for clients that send no SNI or an
//! unknown name). A set is compiled from PEM bytes it is handed ([`CertSet::compile`]; the
//! files are read by `switchyard_config::read_certificates`, and watched by the control
//! plane) and swapped in whole only if every key matched its certificate, so a bad file never
//! replaces good certificates. Protocol policy is fixed: TLS 1.3 and 1.2 only, rustls'
//! default (AEAD-only) cipher suites, ALPN `h2` then `http/1.1`. Resumption is on: stateless
//! session tickets (TLS 1.3 and 1.2; keys made at start, rotated every 6 hours, shared by the
//! workers of a listener) and a session-ID cache for TLS 1.2 clients without tickets — a
//! resumed handshake skips the certificate signature, the costly part of a full one
//! (docs/PERFORMANCE.md).

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::ring as provider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use switchyard_config::CertificatePem;

/// TLS 1.2 sessions (by session ID) a listener remembers for clients that do not take
/// tickets; a few hundred bytes each.
const SESSION_CACHE: usize = 4096;

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
    /// Checks and compiles every pair; the first one is the default certificate. Errors name
    /// the file at fault (no PEM block, unsupported key, key not matching the cert).
    pub fn compile(pems: &[CertificatePem]) -> Result<CertSet, String> {
        let mut keys = Vec::with_capacity(pems.len());
        for pem in pems {
            keys.push(compile_pair(pem)?);
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
fn compile_pair(pem: &CertificatePem) -> Result<(Arc<CertifiedKey>, Vec<String>), String> {
    let cert_path = pem.cert_path.display();
    let key_path = pem.key_path.display();
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem.cert)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{cert_path}: not a valid PEM certificate file: {e}"))?;
    if chain.is_empty() {
        return Err(format!(
            "{cert_path}: no certificate found (expected a PEM `BEGIN CERTIFICATE` block)"
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&pem.key).map_err(|e| {
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

/// The live certificates of one TLS listener; rustls' certificate resolver.
#[derive(Debug)]
pub struct CertStore {
    listener: String,
    current: ArcSwap<CertSet>,
}

impl CertStore {
    pub fn new(listener: &str, set: CertSet) -> Arc<CertStore> {
        Arc::new(CertStore {
            listener: listener.to_string(),
            current: ArcSwap::from_pointee(set),
        })
    }

    /// The listener these certificates are for.
    pub fn listener(&self) -> &str {
        &self.listener
    }

    /// Swaps a newly compiled set in: the next handshake uses it.
    pub fn swap(&self, set: CertSet) {
        tracing::info!(listener = %self.listener, names = ?set.names, "TLS certificates loaded");
        self.current.store(Arc::new(set));
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
        // Without a ticketer rustls resumes only from its 256-session cache, which a busy
        // listener turns over in well under a second.
        match provider::Ticketer::new() {
            Ok(ticketer) => config.ticketer = ticketer,
            Err(e) => {
                tracing::warn!(error = %e, "no TLS session tickets (resumption from the cache only)")
            }
        }
        config.session_storage = rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE);
        Arc::new(config)
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load().resolve(hello.server_name()))
    }
}
