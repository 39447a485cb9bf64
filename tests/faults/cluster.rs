//! Redis Cluster fault tests: a real cluster of 3 masters with 1 or 2 replicas each on loopback
//! (`support::redis_cluster`), the real kvq binaries in cluster mode with `MIN_REPLICAS_ACK=1`
//! under write load, kill -9 of a master and resharding of queue shards.
//! Each prints its figures; `cargo test --test faults cluster -- --nocapture` shows them.

use std::time::{Duration, Instant};

use redis::AsyncCommands;

use crate::support::load::{
    assert_latest_within, assert_no_lost_writes_within, lost_writes, stale_writes, Load, LoadLog,
};
use crate::support::redis_cluster::{field, TestCluster};
use crate::support::*;

/// The harness itself: the cluster forms with a password; keys written through a cluster client
/// survive the kill -9 of their master (its replica takes over) and the move of their slot to
/// another master, and the client follows both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_test_cluster_fails_over_and_moves_slots_keeping_every_key() {
    let mut cluster = TestCluster::builder().password("cluster-pw").start();
    assert_eq!(cluster.masters_now().len(), 3, "3 masters serve slots");
    let mut c = cluster.client().get_async_connection().await.unwrap();
    // One hash tag: 25 keys in one slot, so a migration takes several MIGRATE batches.
    let keys: Vec<String> = (0..25).map(|i| format!("{{harness}}:{i}")).collect();
    for k in &keys {
        let () = c.set(k, k).await.unwrap();
    }
    cluster.wait_replicated(Duration::from_secs(10));
    let slot = cluster.slot_of(&keys[0]);
    let old = cluster.master_of_slot(slot);

    cluster.kill9(old);
    let new = cluster.wait_failover(old, Duration::from_secs(30));
    assert_ne!(new, old);
    let values = eventually(Duration::from_secs(10), "the cluster client to read from the new master", || {
        let mut c = c.clone();
        let keys = keys.clone();
        async move { c.mget::<_, Vec<Option<String>>>(&keys).await.ok() }
    })
    .await;
    assert_eq!(values, keys.iter().map(|k| Some(k.clone())).collect::<Vec<_>>(), "every key survived the failover");

    cluster.restart(old);
    cluster.wait_healthy(Duration::from_secs(30));
    assert_eq!(field(&cluster.info(old, "replication"), "role"), Some("slave"), "the old master rejoined as a replica");

    let to = *cluster.masters_now().keys().find(|&&m| m != new).unwrap();
    cluster.migrate_slots(slot..=slot, new, to, 10);
    assert_eq!(cluster.master_of_slot(slot), to);
    let held: u64 = redis::cmd("CLUSTER").arg("COUNTKEYSINSLOT").arg(slot).query(&mut cluster.conn(to)).unwrap();
    assert_eq!(held, keys.len() as u64, "the keys moved with their slot");
    let left: u64 = redis::cmd("CLUSTER").arg("COUNTKEYSINSLOT").arg(slot).query(&mut cluster.conn(new)).unwrap();
    assert_eq!(left, 0, "nothing stayed behind");
    let values: Vec<Option<String>> = c.mget(&keys).await.unwrap();
    assert_eq!(values, keys.iter().map(|k| Some(k.clone())).collect::<Vec<_>>(), "the client followed MOVED");
    println!("cluster harness: slot {slot} failed over from node {old} to node {new}, then moved to node {to}; keys per master {:?}", cluster.keys_per_master());
}

/// kvq in cluster mode against `cluster`: every write confirmed by the shard master's replica,
/// entries reclaimed after 1 s on a dead worker.
fn app_env(cluster: &TestCluster) -> Vec<(&'static str, String)> {
    let mut env = cluster.kvq_env();
    env.push(("KVQ__REDIS__MIN_REPLICAS_ACK", "1".into()));
    env.push(("KVQ__WORKER__CLAIM_IDLE_MS", "1000".into()));
    env
}

