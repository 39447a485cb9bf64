//! kvq apps for tests: in-process (spawn_app) and as real processes (spawn_binaries).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kvq::config::Settings;
use kvq::connection::Redis;
use kvq::metrics::Metrics;
use kvq::server::ServerApp;
use kvq::store::Store;
use kvq::worker::app::WorkerApp;
use kvq::worker::Worker;
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::{eventually, free_port, init_test_log, test_settings, TestRedis};

/// An in-process server (and optionally workers) against a test Redis.
pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
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
    /// Kills the worker mid-flight (its tokio task is aborted, nothing is drained).
    pub fn abort(self) {
        self.handle.abort();
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
    let mut s = settings.clone();
    s.worker.consumer_name = Some(consumer.to_string());
    let store = Store::new(Redis::new(s.redis.clone()), s.tasks.retention_seconds);
    Worker::new(&s, store, std::sync::Arc::new(Metrics::new()))
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
    let store = Store::new(Redis::new(settings.redis.clone()), settings.tasks.retention_seconds);
    TestApp {
        base,
        client: reqwest::Client::builder().timeout(Duration::from_secs(40)).build().unwrap(),
        settings,
        store,
        server_stop: Some(tx),
        server: Some(server),
        workers: ws,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn put(&self, key: &str, value: &str, query: &str) -> reqwest::Response {
        self.put_json(key, json!({ "value": value }), query, &[]).await
    }

    pub async fn put_json(&self, key: &str, body: Value, query: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut req = self.client.put(self.url(&format!("/v1/keys/{key}{query}"))).json(&body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().await.expect("request")
    }

    pub async fn delete(&self, key: &str, query: &str) -> reqwest::Response {
        self.client.delete(self.url(&format!("/v1/keys/{key}{query}"))).send().await.expect("request")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.expect("request")
    }

    /// The stored value of `key`, or None on 404.
    pub async fn value_of(&self, key: &str) -> Option<String> {
        let r = self.get(&format!("/v1/keys/{key}")).await;
        if r.status() == 404 {
            return None;
        }
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        Some(v["value"].as_str().unwrap().to_string())
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
    pub child: Child,
    /// The port it serves HTTP on (API for the server, health/metrics for the worker).
    pub port: u16,
}

impl KvqProcess {
    pub fn server(env: &[(&str, String)]) -> Self {
        Self::spawn(env!("CARGO_BIN_EXE_kvq-server"), "KVQ__SERVER__BIND", env)
    }

    pub fn worker(consumer: &str, env: &[(&str, String)]) -> Self {
        let mut env = env.to_vec();
        env.push(("KVQ__WORKER__CONSUMER_NAME", consumer.to_string()));
        Self::spawn(env!("CARGO_BIN_EXE_kvq-worker"), "KVQ__WORKER__BIND", &env)
    }

    fn spawn(bin: &str, bind_var: &str, env: &[(&str, String)]) -> Self {
        let port = free_port();
        let mut cmd = Command::new(bin);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("KVQ__SERVER__BIND", "127.0.0.1:0")
            .env("KVQ__WORKER__BIND", "127.0.0.1:0")
            .env(bind_var, format!("127.0.0.1:{port}"))
            .env("KVQ__LOG__FORMAT", "json")
            .stdout(Stdio::null())
            .stderr(if std::env::var_os("TEST_LOG").is_some() { Stdio::inherit() } else { Stdio::null() });
        for (k, v) in env {
            cmd.env(k, v);
        }
        Self { child: cmd.spawn().expect("spawn binary"), port }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill").args([&format!("-{sig}"), &self.child.id().to_string()]).status();
    }

    /// SIGTERM, then the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        self.signal("TERM");
        self.child.wait().unwrap().code()
    }

    /// SIGKILL: a crash.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for KvqProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
        (self.server.child.wait().unwrap().code(), self.worker.child.wait().unwrap().code())
    }
}

/// GETs `url` until it answers `status` (used while processes start).
pub async fn wait_status(client: &reqwest::Client, url: &str, status: u16, timeout: Duration) {
    eventually(timeout, &format!("{url} to answer {status}"), || async {
        let r = client.get(url).send().await.ok()?;
        (r.status().as_u16() == status).then_some(())
    })
    .await
}
