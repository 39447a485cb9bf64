//! The queue's properties in cluster mode: kvq with its keys and tasks spread over the queue
//! shards of a real Redis Cluster (3 masters x 1 replica on loopback), through the API, the store
//! API and a cluster client. Per-key order, reclaim and idempotent redelivery, dead letters and
//! their replay, trimming and fairness hold per shard; task lookups, listing, `?wait` and
//! Idempotency-Keys keep their contract across shards.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use serde_json::{json, Value};

use crate::queue::{assert_key_ends_at_its_last_accepted_write, Accepted};
use crate::support::redis_cluster::TestCluster;
use crate::support::*;
use kvq::domain::{Op, TaskStatus};
use kvq::store::{stream_id_of, task_id_of, Shards, StreamTask, GROUP};

/// Keys named `{prefix}{n}` (n = 0, 1, ...) until every shard holds `per_shard` of them; by shard.
fn keys_on_every_shard(shards: &Shards, prefix: &str, per_shard: usize) -> Vec<Vec<String>> {
    let mut by_shard = vec![Vec::new(); shards.len()];
    for n in 0..100_000 {
        if by_shard.iter().all(|k: &Vec<String>| k.len() >= per_shard) {
            return by_shard;
        }
        let key = format!("{prefix}{n}");
        let shard = &mut by_shard[shards.of(&key).shard];
        if shard.len() < per_shard {
            shard.push(key);
        }
    }
    let counts: Vec<usize> = by_shard.iter().map(Vec::len).collect();
    panic!("100,000 keys do not spread over the shards: {counts:?} of {prefix}*")
}

/// The shard and acceptance order (stream id) a task id names.
fn task_position(id: &str) -> (usize, (u64, u64)) {
    let (shard, seq) = stream_id_of(id).unwrap();
    let (ms, n) = seq.split_once('-').unwrap();
    (shard, (ms.parse().unwrap(), n.parse().unwrap()))
}

fn enc(key: &str) -> String {
    kvq::server::pages::percent_encode(key)
}

async fn cluster_conn(cluster: &TestCluster) -> redis::cluster_async::ClusterConnection {
    cluster.client().get_async_connection().await.unwrap()
}

/// Entries of a shard's stream left pending on `consumer`.
async fn pending_on(c: &mut redis::cluster_async::ClusterConnection, stream: &str, consumer: &str) -> Vec<String> {
    let pending: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
        .arg(stream)
        .arg(GROUP)
        .arg("-")
        .arg("+")
        .arg(100_000)
        .arg(consumer)
        .query_async(c)
        .await
        .unwrap();
    pending.into_iter().map(|(id, ..)| id).collect()
}

/// A shard's version counter: one increment per write that took effect.
async fn versions_used(c: &mut redis::cluster_async::ClusterConnection, app: &TestApp, shard: usize) -> u64 {
    let v: Option<u64> = c.get(&app.store.shards.all()[shard].version).await.unwrap();
    v.unwrap_or(0)
}

/// PUT with `?wait`: the task it answers with.
async fn put_waiting(app: &TestApp, key: &str, value: &str) -> Value {
    let r = app.put_json(&enc(key), json!({ "value": value }), "?wait=5", &[]).await;
    assert_eq!(r.status(), 200, "PUT {key} ?wait=5");
    r.json().await.unwrap()
}

