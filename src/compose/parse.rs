//! From the interpolated YAML tree to the typed model: every long and short form of the Compose
//! Specification the agent supports, normalized as compose normalizes it, and every other key
//! refused with its path.
//!
//! Problems are collected, not returned at the first one, so one run names every mistake. Error
//! messages quote a value only when the compose file spells it out: a value interpolated from a
//! variable may be a secret.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use indexmap::IndexMap;
use serde_norway::{Mapping, Value};

use super::model::*;
use super::tree::{join_index, join_key, key_text};
use super::units;
use super::Problem;
use crate::redact::Secret;

/// What parsing needs besides the tree.
pub(super) struct Ctx<'a> {
    pub project: &'a str,
    /// The compose file's directory: relative paths resolve here.
    pub dir: &'a Path,
    /// `~` in a bind source.
    pub home: Option<String>,
    /// The variables: the env file's, then the agent's environment.
    pub lookup: &'a dyn Fn(&str) -> Option<String>,
    /// Paths of values that came from variables.
    pub tainted: &'a HashMap<String, FromVariable>,
    /// Reads an `env_file` (a sync about to write one reads what it will hold): `None` when
    /// there is no regular file there.
    pub read: &'a super::ReadText<'a>,
    pub problems: Vec<Problem>,
    pub warnings: Vec<Problem>,
}

/// Where the parts of a service were written, to point cross-service errors at their line.
#[derive(Debug, Default)]
pub(super) struct Paths {
    pub service: String,
    pub container_name: Option<String>,
    /// One per [`Service::ports`] entry.
    pub ports: Vec<String>,
    /// One per [`Service::volumes`] entry.
    pub volumes: Vec<String>,
    pub networks: IndexMap<String, String>,
    pub depends_on: IndexMap<String, String>,
    /// One per [`Service::secrets`] entry.
    pub secrets: Vec<String>,
    /// The `env_file`s the service read: each host path, and where the file names it.
    pub env_files: Vec<(PathBuf, String)>,
}

/// The whole file, every service included (profiles are applied later).
#[derive(Debug, Default)]
pub(super) struct Parsed {
    pub services: IndexMap<String, (Service, Paths)>,
    pub networks: IndexMap<String, Network>,
    pub volumes: IndexMap<String, Volume>,
    pub secrets: IndexMap<String, SecretSource>,
}

/// The service keys the agent supports (besides `x-*` extensions); any other is refused.
pub const SERVICE_KEYS: &[&str] = &[
    "image",
    "container_name",
    "command",
    "entrypoint",
    "environment",
    "env_file",
    "ports",
    "volumes",
    "networks",
    "restart",
    "healthcheck",
    "depends_on",
    "labels",
    "user",
    "working_dir",
    "hostname",
    "extra_hosts",
    "logging",
    "ulimits",
    "mem_limit",
    "cpus",
    "init",
    "stop_signal",
    "stop_grace_period",
    "tmpfs",
    "cap_add",
    "cap_drop",
    "read_only",
    "shm_size",
    "sysctls",
    "dns",
    "pull_policy",
    "profiles",
    "expose",
    "platform",
    "stdin_open",
    "tty",
    "privileged",
    "oom_kill_disable",
    "domainname",
    "ipc",
    "pid",
    "userns_mode",
    "cgroup_parent",
    "runtime",
    "cpuset",
    "group_add",
    "security_opt",
    "dns_search",
    "dns_opt",
    "cpu_shares",
    "cpu_quota",
    "cpu_period",
    "pids_limit",
    "oom_score_adj",
    "mem_reservation",
    "memswap_limit",
    "network_mode",
    "deploy",
    "links",
    "external_links",
    "secrets",
];

/// The keys of a top-level network the agent supports.
pub const NETWORK_KEYS: &[&str] = &[
    "ipam",
    "enable_ipv6",
    "driver",
    "driver_opts",
    "labels",
    "name",
    "external",
    "internal",
    "attachable",
];

/// The keys of a top-level volume the agent supports.
pub const VOLUME_KEYS: &[&str] = &["driver", "driver_opts", "labels", "name", "external"];

const HEALTHCHECK_KEYS: &[&str] = &[
    "test",
    "interval",
    "timeout",
    "start_period",
    "start_interval",
    "retries",
    "disable",
];

/// Why a key is refused, for the keys people most often write.
fn unsupported_hint(key: &str) -> &'static str {
    match key {
        "build" => ": kicky-agent runs prebuilt images; build and push in CI, then set `image`",
        "deploy" => ": swarm deployment settings are not supported; use `mem_limit` and `cpus`",
        "configs" => ": not supported; mount a file the agent fetches (`files:`) instead",
        "network_mode" => {
            ": only the networks declared under the top-level `networks` are supported"
        }
        "extends" | "include" => ": the agent reads one self-contained compose file",
        _ => "",
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

impl Ctx<'_> {
    fn problem(&mut self, path: &str, message: impl Into<String>) {
        self.problems.push(Problem::new(path, message));
    }

    fn warn(&mut self, path: &str, message: impl Into<String>) {
        self.warnings.push(Problem::new(path, message));
    }

    fn expected(&mut self, path: &str, what: &str, value: &Value) {
        self.problem(path, format!("expected {what}, found {}", kind(value)));
    }

    /// `value` quoted for an error message, or a placeholder when it came from a variable.
    fn shown(&self, path: &str, value: &str) -> String {
        if self.tainted.contains_key(path) {
            "(a value from a variable, not shown)".to_string()
        } else {
            format!("`{value}`")
        }
    }

    fn unsupported(&mut self, path: &str, key: &str, owner: &str) {
        let message = format!(
            "unsupported key `{key}` in {owner}{}",
            unsupported_hint(key)
        );
        self.problem(path, message);
    }

    fn string(&mut self, value: &Value, path: &str) -> Option<String> {
        match value {
            Value::String(s) => Some(s.clone()),
            other => {
                self.expected(path, "a string", other);
                None
            }
        }
    }

    /// A string, or a number or boolean taken as its text (`user: 1000`).
    fn scalar(&mut self, value: &Value, path: &str) -> Option<String> {
        match value {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            other => {
                self.expected(path, "a string", other);
                None
            }
        }
    }

    /// A boolean, or a string that interpolation left as one (`init: ${INIT}`), which compose
    /// casts the same way.
    fn boolean(&mut self, value: &Value, path: &str) -> Option<bool> {
        let parsed = match value {
            Value::Bool(b) => Some(*b),
            Value::String(s) => match s.to_ascii_lowercase().as_str() {
                "true" | "yes" | "y" | "on" => Some(true),
                "false" | "no" | "n" | "off" => Some(false),
                _ => None,
            },
            _ => None,
        };
        if parsed.is_none() {
            self.expected(path, "true or false", value);
        }
        parsed
    }

    /// A whole number, written as a number or as a string of digits.
    fn integer(&mut self, value: &Value, path: &str) -> Option<i64> {
        let parsed = match value {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        };
        if parsed.is_none() {
            self.expected(path, "a whole number", value);
        }
        parsed
    }

    fn list<'v>(&mut self, value: &'v Value, path: &str) -> Option<&'v [Value]> {
        match value {
            Value::Sequence(items) => Some(items),
            other => {
                self.expected(path, "a list", other);
                None
            }
        }
    }

    /// The entries of a mapping as `(key, key path, value)`.
    fn entries<'v>(
        &mut self,
        value: &'v Value,
        path: &str,
    ) -> Option<Vec<(String, String, &'v Value)>> {
        let Value::Mapping(map) = value else {
            self.expected(path, "a mapping", value);
            return None;
        };
        Some(self.mapping_entries(map, path))
    }

    fn mapping_entries<'v>(
        &mut self,
        map: &'v Mapping,
        path: &str,
    ) -> Vec<(String, String, &'v Value)> {
        let mut out = Vec::with_capacity(map.len());
        for (key, value) in map {
            match key_text(key) {
                Some(key) => {
                    let key_path = join_key(path, &key);
                    out.push((key, key_path, value));
                }
                None => self.problem(path, format!("a key must be a string, found {}", kind(key))),
            }
        }
        out
    }

    /// A list of scalars, each as its text (`expose: [80, "443/tcp"]`, `group_add: [1000]`).
    fn scalars(&mut self, value: &Value, path: &str) -> Option<Vec<String>> {
        let items = self.list(value, path)?;
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            out.push(self.scalar(item, &join_index(path, i))?);
        }
        Some(out)
    }

    /// A list of strings.
    fn strings(&mut self, value: &Value, path: &str) -> Option<Vec<String>> {
        let items = self.list(value, path)?;
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            out.push(self.string(item, &join_index(path, i))?);
        }
        Some(out)
    }

    fn string_or_list(&mut self, value: &Value, path: &str) -> Option<Vec<String>> {
        match value {
            Value::String(s) => Some(vec![s.clone()]),
            _ => self.strings(value, path),
        }
    }

    /// `labels`, `sysctls`, `driver_opts`, logging `options`: a list of `KEY=VALUE` (a bare `KEY`
    /// is an empty value) or a mapping of scalars.
    fn string_map(&mut self, value: &Value, path: &str) -> Option<IndexMap<String, String>> {
        let mut out = IndexMap::new();
        match value {
            Value::Sequence(items) => {
                for (i, item) in items.iter().enumerate() {
                    let item = self.string(item, &join_index(path, i))?;
                    let (key, value) = item.split_once('=').unwrap_or((&item, ""));
                    out.insert(key.to_string(), value.to_string());
                }
            }
            Value::Mapping(_) => {
                for (key, key_path, value) in self.entries(value, path)? {
                    let value = match value {
                        Value::Null => String::new(),
                        other => self.scalar(other, &key_path)?,
                    };
                    out.insert(key, value);
                }
            }
            other => {
                self.expected(path, "a list of KEY=VALUE or a mapping", other);
                return None;
            }
        }
        Some(out)
    }

    fn duration(&mut self, value: &Value, path: &str) -> Option<std::time::Duration> {
        let text = self.scalar(value, path)?;
        let parsed = units::parse_duration(&text);
        if parsed.is_none() {
            let shown = self.shown(path, &text);
            self.problem(path, format!("invalid duration {shown}: expected a number with a unit, such as 30s, 1m30s or 500ms"));
        }
        parsed
    }

    fn bytes(&mut self, value: &Value, path: &str) -> Option<u64> {
        let parsed = match value {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => units::parse_bytes(s),
            _ => None,
        };
        if parsed.is_none() {
            let shown = match value {
                Value::String(s) => self.shown(path, s),
                other => kind(other).to_string(),
            };
            self.problem(path, format!("invalid size {shown}: expected bytes, or a number with a unit b, k, m or g (such as 512m)"));
        }
        parsed
    }

    /// A host path of a bind mount or an env file: `~` is `$HOME`, a relative path is relative to
    /// the compose file's directory.
    /// A host path of the file: relative to its directory, `~` to `$HOME`. Without a `HOME` (a
    /// systemd unit has none), `~` is refused rather than read as a directory named `~`.
    fn host_path(&self, path: &str) -> Result<PathBuf, String> {
        let expanded = match (path.strip_prefix('~'), &self.home) {
            (Some(rest), Some(home)) if rest.is_empty() || rest.starts_with('/') => {
                PathBuf::from(format!("{home}{rest}"))
            }
            (Some(rest), None) if rest.is_empty() || rest.starts_with('/') => {
                return Err(format!(
                    "`~` has no meaning here: the agent has no HOME (systemd sets none for it); write the absolute path of {path}"
                ))
            }
            _ => PathBuf::from(path),
        };
        Ok(clean(&self.dir.join(expanded)))
    }
}

