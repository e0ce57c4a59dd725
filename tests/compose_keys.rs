//! The compose keys docker compose v2 honours that EC2 applications use, as they reach the real
//! engine: each read from the file, and checked in `docker inspect` (or inside the container).

use crate::common;

use std::time::Duration;

use common::stack::{docker, inspect, running_healthy, Stack};
use common::Rig;

/// GETs `url` from inside `container` (busybox's wget): the body, or wget's complaint.
fn fetch_in(container: &str, url: &str) -> Result<String, String> {
    let out = std::process::Command::new("docker")
        .args(["exec", container, "wget", "-q", "-O", "-", url])
        .output()
        .expect("docker exec");
    match out.status.success() {
        true => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
    }
}

/// A subnet of its own for each run, so parallel runs and earlier leftovers do not clash.
fn subnet() -> (String, String) {
    let n = 100 + fastrand::u8(..100);
    let m = fastrand::u8(1..250);
    (format!("10.{n}.{m}.0/24"), format!("10.{n}.{m}.9"))
}

#[tokio::test]
async fn compose_keys_reach_the_engine() {
    let rig = Rig::get();
    let stack = Stack::new(&rig, "keys").await;
    stack.env(&rig, "GREETING=hello\n").await;
    let (subnet, address) = subnet();
    let workdir = stack.scratch.workdir();
    std::fs::create_dir_all(&workdir).unwrap();
    std::fs::write(workdir.join("raw.env"), "RAW='kept as is' $NOT_EXPANDED\n").unwrap();
    let compose = format!(
        "\
services:
  web:
    image: {{registry}}/tester/web:1
    platform: linux/amd64
    expose: ['9000/udp']
    stdin_open: true
    tty: true
    env_file: [{{ path: raw.env, format: raw }}, {{ path: missing.env, required: false }}]
    security_opt: ['no-new-privileges:true']
    group_add: ['1000']
    cpu_shares: 512
    dns_search: [example.internal]
    dns_opt: ['ndots:2']
    oom_score_adj: 100
    domainname: example.internal
    ipc: private
    memswap_limit: -1
    extra_hosts: ['multi=10.0.0.2,10.0.0.3', 'v6=[::1]']
    deploy:
      resources:
        limits: {{ cpus: '0.5', memory: 64M, pids: 100 }}
        reservations: {{ memory: 32M }}
      restart_policy: {{ condition: on-failure, max_attempts: 3 }}
    networks:
      front: {{ ipv4_address: {address} }}
    volumes:
      - {{ type: bind, source: ./made-for-me, target: /made }}
  sidecar:
    image: {{registry}}/tester/web:1
    entrypoint: [/bin/sh, -c, 'exec sleep 3600']
    stop_signal: SIGKILL
    healthcheck: {{ disable: true }}
    network_mode: service:web
networks:
  front:
    ipam:
      config: [{{ subnet: {subnet} }}]
"
    );
    stack.compose(&rig, &compose, "");
    let (render, stack, rig) = stack.run(rig, &["render"]).await;
    render.expect(0);
    for line in [
        "network_mode: service:web",
        "ipv4_address:",
        "platform: linux/amd64",
    ] {
        assert!(
            render.stdout.contains(line),
            "{line} in:\n{}",
            render.stdout
        );
    }
    let (run, stack, rig) = stack.sync(rig).await;
    run.expect(0);
    let web = stack.container("web");
    assert!(running_healthy(&web));
    let c = inspect(&web).unwrap();
    let config = &c["Config"];
    assert!(config["ExposedPorts"].get("9000/udp").is_some(), "{config}");
    assert_eq!(
        (config["OpenStdin"].as_bool(), config["Tty"].as_bool()),
        (Some(true), Some(true))
    );
    let env: Vec<&str> = config["Env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e.as_str())
        .collect();
    assert!(
        env.contains(&"RAW='kept as is' $NOT_EXPANDED"),
        "raw env_file taken as it is"
    );
    let host = &c["HostConfig"];
    assert_eq!(host["Memory"], 64 * 1024 * 1024);
    assert_eq!(host["NanoCpus"], 500_000_000);
    assert_eq!(host["PidsLimit"], 100);
    assert_eq!(host["MemoryReservation"], 32 * 1024 * 1024);
    assert_eq!(host["RestartPolicy"]["Name"], "on-failure");
    assert_eq!(host["RestartPolicy"]["MaximumRetryCount"], 3);
    for (key, value) in [
        ("SecurityOpt", serde_json::json!(["no-new-privileges:true"])),
        ("GroupAdd", serde_json::json!(["1000"])),
        ("CpuShares", serde_json::json!(512)),
        ("DnsSearch", serde_json::json!(["example.internal"])),
        ("DnsOptions", serde_json::json!(["ndots:2"])),
        ("OomScoreAdj", serde_json::json!(100)),
        ("IpcMode", serde_json::json!("private")),
        ("MemorySwap", serde_json::json!(-1)),
    ] {
        assert_eq!(host[key], value, "{key}");
    }
    assert_eq!(config["Domainname"], "example.internal");
    let hosts: Vec<&str> = host["ExtraHosts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|h| h.as_str())
        .collect();
    for expected in ["multi:10.0.0.2", "multi:10.0.0.3", "v6:::1"] {
        assert!(hosts.contains(&expected), "{expected} in {hosts:?}");
    }
    let network = format!("{}_front", stack.project);
    assert_eq!(
        c["NetworkSettings"]["Networks"][&network]["IPAddress"].as_str(),
        Some(address.as_str()),
        "the fixed address on the ipam subnet"
    );
    assert!(
        workdir.join("made-for-me").is_dir(),
        "a long-syntax bind creates its host path"
    );

    // The sidecar lives in web's network namespace: web answers it on 127.0.0.1.
    let sidecar = stack.container("sidecar");
    let mode = inspect(&sidecar).unwrap()["HostConfig"]["NetworkMode"].clone();
    let web_id = inspect(&web).unwrap()["Id"].as_str().unwrap().to_string();
    assert_eq!(
        mode.as_str(),
        Some(format!("container:{web_id}").as_str()),
        "the engine stores the ID"
    );
    let answer = fetch_in(&sidecar, "http://127.0.0.1:8080/health");
    assert!(answer.is_ok(), "{answer:?}");

    // web gets a new container (a new limit): the sidecar follows it into the new namespace.
    let before = inspect(&sidecar).unwrap()["Id"].clone();
    stack.compose(&rig, &compose.replace("pids: 100", "pids: 200"), "");
    let (run, stack, _rig) = stack.sync(rig).await;
    run.expect(0);
    assert!(
        run.stdout
            .contains("recreate (network_mode: service web's container changed)"),
        "{}",
        run.stdout
    );
    assert_ne!(inspect(&sidecar).unwrap()["Id"], before);
    assert!(
        fetch_in(&sidecar, "http://127.0.0.1:8080/health").is_ok(),
        "the sidecar reaches the new web"
    );
    drop(stack);
    docker(&[
        "network",
        "prune",
        "-f",
        "--filter",
        "label=com.docker.compose.network=front",
    ]);
}

/// `healthcheck.start_interval` needs API 1.44 (Docker 25); this engine (Debian's 20.10) speaks
/// 1.41: a clear error, exit 2, nothing changed; never silently dropped.
#[tokio::test]
async fn start_interval_on_an_older_engine_is_a_clear_error() {
    let rig = Rig::get();
    let stack = Stack::new(&rig, "startint").await;
    stack.env(&rig, "GREETING=hello\n").await;
    let compose = "services:\n  web:\n    image: {registry}/tester/web:1\n    healthcheck:\n      start_period: 30s\n      start_interval: 2s\n";
    stack.compose(&rig, compose, "");
    let (run, stack, _rig) = stack.sync(rig).await;
    let version = docker(&["version", "--format", "{{.Server.APIVersion}}"]);
    if version.trim() >= "1.44" {
        run.expect(0);
        return;
    }
    run.expect(2);
    assert!(
        run.stderr
            .contains("healthcheck.start_interval needs Docker Engine 25 or later (API 1.44)"),
        "{}",
        run.stderr
    );
    assert!(
        inspect(&stack.container("web")).is_none(),
        "nothing created"
    );
}

/// `pull_policy: daily`: pulled at the first sync, not again the same day; due again once a
/// day has passed since the last pull (here: the state file says so).
#[tokio::test]
async fn pull_policy_daily_pulls_once_a_day() {
    let rig = Rig::get();
    let stack = Stack::new(&rig, "daily").await;
    stack.env(&rig, "GREETING=hello\n").await;
    let compose = "services:\n  web:\n    image: {registry}/tester/web:1\n    pull_policy: daily\n";
    stack.compose(&rig, compose, "");
    let (run, stack, rig) = stack.sync(rig).await;
    run.expect(0);
    let image = format!("{}/tester/web:1", stack.registry);
    let (plan, stack, rig) = stack.run(rig, &["plan"]).await;
    plan.expect(0);
    assert!(
        !plan.stdout.contains(&format!("image {image}: pull")),
        "{}",
        plan.stdout
    );
    let state_path = stack.scratch.path(&format!("state/{}.json", stack.project));
    let mut state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state_path).unwrap()).unwrap();
    let two_days_ago = humantime::format_rfc3339_seconds(
        std::time::SystemTime::now() - Duration::from_secs(2 * 86400),
    )
    .to_string();
    state["pulled_at"][&image] = serde_json::Value::String(two_days_ago);
    std::fs::write(&state_path, serde_json::to_vec(&state).unwrap()).unwrap();
    let (plan, _stack, _rig) = stack.run(rig, &["plan"]).await;
    plan.expect(0);
    assert!(
        plan.stdout.contains(&format!("image {image}: pull")),
        "{}",
        plan.stdout
    );
}