/// A real server and two workers in cluster mode; the server's client once it is ready.
async fn start_app(env: &[(&'static str, String)]) -> (KvqProcess, [KvqProcess; 2], HttpClient) {
    let server = KvqProcess::server(env);
    let workers = [KvqProcess::worker("w1", env), KvqProcess::worker("w2", env)];
    let http = server.http(Duration::from_secs(5));
    http.wait_status("/readyz", 200, Duration::from_secs(20)).await;
    (server, workers, http)
}

/// Both loads of a fault test: unique keys (nothing lost) and keys overwritten in turn (per-key
/// order: each key ends with its writer's last acknowledged value), spread over every shard.
struct Loads {
    unique: Load,
    overwrites: Load,
}

impl Loads {
    fn start(http: &HttpClient, prefix: &str) -> Self {
        Self {
            unique: Load::start(http, &format!("{prefix}-u"), 4),
            overwrites: Load::start_overwriting(http, &format!("{prefix}-o"), 4, 8),
        }
    }

    /// Writes acknowledged so far.
    fn acked(&self) -> u64 {
        self.unique.log().writes + self.overwrites.log().writes
    }

    /// Lets the load run for `for_at_least`, then waits until every load that saw a failed
    /// attempt has had its writes acknowledged again for `for_at_least` since its last one.
    async fn wait_resumed(&self, for_at_least: Duration, timeout: Duration) {
        tokio::time::sleep(for_at_least).await;
        let deadline = Instant::now() + timeout;
        loop {
            let logs = [self.unique.log().clone(), self.overwrites.log().clone()];
            let again = |l: &LoadLog| {
                l.failures == 0
                    || l.resumed.is_some_and(|r| l.last_failure.is_some_and(|f| r > f) && r.elapsed() > for_at_least)
            };
            if logs.iter().all(again) {
                return;
            }
            let state: Vec<String> = logs
                .iter()
                .map(|l| {
                    let ago = |t: Option<Instant>| t.map(|t| format!("{} ms ago", t.elapsed().as_millis()));
                    format!(
                        "acknowledged {}, failed attempts {}, last failure {:?}, resumed {:?}",
                        l.last_acked.len(),
                        l.failures,
                        ago(l.last_failure),
                        ago(l.resumed)
                    )
                })
                .collect();
            assert!(Instant::now() < deadline, "writes did not succeed again within {timeout:?}: {state:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops both; asserts nothing was lost, abandoned or reordered; returns (unique, overwrites).
    async fn stop_and_check(self, http: &HttpClient) -> (LoadLog, LoadLog) {
        let unique = self.unique.stop().await;
        let overwrites = self.overwrites.stop().await;
        assert!(unique.abandoned.is_empty(), "every write eventually got through: {:?}", unique.abandoned);
        assert!(overwrites.abandoned.is_empty(), "every write eventually got through: {:?}", overwrites.abandoned);
        assert_no_lost_writes_within(http, &unique.acked, Duration::from_secs(60)).await;
        assert_latest_within(http, &overwrites.last_acked, Duration::from_secs(60)).await;
        (unique, overwrites)
    }
}

/// `errorstat_<code>` counts of node `i`: the errors it answered (`MOVED`, `ASK`, `TRYAGAIN`).
fn errors_answered(cluster: &TestCluster, i: usize, code: &str) -> u64 {
    let info = cluster.info(i, "errorstats");
    field(&info, &format!("errorstat_{code}"))
        .and_then(|v| v.strip_prefix("count="))
        .and_then(|n| n.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_under_write_load_loses_no_acknowledged_write_and_keeps_per_key_order() {
    // Two replicas per master: once one is promoted, every shard still has a replica to confirm
    // its writes (with one, writes to the promoted master's shards are refused until the old
    // master is back, as they must be with MIN_REPLICAS_ACK=1).
    let mut cluster = TestCluster::builder().replicas(2).start();
    let env = app_env(&cluster);
    let (server, _workers, http) = start_app(&env).await;

    let loads = Loads::start(&http, "kill");
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The master holding the most keys: its shards hold queued and stored writes.
    let (victim, keys) = cluster.keys_per_master().into_iter().max_by_key(|(_, n)| *n).unwrap();
    assert!(keys > 0, "the load wrote to the cluster");
    let acked_before_kill = loads.acked();
    assert!(acked_before_kill > 0, "writes were acknowledged before the kill");
    // The worst moment to lose a master: its replicas crashed a second before, so whatever it
    // took meanwhile exists on it alone; they come back right after it dies and one takes over.
    // Only writes a replica held may have been acknowledged. (A frozen replica would not do:
    // what the master sent sits in the replica's socket buffer and arrives once it is thawed.)
    // The replicas crash holding the same writes (the master's writes paused until they caught
    // up): restarted from their AOF neither knows its replication offset, so either may be
    // promoted, and `WAIT 1` promises one copy, not two.
    let replicas = cluster.replicas_of(victim);
    assert_eq!(replicas.len(), 2, "the victim's replicas: {replicas:?}");
    let mut victim_conn = cluster.conn(victim);
    redis::cmd("CLIENT").arg("PAUSE").arg(10_000).arg("WRITE").query::<()>(&mut victim_conn).unwrap();
    tokio::task::block_in_place(|| cluster.wait_replicated(Duration::from_secs(10)));
    for &r in &replicas {
        cluster.kill9(r);
    }
    redis::cmd("CLIENT").arg("UNPAUSE").query::<()>(&mut victim_conn).unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let killed_at = Instant::now();
    cluster.kill9(victim);
    for &r in &replicas {
        cluster.restart(r);
    }
    let promoted = tokio::task::block_in_place(|| cluster.wait_failover(victim, Duration::from_secs(30)));
    let failover = killed_at.elapsed();
    loads.wait_resumed(Duration::from_secs(2), Duration::from_secs(40)).await;
    let acked_after_kill = loads.acked() - acked_before_kill;
    let (unique, overwrites) = loads.stop_and_check(&http).await;

    // Writes to the killed master's shards fail until kvq reaches the promoted replica (or are
    // held until then): the window is the later of the last failure and the slowest write.
    let outage = [&unique, &overwrites].iter().filter_map(|l| l.outage_since(killed_at)).max().unwrap_or_default();
    let slowest = unique.slowest_ack.max(overwrites.slowest_ack);
    let window = outage.max(slowest);
    println!(
        "cluster master kill -9 (its replicas killed 1 s before, restarted after): node {victim} ({keys} keys) replaced by node \
         {promoted} in {} ms; writes acknowledged again for good {} ms after the kill; slowest single write {} ms; \
         acknowledged {} writes of unique keys + {} overwrites of {} keys ({acked_after_kill} after the kill), \
         failed attempts {}, lost=0, stale=0",
        failover.as_millis(),
        outage.as_millis(),
        slowest.as_millis(),
        unique.writes,
        overwrites.writes,
        overwrites.last_acked.len(),
        unique.failures + overwrites.failures,
    );
    assert!(acked_after_kill > 0, "writes resumed after the kill");
    // The cluster marks the master failed after cluster-node-timeout (1 s here) and promotes
    // a replica; kvq follows on its next failed write. Seconds, not tens of seconds.
    assert!(window < Duration::from_secs(30), "writes were unavailable for {window:?} after the kill");

    // The old master comes back as a replica; kvq must not keep writing to its address.
    cluster.restart(victim);
    tokio::task::block_in_place(|| cluster.wait_healthy(Duration::from_secs(30)));
    assert_eq!(field(&cluster.info(victim, "replication"), "role"), Some("slave"));
    let mut after = std::collections::BTreeSet::new();
    for i in 0..48 {
        let key = format!("after-{i}");
        assert_eq!(http.put(&key, &key, "?wait=5").await.status(), 200, "write after the old master returned");
        after.insert(key);
    }
    assert!(lost_writes(&http, &after).await.is_empty());
    assert!(lost_writes(&http, &unique.acked).await.is_empty(), "lost after the old master returned");
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resharding_queue_shards_under_write_load_loses_nothing_and_keeps_per_key_order() {
    let cluster = TestCluster::builder().password("cluster-pw").start();
    let env = app_env(&cluster);
    let (_server, _workers, http) = start_app(&env).await;

    let loads = Loads::start(&http, "move");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(loads.acked() > 0, "writes were acknowledged before the move");
    // Queue shards are found by their task streams: the two lowest-numbered stream slots of the
    // first master, and everything between them, move to another master.
    let masters = cluster.masters_now();
    let from = *masters.keys().next().unwrap();
    let to = *masters.keys().nth(1).unwrap();
    let mut slots: Vec<u16> = stream_keys(&cluster, from).iter().map(|k| cluster.slot_of(k)).collect();
    slots.sort();
    slots.dedup();
    assert!(slots.len() >= 2, "the first master holds at least two queue shards: {slots:?}");
    let range = slots[0]..=slots[1];
    let keys_moving: u64 = [slots[0], slots[1]].iter().map(|&s| keys_in_slot(&cluster, from, s)).sum();
    let redirects_before = redirects(&cluster, from) + redirects(&cluster, to);

    let started = Instant::now();
    // Small batches: the slots stay half-moved for many round trips (ASK and TRYAGAIN answers).
    tokio::task::block_in_place(|| cluster.migrate_slots(range.clone(), from, to, 5));
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (unique, overwrites) = loads.stop_and_check(&http).await;

    for &slot in &[slots[0], slots[1]] {
        assert_eq!(keys_in_slot(&cluster, from, slot), 0, "slot {slot} left nothing behind");
        let moved = keys_in_slot_list(&cluster, to, slot);
        let mut c = cluster.conn(to);
        let types: Vec<String> = moved.iter().map(|k| redis::cmd("TYPE").arg(k).query(&mut c).unwrap()).collect();
        assert!(types.iter().any(|t| t == "stream"), "slot {slot}'s task stream moved: {moved:?}");
        assert!(types.iter().any(|t| t != "stream"), "slot {slot}'s data keys moved: {moved:?}");
    }
    let redirected = redirects(&cluster, from) + redirects(&cluster, to) - redirects_before;
    println!(
        "cluster resharding: slots {}..={} ({keys_moving} keys in its two queue shards) moved from node {from} to \
         node {to} in {} ms under load; {redirected} MOVED/ASK/TRYAGAIN answers; slowest single write {} ms; \
         failed attempts {}; acknowledged {} writes of unique keys + {} overwrites of {} keys, lost=0, stale=0",
        range.start(),
        range.end(),
        took.as_millis(),
        unique.slowest_ack.max(overwrites.slowest_ack).as_millis(),
        unique.failures + overwrites.failures,
        unique.writes,
        overwrites.writes,
        overwrites.last_acked.len(),
    );
    assert!(redirected > 0, "kvq was redirected while its shards moved (MOVED/ASK handled)");
    let slowest = unique.slowest_ack.max(overwrites.slowest_ack);
    assert!(slowest < Duration::from_secs(15), "a write waited {slowest:?} while its shard moved");
}

/// The stream keys on node `i` (`SCAN ... TYPE stream`).
fn stream_keys(cluster: &TestCluster, i: usize) -> Vec<String> {
    let mut c = cluster.conn(i);
    let mut keys = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, batch): (u64, Vec<String>) =
            redis::cmd("SCAN").arg(cursor).arg("COUNT").arg(1000).arg("TYPE").arg("stream").query(&mut c).unwrap();
        keys.extend(batch);
        if next == 0 {
            return keys;
        }
        cursor = next;
    }
}

fn keys_in_slot(cluster: &TestCluster, i: usize, slot: u16) -> u64 {
    redis::cmd("CLUSTER").arg("COUNTKEYSINSLOT").arg(slot).query(&mut cluster.conn(i)).unwrap()
}

fn keys_in_slot_list(cluster: &TestCluster, i: usize, slot: u16) -> Vec<String> {
    redis::cmd("CLUSTER").arg("GETKEYSINSLOT").arg(slot).arg(100_000).query(&mut cluster.conn(i)).unwrap()
}

/// MOVED, ASK and TRYAGAIN answers node `i` gave.
fn redirects(cluster: &TestCluster, i: usize) -> u64 {
    ["MOVED", "ASK", "TRYAGAIN"].iter().map(|c| errors_answered(cluster, i, c)).sum()
}

/// A worker frozen (SIGSTOP) with tasks in hand while each writer keeps overwriting its one key:
/// newer writes of the same keys are applied by the other worker, which later reclaims the
/// frozen worker's older tasks. Each must end as superseded, never overwriting a newer write;
/// thawed, the frozen worker's late applies change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_frozen_with_tasks_in_hand_is_overtaken_and_every_key_keeps_its_last_write() {
    let cluster = TestCluster::start();
    let mut env = app_env(&cluster);
    // Long enough that the load is stopped before the frozen worker's tasks are reclaimed.
    env.push(("KVQ__WORKER__CLAIM_IDLE_MS", "3000".into()));
    let (server, workers, http) = start_app(&env).await;
    let load = Load::start_overwriting(&http, "overtaken", 8, 1);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let streams: Vec<(usize, String)> = cluster
        .masters_now()
        .into_keys()
        .flat_map(|m| stream_keys(&cluster, m).into_iter().filter(|k| k.ends_with(":tasks")).map(move |k| (m, k)))
        .collect();
    assert!(!streams.is_empty(), "the load created task streams");

    // Frozen while it holds entries it has not applied (held still after a moment: an apply
    // already sent would have acknowledged them).
    let deadline = Instant::now() + Duration::from_secs(20);
    let held = loop {
        workers[0].signal("STOP");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let held = pending_on(&cluster, &streams, "w1");
        if held > 0 {
            break held;
        }
        workers[0].signal("CONT");
        assert!(Instant::now() < deadline, "the worker never held pending tasks");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let before = load.log().writes;
    eventually(Duration::from_secs(10), "newer writes of the same keys", || async {
        (load.log().writes >= before + 24).then_some(())
    })
    .await;
    let log = load.stop().await;
    eventually(Duration::from_secs(20), "the frozen worker's tasks reclaimed and applied", || async {
        let depth = http.try_get_text("/metrics").await.and_then(|(_, t)| {
            t.lines().find_map(|l| l.strip_prefix("kvq_queue_depth ")).and_then(|v| v.trim().parse::<u64>().ok())
        });
        (pending_on(&cluster, &streams, "w1") == 0 && depth == Some(0)).then_some(())
    })
    .await;
    let stale = stale_writes(&http, &log.last_acked).await;
    assert!(stale.is_empty(), "older tasks overwrote newer writes: {stale:?}");

    // Thawed, the frozen worker applies what it held: redeliveries that change nothing.
    workers[0].signal("CONT");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stale = stale_writes(&http, &log.last_acked).await;
    assert!(stale.is_empty(), "the thawed worker's late applies overwrote newer writes: {stale:?}");
    let m = scrape(&workers[1].url("/metrics")).await;
    let superseded = m.get("kvq_tasks_finished_total{status=\"superseded\"}").unwrap_or(0.0);
    assert!(superseded >= 1.0, "the reclaimed tasks met newer writes of their keys:\n{}", m.text);
    println!(
        "cluster worker overtaken: {held} tasks held by the frozen worker, reclaimed by the other; {} writes of {} keys \
         acknowledged, each key ends at its last one; the other worker finished {} as superseded",
        log.writes,
        log.last_acked.len(),
        superseded,
    );
    drop(server);
}

/// Entries of kvq's group pending on `consumer` over every task stream.
fn pending_on(cluster: &TestCluster, streams: &[(usize, String)], consumer: &str) -> usize {
    streams
        .iter()
        .map(|(m, stream)| {
            let pending: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
                .arg(stream)
                .arg("kvq-workers")
                .arg("-")
                .arg("+")
                .arg(10_000)
                .arg(consumer)
                .query(&mut cluster.conn(*m))
                .unwrap_or_default();
            pending.len()
        })
        .sum()
}
