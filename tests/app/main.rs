//! The API, the queue, outages, pages and the browser: kvq in process or as its binaries against
//! a real `redis-server` (`cargo test --test app`, or `cargo test --test app pages::` for one module).

#[path = "../support/mod.rs"]
mod support;

mod alerting;
mod api;
mod auth;
mod autoscaling;
mod browser;
mod cluster;
mod cluster_idempotency;
mod hostile;
mod metrics;
mod outage;
mod pages;
mod queue;
mod remote_api;
mod storage;
mod tls;
