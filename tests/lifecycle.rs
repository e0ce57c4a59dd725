//! The Auto Scaling launch lifecycle hook, against the rig's moto (whose Auto Scaling the rig
//! extends: a launch hook holds a new instance in `Pending:Wait`, and CompleteLifecycleAction moves
//! it on). Each test makes a group of its own with one launch hook, lets moto launch an instance
//! into it, and runs `kicky-agent sync` as that instance: an IMDSv2 layer of the test's own serves
//! the instance's id (and, in one test, its tags). What the agent did is read back from Auto
//! Scaling with DescribeAutoScalingInstances, and from `kicky-agent status`.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use aws_sdk_ssm::types::ParameterType;
use common::asg::{autoscaling, group_with_launch_hook, group_with_launch_hook_after, HOOK};
use common::imds::OwnImds;
use common::{unique_prefix, Rig, Scratch};

/// The instance's lifecycle state, as Auto Scaling reports it.
async fn lifecycle_state(asg: &aws_sdk_autoscaling::Client, instance: &str) -> String {
    let out = asg
        .describe_auto_scaling_instances()
        .instance_ids(instance)
        .send()
        .await
        .expect("describe instances");
    let found = out.auto_scaling_instances();
    assert_eq!(found.len(), 1, "{found:?}");
    found[0].lifecycle_state().unwrap().to_string()
}

/// The instance as its metadata describes it; `group_tag`: tags in metadata enabled.
fn fixture(dir: &Path, rig: &Rig, instance: &str, group_tag: Option<&str>) -> PathBuf {
    let fixture = dir.join("imds-fixture");
    std::fs::create_dir_all(&fixture).unwrap();
    std::fs::write(fixture.join("instance-id"), instance).unwrap();
    std::fs::write(fixture.join("region"), &rig.region).unwrap();
    if let Some(group) = group_tag {
        let tags = serde_json::json!({ "aws:autoscaling:groupName": group, "Name": "web" });
        std::fs::write(fixture.join("tags.json"), tags.to_string()).unwrap();
    }
    fixture
}

fn config(parameter: &str) -> String {
    format!(
        "project: orange\nworkdir: {{workdir}}\naws:\n  endpoint_url: {{moto}}\nenv:\n  parameters:\n\
         \x20   - name: {parameter}\n      key: GREETING\nlifecycle:\n  hook: auto\n"
    )
}

fn unique_group(test: &str) -> String {
    format!("kt-{test}-{}", fastrand::u32(..))
}

