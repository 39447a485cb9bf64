//! Contract test between the chart and the binaries (issue 3, step 5): the containers the
//! chart renders for values/dev.yaml are started as real processes, with exactly their env and
//! their mounted config file, against a real local redis-server that requires the password of
//! the rendered Secret. Only addresses are rewritten (Redis host, listen ports on loopback).
//! Every probe path of the rendered manifests is called, then a write (`?wait=5`) and a read.
//! A setting the chart renders that the app does not read (the app rejects unknown keys), or
//! a setting the app reads that the chart does not render, fails here.
//!
//! Needs helm (scripts/chart-tools.sh) and redis-server (apt package redis-server).

mod support_chart;

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support_chart::*;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A process killed when the test ends.
struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited with {status}:\n{}", self.name, std::fs::read_to_string(&self.log).unwrap_or_default());
        }
    }
}

fn which(bin: &str) -> PathBuf {
    let out = Command::new("sh").arg("-c").arg(format!("command -v {bin}")).output().unwrap();
    assert!(out.status.success(), "`{bin}` is not installed (apt-get install redis-server)");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// A redis-server on a free loopback port requiring `password`, like the chart's standalone Redis.
fn start_redis(dir: &Path, password: &str) -> (Proc, u16) {
    let port = free_port();
    let log = dir.join("redis.log");
    let child = Command::new(which("redis-server"))
        .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--dir", dir.to_str().unwrap()])
        .args(["--appendonly", "yes", "--save", "", "--requirepass", password, "--logfile", log.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn redis-server");
    let mut p = Proc { name: "redis-server".into(), child, log };
    let deadline = Instant::now() + Duration::from_secs(10);
    let url = format!("redis://127.0.0.1:{port}");
    loop {
        p.assert_running();
        let ok = redis::Client::open(url.as_str())
            .and_then(|c| c.get_connection())
            .and_then(|mut c| redis::cmd("AUTH").arg(password).query::<String>(&mut c));
        if ok.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    (p, port)
}

fn b64decode(s: &str) -> String {
    let table = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.bytes().filter(|&c| c != b'=') {
        let v = table.iter().position(|&t| t == c).expect("base64") as u32;
        bits = (bits << 6) | v;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// The env of a rendered container, resolved as the kubelet would: plain values, Secret keys
/// from the rendered Secret; anything else fails the test (the contract has nothing else).
fn container_env(m: &Manifests, c: &Value, config_mount: (&str, &Path)) -> Vec<(String, String)> {
    let mut env = Vec::new();
    for e in c["env"].as_array().expect("container env") {
        let name = e["name"].as_str().unwrap().to_string();
        let value = if let Some(v) = e["value"].as_str() {
            // The config file path inside the pod maps to the file written for this test.
            if name == "KVQ_CONFIG" {
                assert_eq!(v, config_mount.0, "KVQ_CONFIG points at the mounted config file");
                config_mount.1.to_str().unwrap().to_string()
            } else {
                v.to_string()
            }
        } else if let Some(r) = e["valueFrom"].get("secretKeyRef") {
            let secret = m.get("Secret", r["name"].as_str().unwrap());
            let data = secret["data"][r["key"].as_str().unwrap()]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: key {} not in Secret", r["key"]));
            b64decode(data)
        } else {
            panic!("env {name}: unsupported source {e}");
        };
        env.push((name, value));
    }
    env
}

/// Where the pod sees the config file: mountPath of the ConfigMap volume + its key.
fn config_path_in_pod(pod: &Value, c: &Value) -> String {
    let vol = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["configMap"]["name"] == "kvq-config")
        .expect("config volume");
    let mount =
        c["volumeMounts"].as_array().unwrap().iter().find(|vm| vm["name"] == vol["name"]).expect("config mount");
    format!("{}/config.yaml", mount["mountPath"].as_str().unwrap())
}

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

/// The app's own list of settings: the DEFAULTS document in src/config.rs.
fn app_setting_keys() -> BTreeSet<String> {
    let src = std::fs::read_to_string(repo_root().join("src/config.rs")).unwrap();
    let start = src.find("const DEFAULTS: &str = r#\"").expect("src/config.rs has `const DEFAULTS: &str = r#\"...\"#`");
    let rest = &src[start + "const DEFAULTS: &str = r#\"".len()..];
    let yaml = &rest[..rest.find("\"#;").unwrap()];
    let v: Value = serde_yaml_ng::from_str(yaml).unwrap();
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
        let mode_specific: &[&str] = if sentinel { &["redis.url"] } else { &["redis.sentinels", "redis.master_name"] };
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
            let has_secret = !m.of_kind("Secret").is_empty();
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
            if sentinel {
                let want: Vec<String> = cfg["redis"]["sentinels"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap().to_string())
                    .collect();
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

async fn get(client: &reqwest::Client, url: &str) -> Option<(u16, String)> {
    let r = client.get(url).send().await.ok()?;
    let status = r.status().as_u16();
    Some((status, r.text().await.unwrap_or_default()))
}

/// values/dev.yaml's server and worker as real processes against a real Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_containers_run_as_rendered_against_real_redis() {
    let m = render(&["values/dev.yaml"], &[]);
    let dir = tempfile::tempdir().unwrap();
    let secret = m.get("Secret", "kvq-redis-auth");
    let password = b64decode(secret["data"]["redis-password"].as_str().unwrap());
    let (_redis, redis_port) = start_redis(dir.path(), &password);

    // The config file as mounted, with only addresses rewritten.
    let mut cfg: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(m.get("ConfigMap", "kvq-config")["data"]["config.yaml"].as_str().unwrap()).unwrap();
    let url = cfg["redis"]["url"].as_str().unwrap().to_string();
    assert_eq!(url, "redis://kvq-redis:6379", "dev talks to the chart's standalone Redis Service");
    m.get("Service", "kvq-redis");
    cfg["redis"]["url"] = format!("redis://127.0.0.1:{redis_port}").into();
    let mut port_map: Vec<(u64, u16)> = Vec::new(); // containerPort -> local port
    for key in ["server", "worker"] {
        let bind = cfg[key]["bind"].as_str().unwrap().to_string();
        let container_port: u64 = bind.rsplit(':').next().unwrap().parse().unwrap();
        let local = free_port();
        port_map.push((container_port, local));
        cfg[key]["bind"] = format!("127.0.0.1:{local}").into();
    }
    let config_path = dir.path().join("config.yaml");
    std::fs::write(&config_path, serde_yaml_ng::to_string(&cfg).unwrap()).unwrap();

    // Start both containers' binaries with exactly their env.
    let mut procs = Vec::new();
    let mut probes: Vec<(String, String, u16)> = Vec::new(); // (what, path, local port)
    for (component, exe) in [("server", env!("CARGO_BIN_EXE_kvq-server")), ("worker", env!("CARGO_BIN_EXE_kvq-worker"))]
    {
        let d = m.get("Deployment", &format!("kvq-{component}"));
        let pod = &d["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        let image = c["image"].as_str().unwrap();
        assert!(image.starts_with(&format!("kvq-{component}:")), "{component} runs the kvq-{component} image: {image}");
        let env = container_env(&m, c, (&config_path_in_pod(pod, c), &config_path));
        let log = dir.path().join(format!("{component}.log"));
        let child = Command::new(exe)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("HOSTNAME", format!("kvq-{component}-contract-0")) // set by Kubernetes in a pod
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("start {exe}: {e}"));
        procs.push(Proc { name: format!("kvq-{component}"), child, log });

        let ports = c["ports"].as_array().unwrap();
        for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
            let h = &c[probe]["httpGet"];
            let port_ref = &h["port"];
            let cp = ports
                .iter()
                .find(|p| &p["name"] == port_ref || &p["containerPort"] == port_ref)
                .expect("probe port declared")["containerPort"]
                .as_u64()
                .unwrap();
            let local = port_map
                .iter()
                .find(|(p, _)| *p == cp)
                .unwrap_or_else(|| {
                    panic!("{component} {probe}: port {cp} is not a port the app binds (config: {port_map:?})")
                })
                .1;
            probes.push((format!("{component} {probe}"), h["path"].as_str().unwrap().to_string(), local));
        }
        // Prometheus scrapes /metrics on the http port (ServiceMonitor).
        let http = ports.iter().find(|p| p["name"] == "http").unwrap()["containerPort"].as_u64().unwrap();
        probes.push((
            format!("{component} metrics"),
            "/metrics".into(),
            port_map.iter().find(|(p, _)| *p == http).unwrap().1,
        ));
    }

    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    for (what, path, port) in &probes {
        let url = format!("http://127.0.0.1:{port}{path}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            for p in procs.iter_mut() {
                p.assert_running();
            }
            match get(&client, &url).await {
                Some((200, body)) => {
                    if path == "/metrics" {
                        assert!(body.contains("# TYPE"), "{what}: Prometheus text expected, got {body:.200}");
                    }
                    break;
                }
                other => assert!(Instant::now() < deadline, "{what}: GET {url} never answered 200 (last: {other:?})"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert_eq!(probes.len(), 8, "3 probes + metrics per container: {probes:?}");

    // A write with ?wait, a read, a delete: through the real worker and Redis.
    let server_port = port_map[0].1;
    let base = format!("http://127.0.0.1:{server_port}");
    let key = "chart-contract-key";
    let r = client
        .put(format!("{base}/v1/keys/{key}?wait=5"))
        .header("content-type", "application/json")
        .body(json!({ "value": "written through the rendered chart" }).to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "PUT ?wait=5: {body}");
    assert_eq!(body["status"], "applied", "{body}");
    let (status, text) = get(&client, &format!("{base}/v1/keys/{key}")).await.unwrap();
    assert_eq!(status, 200, "{text}");
    let got: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(got["value"], "written through the rendered chart");
    assert_eq!(got["key"], key);
    let r = client.delete(format!("{base}/v1/keys/{key}?wait=5")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (status, _) = get(&client, &format!("{base}/v1/keys/{key}")).await.unwrap();
    assert_eq!(status, 404);

    // The data really went to the password-protected Redis under the rendered key prefix.
    let mut conn =
        redis::Client::open(format!("redis://:{password}@127.0.0.1:{redis_port}")).unwrap().get_connection().unwrap();
    let stream_len: u64 = redis::cmd("XLEN").arg("kvq:tasks").query(&mut conn).unwrap();
    assert!(stream_len >= 2, "tasks went through the kvq:tasks stream (XLEN {stream_len})");

    // Both drain and exit on SIGTERM within the rendered grace periods.
    for (p, component) in procs.iter_mut().zip(["server", "worker"]) {
        let grace = m.get("Deployment", &format!("kvq-{component}"))["spec"]["template"]["spec"]
            ["terminationGracePeriodSeconds"]
            .as_u64()
            .unwrap();
        let _ = Command::new("kill").args(["-TERM", &p.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(grace);
        loop {
            if let Ok(Some(_)) = p.child.try_wait() {
                break;
            }
            assert!(Instant::now() < deadline, "{} did not stop within {grace}s of SIGTERM", p.name);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