/// Concurrent writers on keys of every shard and three workers: each key ends at its last
/// accepted write, versions follow acceptance order, every shard's stream carried tasks, and a
/// `?wait` write answers with its outcome. Then every shard's stream is trimmed empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_on_every_shard_end_at_each_key_s_last_accepted_write_and_every_stream_is_trimmed() {
    let cluster = tokio::task::block_in_place(TestCluster::start);
    let app = spawn_cluster_app(&cluster, 3, &[]).await;
    let shards = app.store.shards.clone();
    let keys: Vec<String> = keys_on_every_shard(&shards, "order-", 2).concat();
    let mut writers = Vec::new();
    for w in 0..8 {
        let (http, keys) = (app.http.clone(), keys.clone());
        writers.push(tokio::spawn(async move {
            let mut accepted = Vec::new();
            for i in 0..40 {
                let key = keys[(w * 5 + i) % keys.len()].clone();
                let value = format!("w{w}-{i}");
                let r = http.put(&key, &value, "").await;
                assert_eq!(r.status(), 202);
                let b: Value = r.json().await.unwrap();
                accepted.push((key, value, b["task_id"].as_str().unwrap().to_string()));
            }
            accepted
        }));
    }
    let mut by_key: BTreeMap<String, Vec<Accepted>> = BTreeMap::new();
    for w in writers {
        for (key, value, id) in w.await.unwrap() {
            let (shard, seq) = task_position(&id);
            assert_eq!(shard, shards.of(&key).shard, "the task id of a write to {key} names the key's shard");
            by_key.entry(key).or_default().push((seq, value, id));
        }
    }
    app.drain(Duration::from_secs(60)).await;

    let mut shards_written = BTreeSet::new();
    for (key, mut writes) in by_key {
        assert_key_ends_at_its_last_accepted_write(&app, &key, &mut writes).await;
        shards_written.insert(shards.of(&key).shard);
    }
    // Every shard's own stream carried tasks: the keys really spread.
    let mut c = cluster_conn(&cluster).await;
    for shard in shards.all() {
        let info: redis::streams::StreamInfoStreamReply = c.xinfo_stream(&shard.stream).await.unwrap();
        assert_ne!(info.last_generated_id, "0-0", "shard {}'s stream saw no task", shard.shard);
    }
    assert_eq!(shards_written.len(), shards.len());

    // `?wait` answers with the outcome, whichever shard holds the key.
    for keys in keys_on_every_shard(&shards, "waited-", 1) {
        let t = put_waiting(&app, &keys[0], "x").await;
        assert_eq!((t["status"].as_str(), t["key"].as_str()), (Some("applied"), Some(keys[0].as_str())), "{t}");
        assert!(t["version"].as_u64().is_some(), "{t}");
        let r = app.delete(&keys[0], "?wait=5").await;
        assert_eq!(r.status(), 200);
        let t: Value = r.json().await.unwrap();
        assert_eq!((t["status"].as_str(), t["op"].as_str()), (Some("applied"), Some("delete")), "{t}");
    }

    // Every entry is acknowledged: the workers' trim empties every shard's stream.
    eventually(Duration::from_secs(15), "every shard's stream to be trimmed", || {
        let mut c = c.clone();
        let shards = shards.clone();
        async move {
            for shard in shards.all() {
                let len: u64 = c.xlen(&shard.stream).await.ok()?;
                if len > 0 {
                    return None;
                }
            }
            Some(())
        }
    })
    .await;
    app.stop().await;
}

