//! Queue semantics (README "Architecture") against a real Redis: order, at-least-once with reclaim,
//! idempotent redelivery, dead letters, and races between conditional writes.

use std::collections::HashMap;
use std::time::Duration;

use crate::support::*;
use kvq::domain::{Key, Op, TaskStatus, WriteRequest};
use kvq::store::StreamTask;
use serde_json::{json, Value};

pub(crate) fn write(key: &str, value: &str) -> WriteRequest {
    WriteRequest {
        op: Op::Set,
        key: Key::parse(key).unwrap(),
        value: Some(value.into()),
        ttl_seconds: None,
        if_match: None,
        if_none_match: false,
        idempotency_key: None,
        notify: false,
    }
}

/// The acceptance order of a task: its stream id, which its task id stands for.
fn task_seq(id: &str) -> (u64, u64) {
    let seq = kvq::store::stream_id_of(id).unwrap().1;
    let (ms, n) = seq.split_once('-').unwrap();
    (ms.parse().unwrap(), n.parse().unwrap())
}

async fn apply_one(app: &TestApp, t: &StreamTask) -> kvq::store::Applied {
    let mut outcomes = app.store.apply(std::slice::from_ref(t), 60_000).await.unwrap();
    assert_eq!(outcomes.len(), 1);
    outcomes.pop().unwrap().expect("applied")
}

async fn read_as(app: &TestApp, consumer: &str, count: usize) -> Vec<StreamTask> {
    app.store.ensure_group().await.unwrap();
    let mut conn = app.store.redis.dedicated(Some(Duration::from_secs(5))).await.unwrap();
    let delivered = app.store.read_new(&mut conn, 0, consumer, count, 100).await.unwrap();
    assert!(delivered.malformed.is_empty(), "{:?}", delivered.malformed);
    delivered.tasks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_and_four_workers_end_at_the_last_accepted_write() {
    let redis = TestRedis::start();
    let app = spawn_app(&redis, 4).await;
    let keys = ["k0", "k1", "k2", "k3", "k4"];
    let mut writers = Vec::new();
    for w in 0..8 {
        let client = app.client.clone();
        let base = app.base.clone();
        writers.push(tokio::spawn(async move {
            let mut accepted = Vec::new();
            for i in 0..40 {
                let key = keys[(w + i) % keys.len()];
                let value = format!("w{w}-{i}");
                let r =
                    client.put(format!("{base}/v1/keys/{key}")).json(&json!({ "value": value })).send().await.unwrap();
                assert_eq!(r.status(), 202);
                let b: Value = r.json().await.unwrap();
                accepted.push((key, value, b["task_id"].as_str().unwrap().to_string()));
            }
            accepted
        }));
    }
    let mut all = Vec::new();
    for w in writers {
        all.extend(w.await.unwrap());
    }
    app.drain(Duration::from_secs(30)).await;

    let mut by_key: HashMap<&str, Vec<Accepted>> = HashMap::new();
    for (key, value, id) in &all {
        by_key.entry(key).or_default().push((task_seq(id), value.clone(), id.clone()));
    }
    for (key, mut writes) in by_key {
        assert_key_ends_at_its_last_accepted_write(&app, key, &mut writes).await;
    }
    app.stop().await;
}

/// (acceptance order: the stream id's ms and sequence, value, task id) of one accepted write
pub(crate) type Accepted = ((u64, u64), String, String);

/// Once the queue has drained: `key` holds the value of its last accepted write, which is
/// applied; every other write of it is applied or superseded, and the applied ones, in
/// acceptance order, have strictly increasing versions.
pub(crate) async fn assert_key_ends_at_its_last_accepted_write(app: &TestApp, key: &str, writes: &mut [Accepted]) {
    writes.sort();
    let (_, last_value, last_id) = writes.last().unwrap();
    assert_eq!(app.value_of(key).await.as_deref(), Some(last_value.as_str()), "{key} ends at its last accepted write");
    let mut last_version = 0;
    for (_, _, id) in writes.iter() {
        let t = app.store.get_task(id).await.unwrap().unwrap();
        assert!(matches!(t.status, TaskStatus::Applied | TaskStatus::Superseded), "{t:?}");
        if t.status == TaskStatus::Applied {
            let v = t.version.unwrap();
            assert!(v > last_version, "{key}: versions increase in acceptance order");
            last_version = v;
        }
    }
    assert_eq!(app.store.get_task(last_id).await.unwrap().unwrap().status, TaskStatus::Applied, "{key}");
}

#[tokio::test]
async fn tasks_of_a_dead_worker_are_reclaimed_and_applied_once_in_effect() {
    let redis = TestRedis::start();
    let app = spawn_app(&redis, 0).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(app.store.enqueue(&write(&format!("r{i}"), &format!("v{i}"))).await.unwrap().task_id);
    }
    // A worker reads everything, applies half, and dies before finishing the rest.
    let taken = read_as(&app, "doomed", 100).await;
    assert_eq!(taken.len(), 20);
    for t in &taken[..10] {
        apply_one(&app, t).await;
    }
    let version_before: u64 = redis::cmd("GET").arg("kvq:ver").query(&mut redis.conn()).unwrap();
    assert_eq!(version_before, 10);
    let pending = app.store.queue_stats().await.unwrap().pending;
    assert_eq!(pending, 10, "unfinished tasks stay pending on the dead consumer");

    let worker = spawn_worker(&app.settings, "rescuer").await;
    app.drain(Duration::from_secs(10)).await;
    for (i, id) in ids.iter().enumerate() {
        let t = app.store.get_task(id).await.unwrap().unwrap();
        assert_eq!(t.status, TaskStatus::Applied, "task {i}");
        assert_eq!(app.value_of(&format!("r{i}")).await, Some(format!("v{i}")));
    }
    let version_after: u64 = redis::cmd("GET").arg("kvq:ver").query(&mut redis.conn()).unwrap();
    assert_eq!(version_after, 20, "each write applied exactly once");

    // A late redelivery of an applied task is a no-op that reports the first outcome.
    let again = apply_one(&app, &taken[3]).await;
    assert_eq!(again.status, TaskStatus::Applied);
    let v3 = app.store.get_value("r3").await.unwrap().unwrap().version;
    assert_eq!(again.version, Some(v3));
    let version_end: u64 = redis::cmd("GET").arg("kvq:ver").query(&mut redis.conn()).unwrap();
    assert_eq!(version_end, 20);
    worker.stop().await;
    app.stop().await;
}

