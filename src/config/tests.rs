//! Loading, merging and checking config files, and the messages for bad ones.

use std::fs;
use std::path::{Path, PathBuf};

use super::*;

struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Self {
        Dir(tempfile::tempdir().unwrap())
    }

    fn write(&self, rel: &str, text: &str) -> PathBuf {
        let path = self.0.path().join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, text).unwrap();
        path
    }

    fn main(&self) -> PathBuf {
        self.0.path().join("agent.yaml")
    }
}

fn error_of(path: &Path) -> (String, u8) {
    let err = load(path).unwrap_err();
    (format!("{err:#}"), crate::error::exit_status(&err))
}

const SAMPLE: &str = "\
project: orange
workdir: /srv/orange
aws:
  region: ap-northeast-2
  endpoint_url: http://127.0.0.1:5000
  s3_force_path_style: true
env:
  file: .env
  parameters:
    - name: /orange/prod/env
      format: dotenv
    - path: /orange/prod/vars/
      recursive: true
    - name: /orange/prod/SERVER_SECRET
      key: SERVER_SECRET
";

#[test]
fn the_design_sample_loads() {
    let dir = Dir::new();
    dir.write("agent.yaml", SAMPLE);
    let s = load(&dir.main()).unwrap();
    assert_eq!(s.project, "orange");
    assert_eq!(s.workdir, PathBuf::from("/srv/orange"));
    assert_eq!(s.aws.region.as_deref(), Some("ap-northeast-2"));
    assert_eq!(s.aws.endpoint_url.as_deref(), Some("http://127.0.0.1:5000"));
    assert!(s.aws.s3_force_path_style);
    let env = s.env.unwrap();
    assert_eq!(env.path, PathBuf::from("/srv/orange/.env"));
    assert_eq!(env.mode, 0o600);
    assert_eq!(env.sources.len(), 3);
    assert!(
        matches!(&env.sources[1].from, ParamSource::Path { path, recursive: true } if path.as_str() == "/orange/prod/vars")
    );
}

#[test]
fn only_project_is_required() {
    let dir = Dir::new();
    dir.write("agent.yaml", "project: orange\n");
    let s = load(&dir.main()).unwrap();
    assert_eq!(s.workdir, PathBuf::from("/srv/orange"));
    assert!(s.env.is_none());
    assert!(s.aws.region.is_none());
}

#[test]
fn fragments_merge_in_name_order() {
    let dir = Dir::new();
    dir.write("agent.yaml", SAMPLE);
    dir.write("agent.d/20-mode.yaml", "env:\n  mode: \"0640\"\n");
    dir.write(
        "agent.d/10-app.yaml",
        "project: lemon\nenv:\n  parameters:\n    - name: /lemon/env\n      format: dotenv\n",
    );
    dir.write("agent.d/30-later.yaml", "project: lime\n");
    dir.write("agent.d/ignored.yml", "this: is not read\n");
    dir.write("agent.d/empty.yaml", "");
    let s = load(&dir.main()).unwrap();
    assert_eq!(s.project, "lime");
    let env = s.env.clone().unwrap();
    assert_eq!(env.mode, 0o640);
    // Lists are replaced whole, mappings merged key by key.
    assert_eq!(env.sources.len(), 1);
    assert_eq!(env.path, PathBuf::from("/srv/orange/.env"));
    let origin = |key: &str| {
        s.origin(key)
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    assert_eq!(origin("project"), "30-later.yaml");
    assert_eq!(origin("env.mode"), "20-mode.yaml");
    assert_eq!(origin("env.parameters"), "10-app.yaml");
    assert_eq!(origin("env.file"), "agent.yaml");
    assert_eq!(origin("aws.region"), "agent.yaml");
    let names: Vec<_> = s
        .sources
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "agent.yaml",
            "10-app.yaml",
            "20-mode.yaml",
            "30-later.yaml",
            "empty.yaml"
        ]
    );
}