/// `path` with `.` and `..` resolved lexically, as compose (Go's `filepath.Clean`) does.
pub(super) fn clean(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
                if out.as_os_str().is_empty() {
                    out.push("/");
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// A mount target without `.`, `..` or a trailing `/`: docker reads it so, and compose prints it so.
fn container_path(target: &str) -> String {
    clean(Path::new(target)).display().to_string()
}

/// Parses the whole (interpolated) document.
pub(super) fn document(root: &Value, ctx: &mut Ctx) -> Parsed {
    let mut parsed = Parsed::default();
    if !matches!(root, Value::Mapping(_)) {
        let found = kind(root);
        ctx.problem(
            "",
            format!("the compose file has no `services`: expected a mapping, found {found}"),
        );
        return parsed;
    }
    let Some(entries) = ctx.entries(root, "") else {
        return parsed;
    };
    let mut services = None;
    for (key, path, value) in entries {
        match key.as_str() {
            "services" => services = Some((path, value)),
            "networks" if !value.is_null() => {
                if let Some(networks) = ctx.entries(value, &path) {
                    for (name, path, value) in networks {
                        if let Some(network) = network(&name, value, &path, ctx) {
                            parsed.networks.insert(name, network);
                        }
                    }
                }
            }
            "volumes" if !value.is_null() => {
                if let Some(volumes) = ctx.entries(value, &path) {
                    for (name, path, value) in volumes {
                        if let Some(volume) = volume(&name, value, &path, ctx) {
                            parsed.volumes.insert(name, volume);
                        }
                    }
                }
            }
            "secrets" if !value.is_null() => {
                if let Some(secrets) = ctx.entries(value, &path) {
                    for (name, path, value) in secrets {
                        if let Some(secret) = secret(&name, value, &path, ctx) {
                            parsed.secrets.insert(name, secret);
                        }
                    }
                }
            }
            "networks" | "volumes" | "secrets" => {}
            "version" => ctx.warn(
                &path,
                "`version` is obsolete and ignored (as docker compose v2 does)",
            ),
            "name" => {
                if let Some(name) = ctx.string(value, &path) {
                    if name != ctx.project {
                        let message = format!("the project is named {} by the agent's config, not by the compose file's `name`", ctx.project);
                        ctx.warn(&path, message);
                    }
                }
            }
            key if key.starts_with("x-") => {}
            key => ctx.unsupported(&path, key, "the compose file's top level"),
        }
    }
    match services {
        None => ctx.problem("", "the compose file has no `services`"),
        Some((path, value)) => {
            if let Some(entries) = ctx.entries(value, &path) {
                if entries.is_empty() {
                    ctx.problem(&path, "the compose file defines no service");
                }
                for (name, path, value) in entries {
                    if let Some(service) = service(&name, value, &path, ctx) {
                        parsed.services.insert(name, service);
                    }
                }
            }
        }
    }
    parsed
}

/// Service, network and volume names: what compose accepts.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

enum EnvEntry {
    Set(String, EnvOrigin),
    /// A bare `KEY`: its value comes from the variables, or it is left out.
    Inherit,
}

struct EnvFileRef {
    path: PathBuf,
    required: bool,
    /// `format: raw`: `KEY=VALUE` lines taken as they are (docker's `--env-file`), no quotes,
    /// no interpolation.
    raw: bool,
    key_path: String,
}

/// The service's `image`, which it must have (`told`: its other problems were reported already,
/// such as a `build` that stands where the image should be).
fn checked_image(
    image: Option<String>,
    name: &str,
    path: &str,
    told: bool,
    ctx: &mut Ctx,
) -> String {
    match image {
        Some(image) if !image.trim().is_empty() => return image,
        Some(_) => ctx.problem(
            &join_key(path, "image"),
            format!("service {name} has an empty `image`"),
        ),
        None if !told => ctx.problem(
            path,
            format!("service {name} has no `image`: kicky-agent runs prebuilt images (`build` is not supported)"),
        ),
        None => {}
    }
    String::new()
}

/// The `ports` list: each entry's ports, with the entry's path for later errors.
fn ports(value: &Value, path: &str, ctx: &mut Ctx, out: &mut Vec<Port>, paths: &mut Vec<String>) {
    for (i, item) in ctx.list(value, path).unwrap_or_default().iter().enumerate() {
        let item_path = join_index(path, i);
        for port in port(item, &item_path, ctx) {
            out.push(port);
            paths.push(item_path.clone());
        }
    }
}

/// The `volumes` list: each mount, with its entry's path for later errors.
fn volumes(
    value: &Value,
    path: &str,
    ctx: &mut Ctx,
    out: &mut Vec<Mount>,
    paths: &mut Vec<String>,
) {
    for (i, item) in ctx.list(value, path).unwrap_or_default().iter().enumerate() {
        let item_path = join_index(path, i);
        if let Some(mount) = mount(item, &item_path, ctx) {
            out.push(mount);
            paths.push(item_path);
        }
    }
}

fn service(name: &str, value: &Value, path: &str, ctx: &mut Ctx) -> Option<(Service, Paths)> {
    let owner = format!("service {name}");
    if !valid_name(name) {
        ctx.problem(
            path,
            format!("invalid service name `{name}`: use letters, digits, `_`, `.` and `-`"),
        );
    }
    let entries = match value {
        Value::Null => {
            ctx.problem(
                path,
                format!("service {name} is empty: it needs at least an `image`"),
            );
            return None;
        }
        value => ctx.entries(value, path)?,
    };
    let problems_before = ctx.problems.len();
    let mut s = Service {
        name: name.to_string(),
        ..Service::default()
    };
    let mut paths = Paths {
        service: path.to_string(),
        ..Paths::default()
    };
    let mut image = None;
    let mut env_files = Vec::new();
    let mut environment = Vec::new();
    for (key, key_path, value) in entries {
        if key.starts_with("x-") {
            continue;
        }
        // A key written without a value (`command:`) means the default, as in compose; an
        // unsupported one is refused all the same.
        if value.is_null() && SERVICE_KEYS.contains(&key.as_str()) {
            continue;
        }
        let p = key_path.as_str();
        match key.as_str() {
            "image" => image = ctx.string(value, p),
            "container_name" => {
                s.container_name = ctx.string(value, p);
                paths.container_name = Some(key_path.clone());
            }
            "command" => s.command = command(value, p, ctx),
            "entrypoint" => s.entrypoint = command(value, p, ctx),
            "environment" => environment = env_entries(value, p, ctx),
            "env_file" => env_files = env_file_refs(value, p, ctx),
            "ports" => ports(value, p, ctx, &mut s.ports, &mut paths.ports),
            "volumes" => volumes(value, p, ctx, &mut s.volumes, &mut paths.volumes),
            "networks" => service_networks(value, p, ctx, &mut s.networks, &mut paths.networks),
            "restart" => s.restart = restart(value, p, ctx),
            "healthcheck" => s.healthcheck = healthcheck(value, p, ctx),
            "depends_on" => depends_on(value, p, ctx, &mut s.depends_on, &mut paths),
            "labels" => s.labels = ctx.string_map(value, p).unwrap_or_default(),
            "user" => s.user = ctx.scalar(value, p),
            "working_dir" => s.working_dir = ctx.string(value, p),
            "hostname" => s.hostname = ctx.string(value, p),
            "extra_hosts" => s.extra_hosts = extra_hosts(value, p, ctx),
            "logging" => s.logging = logging(value, p, ctx),
            "ulimits" => s.ulimits = ulimits(value, p, ctx),
            "mem_limit" => s.mem_limit = ctx.bytes(value, p),
            "shm_size" => s.shm_size = ctx.bytes(value, p),
            "cpus" => s.cpus = cpus(value, p, ctx),
            "init" => s.init = ctx.boolean(value, p),
            "stop_signal" => s.stop_signal = ctx.string(value, p),
            "stop_grace_period" => s.stop_grace_period = ctx.duration(value, p),
            "tmpfs" => s.tmpfs = ctx.string_or_list(value, p).unwrap_or_default(),
            "cap_add" => s.cap_add = ctx.strings(value, p).unwrap_or_default(),
            "cap_drop" => s.cap_drop = ctx.strings(value, p).unwrap_or_default(),
            "read_only" => s.read_only = ctx.boolean(value, p),
            "sysctls" => s.sysctls = ctx.string_map(value, p).unwrap_or_default(),
            // An entry from an unset variable is dropped, as compose-go omits empty ones.
            "dns" => {
                let servers = ctx.string_or_list(value, p).unwrap_or_default();
                s.dns = servers.into_iter().filter(|d| !d.is_empty()).collect();
            }
            "pull_policy" => s.pull_policy = pull_policy(value, p, ctx),
            "profiles" => s.profiles = ctx.strings(value, p).unwrap_or_default(),
            "expose" => s.expose = expose(value, p, ctx),
            "platform" => s.platform = platform(value, p, ctx),
            "network_mode" => s.network_mode = network_mode(value, p, ctx),
            "deploy" => s.deploy = deploy(value, p, ctx),
            "links" => {
                for link in ctx.strings(value, p).unwrap_or_default() {
                    let (service, alias) = link.split_once(':').unwrap_or((&link, &link));
                    s.links.push((service.to_string(), alias.to_string()));
                }
            }
            "external_links" => s.external_links = ctx.strings(value, p).unwrap_or_default(),
            "secrets" => service_secrets(value, p, ctx, &mut s.secrets, &mut paths.secrets),
            key if flag(&mut s.flags, key, value, p, ctx) => {}
            other => ctx.unsupported(p, other, &owner),
        }
    }
    let told = ctx.problems.len() > problems_before;
    s.image = checked_image(image, name, path, told, ctx);
    // A linked service starts first, as compose orders it.
    for (other, _) in &s.links {
        s.depends_on.entry(other.clone()).or_insert(Dependency {
            condition: Condition::ServiceStarted,
            required: true,
            restart: false,
        });
        paths
            .depends_on
            .entry(other.clone())
            .or_insert_with(|| join_key(path, "links"));
    }
    match (&s.network_mode, s.networks.is_empty()) {
        (Some(_), false) => ctx.problem(
            &join_key(path, "network_mode"),
            format!(
                "service {name} sets both `network_mode` and `networks`: they exclude each other"
            ),
        ),
        (Some(mode), true) => {
            // It needs that service's container to exist first, as compose orders it.
            if let Some(other) = mode.strip_prefix("service:") {
                s.depends_on.entry(other.to_string()).or_insert(Dependency {
                    condition: Condition::ServiceStarted,
                    required: true,
                    restart: false,
                });
                paths
                    .depends_on
                    .entry(other.to_string())
                    .or_insert_with(|| join_key(path, "network_mode"));
            }
        }
        (None, true) => {
            s.networks
                .insert("default".to_string(), ServiceNetwork::default());
        }
        (None, false) => {}
    }
    paths.env_files = env_files
        .iter()
        .map(|f| (f.path.clone(), f.key_path.clone()))
        .collect();
    s.environment = resolve_environment(env_files, environment, ctx);
    (ctx.problems.len() == problems_before).then_some((s, paths))
}

/// A top-level secret: exactly one of `file` or `environment`. `external` (and `name`, which
/// only names an external one) are swarm's: refused.
fn secret(name: &str, value: &Value, path: &str, ctx: &mut Ctx) -> Option<SecretSource> {
    if !valid_name(name) {
        let message =
            format!("invalid secret name `{name}`: use letters, digits, `_`, `.` and `-`");
        ctx.problem(path, message);
        return None;
    }
    let mut found = Vec::new();
    for (key, p, value) in ctx.entries(value, path)? {
        match key.as_str() {
            "file" => {
                let file = ctx.string(value, &p)?;
                match ctx.host_path(&file) {
                    Ok(file) => found.push(SecretSource::File(file)),
                    Err(message) => ctx.problem(&p, message),
                }
            }
            "environment" => {
                let variable = ctx.string(value, &p)?;
                found.push(SecretSource::Environment(variable));
            }
            "external" | "name" => ctx.problem(
                &p,
                format!("secret {name}: `{key}` names a swarm secret, which exists only in swarm mode; give a `file` or an `environment` variable"),
            ),
            "labels" | "driver" | "driver_opts" | "template_driver" => ctx.problem(
                &p,
                format!("secret {name}: `{key}` applies to swarm secrets only"),
            ),
            other => ctx.unsupported(&p, other, &format!("secret {name}")),
        }
    }
    if found.len() != 1 {
        let message = format!("secret {name} needs exactly one of `file` or `environment`");
        ctx.problem(path, message);
        return None;
    }
    found.pop()
}

/// A service's `secrets`: names (short syntax) or `{source, target, uid, gid, mode}`.
fn service_secrets(
    value: &Value,
    path: &str,
    ctx: &mut Ctx,
    out: &mut Vec<ServiceSecret>,
    paths: &mut Vec<String>,
) {
    let Some(items) = ctx.list(value, path) else {
        return;
    };
    for (i, item) in items.iter().enumerate() {
        let p = join_index(path, i);
        let secret = match item {
            Value::String(source) => Some(ServiceSecret {
                source: source.clone(),
                target: source.clone(),
                ..ServiceSecret::default()
            }),
            Value::Mapping(_) => long_secret(item, &p, ctx),
            other => {
                ctx.expected(&p, "a secret's name or a mapping", other);
                None
            }
        };
        if let Some(mut secret) = secret {
            secret.target = if secret.target.starts_with('/') {
                container_path(&secret.target)
            } else {
                container_path(&format!("/run/secrets/{}", secret.target))
            };
            out.push(secret);
            paths.push(p);
        }
    }
}

fn long_secret(item: &Value, path: &str, ctx: &mut Ctx) -> Option<ServiceSecret> {
    let mut secret = ServiceSecret::default();
    let mut target = None;
    for (key, p, value) in ctx.entries(item, path)? {
        match key.as_str() {
            "source" => secret.source = ctx.string(value, &p)?,
            "target" => target = ctx.string(value, &p),
            "uid" => secret.uid = id_number(value, &p, ctx),
            "gid" => secret.gid = id_number(value, &p, ctx),
            "mode" => secret.mode = file_mode(value, &p, ctx),
            other => ctx.unsupported(&p, other, "a service's secret"),
        }
    }
    if secret.source.is_empty() {
        ctx.problem(path, "a secret needs its `source`");
        return None;
    }
    secret.target = target.unwrap_or_else(|| secret.source.clone());
    Some(secret)
}

/// A user or group id: a number, or a string of digits (`uid: "103"`, as compose writes it).
fn id_number(value: &Value, path: &str, ctx: &mut Ctx) -> Option<u32> {
    let text = ctx.scalar(value, path)?;
    let parsed = text.parse::<u32>().ok();
    if parsed.is_none() {
        ctx.problem(
            path,
            format!("expected a numeric id, found {}", ctx.shown(path, &text)),
        );
    }
    parsed
}

/// A file mode: a number as YAML reads it (`0o440`, or `288`), or octal digits (`0440`, which
/// YAML 1.2 leaves a string and compose reads as octal).
fn file_mode(value: &Value, path: &str, ctx: &mut Ctx) -> Option<u32> {
    let parsed = match value {
        Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        Value::String(s) => {
            let digits = s.strip_prefix("0o").unwrap_or(s);
            u32::from_str_radix(digits, 8).ok()
        }
        _ => None,
    }
    .filter(|mode| *mode <= 0o7777);
    if parsed.is_none() {
        ctx.expected(path, "a file mode such as 0440", value);
    }
    parsed
}

/// `command` and `entrypoint`: a list as it is, a string split into words with shell rules.
fn command(value: &Value, path: &str, ctx: &mut Ctx) -> Option<Vec<String>> {
    match value {
        Value::String(s) => match shell_words::split(s) {
            Ok(words) => Some(words),
            Err(_) => {
                let shown = ctx.shown(path, s);
                ctx.problem(
                    path,
                    format!("cannot split {shown} into words: a quote is not closed"),
                );
                None
            }
        },
        Value::Sequence(_) => ctx.strings(value, path),
        other => {
            ctx.expected(path, "a string or a list of strings", other);
            None
        }
    }
}

fn env_entries(value: &Value, path: &str, ctx: &mut Ctx) -> Vec<(String, EnvEntry)> {
    let origin = |ctx: &Ctx, p: &str| {
        if ctx.tainted.contains_key(p) {
            EnvOrigin::Interpolated
        } else {
            EnvOrigin::Literal
        }
    };
    let mut out = Vec::new();
    match value {
        Value::Sequence(items) => {
            for (i, item) in items.iter().enumerate() {
                let item_path = join_index(path, i);
                let Some(text) = ctx.string(item, &item_path) else {
                    continue;
                };
                let entry = match text.split_once('=') {
                    Some((key, value)) => (
                        key.to_string(),
                        EnvEntry::Set(value.to_string(), origin(ctx, &item_path)),
                    ),
                    None => (text, EnvEntry::Inherit),
                };
                if entry.0.is_empty() {
                    ctx.problem(&item_path, "a variable without a name");
                    continue;
                }
                out.push(entry);
            }
        }
        Value::Mapping(_) => {
            for (key, key_path, value) in ctx.entries(value, path).unwrap_or_default() {
                let entry = match value {
                    Value::Null => EnvEntry::Inherit,
                    Value::String(_) | Value::Number(_) | Value::Bool(_) => {
                        let Some(text) = ctx.scalar(value, &key_path) else {
                            continue;
                        };
                        EnvEntry::Set(text, origin(ctx, &key_path))
                    }
                    other => {
                        ctx.expected(&key_path, "a string, a number or null", other);
                        continue;
                    }
                };
                out.push((key, entry));
            }
        }
        other => ctx.expected(path, "a list of KEY=VALUE or a mapping", other),
    }
    out
}

fn env_file_refs(value: &Value, path: &str, ctx: &mut Ctx) -> Vec<EnvFileRef> {
    let mut out = Vec::new();
    let mut push =
        |ctx: &mut Ctx, file: &str, required: bool, raw: bool, key_path: String| match ctx
            .host_path(file)
        {
            Ok(path) => out.push(EnvFileRef {
                path,
                required,
                raw,
                key_path,
            }),
            Err(why) => ctx.problem(&key_path, why),
        };
    match value {
        Value::String(file) => push(ctx, file, true, false, path.to_string()),
        Value::Sequence(items) => {
            for (i, item) in items.iter().enumerate() {
                let item_path = join_index(path, i);
                match item {
                    Value::String(file) => push(ctx, file, true, false, item_path),
                    Value::Mapping(_) => {
                        let mut file = None;
                        let mut required = true;
                        let mut raw = false;
                        for (key, key_path, value) in
                            ctx.entries(item, &item_path).unwrap_or_default()
                        {
                            match key.as_str() {
                                "path" => file = ctx.string(value, &key_path),
                                "required" => {
                                    required = ctx.boolean(value, &key_path).unwrap_or(true)
                                }
                                "format" => match ctx.string(value, &key_path).as_deref() {
                                    Some("raw") => raw = true,
                                    Some("dotenv") | Some("") | None => {}
                                    Some(_) => ctx.problem(
                                        &key_path,
                                        "unsupported env_file format: use dotenv (the default) or raw",
                                    ),
                                },
                                other => ctx.unsupported(&key_path, other, "an env_file entry"),
                            }
                        }
                        match file {
                            Some(file) => push(ctx, &file, required, raw, item_path),
                            None => ctx.problem(&item_path, "an env_file entry needs a `path`"),
                        }
                    }
                    other => ctx.expected(&item_path, "a path or a mapping with `path`", other),
                }
            }
        }
        other => ctx.expected(path, "a path or a list of paths", other),
    }
    out
}

/// The service's environment: each env file in order, then `environment` over them (compose v2).
fn resolve_environment(
    files: Vec<EnvFileRef>,
    entries: Vec<(String, EnvEntry)>,
    ctx: &mut Ctx,
) -> IndexMap<String, EnvValue> {
    let lookup = ctx.lookup;
    let mut env: IndexMap<String, EnvValue> = IndexMap::new();
    for file in files {
        // Never through a link, never a FIFO: either counts as no file.
        let text = match (ctx.read)(&file.path) {
            Ok(Some(text)) => text,
            Ok(None) if !file.required => continue,
            Ok(None) => {
                let message = format!(
                    "env file {} does not exist or is not a regular file",
                    file.path.display()
                );
                ctx.problem(&file.key_path, message);
                continue;
            }
            Err(e) => {
                let message = format!("cannot read env file {}: {e:#}", file.path.display());
                ctx.problem(&file.key_path, message);
                continue;
            }
        };
        // compose-go resolves a file's references against the files before it, then the project's
        // variables.
        let parsed = {
            let known = |name: &str| {
                env.get(name)
                    .map(|v| v.value.expose().to_string())
                    .or_else(|| lookup(name))
            };
            match file.raw {
                true => crate::envfile::parse_raw(&text, &known),
                false => crate::envfile::parse(&text, &known),
            }
        };
        match parsed {
            Ok(vars) => {
                for (key, value) in vars {
                    let value = EnvValue {
                        value: Secret::fetched(value),
                        origin: EnvOrigin::EnvFile,
                    };
                    env.insert(key, value);
                }
            }
            Err(e) => {
                let message = format!("env file {}: {e}", file.path.display());
                ctx.problem(&file.key_path, message);
            }
        }
    }
    for (key, entry) in entries {
        match entry {
            EnvEntry::Set(value, origin) => {
                env.insert(
                    key,
                    EnvValue {
                        value: Secret::new(value),
                        origin,
                    },
                );
            }
            EnvEntry::Inherit => match lookup(&key) {
                Some(value) => {
                    let value = EnvValue {
                        value: Secret::new(value),
                        origin: EnvOrigin::Inherited,
                    };
                    env.insert(key, value);
                }
                // Unset: the container does not get it, whatever an env file said (compose v2).
                None => {
                    env.shift_remove(&key);
                }
            },
        }
    }
    env
}

fn protocol(text: &str) -> Option<Protocol> {
    match text.to_ascii_lowercase().as_str() {
        "tcp" => Some(Protocol::Tcp),
        "udp" => Some(Protocol::Udp),
        "sctp" => Some(Protocol::Sctp),
        _ => None,
    }
}

fn port_number(text: &str) -> Option<u16> {
    text.parse::<u16>().ok().filter(|p| *p > 0)
}

fn port_range(text: &str) -> Option<PortRange> {
    match text.split_once('-') {
        None => port_number(text).map(PortRange::single),
        Some((start, end)) => {
            let (start, end) = (port_number(start)?, port_number(end)?);
            (start <= end).then_some(PortRange { start, end })
        }
    }
}

/// The short syntax `[[HOST_IP:]HOST_PORT:]CONTAINER_PORT[/PROTOCOL]`, ports or ranges, expanded
/// into one [`Port`] per container port as compose (docker's `nat.ParsePortSpec`) does.
pub(super) fn port_spec(spec: &str) -> Result<Vec<Port>, &'static str> {
    const SYNTAX: &str = "expected [[HOST_IP:]HOST_PORT:]CONTAINER_PORT[/PROTOCOL], ports or ranges such as 8000-8010";
    let (rest, protocol) = match spec.rsplit_once('/') {
        Some((rest, p)) => (
            rest,
            protocol(p).ok_or("the protocol must be tcp, udp or sctp")?,
        ),
        None => (spec, Protocol::Tcp),
    };
    let (bracketed_ip, rest) = match rest.strip_prefix('[') {
        Some(after) => {
            let (ip, rest) = after.split_once("]:").ok_or(SYNTAX)?;
            (Some(ip), rest)
        }
        None => (None, rest),
    };
    let parts: Vec<&str> = rest.rsplitn(3, ':').collect();
    let (ip, host, container) = match (bracketed_ip, parts.as_slice()) {
        (None, [container]) => (None, None, *container),
        (None, [container, host]) => (None, Some(*host), *container),
        (None, [container, host, ip]) => (Some(*ip), Some(*host), *container),
        (Some(ip), [container, host]) => (Some(ip), Some(*host), *container),
        _ => return Err(SYNTAX),
    };
    let host_ip = ip.filter(|ip| !ip.is_empty()).map(str::to_string);
    let container = port_range(container).ok_or(SYNTAX)?;
    let host = match host.filter(|h| !h.is_empty()) {
        Some(h) => Some(port_range(h).ok_or(SYNTAX)?),
        None => None,
    };
    let port = |target: u16, published: Option<PortRange>| Port {
        host_ip: host_ip.clone(),
        published,
        target,
        protocol,
        mode: PortMode::Ingress,
    };
    let targets = container.start..=container.end;
    match host {
        None => Ok(targets.map(|t| port(t, None)).collect()),
        Some(host) if container.start == container.end => {
            Ok(vec![port(container.start, Some(host))])
        }
        Some(host) if host.end - host.start == container.end - container.start => Ok(targets
            .zip(host.start..=host.end)
            .map(|(t, h)| port(t, Some(PortRange::single(h))))
            .collect()),
        Some(_) => Err("a container port range needs a host port range of the same length"),
    }
}

fn port(item: &Value, path: &str, ctx: &mut Ctx) -> Vec<Port> {
    match item {
        Value::Number(n) => match n
            .as_u64()
            .and_then(|n| u16::try_from(n).ok())
            .filter(|n| *n > 0)
        {
            Some(target) => vec![Port {
                host_ip: None,
                published: None,
                target,
                protocol: Protocol::Tcp,
                mode: PortMode::Ingress,
            }],
            None => {
                ctx.problem(path, "a port must be between 1 and 65535");
                Vec::new()
            }
        },
        Value::String(spec) => match port_spec(spec.trim()) {
            Ok(ports) => ports,
            Err(why) => {
                let shown = ctx.shown(path, spec);
                ctx.problem(path, format!("invalid port {shown}: {why}"));
                Vec::new()
            }
        },
        Value::Mapping(_) => long_port(item, path, ctx).into_iter().collect(),
        other => {
            ctx.expected(path, "a port specification or a mapping", other);
            Vec::new()
        }
    }
}

fn long_port(item: &Value, path: &str, ctx: &mut Ctx) -> Option<Port> {
    let mut port = Port {
        host_ip: None,
        published: None,
        target: 0,
        protocol: Protocol::Tcp,
        mode: PortMode::Ingress,
    };
    let before = ctx.problems.len();
    for (key, key_path, value) in ctx.entries(item, path)? {
        let p = key_path.as_str();
        match key.as_str() {
            "target" => match ctx
                .integer(value, p)
                .map(|n| u16::try_from(n).ok().filter(|n| *n > 0))
            {
                Some(Some(n)) => port.target = n,
                Some(None) => ctx.problem(p, "the target port must be between 1 and 65535"),
                None => {}
            },
            "published" => {
                let text = match value {
                    Value::Number(n) => n.to_string(),
                    other => ctx.string(other, p).unwrap_or_default(),
                };
                match port_range(&text) {
                    Some(range) => port.published = Some(range),
                    None if text.is_empty() => {}
                    None => {
                        let shown = ctx.shown(p, &text);
                        ctx.problem(p, format!("invalid published port {shown}: expected a port or a range such as 8000-8010"));
                    }
                }
            }
            "host_ip" => port.host_ip = ctx.string(value, p).filter(|ip| !ip.is_empty()),
            "protocol" => match ctx.string(value, p).map(|s| protocol(&s)) {
                Some(Some(protocol)) => port.protocol = protocol,
                Some(None) => ctx.problem(p, "the protocol must be tcp, udp or sctp"),
                None => {}
            },
            "mode" => match ctx.string(value, p).as_deref() {
                Some("host") => port.mode = PortMode::Host,
                Some("ingress") => port.mode = PortMode::Ingress,
                Some(_) => ctx.problem(p, "the mode must be host or ingress"),
                None => {}
            },
            key if key.starts_with("x-") => {}
            other => ctx.unsupported(p, other, "a port"),
        }
    }
    if port.target == 0 && ctx.problems.len() == before {
        ctx.problem(path, "a port needs a `target`");
    }
    (ctx.problems.len() == before).then_some(port)
}

/// The short syntax `SOURCE:TARGET[:OPTIONS]` or `TARGET` (an anonymous volume).
pub(super) fn volume_spec(spec: &str, ctx: &Ctx) -> Result<Mount, String> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (source, target, options) = match parts.as_slice() {
        [target] => (None, *target, ""),
        [source, target] => (Some(*source), *target, ""),
        [source, target, options] => (Some(*source), *target, *options),
        _ => return Err("expected SOURCE:TARGET[:OPTIONS] or TARGET".into()),
    };
    if !target.starts_with('/') {
        return Err("the target must be an absolute path in the container".into());
    }
    let mut mount = Mount {
        kind: MountKind::Volume,
        source: None,
        target: container_path(target),
        read_only: false,
        create_host_path: false,
        propagation: None,
        nocopy: false,
        tmpfs_size: None,
        selinux: None,
    };
    match source {
        None => {}
        Some("") => return Err("the source is empty".into()),
        Some(source) if source.starts_with(['/', '.', '~']) => {
            mount.kind = MountKind::Bind;
            mount.source = Some(ctx.host_path(source)?.display().to_string());
            // The short syntax has always created a missing host directory (docker's `-v`).
            mount.create_host_path = true;
        }
        Some(source) if valid_name(source) => mount.source = Some(source.to_string()),
        Some(_) => {
            return Err("a named volume's name takes letters, digits, `_`, `.` and `-` (a host path starts with /, . or ~)".into())
        }
    }
    for option in options.split(',').filter(|o| !o.is_empty()) {
        match option {
            "ro" => mount.read_only = true,
            "rw" => mount.read_only = false,
            "nocopy" if mount.kind == MountKind::Volume => mount.nocopy = true,
            "z" | "Z" if mount.kind == MountKind::Bind => mount.selinux = Some(option.to_string()),
            "z" | "Z" => return Err("SELinux relabelling (:z, :Z) applies to a host path".into()),
            propagation @ ("shared" | "rshared" | "slave" | "rslave" | "private" | "rprivate")
                if mount.kind == MountKind::Bind =>
            {
                mount.propagation = Some(propagation.to_string())
            }
            _ => {
                return Err("unknown option: expected ro or rw, nocopy for a volume, or a bind propagation (rslave...)".into())
            }
        }
    }
    Ok(mount)
}

