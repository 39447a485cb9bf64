//! Replica acknowledgement for `redis.min_replicas_ack > 0` (README, "High availability"), as group commit.
//!
//! A round is `INCR` + `WAIT n` on a sibling connection to the same master (see
//! `Store::wait_replicas`): the `INCR` follows every write already answered on the shared
//! connection, so once `n` replicas hold it they hold those writes too, and the shared connection
//! is never blocked by `WAIT`. Rounds run one at a time; a request either finds that a round which
//! started after its write has completed, or runs the next round itself. Under load one round
//! serves many writes. Connection generations tell when the master changed in between. In a
//! Redis Cluster each shard has rounds of its own, on its master, and the master's node id is
//! the generation.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::Mutex;

use crate::metrics::{Metrics, RoundLabels};
use crate::store::{Store, StoreError};

/// Time a round may wait for the replicas before the writes it covers are refused with 503.
pub const ACK_TIMEOUT_MS: u64 = 1000;

pub struct ReplicaAcks {
    store: Store,
    replicas: u32,
    /// Per shard.
    rounds: Vec<Rounds>,
    metrics: Arc<Metrics>,
}

/// The round bookkeeping of group commit, apart from Redis: which round covers which write.
#[derive(Default)]
struct Rounds {
    /// Rounds started so far; a round's index is this counter's value when it started.
    started: AtomicU64,
    last: Mutex<Round>,
}

#[derive(Default)]
struct Round {
    index: u64,
    /// Connection generation the round ran on and replicas that acknowledged, or the error.
    outcome: Option<Result<(u64, u32), String>>,
}

/// Why a write could not be confirmed.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    #[error("the write reached {got} of {wanted} required replicas")]
    TooFewReplicas { got: u32, wanted: u32 },
    #[error("the redis master changed before the write was replicated")]
    MasterChanged,
    #[error("{0}")]
    Store(String),
}

impl ReplicaAcks {
    pub fn new(store: Store, replicas: u32, metrics: Arc<Metrics>) -> Self {
        let rounds = (0..store.shards.len()).map(|_| Rounds::default()).collect();
        Self { store, replicas, rounds, metrics }
    }

    /// Returns once `replicas` replicas hold the write `shard` took on connection (or node)
    /// `generation`.
    pub async fn confirm(&self, shard: usize, generation: u64) -> Result<(), AckError> {
        let Some(rounds) = self.rounds.get(shard) else {
            return Err(AckError::Store(format!("no shard {shard}")));
        };
        let outcome = rounds.covering_outcome(|| self.round(shard)).await;
        verdict(outcome, generation, self.replicas)
    }

    async fn round(&self, shard: usize) -> Result<(u64, u32), String> {
        let result = self.store.wait_replicas(shard, self.replicas, ACK_TIMEOUT_MS).await;
        let outcome = match &result {
            Ok((_, got)) if *got >= self.replicas => RoundLabels::ACKNOWLEDGED,
            Ok(_) => RoundLabels::TOO_FEW_REPLICAS,
            Err(_) => RoundLabels::ERROR,
        };
        self.metrics.replica_ack_rounds.get_or_create(&RoundLabels { outcome }).inc();
        result.map_err(|e: StoreError| e.to_string())
    }
}

impl Rounds {
    /// The outcome of a round that started after the caller's write was answered: the last
    /// round if it did, else a new one run with `round`.
    async fn covering_outcome<F, Fut>(&self, round: F) -> Result<(u64, u32), String>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<(u64, u32), String>>,
    {
        // Any round that starts from now on was sent after this write's reply, so covers it.
        let ticket = self.started.load(Ordering::SeqCst) + 1;
        let mut last = self.last.lock().await;
        if last.index < ticket {
            let index = self.started.fetch_add(1, Ordering::SeqCst) + 1;
            let outcome = round().await;
            *last = Round { index, outcome: Some(outcome) };
        }
        last.outcome.clone().expect("a round ran")
    }
}

/// What a covering round's outcome means for a write made on connection `generation`.
fn verdict(outcome: Result<(u64, u32), String>, generation: u64, replicas: u32) -> Result<(), AckError> {
    match outcome {
        Err(e) => Err(AckError::Store(e)),
        Ok((round_generation, _)) if round_generation != generation => Err(AckError::MasterChanged),
        Ok((_, got)) if got < replicas => Err(AckError::TooFewReplicas { got, wanted: replicas }),
        Ok(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;

    use std::time::Duration;

    use tokio::sync::{oneshot, Notify};

    use super::*;

    /// A round that is in progress when a write is answered was sent before that write: it
    /// must not confirm it. Writes answered meanwhile share the next round.
    #[tokio::test]
    async fn a_round_started_before_a_write_does_not_acknowledge_it() {
        let rounds = Arc::new(Rounds::default());
        let ran = Arc::new(AtomicU32::new(0));
        let started = Arc::new(Notify::new());
        let (release, released) = oneshot::channel::<()>();

        // Round 1 runs for a first write and stalls until released; it saw no replica.
        let first = tokio::spawn({
            let (rounds, ran, started) = (rounds.clone(), ran.clone(), started.clone());
            async move {
                rounds
                    .covering_outcome(|| async move {
                        ran.fetch_add(1, Ordering::SeqCst);
                        started.notify_one();
                        let _ = released.await;
                        Ok((1, 0))
                    })
                    .await
            }
        });
        tokio::time::timeout(Duration::from_secs(5), started.notified()).await.expect("round 1 started");

        // Two writes answered while round 1 is in flight.
        let later = |rounds: Arc<Rounds>, ran: Arc<AtomicU32>| async move {
            rounds
                .covering_outcome(|| async move {
                    ran.fetch_add(1, Ordering::SeqCst);
                    Ok((1, 1))
                })
                .await
        };
        let second = tokio::spawn(later(rounds.clone(), ran.clone()));
        let third = tokio::spawn(later(rounds.clone(), ran.clone()));
        tokio::task::yield_now().await;
        release.send(()).unwrap();

        assert_eq!(verdict(first.await.unwrap(), 1, 1), Err(AckError::TooFewReplicas { got: 0, wanted: 1 }));
        assert_eq!(verdict(second.await.unwrap(), 1, 1), Ok(()), "a round of its own confirmed the second write");
        assert_eq!(verdict(third.await.unwrap(), 1, 1), Ok(()), "and the third");
        assert_eq!(ran.load(Ordering::SeqCst), 2, "the writes answered during round 1 shared round 2");
    }

    /// A write made on one master connection is not confirmed by a round that ran on a newer
    /// one (the master changed in between: the new master may never have had the write).
    #[tokio::test]
    async fn a_round_on_another_connection_generation_refuses_the_write() {
        let rounds = Rounds::default();
        let outcome = rounds.covering_outcome(|| async { Ok((2, 3)) }).await;
        assert_eq!(verdict(outcome.clone(), 1, 1), Err(AckError::MasterChanged));
        assert_eq!(verdict(outcome, 2, 1), Ok(()));
        assert_eq!(verdict(Err("timed out".into()), 1, 1), Err(AckError::Store("timed out".into())));
    }
}
