//! TLS in tests: a CA made on the spot, leaf certificates, and TLS clients that report what
//! they negotiated.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::Request;
use http_body_util::BodyExt;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::*;

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
