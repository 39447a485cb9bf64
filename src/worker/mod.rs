//! kvq-worker: consumes the task stream and applies writes (design §3).
//!
//! At-least-once: an entry is acknowledged by the same Lua script that applies it, so a crash
//! between the two cannot happen; entries left pending by a dead consumer are reclaimed after
//! `worker.claim_idle_ms`. Failed applies are retried with backoff; after `worker.max_attempts`
//! the task goes to the dead-letter stream. Redis outages do not count as attempts.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::config::Settings;
use crate::domain::TaskStatus;
use crate::metrics::{Metrics, StatusLabels};
use crate::store::{Applied, Store, StoreError, StreamTask};

pub mod app;

/// Entries read at a time and applied in one script call.
pub const BATCH: usize = 32;
/// How long one blocking read waits for new entries.
const BLOCK_MS: usize = 2000;
/// The blocking connection's reply timeout must exceed the block time (design §3).
const BLOCK_RESPONSE_TIMEOUT: Duration = Duration::from_millis(BLOCK_MS as u64 + 3000);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// What one step of the worker did; tests drive the queue with it instead of sleeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Tasks were read and finished, with their outcomes.
    Executed(Vec<Applied>),
    EmptyQueue,
}

#[derive(Clone)]
pub struct Worker {
    store: Store,
    consumer: String,
    concurrency: usize,
    claim_idle_ms: u64,
    max_attempts: u32,
    tombstone_ms: u64,
    metrics: Arc<Metrics>,
    /// Stream ids this process is working on, so its own reclaim does not run them twice.
    in_flight: Arc<Mutex<HashSet<String>>>,
}

impl Worker {
    pub fn new(settings: &Settings, store: Store, metrics: Arc<Metrics>) -> Self {
        Self {
            store,
            consumer: settings.consumer_name(),
            concurrency: settings.worker.concurrency,
            claim_idle_ms: settings.worker.claim_idle_ms,
            max_attempts: settings.worker.max_attempts,
            tombstone_ms: settings.tasks.retention_seconds * 1000,
            metrics,
            in_flight: Arc::default(),
        }
    }

    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    /// Runs until `stop` resolves, then finishes and acknowledges the tasks it holds.
    pub async fn run(self, stop: impl Future<Output = ()>) {
        let (stop_tx, stop_rx) = watch::channel(false);
        let permits = Arc::new(Semaphore::new(self.concurrency));
        let mut tasks = JoinSet::new();
        tasks.spawn(self.clone().read_loop(stop_rx.clone(), permits.clone()));
        tasks.spawn(self.clone().reclaim_loop(stop_rx.clone(), permits.clone()));
        stop.await;
        tracing::info!("worker stopping: finishing in-flight tasks");
        let _ = stop_tx.send(true);
        while tasks.join_next().await.is_some() {}
        // Every in-flight task holds a permit; taking them all means all have finished.
        let _ = permits.acquire_many(self.concurrency as u32).await;
        tracing::info!("worker stopped");
    }

