//! The rollback drill: deploy a bad canary, let Switchyard take it out, measure the damage.
//!
//! Runbooks say an untested rollback is no rollback. This program starts a healthy stable
//! backend and a canary that answers 500 to everything, runs the real `switchyard` binary in
//! front of them with a canary rollout (10% to the canary), sends open-loop traffic at a fixed
//! rate, and reports how long the bad release was in traffic and how many requests it failed.
//!
//! ```sh
//! cargo build --release && cargo run --release --example drill -- --rate 1000 --fast-fail on
//! ```
//! `scripts/drill.sh` runs it with and without fast-fail.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};

struct Options {
    rate: u64,
    fast_fail: bool,
    share: u32,
    binary: String,
}

fn options() -> Options {
    let mut o = Options {
        rate: 1000,
        fast_fail: true,
        share: 10,
        binary: "target/release/switchyard".into(),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let value = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--rate" => o.rate = value.parse().expect("--rate N"),
            "--fast-fail" => o.fast_fail = value == "on",
            "--share" => o.share = value.parse().expect("--share PERCENT"),
            "--binary" => o.binary = value,
            other => panic!(
                "unknown option {other} (use --rate N --fast-fail on|off --share P --binary PATH)"
            ),
        }
        i += 2;
    }
    o
}

async fn backend(status: StatusCode) -> SocketAddr {
    let tcp = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind backend");
    let addr = tcp.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = tcp.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| async move {
                    let mut r = Response::new(Full::new(Bytes::from_static(b"drill\n")));
                    *r.status_mut() = status;
                    Ok::<_, Infallible>(r)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

async fn get(addr: SocketAddr, path: &str) -> Option<(StatusCode, Bytes)> {
    let stream = TcpStream::connect(addr).await.ok()?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(conn);
    let req = Request::get(path)
        .header("host", addr.to_string())
        .body(Empty::<Bytes>::new())
        .ok()?;
    let response = sender.send_request(req).await.ok()?;
    let status = response.status();
    let body = response.into_body().collect().await.ok()?.to_bytes();
    Some((status, body))
}

#[tokio::main]
async fn main() {
    let o = options();
    let stable = backend(StatusCode::OK).await;
    let canary = backend(StatusCode::INTERNAL_SERVER_ERROR).await;
    let (listen, admin) = (free_port(), free_port());
    let dir = std::env::temp_dir().join(format!("switchyard-drill-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = dir.join("drill.yaml");
    let fast_fail = if o.fast_fail {
        "{ error_rate: 50, min_requests: 20 }"
    } else {
        "off"
    };
    std::fs::write(
        &config,
        format!(
            r#"listeners: [{{ name: public, address: "127.0.0.1:{listen}" }}]
admin: {{ address: "127.0.0.1:{admin}" }}
state_dir: "{state}"
services:
  api:
    versions:
      blue:  {{ release: v1, backends: ["{stable}"], weight: 100 }}
      green: {{ release: v2-bad, backends: ["{canary}"], weight: 0 }}
    rollout:
      stable: blue
      canary: green
      steps: [{{ traffic: {share}, duration: 10m }}, {{ traffic: 100 }}]
      analysis:
        interval: 1s
        threshold: 2
        min_requests: 5
        fast_fail: {fast_fail}
        metrics: [{{ name: error-rate, threshold: 1 }}]
"#,
            state = dir.join("state").display(),
            share = o.share,
        ),
    )
    .expect("write config");

    let mut child = std::process::Command::new(&o.binary)
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} (build it with cargo build --release): {e}",
                o.binary
            )
        });
    let admin_addr: SocketAddr = ([127, 0, 0, 1], admin).into();
    let proxy: SocketAddr = ([127, 0, 0, 1], listen).into();
    let ready_by = Instant::now() + Duration::from_secs(20);
    while get(admin_addr, "/ready").await.map(|r| r.0) != Some(StatusCode::OK) {
        assert!(Instant::now() < ready_by, "proxy not ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Open-loop load: `workers` tasks, each pacing its share of the rate on one connection.
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let failure_times: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let workers = 16u64;
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (stop, ok, failed, times) = (
            stop.clone(),
            ok.clone(),
            failed.clone(),
            failure_times.clone(),
        );
        let period = Duration::from_secs_f64(workers as f64 / o.rate as f64);
        tasks.push(tokio::spawn(async move {
            let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
                .build_http::<Empty<Bytes>>();
            let uri: http::Uri = format!("http://{proxy}/").parse().expect("uri");
            let mut tick = tokio::time::interval(period);
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                match client.get(uri.clone()).await {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.into_body().collect().await;
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        times.lock().expect("lock").push(start.elapsed());
                    }
                }
            }
        }));
    }

    // Watch the API until the canary is out.
    let deadline = start + Duration::from_secs(120);
    let mut rolled_back_at = None;
    while Instant::now() < deadline {
        if let Some((_, body)) = get(admin_addr, "/api/v1/services/api").await {
            let doc: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            if doc["rollout"]["state"] == "rolled_back" {
                rolled_back_at = Some((start.elapsed(), doc["rollout"]["reason"].to_string()));
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Keep the load on a little longer: no failure may follow the rollback.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);

    let times = failure_times.lock().expect("lock").clone();
    let sent = ok.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "drill: {} req/s offered, canary share {}%, fast-fail {}",
        o.rate,
        o.share,
        if o.fast_fail { "on" } else { "off" }
    );
    println!(
        "  achieved rate:        {:.0} req/s ({sent} requests in {elapsed:.1}s)",
        sent as f64 / elapsed
    );
    match (rolled_back_at, times.first(), times.last()) {
        (Some((at, reason)), Some(first), Some(last)) => {
            println!("  rolled back:          {reason}");
            println!(
                "  first failure:        {:.2}s after load start",
                first.as_secs_f64()
            );
            println!(
                "  last failure:         {:.2}s after load start",
                last.as_secs_f64()
            );
            println!(
                "  recovery (first→last failure): {:.2}s",
                (*last - *first).as_secs_f64()
            );
            println!("  API showed rolled_back at {:.2}s", at.as_secs_f64());
            println!("  requests failed by the bad canary: {}", times.len());
        }
        (None, _, _) => {
            println!("  NOT rolled back within 120s");
            std::process::exit(1);
        }
        _ => println!("  no failures observed"),
    }
}
