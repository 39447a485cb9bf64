//! Rendering the Helm chart for tests: `helm template` of helm/kvq with a values file, parsed
//! into JSON values. helm comes from `$HELM` or `.tools/bin/helm` (installed by
//! scripts/chart-tools.sh); without it the tests fail with a message saying so.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

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

/// `helm template` output (stdout) or the error (stderr).
pub fn try_render_in(chart: &Path, values: &[&str], set: &[&str]) -> Result<String, String> {
    let mut cmd = Command::new(helm());
    cmd.current_dir(repo_root()).args(["template", RELEASE]).arg(chart).args(["--namespace", NAMESPACE]);
    for v in values {
        cmd.arg("-f").arg(v);
    }
    for s in set {
        cmd.arg("--set").arg(s);
    }
    let out = cmd.output().expect("run helm");
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
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
