//! Hostile input: nothing a client sends may stop the server or make it buffer without bound.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::*;
use poem::listener::{Acceptor, Listener, TcpListener};
use poem::{handler, Route, Server};
use serde_json::Value;

/// The list cursor that once panicked the cursor decoder (a byte slice through a multi-byte
/// character); with `panic = "abort"` that took the whole process down.
const CRASHING_CURSOR: &str = "/v1/keys?cursor=%F1%86%B1%B6N%C2%BFb";

#[handler]
fn explode() -> &'static str {
    panic!("a bug in a handler")
}

#[handler]
fn fine() -> &'static str {
    "fine"
}

#[tokio::test]
async fn a_panic_in_a_handler_answers_500_with_a_problem_and_the_server_keeps_serving() {
    // A current-thread runtime: every task of this test logs into this capture.
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt().json().with_writer(move || writer.clone()).finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let acceptor = TcpListener::bind("127.0.0.1:0").into_acceptor().await.unwrap();
    let port = acceptor.local_addr()[0].as_socket_addr().unwrap().port();
    let metrics = Arc::new(kvq::metrics::Metrics::new());
    let app = kvq::server::with_server_middleware(Route::new().at("/boom", explode).at("/fine", fine), metrics);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(Server::new_with_acceptor(acceptor).run_with_graceful_shutdown(
        app,
        async move {
            let _ = rx.await;
        },
        Some(Duration::from_secs(5)),
    ));
    let http = HttpClient::new(&format!("http://127.0.0.1:{port}"), Duration::from_secs(10));
    for _ in 0..3 {
        let r = http.client.get(http.url("/boom")).send().await.expect("a panic must still be answered");
        let b = assert_problem(r, 500, "internal error").await;
        assert_eq!(b["title"], "Internal Server Error");
        let r = http.get("/fine").await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), "fine");
    }
    let _ = tx.send(());
    server.await.unwrap().unwrap();
    let logs = logs.text();
    let line = logs
        .lines()
        .find(|l| l.contains("panicked"))
        .unwrap_or_else(|| panic!("the panic is logged; logs were:\n{logs}"));
    let entry: Value = serde_json::from_str(line).unwrap();
    assert_eq!(entry["level"], "ERROR", "{line}");
    assert_eq!(entry["fields"]["method"], "GET", "{line}");
    assert_eq!(entry["fields"]["path"], "/boom", "{line}");
    assert_eq!(entry["fields"]["panic"], "a bug in a handler", "{line}");
}

#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_cursor_that_crashed_the_decoder_is_a_400_naming_the_cursor() {
    let redis = TestRedis::start();
    let app = spawn_app(&redis, 0).await;
    assert_problem(app.get(CRASHING_CURSOR).await, 400, "cursor").await;
    for cursor in ["%C3%A9a", "a%C3%A9", "%E2%82%AC%E2%82%AC", "%F0%9F%98%80%F0%9F%98%80", "+f", "%00%00"] {
        assert_problem(app.get(&format!("/v1/keys?cursor={cursor}")).await, 400, "cursor").await;
    }
    assert_eq!(app.get("/v1/keys").await.status(), 200);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_server_survives_the_cursor_that_crashed_it() {
    let redis = TestRedis::start();
    let mut server = KvqProcess::server(&[("KVQ__REDIS__URL", redis.url())]);
    let http = server.http(Duration::from_secs(10));
    http.wait_status("/readyz", 200, Duration::from_secs(10)).await;
    for _ in 0..2 {
        let r = http.client.get(http.url(CRASHING_CURSOR)).send().await.expect("the server answers");
        assert_problem(r, 400, "cursor").await;
    }
    assert!(server.process.try_wait().is_none(), "the server process exited");
    assert_eq!(http.get("/healthz").await.status(), 200);
    assert_eq!(server.terminate(), Some(0));
}

fn chunks_of(body: Vec<u8>, size: usize) -> reqwest::Body {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = body.chunks(size).map(|c| Ok(c.to_vec())).collect();
    reqwest::Body::wrap_stream(futures_util::stream::iter(chunks))
}

/// A PUT body of exactly `len` bytes holding a value of `max_value_bytes` characters, each
/// escaped to six bytes, padded with JSON whitespace.
fn body_of_len(len: usize, max_value_bytes: usize) -> Vec<u8> {
    let mut body = format!("{{\"value\":\"{}\"}}", "\\u0001".repeat(max_value_bytes)).into_bytes();
    assert!(body.len() <= len);
    body.resize(len, b' ');
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_chunked_body_is_cut_off_with_413_as_soon_as_it_passes_the_limit() {
    let redis = TestRedis::start();
    let app = spawn_app_with(&redis, 0, &[("KVQ__LIMITS__MAX_VALUE_BYTES", "1000")]).await;
    let limit = kvq::server::body_limit(1000);
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = sent.clone();
    let endless = futures_util::stream::repeat_with(move || {
        counter.fetch_add(16 * 1024, std::sync::atomic::Ordering::Relaxed);
        Ok::<_, std::io::Error>(vec![b' '; 16 * 1024])
    });
    let started = Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        app.client
            .put(app.url("/v1/keys/endless"))
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(endless))
            .send(),
    )
    .await
    .expect("the server must answer an endless body instead of reading it forever")
    .expect("an answer, not a broken connection");
    assert_problem(r, 413, "body").await;
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    let sent = sent.load(std::sync::atomic::Ordering::Relaxed);
    assert!(sent < 64 * limit, "the client got to send {sent} bytes for a limit of {limit}");

    // The limit itself is inclusive, chunked or not; one byte more is refused either way.
    for chunked in [true, false] {
        let exact = body_of_len(limit, 1000);
        let req = app.client.put(app.url("/v1/keys/exact")).header("content-type", "application/json");
        let r = if chunked { req.body(chunks_of(exact, 7000)) } else { req.body(exact) }.send().await.unwrap();
        assert_eq!(r.status(), 202, "a body of exactly the limit (chunked: {chunked})");
        let over = body_of_len(limit + 1, 1000);
        let req = app.client.put(app.url("/v1/keys/over")).header("content-type", "application/json");
        let r = if chunked { req.body(chunks_of(over, 7000)) } else { req.body(over) }.send().await.unwrap();
        assert_problem(r, 413, "body").await;
    }
    assert_eq!(app.get("/healthz").await.status(), 200);
    app.stop().await;
}