/// `links` (a service reachable under an alias, started first) and an SELinux label on a bind
/// (`:z`; a no-op on a host without SELinux, as docker does), as they reach the engine.
#[tokio::test]
async fn links_and_selinux_labels_reach_the_engine() {
    let rig = Rig::get();
    let stack = Stack::new(&rig, "links").await;
    stack.env(&rig, "GREETING=hello\n").await;
    std::fs::create_dir_all(stack.scratch.workdir().join("conf")).unwrap();
    let compose = "\
services:
  web:
    image: {registry}/tester/web:1
  client:
    image: {registry}/tester/web:1
    links: ['web:api']
    volumes: ['./conf:/conf:ro,z']
";
    stack.compose(&rig, compose, "");
    let (run, stack, _rig) = stack.sync(rig).await;
    run.expect(0);
    let client = stack.container("client");
    assert!(running_healthy(&client));
    let host = inspect(&client).unwrap()["HostConfig"].clone();
    let binds: Vec<&str> = host["Binds"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b.as_str())
        .collect();
    assert!(
        binds.iter().any(|b| b.ends_with(":/conf:ro,z")),
        "{binds:?}"
    );
    let answer = fetch_in(&client, "http://api:8080/health");
    assert!(answer.is_ok(), "web answers as `api`: {answer:?}");
}
