//! TLS and ACL users in the chart: every values file rendered with them on (the app config and
//! the Redis pods agree on the scheme, the CA path, the Secret and the users), the cert-manager
//! Certificate, and the combinations refused at render time.

use std::path::Path;

use crate::support::chart::*;
use crate::support::tls::acl_rules;
use serde_json::Value;

const TLS_ACL: [&str; 4] = [
    "redis.tls.enabled=true",
    "redis.tls.existingSecret=kvq-tls",
    "redis.tls.authClients=true",
    "redis.acl.enabled=true",
];

/// `secretName` -> mount path of the Secret volumes `c` mounts in `pod`.
fn secret_mounts(pod: &Value, c: &Value) -> Vec<(String, String)> {
    let volumes = pod["volumes"].as_array().unwrap();
    c["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| {
            let v = volumes.iter().find(|v| v["name"] == m["name"])?;
            Some((v["secret"]["secretName"].as_str()?.to_string(), m["mountPath"].as_str()?.to_string()))
        })
        .collect()
}

/// The directory where `c` sees the TLS Secret `secret`.
fn tls_dir(pod: &Value, c: &Value, secret: &str) -> String {
    secret_mounts(pod, c)
        .into_iter()
        .find(|(s, _)| s == secret)
        .unwrap_or_else(|| panic!("{} does not mount Secret {secret}", c["name"]))
        .1
}

fn parent(path: &str) -> &str {
    Path::new(path).parent().unwrap().to_str().unwrap()
}

#[test]
fn every_values_file_renders_tls_and_acl_and_the_app_agrees_with_the_redis_pods() {
    for file in values_files() {
        let base = render(&[&file], &[]);
        let external =
            base.app_config()["redis"]["url"].as_str().is_some_and(|u| !u.contains(&format!("{RELEASE}-redis")))
                || base.find("StatefulSet", &format!("{RELEASE}-redis")).is_none();
        if external {
            continue; // external mode: its own test below
        }
        if base.app_config()["redis"]["mode"] == "cluster" {
            cluster_renders_tls_and_refuses_acl(&file);
            continue;
        }
        let m = render(&[&file], &TLS_ACL);
        let cfg = m.app_config();
        let redis = &cfg["redis"];
        let sentinel = redis["mode"] == "sentinel";
        if sentinel {
            assert_eq!((&redis["tls"], &redis["sentinel_tls"]), (&Value::Bool(true), &Value::Bool(true)), "{file}");
        } else {
            assert!(redis["url"].as_str().unwrap().starts_with("rediss://"), "{file}: {redis}");
        }
        let ca = redis["tls_ca_file"].as_str().unwrap_or_else(|| panic!("{file}: no CA in {redis}"));
        let sts = m.get("StatefulSet", &format!("{RELEASE}-redis"));
        let redis_pod = &sts["spec"]["template"]["spec"];
        let redis_c = redis_pod["containers"].as_array().unwrap().iter().find(|c| c["name"] == "redis").unwrap();
        let redis_port = redis_c["ports"][0]["containerPort"].as_u64().unwrap();
        // The servers listen with TLS on the port the app connects to, and trust the same CA.
        assert_eq!(env_value(redis_c, "REDIS_TLS"), Some("1"), "{file}");
        assert_eq!(env_value(redis_c, "REDIS_PORT"), Some(redis_port.to_string().as_str()), "{file}");
        if !sentinel {
            assert!(redis["url"].as_str().unwrap().ends_with(&format!(":{redis_port}")), "{file}: {redis}");
        }
        assert_eq!(env_value(redis_c, "TLS_AUTH_CLIENTS"), Some("yes"), "{file}");
        let redis_dir = tls_dir(redis_pod, redis_c, "kvq-tls");
        assert_eq!(env_value(redis_c, "TLS_CA_FILE"), Some(format!("{redis_dir}/ca.crt").as_str()), "{file}");
        for c in redis_pod["containers"].as_array().unwrap() {
            tls_dir(redis_pod, c, "kvq-tls"); // redis, sentinel and the exporter all have it
        }
        if let Some(exporter) = redis_pod["containers"].as_array().unwrap().iter().find(|c| c["name"] == "exporter") {
            assert!(env_value(exporter, "REDIS_ADDR").unwrap().starts_with("rediss://"), "{file}");
            assert_eq!(env_value(exporter, "REDIS_USER"), Some("exporter"), "{file}");
            let key = exporter["env"].as_array().unwrap().iter().find(|e| e["name"] == "REDIS_PASSWORD").unwrap();
            assert_eq!(key["valueFrom"]["secretKeyRef"]["key"], "acl-exporter", "{file}");
        }

        // The ACL users the pods create have the documented rules and a password each.
        let scripts = m.get("ConfigMap", &format!("{RELEASE}-redis-scripts"));
        let secret = m.get("Secret", &format!("{RELEASE}-redis-auth"));
        let prefix = cfg["redis"]["key_prefix"].as_str().unwrap();
        for user in ["kvq-server", "kvq-worker", "replication", "sentinel", "exporter", "probe"] {
            let text = scripts["data"][format!("acl-{user}.acl")].as_str().unwrap_or_else(|| panic!("{file}: {user}"));
            let rules: Vec<&str> = text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).collect();
            assert_eq!(rules.join(" "), acl_rules(user, prefix), "{file}: {user}");
            assert!(secret["data"][format!("acl-{user}")].is_string(), "{file}: no password for {user}");
        }
        assert_eq!(env_value(redis_c, "REDIS_USER"), Some("probe"), "{file}");

        // Each app binary: its own user and password key, the CA (and client certificate) at
        // the paths its config names, from the Secret (a mounted Secret, never a ConfigMap).
        for component in ["server", "worker"] {
            let d = m.get("Deployment", &format!("{RELEASE}-{component}"));
            let pod = &d["spec"]["template"]["spec"];
            let c = &pod["containers"][0];
            assert_eq!(env_value(c, "KVQ__REDIS__USERNAME"), Some(format!("kvq-{component}").as_str()), "{file}");
            let pw = c["env"].as_array().unwrap().iter().find(|e| e["name"] == "KVQ__REDIS__PASSWORD").unwrap();
            assert_eq!(pw["valueFrom"]["secretKeyRef"]["key"], format!("acl-kvq-{component}"), "{file}");
            assert_eq!(tls_dir(pod, c, "kvq-tls"), parent(ca), "{file}: {component}");
            for key in ["tls_cert_file", "tls_key_file"] {
                assert_eq!(parent(redis[key].as_str().unwrap()), parent(ca), "{file}: {key}");
            }
        }
        for cm in m.of_kind("ConfigMap") {
            assert!(cm["data"].get("ca.crt").is_none(), "{file}: a CA in a ConfigMap");
        }
        if !sentinel {
            standalone_redis_conf_agrees_with_the_app(&file, &m, redis_c, &redis_dir, redis_port);
        }
    }
}

