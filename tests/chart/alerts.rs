//! The chart's PrometheusRule: rendered only where it can be applied, valid for Prometheus
//! (`promtool check rules`), every alert unit-tested firing and not firing (`promtool test
//! rules` with tests/chart/alerts/kvq_alerts_test.yaml), and every alert documented.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::support::chart::*;
use crate::support::prometheus::*;

const UNIT_TESTS: &str = "tests/chart/alerts/kvq_alerts_test.yaml";
const RUNBOOK: &str = "docs/runbook.md";

fn prometheus_rules(set: &[&str], api_versions: &[&str]) -> Vec<Value> {
    let mut args = vec![];
    for api in api_versions {
        args.push(format!("--api-versions={api}"));
    }
    let yaml = helm_template_args(&args.iter().map(String::as_str).collect::<Vec<_>>(), set).unwrap();
    parse_docs(&yaml).into_iter().filter(|d| d["kind"] == "PrometheusRule").collect()
}

#[test]
fn the_rule_renders_only_when_enabled_and_the_operator_api_exists_or_it_is_forced() {
    let api = "monitoring.coreos.com/v1/PrometheusRule";
    assert!(prometheus_rules(&[], &[api]).is_empty(), "off by default");
    assert!(
        prometheus_rules(&["prometheusRule.enabled=true"], &[]).is_empty(),
        "without the operator's API an install would fail on an unknown kind"
    );
    let rules = prometheus_rules(&["prometheusRule.enabled=true", "prometheusRule.labels.release=prom"], &[api]);
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0]["metadata"]["labels"]["release"], "prom", "labels for the Prometheus rule selector");
    assert_eq!(rules[0]["metadata"]["namespace"], NAMESPACE);
    assert_eq!(prometheus_rules(&["prometheusRule.enabled=true", "prometheusRule.force=true"], &[]).len(), 1);
}

#[test]
fn rendered_rules_pass_promtool_check() {
    let dir = tempfile::tempdir().unwrap();
    write_rule_file(&dir.path().join("rules.yaml"), &rendered_rule_groups(&[]));
    let out = promtool(dir.path(), &["check", "rules", "rules.yaml"]);
    assert!(out.contains("SUCCESS"), "{out}");
}

/// `promtool test rules` compares annotations too; they are checked by the next test and by
/// `promtool check rules`, so the unit tests run on the rules without them (what fires when).
#[test]
fn every_alert_is_unit_tested_firing_and_not_firing() {
    let mut groups = rendered_rule_groups(&[]);
    for g in groups.as_array_mut().unwrap() {
        for r in g["rules"].as_array_mut().unwrap() {
            r.as_object_mut().unwrap().remove("annotations");
        }
    }
    let dir = tempfile::tempdir().unwrap();
    write_rule_file(&dir.path().join("rules.yaml"), &groups);
    std::fs::copy(repo_root().join(UNIT_TESTS), dir.path().join("tests.yaml")).unwrap();
    let out = promtool(dir.path(), &["test", "rules", "tests.yaml"]);
    assert!(out.contains("SUCCESS"), "{out}");

    // Each alert has a case where it fires and one where it must not.
    let tests: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(repo_root().join(UNIT_TESTS)).unwrap()).unwrap();
    let cases: Vec<&Value> =
        tests["tests"].as_array().unwrap().iter().flat_map(|t| t["alert_rule_test"].as_array().unwrap()).collect();
    let covered = |fires: bool| -> BTreeSet<String> {
        cases
            .iter()
            .filter(|c| c["exp_alerts"].as_array().is_some_and(|a| a.is_empty() != fires))
            .map(|c| c["alertname"].as_str().unwrap().to_string())
            .collect()
    };
    let names: BTreeSet<String> =
        alert_rules(&groups).iter().map(|r| r["alert"].as_str().unwrap().to_string()).collect();
    assert!(names.len() >= 11, "{names:?}");
    assert_eq!(covered(true), names, "alerts with a case where they fire");
    assert_eq!(covered(false), names, "alerts with a case where they must not fire");
}

#[test]
fn every_alert_waits_has_a_severity_says_what_and_links_its_runbook_section() {
    let groups = rendered_rule_groups(&[]);
    let runbook = std::fs::read_to_string(repo_root().join(RUNBOOK)).unwrap();
    let anchors: BTreeSet<String> = runbook
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(|h| {
            h.trim().to_lowercase().replace(' ', "-").chars().filter(|c| c.is_alphanumeric() || *c == '-').collect()
        })
        .collect();
    for rule in alert_rules(&groups) {
        let name = rule["alert"].as_str().unwrap();
        assert!(rule["for"].as_str().is_some_and(|f| !f.is_empty()), "{name}: no `for`");
        assert!(
            ["info", "warning", "critical"].contains(&rule["labels"]["severity"].as_str().unwrap_or("")),
            "{name}: severity {}",
            rule["labels"]["severity"]
        );
        for a in ["summary", "description"] {
            assert!(rule["annotations"][a].as_str().is_some_and(|s| s.len() > 10), "{name}: {a}");
        }
        let url = rule["annotations"]["runbook_url"].as_str().unwrap_or_default();
        let (base, anchor) = url.split_once('#').unwrap_or_else(|| panic!("{name}: runbook_url {url} has no anchor"));
        assert_eq!(base, "https://github.com/kvq/kvq/blob/main/docs/runbook.md", "{name}");
        assert!(anchors.contains(anchor), "{name}: {RUNBOOK} has no section #{anchor} (sections: {anchors:?})");
    }
}

#[test]
fn thresholds_selector_and_runbook_base_come_from_values() {
    let groups = rendered_rule_groups(&[
        "prometheusRule.alerts.oldestTaskAgeWarningSeconds=7",
        "prometheusRule.alerts.notConsumingFor=3m",
        "prometheusRule.selector=cluster=\"eu\"",
        "prometheusRule.runbookBaseUrl=https://wiki.example/kvq",
    ]);
    let rules = alert_rules(&groups);
    let rule = |name: &str| *rules.iter().find(|r| r["alert"] == name).unwrap();
    assert_eq!(rule("KvqQueueTaskOld")["expr"], "max(kvq_queue_oldest_task_age_seconds{cluster=\"eu\"}) > 7");
    assert_eq!(rule("KvqWorkerNotConsuming")["for"], "3m");
    assert_eq!(rule("KvqDeadLetters")["annotations"]["runbook_url"], "https://wiki.example/kvq#kvqdeadletters");
    // By default: this release's namespace and the jobs of its ServiceMonitors.
    let defaults = rendered_rule_groups(&[]);
    let expr = alert_rules(&defaults)[0]["expr"].as_str().unwrap().to_string();
    assert!(expr.contains(&format!("namespace=\"{NAMESPACE}\",job=~\"{RELEASE}-(server|worker)\"")), "{expr}");
}
