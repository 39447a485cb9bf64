//! Real-browser test: headless Chromium driven by chromedriver over the W3C WebDriver protocol
//! (a small client on reqwest). Loads `/docs` and `/` with nothing but loopback traffic.
//!
//! Needs the Debian packages `chromium` and `chromium-driver`; without them the test fails.

use crate::support::webdriver::Browser;
use crate::support::{spawn_app, spawn_app_with_tokens, TestRedis, Token, TokenFile};

/// Only the app itself (and inline data) may be loaded: nothing beyond loopback, no CDN.
fn assert_local(base: &str, page: &str, urls: &[String]) {
    let prefix = format!("{base}/");
    for u in urls {
        let ok = u.starts_with(&prefix) || *u == base || u.starts_with("data:") || u.starts_with("blob:");
        assert!(ok, "{page} refers to {u}, which is not on {base}: pages must not depend on the network");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docs_and_home_page_in_a_real_browser() {
    let redis = TestRedis::start();
    let app = spawn_app(&redis, 1).await;
    let key = "browser/ünïcode key";
    let value = "<b>hello</b> & \"world\"";
    let r = app.put(&support_path(key), value, "?wait=5").await;
    assert_eq!(r.status(), 200, "PUT ?wait=5: {}", r.text().await.unwrap());
    assert_eq!(app.value_of(&support_path(key)).await.as_deref(), Some(value));

    let mut browser = Browser::start().await;

    // (a) Swagger UI renders the operations.
    browser.goto(&app.url("/docs")).await;
    let ops = browser
        .wait_for(
            "Swagger UI to list the operations",
            "const ops = Array.from(document.querySelectorAll('.opblock')).map(b => { \
               const m = b.querySelector('.opblock-summary-method'); \
               const p = b.querySelector('.opblock-summary-path'); \
               const path = p ? (p.getAttribute('data-path') || p.textContent) : ''; \
               return (m ? m.textContent.trim().toUpperCase() : '') + ' ' + path.replace(/\\u200b/g, '').trim(); }); \
             const want = ['PUT /v1/keys/{key}', 'GET /v1/keys/{key}', 'DELETE /v1/keys/{key}', \
                           'GET /v1/keys', 'GET /v1/tasks/{id}']; \
             return want.every(w => ops.includes(w)) ? ops : null;",
        )
        .await;
    assert_eq!(ops.as_array().unwrap().len(), 5, "exactly the five operations: {ops}");
    let title = browser.execute("return document.querySelector('.info .title')?.textContent || '';").await;
    assert!(title.as_str().unwrap().contains("kvq"), "Swagger UI shows the API title: {title}");
    let mut urls = browser.loaded_urls().await;
    urls.extend(browser.referenced_urls().await);
    assert_local(&app.base, "/docs", &urls);

    // (b) The home page: status table, then the lookup form shows the stored value.
    browser.goto(&app.url("/")).await;
    let status = browser
        .wait_for(
            "the status table",
            "const s = document.querySelector('#redis-status'); const d = document.querySelector('#queue-depth'); \
             return s && d ? [s.textContent.trim(), d.textContent.trim()] : null;",
        )
        .await;
    assert_eq!(status[0], "reachable and writable", "home status: {status}");
    assert!(status[1].as_str().unwrap().parse::<u64>().is_ok(), "queue depth is a number: {status}");
    let mut urls = browser.loaded_urls().await;
    urls.extend(browser.referenced_urls().await);
    assert_local(&app.base, "/", &urls);

    let input = browser.find("#lookup #key").await;
    browser.type_into(&input, key).await;
    let submit = browser.find("#lookup [type=submit]").await;
    browser.click(&submit).await;
    let shown = browser
        .wait_for(
            "the key page's #value",
            "const v = document.querySelector('#value'); return v ? v.textContent : null;",
        )
        .await;
    assert_eq!(shown.as_str(), Some(value), "the key page shows the stored value");
    let name = browser.execute("return document.querySelector('#key-name')?.textContent;").await;
    assert_eq!(name.as_str(), Some(key));
    let here = browser.current_url().await;
    assert!(here.starts_with(&app.url("/ui/keys")), "the form led to {here}");
    let mut urls = browser.loaded_urls().await;
    urls.extend(browser.referenced_urls().await);
    assert_local(&app.base, "the key page", &urls);

    browser.quit().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_login_and_logout_in_a_real_browser() {
    let redis = TestRedis::start();
    let reader = Token { name: "browser", token: "browser-token", scopes: &["read", "write"], prefixes: None };
    let tokens = TokenFile::new(&[reader]);
    let app = spawn_app_with_tokens(&redis, 1, &tokens).await;
    let r = app.with_token(reader.token).put("kept", "the secret value", "?wait=5").await;
    assert_eq!(r.status(), 200);

    let mut browser = Browser::start().await;
    let page = app.url("/ui/keys/kept");
    let login_form = "return document.querySelector('#login #token') ? true : null;";
    browser.goto(&page).await;
    browser.wait_for("the login form in place of the key page", login_form).await;
    let text = browser.execute("return document.body.textContent;").await;
    assert!(!text.as_str().unwrap().contains("the secret value"), "no value before the login");

    let input = browser.find("#login #token").await;
    browser.type_into(&input, reader.token).await;
    browser.click(&browser.find("#login [type=submit]").await).await;
    let shown = browser
        .wait_for(
            "the key page after login",
            "const v = document.querySelector('#value'); return v ? v.textContent : null;",
        )
        .await;
    assert_eq!(shown.as_str(), Some("the secret value"));
    assert_eq!(browser.current_url().await, page, "login comes back to the page asked for");
    let cookies = browser.execute("return document.cookie;").await;
    assert!(!cookies.as_str().unwrap().contains("kvq_token"), "HttpOnly: scripts cannot read it: {cookies}");

    browser.click(&browser.find("#logout [type=submit]").await).await;
    browser.wait_for("the home page after logout", "return document.querySelector('#lookup') ? true : null;").await;
    browser.goto(&page).await;
    browser.wait_for("the login form again after logout", login_form).await;

    browser.quit().await;
    app.stop().await;
}

/// The key as a URL path segment for the harness's `put`/`value_of`.
fn support_path(key: &str) -> String {
    kvq::server::pages::percent_encode(key)
}
