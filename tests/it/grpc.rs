//! gRPC through the proxy with a real gRPC client and server (tonic): a call that failed on
//! the server answers HTTP 200 with its `grpc-status` in the trailers (or, trailers-only, in
//! the headers), and SPEC §5 counts the server-side codes as the backend's failures (reason
//! `grpc`) — so a gRPC canary that fails every call is rolled back like any other.
// tonic's API hands `Status` (176 bytes) around in `Result`s; these tests follow it.
#![allow(clippy::result_large_err)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::harness::*;
use tonic::codec::ProstCodec;
use tonic::{Code, Status};

/// The one message type of the test service.
#[derive(Clone, PartialEq, prost::Message)]
struct Msg {
    #[prost(string, tag = "1")]
    text: String,
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;
type MsgStream = Pin<Box<dyn futures_util::Stream<Item = Result<Msg, Status>> + Send>>;

/// `test.Echo`: `Say` (unary) answers with `code` (OK: the echo); `Count` (server streaming)
/// sends one message, then ends with `code` in the trailers.
#[derive(Clone)]
struct Echo {
    code: Code,
}

impl tonic::server::NamedService for Echo {
    const NAME: &'static str = "test.Echo";
}

impl tonic::server::UnaryService<Msg> for Echo {
    type Response = Msg;
    type Future = BoxFuture<Result<tonic::Response<Msg>, Status>>;

    fn call(&mut self, req: tonic::Request<Msg>) -> Self::Future {
        let code = self.code;
        Box::pin(async move {
            match code {
                Code::Ok => Ok(tonic::Response::new(req.into_inner())),
                code => Err(Status::new(code, "the test server says no")),
            }
        })
    }
}

impl tonic::server::ServerStreamingService<Msg> for Echo {
    type Response = Msg;
    type ResponseStream = MsgStream;
    type Future = BoxFuture<Result<tonic::Response<MsgStream>, Status>>;

    fn call(&mut self, req: tonic::Request<Msg>) -> Self::Future {
        let code = self.code;
        Box::pin(async move {
            let first = Ok(req.into_inner());
            let end = (code != Code::Ok).then(|| Err(Status::new(code, "broke off")));
            let items: Vec<Result<Msg, Status>> = std::iter::once(first).chain(end).collect();
            let stream: MsgStream = Box::pin(futures_util::stream::iter(items));
            Ok(tonic::Response::new(stream))
        })
    }
}

impl tower_service::Service<http::Request<tonic::body::BoxBody>> for Echo {
    type Response = http::Response<tonic::body::BoxBody>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::BoxBody>) -> Self::Future {
        let echo = self.clone();
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(ProstCodec::<Msg, Msg>::default());
            Ok(match req.uri().path() {
                "/test.Echo/Count" => grpc.server_streaming(echo, req).await,
                _ => grpc.unary(echo, req).await,
            })
        })
    }
}

/// A tonic server answering every call with `code`.
async fn grpc_server(code: Code) -> SocketAddr {
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind grpc server");
    let addr = tcp.local_addr().expect("addr");
    let incoming = tokio_stream_of_listener(tcp);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(Echo { code })
            .serve_with_incoming(incoming),
    );
    addr
}

fn tokio_stream_of_listener(
    tcp: tokio::net::TcpListener,
) -> impl futures_util::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures_util::stream::unfold(tcp, |tcp| async move {
        let accepted = tcp.accept().await.map(|(s, _)| s);
        Some((accepted, tcp))
    })
}

/// A gRPC client of the proxy (h2c by prior knowledge, as gRPC does).
async fn client(proxy: &Proxy) -> tonic::client::Grpc<tonic::transport::Channel> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", proxy.listen))
        .expect("uri")
        .connect_timeout(Duration::from_secs(5))
        .timeout(REQUEST_TIMEOUT)
        .connect()
        .await
        .expect("connect to the proxy");
    tonic::client::Grpc::new(channel)
}

/// One unary `Say`, with extra metadata; the status the client got.
async fn say(
    grpc: &mut tonic::client::Grpc<tonic::transport::Channel>,
    metadata: &[(&'static str, &'static str)],
) -> Code {
    let mut req = tonic::Request::new(Msg { text: "hi".into() });
    for (k, v) in metadata {
        req.metadata_mut().insert(*k, v.parse().expect("metadata"));
    }
    grpc.ready().await.expect("channel ready");
    let path = http::uri::PathAndQuery::from_static("/test.Echo/Say");
    let answer: Result<tonic::Response<Msg>, Status> =
        grpc.unary(req, path, ProstCodec::default()).await;
    match answer {
        Ok(r) => {
            assert_eq!(r.into_inner().text, "hi");
            Code::Ok
        }
        Err(status) => status.code(),
    }
}

/// One server-streaming `Count`: the messages received, and how the stream ended.
async fn count(grpc: &mut tonic::client::Grpc<tonic::transport::Channel>) -> (usize, Code) {
    grpc.ready().await.expect("channel ready");
    let path = http::uri::PathAndQuery::from_static("/test.Echo/Count");
    let req = tonic::Request::new(Msg { text: "n".into() });
    let answer = grpc.server_streaming(req, path, ProstCodec::<Msg, Msg>::default());
    let mut stream = match answer.await {
        Ok(r) => r.into_inner(),
        Err(status) => return (0, status.code()),
    };
    let mut n = 0;
    loop {
        match stream.message().await {
            Ok(Some(_)) => n += 1,
            Ok(None) => return (n, Code::Ok),
            Err(status) => return (n, status.code()),
        }
    }
}

