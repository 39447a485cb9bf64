//! Authentication and key-prefix authorization against a real server and Redis: who gets 401
//! and 403, what each token may read and write, that nothing refused reaches Redis, and that a
//! replaced token file takes effect without a restart.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::*;

const ADMIN: Token = Token { name: "admin", token: "admin-token-0", scopes: &["read", "write"], prefixes: None };
const READER: Token = Token { name: "reader", token: "reader-token-1", scopes: &["read"], prefixes: None };
const WRITER: Token = Token { name: "writer", token: "writer-token-2", scopes: &["write"], prefixes: None };
const TEAM_A: Token =
    Token { name: "team-a", token: "team-a-token-3", scopes: &["read", "write"], prefixes: Some(&["team-a:"]) };
const ALL: [Token; 4] = [ADMIN, READER, WRITER, TEAM_A];

/// Every Redis key, sorted: what a refused request must leave as it was.
fn redis_keys(redis: &TestRedis) -> Vec<String> {
    let mut keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut redis.conn()).unwrap();
    keys.sort();
    keys
}

/// `kvq_auth_refusals_total` for `reason` (0 when not yet counted).
async fn refusals(app: &TestApp, reason: &str) -> u64 {
    let text = app.get("/metrics").await.text().await.unwrap();
    let line = format!("kvq_auth_refusals_total{{reason=\"{reason}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(line.as_str())).map_or(0, |n| n.trim().parse().unwrap())
}

async fn assert_401(r: reqwest::Response, what: &str) {
    let challenge = r.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_string());
    assert!(challenge.as_deref().is_some_and(|c| c.starts_with("Bearer ")), "{what}: WWW-Authenticate {challenge:?}");
    assert_problem(r, 401, "Authorization").await;
}

/// Every `/v1` request a client can make, as (what, request) on `client`.
fn every_v1_request(client: &HttpClient) -> Vec<(&'static str, reqwest::RequestBuilder)> {
    let c = &client.client;
    let body = json!({ "value": "v" });
    vec![
        ("GET key", c.get(client.url("/v1/keys/k"))),
        ("PUT key", c.put(client.url("/v1/keys/k")).json(&body)),
        ("PUT key ?wait", c.put(client.url("/v1/keys/k?wait=1")).json(&body)),
        ("PUT key Idempotency-Key", c.put(client.url("/v1/keys/k")).header("Idempotency-Key", "i1").json(&body)),
        ("DELETE key", c.delete(client.url("/v1/keys/k"))),
        ("list", c.get(client.url("/v1/keys"))),
        ("task", c.get(client.url("/v1/tasks/0123456789abcdef0123456789abcdef"))),
        ("empty key", c.put(client.url("/v1/keys/")).json(&body)),
        ("unknown path", c.get(client.url("/v1/nothing"))),
        ("invalid body", c.put(client.url("/v1/keys/k")).body("{")),
    ]
}

#[tokio::test]
async fn no_token_or_an_unknown_one_gets_401_on_every_v1_route_and_writes_nothing() {
    let redis = TestRedis::start();
    let tokens = TokenFile::new(&ALL);
    let app = spawn_app_with_tokens(&redis, 0, &tokens).await;
    let metrics = app.get("/metrics").await.text().await.unwrap();
    // after the scrape: it writes its own probe key (is the master writable?)
    let before = redis_keys(&redis);
    for reason in ["missing_token", "unknown_token", "scope", "prefix"] {
        let zero = format!("kvq_auth_refusals_total{{reason=\"{reason}\"}} 0");
        assert!(metrics.lines().any(|l| l == zero), "{zero} before any refusal");
    }

    for (what, req) in every_v1_request(&app) {
        assert_401(req.send().await.unwrap(), &format!("no token, {what}")).await;
    }
    let wrong = app.with_token("not-a-token");
    for (what, req) in every_v1_request(&wrong) {
        let r = req.send().await.unwrap();
        assert!(r.headers()["www-authenticate"].to_str().unwrap().contains("invalid_token"), "{what}");
        assert_401(r, &format!("wrong token, {what}")).await;
    }
    // The hash of a token is not a token; nor is a token sent as a cookie (pages only).
    let hash = app.with_token(&sha256_hex(ADMIN.token));
    assert_401(hash.get("/v1/keys/k").await, "the hash as token").await;
    let cookie = app.client.get(app.url("/v1/keys/k")).header("Cookie", format!("kvq_token={}", ADMIN.token));
    assert_401(cookie.send().await.unwrap(), "the token as a cookie").await;

    assert_eq!(redis_keys(&redis), before, "a refused request changed Redis");
    assert_eq!(refusals(&app, "missing_token").await, 11);
    assert_eq!(refusals(&app, "unknown_token").await, 11);

    // What stays open without a token.
    for path in ["/healthz", "/readyz", "/docs", "/openapi.json", "/metrics"] {
        assert_eq!(app.get(path).await.status(), 200, "{path} is open");
    }
    app.stop().await;
}

