//! `kicky-agent iam-policy`: linted by parliament, and proven sufficient and necessary on exact
//! ARNs: every AWS call the agent really makes (`sync`, the daemon's watch with a release marker,
//! the launch lifecycle hook, ECR; and with `release.store`, the sync of the promoted release and
//! the watch that applies the next one promoted), recorded on its way to the rig's moto, is allowed by the
//! generated policy as IAM evaluates it (`common::iam_eval`: moto checks resources only for S3,
//! and no condition at all), and each statement taken away denies at least one of them.
//!
//! What the recording cannot see is derived from what AWS documents: the kms:Decrypt that SSM and
//! Secrets Manager make on the caller's behalf for each SecureString and secret they return
//! (`kms:ViaService` and the encryption context `PARAMETER_ARN` / `SecretARN`), and the pull
//! actions ECR checks when the engine pulls an image the agent asked for (BatchGetImage for the
//! manifest, GetDownloadUrlForLayer for the layers), recorded at the engine's socket.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_ssm::types::ParameterType;
use common::asg::{autoscaling, group_with_launch_hook};
use common::docker_proxy::DockerProxy;
use common::iam_eval::{allows, arn_like, glob, Call};
use common::imds::OwnImds;
use common::recorder::{Recorder, Request};
use common::{Rig, Scratch};
use serde_json::{json, Value};

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

/// The evaluator against the rules and examples of IAM's documentation (policy elements Action,
/// Resource, Condition; condition operators).
#[test]
fn the_evaluator_follows_iams_documented_rules() {
    // Wildcards in names and ARNs: `*` any run, `?` one character.
    let globs: &[(&str, &str, bool)] = &[
        ("s3:Get*", "s3:GetObject", true),
        ("iam:*AccessKey*", "iam:CreateAccessKey", true),
        ("iam:*AccessKey*", "iam:ListUsers", false),
        ("secret:db-??????", "secret:db-a1b2c3", true),
        ("secret:db-??????", "secret:db-a1b2c", false),
        ("secret:db-??????", "secret:db-a1b2c3d", false),
        ("a*b*c", "abc", true),
        ("a*b*c", "axxbyycz", false),
        ("", "", true),
    ];
    for (pattern, value, expect) in globs {
        assert_eq!(glob(pattern, value), *expect, "{pattern} ~ {value}");
    }
    // ARNs part by part; the resource part may hold colons and slashes.
    let arns: &[(&str, &str, bool)] = &[
        ("*", "arn:aws:s3:::amzn-s3-demo-bucket/a", true),
        ("arn:aws:s3:::amzn-s3-demo-bucket/*", "arn:aws:s3:::amzn-s3-demo-bucket/a/b.txt", true),
        ("arn:aws:s3:::amzn-s3-demo-bucket/*", "arn:aws:s3:::amzn-s3-demo-bucket2/a", false),
        ("arn:aws:iam::123456789012:user/*", "arn:aws:iam::123456789012:user/Bob", true),
        ("arn:aws:iam::123456789012:user/*", "arn:aws:iam::111122223333:user/Bob", false),
        ("arn:aws:cloudtrail:*:111122223333:trail/*", "arn:aws:cloudtrail:us-east-2:111122223333:trail/mytrail", true),
        (
            "arn:aws:autoscaling:ap-northeast-2:123456789012:autoScalingGroup:*:autoScalingGroupName/orange-asg",
            "arn:aws:autoscaling:ap-northeast-2:123456789012:autoScalingGroup:8e9d7a2c-0b1e-4f43-9d1b-5a1a1a1a1a1a:autoScalingGroupName/orange-asg",
            true,
        ),
        ("arn:aws:ssm:*:*:parameter/a", "arn:aws:ssm:ap-northeast-2:1:parameter/a/b", false),
        // Case-sensitive, and a wildcard does not reach into another part.
        ("arn:aws:ssm:ap-northeast-2:1:parameter/A", "arn:aws:ssm:ap-northeast-2:1:parameter/a", false),
        ("arn:aws:s*", "arn:aws:s3:::b/k", false),
    ];
    for (pattern, arn, expect) in arns {
        assert_eq!(arn_like(pattern, arn), *expect, "{pattern} ~ {arn}");
    }
    // Statements: actions case-insensitive; conditions AND across keys, OR across values; a key
    // the request lacks fails; StringEquals compares a `*` literally; Deny wins.
    let key = "arn:aws:kms:ap-northeast-2:1:key/k";
    let param = "arn:aws:ssm:ap-northeast-2:1:parameter/app/db";
    let decrypt = || {
        Call::new("kms:Decrypt", key)
            .with("kms:ViaService", "ssm.ap-northeast-2.amazonaws.com")
            .with("kms:EncryptionContext:PARAMETER_ARN", param)
    };
    let policy = |operator: &str, values: Value| {
        json!({"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Action": "KMS:decrypt", "Resource": ["arn:aws:kms:ap-northeast-2:1:key/*"],
            "Condition": {
                "StringEquals": {"kms:viaservice": ["ssm.ap-northeast-2.amazonaws.com", "secretsmanager.ap-northeast-2.amazonaws.com"]},
                operator: {"kms:EncryptionContext:PARAMETER_ARN": values},
            },
        }]})
    };
    let cases: &[(Value, Call, bool)] = &[
        (
            policy(
                "StringLike",
                json!(["arn:aws:ssm:ap-northeast-2:1:parameter/app/*"]),
            ),
            decrypt(),
            true,
        ),
        (
            policy(
                "StringEquals",
                json!(["arn:aws:ssm:ap-northeast-2:1:parameter/app/*"]),
            ),
            decrypt(),
            false,
        ),
        (
            policy(
                "StringEquals",
                json!(["arn:aws:ssm:ap-northeast-2:1:parameter/x", param]),
            ),
            decrypt(),
            true,
        ),
        (
            policy("ArnLike", json!("arn:aws:ssm:*:1:parameter/app/*")),
            decrypt(),
            true,
        ),
        (
            policy(
                "StringLike",
                json!(["arn:aws:ssm:ap-northeast-2:1:parameter/other/*"]),
            ),
            decrypt(),
            false,
        ),
        (
            policy("StringLike", json!("*")),
            Call::new("kms:Decrypt", key)
                .with("kms:ViaService", "ssm.ap-northeast-2.amazonaws.com"),
            false,
        ),
        (
            policy("StringLike", json!("*")),
            decrypt().with("kms:ViaService", "ec2.ap-northeast-2.amazonaws.com"),
            false,
        ),
        (
            policy("StringLike", json!("*")),
            Call::new("kms:Encrypt", key),
            false,
        ),
    ];
    for (i, (policy, call, expect)) in cases.iter().enumerate() {
        assert_eq!(
            allows(policy, call),
            *expect,
            "case {i}: {call} under {policy}"
        );
    }
    let mut denied = policy("StringLike", json!("*"));
    denied["Statement"]
        .as_array_mut()
        .unwrap()
        .push(json!({"Effect": "Deny", "Action": "kms:*", "Resource": "*"}));
    assert!(!allows(&denied, &decrypt()));
    assert!(
        !allows(&json!({"Statement": []}), &decrypt()),
        "no Allow, no access"
    );
    // A policy variable in a resource is the request's own value: one instance's record, not
    // another's; without the key in the context, nothing.
    let own = json!({"Statement": [{"Effect": "Allow", "Action": "s3:PutObject",
        "Resource": "arn:aws:s3:::b/fleet/${aws:userid}.json"}]});
    let put = |key: &str| Call::new("s3:PutObject", &format!("arn:aws:s3:::b/fleet/{key}.json"));
    assert!(allows(
        &own,
        &put("AROA1:i-1").with("aws:userid", "AROA1:i-1")
    ));
    assert!(!allows(
        &own,
        &put("AROA1:i-2").with("aws:userid", "AROA1:i-1")
    ));
    assert!(!allows(&own, &put("AROA1:i-1")));
    // What it does not know it refuses, never ignores: NotAction and NotResource grant by
    // exclusion.
    for (element, known, value) in [
        ("NotAction", "Action", "kms:Encrypt"),
        (
            "NotResource",
            "Resource",
            "arn:aws:kms:ap-northeast-2:1:key/other",
        ),
    ] {
        let mut statement = json!({"Effect": "Allow", "Action": "kms:*", "Resource": "*"});
        statement.as_object_mut().unwrap().remove(known);
        statement[element] = json!(value);
        let policy = json!({"Statement": [statement]});
        let refused = std::panic::catch_unwind(|| allows(&policy, &decrypt()));
        assert!(refused.is_err(), "{element} was not refused");
    }
}

