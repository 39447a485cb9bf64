//! Chart tests against hostile-but-valid values: long release names, policies and budgets
//! that would block operations, settings that make every write fail, renders without a
//! cluster. Each renders helm/kvq with `helm template` (helm from `$HELM` or .tools/bin).

use std::process::Command;

use crate::support::chart::*;
use serde_json::Value;

/// The longest release name Helm accepts (53 characters).
const LONG_RELEASE: &str = "a-release-name-that-is-exactly-fifty-three-chars-long";

/// `helm template <release>` of the chart with these values files and `--set`s, standing for
/// `helm install` (generated passwords allowed, as the support renders do).
fn try_render_as(release: &str, values: &[&str], set: &[&str]) -> Result<Manifests, String> {
    helm_template(release, &chart_dir(), &NO_CLUSTER, values, set).map(|y| Manifests(parse_docs(&y)))
}

/// Plain `helm template <release>`: no cluster, nothing added.
fn try_render_plain(release: &str, values: &[&str], set: &[&str]) -> Result<Manifests, String> {
    helm_template(release, &chart_dir(), &[], values, set).map(|y| Manifests(parse_docs(&y)))
}

fn render_as(release: &str, values: &[&str], set: &[&str]) -> Manifests {
    try_render_as(release, values, set).unwrap_or_else(|e| panic!("helm template {values:?} {set:?} failed:\n{e}"))
}

/// Asserts the render fails and its message contains every `needle`.
fn assert_refused(values: &[&str], set: &[&str], needles: &[&str]) {
    match try_render_in(&chart_dir(), values, set) {
        Ok(_) => panic!("{values:?} {set:?} rendered; expected a failure naming {needles:?}"),
        Err(e) => {
            for n in needles {
                assert!(e.contains(n), "{values:?} {set:?}: the failure does not name {n:?}:\n{e}");
            }
        }
    }
}

fn name_of(o: &Value) -> &str {
    o["metadata"]["name"].as_str().unwrap()
}

/// Every label map of an object: its own, its pod template's, its selectors'.
fn label_maps(o: &Value) -> Vec<(&'static str, &Value)> {
    vec![
        ("metadata.labels", &o["metadata"]["labels"]),
        ("template labels", &o["spec"]["template"]["metadata"]["labels"]),
        ("selector", &o["spec"]["selector"]["matchLabels"]),
        ("podSelector", &o["spec"]["podSelector"]["matchLabels"]),
        ("service selector", &o["spec"]["selector"]),
    ]
}

