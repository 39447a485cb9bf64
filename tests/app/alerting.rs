//! The chart's alerts end to end: a real Prometheus on loopback scrapes the real kvq binaries
//! with the rules the chart renders loaded, and an induced condition makes a real alert fire,
//! then resolve once it is cleared. The `for` durations are shortened (to 2 s), and a threshold
//! set through the chart's values where the default takes minutes, so the tests take seconds;
//! the expressions and selectors are the rendered ones.

use std::time::Duration;

use serde_json::Value;

use crate::support::chart::RELEASE;
use crate::support::prometheus::*;
use crate::support::*;

/// The rules rendered with `set`, with every `for` set to `for_`.
fn rules_with_short_for(set: &[&str], for_: &str) -> Value {
    let mut groups = rendered_rule_groups(set);
    for g in groups.as_array_mut().unwrap() {
        for r in g["rules"].as_array_mut().unwrap() {
            if r.get("for").is_some() {
                r["for"] = for_.into();
            }
        }
    }
    groups
}

/// A Prometheus scraping `kvq` under the job names the chart's ServiceMonitors give (the rules
/// select on them), with `groups` loaded, once it scrapes both.
async fn scraping(kvq: &Binaries, groups: &Value) -> TestPrometheus {
    let dir = tempfile::tempdir().unwrap();
    let rule_file = dir.path().join("rules.yaml");
    write_rule_file(&rule_file, groups);
    let prometheus = TestPrometheus::start(
        &[
            (&format!("{RELEASE}-server"), vec![format!("127.0.0.1:{}", kvq.server.port)]),
            (&format!("{RELEASE}-worker"), vec![format!("127.0.0.1:{}", kvq.worker.port)]),
        ],
        &rule_file,
    );
    prometheus.wait_ready(Duration::from_secs(30)).await;
    eventually(Duration::from_secs(30), "both kvq targets scraped", || async {
        (prometheus.query(&format!("up{{job=~\"{RELEASE}-.*\"}} == 1")).await.len() == 2).then_some(())
    })
    .await;
    prometheus
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_fires_its_alert_in_a_real_prometheus_and_clearing_it_resolves_it() {
    let redis = TestRedis::start();
    let kvq = Binaries::spawn(&redis.url(), &[]);
    let http = kvq.server.http(Duration::from_secs(10));
    http.wait_status("/readyz", 200, Duration::from_secs(15)).await;
    for i in 0..5 {
        assert_eq!(http.put(&format!("k{i}"), "v", "?wait=5").await.status(), 200);
    }

    let prometheus = scraping(&kvq, &rules_with_short_for(&[], "2s")).await;
    // A healthy kvq under the real rules: nothing fires.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(prometheus.firing_names().await, Default::default(), "alerts on a healthy kvq");

    // An entry that is no valid task: the worker moves it to the dead-letter stream.
    let _: String = redis::cmd("XADD").arg("kvq:tasks").arg("*").arg("junk").arg("1").query(&mut redis.conn()).unwrap();
    let alert =
        eventually(Duration::from_secs(60), "KvqDeadLetters firing", || prometheus.firing("KvqDeadLetters")).await;
    assert_eq!(alert["labels"]["severity"], "warning");
    let description = alert["annotations"]["description"].as_str().unwrap();
    assert!(description.starts_with("1 accepted writes"), "the value is rendered: {description}");
    assert!(alert["annotations"]["runbook_url"].as_str().unwrap().ends_with("docs/runbook.md#kvqdeadletters"));
    assert_eq!(
        prometheus.firing_names().await,
        ["KvqDeadLetters".to_string()].into(),
        "the dead letter and nothing else"
    );

    // The operator removes it, as the runbook says: the alert resolves.
    let ids: Vec<(String, Vec<(String, String)>)> =
        redis::cmd("XRANGE").arg("kvq:dlq").arg("-").arg("+").query(&mut redis.conn()).unwrap();
    assert_eq!(ids.len(), 1);
    let _: u64 = redis::cmd("XDEL").arg("kvq:dlq").arg(&ids[0].0).query(&mut redis.conn()).unwrap();
    eventually(Duration::from_secs(60), "KvqDeadLetters resolved", || async {
        prometheus.alerts().await.iter().all(|a| a["labels"]["alertname"] != "KvqDeadLetters").then_some(())
    })
    .await;
}

/// The worker stopped while writes keep coming: the age of the oldest waiting write crosses the
/// threshold (set to 3 s through the chart's value) and `KvqQueueTaskOld` fires; a new worker
/// drains the backlog and the alert resolves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_worker_fires_the_task_age_alert_and_a_new_worker_resolves_it() {
    let redis = TestRedis::start();
    let mut kvq = Binaries::spawn(&redis.url(), &[]);
    let http = kvq.server.http(Duration::from_secs(10));
    http.wait_status("/readyz", 200, Duration::from_secs(15)).await;
    assert_eq!(http.put("before", "v", "?wait=5").await.status(), 200);
    let groups = rules_with_short_for(&["prometheusRule.alerts.oldestTaskAgeWarningSeconds=3"], "2s");
    let prometheus = scraping(&kvq, &groups).await;

    assert_eq!(kvq.worker.terminate(), Some(0));
    for i in 0..10 {
        assert_eq!(http.put(&format!("k{i}"), "v", "").await.status(), 202);
    }
    let alert =
        eventually(Duration::from_secs(60), "KvqQueueTaskOld firing", || prometheus.firing("KvqQueueTaskOld")).await;
    assert_eq!(alert["labels"]["severity"], "warning");
    assert!(alert["annotations"]["summary"].as_str().unwrap().contains("longer than 3 s"), "{alert}");
    assert!(prometheus.firing("KvqQueueTaskVeryOld").await.is_none(), "600 s are not reached");

    let _worker = KvqProcess::worker("worker-1", &[("KVQ__REDIS__URL", redis.url())]);
    eventually(Duration::from_secs(60), "KvqQueueTaskOld resolved", || async {
        prometheus.alerts().await.iter().all(|a| a["labels"]["alertname"] != "KvqQueueTaskOld").then_some(())
    })
    .await;
    assert_eq!(http.value_of("k9").await.as_deref(), Some("v"), "the backlog was applied");
}
