//! The chart's own Redis/Sentinel scripts, run as three simulated pods (`support::pods`: the
//! rendered values/production.yaml scripts, env and Secret; one loopback address per pod).
//!
//! Scenarios, in order, with acknowledged writes (WAIT 1) counted after each:
//!   1. fresh bootstrap elects ordinal 0 as the one master;
//!   2. the master's preStop hands mastership over before its processes stop; the pod then
//!      restarts as a replica;
//!   3. kill -9 of the master pod: the sentinels fail over; the pod started again is a replica;
//!   4. all three pods killed and started at once: exactly one master, nothing lost;
//!   5. rolling restart (preStop, stop, start; pod by pod) under continuous write load from a
//!      sentinel-aware client: zero acknowledged writes lost.
//!
//! A second test runs the rendered production server and worker containers (real binaries,
//! rendered env and config, sentinel addresses mapped to the simulated pods) against the
//! simulated set: probes, a write and a read, then again after a preStop handover and after
//! a kill -9 of the master pod. A third restarts the pods one by one under write load through
//! those containers.
//!
//! Needs helm (scripts/chart-tools.sh), redis-server and redis-sentinel, redis-cli, and the
//! loopback addresses 127.0.0.2-3 (Linux routes all of 127/8 to lo).

use std::time::{Duration, Instant};

use crate::support::chart::render;
use crate::support::load::{assert_no_lost_writes_within, Load};
use crate::support::pods::{addr, production_set_with_app, ChartPods, Writer, PODS};
use crate::support::which;

/// The acknowledged keys on `master` whose value is not the one written: `ChartPods::write`
/// stores `k` under `{prefix}:{k}`, the `Writer` stores `n + 1` under `load:{n}`. A missing
/// key counts as wrong.
fn wrong_values(cl: &ChartPods, master: usize, keys: &[String]) -> Vec<String> {
    let e = &cl.endpoints;
    let url = format!("redis://:{}@{}:{}", e.redis_pw, addr(master), e.redis_port);
    let mut c = redis::Client::open(url).unwrap().get_connection().expect("master connection");
    keys.iter()
        .filter(|key| {
            let (prefix, n) = key.rsplit_once(':').expect("prefix:n");
            let n: u64 = n.parse().expect("a numbered key");
            let want = if prefix == "load" { n + 1 } else { n };
            let got: Option<u64> = redis::cmd("GET").arg(key.as_str()).query(&mut c).unwrap();
            got != Some(want)
        })
        .cloned()
        .collect()
}