/// A `kvq-worker` process killed with SIGKILL while tasks are pending on it: another worker
/// reclaims them, and every task takes effect exactly once (one version each).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_process_killed_while_holding_tasks_loses_nothing() {
    let redis = TestRedis::start();
    let app = spawn_app(&redis, 0).await;
    let env = [
        ("KVQ__REDIS__URL", redis.url()),
        ("KVQ__WORKER__CONCURRENCY", "1".to_string()),
        ("KVQ__WORKER__CLAIM_IDLE_MS", "300".to_string()),
    ];
    let mut victim = KvqProcess::worker("victim", &env);
    victim.http(Duration::from_secs(5)).wait_status("/readyz", 200, Duration::from_secs(10)).await;
    // Frozen in its blocking read, the victim is handed the first write and cannot finish it.
    victim.freeze_in_blocking_read(&redis).await;
    let mut ids = Vec::new();
    for i in 0..300 {
        ids.push(app.store.enqueue(&write(&format!("a{i}"), &format!("v{i}"))).await.unwrap().task_id);
    }
    let held = redis.pending_on("victim");
    assert!(!held.is_empty(), "the victim holds tasks when it is killed");
    victim.kill9();
    assert_eq!(redis.pending_on("victim"), held, "a crash leaves its tasks pending");

    let _rescuer = KvqProcess::worker("rescuer", &env);
    app.drain(Duration::from_secs(20)).await;
    assert!(redis.pending_on("victim").is_empty(), "the victim's tasks were reclaimed");
    for (i, id) in ids.iter().enumerate() {
        let t = app.store.get_task(id).await.unwrap().unwrap();
        assert_eq!(t.status, TaskStatus::Applied, "task {i}: {t:?}");
        assert_eq!(t.attempts, 1, "task {i}: {t:?}");
        assert_eq!(app.value_of(&format!("a{i}")).await, Some(format!("v{i}")));
    }
    let version: u64 = redis::cmd("GET").arg("kvq:ver").query(&mut redis.conn()).unwrap();
    assert_eq!(version, 300, "each write applied exactly once");
    app.stop().await;
}