#[test]
fn unknown_keys_name_file_line_and_key() {
    let dir = Dir::new();
    dir.write(
        "agent.yaml",
        "project: orange\nenv:\n  parameters:\n    - name: /a\n      formt: dotenv\n",
    );
    let (msg, code) = error_of(&dir.main());
    assert_eq!(code, 2);
    let file = dir.main().display().to_string();
    assert!(msg.contains(&format!("{file}:5:")), "{msg}");
    assert!(msg.contains("env.parameters[0]"), "{msg}");
    assert!(msg.contains("unknown field `formt`"), "{msg}");
}

#[test]
fn errors_in_a_fragment_name_the_fragment() {
    let dir = Dir::new();
    dir.write("agent.yaml", SAMPLE);
    let frag = dir.write(
        "agent.d/50-bad.yaml",
        "aws:\n  region: ap-northeast-2\n  endpoint: http://x\n",
    );
    let (msg, code) = error_of(&dir.main());
    assert_eq!(code, 2);
    assert!(msg.contains(&format!("{}:3:", frag.display())), "{msg}");
    assert!(msg.contains("unknown field `endpoint`"), "{msg}");
}

/// Where the agent writes and removes files: `env.file` without `..`, and a secrets directory
/// that overlaps no other place it writes, each refused naming the file, line and key.
#[test]
fn paths_the_agent_would_overreach_with_are_refused() {
    let cases = [
        (
            "project: orange\nenv:\n  file: ../etc/.env\n  parameters: [{name: /a}]\n",
            ":3:",
            "env.file",
            "contains `..`",
        ),
        (
            "project: orange\nworkdir: /srv/orange\ncompose:\n  secrets_dir: /srv\n",
            ":4:",
            "compose.secrets_dir",
            "overlaps the workdir /srv/orange",
        ),
        (
            "project: orange\nworkdir: /srv/orange\ncompose:\n  secrets_dir: /srv/orange/secrets\n",
            ":4:",
            "compose.secrets_dir",
            "overlaps the workdir /srv/orange",
        ),
        (
            "project: orange\nstate_dir: /run/kicky-agent\ncompose:\n  file: /srv/orange/docker-compose.yml\n",
            "agent.yaml",
            "compose.secrets_dir",
            "overlaps state_dir /run/kicky-agent",
        ),
        (
            "project: orange\nfiles_allowed_dirs: [/run]\nfiles:\n  - source: s3://bucket-a/a.conf\n    path: /run/a.conf\ncompose:\n  secrets_dir: /run/orange-secrets\n",
            ":7:",
            "compose.secrets_dir",
            "overlaps a file's directory /run",
        ),
        (
            "project: orange\nmetrics:\n  textfile: /run/kicky-agent/secrets/orange.prom\ncompose: {}\n",
            "agent.yaml",
            "compose.secrets_dir",
            "overlaps the metrics textfile's directory",
        ),
    ];
    for (text, at, key, needle) in cases {
        let dir = Dir::new();
        dir.write("agent.yaml", text);
        let (msg, code) = error_of(&dir.main());
        assert_eq!(code, 2, "{text}");
        assert!(
            msg.contains(at) && msg.contains(key) && msg.contains(needle),
            "{text}: {msg}"
        );
    }
    // The defaults overlap nothing; nor does a secrets directory beside the workdir.
    for text in [
        "project: orange\ncompose: {}\n",
        "project: orange\nworkdir: /srv/orange\ncompose:\n  secrets_dir: /srv/orange-secrets\n",
    ] {
        let dir = Dir::new();
        dir.write("agent.yaml", text);
        load(&dir.main()).unwrap_or_else(|e| panic!("{text}: {e:#}"));
    }
}

