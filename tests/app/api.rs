//! The HTTP API (README "The API") against a real Redis: every route, status code and error body.

use std::time::Duration;

use crate::support::*;
use serde_json::{json, Value};

async fn body(r: reqwest::Response) -> Value {
    r.json().await.expect("JSON body")
}

#[tokio::test]
async fn put_is_accepted_with_a_task_location_and_applied_by_a_worker() {
    let redis = TestRedis::start();
    let app = spawn_app(&redis, 1).await;
    let r = app.put("greeting", "hello", "").await;
    assert_eq!(r.status(), 202);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let b = body(r).await;
    assert_eq!(b["status"], "queued");
    let id = b["task_id"].as_str().unwrap();
    assert_eq!(location, format!("/v1/tasks/{id}"));
    let task = eventually(Duration::from_secs(10), "task applied", || async {
        let t = body(app.get(&location).await).await;
        (t["status"] == "applied").then_some(t)
    })
    .await;
    assert_eq!(task["op"], "set");
    assert_eq!(task["key"], "greeting");
    assert_eq!(task["attempts"], 1);
    assert!(task["version"].as_u64().unwrap() >= 1);
    assert!(task["enqueued_at"].as_str().unwrap().ends_with('Z'));
    assert!(task["finished_at"].as_str().is_some());
    assert_eq!(app.value_of("greeting").await.as_deref(), Some("hello"));
    app.stop().await;
}

#[tokio::test]
async fn wait_answers_200_with_the_final_task_and_get_returns_value_and_etag() {
    let redis = TestRedis::start();
    let app = spawn_app(&redis, 1).await;
    let r = app.put("a", "1", "?wait=5").await;
    assert_eq!(r.status(), 200);
    assert!(r.headers()["location"].to_str().unwrap().starts_with("/v1/tasks/"));
    let t = body(r).await;
    assert_eq!(t["status"], "applied");
    let version = t["version"].as_u64().unwrap();

    let r = app.get("/v1/keys/a").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["etag"], format!("\"{version}\"").as_str());
    let v = body(r).await;
    // No TTL: `expires_at` is left out, as the spec's non-nullable string field says.
    assert_eq!(v, json!({"key": "a", "value": "1", "version": version}));

    // Conditional GET
    let r =
        app.client.get(app.url("/v1/keys/a")).header("If-None-Match", format!("\"{version}\"")).send().await.unwrap();
    assert_eq!(r.status(), 304);
    let r = app.client.get(app.url("/v1/keys/a")).header("If-None-Match", "\"999999\"").send().await.unwrap();
    assert_eq!(r.status(), 200);

    // A second write gives a strictly greater version.
    let t2 = body(app.put("a", "2", "?wait=5").await).await;
    assert!(t2["version"].as_u64().unwrap() > version);
    app.stop().await;
}

