//! What the agent promises about secrets, each against the real services: no value at any
//! verbosity, nothing a container can write reaching the host through the agent, no untrusted
//! text echoed raw, no leftovers, and the two more ways in (Secrets Manager, secrets as files).

use crate::common;

use common::stack::Stack;
use common::{files_under, Rig};

/// Every command, at the highest verbosity, on a compose project whose containers hold the
/// secrets in their environment: no value anywhere in the output.
#[tokio::test(flavor = "multi_thread")]
async fn no_secret_at_any_verbosity_with_a_compose_project() {
    let rig = Rig::get();
    let stack = Stack::new(&rig, "verbose").await;
    stack.env(&rig, "API_KEY=very-secret-1a2b3c\n").await;
    let compose = "services:\n  web:\n    image: {registry}/tester/web:1\n    environment:\n      API_KEY: ${API_KEY}\n";
    stack.compose(&rig, compose, "");
    let password = std::env::var("KICKY_RIG_REGISTRY_PASSWORD").unwrap();
    let secrets = ["very-secret-1a2b3c", password.as_str()];
    let (run, stack, rig) = stack.run(rig, &["-vvv", "sync"]).await;
    run.expect(0);
    run.assert_free_of(&secrets);
    assert!(run.stderr.len() > 10_000, "-vvv logged little: is it on?");
    stack.env(&rig, "API_KEY=very-secret-4d5e6f\n").await;
    let secrets = [
        "very-secret-1a2b3c",
        "very-secret-4d5e6f",
        password.as_str(),
    ];
    for args in [
        &["-vvv", "plan"][..],
        &["-vvv", "sync"][..],
        &["-vvv", "status"][..],
        &["-vvv", "render"][..],
        &["-vvv", "status", "--json"][..],
        &["-vvv", "plan", "--json"][..],
    ] {
        let run = tokio::task::block_in_place(|| stack.scratch.agent(&rig, args));
        run.assert_free_of(&secrets);
    }
}

