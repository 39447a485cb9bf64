//! Every Redis data operation kvq performs, with the key layout in one place.
//!
//! Layout under the prefix `P` (design §3):
//! - `P:tasks`       stream of write tasks, consumed by group `kvq-workers`
//! - `P:dlq`         dead-letter stream
//! - `P:k:{key}`     hash of a key: `v` value, `ver` version, `seq` last applied stream id,
//!   `exp` expiry (ms), `del` tombstone flag
//! - `P:idx`         sorted set of live keys, for listing by prefix
//! - `P:t:{id}`      hash of a task record, kept `tasks.retention_seconds`
//! - `P:idem:{tok}`  task id of an idempotency token
//! - `P:ver`         the version counter
//! - `P:done`        pub/sub channel on which workers announce finished tasks that have a waiter

use std::collections::HashMap;
use std::sync::LazyLock;

use redis::streams::{StreamAutoClaimOptions, StreamAutoClaimReply, StreamId, StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands, RedisError, Script};
use std::sync::Arc;

use crate::connection::{is_unavailable, ConnectError, Redis};
use crate::domain::{now_ms, Op, StoredValue, TaskRecord, TaskStatus, WriteRequest};

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

/// A task as read from the stream by a worker.
#[derive(Debug, Clone)]
pub struct StreamTask {
    pub stream_id: String,
    pub task_id: String,
    pub op: Op,
    pub key: String,
    pub value: String,
    pub ttl_ms: Option<u64>,
    pub if_match: Option<String>,
    pub if_none_match: bool,
    pub notify: bool,
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

    pub async fn enqueue(&self, w: &WriteRequest) -> Result<Enqueued, StoreError> {
        let task_id = uuid::Uuid::new_v4().simple().to_string();
        let mut cmd = ENQUEUE.call(3);
        cmd.arg(&self.keys.stream)
            .arg(self.keys.task(&task_id))
            .arg(w.idempotency_key.as_deref().map(|t| self.keys.idempotency(t)).unwrap_or_default())
            .arg(&task_id)
            .arg(w.op.as_str())
            .arg(w.key.as_str())
            .arg(w.value.as_deref().unwrap_or(""))
            .arg(w.ttl_seconds.map(|s| (s * 1000).to_string()).unwrap_or_default())
            .arg(w.if_match.map(|v| v.to_string()).unwrap_or_default())
            .arg(if w.if_none_match { "1" } else { "" })
            .arg(if w.notify { "1" } else { "" })
            .arg(self.retention_seconds)
            .arg(&self.keys.task_prefix)
            .arg(now_ms());
        let ((id, status, duplicate, at), generation): ((String, String, u8, u64), u64) =
            self.run(|mut c| async move { eval(&mut c, &ENQUEUE, &cmd).await }).await?;
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
            let index = self.keys.index.clone();
            let _ = self.run(|mut c| async move { c.zrem::<_, _, ()>(&index, &stale).await }).await;
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
        parse_task(id, &map).map(Some)
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
    ) -> Result<Vec<StreamTask>, StoreError> {
        let opts = StreamReadOptions::default().group(GROUP, consumer).count(count).block(block_ms);
        let reply: Option<StreamReadReply> =
            conn.xread_options(&[&self.keys.stream], &[">"], &opts).await.map_err(classify)?;
        Ok(reply
            .map(|r| r.keys.into_iter().flat_map(|k| k.ids).filter_map(parse_stream_task).collect())
            .unwrap_or_default())
    }

    /// Takes over entries idle longer than `min_idle_ms` on any consumer (a dead worker's).
    pub async fn reclaim(&self, consumer: &str, min_idle_ms: u64, count: usize) -> Result<Vec<StreamTask>, StoreError> {
        let stream = self.keys.stream.clone();
        let consumer = consumer.to_string();
        let (reply, _): (StreamAutoClaimReply, u64) = self
            .run(|mut c| async move {
                c.xautoclaim_options(
                    &stream,
                    GROUP,
                    &consumer,
                    min_idle_ms,
                    "0-0",
                    StreamAutoClaimOptions::default().count(count),
                )
                .await
            })
            .await?;
        Ok(reply.claimed.into_iter().filter_map(parse_stream_task).collect())
    }

    /// Applies tasks, each atomically with its acknowledgement (scripts/apply.lua), in one round
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
            cmd.arg(&t.stream_id)
                .arg(t.op.as_str())
                .arg(&t.key)
                .arg(&t.value)
                .arg(t.ttl_ms.map(|v| v.to_string()).unwrap_or_default())
                .arg(t.if_match.as_deref().unwrap_or(""))
                .arg(if t.if_none_match { "1" } else { "" })
                .arg(if t.notify { "1" } else { "" })
                .arg(&t.task_id);
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

    /// Attempts recorded for a task (incremented by each apply).
    pub async fn attempts(&self, task_id: &str) -> Result<u32, StoreError> {
        let task = self.keys.task(task_id);
        let (n, _): (Option<u32>, u64) = self.run(|mut c| async move { c.hget(&task, "attempts").await }).await?;
        Ok(n.unwrap_or(0))
    }

    /// Moves a task to the dead-letter stream, marks it failed and acknowledges it.
    pub async fn dead_letter(&self, t: &StreamTask, error: &str) -> Result<(), StoreError> {
        let mut cmd = DEAD_LETTER.call(3);
        cmd.arg(&self.keys.stream)
            .arg(self.keys.task(&t.task_id))
            .arg(&self.keys.dead_letter)
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

fn parse_task(id: &str, map: &HashMap<String, String>) -> Result<TaskRecord, StoreError> {
    let get = |f: &str| map.get(f).map(String::as_str);
    let corrupt = |f: &str| StoreError::Corrupt(format!("task {id}: field {f}"));
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

fn parse_stream_task(entry: StreamId) -> Option<StreamTask> {
    let get = |f: &str| -> Option<String> { entry.get::<String>(f) };
    let task = StreamTask {
        task_id: get("t")?,
        op: Op::parse(&get("op")?)?,
        key: get("k")?,
        value: get("v").unwrap_or_default(),
        ttl_ms: get("ttl").and_then(|v| v.parse().ok()),
        if_match: get("if"),
        if_none_match: get("inm").is_some(),
        notify: get("w").is_some(),
        stream_id: entry.id.clone(),
    };
    Some(task)
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

    #[test]
    fn next_stream_id() {
        assert_eq!(next_id("17-4"), "17-5");
    }
}
