//! Validated domain types: parse, don't validate. A `Key` that exists is a valid key.

use serde::Serialize;

/// Longest key in bytes (README, API section).
pub const MAX_KEY_BYTES: usize = 512;
/// Longest `?wait=` in seconds (README, API section).
pub const MAX_WAIT_SECONDS: u64 = 30;
/// Longest TTL of a value in seconds: ten years.
pub const MAX_TTL_SECONDS: u64 = 315_360_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("key must not be empty")]
    Empty,
    #[error("key is {0} bytes; at most {max} are allowed", max = MAX_KEY_BYTES)]
    TooLong(usize),
    #[error("key must not contain control characters")]
    ControlCharacter,
}

impl Key {
    pub fn parse(raw: &str) -> Result<Self, KeyError> {
        if raw.is_empty() {
            return Err(KeyError::Empty);
        }
        if raw.len() > MAX_KEY_BYTES {
            return Err(KeyError::TooLong(raw.len()));
        }
        if raw.chars().any(char::is_control) {
            return Err(KeyError::ControlCharacter);
        }
        Ok(Self(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What a write task does to its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "server", derive(poem_openapi::Enum))]
#[cfg_attr(feature = "server", oai(rename_all = "lowercase"))]
pub enum Op {
    Set,
    Delete,
}

impl Op {
    /// The name stored in Redis and shown in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Set => "set",
            Op::Delete => "delete",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "set" => Some(Op::Set),
            "delete" => Some(Op::Delete),
            _ => None,
        }
    }
}

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "server", derive(poem_openapi::Enum))]
#[cfg_attr(feature = "server", oai(rename_all = "lowercase"))]
pub enum TaskStatus {
    Queued,
    Applied,
    Superseded,
    Rejected,
    Failed,
}

impl TaskStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Queued => "queued",
            TaskStatus::Applied => "applied",
            TaskStatus::Superseded => "superseded",
            TaskStatus::Rejected => "rejected",
            TaskStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => TaskStatus::Queued,
            "applied" => TaskStatus::Applied,
            "superseded" => TaskStatus::Superseded,
            "rejected" => TaskStatus::Rejected,
            "failed" => TaskStatus::Failed,
            _ => return None,
        })
    }

    pub fn is_final(self) -> bool {
        self != TaskStatus::Queued
    }

    pub const ALL: [TaskStatus; 5] =
        [TaskStatus::Queued, TaskStatus::Applied, TaskStatus::Superseded, TaskStatus::Rejected, TaskStatus::Failed];
}

/// A task's record as kept in Redis for `tasks.retention_seconds`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRecord {
    pub id: String,
    pub op: Op,
    pub key: String,
    pub status: TaskStatus,
    pub attempts: u32,
    pub error: Option<String>,
    pub version: Option<u64>,
    /// Milliseconds since the Unix epoch.
    pub enqueued_at: u64,
    pub finished_at: Option<u64>,
}

/// A stored value as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredValue {
    pub value: String,
    pub version: u64,
    /// Milliseconds since the Unix epoch, when the value has a TTL.
    pub expires_at: Option<u64>,
}

/// A write as accepted by the API, before it is enqueued.
#[derive(Debug, Clone)]
pub struct WriteRequest {
    pub op: Op,
    pub key: Key,
    pub value: Option<String>,
    pub ttl_seconds: Option<u64>,
    pub if_match: Option<u64>,
    pub if_none_match: bool,
    pub idempotency_key: Option<String>,
    /// Ask the worker to publish completion, because a client is waiting (`?wait`).
    pub notify: bool,
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked() {
        assert_eq!(Key::parse(""), Err(KeyError::Empty));
        assert_eq!(Key::parse(&"a".repeat(513)), Err(KeyError::TooLong(513)));
        assert!(Key::parse(&"a".repeat(512)).is_ok());
        assert_eq!(Key::parse("a\nb"), Err(KeyError::ControlCharacter));
        assert_eq!(Key::parse("a\u{7f}"), Err(KeyError::ControlCharacter));
        // multi-byte characters count in bytes
        assert_eq!(Key::parse(&"é".repeat(257)), Err(KeyError::TooLong(514)));
        assert_eq!(Key::parse("users/42 ünïcode").unwrap().as_str(), "users/42 ünïcode");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 2000, ..Default::default() })]

        #[test]
        fn any_string_parses_to_a_key_or_the_reason_it_is_not_one(
            raw in "\\PC{0,600}|.{0,40}|[a\u{e9}\u{1f600}]{120,200}|\\PC{0,5}[\\x00-\\x1f\\x7f-\\x9f]\\PC{0,5}"
        ) {
            match Key::parse(&raw) {
                Ok(key) => {
                    proptest::prop_assert_eq!(key.as_str(), raw.as_str());
                    proptest::prop_assert!(!raw.is_empty() && raw.len() <= MAX_KEY_BYTES);
                    proptest::prop_assert!(!raw.chars().any(char::is_control));
                }
                Err(KeyError::Empty) => proptest::prop_assert!(raw.is_empty()),
                Err(KeyError::TooLong(n)) => proptest::prop_assert!(n == raw.len() && n > MAX_KEY_BYTES),
                Err(KeyError::ControlCharacter) => proptest::prop_assert!(raw.chars().any(char::is_control)),
            }
        }
    }

    #[test]
    fn statuses_round_trip() {
        for s in TaskStatus::ALL {
            assert_eq!(TaskStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(TaskStatus::parse("nope"), None);
    }
}
