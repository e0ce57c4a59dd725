//! The compose project as the agent understands it: every short form already expanded, every
//! value typed, paths absolute, so the engine reconcile reads fields instead of re-parsing text.
//!
//! Maps keep the order of the compose file (env files first for `environment`); `render` sorts
//! them the way `docker compose config` prints them.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use indexmap::IndexMap;

use crate::redact::Secret;

/// A loaded, interpolated and validated compose project.
#[derive(Debug, Clone, PartialEq)]
pub struct Project {
    /// The agent's `project`: the `com.docker.compose.project` label and the prefix of names.
    pub name: String,
    /// The compose file's directory, against which its relative paths were resolved.
    pub working_dir: PathBuf,
    /// The compose file itself.
    pub file: PathBuf,
    /// The enabled services (those whose `profiles` are active, or that have none), in file order.
    pub services: IndexMap<String, Service>,
    /// The top-level `networks`, in file order, then `default` when a service is on it and the
    /// file does not declare it (as compose adds it).
    pub networks: IndexMap<String, Network>,
    /// The top-level `volumes`, in file order.
    pub volumes: IndexMap<String, Volume>,
    /// The top-level `secrets`, in file order: where each one's content comes from.
    pub secrets: IndexMap<String, SecretSource>,
    /// The string values of the file that referred to a variable, by key path
    /// (`services.web.command[2]`): what `render` masks.
    pub from_variables: HashMap<String, FromVariable>,
}

/// A string value of the compose file that referred to a variable, as interpolated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FromVariable {
    /// The key path of the list or mapping it is in (`services.web.labels`).
    pub parent: String,
    /// Whether it is an item of a list (`labels[0]`), not a mapping's value (`labels.owner`).
    pub in_list: bool,
    /// What it became.
    pub value: Secret,
}

impl Project {
    /// Service names in an order that starts each service after those it depends on (file order
    /// otherwise). Validation has refused cycles, so every service is listed.
    pub fn start_order(&self) -> Vec<&str> {
        let mut order: Vec<&str> = Vec::with_capacity(self.services.len());
        fn visit<'a>(project: &'a Project, name: &'a str, order: &mut Vec<&'a str>) {
            if order.contains(&name) {
                return;
            }
            if let Some(service) = project.services.get(name) {
                for dependency in service.depends_on.keys() {
                    visit(project, dependency, order);
                }
                order.push(name);
            }
        }
        for name in self.services.keys() {
            visit(self, name, &mut order);
        }
        order
    }

    /// A one-shot service: another depends on it with `service_completed_successfully`, so it
    /// is done once it has exited 0 (not restarted, not unhealthy).
    pub fn is_one_shot(&self, name: &str) -> bool {
        self.services.values().any(|s| {
            s.depends_on
                .get(name)
                .is_some_and(|d| d.condition == Condition::ServiceCompletedSuccessfully)
        })
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Service {
    pub name: String,
    /// The image the engine pulls and runs: as written, or through its registry's mirror.
    pub image: String,
    /// The image as the compose file names it, when a mirror routed it (see
    /// [`Service::written_image`]).
    pub mirrored_from: Option<String>,
    pub container_name: Option<String>,
    /// `None`: the image's own. A string in the file is split into words with shell rules.
    pub command: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    /// `env_file` entries first, in order, then `environment` overriding them.
    pub environment: IndexMap<String, EnvValue>,
    /// Bare `KEY`s of `environment` no variable sets: the container does not get them, and
    /// `docker compose config` prints them as `KEY: null`.
    pub unset_environment: Vec<String>,
    pub ports: Vec<Port>,
    pub volumes: Vec<Mount>,
    /// Network key (in [`Project::networks`]) → the service's settings on it. Never empty: a
    /// service without `networks` is on `default`.
    pub networks: IndexMap<String, ServiceNetwork>,
    pub restart: Option<Restart>,
    pub healthcheck: Option<Healthcheck>,
    /// The agent's readiness probe (`x-kicky-agent: {ready: ...}`, or the config's
    /// `compose.ready`): not part of the container, so not of its hash.
    pub ready: Option<crate::config::probe::Probe>,
    pub depends_on: IndexMap<String, Dependency>,
    pub labels: IndexMap<String, String>,
    pub user: Option<String>,
    pub working_dir: Option<String>,
    pub hostname: Option<String>,
    pub extra_hosts: Vec<ExtraHost>,
    pub logging: Option<Logging>,
    pub ulimits: IndexMap<String, Ulimit>,
    /// Bytes.
    pub mem_limit: Option<u64>,
    /// Bytes.
    pub shm_size: Option<u64>,
    pub cpus: Option<f64>,
    pub init: Option<bool>,
    pub stop_signal: Option<String>,
    pub stop_grace_period: Option<Duration>,
    /// `PATH[:OPTIONS]`, as docker's `--tmpfs` takes them.
    pub tmpfs: Vec<String>,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub read_only: Option<bool>,
    pub sysctls: IndexMap<String, String>,
    pub dns: Vec<String>,
    pub pull_policy: Option<PullPolicy>,
    pub profiles: Vec<String>,
    /// `expose`: container ports (`80`, `80/udp`), as the image's `EXPOSE` declares them.
    pub expose: Vec<String>,
    /// `os/arch[/variant]`: the image is pulled, and the container created, for this platform.
    pub platform: Option<String>,
    /// The container flags that go to the engine as they are written.
    pub flags: Flags,
    /// `network_mode`: `host`, `none`, `bridge`, `container:<name>`, or `service:<name>` (the
    /// namespace of that service's container). The service is then on no project network.
    pub network_mode: Option<String>,
    /// `deploy`: what docker compose applies outside swarm (resources, restart policy).
    pub deploy: Option<Deploy>,
    /// `links`: (service, alias); the service starts first and is reachable by the alias.
    pub links: Vec<(String, String)>,
    /// `external_links`: `container[:alias]` of containers outside the project.
    pub external_links: Vec<String>,
    /// `secrets`: files the agent writes on a tmpfs and mounts read-only.
    pub secrets: Vec<ServiceSecret>,
}

/// Where a top-level secret's content comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum SecretSource {
    /// `file:`: a host file (relative paths resolved against the compose file's directory).
    File(PathBuf),
    /// `environment:`: a variable, as the agent resolved it (with `env_file: false` sources
    /// too), else the agent's environment.
    Environment(String),
}

