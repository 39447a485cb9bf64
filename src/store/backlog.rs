//! How long the oldest write still waiting for a worker has waited: the queue's age, which a
//! backlog count alone does not show (a short queue nobody consumes is as bad as a long one).

use crate::domain::now_ms;

use super::queue::{first_id_of_summary, our_group};
use super::task::stream_id_ms;
use super::{Store, StoreError, GROUP};

impl Store {
    /// Milliseconds since the oldest entry not yet applied was enqueued (its stream id is its
    /// enqueue time); None when nothing waits. Pending entries are older than undelivered ones,
    /// so the oldest pending entry wins; without any, the first entry after the group's
    /// last-delivered id. The stream head alone would not do: acknowledged entries stay there
    /// until the next trim.
    pub async fn oldest_waiting_ms(&self) -> Result<Option<u64>, StoreError> {
        let all =
            futures_util::future::try_join_all((0..self.shards.len()).map(|s| self.shard_oldest_waiting_ms(s))).await?;
        Ok(all.into_iter().flatten().max())
    }

    async fn shard_oldest_waiting_ms(&self, shard: usize) -> Result<Option<u64>, StoreError> {
        let stream = self.shard(shard)?.stream.clone();
        let (oldest, _): (Option<String>, u64) = self
            .run(|mut c| async move {
                let groups: redis::Value =
                    match redis::cmd("XINFO").arg("GROUPS").arg(&stream).query_async(&mut c).await {
                        Ok(g) => g,
                        // No stream yet: nothing was ever enqueued.
                        Err(e) if e.to_string().contains("no such key") => return Ok(None),
                        Err(e) => return Err(e),
                    };
                let after = match our_group(&groups) {
                    // No worker has created the group: everything in the stream waits.
                    None => "-".to_string(),
                    Some(g) if g.get("pending").is_some_and(|p| p != "0") => {
                        let summary: redis::Value =
                            redis::cmd("XPENDING").arg(&stream).arg(GROUP).query_async(&mut c).await?;
                        return Ok(first_id_of_summary(&summary));
                    }
                    Some(g) => format!("({}", g.get("last-delivered-id").cloned().unwrap_or_else(|| "0-0".into())),
                };
                let next: redis::Value = redis::cmd("XRANGE")
                    .arg(&stream)
                    .arg(&after)
                    .arg("+")
                    .arg("COUNT")
                    .arg(1)
                    .query_async(&mut c)
                    .await?;
                Ok(first_id_of_range(&next))
            })
            .await?;
        Ok(oldest.and_then(|id| stream_id_ms(&id)).map(|ms| now_ms().saturating_sub(ms)))
    }
}

/// The id of the first entry of an `XRANGE` reply `[[id, [field, value, ...]], ...]`.
fn first_id_of_range(range: &redis::Value) -> Option<String> {
    match range {
        redis::Value::Array(entries) => match entries.first() {
            Some(redis::Value::Array(entry)) => match entry.first() {
                Some(redis::Value::BulkString(b)) => Some(String::from_utf8_lossy(b).into_owned()),
                _ => None,
            },
            _ => None,
        },
        _ => None,
    }
}
