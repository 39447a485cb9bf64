//! Every Redis data operation kvq performs, with the key layout in one place.
//!
//! Layout under the prefix `P` (design §3):
//! - `P:tasks`       stream of write tasks, consumed by group `kvq-workers`; fields as
//!   `StreamTask::fields` writes them
//! - `P:dlq`         dead-letter stream: `seq` (original stream id), `error`, `attempts`, `at`
//!   (ms), and every field of the original entry prefixed `task.`
//! - `P:k:{key}`     hash of a key: `v` value, `ver` version, `seq` last applied stream id,
//!   `exp` expiry (ms), `del` tombstone flag
//! - `P:idx`         sorted set of live keys, for listing by prefix
//! - `P:t:{id}`      hash of a task record, kept `tasks.retention_seconds`
//! - `P:idem:{tok}`  `{task id} {request fingerprint}` of an idempotency token (an older kvq
//!   stored the task id alone; such a token matches any request)
//! - `P:ver`         the version counter
//! - `P:done`        pub/sub channel on which workers announce finished tasks that have a waiter

use std::collections::HashMap;
use std::sync::LazyLock;

use redis::streams::{StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands, RedisError, Script};
use sha2::{Digest, Sha256};
use std::sync::Arc;

use crate::connection::{is_unavailable, ConnectError, Redis};
use crate::domain::{now_ms, Key, Op, StoredValue, TaskRecord, TaskStatus, WriteRequest};

pub const GROUP: &str = "kvq-workers";

/// A Lua script run with EVALSHA, loaded on demand (a new master after a failover has an empty
/// script cache and answers NOSCRIPT once).
struct Lua {
    code: &'static str,
    sha: String,
}

impl Lua {
    fn new(code: &'static str) -> Self {
        Self { code, sha: Script::new(code).get_hash().to_string() }
    }

    /// `EVALSHA sha numkeys` — the caller appends keys and arguments.
    fn call(&self, numkeys: usize) -> redis::Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&self.sha).arg(numkeys);
        cmd
    }
}

static ENQUEUE: LazyLock<Lua> = LazyLock::new(|| Lua::new(include_str!("scripts/enqueue.lua")));
static APPLY: LazyLock<Lua> = LazyLock::new(|| Lua::new(include_str!("scripts/apply.lua")));
static DEAD_LETTER: LazyLock<Lua> = LazyLock::new(|| Lua::new(include_str!("scripts/dead_letter.lua")));
static REPLAY: LazyLock<Lua> = LazyLock::new(|| Lua::new(include_str!("scripts/replay.lua")));
static TIDY_INDEX: LazyLock<Lua> = LazyLock::new(|| Lua::new(include_str!("scripts/tidy_index.lua")));

/// Runs a prepared EVALSHA; on NOSCRIPT loads the script and runs it once more.
async fn eval<T: redis::FromRedisValue>(
    c: &mut redis::aio::MultiplexedConnection,
    lua: &Lua,
    cmd: &redis::Cmd,
) -> Result<T, RedisError> {
    match cmd.query_async(c).await {
        Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
            let _: String = redis::cmd("SCRIPT").arg("LOAD").arg(lua.code).query_async(c).await?;
            cmd.query_async(c).await
        }
        other => other,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Redis is down, unreachable, loading or read-only: retry later (503).
    #[error("redis unavailable: {0}")]
    Unavailable(String),
    /// Redis answered with an error that retrying the same request will not fix.
    #[error("redis error: {0}")]
    Redis(RedisError),
    /// Redis returned data kvq did not write (e.g. a key overwritten by hand).
    #[error("unexpected data in redis: {0}")]
    Corrupt(String),
    /// The `Idempotency-Key` was first used for a different request (task `task_id`); nothing
    /// was enqueued.
    #[error("the idempotency key was used for a different request (task {task_id})")]
    IdempotencyConflict { task_id: String },
}

impl From<ConnectError> for StoreError {
    fn from(e: ConnectError) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

/// Redis key names, derived once from the prefix.
#[derive(Debug, Clone)]
pub struct KeySpace {
    pub prefix: String,
    pub stream: String,
    pub dead_letter: String,
    pub index: String,
    pub version: String,
    pub done_channel: String,
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

/// Result of an enqueue.
#[derive(Debug, Clone)]
pub struct Enqueued {
    pub task_id: String,
    pub status: TaskStatus,
    /// True when an `Idempotency-Key` matched an earlier task and nothing was enqueued.
    pub duplicate: bool,
    pub enqueued_at: u64,
    /// Generation of the connection that carried the write (for `WAIT`).
    pub generation: u64,
}

/// Longest TTL a stream entry may carry, in ms: the API's ten years.
pub const MAX_TTL_MS: u64 = 315_360_000 * 1000;

/// The stream entry's field names: the wire format shared by `StreamTask::fields` (encode),
/// `StreamTask::decode`, the scripts that copy entries (`enqueue.lua`, `replay.lua`,
/// `dead_letter.lua`) and `apply.lua`, which receives each task's fields as name/value pairs and
/// reads them by these names.
pub mod field {
    pub const TASK_ID: &str = "t";
    pub const OP: &str = "op";
    pub const KEY: &str = "k";
    pub const VALUE: &str = "v";
    pub const TTL_MS: &str = "ttl";
    pub const IF_MATCH: &str = "if";
    pub const IF_NONE_MATCH: &str = "inm";
    pub const NOTIFY: &str = "w";
}

/// Every field of a stream entry with its meaning: adding a write option adds a row here.
pub const FIELDS: [(&str, &str); 8] = [
    (field::TASK_ID, "task id, 32 hex digits"),
    (field::OP, "operation: set or delete"),
    (field::KEY, "the key"),
    (field::VALUE, "the value (sets only)"),
    (field::TTL_MS, "TTL in ms, 1 to MAX_TTL_MS (sets only, optional)"),
    (field::IF_MATCH, "If-Match: the version the key must be at (optional)"),
    (field::IF_NONE_MATCH, "If-None-Match: 1 when the key must not exist (optional)"),
    (field::NOTIFY, "1 when a client waits for the outcome (optional)"),
];

/// A task as read from the stream by a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamTask {
    pub stream_id: String,
    pub task_id: String,
    pub op: Op,
    pub key: String,
    /// The value to set (empty for a delete).
    pub value: String,
    pub ttl_ms: Option<u64>,
    pub if_match: Option<u64>,
    pub if_none_match: bool,
    pub notify: bool,
}

impl StreamTask {
    /// The stream entry's fields (see `FIELDS`), as enqueue writes them and apply reads them; the
    /// stream id is not one of them.
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        let mut f = vec![
            (field::TASK_ID, self.task_id.clone()),
            (field::OP, self.op.as_str().to_string()),
            (field::KEY, self.key.clone()),
        ];
        if self.op == Op::Set {
            f.push((field::VALUE, self.value.clone()));
            if let Some(ttl) = self.ttl_ms {
                f.push((field::TTL_MS, ttl.to_string()));
            }
        }
        if let Some(v) = self.if_match {
            f.push((field::IF_MATCH, v.to_string()));
        }
        if self.if_none_match {
            f.push((field::IF_NONE_MATCH, "1".to_string()));
        }
        if self.notify {
            f.push((field::NOTIFY, "1".to_string()));
        }
        f
    }

