//! The chart's own Redis/Sentinel scripts, run as three simulated pods (issue 4, fault test 4).
//!
//! values/production.yaml is rendered; the scripts come from the rendered scripts ConfigMap and
//! each container's env from the rendered StatefulSet (passwords from the rendered Secret).
//! Each "pod" runs `redis-start.sh` and `sentinel-start.sh` (real redis-server and sentinel)
//! on its own loopback address 127.0.0.{1,2,3} with the same ports, and keeps its data
//! directory (its PVC) across restarts. Only what Kubernetes provides is simulated through the
//! scripts' documented env: stable hostnames (ANNOUNCE_HOST, PEER_HOSTS map them to the
//! loopback addresses), LOCAL_ADDR/BIND_ADDRESS, the mount paths, and free ports.
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
//! a kill -9 of the master pod.
//!
//! Needs helm (scripts/chart-tools.sh), redis-server and redis-sentinel, redis-cli, and the
//! loopback addresses 127.0.0.2-3 (Linux routes all of 127/8 to lo).

mod support_chart;

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::Value;
use support_chart::*;

const PODS: usize = 3;

fn addr(i: usize) -> String {
    format!("127.0.0.{}", i + 1)
}

/// A port free on all three loopback addresses.
fn free_port_on_all() -> u16 {
    loop {
        let p = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if (0..PODS).all(|i| TcpListener::bind((addr(i).as_str(), p)).is_ok()) {
            return p;
        }
    }
}

struct Cluster {
    dir: tempfile::TempDir,
    scripts: PathBuf,
    redis_env: Vec<(String, String)>,
    sentinel_env: Vec<(String, String)>,
    redis_port: u16,
    sentinel_port: u16,
    redis_pw: String,
    sentinel_pw: String,
    master_name: String,
    /// The rendered readiness probe command of the redis container.
    redis_readiness: Vec<String>,
    pods: Vec<Pod>,
}

struct Pod {
    redis: Option<Child>,
    sentinel: Option<Child>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..PODS {
            self.kill(i);
        }
    }
}

/// Env of a rendered container, mapped to this simulation (Kubernetes-provided parts replaced).
fn rendered_env(c: &Value, map_path: &dyn Fn(&str) -> String) -> Vec<(String, String)> {
    c["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| {
            let name = e["name"].as_str().unwrap().to_string();
            if let Some(v) = e["value"].as_str() {
                let v = if v.starts_with('/') { map_path(v) } else { v.to_string() };
                Some((name, v))
            } else if e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name" {
                None // POD_NAME: per pod
            } else {
                panic!("unexpected env source in the Redis pod: {e}")
            }
        })
        .collect()
}

impl Cluster {
    /// The simulated pods of a rendered release (`m`: values/production.yaml).
    fn new(m: &Manifests) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let scripts = dir.path().join("scripts");
        std::fs::create_dir_all(&scripts).unwrap();
        for (name, text) in m.get("ConfigMap", "kvq-redis-scripts")["data"].as_object().unwrap() {
            std::fs::write(scripts.join(name), text.as_str().unwrap()).unwrap();
        }
        let secret = m.get("Secret", "kvq-redis-auth");
        let auth = dir.path().join("auth");
        std::fs::create_dir_all(&auth).unwrap();
        let mut pw = HashMap::new();
        for (k, v) in secret["data"].as_object().unwrap() {
            let plain = b64decode(v.as_str().unwrap());
            std::fs::write(auth.join(k), &plain).unwrap();
            pw.insert(k.clone(), plain);
        }
        let sts = m.get("StatefulSet", "kvq-redis");
        let pod = &sts["spec"]["template"]["spec"];
        assert_eq!(sts["spec"]["replicas"], PODS);
        let container =
            |n: &str| pod["containers"].as_array().unwrap().iter().find(|c| c["name"] == n).unwrap().clone();
        let (redis_c, sentinel_c) = (container("redis"), container("sentinel"));
        assert_eq!(redis_c["command"][1], "/scripts/redis-start.sh");
        assert_eq!(sentinel_c["command"][1], "/scripts/sentinel-start.sh");
        // Mount paths of the pod, mapped into this test's directory; /data and /run/redis per pod.
        let scripts_s = scripts.to_str().unwrap().to_string();
        let auth_s = auth.to_str().unwrap().to_string();
        let map_path = move |p: &str| -> String {
            if let Some(rest) = p.strip_prefix("/scripts/") {
                format!("{scripts_s}/{rest}")
            } else if let Some(rest) = p.strip_prefix("/etc/redis-auth/") {
                format!("{auth_s}/{rest}")
            } else {
                p.to_string() // /data, /run/redis: replaced per pod
            }
        };
        let redis_env = rendered_env(&redis_c, &map_path);
        let redis_readiness: Vec<String> = redis_c["readinessProbe"]["exec"]["command"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        assert_eq!(redis_readiness[0], "sh");
        let sentinel_env = rendered_env(&sentinel_c, &map_path);
        let master_name = redis_env.iter().find(|(k, _)| k == "MASTER_NAME").unwrap().1.clone();
        let redis_port = free_port_on_all();
        let mut sentinel_port = free_port_on_all();
        while sentinel_port == redis_port {
            sentinel_port = free_port_on_all();
        }
        Cluster {
            dir,
            scripts,
            redis_env,
            sentinel_env,
            redis_port,
            sentinel_port,
            redis_pw: pw["redis-password"].clone(),
            sentinel_pw: pw["sentinel-password"].clone(),
            master_name,
            redis_readiness,
            pods: (0..PODS).map(|_| Pod { redis: None, sentinel: None }).collect(),
        }
    }

