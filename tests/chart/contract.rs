//! Contract test between the chart and the binaries (chart README "What the chart and the app
//! rely on"): the containers the chart renders for values/dev.yaml are started as real
//! processes, with exactly their env and their mounted config file, against a real local
//! redis-server that requires the password of the rendered Secret. Only addresses are rewritten (Redis host, listen ports on loopback).
//! Every probe path of the rendered manifests is called, then a write (`?wait=5`) and a read.
//! A setting the chart renders that the app does not read (the app rejects unknown keys), or
//! a setting the app reads that the chart does not render, fails here.
//!
//! Needs helm (scripts/chart-tools.sh) and redis-server (apt package redis-server).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::support::chart::*;
use crate::support::TestRedis;
use serde_json::Value;

/// Leaf key paths of a YAML/JSON tree ("redis.url").
fn key_paths(v: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    match v.as_object() {
        Some(map) => {
            for (k, child) in map {
                let p = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                key_paths(child, &p, out);
            }
        }
        None => {
            out.insert(prefix.to_string());
        }
    }
}

/// The app's own list of settings: its built-in defaults document.
fn app_setting_keys() -> BTreeSet<String> {
    let v: Value = serde_yaml_ng::from_str(kvq::config::DEFAULTS).unwrap();
    let mut keys = BTreeSet::new();
    key_paths(&v, "", &mut keys);
    keys
}

/// Settings that come from elsewhere than the config file.
const NOT_IN_CONFIG_FILE: &[&str] = &[
    "redis.password",          // env KVQ__REDIS__PASSWORD from the Secret
    "redis.sentinel_password", // env KVQ__REDIS__SENTINEL_PASSWORD from the Secret
    "worker.consumer_name",    // the pod's HOSTNAME
];

/// Every values file: the rendered config file sets every setting the app has (for its mode)
/// and nothing else, and the app accepts it with the env the containers get.
#[test]
fn rendered_config_matches_the_apps_settings_for_every_values_file() {
    let app_keys = app_setting_keys();
    assert!(app_keys.contains("redis.min_replicas_ack") && app_keys.contains("server.bind"), "{app_keys:?}");
    for f in values_files() {
        let m = render(&[&f], &[]);
        let cfg = m.app_config();
        let mut rendered = BTreeSet::new();
        key_paths(&cfg, "", &mut rendered);
        let sentinel = cfg["redis"]["mode"] == "sentinel";
        let cluster = cfg["redis"]["mode"] == "cluster";
        // Each mode's own settings; the queue is sharded in cluster mode only.
        let mode_specific: &[&str] = if sentinel {
            &["redis.url", "redis.nodes", "tasks.shards"]
        } else if cluster {
            &["redis.url", "redis.sentinels", "redis.master_name"]
        } else {
            &["redis.sentinels", "redis.master_name", "redis.nodes", "tasks.shards"]
        };
        let unknown: Vec<_> = rendered.difference(&app_keys).collect();
        assert!(unknown.is_empty(), "{f}: chart renders settings the app does not have: {unknown:?}");
        let missing: Vec<_> = app_keys
            .iter()
            .filter(|k| {
                !rendered.contains(*k)
                    && !NOT_IN_CONFIG_FILE.contains(&k.as_str())
                    && !mode_specific.contains(&k.as_str())
            })
            .collect();
        assert!(missing.is_empty(), "{f}: app settings the chart does not render: {missing:?}");

        // The app loads it, with the env of both containers (passwords included).
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, m.get("ConfigMap", "kvq-config")["data"]["config.yaml"].as_str().unwrap()).unwrap();
        for component in ["server", "worker"] {
            let d = m.get("Deployment", &format!("kvq-{component}"));
            let pod = &d["spec"]["template"]["spec"];
            let c = &pod["containers"][0];
            let in_pod = config_path_in_pod(pod, c);
            let has_secret = m.find("Secret", "kvq-redis-auth").is_some();
            let env: Vec<(String, String)> = if has_secret {
                container_env(&m, c, (&in_pod, &path))
            } else {
                // external mode: the Secret is the user's; stand in for it.
                c["env"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| {
                        let name = e["name"].as_str().unwrap().to_string();
                        let v = if name == "KVQ_CONFIG" {
                            path.to_str().unwrap().to_string()
                        } else {
                            e["value"].as_str().unwrap_or("pw").to_string()
                        };
                        (name, v)
                    })
                    .collect()
            };
            let s = kvq::config::Settings::load_from(env.clone())
                .unwrap_or_else(|e| panic!("{f} {component}: the app rejects the rendered config: {e}"));
            // The app reads what the chart meant.
            assert_eq!(s.redis.min_replicas_ack as u64, cfg["redis"]["min_replicas_ack"].as_u64().unwrap(), "{f}");
            assert_eq!(s.redis.key_prefix, cfg["redis"]["key_prefix"].as_str().unwrap(), "{f}");
            assert_eq!(s.worker.concurrency as u64, cfg["worker"]["concurrency"].as_u64().unwrap(), "{f}");
            if cluster {
                assert_eq!(s.redis.nodes, strings(&cfg["redis"]["nodes"]), "{f}");
                assert_eq!(s.tasks.shards, cfg["tasks"]["shards"].as_u64().unwrap(), "{f}");
            }
            if sentinel {
                let want = strings(&cfg["redis"]["sentinels"]);
                assert_eq!(s.redis.sentinels, want, "{f}");
                assert_eq!(s.redis.master_name, cfg["redis"]["master_name"].as_str().unwrap());
                assert!(s.redis.sentinel_password.is_some(), "{f} {component}: sentinel password reaches the app");
            }
            if has_secret {
                let pw = env.iter().find(|(k, _)| k == "KVQ__REDIS__PASSWORD").expect("password env").1.clone();
                assert_eq!(s.redis.password.as_ref().map(|p| p.expose().to_string()), Some(pw), "{f}");
            }
        }
    }
}

