//! What the handlers share, and the write path: enqueue, replica acknowledgement, `?wait`.
//! Answers in domain terms; `api` turns them into HTTP responses.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::domain::{TaskRecord, TaskStatus, WriteRequest, MAX_WAIT_SECONDS};
use crate::metrics::{Metrics, RefusalLabels};
use crate::store::{Store, StoreError};

use super::completions::Completions;
use super::replication::ReplicaAcks;

/// Poll interval while waiting for a task, in case a completion message was missed.
const WAIT_POLL: Duration = Duration::from_millis(250);

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub completions: Arc<Completions>,
    pub max_value_bytes: usize,
    /// Present when `redis.min_replicas_ack > 0`.
    pub replica_acks: Option<Arc<ReplicaAcks>>,
    /// Becomes true when the server is told to stop: `?wait` requests then answer 202 at once
    /// instead of holding the drain up and being cut off by it.
    pub stopping: Arc<watch::Sender<bool>>,
    pub metrics: Arc<Metrics>,
}

/// What became of a submitted write.
#[derive(Debug)]
pub enum Submitted {
    /// Queued (or the wait ran out first).
    Accepted { task_id: String, status: TaskStatus },
    /// With a wait: the task finished (in any final status).
    Finished(TaskRecord),
}

/// Why a write was not (or may not have been) queued.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The value is longer than `limits.max_value_bytes`; nothing was queued.
    #[error("value: {len} bytes is more than the limit of {max} bytes")]
    ValueTooLarge { len: usize, max: usize },
    /// Both `If-Match` and `If-None-Match`: a write has one condition.
    #[error("If-Match and If-None-Match: use one condition, not both")]
    ConflictingConditions,
    /// The replicas did not confirm the write in time: it may or may not be applied.
    #[error("{0}; the write may or may not be applied: retry with the same Idempotency-Key")]
    NotReplicated(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl AppState {
    fn refused(&self, reason: &'static str) {
        self.metrics.writes_refused.get_or_create(&RefusalLabels { reason }).inc();
    }

    /// Enqueues a write and, with `wait_seconds > 0` (capped at `MAX_WAIT_SECONDS`), waits for
    /// its outcome (the write contract in the README's API section).
    pub async fn submit(&self, write: WriteRequest, wait_seconds: u64) -> Result<Submitted, SubmitError> {
        if let Some(len) = write.value.as_ref().map(String::len).filter(|&len| len > self.max_value_bytes) {
            return Err(SubmitError::ValueTooLarge { len, max: self.max_value_bytes });
        }
        if write.if_match.is_some() && write.if_none_match {
            return Err(SubmitError::ConflictingConditions);
        }
        let span = tracing::Span::current();
        let enqueued = self.store.enqueue(&write).await.inspect_err(|e| match e {
            StoreError::Unavailable(_) => self.refused(RefusalLabels::REDIS_UNAVAILABLE),
            StoreError::Full(_) => self.refused(RefusalLabels::REDIS_FULL),
            _ => {}
        })?;
        span.record("task_id", enqueued.task_id.as_str());
        span.record("key", write.key.as_str());
        // Also for an idempotent replay: its first attempt may not have been replicated.
        if let Some(acks) = &self.replica_acks {
            if let Err(e) = acks.confirm(enqueued.shard, enqueued.generation).await {
                tracing::warn!(error = %e, "write not confirmed by the replicas");
                self.refused(RefusalLabels::NOT_REPLICATED);
                return Err(SubmitError::NotReplicated(e.to_string()));
            }
        }
        self.metrics.writes_accepted.inc();
        if wait_seconds > 0 {
            match self.await_task(&enqueued.task_id, wait_duration(wait_seconds)).await {
                Ok(Some(task)) => return Ok(Submitted::Finished(task)),
                Ok(None) => {}
                // The write is queued; failing to watch it is no reason to report an error.
                Err(e) => tracing::warn!(error = %e, "could not follow the task; answering 202"),
            }
        }
        Ok(Submitted::Accepted { task_id: enqueued.task_id, status: enqueued.status })
    }

    /// Waits until the task is finished, or the time is up or the server is stopping (then `None`).
    pub async fn await_task(&self, id: &str, wait: Duration) -> Result<Option<TaskRecord>, StoreError> {
        let deadline = tokio::time::Instant::now() + wait;
        let waiter = self.completions.register(id);
        let mut stopping = self.stopping.subscribe();
        loop {
            if let Some(task) = self.store.get_task(id).await? {
                if task.status.is_final() {
                    return Ok(Some(task));
                }
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let nap = (deadline - now).min(WAIT_POLL);
            tokio::select! {
                _ = waiter.notified() => {}
                _ = tokio::time::sleep(nap) => {}
                _ = stopping.wait_for(|stopping| *stopping) => return Ok(None),
            }
        }
    }
}

pub fn wait_duration(seconds: u64) -> Duration {
    Duration::from_secs(seconds.min(MAX_WAIT_SECONDS))
}
