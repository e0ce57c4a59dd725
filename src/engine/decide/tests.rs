use std::path::{Path, PathBuf};

use super::*;
use crate::engine::api::{Container, Health, RunState};

const COMPOSE: &str = "\
services:
  migrate:
    image: app:1
    command: [migrate]
  app:
    image: app:1
    ports: ['8080:8080']
    environment:
      KEY: ${KEY}
    depends_on:
      migrate: { condition: service_completed_successfully }
  promtail:
    image: promtail:1
    volumes:
      - ./promtail-config.yml:/etc/promtail/config.yml:ro
  sidecar:
    image: side:1
    depends_on: [app]
";

/// `compose` as project `o` in /srv/o, with no variables.
fn project_o(compose: &str) -> Project {
    crate::compose::from_str(
        compose,
        Path::new("/srv/o/docker-compose.yml"),
        "o",
        &|_| None,
    )
    .unwrap()
}

fn project_with(key: &str) -> Project {
    let key = key.to_string();
    crate::compose::from_str(
        COMPOSE,
        Path::new("/srv/orange/docker-compose.yml"),
        "orange",
        &move |name: &str| (name == "KEY").then(|| key.clone()),
    )
    .unwrap()
}

fn ids() -> BTreeMap<String, String> {
    ["app:1", "promtail:1", "side:1"]
        .into_iter()
        .map(|i| (i.to_string(), format!("sha256:{i}")))
        .collect()
}

fn files(promtail: &str) -> AgentFiles {
    AgentFiles::from([
        (
            PathBuf::from("/srv/orange/promtail-config.yml"),
            promtail.to_string(),
        ),
        (
            PathBuf::from("/srv/orange/unmounted.yml"),
            "aaaa".to_string(),
        ),
        (PathBuf::from("/srv/orange/.env"), "bbbb".to_string()),
    ])
}

/// The container a sync would have created for `service` of `project`.
fn container_of(
    project: &Project,
    service: &str,
    files: &AgentFiles,
    state: RunState,
) -> Container {
    let desired = spec::desired(
        project,
        &project.services[service],
        &format!("sha256:{}", project.services[service].image),
        files,
    );
    Container {
        id: format!("id-{service}"),
        name: desired.name.clone(),
        labels: desired
            .body
            .labels
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        state,
        exit_code: (state == RunState::Exited).then_some(0),
        health: (state == RunState::Running).then_some(Health::Healthy),
        last_check: None,
        started_at: None,
        image: project.services[service].image.clone(),
        image_id: format!("sha256:{}", project.services[service].image),
        ..Default::default()
    }
}

/// Everything of `project` as a good sync leaves it: the one-shot completed, the rest running.
fn converged(project: &Project, files: &AgentFiles) -> Observed {
    Observed {
        containers: project
            .services
            .keys()
            .map(|s| {
                let state = if s == "migrate" {
                    RunState::Exited
                } else {
                    RunState::Running
                };
                container_of(project, s, files, state)
            })
            .collect(),
        ..Default::default()
    }
}

