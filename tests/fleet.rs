//! From an empty account to a fleet: the Packer template validates offline (what Packer 1.6 can
//! check of it), the CloudFormation template lints clean (the instance refresh update policy
//! included) and, created as a stack in the rig's moto in any region, makes what the fleet needs
//! (read back: the launch template's metadata options and user data, the role's policy equal to
//! what `kicky-agent iam-policy` prints for the AMI's config with that user data plus the SSM
//! Agent's own needs and nothing that reads another parameter, the group, the stack's resync
//! document), moto's SSM accepts a wave (`send-command` with `--max-errors 0`), and a new AMI
//! makes a new launch template version. No container reaches the role unless the stack's
//! `ContainersUseInstanceRole` switch says so.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::iam_eval::{self, Call};
use common::imds::OwnImds;
use common::{Rig, Scratch};
use serde_json::Value;

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn output(cmd: &mut Command) -> (i32, String) {
    common::status_and_text(&cmd.output().expect("run"))
}

/// What Debian's Packer 1.6 (the one here; a current Packer cannot be installed offline, and its
/// `packer init` downloads the Amazon plugin) does not know, taken out of a copy of the template:
/// the `packer { required_plugins }` block, `metadata_options` and `imds_support`. Each is
/// checked on the template's text instead.
fn for_packer_1_6(template: &str) -> String {
    let mut out = Vec::new();
    let mut skipping: Option<&str> = None;
    for line in template.lines() {
        if let Some(end) = skipping {
            if line == end {
                skipping = None;
            }
            continue;
        }
        match line {
            "packer {" => skipping = Some("}"),
            "  metadata_options {" => skipping = Some("  }"),
            l if l.trim_start().starts_with("imds_support ") => {}
            l => out.push(l),
        }
    }
    out.join("\n") + "\n"
}

#[test]
fn the_packer_template_validates_offline() {
    let dir = tempfile::tempdir().unwrap();
    let deb = dir.path().join("kicky-agent.deb");
    std::fs::write(&deb, b"stand-in").unwrap();
    let template = repo("ami/kicky-agent.pkr.hcl");
    let text = std::fs::read_to_string(&template).unwrap();
    let (status, out) = output(
        Command::new("packer")
            .args(["fmt", "-check"])
            .arg(&template),
    );
    assert_eq!(status, 0, "packer fmt: {out}");

    // The builder's user data (the SSM Agent's install) is found beside the template.
    std::fs::copy(
        repo("ami/install-ssm-agent.sh"),
        dir.path().join("install-ssm-agent.sh"),
    )
    .unwrap();
    let validate = |text: &str| {
        let copy = dir.path().join("kicky-agent.pkr.hcl");
        std::fs::write(&copy, text).unwrap();
        output(
            Command::new("packer")
                .arg("validate")
                .arg("-var=region=eu-west-1")
                .arg(format!("-var=deb_path={}", deb.display()))
                .arg("-var=images=[\"111122223333.dkr.ecr.eu-west-1.amazonaws.com/orange:1\"]")
                .arg(&copy),
        )
    };
    let stripped = for_packer_1_6(&text);
    assert_eq!(validate(&stripped), (0, String::new()));

    // What Packer 1.6 cannot check, on the text: the Amazon plugin required; the builder with
    // IMDSv2 required and hop limit 1, the AMI IMDSv2-only; SSH through Session Manager only (no
    // inbound rule: no CIDR, no public address asked for); the SSM Agent from the verified
    // install, checked installed and enabled before anything else.
    for wanted in [
        "required_plugins {",
        "source  = \"github.com/hashicorp/amazon\"",
        "http_tokens                 = \"required\"",
        "http_put_response_hop_limit = 1",
        "imds_support    = \"v2.0\"",
        "ssh_interface    = \"session_manager\"",
        "user_data_file = \"${path.root}/install-ssm-agent.sh\"",
        "systemctl is-enabled amazon-ssm-agent.service",
    ] {
        assert!(text.contains(wanted), "the template lost `{wanted}`");
        if !wanted.starts_with("required_plugins") && !wanted.starts_with("source") {
            continue;
        }
        assert!(!stripped.contains(wanted), "not stripped: {wanted}");
    }
    for refused in [
        "temporary_security_group_source_cidrs",
        "temporary_security_group_source_public_ip",
        "associate_public_ip_address",
        "ssh_keypair_name",
        "ap-northeast-2",
        "123456789012",
    ] {
        assert!(!text.contains(refused), "the template has `{refused}`");
    }

    // It can fail: a misspelt argument is an error; so is a missing region (no default).
    let (status, out) =
        validate(&stripped.replace("instance_type        =", "instance_typo        ="));
    assert_ne!(status, 0, "{out}");
    assert!(out.contains("instance_typo"), "{out}");
    let copy = dir.path().join("kicky-agent.pkr.hcl");
    std::fs::write(&copy, &stripped).unwrap();
    let (status, out) = output(
        Command::new("packer")
            .arg("validate")
            .arg(format!("-var=deb_path={}", deb.display()))
            .arg(&copy),
    );
    assert_ne!(status, 0, "{out}");
    assert!(out.contains("region"), "{out}");
}

