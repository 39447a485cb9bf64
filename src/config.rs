//! Configuration (README, "Configuration"), layered: built-in defaults, then an optional YAML file named by
//! `KVQ_CONFIG`, then `KVQ__SECTION__KEY` environment variables. Validated once at start so a wrong
//! value stops the process with one line naming the setting.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer};

/// A secret string: never printed by `Debug` or `Display`, so it cannot leak into logs.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The only way to read the value; grep for it to audit where secrets go.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub worker: WorkerSettings,
    pub redis: RedisSettings,
    pub limits: LimitSettings,
    pub tasks: TaskSettings,
    pub log: LogSettings,
    pub auth: AuthSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Listen address of the HTTP API.
    pub bind: SocketAddr,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSettings {
    /// Listen address of the worker's health and metrics endpoints.
    pub bind: SocketAddr,
    /// Apply calls in flight per worker process; each applies a batch of up to 32 tasks.
    pub concurrency: usize,
    /// How long an entry must sit unacknowledged on a consumer before another one reclaims it.
    pub claim_idle_ms: u64,
    /// Deliveries before a task is given up and moved to the dead-letter stream.
    pub max_attempts: u32,
    /// Consumer name in the group; defaults to the pod's hostname so a restarted pod resumes.
    #[serde(default)]
    pub consumer_name: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedisMode {
    Standalone,
    Sentinel,
    /// A Redis Cluster: keys and the queue are spread over `tasks.shards` hash slots.
    Cluster,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    pub mode: RedisMode,
    /// Standalone mode: `redis://host:port[/db]`, or `rediss://` for TLS. Passwords belong in
    /// `password`, not here.
    pub url: String,
    /// Sentinel mode: `host:port` of each sentinel (a list in YAML, comma-separated in env).
    #[serde(deserialize_with = "list_or_csv")]
    pub sentinels: Vec<String>,
    pub master_name: String,
    /// Cluster mode: `host:port` of some of the cluster's nodes (a list in YAML,
    /// comma-separated in env); the rest of the cluster is discovered from them.
    #[serde(deserialize_with = "list_or_csv")]
    pub nodes: Vec<String>,
    #[serde(default)]
    pub password: Option<Secret>,
    #[serde(default)]
    pub sentinel_password: Option<Secret>,
    /// ACL user kvq authenticates as (with `password`); unset: Redis's `default` user.
    #[serde(default)]
    pub username: Option<String>,
    /// ACL user for the sentinels (with `sentinel_password`).
    #[serde(default)]
    pub sentinel_username: Option<String>,
    /// Sentinel and cluster mode: reach the Redis servers over TLS. Standalone mode: the URL scheme decides
    /// (`rediss://`), and `true` with a `redis://` URL is refused rather than ignored.
    #[serde(default)]
    pub tls: bool,
    /// Sentinel mode: reach the sentinels over TLS.
    #[serde(default)]
    pub sentinel_tls: bool,
    /// PEM CA bundle that signs the servers' certificates; unset: the system's roots. Read on
    /// every new connection, so a renewed CA is used without a restart.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) for servers that require mutual TLS; needs `tls_key_file`.
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file`.
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
    /// Replicas that must hold a task before the server answers 202 (0: do not wait).
    pub min_replicas_ack: u32,
    /// Namespace of every Redis key kvq uses, so several deployments can share one Redis.
    pub key_prefix: String,
}

impl RedisSettings {
    /// Whether kvq talks TLS to the Redis servers (master and replicas).
    pub fn server_tls(&self) -> bool {
        match self.mode {
            RedisMode::Standalone => self.url.starts_with("rediss://"),
            RedisMode::Sentinel | RedisMode::Cluster => self.tls,
        }
    }

    /// Whether any connection kvq opens uses TLS.
    pub fn any_tls(&self) -> bool {
        self.server_tls() || (self.mode == RedisMode::Sentinel && self.sentinel_tls)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSettings {
    pub max_value_bytes: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSettings {
    pub retention_seconds: u64,
    /// Most bytes kvq's bookkeeping (task outcomes, idempotency keys) takes in Redis, at any
    /// write rate: the newest outcomes and keys that fit are kept (README "Memory").
    pub bookkeeping_bytes: u64,
    /// Cluster mode: queue shards, each one hash slot holding its keys, task stream and
    /// bookkeeping. Fixed for the life of the data (kvq refuses to start on a different count).
    /// Other modes have one shard.
    pub shards: u64,
}

/// Most queue shards: every shard is a stream each worker reads on a connection of its own.
pub const MAX_SHARDS: u64 = 1024;

/// `tasks.bookkeeping_bytes` by default: 32 MiB.
pub const DEFAULT_BOOKKEEPING_BYTES: u64 = 32 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
}

/// Who may call the API (README, "Authentication").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Every `/v1` request and data page needs a token from `auth.tokens_file`.
    Tokens,
    /// No authentication at all: only by an explicit choice (development, a private network).
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// `none` in the binary (a bare `kvq-server` for development runs as it always did); the
    /// chart defaults to `tokens`, and the staging and production values set it. With `tokens`
    /// a server without a token file refuses to start rather than serve every key to anyone.
    pub mode: AuthMode,
    /// The token file (YAML or JSON): names, SHA-256 of each token, scopes, key prefixes.
    /// Several files, comma-separated, are merged (the chart's own and a user's Secret).
    /// Re-read when it changes. Only the server reads it.
    #[serde(default)]
    pub tokens_file: Option<String>,
}

impl AuthSettings {
    /// The token files named by `tokens_file`.
    pub fn tokens_files(&self) -> Vec<String> {
        self.tokens_file
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(String::from)
            .collect()
    }
}

fn list_or_csv<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrCsv {
        List(Vec<String>),
        Csv(String),
    }
    Ok(match ListOrCsv::deserialize(d)? {
        ListOrCsv::List(list) => list,
        ListOrCsv::Csv(csv) => csv.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect(),
    })
}

/// The built-in defaults: also the complete list of settings a config file may hold.
pub const DEFAULTS: &str = r#"
server:
  bind: "0.0.0.0:8080"
worker:
  bind: "0.0.0.0:9090"
  concurrency: 16
  claim_idle_ms: 30000
  max_attempts: 5
redis:
  mode: standalone
  url: "redis://127.0.0.1:6379"
  sentinels: []
  nodes: []
  master_name: mymaster
  min_replicas_ack: 0
  key_prefix: kvq
limits:
  max_value_bytes: 1048576
tasks:
  retention_seconds: 86400
  bookkeeping_bytes: 33554432
  shards: 16
log:
  format: json
auth:
  mode: none
"#;

/// Upper bounds of the numeric settings: far beyond any sane value, and low enough that no
/// derived figure (milliseconds, Redis expiry times) can overflow.
pub const MAX_CONCURRENCY: u64 = 1024;
pub const MAX_ATTEMPTS: u64 = 1000;
pub const MAX_CLAIM_IDLE_MS: u64 = 86_400_000;
pub const MAX_VALUE_BYTES: u64 = 512 * 1024 * 1024;
/// Ten years.
pub const MAX_RETENTION_SECONDS: u64 = 315_360_000;
pub const MAX_REPLICAS_ACK: u64 = 100;
/// Longest key prefix.
pub const MAX_KEY_PREFIX_BYTES: usize = 64;

/// A key prefix is 1 to 64 letters, digits, `_`, `-` or `.`. Every Redis key kvq uses is the
/// prefix, a `:` and more, so no two valid prefixes can see each other's keys (`team` must not
/// read `team:k:x`'s data), and no character has a meaning to Redis Cluster (`{`, `}`).
pub fn check_key_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() || prefix.len() > MAX_KEY_PREFIX_BYTES {
        return Err(format!("must be 1 to {MAX_KEY_PREFIX_BYTES} characters"));
    }
    match prefix.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))) {
        Some(c) => Err(format!("'{}' is not allowed; use letters, digits, '_', '-' or '.'", c.escape_default())),
        None => Ok(()),
    }
}

/// A configuration error, printed as the single line the process stops with.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(String);

impl Settings {
    /// Loads settings from the process environment.
    pub fn load() -> Result<Self, ConfigError> {
        Self::load_from(std::env::vars())
    }

    /// Loads settings from the given environment (tests pass their own).
    pub fn load_from(env: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        let env: Vec<(String, String)> = env.into_iter().collect();
        let mut builder =
            config::Config::builder().add_source(config::File::from_str(DEFAULTS, config::FileFormat::Yaml));
        if let Some((_, path)) = env.iter().find(|(k, _)| k == "KVQ_CONFIG") {
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError(format!("KVQ_CONFIG={path}: {e}")))?;
            builder = builder.add_source(config::File::from_str(&text, config::FileFormat::Yaml));
        }
        let kvq_env: config::Map<String, String> = env.into_iter().filter(|(k, _)| k.starts_with("KVQ__")).collect();
        builder = builder.add_source(
            config::Environment::with_prefix("KVQ")
                .prefix_separator("__")
                .separator("__")
                // No `try_parsing`: it would turn the password `0123` into `123` and the prefix
                // `1e3` into `1000`. Numeric settings are parsed from their text by serde instead.
                .source(Some(kvq_env)),
        );
        let settings: Settings =
            builder.build().and_then(|c| c.try_deserialize()).map_err(|e| ConfigError(one_line(&e.to_string())))?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let fail = |setting: &str, why: &str| Err(ConfigError(format!("{setting}: {why}")));
        let ranges: [(&str, u64, u64, u64); 8] = [
            ("tasks.shards (KVQ__TASKS__SHARDS)", self.tasks.shards, 1, MAX_SHARDS),
            (
                "tasks.bookkeeping_bytes (KVQ__TASKS__BOOKKEEPING_BYTES)",
                self.tasks.bookkeeping_bytes,
                64 * 1024,
                1 << 40,
            ),
            ("worker.concurrency (KVQ__WORKER__CONCURRENCY)", self.worker.concurrency as u64, 1, MAX_CONCURRENCY),
            ("worker.max_attempts (KVQ__WORKER__MAX_ATTEMPTS)", self.worker.max_attempts.into(), 1, MAX_ATTEMPTS),
            ("worker.claim_idle_ms (KVQ__WORKER__CLAIM_IDLE_MS)", self.worker.claim_idle_ms, 10, MAX_CLAIM_IDLE_MS),
            (
                "limits.max_value_bytes (KVQ__LIMITS__MAX_VALUE_BYTES)",
                self.limits.max_value_bytes as u64,
                1,
                MAX_VALUE_BYTES,
            ),
            (
                "tasks.retention_seconds (KVQ__TASKS__RETENTION_SECONDS)",
                self.tasks.retention_seconds,
                1,
                MAX_RETENTION_SECONDS,
            ),
            (
                "redis.min_replicas_ack (KVQ__REDIS__MIN_REPLICAS_ACK)",
                self.redis.min_replicas_ack.into(),
                0,
                MAX_REPLICAS_ACK,
            ),
        ];
        for (setting, value, min, max) in ranges {
            if !(min..=max).contains(&value) {
                return fail(setting, &format!("{value} is out of range; must be {min}..={max}"));
            }
        }
        match self.redis.mode {
            RedisMode::Standalone => {
                let url = &self.redis.url;
                if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                    return fail("redis.url (KVQ__REDIS__URL)", "must start with redis:// or rediss://");
                }
                if redis::parse_redis_url(url).is_none() {
                    return fail("redis.url (KVQ__REDIS__URL)", "is not a valid URL");
                }
                if url.contains('@') {
                    return fail(
                        "redis.url (KVQ__REDIS__URL)",
                        "must not carry credentials; set KVQ__REDIS__PASSWORD instead",
                    );
                }
                if url.contains('#') {
                    return fail(
                        "redis.url (KVQ__REDIS__URL)",
                        "must not carry a fragment: kvq always verifies the server's certificate",
                    );
                }
                if self.redis.tls && !self.redis.server_tls() {
                    return fail("redis.tls (KVQ__REDIS__TLS)", "is true but redis.url is not rediss://");
                }
                if self.redis.sentinel_tls || self.redis.sentinel_username.is_some() {
                    return fail(
                        "redis.sentinel_tls / redis.sentinel_username",
                        "are sentinel settings, but redis.mode is standalone",
                    );
                }
            }
            RedisMode::Sentinel => {
                if self.redis.sentinels.is_empty() {
                    return fail(
                        "redis.sentinels (KVQ__REDIS__SENTINELS)",
                        "sentinel mode needs at least one host:port",
                    );
                }
                for s in &self.redis.sentinels {
                    if parse_host_port(s).is_none() {
                        return fail("redis.sentinels (KVQ__REDIS__SENTINELS)", &format!("'{s}' is not host:port"));
                    }
                }
                if self.redis.master_name.is_empty() {
                    return fail("redis.master_name (KVQ__REDIS__MASTER_NAME)", "must not be empty");
                }
            }
            RedisMode::Cluster => {
                if self.redis.nodes.is_empty() {
                    return fail("redis.nodes (KVQ__REDIS__NODES)", "cluster mode needs at least one host:port");
                }
                for n in &self.redis.nodes {
                    if parse_host_port(n).is_none() {
                        return fail("redis.nodes (KVQ__REDIS__NODES)", &format!("'{n}' is not host:port"));
                    }
                }
                if self.redis.sentinel_tls || self.redis.sentinel_username.is_some() {
                    return fail(
                        "redis.sentinel_tls / redis.sentinel_username",
                        "are sentinel settings, but redis.mode is cluster",
                    );
                }
            }
        }
        if let Err(why) = check_key_prefix(&self.redis.key_prefix) {
            return fail("redis.key_prefix (KVQ__REDIS__KEY_PREFIX)", &why);
        }
        self.validate_tls_and_users()
    }

    /// TLS files and ACL users: a setting that would be silently ignored is refused, so nobody
    /// believes a connection is encrypted or authenticated when it is not.
    fn validate_tls_and_users(&self) -> Result<(), ConfigError> {
        let fail = |setting: &str, why: &str| Err(ConfigError(format!("{setting}: {why}")));
        let r = &self.redis;
        if r.tls_cert_file.is_some() != r.tls_key_file.is_some() {
            return fail(
                "redis.tls_cert_file / redis.tls_key_file (KVQ__REDIS__TLS_CERT_FILE, KVQ__REDIS__TLS_KEY_FILE)",
                "set both (mutual TLS) or neither",
            );
        }
        if !r.any_tls() {
            for (set, setting) in [
                (r.tls_ca_file.is_some(), "redis.tls_ca_file (KVQ__REDIS__TLS_CA_FILE)"),
                (r.tls_cert_file.is_some(), "redis.tls_cert_file (KVQ__REDIS__TLS_CERT_FILE)"),
            ] {
                if set {
                    return fail(setting, "is set but no connection uses TLS (use rediss:// or KVQ__REDIS__TLS=true)");
                }
            }
        }
        let users = [
            (&r.username, &r.password, "redis.username (KVQ__REDIS__USERNAME)", "KVQ__REDIS__PASSWORD"),
            (
                &r.sentinel_username,
                &r.sentinel_password,
                "redis.sentinel_username (KVQ__REDIS__SENTINEL_USERNAME)",
                "KVQ__REDIS__SENTINEL_PASSWORD",
            ),
        ];
        for (user, password, setting, password_var) in users {
            match user {
                Some(u) if u.is_empty() || u.contains(char::is_whitespace) => {
                    return fail(setting, "must be a non-empty name without spaces");
                }
                Some(_) if password.as_ref().is_none_or(|p| p.expose().is_empty()) => {
                    return fail(setting, &format!("needs {password_var}"));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The worker's consumer name: the setting, else the hostname, else a random one.
    pub fn consumer_name(&self) -> String {
        self.worker
            .consumer_name
            .clone()
            .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
            .unwrap_or_else(|| format!("worker-{}", uuid::Uuid::new_v4().simple()))
    }
}

/// The error quotes the offending value, which may hold any character: keep it on one line.
fn one_line(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

/// Splits `host:port`, accepting `[v6]:port`.
pub fn parse_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return None;
    }
    Some((host.to_string(), port.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn tls_and_acl_settings_load_and_what_would_be_ignored_is_refused() {
        let s = Settings::load_from(env(&[
            ("KVQ__REDIS__MODE", "sentinel"),
            ("KVQ__REDIS__SENTINELS", "a:26379"),
            ("KVQ__REDIS__TLS", "true"),
            ("KVQ__REDIS__SENTINEL_TLS", "true"),
            ("KVQ__REDIS__TLS_CA_FILE", "/tls/ca.crt"),
            ("KVQ__REDIS__TLS_CERT_FILE", "/tls/tls.crt"),
            ("KVQ__REDIS__TLS_KEY_FILE", "/tls/tls.key"),
            ("KVQ__REDIS__USERNAME", "kvq-server"),
            ("KVQ__REDIS__PASSWORD", "pw"),
            ("KVQ__REDIS__SENTINEL_USERNAME", "kvq-sentinel"),
            ("KVQ__REDIS__SENTINEL_PASSWORD", "spw"),
        ]))
        .unwrap();
        assert!(s.redis.tls && s.redis.sentinel_tls && s.redis.server_tls());
        assert_eq!(s.redis.tls_ca_file.as_deref(), Some(std::path::Path::new("/tls/ca.crt")));
        assert_eq!(s.redis.username.as_deref(), Some("kvq-server"));
        assert_eq!(s.redis.sentinel_username.as_deref(), Some("kvq-sentinel"));
        let standalone = Settings::load_from(env(&[("KVQ__REDIS__URL", "rediss://r:6380")])).unwrap();
        assert!(standalone.redis.server_tls() && !standalone.redis.tls);

        let tls_url = ("KVQ__REDIS__URL", "rediss://r:6380");
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("KVQ__REDIS__TLS_CA_FILE", "/ca")], "no connection uses TLS"),
            (&[tls_url, ("KVQ__REDIS__TLS_CERT_FILE", "/c")], "set both"),
            (&[tls_url, ("KVQ__REDIS__TLS_KEY_FILE", "/k")], "set both"),
            (&[("KVQ__REDIS__TLS", "true")], "not rediss://"),
            (&[("KVQ__REDIS__URL", "rediss://r:6380/#insecure")], "always verifies"),
            (&[("KVQ__REDIS__USERNAME", "kvq")], "needs KVQ__REDIS__PASSWORD"),
            (&[("KVQ__REDIS__USERNAME", ""), ("KVQ__REDIS__PASSWORD", "pw")], "non-empty"),
            (&[("KVQ__REDIS__SENTINEL_TLS", "true")], "redis.mode is standalone"),
            (
                &[
                    ("KVQ__REDIS__MODE", "sentinel"),
                    ("KVQ__REDIS__SENTINELS", "a:1"),
                    ("KVQ__REDIS__SENTINEL_USERNAME", "s"),
                ],
                "needs KVQ__REDIS__SENTINEL_PASSWORD",
            ),
        ];
        for (vars, needle) in cases {
            let err = Settings::load_from(env(vars)).unwrap_err().to_string();
            assert!(err.contains(needle), "{vars:?}: {err}");
            assert!(!err.contains("pw"), "no password in {err}");
        }
    }

    #[test]
    fn defaults_match_the_design() {
        let s = Settings::load_from(env(&[])).unwrap();
        assert_eq!(s.server.bind.to_string(), "0.0.0.0:8080");
        assert_eq!(s.worker.bind.to_string(), "0.0.0.0:9090");
        assert_eq!(s.worker.concurrency, 16);
        assert_eq!(s.worker.claim_idle_ms, 30000);
        assert_eq!(s.worker.max_attempts, 5);
        assert_eq!(s.redis.mode, RedisMode::Standalone);
        assert_eq!(s.redis.url, "redis://127.0.0.1:6379");
        assert_eq!(s.redis.master_name, "mymaster");
        assert_eq!(s.redis.min_replicas_ack, 0);
        assert_eq!(s.redis.key_prefix, "kvq");
        assert_eq!(s.limits.max_value_bytes, 1048576);
        assert_eq!(s.tasks.retention_seconds, 86400);
        assert_eq!(s.log.format, LogFormat::Json);
        assert!(s.redis.password.is_none());
        assert_eq!(s.auth.mode, AuthMode::None);
    }

    #[test]
    fn env_overrides_file_which_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(
            &path,
            "worker:\n  concurrency: 4\n  max_attempts: 9\nredis:\n  mode: sentinel\n  sentinels: [\"a:26379\", \"b:26379\"]\n",
        )
        .unwrap();
        let s = Settings::load_from(env(&[
            ("KVQ_CONFIG", path.to_str().unwrap()),
            ("KVQ__WORKER__CONCURRENCY", "8"),
            ("KVQ__REDIS__PASSWORD", "hunter2"),
            ("KVQ__LOG__FORMAT", "pretty"),
        ]))
        .unwrap();
        assert_eq!(s.worker.concurrency, 8);
        assert_eq!(s.worker.max_attempts, 9);
        assert_eq!(s.redis.mode, RedisMode::Sentinel);
        assert_eq!(s.redis.sentinels, vec!["a:26379", "b:26379"]);
        assert_eq!(s.redis.password.as_ref().unwrap().expose(), "hunter2");
        assert_eq!(s.log.format, LogFormat::Pretty);
    }

    #[test]
    fn cluster_nodes_from_env_are_comma_separated_and_shards_default_to_16() {
        let s = Settings::load_from(env(&[
            ("KVQ__REDIS__MODE", "cluster"),
            ("KVQ__REDIS__NODES", "r-0.r:6379, r-1.r:6379"),
        ]))
        .unwrap();
        assert_eq!(s.redis.nodes, vec!["r-0.r:6379", "r-1.r:6379"]);
        assert_eq!(s.tasks.shards, 16, "16 shards by default");
        let s = Settings::load_from(env(&[("KVQ__TASKS__SHARDS", "64")])).unwrap();
        assert_eq!(s.tasks.shards, 64);
    }

    #[test]
    fn sentinels_from_env_are_comma_separated() {
        let s = Settings::load_from(env(&[
            ("KVQ__REDIS__MODE", "sentinel"),
            ("KVQ__REDIS__SENTINELS", "10.0.0.1:26379, r-1.r:26379"),
        ]))
        .unwrap();
        assert_eq!(s.redis.sentinels, vec!["10.0.0.1:26379", "r-1.r:26379"]);
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Settings::load_from(env(&[
            ("KVQ__REDIS__PASSWORD", "hunter2"),
            ("KVQ__REDIS__SENTINEL_PASSWORD", "swordfish"),
        ]))
        .unwrap();
        let printed = format!("{s:?}");
        assert!(!printed.contains("hunter2") && !printed.contains("swordfish"), "{printed}");
        assert!(printed.contains("Secret(***)"));
    }

    #[test]
    fn wrong_values_name_the_setting() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("KVQ__WORKER__CONCURRENCY", "0")], "worker.concurrency"),
            (&[("KVQ__WORKER__CONCURRENCY", "many")], "concurrency"),
            (&[("KVQ__REDIS__MODE", "cluster")], "redis.nodes"),
            (&[("KVQ__REDIS__MODE", "cluster"), ("KVQ__REDIS__NODES", "a:1,b")], "'b' is not host:port"),
            (&[("KVQ__REDIS__MODE", "galaxy")], "mode"),
            (&[("KVQ__TASKS__SHARDS", "0")], "tasks.shards"),
            (&[("KVQ__TASKS__SHARDS", "1025")], "tasks.shards"),
            (&[("KVQ__REDIS__MODE", "sentinel")], "redis.sentinels"),
            (&[("KVQ__REDIS__URL", "http://x")], "redis.url"),
            (&[("KVQ__REDIS__URL", "redis://:pw@x:6379")], "KVQ__REDIS__PASSWORD"),
            (&[("KVQ__SERVER__BIND", "nowhere")], "bind"),
            (&[("KVQ__LIMITS__MAX_VALUE_BYTES", "0")], "limits.max_value_bytes"),
            (&[("KVQ__REDIS__BOGUS", "1")], "bogus"),
        ];
        for (pairs, needle) in cases {
            let err = Settings::load_from(env(pairs)).unwrap_err().to_string();
            assert!(err.contains(needle), "{pairs:?}: '{err}' should name {needle}");
            assert!(!err.contains('\n'), "one line: {err}");
        }
    }

    #[test]
    fn every_string_setting_keeps_its_exact_text() {
        let s = Settings::load_from(env(&[
            ("KVQ__REDIS__PASSWORD", "0123"),
            ("KVQ__REDIS__SENTINEL_PASSWORD", "1e3"),
            ("KVQ__REDIS__KEY_PREFIX", "007"),
            ("KVQ__REDIS__MASTER_NAME", "true"),
            ("KVQ__WORKER__CONSUMER_NAME", "0x10"),
        ]))
        .unwrap();
        assert_eq!(s.redis.password.unwrap().expose(), "0123");
        assert_eq!(s.redis.sentinel_password.unwrap().expose(), "1e3");
        assert_eq!(s.redis.key_prefix, "007");
        assert_eq!(s.redis.master_name, "true");
        assert_eq!(s.worker.consumer_name.as_deref(), Some("0x10"));
        // Two tenants whose prefixes look like the same number stay apart.
        let seven = Settings::load_from(env(&[("KVQ__REDIS__KEY_PREFIX", "7")])).unwrap();
        assert_ne!(seven.redis.key_prefix, "007");
    }

    #[test]
    fn out_of_range_numbers_stop_the_start_naming_the_setting() {
        let cases: &[(&str, &str, &str)] = &[
            ("KVQ__TASKS__RETENTION_SECONDS", "20000000000000000", "tasks.retention_seconds"),
            ("KVQ__TASKS__RETENTION_SECONDS", "1e16", "retention_seconds"),
            ("KVQ__TASKS__RETENTION_SECONDS", "0", "tasks.retention_seconds"),
            ("KVQ__TASKS__RETENTION_SECONDS", "-1", "retention_seconds"),
            ("KVQ__WORKER__CONCURRENCY", "100000", "worker.concurrency"),
            ("KVQ__WORKER__MAX_ATTEMPTS", "4294967295", "worker.max_attempts"),
            ("KVQ__WORKER__CLAIM_IDLE_MS", "18446744073709551615", "worker.claim_idle_ms"),
            ("KVQ__WORKER__CLAIM_IDLE_MS", "18446744073709551616", "claim_idle_ms"),
            ("KVQ__LIMITS__MAX_VALUE_BYTES", "536870913", "limits.max_value_bytes"),
            ("KVQ__REDIS__MIN_REPLICAS_ACK", "1000", "redis.min_replicas_ack"),
        ];
        for (var, value, needle) in cases {
            let err = Settings::load_from(env(&[(var, value)])).unwrap_err().to_string();
            assert!(err.contains(needle), "{var}={value}: '{err}' should name {needle}");
            assert!(!err.contains('\n'), "one line: {err}");
        }
        let largest = Settings::load_from(env(&[
            ("KVQ__TASKS__RETENTION_SECONDS", &MAX_RETENTION_SECONDS.to_string()),
            ("KVQ__WORKER__CLAIM_IDLE_MS", &MAX_CLAIM_IDLE_MS.to_string()),
        ]))
        .unwrap();
        assert_eq!(largest.tasks.retention_seconds, MAX_RETENTION_SECONDS);
    }

    #[test]
    fn key_prefixes_cannot_nest_in_another_key_space() {
        for bad in ["team:k:foo", "team:", "a b", "{kvq}", "", "é", &"p".repeat(65), "a\nb", "a*"] {
            let err = Settings::load_from(env(&[("KVQ__REDIS__KEY_PREFIX", bad)])).unwrap_err().to_string();
            assert!(err.contains("redis.key_prefix"), "{bad:?}: {err}");
        }
        for good in ["kvq", "team-a", "tenant_7.prod", "07", &"p".repeat(64)] {
            assert_eq!(Settings::load_from(env(&[("KVQ__REDIS__KEY_PREFIX", good)])).unwrap().redis.key_prefix, good);
        }
    }

    proptest::proptest! {
        /// Whatever text a string setting holds, it arrives unchanged (passwords may be any bytes
        /// a Secret holds but NUL, which an environment variable cannot carry).
        #[test]
        fn passwords_arrive_unchanged(password in "[^\\x00]{1,64}") {
            let s = Settings::load_from(env(&[("KVQ__REDIS__PASSWORD", &password)])).unwrap();
            let got = s.redis.password.unwrap();
            proptest::prop_assert_eq!(got.expose(), password.as_str());
        }

        /// No value of any setting makes loading panic: it loads or says which setting is wrong.
        #[test]
        fn loading_never_panics(
            var in proptest::sample::select(vec![
                "KVQ__SERVER__BIND", "KVQ__WORKER__CONCURRENCY", "KVQ__WORKER__CLAIM_IDLE_MS",
                "KVQ__WORKER__MAX_ATTEMPTS", "KVQ__REDIS__MODE", "KVQ__REDIS__URL", "KVQ__REDIS__SENTINELS",
                "KVQ__REDIS__MIN_REPLICAS_ACK", "KVQ__REDIS__KEY_PREFIX", "KVQ__LIMITS__MAX_VALUE_BYTES",
                "KVQ__TASKS__RETENTION_SECONDS", "KVQ__LOG__FORMAT", "KVQ__AUTH__MODE", "KVQ__AUTH__TOKENS_FILE",
            ]),
            value in "[^\\x00]{0,40}",
        ) {
            if let Err(e) = Settings::load_from(env(&[(var, &value)])) {
                proptest::prop_assert!(!e.to_string().contains('\n'), "one line: {}", e);
            }
        }

        /// Valid prefixes are accepted as they are; anything with another character is refused.
        #[test]
        fn prefixes_are_checked_by_character(prefix in "\\PC{1,70}") {
            let valid = prefix.len() <= MAX_KEY_PREFIX_BYTES
                && prefix.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
            proptest::prop_assert_eq!(check_key_prefix(&prefix).is_ok(), valid);
        }
    }

    #[test]
    fn unknown_keys_in_the_file_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, "server:\n  bind: \"0.0.0.0:1\"\n  port: 3\n").unwrap();
        let err = Settings::load_from(env(&[("KVQ_CONFIG", path.to_str().unwrap())])).unwrap_err().to_string();
        assert!(err.contains("port"), "{err}");
    }
}
