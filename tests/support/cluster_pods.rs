//! The chart's own Redis Cluster pods (`redis.mode=cluster`), simulated like `pods::ChartPods`:
//! values/production-cluster.yaml is rendered; the scripts come from the rendered scripts
//! ConfigMap, the redis container's env from the rendered StatefulSet (the password from the
//! rendered Secret). Each "pod" runs `cluster-start.sh` (a real redis-server in cluster mode,
//! with `cluster-join.sh` in the background) on its own loopback address 127.0.0.{1..6} with the
//! same client and cluster bus ports, and keeps its data directory (its PVC) across restarts.
//! What Kubernetes provides is simulated through the scripts' documented env: the stable
//! hostname of pod i is its address (ANNOUNCE_HOST, PEER_HOSTS), POD_IP (status.podIP),
//! LOCAL_ADDR/BIND_ADDRESS, the mount paths, and free ports.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::chart::{b64decode, strings, Manifests};
use super::pods::{pod_env, to_pod_addresses};
use super::process::{free_port_on_loopbacks, loopback, ChildProcess};

/// Pod `i`'s address (and, in this simulation, its stable hostname).
pub fn addr(i: usize) -> String {
    loopback(i)
}

/// Where nobody listens: the address pod `i` had before "moving" (`make_addresses_stale`).
fn stale_addr(i: usize) -> String {
    format!("127.0.1.{}", i + 1)
}

/// One node of `CLUSTER NODES`.
#[derive(Debug, Clone)]
pub struct Node {
    pub id: String,
    /// `ip:port` the cluster knows it by.
    pub addr: String,
    pub hostname: String,
    pub flags: String,
    /// The master's id for a replica, `-` for a master.
    pub master: String,
    pub slot_ranges: Vec<String>,
    pub connected: bool,
}

impl Node {
    pub fn is_master(&self) -> bool {
        self.flags.contains("master")
    }
    pub fn failing(&self) -> bool {
        self.flags.contains("fail") || self.flags.contains("noaddr")
    }
    /// Slots this node owns.
    pub fn slots(&self) -> usize {
        self.slot_ranges
            .iter()
            .filter(|r| !r.starts_with('['))
            .map(|r| match r.split_once('-') {
                Some((a, b)) => b.parse::<usize>().unwrap() - a.parse::<usize>().unwrap() + 1,
                None => 1,
            })
            .sum()
    }
}

/// Shards as every pod sees them once the cluster is healthy: master pod -> its replica pods.
pub type Layout = BTreeMap<usize, Vec<usize>>;

/// The simulated Redis Cluster pods of a rendered release (killed on drop).
pub struct ClusterPods {
    // Fields drop in order: the pods' processes are killed before their directories go.
    pods: Vec<Option<ChildProcess>>,
    dir: tempfile::TempDir,
    /// Directories of later renders (`grow`): their scripts and password files.
    renders: Vec<tempfile::TempDir>,
    /// Pods in the rendered StatefulSet: masters x (1 + replicas per master).
    pub n: usize,
    pub masters: usize,
    pub replicas_per_master: usize,
    scripts: PathBuf,
    env: Vec<(String, String)>,
    pub port: u16,
    pub bus_port: u16,
    pub password: String,
    /// The rendered exec probe commands of the redis container, by kind; and its preStop.
    probes: HashMap<String, Vec<String>>,
    prestop: Vec<String>,
}

