//! From a clone to a fleet: the Packer template validates offline, the CloudFormation template
//! lints clean and, created as a stack in the rig's moto, makes what the fleet needs (read back:
//! the launch template's metadata options and user data, the role's policy equal to what
//! `kicky-agent iam-policy` prints, the group, the resync document), and moto's SSM accepts the
//! fleet rollout (`send-command` with rate control).

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

#[tokio::test(flavor = "multi_thread")]
async fn the_stack_makes_what_the_fleet_needs() {
    let rig = Rig::get();
    let stack = format!("kt-fleet-{}", fastrand::u32(..) % 1_000_000);
    let (status, text) = tokio::task::block_in_place(|| {
        output(
            Command::new(&rig.python)
                .arg(repo("tests/fixtures/cloudformation_readback.py"))
                .args([&rig.moto_url, &rig.region])
                .arg(repo("ami/cloudformation.yaml"))
                .arg(&stack),
        )
    });
    assert_eq!(status, 0, "{text}");
    let got: Value = serde_json::from_str(text.lines().last().unwrap()).expect("readback JSON");
    assert_eq!(got["status"], "CREATE_COMPLETE", "{got}");
    assert_eq!(
        got["metadata_options"],
        serde_json::json!({"HttpTokens": "required", "HttpEndpoint": "enabled", "InstanceMetadataTags": "enabled", "HttpPutResponseHopLimit": 2})
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
    assert_eq!(
        got["role_policy"], printed,
        "the template's policy is out of date: regenerate it (see its header)"
    );

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