    /// Decodes a stream entry's fields, saying what is wrong with an entry that is no valid
    /// task. Fields it does not know are ignored.
    pub fn decode(stream_id: &str, fields: &HashMap<String, redis::Value>) -> Result<StreamTask, String> {
        let text = |name: &str| -> Result<Option<String>, String> {
            match fields.get(name) {
                None => Ok(None),
                Some(redis::Value::BulkString(b)) => {
                    String::from_utf8(b.clone()).map(Some).map_err(|_| format!("field {name} is not UTF-8"))
                }
                Some(redis::Value::SimpleString(s)) => Ok(Some(s.clone())),
                Some(redis::Value::Int(i)) => Ok(Some(i.to_string())),
                Some(_) => Err(format!("field {name} is not a string")),
            }
        };
        let required = |name: &str, what: &str| -> Result<String, String> {
            text(name)?.ok_or_else(|| format!("field {name} ({what}) is missing"))
        };
        let task_id = required(field::TASK_ID, "task id")?;
        if !(task_id.len() == 32 && task_id.bytes().all(|b| b.is_ascii_hexdigit())) {
            return Err(format!("field {}: {} is not a task id (32 hex digits)", field::TASK_ID, shorten(&task_id)));
        }
        let op_text = required(field::OP, "operation")?;
        let op = Op::parse(&op_text)
            .ok_or_else(|| format!("field {}: unknown operation {} (set or delete)", field::OP, shorten(&op_text)))?;
        let key = required(field::KEY, "key")?;
        Key::parse(&key).map_err(|e| format!("field {}: {e}", field::KEY))?;
        let value = text(field::VALUE)?;
        let ttl = text(field::TTL_MS)?;
        let (value, ttl_ms) = match op {
            Op::Set => {
                let value = value.ok_or_else(|| format!("field {} (value) is missing from a set", field::VALUE))?;
                let ttl_ms = match ttl {
                    None => None,
                    Some(t) => Some(decimal(&t).filter(|ms| (1..=MAX_TTL_MS).contains(ms)).ok_or_else(|| {
                        format!("field {}: {} is not a TTL in ms (1 to {MAX_TTL_MS})", field::TTL_MS, shorten(&t))
                    })?),
                };
                (value, ttl_ms)
            }
            Op::Delete => {
                if value.is_some() || ttl.is_some() {
                    return Err(format!(
                        "a delete must not carry a value ({}) or a TTL ({})",
                        field::VALUE,
                        field::TTL_MS
                    ));
                }
                (String::new(), None)
            }
        };
        let if_match = match text(field::IF_MATCH)? {
            None => None,
            Some(v) => Some(
                decimal(&v).ok_or_else(|| format!("field {}: {} is not a version", field::IF_MATCH, shorten(&v)))?,
            ),
        };
        let flag = |name: &str| -> Result<bool, String> {
            match text(name)?.as_deref() {
                None => Ok(false),
                Some("1") => Ok(true),
                Some(other) => Err(format!("field {name}: expected 1, got {}", shorten(other))),
            }
        };
        let if_none_match = flag(field::IF_NONE_MATCH)?;
        if if_none_match && if_match.is_some() {
            return Err(format!(
                "fields {} and {}: a task has one condition, not both",
                field::IF_MATCH,
                field::IF_NONE_MATCH
            ));
        }
        Ok(StreamTask {
            stream_id: stream_id.to_string(),
            task_id,
            op,
            key,
            value,
            ttl_ms,
            if_match,
            if_none_match,
            notify: flag(field::NOTIFY)?,
        })
    }
}

/// A plain decimal number without sign or leading zeros (so it reads back as written).
fn decimal(s: &str) -> Option<u64> {
    let canonical = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    canonical.then(|| s.parse().ok()).flatten()
}

/// Quotes untrusted text for a message, cut to a readable length.
fn shorten(s: &str) -> String {
    let cut: String = s.chars().take(64).collect();
    if cut.len() < s.len() {
        format!("{cut:?}...")
    } else {
        format!("{cut:?}")
    }
}

/// A stream entry that is no valid task, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed {
    pub stream_id: String,
    pub reason: String,
}

/// Entries delivered to a worker: the tasks, and the entries that are no valid task.
#[derive(Debug, Clone, Default)]
pub struct Delivered {
    pub tasks: Vec<StreamTask>,
    pub malformed: Vec<Malformed>,
}

impl Delivered {
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty() && self.malformed.is_empty()
    }

    fn push(&mut self, stream_id: String, fields: Option<&HashMap<String, redis::Value>>) {
        let decoded = match fields {
            Some(f) => StreamTask::decode(&stream_id, f),
            None => Err("the entry has no fields (it was deleted)".to_string()),
        };
        match decoded {
            Ok(t) => self.tasks.push(t),
            Err(reason) => self.malformed.push(Malformed { stream_id, reason }),
        }
    }
}

/// A stream entry as XRANGE returns it: id and `[field, value, ...]`.
type RawEntry = (String, Vec<Vec<u8>>);

/// An entry of the dead-letter stream.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Its id in the dead-letter stream.
    pub id: String,
    /// Fields about the failure: `seq` (the original stream id), `error`, `attempts`, `at`.
    pub meta: Vec<(String, String)>,
    /// The original stream entry's fields, names without the `task.` prefix, in order.
    pub task_fields: Vec<(String, Vec<u8>)>,
}

