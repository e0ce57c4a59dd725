//! One service: its keys, each handed to its reader, the container settings that need no more
//! than a line or two, and what compose adds on its own (the dependencies `links` and
//! `network_mode: service:` imply, the `default` network).

use indexmap::IndexMap;
use serde_norway::Value;

use super::deploy::{cpus, deploy};
use super::environment::{env_entries, env_file_refs, resolve_environment};
use super::lifecycle::{depends_on, healthcheck, pull_policy, restart};
use super::mounts::volumes;
use super::networks::{extra_hosts, network_mode, service_networks};
use super::ports::{expose, ports};
use super::secrets::service_secrets;
use super::{valid_name, Ctx, Paths};
use crate::compose::model::*;
use crate::compose::tree::join_key;

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

pub(super) fn service(
    name: &str,
    value: &Value,
    path: &str,
    ctx: &mut Ctx,
) -> Option<(Service, Paths)> {
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
        if key == EXTENSION {
            s.ready = extension(value, &key_path, ctx);
            continue;
        }
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
    (s.environment, s.unset_environment) = resolve_environment(env_files, environment, ctx);
    (ctx.problems.len() == problems_before).then_some((s, paths))
}

/// `command` and `entrypoint`: a list as it is, a string split into words with shell rules.
///
/// A string with an unquoted shell operator (`npm run migrate && npm start`) is refused: docker
/// compose splits it with go-shellwords, which stops at the operator and runs only what comes
/// before it, and no shell runs the rest; the user meant `["sh", "-c", "..."]`.
fn command(value: &Value, path: &str, ctx: &mut Ctx) -> Option<Vec<String>> {
    match value {
        Value::String(s) if shell_operator(s).is_some() => {
            let operator = shell_operator(s).unwrap_or_default();
            let shown = ctx.shown(path, s);
            ctx.problem(
                path,
                format!(
                    "{shown} has the shell operator `{operator}` outside quotes: docker compose \
                     runs only the words before it and no shell runs the rest; to run it with a \
                     shell, write a list: [\"sh\", \"-c\", \"...\"] (or quote the operator to \
                     pass it as an argument)"
                ),
            );
            None
        }
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

/// The first shell operator (`;`, `&&`, `&`, `||`, `|`, `<`, `>`, `(`, `)`) of `text` outside
/// quotes and not escaped, as go-shellwords stops at it.
fn shell_operator(text: &str) -> Option<&'static str> {
    let (mut single, mut double, mut escaped) = (false, false, false);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if !single => escaped = true,
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            _ if single || double => {}
            ';' => return Some(";"),
            '&' if chars.peek() == Some(&'&') => return Some("&&"),
            '&' => return Some("&"),
            '|' if chars.peek() == Some(&'|') => return Some("||"),
            '|' => return Some("|"),
            '<' => return Some("<"),
            '>' => return Some(">"),
            '(' => return Some("("),
            ')' => return Some(")"),
            _ => {}
        }
    }
    None
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
                        out.insert(
                            name,
                            Ulimit {
                                soft,
                                hard,
                                single: false,
                            },
                        );
                    }
                    _ => ctx.problem(&p, "a ulimit mapping needs both `soft` and `hard`"),
                }
            }
            other => {
                if let Some(n) = ctx.integer(other, &p) {
                    out.insert(
                        name,
                        Ulimit {
                            soft: n,
                            hard: n,
                            single: true,
                        },
                    );
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

/// The agent's own extension of a service (compose ignores `x-` keys): `ready:`, its readiness
/// probe. Any other key in it is a mistake the agent names.
pub const EXTENSION: &str = "x-kicky-agent";

fn extension(value: &Value, path: &str, ctx: &mut Ctx) -> Option<crate::config::probe::Probe> {
    let mut ready = None;
    for (key, key_path, value) in ctx.entries(value, path)? {
        match key.as_str() {
            "ready" => ready = probe(value, &key_path, ctx),
            key => ctx.problem(
                &key_path,
                format!("unknown key `{key}` in {EXTENSION} (it has `ready`)"),
            ),
        }
    }
    ready
}

/// A `ready:` probe: one of `http`, `tcp`, `exec`, with `interval` and `timeout`.
pub(crate) fn probe(
    value: &Value,
    path: &str,
    ctx: &mut Ctx,
) -> Option<crate::config::probe::Probe> {
    use crate::config::probe::{Probe, RawProbe};
    let read = serde_norway::from_value::<RawProbe>(value.clone())
        .map_err(|err| err.to_string())
        .and_then(Probe::try_from);
    match read {
        Ok(probe) => Some(probe),
        Err(err) => {
            ctx.problem(path, format!("invalid readiness probe: {err}"));
            None
        }
    }
}
