//! Reads of values, keys by prefix and tasks.

use crate::domain::{now_ms, Op, StoredValue, TaskRecord, TaskStatus};

use super::lua::{eval, LOOKUP_TASK, TIDY_INDEX};
use super::task::{decimal, stream_id_ms, stream_id_of};
use super::{KeySpace, Store, StoreError, GROUP};

impl Store {
    pub async fn get_value(&self, key: &str) -> Result<Option<StoredValue>, StoreError> {
        let data = self.shards.of(key).data(key);
        let (fields, _): (Vec<Option<String>>, u64) = self
            .run(|mut c| async move {
                redis::cmd("HMGET").arg(&data).arg("v").arg("ver").arg("del").arg("exp").query_async(&mut c).await
            })
            .await?;
        Ok(live_value(&fields, now_ms()))
    }

    /// Lists live keys starting with `prefix`, after `cursor` (a key, exclusive), in key order
    /// (byte order) over all shards. Returns the page and the cursor of the next page, if any.
    pub async fn list_keys(
        &self,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<(String, u64)>, Option<String>), StoreError> {
        // Each shard's index is in key order: the first `limit` of the merged pages are the
        // first `limit` overall.
        let pages = futures_util::future::try_join_all(
            self.shards.all().iter().map(|shard| self.index_page(shard, prefix, cursor, limit)),
        )
        .await?;
        let mut names: Vec<(String, usize)> =
            pages.into_iter().enumerate().flat_map(|(shard, page)| page.into_iter().map(move |n| (n, shard))).collect();
        names.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        names.truncate(limit);
        if names.is_empty() {
            return Ok((vec![], None));
        }
        let mut live = futures_util::future::try_join_all(self.shards.all().iter().map(|shard| {
            let mine: Vec<String> = names.iter().filter(|(_, s)| *s == shard.shard).map(|(n, _)| n.clone()).collect();
            self.live_versions(shard, mine)
        }))
        .await?
        .into_iter()
        .flatten()
        .collect::<Vec<(String, u64)>>();
        live.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        let next = (names.len() == limit).then(|| names.last().map(|(n, _)| n.clone())).flatten();
        Ok((live, next))
    }

    /// Up to `limit` names from a shard's index that start with `prefix`, after `cursor`.
    async fn index_page(
        &self,
        shard: &KeySpace,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let min = match cursor {
            Some(c) if c >= prefix => format!("({c}"),
            _ => format!("[{prefix}"),
        };
        // 0xff never occurs in UTF-8, so it bounds every string that starts with the prefix.
        let mut max = b"[".to_vec();
        max.extend_from_slice(prefix.as_bytes());
        max.push(0xff);
        let index = shard.index.clone();
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
        Ok(names)
    }

    /// The live ones of `names` (of one shard) with their versions; the others leave the index.
    async fn live_versions(&self, shard: &KeySpace, names: Vec<String>) -> Result<Vec<(String, u64)>, StoreError> {
        if names.is_empty() {
            return Ok(vec![]);
        }
        let mut pipe = redis::pipe();
        for name in &names {
            pipe.cmd("HMGET").arg(shard.data(name)).arg("ver").arg("del").arg("exp");
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
            cmd.arg(&shard.index);
            for name in &stale {
                cmd.arg(shard.data(name));
            }
            cmd.arg(now_ms());
            for name in &stale {
                cmd.arg(name);
            }
            let _ = self.run(|mut c| async move { eval::<u64>(&mut c, &TIDY_INDEX, &cmd).await }).await;
        }
        Ok(items)
    }

