//! Redis outages: prompt 503s with Retry-After, readiness follows Redis, recovery without a
//! restart, binaries that start before Redis, and graceful shutdown of the real processes.

use std::time::{Duration, Instant};

use crate::support::*;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_answers_503_promptly_and_everything_recovers_without_restarts() {
    let mut redis = TestRedis::start();
    let app = spawn_app(&redis, 1).await;
    assert_eq!(app.put("before", "1", "?wait=5").await.status(), 200);

    redis.kill();
    for (what, req) in [
        ("put", app.client.put(app.url("/v1/keys/x")).json(&serde_json::json!({"value": "1"}))),
        ("get", app.client.get(app.url("/v1/keys/before"))),
        ("list", app.client.get(app.url("/v1/keys"))),
        ("task", app.client.get(app.url("/v1/tasks/0123456789abcdef0000456789abcdef"))),
        ("delete", app.client.delete(app.url("/v1/keys/before"))),
    ] {
        let started = Instant::now();
        let r = req.send().await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(5), "{what} took {:?}", started.elapsed());
        assert_eq!(r.status(), 503, "{what}");
        assert_eq!(r.headers()["retry-after"], "1", "{what}");
        let b: Value = r.json().await.unwrap();
        assert_eq!(b["status"], 503, "{what}: {b}");
    }
    let started = Instant::now();
    assert_eq!(app.get("/readyz").await.status(), 503);
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(app.get("/healthz").await.status(), 200, "liveness must not depend on Redis");
    assert_eq!(app.get("/ui/keys/before").await.status(), 503);
    let home = app.get("/").await;
    assert_eq!(home.status(), 200);
    assert!(home.text().await.unwrap().contains("unavailable"));
    let worker_ready = reqwest::get(format!("http://127.0.0.1:{}/readyz", app.workers[0].port)).await.unwrap();
    assert_eq!(worker_ready.status(), 503);

    redis.restart();
    eventually(Duration::from_secs(10), "readiness after Redis returns", || async {
        (app.get("/readyz").await.status() == 200).then_some(())
    })
    .await;
    assert_eq!(app.value_of("before").await.as_deref(), Some("1"), "data survived (AOF)");
    let r = eventually(Duration::from_secs(15), "writes to apply again", || async {
        let r = app.put("after", "2", "?wait=2").await;
        (r.status() == 200).then_some(r)
    })
    .await;
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "applied");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binaries_start_while_redis_is_down_and_become_ready_when_it_comes() {
    let port = free_port();
    let mut bins = Binaries::spawn(&format!("redis://127.0.0.1:{port}"), &[]);
    let server = bins.server.http(Duration::from_secs(10));
    let worker = bins.worker.http(Duration::from_secs(10));
    server.wait_status("/healthz", 200, Duration::from_secs(10)).await;
    worker.wait_status("/healthz", 200, Duration::from_secs(10)).await;
    assert_eq!(server.get("/readyz").await.status(), 503);
    assert_eq!(worker.get("/readyz").await.status(), 503);

    let _redis = TestRedis::builder().port(port).start();
    server.wait_status("/readyz", 200, Duration::from_secs(10)).await;
    worker.wait_status("/readyz", 200, Duration::from_secs(10)).await;
    let r = eventually(Duration::from_secs(15), "a waited write", || async {
        let r = server.try_put_json("late", serde_json::json!({"value": "v"}), "?wait=3", &[]).await.ok()?;
        (r.status() == 200).then_some(r)
    })
    .await;
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "applied");
    assert_eq!(bins.terminate(), (Some(0), Some(0)), "both exit 0 on SIGTERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_and_the_worker_finishes_its_tasks() {
    let redis = TestRedis::start();
    let mut bins = Binaries::spawn(&redis.url(), &[]);
    let server = bins.server.http(Duration::from_secs(20));
    server.wait_status("/readyz", 200, Duration::from_secs(10)).await;
    bins.worker.http(Duration::from_secs(20)).wait_status("/readyz", 200, Duration::from_secs(10)).await;

    // Freeze the worker so a waiting request stays in flight while the server is told to stop.
    bins.worker.signal("STOP");
    let in_flight = {
        let server = server.clone();
        tokio::spawn(
            async move { server.try_put_json("drain", serde_json::json!({"value": "v"}), "?wait=2", &[]).await },
        )
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    bins.server.signal("TERM");
    let r = in_flight.await.unwrap().expect("the in-flight request completes during the drain");
    assert_eq!(r.status(), 202, "the wait ran out, the write stays queued");
    assert_eq!(bins.server.process.wait(), Some(0));

    // The worker resumes and applies the queued write.
    bins.worker.signal("CONT");
    let mut conn = redis.conn();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v: Option<String> = redis::cmd("HGET").arg("kvq:k:drain").arg("v").query(&mut conn).unwrap();
        if v.as_deref() == Some("v") {
            break;
        }
        assert!(Instant::now() < deadline, "the worker did not apply the queued write");
        std::thread::sleep(Duration::from_millis(50));
    }

    // SIGTERM reaches the worker while it holds tasks: frozen in its blocking read, it is handed
    // a write it has not started, and is told to stop before it runs again.
    bins.worker.freeze_in_blocking_read(&redis).await;
    let store = kvq::store::Store::from_settings(&test_settings(&redis.url(), &[]));
    for i in 0..50 {
        store.enqueue(&crate::queue::write(&format!("held{i}"), "h")).await.unwrap();
    }
    let held = redis.pending_on("worker-0");
    assert!(!held.is_empty(), "the worker holds tasks at SIGTERM");
    bins.worker.signal("TERM");
    bins.worker.signal("CONT");
    assert_eq!(bins.worker.process.wait(), Some(0));
    assert!(redis.pending_on("worker-0").is_empty(), "everything it held was finished and acknowledged");
    for id in &held {
        let t = store.get_task(&kvq::store::task_id_of(id, 0).unwrap()).await.unwrap().unwrap();
        assert_eq!(t.status, kvq::domain::TaskStatus::Applied, "{t:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_server_answers_waiting_writes_at_once_with_202_and_their_task() {
    let redis = TestRedis::start();
    // No worker: the write stays queued, so only the shutdown can end the wait early.
    let mut server = KvqProcess::server(&[("KVQ__REDIS__URL", redis.url())]);
    let http = server.http(Duration::from_secs(40));
    http.wait_status("/readyz", 200, Duration::from_secs(10)).await;

    let in_flight = {
        let http = http.clone();
        tokio::spawn(
            async move { http.try_put_json("parked", serde_json::json!({"value": "v"}), "?wait=30", &[]).await },
        )
    };
    eventually(Duration::from_secs(10), "the write to be enqueued", || {
        let len = redis.xlen("kvq:tasks");
        async move { (len == 1).then_some(()) }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let signalled = Instant::now();
    server.signal("TERM");
    let r = in_flight.await.unwrap().expect("the waiting request gets an answer, not a closed connection");
    let answered = signalled.elapsed();
    assert!(answered < Duration::from_secs(5), "answered {answered:?} after SIGTERM (drain timeout is 20 s)");
    assert_eq!(r.status(), 202);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["status"], "queued");
    let id = b["task_id"].as_str().unwrap();
    assert_eq!(location, format!("/v1/tasks/{id}"));
    assert_eq!(server.process.wait(), Some(0));
    assert!(signalled.elapsed() < Duration::from_secs(10), "exit took {:?}", signalled.elapsed());
}

/// A master that cannot take writes while the worker applies (turned replica, or short of the
/// replicas `min-replicas-to-write` asks for) is an outage: no attempt is counted, nothing is
/// dead-lettered, and once it takes writes again every task applies with one attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_refusing_writes_during_apply_is_an_outage_not_an_attempt() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let redis = TestRedis::start();
    let app = spawn_app_with(&redis, 0, &[("KVQ__WORKER__MAX_ATTEMPTS", "2")]).await;
    let args = |a: &[&str]| -> Vec<String> { a.iter().map(|s| s.to_string()).collect() };
    let dead_port = free_port().to_string();
    // (what the master answers, the command that makes it refuse writes, the one that ends it)
    let phases = [
        ("READONLY", args(&["REPLICAOF", "127.0.0.1", &dead_port]), args(&["REPLICAOF", "NO", "ONE"])),
        (
            "NOREPLICAS",
            args(&["CONFIG", "SET", "min-replicas-to-write", "1"]),
            args(&["CONFIG", "SET", "min-replicas-to-write", "0"]),
        ),
    ];
    for (what, refuse, accept) in phases {
        let mut ids = Vec::new();
        for i in 0..5 {
            ids.push(app.store.enqueue(&crate::queue::write(&format!("{what}{i}"), "v")).await.unwrap().task_id);
        }
        // Just before its first apply, the master stops taking writes.
        let refused = Arc::new(AtomicBool::new(false));
        let hook = {
            let (refused, url) = (refused.clone(), redis.url());
            Arc::new(move |_: &kvq::store::StreamTask| {
                if !refused.swap(true, Ordering::SeqCst) {
                    let mut c = redis::Client::open(url.as_str()).unwrap().get_connection().unwrap();
                    let mut cmd = redis::cmd(&refuse[0]);
                    for a in &refuse[1..] {
                        cmd.arg(a);
                    }
                    let _: () = cmd.query(&mut c).unwrap();
                }
            })
        };
        let (worker, metrics) = worker_with_metrics(&app.settings, &format!("w-{what}"));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(worker.with_apply_hook(hook).run(async move {
            let _ = stop_rx.await;
        }));
        eventually(Duration::from_secs(10), "the worker's first apply", || async {
            refused.load(Ordering::SeqCst).then_some(())
        })
        .await;
        // Several retries' worth of refused writes.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(metrics.task_retries.get(), 0, "{what}: refused writes counted as failed attempts");
        let stats = app.store.queue_stats().await.unwrap();
        assert_eq!(stats.dead_letters, 0, "{what}");
        for id in &ids {
            let t = app.store.get_task(id).await.unwrap().unwrap();
            assert_eq!((t.status, t.attempts), (kvq::domain::TaskStatus::Queued, 0), "{what}: {t:?}");
        }

        let mut cmd = redis::cmd(&accept[0]);
        for a in &accept[1..] {
            cmd.arg(a);
        }
        let _: () = cmd.query(&mut redis.conn()).unwrap();
        app.drain(Duration::from_secs(15)).await;
        for id in &ids {
            let t = app.store.get_task(id).await.unwrap().unwrap();
            assert_eq!((t.status, t.attempts), (kvq::domain::TaskStatus::Applied, 1), "{what}: {t:?}");
        }
        assert_eq!(metrics.task_retries.get(), 0, "{what}");
        assert_eq!(app.store.queue_stats().await.unwrap().dead_letters, 0, "{what}");
        let _ = stop_tx.send(());
        running.await.unwrap();
    }
    app.stop().await;
}
