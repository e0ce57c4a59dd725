//! The project printed in the shape `docker compose config` (v2) prints it: top-level `name`,
//! `services` (sorted by name), `networks`, `volumes`; `environment` as a mapping, `ports` and
//! `volumes` in the long syntax, `networks` as a mapping, sizes in bytes, durations as Go prints
//! them. Maps are sorted by key, so the output is deterministic. As compose does, every `$` is
//! printed `$$`, so the output reads back as a compose file meaning the same.
//!
//! A value that came from a variable (the env file holds SSM parameters and secrets) is printed
//! as [`MASK`], wherever it is: every scalar of the compose file that referred to a variable, and
//! an `environment` value from an env file or inherited. What the file spells out is printed as
//! it is, even when a value of the env file happens to equal it: this masking, by where values
//! are used, is exact, so `render`'s output is not passed through the text redactor (but its
//! keys are, see `mask`).

use std::collections::HashMap;

use indexmap::IndexMap;
use serde_norway::{Mapping, Value};

use super::model::*;
use super::tree::{join_index, join_key, key_text};
use super::units::format_duration;

/// What `render` prints in place of a value that came from a variable.
pub const MASK: &str = "********";

/// The project as YAML.
pub fn to_yaml(project: &Project) -> String {
    let mut out = String::new();
    match to_value(project) {
        Value::Mapping(root) => yaml_mapping(&root, 0, false, &mut out),
        other => yaml_scalar(&other, &mut out),
    }
    out
}

/// The project as pretty-printed JSON.
pub fn to_json(project: &Project) -> String {
    serde_json::to_string_pretty(&to_value(project))
        .expect("a tree with string keys always serializes to JSON")
}

/// The tree `to_yaml` and `to_json` print.
pub fn to_value(project: &Project) -> Value {
    let mut root = Mapping::new();
    root.insert("name".into(), project.name.clone().into());
    if !project.networks.is_empty() {
        let networks = sorted(&project.networks, network);
        root.insert("networks".into(), networks);
    }
    if !project.secrets.is_empty() {
        let secrets = sorted(&project.secrets, |source| {
            let mut m = Mapping::new();
            match source {
                SecretSource::File(path) => {
                    m.insert("file".into(), path.display().to_string().into())
                }
                SecretSource::Environment(name) => {
                    m.insert("environment".into(), name.clone().into())
                }
            };
            Value::Mapping(m)
        });
        root.insert("secrets".into(), secrets);
    }
    let mut services: Vec<&Service> = project.services.values().collect();
    services.sort_by(|a, b| a.name.cmp(&b.name));
    let services: Mapping = services
        .into_iter()
        .map(|s| (Value::from(s.name.clone()), service(s, false)))
        .collect();
    root.insert("services".into(), Value::Mapping(services));
    if !project.volumes.is_empty() {
        let volumes = sorted(&project.volumes, volume);
        root.insert("volumes".into(), volumes);
    }
    let mut root = Value::Mapping(root);
    mask(&mut root, "", ("", false), &FromVariables::of(project));
    escape_dollars(root)
}

/// The values of a project that came from variables: by key path, and by the key path of the
/// list or mapping they are in.
struct FromVariables<'a> {
    at: &'a HashMap<String, FromVariable>,
    in_parent: HashMap<&'a str, Vec<&'a FromVariable>>,
}

