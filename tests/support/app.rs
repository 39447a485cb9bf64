//! kvq for tests: in process (`spawn_app`, `TestApp`, `TestWorker`, `step_worker`) and as the
//! real binaries (`KvqProcess`, `Binaries`).

use std::ops::Deref;
use std::process::{Command, Stdio};
use std::time::Duration;

use kvq::config::Settings;
use kvq::connection::Redis;
use kvq::metrics::Metrics;
use kvq::server::ServerApp;
use kvq::store::Store;
use kvq::worker::app::WorkerApp;
use kvq::worker::Worker;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::http::HttpClient;
use super::process::{eventually, free_port, ChildProcess};
use super::redis_cluster::TestCluster;
use super::redis_server::TestRedis;

/// Logs to stderr when `TEST_LOG` is set.
pub fn init_test_log() {
    if std::env::var_os("TEST_LOG").is_some() {
        kvq::telemetry::init(kvq::config::LogFormat::Pretty);
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
        // Authentication has its own tests (app `auth::`), which pass their token file.
        ("KVQ__AUTH__MODE".into(), "none".into()),
    ];
    for (k, v) in extra {
        env.retain(|(ek, _)| ek != k);
        env.push((k.to_string(), v.to_string()));
    }
    Settings::load_from(env).expect("test settings")
}

/// An in-process server (and optionally workers) against a test Redis. Derefs to its
/// `HttpClient` (`app.put(..)`, `app.base`, `app.client`).
pub struct TestApp {
    pub http: HttpClient,
    pub settings: Settings,
    pub store: Store,
    server_stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
    pub workers: Vec<TestWorker>,
}

pub struct TestWorker {
    pub port: u16,
    stop: Option<oneshot::Sender<()>>,
    pub handle: JoinHandle<std::io::Result<()>>,
}

impl TestWorker {
    /// Stops gracefully and waits.
    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        let _ = self.handle.await;
    }
}

pub async fn spawn_worker(settings: &Settings, consumer: &str) -> TestWorker {
    let mut s = settings.clone();
    s.worker.consumer_name = Some(consumer.to_string());
    let app = WorkerApp::build(&s).await.expect("worker binds");
    let port = app.port();
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(app.run_until_stopped(async move {
        let _ = rx.await;
    }));
    TestWorker { port, stop: Some(tx), handle }
}

/// A worker object (not running) for driving the queue step by step.
pub fn step_worker(settings: &Settings, consumer: &str) -> Worker {
    worker_with_metrics(settings, consumer).0
}

/// A worker object (not running) and the metrics it counts into.
pub fn worker_with_metrics(settings: &Settings, consumer: &str) -> (Worker, std::sync::Arc<Metrics>) {
    let mut s = settings.clone();
    s.worker.consumer_name = Some(consumer.to_string());
    let store = Store::from_settings(&s);
    let metrics = std::sync::Arc::new(Metrics::new());
    (Worker::new(&s, store, metrics.clone()), metrics)
}

/// Starts a server and `workers` workers against `redis`.
pub async fn spawn_app(redis: &TestRedis, workers: usize) -> TestApp {
    spawn_app_with(redis, workers, &[]).await
}

pub async fn spawn_app_with(redis: &TestRedis, workers: usize, extra: &[(&str, &str)]) -> TestApp {
    init_test_log();
    let settings = test_settings(&redis.url(), extra);
    spawn_app_settings(settings, workers).await
}

/// Settings for an app in cluster mode against `cluster` (its `kvq_env`), on free loopback ports.
pub fn cluster_settings(cluster: &TestCluster, extra: &[(&str, &str)]) -> Settings {
    let mut env: Vec<(&str, String)> = cluster.kvq_env();
    env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // The URL is not used in cluster mode; the nodes are.
    test_settings("redis://127.0.0.1:1", &env)
}

/// Starts a server and `workers` workers in cluster mode against `cluster`.
pub async fn spawn_cluster_app(cluster: &TestCluster, workers: usize, extra: &[(&str, &str)]) -> TestApp {
    init_test_log();
    spawn_app_settings(cluster_settings(cluster, extra), workers).await
}

/// A server and `workers` workers against `redis` (TLS settings from it), each binary as its own
/// ACL user of `redis` (None: no user).
pub async fn spawn_app_as(
    redis: &TestRedis,
    server_user: Option<&str>,
    worker_user: Option<&str>,
    workers: usize,
) -> TestApp {
    init_test_log();
    let settings = |user| {
        let env = redis.kvq_env(user);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        test_settings(&redis.url(), &env)
    };
    let mut app = spawn_app_settings(settings(server_user), 0).await;
    let worker = settings(worker_user);
    for i in 0..workers {
        app.workers.push(spawn_worker(&worker, &format!("worker-{i}")).await);
    }
    app
}

