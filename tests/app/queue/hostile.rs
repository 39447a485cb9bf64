//! The queue under hostile or unusual input against a real Redis: stream entries kvq did not
//! write, listing while keys expire, idempotency keys reused for other requests, dead letters
//! and their replay through the real `kvq-worker` binary, task records gone before apply,
//! huge versions, scripts that must fail before enqueueing, and a worker that panics.

use std::collections::{HashMap, HashSet};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::write;
use crate::support::*;
use kvq::domain::{TaskStatus, WriteRequest};
use kvq::store::StoreError;
use kvq::worker::Step;
use serde_json::{json, Value};

/// `XADD kvq:tasks * fields...`, as anyone with access to Redis could.
fn xadd(redis: &TestRedis, fields: &[(&str, &[u8])]) -> String {
    let mut cmd = redis::cmd("XADD");
    cmd.arg("kvq:tasks").arg("*");
    for (k, v) in fields {
        cmd.arg(*k).arg(*v);
    }
    cmd.query(&mut redis.conn()).unwrap()
}

/// The dead-letter stream as (id, fields) with fields as text.
fn dead_letters(redis: &TestRedis) -> Vec<(String, HashMap<String, String>)> {
    let raw: Vec<(String, Vec<Vec<u8>>)> =
        redis::cmd("XRANGE").arg("kvq:dlq").arg("-").arg("+").query(&mut redis.conn()).unwrap();
    raw.into_iter()
        .map(|(id, flat)| {
            let fields = flat
                .chunks(2)
                .map(|p| (String::from_utf8_lossy(&p[0]).into_owned(), String::from_utf8_lossy(&p[1]).into_owned()))
                .collect();
            (id, fields)
        })
        .collect()
}

const TASK_ID: &[u8] = b"0123456789abcdef0123456789abcdef";

/// A stream entry's fields as written by hand.
type RawFields = Vec<(&'static str, &'static [u8])>;

/// Each kind of entry that is no valid task, and words its dead-letter reason must contain.
fn malformed_kinds() -> Vec<(RawFields, &'static str)> {
    vec![
        (vec![("foo", b"bar")], "field op (operation) is missing"),
        (vec![("t", TASK_ID), ("op", b"incr"), ("k", b"a")], "unknown operation"),
        (vec![("t", b"not a task id"), ("op", b"set"), ("k", b"a"), ("v", b"1")], "is not a task id"),
        (vec![("t", TASK_ID), ("op", b"set"), ("v", b"1")], "field k (key) is missing"),
        (vec![("t", TASK_ID), ("op", b"set"), ("k", b"a"), ("v", b"1"), ("ttl", b"soon")], "field ttl"),
        (vec![("t", TASK_ID), ("op", b"set"), ("k", b"a"), ("v", b"1"), ("if", b"latest")], "field if"),
        (vec![("t", TASK_ID), ("op", b"set"), ("k", b"a"), ("v", b"\xff\xfe")], "not UTF-8"),
        (vec![("t", TASK_ID), ("op", b"set"), ("k", b"a\nb"), ("v", b"1")], "control characters"),
    ]
}

