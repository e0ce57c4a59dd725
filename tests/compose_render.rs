//! The compose model against docker compose itself. Each case of `tests/compose/` (a compose
//! file, the `.env` the agent would have written, the files they refer to) is rendered by
//! `kicky-agent render --json` and by the machine's `docker-compose config`; docker-compose
//! 1.29's output is brought to the shape compose v2 prints by [`normalize_v1`], and the two are
//! compared field by field. Each case's `render.yaml` holds the exact expected output (run with
//! `KICKY_BLESS=1` to rewrite them after a deliberate change, and review the diff).
//!
//! A case with a `SPEC_ONLY` file uses forms docker-compose 1.29 predates (`${VAR:+alt}`, the
//! long `env_file` syntax...): its `render.yaml` was checked against the Compose Specification's
//! text instead. `tests/compose/errors/` holds broken files, each naming in `# expect:` lines the
//! line and message the agent must report.
//!
//! Needs only the agent binary and Debian's `docker-compose` (tests/rig/install.sh installs it);
//! no rig service.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Map, Value};

const AGENT: &str = env!("CARGO_BIN_EXE_kicky-agent");
const MASK: &str = "********";

/// The process environment both tools see: nothing of the test runner's, so a variable of the
/// machine cannot change a result.
const ENV: &[(&str, &str)] = &[
    ("HOME", "/home/tester"),
    ("HOSTNAME", "ip-10-0-0-1"),
    ("FROM_SHELL", "shell-value"),
];

/// `tests/compose/`, or the directory `KICKY_COMPOSE_CORPUS` names: the same checks on a corpus of
/// one's own (there, a case without `render.yaml` is only compared with docker-compose).
fn corpus() -> PathBuf {
    match std::env::var_os("KICKY_COMPOSE_CORPUS") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compose"),
    }
}

fn own_corpus() -> bool {
    std::env::var_os("KICKY_COMPOSE_CORPUS").is_some()
}

struct Case {
    name: String,
    dir: PathBuf,
    compose: PathBuf,
    env_file: PathBuf,
}

fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for entry in std::fs::read_dir(corpus()).unwrap() {
        let dir = entry.unwrap().path();
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        if !dir.is_dir() || name == "errors" {
            continue;
        }
        let compose = ["docker-compose.yml", "app/docker-compose.yml"]
            .iter()
            .map(|p| dir.join(p))
            .find(|p| p.is_file())
            .unwrap_or_else(|| panic!("case {name} has no docker-compose.yml"));
        cases.push(Case {
            env_file: dir.join(".env"),
            name,
            dir,
            compose,
        });
    }
    cases.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(own_corpus() || cases.len() >= 5, "the corpus is missing");
    cases
}

/// Runs the agent with a config pointing at `compose` and `env_file`.
fn agent(project: &str, compose: &Path, env_file: &Path, args: &[&str]) -> Output {
    let etc = tempfile::tempdir().unwrap();
    let config = etc.path().join("agent.yaml");
    let workdir = compose.parent().unwrap();
    std::fs::write(
        &config,
        format!(
            "project: {project}\nworkdir: {}\nenv:\n  file: {}\n  parameters:\n    - name: /kicky-test/unused\ncompose:\n  file: {}\n",
            workdir.display(),
            env_file.display(),
            compose.display()
        ),
    )
    .unwrap();
    let mut cmd = Command::new(AGENT);
    // No rig here: instance metadata is off, so no call leaves the machine.
    cmd.env_clear()
        .envs(ENV.iter().copied())
        .env("PATH", "/usr/bin:/bin")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    cmd.arg("--config").arg(&config).args(args);
    cmd.output().expect("run kicky-agent")
}

