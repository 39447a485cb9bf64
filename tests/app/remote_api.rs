//! Black-box API suite: plain HTTP against a base URL, nothing else.
//!
//! Against a deployment:
//!
//! ```text
//! KVQ_TEST_URL=http://<host>:<port> [KVQ_TEST_TOKEN=<token>] cargo test --test app remote_api
//! ```
//!
//! Without `KVQ_TEST_URL` every test starts its own `redis-server` and an in-process server with
//! two workers, so CI runs exactly the same suite. With `KVQ_TEST_REDIS=cluster` (and no
//! `KVQ_TEST_URL`) every test starts a Redis Cluster of 3 masters x 1 replica instead, and the
//! server and workers run in cluster mode: the same contract, with the keys spread over the
//! queue shards. Keys live under a unique
//! `remote-test-<uuid>/` prefix per test and are deleted at the end (also when a test fails).
//!
//! Optional: `KVQ_TEST_MAX_VALUE_BYTES=<n>` tells the suite the deployment's
//! `limits.max_value_bytes`; without it the value-too-large check runs only locally (default 1 MiB).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::header::{CONTENT_TYPE, ETAG, IF_NONE_MATCH, LOCATION};
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};

use crate::support::http::delete_from_drop;
use crate::support::redis_cluster::TestCluster;
use crate::support::{assert_problem, spawn_app, spawn_cluster_app, HttpClient, TestApp, TestRedis};

/// Default `limits.max_value_bytes` (README "Configuration").
const DEFAULT_MAX_VALUE_BYTES: usize = 1024 * 1024;

/// The Redis a local run starts: `KVQ_TEST_REDIS` is `standalone` (the default) or `cluster`.
enum LocalRedis {
    Standalone(Box<TestRedis>),
    Cluster(TestCluster),
}

impl LocalRedis {
    fn start() -> Self {
        match std::env::var("KVQ_TEST_REDIS").unwrap_or_default().trim() {
            "" | "standalone" => Self::Standalone(Box::new(TestRedis::start())),
            "cluster" => Self::Cluster(tokio::task::block_in_place(TestCluster::start)),
            other => panic!("KVQ_TEST_REDIS={other}: expected standalone or cluster"),
        }
    }

    /// The app under test against it: a server and two workers.
    async fn spawn_app(&self) -> TestApp {
        match self {
            Self::Standalone(redis) => spawn_app(redis, 2).await,
            Self::Cluster(cluster) => {
                let app = spawn_cluster_app(cluster, 2, &[]).await;
                assert!(app.store.shards.len() > 1, "cluster mode spreads the keys over several queue shards");
                app
            }
        }
    }
}

/// What the tests talk to: a remote deployment, or a local Redis + app started for this test.
struct Target {
    http: HttpClient,
    prefix: String,
    /// Keys this test wrote; deleted by `cleanup` (or by `Drop` when a test panics).
    created: Mutex<Vec<String>>,
    max_value_bytes: Option<usize>,
    remote: bool,
    // Declared after everything else: dropped last, once the keys are cleaned up.
    _local: Option<(TestApp, LocalRedis)>,
}

