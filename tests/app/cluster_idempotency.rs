//! Idempotency-Keys in cluster mode: a token is claimed in the shard it maps to itself, so it is
//! refused for a different request whichever shard that request's key lives in, while a retry
//! of the same request still returns its first task.

use crate::support::redis_cluster::TestCluster;
use crate::support::*;
use kvq::store::shard_of;
use serde_json::{json, Value};

/// A key `prefix-n` whose shard (of `shards`) satisfies `wanted`.
fn key_in(prefix: &str, shards: usize, wanted: impl Fn(usize) -> bool) -> String {
    (0..).map(|n| format!("{prefix}-{n}")).find(|k| wanted(shard_of(k, shards))).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_refused_for_another_request_whichever_shard_its_key_is_in() {
    let cluster = TestCluster::start();
    let env = cluster.kvq_env();
    let extra: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let app = spawn_app_settings(test_settings("redis://unused:1", &extra), 1).await;
    let shards = app.store.shards.len();
    assert!(shards > 1, "cluster mode has shards");

    let token = "token-a";
    let home = shard_of(token, shards);
    let first = key_in("first", shards, |s| s != home);
    let elsewhere = key_in("other", shards, |s| s != home && s != shard_of(&first, shards));
    let at_home = key_in("home", shards, |s| s == home);
    let put = |key: String, value: &'static str| {
        let app = &app;
        async move { app.put_json(&key, json!({ "value": value }), "", &[("Idempotency-Key", token)]).await }
    };

    let r = put(first.clone(), "1").await;
    assert_eq!(r.status(), 202);
    let task: Value = r.json().await.unwrap();
    let r = put(first.clone(), "1").await;
    assert_eq!(r.status(), 202, "a retry of the same request");
    let again: Value = r.json().await.unwrap();
    assert_eq!(again["task_id"], task["task_id"], "the retry returns the first task");

    for (what, key) in [("a key in a third shard", elsewhere), ("a key in the token's own shard", at_home)] {
        let p = assert_problem(put(key.clone(), "1").await, 422, "Idempotency-Key").await;
        let detail = p["detail"].as_str().unwrap();
        assert!(detail.contains(task["task_id"].as_str().unwrap()), "{what}: names the first task: {detail}");
        assert_eq!(app.get(&format!("/v1/keys/{key}")).await.status(), 404, "{what}: nothing was written");
    }
    let p = assert_problem(put(first.clone(), "2").await, 422, "Idempotency-Key").await;
    assert!(p["detail"].as_str().unwrap().contains("different request"), "{p}");
    app.drain(std::time::Duration::from_secs(10)).await;
    assert_eq!(app.value_of(&first).await.as_deref(), Some("1"));
    app.stop().await;
}
