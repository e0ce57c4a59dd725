//! Rollouts that keep their promise, against the machine's Docker Engine and the rig's registry
//! and moto: a changed file reaches the container that mounts it; a one-shot service converges;
//! an agent killed in the middle of a switch (at every engine call) never loses the last good
//! container; a registry outage does not stop a stack whose images are here; two syncs never run
//! at once; and every failure of a sync is told, not only the first.

use crate::common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::docker_proxy::DockerProxy;
use common::stack::{docker, id_of, inspect, running_healthy, started_at, Stack};
use common::{Rig, Run};

/// A port nothing listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn exec_cat(container: &str, path: &str) -> String {
    let out = std::process::Command::new("docker")
        .args(["exec", container, "cat", path])
        .output()
        .expect("docker exec");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn leftovers(container: &str) -> String {
    docker(&[
        "ps",
        "-a",
        "--filter",
        &format!("name={container}-kicky"),
        "--format",
        "{{.Names}}",
    ])
    .trim()
    .to_string()
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// Waits (up to 30 s) until `done` holds.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The seed stack's shape: promtail bind-mounts its config file, fetched from S3. A changed
/// object recreates promtail (the new file is a new inode the old container would never see);
/// a changed object that no service mounts recreates nothing.
#[tokio::test]
async fn a_changed_file_reaches_the_container_that_mounts_it() {
    let rig = Rig::get();
    let stack = Stack::new(&rig, "mounted").await;
    stack.env(&rig, "GREETING=hello\n").await;
    let bucket = rig.bucket("mounted", false).await;
    rig.put_object(&bucket, "promtail-config.yml", b"clients: [one]\n".to_vec())
        .await;
    rig.put_object(&bucket, "notes.txt", b"first\n".to_vec())
        .await;
    let compose = "services:\n  promtail:\n    image: {registry}/tester/promtail:1\n    volumes:\n      - ./promtail-config.yml:/etc/promtail/config.yml:ro\n";
    let files = format!(
        "files:\n  - source: s3://{bucket}/promtail-config.yml\n    path: promtail-config.yml\n  - source: s3://{bucket}/notes.txt\n    path: notes.txt\n"
    );
    stack.compose(&rig, compose, &files);
    let (run, stack, rig) = stack.sync(rig).await;
    run.expect(0);
    let promtail = stack.container("promtail");
    assert_eq!(
        exec_cat(&promtail, "/etc/promtail/config.yml"),
        "clients: [one]\n"
    );
    let before = id_of(&promtail);

    rig.put_object(&bucket, "promtail-config.yml", b"clients: [two]\n".to_vec())
        .await;
    let (plan, stack, rig) = stack.run(rig, &["plan"]).await;
    plan.expect(0);
    assert!(
        plan.stdout.contains(&format!(
            "container {promtail} (service promtail): recreate (volumes: promtail-config.yml changed)"
        )),
        "{}",
        plan.stdout
    );
    assert_eq!(id_of(&promtail), before, "plan changes nothing");
    let (run, stack, rig) = stack.sync(rig).await;
    run.expect(0);
    assert_ne!(id_of(&promtail), before, "recreated");
    assert!(running_healthy(&promtail));
    assert_eq!(
        exec_cat(&promtail, "/etc/promtail/config.yml"),
        "clients: [two]\n",
        "promtail runs the new config"
    );

    let kept = id_of(&promtail);
    rig.put_object(&bucket, "notes.txt", b"second\n".to_vec())
        .await;
    let (run, stack, _rig) = stack.sync(rig).await;
    run.expect(0);
    assert!(
        run.stdout
            .contains(&format!("container {promtail} (service promtail): keep")),
        "{}",
        run.stdout
    );
    assert_eq!(
        id_of(&promtail),
        kept,
        "a file no service mounts changes nothing"
    );
    assert_eq!(
        std::fs::read(stack.scratch.workdir().join("notes.txt")).unwrap(),
        b"second\n"
    );
}

/// A `migrate` service that runs and exits 0, which the app waits for with
/// `service_completed_successfully`: the sync converges, a later sync does not run it again, and
/// `status` counts it as done, not as a failure.
#[tokio::test]
async fn a_one_shot_service_converges_and_is_not_run_again() {
    let rig = Rig::get();
    let stack = Stack::new(&rig, "oneshot").await;
    stack.env(&rig, "GREETING=hello\n").await;
    let compose = "\
services:
  migrate:
    image: {registry}/tester/web:1
    entrypoint: [/bin/sh, -c, 'echo migrated']
  app:
    image: {registry}/tester/web:1
    depends_on:
      migrate: { condition: service_completed_successfully }
";
    stack.compose(&rig, compose, "");
    let (run, stack, rig) = stack.sync(rig).await;
    run.expect(0);
    let (migrate, app) = (stack.container("migrate"), stack.container("app"));
    let state = inspect(&migrate).unwrap()["State"].clone();
    assert_eq!(state["Status"], "exited");
    assert_eq!(state["ExitCode"], 0);
    assert!(running_healthy(&app));
    let ran_at = started_at(&migrate);

    let (run, stack, rig) = stack.sync(rig).await;
    run.expect(0);
    assert!(
        run.stdout.contains(&format!(
            "container {migrate} (service migrate): keep (completed successfully; not run again)"
        )),
        "{}",
        run.stdout
    );
    assert_eq!(
        started_at(&migrate),
        ran_at,
        "the one-shot service did not run again"
    );

    let (status, _stack, _rig) = stack.run(rig, &["status"]).await;
    status.expect(0);
    assert!(
        status.stdout.contains(&format!(
            "{migrate} (service migrate): exited, completed (one-shot)"
        )),
        "{}",
        status.stdout
    );
}

/// A service with a fixed host port: the old container must stop before the new one starts.
fn fixed_port_compose(port: u16, image: &str, healthcheck: &str) -> String {
    format!(
        "services:\n  web:\n    image: {{registry}}/tester/{image}\n    ports: ['127.0.0.1:{port}:8080']\n{healthcheck}"
    )
}

/// A new container that stays `starting` far longer than the sync waits.
const SLOW_HEALTH: &str =
    "    healthcheck:\n      test: [CMD, 'false']\n      interval: 2s\n      retries: 60\n";

/// A healthy `web` serving on a fixed host port, the starting point of the interruption tests:
/// the stack, its rig, the port, the container's name and ID.
async fn serving_on_a_fixed_port(test: &str) -> (Stack, Rig, u16, String, String) {
    let rig = Rig::get();
    let stack = Stack::new(&rig, test).await;
    stack.env(&rig, "GREETING=hello\n").await;
    let port = free_port();
    stack.compose(&rig, &fixed_port_compose(port, "web:1", ""), "");
    let (run, stack, rig) = stack.sync(rig).await;
    run.expect(0);
    let web = stack.container("web");
    let good = id_of(&web);
    (stack, rig, port, web, good)
}

/// The agent is killed (SIGKILL: the watchdog, a reboot) while the new container of a service
/// with a fixed host port waits for health after the switch. The next sync undoes the switch
/// with the previous container, which serves again; it never removes it.
#[tokio::test]
async fn an_agent_killed_while_the_new_container_waits_for_health_loses_nothing() {
    let (stack, rig, port, web, good) = serving_on_a_fixed_port("killed").await;

    stack.compose(&rig, &fixed_port_compose(port, "web:2", SLOW_HEALTH), "");
    let mut agent = stack.scratch.spawn_agent(&rig, &["sync"], &[]);
    let aside = format!("{web}-kicky-old");
    until("the switch to reach its health wait", || {
        inspect(&aside).is_some() && inspect(&web).is_some_and(|c| c["State"]["Running"] == true)
    })
    .await;
    agent.kill();
    let killed = blocking(move || agent.wait()).await;
    assert_eq!(killed.status, -1, "killed by a signal");

    let (plan, stack, rig) = stack.run(rig, &["plan"]).await;
    plan.expect(0);
    assert!(
        plan.stdout
            .contains("service web: its last switch was cut short"),
        "{}",
        plan.stdout
    );
    // The next sync cannot even fetch its files (S3 has no such object): the switch is set
    // right all the same, first thing, and the previous container serves.
    let bucket = rig.bucket("killed", false).await;
    let missing = format!("files:\n  - source: s3://{bucket}/missing.yml\n    path: missing.yml\n");
    stack.compose(
        &rig,
        &fixed_port_compose(port, "web:2", SLOW_HEALTH),
        &missing,
    );
    let (run, stack, rig) = stack.sync(rig).await;
    run.expect(1);
    assert!(run.stderr.contains("missing.yml"), "{}", run.stderr);
    assert!(
        run.stderr.contains("an earlier sync was cut short"),
        "{}",
        run.stderr
    );
    assert_eq!(id_of(&web), good, "the last good container serves");
    assert!(inspect(&web).unwrap()["State"]["Running"] == true);
    until("the restarted container to be healthy", || {
        running_healthy(&web)
    })
    .await;
    assert_eq!(leftovers(&web), "");

    // Killed again in the same place; this time the next sync tries the release again.
    stack.compose(&rig, &fixed_port_compose(port, "web:2", SLOW_HEALTH), "");
    let mut agent = stack.scratch.spawn_agent(&rig, &["sync"], &[]);
    until("the switch to reach its health wait again", || {
        inspect(&aside).is_some() && inspect(&web).is_some_and(|c| c["State"]["Running"] == true)
    })
    .await;
    agent.kill();
    blocking(move || agent.wait()).await;
    // The release is still one that never gets healthy: the next sync sets the switch right,
    // tries again, and rolls back to the previous container.
    let (run, _stack, _rig) = stack.sync(rig).await;
    run.expect(1);
    assert!(
        run.stderr.contains("an earlier sync was cut short"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("rolled back: the previous containers of web run again"),
        "{}",
        run.stderr
    );
    assert_eq!(id_of(&web), good, "the last good container serves");
    assert!(running_healthy(&web));
    assert_eq!(leftovers(&web), "", "nothing left aside");
}

/// The same, at every step: the agent killed as it sends each changing engine call of a sync
/// whose new container never gets healthy (the call never reaches the engine). After each kill,
/// the next sync ends with the last good container serving and nothing left over.
#[tokio::test]
async fn an_agent_killed_at_any_engine_call_of_a_switch_loses_nothing() {
    let (stack, rig, port, web, good) = serving_on_a_fixed_port("everystep").await;
    stack.compose(&rig, &fixed_port_compose(port, "unhealthy:1", ""), "");
    let proxy = DockerProxy::start(stack.scratch.dir.path());

    let (mut stack, mut rig) = (stack, rig);
    let mut step = 1;
    loop {
        let agent = stack
            .scratch
            .spawn_agent(&rig, &["sync"], &[("DOCKER_HOST", &proxy.host)]);
        proxy.arm(agent.pid(), step);
        let run = blocking(move || agent.wait()).await;
        let passed = proxy.changes();
        if run.status != -1 {
            // The sync ran to its end: every step has been cut once.
            run.expect(1);
            assert!(step > 5, "too few steps: {passed:?}");
            break;
        }
        let (after, s, r) = stack.sync(rig).await;
        (stack, rig) = (s, r);
        let case = format!("killed at step {step}, after {passed:?}");
        assert_eq!(after.status, 1, "{case}:\n{}", after.all());
        assert_eq!(
            id_of(&web),
            good,
            "{case}: the last good container must serve"
        );
        assert!(running_healthy(&web), "{case}");
        assert_eq!(leftovers(&web), "", "{case}");
        step += 1;
    }
}

/// The Docker Engine unreachable (its socket gone) when a release changes the env file: the sync
/// fails at once naming the engine, the env file and the running container stay as they were;
/// once the engine answers, the next sync converges.
#[tokio::test]
async fn an_unreachable_engine_fails_the_sync_and_changes_nothing() {
    let (stack, rig, port, web, good) = serving_on_a_fixed_port("noengine").await;
    let env = stack.scratch.workdir().join(".env");
    let before = std::fs::read(&env).unwrap();
    stack.env(&rig, "GREETING=bye\n").await;
    stack.compose(&rig, &fixed_port_compose(port, "web:2", ""), "");
    let gone = format!("unix://{}", stack.scratch.path("no-engine.sock").display());
    let started = Instant::now();
    let (run, stack, rig) = stack.sync_on(rig, gone).await;
    run.expect(1);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert!(run.stderr.contains("Docker"), "{}", run.stderr);
    assert_eq!(std::fs::read(&env).unwrap(), before, "the env file changed");
    assert_eq!(id_of(&web), good);
    assert!(running_healthy(&web));

    let (run, _stack, _rig) = stack.sync(rig).await;
    run.expect(0);
    assert_ne!(id_of(&web), good);
    assert!(running_healthy(&web));
    assert!(inspect(&web).unwrap()["Config"]["Image"]
        .as_str()
        .unwrap()
        .ends_with("web:2"));
}

/// The engine's socket closing mid-sync, at every changing engine call of a release that would
/// succeed (that call's connection closed unanswered; later calls pass): whatever the step, the
/// service keeps a running container, the env file is whole, nothing is left aside once the next
/// sync has run, and that sync converges on the new release.
#[tokio::test]
async fn the_engine_socket_closing_at_any_step_of_a_switch_loses_nothing() {
    let (stack, rig, port, web, _) = serving_on_a_fixed_port("socketcut").await;
    let proxy = DockerProxy::start(stack.scratch.dir.path());
    let env = stack.scratch.workdir().join(".env");
    let whole = std::fs::read(&env).unwrap();
    let (mut stack, mut rig) = (stack, rig);
    let mut step = 1;
    loop {
        stack.compose(&rig, &fixed_port_compose(port, "web:2", ""), "");
        proxy.cut(step);
        let (run, s, r) = stack.sync_on(rig, proxy.host.clone()).await;
        (stack, rig) = (s, r);
        if !proxy.fired() {
            // The sync ran to its end before this step: every step has been cut once.
            run.expect(0);
            assert!(step > 4, "too few steps: {:?}", proxy.changes());
            break;
        }
        let case = format!("cut at step {step}, after {:?}", proxy.changes());
        assert!(run.status == 0 || run.status == 1, "{case}:\n{}", run.all());
        println!(
            "{case}: exit {}, {}",
            run.status,
            run.stderr.lines().last().unwrap_or_default()
        );
        assert!(
            inspect(&web).is_some_and(|c| c["State"]["Running"] == true),
            "{case}: web has no running container"
        );
        assert!(
            std::fs::read(&env).unwrap() == whole,
            "{case}: the env file changed"
        );

        let (after, s, r) = stack.sync(rig).await;
        (stack, rig) = (s, r);
        assert_eq!(after.status, 0, "{case}:\n{}", after.all());
        assert!(running_healthy(&web), "{case}");
        let image = inspect(&web).unwrap()["Config"]["Image"].to_string();
        assert!(image.contains("web:2"), "{case}: {image}");
        assert_eq!(leftovers(&web), "", "{case}");

        // Back to the first release for the next step.
        stack.compose(&rig, &fixed_port_compose(port, "web:1", ""), "");
        let (back, s, r) = stack.sync(rig).await;
        (stack, rig) = (s, r);
        back.expect(0);
        step += 1;
    }
}

/// A registry at `127.0.0.1:<port>` that answers every connection with `answer` (`None`: accepts
/// and never answers). Lives as long as the test process.
fn fake_registry(answer: Option<&'static str>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for mut conn in listener.incoming().flatten() {
            match answer {
                Some(answer) => {
                    let mut buf = [0; 4096];
                    let _ = conn.read(&mut buf);
                    let _ = conn.write_all(answer.as_bytes());
                }
                None => held.push(conn),
            }
        }
    });
    port
}