/// A worker process killed while its blocked reads hold tasks in several shards: another worker
/// reclaims them in every shard, and each write takes effect once (one version each). A late
/// redelivery of a task, even after its key was written again, reports its first outcome and
/// changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_of_a_killed_worker_are_reclaimed_in_every_shard_and_redeliveries_change_nothing() {
    let cluster = tokio::task::block_in_place(TestCluster::start);
    let app = spawn_cluster_app(&cluster, 0, &[]).await;
    let shards = app.store.shards.clone();
    let mut env = cluster.kvq_env();
    env.push(("KVQ__WORKER__CLAIM_IDLE_MS", "300".into()));
    let mut victim = KvqProcess::worker("victim", &env);
    victim.http(Duration::from_secs(5)).wait_status("/readyz", 200, Duration::from_secs(20)).await;

    // Frozen while its reads of every shard are blocked in Redis, the victim is handed the first
    // write of each shard whose read is still blocked, and cannot finish it.
    let keys = keys_on_every_shard(&shards, "held-", 3);
    let mut written: HashMap<String, (String, String)> = HashMap::new(); // task id -> key, value
    eventually(Duration::from_secs(20), "the victim's reads of every shard to be blocked", || async {
        (tokio::task::block_in_place(|| cluster.blocked_reads()) >= shards.len()).then_some(())
    })
    .await;
    victim.signal("STOP");
    for key in keys.iter().flatten() {
        let w = crate::queue::write(key, &format!("{key}-v"));
        let id = app.store.enqueue(&w).await.unwrap().task_id;
        written.insert(id, (key.clone(), format!("{key}-v")));
    }
    let mut c = cluster_conn(&cluster).await;
    let mut held: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for shard in shards.all() {
        let ids = pending_on(&mut c, &shard.stream, "victim").await;
        if !ids.is_empty() {
            held.insert(shard.shard, ids);
        }
    }
    assert!(held.len() >= 2, "the victim holds tasks in several shards when it is killed: {held:?}");
    victim.kill9();
    for (&shard, ids) in &held {
        assert_eq!(
            &pending_on(&mut c, &shards.all()[shard].stream, "victim").await,
            ids,
            "a crash leaves them pending"
        );
    }

    let _rescuer = KvqProcess::worker("rescuer", &env);
    let rescue = Instant::now();
    app.drain(Duration::from_secs(60)).await;
    println!(
        "cluster reclaim: {} tasks held in {} shards reclaimed and applied in {} ms",
        held.values().map(Vec::len).sum::<usize>(),
        held.len(),
        rescue.elapsed().as_millis()
    );
    for &shard in held.keys() {
        assert!(pending_on(&mut c, &shards.all()[shard].stream, "victim").await.is_empty(), "shard {shard} reclaimed");
    }
    for (id, (key, value)) in &written {
        let t = app.store.get_task(id).await.unwrap().unwrap();
        assert_eq!((t.status, t.attempts), (TaskStatus::Applied, 1), "{key}: {t:?}");
        assert_eq!(app.value_of(key).await.as_deref(), Some(value.as_str()));
    }
    for (shard, keys) in keys.iter().enumerate() {
        assert_eq!(versions_used(&mut c, &app, shard).await, keys.len() as u64, "shard {shard}: each write once");
    }

    // Redelivered after a newer write to its key, a reclaimed task still reports what it did
    // first (applied, its version), and changes neither the value nor any version.
    for (&shard, ids) in &held {
        let task_id = task_id_of(&ids[0], shard).unwrap();
        let (key, value) = written[&task_id].clone();
        let first = app.store.get_task(&task_id).await.unwrap().unwrap();
        let newer = put_waiting(&app, &key, "newer").await;
        let versions = versions_used(&mut c, &app, shard).await;
        let redelivered = StreamTask {
            shard,
            stream_id: ids[0].clone(),
            task_id,
            op: Op::Set,
            key: key.clone(),
            value,
            ttl_ms: None,
            if_match: None,
            if_none_match: false,
            notify: false,
        };
        let mut outcomes = app.store.apply(std::slice::from_ref(&redelivered), 60_000).await.unwrap();
        let again = outcomes.pop().unwrap().expect("a redelivery applies");
        assert_eq!((again.status, again.version), (TaskStatus::Applied, first.version), "shard {shard}");
        assert_eq!(app.value_of(&key).await.as_deref(), Some("newer"));
        let stored = app.store.get_value(&key).await.unwrap().unwrap();
        assert_eq!(Some(stored.version), newer["version"].as_u64());
        assert_eq!(versions_used(&mut c, &app, shard).await, versions, "shard {shard}: no version used");
    }
    app.stop().await;
}

