//! The HTTP API of design §2, declared with poem-openapi so the spec at `/openapi.json` is generated
//! from the same types the handlers use.

use std::borrow::Cow;
use std::time::Duration;

use poem::http::StatusCode;
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::registry::MetaSchemaRef;
use poem_openapi::types::{ParseError, ParseFromJSON, ParseResult, ToJSON, Type};
use poem_openapi::{ApiResponse, Object, OpenApi, Tags};

use crate::domain::{Key, Op, TaskRecord, TaskStatus, WriteRequest, MAX_WAIT_SECONDS};
use crate::timefmt::rfc3339_ms;

use super::problem::{ApiError, Problem};
use super::state::AppState;

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
    /// Seconds until the key expires, counted from when the write is applied.
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

/// A write task and what became of it.
#[derive(Debug, Clone, Object)]
pub struct Task {
    pub id: String,
    pub op: Op,
    pub key: String,
    pub status: TaskStatus,
    /// How many times a worker tried to apply it.
    pub attempts: u32,
    #[oai(skip_serializing_if_is_none)]
    pub error: Option<String>,
    /// The key's version after this write (applied tasks only).
    #[oai(skip_serializing_if_is_none)]
    pub version: Option<u64>,
    /// RFC 3339 time the write was accepted.
    pub enqueued_at: String,
    #[oai(skip_serializing_if_is_none)]
    pub finished_at: Option<String>,
}

impl From<TaskRecord> for Task {
    fn from(r: TaskRecord) -> Self {
        Self {
            id: r.id,
            op: r.op,
            key: r.key,
            status: r.status,
            attempts: r.attempts,
            error: r.error,
            version: r.version,
            enqueued_at: rfc3339_ms(r.enqueued_at),
            finished_at: r.finished_at.map(rfc3339_ms),
        }
    }
}

