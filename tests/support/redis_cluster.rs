//! A real Redis Cluster on loopback: N masters x R replicas of `redis-server` with
//! `cluster-enabled yes`, node `i` on 127.0.0.{i+1} (all on the same port, as pods would be),
//! created with `redis-cli --cluster create`, with fast failover (`cluster-node-timeout` 1 s).
//! Helpers kill and restart nodes, wait for failovers and move slots the way `redis-cli
//! --cluster reshard` does (SETSLOT IMPORTING/MIGRATING, MIGRATE in batches, SETSLOT NODE).

use std::collections::{BTreeMap, HashMap};
use std::ops::RangeInclusive;
use std::process::Command;
use std::time::Duration;

use super::process::{free_port_on_loopbacks, loopback, wait_until, which};
use super::redis_server::{TestRedis, HARNESS_USER};
use super::tls::{acl_rules, TestCerts};

/// The kvq ACL users of `ClusterBuilder::kvq_users` and their passwords.
pub const KVQ_USERS: [(&str, &str); 2] = [("kvq-server", "server-pw"), ("kvq-worker", "worker-pw")];

/// How long a node may be unreachable before the others mark it failed: short, so failovers
/// take seconds.
pub const NODE_TIMEOUT_MS: u64 = 1000;

/// How to start a `TestCluster`: `TestCluster::builder().masters(3).replicas(1).start()`.
pub struct ClusterBuilder<'a> {
    masters: usize,
    replicas: usize,
    password: Option<String>,
    tls: Option<&'a TestCerts>,
    kvq_users: bool,
}

impl Default for ClusterBuilder<'_> {
    fn default() -> Self {
        Self { masters: 3, replicas: 1, password: None, tls: None, kvq_users: false }
    }
}

impl<'a> ClusterBuilder<'a> {
    /// Masters (default 3): the slot space is split evenly between them.
    pub fn masters(mut self, n: usize) -> Self {
        self.masters = n;
        self
    }

    /// Replicas per master (default 1).
    pub fn replicas(mut self, n: usize) -> Self {
        self.replicas = n;
        self
    }

    /// `requirepass` on every node (and `masterauth`, so replicas can sync).
    pub fn password(mut self, password: &str) -> Self {
        self.password = Some(password.to_string());
        self
    }

    /// TLS only, on the client port, the cluster bus and replication (`tls-cluster`,
    /// `tls-replication`), with the certificates of `certs`.
    pub fn tls(mut self, certs: &'a TestCerts) -> Self {
        self.tls = Some(certs);
        self
    }

    /// ACL users: `default` off, the kvq-server and kvq-worker users with the rules the chart
    /// documents, and the harness's all-rights user (which the replicas replicate as).
    pub fn kvq_users(mut self) -> Self {
        self.kvq_users = true;
        self
    }

    pub fn start(self) -> TestCluster {
        let n = self.masters * (1 + self.replicas);
        assert!(self.masters >= 3, "Redis Cluster needs at least 3 masters");
        let port = free_port_on_loopbacks(n);
        // The cluster bus gets a port of its own (`cluster-port`): port + 10000 may not be free.
        let bus = loop {
            let p = free_port_on_loopbacks(n);
            if p != port {
                break p;
            }
        };
        let (port_s, bus_s, timeout) = (port.to_string(), bus.to_string(), NODE_TIMEOUT_MS.to_string());
        let nodes: Vec<TestRedis> = (0..n)
            .map(|i| {
                let host = loopback(i);
                let mut b = TestRedis::builder().host(&host).port(port).args(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-port",
                    &bus_s,
                    "--cluster-node-timeout",
                    &timeout,
                    "--cluster-announce-ip",
                    &host,
                    // A replica may always take over: the test decides when a master dies.
                    "--cluster-replica-validity-factor",
                    "0",
                ]);
                if let Some(pw) = &self.password {
                    b = b.password(pw).args(&["--masterauth", pw]);
                }
                if let Some(certs) = self.tls {
                    b = b.tls(certs).args(&["--tls-cluster", "yes", "--tls-replication", "yes"]);
                }
                if self.kvq_users {
                    b = b
                        .acl_user("kvq-server", KVQ_USERS[0].1, &acl_rules("kvq-server", "kvq"))
                        .acl_user("kvq-worker", KVQ_USERS[1].1, &acl_rules("kvq-worker", "kvq"))
                        .args(&["--masteruser", HARNESS_USER.0, "--masterauth", HARNESS_USER.1]);
                }
                b.start()
            })
            .collect();
        let cluster = TestCluster {
            nodes,
            masters: self.masters,
            replicas: self.replicas,
            password: self.password,
            ca: self.tls.map(TestCerts::ca),
            kvq_users: self.kvq_users,
            killed_slots: HashMap::new(),
        };
        cluster.create(&port_s);
        cluster
    }
}