/// Poison tasks in three shards (their data keys overwritten with a non-hash) end in their own
/// shard's dead-letter stream; `kvq-worker dead-letters list` lists them all, shard by shard, by
/// `{shard}/{id}`, and `replay` re-enqueues one by that id into its shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_tasks_end_in_their_shard_s_dead_letters_and_the_worker_cli_replays_one_by_its_shard_id() {
    let cluster = tokio::task::block_in_place(TestCluster::start);
    let app = spawn_cluster_app(&cluster, 1, &[("KVQ__WORKER__MAX_ATTEMPTS", "2")]).await;
    let shards = app.store.shards.clone();
    let mut c = cluster_conn(&cluster).await;
    // Shards in each third of the slot space: on each master of an evenly split cluster.
    let by_shard = keys_on_every_shard(&shards, "poison-", 1);
    let mut failed: BTreeMap<usize, (String, String)> = BTreeMap::new(); // shard -> key, task id
    for shard in [1, 8, 14] {
        let key = by_shard[shard][0].clone();
        let () = c.set(shards.of(&key).data(&key), "oops").await.unwrap();
        let r = app.put_json(&key, json!({ "value": "payload" }), "?wait=15", &[]).await;
        assert_eq!(r.status(), 500, "{key}");
        let b: Value = r.json().await.unwrap();
        assert_eq!((b["task"]["status"].as_str(), b["task"]["attempts"].as_u64()), (Some("failed"), Some(2)), "{b}");
        assert!(b["task"]["error"].as_str().unwrap().contains("WRONGTYPE"), "{b}");
        failed.insert(shard, (key, b["task"]["id"].as_str().unwrap().to_string()));
    }
    for (&shard, (key, id)) in &failed {
        let dlq: Vec<(String, HashMap<String, String>)> = c.xrange_all(&shards.all()[shard].dead_letter).await.unwrap();
        assert_eq!(dlq.len(), 1, "shard {shard}'s dead-letter stream: {dlq:?}");
        assert_eq!(dlq[0].1["seq"], stream_id_of(id).unwrap().1);
        assert_eq!(&dlq[0].1["task.k"], key);
    }
    assert_eq!(app.store.queue_stats().await.unwrap().dead_letters, 3);

    let env = cluster.kvq_env();
    let list = worker_cli(&env, &["dead-letters", "list"]);
    assert!(list.status.success(), "{}", String::from_utf8_lossy(&list.stderr));
    let lines: Vec<Value> =
        String::from_utf8_lossy(&list.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let listed: Vec<(usize, String)> = lines
        .iter()
        .map(|l| {
            let id = l["id"].as_str().unwrap();
            let (shard, _) = id.split_once('/').unwrap_or_else(|| panic!("{id} names no shard"));
            (shard.parse().unwrap(), id.to_string())
        })
        .collect();
    assert_eq!(listed.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [1, 8, 14], "every shard's, in shard order");
    for (line, (shard, _)) in lines.iter().zip(&listed) {
        let (key, id) = &failed[shard];
        assert_eq!((line["task"]["k"].as_str(), line["replayable"].as_bool()), (Some(key.as_str()), Some(true)));
        assert_eq!(line["seq"].as_str(), Some(stream_id_of(id).unwrap().1.as_str()));
    }

    // Repaired, the middle shard's key takes its write again when replayed by its id.
    let (shard, dead_letter) = listed[1].clone();
    let (key, failed_id) = failed[&shard].clone();
    let () = c.del(shards.of(&key).data(&key)).await.unwrap();
    let replay = worker_cli(&env, &["dead-letters", "replay", &dead_letter]);
    let out = String::from_utf8_lossy(&replay.stdout).into_owned();
    assert!(replay.status.success(), "{out}{}", String::from_utf8_lossy(&replay.stderr));
    let new_id = out
        .lines()
        .find_map(|l| l.strip_prefix(&format!("replayed {dead_letter} as task ")))
        .unwrap_or_else(|| panic!("{out}"))
        .to_string();
    assert_eq!(stream_id_of(&new_id).unwrap().0, shard, "the replayed task is queued in its key's shard");
    let t: Value = eventually(Duration::from_secs(10), "the replayed task to apply", || async {
        let t: Value = app.get(&format!("/v1/tasks/{new_id}")).await.json().await.ok()?;
        (t["status"] == "applied").then_some(t)
    })
    .await;
    assert_eq!(t["key"].as_str(), Some(key.as_str()));
    assert_eq!(app.value_of(&key).await.as_deref(), Some("payload"));
    let old: Value = app.get(&format!("/v1/tasks/{failed_id}")).await.json().await.unwrap();
    assert_eq!(old["status"], "failed");

    // The other shards' dead letters stay; the replayed one is gone, and an id naming a shard
    // past the shard count names nothing.
    let list = worker_cli(&env, &["dead-letters", "list"]);
    let left: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(left, [listed[0].1.clone(), listed[2].1.clone()]);
    let past = format!("{}/{}", shards.len(), dead_letter.split_once('/').unwrap().1);
    for id in [dead_letter.as_str(), past.as_str()] {
        let again = worker_cli(&env, &["dead-letters", "replay", id]);
        assert_eq!(again.status.code(), Some(1), "{id}");
        assert!(String::from_utf8_lossy(&again.stderr).contains(&format!("not found {id}")), "{id}");
    }
    app.stop().await;
}