/// Percent-decoding of a URL path or form value.
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

/// What the test knows of the world the agent talks to: to turn each request into the call IAM
/// authorizes (the resources' exact ARNs and the request context).
impl World {
    /// The world of one test: its two secrets (their ARNs asked of Secrets Manager), its two
    /// SecureStrings, its group and instance, the rig's registry.
    async fn of(
        rig: &Rig,
        secrets: [&str; 2],
        secure: [&str; 2],
        (group, group_arn): (&str, String),
        instance: &str,
    ) -> World {
        let mut arns = BTreeMap::new();
        for id in secrets {
            let out = rig
                .secrets()
                .describe_secret()
                .secret_id(id)
                .send()
                .await
                .unwrap();
            arns.insert(id.to_string(), out.arn().unwrap().to_string());
        }
        World {
            region: rig.region.clone(),
            account: "123456789012".to_string(),
            secrets: arns,
            secure: secure.into_iter().map(str::to_string).collect(),
            groups: BTreeMap::from([(group.to_string(), group_arn)]),
            instances: BTreeMap::from([(instance.to_string(), group.to_string())]),
            registry: std::env::var("KICKY_RIG_REGISTRY").expect("KICKY_RIG_REGISTRY"),
            user_id: rig
                .sts()
                .get_caller_identity()
                .send()
                .await
                .unwrap()
                .user_id()
                .unwrap()
                .to_string(),
            cached_under: None,
        }
    }