fn mount(item: &Value, path: &str, ctx: &mut Ctx) -> Option<Mount> {
    match item {
        Value::String(spec) => match volume_spec(spec, ctx) {
            Ok(mount) => Some(mount),
            Err(why) => {
                let shown = ctx.shown(path, spec);
                ctx.problem(path, format!("invalid volume {shown}: {why}"));
                None
            }
        },
        Value::Mapping(_) => long_mount(item, path, ctx),
        other => {
            ctx.expected(path, "a volume specification or a mapping", other);
            None
        }
    }
}

fn long_mount(item: &Value, path: &str, ctx: &mut Ctx) -> Option<Mount> {
    let before = ctx.problems.len();
    let mut kind = None;
    let mut source = None;
    let mut target = None;
    let mut mount = Mount {
        kind: MountKind::Volume,
        source: None,
        target: String::new(),
        read_only: false,
        create_host_path: false,
        propagation: None,
        nocopy: false,
        tmpfs_size: None,
        selinux: None,
    };
    let mut options = Vec::new();
    for (key, key_path, value) in ctx.entries(item, path)? {
        let p = key_path.as_str();
        match key.as_str() {
            "type" => match ctx.string(value, p).as_deref() {
                Some("bind") => kind = Some(MountKind::Bind),
                Some("volume") => kind = Some(MountKind::Volume),
                Some("tmpfs") => kind = Some(MountKind::Tmpfs),
                Some(other) => {
                    let message = format!(
                        "volume type `{other}` is not supported: use bind, volume or tmpfs"
                    );
                    ctx.problem(p, message)
                }
                None => {}
            },
            "source" => source = ctx.string(value, p),
            "target" => target = ctx.string(value, p),
            "read_only" => mount.read_only = ctx.boolean(value, p).unwrap_or(false),
            "bind" | "volume" | "tmpfs" if !value.is_null() => {
                options.push((key.clone(), key_path.clone(), value))
            }
            "bind" | "volume" | "tmpfs" => {}
            key if key.starts_with("x-") => {}
            other => ctx.unsupported(p, other, "a volume"),
        }
    }
    let Some(kind) = kind else {
        if ctx.problems.len() == before {
            ctx.problem(
                path,
                "a volume in the long syntax needs a `type` (bind, volume or tmpfs)",
            );
        }
        return None;
    };
    mount.kind = kind;
    // A missing host path is created unless `bind.create_host_path: false` (compose's default).
    mount.create_host_path = kind == MountKind::Bind;
    mount_options(&mut mount, options, ctx);
    match target {
        Some(target) if target.starts_with('/') => mount.target = container_path(&target),
        Some(_) => ctx.problem(
            &join_key(path, "target"),
            "the target must be an absolute path in the container",
        ),
        None => ctx.problem(path, "a volume needs a `target`"),
    }
    mount.source = mount_source(kind, source, path, ctx);
    (ctx.problems.len() == before).then_some(mount)
}

