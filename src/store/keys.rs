//! Redis key names under the prefix (the layout is in the module docs of `store`).

/// Redis key names, derived once from the prefix.
#[derive(Debug, Clone)]
pub struct KeySpace {
    pub prefix: String,
    pub stream: String,
    pub dead_letter: String,
    pub index: String,
    pub version: String,
    pub done_channel: String,
    /// `P:tidx`: task record keys by acceptance time, to keep only the newest records.
    pub task_index: String,
    /// `P:iidx`: idempotency keys by time, to keep only the newest.
    pub idempotency_index: String,
    /// `P:tombs`: data keys that hold a tombstone, by the time of their delete.
    pub tombstones: String,
    /// `P:t:`, the prefix of every task record (the enqueue script reads records by it).
    pub task_prefix: String,
}

impl KeySpace {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
            stream: format!("{prefix}:tasks"),
            dead_letter: format!("{prefix}:dlq"),
            index: format!("{prefix}:idx"),
            version: format!("{prefix}:ver"),
            done_channel: format!("{prefix}:done"),
            task_prefix: format!("{prefix}:t:"),
            task_index: format!("{prefix}:tidx"),
            idempotency_index: format!("{prefix}:iidx"),
            tombstones: format!("{prefix}:tombs"),
        }
    }
    pub fn data(&self, key: &str) -> String {
        format!("{}:k:{key}", self.prefix)
    }
    pub fn task(&self, id: &str) -> String {
        format!("{}{id}", self.task_prefix)
    }
    pub fn idempotency(&self, token: &str) -> String {
        format!("{}:idem:{token}", self.prefix)
    }
}