impl<'a> FromVariables<'a> {
    fn of(project: &'a Project) -> FromVariables<'a> {
        let mut in_parent: HashMap<&str, Vec<&FromVariable>> = HashMap::new();
        for value in project.from_variables.values() {
            in_parent.entry(&value.parent).or_default().push(value);
        }
        FromVariables {
            at: &project.from_variables,
            in_parent,
        }
    }
}

/// Masks what came from a variable in the printed tree, walked with the compose file's key
/// paths (`place`: the path of the list or mapping `value` is in, and whether it is a list). A
/// printed node at the path of a value that referred to a variable is masked whole (a `command`
/// string printed as a list, a short `ports` entry printed long). A list the file wrote as a
/// mapping, or the other way round (`labels: [owner=x]` printed `labels: {owner: x}`), has no
/// item at the same path: there, a printed scalar is masked when it holds, or is held in, a value
/// from a variable of that list or mapping.
fn mask(value: &mut Value, path: &str, place: (&str, bool), from: &FromVariables) {
    if from.at.contains_key(path) {
        *value = Value::from(MASK);
        return;
    }
    match value {
        Value::Mapping(map) => {
            for (key, mut item) in std::mem::take(map) {
                let text = key_text(&key).unwrap_or_default();
                mask(&mut item, &join_key(path, &text), (path, false), from);
                // A key the file built from a variable (`labels: ["${K}=v"]`) has no path of its
                // own: the redactor masks it, if it holds a value the agent fetched.
                let key = match crate::redact::text(&text) {
                    std::borrow::Cow::Owned(masked) => Value::from(masked),
                    std::borrow::Cow::Borrowed(_) => key,
                };
                map.insert(key, item);
            }
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                mask(item, &join_index(path, i), (path, true), from);
            }
        }
        scalar => {
            let (parent, in_list) = place;
            let Some(text) = key_text(scalar) else {
                return;
            };
            let held = from
                .in_parent
                .get(parent)
                .into_iter()
                .flatten()
                .any(|v| v.in_list != in_list && overlaps(&text, v.value.expose()));
            if held {
                *scalar = Value::from(MASK);
            }
        }
    }
}

/// Whether printed `text` holds `value` or is held in it (`owner=team-7f` printed `team-7f`).
fn overlaps(text: &str, value: &str) -> bool {
    !text.is_empty() && !value.is_empty() && (value.contains(text) || text.contains(value))
}

/// A mapping of `map`'s entries sorted by key, each value rendered by `f`.
fn sorted<T>(map: &IndexMap<String, T>, f: impl Fn(&T) -> Value) -> Value {
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort();
    Value::Mapping(
        keys.into_iter()
            .map(|k| (Value::from(k.clone()), f(&map[k])))
            .collect(),
    )
}

fn strings(items: &[String]) -> Value {
    Value::Sequence(items.iter().map(|s| Value::from(s.clone())).collect())
}

fn string_map(map: &IndexMap<String, String>) -> Value {
    sorted(map, |v| Value::from(v.clone()))
}

/// Inserts `key: value` when `value` is there.
fn put(map: &mut Mapping, key: &str, value: Option<Value>) {
    if let Some(value) = value {
        map.insert(key.into(), value);
    }
}

fn non_empty<T>(items: &[T], f: impl Fn(&[T]) -> Value) -> Option<Value> {
    (!items.is_empty()).then(|| f(items))
}

fn non_empty_map<T>(map: &IndexMap<String, T>, f: impl Fn(&T) -> Value) -> Option<Value> {
    (!map.is_empty()).then(|| sorted(map, f))
}

/// Compose v2's `com.docker.compose.config-hash` of a service: the SHA-256 of the service as
/// compose-go marshals it to JSON (Go's compact encoding, its struct's key order, every value
/// unmasked), without `build`, `pull_policy`, `scale`, `deploy.replicas`, `depends_on` and
/// `profiles` (compose's `ServiceHash`). With it, `docker compose up -d` on the same files sees
/// the agent's containers as up to date.
pub fn config_hash(s: &Service) -> String {
    crate::digest::sha256_hex(config_hash_input(s).as_bytes())
}

/// What [`config_hash`] hashes (it holds the service's secrets: never print it outside a test).
pub fn config_hash_input(s: &Service) -> String {
    let mut tree = service(s, true);
    if let Value::Mapping(m) = &mut tree {
        for key in ["build", "pull_policy", "scale", "depends_on", "profiles"] {
            m.shift_remove(key);
        }
        if let Some(Value::Mapping(deploy)) = m.get_mut("deploy") {
            deploy.shift_remove("replicas");
        }
    }
    let mut json = String::new();
    go_json(&tree, &mut json);
    json
}

/// Compose v2's `com.docker.compose.config-hash` of a top-level network: the SHA-256 of its
/// config as compose-go marshals it (compose's `NetworkHash`).
pub fn network_hash(n: &Network) -> String {
    let mut json = String::new();
    go_json(&network(n), &mut json);
    crate::digest::sha256_hex(json.as_bytes())
}

