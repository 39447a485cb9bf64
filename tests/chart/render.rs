//! Chart unit tests: render helm/kvq with `helm template` and assert on the parsed objects.
//! Needs helm (`bash scripts/chart-tools.sh` installs it into .tools/bin; or set HELM).

use crate::support::chart::*;
use serde_json::{json, Value};

fn expected_kinds(file: &str) -> Vec<(&'static str, usize)> {
    // The same core in every file: config + scripts ConfigMaps, 2 Deployments, a ServiceAccount;
    // with API tokens (all but dev), the Redis password Secret and the auth Secret.
    match file {
        // standalone Redis, no autoscaling, no API tokens
        "values/dev.yaml" => vec![
            ("ConfigMap", 2),
            ("Deployment", 2),
            ("Pod", 1),
            ("Secret", 1),
            ("Service", 4),
            ("ServiceAccount", 1),
            ("StatefulSet", 1),
        ],
        "helm/kvq/ci/standalone-values.yaml" => vec![
            ("ConfigMap", 2),
            ("Deployment", 2),
            ("Pod", 1),
            ("Secret", 2),
            ("Service", 4),
            ("ServiceAccount", 1),
            ("StatefulSet", 1),
        ],
        // sentinel, HPAs, Redis PDB
        "values/minikube.yaml" | "helm/kvq/ci/default-values.yaml" => vec![
            ("ConfigMap", 2),
            ("Deployment", 2),
            ("HorizontalPodAutoscaler", 2),
            ("Pod", 1),
            ("PodDisruptionBudget", 1),
            ("Secret", 2),
            ("Service", 4),
            ("ServiceAccount", 1),
            ("StatefulSet", 1),
        ],
        // + Ingress, NetworkPolicies, app PDBs
        "values/staging.yaml" => vec![
            ("ConfigMap", 2),
            ("Deployment", 2),
            ("HorizontalPodAutoscaler", 2),
            ("Ingress", 1),
            ("NetworkPolicy", 3),
            ("Pod", 1),
            ("PodDisruptionBudget", 3),
            ("Secret", 2),
            ("Service", 4),
            ("ServiceAccount", 1),
            ("StatefulSet", 1),
        ],
        // + the exporter's metrics Service
        "values/production.yaml" | "helm/kvq/ci/sentinel-full-values.yaml" => vec![
            ("ConfigMap", 2),
            ("Deployment", 2),
            ("HorizontalPodAutoscaler", 2),
            ("Ingress", 1),
            ("NetworkPolicy", 3),
            ("Pod", 1),
            ("PodDisruptionBudget", 3),
            ("Secret", 2),
            ("Service", 5),
            ("ServiceAccount", 1),
            ("StatefulSet", 1),
        ],
        // Redis Cluster: no Service in front of Redis (clients learn every node from the cluster)
        "values/production-cluster.yaml" | "helm/kvq/ci/cluster-values.yaml" => vec![
            ("ConfigMap", 2),
            ("Deployment", 2),
            ("HorizontalPodAutoscaler", 2),
            ("Ingress", 1),
            ("NetworkPolicy", 3),
            ("Pod", 1),
            ("PodDisruptionBudget", 3),
            ("Secret", 2),
            ("Service", 4),
            ("ServiceAccount", 1),
            ("StatefulSet", 1),
        ],
        // nothing of Redis; the test pod runs against the external Redis; the auth Secret
        "helm/kvq/ci/external-redis-values.yaml" => vec![
            ("ConfigMap", 1),
            ("Deployment", 2),
            ("HorizontalPodAutoscaler", 2),
            ("Pod", 1),
            ("Secret", 1),
            ("Service", 2),
            ("ServiceAccount", 1),
        ],
        // KEDA replaces the worker HPA; ServiceMonitors for server, worker, exporter; the
        // dashboard ConfigMap (the PrometheusRule needs the operator's API, absent here)
        "helm/kvq/ci/keda-values.yaml" => vec![
            ("ConfigMap", 3),
            ("Deployment", 2),
            ("HorizontalPodAutoscaler", 1),
            ("Pod", 1),
            ("PodDisruptionBudget", 1),
            ("ScaledObject", 1),
            ("Secret", 2),
            ("Service", 5),
            ("ServiceAccount", 1),
            ("ServiceMonitor", 3),
            ("StatefulSet", 1),
            ("TriggerAuthentication", 1),
        ],
        other => panic!("no expected kinds for {other}: add it to expected_kinds"),
    }
}