impl Target {
    async fn new() -> Self {
        // A deployment with authentication on: `KVQ_TEST_TOKEN`, read and write on at least the
        // `remote-test-` keys (the chart generates one: `test-token` in its auth Secret).
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = std::env::var("KVQ_TEST_TOKEN").ok().filter(|t| !t.trim().is_empty()) {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.trim())).unwrap();
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(45))
            .redirect(reqwest::redirect::Policy::none())
            .default_headers(headers)
            .build()
            .unwrap();
        let prefix = format!("remote-test-{}/", uuid::Uuid::new_v4().simple());
        match std::env::var("KVQ_TEST_URL").ok().filter(|u| !u.trim().is_empty()) {
            Some(url) => {
                let max = std::env::var("KVQ_TEST_MAX_VALUE_BYTES").ok().map(|v| {
                    v.parse().unwrap_or_else(|_| panic!("KVQ_TEST_MAX_VALUE_BYTES={v} is not a number of bytes"))
                });
                Self {
                    http: HttpClient::with_client(url.trim(), client),
                    prefix,
                    created: Mutex::new(Vec::new()),
                    max_value_bytes: max,
                    remote: true,
                    _local: None,
                }
            }
            None => {
                let redis = LocalRedis::start();
                let app = redis.spawn_app().await;
                Self {
                    http: HttpClient::with_client(&app.base, client),
                    prefix,
                    created: Mutex::new(Vec::new()),
                    max_value_bytes: Some(DEFAULT_MAX_VALUE_BYTES),
                    remote: false,
                    _local: Some((app, redis)),
                }
            }
        }
    }

    /// A unique key for this run; remembered for cleanup.
    fn key(&self, name: &str) -> String {
        let k = format!("{}{name}", self.prefix);
        self.created.lock().unwrap().push(k.clone());
        k
    }

    /// The path of a key (percent-encoded) with a query.
    fn key_path(&self, key: &str, query: &str) -> String {
        format!("/v1/keys/{}{query}", enc(key))
    }

    fn key_url(&self, key: &str, query: &str) -> String {
        self.url(&self.key_path(key, query))
    }

    async fn get_key(&self, key: &str) -> Response {
        self.http.get(&self.key_path(key, "")).await
    }

    /// PUT of a key (percent-encoded here).
    async fn put(&self, key: &str, body: Value, query: &str, headers: &[(&str, &str)]) -> Response {
        self.http.put_json(&enc(key), body, query, headers).await
    }

    /// DELETE of a key (percent-encoded here).
    async fn delete(&self, key: &str, query: &str) -> Response {
        self.http.delete(&enc(key), query).await
    }

    /// PUT ?wait=10 that must be applied; returns the task.
    async fn put_applied(&self, key: &str, value: &str) -> Value {
        let r = self.put(key, json!({ "value": value }), "?wait=10", &[]).await;
        assert_eq!(r.status(), 200, "PUT {key} ?wait=10");
        let task: Value = r.json().await.unwrap();
        assert_eq!(task["status"], "applied", "{task}");
        task
    }

    /// Deletes every key this test created (DELETE ?wait) and checks each is gone.
    async fn cleanup(&self) {
        let keys = std::mem::take(&mut *self.created.lock().unwrap());
        for k in keys {
            let r = self.delete(&k, "?wait=10").await;
            assert!(
                matches!(r.status().as_u16(), 200 | 202 | 409),
                "cleanup DELETE {k}: {} {}",
                r.status(),
                r.text().await.unwrap_or_default()
            );
            let r = self.get_key(&k).await;
            assert_eq!(r.status(), 404, "{k} is gone after cleanup");
        }
    }
}

impl std::ops::Deref for Target {
    type Target = HttpClient;
    fn deref(&self) -> &HttpClient {
        &self.http
    }
}

impl Drop for Target {
    /// A failed test still removes its keys from a remote deployment (locally Redis goes away).
    fn drop(&mut self) {
        let keys = std::mem::take(&mut *self.created.lock().unwrap());
        if keys.is_empty() || !self.remote {
            return;
        }
        let urls: Vec<String> = keys.iter().map(|k| self.key_url(k, "?wait=10")).collect();
        delete_from_drop(urls, Duration::from_secs(15));
    }
}

/// Percent-encodes a key for a URL path (everything but unreserved characters).
fn enc(s: &str) -> String {
    kvq::server::pages::percent_encode(s)
}

