//! Releases against the rig: two releases created while the parameters, the compose file (in a
//! versioned bucket) and an image tag move under them; `sync --release` of the first gives
//! exactly its values, objects and image digest; a promote reaches a plain sync and the daemon's
//! watch; promoting the first back returns it; `list`, `show` and `diff` print no value.

use std::path::Path;
use std::time::{Duration, Instant};

use aws_sdk_ssm::types::ParameterType;

use crate::common::stack::{inspect, push_as, Stack};
use crate::common::{python_dotenv, Rig, Run};

fn compose(image: &str, stage: &str) -> Vec<u8> {
    format!(
        "services:\n  web:\n    image: {image}\n    environment:\n      GREETING: ${{GREETING}}\n      LEVEL: ${{LEVEL}}\n      STAGE: {stage}\n"
    )
    .into_bytes()
}

fn agent(stack: &Stack, rig: &Rig, args: &[&str]) -> Run {
    stack.scratch.agent(rig, args)
}

/// What the instance runs now: the env file's variables, the compose file, the image the web
/// container was created from (as written in its config: by digest) and its environment.
fn running(
    stack: &Stack,
) -> (
    std::collections::HashMap<String, String>,
    Vec<u8>,
    String,
    Vec<String>,
) {
    let workdir = stack.scratch.workdir();
    let rig = Rig::get();
    let env = python_dotenv(&rig, &workdir.join(".env"));
    let compose = std::fs::read(workdir.join("docker-compose.yml")).unwrap();
    let container = inspect(&stack.container("web")).expect("the web container");
    let image = container["Config"]["Image"].as_str().unwrap().to_string();
    let vars = container["Config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .filter(|v| {
            v.starts_with("GREETING=") || v.starts_with("LEVEL=") || v.starts_with("STAGE=")
        })
        .collect();
    (env, compose, image, vars)
}