#[test]
fn longest_release_name_renders_valid_names_and_labels_in_every_values_file() {
    assert_eq!(LONG_RELEASE.len(), 53);
    for file in values_files() {
        let m = render_as(LONG_RELEASE, &[&file], &[]);
        let mut seen = std::collections::BTreeSet::new();
        for o in &m.0 {
            let kind = o["kind"].as_str().unwrap();
            let name = name_of(o);
            assert!(name.len() <= 63, "{file}: {kind}/{name} is {} characters (> 63)", name.len());
            assert!(!name.ends_with('-'), "{file}: {kind}/{name} ends with '-'");
            assert!(seen.insert(format!("{kind}/{name}")), "{file}: two {kind} named {name}");
            if kind == "StatefulSet" {
                // pods get controller-revision-hash=<name>-<10 characters>, a label value (<= 63)
                assert!(name.len() <= 52, "{file}: StatefulSet {name} is {} characters (> 52)", name.len());
            }
            for (what, labels) in label_maps(o) {
                for (k, v) in labels.as_object().into_iter().flatten() {
                    if let Some(v) = v.as_str() {
                        assert!(v.len() <= 63, "{file}: {kind}/{name} {what} {k}={v} is {} characters", v.len());
                    }
                }
            }
        }
        // Names are stable: the same render twice gives the same names.
        assert_eq!(m.names(), render_as(LONG_RELEASE, &[&file], &[]).names(), "{file}");

        let cfg_map = m.of_kind("ConfigMap").into_iter().find(|c| c["data"]["config.yaml"].is_string());
        let cfg: Value = serde_yaml_ng::from_str(cfg_map.unwrap()["data"]["config.yaml"].as_str().unwrap()).unwrap();
        let Some(sts) = m.of_kind("StatefulSet").into_iter().next() else { continue };
        let sts_name = name_of(sts);
        let headless = sts["spec"]["serviceName"].as_str().unwrap();
        m.get("Service", headless);
        let domain = format!("{headless}.{NAMESPACE}.svc.cluster.local");
        let redis = PodRef {
            owner: sts,
            metadata: &sts["spec"]["template"]["metadata"],
            spec: &sts["spec"]["template"]["spec"],
        };
        let c = redis.container("redis");
        assert_eq!(env_value(c, "STATEFULSET_NAME"), Some(sts_name), "{file}");
        assert_eq!(env_value(c, "HEADLESS_DOMAIN"), Some(domain.as_str()), "{file}");
        // Every volume's ConfigMap / Secret exists (the generated ones are rendered).
        for v in sts["spec"]["template"]["spec"]["volumes"].as_array().unwrap() {
            if let Some(n) = v["configMap"]["name"].as_str() {
                m.get("ConfigMap", n);
            }
            if let Some(n) = v["secret"]["secretName"].as_str() {
                m.get("Secret", n);
            }
        }
        if cfg["redis"]["mode"] == "sentinel" {
            let replicas = sts["spec"]["replicas"].as_u64().unwrap();
            let want: Vec<String> = (0..replicas).map(|i| format!("{sts_name}-{i}.{domain}:26379")).collect();
            let got: Vec<String> =
                cfg["redis"]["sentinels"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect();
            assert_eq!(got, want, "{file}: sentinel addresses match the pods");
            for pod in &want {
                let host = pod.split('.').next().unwrap();
                assert!(host.len() <= 63, "{file}: pod name {host}");
            }
        } else if cfg["redis"]["mode"] == "cluster" {
            let replicas = sts["spec"]["replicas"].as_u64().unwrap();
            let want: Vec<String> = (0..replicas).map(|i| format!("{sts_name}-{i}.{domain}:6379")).collect();
            assert_eq!(strings(&cfg["redis"]["nodes"]), want, "{file}: cluster seed nodes are the pods");
        } else {
            let url = cfg["redis"]["url"].as_str().unwrap();
            let host = url.trim_start_matches("redis://").split(':').next().unwrap();
            m.get("Service", host);
        }
        // The test pod reaches the server Service by name.
        if let Some(pod) = m.of_kind("Pod").first() {
            let script = pod["spec"]["containers"][0]["args"][0].as_str().unwrap();
            let server = m
                .of_kind("Service")
                .into_iter()
                .find(|s| s["spec"]["selector"]["app.kubernetes.io/component"] == "server")
                .unwrap();
            assert!(script.contains(&format!("http://{}:", name_of(server))), "{file}: test pod URL");
        }
    }
}

#[test]
fn long_names_stay_distinct_between_releases_and_short_ones_are_unchanged() {
    let a = render_as(LONG_RELEASE, &[], &[]);
    let other = format!("{}x", &LONG_RELEASE[..52]);
    let b = render_as(&other, &[], &[]);
    let sts = |m: &Manifests| name_of(m.of_kind("StatefulSet")[0]).to_string();
    assert_ne!(sts(&a), sts(&b), "two long releases sharing a prefix get different names");
    let short = render(&[], &[]);
    short.get("StatefulSet", "kvq-redis");
    short.get("Service", "kvq-redis-headless");
    short.get("Deployment", "kvq-server");
}

/// Every `from` peer of the rules of a NetworkPolicy that admit `port` (a rule with no `from`
/// admits everyone: returned as a `{}` peer).
fn peers_for_port(np: &Value, port: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for rule in np["spec"]["ingress"].as_array().unwrap() {
        let ports = rule["ports"].as_array();
        let admits = ports.is_none_or(|ps| ps.iter().any(|p| p["port"] == port));
        if !admits {
            continue;
        }
        match rule["from"].as_array() {
            Some(from) => out.extend(from.iter().cloned()),
            None => out.push(serde_json::json!({})),
        }
    }
    out
}

#[test]
fn keda_operator_reaches_redis_through_the_network_policy() {
    let m = render(&["helm/kvq/ci/keda-values.yaml"], &["networkPolicy.enabled=true"]);
    let np = m.get("NetworkPolicy", "kvq-redis");
    let keda = serde_json::json!({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "keda"}}});
    for port in ["redis", "sentinel"] {
        assert!(peers_for_port(np, port).contains(&keda), "KEDA's namespace not admitted to {port}: {np}");
    }
    let m = render(
        &["helm/kvq/ci/keda-values.yaml"],
        &["networkPolicy.enabled=true", "networkPolicy.kedaNamespace=autoscaling"],
    );
    let peers = peers_for_port(m.get("NetworkPolicy", "kvq-redis"), "redis");
    assert!(peers
        .iter()
        .any(|p| p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] == "autoscaling"));
    // Without KEDA no namespace is admitted.
    let m = render(&["values/production.yaml"], &[]);
    let peers = peers_for_port(m.get("NetworkPolicy", "kvq-redis"), "redis");
    assert!(peers.iter().all(|p| p.get("namespaceSelector").is_none()), "{peers:?}");
}

#[test]
fn extra_ingress_rules_are_appended_to_each_policy() {
    let mut set = vec!["networkPolicy.enabled=true".to_string()];
    for c in ["redis", "server", "worker"] {
        set.push(format!("networkPolicy.extraIngress.{c}[0].from[0].podSelector.matchLabels.extra={c}-client"));
        set.push(format!("networkPolicy.extraIngress.{c}[0].ports[0].port=1234"));
    }
    let set: Vec<&str> = set.iter().map(String::as_str).collect();
    let m = render(&["values/production.yaml"], &set);
    for c in ["redis", "server", "worker"] {
        let np = m.get("NetworkPolicy", &format!("kvq-{c}"));
        let rule = np["spec"]["ingress"].as_array().unwrap().last().unwrap();
        assert_eq!(rule["from"][0]["podSelector"]["matchLabels"]["extra"], format!("{c}-client"), "{np}");
        assert_eq!(rule["ports"][0]["port"], 1234);
    }
}

fn redis_pod(m: &Manifests) -> (&Value, &Value) {
    let sts = m.of_kind("StatefulSet")[0];
    let spec = &sts["spec"]["template"]["spec"];
    let redis = spec["containers"].as_array().unwrap().iter().find(|c| c["name"] == "redis").unwrap();
    (spec, redis)
}

fn env_u64(c: &Value, name: &str) -> u64 {
    env_value(c, name).unwrap_or_else(|| panic!("no env {name}")).parse().unwrap()
}

