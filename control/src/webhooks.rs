//! Webhooks: telling people's systems about rollouts, and asking gates for permission.
//!
//! *Event* webhooks get every rollout event of their service as JSON, retried with backoff by
//! a background task, so a slow or dead receiver never blocks the controller or the data path.
//! *Gate* webhooks must answer 2xx before a rollout starts or advances; the controller asks in
//! a spawned task and gets the answer back as an intent, so it keeps serving meanwhile.

use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Uri};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::sync::mpsc;

/// Delivery attempts per event webhook call, with doubling pauses from 500 ms.
const ATTEMPTS: u32 = 5;
/// Deliveries waiting at once; beyond it new ones are dropped (and logged).
const QUEUE: usize = 1024;

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

#[derive(Debug)]
pub struct Delivery {
    pub url: String,
    pub timeout: Duration,
    pub payload: Value,
}

/// Handle to the background deliverer of event webhooks.
#[derive(Debug, Clone)]
pub struct EventWebhooks {
    tx: mpsc::Sender<Delivery>,
}

impl EventWebhooks {
    /// Starts the deliverer task.
    pub fn start() -> EventWebhooks {
        let (tx, mut rx) = mpsc::channel::<Delivery>(QUEUE);
        tokio::spawn(async move {
            let client = client();
            while let Some(d) = rx.recv().await {
                // Each delivery retries on its own, so one dead receiver delays no other.
                let client = client.clone();
                tokio::spawn(async move { deliver(&client, d).await });
            }
        });
        EventWebhooks { tx }
    }

    /// Queues a delivery; never waits.
    pub fn send(&self, delivery: Delivery) {
        if let Err(e) = self.tx.try_send(delivery) {
            tracing::warn!(error = %e, "event webhook queue full; delivery dropped");
        }
    }
}

async fn deliver(client: &HttpClient, d: Delivery) {
    let mut pause = Duration::from_millis(500);
    for attempt in 1..=ATTEMPTS {
        match post(client, &d.url, d.timeout, &d.payload).await {
            Ok(()) => return,
            Err(e) if attempt == ATTEMPTS => {
                tracing::warn!(url = %d.url, error = %e, "event webhook failed; giving up after {ATTEMPTS} attempts");
            }
            Err(e) => {
                tracing::debug!(url = %d.url, error = %e, attempt, "event webhook failed; retrying");
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
        }
    }
}

/// Asks a gate; `Ok` on a 2xx answer within the timeout, else why not.
pub async fn ask_gate(url: &str, timeout: Duration, payload: &Value) -> Result<(), String> {
    post(&client(), url, timeout, payload).await
}

async fn post(
    client: &HttpClient,
    url: &str,
    timeout: Duration,
    payload: &Value,
) -> Result<(), String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("invalid url {url:?}: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("{url}: only http:// webhooks are supported"));
    }
    let req = Request::builder()
        .method(Method::POST)
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::USER_AGENT, "switchyard-webhook")
        .body(Full::new(Bytes::from(payload.to_string())))
        .map_err(|e| e.to_string())?;
    match tokio::time::timeout(timeout, client.request(req)).await {
        Err(_) => Err(format!("{url}: no answer within {timeout:?}")),
        Ok(Err(e)) => Err(format!("{url}: {e}")),
        Ok(Ok(r)) if r.status().is_success() => Ok(()),
        Ok(Ok(r)) => Err(format!("{url} answered {}", r.status())),
    }
}
