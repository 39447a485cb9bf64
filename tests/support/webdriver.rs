//! A small W3C WebDriver client on reqwest: a chromedriver process and one headless Chromium
//! session. Needs the Debian packages `chromium` and `chromium-driver`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::http::delete_from_drop;
use super::process::{free_port, ChildProcess};

/// Bound on every wait in this test.
pub const WAIT: Duration = Duration::from_secs(20);
/// Debian's Chromium; `KVQ_CHROME` names another Chrome/Chromium binary (e.g. on CI runners).
const CHROMIUM: &str = "/usr/bin/chromium";

fn chrome_binary() -> String {
    std::env::var("KVQ_CHROME").unwrap_or_else(|_| CHROMIUM.to_string())
}
/// The W3C name of an element reference in JSON.
pub const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn find_program(name: &str, fallback: &str) -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join(name)).find(|c| c.is_file()))
        .unwrap_or_default();
    on_path.or_else(|| Path::new(fallback).is_file().then(|| PathBuf::from(fallback)))
}

/// A chromedriver process and one browser session; the session is deleted and the process
/// killed on drop.
pub struct Browser {
    driver: ChildProcess,
    url: String,
    session: Option<String>,
    client: reqwest::Client,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub async fn start() -> Self {
        let driver_bin = std::env::var_os("KVQ_CHROMEDRIVER").map(PathBuf::from).or_else(|| find_program("chromedriver", "/usr/bin/chromedriver")).unwrap_or_else(|| {
            panic!("chromedriver is not installed: install the Debian packages `chromium` and `chromium-driver` (apt-get install -y chromium chromium-driver)")
        });
        let chrome = chrome_binary();
        assert!(
            Path::new(&chrome).is_file(),
            "{chrome} is not installed: install the Debian packages `chromium` and `chromium-driver` (apt-get install -y chromium chromium-driver) or set KVQ_CHROME"
        );
        let port = free_port();
        let mut cmd = Command::new(&driver_bin);
        cmd.arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let driver = ChildProcess::spawn(&driver_bin.display().to_string(), &mut cmd);
        let profile = tempfile::tempdir().unwrap();
        let mut b = Self {
            driver,
            url: format!("http://127.0.0.1:{port}"),
            session: None,
            client: reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap(),
            _profile: profile,
        };
        b.wait_driver_ready().await;
        b.new_session().await;
        b
    }

    async fn wait_driver_ready(&mut self) {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.driver.try_wait() {
                panic!("chromedriver exited at start with {status}");
            }
            if let Ok(r) = self.client.get(format!("{}/status", self.url)).send().await {
                if let Ok(v) = r.json::<Value>().await {
                    if v["value"]["ready"] == true {
                        return;
                    }
                }
            }
            assert!(Instant::now() < deadline, "chromedriver did not become ready within {WAIT:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn new_session(&mut self) {
        let profile = self._profile.path().to_str().unwrap().to_string();
        let caps = json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "pageLoadStrategy": "normal",
                "timeouts": { "pageLoad": WAIT.as_millis() as u64, "script": WAIT.as_millis() as u64, "implicit": 0 },
                "goog:chromeOptions": {
                    "binary": chrome_binary(),
                    "args": [
                        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                        "--disable-quic", "--no-first-run", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync", "--disable-extensions",
                        "--disable-default-apps", "--no-default-browser-check", "--window-size=1280,1024",
                        format!("--user-data-dir={profile}"),
                    ],
                },
            }}
        });
        let v = self.call(reqwest::Method::POST, "/session", Some(caps)).await;
        let id = v["sessionId"].as_str().unwrap_or_else(|| panic!("no sessionId in {v}"));
        self.session = Some(id.to_string());
    }

    /// One WebDriver command; panics with the driver's error on failure. Returns `value`.
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.url);
        let mut req = self.client.request(method.clone(), &url);
        if let Some(b) = body {
            req = req.json(&b);
        } else if method == reqwest::Method::POST {
            req = req.json(&json!({}));
        }
        let r = req.send().await.unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        let status = r.status();
        let v: Value = r.json().await.unwrap_or_else(|e| panic!("WebDriver {method} {path}: bad JSON: {e}"));
        assert!(status.is_success(), "WebDriver {method} {path}: {status} {}", v["value"]);
        v["value"].clone()
    }

    fn sid(&self) -> String {
        format!("/session/{}", self.session.as_deref().expect("session"))
    }

    pub async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, &format!("{}/url", self.sid()), Some(json!({ "url": url }))).await;
    }

    pub async fn current_url(&self) -> String {
        self.call(reqwest::Method::GET, &format!("{}/url", self.sid()), None).await.as_str().unwrap().to_string()
    }

    pub async fn execute(&self, script: &str) -> Value {
        let body = json!({ "script": script, "args": [] });
        self.call(reqwest::Method::POST, &format!("{}/execute/sync", self.sid()), Some(body)).await
    }

    /// Runs `script` until it returns something other than null/false, within `WAIT`.
    pub async fn wait_for(&self, what: &str, script: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let v = self.execute(script).await;
            if !(v.is_null() || v == false) {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out after {WAIT:?} waiting for {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn find(&self, css: &str) -> String {
        let body = json!({ "using": "css selector", "value": css });
        let v = self.call(reqwest::Method::POST, &format!("{}/element", self.sid()), Some(body)).await;
        v[ELEMENT].as_str().unwrap_or_else(|| panic!("no element for {css}: {v}")).to_string()
    }

    pub async fn type_into(&self, element: &str, text: &str) {
        let body = json!({ "text": text });
        self.call(reqwest::Method::POST, &format!("{}/element/{element}/value", self.sid()), Some(body)).await;
    }

    pub async fn click(&self, element: &str) {
        self.call(reqwest::Method::POST, &format!("{}/element/{element}/click", self.sid()), None).await;
    }

    /// Every URL the current page loaded: the document and its resources.
    pub async fn loaded_urls(&self) -> Vec<String> {
        let v = self
            .execute(
                "return [location.href].concat(performance.getEntriesByType('navigation').map(e => e.name), \
                 performance.getEntriesByType('resource').map(e => e.name));",
            )
            .await;
        v.as_array().unwrap().iter().map(|u| u.as_str().unwrap().to_string()).collect()
    }

    /// Every URL the current DOM refers to (src, href, action, inline style urls).
    pub async fn referenced_urls(&self) -> Vec<String> {
        let v = self
            .execute(
                "const out = []; \
                 for (const el of document.querySelectorAll('[src],[href],[action]')) { \
                   for (const a of ['src', 'href', 'action']) { \
                     const raw = el.getAttribute(a); \
                     if (raw !== null && raw !== '') out.push(new URL(raw, document.baseURI).href); } } \
                 return out;",
            )
            .await;
        v.as_array().unwrap().iter().map(|u| u.as_str().unwrap().to_string()).collect()
    }

    pub async fn quit(&mut self) {
        if let Some(id) = self.session.take() {
            let _ = self.client.delete(format!("{}/session/{id}", self.url)).send().await;
        }
        self.driver.kill();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(id) = self.session.take() {
            // Closes Chromium; the driver process is killed after this (field drop).
            delete_from_drop(vec![format!("{}/session/{id}", self.url)], Duration::from_secs(10));
        }
    }
}