/// A running Redis Cluster; every node is killed on drop.
pub struct TestCluster {
    /// Node `i` listens on `loopback(i)`; the first `masters` were created as masters.
    pub nodes: Vec<TestRedis>,
    pub masters: usize,
    pub replicas: usize,
    pub password: Option<String>,
    /// With TLS: the CA that signed the nodes' certificates.
    pub ca: Option<std::path::PathBuf>,
    /// With ACL users (`ClusterBuilder::kvq_users`).
    pub kvq_users: bool,
    /// The slots each killed master served when it was killed (what its replica takes over).
    killed_slots: HashMap<usize, Vec<RangeInclusive<u16>>>,
}

/// One line of `CLUSTER NODES`: a node as one member of the cluster sees it.
#[derive(Debug, Clone)]
pub struct NodeLine {
    pub id: String,
    /// `host:port`.
    pub addr: String,
    pub flags: Vec<String>,
    /// The id of its master, for a replica.
    pub master: Option<String>,
    /// The slot ranges it serves (importing/migrating markers left out).
    pub slots: Vec<RangeInclusive<u16>>,
}

impl NodeLine {
    pub fn is_master(&self) -> bool {
        self.flags.iter().any(|f| f == "master")
    }

    pub fn is_failed(&self) -> bool {
        self.flags.iter().any(|f| f == "fail" || f == "fail?")
    }

    pub fn serves(&self, slot: u16) -> bool {
        self.slots.iter().any(|r| r.contains(&slot))
    }
}

impl TestCluster {
    pub fn builder<'a>() -> ClusterBuilder<'a> {
        ClusterBuilder::default()
    }

    /// 3 masters x 1 replica, no password.
    pub fn start() -> Self {
        Self::builder().start()
    }

    fn create(&self, port: &str) {
        let mut cmd = Command::new(which("redis-cli"));
        if let Some(pw) = &self.password {
            cmd.args(["-a", pw, "--no-auth-warning"]);
        }
        if self.kvq_users {
            cmd.args(["--user", HARNESS_USER.0, "--pass", HARNESS_USER.1, "--no-auth-warning"]);
        }
        if let Some(ca) = &self.ca {
            cmd.arg("--tls").arg("--cacert").arg(ca);
        }
        cmd.arg("--cluster").arg("create");
        cmd.args((0..self.nodes.len()).map(|i| format!("{}:{port}", loopback(i))));
        cmd.args(["--cluster-replicas", &self.replicas.to_string(), "--cluster-yes"]);
        let out = cmd.output().expect("redis-cli runs");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        self.wait_healthy(Duration::from_secs(30));
    }

    /// Waits until every running node says `cluster_state:ok`, knows every node, sees
    /// `masters` masters with slots and `masters * replicas` replicas, and every replica's link
    /// to its master is up and synced.
    pub fn wait_healthy(&self, timeout: Duration) {
        wait_until(timeout, Duration::from_millis(100), "the cluster to be healthy and in sync", || {
            self.running().all(|i| {
                let Some(view) = self.try_view(i) else { return false };
                let masters = view.iter().filter(|l| l.is_master() && !l.slots.is_empty() && !l.is_failed()).count();
                let replicas = view.iter().filter(|l| !l.is_master() && !l.is_failed()).count();
                let info = self.try_info(i, "replication").unwrap_or_default();
                let synced = if field(&info, "role") == Some("slave") {
                    field(&info, "master_link_status") == Some("up")
                        && field(&info, "master_sync_in_progress") == Some("0")
                } else {
                    true
                };
                self.state_ok(i)
                    && view.len() == self.nodes.len()
                    && masters == self.masters
                    && replicas == self.masters * self.replicas
                    && synced
            })
        });
    }

    /// The indexes of the nodes whose process runs (not killed).
    pub fn running(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(|&i| self.nodes[i].is_running())
    }

    /// The nodes that replicate master `m` now.
    pub fn replicas_of(&self, m: usize) -> Vec<usize> {
        let id = self.id(m);
        let i = self.running().next().expect("a running node");
        let view = self.try_view(i).expect("a running node answers CLUSTER NODES");
        view.iter()
            .filter(|l| l.master.as_deref() == Some(id.as_str()))
            .filter_map(|l| self.index_of(&l.addr))
            .collect()
    }