/// The preStop worst case from what the rendered pod gives the script (redis-prestop.sh's
/// waits, its redis-cli timeout, replicas + 10 calls) plus 10 s for redis' own shutdown.
fn prestop_budget(m: &Manifests) -> (u64, u64) {
    let (spec, redis) = redis_pod(m);
    let worst = env_u64(redis, "PRESTOP_SENTINEL_WAIT")
        + env_u64(redis, "PRESTOP_CATCHUP_WAIT")
        + env_u64(redis, "PRESTOP_TIMEOUT")
        + env_u64(redis, "CLI_TIMEOUT") * (env_u64(redis, "REPLICAS") + 10);
    (spec["terminationGracePeriodSeconds"].as_u64().unwrap(), worst + 10)
}

/// cluster-prestop.sh's worst case (its failover wait and 6 redis-cli calls) plus 10 s.
fn cluster_prestop_budget(m: &Manifests) -> (u64, u64) {
    let (spec, redis) = redis_pod(m);
    let worst = env_u64(redis, "PRESTOP_TIMEOUT") + env_u64(redis, "CLI_TIMEOUT") * 6;
    (spec["terminationGracePeriodSeconds"].as_u64().unwrap(), worst + 10)
}

#[test]
fn cluster_grace_period_covers_the_prestop_worst_case() {
    let script = std::fs::read_to_string(chart_dir().join("files/cluster-prestop.sh")).unwrap();
    assert!(script.contains("PRESTOP_TIMEOUT + 6 c"), "cluster-prestop.sh states its worst case");
    let (grace, need) =
        cluster_prestop_budget(&render(&[], &["redis.mode=cluster", "redis.cluster.preStopTimeoutSeconds=90"]));
    assert!(grace >= need && need >= 90 + 18, "{grace} {need}");
    assert_refused(
        &[],
        &["redis.mode=cluster", "redis.terminationGracePeriodSeconds=30"],
        &["redis.terminationGracePeriodSeconds (30)", "preStopTimeoutSeconds", "48"],
    );
}

#[test]
fn redis_grace_period_covers_the_prestop_worst_case() {
    let script = std::fs::read_to_string(chart_dir().join("files/redis-prestop.sh")).unwrap();
    for var in ["PRESTOP_SENTINEL_WAIT", "PRESTOP_CATCHUP_WAIT", "PRESTOP_TIMEOUT"] {
        assert!(script.contains(&format!("+ {var} ))")), "redis-prestop.sh waits {var} seconds");
    }
    for file in values_files() {
        let m = render(&[&file], &[]);
        let Some(sts) = m.of_kind("StatefulSet").first().copied() else { continue };
        if sts["spec"]["replicas"] == 1 && env_value(redis_pod(&m).1, "REDIS_MODE") == Some("standalone") {
            continue;
        }
        if env_value(redis_pod(&m).1, "REDIS_MODE") == Some("cluster") {
            let (grace, need) = cluster_prestop_budget(&m);
            assert!(grace >= need, "{file}: grace {grace}s < cluster preStop worst case + margin {need}s");
            continue;
        }
        let (grace, need) = prestop_budget(&m);
        assert!(grace >= need, "{file}: grace {grace}s < preStop worst case + margin {need}s");
    }
    // A longer preStop timeout raises the computed grace period...
    let (grace, need) = prestop_budget(&render(
        &[],
        &["redis.sentinel.preStopTimeoutSeconds=90", "redis.replicas=5", "redis.sentinel.quorum=3"],
    ));
    assert!(grace >= need && need >= 90 + 20 + 3 * 14, "{grace} {need}");
    // ...and an explicit grace period below it is refused, naming the values.
    assert_refused(
        &[],
        &["redis.terminationGracePeriodSeconds=60"],
        &["redis.terminationGracePeriodSeconds (60)", "preStopTimeoutSeconds", "99"],
    );
    let (grace, _) = prestop_budget(&render(&[], &["redis.terminationGracePeriodSeconds=120"]));
    assert_eq!(grace, 120);
}

#[test]
fn redis_maxmemory_leaves_room_under_the_memory_limit() {
    for file in values_files() {
        let m = render(&[&file], &[]);
        let Some(_) = m.of_kind("StatefulSet").first() else { continue };
        let (_, redis) = redis_pod(&m);
        let Some(mm) = env_value(redis, "MAXMEMORY").filter(|s| !s.is_empty()) else { continue };
        let mm: u64 = mm.trim_end_matches("mb").parse::<u64>().expect("maxmemory in mb") << 20;
        let limit = redis["resources"]["limits"]["memory"].as_str().unwrap();
        let limit: u64 = if let Some(g) = limit.strip_suffix("Gi") {
            g.parse::<u64>().unwrap() << 30
        } else {
            limit.trim_end_matches("Mi").parse::<u64>().unwrap() << 20
        };
        assert!(mm * 100 <= limit * 70, "{file}: maxmemory {mm} > 70 % of the limit {limit}");
    }
    assert_refused(
        &["values/production.yaml"],
        &["redis.config.maxmemory=768mb"],
        &["redis.config.maxmemory (768mb", "70 %", "redis.resources.limits.memory (1Gi"],
    );
    assert_refused(&[], &["redis.config.maxmemory=200mb", "redis.resources.limits.memory=256Mi"], &["maxmemory"]);
    assert_refused(&[], &["redis.config.maxmemory=1gb", "redis.resources.limits.memory=1G"], &["maxmemory"]);
    render(&[], &["redis.config.maxmemory=179mb", "redis.resources.limits.memory=256Mi"]);
    render(&[], &["redis.config.maxmemory=1500M", "redis.resources.limits.memory=2.5Gi"]);
    assert_refused(&[], &["redis.config.maxmemory=lots"], &["cannot read the memory size"]);
}

