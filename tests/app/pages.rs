//! HTML pages rendered from templates/: snapshots with volatile parts redacted.

use crate::support::*;

/// Replaces what changes from run to run (ids, versions, times, crate version).
fn redact(html: &str, pairs: &[(&str, &str)]) -> String {
    let mut out = html.replace(env!("CARGO_PKG_VERSION"), "[version]");
    for (from, to) in pairs {
        out = out.replace(from, to);
    }
    // RFC 3339 timestamps
    let mut result = Vec::with_capacity(out.len());
    let bytes = out.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let is_ts = bytes.len() - i >= 24
            && bytes[i..i + 4].iter().all(u8::is_ascii_digit)
            && bytes[i + 4] == b'-'
            && bytes[i + 10] == b'T'
            && bytes[i + 23] == b'Z';
        if is_ts {
            result.extend_from_slice(b"[time]");
            i += 24;
        } else {
            result.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(result).expect("redaction keeps UTF-8")
}

#[tokio::test]
async fn pages_render_from_the_templates() {
    let redis = TestRedis::start();
    let app = spawn_app(&redis, 1).await;
    let t: serde_json::Value = app.put("greeting", "<b>hello</b> & welcome", "?wait=5").await.json().await.unwrap();
    let id = t["id"].as_str().unwrap().to_string();
    let version = t["version"].as_u64().unwrap().to_string();
    let ver_cell = format!("<td id=\"version\">{version}</td>");
    let redactions = [(id.as_str(), "[task-id]"), (ver_cell.as_str(), "<td id=\"version\">[n]</td>")];

    let home = app.get("/").await;
    assert_eq!(home.status(), 200);
    assert!(home.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    insta::assert_snapshot!("home", redact(&home.text().await.unwrap(), &redactions));

    let key = app.get("/ui/keys/greeting").await;
    assert_eq!(key.status(), 200);
    let html = key.text().await.unwrap();
    assert!(html.contains("&lt;b&gt;hello&lt;/b&gt; &amp; welcome"), "values are HTML-escaped");
    insta::assert_snapshot!("key", redact(&html, &redactions));

    let lookup = app.get("/ui/keys?key=greeting").await;
    assert_eq!(lookup.status(), 200);
    assert_eq!(redact(&lookup.text().await.unwrap(), &redactions), redact(&html, &redactions));

    let task = app.get(&format!("/ui/tasks/{id}")).await;
    assert_eq!(task.status(), 200);
    let task_html = redact(
        &task.text().await.unwrap(),
        &[(id.as_str(), "[task-id]"), (&format!("<td>{version}</td>"), "<td>[n]</td>")],
    );
    insta::assert_snapshot!("task", task_html);
    app.stop().await;
}

#[tokio::test]
async fn unknown_pages_keys_and_tasks_get_the_404_page() {
    let redis = TestRedis::start();
    let app = spawn_app(&redis, 0).await;
    let r = app.get("/ui/keys/missing").await;
    assert_eq!(r.status(), 404);
    insta::assert_snapshot!("not_found_key", redact(&r.text().await.unwrap(), &[]));
    for path in ["/ui/tasks/0123456789abcdef0123456789abcdef", "/ui/tasks/nonsense", "/ui/nothing", "/ui/keys?key="] {
        let r = app.get(path).await;
        assert_eq!(r.status(), 404, "{path}");
        assert!(r.text().await.unwrap().contains("<h1>Not found</h1>"), "{path}");
    }
    app.stop().await;
}
