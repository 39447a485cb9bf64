//! Write load through the API: writers that write unique keys (or overwrite keys of their own)
//! with Idempotency-Keys until stopped, retrying each write until it is acknowledged (202), and
//! the lost-writes and latest-value checks.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::task::JoinHandle;

use super::http::HttpClient;

/// How long one key is retried before it is abandoned.
const KEY_DEADLINE: Duration = Duration::from_secs(30);

/// What a load run saw.
#[derive(Default, Clone)]
pub struct LoadLog {
    /// Keys answered 202; each unique key's value is the key itself.
    pub acked: BTreeSet<String>,
    /// Each key's last acknowledged value: what it must read once the queue has drained (a
    /// writer sends a key's next value only after the previous one was acknowledged).
    pub last_acked: BTreeMap<String, String>,
    /// Writes acknowledged (several per key when overwriting).
    pub writes: u64,
    /// The longest time one write took from its first attempt to its acknowledgement: how long
    /// the worst-hit key could not be written.
    pub slowest_ack: Duration,
    /// Keys whose every attempt failed for `KEY_DEADLINE` (never acknowledged).
    pub abandoned: BTreeSet<String>,
    pub first_failure: Option<Instant>,
    pub first_success_after_failure: Option<Instant>,
    /// Attempts that were not acknowledged (and retried).
    pub failures: u64,
    pub last_failure: Option<Instant>,
    /// What the last failed attempt got: the status and the start of the body, or the error.
    pub last_failure_detail: Option<String>,
    /// The first acknowledgement after the last failed attempt: writes were available again
    /// for good from then on.
    pub resumed: Option<Instant>,
}

impl LoadLog {
    /// From the first failed request to the first successful one after it.
    pub fn unavailability(&self) -> Duration {
        match (self.first_failure, self.first_success_after_failure) {
            (Some(f), Some(s)) => s.duration_since(f),
            _ => Duration::ZERO,
        }
    }

    /// From `fault` (e.g. the kill of the master) until writes were acknowledged again for
    /// good; `None` when they never resumed after a failure.
    pub fn outage_since(&self, fault: Instant) -> Option<Duration> {
        Some(self.resumed?.saturating_duration_since(fault))
    }
}

/// Running writers; `stop` ends them and returns what they saw.
pub struct Load {
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<LoadLog>>,
    writers: Vec<JoinHandle<()>>,
}

impl Load {
    /// Starts `writers` writers putting keys `{prefix}-{writer}-{n}` through `http`.
    pub fn start(http: &HttpClient, prefix: &str, writers: usize) -> Self {
        Self::spawn(http, prefix, writers, None)
    }

    /// Starts `writers` writers each overwriting its own `keys` keys `{prefix}-{writer}-{k}`
    /// in turn with values `{key}={n}`: per-key order is kept when each key reads its last
    /// acknowledged value (`stale_writes`).
    pub fn start_overwriting(http: &HttpClient, prefix: &str, writers: usize, keys: usize) -> Self {
        Self::spawn(http, prefix, writers, Some(keys))
    }

    fn spawn(http: &HttpClient, prefix: &str, writers: usize, keys: Option<usize>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(LoadLog::default()));
        let writers = (0..writers)
            .map(|w| {
                let (http, stop, log) = (http.clone(), stop.clone(), log.clone());
                tokio::spawn(write_until(http, format!("{prefix}-{w}"), keys, stop, log))
            })
            .collect();
        Self { stop, log, writers }
    }

    /// What the writers saw so far.
    pub fn log(&self) -> MutexGuard<'_, LoadLog> {
        self.log.lock().unwrap()
    }

    /// Stops the writers (each finishes its current key) and returns the log.
    pub async fn stop(self) -> LoadLog {
        self.stop.store(true, Ordering::SeqCst);
        for w in self.writers {
            w.await.unwrap();
        }
        self.log.lock().unwrap().clone()
    }
}