/// A big backlog queued straight into one shard's stream does not keep writes to the other
/// shards waiting: they are applied while most of the backlog is still queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_in_one_shard_does_not_keep_writes_to_the_other_shards_waiting() {
    const BACKLOG: usize = 30_000;
    let cluster = tokio::task::block_in_place(TestCluster::start);
    let mut app = spawn_cluster_app(&cluster, 0, &[]).await;
    let shards = app.store.shards.clone();
    let keys = keys_on_every_shard(&shards, "fair-", 1);
    app.queue_backlog_of_key(&keys[0][0], BACKLOG).await;
    for w in 0..2 {
        let worker = spawn_worker(&app.settings, &format!("worker-{w}")).await;
        app.workers.push(worker);
    }
    let started = Instant::now();
    let writes = keys[1..].iter().map(|k| {
        let http = app.http.clone();
        let key = k[0].clone();
        async move { (http.put(&key, "x", "?wait=20").await, key) }
    });
    for (r, key) in futures_util::future::join_all(writes).await {
        assert_eq!(r.status(), 200, "{key}");
        assert_eq!(r.json::<Value>().await.unwrap()["status"], "applied", "{key}");
    }
    let took = started.elapsed();
    let left = app.store.queue_stats().await.unwrap().depth();
    println!(
        "cluster fairness: writes to {} other shards applied in {} ms, with {left} of {BACKLOG} backlog tasks of shard 0 left",
        keys.len() - 1,
        took.as_millis()
    );
    assert!(left >= BACKLOG as u64 / 2, "the other shards waited for half the backlog: {left} left after {took:?}");
    app.stop().await;
}

