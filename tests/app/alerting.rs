//! The chart's alerts end to end: a real Prometheus on loopback scrapes the real kvq binaries
//! with the rules the chart renders loaded, and an induced condition makes a real alert fire,
//! then resolve once it is cleared. Only the `for` durations are shortened (to 2 s), so the
//! test takes seconds instead of minutes; the expressions, thresholds and selectors are the
//! rendered ones.

use std::time::Duration;

use serde_json::Value;

use crate::support::chart::RELEASE;
use crate::support::prometheus::*;
use crate::support::*;

/// The rendered rules with every `for` set to `for_`.
fn rules_with_short_for(for_: &str) -> Value {
    let mut groups = rendered_rule_groups(&[]);
    for g in groups.as_array_mut().unwrap() {
        for r in g["rules"].as_array_mut().unwrap() {
            if r.get("for").is_some() {
                r["for"] = for_.into();
            }
        }
    }
    groups
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

    let dir = tempfile::tempdir().unwrap();
    let rule_file = dir.path().join("rules.yaml");
    write_rule_file(&rule_file, &rules_with_short_for("2s"));
    // The job names the chart's ServiceMonitors give: the rules select on them.
    let prometheus = TestPrometheus::start(
        &[
            (&format!("{RELEASE}-server"), vec![format!("127.0.0.1:{}", kvq.server.port)]),
            (&format!("{RELEASE}-worker"), vec![format!("127.0.0.1:{}", kvq.worker.port)]),
        ],
        &rule_file,
    );
    prometheus.wait_ready(Duration::from_secs(30)).await;
    eventually(Duration::from_secs(30), "both kvq targets scraped", || async {
        (prometheus.query("up{job=~\"kvq-.*\"} == 1").await.len() == 2).then_some(())
    })
    .await;
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
