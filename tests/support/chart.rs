//! Rendering the Helm chart for tests: `helm template` of helm/kvq with a values file, parsed
//! into JSON values. helm comes from `$HELM` or `.tools/bin/helm` (installed by
//! scripts/chart-tools.sh); without it the tests fail with a message saying so.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::http::HttpClient;
use super::process::{free_port, ChildProcess};

pub const RELEASE: &str = "kvq";
pub const NAMESPACE: &str = "kvq";

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn chart_dir() -> PathBuf {
    repo_root().join("helm/kvq")
}

/// The helm binary: `$HELM`, else `.tools/bin/helm`. Panics (fails the test) when missing.
pub fn helm() -> PathBuf {
    let path = std::env::var_os("HELM").map(PathBuf::from).unwrap_or_else(|| repo_root().join(".tools/bin/helm"));
    assert!(
        path.is_file(),
        "helm not found at {} (set HELM or run `bash scripts/chart-tools.sh`, which installs it into .tools/bin)",
        path.display()
    );
    path
}

/// The environment values files and the ct scenarios, relative to the repository root.
pub fn values_files() -> Vec<String> {
    let mut out = Vec::new();
    for dir in ["values", "helm/kvq/ci"] {
        let mut names: Vec<String> = std::fs::read_dir(repo_root().join(dir))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".yaml"))
            .map(|n| format!("{dir}/{n}"))
            .collect();
        names.sort();
        out.extend(names);
    }
    out
}

/// Lets the chart generate passwords in a render without a cluster, as `helm install` does.
pub const GENERATE_WITHOUT_CLUSTER: &str = "redis.auth.generateWithoutCluster=true";
/// The same for the generated API tokens.
pub const GENERATE_TOKENS_WITHOUT_CLUSTER: &str = "auth.generateWithoutCluster=true";
/// Both: what `helm install` may generate, for a render without a cluster.
pub const NO_CLUSTER: [&str; 2] = [GENERATE_WITHOUT_CLUSTER, GENERATE_TOKENS_WITHOUT_CLUSTER];

/// `helm template <release>` output (stdout) or the error (stderr). `defaults` are `--set`s given
/// before the values files (which can override them), `set` those given after.
pub fn helm_template(
    release: &str,
    chart: &Path,
    defaults: &[&str],
    values: &[&str],
    set: &[&str],
) -> Result<String, String> {
    let mut cmd = Command::new(helm());
    cmd.current_dir(repo_root()).args(["template", release]).arg(chart).args(["--namespace", NAMESPACE]);
    for d in defaults {
        cmd.arg("--set").arg(d);
    }
    for v in values {
        cmd.arg("-f").arg(v);
    }
    for s in set {
        cmd.arg("--set").arg(s);
    }
    stdout_or_stderr(cmd)
}

/// Runs a helm command: its stdout when it succeeds, else its stderr.
fn stdout_or_stderr(mut cmd: Command) -> Result<String, String> {
    let out = cmd.output().expect("run helm");
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// `helm template` of the chart with extra command-line arguments (e.g. `--api-versions`) and
/// `--set`s.
pub fn helm_template_args(args: &[&str], set: &[&str]) -> Result<String, String> {
    let mut cmd = Command::new(helm());
    cmd.current_dir(repo_root()).args(["template", RELEASE]).arg(chart_dir()).args(["--namespace", NAMESPACE]);
    cmd.args(args);
    for d in NO_CLUSTER {
        cmd.arg("--set").arg(d);
    }
    for s in set {
        cmd.arg("--set").arg(s);
    }
    stdout_or_stderr(cmd)
}

/// The render that stands for `helm install` on a cluster: the chart may generate passwords
/// and tokens that `lookup` would keep (chart/values.rs also renders without).
pub fn try_render_in(chart: &Path, values: &[&str], set: &[&str]) -> Result<String, String> {
    helm_template(RELEASE, chart, &NO_CLUSTER, values, set)
}

/// Parses a multi-document YAML stream (empty documents dropped).
pub fn parse_docs(yaml: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|d| Value::deserialize(d).expect("rendered YAML parses"))
        .filter(|v| !v.is_null())
        .collect()
}

/// Renders the chart with these values files and `--set`s; panics with helm's message on error.
pub fn render(values: &[&str], set: &[&str]) -> Manifests {
    match try_render_in(&chart_dir(), values, set) {
        Ok(s) => Manifests(parse_docs(&s)),
        Err(e) => panic!("helm template {values:?} {set:?} failed:\n{e}"),
    }
}

