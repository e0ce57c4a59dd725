//! The container the agent creates for a service: the configuration docker compose v2 gives it,
//! with compose's labels and names, so `docker compose ps` and `logs` keep working, and a config
//! hash that says whether a running container still matches the file.
//!
//! The hash is taken per section (image, command, environment, ports, ...): a recreate can then
//! say which part of the spec changed. The sections are hashed from the create body itself, with
//! map keys sorted, so the same file always gives the same hash.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use bollard::models::{
    ContainerCreateBody, DeviceRequest, EndpointIpamConfig, EndpointSettings, HealthConfig,
    HostConfig, HostConfigLogConfig, Mount, MountBindOptions, MountBindOptionsPropagationEnum,
    MountTmpfsOptions, MountType, MountVolumeOptions, NetworkingConfig, PortBinding,
    ResourcesUlimits, RestartPolicy, RestartPolicyNameEnum,
};
use serde_json::Value;

use crate::compose::{MountKind, Project, Restart, Service};

pub const PROJECT: &str = "com.docker.compose.project";
pub const SERVICE: &str = "com.docker.compose.service";
pub const NUMBER: &str = "com.docker.compose.container-number";
pub const ONEOFF: &str = "com.docker.compose.oneoff";
/// Compose's own hash of the service (see [`crate::compose::config_hash`]), so that `docker
/// compose up -d` on the same files keeps the agent's containers.
pub const CONFIG_HASH: &str = "com.docker.compose.config-hash";
/// The agent's own hash of what it creates (the create body, the image, the files it mounts),
/// which decides a recreate. Containers made before it existed carry it in [`CONFIG_HASH`].
pub const HASH: &str = "io.kicky-agent.config-hash";
pub const VERSION: &str = "com.docker.compose.version";
pub const WORKING_DIR: &str = "com.docker.compose.project.working_dir";
pub const CONFIG_FILES: &str = "com.docker.compose.project.config_files";
pub const IMAGE: &str = "com.docker.compose.image";
pub const DEPENDS_ON: &str = "com.docker.compose.depends_on";
pub const NETWORK: &str = "com.docker.compose.network";
pub const VOLUME: &str = "com.docker.compose.volume";
/// The agent's own: `section=hash,...`, to tell why a container is recreated.
pub const SECTIONS: &str = "io.kicky-agent.sections";
/// The agent's own: `file=hash,...` for the files it writes that the container mounts, to tell
/// which one changed.
pub const FILES: &str = "io.kicky-agent.files";

/// The files the agent writes (fetched from S3, and the env file), by absolute path, with the
/// SHA-256 of their content. A container that mounts one (or a directory holding one) is
/// recreated when its content changes: the file is replaced (a new inode), and a container that
/// bind-mounts it goes on reading the old one.
pub type AgentFiles = BTreeMap<PathBuf, String>;

/// The compose version the labels claim: the agent follows compose v2's conventions.
pub const COMPOSE_VERSION: &str = "2.24.0";

/// What the agent wants running for one service.
#[derive(Debug, Clone)]
pub struct Desired {
    pub service: String,
    /// The container's name: `container_name`, else `<project>-<service>-1`.
    pub name: String,
    pub body: ContainerCreateBody,
    /// Networks beyond the first, connected after create (API 1.41 takes one at create).
    pub more_networks: Vec<(String, EndpointSettings)>,
    pub hash: String,
    pub sections: BTreeMap<&'static str, String>,
    /// The service's `platform`, for the create call.
    pub platform: Option<String>,
    /// The agent's files this container mounts: name (relative to the project's directory when
    /// under it) → hash.
    pub files: BTreeMap<String, String>,
}

pub fn container_name(project: &Project, service: &Service) -> String {
    service
        .container_name
        .clone()
        .unwrap_or_else(|| format!("{}-{}-1", project.name, service.name))
}

