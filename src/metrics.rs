//! Prometheus metrics shared by both binaries, rendered in the text exposition format.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::domain::TaskStatus;
use crate::http::CHECK_TIMEOUT;
use crate::store::{MemoryStats, QueueStats, Store, StoreError};

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

/// Why a write was refused before it was (known to be) queued.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    /// `redis_unavailable` (503: no writable master), `not_replicated` (503: the replicas did
    /// not acknowledge in time), `redis_full` (507: `maxmemory`).
    pub reason: &'static str,
}

impl RefusalLabels {
    pub const REDIS_UNAVAILABLE: &'static str = "redis_unavailable";
    pub const NOT_REPLICATED: &'static str = "not_replicated";
    pub const REDIS_FULL: &'static str = "redis_full";
    pub const REASONS: [&'static str; 3] = [Self::REDIS_UNAVAILABLE, Self::NOT_REPLICATED, Self::REDIS_FULL];
}

/// What one replica-acknowledgement round (`WAIT`) ended with.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RoundLabels {
    /// `acknowledged`, `too_few_replicas` (timed out short of the replicas asked for), `error`.
    pub outcome: &'static str,
}

impl RoundLabels {
    pub const ACKNOWLEDGED: &'static str = "acknowledged";
    pub const TOO_FEW_REPLICAS: &'static str = "too_few_replicas";
    pub const ERROR: &'static str = "error";
    pub const OUTCOMES: [&'static str; 3] = [Self::ACKNOWLEDGED, Self::TOO_FEW_REPLICAS, Self::ERROR];
}

/// What the scrape itself reads from Redis, beside the queue and memory figures.
#[derive(Debug, Clone, Default)]
pub struct ScrapeFacts {
    /// Age of the oldest write not yet applied: `Some(None)` when nothing waits, `None` when
    /// Redis did not say (the gauge then keeps its last value, as the queue gauges do).
    pub oldest_waiting_ms: Option<Option<u64>>,
    /// The master answered a write (`SET`); a full master counts, its writes answer 507.
    pub master_writable: bool,
    /// Master changes this process saw so far (`Redis::master_changes`).
    pub master_changes: u64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthRefusalLabels {
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
    pub writes_accepted: Counter,
    pub writes_refused: Family<RefusalLabels, Counter>,
    pub replica_ack_rounds: Family<RoundLabels, Counter>,
    master_changes: Counter,
    master_writable: Gauge,
    queue_lag: Gauge,
    oldest_task_age: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Requests refused by authentication (401) or authorization (403), by reason.
    pub auth_refusals: Family<AuthRefusalLabels, Counter>,
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
        let writes_accepted = Counter::default();
        registry.register(
            "writes_accepted",
            "Writes the server queued (answered 202, or 200 and friends after ?wait); idempotent replays included",
            writes_accepted.clone(),
        );
        let writes_refused = Family::<RefusalLabels, Counter>::default();
        registry.register(
            "writes_refused",
            "Writes refused by reason: redis_unavailable (503), not_replicated (503), redis_full (507)",
            writes_refused.clone(),
        );
        let replica_ack_rounds = Family::<RoundLabels, Counter>::default();
        registry.register(
            "replica_ack_rounds",
            "Replica-acknowledgement rounds (WAIT, one covers many writes) by outcome; only with redis.min_replicas_ack > 0",
            replica_ack_rounds.clone(),
        );
        let master_changes = Counter::default();
        registry.register(
            "redis_master_changes",
            "Times this process found a different Redis master than before (a Sentinel failover or switchover)",
            master_changes.clone(),
        );
        let master_writable = Gauge::default();
        registry.register(
            "redis_master_writable",
            "1 when the Redis master accepted a write at the last scrape (a full master counts), else 0",
            master_writable.clone(),
        );
        let queue_lag = Gauge::default();
        registry.register(
            "queue_lag",
            "Tasks not yet delivered to any worker (the consumer group's lag, what KEDA's lagCount sees)",
            queue_lag.clone(),
        );
        let oldest_task_age = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register_with_unit(
            "queue_oldest_task_age",
            "Time the oldest task not yet applied has waited since it was queued; 0 when none waits",
            prometheus_client::registry::Unit::Seconds,
            oldest_task_age.clone(),
        );
        let auth_refusals = Family::<AuthRefusalLabels, Counter>::default();
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
        // Every known label value from the start, at 0: a rate over a series that appears only
        // with its first event misses that event, and dashboards show 0 rather than no data.
        for status in [TaskStatus::Applied, TaskStatus::Superseded, TaskStatus::Rejected, TaskStatus::Failed] {
            let _ = tasks_finished.get_or_create(&StatusLabels { status: status.as_str() });
        }
        for reason in RefusalLabels::REASONS {
            let _ = writes_refused.get_or_create(&RefusalLabels { reason });
        }
        for outcome in RoundLabels::OUTCOMES {
            let _ = replica_ack_rounds.get_or_create(&RoundLabels { outcome });
        }
        Self {
            registry,
            http_requests,
            http_duration,
            tasks_finished,
            task_retries,
            malformed_entries,
            writes_accepted,
            writes_refused,
            replica_ack_rounds,
            master_changes,
            master_writable,
            queue_lag,
            oldest_task_age,
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
    pub fn render(&self, stats: Option<&QueueStats>, memory: Option<&MemoryStats>, facts: &ScrapeFacts) -> String {
        self.master_writable.set(i64::from(facts.master_writable));
        // The connection layer counts; the counter follows it (it only grows).
        self.master_changes.inc_by(facts.master_changes.saturating_sub(self.master_changes.get()));
        if let Some(oldest) = facts.oldest_waiting_ms {
            self.oldest_task_age.set(oldest.unwrap_or(0) as f64 / 1000.0);
        }
        if let Some(m) = memory {
            self.redis_used_memory.set(m.used as i64);
            self.redis_maxmemory.set(m.max as i64);
            self.bookkeeping.set(m.bookkeeping as i64);
        }
        match stats {
            Some(s) => {
                self.queue_depth.set(s.depth() as i64);
                self.queue_lag.set(s.lag as i64);
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

/// `/metrics` (both binaries): the registry plus the figures read from Redis, concurrently and each
/// with a bound so a slow Redis does not stall the scrape (the figures are left out then).
#[poem::handler]
pub async fn serve(
    store: poem::web::Data<&Store>,
    metrics: poem::web::Data<&std::sync::Arc<Metrics>>,
) -> poem::Response {
    use poem::IntoResponse;
    let (stats, memory, oldest, writable) = tokio::join!(
        tokio::time::timeout(CHECK_TIMEOUT, store.queue_stats()),
        tokio::time::timeout(CHECK_TIMEOUT, store.memory_stats()),
        tokio::time::timeout(CHECK_TIMEOUT, store.oldest_waiting_ms()),
        tokio::time::timeout(CHECK_TIMEOUT, store.ping_writable()),
    );
    let stats = stats.ok().and_then(Result::ok);
    let facts = ScrapeFacts {
        oldest_waiting_ms: oldest.ok().and_then(Result::ok),
        master_writable: matches!(writable, Ok(Ok(()) | Err(StoreError::Full(_)))),
        master_changes: store.redis.master_changes(),
    };
    metrics
        .render(stats.as_ref(), memory.ok().and_then(Result::ok).as_ref(), &facts)
        .with_content_type("text/plain; version=0.0.4; charset=utf-8")
        .into_response()
}
