//! A real headless Chromium, driven over the DevTools protocol, for the dashboard tests.
//!
//! The browser runs as a plain process with `--remote-debugging-port=0`; its port is read from
//! the `DevToolsActivePort` file in its temp profile, the page's WebSocket from `/json/list`.
//! Tests then evaluate JavaScript in the page (read the DOM, click buttons, type a token) and
//! take screenshots at a chosen width. `.ci/run` installs Debian's `chromium`; elsewhere a
//! missing browser fails the test with how to install it (or set `CHROMIUM`). Killed on drop.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::harness::get_once;

/// Start-up (profile, DevTools port, first page) and any one protocol call.
const START_BOUND: Duration = Duration::from_secs(30);
const CALL_BOUND: Duration = Duration::from_secs(20);

/// `CHROMIUM`, else the first of the usual names on `PATH`.
pub fn chromium() -> PathBuf {
    if let Some(path) = std::env::var_os("CHROMIUM") {
        return PathBuf::from(path);
    }
    let names = [
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ];
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in names {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "the dashboard tests need a headless Chromium and found none on PATH ({}).\n\
         Install it: sudo apt-get install --no-install-recommends chromium   (Debian/Ubuntu;\n\
         .ci/run does this), or set CHROMIUM=/path/to/chrome",
        names.join(", ")
    );
}

pub struct Browser {
    child: Child,
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts headless Chromium at 1280×900 on `url`.
    pub async fn open(url: &str) -> Browser {
        let browser = chromium();
        let profile = tempfile::tempdir().expect("tempdir");
        let child = Command::new(&browser)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--hide-scrollbars",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "--window-size=1280,900",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", browser.display()));
        let deadline = Instant::now() + START_BOUND;
        let port_file = profile.path().join("DevToolsActivePort");
        let port: u16 = loop {
            if let Some(port) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|t| t.lines().next().and_then(|l| l.trim().parse().ok()))
            {
                break port;
            }
            assert!(
                Instant::now() < deadline,
                "{} wrote no DevToolsActivePort within {START_BOUND:?}",
                browser.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let devtools = SocketAddr::from(([127, 0, 0, 1], port));
        let ws_url = loop {
            let page = get_once(devtools, "/json/list")
                .await
                .ok()
                .and_then(|r| serde_json::from_slice::<Value>(&r.body).ok())
                .and_then(|list| {
                    list.as_array()?
                        .iter()
                        .find(|t| t["type"] == "page")
                        .and_then(|t| t["webSocketDebuggerUrl"].as_str().map(str::to_string))
                });
            if let Some(url) = page {
                break url;
            }
            assert!(
                Instant::now() < deadline,
                "Chromium listed no page within {START_BOUND:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let (ws, _) = tokio_tungstenite::connect_async(ws_url.as_str())
            .await
            .unwrap_or_else(|e| panic!("cannot open the DevTools socket {ws_url}: {e}"));
        Browser {
            child,
            ws,
            next_id: 0,
            _profile: profile,
        }
    }

    /// One DevTools call; its `result`.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let request = json!({ "id": id, "method": method, "params": params }).to_string();
        let exchange = async {
            self.ws
                .send(Message::text(request))
                .await
                .unwrap_or_else(|e| panic!("DevTools {method}: {e}"));
            // Events come in between; skip everything but our answer.
            while let Some(message) = self.ws.next().await {
                let Ok(Message::Text(text)) = message else {
                    continue;
                };
                let Ok(reply) = serde_json::from_str::<Value>(text.as_str()) else {
                    continue;
                };
                if reply["id"] == id {
                    if !reply["error"].is_null() {
                        panic!("DevTools {method} failed: {}", reply["error"]);
                    }
                    return reply["result"].clone();
                }
            }
            panic!("the DevTools socket closed during {method}");
        };
        tokio::time::timeout(CALL_BOUND, exchange)
            .await
            .unwrap_or_else(|_| panic!("DevTools {method} took longer than {CALL_BOUND:?}"))
    }

    /// Evaluates `expression` in the page (promises awaited); its value as JSON.
    pub async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "awaitPromise": true, "returnByValue": true }),
            )
            .await;
        if let Some(exception) = result.get("exceptionDetails") {
            panic!("the page threw evaluating {expression}:\n{exception}");
        }
        result["result"]["value"].clone()
    }

    /// Polls `condition` (a JS expression) until it is truthy; panics with `what` and the
    /// value of `explain` (a JS expression) when it is not within `within`.
    pub async fn wait_for(&mut self, condition: &str, within: Duration, what: &str, explain: &str) {
        let deadline = Instant::now() + within;
        loop {
            let v = self.eval(&format!("!!({condition})")).await;
            if v == Value::Bool(true) {
                return;
            }
            if Instant::now() >= deadline {
                let state = self.eval(explain).await;
                panic!("the dashboard never showed {what} within {within:?}: {state}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Renders the page `width` CSS pixels wide (a phone's viewport when `mobile`).
    pub async fn set_width(&mut self, width: u32, mobile: bool) {
        let height = if mobile { 844 } else { 900 };
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile }),
        )
        .await;
    }

    /// A PNG of the whole page at its current width, written to `path`; its size in bytes.
    pub async fn screenshot(&mut self, path: &Path) -> usize {
        let metrics = self.call("Page.getLayoutMetrics", json!({})).await;
        let size = &metrics["cssContentSize"];
        let (w, h) = (
            size["width"].as_f64().unwrap_or(1280.0),
            size["height"].as_f64().unwrap_or(900.0).min(6000.0),
        );
        let shot = self
            .call(
                "Page.captureScreenshot",
                json!({ "format": "png", "captureBeyondViewport": true,
                        "clip": { "x": 0, "y": 0, "width": w, "height": h, "scale": 1 } }),
            )
            .await;
        let png = base64_decode(shot["data"].as_str().expect("screenshot data"));
        std::fs::write(path, &png)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        png.len()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Standard base64 (the protocol's screenshots), padding and whitespace ignored.
pub fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for v in text.bytes().filter_map(value) {
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

#[test]
fn base64_decodes_what_the_protocol_sends() {
    assert_eq!(base64_decode("iVBORw0KGgo="), b"\x89PNG\r\n\x1a\n");
    assert_eq!(base64_decode("aGVsbG8gd29ybGQ="), b"hello world");
    assert_eq!(base64_decode("YQ=="), b"a");
}