fn until(what: &str, bound: Duration, mut done: impl FnMut() -> bool, log: &Path) {
    let started = Instant::now();
    while !done() {
        if started.elapsed() > bound {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            panic!("timed out waiting for {what}; daemon log:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_release_pins_every_input_and_a_promote_moves_the_fleet_between_them() {
    let rig = Rig::get();
    let stack = Stack::new(&rig, "releases").await;
    let p = stack.project.clone();
    let registry = stack.registry.clone();
    let repo = format!("tester/rel{}", fastrand::u32(..));
    let image = format!("{registry}/{repo}:live");
    // Values that must never be printed: random, so no output can hold them by chance.
    let one = format!("one-{}", fastrand::u64(..));
    let two = format!("two-{}", fastrand::u64(..));
    let (level1, level2) = (
        format!("l1-{}", fastrand::u64(..)),
        format!("l2-{}", fastrand::u64(..)),
    );

    let bucket = rig.bucket("releases", true).await;
    let unversioned = rig.bucket("releases-plain", false).await;
    stack.env(&rig, &format!("GREETING={one}\n")).await;
    rig.put(
        &format!("/kt/{p}/vars/LEVEL"),
        &level1,
        ParameterType::SecureString,
    )
    .await;
    let compose1 = compose(&image, "first");
    rig.put_object(&bucket, "docker-compose.yml", compose1.clone())
        .await;
    let digest1 = push_as(&registry, "tester/web:1", &format!("{repo}:live"));
    let release_store = format!("release:\n  store: s3://{bucket}/orange/\n");
    let files = format!(
        "files:\n  - source: s3://{bucket}/docker-compose.yml\n    path: docker-compose.yml\n    mode: \"0644\"\n"
    );
    stack.compose(
        &rig,
        "services: {}\n",
        &format!(
            "{release_store}watch:\n  interval: 5s\nlifecycle:\n  hook: off\ncontrol_socket: {{scratch}}/control.sock\n{files}"
        ),
    );
    // The config reads a path of parameters too.
    let config_path = stack.scratch.path("etc/agent.yaml");
    let config = std::fs::read_to_string(&config_path).unwrap().replace(
        "      format: dotenv\n",
        &format!("      format: dotenv\n    - path: /kt/{p}/vars\n"),
    );
    std::fs::write(&config_path, config).unwrap();
    let secrets = [one.as_str(), two.as_str(), level1.as_str(), level2.as_str()];

    // Nothing promoted: a plain sync says what to do.
    let none = agent(&stack, &rig, &["sync"]);
    none.expect(1);
    assert!(
        none.stderr.contains("no release is promoted"),
        "{}",
        none.stderr
    );

    let first = agent(&stack, &rig, &["release", "create", "--note", "first"]);
    first.expect(0).assert_free_of(&secrets);
    let a = first.stdout.trim().to_string();

    // Everything moves: the parameters, the compose file, the image behind the same tag.
    stack.env(&rig, &format!("GREETING={two}\n")).await;
    rig.put(
        &format!("/kt/{p}/vars/LEVEL"),
        &level2,
        ParameterType::SecureString,
    )
    .await;
    let compose2 = compose(&image, "second");
    rig.put_object(&bucket, "docker-compose.yml", compose2.clone())
        .await;
    let digest2 = push_as(&registry, "tester/web:2", &format!("{repo}:live"));
    assert_ne!(digest1, digest2, "the tag moved");
    let second = agent(&stack, &rig, &["release", "create", "--note", "second"]);
    second.expect(0).assert_free_of(&secrets);
    let b = second.stdout.trim().to_string();
    assert!(a < b, "ids sort by time: {a} {b}");

    // Exactly the first, however everything moved since.
    agent(&stack, &rig, &["sync", "--release", &a])
        .expect(0)
        .assert_free_of(&secrets);
    let pinned_image = |digest: &str| format!("{registry}/{repo}@{digest}");
    let (env, compose_now, image_now, vars) = running(&stack);
    assert_same!(env.get("GREETING"), Some(&one), "GREETING of release A");
    assert_same!(
        env.get("LEVEL"),
        Some(&level1),
        "LEVEL (a path parameter) of release A"
    );
    assert_eq!(compose_now, compose1, "the compose file's first version");
    assert_eq!(
        image_now,
        pinned_image(&digest1),
        "the image by the first digest"
    );
    assert_same!(
        vars,
        vec![
            format!("GREETING={one}"),
            format!("LEVEL={level1}"),
            "STAGE=first".to_string()
        ],
        "the container's environment of release A"
    );
    let status = agent(&stack, &rig, &["status"]);
    status.expect(0).assert_free_of(&secrets);
    assert!(
        status
            .stdout
            .contains(&format!("release: {a} (promoted: none)")),
        "{}",
        status.stdout
    );

    // The plan of the second names what would change, never a value.
    let plan = agent(&stack, &rig, &["plan", "--release", &b]);
    plan.expect(0).assert_free_of(&secrets);
    assert!(
        plan.stdout.contains("GREETING") && plan.stdout.contains("LEVEL"),
        "{}",
        plan.stdout
    );

    // Promoted: a plain sync applies the second.
    agent(&stack, &rig, &["release", "promote", &b]).expect(0);
    agent(&stack, &rig, &["sync"])
        .expect(0)
        .assert_free_of(&secrets);
    let (env, compose_now, image_now, _) = running(&stack);
    assert_same!(env.get("GREETING"), Some(&two), "GREETING of release B");
    assert_same!(env.get("LEVEL"), Some(&level2), "LEVEL of release B");
    assert_eq!(compose_now, compose2);
    assert_eq!(image_now, pinned_image(&digest2));

    // The daemon's watch applies a promote: the first, back, after the sources moved again.
    stack.env(&rig, "GREETING=three\n").await;
    let mut daemon = stack.scratch.spawn_daemon(&rig.imds_url, &[]);
    let log = stack.scratch.path("daemon.log");
    std::thread::sleep(Duration::from_secs(3));
    agent(&stack, &rig, &["release", "promote", &a]).expect(0);
    until(
        "the daemon to apply the first release again",
        Duration::from_secs(60),
        || {
            inspect(&stack.container("web")).is_some_and(|c| {
                c["Config"]["Image"].as_str() == Some(pinned_image(&digest1).as_str())
                    && c["State"]["Health"]["Status"] == "healthy"
            })
        },
        &log,
    );
    let (env, compose_now, _, _) = running(&stack);
    assert_same!(
        env.get("GREETING"),
        Some(&one),
        "GREETING of release A, by the watch"
    );
    assert_eq!(compose_now, compose1);

    // A wave: `resync --release` moves this instance to the second through the daemon; the
    // watch then leaves it there (the promote of the first was acted on already), for several
    // intervals, until the next promote.
    let wave = agent(&stack, &rig, &["resync", "--release", &b]);
    wave.expect(0).assert_free_of(&secrets);
    assert_eq!(running(&stack).2, pinned_image(&digest2), "{}", wave.all());
    std::thread::sleep(Duration::from_secs(13));
    assert_eq!(
        running(&stack).2,
        pinned_image(&digest2),
        "the watch undid the wave"
    );
    let _ = daemon.kill();
    let _ = daemon.wait();
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(
        log_text.contains(&format!("release {b} -> {a} (promoted)")),
        "{log_text}"
    );
    for secret in secrets {
        assert!(!log_text.contains(secret), "the daemon's log holds a value");
    }

    // The store, read: names and versions only.
    let list = agent(&stack, &rig, &["release", "list"]);
    list.expect(0).assert_free_of(&secrets);
    let lines: Vec<&str> = list.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", list.stdout);
    assert!(
        lines[0].starts_with(&format!("* {a}")) && lines[0].ends_with("first"),
        "{}",
        list.stdout
    );
    assert!(lines[1].starts_with(&format!("  {b}")), "{}", list.stdout);
    let show = agent(&stack, &rig, &["release", "show", &b, "--json"]);
    show.expect(0).assert_free_of(&secrets);
    let manifest: serde_json::Value = serde_json::from_str(&show.stdout).unwrap();
    assert_eq!(manifest["schema"], 1);
    assert_eq!(manifest["parent"], serde_json::Value::Null);
    assert_eq!(manifest["note"], "second");
    assert_eq!(manifest["images"][&image], digest2.as_str());
    assert_eq!(manifest["parameters"][format!("/kt/{p}/env")], 2);
    assert_eq!(manifest["parameters"][format!("/kt/{p}/vars/LEVEL")], 2);
    let object = &manifest["files"][format!("s3://{bucket}/docker-compose.yml")];
    assert_eq!(object["sha256"], sha256(&compose2));
    agent(&stack, &rig, &["release", "show", &a])
        .expect(0)
        .assert_free_of(&secrets);
    let diff = agent(&stack, &rig, &["release", "diff", &a, &b]);
    diff.expect(0).assert_free_of(&secrets);
    assert!(
        diff.stdout
            .contains(&format!("parameter /kt/{p}/env: 1 -> 2")),
        "{}",
        diff.stdout
    );
    assert!(
        diff.stdout
            .contains(&format!("image {image}: {digest1} -> {digest2}")),
        "{}",
        diff.stdout
    );
    assert!(
        diff.stdout
            .contains(&format!("file s3://{bucket}/docker-compose.yml: version")),
        "{}",
        diff.stdout
    );

    // A release of a bucket without versioning could never be brought back: refused, naming it.
    let config = std::fs::read_to_string(&config_path).unwrap().replace(
        &format!("source: s3://{bucket}/"),
        &format!("source: s3://{unversioned}/"),
    );
    std::fs::write(&config_path, config).unwrap();
    rig.put_object(&unversioned, "docker-compose.yml", compose2.clone())
        .await;
    let refused = agent(&stack, &rig, &["release", "create"]);
    refused.expect(1);
    assert!(
        refused
            .stderr
            .contains(&format!("bucket {unversioned} has no versioning")),
        "{}",
        refused.stderr
    );
    // An id that is no release id never reaches S3.
    agent(&stack, &rig, &["sync", "--release", "../x"]).expect(2);
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A release is never overwritten: the second write of the same id is refused by S3's
/// conditional put, and the object keeps the first manifest.
#[tokio::test]
async fn a_release_is_written_once() {
    use kicky_agent::aws::releases::Store;
    use kicky_agent::release::{Manifest, ReleaseId, SCHEMA};
    let rig = Rig::get();
    let bucket = rig.bucket("releases-once", true).await;
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(rig.region.clone()))
        .endpoint_url(&rig.moto_url)
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "testing", "testing", None, None, "rig",
        ))
        .load()
        .await;
    let aws = kicky_agent::config::AwsSettings {
        region: Some(rig.region.clone()),
        endpoint_url: Some(rig.moto_url.clone()),
        s3_force_path_style: true,
    };
    let s3 = kicky_agent::aws::s3::S3Store::new(&config, &aws);
    let at = kicky_agent::config::ReleaseSettings {
        store: kicky_agent::config::types::S3Prefix::parse(&format!("s3://{bucket}/app/")).unwrap(),
        // moto's account: the bucket's owner, as S3 is asked to check.
        expected_owner: Some("123456789012".into()),
        signing_key: None,
        public_key: None,
        pin: None,
    };
    let store = Store { s3: &s3, at: &at };
    let id = ReleaseId::new(std::time::SystemTime::now());
    let manifest = |note: &str| Manifest {
        schema: SCHEMA,
        id: id.clone(),
        created: "2026-12-07T16:30:00Z".into(),
        by: "arn:aws:iam::123456789012:user/ci".into(),
        parent: None,
        note: note.into(),
        project: "orange".into(),
        parameters: Default::default(),
        secrets: Default::default(),
        files: Default::default(),
        compose: None,
        images: Default::default(),
    };
    store.put_new(&manifest("first"), None).await.unwrap();
    let err = store.put_new(&manifest("second"), None).await.unwrap_err();
    assert!(format!("{err:#}").contains("already exists"), "{err:#}");
    assert_eq!(store.manifest(&id).await.unwrap().note, "first");
    assert_eq!(store.ids().await.unwrap(), vec![id.clone()]);
    // Keys under releases/ that are no release id never show up as one.
    rig.put_object(&bucket, "app/releases/../../x.json", b"{}".to_vec())
        .await;
    rig.put_object(&bucket, "app/releases/latest.json", b"{}".to_vec())
        .await;
    assert_eq!(store.ids().await.unwrap(), vec![id]);
}

fn kms(rig: &Rig) -> aws_sdk_kms::Client {
    use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region};
    let config = aws_sdk_kms::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(rig.region.clone()))
        .endpoint_url(&rig.moto_url)
        .credentials_provider(Credentials::new("testing", "testing", None, None, "rig"))
        .build();
    aws_sdk_kms::Client::from_conf(config)
}

