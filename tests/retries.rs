//! Throttling and transient errors are retried with backoff, and the retries are bounded.
//! A proxy in front of the rig's moto answers the first requests with SSM's real
//! ThrottlingException or S3's SlowDown, drops or resets the connection, or hangs, then forwards
//! to moto; a moto of the test's own is frozen with SIGSTOP. Each fault that lasts ends the sync
//! in bounded time with the files as they were, and the next sync converges once it is gone.

use crate::common;

use std::time::{Duration, Instant};

use aws_sdk_ssm::types::ParameterType;
use common::proxy::{Fault, Proxy};
use common::{unique_prefix, Rig, Scratch};

async fn setup(test: &str, fault: Fault) -> (Rig, Scratch, String, Proxy) {
    let rig = Rig::get();
    let prefix = unique_prefix(test);
    rig.put(
        &format!("{prefix}/TOKEN"),
        "retry-secret-8e8e",
        ParameterType::SecureString,
    )
    .await;
    let proxy = Proxy::start(&rig.moto_url, fault).await;
    let s = Scratch::new();
    s.config(
        &rig,
        &format!(
            "project: orange\nworkdir: {{workdir}}\naws:\n  endpoint_url: {}\n\
             env:\n  parameters:\n    - name: {prefix}/TOKEN\nlifecycle:\n  hook: off\n",
            proxy.url
        ),
    );
    (rig, s, prefix, proxy)
}

#[tokio::test]
async fn throttling_is_retried_until_it_passes() {
    let (rig, s, _, proxy) = setup("throttled", Fault::Throttle(2)).await;
    let (run, _s) = tokio::task::spawn_blocking(move || (s.agent(&rig, &["sync"]), s))
        .await
        .unwrap();
    run.expect(0);
    assert_eq!(
        proxy.connections(),
        3,
        "two throttled attempts, then one that passed"
    );
}

#[tokio::test]
async fn dropped_connections_are_retried() {
    let (rig, s, _, proxy) = setup("dropped", Fault::Drop(2)).await;
    let (run, _s) = tokio::task::spawn_blocking(move || (s.agent(&rig, &["sync"]), s))
        .await
        .unwrap();
    run.expect(0);
    assert!(proxy.connections() >= 3);
}

#[tokio::test]
async fn retries_are_bounded_and_the_failure_names_the_parameter() {
    let (rig, s, prefix, proxy) = setup("bounded", Fault::Throttle(usize::MAX)).await;
    let started = Instant::now();
    let (run, s) = tokio::task::spawn_blocking(move || (s.agent(&rig, &["sync"]), s))
        .await
        .unwrap();
    run.expect(1);
    assert_eq!(proxy.connections(), kicky_agent::aws::MAX_ATTEMPTS as usize);
    // Throttled: full jitter from up to 1 s doubling to 20 s between the 5 attempts.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        run.stderr
            .contains(&format!("failed to read parameter {prefix}/TOKEN")),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("ThrottlingException"), "{}", run.stderr);
    assert!(!s.workdir().join(".env").exists());
}

/// A service that stops answering in the middle of its work (moto frozen with SIGSTOP): the sync
/// ends in bounded time (the SDK's attempt and operation timeouts) with an error naming the
/// parameter, the env file as it was; once the service answers again (SIGCONT), the next sync
/// converges.
#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_service_fails_in_bounded_time_and_the_next_sync_converges() {
    let rig = Rig::get();
    let s = Scratch::new();
    let moto = common::moto::OwnMoto::start(&rig, s.dir.path(), None);
    let own = Rig {
        moto_url: moto.url.clone(),
        ..Rig::get()
    };
    own.put(
        "/frozen/TOKEN",
        "frozen-v1-4f4f",
        ParameterType::SecureString,
    )
    .await;
    s.config(
        &rig,
        &format!(
            "project: orange\nworkdir: {{workdir}}\naws:\n  endpoint_url: {}\n\
             env:\n  parameters:\n    - name: /frozen/TOKEN\nlifecycle:\n  hook: off\n",
            moto.url
        ),
    );
    tokio::task::block_in_place(|| s.agent(&rig, &["sync"])).expect(0);
    let env = s.workdir().join(".env");
    let before = std::fs::read(&env).unwrap();
    own.put(
        "/frozen/TOKEN",
        "frozen-v2-4f4f",
        ParameterType::SecureString,
    )
    .await;

    let signal = |sig: &str| {
        let done = std::process::Command::new("kill")
            .args([sig, &moto.pid().to_string()])
            .status()
            .unwrap();
        assert!(done.success(), "kill {sig}");
    };
    signal("-STOP");
    let started = Instant::now();
    let run = tokio::task::block_in_place(|| s.agent(&rig, &["sync"]));
    let took = started.elapsed();
    signal("-CONT");
    run.expect(1)
        .assert_free_of(&["frozen-v1-4f4f", "frozen-v2-4f4f"]);
    assert!(run.stderr.contains("/frozen/TOKEN"), "{}", run.stderr);
    // The call is given up after 60 s (its attempts after 15 s each).
    assert!(
        (55.0..=70.0).contains(&took.as_secs_f64()),
        "took {took:?}, docs/how-it-works.md (Faults) says 60 s"
    );
    assert_same!(std::fs::read(&env).unwrap(), before, "the env file changed");
    println!(
        "a frozen SSM: the sync failed after {:.0} s",
        took.as_secs_f64()
    );

    tokio::task::block_in_place(|| s.agent(&rig, &["sync"])).expect(0);
    let text = std::fs::read_to_string(&env).unwrap();
    assert!(
        text.contains("TOKEN=frozen-v2-4f4f"),
        "the next sync did not converge"
    );
}

