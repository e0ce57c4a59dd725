//! Readiness probed from the host, against the machine's Docker Engine: `tester/spring:1` is the
//! seed stack's Spring Boot service as its buildpack image is (no healthcheck, no curl, wget or
//! nc inside), whose port opens after 2 s and whose `/actuator/health` says DOWN for 3 s more.
//! The sync must not call it ready before it is; a service nothing checks is said to be so.

use crate::common;

use std::time::Instant;

use common::stack::{docker, inspect, Stack};
use common::Rig;

/// Three services of the same slow image, each probed a different way (two from the compose file,
/// one from the agent's config), and one that nothing checks.
const COMPOSE: &str = "\
services:
  web:
    image: {registry}/tester/spring:1
    x-kicky-agent:
      ready:
        http: {port: 8080, path: /actuator/health, body: '\"status\":\"UP\"'}
        interval: 500ms
  db:
    image: {registry}/tester/spring:1
    environment: {LISTEN_AFTER: '4'}
  worker:
    image: {registry}/tester/spring:1
    x-kicky-agent:
      ready:
        exec: [/bin/busybox, test, -f, /tmp/ready]
  plain:
    image: {registry}/tester/spring:1
";

const CONFIG_PROBE: &str = "  ready:\n    db:\n      tcp: {port: 8080}\n      interval: 250ms\n";

/// The container's address on its network, as the engine says.
fn address_of(container: &str) -> String {
    let c = inspect(container).expect("the container");
    let networks = c["NetworkSettings"]["Networks"]
        .as_object()
        .unwrap()
        .clone();
    networks.values().next().unwrap()["IPAddress"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn a_service_without_a_healthcheck_is_ready_when_its_probe_says_so() {
    let rig = Rig::get();
    let stack = Stack::new(&rig, "ready").await;
    stack.env(&rig, "GREETING=hello\n").await;
    stack.compose(&rig, COMPOSE, CONFIG_PROBE);
    let image = format!("{}/tester/spring:1", stack.registry);
    let t0 = Instant::now();
    // As systemd runs it: stderr is the journal's stream, each line prefixed with its priority.
    let (run, stack, rig) = tokio::task::spawn_blocking(move || {
        let run = stack
            .scratch
            .agent_with(&rig, &["sync"], &[("JOURNAL_STREAM", "8:4242")]);
        (run, stack, rig)
    })
    .await
    .unwrap();
    let took = t0.elapsed();
    run.expect(0);

    // The image is what the issue describes: no healthcheck, no probe tool inside.
    let config = &common::stack::inspect(&image).unwrap()["Config"];
    assert!(config["Healthcheck"].is_null(), "{config}");
    // Checked at once, before anything else could become ready: a sync that called them ready
    // after the 1 s settle time (the behaviour without probes) fails each of these.
    let web = stack.container("web");
    let health = docker(&["exec", &web, "/bin/busybox", "cat", "/www/actuator/health"]);
    assert_eq!(
        health.trim(),
        r#"{"status":"UP"}"#,
        "web was called ready while DOWN"
    );
    let db = address_of(&stack.container("db"));
    std::net::TcpStream::connect((db.as_str(), 8080))
        .unwrap_or_else(|err| panic!("db was called ready before it listened: {err}"));
    let worker = stack.container("worker");
    let ready = std::process::Command::new("docker")
        .args(["exec", &worker, "/bin/busybox", "test", "-f", "/tmp/ready"])
        .status()
        .unwrap();
    assert!(ready.success(), "worker was called ready before /tmp/ready");
    assert!(
        took.as_secs_f64() >= 5.0,
        "the sync took {took:?}: it did not wait for UP"
    );

    let all = run.all();
    let plain = stack.container("plain");
    assert!(
        run.stderr.contains(&format!(
            "\n<4>service plain (container {plain}) is running, no readiness check"
        )),
        "{all}"
    );
    assert!(
        run.stderr.contains("\n<6>fetching parameters and files\n"),
        "{all}"
    );
    let unprefixed: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| !(l.starts_with('<') && l.as_bytes().get(2) == Some(&b'>')))
        .collect();
    assert!(
        unprefixed.is_empty(),
        "lines without a priority: {unprefixed:?}"
    );
    for service in ["web", "db", "worker"] {
        assert!(
            !all.contains(&format!("service {service} (container")),
            "a probed service was warned about: {all}"
        );
    }

    let (status, stack, rig) = stack.run(rig, &["status"]).await;
    status.expect(0);
    let text = &status.stdout;
    for line in [
        format!("{web} (service web): running, ready (probe http :8080/actuator/health)"),
        format!(
            "{} (service db): running, ready (probe tcp :8080)",
            stack.container("db")
        ),
        format!(
            "{worker} (service worker): running, ready (probe exec /bin/busybox test -f /tmp/ready)"
        ),
        format!("{plain} (service plain): running, no readiness check"),
    ] {
        assert!(text.contains(&line), "{line:?} in:\n{text}");
    }
    let (status, stack, rig) = stack.run(rig, &["status", "--timeline"]).await;
    status.expect(0);
    assert!(
        status.stdout.contains("timeline of the last sync ("),
        "{}",
        status.stdout
    );
    let (status, _stack, _rig) = stack.run(rig, &["status", "--json"]).await;
    status.expect(0);
    let json: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    // Where the sync spent its time: the parameters, then each create, each start, then the wait for
    // health, which lasted as long as web took to say UP (5 s after its start).
    let timeline = json["timeline"].as_array().unwrap();
    let first = |kind: &str| {
        timeline
            .iter()
            .find(|s| s["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} in {timeline:?}"))
    };
    let start_of = |kind: &str| first(kind)["start_ms"].as_u64().unwrap();
    // (The image is here already, `pull: missing`: no pull.)
    assert!(start_of("parameters") < start_of("create"), "{timeline:?}");
    assert!(start_of("create") < start_of("start"), "{timeline:?}");
    assert!(start_of("start") <= start_of("health"), "{timeline:?}");
    let kinds = |kind: &str| timeline.iter().filter(|s| s["kind"] == kind).count();
    assert_eq!(
        (kinds("create"), kinds("start"), kinds("health")),
        (4, 4, 1)
    );
    let health_ms = first("health")["ms"].as_u64().unwrap();
    assert!(
        health_ms >= 4000,
        "the health wait took {health_ms} ms: {timeline:?}"
    );
    let readiness: Vec<(String, String, String)> = json["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["service"].as_str().unwrap().to_string(),
                c["readiness"].as_str().unwrap().to_string(),
                c["health"].as_str().unwrap_or("null").to_string(),
            )
        })
        .collect();
    let expected = [
        ("db", "probe tcp :8080", "ready"),
        ("plain", "none", "null"),
        ("web", "probe http :8080/actuator/health", "ready"),
        (
            "worker",
            "probe exec /bin/busybox test -f /tmp/ready",
            "ready",
        ),
    ];
    let expected: Vec<(String, String, String)> = expected
        .iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect();
    assert_eq!(readiness, expected);
}