/// The `bind:`, `volume:` or `tmpfs:` options of a long-syntax mount (only its own kind's apply).
fn mount_options(mount: &mut Mount, options: Vec<(String, String, &Value)>, ctx: &mut Ctx) {
    let kind = mount.kind;
    for (section, section_path, value) in options {
        if section != kind.as_str() {
            let message = format!(
                "`{section}` options do not apply to a {} mount",
                kind.as_str()
            );
            ctx.problem(&section_path, message);
            continue;
        }
        for (key, key_path, value) in ctx.entries(value, &section_path).unwrap_or_default() {
            let p = key_path.as_str();
            match (kind, key.as_str()) {
                (MountKind::Bind, "create_host_path") => {
                    mount.create_host_path = ctx.boolean(value, p).unwrap_or(false)
                }
                (MountKind::Bind, "selinux") => match ctx.string(value, p).as_deref() {
                    Some(label @ ("z" | "Z")) => mount.selinux = Some(label.to_string()),
                    Some(_) => ctx.problem(p, "selinux must be z or Z"),
                    None => {}
                },
                (MountKind::Bind, "propagation") => match ctx.string(value, p).as_deref() {
                    Some(
                        mode @ ("shared" | "rshared" | "slave" | "rslave" | "private" | "rprivate"),
                    ) => mount.propagation = Some(mode.to_string()),
                    Some(_) => ctx.problem(
                        p,
                        "propagation must be shared, rshared, slave, rslave, private or rprivate",
                    ),
                    None => {}
                },
                (MountKind::Volume, "nocopy") => {
                    mount.nocopy = ctx.boolean(value, p).unwrap_or(false)
                }
                (MountKind::Tmpfs, "size") => mount.tmpfs_size = ctx.bytes(value, p),
                (_, other) => {
                    ctx.unsupported(p, other, &format!("the {section} options of a volume"))
                }
            }
        }
    }
}