pub async fn spawn_app_settings(settings: Settings, workers: usize) -> TestApp {
    let app = ServerApp::build(&settings).await.expect("server binds");
    let base = format!("http://127.0.0.1:{}", app.port());
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async move {
        let _ = rx.await;
    }));
    let mut ws = Vec::new();
    for i in 0..workers {
        ws.push(spawn_worker(&settings, &format!("worker-{i}")).await);
    }
    let store = Store::from_settings(&settings);
    TestApp {
        http: HttpClient::new(&base, Duration::from_secs(40)),
        settings,
        store,
        server_stop: Some(tx),
        server: Some(server),
        workers: ws,
    }
}

impl Deref for TestApp {
    type Target = HttpClient;
    fn deref(&self) -> &HttpClient {
        &self.http
    }
}

impl TestApp {
    /// Queues `n` sets of `key-{i % keys}` straight into the task streams (pipelined `XADD`s of
    /// entries as the server writes them, one pipeline per shard), as fast as Redis takes them:
    /// a backlog far bigger than the API could build in a test.
    pub async fn queue_backlog(&self, n: usize, keys: usize) {
        let mut c = self.store.redis.dedicated(None).await.unwrap();
        let shards = self.store.shards.clone();
        let mut i = 0;
        while i < n {
            let mut pipes: Vec<redis::Pipeline> = shards.all().iter().map(|_| redis::pipe()).collect();
            for j in i..(i + 5000).min(n) {
                let key = format!("key-{}", j % keys);
                let shard = shards.of(&key);
                let task = kvq::store::StreamTask {
                    shard: shard.shard,
                    stream_id: String::new(),
                    task_id: String::new(),
                    op: kvq::domain::Op::Set,
                    key,
                    value: format!("v{j}"),
                    ttl_ms: None,
                    if_match: None,
                    if_none_match: false,
                    notify: false,
                };
                let xadd = pipes[shard.shard].cmd("XADD").arg(&shard.stream).arg("*");
                for (name, value) in task.fields() {
                    xadd.arg(name).arg(value);
                }
                xadd.ignore();
            }
            for pipe in pipes.iter().filter(|p| p.cmd_iter().next().is_some()) {
                let () = pipe.query_async(&mut c).await.unwrap();
            }
            i = (i + 5000).min(n);
        }
    }

    /// Queues `n` sets of `key` straight into its shard's task stream (pipelined `XADD`s of
    /// entries as the server writes them): a backlog in one shard only.
    pub async fn queue_backlog_of_key(&self, key: &str, n: usize) {
        let mut c = self.store.redis.dedicated(None).await.unwrap();
        let shard = self.store.shards.of(key).clone();
        for start in (0..n).step_by(5000) {
            let mut pipe = redis::pipe();
            for j in start..(start + 5000).min(n) {
                let task = kvq::store::StreamTask {
                    shard: shard.shard,
                    stream_id: String::new(),
                    task_id: String::new(),
                    op: kvq::domain::Op::Set,
                    key: key.to_string(),
                    value: format!("v{j}"),
                    ttl_ms: None,
                    if_match: None,
                    if_none_match: false,
                    notify: false,
                };
                let xadd = pipe.cmd("XADD").arg(&shard.stream).arg("*");
                for (name, value) in task.fields() {
                    xadd.arg(name).arg(value);
                }
                xadd.ignore();
            }
            let () = pipe.query_async(&mut c).await.unwrap();
        }
    }

    /// Waits until no task is queued or pending.
    pub async fn drain(&self, timeout: Duration) {
        eventually(timeout, "the queue to drain", || async {
            let s = self.store.queue_stats().await.ok()?;
            (s.depth() == 0).then_some(())
        })
        .await
    }

    pub async fn stop(mut self) {
        for w in self.workers.drain(..) {
            w.stop().await;
        }
        let _ = self.server_stop.take().unwrap().send(());
        let _ = self.server.take().unwrap().await;
    }
}

/// A real `kvq-server` or `kvq-worker` process, killed on drop.
pub struct KvqProcess {
    pub process: ChildProcess,
    /// The port it serves HTTP on (API for the server, health/metrics for the worker).
    pub port: u16,
}

impl KvqProcess {
    pub fn server(env: &[(&str, String)]) -> Self {
        Self::spawn(env!("CARGO_BIN_EXE_kvq-server"), "KVQ__SERVER__BIND", env, None)
    }