fn docker_compose(case: &Case) -> Value {
    let out = Command::new("docker-compose")
        .env_clear()
        .envs(ENV.iter().copied())
        .env("PATH", "/usr/bin:/bin")
        .arg("-p")
        .arg(&case.name)
        .arg("-f")
        .arg(&case.compose)
        .arg("--env-file")
        .arg(&case.env_file)
        .arg("config")
        .output()
        .expect("docker-compose is not installed: run tests/rig/install.sh");
    assert!(
        out.status.success(),
        "docker-compose config failed for {}: {}",
        case.name,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_norway::from_slice(&out.stdout).unwrap()
}

/// Turns docker-compose 1.29's `config` output into the shape compose v2 prints, which is the
/// shape `kicky-agent render` prints. The differences, all of form and none of meaning:
///
/// - top level: 1.29 prints `version` (v2 drops it) and no `name` (v2 prints the project name);
/// - profiles: 1.29 prints every service, v2 only those whose profiles are active
///   (`COMPOSE_PROFILES`, unset here);
/// - `command`, `entrypoint`: 1.29 keeps a string as written, v2 splits it into words;
/// - `healthcheck`: 1.29 keeps a string `test` (v2: `[CMD-SHELL, …]`), prints a disabled check as
///   `test: [NONE]` (v2: `disable: true`) and durations as written or in seconds (v2: Go's
///   `1m30s`);
/// - `environment`: 1.29 prints an unset bare `KEY` as null (v2 leaves it out) and numbers as
///   numbers (v2: strings);
/// - `ports`: 1.29 prints short strings (`127.0.0.1:80:80/tcp`) or `{published, target}` with
///   numbers; v2 prints every port as `{mode, host_ip, target, published, protocol}`, `published`
///   a string;
/// - `volumes`: 1.29 prints short strings (`src:dst:ro,rslave`); v2 the long syntax, with
///   `bind.create_host_path: true` for a short bind (and `bind.propagation`) and `volume: {}`
///   for a volume;
/// - `networks`: 1.29 gives no service `networks` when it is on `default` and prints `{}` for a
///   network without aliases (v2: `default: null`, `name: null`); top-level networks and volumes
///   carry no `name` (v2: `<project>_<key>`), and the implicit `default` network is not listed;
/// - `depends_on`: v2 adds `required: true`;
/// - `mem_limit`, `shm_size`: 1.29 prints them as written, v2 in bytes (a string);
///   `stop_grace_period` as written (v2: Go's format); `cpus` a string or a number;
/// - `extra_hosts`: 1.29 keeps a mapping as a mapping; v2 (and the agent) print `host:ip`;
/// - `labels`, `sysctls`, logging `options`: 1.29 may print numbers, v2 strings;
/// - `ulimits`: 1.29 prints `{soft, hard}` as written; v2 a single number when both are equal;
/// - `pull_policy`: 1.29 prints `if_not_present` as written; v2 normalizes it to `missing`.
fn normalize_v1(mut v1: Value, project: &str) -> Value {
    let top = v1.as_object_mut().unwrap();
    top.remove("version");
    let mut out = Map::new();
    out.insert("name".into(), json!(project));
    let mut uses_default = false;
    let mut services = Map::new();
    for (name, service) in top.remove("services").unwrap().as_object().unwrap() {
        let mut s = service.as_object().unwrap().clone();
        if s.get("profiles")
            .is_some_and(|p| !p.as_array().unwrap().is_empty())
        {
            continue;
        }
        for key in ["command", "entrypoint"] {
            if let Some(Value::String(text)) = s.get(key) {
                let words = shell_words::split(text).unwrap();
                s.insert(key.into(), json!(words));
            }
        }
        if let Some(Value::Object(env)) = s.get_mut("environment") {
            env.retain(|_, v| !v.is_null());
            for v in env.values_mut() {
                *v = stringify(v);
            }
        }
        if let Some(Value::Object(hc)) = s.get_mut("healthcheck") {
            if hc.get("test") == Some(&json!(["NONE"])) || hc.get("disable") == Some(&json!(true)) {
                *hc = Map::from_iter([("disable".to_string(), json!(true))]);
            }
            if let Some(Value::String(test)) = hc.get("test") {
                let test = json!(["CMD-SHELL", test]);
                hc.insert("test".into(), test);
            }
            for key in ["interval", "timeout", "start_period"] {
                if let Some(d) = hc.get(key) {
                    let d = go_duration(d);
                    hc.insert(key.into(), d);
                }
            }
        }
        if let Some(Value::Array(ports)) = s.get_mut("ports") {
            *ports = ports.iter().map(port_v2).collect();
        }
        if let Some(Value::Array(volumes)) = s.get_mut("volumes") {
            *volumes = volumes.iter().map(volume_v2).collect();
        }
        match s.get_mut("networks") {
            Some(Value::Object(networks)) if !networks.is_empty() => {
                for v in networks.values_mut() {
                    if v.as_object().is_some_and(|m| m.is_empty()) {
                        *v = Value::Null;
                    }
                }
            }
            _ => {
                s.insert("networks".into(), json!({"default": null}));
            }
        }
        uses_default |= s["networks"].get("default").is_some();
        if let Some(Value::Object(deps)) = s.get_mut("depends_on") {
            for d in deps.values_mut() {
                d.as_object_mut()
                    .unwrap()
                    .insert("required".into(), json!(true));
            }
        }
        for key in ["mem_limit", "shm_size"] {
            if let Some(v) = s.get(key) {
                let bytes = match v {
                    Value::Number(n) => n.as_u64().unwrap(),
                    Value::String(t) => kicky_agent::compose::units::parse_bytes(t).unwrap(),
                    other => panic!("{key}: {other}"),
                };
                s.insert(key.into(), json!(bytes.to_string()));
            }
        }
        if let Some(d) = s.get("stop_grace_period") {
            let d = go_duration(d);
            s.insert("stop_grace_period".into(), d);
        }
        if s.get("pull_policy") == Some(&json!("if_not_present")) {
            s.insert("pull_policy".into(), json!("missing"));
        }
        if let Some(Value::String(cpus)) = s.get("cpus") {
            let cpus: f64 = cpus.parse().unwrap();
            s.insert("cpus".into(), json!(cpus));
        }
        if let Some(Value::Object(hosts)) = s.get("extra_hosts") {
            let list: Vec<String> = hosts
                .iter()
                .map(|(h, ip)| format!("{h}:{}", ip.as_str().unwrap()))
                .collect();
            s.insert("extra_hosts".into(), json!(list));
        }
        for key in ["labels", "sysctls"] {
            if let Some(Value::Object(map)) = s.get_mut(key) {
                for v in map.values_mut() {
                    *v = stringify(v);
                }
            }
        }
        if let Some(Value::Object(options)) =
            s.get_mut("logging").and_then(|l| l.get_mut("options"))
        {
            for v in options.values_mut() {
                *v = stringify(v);
            }
        }
        if let Some(Value::Object(ulimits)) = s.get_mut("ulimits") {
            for v in ulimits.values_mut() {
                if let Some(m) = v.as_object() {
                    if m["soft"] == m["hard"] {
                        *v = m["soft"].clone();
                    }
                }
            }
        }
        services.insert(name.clone(), Value::Object(s));
    }
    out.insert("services".into(), Value::Object(services));
    let mut networks = top
        .remove("networks")
        .map(|n| n.as_object().unwrap().clone())
        .unwrap_or_default();
    if uses_default && !networks.contains_key("default") {
        networks.insert("default".into(), json!({}));
    }
    for (section, resources) in [
        ("networks", networks),
        (
            "volumes",
            top.remove("volumes")
                .map(|v| v.as_object().unwrap().clone())
                .unwrap_or_default(),
        ),
    ] {
        if resources.is_empty() {
            continue;
        }
        let mut named = Map::new();
        for (key, value) in resources {
            let mut value = value.as_object().cloned().unwrap_or_default();
            if !value.contains_key("name") {
                value.insert("name".into(), json!(format!("{project}_{key}")));
            }
            if value.get("external") == Some(&json!(false)) {
                value.remove("external");
            }
            named.insert(key, Value::Object(value));
        }
        out.insert(section.into(), Value::Object(named));
    }
    Value::Object(out)
}

fn stringify(v: &Value) -> Value {
    match v {
        Value::Number(n) => json!(n.to_string()),
        Value::Bool(b) => json!(b.to_string()),
        other => other.clone(),
    }
}

fn go_duration(v: &Value) -> Value {
    let text = match v {
        Value::String(s) => s.clone(),
        other => panic!("duration {other}"),
    };
    let d = kicky_agent::compose::units::parse_duration(&text)
        .unwrap_or_else(|| panic!("duration {text}"));
    json!(kicky_agent::compose::units::format_duration(d))
}

/// One port of 1.29's output in v2's long form.
fn port_v2(port: &Value) -> Value {
    let mut out = Map::new();
    match port {
        Value::String(spec) => {
            let (rest, protocol) = spec.rsplit_once('/').unwrap_or((spec, "tcp"));
            let mut parts: Vec<&str> = rest.rsplitn(3, ':').collect();
            parts.reverse();
            let (ip, published, target) = match parts.as_slice() {
                [target] => ("", "", *target),
                [published, target] => ("", *published, *target),
                [ip, published, target] => (*ip, *published, *target),
                _ => panic!("port {spec}"),
            };
            out.insert("mode".into(), json!("ingress"));
            if !ip.is_empty() {
                out.insert("host_ip".into(), json!(ip));
            }
            out.insert("target".into(), json!(target.parse::<u64>().unwrap()));
            if !published.is_empty() {
                out.insert("published".into(), json!(published));
            }
            out.insert("protocol".into(), json!(protocol));
        }
        Value::Object(m) => {
            out.insert(
                "mode".into(),
                m.get("mode").cloned().unwrap_or(json!("ingress")),
            );
            if let Some(ip) = m.get("host_ip") {
                out.insert("host_ip".into(), ip.clone());
            }
            out.insert("target".into(), m["target"].clone());
            if let Some(p) = m.get("published") {
                out.insert("published".into(), stringify(p));
            }
            out.insert(
                "protocol".into(),
                m.get("protocol").cloned().unwrap_or(json!("tcp")),
            );
        }
        other => panic!("port {other}"),
    }
    Value::Object(out)
}

/// One volume of 1.29's output in v2's long form.
fn volume_v2(volume: &Value) -> Value {
    match volume {
        Value::String(spec) => {
            let parts: Vec<&str> = spec.split(':').collect();
            let (source, target, mode) = match parts.as_slice() {
                [target] => (None, *target, ""),
                [source, target] => (Some(*source), *target, ""),
                [source, target, mode] => (Some(*source), *target, *mode),
                _ => panic!("volume {spec}"),
            };
            let bind = source.is_some_and(|s| s.starts_with('/'));
            let options: Vec<&str> = mode.split(',').collect();
            let mut out = Map::new();
            out.insert("type".into(), json!(if bind { "bind" } else { "volume" }));
            if let Some(source) = source {
                out.insert("source".into(), json!(source));
            }
            out.insert("target".into(), json!(target));
            if options.contains(&"ro") {
                out.insert("read_only".into(), json!(true));
            }
            let propagation = options.iter().find(|o| {
                [
                    "shared", "rshared", "slave", "rslave", "private", "rprivate",
                ]
                .contains(o)
            });
            if let (true, Some(propagation)) = (bind, propagation) {
                out.insert(
                    "bind".into(),
                    json!({"propagation": propagation, "create_host_path": true}),
                );
            } else if bind {
                out.insert("bind".into(), json!({"create_host_path": true}));
            } else if options.contains(&"nocopy") {
                out.insert("volume".into(), json!({"nocopy": true}));
            } else {
                out.insert("volume".into(), json!({}));
            }
            Value::Object(out)
        }
        Value::Object(m) => {
            let mut out = m.clone();
            if out.get("read_only") == Some(&json!(false)) {
                out.remove("read_only");
            }
            if out["type"] == "volume" && !out.contains_key("volume") {
                out.insert("volume".into(), json!({}));
            }
            // compose v2 (compose-go 2.10 and later) creates a long-syntax bind's missing host
            // path unless told not to; 1.29 printed nothing.
            if out["type"] == "bind" {
                let bind = out.entry("bind").or_insert_with(|| json!({}));
                if let Value::Object(bind) = bind {
                    match bind.get("create_host_path") {
                        None => {
                            bind.insert("create_host_path".into(), json!(true));
                        }
                        Some(v) if v != &json!(true) => {
                            bind.remove("create_host_path");
                        }
                        Some(_) => {}
                    }
                }
            }
            if out
                .get("bind")
                .is_some_and(|b| b.as_object().is_some_and(|b| b.is_empty()))
            {
                out.remove("bind");
            }
            Value::Object(out)
        }
        other => panic!("volume {other}"),
    }
}

/// Every difference between `ours` and `theirs`, by key path.
fn differences(path: &str, ours: &Value, theirs: &Value, out: &mut Vec<String>) {
    match (ours, theirs) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                let p = format!("{path}.{key}");
                match (a.get(key), b.get(key)) {
                    (Some(x), Some(y)) => differences(&p, x, y, out),
                    (x, y) => out.push(format!(
                        "{p}: agent {} / docker-compose {}",
                        show(x),
                        show(y)
                    )),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                differences(&format!("{path}[{i}]"), x, y, out);
            }
        }
        (Value::Number(a), Value::Number(b)) if a.as_f64() == b.as_f64() => {}
        (a, b) if a == b => {}
        (a, b) => out.push(format!("{path}: agent {a} / docker-compose {b}")),
    }
}

