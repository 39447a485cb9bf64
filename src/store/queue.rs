//! The task queue: enqueue, delivery to workers (read, reclaim), apply, attempts, trimming and
//! queue figures.

use std::collections::HashMap;

use redis::streams::{StreamReadOptions, StreamReadReply};
use redis::AsyncCommands;

use crate::domain::{now_ms, Op, TaskStatus, WriteRequest};

use super::lua::{eval, Lua, APPLY, CLAIM, ENQUEUE, ENQUEUE_FREEING_DELETE, LOOKUP_IDEMPOTENCY, TIDY_TOMBSTONES};

/// Tombstones one tidy call looks at, and calls per trim: up to 100,000 a trim.
const TIDY_BATCH: u64 = 5000;
const TIDY_ROUNDS: usize = 20;
use super::task::{request_fingerprint, stream_id_ms, task_id_of, Delivered, StreamTask, MAX_TTL_MS};
use super::{classify, KeySpace, Store, StoreError, GROUP};
use crate::connection::Connection;

/// Result of an enqueue.
#[derive(Debug, Clone)]
pub struct Enqueued {
    pub task_id: String,
    pub status: TaskStatus,
    /// True when an `Idempotency-Key` matched an earlier task and nothing was enqueued.
    pub duplicate: bool,
    pub enqueued_at: u64,
    /// The shard that queued it.
    pub shard: usize,
    /// Generation of the connection that carried the write, or in a cluster of the node that
    /// took it (for `WAIT`: a round on another master does not confirm it).
    pub generation: u64,
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

/// Redis memory figures for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// `used_memory` of `INFO memory`.
    pub used: u64,
    /// `maxmemory`; 0 when Redis has no limit.
    pub max: u64,
    /// Bytes kvq's own bookkeeping takes (`MEMORY USAGE`): the task stream and the dead-letter
    /// stream.
    pub bookkeeping: u64,
}

impl QueueStats {
    pub fn depth(&self) -> u64 {
        self.lag + self.pending
    }
}

impl Store {
    /// Enqueues a write. With an `Idempotency-Key` already used for the same request, returns
    /// that task and enqueues nothing; used for a different request: `IdempotencyConflict`.
    pub async fn enqueue(&self, w: &WriteRequest) -> Result<Enqueued, StoreError> {
        let ttl_ms = match w.ttl_seconds {
            None => None,
            Some(s) => Some(
                s.checked_mul(1000)
                    .filter(|ms| (1..=MAX_TTL_MS).contains(ms))
                    .ok_or_else(|| StoreError::Corrupt(format!("ttl of {s} s is out of range")))?,
            ),
        };
        let shard = self.shards.of(w.key.as_str());
        let task = StreamTask {
            shard: shard.shard,
            stream_id: String::new(),
            task_id: String::new(),
            op: w.op,
            key: w.key.as_str().to_string(),
            value: w.value.clone().unwrap_or_default(),
            ttl_ms,
            if_match: w.if_match,
            if_none_match: w.if_none_match,
            notify: w.notify,
        };
        let token = w.idempotency_key.as_deref().unwrap_or_default();
        let fingerprint = if token.is_empty() { String::new() } else { request_fingerprint(w) };
        let command = |lua: &Lua, data_key: Option<String>| {
            let maps = shard.idempotency.keys.len() + shard.outcomes.keys.len();
            let mut cmd = lua.call(1 + maps + usize::from(data_key.is_some()));
            cmd.arg(&shard.stream).arg(&shard.idempotency.keys).arg(&shard.outcomes.keys);
            if let Some(data) = data_key {
                cmd.arg(data);
            }
            cmd.arg(token).arg(&fingerprint).arg(now_ms()).arg(self.caps.idempotency_bucket_bytes);
            task.push_fields(&mut cmd);
            cmd
        };
        if !token.is_empty() && self.shards.len() > 1 {
            self.claim_idempotency_key(token, &fingerprint, shard.shard).await?;
        }
        let reply = if token.is_empty() {
            // Nothing to check first: one XADD is the whole enqueue (it fails whole, or adds).
            let mut cmd = redis::cmd("XADD");
            cmd.arg(&shard.stream).arg("*");
            task.push_fields(&mut cmd);
            self.run_on_node(shard, cmd).await.and_then(|(id, g): (String, u64)| {
                let at = stream_id_ms(&id).ok_or_else(|| StoreError::Corrupt(format!("stream id {id}")))?;
                Ok(((id, "queued".to_string(), 0, at), g))
            })
        } else {
            let cmd = command(&ENQUEUE, None);
            self.eval_on_node(shard, &ENQUEUE, cmd).await
        };
        let ((stream_id, status, duplicate, at), generation): ((String, String, u8, u64), u64) = match reply {
            // Redis is full: a delete of a key that holds a value still gets through, so
            // clients can free space.
            Err(StoreError::Full(_)) if w.op == Op::Delete => {
                let cmd = command(&ENQUEUE_FREEING_DELETE, Some(shard.data(w.key.as_str())));
                self.eval_on_node(shard, &ENQUEUE_FREEING_DELETE, cmd).await?
            }
            other => other?,
        };
        let id =
            task_id_of(&stream_id, shard.shard).ok_or_else(|| StoreError::Corrupt(format!("stream id {stream_id}")))?;
        if duplicate == 2 {
            return Err(StoreError::IdempotencyConflict { task_id: Some(id) });
        }
        Ok(Enqueued {
            task_id: id,
            status: TaskStatus::parse(&status).ok_or_else(|| StoreError::Corrupt(format!("task status {status}")))?,
            duplicate: duplicate == 1,
            enqueued_at: at,
            shard: shard.shard,
            generation,
        })
    }

