//! The chart's own Redis Cluster scripts (`redis.mode=cluster`), run as six simulated pods
//! (`support::cluster_pods`: the rendered values/production-cluster.yaml scripts, env and
//! Secret; one loopback address per pod). Data is written through redis-rs cluster clients and
//! acknowledged by a replica (WAIT 1) before each fault; after each fault every acknowledged
//! key must read back with its value and the cluster must be whole again (3 masters owning every
//! slot, 1 connected replica each, every pod ready by the rendered probe).
//!
//! Scenarios, in order:
//!   1. creation from scratch: all pods start at once, pod 0 creates the cluster;
//!   2. kill -9 of a master pod: its replica takes over; restarted, the pod is a replica;
//!   3. all pods killed and started at once, their nodes.conf addresses stale (as after every
//!      pod got a new IP): the cluster comes back with its data;
//!   4. a master pod killed and its volume lost: its replica takes over and the pod, with a new
//!      node id, rejoins as that master's replica; its old id is forgotten;
//!   5. a fourth master by the chart README's steps: an upgrade to 8 pods, whose new pods the
//!      scripts leave alone, then redis-cli add-node and rebalance; the data stays.
//!
//! A second test runs the rendered production-cluster kvq-server and kvq-worker containers
//! (real binaries, rendered env and config, seed nodes mapped to the simulated pods) and
//! restarts the six pods one by one, highest ordinal first (preStop, SIGTERM, start; the next
//! pod once the cluster is whole again), while clients write through them: each master hands
//! its slots to its replica in preStop, and every write answered 202 is readable afterwards.
//!
//! Needs helm (scripts/chart-tools.sh), redis-server and redis-cli 7+, and the loopback
//! addresses 127.0.0.1-6 (Linux routes all of 127/8 to lo).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::support::chart::render;
use crate::support::cluster_pods::{addr, cluster_set_with_app, ClusterPods, Layout};
use crate::support::load::{assert_no_lost_writes_within, Load};
use crate::support::which;

/// Every pod appears exactly once in the layout, as a master or as a replica.
fn assert_distinct_pods(cl: &ClusterPods, layout: &Layout) {
    let mut seen = BTreeSet::new();
    for (m, replicas) in layout {
        assert!(seen.insert(*m), "pod {m} twice in {layout:?}");
        for r in replicas {
            assert!(seen.insert(*r), "pod {r} twice in {layout:?}");
        }
    }
    assert_eq!(seen.len(), cl.n, "every pod is a node of the cluster: {layout:?}");
}

/// The master pod whose replica is `replica`.
fn master_of(layout: &Layout, replica: usize) -> usize {
    *layout.iter().find(|(_, r)| r.contains(&replica)).unwrap_or_else(|| panic!("{replica} in {layout:?}")).0
}