#[test]
fn the_bookkeeping_budget_fits_in_maxmemory() {
    for file in values_files() {
        let m = render(&[&file], &[]);
        let config = m.of_kind("ConfigMap").iter().find_map(|c| c["data"]["config.yaml"].as_str().map(str::to_string));
        let Some(config) = config else { continue };
        assert!(config.contains("bookkeeping_bytes: 33554432"), "{file}: {config}");
    }
    assert_refused(
        &[],
        &["redis.config.maxmemory=32mb", "config.bookkeepingBytes=33554433"],
        &["config.bookkeepingBytes (33554433)", "redis.config.maxmemory (32mb"],
    );
    render(&[], &["redis.config.maxmemory=32mb", "config.bookkeepingBytes=33554432"]);
}

#[test]
fn redis_auth_volume_lists_the_secret_keys() {
    for (set, keys) in [
        (vec!["redis.auth.existingSecret=my-redis"], vec!["redis-password", "sentinel-password"]),
        (vec!["redis.auth.passwordKey=pw", "redis.auth.sentinelPasswordKey=spw"], vec!["pw", "spw"]),
        (vec!["redis.mode=standalone"], vec!["redis-password"]),
    ] {
        let m = render(&[], &set);
        let (spec, _) = redis_pod(&m);
        let auth = spec["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "auth").unwrap();
        let items: Vec<&str> = auth["secret"]["items"]
            .as_array()
            .unwrap_or_else(|| panic!("{set:?}: the auth volume has no items: a missing key would go unnoticed"))
            .iter()
            .map(|i| {
                assert_eq!(i["key"], i["path"]);
                i["key"].as_str().unwrap()
            })
            .collect();
        assert_eq!(items, keys, "{set:?}");
        // Every *_PASSWORD_FILE the scripts get is one of the listed keys.
        for c in spec["containers"].as_array().unwrap() {
            for e in c["env"].as_array().unwrap() {
                if e["name"].as_str().unwrap().ends_with("_PASSWORD_FILE") {
                    let file = e["value"].as_str().unwrap().trim_start_matches("/etc/redis-auth/");
                    assert!(keys.contains(&file), "{set:?}: {} reads {file}, not a listed key", c["name"]);
                }
            }
        }
    }
}

/// Runs a pod script (EXEC=0: prints the config) with `sh` in a temp dir.
fn run_script(script: &str, dir: &std::path::Path, env: &[(&str, String)]) -> std::process::Output {
    Command::new("sh")
        .arg(chart_dir().join("files").join(script))
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap())
        .env("EXEC", "0")
        .env("REDIS_CLI", "false") // no peer answers: bootstrap
        .env("REPLICAS", "1")
        .env("POD_NAME", "kvq-redis-0")
        .env("DATA_DIR", dir.join("data"))
        .env("CONF_DIR", dir.join("conf"))
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap()
}

#[test]
fn scripts_refuse_to_start_when_a_password_file_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "s3cret").unwrap();
    let missing = dir.path().join("missing").to_str().unwrap().to_string();
    let pw = pw.to_str().unwrap().to_string();
    for (script, mode) in
        [("redis-start.sh", "standalone"), ("redis-start.sh", "sentinel"), ("sentinel-start.sh", "sentinel")]
    {
        // Present files: the passwords are in the config.
        let ok = run_script(
            script,
            dir.path(),
            &[("REDIS_MODE", mode.into()), ("REDIS_PASSWORD_FILE", pw.clone()), ("SENTINEL_PASSWORD_FILE", pw.clone())],
        );
        let out = String::from_utf8_lossy(&ok.stdout);
        assert!(ok.status.success(), "{script} {mode}: {}", String::from_utf8_lossy(&ok.stderr));
        // Every byte of the password as a \xHH escape (any byte string survives redis.conf).
        let quoted: String = "s3cret".bytes().map(|b| format!("\\x{b:02x}")).collect();
        assert!(out.contains(&format!("requirepass \"{quoted}\"")), "{script} {mode}:\n{out}");
        // A file that is set but missing: exit non-zero with a message naming the variable.
        for var in ["REDIS_PASSWORD_FILE", "SENTINEL_PASSWORD_FILE"] {
            let other = if var == "REDIS_PASSWORD_FILE" { "SENTINEL_PASSWORD_FILE" } else { "REDIS_PASSWORD_FILE" };
            let bad = run_script(
                script,
                dir.path(),
                &[("REDIS_MODE", mode.into()), (var, missing.clone()), (other, pw.clone())],
            );
            let err = String::from_utf8_lossy(&bad.stderr);
            assert!(
                !bad.status.success(),
                "{script} {mode} with {var} missing started:\n{}",
                String::from_utf8_lossy(&bad.stdout)
            );
            assert!(err.contains(var) && err.contains("not readable"), "{script} {mode}: {err}");
            assert!(!String::from_utf8_lossy(&bad.stdout).contains("port "), "{script}: printed a config");
        }
    }
}

