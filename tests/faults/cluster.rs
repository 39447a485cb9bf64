//! Redis Cluster fault tests: a real 3 masters x 1 replica cluster on loopback
//! (`support::redis_cluster`), kill -9 of a master and slot migration.
//! Each prints its figures; `cargo test --test faults cluster -- --nocapture` shows them.

use std::time::Duration;

use redis::AsyncCommands;

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
