//! The release packaging (scripts/stamp-release.sh, run by the release workflow): the chart it
//! packages pulls exactly the given image digests, every image pinned, and it refuses to
//! package a chart with an image it cannot pin.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::support::chart::{chart_dir, helm, helm_template, parse_docs, stamp_release, Manifests, NO_CLUSTER};

/// A fake digest made of one repeated hex digit.
fn digest(d: char) -> String {
    format!("sha256:{}", d.to_string().repeat(64))
}

/// `--digest` arguments for every image of values.yaml, minus `skip`.
fn digest_args(skip: &str) -> Vec<String> {
    let all = [
        ("server.image", '1'),
        ("worker.image", '2'),
        ("redis.image", '3'),
        ("redis.exporter.image", '4'),
        ("tests.image", '5'),
    ];
    all.iter()
        .filter(|(p, _)| *p != skip)
        .flat_map(|(p, d)| ["--digest".to_string(), format!("{p}={}", digest(*d))])
        .collect()
}

fn stamp(chart: &Path, out: &Path, skip: &str) -> (bool, String, String) {
    let mut args = vec![
        "--version",
        "1.2.3",
        "--owner",
        "acme",
        "--out",
        out.to_str().unwrap(),
        "--chart",
        chart.to_str().unwrap(),
    ];
    let digests = digest_args(skip);
    args.extend(digests.iter().map(String::as_str));
    stamp_release(&args)
}

/// Every container and init container image of a render.
fn images(m: &Manifests) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in m.pod_specs() {
        for c in p.containers() {
            out.push((
                format!("{}/{}", p.name(), c["name"].as_str().unwrap()),
                c["image"].as_str().unwrap().to_string(),
            ));
        }
    }
    out
}

#[test]
fn packaged_release_pulls_the_given_digests_and_pins_every_image() {
    let out = tempfile::tempdir().unwrap();
    let (ok, stdout, stderr) = stamp(&chart_dir(), out.path(), "");
    assert!(ok, "stamp-release.sh failed:\n{stderr}");
    let archive = out.path().join("kvq-1.2.3.tgz");
    assert_eq!(stdout.trim(), archive.to_str().unwrap());

    let pinned = regex::Regex::new(r"^[a-z0-9./_-]+@sha256:[0-9a-f]{64}$").unwrap();
    for values in ["", "helm/kvq/ci/sentinel-full-values.yaml", "helm/kvq/ci/standalone-values.yaml"] {
        let files: Vec<&str> = if values.is_empty() { vec![] } else { vec![values] };
        let m = Manifests(parse_docs(
            &helm_template("kvq", &archive, &NO_CLUSTER, &files, &["redis.exporter.enabled=true"])
                .unwrap_or_else(|e| panic!("helm template of the packaged chart with {values:?}: {e}")),
        ));
        let imgs = images(&m);
        assert!(imgs.iter().any(|(_, i)| i.contains("redis_exporter")), "the exporter is part of the check: {imgs:?}");
        for (container, image) in &imgs {
            assert!(pinned.is_match(image), "{values:?}: {container} pulls {image}, not a digest");
        }
        let server = m.get("Deployment", "kvq-server");
        assert_eq!(
            server["spec"]["template"]["spec"]["containers"][0]["image"],
            format!("ghcr.io/acme/kvq-server@{}", digest('1'))
        );
        let worker = m.get("Deployment", "kvq-worker");
        assert_eq!(
            worker["spec"]["template"]["spec"]["containers"][0]["image"],
            format!("ghcr.io/acme/kvq-worker@{}", digest('2'))
        );
        if let Some(redis) = m.find("StatefulSet", "kvq-redis") {
            assert_eq!(
                redis["spec"]["template"]["spec"]["containers"][0]["image"],
                format!("docker.io/library/redis@{}", digest('3'))
            );
        }
    }

    // The test pod (helm test) is pinned too.
    let m = Manifests(parse_docs(&helm_template("kvq", &archive, &NO_CLUSTER, &[], &[]).unwrap()));
    assert_eq!(
        m.get("Pod", "kvq-test-write-read")["spec"]["containers"][0]["image"],
        format!("docker.io/curlimages/curl@{}", digest('5'))
    );

    // Chart.yaml: the release version, and Artifact Hub's image list names the pinned images.
    let show = Command::new(helm()).args(["show", "chart"]).arg(&archive).output().unwrap();
    let chart: Value = serde_yaml_ng::from_slice(&show.stdout).unwrap();
    assert_eq!(chart["version"], "1.2.3");
    assert_eq!(chart["appVersion"], "1.2.3");
    let listed: Value =
        serde_yaml_ng::from_str(chart["annotations"]["artifacthub.io/images"].as_str().unwrap()).unwrap();
    let listed: Vec<String> =
        listed.as_array().unwrap().iter().map(|i| i["image"].as_str().unwrap().to_string()).collect();
    for want in [
        format!("ghcr.io/acme/kvq-server:1.2.3@{}", digest('1')),
        format!("ghcr.io/acme/kvq-worker:1.2.3@{}", digest('2')),
    ] {
        assert!(listed.contains(&want), "artifacthub.io/images lacks {want}: {listed:?}");
    }
    assert_eq!(listed.len(), 5, "one entry per image: {listed:?}");
    assert!(listed.iter().all(|i| i.contains("@sha256:")), "{listed:?}");
}

#[test]
fn stamping_refuses_an_image_without_a_digest() {
    let out = tempfile::tempdir().unwrap();
    let (ok, _, stderr) = stamp(&chart_dir(), out.path(), "tests.image");
    assert!(!ok, "packaged a chart whose helm test image is not pinned");
    assert!(stderr.contains("no --digest for ['tests.image']"), "{stderr}");
    assert!(!out.path().join("kvq-1.2.3.tgz").exists());
}

#[test]
fn stamping_checks_the_render_not_only_values() {
    // A template with an image outside values.yaml: the packaged chart would pull a tag.
    let chart = tempfile::tempdir().unwrap();
    let copy = chart.path().join("kvq");
    assert!(Command::new("cp").arg("-r").arg(chart_dir()).arg(&copy).status().unwrap().success());
    std::fs::write(
        copy.join("templates/extra-pod.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: extra\nspec:\n  containers:\n    - name: c\n      image: busybox:1.36\n",
    )
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let (ok, _, stderr) = stamp(&copy, out.path(), "");
    assert!(!ok, "a chart pulling busybox:1.36 passed the check");
    assert!(stderr.contains("image not pinned by digest: busybox:1.36"), "{stderr}");
}

#[test]
fn third_party_images_are_listed_for_resolution_at_their_values_tags() {
    let (ok, stdout, stderr) = stamp_release(&["--list-third-party"]);
    assert!(ok, "{stderr}");
    let values: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(chart_dir().join("values.yaml")).unwrap()).unwrap();
    let reference = |img: &Value| {
        format!(
            "{}/{}:{}",
            img["registry"].as_str().unwrap(),
            img["repository"].as_str().unwrap(),
            img["tag"].as_str().unwrap()
        )
    };
    let want = format!(
        "redis.exporter.image {}\nredis.image {}\ntests.image {}\n",
        reference(&values["redis"]["exporter"]["image"]),
        reference(&values["redis"]["image"]),
        reference(&values["tests"]["image"]),
    );
    assert_eq!(stdout, want);
}
