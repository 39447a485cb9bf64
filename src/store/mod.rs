//! Every Redis data operation kvq performs, with the key layout in one place.
//!
//! Layout of a shard under its base `B` (`keys.rs`: the prefix `redis.key_prefix` outside a
//! cluster, where there is one shard; the shard's hash tag `{P:n:salt}` in a Redis Cluster,
//! where `tasks.shards` shards each hold the keys that hash to them and live in one slot):
//! - `B:tasks`       stream of write tasks, consumed by group `kvq-workers`; fields as
//!   `StreamTask::fields` writes them. A task's id is its stream id and its shard
//!   (`task_id_of`), and its entry is all there is of it while it is queued.
//! - `B:dlq`         dead-letter stream: `seq` (original stream id), `error`, `attempts`, `at`
//!   (ms), and every field of the original entry prefixed `task.`
//! - `B:k:{key}`     hash of a key: `v` value, `ver` version, `seq` last applied stream id,
//!   `exp` expiry (ms), `del` tombstone flag
//! - `B:idx`         sorted set of the shard's live keys, for listing by prefix
//! - `B:o:n`, `B:o:0` .. `B:o:15`  task outcomes, a capped map (`capped.lua`): stream id ->
//!   `[status, version, error, finished ms, op, key, attempts]` (JSON), the newest of them in
//!   three quarters of the shard's part of `tasks.bookkeeping_bytes`; reported for
//!   `tasks.retention_seconds` at most
//! - `B:i:n`, `B:i:0` .. `B:i:15`  idempotency keys, a capped map: token -> `{stream id}
//!   {request fingerprint}`, the newest of them in a quarter of the shard's budget
//! - `B:att`         hash: attempts of tasks that failed and are not finished yet
//! - `B:tombs`       data keys holding a tombstone (scored by their delete's ms) or a value with a
//!   TTL (scored by its expiry); their leftovers go once the queue's low-water mark passed them
//! - `B:ver`         the shard's version counter (versions only ever increase per key)
//! - `B:ready`, `B:ack`  written by the readiness check and before `WAIT`
//! - `P:done`        pub/sub channel on which workers announce finished tasks that have a waiter
//!   (one for all shards: a cluster delivers messages to every node)

mod backlog;
mod dead_letters;
mod keys;
mod listing;
mod lua;
mod queue;
mod task;

use std::sync::Arc;

use redis::RedisError;

use crate::connection::{is_unavailable, ConnectError, Connection, Redis};
use crate::domain::now_ms;

pub use dead_letters::DeadLetter;
pub use keys::{shard_of, KeySpace, Shards, BUCKETS};
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
    #[error("the idempotency key was used for a different request (task {task_id:?})")]
    IdempotencyConflict { task_id: Option<String> },
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
    pub shards: Arc<Shards>,
    retention_seconds: u64,
    caps: BookkeepingCaps,
}

/// How the bookkeeping budget (`tasks.bookkeeping_bytes`) is shared: equally between the shards,
/// and in each, three quarters for task outcomes, a quarter for idempotency keys, each a capped
/// map (`capped.lua`) of `BUCKETS` buckets, whose oldest bucket goes when a new one starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BookkeepingCaps {
    pub outcome_bucket_bytes: u64,
    pub idempotency_bucket_bytes: u64,
    /// Cluster mode: the idempotency keys' quarter is shared with their claims.
    pub claim_bucket_bytes: u64,
}

impl BookkeepingCaps {
    pub fn from_budget(bytes: u64, shards: usize) -> Self {
        let per_shard = bytes / shards.max(1) as u64;
        let (idempotency, claims) = match shards {
            0 | 1 => (per_shard / 4, 0),
            _ => (per_shard / 8, per_shard / 8),
        };
        Self {
            outcome_bucket_bytes: (per_shard / 4 * 3 / BUCKETS as u64).max(1),
            idempotency_bucket_bytes: (idempotency / BUCKETS as u64).max(1),
            claim_bucket_bytes: (claims / BUCKETS as u64).max(1),
        }
    }
}

impl Store {
    /// The store the settings describe (not connected until first used).
    pub fn from_settings(settings: &crate::config::Settings) -> Self {
        let redis = Redis::new(settings.redis.clone());
        let prefix = &settings.redis.key_prefix;
        let shards = match settings.redis.mode {
            crate::config::RedisMode::Cluster => Shards::cluster(prefix, settings.tasks.shards as usize),
            _ => Shards::single(prefix),
        };
        let caps = BookkeepingCaps::from_budget(settings.tasks.bookkeeping_bytes, shards.len());
        Self { redis, shards: Arc::new(shards), retention_seconds: settings.tasks.retention_seconds, caps }
    }

