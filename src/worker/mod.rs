//! kvq-worker: consumes the task stream and applies writes (README, "Architecture").
//!
//! At-least-once: an entry is acknowledged by the same Lua script that applies it, so a crash
//! between the two cannot happen; entries left pending by a dead consumer are reclaimed after
//! `worker.claim_idle_ms`. Failed applies are retried with backoff; after `worker.max_attempts`
//! the task goes to the dead-letter stream. Redis outages do not count as attempts.
//!
//! In a Redis Cluster the queue has one stream per shard: each shard has a read loop of its own
//! (on a connection of its own, since a blocking read holds its connection), all of them share
//! the worker's concurrency permits in turn (a busy shard cannot starve the others), and reclaim
//! and trimming visit every shard.

use std::collections::HashSet;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::config::Settings;
use crate::connection::Connection;
use crate::domain::TaskStatus;
use crate::metrics::{Metrics, StatusLabels};
use crate::store::{Applied, Delivered, Malformed, Store, StoreError, StreamTask};

pub mod app;
pub mod dead_letters;

/// Entries read at a time and applied in one script call.
pub const BATCH: usize = 32;
/// How long one blocking read waits for new entries.
const BLOCK_MS: usize = 2000;
/// The blocking connection's reply timeout must exceed the block time, or an idle blocking read
/// would time out and drop a healthy connection.
const BLOCK_RESPONSE_TIMEOUT: Duration = Duration::from_millis(BLOCK_MS as u64 + 3000);
/// How often a worker trims acknowledged entries from the stream (each trim removes all of them).
const TRIM_PERIOD: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// What one step of the worker did; tests drive the queue with it instead of sleeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Entries were read and finished, with their outcomes (an entry that is no valid task
    /// ends `failed`, in the dead-letter stream).
    Executed(Vec<Applied>),
    EmptyQueue,
}

/// Called with each task of a batch just before it is applied (a fault-injection point).
pub type ApplyHook = Arc<dyn Fn(&StreamTask) + Send + Sync>;

/// Locks a mutex even if a panicking thread poisoned it (the data here stays consistent).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// An entry by its shard and stream id (stream ids repeat across shards).
type EntryId = (usize, String);

/// Removes a batch's entries from the in-flight set when the batch ends, however it ends.
struct InFlight {
    set: Arc<Mutex<HashSet<EntryId>>>,
    ids: Vec<EntryId>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut set = lock(&self.set);
        for id in &self.ids {
            set.remove(id);
        }
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
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
    /// Entries this process is working on, so its own reclaim does not run them twice.
    in_flight: Arc<Mutex<HashSet<EntryId>>>,
    /// Per shard: where the next reclaim scan of its pending list starts (`0-0`: from the
    /// beginning).
    reclaim_cursors: Arc<Mutex<Vec<String>>>,
    /// The shard the next reclaim step starts with.
    reclaim_next: Arc<std::sync::atomic::AtomicUsize>,
    before_apply: Option<ApplyHook>,
}

impl Worker {
    pub fn new(settings: &Settings, store: Store, metrics: Arc<Metrics>) -> Self {
        let shards = store.shards.len();
        Self {
            store,
            consumer: settings.consumer_name(),
            concurrency: settings.worker.concurrency,
            claim_idle_ms: settings.worker.claim_idle_ms,
            max_attempts: settings.worker.max_attempts,
            tombstone_ms: settings.tasks.retention_seconds * 1000,
            metrics,
            in_flight: Arc::default(),
            reclaim_cursors: Arc::new(Mutex::new(vec!["0-0".into(); shards])),
            reclaim_next: Arc::default(),
            before_apply: None,
        }
    }

    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    /// Runs `hook` on each task just before it is applied. For tests that need a worker to
    /// fail (a panicking hook stands for a bug in the apply path).
    #[doc(hidden)]
    pub fn with_apply_hook(mut self, hook: ApplyHook) -> Self {
        self.before_apply = Some(hook);
        self
    }

    /// Runs a batch on its own task, holding `permit` until it ends, panic or not.
    fn spawn_batch(&self, batch: Delivered, permit: OwnedSemaphorePermit, stop: watch::Receiver<bool>) {
        let worker = self.clone();
        tokio::spawn(async move {
            let _permit = permit;
            worker.process_delivered(batch, stop).await;
        });
    }

