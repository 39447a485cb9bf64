//! HTML pages rendered with handlebars. Templates are embedded at build time, so the binary
//! needs no files at run time (read-only root filesystems, distroless images).

use std::sync::Arc;

use handlebars::Handlebars;
use poem::http::{header, HeaderMap, StatusCode};
use poem::web::{Data, Form, Html, Path, Query};
use poem::{handler, IntoResponse, Request, Response};
use serde::Deserialize;
use serde_json::json;

use crate::config::AuthMode;
use crate::domain::Key;
pub use crate::http::percent_encode;
use crate::http::{retry_after, CHECK_TIMEOUT};
use crate::store::StoreError;
use crate::timefmt::rfc3339_ms;

use super::auth::{bearer, Auth, Caller, Scope};
use super::model::Task;
use super::params::is_task_id;
use super::problem::ApiError;
use super::state::AppState;

const TEMPLATES: &[(&str, &str)] = &[
    ("header", include_str!("../../templates/header.hbs")),
    ("footer", include_str!("../../templates/footer.hbs")),
    ("home", include_str!("../../templates/home.hbs")),
    ("key", include_str!("../../templates/key.hbs")),
    ("task", include_str!("../../templates/task.hbs")),
    ("not_found", include_str!("../../templates/not_found.hbs")),
    ("unavailable", include_str!("../../templates/unavailable.hbs")),
    ("login", include_str!("../../templates/login.hbs")),
    ("forbidden", include_str!("../../templates/forbidden.hbs")),
];

/// The pages' login cookie. Scoped to `/ui`, where the pages that show data live; the API never
/// reads it (it takes only the `Authorization` header), so a browser session cannot be ridden
/// into `/v1`.
pub const COOKIE: &str = "kvq_token";
/// `HttpOnly`: no script reads it; `Secure`: never sent over plain HTTP (browsers treat
/// loopback as secure); `SameSite=Strict`: never sent on a request another site starts, which
/// with POST-only login and logout is the CSRF defence.
const COOKIE_ATTRIBUTES: &str = "Path=/ui; HttpOnly; Secure; SameSite=Strict";

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

    /// A page for a signed-in caller: the header shows who and a logout button.
    fn render_for(&self, caller: &Caller, status: StatusCode, name: &str, mut data: serde_json::Value) -> Response {
        if let Some(who) = caller.name() {
            data["signed_in_as"] = json!(who);
        }
        self.render(status, name, data)
    }

    fn not_found(&self, detail: &str) -> Response {
        self.render(StatusCode::NOT_FOUND, "not_found", json!({ "detail": detail }))
    }

    fn forbidden(&self, detail: &str) -> Response {
        self.render(StatusCode::FORBIDDEN, "forbidden", json!({ "detail": detail }))
    }

    /// The login form, answering `status`; after login the browser goes on to `next`.
    fn login(&self, status: StatusCode, next: &str, error: Option<&str>) -> Response {
        let mut r = self.render(status, "login", json!({ "next": safe_next(next), "error": error }));
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, "Bearer realm=\"kvq\"".parse().expect("ASCII"));
        }
        r
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

/// The caller of a page: the token of the login cookie (or of a bearer header, for scripts).
/// None: show the login form instead.
fn page_caller(auth: &Arc<Auth>, headers: &HeaderMap) -> Option<Caller> {
    let token = cookie_token(headers).or_else(|| bearer(headers).map(str::to_string));
    auth.authenticate(token.as_deref()).ok()
}

/// The login form in place of a page, coming back to it after login.
fn login_for(pages: &Pages, req: &Request) -> Response {
    let next = req.uri().path_and_query().map_or("/", |p| p.as_str());
    pages.login(StatusCode::UNAUTHORIZED, next, None)
}

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(COOKIE).and_then(|rest| rest.strip_prefix('=')))
        .and_then(percent_decode)
        .filter(|t| !t.is_empty())
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Where a login may send the browser: a path of this site only (never `//host` or a URL).
fn safe_next(next: &str) -> &str {
    let local = next.starts_with('/') && !next.starts_with("//") && !next.contains('\\');
    if local && !next.chars().any(char::is_control) {
        next
    } else {
        "/"
    }
}

/// Whether a form post comes from this site: browsers send `Sec-Fetch-Site` and `Origin` on a
/// POST; a cross-site one is refused (the SameSite cookie is the first line, this the second).
fn same_origin(headers: &HeaderMap) -> bool {
    let text = |name| headers.get(name).and_then(|v: &poem::http::HeaderValue| v.to_str().ok());
    if text("sec-fetch-site").is_some_and(|s| s == "cross-site" || s == "same-site") {
        return false;
    }
    match (text("origin"), text("host")) {
        (None, _) => true,
        (Some(origin), Some(host)) => origin.split_once("://").is_some_and(|(_, authority)| authority == host),
        (Some(_), None) => false,
    }
}

