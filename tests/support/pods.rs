//! The chart's own Redis/Sentinel pods, simulated: values/production.yaml is rendered; the
//! scripts come from the rendered scripts ConfigMap and each container's env from the rendered
//! StatefulSet (passwords from the rendered Secret). Each "pod" runs `redis-start.sh` and
//! `sentinel-start.sh` (real redis-server and sentinel) on its own loopback address
//! 127.0.0.{1,2,3} with the same ports, and keeps its data directory (its PVC) across restarts.
//! Only what Kubernetes provides is simulated through the scripts' documented env: stable
//! hostnames (ANNOUNCE_HOST, PEER_HOSTS map them to the loopback addresses),
//! LOCAL_ADDR/BIND_ADDRESS, the mount paths, and free ports.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::chart::{b64decode, render, run_app_containers, strings, Manifests, RunningApp};
use super::process::{free_port_on_loopbacks, loopback, ChildProcess};
use super::tls::TestCerts;

/// Pods in the rendered StatefulSet.
pub const PODS: usize = 3;

/// Pod `i`'s address.
pub fn addr(i: usize) -> String {
    loopback(i)
}

/// The simulated Redis pods of a rendered release.
pub struct ChartPods {
    // Fields drop in order: the pods' processes are killed before their directories go.
    pods: Vec<Pod>,
    dir: tempfile::TempDir,
    /// Directories of later renders (`reconfigure`): their scripts and password files.
    renders: Vec<tempfile::TempDir>,
    /// Pods in the rendered StatefulSet (`redis.replicas`).
    n: usize,
    scripts: PathBuf,
    redis_env: Vec<(String, String)>,
    sentinel_env: Vec<(String, String)>,
    pub endpoints: Endpoints,
    /// The rendered exec probe commands: (container, probe kind) -> command.
    probes: HashMap<(String, String), Vec<String>>,
}

/// How clients reach the pods: the ports every pod uses, the passwords, the master name, and
/// with a TLS or ACL render the certificates and the harness's own ACL user.
#[derive(Clone)]
pub struct Endpoints {
    pub redis_port: u16,
    pub sentinel_port: u16,
    pub redis_pw: String,
    pub sentinel_pw: String,
    pub master_name: String,
    /// With ACL users (the `default` user off): the harness's user on redis (`HARNESS_USER`).
    pub redis_user: Option<String>,
    /// With TLS: the directory of the pods' `ca.crt`, `tls.crt` and `tls.key` (the harness
    /// presents the certificate too, for mutual TLS).
    pub tls: Option<PathBuf>,
}

/// The harness's ACL user in TLS + ACL renders (`tls_acl_values` adds it through
/// `redis.config.extra`): every right, as an operator's `redis-cli` would have.
pub const HARNESS_USER: (&str, &str) = ("harness", "harness-pw");

impl Endpoints {
    /// A client for `host:port` (TLS when the pods use it) as `user` with `password`.
    pub fn client(&self, host: &str, port: u16, user: Option<&str>, password: &str) -> Option<redis::Client> {
        let addr = match &self.tls {
            Some(_) => redis::ConnectionAddr::TcpTls { host: host.into(), port, insecure: false, tls_params: None },
            None => redis::ConnectionAddr::Tcp(host.into(), port),
        };
        let mut info = redis::IntoConnectionInfo::into_connection_info(addr).ok()?;
        if !password.is_empty() {
            let mut settings = info.redis_settings().clone().set_password(password);
            if let Some(u) = user {
                settings = settings.set_username(u);
            }
            info = info.set_redis_settings(settings);
        }
        match &self.tls {
            None => redis::Client::open(info).ok(),
            Some(dir) => {
                let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
                let client_tls =
                    Some(redis::ClientTlsConfig { client_cert: read("tls.crt"), client_key: read("tls.key") });
                redis::Client::build_with_tls(
                    info,
                    redis::TlsCertificates { client_tls, root_cert: Some(read("ca.crt")) },
                )
                .ok()
            }
        }
    }

    /// A connection (connect within 500 ms, replies within 5 s).
    fn conn(client: Option<redis::Client>) -> Option<redis::Connection> {
        let conn = client?.get_connection_with_timeout(Duration::from_millis(500)).ok()?;
        conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        Some(conn)
    }

    /// A client for the Redis server at `host`.
    pub fn redis_client(&self, host: &str) -> Option<redis::Client> {
        self.client(host, self.redis_port, self.redis_user.as_deref(), &self.redis_pw)
    }

