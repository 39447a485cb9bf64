//! A real `redis-server` owned by a test, started through a builder.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::process::{free_port, which, ChildProcess};
use super::tls::TestCerts;

/// How to start a `TestRedis`: `TestRedis::builder().password("pw").replica_of(&master).start()`.
#[derive(Default)]
pub struct RedisBuilder {
    host: Option<String>,
    port: Option<u16>,
    password: Option<String>,
    args: Vec<String>,
    tls: Option<Tls>,
    users: Vec<AclUser>,
}

/// TLS of a `TestRedis`: the certificates and whether clients must present one.
#[derive(Clone)]
struct Tls {
    ca: std::path::PathBuf,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    client_cert: std::path::PathBuf,
    client_key: std::path::PathBuf,
    require_client_cert: bool,
}

/// An ACL user: name, password, rules (`~kvq:* +get ...`).
#[derive(Clone)]
pub struct AclUser {
    pub name: String,
    pub password: String,
    pub rules: String,
}

/// The user the harness itself connects as when ACL users are configured (the `default` user
/// is off then): every right, so assertions can inspect anything.
pub const HARNESS_USER: (&str, &str) = ("harness", "harness-pw");

impl RedisBuilder {
    /// The address to bind (default 127.0.0.1).
    pub fn host(mut self, host: &str) -> Self {
        self.host = Some(host.to_string());
        self
    }

    /// The port (default: a free one).
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// `requirepass`: clients must AUTH.
    pub fn password(mut self, password: &str) -> Self {
        self.password = Some(password.to_string());
        self
    }

    /// TLS only: no plaintext port, `tls-port` on the chosen port, certificates of `certs`.
    pub fn tls(mut self, certs: &TestCerts) -> Self {
        self.tls = Some(Tls {
            ca: certs.ca(),
            cert: certs.path("server.crt"),
            key: certs.path("server.key"),
            client_cert: certs.path("client.crt"),
            client_key: certs.path("client.key"),
            require_client_cert: false,
        });
        self
    }

    /// Mutual TLS: clients must present a certificate signed by the CA (`tls-auth-clients yes`).
    pub fn require_client_cert(mut self) -> Self {
        self.tls.as_mut().expect("tls() first").require_client_cert = true;
        self
    }

    /// Adds an ACL user and turns the `default` user off.
    pub fn acl_user(mut self, name: &str, password: &str, rules: &str) -> Self {
        self.users.push(AclUser { name: name.into(), password: password.into(), rules: rules.into() });
        self
    }

    /// Starts as a replica of `master`.
    pub fn replica_of(self, master: &TestRedis) -> Self {
        let (host, port) = (master.host.clone(), master.port.to_string());
        self.args(&["--replicaof", &host, &port])
    }

    /// Extra `redis-server` arguments (`--min-replicas-to-write 1`).
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|s| s.to_string()));
        self
    }

    pub fn start(self) -> TestRedis {
        let mut extra_args = self.args;
        if let Some(pw) = &self.password {
            extra_args.extend(["--requirepass".to_string(), pw.clone()]);
        }
        let mut r = TestRedis {
            host: self.host.unwrap_or_else(|| "127.0.0.1".into()),
            port: self.port.unwrap_or_else(free_port),
            password: self.password,
            dir: tempfile::tempdir().unwrap(),
            process: None,
            extra_args,
            tls: self.tls,
            users: self.users,
        };
        r.write_acl_config();
        // A free port can be taken by another test between its release and redis binding it:
        // then redis exits, and a port of our own choosing is chosen again.
        for _ in 0..5 {
            match r.try_start() {
                Ok(()) => return r,
                Err(_) if self.port.is_none() => r.port = free_port(),
                Err(e) => panic!("{e}"),
            }
        }
        r.restart();
        r
    }
}

/// A real Redis server owned by a test, killed on drop. Append-only with fsync on every write,
/// so `kill` + `restart` keeps every acknowledged write.
pub struct TestRedis {
    // Fields drop in order: the process is killed before its directory is removed.
    process: Option<ChildProcess>,
    pub host: String,
    pub port: u16,
    pub password: Option<String>,
    pub dir: tempfile::TempDir,
    extra_args: Vec<String>,
    tls: Option<Tls>,
    pub users: Vec<AclUser>,
}

impl TestRedis {
    pub fn builder() -> RedisBuilder {
        RedisBuilder::default()
    }

    /// On a free loopback port, no password.
    pub fn start() -> Self {
        Self::builder().start()
    }