/// Compose v2's `com.docker.compose.config-hash` of a top-level volume, its driver `local` when
/// the file names none (compose's `VolumeHash`).
pub fn volume_hash(v: &Volume) -> String {
    let tree = match volume(v) {
        Value::Mapping(m) if !m.contains_key("driver") => {
            let mut with_driver = Mapping::new();
            for (key, value) in m {
                let is_name = key_text(&key).as_deref() == Some("name");
                with_driver.insert(key, value);
                if is_name {
                    with_driver.insert("driver".into(), "local".into());
                }
            }
            Value::Mapping(with_driver)
        }
        other => other,
    };
    let mut json = String::new();
    go_json(&tree, &mut json);
    crate::digest::sha256_hex(json.as_bytes())
}

/// `value` as Go's `encoding/json` writes it: compact, keys in the tree's order, `<`, `>`, `&`,
/// U+2028 and U+2029 escaped, a float with no fraction written as an integer.
fn go_json(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => out.push_str(&i.to_string()),
            (None, Some(u), _) => out.push_str(&u.to_string()),
            (None, None, Some(f)) if f.fract() == 0.0 && f.abs() < 1e21 => {
                out.push_str(&format!("{f:.0}"))
            }
            (None, None, Some(f)) => out.push_str(&f.to_string()),
            _ => out.push_str("null"),
        },
        Value::String(text) => go_string(text, out),
        Value::Sequence(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                go_json(item, out);
            }
            out.push(']');
        }
        Value::Mapping(map) => {
            out.push('{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                go_string(&key_text(key).unwrap_or_default(), out);
                out.push(':');
                go_json(item, out);
            }
            out.push('}');
        }
        Value::Tagged(tagged) => go_json(&tagged.value, out),
    }
}

fn go_string(text: &str, out: &mut String) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", c as u32))
            }
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A service as `docker compose config` prints it. `hashed`: as [`config_hash`] hashes it, every
/// environment value as it is and `extra_hosts` sorted; else only the values the file spells out,
/// `extra_hosts` in the file's order.
fn service(s: &Service, hashed: bool) -> Value {
    // In the file's order, so that what came from a variable is masked where it stands; compose
    // sorts them by host (a mapping of host to addresses), as `config_hash` does.
    let mut extra_hosts: Vec<String> = s
        .extra_hosts
        .iter()
        .map(|h| format!("{}={}", h.host, h.ip))
        .collect();
    if hashed {
        extra_hosts.sort();
    }
    // The one place a value leaves `Secret` for output, and only a literal one. A bare `KEY`
    // nothing sets is printed `KEY: null`, as compose does.
    let mut environment: IndexMap<String, Value> = s
        .environment
        .iter()
        .map(|(k, v)| {
            let shown = if hashed || v.is_literal() {
                v.value.expose()
            } else {
                MASK
            };
            (k.clone(), Value::from(shown))
        })
        .collect();
    for key in &s.unset_environment {
        environment.insert(key.clone(), Value::Null);
    }
    let environment = non_empty_map(&environment, Value::clone);
    let text = |v: &Option<String>| v.clone().map(Value::from);
    let shown = |v: Option<String>| v.map(Value::from);
    let fields: Vec<(&str, Option<Value>)> = vec![
        ("cap_add", non_empty(&s.cap_add, strings)),
        ("cap_drop", non_empty(&s.cap_drop, strings)),
        // Printed `null` when unset: compose's JSON always has these two.
        (
            "command",
            Some(s.command.as_deref().map_or(Value::Null, strings)),
        ),
        ("container_name", text(&s.container_name)),
        ("cpus", s.cpus.filter(|c| *c != 0.0).map(Value::from)),
        ("depends_on", non_empty_map(&s.depends_on, dependency)),
        ("dns", non_empty(&s.dns, strings)),
        (
            "entrypoint",
            Some(s.entrypoint.as_deref().map_or(Value::Null, strings)),
        ),
        ("environment", environment),
        ("extra_hosts", non_empty(&extra_hosts, strings)),
        ("healthcheck", s.healthcheck.as_ref().map(healthcheck)),
        ("hostname", text(&s.hostname)),
        ("image", Some(Value::from(s.image.clone()))),
        ("init", s.init.map(Value::from)),
        (
            "labels",
            non_empty_map(&s.labels, |v| Value::from(v.clone())),
        ),
        ("logging", s.logging.as_ref().map(logging)),
        (
            "mem_limit",
            shown(s.mem_limit.filter(|b| *b != 0).map(|b| b.to_string())),
        ),
        ("networks", non_empty_map(&s.networks, service_network)),
        (
            "ports",
            non_empty(&s.ports, |p| Value::Sequence(p.iter().map(port).collect())),
        ),
        ("profiles", non_empty(&s.profiles, strings)),
        (
            "pull_policy",
            s.pull_policy.map(|p| Value::from(p.spelled())),
        ),
        ("read_only", s.read_only.filter(|r| *r).map(Value::from)),
        ("restart", shown(s.restart.map(|r| r.to_string()))),
        (
            "shm_size",
            shown(s.shm_size.filter(|b| *b != 0).map(|b| b.to_string())),
        ),
        (
            "stop_grace_period",
            shown(s.stop_grace_period.map(format_duration)),
        ),
        ("stop_signal", text(&s.stop_signal)),
        (
            "sysctls",
            non_empty_map(&s.sysctls, |v| Value::from(v.clone())),
        ),
        (
            "secrets",
            non_empty(&s.secrets, |secrets| {
                Value::Sequence(secrets.iter().map(service_secret).collect())
            }),
        ),
        ("tmpfs", non_empty(&s.tmpfs, strings)),
        ("ulimits", non_empty_map(&s.ulimits, ulimit)),
        ("user", text(&s.user)),
        (
            "volumes",
            non_empty(&s.volumes, |m| {
                Value::Sequence(m.iter().map(mount).collect())
            }),
        ),
        ("working_dir", text(&s.working_dir)),
    ];
    let mut fields: Vec<(&str, Option<Value>)> = fields.into_iter().chain(flags(s)).collect();
    // In the order of compose-go's ServiceConfig, as `docker compose config` prints them (and
    // as compose hashes them).
    fields.sort_by_key(|(key, _)| SERVICE_KEYS.iter().position(|k| k == key));
    let mut m = Mapping::new();
    for (key, value) in fields {
        put(&mut m, key, value);
    }
    Value::Mapping(m)
}

