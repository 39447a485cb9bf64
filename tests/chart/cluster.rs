//! Cluster mode in the chart (`redis.mode=cluster`, and `external` with cluster endpoints): the
//! Redis Cluster StatefulSet and what goes with it, the app's cluster settings, and the
//! combinations refused at render time. The scripts themselves run in tests/faults/cluster_pods.rs.

use crate::support::chart::*;
use serde_json::{json, Value};

fn redis_container(m: &Manifests) -> Value {
    let sts = m.get("StatefulSet", "kvq-redis");
    sts["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "redis")
        .unwrap()
        .clone()
}

fn assert_refused(set: &[&str], needle: &str) {
    let err = try_render_in(&chart_dir(), &[], set).expect_err(&format!("{set:?} must be refused"));
    assert!(err.contains(needle), "{set:?}: the error should say {needle:?}: {err}");
}

#[test]
fn production_cluster_renders_a_redis_cluster_and_points_the_app_at_every_node() {
    let m = render(&["values/production-cluster.yaml"], &[]);
    let sts = m.get("StatefulSet", "kvq-redis");
    assert_eq!(sts["spec"]["replicas"], 6, "3 masters x (1 + 1 replica)");
    assert_eq!(sts["spec"]["podManagementPolicy"], "Parallel", "creation waits for every pod");
    let spec = &sts["spec"]["template"]["spec"];
    let c = redis_container(&m);
    assert_eq!(c["command"], json!(["sh", "/scripts/cluster-start.sh"]));
    assert_eq!(c["lifecycle"]["preStop"]["exec"]["command"], json!(["sh", "/scripts/cluster-prestop.sh"]));
    assert_eq!(c["readinessProbe"]["exec"]["command"], json!(["sh", "/scripts/redis-probe.sh", "ready"]));
    let ports: Vec<(&str, u64)> = c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), p["containerPort"].as_u64().unwrap()))
        .collect();
    assert_eq!(ports, [("redis", 6379), ("cluster-bus", 16379)]);
    for (k, v) in [
        ("REDIS_MODE", "cluster"),
        ("CLUSTER_BUS_PORT", "16379"),
        ("CLUSTER_REPLICAS_PER_MASTER", "1"),
        ("REPLICAS", "6"),
    ] {
        assert_eq!(env_value(&c, k), Some(v), "{k}");
    }
    let pod_ip = c["env"].as_array().unwrap().iter().find(|e| e["name"] == "POD_IP").unwrap();
    assert_eq!(pod_ip["valueFrom"]["fieldRef"]["fieldPath"], "status.podIP", "announced on the cluster bus");
    assert!(env_value(&c, "MASTER_NAME").is_none(), "no sentinel settings in cluster mode");
    assert_eq!(
        spec["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]["topologyKey"],
        "kubernetes.io/hostname",
        "production: no two copies of a shard on one node"
    );
    assert!(sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "10Gi");
    m.get("PodDisruptionBudget", "kvq-redis");

    // Names for every pod, the bus port between Redis pods only; no Service in front of Redis.
    let headless = m.get("Service", "kvq-redis-headless");
    assert_eq!(headless["spec"]["publishNotReadyAddresses"], true);
    assert!(headless["spec"]["ports"].as_array().unwrap().iter().any(|p| p["name"] == "cluster-bus"));
    assert!(m.find("Service", "kvq-redis").is_none() && m.find("Service", "kvq-redis-sentinel").is_none());
    let np = m.get("NetworkPolicy", "kvq-redis");
    let bus_rules: Vec<&Value> = np["spec"]["ingress"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["ports"].as_array().is_some_and(|ps| ps.iter().any(|p| p["port"] == "cluster-bus")))
        .collect();
    assert_eq!(bus_rules.len(), 1, "{np}");
    assert_eq!(
        bus_rules[0]["from"],
        json!([{"podSelector": {"matchLabels": {
            "app.kubernetes.io/name": "kvq", "app.kubernetes.io/instance": "kvq", "app.kubernetes.io/component": "redis"}}}]),
        "only the Redis pods reach the cluster bus"
    );

    // The cluster scripts and their shared helpers, none of the sentinel ones.
    let scripts = m.get("ConfigMap", "kvq-redis-scripts");
    let mut names: Vec<&str> = scripts["data"].as_object().unwrap().keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "cluster-join.sh",
            "cluster-prestop.sh",
            "cluster-start.sh",
            "redis-extra.conf",
            "redis-lib.sh",
            "redis-probe.sh"
        ]
    );

    // The app: cluster mode, every pod as a seed, 16 shards, one replica per write.
    let cfg = m.app_config();
    assert_eq!(cfg["redis"]["mode"], "cluster");
    let want: Vec<String> =
        (0..6).map(|i| format!("kvq-redis-{i}.kvq-redis-headless.kvq.svc.cluster.local:6379")).collect();
    assert_eq!(strings(&cfg["redis"]["nodes"]), want);
    assert_eq!(cfg["tasks"]["shards"], 16);
    assert_eq!(cfg["redis"]["min_replicas_ack"], 1);
    assert!(cfg["redis"].get("sentinels").is_none() && cfg["redis"].get("url").is_none(), "{cfg}");
    let server = m.get("Deployment", "kvq-server");
    let env = server["spec"]["template"]["spec"]["containers"][0]["env"].as_array().unwrap();
    assert!(env.iter().any(|e| e["name"] == "KVQ__REDIS__PASSWORD"));
    assert!(env.iter().all(|e| e["name"] != "KVQ__REDIS__SENTINEL_PASSWORD"));
}