/// A long-syntax mount's `source`, checked for its kind.
fn mount_source(
    kind: MountKind,
    source: Option<String>,
    path: &str,
    ctx: &mut Ctx,
) -> Option<String> {
    match (kind, source) {
        (MountKind::Bind, Some(source)) if !source.is_empty() => match ctx.host_path(&source) {
            Ok(path) => return Some(path.display().to_string()),
            Err(why) => ctx.problem(&join_key(path, "source"), why),
        },
        (MountKind::Bind, _) => ctx.problem(path, "a bind mount needs a `source`"),
        (MountKind::Volume, Some(source)) if source.is_empty() => {}
        (MountKind::Volume, Some(source)) if valid_name(&source) => return Some(source),
        (MountKind::Volume, Some(_)) => ctx.problem(
            &join_key(path, "source"),
            "a volume's name takes letters, digits, `_`, `.` and `-`",
        ),
        (MountKind::Volume, None) => {}
        (MountKind::Tmpfs, Some(_)) => {
            ctx.problem(&join_key(path, "source"), "a tmpfs mount has no `source`")
        }
        (MountKind::Tmpfs, None) => {}
    }
    None
}

fn service_networks(
    value: &Value,
    path: &str,
    ctx: &mut Ctx,
    out: &mut IndexMap<String, ServiceNetwork>,
    paths: &mut IndexMap<String, String>,
) {
    match value {
        Value::Sequence(items) => {
            for (i, item) in items.iter().enumerate() {
                let item_path = join_index(path, i);
                if let Some(name) = ctx.string(item, &item_path) {
                    out.insert(name.clone(), ServiceNetwork::default());
                    paths.insert(name, item_path);
                }
            }
        }
        Value::Mapping(_) => {
            for (name, key_path, value) in ctx.entries(value, path).unwrap_or_default() {
                let mut network = ServiceNetwork::default();
                if !value.is_null() {
                    for (key, p, value) in ctx.entries(value, &key_path).unwrap_or_default() {
                        match key.as_str() {
                            "aliases" => {
                                network.aliases = ctx.strings(value, &p).unwrap_or_default()
                            }
                            "ipv4_address" => network.ipv4_address = ctx.string(value, &p),
                            "ipv6_address" => network.ipv6_address = ctx.string(value, &p),
                            key if key.starts_with("x-") => {}
                            other => {
                                ctx.unsupported(&p, other, &format!("network {name} of a service"))
                            }
                        }
                    }
                }
                out.insert(name.clone(), network);
                paths.insert(name, key_path);
            }
        }
        other => ctx.expected(path, "a list of network names or a mapping", other),
    }
}

