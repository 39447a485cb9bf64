//! The chart's alerts against Prometheus's own tools: the rules as the chart renders them,
//! `promtool`, and a real Prometheus server on loopback (Debian's `prometheus` package, which
//! scripts/install-deps.sh installs). A missing tool fails the test, never skips it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::chart::{helm_template, parse_docs, NO_CLUSTER, RELEASE};
use super::process::{eventually, free_port, ChildProcess};

/// A binary of Debian's `prometheus` package; panics (fails the test) when it is not installed.
pub fn prometheus_tool(bin: &str) -> PathBuf {
    let out = Command::new("sh").arg("-c").arg(format!("command -v {bin}")).output().unwrap();
    assert!(
        out.status.success(),
        "`{bin}` is not installed: run scripts/install-deps.sh (it installs Debian's prometheus package)"
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// The `spec.groups` of the PrometheusRule the chart renders with `prometheusRule.enabled` (and
/// `force`, as no cluster answers here) plus `set`.
pub fn rendered_rule_groups(set: &[&str]) -> Value {
    let mut all = vec!["prometheusRule.enabled=true", "prometheusRule.force=true"];
    all.extend_from_slice(set);
    let yaml = helm_template(RELEASE, &super::chart::chart_dir(), &NO_CLUSTER, &[], &all)
        .unwrap_or_else(|e| panic!("helm template failed:\n{e}"));
    let rule = parse_docs(&yaml)
        .into_iter()
        .find(|d| d["kind"] == "PrometheusRule")
        .expect("a PrometheusRule with prometheusRule.enabled and force");
    rule["spec"]["groups"].clone()
}

/// Every alerting rule of `groups`.
pub fn alert_rules(groups: &Value) -> Vec<&Value> {
    groups
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .filter(|r| r["alert"].is_string())
        .collect()
}

/// Writes `groups` as a Prometheus rule file.
pub fn write_rule_file(path: &Path, groups: &Value) {
    let yaml = serde_yaml_ng::to_string(&serde_json::json!({ "groups": groups })).unwrap();
    std::fs::write(path, yaml).unwrap();
}

/// Runs `promtool` with `args` in `dir`; returns its output, or panics with it on failure.
pub fn promtool(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(prometheus_tool("promtool")).current_dir(dir).args(args).output().expect("run promtool");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

/// A Prometheus server on 127.0.0.1 (a free port), its storage in a temporary directory,
/// scraping `jobs` (job name, `host:port` targets) every second with the label `namespace` the
/// chart's alerts select, and evaluating `rule_file` every second. Killed on drop.
pub struct TestPrometheus {
    pub port: u16,
    _process: ChildProcess,
    _dir: tempfile::TempDir,
}

impl TestPrometheus {
    pub fn start(jobs: &[(&str, Vec<String>)], rule_file: &Path) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let rules = dir.path().join("rules.yaml");
        std::fs::copy(rule_file, &rules).unwrap();
        let config = serde_json::json!({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "900ms"},
            "rule_files": [rules],
            "scrape_configs": jobs.iter().map(|(job, targets)| serde_json::json!({
                "job_name": job,
                "static_configs": [{"targets": targets, "labels": {"namespace": super::chart::NAMESPACE}}],
            })).collect::<Vec<_>>(),
        });
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, serde_yaml_ng::to_string(&config).unwrap()).unwrap();
        let port = free_port();
        let log = dir.path().join("prometheus.log");
        let mut cmd = Command::new(prometheus_tool("prometheus"));
        cmd.arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        let process = ChildProcess::spawn("prometheus", &mut cmd).with_log(log);
        Self { port, _process: process, _dir: dir }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Waits until Prometheus answers and has loaded the rules.
    pub async fn wait_ready(&self, timeout: Duration) {
        eventually(timeout, "prometheus ready with its rules", || async {
            let v: Value = reqwest::get(self.url("/api/v1/rules")).await.ok()?.json().await.ok()?;
            (v["data"]["groups"].as_array().is_some_and(|g| !g.is_empty())).then_some(())
        })
        .await
    }

    /// The alerts Prometheus holds now (pending and firing), as its API returns them.
    pub async fn alerts(&self) -> Vec<Value> {
        let v: Value = reqwest::get(self.url("/api/v1/alerts")).await.unwrap().json().await.unwrap();
        v["data"]["alerts"].as_array().cloned().unwrap_or_default()
    }

    /// Names of the alerts firing now.
    pub async fn firing_names(&self) -> std::collections::BTreeSet<String> {
        self.alerts()
            .await
            .into_iter()
            .filter(|a| a["state"] == "firing")
            .filter_map(|a| a["labels"]["alertname"].as_str().map(String::from))
            .collect()
    }

    /// The alert named `name` when it is firing.
    pub async fn firing(&self, name: &str) -> Option<Value> {
        self.alerts().await.into_iter().find(|a| a["labels"]["alertname"] == name && a["state"] == "firing")
    }

    /// The result vector of an instant query.
    pub async fn query(&self, promql: &str) -> Vec<Value> {
        let v: Value = reqwest::Client::new()
            .get(self.url("/api/v1/query"))
            .query(&[("query", promql)])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }
}
