//! Replica acknowledgement for `redis.min_replicas_ack > 0` (README, "High availability"), as group commit.
//!
//! A round is `INCR` + `WAIT n` on a sibling connection to the same master (see
//! `Store::wait_replicas`): the `INCR` follows every write already answered on the shared
//! connection, so once `n` replicas hold it they hold those writes too, and the shared connection
//! is never blocked by `WAIT`. Rounds run one at a time; a request either finds that a round which
//! started after its write has completed, or runs the next round itself. Under load one round
//! serves many writes. Connection generations tell when the master changed in between.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Mutex;

use crate::store::{Store, StoreError};

/// Time a round may wait for the replicas before the writes it covers are refused with 503.
pub const ACK_TIMEOUT_MS: u64 = 1000;

pub struct ReplicaAcks {
    store: Store,
    replicas: u32,
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
#[derive(Debug, thiserror::Error)]
pub enum AckError {
    #[error("the write reached {got} of {wanted} required replicas")]
    TooFewReplicas { got: u32, wanted: u32 },
    #[error("the redis master changed before the write was replicated")]
    MasterChanged,
    #[error("{0}")]
    Store(String),
}

impl ReplicaAcks {
    pub fn new(store: Store, replicas: u32) -> Self {
        Self { store, replicas, started: AtomicU64::new(0), last: Mutex::new(Round::default()) }
    }

    /// Returns once `replicas` replicas hold the write made on connection `generation`.
    pub async fn confirm(&self, generation: u64) -> Result<(), AckError> {
        // Any round that starts from now on was sent after this write's reply, so covers it.
        let ticket = self.started.load(Ordering::SeqCst) + 1;
        let mut last = self.last.lock().await;
        if last.index < ticket {
            let index = self.started.fetch_add(1, Ordering::SeqCst) + 1;
            let outcome = self.round().await;
            *last = Round { index, outcome: Some(outcome) };
        }
        match last.outcome.clone().expect("a round ran") {
            Err(e) => Err(AckError::Store(e)),
            Ok((round_generation, _)) if round_generation != generation => Err(AckError::MasterChanged),
            Ok((_, got)) if got < self.replicas => Err(AckError::TooFewReplicas { got, wanted: self.replicas }),
            Ok(_) => Ok(()),
        }
    }

    async fn round(&self) -> Result<(u64, u32), String> {
        self.store.wait_replicas(self.replicas, ACK_TIMEOUT_MS).await.map_err(|e: StoreError| e.to_string())
    }
}
