//! Prometheus metrics shared by both binaries, rendered in the text exposition format.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::http::CHECK_TIMEOUT;
use crate::store::{MemoryStats, QueueStats, Store};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: &'static str,
    /// The route pattern, never the raw path, to keep cardinality bounded.
    pub route: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: &'static str,
    pub route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    /// Why, never who: `missing_token`, `unknown_token`, `scope`, `prefix`.
    pub reason: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<RequestLabels, Counter>,
    pub http_duration: Family<RouteLabels, Histogram>,
    pub tasks_finished: Family<StatusLabels, Counter>,
    pub task_retries: Counter,
    pub malformed_entries: Counter,
    /// Requests refused by authentication (401) or authorization (403), by reason.
    pub auth_refusals: Family<RefusalLabels, Counter>,
    queue_depth: Gauge,
    queue_pending: Gauge,
    dead_letters: Gauge,
    redis_up: Gauge,
    redis_used_memory: Gauge,
    redis_maxmemory: Gauge,
    bookkeeping: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("kvq");
        let http_requests = Family::<RequestLabels, Counter>::default();
        registry.register("http_requests", "HTTP requests served", http_requests.clone());
        let http_duration = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
        });
        registry.register("http_request_duration_seconds", "HTTP request latency", http_duration.clone());
        let tasks_finished = Family::<StatusLabels, Counter>::default();
        registry.register("tasks_finished", "Tasks finished by this worker, by final status", tasks_finished.clone());
        let task_retries = Counter::default();
        registry.register("task_retries", "Task applies that failed and were retried", task_retries.clone());
        let malformed_entries = Counter::default();
        registry.register(
            "malformed_entries",
            "Stream entries that were no valid task, moved to the dead-letter stream",
            malformed_entries.clone(),
        );
        let auth_refusals = Family::<RefusalLabels, Counter>::default();
        registry.register(
            "auth_refusals",
            "Requests refused for a missing or unknown token (401) or a scope or key prefix it lacks (403)",
            auth_refusals.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register("queue_depth", "Tasks not yet applied (undelivered plus pending)", queue_depth.clone());
        let queue_pending = Gauge::default();
        registry.register(
            "queue_pending",
            "Tasks delivered to a worker and not yet acknowledged",
            queue_pending.clone(),
        );
        let dead_letters = Gauge::default();
        registry.register("dead_letters", "Entries in the dead-letter stream", dead_letters.clone());
        let redis_up = Gauge::default();
        registry.register("redis_up", "1 when the last Redis query for metrics succeeded", redis_up.clone());
        let redis_used_memory = Gauge::default();
        registry.register_with_unit(
            "redis_used_memory",
            "Memory Redis uses (used_memory of INFO memory)",
            prometheus_client::registry::Unit::Bytes,
            redis_used_memory.clone(),
        );
        let redis_maxmemory = Gauge::default();
        registry.register_with_unit(
            "redis_maxmemory",
            "Redis memory limit (maxmemory; 0 for none): writes past it answer 507",
            prometheus_client::registry::Unit::Bytes,
            redis_maxmemory.clone(),
        );
        let bookkeeping = Gauge::default();
        registry.register_with_unit(
            "bookkeeping",
            "Memory kvq's bookkeeping takes in Redis (task stream, dead letters)",
            prometheus_client::registry::Unit::Bytes,
            bookkeeping.clone(),
        );
        Self {
            registry,
            http_requests,
            http_duration,
            tasks_finished,
            task_retries,
            malformed_entries,
            auth_refusals,
            queue_depth,
            queue_pending,
            dead_letters,
            redis_up,
            redis_used_memory,
            redis_maxmemory,
            bookkeeping,
        }
    }

    /// Renders the exposition text, with queue gauges from `stats` (None: Redis unreachable).
    pub fn render(&self, stats: Option<&QueueStats>, memory: Option<&MemoryStats>) -> String {
        if let Some(m) = memory {
            self.redis_used_memory.set(m.used as i64);
            self.redis_maxmemory.set(m.max as i64);
            self.bookkeeping.set(m.bookkeeping as i64);
        }
        match stats {
            Some(s) => {
                self.queue_depth.set(s.depth() as i64);
                self.queue_pending.set(s.pending as i64);
                self.dead_letters.set(s.dead_letters as i64);
                self.redis_up.set(1);
            }
            None => {
                self.redis_up.set(0);
            }
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }
}

/// `/metrics` (both binaries): the registry plus the queue figures, read with a bound so a slow
/// Redis does not stall the scrape (the figures are left out then).
#[poem::handler]
pub async fn serve(
    store: poem::web::Data<&Store>,
    metrics: poem::web::Data<&std::sync::Arc<Metrics>>,
) -> poem::Response {
    use poem::IntoResponse;
    let stats = tokio::time::timeout(CHECK_TIMEOUT, store.queue_stats()).await.ok().and_then(Result::ok);
    let memory = tokio::time::timeout(CHECK_TIMEOUT, store.memory_stats()).await.ok().and_then(Result::ok);
    metrics
        .render(stats.as_ref(), memory.as_ref())
        .with_content_type("text/plain; version=0.0.4; charset=utf-8")
        .into_response()
}
