//! What the agent promises about secrets, each against the real services: no value at any
//! verbosity, nothing a container can write reaching the host through the agent, no untrusted
//! text echoed raw, no leftovers, and the two more ways in (Secrets Manager, secrets as files).

use crate::common;

use common::stack::Stack;
use common::Rig;

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
    let socket = stack.scratch.path("notify.sock");
    let notify = common::systemd::Notifications::listen(&socket);
    let child = stack.scratch.spawn_daemon(
        &rig.imds_url,
        &[("NOTIFY_SOCKET", &socket.display().to_string())],
    );
    let _daemon = common::systemd::Daemon {
        child,
        log: stack.scratch.path("daemon.log"),
    };
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
