//! Fault tests: Redis/Sentinel failover with real processes and kill -9 (`ha`), Redis Cluster
//! failover and resharding (`cluster`), and the chart's own Redis pods simulated on loopback
//! (`chart_pods`).

#[path = "../support/mod.rs"]
mod support;

mod chart_pods;
mod cluster;
mod ha;
