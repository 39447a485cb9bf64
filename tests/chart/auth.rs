//! API authentication in the chart: where the token files come from (a Secret, never a
//! ConfigMap), how the server finds them, what each environment chooses, the render-time
//! refusals, and the `helm test` pod's own token, run for real against the rendered server.

use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::support::chart::*;
use crate::support::TestRedis;

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

fn secret_text(m: &Manifests, name: &str, key: &str) -> String {
    b64decode(m.get("Secret", name)["data"][key].as_str().unwrap_or_else(|| panic!("{name} has no {key}")))
}

fn server_container(m: &Manifests) -> &Value {
    &m.get("Deployment", "kvq-server")["spec"]["template"]["spec"]["containers"][0]
}

#[test]
fn tokens_come_from_a_secret_mounted_into_the_server_only() {
    let m = render(&[], &[]);
    assert_eq!(m.app_config()["auth"]["mode"], "tokens", "secure by default");
    let file = secret_text(&m, "kvq-auth", "tokens.yaml");
    // The app itself accepts the file, and it holds hashes of the generated tokens only.
    kvq::server::auth::TokenSet::parse(&file).unwrap_or_else(|e| panic!("the server refuses the file: {e}\n{file}"));
    let entries: Value = serde_yaml_ng::from_str(&file).unwrap();
    let admin = secret_text(&m, "kvq-auth", "admin-token");
    let test = secret_text(&m, "kvq-auth", "test-token");
    assert!(admin.len() >= 32 && test.len() >= 32 && admin != test);
    let entry = |name: &str| entries["tokens"].as_array().unwrap().iter().find(|e| e["name"] == name).unwrap().clone();
    assert_eq!(entry("admin")["sha256"], sha256_hex(&admin).as_str());
    assert_eq!(entry("admin")["scopes"], serde_json::json!(["read", "write"]));
    assert!(entry("admin").get("prefixes").is_none(), "admin: every key");
    assert_eq!(entry("helm-test")["sha256"], sha256_hex(&test).as_str());
    assert_eq!(entry("helm-test")["prefixes"], serde_json::json!(["helm-test-", "remote-test-"]));
    assert!(!file.contains(&admin) && !file.contains(&test), "the file holds no token");
    // Nothing of it in a ConfigMap.
    for cm in m.of_kind("ConfigMap") {
        let text = cm.to_string();
        for secret in [&admin, &test, &sha256_hex(&admin), &sha256_hex(&test)] {
            assert!(!text.contains(secret.as_str()), "ConfigMap {} holds a token or hash", cm["metadata"]["name"]);
        }
    }

    let c = server_container(&m);
    assert_eq!(env_value(c, "KVQ__AUTH__TOKENS_FILE"), Some("/etc/kvq-auth/chart/tokens.yaml"));
    let mount = c["volumeMounts"].as_array().unwrap().iter().find(|v| v["name"] == "auth-tokens").unwrap();
    assert_eq!(mount["mountPath"], "/etc/kvq-auth/chart");
    assert_eq!(mount["readOnly"], true);
    assert!(mount.get("subPath").is_none(), "a subPath mount is never updated, so no reload");
    let pod = &m.get("Deployment", "kvq-server")["spec"]["template"]["spec"];
    let vol = pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "auth-tokens").unwrap();
    assert_eq!(vol["secret"]["secretName"], "kvq-auth");
    // The worker needs no tokens.
    let worker = m.get("Deployment", "kvq-worker").to_string();
    assert!(!worker.contains("auth-tokens") && !worker.contains("KVQ__AUTH__TOKENS_FILE"));
    // A token change must not roll the pods (the server reloads): no checksum of the Secret.
    let annotations = &pod.get("metadata").cloned().unwrap_or_default();
    assert!(!annotations.to_string().contains("kvq-auth"));
}

#[test]
fn an_existing_secret_and_inline_entries_are_merged() {
    let hash = "ab".repeat(32);
    let sha = format!("auth.tokens[0].sha256={hash}");
    let m = render(
        &[],
        &[
            "auth.existingSecret=team-tokens",
            "auth.existingSecretKey=clients.yaml",
            "auth.tokens[0].name=ci",
            "auth.tokens[0].scopes[0]=read",
            "auth.tokens[0].prefixes[0]=ci:",
            &sha,
        ],
    );
    let c = server_container(&m);
    assert_eq!(
        env_value(c, "KVQ__AUTH__TOKENS_FILE"),
        Some("/etc/kvq-auth/chart/tokens.yaml,/etc/kvq-auth/existing/clients.yaml")
    );
    let pod = &m.get("Deployment", "kvq-server")["spec"]["template"]["spec"];
    let vol = pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "auth-existing").unwrap();
    assert_eq!(vol["secret"]["secretName"], "team-tokens");
    assert_eq!(vol["secret"]["items"][0]["key"], "clients.yaml");
    let file = secret_text(&m, "kvq-auth", "tokens.yaml");
    let set = kvq::server::auth::TokenSet::parse(&file).unwrap();
    assert_eq!(set.len(), 3, "ci, admin and helm-test: {file}");
    assert!(file.contains(&hash) && file.contains("ci:"));

    // Only the user's Secret: the chart renders none of its own.
    let m = render(&[], &["auth.existingSecret=team-tokens", "auth.generateToken=false", "tests.enabled=false"]);
    assert!(m.find("Secret", "kvq-auth").is_none());
    assert_eq!(env_value(server_container(&m), "KVQ__AUTH__TOKENS_FILE"), Some("/etc/kvq-auth/existing/tokens.yaml"));
}