#[tokio::test]
async fn malformed_stream_entries_are_dead_lettered_and_the_stream_is_trimmed_past_them() {
    let redis = TestRedis::start();
    let app = spawn_app(&redis, 1).await;
    let kinds = malformed_kinds();
    let mut malformed_ids = Vec::new();
    // Malformed entries first, then enough good ones that trimming removes whole stream nodes.
    for (fields, _) in &kinds {
        malformed_ids.push(xadd(&redis, fields));
    }
    for i in 0..250 {
        app.store.enqueue(&write(&format!("good{i}"), "x")).await.unwrap();
    }
    app.drain(Duration::from_secs(20)).await;
    for i in [0, 249] {
        assert_eq!(app.value_of(&format!("good{i}")).await.as_deref(), Some("x"));
    }

    let dlq = dead_letters(&redis);
    assert_eq!(dlq.len(), kinds.len(), "{dlq:?}");
    for ((fields, reason), stream_id) in kinds.iter().zip(&malformed_ids) {
        let (_, entry) = dlq.iter().find(|(_, f)| f.get("seq") == Some(stream_id)).expect("dead-lettered");
        let error = &entry["error"];
        assert!(error.starts_with("malformed task entry: ") && error.contains(reason), "{reason}: {error}");
        for (name, value) in fields {
            // the raw fields are kept
            assert_eq!(entry[&format!("task.{name}")], String::from_utf8_lossy(value), "{entry:?}");
        }
    }
    let stats = app.store.queue_stats().await.unwrap();
    assert_eq!((stats.depth(), stats.dead_letters), (0, kinds.len() as u64));
    // No outcome was recorded for an entry that names no task kvq can trust.
    for id in &malformed_ids {
        let outcome: Option<String> = redis::cmd("HGET").arg("kvq:o:0").arg(id).query(&mut redis.conn()).unwrap();
        assert_eq!(outcome, None, "{id}");
    }

    app.store.trim_acknowledged(0).await.unwrap();
    let first: Vec<(String, Vec<String>)> =
        redis::cmd("XRANGE").arg("kvq:tasks").arg("-").arg("+").arg("COUNT").arg(1).query(&mut redis.conn()).unwrap();
    let first_left = first.first().map(|(id, _)| id.clone());
    assert!(!first_left.as_ref().is_some_and(|id| malformed_ids.contains(id)), "stream still starts at {first_left:?}");
    assert!(redis.xlen("kvq:tasks") < 200, "trimmed past the malformed entries");

    let metrics = app.client.get(format!("http://127.0.0.1:{}/metrics", app.workers[0].port)).send().await.unwrap();
    let text = metrics.text().await.unwrap();
    assert!(text.contains(&format!("kvq_malformed_entries_total {}", kinds.len())), "{text}");
    app.stop().await;
}