#[tokio::test]
async fn an_older_write_applied_after_a_newer_one_is_superseded() {
    let redis = TestRedis::start();
    let app = spawn_app(&redis, 0).await;
    // The older write's client waits; it must learn its write lost (409).
    let waiting = {
        let client = app.client.clone();
        let url = app.url("/v1/keys/race?wait=10");
        tokio::spawn(async move { client.put(url).json(&json!({"value": "older"})).send().await.unwrap() })
    };
    eventually(Duration::from_secs(5), "the first write to be queued", || async {
        (app.store.queue_stats().await.ok()?.lag == 1).then_some(())
    })
    .await;
    assert_eq!(app.put("race", "newer", "").await.status(), 202);
    let tasks = read_as(&app, "x", 10).await;
    assert_eq!(tasks.len(), 2);
    let newer = apply_one(&app, &tasks[1]).await;
    assert_eq!(newer.status, TaskStatus::Applied);
    let older = apply_one(&app, &tasks[0]).await;
    assert_eq!(older.status, TaskStatus::Superseded);
    assert_eq!(app.value_of("race").await.as_deref(), Some("newer"));
    let r = waiting.await.unwrap();
    assert_eq!(r.status(), 409);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["task"]["status"], "superseded");
    app.stop().await;
}

#[tokio::test]
async fn a_poison_task_ends_in_the_dead_letter_stream_as_failed() {
    let redis = TestRedis::start();
    let app = spawn_app_with(&redis, 1, &[("KVQ__WORKER__MAX_ATTEMPTS", "3")]).await;
    // Someone overwrote kvq's hash with a plain string: every apply fails with WRONGTYPE.
    let _: () = redis::cmd("SET").arg("kvq:k:poison").arg("oops").query(&mut redis.conn()).unwrap();
    let r = app.put("poison", "x", "?wait=15").await;
    assert_eq!(r.status(), 500);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["task"]["status"], "failed");
    assert_eq!(b["task"]["attempts"], 3);
    assert!(b["task"]["error"].as_str().unwrap().contains("WRONGTYPE"), "{b}");
    let id = b["task"]["id"].as_str().unwrap().to_string();
    let t: Value = app.get(&format!("/v1/tasks/{id}")).await.json().await.unwrap();
    assert_eq!(t["status"], "failed");

    let dlq: redis::Value = redis::cmd("XRANGE").arg("kvq:dlq").arg("-").arg("+").query(&mut redis.conn()).unwrap();
    let text = format!("{dlq:?}");
    let seq = kvq::store::stream_id_of(&id).unwrap().1;
    assert!(text.contains(&format!("\"{seq}\"")) && text.contains("WRONGTYPE"), "{text}");
    let stats = app.store.queue_stats().await.unwrap();
    assert_eq!((stats.dead_letters, stats.pending), (1, 0));
    // The worker is not stuck: other writes still apply.
    assert_eq!(app.put("healthy", "y", "?wait=5").await.status(), 200);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_and_set_races_have_exactly_one_winner() {
    let redis = TestRedis::start();
    let app = spawn_app(&redis, 4).await;
    for round in 0..15 {
        let key = format!("cas{round}");
        let t: Value = app.put(&key, "start", "?wait=5").await.json().await.unwrap();
        let version = t["version"].as_u64().unwrap();
        let etag = format!("\"{version}\"");
        let cond = [("If-Match", etag.as_str())];
        let (a, b) = tokio::join!(
            app.put_json(&key, json!({"value": "A"}), "?wait=10", &cond),
            app.put_json(&key, json!({"value": "B"}), "?wait=10", &cond),
        );
        let mut codes = [a.status().as_u16(), b.status().as_u16()];
        codes.sort();
        assert!(codes == [200, 409] || codes == [200, 412], "round {round}: {codes:?}");
        let winner = if a.status() == 200 { "A" } else { "B" };
        assert_eq!(app.value_of(&key).await.as_deref(), Some(winner));
    }
    for round in 0..15 {
        let key = format!("inm{round}");
        let (a, b) = tokio::join!(
            app.put_json(&key, json!({"value": "A"}), "?wait=10", &[("If-None-Match", "*")]),
            app.put_json(&key, json!({"value": "B"}), "?wait=10", &[("If-None-Match", "*")]),
        );
        let mut codes = [a.status().as_u16(), b.status().as_u16()];
        codes.sort();
        assert!(codes == [200, 409] || codes == [200, 412], "round {round}: {codes:?}");
    }
    app.stop().await;
}