#[test]
fn wrong_types_and_impossible_values() {
    let cases = [
        (
            "project: orange\nenv:\n  mode: 600\n  parameters: [{name: /a}]\n",
            3,
            "must be quoted",
        ),
        (
            "project: orange\nenv:\n  mode: \"0900\"\n  parameters: [{name: /a}]\n",
            3,
            "invalid file mode",
        ),
        ("project: Orange\n", 1, "invalid project name"),
        (
            "project: orange\nworkdir: srv/orange\n",
            2,
            "must be an absolute path",
        ),
        (
            "project: orange\naws:\n  s3_force_path_style: yes-please\n",
            3,
            "aws.s3_force_path_style",
        ),
        (
            "project: orange\naws:\n  endpoint_url: 127.0.0.1:5000\n",
            3,
            "is not an http:// or https:// URL",
        ),
        (
            "project: orange\nenv:\n  parameters:\n    - name: orange/env\n",
            4,
            "does not start with `/`",
        ),
        (
            "project: orange\nenv:\n  parameters:\n    - name: /a\n      path: /b\n",
            4,
            "exactly one of `name`",
        ),
        (
            "project: orange\nenv:\n  parameters:\n    - path: /b\n      key: X\n",
            4,
            "does not apply to `path`",
        ),
        (
            "project: orange\nenv:\n  parameters:\n    - name: /a/1b\n",
            4,
            "set `key:`",
        ),
        (
            "project: orange\nenv:\n  parameters:\n    - name: /a\n      key: 1BAD\n",
            5,
            "not a valid variable name",
        ),
        (
            "project: orange\nenv:\n  parameters: /a\n",
            3,
            "env.parameters",
        ),
        (
            "project: orange\nenv:\n  parameters:\n    - secret: prod/db\n      name: /a\n",
            4,
            "exactly one of `name`, `path` or `secret`",
        ),
        (
            "project: orange\nenv:\n  parameters:\n    - secret: prod/db\n      key: DB\n",
            4,
            "add `prefix:` to prefix them",
        ),
        (
            "project: orange\nenv:\n  parameters:\n    - secret: prod/db\n      format: value\n      prefix: DB_\n",
            4,
            "`prefix` applies to `format: json` only",
        ),
        (
            "project: orange\nenv:\n  parameters:\n    - name: /a\n      version_stage: AWSPREVIOUS\n",
            4,
            "apply to `secret`, not to parameters",
        ),
        (
            "project: orange\nenv:\n  parameters:\n    - secret: prod/1db\n      format: value\n",
            4,
            "set `key:` to name the variable of secret prod/1db",
        ),
        (
            "project: orange\nenv:\n  parameters:\n    - secret: \"prod db\"\n",
            4,
            "secret name \"prod db\" contains",
        ),
        ("project: [orange\n", 1, ""),
        (
            "project: orange\ncompose:\n  ready:\n    web: {tcp: {port: 80}, exec: [true]}\n",
            4,
            "compose.ready.web: a ready probe has exactly one of `http`, `tcp` and `exec`",
        ),
        (
            "project: orange\ncompose:\n  ready:\n    web: {http: {port: 80, path: health}}\n",
            4,
            "must start with `/`",
        ),
    ];
    for (text, line, needle) in cases {
        let dir = Dir::new();
        dir.write("agent.yaml", text);
        let (msg, code) = error_of(&dir.main());
        assert_eq!(code, 2, "{text}");
        let file = dir.main().display().to_string();
        assert!(
            msg.contains(&format!("{file}:{line}:")),
            "expected line {line} for {text:?}, got: {msg}"
        );
        assert!(
            msg.contains(needle),
            "expected {needle:?} for {text:?}, got: {msg}"
        );
    }
}

#[test]
fn secrets_read_as_json_by_default() {
    let dir = Dir::new();
    dir.write(
        "agent.yaml",
        "project: orange\nenv:\n  parameters:\n    - secret: prod/orange/db\n      prefix: DB_\n    - secret: arn:aws:secretsmanager:ap-northeast-2:123456789012:secret:prod/orange/api-AbC123\n      format: value\n      version_stage: AWSPREVIOUS\n",
    );
    let settings = load(&dir.main()).unwrap();
    let sources = &settings.env.unwrap().sources;
    assert!(matches!(
        &sources[0].from,
        ParamSource::Secret { id, stage: None, format: SecretFormat::Json { prefix } }
            if id.as_str() == "prod/orange/db" && prefix == "DB_"
    ));
    assert!(matches!(
        &sources[1].from,
        ParamSource::Secret { stage: Some(stage), format: SecretFormat::Value { key }, .. }
            if stage.as_str() == "AWSPREVIOUS" && key.as_str() == "api"
    ));
    assert!(sources[0].env_file);
    dir.write(
        "agent.yaml",
        "project: orange\nenv:\n  parameters:\n    - name: /orange/prod/DB_PASSWORD\n      env_file: false\n",
    );
    let settings = load(&dir.main()).unwrap();
    assert!(!settings.env.unwrap().sources[0].env_file);
}

