//! TLS termination (SPEC §3 `listeners.tls`, issue #6): SNI picks the certificate, ALPN
//! negotiates h2 or http/1.1, certificates reload when their files change, and bad files are
//! reported by name and never replace good ones. Real rustls clients, a CA made in the test.

use std::path::Path;
use std::time::Duration;

use crate::harness::*;
use http::{Request, StatusCode};

struct Certs {
    _dir: tempfile::TempDir,
    ca: TestCa,
    api_cert: std::path::PathBuf,
    api_key: std::path::PathBuf,
    www_cert: std::path::PathBuf,
    www_key: std::path::PathBuf,
}

fn certs() -> Certs {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let api = ca.leaf(&["api.test", "*.api.test"]);
    let www = ca.leaf(&["www.test"]);
    Certs {
        api_cert: write_raw(dir.path(), "api.pem", &api.cert_pem),
        api_key: write_raw(dir.path(), "api-key.pem", &api.key_pem),
        www_cert: write_raw(dir.path(), "www.pem", &www.cert_pem),
        www_key: write_raw(dir.path(), "www-key.pem", &www.key_pem),
        ca,
        _dir: dir,
    }
}

fn tls_config(backend: &Backend, certs: &Certs) -> String {
    format!(
        r#"
        listeners:
          - name: public-tls
            address: "127.0.0.1:0"
            tls:
              certificates:
                - {{ cert: "{}", key: "{}" }}
                - {{ cert: "{}", key: "{}" }}
        admin: {{ address: "127.0.0.1:0" }}
        services:
          api:
            versions:
              blue: {{ release: v1, backends: ["{addr}"], weight: 100 }}
        "#,
        certs.api_cert.display(),
        certs.api_key.display(),
        certs.www_cert.display(),
        certs.www_key.display(),
        addr = backend.addr,
    )
}

