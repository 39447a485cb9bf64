//! kvq-server: the HTTP API, Swagger UI, HTML pages, health and metrics.

pub mod api;
pub mod app;
pub mod auth;
pub mod body_errors;
pub mod completions;
pub mod model;
pub mod observe;
pub mod pages;
pub mod panics;
pub mod params;
pub mod problem;
pub mod query;
pub mod replication;
pub mod routes;
pub mod state;
pub mod transport_errors;

pub use app::{body_limit, openapi_spec, with_server_middleware, BuildError, ServerApp, DRAIN_TIMEOUT};