#[test]
fn what_only_the_whole_shows() {
    let dir = Dir::new();
    dir.write("agent.yaml", "env:\n  file: .env\n");
    let (msg, code) = error_of(&dir.main());
    assert_eq!(code, 2);
    assert!(msg.contains("`project` is required"), "{msg}");

    let dir = Dir::new();
    dir.write("agent.yaml", "project: orange\nenv:\n  file: .env\n");
    let (msg, _) = error_of(&dir.main());
    assert!(msg.contains("`env.parameters` is empty"), "{msg}");

    let dir = Dir::new();
    let (msg, code) = error_of(&dir.0.path().join("missing.yaml"));
    assert_eq!(code, 2);
    assert!(msg.contains("missing.yaml does not exist"), "{msg}");
}

#[test]
fn the_shipped_sample_is_valid() {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/agent.yaml");
    let s = load(&sample).unwrap();
    assert_eq!(s.project, "orange");
    assert_eq!(s.env.unwrap().sources.len(), 3);
}

#[test]
fn registries_take_a_parameter_password_or_ecr() {
    let dir = Dir::new();
    dir.write(
        "agent.yaml",
        "project: orange\nregistries:\n  - server: https://index.docker.io/\n    username: { parameter: /orange/dockerhub/username }\n    password: { parameter: /orange/dockerhub/token }\n  - server: 127.0.0.1:5000\n    username: tester\n    password: { parameter: /orange/registry/password }\n  - server: 123456789012.dkr.ecr.ap-northeast-2.amazonaws.com\n    ecr: true\n",
    );
    let s = load(&dir.main()).unwrap();
    assert_eq!(s.registries.len(), 3);
    assert_eq!(s.registries[0].server.as_str(), "docker.io");
    assert!(
        matches!(&s.registries[1].auth, raw::RegistryAuth::Password { username: raw::Credential::Literal(u), .. } if u == "tester")
    );
    assert_eq!(s.registries[2].auth, raw::RegistryAuth::Ecr);

    for (text, needle) in [
        (
            "  - server: r.example.com\n    username: u\n    password: hunter2\n",
            "must come from Parameter Store",
        ),
        (
            "  - server: r.example.com\n    ecr: true\n    username: u\n",
            "drop `username`",
        ),
        (
            "  - server: r.example.com\n    username: u\n",
            "needs `username` and `password`",
        ),
        (
            "  - server: \"bad host/\"\n    ecr: true\n",
            "not a registry host",
        ),
    ] {
        let dir = Dir::new();
        dir.write(
            "agent.yaml",
            &format!("project: orange\nregistries:\n{text}"),
        );
        let (msg, code) = error_of(&dir.main());
        assert_eq!(code, 2);
        assert!(msg.contains(":3:") && msg.contains(needle), "{msg}");
        assert!(!msg.contains("hunter2"), "{msg}");
    }
}