    /// Shard `n` (see `Shards::get`); a number no shard has is corrupt data.
    pub fn shard(&self, n: usize) -> Result<&KeySpace, StoreError> {
        self.shards.get(n).ok_or_else(|| StoreError::Corrupt(format!("no shard {n}")))
    }

    pub fn caps(&self) -> BookkeepingCaps {
        self.caps
    }

    /// Runs `op` on the shared connection; classifies errors and drops a dead connection.
    async fn run<T, F, Fut>(&self, op: F) -> Result<(T, u64), StoreError>
    where
        F: FnOnce(Connection) -> Fut,
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

    /// Runs a write and returns its reply with the generation `WAIT` must match: the
    /// connection's, or in a cluster whose writes await replicas, the node's that took it (the
    /// `CLUSTER MYID` after it in the same pipeline runs on the same node).
    async fn run_on_node<T: redis::FromRedisValue + Send + 'static>(
        &self,
        shard: &KeySpace,
        cmd: redis::Cmd,
    ) -> Result<(T, u64), StoreError> {
        if !(self.redis.is_cluster() && self.redis.settings().min_replicas_ack > 0) {
            return self.run(|mut c| async move { cmd.query_async::<T>(&mut c).await }).await;
        }
        let mut pipe = redis::pipe();
        pipe.add_command(cmd).cmd("CLUSTER").arg("MYID");
        let slot = shard.slot;
        let ((reply, node), _): ((T, String), u64) =
            self.run(|mut c| async move { c.query_on_slot(&pipe, slot).await }).await?;
        Ok((reply, node_generation(&node)))
    }

    /// `run_on_node` for a script call, loading the script when the node lacks it.
    async fn eval_on_node<T: redis::FromRedisValue + Send + 'static>(
        &self,
        shard: &KeySpace,
        script: &'static lua::Lua,
        cmd: redis::Cmd,
    ) -> Result<(T, u64), StoreError> {
        match self.run_on_node(shard, cmd.clone()).await {
            Err(StoreError::Redis(e)) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                self.run(|mut c| async move { script.load(&mut c).await }).await?;
                self.run_on_node(shard, cmd).await
            }
            other => other,
        }
    }

    /// Checks that the master of every shard answers and accepts writes (for `/readyz`), and in a
    /// cluster that the data there was written with this process's shard count.
    pub async fn ping_writable(&self) -> Result<(), StoreError> {
        self.check_layout().await?;
        let now = now_ms();
        self.each_shard(|shard| {
            let key = shard.ready.clone();
            self.run(move |mut c| async move {
                redis::cmd("SET").arg(&key).arg(now).arg("EX").arg(60).query_async::<()>(&mut c).await
            })
        })
        .await
    }

    /// Runs `op` for every shard at once; the first error wins.
    async fn each_shard<'a, F, Fut, T>(&'a self, op: F) -> Result<(), StoreError>
    where
        F: Fn(&'a KeySpace) -> Fut,
        Fut: std::future::Future<Output = Result<(T, u64), StoreError>>,
    {
        futures_util::future::try_join_all(self.shards.all().iter().map(op)).await.map(|_| ())
    }

    /// Creates each shard's stream and consumer group if missing (both binaries call it; it is
    /// idempotent). In cluster mode it also records the shard count, and refuses a different
    /// one: the same keys would map to other shards.
    pub async fn ensure_group(&self) -> Result<(), StoreError> {
        self.ensure_groups(self.shards.all()).await
    }

    /// `ensure_group` for one shard: what a shard's read loop needs before it reads.
    pub async fn ensure_shard_group(&self, shard: usize) -> Result<(), StoreError> {
        self.ensure_groups(std::slice::from_ref(self.shard(shard)?)).await
    }

    async fn ensure_groups(&self, shards: &[KeySpace]) -> Result<(), StoreError> {
        self.check_layout().await?;
        futures_util::future::try_join_all(shards.iter().map(|shard| {
            let mut cmd = lua::ENSURE_GROUP.call(1);
            cmd.arg(&shard.stream).arg(GROUP);
            self.run(|mut c| async move { lua::eval::<u8>(&mut c, &lua::ENSURE_GROUP, &cmd).await })
        }))
        .await?;
        if self.shards.layout.is_none() {
            // Best effort: a full Redis refuses the marker, and the worker must still start.
            if let Err(e) = self.drop_legacy_buckets().await {
                tracing::debug!(error = %e, "could not drop the buckets of an older kvq yet");
            }
        }
        Ok(())
    }

    /// In a cluster: records the shard count, or checks it against the recorded one. A
    /// different count is an error that names the setting: every key would map to another
    /// shard than the one holding its data and queued writes.
    pub async fn check_layout(&self) -> Result<(), StoreError> {
        let Some(layout) = self.shards.layout.clone() else { return Ok(()) };
        let n = self.shards.len();
        let (stored, _): (Option<usize>, u64) = self
            .run(|mut c| async move {
                // read first: a full Redis refuses the SET even when the key exists
                let stored: Option<usize> = redis::cmd("GET").arg(&layout).query_async(&mut c).await?;
                if stored.is_some() {
                    return Ok(stored);
                }
                let _: () = redis::cmd("SET").arg(&layout).arg(n).arg("NX").query_async(&mut c).await?;
                redis::cmd("GET").arg(&layout).query_async(&mut c).await
            })
            .await?;
        match stored {
            Some(s) if s != n => Err(StoreError::Corrupt(format!(
                "the data in this Redis Cluster was written with tasks.shards={s}, and this process has \
                 tasks.shards={n}: set KVQ__TASKS__SHARDS={s} (the shard count cannot change once data exists)"
            ))),
            _ => Ok(()),
        }
    }

    /// Buckets a kvq from before the capped maps were rings left behind: numbered past the ring
    /// (16 and up), they would never be freed. The map's state names the newest of them, and
    /// records that they are gone.
    async fn drop_legacy_buckets(&self) -> Result<(), StoreError> {
        let shard = self.shard(0)?;
        for map in [&shard.outcomes, &shard.idempotency] {
            let state = map.keys[0].clone();
            let base = state.strip_suffix('n').unwrap_or(&state).to_string();
            self.run(|mut c| async move {
                let (dropped, b): (Option<String>, Option<u64>) =
                    redis::cmd("HMGET").arg(&state).arg("legacy").arg("b").query_async(&mut c).await?;
                if dropped.is_some() {
                    return Ok(());
                }
                let b = b.unwrap_or(0);
                let mut pipe = redis::pipe();
                for n in b.saturating_sub(2 * BUCKETS as u64).max(BUCKETS as u64)..=b {
                    pipe.cmd("UNLINK").arg(format!("{base}{n}")).ignore();
                }
                pipe.cmd("HSET").arg(&state).arg("legacy").arg("dropped").ignore();
                pipe.query_async::<()>(&mut c).await
            })
            .await?;
        }
        Ok(())
    }

    /// Waits until `n` replicas hold every write made so far on the master of `shard`: an `INCR`
    /// on the sibling `WAIT` connection follows all writes already answered on the shared one,
    /// so `WAIT` for it covers them too. Returns the generation of the master that answered (see
    /// `Enqueued::generation`) and the replicas that acknowledged.
    pub async fn wait_replicas(&self, shard: usize, n: u32, timeout_ms: u64) -> Result<(u64, u32), StoreError> {
        let conn = self.redis.get().await?;
        let mut ack = conn.ack.clone().ok_or_else(|| StoreError::Corrupt("no WAIT connection".into()))?;
        let shard = self.shard(shard)?;
        let mut pipe = redis::pipe();
        pipe.cmd("INCR").arg(&shard.ack).ignore().cmd("WAIT").arg(n).arg(timeout_ms);
        let result: Result<(u32, Option<String>), RedisError> = if self.redis.is_cluster() {
            // the same node as the INCR: the master that holds the shard now
            pipe.cmd("CLUSTER").arg("MYID");
            ack.query_on_slot(&pipe, shard.slot).await.map(|(_, got, node): (u64, u32, String)| (got, Some(node)))
        } else {
            pipe.query_async::<(u32,)>(&mut ack).await.map(|(got,)| (got, None))
        };
        match result {
            Ok((got, node)) => Ok((node.map_or(conn.generation, |id| node_generation(&id)), got)),
            Err(e) => {
                self.redis.report(conn.generation, &e);
                Err(classify(e))
            }
        }
    }
}

/// A cluster node's id as a generation: writes and `WAIT` rounds that name different nodes
/// (the shard's master failed over in between) do not confirm each other.
pub(crate) fn node_generation(node_id: &str) -> u64 {
    u64::from_str_radix(node_id.get(..16).unwrap_or(node_id), 16).unwrap_or(u64::MAX)
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

/// At start: refuses to run against a cluster whose data was written with another shard count
/// (the message names the setting). A Redis that cannot be reached yet is no reason to stop:
/// the process retries as it always does.
pub async fn refuse_wrong_layout(store: &Store) -> Result<(), String> {
    match tokio::time::timeout(crate::connection::CONNECT_TIMEOUT * 5, store.check_layout()).await {
        Ok(Err(StoreError::Corrupt(why))) => Err(why),
        _ => Ok(()),
    }
}