/// A health check that prints its connection string when it fails carries the values into what
/// the agent says about the failure. A release that breaks the health check is rolled back, and
/// every value the agent fetched (a dotenv parameter, a Secrets Manager secret with a quote in it,
/// an `env_file: false` parameter mounted as a compose secret, a value used as the container's
/// name, the registry password) is masked, as it is and as JSON escapes it, in the sync's output
/// at `-vvv` and in JSON logs, `status`, `status --json`, the state file, the metrics, and the
/// daemon's log, `STATUS=` and `resync` answers. The output still says the health check failed,
/// and what it said, masked.
#[tokio::test(flavor = "multi_thread")]
async fn a_health_check_that_prints_its_secrets_reaches_no_output() {
    let rig = Rig::get();
    let stack = Stack::new(&rig, "printsecret").await;
    let p = stack.project.clone();
    let app_name = format!("pgapp-{:x}", fastrand::u64(..));
    let env = |mode: &str| format!("MODE={mode}\nDB_PASSWORD=pw-4f1e9c2b7a\nAPP_NAME={app_name}\n");
    stack.env(&rig, &env("ok")).await;
    let token = "tok-\"q\"-8d3a9e";
    rig.put_secret(&format!("kt/{p}/api"), token).await;
    rig.put(
        &format!("/kt/{p}/DB_KEY"),
        "key-0c7b5e3f1a",
        aws_sdk_ssm::types::ParameterType::SecureString,
    )
    .await;
    let shm = tempfile::tempdir_in("/dev/shm").expect("/dev/shm (a tmpfs)");
    let s = &stack.scratch;
    std::fs::create_dir_all(s.workdir()).unwrap();
    std::fs::write(
        s.workdir().join("docker-compose.yml"),
        format!(
            "services:\n  db:\n    image: {}/tester/web:1\n    container_name: ${{APP_NAME}}\n\
             \x20   environment:\n      MODE: ${{MODE}}\n      DB_PASSWORD: ${{DB_PASSWORD}}\n      API_TOKEN: ${{API_TOKEN}}\n\
             \x20   secrets: [db_key]\n    healthcheck:\n\
             \x20     test: [CMD-SHELL, 'test \"$$MODE\" = ok || {{ echo \"connecting to postgres://app:$$DB_PASSWORD@db as $$API_TOKEN with $$(cat /run/secrets/db_key)\" >&2; exit 1; }}']\n\
             \x20     interval: 1s\n      retries: 1\n\
             secrets:\n  db_key:\n    environment: DB_KEY\n",
            stack.registry
        ),
    )
    .unwrap();
    let metrics = s.path("metrics/kicky.prom");
    s.config(
        &rig,
        &format!(
            "project: {p}\nworkdir: {{workdir}}\naws:\n  endpoint_url: {{moto}}\n\
             env:\n  parameters:\n    - name: /kt/{p}/env\n      format: dotenv\n\
             \x20   - secret: kt/{p}/api\n      format: value\n      key: API_TOKEN\n\
             \x20   - name: /kt/{p}/DB_KEY\n      key: DB_KEY\n      env_file: false\n\
             compose:\n  pull: missing\n  healthy_timeout: 30s\n  secrets_dir: {}\n\
             registries:\n  - server: {}\n    username: tester\n    password: {{ parameter: /kt/{p}/registry }}\n\
             control_socket: {{scratch}}/run/control.sock\nmetrics:\n  textfile: {}\n\
             lifecycle:\n  hook: off\nwatch:\n  interval: 0s\n",
            shm.path().display(),
            stack.registry,
            metrics.display(),
        ),
    );
    let password = std::env::var("KICKY_RIG_REGISTRY_PASSWORD").unwrap();
    // Each value as it is and as JSON writes it (the state file, `--json`, JSON logs).
    let raw = [
        "pw-4f1e9c2b7a",
        token,
        "key-0c7b5e3f1a",
        app_name.as_str(),
        password.as_str(),
    ];
    let escaped: Vec<String> = raw
        .iter()
        .map(|v| {
            serde_json::to_string(v)
                .unwrap()
                .trim_matches('"')
                .to_string()
        })
        .collect();
    let secrets: Vec<&str> = raw
        .into_iter()
        .chain(escaped.iter().map(String::as_str))
        .collect();
    let free = |what: &str, text: &str| {
        for (i, secret) in secrets.iter().enumerate() {
            assert!(!text.contains(secret), "secret #{i} leaked into {what}");
        }
    };
    let told = |what: &str, text: &str| {
        assert!(
            text.contains("health check")
                && text.contains("postgres://app:<redacted>@db as <redacted> with <redacted>"),
            "{what} does not say what the health check said, masked"
        );
    };

    let (run, stack, rig) = stack.run(rig, &["-vvv", "sync"]).await;
    run.expect(0);
    free("a good sync's output", &run.all());
    // The next release breaks the health check: rolled back, the first container serves on.
    stack.env(&rig, &env("broken")).await;
    let (run, stack, rig) = stack.run(rig, &["-vvv", "sync"]).await;
    run.expect(1);
    free("the sync's output", &run.all());
    told("the sync's error", &run.stderr);
    assert!(run.stderr.contains("rolled back"), "no rollback");
    let (run, stack, rig) = stack
        .run(rig, &["--log-format", "json", "-v", "sync"])
        .await;
    run.expect(1);
    free("the sync's JSON log", &run.all());
    told("the sync's JSON log", &run.stderr);
    let (status, stack, rig) = stack.run(rig, &["status"]).await;
    status.expect(1);
    free("status", &status.all());
    told("status", &status.stdout);
    assert!(
        status.stdout.contains("<redacted> (service db): running"),
        "status names the container, masked"
    );
    let (status, stack, rig) = stack.run(rig, &["status", "--json"]).await;
    status.expect(1);
    free("status --json", &status.all());
    let json: serde_json::Value = serde_json::from_str(&status.stdout).expect("status --json");
    told(
        "status --json",
        json["last_sync"]["error"].as_str().unwrap_or_default(),
    );
    let state = std::fs::read_to_string(stack.scratch.path(&format!("state/{p}.json"))).unwrap();
    free("the state file", &state);
    let prom = std::fs::read_to_string(&metrics).unwrap();
    free("the metrics", &prom);
    assert!(
        prom.contains("service=\"db\",container=\"<redacted>\"} 1"),
        "the metrics name the container, masked"
    );

    // The daemon holds the release that failed and serves the last good one; a resync applies it
    // again and answers why it failed; its log holds it all.
    let s = &stack.scratch;
    let (daemon, notify) = common::systemd::start(s, &rig.imds_url, &[], &secrets);
    tokio::task::block_in_place(|| notify.wait_for("READY=1", std::time::Duration::from_secs(90)));
    let resync = tokio::task::block_in_place(|| s.agent(&rig, &["resync", "--timeout", "90s"]));
    resync.expect(1);
    free("the resync answer", &resync.all());
    told("the resync answer", &resync.stdout);
    drop(daemon);
    free("systemd's STATUS=", &notify.lines().join("\n"));
    let log = std::fs::read_to_string(s.path("daemon.log")).unwrap();
    free("the daemon's log", &log);
    told("the daemon's log", &log);
}