    /// A world with the rig's registry alone, a pull through cache keeping what it caches under
    /// `prefix`.
    fn pull_through_cache(rig: &Rig, prefix: &str) -> World {
        World {
            region: rig.region.clone(),
            account: "123456789012".to_string(),
            secrets: BTreeMap::new(),
            secure: BTreeSet::new(),
            groups: BTreeMap::new(),
            instances: BTreeMap::new(),
            registry: std::env::var("KICKY_RIG_REGISTRY").expect("KICKY_RIG_REGISTRY"),
            // No release store: no fleet record, the one call keyed by the caller's id.
            user_id: String::new(),
            cached_under: Some(format!("{prefix}/")),
        }
    }
}

struct World {
    region: String,
    account: String,
    /// Secret id as the agent names it → its ARN (with Secrets Manager's random suffix).
    secrets: BTreeMap<String, String>,
    /// SecureString parameters, by name.
    secure: BTreeSet<String>,
    /// Group name → ARN, and instance id → group name.
    groups: BTreeMap<String, String>,
    instances: BTreeMap<String, String>,
    /// The rig's registry, which stands in for the instance's ECR registry.
    registry: String,
    /// The caller's `aws:userid`, as STS says (the agent signs with the rig's credentials).
    user_id: String,
    /// Where that registry, as a pull through cache (`mirror_of`), keeps what it caches.
    cached_under: Option<String>,
}

impl World {
    fn arn(&self, service: &str, resource: &str) -> String {
        format!(
            "arn:aws:{service}:{}:{}:{resource}",
            self.region, self.account
        )
    }

    /// kms:Decrypt as `service` asks it on the caller's behalf, with its encryption context.
    fn decrypt(&self, service: &str, context: &str, arn: &str) -> Call {
        let key = self.arn("kms", "key/00000000-0000-0000-0000-000000000000");
        Call::new("kms:Decrypt", &key)
            .with(
                "kms:ViaService",
                &format!("{service}.{}.amazonaws.com", self.region),
            )
            .with(&format!("kms:EncryptionContext:{context}"), arn)
    }

    /// GetParameters of `name` (or of `name:version`, a release's pin: authorized on the name).
    fn parameter(&self, name: &str) -> (Call, Option<Call>) {
        let name = name.split_once(':').map_or(name, |(name, _)| name);
        let arn = self.arn(
            "ssm",
            &format!("parameter/{}", name.trim_start_matches('/')),
        );
        let decrypt = self
            .secure
            .contains(name)
            .then(|| self.decrypt("ssm", "PARAMETER_ARN", &arn));
        (Call::new("ssm:GetParameters", &arn), decrypt)
    }

    fn secret(&self, action: &str, id: &str, decrypted: bool) -> Vec<Call> {
        let arn = self
            .secrets
            .get(id)
            .unwrap_or_else(|| panic!("unknown secret {id}"));
        let mut calls = vec![Call::new(action, arn)];
        if decrypted {
            calls.push(self.decrypt("secretsmanager", "SecretARN", arn));
        }
        calls
    }