#[test]
fn a_tokens_mode_nobody_could_call_or_a_token_in_clear_is_refused_at_render() {
    let err = try_render_in(&chart_dir(), &[], &["auth.generateToken=false"]).unwrap_err();
    for needle in ["auth.mode=tokens has no token source", "auth.existingSecret", "auth.tokens", "auth.mode=none"] {
        assert!(err.contains(needle), "{needle} in {err}");
    }
    // The test pod's own token does not count as a source.
    assert!(try_render_in(&chart_dir(), &[], &["auth.generateToken=false", "tests.enabled=true"]).is_err());
    // An entry with the token itself, or a malformed hash, fails the schema.
    for bad in ["auth.tokens[0].token=hunter2", "auth.tokens[0].sha256=abc"] {
        let set = ["auth.tokens[0].name=x", "auth.tokens[0].scopes[0]=read", bad];
        assert!(try_render_in(&chart_dir(), &[], &set).is_err(), "{bad}");
    }
    assert!(try_render_in(&chart_dir(), &[], &["auth.mode=open"]).is_err());
    // Names the server would refuse as repeated.
    let sha = format!("auth.tokens[0].sha256={}", "a".repeat(64));
    let err = try_render_in(&chart_dir(), &[], &["auth.tokens[0].name=admin", "auth.tokens[0].scopes[0]=read", &sha])
        .unwrap_err();
    assert!(err.contains("the name \"admin\" is the chart's generated token's"), "{err}");
    let sha1 = format!("auth.tokens[1].sha256={}", "b".repeat(64));
    let twice = ["auth.tokens[0].name=ci", "auth.tokens[0].scopes[0]=read", &sha, "auth.tokens[1].name=ci"];
    let mut twice = twice.to_vec();
    twice.extend(["auth.tokens[1].scopes[0]=read", &sha1]);
    let err = try_render_in(&chart_dir(), &[], &twice).unwrap_err();
    assert!(err.contains("the name \"ci\" appears twice"), "{err}");
}

#[test]
fn environments_choose_their_mode_and_notes_say_how_to_get_a_token() {
    for env in ["production", "staging"] {
        let m = render(&[&format!("values/{env}.yaml")], &[]);
        assert_eq!(m.app_config()["auth"]["mode"], "tokens", "{env}");
        assert!(env_value(server_container(&m), "KVQ__AUTH__TOKENS_FILE").is_some(), "{env}");
    }
    let dev = render(&["values/dev.yaml"], &[]);
    assert_eq!(dev.app_config()["auth"]["mode"], "none");
    assert!(dev.find("Secret", "kvq-auth").is_none());
    assert!(env_value(server_container(&dev), "KVQ__AUTH__TOKENS_FILE").is_none());
    let test_pod = dev.get("Pod", "kvq-test-write-read");
    assert!(test_pod["spec"]["containers"][0].get("env").is_none(), "no token to read with auth off");

    let notes = crate::values::render_notes(&["values/production.yaml"], &[]);
    let read = "kubectl get secret -n kvq kvq-auth -o jsonpath='{.data.admin-token}' | base64 -d";
    assert!(notes.contains(read), "NOTES show how to read the admin token:\n{notes}");
    assert!(notes.contains("Authorization: Bearer $KVQ_TOKEN"), "{notes}");
    let notes = crate::values::render_notes(&["values/dev.yaml"], &[]);
    assert!(notes.contains("WARNING: API authentication is off"), "{notes}");
    assert!(!notes.contains("admin-token"), "{notes}");
}

