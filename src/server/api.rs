//! The HTTP API (README, "The API"), declared with poem-openapi so the spec at `/openapi.json` is generated
//! from the same types the handlers use.

use std::borrow::Cow;

use poem::http::StatusCode;
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::registry::MetaSchemaRef;
use poem_openapi::types::{ParseError, ParseFromJSON, ParseResult, ToJSON, Type};
use poem_openapi::{ApiResponse, Object, OpenApi, Tags};

use crate::domain::{Key, Op, TaskStatus, WriteRequest};
use crate::store::StoreError;
use crate::timefmt::rfc3339_ms;

use super::auth::{Caller, Scope};
pub use super::model::Task;
pub use super::params::{decode_cursor, encode_cursor, is_task_id};
use super::params::{if_none_match_hits, CursorParam, IdempotencyKey, IfMatch, IfNoneMatchAny, KeyParam};
use super::problem::{ApiError, Problem};
use super::state::{AppState, SubmitError, Submitted};

#[derive(Tags)]
enum ApiTags {
    /// Read, write and list keys. Writes are queued and applied by the workers.
    Keys,
    /// Follow queued writes.
    Tasks,
}

/// Body of `PUT /v1/keys/{key}`.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct PutBody {
    /// The value to store (UTF-8, at most `limits.max_value_bytes` bytes).
    pub value: StrictString,
    /// Seconds until the key expires, counted from when the write is applied. Absent or `null`:
    /// the key does not expire.
    #[oai(validator(minimum(value = "1"), maximum(value = "315360000")))]
    pub ttl_seconds: Option<i64>,
}

/// A JSON string and nothing else: poem-openapi's `String` would accept `5` or `true` as "5".
#[derive(Debug, Clone)]
pub struct StrictString(pub String);

impl Type for StrictString {
    const IS_REQUIRED: bool = true;
    type RawValueType = String;
    type RawElementValueType = String;

    fn name() -> Cow<'static, str> {
        String::name()
    }
    fn schema_ref() -> MetaSchemaRef {
        String::schema_ref()
    }
    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        Some(&self.0)
    }
    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        Box::new(std::iter::once(&self.0))
    }
}

impl ParseFromJSON for StrictString {
    fn parse_from_json(value: Option<serde_json::Value>) -> ParseResult<Self> {
        match value {
            Some(serde_json::Value::String(s)) => Ok(Self(s)),
            other => Err(ParseError::expected_type(other.unwrap_or_default())),
        }
    }
}

impl ToJSON for StrictString {
    fn to_json(&self) -> Option<serde_json::Value> {
        Some(serde_json::Value::String(self.0.clone()))
    }
}

/// A write accepted into the queue.
#[derive(Debug, Object)]
pub struct TaskAccepted {
    pub task_id: String,
    pub status: TaskStatus,
}

/// A stored key.
#[derive(Debug, Object)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
    /// Increases with every applied write; use it with `If-Match`.
    pub version: u64,
    /// RFC 3339 expiry time. Omitted (never `null`) when the key has no TTL.
    #[oai(skip_serializing_if_is_none)]
    pub expires_at: Option<String>,
}

#[derive(Debug, Object)]
pub struct KeyItem {
    pub key: String,
    pub version: u64,
}

/// A page of keys.
#[derive(Debug, Object)]
pub struct KeyPage {
    pub items: Vec<KeyItem>,
    /// Pass as `cursor` to get the next page. Omitted (never `null`) on the last page.
    #[oai(skip_serializing_if_is_none)]
    pub next_cursor: Option<String>,
}