fn get_host(host: &str) -> Request<Body> {
    Request::get(format!("https://{host}/tls"))
        .header("host", host)
        .body(empty())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_picks_the_certificate_and_alpn_negotiates_h2() {
    let backend = Backend::start("blue-1").await;
    let certs = certs();
    let proxy = Proxy::start(&tls_config(&backend, &certs)).await;
    let both = certs.ca.client_config(&[b"h2", b"http/1.1"]);

    let (reply, info) = tls_request(
        proxy.listen,
        Some("www.test"),
        both.clone(),
        get_host("www.test"),
    )
    .await
    .unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        info.alpn.as_deref(),
        Some(&b"h2"[..]),
        "ALPN should pick h2"
    );
    assert!(
        cert_names(&info.peer_cert_der, "www.test"),
        "SNI www.test got another cert"
    );
    let echo = reply.echo();
    assert_eq!(echo.header("x-forwarded-proto").as_deref(), Some("https"));

    // A wildcard name, and the default (first) certificate for an unknown name.
    let (_, info) = tls_request(
        proxy.listen,
        Some("eu.api.test"),
        both.clone(),
        get_host("eu.api.test"),
    )
    .await
    .unwrap();
    assert!(cert_names(&info.peer_cert_der, "api.test"));
    let api_only = certs.ca.client_config(&[b"http/1.1"]);
    // rustls verifies the name, so an unknown SNI fails verification against the default
    // certificate — which proves the default was served.
    let unknown = tls_connect(proxy.listen, Some("other.test"), api_only.clone()).await;
    let err = unknown
        .err()
        .expect("other.test must not verify against api.test's cert");
    assert!(
        err.contains("certificate") || err.contains("Certificate"),
        "{err}"
    );

    // Only http/1.1 offered → HTTP/1.1 (the fast path, over TLS).
    let (reply, info) = tls_request(
        proxy.listen,
        Some("api.test"),
        api_only.clone(),
        get_host("api.test"),
    )
    .await
    .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(info.alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(reply.echo().0["http_version"], "HTTP/1.1");
    assert_eq!(
        reply.echo().header("x-forwarded-proto").as_deref(),
        Some("https")
    );
    // A request with a body takes the general path over TLS too.
    let post = Request::post("https://api.test/tls")
        .header("host", "api.test")
        .body(full("hello"))
        .unwrap();
    let (reply, _) = tls_request(proxy.listen, Some("api.test"), api_only, post)
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.echo().0["body_len"], 5);
    assert_eq!(backend.hits(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls12_only_clients_are_served() {
    let backend = Backend::start("blue-1").await;
    let certs = certs();
    let proxy = Proxy::start(&tls_config(&backend, &certs)).await;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(certs.ca.pem().as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS12])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let (tls, _) = tls_connect(proxy.listen, Some("api.test"), std::sync::Arc::new(config))
        .await
        .unwrap();
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
}

use rustls::pki_types::pem::PemObject as _;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_certificate_files_are_reloaded_and_bad_ones_are_not() {
    let backend = Backend::start("blue-1").await;
    let certs = certs();
    let proxy = Proxy::start(&tls_config(&backend, &certs)).await;
    let config = certs.ca.client_config(&[b"http/1.1"]);

    // A broken certificate: the old one keeps serving, the error names the file.
    std::fs::write(&certs.www_cert, "not a certificate").unwrap();
    eventually(RELOAD_TIMEOUT, "the bad cert to be reported", async || {
        let log = proxy.stderr();
        if log.contains("certificate reload failed") && log.contains("www.pem") {
            Ok(())
        } else {
            Err("no reload error yet".to_string())
        }
    })
    .await;
    tls_connect(proxy.listen, Some("www.test"), config.clone())
        .await
        .expect("the old www.test certificate still serves");

    // A new certificate for www.test that also names new.test: served once written.
    let renewed = certs.ca.leaf(&["www.test", "new.test"]);
    write_pair(&certs.www_cert, &certs.www_key, &renewed);
    eventually(
        RELOAD_TIMEOUT,
        "the renewed cert to be served",
        async || {
            tls_connect(proxy.listen, Some("new.test"), config.clone())
                .await
                .map(|_| ())
        },
    )
    .await;
}

fn write_pair(cert: &Path, key: &Path, leaf: &Leaf) {
    // Key first, then cert: each change triggers a reload; only the matching pair loads.
    std::fs::write(key, &leaf.key_pem).unwrap();
    std::fs::write(cert, &leaf.cert_pem).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mismatched_key_is_named_by_check_and_serve() {
    let backend = Backend::start("blue-1").await;
    let certs = certs();
    // api's certificate with www's key.
    std::fs::copy(&certs.www_key, &certs.api_key).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "switchyard.yaml", &tls_config(&backend, &certs));

    let (status, _out, err) = run_cli(&["check", "--config", path.to_str().unwrap()]).await;
    assert_eq!(status.code(), Some(1), "check must fail: {err}");
    assert!(
        err.contains("api-key.pem") && err.contains("does not belong"),
        "{err}"
    );

    let (status, _out, err) = tokio::time::timeout(
        Duration::from_secs(20),
        run_cli(&["serve", "--config", path.to_str().unwrap()]),
    )
    .await
    .expect("serve must exit at once");
    assert_eq!(status.code(), Some(1));
    assert!(err.contains("api-key.pem"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_reload_can_point_at_new_certificate_files() {
    let backend = Backend::start("blue-1").await;
    let certs = certs();
    let yaml = tls_config(&backend, &certs);
    let proxy = Proxy::start(&yaml).await;
    let config = certs.ca.client_config(&[b"http/1.1"]);
    assert!(
        tls_connect(proxy.listen, Some("fresh.test"), config.clone())
            .await
            .is_err()
    );

    let dir = tempfile::tempdir().unwrap();
    let fresh = certs.ca.leaf(&["fresh.test"]);
    let cert = write_raw(dir.path(), "fresh.pem", &fresh.cert_pem);
    let key = write_raw(dir.path(), "fresh-key.pem", &fresh.key_pem);
    proxy.rewrite_config(
        &yaml
            .replace(
                &certs.www_cert.display().to_string(),
                &cert.display().to_string(),
            )
            .replace(
                &certs.www_key.display().to_string(),
                &key.display().to_string(),
            ),
    );

    eventually(RELOAD_TIMEOUT, "fresh.test to be served", async || {
        tls_connect(proxy.listen, Some("fresh.test"), config.clone())
            .await
            .map(|_| ())
    })
    .await;
    // The first certificate is untouched.
    tls_connect(proxy.listen, Some("api.test"), config)
        .await
        .unwrap();
}

/// Connects once with `config` and reads a response, so the session tickets the server sends
/// after the handshake are taken; returns how the handshake went.
async fn handshake_kind(
    proxy: &Proxy,
    config: std::sync::Arc<rustls::ClientConfig>,
) -> rustls::HandshakeKind {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut tls, _) = tls_connect(proxy.listen, Some("api.test"), config)
        .await
        .unwrap();
    let kind = tls.get_ref().1.handshake_kind().expect("handshake done");
    tls.write_all(b"GET /tls HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response).await;
    assert!(
        response.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&response)
    );
    kind
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_connection_resumes_even_after_hundreds_of_other_sessions() {
    use rustls::HandshakeKind::{Full, Resumed};
    let backend = Backend::start("blue-1").await;
    let certs = certs();
    let proxy = Proxy::start(&tls_config(&backend, &certs)).await;
    let versions: [&'static rustls::SupportedProtocolVersion; 2] =
        [&rustls::version::TLS13, &rustls::version::TLS12];
    for version in versions {
        let config = || {
            let mut roots = rustls::RootCertStore::empty();
            for c in rustls::pki_types::CertificateDer::pem_slice_iter(certs.ca.pem().as_bytes()) {
                roots.add(c.unwrap()).unwrap();
            }
            let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            std::sync::Arc::new(config)
        };
        let first = config();
        assert_eq!(
            handshake_kind(&proxy, first.clone()).await,
            Full,
            "{version:?}"
        );
        assert_eq!(
            handshake_kind(&proxy, first.clone()).await,
            Resumed,
            "{version:?}"
        );
        // More sessions than a server-side session cache of a few hundred holds: a ticket
        // (state the client carries) still resumes.
        for _ in 0..300 {
            assert_eq!(handshake_kind(&proxy, config()).await, Full);
        }
        assert_eq!(
            handshake_kind(&proxy, first).await,
            Resumed,
            "{version:?} after 300 others"
        );
    }
}