#[test]
fn every_values_file_renders_the_expected_kinds_and_counts() {
    let files = values_files();
    assert!(files.len() >= 9, "values files found: {files:?}");
    for f in &files {
        let m = render(&[f], &[]);
        let got = m.kind_counts();
        let want: Vec<(String, usize)> = expected_kinds(f).into_iter().map(|(k, n)| (k.to_string(), n)).collect();
        assert_eq!(got, want, "kinds rendered by {f}: {:?}", m.names());
    }
}

#[test]
fn worker_hpa_and_keda_scaledobject_exclude_each_other() {
    let hpa_name = format!("{RELEASE}-worker");
    let plain = render(&[], &[]);
    assert!(plain.find("HorizontalPodAutoscaler", &hpa_name).is_some());
    assert!(plain.of_kind("ScaledObject").is_empty());

    let keda = render(&[], &["worker.keda.enabled=true"]);
    assert!(keda.find("HorizontalPodAutoscaler", &hpa_name).is_none(), "worker HPA rendered beside KEDA");
    assert!(keda.find("HorizontalPodAutoscaler", &format!("{RELEASE}-server")).is_some(), "server HPA stays");
    let so = keda.get("ScaledObject", &hpa_name);
    assert_eq!(so["spec"]["scaleTargetRef"]["name"], hpa_name);
    let trigger = &so["spec"]["triggers"][0];
    assert_eq!(trigger["type"], "redis-sentinel-streams");
    assert_eq!(trigger["metadata"]["stream"], "kvq:tasks");
    assert_eq!(trigger["metadata"]["consumerGroup"], "kvq-workers");
    assert_eq!(trigger["metadata"]["sentinelMaster"], "mymaster");
    let cfg = keda.app_config();
    let sentinels: Vec<&str> =
        cfg["redis"]["sentinels"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(trigger["metadata"]["addresses"], sentinels.join(","));
    // Authentication from the chart's Secret, both passwords.
    let ta = keda.get("TriggerAuthentication", trigger["authenticationRef"]["name"].as_str().unwrap());
    let params: Vec<&str> =
        ta["spec"]["secretTargetRef"].as_array().unwrap().iter().map(|r| r["parameter"].as_str().unwrap()).collect();
    assert_eq!(params, ["password", "sentinelPassword"]);
    for r in ta["spec"]["secretTargetRef"].as_array().unwrap() {
        keda.get("Secret", r["name"].as_str().unwrap())["data"]
            .get(r["key"].as_str().unwrap())
            .expect("TriggerAuthentication key exists in the Secret");
    }
    // The Deployment leaves replicas to KEDA.
    assert!(keda.get("Deployment", &hpa_name)["spec"].get("replicas").is_none());

    // Standalone: the plain redis-streams trigger at the Redis Service.
    let standalone = render(&["values/dev.yaml"], &["worker.keda.enabled=true"]);
    let t = &standalone.get("ScaledObject", &hpa_name)["spec"]["triggers"][0];
    assert_eq!(t["type"], "redis-streams");
    assert_eq!(t["metadata"]["address"], format!("{RELEASE}-redis.{NAMESPACE}.svc.cluster.local:6379"));
    standalone.get("Service", &format!("{RELEASE}-redis"));
    assert!(standalone.of_kind("HorizontalPodAutoscaler").is_empty());
}

const SECRET_LOOKUP: &str = r#"(lookup "v1" "Secret" .Release.Namespace $name)"#;

/// `helm template` has no cluster, so lookup returns nothing. Stub it with a Secret "already
/// in the cluster" and check the chart keeps its values (what `helm upgrade` does).
#[test]
fn generated_redis_secret_is_kept_across_upgrades() {
    let template_path = chart_dir().join("templates/redis/secret.yaml");
    let template = std::fs::read_to_string(&template_path).unwrap();
    assert!(template.contains(SECRET_LOOKUP), "secret.yaml no longer looks up the existing Secret");

    // First install: random passwords, different each render.
    let a = render(&[], &[]);
    let b = render(&[], &[]);
    let name = format!("{RELEASE}-redis-auth");
    let pw = |m: &Manifests| m.get("Secret", &name)["data"]["redis-password"].as_str().unwrap().to_string();
    assert_ne!(pw(&a), pw(&b), "install generates a random password");
    assert_eq!(pw(&a).len(), 44, "32 random characters, base64");

    // Upgrade: a copy of the chart whose lookup returns the existing Secret.
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&chart_dir(), dir.path());
    let stub = r#"(dict "data" (dict "redis-password" "RVhJU1RJTkctUlA=" "sentinel-password" "RVhJU1RJTkctU1A="))"#;
    std::fs::write(dir.path().join("templates/redis/secret.yaml"), template.replace(SECRET_LOOKUP, stub)).unwrap();
    let upgraded = parse_docs(&try_render_in(dir.path(), &[], &[]).unwrap());
    let secret = upgraded.iter().find(|o| o["kind"] == "Secret" && o["metadata"]["name"] == name.as_str()).unwrap();
    assert_eq!(secret["data"]["redis-password"], "RVhJU1RJTkctUlA=");
    assert_eq!(secret["data"]["sentinel-password"], "RVhJU1RJTkctU1A=");
    assert_eq!(secret["metadata"]["name"], name.as_str());

    // Pods do not roll because of the Secret: its checksum is the same for every render.
    let checksum = |docs: &[Value]| -> Vec<Value> {
        docs.iter()
            .filter(|o| o["kind"] == "Deployment" || o["kind"] == "StatefulSet")
            .map(|o| o["spec"]["template"]["metadata"]["annotations"]["checksum/secret"].clone())
            .collect()
    };
    assert_eq!(checksum(&a.0), checksum(&upgraded));
    assert!(checksum(&a.0).iter().all(|c| c.is_string()));
    // ...but an explicit password change does roll them.
    let changed = render(&[], &["redis.auth.password=new-one"]);
    assert_ne!(checksum(&a.0), checksum(&changed.0));

    // An existing Secret replaces the generated one everywhere.
    let existing = render(&[], &["redis.auth.existingSecret=my-redis"]);
    assert!(existing.find("Secret", &name).is_none());
    for p in existing.pod_specs() {
        let text = serde_json::to_string(p.spec).unwrap();
        assert!(!text.contains(&name), "{} still refers to {name}", p.name());
    }
    let server = existing.get("Deployment", &format!("{RELEASE}-server"));
    assert!(serde_json::to_string(server).unwrap().contains("\"name\":\"my-redis\""));
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

#[test]
fn every_container_is_locked_down_and_has_resources() {
    for f in values_files() {
        let m = render(&[&f], &[]);
        for p in m.pod_specs() {
            let pod = p.name();
            let psc = &p.spec["securityContext"];
            assert_eq!(psc["runAsNonRoot"], true, "{f} {pod}: runAsNonRoot");
            assert_eq!(psc["seccompProfile"]["type"], "RuntimeDefault", "{f} {pod}: seccomp");
            assert!(psc["runAsUser"].as_u64().unwrap_or(0) > 0, "{f} {pod}: numeric non-root runAsUser");
            assert_eq!(p.spec["automountServiceAccountToken"], false, "{f} {pod}: no API token");
            for c in p.containers() {
                let cn = format!("{f} {pod} container {}", c["name"]);
                let sc = &c["securityContext"];
                assert_eq!(sc["allowPrivilegeEscalation"], false, "{cn}");
                assert_eq!(sc["readOnlyRootFilesystem"], true, "{cn}");
                assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{cn}");
                assert!(sc.get("privileged").is_none_or(|v| v == false), "{cn}");
                for kind in ["requests", "limits"] {
                    for r in ["cpu", "memory"] {
                        assert!(!c["resources"][kind][r].is_null(), "{cn}: resources.{kind}.{r}");
                    }
                }
            }
        }
    }
}

/// Every probe of every container points at a port the container declares, and the HTTP
/// probes at the paths the binaries serve; Services target declared ports; the app config
/// binds the declared ports.
#[test]
fn probes_and_services_point_at_ports_and_paths_that_exist() {
    let app_paths = ["/healthz", "/readyz"];
    for f in values_files() {
        let m = render(&[&f], &[]);
        let scripts = m.find("ConfigMap", &format!("{RELEASE}-redis-scripts"));
        for p in m.pod_specs() {
            for c in p.containers() {
                let cn = format!("{f} {} container {}", p.name(), c["name"]);
                let ports: Vec<&Value> = c["ports"].as_array().map(|a| a.iter().collect()).unwrap_or_default();
                for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
                    let pr = &c[probe];
                    if pr.is_null() {
                        continue;
                    }
                    if let Some(h) = pr.get("httpGet") {
                        let port = &h["port"];
                        assert!(
                            ports.iter().any(|p| &p["name"] == port || &p["containerPort"] == port),
                            "{cn} {probe}: port {port} not declared"
                        );
                        let path = h["path"].as_str().unwrap();
                        match c["name"].as_str().unwrap() {
                            "server" | "worker" => {
                                assert!(app_paths.contains(&path), "{cn} {probe}: {path}");
                                let want = if probe == "readinessProbe" { "/readyz" } else { "/healthz" };
                                assert_eq!(path, want, "{cn} {probe}");
                            }
                            "exporter" => assert_eq!(path, "/health", "{cn}"),
                            other => panic!("{cn}: unexpected HTTP probe on {other}"),
                        }
                    } else if let Some(e) = pr.get("exec") {
                        let cmd: Vec<&str> =
                            e["command"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
                        let script = cmd[1].strip_prefix("/scripts/").expect("probe runs a mounted script");
                        let scripts = scripts.expect("scripts ConfigMap");
                        assert!(
                            scripts["data"].get(script).is_some(),
                            "{cn} {probe}: {script} not in the scripts ConfigMap"
                        );
                    } else {
                        panic!("{cn} {probe}: neither httpGet nor exec");
                    }
                }
                if matches!(c["name"].as_str(), Some("server" | "worker")) {
                    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
                        assert!(!c[probe].is_null(), "{cn}: {probe} missing");
                    }
                }
            }
        }
        // Services target ports their pods declare.
        for svc in m.of_kind("Service") {
            let sel = json!({ "matchLabels": svc["spec"]["selector"] });
            let pods: Vec<_> = m
                .pod_specs()
                .into_iter()
                .filter(|p| p.owner["kind"] != "Pod" && selector_matches(&sel, p.labels()))
                .collect();
            assert!(!pods.is_empty(), "{f}: Service {} selects no pod", svc["metadata"]["name"]);
            for port in svc["spec"]["ports"].as_array().unwrap() {
                let tp = &port["targetPort"];
                for p in &pods {
                    let declared = p.containers().iter().any(|c| {
                        c["ports"]
                            .as_array()
                            .is_some_and(|ps| ps.iter().any(|cp| &cp["name"] == tp || &cp["containerPort"] == tp))
                    });
                    assert!(
                        declared,
                        "{f}: Service {} targetPort {tp} not declared by {}",
                        svc["metadata"]["name"],
                        p.name()
                    );
                }
            }
        }
        // The config file binds the ports the containers declare.
        let cfg = m.app_config();
        for (component, key) in [("server", "server"), ("worker", "worker")] {
            let d = m.get("Deployment", &format!("{RELEASE}-{component}"));
            let port = d["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"].as_u64().unwrap();
            assert_eq!(cfg[key]["bind"], format!("0.0.0.0:{port}"), "{f}: {key}.bind");
        }
    }
}