    fn pod_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("pod-{i}"))
    }

    /// The env one container of pod `i` gets: rendered env + what Kubernetes would provide.
    fn env(&self, i: usize, base: &[(String, String)]) -> Vec<(String, String)> {
        let pd = self.pod_dir(i);
        let mut env: Vec<(String, String)> = base
            .iter()
            .map(|(k, v)| {
                let v = match k.as_str() {
                    "DATA_DIR" => pd.join("data").to_str().unwrap().to_string(),
                    "CONF_DIR" => pd.join("run").to_str().unwrap().to_string(),
                    "REDIS_PORT" => self.redis_port.to_string(),
                    "SENTINEL_PORT" => self.sentinel_port.to_string(),
                    _ => v.clone(),
                };
                (k.clone(), v)
            })
            .collect();
        let peers: Vec<String> = (0..PODS).map(addr).collect();
        env.extend([
            ("POD_NAME".into(), format!("kvq-redis-{i}")),
            ("ANNOUNCE_HOST".into(), addr(i)),
            ("PEER_HOSTS".into(), peers.join(" ")),
            ("LOCAL_ADDR".into(), addr(i)),
            ("BIND_ADDRESS".into(), addr(i)),
            ("PATH".into(), std::env::var("PATH").unwrap()),
        ]);
        env
    }

    fn spawn(&self, i: usize, script: &str, base: &[(String, String)], log: &str) -> Child {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.pod_dir(i).join(log)).unwrap();
        Command::new("sh")
            .arg(self.scripts.join(script))
            .env_clear()
            .envs(self.env(i, base))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    /// Starts pod `i`: both containers at once, as the kubelet does.
    fn start(&mut self, i: usize) {
        std::fs::create_dir_all(self.pod_dir(i)).unwrap();
        let redis = self.spawn(i, "redis-start.sh", &self.redis_env, "redis.log");
        let sentinel = self.spawn(i, "sentinel-start.sh", &self.sentinel_env, "sentinel.log");
        self.pods[i] = Pod { redis: Some(redis), sentinel: Some(sentinel) };
    }

    /// kill -9 of both containers (node crash, OOM kill).
    fn kill(&mut self, i: usize) {
        for c in [self.pods[i].redis.take(), self.pods[i].sentinel.take()].into_iter().flatten() {
            let mut c = c;
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The preStop hooks of both containers, in parallel as the kubelet runs them.
    fn run_prestop(&mut self, i: usize) -> Duration {
        let t = Instant::now();
        let mut hooks = [
            self.spawn(i, "redis-prestop.sh", &self.redis_env, "redis-prestop.log"),
            self.spawn(i, "sentinel-prestop.sh", &self.sentinel_env, "sentinel-prestop.log"),
        ];
        for h in hooks.iter_mut() {
            assert!(h.wait().unwrap().success());
        }
        t.elapsed()
    }

    /// SIGTERM to both containers (after the hooks), waiting for them to exit.
    fn terminate(&mut self, i: usize) {
        for c in [self.pods[i].redis.take(), self.pods[i].sentinel.take()].into_iter().flatten() {
            let mut c = c;
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
            let _ = c.wait();
        }
    }

    fn conn(&self, host: &str, port: u16, pw: &str) -> Option<redis::Connection> {
        let c = redis::Client::open(format!("redis://:{pw}@{host}:{port}")).ok()?;
        c.get_connection_with_timeout(Duration::from_millis(500)).ok()
    }

    fn role(&self, i: usize) -> Option<String> {
        let mut c = self.conn(&addr(i), self.redis_port, &self.redis_pw)?;
        let v: Vec<redis::Value> = redis::cmd("ROLE").query(&mut c).ok()?;
        match v.first()? {
            redis::Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
            redis::Value::SimpleString(s) => Some(s.clone()),
            _ => None,
        }
    }

    /// What pod i's sentinel names as master.
    fn sentinel_master(&self, i: usize) -> Option<String> {
        let mut c = self.conn(&addr(i), self.sentinel_port, &self.sentinel_pw)?;
        let v: Option<(String, u16)> =
            redis::cmd("SENTINEL").arg("get-master-addr-by-name").arg(&self.master_name).query(&mut c).ok()?;
        v.map(|(h, _)| h)
    }

    /// Waits until exactly one pod is master with PODS-1 online replicas, every sentinel names
    /// it and every pod passes the rendered readiness probe; returns its index.
    fn wait_one_master(&self, timeout: Duration, what: &str) -> usize {
        let all: Vec<usize> = (0..PODS).collect();
        self.wait_master(&all, true, timeout, what)
    }

    /// Waits until exactly one of `candidates` (the running pods) is master and their
    /// sentinels name it; with `settled`, also every replica online and every pod ready.
    /// Two masters at once fail at once.
    fn wait_master(&self, candidates: &[usize], settled: bool, timeout: Duration, what: &str) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let roles: Vec<Option<String>> = (0..PODS).map(|i| self.role(i)).collect();
            let masters: Vec<usize> =
                candidates.iter().copied().filter(|&i| roles[i].as_deref() == Some("master")).collect();
            assert!(masters.len() <= 1, "{what}: two masters at once: {roles:?}");
            if let [m] = masters[..] {
                let agree = candidates.iter().all(|&i| self.sentinel_master(i).as_deref() == Some(addr(m).as_str()));
                if agree && (!settled || (self.good_replicas(m) == PODS - 1 && (0..PODS).all(|i| self.ready(i)))) {
                    return m;
                }
            }
            if Instant::now() > deadline {
                let named: Vec<Option<String>> = (0..PODS).map(|i| self.sentinel_master(i)).collect();
                panic!(
                    "{what}: no single master among {candidates:?} after {timeout:?}: roles {roles:?}, sentinels {named:?}\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The rendered readiness probe of pod i's redis container passes.
    fn ready(&self, i: usize) -> bool {
        Command::new("sh")
            .args(
                self.redis_readiness
                    .iter()
                    .skip(1)
                    .map(|a| a.replace("/scripts/", &format!("{}/", self.scripts.display()))),
            )
            .env_clear()
            .envs(self.env(i, &self.redis_env))
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    fn good_replicas(&self, master: usize) -> usize {
        let Some(mut c) = self.conn(&addr(master), self.redis_port, &self.redis_pw) else { return 0 };
        let info: String = redis::cmd("INFO").arg("replication").query(&mut c).unwrap_or_default();
        info.lines().filter(|l| l.starts_with("slave") && l.contains("state=online")).count()
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for i in 0..PODS {
            for f in ["redis.log", "sentinel.log", "redis-prestop.log"] {
                let text = std::fs::read_to_string(self.pod_dir(i).join(f)).unwrap_or_default();
                let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
                out += &format!("--- pod {i} {f}\n{}\n", lines[lines.len().saturating_sub(40)..].join("\n"));
            }
        }
        out
    }

    /// Writes keys prefix:from..to to the master, each acknowledged by 1 replica (WAIT 1),
    /// as kvq does with min_replicas_ack=1; returns the acknowledged keys.
    fn write(&self, master: usize, prefix: &str, n: usize) -> Vec<String> {
        let mut c = self.conn(&addr(master), self.redis_port, &self.redis_pw).expect("master connection");
        let mut acked = Vec::new();
        for k in 0..n {
            let key = format!("{prefix}:{k}");
            let set: redis::RedisResult<()> = redis::cmd("SET").arg(&key).arg(k).query(&mut c);
            if set.is_err() {
                continue;
            }
            let replicas: i64 = redis::cmd("WAIT").arg(1).arg(1000).query(&mut c).unwrap_or(0);
            if replicas >= 1 {
                acked.push(key);
            }
        }
        acked
    }

    fn missing(&self, master: usize, keys: &[String]) -> Vec<String> {
        let mut c = self.conn(&addr(master), self.redis_port, &self.redis_pw).expect("master connection");
        keys.iter().filter(|k| !redis::cmd("EXISTS").arg(*k).query::<bool>(&mut c).unwrap_or(false)).cloned().collect()
    }

    fn wait_role(&self, i: usize, role: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.role(i).as_deref() != Some(role) {
            assert!(Instant::now() < deadline, "pod {i} did not become {role}: {:?}\n{}", self.role(i), self.logs());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn chart_scripts_keep_one_master_and_every_acknowledged_write() {
    for bin in ["redis-server", "redis-cli"] {
        assert!(
            Command::new("sh").arg("-c").arg(format!("command -v {bin}")).output().unwrap().status.success(),
            "`{bin}` is not installed (apt-get install redis-server redis-tools)"
        );
    }
    let mut cl = Cluster::new(&render(&["values/production.yaml"], &[]));
    let mut acked: Vec<String> = Vec::new();

    // 1. Fresh install: all pods start at once; nobody knows a master; ordinal 0 bootstraps.
    for i in 0..PODS {
        cl.start(i);
    }
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
    let others: Vec<usize> = (0..PODS).filter(|&i| i != m).collect();
    let new_master = cl.wait_master(&others, false, Duration::from_secs(5), "after preStop");
    eprintln!("preStop handover: {took:?} (master {m} -> {new_master})");
    cl.terminate(m);
    assert_eq!(cl.missing(new_master, &acked), Vec::<String>::new(), "writes lost in the handover");
    cl.start(m);
    let m2 = cl.wait_one_master(Duration::from_secs(30), "pod restarted after preStop");
    assert_eq!(m2, new_master, "the restarted pod rejoins as a replica");
    cl.wait_role(m, "slave", Duration::from_secs(5));
    acked.extend(cl.write(m2, "after-prestop", 100));
    eprintln!("rolling stop of one pod: {:?}", t.elapsed());

    // 3. kill -9 the master pod: the sentinels fail over; started again, it is a replica.
    let killed = m2;
    cl.kill(killed);
    let t = Instant::now();
    let others: Vec<usize> = (0..PODS).filter(|&i| i != killed).collect();
    let m3 = cl.wait_master(&others, false, Duration::from_secs(40), "failover after kill -9");
    let failover = t.elapsed();
    eprintln!("failover after kill -9 of the master pod: {failover:?} (master {killed} -> {m3})");
    assert_eq!(cl.missing(m3, &acked), Vec::<String>::new(), "acknowledged writes lost in the failover");
    acked.extend(cl.write(m3, "after-failover", 100));
    cl.start(killed);
    let m4 = cl.wait_one_master(Duration::from_secs(30), "killed master restarted");
    assert_eq!(m4, m3, "the old master rejoins as a replica");
    cl.wait_role(killed, "slave", Duration::from_secs(5));
    assert_eq!(cl.missing(m4, &acked), Vec::<String>::new(), "writes lost when the old master returned");

    // 4. All pods killed and started at once (e.g. a node pool restart).
    for i in 0..PODS {
        cl.kill(i);
    }
    for i in 0..PODS {
        cl.start(i);
    }
    let t = Instant::now();
    let m5 = cl.wait_one_master(Duration::from_secs(60), "all pods restarted at once");
    eprintln!("all pods restarted at once: one master after {:?} (pod {m5})", t.elapsed());
    assert_eq!(cl.missing(m5, &acked), Vec::<String>::new(), "writes lost in the full restart");
    let more = cl.write(m5, "after-full-restart", 50);
    assert_eq!(more.len(), 50, "writes work again");
    acked.extend(more);

    // 5. Rolling restart under write load, replicas first and the master last (as a
    //    StatefulSet rollout goes from the highest ordinal down, whoever is master).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let w = Writer::of(&cl);
        let stop = stop.clone();
        std::thread::spawn(move || w.run(&stop))
    };
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    for i in (0..PODS).rev() {
        cl.run_prestop(i);
        cl.terminate(i);
        cl.start(i);
        cl.wait_one_master(Duration::from_secs(40), &format!("rolling restart of pod {i}"));
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (load_acked, failed) = writer.join().unwrap();
    let m6 = cl.wait_one_master(Duration::from_secs(10), "after the rolling restart");
    eprintln!(
        "rolling restart of {PODS} pods under load: {:?}; writes acknowledged {}, not acknowledged {failed}",
        t.elapsed(),
        load_acked.len()
    );
    assert!(load_acked.len() > 100, "the writer made progress: {}", load_acked.len());
    acked.extend(load_acked);
    assert_eq!(cl.missing(m6, &acked), Vec::<String>::new(), "acknowledged writes lost in the rolling restart");
    eprintln!("acknowledged writes: {}, lost: 0", acked.len());
}

/// A sentinel-aware client: asks the sentinels for the master, writes, WAIT 1; on any error
/// it re-resolves. Returns the acknowledged keys and the count of unacknowledged attempts.
struct Writer {
    redis_port: u16,
    sentinel_port: u16,
    redis_pw: String,
    sentinel_pw: String,
    master_name: String,
}

impl Writer {
    fn of(c: &Cluster) -> Self {
        Writer {
            redis_port: c.redis_port,
            sentinel_port: c.sentinel_port,
            redis_pw: c.redis_pw.clone(),
            sentinel_pw: c.sentinel_pw.clone(),
            master_name: c.master_name.clone(),
        }
    }

    fn connect(&self, host: &str, port: u16, pw: &str) -> Option<redis::Connection> {
        let c = redis::Client::open(format!("redis://:{pw}@{host}:{port}")).ok()?;
        let conn = c.get_connection_with_timeout(Duration::from_millis(500)).ok()?;
        conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        Some(conn)
    }

    fn master(&self) -> Option<String> {
        (0..PODS).find_map(|i| {
            let mut c = self.connect(&addr(i), self.sentinel_port, &self.sentinel_pw)?;
            let v: Option<(String, u16)> =
                redis::cmd("SENTINEL").arg("get-master-addr-by-name").arg(&self.master_name).query(&mut c).ok()?;
            v.map(|(h, _)| h)
        })
    }

    fn run(&self, stop: &std::sync::atomic::AtomicBool) -> (Vec<String>, usize) {
        let (mut acked, mut failed, mut n) = (Vec::new(), 0usize, 0usize);
        let mut conn: Option<redis::Connection> = None;
        let deadline = Instant::now() + Duration::from_secs(180);
        while !stop.load(std::sync::atomic::Ordering::SeqCst) && Instant::now() < deadline && n < 200_000 {
            if conn.is_none() {
                conn = self.master().and_then(|m| self.connect(&m, self.redis_port, &self.redis_pw));
                if conn.is_none() {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            }
            let c = conn.as_mut().unwrap();
            let key = format!("load:{n}");
            n += 1;
            let ok = redis::cmd("SET").arg(&key).arg(n).query::<()>(c).is_ok()
                && redis::cmd("WAIT").arg(1).arg(1000).query::<i64>(c).map(|r| r >= 1).unwrap_or(false);
            if ok {
                acked.push(key);
                std::thread::sleep(Duration::from_millis(1)); // a steady load, not a flood
            } else {
                failed += 1;
                conn = None;
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        (acked, failed)
    }
}

/// The rendered production app containers against the chart's own Sentinel set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_app_containers_follow_the_chart_sentinel_set() {
    let (mut cl, mut app, _dir) = production_set_with_app().await;
    app.write_read_delete("sentinel-contract-1").await;

    // The master pod stops gracefully (rollout): the app follows the handover.
    let master = tokio::task::block_in_place(|| {
        let m0 = cl.wait_one_master(Duration::from_secs(10), "before handover");
        cl.run_prestop(m0);
        cl.terminate(m0);
        cl.start(m0);
        cl.wait_one_master(Duration::from_secs(40), "after handover")
    });
    eventually_writes(&app, "sentinel-contract-2", Duration::from_secs(30)).await;

    // kill -9 of the master pod: the app recovers by itself once the sentinels fail over.
    let t = Instant::now();
    tokio::task::block_in_place(|| cl.kill(master));
    eventually_writes(&app, "sentinel-contract-3", Duration::from_secs(40)).await;
    eprintln!("app writing again {:?} after kill -9 of the master pod", t.elapsed());
    app.probes_pass(Duration::from_secs(30)).await;
}

/// Retries write_read_delete until it passes within `timeout` (a failover is going on).
async fn eventually_writes(app: &RunningApp, key: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        match app.try_write_read_delete(key).await {
            Ok(()) => return,
            Err(e) => assert!(Instant::now() < deadline, "no successful write within {timeout:?}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The production render's 3 Redis pods, bootstrapped, and its kvq containers against them with
/// their probes passing. One render for both: the app must use the passwords the pods got.
async fn production_set_with_app() -> (Cluster, RunningApp, tempfile::TempDir) {
    let m = render(&["values/production.yaml"], &[]);
    let cl = tokio::task::block_in_place(|| {
        let mut cl = Cluster::new(&m);
        for i in 0..PODS {
            cl.start(i);
        }
        cl.wait_one_master(Duration::from_secs(30), "bootstrap");
        cl
    });
    let dir = tempfile::tempdir().unwrap();
    let mut app = run_app_containers(&m, dir.path(), point_at_simulated_sentinels(cl.sentinel_port));
    app.probes_pass(Duration::from_secs(30)).await;
    (cl, app, dir)
}

/// Rewrites the rendered sentinel addresses (`kvq-redis-N.<headless>:26379`) to pod N's
/// loopback address, checking the rest of the rendered Redis settings on the way.
fn point_at_simulated_sentinels(sentinel_port: u16) -> impl FnOnce(&mut serde_yaml_ng::Value) {
    move |cfg| {
        assert_eq!(cfg["redis"]["mode"].as_str(), Some("sentinel"));
        assert_eq!(cfg["redis"]["min_replicas_ack"].as_u64(), Some(1));
        let rewritten: Vec<serde_yaml_ng::Value> = cfg["redis"]["sentinels"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|s| {
                let host = s.as_str().unwrap().split(':').next().unwrap();
                let ordinal: usize = host.split('.').next().unwrap().rsplit('-').next().unwrap().parse().unwrap();
                format!("{}:{sentinel_port}", addr(ordinal)).into()
            })
            .collect();
        assert_eq!(rewritten.len(), PODS);
        cfg["redis"]["sentinels"] = serde_yaml_ng::Value::Sequence(rewritten);
    }
}

/// Issue 4, fault test 5 end to end: the three pods restarted one by one (preStop first) while
/// clients write through the rendered production kvq containers; every write answered 202 must
/// be readable afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_under_kvq_write_load_loses_no_acknowledged_write() {
    let (mut cl, mut app, _dir) = production_set_with_app().await;
    let base = format!("http://127.0.0.1:{}", app.server_port);
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (client, base, stop) = (client.clone(), base.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut acked, mut refused) = (Vec::new(), 0usize);
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let key = format!("roll-{w}-{i}");
                    i += 1;
                    let deadline = Instant::now() + Duration::from_secs(30);
                    loop {
                        let r = client
                            .put(format!("{base}/v1/keys/{key}"))
                            .header("Idempotency-Key", &key)
                            .json(&serde_json::json!({ "value": key }))
                            .send()
                            .await;
                        if matches!(&r, Ok(r) if r.status() == 202) {
                            acked.push(key.clone());
                            break;
                        }
                        refused += 1;
                        assert!(Instant::now() < deadline, "{key} never acknowledged");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                (acked, refused)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let t = Instant::now();
    tokio::task::block_in_place(|| {
        for i in (0..PODS).rev() {
            cl.run_prestop(i);
            cl.terminate(i);
            cl.start(i);
            cl.wait_one_master(Duration::from_secs(40), &format!("rolling restart of pod {i}"));
        }
    });
    let restart = t.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (mut acked, mut refused) = (Vec::new(), 0);
    for w in writers {
        let (a, r) = w.await.unwrap();
        acked.extend(a);
        refused += r;
    }
    assert!(acked.len() > 100, "the writers made progress: {}", acked.len());

    // Every acknowledged write is applied and readable once the queue has drained.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut lost = acked.clone();
    while !lost.is_empty() {
        let mut still = Vec::new();
        for key in &lost {
            let ok = match client.get(format!("{base}/v1/keys/{key}")).send().await {
                Ok(r) if r.status() == 200 => {
                    r.json::<serde_json::Value>().await.map(|v| v["value"] == key.as_str()).unwrap_or(false)
                }
                _ => false,
            };
            if !ok {
                still.push(key.clone());
            }
        }
        lost = still;
        if !lost.is_empty() {
            assert!(Instant::now() < deadline, "acknowledged writes lost in the rolling restart: {lost:?}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    eprintln!(
        "rolling restart through kvq: {restart:?}; writes acknowledged {}, lost 0, refused attempts {refused} (retried)",
        acked.len()
    );
    app.probes_pass(Duration::from_secs(30)).await;
}
