//! Fault tests: Redis/Sentinel failover with real processes and kill -9 (`ha`), and the
//! chart's own Redis pods simulated on loopback (`chart_pods`, and in cluster mode `cluster_pods`).

#[path = "../support/mod.rs"]
mod support;

mod chart_pods;
mod cluster_pods;
mod ha;
