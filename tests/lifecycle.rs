//! The Auto Scaling launch lifecycle hook, against the rig's moto (whose Auto Scaling the rig
//! extends: a launch hook holds a new instance in `Pending:Wait`, and CompleteLifecycleAction moves
//! it on). Each test makes a group of its own with one launch hook, lets moto launch an instance
//! into it, and runs `kicky-agent sync` as that instance: an IMDSv2 layer of the test's own serves
//! the instance's id (and, in one test, its tags). What the agent did is read back from Auto
//! Scaling with DescribeAutoScalingInstances, and from `kicky-agent status`.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_ssm::types::ParameterType;
use common::asg::{
    autoscaling, group_with_hook, group_with_launch_hook, group_with_launch_hook_after, HOOK,
};
use common::imds::OwnImds;
use common::throttle::ThrottleProxy;
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
    // The timeline ends with the lifecycle call, after the sync's own phases.
    let json = s.agent_with(&rig, &["status", "--json"], &env);
    let json: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let phases: Vec<(String, String, u64)> = json["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let text = |k: &str| s[k].as_str().unwrap().to_string();
            (text("kind"), text("what"), s["start_ms"].as_u64().unwrap())
        })
        .collect();
    let kinds: Vec<&str> = phases.iter().map(|(k, ..)| k.as_str()).collect();
    assert_eq!(kinds, ["parameters", "lifecycle"], "{phases:?}");
    let (_, what, lifecycle_start) = phases.last().unwrap();
    assert_eq!(what, &format!("CONTINUE to hook {HOOK}"));
    assert!(
        phases.iter().all(|(.., start)| start <= lifecycle_start),
        "{phases:?}"
    );

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
            // The daemon logs the completion once Auto Scaling answered it: a moment after the
            // instance shows InService.
            let logged = || {
                std::fs::read_to_string(s.path("daemon.log"))
                    .unwrap_or_default()
                    .contains("lifecycle action completed: CONTINUE")
            };
            while !logged() && started.elapsed() < Duration::from_secs(40) {
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

/// The two-service stack's daemon on an instance in service, in a group with a launch and a
/// termination hook; `spot`: a Spot instance.
struct InService {
    instance: String,
    stack: common::stack::Stack,
    fixture: PathBuf,
    imds: OwnImds,
    daemon: std::process::Child,
}

async fn in_service_with_both_hooks(
    rig: &Rig,
    asg: &aws_sdk_autoscaling::Client,
    test: &str,
    spot: bool,
) -> InService {
    let group = unique_group(test);
    let instance = group_with_launch_hook(asg, &group).await;
    add_termination_hook(asg, &group).await;
    let (stack, fixture, imds) = daemon_stack(rig, test, &group, &instance, "InService").await;
    if spot {
        std::fs::write(fixture.join("instance-life-cycle"), "spot").unwrap();
    }
    let daemon = stack.scratch.spawn_daemon(&imds.url, &[]);
    let app = stack.container("app");
    let up = eventually(async || {
        lifecycle_state(asg, &instance).await == "InService" && common::stack::running_healthy(&app)
    })
    .await;
    let log = std::fs::read_to_string(stack.scratch.path("daemon.log")).unwrap_or_default();
    assert!(up, "never in service:\n{log}");
    InService {
        instance,
        stack,
        fixture,
        imds,
        daemon,
    }
}

/// A scale-in that takes `instance`: Auto Scaling holds it in `Terminating:Wait` and its target
/// state says `Terminated`; whether the termination hook was then completed (30 s at most).
async fn scale_in(asg: &aws_sdk_autoscaling::Client, instance: &str, fixture: &Path) -> bool {
    asg.terminate_instance_in_auto_scaling_group()
        .instance_id(instance)
        .should_decrement_desired_capacity(true)
        .send()
        .await
        .expect("scale in");
    assert_eq!(lifecycle_state(asg, instance).await, "Terminating:Wait");
    std::fs::write(fixture.join("target-lifecycle-state"), "Terminated").unwrap();
    eventually(async || lifecycle_state(asg, instance).await == "Terminating:Proceed").await
}

const TWO_SERVICES: &str = "services:\n  db:\n    image: {registry}/tester/web:1\n    stop_grace_period: 3s\n  app:\n    image: {registry}/tester/web:1\n    depends_on:\n      db:\n        condition: service_healthy\n";

/// A scale-in with a termination hook: the daemon sees the instance's target state go to
/// `Terminated`, stops the app before the database it depends on, then completes the hook with
/// CONTINUE; Auto Scaling moves the instance on only then.
#[tokio::test]
async fn the_daemon_drains_the_stack_then_completes_the_termination_hook() {
    let rig = Rig::get();
    let asg = autoscaling(&rig);
    let InService {
        instance,
        stack,
        fixture,
        imds,
        mut daemon,
    } = in_service_with_both_hooks(&rig, &asg, "drain", false).await;
    let s = &stack.scratch;
    let (app, db) = (stack.container("app"), stack.container("db"));
    let log = || std::fs::read_to_string(s.path("daemon.log")).unwrap_or_default();
    let proceeded = scale_in(&asg, &instance, &fixture).await;
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
    // Not a Spot instance (metadata has no `instance-life-cycle: spot`): no notice was read.
    let asked = imds.log_text();
    assert!(asked.contains("instance-life-cycle"), "{asked}");
    assert!(!asked.contains("spot/instance-action"), "{asked}");
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
        run.stderr.contains("no active lifecycle action yet"),
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

/// Waits (`secs` at most) until `done` holds; whether it did.
async fn within(secs: u64, mut done: impl AsyncFnMut() -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(secs) {
        if done().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}

/// Auto Scaling throttles each lifecycle call for longer than the SDK's own retries last (its 5
/// attempts): the group lookup, DescribeLifecycleHooks, the heartbeat and
/// CompleteLifecycleAction are asked again, with backoff, until answered, and the instance goes
/// in service. (A throttled lookup used to mean "no hook": the instance then waited in
/// `Pending:Wait` until the hook's timeout abandoned it.)
#[tokio::test(flavor = "multi_thread")]
async fn throttled_lifecycle_calls_still_continue_the_launch() {
    let rig = Rig::get();
    let asg = autoscaling(&rig);
    let group = unique_group("lc_throttled");
    let instance = group_with_launch_hook(&asg, &group).await;
    let parameter = format!("{}/GREETING", unique_prefix("lc_throttled"));
    rig.put(&parameter, "hello", ParameterType::String).await;
    let s = Scratch::new();
    // No tags in metadata: the group comes from DescribeAutoScalingInstances, throttled too.
    let fixture = fixture(s.dir.path(), &rig, &instance, None);
    let imds = OwnImds::start(&rig, &rig.moto_url, s.dir.path(), &fixture);
    let actions = [
        "DescribeAutoScalingInstances",
        "DescribeLifecycleHooks",
        "RecordLifecycleActionHeartbeat",
        "CompleteLifecycleAction",
    ];
    let rules: Vec<String> = actions
        .iter()
        .map(|a| format!("autoscaling:{a}:count=7"))
        .collect();
    let rules: Vec<&str> = rules.iter().map(String::as_str).collect();
    let proxy = ThrottleProxy::start(&rig, s.dir.path(), &rules, &[]);
    s.config(&rig, &config(&parameter).replace("{moto}", &proxy.url));
    let env = [("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.url.as_str())];
    let run = tokio::task::block_in_place(|| s.agent_with(&rig, &["-v", "sync"], &env));
    run.expect(0);
    assert_eq!(
        lifecycle_state(&asg, &instance).await,
        "InService",
        "{}",
        run.stderr
    );
    for action in actions {
        let (throttled, answered) = proxy.count(action);
        assert!(
            throttled == 7 && answered >= 1,
            "{action}: {throttled} throttled, {answered} answered\n{}",
            run.stderr
        );
    }
    assert!(
        run.stderr.contains("Throttling: Rate exceeded"),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("carrying on without a lifecycle hook"),
        "{}",
        run.stderr
    );
    let record = status_lifecycle(&s, &rig, &imds, 0);
    assert_eq!(record["action"], "CONTINUE", "{record}");
    assert!(record["error"].is_null(), "{record}");
}

/// The daemon's lookup of the hook takes over 40 s (DescribeLifecycleHooks throttled for its
/// first 40 s): the launch is still completed with CONTINUE once it ends, however long after
/// the first sync. (It used to be cut off at 30 s, and the hook left to time out.)
#[tokio::test(flavor = "multi_thread")]
async fn a_lookup_slower_than_40_s_still_completes_the_launch() {
    let rig = Rig::get();
    let asg = autoscaling(&rig);
    let group = unique_group("lc_40s");
    let instance = group_with_launch_hook(&asg, &group).await;
    let parameter = format!("{}/GREETING", unique_prefix("lc_40s"));
    rig.put(&parameter, "hello", ParameterType::String).await;
    let s = Scratch::new();
    let fixture = fixture(s.dir.path(), &rig, &instance, Some(&group));
    let imds = OwnImds::start(&rig, &rig.moto_url, s.dir.path(), &fixture);
    let proxy = ThrottleProxy::start(
        &rig,
        s.dir.path(),
        &["autoscaling:DescribeLifecycleHooks:seconds=40"],
        &[],
    );
    let text = format!(
        "{}control_socket: {}\nwatch:\n  interval: 0\n",
        config(&parameter).replace("{moto}", &proxy.url),
        s.path("run/control.sock").display()
    );
    s.config(&rig, &text);
    let started = Instant::now();
    let mut daemon = s.spawn_daemon(&imds.url, &[]);
    let in_service = within(150, async || {
        lifecycle_state(&asg, &instance).await == "InService"
    })
    .await;
    let took = started.elapsed();
    let _ = daemon.kill();
    let _ = daemon.wait();
    let log = std::fs::read_to_string(s.path("daemon.log")).unwrap_or_default();
    assert!(in_service, "never in service:\n{log}");
    assert!(
        took >= Duration::from_secs(40),
        "{took:?}: not throttled?\n{log}"
    );
    let (throttled, answered) = proxy.count("DescribeLifecycleHooks");
    assert!(throttled > 5 && answered >= 1, "{throttled} {answered}");
    let synced = log.find("first sync converged and healthy").expect(&log);
    let completed = log
        .find("lifecycle action completed: CONTINUE")
        .expect(&log);
    assert!(synced < completed, "{log}");
    assert!(!log.contains("no lifecycle hook"), "{log}");
}

/// A hook with AWS's shortest HeartbeatTimeout, 30 s, and a first sync that takes about 45 s
/// (its container's first health check comes after 45 s): the daemon heartbeats every 10 s (a
/// third of the hook's timeout, under `lifecycle.heartbeat_interval`'s 60 s), so the hook never
/// times out and the launch is continued once healthy. (With a heartbeat every 60 s, the rig's
/// Auto Scaling applied the hook's ABANDON at 30 s.)
#[tokio::test(flavor = "multi_thread")]
async fn a_30_s_hook_gets_heartbeats_in_time() {
    let rig = Rig::get();
    let asg = autoscaling(&rig);
    let group = unique_group("lc_hb30");
    let instance = group_with_hook(&asg, &group, None, 30).await;
    let stack = common::stack::Stack::new(&rig, "hb30").await;
    stack.env(&rig, "A=1\n").await;
    let s = &stack.scratch;
    let p = &stack.project;
    std::fs::create_dir_all(s.workdir()).unwrap();
    std::fs::write(
        s.workdir().join("docker-compose.yml"),
        format!(
            "services:\n  web:\n    image: {}/tester/web:1\n    healthcheck:\n      test: [\"CMD\", \"/bin/wget\", \"-q\", \"-O\", \"/dev/null\", \"http://127.0.0.1:8080/health\"]\n      interval: 45s\n",
            stack.registry
        ),
    )
    .unwrap();
    s.config(
        &rig,
        &format!(
            "project: {p}\nworkdir: {{workdir}}\naws:\n  endpoint_url: {{moto}}\n\
             env:\n  parameters:\n    - name: /kt/{p}/env\n      format: dotenv\n\
             compose:\n  file: docker-compose.yml\n  pull: missing\n  healthy_timeout: 2m\n\
             registries:\n  - server: {}\n    username: tester\n    password: {{ parameter: /kt/{p}/registry }}\n\
             lifecycle:\n  hook: auto\nwatch:\n  interval: 0\ncontrol_socket: {}\n",
            stack.registry,
            s.path("run/control.sock").display()
        ),
    );
    let dir = s.dir.path();
    let fixture = fixture(dir, &rig, &instance, Some(&group));
    let imds = OwnImds::start(&rig, &rig.moto_url, dir, &fixture);
    let started = Instant::now();
    let mut daemon = s.spawn_daemon(&imds.url, &[]);
    let mut state = String::new();
    let settled = within(120, async || {
        state = lifecycle_state(&asg, &instance).await;
        state == "InService" || state.starts_with("Terminating")
    })
    .await;
    let took = started.elapsed();
    let _ = daemon.kill();
    let _ = daemon.wait();
    let log = std::fs::read_to_string(s.path("daemon.log")).unwrap_or_default();
    assert!(settled, "neither in service nor abandoned:\n{log}");
    assert_eq!(state, "InService", "the 30 s hook timed out:\n{log}");
    assert!(
        took > Duration::from_secs(40),
        "{took:?}: the sync was not slow\n{log}"
    );
    assert!(log.contains("heartbeat_every=10s"), "{log}");
}

/// An instance launched into a warm pool: Auto Scaling answers its first heartbeat "no active
/// lifecycle action" while the instance is `Warmed:Pending:Wait` (moto has no warm-pool
/// lifecycle: the rig's proxy relabels the launch race's `Pending`). The agent keeps the hook as
/// pending, completes it once recorded, and `status` says the instance waits in the warm pool.
#[tokio::test(flavor = "multi_thread")]
async fn a_warm_pool_launch_race_is_still_completed_and_status_says_warm_pool() {
    let rig = Rig::get();
    let asg = autoscaling(&rig);
    let group = unique_group("lc_warm_race");
    let instance = group_with_launch_hook_after(&asg, &group, Some(Duration::from_secs(3))).await;
    let parameter = format!("{}/GREETING", unique_prefix("lc_warm_race"));
    rig.put(&parameter, "hello", ParameterType::String).await;
    let s = Scratch::new();
    let fixture = fixture(s.dir.path(), &rig, &instance, Some(&group));
    std::fs::write(fixture.join("target-lifecycle-state"), "Warmed:Stopped").unwrap();
    let imds = OwnImds::start(&rig, &rig.moto_url, s.dir.path(), &fixture);
    let proxy = ThrottleProxy::start(
        &rig,
        s.dir.path(),
        &[],
        &["autoscaling:DescribeAutoScalingInstances:<LifecycleState>Pending</LifecycleState>=><LifecycleState>Warmed:Pending:Wait</LifecycleState>"],
    );
    s.config(&rig, &config(&parameter).replace("{moto}", &proxy.url));
    let env = [("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.url.as_str())];
    let run = tokio::task::block_in_place(|| s.agent_with(&rig, &["-v", "sync"], &env));
    run.expect(0);
    assert!(
        run.stderr.contains("the launch action is not recorded yet")
            && run.stderr.contains("Warmed:Pending:Wait"),
        "{}",
        run.stderr
    );
    assert_eq!(
        lifecycle_state(&asg, &instance).await,
        "InService",
        "{}",
        run.stderr
    );
    let text = s.agent_with(&rig, &["status"], &env);
    text.expect(0);
    assert!(
        text.stdout
            .contains("instance: waiting in the warm pool (target lifecycle state Warmed:Stopped)"),
        "{}",
        text.stdout
    );
    let json = s.agent_with(&rig, &["status", "--json"], &env);
    let json: serde_json::Value = serde_json::from_str(&json.stdout).expect("status --json");
    assert_eq!(json["warm_pool"], true, "{json}");
    assert_eq!(json["target_lifecycle_state"], "Warmed:Stopped", "{json}");
}

/// When each container of the project was created and last started (`None`: never started).
fn created_and_started(project: &str) -> Vec<(String, SystemTime, Option<SystemTime>)> {
    let filter = format!("label=com.docker.compose.project={project}");
    let out = Command::new("docker")
        .args(["ps", "-aq", "--filter", &filter])
        .output()
        .unwrap();
    let time = |v: &serde_json::Value| {
        v.as_str()
            .filter(|t| !t.starts_with("0001-"))
            .map(|t| humantime::parse_rfc3339(t).unwrap_or_else(|e| panic!("{t}: {e}")))
    };
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(common::stack::inspect)
        .map(|c| {
            (
                c["Name"].as_str().unwrap_or_default().to_string(),
                time(&c["Created"]).expect("Created"),
                time(&c["State"]["StartedAt"]),
            )
        })
        .collect()
}

/// `Terminated` arrives while a rollout waits for the new app container's health (its health
/// check is a minute away): the drain shuts the sync's engine, so from then on nothing is
/// created or started (the rollback does not start the previous app again, as it used to about
/// eight seconds after `Terminated`); the containers are stopped, and only then is the
/// termination hook completed with CONTINUE.
#[tokio::test(flavor = "multi_thread")]
async fn terminated_mid_rollout_creates_and_starts_nothing_after_the_drain_began() {
    let rig = Rig::get();
    let asg = autoscaling(&rig);
    let group = unique_group("midroll");
    let instance = group_with_launch_hook(&asg, &group).await;
    add_termination_hook(&asg, &group).await;
    let (stack, fixture, imds) =
        daemon_stack(&rig, "midroll", &group, &instance, "InService").await;
    let s = &stack.scratch;
    let mut daemon = s.spawn_daemon(&imds.url, &[]);
    let log = || std::fs::read_to_string(s.path("daemon.log")).unwrap_or_default();
    let (app, db) = (stack.container("app"), stack.container("db"));
    let up = within(60, async || {
        lifecycle_state(&asg, &instance).await == "InService"
            && common::stack::running_healthy(&app)
    })
    .await;
    assert!(up, "never in service:\n{}", log());
    let old_app = common::stack::inspect(&app).unwrap()["Id"]
        .as_str()
        .unwrap()
        .to_string();

    // A new app whose first health check is a minute away: the rollout starts it beside the old
    // one and waits.
    let slow = TWO_SERVICES.replace(
        "        condition: service_healthy\n",
        "        condition: service_healthy\n    healthcheck:\n      test: [\"CMD\", \"/bin/wget\", \"-q\", \"-O\", \"/dev/null\", \"http://127.0.0.1:8080/health\"]\n      interval: 60s\n",
    );
    std::fs::write(
        s.workdir().join("docker-compose.yml"),
        slow.replace("{registry}", &stack.registry),
    )
    .unwrap();
    let hup = Command::new("kill")
        .args(["-HUP", &daemon.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let service = "label=com.docker.compose.service=app".to_string();
    let project = format!("label=com.docker.compose.project={}", stack.project);
    let new_app_runs = within(60, async || {
        let out = Command::new("docker")
            .args([
                "ps",
                "-q",
                "--no-trunc",
                "--filter",
                &project,
                "--filter",
                &service,
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .any(|id| id != old_app)
    })
    .await;
    assert!(
        new_app_runs,
        "the rollout did not start a new app:\n{}",
        log()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Scale-in: the termination hook holds the instance; metadata says Terminated.
    asg.terminate_instance_in_auto_scaling_group()
        .instance_id(&instance)
        .should_decrement_desired_capacity(true)
        .send()
        .await
        .expect("scale in");
    let drain_began = SystemTime::now();
    std::fs::write(fixture.join("target-lifecycle-state"), "Terminated").unwrap();
    let proceeded = within(90, async || {
        lifecycle_state(&asg, &instance).await == "Terminating:Proceed"
    })
    .await;
    // Long enough for a rollback's start to show (it came about eight seconds after).
    tokio::time::sleep(Duration::from_secs(12)).await;
    let _ = daemon.kill();
    let _ = daemon.wait();
    let log = log();
    assert!(proceeded, "the termination hook was not completed:\n{log}");
    let containers = created_and_started(&stack.project);
    // The db and the previous app (the new one was removed by the rollback, never started again).
    assert!(containers.len() >= 2, "{containers:?}");
    for (name, created, started) in &containers {
        assert!(
            *created < drain_began,
            "{name} was created after the drain began:\n{log}"
        );
        assert!(
            started.is_none_or(|at| at < drain_began),
            "{name} was started after the drain began:\n{log}"
        );
    }
    for name in [&app, &db] {
        if let Some(c) = common::stack::inspect(name) {
            assert_eq!(c["State"]["Running"], false, "{name} still runs:\n{log}");
        }
    }
    let filter = format!("label=com.docker.compose.project={}", stack.project);
    let running = Command::new("docker")
        .args(["ps", "-q", "--filter", &filter])
        .output()
        .unwrap();
    assert!(
        running.stdout.is_empty(),
        "containers still run after the drain:\n{log}"
    );
    // The sync was ended first, refused by the fence; the hook completed after the stops.
    assert!(log.contains("ending the sync in flight first"), "{log}");
    assert!(log.contains("the instance is terminating"), "{log}");
    let at = |text: &str| {
        log.rfind(text)
            .unwrap_or_else(|| panic!("{text:?} not in:\n{log}"))
    };
    assert!(at("termination lifecycle action completed: CONTINUE") > at("stopping (grace"));
}

/// A Spot instance: a rebalance recommendation is reported and stops nothing; the interruption
/// notice (two minutes before EC2 acts) stops the app, then the database it depends on, at once
/// and without any hook; `status` says why. When the group then terminates the instance
/// through its termination hook, the hook is completed.
#[tokio::test]
async fn a_spot_interruption_notice_drains_the_stack_within_the_two_minutes() {
    let rig = Rig::get();
    let asg = autoscaling(&rig);
    let InService {
        instance,
        stack,
        fixture,
        imds,
        mut daemon,
    } = in_service_with_both_hooks(&rig, &asg, "spot", true).await;
    let s = &stack.scratch;
    let (app, db) = (stack.container("app"), stack.container("db"));
    let log = || std::fs::read_to_string(s.path("daemon.log")).unwrap_or_default();
    let started = common::stack::started_at(&app);

    std::fs::write(
        fixture.join("rebalance-recommendation"),
        r#"{"noticeTime": "2026-12-08T08:17:00Z"}"#,
    )
    .unwrap();
    let said = eventually(async || log().contains("Spot rebalance recommendation")).await;
    assert!(
        said,
        "the rebalance recommendation was not reported:\n{}",
        log()
    );
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(common::stack::running_healthy(&app), "{}", log());
    assert_eq!(
        common::stack::started_at(&app),
        started,
        "a rebalance stops nothing"
    );

    std::fs::write(
        fixture.join("spot-instance-action"),
        r#"{"action": "terminate", "time": "2026-12-08T08:22:00Z"}"#,
    )
    .unwrap();
    let noticed = Instant::now();
    let stopped = eventually(async || {
        [&app, &db].iter().all(|name| {
            common::stack::inspect(name).is_some_and(|c| c["State"]["Running"] == false)
        })
    })
    .await;
    let took = noticed.elapsed();
    assert!(stopped, "the containers still run:\n{}", log());
    println!("spot: notice to every container stopped in {took:.1?} (EC2 gives 120 s)");
    assert!(finished_at(&app) <= finished_at(&db), "{}", log());
    let status = s.agent_with(
        &rig,
        &["status"],
        &[("AWS_EC2_METADATA_SERVICE_ENDPOINT", &imds.url)],
    );
    assert!(
        status.stdout.contains(
            "instance: Spot interruption notice: terminate at 2026-12-08T08:22:00Z: the containers are stopped"
        ),
        "{}",
        status.all()
    );
    let drained = eventually(async || {
        log().contains("container stopped (Spot notice")
            || log().contains("containers stopped (Spot notice")
    })
    .await;
    assert!(drained, "{}", log());

    let proceeded = scale_in(&asg, &instance, &fixture).await;
    let _ = daemon.kill();
    let _ = daemon.wait();
    let log = log();
    assert!(proceeded, "the termination hook was not completed:\n{log}");
    assert!(
        log.contains(
            "Spot interruption notice: terminate at 2026-12-08T08:22:00Z: stopping the containers"
        ),
        "{log}"
    );
}
