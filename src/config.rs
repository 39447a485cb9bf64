//! Configuration, layered as in design §5: built-in defaults, then an optional YAML file named by
//! `KVQ_CONFIG`, then `KVQ__SECTION__KEY` environment variables. Validated once at start so a wrong
//! value stops the process with one line naming the setting.

use std::fmt;
use std::net::SocketAddr;

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
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    pub mode: RedisMode,
    /// Standalone mode: `redis://host:port[/db]`. Passwords belong in `password`, not here.
    pub url: String,
    /// Sentinel mode: `host:port` of each sentinel (a list in YAML, comma-separated in env).
    #[serde(deserialize_with = "list_or_csv")]
    pub sentinels: Vec<String>,
    pub master_name: String,
    #[serde(default)]
    pub password: Option<Secret>,
    #[serde(default)]
    pub sentinel_password: Option<Secret>,
    /// Replicas that must hold a task before the server answers 202 (0: do not wait).
    pub min_replicas_ack: u32,
    /// Namespace of every Redis key kvq uses, so several deployments can share one Redis.
    pub key_prefix: String,
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
}

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

const DEFAULTS: &str = r#"
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
  master_name: mymaster
  min_replicas_ack: 0
  key_prefix: kvq
limits:
  max_value_bytes: 1048576
tasks:
  retention_seconds: 86400
log:
  format: json
"#;

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
                .try_parsing(true)
                .source(Some(kvq_env)),
        );
        let settings: Settings =
            builder.build().and_then(|c| c.try_deserialize()).map_err(|e| ConfigError(e.to_string()))?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let fail = |setting: &str, why: &str| Err(ConfigError(format!("{setting}: {why}")));
        if self.worker.concurrency == 0 {
            return fail("worker.concurrency (KVQ__WORKER__CONCURRENCY)", "must be at least 1");
        }
        if self.worker.max_attempts == 0 {
            return fail("worker.max_attempts (KVQ__WORKER__MAX_ATTEMPTS)", "must be at least 1");
        }
        if self.worker.claim_idle_ms < 10 {
            return fail("worker.claim_idle_ms (KVQ__WORKER__CLAIM_IDLE_MS)", "must be at least 10");
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
        }
        if self.redis.key_prefix.is_empty() || self.redis.key_prefix.contains(char::is_whitespace) {
            return fail("redis.key_prefix (KVQ__REDIS__KEY_PREFIX)", "must be a non-empty word");
        }
        if self.limits.max_value_bytes == 0 || self.limits.max_value_bytes > 512 * 1024 * 1024 {
            return fail("limits.max_value_bytes (KVQ__LIMITS__MAX_VALUE_BYTES)", "must be 1..=536870912");
        }
        if self.tasks.retention_seconds == 0 {
            return fail("tasks.retention_seconds (KVQ__TASKS__RETENTION_SECONDS)", "must be at least 1");
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
            (&[("KVQ__REDIS__MODE", "cluster")], "mode"),
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
    fn unknown_keys_in_the_file_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, "server:\n  bind: \"0.0.0.0:1\"\n  port: 3\n").unwrap();
        let err = Settings::load_from(env(&[("KVQ_CONFIG", path.to_str().unwrap())])).unwrap_err().to_string();
        assert!(err.contains("port"), "{err}");
    }
}