/// Cluster mode: TLS for clients, replication and the cluster bus, the app told to use it with
/// the mounted CA; ACL users refused at render time (the scripts need CLUSTER commands).
fn cluster_renders_tls_and_refuses_acl(file: &str) {
    let m = render(&[file], &TLS_ACL[..3]);
    let cfg = m.app_config();
    assert_eq!(cfg["redis"]["tls"], true, "{file}");
    let sts = m.get("StatefulSet", &format!("{RELEASE}-redis"));
    let pod = &sts["spec"]["template"]["spec"];
    let redis_c = pod["containers"].as_array().unwrap().iter().find(|c| c["name"] == "redis").unwrap();
    assert_eq!(env_value(redis_c, "REDIS_TLS"), Some("1"), "{file}");
    let dir = tls_dir(pod, redis_c, "kvq-tls");
    assert_eq!(cfg["redis"]["tls_ca_file"].as_str().map(parent), Some(dir.as_str()), "{file}");
    let start = m.get("ConfigMap", &format!("{RELEASE}-redis-scripts"))["data"]["cluster-start.sh"].as_str().unwrap();
    assert!(start.contains("echo \"tls-cluster yes\""), "{file}: the cluster bus uses TLS too");
    for c in pod["containers"].as_array().unwrap() {
        tls_dir(pod, c, "kvq-tls");
    }
    let err = try_render_in(&chart_dir(), &[file], &TLS_ACL).expect_err("ACL users in cluster mode");
    assert!(err.contains("redis.acl.enabled is not supported with redis.mode=cluster"), "{file}: {err}");
}

