//! Server-side CPU time per TLS handshake, rustls with ring vs aws-lc-rs, in memory (no
//! sockets, no scheduler): RSA-2048 and ECDSA P-256 certificates, TLS 1.3 and 1.2, full and
//! resumed (stateless tickets), X25519 key exchange as `openssl s_time` offers it. Only the
//! server's calls are timed (thread CPU clock); the client is ring's, and does not verify.
//!
//!   handshake-cpu DIR [N]     # DIR: rsa.crt rsa.key ecdsa.crt ecdsa.key (PEM); N per cell

use std::io::{Read, Write};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, ServerConfig, ServerConnection, SignatureScheme};

fn cpu_ns() -> u64 {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

#[derive(Debug)]
struct NoVerify(Vec<SignatureScheme>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(&self, _: &CertificateDer<'_>, _: &[CertificateDer<'_>], _: &ServerName<'_>, _: &[u8], _: UnixTime) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(&self, _: &[u8], _: &CertificateDer<'_>, _: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(&self, _: &[u8], _: &CertificateDer<'_>, _: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.clone()
    }
}

fn provider(name: &str) -> CryptoProvider {
    match name {
        "ring" => rustls::crypto::ring::default_provider(),
        _ => rustls::crypto::aws_lc_rs::default_provider(),
    }
}

fn server(name: &str, dir: &str, cert: &str) -> Arc<ServerConfig> {
    let chain = CertificateDer::pem_file_iter(format!("{dir}/{cert}.crt")).unwrap().collect::<Result<Vec<_>, _>>().unwrap();
    let key = PrivateKeyDer::from_pem_file(format!("{dir}/{cert}.key")).unwrap();
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider(name)))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    config.ticketer = match name {
        "ring" => rustls::crypto::ring::Ticketer::new().unwrap(),
        _ => rustls::crypto::aws_lc_rs::Ticketer::new().unwrap(),
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

fn client(version: &'static rustls::SupportedProtocolVersion, resume: bool) -> Arc<ClientConfig> {
    let mut p = rustls::crypto::ring::default_provider();
    p.kx_groups = vec![rustls::crypto::ring::kx_group::X25519];
    let schemes = p.signature_verification_algorithms.supported_schemes();
    let mut config = ClientConfig::builder_with_provider(Arc::new(p))
        .with_protocol_versions(&[version])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NoVerify(schemes)))
        .with_no_client_auth();
    if !resume {
        config.resumption = rustls::client::Resumption::disabled();
    }
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// One handshake; returns (server CPU ns, resumed?).
fn handshake(s: &Arc<ServerConfig>, c: &Arc<ClientConfig>) -> (u64, bool) {
    let mut cl = ClientConnection::new(Arc::clone(c), ServerName::try_from("bench.test").unwrap()).unwrap();
    let mut buf = Vec::with_capacity(16 * 1024);
    let t0 = cpu_ns();
    let mut sv = ServerConnection::new(Arc::clone(s)).unwrap();
    let mut server_ns = cpu_ns() - t0;
    // Client application data so the server sends its TLS 1.3 tickets, as a real one does.
    cl.writer().write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    for _ in 0..20 {
        buf.clear();
        while cl.wants_write() {
            cl.write_tls(&mut buf).unwrap();
        }
        let t0 = cpu_ns();
        let mut rd = &buf[..];
        while !rd.is_empty() {
            sv.read_tls(&mut rd).unwrap();
            sv.process_new_packets().unwrap();
        }
        let mut out = Vec::new();
        let mut app = [0u8; 64];
        let _ = sv.reader().read(&mut app);
        while sv.wants_write() {
            sv.write_tls(&mut out).unwrap();
        }
        server_ns += cpu_ns() - t0;
        let mut rd = &out[..];
        while !rd.is_empty() {
            cl.read_tls(&mut rd).unwrap();
            cl.process_new_packets().unwrap();
        }
        if !sv.is_handshaking() && !cl.is_handshaking() && !cl.wants_write() {
            break;
        }
    }
    assert!(!sv.is_handshaking(), "handshake did not finish");
    let resumed = sv.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    (server_ns, resumed)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().expect("usage: handshake-cpu DIR [N]");
    let n: u32 = args.next().map_or(2000, |v| v.parse().unwrap());
    println!("| provider | certificate | TLS | handshake | server µs each | handshakes/s per core |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for cert in ["rsa", "ecdsa"] {
        for (vname, version) in [("1.3", &rustls::version::TLS13), ("1.2", &rustls::version::TLS12)] {
            for resume in [false, true] {
                for name in ["ring", "aws-lc-rs"] {
                    let s = server(name, &dir, cert);
                    let c = client(version, resume);
                    for _ in 0..20 {
                        handshake(&s, &c); // warm-up (and the ticket to resume with)
                    }
                    let mut total = 0u64;
                    for _ in 0..n {
                        let (ns, resumed) = handshake(&s, &c);
                        assert_eq!(resumed, resume, "{name} {cert} {vname}: resumed {resumed}");
                        total += ns;
                    }
                    let us = total as f64 / n as f64 / 1000.0;
                    let kind = if resume { "resumed" } else { "full" };
                    println!("| {name} | {cert} | {vname} | {kind} | {us:.1} | {:.0} |", 1e6 / us);
                }
            }
        }
    }
}
