//! Reads of values, keys by prefix and task records.

use std::collections::HashMap;

use redis::AsyncCommands;

use crate::domain::{now_ms, Op, StoredValue, TaskRecord, TaskStatus};

use super::lua::{eval, TIDY_INDEX};
use super::{Store, StoreError};

impl Store {
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

    #[test]
    fn incomplete_task_records_are_errors_not_panics() {
        let map: HashMap<String, String> = [("attempts", "1"), ("status", "queued"), ("version", "3")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert!(parse_task(ID, &map).is_err());
    }
}