    /// The calls IAM authorizes for one request the agent sent to AWS.
    fn calls(&self, request: &Request) -> Vec<Call> {
        if let Some(target) = request.header("x-amz-target") {
            let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
            let texts = |key: &str| -> Vec<String> {
                body[key]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            };
            let text = |key: &str| body[key].as_str().unwrap_or_default().to_string();
            let operation = target.rsplit('.').next().unwrap();
            return match operation {
                "GetParameters" => texts("Names")
                    .iter()
                    .flat_map(|name| {
                        let (read, decrypt) = self.parameter(name);
                        std::iter::once(read).chain(decrypt)
                    })
                    .collect(),
                "GetParametersByPath" => {
                    let path = text("Path");
                    let arn = self.arn(
                        "ssm",
                        &format!("parameter/{}", path.trim_start_matches('/')),
                    );
                    let mut calls = vec![Call::new("ssm:GetParametersByPath", &arn)];
                    let under = format!("{}/", path.trim_end_matches('/'));
                    for name in self.secure.iter().filter(|n| n.starts_with(&under)) {
                        calls.extend(self.parameter(name).1);
                    }
                    calls
                }
                "DescribeParameters" => vec![Call::new("ssm:DescribeParameters", "*")],
                "GetSecretValue" => {
                    self.secret("secretsmanager:GetSecretValue", &text("SecretId"), true)
                }
                "DescribeSecret" => {
                    self.secret("secretsmanager:DescribeSecret", &text("SecretId"), false)
                }
                // Each secret of the batch is also checked against GetSecretValue.
                "BatchGetSecretValue" => {
                    std::iter::once(Call::new("secretsmanager:BatchGetSecretValue", "*"))
                        .chain(
                            texts("SecretIdList").iter().flat_map(|id| {
                                self.secret("secretsmanager:GetSecretValue", id, true)
                            }),
                        )
                        .collect()
                }
                "GetAuthorizationToken" => vec![Call::new("ecr:GetAuthorizationToken", "*")],
                other => panic!("a call the test does not know: {target} ({other})"),
            };
        }
        let form = String::from_utf8_lossy(&request.body).into_owned();
        if let Some(fields) = form.contains("Action=").then(|| {
            form.split('&')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), decode(v)))
                .collect::<BTreeMap<String, String>>()
        }) {
            let action = &fields["Action"];
            // STS: "No permissions are required to perform this operation" (its API reference).
            if action == "GetCallerIdentity" {
                return Vec::new();
            }
            let group = |name: &str| {
                self.groups
                    .get(name)
                    .cloned()
                    .unwrap_or_else(|| panic!("unknown group {name}"))
            };
            let resource = match action.as_str() {
                "DescribeAutoScalingInstances" | "DescribeLifecycleHooks" => "*".to_string(),
                "RecordLifecycleActionHeartbeat" | "CompleteLifecycleAction" => {
                    group(&fields["AutoScalingGroupName"])
                }
                "SetInstanceHealth" => group(&self.instances[&fields["InstanceId"]]),
                other => panic!("an Auto Scaling call the test does not know: {other}"),
            };
            return vec![Call::new(&format!("autoscaling:{action}"), &resource)];
        }
        // S3, path-style: GET or HEAD of /bucket/key; a version is GetObjectVersion.
        let (path, query) = request
            .target
            .split_once('?')
            .unwrap_or((&request.target, ""));
        let (bucket, key) = path
            .trim_start_matches('/')
            .split_once('/')
            .expect("an S3 object request");
        let versioned = query.split('&').any(|kv| kv.starts_with("versionId="));
        let action = match (request.method.as_str(), versioned) {
            ("GET" | "HEAD", true) => "s3:GetObjectVersion",
            ("GET" | "HEAD", false) => "s3:GetObject",
            ("PUT", false) => "s3:PutObject",
            _ => panic!(
                "an S3 call the test does not know: {} {}",
                request.method, request.target
            ),
        };
        // Every S3 call names the instance's account as the bucket's owner (moto made the bucket
        // in that account, so that is also s3:ResourceAccount).
        assert_eq!(
            request.header("x-amz-expected-bucket-owner"),
            Some(self.account.as_str()),
            "{} {} without the expected bucket owner",
            request.method,
            request.target
        );
        let arn = format!("arn:aws:s3:::{bucket}/{}", decode(key));
        vec![Call::new(action, &arn)
            .with("s3:ResourceAccount", &self.account)
            .with("aws:userid", &self.user_id)]
    }

    /// The pull actions ECR checks for an image create the agent sent to the engine.
    fn pulls(&self, change: &str) -> Vec<Call> {
        let Some(query) = change
            .strip_prefix("POST ")
            .and_then(|c| c.split_once("/images/create?"))
            .map(|(_, q)| q)
        else {
            return Vec::new();
        };
        let image = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("fromImage="))
            .map(decode)
            .expect("fromImage");
        let Some(repository) = image.strip_prefix(&format!("{}/", self.registry)) else {
            return Vec::new();
        };
        let arn = self.arn("ecr", &format!("repository/{repository}"));
        let mut actions = vec!["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"];
        // Through a pull through cache, an image not cached yet is imported, into a repository
        // made on its first pull ("IAM permissions required to sync an upstream registry").
        if let Some(prefix) = &self.cached_under {
            if repository.starts_with(prefix.as_str()) {
                actions.extend(["ecr:BatchImportUpstreamImage", "ecr:CreateRepository"]);
            }
        }
        actions
            .iter()
            .map(|action| Call::new(action, &arn))
            .collect()
    }
}

fn without(policy: &Value, sid: &str) -> Value {
    let mut policy = policy.clone();
    policy["Statement"]
        .as_array_mut()
        .unwrap()
        .retain(|s| s["Sid"] != sid);
    policy
}

