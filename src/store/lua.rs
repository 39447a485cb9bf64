//! The Lua scripts (`src/lua/`), run with EVALSHA and loaded on demand.

use std::sync::LazyLock;

use redis::{RedisError, Script};

use crate::connection::Connection;

/// A Lua script run with EVALSHA, loaded on demand (a new master after a failover has an empty
/// script cache and answers NOSCRIPT once).
pub(super) struct Lua {
    code: &'static str,
    sha: String,
}

impl Lua {
    fn new(code: &'static str) -> Self {
        Self { code, sha: Script::new(code).get_hash().to_string() }
    }

    /// Loads the script (on every master of a cluster).
    pub(super) async fn load(&self, c: &mut Connection) -> Result<(), RedisError> {
        redis::cmd("SCRIPT").arg("LOAD").arg(self.code).query_async::<redis::Value>(c).await.map(|_| ())
    }

    /// `EVALSHA sha numkeys` — the caller appends keys and arguments.
    pub(super) fn call(&self, numkeys: usize) -> redis::Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&self.sha).arg(numkeys);
        cmd
    }
}

/// The first line of a script Redis must run even at `maxmemory` (Redis 7 script flags).
macro_rules! allow_oom {
    () => {
        "#!lua flags=allow-oom\n"
    };
}
pub(super) static ENQUEUE: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(concat!(
        include_str!("../lua/capped.lua"),
        include_str!("../lua/queue_task.lua"),
        include_str!("../lua/enqueue.lua")
    ))
});
/// A delete enqueued while Redis is full (`maxmemory`): the same script, flagged `allow-oom` so
/// Redis runs it, refusing anything but a delete of a key that holds a value (the delete frees
/// more than its stream entry takes, once applied).
pub(super) static ENQUEUE_FREEING_DELETE: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(concat!(
        allow_oom!(),
        include_str!("../lua/capped.lua"),
        include_str!("../lua/queue_task.lua"),
        include_str!("../lua/freeing_delete.lua"),
        include_str!("../lua/enqueue.lua")
    ))
});
/// Applying and dead-lettering run even when Redis is full: they only finish writes that were
/// already accepted (whose values already sit in the stream), so the queue never gets stuck
/// behind a full store and the overshoot past `maxmemory` is bounded by the accepted backlog.
pub(super) static APPLY: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(concat!(allow_oom!(), include_str!("../lua/capped.lua"), include_str!("../lua/apply.lua")))
});
pub(super) static DEAD_LETTER: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(concat!(allow_oom!(), include_str!("../lua/capped.lua"), include_str!("../lua/dead_letter.lua")))
});
pub(super) static REPLAY: LazyLock<Lua> =
    LazyLock::new(|| Lua::new(concat!(include_str!("../lua/queue_task.lua"), include_str!("../lua/replay.lua"))));
pub(super) static ENSURE_GROUP: LazyLock<Lua> =
    LazyLock::new(|| Lua::new(concat!(allow_oom!(), include_str!("../lua/ensure_group.lua"))));
pub(super) static TIDY_TOMBSTONES: LazyLock<Lua> =
    LazyLock::new(|| Lua::new(concat!(allow_oom!(), include_str!("../lua/tidy_tombstones.lua"))));
pub(super) static LOOKUP_TASK: LazyLock<Lua> =
    LazyLock::new(|| Lua::new(concat!(include_str!("../lua/capped.lua"), include_str!("../lua/lookup_task.lua"))));
/// Cluster mode: an Idempotency-Key's claim in the token's own shard, and the lookup of the task
/// it enqueued in another shard.
pub(super) static CLAIM: LazyLock<Lua> =
    LazyLock::new(|| Lua::new(concat!(include_str!("../lua/capped.lua"), include_str!("../lua/claim.lua"))));
pub(super) static LOOKUP_IDEMPOTENCY: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(concat!(include_str!("../lua/capped.lua"), include_str!("../lua/lookup_idempotency.lua")))
});
pub(super) static TIDY_INDEX: LazyLock<Lua> = LazyLock::new(|| Lua::new(include_str!("../lua/tidy_index.lua")));

/// Runs a prepared EVALSHA; on NOSCRIPT loads the script and runs it once more.
pub(super) async fn eval<T: redis::FromRedisValue>(
    c: &mut Connection,
    lua: &Lua,
    cmd: &redis::Cmd,
) -> Result<T, RedisError> {
    match cmd.query_async(c).await {
        Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
            lua.load(c).await?;
            cmd.query_async(c).await
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    /// The capped maps' bucket count is one number, in Lua and in Rust.
    #[test]
    fn capped_maps_have_the_bucket_count_rust_sizes_them_for() {
        let line = format!("local BUCKETS = {}\n", super::super::BUCKETS);
        assert!(include_str!("../lua/capped.lua").contains(&line), "capped.lua lacks {line:?}");
    }
}