    /// The Redis server at `host`.
    pub fn redis(&self, host: &str) -> Option<redis::Connection> {
        Self::conn(self.redis_client(host))
    }

    /// Pod `i`'s sentinel.
    fn sentinel(&self, i: usize) -> Option<redis::Connection> {
        Self::conn(self.client(&addr(i), self.sentinel_port, None, &self.sentinel_pw))
    }

    /// `ROLE` of the Redis server at `host` ("master", "slave"), None when it does not answer.
    pub fn role(&self, host: &str) -> Option<String> {
        let role: Vec<redis::Value> = redis::cmd("ROLE").query(&mut self.redis(host)?).ok()?;
        match role.first()? {
            redis::Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
            redis::Value::SimpleString(s) => Some(s.clone()),
            _ => None,
        }
    }

    /// `INFO replication` of the Redis server at `host` (empty when it does not answer).
    pub fn replication_info(&self, host: &str) -> String {
        self.redis(host).and_then(|mut c| redis::cmd("INFO").arg("replication").query(&mut c).ok()).unwrap_or_default()
    }

    /// The address pod `i`'s sentinel names as master.
    fn sentinel_master(&self, i: usize) -> Option<String> {
        let mut c = self.sentinel(i)?;
        let v: Option<(String, u16)> =
            redis::cmd("SENTINEL").arg("get-master-addr-by-name").arg(&self.master_name).query(&mut c).ok()?;
        v.map(|(h, _)| h)
    }
}

/// The running containers of one pod (killed on drop).
struct Pod {
    redis: Option<ChildProcess>,
    sentinel: Option<ChildProcess>,
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

impl ChartPods {
    /// The simulated pods of a rendered release (`m`: values/production.yaml).
    pub fn new(m: &Manifests) -> Self {
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
        // TLS renders mount the certificate Secret at /etc/redis-tls: certificates made here.
        let tls = dir.path().join("tls");
        std::fs::create_dir_all(&tls).unwrap();
        let certs = TestCerts::generate();
        for (from, to) in [("ca.crt", "ca.crt"), ("server.crt", "tls.crt"), ("server.key", "tls.key")] {
            std::fs::copy(certs.path(from), tls.join(to)).unwrap();
        }
        let sts = m.get("StatefulSet", "kvq-redis");
        let pod = &sts["spec"]["template"]["spec"];
        let n = sts["spec"]["replicas"].as_u64().unwrap() as usize;
        let container =
            |n: &str| pod["containers"].as_array().unwrap().iter().find(|c| c["name"] == n).unwrap().clone();
        let (redis_c, sentinel_c) = (container("redis"), container("sentinel"));
        assert_eq!(redis_c["command"][1], "/scripts/redis-start.sh");
        assert_eq!(sentinel_c["command"][1], "/scripts/sentinel-start.sh");
        // Mount paths of the pod, mapped into this test's directory; /data and /run/redis per pod.
        let scripts_s = scripts.to_str().unwrap().to_string();
        let auth_s = auth.to_str().unwrap().to_string();
        let tls_s = tls.to_str().unwrap().to_string();
        let map_path = move |p: &str| -> String {
            if p == "/scripts" {
                scripts_s.clone()
            } else if let Some(rest) = p.strip_prefix("/scripts/") {
                format!("{scripts_s}/{rest}")
            } else if p == "/etc/redis-auth" {
                auth_s.clone()
            } else if let Some(rest) = p.strip_prefix("/etc/redis-auth/") {
                format!("{auth_s}/{rest}")
            } else if let Some(rest) = p.strip_prefix("/etc/redis-tls/") {
                format!("{tls_s}/{rest}")
            } else {
                p.to_string() // /data, /run/redis: replaced per pod
            }
        };
        let redis_env = rendered_env(&redis_c, &map_path);
        let mut probes = HashMap::new();
        for c in [&redis_c, &sentinel_c] {
            for kind in ["startupProbe", "livenessProbe", "readinessProbe"] {
                let cmd = strings(&c[kind]["exec"]["command"]);
                assert_eq!(cmd[0], "sh", "{} {kind}", c["name"]);
                probes.insert((c["name"].as_str().unwrap().to_string(), kind.to_string()), cmd);
            }
        }
        let sentinel_env = rendered_env(&sentinel_c, &map_path);
        let master_name = redis_env.iter().find(|(k, _)| k == "MASTER_NAME").unwrap().1.clone();
        let acl = redis_env.iter().any(|(k, _)| k == "ACL_RULES_DIR");
        let tls = redis_env.iter().any(|(k, v)| k == "REDIS_TLS" && v == "1").then_some(tls);
        if acl {
            let extra = m.get("ConfigMap", "kvq-redis-scripts")["data"]["redis-extra.conf"].as_str().unwrap_or("");
            assert!(extra.contains(&format!("user {} ", HARNESS_USER.0)), "ACL renders need tls_acl_values()");
        }
        let (redis_user, redis_pw) = match acl {
            true => (Some(HARNESS_USER.0.to_string()), HARNESS_USER.1.to_string()),
            false => (None, pw["redis-password"].clone()),
        };
        let redis_port = free_port_on_loopbacks(n);
        let mut sentinel_port = free_port_on_loopbacks(n);
        while sentinel_port == redis_port {
            sentinel_port = free_port_on_loopbacks(n);
        }
        ChartPods {
            dir,
            renders: Vec::new(),
            n,
            scripts,
            redis_env,
            sentinel_env,
            endpoints: Endpoints {
                redis_port,
                sentinel_port,
                redis_pw,
                sentinel_pw: pw["sentinel-password"].clone(),
                master_name,
                redis_user,
                tls,
            },
            probes,
            pods: (0..n).map(|_| Pod { redis: None, sentinel: None }).collect(),
        }
    }