/// The create body for `service`, whose image resolved to `image_id`; `files` are the agent's
/// files, of which those the service mounts count in its hash.
pub fn desired(
    project: &Project,
    service: &Service,
    image_id: &str,
    files: &AgentFiles,
) -> Desired {
    let env: Vec<String> = service
        .environment
        .iter()
        .map(|(k, v)| format!("{k}={}", v.value.expose()))
        .collect();
    let (mut exposed, bindings) = ports(service);
    for port in &service.expose {
        if !exposed.contains(port) {
            exposed.push(port.clone());
        }
    }
    // The hash sees the networks in the file's order, as agents before the primary-network rule
    // did (an upgrade recreates nothing), and their priorities when the file gives any.
    let in_file_order = endpoints(project, service);
    let networks = by_priority(service, in_file_order.clone());
    let (first_network, more_networks) = split_first(&networks);
    let mut host_config = host_config(project, service);
    host_config.port_bindings = (!bindings.is_empty()).then_some(bindings);
    host_config.network_mode = match &service.network_mode {
        // Another service's namespace: its container, by name (compose resolves it to the ID).
        Some(mode) => Some(match mode.strip_prefix("service:") {
            Some(other) => match project.services.get(other) {
                Some(other) => format!("container:{}", container_name(project, other)),
                None => mode.clone(),
            },
            None => mode.clone(),
        }),
        None => first_network.as_ref().map(|(name, _)| name.clone()),
    };
    if let Some(deploy) = &service.deploy {
        apply_deploy(&mut host_config, deploy);
    }
    let healthcheck = service.healthcheck.as_ref().map(|h| HealthConfig {
        test: Some(h.test.clone()),
        interval: h.interval.map(nanos),
        timeout: h.timeout.map(nanos),
        retries: h.retries.map(|r| r as i64),
        start_period: h.start_period.map(nanos),
        start_interval: h.start_interval.map(nanos),
    });
    let mut body = ContainerCreateBody {
        image: Some(service.image.clone()),
        hostname: service.hostname.clone(),
        domainname: service.flags.domainname.clone(),
        tty: service.flags.tty,
        open_stdin: service.flags.stdin_open,
        user: service.user.clone(),
        working_dir: service.working_dir.clone(),
        env: non_empty(env),
        cmd: service.command.clone(),
        entrypoint: service.entrypoint.clone(),
        exposed_ports: non_empty(exposed),
        healthcheck,
        stop_signal: service.stop_signal.clone(),
        stop_timeout: service.stop_grace_period.map(|d| d.as_secs() as i64),
        labels: Some(service.labels.clone().into_iter().collect()),
        host_config: Some(host_config),
        networking_config: first_network.map(|(name, endpoint)| NetworkingConfig {
            endpoints_config: Some(HashMap::from([(name, endpoint)])),
        }),
        ..Default::default()
    };
    let mounted = mounted_files(project, service, files);
    let sections = {
        let (first, more) = split_first(&in_file_order);
        let mut hashed = body.clone();
        if service.network_mode.is_none() {
            if let Some(host) = hashed.host_config.as_mut() {
                host.network_mode = first.as_ref().map(|(name, _)| name.clone());
            }
        }
        hashed.networking_config = first.map(|(name, endpoint)| NetworkingConfig {
            endpoints_config: Some(HashMap::from([(name, endpoint)])),
        });
        let mut sections = section_hashes(&hashed, &more, image_id, &mounted);
        let priorities: Vec<(&String, i64)> = service
            .networks
            .iter()
            .filter_map(|(key, n)| n.priority.map(|p| (key, p)))
            .collect();
        if !priorities.is_empty() {
            let text = serde_json::json!(priorities).to_string();
            sections.insert("network_priority", sha256_hex(text.as_bytes()));
        }
        sections
    };
    let hash = sha256_hex(
        sections
            .iter()
            .map(|(k, v)| format!("{k}={v};"))
            .collect::<String>()
            .as_bytes(),
    );
    let labels = body.labels.get_or_insert_with(HashMap::new);
    labels.extend(compose_labels(project, service, image_id, &hash, &sections));
    if !mounted.is_empty() {
        labels.insert(FILES.to_string(), pairs(&mounted));
    }
    Desired {
        service: service.name.clone(),
        name: container_name(project, service),
        body,
        more_networks,
        hash,
        sections,
        platform: service.platform.clone(),
        files: mounted,
    }
}