#[test]
fn network_policies_select_the_pods_they_mean() {
    let m = render(&["values/production.yaml"], &[]);
    let pods = m.pod_specs();
    let pod_of = |component: &str| -> &PodRef {
        pods.iter()
            .find(|p| p.owner["kind"] != "Pod" && p.labels()["app.kubernetes.io/component"] == component)
            .unwrap_or_else(|| panic!("no {component} workload"))
    };
    let nps = m.of_kind("NetworkPolicy");
    assert_eq!(nps.len(), 3);
    for (np_name, component) in [("kvq-redis", "redis"), ("kvq-server", "server"), ("kvq-worker", "worker")] {
        let np = m.get("NetworkPolicy", np_name);
        let selected: Vec<String> = pods
            .iter()
            .filter(|p| selector_matches(&np["spec"]["podSelector"], p.labels()))
            .map(|p| p.name())
            .collect();
        assert_eq!(selected, vec![pod_of(component).name()], "{np_name} selects exactly the {component} pods");
        // Every port the policy opens is a named port of the selected pods.
        for rule in np["spec"]["ingress"].as_array().unwrap() {
            for port in rule["ports"].as_array().unwrap() {
                let name = &port["port"];
                assert!(
                    pod_of(component)
                        .containers()
                        .iter()
                        .any(|c| c["ports"].as_array().is_some_and(|ps| ps.iter().any(|p| &p["name"] == name))),
                    "{np_name}: port {name} not declared by the {component} pods"
                );
            }
        }
    }
    // Redis: reachable only from the server, the worker and the Redis pods themselves.
    let redis_np = m.get("NetworkPolicy", "kvq-redis");
    let rule = &redis_np["spec"]["ingress"][0];
    let from = rule["from"].as_array().unwrap();
    let mut allowed: Vec<String> = Vec::new();
    for p in &pods {
        if from.iter().any(|peer| selector_matches(&peer["podSelector"], p.labels())) {
            allowed.push(p.name());
        }
    }
    assert_eq!(allowed, ["Deployment/kvq-server", "Deployment/kvq-worker", "StatefulSet/kvq-redis"]);
    let ports: Vec<&str> = rule["ports"].as_array().unwrap().iter().map(|p| p["port"].as_str().unwrap()).collect();
    assert_eq!(ports, ["redis", "sentinel"]);
    // The only other rule is the exporter's metrics port.
    let other: Vec<&Value> = redis_np["spec"]["ingress"].as_array().unwrap().iter().skip(1).collect();
    assert_eq!(other.len(), 1);
    assert_eq!(other[0]["ports"], json!([{ "port": "metrics", "protocol": "TCP" }]));
    // Off by default.
    assert!(render(&[], &[]).of_kind("NetworkPolicy").is_empty());

    // A restricted API port still lets this release's `helm test` pod in.
    let restricted = render(
        &["values/production.yaml"],
        &["networkPolicy.serverIngressFrom[0].namespaceSelector.matchLabels.name=ingress-nginx"],
    );
    let from = restricted.get("NetworkPolicy", "kvq-server")["spec"]["ingress"][0]["from"].as_array().unwrap().clone();
    assert_eq!(from.len(), 2);
    let test_pod = restricted.get("Pod", "kvq-test-write-read");
    assert!(selector_matches(&from[1]["podSelector"], &test_pod["metadata"]["labels"]));
}

