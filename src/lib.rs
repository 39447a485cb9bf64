//! kvq: a key-value service whose writes go through a Redis-backed task queue.

pub mod config;
pub mod connection;
pub mod domain;
pub mod health;
pub mod http;
pub mod metrics;
#[cfg(feature = "server")]
pub mod server;
pub mod shutdown;
pub mod store;
pub mod telemetry;
pub mod timefmt;
#[cfg(feature = "worker")]
pub mod worker;