/// One service's use of a secret (`secrets:`, short or long syntax).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceSecret {
    /// The key in [`Project::secrets`].
    pub source: String,
    /// Absolute path in the container: `/run/secrets/<target>` for a relative `target` (by
    /// default the source's name).
    pub target: String,
    /// The file's owner and mode; `None`: the agent's defaults (see `sync::secret_files`).
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub mode: Option<u32>,
    /// The file the agent wrote for it, set once its content is known (before the container is
    /// specified); the container mounts it read-only at `target`.
    pub host: Option<PathBuf>,
}

/// The part of `deploy` that docker compose v2 applies to a container outside swarm.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Deploy {
    pub replicas: Option<u32>,
    pub limits: Resources,
    pub reservations: Resources,
    pub restart_policy: Option<DeployRestart>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resources {
    pub cpus: Option<f64>,
    /// Bytes.
    pub memory: Option<u64>,
    pub pids: Option<i64>,
    /// Reservations only: devices (GPUs) asked of a device driver.
    pub devices: Vec<DeviceRequest>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceRequest {
    pub capabilities: Vec<String>,
    pub driver: Option<String>,
    /// `None` with no `device_ids`: all (`count: all`).
    pub count: Option<i64>,
    pub device_ids: Vec<String>,
    pub options: IndexMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeployRestart {
    /// `none`, `on-failure` or `any`.
    pub condition: Option<String>,
    pub max_attempts: Option<u32>,
}

/// Container settings of the Compose Specification that map one to one to the engine's.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Flags {
    pub stdin_open: Option<bool>,
    pub tty: Option<bool>,
    pub privileged: Option<bool>,
    pub oom_kill_disable: Option<bool>,
    pub domainname: Option<String>,
    pub ipc: Option<String>,
    pub pid: Option<String>,
    pub userns_mode: Option<String>,
    pub cgroup_parent: Option<String>,
    pub runtime: Option<String>,
    pub cpuset: Option<String>,
    pub group_add: Vec<String>,
    pub security_opt: Vec<String>,
    pub dns_search: Vec<String>,
    pub dns_opt: Vec<String>,
    pub cpu_shares: Option<i64>,
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<i64>,
    pub pids_limit: Option<i64>,
    pub oom_score_adj: Option<i64>,
    /// Bytes.
    pub mem_reservation: Option<u64>,
    /// Bytes; -1: unlimited swap.
    pub memswap_limit: Option<i64>,
}

/// One variable of a service's environment. The value may be an SSM parameter: it is a
/// [`Secret`], printed only through [`Secret::expose`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvValue {
    pub value: Secret,
    pub origin: EnvOrigin,
}

