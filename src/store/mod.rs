//! Every Redis data operation kvq performs, with the key layout in one place.
//!
//! Layout under the prefix `P` (`redis.key_prefix`):
//! - `P:tasks`       stream of write tasks, consumed by group `kvq-workers`; fields as
//!   `StreamTask::fields` writes them. A task's id is its stream id (`task_id_of`), and its
//!   entry is all there is of it while it is queued.
//! - `P:dlq`         dead-letter stream: `seq` (original stream id), `error`, `attempts`, `at`
//!   (ms), and every field of the original entry prefixed `task.`
//! - `P:k:{key}`     hash of a key: `v` value, `ver` version, `seq` last applied stream id,
//!   `exp` expiry (ms), `del` tombstone flag
//! - `P:idx`         sorted set of live keys, for listing by prefix
//! - `P:o:{n}`       task outcomes, a capped map (`capped.lua`; state in `P:o:n`): task id ->
//!   `[status, version, error, finished ms, op, key, attempts]` (JSON), the newest of them in
//!   three quarters of `tasks.bookkeeping_bytes`; reported for `tasks.retention_seconds` at most
//! - `P:i:{n}`       idempotency keys, a capped map (state `P:i:n`): token -> `{stream id}
//!   {request fingerprint}`, the newest of them in a quarter of the budget
//! - `P:att`         hash: attempts of tasks that failed and are not finished yet
//! - `P:tombs`       data keys holding a tombstone (scored by their delete's ms) or a value with a
//!   TTL (scored by its expiry); their leftovers go once the queue's low-water mark passed them
//! - `P:ver`         the version counter
//! - `P:done`        pub/sub channel on which workers announce finished tasks that have a waiter

mod backlog;
mod dead_letters;
mod keys;
mod listing;
mod lua;
mod queue;
mod task;

use std::sync::Arc;

use redis::RedisError;

use crate::connection::{is_unavailable, ConnectError, Redis};
use crate::domain::now_ms;

pub use dead_letters::DeadLetter;
pub use keys::KeySpace;
pub use queue::{Applied, Enqueued, MemoryStats, QueueStats};
pub use task::{
    field, request_fingerprint, stream_id_of, task_id_of, Delivered, Malformed, StreamTask, FIELDS, MAX_TTL_MS,
};

pub const GROUP: &str = "kvq-workers";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Redis is down, unreachable, loading or read-only: retry later (503).
    #[error("redis unavailable: {0}")]
    Unavailable(String),
    /// Redis refused a write because it reached `maxmemory` (an `OOM` error reply): the store is
    /// full. Nothing was written; retrying helps once memory is freed (507 for clients; the
    /// worker waits and retries, it never counts this as an attempt).
    #[error("redis is full: {0}")]
    Full(String),
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

/// Data access for server and worker. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pub redis: Redis,
    pub keys: Arc<KeySpace>,
    retention_seconds: u64,
    caps: BookkeepingCaps,
}

/// How the bookkeeping budget (`tasks.bookkeeping_bytes`) is shared: three quarters for task
/// outcomes, a quarter for idempotency keys, each a capped map (`capped.lua`) of `BUCKETS`
/// buckets, whose oldest bucket goes when a new one starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BookkeepingCaps {
    pub outcome_bucket_bytes: u64,
    pub idempotency_bucket_bytes: u64,
}

/// Buckets of a capped map (the `BUCKETS` of `capped.lua`).
pub const BUCKETS: u64 = 16;

impl BookkeepingCaps {
    pub fn from_budget(bytes: u64) -> Self {
        Self {
            outcome_bucket_bytes: (bytes / 4 * 3 / BUCKETS).max(1),
            idempotency_bucket_bytes: (bytes / 4 / BUCKETS).max(1),
        }
    }
}

impl Store {
    pub fn new(redis: Redis, retention_seconds: u64) -> Self {
        let keys = Arc::new(KeySpace::new(&redis.settings().key_prefix));
        let caps = BookkeepingCaps::from_budget(crate::config::DEFAULT_BOOKKEEPING_BYTES);
        Self { redis, keys, retention_seconds, caps }
    }

    /// The store the settings describe (not connected until first used).
    pub fn from_settings(settings: &crate::config::Settings) -> Self {
        let mut store = Self::new(Redis::new(settings.redis.clone()), settings.tasks.retention_seconds);
        store.caps = BookkeepingCaps::from_budget(settings.tasks.bookkeeping_bytes);
        store
    }

    pub fn caps(&self) -> BookkeepingCaps {
        self.caps
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
        let mut cmd = lua::ENSURE_GROUP.call(1);
        cmd.arg(&self.keys.stream).arg(GROUP);
        self.run(|mut c| async move { lua::eval::<u8>(&mut c, &lua::ENSURE_GROUP, &cmd).await }).await.map(|_| ())
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
}

/// Sorts a Redis error into "try again later" or "this failed".
pub fn classify(e: RedisError) -> StoreError {
    if is_out_of_memory(&e) {
        StoreError::Full(e.to_string())
    } else if is_unavailable(&e) {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::Redis(e)
    }
}

/// Redis's refusal of a write at `maxmemory` with `noeviction`: the `OOM` error reply, also when
/// it comes back from inside a script.
pub fn is_out_of_memory(e: &RedisError) -> bool {
    e.code() == Some("OOM") || e.to_string().contains("OOM command not allowed")
}