fn actions(decision: &Decision) -> Vec<(String, String)> {
    decision
        .services
        .iter()
        .map(|p| (p.service.clone(), p.action.to_string()))
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn each_service_gets_the_action_its_container_calls_for() {
    let project = project_with("one");
    let good = converged(&project, &files("1111"));
    let mut stopped = good.clone();
    stopped.containers.retain(|c| c.name != "orange-sidecar-1");
    stopped
        .containers
        .iter_mut()
        .find(|c| c.name == "orange-app-1")
        .unwrap()
        .state = RunState::Exited;
    let mut failed_migration = good.clone();
    failed_migration
        .containers
        .iter_mut()
        .find(|c| c.name == "orange-migrate-1")
        .unwrap()
        .exit_code = Some(1);

    /// What is wanted, what the engine has, the agent's files, and the action of each service.
    type Case<'a> = (
        &'a str,
        Project,
        Observed,
        AgentFiles,
        Vec<(&'a str, &'a str)>,
    );
    let table: Vec<Case> = vec![
        (
            "nothing changed: every container kept, the completed one-shot not run again",
            project.clone(),
            good.clone(),
            files("1111"),
            vec![
                ("migrate", "keep (completed successfully; not run again)"),
                ("app", "keep"),
                ("promtail", "keep"),
                ("sidecar", "keep"),
            ],
        ),
        (
            "nothing there yet",
            project.clone(),
            Observed::default(),
            files("1111"),
            vec![
                ("migrate", "create"),
                ("app", "create"),
                ("promtail", "create"),
                ("sidecar", "create"),
            ],
        ),
        (
            "a stopped container is started, a missing one created",
            project.clone(),
            stopped,
            files("1111"),
            vec![
                ("migrate", "keep (completed successfully; not run again)"),
                ("app", "start"),
                ("promtail", "keep"),
                ("sidecar", "create"),
            ],
        ),
        (
            "a one-shot that failed runs again",
            project.clone(),
            failed_migration,
            files("1111"),
            vec![
                ("migrate", "start"),
                ("app", "keep"),
                ("promtail", "keep"),
                ("sidecar", "keep"),
            ],
        ),
        (
            "a changed variable recreates only the service that uses it",
            project_with("two"),
            good.clone(),
            files("1111"),
            vec![
                ("migrate", "keep (completed successfully; not run again)"),
                ("app", "recreate (environment changed)"),
                ("promtail", "keep"),
                ("sidecar", "keep"),
            ],
        ),
        (
            "a changed mounted file recreates the service that mounts it, naming the file",
            project.clone(),
            good.clone(),
            files("2222"),
            vec![
                ("migrate", "keep (completed successfully; not run again)"),
                ("app", "keep"),
                (
                    "promtail",
                    "recreate (volumes: promtail-config.yml changed)",
                ),
                ("sidecar", "keep"),
            ],
        ),
    ];
    for (case, project, observed, files, expected) in table {
        let decision = decide(&project, &observed, &ids(), &files).unwrap();
        assert_eq!(actions(&decision), pairs(&expected), "{case}");
        assert!(decision.remove.is_empty(), "{case}");
    }
}

#[test]
fn a_file_no_service_mounts_changes_nothing() {
    let project = project_with("one");
    let good = converged(&project, &files("1111"));
    let mut other = files("1111");
    other.insert(PathBuf::from("/srv/orange/unmounted.yml"), "changed".into());
    other.insert(PathBuf::from("/srv/orange/.env"), "changed".into());
    let decision = decide(&project, &good, &ids(), &other).unwrap();
    assert!(decision
        .services
        .iter()
        .all(|p| matches!(p.action, Action::Keep | Action::Done)));
}

#[test]
fn a_mounted_directory_counts_the_files_under_it() {
    let compose = "services:\n  web:\n    image: app:1\n    volumes: ['./conf:/etc/app:ro']\n";
    let project = project_o(compose);
    let before = AgentFiles::from([(PathBuf::from("/srv/o/conf/app.yml"), "1".into())]);
    let after = AgentFiles::from([(PathBuf::from("/srv/o/conf/app.yml"), "2".into())]);
    let observed = Observed {
        containers: vec![container_of(&project, "web", &before, RunState::Running)],
        ..Default::default()
    };
    let decision = decide(&project, &observed, &ids(), &after).unwrap();
    assert_eq!(
        decision.services[0].action.to_string(),
        "recreate (volumes: conf/app.yml changed)"
    );
}

#[test]
fn containers_of_services_that_left_are_orphans_but_leftovers_of_a_switch_are_not() {
    let project = project_with("one");
    let mut observed = converged(&project, &files("1111"));
    let mut gone = observed.containers[0].clone();
    gone.id = "id-gone".into();
    gone.name = "orange-worker-1".into();
    gone.labels.insert(spec::SERVICE.into(), "worker".into());
    let mut leftover = observed.containers[1].clone();
    leftover.id = "id-left".into();
    leftover.name = "orange-app-1-kicky-old".into();
    observed.containers.extend([gone, leftover]);
    let decision = decide(&project, &observed, &ids(), &files("1111")).unwrap();
    assert_eq!(
        decision.remove,
        vec![("id-gone".to_string(), "orange-worker-1".to_string())]
    );
}

