//! Fault tests: Redis/Sentinel failover with real processes and kill -9 (`ha`), Redis Cluster
//! failover and resharding (`cluster`), and the chart's own Redis pods simulated on loopback
//! (`chart_pods` in sentinel mode, `cluster_pods` in cluster mode).

#[path = "../support/mod.rs"]
mod support;

mod chart_pods;
mod cluster;
mod cluster_pods;
mod ha;
