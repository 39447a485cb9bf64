//! What the handlers share, and the write path: enqueue, replica acknowledgement, `?wait`.

use std::sync::Arc;
use std::time::Duration;

use poem_openapi::payload::Json;
use tokio::sync::watch;

use crate::domain::WriteRequest;
use crate::store::{Store, StoreError};

use super::api::{finished_response, wait_duration, TaskAccepted, WriteResponse};
use super::completions::Completions;
use super::problem::ApiError;
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
}

impl AppState {
    /// Enqueues a write and answers as design §2 says: 202, or with `?wait` the final task.
    pub async fn submit(&self, write: WriteRequest, wait_seconds: u64) -> Result<WriteResponse, ApiError> {
        let span = tracing::Span::current();
        let enqueued = self.store.enqueue(&write).await?;
        span.record("task_id", enqueued.task_id.as_str());
        span.record("key", write.key.as_str());
        // Also for an idempotent replay: its first attempt may not have been replicated.
        if let Some(acks) = &self.replica_acks {
            if let Err(e) = acks.confirm(enqueued.generation).await {
                tracing::warn!(error = %e, "write not confirmed by the replicas");
                return Err(ApiError::unavailable(format!(
                    "{e}; the write may or may not be applied: retry with the same Idempotency-Key"
                )));
            }
        }
        let location = format!("/v1/tasks/{}", enqueued.task_id);
        if wait_seconds > 0 {
            match self.await_task(&enqueued.task_id, wait_duration(wait_seconds)).await {
                Ok(Some(task)) => return finished_response(task, location),
                Ok(None) => {}
                // The write is queued; failing to watch it is no reason to report an error.
                Err(e) => tracing::warn!(error = %e, "could not follow the task; answering 202"),
            }
        }
        Ok(WriteResponse::Accepted(Json(TaskAccepted { task_id: enqueued.task_id, status: enqueued.status }), location))
    }

    /// Waits until the task is finished, or the time is up or the server is stopping (then `None`).
    pub async fn await_task(&self, id: &str, wait: Duration) -> Result<Option<crate::domain::TaskRecord>, StoreError> {
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