#[test]
fn a_name_held_by_another_project_is_refused_before_anything_changes() {
    let project = project_with("one");
    let observed = Observed {
        foreign: BTreeMap::from([("orange-app-1".to_string(), Some("lemon".to_string()))]),
        ..Default::default()
    };
    let err = decide(&project, &observed, &ids(), &files("1111")).unwrap_err();
    let message = format!("{err:#}");
    assert!(
        message.contains("orange-app-1 is taken by a container of project lemon"),
        "{message}"
    );
}

#[test]
fn services_start_level_by_level_of_their_dependencies() {
    let project = project_with("one");
    let decision = decide(&project, &Observed::default(), &ids(), &files("1111")).unwrap();
    let names = |level: &[usize]| -> Vec<&str> {
        level
            .iter()
            .map(|&i| decision.services[i].service.as_str())
            .collect()
    };
    let levels = levels(&project, &decision.services);
    let levels: Vec<Vec<&str>> = levels.iter().map(|l| names(l)).collect();
    assert_eq!(
        levels,
        vec![vec!["migrate", "promtail"], vec!["app"], vec!["sidecar"]]
    );
    let app = decision
        .services
        .iter()
        .find(|p| p.service == "app")
        .unwrap();
    assert!(!app.side_by_side, "a fixed host port cannot be shared");
    let migrate = decision
        .services
        .iter()
        .find(|p| p.service == "migrate")
        .unwrap();
    assert!(migrate.one_shot && migrate.side_by_side);
}

#[test]
fn missing_networks_are_created_and_a_missing_external_one_is_an_error() {
    let compose = "services:\n  web:\n    image: app:1\n    networks: [front, ext]\nnetworks:\n  front: {}\n  ext: { external: true }\n";
    let project = project_o(compose);
    let err = missing_resources(&project, &Observed::default()).unwrap_err();
    assert!(
        err.to_string()
            .contains("external network ext does not exist"),
        "{err}"
    );
    let observed = Observed {
        networks: ["ext".to_string()].into(),
        ..Default::default()
    };
    let (networks, volumes) = missing_resources(&project, &observed).unwrap();
    assert_eq!(networks, vec!["front".to_string()]);
    assert!(volumes.is_empty());
}

/// Networks and volumes no service uses are neither created nor required, as compose v2 leaves
/// them: an unused external network that does not exist is no error.
#[test]
fn unused_networks_and_volumes_are_left_alone() {
    let compose = "services:\n  web:\n    image: app:1\n    volumes: [data:/data]\nnetworks:\n  spare: {}\n  gone: { external: true }\nvolumes:\n  data: {}\n  extra: {}\n  old: { external: true }\n";
    let project = project_o(compose);
    let (networks, volumes) = missing_resources(&project, &Observed::default()).unwrap();
    assert_eq!(networks, vec!["default".to_string()]);
    assert_eq!(volumes, vec!["data".to_string()]);
}