    /// Every node's `host:port`: seeds for a cluster client or kvq's `redis.nodes`.
    pub fn seeds(&self) -> Vec<String> {
        self.nodes.iter().map(TestRedis::addr).collect()
    }

    /// Env that puts kvq in cluster mode against this cluster (seeds: every node).
    pub fn kvq_env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![("KVQ__REDIS__MODE", "cluster".to_string()), ("KVQ__REDIS__NODES", self.seeds().join(","))];
        if let Some(pw) = &self.password {
            env.push(("KVQ__REDIS__PASSWORD", pw.clone()));
        }
        if let Some(ca) = &self.ca {
            env.push(("KVQ__REDIS__TLS", "true".into()));
            env.push(("KVQ__REDIS__TLS_CA_FILE", ca.display().to_string()));
        }
        env
    }

    /// `kvq_env` as one of the kvq ACL users (`kvq-server` or `kvq-worker`).
    pub fn kvq_env_as(&self, user: &str) -> Vec<(&'static str, String)> {
        let (_, password) = KVQ_USERS.iter().find(|(u, _)| *u == user).unwrap_or_else(|| panic!("no ACL user {user}"));
        let mut env = self.kvq_env();
        env.push(("KVQ__REDIS__USERNAME", user.to_string()));
        env.push(("KVQ__REDIS__PASSWORD", password.to_string()));
        env
    }

    /// A cluster client of redis-rs (seeds: every node), for the harness's own reads and writes.
    pub fn client(&self) -> redis::cluster::ClusterClient {
        let scheme = if self.ca.is_some() { "rediss" } else { "redis" };
        let urls: Vec<String> = self.seeds().iter().map(|a| format!("{scheme}://{a}")).collect();
        let mut b = redis::cluster::ClusterClientBuilder::new(urls);
        if let Some(pw) = &self.password {
            b = b.password(pw);
        }
        if self.kvq_users {
            b = b.username(HARNESS_USER.0).password(HARNESS_USER.1);
        }
        if let Some(ca) = &self.ca {
            let certs = redis::TlsCertificates { client_tls: None, root_cert: Some(std::fs::read(ca).unwrap()) };
            b = b.tls(redis::TlsMode::Secure).certs(certs);
        }
        b.build().unwrap()
    }

    /// The index of the node listening on `addr` (`host:port`).
    pub fn index_of(&self, addr: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.addr() == addr)
    }

    /// A blocking connection to node `i` (answers within 10 s or fails: no test hangs on a
    /// stalled node).
    pub fn conn(&self, i: usize) -> redis::Connection {
        let c = self.nodes[i].conn();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c
    }

    fn try_conn(&self, i: usize) -> Option<redis::Connection> {
        let c = self.nodes[i].client().get_connection_with_timeout(Duration::from_millis(500)).ok()?;
        c.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        Some(c)
    }

    /// `INFO section` of node `i`.
    pub fn info(&self, i: usize, section: &str) -> String {
        self.try_info(i, section).unwrap_or_else(|| panic!("node {i} did not answer INFO {section}"))
    }

    fn try_info(&self, i: usize, section: &str) -> Option<String> {
        redis::cmd("INFO").arg(section).query(&mut self.try_conn(i)?).ok()
    }

    fn cluster_info(&self, i: usize) -> Option<String> {
        redis::cmd("CLUSTER").arg("INFO").query(&mut self.try_conn(i)?).ok()
    }

    /// Node `i`'s `CLUSTER MYID`.
    pub fn id(&self, i: usize) -> String {
        redis::cmd("CLUSTER").arg("MYID").query(&mut self.conn(i)).unwrap()
    }

    /// The cluster as node `i` sees it (`CLUSTER NODES`), None when it does not answer.
    pub fn try_view(&self, i: usize) -> Option<Vec<NodeLine>> {
        let text: String = redis::cmd("CLUSTER").arg("NODES").query(&mut self.try_conn(i)?).ok()?;
        Some(text.lines().filter_map(parse_node_line).collect())
    }

    /// The index of the node that serves `slot`, as the running nodes agree (panics when they
    /// do not agree within 10 s).
    pub fn master_of_slot(&self, slot: u16) -> usize {
        let mut found = None;
        wait_until(Duration::from_secs(10), Duration::from_millis(50), &format!("agreement on slot {slot}"), || {
            found = self.agreed_master_of_slot(slot);
            found.is_some()
        });
        found.unwrap()
    }

    /// The node every running node names as `slot`'s master, if they all name the same one.
    fn agreed_master_of_slot(&self, slot: u16) -> Option<usize> {
        let mut owner = None;
        for i in self.running() {
            let view = self.try_view(i)?;
            let line = view.iter().find(|l| l.is_master() && l.serves(slot))?;
            let j = self.index_of(&line.addr)?;
            if owner.is_some_and(|o| o != j) {
                return None;
            }
            owner = Some(j);
        }
        owner
    }

    /// The hash slot of `key` (`CLUSTER KEYSLOT`).
    pub fn slot_of(&self, key: &str) -> u16 {
        let i = self.running().next().expect("a running node");
        redis::cmd("CLUSTER").arg("KEYSLOT").arg(key).query(&mut self.conn(i)).unwrap()
    }

    /// The indexes of the nodes that serve slots now, with their slot ranges.
    pub fn masters_now(&self) -> BTreeMap<usize, Vec<RangeInclusive<u16>>> {
        let i = self.running().next().expect("a running node");
        let view = self.try_view(i).expect("a running node answers CLUSTER NODES");
        view.into_iter()
            .filter(|l| l.is_master() && !l.slots.is_empty())
            .filter_map(|l| Some((self.index_of(&l.addr)?, l.slots)))
            .collect()
    }

    /// Kills node `i` with SIGKILL (its data directory stays for `restart`).
    pub fn kill9(&mut self, i: usize) {
        if let Some(slots) = self.masters_now().remove(&i) {
            self.killed_slots.insert(i, slots);
        }
        self.nodes[i].kill();
    }

    /// Starts node `i` again on its address and data directory: it rejoins with its
    /// `nodes.conf` (a failed-over master comes back as a replica).
    pub fn restart(&mut self, i: usize) {
        self.nodes[i].restart();
    }

    /// After master `old_master` was killed (`kill9`): waits until one of its replicas is
    /// promoted and every running node agrees it serves the old master's slots, with
    /// `cluster_state:ok` everywhere; returns the new master's index.
    pub fn wait_failover(&self, old_master: usize, timeout: Duration) -> usize {
        let slot = *self
            .killed_slots
            .get(&old_master)
            .and_then(|s| s.first())
            .unwrap_or_else(|| panic!("node {old_master} was not a master serving slots when killed"))
            .start();
        let mut new_master = None;
        let what = format!("a replica of node {old_master} to take over slot {slot}");
        wait_until(timeout, Duration::from_millis(50), &what, || {
            new_master = self.agreed_master_of_slot(slot).filter(|&j| j != old_master);
            new_master.is_some() && self.running().all(|i| self.state_ok(i))
        });
        new_master.unwrap()
    }

    fn state_ok(&self, i: usize) -> bool {
        self.cluster_info(i).as_deref().and_then(|c| field(c, "cluster_state")) == Some("ok")
    }

    /// Waits until every replica's offset equals its master's: everything written so far is
    /// on the replicas.
    pub fn wait_replicated(&self, timeout: Duration) {
        wait_until(timeout, Duration::from_millis(20), "the replicas to catch up", || {
            self.running().all(|i| {
                let Some(info) = self.try_info(i, "replication") else { return false };
                if field(&info, "role") != Some("master") {
                    return true;
                }
                let offset = field(&info, "master_repl_offset");
                info.lines()
                    .filter(|l| l.starts_with("slave") && l.contains("offset="))
                    .all(|l| l.split(',').find_map(|kv| kv.strip_prefix("offset=")) == offset)
            })
        });
    }

    /// Moves the slots `range` from master `from` to master `to` as a real resharding does,
    /// slot by slot: `CLUSTER SETSLOT IMPORTING` on `to`, `MIGRATING` on `from`, `MIGRATE` of
    /// the slot's keys in batches of `batch`, then `SETSLOT NODE` on `to`, `from` and every
    /// other master. Writes may go on meanwhile (clients get ASK / TRYAGAIN, then MOVED).
    pub fn migrate_slots(&self, range: RangeInclusive<u16>, from: usize, to: usize, batch: usize) {
        let (from_id, to_id) = (self.id(from), self.id(to));
        let (mut src, mut dst) = (self.conn(from), self.conn(to));
        let masters: Vec<usize> = self.masters_now().into_keys().collect();
        for slot in range.clone() {
            let () =
                redis::cmd("CLUSTER").arg("SETSLOT").arg(slot).arg("IMPORTING").arg(&from_id).query(&mut dst).unwrap();
            let () =
                redis::cmd("CLUSTER").arg("SETSLOT").arg(slot).arg("MIGRATING").arg(&to_id).query(&mut src).unwrap();
            loop {
                let keys: Vec<String> =
                    redis::cmd("CLUSTER").arg("GETKEYSINSLOT").arg(slot).arg(batch).query(&mut src).unwrap();
                if keys.is_empty() {
                    break;
                }
                let mut migrate = redis::cmd("MIGRATE");
                migrate.arg(&self.nodes[to].host).arg(self.nodes[to].port).arg("").arg(0).arg(10_000);
                if let Some(pw) = &self.password {
                    migrate.arg("AUTH").arg(pw);
                }
                migrate.arg("KEYS").arg(&keys);
                // NOKEY: the keys were deleted between GETKEYSINSLOT and MIGRATE.
                let r: redis::RedisResult<String> = migrate.query(&mut src);
                match r {
                    Ok(_) => {}
                    Err(e) if e.to_string().contains("NOKEY") => {}
                    Err(e) => panic!("MIGRATE of slot {slot} from node {from} to node {to}: {e}"),
                }
            }
            let () = redis::cmd("CLUSTER").arg("SETSLOT").arg(slot).arg("NODE").arg(&to_id).query(&mut dst).unwrap();
            let () = redis::cmd("CLUSTER").arg("SETSLOT").arg(slot).arg("NODE").arg(&to_id).query(&mut src).unwrap();
            for &m in masters.iter().filter(|&&m| m != from && m != to) {
                let () = redis::cmd("CLUSTER")
                    .arg("SETSLOT")
                    .arg(slot)
                    .arg("NODE")
                    .arg(&to_id)
                    .query(&mut self.conn(m))
                    .unwrap();
            }
        }
        let (first, last) = (*range.start(), *range.end());
        wait_until(
            Duration::from_secs(15),
            Duration::from_millis(50),
            "every node to agree on the moved slots",
            || self.agreed_master_of_slot(first) == Some(to) && self.agreed_master_of_slot(last) == Some(to),
        );
    }

    /// `XREADGROUP`s blocked in Redis now, waiting for entries, over every master.
    pub fn blocked_reads(&self) -> usize {
        self.masters_now()
            .into_keys()
            .map(|i| {
                let clients: String = redis::cmd("CLIENT").arg("LIST").query(&mut self.conn(i)).unwrap();
                clients.lines().filter(|l| l.contains("cmd=xreadgroup") && l.contains("flags=b")).count()
            })
            .sum()
    }

    /// Keys held by each master now (`DBSIZE`).
    pub fn keys_per_master(&self) -> BTreeMap<usize, u64> {
        self.masters_now().into_keys().map(|i| (i, redis::cmd("DBSIZE").query(&mut self.conn(i)).unwrap())).collect()
    }

    /// Keys matching `pattern` on each master now (`SCAN`), for checking where data lives.
    pub fn keys_matching(&self, pattern: &str) -> HashMap<usize, Vec<String>> {
        self.masters_now()
            .into_keys()
            .map(|i| {
                let mut c = self.conn(i);
                let keys: Vec<String> = redis::cmd("KEYS").arg(pattern).query(&mut c).unwrap();
                (i, keys)
            })
            .collect()
    }
}

/// `name:value` of an INFO-style text.
pub fn field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':')).map(str::trim)
}

/// `<id> <ip:port@bus[,hostname]> <flags> <master> <ping> <pong> <epoch> <link> <slot>...`
fn parse_node_line(line: &str) -> Option<NodeLine> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() < 8 {
        return None;
    }
    let addr = f[1].split(['@', ',']).next()?.to_string();
    let slots = f[8..]
        .iter()
        .filter(|s| !s.starts_with('['))
        .filter_map(|s| match s.split_once('-') {
            Some((a, b)) => Some(a.parse().ok()?..=b.parse().ok()?),
            None => {
                let n: u16 = s.parse().ok()?;
                Some(n..=n)
            }
        })
        .collect();
    Some(NodeLine {
        id: f[0].to_string(),
        addr,
        flags: f[2].split(',').map(str::to_string).collect(),
        master: (f[3] != "-").then(|| f[3].to_string()),
        slots,
    })
}