/// `compose.pull: always` and a registry that cannot serve: refused connections, 503, 429, or
/// a registry that never answers. The image is in the local store (baked into the AMI), so the
/// stack comes up from it, with a warning naming the image, `status` marking it possibly stale,
/// and the metric. Without a local copy the sync fails, in bounded time.
#[tokio::test]
async fn a_registry_outage_does_not_stop_a_stack_whose_image_is_here() {
    let rig = Rig::get();
    let registry = std::env::var("KICKY_RIG_REGISTRY").unwrap();
    let config_dir = std::env::var("KICKY_RIG_DIR").unwrap() + "/docker-config";
    let pulled = std::process::Command::new("docker")
        .env("DOCKER_CONFIG", &config_dir)
        .args(["pull", "-q", &format!("{registry}/tester/web:1")])
        .output()
        .unwrap();
    assert!(pulled.status.success());
    let outages = [
        ("refused", free_port()),
        ("503", fake_registry(Some("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"))),
        ("429", fake_registry(Some("HTTP/1.1 429 Too Many Requests\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"))),
        ("hangs", fake_registry(None)),
    ];
    let limits = "  pull_stall_timeout: 3s\n  pull_timeout: 8s\n";
    for (outage, port) in outages {
        let image = format!("127.0.0.1:{port}/tester/web:1");
        docker(&["tag", &format!("{registry}/tester/web:1"), &image]);
        let stack = Stack::new(&rig, &format!("outage{outage}")).await;
        stack.env(&rig, "GREETING=hello\n").await;
        let metrics = stack.scratch.path("metrics.prom");
        let extra = format!("{limits}metrics:\n  textfile: {}\n", metrics.display());
        stack.compose(
            &rig,
            &format!("services:\n  web:\n    image: {image}\n    pull_policy: always\n"),
            &extra,
        );
        let started = Instant::now();
        let (run, stack, rig) = stack.sync(Rig::get()).await;
        run.expect(0);
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "{outage}: {:?}",
            started.elapsed()
        );
        assert!(
            run.stderr.contains(&image)
                && run
                    .stderr
                    .contains("using the local image, which may be stale"),
            "{outage}: {}",
            run.stderr
        );
        assert!(running_healthy(&stack.container("web")), "{outage}");
        let metrics = std::fs::read_to_string(&metrics).unwrap();
        assert!(
            metrics.contains(&format!(
                "kicky_agent_stale_images{{project=\"{}\"}} 1",
                stack.project
            )),
            "{metrics}"
        );
        let (status, stack, _rig) = stack.run(rig, &["status"]).await;
        status.expect(0);
        assert!(
            status
                .stdout
                .contains(&format!("image {image}: possibly stale")),
            "{outage}: {}",
            status.stdout
        );
        docker(&["rmi", &image]);

        // Not in the local store: nothing to fall back on, and the failure comes in bounded time.
        let started = Instant::now();
        let (run, _stack, _rig) = stack.sync(Rig::get()).await;
        run.expect(1);
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "{outage}: {:?}",
            started.elapsed()
        );
        assert!(
            run.stderr.contains(&format!("failed to pull {image}")),
            "{outage}: {}",
            run.stderr
        );
        if outage == "hangs" {
            assert!(run.stderr.contains("no progress for 3s"), "{}", run.stderr);
        }
    }
}