#[test]
fn recovery_undoes_leftovers_even_of_a_service_that_left_the_file() {
    let project = project_with("one");
    let mut observed = converged(&project, &files("1111"));
    assert!(recovery(&observed.containers, SystemTime::now()).is_empty());

    // app: the new container took the name and is unhealthy; the old one is aside.
    let app = observed
        .containers
        .iter_mut()
        .find(|c| c.name == "orange-app-1")
        .unwrap();
    app.health = Some(Health::Unhealthy);
    let mut old = container_of(&project, "app", &files("1111"), RunState::Exited);
    old.id = "id-app-old".into();
    old.name = "orange-app-1-kicky-old".into();
    // worker, gone from the file: a new container was staged beside its old one.
    let mut worker_new = old.clone();
    worker_new.id = "id-worker-new".into();
    worker_new.name = "orange-worker-1-kicky-new".into();
    worker_new
        .labels
        .insert(spec::SERVICE.into(), "worker".into());
    // migrate, a one-shot (app depends on it completing): the new one failed, the old is aside.
    let migrate = observed
        .containers
        .iter_mut()
        .find(|c| c.name == "orange-migrate-1")
        .unwrap();
    migrate.exit_code = Some(1);
    let mut migrate_old = container_of(&project, "migrate", &files("1111"), RunState::Exited);
    migrate_old.id = "id-migrate-old".into();
    migrate_old.name = "orange-migrate-1-kicky-old".into();
    observed.containers.extend([old, worker_new, migrate_old]);
    let plans = recovery(&observed.containers, SystemTime::now());
    assert_eq!(
        plans,
        vec![
            (
                "app".to_string(),
                vec![
                    Op::Remove {
                        id: "id-app".into()
                    },
                    Op::Start {
                        id: "id-app-old".into(),
                        name: "orange-app-1-kicky-old".into()
                    },
                    Op::Rename {
                        id: "id-app-old".into(),
                        to: "orange-app-1".into()
                    },
                ]
            ),
            (
                "migrate".to_string(),
                vec![
                    Op::Remove {
                        id: "id-migrate".into()
                    },
                    Op::Rename {
                        id: "id-migrate-old".into(),
                        to: "orange-migrate-1".into()
                    },
                ]
            ),
            (
                "worker".to_string(),
                vec![Op::Remove {
                    id: "id-worker-new".into()
                }]
            ),
        ]
    );

    // A new container that took the name and is healthy: the switch is finished.
    let app = observed
        .containers
        .iter_mut()
        .find(|c| c.name == "orange-app-1")
        .unwrap();
    app.health = Some(Health::Healthy);
    let plans = recovery(&observed.containers, SystemTime::now());
    assert_eq!(
        plans[0],
        (
            "app".to_string(),
            vec![Op::Remove {
                id: "id-app-old".into()
            }]
        )
    );
}