/// Runs the rendered redis-start.sh (standalone: no sentinel to ask) with the rendered env and
/// `EXEC=0`, which prints the redis.conf it would start with, and checks it against the app's
/// side: TLS only on the app's port, the CA of the mounted Secret, the default user off and the
/// users the app authenticates as, created with their Secret passwords.
fn standalone_redis_conf_agrees_with_the_app(file: &str, m: &Manifests, redis_c: &Value, tls_dir: &str, port: u64) {
    let dir = tempfile::tempdir().unwrap();
    let scripts = dir.path().join("scripts");
    let auth = dir.path().join("auth");
    std::fs::create_dir_all(&scripts).unwrap();
    std::fs::create_dir_all(&auth).unwrap();
    for (name, text) in m.get("ConfigMap", &format!("{RELEASE}-redis-scripts"))["data"].as_object().unwrap() {
        std::fs::write(scripts.join(name), text.as_str().unwrap()).unwrap();
    }
    let secret = m.get("Secret", &format!("{RELEASE}-redis-auth"));
    for (k, v) in secret["data"].as_object().unwrap() {
        std::fs::write(auth.join(k), b64decode(v.as_str().unwrap())).unwrap();
    }
    let map = |v: &str| {
        v.replacen("/scripts", scripts.to_str().unwrap(), 1).replacen("/etc/redis-auth", auth.to_str().unwrap(), 1)
    };
    let mut cmd = std::process::Command::new("sh");
    cmd.arg(scripts.join("redis-start.sh")).env_clear().env("PATH", std::env::var("PATH").unwrap());
    for e in c_env(redis_c) {
        cmd.env(&e.0, map(&e.1));
    }
    let run = dir.path().join("run");
    cmd.env("POD_NAME", "kvq-redis-0").env("EXEC", "0").env("CONF_DIR", &run).env("DATA_DIR", dir.path().join("data"));
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{file}: redis-start.sh: {}", String::from_utf8_lossy(&out.stderr));
    let conf = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = conf.lines().collect();
    assert!(lines.contains(&"port 0"), "{file}: a plaintext port in\n{conf}");
    assert!(lines.contains(&format!("tls-port {port}").as_str()), "{file}: TLS on {port}:\n{conf}");
    assert!(lines.contains(&format!("tls-ca-cert-file {tls_dir}/ca.crt").as_str()), "{file}:\n{conf}");
    assert!(lines.contains(&"tls-auth-clients yes"), "{file}:\n{conf}");
    assert!(lines.contains(&"user default off"), "{file}:\n{conf}");
    for user in ["kvq-server", "kvq-worker", "probe", "exporter"] {
        let line = lines.iter().find(|l| l.starts_with(&format!("user {user} on resetpass "))).unwrap_or_else(|| {
            panic!("{file}: no user {user} in\n{conf}");
        });
        // the password, \xHH-escaped by the script, is the Secret's
        let pw = b64decode(secret["data"][format!("acl-{user}")].as_str().unwrap());
        let escaped: String = format!(">{pw}").bytes().map(|b| format!("\\x{b:02x}")).collect();
        assert!(line.contains(&escaped), "{file}: {user}'s password is not the Secret's");
        assert!(line.ends_with(&format!("{} ", acl_rules(user, "kvq"))), "{file}: {user}'s rules: {line}");
    }
}

