//! The worker's KEDA ScaledObject against a real Redis: the trigger the chart renders reads a
//! backlog as a scale-out signal (the consumer group's lag, as KEDA's redis-streams scaler reads
//! it), where pending entries see nothing, and kvq exposes the same lag as `kvq_queue_lag`.

use std::time::Duration;

use serde_json::Value;

use crate::support::chart::render;
use crate::support::*;

/// The consumer group's `lag` as KEDA's lagCount scaler reads it: `XINFO GROUPS <stream>`, the
/// entry of `<group>`. None when the stream or the group does not exist.
fn group_field(redis: &TestRedis, stream: &str, group: &str, field: &str) -> Option<u64> {
    let groups: Vec<redis::Value> = redis::cmd("XINFO").arg("GROUPS").arg(stream).query(&mut redis.conn()).ok()?;
    for g in groups {
        let redis::Value::Array(items) = g else { continue };
        let text = |v: &redis::Value| match v {
            redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
            redis::Value::SimpleString(s) => s.clone(),
            redis::Value::Int(i) => i.to_string(),
            _ => String::new(),
        };
        let fields: Vec<(String, String)> = items.chunks(2).map(|p| (text(&p[0]), text(&p[1]))).collect();
        if fields.iter().any(|(k, v)| k == "name" && v == group) {
            return fields.iter().find(|(k, _)| k == field).and_then(|(_, v)| v.parse().ok());
        }
    }
    None
}

/// The replicas KEDA asks for from one trigger's figure: inactive (at or below the activation
/// value) lets it scale to `min`, which may be 0; active, the HPA's average-value rule
/// `ceil(value / target)` within `[max(min, 1), max]`.
fn desired_replicas(value: u64, target: u64, activation: u64, min: u64, max: u64) -> u64 {
    if value <= activation {
        return min;
    }
    value.div_ceil(target).clamp(min.max(1), max)
}

fn number(v: &Value) -> u64 {
    v.as_str().map(|s| s.parse().unwrap()).or_else(|| v.as_u64()).unwrap_or_else(|| panic!("not a number: {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_is_a_scale_out_signal_on_the_lag_where_pending_entries_see_none() {
    let m = render(
        &["helm/kvq/ci/keda-values.yaml"],
        &["worker.keda.minReplicaCount=0", "worker.keda.pendingEntriesCount=100"],
    );
    let so = &m.of_kind("ScaledObject")[0]["spec"];
    let (min, max) = (number(&so["minReplicaCount"]), number(&so["maxReplicaCount"]));
    let lag_trigger = &so["triggers"][0]["metadata"];
    let pending_trigger = &so["triggers"][1]["metadata"];
    let stream = lag_trigger["stream"].as_str().unwrap().to_string();
    let group = lag_trigger["consumerGroup"].as_str().unwrap().to_string();
    let (target, activation) = (number(&lag_trigger["lagCount"]), number(&lag_trigger["activationLagCount"]));
    let pending_target = number(&pending_trigger["pendingEntriesCount"]);

    let redis = TestRedis::start();
    let mut app = spawn_app(&redis, 0).await;
    // Scaled to zero after an earlier run: the group exists, nothing waits.
    app.store.ensure_group().await.unwrap();
    let lag = group_field(&redis, &stream, &group, "lag").expect("the trigger's stream and group are kvq's");
    assert_eq!(desired_replicas(lag, target, activation, min, max), 0, "idle: stays at zero");

    app.queue_backlog(2000, 50).await;
    let lag = group_field(&redis, &stream, &group, "lag").unwrap();
    let pending = group_field(&redis, &stream, &group, "pending").unwrap();
    assert_eq!((lag, pending), (2000, 0));
    let wanted = desired_replicas(lag, target, activation, min, max);
    assert_eq!(wanted, max.min(2000u64.div_ceil(target)), "the backlog asks for workers");
    assert!(wanted >= 1);
    assert_eq!(
        desired_replicas(pending, pending_target, 0, min, max),
        0,
        "with no worker nothing is pending: a pending-entries trigger alone would never wake one"
    );
    // kvq exposes what KEDA sees, for the dashboard, the alerts and the HPA-less path.
    let metrics = scrape(&format!("{}/metrics", app.base)).await;
    assert_eq!(metrics.value("kvq_queue_lag"), lag as f64);

    // The workers KEDA starts drain it; the signal drops back and lets it scale to zero.
    app.workers.push(spawn_worker(&app.settings, "worker-0").await);
    app.drain(Duration::from_secs(60)).await;
    let lag = group_field(&redis, &stream, &group, "lag").unwrap();
    assert_eq!(desired_replicas(lag, target, activation, min, max), 0);
    assert_eq!(scrape(&format!("{}/metrics", app.base)).await.value("kvq_queue_lag"), 0.0);
    app.stop().await;
}