/// A manual `sync` while another sync of the project runs waits for it (here at most 1 s), then
/// fails naming the holder; the running sync is not disturbed.
#[tokio::test]
async fn a_second_sync_of_a_project_waits_then_names_the_one_running() {
    let rig = Rig::get();
    let stack = Stack::new(&rig, "lock").await;
    stack.env(&rig, "GREETING=hello\n").await;
    // Healthy only after its first check, 3 s in: the first sync takes that long.
    let compose = "services:\n  web:\n    image: {registry}/tester/web:1\n    healthcheck:\n      test: [CMD, wget, -q, -O, /dev/null, 'http://127.0.0.1:8080/health']\n      interval: 3s\n";
    stack.compose(&rig, compose, "lock_timeout: 1s\n");
    let first = stack.scratch.spawn_agent(&rig, &["sync"], &[]);
    let holder = stack
        .scratch
        .path(&format!("state/{}.lock.holder", stack.project));
    until("the first sync to hold the lock", || holder.exists()).await;
    let (second, stack, _rig) = stack.sync(rig).await;
    second.expect(1);
    let expected = format!(
        "another sync of project {} is running: pid {}",
        stack.project,
        first.pid()
    );
    assert!(second.stderr.contains(&expected), "{}", second.stderr);
    assert!(second.stderr.contains("sync`) since"), "{}", second.stderr);
    let first = blocking(move || first.wait()).await;
    first.expect(0);
    assert!(running_healthy(&stack.container("web")));
}