/// The rendered objects of one release.
#[derive(Debug, Clone)]
pub struct Manifests(pub Vec<Value>);

impl Manifests {
    pub fn of_kind(&self, kind: &str) -> Vec<&Value> {
        self.0.iter().filter(|o| o["kind"] == kind).collect()
    }

    pub fn get(&self, kind: &str, name: &str) -> &Value {
        self.0
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} named {name}; have {:?}", self.names()))
    }

    pub fn find(&self, kind: &str, name: &str) -> Option<&Value> {
        self.0.iter().find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
    }

    pub fn names(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|o| format!("{}/{}", o["kind"].as_str().unwrap_or("?"), o["metadata"]["name"].as_str().unwrap_or("?")))
            .collect()
    }

    /// Kind -> count, sorted by kind.
    pub fn kind_counts(&self) -> Vec<(String, usize)> {
        let mut m = std::collections::BTreeMap::new();
        for o in &self.0 {
            *m.entry(o["kind"].as_str().unwrap().to_string()).or_insert(0) += 1;
        }
        m.into_iter().collect()
    }

    /// (object, pod template metadata, pod spec) of every workload and bare pod.
    pub fn pod_specs(&self) -> Vec<PodRef<'_>> {
        self.0
            .iter()
            .filter_map(|o| match o["kind"].as_str()? {
                "Deployment" | "StatefulSet" => Some(PodRef {
                    owner: o,
                    metadata: &o["spec"]["template"]["metadata"],
                    spec: &o["spec"]["template"]["spec"],
                }),
                "Pod" => Some(PodRef { owner: o, metadata: &o["metadata"], spec: &o["spec"] }),
                _ => None,
            })
            .collect()
    }

    /// The app config file rendered into the ConfigMap.
    pub fn app_config(&self) -> Value {
        let cm = self.get("ConfigMap", &format!("{RELEASE}-config"));
        let text = cm["data"]["config.yaml"].as_str().expect("config.yaml in the ConfigMap");
        serde_yaml_ng::from_str(text).expect("config.yaml parses")
    }
}

pub struct PodRef<'a> {
    pub owner: &'a Value,
    pub metadata: &'a Value,
    pub spec: &'a Value,
}

impl PodRef<'_> {
    pub fn name(&self) -> String {
        format!("{}/{}", self.owner["kind"].as_str().unwrap(), self.owner["metadata"]["name"].as_str().unwrap())
    }
    pub fn containers(&self) -> Vec<&Value> {
        let mut v: Vec<&Value> = Vec::new();
        for key in ["initContainers", "containers"] {
            if let Some(a) = self.spec[key].as_array() {
                v.extend(a.iter());
            }
        }
        v
    }
    pub fn container(&self, name: &str) -> &Value {
        self.containers()
            .into_iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("{} has no container {name}", self.name()))
    }
    pub fn labels(&self) -> &Value {
        &self.metadata["labels"]
    }
}

/// Whether every `matchLabels` pair is in `labels`.
pub fn selector_matches(selector: &Value, labels: &Value) -> bool {
    let Some(ml) = selector["matchLabels"].as_object() else { return false };
    assert!(selector.get("matchExpressions").is_none(), "matchExpressions not handled by this test helper");
    !ml.is_empty() && ml.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The value of env var `name` of a container (plain `value` only).
pub fn env_value<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    container["env"].as_array()?.iter().find(|e| e["name"] == name)?["value"].as_str()
}

// ---- Running the rendered app containers as local processes (contract tests) ----

/// A JSON array of strings as a Vec.
pub fn strings(v: &Value) -> Vec<String> {
    v.as_array().unwrap_or_else(|| panic!("an array: {v}")).iter().map(|s| s.as_str().unwrap().to_string()).collect()
}