/// A container's plain env values (the Secret-backed ones are files for the scripts).
fn c_env(c: &Value) -> Vec<(String, String)> {
    c["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| Some((e["name"].as_str()?.to_string(), e["value"].as_str()?.to_string())))
        .collect()
}

#[test]
fn cert_manager_issues_one_certificate_that_names_every_pod_and_the_loopback() {
    let m = render(
        &["values/production.yaml"],
        &[
            "redis.tls.enabled=true",
            "redis.tls.certManager.issuerRef.name=internal-ca",
            "redis.tls.certManager.issuerRef.kind=ClusterIssuer",
        ],
    );
    let certs = m.of_kind("Certificate");
    assert_eq!(certs.len(), 1);
    let cert = certs[0];
    let secret = cert["spec"]["secretName"].as_str().unwrap();
    assert_eq!(cert["spec"]["issuerRef"]["kind"], "ClusterIssuer");
    let names = strings(&cert["spec"]["dnsNames"]);
    // The hosts kvq connects to: what the sentinels announce (pod.headless domain).
    for addr in m.app_config()["redis"]["sentinels"].as_array().unwrap() {
        let host = addr.as_str().unwrap().rsplit_once(':').unwrap().0;
        let (_, domain) = host.split_once('.').unwrap();
        assert!(names.contains(&format!("*.{domain}")), "{host} not covered by {names:?}");
    }
    assert!(names.contains(&"localhost".to_string()));
    assert_eq!(strings(&cert["spec"]["ipAddresses"]), ["127.0.0.1"]);
    assert!(strings(&cert["spec"]["usages"]).contains(&"client auth".to_string()), "replicas present it as clients");
    let sts = m.get("StatefulSet", &format!("{RELEASE}-redis"));
    let pod = &sts["spec"]["template"]["spec"];
    tls_dir(pod, &pod["containers"][0], secret);
    let d = m.get("Deployment", &format!("{RELEASE}-server"));
    tls_dir(&d["spec"]["template"]["spec"], &d["spec"]["template"]["spec"]["containers"][0], secret);
    assert!(render(&["values/production.yaml"], &[]).of_kind("Certificate").is_empty());
}

#[test]
fn external_mode_takes_a_managed_redis_over_tls_with_a_username() {
    let m = render(
        &["helm/kvq/ci/external-redis-values.yaml"],
        &[
            "redis.external.url=rediss://master.cache.example.com:6379",
            "redis.tls.enabled=true",
            "redis.external.username=kvq",
            "redis.auth.existingSecret=managed",
        ],
    );
    let redis = &m.app_config()["redis"];
    assert_eq!(redis["url"], "rediss://master.cache.example.com:6379");
    assert!(redis.get("tls_ca_file").is_none(), "no CA Secret: the system's roots");
    for component in ["server", "worker"] {
        let c = &m.get("Deployment", &format!("{RELEASE}-{component}"))["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(env_value(c, "KVQ__REDIS__USERNAME"), Some("kvq"));
    }
    let with_ca = render(
        &["helm/kvq/ci/external-redis-values.yaml"],
        &["redis.external.url=rediss://r:6380", "redis.tls.enabled=true", "redis.tls.existingSecret=managed-ca"],
    );
    assert_eq!(with_ca.app_config()["redis"]["tls_ca_file"], "/etc/redis-tls/ca.crt");
}

#[test]
fn impossible_tls_and_acl_combinations_fail_the_render_with_the_reason() {
    let ext = "helm/kvq/ci/external-redis-values.yaml";
    let cases: &[(&[&str], &[&str], &str)] = &[
        (&[], &["redis.tls.enabled=true"], "needs certificates"),
        (
            &[],
            &["redis.tls.enabled=true", "redis.tls.existingSecret=s", "redis.tls.certManager.issuerRef.name=ca"],
            "not both",
        ),
        (&[], &["redis.tls.authClients=true"], "authClients needs redis.tls.enabled"),
        (&[], &["redis.acl.enabled=true", "redis.auth.enabled=false"], "needs redis.auth.enabled"),
        (&[], &["redis.acl.enabled=true", "redis.auth.extraPassword=x"], "extraPassword"),
        (&[ext], &["redis.acl.enabled=true"], "redis.external.username"),
        (&[ext], &["redis.tls.enabled=true"], "rediss://"),
        (&[ext], &["redis.external.url=rediss://r:6380"], "set redis.tls.enabled"),
        (
            &[ext],
            &[
                "redis.external.url=rediss://r:6380",
                "redis.tls.enabled=true",
                "redis.tls.certManager.issuerRef.name=ca",
            ],
            "certManager",
        ),
        (&[ext], &["redis.external.username=kvq"], "existingSecret"),
        (&[], &["redis.external.username=kvq"], "external mode"),
    ];
    for (values, set, needle) in cases {
        match try_render_in(&chart_dir(), values, set) {
            Ok(_) => panic!("{values:?} {set:?} rendered; expected a failure naming {needle:?}"),
            Err(e) => assert!(e.contains(needle), "{values:?} {set:?}: {needle:?} not in:\n{e}"),
        }
    }
}