#[test]
fn cluster_scripts_create_rejoin_and_keep_every_acknowledged_write() {
    for bin in ["redis-server", "redis-cli"] {
        which(bin);
    }
    let mut cl = ClusterPods::new(&render(&["values/production-cluster.yaml"], &[]));
    assert_eq!((cl.n, cl.masters, cl.replicas_per_master), (6, 3, 1), "the rendered StatefulSet");
    let mut acked: Vec<String> = Vec::new();

    // 1. Fresh install: every pod starts at once; pod 0 creates the cluster.
    let t = Instant::now();
    cl.start_all();
    let layout = cl.wait_healthy(Duration::from_secs(60), "creation");
    eprintln!("cluster created in {:?}: {layout:?}", t.elapsed());
    assert_distinct_pods(&cl, &layout);
    for i in 0..cl.n {
        assert_eq!(cl.info(i, "cluster_slots_ok").as_deref(), Some("16384"), "pod {i} sees every slot served");
        let me = cl.nodes(i).into_iter().find(|n| n.flags.contains("myself")).unwrap();
        assert_eq!(me.hostname, addr(i), "pod {i} announces its stable name");
    }
    acked.extend(cl.write_acked(&layout, "created", 300));
    for m in layout.keys() {
        assert!(cl.dbsize(*m).unwrap() > 0, "master pod {m} holds some keys: the slots are split");
    }

    // 2. kill -9 of a master pod: its replica takes over; the pod restarts as a replica.
    let (&killed, replicas) = layout.iter().next().unwrap();
    let heir = replicas[0];
    let t = Instant::now();
    cl.kill(killed);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cl.nodes(heir).iter().any(|n| n.flags.contains("myself") && n.is_master() && n.slots() > 0) {
        assert!(Instant::now() < deadline, "replica pod {heir} did not take over\n{}", cl.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("failover after kill -9 of master pod {killed}: {:?} (pod {heir} took over)", t.elapsed());
    assert_eq!(cl.wrong_values(&acked), Vec::<String>::new(), "acknowledged writes lost in the failover");
    cl.start(killed);
    let layout = cl.wait_healthy(Duration::from_secs(40), "killed master restarted");
    assert_eq!(master_of(&layout, killed), heir, "the old master rejoins as its replica's replica: {layout:?}");
    acked.extend(cl.write_acked(&layout, "after-failover", 100));

    // 3. Every pod killed, every address in nodes.conf stale, all started at once. Both copies
    //    of every write die together here, so what counts is the disk: the AOF is fsynced once a
    //    second (appendfsync everysec), and a kill of every copy within that second loses it on
    //    any Redis. The writes above get that second.
    std::thread::sleep(Duration::from_millis(1500));
    let t = Instant::now();
    cl.kill_all();
    cl.make_addresses_stale();
    cl.start_all();
    let layout = cl.wait_healthy(Duration::from_secs(60), "all pods restarted at once with stale addresses");
    eprintln!("all pods restarted with new addresses: healthy after {:?}", t.elapsed());
    assert_distinct_pods(&cl, &layout);
    assert_eq!(cl.wrong_values(&acked), Vec::<String>::new(), "writes lost in the full restart");
    acked.extend(cl.write_acked(&layout, "after-full-restart", 100));

    // 4. A master pod loses its volume: it must come back as a replica, never owning slots.
    let (&lost, replicas) = layout.iter().next().unwrap();
    let heir = replicas[0];
    let old_id = cl.nodes(lost).into_iter().find(|n| n.flags.contains("myself")).unwrap().id;
    let t = Instant::now();
    cl.kill(lost);
    cl.wipe_volume(lost);
    cl.start(lost);
    let deadline = Instant::now() + Duration::from_secs(60);
    let layout = loop {
        // Never a master with slots and no data.
        let me = cl.nodes(lost).into_iter().find(|n| n.flags.contains("myself"));
        if let Some(me) = me {
            assert!(me.slots() == 0 || cl.dbsize(lost) > Some(0), "the empty pod owns slots: {me:?}");
        }
        if let Ok(layout) = cl.healthy(heir) {
            break layout;
        }
        assert!(Instant::now() < deadline, "pod {lost} with an empty volume did not rejoin\n{}", cl.logs());
        std::thread::sleep(Duration::from_millis(200));
    };
    let layout_all = cl.wait_healthy(Duration::from_secs(20), "empty volume rejoined");
    assert_eq!(layout, layout_all);
    eprintln!("pod {lost} with an empty volume rejoined in {:?}: {layout:?}", t.elapsed());
    assert_eq!(master_of(&layout, lost), heir, "it replicates the master that lacked a replica");
    for i in 0..cl.n {
        assert!(cl.nodes(i).iter().all(|n| n.id != old_id), "pod {i} still knows the old id {old_id}");
    }
    assert_eq!(cl.wrong_values(&acked), Vec::<String>::new(), "writes lost with the volume");
    acked.extend(cl.write_acked(&layout, "after-empty-volume", 100));

    // 5. A fourth master, by the chart README's steps ("Scaling the number of shards"): the
    //    upgrade adds two pods, which the scripts leave alone; redis-cli joins them and moves
    //    a share of the slots, with the data, to the new master.
    let t = Instant::now();
    let pw = format!("redis.auth.password={}", cl.password);
    cl.grow(&render(&["values/production-cluster.yaml"], &["redis.cluster.masters=4", &pw]));
    assert_eq!(cl.n, 8);
    cl.start(6);
    cl.start(7);
    std::thread::sleep(Duration::from_secs(3));
    for i in [6, 7] {
        assert_eq!(cl.info(i, "cluster_known_nodes").as_deref(), Some("1"), "pod {i} joined by itself\n{}", cl.logs());
        assert!(cl.probe(i, "readinessProbe").is_err(), "pod {i} is not ready before it is a member");
    }
    cl.redis_cli(&["--cluster", "add-node", &cl.node_addr(6), &cl.node_addr(0)]);
    let new_master = cl.nodes(6).into_iter().find(|n| n.flags.contains("myself")).unwrap().id;
    // As the README says: wait until the node redis-cli reads the cluster from knows the new
    // master and every node agrees (redis-cli checks that before it adds).
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(cl.nodes(0).iter().any(|n| n.id == new_master)
        && cl.redis_cli_ok(&["--cluster", "check", &cl.node_addr(0)]))
    {
        assert!(Instant::now() < deadline, "the nodes never agreed on the new master\n{}", cl.logs());
        std::thread::sleep(Duration::from_millis(500));
    }
    // The replica joins as an empty master and replicates the new one once gossip told it of
    // it: `--cluster-slave` sends CLUSTER REPLICATE without waiting and failed "Unknown node".
    cl.redis_cli(&["--cluster", "add-node", &cl.node_addr(7), &cl.node_addr(0)]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let (host7, port) = (addr(7), cl.port.to_string());
    while !cl.redis_cli(&["-h", &host7, "-p", &port, "CLUSTER", "REPLICATE", &new_master]).starts_with("OK") {
        assert!(Instant::now() < deadline, "pod 7 never learnt of the new master\n{}", cl.logs());
        std::thread::sleep(Duration::from_millis(500));
    }
    // Until the rebalance the new master owns nothing, and stays a master.
    std::thread::sleep(Duration::from_secs(3));
    let me = cl.nodes(6).into_iter().find(|n| n.flags.contains("myself")).unwrap();
    assert!(me.is_master() && me.slots() == 0, "pod 6 before the rebalance: {me:?}\n{}", cl.logs());
    // The new nodes accept slots once they see the cluster as up (a second or so after joining).
    let deadline = Instant::now() + Duration::from_secs(30);
    while [6, 7].iter().any(|&i| cl.info(i, "cluster_state").as_deref() != Some("ok")) {
        assert!(Instant::now() < deadline, "the new nodes never saw the cluster up\n{}", cl.logs());
        std::thread::sleep(Duration::from_millis(200));
    }
    cl.redis_cli(&["--cluster", "rebalance", &cl.node_addr(0), "--cluster-use-empty-masters"]);
    let layout = cl.wait_healthy(Duration::from_secs(60), "a fourth master");
    eprintln!("a fourth master joined and rebalanced in {:?}: {layout:?}", t.elapsed());
    assert_eq!(layout.get(&6), Some(&vec![7]), "pod 6 a master with pod 7 its replica: {layout:?}");
    assert!(cl.dbsize(6).unwrap() > 0, "keys moved to the new master");
    assert_eq!(cl.wrong_values(&acked), Vec::<String>::new(), "writes lost in the rebalance");
    let more = cl.write_acked(&layout, "after-rebalance", 100);
    assert_eq!(cl.wrong_values(&more), Vec::<String>::new(), "writes to the grown cluster");
}

/// The rolling restart of the first test end to end, through the rendered kvq containers: the
/// six pods restarted one by one from the highest ordinal (preStop first, then the next pod
/// once the cluster is whole again) while clients write; no write answered 202 is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_rolling_restart_under_kvq_write_load_loses_no_acknowledged_write() {
    let (mut cl, mut app, _dir) = cluster_set_with_app(&["values/production-cluster.yaml"]).await;
    let http = app.http(Duration::from_secs(5));
    http.write_read_delete("cluster-chart-key").await;

    let load = Load::start(&http, "roll", 4);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let t = Instant::now();
    tokio::task::block_in_place(|| {
        for i in (0..cl.n).rev() {
            // A master hands its slots to its replica in preStop, before it stops.
            let was_master = cl.healthy(i).unwrap().contains_key(&i);
            let took = cl.run_prestop(i);
            if was_master {
                let me = cl.nodes(i).into_iter().find(|n| n.flags.contains("myself")).unwrap();
                assert!(!me.is_master(), "master pod {i} must be a replica after its preStop ({took:?}): {me:?}");
            }
            cl.terminate(i);
            cl.start(i);
            cl.wait_healthy(Duration::from_secs(40), &format!("rolling restart of pod {i}"));
        }
    });
    let restart = t.elapsed();
    assert!(restart < Duration::from_secs(150), "the rolling restart took {restart:?}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let log = load.stop().await;
    assert!(log.abandoned.is_empty(), "writes never acknowledged: {:?}", log.abandoned);
    assert!(log.acked.len() > 100, "the writers made progress: {}", log.acked.len());

    assert_no_lost_writes_within(&http, &log.acked, Duration::from_secs(60)).await;
    eprintln!(
        "cluster rolling restart through kvq: {restart:?}; writes acknowledged {}, lost 0, refused attempts {} (retried), slowest write {:?}",
        log.acked.len(),
        log.failures,
        log.slowest_ack
    );
    app.probes_pass(Duration::from_secs(30)).await;
}