    /// Runs until `stop` resolves, then finishes and acknowledges the tasks it holds.
    pub async fn run(self, stop: impl Future<Output = ()>) {
        let (stop_tx, stop_rx) = watch::channel(false);
        let permits = Arc::new(Semaphore::new(self.concurrency));
        let mut tasks = JoinSet::new();
        for shard in 0..self.store.shards.len() {
            tasks.spawn(self.clone().read_loop(shard, stop_rx.clone(), permits.clone()));
        }
        tasks.spawn(self.clone().reclaim_loop(stop_rx.clone(), permits.clone()));
        tasks.spawn(self.clone().trim_loop(stop_rx.clone()));
        stop.await;
        tracing::info!("worker stopping: finishing in-flight tasks");
        let _ = stop_tx.send(true);
        while tasks.join_next().await.is_some() {}
        // Every in-flight task holds a permit; taking them all means all have finished.
        let _ = permits.acquire_many(self.concurrency as u32).await;
        tracing::info!("worker stopped");
    }

    async fn read_loop(self, shard: usize, mut stop: watch::Receiver<bool>, permits: Arc<Semaphore>) {
        let mut backoff = Backoff::default();
        let mut conn = None;
        while !*stop.borrow() {
            if conn.is_none() {
                match self.prepare(shard).await {
                    Ok(c) => {
                        conn = Some(c);
                        backoff.reset();
                    }
                    Err(e @ StoreError::Corrupt(_)) => {
                        tracing::error!(error = %e, "cannot read the task stream; retrying");
                        backoff.sleep_or_stop(&mut stop).await;
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "redis not available; retrying");
                        backoff.sleep_or_stop(&mut stop).await;
                        continue;
                    }
                }
            }
            // With one stream: read only when a batch can start at once, so no task is held
            // unstarted. With a stream per shard, idle blocking reads must not hold the permits
            // (there may be more shards than permits, and reclaim needs them too): each loop
            // takes one once it has a batch, so it holds at most one batch unstarted.
            let early = match self.store.shards.len() {
                1 => match permits.clone().acquire_owned().await {
                    Ok(p) => Some(p),
                    Err(_) => return,
                },
                _ => None,
            };
            let (c, client_id) = conn.as_mut().expect("connected above");
            let read = {
                let read = self.store.read_new(c, shard, &self.consumer, BATCH, BLOCK_MS);
                tokio::pin!(read);
                tokio::select! {
                    r = &mut read => r,
                    _ = stop.changed() => {
                        // Wake the blocked read instead of abandoning it: entries Redis hands it
                        // meanwhile are this worker's to finish, or they would sit pending until
                        // another worker reclaims them `claim_idle_ms` later. (In a cluster the
                        // read ends with its block time.)
                        if let Some(id) = client_id {
                            if let Err(e) = self.store.unblock_client(*id).await {
                                tracing::debug!(error = %e, "could not wake the blocked read; it ends with its block time");
                            }
                        }
                        read.await
                    }
                }
            };
            match read {
                Ok(batch) if batch.is_empty() => {}
                Ok(batch) => {
                    let permit = match early {
                        Some(p) => p,
                        None => match permits.clone().acquire_owned().await {
                            Ok(p) => p,
                            Err(_) => return,
                        },
                    };
                    self.spawn_batch(batch, permit, stop.clone());
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reading the task stream failed; reconnecting");
                    conn = None;
                    backoff.sleep_or_stop(&mut stop).await;
                }
            }
        }
    }

    /// Opens the blocking connection for `shard` (and outside a cluster learns its client id,
    /// to wake it on stop) and makes sure its group exists.
    async fn prepare(&self, shard: usize) -> Result<(Connection, Option<u64>), StoreError> {
        self.store.ensure_shard_group(shard).await?;
        let slot = self.store.shard(shard)?.slot;
        let mut conn = self.store.redis.slot_reader(slot, BLOCK_RESPONSE_TIMEOUT).await?;
        if self.store.redis.is_cluster() {
            return Ok((conn, None));
        }
        let id: u64 = redis::cmd("CLIENT").arg("ID").query_async(&mut conn).await.map_err(crate::store::classify)?;
        Ok((conn, Some(id)))
    }

    async fn reclaim_loop(self, mut stop: watch::Receiver<bool>, permits: Arc<Semaphore>) {
        let period = Duration::from_millis((self.claim_idle_ms / 2).clamp(50, 5000));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                _ = stop.changed() => return,
            }
            // Every shard each round: one batch from each that has idle entries.
            for shard in 0..self.store.shards.len() {
                match self.reclaim_shard(shard).await {
                    Ok(claimed) => {
                        if !claimed.is_empty() {
                            tracing::info!(
                                shard,
                                tasks = claimed.tasks.len(),
                                malformed = claimed.malformed.len(),
                                "reclaimed idle entries"
                            );
                            let Ok(permit) = permits.clone().acquire_owned().await else { return };
                            self.spawn_batch(claimed, permit, stop.clone());
                        }
                    }
                    Err(StoreError::Redis(e)) if e.to_string().contains("NOGROUP") => {
                        let _ = self.store.ensure_group().await;
                    }
                    Err(e) => tracing::debug!(shard, error = %e, "reclaim failed"),
                }
            }
        }
    }

    /// Trims acknowledged entries from the stream every `TRIM_PERIOD`, so its length follows the
    /// backlog (pending plus undelivered) at any write rate.
    async fn trim_loop(self, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(TRIM_PERIOD) => {}
                _ = stop.changed() => return,
            }
            for shard in 0..self.store.shards.len() {
                if let Err(e) = self.store.trim_acknowledged(shard).await {
                    tracing::debug!(shard, error = %e, "trimming the stream failed");
                }
            }
        }
    }

    /// One reclaim scan of the pending list, continuing where the last one stopped, without
    /// the entries this process is working on.
    /// In a cluster: the first shard with entries to reclaim, starting one shard further each
    /// time, so that a shard with many idle entries cannot keep the others waiting.
    async fn reclaim_step(&self) -> Result<Delivered, StoreError> {
        let n = self.store.shards.len();
        let first = self.reclaim_next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % n;
        let mut last = Delivered::default();
        for shard in (first..n).chain(0..first) {
            last = self.reclaim_shard(shard).await?;
            if !last.is_empty() {
                break;
            }
        }
        Ok(last)
    }

    async fn reclaim_shard(&self, shard: usize) -> Result<Delivered, StoreError> {
        let start = lock(&self.reclaim_cursors)[shard].clone();
        let (mut claimed, next) = self.store.reclaim(shard, &self.consumer, self.claim_idle_ms, BATCH, &start).await?;
        lock(&self.reclaim_cursors)[shard] = next;
        let in_flight = lock(&self.in_flight);
        claimed.tasks.retain(|t| !in_flight.contains(&(shard, t.stream_id.clone())));
        claimed.malformed.retain(|m| !in_flight.contains(&(shard, m.stream_id.clone())));
        Ok(claimed)
    }

    /// Finishes delivered entries: those that are no valid task go to the dead-letter stream,
    /// the tasks are applied. A panic while applying does not escape: see `process_guarded`.
    async fn process_delivered(&self, delivered: Delivered, stop: watch::Receiver<bool>) -> Vec<Applied> {
        let mut finished = Vec::new();
        for m in &delivered.malformed {
            finished.extend(self.reject_malformed(m).await);
        }
        if !delivered.tasks.is_empty() {
            finished.extend(self.process_guarded(delivered.tasks, stop).await);
        }
        finished
    }

    /// Moves an entry that is no valid task to the dead-letter stream; if Redis cannot take it
    /// now, it stays pending and is reclaimed later.
    async fn reject_malformed(&self, m: &Malformed) -> Option<Applied> {
        tracing::warn!(stream_id = %m.stream_id, reason = %m.reason, "stream entry is no valid task; moving it to the dead-letter stream");
        match self.store.dead_letter_malformed(m).await {
            Ok(()) => {
                self.metrics.malformed_entries.inc();
                self.finished(TaskStatus::Failed);
                Some(Applied { status: TaskStatus::Failed, version: None, error: Some(m.reason.clone()) })
            }
            Err(e) => {
                tracing::warn!(stream_id = %m.stream_id, error = %e, "could not dead-letter the entry; it stays pending");
                None
            }
        }
    }

    /// `process_batch`, but a panic in it is caught: the batch's tasks are then run one at a
    /// time, and a task that panics on its own counts an attempt and stays pending (reclaimed
    /// later), until it has used up `max_attempts` and goes to the dead-letter stream.
    async fn process_guarded(&self, tasks: Vec<StreamTask>, stop: watch::Receiver<bool>) -> Vec<Applied> {
        let batch = AssertUnwindSafe(self.process_batch(&tasks, stop.clone())).catch_unwind().await;
        let panic = match batch {
            Ok(finished) => return finished,
            Err(p) => panic_message(p.as_ref()),
        };
        tracing::error!(panic = %panic, tasks = tasks.len(), "applying a batch panicked; applying its tasks one by one");
        let mut finished = Vec::new();
        for task in tasks {
            let one =
                AssertUnwindSafe(self.process_batch(std::slice::from_ref(&task), stop.clone())).catch_unwind().await;
            match one {
                Ok(done) => finished.extend(done),
                Err(p) => {
                    let error = format!("the worker panicked while applying the task: {}", panic_message(p.as_ref()));
                    let span = task_span(&task);
                    finished.extend(self.after_panic(&task, error).instrument(span).await);
                }
            }
        }
        finished
    }

    async fn after_panic(&self, task: &StreamTask, error: String) -> Option<Applied> {
        self.metrics.task_retries.inc();
        match self.store.count_attempt(task).await {
            Ok(attempts) if attempts >= self.max_attempts => {
                tracing::error!(%error, attempts, "task failed for good; moving it to the dead-letter stream");
                match self.store.dead_letter(task, &error).await {
                    Ok(()) => {
                        self.finished(TaskStatus::Failed);
                        Some(Applied { status: TaskStatus::Failed, version: None, error: Some(error) })
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "could not dead-letter the task; it stays pending");
                        None
                    }
                }
            }
            Ok(attempts) => {
                tracing::error!(%error, attempts, "task left pending; it is retried when reclaimed");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not count the attempt; the task stays pending");
                None
            }
        }
    }

    /// Applies a batch in one script call; tasks that fail there continue one by one with
    /// retries. Returns the outcomes of the tasks that finished.
    async fn process_batch(&self, tasks: &[StreamTask], mut stop: watch::Receiver<bool>) -> Vec<Applied> {
        let ids: Vec<EntryId> = tasks.iter().map(|t| (t.shard, t.stream_id.clone())).collect();
        lock(&self.in_flight).extend(ids.iter().cloned());
        let _in_flight = InFlight { set: self.in_flight.clone(), ids };
        if let Some(hook) = &self.before_apply {
            tasks.iter().for_each(|t| hook(t));
        }
        let mut backoff = Backoff::default();
        let mut stopping_deadline = None;
        let outcomes = loop {
            match self.store.apply(tasks, self.tombstone_ms).await {
                Ok(outcomes) => break Some(outcomes),
                // A full Redis is no fault of the tasks: wait, never count an attempt.
                Err(StoreError::Unavailable(e) | StoreError::Full(e)) => {
                    tracing::warn!(error = %e, tasks = tasks.len(), "redis unavailable or full while applying; will retry");
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
        finished
    }

    /// Retries one task that failed to apply, with backoff, until it finishes or has used up
    /// `max_attempts` (then it goes to the dead-letter stream). Redis outages do not count.
    async fn retry(&self, task: &StreamTask, mut error: String, mut stop: watch::Receiver<bool>) -> Option<Applied> {
        let mut backoff = Backoff::default();
        let mut stopping_deadline = None;
        loop {
            self.metrics.task_retries.inc();
            match self.store.attempts(task).await {
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

    /// One deterministic step for tests: reclaim idle entries (continuing the last scan), else
    /// read new ones without blocking, and finish all of them before returning.
    pub async fn try_execute_tasks(&self) -> Result<Step, StoreError> {
        self.store.ensure_group().await?;
        let mut batch = self.reclaim_step().await?;
        if batch.is_empty() {
            let mut conn = self.store.redis.dedicated(Some(BLOCK_RESPONSE_TIMEOUT)).await?;
            for shard in 0..self.store.shards.len() {
                batch = self.store.read_new(&mut conn, shard, &self.consumer, BATCH, 1).await?;
                if !batch.is_empty() {
                    break;
                }
            }
        }
        if batch.is_empty() {
            return Ok(Step::EmptyQueue);
        }
        let (_tx, rx) = watch::channel(false);
        Ok(Step::Executed(self.process_delivered(batch, rx).await))
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