    /// Cluster mode: claims `token` in its own shard for this request (key shard `shard`,
    /// `fingerprint`); a token the claim names for a different request is a conflict, with that
    /// request's task when its shard still knows it.
    async fn claim_idempotency_key(&self, token: &str, fingerprint: &str, shard: usize) -> Result<(), StoreError> {
        let home = self.shards.of(token);
        let mut cmd = CLAIM.call(home.claims.keys.len());
        cmd.arg(&home.claims.keys).arg(token).arg(fingerprint).arg(shard).arg(self.caps.claim_bucket_bytes);
        let ((first_shard, first_fingerprint), _): ((usize, String), u64) =
            self.run(|mut c| async move { eval(&mut c, &CLAIM, &cmd).await }).await?;
        if first_fingerprint == fingerprint {
            return Ok(());
        }
        let other = self.shard(first_shard)?;
        let mut cmd = LOOKUP_IDEMPOTENCY.call(other.idempotency.keys.len());
        cmd.arg(&other.idempotency.keys).arg(token);
        let (record, _): (Option<String>, u64) =
            self.run(|mut c| async move { eval(&mut c, &LOOKUP_IDEMPOTENCY, &cmd).await }).await?;
        let task_id = record
            .as_deref()
            .and_then(|r| r.split(' ').next())
            .and_then(|stream_id| task_id_of(stream_id, first_shard));
        Err(StoreError::IdempotencyConflict { task_id })
    }

    /// Queue figures summed over the shards.
    pub async fn queue_stats(&self) -> Result<QueueStats, StoreError> {
        let all = futures_util::future::try_join_all(self.shards.all().iter().map(|s| self.shard_stats(s))).await?;
        Ok(all.into_iter().fold(QueueStats::default(), |sum, s| QueueStats {
            lag: sum.lag + s.lag,
            pending: sum.pending + s.pending,
            dead_letters: sum.dead_letters + s.dead_letters,
        }))
    }

