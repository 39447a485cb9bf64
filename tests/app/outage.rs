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
        ("task", app.client.get(app.url("/v1/tasks/0123456789abcdef0123456789abcdef"))),
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
    let store =
        kvq::store::Store::new(kvq::connection::Redis::new(test_settings(&redis.url(), &[]).redis.clone()), 3600);
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
        let entry: Vec<(String, std::collections::HashMap<String, String>)> =
            redis::cmd("XRANGE").arg("kvq:tasks").arg(id).arg(id).query(&mut conn).unwrap();
        let task_id = &entry[0].1["t"];
        let t = store.get_task(task_id).await.unwrap().unwrap();
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