#[tokio::test]
async fn reclaim_gets_past_hundreds_of_malformed_entries_to_an_abandoned_task() {
    let redis = TestRedis::start();
    let app = spawn_app(&redis, 0).await;
    for i in 0..400 {
        xadd(&redis, &[("junk", format!("{i}").as_bytes())]);
    }
    let id = app.store.enqueue(&write("behind-the-junk", "applied")).await.unwrap().task_id;
    // A worker takes everything and dies without finishing any of it.
    app.store.ensure_group().await.unwrap();
    let mut conn = app.store.redis.dedicated(Some(Duration::from_secs(5))).await.unwrap();
    let taken = app.store.read_new(&mut conn, 0, "doomed", 1000, 100).await.unwrap();
    assert_eq!((taken.malformed.len(), taken.tasks.len()), (400, 1));
    assert_eq!(app.store.queue_stats().await.unwrap().pending, 401);

    let rescuer = spawn_worker(&app.settings, "rescuer").await;
    app.drain(Duration::from_secs(30)).await;
    assert_eq!(app.value_of("behind-the-junk").await.as_deref(), Some("applied"));
    assert_eq!(app.store.get_task(&id).await.unwrap().unwrap().status, TaskStatus::Applied);
    assert_eq!(redis.xlen("kvq:dlq"), 400);
    rescuer.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn reclaim_scans_continue_from_the_returned_cursor_and_skip_deleted_entries() {
    let redis = TestRedis::start();
    let app = spawn_app(&redis, 0).await;
    for i in 0..30 {
        app.store.enqueue(&write(&format!("c{i}"), "x")).await.unwrap();
    }
    app.store.ensure_group().await.unwrap();
    let mut conn = app.store.redis.dedicated(Some(Duration::from_secs(5))).await.unwrap();
    let taken = app.store.read_new(&mut conn, 0, "doomed", 100, 100).await.unwrap().tasks;
    assert_eq!(taken.len(), 30);
    // Entries deleted while pending: XAUTOCLAIM reports them in a third element.
    for t in &taken[10..15] {
        let _: u64 = redis::cmd("XDEL").arg("kvq:tasks").arg(&t.stream_id).query(&mut redis.conn()).unwrap();
    }
    // Idle time 0: every pending entry is claimable at once, so a scan that restarted at the
    // beginning would return the same entries again.
    let mut seen = Vec::new();
    let mut cursor = "0-0".to_string();
    for _ in 0..10 {
        let (page, next) = app.store.reclaim(0, "rescuer", 0, 10, &cursor).await.unwrap();
        assert!(page.malformed.is_empty(), "{:?}", page.malformed);
        seen.extend(page.tasks.into_iter().map(|t| t.stream_id));
        cursor = next;
        if cursor == "0-0" {
            break;
        }
    }
    assert_eq!(cursor, "0-0", "the scan wraps around at the end");
    let expected: Vec<String> =
        taken.iter().enumerate().filter(|(i, _)| !(10..15).contains(i)).map(|(_, t)| t.stream_id.clone()).collect();
    assert_eq!(seen, expected, "each live pending entry once, in order");
    app.stop().await;
}

#[tokio::test]
async fn a_step_worker_reports_malformed_entries_as_failed() {
    let redis = TestRedis::start();
    let app = spawn_app(&redis, 0).await;
    xadd(&redis, &[("t", TASK_ID), ("op", b"set"), ("k", b"a"), ("v", b"1"), ("ttl", b"-5")]);
    let w = step_worker(&app.settings, "stepper");
    let Step::Executed(outcomes) = w.try_execute_tasks().await.unwrap() else { panic!("nothing executed") };
    assert_eq!(outcomes.len(), 1);
    assert_eq!(outcomes[0].status, TaskStatus::Failed);
    assert!(outcomes[0].error.as_deref().unwrap().contains("field ttl"), "{outcomes:?}");
    assert_eq!(w.try_execute_tasks().await.unwrap(), Step::EmptyQueue);
    assert_eq!(app.store.queue_stats().await.unwrap().depth(), 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_while_keys_expire_and_are_rewritten_lists_every_live_key_once() {
    let redis = TestRedis::start();
    let app = spawn_app(&redis, 2).await;
    const N: usize = 400;
    for round in 0..3 {
        let keys: Vec<String> = (0..N).map(|i| format!("r{round}-{i:03}")).collect();
        for k in &keys {
            app.store.enqueue(&WriteRequest { ttl_seconds: Some(1), ..write(k, "short") }).await.unwrap();
        }
        app.drain(Duration::from_secs(20)).await;
        tokio::time::sleep(Duration::from_millis(1100)).await;
        // Two clients list all the time while every key is written again without a TTL.
        let stop = Arc::new(AtomicBool::new(false));
        let mut listers = Vec::new();
        for _ in 0..2 {
            let (store, stop, prefix) = (app.store.clone(), stop.clone(), format!("r{round}-"));
            listers.push(tokio::spawn(async move {
                let mut pages = 0;
                while !stop.load(Ordering::Relaxed) {
                    store.list_keys(&prefix, None, 1000).await.unwrap();
                    pages += 1;
                }
                pages
            }));
        }
        for k in &keys {
            app.store.enqueue(&write(k, "long")).await.unwrap();
        }
        app.drain(Duration::from_secs(20)).await;
        stop.store(true, Ordering::Relaxed);
        for l in listers {
            assert!(l.await.unwrap() > 0);
        }
        let (items, next) = app.store.list_keys(&format!("r{round}-"), None, 1000).await.unwrap();
        assert_eq!(next, None);
        let listed: Vec<&String> = items.iter().map(|(k, _)| k).collect();
        let unique: HashSet<&String> = listed.iter().copied().collect();
        let missing: Vec<&String> = keys.iter().filter(|k| !unique.contains(k)).collect();
        assert!(missing.is_empty(), "round {round}: live keys missing from the listing: {missing:?}");
        assert_eq!(listed.len(), N, "round {round}: every key exactly once");
        // and the API says the same
        let page: Value = app.get(&format!("/v1/keys?prefix=r{round}-&limit=1000")).await.json().await.unwrap();
        assert_eq!(page["items"].as_array().unwrap().len(), N);
    }
    app.stop().await;
}

#[tokio::test]
async fn an_idempotency_key_reused_for_a_different_request_answers_422_and_enqueues_nothing() {
    let redis = TestRedis::start();
    let app = spawn_app(&redis, 0).await;
    let tok = [("Idempotency-Key", "tok-1")];
    let first = app.put_json("idemA", json!({"value": "a"}), "", &tok).await;
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.unwrap();
    let task_id = first["task_id"].as_str().unwrap().to_string();

    let mut others = vec![
        app.put_json("idemB", json!({"value": "a"}), "?wait=3", &tok).await,
        app.put_json("idemA", json!({"value": "b"}), "", &tok).await,
        app.put_json("idemA", json!({"value": "a", "ttl_seconds": 60}), "", &tok).await,
        app.put_json("idemA", json!({"value": "a"}), "", &[tok[0], ("If-None-Match", "*")]).await,
        app.put_json("idemA", json!({"value": "a"}), "", &[tok[0], ("If-Match", "\"3\"")]).await,
    ];
    others.push(app.client.delete(app.url("/v1/keys/idemA")).header("Idempotency-Key", "tok-1").send().await.unwrap());
    for r in others {
        assert_eq!(r.status(), 422);
        assert!(r.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
        let p: Value = r.json().await.unwrap();
        assert_eq!(p["status"], 422);
        assert!(p["detail"].as_str().unwrap().contains("Idempotency-Key"), "{p}");
    }
    assert_eq!(redis.xlen("kvq:tasks"), 1, "nothing enqueued for the mismatches");

    // The same request again, with or without ?wait, is the same task.
    for query in ["", "?wait=1"] {
        let again = app.put_json("idemA", json!({"value": "a"}), query, &tok).await;
        assert_eq!(again.status(), 202);
        let again: Value = again.json().await.unwrap();
        assert_eq!(again["task_id"], task_id.as_str());
    }
    assert_eq!(redis.xlen("kvq:tasks"), 1);
    // A new token is a new request.
    let del = app.client.delete(app.url("/v1/keys/idemA")).header("Idempotency-Key", "tok-2").send().await.unwrap();
    assert_eq!(del.status(), 202);
    assert_eq!(redis.xlen("kvq:tasks"), 2);
    app.stop().await;
}

fn worker_cli(redis: &TestRedis, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kvq-worker"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("KVQ__REDIS__URL", redis.url())
        .env("KVQ__LOG__FORMAT", "json")
        .output()
        .expect("run kvq-worker")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test]
async fn dead_letters_keep_the_whole_task_and_replay_through_the_worker_binary() {
    let redis = TestRedis::start();
    let app = spawn_app_with(&redis, 1, &[("KVQ__WORKER__MAX_ATTEMPTS", "2")]).await;
    // Someone overwrote kvq's hash with a plain string: every apply fails with WRONGTYPE.
    let _: () = redis::cmd("SET").arg("kvq:k:poison").arg("oops").query(&mut redis.conn()).unwrap();
    let r = app
        .put_json("poison", json!({"value": "the payload", "ttl_seconds": 100}), "?wait=15", &[("If-None-Match", "*")])
        .await;
    assert_eq!(r.status(), 500);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["task"]["status"], "failed");
    let failed_id = b["task"]["id"].as_str().unwrap().to_string();
    let junk_seq = xadd(&redis, &[("foo", b"bar")]);
    app.drain(Duration::from_secs(10)).await;

    let dlq = dead_letters(&redis);
    assert_eq!(dlq.len(), 2, "{dlq:?}");
    let failed_seq = kvq::store::stream_id_of(&failed_id).unwrap().1;
    let (poison_dl, fields) = dlq.iter().find(|(_, f)| f.get("seq") == Some(&failed_seq)).unwrap().clone();
    assert_eq!(fields["task.op"], "set");
    assert_eq!(fields["task.k"], "poison");
    assert_eq!(fields["task.v"], "the payload");
    assert_eq!(fields["task.ttl"], "100000");
    assert_eq!(fields["task.inm"], "1");
    assert_eq!(fields["task.w"], "1");
    assert_eq!(fields["attempts"], "2");
    assert!(fields["error"].contains("WRONGTYPE"), "{fields:?}");
    let (junk_dl, _) = dlq.iter().find(|(_, f)| f.get("seq") == Some(&junk_seq)).unwrap().clone();

    let list = worker_cli(&redis, &["dead-letters", "list"]);
    assert!(list.status.success(), "{}", text(&list.stderr));
    let lines: Vec<Value> = text(&list.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    let poison = lines.iter().find(|l| l["id"] == poison_dl.as_str()).unwrap();
    assert_eq!(poison["replayable"], true);
    assert_eq!(poison["task"]["v"], "the payload");
    assert_eq!(poison["attempts"], 2);
    let junk = lines.iter().find(|l| l["id"] == junk_dl.as_str()).unwrap();
    assert_eq!(junk["replayable"], false);
    assert!(junk["problem"].as_str().unwrap().contains("field op"), "{junk}");

    // Unknown ids and entries that are no task are reported, and nothing is removed.
    let bogus = worker_cli(&redis, &["dead-letters", "replay", "1-1", "nonsense", junk_dl.as_str()]);
    assert_eq!(bogus.status.code(), Some(1));
    let err = text(&bogus.stderr);
    assert!(err.contains("not found 1-1") && err.contains("not found nonsense"), "{err}");
    assert!(err.contains(&format!("skipped {junk_dl}: cannot be replayed")), "{err}");
    assert_eq!(redis.xlen("kvq:dlq"), 2);
    let usage = worker_cli(&redis, &["dead-letters", "replay"]);
    assert_eq!(usage.status.code(), Some(2));
    assert!(text(&usage.stderr).contains("usage: kvq-worker"));

    // The key is repaired; replaying everything re-enqueues the write as a new task.
    let _: () = redis::cmd("DEL").arg("kvq:k:poison").query(&mut redis.conn()).unwrap();
    let replay = worker_cli(&redis, &["dead-letters", "replay", "--all"]);
    assert_eq!(replay.status.code(), Some(1), "the junk entry cannot be replayed");
    let out = text(&replay.stdout);
    let new_id = out
        .lines()
        .find_map(|l| l.strip_prefix(&format!("replayed {poison_dl} as task ")))
        .unwrap_or_else(|| panic!("{out}"))
        .to_string();
    assert_ne!(new_id, failed_id);
    let left = dead_letters(&redis);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].0, junk_dl, "the replayed dead letter is gone, the junk stays");

    let t: Value = eventually(Duration::from_secs(10), "the replayed task to apply", || async {
        let t: Value = app.get(&format!("/v1/tasks/{new_id}")).await.json().await.ok()?;
        (t["status"] == "applied").then_some(t)
    })
    .await;
    assert_eq!((t["op"].as_str(), t["key"].as_str()), (Some("set"), Some("poison")));
    let v: Value = app.get("/v1/keys/poison").await.json().await.unwrap();
    assert_eq!(v["value"], "the payload");
    assert!(v["expires_at"].is_string(), "the TTL came along: {v}");
    // The original task stays failed; replaying it again finds nothing.
    let old: Value = app.get(&format!("/v1/tasks/{failed_id}")).await.json().await.unwrap();
    assert_eq!(old["status"], "failed");
    let again = worker_cli(&redis, &["dead-letters", "replay", poison_dl.as_str()]);
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&again.stderr).contains(&format!("not found {poison_dl}")));
    app.stop().await;
}