/// The config hash of a service must not change from one version of the agent to the next
/// unless its config did: a changed hash recreates that service on every instance of a fleet at
/// the agent's upgrade. If this test fails, the change to `spec` does that; make it keep the
/// hashes, or say so in the release notes.
#[test]
fn config_hashes_are_stable_across_agent_versions() {
    let compose = "\
services:
  web:
    image: registry.example/web:1
    command: [serve, --port, '8080']
    environment:
      MODE: prod
    ports: ['8080:8080']
    healthcheck:
      test: [CMD, wget, -q, http://127.0.0.1:8080/health]
      interval: 5s
    restart: unless-stopped
  promtail:
    image: grafana/promtail:2.9.0
    volumes:
      - ./promtail-config.yml:/etc/promtail/config.yml:ro
      - /var/log:/var/log:ro
    networks: [default, logs]
networks:
  logs: {}
";
    let project = crate::compose::from_str(
        compose,
        Path::new("/srv/orange/docker-compose.yml"),
        "orange",
        &|_| None,
    )
    .unwrap();
    let hash = |service: &str, files: &AgentFiles| {
        spec::desired(&project, &project.services[service], "sha256:0123", files).hash
    };
    let none = AgentFiles::new();
    // The hashes agent 0.1.0 gave (before mounted files counted): unchanged.
    assert_eq!(
        hash("web", &none),
        "a2ccdcd4837ad91e96fd83e5e37838b036a1e29a58a839ee938b4e3e15d4f070"
    );
    assert_eq!(
        hash("promtail", &none),
        "b3eaca11decc307e35cfd47f6a541b94284b3393206c9a51ad67dc98755cad27"
    );
    // A mounted file's content counts (once per upgrade for the services that mount one: the
    // agent cannot know whether their container reads the current file).
    let mounted = AgentFiles::from([(
        PathBuf::from("/srv/orange/promtail-config.yml"),
        "5e5e".to_string(),
    )]);
    assert_eq!(
        hash("promtail", &mounted),
        "06a7362e89621434a9f46fd22f98b7980577353387b76782a2b17ef06c220265"
    );
    assert_eq!(
        hash("web", &mounted),
        hash("web", &none),
        "web mounts no file"
    );
}

/// The agent decides by its own hash label; a container an older agent made carries that hash
/// in compose's label instead, and is kept as it is (an upgrade of the agent recreates nothing).
/// Compose's label holds compose's own hash, which the agent's decision ignores.
#[test]
fn the_agents_hash_decides_and_older_containers_keep_theirs_in_composes_label() {
    let project = crate::compose::from_str(
        "services:\n  web:\n    image: app:1\n",
        Path::new("/srv/o/docker-compose.yml"),
        "o",
        &|_| None,
    )
    .unwrap();
    let files = AgentFiles::new();
    let fresh = container_of(&project, "web", &files, RunState::Running);
    let agent = fresh.labels[spec::HASH].clone();
    assert_ne!(
        fresh.labels[spec::CONFIG_HASH],
        agent,
        "compose's hash is compose's"
    );
    let action = |labels: &[(&str, &str)]| {
        let mut c = fresh.clone();
        c.labels.remove(spec::HASH);
        c.labels.remove(spec::CONFIG_HASH);
        for (k, v) in labels {
            c.labels.insert(k.to_string(), v.to_string());
        }
        let observed = Observed {
            containers: vec![c],
            ..Observed::default()
        };
        let decision = decide(&project, &observed, &ids(), &files).unwrap();
        decision.services[0].action.to_string()
    };
    let table: &[(&[(&str, &str)], &str)] = &[
        (
            &[(spec::HASH, &agent), (spec::CONFIG_HASH, "anything")],
            "keep",
        ),
        (&[(spec::CONFIG_HASH, &agent)], "keep"),
        (
            &[(spec::HASH, "old"), (spec::CONFIG_HASH, &agent)],
            "recreate",
        ),
        (&[(spec::CONFIG_HASH, "old")], "recreate"),
    ];
    for (labels, want) in table {
        let got = action(labels);
        assert!(got.starts_with(want), "{labels:?}: {got}");
    }
}

/// The container is created on the network compose v2 would pick (the highest `priority`, then
/// the first key), whatever the file's order; the hash does not change when only the file's
/// order of networks without priorities moves that choice (an upgrade recreates nothing), and
/// does when a priority is given.
#[test]
fn the_first_network_is_compose_v2s_and_the_hash_keeps_the_files_order() {
    let desired = |networks: &str| {
        let compose = format!("services:\n  web:\n    image: app:1\n    networks:\n{networks}networks:\n  front: {{}}\n  back: {{}}\n  mid: {{}}\n");
        let project = crate::compose::from_str(
            &compose,
            Path::new("/srv/o/docker-compose.yml"),
            "o",
            &|_| None,
        )
        .unwrap();
        spec::desired(
            &project,
            &project.services["web"],
            "sha256:1",
            &AgentFiles::new(),
        )
    };
    let first = |d: &spec::Desired| {
        let config = d.body.networking_config.as_ref().unwrap();
        let endpoints = config.endpoints_config.as_ref().unwrap();
        assert_eq!(endpoints.len(), 1);
        let name = endpoints.keys().next().unwrap().clone();
        let mode = d.body.host_config.as_ref().unwrap().network_mode.clone();
        assert_eq!(
            mode.as_deref(),
            Some(name.as_str()),
            "network_mode names the first"
        );
        name
    };
    let table: &[(&str, &str)] = &[
        ("      front: {}\n      back: {}\n", "o_back"),
        ("      - mid\n      - front\n", "o_front"),
        ("      front: {priority: 5}\n      back: {}\n", "o_front"),
        ("      back: {priority: -1}\n      mid: {}\n", "o_mid"),
        (
            "      back: {priority: 2}\n      mid: {priority: 2}\n",
            "o_back",
        ),
    ];
    for (networks, want) in table {
        let d = desired(networks);
        assert_eq!(first(&d), *want, "{networks}");
        let others: Vec<&str> = d.more_networks.iter().map(|(n, _)| n.as_str()).collect();
        assert!(!others.contains(want), "{networks}: {others:?}");
    }
    let a = desired("      front: {}\n      back: {}\n");
    let b = desired("      back: {}\n      front: {}\n");
    assert_ne!(
        a.hash, b.hash,
        "the file's order counts in the hash, as it did"
    );
    let c = desired("      front: {priority: 1}\n      back: {}\n");
    assert_ne!(a.hash, c.hash, "a priority counts");
}

/// What reaches the create body of the keys compose honours (issue 11), and a container in
/// another's network namespace following it.
#[test]
fn compose_keys_reach_the_create_body() {
    let compose = "\
services:
  web:
    image: app:1
    expose: ['9000/udp']
    stdin_open: true
    tty: true
    deploy:
      resources:
        limits: { cpus: '0.5', memory: 256M, pids: 50 }
        reservations:
          memory: 128M
          devices: [{ capabilities: [gpu], count: 1 }]
      restart_policy: { condition: on-failure, max_attempts: 3 }
    networks:
      front: { ipv4_address: 10.5.0.9 }
  agent:
    image: app:1
    network_mode: host
  sidecar:
    image: side:1
    network_mode: service:web
networks:
  front:
    ipam:
      config: [{ subnet: 10.5.0.0/24 }]
";
    let project = project_o(compose);
    let body = |service: &str| {
        spec::desired(
            &project,
            &project.services[service],
            "sha256:1",
            &AgentFiles::new(),
        )
        .body
    };
    let web = body("web");
    assert_eq!((web.tty, web.open_stdin), (Some(true), Some(true)));
    assert_eq!(web.exposed_ports, Some(vec!["9000/udp".to_string()]));
    let hc = web.host_config.unwrap();
    assert_eq!(hc.memory, Some(256 * 1024 * 1024));
    assert_eq!(hc.nano_cpus, Some(500_000_000));
    assert_eq!(hc.pids_limit, Some(50));
    assert_eq!(hc.memory_reservation, Some(128 * 1024 * 1024));
    assert_eq!(
        hc.device_requests.unwrap()[0].capabilities,
        Some(vec![vec!["gpu".to_string()]])
    );
    let restart = hc.restart_policy.unwrap();
    assert_eq!(
        restart.name,
        Some(bollard::models::RestartPolicyNameEnum::ON_FAILURE)
    );
    assert_eq!(restart.maximum_retry_count, Some(3));
    let endpoint = &web.networking_config.unwrap().endpoints_config.unwrap()["o_front"];
    assert_eq!(
        endpoint
            .ipam_config
            .as_ref()
            .unwrap()
            .ipv4_address
            .as_deref(),
        Some("10.5.0.9")
    );
    assert_eq!(
        body("agent").host_config.unwrap().network_mode.as_deref(),
        Some("host")
    );
    let sidecar = body("sidecar");
    assert_eq!(
        sidecar.host_config.unwrap().network_mode.as_deref(),
        Some("container:o-web-1")
    );
    assert!(sidecar.networking_config.is_none());

    // web gets a new container: the sidecar in its namespace follows; agent (host) stays.
    let files = AgentFiles::new();
    let mut observed = Observed::default();
    for service in ["web", "agent", "sidecar"] {
        let mut c = container_of(&project, service, &files, RunState::Running);
        c.labels.insert(
            spec::HASH.into(),
            spec::desired(
                &project,
                &project.services[service],
                &format!("sha256:{}", project.services[service].image),
                &files,
            )
            .hash,
        );
        observed.containers.push(c);
    }
    observed.containers[0]
        .labels
        .insert(spec::HASH.into(), "old".into());
    let decision = decide(&project, &observed, &ids(), &files).unwrap();
    let actions: BTreeMap<&str, String> = decision
        .services
        .iter()
        .map(|p| (p.service.as_str(), p.action.to_string()))
        .collect();
    assert!(actions["web"].starts_with("recreate"), "{actions:?}");
    assert_eq!(
        actions["sidecar"],
        "recreate (network_mode: service web's container changed)"
    );
    assert_eq!(actions["agent"], "keep");
    let agent = decision
        .services
        .iter()
        .find(|p| p.service == "agent")
        .unwrap();
    assert!(
        !agent.side_by_side,
        "on the host's network: the old one must go first"
    );
}