/// A config reading `{prefix}/TOKEN` and `s3://{bucket}/app.yml` through `endpoint`.
fn token_and_file(endpoint: &str, prefix: &str, bucket: &str) -> String {
    format!(
        "project: orange\nworkdir: {{workdir}}\naws:\n  endpoint_url: {endpoint}\n  s3_force_path_style: true\n\
         env:\n  parameters:\n    - name: {prefix}/TOKEN\n\
         files:\n  - source: s3://{bucket}/app.yml\n    path: app.yml\nlifecycle:\n  hook: off\n"
    )
}

/// SSM and S3 behind `fault`: a first sync through a proxy that injects `fault` for its first two
/// connections converges; then, with a new parameter value and object, a sync through a proxy
/// that injects it on every connection (or hangs) fails in bounded time naming what it could not
/// read, leaves the env file and the file as they were and prints no value; with the fault gone,
/// the next sync converges on the new values.
async fn a_fault_is_retried_bounded_and_recovered(
    test: &str,
    fault: fn(usize) -> Fault,
    hang: bool,
    seconds: std::ops::RangeInclusive<f64>,
) {
    let rig = Rig::get();
    let prefix = unique_prefix(test);
    let token = format!("{prefix}/TOKEN");
    let (v1, v2) = (format!("{test}-v1-5d5d"), format!("{test}-v2-5d5d"));
    rig.put(&token, &v1, ParameterType::SecureString).await;
    let bucket = rig.bucket(test, false).await;
    rig.put_object(&bucket, "app.yml", b"app: 1\n".to_vec())
        .await;
    let s = Scratch::new();

    let twice = Proxy::start(&rig.moto_url, fault(2)).await;
    s.config(&rig, &token_and_file(&twice.url, &prefix, &bucket));
    tokio::task::block_in_place(|| s.agent(&rig, &["sync"])).expect(0);
    let least = if hang { 2 } else { 4 };
    assert!(twice.connections() >= least, "two faults, then SSM and S3");
    let env = s.workdir().join(".env");
    let (env_before, file_before) = (
        std::fs::read(&env).unwrap(),
        std::fs::read(s.workdir().join("app.yml")).unwrap(),
    );
    assert_eq!(file_before, b"app: 1\n");

    rig.put(&token, &v2, ParameterType::SecureString).await;
    rig.put_object(&bucket, "app.yml", b"app: 2\n".to_vec())
        .await;
    let always = Proxy::start(&rig.moto_url, fault(usize::MAX)).await;
    always.hang(hang);
    s.config(&rig, &token_and_file(&always.url, &prefix, &bucket));
    let started = Instant::now();
    let run = tokio::task::block_in_place(|| s.agent(&rig, &["sync"]));
    let took = started.elapsed();
    run.expect(1).assert_free_of(&[&v1, &v2]);
    assert!(
        seconds.contains(&took.as_secs_f64()),
        "took {took:?}, docs/how-it-works.md (Faults) says {seconds:?} s"
    );
    assert!(
        run.stderr.contains(&token) || run.stderr.contains(&format!("s3://{bucket}/app.yml")),
        "{}",
        run.stderr
    );
    assert_same!(
        std::fs::read(&env).unwrap(),
        env_before,
        "the env file changed"
    );
    assert_eq!(
        std::fs::read(s.workdir().join("app.yml")).unwrap(),
        file_before
    );
    println!("{test}: the sync failed after {:.1} s", took.as_secs_f64());

    s.config(&rig, &token_and_file(&rig.moto_url, &prefix, &bucket));
    tokio::task::block_in_place(|| s.agent(&rig, &["sync"])).expect(0);
    let text = std::fs::read_to_string(&env).unwrap();
    assert_same!(
        text.lines().find_map(|l| l.strip_prefix("TOKEN=")),
        Some(v2.as_str())
    );
    assert_eq!(
        std::fs::read(s.workdir().join("app.yml")).unwrap(),
        b"app: 2\n"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reset_connections_are_retried_bounded_and_recovered() {
    // Retried from 50 ms (not a throttling answer), 5 attempts, SSM and S3 each: seconds.
    a_fault_is_retried_bounded_and_recovered("reset", Fault::Reset, false, 0.0..=15.0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_slowdown_is_retried_bounded_and_recovered() {
    // Full jitter from up to 1 s doubling to 20 s, 5 attempts: at most 1 + 2 + 4 + 8 s of waits.
    a_fault_is_retried_bounded_and_recovered("slowdown", Fault::SlowDown, false, 0.0..=20.0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn endpoints_that_hang_fail_in_bounded_time_and_recover() {
    // Each attempt given up after 15 s, the call after 60 s.
    a_fault_is_retried_bounded_and_recovered("hang", |_| Fault::None, true, 55.0..=70.0).await;
}