/// Every failure of a sync is told in one run: two missing objects of three, two containers the
/// engine refuses to create.
#[tokio::test]
async fn every_failure_of_a_sync_is_told_not_only_the_first() {
    let rig = Rig::get();
    let stack = Stack::new(&rig, "allfail").await;
    stack.env(&rig, "GREETING=hello\n").await;
    let bucket = rig.bucket("allfail", false).await;
    rig.put_object(&bucket, "here.yml", b"a: 1\n".to_vec())
        .await;
    let files = format!(
        "files:\n  - source: s3://{bucket}/missing-one.yml\n    path: one.yml\n  - source: s3://{bucket}/here.yml\n    path: here.yml\n  - source: s3://{bucket}/missing-two.yml\n    path: two.yml\n"
    );
    stack.compose(
        &rig,
        "services:\n  web:\n    image: {registry}/tester/web:1\n",
        &files,
    );
    let (run, stack, rig) = stack.sync(rig).await;
    run.expect(1);
    for expected in ["2 of 3 files failed", "missing-one.yml", "missing-two.yml"] {
        assert!(run.stderr.contains(expected), "{expected}: {}", run.stderr);
    }
    assert!(
        !stack.scratch.workdir().join("here.yml").exists(),
        "all or nothing"
    );

    // Two services whose bind source does not exist and may not be created: the engine refuses
    // them at create.
    let compose = "\
services:
  a:
    image: {registry}/tester/web:1
    volumes: [{ type: bind, source: /nonexistent/kicky-a, target: /a, bind: { create_host_path: false } }]
  b:
    image: {registry}/tester/web:1
    volumes: [{ type: bind, source: /nonexistent/kicky-b, target: /b, bind: { create_host_path: false } }]
";
    stack.compose(&rig, compose, "");
    let (run, stack, _rig): (Run, Stack, Rig) = stack.sync(rig).await;
    run.expect(1);
    for expected in [
        "2 of 2 containers could not be created",
        "failed to create the container of service a",
        "failed to create the container of service b",
    ] {
        assert!(run.stderr.contains(expected), "{expected}: {}", run.stderr);
    }
    assert!(inspect(&stack.container("a")).is_none() && inspect(&stack.container("b")).is_none());
}

