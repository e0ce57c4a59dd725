//! `kicky-agent iam-policy`: linted by parliament, and proven sufficient and necessary against a
//! moto of the test's own with IAM enforcement on: a sync (and the daemon's watch) with only the
//! generated policy on the role succeeds; with any one statement taken away, it fails with an
//! error naming the denied action, and changes nothing.
//!
//! moto checks the action of every call but the resource of S3 calls only (any other exact ARN
//! never matches there), and ignores conditions. So the roles given to moto have the policy's
//! statements with their non-S3 resources widened to `*`; the exact ARNs themselves are checked
//! by the unit tests (`src/iam/tests.rs`) and by parliament. moto's SSM and Secrets Manager
//! never call KMS as the caller, so `DecryptViaServices` cannot be shown necessary here.

use crate::common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_ssm::types::ParameterType;
use common::moto::OwnMoto;
use common::{python_dotenv, Rig, Scratch};
use serde_json::Value;

/// The sample config (`config/agent.yaml`), with its Secrets Manager entry turned on.
fn sample_config() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/agent.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let secret = "    # - secret: prod/orange/db\n    #   prefix: DB_\n";
    assert!(text.contains(secret), "the sample's secret entry moved");
    text.replace(secret, "    - secret: prod/orange/db\n      prefix: DB_\n")
}

/// Runs `cmd` with `input` on its standard input.
fn with_stdin(cmd: &mut Command, input: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).unwrap();
    drop(stdin);
    child.wait_with_output().unwrap()
}

fn parliament(rig: &Rig, policy: &str) -> (i32, String) {
    let bin = Path::new(&rig.python).with_file_name("parliament");
    common::status_and_text(&with_stdin(&mut Command::new(bin), policy))
}

#[test]
fn the_policy_passes_the_linter() {
    let rig = Rig::get();
    let s = Scratch::new();
    s.config(&rig, &sample_config());
    let args = [
        "iam-policy",
        "--account",
        "123456789012",
        "--group",
        "orange-asg",
    ];
    let run = s.agent(&rig, &args);
    run.expect(0);
    let policy: Value = serde_json::from_str(&run.stdout).expect("iam-policy prints JSON");
    assert!(
        policy["Statement"].as_array().unwrap().len() >= 8,
        "{}",
        run.stdout
    );
    let (status, findings) = parliament(&rig, &run.stdout);
    assert_eq!(
        (status, findings.trim()),
        (0, ""),
        "parliament on\n{}",
        run.stdout
    );
    // The linter can fail: a misspelt action is a finding.
    let (status, findings) = parliament(
        &rig,
        &run.stdout
            .replace("ssm:GetParameters\"", "ssm:GetParamters\""),
    );
    assert!(
        findings.contains("Unknown action ssm:GetParamters"),
        "{status}: {findings}"
    );
}

