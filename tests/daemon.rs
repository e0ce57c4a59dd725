//! `kicky-agent run` under a fake systemd: a notify socket that records READY/STATUS/WATCHDOG/
//! STOPPING with their times, a watchdog, the control socket, the watch loop against moto, a
//! broken change rolled back, and SIGTERM leaving the application running.

use crate::common;

use std::process::Command;
use std::time::{Duration, Instant};

use aws_sdk_ssm::types::ParameterType;
use common::systemd::start;
use common::{Rig, Scratch};
use serde_json::Value;

/// Removes the project's containers and network however the test ends.
struct RemoveProject(String);

impl Drop for RemoveProject {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", &format!("{}-web-1", self.0)])
            .output();
        let _ = Command::new("docker")
            .args(["network", "rm", &format!("{}_default", self.0)])
            .output();
    }
}

fn inspect(name: &str) -> Option<Value> {
    let out = Command::new("docker")
        .args(["inspect", name])
        .output()
        .unwrap();
    serde_json::from_slice::<Value>(&out.stdout)
        .ok()?
        .get(0)
        .cloned()
}

fn healthy(name: &str) -> bool {
    inspect(name).is_some_and(|c| c["State"]["Health"]["Status"] == "healthy")
}

fn id_of(name: &str) -> String {
    inspect(name)
        .and_then(|c| c["Id"].as_str().map(str::to_string))
        .unwrap_or_default()
}

fn env_value(name: &str, key: &str) -> Option<String> {
    let c = inspect(name)?;
    c["Config"]["Env"]
        .as_array()?
        .iter()
        .filter_map(|e| e.as_str())
        .find_map(|e| e.strip_prefix(&format!("{key}=")).map(str::to_string))
}

