//! Talking to the proxy's admin API: status, metrics, the control API, `switchyard ctl`.

use bytes::Bytes;
use http::{Request, StatusCode};
use serde_json::Value;

use super::*;

impl Proxy {
    /// A request to the admin listener with an optional JSON body and bearer token.
    pub async fn admin_send(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> Reply {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        self.admin_send_raw(method, path, body, token).await
    }

    /// `GET /api/v1{path}` → JSON, asserting 200.
    pub async fn api(&self, path: &str) -> Value {
        let reply = self.admin_get(&format!("/api/v1{path}")).await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "GET /api/v1{path}: {}",
            reply.text()
        );
        serde_json::from_slice(&reply.body)
            .unwrap_or_else(|e| panic!("GET /api/v1{path} is not JSON ({e}): {}", reply.text()))
    }

    /// The newest revision in `service`'s history (`GET /api/v1/services/{service}/history`).
    pub async fn last_revision(&self, service: &str) -> Value {
        let history = self.api(&format!("/services/{service}/history")).await;
        history["revisions"]
            .as_array()
            .and_then(|r| r.last())
            .cloned()
            .unwrap_or_else(|| panic!("no revision in {history}"))
    }

    /// `GET path` on the admin listener, on a fresh connection.
    pub async fn admin_get(&self, path: &str) -> Reply {
        get_once(self.admin, path)
            .await
            .unwrap_or_else(|e| panic!("admin GET {path}: {e}"))
    }

    /// `GET /api/v1/status` parsed as JSON.
    pub async fn status_json(&self) -> Value {
        let reply = self.admin_get("/api/v1/status").await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "/api/v1/status: {}",
            reply.text()
        );
        serde_json::from_slice(&reply.body)
            .unwrap_or_else(|e| panic!("/api/v1/status is not JSON ({e}): {}", reply.text()))
    }

    /// `(reloads.ok, reloads.error)` from the status API.
    pub async fn reload_counts(&self) -> (u64, u64) {
        let status = self.status_json().await;
        let ok = status["reloads"]["ok"].as_u64();
        let err = status["reloads"]["error"].as_u64();
        match (ok, err) {
            (Some(ok), Some(err)) => (ok, err),
            _ => panic!("status has no numeric reloads.ok/error: {status}"),
        }
    }

    /// The sum of a metric's samples whose labels include all of `labels`.
    pub async fn metric_sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let text = self.admin_get("/metrics").await.text();
        parse_metrics(&text)
            .iter()
            .filter(|s| s.name == name && labels.iter().all(|(k, v)| s.label(k) == *v))
            .map(|s| s.value)
            .sum()
    }

    /// `switchyard ctl --admin http://<admin> <args>` with only `env` in its environment's
    /// ctl variables.
    pub async fn ctl_env(&self, args: &[&str], env: &[(&str, &str)]) -> CtlRun {
        let admin = format!("http://{}", self.admin);
        let mut all = vec!["ctl", "--admin", admin.as_str()];
        all.extend_from_slice(args);
        let (status, stdout, stderr) = run_cli_env(&all, env).await;
        CtlRun {
            code: status.code(),
            stdout,
            stderr,
        }
    }

    /// `switchyard ctl --admin http://<admin> <args>`, no token.
    pub async fn ctl(&self, args: &[&str]) -> CtlRun {
        self.ctl_env(args, &[]).await
    }

    /// A request to the admin listener with a raw body (for malformed JSON and the like).
    pub async fn admin_send_raw(
        &self,
        method: &str,
        path: &str,
        body: impl Into<Bytes>,
        token: Option<&str>,
    ) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = req.body(full(body)).expect("request");
        Client::http1(self.admin)
            .send(req)
            .await
            .unwrap_or_else(|e| panic!("admin {method} {path}: {e}"))
    }

    /// `PUT /api/v1/services/{service}/weights` with `weights`, no token → (status, JSON).
    pub async fn put_weights(&self, service: &str, weights: Value) -> (StatusCode, Value) {
        let path = format!("/services/{service}/weights");
        self.api_send("PUT", &path, Some(weights), None).await
    }

    /// `PUT`/`POST` to `/api/v1{path}` with a JSON body and optional token → (status, JSON).
    pub async fn api_send(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> (StatusCode, Value) {
        let reply = self
            .admin_send(method, &format!("/api/v1{path}"), body, token)
            .await;
        let doc = serde_json::from_slice(&reply.body).unwrap_or_else(|e| {
            panic!(
                "{method} /api/v1{path} answered {} with non-JSON ({e}): {}",
                reply.status,
                reply.text()
            )
        });
        (reply.status, doc)
    }
}