/// The keys of a service in the order compose-go declares them (read off `docker compose
/// config --format json`, v2.40.3).
const SERVICE_KEYS: &[&str] = &[
    "profiles",
    "cap_add",
    "cap_drop",
    "cgroup_parent",
    "cpu_period",
    "cpu_quota",
    "cpus",
    "cpuset",
    "cpu_shares",
    "command",
    "container_name",
    "depends_on",
    "deploy",
    "dns",
    "dns_opt",
    "dns_search",
    "domainname",
    "entrypoint",
    "environment",
    "expose",
    "external_links",
    "extra_hosts",
    "group_add",
    "hostname",
    "healthcheck",
    "image",
    "init",
    "ipc",
    "labels",
    "links",
    "logging",
    "mem_limit",
    "mem_reservation",
    "memswap_limit",
    "network_mode",
    "networks",
    "oom_kill_disable",
    "oom_score_adj",
    "pid",
    "pids_limit",
    "platform",
    "ports",
    "privileged",
    "pull_policy",
    "read_only",
    "restart",
    "runtime",
    "secrets",
    "security_opt",
    "shm_size",
    "stdin_open",
    "stop_grace_period",
    "stop_signal",
    "sysctls",
    "tmpfs",
    "tty",
    "ulimits",
    "user",
    "userns_mode",
    "volumes",
    "working_dir",
];

/// A service's secret in the long syntax, as `docker compose config` prints it (the file the agent
/// wrote for it is not shown).
fn service_secret(secret: &ServiceSecret) -> Value {
    let mut m = Mapping::new();
    m.insert("source".into(), secret.source.clone().into());
    m.insert("target".into(), secret.target.clone().into());
    if let Some(uid) = secret.uid {
        m.insert("uid".into(), uid.to_string().into());
    }
    if let Some(gid) = secret.gid {
        m.insert("gid".into(), gid.to_string().into());
    }
    if let Some(mode) = secret.mode {
        m.insert("mode".into(), mode.into());
    }
    Value::Mapping(m)
}