/// `validate` on a config with mistakes and a compose file with more: one run lists them all,
/// each with its file, line and key, and exits 2.
#[test]
fn validate_lists_every_problem_of_the_config_and_the_compose_file() {
    let rig = Rig::get();
    let scratch = common::Scratch::new();
    let workdir = scratch.workdir();
    std::fs::create_dir_all(&workdir).unwrap();
    std::fs::write(
        workdir.join("docker-compose.yml"),
        "services:\n  web:\n    image: web:1\n    volumes_from: [db]\n    ports: ['eighty:80']\n",
    )
    .unwrap();
    let config = scratch.config(
        &rig,
        "project: orange\nworkdir: {workdir}\nwatch:\n  interval: soon\ncompose:\n  file: docker-compose.yml\n  pull: sometimes\nlifecycle:\n  abandon_after: 0\n",
    );
    let run = scratch.agent(&rig, &["validate"]);
    run.expect(2);
    let compose = workdir.join("docker-compose.yml").display().to_string();
    let config = config.display().to_string();
    for expected in [
        "5 problems:".to_string(),
        format!("{config}:4:3: watch.interval"),
        format!("{config}:7:3: compose.pull"),
        format!("{config}:9:3: lifecycle.abandon_after"),
        format!("{compose}:4:5: services.web.volumes_from"),
        format!("{compose}:5:"),
    ] {
        assert!(
            run.stderr.contains(&expected),
            "{expected} in:\n{}",
            run.stderr
        );
    }
}