#[test]
fn a_registry_may_mirror_another_once() {
    let dir = Dir::new();
    dir.write(
        "agent.yaml",
        "project: orange\nregistries:\n  - server: 123456789012.dkr.ecr.eu-west-1.amazonaws.com\n    ecr: true\n    mirror_of: https://registry-1.docker.io/\n    prefix: docker-hub\n  - server: mirror.internal:5000\n    mirror_of: ghcr.io\n",
    );
    let s = load(&dir.main()).unwrap();
    let hub = s.registries[0].mirror.as_ref().unwrap();
    assert_eq!(s.registries[0].auth, raw::RegistryAuth::Ecr);
    assert_eq!(
        (hub.of.as_str(), hub.prefix.as_ref().map(|p| p.as_str())),
        ("docker.io", Some("docker-hub"))
    );
    // A mirror may take anonymous pulls; a registry that is only credentials may not be empty.
    assert_eq!(s.registries[1].auth, raw::RegistryAuth::Anonymous);
    assert_eq!(s.registries[1].mirror.as_ref().unwrap().prefix, None);

    // Each refused with exit 2, its file, line and key.
    for (text, at, needle) in [
        (
            "  - server: r.example.com\n    ecr: true\n    prefix: hub\n",
            ":3:",
            "it needs `mirror_of`",
        ),
        (
            "  - server: docker.io\n    ecr: true\n    mirror_of: index.docker.io\n",
            ":3:",
            "names the registry itself",
        ),
        (
            "  - server: r.example.com\n    ecr: true\n    mirror_of: docker.io\n    prefix: /Hub/\n",
            ":6:",
            "registries[0].prefix: \"/Hub/\" is not a repository prefix",
        ),
        (
            "  - server: r.example.com\n    ecr: true\n    mirror_of: \"not a host\"\n",
            ":5:",
            "registries[0].mirror_of: \"not a host\" is not a registry host",
        ),
        (
            "  - server: r.example.com\n    ecr: true\n    mirror_of: docker.io\n  - server: s.example.com\n    ecr: true\n    mirror_of: docker.io\n",
            ":8:",
            "registries[1].mirror_of: registries[0] already mirrors docker.io",
        ),
        (
            "  - server: r.example.com\n    ecr: true\n    mirror_of: docker.io\n  - server: s.example.com\n    ecr: true\n    mirror_of: r.example.com\n",
            ":8:",
            "registries[1].mirror_of: r.example.com is itself a mirror",
        ),
        (
            "  - server: r.example.com\n    ecr: true\n    mirror: docker.io\n",
            ":5:",
            "unknown field `mirror`",
        ),
    ] {
        let dir = Dir::new();
        dir.write(
            "agent.yaml",
            &format!("project: orange\nregistries:\n{text}"),
        );
        let (msg, code) = error_of(&dir.main());
        assert_eq!(code, 2, "{msg}");
        assert!(msg.contains(at) && msg.contains(needle), "{text}: {msg}");
    }
}

#[test]
fn lifecycle_hook_defaults_to_auto_and_refuses_what_it_cannot_use() {
    let dir = Dir::new();
    dir.write("agent.yaml", "project: orange\n");
    let s = load(&dir.main()).unwrap();
    assert_eq!(s.lifecycle.hook, raw::HookChoice::Auto);
    assert_eq!(s.lifecycle.heartbeat_interval, defaults::HEARTBEAT_INTERVAL);
    assert_eq!(s.lifecycle.unhealthy_after, None);
    assert_eq!(s.lifecycle.abandon_after, defaults::ABANDON_AFTER);

    for (text, hook) in [
        ("hook: off", raw::HookChoice::Off),
        ("hook: false", raw::HookChoice::Off),
        ("hook: auto", raw::HookChoice::Auto),
        (
            "hook: orange-launch/v2",
            raw::HookChoice::Named("orange-launch/v2".into()),
        ),
    ] {
        let dir = Dir::new();
        dir.write(
            "agent.yaml",
            &format!("project: orange\nlifecycle:\n  {text}\n"),
        );
        assert_eq!(load(&dir.main()).unwrap().lifecycle.hook, hook, "{text}");
    }

    let dir = Dir::new();
    dir.write(
        "agent.yaml",
        "project: orange\nlifecycle:\n  heartbeat_interval: 30s\n  unhealthy_after: 10m\n  abandon_after: 2\n",
    );
    let s = load(&dir.main()).unwrap();
    assert_eq!(s.lifecycle.abandon_after, 2);
    assert_eq!(s.lifecycle.heartbeat_interval.as_secs(), 30);
    assert_eq!(s.lifecycle.unhealthy_after.map(|d| d.as_secs()), Some(600));

    for (text, needle) in [
        (
            "  hook: \"my hook\"\n",
            "not `auto`, `off` or a lifecycle hook name",
        ),
        ("  hook: true\n", "ambiguous"),
        (
            "  heartbeat_interval: 0\n",
            "lifecycle.heartbeat_interval: must be at least 5s",
        ),
        (
            "  unhealthy_after: 0\n",
            "lifecycle.unhealthy_after: must be longer than 0",
        ),
        ("  heartbeat_interval: 60\n", "has no unit"),
        (
            "  abandon_after: 0\n",
            "lifecycle.abandon_after: must be at least 1",
        ),
        ("  abandon_after: -1\n", "abandon_after"),
        ("  timeout: 5m\n", "unknown field `timeout`"),
    ] {
        let dir = Dir::new();
        dir.write(
            "agent.yaml",
            &format!("project: orange\nlifecycle:\n{text}"),
        );
        let (msg, code) = error_of(&dir.main());
        assert_eq!(code, 2, "{text}");
        assert!(msg.contains(":3:") && msg.contains(needle), "{text}: {msg}");
    }
}