/// `expose`, `platform` and the plain container flags, as `docker compose config` prints them.
fn flags(s: &Service) -> Vec<(&'static str, Option<Value>)> {
    let f = &s.flags;
    let text = |v: &Option<String>| v.clone().map(Value::from);
    // Compose leaves out a false flag and a zero number (Go's `omitempty`).
    let number = |v: Option<i64>| v.filter(|n| *n != 0).map(Value::from);
    let flag = |v: Option<bool>| v.filter(|b| *b).map(Value::from);
    let expose: Vec<String> = s
        .expose
        .iter()
        .map(|p| p.trim_end_matches("/tcp").to_string())
        .collect();
    vec![
        ("expose", non_empty(&expose, strings)),
        ("platform", text(&s.platform)),
        ("network_mode", text(&s.network_mode)),
        (
            "links",
            non_empty(&s.links, |links| {
                let spelled: Vec<String> = links
                    .iter()
                    .map(|(s, a)| {
                        if s == a {
                            s.clone()
                        } else {
                            format!("{s}:{a}")
                        }
                    })
                    .collect();
                strings(&spelled)
            }),
        ),
        ("external_links", non_empty(&s.external_links, strings)),
        ("deploy", s.deploy.as_ref().map(deploy)),
        ("stdin_open", flag(f.stdin_open)),
        ("tty", flag(f.tty)),
        ("privileged", flag(f.privileged)),
        ("oom_kill_disable", flag(f.oom_kill_disable)),
        ("domainname", text(&f.domainname)),
        ("ipc", text(&f.ipc)),
        ("pid", text(&f.pid)),
        ("userns_mode", text(&f.userns_mode)),
        ("cgroup_parent", text(&f.cgroup_parent)),
        ("runtime", text(&f.runtime)),
        ("cpuset", text(&f.cpuset)),
        ("group_add", non_empty(&f.group_add, strings)),
        ("security_opt", non_empty(&f.security_opt, strings)),
        ("dns_search", non_empty(&f.dns_search, strings)),
        ("dns_opt", non_empty(&f.dns_opt, strings)),
        ("cpu_shares", number(f.cpu_shares)),
        ("cpu_quota", number(f.cpu_quota)),
        ("cpu_period", number(f.cpu_period)),
        ("pids_limit", number(f.pids_limit)),
        ("oom_score_adj", number(f.oom_score_adj)),
        (
            "mem_reservation",
            f.mem_reservation
                .filter(|b| *b != 0)
                .map(|b| Value::from(b.to_string())),
        ),
        (
            "memswap_limit",
            f.memswap_limit
                .filter(|b| *b != 0)
                .map(|b| Value::from(b.to_string())),
        ),
    ]
}

fn dependency(d: &Dependency) -> Value {
    let mut m = Mapping::new();
    m.insert("condition".into(), d.condition.as_str().into());
    if d.restart {
        m.insert("restart".into(), true.into());
    }
    m.insert("required".into(), d.required.into());
    Value::Mapping(m)
}

fn healthcheck(h: &Healthcheck) -> Value {
    let mut m = Mapping::new();
    if h.disable {
        m.insert("disable".into(), true.into());
        return Value::Mapping(m);
    }
    put(&mut m, "test", non_empty(&h.test, strings));
    put(
        &mut m,
        "timeout",
        h.timeout.map(|d| Value::from(format_duration(d))),
    );
    put(
        &mut m,
        "interval",
        h.interval.map(|d| Value::from(format_duration(d))),
    );
    put(&mut m, "retries", h.retries.map(Value::from));
    put(
        &mut m,
        "start_period",
        h.start_period.map(|d| Value::from(format_duration(d))),
    );
    put(
        &mut m,
        "start_interval",
        h.start_interval.map(|d| Value::from(format_duration(d))),
    );
    Value::Mapping(m)
}

fn logging(l: &Logging) -> Value {
    let mut m = Mapping::new();
    put(&mut m, "driver", l.driver.clone().map(Value::from));
    put(
        &mut m,
        "options",
        non_empty_map(&l.options, |v| Value::from(v.clone())),
    );
    Value::Mapping(m)
}