    /// The task `id`: its outcome while kvq keeps it (the newest outcomes within the
    /// bookkeeping budget, for `tasks.retention_seconds` at most), or its queued entry. None for
    /// a task kvq knows nothing of (any more).
    pub async fn get_task(&self, id: &str) -> Result<Option<TaskRecord>, StoreError> {
        let Some((shard, stream_id)) = stream_id_of(id) else { return Ok(None) };
        let Some(shard) = self.shards.get(shard) else { return Ok(None) };
        let mut cmd = LOOKUP_TASK.call(2 + shard.outcomes.keys.len());
        cmd.arg(&shard.stream)
            .arg(&shard.attempts)
            .arg(&shard.outcomes.keys)
            .arg("")
            .arg(&stream_id)
            .arg(id)
            .arg(GROUP)
            .arg(now_ms().saturating_sub(self.retention_seconds.saturating_mul(1000)));
        let (found, _): (Option<Vec<String>>, u64) =
            self.run(|mut c| async move { eval(&mut c, &LOOKUP_TASK, &cmd).await }).await?;
        let Some(found) = found else { return Ok(None) };
        // legacy task ids (random, from before task ids were stream ids) have no acceptance time
        let enqueued_at = stream_id_ms(&stream_id).unwrap_or(0);
        match parse_task(id, enqueued_at, &found) {
            Ok(t) => Ok(Some(t)),
            // Not an outcome kvq could have written (a hand edit): as good as gone, and no
            // server error for the client.
            Err(e) => {
                tracing::warn!(error = %e, "ignoring an unreadable task outcome");
                Ok(None)
            }
        }
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

/// Reads what `lookup_task.lua` found: `["done", outcome JSON]` (see `put_outcome` in
/// `capped.lua`) or `["queued", op, key, attempts]`. A missing or invalid op, key or status is an
/// error; other fields fall back to defaults.
fn parse_task(id: &str, enqueued_at: u64, found: &[String]) -> Result<TaskRecord, StoreError> {
    let corrupt = |f: &str| StoreError::Corrupt(format!("task {id}: {f} is missing or invalid"));
    let number = |s: Option<&String>| s.and_then(|v| decimal(v));
    let fields: Vec<String> = match found.first().map(String::as_str) {
        Some("done") => {
            let json = found.get(1).ok_or_else(|| corrupt("outcome"))?;
            serde_json::from_str(json).map_err(|_| corrupt("outcome"))?
        }
        Some("queued") => {
            let f = |i: usize| found.get(i).cloned().unwrap_or_default();
            vec!["queued".into(), String::new(), String::new(), String::new(), f(1), f(2), f(3)]
        }
        _ => return Err(corrupt("lookup answer")),
    };
    // [status, version, error, finished_at, op, key, attempts]
    let get = |i: usize| fields.get(i).filter(|s| !s.is_empty());
    Ok(TaskRecord {
        id: id.to_string(),
        status: get(0).and_then(|s| TaskStatus::parse(s)).ok_or_else(|| corrupt("status"))?,
        version: number(get(1)),
        error: get(2).cloned(),
        finished_at: number(get(3)),
        op: get(4).and_then(|s| Op::parse(s)).ok_or_else(|| corrupt("op"))?,
        key: get(5).ok_or_else(|| corrupt("key"))?.clone(),
        attempts: number(get(6)).and_then(|a| u32::try_from(a).ok()).unwrap_or(0),
        enqueued_at,
    })
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

    const ID: &str = "0123456789abcdef0123456789abcdef";

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn task_lookups_read_outcomes_and_queued_entries() {
        let done = strings(&["done", r#"["applied","7","","1700000000500","set","a","2"]"#]);
        let t = parse_task(ID, 1_700_000_000_000, &done).unwrap();
        assert_eq!(
            (t.status, t.version, t.finished_at, t.attempts),
            (TaskStatus::Applied, Some(7), Some(1_700_000_000_500), 2)
        );
        assert_eq!((t.op, t.key.as_str(), t.error, t.enqueued_at), (Op::Set, "a", None, 1_700_000_000_000));
        let queued = parse_task(ID, 5, &strings(&["queued", "delete", "b", "0"])).unwrap();
        assert_eq!(
            (queued.status, queued.op, queued.key.as_str(), queued.version),
            (TaskStatus::Queued, Op::Delete, "b", None)
        );
    }

    #[test]
    fn unreadable_task_outcomes_are_errors_not_panics() {
        for found in [
            strings(&["done", "not json"]),
            strings(&["done", r#"["applied"]"#]),
            strings(&["done", r#"["nonsense","","","","set","a",""]"#]),
            strings(&["done", r#"[1,2]"#]),
            strings(&["done"]),
            strings(&["queued", "incr", "a", "0"]),
            strings(&["what"]),
            strings(&[]),
        ] {
            assert!(parse_task(ID, 0, &found).is_err(), "{found:?}");
        }
    }
}