/// Task lookups find tasks of every shard, queued and finished, and refuse an id naming a
/// shard past the shard count; listing merges the shards' keys in byte order, and its cursors
/// walk every key once; Idempotency-Keys hold in every shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_listing_and_idempotency_keys_keep_their_contract_across_shards() {
    let cluster = tokio::task::block_in_place(TestCluster::start);
    let app = spawn_cluster_app(&cluster, 0, &[]).await;
    let shards = app.store.shards.clone();
    let stepper = step_worker(&app.settings, "stepper");
    let run_queue =
        || async { while let kvq::worker::Step::Executed(_) = stepper.try_execute_tasks().await.unwrap() {} };

    // Task lookups, queued then finished.
    let mut tasks = Vec::new();
    for keys in keys_on_every_shard(&shards, "task-", 1) {
        let r = app.put(&keys[0], "v", "").await;
        assert_eq!(r.status(), 202);
        tasks.push((keys[0].clone(), r.json::<Value>().await.unwrap()["task_id"].as_str().unwrap().to_string()));
    }
    for expected in ["queued", "applied"] {
        for (key, id) in &tasks {
            let r = app.get(&format!("/v1/tasks/{id}")).await;
            assert_eq!(r.status(), 200, "{key}: task {id}");
            let t: Value = r.json().await.unwrap();
            assert_eq!(
                (t["status"].as_str(), t["key"].as_str(), t["op"].as_str()),
                (Some(expected), Some(key.as_str()), Some("set"))
            );
            assert_eq!(t["version"].is_u64(), expected == "applied", "{t}");
        }
        run_queue().await;
    }
    // The stream id of a real task under a shard number no shard has.
    let (shard, seq) = stream_id_of(&tasks[3].1).unwrap();
    for past in [shard + shards.len(), 0xffff] {
        let forged = task_id_of(&seq, past).unwrap();
        assert_problem(app.get(&format!("/v1/tasks/{forged}")).await, 404, "task").await;
    }

    // Listing: keys in every shard under the prefix, whose byte order differs from other orders.
    let words = ["A", "Z", "a", "z", "0", "9", "_", "~", "é", "ß", "日本", "a b", "a-b", "a.b", "aa"];
    let mut listed: Vec<String> = Vec::new();
    for i in 0.. {
        let covered: BTreeSet<usize> = listed.iter().map(|k| shards.of(k).shard).collect();
        if covered.len() == shards.len() && listed.len() >= 40 {
            break;
        }
        listed.push(format!("ls/{}{i}", words[i % words.len()]));
    }
    for key in listed.iter().chain(&["ls".to_string(), "lr/x".into(), "lt/x".into(), "ls.x".into(), "LS/x".into()]) {
        assert_eq!(app.put_json(&enc(key), json!({ "value": key }), "", &[]).await.status(), 202, "{key}");
    }
    run_queue().await;
    listed.sort();
    for limit in [1, 3, 7, 1000] {
        let (mut seen, mut cursor, mut pages) = (Vec::<String>::new(), None::<String>, 0);
        loop {
            let mut q = format!("/v1/keys?prefix={}&limit={limit}", enc("ls/"));
            if let Some(c) = &cursor {
                q.push_str(&format!("&cursor={}", enc(c)));
            }
            let r = app.get(&q).await;
            assert_eq!(r.status(), 200, "{q}");
            let page: Value = r.json().await.unwrap();
            let items: Vec<String> =
                page["items"].as_array().unwrap().iter().map(|i| i["key"].as_str().unwrap().to_string()).collect();
            assert!(items.len() <= limit, "limit {limit}: {page}");
            for key in &items {
                assert!(seen.last().is_none_or(|last| last < key), "limit {limit}: {key} after {:?}", seen.last());
            }
            seen.extend(items);
            pages += 1;
            assert!(pages <= listed.len() + 1, "limit {limit}: paging does not end");
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => break,
            }
        }
        assert_eq!(seen, listed, "limit {limit}: every key once, in byte order");
    }

    // Idempotency-Keys: a retry is the same task, another body is a conflict; one task each.
    let by_shard = keys_on_every_shard(&shards, "idem-", 1);
    let mut first = Vec::new();
    for shard in [0, 5, 11] {
        let (key, token) = (by_shard[shard][0].clone(), format!("token-{shard}"));
        let header = [("Idempotency-Key", token.as_str())];
        let put = |value: &'static str| app.put_json(&key, json!({ "value": value }), "", &header);
        let r = put("first").await;
        assert_eq!(r.status(), 202);
        let id = r.json::<Value>().await.unwrap()["task_id"].as_str().unwrap().to_string();
        let r = put("first").await;
        assert_eq!(r.json::<Value>().await.unwrap()["task_id"].as_str(), Some(id.as_str()), "{key}: the retry");
        assert_problem(put("second").await, 422, "Idempotency-Key").await;
        first.push((key, id));
    }
    assert_eq!(app.store.queue_stats().await.unwrap().lag, 3, "one task per Idempotency-Key");
    run_queue().await;
    for (key, id) in &first {
        assert_eq!(app.value_of(key).await.as_deref(), Some("first"));
        assert_eq!(app.store.get_task(id).await.unwrap().unwrap().status, TaskStatus::Applied);
    }
    app.stop().await;
}
/// A worker started with another `tasks.shards` than the data in the cluster was written with
/// refuses to work on it: it says which count to set, and writes nothing of its own layout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_with_another_shard_count_refuses_the_cluster_s_data_and_says_why() {
    let cluster = tokio::task::block_in_place(TestCluster::start);
    let app = spawn_cluster_app(&cluster, 1, &[]).await;
    let shards = app.store.shards.clone();
    assert_eq!(app.put("before", "x", "?wait=5").await.status(), 200);
    let mut c = cluster_conn(&cluster).await;
    let layout = shards.layout.clone().unwrap();
    let recorded: Option<u64> = c.get(&layout).await.unwrap();
    assert_eq!(recorded, Some(16), "the shard count is recorded");

    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("worker.log");
    let mut env = cluster.kvq_env();
    env.push(("KVQ__TASKS__SHARDS", "8".into()));
    let _wrong = KvqProcess::worker_logged("wrong", &env, &log);
    eventually(Duration::from_secs(15), "the worker to say which shard count the data needs", || async {
        let text = std::fs::read_to_string(&log).ok()?;
        (text.contains("tasks.shards=16") && text.contains("KVQ__TASKS__SHARDS=16")).then_some(())
    })
    .await;
    let eight = Shards::cluster(&shards.prefix, 8);
    for shard in eight.all().iter().filter(|s| shards.all().iter().all(|t| t.base != s.base)) {
        let exists: bool = c.exists(&shard.stream).await.unwrap();
        assert!(!exists, "the refused worker created {}", shard.stream);
    }
    let recorded: Option<u64> = c.get(&layout).await.unwrap();
    assert_eq!(recorded, Some(16));
    app.stop().await;
}