/// Roles made and assumed in one Python process (boto3 from the rig's venv) before moto enforces
/// IAM: name → (access key, secret key, session token).
fn roles(rig: &Rig, moto: &OwnMoto, policies: &[(String, Value)]) -> Vec<(String, [String; 3])> {
    let script = r#"
import json, sys, boto3
url, region, policies = sys.argv[1], sys.argv[2], json.loads(sys.stdin.read())
kw = dict(endpoint_url=url, region_name=region, aws_access_key_id="testing", aws_secret_access_key="testing")
iam, sts = boto3.client("iam", **kw), boto3.client("sts", **kw)
trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:root"}, "Action": "sts:AssumeRole"}]}
out = []
for name, policy in policies:
    iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))
    iam.put_role_policy(RoleName=name, PolicyName="kicky-agent", PolicyDocument=json.dumps(policy))
    c = sts.assume_role(RoleArn=f"arn:aws:iam::123456789012:role/{name}", RoleSessionName="i-0123")["Credentials"]
    out.append([name, [c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"]]])
print(json.dumps(out))
"#;
    let input = serde_json::to_string(policies).unwrap();
    let mut python = Command::new(&rig.python);
    let out = with_stdin(python.args(["-c", script, &moto.url, &rig.region]), &input);
    assert!(
        out.status.success(),
        "roles: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("roles JSON")
}

/// The policy as moto can evaluate it: S3 resources as they are, every other resource `*`.
fn for_moto(policy: &Value) -> Value {
    let mut policy = policy.clone();
    for statement in policy["Statement"].as_array_mut().unwrap() {
        let s3 = statement["Action"][0].as_str().unwrap().starts_with("s3:");
        if !s3 {
            statement["Resource"] = Value::from("*");
        }
    }
    policy
}

fn without(policy: &Value, sid: &str) -> Value {
    let mut policy = policy.clone();
    policy["Statement"]
        .as_array_mut()
        .unwrap()
        .retain(|s| s["Sid"] != sid);
    policy
}

/// What each statement is for, as a failure shows it: the action a sync without it is denied,
/// and whether only the daemon's watch needs it.
fn denied_action(sid: &str) -> Option<(&'static str, bool)> {
    Some(match sid {
        "ReadParameters" => ("ssm:GetParameters", false),
        "ReadParameterPaths" => ("ssm:GetParametersByPath", false),
        "WatchParameterVersions" => ("ssm:DescribeParameters", true),
        "ReadSecrets" => ("secretsmanager:GetSecretValue", false),
        "BatchReadSecrets" => ("secretsmanager:BatchGetSecretValue", false),
        "ReadFiles" => ("s3:GetObject", false),
        "ReadPinnedFileVersions" => ("s3:GetObjectVersion", false),
        _ => return None,
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn the_policy_is_sufficient_and_each_statement_necessary() {
    let rig = Rig::get();
    let s = Scratch::new();
    let moto = OwnMoto::start(&rig, s.dir.path(), None);
    let own = Rig {
        moto_url: moto.url.clone(),
        ..Rig::get()
    };
    own.put(
        "/app/env",
        "A=1\nB=v-two-9f3\n",
        ParameterType::SecureString,
    )
    .await;
    own.put("/app/vars/C", "v-three-9f3", ParameterType::String)
        .await;
    own.put("/app/SINGLE", "v-four-9f3", ParameterType::SecureString)
        .await;
    own.put_secret("app/db", r#"{"DB_PASSWORD":"v-five-9f3"}"#)
        .await;
    // Pinned to the version before the current one: read by GetSecretValue alone.
    own.put_secret("app/pinned", "v-six-9f3").await;
    own.put_secret("app/pinned", "v-seven-9f3").await;
    let bucket = own.bucket("iam", true).await;
    own.put_object(&bucket, "compose.yml", b"services: {}\n".to_vec())
        .await;
    let version = own
        .put_object(&bucket, "promtail.yml", b"server: {}\n".to_vec())
        .await
        .expect("a versioned bucket");
    let config = format!(
        "project: orange\nworkdir: {{workdir}}\ncontrol_socket: {{scratch}}/control.sock\n\
         aws:\n  endpoint_url: {}\n  s3_force_path_style: true\nlifecycle:\n  hook: off\nwatch:\n  interval: 5s\n\
         env:\n  parameters:\n    - name: /app/env\n      format: dotenv\n    - path: /app/vars/\n\
         \x20   - name: /app/SINGLE\n    - secret: app/db\n    - secret: app/pinned\n      version_stage: AWSPREVIOUS\n      format: value\n      key: PINNED\n\
         files:\n  - source: s3://{bucket}/compose.yml\n    path: compose.yml\n\
         \x20 - source: s3://{bucket}/promtail.yml\n    path: promtail.yml\n    version_id: {version}\n",
        moto.url
    );
    s.config(&rig, &config);
    let no_imds = [
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_REGION", rig.region.as_str()),
    ];
    let run = s.agent_with(&rig, &["iam-policy", "--account", "123456789012"], &no_imds);
    run.expect(0);
    let policy: Value = serde_json::from_str(&run.stdout).unwrap();
    let sids: Vec<String> = policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["Sid"].as_str().unwrap().to_string())
        .collect();
    let (provable, unprovable): (Vec<&String>, Vec<&String>) =
        sids.iter().partition(|sid| denied_action(sid).is_some());
    assert_eq!(
        unprovable,
        ["DecryptViaServices"],
        "statements moto cannot show necessary"
    );

    let mut variants = vec![("full".to_string(), for_moto(&policy))];
    for sid in &provable {
        variants.push((format!("without-{sid}"), for_moto(&without(&policy, sid))));
    }
    let creds = tokio::task::block_in_place(|| roles(&rig, &moto, &variants));
    moto.enforce();
    let agent = |name: &str, args: &[&str]| {
        let [key, secret, token] = &creds.iter().find(|(n, _)| n == name).unwrap().1;
        let env = [
            ("AWS_ACCESS_KEY_ID", key.as_str()),
            ("AWS_SECRET_ACCESS_KEY", secret.as_str()),
            ("AWS_SESSION_TOKEN", token.as_str()),
            ("AWS_REGION", rig.region.as_str()),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ];
        let run = s.agent_with(&rig, args, &env);
        run.assert_free_of(&[
            "v-two-9f3",
            "v-three-9f3",
            "v-four-9f3",
            "v-five-9f3",
            "v-six-9f3",
            "v-seven-9f3",
            secret,
        ]);
        run
    };

    // Sufficient: the sync with the whole policy.
    tokio::task::block_in_place(|| agent("full", &["sync"])).expect(0);
    let env_file = s.workdir().join(".env");
    let vars = python_dotenv(&rig, &env_file);
    let keys: Vec<&str> = vars.keys().map(String::as_str).collect();
    for key in ["A", "B", "C", "SINGLE", "DB_PASSWORD", "PINNED"] {
        assert!(
            keys.contains(&key),
            "{key} missing from the env file: {keys:?}"
        );
    }
    let written: Vec<(String, Vec<u8>)> = [".env", "compose.yml", "promtail.yml"]
        .iter()
        .map(|f| (f.to_string(), std::fs::read(s.workdir().join(f)).unwrap()))
        .collect();

    // Necessary: each statement taken away fails the sync, or the watch, naming the action.
    let mut unproven: Vec<String> = Vec::new();
    for sid in &provable {
        let (action, watch_only) = denied_action(sid).unwrap();
        let name = format!("without-{sid}");
        if watch_only {
            let log = tokio::task::block_in_place(|| {
                watch_denial(&s, &creds_env(&creds, &name, &rig), action)
            });
            if !log.contains(action) {
                unproven.push(format!("{sid}: the watch does not name {action}:\n{log}"));
            }
            continue;
        }
        // A file already there is not fetched again: start each from an empty workdir.
        let _ = std::fs::remove_dir_all(s.path("state"));
        let run = tokio::task::block_in_place(|| agent(&name, &["sync"]));
        if run.status != 1 || !run.stderr.contains(action) {
            unproven.push(format!(
                "{sid}: exit {}, {action} not named:\n{}",
                run.status, run.stderr
            ));
            continue;
        }
        for (file, before) in &written {
            assert_same!(
                std::fs::read(s.workdir().join(file)).unwrap(),
                *before,
                "{sid} changed {file}"
            );
        }
    }
    assert!(unproven.is_empty(), "{}", unproven.join("\n"));
}

fn creds_env(creds: &[(String, [String; 3])], name: &str, rig: &Rig) -> Vec<(String, String)> {
    let [key, secret, token] = &creds.iter().find(|(n, _)| n == name).unwrap().1;
    vec![
        ("AWS_ACCESS_KEY_ID".into(), key.clone()),
        ("AWS_SECRET_ACCESS_KEY".into(), secret.clone()),
        ("AWS_SESSION_TOKEN".into(), token.clone()),
        ("AWS_REGION".into(), rig.region.clone()),
        ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
    ]
}

/// Runs the daemon until its watch logs a denial of `action` (30 s at most); its log.
fn watch_denial(s: &Scratch, env: &[(String, String)], action: &str) -> String {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut daemon = s.spawn_daemon("http://127.0.0.1:9", &env);
    let started = Instant::now();
    let log = loop {
        let log = std::fs::read_to_string(s.path("daemon.log")).unwrap_or_default();
        if log.contains(action) || started.elapsed() > Duration::from_secs(30) {
            break log;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = daemon.kill();
    let _ = daemon.wait();
    log
}
