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
//! A TLS + ACL test runs the same scripts with `redis.tls` (mutual TLS) and `redis.acl` on,
//! certificates made by the test: bootstrap, kill -9 of the master (failover over TLS), a preStop
//! handover, while clients write through the rendered kvq containers as their ACL users.
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
use crate::support::pods::{
    addr, auth_values, production_set_with_app, rotation_values, set_with_app, tls_acl_values, ChartPods, Writer, PODS,
};
use crate::support::which;

/// The acknowledged keys on `master` whose value is not the one written: `ChartPods::write`
/// stores `k` under `{prefix}:{k}`, the `Writer` stores `n + 1` under `load:{n}`. A missing
/// key counts as wrong.
fn wrong_values(cl: &ChartPods, master: usize, keys: &[String]) -> Vec<String> {
    let mut c = cl.endpoints.redis(&addr(master)).expect("master connection");
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
    let m = cl.wait_one_master(Duration::from_secs(60), "bootstrap");
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

/// Passwords a Kubernetes Secret can hold but shells, redis.conf and URLs treat specially work
/// the same for every party: redis (requirepass, and masterauth: writes acknowledged by a
/// replica), the sentinels (auth-pass to the master, requirepass and sentinel-pass among
/// themselves: a failover after kill -9), every rendered exec probe, and the rendered kvq
/// containers, which get the Secret's bytes unchanged through env.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_passwords_work_for_redis_sentinel_probes_and_kvq() {
    // 512 bytes: every non-NUL ASCII byte (controls, DEL, quotes, backslash), cycled.
    let long: String = (0..512).map(|i| char::from(1 + (i % 127) as u8)).collect();
    let table: [(&str, String); 4] = [
        ("backslashes and quotes", r#"a\b\\c\\\d"e'f\n\x41\"#.to_string()),
        ("spaces, $ and #", " $HOME ${PATH} $(id) `id` # not a comment ; & | * ? ".to_string()),
        ("trailing newline", "ends with a newline\n".to_string()),
        ("512 bytes", long),
    ];
    for (n, (what, pw)) in table.into_iter().enumerate() {
        // The sentinel password: as hostile, and different from the Redis one.
        let sentinel_pw: String = pw.chars().rev().collect();
        let vdir = tempfile::tempdir().unwrap();
        let values = auth_values(vdir.path(), &pw, &sentinel_pw);
        let (mut cl, mut app, _dir) = set_with_app(&["values/production.yaml", values.to_str().unwrap()]).await;
        assert_eq!(cl.endpoints.redis_pw, pw, "{what}: the rendered Secret holds the password");
        assert_eq!(cl.endpoints.sentinel_pw, sentinel_pw, "{what}: the rendered Secret holds the sentinel password");
        let master = tokio::task::block_in_place(|| {
            let m = cl.wait_one_master(Duration::from_secs(30), what);
            for i in 0..PODS {
                for (container, kind) in [
                    ("redis", "startupProbe"),
                    ("redis", "livenessProbe"),
                    ("redis", "readinessProbe"),
                    ("sentinel", "startupProbe"),
                    ("sentinel", "livenessProbe"),
                    ("sentinel", "readinessProbe"),
                ] {
                    if let Err(e) = cl.probe(i, container, kind) {
                        panic!("{what}: pod {i} {container} {kind} fails: {e}");
                    }
                }
            }
            assert_eq!(cl.write(m, "pw", 20).len(), 20, "{what}: writes acknowledged by a replica (masterauth)");
            m
        });
        let http = app.http(Duration::from_secs(15));
        http.write_read_delete(&format!("password-{n}-a")).await;
        tokio::task::block_in_place(|| cl.kill(master));
        http.eventually_write_read_delete(&format!("password-{n}-b"), Duration::from_secs(40)).await;
        tokio::task::block_in_place(|| {
            cl.wait_master(&ChartPods::all_but(master), false, Duration::from_secs(10), what);
        });
        app.probes_pass(Duration::from_secs(30)).await;
        eprintln!("{what}: redis, sentinels, probes and kvq agree");
    }
}

/// The master pod comes back on an empty volume (a lost disk, a deleted PVC) while the
/// sentinels, slow to fail over, still name it master: it must not start as master (its
/// replicas would full-sync the empty data set). It waits past SELF_MASTER_WAIT, and once the
/// sentinels fail over it starts as a replica of the new master; no acknowledged write is lost.
#[test]
fn an_empty_volume_never_becomes_master_of_a_set_with_data() {
    let mut cl = ChartPods::new(&render(&["values/production.yaml"], &[]));
    cl.start_all();
    let m = cl.wait_one_master(Duration::from_secs(60), "bootstrap");
    let acked = cl.write(m, "kept", 200);
    assert_eq!(acked.len(), 200, "all writes acknowledged on a healthy set");

    // Sentinels slow to notice the master is gone.
    for i in 0..PODS {
        cl.sentinel_set(i, "down-after-milliseconds", "600000");
    }
    cl.kill(m);
    cl.wipe_volume(m);
    cl.start(m);
    let self_master_wait: u64 = cl.redis_env_value("SELF_MASTER_WAIT").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(self_master_wait + 10);
    while Instant::now() < deadline {
        assert_ne!(cl.role(m).as_deref(), Some("master"), "the empty pod {m} started as master\n{}", cl.logs());
        std::thread::sleep(Duration::from_millis(200));
    }
    for r in ChartPods::all_but(m) {
        assert_eq!(cl.missing(r, &acked), Vec::<String>::new(), "replica {r} lost data while the empty pod waited");
    }

    // The sentinels fail over at last: the empty pod follows the new master.
    for i in ChartPods::all_but(m) {
        cl.sentinel_set(i, "down-after-milliseconds", "5000");
    }
    let m2 = cl.wait_one_master(Duration::from_secs(60), "failover away from the empty pod");
    assert_ne!(m2, m, "the empty pod must not be master");
    assert_eq!(cl.role(m).as_deref(), Some("slave"), "the empty pod ends as a replica");
    assert_eq!(cl.missing(m2, &acked), Vec::<String>::new(), "acknowledged writes lost");
    assert_eq!(cl.missing(m, &acked), Vec::<String>::new(), "the empty pod synced the data");
}

/// A replica loading a full sync answers LOADING to PING for as long as the load takes; the
/// rendered liveness and startup probes must accept it (a kill would restart the load from
/// scratch, forever for a large data set), while the readiness probe keeps it out of service.
#[test]
fn liveness_accepts_a_replica_loading_a_full_sync_and_readiness_does_not() {
    let mut cl = ChartPods::new(&render(&["values/production.yaml"], &[]));
    cl.start_all();
    let m = cl.wait_one_master(Duration::from_secs(60), "bootstrap");
    cl.fill(m, "bulk", 20_000);
    let r = ChartPods::all_but(m)[0];
    // 500 µs per key while loading: about 10 s for the full sync of 20 000 keys.
    cl.redis_cmd(r, &["CONFIG", "SET", "key-load-delay", "500"]).unwrap();
    // Answer clients every ~8 keys while loading (as a large data set does every 2 MB).
    cl.redis_cmd(r, &["CONFIG", "SET", "loading-process-events-interval-bytes", "1024"]).unwrap();
    // A replica that was master for a moment cannot resume: it gets a full sync.
    cl.redis_cmd(r, &["REPLICAOF", "NO", "ONE"]).unwrap();
    let port = cl.endpoints.redis_port.to_string();
    cl.redis_cmd(r, &["REPLICAOF", &crate::support::pods::addr(m), &port]).unwrap();

    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = std::collections::BTreeSet::new();
    loop {
        match cl.redis_cmd(r, &["PING"]) {
            Err(e) if e.to_lowercase().contains("loading") => break,
            other => {
                seen.insert(format!("{other:?}"));
                assert!(Instant::now() < deadline, "replica {r} never started loading: {seen:?}\n{}", cl.logs())
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut checks = 0;
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        if let Err(e) = cl.probe(r, "redis", "livenessProbe") {
            panic!("liveness fails on a loading replica: {e}");
        }
        if let Err(e) = cl.probe(r, "redis", "startupProbe") {
            panic!("startup probe fails on a loading replica: {e}");
        }
        assert!(cl.probe(r, "redis", "readinessProbe").is_err(), "a loading replica must not be ready");
        checks += 1;
    }
    let still = cl.redis_cmd(r, &["PING"]);
    assert!(
        matches!(&still, Err(e) if e.to_lowercase().contains("loading")),
        "the probes ran while the replica loaded ({checks} rounds), but it finished early: {still:?}"
    );
    cl.redis_cmd(r, &["CONFIG", "SET", "key-load-delay", "0"]).ok();
    cl.wait_one_master(Duration::from_secs(60), "after the full sync");
}

/// `redis.replicas` 5 -> 3: the StatefulSet removes pods 4 and 3 (preStop first), the changed
/// pod template rolls pods 2..0. Afterwards no sentinel knows a removed pod, as sentinel or as
/// replica (a sentinel never forgets one by itself, and counting dead sentinels raises the
/// majority a failover needs), and a kill -9 of the master fails over.
#[test]
fn scale_down_from_five_to_three_leaves_no_stale_sentinel_or_replica() {
    let vdir = tempfile::tempdir().unwrap();
    let values = auth_values(vdir.path(), "scale-pw", "scale-sentinel-pw");
    let values = ["values/production.yaml", values.to_str().unwrap()];
    let mut cl = ChartPods::new(&render(&values, &["redis.replicas=5"]));
    assert_eq!(cl.pod_count(), 5);
    cl.start_all();
    let m = cl.wait_one_master(Duration::from_secs(40), "bootstrap of 5 pods");
    let mut acked = cl.write(m, "five", 100);
    assert_eq!(acked.len(), 100);
    for i in 0..5 {
        wait_sentinel_view(&cl, i, 4, &[], "before the scale-down");
    }

    // helm upgrade --set redis.replicas=3: ordinals 4 and 3 go, then the rollout of 2, 1, 0.
    for i in [4, 3] {
        cl.run_prestop(i);
        cl.terminate(i);
    }
    cl.reconfigure(&render(&values, &["redis.replicas=3"]));
    cl.rolling_restart();
    let m = cl.wait_one_master(Duration::from_secs(30), "after the scale-down");
    let removed = [crate::support::pods::addr(3), crate::support::pods::addr(4)];
    let deadline = Instant::now() + Duration::from_secs(30);
    for i in 0..3 {
        loop {
            let (sentinels, replicas) = cl.sentinel_peers(i);
            let stale: Vec<&String> = sentinels
                .iter()
                .chain(&replicas)
                .filter(|a| removed.iter().any(|r| a.starts_with(&format!("{r}:"))))
                .collect();
            if stale.is_empty() && sentinels.len() == 2 && replicas.len() == 2 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "pod {i}'s sentinel after the scale-down: sentinels {sentinels:?}, replicas {replicas:?}, stale {stale:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    acked.extend(cl.write(m, "three", 100));

    // A failover works with the 2 sentinels left of 3.
    cl.kill(m);
    let m2 = cl.wait_master(&cl.others(m), false, Duration::from_secs(40), "failover after the scale-down");
    assert_eq!(cl.missing(m2, &acked), Vec::<String>::new(), "acknowledged writes lost");
}

/// Waits (30 s) until pod i's sentinel knows exactly `peers` other sentinels and `peers`
/// replicas, none of them on a host in `removed`.
fn wait_sentinel_view(cl: &ChartPods, i: usize, peers: usize, removed: &[String], what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (sentinels, replicas) = cl.sentinel_peers(i);
        let stale: Vec<&String> = sentinels
            .iter()
            .chain(&replicas)
            .filter(|a| removed.iter().any(|r| a.starts_with(&format!("{r}:"))))
            .collect();
        if stale.is_empty() && sentinels.len() == peers && replicas.len() == peers {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: pod {i}'s sentinel knows sentinels {sentinels:?}, replicas {replicas:?} (stale {stale:?})"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A password rotation in three `helm upgrade`s, each a rolling restart under write load from
/// a sentinel-aware client using that step's password: (1) the new password is accepted too
/// (`redis.auth.extraPassword`), the old one still used; (2) the new one used, the old one still
/// accepted; (3) the old one dropped. Neighbouring steps always accept each other's password,
/// so replication, the sentinels and clients keep working: no acknowledged write is lost.
/// A handover the sentinels finish only after the preStop hook stopped waiting for it (here a
/// PRESTOP_TIMEOUT of 0 s; in a cluster, a slow or tilted sentinel) must not let the old master
/// take writes meanwhile: a write one replica acknowledges between the promotion of the other
/// and the old master's reconfiguration would be lost. The hook keeps writes paused when it
/// did not see the new master, so the old master takes none until it stops.
#[test]
fn a_handover_that_outlasts_the_prestop_hook_loses_no_acknowledged_write() {
    let mut cl = ChartPods::new(&render(&["values/production.yaml"], &[]));
    cl.start_all();
    let m = cl.wait_one_master(Duration::from_secs(60), "bootstrap");
    let writer = Writer::spawn(&cl);
    std::thread::sleep(Duration::from_millis(500));
    cl.run_prestop_with(m, &[("PRESTOP_TIMEOUT", "0")]);
    // The sentinels promote a replica and reconfigure the other while the old master still runs.
    let new = cl.wait_master(&ChartPods::all_but(m), false, Duration::from_secs(30), "the late handover");
    std::thread::sleep(Duration::from_secs(2));
    let (acked, refused) = writer.stop();
    cl.terminate(m);
    cl.start(m);
    let after = cl.wait_one_master(Duration::from_secs(60), "the old master back as a replica");
    assert_eq!(after, new, "the promoted replica stays master");
    eprintln!("late handover: writes acknowledged {}, not acknowledged {refused}", acked.len());
    assert!(acked.len() > 50, "the writer made progress: {}", acked.len());
    assert_eq!(cl.missing(after, &acked), Vec::<String>::new(), "acknowledged writes lost\n{}", cl.logs());
}

#[test]
fn password_rotation_in_three_rollouts_loses_no_acknowledged_write() {
    let vdir = tempfile::tempdir().unwrap();
    let step = |name: &str, pw: &str, extra: Option<&str>| {
        let v = rotation_values(vdir.path(), name, pw, extra);
        render(&["values/production.yaml", v.to_str().unwrap()], &[])
    };
    let mut cl = ChartPods::new(&step("0.yaml", "old-pw", None));
    cl.start_all();
    cl.wait_one_master(Duration::from_secs(60), "bootstrap");
    let (mut acked, mut refused) = (Vec::new(), 0);
    for (name, pw, extra) in
        [("1.yaml", "old-pw", Some("new-pw")), ("2.yaml", "new-pw", Some("old-pw")), ("3.yaml", "new-pw", None)]
    {
        cl.reconfigure(&step(name, pw, extra));
        let writer = Writer::spawn(&cl);
        std::thread::sleep(Duration::from_millis(500));
        cl.rolling_restart();
        std::thread::sleep(Duration::from_millis(500));
        let (a, f) = writer.stop();
        eprintln!("rotation step {name}: writes acknowledged {}, not acknowledged {f}", a.len());
        assert!(a.len() > 50, "step {name}: the writer made progress: {}", a.len());
        acked.extend(a);
        refused += f;
        let m = cl.wait_one_master(Duration::from_secs(10), name);
        assert_eq!(cl.missing(m, &acked), Vec::<String>::new(), "step {name}: acknowledged writes lost\n{}", cl.logs());
    }
    let m = cl.wait_one_master(Duration::from_secs(10), "after the rotation");
    let old = format!("redis://:old-pw@{}:{}", crate::support::pods::addr(m), cl.endpoints.redis_port);
    assert_eq!(crate::support::redis_server::role(&old), None, "the old password is refused after the rotation");
    eprintln!("password rotation: acknowledged {}, lost 0, refused attempts {refused} (retried)", acked.len());
}

/// TLS only (mutual TLS) and ACL users: the production render with `redis.tls` and `redis.acl`
/// on. No plaintext listener answers; the `default` user is off. The pods bootstrap over TLS,
/// the sentinels fail over a kill -9 of the master (authenticating as their ACL user), a preStop
/// handover runs as the `probe` user, and the rendered kvq containers (as `kvq-server` and
/// `kvq-worker`) follow both under write load with no acknowledged write lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_acl_pods_fail_over_and_hand_over_and_kvq_loses_no_acknowledged_write() {
    let vdir = tempfile::tempdir().unwrap();
    let values = tls_acl_values(vdir.path());
    let (mut cl, mut app, _dir) = set_with_app(&["values/production.yaml", values.to_str().unwrap()]).await;
    tokio::task::block_in_place(|| {
        let e = &cl.endpoints;
        for i in 0..PODS {
            let plain = redis::Client::open(format!("redis://{}:{}", addr(i), e.redis_port)).unwrap();
            let answered = plain
                .get_connection_with_timeout(Duration::from_millis(500))
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
            assert!(answered.is_err(), "pod {i} answered plaintext: {answered:?}");
            let default = e.client(&addr(i), e.redis_port, Some("default"), "anything").unwrap();
            assert!(default.get_connection().is_err(), "pod {i}: the default user must be off");
        }
    });
    let http = app.http(Duration::from_secs(5));
    http.write_read_delete("tls-acl-bootstrap").await;

    let load = Load::start(&http, "tls", 4);
    tokio::time::sleep(Duration::from_secs(1)).await;
    // kill -9 of the master pod: the sentinels fail over over TLS; kvq follows.
    let m = tokio::task::block_in_place(|| cl.wait_one_master(Duration::from_secs(10), "before the kill"));
    let t = Instant::now();
    tokio::task::block_in_place(|| cl.kill(m));
    let new = tokio::task::block_in_place(|| {
        cl.wait_master(&ChartPods::all_but(m), false, Duration::from_secs(40), "failover over TLS")
    });
    let failover = t.elapsed();
    http.eventually_write_read_delete("tls-acl-after-kill", Duration::from_secs(40)).await;
    let writing = t.elapsed();
    tokio::task::block_in_place(|| {
        cl.start(m);
        cl.wait_one_master(Duration::from_secs(60), "the killed pod back as a replica");
    });
    assert_eq!(cl.role(m).as_deref(), Some("slave"), "the killed pod returns as a replica\n{}", cl.logs());

    // preStop handover of the new master (CLIENT PAUSE, SENTINEL FAILOVER, REPLICAOF over TLS).
    let handover = tokio::task::block_in_place(|| {
        let took = cl.run_prestop(new);
        assert_eq!(cl.role(new).as_deref(), Some("slave"), "after its preStop\n{}", cl.logs());
        cl.terminate(new);
        cl.start(new);
        cl.wait_one_master(Duration::from_secs(60), "after the handover");
        took
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let log = load.stop().await;
    assert!(log.acked.len() > 50, "the writers made progress: {}", log.acked.len());
    assert_no_lost_writes_within(&http, &log.acked, Duration::from_secs(60)).await;
    eprintln!(
        "TLS + ACL: failover {failover:?} after kill -9 (kvq writing again after {writing:?}), preStop handover \
         {handover:?}; writes acknowledged {}, lost 0, refused attempts {} (retried)",
        log.acked.len(),
        log.failures
    );
    app.probes_pass(Duration::from_secs(30)).await;
}
