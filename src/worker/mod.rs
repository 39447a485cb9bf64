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
            // Read only as many as there are free slots, so tasks are never held unstarted.
            let free = match permits.clone().acquire_owned().await {
                Ok(p) => p,
                Err(_) => return,
            };
            let count = permits.available_permits() + 1;
            drop(free);
            let c = conn.as_mut().expect("connected above");
            let read = tokio::select! {
                r = self.store.read_new(c, &self.consumer, count, BLOCK_MS) => r,
                _ = stop.changed() => return,
            };
            match read {
                Ok(batch) => {
                    for task in batch {
                        let Ok(permit) = permits.clone().acquire_owned().await else {
                            return;
                        };
                        let worker = self.clone();
                        let stop = stop.clone();
                        tokio::spawn(async move {
                            worker.process(task, stop).await;
                            drop(permit);
                        });
                    }
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
            match self.store.reclaim(&self.consumer, self.claim_idle_ms, self.concurrency).await {
                Ok(claimed) => {
                    for task in claimed {
                        if self.in_flight.lock().expect("poisoned").contains(&task.stream_id) {
                            continue;
                        }
                        tracing::info!(task_id = %task.task_id, stream_id = %task.stream_id, "reclaimed an idle task");
                        let Ok(permit) = permits.clone().acquire_owned().await else {
                            return;
                        };
                        let worker = self.clone();
                        let stop = stop.clone();
                        tokio::spawn(async move {
                            worker.process(task, stop).await;
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

    /// Applies one task until it is finished: applied, superseded, rejected or dead-lettered.
    /// Returns None when it had to be left pending (Redis unavailable while stopping).
    async fn process(&self, task: StreamTask, stop: watch::Receiver<bool>) -> Option<Applied> {
        self.in_flight.lock().expect("poisoned").insert(task.stream_id.clone());
        let span = tracing::info_span!("task", task_id = %task.task_id, key = %task.key, op = task.op.as_str());
        let outcome = self.process_inner(&task, stop).instrument(span).await;
        self.in_flight.lock().expect("poisoned").remove(&task.stream_id);
        outcome
    }

    async fn process_inner(&self, task: &StreamTask, mut stop: watch::Receiver<bool>) -> Option<Applied> {
        let mut backoff = Backoff::default();
        // After a stop, keep trying a little so in-flight tasks are finished, then leave them
        // pending: another worker reclaims them.
        let mut stopping_deadline = None;
        loop {
            if *stop.borrow() {
                let deadline =
                    *stopping_deadline.get_or_insert_with(|| tokio::time::Instant::now() + Duration::from_secs(5));
                if tokio::time::Instant::now() > deadline {
                    tracing::warn!("leaving task pending for another worker");
                    return None;
                }
            }
            let err = match self.store.apply(task, self.tombstone_ms).await {
                Ok(applied) => {
                    self.finished(applied.status);
                    tracing::debug!(status = applied.status.as_str(), version = ?applied.version, "task finished");
                    return Some(applied);
                }
                Err(e) => e,
            };
            match err {
                StoreError::Unavailable(e) => {
                    tracing::warn!(error = %e, "redis unavailable while applying; will retry");
                }
                StoreError::Redis(_) | StoreError::Corrupt(_) => {
                    self.metrics.task_retries.inc();
                    let attempts = self.store.attempts(&task.task_id).await.unwrap_or(0);
                    if attempts >= self.max_attempts {
                        tracing::error!(error = %err, attempts, "task failed for good; moving it to the dead-letter stream");
                        if self.store.dead_letter(task, &err.to_string()).await.is_ok() {
                            self.finished(TaskStatus::Failed);
                            return Some(Applied {
                                status: TaskStatus::Failed,
                                version: None,
                                error: Some(err.to_string()),
                            });
                        }
                    } else {
                        tracing::warn!(error = %err, attempts, "applying the task failed; will retry");
                    }
                }
            }
            if !*stop.borrow() {
                backoff.sleep_or_stop(&mut stop).await;
            } else {
                tokio::time::sleep(Duration::from_millis(100)).await;
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
        let mut batch = self.store.reclaim(&self.consumer, self.claim_idle_ms, self.concurrency).await?;
        if batch.is_empty() {
            let mut conn = self.store.redis.dedicated(Some(BLOCK_RESPONSE_TIMEOUT)).await?;
            batch = self.store.read_new(&mut conn, &self.consumer, self.concurrency, 1).await?;
        }
        if batch.is_empty() {
            return Ok(Step::EmptyQueue);
        }
        let (_tx, rx) = watch::channel(false);
        let mut outcomes = Vec::with_capacity(batch.len());
        for task in batch {
            if let Some(a) = self.process(task, rx.clone()).await {
                outcomes.push(a);
            }
        }
        Ok(Step::Executed(outcomes))
    }
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