#[test]
fn the_cloudformation_template_lints_clean() {
    let rig = Rig::get();
    let lint = Path::new(&rig.python).with_file_name("cfn-lint");
    let template = repo("ami/cloudformation.yaml");
    assert_eq!(
        output(Command::new(&lint).arg(&template)),
        (0, String::new())
    );
    // It can fail: IMDSv2 spelt wrong is a finding.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    let text = std::fs::read_to_string(&template).unwrap();
    std::fs::write(
        &bad,
        text.replace("HttpTokens: required", "HttpTokens: require"),
    )
    .unwrap();
    let (status, text) = output(Command::new(&lint).arg(&bad));
    assert_ne!(status, 0, "{text}");
    assert!(text.contains("E3030"), "{text}");
    // Both lifecycle hooks are declared (moto's CloudFormation does not make them; see below).
    let template: serde_norway::Value =
        serde_norway::from_str(&std::fs::read_to_string(repo("ami/cloudformation.yaml")).unwrap())
            .unwrap();
    let hooks = &template["Resources"]["Group"]["Properties"]["LifecycleHookSpecificationList"];
    let transitions: Vec<&str> = hooks
        .as_sequence()
        .unwrap()
        .iter()
        .map(|h| h["LifecycleTransition"].as_str().unwrap())
        .collect();
    assert_eq!(
        transitions,
        [
            "autoscaling:EC2_INSTANCE_LAUNCHING",
            "autoscaling:EC2_INSTANCE_TERMINATING"
        ]
    );

    // An AMI rolls out by CloudFormation's instance refresh (moto ignores UpdatePolicy: read from
    // the file): launch before terminate, checkpoints ending at 100, the stack's alarms, and no
    // AutoScalingRollingUpdate beside it (CloudFormation refuses both).
    let update = &template["Resources"]["Group"]["UpdatePolicy"];
    let refresh = &update["AutoScalingInstanceRefresh"];
    assert_eq!(refresh["Strategy"].as_str(), Some("Rolling"));
    let preferences = &refresh["Preferences"];
    assert_eq!(preferences["MinHealthyPercentage"].as_u64(), Some(100));
    let checkpoints: Vec<u64> = preferences["CheckpointPercentages"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| p.as_u64().unwrap())
        .collect();
    assert_eq!(checkpoints.last(), Some(&100), "{checkpoints:?}");
    assert!(preferences.get("AlarmSpecification").is_some());
    assert!(update.get("AutoScalingRollingUpdate").is_none());
    // The document: one per stack, updated in place.
    let document = &template["Resources"]["ResyncDocument"]["Properties"];
    assert_eq!(document["UpdateMethod"].as_str(), Some("NewVersion"));
    // Nothing names a region, an account, a partition or a bucket: each comes from the stack.
    let text = std::fs::read_to_string(template_path()).unwrap();
    let yaml: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    for fixed in [
        "ap-northeast-2",
        "123456789012",
        "amzn-s3-demo-bucket",
        "orange-deploy",
        "arn:aws:",
        "kicky-agent-resync",
    ] {
        assert!(!yaml.contains(fixed), "the template names `{fixed}`");
    }
    // The checks can fail: AutoRollback is not a preference CloudFormation's policy takes (its
    // rollback is the stack's), and the policy next to AutoScalingRollingUpdate is refused.
    for (from, to, finding) in [
        (
            "          SkipMatching: true\n",
            "          SkipMatching: true\n          AutoRollback: true\n",
            "E3016",
        ),
        (
            "      AutoScalingInstanceRefresh:\n",
            "      AutoScalingRollingUpdate: {}\n      AutoScalingInstanceRefresh:\n",
            "E3016",
        ),
    ] {
        assert!(text.contains(from), "{from}");
        std::fs::write(&bad, text.replace(from, to)).unwrap();
        let (status, out) = output(Command::new(&lint).arg(&bad));
        assert_ne!(status, 0, "{out}");
        assert!(out.contains(finding), "{out}");
    }
}