#[tokio::test]
async fn acknowledged_entries_are_trimmed_from_the_stream() {
    let redis = TestRedis::start();
    let app = spawn_app(&redis, 0).await;
    for i in 0..500 {
        app.store.enqueue(&write(&format!("t{i}"), "x")).await.unwrap();
    }
    let w = step_worker(&app.settings, "stepper");
    while let kvq::worker::Step::Executed(_) = w.try_execute_tasks().await.unwrap() {}
    app.store.enqueue(&write("pending", "held")).await.unwrap();
    let held = read_as(&app, "holder", 10).await; // delivered, not acknowledged
    assert_eq!(held.len(), 1);
    let id = held[0].stream_id.clone();
    app.store.trim_acknowledged(0).await.unwrap();
    let len = redis.xlen("kvq:tasks");
    assert!(len < 500, "acknowledged entries trimmed, got {len}");
    let entry: Vec<(String, HashMap<String, String>)> =
        redis::cmd("XRANGE").arg("kvq:tasks").arg(&id).arg(&id).query(&mut redis.conn()).unwrap();
    assert_eq!(entry.len(), 1, "the pending entry itself survives the trim");
    // ... and can still be reclaimed and applied.
    tokio::time::sleep(Duration::from_millis(400)).await; // past claim_idle_ms
    let outcomes = match w.try_execute_tasks().await.unwrap() {
        kvq::worker::Step::Executed(outcomes) => outcomes,
        other => panic!("the pending entry was not reclaimed: {other:?}"),
    };
    assert_eq!(outcomes.len(), 1);
    assert_eq!(outcomes[0].status, TaskStatus::Applied);
    assert_eq!(app.value_of("pending").await.as_deref(), Some("held"));
    assert!(redis.pending_on("holder").is_empty());
    app.stop().await;
}