fn show(v: Option<&Value>) -> String {
    v.map_or("(absent)".to_string(), Value::to_string)
}

fn render_json(case: &Case) -> Value {
    let out = agent(
        &case.name,
        &case.compose,
        &case.env_file,
        &["-vvv", "render", "--json"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "render failed for {}: {stderr}",
        case.name
    );
    assert_no_secrets(case, &out);
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Values of the case's `.env` whose name says secret or password never appear in any output.
fn assert_no_secrets(case: &Case, out: &Output) {
    let text = std::fs::read_to_string(&case.env_file).unwrap();
    let vars = kicky_agent::envfile::parse(&text, &|_| None).unwrap();
    let all = [
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    ]
    .concat();
    for (key, value) in vars {
        let upper = key.to_uppercase();
        if upper.contains("SECRET") || upper.contains("PASSWORD") {
            assert!(
                !all.contains(&value),
                "case {}: the value of {key} was printed",
                case.name
            );
        }
    }
}

/// The project as the library loads it, with the case's variables.
fn library_project(case: &Case) -> kicky_agent::compose::Project {
    let text = std::fs::read_to_string(&case.env_file).unwrap();
    let file: BTreeMap<String, String> = kicky_agent::envfile::parse(&text, &|_| None)
        .unwrap()
        .into_iter()
        .collect();
    let lookup = |name: &str| {
        file.get(name).cloned().or_else(|| {
            ENV.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
    };
    let compose_text = std::fs::read_to_string(&case.compose).unwrap();
    kicky_agent::compose::from_str(&compose_text, &case.compose, &case.name, &lookup).unwrap()
}

/// `ours` with what `render` masked because it came from a variable (`environment` aside) taken
/// from the library's render of the same project unmasked: what is compared with docker-compose.
fn unmask(ours: &mut Value, case: &Case) {
    let mut project = library_project(case);
    project.from_variables.clear();
    let unmasked = serde_json::to_value(kicky_agent::compose::to_value(&project)).unwrap();
    fill(ours, &unmasked);
}

fn fill(ours: &mut Value, unmasked: &Value) {
    match ours {
        Value::String(s) if s == MASK => *ours = unmasked.clone(),
        Value::Object(map) => {
            for (key, value) in map {
                fill(value, &unmasked[key.as_str()]);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                fill(item, &unmasked[i]);
            }
        }
        _ => {}
    }
}

/// The environments as the library holds them, values exposed: what the engine will give the
/// containers, to compare with docker-compose's values that `render` masks.
fn environments(case: &Case) -> BTreeMap<String, BTreeMap<String, String>> {
    library_project(case)
        .services
        .iter()
        .map(|(name, s)| {
            let env = s
                .environment
                .iter()
                .map(|(k, v)| (k.clone(), v.value.expose().to_string()))
                .collect();
            (name.clone(), env)
        })
        .collect()
}

/// The golden file's text: the case directory written as `@CASE@`, so it holds on any checkout.
fn golden(case: &Case, yaml: &str) -> String {
    yaml.replace(&case.dir.display().to_string(), "@CASE@")
}

#[test]
fn render_matches_docker_compose_config_on_every_case() {
    let mut failures = Vec::new();
    for case in cases() {
        let ours = render_json(&case);

        let out = agent(&case.name, &case.compose, &case.env_file, &["render"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let raw_yaml = String::from_utf8(out.stdout).unwrap();
        let yaml = golden(&case, &raw_yaml);
        let expected_path = case.dir.join("render.yaml");
        if std::env::var_os("KICKY_BLESS").is_some() {
            std::fs::write(&expected_path, &yaml).unwrap();
        }
        let expected = std::fs::read_to_string(&expected_path).ok();
        if expected.as_deref() != Some(yaml.as_str()) && !(own_corpus() && expected.is_none()) {
            failures.push(format!(
                "case {}: render differs from {}:\n{yaml}",
                case.name,
                expected_path.display()
            ));
        }
        // The YAML and the JSON say the same.
        let from_yaml: Value = serde_norway::from_str(&raw_yaml).unwrap();
        if from_yaml != ours {
            failures.push(format!("case {}: YAML and JSON outputs differ", case.name));
        }

        if case.dir.join("SPEC_ONLY").exists() {
            continue;
        }
        // What render masked, as the library holds it: docker-compose must agree with that too.
        let mut ours = ours;
        unmask(&mut ours, &case);
        let mut theirs = normalize_v1(docker_compose(&case), &case.name);
        let real = environments(&case);
        for (service, env) in theirs["services"].as_object_mut().unwrap() {
            let Some(Value::Object(env)) = env.get_mut("environment") else {
                continue;
            };
            for (key, value) in env.iter_mut() {
                let ours_value = &ours["services"][service]["environment"][key];
                if ours_value == MASK {
                    // render masks it: compare the value the library holds instead ($$ is how
                    // docker-compose prints a $).
                    let held = real[service].get(key).cloned().unwrap_or_default();
                    let printed = value.as_str().unwrap_or_default().replace("$$", "$");
                    if held != printed {
                        failures.push(format!("case {}: {service}.environment.{key}: the agent holds a different value", case.name));
                    }
                    *value = json!(MASK);
                }
            }
        }
        let mut diffs = Vec::new();
        differences("", &ours, &theirs, &mut diffs);
        for diff in diffs {
            failures.push(format!("case {}: {diff}", case.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `# expect: LINE: TEXT` lines at the top of a broken file: what the agent must report.
fn expectations(text: &str) -> Vec<(usize, String)> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# expect: "))
        .map(|e| {
            let (line, message) = e.split_once(": ").unwrap();
            (line.parse().unwrap(), message.to_string())
        })
        .collect()
}

#[test]
fn broken_files_fail_with_the_key_and_line_named() {
    let dir = corpus().join("errors");
    let env_file = dir.join(".env");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    files.sort();
    assert!(
        own_corpus() || files.len() >= 10,
        "the error corpus is missing"
    );
    let mut failures = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let expected = expectations(&text);
        assert!(
            !expected.is_empty(),
            "{} has no `# expect:` line",
            file.display()
        );
        for args in [&["render"][..], &["validate"][..]] {
            let out = agent("errors", &file, &env_file, args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            if out.status.code() != Some(2) {
                failures.push(format!(
                    "{} ({args:?}): exit {:?}, not 2: {stderr}",
                    file.display(),
                    out.status.code()
                ));
                continue;
            }
            for (line, message) in &expected {
                let at = format!("{}:{line}:", file.display());
                let found = stderr
                    .lines()
                    .any(|l| l.contains(&at) && l.contains(message.as_str()));
                if !found {
                    failures.push(format!(
                        "{} ({args:?}): no error at line {line} saying {message:?}:\n{stderr}",
                        file.display()
                    ));
                }
            }
            if stderr.contains("errors-SECRET") {
                failures.push(format!("{}: a secret was printed", file.display()));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The built-in webapp case, whatever corpus the other tests run on.
fn webapp() -> Case {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compose/webapp-db-cache");
    Case {
        name: "webapp-db-cache".to_string(),
        compose: dir.join("docker-compose.yml"),
        env_file: dir.join(".env"),
        dir,
    }
}

#[test]
fn validate_checks_the_compose_file_when_present() {
    let case = webapp();
    let out = agent(&case.name, &case.compose, &case.env_file, &["validate"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("compose file is valid") && stdout.contains("3 services: db, cache, web"),
        "{stdout}"
    );

    let missing = case.dir.join("not-fetched-yet.yml");
    let out = agent(&case.name, &missing, &case.env_file, &["validate"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("is not there yet"));
    let out = agent(&case.name, &missing, &case.env_file, &["render"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
}

#[test]
fn warnings_name_the_line_and_never_stop_the_render() {
    let case = webapp();
    let out = agent(&case.name, &case.compose, &case.env_file, &["render"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success());
    assert!(
        stderr.contains(&format!(
            "{}:2:1: version: `version` is obsolete",
            case.compose.display()
        )),
        "{stderr}"
    );
}

/// `render` masks every scalar that came from a variable, wherever the compose file puts it (the
/// image tag, `command`, `entrypoint`, `healthcheck.test`, `logging.options`, `labels` in both
/// forms, `ports`, `extra_hosts`, `environment`), short values included, in YAML and JSON alike;
/// what the file spells out is shown as it is.
#[test]
fn render_masks_every_value_that_came_from_a_variable() {
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join(".env");
    std::fs::write(
        &env_file,
        "TAG=v1-7c4e2a9f\nDB_PASSWORD=pw-render-5d8e1b\nLOG_TOKEN=logtok-3a9f6c\nOWNER=team-7f2c91\n\
         HOST_IP=10.91.82.73\nPORT=8\nWHO=me\nMEMORY=64m\nTZ=Asia/Seoul\n",
    )
    .unwrap();
    let compose = dir.path().join("docker-compose.yml");
    std::fs::write(
        &compose,
        r#"services:
  web:
    image: registry.example/app:${TAG}
    command: ["serve", "--db", "postgres://app:${DB_PASSWORD}@db"]
    entrypoint: /bin/sh -c "exec app --token ${LOG_TOKEN}"
    healthcheck:
      test: ["CMD", "check", "--password=${DB_PASSWORD}"]
      interval: 10s
    logging:
      driver: syslog
      options:
        tag: app-${OWNER}
        syslog-address: tcp://logs.example:514
    labels:
      - owner=${OWNER}
      - tier=frontend
    ports:
      - "${PORT}:80"
      - "9090:90"
    extra_hosts:
      db: ${HOST_IP}
      cache: 10.0.0.9
    user: ${WHO}
    mem_limit: ${MEMORY}
    environment:
      LITERAL: plain-value
      SECRET: ${DB_PASSWORD}
      TZ: Asia/Seoul
  worker:
    image: registry.example/worker:stable-2
    command: worker --queue jobs
    labels:
      team: ${OWNER}
      kind: batch
"#,
    )
    .unwrap();
    let values = [
        "v1-7c4e2a9f",
        "pw-render-5d8e1b",
        "logtok-3a9f6c",
        "team-7f2c91",
        "10.91.82.73",
    ];
    let yaml = agent("masked", &compose, &env_file, &["-vvv", "render"]);
    let json = agent("masked", &compose, &env_file, &["-vvv", "render", "--json"]);
    for out in [&yaml, &json] {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let all = [
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        ]
        .concat();
        for (i, value) in values.iter().enumerate() {
            assert!(!all.contains(value), "value #{i} was printed");
        }
    }
    let from_yaml: Value = serde_norway::from_slice(&yaml.stdout).unwrap();
    let from_json: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(from_yaml, from_json, "YAML and JSON say the same");
    let web = &from_json["services"]["web"];
    let worker = &from_json["services"]["worker"];
    let masked = [
        &web["image"],
        &web["command"][2],
        &web["entrypoint"],
        &web["healthcheck"]["test"][2],
        &web["logging"]["options"]["tag"],
        &web["labels"]["owner"],
        &web["ports"][0],
        &web["extra_hosts"][0],
        &web["user"],
        &web["mem_limit"],
        &web["environment"]["SECRET"],
        &worker["labels"]["team"],
    ];
    for (i, value) in masked.iter().enumerate() {
        assert_eq!(**value, json!(MASK), "masked field #{i}");
    }
    let shown = [
        (&web["command"][0], json!("serve")),
        (&web["command"][1], json!("--db")),
        (&web["healthcheck"]["test"][0], json!("CMD")),
        (&web["healthcheck"]["test"][1], json!("check")),
        (&web["healthcheck"]["interval"], json!("10s")),
        (&web["logging"]["driver"], json!("syslog")),
        (
            &web["logging"]["options"]["syslog-address"],
            json!("tcp://logs.example:514"),
        ),
        (&web["labels"]["tier"], json!("frontend")),
        (&web["ports"][1]["published"], json!("9090")),
        (&web["ports"][1]["target"], json!(90)),
        (&web["extra_hosts"][1], json!("cache:10.0.0.9")),
        (&web["environment"]["LITERAL"], json!("plain-value")),
        // Spelled out by the file, it is no secret, whatever value of the env file equals it.
        (&web["environment"]["TZ"], json!("Asia/Seoul")),
        (&worker["image"], json!("registry.example/worker:stable-2")),
        (&worker["command"], json!(["worker", "--queue", "jobs"])),
        (&worker["labels"]["kind"], json!("batch")),
    ];
    for (value, want) in shown {
        assert_eq!(*value, want);
    }
}
