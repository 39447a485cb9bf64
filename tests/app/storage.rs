//! Redis memory: a full store (`maxmemory`, `noeviction`) answers 507 and recovers, the worker
//! finishes accepted writes while it is full, and kvq's bookkeeping stays bounded.

use std::time::Duration;

use crate::support::*;
use kvq::store::GROUP;
use serde_json::Value;

const MAXMEMORY: u64 = 8 * 1024 * 1024;

fn capped_redis() -> TestRedis {
    TestRedis::builder().args(&["--maxmemory", &MAXMEMORY.to_string(), "--maxmemory-policy", "noeviction"]).start()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_store_answers_507_keeps_accepted_writes_and_recovers_once_memory_is_freed() {
    let redis = capped_redis();
    let mut app = spawn_app(&redis, 0).await;
    // Accepted before Redis fills up, applied only after: none of them may be lost.
    for i in 0..20 {
        assert_eq!(app.put(&format!("backlog-{i}"), &format!("v{i}"), "").await.status(), 202);
    }
    let maxmemory = redis.fill_until_full("filler:");

    let r = app.put("new", "1", "").await;
    assert_eq!(r.headers().get("retry-after").map(|v| v.to_str().unwrap()), Some("1"), "507 has Retry-After");
    let p = assert_problem(r, 507, "maxmemory").await;
    assert!(p["detail"].as_str().unwrap().contains("full"), "{p}");
    // Not even a key that does not exist can be deleted: that would only add bookkeeping.
    assert_problem(app.delete("never-written", "").await, 507, "full").await;

    // Still ready: a full store is no reason to take pods out of service; the body says it.
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["store"], "full", "{body}");
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert_eq!(metric(&metrics, "kvq_redis_maxmemory_bytes"), maxmemory as f64);
    let used = metric(&metrics, "kvq_redis_used_memory_bytes");
    assert!(used > maxmemory as f64, "used memory {used} of {maxmemory}");
    assert!(metric(&metrics, "kvq_bookkeeping_bytes") > 0.0, "{metrics}");
    let m = Scrape::parse(&metrics);
    assert_eq!(m.value("kvq_writes_refused_total{reason=\"redis_full\"}"), 2.0, "the set and the delete refused");
    assert_eq!(m.value("kvq_redis_master_writable"), 1.0, "a full master is reachable: its alert is the memory one");

    // The worker finishes every accepted write although Redis is full.
    app.workers.push(spawn_worker(&app.settings, "worker-0").await);
    app.drain(Duration::from_secs(20)).await;
    for i in 0..20 {
        assert_eq!(app.value_of(&format!("backlog-{i}")).await, Some(format!("v{i}")), "backlog-{i}");
    }
    // A delete of a key that holds a value gets through, so clients can free space.
    let r = app.delete("backlog-0", "?wait=5").await;
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    assert_eq!(app.value_of("backlog-0").await, None);

    redis.free("filler:");
    let r = app.put("new", "1", "?wait=5").await;
    assert_eq!(r.status(), 200);
    assert_eq!(app.value_of("new").await.as_deref(), Some("1"));
    assert_eq!(app.get("/readyz").await.json::<Value>().await.unwrap(), serde_json::json!({"status": "ready"}));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_is_trimmed_to_near_empty_within_seconds_after_a_200k_backlog_drains() {
    let redis = TestRedis::start();
    let mut app = spawn_app(&redis, 0).await;
    app.store.ensure_group().await.unwrap();
    app.queue_backlog(200_000, 100).await;
    assert_eq!(redis.xlen(&app.store.shards.all()[0].stream), 200_000);
    app.workers.push(spawn_worker(&app.settings, "worker-0").await);
    app.drain(Duration::from_secs(300)).await;
    assert_eq!(app.value_of("key-99").await.as_deref(), Some("v199999"), "the last write won");
    // Every entry is acknowledged: one trim takes them all (approximate trimming may keep one
    // radix node, at most 100 entries).
    eventually(Duration::from_secs(3), "the stream to be trimmed", || async {
        (redis.xlen(&app.store.shards.all()[0].stream) <= 100).then_some(())
    })
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trim_removes_every_acknowledged_entry_and_keeps_every_pending_and_undelivered_one() {
    let redis = TestRedis::start();
    let app = spawn_app(&redis, 0).await;
    app.store.ensure_group().await.unwrap();
    app.queue_backlog(200_000, 100).await;
    let stream = app.store.shards.all()[0].stream.clone();
    let mut c = redis.conn();
    // 150,000 delivered, of which the first 100,000 acknowledged; 50,000 never delivered.
    let read: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(GROUP)
        .arg("test")
        .arg("COUNT")
        .arg(150_000)
        .arg("STREAMS")
        .arg(&stream)
        .arg(">")
        .query(&mut c)
        .unwrap();
    let ids: Vec<String> = read.keys[0].ids.iter().map(|e| e.id.clone()).collect();
    assert_eq!(ids.len(), 150_000);
    for chunk in ids[..100_000].chunks(10_000) {
        let _: u64 = redis::cmd("XACK").arg(&stream).arg(GROUP).arg(chunk).query(&mut c).unwrap();
    }

    app.store.trim_acknowledged(0).await.unwrap();
    let left = redis.xlen(&stream);
    assert!((100_000..=100_100).contains(&left), "{left} entries left; 100,000 are not acknowledged");
    let oldest_pending: redis::streams::StreamRangeReply =
        redis::cmd("XRANGE").arg(&stream).arg(&ids[100_000]).arg(&ids[100_000]).query(&mut c).unwrap();
    assert_eq!(oldest_pending.ids.len(), 1, "the oldest pending entry {} was trimmed", ids[100_000]);
    app.stop().await;
}

/// kvq's bookkeeping in `redis`: (what, keys, bytes) of task outcomes, idempotency keys,
/// attempts, tombstones and their index (`MEMORY USAGE`).
fn bookkeeping(redis: &TestRedis) -> Vec<(&'static str, u64, u64)> {
    let mut parts = vec![
        ("task outcomes", redis.usage("kvq:o:*")),
        ("idempotency keys", redis.usage("kvq:i:*")),
        ("attempts", redis.usage("kvq:att")),
        ("tombstone index", redis.usage("kvq:tombs")),
    ];
    let mut c = redis.conn();
    let data: Vec<String> = redis::cmd("KEYS").arg("kvq:k:*").query(&mut c).unwrap();
    let (mut n, mut bytes) = (0, 0);
    for k in data {
        let del: Option<String> = redis::cmd("HGET").arg(&k).arg("del").query(&mut c).unwrap();
        // the worker's trim may remove a tombstone between the two calls: nil, then not counted
        let usage: Option<u64> = redis::cmd("MEMORY").arg("USAGE").arg(&k).query(&mut c).unwrap();
        if let (Some("1"), Some(b)) = (del.as_deref(), usage) {
            n += 1;
            bytes += b;
        }
    }
    parts.push(("tombstones", (n, bytes)));
    parts.into_iter().map(|(what, (keys, bytes))| (what, keys, bytes)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookkeeping_stays_under_its_budget_after_many_more_writes_than_it_holds() {
    const BUDGET: u64 = 256 * 1024;
    let redis = TestRedis::start();
    let app = spawn_app_with(&redis, 1, &[("KVQ__TASKS__BOOKKEEPING_BYTES", &BUDGET.to_string())]).await;
    let put = |key: String, token: Option<String>| {
        let app = &app;
        async move {
            let headers: Vec<(&str, &str)> = token.as_deref().map(|t| ("Idempotency-Key", t)).into_iter().collect();
            let r = app.put_json(&key, serde_json::json!({"value": "x".repeat(100)}), "", &headers).await;
            assert_eq!(r.status(), 202, "{key}");
            r.json::<Value>().await.unwrap()["task_id"].as_str().unwrap().to_string()
        }
    };
    let first = put("hot-0".into(), None).await;
    // Overwrites of a few keys, create+delete churn of unique keys, unique Idempotency-Keys:
    // 6,002 tasks and 2,000 Idempotency-Keys, several times what the budget holds.
    for round in 0..100 {
        let mut batch = Vec::new();
        for i in 0..20 {
            batch.push(put(format!("hot-{i}"), None));
        }
        futures_util::future::join_all(batch).await;
        let mut batch = Vec::new();
        for i in 0..20 {
            batch.push(put(format!("churn-{round}-{i}"), Some(format!("token-{round}-{i}"))));
        }
        futures_util::future::join_all(batch).await;
        let deletes = (0..20).map(|i| app.delete(format!("churn-{round}-{i}").leak(), ""));
        for r in futures_util::future::join_all(deletes).await {
            assert_eq!(r.status(), 202);
        }
    }
    let last = put("hot-0".into(), None).await;
    app.drain(Duration::from_secs(60)).await;
    // the next trims tidy the tombstones the drain left behind
    eventually(Duration::from_secs(10), "tombstones to be tidied", || async {
        (bookkeeping(&redis).iter().find(|p| p.0 == "tombstones").unwrap().1 == 0).then_some(())
    })
    .await;

    let parts = bookkeeping(&redis);
    let total: u64 = parts.iter().map(|p| p.2).sum();
    eprintln!("bookkeeping after 6,002 tasks, budget {BUDGET}: {parts:?}, total {total}");
    assert!(total <= BUDGET, "bookkeeping takes {total} bytes, over its budget of {BUDGET}: {parts:?}");
    // each capped map: at most its buckets and its state hash
    let buckets = kvq::store::BUCKETS as u64 + 1;
    assert!(parts[0].1 <= buckets && parts[1].1 <= buckets, "{parts:?}");
    let caps = kvq::store::BookkeepingCaps::from_budget(BUDGET, 1);
    assert!(parts[0].2 <= caps.outcome_bucket_bytes * buckets, "task outcomes over their share: {parts:?}");
    assert!(parts[1].2 <= caps.idempotency_bucket_bytes * buckets, "idempotency keys over their share: {parts:?}");

    // The newest task is readable, the oldest is gone with a clear 404.
    let r = app.get(&format!("/v1/tasks/{last}")).await;
    assert_eq!(r.status(), 200);
    assert_problem(app.get(&format!("/v1/tasks/{first}")).await, 404, "task").await;
    app.stop().await;
}

/// A key written with a TTL leaves its sequence marker behind after it expires (so a late
/// redelivery of an older write cannot bring the value back); the marker must go once the queue
/// has nothing older left to deliver, not only after the task retention (a day by default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_keys_leave_nothing_behind_once_the_queue_is_past_them() {
    let redis = TestRedis::start();
    let app = spawn_app(&redis, 1).await;
    for i in 0..50 {
        let r = app.put_json(&format!("brief-{i}"), serde_json::json!({"value": "v", "ttl_seconds": 1}), "", &[]).await;
        assert_eq!(r.status(), 202);
    }
    app.drain(Duration::from_secs(20)).await;
    let markers = || redis::cmd("KEYS").arg("kvq:k:brief-*").query::<Vec<String>>(&mut redis.conn()).unwrap();
    assert_eq!(markers().len(), 50, "the values are there until they expire");
    // the worker trims every 5 s; the default retention would keep the markers a day
    eventually(Duration::from_secs(20), "the expired keys' markers to be tidied", || async {
        markers().is_empty().then_some(())
    })
    .await;
    let index: u64 = redis::cmd("ZCARD").arg("kvq:tombs").query(&mut redis.conn()).unwrap();
    assert_eq!(index, 0, "the tombstone index holds nothing for keys that are gone");
    app.stop().await;
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

/// A kvq from before the capped maps were rings numbered its buckets on and on; the buckets
/// past the ring (16 and up) would never be freed. Starting a worker drops them once, and the
/// maps go on in the ring.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buckets_an_older_kvq_left_past_the_ring_are_dropped_at_start() {
    let redis = TestRedis::start();
    let mut c = redis.conn();
    // outcomes at bucket 40 (buckets 25..=40 live), idempotency keys at bucket 20 (5..=20)
    for (base, newest) in [("kvq:o:", 40u64), ("kvq:i:", 20)] {
        let _: () =
            redis::cmd("HSET").arg(format!("{base}n")).arg("b").arg(newest).arg("used").arg(10).query(&mut c).unwrap();
        for n in newest - 15..=newest {
            let _: () = redis::cmd("HSET").arg(format!("{base}{n}")).arg("old").arg("x").query(&mut c).unwrap();
        }
    }
    let app = spawn_app(&redis, 1).await;
    assert_eq!(app.put("after", "1", "?wait=5").await.status(), 200);
    let keys: Vec<String> = redis::cmd("KEYS").arg("kvq:[oi]:*").query(&mut c).unwrap();
    let past_the_ring: Vec<&String> = keys
        .iter()
        .filter(|k| k.rsplit(':').next().and_then(|n| n.parse::<u64>().ok()).is_some_and(|n| n >= 16))
        .collect();
    assert!(past_the_ring.is_empty(), "buckets past the ring are left: {past_the_ring:?}");
    let ring: Vec<&String> = keys.iter().filter(|k| k.starts_with("kvq:i:") && *k != "kvq:i:n").collect();
    assert_eq!(ring.len(), 11, "buckets 5..=15 of the idempotency map are ring buckets and stay: {keys:?}");
    app.stop().await;
}
