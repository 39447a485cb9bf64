//! kvq against a TLS-only Redis (`port 0`, `tls-port`) whose `default` user is off: each binary
//! as its own ACL user holding exactly the rules the chart and README give, the CA checks
//! (unready and saying why), CA renewal without a restart, and mutual TLS.

use std::time::Duration;

use crate::support::redis_cluster::TestCluster;
use crate::support::sentinel::{TestSentinel, MASTER_NAME};
use crate::support::tls::{acl_rules, TestCerts};
use crate::support::*;
use serde_json::{json, Value};

/// A TLS-only server with the `kvq-server` and `kvq-worker` users of the documented rules.
fn tls_redis(certs: &TestCerts) -> TestRedis {
    TestRedis::builder()
        .tls(certs)
        .acl_user("kvq-server", "server-pw", &acl_rules("kvq-server", "kvq"))
        .acl_user("kvq-worker", "worker-pw", &acl_rules("kvq-worker", "kvq"))
        .start()
}

async fn body(r: reqwest::Response) -> Value {
    r.json().await.expect("JSON body")
}

#[tokio::test]
async fn the_api_contract_holds_over_tls_with_each_binary_as_its_least_privilege_user() {
    let certs = TestCerts::generate();
    let redis = tls_redis(&certs);
    let app = spawn_app_as(&redis, Some("kvq-server"), Some("kvq-worker"), 1).await;
    app.wait_status("/readyz", 200, Duration::from_secs(10)).await;

    // Write (202 + task), applied by the worker; task lookup.
    let r = app.put("greeting", "hello", "").await;
    assert_eq!(r.status(), 202);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let task = eventually(Duration::from_secs(10), "task applied", || async {
        let t = body(app.get(&location).await).await;
        (t["status"] == "applied").then_some(t)
    })
    .await;
    assert_eq!((task["op"].as_str(), task["key"].as_str()), (Some("set"), Some("greeting")));

    // ?wait answers with the final task (completion pub/sub through the server's user).
    let r = app.put("a", "1", "?wait=5").await;
    assert_eq!(r.status(), 200);
    let version = body(r).await["version"].as_u64().unwrap();
    // Read with the ETag; a conditional write that loses answers 412.
    let r = app.get("/v1/keys/a").await;
    assert_eq!(r.headers()["etag"], format!("\"{version}\"").as_str());
    assert_eq!(body(r).await, json!({"key": "a", "value": "1", "version": version}));
    let r = app.put_json("a", json!({"value": "2"}), "?wait=5", &[("If-Match", "\"999999\"")]).await;
    assert_eq!(r.status(), 412);

    // An Idempotency-Key retry gets the first task; a TTL is set, then dropped by an overwrite.
    let headers = [("Idempotency-Key", "tls-1")];
    let first = body(app.put_json("ttl", json!({"value": "x", "ttl_seconds": 100}), "?wait=5", &headers).await).await;
    let again = body(app.put_json("ttl", json!({"value": "x", "ttl_seconds": 100}), "?wait=5", &headers).await).await;
    assert_eq!((first["status"].as_str(), &first["id"]), (Some("applied"), &again["id"]));
    assert!(body(app.get("/v1/keys/ttl").await).await["expires_at"].is_string());
    // The data key itself expires (PEXPIREAT), and stops expiring when overwritten (PERSIST):
    // a script cut short by a missing rule would leave the hash written but not these.
    let pttl = |redis: &TestRedis| redis::cmd("PTTL").arg("kvq:k:ttl").query::<i64>(&mut redis.conn()).unwrap();
    assert!(pttl(&redis) > 0, "the TTL'd key expires");
    let overwrite = body(app.put("ttl", "y", "?wait=5").await).await;
    assert_eq!(overwrite["status"], "applied", "{overwrite}");
    assert!(body(app.get("/v1/keys/ttl").await).await.get("expires_at").is_none());
    assert_eq!(pttl(&redis), -1, "the overwritten key no longer expires");

    // Completions are published on the channel and the server subscribes to it as its user.
    let mut sub = redis.client().get_connection().unwrap();
    let mut sub = sub.as_pubsub();
    sub.subscribe("kvq:done").unwrap();
    sub.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let id = body(app.put("published", "1", "?wait=5").await).await["id"].as_str().unwrap().to_string();
    let published: String = sub.get_message().unwrap().get_payload().unwrap();
    assert_eq!(published, id);
    let clients: String = redis::cmd("CLIENT").arg("LIST").query(&mut redis.conn()).unwrap();
    assert!(clients.lines().any(|l| l.contains("user=kvq-server") && l.contains("cmd=subscribe")), "{clients}");

    // List, delete.
    let list = body(app.get("/v1/keys?prefix=").await).await;
    let keys: Vec<&str> = list["items"].as_array().unwrap().iter().map(|i| i["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["a", "greeting", "published", "ttl"], "{list}");
    let deleted = app.delete("greeting", "?wait=5").await;
    assert_eq!(deleted.status(), 200);
    assert_eq!(body(deleted).await["status"], "applied");
    let tombstone: i64 = redis::cmd("PTTL").arg("kvq:k:greeting").query(&mut redis.conn()).unwrap();
    assert!(tombstone > 0, "the delete's tombstone expires (PEXPIRE)");
    assert_eq!(app.get("/v1/keys/greeting").await.status(), 404);

    // Dead letters: a write the worker cannot apply is dead-lettered, listed and replayed by
    // the worker binary as its own user.
    let _: () = redis::cmd("SET").arg("kvq:k:poison").arg("oops").query(&mut redis.conn()).unwrap();
    let r = app.put("poison", "payload", "?wait=15").await;
    assert_eq!(body(r).await["task"]["status"], "failed");
    // Both binaries' metrics read the queue and memory figures through their users.
    let worker_metrics = HttpClient::new(&format!("http://127.0.0.1:{}", app.workers[0].port), Duration::from_secs(10));
    for http in [&app.http, &worker_metrics] {
        // Readiness writes `<prefix>:ready` as each binary's user.
        http.wait_status("/readyz", 200, Duration::from_secs(10)).await;
        let metrics = http.get("/metrics").await.text().await.unwrap();
        for line in ["kvq_redis_up 1", "kvq_dead_letters 1"] {
            assert!(metrics.lines().any(|l| l == line), "{line} in {metrics}");
        }
        let used = metrics.lines().find_map(|l| l.strip_prefix("kvq_redis_used_memory_bytes "));
        assert!(used.and_then(|v| v.parse::<u64>().ok()).is_some_and(|v| v > 0), "{metrics}");
    }
    let worker_env = redis.kvq_env(Some("kvq-worker"));
    let list = worker_cli(&worker_env, &["dead-letters", "list"]);
    assert!(list.status.success(), "{}", String::from_utf8_lossy(&list.stderr));
    assert!(String::from_utf8_lossy(&list.stdout).contains("\"replayable\":true"));
    let _: () = redis::cmd("DEL").arg("kvq:k:poison").query(&mut redis.conn()).unwrap();
    let replay = worker_cli(&worker_env, &["dead-letters", "replay", "--all"]);
    assert!(replay.status.success(), "{}", String::from_utf8_lossy(&replay.stderr));
    eventually(Duration::from_secs(10), "the replayed write applies", || async {
        app.holds("poison", "payload").await.then_some(())
    })
    .await;

    // Every task is acknowledged (the replayed dead letter is gone, none came back), and the
    // worker trims the stream behind them.
    app.drain(Duration::from_secs(10)).await;
    assert_eq!(redis.xlen("kvq:dlq"), 0);
    eventually(Duration::from_secs(10), "the stream trimmed", || async {
        (redis.xlen("kvq:tasks") == 0).then_some(())
    })
    .await;
    app.stop().await;
}

/// The rules give each binary its prefix, its channel and its commands: nothing else. The
/// README shows them exactly as the chart's files hold them.
#[test]
fn the_documented_rules_deny_other_keys_channels_and_admin_commands() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for binary in ["kvq-server", "kvq-worker"] {
        let rules = acl_rules(binary, "<prefix>");
        let block = format!("{binary}:\n\n```\n");
        let start = readme.find(&block).unwrap_or_else(|| panic!("README has no {binary} rules")) + block.len();
        let shown = readme[start..].split("```").next().unwrap().split_whitespace().collect::<Vec<_>>().join(" ");
        assert_eq!(shown, rules, "README rules of {binary}");
    }
    let certs = TestCerts::generate();
    let redis = tls_redis(&certs);
    for (user, pw) in [("kvq-server", "server-pw"), ("kvq-worker", "worker-pw")] {
        let mut c = redis.client().get_connection().unwrap();
        let () = redis::cmd("AUTH").arg(user).arg(pw).query(&mut c).unwrap();
        let denied = |cmd: &mut redis::Cmd, c: &mut redis::Connection| {
            let err = cmd.query::<redis::Value>(c).unwrap_err();
            assert_eq!(err.code(), Some("NOPERM"), "{user}: {err}");
        };
        denied(redis::cmd("GET").arg("other:key"), &mut c);
        denied(redis::cmd("PUBLISH").arg("other:done").arg("x"), &mut c);
        denied(&mut redis::cmd("FLUSHALL"), &mut c);
        denied(redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg("1"), &mut c);
        denied(redis::cmd("CLIENT").arg("KILL").arg("ID").arg("1"), &mut c);
        denied(redis::cmd("EVAL").arg("return 1").arg(0), &mut c);
        let _: Option<String> = redis::cmd("GET").arg("kvq:k:x").query(&mut c).unwrap();
    }
}

/// `kvq-worker` with `args` and the env, its output collected.
fn worker_cli(env: &[(String, String)], args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_kvq-worker"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().cloned())
        .env("KVQ__LOG__FORMAT", "json")
        .output()
        .expect("run kvq-worker")
}

#[tokio::test]
async fn without_the_ca_the_server_stays_unready_and_says_why_then_a_renewed_ca_file_is_used() {
    let certs = TestCerts::generate();
    let redis = tls_redis(&certs);
    // The CA file holds another CA (as before a renewal reaches the mount).
    let other = TestCerts::generate();
    let mounted = tempfile::tempdir().unwrap();
    let ca_file = mounted.path().join("ca.crt");
    std::fs::copy(other.ca(), &ca_file).unwrap();
    let mut env = redis.kvq_env(Some("kvq-server"));
    env.retain(|(k, _)| k != "KVQ__REDIS__TLS_CA_FILE");
    env.push(("KVQ__REDIS__TLS_CA_FILE".into(), ca_file.display().to_string()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let app = spawn_app_settings(test_settings(&redis.url(), &env), 0).await;

    let not_ready = eventually(Duration::from_secs(10), "readyz answers", || async {
        let r = app.get("/readyz").await;
        (r.status() == 503).then_some(())?;
        Some(body(r).await)
    })
    .await;
    let detail = not_ready["detail"].as_str().unwrap();
    assert!(detail.contains("TLS") && detail.to_lowercase().contains("certificate"), "{detail}");
    assert!(detail.contains("KVQ__REDIS__TLS_CA_FILE"), "{detail}");
    assert!(!detail.contains("server-pw"), "no secrets: {detail}");
    let r = app.put("k", "v", "").await;
    assert_eq!(r.status(), 503, "no write goes anywhere without a verified server");

    // The renewed CA lands in the mounted file: the next connect reads it, no restart.
    std::fs::copy(certs.ca(), &ca_file).unwrap();
    app.wait_status("/readyz", 200, Duration::from_secs(15)).await;
    assert_eq!(app.put("k", "v", "").await.status(), 202);

    // No CA configured at all: the system roots do not know the test CA either.
    let mut env = redis.kvq_env(Some("kvq-server"));
    env.retain(|(k, _)| k != "KVQ__REDIS__TLS_CA_FILE");
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let no_ca = spawn_app_settings(test_settings(&redis.url(), &env), 0).await;
    let r = no_ca.get("/readyz").await;
    assert_eq!(r.status(), 503);
    let detail = body(r).await["detail"].as_str().unwrap().to_string();
    assert!(detail.contains("TLS") && detail.to_lowercase().contains("certificate"), "{detail}");
    no_ca.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn mutual_tls_needs_the_client_certificate() {
    let certs = TestCerts::generate();
    let redis = TestRedis::builder().tls(&certs).require_client_cert().start();
    // Without a client certificate the server refuses the handshake: unready, and why.
    let mut env = redis.kvq_env(None);
    env.retain(|(k, _)| !k.starts_with("KVQ__REDIS__TLS_CERT") && !k.starts_with("KVQ__REDIS__TLS_KEY"));
    assert_eq!(env.len(), 2, "URL and CA only: {env:?}");
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let without = spawn_app_settings(test_settings(&redis.url(), &env), 0).await;
    let r = without.get("/readyz").await;
    assert_eq!(r.status(), 503);
    let detail = body(r).await["detail"].as_str().unwrap().to_string();
    assert!(detail.contains("TLS") && detail.contains("KVQ__REDIS__TLS_CERT_FILE"), "{detail}");
    without.stop().await;

    let app = spawn_app_as(&redis, None, None, 1).await;
    app.wait_status("/readyz", 200, Duration::from_secs(10)).await;
    app.write_read_delete("mtls").await;
    app.stop().await;
}

/// Sentinel mode over TLS: kvq asks a TLS-only sentinel as its sentinel ACL user, then reaches
/// the master over TLS as its own users (`ROLE` is in both binaries' rules for this).
#[tokio::test]
async fn sentinel_mode_finds_the_master_over_tls_with_acl_users_on_both() {
    let certs = TestCerts::generate();
    let redis = TestRedis::builder()
        .tls(&certs)
        .args(&["--tls-replication", "yes"])
        .acl_user("kvq-server", "server-pw", &acl_rules("kvq-server", "kvq"))
        .acl_user("kvq-worker", "worker-pw", &acl_rules("kvq-worker", "kvq"))
        .acl_user("sentinel", "sentinel-pw", &acl_rules("sentinel", "kvq"))
        .start();
    let sentinel = TestSentinel::start_tls(
        &redis,
        &certs,
        &format!(
            "sentinel auth-user {MASTER_NAME} sentinel\nsentinel auth-pass {MASTER_NAME} sentinel-pw\n\
             user default off\nuser kvq on >kvq-sentinel-pw {}\n",
            acl_rules("kvq-sentinel-client", "kvq")
        ),
    );
    let sentinel_env = |user: &str| {
        let mut env = redis.kvq_env(Some(user));
        env.retain(|(k, _)| k != "KVQ__REDIS__URL");
        env.extend(
            [
                ("KVQ__REDIS__MODE", "sentinel".to_string()),
                ("KVQ__REDIS__SENTINELS", sentinel.addr()),
                ("KVQ__REDIS__TLS", "true".into()),
                ("KVQ__REDIS__SENTINEL_TLS", "true".into()),
                ("KVQ__REDIS__SENTINEL_USERNAME", "kvq".into()),
                ("KVQ__REDIS__SENTINEL_PASSWORD", "kvq-sentinel-pw".into()),
            ]
            .map(|(k, v)| (k.to_string(), v)),
        );
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        test_settings("redis://unused:6379", &env)
    };
    let mut app = spawn_app_settings(sentinel_env("kvq-server"), 0).await;
    app.workers.push(spawn_worker(&sentinel_env("kvq-worker"), "worker-0").await);
    app.wait_status("/readyz", 200, Duration::from_secs(15)).await;
    app.write_read_delete("through-sentinel").await;

    // A wrong sentinel password: unready, and the reason names the sentinel's refusal.
    let mut wrong = sentinel_env("kvq-server");
    wrong.redis.sentinel_password = Some(kvq::config::Secret::new("nope"));
    let bad = spawn_app_settings(wrong, 0).await;
    let r = bad.get("/readyz").await;
    assert_eq!(r.status(), 503);
    let detail = body(r).await["detail"].as_str().unwrap().to_string();
    assert!(detail.contains("sentinel") && detail.to_lowercase().contains("authentication failed"), "{detail}");
    bad.stop().await;
    app.stop().await;
}

/// `MIN_REPLICAS_ACK=1` over TLS: the server's `INCR` + `WAIT` under its rules, and a replica
/// that replicates over TLS as the `replication` user of the chart's rules.
#[tokio::test]
async fn writes_wait_for_a_replica_that_replicates_over_tls_as_its_acl_user() {
    let certs = TestCerts::generate();
    let master = TestRedis::builder()
        .tls(&certs)
        .args(&["--tls-replication", "yes"])
        .acl_user("kvq-server", "server-pw", &acl_rules("kvq-server", "kvq"))
        .acl_user("kvq-worker", "worker-pw", &acl_rules("kvq-worker", "kvq"))
        .acl_user("replication", "replication-pw", &acl_rules("replication", "kvq"))
        .start();
    let replica = TestRedis::builder()
        .tls(&certs)
        .args(&["--tls-replication", "yes", "--masteruser", "replication", "--masterauth", "replication-pw"])
        .replica_of(&master)
        .start();
    eventually(Duration::from_secs(10), "the replica in sync", || async {
        let info: String = redis::cmd("INFO").arg("replication").query(&mut replica.conn()).ok()?;
        info.contains("master_link_status:up").then_some(())
    })
    .await;
    let mut env = master.kvq_env(Some("kvq-server"));
    env.push(("KVQ__REDIS__MIN_REPLICAS_ACK".into(), "1".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let app = spawn_app_settings(test_settings(&master.url(), &env), 0).await;
    let r = app.put("acked", "by a replica", "").await;
    assert_eq!(r.status(), 202, "{:?}", r.text().await);
    // answered: the replica acknowledged the task's stream entry
    let entries: u64 = redis::cmd("XLEN").arg("kvq:tasks").query(&mut replica.conn()).unwrap();
    assert_eq!(entries, 1, "the replica holds the task");
    app.stop().await;
}

/// A certificate that does not verify is logged once, at error level with the reason, however
/// often kvq retries (each /readyz retries), and the recovery once.
#[tokio::test]
async fn a_failing_certificate_is_logged_once_with_the_reason_not_per_retry() {
    let certs = TestCerts::generate();
    let redis = tls_redis(&certs);
    let other = TestCerts::generate();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.crt");
    std::fs::copy(other.ca(), &ca_file).unwrap();
    let mut env = redis.kvq_env(Some("kvq-server"));
    env.retain(|(k, _)| k != "KVQ__REDIS__TLS_CA_FILE");
    env.push(("KVQ__REDIS__TLS_CA_FILE".into(), ca_file.display().to_string()));
    let env: Vec<(&str, String)> = env.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    let log = dir.path().join("server.log");
    let server = KvqProcess::server_logged(&env, &log);
    let http = server.http(Duration::from_secs(10));
    http.wait_status("/healthz", 200, Duration::from_secs(10)).await;
    for _ in 0..10 {
        assert_eq!(http.get("/readyz").await.status(), 503);
    }
    std::fs::copy(certs.ca(), &ca_file).unwrap();
    http.wait_status("/readyz", 200, Duration::from_secs(15)).await;

    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let failures: Vec<&Value> =
        lines.iter().filter(|l| l["message"].as_str().is_some_and(|m| m.starts_with("cannot connect"))).collect();
    assert_eq!(failures.len(), 1, "one line for ten retries: {text}");
    assert_eq!(failures[0]["level"], "ERROR");
    assert!(failures[0]["error"].as_str().unwrap().contains("invalid peer certificate"), "{text}");
    assert!(!text.contains("server-pw"), "no password in the log");
    let recovered = lines.iter().filter(|l| l["message"] == "connected to redis again").count();
    assert_eq!(recovered, 1, "{text}");
}

/// Cluster mode over TLS (client port, cluster bus and replication), `default` off, each binary
/// as its least-privilege user with exactly the documented rules: the rules cover the cluster's
/// hash-tagged keys, the slot map, replica acknowledgement on each shard's master (`CLUSTER
/// MYID` + `WAIT`), the Idempotency-Key claims, completions and the dead-letter commands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_mode_works_over_tls_with_each_binary_as_its_least_privilege_user() {
    let certs = TestCerts::generate();
    let cluster = TestCluster::builder().tls(&certs).kvq_users().start();
    let with_acks = |mut env: Vec<(&'static str, String)>| {
        env.push(("KVQ__REDIS__MIN_REPLICAS_ACK", "1".into()));
        env
    };
    let server_env = with_acks(cluster.kvq_env_as("kvq-server"));
    let worker_env = with_acks(cluster.kvq_env_as("kvq-worker"));
    let server = KvqProcess::server(&server_env);
    let worker = KvqProcess::worker("w1", &worker_env);
    let http = server.http(Duration::from_secs(20));
    http.wait_status("/readyz", 200, Duration::from_secs(20)).await;
    worker.http(Duration::from_secs(10)).wait_status("/readyz", 200, Duration::from_secs(20)).await;

    // Writes to keys on several shards, each confirmed by its shard master's replica.
    let keys: Vec<String> = (0..12).map(|i| format!("tls-{i}")).collect();
    for k in &keys {
        let r = http.put(k, k, "?wait=10").await;
        assert_eq!(r.status(), 200, "{k}: {:?}", r.text().await);
    }
    let shards: std::collections::BTreeSet<usize> = keys.iter().map(|k| kvq::store::shard_of(k, 16)).collect();
    assert!(shards.len() > 4, "the keys spread over the shards: {shards:?}");
    let list = body(http.get("/v1/keys?prefix=tls-").await).await;
    assert_eq!(list["items"].as_array().unwrap().len(), keys.len(), "{list}");
    let idem = [("Idempotency-Key", "tls-token")];
    let first = http.put_json("tls-idem", serde_json::json!({"value": "1"}), "", &idem).await;
    assert_eq!(first.status(), 202);
    let again = http.put_json("tls-idem", serde_json::json!({"value": "1"}), "", &idem).await;
    assert_eq!(body(first).await["task_id"], body(again).await["task_id"]);

    // A poisoned key's write is dead-lettered, listed and replayed by the worker CLI as its user.
    let data_key = kvq::store::Shards::cluster("kvq", 16).of("tls-poison").data("tls-poison");
    let mut c = cluster.client().get_connection().unwrap();
    let () = redis::cmd("SET").arg(&data_key).arg("oops").query(&mut c).unwrap();
    let r = http.put("tls-poison", "payload", "?wait=15").await;
    assert_eq!(body(r).await["task"]["status"], "failed");
    let cli_env: Vec<(String, String)> = worker_env.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    let list = worker_cli(&cli_env, &["dead-letters", "list"]);
    assert!(list.status.success(), "{}", String::from_utf8_lossy(&list.stderr));
    let listed = String::from_utf8_lossy(&list.stdout).to_string();
    assert!(listed.contains("\"replayable\":true"), "{listed}");
    let () = redis::cmd("DEL").arg(&data_key).query(&mut c).unwrap();
    let replay = worker_cli(&cli_env, &["dead-letters", "replay", "--all"]);
    assert!(replay.status.success(), "{}", String::from_utf8_lossy(&replay.stderr));
    eventually(Duration::from_secs(10), "the replayed write applies", || async {
        http.holds("tls-poison", "payload").await.then_some(())
    })
    .await;
    let worker_http = worker.http(Duration::from_secs(10));
    for h in [&http, &worker_http] {
        let metrics = h.get("/metrics").await.text().await.unwrap();
        assert!(metrics.lines().any(|l| l == "kvq_redis_up 1"), "{metrics}");
    }
}