pub(crate) fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// NOTES.txt as `helm install` prints it, rendered through `helm template` (works with Helm 3
/// and 4 without a cluster): a copy of the chart where NOTES.txt is a named template that a
/// test-only manifest includes.
pub(crate) fn render_notes(values: &[&str], set: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&chart_dir(), dir.path());
    let notes = std::fs::read_to_string(chart_dir().join("templates/NOTES.txt")).unwrap();
    std::fs::write(
        dir.path().join("templates/_notes_test.tpl"),
        format!("{{{{- define \"test.notes\" -}}}}\n{notes}{{{{- end }}}}\n"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("templates/notes-test.yaml"),
        "apiVersion: v1\nkind: NotesForTest\nmetadata:\n  name: notes\ntext: {{ include \"test.notes\" . | toJson }}\n",
    )
    .unwrap();
    let out = try_render_in(dir.path(), values, set).unwrap_or_else(|e| panic!("{e}"));
    let docs = parse_docs(&out);
    docs.iter().find(|d| d["kind"] == "NotesForTest").unwrap()["text"].as_str().unwrap().to_string()
}

/// Lines of the first ```sh block after `heading` in a Markdown file.
fn sh_block_after(file: &str, heading: &str) -> Vec<String> {
    let text = std::fs::read_to_string(repo_root().join(file)).unwrap();
    let start = text.find(heading).unwrap_or_else(|| panic!("{file}: no {heading:?}"));
    let rest = &text[start..];
    let block = &rest[rest.find("```sh\n").unwrap() + 6..];
    block[..block.find("```").unwrap()].lines().map(str::to_string).collect()
}

#[test]
fn minikube_install_starts_the_tunnel_before_waiting_for_the_load_balancer() {
    let m = render(&["values/minikube.yaml"], &[]);
    assert_eq!(m.get("Service", "kvq-server")["spec"]["type"], "LoadBalancer");
    for (file, heading) in [("README.md", "## Install on minikube"), ("helm/kvq/README.md", "### minikube")] {
        let lines = sh_block_after(file, heading);
        let install = lines
            .iter()
            .position(|l| l.starts_with("helm install"))
            .unwrap_or_else(|| panic!("{file}: no helm install"));
        let waits = lines[install].contains("--wait");
        let tunnel = lines.iter().position(|l| l.starts_with("minikube tunnel"));
        if waits {
            // Helm 3's --wait waits for the LoadBalancer's address: the tunnel must already run.
            let tunnel = tunnel.unwrap_or_else(|| panic!("{file}: helm install --wait without minikube tunnel"));
            assert!(
                tunnel < install,
                "{file}: `minikube tunnel` comes after `helm install --wait`:\n{}",
                lines.join("\n")
            );
        }
    }
    // NOTES do not tell to start the tunnel "first" after the install already waited for it.
    let notes = render_notes(&["values/minikube.yaml"], &[]);
    assert!(!notes.contains("in another terminal first"), "{notes}");
    assert!(notes.contains("BEFORE `helm install --wait`"), "{notes}");
    assert!(notes.contains("kubectl port-forward"), "NOTES offer the port-forward fallback:\n{notes}");
}

fn scaled_object(m: &Manifests) -> &Value {
    m.of_kind("ScaledObject")[0]
}

#[test]
fn keda_standalone_address_is_namespace_qualified() {
    let m = render(&["helm/kvq/ci/keda-values.yaml"], &["redis.mode=standalone"]);
    let so = scaled_object(&m);
    let address = so["spec"]["triggers"][0]["metadata"]["address"].as_str().unwrap();
    assert_eq!(address, format!("kvq-redis.{NAMESPACE}.svc.cluster.local:6379"));
    // ...and that Service exists.
    m.get("Service", address.split('.').next().unwrap());
    // Sentinel mode: the stable names, already qualified.
    let m = render(&["helm/kvq/ci/keda-values.yaml"], &[]);
    let addresses = scaled_object(&m)["spec"]["triggers"][0]["metadata"]["addresses"].as_str().unwrap().to_string();
    assert!(addresses.split(',').all(|a| a.contains(&format!(".{NAMESPACE}.svc.cluster.local:"))), "{addresses}");
}

#[test]
fn keda_scales_on_the_lag_and_to_zero_with_pending_entries_only_as_a_second_trigger() {
    assert_refused(
        &["helm/kvq/ci/keda-values.yaml"],
        &["worker.keda.minReplicaCount=5", "worker.keda.maxReplicaCount=3"],
        &["worker.keda.minReplicaCount (5)", "worker.keda.maxReplicaCount (3)"],
    );
    for mode in ["sentinel", "standalone"] {
        let m = render(
            &["helm/kvq/ci/keda-values.yaml"],
            &[&format!("redis.mode={mode}"), "worker.keda.minReplicaCount=0", "worker.keda.activationLagCount=5"],
        );
        let so = scaled_object(&m);
        assert_eq!(so["spec"]["minReplicaCount"], 0);
        let triggers = so["spec"]["triggers"].as_array().unwrap();
        assert_eq!(triggers.len(), 1, "{mode}: the lag alone by default");
        let meta = &triggers[0]["metadata"];
        assert_eq!(
            (meta["lagCount"].as_str(), meta["activationLagCount"].as_str()),
            (Some("100"), Some("5")),
            "{mode}"
        );
        assert!(meta.get("pendingEntriesCount").is_none(), "{mode}: KEDA prefers pendingEntriesCount over lagCount");
        assert_eq!(meta["consumerGroup"], "kvq-workers");
    }
    // Pending entries as a second trigger: its own trigger, so KEDA takes the larger of both.
    let m = render(&["helm/kvq/ci/keda-values.yaml"], &["worker.keda.pendingEntriesCount=40"]);
    let triggers = scaled_object(&m)["spec"]["triggers"].as_array().unwrap().clone();
    assert_eq!(triggers.len(), 2);
    assert_eq!(triggers[0]["metadata"]["lagCount"], "100");
    assert_eq!(triggers[1]["metadata"]["pendingEntriesCount"], "40");
    assert!(triggers[1]["metadata"].get("lagCount").is_none());
    assert_eq!(triggers[1]["authenticationRef"], triggers[0]["authenticationRef"]);
    let readme = std::fs::read_to_string(chart_dir().join("README.md")).unwrap();
    assert!(readme.contains("kubectl delete hpa"), "the chart README documents switching an existing release to KEDA");
}