#[tokio::test]
async fn a_plain_set_after_a_delete_or_a_ttl_write_is_permanent_and_listed() {
    let redis = TestRedis::start();
    let app = spawn_app(&redis, 1).await;
    let ttl = |key: &str| -> i64 { redis::cmd("TTL").arg(format!("kvq:k:{key}")).query(&mut redis.conn()).unwrap() };
    assert_eq!(app.put("t", "1", "?wait=5").await.status(), 200);
    assert_eq!(app.delete("t", "?wait=5").await.status(), 200);
    assert!(ttl("t") > 0, "a tombstone expires");
    assert_eq!(app.put("t", "2", "?wait=5").await.status(), 200);
    assert_eq!(ttl("t"), -1, "the new value must not inherit the tombstone's expiry");
    let r = app.put_json("e", json!({"value": "1", "ttl_seconds": 100}), "?wait=5", &[]).await;
    assert_eq!(r.status(), 200);
    assert!(ttl("e") > 100, "kept past expiry for late redeliveries");
    assert_eq!(app.put("e", "2", "?wait=5").await.status(), 200);
    assert_eq!(ttl("e"), -1);
    let v: Value = app.get("/v1/keys/e").await.json().await.unwrap();
    assert_eq!(v["expires_at"], Value::Null);
    let page: Value = app.get("/v1/keys").await.json().await.unwrap();
    let keys: Vec<&str> = page["items"].as_array().unwrap().iter().map(|i| i["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["e", "t"]);
    app.stop().await;
}

#[tokio::test]
async fn a_failing_task_in_a_batch_does_not_hold_back_the_others() {
    let redis = TestRedis::start();
    let app = spawn_app(&redis, 0).await;
    for key in ["b1", "bad", "b2"] {
        app.store.enqueue(&write(key, "x")).await.unwrap();
    }
    let _: () = redis::cmd("SET").arg("kvq:k:bad").arg("not a hash").query(&mut redis.conn()).unwrap();
    let tasks = read_as(&app, "x", 10).await;
    let outcomes = app.store.apply(&tasks, 60_000).await.unwrap();
    assert_eq!(outcomes[0].as_ref().unwrap().status, TaskStatus::Applied);
    assert!(outcomes[1].as_ref().unwrap_err().contains("WRONGTYPE"), "{:?}", outcomes[1]);
    assert_eq!(outcomes[2].as_ref().unwrap().status, TaskStatus::Applied);
    let stats = app.store.queue_stats().await.unwrap();
    assert_eq!(stats.pending, 1, "only the failed task stays pending");
    app.stop().await;
}

/// A worker told to stop while it is applying a batch finishes and acknowledges the batch
/// before `run` returns: nothing is left pending for a reclaim much later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_stopped_while_applying_finishes_and_acknowledges_its_batch_before_returning() {
    let redis = TestRedis::start();
    // No reclaim during the test: anything left pending stays visible on its consumer.
    let app = spawn_app_with(&redis, 0, &[("KVQ__WORKER__CLAIM_IDLE_MS", "600000")]).await;
    let applying = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let hook = {
        let applying = applying.clone();
        std::sync::Arc::new(move |_: &StreamTask| {
            // The first task of the batch is slow to apply: the stop arrives meanwhile.
            if applying.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                std::thread::sleep(Duration::from_millis(800));
            }
        })
    };
    let worker = step_worker(&app.settings, "holder").with_apply_hook(hook);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run(async move {
        let _ = stop_rx.await;
    }));
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(app.store.enqueue(&write(&format!("s{i}"), "v")).await.unwrap().task_id);
    }
    eventually(Duration::from_secs(10), "the worker to start applying", || async {
        (applying.load(std::sync::atomic::Ordering::SeqCst) > 0).then_some(())
    })
    .await;
    let held = redis.pending_on("holder");
    assert!(!held.is_empty(), "the worker holds tasks when it is stopped");
    let _ = stop_tx.send(());
    running.await.unwrap();
    assert!(redis.pending_on("holder").is_empty(), "a stopped worker left tasks pending");
    for id in &held {
        let t = app.store.get_task(&kvq::store::task_id_of(id, 0).unwrap()).await.unwrap().unwrap();
        assert_eq!(t.status, TaskStatus::Applied, "{t:?}");
    }
    app.stop().await;
}

