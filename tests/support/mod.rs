//! Shared test harness: real `redis-server` processes on free loopback ports, and kvq apps
//! spawned in-process (port 0) or as real binaries. No mocks: everything talks over TCP.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kvq::config::Settings;

pub mod app;
pub mod sentinel;
pub use app::*;

/// A free TCP port on loopback (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Logs to stderr when `TEST_LOG` is set.
pub fn init_test_log() {
    if std::env::var_os("TEST_LOG").is_some() {
        kvq::telemetry::init(kvq::config::LogFormat::Pretty);
    }
}

pub fn which(bin: &str) -> PathBuf {
    let out = Command::new("sh").arg("-c").arg(format!("command -v {bin}")).output().unwrap();
    assert!(
        out.status.success(),
        "`{bin}` is not installed: run ./scripts/test.sh (it installs redis-server and redis-sentinel)"
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// A real Redis server owned by a test, killed on drop.
pub struct TestRedis {
    pub host: String,
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    extra_args: Vec<String>,
}

impl TestRedis {
    pub fn start() -> Self {
        Self::start_with("127.0.0.1", free_port(), &[])
    }

    /// Starts `redis-server` bound to `host:port` with extra arguments (`--replicaof ...`).
    pub fn start_with(host: &str, port: u16, extra: &[&str]) -> Self {
        let mut r = Self {
            host: host.to_string(),
            port,
            dir: tempfile::tempdir().unwrap(),
            child: None,
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
        };
        r.restart();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://{}:{}", self.host, self.port)
    }

    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Starts the server again on the same port and data directory (AOF keeps the data).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new(which("redis-server"))
            .args(["--bind", &self.host, "--port", &self.port.to_string()])
            .args(["--dir", self.dir.path().to_str().unwrap()])
            .args(["--save", "", "--appendonly", "yes", "--appendfsync", "always"])
            .args(["--protected-mode", "no", "--daemonize", "no", "--loglevel", "warning"])
            .args(&self.extra_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut c) = redis::Client::open(self.url()).and_then(|c| c.get_connection()) {
                if redis::cmd("PING").query::<String>(&mut c).is_ok() {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "redis-server on {} did not start", self.addr());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (SIGKILL): an outage, or a crashed master.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// A blocking connection for assertions.
    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url()).unwrap().get_connection().unwrap()
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Settings for an app talking to `redis_url`, listening on free loopback ports.
pub fn test_settings(redis_url: &str, extra: &[(&str, &str)]) -> Settings {
    let mut env: Vec<(String, String)> = vec![
        ("KVQ__REDIS__URL".into(), redis_url.into()),
        ("KVQ__SERVER__BIND".into(), "127.0.0.1:0".into()),
        ("KVQ__WORKER__BIND".into(), "127.0.0.1:0".into()),
        ("KVQ__WORKER__CLAIM_IDLE_MS".into(), "300".into()),
        ("KVQ__LOG__FORMAT".into(), "pretty".into()),
    ];
    for (k, v) in extra {
        env.retain(|(ek, _)| ek != k);
        env.push((k.to_string(), v.to_string()));
    }
    Settings::load_from(env).expect("test settings")
}

/// Polls `check` until it returns Some or `timeout` passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