fn wait_until(bound: Duration, what: &str, mut ok: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ok() {
        assert!(
            started.elapsed() < bound,
            "{what} did not happen within {bound:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_under_systemd() {
    let rig = Rig::get();
    let s = Scratch::new();
    let project = format!("ktdaemon{}", fastrand::u32(..) % 100_000);
    let registry = std::env::var("KICKY_RIG_REGISTRY").unwrap();
    let password = std::env::var("KICKY_RIG_REGISTRY_PASSWORD").unwrap();
    rig.put(
        &format!("/kt/{project}/registry"),
        &password,
        ParameterType::SecureString,
    )
    .await;
    rig.put(
        &format!("/kt/{project}/env"),
        "API_KEY=first-8a8a\n",
        ParameterType::SecureString,
    )
    .await;
    let compose = |image: &str| {
        format!("services:\n  web:\n    image: {registry}/tester/{image}\n    environment:\n      API_KEY: ${{API_KEY}}\n")
    };
    std::fs::create_dir_all(s.workdir()).unwrap();
    std::fs::write(s.workdir().join("docker-compose.yml"), compose("web:1")).unwrap();
    let socket = s.path("run/control.sock");
    s.config(
        &rig,
        &format!(
            "project: {project}\nworkdir: {{workdir}}\naws:\n  endpoint_url: {{moto}}\n\
             env:\n  parameters:\n    - name: /kt/{project}/env\n      format: dotenv\n\
             compose:\n  file: docker-compose.yml\n  healthy_timeout: 30s\n\
             registries:\n  - server: {registry}\n    username: tester\n    password: {{ parameter: /kt/{project}/registry }}\n\
             watch:\n  interval: 5s\n  apply: auto\n\
             control_socket: {}\nmetrics:\n  textfile: {}\n",
            socket.display(),
            s.path("metrics/kicky-agent.prom").display()
        ),
    );
    let started = Instant::now();
    let (daemon, notify) = start(
        &s,
        &rig.imds_url,
        &[("WATCHDOG_USEC", "2000000")],
        &["first-8a8a", "second-9b9b"],
    );
    let _cleanup = RemoveProject(project.clone());
    let web = format!("{project}-web-1");

    // READY only once the application is healthy; STATUS said what it was doing before.
    let ready = notify.wait_for("READY=1", Duration::from_secs(60));
    assert!(
        healthy(&web),
        "READY=1 came before the container was healthy"
    );
    let statuses: Vec<String> = notify
        .lines()
        .into_iter()
        .filter(|l| l.starts_with("STATUS="))
        .collect();
    assert!(
        statuses.iter().any(|s| s.contains("fetching parameters")),
        "{statuses:?}"
    );
    assert!(
        statuses
            .iter()
            .any(|s| s.contains("waiting for") && s.contains("healthy")),
        "{statuses:?}"
    );
    let first_status = notify.first("STATUS=").unwrap();
    assert!(first_status < ready);
    notify.wait_for("STATUS=in sync since", Duration::from_secs(5));
    // WATCHDOG=1 from the main loop, every half WatchdogSec.
    std::thread::sleep(Duration::from_millis(2500));
    let pings: Vec<Instant> = notify
        .all()
        .into_iter()
        .filter(|(_, l)| l == "WATCHDOG=1")
        .map(|(t, _)| t)
        .collect();
    assert!(pings.len() >= 2, "watchdog pings: {}", pings.len());
    assert!(
        pings
            .windows(2)
            .all(|w| w[1] - w[0] < Duration::from_millis(1500)),
        "the watchdog must keep time"
    );
    let first_id = id_of(&web);
    assert!(started.elapsed() < Duration::from_secs(60));

    // A parameter changed in moto is applied by the watch loop, without a restart.
    rig.put(
        &format!("/kt/{project}/env"),
        "API_KEY=second-9b9b\n",
        ParameterType::SecureString,
    )
    .await;
    tokio::task::block_in_place(|| {
        wait_until(
            Duration::from_secs(40),
            "the watch loop applying the change",
            || env_value(&web, "API_KEY").as_deref() == Some("second-9b9b") && healthy(&web),
        )
    });
    let second_id = id_of(&web);
    assert_ne!(second_id, first_id);

    // resync over the control socket streams progress and the result.
    let resync = tokio::task::block_in_place(|| {
        Command::new(env!("CARGO_BIN_EXE_kicky-agent"))
            .args([
                "--config",
                &s.path("etc/agent.yaml").display().to_string(),
                "resync",
            ])
            .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", &rig.imds_url)
            .output()
            .unwrap()
    });
    let out = String::from_utf8_lossy(&resync.stdout).into_owned();
    assert!(resync.status.success(), "{out}");
    assert!(
        out.contains("fetching parameters and files") && out.contains("in sync"),
        "{out}"
    );
    assert!(
        !out.contains("second-9b9b"),
        "a secret reached the resync output"
    );

    // A broken change: the old container keeps serving throughout, the sync reports the rollback.
    let started = inspect(&web).unwrap()["State"]["StartedAt"].clone();
    std::fs::write(
        s.workdir().join("docker-compose.yml"),
        compose("unhealthy:1"),
    )
    .unwrap();
    let broken = tokio::task::block_in_place(|| {
        Command::new(env!("CARGO_BIN_EXE_kicky-agent"))
            .args([
                "--config",
                &s.path("etc/agent.yaml").display().to_string(),
                "resync",
            ])
            .output()
            .unwrap()
    });
    let out = String::from_utf8_lossy(&broken.stdout).into_owned();
    assert_eq!(broken.status.code(), Some(1), "{out}");
    assert!(out.contains("rolled back"), "{out}");
    assert_eq!(
        id_of(&web),
        second_id,
        "the previous container serves again"
    );
    assert_eq!(
        inspect(&web).unwrap()["State"]["StartedAt"],
        started,
        "and was never stopped"
    );
    assert!(healthy(&web));
    notify.wait_for("STATUS=degraded", Duration::from_secs(5));

    // The metrics, for node_exporter's textfile collector, counted what happened.
    let metrics = std::fs::read_to_string(s.path("metrics/kicky-agent.prom")).unwrap();
    let value = |series: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit_once(' '))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in:\n{metrics}"))
    };
    assert!(value("kicky_agent_syncs_total") >= 4.0, "{metrics}");
    assert_eq!(value("kicky_agent_rollbacks_total"), 1.0, "{metrics}");
    assert_eq!(value("kicky_agent_last_sync_success"), 0.0);
    assert_eq!(
        value(&format!(
            "kicky_agent_service_healthy{{project=\"{project}\",service=\"web\""
        )),
        1.0
    );

    // SIGHUP (what a `kill -HUP` or an older reload would send) syncs again: the previous
    // sync failed, so a sync now starts over from fetching.
    let pid = daemon.child.id().to_string();
    let fetching_before = notify
        .lines()
        .iter()
        .filter(|l| l.starts_with("STATUS=fetching"))
        .count();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    tokio::task::block_in_place(|| {
        wait_until(Duration::from_secs(20), "a sync after SIGHUP", || {
            notify
                .lines()
                .iter()
                .filter(|l| l.starts_with("STATUS=fetching"))
                .count()
                > fetching_before
        })
    });

    // SIGTERM (here in the middle of that sync): STOPPING=1, the sync in flight is let finish
    // (its rollback included), a clean exit, the application still running.
    let pid = daemon.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    notify.wait_for("STOPPING=1", Duration::from_secs(10));
    let mut daemon = daemon;
    let status = daemon.child.wait().unwrap();
    assert!(
        status.success(),
        "the daemon exits 0 on SIGTERM: {status:?}"
    );
    assert!(
        healthy(&web),
        "stopping the agent must not stop the application"
    );
    assert!(!socket.exists(), "the control socket is removed on exit");
    let _ = Command::new("docker").args(["rm", "-f", &web]).output();
    let _ = Command::new("docker")
        .args(["network", "rm", &format!("{project}_default")])
        .output();
}

