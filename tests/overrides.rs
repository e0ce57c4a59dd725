//! One AMI, many applications: the launch template's user data (`#kicky-agent`, alone, in a
//! cloud-init multipart document, gzip-compressed) and the instance's `kicky-agent:<key>` tags
//! merged over the baked config. Each test serves its own instance metadata (an IMDSv2 layer of
//! its own with the user data and tags it sets) and runs the agent as that instance.

use crate::common;

use std::io::Write;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use aws_sdk_ssm::types::ParameterType;
use common::imds::OwnImds;
use common::stack::{running_healthy, Stack};
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
    s.config(
        &rig,
        &format!("{}overrides:\n  tags: true\n", baked(&baked_param)),
    );
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
    assert_eq!(mode_of(&app_env), 0o600, "env.mode is never a tag's to set");
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
    assert_eq!(origins.get("env.mode"), None);
    assert_eq!(origins["watch.interval"], "tag kicky-agent:watch.interval");
    let ignored = status["ignored_tags"].as_array().unwrap();
    assert_eq!(ignored.len(), 1, "{ignored:?}");
    assert!(
        ignored[0]
            .as_str()
            .unwrap()
            .starts_with("tag kicky-agent:env.mode: `env.mode` can never be set by a tag"),
        "{ignored:?}"
    );
    let run = s.agent_with(&rig, &["validate"], &env);
    run.expect(0);
    for line in [
        "env.file: user data",
        "watch.interval: tag kicky-agent:watch.interval",
        "tag kicky-agent:env.mode: `env.mode` can never be set by a tag",
        &format!("project: {baked_file}"),
    ] {
        assert!(
            run.stdout.contains(line),
            "validate lacks {line:?}:\n{}",
            run.stdout
        );
    }
    assert!(
        run.stdout.contains(&format!(
            "config is valid: {baked_file} + user data + tag kicky-agent:watch.interval"
        )),
        "{}",
        run.stdout
    );

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