fn template_path() -> PathBuf {
    repo("ami/cloudformation.yaml")
}

/// ami/cloudformation.yaml created as `stack` in the rig's moto (in `region`) with the stack
/// parameters `extra` (`KEY=VALUE`), and what it made, read back (the stack is deleted).
fn create_and_read_back(rig: &Rig, stack: &str, extra: &[&str]) -> Value {
    create_in(rig, &rig.region, stack, extra)
}

fn create_in(rig: &Rig, region: &str, stack: &str, extra: &[&str]) -> Value {
    let (status, text) = tokio::task::block_in_place(|| {
        output(
            Command::new(&rig.python)
                .arg(repo("tests/fixtures/cloudformation_readback.py"))
                .args([&rig.moto_url, region])
                .arg(repo("ami/cloudformation.yaml"))
                .arg(stack)
                .args(extra),
        )
    });
    assert_eq!(status, 0, "{text}");
    let got: Value = serde_json::from_str(text.lines().last().unwrap()).expect("readback JSON");
    assert_eq!(got["status"], "CREATE_COMPLETE", "{got}");
    got
}

/// Every `Allow` statement of `policies` (name -> document) that would let the role read a
/// parameter the config does not name: IAM's evaluator (`common::iam_eval`, which refuses
/// `NotAction`/`NotResource`) asked whether the statement alone allows a parameter read on another
/// team's parameter. Conditions are dropped first: one may hold for some other parameter.
fn parameter_reads_beyond_the_config(policies: &Value, region: &str) -> Vec<String> {
    const READS: &[&str] = &[
        "ssm:GetParameter",
        "ssm:GetParameters",
        "ssm:GetParametersByPath",
        "ssm:GetParameterHistory",
    ];
    let others = format!("arn:aws:ssm:{region}:123456789012:parameter/someone-else/db-password");
    let mut found = Vec::new();
    for (name, document) in policies.as_object().expect("policies by name") {
        let statements = match &document["Statement"] {
            Value::Array(many) => many.clone(),
            one => vec![one.clone()],
        };
        for mut statement in statements {
            if statement["Effect"] != "Allow" {
                continue;
            }
            statement.as_object_mut().unwrap().remove("Condition");
            let alone = serde_json::json!({ "Statement": [statement] });
            let reads: Vec<&str> = READS
                .iter()
                .copied()
                .filter(|read| iam_eval::allows(&alone, &Call::new(read, &others)))
                .collect();
            if !reads.is_empty() {
                let sid = statement["Sid"].as_str().unwrap_or("?");
                found.push(format!("{name}/{sid}: {reads:?} on {others}"));
            }
        }
    }
    found
}