    async fn read_loop(self, mut stop: watch::Receiver<bool>, permits: Arc<Semaphore>) {
        let mut backoff = Backoff::default();
        let mut conn = None;
        while !*stop.borrow() {
            if conn.is_none() {
                match self.prepare().await {
                    Ok(c) => {
                        conn = Some(c);
                        backoff.reset();
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "redis not available; retrying");
                        backoff.sleep_or_stop(&mut stop).await;
                        continue;
                    }
                }
            }
            // Read only when a batch can start at once, so no task is held unstarted.
            let Ok(permit) = permits.clone().acquire_owned().await else { return };
            let c = conn.as_mut().expect("connected above");
            let read = tokio::select! {
                r = self.store.read_new(c, &self.consumer, BATCH, BLOCK_MS) => r,
                _ = stop.changed() => return,
            };
            match read {
                Ok(batch) if batch.is_empty() => {}
                Ok(batch) => {
                    let worker = self.clone();
                    let stop = stop.clone();
                    tokio::spawn(async move {
                        worker.process_batch(batch, stop).await;
                        drop(permit);
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reading the task stream failed; reconnecting");
                    conn = None;
                    backoff.sleep_or_stop(&mut stop).await;
                }
            }
        }
    }

    /// Opens the blocking connection and makes sure the group exists.
    async fn prepare(&self) -> Result<redis::aio::MultiplexedConnection, StoreError> {
        self.store.ensure_group().await?;
        Ok(self.store.redis.dedicated(Some(BLOCK_RESPONSE_TIMEOUT)).await?)
    }

    async fn reclaim_loop(self, mut stop: watch::Receiver<bool>, permits: Arc<Semaphore>) {
        let period = Duration::from_millis((self.claim_idle_ms / 2).clamp(50, 5000));
        let mut last_trim = std::time::Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                _ = stop.changed() => return,
            }
            match self.store.reclaim(&self.consumer, self.claim_idle_ms, BATCH).await {
                Ok(claimed) => {
                    let claimed: Vec<StreamTask> = {
                        let in_flight = self.in_flight.lock().expect("poisoned");
                        claimed.into_iter().filter(|t| !in_flight.contains(&t.stream_id)).collect()
                    };
                    if !claimed.is_empty() {
                        tracing::info!(tasks = claimed.len(), "reclaimed idle tasks of another consumer");
                        let Ok(permit) = permits.clone().acquire_owned().await else { return };
                        let worker = self.clone();
                        let stop = stop.clone();
                        tokio::spawn(async move {
                            worker.process_batch(claimed, stop).await;
                            drop(permit);
                        });
                    }
                }
                Err(StoreError::Redis(e)) if e.to_string().contains("NOGROUP") => {
                    let _ = self.store.ensure_group().await;
                }
                Err(e) => tracing::debug!(error = %e, "reclaim failed"),
            }
            if last_trim.elapsed() > Duration::from_secs(5) {
                last_trim = std::time::Instant::now();
                if let Err(e) = self.store.trim_acknowledged().await {
                    tracing::debug!(error = %e, "trimming the stream failed");
                }
            }
        }
    }

    /// Applies a batch in one script call; tasks that fail there continue one by one with
    /// retries. Returns the outcomes of the tasks that finished.
    async fn process_batch(&self, tasks: Vec<StreamTask>, mut stop: watch::Receiver<bool>) -> Vec<Applied> {
        self.in_flight.lock().expect("poisoned").extend(tasks.iter().map(|t| t.stream_id.clone()));
        let mut backoff = Backoff::default();
        let mut stopping_deadline = None;
        let outcomes = loop {
            match self.store.apply(&tasks, self.tombstone_ms).await {
                Ok(outcomes) => break Some(outcomes),
                Err(StoreError::Unavailable(e)) => {
                    tracing::warn!(error = %e, tasks = tasks.len(), "redis unavailable while applying; will retry");
                    if give_up(&stop, &mut stopping_deadline) {
                        break None;
                    }
                    backoff.sleep_or_stop(&mut stop).await;
                }
                // The script as a whole failed: let each task find its own way.
                Err(e) => {
                    tracing::warn!(error = %e, "applying a batch failed; applying its tasks one by one");
                    break Some(tasks.iter().map(|_| Err(e.to_string())).collect());
                }
            }
        };
        let mut finished = Vec::with_capacity(tasks.len());
        if let Some(outcomes) = outcomes {
            for (task, outcome) in tasks.iter().zip(outcomes) {
                let span = task_span(task);
                match outcome {
                    Ok(applied) => {
                        span.in_scope(|| tracing::debug!(status = applied.status.as_str(), version = ?applied.version, "task finished"));
                        self.finished(applied.status);
                        finished.push(applied);
                    }
                    Err(error) => {
                        let retried = self.retry(task, error, stop.clone()).instrument(span).await;
                        finished.extend(retried);
                    }
                }
            }
        } else {
            tracing::warn!(tasks = tasks.len(), "leaving tasks pending for another worker");
        }
        let mut in_flight = self.in_flight.lock().expect("poisoned");
        for t in &tasks {
            in_flight.remove(&t.stream_id);
        }
        finished
    }

    /// Retries one task that failed to apply, with backoff, until it finishes or has used up
    /// `max_attempts` (then it goes to the dead-letter stream). Redis outages do not count.
    async fn retry(&self, task: &StreamTask, mut error: String, mut stop: watch::Receiver<bool>) -> Option<Applied> {
        let mut backoff = Backoff::default();
        let mut stopping_deadline = None;
        loop {
            self.metrics.task_retries.inc();
            match self.store.attempts(&task.task_id).await {
                Ok(attempts) if attempts >= self.max_attempts => {
                    tracing::error!(%error, attempts, "task failed for good; moving it to the dead-letter stream");
                    if self.store.dead_letter(task, &error).await.is_ok() {
                        self.finished(TaskStatus::Failed);
                        return Some(Applied { status: TaskStatus::Failed, version: None, error: Some(error) });
                    }
                }
                Ok(attempts) => tracing::warn!(%error, attempts, "applying the task failed; will retry"),
                Err(e) => tracing::warn!(error = %e, "redis unavailable while retrying"),
            }
            if give_up(&stop, &mut stopping_deadline) {
                tracing::warn!("leaving the task pending for another worker");
                return None;
            }
            backoff.sleep_or_stop(&mut stop).await;
            match self.store.apply(std::slice::from_ref(task), self.tombstone_ms).await {
                Ok(mut outcomes) => match outcomes.pop() {
                    Some(Ok(applied)) => {
                        self.finished(applied.status);
                        return Some(applied);
                    }
                    Some(Err(e)) => error = e,
                    None => error = "no outcome".into(),
                },
                Err(e) => error = e.to_string(),
            }
        }
    }

    fn finished(&self, status: TaskStatus) {
        self.metrics.tasks_finished.get_or_create(&StatusLabels { status: status.as_str() }).inc();
    }

    /// One deterministic step for tests: reclaim idle entries, else read new ones without
    /// blocking, and finish all of them before returning.
    pub async fn try_execute_tasks(&self) -> Result<Step, StoreError> {
        self.store.ensure_group().await?;
        let mut batch = self.store.reclaim(&self.consumer, self.claim_idle_ms, BATCH).await?;
        if batch.is_empty() {
            let mut conn = self.store.redis.dedicated(Some(BLOCK_RESPONSE_TIMEOUT)).await?;
            batch = self.store.read_new(&mut conn, &self.consumer, BATCH, 1).await?;
        }
        if batch.is_empty() {
            return Ok(Step::EmptyQueue);
        }
        let (_tx, rx) = watch::channel(false);
        Ok(Step::Executed(self.process_batch(batch, rx).await))
    }
}

fn task_span(t: &StreamTask) -> tracing::Span {
    tracing::info_span!("task", task_id = %t.task_id, key = %t.key, op = t.op.as_str())
}

/// After a stop signal, keep trying for a few seconds so in-flight tasks finish, then leave
/// them pending: another worker reclaims them.
fn give_up(stop: &watch::Receiver<bool>, deadline: &mut Option<tokio::time::Instant>) -> bool {
    if !*stop.borrow() {
        return false;
    }
    let deadline = *deadline.get_or_insert_with(|| tokio::time::Instant::now() + Duration::from_secs(5));
    tokio::time::Instant::now() > deadline
}

/// Exponential backoff from 50 ms to 2 s, interruptible by the stop signal.
#[derive(Default)]
struct Backoff {
    failures: u32,
}

impl Backoff {
    fn reset(&mut self) {
        self.failures = 0;
    }

    async fn sleep_or_stop(&mut self, stop: &mut watch::Receiver<bool>) {
        let delay = (Duration::from_millis(50) * 2u32.saturating_pow(self.failures)).min(MAX_BACKOFF);
        self.failures = self.failures.saturating_add(1).min(16);
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.changed() => {}
        }
    }
}
