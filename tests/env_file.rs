//! `kicky-agent sync` and `plan` writing the env file from moto's Parameter Store, run as the
//! binary an instance runs: credentials and region from the IMDSv2 layer of the rig.

use crate::common;

use std::collections::HashMap;

use aws_sdk_ssm::types::ParameterType;
use common::{compose_v2_env, inode_of, mode_of, python_dotenv, unique_prefix, Rig, Scratch};

/// Values chosen to break naive env file writers.
const NASTY: &[(&str, &str)] = &[
    ("NEWLINES", "first line\nsecond line\n"),
    ("QUOTES", "it's a \"quoted\" value"),
    ("BACKSLASHES", "C:\\temp\\new\\"),
    ("DOLLARS", "pa$$w0rd-$HOME-${HOME}-${X:-y}"),
    ("HASH", "value # not a comment"),
    ("EQUALS", "a=b==c"),
    ("SPACES", "  padded value  "),
    ("KOREAN", "비밀번호-값-한국어"),
    ("MIXED", "'\"\\$\n#=한 \\'"),
];

/// python-dotenv (the independent reader) has no escape for `$` inside double quotes; compose v2
/// reads `\$` there as `$`. Values that need double quotes and hold a `$` differ between them.
const PYTHON_DOTENV_DIFFERS: &[&str] = &["MIXED"];

const DOCUMENT: &str = "# the whole .env, as the seed stack stores it\n\
DB_URL=jdbc:postgresql://db:5432/orange?ssl=true\n\
LOKI_URL=http://loki:3100\n\
DOC_SECRET='doc-secret-value-1f2e'\n\
EMPTY=\n\
QUOTED=\"multi\\nline $$dollar\"\n\
REFERS=${LOKI_URL}/push\n\
OVERRIDDEN=from-document\n";

async fn seed(rig: &Rig, prefix: &str) {
    rig.put(
        &format!("{prefix}/env"),
        DOCUMENT,
        ParameterType::SecureString,
    )
    .await;
    for (key, value) in NASTY {
        rig.put(
            &format!("{prefix}/vars/{key}"),
            value,
            ParameterType::SecureString,
        )
        .await;
    }
    // More than one page of GetParametersByPath (moto pages by 10), of every type.
    for i in 0..12 {
        let kind = [
            ParameterType::String,
            ParameterType::StringList,
            ParameterType::SecureString,
        ][i % 3]
            .clone();
        rig.put(
            &format!("{prefix}/vars/FILLER_{i:02}"),
            &format!("filler,{i}"),
            kind,
        )
        .await;
    }
    rig.put(
        &format!("{prefix}/vars/OVERRIDDEN"),
        "from-path",
        ParameterType::String,
    )
    .await;
    // More names than one GetParameters call takes.
    for i in 0..11 {
        rig.put(
            &format!("{prefix}/single/S{i:02}"),
            &format!("single-{i}"),
            ParameterType::SecureString,
        )
        .await;
    }
    rig.put(
        &format!("{prefix}/SERVER_SECRET"),
        "s3rver-secret-77aa",
        ParameterType::SecureString,
    )
    .await;
}

fn config(prefix: &str) -> String {
    let singles: String = (0..11)
        .map(|i| format!("    - name: {prefix}/single/S{i:02}\n"))
        .collect();
    format!(
        "project: orange\nworkdir: {{workdir}}\naws:\n  endpoint_url: {{moto}}\nenv:\n  parameters:\n\
         \x20   - name: {prefix}/env\n      format: dotenv\n\
         \x20   - path: {prefix}/vars/\n      recursive: true\n\
         {singles}\
         \x20   - name: {prefix}/SERVER_SECRET\n      key: SERVER_SECRET\n"
    )
}

fn expected() -> HashMap<String, String> {
    let mut want: HashMap<String, String> = NASTY
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for (k, v) in [
        ("DB_URL", "jdbc:postgresql://db:5432/orange?ssl=true"),
        ("LOKI_URL", "http://loki:3100"),
        ("DOC_SECRET", "doc-secret-value-1f2e"),
        ("EMPTY", ""),
        ("QUOTED", "multi\nline $dollar"),
        ("REFERS", "http://loki:3100/push"),
        ("OVERRIDDEN", "from-path"),
        ("SERVER_SECRET", "s3rver-secret-77aa"),
    ] {
        want.insert(k.into(), v.into());
    }
    for i in 0..12 {
        want.insert(format!("FILLER_{i:02}"), format!("filler,{i}"));
    }
    for i in 0..11 {
        want.insert(format!("S{i:02}"), format!("single-{i}"));
    }
    want
}

fn secrets() -> Vec<&'static str> {
    // The last two are the role credentials moto's instance metadata hands out.
    vec![
        "doc-secret-value-1f2e",
        "s3rver-secret-77aa",
        "비밀번호",
        "pa$$w0rd",
        "padded value",
        "second line",
        "test-secret-key",
        "test-session-token",
    ]
}

