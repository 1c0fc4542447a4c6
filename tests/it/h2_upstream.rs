//! HTTP/2 end to end (issue #6): h2c and h2-over-TLS upstreams (`upstream: {protocol, ca}`),
//! downstream h2 by prior knowledge and by ALPN, and gRPC-style traffic — request and
//! response trailers pass through, and both directions stream at once.

use std::convert::Infallible;
use std::time::Duration;

use crate::harness::*;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

fn config(
    backend: std::net::SocketAddr,
    upstream: &str,
    tls: Option<(&Leaf, &std::path::Path)>,
) -> String {
    let tls = match tls {
        None => String::new(),
        Some((_, dir)) => format!(
            r#"
            tls:
              certificates:
                - {{ cert: "{}", key: "{}" }}"#,
            dir.join("proxy.pem").display(),
            dir.join("proxy-key.pem").display()
        ),
    };
    format!(
        r#"
        listeners:
          - name: public
            address: "127.0.0.1:0"{tls}
        admin: {{ address: "127.0.0.1:0" }}
        services:
          grpc:
            versions:
              blue: {{ release: v1, backends: ["{backend}"], weight: 100 }}
            upstream: {upstream}
        "#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_upstream_serves_http1_and_h2c_clients() {
    let backend = H2Backend::start("h2-1", None).await;
    let proxy = Proxy::start(&config(backend.addr, "{ protocol: h2c }", None)).await;

    let mut h1 = Client::http1(proxy.listen);
    let mut h2 = Client::h2c(proxy.listen);
    for i in 0..10 {
        for client in [&mut h1, &mut h2] {
            let reply = client
                .send(
                    Request::post(format!("/svc/{i}"))
                        .body(full("ping"))
                        .unwrap(),
                )
                .await
                .unwrap();
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
            assert_eq!(reply.header("x-http-version").as_deref(), Some("HTTP/2.0"));
            assert_eq!(reply.header("x-path"), Some(format!("/svc/{i}")));
            assert_eq!(&reply.body[..], b"ping");
        }
    }
    assert_eq!(backend.hits(), 20);
}

/// gRPC-shaped: POST with `te: trailers`, a streamed body, request trailers; the backend
/// echoes each message as it arrives and ends with trailers. The client sends the second
/// message only after it has read the echo of the first — proof both directions stream.
async fn grpc_echo_roundtrip(
    mut sender: hyper::client::conn::http2::SendRequest<Body>,
    authority: &str,
) {
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
    let body = StreamBody::new(tokio_stream_from(rx)).boxed();
    let req = Request::post(format!("http://{authority}/echo.Echo/Stream"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(body)
        .unwrap();
    tx.send(Ok(Frame::data(Bytes::from_static(b"first"))))
        .await
        .unwrap();
    let response = tokio::time::timeout(REQUEST_TIMEOUT, sender.send_request(req))
        .await
        .expect("response head in time")
        .expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let first = tokio::time::timeout(REQUEST_TIMEOUT, body.frame())
        .await
        .expect("first echo in time (the body must stream, not buffer)")
        .unwrap()
        .unwrap();
    assert_eq!(first.into_data().unwrap(), Bytes::from_static(b"first"));

    tx.send(Ok(Frame::data(Bytes::from_static(b"second"))))
        .await
        .unwrap();
    let mut trailers = HeaderMap::new();
    trailers.insert("x-client-trailer", HeaderValue::from_static("yes"));
    tx.send(Ok(Frame::trailers(trailers))).await.unwrap();
    drop(tx);

    let mut data = Vec::new();
    let mut got_trailers = None;
    while let Some(frame) = tokio::time::timeout(REQUEST_TIMEOUT, body.frame())
        .await
        .expect("frame in time")
    {
        let frame = frame.unwrap();
        match frame.into_trailers() {
            Ok(t) => got_trailers = Some(t),
            Err(frame) => data.extend_from_slice(&frame.into_data().unwrap()),
        }
    }
    assert_eq!(data, b"second");
    let trailers = got_trailers.expect("response trailers");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(
        trailers["x-client-trailer"], "yes",
        "request trailers reached the backend"
    );
}

fn tokio_stream_from(
    mut rx: mpsc::Receiver<Result<Frame<Bytes>, Infallible>>,
) -> impl futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_style_trailers_and_full_duplex_over_h2c() {
    let backend = H2Backend::start("h2-1", None).await;
    let proxy = Proxy::start(&config(backend.addr, "{ protocol: h2c }", None)).await;
    let stream = TcpStream::connect(proxy.listen).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    grpc_echo_roundtrip(sender, "grpc.test").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_over_tls_both_sides_with_a_configured_ca() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    // The backend's certificate names its IP (backends are addresses, not names).
    let backend_leaf = ca.leaf(&["127.0.0.1"]);
    let backend = H2Backend::start("h2tls-1", Some(&backend_leaf)).await;
    let proxy_leaf = ca.leaf(&["grpc.test"]);
    write_raw(dir.path(), "proxy.pem", &proxy_leaf.cert_pem);
    write_raw(dir.path(), "proxy-key.pem", &proxy_leaf.key_pem);
    let ca_path = write_raw(dir.path(), "ca.pem", &ca.pem());
    let upstream = format!("{{ protocol: h2, ca: \"{}\" }}", ca_path.display());
    let proxy = Proxy::start(&config(
        backend.addr,
        &upstream,
        Some((&proxy_leaf, dir.path())),
    ))
    .await;

    let (tls, info) = tls_connect(proxy.listen, Some("grpc.test"), ca.client_config(&[b"h2"]))
        .await
        .unwrap();
    assert_eq!(info.alpn.as_deref(), Some(&b"h2"[..]));
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    grpc_echo_roundtrip(sender, "grpc.test").await;
    assert_eq!(backend.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_upstream_with_an_untrusted_certificate_is_502() {
    let ca = TestCa::new();
    let other = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let backend = H2Backend::start("h2tls-1", Some(&other.leaf(&["127.0.0.1"]))).await;
    let ca_path = write_raw(dir.path(), "ca.pem", &ca.pem());
    let upstream = format!("{{ protocol: h2, ca: \"{}\" }}", ca_path.display());
    let proxy = Proxy::start(&config(backend.addr, &upstream, None)).await;

    let reply = tokio::time::timeout(Duration::from_secs(10), proxy.client().get("/"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{}", reply.text());
    assert_eq!(backend.hits(), 0);
}
