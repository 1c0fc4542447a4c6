//! Edge limits and malformed requests are answered by the proxy and never reach a backend
//! (SPEC §4 "Proxy-made errors", §9).

use std::time::Duration;

use crate::harness::*;
use http::{Request, StatusCode};

async fn proxy_to(backend: &Backend, limits: &str) -> Proxy {
    one_service(backend.addr).top(limits).start().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_head_is_431() {
    let backend = Backend::start("blue-1").await;
    let proxy = proxy_to(&backend, "limits: { max_header_bytes: 4096 }").await;
    let big = "a".repeat(16 * 1024);

    let reply = proxy.client().send(get_with("/", &[("x-big", &big)])).await;

    match reply {
        Ok(reply) => assert_eq!(reply.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
        Err(e) => panic!("expected a 431 answer, got a transport error: {e}"),
    }
    assert_eq!(backend.hits(), 0);
    until_rejected(&proxy, "header_too_large", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_over_max_request_body_is_413() {
    let backend = Backend::start("blue-1").await;
    let proxy = proxy_to(&backend, "limits: { max_request_body: 1000 }").await;
    let mut client = proxy.client();

    let small = client
        .send(Request::post("/").body(full(vec![b'x'; 1000])).unwrap())
        .await
        .unwrap();
    let large = client
        .send(Request::post("/").body(full(vec![b'x'; 5000])).unwrap())
        .await
        .unwrap();

    assert_eq!(small.status, StatusCode::OK, "exactly the limit is allowed");
    assert_eq!(
        large.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        large.text()
    );
    assert_eq!(backend.hits(), 1, "the oversized request was forwarded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_content_length_and_transfer_encoding_is_400_and_not_forwarded() {
    let backend = Backend::start("blue-1").await;
    let proxy = proxy_to(&backend, "").await;

    let response = raw_exchange(
        proxy.listen,
        b"POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\n0\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;

    assert_eq!(raw_status(&response), Some(400), "response: {response:?}");
    assert_eq!(
        backend.hits(),
        0,
        "a smuggling-shaped request reached the backend"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_request_line_is_400() {
    let backend = Backend::start("blue-1").await;
    let proxy = proxy_to(&backend, "").await;

    let response = raw_exchange(proxy.listen, b"GARBAGE\r\n\r\n", Duration::from_secs(3)).await;

    assert_eq!(raw_status(&response), Some(400), "response: {response:?}");
    assert_eq!(backend.hits(), 0);
}

/// `switchyard_edge_rejections_total{reason=…}` from `/metrics` (0 when absent).
async fn rejections(proxy: &Proxy, reason: &str) -> u64 {
    let metrics = proxy.admin_get("/metrics").await.text();
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("switchyard_edge_rejections_total")
                && l.contains(&format!("reason=\"{reason}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

async fn until_rejected(proxy: &Proxy, reason: &str, at_least: u64) {
    eventually(
        Duration::from_secs(10),
        &format!("{reason} to be counted"),
        async || {
            let n = rejections(proxy, reason).await;
            if n >= at_least {
                Ok(())
            } else {
                Err(format!("{reason} = {n}"))
            }
        },
    )
    .await;
}

/// Reads until the server closes the connection; returns what came and when it closed.
async fn read_until_closed(
    stream: &mut tokio::net::TcpStream,
    within: Duration,
) -> (String, Option<Duration>) {
    use tokio::io::AsyncReadExt;
    let start = std::time::Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = within.saturating_sub(start.elapsed());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                return (
                    String::from_utf8_lossy(&out).into_owned(),
                    Some(start.elapsed()),
                )
            }
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&out).into_owned(), None),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_head_is_cut_at_the_header_read_timeout_and_counted() {
    use tokio::io::AsyncWriteExt;
    let backend = Backend::start("blue-1").await;
    let proxy = proxy_to(&backend, "limits: { header_read_timeout: 1s }").await;
    let mut stream = tokio::net::TcpStream::connect(proxy.listen).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\nX-Slow: ")
        .await
        .unwrap();

    let (_, closed) = read_until_closed(&mut stream, Duration::from_secs(8)).await;

    let closed = closed.expect("a slow head must be cut off");
    assert!(
        closed >= Duration::from_millis(800),
        "closed too early: {closed:?}"
    );
    until_rejected(&proxy, "header_timeout", 1).await;
    assert_eq!(backend.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connection_is_closed_after_the_header_read_timeout() {
    use tokio::io::AsyncWriteExt;
    let backend = Backend::start("blue-1").await;
    let proxy = proxy_to(&backend, "limits: { header_read_timeout: 1s }").await;
    let mut stream = tokio::net::TcpStream::connect(proxy.listen).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .await
        .unwrap();

    let (response, closed) = read_until_closed(&mut stream, Duration::from_secs(8)).await;

    assert_eq!(raw_status(&response), Some(200), "{response}");
    let closed = closed.expect("an idle kept-alive connection must be closed");
    assert!(
        closed >= Duration::from_millis(800),
        "closed too early: {closed:?}"
    );
}

/// Idle for longer than a second, a connection waits in the listener's idle set (no timer
/// of its own): a request then is served as before, and the idle keep-alive timeout still
/// closes it, from its last answer, give or take the set's one-second sweep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_idle_keep_alive_connection_is_served_then_closed_at_its_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let backend = Backend::start("blue-1").await;
    let proxy = proxy_to(&backend, "limits: { header_read_timeout: 3s }").await;
    let mut stream = tokio::net::TcpStream::connect(proxy.listen).await.unwrap();
    let request = b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n";
    stream.write_all(request).await.unwrap();
    let mut buf = [0u8; 4096];
    let n = stream.read(&mut buf).await.unwrap();
    assert_eq!(raw_status(&String::from_utf8_lossy(&buf[..n])), Some(200));

    tokio::time::sleep(Duration::from_millis(2000)).await;
    stream.write_all(request).await.unwrap();
    let (response, closed) = read_until_closed(&mut stream, Duration::from_secs(10)).await;

    assert_eq!(raw_status(&response), Some(200), "{response}");
    let closed = closed.expect("an idle kept-alive connection must be closed");
    assert!(
        closed >= Duration::from_millis(2800) && closed < Duration::from_secs(6),
        "closed at {closed:?}, not 3 s (+ at most the 1 s sweep) after its last answer"
    );
    assert_eq!(backend.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_max_connections_are_refused_at_once_and_counted() {
    let backend = Backend::start("blue-1").await;
    let proxy = proxy_to(&backend, "limits: { max_connections: 2 }").await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut client = proxy.client();
        let reply = client.get("/").await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
        held.push(client);
    }

    let mut third = tokio::net::TcpStream::connect(proxy.listen).await.unwrap();
    let (_, closed) = read_until_closed(&mut third, Duration::from_secs(3)).await;
    let closed = closed.expect("the third connection must be closed");
    assert!(closed < Duration::from_secs(1), "refusal took {closed:?}");
    until_rejected(&proxy, "max_connections", 1).await;

    // A freed slot is usable again.
    drop(held);
    eventually(Duration::from_secs(10), "a slot to free up", async || {
        let reply = proxy.client().get("/").await?;
        if reply.status == StatusCode::OK {
            Ok(())
        } else {
            Err(format!("status {}", reply.status))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_body_over_max_request_body_is_cut_413_and_counted() {
    let backend = Backend::start("blue-1").await;
    let proxy = proxy_to(&backend, "limits: { max_request_body: 1000 }").await;
    let mut client = proxy.client();

    let ok = client
        .send(
            Request::post("/")
                .body(chunked(pattern_bytes(1000), 100))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.echo().body_len(), 1000);

    let big = proxy
        .client()
        .send(
            Request::post("/")
                .body(chunked(pattern_bytes(5000), 100))
                .unwrap(),
        )
        .await;
    // The proxy answers 413 and closes while the client may still be writing: depending on
    // who is faster the client reads the 413 or fails its write. Either way the request was
    // refused, which the rejection counter below proves.
    match big {
        Ok(reply) => assert_eq!(
            reply.status,
            StatusCode::PAYLOAD_TOO_LARGE,
            "{}",
            reply.text()
        ),
        Err(e) => assert!(e.contains("writing a body"), "unexpected client error: {e}"),
    }
    until_rejected(&proxy, "body_too_large", 1).await;
    // Not blamed on the backend: no failure counted.
    let metrics = proxy.admin_get("/metrics").await.text();
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with("switchyard_request_failures_total") && !l.ends_with(" 0")),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_attempts_over_raw_sockets_never_reach_the_backend() {
    let backend = Backend::start("blue-1").await;
    let proxy = proxy_to(&backend, "").await;
    let attempts: &[&[u8]] = &[
        // CL.TE and TE.CL, both orders, with a smuggled request in the body.
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n",
        // Bare-LF line endings do not hide it either.
        b"POST / HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\nContent-Length: 3\n\n0\r\n\r\n",
        // Differing duplicate Content-Length, and lengths that are not plain digits.
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\nhello!",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
        // Transfer-Encoding the proxy cannot decode or that is obfuscated.
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        // Invalid chunk framing.
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n",
        // Control characters in header values; a space in a header name.
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Bad: a\x01b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Bad: a\x00b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Bad: a\x7fb\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX Bad: 1\r\n\r\n",
        // Obsolete line folding.
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Folded: a\r\n b\r\n\r\n",
    ];
    for (i, attempt) in attempts.iter().enumerate() {
        let response = raw_exchange(proxy.listen, attempt, Duration::from_secs(3)).await;
        let status = raw_status(&response);
        assert!(
            status.is_some_and(|s| s == 400),
            "attempt {i} {:?} got {response:?}",
            String::from_utf8_lossy(attempt)
        );
        assert_eq!(
            backend.hits(),
            0,
            "attempt {i} {:?} reached the backend",
            String::from_utf8_lossy(attempt)
        );
    }
    // The proxy is still fine.
    assert_eq!(
        proxy.client().get("/").await.unwrap().status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_requests_with_conflicting_lengths_never_reach_an_http1_backend() {
    let backend = Backend::start("blue-1").await;
    let proxy = proxy_to(&backend, "").await;
    let mut client = Client::h2c(proxy.listen);

    let two_lengths = Request::post("/")
        .header("content-length", "5")
        .header("content-length", "50")
        .body(full("hello"))
        .unwrap();
    let reply = client.send(two_lengths).await;
    if let Ok(reply) = reply {
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text());
    }
    assert_eq!(
        backend.hits(),
        0,
        "a request with two lengths was forwarded"
    );

    // A body longer than its declared length: the h2 codec resets the stream when the extra
    // DATA arrives. The head may already be on its way upstream by then (bodies stream), but
    // hyper's HTTP/1.1 encoder never writes past the declared length, so nothing extra — no
    // second request — can reach the backend.
    let lying = Request::post("/")
        .header("content-length", "2")
        .body(full(
            "hello\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
        ))
        .unwrap();
    let reply = Client::h2c(proxy.listen).send(lying).await;
    // If the backend answered before the reset, it got no more than the declared 2 bytes.
    if let Some(reply) = reply.ok().filter(|r| r.status == StatusCode::OK) {
        assert!(reply.echo().body_len() <= 2, "{}", reply.text());
    }
    assert!(
        backend.hits() <= 1,
        "a smuggled request reached the backend"
    );
}

/// A deterministic generator (xorshift) for the malformed-request corpus.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next() % items.len() as u64) as usize]
    }
}

/// One malformed request: always a complete head (so the proxy answers at once), broken in
/// one of several ways.
fn malformed(rng: &mut Rng) -> Vec<u8> {
    const BAD_METHODS: &[&str] = &[
        "GE T",
        "G\x00T",
        "GET\x7f",
        "(GET)",
        "GET\t",
        "",
        "G@T[",
        "\x16\x03\x01",
    ];
    const BAD_VERSIONS: &[&str] = &[
        "HTTP/1.2",
        "HTTP/2.0",
        "HTTP/0.9",
        "http/1.1",
        "HTTP/1.1 x",
        "HTTP/11",
        "HTTPS/1.1",
        "HTTP/1.",
    ];
    const BAD_HEADERS: &[&str] = &[
        "X Bad: 1",
        "X-Bad : 1",
        ": empty-name",
        "X-Bad\x00: 1",
        "X-Bad: \x01",
        "X-Bad: a\x7fb",
        "No-Colon",
        "X-Fold: a\r\n b",
        "(X): 1",
        "X-Bad: \x1b[31m",
    ];
    const BAD_FRAMING: &[&str] = &[
        "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
        "Content-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        "Content-Length: x\r\n\r\n",
        "Content-Length: 1 2\r\n\r\nab",
        "Transfer-Encoding: gzip\r\n\r\n",
        "Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
        "Transfer-Encoding: chunked\r\n\r\ng\r\n",
        "Transfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n",
        "Transfer-Encoding: chunked\r\n\r\n3;\nabc\r\n0\r\n\r\n",
        "Transfer-Encoding: chunked\r\n\r\n10000000000000000\r\n",
        "Transfer-Encoding:\r\n\r\n",
    ];
    let path = format!("/c/{}", rng.next() % 1000);
    let noise = format!("X-N{}: {}\r\n", rng.next() % 10, rng.next() % 1000);
    match rng.next() % 4 {
        0 => format!(
            "{} {path} HTTP/1.1\r\nHost: a\r\n{noise}\r\n",
            rng.pick(BAD_METHODS)
        )
        .into_bytes(),
        1 => format!(
            "GET {path} {}\r\nHost: a\r\n{noise}\r\n",
            rng.pick(BAD_VERSIONS)
        )
        .into_bytes(),
        2 => format!(
            "GET {path} HTTP/1.1\r\nHost: a\r\n{noise}{}\r\n\r\n",
            rng.pick(BAD_HEADERS)
        )
        .into_bytes(),
        _ => format!(
            "POST {path} HTTP/1.1\r\nHost: a\r\n{noise}{}",
            rng.pick(BAD_FRAMING)
        )
        .into_bytes(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_malformed_requests_never_crash_the_proxy_or_reach_a_backend() {
    use tokio::io::AsyncWriteExt;
    let backend = Backend::start("blue-1").await;
    let mut proxy = proxy_to(&backend, "limits: { header_read_timeout: 2s }").await;
    let mut rng = Rng(0x5eed_cafe_f00d_1234);
    let corpus: Vec<Vec<u8>> = (0..1200).map(|_| malformed(&mut rng)).collect();
    let addr = proxy.listen;

    let mut statuses = std::collections::BTreeMap::<Option<u16>, usize>::new();
    for batch in corpus.chunks(24) {
        let tasks: Vec<_> = batch
            .iter()
            .cloned()
            .map(|req| {
                tokio::spawn(async move {
                    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
                    let _ = stream.write_all(&req).await;
                    let _ = stream.shutdown().await;
                    let (response, _) =
                        read_until_closed(&mut stream, Duration::from_secs(5)).await;
                    (raw_status(&response), req)
                })
            })
            .collect();
        for task in tasks {
            let (status, req) = task.await.unwrap();
            assert!(
                status != Some(200),
                "a malformed request was answered 200: {:?}",
                String::from_utf8_lossy(&req)
            );
            *statuses.entry(status).or_default() += 1;
        }
    }

    assert_eq!(backend.hits(), 0, "answers by status: {statuses:?}");
    assert!(
        proxy.wait_exit(Duration::ZERO).await.is_none(),
        "the proxy exited"
    );
    assert_eq!(
        proxy.client().get("/").await.unwrap().status,
        StatusCode::OK
    );
    eprintln!(
        "malformed corpus: {} requests, answers by status: {statuses:?}",
        corpus.len()
    );
}
