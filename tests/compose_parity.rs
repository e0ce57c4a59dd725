//! Parity with Docker Compose v2 (2.40.3, the rig's `KICKY_RIG_COMPOSE_V2`): the same compose file
//! (`tests/fixtures/parity`) brought up by `docker compose up -d --wait` and by `kicky-agent
//! sync`, each under a project name of its own, must give containers that are alike field by
//! field in `docker inspect`: what the process runs with (environment, command, entrypoint, user,
//! working dir, hostname, stop signal and timeout, healthcheck, labels, compose's own labels with
//! its config hash), the host config (ports, restart policy, extra hosts, logging, ulimits,
//! memory, CPUs, init, tmpfs, capabilities, read-only root, shm size, sysctls, DNS), the mounts
//! and the networks with their aliases, and the networks and volumes the two create.
//!
//! What may differ by construction (the project's name in names and labels, the engine's ids) is
//! forgiven in one place, [`normalized`], which lists each one. Anything else that differs is the
//! agent's bug, and fails the test naming the service, the field and both values. Then the
//! operator's side: `docker compose ps`, `logs` and `exec` work on the agent's project, and
//! `docker compose up -d` with the same files keeps every container the agent made.
//!
//! The file's host ports are picked free when the test runs and handed to both tools through the
//! `.env` beside the compose file, with the registry and the one `container_name`; the compose
//! stack is brought down before the agent brings its own up on the same ports.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use aws_sdk_ssm::types::ParameterType;
use common::{Rig, Scratch};
use serde_json::{json, Value};

const SERVICES: &[&str] = &["api", "worker", "cache"];
const PROJECT_LABEL: &str = "com.docker.compose.project";
const SERVICE_LABEL: &str = "com.docker.compose.service";

fn rig_var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: the integration tests need the rig; run them with `tests/run`")
    })
}

fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("run the docker CLI")
}

/// `docker args...`, which must succeed; its stdout.
fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// A TCP port free on every address now (docker publishes on 0.0.0.0 when no host ip is given).
fn free_tcp_port(taken: &mut BTreeSet<u16>) -> u16 {
    loop {
        let port = std::net::TcpListener::bind("0.0.0.0:0")
            .and_then(|l| l.local_addr())
            .expect("bind a free port")
            .port();
        if taken.insert(port) {
            return port;
        }
    }
}

fn free_udp_port(taken: &mut BTreeSet<u16>) -> u16 {
    loop {
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .expect("bind a free udp port")
            .port();
        if taken.insert(port) {
            return port;
        }
    }
}

/// Removes, whatever happened, everything either tool created for the test's projects:
/// containers (with their anonymous volumes), networks and volumes, found by compose's project
/// label (both tools set it on all three), and the container named by `container_name`.
struct Cleanup {
    projects: Vec<String>,
    names: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = docker(&["rm", "-fv", name]);
        }
        for project in &self.projects {
            let filter = format!("label={PROJECT_LABEL}={project}");
            for (list, remove) in [
                (vec!["ps", "-aq", "--filter", &filter], vec!["rm", "-fv"]),
                (
                    vec!["network", "ls", "-q", "--filter", &filter],
                    vec!["network", "rm"],
                ),
                (
                    vec!["volume", "ls", "-q", "--filter", &filter],
                    vec!["volume", "rm", "-f"],
                ),
            ] {
                let out = docker(&list);
                for id in lines(&String::from_utf8_lossy(&out.stdout)) {
                    let mut args = remove.clone();
                    args.push(&id);
                    let _ = docker(&args);
                }
            }
        }
    }
}