#[test]
fn cluster_size_shard_count_and_acknowledgements_follow_the_values() {
    let m = render(
        &[],
        &["redis.mode=cluster", "redis.cluster.masters=4", "redis.cluster.replicasPerMaster=2", "config.taskShards=64"],
    );
    assert_eq!(m.get("StatefulSet", "kvq-redis")["spec"]["replicas"], 12);
    let cfg = m.app_config();
    assert_eq!(cfg["redis"]["nodes"].as_array().unwrap().len(), 12);
    assert_eq!(cfg["tasks"]["shards"], 64);
    assert_eq!(env_value(&redis_container(&m), "CLUSTER_REPLICAS_PER_MASTER"), Some("2"));
    // Without replicas nothing can acknowledge a write.
    let m = render(&[], &["redis.mode=cluster", "redis.cluster.replicasPerMaster=0"]);
    assert_eq!(m.app_config()["redis"]["min_replicas_ack"], 0);
    // Shards are a cluster-mode setting only.
    assert!(render(&[], &[]).app_config()["tasks"].get("shards").is_none());
}

#[test]
fn cluster_combinations_that_cannot_work_are_refused() {
    assert_refused(&["redis.mode=cluster", "redis.cluster.masters=2"], "at least 3 masters");
    assert_refused(&["redis.mode=cluster", "redis.minReplicasAck=2"], "exceeds redis.cluster.replicasPerMaster (1)");
    assert_refused(&["redis.mode=cluster", "redis.acl.enabled=true"], "not supported with redis.mode=cluster");
    assert_refused(
        &["redis.mode=cluster", "worker.keda.enabled=true"],
        "worker.keda.enabled is not supported in cluster mode",
    );
    assert_refused(&["redis.mode=cluster", "config.taskShards=2000"], "taskShards");
    assert_refused(&["redis.mode=cluster", "redis.pdb.maxUnavailable=0"], "maxUnavailable is 0");
}

#[test]
fn external_cluster_endpoints_reach_the_app() {
    let set = [
        "redis.mode=external",
        "redis.external.cluster.nodes[0]=redis-a.example:6379",
        "redis.external.cluster.nodes[1]=redis-b.example:6380",
        "redis.auth.existingSecret=managed",
        "redis.external.username=kvq",
        "redis.tls.enabled=true",
    ];
    let m = render(&[], &set);
    assert!(m.of_kind("StatefulSet").is_empty(), "nothing of Redis is deployed");
    let cfg = m.app_config();
    assert_eq!(cfg["redis"]["mode"], "cluster");
    assert_eq!(cfg["redis"]["nodes"], json!(["redis-a.example:6379", "redis-b.example:6380"]));
    assert_eq!(cfg["redis"]["tls"], true);
    assert_eq!(cfg["redis"]["min_replicas_ack"], 0, "unknown replicas: the user sets it");
    assert_eq!(cfg["tasks"]["shards"], 16);
    let c = &m.get("Deployment", "kvq-worker")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(env_value(c, "KVQ__REDIS__USERNAME"), Some("kvq"));
    let pw = c["env"].as_array().unwrap().iter().find(|e| e["name"] == "KVQ__REDIS__PASSWORD").unwrap();
    assert_eq!(pw["valueFrom"]["secretKeyRef"]["name"], "managed");
    // One endpoint kind at a time.
    assert_refused(
        &["redis.mode=external", "redis.external.cluster.nodes[0]=a:6379", "redis.external.url=redis://b:6379"],
        "set only the one kvq should use",
    );
}