#[test]
fn topologies_on_which_writes_fail_are_refused() {
    // Sentinel mode needs 3 pods: with 2, losing the master leaves 1 sentinel of 2 (no
    // majority to elect a failover leader) and no replica for min-replicas-to-write 1.
    assert_refused(&[], &["redis.replicas=2"], &["redis.replicas is 2", "at least 3"]);
    assert_refused(
        &[],
        &["redis.replicas=1", "redis.sentinel.quorum=1", "redis.config.minReplicasToWrite=0"],
        &["redis.replicas is 1", "at least 3"],
    );
    // The app waits for minReplicasAck replicas per write: never more than exist...
    assert_refused(&[], &["redis.minReplicasAck=3"], &["redis.minReplicasAck (3)", "redis.replicas (3)"]);
    // ...nor more than remain during an allowed disruption (PDB maxUnavailable 1).
    assert_refused(&[], &["redis.minReplicasAck=2"], &["redis.minReplicasAck (2)", "allowed disruption"]);
    assert_refused(
        &[],
        &["redis.config.minReplicasToWrite=2"],
        &["redis.config.minReplicasToWrite (2)", "allowed disruption"],
    );
    // The master's pod carries a sentinel: the others must reach the quorum alone.
    assert_refused(&[], &["redis.sentinel.quorum=3"], &["redis.sentinel.quorum (3)", "redis.replicas - 1"]);
    // Standalone has no replica to acknowledge anything.
    assert_refused(&["values/dev.yaml"], &["redis.minReplicasAck=1"], &["redis.minReplicasAck (1)", "standalone"]);
    // What is fine renders, with the ack count in the app config.
    let m = render(
        &[],
        &["redis.replicas=5", "redis.sentinel.quorum=3", "redis.minReplicasAck=2", "redis.config.minReplicasToWrite=2"],
    );
    assert_eq!(m.app_config()["redis"]["min_replicas_ack"], 2);
    assert_eq!(render(&["values/dev.yaml"], &[]).app_config()["redis"]["min_replicas_ack"], 0);
    for file in values_files() {
        render(&[&file], &[]);
    }
}

#[test]
fn restricted_server_ingress_still_admits_the_metrics_scrapers() {
    let set = [
        "networkPolicy.enabled=true",
        "serviceMonitor.enabled=true",
        "networkPolicy.serverIngressFrom[0].namespaceSelector.matchLabels.name=ingress-nginx",
        "networkPolicy.metricsIngressFrom[0].namespaceSelector.matchLabels.name=monitoring",
    ];
    let m = render(&[], &set);
    let peers = peers_for_port(m.get("NetworkPolicy", "kvq-server"), "http");
    let prometheus = serde_json::json!({"namespaceSelector": {"matchLabels": {"name": "monitoring"}}});
    assert!(peers.contains(&prometheus), "Prometheus cannot scrape the server's /metrics: {peers:?}");
    assert!(peers.iter().all(|p| p != &serde_json::json!({})), "the API is not opened to everyone: {peers:?}");
    // A restricted API port with a ServiceMonitor but no metrics peers: refused.
    assert_refused(&[], &set[..3], &["networkPolicy.serverIngressFrom", "networkPolicy.metricsIngressFrom"]);
}