/// The production values render the Redis Sentinel topology (chart README "How Redis Sentinel
/// mode works").
#[test]
fn production_renders_the_sentinel_topology() {
    let m = render(&["values/production.yaml"], &[]);
    let sts = m.get("StatefulSet", "kvq-redis");
    assert_eq!(sts["spec"]["replicas"], 3);
    assert_eq!(sts["spec"]["serviceName"], "kvq-redis-headless");
    assert_eq!(sts["spec"]["podManagementPolicy"], "Parallel");
    let pod = &sts["spec"]["template"]["spec"];
    let names: Vec<&str> = pod["containers"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["redis", "sentinel", "exporter"]);
    let image = pod["containers"][0]["image"].as_str().unwrap();
    assert!(image.starts_with("docker.io/library/redis:7."), "official redis 7 image, got {image}");
    assert_eq!(pod["containers"][1]["image"], image, "sentinel runs on the same image");

    // Hard anti-affinity across nodes on the Redis pods, zone spread.
    let term = &pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0];
    assert_eq!(term["topologyKey"], "kubernetes.io/hostname");
    assert!(selector_matches(&term["labelSelector"], &sts["spec"]["template"]["metadata"]["labels"]));
    assert_eq!(pod["topologySpreadConstraints"][0]["topologyKey"], "topology.kubernetes.io/zone");

    // Persistence and the PDB.
    assert_eq!(sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"], "10Gi");
    let pdb = m.get("PodDisruptionBudget", "kvq-redis");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    assert!(selector_matches(&pdb["spec"]["selector"], &sts["spec"]["template"]["metadata"]["labels"]));

    // Headless Service with not-ready addresses (names resolve while pods start) and the sentinel Service.
    let headless = m.get("Service", "kvq-redis-headless");
    assert_eq!(headless["spec"]["clusterIP"], "None");
    assert_eq!(headless["spec"]["publishNotReadyAddresses"], true);
    let ssvc = m.get("Service", "kvq-redis-sentinel");
    assert_eq!(ssvc["spec"]["ports"][0]["port"], 26379);

    // Scripts: start, preStop on both containers, env that parameterises them.
    let redis = &pod["containers"][0];
    let sentinel = &pod["containers"][1];
    assert_eq!(redis["command"], json!(["sh", "/scripts/redis-start.sh"]));
    assert_eq!(sentinel["command"], json!(["sh", "/scripts/sentinel-start.sh"]));
    assert_eq!(redis["lifecycle"]["preStop"]["exec"]["command"], json!(["sh", "/scripts/redis-prestop.sh"]));
    assert_eq!(sentinel["lifecycle"]["preStop"]["exec"]["command"], json!(["sh", "/scripts/sentinel-prestop.sh"]));
    assert_eq!(env_value(redis, "HEADLESS_DOMAIN"), Some("kvq-redis-headless.kvq.svc.cluster.local"));
    assert_eq!(env_value(redis, "STATEFULSET_NAME"), Some("kvq-redis"));
    assert_eq!(env_value(redis, "REPLICAS"), Some("3"));
    assert_eq!(env_value(redis, "MIN_REPLICAS_TO_WRITE"), Some("1"));
    assert_eq!(env_value(sentinel, "QUORUM"), Some("2"));
    assert_eq!(env_value(sentinel, "DOWN_AFTER_MS"), Some("5000"));
    assert_eq!(env_value(sentinel, "FAILOVER_TIMEOUT_MS"), Some("15000"));
    assert_eq!(env_value(sentinel, "PARALLEL_SYNCS"), Some("1"));
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    let prestop: u64 = env_value(redis, "PRESTOP_TIMEOUT").unwrap().parse().unwrap();
    assert!(grace > prestop + 5, "grace period {grace}s covers the preStop failover ({prestop}s)");
    // Passwords as files from the chart's Secret, never as plain env values.
    assert_eq!(env_value(redis, "REDIS_PASSWORD_FILE"), Some("/etc/redis-auth/redis-password"));
    assert_eq!(env_value(redis, "SENTINEL_PASSWORD_FILE"), Some("/etc/redis-auth/sentinel-password"));
    let auth = pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "auth").unwrap();
    assert_eq!(auth["secret"]["secretName"], "kvq-redis-auth");

    // The scripts ConfigMap carries exactly the scripts in helm/kvq/files (the dashboard JSON
    // there has its own ConfigMap; the ACL rules in files/acl/ go in only with ACL users on:
    // tests/chart/tls_acl.rs).
    let scripts = m.get("ConfigMap", "kvq-redis-scripts");
    for e in std::fs::read_dir(chart_dir().join("files")).unwrap() {
        let e = e.unwrap();
        if e.path().is_dir() {
            continue;
        }
        let name = e.file_name().into_string().unwrap();
        if !name.ends_with(".sh") {
            assert!(scripts["data"].get(&name).is_none(), "{name} is no script");
            continue;
        }
        if name.starts_with("cluster-") {
            assert!(scripts["data"].get(&name).is_none(), "{name} is a cluster-mode script");
            continue;
        }
        assert_eq!(
            scripts["data"][&name].as_str(),
            Some(std::fs::read_to_string(e.path()).unwrap().as_str()),
            "{name}"
        );
    }

    // The app follows the sentinels: every pod's stable name, master name, 1 replica per write.
    let cfg = m.app_config();
    assert_eq!(cfg["redis"]["mode"], "sentinel");
    assert_eq!(
        cfg["redis"]["sentinels"],
        json!([
            "kvq-redis-0.kvq-redis-headless.kvq.svc.cluster.local:26379",
            "kvq-redis-1.kvq-redis-headless.kvq.svc.cluster.local:26379",
            "kvq-redis-2.kvq-redis-headless.kvq.svc.cluster.local:26379",
        ])
    );
    assert_eq!(cfg["redis"]["master_name"], "mymaster");
    assert_eq!(cfg["redis"]["min_replicas_ack"], 1);
    assert!(cfg["redis"].get("url").is_none());
    // The app gets both passwords from the Secret.
    let server = m.get("Deployment", "kvq-server");
    let env = &server["spec"]["template"]["spec"]["containers"][0]["env"];
    for (var, key) in
        [("KVQ__REDIS__PASSWORD", "redis-password"), ("KVQ__REDIS__SENTINEL_PASSWORD", "sentinel-password")]
    {
        let e = env.as_array().unwrap().iter().find(|e| e["name"] == var).unwrap_or_else(|| panic!("{var}"));
        assert_eq!(e["valueFrom"]["secretKeyRef"], json!({ "name": "kvq-redis-auth", "key": key }));
    }
}

