//! Every error the API returns is a JSON problem object (RFC 9457 style), built here.

use poem::http::{header, HeaderValue, StatusCode};
use poem::{Endpoint, IntoResponse, Middleware, Request, Response, Result};
use poem_openapi::error::{ParseParamError, ParsePathError};
use poem_openapi::payload::Json;
use poem_openapi::types::ToJSON;
use poem_openapi::{ApiResponse, Object};

use super::model::Task;
use super::routes::{label_of, API_KEY, API_TASK, UI_LOGIN, UI_LOGOUT, UI_TASK};

pub use crate::http::RETRY_AFTER_SECONDS;

#[derive(Debug, Clone, Object)]
#[oai(rename = "Problem")]
pub struct Problem {
    /// A URI reference naming the problem type.
    #[oai(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    /// What was wrong, naming the field or header at fault.
    pub detail: String,
    /// The task concerned, when a waited-for write did not apply.
    #[oai(skip_serializing_if_is_none)]
    pub task: Option<Box<Task>>,
}

impl Problem {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        let title = status.canonical_reason().unwrap_or("Error").to_string();
        Self {
            kind: format!("https://kvq.dev/problems/{}", title.to_lowercase().replace(' ', "-")),
            title,
            status: status.as_u16(),
            detail: detail.into(),
            task: None,
        }
    }
}

#[derive(Debug, ApiResponse)]
pub enum ApiError {
    /// Malformed or invalid input.
    #[oai(status = 400)]
    BadRequest(Json<Problem>),
    /// No token, or one that is not valid (`WWW-Authenticate: Bearer`).
    #[oai(status = 401)]
    Unauthorized(Json<Problem>, #[oai(header = "WWW-Authenticate")] String),
    /// The token lacks the scope, or the key is outside its prefixes; nothing was enqueued.
    #[oai(status = 403)]
    Forbidden(Json<Problem>),
    /// No such key or task.
    #[oai(status = 404)]
    NotFound(Json<Problem>),
    /// With `?wait`: a newer write to the key was applied first (task `superseded`).
    #[oai(status = 409)]
    Conflict(Json<Problem>),
    /// With `?wait`: the `If-Match` / `If-None-Match` condition failed (task `rejected`).
    #[oai(status = 412)]
    PreconditionFailed(Json<Problem>),
    /// The value is larger than `limits.max_value_bytes`.
    #[oai(status = 413)]
    PayloadTooLarge(Json<Problem>),
    /// The body is not `application/json`.
    #[oai(status = 415)]
    UnsupportedMediaType(Json<Problem>),
    /// The `Idempotency-Key` was already used for a different request; nothing was enqueued.
    #[oai(status = 422)]
    UnprocessableEntity(Json<Problem>),
    /// With `?wait`: the task failed for good and is in the dead-letter stream.
    #[oai(status = 500)]
    Failed(Json<Problem>),
    /// Redis is unreachable or not writable; retry after the given seconds.
    #[oai(status = 503)]
    Unavailable(Json<Problem>, #[oai(header = "Retry-After")] u32),
    /// Redis reached its memory limit (`maxmemory`) and refused the write; nothing was
    /// enqueued. Retry after the given seconds, or free space by deleting keys (a delete is
    /// accepted while the store is full).
    #[oai(status = 507)]
    InsufficientStorage(Json<Problem>, #[oai(header = "Retry-After")] u32),
}

impl ApiError {
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::BadRequest(Json(Problem::new(StatusCode::BAD_REQUEST, detail)))
    }
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::Forbidden(Json(Problem::new(StatusCode::FORBIDDEN, detail)))
    }
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::NotFound(Json(Problem::new(StatusCode::NOT_FOUND, detail)))
    }
    pub fn too_large(detail: impl Into<String>) -> Self {
        Self::PayloadTooLarge(Json(Problem::new(StatusCode::PAYLOAD_TOO_LARGE, detail)))
    }
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::Unavailable(Json(Problem::new(StatusCode::SERVICE_UNAVAILABLE, detail)), RETRY_AFTER_SECONDS)
    }
    pub fn storage_full(detail: impl Into<String>) -> Self {
        Self::InsufficientStorage(Json(Problem::new(StatusCode::INSUFFICIENT_STORAGE, detail)), RETRY_AFTER_SECONDS)
    }
}