/// `kicky-agent status --json`'s lifecycle record.
fn status_lifecycle(s: &Scratch, rig: &Rig, imds: &OwnImds, status: i32) -> serde_json::Value {
    let env = [("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.url.as_str())];
    let run = s.agent_with(rig, &["status", "--json"], &env);
    run.expect(status);
    let json: serde_json::Value = serde_json::from_str(&run.stdout).expect("status --json");
    json["lifecycle"].clone()
}

/// A healthy sync completes the launch hook with CONTINUE: the instance goes in service.
async fn continues_once_synced(test: &str, tags_in_metadata: bool) {
    let rig = Rig::get();
    let asg = autoscaling(&rig);
    let group = unique_group(test);
    let instance = group_with_launch_hook(&asg, &group).await;
    assert_eq!(lifecycle_state(&asg, &instance).await, "Pending:Wait");

    let prefix = unique_prefix(test);
    let parameter = format!("{prefix}/GREETING");
    rig.put(&parameter, "hello", ParameterType::String).await;

    let s = Scratch::new();
    let group_tag = tags_in_metadata.then_some(group.as_str());
    let fixture = fixture(s.dir.path(), &rig, &instance, group_tag);
    let imds = OwnImds::start(&rig, &rig.moto_url, s.dir.path(), &fixture);
    s.config(&rig, &config(&parameter));

    let env = [("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.url.as_str())];
    let run = s.agent_with(&rig, &["-v", "sync"], &env);
    run.expect(0);
    assert_eq!(
        lifecycle_state(&asg, &instance).await,
        "InService",
        "{}",
        run.all()
    );
    assert!(
        run.stderr.contains("lifecycle action completed: CONTINUE"),
        "{}",
        run.stderr
    );

    // Where the group came from: the instance tag when metadata has tags, else Auto Scaling.
    let tag_path = "GET /latest/meta-data/tags/instance/aws:autoscaling:groupName HTTP/1.1\" ";
    let want = if tags_in_metadata { "200" } else { "404" };
    let log = imds.log_text();
    assert!(log.contains(&format!("{tag_path}{want}")), "{log}");

    let record = status_lifecycle(&s, &rig, &imds, 0);
    assert_eq!(record["action"], "CONTINUE", "{record}");
    assert_eq!(record["group"], group.as_str());
    assert_eq!(record["hook"], HOOK);
    assert_eq!(record["instance"], instance.as_str());
    assert!(record["error"].is_null(), "{record}");
    let text = s.agent_with(&rig, &["status"], &env);
    let line = format!("lifecycle: CONTINUE sent for {instance} to hook {HOOK} of group {group}");
    assert!(text.stdout.contains(&line), "{}", text.stdout);

    // Run again by hand on the instance now in service: nothing pending, nothing sent, and the
    // record of the launch stays.
    let again = s.agent_with(&rig, &["-v", "sync"], &env);
    again.expect(0);
    assert!(
        again.stderr.contains("no launch action pending"),
        "{}",
        again.stderr
    );
    assert_eq!(lifecycle_state(&asg, &instance).await, "InService");
    assert_eq!(status_lifecycle(&s, &rig, &imds, 0), record);
}

#[tokio::test]
async fn continue_with_the_group_from_instance_tags() {
    continues_once_synced("lc_tags", true).await;
}

#[tokio::test]
async fn continue_with_the_group_from_auto_scaling() {
    continues_once_synced("lc_describe", false).await;
}

/// A first sync that fails (a parameter is missing) is final for `sync`: ABANDON, and the group
/// terminates the instance.
#[tokio::test]
async fn abandon_when_the_first_sync_fails() {
    let rig = Rig::get();
    let asg = autoscaling(&rig);
    let group = unique_group("lc_abandon");
    let instance = group_with_launch_hook(&asg, &group).await;

    let s = Scratch::new();
    let fixture = fixture(s.dir.path(), &rig, &instance, None);
    let imds = OwnImds::start(&rig, &rig.moto_url, s.dir.path(), &fixture);
    let missing = format!("{}/NOT_THERE", unique_prefix("lc_abandon"));
    s.config(&rig, &config(&missing));

    let env = [("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.url.as_str())];
    let run = s.agent_with(&rig, &["sync"], &env);
    run.expect(1);
    assert!(run.stderr.contains(&missing), "{}", run.stderr);
    assert_eq!(
        lifecycle_state(&asg, &instance).await,
        "Terminating",
        "{}",
        run.all()
    );

    // status exits 1 (the last sync failed) and says what was sent.
    let record = status_lifecycle(&s, &rig, &imds, 1);
    assert_eq!(record["action"], "ABANDON", "{record}");
    assert_eq!(record["instance"], instance.as_str());
    let text = s.agent_with(&rig, &["status"], &env);
    text.expect(1);
    let line = format!("lifecycle: ABANDON sent for {instance} to hook {HOOK} of group {group}");
    assert!(text.stdout.contains(&line), "{}", text.stdout);
}

/// The lookup of the hook runs alongside the sync, not before it: here instance metadata takes
/// 0.8 s for each of its two lookups (under the SDK's 1 s read timeout), and the sync is done well
/// before 1.6 s; the launch is then completed once the hook is known, by `sync` and by the daemon
/// alike.
#[tokio::test]
async fn a_lookup_that_ends_after_the_sync_still_completes_the_launch() {
    let rig = Rig::get();
    let asg = autoscaling(&rig);
    for daemon in [false, true] {
        let test = if daemon {
            "lc_slow_daemon"
        } else {
            "lc_slow_sync"
        };
        let group = unique_group(test);
        let instance = group_with_launch_hook(&asg, &group).await;
        let parameter = format!("{}/GREETING", unique_prefix(test));
        rig.put(&parameter, "hello", ParameterType::String).await;
        let s = Scratch::new();
        let fixture = fixture(s.dir.path(), &rig, &instance, Some(&group));
        std::fs::write(fixture.join("lookup-delay"), "0.8").unwrap();
        let imds = OwnImds::start(&rig, &rig.moto_url, s.dir.path(), &fixture);
        let socket = s.path("run/control.sock");
        s.config(
            &rig,
            &format!(
                "{}control_socket: {}\n",
                config(&parameter),
                socket.display()
            ),
        );
        let spawned = std::time::SystemTime::now();
        let log = if daemon {
            let mut child = s.spawn_daemon(&imds.url, &[]);
            let started = Instant::now();
            while lifecycle_state(&asg, &instance).await != "InService"
                && started.elapsed() < Duration::from_secs(30)
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let _ = child.kill();
            let _ = child.wait();
            std::fs::read_to_string(s.path("daemon.log")).unwrap_or_default()
        } else {
            let env = [("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.url.as_str())];
            let run = s.agent_with(&rig, &["-v", "sync"], &env);
            run.expect(0);
            run.stderr
        };
        assert_eq!(
            lifecycle_state(&asg, &instance).await,
            "InService",
            "{test}:\n{log}"
        );
        let synced = if daemon {
            "first sync converged and healthy"
        } else {
            "env file"
        };
        let synced_at = log
            .find(synced)
            .unwrap_or_else(|| panic!("{test}: {synced:?} in:\n{log}"));
        let completed_at = log
            .find("lifecycle action completed: CONTINUE")
            .unwrap_or_else(|| panic!("{test}: no CONTINUE in:\n{log}"));
        assert!(synced_at < completed_at, "{test}:\n{log}");
        // The line's own timestamp: the sync did not wait for the lookup.
        let line_start = log[..synced_at].rfind('\n').map_or(0, |i| i + 1);
        let stamp = log[line_start..]
            .split_whitespace()
            .next()
            .unwrap_or_default();
        let at = humantime::parse_rfc3339(stamp).unwrap_or_else(|e| panic!("{stamp:?}: {e}"));
        let took = at.duration_since(spawned).unwrap_or_default();
        assert!(
            took < Duration::from_millis(1200),
            "{test}: the sync was done {took:?} after the start: it waited for the lookup\n{log}"
        );
    }
}

/// The daemon, not `sync`, owns the launch hook when it runs: CONTINUE once its first sync is
/// healthy; ABANDON after its first sync failed `lifecycle.abandon_after` times (while it keeps
/// retrying).
#[tokio::test]
async fn the_daemon_completes_the_launch_once() {
    let rig = Rig::get();
    let asg = autoscaling(&rig);
    for (test, good) in [("daemon-ok", true), ("daemon-bad", false)] {
        let group = unique_group(test);
        let instance = group_with_launch_hook(&asg, &group).await;
        let prefix = unique_prefix(test);
        let parameter = format!("{prefix}/GREETING");
        if good {
            rig.put(&parameter, "hello", ParameterType::String).await;
        }
        let s = Scratch::new();
        let fixture = fixture(s.dir.path(), &rig, &instance, Some(&group));
        let imds = OwnImds::start(&rig, &rig.moto_url, s.dir.path(), &fixture);
        // `abandon_after` under `lifecycle:`, the last section of `config`.
        s.config(
            &rig,
            &format!(
                "{}  abandon_after: 2\ncontrol_socket: {}\n",
                config(&parameter),
                s.path("run/control.sock").display()
            ),
        );
        let mut daemon = s.spawn_daemon(&imds.url, &[]);
        let want = if good { "InService" } else { "Terminating" };
        let started = Instant::now();
        let mut state = String::new();
        while started.elapsed() < Duration::from_secs(90) {
            state = lifecycle_state(&asg, &instance).await;
            if state == want {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let _ = daemon.kill();
        let _ = daemon.wait();
        let log = std::fs::read_to_string(s.path("daemon.log")).unwrap_or_default();
        assert_eq!(state, want, "{test}: daemon log:\n{log}");
        if !good {
            assert!(
                log.contains("the first sync failed 2 times: abandoning the launch"),
                "{log}"
            );
            assert_eq!(
                log.matches("lifecycle action completed").count(),
                1,
                "one completion only:\n{log}"
            );
        }
    }
}

/// `lifecycle.unhealthy_after`: an application that stays unhealthy gets SetInstanceHealth
/// Unhealthy from the daemon, so the group replaces the instance.
#[tokio::test]
async fn the_daemon_reports_an_application_that_stays_unhealthy() {
    let rig = Rig::get();
    let asg = autoscaling(&rig);
    let group = unique_group("unwell");
    let instance = group_with_launch_hook(&asg, &group).await;
    let s = Scratch::new();
    let fixture = fixture(s.dir.path(), &rig, &instance, Some(&group));
    let imds = OwnImds::start(&rig, &rig.moto_url, s.dir.path(), &fixture);
    let registry = std::env::var("KICKY_RIG_REGISTRY").unwrap();
    let password = std::env::var("KICKY_RIG_REGISTRY_PASSWORD").unwrap();
    let project = format!("ktunwell{}", fastrand::u32(..) % 100_000);
    rig.put(
        &format!("/kt/{project}/registry"),
        &password,
        ParameterType::SecureString,
    )
    .await;
    std::fs::create_dir_all(s.workdir()).unwrap();
    std::fs::write(
        s.workdir().join("docker-compose.yml"),
        format!("services:\n  web:\n    image: {registry}/tester/web:1\n"),
    )
    .unwrap();
    s.config(
        &rig,
        &format!(
            "project: {project}\nworkdir: {{workdir}}\naws:\n  endpoint_url: {{moto}}\n\
             compose:\n  file: docker-compose.yml\n  healthy_timeout: 30s\n\
             registries:\n  - server: {registry}\n    username: tester\n    password: {{ parameter: /kt/{project}/registry }}\n\
             lifecycle:\n  hook: auto\n  unhealthy_after: 1s\nwatch:\n  interval: 0\ncontrol_socket: {}\n",
            s.path("run/control.sock").display()
        ),
    );
    let mut daemon = s.spawn_daemon(&imds.url, &[]);
    let container = format!("{project}-web-1");
    let health = |out: aws_sdk_autoscaling::operation::describe_auto_scaling_instances::DescribeAutoScalingInstancesOutput| {
        out.auto_scaling_instances().first().and_then(|i| i.health_status().map(str::to_string)).unwrap_or_default()
    };
    let started = Instant::now();
    let mut in_service = false;
    let mut unhealthy = false;
    while started.elapsed() < Duration::from_secs(90) {
        let state = lifecycle_state(&asg, &instance).await;
        if state == "InService" && !in_service {
            in_service = true;
            // The application dies after the instance went in service.
            let _ = Command::new("docker")
                .args(["stop", "-t", "1", &container])
                .output();
        }
        let out = asg
            .describe_auto_scaling_instances()
            .instance_ids(&instance)
            .send()
            .await
            .unwrap();
        if in_service && health(out).eq_ignore_ascii_case("unhealthy") {
            unhealthy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let _ = daemon.kill();
    let _ = daemon.wait();
    let _ = Command::new("docker")
        .args(["rm", "-f", &container])
        .output();
    let _ = Command::new("docker")
        .args(["network", "rm", &format!("{project}_default")])
        .output();
    let log = std::fs::read_to_string(s.path("daemon.log")).unwrap_or_default();
    assert!(in_service, "the launch was never continued:\n{log}");
    assert!(unhealthy, "the instance was not set Unhealthy:\n{log}");
    assert!(log.contains("the application stayed unhealthy"), "{log}");
}

/// Puts a termination hook on `group`: a scale-in holds the instance in `Terminating:Wait`.
async fn add_termination_hook(asg: &aws_sdk_autoscaling::Client, group: &str) {
    asg.put_lifecycle_hook()
        .auto_scaling_group_name(group)
        .lifecycle_hook_name("drain")
        .lifecycle_transition("autoscaling:EC2_INSTANCE_TERMINATING")
        .heartbeat_timeout(300)
        .default_result("CONTINUE")
        .send()
        .await
        .expect("put termination hook");
}

/// Waits (30 s at most) until `done` holds; whether it did.
async fn eventually(mut done: impl AsyncFnMut() -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        if done().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

fn finished_at(container: &str) -> String {
    common::stack::inspect(container)
        .and_then(|c| c["State"]["FinishedAt"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The two-service stack run by the daemon as `instance` of `group`, whose instance metadata
/// (with the target lifecycle state `target`) an IMDS layer of the test's own serves.
async fn daemon_stack(
    rig: &Rig,
    test: &str,
    group: &str,
    instance: &str,
    target: &str,
) -> (common::stack::Stack, PathBuf, OwnImds) {
    let stack = common::stack::Stack::new(rig, test).await;
    stack.env(rig, "A=1\n").await;
    let extra = format!(
        "control_socket: {}\nwatch:\n  interval: 0\n",
        stack.scratch.path("run/control.sock").display()
    );
    stack.compose(rig, TWO_SERVICES, &extra);
    let dir = stack.scratch.dir.path();
    let fixture = fixture(dir, rig, instance, Some(group));
    std::fs::write(fixture.join("target-lifecycle-state"), target).unwrap();
    let imds = OwnImds::start(rig, &rig.moto_url, dir, &fixture);
    (stack, fixture, imds)
}

const TWO_SERVICES: &str = "services:\n  db:\n    image: {registry}/tester/web:1\n    stop_grace_period: 3s\n  app:\n    image: {registry}/tester/web:1\n    depends_on:\n      db:\n        condition: service_healthy\n";

/// A scale-in with a termination hook: the daemon sees the instance's target state go to
/// `Terminated`, stops the app before the database it depends on, then completes the hook with
/// CONTINUE; Auto Scaling moves the instance on only then.
#[tokio::test]
async fn the_daemon_drains_the_stack_then_completes_the_termination_hook() {
    let rig = Rig::get();
    let asg = autoscaling(&rig);
    let group = unique_group("drain");
    let instance = group_with_launch_hook(&asg, &group).await;
    add_termination_hook(&asg, &group).await;
    let (stack, fixture, imds) = daemon_stack(&rig, "drain", &group, &instance, "InService").await;
    let s = &stack.scratch;
    let mut daemon = s.spawn_daemon(&imds.url, &[]);
    let (app, db) = (stack.container("app"), stack.container("db"));
    let up = eventually(async || {
        lifecycle_state(&asg, &instance).await == "InService"
            && common::stack::running_healthy(&app)
    })
    .await;
    let log = || std::fs::read_to_string(s.path("daemon.log")).unwrap_or_default();
    assert!(up, "never in service:\n{}", log());

    asg.terminate_instance_in_auto_scaling_group()
        .instance_id(&instance)
        .should_decrement_desired_capacity(true)
        .send()
        .await
        .expect("scale in");
    assert_eq!(lifecycle_state(&asg, &instance).await, "Terminating:Wait");
    std::fs::write(fixture.join("target-lifecycle-state"), "Terminated").unwrap();
    let proceeded =
        eventually(async || lifecycle_state(&asg, &instance).await == "Terminating:Proceed").await;
    let _ = daemon.kill();
    let _ = daemon.wait();
    let log = log();
    assert!(proceeded, "the termination hook was not completed:\n{log}");
    for name in [&app, &db] {
        let c = common::stack::inspect(name).expect("the container is kept");
        assert_eq!(c["State"]["Running"], false, "{name} still runs:\n{log}");
    }
    // The app stopped before the database it depends on, and the hook after both.
    assert!(finished_at(&app) <= finished_at(&db), "{log}");
    let at = |text: &str| {
        log.find(text)
            .unwrap_or_else(|| panic!("{text:?} not in:\n{log}"))
    };
    assert!(at(&format!("container=\"{app}\"")) < at(&format!("container=\"{db}\"")));
    assert!(
        at("termination lifecycle action completed: CONTINUE") > at(&format!("container=\"{db}\""))
    );
}

/// An instance launched into a warm pool prepares (parameters, files, images) but starts
/// nothing, and completes its launch hook; when it goes in service, the daemon starts the stack.
/// Prints the time from `InService` to healthy beside the time of the first (cold) sync.
#[tokio::test]
async fn a_warm_pool_instance_prepares_then_starts_when_in_service() {
    let rig = Rig::get();
    let asg = autoscaling(&rig);
    let group = unique_group("warm");
    let instance = group_with_launch_hook(&asg, &group).await;
    let (stack, fixture, imds) =
        daemon_stack(&rig, "warm", &group, &instance, "Warmed:Running").await;
    let s = &stack.scratch;
    let started = Instant::now();
    let mut daemon = s.spawn_daemon(&imds.url, &[]);
    let log = || std::fs::read_to_string(s.path("daemon.log")).unwrap_or_default();
    let warmed = eventually(async || {
        lifecycle_state(&asg, &instance).await == "InService"
            && log().contains("status: warm pool:")
    })
    .await;
    let prepared = started.elapsed();
    assert!(
        warmed,
        "the launch hook was not completed for the pool:\n{}",
        log()
    );
    assert!(
        s.workdir().join(".env").exists(),
        "the env file is written in the pool"
    );
    let (app, db) = (stack.container("app"), stack.container("db"));
    assert!(
        common::stack::inspect(&app).is_none() && common::stack::inspect(&db).is_none(),
        "no container in the pool:\n{}",
        log()
    );
    let image = format!("{}/tester/web:1", stack.registry);
    assert!(
        common::stack::inspect(&image).is_some(),
        "the image is pulled in the pool"
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        common::stack::inspect(&app).is_none(),
        "still nothing started while warm"
    );

    let in_service = Instant::now();
    std::fs::write(fixture.join("target-lifecycle-state"), "InService").unwrap();
    let serving = eventually(async || common::stack::running_healthy(&app)).await;
    let to_healthy = in_service.elapsed();
    let _ = daemon.kill();
    let _ = daemon.wait();
    assert!(serving, "not started once in service:\n{}", log());
    assert!(
        log().contains("in service: starting the containers"),
        "{}",
        log()
    );
    println!(
        "warm pool: prepared in {:.1} s; InService to healthy in {:.1} s (target state read every 2 s)",
        prepared.as_secs_f64(),
        to_healthy.as_secs_f64()
    );
}

/// The launch race: the agent asks before Auto Scaling has recorded the launch action (the
/// instance is still `Pending`, heartbeats and CompleteLifecycleAction answer "No active Lifecycle
/// Action found"). The agent keeps the hook and asks again with backoff until it is there.
#[tokio::test(flavor = "multi_thread")]
async fn a_launch_action_recorded_late_is_still_completed() {
    let rig = Rig::get();
    let asg = autoscaling(&rig);
    let group = unique_group("race");
    let instance = group_with_launch_hook_after(&asg, &group, Some(Duration::from_secs(3))).await;
    assert_eq!(lifecycle_state(&asg, &instance).await, "Pending");
    let prefix = unique_prefix("race");
    let parameter = format!("{prefix}/GREETING");
    rig.put(&parameter, "hello", ParameterType::String).await;
    let s = Scratch::new();
    let fixture = fixture(s.dir.path(), &rig, &instance, Some(&group));
    let imds = OwnImds::start(&rig, &rig.moto_url, s.dir.path(), &fixture);
    s.config(&rig, &config(&parameter));
    let env = [("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.url.as_str())];
    let run = tokio::task::block_in_place(|| s.agent_with(&rig, &["sync"], &env));
    run.expect(0);
    assert!(
        run.stderr.contains("the launch action is not recorded yet"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("no active lifecycle action yet; asking again"),
        "{}",
        run.stderr
    );
    assert_eq!(
        lifecycle_state(&asg, &instance).await,
        "InService",
        "{}",
        run.stderr
    );
}
