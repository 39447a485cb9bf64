//! The figures operators alert on, read from `/metrics` after real traffic: the backlog split
//! into lag (undelivered) and pending, the age of the oldest waiting task, and writes accepted
//! or refused by reason.

use std::time::Duration;

use std::collections::BTreeSet;

use crate::support::chart::{dashboard_exprs, rendered_dashboard};
use crate::support::prometheus::{alert_rules, rendered_rule_groups};
use crate::support::*;
use kvq::store::GROUP;

fn metrics_url(app: &TestApp) -> String {
    format!("{}/metrics", app.base)
}

/// Entries read by a consumer that is no worker: they stay pending on it.
fn deliver(redis: &TestRedis, consumer: &str, count: usize) -> Vec<String> {
    let reply: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(GROUP)
        .arg(consumer)
        .arg("COUNT")
        .arg(count)
        .arg("STREAMS")
        .arg("kvq:tasks")
        .arg(">")
        .query(&mut redis.conn())
        .unwrap();
    reply.keys.into_iter().flat_map(|k| k.ids).map(|e| e.id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backlog_is_split_into_lag_and_pending_and_its_oldest_task_ages() {
    let redis = TestRedis::start();
    let mut app = spawn_app(&redis, 0).await;
    assert_eq!(app.put("first", "1", "").await.status(), 202);
    tokio::time::sleep(Duration::from_secs(4)).await;
    for key in ["second", "third"] {
        assert_eq!(app.put(key, "1", "").await.status(), 202);
    }

    let m = scrape(&metrics_url(&app)).await;
    assert_eq!(m.value("kvq_writes_accepted_total"), 3.0);
    assert_eq!(m.value("kvq_queue_lag"), 3.0, "nothing delivered yet");
    assert_eq!(m.value("kvq_queue_pending"), 0.0);
    let age = m.value("kvq_queue_oldest_task_age_seconds");
    assert!((4.0..60.0).contains(&age), "the first write waits since 4 s: {age}");
    assert_eq!(m.value("kvq_redis_master_writable"), 1.0);

    // One entry handed to a consumer and not acknowledged: pending, no longer lag, and still
    // the oldest waiting.
    app.store.ensure_group().await.unwrap();
    let first = deliver(&redis, "stuck", 1);
    let m = scrape(&metrics_url(&app)).await;
    assert_eq!((m.value("kvq_queue_lag"), m.value("kvq_queue_pending")), (2.0, 1.0));
    assert!(m.value("kvq_queue_oldest_task_age_seconds") >= 4.0, "{}", m.text);

    // Acknowledged, it no longer waits although it stays in the stream until a worker trims
    // it: the age is the younger writes'.
    let _: u64 = redis::cmd("XACK").arg("kvq:tasks").arg(GROUP).arg(&first).query(&mut redis.conn()).unwrap();
    assert_eq!(redis.xlen("kvq:tasks"), 3, "the acknowledged entry is still the stream's head");
    let m = scrape(&metrics_url(&app)).await;
    let age = m.value("kvq_queue_oldest_task_age_seconds");
    assert!(age < 3.0, "the oldest waiting write is 4 s younger than the acknowledged one: {age}");
    assert_eq!((m.value("kvq_queue_lag"), m.value("kvq_queue_pending")), (2.0, 0.0));

    app.workers.push(spawn_worker(&app.settings, "worker-0").await);
    app.drain(Duration::from_secs(20)).await;
    let m = scrape(&metrics_url(&app)).await;
    assert_eq!(m.value("kvq_queue_oldest_task_age_seconds"), 0.0, "nothing waits");
    assert_eq!(m.value("kvq_queue_lag"), 0.0);
    let worker = scrape(&format!("http://127.0.0.1:{}/metrics", app.workers[0].port)).await;
    assert_eq!(worker.value("kvq_tasks_finished_total{status=\"applied\"}"), 2.0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_refused_without_a_master_are_counted_by_reason() {
    let mut redis = TestRedis::start();
    let app = spawn_app(&redis, 0).await;
    assert_eq!(app.put("before", "1", "").await.status(), 202);
    redis.kill();
    assert_problem(app.put("during", "1", "").await, 503, "unavailable").await;

    let m = scrape(&metrics_url(&app)).await;
    assert_eq!(m.value("kvq_writes_refused_total{reason=\"redis_unavailable\"}"), 1.0);
    assert_eq!(m.value("kvq_writes_accepted_total"), 1.0, "the refused write was not counted as accepted");
    assert_eq!(m.value("kvq_redis_master_writable"), 0.0);

    redis.restart();
    let m = eventually(Duration::from_secs(15), "the master writable again", || async {
        let m = scrape(&metrics_url(&app)).await;
        (m.get("kvq_redis_master_writable") == Some(1.0)).then_some(m)
    })
    .await;
    assert_eq!(m.value("kvq_writes_refused_total{reason=\"redis_unavailable\"}"), 1.0);
    app.stop().await;
}

/// Every `kvq_*` metric an alert or a dashboard panel of the chart queries is one the real
/// binaries serve (after traffic, with replica acknowledgements on): a renamed or removed metric
/// must not leave an alert that can never fire or a panel that shows nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_alerts_and_the_dashboard_query_is_served_by_the_binaries() {
    let master = TestRedis::start();
    let _replica = TestRedis::builder().replica_of(&master).start();
    let kvq = Binaries::spawn(&master.url(), &[("KVQ__REDIS__MIN_REPLICAS_ACK", "1".into())]);
    let http = kvq.server.http(Duration::from_secs(10));
    http.wait_status("/readyz", 200, Duration::from_secs(15)).await;
    eventually(Duration::from_secs(15), "a write confirmed by the replica and applied", || async {
        (http.put("seen", "1", "?wait=5").await.status() == 200).then_some(())
    })
    .await;
    assert_eq!(http.value_of("seen").await.as_deref(), Some("1"));
    assert_eq!(http.delete("seen", "?wait=5").await.status(), 200);

    let mut served = BTreeSet::new();
    for url in [kvq.server.url("/metrics"), kvq.worker.url("/metrics")] {
        served.extend(scrape(&url).await.names());
    }
    let name = regex::Regex::new(r"\bkvq_[a-z0-9_]+").unwrap();
    let mut queried: Vec<(String, String)> = Vec::new();
    let groups = rendered_rule_groups(&[]);
    for rule in alert_rules(&groups) {
        let expr = rule["expr"].as_str().unwrap();
        queried.extend(name.find_iter(expr).map(|m| (m.as_str().to_string(), format!("alert {}", rule["alert"]))));
    }
    for expr in dashboard_exprs(&rendered_dashboard(&[])) {
        queried.extend(name.find_iter(&expr).map(|m| (m.as_str().to_string(), format!("dashboard query {expr}"))));
    }
    let distinct: BTreeSet<&str> = queried.iter().map(|(n, _)| n.as_str()).collect();
    assert!(distinct.len() >= 15, "the alerts and the dashboard query {distinct:?}");
    let missing: Vec<&(String, String)> = queried.iter().filter(|(n, _)| !served.contains(n)).collect();
    assert!(missing.is_empty(), "queried but not served: {missing:#?}\nserved: {served:#?}");
}
