//! The policy of each shape of config: which statements, with which actions and resources.

use super::*;
use serde_json::json;

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

fn none() -> Images {
    Images::Known(Vec::new())
}

fn images(refs: &[&str]) -> Images {
    Images::Known(refs.iter().map(|r| ImageRef::parse(r).unwrap()).collect())
}

/// The statement `sid` of `policy`.
fn statement<'a>(policy: &'a Value, sid: &str) -> &'a Value {
    policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["Sid"] == sid)
        .unwrap_or_else(|| panic!("no {sid} in {policy:#}"))
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
  - source: s3://amzn-s3-demo-bucket/docker-compose.yml
    path: docker-compose.yml
  - source: s3://amzn-s3-demo-bucket/promtail-config.yml
    path: promtail-config.yml
    version_id: 3sL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY
registries:
  - server: docker.io
    username: { parameter: /orange/dockerhub/username }
    password: { parameter: /orange/dockerhub/token }
  - server: 123456789012.dkr.ecr.ap-northeast-2.amazonaws.com
    ecr: true
watch:
  marker: s3://amzn-s3-demo-bucket/release.marker
";

const SEED_IMAGES: &[&str] = &[
    "123456789012.dkr.ecr.ap-northeast-2.amazonaws.com/orange/api:1.4",
    "123456789012.dkr.ecr.ap-northeast-2.amazonaws.com/orange/worker@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "grafana/promtail:2.9",
];