fn read_back(path: &std::path::Path) -> HashMap<String, String> {
    let text = std::fs::read_to_string(path).unwrap();
    kicky_agent::envfile::parse(&text, &|_| None)
        .unwrap()
        .into_iter()
        .collect()
}

#[tokio::test]
async fn sync_writes_every_source_kind_exactly_and_prints_no_secret() {
    let rig = Rig::get();
    let prefix = unique_prefix("all-kinds");
    seed(&rig, &prefix).await;
    let s = Scratch::new();
    s.config(&rig, &config(&prefix));

    let run = s.agent(&rig, &["-vvv", "sync"]);
    run.expect(0);
    run.assert_free_of(&secrets());
    assert!(
        run.stdout.contains("written (40 variables)"),
        "{}",
        run.stdout
    );

    let env = s.workdir().join(".env");
    assert_eq!(mode_of(&env), 0o600);
    let want = expected();
    assert_same!(
        read_back(&env),
        want,
        "the agent's own reader (compose-go rules)"
    );

    let independent = python_dotenv(&rig, &env);
    for (key, value) in &want {
        if PYTHON_DOTENV_DIFFERS.contains(&key.as_str()) {
            continue;
        }
        assert_same!(
            independent.get(key),
            Some(value),
            "python-dotenv reads {key} differently"
        );
    }
    assert_eq!(independent.len(), want.len());
    // compose v2 itself, reading the file the agent wrote as its `--env-file`.
    let compose = compose_v2_env(&env, want.keys());
    for (key, value) in &want {
        assert_same!(
            compose.get(key),
            Some(value),
            "docker compose v2 reads {key} differently"
        );
    }

    // A config with only env: nothing but the env file is written.
    let entries: Vec<_> = std::fs::read_dir(s.workdir())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries, vec![".env"]);
}

#[tokio::test]
async fn an_unchanged_sync_leaves_the_file_untouched_and_a_change_is_planned_then_written() {
    let rig = Rig::get();
    let prefix = unique_prefix("unchanged");
    rig.put(
        &format!("{prefix}/A"),
        "alpha-value",
        ParameterType::SecureString,
    )
    .await;
    rig.put(&format!("{prefix}/B"), "bravo-value", ParameterType::String)
        .await;
    let s = Scratch::new();
    s.config(
        &rig,
        &format!(
            "project: orange\nworkdir: {{workdir}}\naws:\n  endpoint_url: {{moto}}\n\
             env:\n  file: conf/app.env\n  mode: \"0640\"\n  parameters:\n    - path: {prefix}\n"
        ),
    );
    let env = s.workdir().join("conf/app.env");
    s.agent(&rig, &["sync"]).expect(0);
    assert_eq!(mode_of(&env), 0o640);
    let before = inode_of(&env);
    std::thread::sleep(std::time::Duration::from_millis(20));

    let run = s.agent(&rig, &["sync"]);
    run.expect(0);
    assert!(
        run.stdout.contains("unchanged (2 variables)"),
        "{}",
        run.stdout
    );
    assert_eq!(
        inode_of(&env),
        before,
        "an unchanged sync must not rewrite the file"
    );

    let plan = s.agent(&rig, &["plan"]);
    plan.expect(0);
    assert!(
        plan.stdout.contains("no change (2 variables)"),
        "{}",
        plan.stdout
    );

    rig.put(
        &format!("{prefix}/B"),
        "bravo-changed",
        ParameterType::String,
    )
    .await;
    rig.put(
        &format!("{prefix}/C"),
        "charlie-new",
        ParameterType::SecureString,
    )
    .await;
    let plan = s.agent(&rig, &["-vvv", "plan"]);
    plan.expect(0);
    assert!(
        plan.stdout.contains("+ C\n") && plan.stdout.contains("~ B\n"),
        "{}",
        plan.stdout
    );
    plan.assert_free_of(&["alpha-value", "bravo", "charlie-new"]);
    assert_eq!(inode_of(&env), before, "plan changes nothing");

    let json = s.agent(&rig, &["plan", "--json"]);
    json.expect(0);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["env"]["add"], serde_json::json!(["C"]));
    assert_eq!(v["env"]["change"], serde_json::json!(["B"]));
    json.assert_free_of(&["alpha-value", "bravo", "charlie-new"]);

    s.agent(&rig, &["sync"]).expect(0);
    assert_same!(read_back(&env)["B"], "bravo-changed");
    assert_same!(read_back(&env)["C"], "charlie-new");
}

