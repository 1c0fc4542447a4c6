//! The HTTP/2 server's defences, frame by frame over a raw socket (SPEC §9): rapid reset and
//! CONTINUATION floods end the connection with bounded work, a stream the client resets is
//! the client's (not the backend's) failure, and a shutdown sends GOAWAY and lets the stream
//! in flight finish. The proxy serves HTTP/2 streams on the connection's own task
//! (`proxy/src/http2`); these hold whatever drives the codec.

use std::time::Duration;

use crate::harness::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;
const CANCEL: u32 = 0x8;
const ENHANCE_YOUR_CALM: u32 = 0xb;

fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = payload.len() as u32;
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}

/// HPACK for `GET http://api.test{path}` (static-table method, scheme; literal path and
/// authority without indexing).
fn get_block(path: &str) -> Vec<u8> {
    let mut b = vec![0x82, 0x86, 0x04, path.len() as u8];
    b.extend_from_slice(path.as_bytes());
    b.extend_from_slice(&[0x01, 8]);
    b.extend_from_slice(b"api.test");
    b
}

/// A client connection: the preface and an empty SETTINGS written.
async fn connect(proxy: &Proxy) -> TcpStream {
    let mut s = TcpStream::connect(proxy.listen).await.expect("connect");
    let mut out = PREFACE.to_vec();
    frame(&mut out, SETTINGS, 0, 0, &[]);
    s.write_all(&out).await.expect("preface");
    s
}

/// One frame read: (type, flags, stream, payload); `None` at the end of the connection.
async fn read_frame(s: &mut TcpStream) -> Option<(u8, u8, u32, Vec<u8>)> {
    let mut head = [0u8; 9];
    s.read_exact(&mut head).await.ok()?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = vec![0; len];
    s.read_exact(&mut payload).await.ok()?;
    Some((head[3], head[4], stream, payload))
}

/// Reads frames until a GOAWAY (its error code) or the end of the connection (`None`),
/// answering the server's SETTINGS and PINGs; `seen` gets every other frame.
async fn until_goaway(s: &mut TcpStream, seen: &mut Vec<(u8, u8, u32)>) -> Option<u32> {
    let mut code = None;
    let read = frames(s, |kind, _, _, payload| match kind {
        GOAWAY => {
            code = Some(u32::from_be_bytes(payload[4..8].try_into().unwrap()));
            false
        }
        _ => true,
    });
    let mut rest = tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("the server neither sent GOAWAY nor closed within 10 s");
    seen.append(&mut rest);
    code
}

/// Reads frames while `more` says so (or to the end of the connection), answering the
/// server's SETTINGS and PINGs as a client does; returns the frames `more` was asked about.
async fn frames(
    s: &mut TcpStream,
    mut more: impl FnMut(u8, u8, u32, &[u8]) -> bool,
) -> Vec<(u8, u8, u32)> {
    let mut seen = Vec::new();
    while let Some((kind, flags, stream, payload)) = read_frame(s).await {
        let answer = match kind {
            SETTINGS if flags & ACK == 0 => Some((SETTINGS, Vec::new())),
            PING if flags & ACK == 0 => Some((PING, payload.clone())),
            _ => None,
        };
        if let Some((kind, payload)) = answer {
            let mut out = Vec::new();
            frame(&mut out, kind, ACK, 0, &payload);
            let _ = s.write_all(&out).await;
            continue;
        }
        let go_on = more(kind, flags, stream, &payload);
        seen.push((kind, flags, stream));
        if !go_on {
            break;
        }
    }
    seen
}

async fn proxy_to(backend: &Backend, extra: &str) -> Proxy {
    let (listen, admin) = (free_port(), free_port());
    Proxy::start(&format!(
        r#"
        listeners: [{{ name: public, address: "127.0.0.1:{listen}" }}]
        admin: {{ address: "127.0.0.1:{admin}" }}
        {extra}
        services:
          api:
            versions:
              blue: {{ release: v1, backends: ["{}"], weight: 100 }}
        "#,
        backend.addr
    ))
    .await
}

async fn rejections(proxy: &Proxy, reason: &str) -> f64 {
    proxy
        .metric_sum("switchyard_edge_rejections_total", &[("reason", reason)])
        .await
}