fn header(r: &Response, name: impl reqwest::header::AsHeaderName) -> Option<String> {
    r.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics() {
    let t = Target::new().await;
    let r = t.get("/healthz").await;
    assert_eq!(r.status(), 200);
    let r = t.get("/readyz").await;
    assert_eq!(r.status(), 200, "readyz: {}", r.text().await.unwrap());

    let r = t.get("/metrics").await;
    assert_eq!(r.status(), 200);
    let ct = header(&r, CONTENT_TYPE).unwrap_or_default();
    assert!(ct.starts_with("text/plain"), "metrics content type {ct}");
    let text = r.text().await.unwrap();
    assert!(text.contains("kvq_http_requests_total"), "metrics:\n{text}");
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_spec_lists_the_v1_paths() {
    let t = Target::new().await;
    let r = t.get("/openapi.json").await;
    assert_eq!(r.status(), 200);
    let spec: Value = serde_json::from_str(&r.text().await.unwrap()).expect("/openapi.json is JSON");
    assert!(spec["openapi"].as_str().is_some_and(|v| v.starts_with("3.")), "openapi version: {}", spec["openapi"]);
    let paths = spec["paths"].as_object().expect("paths");
    for (path, methods) in [
        ("/v1/keys/{key}", &["put", "get", "delete"][..]),
        ("/v1/keys", &["get"][..]),
        ("/v1/tasks/{id}", &["get"][..]),
    ] {
        let p = paths.get(path).unwrap_or_else(|| panic!("{path} missing from {:?}", paths.keys()));
        for m in methods {
            assert!(p.get(*m).is_some(), "{m} {path} missing");
        }
    }
    let r = t.get("/docs").await;
    assert!(r.status().is_success() || r.status().is_redirection(), "/docs: {}", r.status());
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_read_conditions_delete() {
    let t = Target::new().await;
    let key = t.key("lifecycle/ü key");

    // PUT ?wait → 200 applied, with a version and a Location.
    let r = t.put(&key, json!({ "value": "one" }), "?wait=10", &[]).await;
    assert_eq!(r.status(), 200);
    let loc = header(&r, LOCATION).expect("Location");
    let task: Value = r.json().await.unwrap();
    assert_eq!(task["status"], "applied", "{task}");
    assert_eq!(task["op"], "set");
    assert_eq!(task["key"], key.as_str());
    let v1 = task["version"].as_u64().expect("applied task has a version");
    assert_eq!(loc, format!("/v1/tasks/{}", task["id"].as_str().unwrap()));

    // GET → value + ETag.
    let r = t.get_key(&key).await;
    assert_eq!(r.status(), 200);
    let etag = header(&r, ETAG).expect("ETag");
    assert_eq!(etag, format!("\"{v1}\""));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["key"], key.as_str());
    assert_eq!(body["value"], "one");
    assert_eq!(body["version"], v1);
    assert!(body["expires_at"].is_null(), "{body}");

    // If-None-Match: that ETag → 304.
    let r = t.client.get(t.key_url(&key, "")).header(IF_NONE_MATCH, &etag).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(header(&r, ETAG).as_deref(), Some(etag.as_str()));

    // A second write with the right If-Match applies and bumps the version.
    let r = t.put(&key, json!({ "value": "two" }), "?wait=10", &[("If-Match", &etag)]).await;
    assert_eq!(r.status(), 200);
    let v2 = r.json::<Value>().await.unwrap()["version"].as_u64().unwrap();
    assert!(v2 > v1, "versions increase: {v1} then {v2}");

    // Stale If-Match → 412 with the rejected task.
    let r = t.put(&key, json!({ "value": "stale" }), "?wait=10", &[("If-Match", &etag)]).await;
    let p = assert_problem(r, 412, "If-Match").await;
    assert_eq!(p["task"]["status"], "rejected", "{p}");

    // If-None-Match: * on an existing key → 412.
    let r = t.put(&key, json!({ "value": "create" }), "?wait=10", &[("If-None-Match", "*")]).await;
    let p = assert_problem(r, 412, "If-None-Match").await;
    assert_eq!(p["task"]["status"], "rejected", "{p}");

    // Neither rejected write changed anything; the old ETag no longer matches.
    let r = t.client.get(t.key_url(&key, "")).header(IF_NONE_MATCH, &etag).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!((body["value"].as_str(), body["version"].as_u64()), (Some("two"), Some(v2)));

    // DELETE ?wait → 200, then GET → 404 problem.
    let r = t.delete(&key, "?wait=10").await;
    assert_eq!(r.status(), 200);
    let task: Value = r.json().await.unwrap();
    assert_eq!((task["status"].as_str(), task["op"].as_str()), (Some("applied"), Some("delete")), "{task}");
    assert_problem(t.get_key(&key).await, 404, &key).await;

    // If-None-Match: * now succeeds: the key is gone.
    let r = t.put(&key, json!({ "value": "again" }), "?wait=10", &[("If-None-Match", "*")]).await;
    assert_eq!(r.status(), 200);
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_and_task_status() {
    let t = Target::new().await;
    let key = t.key("idem");
    let token = format!("idem-{}", uuid::Uuid::new_v4().simple());

    let r = t.put(&key, json!({ "value": "v" }), "", &[("Idempotency-Key", &token)]).await;
    assert!(matches!(r.status().as_u16(), 200 | 202), "{}", r.status());
    let loc = header(&r, LOCATION).expect("Location");
    let first: Value = r.json().await.unwrap();
    let id = first["task_id"].as_str().or(first["id"].as_str()).expect("task id").to_string();
    assert_eq!(loc, format!("/v1/tasks/{id}"));

    // The same token on a different request is refused, and enqueues nothing.
    let r = t.put(&key, json!({ "value": "other" }), "", &[("Idempotency-Key", &token)]).await;
    assert_problem(r, 422, "Idempotency-Key").await;

    // A replay of the same request (with a wait this time) returns the same task.
    let r = t.put(&key, json!({ "value": "v" }), "?wait=10", &[("Idempotency-Key", &token)]).await;
    assert!(matches!(r.status().as_u16(), 200 | 202), "{}", r.status());
    let again: Value = r.json().await.unwrap();
    let id2 = again["task_id"].as_str().or(again["id"].as_str()).expect("task id");
    assert_eq!(id2, id, "replay returns the same task");

    // The task record, followed until applied.
    let deadline = Instant::now() + Duration::from_secs(10);
    let record = loop {
        let r = t.get(&loc).await;
        assert_eq!(r.status(), 200);
        let rec: Value = r.json().await.unwrap();
        if rec["status"] != "queued" {
            break rec;
        }
        assert!(Instant::now() < deadline, "task still queued: {rec}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(record["id"], id.as_str());
    assert_eq!(record["op"], "set");
    assert_eq!(record["key"], key.as_str());
    assert_eq!(record["status"], "applied", "{record}");
    assert!(record["attempts"].as_u64().is_some_and(|a| a >= 1), "{record}");
    assert!(record["version"].as_u64().is_some(), "{record}");
    assert!(record["enqueued_at"].is_string() && record["finished_at"].is_string(), "{record}");

    // Only one write was enqueued: the value is the first body's.
    let r = t.get_key(&key).await;
    assert_eq!(r.json::<Value>().await.unwrap()["value"], "v");

    // Unknown tasks → 404 problem.
    assert_problem(t.get("/v1/tasks/0123456789abcdef0123456789abcdef").await, 404, "task").await;
    assert_problem(t.get("/v1/tasks/not-a-task").await, 404, "task").await;
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_pages_visit_every_key_once() {
    let t = Target::new().await;
    let mut keys: Vec<String> = (0..11).map(|i| t.key(&format!("list/k{i:02}"))).collect();
    // A key under a different prefix must not show up.
    let outside = t.key("listing-outside");
    t.put_applied(&outside, "x").await;
    for k in &keys {
        let r = t.put(k, json!({ "value": k }), "", &[]).await;
        assert_eq!(r.status(), 202);
    }
    // Wait for the last write before listing (writes are queued).
    for k in &keys {
        let deadline = Instant::now() + Duration::from_secs(10);
        while t.get_key(k).await.status() != 200 {
            assert!(Instant::now() < deadline, "{k} was not applied in time");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    let prefix = format!("{}list/", t.prefix);
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut q = format!("/v1/keys?prefix={}&limit=4", enc(&prefix));
        if let Some(c) = &cursor {
            q.push_str(&format!("&cursor={}", enc(c)));
        }
        let r = t.get(&q).await;
        assert_eq!(r.status(), 200);
        let page: Value = r.json().await.unwrap();
        let items = page["items"].as_array().expect("items");
        assert!(items.len() <= 4, "page larger than limit: {page}");
        for it in items {
            assert!(it["version"].as_u64().is_some(), "{it}");
            seen.push(it["key"].as_str().unwrap().to_string());
        }
        pages += 1;
        assert!(pages <= 10, "paging does not end");
        match page["next_cursor"].as_str() {
            Some(c) if !c.is_empty() => cursor = Some(c.to_string()),
            _ => break,
        }
    }
    assert!(pages >= 3, "11 keys with limit 4 take at least 3 pages, got {pages}");
    keys.sort();
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(sorted, keys, "each key exactly once");
    assert_eq!(seen, keys, "pages come in key order");

    // Bad paging parameters.
    assert_problem(t.get("/v1/keys?limit=0").await, 400, "limit").await;
    assert_problem(t.get("/v1/keys?limit=1001").await, 400, "limit").await;
    assert_problem(t.get("/v1/keys?cursor=zz").await, 400, "cursor").await;
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_problem_bodies_and_writes_nothing() {
    let t = Target::new().await;
    let key = t.key("bad-input");

    // Empty key.
    let r = t.client.put(t.url("/v1/keys/")).json(&json!({ "value": "x" })).send().await.unwrap();
    assert_problem(r, 400, "key").await;
    // 513-byte key (512 is fine, checked with a GET: 404, not 400).
    let long = format!("{}{}", t.prefix, "k".repeat(513 - t.prefix.len()));
    assert_eq!(long.len(), 513);
    assert_problem(t.put(&long, json!({ "value": "x" }), "?wait=5", &[]).await, 400, "key").await;
    assert_problem(t.get_key(&long).await, 400, "key").await;
    let max = &long[..512];
    assert_problem(t.get_key(max).await, 404, max).await;
    // A control character (`%0A`).
    let ctl = format!("{}bad%0Akey", enc(&t.prefix));
    let r = t.client.put(t.url(&format!("/v1/keys/{ctl}"))).json(&json!({ "value": "x" })).send().await.unwrap();
    assert_problem(r, 400, "key").await;
    // Invalid JSON.
    let r = t.put_raw(&t.key_path(&key, "?wait=5"), "application/json", "{\"value\": ").await;
    assert_problem(r, 400, "body").await;
    // Wrong shape: unknown field, null, missing or non-string value.
    assert_problem(t.put(&key, json!({ "valeu": "x" }), "?wait=5", &[]).await, 400, "valeu").await;
    assert_problem(t.put(&key, json!({ "value": null }), "?wait=5", &[]).await, 400, "value").await;
    // Only JSON strings are values: no silent coercion of numbers or booleans.
    assert_problem(t.put(&key, json!({ "value": 5 }), "?wait=5", &[]).await, 400, "value").await;
    assert_problem(t.put(&key, json!({ "value": true }), "?wait=5", &[]).await, 400, "value").await;
    assert_problem(t.put(&key, json!({}), "?wait=5", &[]).await, 400, "value").await;
    // Wrong content type.
    let r = t.put_raw(&t.key_path(&key, "?wait=5"), "text/plain", "{\"value\":\"x\"}").await;
    assert_problem(r, 415, "Content-Type").await;
    // wait out of range, on PUT and DELETE.
    assert_problem(t.put(&key, json!({ "value": "x" }), "?wait=31", &[]).await, 400, "wait").await;
    assert_problem(t.delete(&key, "?wait=31").await, 400, "wait").await;
    // Negative and zero TTL.
    assert_problem(t.put(&key, json!({ "value": "x", "ttl_seconds": -1 }), "?wait=5", &[]).await, 400, "ttl_seconds")
        .await;
    assert_problem(t.put(&key, json!({ "value": "x", "ttl_seconds": 0 }), "?wait=5", &[]).await, 400, "ttl_seconds")
        .await;
    // Malformed conditions.
    assert_problem(t.put(&key, json!({ "value": "x" }), "?wait=5", &[("If-Match", "nope")]).await, 400, "If-Match")
        .await;
    // Value over the limit (only when the limit is known).
    match t.max_value_bytes {
        Some(limit) => {
            let big = "v".repeat(limit + 1);
            assert_problem(t.put(&key, json!({ "value": big }), "?wait=5", &[]).await, 413, "value").await;
            // Exactly at the limit is fine.
            let r = t.put(&key, json!({ "value": "v".repeat(limit) }), "?wait=10", &[]).await;
            assert_eq!(r.status(), 200, "a value of exactly {limit} bytes is accepted");
            let r = t.delete(&key, "?wait=10").await;
            assert_eq!(r.status(), 200);
        }
        None => eprintln!("value-size check skipped: set KVQ_TEST_MAX_VALUE_BYTES to the deployment's limit"),
    }

    // Unknown key → 404 problem.
    let unknown = t.key("never-written");
    assert_problem(t.get_key(&unknown).await, 404, &unknown).await;
    // Nothing was written: nothing exists under this run's prefix.
    let r = t.get(&format!("/v1/keys?prefix={}", enc(&t.prefix))).await;
    assert_eq!(r.status(), 200);
    let page: Value = r.json().await.unwrap();
    assert_eq!(page["items"], json!([]), "bad requests wrote nothing");
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_write_expires() {
    let t = Target::new().await;
    let key = t.key("ttl");
    let r = t.put(&key, json!({ "value": "short-lived", "ttl_seconds": 1 }), "?wait=10", &[]).await;
    assert_eq!(r.status(), 200);
    let applied = Instant::now();
    let r = t.get_key(&key).await;
    if applied.elapsed() < Duration::from_millis(800) {
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["value"], "short-lived");
        assert!(body["expires_at"].is_string(), "a TTL key has expires_at: {body}");
    }
    tokio::time::sleep(Duration::from_millis(1500).saturating_sub(applied.elapsed())).await;
    assert_problem(t.get_key(&key).await, 404, &key).await;
    let r = t.get(&format!("/v1/keys?prefix={}", enc(&key))).await;
    assert_eq!(r.json::<Value>().await.unwrap()["items"], json!([]), "expired keys are not listed");
    t.cleanup().await;
}
