//! The GitHub workflows (.github/workflows/*.yaml) keep the rules that make them safe to run:
//! every action pinned to a full commit SHA with the release it is named in a comment, no
//! workflow-wide permissions (each job asks for its own), no checkout that leaves the token in
//! .git/config. scripts/check-workflows.sh adds the workflow schema and zizmor's audits.

use std::path::PathBuf;

use serde_json::Value;

use crate::support::chart::repo_root;

fn workflows() -> Vec<(PathBuf, String)> {
    let dir = repo_root().join(".github/workflows");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.retain(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")));
    files.sort();
    assert!(files.len() >= 2, "the chart and release workflows: {files:?}");
    files.into_iter().map(|p| (p.clone(), std::fs::read_to_string(p).unwrap())).collect()
}

/// Every step of every job: (job id, step).
fn steps(doc: &Value) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for (id, job) in doc["jobs"].as_object().unwrap() {
        for s in job["steps"].as_array().into_iter().flatten() {
            out.push((id.clone(), s.clone()));
        }
    }
    out
}

#[test]
fn every_action_is_pinned_to_a_commit_sha_named_by_its_release() {
    let pinned =
        regex::Regex::new(r"^\s*-?\s*uses:\s*([A-Za-z0-9_.-]+/[A-Za-z0-9_./-]+)@([0-9a-f]{40})\s+# v\d+\.\d+\.\d+\s*$")
            .unwrap();
    let mut uses = 0;
    for (path, text) in workflows() {
        for line in text.lines().filter(|l| l.trim_start().trim_start_matches("- ").starts_with("uses:")) {
            uses += 1;
            assert!(pinned.is_match(line), "{}: not pinned to a commit SHA with its version: {line}", path.display());
        }
        // The YAML agrees with the line check (no `uses` written another way).
        let doc: Value = serde_yaml_ng::from_str(&text).unwrap();
        for (job, s) in steps(&doc) {
            if let Some(u) = s["uses"].as_str() {
                let sha = u.rsplit_once('@').map(|(_, r)| r).unwrap_or("");
                assert!(
                    sha.len() == 40 && sha.bytes().all(|b| b.is_ascii_hexdigit()),
                    "{} job {job}: {u}",
                    path.display()
                );
            }
        }
    }
    assert!(uses > 10, "found only {uses} `uses:` lines");
}

#[test]
fn permissions_are_granted_per_job_and_checkouts_keep_no_credentials() {
    for (path, text) in workflows() {
        let doc: Value = serde_yaml_ng::from_str(&text).unwrap();
        assert_eq!(
            doc["permissions"],
            serde_json::json!({}),
            "{}: workflow-wide permissions must be empty",
            path.display()
        );
        for (id, job) in doc["jobs"].as_object().unwrap() {
            let perms =
                job["permissions"].as_object().unwrap_or_else(|| panic!("{} job {id}: no permissions", path.display()));
            assert!(perms.values().all(|v| v == "read" || v == "write"), "{} job {id}: {perms:?}", path.display());
            assert!(!perms.contains_key("write-all") && job["permissions"] != "write-all");
        }
        for (job, s) in steps(&doc) {
            if s["uses"].as_str().is_some_and(|u| u.starts_with("actions/checkout@")) {
                assert_eq!(
                    s["with"]["persist-credentials"],
                    false,
                    "{} job {job}: checkout persists the token",
                    path.display()
                );
            }
        }
    }
}

#[test]
fn release_workflow_signs_what_it_publishes_with_the_identity_the_readme_verifies() {
    let text = std::fs::read_to_string(repo_root().join(".github/workflows/release.yaml")).unwrap();
    let doc: Value = serde_yaml_ng::from_str(&text).unwrap();
    assert_eq!(doc["on"]["push"]["tags"], serde_json::json!(["v*"]));
    // Keyless signing needs the OIDC token in exactly the jobs that sign.
    for (id, job) in doc["jobs"].as_object().unwrap() {
        let runs: String = job["steps"].as_array().unwrap().iter().filter_map(|s| s["run"].as_str()).collect();
        let signs = runs.contains("cosign sign");
        assert_eq!(job["permissions"]["id-token"] == "write", signs, "job {id}: id-token write iff it signs");
    }
    // The identity users verify (README, chart README) is this workflow on a tag.
    for doc in ["README.md", "helm/kvq/README.md"] {
        let readme = std::fs::read_to_string(repo_root().join(doc)).unwrap();
        assert!(
            readme.contains("--certificate-identity-regexp '^https://github.com/<owner>/kvq/.github/workflows/release.yaml@refs/tags/v'"),
            "{doc} shows how to verify signatures of this workflow"
        );
        assert!(readme.contains("--certificate-oidc-issuer https://token.actions.githubusercontent.com"), "{doc}");
    }
}

#[test]
fn every_ct_scenario_gets_what_it_needs_on_kind() {
    let root = repo_root();
    let workflow = std::fs::read_to_string(root.join(".github/workflows/chart.yaml")).unwrap();
    let ct: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(root.join("ct.yaml")).unwrap()).unwrap();
    // The upgrade test installs main's scenarios only where this revision still has the file.
    assert_eq!(ct["skip-missing-values"], true);

    let yaml = |p: PathBuf| -> Value { serde_yaml_ng::from_str(&std::fs::read_to_string(p).unwrap()).unwrap() };
    let redis_docs: Vec<Value> = crate::support::chart::parse_docs(
        &std::fs::read_to_string(root.join(".github/kind/external-redis.yaml")).unwrap(),
    );
    let service = redis_docs.iter().find(|d| d["kind"] == "Service").expect("the external Redis Service");
    let external_host = format!(
        "{}.{}.svc.cluster.local:{}",
        service["metadata"]["name"].as_str().unwrap(),
        service["metadata"]["namespace"].as_str().unwrap(),
        service["spec"]["ports"][0]["port"]
    );
    assert!(workflow.contains("kubectl apply -f .github/kind/external-redis.yaml"));

    let mut scenarios = 0;
    for entry in std::fs::read_dir(root.join("helm/kvq/ci")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if !name.ends_with("-values.yaml") {
            continue;
        }
        scenarios += 1;
        let v = yaml(path);
        // Every install is followed by helm test.
        assert_ne!(v["tests"]["enabled"], false, "{name}: helm test disabled");
        if v["redis"]["mode"] == "external" {
            let url = v["redis"]["external"]["url"].as_str().unwrap_or("");
            assert!(
                url.contains(&external_host),
                "{name}: {url} is not the Redis the workflow deploys ({external_host})"
            );
        }
        if v["worker"]["keda"]["enabled"] == true {
            assert!(workflow.contains("/keda-2.") && workflow.contains("-crds.yaml"), "{name} needs KEDA's CRDs");
        }
        if v["serviceMonitor"]["enabled"] == true {
            assert!(
                workflow.contains("monitoring.coreos.com_servicemonitors.yaml"),
                "{name} needs the ServiceMonitor CRD"
            );
        }
        if v["prometheusRule"]["enabled"] == true {
            assert!(
                workflow.contains("monitoring.coreos.com_prometheusrules.yaml"),
                "{name} needs the PrometheusRule CRD"
            );
        }
    }
    assert!(scenarios >= 5, "{scenarios} scenarios");
}
