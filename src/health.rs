//! `/healthz` and `/readyz`, served by both binaries (routes in `http::probe_routes`).

use poem::http::StatusCode;
use poem::web::Data;
use poem::{handler, Response};

use crate::http::{retry_after, CHECK_TIMEOUT};
use crate::store::{Store, StoreError};

/// Liveness: the process serves HTTP. It must not depend on Redis, or an outage restarts every pod.
#[handler]
pub fn healthz() -> Response {
    json_response(StatusCode::OK, r#"{"status":"ok"}"#)
}

/// Readiness: the Redis master answers and accepts writes. A master that is full (`maxmemory`)
/// still counts as ready: every pod would see the same, and taking them out of service or
/// restarting them frees nothing; reads, deletes and the worker's applies keep working, and
/// writes answer 507. The body says `"store": "full"` then (and `/metrics` has the figures).
#[handler]
pub async fn readyz(store: Data<&Store>) -> Response {
    match tokio::time::timeout(CHECK_TIMEOUT, store.ping_writable()).await {
        Ok(Ok(())) => json_response(StatusCode::OK, r#"{"status":"ready"}"#),
        Ok(Err(StoreError::Full(why))) => {
            let body = serde_json::json!({"status": "ready", "store": "full", "detail": why}).to_string();
            json_response(StatusCode::OK, &body)
        }
        Ok(Err(e)) => not_ready(&e.to_string()),
        Err(_) => not_ready("redis did not answer in time"),
    }
}

fn not_ready(why: &str) -> Response {
    let body = serde_json::json!({"status": "not ready", "detail": why}).to_string();
    let mut r = json_response(StatusCode::SERVICE_UNAVAILABLE, &body);
    let (name, value) = retry_after();
    r.headers_mut().insert(name, value);
    r
}

fn json_response(status: StatusCode, body: &str) -> Response {
    Response::builder().status(status).content_type("application/json").body(body.to_string())
}
