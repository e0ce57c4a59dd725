//! Throttling and transient errors are retried with backoff, and the retries are bounded.
//! A proxy in front of the rig's moto answers the first requests with SSM's real
//! ThrottlingException (or drops the connection), then forwards to moto.

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
    assert!(
        started.elapsed() < Duration::from_secs(60),
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
    assert!(took < Duration::from_secs(90), "took {took:?}");
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
