//! Wakes `?wait` requests when a worker announces their task finished on the `P:done` channel.
//! One pub/sub connection per server process; requests poll as a fallback, so a message lost
//! during a reconnect only delays an answer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::Notify;

use crate::connection::{Redis, CONNECT_TIMEOUT};

#[derive(Default)]
pub struct Completions {
    waiters: Mutex<HashMap<String, Arc<Notify>>>,
}

/// A registered interest in one task; unregisters on drop.
pub struct Waiter {
    id: String,
    notify: Arc<Notify>,
    owner: Arc<Completions>,
}

impl Waiter {
    pub async fn notified(&self) {
        self.notify.notified().await
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let mut map = self.owner.waiters.lock().expect("poisoned");
        // Only the last waiter for an id removes it (two clients may wait on one task).
        if Arc::strong_count(&self.notify) <= 2 {
            map.remove(&self.id);
        }
    }
}

impl Completions {
    pub fn register(self: &Arc<Self>, id: &str) -> Waiter {
        let notify = self
            .waiters
            .lock()
            .expect("poisoned")
            .entry(id.to_string())
            .or_insert_with(|| Arc::new(Notify::new()))
            .clone();
        Waiter { id: id.to_string(), notify, owner: self.clone() }
    }

    fn wake(&self, id: &str) {
        if let Some(n) = self.waiters.lock().expect("poisoned").get(id) {
            n.notify_waiters();
            n.notify_one();
        }
    }

    /// Subscribes to the completion channel for the life of the process, reconnecting (and
    /// following the master) whenever the connection drops.
    pub async fn listen(self: Arc<Self>, redis: Redis, channel: String) {
        let mut delay = Duration::from_millis(50);
        loop {
            match self.subscribe_once(&redis, &channel).await {
                Ok(()) => delay = Duration::from_millis(50),
                Err(e) => {
                    tracing::debug!(error = %e, "completion subscription failed; retrying");
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
            }
            tokio::time::sleep(delay).await;
        }
    }

    async fn subscribe_once(
        &self,
        redis: &Redis,
        channel: &str,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let info = redis.pubsub_info().await?;
        let client = redis::Client::open(info)?;
        let mut pubsub = tokio::time::timeout(CONNECT_TIMEOUT * 2, client.get_async_pubsub()).await??;
        tokio::time::timeout(CONNECT_TIMEOUT * 2, pubsub.subscribe(channel)).await??;
        tracing::debug!(channel, "subscribed to task completions");
        let mut messages = pubsub.on_message();
        while let Some(msg) = messages.next().await {
            if let Ok(id) = msg.get_payload::<String>() {
                self.wake(&id);
            }
        }
        Ok(())
    }
}
