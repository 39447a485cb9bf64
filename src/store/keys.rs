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
    /// `P:tombs`: data keys that hold a tombstone or an expiring value, by the time of their
    /// delete or expiry.
    pub tombstones: String,
    /// `P:o:`, the base of the task outcome map (`capped.lua`: buckets `P:o:0`, `P:o:1`, ... and
    /// the state hash `P:o:n`).
    pub outcomes: String,
    /// `P:i:`, the base of the idempotency map (Idempotency-Key -> task), capped the same way.
    pub idempotency: String,
    /// `P:att`: attempts of tasks that failed at least once and are not finished, by stream id.
    pub attempts: String,
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
            tombstones: format!("{prefix}:tombs"),
            outcomes: format!("{prefix}:o:"),
            idempotency: format!("{prefix}:i:"),
            attempts: format!("{prefix}:att"),
        }
    }
    pub fn data(&self, key: &str) -> String {
        format!("{}:k:{key}", self.prefix)
    }
}