/// A container's health check output is hostile text: escape sequences are stripped wherever it
/// is shown (the error, `status`, the state file), and it never reaches systemd's `STATUS=`.
#[tokio::test(flavor = "multi_thread")]
async fn what_a_container_writes_is_never_echoed_raw() {
    let rig = Rig::get();
    let stack = Stack::new(&rig, "hostile").await;
    stack.env(&rig, "GREETING=hello\n").await;
    let compose = "\
services:
  web:
    image: {registry}/tester/web:1
    healthcheck:
      test: [CMD-SHELL, \"printf '\\\\033[2J\\\\033]0;owned\\\\007leak-7x7x'; exit 1\"]
      interval: 1s
      retries: 1
";
    let extra = format!(
        "control_socket: {}\nlifecycle:\n  hook: off\nwatch:\n  interval: 0s\n",
        stack.scratch.path("run/control.sock").display()
    );
    stack.compose(&rig, compose, &extra);
    let (run, stack, rig) = stack.sync(rig).await;
    run.expect(1);
    assert!(
        run.stderr.contains("leak-7x7x"),
        "the output is told, cleaned: {}",
        run.stderr
    );
    assert!(
        !run.all().contains('\x1b') && !run.all().contains('\x07'),
        "an escape reached the terminal"
    );
    let (status, stack, rig) = stack.run(rig, &["status"]).await;
    assert!(!status.all().contains('\x1b'));
    let state =
        std::fs::read_to_string(stack.scratch.path(&format!("state/{}.json", stack.project)))
            .unwrap();
    assert!(
        !state.contains("\\u001b") && !state.contains('\x1b'),
        "{state}"
    );

    // The daemon's first sync fails the same way: STATUS= says so without the container's words.
    let (_daemon, notify) = common::systemd::start(&stack.scratch, &rig.imds_url, &[], &[]);
    tokio::task::block_in_place(|| {
        notify.wait_for(
            "STATUS=first sync failed",
            std::time::Duration::from_secs(60),
        )
    });
    for line in notify.lines() {
        assert!(
            !line.contains("leak-7x7x") && !line.contains('\x1b'),
            "{line:?}"
        );
    }
}

/// Leftovers of a sync killed half-way (a temp file holding the env file's secrets, a copy of
/// the last good release) are gone after the next sync; a config anyone may write is warned
/// about; the agent runs without core dumps.
#[tokio::test(flavor = "multi_thread")]
async fn leftovers_go_and_the_process_keeps_its_memory() {
    let rig = Rig::get();
    let stack = Stack::new(&rig, "leftovers").await;
    stack.env(&rig, "API_KEY=left-secret-8e8e\n").await;
    stack.compose(
        &rig,
        "services:\n  web:\n    image: {registry}/tester/web:1\n",
        "",
    );
    let work = stack.scratch.workdir();
    let state = stack.scratch.path("state");
    std::fs::create_dir_all(state.join(".last-good.Kill3d")).unwrap();
    std::fs::write(
        state.join(".last-good.Kill3d/0"),
        "API_KEY=left-secret-8e8e",
    )
    .unwrap();
    std::fs::write(work.join("..env.Kill3d.tmp"), "API_KEY=left-secret-8e8e").unwrap();
    let (run, stack, rig) = stack.sync(rig).await;
    run.expect(0);
    assert!(
        !work.join("..env.Kill3d.tmp").exists(),
        "the temp file with secrets is gone"
    );
    assert!(
        !state.join(".last-good.Kill3d").exists(),
        "the old copy is gone"
    );

    // `plan` of a change writes nothing: not beside the env file, not in a temp directory.
    stack.env(&rig, "API_KEY=left-secret-9f9f\n").await;
    let tmp = stack.scratch.path("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let before: Vec<(std::path::PathBuf, Vec<u8>)> = files_under(&work)
        .into_iter()
        .chain(files_under(&state))
        .map(|f| (f.clone(), std::fs::read(&f).unwrap()))
        .collect();
    let plan = tokio::task::block_in_place(|| {
        let tmp = tmp.display().to_string();
        stack
            .scratch
            .agent_with(&rig, &["plan"], &[("TMPDIR", tmp.as_str())])
    });
    plan.expect(0);
    assert!(plan.stdout.contains("API_KEY"), "{}", plan.stdout);
    let after: Vec<(std::path::PathBuf, Vec<u8>)> = files_under(&work)
        .into_iter()
        .chain(files_under(&state))
        .map(|f| (f.clone(), std::fs::read(&f).unwrap()))
        .collect();
    assert!(before == after, "plan changed a file");
    assert!(files_under(&tmp).is_empty(), "plan wrote a temp file");

    let config = stack.scratch.path("etc/agent.yaml");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o666)).unwrap();
    let (validate, stack, rig) = stack.run(rig, &["validate"]).await;
    validate.expect(0);
    assert!(
        validate.stderr.contains("is writable by everyone"),
        "{}",
        validate.stderr
    );
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();

    // The daemon, as systemd runs it: no core dump, not dumpable.
    let mut daemon = stack.scratch.spawn_daemon(&rig.imds_url, &[]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", daemon.id())).unwrap();
    let _ = daemon.kill();
    let _ = daemon.wait();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    assert_eq!(core.split_whitespace().nth(4), Some("0"), "{core}");
    assert_eq!(core.split_whitespace().nth(5), Some("0"), "{core}");
}

/// A container that can write the directory of a fetched file puts a link to a host file in its
/// place (here: another project's env file, 0600). The next syncs replace the link with the
/// object's content; the host file is never read into the container's view, never chmod-ed.
#[tokio::test(flavor = "multi_thread")]
async fn a_link_where_a_fetched_file_was_is_replaced_not_followed() {
    use std::os::unix::fs::PermissionsExt;
    let rig = Rig::get();
    let stack = Stack::new(&rig, "linkswap").await;
    stack.env(&rig, "GREETING=hello\n").await;
    let bucket = rig.bucket("linkswap", false).await;
    rig.put_object(&bucket, "app.yml", b"app: 1\n".to_vec())
        .await;
    let files = format!(
        "files:\n  - source: s3://{bucket}/app.yml\n    path: conf/app.yml\n    mode: \"0644\"\n"
    );
    stack.compose(
        &rig,
        "services:\n  web:\n    image: {registry}/tester/web:1\n",
        &files,
    );
    let (run, stack, rig) = stack.sync(rig).await;
    run.expect(0);
    let managed = stack.scratch.workdir().join("conf/app.yml");
    let host = stack.scratch.path("other-project.env");
    std::fs::write(&host, "DB_PASSWORD=host-secret-9a9a\n").unwrap();
    std::fs::set_permissions(&host, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::remove_file(&managed).unwrap();
    std::os::unix::fs::symlink(&host, &managed).unwrap();
    let (run, _stack, _rig) = stack.sync(rig).await;
    run.expect(0);
    run.assert_free_of(&["host-secret-9a9a"]);
    assert_eq!(std::fs::read(&managed).unwrap(), b"app: 1\n");
    assert!(!std::fs::symlink_metadata(&managed)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        std::fs::read_to_string(&host).unwrap(),
        "DB_PASSWORD=host-secret-9a9a\n"
    );
    assert_eq!(
        std::fs::metadata(&host).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

/// The unit denies system calls (`SystemCallFilter=`), socket families
/// (`RestrictAddressFamilies=`) and writable-executable memory (`MemoryDenyWriteExecute=`). Traced
/// through a sync of a compose project, the daemon's first sync, a watch that finds a change, and
/// a resync through its control socket, and the operator's commands, the agent needs none of what
/// the unit denies.
#[tokio::test(flavor = "multi_thread")]
async fn the_agent_needs_nothing_its_unit_denies() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/kicky-agent.service"
    ))
    .unwrap();
    let rig = Rig::get();
    let stack = Stack::new(&rig, "traced").await;
    stack.env(&rig, "GREETING=hello\n").await;
    let compose = "services:\n  web:\n    image: {registry}/tester/web:1\n    environment:\n      GREETING: ${GREETING}\n";
    let extra = format!(
        "control_socket: {}\nlifecycle:\n  hook: off\nwatch:\n  interval: 5s\n  apply: report\n",
        stack.scratch.path("run/control.sock").display()
    );
    stack.compose(&rig, compose, &extra);
    let s = &stack.scratch;
    let traced = |name: &str| {
        let path = s.path(&format!("trace-{name}"));
        let wrapper = ["strace", "-f", "-qq", "-o", &path.display().to_string()].map(String::from);
        (path, wrapper)
    };
    let mut traces = Vec::new();
    tokio::task::block_in_place(|| {
        for args in [&["sync"][..], &["plan"], &["render"], &["validate"]] {
            let (path, wrapper) = traced(args[0]);
            let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
            s.agent_via(&rig, &wrapper, args).expect(0);
            traces.push(path);
        }

        let notify_socket = s.path("notify.sock");
        let notify = common::systemd::Notifications::listen(&notify_socket);
        let (path, wrapper) = traced("run");
        let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
        let daemon = s.spawn_agent_via(
            &rig,
            &wrapper,
            &["run"],
            &[
                ("NOTIFY_SOCKET", &notify_socket.display().to_string()),
                ("WATCHDOG_USEC", "2000000"),
            ],
        );
        notify.wait_for("READY=1", std::time::Duration::from_secs(120));
        // A change the watch finds (and, `apply: report`, leaves to the resync below).
        let changed = stack.env(&rig, "GREETING=hello again\n");
        tokio::runtime::Handle::current().block_on(changed);
        let pending = "STATUS=changes pending (watch.apply: report)";
        notify.wait_for(pending, std::time::Duration::from_secs(60));
        for args in [&["resync"][..], &["status"]] {
            let (path, wrapper) = traced(args[0]);
            let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
            s.agent_via(&rig, &wrapper, args).expect(0);
            traces.push(path);
        }
        // strace's first line is the agent's own execve: stop the agent, not strace.
        let trace = std::fs::read_to_string(&path).unwrap();
        let agent_pid = trace.split_whitespace().next().unwrap().to_string();
        common::command_ok("kill", &["-TERM", &agent_pid]);
        let run = daemon.wait();
        assert_eq!(run.status, 0, "the daemon's exit: {}", run.stderr);
        traces.push(path);
    });

    let (allowed, denied) = unit_syscall_filter(&unit);
    let families: Vec<&str> = unit_setting(&unit, "RestrictAddressFamilies")
        .split_whitespace()
        .collect();
    assert_eq!(unit_setting(&unit, "MemoryDenyWriteExecute"), "yes");
    for path in &traces {
        let trace = std::fs::read_to_string(path).unwrap();
        let mut calls = std::collections::BTreeSet::new();
        for line in trace.lines() {
            let Some((_pid, call)) = line.split_once(' ') else {
                continue;
            };
            let call = call.trim_start();
            let Some((name, args)) = call.split_once('(') else {
                continue;
            };
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                continue;
            }
            calls.insert(name.to_string());
            if name == "socket" || name == "socketpair" {
                let family = args.split(',').next().unwrap_or_default();
                assert!(
                    families.contains(&family),
                    "{}: a socket of family {family}, which the unit restricts: {line}",
                    path.display()
                );
            }
            let exec = args.contains("PROT_EXEC");
            assert!(
                !(exec
                    && (name == "mprotect"
                        || name == "pkey_mprotect"
                        || args.contains("PROT_WRITE"))),
                "{}: a mapping MemoryDenyWriteExecute= refuses: {line}",
                path.display()
            );
        }
        let refused: Vec<&String> = calls
            .iter()
            .filter(|c| !allowed.contains(*c) || denied.contains(*c))
            .collect();
        assert!(
            refused.is_empty(),
            "{}: system calls the unit's SystemCallFilter= refuses: {refused:?}",
            path.display()
        );
        assert!(
            calls.contains("execve"),
            "{}: was it traced?",
            path.display()
        );
    }
}

