//! The fast HTTP/1.1 path (proxy/src/h1.rs) seen from the wire: plain GETs are proxied byte
//! for byte, responses keep their framing, and a connection that sends something the fast
//! path does not take (a body) moves to the general path mid-connection without a hiccup.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::harness::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn proxy_to(backend: SocketAddr) -> Proxy {
    Proxy::start_services(&format!(
        r#"
        api:
          versions:
            blue: {{ release: v1, backends: ["{backend}"], weight: 100 }}
        "#
    ))
    .await
}

/// A backend speaking raw HTTP/1.1: for each request head it reads, writes what `answer`
/// returns for the request's path; `None` closes the connection. Counts connections.
async fn scripted_backend(answer: fn(&str) -> Option<Vec<u8>>) -> (SocketAddr, Arc<AtomicUsize>) {
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = tcp.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                    }
                    let end = seen.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    let head = String::from_utf8_lossy(&seen[..end]).into_owned();
                    seen.drain(..end);
                    let path = head.split(' ').nth(1).unwrap_or("/").to_string();
                    match answer(&path) {
                        Some(bytes) => {
                            if stream.write_all(&bytes).await.is_err() {
                                return;
                            }
                            if path.starts_with("/close") {
                                return;
                            }
                        }
                        None => return,
                    }
                }
            });
        }
    });
    (addr, connections)
}

/// One response read off a raw connection: status, lower-cased head, body.
struct RawResponse {
    status: u16,
    head: String,
    body: Vec<u8>,
}

/// Reads one response, framed by Content-Length, chunked, or the connection closing.
async fn read_response(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    head_request: bool,
) -> RawResponse {
    let mut chunk = [0u8; 8192];
    let end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed before a response head");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    buf.drain(..end);
    let status = head[9..12].parse().unwrap();
    let header = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_string))
    };
    let mut body = Vec::new();
    if head_request {
    } else if let Some(len) = header("content-length") {
        let len: usize = len.parse().unwrap();
        while buf.len() < len {
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed mid-body");
            buf.extend_from_slice(&chunk[..n]);
        }
        body = buf.drain(..len).collect();
    } else if header("transfer-encoding").as_deref() == Some("chunked") {
        // Chunk by chunk, then trailer lines up to the empty one.
        loop {
            let line = read_line(stream, buf).await;
            let size = usize::from_str_radix(line.split(';').next().unwrap(), 16).unwrap();
            if size == 0 {
                while !read_line(stream, buf).await.is_empty() {}
                break;
            }
            while buf.len() < size + 2 {
                let n = stream.read(&mut chunk).await.unwrap();
                assert!(n > 0, "closed mid-body");
                buf.extend_from_slice(&chunk[..n]);
            }
            body.extend_from_slice(&buf[..size]);
            assert_eq!(&buf[size..size + 2], b"\r\n");
            buf.drain(..size + 2);
        }
    } else {
        stream.read_to_end(buf).await.unwrap();
        body = std::mem::take(buf);
    }
    RawResponse { status, head, body }
}