    /// The URL with the password, if any (`rediss://host:port` with TLS: credentials and
    /// certificates go in settings then, see `kvq_env`).
    pub fn url(&self) -> String {
        if self.tls.is_some() {
            return format!("rediss://{}:{}", self.host, self.port);
        }
        match &self.password {
            Some(pw) => format!("redis://:{pw}@{}:{}", self.host, self.port),
            None => format!("redis://{}:{}", self.host, self.port),
        }
    }

    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The environment that points kvq at this server as ACL user `user`: the URL, the CA, the
    /// client certificate when the server requires one, the user and its password.
    pub fn kvq_env(&self, user: Option<&str>) -> Vec<(String, String)> {
        let mut env = vec![("KVQ__REDIS__URL".to_string(), self.url())];
        if let Some(tls) = &self.tls {
            env.push(("KVQ__REDIS__TLS_CA_FILE".into(), tls.ca.display().to_string()));
            if tls.require_client_cert {
                env.push(("KVQ__REDIS__TLS_CERT_FILE".into(), tls.client_cert.display().to_string()));
                env.push(("KVQ__REDIS__TLS_KEY_FILE".into(), tls.client_key.display().to_string()));
            }
        }
        if let Some(name) = user {
            let u = self.users.iter().find(|u| u.name == name).unwrap_or_else(|| panic!("no ACL user {name}"));
            env.push(("KVQ__REDIS__USERNAME".into(), u.name.clone()));
            env.push(("KVQ__REDIS__PASSWORD".into(), u.password.clone()));
        }
        env
    }

    /// A config file holding the ACL users (redis-server takes `user` lines only from a file).
    fn write_acl_config(&self) {
        if self.users.is_empty() {
            return;
        }
        let mut conf = String::from("user default off\n");
        conf += &format!("user {} on >{} ~* &* +@all\n", HARNESS_USER.0, HARNESS_USER.1);
        for u in &self.users {
            conf += &format!("user {} on >{} {}\n", u.name, u.password, u.rules);
        }
        std::fs::write(self.dir.path().join("users.conf"), conf).unwrap();
    }

    /// The `redis-server` arguments for TLS (replacing the plaintext port) and the ACL file.
    fn tls_and_acl_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(tls) = &self.tls {
            args.extend(["--port".into(), "0".into(), "--tls-port".into(), self.port.to_string()]);
            for (flag, path) in
                [("--tls-cert-file", &tls.cert), ("--tls-key-file", &tls.key), ("--tls-ca-cert-file", &tls.ca)]
            {
                args.extend([flag.to_string(), path.display().to_string()]);
            }
            let auth = if tls.require_client_cert { "yes" } else { "no" };
            args.extend(["--tls-auth-clients".into(), auth.into()]);
        }
        args
    }

    /// A client for the harness's own connections: TLS with the test CA (and the client
    /// certificate), as the all-rights harness user when ACL users are configured.
    pub fn client(&self) -> redis::Client {
        let mut info = redis::IntoConnectionInfo::into_connection_info(self.url()).unwrap();
        if !self.users.is_empty() {
            let settings = info.redis_settings().clone().set_username(HARNESS_USER.0).set_password(HARNESS_USER.1);
            info = info.set_redis_settings(settings);
        }
        match &self.tls {
            None => redis::Client::open(info).unwrap(),
            Some(tls) => {
                let client_tls = tls.require_client_cert.then(|| redis::ClientTlsConfig {
                    client_cert: std::fs::read(&tls.client_cert).unwrap(),
                    client_key: std::fs::read(&tls.client_key).unwrap(),
                });
                let certs = redis::TlsCertificates { client_tls, root_cert: Some(std::fs::read(&tls.ca).unwrap()) };
                redis::Client::build_with_tls(info, certs).unwrap()
            }
        }
    }

    /// Starts the server again on the same port and data directory (AOF keeps the data).
    pub fn restart(&mut self) {
        if let Err(e) = self.try_start() {
            panic!("{e}");
        }
    }

    /// Starts redis-server and waits for its PING; Err (with its log) when it exits instead.
    fn try_start(&mut self) -> Result<(), String> {
        assert!(self.process.is_none(), "already running");
        let log = self.dir.path().join("redis.log");
        let mut cmd = Command::new(which("redis-server"));
        let conf = self.dir.path().join("users.conf");
        if conf.exists() {
            cmd.arg(&conf);
        }
        cmd.args(["--bind", &self.host, "--port", &self.port.to_string()])
            .args(["--dir", self.dir.path().to_str().unwrap()])
            .args(["--save", "", "--appendonly", "yes", "--appendfsync", "always"])
            .args(["--protected-mode", "no", "--daemonize", "no", "--loglevel", "warning"])
            .args(["--logfile", log.to_str().unwrap()])
            .args(&self.extra_args)
            .args(self.tls_and_acl_args())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut process = ChildProcess::spawn("redis-server", &mut cmd).with_log(log.clone());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let answers = self.try_conn().is_some_and(|mut c| redis::cmd("PING").query::<String>(&mut c).is_ok());
            // Checked after the PING: what answered is ours only while ours runs.
            if let Some(status) = process.try_wait() {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(format!("redis-server on {} exited with {status}:\n{log}", self.addr()));
            }
            if answers {
                self.process = Some(process);
                return Ok(());
            }
            assert!(Instant::now() < deadline, "redis-server on {} did not start", self.addr());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal to the running server: `STOP` freezes it (connections stay open and hang,
    /// as with a partitioned or stalled host), `CONT` thaws it.
    pub fn signal(&self, sig: &str) {
        self.process.as_ref().expect("redis-server is running").signal(sig);
    }

    /// Whether its process runs (not killed).
    pub fn is_running(&self) -> bool {
        self.process.is_some()
    }

    /// Kills the server (SIGKILL): an outage, or a crashed master.
    pub fn kill(&mut self) {
        self.process.take();
    }

    fn try_conn(&self) -> Option<redis::Connection> {
        self.client().get_connection_with_timeout(Duration::from_millis(500)).ok()
    }

    /// `XLEN` of a stream (0 when it does not exist).
    pub fn xlen(&self, stream: &str) -> u64 {
        redis::cmd("XLEN").arg(stream).query(&mut self.conn()).unwrap()
    }

    /// Fills the server with keys `{prefix}{n}` of 64 KiB (data that is not kvq's) until it
    /// refuses a write for `maxmemory`, then lowers `maxmemory` 512 KiB below what is used, so it
    /// stays full however its buffers come and go. Returns the new `maxmemory`.
    pub fn fill_until_full(&self, prefix: &str) -> u64 {
        let mut c = self.conn();
        let value = "x".repeat(65536);
        for n in 0.. {
            let r: redis::RedisResult<()> = redis::cmd("SET").arg(format!("{prefix}{n}")).arg(&value).query(&mut c);
            match r {
                Ok(()) => {}
                Err(e) if e.code() == Some("OOM") => break,
                Err(e) => panic!("filling redis: {e}"),
            }
        }
        let limit = self.used_memory() - 512 * 1024;
        let _: () = redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(limit).query(&mut c).unwrap();
        limit
    }

    /// Deletes every key `{prefix}*` (what `fill_until_full` wrote).
    pub fn free(&self, prefix: &str) {
        let mut c = self.conn();
        let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}*")).query(&mut c).unwrap();
        for chunk in keys.chunks(500) {
            let _: u64 = redis::cmd("DEL").arg(chunk).query(&mut c).unwrap();
        }
    }

    /// Keys matching `pattern` and the bytes they take (`MEMORY USAGE`, summed).
    pub fn usage(&self, pattern: &str) -> (u64, u64) {
        let mut c = self.conn();
        let keys: Vec<String> = redis::cmd("KEYS").arg(pattern).query(&mut c).unwrap();
        let mut bytes = 0;
        for chunk in keys.chunks(1000) {
            let mut pipe = redis::pipe();
            for k in chunk {
                pipe.cmd("MEMORY").arg("USAGE").arg(k);
            }
            let sizes: Vec<Option<u64>> = pipe.query(&mut c).unwrap();
            bytes += sizes.into_iter().flatten().sum::<u64>();
        }
        (keys.len() as u64, bytes)
    }

    /// `used_memory` of `INFO memory`.
    pub fn used_memory(&self) -> u64 {
        let info: String = redis::cmd("INFO").arg("memory").query(&mut self.conn()).unwrap();
        info.lines().find_map(|l| l.strip_prefix("used_memory:")).and_then(|v| v.trim().parse().ok()).unwrap()
    }

    /// A blocking connection for assertions.
    pub fn conn(&self) -> redis::Connection {
        self.client().get_connection().unwrap()
    }
}