/// The value of a unit setting (the last one set).
fn unit_setting<'a>(unit: &'a str, key: &str) -> &'a str {
    unit.lines()
        .rev()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("the unit sets no {key}="))
}

/// The system calls the unit's `SystemCallFilter=` lines allow, and those they deny, each group
/// expanded by `systemd-analyze syscall-filter`.
fn unit_syscall_filter(
    unit: &str,
) -> (
    std::collections::BTreeSet<String>,
    std::collections::BTreeSet<String>,
) {
    let mut allowed = std::collections::BTreeSet::new();
    let mut denied = std::collections::BTreeSet::new();
    for value in unit
        .lines()
        .filter_map(|l| l.strip_prefix("SystemCallFilter="))
    {
        let (into, list) = match value.strip_prefix('~') {
            Some(list) => (&mut denied, list),
            None => (&mut allowed, value),
        };
        for item in list.split_whitespace() {
            expand_syscall_group(item, into);
        }
    }
    assert!(
        !allowed.is_empty(),
        "the unit has no SystemCallFilter= allow list"
    );
    (allowed, denied)
}

fn expand_syscall_group(item: &str, into: &mut std::collections::BTreeSet<String>) {
    if !item.starts_with('@') {
        into.insert(item.to_string());
        return;
    }
    let listing = common::command_ok("systemd-analyze", &["syscall-filter", item]);
    for line in listing.lines().skip(1) {
        let line = line.trim();
        if !line.is_empty() && !line.starts_with('#') {
            expand_syscall_group(line, into);
        }
    }
}