#[test]
fn budgets_that_block_drains_and_autoscaling_are_refused() {
    // PDBs that never allow an eviction.
    assert_refused(
        &[],
        &["server.pdb.enabled=true"],
        &["server.pdb.minAvailable (1)", "server.autoscaling.minReplicas = 1"],
    );
    assert_refused(
        &[],
        &[
            "worker.pdb.enabled=true",
            "worker.autoscaling.enabled=false",
            "worker.replicaCount=2",
            "worker.pdb.minAvailable=2",
        ],
        &["worker.pdb.minAvailable (2)", "worker.replicaCount = 2"],
    );
    assert_refused(
        &[],
        &["worker.pdb.enabled=true", "worker.pdb.minAvailable=100%"],
        &["worker.pdb.minAvailable is 100%", "keeps all"],
    );
    assert_refused(
        &[],
        &["server.pdb.enabled=true", "server.pdb.maxUnavailable=0"],
        &["server.pdb.maxUnavailable is 0"],
    );
    assert_refused(&[], &["redis.pdb.maxUnavailable=0"], &["redis.pdb.maxUnavailable is 0"]);
    // minAvailable 50% of 1 pod rounds up to 1: no eviction; of 2 pods: 1, fine.
    assert_refused(
        &[],
        &["worker.pdb.enabled=true", "worker.pdb.minAvailable=50%"],
        &["worker.pdb.minAvailable is 50%"],
    );
    render(&[], &["worker.pdb.enabled=true", "worker.pdb.minAvailable=50%", "worker.autoscaling.minReplicas=2"]);
    render(&[], &["server.pdb.enabled=true", "server.autoscaling.minReplicas=2"]);
    render(&[], &["server.pdb.enabled=true", "server.pdb.maxUnavailable=1"]);
    // HPAs that cannot work.
    assert_refused(
        &[],
        &["server.autoscaling.minReplicas=6"],
        &["server.autoscaling.minReplicas (6)", "server.autoscaling.maxReplicas (5)"],
    );
    assert_refused(&[], &["worker.resources=null"], &["worker.resources.requests.cpu is not set"]);
    assert_refused(&[], &["server.resources.requests.cpu=null"], &["server.resources.requests.cpu is not set"]);
    assert_refused(
        &[],
        &["server.autoscaling.targetMemoryUtilizationPercentage=80", "server.resources.requests.memory=null"],
        &["server.resources.requests.memory"],
    );
    render(&[], &["server.autoscaling.enabled=false", "server.resources=null"]);
    // Every shipped values file keeps a drain possible: minAvailable below the fewest pods.
    for file in values_files() {
        let m = render(&[&file], &[]);
        for pdb in m.of_kind("PodDisruptionBudget") {
            let spec = &pdb["spec"];
            if let Some(mu) = spec.get("maxUnavailable") {
                assert!(mu != 0 && mu != "0%", "{file}: {} maxUnavailable {mu}", name_of(pdb));
                continue;
            }
            let min_available = spec["minAvailable"].as_u64().unwrap();
            let target = name_of(pdb);
            let fewest = m
                .find("HorizontalPodAutoscaler", target)
                .map(|h| h["spec"]["minReplicas"].as_u64().unwrap())
                .or_else(|| m.find("ScaledObject", target).map(|s| s["spec"]["minReplicaCount"].as_u64().unwrap()))
                .unwrap_or_else(|| m.get("Deployment", target)["spec"]["replicas"].as_u64().unwrap());
            assert!(
                min_available < fewest,
                "{file}: PDB {target} minAvailable {min_available} >= {fewest} pods: drains block"
            );
        }
    }
}

#[test]
fn hard_anti_affinity_rollouts_replace_pods_instead_of_surging() {
    let m = render(&[], &["server.podAntiAffinity=hard", "worker.podAntiAffinity=hard"]);
    for c in ["server", "worker"] {
        let ru = &m.get("Deployment", &format!("kvq-{c}"))["spec"]["strategy"]["rollingUpdate"];
        // With maxUnavailable 0 the surge pod needs a node without a kvq pod: none when replicas equal nodes.
        assert_eq!(ru["maxSurge"], 0, "{c}: {ru}");
        assert_eq!(ru["maxUnavailable"], 1, "{c}: {ru}");
    }
    let soft = render(&[], &[]);
    assert_eq!(soft.get("Deployment", "kvq-server")["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"], 0);
}