#[test]
fn chart_scripts_keep_one_master_and_every_acknowledged_write() {
    for bin in ["redis-server", "redis-cli"] {
        which(bin);
    }
    let mut cl = ChartPods::new(&render(&["values/production.yaml"], &[]));
    let mut acked: Vec<String> = Vec::new();

    // 1. Fresh install: all pods start at once; nobody knows a master; ordinal 0 bootstraps.
    cl.start_all();
    let m = cl.wait_one_master(Duration::from_secs(30), "bootstrap");
    assert_eq!(m, 0, "the bootstrap rule makes ordinal 0 master");
    acked.extend(cl.write(m, "boot", 200));
    assert_eq!(acked.len(), 200, "all writes acknowledged on a healthy set");

    // 2. preStop on the master: mastership moves before the processes stop.
    let t = Instant::now();
    let took = cl.run_prestop(m);
    assert!(took < Duration::from_secs(30), "preStop took {took:?}");
    // The hooks have returned and the old master still runs: it must already be a replica.
    assert_eq!(cl.role(m).as_deref(), Some("slave"), "old master after its preStop\n{}", cl.logs());
    let new_master = cl.wait_master(&ChartPods::all_but(m), false, Duration::from_secs(5), "after preStop");
    eprintln!("preStop handover: {took:?} (master {m} -> {new_master})");
    cl.terminate(m);
    assert_eq!(wrong_values(&cl, new_master, &acked), Vec::<String>::new(), "writes lost in the handover");
    cl.start(m);
    let m2 = cl.wait_one_master(Duration::from_secs(30), "pod restarted after preStop");
    assert_eq!(m2, new_master, "the restarted pod rejoins as a replica");
    cl.wait_role(m, "slave", Duration::from_secs(5));
    let more = cl.write(m2, "after-prestop", 100);
    assert_eq!(more.len(), 100, "all writes acknowledged after the preStop handover");
    acked.extend(more);
    eprintln!("rolling stop of one pod: {:?}", t.elapsed());

    // 3. kill -9 the master pod: the sentinels fail over; started again, it is a replica.
    let killed = m2;
    let t = Instant::now();
    cl.kill(killed);
    let m3 = cl.wait_master(&ChartPods::all_but(killed), false, Duration::from_secs(40), "failover after kill -9");
    let failover = t.elapsed();
    eprintln!("failover after kill -9 of the master pod: {failover:?} (master {killed} -> {m3})");
    assert!(failover < Duration::from_secs(30), "failover took {failover:?} from the kill");
    assert_eq!(wrong_values(&cl, m3, &acked), Vec::<String>::new(), "acknowledged writes lost in the failover");
    let more = cl.write(m3, "after-failover", 100);
    assert_eq!(more.len(), 100, "all writes acknowledged after the failover");
    acked.extend(more);
    cl.start(killed);
    let m4 = cl.wait_one_master(Duration::from_secs(30), "killed master restarted");
    assert_eq!(m4, m3, "the old master rejoins as a replica");
    cl.wait_role(killed, "slave", Duration::from_secs(5));
    assert_eq!(wrong_values(&cl, m4, &acked), Vec::<String>::new(), "writes lost when the old master returned");

    // 4. All pods killed and started at once (e.g. a node pool restart).
    let t = Instant::now();
    cl.kill_all();
    cl.start_all();
    let m5 = cl.wait_one_master(Duration::from_secs(60), "all pods restarted at once");
    let full_restart = t.elapsed();
    eprintln!("all pods restarted at once: one master after {full_restart:?} (pod {m5})");
    assert!(full_restart < Duration::from_secs(45), "one master only {full_restart:?} after the kill");
    assert_eq!(wrong_values(&cl, m5, &acked), Vec::<String>::new(), "writes lost in the full restart");
    let more = cl.write(m5, "after-full-restart", 50);
    assert_eq!(more.len(), 50, "writes work again");
    acked.extend(more);

    // 5. Rolling restart under write load, replicas first and the master last (as a
    //    StatefulSet rollout goes from the highest ordinal down, whoever is master).
    let writer = Writer::spawn(&cl);
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    cl.rolling_restart();
    let rollout = t.elapsed();
    assert!(rollout < Duration::from_secs(120), "the rolling restart took {rollout:?}");
    std::thread::sleep(Duration::from_millis(500));
    let (load_acked, failed) = writer.stop();
    let m6 = cl.wait_one_master(Duration::from_secs(10), "after the rolling restart");
    eprintln!(
        "rolling restart of {PODS} pods under load: {:?}; writes acknowledged {}, not acknowledged {failed}",
        t.elapsed(),
        load_acked.len()
    );
    assert!(load_acked.len() > 100, "the writer made progress: {}", load_acked.len());
    acked.extend(load_acked);
    assert_eq!(wrong_values(&cl, m6, &acked), Vec::<String>::new(), "acknowledged writes lost in the rolling restart");
    eprintln!("acknowledged writes: {}, lost: 0", acked.len());
}

/// The rendered production app containers against the chart's own Sentinel set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_app_containers_follow_the_chart_sentinel_set() {
    let (mut cl, mut app, _dir) = production_set_with_app().await;
    let http = app.http(Duration::from_secs(15));
    http.write_read_delete("sentinel-contract-1").await;

    // The master pod stops gracefully (rollout): the app follows the handover.
    let master = tokio::task::block_in_place(|| {
        let m0 = cl.wait_one_master(Duration::from_secs(10), "before handover");
        cl.restart_pod(m0, Duration::from_secs(40), "after handover")
    });
    http.eventually_write_read_delete("sentinel-contract-2", Duration::from_secs(30)).await;

    // kill -9 of the master pod: the app recovers by itself once the sentinels fail over.
    let t = Instant::now();
    tokio::task::block_in_place(|| cl.kill(master));
    http.eventually_write_read_delete("sentinel-contract-3", Duration::from_secs(40)).await;
    let outage = t.elapsed();
    eprintln!("app writing again {outage:?} after kill -9 of the master pod");
    assert!(outage < Duration::from_secs(30), "the app wrote again only {outage:?} after the kill");
    app.probes_pass(Duration::from_secs(30)).await;
}

/// The rolling restart of the first test end to end: the three pods restarted one by one
/// (preStop first) while clients write through the rendered production kvq containers; every
/// write answered 202 must be readable afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_under_kvq_write_load_loses_no_acknowledged_write() {
    let (mut cl, mut app, _dir) = production_set_with_app().await;
    let http = app.http(Duration::from_secs(5));

    let load = Load::start(&http, "roll", 4);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let t = Instant::now();
    tokio::task::block_in_place(|| cl.rolling_restart());
    let restart = t.elapsed();
    assert!(restart < Duration::from_secs(120), "the rolling restart took {restart:?}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let log = load.stop().await;
    assert!(log.abandoned.is_empty(), "writes never acknowledged: {:?}", log.abandoned);
    assert!(log.acked.len() > 100, "the writers made progress: {}", log.acked.len());

    // Every acknowledged write is applied and readable once the queue has drained.
    assert_no_lost_writes_within(&http, &log.acked, Duration::from_secs(60)).await;
    eprintln!(
        "rolling restart through kvq: {restart:?}; writes acknowledged {}, lost 0, refused attempts {} (retried)",
        log.acked.len(),
        log.failures
    );
    app.probes_pass(Duration::from_secs(30)).await;
}
