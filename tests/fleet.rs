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

/// The AWS managed policies that let the role read parameters it was not given by name:
/// `ssm:GetParameter`/`GetParameters` (or `ssm:Get*`, `ssm:*`, `*`) on `*`.
const PARAMETER_READING_MANAGED_POLICIES: &[&str] = &[
    "AmazonSSMManagedInstanceCore",
    "service-role/AmazonEC2RoleforSSM",
    "AmazonSSMReadOnlyAccess",
    "AmazonSSMFullAccess",
    "ReadOnlyAccess",
    "PowerUserAccess",
    "AdministratorAccess",
];

/// The managed policies among `arns` that read parameters (see the list above).
fn parameter_readers<'a>(arns: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    arns.into_iter()
        .filter(|arn| {
            PARAMETER_READING_MANAGED_POLICIES
                .iter()
                .any(|name| arn.ends_with(&format!(":policy/{name}")))
        })
        .collect()
}

/// IAM's wildcards: `*` any run of characters, `?` one; actions compare without case.
fn iam_matches(pattern: &str, value: &str, ignore_case: bool) -> bool {
    let (p, v): (Vec<char>, Vec<char>) = if ignore_case {
        (
            pattern.to_lowercase().chars().collect(),
            value.to_lowercase().chars().collect(),
        )
    } else {
        (pattern.chars().collect(), value.chars().collect())
    };
    fn at(p: &[char], v: &[char]) -> bool {
        match p.split_first() {
            None => v.is_empty(),
            Some(('*', rest)) => (0..=v.len()).any(|i| at(rest, &v[i..])),
            Some((c, rest)) => {
                v.first().is_some_and(|first| *c == '?' || first == c) && at(rest, &v[1..])
            }
        }
    }
    at(&p, &v)
}

/// Every statement of `policies` (name -> document) that would let the role read a parameter the
/// config does not name: an action that is a parameter read on a resource that matches another
/// team's parameter; any `NotAction`/`NotResource` counts, since it grants by exclusion.
fn parameter_reads_beyond_the_config(policies: &Value) -> Vec<String> {
    const READS: &[&str] = &[
        "ssm:GetParameter",
        "ssm:GetParameters",
        "ssm:GetParametersByPath",
        "ssm:GetParameterHistory",
    ];
    const OTHERS: &str =
        "arn:aws:ssm:ap-northeast-2:123456789012:parameter/someone-else/db-password";
    let list = |v: &Value| -> Vec<String> {
        match v {
            Value::String(one) => vec![one.clone()],
            Value::Array(many) => many
                .iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect(),
            _ => Vec::new(),
        }
    };
    let mut found = Vec::new();
    for (name, document) in policies.as_object().expect("policies by name") {
        let statements = match &document["Statement"] {
            Value::Array(many) => many.clone(),
            one => vec![one.clone()],
        };
        for statement in statements {
            if statement["Effect"] != "Allow" {
                continue;
            }
            let sid = format!("{name}/{}", statement["Sid"].as_str().unwrap_or("?"));
            if statement.get("NotAction").is_some() || statement.get("NotResource").is_some() {
                found.push(format!("{sid}: NotAction/NotResource"));
                continue;
            }
            let actions = list(&statement["Action"]);
            let reads = READS
                .iter()
                .any(|read| actions.iter().any(|a| iam_matches(a, read, true)));
            let resources = list(&statement["Resource"]);
            if reads && resources.iter().any(|r| iam_matches(r, OTHERS, false)) {
                found.push(format!("{sid}: {actions:?} on {resources:?}"));
            }
        }
    }
    found
}

/// The role holds what the agent and the SSM Agent need and no way to read a parameter the config
/// does not name: no managed policy that does (the template's, read from the file since moto's
/// CloudFormation does not attach them; and whatever moto attached), no inline statement that
/// does. The checks can fail: AmazonSSMManagedInstanceCore's own statement is caught.
fn assert_no_parameter_read_beyond_the_config(got: &Value) {
    let template: serde_norway::Value =
        serde_norway::from_str(&std::fs::read_to_string(repo("ami/cloudformation.yaml")).unwrap())
            .unwrap();
    let declared: Vec<String> = template["Resources"]["Role"]["Properties"]["ManagedPolicyArns"]
        .as_sequence()
        .map(|arns| {
            arns.iter()
                .map(|arn| match arn {
                    serde_norway::Value::Tagged(tagged) => {
                        tagged.value.as_str().unwrap_or_default().to_string()
                    }
                    other => other.as_str().unwrap_or_default().to_string(),
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        parameter_readers(declared.iter().map(String::as_str)),
        Vec::<&str>::new(),
        "the role attaches a managed policy that reads every parameter of the account (any of {PARAMETER_READING_MANAGED_POLICIES:?})"
    );
    let attached: Vec<&str> = got["attached_policies"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(parameter_readers(attached), Vec::<&str>::new());
    assert_eq!(
        parameter_reads_beyond_the_config(&got["role_policies"]),
        Vec::<String>::new()
    );
    // The checks can fail.
    assert_eq!(
        parameter_readers(["arn:${AWS::Partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"]),
        ["arn:${AWS::Partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"]
    );
    let core = serde_json::json!({"AmazonSSMManagedInstanceCore": {"Statement": [{
        "Effect": "Allow",
        "Action": ["ssm:DescribeAssociation", "ssm:GetParameter", "ssm:GetParameters"],
        "Resource": "*"
    }]}});
    assert_eq!(parameter_reads_beyond_the_config(&core).len(), 1);
    let wildcard = serde_json::json!({"p": {"Statement": {
        "Effect": "Allow", "Action": "SSM:Get*",
        "Resource": "arn:aws:ssm:*:123456789012:parameter/*"
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
    let names: Vec<&String> = got["role_policies"].as_object().unwrap().keys().collect();
    assert_eq!(names, ["kicky-agent", "ssm-agent"]);
    assert_eq!(
        got["role_policies"]["kicky-agent"], printed,
        "the template's policy is out of date: regenerate it (see its header)"
    );
    assert_ssm_agent_policy(&got);
    assert_no_parameter_read_beyond_the_config(&got);

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
        "kicky-agent resync --timeout {{ timeout }}"
    );
    let command = &got["command"];
    assert_eq!(command["DocumentName"], "kicky-agent-resync");
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
/// else changes (the role, the user data); the AMI's kicky-agent-imds-guard then keeps every
/// container but the kicky-imds network's off instance metadata (tests/packaging.rs).
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
    assert!(got["user_data"]
        .as_str()
        .unwrap()
        .starts_with("#kicky-agent\n"));
    // Anything but "true" leaves the hop at 1 (CloudFormation refuses a value outside
    // AllowedValues; moto does not, so this shows the condition's own default).
    let typo = create_and_read_back(
        &rig,
        &format!("{stack}-typo"),
        &["ContainersUseInstanceRole=yes"],
    );
    assert_eq!(typo["metadata_options"]["HttpPutResponseHopLimit"], 1);
}
