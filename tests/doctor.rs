//! `kicky-agent doctor` against the rig: one line per check, names and never values, exit 0 when
//! all pass; a missing parameter or object is a FAIL line with its hint and exit 1; instance
//! metadata that hangs is a FAIL line in bounded time, not a hung doctor.

use crate::common;

use std::time::{Duration, Instant};

use aws_sdk_ssm::types::ParameterType;
use common::{unique_prefix, Rig, Scratch};

fn config(prefix: &str, bucket: &str, extra: &str) -> String {
    format!(
        "project: doctor\nworkdir: {{workdir}}\naws:\n  endpoint_url: {{moto}}\n  s3_force_path_style: true\n\
         env:\n  parameters:\n    - name: {prefix}/env\n      format: dotenv\n    - path: {prefix}/vars/\n\
         \x20   - secret: {}\n{extra}\
         files:\n  - source: s3://{bucket}/compose.yml\n    path: docker-compose.yml\n\
         compose:\n  file: docker-compose.yml\nlifecycle:\n  hook: off\n",
        prefix.trim_start_matches('/').replace('/', "-")
    )
}

/// What doctor checks, seeded under a prefix of its own: a dotenv parameter (`values[0]`), one
/// under a path (`values[1]`), a secret (`values[2]`) and a compose file in a bucket (versioned
/// or not). Returns the prefix and the bucket.
async fn seed(rig: &Rig, test: &str, values: [&str; 3], versioned: bool) -> (String, String) {
    let prefix = unique_prefix(test);
    let env = format!("A={}\n", values[0]);
    rig.put(&format!("{prefix}/env"), &env, ParameterType::SecureString)
        .await;
    rig.put(
        &format!("{prefix}/vars/B"),
        values[1],
        ParameterType::SecureString,
    )
    .await;
    let secret = prefix.trim_start_matches('/').replace('/', "-");
    rig.put_secret(&secret, &format!(r#"{{"C":"{}"}}"#, values[2]))
        .await;
    let bucket = rig.bucket(test, versioned).await;
    rig.put_object(&bucket, "compose.yml", b"services: {}\n".to_vec())
        .await;
    (prefix, bucket)
}

#[tokio::test(flavor = "multi_thread")]
async fn doctor_says_what_works_and_what_to_do_about_what_does_not() {
    let rig = Rig::get();
    let values = ["doctor-value-1", "doctor-value-2", "doctor-value-3"];
    let (prefix, bucket) = seed(&rig, "doctor", values, false).await;
    let secret = prefix.trim_start_matches('/').replace('/', "-");
    let s = Scratch::new();

    s.config(&rig, &config(&prefix, &bucket, ""));
    let run = tokio::task::block_in_place(|| s.agent(&rig, &["doctor"]));
    run.expect(0).assert_free_of(&values);
    for line in [
        "ok    imds".to_string(),
        "ok    region".to_string(),
        "ok    credentials".to_string(),
        format!("{prefix}/env (version 1)"),
        format!("{prefix}/vars: 1 parameters"),
        format!("{secret} (AWSCURRENT)"),
        format!("s3://{bucket}/compose.yml (13 bytes)"),
        "ok    docker".to_string(),
        "ok    disk".to_string(),
        "ok    clock".to_string(),
        "skip  unit".to_string(),
    ] {
        assert!(
            run.stdout.contains(&line),
            "{line:?} not in\n{}",
            run.stdout
        );
    }

    // A parameter and an object that are not there: FAIL lines with hints, exit 1.
    let missing = format!("  - source: s3://{bucket}/nope.yml\n    path: nope.yml\n");
    let text = config(&prefix, &bucket, "")
        .replace("compose:\n", &format!("{missing}compose:\n"))
        .replace(
            "    - path:",
            &format!("    - name: {prefix}/NOPE\n    - path:"),
        );
    s.config(&rig, &text);
    let run = tokio::task::block_in_place(|| s.agent(&rig, &["doctor"]));
    run.expect(1).assert_free_of(&values);
    let fails: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with("FAIL"))
        .collect();
    assert_eq!(fails.len(), 2, "{}", run.stdout);
    assert!(
        fails[0].contains(&format!("{prefix}/NOPE: not found")),
        "{}",
        run.stdout
    );
    assert!(
        fails[1].contains("nope.yml") && fails[1].contains("NoSuchKey"),
        "{}",
        run.stdout
    );
    assert_eq!(run.stdout.matches("hint: ").count(), 2, "{}", run.stdout);
    assert!(run.stderr.contains("2 checks failed"), "{}", run.stderr);

    // Instance metadata that accepts and never answers: a failed line, in bounded time.
    let hang = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", hang.local_addr().unwrap());
    s.config(&rig, &config(&prefix, &bucket, ""));
    let env = [
        ("AWS_EC2_METADATA_SERVICE_ENDPOINT", url.as_str()),
        ("AWS_REGION", rig.region.as_str()),
    ];
    let started = Instant::now();
    let run = tokio::task::block_in_place(|| s.agent_with(&rig, &["doctor"], &env));
    let took = started.elapsed();
    run.expect(1);
    assert!(run.stdout.contains("FAIL  imds"), "{}", run.stdout);
    assert!(run.stdout.contains("FAIL  credentials"), "{}", run.stdout);
    assert!(took < Duration::from_secs(60), "doctor took {took:?}");
    println!(
        "doctor with a hanging instance metadata service: {:.1} s",
        took.as_secs_f64()
    );
}

/// With `release.store`: a line for the promoted pointer (a FAIL with its hint while nothing is
/// promoted), and the other checks read what the promoted release pins, as the sync does.
#[tokio::test(flavor = "multi_thread")]
async fn with_a_release_doctor_checks_the_promoted_pointer() {
    let rig = Rig::get();
    let values = ["doctor-value-4", "doctor-value-5", "doctor-value-6"];
    let (prefix, bucket) = seed(&rig, "doctorrel", values, true).await;
    let secret = prefix.trim_start_matches('/').replace('/', "-");
    let s = Scratch::new();
    let store = format!("release:\n  store: s3://{bucket}/rel/\n");
    // No compose project: a release of it needs no image digest.
    let text = config(&prefix, &bucket, "")
        .replace("compose:\n  file: docker-compose.yml\n", "")
        .replace("lifecycle:", &format!("{store}lifecycle:"));
    s.config(&rig, &text);
    let pointer = format!("s3://{bucket}/rel/promoted.json");

    let run = tokio::task::block_in_place(|| s.agent(&rig, &["doctor"]));
    run.expect(1).assert_free_of(&values);
    let fails: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with("FAIL"))
        .collect();
    assert_eq!(fails.len(), 1, "{}", run.stdout);
    assert!(
        fails[0].starts_with("FAIL  release")
            && fails[0].contains(&format!("{pointer}: no release is promoted")),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("hint: run `kicky-agent release create`"),
        "{}",
        run.stdout
    );

    let created = tokio::task::block_in_place(|| s.agent(&rig, &["release", "create"]));
    created.expect(0);
    let id = created.stdout.trim().to_string();
    tokio::task::block_in_place(|| s.agent(&rig, &["release", "promote", &id])).expect(0);
    let run = tokio::task::block_in_place(|| s.agent(&rig, &["doctor"]));
    run.expect(0).assert_free_of(&values);
    for line in [
        format!("ok    release      {pointer}: release {id} is promoted"),
        format!("{prefix}/vars: 1 parameters"),
        format!("{secret} (AWSCURRENT)"),
        format!("s3://{bucket}/compose.yml (13 bytes)"),
    ] {
        assert!(
            run.stdout.contains(&line),
            "{line:?} not in\n{}",
            run.stdout
        );
    }
}