impl DeadLetter {
    pub fn meta(&self, name: &str) -> Option<&str> {
        self.meta.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The write it holds, or why it cannot be replayed.
    pub fn task(&self) -> Result<StreamTask, String> {
        if self.task_fields.is_empty() {
            return Err("the dead letter holds no task fields (written by an older kvq)".into());
        }
        let map: HashMap<String, redis::Value> =
            self.task_fields.iter().map(|(k, v)| (k.clone(), redis::Value::BulkString(v.clone()))).collect();
        StreamTask::decode(self.meta("seq").unwrap_or(""), &map)
    }
}

/// SHA-256 (hex) of what makes a write request the same request: operation, key, value, TTL and
/// conditions. The `?wait` of a retry does not count.
pub fn request_fingerprint(w: &WriteRequest) -> String {
    let canonical =
        serde_json::json!([w.op.as_str(), w.key.as_str(), w.value, w.ttl_seconds, w.if_match, w.if_none_match,]);
    Sha256::digest(canonical.to_string().as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Outcome of one apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub status: TaskStatus,
    pub version: Option<u64>,
    pub error: Option<String>,
}

/// Queue figures for `/metrics` and the home page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Entries not yet delivered to any worker.
    pub lag: u64,
    /// Entries delivered but not yet acknowledged.
    pub pending: u64,
    pub dead_letters: u64,
}

impl QueueStats {
    pub fn depth(&self) -> u64 {
        self.lag + self.pending
    }
}

/// Data access for server and worker. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pub redis: Redis,
    pub keys: Arc<KeySpace>,
    retention_seconds: u64,
}

impl Store {
    pub fn new(redis: Redis, retention_seconds: u64) -> Self {
        let keys = Arc::new(KeySpace::new(&redis.settings().key_prefix));
        Self { redis, keys, retention_seconds }
    }

    /// The store the settings describe (not connected until first used).
    pub fn from_settings(settings: &crate::config::Settings) -> Self {
        Self::new(Redis::new(settings.redis.clone()), settings.tasks.retention_seconds)
    }

    /// Runs `op` on the shared connection; classifies errors and drops a dead connection.
    async fn run<T, F, Fut>(&self, op: F) -> Result<(T, u64), StoreError>
    where
        F: FnOnce(redis::aio::MultiplexedConnection) -> Fut,
        Fut: std::future::Future<Output = Result<T, RedisError>>,
    {
        let conn = self.redis.get().await?;
        let generation = conn.generation;
        match op(conn.conn).await {
            Ok(v) => Ok((v, generation)),
            Err(e) => {
                self.redis.report(generation, &e);
                Err(classify(e))
            }
        }
    }

    /// Checks that the master answers and accepts writes (for `/readyz`).
    pub async fn ping_writable(&self) -> Result<(), StoreError> {
        let key = format!("{}:ready", self.keys.prefix);
        self.run(|mut c| async move {
            let _: () = redis::cmd("SET").arg(&key).arg(now_ms()).arg("EX").arg(60).query_async(&mut c).await?;
            Ok(())
        })
        .await
        .map(|_| ())
    }

    /// Creates the stream and consumer group if missing (both binaries call it; it is idempotent).
    pub async fn ensure_group(&self) -> Result<(), StoreError> {
        let stream = self.keys.stream.clone();
        self.run(|mut c| async move {
            let created: Result<(), RedisError> = c.xgroup_create_mkstream(&stream, GROUP, "0").await;
            match created {
                Err(e) if e.to_string().contains("BUSYGROUP") => Ok(()),
                other => other,
            }
        })
        .await
        .map(|_| ())
    }

    /// Enqueues a write. With an `Idempotency-Key` already used for the same request, returns
    /// that task and enqueues nothing; used for a different request: `IdempotencyConflict`.
    pub async fn enqueue(&self, w: &WriteRequest) -> Result<Enqueued, StoreError> {
        let task_id = uuid::Uuid::new_v4().simple().to_string();
        let ttl_ms = match w.ttl_seconds {
            None => None,
            Some(s) => Some(
                s.checked_mul(1000)
                    .filter(|ms| (1..=MAX_TTL_MS).contains(ms))
                    .ok_or_else(|| StoreError::Corrupt(format!("ttl of {s} s is out of range")))?,
            ),
        };
        let task = StreamTask {
            stream_id: String::new(),
            task_id: task_id.clone(),
            op: w.op,
            key: w.key.as_str().to_string(),
            value: w.value.clone().unwrap_or_default(),
            ttl_ms,
            if_match: w.if_match,
            if_none_match: w.if_none_match,
            notify: w.notify,
        };
        let mut cmd = ENQUEUE.call(3);
        cmd.arg(&self.keys.stream)
            .arg(self.keys.task(&task_id))
            .arg(w.idempotency_key.as_deref().map(|t| self.keys.idempotency(t)).unwrap_or_default())
            .arg(&task_id)
            .arg(w.op.as_str())
            .arg(w.key.as_str())
            .arg(self.retention_seconds)
            .arg(&self.keys.task_prefix)
            .arg(now_ms())
            .arg(request_fingerprint(w));
        for (name, value) in task.fields() {
            cmd.arg(name).arg(value);
        }
        let ((id, status, duplicate, at), generation): ((String, String, u8, u64), u64) =
            self.run(|mut c| async move { eval(&mut c, &ENQUEUE, &cmd).await }).await?;
        if duplicate == 2 {
            return Err(StoreError::IdempotencyConflict { task_id: id });
        }
        Ok(Enqueued {
            task_id: id,
            status: TaskStatus::parse(&status).ok_or_else(|| StoreError::Corrupt(format!("task status {status}")))?,
            duplicate: duplicate == 1,
            enqueued_at: at,
            generation,
        })
    }

    /// Waits until `n` replicas hold every write made so far on the current master: an `INCR` on
    /// the sibling `WAIT` connection follows all writes already answered on the shared one, so
    /// `WAIT` for it covers them too. Returns the connection generation and the replicas that
    /// acknowledged.
    pub async fn wait_replicas(&self, n: u32, timeout_ms: u64) -> Result<(u64, u32), StoreError> {
        let conn = self.redis.get().await?;
        let mut ack = conn.ack.clone().ok_or_else(|| StoreError::Corrupt("no WAIT connection".into()))?;
        let marker = format!("{}:ack", self.keys.prefix);
        let result: Result<(u64, u32), RedisError> =
            redis::pipe().cmd("INCR").arg(&marker).cmd("WAIT").arg(n).arg(timeout_ms).query_async(&mut ack).await;
        match result {
            Ok((_, got)) => Ok((conn.generation, got)),
            Err(e) => {
                self.redis.report(conn.generation, &e);
                Err(classify(e))
            }
        }
    }

