//! Views of domain records shared by the API (JSON, in the spec) and the HTML pages.

use poem_openapi::Object;
use serde::Serialize;

use crate::domain::{Op, TaskRecord, TaskStatus};
use crate::timefmt::rfc3339_ms;

/// A write task and what became of it.
#[derive(Debug, Clone, Object, Serialize)]
pub struct Task {
    pub id: String,
    pub op: Op,
    pub key: String,
    pub status: TaskStatus,
    /// How many times a worker tried to apply it.
    pub attempts: u32,
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The key's version after this write (applied tasks only).
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// RFC 3339 time the write was accepted.
    pub enqueued_at: String,
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
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