/// The rendered `helm test` script, run for real: the rendered server (auth on, its token file
/// from the rendered Secret) against a real Redis, the script's base URL pointed at it and its
/// token taken from the Secret as the kubelet would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_helm_test_pod_passes_with_its_own_token_against_the_rendered_server() {
    let m = render(&["values/dev.yaml"], &["auth.mode=tokens"]);
    let dir = tempfile::tempdir().unwrap();
    let password = secret_text(&m, "kvq-redis-auth", "redis-password");
    let redis = TestRedis::builder().password(&password).start();
    let redis_port = redis.port;
    let mut app = run_app_containers(&m, dir.path(), |cfg| {
        cfg["redis"]["url"] = format!("redis://127.0.0.1:{redis_port}").into();
    });
    app.probes_pass(Duration::from_secs(30)).await;

    let pod = m.get("Pod", "kvq-test-write-read");
    let c = &pod["spec"]["containers"][0];
    let script = c["args"][0]
        .as_str()
        .unwrap()
        .replace("base=http://kvq-server:80", &format!("base=http://127.0.0.1:{}", app.server_port));
    let token_ref = &c["env"][0]["valueFrom"]["secretKeyRef"];
    assert_eq!((token_ref["name"].as_str(), token_ref["key"].as_str()), (Some("kvq-auth"), Some("test-token")));
    let token = secret_text(&m, "kvq-auth", "test-token");
    let (ok, out) = run_script(&script, &token).await;
    assert!(ok, "helm test failed:\n{out}");
    assert!(out.contains("helm test passed"), "{out}");
    // And it fails with another token: the pod really authenticates.
    let (ok, out) = run_script(&script, "not-the-token").await;
    assert!(!ok, "the test passed with a wrong token:\n{out}");

    // The tests' token reaches the helm test's and the black-box suite's keys, nothing else.
    let tests = crate::support::HttpClient::with_client(
        &format!("http://127.0.0.1:{}", app.server_port),
        crate::support::bearer_client(&secret_text(&m, "kvq-auth", "test-token")),
    );
    assert_eq!(tests.put("remote-test-x", "v", "").await.status(), 202);
    assert_eq!(tests.put("production-data", "v", "").await.status(), 403);

    // The generated admin token works on every key; no token is refused.
    let http = app.http(Duration::from_secs(15));
    http.write_read_delete("chart-auth-key").await;
    let anonymous = reqwest::get(format!("http://127.0.0.1:{}/v1/keys/chart-auth-key", app.server_port)).await.unwrap();
    assert_eq!(anonymous.status(), 401);
}

/// Runs a pod's shell script here, with only PATH and the token in its environment.
async fn run_script(script: &str, token: &str) -> (bool, String) {
    let (script, token) = (script.to_string(), token.to_string());
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new("sh")
            .args(["-ec", &script])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap())
            .env("KVQ_TEST_TOKEN", token)
            .output()
            .expect("sh");
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
    })
    .await
    .unwrap()
}

/// `helm template` has no cluster, so lookup returns nothing: stub it with the auth Secret
/// "already in the cluster" and check an upgrade keeps its tokens (and their entries).
#[test]
fn generated_tokens_are_kept_across_upgrades() {
    let lookup = r#"(lookup "v1" "Secret" .Release.Namespace $name)"#;
    let template = std::fs::read_to_string(chart_dir().join("templates/server/auth-secret.yaml")).unwrap();
    assert!(template.contains(lookup), "auth-secret.yaml no longer looks up the existing Secret");
    // First installs: new tokens each time.
    let (a, b) = (render(&[], &[]), render(&[], &[]));
    assert_ne!(secret_text(&a, "kvq-auth", "admin-token"), secret_text(&b, "kvq-auth", "admin-token"));

    let dir = tempfile::tempdir().unwrap();
    crate::values::copy_dir(&chart_dir(), dir.path());
    // "QURNSU4tVE9LRU4=" and "VEVTVC1UT0tFTg==": ADMIN-TOKEN and TEST-TOKEN.
    let stub = r#"(dict "data" (dict "admin-token" "QURNSU4tVE9LRU4=" "test-token" "VEVTVC1UT0tFTg=="))"#;
    std::fs::write(dir.path().join("templates/server/auth-secret.yaml"), template.replace(lookup, stub)).unwrap();
    let upgraded = Manifests(parse_docs(&try_render_in(dir.path(), &[], &[]).unwrap()));
    assert_eq!(secret_text(&upgraded, "kvq-auth", "admin-token"), "ADMIN-TOKEN");
    assert_eq!(secret_text(&upgraded, "kvq-auth", "test-token"), "TEST-TOKEN");
    let file = secret_text(&upgraded, "kvq-auth", "tokens.yaml");
    let set = kvq::server::auth::TokenSet::parse(&file).unwrap();
    assert_eq!(set.find("ADMIN-TOKEN").map(|c| c.name.clone()).as_deref(), Some("admin"));
    assert_eq!(set.find("TEST-TOKEN").map(|c| c.name.clone()).as_deref(), Some("helm-test"));
}
