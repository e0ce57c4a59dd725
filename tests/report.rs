//! The report of a failed sync, which outlives the instance: on the console (a file stands in for
//! the serial console here) and in S3 (moto), with the failing step, the error and the failed
//! container's last lines, never a secret, once per failure; `status` shows the same lines; and
//! the IAM policy lets the instance write it under its own name only.

use crate::common;

use serde_json::Value;

use common::iam_eval::{allows, Call};
use common::stack::Stack;
use common::Rig;

/// Prints its token (a secret from the env file) and a cause, then exits 3: it never gets healthy.
const COMPOSE: &str = "\
services:
  web:
    image: {registry}/tester/spring:1
    environment:
      API_TOKEN: ${API_TOKEN}
    entrypoint: [/bin/busybox, sh, -c, 'echo \"starting with token $$API_TOKEN\"; echo \"Caused by: port 8080 in use\"; exit 3']
";

async fn reports_under(rig: &Rig, bucket: &str) -> Vec<(String, String)> {
    let s3 = rig.s3();
    let listed = s3
        .list_objects_v2()
        .bucket(bucket)
        .prefix("reports/")
        .send()
        .await
        .expect("list reports");
    let mut out = Vec::new();
    for object in listed.contents() {
        let key = object.key().unwrap().to_string();
        let body = s3
            .get_object()
            .bucket(bucket)
            .key(&key)
            .send()
            .await
            .unwrap();
        let text = body.body.collect().await.unwrap().into_bytes();
        out.push((key, String::from_utf8(text.to_vec()).unwrap()));
    }
    out
}

#[tokio::test]
async fn a_failed_sync_is_reported_on_the_console_and_in_s3_without_its_secrets() {
    let rig = Rig::get();
    let stack = Stack::new(&rig, "report").await;
    let token = format!("tok-{}", fastrand::u64(..));
    stack.env(&rig, &format!("API_TOKEN={token}\n")).await;
    let bucket = rig.bucket("report", false).await;
    let console = stack.scratch.path("console");
    std::fs::write(&console, "[    0.000000] Linux version 6.1\n").unwrap();
    let extra = format!(
        "report:\n  store: s3://{bucket}/reports/\n  console: {}\n",
        console.display()
    );
    // `report` is a top-level key: after the compose section the stack writes.
    stack.compose(&rig, COMPOSE, "");
    let path = stack.scratch.path("etc/agent.yaml");
    let config = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        config.replace("healthy_timeout: 30s", "healthy_timeout: 10s") + &extra,
    )
    .unwrap();

    let (run, stack, rig) = stack.sync(rig).await;
    run.expect(1);
    run.assert_free_of(&[&token]);
    let web = stack.container("web");
    let text = std::fs::read_to_string(&console).unwrap();
    assert!(
        text.starts_with("[    0.000000] Linux version 6.1\n"),
        "appended: {text}"
    );
    for part in [
        "kicky-agent: ===== kicky-agent: a sync failed =====",
        "kicky-agent: failed step: waiting for",
        &format!("service web (container {web}): exited with code 3"),
        &format!("kicky-agent: container {web} (service web), its last 2 lines:"),
        "kicky-agent:   | starting with token <redacted>",
        "kicky-agent:   | Caused by: port 8080 in use",
    ] {
        assert!(text.contains(part), "{part:?} in:\n{text}");
    }
    assert!(!text.contains(&token), "the secret reached the console");

    let reports = reports_under(&rig, &bucket).await;
    assert_eq!(reports.len(), 1, "{reports:?}");
    let (key, body) = &reports[0];
    assert!(
        key.starts_with("reports/") && key.ends_with(".txt"),
        "{key}"
    );
    assert!(
        text.ends_with(body.as_str()),
        "the same report in S3:\n{body}"
    );
    assert!(!body.contains(&token));

    // The same failure again: not reported again (once an hour).
    let (run, stack, rig) = stack.sync(rig).await;
    run.expect(1);
    assert_eq!(std::fs::read_to_string(&console).unwrap(), text);
    assert_eq!(reports_under(&rig, &bucket).await.len(), 1);

    // `status` shows the failed container's last lines, redacted.
    let (status, stack, rig) = stack.run(rig, &["status"]).await;
    status.expect(1);
    status.assert_free_of(&[&token]);
    assert!(
        status
            .stdout
            .contains(&format!("container {web} (service web), its last 2 lines:")),
        "{}",
        status.stdout
    );
    assert!(
        status.stdout.contains("    | Caused by: port 8080 in use"),
        "{}",
        status.stdout
    );

    // The policy allows this PUT, under the caller's own name, and no other instance's.
    let (policy, _stack, rig) = stack
        .run(
            rig,
            &["iam-policy", "--account", "123456789012", "--group", "*"],
        )
        .await;
    policy.expect(0);
    let policy: Value = serde_json::from_str(&policy.stdout).unwrap();
    let user_id = key
        .strip_prefix("reports/")
        .and_then(|k| k.split_once('/'))
        .map(|(id, _)| id.to_string())
        .unwrap();
    let put = |as_user: &str| {
        Call::new("s3:PutObject", &format!("arn:aws:s3:::{bucket}/{key}"))
            .with("aws:userid", as_user)
            .with("s3:ResourceAccount", "123456789012")
    };
    assert!(allows(&policy, &put(&user_id)), "{policy:#}");
    assert!(!allows(&policy, &put("AROAOTHER:i-0other")), "{policy:#}");
    drop(rig);
}
