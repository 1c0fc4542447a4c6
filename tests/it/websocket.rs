//! WebSocket / HTTP/1.1 `Upgrade` passthrough (SPEC §4, issue #6): the tunnel works end to end,
//! is counted as one request (1xx), is drained at shutdown, and `Upgrade: h2c` is never
//! tunnelled to a backend.

use std::net::SocketAddr;
use std::time::Duration;

use crate::harness::*;
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

/// A WebSocket echo server; returns its address.
async fn ws_echo_backend() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (addr, task)
}

fn config(backend: SocketAddr) -> String {
    format!(
        r#"
        listeners: [{{ name: public, address: "127.0.0.1:0" }}]
        admin: {{ address: "127.0.0.1:0" }}
        services:
          chat:
            versions:
              blue: {{ release: v1, backends: ["{backend}"], weight: 100 }}
        "#
    )
}

type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

async fn connect_ws(proxy: &Proxy) -> Ws {
    let stream = TcpStream::connect(proxy.listen).await.unwrap();
    let (ws, response) = tokio::time::timeout(
        REQUEST_TIMEOUT,
        tokio_tungstenite::client_async("ws://chat.test/socket", stream),
    )
    .await
    .expect("handshake in time")
    .expect("websocket handshake through the proxy");
    assert_eq!(response.status(), 101);
    ws
}

async fn echo(ws: &mut Ws, text: &str) -> Result<(), String> {
    ws.send(Message::text(text))
        .await
        .map_err(|e| e.to_string())?;
    match tokio::time::timeout(REQUEST_TIMEOUT, ws.next()).await {
        Ok(Some(Ok(Message::Text(t)))) if t.as_str() == text => Ok(()),
        other => Err(format!("unexpected: {other:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_through_the_proxy_counts_one_request() {
    let (backend, _task) = ws_echo_backend().await;
    let proxy = Proxy::start(&config(backend)).await;

    let mut ws = connect_ws(&proxy).await;
    for i in 0..20 {
        echo(&mut ws, &format!("message {i}")).await.unwrap();
    }
    ws.close(None).await.unwrap();

    let metrics = proxy.admin_get("/metrics").await.text();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("switchyard_requests_total") && l.contains("code=\"1xx\""))
        .unwrap_or_else(|| panic!("no 1xx request counted:\n{metrics}"));
    assert!(line.ends_with(" 1"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_an_open_tunnel_until_the_deadline() {
    let (backend, _task) = ws_echo_backend().await;
    let mut proxy = Proxy::start_with_args(&config(backend), &["--drain-timeout", "2s"]).await;
    let mut ws = connect_ws(&proxy).await;
    echo(&mut ws, "before").await.unwrap();

    proxy.sigterm();
    // Still tunnelled while draining…
    echo(&mut ws, "while draining").await.unwrap();
    // …and closed at the deadline, after which the process exits cleanly.
    let status = proxy
        .wait_exit(Duration::from_secs(15))
        .await
        .expect("exits after the drain deadline");
    assert!(status.success(), "{status}");
    assert!(echo(&mut ws, "after").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_upgrade_is_never_tunnelled() {
    let backend = Backend::start("blue-1").await;
    let proxy = Proxy::start(&config(backend.addr)).await;

    let response = raw_exchange(
        proxy.listen,
        b"GET /smuggle HTTP/1.1\r\nHost: chat.test\r\nConnection: Upgrade, HTTP2-Settings\r\n\
          Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;

    assert_eq!(raw_status(&response), Some(200), "{response}");
    let body = &response[response.find("\r\n\r\n").unwrap() + 4..];
    let echo: serde_json::Value = serde_json::from_str(body.trim()).unwrap_or_else(|_| {
        // Chunked or not, the JSON object is the only `{…}` in the body.
        let start = body.find('{').unwrap();
        let end = body.rfind('}').unwrap();
        serde_json::from_str(&body[start..=end]).unwrap()
    });
    let headers = echo["headers"].as_object().unwrap();
    for name in ["upgrade", "http2-settings", "connection"] {
        assert!(
            !headers.contains_key(name),
            "{name} reached the backend: {headers:?}"
        );
    }
}