/// Seven mistakes in two files: one run names all seven, each with its file, line and key.
#[test]
fn every_problem_is_listed_in_one_run() {
    let dir = Dir::new();
    let main = dir.write(
        "agent.yaml",
        "project: orange\nworkdir: relative/dir\nenv:\n  mode: 999\n  parameters:\n    - name: /a\n      format: yaml\n    - name: /ok\n      formt: dotenv\nfiles:\n  - source: s3://bucket-a/a.yml\n    path: ../../etc/passwd\ncompose:\n  pull: sometimes\n  pull_timeout: 0s\n",
    );
    let fragment = dir.write(
        "agent.d/10-x.yaml",
        "lifecycle:\n  abandon_after: 0\nwatch:\n  interval: soon\n",
    );
    let (settings, problems) = check(&main).unwrap();
    let main = main.display().to_string();
    let fragment = fragment.display().to_string();
    let expected = [
        format!("{main}:2:"),
        format!("{main}:4:"),
        format!("{main}:7:"),
        format!("{main}:9:"),
        format!("{main}:14:"),
        format!("{main}:15:"),
        format!("{fragment}:2:"),
        format!("{fragment}:4:"),
    ];
    for at in &expected {
        assert!(
            problems.iter().any(|p| p.starts_with(at.as_str())),
            "{at} in {problems:#?}"
        );
    }
    for key in [
        "workdir",
        "env.mode",
        "env.parameters[0].format",
        "env.parameters[1].formt",
        "compose.pull",
        "watch.interval",
        "compose.pull_timeout",
        "lifecycle.abandon_after",
        "files[0].path",
    ] {
        assert!(
            problems.iter().any(|p| p.contains(key)),
            "{key} in {problems:#?}"
        );
    }
    assert_eq!(problems.len(), 9, "{problems:#?}");
    assert_eq!(settings.project, "orange", "what is valid is read");
    let (msg, code) = error_of(dir.0.path().join("agent.yaml").as_path());
    assert_eq!(code, 2);
    assert!(msg.contains("9 problems:"), "{msg}");
}

fn with_tags(tags: &[(&str, &str)]) -> Overrides {
    Overrides {
        tags: tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Overrides::default()
    }
}

const TAGGED: &str =
    "project: orange\nenv:\n  parameters:\n    - name: /orange/prod/env\n      format: dotenv\n";

/// Tags count for nothing unless the baked config says so; when it does, only for its
/// allow-list; and never for whom the agent talks to or where it writes, whatever the list says.
/// A tag that is not applied is listed with its reason, never a problem of the config.
#[test]
fn tags_count_only_as_far_as_the_baked_config_lets_them() {
    let attack = [
        ("aws.endpoint_url", "https://attacker.example"),
        ("env.file", "/etc/cron.d/x"),
        ("env.parameters.0.name", "/other/app/env"),
        ("watch.interval", "30s"),
    ];
    // (the baked config's `overrides`, what the tags leave applied)
    let table: [(&str, &[&str]); 5] = [
        ("", &[]),
        ("overrides:\n  tags: false\n", &[]),
        (
            "overrides:\n  tags: true\n",
            &["env.parameters.0.name", "watch.interval"],
        ),
        (
            "overrides:\n  tags: [watch.interval]\n",
            &["watch.interval"],
        ),
        (
            "overrides:\n  tags: [env.parameters]\n",
            &["env.parameters.0.name"],
        ),
    ];
    for (baked, applied) in table {
        let dir = Dir::new();
        dir.write("agent.yaml", &format!("{TAGGED}{baked}"));
        let (s, problems) = check_with(&dir.main(), &with_tags(&attack)).unwrap();
        assert_eq!(problems, Vec::<String>::new(), "{baked}");
        assert_eq!(s.aws.endpoint_url, None, "{baked}");
        assert!(s.env.as_ref().unwrap().path.ends_with(".env"), "{baked}");
        let tagged: Vec<&str> = s
            .origins
            .iter()
            .filter(|(_, layer)| layer.to_string_lossy().starts_with("tag "))
            .map(|(key, _)| key.as_str())
            .collect();
        assert_eq!(tagged, applied, "{baked}: {:#?}", s.ignored_tags);
        assert_eq!(
            s.ignored_tags.len(),
            attack.len() - applied.len(),
            "{baked}: {:#?}",
            s.ignored_tags
        );
        for (key, _) in attack {
            let named = s
                .ignored_tags
                .iter()
                .any(|i| i.starts_with(&format!("tag kicky-agent:{key}: ")));
            assert_eq!(named, !applied.contains(&key), "{baked}: {key}");
        }
        let endpoint = s
            .ignored_tags
            .iter()
            .find(|i| i.contains("aws.endpoint_url"))
            .unwrap();
        let want = match baked {
            "" | "overrides:\n  tags: false\n" => "tags are off",
            _ => "can never be set by a tag",
        };
        assert!(endpoint.contains(want), "{baked}: {endpoint}");
    }
}