/// The container ports (`ExposedPorts`) and their host bindings.
fn ports(service: &Service) -> (Vec<String>, HashMap<String, Option<Vec<PortBinding>>>) {
    let mut exposed = Vec::new();
    let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    for port in &service.ports {
        let key = format!("{}/{}", port.target, port.protocol.as_str());
        if !exposed.contains(&key) {
            exposed.push(key.clone());
        }
        let binding = PortBinding {
            host_ip: Some(port.host_ip.clone().unwrap_or_default()),
            host_port: Some(port.published.map(|p| p.to_string()).unwrap_or_default()),
        };
        bindings
            .entry(key)
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(binding);
    }
    (exposed, bindings)
}

/// The service's networks by engine name, each with compose v2's aliases: the service name,
/// the container's own name, then the file's aliases.
/// A network the container joins: its engine name and the container's endpoint on it.
type Endpoint = (String, EndpointSettings);

/// The first network and the others.
fn split_first(networks: &[Endpoint]) -> (Option<Endpoint>, Vec<Endpoint>) {
    match networks.split_first() {
        Some((first, rest)) => (Some(first.clone()), rest.to_vec()),
        None => (None, Vec::new()),
    }
}

/// The service's networks in compose v2's order: the highest `priority` first, then by key. The
/// first is the one the container is created on (its default route).
fn by_priority(service: &Service, networks: Vec<Endpoint>) -> Vec<Endpoint> {
    let mut keyed: Vec<(i64, &String, Endpoint)> = service
        .networks
        .iter()
        .map(|(key, n)| (n.priority.unwrap_or(0), key))
        .zip(networks)
        .map(|((priority, key), network)| (priority, key, network))
        .collect();
    keyed.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    keyed.into_iter().map(|(_, _, network)| network).collect()
}