/// A task is its stream entry while queued and its outcome after: both read as a complete task,
/// and an outcome kvq cannot read (a hand edit) is a 404, no server error.
#[tokio::test]
async fn a_task_reads_complete_from_its_entry_and_from_its_outcome() {
    let redis = TestRedis::start();
    let app = spawn_app(&redis, 0).await;
    let id = app.store.enqueue(&write("late", "v")).await.unwrap().task_id;
    let seq = kvq::store::stream_id_of(&id).unwrap().1;
    let accepted_ms: u64 = seq.split('-').next().unwrap().parse().unwrap();
    for expected in ["queued", "applied"] {
        if expected == "applied" {
            let w = step_worker(&app.settings, "late-worker");
            let Step::Executed(outcomes) = w.try_execute_tasks().await.unwrap() else { panic!("nothing executed") };
            assert_eq!(outcomes[0].status, TaskStatus::Applied);
        }
        let r = app.get(&format!("/v1/tasks/{id}")).await;
        assert_eq!(r.status(), 200);
        let t: Value = r.json().await.unwrap();
        assert_eq!(
            (t["op"].as_str(), t["key"].as_str(), t["status"].as_str()),
            (Some("set"), Some("late"), Some(expected))
        );
        assert_eq!(t["enqueued_at"], kvq::timefmt::rfc3339_ms(accepted_ms));
        assert_eq!(app.get(&format!("/ui/tasks/{id}")).await.status(), 200);
    }

    // An outcome that is no JSON array of kvq's: no server error.
    let partial = "0000018bcfe568000000000000000007";
    let _: () = redis::cmd("HSET")
        .arg("kvq:o:0")
        .arg(kvq::store::stream_id_of(partial).unwrap().1)
        .arg("{\"status\": \"applied\"}")
        .query(&mut redis.conn())
        .unwrap();
    let r = app.get(&format!("/v1/tasks/{partial}")).await;
    assert_eq!(r.status(), 404);
    let page = app.get(&format!("/ui/tasks/{partial}")).await.status();
    assert!(page == 200 || page == 404, "{page}");
    app.stop().await;
}

