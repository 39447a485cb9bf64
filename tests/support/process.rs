//! Processes owned by a test: one child type killed on drop (used by every spawner), free
//! ports, program lookup, loopback addresses and polling.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// A child process killed (SIGKILL) and reaped when dropped. `log` is where its output goes,
/// shown when it exits unexpectedly.
pub struct ChildProcess {
    pub name: String,
    child: Child,
    pub log: Option<PathBuf>,
}

impl ChildProcess {
    /// Spawns `cmd`; `name` appears in failure messages.
    pub fn spawn(name: &str, cmd: &mut Command) -> Self {
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        Self { name: name.to_string(), child, log: None }
    }

    /// The same, with the file its output goes to.
    pub fn with_log(mut self, log: PathBuf) -> Self {
        self.log = Some(log);
        self
    }

    /// Sends a signal by name (`TERM`, `STOP`, `CONT`, ...).
    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill").args([&format!("-{sig}"), &self.child.id().to_string()]).status();
    }

    /// Waits for the exit; returns the exit code (None when killed by a signal).
    pub fn wait(&mut self) -> Option<i32> {
        self.child.wait().unwrap().code()
    }

    /// SIGTERM, then the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        self.signal("TERM");
        self.wait()
    }

    /// SIGKILL and reap: a crash.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The exit status if it has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap()
    }

    /// Fails the test with the process's log when it has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            let log = self.log.as_ref().and_then(|l| std::fs::read_to_string(l).ok()).unwrap_or_default();
            panic!("{} exited with {status}:\n{log}", self.name);
        }
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A free TCP port on loopback (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Loopback address number `i` (0-based): 127.0.0.1, 127.0.0.2, ... (Linux routes all of
/// 127/8 to lo).
pub fn loopback(i: usize) -> String {
    format!("127.0.0.{}", i + 1)
}

/// A port free on each of the first `n` loopback addresses.
pub fn free_port_on_loopbacks(n: usize) -> u16 {
    loop {
        let p = free_port();
        if (0..n).all(|i| TcpListener::bind((loopback(i).as_str(), p)).is_ok()) {
            return p;
        }
    }
}

/// The path of an installed program; fails the test when it is missing.
pub fn which(bin: &str) -> PathBuf {
    let out = Command::new("sh").arg("-c").arg(format!("command -v {bin}")).output().unwrap();
    assert!(
        out.status.success(),
        "`{bin}` is not installed: run scripts/install-deps.sh (it installs redis-server, redis-sentinel and redis-cli)"
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
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

/// The blocking form of `eventually`, for code outside the async runtime.
pub fn wait_until(timeout: Duration, poll: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(poll);
    }
}