#[test]
fn the_seed_config_gets_exact_arns_and_one_statement_per_job() {
    let policy = policy(&settings(SEED), &place(), &images(SEED_IMAGES)).unwrap();
    let p = "arn:aws:ssm:ap-northeast-2:123456789012:parameter";
    let group = "arn:aws:autoscaling:ap-northeast-2:123456789012:autoScalingGroup:*:autoScalingGroupName/orange-asg";
    let ecr = "arn:aws:ecr:ap-northeast-2:123456789012:repository";
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
            "DecryptParameters",
            vec!["kms:Decrypt"],
            vec!["arn:aws:kms:ap-northeast-2:123456789012:key/*".into()],
        ),
        (
            "ReadFiles",
            vec!["s3:GetObject"],
            vec![
                "arn:aws:s3:::amzn-s3-demo-bucket/docker-compose.yml".into(),
                "arn:aws:s3:::amzn-s3-demo-bucket/promtail-config.yml".into(),
            ],
        ),
        (
            "ReadPinnedFileVersions",
            vec!["s3:GetObjectVersion"],
            vec!["arn:aws:s3:::amzn-s3-demo-bucket/promtail-config.yml".into()],
        ),
        (
            "WatchReleaseMarker",
            vec!["s3:GetObject"],
            vec!["arn:aws:s3:::amzn-s3-demo-bucket/release.marker".into()],
        ),
        (
            "EcrToken",
            vec!["ecr:GetAuthorizationToken"],
            vec!["*".into()],
        ),
        (
            "EcrPull",
            vec!["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
            vec![format!("{ecr}/orange/api"), format!("{ecr}/orange/worker")],
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
    // Only the configured parameters may be decrypted, and only through SSM; what is under a
    // path is a wildcard, so the key is compared with StringLike.
    assert_eq!(
        statement(&policy, "DecryptParameters")["Condition"],
        json!({
            "StringEquals": { "kms:ViaService": ["ssm.ap-northeast-2.amazonaws.com"] },
            "StringLike": { "kms:EncryptionContext:PARAMETER_ARN": [
                format!("{p}/orange/dockerhub/token"),
                format!("{p}/orange/dockerhub/username"),
                format!("{p}/orange/prod/SERVER_SECRET"),
                format!("{p}/orange/prod/env"),
                format!("{p}/orange/prod/vars/*"),
            ]},
        })
    );
    // Objects only in buckets of the instance's account.
    for sid in ["ReadFiles", "ReadPinnedFileVersions", "WatchReleaseMarker"] {
        assert_eq!(
            statement(&policy, sid)["Condition"],
            json!({ "StringEquals": { "s3:ResourceAccount": ["123456789012"] } }),
            "{sid}"
        );
    }
    // No condition anywhere compares a wildcard literally.
    for s in policy["Statement"].as_array().unwrap() {
        let equals = s["Condition"]["StringEquals"].to_string();
        assert!(!equals.contains(['*', '?']), "{s}");
    }
}

#[test]
fn each_statement_is_there_only_when_the_config_needs_it() {
    let sids = |yaml: &str| -> Vec<String> {
        statements(&policy(&settings(yaml), &place(), &none()).unwrap())
            .into_iter()
            .map(|s| s.0)
            .collect()
    };
    let base = "project: p\nworkdir: /srv/p\nlifecycle:\n  hook: off\n";
    let table: &[(&str, &[&str])] = &[
        ("", &[]),
        (
            "env:\n  parameters:\n    - name: /a/B\nwatch:\n  interval: 0\n",
            &["ReadParameters", "DecryptParameters"],
        ),
        (
            "env:\n  parameters:\n    - secret: app/prod\n",
            &["ReadSecrets", "BatchReadSecrets", "DecryptSecrets"],
        ),
        (
            "env:\n  parameters:\n    - secret: app/prod\n      version_stage: AWSPREVIOUS\n",
            &["ReadSecrets", "DecryptSecrets"],
        ),
        (
            "files:\n  - source: s3://bucket/k\n    path: k\n",
            &["ReadFiles"],
        ),
        // A marker is looked at only by a watching daemon.
        (
            "watch:\n  interval: 0\n  marker: s3://bucket/m\n",
            &[],
        ),
        ("watch:\n  marker: s3://bucket/m\n", &["WatchReleaseMarker"]),
        // An ECR registry none of the images comes from needs nothing.
        (
            "registries:\n  - server: 123456789012.dkr.ecr.ap-northeast-2.amazonaws.com\n    ecr: true\n",
            &[],
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
    let policy = policy(&settings(yaml), &place(), &none()).unwrap();
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
    let arns = [
        "arn:aws:secretsmanager:ap-northeast-2:123456789012:secret:app/prod-??????",
        "arn:aws:secretsmanager:ap-northeast-2:1:secret:x-AbCdEf",
    ];
    assert_eq!(read.2, arns);
    assert_eq!(
        statement(&policy, "DecryptSecrets")["Condition"],
        json!({
            "StringEquals": { "kms:ViaService": ["secretsmanager.ap-northeast-2.amazonaws.com"] },
            "StringLike": { "kms:EncryptionContext:SecretARN": arns },
        })
    );
}

#[test]
fn exact_values_are_compared_with_string_equals() {
    let yaml = "project: p\nworkdir: /srv/p\nlifecycle:\n  hook: off\nwatch:\n  interval: 0\n\
                env:\n  parameters:\n    - name: /a/B\n";
    let policy = policy(&settings(yaml), &place(), &none()).unwrap();
    assert_eq!(
        statement(&policy, "DecryptParameters")["Condition"],
        json!({ "StringEquals": {
            "kms:ViaService": ["ssm.ap-northeast-2.amazonaws.com"],
            "kms:EncryptionContext:PARAMETER_ARN": ["arn:aws:ssm:ap-northeast-2:123456789012:parameter/a/B"],
        }})
    );
}

#[test]
fn the_root_path_is_every_parameter_of_the_account() {
    let yaml = "project: p\nworkdir: /srv/p\nlifecycle:\n  hook: off\nwatch:\n  interval: 0\n\
                env:\n  parameters:\n    - path: /\n";
    let policy = policy(&settings(yaml), &place(), &none()).unwrap();
    let p = "arn:aws:ssm:ap-northeast-2:123456789012:parameter/";
    assert_eq!(
        statement(&policy, "ReadParameterPaths")["Resource"],
        json!([p, format!("{p}*")])
    );
    assert_eq!(
        statement(&policy, "DecryptParameters")["Condition"]["StringLike"]
            ["kms:EncryptionContext:PARAMETER_ARN"],
        json!([format!("{p}*")])
    );
    assert_eq!(
        path_arns(&place(), "/a/b/"),
        (format!("{p}a/b"), format!("{p}a/b/*"))
    );
}

#[test]
fn buckets_of_other_accounts_are_named_by_their_owner() {
    let yaml = "project: p\nworkdir: /srv/p\nlifecycle:\n  hook: off\nfiles:\n\
                \x20 - source: s3://mine/a\n    path: a\n\
                \x20 - source: s3://theirs/b\n    path: b\n    expected_owner: \"111122223333\"\n\
                watch:\n  marker: s3://releases/m\n  marker_expected_owner: \"444455556666\"\n";
    let policy = policy(&settings(yaml), &place(), &none()).unwrap();
    assert_eq!(
        statement(&policy, "ReadFiles")["Condition"],
        json!({ "StringEquals": { "s3:ResourceAccount": ["111122223333", "123456789012"] } })
    );
    assert_eq!(
        statement(&policy, "WatchReleaseMarker")["Condition"],
        json!({ "StringEquals": { "s3:ResourceAccount": ["444455556666"] } })
    );
    // An unknown account is a wildcard, so StringLike.
    let anywhere = Place::new(Some("ap-northeast-2"), None, None);
    let policy = super::policy(&settings(yaml), &anywhere, &none()).unwrap();
    assert_eq!(
        statement(&policy, "ReadFiles")["Condition"],
        json!({ "StringLike": { "s3:ResourceAccount": ["*", "111122223333"] } })
    );
}

#[test]
fn ecr_repositories_are_those_of_the_images_pulled_from_it() {
    let yaml = "project: p\nworkdir: /srv/p\nlifecycle:\n  hook: off\nregistries:\n\
                \x20 - server: 111122223333.dkr.ecr.eu-west-1.amazonaws.com\n    ecr: true\n\
                \x20 - server: 127.0.0.1:5000\n    ecr: true\n";
    let s = settings(yaml);
    let pulled = images(&[
        "111122223333.dkr.ecr.eu-west-1.amazonaws.com/team/api:3",
        "127.0.0.1:5000/tester/web:2",
        "docker.io/library/nginx:1",
        "444455556666.dkr.ecr.eu-west-1.amazonaws.com/not/configured:1",
    ]);
    let policy = policy(&s, &place(), &pulled).unwrap();
    let pull = statement(&policy, "EcrPull");
    assert_eq!(
        pull["Action"],
        json!(["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"])
    );
    // The ECR host's own account and region; another host stands in for the instance's.
    assert_eq!(
        pull["Resource"],
        json!([
            "arn:aws:ecr:ap-northeast-2:123456789012:repository/tester/web",
            "arn:aws:ecr:eu-west-1:111122223333:repository/team/api",
        ])
    );
    // Without a compose file to read: every repository of each ECR registry.
    let policy = super::policy(&s, &place(), &Images::Unknown).unwrap();
    assert_eq!(
        statement(&policy, "EcrPull")["Resource"],
        json!([
            "arn:aws:ecr:ap-northeast-2:123456789012:repository/*",
            "arn:aws:ecr:eu-west-1:111122223333:repository/*",
        ])
    );
    assert_eq!(
        ecr_host("111122223333.dkr.ecr-fips.us-gov-west-1.amazonaws.com"),
        Some(("111122223333", "us-gov-west-1"))
    );
    assert_eq!(ecr_host("registry.example.com"), None);
}

#[test]
fn an_unknown_group_is_an_error_unless_any_group_is_asked_for() {
    let yaml = "project: p\nworkdir: /srv/p\nlifecycle:\n  hook: auto\n";
    let s = settings(yaml);
    let unknown = Place::new(Some("ap-northeast-2"), Some("123456789012"), None);
    let err = policy(&s, &unknown, &none()).unwrap_err();
    assert_eq!(
        crate::error::exit_status(&err),
        crate::error::EXIT_BAD_INPUT
    );
    assert!(format!("{err:#}").contains("--group '*'"), "{err:#}");
    let any = Place::new(Some("ap-northeast-2"), Some("123456789012"), Some("*"));
    let policy = policy(&s, &any, &none()).unwrap();
    assert_eq!(
        statement(&policy, "CompleteLifecycleAction")["Resource"],
        json!(["arn:aws:autoscaling:ap-northeast-2:123456789012:autoScalingGroup:*:autoScalingGroupName/*"])
    );
    // With the hook off, no group is needed.
    let off = settings("project: p\nworkdir: /srv/p\nlifecycle:\n  hook: off\n");
    assert!(super::policy(&off, &unknown, &none()).is_ok());
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

/// With a release: exactly the calls of an instance that reads every input at the version the
/// release pins, and watches only the store.
#[test]
fn a_release_reads_everything_by_version_and_the_watch_only_the_store() {
    let yaml = "\
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
    - secret: prod/orange/db
    - secret: prod/orange/old
      version_stage: AWSPREVIOUS
      format: value
      key: OLD
files:
  - source: s3://amzn-s3-demo-bucket/docker-compose.yml
    path: docker-compose.yml
  - source: s3://other-bucket/promtail-config.yml
    path: promtail-config.yml
    expected_owner: \"111122223333\"
registries:
  - server: docker.io
    username: { parameter: /orange/dockerhub/username }
    password: { parameter: /orange/dockerhub/token }
release:
  store: s3://releases-bucket/orange/
lifecycle:
  hook: off
";
    let policy = policy(&settings(yaml), &place(), &none()).unwrap();
    let arn = |r: &str| format!("arn:aws:ssm:ap-northeast-2:123456789012:parameter/{r}");
    let secret =
        |id: &str| format!("arn:aws:secretsmanager:ap-northeast-2:123456789012:secret:{id}-??????");
    assert_eq!(
        statements(&policy),
        [
            (
                "ReadParameters".to_string(),
                vec!["ssm:GetParameters".to_string()],
                vec![
                    arn("orange/dockerhub/token"),
                    arn("orange/dockerhub/username"),
                    arn("orange/prod/env"),
                    arn("orange/prod/vars/*"),
                ]
            ),
            (
                "DecryptParameters".to_string(),
                vec!["kms:Decrypt".to_string()],
                vec!["arn:aws:kms:ap-northeast-2:123456789012:key/*".to_string()]
            ),
            (
                "ReadSecrets".to_string(),
                vec!["secretsmanager:GetSecretValue".to_string()],
                vec![secret("prod/orange/db"), secret("prod/orange/old")]
            ),
            (
                "DecryptSecrets".to_string(),
                vec!["kms:Decrypt".to_string()],
                vec!["arn:aws:kms:ap-northeast-2:123456789012:key/*".to_string()]
            ),
            (
                "ReadPinnedFileVersions".to_string(),
                vec!["s3:GetObjectVersion".to_string()],
                vec![
                    "arn:aws:s3:::amzn-s3-demo-bucket/docker-compose.yml".to_string(),
                    "arn:aws:s3:::other-bucket/promtail-config.yml".to_string(),
                ]
            ),
            (
                "ReadReleases".to_string(),
                vec!["s3:GetObject".to_string()],
                vec![
                    "arn:aws:s3:::releases-bucket/orange/promoted.json".to_string(),
                    "arn:aws:s3:::releases-bucket/orange/releases/*".to_string(),
                ]
            ),
            (
                "ReportToFleet".to_string(),
                vec!["s3:PutObject".to_string()],
                vec!["arn:aws:s3:::releases-bucket/orange/fleet/${aws:userid}.json".to_string()]
            ),
        ]
    );
    let decrypted = &statement(&policy, "DecryptParameters")["Condition"]["StringLike"]
        ["kms:EncryptionContext:PARAMETER_ARN"];
    assert_eq!(
        *decrypted,
        json!([
            arn("orange/dockerhub/token"),
            arn("orange/dockerhub/username"),
            arn("orange/prod/env"),
            arn("orange/prod/vars/*"),
        ])
    );
    assert_eq!(
        statement(&policy, "ReadPinnedFileVersions")["Condition"],
        json!({"StringEquals": {"s3:ResourceAccount": ["111122223333", "123456789012"]}})
    );
    assert_eq!(
        statement(&policy, "ReadReleases")["Condition"],
        json!({"StringEquals": {"s3:ResourceAccount": ["123456789012"]}})
    );
    // The store's owner, when named, is the condition.
    let owned = yaml.replace(
        "  store: s3://releases-bucket/orange/\n",
        "  store: s3://releases-bucket/orange/\n  expected_owner: \"444455556666\"\n",
    );
    let policy = super::policy(&settings(&owned), &place(), &none()).unwrap();
    assert_eq!(
        statement(&policy, "ReadReleases")["Condition"],
        json!({"StringEquals": {"s3:ResourceAccount": ["444455556666"]}})
    );
    assert_eq!(
        statement(&policy, "ReportToFleet")["Condition"],
        json!({"StringEquals": {"s3:ResourceAccount": ["444455556666"]}})
    );
}

#[test]
fn a_pull_through_cache_may_import_and_create_only_under_its_prefix() {
    let yaml = "project: p\nworkdir: /srv/p\nlifecycle:\n  hook: off\nregistries:\n\
                \x20 - server: 111122223333.dkr.ecr.eu-west-1.amazonaws.com\n    ecr: true\n\
                \x20   mirror_of: docker.io\n    prefix: docker-hub\n";
    let s = settings(yaml);
    let ecr = "arn:aws:ecr:eu-west-1:111122223333:repository";
    // As `iam-policy` reads the compose file: each image through its mirror.
    let mirrors = crate::compose::mirror::Mirrors::of(&s.registries);
    let written = [
        "nginx:1.27",
        "grafana/promtail:2.9",
        "111122223333.dkr.ecr.eu-west-1.amazonaws.com/orange/api:3",
    ];
    let routed: Vec<String> = written
        .iter()
        .map(|w| mirrors.route(w).unwrap_or_else(|| w.to_string()))
        .collect();
    let pulled = images(&routed.iter().map(String::as_str).collect::<Vec<_>>());
    let policy = policy(&s, &place(), &pulled).unwrap();
    assert_eq!(
        statement(&policy, "EcrPull")["Resource"],
        json!([
            format!("{ecr}/docker-hub/grafana/promtail"),
            format!("{ecr}/docker-hub/library/nginx"),
            format!("{ecr}/orange/api"),
        ])
    );
    let cache = statement(&policy, "EcrPullThroughCache");
    assert_eq!(
        cache["Action"],
        json!(["ecr:BatchImportUpstreamImage", "ecr:CreateRepository"])
    );
    // The registry's own repositories are not the cache's.
    assert_eq!(
        cache["Resource"],
        json!([
            format!("{ecr}/docker-hub/grafana/promtail"),
            format!("{ecr}/docker-hub/library/nginx"),
        ])
    );
    // Without a compose file: everything under the prefix.
    let policy = super::policy(&s, &place(), &Images::Unknown).unwrap();
    assert_eq!(
        statement(&policy, "EcrPullThroughCache")["Resource"],
        json!([format!("{ecr}/docker-hub/*")])
    );
    // No mirror, or a mirror with its own credentials (not ECR): no such statement.
    for yaml in [
        "project: p\nworkdir: /srv/p\nlifecycle:\n  hook: off\nregistries:\n  - server: 111122223333.dkr.ecr.eu-west-1.amazonaws.com\n    ecr: true\n",
        "project: p\nworkdir: /srv/p\nlifecycle:\n  hook: off\nregistries:\n  - server: mirror.example.com\n    mirror_of: docker.io\n",
    ] {
        let policy = super::policy(&settings(yaml), &place(), &Images::Unknown).unwrap();
        assert!(
            policy["Statement"]
                .as_array()
                .unwrap()
                .iter()
                .all(|s| s["Sid"] != "EcrPullThroughCache"),
            "{policy}"
        );
    }
}
