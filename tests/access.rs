//! Access denials, as an instance role without the right would meet them: a moto of the test's
//! own with IAM enforcement on (INITIAL_NO_AUTH_ACTION_COUNT), a user whose policy allows only
//! the objects under `allowed/` and no SSM action, and the agent running with that user's keys.

use crate::common;

use std::process::Command;

use aws_sdk_ssm::types::ParameterType;
use common::moto::OwnMoto;
use common::{Rig, Scratch};

/// Unauthenticated calls `setup` makes before moto starts enforcing IAM.
const SETUP_CALLS: usize = 8;

/// Seeds the enforcing moto and returns the restricted user's keys.
async fn setup(moto: &OwnMoto, rig: &Rig, bucket: &str) -> (String, String) {
    let own = Rig {
        moto_url: moto.url.clone(),
        ..Rig::get()
    };
    // IAM through the rig's awscli: the agent never calls IAM, so the crate need not build its SDK.
    let iam = |args: &[&str]| -> serde_json::Value {
        let out = Command::new(&rig.aws)
            .args([
                "--endpoint-url",
                &moto.url,
                "--region",
                &rig.region,
                "--output",
                "json",
                "iam",
            ])
            .args(args)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .output()
            .expect("run aws iam");
        assert!(
            out.status.success(),
            "aws iam {}: {}",
            args[0],
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
    };
    iam(&["create-user", "--user-name", "app"]);
    let key = iam(&["create-access-key", "--user-name", "app"]);
    let key_id = key["AccessKey"]["AccessKeyId"]
        .as_str()
        .expect("key id")
        .to_string();
    let secret = key["AccessKey"]["SecretAccessKey"]
        .as_str()
        .expect("secret")
        .to_string();
    // moto evaluates SSM permissions against "*" only (it has no resource-level check for SSM),
    // so the user gets no SSM right at all, and S3 rights on one prefix.
    let policy = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "s3:GetObject", "Resource": format!("arn:aws:s3:::{bucket}/allowed/*")}
        ]
    });
    iam(&[
        "put-user-policy",
        "--user-name",
        "app",
        "--policy-name",
        "least-privilege",
        "--policy-document",
        &policy.to_string(),
    ]);
    own.put(
        "/allowed/A",
        "allowed-secret-1a1a",
        ParameterType::SecureString,
    )
    .await;
    own.put(
        "/denied/B",
        "denied-secret-2b2b",
        ParameterType::SecureString,
    )
    .await;
    let _ = own.bucket_named(bucket).await;
    own.put_object(bucket, "allowed/a.yml", b"a: 1\n".to_vec())
        .await;
    own.put_object(bucket, "denied/b.yml", b"b: 2\n".to_vec())
        .await;
    (key_id, secret)
}

#[tokio::test(flavor = "multi_thread")]
async fn access_denials_name_the_parameter_or_object_and_change_nothing() {
    let rig = Rig::get();
    let s = Scratch::new();
    let moto = OwnMoto::start(&rig, s.dir.path(), Some(SETUP_CALLS));
    let bucket = "kt-access-denied";
    let (key_id, secret) = setup(&moto, &rig, bucket).await;
    let run = |extra: &str| {
        s.config(
            &rig,
            &format!(
                "project: orange\nworkdir: {{workdir}}\naws:\n  endpoint_url: {}\n  s3_force_path_style: true\n{extra}",
                moto.url
            ),
        );
        let env = [
            ("AWS_ACCESS_KEY_ID", key_id.as_str()),
            ("AWS_SECRET_ACCESS_KEY", secret.as_str()),
            ("AWS_REGION", rig.region.as_str()),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ];
        s.agent_with(&rig, &["-vvv", "sync"], &env)
    };
    // Instance metadata is off here: the account that owns the bucket is named.
    let owner = "    expected_owner: \"123456789012\"\n";
    let allowed =
        format!("files:\n  - source: s3://BUCKET/allowed/a.yml\n    path: a.yml\n{owner}");
    let allowed = allowed.replace("BUCKET", bucket);
    tokio::task::block_in_place(|| run(&allowed)).expect(0);
    let a_before = std::fs::read(s.workdir().join("a.yml")).unwrap();

    let with_env = format!("{allowed}env:\n  parameters:\n    - name: /denied/B\n");
    let denied = tokio::task::block_in_place(|| run(&with_env));
    denied.expect(1);
    assert!(
        denied.stderr.contains("failed to read parameter /denied/B")
            && denied.stderr.contains("AccessDeniedException"),
        "{}",
        denied.stderr
    );
    denied.assert_free_of(&["allowed-secret-1a1a", "denied-secret-2b2b", &secret]);
    assert!(!s.workdir().join(".env").exists());
    assert_eq!(std::fs::read(s.workdir().join("a.yml")).unwrap(), a_before);

    let files =
        format!("{allowed}  - source: s3://{bucket}/denied/b.yml\n    path: b.yml\n{owner}");
    let denied = tokio::task::block_in_place(|| run(&files));
    denied.expect(1);
    assert!(
        denied
            .stderr
            .contains(&format!("s3://{bucket}/denied/b.yml"))
            && denied.stderr.contains("access denied"),
        "{}",
        denied.stderr
    );
    assert!(!s.workdir().join("b.yml").exists());
}