fn restart(value: &Value, path: &str, ctx: &mut Ctx) -> Option<Restart> {
    let text = ctx.string(value, path)?;
    let policy = match text.as_str() {
        "no" => Some(Restart::No),
        "always" => Some(Restart::Always),
        "unless-stopped" => Some(Restart::UnlessStopped),
        "on-failure" => Some(Restart::OnFailure { max_retries: None }),
        other => other
            .strip_prefix("on-failure:")
            .and_then(|n| n.parse().ok())
            .map(|n| Restart::OnFailure {
                max_retries: Some(n),
            }),
    };
    if policy.is_none() {
        let shown = ctx.shown(path, &text);
        ctx.problem(path, format!("invalid restart policy {shown}: expected \"no\", always, on-failure[:N] or unless-stopped"));
    }
    policy
}

fn healthcheck(value: &Value, path: &str, ctx: &mut Ctx) -> Option<Healthcheck> {
    let mut check = Healthcheck::default();
    let mut disabled = false;
    for (key, key_path, value) in ctx.entries(value, path)? {
        let p = key_path.as_str();
        if value.is_null() && HEALTHCHECK_KEYS.contains(&key.as_str()) {
            continue;
        }
        match key.as_str() {
            "test" => match value {
                Value::String(command) => {
                    check.test = vec!["CMD-SHELL".to_string(), command.clone()]
                }
                Value::Sequence(_) => {
                    let test = ctx.strings(value, p).unwrap_or_default();
                    match test.first().map(String::as_str) {
                        Some("CMD" | "CMD-SHELL" | "NONE") => check.test = test,
                        _ => ctx.problem(p, "a test list starts with CMD, CMD-SHELL or NONE"),
                    }
                }
                other => ctx.expected(p, "a command string or a list", other),
            },
            "interval" => check.interval = ctx.duration(value, p),
            "timeout" => check.timeout = ctx.duration(value, p),
            "start_period" => check.start_period = ctx.duration(value, p),
            "start_interval" => check.start_interval = ctx.duration(value, p),
            "retries" => match ctx.integer(value, p).map(u64::try_from) {
                Some(Ok(n)) => check.retries = Some(n),
                Some(Err(_)) => ctx.problem(p, "retries must be 0 or more"),
                None => {}
            },
            "disable" => disabled = ctx.boolean(value, p).unwrap_or(false),
            key if key.starts_with("x-") => {}
            other => ctx.unsupported(p, other, "a healthcheck"),
        }
    }
    if disabled {
        return Some(Healthcheck {
            test: vec!["NONE".to_string()],
            ..Healthcheck::default()
        });
    }
    Some(check)
}

fn condition(text: &str) -> Option<Condition> {
    match text {
        "service_started" => Some(Condition::ServiceStarted),
        "service_healthy" => Some(Condition::ServiceHealthy),
        "service_completed_successfully" => Some(Condition::ServiceCompletedSuccessfully),
        _ => None,
    }
}

fn depends_on(
    value: &Value,
    path: &str,
    ctx: &mut Ctx,
    out: &mut IndexMap<String, Dependency>,
    paths: &mut Paths,
) {
    let started = Dependency {
        condition: Condition::ServiceStarted,
        restart: false,
        required: true,
    };
    match value {
        Value::Sequence(items) => {
            for (i, item) in items.iter().enumerate() {
                let item_path = join_index(path, i);
                if let Some(name) = ctx.string(item, &item_path) {
                    out.insert(name.clone(), started);
                    paths.depends_on.insert(name, item_path);
                }
            }
        }
        Value::Mapping(_) => {
            for (name, key_path, value) in ctx.entries(value, path).unwrap_or_default() {
                let mut dependency = started;
                if !value.is_null() {
                    for (key, p, value) in ctx.entries(value, &key_path).unwrap_or_default() {
                        match key.as_str() {
                            "condition" => match ctx.string(value, &p).as_deref().map(condition) {
                                Some(Some(c)) => dependency.condition = c,
                                Some(None) => ctx.problem(
                                    &p,
                                    "the condition must be service_started, service_healthy or service_completed_successfully",
                                ),
                                None => {}
                            },
                            "restart" => dependency.restart = ctx.boolean(value, &p).unwrap_or(false),
                            "required" => dependency.required = ctx.boolean(value, &p).unwrap_or(true),
                            key if key.starts_with("x-") => {}
                            other => ctx.unsupported(&p, other, &format!("the dependency on {name}")),
                        }
                    }
                }
                out.insert(name.clone(), dependency);
                paths.depends_on.insert(name, key_path);
            }
        }
        other => ctx.expected(path, "a list of service names or a mapping", other),
    }
}

/// `extra_hosts` as compose-go reads it: a list of `HOST=IP` or `HOST:IP` (the first `=`, else
/// the first `:`; several addresses separated by commas), or a mapping of a host to an address or
/// a list of them. Brackets around an IPv6 address are dropped (the engine takes `host:::1`).
fn extra_hosts(value: &Value, path: &str, ctx: &mut Ctx) -> Vec<ExtraHost> {
    let mut pairs: Vec<(String, String, String)> = Vec::new();
    match value {
        Value::Sequence(items) => {
            for (i, item) in items.iter().enumerate() {
                let item_path = join_index(path, i);
                let Some(text) = ctx.string(item, &item_path) else {
                    continue;
                };
                match text.split_once('=').or_else(|| text.split_once(':')) {
                    Some((host, ips)) if !ips.is_empty() => {
                        for ip in ips.split(',') {
                            pairs.push((host.to_string(), ip.to_string(), item_path.clone()));
                        }
                    }
                    _ => {
                        let shown = ctx.shown(&item_path, &text);
                        let message =
                            format!("invalid extra host {shown}: expected HOST=IP or HOST:IP");
                        ctx.problem(&item_path, message);
                    }
                }
            }
        }
        Value::Mapping(_) => {
            for (host, key_path, value) in ctx.entries(value, path).unwrap_or_default() {
                let ips = match value {
                    Value::Sequence(_) => ctx.strings(value, &key_path).unwrap_or_default(),
                    other => ctx.string(other, &key_path).into_iter().collect(),
                };
                for ip in ips {
                    pairs.push((host.clone(), ip, key_path.clone()));
                }
            }
        }
        other => ctx.expected(path, "a list of HOST=IP or a mapping", other),
    }
    let mut out = Vec::new();
    for (host, ip, item_path) in pairs {
        if host.is_empty() || host.contains([':', '=']) {
            let shown = ctx.shown(&item_path, &host);
            ctx.problem(&item_path, format!("bad host name {shown} in extra_hosts"));
            continue;
        }
        let ip = ip.trim();
        let ip = ip
            .strip_prefix('[')
            .and_then(|i| i.strip_suffix(']'))
            .unwrap_or(ip);
        if ip.is_empty() {
            ctx.problem(&item_path, format!("extra host {host} has no address"));
            continue;
        }
        out.push(ExtraHost {
            host,
            ip: ip.to_string(),
        });
    }
    out
}