async fn read_line(stream: &mut TcpStream, buf: &mut Vec<u8>) -> String {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(p) = buf.windows(2).position(|w| w == b"\r\n") {
            let line = String::from_utf8(buf[..p].to_vec()).unwrap();
            buf.drain(..p + 2);
            return line;
        }
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed mid-body");
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: api.test\r\n\r\n").into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_moves_to_the_general_path_on_a_body_and_keeps_working() {
    let backend = Backend::start("blue-1").await;
    let proxy = proxy_to(backend.addr).await;
    let mut stream = TcpStream::connect(proxy.listen).await.unwrap();
    let mut buf = Vec::new();

    stream.write_all(&get("/first")).await.unwrap();
    let first = read_response(&mut stream, &mut buf, false).await;
    assert_eq!(first.status, 200, "{}", first.head);
    assert!(String::from_utf8_lossy(&first.body).contains("\"/first\""));

    stream
        .write_all(b"POST /upload HTTP/1.1\r\nHost: api.test\r\nContent-Length: 5\r\n\r\nhello")
        .await
        .unwrap();
    let post = read_response(&mut stream, &mut buf, false).await;
    assert_eq!(post.status, 200, "{}", post.head);
    let echo: serde_json::Value = serde_json::from_slice(&post.body).unwrap();
    assert_eq!(echo["body_len"], 5);
    assert_eq!(echo["path"], "/upload");

    stream.write_all(&get("/after")).await.unwrap();
    let after = read_response(&mut stream, &mut buf, false).await;
    assert_eq!(after.status, 200);
    assert!(String::from_utf8_lossy(&after.body).contains("\"/after\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    let backend = Backend::start("blue-1").await;
    let proxy = proxy_to(backend.addr).await;
    let mut stream = TcpStream::connect(proxy.listen).await.unwrap();
    let mut all = Vec::new();
    for i in 0..5 {
        all.extend_from_slice(&get(&format!("/p{i}")));
    }
    stream.write_all(&all).await.unwrap();
    let mut buf = Vec::new();
    for i in 0..5 {
        let r = read_response(&mut stream, &mut buf, false).await;
        assert_eq!(r.status, 200);
        let echo: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(echo["path"], format!("/p{i}"));
    }
}

fn framed(path: &str) -> Option<Vec<u8>> {
    Some(match path {
        "/chunked" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
            5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-trailer: 1\r\n\r\n"
            .to_vec(),
        "/close" => b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end".to_vec(),
        "/hints" => b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>\r\n\r\n\
            HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
            .to_vec(),
        "/head" => b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n".to_vec(),
        "/secret" => b"HTTP/1.1 200 OK\r\nConnection: x-internal\r\nX-Internal: 1\r\n\
            Keep-Alive: timeout=5\r\nContent-Length: 0\r\n\r\n"
            .to_vec(),
        _ => return None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_keep_their_framing() {
    let (addr, connections) = scripted_backend(framed).await;
    let proxy = proxy_to(addr).await;
    let mut stream = TcpStream::connect(proxy.listen).await.unwrap();
    let mut buf = Vec::new();

    // Chunked passes through; the connections on both sides stay open and reused.
    for _ in 0..3 {
        stream.write_all(&get("/chunked")).await.unwrap();
        let r = read_response(&mut stream, &mut buf, false).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"hello world");
    }
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "upstream connection reused"
    );

    // 1xx answers are skipped; the final answer is what the client gets.
    stream.write_all(&get("/hints")).await.unwrap();
    let r = read_response(&mut stream, &mut buf, false).await;
    assert_eq!((r.status, &r.body[..]), (200, &b"ok"[..]));

    // HEAD: the length is announced, no body follows, the connection carries on.
    stream
        .write_all(b"HEAD /head HTTP/1.1\r\nHost: api.test\r\n\r\n")
        .await
        .unwrap();
    let r = read_response(&mut stream, &mut buf, true).await;
    assert_eq!(r.status, 200);
    assert!(r.head.contains("content-length: 1234"), "{}", r.head);

    // Hop-by-hop response headers, including those Connection names, stay behind.
    stream.write_all(&get("/secret")).await.unwrap();
    let r = read_response(&mut stream, &mut buf, false).await;
    assert_eq!(r.status, 200);
    assert!(!r.head.contains("x-internal"), "{}", r.head);
    assert!(!r.head.contains("keep-alive"), "{}", r.head);

    // No length and no chunking: the body runs until the upstream closes, and the client is
    // told its connection closes too.
    stream.write_all(&get("/close")).await.unwrap();
    let r = read_response(&mut stream, &mut buf, false).await;
    assert_eq!(r.status, 200);
    assert!(r.head.contains("connection: close"), "{}", r.head);
    assert_eq!(r.body, b"until the end");
}

/// `/` is answered (keep-alive); anything else closes the connection without an answer.
fn ok_on_root(path: &str) -> Option<Vec<u8>> {
    (path == "/").then(|| b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_closes_without_answering_is_502_and_the_next_requests_are_fine() {
    let (addr, connections) = scripted_backend(ok_on_root).await;
    let proxy = proxy_to(addr).await;
    let mut stream = TcpStream::connect(proxy.listen).await.unwrap();
    let mut buf = Vec::new();
    stream.write_all(&get("/")).await.unwrap();
    assert_eq!(
        read_response(&mut stream, &mut buf, false).await.status,
        200
    );
    // `/gone` makes the backend close its side (also on the fresh connection the proxy tries
    // next, as the first was a reused one): 502 for that request…
    stream.write_all(&get("/gone")).await.unwrap();
    let gone = read_response(&mut stream, &mut buf, false).await;
    assert_eq!(gone.status, 502);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // …and the next requests get fresh connections, no error.
    for _ in 0..3 {
        stream.write_all(&get("/")).await.unwrap();
        assert_eq!(
            read_response(&mut stream, &mut buf, false).await.status,
            200
        );
    }
    assert!(connections.load(Ordering::SeqCst) >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_closing_idle_keep_alive_connections_costs_no_request() {
    // A backend with a short keep-alive timeout: each connection serves one request, then
    // closes after 50 ms idle. Requests spaced wider than that always meet a stale pooled
    // connection — POST (not idempotent, never retried after sending) included.
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = tcp.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream.write_all(&ok_on_root("/").unwrap()).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            });
        }
    });
    let proxy = proxy_to(addr).await;
    let mut stream = TcpStream::connect(proxy.listen).await.unwrap();
    let mut buf = Vec::new();
    for method in ["GET", "POST", "GET", "DELETE", "POST"] {
        let req = format!("{method} / HTTP/1.1\r\nHost: api.test\r\nContent-Length: 0\r\n\r\n");
        stream.write_all(req.as_bytes()).await.unwrap();
        let r = read_response(&mut stream, &mut buf, false).await;
        assert_eq!(r.status, 200, "{method}: {}", r.head);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_made_answers_say_what_failed_and_when() {
    let proxy = proxy_to(refusing_addr()).await;
    let mut stream = TcpStream::connect(proxy.listen).await.unwrap();
    let mut buf = Vec::new();
    stream.write_all(&get("/")).await.unwrap();
    let r = read_response(&mut stream, &mut buf, false).await;
    assert_eq!(r.status, 502, "{}", r.head);
    assert!(r.head.contains("\r\ndate: "), "{}", r.head);
    assert_eq!(r.body, b"upstream connect failed\n");
    // The connection stays usable after a proxy-made answer.
    stream.write_all(&get("/")).await.unwrap();
    assert_eq!(
        read_response(&mut stream, &mut buf, false).await.status,
        502
    );
}

/// The head deadline moves with every request, though the connection keeps one timer for
/// its life (moved only when it fires early, not per request): after busy seconds longer
/// than `header_read_timeout`, every request was served, and then a stalled head is still cut
/// at about the timeout — not at once (a deadline left behind), not never (one not re-armed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_connection_keeps_its_head_deadline_request_by_request() {
    let backend = Backend::start("blue-1").await;
    let (listen, admin) = (free_port(), free_port());
    let proxy = Proxy::start(&format!(
        r#"
        listeners: [{{ name: public, address: "127.0.0.1:{listen}" }}]
        admin: {{ address: "127.0.0.1:{admin}" }}
        limits: {{ header_read_timeout: 1s }}
        services:
          api:
            versions:
              blue: {{ release: v1, backends: ["{addr}"], weight: 100 }}
        "#,
        addr = backend.addr,
    ))
    .await;
    let mut stream = TcpStream::connect(proxy.listen).await.unwrap();
    let mut buf = Vec::new();
    let busy = std::time::Instant::now();
    let (mut served, mut answered) = (0, std::time::Instant::now());
    // A request every 300 ms for 3 s: three timeouts' worth, each gap well inside one.
    while busy.elapsed() < Duration::from_secs(3) {
        stream.write_all(&get("/busy")).await.unwrap();
        let r = read_response(&mut stream, &mut buf, false).await;
        assert_eq!(r.status, 200, "{}", r.head);
        (served, answered) = (served + 1, std::time::Instant::now());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(served >= 5, "only {served} requests in 3 s");

    stream
        .write_all(b"GET /slow HTTP/1.1\r\nHost: api.test\r\nX-Slow: ")
        .await
        .unwrap();
    let mut chunk = [0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk)).await;
    // The head's deadline runs from the last answer (it is the idle keep-alive timeout too).
    let closed = answered.elapsed();
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "not closed: {read:?}"
    );
    assert!(
        closed >= Duration::from_millis(800),
        "cut too early: {closed:?}"
    );
    assert_eq!(backend.hits(), served);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_upstream_connection_of_a_busy_moment_is_kept_for_the_next() {
    // 300 requests in flight at once to one backend (more than the 256 idle connections the
    // pool used to keep): once they are answered, all 300 upstream connections are pooled, so
    // the next 300 reuse them and the backend sees no new connection.
    const AT_ONCE: usize = 300;
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    // Every request is held until all AT_ONCE of its round have arrived.
    let round = Arc::new(tokio::sync::Barrier::new(AT_ONCE));
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = tcp.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            let round = round.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let mut seen = Vec::new();
                loop {
                    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                    }
                    seen.clear();
                    round.wait().await;
                    let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                    if stream.write_all(ok).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let proxy = proxy_to(addr).await;
    let mut clients = Vec::new();
    for _ in 0..AT_ONCE {
        clients.push((TcpStream::connect(proxy.listen).await.unwrap(), Vec::new()));
    }
    let mut opened = Vec::new();
    for _ in 0..2 {
        let all = clients.iter_mut().map(|(stream, buf)| async move {
            stream.write_all(&get("/")).await.unwrap();
            read_response(stream, buf, false).await.status
        });
        let statuses =
            tokio::time::timeout(Duration::from_secs(30), futures_util::future::join_all(all))
                .await
                .expect("a round of requests did not finish");
        assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
        // Each connection is pooled right after its response has gone out.
        tokio::time::sleep(Duration::from_millis(300)).await;
        opened.push(connections.load(Ordering::SeqCst));
    }
    assert_eq!(
        opened[0], AT_ONCE,
        "one upstream connection per request in flight"
    );
    assert_eq!(
        opened[1],
        AT_ONCE,
        "the second round opened {} new upstream connections",
        opened[1] - opened[0]
    );
}