/// An application that listens but never says UP: the sync fails at its bound, says what the
/// probe last heard, and rolls back (nothing was running before, so nothing runs).
#[tokio::test]
async fn a_probe_that_never_passes_fails_the_sync_with_what_it_last_heard() {
    let rig = Rig::get();
    let stack = Stack::new(&rig, "neverup").await;
    stack.env(&rig, "GREETING=hello\n").await;
    let compose = "\
services:
  web:
    image: {registry}/tester/spring:1
    environment: {NEVER_UP: '1', LISTEN_AFTER: '0'}
    x-kicky-agent:
      ready:
        http: {port: 8080, path: /actuator/health, body: '\"status\":\"UP\"'}
";
    stack.compose(&rig, compose, "");
    // A short bound: the stack's config says 30 s.
    let path = stack.scratch.path("etc/agent.yaml");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("healthy_timeout: 30s", "healthy_timeout: 6s");
    std::fs::write(&path, text).unwrap();
    let (run, stack, _rig) = stack.sync(rig).await;
    run.expect(1);
    let all = run.all();
    assert!(
        all.contains(&format!(
            "service web (container {}): not ready in time; its readiness probe (http :8080/actuator/health) last said: HTTP 200 without \"\\\"status\\\":\\\"UP\\\"\": {{\"status\":\"DOWN\"}}",
            stack.container("web")
        )),
        "{all}"
    );
}