/// Turns every error that is not already a JSON body (router 404/405, payload parse errors,
/// missing content type) into a problem object, so clients see one error shape.
pub struct ProblemErrors;

impl<E: Endpoint> Middleware<E> for ProblemErrors {
    type Output = ProblemErrorsEndpoint<E>;
    fn transform(&self, ep: E) -> Self::Output {
        ProblemErrorsEndpoint(ep)
    }
}

pub struct ProblemErrorsEndpoint<E>(E);

impl<E: Endpoint> Endpoint for ProblemErrorsEndpoint<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> Result<Response> {
        let route = super::observe::route_of(req.uri().path());
        let mut response = match self.0.call(req).await {
            Ok(r) => r.into_response(),
            Err(err) if err.is::<poem::error::ParsePathError>() => {
                // The router could not percent-decode the path into UTF-8.
                let name = if [API_TASK, UI_TASK].iter().any(|p| route == label_of(p)) { "id" } else { "key" };
                bad_parameter(name, "not UTF-8 once percent-decoded")
            }
            Err(err) => problem_response(err),
        };
        if response.status() == StatusCode::METHOD_NOT_ALLOWED && !response.headers().contains_key(header::ALLOW) {
            response.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allowed_methods(route)));
        }
        Ok(response)
    }
}

/// A 400 naming the parameter, with poem-openapi's wrapping ("failed to parse \"string\": ...
/// (occurred while parsing ...)") taken off the reason.
fn bad_parameter(name: &str, reason: &str) -> Response {
    let mut reason = reason;
    if let Some(rest) = reason.strip_prefix("failed to parse \"") {
        if let Some((_, after)) = rest.split_once("\": ") {
            reason = after;
        }
    }
    if let Some(i) = reason.rfind(" (occurred while parsing \"") {
        reason = &reason[..i];
    }
    let status = StatusCode::BAD_REQUEST;
    let body = Problem::new(status, format!("{name}: {reason}")).to_json_string();
    Response::builder().status(status).content_type("application/json; charset=utf-8").body(body)
}

/// The methods a route answers (RFC 9110 asks for them in `Allow` on every 405).
pub fn allowed_methods(route: &str) -> &'static str {
    if route == label_of(API_KEY) {
        "GET, HEAD, PUT, DELETE"
    } else if route == label_of(UI_LOGIN) {
        "GET, HEAD, POST"
    } else if route == label_of(UI_LOGOUT) {
        "POST"
    } else {
        "GET, HEAD"
    }
}

pub fn problem_response(err: poem::Error) -> Response {
    if err.is_from_response() {
        return err.into_response();
    }
    let status = err.status();
    if let Some(e) = err.downcast_ref::<ParseParamError>() {
        return bad_parameter(e.name, &e.reason);
    }
    if let Some(e) = err.downcast_ref::<ParsePathError>() {
        // poem-openapi names path parameters by position; the only one that can fail is the key.
        return bad_parameter("key", &e.reason);
    }
    let detail = match status {
        StatusCode::NOT_FOUND => "no such resource".to_string(),
        StatusCode::METHOD_NOT_ALLOWED => "method not allowed on this resource".to_string(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => format!("{err}; send Content-Type: application/json"),
        _ => err.to_string(),
    };
    let status = if status.is_server_error() || status.is_client_error() { status } else { StatusCode::BAD_REQUEST };
    let body = Problem::new(status, detail).to_json_string();
    Response::builder().status(status).content_type("application/json; charset=utf-8").body(body)
}