#[tokio::test]
async fn a_failing_sync_leaves_the_previous_file_exactly_as_it_was() {
    let rig = Rig::get();
    let prefix = unique_prefix("failing");
    rig.put(
        &format!("{prefix}/vars/GOOD"),
        "good-secret-3c3c",
        ParameterType::SecureString,
    )
    .await;
    let s = Scratch::new();
    let base = format!("project: orange\nworkdir: {{workdir}}\naws:\n  endpoint_url: {{moto}}\nenv:\n  parameters:\n    - path: {prefix}/vars\n      recursive: true\n");
    s.config(&rig, &base);
    s.agent(&rig, &["sync"]).expect(0);
    let env = s.workdir().join(".env");
    let bytes = std::fs::read(&env).unwrap();
    let before = inode_of(&env);

    // A missing parameter: exit 1, named.
    s.config(
        &rig,
        &format!("{base}    - name: {prefix}/does-not-exist\n      key: MISSING\n"),
    );
    let run = s.agent(&rig, &["-vvv", "sync"]);
    run.expect(1);
    assert!(
        run.stderr
            .contains(&format!("parameter not found: {prefix}/does-not-exist")),
        "{}",
        run.stderr
    );
    run.assert_free_of(&["good-secret-3c3c"]);
    assert_same!(
        (std::fs::read(&env).unwrap(), inode_of(&env)),
        (bytes.clone(), before)
    );

    // A parameter whose name is not a variable name: exit 2, named, value not shown.
    rig.put(
        &format!("{prefix}/vars/nested/BAD"),
        "nested-secret-9d9d",
        ParameterType::SecureString,
    )
    .await;
    s.config(&rig, &base);
    let run = s.agent(&rig, &["-vvv", "sync"]);
    run.expect(2);
    assert!(
        run.stderr.contains(&format!(
            "parameter {prefix}/vars/nested/BAD: \"nested/BAD\""
        )),
        "{}",
        run.stderr
    );
    run.assert_free_of(&["good-secret-3c3c", "nested-secret-9d9d"]);
    assert_same!(
        (std::fs::read(&env).unwrap(), inode_of(&env)),
        (bytes.clone(), before)
    );
    rig.delete(&format!("{prefix}/vars/nested/BAD")).await;

    // A dotenv document that does not parse: exit 2, the parameter and line named.
    rig.put(
        &format!("{prefix}/doc"),
        "OK=1\nBROKEN='doc-secret-5e5e\n",
        ParameterType::SecureString,
    )
    .await;
    s.config(
        &rig,
        &format!("{base}    - name: {prefix}/doc\n      format: dotenv\n"),
    );
    let run = s.agent(&rig, &["-vvv", "sync"]);
    run.expect(2);
    assert!(
        run.stderr.contains(&format!(
            "parameter {prefix}/doc is not a valid dotenv document: line 2"
        )),
        "{}",
        run.stderr
    );
    run.assert_free_of(&["good-secret-3c3c", "doc-secret-5e5e"]);
    assert_same!(
        (std::fs::read(&env).unwrap(), inode_of(&env)),
        (bytes, before)
    );
}

#[tokio::test]
async fn region_and_credentials_come_from_instance_metadata() {
    let rig = Rig::get();
    let prefix = unique_prefix("imds");
    rig.put(
        &format!("{prefix}/TOKEN"),
        "imds-secret-4b4b",
        ParameterType::SecureString,
    )
    .await;
    let s = Scratch::new();
    // No aws.region and no credentials anywhere: both come from the IMDSv2 layer.
    s.config(
        &rig,
        &format!("project: orange\nworkdir: {{workdir}}\naws:\n  endpoint_url: {{moto}}\nenv:\n  parameters:\n    - name: {prefix}/TOKEN\n"),
    );
    let run = s.agent(&rig, &["-vvv", "sync"]);
    run.expect(0);
    run.assert_free_of(&["imds-secret-4b4b"]);
    assert_same!(
        read_back(&s.workdir().join(".env"))["TOKEN"],
        "imds-secret-4b4b"
    );

    // The SDK's own AWS_ENDPOINT_URL works as well as aws.endpoint_url.
    s.config(&rig, &format!("project: orange\nworkdir: {{workdir}}\nenv:\n  parameters:\n    - name: {prefix}/TOKEN\n"));
    s.agent_with(&rig, &["sync"], &[("AWS_ENDPOINT_URL", &rig.moto_url)])
        .expect(0);
}

#[tokio::test]
async fn invalid_config_exits_2_naming_file_line_and_key() {
    let rig = Rig::get();
    let s = Scratch::new();
    let path = s.config(
        &rig,
        "project: orange\nenv:\n  parameters:\n    - name: /a\n      formt: dotenv\n",
    );
    let run = s.agent(&rig, &["validate"]);
    run.expect(2);
    assert!(
        run.stderr.contains(&format!(
            "{}:5:7: env.parameters[0].formt: unknown field `formt`",
            path.display()
        )),
        "{}",
        run.stderr
    );
    // sync refuses the same config before touching anything.
    s.agent(&rig, &["sync"]).expect(2);
    assert!(!s.workdir().exists());

    s.config(
        &rig,
        "project: orange\nworkdir: {workdir}\nenv:\n  parameters:\n    - name: /a\n",
    );
    let run = s.agent(&rig, &["validate"]);
    run.expect(0);
    assert!(run.stdout.contains("config is valid"), "{}", run.stdout);
}