/// Writes until `stop`: unique keys (value = key), or with `keys` its own keys in turn (value
/// `{key}={n}`); retries each write with its Idempotency-Key until acknowledged.
async fn write_until(
    http: HttpClient,
    prefix: String,
    keys: Option<usize>,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<LoadLog>>,
) {
    let mut i = 0;
    while !stop.load(Ordering::SeqCst) {
        let (key, value) = match keys {
            None => (format!("{prefix}-{i}"), format!("{prefix}-{i}")),
            Some(k) => (format!("{prefix}-{}", i % k), format!("{prefix}-{}={i}", i % k)),
        };
        i += 1;
        let started = Instant::now();
        let deadline = started + KEY_DEADLINE;
        loop {
            let r = http.try_put_json(&key, json!({ "value": value }), "", &[("Idempotency-Key", &value)]).await;
            let ok = matches!(&r, Ok(r) if r.status() == 202);
            let failure = match r {
                _ if ok => None,
                Ok(r) => {
                    let status = r.status();
                    let body: String = r.text().await.unwrap_or_default().chars().take(200).collect();
                    Some(format!("HTTP {status}: {body}"))
                }
                Err(e) => Some(e.to_string()),
            };
            let done = {
                let mut l = log.lock().unwrap();
                if ok {
                    if l.first_failure.is_some() && l.first_success_after_failure.is_none() {
                        l.first_success_after_failure = Some(Instant::now());
                    }
                    if l.last_failure.is_some_and(|f| l.resumed.is_none_or(|r| r < f)) {
                        l.resumed = Some(Instant::now());
                    }
                    l.acked.insert(key.clone());
                    l.last_acked.insert(key.clone(), value.clone());
                    l.writes += 1;
                    l.slowest_ack = l.slowest_ack.max(started.elapsed());
                    true
                } else {
                    l.failures += 1;
                    l.first_failure.get_or_insert_with(Instant::now);
                    l.last_failure = Some(Instant::now());
                    l.last_failure_detail = failure;
                    if Instant::now() > deadline {
                        l.abandoned.insert(key.clone());
                        true
                    } else {
                        false
                    }
                }
            };
            if done {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Reads every key back through the API; returns those whose value (the key itself) is
/// missing or wrong.
pub async fn lost_writes<'a>(http: &HttpClient, keys: impl IntoIterator<Item = &'a String>) -> Vec<String> {
    let mut lost = Vec::new();
    for key in keys {
        if !http.holds(key, key).await {
            lost.push(key.clone());
        }
    }
    lost
}

/// Re-checks the lost writes until there are none (the queue is still draining) or `timeout`.
pub async fn assert_no_lost_writes_within(http: &HttpClient, keys: &BTreeSet<String>, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let mut lost = lost_writes(http, keys).await;
    while !lost.is_empty() {
        assert!(Instant::now() < deadline, "acknowledged writes lost: {lost:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
        lost = lost_writes(http, &lost).await;
    }
}

/// Reads every key back through the API; returns `(key, expected, found)` for each key that
/// does not hold its last acknowledged value (lost, or overwritten by an older write).
pub async fn stale_writes(
    http: &HttpClient,
    latest: &BTreeMap<String, String>,
) -> Vec<(String, String, Option<String>)> {
    let mut stale = Vec::new();
    for (key, value) in latest {
        if !http.holds(key, value).await {
            let found = match http.get(&format!("/v1/keys/{key}")).await {
                r if r.status() == 200 => r.json::<serde_json::Value>().await.ok().map(|v| v["value"].to_string()),
                r => Some(format!("HTTP {}", r.status())),
            };
            stale.push((key.clone(), value.clone(), found));
        }
    }
    stale
}

/// Re-checks the stale keys until every key holds its last acknowledged value (the queue is
/// still draining) or `timeout`.
pub async fn assert_latest_within(http: &HttpClient, latest: &BTreeMap<String, String>, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let mut stale = stale_writes(http, latest).await;
    while !stale.is_empty() {
        assert!(Instant::now() < deadline, "keys not holding their last acknowledged value: {stale:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let left: BTreeMap<String, String> = stale.into_iter().map(|(k, v, _)| (k, v)).collect();
        stale = stale_writes(http, &left).await;
    }
}