/// A list that names what no tag may set is the baked config's mistake: exit 2, its line.
#[test]
fn an_allow_list_cannot_open_what_tags_never_set() {
    for (list, needle) in [
        (
            "[aws.endpoint_url]",
            "`aws.endpoint_url` can never be set by a tag",
        ),
        (
            "[env]",
            "`env` can never be set by a tag (it includes or is part of `env.file`)",
        ),
        ("['*']", "can never be set by a tag"),
        ("[registries.0.server]", "part of `registries`"),
        ("[compose.secrets_dir]", "can never be set"),
        ("[Watch.Interval]", "is not a dotted key"),
        (
            "[watch]",
            "`watch` can never be set by a tag (it includes or is part of `watch.marker`)",
        ),
        ("yes please", "`true`, `false` or a list of keys"),
    ] {
        let dir = Dir::new();
        dir.write(
            "agent.yaml",
            &format!("{TAGGED}overrides:\n  tags: {list}\n"),
        );
        let (msg, code) = error_of(&dir.main());
        assert_eq!(code, 2, "{list}: {msg}");
        assert!(
            msg.contains(":7:") && msg.contains("overrides.tags"),
            "{list}: {msg}"
        );
        assert!(msg.contains(needle), "{list}: {msg}");
    }
}

/// A tag whose value would make the config wrong is ignored; the config stands as the files and
/// the user data made it.
#[test]
fn a_tag_with_a_bad_value_is_ignored_not_fatal() {
    let dir = Dir::new();
    dir.write(
        "agent.yaml",
        &format!("{TAGGED}watch:\n  interval: 20s\noverrides:\n  tags: true\n"),
    );
    for (value, why) in [
        ("1s", "must be at least 5s"),
        ("soon", "watch.interval"),
        (
            "http://AKIAIOSFODNN7EXAMPLE:x@h",
            "looks like an AWS access key id",
        ),
    ] {
        let (s, problems) =
            check_with(&dir.main(), &with_tags(&[("watch.interval", value)])).unwrap();
        assert_eq!(problems, Vec::<String>::new(), "{value}");
        assert_eq!(s.watch_interval.as_secs(), 20, "{value}");
        assert_eq!(s.ignored_tags.len(), 1, "{value}");
        let ignored = &s.ignored_tags[0];
        assert!(
            ignored.starts_with("tag kicky-agent:watch.interval: ") && ignored.contains(why),
            "{value}: {ignored}"
        );
        assert!(!ignored.contains("AKIA"), "{ignored}");
    }
}