/// A stored key.
#[derive(Debug, Object)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
    /// Increases with every applied write; use it with `If-Match`.
    pub version: u64,
    /// RFC 3339 expiry time, when the key has a TTL.
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
    /// Pass as `cursor` to get the next page; absent on the last page.
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
        /// 1 to 512 bytes of UTF-8 without control characters.
        key: Path<String>,
        body: Json<PutBody>,
        /// Seconds to wait for the worker to apply the write (0-30).
        #[oai(validator(maximum(value = "30")))]
        wait: Query<Option<u64>>,
        /// `"<version>"`: apply only if the key is still at this version.
        #[oai(name = "If-Match")]
        if_match: Header<Option<String>>,
        /// `*`: apply only if the key does not exist.
        #[oai(name = "If-None-Match")]
        if_none_match: Header<Option<String>>,
        /// A retry with the same token returns the same task and enqueues nothing.
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<String>>,
    ) -> Result<WriteResponse, ApiError> {
        let max = self.state.max_value_bytes;
        if body.value.0.len() > max {
            return Err(ApiError::too_large(format!(
                "value: {} bytes is more than the limit of {max} bytes",
                body.value.0.len()
            )));
        }
        let Json(body) = body;
        let write = self.write_request(
            Op::Set,
            &key,
            Some(body.value.0),
            body.ttl_seconds.map(|t| t as u64),
            &if_match,
            &if_none_match,
            &idempotency_key,
            wait.0,
        )?;
        self.state.submit(write, wait.0.unwrap_or(0)).await
    }

    /// Queue a delete of the key.
    #[oai(path = "/keys/:key", method = "delete", operation_id = "deleteKey", tag = "ApiTags::Keys")]
    async fn delete_key(
        &self,
        key: Path<String>,
        /// Seconds to wait for the worker to apply the delete (0-30).
        #[oai(validator(maximum(value = "30")))]
        wait: Query<Option<u64>>,
        #[oai(name = "If-Match")] if_match: Header<Option<String>>,
        #[oai(name = "If-None-Match")] if_none_match: Header<Option<String>>,
        #[oai(name = "Idempotency-Key")] idempotency_key: Header<Option<String>>,
    ) -> Result<WriteResponse, ApiError> {
        let write =
            self.write_request(Op::Delete, &key, None, None, &if_match, &if_none_match, &idempotency_key, wait.0)?;
        self.state.submit(write, wait.0.unwrap_or(0)).await
    }

    /// Read a key.
    #[oai(path = "/keys/:key", method = "get", operation_id = "getKey", tag = "ApiTags::Keys")]
    async fn get_key(
        &self,
        key: Path<String>,
        /// `"<version>"`: answer 304 if the key is still at this version.
        #[oai(name = "If-None-Match")]
        if_none_match: Header<Option<String>>,
    ) -> Result<GetKeyResponse, ApiError> {
        let key = parse_key(&key)?;
        let Some(v) = self.state.store.get_value(key.as_str()).await? else {
            return Err(ApiError::not_found(format!("key '{}' does not exist", key.as_str())));
        };
        let etag = format!("\"{}\"", v.version);
        if let Some(inm) = if_none_match.0.as_deref() {
            if inm.split(',').any(|t| t.trim().trim_start_matches("W/") == etag || t.trim() == "*") {
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
        /// Only keys starting with this.
        #[oai(validator(max_length = 512))]
        prefix: Query<Option<String>>,
        /// Page size (1-1000, default 100).
        #[oai(validator(minimum(value = "1"), maximum(value = "1000")))]
        limit: Query<Option<u32>>,
        /// `next_cursor` of the previous page.
        cursor: Query<Option<String>>,
    ) -> Result<ListResponse, ApiError> {
        let prefix = prefix.0.unwrap_or_default();
        let cursor = match cursor.0.as_deref() {
            None | Some("") => None,
            Some(c) => Some(
                decode_cursor(c).ok_or_else(|| ApiError::bad_request("cursor: not a cursor returned by this API"))?,
            ),
        };
        let limit = limit.0.unwrap_or(100) as usize;
        let (items, next) = self.state.store.list_keys(&prefix, cursor.as_deref(), limit).await?;
        Ok(ListResponse::Ok(Json(KeyPage {
            items: items.into_iter().map(|(key, version)| KeyItem { key, version }).collect(),
            next_cursor: next.map(|k| encode_cursor(&k)),
        })))
    }

    /// A write task's status.
    #[oai(path = "/tasks/:id", method = "get", operation_id = "getTask", tag = "ApiTags::Tasks")]
    async fn get_task(&self, id: Path<String>) -> Result<TaskResponse, ApiError> {
        if !is_task_id(&id) {
            return Err(ApiError::not_found(format!("task '{}' does not exist", id.0)));
        }
        match self.state.store.get_task(&id).await? {
            Some(t) => Ok(TaskResponse::Ok(Json(t.into()))),
            None => Err(ApiError::not_found(format!("task '{}' does not exist (or is past retention)", id.0))),
        }
    }
}

impl Api {
    #[allow(clippy::too_many_arguments)]
    fn write_request(
        &self,
        op: Op,
        key: &str,
        value: Option<String>,
        ttl_seconds: Option<u64>,
        if_match: &Header<Option<String>>,
        if_none_match: &Header<Option<String>>,
        idempotency_key: &Header<Option<String>>,
        wait: Option<u64>,
    ) -> Result<WriteRequest, ApiError> {
        let key = parse_key(key)?;
        let if_match = match if_match.0.as_deref() {
            None => None,
            Some(raw) => Some(parse_version_tag(raw).ok_or_else(|| {
                ApiError::bad_request(format!("If-Match: expected a quoted version such as \"42\", got '{raw}'"))
            })?),
        };
        let if_none_match = match if_none_match.0.as_deref() {
            None => false,
            Some("*") => true,
            Some(raw) => {
                return Err(ApiError::bad_request(format!(
                    "If-None-Match: only '*' is supported on writes, got '{raw}'"
                )))
            }
        };
        if if_none_match && if_match.is_some() {
            return Err(ApiError::bad_request("If-Match and If-None-Match: use one condition, not both"));
        }
        let idempotency_key = match idempotency_key.0.as_deref() {
            None => None,
            Some(t) if !t.is_empty() && t.len() <= 255 && t.bytes().all(|b| b.is_ascii_graphic()) => {
                Some(t.to_string())
            }
            Some(_) => {
                return Err(ApiError::bad_request(
                    "Idempotency-Key: 1 to 255 printable ASCII characters without spaces",
                ))
            }
        };
        Ok(WriteRequest {
            op,
            key,
            value,
            ttl_seconds,
            if_match,
            if_none_match,
            idempotency_key,
            notify: wait.unwrap_or(0) > 0,
        })
    }
}

/// Turns a finished task into the answer to a waiting client.
pub fn finished_response(task: TaskRecord, location: String) -> Result<WriteResponse, ApiError> {
    let status = task.status;
    let detail = task.error.clone().unwrap_or_default();
    let with_task = |code: StatusCode, detail: String| {
        let mut p = Problem::new(code, detail);
        p.task = Some(Box::new(task.clone().into()));
        Json(p)
    };
    match status {
        TaskStatus::Applied => Ok(WriteResponse::Applied(Json(task.into()), location)),
        TaskStatus::Superseded => Err(ApiError::Conflict(with_task(StatusCode::CONFLICT, detail))),
        TaskStatus::Rejected => Err(ApiError::PreconditionFailed(with_task(StatusCode::PRECONDITION_FAILED, detail))),
        TaskStatus::Failed => Err(ApiError::Failed(with_task(StatusCode::INTERNAL_SERVER_ERROR, detail))),
        TaskStatus::Queued => unreachable!("only finished tasks are answered this way"),
    }
}

pub fn wait_duration(seconds: u64) -> Duration {
    Duration::from_secs(seconds.min(MAX_WAIT_SECONDS))
}

fn parse_key(raw: &str) -> Result<Key, ApiError> {
    Key::parse(raw).map_err(|e| ApiError::bad_request(format!("key: {e}")))
}

/// Accepts `"42"`, `W/"42"` and a bare `42`.
fn parse_version_tag(raw: &str) -> Option<u64> {
    raw.trim().trim_start_matches("W/").trim_matches('"').parse().ok()
}

pub fn is_task_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

fn encode_cursor(key: &str) -> String {
    key.bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_cursor(c: &str) -> Option<String> {
    if !c.len().is_multiple_of(2) || c.len() > 1024 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..c.len()).step_by(2).map(|i| u8::from_str_radix(&c[i..i + 2], 16).ok()).collect();
    String::from_utf8(bytes?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip() {
        for k in ["a", "users/ü/1", ""] {
            assert_eq!(decode_cursor(&encode_cursor(k)).as_deref(), Some(k));
        }
        assert_eq!(decode_cursor("zz"), None);
        assert_eq!(decode_cursor("abc"), None);
    }

    #[test]
    fn version_tags() {
        assert_eq!(parse_version_tag("\"42\""), Some(42));
        assert_eq!(parse_version_tag("W/\"7\""), Some(7));
        assert_eq!(parse_version_tag("x"), None);
    }
}