#[tokio::test(flavor = "multi_thread")]
async fn resync_without_a_daemon_syncs_here_and_says_so() {
    let rig = Rig::get();
    let s = Scratch::new();
    let prefix = common::unique_prefix("resync-alone");
    rig.put(
        &format!("{prefix}/TOKEN"),
        "alone-secret-3e3e",
        ParameterType::SecureString,
    )
    .await;
    s.config(
        &rig,
        &format!(
            "project: orange\nworkdir: {{workdir}}\naws:\n  endpoint_url: {{moto}}\nenv:\n  parameters:\n    - name: {prefix}/TOKEN\n\
             control_socket: {}\n",
            s.path("run/control.sock").display()
        ),
    );
    let run = tokio::task::block_in_place(|| s.agent(&rig, &["resync"]));
    run.expect(0);
    assert!(
        run.stdout.contains("no kicky-agent daemon is running"),
        "{}",
        run.stdout
    );
    assert!(s.workdir().join(".env").exists());
    run.assert_free_of(&["alone-secret-3e3e"]);
}

/// `watch.apply: report`: a change is reported (STATUS=, the log), not applied.
#[tokio::test(flavor = "multi_thread")]
async fn watch_report_only_reports() {
    let rig = Rig::get();
    let s = Scratch::new();
    let prefix = common::unique_prefix("watch-report");
    rig.put(
        &format!("{prefix}/TOKEN"),
        "report-one-4f4f",
        ParameterType::SecureString,
    )
    .await;
    s.config(
        &rig,
        &format!(
            "project: orange\nworkdir: {{workdir}}\naws:\n  endpoint_url: {{moto}}\nenv:\n  parameters:\n    - name: {prefix}/TOKEN\n\
             watch:\n  interval: 5s\n  apply: report\nlifecycle:\n  hook: off\ncontrol_socket: {}\n",
            s.path("run/control.sock").display()
        ),
    );
    let (_daemon, notify) = start(
        &s,
        &rig.imds_url,
        &[],
        &["report-one-4f4f", "report-two-5a5a"],
    );
    tokio::task::block_in_place(|| notify.wait_for("READY=1", Duration::from_secs(30)));
    let env_file = s.workdir().join(".env");
    let before = std::fs::read(&env_file).unwrap();

    rig.put(
        &format!("{prefix}/TOKEN"),
        "report-two-5a5a",
        ParameterType::SecureString,
    )
    .await;
    tokio::task::block_in_place(|| {
        notify.wait_for(
            "STATUS=changes pending (watch.apply: report)",
            Duration::from_secs(20),
        )
    });
    let status = notify
        .lines()
        .into_iter()
        .find(|l| l.starts_with("STATUS=changes pending"))
        .unwrap();
    assert!(
        status.contains(&format!("parameter {prefix}/TOKEN: version 1 -> 2")),
        "{status}"
    );
    assert!(!status.contains("report-two-5a5a"));
    assert_same!(
        std::fs::read(&env_file).unwrap(),
        before,
        "report mode changes nothing"
    );
}
