//! `helm upgrade` compatibility: the chart at the previous release (the commit in
//! helm/kvq/UPGRADE-BASELINE) and the working tree are rendered with every values file, and
//! no field Kubernetes refuses to update may differ: a StatefulSet's spec other than
//! replicas, template, updateStrategy, persistentVolumeClaimRetentionPolicy, minReadySeconds
//! and ordinals (so its selector, serviceName, podManagementPolicy and volumeClaimTemplates);
//! a Deployment's selector; a Service's clusterIP. Such a change is allowed only with a new
//! major chart version whose migration the chart README describes ("## Migrating to N.0").
//!
//! The baseline moves with each release: after tagging/publishing a chart version, write the
//! commit it was built from into helm/kvq/UPGRADE-BASELINE.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::support::chart::{
    chart_dir, helm_template, parse_docs, repo_root, try_render_in, GENERATE_WITHOUT_CLUSTER, RELEASE,
};

/// Spec fields of a StatefulSet that `kubectl apply`/`helm upgrade` may change.
const STS_MUTABLE: [&str; 6] =
    ["replicas", "template", "updateStrategy", "persistentVolumeClaimRetentionPolicy", "minReadySeconds", "ordinals"];

/// The immutable fields that differ between two renders of one release, one line each.
pub fn immutable_diffs(old: &[Value], new: &[Value]) -> Vec<String> {
    let mut diffs = Vec::new();
    for o in old {
        let (kind, name) = (o["kind"].as_str().unwrap_or(""), o["metadata"]["name"].as_str().unwrap_or(""));
        let Some(n) = new.iter().find(|n| n["kind"] == kind && n["metadata"]["name"] == name) else { continue };
        match kind {
            "StatefulSet" => {
                let strip = |v: &Value| {
                    let mut s = v["spec"].as_object().cloned().unwrap_or_default();
                    for f in STS_MUTABLE {
                        s.remove(f);
                    }
                    s
                };
                let (a, b) = (strip(o), strip(n));
                for k in a.keys().chain(b.keys()) {
                    if a.get(k) != b.get(k) && !diffs.iter().any(|d: &String| d.contains(&format!("spec.{k}:"))) {
                        diffs.push(format!("StatefulSet/{name} spec.{k}: {:?} -> {:?}", a.get(k), b.get(k)));
                    }
                }
            }
            "Deployment" if o["spec"]["selector"] != n["spec"]["selector"] => {
                diffs.push(format!(
                    "Deployment/{name} spec.selector: {} -> {}",
                    o["spec"]["selector"], n["spec"]["selector"]
                ));
            }
            "Service" if o["spec"]["clusterIP"] != n["spec"]["clusterIP"] => {
                diffs.push(format!(
                    "Service/{name} spec.clusterIP: {} -> {}",
                    o["spec"]["clusterIP"], n["spec"]["clusterIP"]
                ));
            }
            _ => {}
        }
    }
    diffs
}

fn git(args: &[&str]) -> std::process::Output {
    let out = Command::new("git").current_dir(repo_root()).args(args).output().expect("run git");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// The chart of commit `rev`, extracted into `dir`.
fn chart_at(rev: &str, dir: &Path) -> std::path::PathBuf {
    let archive = git(&["archive", rev, "helm/kvq"]).stdout;
    let mut tar =
        Command::new("tar").args(["-x", "-C"]).arg(dir).stdin(std::process::Stdio::piped()).spawn().expect("run tar");
    use std::io::Write;
    tar.stdin.take().unwrap().write_all(&archive).unwrap();
    assert!(tar.wait().unwrap().success(), "tar -x of helm/kvq at {rev}");
    dir.join("helm/kvq")
}

/// A copy of `values` (a repository path) without the top-level keys the old chart's
/// values.yaml lacks.
fn old_values_only(old_chart: &Path, values: &str, dir: &Path) -> std::path::PathBuf {
    let read = |p: &Path| -> serde_yaml_ng::Mapping {
        serde_yaml_ng::from_str(&std::fs::read_to_string(p).unwrap()).unwrap_or_default()
    };
    let known = read(&old_chart.join("values.yaml"));
    let mut v = read(&repo_root().join(values));
    v.retain(|k, _| known.contains_key(k));
    let out = dir.join(values.replace('/', "_"));
    std::fs::write(&out, serde_yaml_ng::to_string(&v).unwrap()).unwrap();
    out
}

/// Whether the old chart's schema accepts the `redis.mode` of `values` (a repository path).
fn old_chart_knows_mode(old_chart: &Path, values: &str) -> bool {
    let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&std::fs::read_to_string(repo_root().join(values)).unwrap())
        .unwrap_or(serde_yaml_ng::Value::Null);
    let Some(mode) = v["redis"]["mode"].as_str() else { return true };
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(old_chart.join("values.schema.json")).unwrap()).unwrap();
    let modes = &schema["properties"]["redis"]["properties"]["mode"]["enum"];
    modes.as_array().is_none_or(|m| m.iter().any(|x| x == mode))
}