#[tokio::test]
async fn versions_past_ten_to_the_fourteen_and_around_two_to_the_fifty_three_stay_exact() {
    let redis = TestRedis::start();
    let app = spawn_app(&redis, 1).await;
    let _: () = redis::cmd("SET").arg("kvq:ver").arg("999999999999990").query(&mut redis.conn()).unwrap();
    let t: Value = app.put("big", "v", "?wait=5").await.json().await.unwrap();
    assert_eq!(t["version"].as_u64(), Some(999_999_999_999_991), "{t}");
    let r = app.get("/v1/keys/big").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["etag"], "\"999999999999991\"");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["version"].as_u64(), Some(999_999_999_999_991));
    // A conditional write on that version applies, with a TTL: expiry ms are exact too.
    let r = app
        .put_json("big", json!({"value": "w", "ttl_seconds": 3600}), "?wait=5", &[("If-Match", "\"999999999999991\"")])
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = app.get("/v1/keys/big").await.json().await.unwrap();
    assert_eq!((v["value"].as_str(), v["version"].as_u64()), (Some("w"), Some(999_999_999_999_992)));
    let exp: String = redis::cmd("HGET").arg("kvq:k:big").arg("exp").query(&mut redis.conn()).unwrap();
    assert!(exp.bytes().all(|b| b.is_ascii_digit()), "{exp}");

    let two53: u64 = 1 << 53;
    let _: () = redis::cmd("SET").arg("kvq:ver").arg(two53 - 2).query(&mut redis.conn()).unwrap();
    for (i, expected) in [two53 - 1, two53, two53 + 1, two53 + 2].into_iter().enumerate() {
        let key = format!("edge{i}");
        let t: Value = app.put(&key, "v", "?wait=5").await.json().await.unwrap();
        assert_eq!(t["version"].as_u64(), Some(expected), "{t}");
        let stored: String =
            redis::cmd("HGET").arg(format!("kvq:k:{key}")).arg("ver").query(&mut redis.conn()).unwrap();
        assert_eq!(stored, expected.to_string());
        let v: Value = app.get(&format!("/v1/keys/{key}")).await.json().await.unwrap();
        assert_eq!(v["version"].as_u64(), Some(expected));
    }
    app.stop().await;
}