/// The role holds two inline policies and no managed one (the template declares none, read from
/// the file since moto's CloudFormation does not attach them; and moto attached none): AWS's
/// managed policies for the SSM Agent (AmazonSSMManagedInstanceCore and the like) read every
/// parameter of the account. No inline statement reads a parameter the config does not name. The
/// checks can fail: AmazonSSMManagedInstanceCore's own statement is caught.
fn assert_no_parameter_read_beyond_the_config(got: &Value, region: &str) {
    let template: serde_norway::Value =
        serde_norway::from_str(&std::fs::read_to_string(repo("ami/cloudformation.yaml")).unwrap())
            .unwrap();
    let role = &template["Resources"]["Role"]["Properties"];
    assert!(
        role.get("Policies").is_some() && role.get("ManagedPolicyArns").is_none(),
        "the template's role declares managed policies: {:?}",
        role.get("ManagedPolicyArns")
    );
    assert_eq!(got["attached_policies"], serde_json::json!([]));
    let names: Vec<&String> = got["role_policies"].as_object().unwrap().keys().collect();
    assert_eq!(names, ["kicky-agent", "ssm-agent"]);
    assert_eq!(
        parameter_reads_beyond_the_config(&got["role_policies"], region),
        Vec::<String>::new()
    );
    // The checks can fail.
    let core = serde_json::json!({"AmazonSSMManagedInstanceCore": {"Statement": [{
        "Effect": "Allow",
        "Action": ["ssm:DescribeAssociation", "ssm:GetParameter", "ssm:GetParameters"],
        "Resource": "*"
    }]}});
    assert_eq!(parameter_reads_beyond_the_config(&core, region).len(), 1);
    let wildcard = serde_json::json!({"p": {"Statement": {
        "Effect": "Allow", "Action": "SSM:Get*",
        "Resource": "arn:aws:ssm:*:123456789012:parameter/*",
        "Condition": {"StringEquals": {"aws:ResourceTag/team": "orange"}}
    }}});
    assert_eq!(
        parameter_reads_beyond_the_config(&wildcard, region).len(),
        1
    );
}

/// The SSM Agent's own needs, as AWS documents them, and nothing else.
fn assert_ssm_agent_policy(got: &Value) {
    let document = &got["role_policies"]["ssm-agent"];
    let mut actions: Vec<&str> = document["Statement"]
        .as_array()
        .expect("the ssm-agent policy")
        .iter()
        .flat_map(|s| s["Action"].as_array().unwrap().iter())
        .filter_map(Value::as_str)
        .collect();
    actions.sort_unstable();
    assert_eq!(
        actions,
        [
            "ec2messages:AcknowledgeMessage",
            "ec2messages:DeleteMessage",
            "ec2messages:FailMessage",
            "ec2messages:GetEndpoint",
            "ec2messages:GetMessages",
            "ec2messages:SendReply",
            "ssm:UpdateInstanceInformation",
            "ssmmessages:CreateControlChannel",
            "ssmmessages:CreateDataChannel",
            "ssmmessages:OpenControlChannel",
            "ssmmessages:OpenDataChannel",
        ]
    );
}