    fn pod_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("pod-{i}"))
    }

    /// The env one container of pod `i` gets: rendered env + what Kubernetes would provide.
    fn env(&self, i: usize, base: &[(String, String)]) -> Vec<(String, String)> {
        let ports = [("REDIS_PORT", self.endpoints.redis_port), ("SENTINEL_PORT", self.endpoints.sentinel_port)];
        pod_env(base, &self.pod_dir(i), i, self.n, &ports, &[])
    }

    fn spawn(&self, i: usize, script: &str, base: &[(String, String)], log: &str) -> ChildProcess {
        let log_path = self.pod_dir(i).join(log);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path).unwrap();
        let mut cmd = Command::new("sh");
        cmd.arg(self.scripts.join(script))
            .env_clear()
            .envs(self.env(i, base))
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        ChildProcess::spawn(&format!("pod {i} {script}"), &mut cmd).with_log(log_path)
    }

    /// Starts pod `i`: both containers at once, as the kubelet does.
    pub fn start(&mut self, i: usize) {
        std::fs::create_dir_all(self.pod_dir(i)).unwrap();
        let redis = self.spawn(i, "redis-start.sh", &self.redis_env, "redis.log");
        let sentinel = self.spawn(i, "sentinel-start.sh", &self.sentinel_env, "sentinel.log");
        self.pods[i] = Pod { redis: Some(redis), sentinel: Some(sentinel) };
    }

    /// Starts every pod at once (a fresh install, or a node pool coming back).
    pub fn start_all(&mut self) {
        for i in 0..self.n {
            self.start(i);
        }
    }

    /// kill -9 of every pod.
    pub fn kill_all(&mut self) {
        for i in 0..self.n {
            self.kill(i);
        }
    }

    /// `helm upgrade` to a new render of the same release (e.g. another `redis.replicas`, a
    /// rotated password): later starts use its scripts, env and Secret. Pods beyond its replica count
    /// must have been stopped (a StatefulSet scale-down removes the highest ordinals).
    pub fn reconfigure(&mut self, m: &Manifests) {
        let mut next = ChartPods::new(m);
        // Same Secret, same certificates: the new render's pods use this set's CA.
        if let (Some(ours), Some(theirs)) = (&self.endpoints.tls, &next.endpoints.tls) {
            for f in ["ca.crt", "tls.crt", "tls.key"] {
                std::fs::copy(ours.join(f), theirs.join(f)).unwrap();
            }
        }
        // Clients use the passwords of the new render from now on.
        self.endpoints.redis_pw = next.endpoints.redis_pw.clone();
        self.endpoints.sentinel_pw = next.endpoints.sentinel_pw.clone();
        for (i, p) in self.pods.iter().enumerate().skip(next.n) {
            assert!(p.redis.is_none() && p.sentinel.is_none(), "pod {i} is beyond the new replica count but runs");
        }
        self.pods.truncate(next.n);
        while self.pods.len() < next.n {
            self.pods.push(Pod { redis: None, sentinel: None });
        }
        self.n = next.n;
        self.scripts = next.scripts.clone();
        self.redis_env = std::mem::take(&mut next.redis_env);
        self.sentinel_env = std::mem::take(&mut next.sentinel_env);
        self.probes = std::mem::take(&mut next.probes);
        let dir = std::mem::replace(&mut next.dir, tempfile::tempdir().unwrap());
        self.renders.push(dir);
    }

    /// Pods in the current render.
    pub fn pod_count(&self) -> usize {
        self.n
    }

    /// Every pod of the current render but `i`.
    pub fn others(&self, i: usize) -> Vec<usize> {
        (0..self.n).filter(|&p| p != i).collect()
    }

    /// (sentinels, replicas) "host:port" that pod i's sentinel knows for the master set.
    pub fn sentinel_peers(&self, i: usize) -> (Vec<String>, Vec<String>) {
        let e = &self.endpoints;
        let mut c = e.sentinel(i).unwrap_or_else(|| panic!("sentinel of pod {i}"));
        let mut list = |what: &str| -> Vec<String> {
            let v: Vec<HashMap<String, String>> =
                redis::cmd("SENTINEL").arg(what).arg(&e.master_name).query(&mut c).unwrap();
            v.iter().map(|m| format!("{}:{}", m["ip"], m["port"])).collect()
        };
        (list("SENTINELS"), list("REPLICAS"))
    }

    /// Pod i's volume replaced by an empty one (a lost disk, a deleted PVC); the pod must be down.
    pub fn wipe_volume(&mut self, i: usize) {
        assert!(self.pods[i].redis.is_none() && self.pods[i].sentinel.is_none(), "pod {i} still runs");
        let _ = std::fs::remove_dir_all(self.pod_dir(i).join("data"));
    }

    /// A value of the rendered env of the redis container.
    pub fn redis_env_value(&self, name: &str) -> &str {
        &self.redis_env.iter().find(|(k, _)| k == name).unwrap_or_else(|| panic!("no env {name}")).1
    }

    /// SENTINEL SET of pod i's sentinel for the master set (at runtime, as an operator would).
    pub fn sentinel_set(&self, i: usize, option: &str, value: &str) {
        let e = &self.endpoints;
        let mut c = e.sentinel(i).unwrap_or_else(|| panic!("sentinel of pod {i}"));
        let _: () = redis::cmd("SENTINEL").arg("SET").arg(&e.master_name).arg(option).arg(value).query(&mut c).unwrap();
    }

    /// One command to pod i's redis: its reply, or the error text (e.g. "LOADING ...").
    pub fn redis_cmd(&self, i: usize, args: &[&str]) -> Result<redis::Value, String> {
        // The connection's own setup commands may be the ones answered LOADING: keep that error.
        let client = self.endpoints.redis_client(&addr(i)).ok_or("no client")?;
        let mut c = client.get_connection_with_timeout(Duration::from_millis(500)).map_err(|e| e.to_string())?;
        c.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut c).map_err(|e| e.to_string())
    }

    /// Writes n keys `prefix:k` (100-byte values) to the master in pipelines of 1000.
    pub fn fill(&self, master: usize, prefix: &str, n: usize) {
        let mut c = self.endpoints.redis(&addr(master)).expect("master connection");
        let value = "v".repeat(100);
        for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
            let mut p = redis::pipe();
            for k in chunk {
                p.cmd("SET").arg(format!("{prefix}:{k}")).arg(&value).ignore();
            }
            p.query::<()>(&mut c).expect("pipelined writes");
        }
    }

    /// kill -9 of both containers (node crash, OOM kill).
    pub fn kill(&mut self, i: usize) {
        self.pods[i] = Pod { redis: None, sentinel: None };
    }

    /// The preStop hooks of both containers, in parallel as the kubelet runs them.
    pub fn run_prestop(&mut self, i: usize) -> Duration {
        self.run_prestop_with(i, &[])
    }

    /// `run_prestop` with these variables added to both hooks' rendered env.
    pub fn run_prestop_with(&mut self, i: usize, extra: &[(&str, &str)]) -> Duration {
        let t = Instant::now();
        let with = |base: &[(String, String)]| {
            let mut env = base.to_vec();
            env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
            env
        };
        let mut hooks = [
            self.spawn(i, "redis-prestop.sh", &with(&self.redis_env), "redis-prestop.log"),
            self.spawn(i, "sentinel-prestop.sh", &with(&self.sentinel_env), "sentinel-prestop.log"),
        ];
        for h in hooks.iter_mut() {
            assert_eq!(h.wait(), Some(0), "{} failed", h.name);
        }
        t.elapsed()
    }

    /// SIGTERM to both containers (after the hooks), waiting for them to exit.
    pub fn terminate(&mut self, i: usize) {
        for mut c in [self.pods[i].redis.take(), self.pods[i].sentinel.take()].into_iter().flatten() {
            c.terminate();
        }
    }

    pub fn role(&self, i: usize) -> Option<String> {
        self.endpoints.role(&addr(i))
    }

    /// What pod i's sentinel names as master.
    fn sentinel_master(&self, i: usize) -> Option<String> {
        self.endpoints.sentinel_master(i)
    }

    /// What each pod's sentinel names as master (for failure messages).
    fn named(&self) -> Vec<Option<String>> {
        (0..self.n).map(|i| self.sentinel_master(i)).collect()
    }

    /// Waits until exactly one pod is master with PODS-1 online replicas, every sentinel names
    /// it and every pod passes the rendered readiness probe; returns its index.
    pub fn wait_one_master(&self, timeout: Duration, what: &str) -> usize {
        let all: Vec<usize> = (0..self.n).collect();
        self.wait_master(&all, true, timeout, what)
    }

    /// Waits until exactly one of `candidates` (the running pods) is master and their
    /// sentinels name it; with `settled`, also every replica online and every pod ready.
    /// Two masters at once fail at once.
    pub fn wait_master(&self, candidates: &[usize], settled: bool, timeout: Duration, what: &str) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let roles: Vec<Option<String>> = (0..self.n).map(|i| self.role(i)).collect();
            let masters: Vec<usize> =
                candidates.iter().copied().filter(|&i| roles[i].as_deref() == Some("master")).collect();
            if masters.len() > 1 {
                panic!("{what}: two masters at once: {roles:?}, sentinels name {:?}\n{}", self.named(), self.logs());
            }
            if let [m] = masters[..] {
                let agree = candidates.iter().all(|&i| self.sentinel_master(i).as_deref() == Some(addr(m).as_str()));
                if agree && (!settled || (self.good_replicas(m) == self.n - 1 && (0..self.n).all(|i| self.ready(i)))) {
                    return m;
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "{what}: no single master among {candidates:?} after {timeout:?}: roles {roles:?}, sentinels {:?}\n{}",
                    self.named(),
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The rendered readiness probe of pod i's redis container passes.
    fn ready(&self, i: usize) -> bool {
        self.probe(i, "redis", "readinessProbe").is_ok()
    }

    /// Runs the rendered exec probe `kind` (startupProbe, livenessProbe, readinessProbe) of
    /// pod i's `container` (redis, sentinel) with that container's env: Ok, or its output.
    pub fn probe(&self, i: usize, container: &str, kind: &str) -> Result<(), String> {
        let cmd = &self.probes[&(container.to_string(), kind.to_string())];
        let env = if container == "sentinel" { &self.sentinel_env } else { &self.redis_env };
        let out = Command::new("sh")
            .args(cmd.iter().skip(1).map(|a| a.replace("/scripts/", &format!("{}/", self.scripts.display()))))
            .env_clear()
            .envs(self.env(i, env))
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
        }
    }

    fn good_replicas(&self, master: usize) -> usize {
        self.endpoints
            .replication_info(&addr(master))
            .lines()
            .filter(|l| l.starts_with("slave") && l.contains("state=online"))
            .count()
    }

    pub fn logs(&self) -> String {
        let mut out = String::new();
        for i in 0..self.pods.len() {
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
    pub fn write(&self, master: usize, prefix: &str, n: usize) -> Vec<String> {
        let mut c = self.endpoints.redis(&addr(master)).expect("master connection");
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

    pub fn missing(&self, master: usize, keys: &[String]) -> Vec<String> {
        let mut c = self.endpoints.redis(&addr(master)).expect("master connection");
        keys.iter().filter(|k| !redis::cmd("EXISTS").arg(*k).query::<bool>(&mut c).unwrap_or(false)).cloned().collect()
    }

    /// Every pod but `i`.
    pub fn all_but(i: usize) -> Vec<usize> {
        (0..PODS).filter(|&p| p != i).collect()
    }

    /// The rollout of one pod: its preStop hooks, SIGTERM, started again; then waits for one
    /// settled master and returns it.
    pub fn restart_pod(&mut self, i: usize, timeout: Duration, what: &str) -> usize {
        self.run_prestop(i);
        self.terminate(i);
        self.start(i);
        self.wait_one_master(timeout, what)
    }

    /// A StatefulSet rollout: pod by pod from the highest ordinal down, whoever is master.
    pub fn rolling_restart(&mut self) {
        for i in (0..self.n).rev() {
            self.restart_pod(i, Duration::from_secs(40), &format!("rolling restart of pod {i}"));
        }
    }

    pub fn wait_role(&self, i: usize, role: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.role(i).as_deref() != Some(role) {
            assert!(Instant::now() < deadline, "pod {i} did not become {role}: {:?}\n{}", self.role(i), self.logs());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A sentinel-aware client: asks the sentinels for the master, writes, WAIT 1; on any error
/// it re-resolves. Returns the acknowledged keys and the count of unacknowledged attempts.
pub struct Writer {
    endpoints: Endpoints,
}

/// A `Writer` running on its own thread.
pub struct WriterThread {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(Vec<String>, usize)>,
}

impl WriterThread {
    /// Stops the writer: the acknowledged keys and the count of unacknowledged attempts.
    pub fn stop(self) -> (Vec<String>, usize) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap()
    }
}

impl Writer {
    /// Starts writing to the pods' master on a thread of its own.
    pub fn spawn(c: &ChartPods) -> WriterThread {
        let w = Writer { endpoints: c.endpoints.clone() };
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        WriterThread { stop, thread: std::thread::spawn(move || w.run(&flag)) }
    }

    fn master(&self) -> Option<String> {
        (0..PODS).find_map(|i| self.endpoints.sentinel_master(i))
    }

    fn run(&self, stop: &AtomicBool) -> (Vec<String>, usize) {
        let (mut acked, mut failed, mut n) = (Vec::new(), 0usize, 0usize);
        let mut conn: Option<redis::Connection> = None;
        let deadline = Instant::now() + Duration::from_secs(180);
        while !stop.load(Ordering::SeqCst) && Instant::now() < deadline && n < 200_000 {
            if conn.is_none() {
                conn = self.master().and_then(|m| self.endpoints.redis(&m));
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

/// The production render's 3 Redis pods, bootstrapped, and its kvq containers against them with
/// their probes passing. One render for both: the app must use the passwords the pods got.
pub async fn production_set_with_app() -> (ChartPods, RunningApp, tempfile::TempDir) {
    set_with_app(&["values/production.yaml"]).await
}

/// A values file (in `dir`) setting the generated Secret's Redis and Sentinel passwords.
pub fn auth_values(dir: &std::path::Path, redis_pw: &str, sentinel_pw: &str) -> PathBuf {
    let mut auth = serde_yaml_ng::Mapping::new();
    auth.insert("password".into(), redis_pw.into());
    auth.insert("sentinelPassword".into(), sentinel_pw.into());
    let mut redis = serde_yaml_ng::Mapping::new();
    redis.insert("auth".into(), auth.into());
    let mut root = serde_yaml_ng::Mapping::new();
    root.insert("redis".into(), redis.into());
    let path = dir.join("auth-values.yaml");
    std::fs::write(&path, serde_yaml_ng::to_string(&root).unwrap()).unwrap();
    path
}

/// A values file `name` (in `dir`) for one step of a password rotation: the Redis password in
/// use and, optionally, a second one Redis also accepts (`redis.auth.extraPassword`).
pub fn rotation_values(dir: &std::path::Path, name: &str, redis_pw: &str, extra: Option<&str>) -> PathBuf {
    let path = auth_values(dir, redis_pw, "rotation-sentinel-pw");
    let mut v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    if let Some(e) = extra {
        v["redis"]["auth"]["extraPassword"] = e.into();
    }
    let named = dir.join(name);
    std::fs::write(&named, serde_yaml_ng::to_string(&v).unwrap()).unwrap();
    named
}

/// `production_set_with_app` for a render with these values files.
pub async fn set_with_app(values: &[&str]) -> (ChartPods, RunningApp, tempfile::TempDir) {
    let m = render(values, &[]);
    let cl = tokio::task::block_in_place(|| {
        let mut cl = ChartPods::new(&m);
        cl.start_all();
        cl.wait_one_master(Duration::from_secs(60), "bootstrap");
        cl
    });
    let dir = tempfile::tempdir().unwrap();
    let (point, tls) = (point_at_simulated_sentinels(cl.endpoints.sentinel_port), cl.endpoints.tls.clone());
    let mut app = run_app_containers(&m, dir.path(), move |cfg| {
        point(cfg);
        // The app mounts the same TLS Secret as the pods: its files, mapped like theirs.
        for key in ["tls_ca_file", "tls_cert_file", "tls_key_file"] {
            if let Some(path) = cfg["redis"][key].as_str().map(str::to_string) {
                let file = path.strip_prefix("/etc/redis-tls/").expect("the TLS Secret's mount");
                cfg["redis"][key] = tls.as_ref().expect("TLS render").join(file).to_str().unwrap().into();
            }
        }
    });
    app.probes_pass(Duration::from_secs(30)).await;
    (cl, app, dir)
}

/// Rewrites the rendered sentinel addresses (`kvq-redis-N.<headless>:26379`) to pod N's
/// loopback address, checking the rest of the rendered Redis settings on the way.
fn point_at_simulated_sentinels(sentinel_port: u16) -> impl FnOnce(&mut serde_yaml_ng::Value) {
    move |cfg| {
        assert_eq!(cfg["redis"]["mode"].as_str(), Some("sentinel"));
        assert_eq!(cfg["redis"]["min_replicas_ack"].as_u64(), Some(1));
        let rewritten = to_pod_addresses(&cfg["redis"]["sentinels"], sentinel_port);
        assert_eq!(rewritten.len(), PODS);
        cfg["redis"]["sentinels"] = serde_yaml_ng::Value::Sequence(rewritten);
    }
}

/// A values file (in `dir`) for TLS only with mutual TLS (the Secret `kvq-tls`, whose files the
/// simulation makes) and ACL users, plus the harness's own ACL user (`HARNESS_USER`).
pub fn tls_acl_values(dir: &std::path::Path) -> PathBuf {
    let text = format!(
        "redis:\n  tls:\n    enabled: true\n    existingSecret: kvq-tls\n    authClients: true\n  acl:\n    enabled: true\n\
         \x20 config:\n    extra: \"user {} on >{} ~* &* +@all\"\n",
        HARNESS_USER.0, HARNESS_USER.1
    );
    let path = dir.join("tls-acl-values.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A simulated pod's env: the rendered `base` with its data and config directories and `ports`
/// replaced, plus what Kubernetes would provide: the pod's name, its stable hostname and the
/// peers' (loopback addresses here), its address, and `extra`.
pub fn pod_env(
    base: &[(String, String)],
    pod_dir: &std::path::Path,
    i: usize,
    n: usize,
    ports: &[(&str, u16)],
    extra: &[(&str, String)],
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = base
        .iter()
        .map(|(k, v)| {
            let v = match k.as_str() {
                "DATA_DIR" => pod_dir.join("data").to_str().unwrap().to_string(),
                "CONF_DIR" => pod_dir.join("run").to_str().unwrap().to_string(),
                name => ports.iter().find(|(p, _)| *p == name).map_or_else(|| v.clone(), |(_, port)| port.to_string()),
            };
            (k.clone(), v)
        })
        .collect();
    let peers: Vec<String> = (0..n).map(addr).collect();
    env.extend([
        ("POD_NAME".into(), format!("kvq-redis-{i}")),
        ("ANNOUNCE_HOST".into(), addr(i)),
        ("PEER_HOSTS".into(), peers.join(" ")),
        ("LOCAL_ADDR".into(), addr(i)),
        ("BIND_ADDRESS".into(), addr(i)),
        ("PATH".into(), std::env::var("PATH").unwrap()),
    ]);
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
    env
}

/// Rendered pod addresses (`kvq-redis-N.<headless>:<port>`, a list) as pod N's loopback
/// address with `port`.
pub fn to_pod_addresses(rendered: &serde_yaml_ng::Value, port: u16) -> Vec<serde_yaml_ng::Value> {
    rendered
        .as_sequence()
        .unwrap()
        .iter()
        .map(|s| {
            let host = s.as_str().unwrap().split(':').next().unwrap();
            let ordinal: usize = host.split('.').next().unwrap().rsplit('-').next().unwrap().parse().unwrap();
            format!("{}:{port}", addr(ordinal)).into()
        })
        .collect()
}