fn endpoints(project: &Project, service: &Service) -> Vec<(String, EndpointSettings)> {
    service
        .networks
        .iter()
        .map(|(key, settings)| {
            let name = project
                .networks
                .get(key)
                .map(|n| n.name.clone())
                .unwrap_or_else(|| key.clone());
            let mut aliases = vec![service.name.clone(), container_name(project, service)];
            aliases.extend(settings.aliases.iter().cloned());
            let fixed = settings.ipv4_address.is_some() || settings.ipv6_address.is_some();
            let endpoint = EndpointSettings {
                aliases: Some(aliases),
                // On a user-defined network, a link is an alias of the linked container, seen
                // from this one only (what `--link` becomes there).
                links: non_empty(links(project, service)),
                ipam_config: fixed.then(|| EndpointIpamConfig {
                    ipv4_address: settings.ipv4_address.clone(),
                    ipv6_address: settings.ipv6_address.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            };
            (name, endpoint)
        })
        .collect()
}

/// `links` and `external_links` as the engine takes them: `container:alias`.
fn links(project: &Project, service: &Service) -> Vec<String> {
    let own = service.links.iter().map(|(other, alias)| {
        let name = project
            .services
            .get(other)
            .map(|o| container_name(project, o))
            .unwrap_or_else(|| other.clone());
        format!("{name}:{alias}")
    });
    let external = service
        .external_links
        .iter()
        .map(|l| match l.split_once(':') {
            Some(_) => l.clone(),
            None => format!("{l}:{l}"),
        });
    own.chain(external).collect()
}

/// The host side of the container: mounts and resources (ports and network set by the caller).
fn host_config(project: &Project, service: &Service) -> HostConfig {
    let (binds, mounts) = mounts(project, service);
    HostConfig {
        binds: non_empty(binds),
        mounts: non_empty(mounts),
        // No `restart:` sends no policy at all, as compose does (the engine's default is no restart).
        restart_policy: service.restart.map(restart_policy),
        extra_hosts: non_empty(
            service
                .extra_hosts
                .iter()
                .map(|h| format!("{}:{}", h.host, h.ip))
                .collect(),
        ),
        log_config: service.logging.as_ref().map(|l| HostConfigLogConfig {
            typ: l.driver.clone(),
            config: (!l.options.is_empty()).then(|| l.options.clone().into_iter().collect()),
        }),
        ulimits: non_empty(
            service
                .ulimits
                .iter()
                .map(|(name, u)| ResourcesUlimits {
                    name: Some(name.clone()),
                    soft: Some(u.soft),
                    hard: Some(u.hard),
                })
                .collect(),
        ),
        memory: service.mem_limit.map(|b| b as i64),
        nano_cpus: service.cpus.map(|c| (c * 1e9).round() as i64),
        init: service.init,
        tmpfs: non_empty_map(service.tmpfs.iter().map(|t| match t.split_once(':') {
            Some((path, options)) => (path.to_string(), options.to_string()),
            None => (t.clone(), String::new()),
        })),
        cap_add: non_empty(service.cap_add.clone()),
        cap_drop: non_empty(service.cap_drop.clone()),
        readonly_rootfs: service.read_only,
        shm_size: service.shm_size.map(|b| b as i64),
        sysctls: non_empty_map(service.sysctls.clone()),
        dns: non_empty(service.dns.clone()),
        ..flag_host_config(&service.flags)
    }
}

/// What docker compose applies of `deploy` outside swarm: its limits and reservations override
/// the service's own, its restart policy overrides `restart` (a CPU reservation is swarm's).
fn apply_deploy(hc: &mut HostConfig, deploy: &crate::compose::Deploy) {
    let limits = &deploy.limits;
    if let Some(memory) = limits.memory.filter(|m| *m > 0) {
        hc.memory = Some(memory as i64);
    }
    if let Some(cpus) = limits.cpus.filter(|c| *c > 0.0) {
        hc.nano_cpus = Some((cpus * 1e9).round() as i64);
    }
    if let Some(pids) = limits.pids.filter(|p| *p > 0) {
        hc.pids_limit = Some(pids);
    }
    let reservations = &deploy.reservations;
    if let Some(memory) = reservations.memory.filter(|m| *m > 0) {
        hc.memory_reservation = Some(memory as i64);
    }
    if !reservations.devices.is_empty() {
        hc.device_requests = Some(
            reservations
                .devices
                .iter()
                .map(|d| DeviceRequest {
                    driver: d.driver.clone(),
                    count: d.count,
                    device_ids: non_empty(d.device_ids.clone()),
                    capabilities: Some(vec![d.capabilities.clone()]),
                    options: non_empty_map(d.options.clone()),
                })
                .collect(),
        );
    }
    if let Some(policy) = &deploy.restart_policy {
        let name = match policy.condition.as_deref() {
            Some("none") => RestartPolicyNameEnum::NO,
            Some("on-failure") => RestartPolicyNameEnum::ON_FAILURE,
            _ => RestartPolicyNameEnum::ALWAYS,
        };
        hc.restart_policy = Some(RestartPolicy {
            name: Some(name),
            maximum_retry_count: policy.max_attempts.map(i64::from),
        });
    }
}

/// The host side of [`crate::compose::Flags`].
fn flag_host_config(f: &crate::compose::Flags) -> HostConfig {
    HostConfig {
        privileged: f.privileged,
        oom_kill_disable: f.oom_kill_disable,
        ipc_mode: f.ipc.clone(),
        pid_mode: f.pid.clone(),
        userns_mode: f.userns_mode.clone(),
        cgroup_parent: f.cgroup_parent.clone(),
        runtime: f.runtime.clone(),
        cpuset_cpus: f.cpuset.clone(),
        group_add: non_empty(f.group_add.clone()),
        security_opt: non_empty(f.security_opt.clone()),
        dns_search: non_empty(f.dns_search.clone()),
        dns_options: non_empty(f.dns_opt.clone()),
        cpu_shares: f.cpu_shares,
        cpu_quota: f.cpu_quota,
        cpu_period: f.cpu_period,
        pids_limit: f.pids_limit,
        oom_score_adj: f.oom_score_adj,
        memory_reservation: f.mem_reservation.map(|b| b as i64),
        memory_swap: f.memswap_limit,
        ..Default::default()
    }
}

/// Compose's labels (and the agent's sections), so `docker compose ps` and `logs` keep working.
fn compose_labels(
    project: &Project,
    service: &Service,
    image_id: &str,
    hash: &str,
    sections: &BTreeMap<&'static str, String>,
) -> Vec<(String, String)> {
    let depends_on: Vec<String> = service
        .depends_on
        .iter()
        // Compose v2's own form: `name:condition:restart` (`docker compose restart` reads the
        // third field to restart dependents too).
        .map(|(name, d)| format!("{name}:{}:{}", d.condition.as_str(), d.restart))
        .collect();
    [
        (PROJECT, project.name.clone()),
        (SERVICE, service.name.clone()),
        (NUMBER, "1".to_string()),
        (ONEOFF, "False".to_string()),
        (CONFIG_HASH, crate::compose::config_hash(service)),
        (HASH, hash.to_string()),
        (VERSION, COMPOSE_VERSION.to_string()),
        (WORKING_DIR, project.working_dir.display().to_string()),
        (CONFIG_FILES, project.file.display().to_string()),
        (IMAGE, image_id.to_string()),
        (DEPENDS_ON, depends_on.join(",")),
        (SECTIONS, pairs(sections)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

fn pairs<K: std::fmt::Display>(map: &BTreeMap<K, String>) -> String {
    map.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn parse_pairs(label: Option<&str>) -> BTreeMap<&str, &str> {
    label
        .unwrap_or_default()
        .split(',')
        .filter_map(|pair| pair.split_once('='))
        .collect()
}

/// The agent's files under a bind mount of `service` (the file itself, or a directory above it),
/// each with the first 12 hex digits of its hash.
fn mounted_files(
    project: &Project,
    service: &Service,
    files: &AgentFiles,
) -> BTreeMap<String, String> {
    let sources: Vec<&Path> = service
        .volumes
        .iter()
        .filter(|m| m.kind == MountKind::Bind)
        .filter_map(|m| m.source.as_deref().map(Path::new))
        .collect();
    files
        .iter()
        .filter(|(path, _)| sources.iter().any(|source| path.starts_with(source)))
        .map(|(path, hash)| {
            let name = path
                .strip_prefix(&project.working_dir)
                .unwrap_or(path)
                .display()
                .to_string();
            (name, hash.chars().take(12).collect())
        })
        .collect()
}
/// The services some container of a project depends on with `service_completed_successfully`,
/// read from their `com.docker.compose.depends_on` labels (`name:condition:restart,...`): the
/// one-shot services, known without the compose file.
pub fn one_shots(containers: &[super::api::Container]) -> std::collections::BTreeSet<&str> {
    containers
        .iter()
        .filter_map(|c| c.label(DEPENDS_ON))
        .flat_map(|label| label.split(','))
        .filter_map(|dep| {
            let mut parts = dep.split(':');
            let name = parts.next()?;
            (parts.next()? == "service_completed_successfully").then_some(name)
        })
        .collect()
}

/// Which sections differ between a container (its `io.kicky-agent.sections` and
/// `io.kicky-agent.files` labels) and `desired`; a changed file is named, as `volumes: app.yml`.
pub fn changed_sections(
    sections_label: Option<&str>,
    files_label: Option<&str>,
    desired: &Desired,
) -> Vec<String> {
    let old = parse_pairs(sections_label);
    if old.is_empty() {
        return vec!["created by another tool".to_string()];
    }
    let old_files = parse_pairs(files_label);
    let mut changed_files: Vec<&str> = desired
        .files
        .iter()
        .filter(|(name, hash)| old_files.get(name.as_str()) != Some(&hash.as_str()))
        .map(|(name, _)| name.as_str())
        .collect();
    changed_files.extend(
        old_files
            .keys()
            .filter(|name| !desired.files.contains_key(**name)),
    );
    desired
        .sections
        .iter()
        .filter(|(k, v)| old.get(*k) != Some(&v.as_str()))
        .map(|(k, _)| match *k {
            "volumes" if !changed_files.is_empty() => {
                format!("volumes: {}", changed_files.join(", "))
            }
            other => other.to_string(),
        })
        .collect()
}

fn section_hashes(
    body: &ContainerCreateBody,
    more_networks: &[(String, EndpointSettings)],
    image_id: &str,
    files: &BTreeMap<String, String>,
) -> BTreeMap<&'static str, String> {
    let hc = body.host_config.clone().unwrap_or_default();
    // Without mounted files, the section is what it was before files counted: an agent upgrade
    // does not recreate the containers that mount none.
    // Body fields added after agent 0.1.0 count only when set: the hashes of containers that
    // use none of them stay what they were.
    let added = serde_json::json!({
        "domainname": body.domainname,
        "tty": body.tty,
        "open_stdin": body.open_stdin,
    });
    let added_set = added
        .as_object()
        .is_some_and(|o| o.values().any(|v| !v.is_null()));
    let mut runtime = serde_json::json!([
        body.hostname,
        body.user,
        body.working_dir,
        body.stop_signal,
        body.stop_timeout,
        HostConfig {
            binds: None,
            mounts: None,
            tmpfs: None,
            port_bindings: None,
            network_mode: None,
            restart_policy: None,
            ..hc.clone()
        }
    ]);
    if added_set {
        if let Some(parts) = runtime.as_array_mut() {
            parts.push(added);
        }
    }
    let volumes = if files.is_empty() {
        serde_json::json!([hc.binds, hc.mounts, hc.tmpfs])
    } else {
        serde_json::json!([hc.binds, hc.mounts, hc.tmpfs, files])
    };
    let parts: Vec<(&'static str, Value)> = vec![
        ("image", Value::String(image_id.to_string())),
        ("command", serde_json::json!([body.cmd, body.entrypoint])),
        ("environment", serde_json::json!(body.env)),
        (
            "ports",
            serde_json::json!([body.exposed_ports, hc.port_bindings]),
        ),
        ("volumes", volumes),
        (
            "networks",
            serde_json::json!([hc.network_mode, body.networking_config, more_networks]),
        ),
        ("healthcheck", serde_json::json!(body.healthcheck)),
        ("restart", serde_json::json!(hc.restart_policy)),
        ("labels", serde_json::json!(body.labels)),
        ("runtime", runtime),
    ];
    parts
        .into_iter()
        .map(|(name, value)| {
            (
                name,
                sha256_hex(canonical(&value).as_bytes())[..12].to_string(),
            )
        })
        .collect()
}

/// JSON with object keys sorted, whatever map type produced it.
fn canonical(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let sorted: BTreeMap<&String, String> =
                map.iter().map(|(k, v)| (k, canonical(v))).collect();
            let body: Vec<String> = sorted
                .iter()
                .map(|(k, v)| format!("{}:{v}", Value::String((*k).clone())))
                .collect();
            format!("{{{}}}", body.join(","))
        }
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(canonical).collect::<Vec<_>>().join(",")
        ),
        other => other.to_string(),
    }
}

fn mounts(project: &Project, service: &Service) -> (Vec<String>, Vec<Mount>) {
    let mut binds = Vec::new();
    let mut mounts = Vec::new();
    for m in &service.volumes {
        match m.kind {
            // The short syntax: a bind that creates its host directory, as `docker run -v` does.
            MountKind::Bind if m.create_host_path => {
                let source = m.source.clone().unwrap_or_default();
                let mut mode = if m.read_only { "ro" } else { "rw" }.to_string();
                if let Some(propagation) = &m.propagation {
                    mode = format!("{mode},{propagation}");
                }
                if let Some(label) = &m.selinux {
                    mode = format!("{mode},{label}");
                }
                binds.push(format!("{source}:{}:{mode}", m.target));
            }
            MountKind::Bind => mounts.push(Mount {
                typ: Some(MountType::BIND),
                source: m.source.clone(),
                target: Some(m.target.clone()),
                read_only: Some(m.read_only),
                bind_options: Some(MountBindOptions {
                    create_mountpoint: Some(false),
                    propagation: m.propagation.as_deref().and_then(propagation),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            MountKind::Volume => mounts.push(Mount {
                typ: Some(MountType::VOLUME),
                source: m.source.as_ref().map(|key| {
                    project
                        .volumes
                        .get(key)
                        .map(|v| v.name.clone())
                        .unwrap_or_else(|| key.clone())
                }),
                target: Some(m.target.clone()),
                read_only: Some(m.read_only),
                volume_options: m.nocopy.then(|| MountVolumeOptions {
                    no_copy: Some(true),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            MountKind::Tmpfs => mounts.push(Mount {
                typ: Some(MountType::TMPFS),
                target: Some(m.target.clone()),
                read_only: Some(m.read_only),
                tmpfs_options: m.tmpfs_size.map(|size| MountTmpfsOptions {
                    size_bytes: Some(size as i64),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }
    }
    // Secrets: the file the agent wrote for each, read-only; a file missing at start (the host
    // restarted and the agent has not written it yet) fails the start rather than mounting an
    // empty directory, as a bind of the short syntax would.
    for secret in &service.secrets {
        mounts.push(Mount {
            typ: Some(MountType::BIND),
            source: secret.host.as_ref().map(|p| p.display().to_string()),
            target: Some(secret.target.clone()),
            read_only: Some(true),
            ..Default::default()
        });
    }
    (binds, mounts)
}

fn propagation(value: &str) -> Option<MountBindOptionsPropagationEnum> {
    use MountBindOptionsPropagationEnum as P;
    Some(match value {
        "private" => P::PRIVATE,
        "rprivate" => P::RPRIVATE,
        "shared" => P::SHARED,
        "rshared" => P::RSHARED,
        "slave" => P::SLAVE,
        "rslave" => P::RSLAVE,
        _ => return None,
    })
}

fn restart_policy(restart: Restart) -> RestartPolicy {
    let (name, retries) = match restart {
        Restart::No => (RestartPolicyNameEnum::NO, None),
        Restart::Always => (RestartPolicyNameEnum::ALWAYS, None),
        Restart::UnlessStopped => (RestartPolicyNameEnum::UNLESS_STOPPED, None),
        Restart::OnFailure { max_retries } => (
            RestartPolicyNameEnum::ON_FAILURE,
            max_retries.map(i64::from),
        ),
    };
    RestartPolicy {
        name: Some(name),
        maximum_retry_count: retries,
    }
}

fn nanos(d: std::time::Duration) -> i64 {
    d.as_nanos() as i64
}

fn non_empty<T>(items: Vec<T>) -> Option<Vec<T>> {
    (!items.is_empty()).then_some(items)
}

fn non_empty_map(
    items: impl IntoIterator<Item = (String, String)>,
) -> Option<HashMap<String, String>> {
    let map: HashMap<String, String> = items.into_iter().collect();
    (!map.is_empty()).then_some(map)
}
pub use crate::digest::sha256_hex;

#[cfg(test)]
mod tests {
    /// `com.docker.compose.depends_on` as compose v2 writes it (`prepareLabels`:
    /// `name:condition:restart`), so `docker compose restart db` restarts only the services that
    /// asked for it.
    #[test]
    fn the_depends_on_label_is_compose_v2s() {
        let yaml = "services:\n  db:\n    image: db\n  cache:\n    image: cache\n  app:\n    image: app\n    depends_on:\n      db:\n        condition: service_healthy\n        restart: true\n      cache:\n        condition: service_started\n";
        let file = std::path::Path::new("/srv/orange/docker-compose.yml");
        let project = crate::compose::from_str(yaml, file, "orange", &|_| None).unwrap();
        let app = &project.services["app"];
        let labels = super::compose_labels(&project, app, "sha256:0", "h", &Default::default());
        let label = labels
            .iter()
            .find(|(k, _)| k == super::DEPENDS_ON)
            .map(|(_, v)| v.as_str())
            .unwrap();
        // Compose v2 walks a Go map: the order is not part of the form.
        let mut deps: Vec<&str> = label.split(',').collect();
        deps.sort();
        assert_eq!(
            deps,
            ["cache:service_started:false", "db:service_healthy:true"]
        );
    }
}