/// Trimming the stream never removes an entry that is pending (on any consumer) or not yet
/// delivered, and a reclaim after the trim still finds and applies every pending task.
#[tokio::test]
async fn trimming_keeps_pending_and_undelivered_entries_and_reclaim_still_finds_them() {
    let redis = TestRedis::start();
    let app = spawn_app_with(&redis, 0, &[("KVQ__WORKER__CLAIM_IDLE_MS", "600000")]).await;
    let total = 508;
    for i in 0..total {
        app.store.enqueue(&write(&format!("m{i}"), &format!("v{i}"))).await.unwrap();
    }
    let stepper = step_worker(&app.settings, "stepper");
    let step = |n: usize| {
        let stepper = stepper.clone();
        async move {
            for _ in 0..n {
                assert!(matches!(stepper.try_execute_tasks().await.unwrap(), kvq::worker::Step::Executed(_)));
            }
        }
    };
    // Acknowledged, pending on "a", acknowledged, pending on "b", acknowledged, undelivered.
    step(10).await;
    let mut pending: Vec<String> = read_as(&app, "a", 5).await.into_iter().map(|t| t.stream_id).collect();
    step(2).await;
    pending.extend(read_as(&app, "b", 5).await.into_iter().map(|t| t.stream_id));
    step(2).await;
    let all: Vec<(String, HashMap<String, String>)> =
        redis::cmd("XRANGE").arg("kvq:tasks").arg("-").arg("+").query(&mut redis.conn()).unwrap();
    assert_eq!(all.len(), total);
    let undelivered: Vec<String> = all[total - 50..].iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(app.store.queue_stats().await.unwrap().lag, 50);

    app.store.trim_acknowledged(0).await.unwrap();
    let len = redis.xlen("kvq:tasks") as usize;
    assert!(len < total, "acknowledged entries trimmed, got {len}");
    for id in pending.iter().chain(&undelivered) {
        let entry: Vec<(String, HashMap<String, String>)> =
            redis::cmd("XRANGE").arg("kvq:tasks").arg(id).arg(id).query(&mut redis.conn()).unwrap();
        assert_eq!(entry.len(), 1, "entry {id} was trimmed while pending or undelivered");
    }

    // Consumers "a" and "b" are gone: a worker reclaims their tasks and reads the rest.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut settings = app.settings.clone();
    settings.worker.claim_idle_ms = 50;
    let rescuer = step_worker(&settings, "rescuer");
    while let kvq::worker::Step::Executed(_) = rescuer.try_execute_tasks().await.unwrap() {}
    let stats = app.store.queue_stats().await.unwrap();
    assert_eq!((stats.pending, stats.lag), (0, 0));
    for i in 0..total {
        assert_eq!(app.value_of(&format!("m{i}")).await, Some(format!("v{i}")), "m{i}");
    }
    let version: u64 = redis::cmd("GET").arg("kvq:ver").query(&mut redis.conn()).unwrap();
    assert_eq!(version, total as u64, "each write applied exactly once");

    // Nothing pending, only undelivered entries after the acknowledged ones: those stay too.
    let mut later = Vec::new();
    for i in 0..150 {
        later.push(app.store.enqueue(&write(&format!("n{i}"), "late")).await.unwrap().task_id);
    }
    app.store.trim_acknowledged(0).await.unwrap();
    assert_eq!(app.store.queue_stats().await.unwrap().lag, 150, "undelivered entries were trimmed");
    assert!(redis.xlen("kvq:tasks") >= 150, "undelivered entries were trimmed");
    while let kvq::worker::Step::Executed(_) = rescuer.try_execute_tasks().await.unwrap() {}
    for id in &later {
        assert_eq!(app.store.get_task(id).await.unwrap().unwrap().status, TaskStatus::Applied);
    }
    app.stop().await;
}

