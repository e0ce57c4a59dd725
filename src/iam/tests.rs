//! The policy of each shape of config: which statements, with which actions and resources.

use super::*;

fn settings(yaml: &str) -> Settings {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.yaml");
    std::fs::write(&path, yaml).unwrap();
    crate::config::load(&path).unwrap()
}

fn place() -> Place {
    Place::new(
        Some("ap-northeast-2"),
        Some("123456789012"),
        Some("orange-asg"),
    )
}

/// Statement id → (actions, resources).
fn statements(policy: &Value) -> Vec<(String, Vec<String>, Vec<String>)> {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            assert_eq!(s["Effect"], "Allow");
            (
                s["Sid"].as_str().unwrap().to_string(),
                strings(&s["Action"]),
                strings(&s["Resource"]),
            )
        })
        .collect()
}

const SEED: &str = "\
project: orange
workdir: /srv/orange
aws:
  region: ap-northeast-2
env:
  parameters:
    - name: /orange/prod/env
      format: dotenv
    - path: /orange/prod/vars/
      recursive: true
    - name: /orange/prod/SERVER_SECRET
      key: SERVER_SECRET
files:
  - source: s3://orange-deploy/docker-compose.yml
    path: docker-compose.yml
  - source: s3://orange-deploy/promtail-config.yml
    path: promtail-config.yml
    version_id: 3sL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY
registries:
  - server: docker.io
    username: { parameter: /orange/dockerhub/username }
    password: { parameter: /orange/dockerhub/token }
  - server: 123456789012.dkr.ecr.ap-northeast-2.amazonaws.com
    ecr: true
";

#[test]
fn the_seed_config_gets_exact_arns_and_one_statement_per_job() {
    let policy = policy(&settings(SEED), &place());
    let p = "arn:aws:ssm:ap-northeast-2:123456789012:parameter";
    let group = "arn:aws:autoscaling:ap-northeast-2:123456789012:autoScalingGroup:*:autoScalingGroupName/orange-asg";
    let expect: Vec<(&str, Vec<&str>, Vec<String>)> = vec![
        (
            "ReadParameters",
            vec!["ssm:GetParameters"],
            vec![
                format!("{p}/orange/dockerhub/token"),
                format!("{p}/orange/dockerhub/username"),
                format!("{p}/orange/prod/SERVER_SECRET"),
                format!("{p}/orange/prod/env"),
            ],
        ),
        (
            "ReadParameterPaths",
            vec!["ssm:GetParametersByPath"],
            vec![
                format!("{p}/orange/prod/vars"),
                format!("{p}/orange/prod/vars/*"),
            ],
        ),
        (
            "WatchParameterVersions",
            vec!["ssm:DescribeParameters"],
            vec!["*".into()],
        ),
        (
            "DecryptViaServices",
            vec!["kms:Decrypt"],
            vec!["arn:aws:kms:ap-northeast-2:123456789012:key/*".into()],
        ),
        (
            "ReadFiles",
            vec!["s3:GetObject"],
            vec![
                "arn:aws:s3:::orange-deploy/docker-compose.yml".into(),
                "arn:aws:s3:::orange-deploy/promtail-config.yml".into(),
            ],
        ),
        (
            "ReadPinnedFileVersions",
            vec!["s3:GetObjectVersion"],
            vec!["arn:aws:s3:::orange-deploy/promtail-config.yml".into()],
        ),
        (
            "EcrToken",
            vec!["ecr:GetAuthorizationToken"],
            vec!["*".into()],
        ),
        (
            "EcrPull",
            vec![
                "ecr:BatchCheckLayerAvailability",
                "ecr:BatchGetImage",
                "ecr:GetDownloadUrlForLayer",
            ],
            vec!["arn:aws:ecr:ap-northeast-2:123456789012:repository/*".into()],
        ),
        (
            "FindLifecycleHook",
            vec![
                "autoscaling:DescribeAutoScalingInstances",
                "autoscaling:DescribeLifecycleHooks",
            ],
            vec!["*".into()],
        ),
        (
            "CompleteLifecycleAction",
            vec![
                "autoscaling:CompleteLifecycleAction",
                "autoscaling:RecordLifecycleActionHeartbeat",
            ],
            vec![group.into()],
        ),
    ];
    let got = statements(&policy);
    let got: Vec<(&str, Vec<&str>, Vec<String>)> = got
        .iter()
        .map(|(sid, a, r)| {
            (
                sid.as_str(),
                a.iter().map(String::as_str).collect(),
                r.clone(),
            )
        })
        .collect();
    assert_eq!(got, expect);
    // Only what the agent asks SSM for may be decrypted, and only through SSM.
    let decrypt = &policy["Statement"][3];
    assert_eq!(
        decrypt["Condition"]["StringEquals"]["kms:ViaService"],
        json!(["ssm.ap-northeast-2.amazonaws.com"])
    );
}