/// Each bad user-data document ends in exit 2 naming its layer, its line and key, writes nothing,
/// and never echoes what looked like a credential. (A bad tag is ignored, never fatal: below.)
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
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            b"#kicky-agent\nwatch:\n  interval: 30s\n  aply: report\n".to_vec(),
            "user data:4:3: watch.aply: unknown field `aply`",
        ),
        (
            gzip(
                format!("#kicky-agent\naws:\n  endpoint_url: http://{key_id}:pw@127.0.0.1:1\n")
                    .as_bytes(),
            ),
            "user data: a value looks like an AWS access key id",
        ),
        (
            b"#kicky-agent\noverrides:\n  tags: true\n".to_vec(),
            "user data: overrides: can be set in the baked config only",
        ),
        (
            b"#kicky-agent\nwatch:\n  interval: 10ms\n".to_vec(),
            "user data:3:3: watch.interval: must be at least 5s",
        ),
    ];
    for (user_data, expect) in cases {
        std::fs::write(fx.join("user-data"), &user_data).unwrap();
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
    let (param, one, two) = (
        format!("{prefix}/baked"),
        format!("{prefix}/one"),
        format!("{prefix}/two"),
    );
    for (name, value) in [(&param, "baked"), (&one, "one"), (&two, "two")] {
        rig.put(name, value, ParameterType::String).await;
    }
    let s = Scratch::new();
    let socket = s.path("run/control.sock");
    s.config(
        &rig,
        &format!(
            "{}control_socket: {}\nwatch:\n  interval: 5s\noverrides:\n  tags: [env.parameters.*.name]\n",
            baked(&param),
            socket.display()
        ),
    );
    let tag = "kicky-agent:env.parameters.0.name";
    let fx = fixture(s.dir.path(), &rig, None, &[(tag, &one)]);
    let imds = OwnImds::start(&rig, &rig.moto_url, s.dir.path(), &fx);
    let mut daemon = s.spawn_daemon(&imds.url, &[]);
    let greeting = || {
        let text = std::fs::read_to_string(s.workdir().join(".env")).unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix("GREETING=").map(str::to_string))
    };
    let wait_for = |want: &str| {
        let started = std::time::Instant::now();
        while greeting().as_deref() != Some(want)
            && started.elapsed() < std::time::Duration::from_secs(30)
        {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        greeting().as_deref() == Some(want)
    };
    let log = || std::fs::read_to_string(s.path("daemon.log")).unwrap_or_default();
    let first = tokio::task::block_in_place(|| wait_for("one"));
    assert!(first, "the tag's parameter not written:\n{}", log());

    write_tags(&fx, &[(tag, &two)]);
    // Longer than a watch interval (5 s, ±10%): a watch ran, and did not read the tags.
    std::thread::sleep(std::time::Duration::from_secs(7));
    assert_eq!(
        greeting().as_deref(),
        Some("one"),
        "the watch read the tags:\n{}",
        log()
    );
    let env = [("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.url.as_str())];
    let run = tokio::task::block_in_place(|| s.agent_with(&rig, &["resync"], &env));
    let _ = daemon.kill();
    let _ = daemon.wait();
    run.expect(0);
    assert_eq!(
        greeting().as_deref(),
        Some("two"),
        "{}\n{}",
        run.all(),
        log()
    );
}

/// Issue 20's attack: with `ec2:CreateTags` alone, tags that send every AWS call to the
/// attacker's endpoint, an ECR token to the attacker's registry and a parameter of the tag's
/// choosing as the password of the images' registry, and move every path the agent writes or
/// listens on. Tags are off by default, and even on, no allow-list can open these: the sync talks
/// to the baked endpoint only, pulls (`pull: always`) with the baked registry password (the tag's
/// is refused by the registry), writes nowhere a tag said, exits 0; the daemon listens on the
/// baked control socket only; and every tag is named with its reason in `validate`, `status` and
/// the log.
#[tokio::test]
async fn tags_never_choose_whom_the_agent_talks_to_or_where_it_writes() {
    let rig = Rig::get();
    let stack = Stack::new(&rig, "tagattack").await;
    let (p, registry) = (stack.project.clone(), stack.registry.clone());
    let prefix = unique_prefix("tag-attack");
    let param = format!("{prefix}/baked");
    rig.put(&param, "from-the-ami", ParameterType::String).await;
    // The attacker's endpoint and registry: a listener that only counts who knocks.
    let attacker = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    attacker.set_nonblocking(true).unwrap();
    let at = attacker.local_addr().unwrap();
    let no_knock = |what: &str| {
        assert!(
            matches!(attacker.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "{what}: the agent connected to the tags' endpoint or registry"
        );
    };
    let s = &stack.scratch;
    // An image the sync pulls every time (`pull: always`), from the rig's registry, with the
    // password the baked config names.
    std::fs::create_dir_all(s.workdir()).unwrap();
    std::fs::write(
        s.workdir().join("docker-compose.yml"),
        format!("services:\n  web:\n    image: {registry}/tester/web:1\n"),
    )
    .unwrap();
    // The tags' registries: an ECR token for the attacker's, and for the images' own registry a
    // password read from a parameter the tag picks (here a wrong one: the registry refuses it).
    let wrong = format!("{prefix}/not-the-registry-password");
    rig.put(&wrong, "wrong-password", ParameterType::String)
        .await;
    let attack_registries = format!(
        "[{{server: \"{at}\", ecr: true}}, {{server: \"{registry}\", username: tester, password: {{parameter: \"{wrong}\"}}}}]"
    );
    let socket = s.path("run/control.sock");
    let baked = format!(
        "project: {p}\nworkdir: {{workdir}}\naws:\n  endpoint_url: {{moto}}\n\
         env:\n  parameters:\n    - name: {param}\n      key: GREETING\n\
         compose:\n  file: docker-compose.yml\n  pull: always\n  healthy_timeout: 30s\n\
         registries:\n  - server: {registry}\n    username: tester\n    password: {{ parameter: /kt/{p}/registry }}\n\
         control_socket: {}\nlifecycle:\n  hook: off\n",
        socket.display()
    );
    let loot = s.path("loot");
    let under = |name: &str| loot.join(name).display().to_string();
    let tags: Vec<(String, String)> = [
        ("aws.endpoint_url", format!("http://{at}")),
        ("aws.region", "us-east-1".to_string()),
        ("registries", attack_registries),
        ("workdir", under("work")),
        ("env.file", under("app.env")),
        ("env.mode", "0666".to_string()),
        ("state_dir", under("state")),
        ("control_socket", under("control.sock")),
        ("metrics.textfile", under("metrics.prom")),
        ("compose.secrets_dir", under("secrets")),
        ("files_allowed_dirs", format!("[{}]", loot.display())),
        ("overrides.tags", "[aws]".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (format!("kicky-agent:{k}"), v))
    .collect();
    let tag_refs: Vec<(&str, &str)> = tags.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let fx = fixture(s.dir.path(), &rig, None, &tag_refs);
    let imds = OwnImds::start(&rig, &rig.moto_url, s.dir.path(), &fx);
    let env = [("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.url.as_str())];

    for (baked_overrides, reason) in [
        ("", "tags are off"),
        ("overrides:\n  tags: true\n", "can never be set by a tag"),
        (
            "overrides:\n  tags: [watch.interval, env.parameters]\n",
            "can never be set by a tag",
        ),
    ] {
        s.config(&rig, &format!("{baked}{baked_overrides}"));
        let sync = s.agent_with(&rig, &["sync"], &env);
        sync.expect(0);
        let vars = python_dotenv(&rig, &s.workdir().join(".env"));
        assert_same!(
            vars["GREETING"],
            "from-the-ami",
            "GREETING in the baked env file"
        );
        assert_eq!(mode_of(&s.workdir().join(".env")), 0o600);
        assert!(
            running_healthy(&stack.container("web")),
            "{baked_overrides}: the pulled image does not serve"
        );
        no_knock(baked_overrides);
        assert!(
            !loot.exists(),
            "{baked_overrides}: a tag's path was written"
        );

        // The daemon: its control socket where the baked config says, none where the tag says.
        let (daemon, notify) = common::systemd::start(s, &imds.url, &[], &[]);
        notify.wait_for("READY=1", std::time::Duration::from_secs(60));
        assert!(
            std::fs::symlink_metadata(&socket).is_ok_and(|m| m.file_type().is_socket()),
            "{baked_overrides}: no control socket at the baked path"
        );
        drop(daemon);
        no_knock(baked_overrides);
        assert!(
            !loot.exists(),
            "{baked_overrides}: a tag's path was written (or bound) by the daemon"
        );

        let validate = s.agent_with(&rig, &["validate"], &env);
        validate.expect(0);
        let status = s.agent_with(&rig, &["status", "--json"], &env);
        status.expect(0);
        let status: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
        let ignored = status["ignored_tags"].as_array().unwrap();
        assert_eq!(ignored.len(), tags.len(), "{ignored:#?}");
        for (key, _) in &tags {
            let named = format!("tag {key}: ");
            for (what, text) in [("validate", &validate.stdout), ("sync's log", &sync.stderr)] {
                let line = text.lines().find(|l| l.contains(&named));
                assert!(
                    line.is_some_and(|l| l.contains(reason)),
                    "{baked_overrides}: {what} does not name {named:?} with {reason:?}:\n{text}"
                );
            }
            assert!(
                ignored
                    .iter()
                    .any(|i| i.as_str().unwrap().starts_with(&named)),
                "{named} in {ignored:#?}"
            );
        }
    }

    // An allow-list that names what no tag may set is the baked config's own mistake: exit 2.
    s.config(
        &rig,
        &format!("{baked}overrides:\n  tags: [aws.endpoint_url]\n"),
    );
    let run = s.agent_with(&rig, &["validate"], &env);
    run.expect(2);
    assert!(
        run.stderr.contains("overrides.tags")
            && run
                .stderr
                .contains("`aws.endpoint_url` can never be set by a tag"),
        "{}",
        run.stderr
    );
}