/// Tombstones: a set accepted before a delete but applied after it does not bring the key back;
/// nor does an older set applied after a newer TTL'd write has expired (the key keeps its
/// sequence past expiry).
#[tokio::test]
async fn an_older_set_applied_late_does_not_resurrect_a_deleted_or_expired_key() {
    let redis = TestRedis::start();
    let app = spawn_app(&redis, 0).await;
    let mut older = write("gone", "older");
    app.store.enqueue(&older).await.unwrap();
    let mut delete = write("gone", "");
    delete.op = Op::Delete;
    delete.value = None;
    app.store.enqueue(&delete).await.unwrap();
    older.key = Key::parse("expired").unwrap();
    app.store.enqueue(&older).await.unwrap();
    let mut ttl = write("expired", "short-lived");
    ttl.ttl_seconds = Some(1);
    app.store.enqueue(&ttl).await.unwrap();

    let tasks = read_as(&app, "x", 10).await;
    assert_eq!(tasks.len(), 4);
    assert_eq!(apply_one(&app, &tasks[1]).await.status, TaskStatus::Applied, "the delete");
    assert_eq!(apply_one(&app, &tasks[3]).await.status, TaskStatus::Applied, "the TTL'd write");
    assert_eq!(app.value_of("expired").await.as_deref(), Some("short-lived"));
    eventually(Duration::from_secs(5), "the TTL'd value to expire", || async {
        app.value_of("expired").await.is_none().then_some(())
    })
    .await;

    let late = apply_one(&app, &tasks[0]).await;
    assert_eq!(late.status, TaskStatus::Superseded, "the older set after the delete: {late:?}");
    assert_eq!(app.value_of("gone").await, None, "a deleted key came back");
    let late = apply_one(&app, &tasks[2]).await;
    assert_eq!(late.status, TaskStatus::Superseded, "the older set after the expiry: {late:?}");
    assert_eq!(app.value_of("expired").await, None, "an expired key came back");
    let page: Value = app.get("/v1/keys").await.json().await.unwrap();
    assert_eq!(page["items"], json!([]), "{page}");
    app.stop().await;
}

mod hostile;

/// Entries Redis hands a worker's blocked read while the worker is being stopped are finished by
/// that worker, not left pending on it for another worker to reclaim much later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_stopped_during_its_blocking_read_finishes_what_the_read_was_handed() {
    let redis = TestRedis::start();
    // No reclaim during the test: anything left pending stays visible on its consumer.
    let app = spawn_app_with(&redis, 0, &[("KVQ__WORKER__CLAIM_IDLE_MS", "600000")]).await;
    let mut conn = redis.conn();
    for round in 0..12 {
        let consumer = format!("stopping-{round}");
        let worker = spawn_worker(&app.settings, &consumer).await;
        // Until the worker's read is blocked in Redis.
        eventually(Duration::from_secs(5), "the worker's blocking read", || async {
            let clients: String = redis::cmd("CLIENT").arg("LIST").query(&mut redis.conn()).ok()?;
            clients.lines().any(|l| l.contains("cmd=xreadgroup") && l.contains("flags=b")).then_some(())
        })
        .await;
        // Redis is kept busy (a script) while the write and the stop signal arrive: when it
        // resumes it hands the entry to the blocked read and sees the worker's reaction to the
        // stop in one go, whichever comes first.
        let busy_conn = redis.conn();
        let busy = tokio::task::spawn_blocking(move || {
            let mut busy_conn = busy_conn;
            let _: () = redis::cmd("EVAL")
                .arg(
                    "local t = redis.call('TIME') local start = t[1] * 1000000 + t[2] \
                      repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] - start > 300000",
                )
                .arg(0)
                .query(&mut busy_conn)
                .unwrap();
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let store = app.store.clone();
        let key = format!("at-stop-{round}");
        let enqueue = tokio::spawn(async move { store.enqueue(&write(&key, "v")).await.unwrap() });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let stopped = std::time::Instant::now();
        worker.stop().await;
        busy.await.unwrap();
        let enqueued = enqueue.await.unwrap();
        assert!(stopped.elapsed() < Duration::from_millis(1800), "stop took {:?}", stopped.elapsed());
        let pending: Vec<redis::Value> = redis::cmd("XPENDING")
            .arg("kvq:tasks")
            .arg("kvq-workers")
            .arg("-")
            .arg("+")
            .arg(10)
            .arg(&consumer)
            .query(&mut conn)
            .unwrap();
        assert!(pending.is_empty(), "round {round}: {} entries left pending on the stopped worker", pending.len());
        let task = app.store.get_task(&enqueued.task_id).await.unwrap().expect("task record");
        let lag = app.store.queue_stats().await.unwrap().lag;
        assert!(
            task.status == TaskStatus::Applied || lag == 1,
            "round {round}: the task is either applied or still undelivered: {task:?}, lag {lag}"
        );
        if lag == 1 {
            // Not handed to the stopped worker: the next round's worker takes it.
            continue;
        }
    }
    app.stop().await;
}