/// Secrets Manager as a source: a JSON secret with multi-line values (prefixed), a dotenv one, a
/// raw one by ARN and the same pinned to AWSPREVIOUS reach the env file exactly (as python-dotenv
/// reads it), with no value in the output; `status` names their versions; the daemon's watch sees
/// a new version (DescribeSecret, no value) and writes it.
#[tokio::test(flavor = "multi_thread")]
async fn secrets_manager_secrets_reach_the_env_file_and_are_watched_by_version() {
    let rig = Rig::get();
    let p = format!("kt/sm-{}", fastrand::u32(..));
    // (python-dotenv and compose agree on this one; tests/env_file.rs covers `$` and `\`.)
    let password = "s3cr3t-line1\ns3cr3t-line2 \"quoted\" 'single' #not-a-comment";
    let db = serde_json::json!({"PASSWORD": password, "PORT": 5432, "USER": "app"}).to_string();
    let db_version = rig.put_secret(&format!("{p}/db"), &db).await;
    rig.put_secret(
        &format!("{p}/env"),
        "MODE=prod\nGREETING='hello s3cr3t-world'\n",
    )
    .await;
    rig.put_secret(&format!("{p}/token"), "s3cr3t-tok-1").await;
    rig.put_secret(&format!("{p}/token"), "s3cr3t-tok-2").await;
    let arn = rig
        .secrets()
        .describe_secret()
        .secret_id(format!("{p}/token"))
        .send()
        .await
        .unwrap()
        .arn()
        .unwrap()
        .to_string();
    let s = common::Scratch::new();
    s.config(
        &rig,
        &format!(
            "project: sm\nworkdir: {{workdir}}\naws:\n  endpoint_url: {{moto}}\nenv:\n  parameters:\n\
             \x20   - secret: {p}/db\n      prefix: DB_\n\
             \x20   - secret: {p}/env\n      format: dotenv\n\
             \x20   - secret: {arn}\n      format: value\n      key: TOKEN\n\
             \x20   - secret: {p}/token\n      format: value\n      key: OLD_TOKEN\n      version_stage: AWSPREVIOUS\n\
             watch:\n  interval: 5s\nlifecycle:\n  hook: off\ncontrol_socket: {{scratch}}/control.sock\n"
        ),
    );
    let values = ["s3cr3t-line", "s3cr3t-world", "s3cr3t-tok"];
    let run = tokio::task::block_in_place(|| s.agent(&rig, &["-vvv", "sync"]));
    run.expect(0);
    run.assert_free_of(&values);

    let env_path = s.workdir().join(".env");
    let env = common::python_dotenv(&rig, &env_path);
    let want = [
        ("DB_PASSWORD", password),
        ("DB_PORT", "5432"),
        ("DB_USER", "app"),
        ("MODE", "prod"),
        ("GREETING", "hello s3cr3t-world"),
        ("TOKEN", "s3cr3t-tok-2"),
        ("OLD_TOKEN", "s3cr3t-tok-1"),
    ];
    for (key, value) in want {
        assert!(
            env.get(key).map(String::as_str) == Some(value),
            "{key} in the env file differs from the secret"
        );
    }
    assert_eq!(env.len(), want.len());

    let status = tokio::task::block_in_place(|| s.agent(&rig, &["status"]));
    status.assert_free_of(&values);
    assert!(
        status
            .stdout
            .contains(&format!("secret {p}/db  version {db_version}")),
        "{}",
        status.stdout
    );
    assert!(status
        .stdout
        .contains(&format!("secret {p}/token@AWSPREVIOUS  version")));

    // The daemon's watch: a new version of the JSON secret is written within a few ticks.
    let notify_socket = s.path("notify.sock");
    let notify = common::systemd::Notifications::listen(&notify_socket);
    let mut daemon = s.spawn_agent(
        &rig,
        &["run"],
        &[("NOTIFY_SOCKET", &notify_socket.display().to_string())],
    );
    tokio::task::block_in_place(|| notify.wait_for("READY=1", std::time::Duration::from_secs(60)));
    let rotated = serde_json::json!({"PASSWORD": "s3cr3t-rotated", "PORT": 5432, "USER": "app"});
    rig.put_secret(&format!("{p}/db"), &rotated.to_string())
        .await;
    let started = std::time::Instant::now();
    while !std::fs::read_to_string(&env_path)
        .unwrap()
        .contains("s3cr3t-rotated")
    {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "the watch did not apply the secret's new version"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    daemon.kill();
    let run = daemon.wait();
    assert!(
        run.stderr
            .contains(&format!("secret {p}/db: version {db_version} -> ")),
        "the watch names the change by version: {}",
        run.stderr
    );
    run.assert_free_of(&["s3cr3t-rotated", "s3cr3t-line", "s3cr3t-tok"]);
}

/// The compose file's `secrets:` as docker compose has them, written by the agent on a tmpfs and
/// mounted read-only: the value readable in the container at its path with the owner and mode
/// asked, and nowhere else: not in `docker inspect`, not in the env file (the parameter says
/// `env_file: false`), not on disk, not in the output. A changed value recreates the service that
/// uses it and no other, and the old file goes.
#[tokio::test(flavor = "multi_thread")]
async fn compose_secrets_are_files_on_a_tmpfs_and_nowhere_else() {
    let rig = Rig::get();
    let stack = Stack::new(&rig, "secretfiles").await;
    let p = stack.project.clone();
    stack.env(&rig, "GREETING=hello\n").await;
    rig.put(
        &format!("/kt/{p}/DB_PASSWORD"),
        "s3cr3t-db-1",
        aws_sdk_ssm::types::ParameterType::SecureString,
    )
    .await;
    let shm = tempfile::tempdir_in("/dev/shm").expect("/dev/shm (a tmpfs)");
    let s = &stack.scratch;
    std::fs::create_dir_all(s.workdir()).unwrap();
    std::fs::write(s.workdir().join("tls.pem"), "s3cr3t-tls-key\n").unwrap();
    std::fs::write(
        s.workdir().join("docker-compose.yml"),
        format!(
            "services:\n  web:\n    image: {}/tester/web:1\n    environment:\n      GREETING: ${{GREETING}}\n\
             \x20   secrets:\n      - db_password\n      - source: tls\n        target: /etc/tls/key.pem\n        uid: \"1000\"\n        gid: \"1001\"\n        mode: 0440\n\
             \x20 other:\n    image: {}/tester/web:1\n    secrets: [tls]\n\
             secrets:\n  db_password:\n    environment: DB_PASSWORD\n  tls:\n    file: ./tls.pem\n",
            stack.registry, stack.registry
        ),
    )
    .unwrap();
    s.config(
        &rig,
        &format!(
            "project: {p}\nworkdir: {{workdir}}\naws:\n  endpoint_url: {{moto}}\n\
             env:\n  parameters:\n    - name: /kt/{p}/env\n      format: dotenv\n    - name: /kt/{p}/DB_PASSWORD\n      env_file: false\n\
             compose:\n  pull: missing\n  healthy_timeout: 30s\n  secrets_dir: {}\n\
             registries:\n  - server: {}\n    username: tester\n    password: {{ parameter: /kt/{p}/registry }}\n",
            shm.path().display(),
            stack.registry
        ),
    );
    let values = ["s3cr3t-db", "s3cr3t-tls"];
    let (run, stack, rig) = stack.sync(rig).await;
    run.expect(0);
    run.assert_free_of(&values);

    let web = stack.container("web");
    let in_container = |container: &str, args: &[&str]| {
        let mut all = vec!["exec", container];
        all.extend_from_slice(args);
        common::stack::docker(&all)
    };
    assert_eq!(
        in_container(&web, &["cat", "/run/secrets/db_password"]),
        "s3cr3t-db-1"
    );
    assert_eq!(
        in_container(
            &web,
            &["stat", "-c", "%u %g %a", "/run/secrets/db_password"]
        ),
        "0 0 400\n"
    );
    assert_eq!(
        in_container(&web, &["stat", "-c", "%u %g %a", "/etc/tls/key.pem"]),
        "1000 1001 440\n"
    );
    assert_eq!(
        in_container(&web, &["cat", "/etc/tls/key.pem"]),
        "s3cr3t-tls-key\n"
    );
    // Read-only: the container cannot change what the agent wrote.
    assert_eq!(
        in_container(
            &web,
            &[
                "sh",
                "-c",
                "echo x > /run/secrets/db_password || echo refused"
            ]
        ),
        "refused\n"
    );
    let inspect = common::stack::docker(&["inspect", &web]);
    assert!(!inspect.contains("s3cr3t"), "a value in docker inspect");
    assert!(inspect.contains(&shm.path().display().to_string()));
    let env_file = std::fs::read_to_string(stack.scratch.workdir().join(".env")).unwrap();
    assert!(env_file.contains("GREETING") && !env_file.contains("DB_PASSWORD"));
    for dir in [stack.scratch.workdir(), stack.scratch.path("state")] {
        assert_nowhere_under(&dir, "s3cr3t-db");
    }

    // A new value: `web` is recreated, `other` (which does not use it) is not; the old file goes.
    let other = stack.container("other");
    let (web_id, other_id) = (common::stack::id_of(&web), common::stack::id_of(&other));
    let files_before = files_under(shm.path());
    rig.put(
        &format!("/kt/{}/DB_PASSWORD", stack.project),
        "s3cr3t-db-2",
        aws_sdk_ssm::types::ParameterType::SecureString,
    )
    .await;
    let (run, stack, rig) = stack.sync(rig).await;
    run.expect(0);
    run.assert_free_of(&values);
    assert_ne!(common::stack::id_of(&web), web_id);
    assert_eq!(common::stack::id_of(&other), other_id);
    assert_eq!(
        in_container(&web, &["cat", "/run/secrets/db_password"]),
        "s3cr3t-db-2"
    );
    let files_after = files_under(shm.path());
    assert_eq!(files_after.len(), files_before.len(), "{files_after:?}");
    assert_eq!(
        files_after.difference(&files_before).count(),
        1,
        "only the changed secret's file is new"
    );

    // A host restart empties the tmpfs and the engine cannot start the containers (their secret
    // files are gone): the next sync writes the same files again and starts them, recreating
    // nothing.
    let web_id = common::stack::id_of(&web);
    common::stack::docker(&["stop", "-t", "1", &web, &other]);
    std::fs::remove_dir_all(shm.path().join(&stack.project)).unwrap();
    let (run, stack, _rig) = stack.sync(rig).await;
    run.expect(0);
    assert_eq!(common::stack::id_of(&web), web_id);
    assert_eq!(common::stack::id_of(&other), other_id);
    assert_eq!(files_under(shm.path()), files_after);
    assert_eq!(
        in_container(&web, &["cat", "/run/secrets/db_password"]),
        "s3cr3t-db-2"
    );
    drop(stack);
}

fn assert_nowhere_under(dir: &std::path::Path, value: &str) {
    for file in files_under(dir) {
        let bytes = std::fs::read(&file).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(value),
            "a secret value in {}",
            file.display()
        );
    }
}