/// A signing key in moto's KMS: its id, and its public key in PEM as `release.public_key` takes.
async fn signing_key(rig: &Rig) -> (String, String) {
    use aws_sdk_kms::types::{KeySpec, KeyUsageType};
    use base64::Engine;
    let kms = kms(rig);
    let key = kms
        .create_key()
        .key_spec(KeySpec::EccNistP256)
        .key_usage(KeyUsageType::SignVerify)
        .send()
        .await
        .unwrap();
    let id = key.key_metadata().unwrap().key_id().to_string();
    let public = kms.get_public_key().key_id(&id).send().await.unwrap();
    let der = public.public_key().unwrap().as_ref().to_vec();
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        lines.join("\n")
    );
    (id, pem)
}

/// With `release.public_key` baked in, an instance applies only releases signed by that key
/// (KMS Sign at `release create`, verified offline): a manifest rewritten in the bucket, a release
/// with no signature, and one signed by another key are refused (exit 2), naming the release, and
/// the signed release keeps running.
#[tokio::test(flavor = "multi_thread")]
async fn a_signed_fleet_applies_only_what_its_key_signed() {
    let rig = Rig::get();
    let stack = Stack::new(&rig, "signed").await;
    stack
        .env(&rig, "GREETING=greeting-of-the-signed-test\n")
        .await;
    let bucket = rig.bucket("signed", false).await;
    let ((key, pem), (other, _)) = (signing_key(&rig).await, signing_key(&rig).await);
    let indented: String = pem.lines().map(|l| format!("    {l}\n")).collect();
    let release = |signing: &str| {
        format!("release:\n  store: s3://{bucket}/app/\n{signing}  public_key: |\n{indented}")
    };
    let configure = |signing: &str| {
        stack.compose(
            &rig,
            "services:\n  web:\n    image: {registry}/tester/web:1\n",
            &format!("{}lifecycle:\n  hook: off\n", release(signing)),
        )
    };
    let create = |note: &str| {
        let run = agent(&stack, &rig, &["release", "create", "--note", note]);
        run.expect(0);
        run.stdout.trim().to_string()
    };
    configure(&format!("  signing_key: {key}\n"));
    let signed = create("signed");
    let sig = rig
        .s3()
        .get_object()
        .bucket(&bucket)
        .key(format!("app/releases/{signed}.sig"))
        .send()
        .await
        .expect("the signature beside the manifest");
    let sig: serde_json::Value =
        serde_json::from_slice(&sig.body.collect().await.unwrap().into_bytes()).unwrap();
    assert_eq!(sig["algorithm"], "ECDSA_SHA_256");
    agent(&stack, &rig, &["sync", "--release", &signed]).expect(0);
    let running = inspect(&stack.container("web")).unwrap()["Id"].clone();

    // Not signed, and signed by another key.
    configure("");
    let unsigned = create("unsigned");
    configure(&format!("  signing_key: {other}\n"));
    let foreign = create("another key");
    configure(&format!("  signing_key: {key}\n"));
    for (id, why) in [
        (&unsigned, "it is not signed"),
        (&foreign, "its signature does not verify"),
    ] {
        let run = agent(&stack, &rig, &["sync", "--release", id]);
        run.expect(2);
        assert!(
            run.stderr
                .contains(&format!("release {id} is refused: {why}")),
            "{}",
            run.stderr
        );
    }
    // Whoever writes the bucket rewrites the signed manifest: refused too.
    let key_of = format!("app/releases/{signed}.json");
    let object = rig
        .s3()
        .get_object()
        .bucket(&bucket)
        .key(&key_of)
        .send()
        .await
        .unwrap();
    let text = String::from_utf8(object.body.collect().await.unwrap().into_bytes().to_vec())
        .unwrap()
        .replace("\"note\": \"signed\"", "\"note\": \"rewritten\"");
    rig.put_object(&bucket, &key_of, text.into_bytes()).await;
    let run = agent(&stack, &rig, &["sync", "--release", &signed]);
    run.expect(2);
    assert!(run.stderr.contains("does not verify"), "{}", run.stderr);
    assert_eq!(
        inspect(&stack.container("web")).unwrap()["Id"],
        running,
        "the signed release keeps running"
    );
}