    pub fn worker(consumer: &str, env: &[(&str, String)]) -> Self {
        let mut env = env.to_vec();
        env.push(("KVQ__WORKER__CONSUMER_NAME", consumer.to_string()));
        Self::spawn(env!("CARGO_BIN_EXE_kvq-worker"), "KVQ__WORKER__BIND", &env, None)
    }

    /// A `kvq-worker` whose log (stderr, JSON lines) goes to `log`.
    pub fn worker_logged(consumer: &str, env: &[(&str, String)], log: &std::path::Path) -> Self {
        let mut env = env.to_vec();
        env.push(("KVQ__WORKER__CONSUMER_NAME", consumer.to_string()));
        Self::spawn(env!("CARGO_BIN_EXE_kvq-worker"), "KVQ__WORKER__BIND", &env, Some(log))
    }

    /// A `kvq-server` whose log (stderr, JSON lines) goes to `log`.
    pub fn server_logged(env: &[(&str, String)], log: &std::path::Path) -> Self {
        Self::spawn(env!("CARGO_BIN_EXE_kvq-server"), "KVQ__SERVER__BIND", env, Some(log))
    }

    fn spawn(bin: &str, bind_var: &str, env: &[(&str, String)], log: Option<&std::path::Path>) -> Self {
        let port = free_port();
        let mut cmd = Command::new(bin);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("KVQ__SERVER__BIND", "127.0.0.1:0")
            .env("KVQ__WORKER__BIND", "127.0.0.1:0")
            .env(bind_var, format!("127.0.0.1:{port}"))
            .env("KVQ__LOG__FORMAT", "json")
            // Tests that need authentication pass their own mode and token file.
            .env("KVQ__AUTH__MODE", "none")
            .stdout(Stdio::null())
            .stderr(match log {
                Some(path) => Stdio::from(std::fs::File::create(path).unwrap()),
                None if std::env::var_os("TEST_LOG").is_some() => Stdio::inherit(),
                None => Stdio::null(),
            });
        for (k, v) in env {
            cmd.env(k, v);
        }
        let name = bin.rsplit('/').next().unwrap_or(bin);
        let process = ChildProcess::spawn(name, &mut cmd);
        Self {
            process: match log {
                Some(path) => process.with_log(path.to_path_buf()),
                None => process,
            },
            port,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// A client for its HTTP port.
    pub fn http(&self, timeout: Duration) -> HttpClient {
        HttpClient::new(&self.url(""), timeout)
    }

    pub fn signal(&self, sig: &str) {
        self.process.signal(sig);
    }

    /// SIGTERM, then the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        self.process.terminate()
    }

    /// SIGKILL: a crash.
    pub fn kill9(&mut self) {
        self.process.kill();
    }
}

/// A real server and worker against one Redis URL.
pub struct Binaries {
    pub server: KvqProcess,
    pub worker: KvqProcess,
}

impl Binaries {
    pub fn spawn(redis_url: &str, extra_env: &[(&str, String)]) -> Self {
        let mut env = vec![("KVQ__REDIS__URL", redis_url.to_string())];
        env.extend_from_slice(extra_env);
        Self { server: KvqProcess::server(&env), worker: KvqProcess::worker("worker-0", &env) }
    }

    /// Sends SIGTERM to both and returns their exit codes.
    pub fn terminate(&mut self) -> (Option<i32>, Option<i32>) {
        self.server.signal("TERM");
        self.worker.signal("TERM");
        (self.server.process.wait(), self.worker.process.wait())
    }
}

impl KvqProcess {
    /// Freezes (SIGSTOP) a worker, the only one on `redis`, while its `XREADGROUP` is blocked in
    /// Redis: the next entry added is handed to the frozen process and stays pending on it.
    pub async fn freeze_in_blocking_read(&self, redis: &TestRedis) {
        eventually(Duration::from_secs(10), "the worker frozen in its blocking read", || async {
            if !redis.has_blocked_read() {
                return None;
            }
            self.signal("STOP");
            // The read may have ended its block time just before the signal: try again.
            tokio::time::sleep(Duration::from_millis(50)).await;
            if redis.has_blocked_read() {
                return Some(());
            }
            self.signal("CONT");
            None
        })
        .await
    }
}

/// Runs `kvq-worker args...` (e.g. `dead-letters list`) with `env` and returns its output.
pub fn worker_cli(env: &[(&str, String)], args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kvq-worker"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("KVQ__LOG__FORMAT", "json")
        .output()
        .expect("run kvq-worker")
}