/// A healthy h2c request still works: the proxy survived.
async fn still_serves(proxy: &Proxy) {
    let reply = Client::h2c(proxy.listen)
        .get("/after")
        .await
        .expect("reply");
    assert_eq!(reply.status, http::StatusCode::OK, "{}", reply.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rapid_reset_flood_is_cut_with_enhance_your_calm() {
    let backend = Backend::start_with_delay("blue-1", Duration::from_millis(200)).await;
    let proxy = proxy_to(&backend, "").await;
    let mut s = connect(&proxy).await;
    // CVE-2023-44487: streams opened and cancelled at once, far more than are ever in flight.
    let mut out = Vec::new();
    let floods = 2_000u32;
    for i in 0..floods {
        let id = 2 * i + 1;
        frame(
            &mut out,
            HEADERS,
            END_STREAM | END_HEADERS,
            id,
            &get_block("/r"),
        );
        frame(&mut out, RST_STREAM, 0, id, &CANCEL.to_be_bytes());
    }
    // The server may close while the flood is still being written.
    let _ = s.write_all(&out).await;
    let code = until_goaway(&mut s, &mut Vec::new()).await;
    assert_eq!(code, Some(ENHANCE_YOUR_CALM), "GOAWAY code");
    assert_eq!(rejections(&proxy, "http2_protocol").await, 1.0);
    still_serves(&proxy).await;
    // Every stream the backend did see was one the client cancelled: none is its failure.
    let hits = backend.hits();
    assert!(
        hits < floods as usize / 4,
        "{hits} of {floods} reset streams reached the backend"
    );
    let failures = proxy
        .metric_sum("switchyard_request_failures_total", &[("service", "api")])
        .await;
    assert_eq!(failures, 0.0, "client resets counted against the backend");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continuation_flood_ends_the_connection_without_reaching_the_backend() {
    let backend = Backend::start("blue-1").await;
    let proxy = proxy_to(&backend, "limits: { max_header_bytes: 8192 }").await;
    let mut s = connect(&proxy).await;
    // One header block that never ends: HEADERS without END_HEADERS, then CONTINUATION
    // frames of literal headers, 16 MiB in all if the server kept reading.
    let mut first = Vec::new();
    frame(&mut first, HEADERS, END_STREAM, 1, &get_block("/c"));
    s.write_all(&first).await.expect("headers");
    let mut literal = Vec::new();
    for i in 0..1000 {
        let name = format!("x-flood-{i:04}");
        literal.extend_from_slice(&[0x00, name.len() as u8]);
        literal.extend_from_slice(name.as_bytes());
        literal.extend_from_slice(&[0x08]);
        literal.extend_from_slice(b"abcdefgh");
        if literal.len() > 16_000 {
            break;
        }
    }
    let mut cont = Vec::new();
    frame(&mut cont, CONTINUATION, 0, 1, &literal);
    let mut written = 0usize;
    let (mut rd, mut wr) = s.into_split();
    let writer = tokio::spawn(async move {
        while written < 16 << 20 {
            if wr.write_all(&cont).await.is_err() {
                return written;
            }
            written += cont.len();
        }
        written
    });
    // Whatever the codec answers (a GOAWAY, a 431 and a close), the connection ends.
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = rd.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    });
    read.await
        .expect("the connection was not closed within 10 s");
    let written = writer.await.unwrap();
    assert!(
        written < 16 << 20,
        "the server read all {written} bytes of one header block"
    );
    assert_eq!(
        backend.hits(),
        0,
        "an unfinished header block reached the backend"
    );
    still_serves(&proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_the_client_resets_is_logged_as_the_clients_and_not_a_failure() {
    let backend = Backend::start_with_delay("blue-1", Duration::from_secs(2)).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let proxy = proxy_to(
        &backend,
        &format!(
            "access_log: {{ path: \"{}\", format: json }}",
            log.display()
        ),
    )
    .await;
    let mut s = connect(&proxy).await;
    let mut out = Vec::new();
    frame(
        &mut out,
        HEADERS,
        END_STREAM | END_HEADERS,
        1,
        &get_block("/slow"),
    );
    s.write_all(&out).await.expect("headers");
    // Reset once the request is at the backend.
    eventually(
        RELOAD_TIMEOUT,
        "the request at the backend",
        async || match backend.hits() {
            0 => Err("not yet".to_string()),
            _ => Ok(()),
        },
    )
    .await;
    let mut rst = Vec::new();
    frame(&mut rst, RST_STREAM, 0, 1, &CANCEL.to_be_bytes());
    s.write_all(&rst).await.expect("reset");

    let line = eventually(RELOAD_TIMEOUT, "one access log line", async || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        match text.lines().next() {
            Some(l) => Ok(serde_json::from_str::<serde_json::Value>(l).expect("json")),
            None => Err("no line".to_string()),
        }
    })
    .await;
    assert_eq!(line["status"], 499, "{line}");
    assert_eq!(line["path"], "/slow", "{line}");
    // Cancelled at once, not when the backend answered 2 s later.
    let took = line["duration_ms"].as_f64().expect("duration_ms");
    assert!(took < 1500.0, "the exchange ran on after the reset: {line}");
    let failures = proxy
        .metric_sum("switchyard_request_failures_total", &[("service", "api")])
        .await;
    assert_eq!(
        failures, 0.0,
        "the client's reset counted against the backend"
    );
    // The connection itself is fine: the next stream on it is served.
    let mut next = Vec::new();
    frame(
        &mut next,
        HEADERS,
        END_STREAM | END_HEADERS,
        3,
        &get_block("/next"),
    );
    s.write_all(&next).await.expect("next");
    let got = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match read_frame(&mut s).await {
                Some((HEADERS, _, 3, block)) => return block,
                Some((GOAWAY, ..)) | None => panic!("connection ended"),
                Some(_) => {}
            }
        }
    })
    .await
    .expect("a response on stream 3");
    assert_eq!(got[0], 0x88, ":status 200 (HPACK static index 8)");
    let lines = eventually(RELOAD_TIMEOUT, "two access log lines", async || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        match text.lines().count() {
            2 => Ok(text),
            n => Err(format!("{n} lines: {text}")),
        }
    })
    .await;
    assert!(
        lines.lines().nth(1).unwrap().contains(r#""status":200"#),
        "{lines}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_sends_goaway_and_the_stream_in_flight_finishes() {
    let backend = Backend::start_with_delay("blue-1", Duration::from_millis(1500)).await;
    let mut proxy = proxy_to(&backend, "").await;
    let mut s = connect(&proxy).await;
    let mut out = Vec::new();
    frame(
        &mut out,
        HEADERS,
        END_STREAM | END_HEADERS,
        1,
        &get_block("/drain"),
    );
    s.write_all(&out).await.expect("headers");
    eventually(
        RELOAD_TIMEOUT,
        "the request at the backend",
        async || match backend.hits() {
            0 => Err("not yet".to_string()),
            _ => Ok(()),
        },
    )
    .await;
    proxy.sigterm();

    let mut seen = Vec::new();
    let code = until_goaway(&mut s, &mut seen).await;
    assert_eq!(code, Some(0), "GOAWAY NO_ERROR on shutdown");
    // After GOAWAY: the response to stream 1, to its end, then the connection closes.
    let rest = tokio::time::timeout(Duration::from_secs(10), frames(&mut s, |_, _, _, _| true))
        .await
        .expect("the connection closed after the drain");
    let rest = [seen, rest].concat();
    assert!(
        rest.iter().any(|&(k, _, id)| k == HEADERS && id == 1),
        "no response to the stream in flight: {rest:?}"
    );
    assert!(
        rest.iter()
            .any(|&(_, flags, id)| id == 1 && flags & END_STREAM != 0),
        "the stream in flight did not end: {rest:?}"
    );
    assert!(
        !rest.iter().any(|&(k, _, _)| k == RST_STREAM),
        "the stream in flight was reset: {rest:?}"
    );
    let status = proxy.wait_exit(Duration::from_secs(15)).await;
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_read_holds_the_upstream_not_the_proxys_memory() {
    const DATA: u8 = 0x0;
    const WINDOW_UPDATE: u8 = 0x8;
    const SIZE: usize = 32 << 20;
    let backend = Backend::start("blue-1").await;
    let proxy = proxy_to(&backend, "").await;
    still_serves(&proxy).await;
    let before = rss_kib(proxy.pid());

    let mut s = connect(&proxy).await;
    let mut block = get_block("/big");
    let (name, value) = (b"x-response-bytes", SIZE.to_string());
    block.extend_from_slice(&[0x00, name.len() as u8]);
    block.extend_from_slice(name);
    block.push(value.len() as u8);
    block.extend_from_slice(value.as_bytes());
    let mut out = Vec::new();
    frame(&mut out, HEADERS, END_STREAM | END_HEADERS, 1, &block);
    s.write_all(&out).await.expect("headers");
    // The default windows (65,535 bytes), never opened: the proxy may send that much.
    let mut data = 0usize;
    let stalled = tokio::time::timeout(
        Duration::from_secs(2),
        frames(&mut s, |kind, _, _, payload| {
            if kind == DATA {
                data += payload.len();
            }
            true
        }),
    )
    .await;
    assert!(stalled.is_err(), "the connection ended: {stalled:?}");
    assert!(data <= 65_535, "{data} bytes past a 65,535-byte window");
    let grew = rss_kib(proxy.pid()).saturating_sub(before);
    assert!(
        grew < 2 * 1024,
        "the proxy grew by {grew} KiB holding a 32 MiB response for a stalled client"
    );

    // Open both windows: the whole body arrives, intact in length.
    let mut open = Vec::new();
    let more = (i32::MAX as u32 - 65_535).to_be_bytes();
    frame(&mut open, WINDOW_UPDATE, 0, 0, &more);
    frame(&mut open, WINDOW_UPDATE, 0, 1, &more);
    s.write_all(&open).await.expect("window update");
    let ended = tokio::time::timeout(
        Duration::from_secs(20),
        frames(&mut s, |kind, flags, _, payload| {
            if kind == DATA {
                data += payload.len();
            }
            !(kind == DATA && flags & END_STREAM != 0)
        }),
    )
    .await
    .expect("the body within 20 s");
    assert!(ended
        .last()
        .is_some_and(|&(k, f, _)| k == DATA && f & END_STREAM != 0));
    assert_eq!(data, SIZE);
}

/// A backend that answers every request head `200` with no body and records every byte it
/// receives.
async fn recording_backend() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
) {
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = tcp.local_addr().expect("addr");
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = std::sync::Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = tcp.accept().await {
            let record = std::sync::Arc::clone(&record);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16384];
                let mut heads = 0;
                while let Ok(n @ 1..) = s.read(&mut buf).await {
                    let now = {
                        let mut all = record.lock().unwrap();
                        all.extend_from_slice(&buf[..n]);
                        all.windows(4).filter(|w| w == b"\r\n\r\n").count()
                    };
                    for _ in heads..now {
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                            .await;
                    }
                    heads = now;
                }
            });
        }
    });
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_over_http2_never_tunnels_the_clients_bytes_to_a_backend() {
    const DATA: u8 = 0x0;
    let (addr, seen) = recording_backend().await;
    let (listen, admin) = (free_port(), free_port());
    let proxy = Proxy::start(&format!(
        r#"
        listeners: [{{ name: public, address: "127.0.0.1:{listen}" }}]
        admin: {{ address: "127.0.0.1:{admin}" }}
        services:
          api:
            versions:
              blue: {{ release: v1, backends: ["{addr}"], weight: 100 }}
        "#
    ))
    .await;
    let mut s = connect(&proxy).await;
    // CONNECT api.test:443 (RFC 9113 §8.5: no :scheme, no :path), then what a tunnel would
    // carry: a request the proxy never routed.
    let mut block = vec![0x02, 7];
    block.extend_from_slice(b"CONNECT");
    block.extend_from_slice(&[0x01, 12]);
    block.extend_from_slice(b"api.test:443");
    let mut out = Vec::new();
    frame(&mut out, HEADERS, END_HEADERS, 1, &block);
    frame(
        &mut out,
        DATA,
        0,
        1,
        b"GET /smuggled HTTP/1.1\r\nHost: internal\r\n\r\n",
    );
    s.write_all(&out).await.expect("connect");
    // The stream is answered and ends (or is reset); it never stays open as a tunnel.
    let ended = tokio::time::timeout(
        Duration::from_secs(10),
        frames(&mut s, |kind, flags, id, _| {
            !(id == 1 && (kind == RST_STREAM || flags & END_STREAM != 0))
        }),
    )
    .await
    .expect("the CONNECT stream ended");
    assert!(ended.iter().any(|&(_, _, id)| id == 1), "{ended:?}");
    let mut more = Vec::new();
    frame(
        &mut more,
        DATA,
        END_STREAM,
        1,
        b"GET /smuggled2 HTTP/1.1\r\n\r\n",
    );
    let _ = s.write_all(&more).await;
    // A healthy request after it, through the same backend.
    let mut next = Vec::new();
    frame(
        &mut next,
        HEADERS,
        END_STREAM | END_HEADERS,
        3,
        &get_block("/after"),
    );
    s.write_all(&next).await.expect("next");
    tokio::time::timeout(
        Duration::from_secs(10),
        frames(&mut s, |kind, _, id, _| !(kind == HEADERS && id == 3)),
    )
    .await
    .expect("stream 3 answered");
    let text = String::from_utf8_lossy(&seen.lock().unwrap()).into_owned();
    assert!(
        !text.contains("smuggled"),
        "tunnelled bytes reached the backend: {text}"
    );
}