fn major(chart: &Path) -> u64 {
    let text = std::fs::read_to_string(chart.join("Chart.yaml")).unwrap();
    let v = text.lines().find_map(|l| l.strip_prefix("version:")).expect("Chart.yaml version").trim();
    v.trim_matches('"').split('.').next().unwrap().parse().unwrap()
}

fn values_files() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(repo_root().join("values"))
        .unwrap()
        .map(|e| format!("values/{}", e.unwrap().file_name().to_string_lossy()))
        .filter(|f| f.ends_with(".yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    files
}

#[test]
fn helm_upgrade_from_the_previous_release_changes_no_immutable_field() {
    let baseline = std::fs::read_to_string(chart_dir().join("UPGRADE-BASELINE")).unwrap();
    let baseline = baseline.trim();
    let tmp = tempfile::tempdir().unwrap();
    let old_chart = chart_at(baseline, tmp.path());
    let (old_major, new_major) = (major(&old_chart), major(&chart_dir()));
    let readme = std::fs::read_to_string(chart_dir().join("README.md")).unwrap();
    let migration_documented = new_major > old_major && readme.contains(&format!("## Migrating to {new_major}.0"));
    let mut all = Vec::new();
    for values in values_files() {
        // A values file may set what the old chart does not know yet (its schema would refuse
        // it); the old release was installed without those keys.
        if !old_chart_knows_mode(&old_chart, &values) {
            continue; // a Redis mode the old chart lacks: installed fresh, never upgraded into
        }
        let known = old_values_only(&old_chart, &values, tmp.path());
        let old = helm_template(RELEASE, &old_chart, &[GENERATE_WITHOUT_CLUSTER], &[known.to_str().unwrap()], &[])
            .unwrap_or_else(|e| panic!("{values} does not render at {baseline}: {e}"));
        let new = try_render_in(&chart_dir(), &[&values], &[]).unwrap_or_else(|e| panic!("{values}: {e}"));
        for d in immutable_diffs(&parse_docs(&old), &parse_docs(&new)) {
            all.push(format!("{values}: {d}"));
        }
    }
    assert!(
        all.is_empty() || migration_documented,
        "helm upgrade from {baseline} (chart {old_major}.x) would be refused by Kubernetes:\n{}\nBump the chart's \
         major version and add \"## Migrating to {}.0\" to helm/kvq/README.md",
        all.join("\n"),
        old_major + 1
    );
}

/// The check itself: each kind of immutable change is reported, a mutable one is not.
#[test]
fn immutable_diffs_report_each_refused_change() {
    let base = parse_docs(&try_render_in(&chart_dir(), &["values/production.yaml"], &[]).unwrap());
    assert_eq!(immutable_diffs(&base, &base), Vec::<String>::new());
    let edit = |f: &dyn Fn(&mut Value)| {
        let mut new = base.clone();
        for o in new.iter_mut() {
            f(o);
        }
        immutable_diffs(&base, &new)
    };
    let sts = |o: &Value| o["kind"] == "StatefulSet";
    let changed = edit(&|o| {
        if sts(o) {
            o["spec"]["replicas"] = 5.into();
            o["spec"]["template"]["metadata"]["labels"]["x"] = "y".into();
        }
    });
    assert_eq!(changed, Vec::<String>::new(), "replicas and template may change");
    for (what, f) in [
        (
            "spec.selector",
            &(|o: &mut Value| o["spec"]["selector"]["matchLabels"]["x"] = "y".into()) as &dyn Fn(&mut Value),
        ),
        ("spec.serviceName", &|o: &mut Value| o["spec"]["serviceName"] = "other".into()),
        ("spec.volumeClaimTemplates", &|o: &mut Value| {
            o["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] = "1Ti".into()
        }),
    ] {
        let d = edit(&|o| {
            if sts(o) {
                f(o)
            }
        });
        assert!(d.iter().any(|l| l.contains(what)), "{what} change not reported: {d:?}");
    }
    let d = edit(&|o| {
        if o["kind"] == "Deployment" {
            o["spec"]["selector"]["matchLabels"]["x"] = "y".into()
        }
    });
    assert!(d.iter().any(|l| l.starts_with("Deployment/") && l.contains("spec.selector")), "{d:?}");
    let d = edit(&|o| {
        if o["kind"] == "Service" {
            o["spec"]["clusterIP"] = "None".into()
        }
    });
    assert!(d.iter().any(|l| l.starts_with("Service/") && l.contains("clusterIP")), "{d:?}");
}

/// `helm uninstall` keeps the generated password Secret along with the kept PVCs, so a
/// reinstall under the same name reuses the passwords the kept data was written with.
#[test]
fn the_generated_password_secret_outlives_an_uninstall() {
    let m = crate::support::chart::render(&["values/production.yaml"], &[]);
    let secret = m.get("Secret", "kvq-redis-auth");
    assert_eq!(secret["metadata"]["annotations"]["helm.sh/resource-policy"], "keep", "{secret}");
    let sts = m.get("StatefulSet", "kvq-redis");
    assert_eq!(sts["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"], "Retain");
}