/// Runs docker compose v2 on the project, from the compose file's directory (where it reads
/// `.env`), with the rig's docker login. Variables of the `.env` are removed from its
/// environment, since its own environment would win over the file.
fn compose_v2(workdir: &Path, project: &str, args: &[&str], dotenv_keys: &[&str]) -> Output {
    let mut cmd = Command::new(rig_var("KICKY_RIG_COMPOSE_V2"));
    cmd.current_dir(workdir)
        .env(
            "DOCKER_CONFIG",
            PathBuf::from(rig_var("KICKY_RIG_DIR")).join("docker-config"),
        )
        .args(["-p", project, "-f", "docker-compose.yml"])
        .args(args);
    for key in dotenv_keys {
        cmd.env_remove(key);
    }
    cmd.output().expect("run docker compose v2")
}

/// Every service of `project` running, and healthy when it has a healthcheck, within `bound`.
fn wait_healthy(project: &str, bound: Duration) {
    let deadline = Instant::now() + bound;
    loop {
        let states: Vec<String> = SERVICES
            .iter()
            .map(|service| match container_of(project, service) {
                Some(id) => docker_ok(&[
                    "inspect",
                    "-f",
                    "{{.State.Status}}/{{if .State.Health}}{{.State.Health.Status}}{{end}}",
                    &id,
                ])
                .trim()
                .to_string(),
                None => "absent".to_string(),
            })
            .collect();
        if states
            .iter()
            .all(|s| s == "running/healthy" || s == "running/")
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "project {project} not healthy within {bound:?}: {SERVICES:?} are {states:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The id of the container of `service` in `project`, by compose's labels.
fn container_of(project: &str, service: &str) -> Option<String> {
    let out = docker_ok(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label={PROJECT_LABEL}={project}"),
        "--filter",
        &format!("label={SERVICE_LABEL}={service}"),
    ]);
    let ids = lines(&out);
    assert!(
        ids.len() <= 1,
        "project {project} has {} containers for service {service}",
        ids.len()
    );
    ids.into_iter().next()
}

fn inspect(kind: &[&str], name: &str) -> Value {
    let mut args = kind.to_vec();
    args.push(name);
    let out = docker_ok(&args);
    let mut all: Vec<Value> = serde_json::from_str(&out).expect("docker inspect json");
    all.remove(0)
}

/// Each service's container, the project's networks and volumes: normalized views by name.
fn views_of(project: &str) -> BTreeMap<String, BTreeMap<String, Value>> {
    let mut views = BTreeMap::new();
    for service in SERVICES {
        let id = container_of(project, service)
            .unwrap_or_else(|| panic!("project {project} has no container for {service}"));
        views.insert(
            format!("service {service}"),
            normalized(&inspect(&["inspect", "--type", "container"], &id), project),
        );
    }
    let filter = format!("label={PROJECT_LABEL}={project}");
    for (kind, what) in [("network", "network"), ("volume", "volume")] {
        for name in lines(&docker_ok(&[kind, "ls", "-q", "--filter", &filter])) {
            let resource = inspect(&[kind, "inspect"], &name);
            let name = resource["Name"].as_str().unwrap_or_default().to_string();
            let short = strip_project(&name, project);
            views.insert(format!("{what} {short}"), resource_view(&resource, project));
        }
    }
    views
}

/// An anonymous volume's name: 64 hex digits the engine picks.
fn is_anonymous(volume: &str) -> bool {
    volume.len() == 64 && volume.bytes().all(|b| b.is_ascii_hexdigit())
}

fn strip_project(name: &str, project: &str) -> String {
    name.strip_prefix(&format!("{project}_"))
        .unwrap_or(name)
        .to_string()
}

/// Labels without the agent's own (`io.kicky-agent.*`); compose's with the project's name
/// replaced by `<project>`, and without `com.docker.compose.version` (compose writes its own
/// version, the agent the compose version whose labels it follows).
fn own_labels(labels: &Value, project: &str) -> Value {
    let own: BTreeMap<String, Value> = labels
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| !k.starts_with("io.kicky-agent.") && *k != "com.docker.compose.version")
        .map(|(k, v)| {
            let v = match v.as_str() {
                Some(text) if k.starts_with("com.docker.compose.") => {
                    json!(text.replace(project, "<project>"))
                }
                _ => v.clone(),
            };
            (k.clone(), v)
        })
        .collect();
    json!(own)
}

