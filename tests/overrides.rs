//! One AMI, many applications: the launch template's user data (`#kicky-agent`, alone, in a
//! cloud-init multipart document, gzip-compressed) and the instance's `kicky-agent:<key>` tags
//! merged over the baked config. Each test serves its own instance metadata (an IMDSv2 layer of
//! its own with the user data and tags it sets) and runs the agent as that instance.

use crate::common;

use std::io::Write;
use std::path::{Path, PathBuf};

use aws_sdk_ssm::types::ParameterType;
use common::imds::OwnImds;
use common::{mode_of, python_dotenv, unique_prefix, Rig, Scratch};

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

/// User data as a launch template carries it: a cloud-init multipart document whose second part
/// is the agent's, the whole gzip-compressed.
fn multipart(agent_part: &str) -> Vec<u8> {
    let text = format!(
        "Content-Type: multipart/mixed; boundary=\"==B==\"\nMIME-Version: 1.0\n\n\
         --==B==\nContent-Type: text/cloud-config; charset=\"us-ascii\"\n\n#cloud-config\ntimezone: UTC\n\n\
         --==B==\nContent-Type: text/x-kicky-agent; charset=\"us-ascii\"\n\n{agent_part}\n\
         --==B==--\n"
    );
    gzip(text.as_bytes())
}

/// The instance's metadata: user data (raw bytes) and tags.
fn fixture(dir: &Path, rig: &Rig, user_data: Option<&[u8]>, tags: &[(&str, &str)]) -> PathBuf {
    let fixture = dir.join("imds-fixture");
    std::fs::create_dir_all(&fixture).unwrap();
    std::fs::write(fixture.join("region"), &rig.region).unwrap();
    if let Some(data) = user_data {
        std::fs::write(fixture.join("user-data"), data).unwrap();
    }
    write_tags(&fixture, tags);
    fixture
}

fn write_tags(fixture: &Path, tags: &[(&str, &str)]) {
    let tags: serde_json::Map<String, serde_json::Value> = tags
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string())))
        .collect();
    let text = serde_json::Value::Object(tags).to_string();
    std::fs::write(fixture.join("tags.json"), text).unwrap();
}

fn baked(parameter: &str) -> String {
    format!(
        "project: orange\nworkdir: {{workdir}}\naws:\n  endpoint_url: {{moto}}\nenv:\n  parameters:\n\
         \x20   - name: {parameter}\n      key: GREETING\nlifecycle:\n  hook: off\n"
    )
}

