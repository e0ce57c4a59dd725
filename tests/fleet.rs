//! From a clone to a fleet: the Packer template validates offline, the CloudFormation template
//! lints clean and, created as a stack in the rig's moto, makes what the fleet needs (read back:
//! the launch template's metadata options and user data, the role's policy equal to what
//! `kicky-agent iam-policy` prints plus the SSM Agent's own needs and nothing that reads another
//! parameter, the group, the resync document), and moto's SSM accepts the fleet rollout
//! (`send-command` with rate control). No container reaches the role unless the stack's
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

#[test]
fn the_packer_template_validates_offline() {
    let dir = tempfile::tempdir().unwrap();
    let deb = dir.path().join("kicky-agent.deb");
    std::fs::write(&deb, b"stand-in").unwrap();
    let validate = |template: &Path| {
        output(
            Command::new("packer")
                .arg("validate")
                .arg(format!("-var=deb_path={}", deb.display()))
                .arg("-var=images=[\"123456789012.dkr.ecr.ap-northeast-2.amazonaws.com/orange:1\"]")
                .arg(template),
        )
    };
    let template = repo("ami/kicky-agent.pkr.hcl");
    assert_eq!(validate(&template), (0, String::new()));
    let (status, text) = output(
        Command::new("packer")
            .args(["fmt", "-check"])
            .arg(&template),
    );
    assert_eq!(status, 0, "packer fmt: {text}");
    // It can fail: a misspelt argument is an error.
    let bad = dir.path().join("bad.pkr.hcl");
    let text = std::fs::read_to_string(&template).unwrap();
    std::fs::write(
        &bad,
        text.replace("instance_type        =", "instance_typo        ="),
    )
    .unwrap();
    let (status, text) = validate(&bad);
    assert_ne!(status, 0, "{text}");
    assert!(text.contains("instance_typo"), "{text}");
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
}

/// One stack at a time: each makes the SSM document `kicky-agent-resync`, whose name is fixed.
static ONE_STACK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// ami/cloudformation.yaml created as `stack` in the rig's moto with the stack parameters
/// `extra` (`KEY=VALUE`), and what it made, read back (the stack is deleted).
fn create_and_read_back(rig: &Rig, stack: &str, extra: &[&str]) -> Value {
    let _one = ONE_STACK.lock().unwrap_or_else(|e| e.into_inner());
    let (status, text) = tokio::task::block_in_place(|| {
        output(
            Command::new(&rig.python)
                .arg(repo("tests/fixtures/cloudformation_readback.py"))
                .args([&rig.moto_url, &rig.region])
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
fn parameter_reads_beyond_the_config(policies: &Value) -> Vec<String> {
    const READS: &[&str] = &[
        "ssm:GetParameter",
        "ssm:GetParameters",
        "ssm:GetParametersByPath",
        "ssm:GetParameterHistory",
    ];
    const OTHERS: &str =
        "arn:aws:ssm:ap-northeast-2:123456789012:parameter/someone-else/db-password";
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
                .filter(|read| iam_eval::allows(&alone, &Call::new(read, OTHERS)))
                .collect();
            if !reads.is_empty() {
                let sid = statement["Sid"].as_str().unwrap_or("?");
                found.push(format!("{name}/{sid}: {reads:?} on {OTHERS}"));
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
fn assert_no_parameter_read_beyond_the_config(got: &Value) {
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
        parameter_reads_beyond_the_config(&got["role_policies"]),
        Vec::<String>::new()
    );
    // The checks can fail.
    let core = serde_json::json!({"AmazonSSMManagedInstanceCore": {"Statement": [{
        "Effect": "Allow",
        "Action": ["ssm:DescribeAssociation", "ssm:GetParameter", "ssm:GetParameters"],
        "Resource": "*"
    }]}});
    assert_eq!(parameter_reads_beyond_the_config(&core).len(), 1);
    let wildcard = serde_json::json!({"p": {"Statement": {
        "Effect": "Allow", "Action": "SSM:Get*",
        "Resource": "arn:aws:ssm:*:123456789012:parameter/*",
        "Condition": {"StringEquals": {"aws:ResourceTag/team": "orange"}}
    }}});
    assert_eq!(parameter_reads_beyond_the_config(&wildcard).len(), 1);
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

    // The role's policy is the one `iam-policy` prints for the AMI's config and this group.
    let s = Scratch::new();
    let sample = std::fs::read_to_string(repo("config/agent.yaml")).unwrap();
    s.config(&rig, &sample);
    let group = format!("{stack}-asg");
    let no_imds = [("AWS_EC2_METADATA_DISABLED", "true")];
    let args = [
        "iam-policy",
        "--account",
        "123456789012",
        "--group",
        group.as_str(),
    ];
    let run = tokio::task::block_in_place(|| s.agent_with(&rig, &args, &no_imds));
    run.expect(0);
    let printed: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_no_parameter_read_beyond_the_config(&got);
    assert_eq!(
        got["role_policies"]["kicky-agent"], printed,
        "the template's policy is out of date: regenerate it (see its header)"
    );
    assert_ssm_agent_policy(&got);

    // The user data is a #kicky-agent override the AMI's config takes.
    let user_data = got["user_data"].as_str().unwrap();
    assert!(user_data.starts_with("#kicky-agent\n"), "{user_data}");
    let fixture = s.path("imds-fixture");
    std::fs::create_dir_all(&fixture).unwrap();
    std::fs::write(fixture.join("user-data"), user_data).unwrap();
    let imds = OwnImds::start(&rig, &rig.moto_url, s.dir.path(), &fixture);
    let env = [("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.url.as_str())];
    let run = tokio::task::block_in_place(|| s.agent_with(&rig, &["validate"], &env));
    run.expect(0);
    assert!(
        run.stdout.contains("watch.interval: user data"),
        "{}",
        run.stdout
    );

    assert_eq!(got["group"]["name"], group.as_str());
    assert_eq!(got["group"]["tags"]["kicky:project"], "orange");
    assert_eq!(got["group"]["instances"].as_array().unwrap().len(), 1);
    // moto 5.2's CloudFormation ignores LifecycleHookSpecificationList (the template declares both
    // hooks: the lint test checks them); when it learns them, this says so.
    assert_eq!(got["hooks_read_back"], serde_json::json!([]));

    assert_eq!(got["document"]["type"], "Command");
    let content: Value =
        serde_json::from_str(got["document"]["content"].as_str().unwrap()).unwrap();
    assert_eq!(content["schemaVersion"], "2.2");
    assert_eq!(content["mainSteps"][0]["action"], "aws:runShellScript");
    assert_eq!(
        content["mainSteps"][0]["inputs"]["runCommand"][0],
        "kicky-agent resync --timeout {{ timeout }} --release '{{ release }}'"
    );
    let command = &got["command"];
    assert_eq!(command["DocumentName"], "kicky-agent-resync");
    assert_eq!(
        command["Parameters"]["release"][0],
        "20261207T163000000Z-3f9a1c"
    );

    assert_eq!(
        (
            command["MaxConcurrency"].as_str(),
            command["MaxErrors"].as_str()
        ),
        (Some("10%"), Some("1"))
    );
    assert_eq!(command["Targets"][0]["Key"], "tag:kicky:project");
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
    assert_no_parameter_read_beyond_the_config(&got);
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