    pub async fn get_value(&self, key: &str) -> Result<Option<StoredValue>, StoreError> {
        let data = self.keys.data(key);
        let (fields, _): (Vec<Option<String>>, u64) = self
            .run(|mut c| async move {
                redis::cmd("HMGET").arg(&data).arg("v").arg("ver").arg("del").arg("exp").query_async(&mut c).await
            })
            .await?;
        Ok(live_value(&fields, now_ms()))
    }

    /// Lists live keys starting with `prefix`, after `cursor` (a key, exclusive), in key order.
    /// Returns the page and the cursor of the next page, if any.
    pub async fn list_keys(
        &self,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<(String, u64)>, Option<String>), StoreError> {
        let min = match cursor {
            Some(c) if c >= prefix => format!("({c}"),
            _ => format!("[{prefix}"),
        };
        // 0xff never occurs in UTF-8, so it bounds every string that starts with the prefix.
        let mut max = b"[".to_vec();
        max.extend_from_slice(prefix.as_bytes());
        max.push(0xff);
        let index = self.keys.index.clone();
        let (names, _): (Vec<String>, u64) = self
            .run(|mut c| async move {
                redis::cmd("ZRANGE")
                    .arg(&index)
                    .arg(&min)
                    .arg(&max)
                    .arg("BYLEX")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(limit)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        if names.is_empty() {
            return Ok((vec![], None));
        }
        let mut pipe = redis::pipe();
        for name in &names {
            pipe.cmd("HMGET").arg(self.keys.data(name)).arg("ver").arg("del").arg("exp");
        }
        let (rows, _): (Vec<Vec<Option<String>>>, u64) =
            self.run(|mut c| async move { pipe.query_async(&mut c).await }).await?;
        let now = now_ms();
        let mut items = Vec::with_capacity(names.len());
        let mut stale = Vec::new();
        for (name, row) in names.iter().zip(rows) {
            let fields = [Some(String::new()), row[0].clone(), row[1].clone(), row[2].clone()];
            match live_value(&fields, now) {
                Some(v) => items.push((name.clone(), v.version)),
                None => stale.push(name.clone()),
            }
        }
        if !stale.is_empty() {
            // Expired keys linger in the index until someone lists them; tidy up, best effort.
            // The script removes only keys that are still not live when it runs: one written
            // again since the check above stays listed.
            let mut cmd = TIDY_INDEX.call(1 + stale.len());
            cmd.arg(&self.keys.index);
            for name in &stale {
                cmd.arg(self.keys.data(name));
            }
            cmd.arg(now_ms());
            for name in &stale {
                cmd.arg(name);
            }
            let _ = self.run(|mut c| async move { eval::<u64>(&mut c, &TIDY_INDEX, &cmd).await }).await;
        }
        let next = (names.len() == limit).then(|| names.last().cloned()).flatten();
        Ok((items, next))
    }

    pub async fn get_task(&self, id: &str) -> Result<Option<TaskRecord>, StoreError> {
        let task = self.keys.task(id);
        let (map, _): (HashMap<String, String>, u64) = self.run(|mut c| async move { c.hgetall(&task).await }).await?;
        if map.is_empty() {
            return Ok(None);
        }
        match parse_task(id, &map) {
            Ok(t) => Ok(Some(t)),
            // Not a record kvq could have written (a hand edit, or a partial one left by an
            // older kvq): as good as gone, and no server error for the client.
            Err(e) => {
                tracing::warn!(error = %e, "ignoring an incomplete task record");
                Ok(None)
            }
        }
    }

    pub async fn queue_stats(&self) -> Result<QueueStats, StoreError> {
        let (stream, dlq) = (self.keys.stream.clone(), self.keys.dead_letter.clone());
        let ((len, dead), _): ((u64, u64), u64) =
            self.run(|mut c| async move { redis::pipe().xlen(&stream).xlen(&dlq).query_async(&mut c).await }).await?;
        // Until a worker has created the group, everything in the stream is waiting.
        let mut stats = QueueStats { lag: len, pending: 0, dead_letters: dead };
        if len == 0 {
            return Ok(stats);
        }
        let stream = self.keys.stream.clone();
        let (groups, _): (redis::Value, u64) = self
            .run(|mut c| async move { redis::cmd("XINFO").arg("GROUPS").arg(&stream).query_async(&mut c).await })
            .await?;
        if let redis::Value::Array(groups) = groups {
            for g in groups {
                let fields = value_map(&g);
                if fields.get("name").map(String::as_str) == Some(GROUP) {
                    stats.pending = fields.get("pending").and_then(|v| v.parse().ok()).unwrap_or(0);
                    // `lag` is nil when Redis cannot tell (after XDEL); then bound it by the length.
                    stats.lag =
                        fields.get("lag").and_then(|v| v.parse().ok()).unwrap_or(len.saturating_sub(stats.pending));
                }
            }
        }
        Ok(stats)
    }

    // ---- worker side ----

    /// Reads new tasks for `consumer`, blocking up to `block_ms`, on a dedicated connection.
    pub async fn read_new(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
        consumer: &str,
        count: usize,
        block_ms: usize,
    ) -> Result<Delivered, StoreError> {
        let opts = StreamReadOptions::default().group(GROUP, consumer).count(count).block(block_ms);
        let reply: Option<StreamReadReply> =
            conn.xread_options(&[&self.keys.stream], &[">"], &opts).await.map_err(classify)?;
        let mut delivered = Delivered::default();
        for entry in reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids) {
            delivered.push(entry.id, Some(&entry.map));
        }
        Ok(delivered)
    }

    /// Takes over entries idle longer than `min_idle_ms` on any consumer (a dead worker's),
    /// scanning the pending list from `start`. Returns them and the id to start the next scan
    /// from (`0-0` once the whole list was scanned).
    pub async fn reclaim(
        &self,
        consumer: &str,
        min_idle_ms: u64,
        count: usize,
        start: &str,
    ) -> Result<(Delivered, String), StoreError> {
        let mut cmd = redis::cmd("XAUTOCLAIM");
        cmd.arg(&self.keys.stream).arg(GROUP).arg(consumer).arg(min_idle_ms).arg(start).arg("COUNT").arg(count);
        let (reply, _): (redis::Value, u64) = self.run(|mut c| async move { cmd.query_async(&mut c).await }).await?;
        parse_autoclaim(reply)
    }

    /// Applies tasks, each atomically with its acknowledgement (`apply.lua`), in one round
    /// trip. Each outcome is the task's final status, or the error that kept it from applying.
    pub async fn apply(
        &self,
        tasks: &[StreamTask],
        tombstone_ms: u64,
    ) -> Result<Vec<Result<Applied, String>>, StoreError> {
        let mut cmd = APPLY.call(3 + 2 * tasks.len());
        cmd.arg(&self.keys.index).arg(&self.keys.version).arg(&self.keys.stream);
        for t in tasks {
            cmd.arg(self.keys.data(&t.key)).arg(self.keys.task(&t.task_id));
        }
        cmd.arg(now_ms()).arg(tombstone_ms).arg(GROUP).arg(&self.keys.done_channel).arg(self.retention_seconds);
        for t in tasks {
            let fields = t.fields();
            cmd.arg(&t.stream_id).arg(fields.len());
            for (name, value) in fields {
                cmd.arg(name).arg(value);
            }
        }
        let (rows, _): (Vec<(String, String, String)>, u64) =
            self.run(|mut c| async move { eval(&mut c, &APPLY, &cmd).await }).await?;
        if rows.len() != tasks.len() {
            return Err(StoreError::Corrupt(format!("{} outcomes for {} tasks", rows.len(), tasks.len())));
        }
        Ok(rows
            .into_iter()
            .map(|(status, version, error)| match TaskStatus::parse(&status) {
                Some(status) => {
                    Ok(Applied { status, version: version.parse().ok(), error: (!error.is_empty()).then_some(error) })
                }
                None => Err(error),
            })
            .collect())
    }

    /// Counts one attempt of a task that did not reach the apply script (the worker failed
    /// before it); returns the attempts now recorded.
    pub async fn count_attempt(&self, task_id: &str) -> Result<u32, StoreError> {
        let task = self.keys.task(task_id);
        let (n, _): (u32, u64) = self.run(|mut c| async move { c.hincr(&task, "attempts", 1).await }).await?;
        Ok(n)
    }

    /// Attempts recorded for a task (incremented by each apply).
    pub async fn attempts(&self, task_id: &str) -> Result<u32, StoreError> {
        let task = self.keys.task(task_id);
        let (n, _): (Option<u32>, u64) = self.run(|mut c| async move { c.hget(&task, "attempts").await }).await?;
        Ok(n.unwrap_or(0))
    }

    /// Moves a task to the dead-letter stream (its whole entry), marks it failed and
    /// acknowledges it.
    pub async fn dead_letter(&self, t: &StreamTask, error: &str) -> Result<(), StoreError> {
        let mut cmd = DEAD_LETTER.call(3);
        cmd.arg(&self.keys.stream)
            .arg(&self.keys.dead_letter)
            .arg(self.keys.task(&t.task_id))
            .arg(&t.stream_id)
            .arg(GROUP)
            .arg(error)
            .arg(now_ms())
            .arg(if t.notify { self.keys.done_channel.as_str() } else { "" })
            .arg(&t.task_id)
            .arg(t.op.as_str())
            .arg(&t.key)
            .arg(self.retention_seconds);
        self.run(|mut c| async move { eval::<String>(&mut c, &DEAD_LETTER, &cmd).await }).await.map(|_| ())
    }

    /// Moves an entry that is no valid task to the dead-letter stream with its raw fields and
    /// the reason, and acknowledges it. No task record is touched: the entry names none that
    /// can be trusted.
    pub async fn dead_letter_malformed(&self, m: &Malformed) -> Result<(), StoreError> {
        let mut cmd = DEAD_LETTER.call(3);
        cmd.arg(&self.keys.stream)
            .arg(&self.keys.dead_letter)
            .arg("")
            .arg(&m.stream_id)
            .arg(GROUP)
            .arg(format!("malformed task entry: {}", m.reason))
            .arg(now_ms())
            .arg("")
            .arg("")
            .arg("")
            .arg("")
            .arg(self.retention_seconds);
        self.run(|mut c| async move { eval::<String>(&mut c, &DEAD_LETTER, &cmd).await }).await.map(|_| ())
    }

    /// Up to `count` dead letters after `after` (exclusive; None: from the first), oldest first.
    pub async fn dead_letters(&self, after: Option<&str>, count: usize) -> Result<Vec<DeadLetter>, StoreError> {
        let start = after.map(|id| format!("({id}")).unwrap_or_else(|| "-".into());
        self.read_dead_letters(start, "+".into(), count).await
    }

    /// The dead letter with id `id`, if there is one (an id that is no stream id is none).
    pub async fn dead_letter_by_id(&self, id: &str) -> Result<Option<DeadLetter>, StoreError> {
        let valid = id.split_once('-').is_some_and(|(ms, n)| decimal(ms).is_some() && decimal(n).is_some());
        if !valid {
            return Ok(None);
        }
        Ok(self.read_dead_letters(id.into(), id.into(), 1).await?.pop())
    }

    async fn read_dead_letters(&self, start: String, end: String, count: usize) -> Result<Vec<DeadLetter>, StoreError> {
        let dlq = self.keys.dead_letter.clone();
        let (page, _): (Vec<RawEntry>, u64) = self
            .run(|mut c| async move {
                redis::cmd("XRANGE").arg(&dlq).arg(&start).arg(&end).arg("COUNT").arg(count).query_async(&mut c).await
            })
            .await?;
        let mut out = Vec::with_capacity(page.len());
        for (id, flat) in page {
            let mut d = DeadLetter { id, meta: Vec::new(), task_fields: Vec::new() };
            for pair in flat.chunks(2) {
                let name = String::from_utf8_lossy(&pair[0]).into_owned();
                let value = pair.get(1).cloned().unwrap_or_default();
                match name.strip_prefix("task.") {
                    Some(field) => d.task_fields.push((field.to_string(), value)),
                    None => d.meta.push((name, String::from_utf8_lossy(&value).into_owned())),
                }
            }
            out.push(d);
        }
        Ok(out)
    }

    /// Enqueues a dead letter's write again as a new task (accepted now, so it is ordered after
    /// every write accepted before the replay) and removes the dead letter, atomically.
    /// Returns the new task id, or None when the dead letter was not there (any more).
    pub async fn replay_dead_letter(&self, d: &DeadLetter) -> Result<Result<Option<String>, String>, StoreError> {
        let task = match d.task() {
            Ok(t) => t,
            Err(why) => return Ok(Err(why)),
        };
        let task_id = uuid::Uuid::new_v4().simple().to_string();
        // Nobody waits for the replayed write: no completion message.
        let replayed = StreamTask { task_id: task_id.clone(), notify: false, ..task };
        let mut cmd = REPLAY.call(3);
        cmd.arg(&self.keys.dead_letter)
            .arg(&self.keys.stream)
            .arg(self.keys.task(&task_id))
            .arg(&d.id)
            .arg(&task_id)
            .arg(replayed.op.as_str())
            .arg(&replayed.key)
            .arg(self.retention_seconds)
            .arg(now_ms());
        for (name, value) in replayed.fields() {
            cmd.arg(name).arg(value);
        }
        let (seq, _): (Option<String>, u64) =
            self.run(|mut c| async move { eval(&mut c, &REPLAY, &cmd).await }).await?;
        Ok(Ok(seq.map(|_| task_id)))
    }

    /// Drops acknowledged entries from the stream head so it does not grow forever.
    /// Only entries older than every pending and undelivered one are removed.
    pub async fn trim_acknowledged(&self) -> Result<(), StoreError> {
        let stream = self.keys.stream.clone();
        self.run(|mut c| async move {
            let groups: redis::Value = redis::cmd("XINFO").arg("GROUPS").arg(&stream).query_async(&mut c).await?;
            let Some(last_delivered) = (match &groups {
                redis::Value::Array(gs) => gs
                    .iter()
                    .map(value_map)
                    .find(|f| f.get("name").map(String::as_str) == Some(GROUP))
                    .and_then(|f| f.get("last-delivered-id").cloned()),
                _ => None,
            }) else {
                return Ok(());
            };
            // The oldest pending entry bounds the trim; without one, everything delivered is acked.
            let pending: redis::Value = redis::cmd("XPENDING").arg(&stream).arg(GROUP).query_async(&mut c).await?;
            let oldest_pending = match &pending {
                redis::Value::Array(items) if items.len() >= 2 => match &items[1] {
                    redis::Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
                    _ => None,
                },
                _ => None,
            };
            let min_id = match oldest_pending {
                Some(p) => p,
                None => next_id(&last_delivered),
            };
            let _: u64 =
                redis::cmd("XTRIM").arg(&stream).arg("MINID").arg("~").arg(&min_id).query_async(&mut c).await?;
            Ok(())
        })
        .await
        .map(|_| ())
    }
}

fn next_id(id: &str) -> String {
    match id.split_once('-') {
        Some((ms, n)) => format!("{ms}-{}", n.parse::<u64>().unwrap_or(0) + 1),
        None => id.to_string(),
    }
}

/// Reads `[v, ver, del, exp]`: the value if it exists, is no tombstone and has not expired.
fn live_value(fields: &[Option<String>], now: u64) -> Option<StoredValue> {
    let value = fields.first()?.clone()?;
    let version = fields.get(1)?.as_deref()?.parse().ok()?;
    if fields.get(2).cloned().flatten().as_deref() == Some("1") {
        return None;
    }
    let expires_at = fields.get(3).cloned().flatten().and_then(|e| e.parse::<u64>().ok()).filter(|&e| e > 0);
    if expires_at.is_some_and(|e| e <= now) {
        return None;
    }
    Some(StoredValue { value, version, expires_at })
}

/// Reads a task record; a record without a valid op, key or status is an error, other fields
/// fall back to defaults.
fn parse_task(id: &str, map: &HashMap<String, String>) -> Result<TaskRecord, StoreError> {
    let get = |f: &str| map.get(f).map(String::as_str);
    let corrupt = |f: &str| StoreError::Corrupt(format!("task {id}: field {f} is missing or invalid"));
    Ok(TaskRecord {
        id: id.to_string(),
        op: get("op").and_then(Op::parse).ok_or_else(|| corrupt("op"))?,
        key: get("key").ok_or_else(|| corrupt("key"))?.to_string(),
        status: get("status").and_then(TaskStatus::parse).ok_or_else(|| corrupt("status"))?,
        attempts: get("attempts").and_then(|a| a.parse().ok()).unwrap_or(0),
        error: get("error").map(String::from),
        version: get("version").and_then(|v| v.parse().ok()),
        enqueued_at: get("enqueued_at").and_then(|v| v.parse().ok()).unwrap_or(0),
        finished_at: get("finished_at").and_then(|v| v.parse().ok()),
    })
}

/// Reads an XAUTOCLAIM reply `[next start, [[id, [field, value, ...] or nil], ...], [deleted
/// ids]]` (the third element, Redis 7+, lists pending ids whose entries are gone; Redis already
/// removed them from the pending list, so they are ignored here).
fn parse_autoclaim(reply: redis::Value) -> Result<(Delivered, String), StoreError> {
    let bad = |what: &str| StoreError::Corrupt(format!("XAUTOCLAIM reply: {what}"));
    let redis::Value::Array(mut items) = reply else { return Err(bad("not an array")) };
    if items.len() < 2 {
        return Err(bad("fewer than 2 elements"));
    }
    let claimed = items.swap_remove(1);
    let next = match &items[0] {
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        redis::Value::SimpleString(s) => s.clone(),
        _ => return Err(bad("no cursor")),
    };
    let mut delivered = Delivered::default();
    let redis::Value::Array(entries) = claimed else { return Err(bad("claimed entries are not an array")) };
    for entry in entries {
        let redis::Value::Array(parts) = entry else { continue };
        let mut parts = parts.into_iter();
        let id = match parts.next() {
            Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(&b).into_owned(),
            Some(redis::Value::SimpleString(s)) => s,
            _ => continue,
        };
        match parts.next() {
            Some(redis::Value::Array(flat)) => {
                let mut map = HashMap::new();
                let mut flat = flat.into_iter();
                while let (Some(k), Some(v)) = (flat.next(), flat.next()) {
                    let name = match k {
                        redis::Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
                        redis::Value::SimpleString(s) => s,
                        _ => continue,
                    };
                    map.insert(name, v);
                }
                delivered.push(id, Some(&map));
            }
            _ => delivered.push(id, None),
        }
    }
    Ok((delivered, next))
}

/// Flattens a RESP map or `[k, v, k, v]` array into strings (integers included).
fn value_map(v: &redis::Value) -> HashMap<String, String> {
    let text = |v: &redis::Value| match v {
        redis::Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        redis::Value::SimpleString(s) => Some(s.clone()),
        redis::Value::Int(i) => Some(i.to_string()),
        redis::Value::Nil => Some(String::new()),
        _ => None,
    };
    let mut out = HashMap::new();
    match v {
        redis::Value::Array(items) => {
            for pair in items.chunks(2) {
                if let (Some(k), Some(val)) = (pair.first().and_then(text), pair.get(1).and_then(text)) {
                    out.insert(k, val);
                }
            }
        }
        redis::Value::Map(items) => {
            for (k, val) in items {
                if let (Some(k), Some(val)) = (text(k), text(val)) {
                    out.insert(k, val);
                }
            }
        }
        _ => {}
    }
    out
}

/// Sorts a Redis error into "try again later" or "this failed".
pub fn classify(e: RedisError) -> StoreError {
    if is_unavailable(&e) {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::Redis(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(v: &[Option<&str>]) -> Vec<Option<String>> {
        v.iter().map(|x| x.map(String::from)).collect()
    }

    #[test]
    fn live_values_exclude_tombstones_and_expired() {
        assert_eq!(live_value(&f(&[Some("x"), Some("3"), Some("0"), None]), 10).unwrap().version, 3);
        assert!(live_value(&f(&[None, Some("3"), Some("1"), None]), 10).is_none());
        assert!(live_value(&f(&[Some("x"), Some("3"), Some("0"), Some("10")]), 10).is_none());
        assert_eq!(live_value(&f(&[Some("x"), Some("3"), None, Some("11")]), 10).unwrap().expires_at, Some(11));
        assert!(live_value(&f(&[None, None, None, None]), 10).is_none());
    }

    fn bulk(fields: &[(&str, &str)]) -> HashMap<String, redis::Value> {
        fields.iter().map(|(k, v)| (k.to_string(), redis::Value::BulkString(v.as_bytes().to_vec()))).collect()
    }

    const ID: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn malformed_entries_say_what_is_wrong() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("foo", "bar")], "field t (task id) is missing"),
            (&[("t", "x"), ("op", "set"), ("k", "a"), ("v", "1")], "field t:"),
            (&[("t", ID), ("k", "a")], "field op (operation) is missing"),
            (&[("t", ID), ("op", "incr"), ("k", "a")], "unknown operation"),
            (&[("t", ID), ("op", "set"), ("v", "1")], "field k (key) is missing"),
            (&[("t", ID), ("op", "set"), ("k", ""), ("v", "1")], "field k: key must not be empty"),
            (&[("t", ID), ("op", "set"), ("k", "a")], "field v (value) is missing"),
            (&[("t", ID), ("op", "set"), ("k", "a"), ("v", "1"), ("ttl", "soon")], "field ttl:"),
            (&[("t", ID), ("op", "set"), ("k", "a"), ("v", "1"), ("ttl", "0")], "field ttl:"),
            (&[("t", ID), ("op", "set"), ("k", "a"), ("v", "1"), ("ttl", "1e3")], "field ttl:"),
            (&[("t", ID), ("op", "set"), ("k", "a"), ("v", "1"), ("if", "-1")], "field if:"),
            (&[("t", ID), ("op", "set"), ("k", "a"), ("v", "1"), ("if", "007")], "field if:"),
            (&[("t", ID), ("op", "set"), ("k", "a"), ("v", "1"), ("inm", "yes")], "field inm:"),
            (&[("t", ID), ("op", "set"), ("k", "a"), ("v", "1"), ("if", "3"), ("inm", "1")], "one condition"),
            (&[("t", ID), ("op", "delete"), ("k", "a"), ("v", "1")], "a delete must not carry"),
        ];
        for (fields, reason) in cases {
            let err = StreamTask::decode("1-1", &bulk(fields)).unwrap_err();
            assert!(err.contains(reason), "{fields:?}: {err}");
        }
        let mut invalid_utf8 = bulk(&[("t", ID), ("op", "set"), ("k", "a")]);
        invalid_utf8.insert("v".into(), redis::Value::BulkString(vec![0xff, 0xfe]));
        assert_eq!(StreamTask::decode("1-1", &invalid_utf8).unwrap_err(), "field v is not UTF-8");
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let t = StreamTask::decode("1-1", &bulk(&[("t", ID), ("op", "del"), ("k", "a"), ("x", "y")])).unwrap();
        assert_eq!((t.op, t.key.as_str(), t.stream_id.as_str()), (Op::Delete, "a", "1-1"));
    }

    #[test]
    fn incomplete_task_records_are_errors_not_panics() {
        let map: HashMap<String, String> = [("attempts", "1"), ("status", "queued"), ("version", "3")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert!(parse_task(ID, &map).is_err());
    }

    #[test]
    fn fingerprints_tell_requests_apart() {
        let w = |key: &str, value: Option<&str>, ttl: Option<u64>| WriteRequest {
            op: if value.is_some() { Op::Set } else { Op::Delete },
            key: Key::parse(key).unwrap(),
            value: value.map(String::from),
            ttl_seconds: ttl,
            if_match: None,
            if_none_match: false,
            idempotency_key: Some("tok".into()),
            notify: false,
        };
        let a = request_fingerprint(&w("a", Some("1"), None));
        assert_eq!(a, request_fingerprint(&WriteRequest { notify: true, ..w("a", Some("1"), None) }));
        assert_eq!(a.len(), 64);
        for other in [w("b", Some("1"), None), w("a", Some("2"), None), w("a", Some("1"), Some(5)), w("a", None, None)]
        {
            assert_ne!(a, request_fingerprint(&other));
        }
        assert_ne!(a, request_fingerprint(&WriteRequest { if_match: Some(1), ..w("a", Some("1"), None) }));
    }

    mod prop {
        use super::*;
        use proptest::collection::hash_map;
        use proptest::prelude::*;

        fn any_value() -> impl Strategy<Value = redis::Value> {
            prop_oneof![
                any::<Vec<u8>>().prop_map(redis::Value::BulkString),
                ".{0,40}".prop_map(|s: String| redis::Value::BulkString(s.into_bytes())),
                "[0-9]{0,22}".prop_map(|s| redis::Value::BulkString(s.into_bytes())),
                prop_oneof![Just("set"), Just("delete"), Just("del"), Just("1"), Just("")]
                    .prop_map(|s| redis::Value::BulkString(s.as_bytes().to_vec())),
                any::<i64>().prop_map(redis::Value::Int),
                Just(redis::Value::Nil),
            ]
        }

        fn any_field() -> impl Strategy<Value = String> {
            prop_oneof![
                prop_oneof![
                    Just("t"),
                    Just("op"),
                    Just("k"),
                    Just("v"),
                    Just("ttl"),
                    Just("if"),
                    Just("inm"),
                    Just("w")
                ]
                .prop_map(String::from),
                ".{0,8}",
            ]
        }

        fn valid_task() -> impl Strategy<Value = StreamTask> {
            (
                "[0-9a-f]{32}",
                any::<bool>(),
                "[^\\p{Cc}]{1,40}",
                ".{0,64}",
                proptest::option::of(1..=MAX_TTL_MS),
                proptest::option::of(any::<u64>()),
                any::<bool>(),
                any::<bool>(),
            )
                .prop_map(|(task_id, set, key, value, ttl_ms, if_match, inm, notify)| StreamTask {
                    stream_id: "1700000000000-0".into(),
                    task_id,
                    op: if set { Op::Set } else { Op::Delete },
                    key,
                    value: if set { value } else { String::new() },
                    ttl_ms: if set { ttl_ms } else { None },
                    if_none_match: inm && if_match.is_none(),
                    if_match,
                    notify,
                })
        }

        proptest! {
            #[test]
            fn arbitrary_fields_never_panic(fields in hash_map(any_field(), any_value(), 0..10)) {
                if let Ok(t) = StreamTask::decode("5-0", &fields) {
                    // Whatever decodes is a task the worker can apply as is.
                    prop_assert!(Key::parse(&t.key).is_ok());
                    prop_assert!(t.ttl_ms.is_none_or(|ms| (1..=MAX_TTL_MS).contains(&ms)));
                }
            }

            #[test]
            fn every_encoded_task_decodes_to_itself(task in valid_task()) {
                let fields: HashMap<String, redis::Value> = task
                    .fields()
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), redis::Value::BulkString(v.into_bytes())))
                    .collect();
                prop_assert_eq!(StreamTask::decode(&task.stream_id, &fields), Ok(task.clone()));
            }
        }
    }

    /// Each field name, as apply.lua reads it from a task's name/value pairs.
    #[test]
    fn apply_script_reads_every_field_by_its_name() {
        let script = include_str!("scripts/apply.lua");
        for (name, _) in FIELDS {
            assert!(script.contains(&format!("f['{name}']")), "apply.lua does not read field {name}");
        }
        // The header comment names them too.
        for (name, _) in FIELDS {
            assert!(script.lines().any(|l| l.starts_with("--") && l.contains(&format!(" {name} "))), "{name}");
        }
        // The scripts that write entries copy the fields they are given; none spells one out.
        for script in [include_str!("scripts/enqueue.lua"), include_str!("scripts/replay.lua")] {
            assert!(script.contains("the stream entry's fields") || script.contains("the new stream entry's fields"));
        }
    }

    #[test]
    fn field_names_are_distinct() {
        let names: std::collections::HashSet<_> = FIELDS.iter().map(|(n, _)| n).collect();
        assert_eq!(names.len(), FIELDS.len());
    }

    /// A real redis-server on a free loopback port, killed on drop.
    struct Server(std::process::Child, u16);

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn redis_server() -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Server(child, port)
    }

    /// enqueue -> stream entry -> decode -> apply with every option set: each does what it says.
    #[tokio::test]
    async fn every_write_option_survives_enqueue_decode_and_apply() {
        let server = redis_server();
        let settings = crate::config::Settings::load_from([(
            "KVQ__REDIS__URL".to_string(),
            format!("redis://127.0.0.1:{}", server.1),
        )])
        .unwrap();
        let store = Store::from_settings(&settings);
        store.ensure_group().await.unwrap();
        let mut conn = store.redis.get().await.unwrap().conn;
        let mut done =
            redis::Client::open(format!("redis://127.0.0.1:{}", server.1)).unwrap().get_async_pubsub().await.unwrap();
        done.subscribe(&store.keys.done_channel).await.unwrap();
        let write = |op, value: Option<&str>, ttl, if_match, inm, notify| WriteRequest {
            op,
            key: Key::parse("k").unwrap(),
            value: value.map(String::from),
            ttl_seconds: ttl,
            if_match,
            if_none_match: inm,
            idempotency_key: None,
            notify,
        };
        let mut round_trip = async |w: WriteRequest| {
            let enqueued = store.enqueue(&w).await.unwrap();
            let delivered = store.read_new(&mut conn, "c", 10, 0).await.unwrap();
            assert!(delivered.malformed.is_empty(), "{:?}", delivered.malformed);
            let [task] = &delivered.tasks[..] else { panic!("{delivered:?}") };
            assert_eq!(task.task_id, enqueued.task_id);
            let applied = store.apply(std::slice::from_ref(task), 60_000).await.unwrap().pop().unwrap().unwrap();
            (task.clone(), applied)
        };

        // Set with a TTL, If-None-Match and a waiter.
        let (t, a) = round_trip(write(Op::Set, Some("one"), Some(100), None, true, true)).await;
        assert_eq!((t.value.as_str(), t.ttl_ms, t.if_none_match, t.notify), ("one", Some(100_000), true, true));
        assert_eq!(a.status, TaskStatus::Applied);
        let v = store.get_value("k").await.unwrap().unwrap();
        assert_eq!(v.value, "one");
        let expires = v.expires_at.expect("the TTL was applied");
        assert!(expires > now_ms() + 90_000 && expires <= now_ms() + 100_000, "{expires}");
        use futures_util::StreamExt;
        let msg = tokio::time::timeout(std::time::Duration::from_secs(5), done.on_message().next()).await.unwrap();
        assert_eq!(msg.unwrap().get_payload::<String>().unwrap(), t.task_id, "the waiter is told");

        // If-None-Match on a key that exists: rejected.
        let (_, a) = round_trip(write(Op::Set, Some("two"), None, None, true, false)).await;
        assert_eq!(a.status, TaskStatus::Rejected);
        // If-Match at the wrong version: rejected; at the right one: applied, and no TTL.
        let (_, a) = round_trip(write(Op::Set, Some("two"), None, Some(v.version + 1), false, false)).await;
        assert_eq!(a.status, TaskStatus::Rejected);
        let (t, a) = round_trip(write(Op::Set, Some("two"), None, Some(v.version), false, false)).await;
        assert_eq!((t.if_match, a.status), (Some(v.version), TaskStatus::Applied));
        let v2 = store.get_value("k").await.unwrap().unwrap();
        assert_eq!((v2.value.as_str(), v2.expires_at), ("two", None));
        // A delete with If-Match.
        let (t, a) = round_trip(write(Op::Delete, None, None, Some(v2.version), false, false)).await;
        assert_eq!((t.op, a.status), (Op::Delete, TaskStatus::Applied));
        assert_eq!(store.get_value("k").await.unwrap(), None);
    }

    #[test]
    fn next_stream_id() {
        assert_eq!(next_id("17-4"), "17-5");
    }
}
