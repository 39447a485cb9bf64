//! kvq: a key-value service whose writes go through a Redis-backed task queue.

pub mod config;
pub mod connection;
pub mod domain;
pub mod store;
pub mod health;
pub mod metrics;
pub mod shutdown;
pub mod telemetry;
pub mod timefmt;
#[cfg(feature = "worker")]
pub mod worker;
#[cfg(feature = "server")]
pub mod server;