/// A network's or a volume's own settings: driver, internal, options and own labels.
fn resource_view(resource: &Value, project: &str) -> BTreeMap<String, Value> {
    let mut view = BTreeMap::new();
    view.insert("Driver".into(), resource["Driver"].clone());
    if resource.get("Internal").is_some() {
        view.insert("Internal".into(), resource["Internal"].clone());
    }
    let mut labels = own_labels(&resource["Labels"], project);
    // Compose hashes the network's or volume's config, its name (the project's) included: the
    // label must be there; that it is compose's own hash shows when `docker compose up -d` keeps
    // the agent's networks and volumes (below).
    if let Some(hash) = labels.get_mut("com.docker.compose.config-hash") {
        *hash = json!("<hash of the project's own config>");
    }
    view.insert("Labels".into(), labels);
    view
}

/// What is compared of one container, from its `docker inspect`: THE one place where a difference
/// between compose v2's containers and the agent's is forgiven.
///
/// Engine-made values and order that carries no meaning:
/// - `Config.Env` is compared as a set, without the image's `PATH` (the engine merges the image's
///   environment into both);
/// - `Config.Hostname`, when not set by the file, is the container's short id: it becomes
///   `<container id>`;
/// - the bindings of each port, `Ulimits`, `ExtraHosts` and `CapAdd`/`CapDrop` are sorted; the
///   mounts are sorted by destination and the aliases of each network sorted;
/// - `ExtraHosts` and the capability lists: an empty list and none are one, and so are a
///   capability with and without its `CAP_` prefix (compose writes `[]` and `CAP_NET_ADMIN`, the
///   agent leaves an empty list out and keeps the file's spelling; changing the agent's would
///   change its hash of every container, and so recreate them all at its upgrade).
///
/// What differs by construction, the two projects having names of their own:
/// - container names (`<project>-<service>-1`): the containers are matched by compose's service
///   label, and the name is compared only where the file sets `container_name`;
/// - compose's labels hold the project's name (`project`, and `depends_on` and the like do not):
///   it becomes `<project>`; `com.docker.compose.version` is compose's own release, and the
///   agent's `io.kicky-agent.*` labels are its own: neither is compared. Compose's
///   `config-hash` is: the agent writes compose's hash of the service;
/// - network and volume names carry the project's name as a prefix (`<project>_<key>`): the
///   prefix is removed;
/// - a network's or a volume's `com.docker.compose.config-hash` hashes its name, the project's:
///   only its presence is compared here, its value by `docker compose up -d` keeping them;
/// - `HostConfig.Binds` and `HostConfig.Mounts` are not compared, only the mounts the engine made
///   of them (`Mounts`: type, source, destination, read-write), a volume's source being its name
///   (without the project's prefix) rather than its path under /var/lib/docker, which holds that
///   name, and `<anonymous>` for an anonymous volume (whose name the engine draws at random);
/// - network aliases: the container's name, which compose adds to its aliases, is removed (as
///   is a short id, which older engines add), leaving the service's name and the file's aliases.
fn normalized(c: &Value, project: &str) -> BTreeMap<String, Value> {
    let config = &c["Config"];
    let host = &c["HostConfig"];
    let id = c["Id"].as_str().unwrap_or_default();
    let short_id = &id[..id.len().min(12)];
    let name = c["Name"]
        .as_str()
        .unwrap_or_default()
        .trim_start_matches('/');
    let mut view = BTreeMap::new();

    let env: BTreeSet<String> = config["Env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter(|e| !e.starts_with("PATH="))
        .map(str::to_string)
        .collect();
    view.insert("Config.Env".into(), json!(env));
    for key in [
        "Cmd",
        "Entrypoint",
        "User",
        "WorkingDir",
        "StopSignal",
        "StopTimeout",
        "Healthcheck",
    ] {
        view.insert(format!("Config.{key}"), config[key].clone());
    }
    let hostname = config["Hostname"].as_str().unwrap_or_default();
    view.insert(
        "Config.Hostname".into(),
        if hostname == short_id {
            json!("<container id>")
        } else {
            json!(hostname)
        },
    );
    view.insert(
        "Config.Labels".into(),
        own_labels(&config["Labels"], project),
    );
    // The name only where the file chooses it (v1 and v2 name the others differently).
    let generated =
        name.starts_with(&format!("{project}_")) || name.starts_with(&format!("{project}-"));
    view.insert(
        "Name".into(),
        if generated {
            json!("<generated>")
        } else {
            json!(name)
        },
    );

    let mut ports: BTreeMap<String, Value> = BTreeMap::new();
    for (port, bindings) in host["PortBindings"].as_object().into_iter().flatten() {
        let mut list: Vec<Value> = bindings.as_array().cloned().unwrap_or_default();
        list.sort_by_key(|b| b.to_string());
        ports.insert(port.clone(), json!(list));
    }
    view.insert("HostConfig.PortBindings".into(), json!(ports));
    for key in [
        "RestartPolicy",
        "LogConfig",
        "Memory",
        "NanoCpus",
        "Init",
        "Tmpfs",
        "ReadonlyRootfs",
        "ShmSize",
        "Sysctls",
        "Dns",
    ] {
        view.insert(format!("HostConfig.{key}"), host[key].clone());
    }
    for key in ["Ulimits", "CapAdd", "CapDrop", "ExtraHosts"] {
        let mut list: Vec<Value> = host[key].as_array().cloned().unwrap_or_default();
        if key.starts_with("Cap") {
            list = list.iter().map(|cap| json!(capability(cap))).collect();
        }
        list.sort_by_key(|v| v.to_string());
        view.insert(format!("HostConfig.{key}"), json!(list));
    }

    let mut mounts: Vec<Value> = c["Mounts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            let volume = m["Name"].as_str().unwrap_or_default();
            let source = match m["Type"].as_str() {
                Some("volume") if is_anonymous(volume) => "<anonymous>".to_string(),
                Some("volume") => strip_project(volume, project),
                _ => m["Source"].as_str().unwrap_or_default().to_string(),
            };
            json!({
                "Type": m["Type"],
                "Source": source,
                "Destination": m["Destination"],
                "RW": m["RW"],
            })
        })
        .collect();
    mounts.sort_by_key(|m| m["Destination"].to_string());
    view.insert("Mounts".into(), json!(mounts));

    let mut networks: BTreeMap<String, Value> = BTreeMap::new();
    for (net, endpoint) in c["NetworkSettings"]["Networks"]
        .as_object()
        .into_iter()
        .flatten()
    {
        let aliases: BTreeSet<String> = endpoint["Aliases"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter(|a| *a != short_id && *a != name)
            .map(str::to_string)
            .collect();
        networks.insert(strip_project(net, project), json!({ "Aliases": aliases }));
    }
    view.insert("Networks".into(), json!(networks));
    view
}

/// A capability as the engine reads it: `NET_ADMIN` and `CAP_NET_ADMIN` are one (compose 2.40
/// writes the prefix, the agent the file's spelling).
fn capability(cap: &Value) -> String {
    let cap = cap.as_str().unwrap_or_default();
    cap.strip_prefix("CAP_").unwrap_or(cap).to_string()
}

/// The service names each container has among its aliases, on every network.
fn assert_service_aliases(views: &BTreeMap<String, BTreeMap<String, Value>>, who: &str) {
    for service in SERVICES {
        let view = &views[&format!("service {service}")];
        for (net, endpoint) in view["Networks"].as_object().into_iter().flatten() {
            let aliases = endpoint["Aliases"].as_array().cloned().unwrap_or_default();
            assert!(
                aliases.contains(&json!(service)),
                "{who}: service {service} on network {net} lacks its name among the aliases {aliases:?}"
            );
        }
    }
}

#[tokio::test]
async fn agent_creates_what_docker_compose_creates() {
    let rig = Rig::get();
    let registry = rig_var("KICKY_RIG_REGISTRY");
    let tag = format!("{:08x}", fastrand::u32(..));
    let v2_project = format!("parity-compose-{tag}");
    let agent_project = format!("parity-agent-{tag}");
    let cache_name = format!("parity-cache-{tag}");
    let _cleanup = Cleanup {
        projects: vec![v2_project.clone(), agent_project.clone()],
        names: vec![cache_name.clone()],
    };

    // The compose directory: the file, its env files, and the bind sources it names.
    let scratch = Scratch::new();
    let workdir = scratch.workdir();
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/parity");
    std::fs::create_dir_all(workdir.join("data")).unwrap();
    std::fs::create_dir_all(workdir.join("conf")).unwrap();
    std::fs::write(workdir.join("conf/app.conf"), "answer = 42\n").unwrap();
    for file in ["docker-compose.yml", "common.env", ".env"] {
        std::fs::copy(source.join(file), workdir.join(file))
            .unwrap_or_else(|e| panic!("copy {file}: {e}"));
    }
    let mut taken = BTreeSet::new();
    let vars = [
        ("REGISTRY", registry.clone()),
        ("API_PORT", free_tcp_port(&mut taken).to_string()),
        ("API_LOCAL_PORT", free_tcp_port(&mut taken).to_string()),
        ("API_LONG_PORT", free_tcp_port(&mut taken).to_string()),
        ("CACHE_UDP_PORT", free_udp_port(&mut taken).to_string()),
        ("CACHE_NAME", cache_name.clone()),
    ];
    let mut dotenv = std::fs::read_to_string(workdir.join(".env")).unwrap();
    for (key, value) in &vars {
        dotenv.push_str(&format!("{key}={value}\n"));
    }
    std::fs::write(workdir.join(".env"), dotenv).unwrap();
    let mut dotenv_keys: Vec<&str> = vars.iter().map(|(k, _)| *k).collect();
    dotenv_keys.push("FROM_DOTENV");

    // compose v2 first; its containers are inspected once healthy, then it goes down
    // (its ports are the agent's).
    // (Not `--wait`: compose 2.40.3 fails it on a service whose healthcheck is disabled, "has no
    // healthcheck configured"; the agent counts such a service ready once running.)
    let up = compose_v2(&workdir, &v2_project, &["up", "-d"], &dotenv_keys);
    assert!(
        up.status.success(),
        "docker compose up failed:\n{}{}",
        String::from_utf8_lossy(&up.stdout),
        String::from_utf8_lossy(&up.stderr)
    );
    wait_healthy(&v2_project, Duration::from_secs(60));
    let compose = views_of(&v2_project);
    let down = compose_v2(&workdir, &v2_project, &["down", "-v"], &dotenv_keys);
    assert!(
        down.status.success(),
        "docker compose down failed: {}",
        String::from_utf8_lossy(&down.stderr)
    );

    // The agent, on the same file, with the registry's password from SSM.
    let parameter = format!("{}/registry", common::unique_prefix("parity"));
    rig.put(
        &parameter,
        &rig_var("KICKY_RIG_REGISTRY_PASSWORD"),
        ParameterType::SecureString,
    )
    .await;
    scratch.config(
        &rig,
        &format!(
            "project: {agent_project}\nworkdir: {{workdir}}\naws:\n  endpoint_url: {{moto}}\n\
             compose:\n  file: docker-compose.yml\n  pull: always\n  healthy_timeout: 2m\n\
             registries:\n  - server: {registry}\n    username: tester\n    password: {{ parameter: {parameter} }}\n"
        ),
    );
    let docker_host = std::env::var("DOCKER_HOST").ok();
    let env: Vec<(&str, &str)> = docker_host
        .iter()
        .map(|h| ("DOCKER_HOST", h.as_str()))
        .collect();
    scratch.agent_with(&rig, &["sync"], &env).expect(0);
    wait_healthy(&agent_project, Duration::from_secs(5));
    let agent = views_of(&agent_project);

    for (who, views) in [("docker compose v2", &compose), ("kicky-agent", &agent)] {
        println!("== {who}");
        for (what, view) in views {
            println!("  {what}");
            for (field, value) in view {
                println!("    {field}: {value}");
            }
        }
        assert_service_aliases(views, who);
    }

    // Field by field: every difference, then one failure naming them all.
    let mut differences = Vec::new();
    let objects: BTreeSet<&String> = compose.keys().chain(agent.keys()).collect();
    for object in objects {
        let (Some(ours), Some(theirs)) = (agent.get(object), compose.get(object)) else {
            differences.push(format!(
                "{object}: only {} has it",
                if agent.contains_key(object) {
                    "the agent"
                } else {
                    "docker compose"
                }
            ));
            continue;
        };
        for (field, expected) in theirs {
            let actual = ours.get(field).unwrap_or(&Value::Null);
            if actual != expected {
                differences.push(format!(
                    "{object}: {field}\n      docker compose: {expected}\n      kicky-agent:    {actual}"
                ));
            }
        }
    }
    assert!(
        differences.is_empty(),
        "the agent's containers differ from docker compose's in {} fields:\n  {}",
        differences.len(),
        differences.join("\n  ")
    );

    // The operator's side: compose's own commands on the agent's project.
    let filter = format!("label={PROJECT_LABEL}={agent_project}");
    let resources = || {
        let networks = docker_ok(&["network", "ls", "-q", "--filter", &filter]);
        let volumes = docker_ok(&["volume", "ls", "-q", "--filter", &filter]);
        (lines(&networks), lines(&volumes))
    };
    let resources_before = resources();
    // Each service's container and when it started.
    let containers = || -> Vec<(String, String)> {
        SERVICES
            .iter()
            .map(|service| {
                let id = container_of(&agent_project, service).unwrap_or_default();
                let started = docker_ok(&["inspect", "-f", "{{.State.StartedAt}}", &id]);
                (id, started)
            })
            .collect()
    };
    let before = containers();
    let compose = |args: &[&str]| {
        let out = compose_v2(&workdir, &agent_project, args, &dotenv_keys);
        assert!(
            out.status.success(),
            "docker compose {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let ps: BTreeMap<String, String> = lines(&compose(&["ps", "--format", "json"]))
        .iter()
        .map(|line| {
            let c: Value = serde_json::from_str(line).expect("one container a line");
            (
                c["Service"].as_str().unwrap_or_default().to_string(),
                c["State"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let running: BTreeMap<String, String> = SERVICES
        .iter()
        .map(|s| (s.to_string(), "running".to_string()))
        .collect();
    assert_eq!(ps, running, "docker compose ps on the agent's project");
    compose(&["logs", "--no-color", "api"]);
    let exec = compose(&["exec", "-T", "api", "/bin/sh", "-c", "echo from-exec"]);
    assert_eq!(exec.trim(), "from-exec");
    // `up -d` with the same files: compose finds every container up to date (its config hash,
    // image, networks and volumes) and keeps it.
    let up = compose_v2(&workdir, &agent_project, &["up", "-d"], &dotenv_keys);
    let told = format!(
        "{}{}",
        String::from_utf8_lossy(&up.stdout),
        String::from_utf8_lossy(&up.stderr)
    );
    assert!(up.status.success(), "docker compose up -d: {told}");
    let after = containers();
    assert_eq!(
        after, before,
        "docker compose up -d replaced or restarted the agent's containers:\n{told}"
    );
    assert_eq!(
        resources(),
        resources_before,
        "docker compose up -d replaced the agent's networks or volumes:\n{told}"
    );
}