fn service_network(n: &ServiceNetwork) -> Value {
    let mut m = Mapping::new();
    put(&mut m, "aliases", non_empty(&n.aliases, strings));
    put(
        &mut m,
        "ipv4_address",
        n.ipv4_address.clone().map(Value::from),
    );
    put(
        &mut m,
        "ipv6_address",
        n.ipv6_address.clone().map(Value::from),
    );
    put(
        &mut m,
        "priority",
        n.priority.filter(|p| *p != 0).map(Value::from),
    );
    if m.is_empty() && !n.configured {
        return Value::Null;
    }
    Value::Mapping(m)
}

/// `deploy`, as docker compose config prints the part the agent applies.
fn deploy(d: &Deploy) -> Value {
    let resources = |r: &Resources| {
        let mut m = Mapping::new();
        put(&mut m, "cpus", r.cpus.map(Value::from));
        put(
            &mut m,
            "memory",
            r.memory.map(|b| Value::from(b.to_string())),
        );
        put(&mut m, "pids", r.pids.map(Value::from));
        let devices: Vec<Value> = r.devices.iter().map(device).collect();
        put(
            &mut m,
            "devices",
            (!devices.is_empty()).then_some(Value::Sequence(devices)),
        );
        (!m.is_empty()).then_some(Value::Mapping(m))
    };
    let mut m = Mapping::new();
    put(&mut m, "replicas", d.replicas.map(Value::from));
    let mut res = Mapping::new();
    put(&mut res, "limits", resources(&d.limits));
    put(&mut res, "reservations", resources(&d.reservations));
    // `resources` and `placement` are structs in compose-go, never left out.
    m.insert("resources".into(), Value::Mapping(res));
    if let Some(policy) = &d.restart_policy {
        let mut p = Mapping::new();
        put(
            &mut p,
            "condition",
            policy.condition.clone().map(Value::from),
        );
        put(&mut p, "max_attempts", policy.max_attempts.map(Value::from));
        m.insert("restart_policy".into(), Value::Mapping(p));
    }
    m.insert("placement".into(), Value::Mapping(Mapping::new()));
    Value::Mapping(m)
}

fn device(d: &DeviceRequest) -> Value {
    let mut m = Mapping::new();
    m.insert("capabilities".into(), strings(&d.capabilities));
    put(&mut m, "driver", d.driver.clone().map(Value::from));
    put(
        &mut m,
        "count",
        d.count.map(|c| {
            if c < 0 {
                Value::from("all")
            } else {
                Value::from(c)
            }
        }),
    );
    put(&mut m, "device_ids", non_empty(&d.device_ids, strings));
    put(
        &mut m,
        "options",
        non_empty_map(&d.options, |v| Value::from(v.clone())),
    );
    Value::Mapping(m)
}

fn ipam(i: &Ipam) -> Value {
    let mut m = Mapping::new();
    put(&mut m, "driver", i.driver.clone().map(Value::from));
    let pools: Vec<Value> = i
        .config
        .iter()
        .map(|p| {
            let mut pool = Mapping::new();
            put(&mut pool, "subnet", p.subnet.clone().map(Value::from));
            put(&mut pool, "ip_range", p.ip_range.clone().map(Value::from));
            put(&mut pool, "gateway", p.gateway.clone().map(Value::from));
            put(
                &mut pool,
                "aux_addresses",
                (!p.aux_addresses.is_empty()).then(|| string_map(&p.aux_addresses)),
            );
            Value::Mapping(pool)
        })
        .collect();
    put(
        &mut m,
        "config",
        (!pools.is_empty()).then_some(Value::Sequence(pools)),
    );
    put(
        &mut m,
        "options",
        (!i.options.is_empty()).then(|| string_map(&i.options)),
    );
    Value::Mapping(m)
}

fn port(p: &Port) -> Value {
    let mut m = Mapping::new();
    let mode = match p.mode {
        PortMode::Ingress => "ingress",
        PortMode::Host => "host",
    };
    m.insert("mode".into(), mode.into());
    put(&mut m, "host_ip", p.host_ip.clone().map(Value::from));
    m.insert("target".into(), p.target.into());
    put(
        &mut m,
        "published",
        p.published.map(|r| Value::from(r.to_string())),
    );
    m.insert("protocol".into(), p.protocol.as_str().into());
    Value::Mapping(m)
}