#[tokio::test]
async fn user_data_and_tags_override_the_baked_config_and_say_so() {
    let rig = Rig::get();
    let prefix = unique_prefix("overrides");
    let (baked_param, app_param) = (format!("{prefix}/baked"), format!("{prefix}/lemon"));
    rig.put(&baked_param, "from-the-ami", ParameterType::String)
        .await;
    rig.put(
        &app_param,
        "from-the-launch-template",
        ParameterType::SecureString,
    )
    .await;

    let s = Scratch::new();
    s.config(&rig, &baked(&baked_param));
    let user_data = format!(
        "#kicky-agent\n# the lemon application\nenv:\n  file: app.env\n  parameters:\n    - name: {app_param}\n      key: GREETING\n"
    );
    let tags = [
        ("kicky-agent:env.mode", "0640"),
        ("kicky-agent:watch.interval", "30s"),
        ("Name", "web"),
    ];
    let fixture = fixture(s.dir.path(), &rig, Some(&multipart(&user_data)), &tags);
    let imds = OwnImds::start(&rig, &rig.moto_url, s.dir.path(), &fixture);
    let env = [("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.url.as_str())];

    s.agent_with(&rig, &["sync"], &env)
        .expect(0)
        .assert_free_of(&["from-the-launch-template"]);
    let app_env = s.workdir().join("app.env");
    let vars = python_dotenv(&rig, &app_env);
    assert_same!(
        vars["GREETING"],
        "from-the-launch-template",
        "GREETING in app.env"
    );
    assert_eq!(mode_of(&app_env), 0o640, "env.mode from the tag");
    assert!(
        !s.workdir().join(".env").exists(),
        "the baked env file is not written"
    );

    // `status` and `validate` name the layer of each value.
    let run = s.agent_with(&rig, &["status", "--json"], &env);
    run.expect(0);
    let status: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let origins = &status["config_origins"];
    let baked_file = s.path("etc/agent.yaml").display().to_string();
    assert_eq!(origins["project"], baked_file.as_str());
    assert_eq!(origins["env.file"], "user data");
    assert_eq!(origins["env.parameters"], "user data");
    assert_eq!(origins["env.mode"], "tag kicky-agent:env.mode");
    assert_eq!(origins["watch.interval"], "tag kicky-agent:watch.interval");
    let run = s.agent_with(&rig, &["validate"], &env);
    run.expect(0);
    for line in [
        "env.file: user data",
        "env.mode: tag kicky-agent:env.mode",
        &format!("project: {baked_file}"),
    ] {
        assert!(
            run.stdout.contains(line),
            "validate lacks {line:?}:\n{}",
            run.stdout
        );
    }
    assert!(run.stdout.contains(&format!(
        "config is valid: {baked_file} + user data + tag kicky-agent:env.mode + tag kicky-agent:watch.interval"
    )), "{}", run.stdout);

    // The baked config can turn the launch template's say off.
    std::fs::create_dir_all(s.path("etc/agent.d")).unwrap();
    std::fs::write(
        s.path("etc/agent.d/50-no-overrides.yaml"),
        "overrides:\n  user_data: false\n  tags: false\n",
    )
    .unwrap();
    s.agent_with(&rig, &["sync"], &env).expect(0);
    let vars = python_dotenv(&rig, &s.workdir().join(".env"));
    assert_same!(vars["GREETING"], "from-the-ami", "GREETING in .env");
}

/// Each bad override ends in exit 2 naming its layer, its line and key, writes nothing, and never
/// echoes what looked like a credential.
#[tokio::test]
async fn a_bad_override_names_its_source_and_changes_nothing() {
    let rig = Rig::get();
    let prefix = unique_prefix("bad-overrides");
    let param = format!("{prefix}/baked");
    rig.put(&param, "v1", ParameterType::String).await;
    let s = Scratch::new();
    s.config(&rig, &baked(&param));
    let fx = fixture(s.dir.path(), &rig, None, &[]);
    let imds = OwnImds::start(&rig, &rig.moto_url, s.dir.path(), &fx);
    let env = [("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.url.as_str())];
    s.agent_with(&rig, &["sync"], &env).expect(0);
    let env_file = s.workdir().join(".env");
    let before = std::fs::read_to_string(&env_file).unwrap();

    let key_id = "AKIAZZZZZZZZZZZZZZZZ";
    type Case<'a> = (Vec<u8>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            b"#kicky-agent\nwatch:\n  interval: 30s\n  aply: report\n".to_vec(),
            vec![],
            "user data:4:3: watch.aply: unknown field `aply`",
        ),
        (
            gzip(
                format!("#kicky-agent\naws:\n  endpoint_url: http://{key_id}:pw@127.0.0.1:1\n")
                    .as_bytes(),
            ),
            vec![],
            "user data: a value looks like an AWS access key id",
        ),
        (
            Vec::new(),
            vec![("kicky-agent:watch.interval", "soon")],
            "tag kicky-agent:watch.interval: watch.interval: ",
        ),
        (
            Vec::new(),
            vec![("kicky-agent:env.parameters.4.key", "X")],
            "tag kicky-agent:env.parameters.4.key: env.parameters is a list of 1",
        ),
        (
            Vec::new(),
            vec![("kicky-agent:overrides.tags", "false")],
            "tag kicky-agent:overrides.tags: `overrides` can be set in the baked config only",
        ),
    ];
    for (user_data, tags, expect) in cases {
        let _ = std::fs::remove_file(fx.join("user-data"));
        if !user_data.is_empty() {
            std::fs::write(fx.join("user-data"), &user_data).unwrap();
        }
        write_tags(&fx, &tags);
        for command in ["validate", "sync"] {
            let run = s.agent_with(&rig, &[command], &env);
            run.expect(2).assert_free_of(&[key_id, "pw@"]);
            assert!(
                run.stderr.contains(expect),
                "{command}: want {expect:?} in\n{}",
                run.stderr
            );
        }
        assert_same!(
            std::fs::read_to_string(&env_file).unwrap(),
            before,
            "the env file changed"
        );
    }
}

/// The daemon reads the overrides at start and on `resync`, not on its watch: a tag changed
/// while it runs takes effect when the operator asks (SIGHUP, `systemctl reload`, `resync`).
#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_applies_a_changed_tag_on_resync() {
    let rig = Rig::get();
    let prefix = unique_prefix("overrides-daemon");
    let param = format!("{prefix}/baked");
    rig.put(&param, "v1", ParameterType::String).await;
    let s = Scratch::new();
    let socket = s.path("run/control.sock");
    s.config(
        &rig,
        &format!(
            "{}control_socket: {}\nwatch:\n  interval: 1s\n",
            baked(&param),
            socket.display()
        ),
    );
    let fx = fixture(
        s.dir.path(),
        &rig,
        None,
        &[("kicky-agent:env.file", "one.env")],
    );
    let imds = OwnImds::start(&rig, &rig.moto_url, s.dir.path(), &fx);
    let mut daemon = s.spawn_daemon(&imds.url, &[]);
    let wait_for = |path: PathBuf| {
        let started = std::time::Instant::now();
        while !path.exists() && started.elapsed() < std::time::Duration::from_secs(30) {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        path.exists()
    };
    let log = || std::fs::read_to_string(s.path("daemon.log")).unwrap_or_default();
    let one = tokio::task::block_in_place(|| wait_for(s.workdir().join("one.env")));
    assert!(one, "one.env not written:\n{}", log());

    write_tags(&fx, &[("kicky-agent:env.file", "two.env")]);
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(
        !s.workdir().join("two.env").exists(),
        "the watch read the tags:\n{}",
        log()
    );
    let env = [("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.url.as_str())];
    let run = tokio::task::block_in_place(|| s.agent_with(&rig, &["resync"], &env));
    let _ = daemon.kill();
    let _ = daemon.wait();
    run.expect(0);
    assert!(
        s.workdir().join("two.env").exists(),
        "{}\n{}",
        run.all(),
        log()
    );
}