impl EnvValue {
    /// Whether `render` may print the value: only when the compose file spells it out.
    pub fn is_literal(&self) -> bool {
        self.origin == EnvOrigin::Literal
    }
}

/// Where a variable's value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvOrigin {
    /// Written out in `environment` (`$$` is the only `$` it may hold).
    Literal,
    /// Written in `environment` with a variable reference, substituted.
    Interpolated,
    /// A bare `KEY` in `environment`, its value taken from the env file or the agent's environment.
    Inherited,
    /// Read from an `env_file`.
    EnvFile,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// Host ports `start..=end` (equal for a single port).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub start: u16,
    pub end: u16,
}

impl PortRange {
    pub fn single(port: u16) -> PortRange {
        PortRange {
            start: port,
            end: port,
        }
    }

    pub fn overlaps(&self, other: &PortRange) -> bool {
        self.start <= other.end && other.start <= self.end
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

/// One container port. Short-syntax ranges are expanded into one `Port` per container port, as
/// compose does; a host range for a single container port stays a range (docker picks one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    pub host_ip: Option<String>,
    /// `None`: not published, or published on a port docker picks (`127.0.0.1::80`).
    pub published: Option<PortRange>,
    pub target: u16,
    pub protocol: Protocol,
    /// `host` when the long syntax says so; compose's default is `ingress` (meaningful for swarm
    /// only, so the engine treats both alike).
    pub mode: PortMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortMode {
    Ingress,
    Host,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountKind {
    Bind,
    Volume,
    Tmpfs,
}

impl MountKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MountKind::Bind => "bind",
            MountKind::Volume => "volume",
            MountKind::Tmpfs => "tmpfs",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub kind: MountKind,
    /// Bind: an absolute host path (relative ones resolved against the compose file's directory,
    /// `~` against `$HOME`). Volume: the key in [`Project::volumes`], or `None` for an anonymous
    /// volume. Tmpfs: `None`.
    pub source: Option<String>,
    pub target: String,
    pub read_only: bool,
    /// Bind: create the host directory when missing (always for the short syntax, as compose does).
    pub create_host_path: bool,
    /// Has its kind's options section (`bind:`, `volume:`, `tmpfs:`) as compose holds it: always
    /// for the short syntax (`src:dst:opts`), when written for the long one. `docker compose
    /// config` prints it (`volume: {}`), and it counts in compose's config hash.
    pub options_section: bool,
    /// Bind: `create_host_path: true` as compose 2.40 holds it (the short syntax, or written):
    /// what it prints and hashes. A long bind whose `bind:` section does not say it is still
    /// created ([`Mount::create_host_path`]), as compose-go's later releases do again.
    pub create_host_path_written: bool,
    /// Bind: mount propagation (`rslave`, `shared`...), `None` for docker's default.
    pub propagation: Option<String>,
    /// Volume: do not copy the image's content into a new volume.
    pub nocopy: bool,
    /// Tmpfs: size in bytes.
    pub tmpfs_size: Option<u64>,
    /// Bind: SELinux relabelling, `z` (shared) or `Z` (private); a no-op on hosts without
    /// SELinux, as docker does.
    pub selinux: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceNetwork {
    pub aliases: Vec<String>,
    pub ipv4_address: Option<String>,
    pub ipv6_address: Option<String>,
    /// `priority`: the network with the highest is the container's first (its default route),
    /// ties broken by the network's key, as compose v2 does.
    pub priority: Option<i64>,
    /// Given a mapping in the file, even an empty one (`back: {}`): compose prints it (`{}`
    /// rather than `null`) and hashes it so.
    pub configured: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    No,
    Always,
    OnFailure { max_retries: Option<u32> },
    UnlessStopped,
}

impl std::fmt::Display for Restart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Restart::No => f.write_str("no"),
            Restart::Always => f.write_str("always"),
            Restart::OnFailure { max_retries: None } => f.write_str("on-failure"),
            Restart::OnFailure {
                max_retries: Some(n),
            } => write!(f, "on-failure:{n}"),
            Restart::UnlessStopped => f.write_str("unless-stopped"),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Healthcheck {
    /// Docker's form: `["CMD", arg...]`, `["CMD-SHELL", command]` or `["NONE"]` (disabled,
    /// also from `disable: true`). Empty: the image's own test, with these durations.
    pub test: Vec<String>,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub retries: Option<u64>,
    pub start_period: Option<Duration>,
    /// Checks during the start period this often (Docker Engine 25, API 1.44, and later).
    pub start_interval: Option<Duration>,
    /// Disabled by `disable: true` (rather than `test: [NONE]`): compose prints it so.
    pub disable: bool,
}

impl Healthcheck {
    pub fn is_disabled(&self) -> bool {
        self.disable || self.test.first().map(String::as_str) == Some("NONE")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    ServiceStarted,
    ServiceHealthy,
    ServiceCompletedSuccessfully,
}

impl Condition {
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::ServiceStarted => "service_started",
            Condition::ServiceHealthy => "service_healthy",
            Condition::ServiceCompletedSuccessfully => "service_completed_successfully",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dependency {
    pub condition: Condition,
    /// `required: false`: a dependency that fails to start does not stop this service (compose
    /// v2); one that is not defined was dropped with a warning.
    pub required: bool,
    /// Restart this service when the dependency is recreated (compose's `restart: true`).
    pub restart: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraHost {
    pub host: String,
    pub ip: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Logging {
    /// `None`: the engine's default driver.
    pub driver: Option<String>,
    pub options: IndexMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ulimit {
    pub soft: i64,
    pub hard: i64,
    /// Written as one number: compose prints it back as one.
    pub single: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    Always,
    Never,
    /// Also spelled `if_not_present`.
    Missing,
    /// `daily`, `weekly`, `every_<duration>`: pulled again once this long has passed since the
    /// last pull (the daemon checks on that schedule, and applies a new image as a change).
    Refresh(Duration),
}

impl PullPolicy {
    /// As the compose file spells it.
    pub fn spelled(self) -> String {
        match self {
            PullPolicy::Always => "always".into(),
            PullPolicy::Never => "never".into(),
            PullPolicy::Missing => "missing".into(),
            PullPolicy::Refresh(d) if d == Duration::from_secs(24 * 3600) => "daily".into(),
            PullPolicy::Refresh(d) if d == Duration::from_secs(7 * 24 * 3600) => "weekly".into(),
            PullPolicy::Refresh(d) => format!("every_{}", period_spelled(d)),
        }
    }
}

/// A refresh period in the units compose's `every_<duration>` takes (`w`, `d`, `h`, `m`, `s`,
/// whole numbers, as its schema's `every_([0-9]+[wdhms])+`): `2d`, `1w3d`, `1h30m`.
fn period_spelled(d: Duration) -> String {
    let mut secs = d.as_secs();
    let mut out = String::new();
    for (unit, size) in [
        ('w', 7 * 24 * 3600),
        ('d', 24 * 3600),
        ('h', 3600),
        ('m', 60),
        ('s', 1),
    ] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    if out.is_empty() {
        out.push_str("0s");
    }
    out
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Network {
    /// The engine's name: `name:`, else `<project>_<key>` (the key itself when external).
    pub name: String,
    pub external: bool,
    pub driver: Option<String>,
    pub driver_opts: IndexMap<String, String>,
    pub labels: IndexMap<String, String>,
    pub internal: bool,
    pub attachable: bool,
    pub enable_ipv6: Option<bool>,
    pub ipam: Option<Ipam>,
}

/// A network's address management: its driver and address pools.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ipam {
    pub driver: Option<String>,
    pub config: Vec<IpamPool>,
    pub options: IndexMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpamPool {
    pub subnet: Option<String>,
    pub ip_range: Option<String>,
    pub gateway: Option<String>,
    pub aux_addresses: IndexMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Volume {
    /// The engine's name: `name:`, else `<project>_<key>` (the key itself when external).
    pub name: String,
    pub external: bool,
    pub driver: Option<String>,
    pub driver_opts: IndexMap<String, String>,
    pub labels: IndexMap<String, String>,
}