fn mount(v: &Mount) -> Value {
    let mut m = Mapping::new();
    m.insert("type".into(), v.kind.as_str().into());
    put(&mut m, "source", v.source.clone().map(Value::from));
    m.insert("target".into(), v.target.clone().into());
    if v.read_only {
        m.insert("read_only".into(), true.into());
    }
    // The kind's own options, as compose prints them: always for the short syntax, when
    // written for the long one.
    if !v.options_section {
        return Value::Mapping(m);
    }
    match v.kind {
        MountKind::Bind => {
            let mut bind = Mapping::new();
            put(&mut bind, "selinux", v.selinux.clone().map(Value::from));
            put(
                &mut bind,
                "propagation",
                v.propagation.clone().map(Value::from),
            );
            if v.create_host_path_written {
                bind.insert("create_host_path".into(), true.into());
            }
            m.insert("bind".into(), Value::Mapping(bind));
        }
        MountKind::Volume => {
            let mut volume = Mapping::new();
            if v.nocopy {
                volume.insert("nocopy".into(), true.into());
            }
            m.insert("volume".into(), Value::Mapping(volume));
        }
        MountKind::Tmpfs => {
            let mut tmpfs = Mapping::new();
            put(
                &mut tmpfs,
                "size",
                v.tmpfs_size.map(|size| Value::from(size.to_string())),
            );
            m.insert("tmpfs".into(), Value::Mapping(tmpfs));
        }
    }
    Value::Mapping(m)
}

/// As compose-go marshals it: one number when written so, else `soft` and `hard`, a zero left out.
fn ulimit(u: &Ulimit) -> Value {
    if u.single && u.soft != 0 {
        return u.soft.into();
    }
    let mut m = Mapping::new();
    if !u.single {
        put(&mut m, "soft", (u.soft != 0).then(|| u.soft.into()));
        put(&mut m, "hard", (u.hard != 0).then(|| u.hard.into()));
    }
    Value::Mapping(m)
}

fn network(n: &Network) -> Value {
    let mut m = Mapping::new();
    m.insert("name".into(), n.name.clone().into());
    put(&mut m, "driver", n.driver.clone().map(Value::from));
    put(
        &mut m,
        "driver_opts",
        non_empty_map(&n.driver_opts, |v| Value::from(v.clone())),
    );
    // Always there, `{}` when the file says nothing (compose's IPAM config is no pointer).
    let ipam_config = n.ipam.as_ref().map_or(Value::Mapping(Mapping::new()), ipam);
    m.insert("ipam".into(), ipam_config);
    if n.external {
        m.insert("external".into(), true.into());
    }
    if n.internal {
        m.insert("internal".into(), true.into());
    }
    if n.attachable {
        m.insert("attachable".into(), true.into());
    }
    put(
        &mut m,
        "labels",
        (!n.labels.is_empty()).then(|| string_map(&n.labels)),
    );
    put(&mut m, "enable_ipv6", n.enable_ipv6.map(Value::from));
    Value::Mapping(m)
}

fn volume(v: &Volume) -> Value {
    let mut m = Mapping::new();
    m.insert("name".into(), v.name.clone().into());
    put(&mut m, "driver", v.driver.clone().map(Value::from));
    put(
        &mut m,
        "driver_opts",
        non_empty_map(&v.driver_opts, |v| Value::from(v.clone())),
    );
    if v.external {
        m.insert("external".into(), true.into());
    }
    put(
        &mut m,
        "labels",
        (!v.labels.is_empty()).then(|| string_map(&v.labels)),
    );
    Value::Mapping(m)
}

/// Every `$` of every key and string as `$$`, so the output interpolates back to itself.
fn escape_dollars(value: Value) -> Value {
    let escape = |s: String| {
        if s.contains('$') {
            s.replace('$', "$$")
        } else {
            s
        }
    };
    match value {
        Value::String(s) => Value::String(escape(s)),
        Value::Sequence(items) => Value::Sequence(items.into_iter().map(escape_dollars).collect()),
        Value::Mapping(map) => Value::Mapping(
            map.into_iter()
                .map(|(k, v)| (escape_dollars(k), escape_dollars(v)))
                .collect(),
        ),
        other => other,
    }
}