#[tokio::test]
async fn wait_times_out_with_202_when_no_worker_runs() {
    let redis = TestRedis::start();
    let app = spawn_app(&redis, 0).await;
    let started = std::time::Instant::now();
    let r = app.put("slow", "x", "?wait=1").await;
    assert_eq!(r.status(), 202);
    assert!(started.elapsed() >= Duration::from_millis(900), "{:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    assert_eq!(body(r).await["status"], "queued");
    app.stop().await;
}

#[tokio::test]
async fn delete_leaves_404_and_listing_skips_it() {
    let redis = TestRedis::start();
    let app = spawn_app(&redis, 1).await;
    assert_eq!(app.put("gone", "x", "?wait=5").await.status(), 200);
    let r = app.delete("gone", "?wait=5").await;
    assert_eq!(r.status(), 200);
    let t = body(r).await;
    assert_eq!(t["op"], "delete");
    assert_eq!(t["status"], "applied");
    assert_problem(app.get("/v1/keys/gone").await, 404, "gone").await;
    let page = body(app.get("/v1/keys").await).await;
    assert_eq!(page["items"], json!([]));
    // A delete queued without wait answers 202.
    assert_eq!(app.delete("never-was", "").await.status(), 202);
    app.stop().await;
}

#[tokio::test]
async fn listing_pages_through_a_prefix_in_key_order() {
    let redis = TestRedis::start();
    let app = spawn_app(&redis, 2).await;
    for i in 0..25 {
        assert_eq!(app.put(&format!("p%2F{i:02}"), "v", "").await.status(), 202);
    }
    app.put("other", "v", "").await;
    app.put("p", "v", "").await;
    app.drain(Duration::from_secs(10)).await;
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let q = match &cursor {
            Some(c) => format!("/v1/keys?prefix=p%2F&limit=10&cursor={c}"),
            None => "/v1/keys?prefix=p%2F&limit=10".into(),
        };
        let page = body(app.get(&q).await).await;
        for item in page["items"].as_array().unwrap() {
            assert!(item["version"].as_u64().unwrap() >= 1);
            seen.push(item["key"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let expected: Vec<String> = (0..25).map(|i| format!("p/{i:02}")).collect();
    assert_eq!(seen, expected);
    assert_problem(app.get("/v1/keys?cursor=zz").await, 400, "cursor").await;
    assert_problem(app.get("/v1/keys?limit=0").await, 400, "limit").await;
    assert_problem(app.get("/v1/keys?limit=1001").await, 400, "limit").await;
    app.stop().await;
}

#[tokio::test]
async fn ttl_keys_expire() {
    let redis = TestRedis::start();
    let app = spawn_app(&redis, 1).await;
    let r = app.put_json("brief", json!({"value": "x", "ttl_seconds": 1}), "?wait=5", &[]).await;
    assert_eq!(r.status(), 200);
    let v = body(app.get("/v1/keys/brief").await).await;
    assert!(v["expires_at"].as_str().unwrap().ends_with('Z'));
    eventually(Duration::from_secs(5), "the key to expire", || async {
        (app.get("/v1/keys/brief").await.status() == 404).then_some(())
    })
    .await;
    let page = body(app.get("/v1/keys?prefix=brief").await).await;
    assert_eq!(page["items"], json!([]));
    app.stop().await;
}

#[tokio::test]
async fn conditional_writes_apply_or_answer_412() {
    let redis = TestRedis::start();
    let app = spawn_app(&redis, 1).await;
    let t = body(app.put_json("c", json!({"value": "1"}), "?wait=5", &[("If-None-Match", "*")]).await).await;
    assert_eq!(t["status"], "applied");
    let v1 = t["version"].as_u64().unwrap();

    let b = assert_problem(
        app.put_json("c", json!({"value": "2"}), "?wait=5", &[("If-None-Match", "*")]).await,
        412,
        "If-None-Match",
    )
    .await;
    assert_eq!(b["task"]["status"], "rejected");

    let ok = app.put_json("c", json!({"value": "3"}), "?wait=5", &[("If-Match", &format!("\"{v1}\""))]).await;
    assert_eq!(ok.status(), 200);
    let b = assert_problem(
        app.put_json("c", json!({"value": "4"}), "?wait=5", &[("If-Match", &format!("\"{v1}\""))]).await,
        412,
        "If-Match",
    )
    .await;
    assert_eq!(b["task"]["status"], "rejected");
    assert_eq!(app.value_of("c").await.as_deref(), Some("3"));

    // A rejected task without wait is 202 now and `rejected` later.
    let r = app.put_json("c", json!({"value": "5"}), "", &[("If-Match", "\"1\"")]).await;
    assert_eq!(r.status(), 202);
    let id = body(r).await["task_id"].as_str().unwrap().to_string();
    let t = eventually(Duration::from_secs(5), "rejection", || async {
        let t = body(app.get(&format!("/v1/tasks/{id}")).await).await;
        (t["status"] != "queued").then_some(t)
    })
    .await;
    assert_eq!(t["status"], "rejected");
    assert!(t["error"].as_str().unwrap().contains("If-Match"));
    // If-Match on a missing key is rejected too.
    assert_problem(
        app.put_json("nope", json!({"value": "x"}), "?wait=5", &[("If-Match", "\"1\"")]).await,
        412,
        "If-Match",
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn idempotency_key_returns_the_same_task_and_enqueues_nothing() {
    let redis = TestRedis::start();
    let app = spawn_app(&redis, 0).await;
    let h = [("Idempotency-Key", "order-42")];
    let first = body(app.put_json("k", json!({"value": "1"}), "", &h).await).await;
    let before = redis.xlen("kvq:tasks");
    let r = app.put_json("k", json!({"value": "1"}), "", &h).await;
    assert_eq!(r.status(), 202);
    let second = body(r).await;
    assert_eq!(first["task_id"], second["task_id"]);
    assert_eq!(redis.xlen("kvq:tasks"), before, "the retry must not enqueue");
    let other = body(app.put_json("k", json!({"value": "1"}), "", &[("Idempotency-Key", "order-43")]).await).await;
    assert_ne!(first["task_id"], other["task_id"]);
    assert_problem(
        app.put_json("k", json!({"value": "1"}), "", &[("Idempotency-Key", "has space")]).await,
        400,
        "Idempotency-Key",
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn unknown_task_and_key_are_404_problems() {
    let redis = TestRedis::start();
    let app = spawn_app(&redis, 0).await;
    assert_problem(app.get("/v1/tasks/0123456789abcdef0123456789abcdef").await, 404, "task").await;
    assert_problem(app.get("/v1/tasks/not-a-task").await, 404, "task").await;
    assert_problem(app.get("/v1/keys/missing").await, 404, "missing").await;
    assert_problem(app.get("/v1/nothing-here").await, 404, "no such resource").await;
    let r = app.client.post(app.url("/v1/keys/a")).send().await.unwrap();
    assert_problem(r, 405, "method").await;
    app.stop().await;
}

#[tokio::test]
async fn bad_input_gets_its_status_and_a_problem_naming_the_field_and_writes_nothing() {
    let redis = TestRedis::start();
    let app = spawn_app_with(&redis, 1, &[("KVQ__LIMITS__MAX_VALUE_BYTES", "1000")]).await;
    let long_key = "k".repeat(513);
    let big = "v".repeat(1001);
    let c = &app.client;
    let json_ct = ("content-type", "application/json");
    let cases: Vec<(&str, reqwest::RequestBuilder, u16, &str)> = vec![
        ("empty key", c.put(app.url("/v1/keys/")).json(&json!({"value": "x"})), 400, "key"),
        ("513-byte key", c.put(app.url(&format!("/v1/keys/{long_key}"))).json(&json!({"value": "x"})), 400, "key"),
        ("control character", c.put(app.url("/v1/keys/a%0Ab")).json(&json!({"value": "x"})), 400, "control"),
        ("value over the limit", c.put(app.url("/v1/keys/big")).json(&json!({"value": big})), 413, "value"),
        ("invalid JSON", c.put(app.url("/v1/keys/a")).header(json_ct.0, json_ct.1).body("{\"value\":"), 400, "JSON"),
        ("not an object", c.put(app.url("/v1/keys/a")).header(json_ct.0, json_ct.1).body("[1]"), 400, "object"),
        ("missing value", c.put(app.url("/v1/keys/a")).json(&json!({})), 400, "value"),
        ("value not a string", c.put(app.url("/v1/keys/a")).json(&json!({"value": 5})), 400, "value"),
        ("unknown field", c.put(app.url("/v1/keys/a")).json(&json!({"value": "x", "colour": 1})), 400, "colour"),
        (
            "wrong content type",
            c.put(app.url("/v1/keys/a")).header("content-type", "text/plain").body("x"),
            415,
            "Content-Type",
        ),
        ("no content type", c.put(app.url("/v1/keys/a")).body("{\"value\":\"x\"}"), 415, "Content-Type"),
        ("wait=31", c.put(app.url("/v1/keys/a?wait=31")).json(&json!({"value": "x"})), 400, "wait"),
        ("wait=-1", c.put(app.url("/v1/keys/a?wait=-1")).json(&json!({"value": "x"})), 400, "wait"),
        (
            "negative ttl",
            c.put(app.url("/v1/keys/a")).json(&json!({"value": "x", "ttl_seconds": -1})),
            400,
            "ttl_seconds",
        ),
        ("zero ttl", c.put(app.url("/v1/keys/a")).json(&json!({"value": "x", "ttl_seconds": 0})), 400, "ttl_seconds"),
        (
            "bad If-Match",
            c.put(app.url("/v1/keys/a")).header("If-Match", "abc").json(&json!({"value": "x"})),
            400,
            "If-Match",
        ),
        (
            "bad If-None-Match",
            c.put(app.url("/v1/keys/a")).header("If-None-Match", "\"3\"").json(&json!({"value": "x"})),
            400,
            "If-None-Match",
        ),
        (
            "two conditions",
            c.put(app.url("/v1/keys/a"))
                .header("If-Match", "\"1\"")
                .header("If-None-Match", "*")
                .json(&json!({"value": "x"})),
            400,
            "one condition",
        ),
        ("delete empty key", c.delete(app.url("/v1/keys/")), 400, "key"),
        ("delete long key", c.delete(app.url(&format!("/v1/keys/{long_key}"))), 400, "key"),
        ("delete wait=31", c.delete(app.url("/v1/keys/a?wait=31")), 400, "wait"),
        ("get long key", c.get(app.url(&format!("/v1/keys/{long_key}"))), 400, "key"),
    ];
    for (name, req, status, needle) in cases {
        let r = req.send().await.unwrap_or_else(|e| panic!("{name}: {e}"));
        let got = r.status().as_u16();
        assert_eq!(got, status, "{name}");
        let b: Value = r.json().await.unwrap_or_else(|e| panic!("{name}: problem body is not JSON: {e}"));
        assert_eq!(b["status"], status, "{name}: {b}");
        assert!(b["title"].is_string() && b["type"].is_string(), "{name}: {b}");
        let detail = b["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(needle), "{name}: detail '{detail}' should mention '{needle}'");
    }
    assert_eq!(redis.xlen("kvq:tasks"), 0, "no bad request may enqueue anything");
    let keys: Vec<String> = redis::cmd("KEYS").arg("kvq:k:*").query(&mut redis.conn()).unwrap();
    assert!(keys.is_empty(), "nothing written: {keys:?}");
    // The limit is inclusive: exactly max_value_bytes is accepted.
    assert_eq!(app.put("edge", &"v".repeat(1000), "?wait=5").await.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn keys_may_hold_slashes_spaces_and_unicode() {
    let redis = TestRedis::start();
    let app = spawn_app(&redis, 1).await;
    for (raw, encoded) in [("a/b", "a%2Fb"), ("with space", "with%20space"), ("ünï", "%C3%BCn%C3%AF")] {
        assert_eq!(app.put(encoded, raw, "?wait=5").await.status(), 200, "{raw}");
        let v = body(app.get(&format!("/v1/keys/{encoded}")).await).await;
        assert_eq!(v["key"], raw);
        assert_eq!(v["value"], raw);
    }
    app.stop().await;
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let redis = TestRedis::start();
    let app = spawn_app(&redis, 1).await;
    assert_eq!(app.get("/healthz").await.status(), 200);
    assert_eq!(app.get("/readyz").await.status(), 200);
    app.put("m", "1", "?wait=5").await;
    let text = app.get("/metrics").await.text().await.unwrap();
    for needle in [
        "kvq_http_requests_total{method=\"PUT\",route=\"/v1/keys/{key}\",status=\"200\"} 1",
        "kvq_http_request_duration_seconds_bucket",
        "kvq_queue_depth 0",
        "kvq_queue_pending 0",
        "kvq_redis_up 1",
    ] {
        assert!(text.contains(needle), "metrics lack {needle}:\n{text}");
    }
    let worker =
        reqwest::get(format!("http://127.0.0.1:{}/metrics", app.workers[0].port)).await.unwrap().text().await.unwrap();
    assert!(worker.contains("kvq_tasks_finished_total{status=\"applied\"} 1"), "{worker}");
    for path in ["/healthz", "/readyz"] {
        let r = reqwest::get(format!("http://127.0.0.1:{}{path}", app.workers[0].port)).await.unwrap();
        assert_eq!(r.status(), 200, "worker {path}");
    }
    app.stop().await;
}

#[tokio::test]
async fn docs_and_openapi_are_served_without_a_cdn() {
    let redis = TestRedis::start();
    let app = spawn_app(&redis, 0).await;
    let docs = app.get("/docs").await;
    assert_eq!(docs.status(), 200);
    let html = docs.text().await.unwrap();
    assert!(html.contains("swagger"), "Swagger UI page");
    for cdn in ["unpkg.com", "cdn.jsdelivr", "cdnjs"] {
        assert!(!html.contains(cdn), "/docs must not load from {cdn}");
    }
    let spec: Value = app.get("/openapi.json").await.json().await.unwrap();
    assert!(spec["paths"]["/v1/keys/{key}"]["put"].is_object());
    app.stop().await;
}

#[tokio::test]
async fn absent_optional_fields_are_omitted_never_null_as_the_spec_declares() {
    let redis = TestRedis::start();
    let app = spawn_app(&redis, 1).await;
    assert_eq!(app.put("plain", "v", "?wait=5").await.status(), 200);
    let v = body(app.get("/v1/keys/plain").await).await;
    assert!(v.get("expires_at").is_none(), "no TTL, no expires_at: {v}");
    let page = body(app.get("/v1/keys?limit=10").await).await;
    assert!(page.get("next_cursor").is_none(), "last page, no next_cursor: {page}");
    assert_eq!(page["items"].as_array().unwrap().len(), 1);

    let spec: Value = app.get("/openapi.json").await.json().await.unwrap();
    for (schema, field) in [("KeyValue", "expires_at"), ("KeyPage", "next_cursor")] {
        let s = &spec["components"]["schemas"][schema];
        assert_eq!(s["properties"][field]["type"], "string", "{schema}.{field}");
        assert_ne!(s["properties"][field]["nullable"], true, "{schema}.{field}");
        let required: Vec<&str> =
            s["required"].as_array().map(|r| r.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
        assert!(!required.contains(&field), "{schema}.{field} must be optional");
    }
    app.stop().await;
}

#[tokio::test]
async fn repeated_query_parameters_are_a_400_naming_the_parameter() {
    let redis = TestRedis::start();
    let app = spawn_app(&redis, 0).await;
    let c = &app.client;
    for (name, req) in [
        ("wait", c.put(app.url("/v1/keys/a?wait=1&wait=40")).json(&json!({"value": "x"}))),
        ("wait", c.delete(app.url("/v1/keys/a?wait=0&wait=0"))),
        ("prefix", c.get(app.url("/v1/keys?prefix=a&prefix=b"))),
        ("limit", c.get(app.url("/v1/keys?limit=1&limit=2"))),
        ("cursor", c.get(app.url("/v1/keys?cursor=61&cursor=62"))),
        ("wait", c.put(app.url("/v1/keys/a?w%61it=1&wait=2")).json(&json!({"value": "x"}))),
    ] {
        let r = req.send().await.unwrap();
        let b = assert_problem(r, 400, name).await;
        assert!(b["detail"].as_str().unwrap().contains("more than once"), "{b}");
    }
    assert_eq!(redis.xlen("kvq:tasks"), 0, "nothing enqueued");
    // Other parameters still pass through, single ones are fine.
    assert_eq!(app.get("/v1/keys?limit=2&prefix=a&cursor=61").await.status(), 200);
    app.stop().await;
}

/// poem-openapi reads a header it cannot decode as absent: an `If-Match` with a non-ASCII byte
/// would make the write unconditional, and of two `If-Match` lines only one would count.
#[tokio::test]
async fn write_headers_must_be_one_ascii_value_or_the_write_is_a_400() {
    let redis = TestRedis::start();
    let app = spawn_app(&redis, 0).await;
    let non_ascii = reqwest::header::HeaderValue::from_bytes(b"\"1\"\xd7").unwrap();
    for name in ["If-Match", "If-None-Match", "Idempotency-Key"] {
        let r = app.client.put(app.url("/v1/keys/h")).header(name, non_ascii.clone()).json(&json!({"value": "x"}));
        assert_problem(r.send().await.unwrap(), 400, name).await;
        let r = app.client.delete(app.url("/v1/keys/h")).header(name, non_ascii.clone());
        assert_problem(r.send().await.unwrap(), 400, name).await;
    }
    let r = app
        .client
        .put(app.url("/v1/keys/h"))
        .header("If-Match", "\"1\"")
        .header("If-Match", "\"2\"")
        .json(&json!({"value": "x"}))
        .send()
        .await
        .unwrap();
    let b = assert_problem(r, 400, "If-Match").await;
    assert!(b["detail"].as_str().unwrap().contains("more than once"), "{b}");
    assert_eq!(redis.xlen("kvq:tasks"), 0, "nothing enqueued");
    app.stop().await;
}

#[tokio::test]
async fn duplicate_members_in_a_put_body_are_a_400_naming_the_member() {
    let redis = TestRedis::start();
    let app = spawn_app(&redis, 0).await;
    for (raw, field) in [
        (r#"{"value":"a","value":"b"}"#, "value"),
        (r#"{"value":"a","ttl_seconds":5,"ttl_seconds":9}"#, "ttl_seconds"),
        (r#"{"value":"a","\u0076alue":"b"}"#, "value"),
    ] {
        let r = app.put_raw("/v1/keys/dup", "application/json", raw).await;
        let b = assert_problem(r, 400, field).await;
        assert!(b["detail"].as_str().unwrap().contains("more than once"), "{b}");
    }
    assert_eq!(redis.xlen("kvq:tasks"), 0, "nothing enqueued");
    app.stop().await;
}

#[tokio::test]
async fn method_not_allowed_says_which_methods_are() {
    let redis = TestRedis::start();
    let app = spawn_app(&redis, 0).await;
    for (method, path, allowed) in [
        (reqwest::Method::POST, "/v1/keys/x", vec!["GET", "PUT", "DELETE"]),
        (reqwest::Method::PATCH, "/v1/keys/x", vec!["GET", "PUT", "DELETE"]),
        (reqwest::Method::POST, "/v1/keys", vec!["GET"]),
        (reqwest::Method::DELETE, "/v1/tasks/0123456789abcdef0123456789abcdef", vec!["GET"]),
        (reqwest::Method::POST, "/healthz", vec!["GET"]),
    ] {
        let r = app.client.request(method.clone(), app.url(path)).send().await.unwrap();
        let allow = r.headers().get("allow").map(|v| v.to_str().unwrap().to_string());
        assert_problem(r, 405, "method").await;
        let allow = allow.unwrap_or_else(|| panic!("{method} {path}: 405 without Allow"));
        let listed: Vec<&str> = allow.split(',').map(str::trim).collect();
        for m in &allowed {
            assert!(listed.contains(m), "{method} {path}: Allow '{allow}' lacks {m}");
        }
        assert!(!listed.contains(&method.as_str()), "{method} {path}: Allow '{allow}' lists the refused method");
    }
    app.stop().await;
}

/// Every constraint the server enforces on a parameter is declared in the spec, and input
/// outside the declared constraints gets the server's own 400 naming the parameter.
#[tokio::test]
async fn parameter_constraints_are_declared_in_the_spec_and_enforced_alike() {
    let redis = TestRedis::start();
    let app = spawn_app(&redis, 0).await;
    let spec: Value = app.get("/openapi.json").await.json().await.unwrap();
    let params = |path: &str, method: &str| -> Vec<Value> {
        spec["paths"][path][method]["parameters"].as_array().unwrap().clone()
    };
    let schema_of = |params: &[Value], name: &str| -> Value {
        params.iter().find(|p| p["name"] == name).unwrap_or_else(|| panic!("no parameter {name}"))["schema"].clone()
    };
    let wait = schema_of(&params("/v1/keys/{key}", "put"), "wait");
    assert_eq!((wait["minimum"].as_f64(), wait["maximum"].as_f64()), (Some(0.0), Some(30.0)));
    let cursor = schema_of(&params("/v1/keys", "get"), "cursor");
    assert_eq!(cursor["pattern"], kvq::server::params::CURSOR_PATTERN);
    assert_eq!(cursor["maxLength"], 1024);
    let put_body = &spec["components"]["schemas"]["PutBody"];
    assert_eq!(put_body["additionalProperties"], false, "unknown members are refused");
    assert!(put_body["properties"]["value"]["maxLength"].is_u64(), "the value limit is declared");
    for method in ["get", "put", "delete"] {
        let key = schema_of(&params("/v1/keys/{key}", method), "key");
        assert_eq!(key["minLength"], 1, "{method} key");
        assert_eq!(key["maxLength"], 512, "{method} key");
        let pattern = key["pattern"].as_str().unwrap_or_else(|| panic!("{method}: key pattern"));
        let re = regex::Regex::new(pattern).unwrap();
        assert!(re.is_match("users/42 ünïcode") && !re.is_match("a\nb") && !re.is_match("a\u{7f}"), "{pattern}");
    }
    for method in ["put", "delete"] {
        let ps = params("/v1/keys/{key}", method);
        let if_match = regex::Regex::new(schema_of(&ps, "If-Match")["pattern"].as_str().unwrap()).unwrap();
        for ok in ["\"42\"", "W/\"42\"", "42"] {
            assert!(if_match.is_match(ok), "If-Match pattern must accept {ok}");
        }
        for bad in ["", "abc", "\"42", "*"] {
            assert!(!if_match.is_match(bad), "If-Match pattern must refuse {bad:?}");
        }
        assert_eq!(schema_of(&ps, "If-None-Match")["enum"], json!(["*"]));
        let idem = schema_of(&ps, "Idempotency-Key");
        assert_eq!((idem["minLength"].as_u64(), idem["maxLength"].as_u64()), (Some(1), Some(255)));
        assert!(idem["pattern"].is_string());
    }

    let c = &app.client;
    let put = |path: &str| c.put(app.url(path)).json(&json!({"value": "x"}));
    for (name, req, needle) in [
        ("empty If-Match", put("/v1/keys/a").header("If-Match", ""), "If-Match"),
        ("If-Match *", put("/v1/keys/a").header("If-Match", "*"), "If-Match"),
        ("If-Match with 20 digits", put("/v1/keys/a").header("If-Match", "\"18446744073709551616\""), "If-Match"),
        ("empty If-None-Match", put("/v1/keys/a").header("If-None-Match", ""), "If-None-Match"),
        ("empty Idempotency-Key", put("/v1/keys/a").header("Idempotency-Key", ""), "Idempotency-Key"),
        ("long Idempotency-Key", put("/v1/keys/a").header("Idempotency-Key", "k".repeat(256)), "Idempotency-Key"),
        ("control character in the key", put("/v1/keys/a%7Fb"), "key: key must not contain control characters"),
        ("C1 control character in the key", put("/v1/keys/a%C2%85b"), "key:"),
        ("513-byte key", put(&format!("/v1/keys/{}", "é".repeat(256) + "k")), "key: key is 513 bytes"),
        ("get with a control character", c.get(app.url("/v1/keys/a%01")), "key:"),
        ("key that is not UTF-8", put("/v1/keys/a%FF"), "key: not UTF-8"),
        ("get a key that is not UTF-8", c.get(app.url("/v1/keys/%C3")), "key: not UTF-8"),
    ] {
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 400, "{name}");
        assert_problem(r, 400, needle).await;
    }
    assert_eq!(redis.xlen("kvq:tasks"), 0, "nothing enqueued");
    app.stop().await;
}

#[test]
fn openapi_spec_snapshot() {
    let settings = test_settings("redis://127.0.0.1:1", &[]);
    let spec: Value = serde_json::from_str(&kvq::server::openapi_spec(&settings)).unwrap();
    insta::assert_json_snapshot!("openapi", spec);
}

/// A repeat of a write (same Idempotency-Key) after its task was applied reports that task as
/// it is now: 202 with status `applied` without `?wait`, 200 with the task at once with `?wait`.
#[tokio::test]
async fn an_idempotent_repeat_after_the_apply_reports_the_applied_task() {
    let redis = TestRedis::start();
    let app = spawn_app(&redis, 1).await;
    let h = [("Idempotency-Key", "order-7")];
    let first = app.put_json("k", json!({"value": "1"}), "?wait=5", &h).await;
    assert_eq!(first.status(), 200);
    let first = body(first).await;
    assert_eq!(first["status"], "applied");
    let before = redis.xlen("kvq:tasks");

    let r = app.put_json("k", json!({"value": "1"}), "", &h).await;
    assert_eq!(r.status(), 202);
    assert_eq!(r.headers()["location"].to_str().unwrap(), format!("/v1/tasks/{}", first["id"].as_str().unwrap()));
    let again = body(r).await;
    assert_eq!((&again["task_id"], &again["status"]), (&first["id"], &json!("applied")), "{again}");

    let started = std::time::Instant::now();
    let r = app.put_json("k", json!({"value": "1"}), "?wait=5", &h).await;
    assert_eq!(r.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(3), "the finished task is answered at once");
    let again = body(r).await;
    assert_eq!(
        (&again["id"], &again["status"], &again["version"]),
        (&first["id"], &first["status"], &first["version"])
    );
    assert_eq!(redis.xlen("kvq:tasks"), before, "a repeat enqueues nothing");
    app.stop().await;
}

/// An expired key is gone for conditional requests too: a GET with the old version's
/// `If-None-Match` is 404 (not 304), and a write with `If-None-Match: *` applies.
#[tokio::test]
async fn if_none_match_treats_an_expired_key_as_absent() {
    let redis = TestRedis::start();
    let app = spawn_app(&redis, 1).await;
    let r = app.put_json("e", json!({"value": "old", "ttl_seconds": 1}), "?wait=5", &[]).await;
    assert_eq!(r.status(), 200);
    let version = body(r).await["version"].as_u64().unwrap();
    let etag = format!("\"{version}\"");
    let get = || app.client.get(app.url("/v1/keys/e")).header("If-None-Match", etag.as_str()).send();
    assert_eq!(get().await.unwrap().status(), 304, "before the expiry");
    tokio::time::sleep(Duration::from_millis(1500)).await; // past the one-second TTL
    assert_problem(get().await.unwrap(), 404, "does not exist").await;

    let r = app.put_json("e", json!({"value": "new"}), "?wait=5", &[("If-None-Match", "*")]).await;
    assert_eq!(r.status(), 200, "a write with If-None-Match: * on an expired key applies");
    assert!(body(r).await["version"].as_u64().unwrap() > version);
    assert_eq!(app.value_of("e").await.as_deref(), Some("new"));
    app.stop().await;
}