fn logging(value: &Value, path: &str, ctx: &mut Ctx) -> Option<Logging> {
    let mut logging = Logging::default();
    for (key, p, value) in ctx.entries(value, path)? {
        if value.is_null() && ["driver", "options"].contains(&key.as_str()) {
            continue;
        }
        match key.as_str() {
            "driver" => logging.driver = ctx.string(value, &p),
            "options" => logging.options = ctx.string_map(value, &p).unwrap_or_default(),
            key if key.starts_with("x-") => {}
            other => ctx.unsupported(&p, other, "logging"),
        }
    }
    Some(logging)
}

fn ulimits(value: &Value, path: &str, ctx: &mut Ctx) -> IndexMap<String, Ulimit> {
    let mut out = IndexMap::new();
    for (name, p, value) in ctx.entries(value, path).unwrap_or_default() {
        match value {
            Value::Mapping(_) => {
                let (mut soft, mut hard) = (None, None);
                for (key, kp, value) in ctx.entries(value, &p).unwrap_or_default() {
                    match key.as_str() {
                        "soft" => soft = ctx.integer(value, &kp),
                        "hard" => hard = ctx.integer(value, &kp),
                        other => ctx.unsupported(&kp, other, &format!("ulimit {name}")),
                    }
                }
                match (soft, hard) {
                    (Some(soft), Some(hard)) => {
                        out.insert(name, Ulimit { soft, hard });
                    }
                    _ => ctx.problem(&p, "a ulimit mapping needs both `soft` and `hard`"),
                }
            }
            other => {
                if let Some(n) = ctx.integer(other, &p) {
                    out.insert(name, Ulimit { soft: n, hard: n });
                }
            }
        }
    }
    out
}

/// A container flag of [`Flags`] (false when `key` is none of them).
fn flag(f: &mut Flags, key: &str, value: &Value, p: &str, ctx: &mut Ctx) -> bool {
    match key {
        "stdin_open" => f.stdin_open = ctx.boolean(value, p),
        "tty" => f.tty = ctx.boolean(value, p),
        "privileged" => f.privileged = ctx.boolean(value, p),
        "oom_kill_disable" => f.oom_kill_disable = ctx.boolean(value, p),
        "domainname" => f.domainname = ctx.string(value, p),
        "ipc" => f.ipc = ctx.string(value, p),
        "pid" => f.pid = ctx.string(value, p),
        "userns_mode" => f.userns_mode = ctx.string(value, p),
        "cgroup_parent" => f.cgroup_parent = ctx.string(value, p),
        "runtime" => f.runtime = ctx.string(value, p),
        "cpuset" => f.cpuset = ctx.scalar(value, p),
        "group_add" => f.group_add = ctx.scalars(value, p).unwrap_or_default(),
        "security_opt" => f.security_opt = ctx.strings(value, p).unwrap_or_default(),
        "dns_search" => f.dns_search = non_blank(ctx.string_or_list(value, p)),
        "dns_opt" => f.dns_opt = non_blank(ctx.strings(value, p)),
        "cpu_shares" => f.cpu_shares = ctx.integer(value, p),
        "cpu_quota" => f.cpu_quota = ctx.integer(value, p),
        "cpu_period" => f.cpu_period = ctx.integer(value, p),
        "pids_limit" => f.pids_limit = ctx.integer(value, p),
        "oom_score_adj" => f.oom_score_adj = ctx.integer(value, p),
        "mem_reservation" => f.mem_reservation = ctx.bytes(value, p),
        "memswap_limit" => f.memswap_limit = swap_limit(value, p, ctx),
        _ => return false,
    }
    true
}

/// The entries of a list, without those an unset variable left empty.
fn non_blank(items: Option<Vec<String>>) -> Vec<String> {
    items
        .unwrap_or_default()
        .into_iter()
        .filter(|i| !i.is_empty())
        .collect()
}

/// `memswap_limit`: bytes, or -1 for unlimited swap.
fn swap_limit(value: &Value, path: &str, ctx: &mut Ctx) -> Option<i64> {
    match value {
        Value::Number(n) if n.as_i64() == Some(-1) => Some(-1),
        Value::String(s) if s.trim() == "-1" => Some(-1),
        _ => ctx.bytes(value, path).map(|b| b as i64),
    }
}

/// `expose`: ports (`80`), with a protocol (`80/udp`), or ranges (`8000-8010`), each one key of
/// the engine's `ExposedPorts`.
fn expose(value: &Value, path: &str, ctx: &mut Ctx) -> Vec<String> {
    let mut out = Vec::new();
    for (i, item) in ctx
        .scalars(value, path)
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        let item_path = join_index(path, i);
        let (ports, protocol) = item.split_once('/').unwrap_or((&item, "tcp"));
        let range = match ports.split_once('-') {
            Some((a, b)) => a.parse::<u16>().ok().zip(b.parse::<u16>().ok()),
            None => ports.parse::<u16>().ok().map(|p| (p, p)),
        };
        match (range, protocol) {
            (Some((start, end)), "tcp" | "udp" | "sctp") if start > 0 && start <= end => {
                out.extend((start..=end).map(|port| format!("{port}/{protocol}")));
            }
            _ => {
                let shown = ctx.shown(&item_path, &item);
                ctx.problem(
                    &item_path,
                    format!("invalid port {shown} to expose: expected PORT[/PROTOCOL] or a range START-END"),
                );
            }
        }
    }
    out
}

/// `platform`: `os/arch[/variant]`, such as `linux/arm64`.
fn platform(value: &Value, path: &str, ctx: &mut Ctx) -> Option<String> {
    let text = ctx.string(value, path)?;
    let parts: Vec<&str> = text.split('/').collect();
    let valid = (2..=3).contains(&parts.len())
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
    if !valid {
        let shown = ctx.shown(path, &text);
        ctx.problem(
            path,
            format!("invalid platform {shown}: expected OS/ARCH[/VARIANT], such as linux/arm64"),
        );
        return None;
    }
    Some(text)
}

/// A network's `ipam`: its driver, address pools and options.
fn ipam(value: &Value, path: &str, ctx: &mut Ctx) -> Option<Ipam> {
    let mut ipam = Ipam::default();
    for (key, p, value) in ctx.entries(value, path)? {
        match key.as_str() {
            _ if value.is_null() => {}
            "driver" => ipam.driver = ctx.string(value, &p),
            "options" => ipam.options = ctx.string_map(value, &p).unwrap_or_default(),
            "config" => {
                for (i, item) in ctx.list(value, &p).unwrap_or_default().iter().enumerate() {
                    let item_path = join_index(&p, i);
                    let mut pool = IpamPool::default();
                    for (k, kp, v) in ctx.entries(item, &item_path).unwrap_or_default() {
                        match k.as_str() {
                            "subnet" => pool.subnet = ctx.string(v, &kp),
                            "ip_range" => pool.ip_range = ctx.string(v, &kp),
                            "gateway" => pool.gateway = ctx.string(v, &kp),
                            "aux_addresses" => {
                                pool.aux_addresses = ctx.string_map(v, &kp).unwrap_or_default()
                            }
                            other => ctx.unsupported(&kp, other, "an ipam pool"),
                        }
                    }
                    ipam.config.push(pool);
                }
            }
            other => ctx.unsupported(&p, other, "ipam"),
        }
    }
    Some(ipam)
}

/// `network_mode`: `host`, `none`, `bridge`, `container:<name>` or `service:<name>`.
fn network_mode(value: &Value, path: &str, ctx: &mut Ctx) -> Option<String> {
    let mode = ctx.string(value, path)?;
    let valid = match mode.split_once(':') {
        Some(("service" | "container", name)) => !name.is_empty(),
        Some(_) => false,
        None => matches!(mode.as_str(), "host" | "none" | "bridge"),
    };
    if !valid {
        let shown = ctx.shown(path, &mode);
        let message = format!("invalid network_mode {shown}: expected host, none, bridge, service:NAME or container:NAME");
        ctx.problem(path, message);
        return None;
    }
    Some(mode)
}

/// `deploy`: what docker compose v2 applies outside swarm (`resources`, `restart_policy`); the
/// swarm-only keys are ignored with a warning, as compose ignores them.
fn deploy(value: &Value, path: &str, ctx: &mut Ctx) -> Option<Deploy> {
    let mut deploy = Deploy::default();
    for (key, p, value) in ctx.entries(value, path)? {
        match key.as_str() {
            _ if value.is_null() => {}
            "replicas" => match ctx.integer(value, &p) {
                Some(1) => deploy.replicas = Some(1),
                Some(_) => ctx.problem(
                    &p,
                    "kicky-agent runs one container per service: replicas must be 1 (scale with the Auto Scaling group)",
                ),
                None => {}
            },
            "mode" => match ctx.string(value, &p).as_deref() {
                Some("replicated") | None => {}
                // Outside swarm, "one on every node" is one here, as docker compose runs it.
                Some("global") => ctx.warn(&p, "deploy.mode global: one container on this instance"),
                Some(_) => ctx.problem(&p, "deploy.mode must be replicated or global"),
            },
            "resources" => {
                for (kind, kp, value) in ctx.entries(value, &p).unwrap_or_default() {
                    match kind.as_str() {
                        _ if value.is_null() => {}
                        "limits" => deploy.limits = resources(value, &kp, false, ctx),
                        "reservations" => deploy.reservations = resources(value, &kp, true, ctx),
                        other => ctx.unsupported(&kp, other, "deploy.resources"),
                    }
                }
            }
            "restart_policy" => deploy.restart_policy = deploy_restart(value, &p, ctx),
            "labels" | "placement" | "update_config" | "rollback_config" | "endpoint_mode" => {
                ctx.warn(&p, format!("deploy.{key} applies to swarm only: ignored, as docker compose ignores it"))
            }
            key if key.starts_with("x-") => {}
            other => ctx.unsupported(&p, other, "deploy"),
        }
    }
    Some(deploy)
}