impl ClusterPods {
    /// The simulated pods of a rendered cluster-mode release.
    pub fn new(m: &Manifests) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let scripts = dir.path().join("scripts");
        std::fs::create_dir_all(&scripts).unwrap();
        for (name, text) in m.get("ConfigMap", "kvq-redis-scripts")["data"].as_object().unwrap() {
            std::fs::write(scripts.join(name), text.as_str().unwrap()).unwrap();
        }
        let auth = dir.path().join("auth");
        std::fs::create_dir_all(&auth).unwrap();
        let mut pw = HashMap::new();
        for (k, v) in m.get("Secret", "kvq-redis-auth")["data"].as_object().unwrap() {
            let plain = b64decode(v.as_str().unwrap());
            std::fs::write(auth.join(k), &plain).unwrap();
            pw.insert(k.clone(), plain);
        }
        let sts = m.get("StatefulSet", "kvq-redis");
        let n = sts["spec"]["replicas"].as_u64().unwrap() as usize;
        let pod = &sts["spec"]["template"]["spec"];
        let c = pod["containers"].as_array().unwrap().iter().find(|c| c["name"] == "redis").unwrap().clone();
        assert_eq!(strings(&c["command"]), ["sh", "/scripts/cluster-start.sh"]);
        let (scripts_s, auth_s) = (scripts.to_str().unwrap().to_string(), auth.to_str().unwrap().to_string());
        let map_path = |p: &str| -> String {
            if let Some(rest) = p.strip_prefix("/scripts/") {
                format!("{scripts_s}/{rest}")
            } else if let Some(rest) = p.strip_prefix("/etc/redis-auth/") {
                format!("{auth_s}/{rest}")
            } else {
                p.to_string() // /data, /run/redis: replaced per pod
            }
        };
        let mut env = Vec::new();
        for e in c["env"].as_array().unwrap() {
            let name = e["name"].as_str().unwrap().to_string();
            if let Some(v) = e["value"].as_str() {
                env.push((name, if v.starts_with('/') { map_path(v) } else { v.to_string() }));
            } else {
                // POD_NAME and POD_IP: per pod, below.
                let field = e["valueFrom"]["fieldRef"]["fieldPath"].as_str();
                assert!(matches!(field, Some("metadata.name" | "status.podIP")), "unexpected env source: {e}");
            }
        }
        let get = |k: &str| env.iter().find(|(n, _)| n == k).unwrap_or_else(|| panic!("no env {k}")).1.clone();
        let replicas_per_master: usize = get("CLUSTER_REPLICAS_PER_MASTER").parse().unwrap();
        assert_eq!(get("REDIS_MODE"), "cluster");
        let mut probes = HashMap::new();
        for kind in ["startupProbe", "livenessProbe", "readinessProbe"] {
            probes.insert(kind.to_string(), strings(&c[kind]["exec"]["command"]));
        }
        let prestop = strings(&c["lifecycle"]["preStop"]["exec"]["command"]);
        let port = free_port_on_loopbacks(n);
        let mut bus_port = free_port_on_loopbacks(n);
        while bus_port == port {
            bus_port = free_port_on_loopbacks(n);
        }
        ClusterPods {
            pods: (0..n).map(|_| None).collect(),
            dir,
            renders: Vec::new(),
            n,
            masters: n / (1 + replicas_per_master),
            replicas_per_master,
            scripts,
            env,
            port,
            bus_port,
            password: pw["redis-password"].clone(),
            probes,
            prestop,
        }
    }

    /// A `helm upgrade` to a render with more pods (`redis.cluster.masters` raised, the same
    /// password): pods started from now on get its scripts and env; the running ones keep
    /// theirs (a rollout would only give them the longer peer list).
    pub fn grow(&mut self, m: &Manifests) {
        let mut next = ClusterPods::new(m);
        assert!(next.n > self.n, "{} pods, had {}", next.n, self.n);
        assert_eq!(next.password, self.password, "render the upgrade with the same password");
        self.pods.resize_with(next.n, || None);
        (self.n, self.masters, self.replicas_per_master) = (next.n, next.masters, next.replicas_per_master);
        self.scripts = next.scripts.clone();
        self.env = std::mem::take(&mut next.env);
        self.probes = std::mem::take(&mut next.probes);
        self.prestop = std::mem::take(&mut next.prestop);
        let dir = std::mem::replace(&mut next.dir, tempfile::tempdir().unwrap());
        self.renders.push(dir);
    }

    /// `redis-cli ARGS` as an operator runs it (the password in REDISCLI_AUTH); its output.
    pub fn redis_cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli").args(args).env("REDISCLI_AUTH", &self.password).output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "redis-cli {args:?}: {text}");
        text
    }

    /// Whether `redis-cli ARGS` exits 0.
    pub fn redis_cli_ok(&self, args: &[&str]) -> bool {
        let out = Command::new("redis-cli").args(args).env("REDISCLI_AUTH", &self.password).output().unwrap();
        out.status.success()
    }

    /// `ip:port` of pod i.
    pub fn node_addr(&self, i: usize) -> String {
        format!("{}:{}", addr(i), self.port)
    }

    fn pod_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("pod-{i}"))
    }

    /// Pod i's env: the rendered one plus what Kubernetes would provide.
    fn env(&self, i: usize) -> Vec<(String, String)> {
        let ports = [("REDIS_PORT", self.port), ("CLUSTER_BUS_PORT", self.bus_port)];
        pod_env(&self.env, &self.pod_dir(i), i, self.n, &ports, &[("POD_IP", addr(i))])
    }

    /// Runs a rendered exec command (`sh /scripts/...`) with pod i's env.
    fn command(&self, i: usize, cmd: &[String]) -> Command {
        let mut c = Command::new(&cmd[0]);
        c.args(cmd.iter().skip(1).map(|a| a.replace("/scripts/", &format!("{}/", self.scripts.display()))))
            .env_clear()
            .envs(self.env(i));
        c
    }

    /// Starts pod i (its redis container's command, as rendered).
    pub fn start(&mut self, i: usize) {
        std::fs::create_dir_all(self.pod_dir(i)).unwrap();
        let log_path = self.pod_dir(i).join("redis.log");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path).unwrap();
        let mut cmd = self.command(i, &["sh".into(), "/scripts/cluster-start.sh".into()]);
        cmd.stdout(log.try_clone().unwrap()).stderr(log);
        self.pods[i] = Some(ChildProcess::spawn(&format!("cluster pod {i}"), &mut cmd).with_log(log_path));
    }

    pub fn start_all(&mut self) {
        for i in 0..self.n {
            self.start(i);
        }
    }

    /// kill -9 of pod i's redis (node crash, OOM kill); its background join script sees redis
    /// gone and exits.
    pub fn kill(&mut self, i: usize) {
        self.pods[i] = None;
    }

    pub fn kill_all(&mut self) {
        for i in 0..self.n {
            self.kill(i);
        }
    }

    /// The rendered preStop hook of pod i; it must exit 0. Returns how long it took.
    pub fn run_prestop(&self, i: usize) -> Duration {
        let t = Instant::now();
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(self.pod_dir(i).join("prestop.log")).unwrap();
        let out = self.command(i, &self.prestop).stdout(log.try_clone().unwrap()).stderr(log).status().unwrap();
        assert!(out.success(), "pod {i} preStop failed: {out}\n{}", self.logs());
        t.elapsed()
    }

    /// SIGTERM to pod i's redis, waiting for it to exit.
    pub fn terminate(&mut self, i: usize) {
        if let Some(mut p) = self.pods[i].take() {
            p.terminate();
        }
    }

    /// Pod i's volume replaced by an empty one (a lost disk, a deleted PVC); the pod must be down.
    pub fn wipe_volume(&mut self, i: usize) {
        assert!(self.pods[i].is_none(), "pod {i} still runs");
        let _ = std::fs::remove_dir_all(self.pod_dir(i).join("data"));
    }

    /// Every address in every pod's nodes.conf moved to one where nobody listens: what the
    /// nodes find on disk after all pods came back with new IPs. The pods must be down.
    pub fn make_addresses_stale(&mut self) {
        for i in 0..self.n {
            assert!(self.pods[i].is_none(), "pod {i} still runs");
            let path = self.pod_dir(i).join("data/nodes.conf");
            let mut text = std::fs::read_to_string(&path).unwrap();
            for j in 0..self.n {
                text =
                    text.replace(&format!("{}:{}@", addr(j), self.port), &format!("{}:{}@", stale_addr(j), self.port));
            }
            assert!(!text.contains(&format!("{}:{}@", addr(0), self.port)), "{text}");
            std::fs::write(&path, text).unwrap();
        }
    }

    /// A plain connection to pod i's redis (connect within 500 ms, replies within 5 s).
    pub fn conn(&self, i: usize) -> Option<redis::Connection> {
        let url = format!("redis://:{}@{}:{}", urlencode(&self.password), addr(i), self.port);
        let c = redis::Client::open(url).ok()?.get_connection_with_timeout(Duration::from_millis(500)).ok()?;
        c.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        Some(c)
    }

    /// A cluster client seeded with every pod (hostnames and redirections from the cluster).
    pub fn client(&self) -> redis::cluster::ClusterClient {
        let nodes: Vec<String> = (0..self.n).map(|i| format!("redis://{}:{}", addr(i), self.port)).collect();
        redis::cluster::ClusterClientBuilder::new(nodes)
            .password(self.password.clone())
            .connection_timeout(Duration::from_millis(500))
            .response_timeout(Duration::from_secs(5))
            .build()
            .unwrap()
    }

    /// `CLUSTER NODES` as pod i sees it (empty when it does not answer).
    pub fn nodes(&self, i: usize) -> Vec<Node> {
        let Some(mut c) = self.conn(i) else { return Vec::new() };
        let Ok(text) = redis::cmd("CLUSTER").arg("NODES").query::<String>(&mut c) else { return Vec::new() };
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                let mut a = f[1].split(',');
                let address = a.next().unwrap().split('@').next().unwrap().to_string();
                let hostname = a.next().filter(|h| !h.contains('=')).unwrap_or("").to_string();
                Node {
                    id: f[0].into(),
                    addr: address,
                    hostname,
                    flags: f[2].into(),
                    master: f[3].into(),
                    connected: f[7] == "connected",
                    slot_ranges: f[8..].iter().map(|s| s.to_string()).collect(),
                }
            })
            .collect()
    }

    /// A field of `CLUSTER INFO` of pod i.
    pub fn info(&self, i: usize, field: &str) -> Option<String> {
        let mut c = self.conn(i)?;
        let text: String = redis::cmd("CLUSTER").arg("INFO").query(&mut c).ok()?;
        text.lines().find_map(|l| l.strip_prefix(&format!("{field}:")).map(|v| v.trim().to_string()))
    }

    /// Which pod a node address (`ip:port`) is.
    fn pod_of(&self, node_addr: &str) -> Option<usize> {
        (0..self.n).find(|&i| node_addr == format!("{}:{}", addr(i), self.port))
    }

    /// The shards if the cluster is healthy as pod `view` sees it, else why not: every pod known
    /// once and connected, `masters` masters owning all 16384 slots, each with
    /// `replicas_per_master` connected replicas, no failing node, every pod's state ok and its
    /// rendered readiness probe passing.
    pub fn healthy(&self, view: usize) -> Result<Layout, String> {
        let nodes = self.nodes(view);
        if nodes.len() != self.n {
            return Err(format!("pod {view} knows {} nodes: {nodes:?}", nodes.len()));
        }
        if let Some(bad) = nodes.iter().find(|n| n.failing() || !n.connected) {
            return Err(format!("node {bad:?}"));
        }
        let mut layout = Layout::new();
        let mut slots = 0;
        for m in nodes.iter().filter(|n| n.is_master() && n.slots() > 0) {
            let pod = self.pod_of(&m.addr).ok_or(format!("unknown address {}", m.addr))?;
            slots += m.slots();
            let replicas: Vec<usize> =
                nodes.iter().filter(|r| r.master == m.id).filter_map(|r| self.pod_of(&r.addr)).collect();
            layout.insert(pod, replicas);
        }
        if slots != 16384 || layout.len() != self.masters {
            return Err(format!("{slots} slots on {} masters: {layout:?}", layout.len()));
        }
        if layout.values().any(|r| r.len() != self.replicas_per_master) {
            return Err(format!("replicas per master: {layout:?}"));
        }
        for i in 0..self.n {
            let state = self.info(i, "cluster_state");
            if state.as_deref() != Some("ok") {
                return Err(format!("pod {i}: cluster_state {state:?}"));
            }
            self.probe(i, "readinessProbe").map_err(|e| format!("pod {i} not ready: {e}"))?;
        }
        Ok(layout)
    }

    /// Waits until the cluster is healthy as every pod sees it, the same way from each; returns
    /// the shards.
    pub fn wait_healthy(&self, timeout: Duration, what: &str) -> Layout {
        let deadline = Instant::now() + timeout;
        loop {
            let views: Result<Vec<Layout>, String> = (0..self.n).map(|i| self.healthy(i)).collect();
            let why = match views {
                Ok(v) if v.iter().all(|l| *l == v[0]) => return v[0].clone(),
                Ok(v) => format!("pods disagree: {v:?}"),
                Err(e) => e,
            };
            if Instant::now() > deadline {
                panic!("{what}: cluster not healthy after {timeout:?}: {why}\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Runs the rendered exec probe `kind` of pod i: Ok, or its output.
    pub fn probe(&self, i: usize, kind: &str) -> Result<(), String> {
        let out = self.command(i, &self.probes[kind]).output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
        }
    }

    /// The last lines of every pod's log.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for i in 0..self.n {
            for f in ["redis.log", "prestop.log"] {
                let text = std::fs::read_to_string(self.pod_dir(i).join(f)).unwrap_or_default();
                let lines: Vec<&str> = text
                    .lines()
                    .filter(|l| !l.trim().is_empty() && (f != "redis.log" || is_script_or_cluster(l)))
                    .collect();
                out += &format!("--- pod {i} {f}\n{}\n", lines[lines.len().saturating_sub(30)..].join("\n"));
            }
        }
        out
    }

    /// Writes keys `prefix:0..n` (value = the number) through a cluster client, then WAIT 1 on
    /// every master over the connections that wrote: each key is on its master and a replica.
    /// Returns the keys.
    pub fn write_acked(&self, layout: &Layout, prefix: &str, n: usize) -> Vec<String> {
        use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
        let mut c = self.client().get_connection().expect("cluster connection");
        let keys: Vec<String> = (0..n).map(|k| format!("{prefix}:{k}")).collect();
        for (k, key) in keys.iter().enumerate() {
            let _: () = redis::cmd("SET").arg(key).arg(k).query(&mut c).unwrap_or_else(|e| panic!("SET {key}: {e}"));
        }
        for &m in layout.keys() {
            let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host: addr(m), port: self.port });
            let acked = c.route_command(redis::cmd("WAIT").arg(1).arg(5000), routing).unwrap();
            assert_eq!(acked, redis::Value::Int(1), "WAIT 1 on master pod {m}");
        }
        keys
    }

    /// The keys (written by `write_acked`) whose value is missing or wrong, read through a
    /// cluster client. A read that fails (a client whose slot map came from a node that had not
    /// yet heard of a failover) is retried with a new client for up to 10 s.
    pub fn wrong_values(&self, keys: &[String]) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut c = self.client().get_connection().expect("cluster connection");
        keys.iter()
            .filter(|key| {
                let want: u64 = key.rsplit_once(':').unwrap().1.parse().unwrap();
                let got: Option<u64> = loop {
                    match redis::cmd("GET").arg(key.as_str()).query(&mut c) {
                        Ok(v) => break v,
                        Err(e) => {
                            assert!(Instant::now() < deadline, "GET {key}: {e}");
                            std::thread::sleep(Duration::from_millis(200));
                            if let Ok(fresh) = self.client().get_connection() {
                                c = fresh;
                            }
                        }
                    }
                };
                got != Some(want)
            })
            .cloned()
            .collect()
    }

    /// Keys in pod i's own redis (DBSIZE).
    pub fn dbsize(&self, i: usize) -> Option<u64> {
        redis::cmd("DBSIZE").query(&mut self.conn(i)?).ok()
    }
}

