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

use super::params::{if_none_match_hits, CursorParam, IdempotencyKey, IfMatch, IfNoneMatchAny, KeyParam};
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
        let max = self.state.max_value_bytes;
        if body.value.0.len() > max {
            return Err(ApiError::too_large(format!(
                "value: {} bytes is more than the limit of {max} bytes",
                body.value.0.len()
            )));
        }
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
        )?;
        self.state.submit(write, wait.0.unwrap_or(0)).await
    }

    /// Queue a delete of the key.
    #[oai(path = "/keys/:key", method = "delete", operation_id = "deleteKey", tag = "ApiTags::Keys")]
    async fn delete_key(
        &self,
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
        let write =
            write_request(Op::Delete, key.0 .0, None, None, if_match.0, if_none_match.0, idempotency_key.0, wait.0)?;
        self.state.submit(write, wait.0.unwrap_or(0)).await
    }

    /// Read a key.
    #[oai(path = "/keys/:key", method = "get", operation_id = "getKey", tag = "ApiTags::Keys")]
    async fn get_key(
        &self,
        /// 1 to 512 bytes of UTF-8 without control characters.
        key: Path<KeyParam>,
        /// `"<version>"` (or a comma-separated list of tags, or `*`): answer 304 if the key is
        /// still at one of these versions.
        #[oai(name = "If-None-Match")]
        if_none_match: Header<Option<String>>,
    ) -> Result<GetKeyResponse, ApiError> {
        let key = key.0 .0;
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
        let cursor = cursor.0.and_then(|c| c.0);
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
) -> Result<WriteRequest, ApiError> {
    if if_none_match.is_some() && if_match.is_some() {
        return Err(ApiError::bad_request("If-Match and If-None-Match: use one condition, not both"));
    }
    Ok(WriteRequest {
        op,
        key,
        value,
        ttl_seconds,
        if_match: if_match.map(|m| m.0),
        if_none_match: if_none_match.is_some(),
        idempotency_key: idempotency_key.map(|k| k.0),
        notify: wait.unwrap_or(0) > 0,
    })
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

pub fn is_task_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

pub fn encode_cursor(key: &str) -> String {
    key.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The key a cursor stands for, or None for anything `encode_cursor` cannot have produced:
/// lowercase hex of UTF-8 (the pattern the spec declares). Works on bytes: the cursor is client
/// input and may hold any characters.
pub fn decode_cursor(c: &str) -> Option<String> {
    let c = c.as_bytes();
    if !c.len().is_multiple_of(2) || c.len() > 2 * crate::domain::MAX_KEY_BYTES {
        return None;
    }
    let bytes: Option<Vec<u8>> =
        c.chunks_exact(2).map(|pair| Some(hex_digit(pair[0])? << 4 | hex_digit(pair[1])?)).collect();
    String::from_utf8(bytes?).ok()
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
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
        assert_eq!(decode_cursor("+f"), None);
        assert_eq!(decode_cursor("6A"), None, "cursors are lowercase");
        // Multi-byte characters where a byte slice would cut one in half.
        assert_eq!(decode_cursor("\u{f1}\u{86}"), None);
        assert_eq!(decode_cursor("\u{1c6f6}N\u{bf}b"), None);
        assert_eq!(decode_cursor("a\u{e9}b"), None);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 2000, ..Default::default() })]

        #[test]
        fn decoding_any_cursor_never_panics(c in "\\PC*|.*|[0-9a-fA-F\u{e9}\u{1f600}]{0,12}") {
            if let Some(key) = decode_cursor(&c) {
                proptest::prop_assert_eq!(encode_cursor(&key), c);
            }
        }

        #[test]
        fn cursors_round_trip_for_any_key(k in "\\PC{0,512}|.{0,40}") {
            if k.len() <= crate::domain::MAX_KEY_BYTES {
                proptest::prop_assert_eq!(decode_cursor(&encode_cursor(&k)), Some(k));
            }
        }
    }
}