/// Sufficient: each of `calls` is allowed by `policy`. Necessary: each statement taken away
/// denies one of them.
fn sufficient_and_necessary(policy: &Value, calls: &BTreeSet<Call>) {
    let denied: Vec<String> = calls
        .iter()
        .filter(|c| !allows(policy, c))
        .map(|c| c.to_string())
        .collect();
    assert!(
        denied.is_empty(),
        "denied by the generated policy:\n{}\npolicy: {policy:#}",
        denied.join("\n")
    );
    let mut idle = Vec::new();
    for statement in policy["Statement"].as_array().unwrap() {
        let sid = statement["Sid"].as_str().unwrap();
        let smaller = without(policy, sid);
        if calls.iter().all(|c| allows(&smaller, c)) {
            idle.push(sid.to_string());
        }
    }
    assert!(
        idle.is_empty(),
        "statements no call needs: {idle:?}\ncalls:\n{}",
        calls
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The statements of `policy`, by id, in order.
fn sids(policy: &Value) -> Vec<&str> {
    policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["Sid"].as_str().unwrap())
        .collect()
}

/// The sources both policy tests read: a SecureString document and two parameters under a path
/// (String and SecureString), a secret read whole and one pinned to a stage (two versions).
/// Returns the hidden parameter's name and the two secrets' ids.
async fn seed_sources(rig: &Rig, p: &str, env: &str) -> (String, String, String) {
    rig.put(env, "GREETING=hello\n", ParameterType::SecureString)
        .await;
    rig.put(
        &format!("/kt/{p}/vars/PLAIN"),
        "v-plain",
        ParameterType::String,
    )
    .await;
    let hidden = format!("/kt/{p}/vars/HIDDEN");
    rig.put(&hidden, "v-hidden", ParameterType::SecureString)
        .await;
    let (db, pinned) = (format!("kt-{p}-db"), format!("kt-{p}-pinned"));
    rig.put_secret(&db, r#"{"DB_PASSWORD":"v-db-9f3"}"#).await;
    rig.put_secret(&pinned, "v-old-9f3").await;
    rig.put_secret(&pinned, "v-new-9f3").await;
    (hidden, db, pinned)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_call_the_agent_makes_is_allowed_and_each_statement_needed() {
    let rig = Rig::get();
    let s = Scratch::new();
    let recorder = Recorder::start(&rig.moto_url).await;
    let docker = DockerProxy::start(s.dir.path());
    let n = fastrand::u32(..) % 1_000_000;
    let p = format!("ktiam{n}");
    let _removal = common::stack::ProjectRemoval(p.clone());
    let registry = std::env::var("KICKY_RIG_REGISTRY").expect("KICKY_RIG_REGISTRY");

    // Parameters (SecureString and String, by name and under a path), secrets (current and
    // pinned), files (one pinned to a version), a release marker, an image from the registry
    // that stands in for ECR, and a group whose instance waits for its launch hook.
    let env = format!("/kt/{p}/env");
    let (hidden, db, pinned) = seed_sources(&rig, &p, &env).await;
    let bucket = rig.bucket("iam", true).await;
    let compose = format!("services:\n  web:\n    image: {registry}/tester/web:2\n");
    rig.put_object(&bucket, "docker-compose.yml", compose.into_bytes())
        .await;
    let version = rig
        .put_object(&bucket, "extra.yml", b"extra: 1\n".to_vec())
        .await
        .expect("a versioned bucket");
    rig.put_object(&bucket, "release.marker", b"1\n".to_vec())
        .await;
    let asg = autoscaling(&rig);
    let group = format!("kt-iam-{n}");
    let instance = group_with_launch_hook(&asg, &group).await;
    let group_arn = asg
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(&group)
        .send()
        .await
        .unwrap()
        .auto_scaling_groups()[0]
        .auto_scaling_group_arn()
        .unwrap()
        .to_string();
    let fixture = s.path("imds-fixture");
    std::fs::create_dir_all(&fixture).unwrap();
    std::fs::write(fixture.join("instance-id"), &instance).unwrap();
    std::fs::write(fixture.join("region"), &rig.region).unwrap();
    let imds = OwnImds::start(&rig, &rig.moto_url, s.dir.path(), &fixture);

    s.config(
        &rig,
        &format!(
            "project: {p}\nworkdir: {{workdir}}\ncontrol_socket: {{scratch}}/control.sock\n\
             aws:\n  endpoint_url: {}\n  s3_force_path_style: true\n\
             env:\n  parameters:\n    - name: {env}\n      format: dotenv\n    - path: /kt/{p}/vars/\n\
             \x20   - secret: {db}\n    - secret: {pinned}\n      version_stage: AWSPREVIOUS\n      format: value\n      key: PINNED\n\
             files:\n  - source: s3://{bucket}/docker-compose.yml\n    path: docker-compose.yml\n\
             \x20 - source: s3://{bucket}/extra.yml\n    path: extra.yml\n    version_id: {version}\n\
             compose:\n  file: docker-compose.yml\n  pull: always\n  healthy_timeout: 30s\n\
             registries:\n  - server: {registry}\n    ecr: true\n\
             lifecycle:\n  hook: auto\n\
             watch:\n  interval: 5s\n  marker: s3://{bucket}/release.marker\n",
            recorder.url
        ),
    );
    let agent_env = [
        ("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.url.as_str()),
        ("DOCKER_HOST", docker.host.as_str()),
    ];
    let secrets = ["v-hidden", "v-db-9f3", "v-old-9f3", "v-new-9f3"];

    // The sync, then the daemon until its watch has HEADed the marker and looked at every source.
    let run = tokio::task::block_in_place(|| s.agent_with(&rig, &["-v", "sync"], &agent_env));
    run.expect(0);
    run.assert_free_of(&secrets);
    assert!(
        run.stderr.contains("lifecycle action completed: CONTINUE"),
        "{}",
        run.stderr
    );
    let from = recorder.requests().len();
    let mut daemon = s.spawn_daemon(&imds.url, &[("DOCKER_HOST", docker.host.as_str())]);
    let started = Instant::now();
    // Every call of one whole watch, after the marker's HEAD (the sync asks none of these: the
    // first watch with a marker looks at every source): the parameters' versions, each secret's,
    // each file's ETag.
    let marker = format!("/{bucket}/release.marker");
    let unwatched = |requests: &[Request]| -> Vec<String> {
        let Some(at) = requests
            .iter()
            .position(|r| r.method == "HEAD" && r.target.starts_with(&marker))
        else {
            return vec![format!("HEAD {marker}")];
        };
        let watch = &requests[at..];
        let asked = |target: &'static str| {
            watch
                .iter()
                .filter(move |r| r.header("x-amz-target") == Some(target))
        };
        let mut missing = Vec::new();
        if asked("AmazonSSM.DescribeParameters").next().is_none() {
            missing.push("DescribeParameters".to_string());
        }
        for id in [&db, &pinned] {
            let described = asked("secretsmanager.DescribeSecret").any(|r| {
                serde_json::from_slice::<Value>(&r.body).is_ok_and(|b| b["SecretId"] == **id)
            });
            if !described {
                missing.push(format!("DescribeSecret {id}"));
            }
        }
        for key in ["docker-compose.yml", "extra.yml"] {
            let object = format!("/{bucket}/{key}");
            if !watch
                .iter()
                .any(|r| r.method == "HEAD" && r.target.starts_with(&object))
            {
                missing.push(format!("HEAD {object}"));
            }
        }
        missing
    };
    while !unwatched(&recorder.requests()[from..]).is_empty()
        && started.elapsed() < Duration::from_secs(60)
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = daemon.kill();
    let _ = daemon.wait();
    let requests = recorder.requests();
    let missing = unwatched(&requests[from..]);
    if !missing.is_empty() {
        let log = std::fs::read_to_string(s.path("daemon.log")).unwrap_or_default();
        let leaked = secrets.iter().any(|secret| log.contains(secret));
        let log = if leaked {
            "(not shown: it holds a secret)"
        } else {
            log.as_str()
        };
        panic!("the daemon's watch did not ask for {missing:?}; its log: {log}");
    }

    // The policy for this config, here (the compose file is in the workdir now).
    let args = ["iam-policy", "--group", group.as_str()];
    let printed = s.agent_with(&rig, &args, &agent_env);
    printed.expect(0);
    let policy: Value = serde_json::from_str(&printed.stdout).expect("iam-policy prints JSON");

    let world = World::of(
        &rig,
        [&db, &pinned],
        [&env, &hidden],
        (&group, group_arn),
        &instance,
    )
    .await;
    let mut calls: BTreeSet<Call> = requests.iter().flat_map(|r| world.calls(r)).collect();
    calls.extend(docker.changes().iter().flat_map(|c| world.pulls(c)));

    sufficient_and_necessary(&policy, &calls);
    // The config exercises every job: these are the statements it must need.
    assert_eq!(
        sids(&policy),
        [
            "ReadParameters",
            "ReadParameterPaths",
            "WatchParameterVersions",
            "DecryptParameters",
            "ReadSecrets",
            "BatchReadSecrets",
            "DecryptSecrets",
            "ReadFiles",
            "ReadPinnedFileVersions",
            "WatchReleaseMarker",
            "EcrToken",
            "EcrPull",
            "FindLifecycleHook",
            "CompleteLifecycleAction",
        ]
    );
}

/// With `release.store`: the instance's `sync` of the promoted release, then its daemon, whose
/// watch HEADs the pointer and applies the next release promoted (a parameter moved), read every
/// input at the version the release pins; the policy allows exactly those calls, and lists no
/// call of the watch without a release (DescribeParameters, DescribeSecret, a file's HEAD) nor
/// any call by path or in a batch.
#[tokio::test(flavor = "multi_thread")]
async fn with_a_release_every_call_is_allowed_and_each_statement_needed() {
    let rig = Rig::get();
    let s = Scratch::new();
    // The operator (`release create`, `release promote`) talks to moto directly: only the
    // instance's calls are recorded.
    let operator = Scratch::new();
    let recorder = Recorder::start(&rig.moto_url).await;
    let docker = DockerProxy::start(s.dir.path());
    let n = fastrand::u32(..) % 1_000_000;
    let p = format!("ktiamr{n}");
    let _removal = common::stack::ProjectRemoval(p.clone());
    let registry = std::env::var("KICKY_RIG_REGISTRY").expect("KICKY_RIG_REGISTRY");

    let env = format!("/kt/{p}/env");
    let (hidden, db, pinned) = seed_sources(&rig, &p, &env).await;
    let bucket = rig.bucket("iamrel", true).await;
    let compose = format!("services:\n  web:\n    image: {registry}/tester/web:2\n");
    rig.put_object(&bucket, "docker-compose.yml", compose.into_bytes())
        .await;
    rig.put_object(&bucket, "extra.yml", b"extra: 1\n".to_vec())
        .await
        .expect("a versioned bucket");
    let asg = autoscaling(&rig);
    let group = format!("kt-iamr-{n}");
    let instance = group_with_launch_hook(&asg, &group).await;
    let group_arn = asg
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(&group)
        .send()
        .await
        .unwrap()
        .auto_scaling_groups()[0]
        .auto_scaling_group_arn()
        .unwrap()
        .to_string();
    let fixture = s.path("imds-fixture");
    std::fs::create_dir_all(&fixture).unwrap();
    std::fs::write(fixture.join("instance-id"), &instance).unwrap();
    std::fs::write(fixture.join("region"), &rig.region).unwrap();
    let imds = OwnImds::start(&rig, &rig.moto_url, s.dir.path(), &fixture);

    let config = |endpoint: &str, hook: &str| {
        format!(
            "project: {p}\nworkdir: {{workdir}}\ncontrol_socket: {{scratch}}/control.sock\n\
             aws:\n  endpoint_url: {endpoint}\n  s3_force_path_style: true\n\
             env:\n  parameters:\n    - name: {env}\n      format: dotenv\n    - path: /kt/{p}/vars/\n\
             \x20   - secret: {db}\n    - secret: {pinned}\n      version_stage: AWSPREVIOUS\n      format: value\n      key: PINNED\n\
             files:\n  - source: s3://{bucket}/docker-compose.yml\n    path: docker-compose.yml\n\
             \x20 - source: s3://{bucket}/extra.yml\n    path: extra.yml\n\
             compose:\n  file: docker-compose.yml\n  pull: always\n  healthy_timeout: 30s\n\
             registries:\n  - server: {registry}\n    ecr: true\n\
             lifecycle:\n  hook: {hook}\n\
             watch:\n  interval: 5s\n\
             release:\n  store: s3://{bucket}/releases/orange/\n"
        )
    };
    s.config(&rig, &config(&recorder.url, "auto"));
    operator.config(&rig, &config(&rig.moto_url, "off"));
    let agent_env = [
        ("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.url.as_str()),
        ("DOCKER_HOST", docker.host.as_str()),
    ];
    let operator_env = [("DOCKER_HOST", docker.host.as_str())];
    let secrets = ["v-hidden", "v-db-9f3", "v-old-9f3", "v-new-9f3"];
    let release = |note: &str| {
        let args = ["release", "create", "--note", note];
        let created =
            tokio::task::block_in_place(|| operator.agent_with(&rig, &args, &operator_env));
        created.expect(0);
        created.assert_free_of(&secrets);
        let id = created.stdout.trim().to_string();
        let args = ["release", "promote", id.as_str()];
        tokio::task::block_in_place(|| operator.agent_with(&rig, &args, &operator_env)).expect(0);
        id
    };

    // The first release, promoted, applied by the instance's sync.
    release("first");
    let run = tokio::task::block_in_place(|| s.agent_with(&rig, &["-v", "sync"], &agent_env));
    run.expect(0);
    run.assert_free_of(&secrets);
    assert!(
        run.stderr.contains("lifecycle action completed: CONTINUE"),
        "{}",
        run.stderr
    );

    // The daemon: once its watch has HEADed the pointer, a second release (a parameter moved) is
    // promoted, and the watch applies it.
    let from = recorder.requests().len();
    let mut daemon = s.spawn_daemon(&imds.url, &[("DOCKER_HOST", docker.host.as_str())]);
    let pointer = format!("/{bucket}/releases/orange/promoted.json");
    let started = Instant::now();
    let headed = |requests: &[Request]| {
        requests
            .iter()
            .any(|r| r.method == "HEAD" && r.target.starts_with(&pointer))
    };
    while !headed(&recorder.requests()[from..]) && started.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    rig.put(&env, "GREETING=moved\n", ParameterType::SecureString)
        .await;
    let second = release("second");
    let status = |s: &Scratch| -> Option<String> {
        let run = s.agent_with(&rig, &["status", "--json"], &agent_env);
        let value: Value = serde_json::from_str(&run.stdout).ok()?;
        value["release"].as_str().map(str::to_string)
    };
    let mut running = None;
    while running.as_deref() != Some(second.as_str())
        && started.elapsed() < Duration::from_secs(120)
    {
        tokio::time::sleep(Duration::from_millis(500)).await;
        running = tokio::task::block_in_place(|| status(&s));
    }
    let _ = daemon.kill();
    let _ = daemon.wait();
    if running.as_deref() != Some(second.as_str()) {
        let log = std::fs::read_to_string(s.path("daemon.log")).unwrap_or_default();
        let leaked = secrets.iter().any(|secret| log.contains(secret));
        let log = if leaked {
            "(not shown: it holds a secret)"
        } else {
            log.as_str()
        };
        panic!("the daemon did not apply release {second} (running: {running:?}); its log: {log}");
    }
    let requests = recorder.requests();
    assert!(headed(&requests[from..]), "the watch HEADs the pointer");

    let args = ["iam-policy", "--group", group.as_str()];
    let printed = s.agent_with(&rig, &args, &agent_env);
    printed.expect(0);
    let policy: Value = serde_json::from_str(&printed.stdout).expect("iam-policy prints JSON");

    let world = World::of(
        &rig,
        [&db, &pinned],
        [&env, &hidden],
        (&group, group_arn),
        &instance,
    )
    .await;
    let mut calls: BTreeSet<Call> = requests.iter().flat_map(|r| world.calls(r)).collect();
    calls.extend(docker.changes().iter().flat_map(|c| world.pulls(c)));
    // Every input by version: parameters by `name:version` (those under the path too), secrets
    // by version id, files by version id.
    let actions: BTreeSet<&str> = calls.iter().map(|c| c.action.as_str()).collect();
    for never in [
        "ssm:GetParametersByPath",
        "ssm:DescribeParameters",
        "secretsmanager:DescribeSecret",
        "secretsmanager:BatchGetSecretValue",
    ] {
        assert!(!actions.contains(never), "{never} was called: {actions:?}");
    }

    sufficient_and_necessary(&policy, &calls);
    assert_eq!(
        sids(&policy),
        [
            "ReadParameters",
            "DecryptParameters",
            "ReadSecrets",
            "DecryptSecrets",
            "ReadPinnedFileVersions",
            "ReadReleases",
            "ReportToFleet",
            "EcrToken",
            "EcrPull",
            "FindLifecycleHook",
            "CompleteLifecycleAction",
        ]
    );
}

#[test]
fn an_unknown_group_is_refused_unless_any_group_is_asked_for() {
    let rig = Rig::get();
    let s = Scratch::new();
    s.config(&rig, "project: p\nworkdir: {workdir}\naws:\n  region: ap-northeast-2\nlifecycle:\n  hook: auto\n");
    let no_imds = [("AWS_EC2_METADATA_DISABLED", "true")];
    let run = s.agent_with(&rig, &["iam-policy", "--account", "123456789012"], &no_imds);
    run.expect(2);
    assert!(
        run.stderr.contains("--group NAME") && run.stdout.is_empty(),
        "{}",
        run.all()
    );
    let any = ["iam-policy", "--account", "123456789012", "--group", "*"];
    let run = s.agent_with(&rig, &any, &no_imds);
    run.expect(0);
    assert!(
        run.stdout.contains("autoScalingGroupName/*"),
        "{}",
        run.stdout
    );
}

/// An `ecr: true` registry that mirrors Docker Hub (an ECR pull through cache, played by the
/// rig's registry): the sync pulls `ktptc<n>:1` through it, and the policy allows exactly that,
/// with the pull through cache's own actions on the cached repository and no other.
#[tokio::test(flavor = "multi_thread")]
async fn a_pull_through_cache_is_allowed_exactly_its_repositories() {
    let rig = Rig::get();
    let s = Scratch::new();
    let recorder = Recorder::start(&rig.moto_url).await;
    let docker = DockerProxy::start(s.dir.path());
    let n = fastrand::u32(..) % 1_000_000;
    let p = format!("ktptc{n}");
    let _removal = common::stack::ProjectRemoval(p.clone());
    let registry = std::env::var("KICKY_RIG_REGISTRY").expect("KICKY_RIG_REGISTRY");
    let prefix = format!("hub{n}");
    crate::common::stack::push_as(
        &registry,
        "tester/web:1",
        &format!("{prefix}/library/ktptc{n}:1"),
    );
    std::fs::create_dir_all(s.workdir()).unwrap();
    std::fs::write(
        s.workdir().join("docker-compose.yml"),
        format!("services:\n  web:\n    image: ktptc{n}:1\n"),
    )
    .unwrap();
    s.config(
        &rig,
        &format!(
            "project: {p}\nworkdir: {{workdir}}\n\
             aws:\n  endpoint_url: {}\n  s3_force_path_style: true\n\
             compose:\n  file: docker-compose.yml\n  healthy_timeout: 30s\n\
             registries:\n  - server: {registry}\n    ecr: true\n    mirror_of: docker.io\n    prefix: {prefix}\n\
             lifecycle:\n  hook: off\nwatch:\n  interval: 0\n",
            recorder.url
        ),
    );
    let env = [("DOCKER_HOST", docker.host.as_str())];
    tokio::task::block_in_place(|| s.agent_with(&rig, &["sync"], &env)).expect(0);
    let args = [
        "iam-policy",
        "--account",
        "123456789012",
        "--region",
        &rig.region,
    ];
    let printed = tokio::task::block_in_place(|| s.agent_with(&rig, &args, &env));
    printed.expect(0);
    let policy: Value = serde_json::from_str(&printed.stdout).expect("iam-policy prints JSON");

    // parliament 1.6.4's data gives ecr:BatchImportUpstreamImage no resource type; AWS's Service
    // Authorization Reference (Amazon Elastic Container Registry) lists `repository*`: that one
    // finding is parliament's age, anything else is ours.
    let (status, findings) = parliament(&rig, &printed.stdout);
    let ours: Vec<&str> = findings
        .lines()
        .filter(|l| {
            !(l.contains("No resources match") && l.contains("'ecr:BatchImportUpstreamImage'"))
        })
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert!(
        ours.is_empty(),
        "parliament ({status}): {ours:?} on\n{}",
        printed.stdout
    );

    let world = World::pull_through_cache(&rig, &prefix);
    let mut calls: BTreeSet<Call> = recorder
        .requests()
        .iter()
        .flat_map(|r| world.calls(r))
        .collect();
    let pulls: Vec<Call> = docker
        .changes()
        .iter()
        .flat_map(|c| world.pulls(c))
        .collect();
    assert_eq!(pulls.len(), 4, "one pull, through the cache: {pulls:?}");
    calls.extend(pulls);
    sufficient_and_necessary(&policy, &calls);
    assert_eq!(
        sids(&policy),
        ["EcrToken", "EcrPull", "EcrPullThroughCache"]
    );
    let cached = format!(
        "arn:aws:ecr:{}:123456789012:repository/{prefix}/library/ktptc{n}",
        rig.region
    );
    for sid in ["EcrPull", "EcrPullThroughCache"] {
        let statement = policy["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .find(|st| st["Sid"] == sid)
            .unwrap();
        assert_eq!(statement["Resource"], json!([cached]), "{sid}");
    }
    let _ = Command::new("docker")
        .args([
            "rmi",
            "-f",
            &format!("{registry}/{prefix}/library/ktptc{n}:1"),
        ])
        .output();
}