/// values/dev.yaml's server and worker as real processes against a real Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_containers_run_as_rendered_against_real_redis() {
    let m = render(&["values/dev.yaml"], &[]);
    let dir = tempfile::tempdir().unwrap();
    let secret = m.get("Secret", "kvq-redis-auth");
    let password = b64decode(secret["data"]["redis-password"].as_str().unwrap());
    // Like the chart's standalone Redis: it requires the rendered password.
    let redis = TestRedis::builder().password(&password).start();
    let redis_port = redis.port;

    let mut app = run_app_containers(&m, dir.path(), |cfg| {
        assert_eq!(cfg["redis"]["url"].as_str(), Some("redis://kvq-redis:6379"), "dev uses the chart's Redis Service");
        cfg["redis"]["url"] = format!("redis://127.0.0.1:{redis_port}").into();
    });
    m.get("Service", "kvq-redis");
    assert_eq!(app.probes.len(), 8, "3 probes + metrics per container: {:?}", app.probes);
    app.probes_pass(Duration::from_secs(30)).await;
    app.http(Duration::from_secs(15)).write_read_delete("chart-contract-key").await;

    // The data really went to the password-protected Redis under the rendered key prefix.
    assert_eq!(redis.url(), format!("redis://:{password}@127.0.0.1:{redis_port}"));
    let stream_len = redis.xlen("kvq:tasks");
    assert!(stream_len >= 2, "tasks went through the kvq:tasks stream (XLEN {stream_len})");

    // Both drain and exit on SIGTERM within the rendered grace periods.
    for (p, component) in app.procs.iter_mut().zip(["server", "worker"]) {
        let grace = m.get("Deployment", &format!("kvq-{component}"))["spec"]["template"]["spec"]
            ["terminationGracePeriodSeconds"]
            .as_u64()
            .unwrap();
        p.signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(grace);
        let status = loop {
            if let Some(status) = p.try_wait() {
                break status;
            }
            assert!(Instant::now() < deadline, "{} did not stop within {grace}s of SIGTERM", p.name);
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(status.code(), Some(0), "{} exits 0 after a SIGTERM drain ({status})", p.name);
    }
}