/// Writes `map` as a block mapping at `indent`; `inline` when its first key follows a `- ` that
/// is already written. Sequences are indented under their key, as compose v2 prints them.
fn yaml_mapping(map: &Mapping, indent: usize, inline: bool, out: &mut String) {
    for (i, (key, value)) in map.iter().enumerate() {
        if !(inline && i == 0) {
            out.push_str(&" ".repeat(indent));
        }
        yaml_scalar(key, out);
        out.push(':');
        yaml_child(value, indent, out);
    }
}

/// Writes what follows `key:` or `-`: a scalar on the same line, a collection below it.
fn yaml_child(value: &Value, indent: usize, out: &mut String) {
    match value {
        Value::Mapping(map) if !map.is_empty() => {
            out.push('\n');
            yaml_mapping(map, indent + 2, false, out);
        }
        Value::Sequence(items) if !items.is_empty() => {
            out.push('\n');
            yaml_sequence(items, indent + 2, out);
        }
        scalar => {
            out.push(' ');
            yaml_scalar(scalar, out);
            out.push('\n');
        }
    }
}

fn yaml_sequence(items: &[Value], indent: usize, out: &mut String) {
    for item in items {
        out.push_str(&" ".repeat(indent));
        out.push('-');
        match item {
            Value::Mapping(map) if !map.is_empty() => {
                out.push(' ');
                yaml_mapping(map, indent + 2, true, out);
            }
            other => yaml_child(other, indent, out),
        }
    }
}

fn yaml_scalar(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) if needs_quotes(s) => quote(s, out),
        Value::String(s) => out.push_str(s),
        Value::Mapping(_) => out.push_str("{}"),
        Value::Sequence(_) => out.push_str("[]"),
        Value::Tagged(tagged) => yaml_scalar(&tagged.value, out),
    }
}

/// Whether a string printed plain could be read back as something else, by a YAML 1.2 reader
/// (compose v2) or a YAML 1.1 one (docker-compose 1.x reads `no` and `on` as booleans and
/// `1:30` as a number).
fn needs_quotes(s: &str) -> bool {
    const WORDS: [&str; 13] = [
        "y", "yes", "n", "no", "true", "false", "on", "off", "null", "~", ".inf", ".nan", "<<",
    ];
    let lower = s.to_ascii_lowercase();
    s.is_empty()
        || looks_numeric(s)
        || WORDS.contains(&lower.trim_start_matches(['+', '-']))
        || s.starts_with(|c: char| " ,[]{}#&*!|>'\"%@`".contains(c))
        || s.starts_with(['?', ':'])
        || s.starts_with('-') && (s.len() == 1 || s[1..].starts_with(' '))
        || s.ends_with([' ', ':'])
        || s.contains(": ")
        || s.contains(" #")
        || s.chars().any(|c| c.is_control())
}

/// Whether YAML 1.1 or 1.2 would read `s` as a number: an integer, a float, `0x`/`0o` forms, or
/// YAML 1.1's base-60 `1:30`.
fn looks_numeric(s: &str) -> bool {
    let body: String = s.trim_start_matches(['+', '-']).replace('_', "");
    let digits = |t: &str| !t.is_empty() && t.chars().all(|c| c.is_ascii_digit());
    if let Some(hex) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0o")) {
        return !hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit());
    }
    let (mantissa, exponent) = match body.split_once(['e', 'E']) {
        Some((m, e)) => (m, Some(e.trim_start_matches(['+', '-']))),
        None => (body.as_str(), None),
    };
    let float = match mantissa.split_once('.') {
        Some((whole, fraction)) => {
            (digits(whole) || whole.is_empty())
                && (fraction.is_empty() || digits(fraction))
                && !(whole.is_empty() && fraction.is_empty())
        }
        None => digits(mantissa),
    };
    if float && exponent.is_none_or(digits) {
        return true;
    }
    let (whole, _) = body.split_once('.').unwrap_or((&body, ""));
    let mut parts = whole.split(':');
    parts.next().is_some_and(digits)
        && whole.contains(':')
        && parts.all(|p| digits(p) && p.len() <= 2)
}

/// A double-quoted scalar, with JSON-like escapes (valid YAML).
fn quote(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}
