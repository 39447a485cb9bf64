//! The one test harness of every test binary: real `redis-server`/`redis-sentinel` processes on
//! free loopback ports, kvq in process (port 0) or as the real binaries, the rendered Helm
//! chart, and one HTTP client. No mocks: everything talks over TCP.
#![allow(dead_code, unused_imports)]

pub mod app;
pub mod auth;
pub mod chart;
pub mod cluster_pods;
pub mod http;
pub mod load;
pub mod metrics;
pub mod pods;
pub mod process;
pub mod prometheus;
pub mod redis_cluster;
pub mod redis_server;
pub mod sentinel;
pub mod tls;
pub mod webdriver;

pub use self::app::*;
pub use self::auth::*;
pub use self::http::{assert_problem, HttpClient};
pub use self::metrics::{scrape, Scrape};
pub use self::process::{eventually, free_port, which, ChildProcess};
pub use self::redis_server::TestRedis;