pub fn b64decode(s: &str) -> String {
    let table = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let (mut bits, mut n, mut out) = (0u32, 0, Vec::new());
    for c in s.bytes().filter(|&c| c != b'=') {
        bits = (bits << 6) | table.iter().position(|&t| t == c).expect("base64") as u32;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// Where the pod sees the app config file: mountPath of the ConfigMap volume + its key.
pub fn config_path_in_pod(pod: &Value, c: &Value) -> String {
    let vol = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["configMap"]["name"] == format!("{RELEASE}-config"))
        .expect("config volume");
    let mount =
        c["volumeMounts"].as_array().unwrap().iter().find(|vm| vm["name"] == vol["name"]).expect("config mount");
    format!("{}/config.yaml", mount["mountPath"].as_str().unwrap())
}

/// The env of a rendered container, resolved as the kubelet would: plain values, Secret keys
/// from the rendered Secret; anything else fails the test (the contract has nothing else).
/// `config` maps the config file path inside the pod to the file written for the test.
pub fn container_env(m: &Manifests, c: &Value, config: (&str, &Path)) -> Vec<(String, String)> {
    let mut env = Vec::new();
    for e in c["env"].as_array().expect("container env") {
        let name = e["name"].as_str().unwrap().to_string();
        let value = if let Some(v) = e["value"].as_str() {
            if name == "KVQ_CONFIG" {
                assert_eq!(v, config.0, "KVQ_CONFIG points at the mounted config file");
                config.1.to_str().unwrap().to_string()
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

/// The rendered server and worker containers running as the real binaries.
pub struct RunningApp {
    pub procs: Vec<ChildProcess>,
    /// (what, path, local port) of every HTTP probe, plus /metrics of both.
    pub probes: Vec<(String, String, u16)>,
    pub server_port: u16,
    /// The chart's generated admin token when auth is on.
    pub token: Option<String>,
}

/// Starts kvq-server and kvq-worker from the rendered Deployments: exactly their env (Secret
/// values resolved) and their config file, where only the listen addresses (free loopback
/// ports) and, through `rewrite_redis`, the Redis addresses are changed.
pub fn run_app_containers(
    m: &Manifests,
    dir: &Path,
    rewrite_redis: impl FnOnce(&mut serde_yaml_ng::Value),
) -> RunningApp {
    let text = m.get("ConfigMap", &format!("{RELEASE}-config"))["data"]["config.yaml"].as_str().unwrap();
    let mut cfg: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).unwrap();
    rewrite_redis(&mut cfg);
    let mut port_map: Vec<(u64, u16)> = Vec::new(); // containerPort -> local port
    for key in ["server", "worker"] {
        let bind = cfg[key]["bind"].as_str().unwrap().to_string();
        let container_port: u64 = bind.rsplit(':').next().unwrap().parse().unwrap();
        let local = free_port();
        port_map.push((container_port, local));
        cfg[key]["bind"] = format!("127.0.0.1:{local}").into();
    }
    let config_path = dir.join("config.yaml");
    std::fs::write(&config_path, serde_yaml_ng::to_string(&cfg).unwrap()).unwrap();

    let mut procs = Vec::new();
    let mut probes = Vec::new();
    for (component, exe) in [("server", env!("CARGO_BIN_EXE_kvq-server")), ("worker", env!("CARGO_BIN_EXE_kvq-worker"))]
    {
        let d = m.get("Deployment", &format!("{RELEASE}-{component}"));
        let pod = &d["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        let image = c["image"].as_str().unwrap();
        assert!(image.contains(&format!("kvq-{component}")), "{component} runs the kvq-{component} image: {image}");
        let mut env = container_env(m, c, (&config_path_in_pod(pod, c), &config_path));
        // Secret volumes (the server's token files) as local files, their paths mapped.
        for (in_pod, local) in write_secret_volumes(m, pod, c, &dir.join(component)) {
            for (_, v) in env.iter_mut() {
                *v = v.replace(&in_pod, local.to_str().unwrap());
            }
        }
        let log = dir.join(format!("{component}.log"));
        let mut cmd = Command::new(exe);
        cmd.env_clear()
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("HOSTNAME", format!("{RELEASE}-{component}-contract-0")) // set by Kubernetes
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        procs.push(ChildProcess::spawn(&format!("kvq-{component}"), &mut cmd).with_log(log));

        let ports = c["ports"].as_array().unwrap();
        let local_of = |cp: u64, what: &str| {
            port_map
                .iter()
                .find(|(p, _)| *p == cp)
                .unwrap_or_else(|| panic!("{what}: port {cp} is not a port the app binds ({port_map:?})"))
                .1
        };
        for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
            let h = &c[probe]["httpGet"];
            let cp = ports
                .iter()
                .find(|p| p["name"] == h["port"] || p["containerPort"] == h["port"])
                .expect("probe port declared")["containerPort"]
                .as_u64()
                .unwrap();
            let what = format!("{component} {probe}");
            probes.push((what.clone(), h["path"].as_str().unwrap().to_string(), local_of(cp, &what)));
        }
        // Prometheus scrapes /metrics on the http port (ServiceMonitor).
        let http = ports.iter().find(|p| p["name"] == "http").unwrap()["containerPort"].as_u64().unwrap();
        let what = format!("{component} metrics");
        probes.push((what.clone(), "/metrics".into(), local_of(http, &what)));
    }
    // With auth on, the chart's generated admin token (the client of these tests writes anywhere).
    let token =
        m.find("Secret", &format!("{RELEASE}-auth")).and_then(|s| s["data"]["admin-token"].as_str()).map(b64decode);
    RunningApp { procs, probes, server_port: port_map[0].1, token }
}

/// Writes the rendered Secrets mounted into container `c` (whole-Secret volumes with `items`)
/// below `dir`: (mount path in the pod, local directory) of each.
pub fn write_secret_volumes(m: &Manifests, pod: &Value, c: &Value, dir: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for vm in c["volumeMounts"].as_array().into_iter().flatten() {
        let Some(vol) = pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == vm["name"]) else { continue };
        let Some(secret_name) = vol["secret"]["secretName"].as_str() else { continue };
        let Some(secret) = m.find("Secret", secret_name) else { continue }; // the user's own
        assert!(vm.get("subPath").is_none(), "{secret_name}: a subPath mount would never be updated");
        let local = dir.join(vm["name"].as_str().unwrap());
        std::fs::create_dir_all(&local).unwrap();
        for item in vol["secret"]["items"].as_array().unwrap() {
            let data = secret["data"][item["key"].as_str().unwrap()].as_str().expect("item key in the Secret");
            std::fs::write(local.join(item["path"].as_str().unwrap()), b64decode(data)).unwrap();
        }
        out.push((vm["mountPath"].as_str().unwrap().to_string(), local));
    }
    out
}

impl RunningApp {
    /// A client for the server's API port.
    pub fn http(&self, timeout: Duration) -> HttpClient {
        let http = HttpClient::new(&format!("http://127.0.0.1:{}", self.server_port), timeout);
        match &self.token {
            Some(t) => HttpClient::with_client(&http.base, super::auth::bearer_client_with_timeout(t, timeout)),
            None => http,
        }
    }

    /// Calls every probe path until it answers 200 (within `timeout`).
    pub async fn probes_pass(&mut self, timeout: Duration) {
        for (what, path, port) in self.probes.clone() {
            let http = HttpClient::new(&format!("http://127.0.0.1:{port}"), Duration::from_secs(10));
            let deadline = std::time::Instant::now() + timeout;
            loop {
                for p in self.procs.iter_mut() {
                    p.assert_running();
                }
                match http.try_get_text(&path).await {
                    Some((200, body)) => {
                        if path == "/metrics" {
                            assert!(body.contains("# TYPE"), "{what}: Prometheus text expected, got {body:.200}");
                        }
                        break;
                    }
                    other => assert!(
                        std::time::Instant::now() < deadline,
                        "{what}: GET {} never answered 200 (last: {other:?})",
                        http.url(&path)
                    ),
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Runs scripts/stamp-release.sh (the release workflow's chart packaging) with these arguments
/// and the test's helm; returns (success, stdout, stderr).
pub fn stamp_release(args: &[&str]) -> (bool, String, String) {
    let out = Command::new("bash")
        .arg(repo_root().join("scripts/stamp-release.sh"))
        .args(args)
        .env("HELM", helm())
        .output()
        .expect("run scripts/stamp-release.sh");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The Grafana dashboard JSON of the ConfigMap the chart renders with `grafanaDashboard.enabled`
/// plus `set`.
pub fn rendered_dashboard(set: &[&str]) -> Value {
    let mut all = vec!["grafanaDashboard.enabled=true"];
    all.extend_from_slice(set);
    let m = render(&[], &all);
    let text =
        m.get("ConfigMap", &format!("{RELEASE}-dashboard"))["data"]["kvq.json"].as_str().expect("kvq.json").to_string();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("the dashboard is no JSON: {e}"))
}

/// Every PromQL expression of a dashboard: panel queries, annotation queries, variable queries.
pub fn dashboard_exprs(dashboard: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.extend(t["expr"].as_str().map(String::from));
        }
    }
    for a in dashboard["annotations"]["list"].as_array().into_iter().flatten() {
        out.extend(a["expr"].as_str().map(String::from));
    }
    for v in dashboard["templating"]["list"].as_array().into_iter().flatten() {
        out.extend(v["query"]["query"].as_str().map(String::from));
    }
    out
}