#[test]
fn staging_and_minikube_use_sentinel_and_dev_standalone() {
    for f in ["values/staging.yaml", "values/minikube.yaml"] {
        let m = render(&[f], &[]);
        assert_eq!(m.get("StatefulSet", "kvq-redis")["spec"]["replicas"], 3, "{f}");
        assert_eq!(m.app_config()["redis"]["mode"], "sentinel", "{f}");
    }
    let dev = render(&["values/dev.yaml"], &[]);
    let cfg = dev.app_config();
    assert_eq!(cfg["redis"]["mode"], "standalone");
    assert_eq!(cfg["redis"]["url"], "redis://kvq-redis:6379");
    assert_eq!(cfg["redis"]["min_replicas_ack"], 0);
    let sts = dev.get("StatefulSet", "kvq-redis");
    assert_eq!(sts["spec"]["replicas"], 1);
    let containers = sts["spec"]["template"]["spec"]["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1, "standalone: redis only");
    assert!(containers[0].get("lifecycle").is_none(), "no failover preStop in standalone");
    assert_eq!(dev.get("Service", "kvq-redis")["spec"]["ports"][0]["port"], 6379);

    // minikube: the seed deployment's shape.
    let mk = render(&["values/minikube.yaml"], &[]);
    assert_eq!(mk.get("Service", "kvq-server")["spec"]["type"], "LoadBalancer");
    for c in ["server", "worker"] {
        let hpa = mk.get("HorizontalPodAutoscaler", &format!("kvq-{c}"));
        assert_eq!(hpa["spec"]["maxReplicas"], 5);
        assert_eq!(hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"], 25);
        let d = mk.get("Deployment", &format!("kvq-{c}"));
        let ct = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(ct["resources"]["limits"], json!({ "cpu": "100m", "memory": "256Mi" }));
        assert_eq!(ct["imagePullPolicy"], "IfNotPresent");
    }
    // production: TLS Ingress, HPA min 2, PDBs.
    let prod = render(&["values/production.yaml"], &[]);
    let ing = prod.get("Ingress", "kvq-server");
    assert_eq!(ing["spec"]["tls"][0]["secretName"], "kvq-tls");
    assert_eq!(ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"], "kvq-server");
    for c in ["server", "worker"] {
        assert_eq!(prod.get("HorizontalPodAutoscaler", &format!("kvq-{c}"))["spec"]["minReplicas"], 2);
        prod.get("PodDisruptionBudget", &format!("kvq-{c}"));
    }
}

#[test]
fn schema_rejects_wrong_values() {
    let bad: &[(&[&str], &str)] = &[
        (&["redis.mode=shards"], "redis/mode"),
        (&["config.taskShards=0"], "taskShards"),
        (&["redis.cluster.masters=0"], "masters"),
        (&["serverr.replicaCount=2"], "serverr"),
        (&["server.replicaCount=two"], "replicaCount"),
        (&["server.service.type=Ingress"], "service/type"),
        (&["config.logFormat=xml"], "logFormat"),
        (&["redis.podAntiAffinity=always"], "podAntiAffinity"),
        (&["redis.auth.enabled=maybe"], "enabled"),
        (&["worker.keda.enabld=true"], "enabld"),
        // What the binaries would refuse at start is refused at render time.
        (&["config.keyPrefix=team:k"], "keyPrefix"),
        (&["worker.claimIdleMs=5"], "claimIdleMs"),
        (&["config.taskRetentionSeconds=20000000000000000"], "taskRetentionSeconds"),
    ];
    for (set, needle) in bad {
        let err = try_render_in(&chart_dir(), &[], set).expect_err(&format!("{set:?} must be rejected"));
        // Helm 4 writes the path as redis/mode, Helm 3 as redis.mode.
        assert!(
            err.contains(needle) || err.contains(&needle.replace('/', ".")),
            "{set:?}: error should name {needle}: {err}"
        );
    }
    // Sentinel settings that could never work.
    let err = try_render_in(&chart_dir(), &[], &["redis.replicas=1"]).unwrap_err();
    assert!(err.contains("redis.sentinel.quorum (2) cannot exceed redis.replicas (1)"), "{err}");
    let err = try_render_in(&chart_dir(), &[], &["redis.config.minReplicasToWrite=3"]).unwrap_err();
    assert!(err.contains("minReplicasToWrite (3) needs at least 4 Redis pods"), "{err}");
    // external mode needs a URL or sentinels
    let err = try_render_in(&chart_dir(), &[], &["redis.mode=external"]).unwrap_err();
    assert!(err.contains("redis.external.url"), "{err}");
}

#[test]
fn helm_test_hook_writes_reads_and_deletes_a_key() {
    let m = render(&[], &[]);
    let pod = m.get("Pod", "kvq-test-write-read");
    assert_eq!(pod["metadata"]["annotations"]["helm.sh/hook"], "test");
    let script = pod["spec"]["containers"][0]["args"][0].as_str().unwrap();
    assert!(script.contains("base=http://kvq-server:80"));
    for needle in ["-X PUT", "?wait=5", "content-type: application/json", "\"status\":\"applied\"", "-X DELETE"] {
        assert!(script.contains(needle), "test script lacks {needle}");
    }
    let svc = m.get("Service", "kvq-server");
    assert_eq!(svc["spec"]["ports"][0]["port"], 80);
}

/// Insta snapshots of every environment, so that every chart change shows in review.
/// Volatile fields (generated passwords) are redacted.
#[test]
fn snapshots_per_environment() {
    for env in ["dev", "minikube", "staging", "production", "production-cluster"] {
        let mut m = render(&[&format!("values/{env}.yaml")], &[]);
        for o in m.0.iter_mut() {
            if o["kind"] == "Secret" {
                for (_, v) in o["data"].as_object_mut().unwrap().iter_mut() {
                    *v = json!("[redacted]");
                }
            }
        }
        insta::assert_yaml_snapshot!(format!("chart_{env}"), m.0);
    }
}