/// A config, a fragment, the user data or a compose file built to exhaust the agent (aliases
/// that expand a few hundred bytes into a billion nodes, one 64 KiB scalar referenced 20,000
/// times: 126 KB of text, 1.3 GB of strings, gzipped small enough for user data; nesting a
/// hundred thousand levels deep) ends in exit 2 naming the file, within a second of CPU and a few
/// megabytes, before anything is fetched or run.
#[test]
fn hostile_yaml_is_refused_in_bounded_memory() {
    let rig = Rig::get();
    let mut bomb = String::from("x-a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        let refs = vec![format!("*a{}", i - 1); 10].join(", ");
        bomb.push_str(&format!("x-a{i}: &a{i} [{refs}]\n"));
    }
    let deep = format!("{}{}\n", "[".repeat(100_000), "]".repeat(100_000));
    let big = "x".repeat(64 << 10);
    let refs = vec!["*a"; 20_000].join(",");
    let bytes = |key: &str| format!("x-big: &a {big}\n{key}: [{refs}]\n");
    assert!(bytes("a").len() < 130_000);
    let config = "project: bomb\nworkdir: {workdir}\ncompose: {}\n";
    let compose = "services:\n  a:\n    image: x\n";
    let cases = [
        (
            "config",
            format!("project: bomb\n{bomb}"),
            compose.to_string(),
        ),
        (
            "config",
            format!("project: bomb\nx: {deep}"),
            compose.to_string(),
        ),
        (
            "config",
            format!("{}{}", config, bytes("x-refs")),
            compose.to_string(),
        ),
        ("fragment", config.to_string(), compose.to_string()),
        ("user data", config.to_string(), compose.to_string()),
        ("compose", config.to_string(), format!("{bomb}{compose}")),
        (
            "compose",
            config.to_string(),
            format!("x-deep: {deep}{compose}"),
        ),
        (
            "compose",
            config.to_string(),
            format!(
                "{}services:\n  a:\n    image: x\n    labels: [{refs}]\n",
                bytes("x-refs")
            ),
        ),
    ];
    // Every reader is tried, and every one that fails named.
    let mut failed = Vec::new();
    for (case, (which, config, compose)) in cases.into_iter().enumerate() {
        let s = common::Scratch::new();
        let path = s.config(&rig, &config);
        std::fs::create_dir_all(s.workdir()).unwrap();
        std::fs::write(s.workdir().join("docker-compose.yml"), compose).unwrap();
        let fragment = s.path("etc/agent.d/50-app.yaml");
        let mut env: Vec<(&str, String)> = Vec::new();
        let _imds = match which {
            "fragment" => {
                std::fs::create_dir_all(fragment.parent().unwrap()).unwrap();
                std::fs::write(&fragment, bytes("x-refs")).unwrap();
                None
            }
            // Gzipped as a launch template carries it: well under user data's 16 KiB.
            "user data" => {
                let document = format!("#kicky-agent\n{}", bytes("x-refs"));
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
                std::io::Write::write_all(&mut gz, document.as_bytes()).unwrap();
                let gz = gz.finish().unwrap();
                assert!(gz.len() < 16 << 10, "{} bytes of user data", gz.len());
                let fixture = s.path("imds-fixture");
                std::fs::create_dir_all(&fixture).unwrap();
                std::fs::write(fixture.join("region"), &rig.region).unwrap();
                std::fs::write(fixture.join("user-data"), gz).unwrap();
                let imds =
                    common::imds::OwnImds::start(&rig, &rig.moto_url, s.dir.path(), &fixture);
                env.push(("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.url.clone()));
                Some(imds)
            }
            _ => None,
        };
        let time = s.path("time.out").display().to_string();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let run = s.agent_via_with(
            &rig,
            &["/usr/bin/time", "-o", &time, "-f", "%U %S %M"],
            &["validate"],
            &env,
        );
        let file = match which {
            "config" => path.display().to_string(),
            "fragment" => fragment.display().to_string(),
            "user data" => "user data".to_string(),
            _ => s.workdir().join("docker-compose.yml").display().to_string(),
        };
        // GNU time says "Command exited with non-zero status 2" first.
        let report = std::fs::read_to_string(s.path("time.out")).unwrap();
        let figures: Vec<f64> = report
            .lines()
            .last()
            .unwrap()
            .split_whitespace()
            .map(|f| f.parse().unwrap())
            .collect();
        let (cpu_seconds, max_rss_kb) = (figures[0] + figures[1], figures[2]);
        let named = run.stderr.contains(&file)
            && (run.stderr.contains("aliases") || run.stderr.contains("nested deeper"));
        if run.status != 2 || !named || cpu_seconds >= 1.0 || max_rss_kb >= 64.0 * 1024.0 {
            let stderr: String = run.stderr.chars().take(600).collect();
            failed.push(format!(
                "{which} (case {case}): exit {}, {cpu_seconds} s of CPU, {max_rss_kb} KiB: {stderr}",
                run.status
            ));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}
