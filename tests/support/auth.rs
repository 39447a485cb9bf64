//! Token files for servers with authentication on, written the way the chart's Secret volume
//! updates them (a new file renamed over the old, never a partial write).

use std::path::PathBuf;

use sha2::{Digest, Sha256};

use super::app::{spawn_app_with, TestApp};
use super::http::HttpClient;
use super::redis_server::TestRedis;

/// One client of a token file: the token in clear (what the test sends) and its entry.
#[derive(Clone, Copy)]
pub struct Token {
    pub name: &'static str,
    pub token: &'static str,
    pub scopes: &'static [&'static str],
    /// `None`: every key.
    pub prefixes: Option<&'static [&'static str]>,
}

pub fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// The YAML of a token file holding `tokens` (their hashes, never the tokens).
pub fn token_file_yaml(tokens: &[Token]) -> String {
    let mut out = String::from("tokens:\n");
    for t in tokens {
        out.push_str(&format!(
            "  - name: {}\n    sha256: {}\n    scopes: {:?}\n",
            t.name,
            sha256_hex(t.token),
            t.scopes
        ));
        if let Some(p) = t.prefixes {
            out.push_str(&format!("    prefixes: {p:?}\n"));
        }
    }
    out
}

/// A token file in a directory of its own, removed on drop.
pub struct TokenFile {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl TokenFile {
    pub fn new(tokens: &[Token]) -> Self {
        Self::with_text(&token_file_yaml(tokens))
    }

    pub fn with_text(text: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.yaml");
        let file = Self { _dir: dir, path };
        file.replace_text(text);
        file
    }

    /// Replaces the file atomically (write aside, rename over), as a Secret volume does.
    pub fn replace(&self, tokens: &[Token]) {
        self.replace_text(&token_file_yaml(tokens));
    }

    pub fn replace_text(&self, text: &str) {
        let aside = self.path.with_extension("new");
        std::fs::write(&aside, text).unwrap();
        std::fs::rename(&aside, &self.path).unwrap();
    }

    pub fn path_str(&self) -> String {
        self.path.to_str().unwrap().to_string()
    }
}

/// A server (and `workers` workers) with `auth.mode: tokens` reading `file`.
pub async fn spawn_app_with_tokens(redis: &TestRedis, workers: usize, file: &TokenFile) -> TestApp {
    let path = file.path_str();
    spawn_app_with(redis, workers, &[("KVQ__AUTH__MODE", "tokens"), ("KVQ__AUTH__TOKENS_FILE", &path)]).await
}

impl HttpClient {
    /// The same base URL with a client that sends `Authorization: Bearer <token>` on every
    /// request.
    pub fn with_token(&self, token: &str) -> HttpClient {
        HttpClient::with_client(&self.base, bearer_client(token))
    }
}

/// A reqwest client sending the token on every request, redirects not followed.
pub fn bearer_client(token: &str) -> reqwest::Client {
    bearer_client_with_timeout(token, std::time::Duration::from_secs(40))
}

pub fn bearer_client_with_timeout(token: &str, timeout: std::time::Duration) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")).unwrap();
    value.set_sensitive(true);
    headers.insert(reqwest::header::AUTHORIZATION, value);
    reqwest::Client::builder()
        .default_headers(headers)
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Starts the real `kvq-server` with `env` and waits (up to 10 s) for it to stop on its own:
/// (exit code, stderr). `None` as the code: it was still running (killed then).
pub fn server_start_failure(env: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_kvq-server"));
    cmd.env_clear()
        .env("KVQ__SERVER__BIND", "127.0.0.1:0")
        .env("KVQ__LOG__FORMAT", "json")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let mut child = super::process::ChildProcess::spawn("kvq-server", &mut cmd);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let code = loop {
        if let Some(status) = child.try_wait() {
            break status.code();
        }
        if std::time::Instant::now() > deadline {
            child.kill();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    (code, std::fs::read_to_string(&log).unwrap())
}