/// Crash consistency: syncs that change the env file, a fetched file and the image, each killed
/// (SIGKILL) at a random moment, seeded (`KICKY_CRASH_SEED`, printed), until
/// `KICKY_CRASH_TRIALS` (20 by default) kills landed inside a sync: after it began fetching (its
/// first phase is in its log) and before it ended (it died of the signal, not an exit). After each
/// kill: the env file and the file are whole, old or new, never partial or missing; the service
/// has a running container; and the next sync converges to the new release and leaves no temp
/// file (`.<name>.<random>.tmp`) in the workdir or the state directory.
#[tokio::test]
async fn syncs_killed_at_random_moments_leave_whole_files_and_a_serving_stack() {
    let seed: u64 = std::env::var("KICKY_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261204);
    let trials: u32 = std::env::var("KICKY_CRASH_TRIALS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    println!(
        "crash consistency: seed {seed}, {trials} kills inside a sync (KICKY_CRASH_SEED, KICKY_CRASH_TRIALS)"
    );
    let mut rng = fastrand::Rng::with_seed(seed);
    let rig = Rig::get();
    let stack = Stack::new(&rig, "crash").await;
    let bucket = rig.bucket("crash", false).await;
    let release = |n: u32| {
        // A long value, so the env file takes more than one write.
        let env = format!("GREETING=v{n}\nPADDING={}\n", "x".repeat(64 * 1024));
        let file = format!("version: {n}\n{}\n", "# pad\n".repeat(4096));
        let image = if n % 2 == 0 { "web:1" } else { "web:2" };
        (env, file, image)
    };
    let files = format!("files:\n  - source: s3://{bucket}/app.yml\n    path: app.yml\n");
    let compose =
        |image: &str| format!("services:\n  web:\n    image: {{registry}}/tester/{image}\n");
    let apply = async |n: u32, stack: &Stack| {
        let (env, file, image) = release(n);
        stack.env(&rig, &env).await;
        rig.put_object(&bucket, "app.yml", file.into_bytes()).await;
        stack.compose(&rig, &compose(image), &files);
    };
    apply(0, &stack).await;
    let (run, mut stack, _) = stack.sync(Rig::get()).await;
    run.expect(0);
    let web = stack.container("web");
    let work = stack.scratch.workdir();
    let running_web = |project: &str| {
        docker(&[
            "ps",
            "--filter",
            &format!("label=com.docker.compose.project={project}"),
            "--filter",
            "label=com.docker.compose.service=web",
            "--format",
            "{{.Names}}",
        ])
        .lines()
        .count()
    };
    let (mut landed, mut n) = (0, 0);
    while landed < trials {
        n += 1;
        assert!(
            n <= 3 * trials,
            "only {landed} of {} kills landed inside a sync",
            n - 1
        );
        let (_, old_file, _) = release(n - 1);
        let (_, new_file, new_image) = release(n);
        apply(n, &stack).await;
        let mut agent = stack.scratch.spawn_agent(&rig, &["sync"], &[]);
        let delay = Duration::from_millis(rng.u64(0..2500));
        tokio::time::sleep(delay).await;
        agent.kill();
        let run = blocking(move || agent.wait()).await;
        // Inside the sync: its first phase logged, and it died of the kill (status -1), not an
        // exit of its own.
        let inside = run.status == -1 && run.stderr.contains("fetching parameters and files");
        landed += u32::from(inside);
        let case = format!(
            "trial {n}, killed after {delay:?} (exit {}, {})",
            run.status,
            if inside { "inside the sync" } else { "outside" }
        );
        println!("{case}");
        let env_now = std::fs::read_to_string(work.join(".env")).unwrap_or_default();
        let vars = env_vars(&env_now);
        let greeting = vars.get("GREETING").cloned().unwrap_or_default();
        assert!(
            greeting == format!("v{}", n - 1) || greeting == format!("v{n}"),
            "{case}: the env file is neither the old nor the new one"
        );
        assert_eq!(
            vars.get("PADDING").map(String::len),
            Some(64 * 1024),
            "{case}: a partial env file"
        );
        let file_now = std::fs::read_to_string(work.join("app.yml")).unwrap_or_default();
        assert!(
            file_now == old_file || file_now == new_file,
            "{case}: app.yml is partial"
        );
        assert!(
            running_web(&stack.project) >= 1,
            "{case}: no running container for web"
        );

        let (after, s, _) = stack.sync(Rig::get()).await;
        stack = s;
        after.expect(0);
        let vars = env_vars(&std::fs::read_to_string(work.join(".env")).unwrap());
        assert_eq!(vars.get("GREETING"), Some(&format!("v{n}")), "{case}");
        assert_eq!(
            std::fs::read_to_string(work.join("app.yml")).unwrap(),
            new_file,
            "{case}"
        );
        let image = inspect(&web).unwrap()["Config"]["Image"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(image.ends_with(new_image), "{case}: runs {image}");
        assert!(running_healthy(&web), "{case}");
        assert_eq!(leftovers(&web), "", "{case}");
        for dir in [work.clone(), stack.scratch.path("state")] {
            let temps: Vec<String> = std::fs::read_dir(&dir)
                .map(|entries| {
                    entries
                        .filter_map(|e| e.ok()?.file_name().into_string().ok())
                        .filter(|name| name.starts_with('.') && name.ends_with(".tmp"))
                        .collect()
                })
                .unwrap_or_default();
            assert!(
                temps.is_empty(),
                "{case}: temp files left in {dir:?}: {temps:?}"
            );
        }
    }
    println!("crash consistency: {landed} kills inside a sync in {n} trials");
}

/// The variables of an env file's text, by the agent's own reader (compose's rules).
fn env_vars(text: &str) -> std::collections::HashMap<String, String> {
    kicky_agent::envfile::parse(text, &|_| None)
        .unwrap_or_default()
        .into_iter()
        .collect()
}

/// `plan` previews the compose file the sync would fetch, not the one on disk: a service added
/// in S3 is planned as a container to create (and the policy judges the new file, as the sync
/// would), while nothing is written.
#[tokio::test]
async fn plan_previews_the_compose_file_the_sync_would_fetch() {
    let rig = Rig::get();
    let stack = Stack::new(&rig, "planfetch").await;
    stack.env(&rig, "GREETING=hello\n").await;
    let bucket = rig.bucket("planfetch", false).await;
    let web = format!(
        "services:\n  web:\n    image: {}/tester/web:1\n",
        stack.registry
    );
    rig.put_object(&bucket, "docker-compose.yml", web.clone().into_bytes())
        .await;
    let files = format!(
        "files:\n  - source: s3://{bucket}/docker-compose.yml\n    path: docker-compose.yml\n"
    );
    stack.compose(&rig, &web, &files);
    let (run, stack, rig) = stack.sync(rig).await;
    run.expect(0);
    let both = format!(
        "{web}  extra:\n    image: {}/tester/web:1\n",
        stack.registry
    );
    rig.put_object(&bucket, "docker-compose.yml", both.into_bytes())
        .await;
    let (plan, stack, rig) = stack.run(rig, &["plan"]).await;
    plan.expect(0);
    let extra = stack.container("extra");
    assert!(
        plan.stdout
            .contains(&format!("container {extra} (service extra): create")),
        "{}",
        plan.stdout
    );
    assert!(inspect(&extra).is_none(), "plan created a container");
    let on_disk = std::fs::read_to_string(stack.scratch.workdir().join("docker-compose.yml"));
    assert_eq!(on_disk.unwrap(), web, "plan wrote the compose file");
    // A fetched compose file the policy refuses is refused by plan, as by the sync (exit 2).
    let host = format!("{web}    privileged: true\n");
    rig.put_object(&bucket, "docker-compose.yml", host.into_bytes())
        .await;
    let (plan, _stack, _rig) = stack.run(rig, &["plan"]).await;
    plan.expect(2);
}
