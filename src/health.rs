//! `/healthz`, `/readyz` and `/metrics`, served by both binaries.

use std::sync::Arc;
use std::time::Duration;

use poem::http::StatusCode;
use poem::web::Data;
use poem::{handler, IntoResponse, Response};

use crate::metrics::Metrics;
use crate::store::Store;

/// Bound on a readiness or metrics query, well under a probe's timeout.
const CHECK_TIMEOUT: Duration = Duration::from_millis(1500);

/// Liveness: the process serves HTTP. It must not depend on Redis, or an outage restarts every pod.
#[handler]
pub fn healthz() -> Response {
    json_response(StatusCode::OK, r#"{"status":"ok"}"#)
}

/// Readiness: the Redis master answers and accepts writes.
#[handler]
pub async fn readyz(store: Data<&Store>) -> Response {
    match tokio::time::timeout(CHECK_TIMEOUT, store.ping_writable()).await {
        Ok(Ok(())) => json_response(StatusCode::OK, r#"{"status":"ready"}"#),
        Ok(Err(e)) => not_ready(&e.to_string()),
        Err(_) => not_ready("redis did not answer in time"),
    }
}

fn not_ready(why: &str) -> Response {
    let body = serde_json::json!({"status": "not ready", "detail": why}).to_string();
    let mut r = json_response(StatusCode::SERVICE_UNAVAILABLE, &body);
    r.headers_mut().insert("retry-after", poem::http::HeaderValue::from_static("1"));
    r
}

#[handler]
pub async fn metrics(store: Data<&Store>, metrics: Data<&Arc<Metrics>>) -> Response {
    let stats = tokio::time::timeout(CHECK_TIMEOUT, store.queue_stats()).await.ok().and_then(Result::ok);
    metrics.render(stats.as_ref()).with_content_type("text/plain; version=0.0.4; charset=utf-8").into_response()
}

fn json_response(status: StatusCode, body: &str) -> Response {
    Response::builder().status(status).content_type("application/json").body(body.to_string())
}
