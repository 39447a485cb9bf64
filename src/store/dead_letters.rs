//! The dead-letter stream: moving entries there, reading and replaying them.

use std::collections::HashMap;

use crate::domain::now_ms;

use super::lua::{eval, DEAD_LETTER, REPLAY};
use super::task::{stream_id_parts, task_id_of, Malformed, StreamTask};
use super::{Store, StoreError, GROUP};

/// A stream entry as XRANGE returns it: id and `[field, value, ...]`.
type RawEntry = (String, Vec<Vec<u8>>);

/// An entry of the dead-letter stream.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Its id: its id in its shard's dead-letter stream, after `{shard}/` in cluster mode.
    pub id: String,
    pub shard: usize,
    /// Its id in its shard's dead-letter stream.
    pub stream_id: String,
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
        StreamTask::decode(self.meta("seq").unwrap_or(""), self.shard, &map)
    }
}

impl Store {
    /// Moves a task to the dead-letter stream (its whole entry), records it failed and
    /// acknowledges it.
    pub async fn dead_letter(&self, t: &StreamTask, error: &str) -> Result<(), StoreError> {
        let shard = self.shard(t.shard)?;
        let mut cmd = DEAD_LETTER.call(3 + shard.outcomes.keys.len());
        cmd.arg(&shard.stream)
            .arg(&shard.dead_letter)
            .arg(&shard.attempts)
            .arg(&shard.outcomes.keys)
            .arg(&t.stream_id)
            .arg(GROUP)
            .arg(error)
            .arg(now_ms())
            .arg(if t.notify { self.shards.done_channel.as_str() } else { "" })
            .arg(&t.task_id)
            .arg(t.op.as_str())
            .arg(&t.key)
            .arg("")
            .arg(self.caps.outcome_bucket_bytes);
        self.run(|mut c| async move { eval::<String>(&mut c, &DEAD_LETTER, &cmd).await }).await.map(|_| ())
    }

    /// Moves an entry that is no valid task to the dead-letter stream with its raw fields and
    /// the reason, and acknowledges it. No task outcome is recorded: the entry names no task
    /// that can be trusted.
    pub async fn dead_letter_malformed(&self, m: &Malformed) -> Result<(), StoreError> {
        let shard = self.shard(m.shard)?;
        let mut cmd = DEAD_LETTER.call(3 + shard.outcomes.keys.len());
        cmd.arg(&shard.stream)
            .arg(&shard.dead_letter)
            .arg(&shard.attempts)
            .arg(&shard.outcomes.keys)
            .arg(&m.stream_id)
            .arg(GROUP)
            .arg(format!("malformed task entry: {}", m.reason))
            .arg(now_ms())
            .arg("")
            .arg("")
            .arg("")
            .arg("")
            .arg("")
            .arg(self.caps.outcome_bucket_bytes);
        self.run(|mut c| async move { eval::<String>(&mut c, &DEAD_LETTER, &cmd).await }).await.map(|_| ())
    }

    /// Up to `count` dead letters after `after` (exclusive; None: from the first): shard by
    /// shard, oldest first in each.
    pub async fn dead_letters(&self, after: Option<&str>, count: usize) -> Result<Vec<DeadLetter>, StoreError> {
        let (first_shard, mut start) = match after {
            None => (0, "-".to_string()),
            Some(id) => match self.parse_dead_letter_id(id) {
                Some((shard, stream_id)) => (shard, format!("({stream_id}")),
                None => return Ok(vec![]),
            },
        };
        let mut out = Vec::new();
        for shard in first_shard..self.shards.len() {
            let page = self.read_dead_letters(shard, start, "+".into(), count - out.len()).await?;
            out.extend(page);
            if out.len() == count {
                break;
            }
            start = "-".into();
        }
        Ok(out)
    }

    /// The dead letter with id `id`, if there is one (an id that is no dead-letter id is none).
    pub async fn dead_letter_by_id(&self, id: &str) -> Result<Option<DeadLetter>, StoreError> {
        let Some((shard, stream_id)) = self.parse_dead_letter_id(id) else { return Ok(None) };
        Ok(self.read_dead_letters(shard, stream_id.clone(), stream_id, 1).await?.pop())
    }

    /// A dead letter's shard and stream id from its id (`DeadLetter::id`).
    fn parse_dead_letter_id(&self, id: &str) -> Option<(usize, String)> {
        let (shard, stream_id) = match (self.shards.len(), id.split_once('/')) {
            (1, None) => (0, id),
            (n, Some((shard, stream_id))) if n > 1 => (shard.parse().ok().filter(|s| *s < n)?, stream_id),
            _ => return None,
        };
        stream_id_parts(stream_id)?;
        Some((shard, stream_id.to_string()))
    }

    async fn read_dead_letters(
        &self,
        shard: usize,
        start: String,
        end: String,
        count: usize,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        let dlq = self.shard(shard)?.dead_letter.clone();
        let clustered = self.shards.len() > 1;
        let (page, _): (Vec<RawEntry>, u64) = self
            .run(|mut c| async move {
                redis::cmd("XRANGE").arg(&dlq).arg(&start).arg(&end).arg("COUNT").arg(count).query_async(&mut c).await
            })
            .await?;
        let mut out = Vec::with_capacity(page.len());
        for (stream_id, flat) in page {
            let id = if clustered { format!("{shard}/{stream_id}") } else { stream_id.clone() };
            let mut d = DeadLetter { id, shard, stream_id, meta: Vec::new(), task_fields: Vec::new() };
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
        // Nobody waits for the replayed write: no completion message.
        let replayed = StreamTask { notify: false, ..task };
        let shard = self.shard(d.shard)?;
        let mut cmd = REPLAY.call(2);
        cmd.arg(&shard.dead_letter).arg(&shard.stream).arg(&d.stream_id);
        replayed.push_fields(&mut cmd);
        let (seq, _): (Option<String>, u64) =
            self.run(|mut c| async move { eval(&mut c, &REPLAY, &cmd).await }).await?;
        seq.map(|s| task_id_of(&s, d.shard).ok_or_else(|| StoreError::Corrupt(format!("stream id {s}"))))
            .transpose()
            .map(Ok)
    }
}