    async fn shard_stats(&self, shard: &KeySpace) -> Result<QueueStats, StoreError> {
        let (stream, dlq) = (shard.stream.clone(), shard.dead_letter.clone());
        let ((len, dead), _): ((u64, u64), u64) =
            self.run(|mut c| async move { redis::pipe().xlen(&stream).xlen(&dlq).query_async(&mut c).await }).await?;
        // Until a worker has created the group, everything in the stream is waiting.
        let mut stats = QueueStats { lag: len, pending: 0, dead_letters: dead };
        if len == 0 {
            return Ok(stats);
        }
        let stream = shard.stream.clone();
        let (groups, _): (redis::Value, u64) = self
            .run(|mut c| async move { redis::cmd("XINFO").arg("GROUPS").arg(&stream).query_async(&mut c).await })
            .await?;
        if let Some(fields) = our_group(&groups) {
            stats.pending = fields.get("pending").and_then(|v| v.parse().ok()).unwrap_or(0);
            // `lag` is nil when Redis cannot tell (after XDEL); then bound it by the length.
            stats.lag = fields.get("lag").and_then(|v| v.parse().ok()).unwrap_or(len.saturating_sub(stats.pending));
        }
        Ok(stats)
    }

    /// Redis memory: used, limit, and what kvq's bookkeeping takes of it. In a cluster, the
    /// master nearest its limit tells (a write to its shards is refused first), and the
    /// bookkeeping is summed over the shards.
    pub async fn memory_stats(&self) -> Result<MemoryStats, StoreError> {
        let all = futures_util::future::try_join_all(self.shards.all().iter().map(|s| self.shard_memory(s))).await?;
        let fullest = |m: &&MemoryStats| if m.max == 0 { 0.0 } else { m.used as f64 / m.max as f64 };
        let mut out = all
            .iter()
            .max_by(|a, b| fullest(a).total_cmp(&fullest(b)).then(a.used.cmp(&b.used)))
            .cloned()
            .unwrap_or_default();
        out.bookkeeping = all.iter().map(|m| m.bookkeeping).sum();
        Ok(out)
    }

