//! The one HTTP client of the tests (in-process apps, real binaries, the chart's rendered
//! containers and remote deployments) and the problem-body assertion.

use std::time::Duration;

use reqwest::header::CONTENT_TYPE;
use reqwest::Response;
use serde_json::{json, Value};

/// A base URL and a reqwest client.
#[derive(Clone)]
pub struct HttpClient {
    pub base: String,
    pub client: reqwest::Client,
}

impl HttpClient {
    /// A client for `base` (no trailing slash) with a per-request timeout.
    pub fn new(base: &str, timeout: Duration) -> Self {
        Self::with_client(base, reqwest::Client::builder().timeout(timeout).build().unwrap())
    }

    pub fn with_client(base: &str, client: reqwest::Client) -> Self {
        Self { base: base.trim_end_matches('/').to_string(), client }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn get(&self, path: &str) -> Response {
        self.client.get(self.url(path)).send().await.unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// PUT `{"value": value}` to `/v1/keys/{key}{query}` (`key` as it goes into the path).
    pub async fn put(&self, key: &str, value: &str, query: &str) -> Response {
        self.put_json(key, json!({ "value": value }), query, &[]).await
    }

    pub async fn put_json(&self, key: &str, body: Value, query: &str, headers: &[(&str, &str)]) -> Response {
        self.try_put_json(key, body, query, headers).await.unwrap_or_else(|e| panic!("PUT {key}: {e}"))
    }

    /// The same, returning transport errors (a failover is going on).
    pub async fn try_put_json(
        &self,
        key: &str,
        body: Value,
        query: &str,
        headers: &[(&str, &str)],
    ) -> reqwest::Result<Response> {
        let mut req = self.client.put(self.url(&format!("/v1/keys/{key}{query}"))).json(&body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().await
    }

    /// PUT of a raw body with this content type to `path` (invalid JSON, other media types).
    pub async fn put_raw(&self, path: &str, content_type: &str, body: impl Into<reqwest::Body>) -> Response {
        let req = self.client.put(self.url(path)).header(CONTENT_TYPE, content_type).body(body);
        req.send().await.unwrap_or_else(|e| panic!("PUT {path}: {e}"))
    }

    pub async fn delete(&self, key: &str, query: &str) -> Response {
        self.client.delete(self.url(&format!("/v1/keys/{key}{query}"))).send().await.expect("DELETE key")
    }

    /// The stored value of `key`, or None on 404.
    pub async fn value_of(&self, key: &str) -> Option<String> {
        let r = self.get(&format!("/v1/keys/{key}")).await;
        if r.status() == 404 {
            return None;
        }
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        Some(v["value"].as_str().unwrap().to_string())
    }

    /// Whether `key` reads back with exactly `value` (false on any error).
    pub async fn holds(&self, key: &str, value: &str) -> bool {
        match self.client.get(self.url(&format!("/v1/keys/{key}"))).send().await {
            Ok(r) if r.status() == 200 => r.json::<Value>().await.map(|v| v["value"] == value).unwrap_or(false),
            _ => false,
        }
    }

    /// GETs `path` until it answers `status` (used while processes start).
    pub async fn wait_status(&self, path: &str, status: u16, timeout: Duration) {
        let url = self.url(path);
        super::eventually(timeout, &format!("{url} to answer {status}"), || async {
            let r = self.client.get(&url).send().await.ok()?;
            (r.status().as_u16() == status).then_some(())
        })
        .await
    }

    /// PUT ?wait=5, GET, DELETE ?wait=5, GET 404; panics on a failure.
    pub async fn write_read_delete(&self, key: &str) {
        if let Err(e) = self.try_write_read_delete(key).await {
            panic!("{e}");
        }
    }

    /// Retries `try_write_read_delete` until it passes within `timeout` (a failover is going on).
    pub async fn eventually_write_read_delete(&self, key: &str, timeout: Duration) {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            match self.try_write_read_delete(key).await {
                Ok(()) => return,
                Err(e) => assert!(std::time::Instant::now() < deadline, "no successful write within {timeout:?}: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// PUT ?wait=5 (applied), GET (the value), DELETE ?wait=5, GET 404.
    pub async fn try_write_read_delete(&self, key: &str) -> Result<(), String> {
        let value = format!("written through the rendered chart to {key}");
        let r =
            self.try_put_json(key, json!({ "value": value }), "?wait=5", &[]).await.map_err(|e| format!("PUT: {e}"))?;
        let status = r.status().as_u16();
        let body: Value = r.json().await.map_err(|e| format!("PUT body: {e}"))?;
        if status != 200 || body["status"] != "applied" {
            return Err(format!("PUT ?wait=5 answered {status} {body}"));
        }
        let (status, text) = self.try_get_text(&format!("/v1/keys/{key}")).await.ok_or("GET failed")?;
        let got: Value = serde_json::from_str(&text).unwrap_or_default();
        if status != 200 || got["value"] != value.as_str() || got["key"] != key {
            return Err(format!("GET answered {status} {text}"));
        }
        let r = self
            .client
            .delete(self.url(&format!("/v1/keys/{key}?wait=5")))
            .send()
            .await
            .map_err(|e| format!("DELETE: {e}"))?;
        if r.status().as_u16() != 200 {
            return Err(format!("DELETE ?wait=5 answered {}", r.status()));
        }
        let (status, _) = self.try_get_text(&format!("/v1/keys/{key}")).await.ok_or("GET failed")?;
        if status != 404 {
            return Err(format!("GET after DELETE answered {status}"));
        }
        Ok(())
    }

    /// GET `path`: (status, body), None on a transport error.
    pub async fn try_get_text(&self, path: &str) -> Option<(u16, String)> {
        let r = self.client.get(self.url(path)).send().await.ok()?;
        let status = r.status().as_u16();
        Some((status, r.text().await.unwrap_or_default()))
    }
}

/// DELETEs each URL, ignoring failures, from any context (`Drop`, inside or outside a runtime):
/// on a thread of its own with its own runtime.
pub fn delete_from_drop(urls: Vec<String>, timeout: Duration) {
    let _ = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let c = reqwest::Client::builder().timeout(timeout).build().unwrap();
            for u in urls {
                let _ = c.delete(u).send().await;
            }
        });
    })
    .join();
}

/// Checks a problem body: the status, a JSON content type, non-empty `type` and `title`,
/// `status` repeated in the body, and a `detail` naming `field` (exact case). Returns the body.
pub async fn assert_problem(r: Response, status: u16, field: &str) -> Value {
    // An empty needle is contained in every detail: it would check nothing.
    assert!(!field.is_empty(), "assert_problem needs the word the detail must name");
    let what = format!("{} {}", r.status(), r.url());
    assert_eq!(r.status().as_u16(), status, "{what}");
    let ct = r.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let text = r.text().await.unwrap();
    assert!(ct.starts_with("application/json"), "{what}: problem content type is {ct:?}; body {text}");
    let p: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: body is not JSON ({e}): {text}"));
    assert!(p["type"].as_str().is_some_and(|t| !t.is_empty()), "{what}: type in {p}");
    assert!(p["title"].as_str().is_some_and(|t| !t.is_empty()), "{what}: title in {p}");
    assert_eq!(p["status"], status, "{what}: status in {p}");
    let detail = p["detail"].as_str().unwrap_or_else(|| panic!("{what}: detail in {p}"));
    assert!(detail.contains(field), "{what}: detail {detail:?} does not name {field:?}");
    p
}