fn see_other(location: &str, cookie: Option<String>) -> Response {
    let mut r = Response::builder().status(StatusCode::SEE_OTHER).header(header::LOCATION, location);
    if let Some(c) = cookie {
        r = r.header(header::SET_COOKIE, c);
    }
    r.finish()
}

#[derive(Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

/// `GET /ui/login`: the form (with auth off there is nothing to log in to).
#[handler]
pub fn login_page(pages: Data<&Arc<Pages>>, auth: Data<&Arc<Auth>>, query: Query<LoginQuery>) -> Response {
    if auth.mode() == AuthMode::None {
        return see_other("/", None);
    }
    pages.login(StatusCode::OK, query.0.next.as_deref().unwrap_or("/"), None)
}

#[derive(Deserialize)]
pub struct LoginForm {
    token: String,
    #[serde(default)]
    next: String,
}

/// `POST /ui/login`: a valid token is kept in the pages' cookie and the browser goes on.
#[handler]
pub fn login(req: &Request, pages: Data<&Arc<Pages>>, auth: Data<&Arc<Auth>>, form: Form<LoginForm>) -> Response {
    if auth.mode() == AuthMode::None {
        return see_other("/", None);
    }
    if !same_origin(req.headers()) {
        return pages.forbidden("A login from another site is refused.");
    }
    let token = form.0.token.trim();
    match auth.authenticate(Some(token)) {
        Ok(_) => {
            let cookie = format!("{COOKIE}={}; {COOKIE_ATTRIBUTES}", percent_encode(token));
            see_other(safe_next(&form.0.next), Some(cookie))
        }
        Err(_) => pages.login(StatusCode::UNAUTHORIZED, &form.0.next, Some("That token is not valid.")),
    }
}

/// `POST /ui/logout`: forgets the cookie.
#[handler]
pub fn logout(req: &Request, pages: Data<&Arc<Pages>>) -> Response {
    if !same_origin(req.headers()) {
        return pages.forbidden("A logout from another site is refused.");
    }
    see_other("/", Some(format!("{COOKIE}=; Max-Age=0; {COOKIE_ATTRIBUTES}")))
}

/// The home page's form submits here: `/ui/keys?key=...`.
#[handler]
pub async fn lookup(
    req: &Request,
    state: Data<&AppState>,
    pages: Data<&Arc<Pages>>,
    auth: Data<&Arc<Auth>>,
    form: Query<LookupForm>,
) -> Response {
    let Some(caller) = page_caller(&auth, req.headers()) else {
        return login_for(&pages, req);
    };
    key_page_for(&state, &pages, &caller, form.0.key.as_deref().unwrap_or("")).await
}

#[handler]
pub async fn key_page(
    req: &Request,
    state: Data<&AppState>,
    pages: Data<&Arc<Pages>>,
    auth: Data<&Arc<Auth>>,
    key: Path<String>,
) -> Response {
    let Some(caller) = page_caller(&auth, req.headers()) else {
        return login_for(&pages, req);
    };
    key_page_for(&state, &pages, &caller, &key).await
}

async fn key_page_for(state: &AppState, pages: &Pages, caller: &Caller, raw: &str) -> Response {
    let key = match Key::parse(raw) {
        Ok(k) => k,
        Err(e) => return pages.not_found(&format!("'{raw}' is not a valid key: {e}")),
    };
    if let Err(ApiError::Forbidden(p)) = caller.require(Scope::Read, key.as_str()) {
        return pages.forbidden(&p.0.detail);
    }
    match state.store.get_value(key.as_str()).await {
        Ok(Some(v)) => pages.render_for(
            caller,
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
pub async fn task_page(
    req: &Request,
    state: Data<&AppState>,
    pages: Data<&Arc<Pages>>,
    auth: Data<&Arc<Auth>>,
    id: Path<String>,
) -> Response {
    let Some(caller) = page_caller(&auth, req.headers()) else {
        return login_for(&pages, req);
    };
    if !is_task_id(&id) {
        return pages.not_found(&format!("The task '{}' does not exist.", id.0));
    }
    match state.store.get_task(&id).await {
        // Shown only to a token that could read its key; to others it does not exist.
        Ok(Some(t)) if caller.may_read(&t.key) => {
            let key_path = percent_encode(&t.key);
            let task: Task = t.into();
            let mut value = serde_json::to_value(&task).expect("plain data");
            value["key_path"] = json!(key_path);
            pages.render_for(&caller, StatusCode::OK, "task", json!({ "task": value }))
        }
        Ok(_) => pages.not_found(&format!("The task '{}' does not exist.", id.0)),
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