fn resources(value: &Value, path: &str, reservation: bool, ctx: &mut Ctx) -> Resources {
    let mut out = Resources::default();
    for (key, p, value) in ctx.entries(value, path).unwrap_or_default() {
        match key.as_str() {
            _ if value.is_null() => {}
            "cpus" => out.cpus = cpus(value, &p, ctx),
            "memory" => out.memory = ctx.bytes(value, &p),
            "pids" if !reservation => out.pids = ctx.integer(value, &p),
            "devices" if reservation => {
                for (i, item) in ctx.list(value, &p).unwrap_or_default().iter().enumerate() {
                    if let Some(device) = device_request(item, &join_index(&p, i), ctx) {
                        out.devices.push(device);
                    }
                }
            }
            other => ctx.unsupported(&p, other, path),
        }
    }
    out
}

fn device_request(value: &Value, path: &str, ctx: &mut Ctx) -> Option<DeviceRequest> {
    let mut device = DeviceRequest::default();
    for (key, p, value) in ctx.entries(value, path)? {
        match key.as_str() {
            "capabilities" => device.capabilities = ctx.strings(value, &p).unwrap_or_default(),
            "driver" => device.driver = ctx.string(value, &p),
            "count" => match value {
                Value::String(all) if all == "all" => device.count = None,
                _ => device.count = ctx.integer(value, &p),
            },
            "device_ids" => device.device_ids = ctx.strings(value, &p).unwrap_or_default(),
            "options" => device.options = ctx.string_map(value, &p).unwrap_or_default(),
            other => ctx.unsupported(&p, other, "a device"),
        }
    }
    if device.capabilities.is_empty() {
        ctx.problem(path, "a device needs its `capabilities`, such as [gpu]");
        return None;
    }
    if device.device_ids.is_empty() && device.count.is_none() {
        device.count = Some(-1);
    }
    Some(device)
}

fn deploy_restart(value: &Value, path: &str, ctx: &mut Ctx) -> Option<DeployRestart> {
    let mut policy = DeployRestart::default();
    for (key, p, value) in ctx.entries(value, path)? {
        match key.as_str() {
            _ if value.is_null() => {}
            "condition" => match ctx.string(value, &p) {
                Some(c) if ["none", "on-failure", "any"].contains(&c.as_str()) => {
                    policy.condition = Some(c)
                }
                Some(_) => ctx.problem(&p, "condition must be none, on-failure or any"),
                None => {}
            },
            "max_attempts" => match ctx.integer(value, &p).map(u32::try_from) {
                Some(Ok(n)) => policy.max_attempts = Some(n),
                Some(Err(_)) => ctx.problem(&p, "max_attempts must be 0 or more"),
                None => {}
            },
            "delay" | "window" => ctx.warn(
                &p,
                format!("deploy.restart_policy.{key} applies to swarm only: ignored, as docker compose ignores it"),
            ),
            other => ctx.unsupported(&p, other, "deploy.restart_policy"),
        }
    }
    Some(policy)
}

fn cpus(value: &Value, path: &str, ctx: &mut Ctx) -> Option<f64> {
    let parsed = match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    match parsed {
        Some(n) if n.is_finite() && n >= 0.0 => Some(n),
        _ => {
            ctx.problem(path, "cpus must be a number of CPUs, such as 0.5 or 2");
            None
        }
    }
}

fn pull_policy(value: &Value, path: &str, ctx: &mut Ctx) -> Option<PullPolicy> {
    match ctx.string(value, path)?.as_str() {
        "always" => Some(PullPolicy::Always),
        "never" => Some(PullPolicy::Never),
        // `refresh` with no period is `missing`, as docker compose reads it.
        "missing" | "if_not_present" | "refresh" => Some(PullPolicy::Missing),
        "daily" => Some(PullPolicy::Refresh(Duration::from_secs(24 * 3600))),
        "weekly" => Some(PullPolicy::Refresh(Duration::from_secs(7 * 24 * 3600))),
        every if every.starts_with("every_") => match refresh_period(&every["every_".len()..]) {
            Some(period) => Some(PullPolicy::Refresh(period)),
            None => {
                ctx.problem(
                    path,
                    "every_<duration> takes a duration such as 12h, 2d or 1w",
                );
                None
            }
        },
        "build" => {
            ctx.problem(
                path,
                "pull_policy `build` is not supported: kicky-agent runs prebuilt images",
            );
            None
        }
        _ => {
            ctx.problem(
                path,
                "pull_policy must be always, never, missing, daily, weekly or every_<duration>",
            );
            None
        }
    }
}

/// A period such as `12h`, `2d`, `1w` or `1h30m` (compose's units: w, d, h, m, s); never zero.
fn refresh_period(text: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let n: u64 = std::mem::take(&mut number).parse().ok()?;
        let unit = match c {
            'w' => 7 * 24 * 3600,
            'd' => 24 * 3600,
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return None,
        };
        total += Duration::from_secs(n.checked_mul(unit)?);
    }
    (number.is_empty() && !total.is_zero()).then_some(total)
}

/// `external: true`, or the legacy `external: {name: N}`; the name it gives, if any.
fn external(value: &Value, path: &str, ctx: &mut Ctx) -> (bool, Option<String>) {
    match value {
        Value::Mapping(_) => {
            let mut name = None;
            for (key, p, value) in ctx.entries(value, path).unwrap_or_default() {
                match key.as_str() {
                    "name" => name = ctx.string(value, &p),
                    other => ctx.unsupported(&p, other, "`external`"),
                }
            }
            (true, name)
        }
        other => (ctx.boolean(other, path).unwrap_or(false), None),
    }
}

fn network(key: &str, value: &Value, path: &str, ctx: &mut Ctx) -> Option<Network> {
    if !valid_name(key) {
        ctx.problem(
            path,
            format!("invalid network name `{key}`: use letters, digits, `_`, `.` and `-`"),
        );
    }
    let mut network = Network::default();
    let mut name = None;
    let mut external_name = None;
    if !value.is_null() {
        let owner = format!("network {key}");
        for (k, p, value) in ctx.entries(value, path)? {
            if value.is_null() && NETWORK_KEYS.contains(&k.as_str()) {
                continue;
            }
            match k.as_str() {
                "driver" => network.driver = ctx.string(value, &p),
                "driver_opts" => {
                    network.driver_opts = ctx.string_map(value, &p).unwrap_or_default()
                }
                "labels" => network.labels = ctx.string_map(value, &p).unwrap_or_default(),
                "name" => name = ctx.string(value, &p),
                "external" => (network.external, external_name) = external(value, &p, ctx),
                "internal" => network.internal = ctx.boolean(value, &p).unwrap_or(false),
                "attachable" => network.attachable = ctx.boolean(value, &p).unwrap_or(false),
                "ipam" => network.ipam = ipam(value, &p, ctx),
                "enable_ipv6" => network.enable_ipv6 = ctx.boolean(value, &p),
                k if k.starts_with("x-") => {}
                other => ctx.unsupported(&p, other, &owner),
            }
        }
    }
    network.name = resource_name(ctx.project, key, network.external, name.or(external_name));
    Some(network)
}

fn volume(key: &str, value: &Value, path: &str, ctx: &mut Ctx) -> Option<Volume> {
    if !valid_name(key) {
        ctx.problem(
            path,
            format!("invalid volume name `{key}`: use letters, digits, `_`, `.` and `-`"),
        );
    }
    let mut volume = Volume::default();
    let mut name = None;
    let mut external_name = None;
    if !value.is_null() {
        let owner = format!("volume {key}");
        for (k, p, value) in ctx.entries(value, path)? {
            if value.is_null() && VOLUME_KEYS.contains(&k.as_str()) {
                continue;
            }
            match k.as_str() {
                "driver" => volume.driver = ctx.string(value, &p),
                "driver_opts" => volume.driver_opts = ctx.string_map(value, &p).unwrap_or_default(),
                "labels" => volume.labels = ctx.string_map(value, &p).unwrap_or_default(),
                "name" => name = ctx.string(value, &p),
                "external" => (volume.external, external_name) = external(value, &p, ctx),
                k if k.starts_with("x-") => {}
                other => ctx.unsupported(&p, other, &owner),
            }
        }
    }
    volume.name = resource_name(ctx.project, key, volume.external, name.or(external_name));
    Some(volume)
}

/// The engine's name of a network or volume, as compose names it.
pub(super) fn resource_name(
    project: &str,
    key: &str,
    external: bool,
    name: Option<String>,
) -> String {
    match name {
        Some(name) => name,
        None if external => key.to_string(),
        None => format!("{project}_{key}"),
    }
}