#[tokio::test]
async fn an_enqueue_that_cannot_complete_adds_nothing_to_the_stream() {
    let redis = TestRedis::start();
    let app = spawn_app(&redis, 0).await;
    // The idempotency map's bucket overwritten with another type.
    let _: () = redis::cmd("SET").arg("kvq:i:0").arg("x").query(&mut redis.conn()).unwrap();
    let err =
        app.store.enqueue(&WriteRequest { idempotency_key: Some("tok".into()), ..write("k", "v") }).await.unwrap_err();
    let stream: u64 = redis::cmd("EXISTS").arg("kvq:tasks").query(&mut redis.conn()).unwrap();
    assert_eq!(stream, 0, "a failed enqueue must not have added a task: {err}");
    assert!(matches!(err, StoreError::Redis(_)), "{err}");
    assert!(err.to_string().contains("WRONGTYPE"), "{err}");
    // and a normal enqueue still works
    app.store.enqueue(&write("k", "v")).await.unwrap();
    assert_eq!(redis.xlen("kvq:tasks"), 1);
    app.stop().await;
}

#[tokio::test]
async fn a_panic_while_applying_neither_stops_the_worker_nor_loses_the_batch() {
    let redis = TestRedis::start();
    let app = spawn_app_with(&redis, 0, &[("KVQ__WORKER__MAX_ATTEMPTS", "2"), ("KVQ__WORKER__CONCURRENCY", "1")]).await;
    let hook: kvq::worker::ApplyHook = Arc::new(|t| {
        if t.key == "boom" {
            panic!("apply bug for key boom");
        }
    });
    let worker = step_worker(&app.settings, "panicky").with_apply_hook(hook);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run(async move {
        let _ = stop_rx.await;
    }));
    // One batch with the panicking task between two good ones.
    let boom_id = {
        let before = app.store.enqueue(&write("before", "1")).await.unwrap().task_id;
        let boom = app.store.enqueue(&write("boom", "1")).await.unwrap().task_id;
        let after = app.store.enqueue(&write("after", "1")).await.unwrap().task_id;
        for id in [&before, &after] {
            eventually(Duration::from_secs(10), "the good tasks of the batch to apply", || async {
                (app.store.get_task(id).await.ok()??.status == TaskStatus::Applied).then_some(())
            })
            .await;
        }
        boom
    };
    // The panicking task is retried (reclaimed) and then dead-lettered with the reason.
    let t = eventually(Duration::from_secs(15), "the panicking task to be dead-lettered", || async {
        let t = app.store.get_task(&boom_id).await.ok()??;
        (t.status == TaskStatus::Failed).then_some(t)
    })
    .await;
    assert_eq!(t.attempts, 2);
    assert!(
        t.error.as_deref().unwrap().contains("panicked") && t.error.as_deref().unwrap().contains("apply bug"),
        "{t:?}"
    );
    let dlq = dead_letters(&redis);
    assert_eq!(dlq.len(), 1);
    assert_eq!(dlq[0].1["seq"], kvq::store::stream_id_of(&boom_id).unwrap().1);
    // With one permit, a leaked permit or a dead loop would hold this one back forever.
    for i in 0..3 {
        let id = app.store.enqueue(&write(&format!("later{i}"), "1")).await.unwrap().task_id;
        eventually(Duration::from_secs(10), "a later task to apply", || async {
            (app.store.get_task(&id).await.ok()??.status == TaskStatus::Applied).then_some(())
        })
        .await;
    }
    assert_eq!(app.store.queue_stats().await.unwrap().depth(), 0);
    let _ = stop_tx.send(());
    running.await.unwrap();
    app.stop().await;
}