#[tokio::test]
async fn scopes_decide_who_reads_and_who_writes() {
    let redis = TestRedis::start();
    let tokens = TokenFile::new(&ALL);
    let app = spawn_app_with_tokens(&redis, 1, &tokens).await;
    let admin = app.with_token(ADMIN.token);
    let reader = app.with_token(READER.token);
    let writer = app.with_token(WRITER.token);

    let r = admin.put("k", "from admin", "?wait=5").await;
    assert_eq!(r.status(), 200);
    app.drain(Duration::from_secs(10)).await;
    let before = redis_keys(&redis);
    let stream_len = redis.xlen(&app.store.shards.all()[0].stream);

    // A read-only token: reads, never writes.
    assert_eq!(reader.value_of("k").await.as_deref(), Some("from admin"));
    assert_eq!(reader.get("/v1/keys").await.status(), 200);
    assert_problem(reader.put("k", "from reader", "?wait=1").await, 403, "scope").await;
    let r = reader.put_json("k", json!({"value": "x"}), "", &[("Idempotency-Key", "reader-1")]).await;
    assert_problem(r, 403, "scope").await;
    assert_problem(reader.delete("k", "").await, 403, "scope").await;
    // A write-only token: writes, never reads (nor follows tasks, which show the value).
    assert_problem(writer.get("/v1/keys/k").await, 403, "scope").await;
    assert_problem(writer.get("/v1/keys").await, 403, "scope").await;
    assert_problem(writer.get("/v1/tasks/0123456789abcdef0123456789abcdef").await, 403, "scope").await;

    assert_eq!(redis_keys(&redis), before, "a refused write changed Redis");
    assert_eq!(redis.xlen(&app.store.shards.all()[0].stream), stream_len, "a refused write was enqueued");
    assert_eq!(refusals(&app, "scope").await, 6);

    let r = writer.put("k", "from writer", "?wait=5").await;
    assert_eq!(r.status(), 200);
    assert_eq!(admin.value_of("k").await.as_deref(), Some("from writer"));
    app.stop().await;
}