async fn grpc_failures(proxy: &Proxy, version: &str) -> f64 {
    proxy
        .metric_sum(
            "switchyard_request_failures_total",
            &[("version", version), ("reason", "grpc")],
        )
        .await
}

/// One h2c service `echo` with `versions` (YAML lines) and `extra` (YAML under the service).
fn config(versions: &str, extra: &str) -> String {
    format!(
        r#"
        listeners: [{{ name: public, address: "127.0.0.1:0" }}]
        admin: {{ address: "127.0.0.1:0" }}
        state_dir: state
        services:
          echo:
            versions:
        {versions}
            upstream: {{ protocol: h2c }}
        {extra}
        "#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_grpc_statuses_are_failures_and_client_side_ones_are_not() {
    let unavailable = grpc_server(Code::Unavailable).await;
    let invalid = grpc_server(Code::InvalidArgument).await;
    let ok = grpc_server(Code::Ok).await;
    let proxy = Proxy::start(&config(
        &format!(
            r#"
                  down:    {{ release: v1, backends: ["{unavailable}"], weight: 0 }}
                  picky:   {{ release: v1, backends: ["{invalid}"], weight: 0 }}
                  fine:    {{ release: v1, backends: ["{ok}"], weight: 100 }}"#
        ),
        r#"
            overrides:
              - { header: x-to, value: down, version: down }
              - { header: x-to, value: picky, version: picky }"#,
    ))
    .await;
    let mut grpc = client(&proxy).await;

    // A trailers-only answer (the status in the response headers) …
    assert_eq!(say(&mut grpc, &[("x-to", "down")]).await, Code::Unavailable);
    assert_eq!(
        say(&mut grpc, &[("x-to", "picky")]).await,
        Code::InvalidArgument
    );
    assert_eq!(say(&mut grpc, &[]).await, Code::Ok);
    eventually(
        RELOAD_TIMEOUT,
        "one grpc failure",
        async || match grpc_failures(&proxy, "down").await {
            1.0 => Ok(()),
            n => Err(format!("{n} grpc failures of down")),
        },
    )
    .await;
    assert_eq!(
        grpc_failures(&proxy, "picky").await,
        0.0,
        "INVALID_ARGUMENT is the caller's"
    );
    assert_eq!(grpc_failures(&proxy, "fine").await, 0.0);
    let fine_ok = proxy
        .metric_sum(
            "switchyard_requests_total",
            &[("version", "fine"), ("code", "2xx")],
        )
        .await;
    assert_eq!(fine_ok, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_ends_with_unavailable_in_its_trailers_is_a_grpc_failure() {
    let down = grpc_server(Code::Unavailable).await;
    let ok = grpc_server(Code::Ok).await;
    let proxy = Proxy::start(&config(
        &format!(
            r#"
                  down: {{ release: v1, backends: ["{down}"], weight: 100 }}
                  fine: {{ release: v1, backends: ["{ok}"], weight: 0 }}"#
        ),
        r#"
            overrides:
              - { header: x-to, value: fine, version: fine }"#,
    ))
    .await;
    let mut grpc = client(&proxy).await;
    // One message arrives, then the status comes in the trailers.
    assert_eq!(count(&mut grpc).await, (1, Code::Unavailable));
    eventually(
        RELOAD_TIMEOUT,
        "one grpc failure",
        async || match grpc_failures(&proxy, "down").await {
            1.0 => Ok(()),
            n => Err(format!("{n} grpc failures")),
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_grpc_canary_failing_every_call_with_unavailable_is_rolled_back() {
    let stable = grpc_server(Code::Ok).await;
    let canary = grpc_server(Code::Unavailable).await;
    let proxy = Proxy::start(&config(
        &format!(
            r#"
                  blue:  {{ release: v1, backends: ["{stable}"], weight: 100 }}
                  green: {{ release: v2, backends: ["{canary}"], weight: 0 }}"#
        ),
        r#"
            overrides:
              - { header: x-canary, value: always, version: green }
            rollout:
              stable: blue
              canary: green
              steps: [{ traffic: 10%, duration: 5m }, { traffic: 100% }]
              analysis: { interval: 1m, fast_fail: { error_rate: 50, min_requests: 20 } }"#,
    ))
    .await;
    let mut grpc = client(&proxy).await;
    // Calls forced onto the canary fail with UNAVAILABLE (HTTP 200 + grpc-status) until the
    // fast-fail rollback takes it out (then the stable answers OK).
    let mut codes = Vec::new();
    for _ in 0..60 {
        let code = say(&mut grpc, &[("x-canary", "always")]).await;
        codes.push(code);
        if code == Code::Ok {
            break;
        }
    }
    let failed = codes
        .iter()
        .take_while(|c| **c == Code::Unavailable)
        .count();
    assert!(failed >= 20, "the canary answered {codes:?}");
    let svc = eventually(Duration::from_secs(15), "rolled back", async || {
        let svc = proxy.api("/services/echo").await;
        match svc["rollout"]["state"] == "rolled_back" {
            true => Ok(svc),
            false => Err(svc["rollout"].to_string()),
        }
    })
    .await;
    let reason = svc["rollout"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("fast-fail"), "{reason}");
    // Rolled back: the override no longer reaches the canary; the stable answers.
    assert_eq!(say(&mut grpc, &[("x-canary", "always")]).await, Code::Ok);
}