/// A copy of the chart with another version and appVersion in Chart.yaml.
fn bumped_chart(dir: &std::path::Path) {
    copy_dir(&chart_dir(), dir);
    let chart_yaml = std::fs::read_to_string(dir.join("Chart.yaml")).unwrap();
    let bumped: String = chart_yaml
        .lines()
        .map(|l| {
            if l.starts_with("version:") {
                "version: 9.9.9".to_string()
            } else if l.starts_with("appVersion:") {
                "appVersion: \"9.9.9\"".to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(dir.join("Chart.yaml"), bumped + "\n").unwrap();
}

#[test]
fn chart_bump_does_not_restart_redis_pods() {
    let dir = tempfile::tempdir().unwrap();
    bumped_chart(dir.path());
    let pinned = ["redis.auth.password=p", "redis.auth.sentinelPassword=s"];
    let before = render(&["values/production.yaml"], &pinned);
    let after = Manifests(parse_docs(&try_render_in(dir.path(), &["values/production.yaml"], &pinned).unwrap()));
    let template = |m: &Manifests| m.of_kind("StatefulSet")[0]["spec"]["template"].clone();
    assert_ne!(
        before.get("Deployment", "kvq-server")["metadata"]["labels"],
        after.get("Deployment", "kvq-server")["metadata"]["labels"],
        "the bump is visible"
    );
    assert_eq!(
        template(&before),
        template(&after),
        "the Redis pod template changes with the chart version: every Redis pod restarts and fails over"
    );
    let labels = &template(&before)["metadata"]["labels"];
    assert!(labels.get("helm.sh/chart").is_none() && labels.get("app.kubernetes.io/version").is_none(), "{labels}");
    // The StatefulSet itself keeps the full labels.
    assert!(before.of_kind("StatefulSet")[0]["metadata"]["labels"].get("helm.sh/chart").is_some());
}

#[test]
fn common_labels_cannot_take_the_chart_keys() {
    for key in ["app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version", "helm.sh/chart"] {
        let set = format!("commonLabels.{}=x", key.replace('.', "\\."));
        assert_refused(&[], &[&set], &[&format!("commonLabels.{key}"), "app.kubernetes.io/"]);
    }
    let m = render(&[], &["commonLabels.team=kv"]);
    for o in &m.0 {
        assert_eq!(o["metadata"]["labels"]["team"], "kv", "{}", name_of(o));
    }
}

#[test]
fn test_pod_uses_the_image_pull_secrets() {
    let m = render(&[], &["imagePullSecrets[0].name=regcred"]);
    for p in m.pod_specs() {
        assert_eq!(p.spec["imagePullSecrets"], serde_json::json!([{"name": "regcred"}]), "{}", p.name());
    }
}

#[test]
fn notes_use_https_only_for_hosts_with_tls() {
    let notes = render_notes(
        &["values/production.yaml"],
        &[
            "server.ingress.hosts[1].host=plain.example.com",
            "server.ingress.hosts[1].paths[0].path=/",
            "server.ingress.hosts[1].paths[0].pathType=Prefix",
        ],
    );
    assert!(notes.contains("https://kvq.example.com/docs"), "{notes}");
    assert!(notes.contains("http://plain.example.com/docs"), "{notes}");
    assert!(!notes.contains("https://plain.example.com"), "{notes}");
}

#[test]
fn chart_readme_headless_name_pattern_matches_the_render() {
    let readme = std::fs::read_to_string(chart_dir().join("README.md")).unwrap();
    assert!(
        !readme.contains("<release>-kvq-redis-headless"),
        "the README's headless pattern is wrong for releases named *kvq*"
    );
    assert!(readme.contains("<pod>.<fullname>-redis-headless.<ns>.svc.<clusterDomain>"));
    // <fullname> is the release name when it contains "kvq": kvq-redis-headless for release kvq.
    render(&[], &[]).get("Service", "kvq-redis-headless");
    let m = render_as("orders", &[], &[]);
    m.get("Service", "orders-kvq-redis-headless");
}

#[test]
fn renders_without_a_cluster_refuse_to_generate_tokens() {
    let redis = "redis.auth.existingSecret=kvq-redis";
    let err = try_render_plain(RELEASE, &[], &[redis]).expect_err("generated a token without a cluster");
    for needle in ["auth.existingSecret", "auth.generateToken=false", "auth.generateWithoutCluster"] {
        assert!(err.contains(needle), "the failure does not name {needle}:\n{err}");
    }
    // The test pod's token alone is generated too.
    assert!(try_render_plain(RELEASE, &[], &[redis, "auth.generateToken=false", "auth.existingSecret=t"]).is_err());
    // The GitOps path renders, identically every time, with only the user's Secret mounted.
    let set = [redis, "auth.generateToken=false", "tests.enabled=false", "auth.existingSecret=kvq-tokens"];
    let a = try_render_plain(RELEASE, &[], &set).unwrap();
    assert_eq!(a.0, try_render_plain(RELEASE, &[], &set).unwrap().0, "two renders differ");
    assert!(a.find("Secret", "kvq-auth").is_none(), "nothing of the chart's own to put in a Secret");
    // Inline hashed entries need no generation either.
    let hash = "a".repeat(64);
    let inline = [
        redis,
        "auth.generateToken=false",
        "tests.enabled=false",
        "auth.tokens[0].name=ci",
        "auth.tokens[0].scopes[0]=read",
    ];
    let mut inline = inline.to_vec();
    let sha = format!("auth.tokens[0].sha256={hash}");
    inline.push(&sha);
    try_render_plain(RELEASE, &[], &inline).unwrap();
}

#[test]
fn renders_without_a_cluster_refuse_to_generate_passwords() {
    // Plain `helm template` (what Argo CD runs): lookup finds nothing, a random password would
    // be new on every sync. (API tokens, generated the same way, have their own test below.)
    let try_render_plain = |release, values: &[&str], set: &[&str]| {
        let mut set = set.to_vec();
        set.push("auth.mode=none");
        try_render_plain(release, values, &set)
    };
    let Err(err) = try_render_plain(RELEASE, &[], &[]) else {
        panic!("helm template generated a password without a cluster");
    };
    for needle in ["redis.auth", "existingSecret", "generateWithoutCluster"] {
        assert!(err.contains(needle), "the failure does not name {needle}:\n{err}");
    }
    for file in ["values/production.yaml", "values/dev.yaml"] {
        assert!(try_render_plain(RELEASE, &[file], &[]).is_err(), "{file}");
    }
    // The GitOps paths render, identically every time.
    for set in
        [vec!["redis.auth.existingSecret=kvq-redis"], vec!["redis.auth.password=p", "redis.auth.sentinelPassword=s"]]
    {
        let a = try_render_plain(RELEASE, &[], &set).unwrap();
        let b = try_render_plain(RELEASE, &[], &set).unwrap();
        assert_eq!(a.0, b.0, "{set:?}: two renders differ");
    }
    // Only one password given: the other would still be generated.
    assert!(try_render_plain(RELEASE, &[], &["redis.auth.password=p"]).is_err());
    // Nothing to generate: auth off, or external Redis.
    try_render_plain(RELEASE, &[], &["redis.auth.enabled=false"]).unwrap();
    try_render_plain(RELEASE, &["helm/kvq/ci/external-redis-values.yaml"], &[]).unwrap();
    // The explicit opt-in for one-off renders.
    let m = try_render_plain(RELEASE, &[], &["redis.auth.generateWithoutCluster=true"]).unwrap();
    assert_eq!(m.of_kind("Secret").len(), 1);
    let readme = std::fs::read_to_string(chart_dir().join("README.md")).unwrap();
    assert!(readme.contains("### GitOps"), "the chart README documents the GitOps path");
}
