//! Reading the certificate files a config names (`listeners[].tls.certificates`).
//!
//! The config crate reads and watches files; the proxy only compiles what it is handed
//! (`switchyard_proxy::tls::CertSet::compile`). Reading is a separate step so it can run on a
//! blocking thread, once per reload, and so every error names the file at fault.

use std::path::{Path, PathBuf};

use crate::schema::CertificatePair;

/// One certificate chain and its key as read from disk (PEM text), with where they came from.
#[derive(Debug, Clone)]
pub struct CertificatePem {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
}

/// Reads every pair; the first file that cannot be read stops it, named.
pub fn read_certificates(pairs: &[CertificatePair]) -> Result<Vec<CertificatePem>, String> {
    pairs
        .iter()
        .map(|pair| {
            Ok(CertificatePem {
                cert: read(&pair.cert, "certificate")?,
                key: read(&pair.key, "private key")?,
                cert_path: pair.cert.clone(),
                key_path: pair.key.clone(),
            })
        })
        .collect()
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{}: cannot read {what}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_files_are_named() {
        let e = read_certificates(&[CertificatePair {
            cert: "/nonexistent/cert.pem".into(),
            key: "/nonexistent/key.pem".into(),
        }])
        .unwrap_err();
        assert!(e.contains("/nonexistent/cert.pem"), "{e}");
    }
}