#[tokio::test]
async fn a_prefix_limited_token_touches_only_its_keys() {
    let redis = TestRedis::start();
    let tokens = TokenFile::new(&ALL);
    let app = spawn_app_with_tokens(&redis, 1, &tokens).await;
    let admin = app.with_token(ADMIN.token);
    let team = app.with_token(TEAM_A.token);

    for key in ["team-a:one", "team-a:two", "team-b:secret"] {
        assert_eq!(admin.put(key, &format!("value of {key}"), "?wait=5").await.status(), 200);
    }
    // Inside: reads, writes, lists.
    assert_eq!(team.put("team-a:three", "mine", "?wait=5").await.status(), 200);
    assert_eq!(team.value_of("team-a:one").await.as_deref(), Some("value of team-a:one"));
    let page: Value = team.get("/v1/keys?prefix=team-a:").await.json().await.unwrap();
    let keys: Vec<&str> = page["items"].as_array().unwrap().iter().map(|i| i["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["team-a:one", "team-a:three", "team-a:two"]);
    assert_eq!(team.get("/v1/keys?prefix=team-a:t").await.status(), 200, "a narrower prefix lists");
    app.drain(Duration::from_secs(10)).await;
    let before = redis_keys(&redis);

    // Outside: 403 naming what is wrong, and nothing written.
    assert_problem(team.get("/v1/keys/team-b:secret").await, 403, "key").await;
    assert_problem(team.put("team-b:secret", "overwritten", "?wait=1").await, 403, "key").await;
    assert_problem(team.delete("team-b:secret", "").await, 403, "key").await;
    assert_problem(team.put("team-a", "not under team-a:", "").await, 403, "key").await;
    // Listing outside (or above) its prefixes is refused rather than silently filtered.
    assert_problem(team.get("/v1/keys").await, 403, "prefix").await;
    assert_problem(team.get("/v1/keys?prefix=team-").await, 403, "prefix").await;
    assert_problem(team.get("/v1/keys?prefix=team-b:").await, 403, "prefix").await;

    assert_eq!(redis_keys(&redis), before, "a refused write changed Redis");
    assert_eq!(admin.value_of("team-b:secret").await.as_deref(), Some("value of team-b:secret"));
    assert_eq!(refusals(&app, "prefix").await, 7);
    app.stop().await;
}

#[tokio::test]
async fn a_task_is_visible_only_to_tokens_that_could_read_its_key() {
    let redis = TestRedis::start();
    let tokens = TokenFile::new(&ALL);
    let app = spawn_app_with_tokens(&redis, 0, &tokens).await;
    let admin = app.with_token(ADMIN.token);
    let team = app.with_token(TEAM_A.token);

    let task_of = |r: reqwest::Response| async move {
        assert_eq!(r.status(), 202);
        r.headers()["location"].to_str().unwrap().to_string()
    };
    let outside = task_of(admin.put("team-b:secret", "hidden", "").await).await;
    let inside = task_of(admin.put("team-a:open", "shown", "").await).await;

    let r = team.get(&outside).await;
    let p = assert_problem(r, 404, "does not exist").await;
    assert!(!p.to_string().contains("team-b"), "the refusal names nothing of the task: {p}");
    assert_eq!(team.get(&inside).await.status(), 200);
    assert_eq!(app.with_token(READER.token).get(&outside).await.status(), 200);
    assert_eq!(admin.get(&outside).await.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn a_replaced_token_file_takes_effect_and_a_bad_one_keeps_the_last_good_tokens() {
    let redis = TestRedis::start();
    let old = Token { name: "old", token: "old-token", scopes: &["read", "write"], prefixes: None };
    let new = Token { name: "new", token: "new-token", scopes: &["read"], prefixes: None };
    let tokens = TokenFile::new(&[old]);
    let app = spawn_app_with_tokens(&redis, 0, &tokens).await;
    assert_eq!(app.with_token(old.token).get("/v1/keys").await.status(), 200);
    assert_eq!(app.with_token(new.token).get("/v1/keys").await.status(), 401);

    // Rotation: both valid during the change, then only the new one.
    tokens.replace(&[old, new]);
    app.with_token(new.token).wait_status("/v1/keys", 200, Duration::from_secs(15)).await;
    assert_eq!(app.with_token(old.token).get("/v1/keys").await.status(), 200);
    tokens.replace(&[new]);
    app.with_token(old.token).wait_status("/v1/keys", 401, Duration::from_secs(15)).await;
    // The new token's scopes came with it.
    assert_problem(app.with_token(new.token).put("k", "v", "").await, 403, "scope").await;

    // A bad file is refused as a whole; the last good tokens stay in force.
    let mut bad = token_file_yaml(&[old, new]);
    bad.push_str("  - name: broken\n    sha256: nothex\n    scopes: [read]\n");
    tokens.replace_text(&bad);
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(app.with_token(new.token).get("/v1/keys").await.status(), 200);
    assert_eq!(app.with_token(old.token).get("/v1/keys").await.status(), 401);
    // And a good file after it is taken again.
    tokens.replace(&[old]);
    app.with_token(old.token).wait_status("/v1/keys", 200, Duration::from_secs(15)).await;
    app.stop().await;
}

#[test]
fn a_bad_token_file_stops_the_server_with_one_line_naming_the_entry() {
    let good = sha256_hex("good");
    let file = TokenFile::with_text(&format!(
        "tokens:\n  - name: fine\n    sha256: {good}\n    scopes: [read]\n  - name: ci\n    sha256: {good}\n    scopes: [read, admin]\n"
    ));
    let path = file.path_str();
    let (code, stderr) = server_start_failure(&[("KVQ__AUTH__MODE", "tokens"), ("KVQ__AUTH__TOKENS_FILE", &path)]);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("tokens[1] (name 'ci'): scopes: 'admin'"), "{stderr}");
    assert!(!stderr.contains(&good), "the hash is never printed: {stderr}");

    // Tokens mode without a file does not start either.
    let (code, stderr) = server_start_failure(&[("KVQ__AUTH__MODE", "tokens")]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("KVQ__AUTH__TOKENS_FILE"), "{stderr}");
    let (code, stderr) =
        server_start_failure(&[("KVQ__AUTH__MODE", "tokens"), ("KVQ__AUTH__TOKENS_FILE", "/nonexistent/tokens.yaml")]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("/nonexistent/tokens.yaml"), "{stderr}");
}

#[tokio::test]
async fn the_spec_declares_the_bearer_scheme_on_every_v1_operation() {
    let redis = TestRedis::start();
    let tokens = TokenFile::new(&[ADMIN]);
    let app = spawn_app_with_tokens(&redis, 0, &tokens).await;
    let spec: Value = app.get("/openapi.json").await.json().await.unwrap();
    let scheme = &spec["components"]["securitySchemes"]["bearerAuth"];
    assert_eq!((scheme["type"].as_str(), scheme["scheme"].as_str()), (Some("http"), Some("bearer")), "{scheme}");
    let mut operations = 0;
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            assert_eq!(op["security"], json!([{ "bearerAuth": [] }]), "{method} {path} needs the token");
            for status in ["401", "403"] {
                assert!(op["responses"][status].is_object(), "{method} {path} declares {status}");
            }
            operations += 1;
        }
    }
    assert_eq!(operations, 5);
    // Swagger UI embeds the same document, so its Authorize button sends the header.
    let docs = app.get("/docs").await.text().await.unwrap();
    assert!(docs.contains("\"securitySchemes\"") && docs.contains("\"bearerAuth\""), "/docs has Authorize");
    app.stop().await;
}

/// A client that neither follows redirects nor sends a token.
fn browser_like() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// Logs in with `token` through the form: the `Set-Cookie` line.
async fn log_in(app: &TestApp, token: &str, next: &str) -> reqwest::Response {
    browser_like().post(app.url("/ui/login")).form(&[("token", token), ("next", next)]).send().await.unwrap()
}

/// `name=value` of a `Set-Cookie` line.
fn cookie_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_string()
}