#[derive(ApiResponse)]
pub enum WriteResponse {
    /// The write is queued (or `?wait` ran out first). Follow it at `Location`.
    #[oai(status = 202)]
    Accepted(Json<TaskAccepted>, #[oai(header = "Location")] String),
    /// With `?wait`: the write was applied.
    #[oai(status = 200)]
    Applied(Json<Task>, #[oai(header = "Location")] String),
}

#[derive(ApiResponse)]
pub enum GetKeyResponse {
    #[oai(status = 200)]
    Ok(Json<KeyValue>, #[oai(header = "ETag")] String),
    /// `If-None-Match` matched the current version.
    #[oai(status = 304)]
    NotModified(#[oai(header = "ETag")] String),
}

#[derive(ApiResponse)]
pub enum ListResponse {
    #[oai(status = 200)]
    Ok(Json<KeyPage>),
}

#[derive(ApiResponse)]
pub enum TaskResponse {
    #[oai(status = 200)]
    Ok(Json<Task>),
}

/// Keys per page of `GET /v1/keys` when the request does not say.
pub const DEFAULT_PAGE_SIZE: u32 = 100;
/// Most keys per page of `GET /v1/keys`.
pub const MAX_PAGE_SIZE: u32 = 1000;

pub struct Api {
    pub state: AppState,
}

#[OpenApi(prefix_path = "/v1")]
impl Api {
    /// Queue a write of the key's value.
    #[oai(path = "/keys/:key", method = "put", operation_id = "putKey", tag = "ApiTags::Keys")]
    #[allow(clippy::too_many_arguments)]
    async fn put_key(
        &self,
        caller: Caller,
        /// 1 to 512 bytes of UTF-8 without control characters.
        key: Path<KeyParam>,
        body: Json<PutBody>,
        /// Seconds to wait for the worker to apply the write (0-30).
        #[oai(validator(minimum(value = "0"), maximum(value = "30")))]
        wait: Query<Option<u64>>,
        /// `"<version>"` (or `W/"<version>"`, or the bare number): apply only if the key is still
        /// at this version.
        #[oai(name = "If-Match")]
        if_match: Header<Option<IfMatch>>,
        /// `*`: apply only if the key does not exist.
        #[oai(name = "If-None-Match")]
        if_none_match: Header<Option<IfNoneMatchAny>>,
        /// 1 to 255 printable ASCII characters without spaces. A retry of the same request with
        /// the same token returns the same task and enqueues nothing; the same token on a
        /// different request answers 422.
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<IdempotencyKey>>,
    ) -> Result<WriteResponse, ApiError> {
        caller.require(Scope::Write, key.0 .0.as_str())?;
        let Json(body) = body;
        let write = write_request(
            Op::Set,
            key.0 .0,
            Some(body.value.0),
            body.ttl_seconds.map(|t| t as u64),
            if_match.0,
            if_none_match.0,
            idempotency_key.0,
            wait.0,
        );
        write_response(self.state.submit(write, wait.0.unwrap_or(0)).await)
    }

    /// Queue a delete of the key.
    #[oai(path = "/keys/:key", method = "delete", operation_id = "deleteKey", tag = "ApiTags::Keys")]
    async fn delete_key(
        &self,
        caller: Caller,
        /// 1 to 512 bytes of UTF-8 without control characters.
        key: Path<KeyParam>,
        /// Seconds to wait for the worker to apply the delete (0-30).
        #[oai(validator(minimum(value = "0"), maximum(value = "30")))]
        wait: Query<Option<u64>>,
        /// `"<version>"` (or `W/"<version>"`, or the bare number): delete only if the key is
        /// still at this version.
        #[oai(name = "If-Match")]
        if_match: Header<Option<IfMatch>>,
        /// `*`: delete only if the key does not exist (a no-op kept for symmetry with PUT).
        #[oai(name = "If-None-Match")]
        if_none_match: Header<Option<IfNoneMatchAny>>,
        /// 1 to 255 printable ASCII characters without spaces. A retry of the same request with
        /// the same token returns the same task and enqueues nothing; the same token on a
        /// different request answers 422.
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<IdempotencyKey>>,
    ) -> Result<WriteResponse, ApiError> {
        caller.require(Scope::Write, key.0 .0.as_str())?;
        let write =
            write_request(Op::Delete, key.0 .0, None, None, if_match.0, if_none_match.0, idempotency_key.0, wait.0);
        write_response(self.state.submit(write, wait.0.unwrap_or(0)).await)
    }

    /// Read a key.
    #[oai(path = "/keys/:key", method = "get", operation_id = "getKey", tag = "ApiTags::Keys")]
    async fn get_key(
        &self,
        caller: Caller,
        /// 1 to 512 bytes of UTF-8 without control characters.
        key: Path<KeyParam>,
        /// `"<version>"` (or a comma-separated list of tags, or `*`): answer 304 if the key is
        /// still at one of these versions.
        #[oai(name = "If-None-Match")]
        if_none_match: Header<Option<String>>,
    ) -> Result<GetKeyResponse, ApiError> {
        let key = key.0 .0;
        caller.require(Scope::Read, key.as_str())?;
        let Some(v) = self.state.store.get_value(key.as_str()).await? else {
            return Err(ApiError::not_found(format!("key '{}' does not exist", key.as_str())));
        };
        let etag = format!("\"{}\"", v.version);
        if let Some(inm) = if_none_match.0.as_deref() {
            if if_none_match_hits(inm, &etag) {
                return Ok(GetKeyResponse::NotModified(etag));
            }
        }
        Ok(GetKeyResponse::Ok(
            Json(KeyValue {
                key: key.as_str().to_string(),
                value: v.value,
                version: v.version,
                expires_at: v.expires_at.map(rfc3339_ms),
            }),
            etag,
        ))
    }

    /// List keys by prefix, in key order, a page at a time.
    #[oai(path = "/keys", method = "get", operation_id = "listKeys", tag = "ApiTags::Keys")]
    async fn list_keys(
        &self,
        caller: Caller,
        /// Only keys starting with this.
        #[oai(validator(max_length = 512))]
        prefix: Query<Option<String>>,
        /// Page size (1-1000, default 100).
        #[oai(validator(minimum(value = "1"), maximum(value = "1000")))]
        limit: Query<Option<u32>>,
        /// `next_cursor` of the previous page (empty: the first page).
        cursor: Query<Option<CursorParam>>,
    ) -> Result<ListResponse, ApiError> {
        let prefix = prefix.0.unwrap_or_default();
        caller.require_listing(&prefix)?;
        let cursor = cursor.0.and_then(|c| c.0);
        let limit = limit.0.unwrap_or(DEFAULT_PAGE_SIZE) as usize;
        let (items, next) = self.state.store.list_keys(&prefix, cursor.as_deref(), limit).await?;
        Ok(ListResponse::Ok(Json(KeyPage {
            items: items.into_iter().map(|(key, version)| KeyItem { key, version }).collect(),
            next_cursor: next.map(|k| encode_cursor(&k)),
        })))
    }

    /// A write task's status.
    #[oai(path = "/tasks/:id", method = "get", operation_id = "getTask", tag = "ApiTags::Tasks")]
    async fn get_task(&self, caller: Caller, id: Path<String>) -> Result<TaskResponse, ApiError> {
        caller.require_scope(Scope::Read)?;
        if !is_task_id(&id) {
            return Err(ApiError::not_found(format!("task '{}' does not exist", id.0)));
        }
        match self.state.store.get_task(&id).await? {
            // A task names its key (and value): shown only to a token that could read the key,
            // and to others exactly as if it did not exist.
            Some(t) if caller.may_read(&t.key) => Ok(TaskResponse::Ok(Json(t.into()))),
            _ => Err(ApiError::not_found(format!(
                "task '{}' does not exist (or is past retention: only the newest task outcomes are kept)",
                id.0
            ))),
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn write_request(
    op: Op,
    key: Key,
    value: Option<String>,
    ttl_seconds: Option<u64>,
    if_match: Option<IfMatch>,
    if_none_match: Option<IfNoneMatchAny>,
    idempotency_key: Option<IdempotencyKey>,
    wait: Option<u64>,
) -> WriteRequest {
    WriteRequest {
        op,
        key,
        value,
        ttl_seconds,
        if_match: if_match.map(|m| m.0),
        if_none_match: if_none_match.is_some(),
        idempotency_key: idempotency_key.map(|k| k.0),
        notify: wait.unwrap_or(0) > 0,
    }
}

/// The answer to a write: 202 with the task, or with `?wait` the finished task (200, or the
/// problem its status stands for). Every write outcome becomes HTTP here.
fn write_response(submitted: Result<Submitted, SubmitError>) -> Result<WriteResponse, ApiError> {
    let task = match submitted? {
        Submitted::Accepted { task_id, status } => {
            let location = task_location(&task_id);
            return Ok(WriteResponse::Accepted(Json(TaskAccepted { task_id, status }), location));
        }
        Submitted::Finished(task) => task,
    };
    let location = task_location(&task.id);
    let detail = task.error.clone().unwrap_or_default();
    let with_task = |code: StatusCode, detail: String| {
        let mut p = Problem::new(code, detail);
        p.task = Some(Box::new(task.clone().into()));
        Json(p)
    };
    match task.status {
        TaskStatus::Applied => Ok(WriteResponse::Applied(Json(task.into()), location)),
        TaskStatus::Superseded => Err(ApiError::Conflict(with_task(StatusCode::CONFLICT, detail))),
        TaskStatus::Rejected => Err(ApiError::PreconditionFailed(with_task(StatusCode::PRECONDITION_FAILED, detail))),
        TaskStatus::Failed => Err(ApiError::Failed(with_task(StatusCode::INTERNAL_SERVER_ERROR, detail))),
        TaskStatus::Queued => unreachable!("only finished tasks are answered this way"),
    }
}

/// `Location` of a task: its route with the id filled in.
fn task_location(task_id: &str) -> String {
    super::routes::API_TASK.replace(":id", task_id)
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::ValueTooLarge { .. } => Self::too_large(e.to_string()),
            SubmitError::ConflictingConditions => Self::bad_request(e.to_string()),
            SubmitError::NotReplicated(_) => Self::unavailable(e.to_string()),
            SubmitError::Store(e) => e.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::IdempotencyConflict { task_id } => Self::UnprocessableEntity(Json(Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "Idempotency-Key: already used for a different request{}; use a new key for a new request",
                    task_id.map(|t| format!(" (task {t})")).unwrap_or_default()
                ),
            ))),
            StoreError::Unavailable(why) => {
                tracing::warn!(error = %why, "redis unavailable");
                Self::unavailable("the data store is unavailable; retry later")
            }
            StoreError::Full(why) => {
                tracing::warn!(error = %why, "redis is full");
                Self::storage_full(
                    "the data store is full: Redis reached its memory limit (maxmemory) and refused the write; \
                     nothing was enqueued. Retry later, or free space by deleting keys",
                )
            }
            other => {
                tracing::error!(error = %other, "redis error");
                Self::Failed(Json(Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")))
            }
        }
    }
}

/// `PUT /v1/keys/` and friends: the key is empty, which the router alone would call a 404.
#[poem::handler]
pub fn empty_key() -> poem::Response {
    let err: poem::Error = ApiError::bad_request("key: key must not be empty").into();
    err.into_response()
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::domain::{MAX_KEY_BYTES, MAX_TTL_SECONDS, MAX_WAIT_SECONDS};

    /// poem-openapi validators take literals; the spec must declare the named constants.
    #[test]
    fn declared_bounds_are_the_constants() {
        let settings = crate::config::Settings::load_from(Vec::<(String, String)>::new()).unwrap();
        let spec: Value = serde_json::from_str(&super::super::openapi_spec(&settings)).unwrap();
        let param = |path: &str, method: &str, name: &str| -> Value {
            spec["paths"][path][method]["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == name)
                .unwrap_or_else(|| panic!("{method} {path} has no parameter {name}"))["schema"]
                .clone()
        };
        let num = |v: &Value| v.as_f64().unwrap() as u64;
        for method in ["put", "delete"] {
            assert_eq!(num(&param("/v1/keys/{key}", method, "wait")["maximum"]), MAX_WAIT_SECONDS);
        }
        assert_eq!(num(&param("/v1/keys", "get", "prefix")["maxLength"]), MAX_KEY_BYTES as u64);
        assert_eq!(num(&param("/v1/keys", "get", "limit")["maximum"]), u64::from(MAX_PAGE_SIZE));
        let ttl = &spec["components"]["schemas"]["PutBody"]["properties"]["ttl_seconds"];
        assert_eq!(num(&ttl["maximum"]), MAX_TTL_SECONDS);
    }
}