#[test]
fn each_statement_is_there_only_when_the_config_needs_it() {
    let sids = |yaml: &str| -> Vec<String> {
        statements(&policy(&settings(yaml), &place()))
            .into_iter()
            .map(|s| s.0)
            .collect()
    };
    let base = "project: p\nworkdir: /srv/p\nlifecycle:\n  hook: off\n";
    let table: &[(&str, &[&str])] = &[
        ("", &[]),
        (
            "env:\n  parameters:\n    - name: /a/B\nwatch:\n  interval: 0\n",
            &["ReadParameters", "DecryptViaServices"],
        ),
        (
            "env:\n  parameters:\n    - secret: app/prod\n",
            &["ReadSecrets", "BatchReadSecrets", "DecryptViaServices"],
        ),
        (
            "env:\n  parameters:\n    - secret: app/prod\n      version_stage: AWSPREVIOUS\n",
            &["ReadSecrets", "DecryptViaServices"],
        ),
        (
            "files:\n  - source: s3://bucket/k\n    path: k\n",
            &["ReadFiles"],
        ),
    ];
    for (extra, expect) in table {
        assert_eq!(sids(&format!("{base}{extra}")), *expect, "{extra}");
    }
    let hooked = "project: p\nworkdir: /srv/p\nlifecycle:\n  hook: launch\n  unhealthy_after: 5m\n";
    assert_eq!(
        sids(hooked),
        [
            "FindLifecycleHook",
            "CompleteLifecycleAction",
            "ReportInstanceHealth"
        ]
    );
}

#[test]
fn secrets_by_name_match_their_random_suffix_and_arns_are_kept() {
    let yaml = "project: p\nworkdir: /srv/p\nlifecycle:\n  hook: off\nenv:\n  parameters:\n\
                \x20   - secret: app/prod\n    - secret: arn:aws:secretsmanager:ap-northeast-2:1:secret:x-AbCdEf\n";
    let policy = policy(&settings(yaml), &place());
    let read = statements(&policy)
        .into_iter()
        .find(|s| s.0 == "ReadSecrets")
        .unwrap();
    assert_eq!(
        read.1,
        [
            "secretsmanager:GetSecretValue",
            "secretsmanager:DescribeSecret"
        ]
    );
    assert_eq!(
        read.2,
        [
            "arn:aws:secretsmanager:ap-northeast-2:123456789012:secret:app/prod-??????",
            "arn:aws:secretsmanager:ap-northeast-2:1:secret:x-AbCdEf",
        ]
    );
    let decrypt = &policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["Sid"] == "DecryptViaServices")
        .unwrap()
        .clone();
    assert_eq!(
        decrypt["Condition"]["StringEquals"]["kms:ViaService"],
        json!(["secretsmanager.ap-northeast-2.amazonaws.com"])
    );
}

#[test]
fn the_partition_follows_the_region_and_unknowns_are_wildcards() {
    assert_eq!(
        Place::new(Some("cn-north-1"), None, None).partition,
        "aws-cn"
    );
    assert_eq!(
        Place::new(Some("us-gov-west-1"), None, None).partition,
        "aws-us-gov"
    );
    let unknown = Place::new(None, None, None);
    assert_eq!(
        parameter_arn(&unknown, "/a/b"),
        "arn:aws:ssm:*:*:parameter/a/b"
    );
    assert_eq!(
        parameter_arn(&place(), "plain"),
        "arn:aws:ssm:ap-northeast-2:123456789012:parameter/plain"
    );
}