    async fn shard_memory(&self, shard: &KeySpace) -> Result<MemoryStats, StoreError> {
        let (stream, dlq) = (shard.stream.clone(), shard.dead_letter.clone());
        // MEMORY USAGE first: the pipeline goes to the node of its first key, the shard's master.
        let ((stream_bytes, dlq_bytes, info), _): ((Option<u64>, Option<u64>, String), u64) = self
            .run(|mut c| async move {
                redis::pipe()
                    .cmd("MEMORY")
                    .arg("USAGE")
                    .arg(&stream)
                    .cmd("MEMORY")
                    .arg("USAGE")
                    .arg(&dlq)
                    .cmd("INFO")
                    .arg("memory")
                    .query_async(&mut c)
                    .await
            })
            .await?;
        let field = |name: &str| {
            info.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':')?.trim().parse::<u64>().ok()).unwrap_or(0)
        };
        Ok(MemoryStats {
            used: field("used_memory"),
            max: field("maxmemory"),
            bookkeeping: stream_bytes.unwrap_or(0) + dlq_bytes.unwrap_or(0),
        })
    }

    /// Reads new tasks of `shard` for `consumer`, blocking up to `block_ms`, on a dedicated
    /// connection.
    pub async fn read_new(
        &self,
        conn: &mut Connection,
        shard: usize,
        consumer: &str,
        count: usize,
        block_ms: usize,
    ) -> Result<Delivered, StoreError> {
        let opts = StreamReadOptions::default().group(GROUP, consumer).count(count).block(block_ms);
        let stream = &self.shard(shard)?.stream;
        let reply: Option<StreamReadReply> = conn.xread_options(&[stream], &[">"], &opts).await.map_err(classify)?;
        let mut delivered = Delivered::new(shard);
        for entry in reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids) {
            delivered.push(entry.id, Some(&entry.map));
        }
        Ok(delivered)
    }

    /// Ends the blocking command of another connection of this process (`CLIENT UNBLOCK`): it
    /// answers at once, with whatever it was handed until then.
    pub async fn unblock_client(&self, client_id: u64) -> Result<(), StoreError> {
        self.run(|mut c| async move {
            let _: u8 = redis::cmd("CLIENT").arg("UNBLOCK").arg(client_id).query_async(&mut c).await?;
            Ok(())
        })
        .await
        .map(|_| ())
    }

    /// Takes over entries of `shard` idle longer than `min_idle_ms` on any consumer (a dead
    /// worker's), scanning the pending list from `start`. Returns them and the id to start the
    /// next scan from (`0-0` once the whole list was scanned).
    pub async fn reclaim(
        &self,
        shard: usize,
        consumer: &str,
        min_idle_ms: u64,
        count: usize,
        start: &str,
    ) -> Result<(Delivered, String), StoreError> {
        let mut cmd = redis::cmd("XAUTOCLAIM");
        cmd.arg(&self.shard(shard)?.stream)
            .arg(GROUP)
            .arg(consumer)
            .arg(min_idle_ms)
            .arg(start)
            .arg("COUNT")
            .arg(count);
        let (reply, _): (redis::Value, u64) = self.run(|mut c| async move { cmd.query_async(&mut c).await }).await?;
        parse_autoclaim(reply, shard)
    }

    /// Applies tasks of one shard (as one read delivers them), each atomically with its
    /// acknowledgement (`apply.lua`), in one round trip. Each outcome is the task's final
    /// status, or the error that kept it from applying.
    pub async fn apply(
        &self,
        tasks: &[StreamTask],
        tombstone_ms: u64,
    ) -> Result<Vec<Result<Applied, String>>, StoreError> {
        let Some(first) = tasks.first() else { return Ok(vec![]) };
        let shard = self.shard(first.shard)?;
        if let Some(other) = tasks.iter().find(|t| t.shard != first.shard) {
            return Err(StoreError::Corrupt(format!("one apply for shards {} and {}", first.shard, other.shard)));
        }
        let mut cmd = APPLY.call(5 + shard.outcomes.keys.len() + tasks.len());
        cmd.arg(&shard.index)
            .arg(&shard.version)
            .arg(&shard.stream)
            .arg(&shard.tombstones)
            .arg(&shard.attempts)
            .arg(&shard.outcomes.keys);
        for t in tasks {
            cmd.arg(shard.data(&t.key));
        }
        cmd.arg(now_ms())
            .arg(tombstone_ms)
            .arg(GROUP)
            .arg(&self.shards.done_channel)
            .arg("")
            .arg(self.caps.outcome_bucket_bytes);
        for t in tasks {
            let fields = t.fields();
            cmd.arg(&t.stream_id).arg(&t.task_id).arg(fields.len());
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
    pub async fn count_attempt(&self, task: &StreamTask) -> Result<u32, StoreError> {
        let (attempts, id) = (&self.shard(task.shard)?.attempts, &task.stream_id);
        let (n, _): (u32, u64) = self.run(|mut c| async move { c.hincr(attempts, id, 1).await }).await?;
        Ok(n)
    }

    /// Attempts recorded for an unfinished task (each apply of it counts one).
    pub async fn attempts(&self, task: &StreamTask) -> Result<u32, StoreError> {
        let (attempts, id) = (&self.shard(task.shard)?.attempts, &task.stream_id);
        let (n, _): (Option<u32>, u64) = self.run(|mut c| async move { c.hget(attempts, id).await }).await?;
        Ok(n.unwrap_or(0))
    }

    /// Drops acknowledged entries from a shard's stream head so it does not grow forever, all
    /// of them at each call (no cap on how many). Only entries older than every pending and
    /// undelivered one (the queue's low-water mark) are removed.
    pub async fn trim_acknowledged(&self, shard: usize) -> Result<(), StoreError> {
        let stream = self.shard(shard)?.stream.clone();
        let tombstones = self.shard(shard)?.tombstones.clone();
        self.run(|mut c| async move {
            let groups: redis::Value = redis::cmd("XINFO").arg("GROUPS").arg(&stream).query_async(&mut c).await?;
            let Some(group) = our_group(&groups) else { return Ok(()) };
            let Some(last_delivered) = group.get("last-delivered-id").cloned() else { return Ok(()) };
            // `lag` (Redis 7): entries not yet delivered; unknown counts as some
            let undelivered = group.get("lag").is_none_or(|l| l != "0");
            // The oldest pending entry bounds the trim; without one, everything delivered is acked.
            let pending: redis::Value = redis::cmd("XPENDING").arg(&stream).arg(GROUP).query_async(&mut c).await?;
            let oldest_pending = first_id_of_summary(&pending);
            let queue_empty = oldest_pending.is_none() && !undelivered;
            let min_id = match oldest_pending {
                Some(p) => p,
                None => next_id(&last_delivered),
            };
            // `LIMIT 0`: approximate trimming otherwise stops after 100 × stream-node-max-entries
            // entries per call (about 2,000 a second at one call every 5 s), less than a busy
            // queue takes. Approximate, it frees whole nodes only: at most one node's entries
            // (100 by default) below the mark stay until the next call.
            let _: u64 = redis::cmd("XTRIM")
                .arg(&stream)
                .arg("MINID")
                .arg("~")
                .arg(&min_id)
                .arg("LIMIT")
                .arg(0)
                .query_async(&mut c)
                .await?;
            // Tombstones (and expired keys' leftovers) older than the low-water mark guard against
            // nothing any more: every write to their key accepted before them has been applied.
            // With nothing pending or undelivered, no older write is left at all: every marker may
            // go (an expiring key's once it has expired, which the script checks against now).
            let low_water_ms =
                if queue_empty { now_ms().to_string() } else { min_id.split('-').next().unwrap_or("0").to_string() };
            for _ in 0..TIDY_ROUNDS {
                let candidates: Vec<String> = redis::cmd("ZRANGE")
                    .arg(&tombstones)
                    .arg("-inf")
                    .arg(format!("({low_water_ms}"))
                    .arg("BYSCORE")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(TIDY_BATCH)
                    .query_async(&mut c)
                    .await?;
                if candidates.is_empty() {
                    break;
                }
                let mut cmd = TIDY_TOMBSTONES.call(1 + candidates.len());
                cmd.arg(&tombstones).arg(&candidates).arg(&low_water_ms).arg(now_ms());
                let _: u64 = eval(&mut c, &TIDY_TOMBSTONES, &cmd).await?;
                if (candidates.len() as u64) < TIDY_BATCH {
                    break;
                }
            }
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

/// Reads an XAUTOCLAIM reply `[next start, [[id, [field, value, ...] or nil], ...], [deleted
/// ids]]` (the third element, Redis 7+, lists pending ids whose entries are gone; Redis already
/// removed them from the pending list, so they are ignored here).
fn parse_autoclaim(reply: redis::Value, shard: usize) -> Result<(Delivered, String), StoreError> {
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
    let mut delivered = Delivered::new(shard);
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
/// Our consumer group's fields in an `XINFO GROUPS` reply (None when it does not exist yet).
pub(super) fn our_group(groups: &redis::Value) -> Option<HashMap<String, String>> {
    match groups {
        redis::Value::Array(gs) => gs.iter().map(value_map).find(|f| f.get("name").map(String::as_str) == Some(GROUP)),
        _ => None,
    }
}

/// The smallest pending id of an `XPENDING` summary reply `[count, smallest, greatest, consumers]`.
pub(super) fn first_id_of_summary(summary: &redis::Value) -> Option<String> {
    match summary {
        redis::Value::Array(items) => match items.get(1) {
            Some(redis::Value::BulkString(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        },
        _ => None,
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Key, Op};

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
        done.subscribe(&store.shards.done_channel).await.unwrap();
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
            let delivered = store.read_new(&mut conn, 0, "c", 10, 0).await.unwrap();
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
