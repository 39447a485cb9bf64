//! Write load through the API: writers that write unique keys with Idempotency-Keys until
//! stopped, retrying each key until it is acknowledged (202), and the one lost-writes check.

use std::collections::BTreeSet;
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
    /// Keys answered 202; each key's value is the key itself.
    pub acked: BTreeSet<String>,
    /// Keys whose every attempt failed for `KEY_DEADLINE` (never acknowledged).
    pub abandoned: BTreeSet<String>,
    pub first_failure: Option<Instant>,
    pub first_success_after_failure: Option<Instant>,
    /// Attempts that were not acknowledged (and retried).
    pub failures: u64,
    pub last_failure: Option<Instant>,
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
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(LoadLog::default()));
        let writers = (0..writers)
            .map(|w| {
                let (http, stop, log) = (http.clone(), stop.clone(), log.clone());
                tokio::spawn(write_until(http, format!("{prefix}-{w}"), stop, log))
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

/// Writes unique keys until `stop`, retrying each with its Idempotency-Key until acknowledged.
async fn write_until(http: HttpClient, prefix: String, stop: Arc<AtomicBool>, log: Arc<Mutex<LoadLog>>) {
    let mut i = 0;
    while !stop.load(Ordering::SeqCst) {
        let key = format!("{prefix}-{i}");
        i += 1;
        let deadline = Instant::now() + KEY_DEADLINE;
        loop {
            let r = http.try_put_json(&key, json!({ "value": key }), "", &[("Idempotency-Key", &key)]).await;
            let ok = matches!(&r, Ok(r) if r.status() == 202);
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
                    true
                } else {
                    l.failures += 1;
                    l.first_failure.get_or_insert_with(Instant::now);
                    l.last_failure = Some(Instant::now());
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
