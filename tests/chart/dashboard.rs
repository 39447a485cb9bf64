//! The chart's Grafana dashboard: a ConfigMap for Grafana's sidecar, rendered only when enabled,
//! whose JSON parses, takes its data source from a variable and has the panels operators need.

use serde_json::Value;

use crate::support::chart::*;

const NAME: &str = "kvq-dashboard";

/// Every query panel (rows left out).
pub fn panels(dashboard: &Value) -> Vec<&Value> {
    dashboard["panels"].as_array().unwrap().iter().filter(|p| p["type"] != "row").collect()
}

#[test]
fn the_dashboard_renders_only_when_enabled_with_the_sidecar_label() {
    assert!(render(&[], &[]).find("ConfigMap", NAME).is_none(), "off by default");
    let m = render(&[], &["grafanaDashboard.enabled=true"]);
    let cm = m.get("ConfigMap", NAME);
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(cm["metadata"]["namespace"], NAMESPACE);
    let m = render(
        &[],
        &[
            "grafanaDashboard.enabled=true",
            "grafanaDashboard.label=dashboards",
            "grafanaDashboard.labelValue=kvq",
            "grafanaDashboard.namespace=monitoring",
            "grafanaDashboard.annotations.grafana_folder=Storage",
        ],
    );
    let cm = m.get("ConfigMap", NAME);
    assert_eq!(cm["metadata"]["labels"]["dashboards"], "kvq");
    assert!(cm["metadata"]["labels"].get("grafana_dashboard").is_none());
    assert_eq!(cm["metadata"]["namespace"], "monitoring");
    assert_eq!(cm["metadata"]["annotations"]["grafana_folder"], "Storage");
}

#[test]
fn every_panel_queries_the_data_source_variable() {
    let d = rendered_dashboard(&[]);
    let vars = d["templating"]["list"].as_array().unwrap();
    let ds = vars.iter().find(|v| v["name"] == "datasource").expect("a datasource variable");
    assert_eq!((ds["type"].as_str(), ds["query"].as_str()), (Some("datasource"), Some("prometheus")));
    for p in panels(&d) {
        let title = p["title"].as_str().unwrap();
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title}: no query");
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{title}");
            assert!(t["expr"].as_str().unwrap().contains("namespace=\"$namespace\""), "{title}: {}", t["expr"]);
        }
    }
}

#[test]
fn the_dashboard_has_the_panels_operators_look_at() {
    let d = rendered_dashboard(&[]);
    let titles: Vec<String> = panels(&d).iter().map(|p| p["title"].as_str().unwrap().to_lowercase()).collect();
    for wanted in [
        "request rate by route and status",
        "latency by route",
        "accepted vs applied writes",
        "queue depth and lag",
        "oldest pending task age",
        "dead letters",
        "redis memory",
        "replica-ack rounds",
        "failovers",
        "pods of server and worker",
    ] {
        assert!(titles.iter().any(|t| t.starts_with(wanted)), "no panel {wanted:?} in {titles:?}");
    }
}
