//! A real Redis + Sentinel topology on loopback: 3 redis-server (1 master, 2 replicas) and
//! 3 redis-sentinel, with fast failover settings.

use std::process::{Command, Stdio};
use std::time::Duration;

use super::process::{free_port, wait_until, which, ChildProcess};
use super::redis_server::{replication_info, role, TestRedis};
use super::tls::TestCerts;

pub const MASTER_NAME: &str = "mymaster";

pub struct TestSentinel {
    pub port: u16,
    // Fields drop in order: the process is killed before its directory is removed.
    _process: ChildProcess,
    _dir: tempfile::TempDir,
}

impl TestSentinel {
    /// A sentinel monitoring `MASTER_NAME` at `master_port` on loopback.
    pub fn start(master_port: u16) -> Self {
        Self::start_with(master_port, "")
    }

    /// The same with extra `sentinel.conf` lines (`requirepass ...`).
    pub fn start_with(master_port: u16, extra_conf: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {dir}\n\
                 sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n\
                 sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                 sentinel failover-timeout {MASTER_NAME} 5000\n\
                 sentinel parallel-syncs {MASTER_NAME} 1\n{extra_conf}\n",
                dir = dir.path().display()
            ),
        )
        .unwrap();
        let mut cmd = Command::new(which("redis-sentinel"));
        cmd.arg(&conf).stdout(Stdio::null()).stderr(Stdio::null());
        let mut process = ChildProcess::spawn("redis-sentinel", &mut cmd);
        // Listening before it is handed to anyone (a client would see "connection refused").
        wait_until(Duration::from_secs(10), Duration::from_millis(20), &format!("sentinel on port {port}"), || {
            process.assert_running();
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Self { port, _process: process, _dir: dir }
    }

    /// A TLS-only sentinel (`port 0`, `tls-port`) monitoring `master` over TLS, with extra
    /// `sentinel.conf` lines (users, `sentinel auth-user ...`).
    pub fn start_tls(master: &TestRedis, certs: &TestCerts, extra_conf: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let conf = dir.path().join("sentinel.conf");
        let file = |name: &str| certs.path(name).display().to_string();
        std::fs::write(
            &conf,
            format!(
                "port 0\ntls-port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {dir}\n\
                 tls-cert-file {cert}\ntls-key-file {key}\ntls-ca-cert-file {ca}\ntls-replication yes\n\
                 tls-auth-clients no\n\
                 sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 1\n\
                 sentinel down-after-milliseconds {MASTER_NAME} 1000\n{extra_conf}\n",
                dir = dir.path().display(),
                cert = file("server.crt"),
                key = file("server.key"),
                ca = file("ca.crt"),
                master_port = master.port,
            ),
        )
        .unwrap();
        let log = dir.path().join("sentinel.log");
        let mut cmd = Command::new(which("redis-sentinel"));
        cmd.arg(&conf).args(["--logfile", log.to_str().unwrap()]).stdout(Stdio::null()).stderr(Stdio::null());
        let mut process = ChildProcess::spawn("redis-sentinel", &mut cmd).with_log(log);
        wait_until(Duration::from_secs(10), Duration::from_millis(20), &format!("sentinel on port {port}"), || {
            process.assert_running();
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Self { port, _process: process, _dir: dir }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn conn(&self) -> Option<redis::Connection> {
        let c = redis::Client::open(format!("redis://{}", self.addr())).ok()?;
        c.get_connection_with_timeout(Duration::from_millis(500)).ok()
    }

    /// The `config-epoch` of the master this sentinel believes in: the epoch of the last
    /// failover, so at least the number of failovers so far (failed elections use epochs too).
    pub fn config_epoch(&self) -> Option<u64> {
        let fields: Vec<String> =
            redis::cmd("SENTINEL").arg("MASTER").arg(MASTER_NAME).query(&mut self.conn()?).ok()?;
        fields.chunks(2).find(|kv| kv[0] == "config-epoch")?.get(1)?.parse().ok()
    }

    /// The master port this sentinel believes in.
    pub fn master_port(&self) -> Option<u16> {
        let mut c = self.conn()?;
        let addr: Option<(String, String)> =
            redis::cmd("SENTINEL").arg("get-master-addr-by-name").arg(MASTER_NAME).query(&mut c).ok()?;
        addr.and_then(|(_, p)| p.parse().ok())
    }
}

pub struct SentinelCluster {
    pub nodes: Vec<TestRedis>,
    pub sentinels: Vec<TestSentinel>,
}

impl SentinelCluster {
    pub fn start() -> Self {
        const DURABLE: [&str; 4] = ["--min-replicas-to-write", "1", "--min-replicas-max-lag", "10"];
        let master = TestRedis::builder().args(&DURABLE).start();
        let replicas: Vec<TestRedis> =
            (0..2).map(|_| TestRedis::builder().replica_of(&master).args(&DURABLE).start()).collect();
        let mut nodes = vec![master];
        nodes.extend(replicas);
        let cluster = Self { sentinels: (0..3).map(|_| TestSentinel::start(nodes[0].port)).collect(), nodes };
        cluster.wait_until(Duration::from_secs(15), "replicas in sync and sentinels agreeing", |c| {
            c.connected_replicas(c.nodes[0].port) == 2
                && c.sentinels.iter().all(|s| s.master_port() == Some(c.nodes[0].port))
        });
        // Sentinels must know each other before a failover can get a quorum.
        cluster.wait_until(Duration::from_secs(15), "sentinels to discover each other", |c| {
            c.sentinels.iter().all(|s| c.known_sentinels(s) >= 2)
        });
        cluster
    }

    pub fn sentinel_addrs(&self) -> String {
        self.sentinels.iter().map(TestSentinel::addr).collect::<Vec<_>>().join(",")
    }

    /// Env that puts kvq in sentinel mode against this cluster.
    pub fn kvq_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("KVQ__REDIS__MODE", "sentinel".into()),
            ("KVQ__REDIS__SENTINELS", self.sentinel_addrs()),
            ("KVQ__REDIS__MASTER_NAME", MASTER_NAME.into()),
            ("KVQ__REDIS__MIN_REPLICAS_ACK", "1".into()),
        ]
    }

    /// The master as the majority of sentinels see it.
    pub fn master_port(&self) -> Option<u16> {
        let votes: Vec<u16> = self.sentinels.iter().filter_map(TestSentinel::master_port).collect();
        votes.iter().copied().find(|p| votes.iter().filter(|q| *q == p).count() >= 2)
    }

    pub fn node(&mut self, port: u16) -> &mut TestRedis {
        self.nodes.iter_mut().find(|n| n.port == port).expect("a node on that port")
    }

    pub fn role(&self, port: u16) -> Option<String> {
        role(&format!("redis://127.0.0.1:{port}"))
    }

    fn connected_replicas(&self, port: u16) -> usize {
        replication_info(&format!("redis://127.0.0.1:{port}"))
            .lines()
            .find_map(|l| l.strip_prefix("connected_slaves:"))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }

    fn known_sentinels(&self, s: &TestSentinel) -> usize {
        let Some(mut c) = s.conn() else { return 0 };
        let others: Vec<redis::Value> =
            redis::cmd("SENTINEL").arg("sentinels").arg(MASTER_NAME).query(&mut c).unwrap_or_default();
        others.len()
    }

    pub fn wait_until(&self, timeout: Duration, what: &str, check: impl Fn(&Self) -> bool) {
        wait_until(timeout, Duration::from_millis(50), what, || check(self));
    }
}
