//! HTML pages rendered with handlebars. Templates are embedded at build time, so the binary
//! needs no files at run time (read-only root filesystems, distroless images).

use std::sync::Arc;

use handlebars::Handlebars;
use poem::http::StatusCode;
use poem::web::{Data, Html, Path, Query};
use poem::{handler, IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use crate::domain::Key;
pub use crate::http::percent_encode;
use crate::http::{retry_after, CHECK_TIMEOUT};
use crate::store::StoreError;
use crate::timefmt::rfc3339_ms;

use super::model::Task;
use super::params::is_task_id;
use super::state::AppState;

const TEMPLATES: &[(&str, &str)] = &[
    ("header", include_str!("../../templates/header.hbs")),
    ("footer", include_str!("../../templates/footer.hbs")),
    ("home", include_str!("../../templates/home.hbs")),
    ("key", include_str!("../../templates/key.hbs")),
    ("task", include_str!("../../templates/task.hbs")),
    ("not_found", include_str!("../../templates/not_found.hbs")),
    ("unavailable", include_str!("../../templates/unavailable.hbs")),
];

pub struct Pages {
    hb: Handlebars<'static>,
}

impl Pages {
    pub fn new() -> Self {
        let mut hb = Handlebars::new();
        hb.set_strict_mode(false);
        for (name, text) in TEMPLATES {
            hb.register_template_string(name, *text).unwrap_or_else(|e| panic!("template {name} is invalid: {e}"));
        }
        Self { hb }
    }

    fn render(&self, status: StatusCode, name: &str, mut data: serde_json::Value) -> Response {
        data["kvq_version"] = json!(env!("CARGO_PKG_VERSION"));
        match self.hb.render(name, &data) {
            Ok(html) => Html(html).with_status(status).into_response(),
            Err(e) => {
                tracing::error!(error = %e, template = name, "rendering failed");
                StatusCode::INTERNAL_SERVER_ERROR.into_response()
            }
        }
    }

    fn not_found(&self, detail: &str) -> Response {
        self.render(StatusCode::NOT_FOUND, "not_found", json!({ "detail": detail }))
    }

    fn store_error(&self, e: StoreError) -> Response {
        tracing::warn!(error = %e, "page could not read redis");
        let mut r = self.render(StatusCode::SERVICE_UNAVAILABLE, "unavailable", json!({}));
        let (name, value) = retry_after();
        r.headers_mut().insert(name, value);
        r
    }
}

impl Default for Pages {
    fn default() -> Self {
        Self::new()
    }
}

#[handler]
pub async fn home(state: Data<&AppState>, pages: Data<&Arc<Pages>>) -> Response {
    let status = tokio::time::timeout(CHECK_TIMEOUT, state.store.queue_stats()).await;
    let data = match status {
        Ok(Ok(q)) => json!({
            "redis_ok": true,
            "queue": { "depth": q.depth(), "pending": q.pending, "dead_letters": q.dead_letters },
        }),
        Ok(Err(e)) => json!({ "redis_ok": false, "redis_error": short_error(&e) }),
        Err(_) => json!({ "redis_ok": false, "redis_error": "timed out" }),
    };
    pages.render(StatusCode::OK, "home", data)
}

#[derive(Deserialize)]
pub struct LookupForm {
    key: Option<String>,
}

/// The home page's form submits here: `/ui/keys?key=...`.
#[handler]
pub async fn lookup(state: Data<&AppState>, pages: Data<&Arc<Pages>>, form: Query<LookupForm>) -> Response {
    key_page_for(&state, &pages, form.0.key.as_deref().unwrap_or("")).await
}

#[handler]
pub async fn key_page(state: Data<&AppState>, pages: Data<&Arc<Pages>>, key: Path<String>) -> Response {
    key_page_for(&state, &pages, &key).await
}

async fn key_page_for(state: &AppState, pages: &Pages, raw: &str) -> Response {
    let key = match Key::parse(raw) {
        Ok(k) => k,
        Err(e) => return pages.not_found(&format!("'{raw}' is not a valid key: {e}")),
    };
    match state.store.get_value(key.as_str()).await {
        Ok(Some(v)) => pages.render(
            StatusCode::OK,
            "key",
            json!({
                "key": key.as_str(),
                "value": v.value,
                "version": v.version,
                "expires_at": v.expires_at.map(rfc3339_ms),
            }),
        ),
        Ok(None) => pages.not_found(&format!("The key '{}' does not exist.", key.as_str())),
        Err(e) => pages.store_error(e),
    }
}

#[handler]
pub async fn task_page(state: Data<&AppState>, pages: Data<&Arc<Pages>>, id: Path<String>) -> Response {
    if !is_task_id(&id) {
        return pages.not_found(&format!("The task '{}' does not exist.", id.0));
    }
    match state.store.get_task(&id).await {
        Ok(Some(t)) => {
            let key_path = percent_encode(&t.key);
            let task: Task = t.into();
            let mut value = serde_json::to_value(&task).expect("plain data");
            value["key_path"] = json!(key_path);
            pages.render(StatusCode::OK, "task", json!({ "task": value }))
        }
        Ok(None) => pages.not_found(&format!("The task '{}' does not exist.", id.0)),
        Err(e) => pages.store_error(e),
    }
}

fn short_error(e: &StoreError) -> String {
    match e {
        StoreError::Unavailable(_) => "cannot reach the Redis master".into(),
        StoreError::Full(_) => "the Redis master is full (maxmemory)".into(),
        _ => "redis error".into(),
    }
}

/// HTML 404 for unknown `/ui/...` paths.
pub fn not_found_page(pages: &Pages) -> Response {
    pages.not_found("There is no page at this address.")
}