/// The role's kicky-agent policy is what `iam-policy` prints for the AMI's config (the sample)
/// with the stack's user data over it, in the stack's region, account and group; the user data is
/// an override the agent takes (`validate`, with it served by an IMDS of the test's own).
async fn assert_policy_is_iam_policys(rig: &Rig, got: &Value, stack: &str, region: &str) {
    let s = Scratch::new();
    let sample = std::fs::read_to_string(repo("config/agent.yaml")).unwrap();
    s.config(rig, &sample);
    let user_data = got["user_data"].as_str().unwrap();
    assert!(user_data.starts_with("#kicky-agent\n"), "{user_data}");
    let fixture = s.path("imds-fixture");
    std::fs::create_dir_all(&fixture).unwrap();
    std::fs::write(fixture.join("user-data"), user_data).unwrap();
    std::fs::write(fixture.join("region"), region).unwrap();
    let imds = OwnImds::start(rig, &rig.moto_url, s.dir.path(), &fixture);
    let env = [("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.url.as_str())];
    let group = format!("{stack}-asg");
    let args = [
        "iam-policy",
        "--account",
        "123456789012",
        "--region",
        region,
        "--group",
        group.as_str(),
    ];
    let run = tokio::task::block_in_place(|| s.agent_with(rig, &args, &env));
    run.expect(0);
    let printed: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(
        got["role_policies"]["kicky-agent"], printed,
        "the template's policy is out of date: regenerate it (see its header)"
    );
    assert_no_parameter_read_beyond_the_config(got, region);
    assert_ssm_agent_policy(got);
    let run = tokio::task::block_in_place(|| s.agent_with(rig, &["validate"], &env));
    run.expect(0);
    for key in [
        "project: user data",
        "release: user data",
        "watch.apply: user data",
    ] {
        assert!(run.stdout.contains(key), "{key}: {}", run.stdout);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_stack_makes_what_the_fleet_needs() {
    let rig = Rig::get();
    let stack = format!("kt-fleet-{}", fastrand::u32(..) % 1_000_000);
    let got = create_and_read_back(&rig, &stack, &[]);
    // Hop limit 1: no container gets an IMDSv2 token, so none gets the role.
    assert_eq!(
        got["metadata_options"],
        serde_json::json!({"HttpTokens": "required", "HttpEndpoint": "enabled", "InstanceMetadataTags": "enabled", "HttpPutResponseHopLimit": 1})
    );
    assert!(got["instance_profile"]
        .as_str()
        .unwrap()
        .contains(":instance-profile/"));
    assert_eq!(
        got["trust"]["Statement"][0]["Principal"]["Service"],
        "ec2.amazonaws.com"
    );
    assert_policy_is_iam_policys(&rig, &got, &stack, &rig.region).await;

    // The user data: the application in this account and region, releases on, a promote only
    // reported (a release reaches running instances through the document's waves).
    let user_data = got["user_data"].as_str().unwrap();
    for line in [
        "project: orange",
        "  - name: /orange/prod/env",
        "  - source: s3://amzn-s3-demo-bucket/orange/prod/docker-compose.yml",
        &format!(
            "  - server: 123456789012.dkr.ecr.{}.amazonaws.com",
            rig.region
        ),
        "  store: s3://amzn-s3-demo-bucket/orange/prod/",
        "  apply: report",
    ] {
        assert!(
            user_data.lines().any(|l| l.trim() == line.trim()),
            "{line}: {user_data}"
        );
    }

    let group = format!("{stack}-asg");
    assert_eq!(got["group"]["name"], group.as_str());
    assert_eq!(got["group"]["tags"]["kicky:project"], "orange");
    assert_eq!(got["group"]["instances"].as_array().unwrap().len(), 1);
    // moto 5.2's CloudFormation ignores LifecycleHookSpecificationList (the template declares both
    // hooks: the lint test checks them); when it learns them, this says so.
    assert_eq!(got["hooks_read_back"], serde_json::json!([]));

    // The document is the stack's own.
    let document = format!("{stack}-resync");
    assert_eq!(got["document"]["name"], document.as_str());
    assert_eq!(got["document"]["type"], "Command");
    let content: Value =
        serde_json::from_str(got["document"]["content"].as_str().unwrap()).unwrap();
    assert_eq!(content["schemaVersion"], "2.2");
    assert_eq!(content["mainSteps"][0]["action"], "aws:runShellScript");
    assert_eq!(
        content["mainSteps"][0]["inputs"]["runCommand"][0],
        "kicky-agent resync --timeout {{ timeout }} --release '{{ release }}'"
    );
    // A wave as docs/operator-guide.md runs it: by the project's tag, 10% at a time, none may fail.
    let command = &got["command"];
    assert_eq!(command["DocumentName"], document.as_str());
    assert_eq!(
        command["Parameters"]["release"][0],
        "20261207T163000000Z-3f9a1c"
    );
    assert_eq!(
        (
            command["MaxConcurrency"].as_str(),
            command["MaxErrors"].as_str()
        ),
        (Some("10%"), Some("0"))
    );
    assert_eq!(command["Targets"][0]["Key"], "tag:kicky:project");

    // A new AMI: the stack update makes launch template version 2 with it; the document is left
    // as it was (same name, one version: its content did not change). moto 5.2 neither moves the
    // group to the new version nor runs the instance refresh that CloudFormation's
    // AutoScalingInstanceRefresh policy starts; when it does, this says so.
    let updated = &got["updated"];
    assert_eq!(updated["status"], "UPDATE_COMPLETE", "{updated}");
    assert_eq!(
        updated["launch_template_versions"],
        serde_json::json!([[1, "ami-12c6146b"], [2, "ami-0b5e4e2f9a1c7d3e8"]])
    );
    assert_eq!(updated["group_launch_template"]["Version"], "1");
    assert_eq!(updated["document"]["Name"], document.as_str());
    assert_eq!(updated["document"]["LatestVersion"], "1");
}

/// The same template in another region, for another project and stage, pulling from another
/// account's registry: every ARN, the user data and the document are that stack's, and nothing
/// of the first region or the defaults is left.
#[tokio::test(flavor = "multi_thread")]
async fn the_stack_works_in_any_region_and_for_any_project() {
    let rig = Rig::get();
    let region = "eu-west-1";
    assert_ne!(rig.region, region);
    let stack = format!("kt-fleet-lemon-{}", fastrand::u32(..) % 1_000_000);
    let got = create_in(
        &rig,
        region,
        &stack,
        &[
            "Project=lemon",
            "Stage=staging",
            "DeployBucket=lemon-deploy-example",
            "RegistryAccount=111122223333",
            "ReleasePin=20261207T163000123Z-3f9a1c",
        ],
    );
    assert_policy_is_iam_policys(&rig, &got, &stack, region).await;
    let user_data = got["user_data"].as_str().unwrap();
    for line in [
        "project: lemon",
        "  - name: /lemon/staging/env",
        "  - source: s3://lemon-deploy-example/lemon/staging/docker-compose.yml",
        "  - server: 111122223333.dkr.ecr.eu-west-1.amazonaws.com",
        "  store: s3://lemon-deploy-example/lemon/staging/",
        // The AMI path: the launch template pins the release its instances apply.
        "  pin: \"20261207T163000123Z-3f9a1c\"",
    ] {
        assert!(
            user_data.lines().any(|l| l.trim() == line.trim()),
            "{line}: {user_data}"
        );
    }
    let pull = &got["role_policies"]["kicky-agent"]["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["Sid"] == "EcrPull")
        .expect("EcrPull")["Resource"];
    assert_eq!(
        pull,
        &serde_json::json!(["arn:aws:ecr:eu-west-1:111122223333:repository/*"])
    );
    assert_eq!(got["group"]["tags"]["kicky:project"], "lemon");
    assert_eq!(got["document"]["name"], format!("{stack}-resync").as_str());
    let everything = got.to_string();
    for other in [&rig.region, "orange", "amzn-s3-demo-bucket"] {
        assert!(!everything.contains(other), "`{other}` in {everything}");
    }
}

/// `ContainersUseInstanceRole=true`, for a service that needs the role: hop limit 2, and nothing
/// else changes (the other metadata options, the role, the user data: each equal to what the
/// stack without the switch makes); the AMI's kicky-agent-imds-guard then keeps every container
/// but the kicky-imds network's off instance metadata (tests/packaging.rs).
#[tokio::test(flavor = "multi_thread")]
async fn the_switch_gives_containers_the_hop_and_nothing_else() {
    let rig = Rig::get();
    let stack = format!("kt-fleet-role-{}", fastrand::u32(..) % 1_000_000);
    let got = create_and_read_back(&rig, &stack, &["ContainersUseInstanceRole=true"]);
    assert_eq!(got["metadata_options"]["HttpPutResponseHopLimit"], 2);
    assert_eq!(got["metadata_options"]["HttpTokens"], "required");
    assert!(
        got["metadata_options"].get("HttpProtocolIpv6").is_none(),
        "the guard is IPv4's: the IPv6 endpoint stays off"
    );
    assert_ssm_agent_policy(&got);
    assert_no_parameter_read_beyond_the_config(&got, &rig.region);
    // Anything but "true" leaves the hop at 1 (CloudFormation refuses a value outside
    // AllowedValues; moto does not, so this shows the condition's own default).
    let typo_stack = format!("{stack}-typo");
    let typo = create_and_read_back(&rig, &typo_stack, &["ContainersUseInstanceRole=yes"]);
    assert_eq!(typo["metadata_options"]["HttpPutResponseHopLimit"], 1);

    // Everything else is the same, read back from both: the role's policies name the stack's own
    // group (`<stack>-asg`), so the typo stack's name is put back first.
    let same_stack = |v: &Value| -> Value {
        let text = v.to_string().replace(&typo_stack, &stack);
        serde_json::from_str(&text).unwrap()
    };
    let mut metadata = typo["metadata_options"].clone();
    metadata["HttpPutResponseHopLimit"] = 2.into();
    assert_eq!(got["metadata_options"], metadata);
    for what in ["role_policies", "attached_policies", "trust", "user_data"] {
        assert_eq!(got[what], same_stack(&typo[what]), "{what}");
    }
    // The comparison can fail: the policies name each stack's group.
    assert_ne!(got["role_policies"], typo["role_policies"]);
}