/// User data is root's equal, but what only the baked config may set stays the baked config's.
#[test]
fn user_data_cannot_set_what_only_the_baked_config_sets() {
    let dir = Dir::new();
    dir.write("agent.yaml", TAGGED);
    for doc in [
        "#kicky-agent\noverrides:\n  tags: true\n",
        "#kicky-agent\noverrides:\n  user_data: false\n",
        "#kicky-agent\ncompose:\n  policy:\n    allow:\n      web: {privileged: true}\n",
        // Who signs what runs is the AMI's: user data may point at a store, not trust a key.
        "#kicky-agent\nrelease:\n  store: s3://amzn-s3-demo-bucket/x/\n  public_key: other\n",
    ] {
        let overrides = Overrides {
            user_data: Some(doc.into()),
            ..Overrides::default()
        };
        let (_, problems) = check_with(&dir.main(), &overrides).unwrap();
        assert!(
            problems.iter().any(|p| p.starts_with("user data: ")
                && p.contains("can be set in the baked config only")),
            "{doc}: {problems:#?}"
        );
    }
}

/// `release.public_key` is an ECDSA P-256 public key in PEM, or a problem naming the key.
#[test]
fn a_release_public_key_is_checked_when_read() {
    let dir = Dir::new();
    for (key, ok) in [
        ("not a key", false),
        (
            "-----BEGIN PUBLIC KEY-----\n    AAAA\n    -----END PUBLIC KEY-----",
            false,
        ),
    ] {
        dir.write(
            "agent.yaml",
            &format!("project: o\nrelease:\n  store: s3://amzn-s3-demo-bucket/x/\n  public_key: |\n    {key}\n"),
        );
        let (_, problems) = check_with(&dir.main(), &Overrides::default()).unwrap();
        assert_eq!(
            problems.iter().any(|p| p.contains("release.public_key")),
            !ok,
            "{key}: {problems:#?}"
        );
    }
}

/// `release.pin` is a release id, from the baked config or the launch template's user data (never
/// a tag: `release` is never taken from tags); empty is none.
#[test]
fn a_release_pin_is_a_release_id() {
    let dir = Dir::new();
    for (pin, problem, want) in [
        (
            "20261207T163000123Z-3f9a1c",
            false,
            Some("20261207T163000123Z-3f9a1c"),
        ),
        ("\"\"", false, None),
        ("", false, None),
        ("latest", true, None),
        ("../20261207T163000123Z-3f9a1c", true, None),
        ("20261207T163000123Z-3F9A1C", true, None),
    ] {
        dir.write(
            "agent.yaml",
            "project: o\nrelease:\n  store: s3://amzn-s3-demo-bucket/x/\n",
        );
        let overrides = Overrides {
            user_data: Some(format!("#kicky-agent\nrelease:\n  pin: {pin}\n")),
            ..Overrides::default()
        };
        let (settings, problems) = check_with(&dir.main(), &overrides).unwrap();
        assert_eq!(
            problems.iter().any(|p| p.contains("release.pin")),
            problem,
            "{pin}: {problems:#?}"
        );
        if !problem {
            let release = settings.release.expect("a release store");
            assert_eq!(release.pin.as_deref(), want, "{pin}");
        }
    }
}

/// Durations have floors, in every layer: a watch every millisecond is a fleet hammering SSM.
#[test]
fn durations_have_floors() {
    for (text, want) in [
        (
            "watch:\n  interval: 1s\n",
            Some("watch.interval: must be at least 5s"),
        ),
        (
            "watch:\n  interval: 4999ms\n",
            Some("watch.interval: must be at least 5s"),
        ),
        ("watch:\n  interval: 5s\n", None),
        ("watch:\n  interval: 0s\n", None),
        (
            "watch:\n  full_every: 10s\n",
            Some("watch.full_every: must be at least 1m"),
        ),
        (
            "watch:\n  retry_failed_after: 1s\n",
            Some("watch.retry_failed_after: must be at least 1m"),
        ),
        (
            "lifecycle:\n  heartbeat_interval: 0s\n",
            Some("lifecycle.heartbeat_interval: must be at least 5s"),
        ),
        ("lifecycle:\n  heartbeat_interval: 5s\n", None),
    ] {
        let dir = Dir::new();
        dir.write("agent.yaml", &format!("project: orange\n{text}"));
        let (_, problems) = check(&dir.main()).unwrap();
        match want {
            Some(want) => assert!(
                problems.len() == 1 && problems[0].contains(want) && problems[0].contains(":3:"),
                "{text}: {problems:#?}"
            ),
            None => assert_eq!(problems, Vec::<String>::new(), "{text}"),
        }
    }
}