/// Lines of the scripts and cluster events, not redis' startup banner.
fn is_script_or_cluster(l: &str) -> bool {
    l.contains("cluster-")
        || l.contains("Cluster")
        || l.contains("FAIL")
        || l.contains("failover")
        || l.contains("MEET")
}

fn urlencode(s: &str) -> String {
    s.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

/// The rendered cluster-mode release: its Redis pods created and healthy, and its kvq-server
/// and kvq-worker containers (real binaries, rendered env and config) against them with their
/// probes passing. One render for both: the app must use the password the pods got.
pub async fn cluster_set_with_app(values: &[&str]) -> (ClusterPods, super::chart::RunningApp, tempfile::TempDir) {
    let m = super::chart::render(values, &[]);
    let cl = tokio::task::block_in_place(|| {
        let mut cl = ClusterPods::new(&m);
        cl.start_all();
        cl.wait_healthy(Duration::from_secs(60), "creation");
        cl
    });
    let dir = tempfile::tempdir().unwrap();
    let (port, n) = (cl.port, cl.n);
    let mut app = super::chart::run_app_containers(&m, dir.path(), move |cfg| point_at_simulated_pods(cfg, port, n));
    app.probes_pass(Duration::from_secs(30)).await;
    (cl, app, dir)
}

/// Rewrites the rendered seed nodes (`kvq-redis-N.<headless>:6379`) to pod N's loopback
/// address, checking the rest of the rendered cluster settings on the way.
fn point_at_simulated_pods(cfg: &mut serde_yaml_ng::Value, port: u16, n: usize) {
    assert_eq!(cfg["redis"]["mode"].as_str(), Some("cluster"));
    assert_eq!(cfg["redis"]["min_replicas_ack"].as_u64(), Some(1), "a replica of the shard holds each write");
    assert_eq!(cfg["tasks"]["shards"].as_u64(), Some(16));
    let rewritten = to_pod_addresses(&cfg["redis"]["nodes"], port);
    assert_eq!(rewritten.len(), n, "every pod is a seed");
    cfg["redis"]["nodes"] = serde_yaml_ng::Value::Sequence(rewritten);
}