/// `ROLE` of the server at `url` ("master", "slave"), None when it does not answer.
pub fn role(url: &str) -> Option<String> {
    let mut c = redis::Client::open(url).ok()?.get_connection_with_timeout(Duration::from_millis(500)).ok()?;
    let role: Vec<redis::Value> = redis::cmd("ROLE").query(&mut c).ok()?;
    match role.first()? {
        redis::Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        redis::Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// Lines of `INFO replication` of the server at `url` (empty when it does not answer).
pub fn replication_info(url: &str) -> String {
    let Some(mut c) =
        redis::Client::open(url).ok().and_then(|c| c.get_connection_with_timeout(Duration::from_millis(500)).ok())
    else {
        return String::new();
    };
    redis::cmd("INFO").arg("replication").query(&mut c).unwrap_or_default()
}

impl TestRedis {
    /// Stream ids pending on `consumer` of kvq's group (`XPENDING kvq:tasks kvq-workers - + ..`).
    pub fn pending_on(&self, consumer: &str) -> Vec<String> {
        let pending: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
            .arg("kvq:tasks")
            .arg("kvq-workers")
            .arg("-")
            .arg("+")
            .arg(100_000)
            .arg(consumer)
            .query(&mut self.conn())
            .unwrap();
        pending.into_iter().map(|(id, ..)| id).collect()
    }

    /// Whether some client's `XREADGROUP` is blocked in Redis, waiting for entries.
    pub fn has_blocked_read(&self) -> bool {
        let clients: String = redis::cmd("CLIENT").arg("LIST").query(&mut self.conn()).unwrap();
        clients.lines().any(|l| l.contains("cmd=xreadgroup") && l.contains("flags=b"))
    }
}
