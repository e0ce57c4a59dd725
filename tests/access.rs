//! Access denials, as an instance role without the right would meet them: a moto of the test's
//! own with IAM enforcement on (INITIAL_NO_AUTH_ACTION_COUNT), a user whose policy allows only
//! the objects under `allowed/` and no SSM action, and the agent running with that user's keys.

mod common;

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use aws_sdk_ssm::types::ParameterType;
use common::{Rig, Scratch};

/// Unauthenticated calls `setup` makes before moto starts enforcing IAM.
const SETUP_CALLS: usize = 8;

/// A moto server of this test's own, stopped by PID when dropped.
struct OwnMoto {
    child: Child,
    url: String,
}

impl OwnMoto {
    fn start(rig: &Rig, dir: &Path) -> OwnMoto {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/rig/moto_server.py");
        let port_file = dir.join("moto.port");
        let child = Command::new(&rig.python)
            .arg(script)
            .args(["--port", "0", "--port-file"])
            .arg(&port_file)
            .env("INITIAL_NO_AUTH_ACTION_COUNT", SETUP_CALLS.to_string())
            .stderr(std::fs::File::create(dir.join("moto.log")).unwrap())
            .spawn()
            .expect("start moto");
        let started = Instant::now();
        let port = loop {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                break text.trim().to_string();
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "moto did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        OwnMoto {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for OwnMoto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Seeds the enforcing moto and returns the restricted user's keys.
async fn setup(moto: &OwnMoto, rig: &Rig, bucket: &str) -> (String, String) {
    let own = Rig {
        moto_url: moto.url.clone(),
        ..Rig::get()
    };
    let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(rig.region.clone()))
        .endpoint_url(&moto.url)
        .credentials_provider(aws_sdk_ssm::config::Credentials::new(
            "testing", "testing", None, None, "rig",
        ))
        .load()
        .await;
    let iam = aws_sdk_iam::Client::new(&conf);
    iam.create_user()
        .user_name("app")
        .send()
        .await
        .expect("create user");
    let key = iam
        .create_access_key()
        .user_name("app")
        .send()
        .await
        .expect("create key");
    let key = key.access_key().unwrap();
    // moto evaluates SSM permissions against "*" only (it has no resource-level check for SSM),
    // so the user gets no SSM right at all, and S3 rights on one prefix.
    let policy = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "s3:GetObject", "Resource": format!("arn:aws:s3:::{bucket}/allowed/*")}
        ]
    });
    iam.put_user_policy()
        .user_name("app")
        .policy_name("least-privilege")
        .policy_document(policy.to_string())
        .send()
        .await
        .expect("put policy");
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
    (
        key.access_key_id().to_string(),
        key.secret_access_key().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn access_denials_name_the_parameter_or_object_and_change_nothing() {
    let rig = Rig::get();
    let s = Scratch::new();
    let moto = OwnMoto::start(&rig, s.dir.path());
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
    let allowed = "files:\n  - source: s3://BUCKET/allowed/a.yml\n    path: a.yml\n";
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

    let files = format!("{allowed}  - source: s3://{bucket}/denied/b.yml\n    path: b.yml\n");
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