async fn page(app: &TestApp, path: &str, cookie: Option<&str>) -> (u16, String) {
    let mut req = browser_like().get(app.url(path));
    if let Some(c) = cookie {
        req = req.header("Cookie", c);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test]
async fn pages_show_data_only_after_a_login_and_only_what_the_token_may_read() {
    let redis = TestRedis::start();
    let tokens = TokenFile::new(&ALL);
    let app = spawn_app_with_tokens(&redis, 1, &tokens).await;
    let admin = app.with_token(ADMIN.token);
    let r = admin.put("team-a:open", "VALUE-A", "?wait=5").await;
    let task_a = r.headers()["location"].to_str().unwrap().replace("/v1/", "/ui/");
    let r = admin.put("team-b:secret", "VALUE-B", "?wait=5").await;
    let task_b = r.headers()["location"].to_str().unwrap().replace("/v1/", "/ui/");

    // Without a login: the form, never a value.
    for path in ["/ui/keys/team-a:open", "/ui/keys?key=team-a:open", task_a.as_str()] {
        let (status, html) = page(&app, path, None).await;
        assert_eq!(status, 401, "{path}");
        assert!(html.contains("id=\"login\"") && !html.contains("VALUE-A"), "{path}: {html}");
    }
    let (status, html) = page(&app, "/ui/keys/team-a:open", Some(&format!("kvq_token={}", "wrong"))).await;
    assert_eq!(status, 401);
    assert!(!html.contains("VALUE-A"));

    // A wrong token is refused; no cookie.
    let r = log_in(&app, "wrong", "/ui/keys/team-a:open").await;
    assert_eq!(r.status(), 401);
    assert!(r.headers().get("set-cookie").is_none());
    assert!(r.text().await.unwrap().contains("id=\"login-error\""));

    // A valid token: the cookie, and back to the page asked for.
    let r = log_in(&app, TEAM_A.token, "/ui/keys/team-a:open").await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/ui/keys/team-a:open");
    let set_cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    for attribute in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/ui"] {
        assert!(set_cookie.split("; ").any(|a| a == attribute), "{attribute} in {set_cookie}");
    }
    let cookie = cookie_pair(&set_cookie);
    let (status, html) = page(&app, "/ui/keys/team-a:open", Some(&cookie)).await;
    assert_eq!(status, 200);
    assert!(html.contains("VALUE-A") && html.contains("id=\"logout\""), "{html}");
    assert_eq!(page(&app, &task_a, Some(&cookie)).await.0, 200);
    // Outside the token's prefixes: refused, nothing shown.
    let (status, html) = page(&app, "/ui/keys/team-b:secret", Some(&cookie)).await;
    assert_eq!(status, 403);
    assert!(!html.contains("VALUE-B"));
    let (status, html) = page(&app, &task_b, Some(&cookie)).await;
    assert_eq!(status, 404);
    assert!(!html.contains("team-b"));

    // Logging in from another site is refused; `next` never leaves the site.
    let r = browser_like()
        .post(app.url("/ui/login"))
        .header("Origin", "https://evil.example")
        .form(&[("token", TEAM_A.token), ("next", "/")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.headers().get("set-cookie").is_none());
    let r = log_in(&app, TEAM_A.token, "//evil.example/").await;
    assert_eq!(r.headers()["location"], "/");

    // Logout clears the cookie.
    let r = browser_like().post(app.url("/ui/logout")).header("Cookie", &cookie).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let cleared = r.headers()["set-cookie"].to_str().unwrap();
    assert!(cleared.starts_with("kvq_token=;") && cleared.contains("Max-Age=0"), "{cleared}");
    app.stop().await;
}
