//! Loading whole compose files: every form, compose's normalization, and every error located at
//! its line.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;
use crate::error::exit_status;

fn vars(name: &str) -> Option<String> {
    match name {
        "TAG" => Some("1.2".into()),
        "HOST" => Some("db.internal".into()),
        "EMPTY" => Some(String::new()),
        "PASSWORD" => Some("hunter2".into()),
        "PORT" => Some("8080".into()),
        "BAD_PORT" => Some("hunter2".into()),
        _ => None,
    }
}

const FILE: &str = "/srv/app/docker-compose.yml";

fn load_with(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Project> {
    from_str(text, Path::new(FILE), "proj", lookup)
}

fn load(text: &str) -> Project {
    load_with(text, &vars).unwrap_or_else(|e| panic!("{e:#}"))
}

/// The error of a file that must not load: exit 2, the message.
fn error(text: &str) -> String {
    let err = load_with(text, &vars).expect_err("the file should be refused");
    assert_eq!(exit_status(&err), 2, "{err:#}");
    let message = format!("{err:#}");
    assert!(
        !message.contains("hunter2"),
        "a value was printed: {message}"
    );
    message
}

/// Asserts that the error names `path` at `line` with `text`.
fn assert_error(message: &str, line: usize, path: &str, text: &str) {
    let at = format!("{FILE}:{line}:");
    let found = message
        .lines()
        .any(|l| l.contains(&at) && l.contains(&format!("{path}: ")) && l.contains(text));
    assert!(found, "expected `{at}… {path}: {text}` in:\n{message}");
}

fn one(text: &str) -> Service {
    load(text).services.shift_remove_index(0).unwrap().1
}

fn env_of(service: &Service) -> Vec<(String, String, EnvOrigin)> {
    service
        .environment
        .iter()
        .map(|(k, v)| (k.clone(), v.value.expose().to_string(), v.origin))
        .collect()
}

#[test]
fn every_interpolation_form() {
    let s = one(
        "services:\n  web:\n    image: busybox\n    command:\n\
         \x20     - $TAG\n      - ${TAG}\n      - ${NOPE:-def}\n      - ${EMPTY:-def}\n\
         \x20     - ${NOPE-def}\n      - ${EMPTY-def}\n      - ${TAG:?x}\n      - ${EMPTY?x}\n\
         \x20     - ${TAG:+alt}\n      - ${EMPTY:+alt}\n      - ${TAG+alt}\n      - ${EMPTY+alt}\n\
         \x20     - ${NOPE+alt}\n      - $$TAG\n      - $${TAG}\n      - ${NOPE:-${ALSO:-${HOST}}}\n\
         \x20     - a${NOPE}b\n      - cost 5$\n",
    );
    assert_eq!(
        s.command.unwrap(),
        [
            "1.2",
            "1.2",
            "def",
            "def",
            "def",
            "",
            "1.2",
            "",
            "alt",
            "",
            "alt",
            "alt",
            "",
            "$TAG",
            "${TAG}",
            "db.internal",
            "ab",
            "cost 5$"
        ]
    );
}

#[test]
fn interpolation_reaches_every_value_but_no_key() {
    let p = load(
        "x-port: &port \"${PORT}:80\"\nservices:\n  web:\n    image: app:${TAG}\n    ports: [*port]\n\
         \x20   labels:\n      $$KEY: ${HOST}\n    environment:\n      ${NOT_A_VARIABLE}: x\n",
    );
    let web = &p.services["web"];
    assert_eq!(web.image, "app:1.2");
    assert_eq!(web.ports[0].published, Some(PortRange::single(8080)));
    assert_eq!(web.labels["$$KEY"], "db.internal");
    assert!(web.environment.contains_key("${NOT_A_VARIABLE}"));
}

#[test]
fn a_missing_required_variable_names_it_and_the_line() {
    let message = error(
        "services:\n  db:\n    image: postgres\n    environment:\n      P: ${PASSWORD}\n      T: ${API_TOKEN:?set it in SSM}\n",
    );
    assert_error(
        &message,
        6,
        "services.db.environment.T",
        "required variable API_TOKEN is missing a value: set it in SSM",
    );
    let message = error("services:\n  db:\n    image: ${EMPTY?ok}${REGISTRY?}/postgres\n");
    assert_error(
        &message,
        3,
        "services.db.image",
        "required variable REGISTRY is missing a value",
    );
    let message = error("services:\n  db:\n    image: x\n    command: [\"${oops\"]\n");
    assert_error(&message, 4, "services.db.command[0]", "without a closing");
    let message = error("services:\n  db:\n    image: x\n    user: ${1A}\n");
    assert_error(
        &message,
        4,
        "services.db.user",
        "invalid interpolation format",
    );
}

#[test]
fn environment_env_files_first_then_environment() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.env"),
        "A=from-a\nSHARED=from-a\nREF=${HOST}:5432\nINHERITED_BARE\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("b.env"),
        "SHARED=from-b\nB=${A}-b\nDROPPED=from-b\n",
    )
    .unwrap();
    let file = dir.path().join("docker-compose.yml");
    let text = "services:\n  web:\n    image: x\n    env_file:\n      - a.env\n      - path: ./b.env\n        required: true\n\
                \x20     - path: ./absent.env\n        required: false\n    environment:\n\
                \x20     - SHARED=from-environment\n      - TAG\n      - DROPPED\n      - LITERAL=$$HOST\n\
                \x20     - FROM_VAR=${PASSWORD}\n      - EMPTY_VALUE=\n";
    let lookup = |name: &str| match name {
        "INHERITED_BARE" => Some("inherited".to_string()),
        other => vars(other),
    };
    let project = from_str(text, &file, "proj", &lookup).unwrap();
    let env = env_of(&project.services["web"]);
    use EnvOrigin::*;
    let expected: Vec<(String, String, EnvOrigin)> = [
        ("A", "from-a", EnvFile),
        ("SHARED", "from-environment", Literal),
        ("REF", "db.internal:5432", EnvFile),
        ("INHERITED_BARE", "inherited", EnvFile),
        ("B", "from-a-b", EnvFile),
        ("TAG", "1.2", Inherited),
        ("LITERAL", "$HOST", Literal),
        ("FROM_VAR", "hunter2", Interpolated),
        ("EMPTY_VALUE", "", Literal),
    ]
    .iter()
    .map(|(k, v, o)| (k.to_string(), v.to_string(), *o))
    .collect();
    assert_eq!(env, expected);

    let text = "services:\n  web:\n    image: x\n    env_file: missing.env\n";
    let err = from_str(text, &file, "proj", &vars).unwrap_err();
    assert!(
        format!("{err:#}").contains(":4:5: services.web.env_file: env file"),
        "{err:#}"
    );
    std::fs::write(
        dir.path().join("broken.env"),
        "OK=1\nhunter2 is not a line\n",
    )
    .unwrap();
    let text = "services:\n  web:\n    image: x\n    env_file: [broken.env]\n";
    let err = format!("{:#}", from_str(text, &file, "proj", &vars).unwrap_err());
    assert!(
        err.contains("services.web.env_file[0]: env file") && err.contains("line 2"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn environment_map_form_and_bare_keys() {
    let s = one("services:\n  web:\n    image: x\n    environment:\n      N: 5\n      B: true\n      TAG:\n      NOPE: null\n      S: ${HOST}\n");
    let env = env_of(&s);
    assert_eq!(
        env,
        [
            ("N".to_string(), "5".to_string(), EnvOrigin::Literal),
            ("B".to_string(), "true".to_string(), EnvOrigin::Literal),
            ("TAG".to_string(), "1.2".to_string(), EnvOrigin::Inherited),
            (
                "S".to_string(),
                "db.internal".to_string(),
                EnvOrigin::Interpolated
            ),
        ]
    );
}

#[test]
fn shell_operators_outside_quotes_are_refused_in_string_commands() {
    for (key, text, operator) in [
        ("command", "npm run migrate && npm start", "&&"),
        ("command", "a; b", ";"),
        ("command", "a || b", "||"),
        ("command", "a | b", "|"),
        ("command", "a > out", ">"),
        ("command", "a<in", "<"),
        ("command", "a & b", "&"),
        ("command", "a (b)", "("),
        ("entrypoint", "run.sh && serve", "&&"),
        ("command", "echo 'a' ; b", ";"),
    ] {
        let message = error(&format!(
            "services:\n  w:\n    image: x\n    {key}: {text}\n"
        ));
        assert_error(
            &message,
            4,
            &format!("services.w.{key}"),
            &format!("shell operator `{operator}` outside quotes"),
        );
        assert!(message.contains(r#"["sh", "-c", "#), "{text}: {message}");
    }
    // Quoted or escaped, an operator is an argument, as compose passes it.
    for (text, words) in [
        ("echo 'a;b'", vec!["echo", "a;b"]),
        ("echo \"x && y\"", vec!["echo", "x && y"]),
        ("echo a\\;b", vec!["echo", "a;b"]),
        ("sh -c 'a | b > c'", vec!["sh", "-c", "a | b > c"]),
    ] {
        let s = one(&format!(
            "services:\n  w:\n    image: x\n    command: {text}\n"
        ));
        assert_eq!(s.command.unwrap(), words, "{text}");
    }
    // A list is passed as it is.
    let s = one("services:\n  w:\n    image: x\n    command: [\"a\", \"&&\", \"b\"]\n");
    assert_eq!(s.command.unwrap(), ["a", "&&", "b"]);
}

#[test]
fn two_mounts_on_one_container_path_keep_the_last_as_compose_does() {
    let s = one(
        "services:\n  w:\n    image: x\n    volumes:\n      - /srv/a:/data\n      - /srv/c:/other\n\
         \x20     - /srv/b:/data:ro\n      - type: tmpfs\n        target: /other/\n",
    );
    let mounts: Vec<_> = s
        .volumes
        .iter()
        .map(|m| (m.kind, m.source.as_deref(), m.target.as_str(), m.read_only))
        .collect();
    assert_eq!(
        mounts,
        [
            (MountKind::Bind, Some("/srv/b"), "/data", true),
            (MountKind::Tmpfs, None, "/other", false),
        ]
    );
}

#[test]
fn command_and_entrypoint_split_with_shell_rules() {
    let s = one("services:\n  w:\n    image: x\n    command: sh -c 'echo \"a b\" $$HOME'\n    entrypoint: [\"/bin/tini\", \"--\"]\n");
    assert_eq!(s.command.unwrap(), ["sh", "-c", "echo \"a b\" $HOME"]);
    assert_eq!(s.entrypoint.unwrap(), ["/bin/tini", "--"]);
    let message = error("services:\n  w:\n    image: x\n    command: echo 'unclosed\n");
    assert_error(&message, 4, "services.w.command", "a quote is not closed");
}

#[test]
fn ports_short_and_long() {
    let port = |host_ip: Option<&str>,
                published: Option<(u16, u16)>,
                target: u16,
                protocol: Protocol| Port {
        host_ip: host_ip.map(str::to_string),
        published: published.map(|(start, end)| PortRange { start, end }),
        target,
        protocol,
        mode: PortMode::Ingress,
    };
    use Protocol::*;
    assert_eq!(parse::port_spec("80").unwrap(), [port(None, None, 80, Tcp)]);
    assert_eq!(
        parse::port_spec("8080:80").unwrap(),
        [port(None, Some((8080, 8080)), 80, Tcp)]
    );
    assert_eq!(
        parse::port_spec("127.0.0.1:53:53/udp").unwrap(),
        [port(Some("127.0.0.1"), Some((53, 53)), 53, Udp)]
    );
    assert_eq!(
        parse::port_spec("127.0.0.1::80").unwrap(),
        [port(Some("127.0.0.1"), None, 80, Tcp)]
    );
    assert_eq!(
        parse::port_spec("[::1]:80:80").unwrap(),
        [port(Some("::1"), Some((80, 80)), 80, Tcp)]
    );
    assert_eq!(
        parse::port_spec("::1:80:80").unwrap(),
        [port(Some("::1"), Some((80, 80)), 80, Tcp)]
    );
    assert_eq!(
        parse::port_spec("9000-9001:8000-8001/sctp").unwrap(),
        [
            port(None, Some((9000, 9000)), 8000, Sctp),
            port(None, Some((9001, 9001)), 8001, Sctp)
        ]
    );
    assert_eq!(
        parse::port_spec("3000-3001").unwrap(),
        [port(None, None, 3000, Tcp), port(None, None, 3001, Tcp)]
    );
    assert_eq!(
        parse::port_spec("5000-5010:80").unwrap(),
        [port(None, Some((5000, 5010)), 80, Tcp)]
    );
    for bad in [
        "",
        "x",
        "0",
        "70000",
        "80:80/icmp",
        "1-2:3-5",
        "5-3",
        "a:b:c:d",
        "[::1:80",
    ] {
        assert!(parse::port_spec(bad).is_err(), "{bad}");
    }

    let s = one(
        "services:\n  w:\n    image: x\n    ports:\n      - 8000\n      - target: 80\n        published: \"8080\"\n\
         \x20       host_ip: 0.0.0.0\n        protocol: udp\n        mode: host\n      - target: 81\n        published: 9000-9001\n",
    );
    assert_eq!(s.ports.len(), 3);
    assert_eq!(s.ports[0], port(None, None, 8000, Tcp));
    assert_eq!(
        s.ports[1],
        Port {
            mode: PortMode::Host,
            ..port(Some("0.0.0.0"), Some((8080, 8080)), 80, Udp)
        }
    );
    assert_eq!(
        s.ports[2].published,
        Some(PortRange {
            start: 9000,
            end: 9001
        })
    );

    let message = error("services:\n  w:\n    image: x\n    ports:\n      - \"${BAD_PORT}:80\"\n      - target: 80\n        name: web\n      - published: 80\n");
    assert_error(
        &message,
        5,
        "services.w.ports[0]",
        "invalid port (a value from a variable, not shown)",
    );
    assert_error(
        &message,
        7,
        "services.w.ports[1].name",
        "unsupported key `name` in a port",
    );
    assert_error(
        &message,
        8,
        "services.w.ports[2]",
        "a port needs a `target`",
    );
}

#[test]
fn volumes_short_and_long() {
    let p = load(
        "services:\n  w:\n    image: x\n    volumes:\n      - ./conf:/conf:ro\n      - ../shared/./x/..:/shared\n\
         \x20     - /abs:/abs:rw\n      - data:/data:nocopy\n      - /anon\n      - type: volume\n        source: data\n\
         \x20       target: /long\n        read_only: true\n        volume:\n          nocopy: true\n\
         \x20     - type: bind\n        source: rel\n        target: /rel\n        bind:\n          create_host_path: true\n\
         \x20     - type: tmpfs\n        target: /tmp\n        tmpfs:\n          size: 64m\n      - /:/rootfs:ro,rslave\n\
         \x20     - type: bind\n        source: /mnt\n        target: /mnt\n        bind:\n          propagation: shared\n\
         \x20     - type: bind\n        source: /bare\n        target: /bare\nvolumes:\n  data:\n",
    );
    let v = &p.services["w"].volumes;
    let mount = |kind, source: Option<&str>, target: &str| Mount {
        kind,
        source: source.map(str::to_string),
        target: target.to_string(),
        read_only: false,
        create_host_path: kind == MountKind::Bind,
        create_host_path_written: kind == MountKind::Bind,
        options_section: true,
        propagation: None,
        nocopy: false,
        tmpfs_size: None,
        selinux: None,
    };
    use MountKind::*;
    assert_eq!(
        v[0],
        Mount {
            read_only: true,
            ..mount(Bind, Some("/srv/app/conf"), "/conf")
        }
    );
    assert_eq!(v[1], mount(Bind, Some("/srv/shared"), "/shared"));
    assert_eq!(v[2], mount(Bind, Some("/abs"), "/abs"));
    assert_eq!(
        v[3],
        Mount {
            nocopy: true,
            ..mount(Volume, Some("data"), "/data")
        }
    );
    assert_eq!(v[4], mount(Volume, None, "/anon"));
    assert_eq!(
        v[5],
        Mount {
            read_only: true,
            nocopy: true,
            ..mount(Volume, Some("data"), "/long")
        }
    );
    assert_eq!(v[6], mount(Bind, Some("/srv/app/rel"), "/rel"));
    assert_eq!(
        v[7],
        Mount {
            tmpfs_size: Some(64 << 20),
            ..mount(Tmpfs, None, "/tmp")
        }
    );
    assert_eq!(
        v[8],
        Mount {
            read_only: true,
            propagation: Some("rslave".into()),
            ..mount(Bind, Some("/"), "/rootfs")
        }
    );
    // The long syntax creates a missing host path too, unless told not to (compose-go's
    // default but in 2.40, which held it false and refused the missing path); what compose
    // 2.40 prints and hashes (`create_host_path_written`) follows the file.
    assert_eq!(
        v[9],
        Mount {
            create_host_path_written: false,
            propagation: Some("shared".into()),
            ..mount(Bind, Some("/mnt"), "/mnt")
        }
    );
    assert_eq!(
        v[10],
        Mount {
            options_section: false,
            create_host_path_written: false,
            ..mount(Bind, Some("/bare"), "/bare")
        }
    );

    let message = error(
        "services:\n  w:\n    image: x\n    volumes:\n      - data:/a:z\n      - ./b:relative\n      - type: npipe\n        target: /x\n\
         \x20     - type: bind\n        target: /y\n      - type: volume\n        target: /z\n        bind:\n          create_host_path: true\n",
    );
    assert_error(
        &message,
        5,
        "services.w.volumes[0]",
        "SELinux relabelling (:z, :Z) applies to a host path",
    );
    assert_error(
        &message,
        6,
        "services.w.volumes[1]",
        "the target must be an absolute path",
    );
    assert_error(
        &message,
        7,
        "services.w.volumes[2].type",
        "volume type `npipe` is not supported",
    );
    assert_error(
        &message,
        9,
        "services.w.volumes[3]",
        "a bind mount needs a `source`",
    );
    assert_error(
        &message,
        13,
        "services.w.volumes[4].bind",
        "`bind` options do not apply to a volume mount",
    );
}

#[test]
fn networks_and_the_default_network() {
    let p = load(
        "services:\n  a:\n    image: x\n  b:\n    image: x\n    networks:\n      back:\n        aliases: [db]\n      front:\n\
         networks:\n  back:\n    driver: bridge\n    internal: true\n  front:\n    name: shared-front\n  ext:\n    external: true\n\
         \x20 legacy:\n    external:\n      name: old-name\n",
    );
    assert_eq!(
        p.services["a"].networks.keys().collect::<Vec<_>>(),
        ["default"]
    );
    assert_eq!(p.services["b"].networks["back"].aliases, ["db"]);
    let names: Vec<(&str, &str)> = p
        .networks
        .iter()
        .map(|(k, n)| (k.as_str(), n.name.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("back", "proj_back"),
            ("front", "shared-front"),
            ("ext", "ext"),
            ("legacy", "old-name"),
            ("default", "proj_default")
        ]
    );
    assert!(
        p.networks["back"].internal && p.networks["ext"].external && !p.networks["back"].external
    );

    let p = load("services:\n  a:\n    image: x\n    networks: [net]\nnetworks:\n  net:\n");
    assert!(
        !p.networks.contains_key("default"),
        "no service is on default"
    );
}

#[test]
fn healthchecks() {
    let hc = |yaml: &str| {
        one(&format!(
            "services:\n  w:\n    image: x\n    healthcheck:\n{yaml}"
        ))
        .healthcheck
        .unwrap()
    };
    let h = hc("      test: curl -f http://localhost/\n      interval: 1m30s\n      timeout: 10s\n      retries: 3\n      start_period: 40s\n");
    assert_eq!(h.test, ["CMD-SHELL", "curl -f http://localhost/"]);
    assert_eq!(h.interval, Some(Duration::from_secs(90)));
    assert_eq!(h.timeout, Some(Duration::from_secs(10)));
    assert_eq!(h.retries, Some(3));
    assert_eq!(h.start_period, Some(Duration::from_secs(40)));
    assert_eq!(
        hc("      test: [CMD, pg_isready, -U, app]\n").test,
        ["CMD", "pg_isready", "-U", "app"]
    );
    assert_eq!(
        hc("      test: [\"CMD-SHELL\", \"exit 0\"]\n").test,
        ["CMD-SHELL", "exit 0"]
    );
    assert!(hc("      test: [NONE]\n").is_disabled());
    let disabled = hc("      disable: true\n      interval: 5s\n");
    assert!(disabled.is_disabled() && disabled.interval.is_none());
    let inherit = hc("      interval: 5s\n");
    assert!(
        inherit.test.is_empty(),
        "no test: the image's own, with this interval"
    );

    let message = error("services:\n  w:\n    image: x\n    healthcheck:\n      test: [curl, x]\n      start_interval: soon\n      retries: -1\n");
    assert_error(
        &message,
        5,
        "services.w.healthcheck.test",
        "a test list starts with CMD, CMD-SHELL or NONE",
    );
    assert_error(&message, 6, "services.w.healthcheck.start_interval", "");
    assert_error(&message, 7, "services.w.healthcheck.retries", "0 or more");
    let s = one("services:\n  w:\n    image: x\n    healthcheck:\n      start_period: 30s\n      start_interval: 2s\n");
    assert_eq!(
        s.healthcheck.unwrap().start_interval,
        Some(Duration::from_secs(2))
    );
}

#[test]
fn depends_on_forms_and_start_order() {
    let p = load(
        "services:\n  web:\n    image: x\n    depends_on:\n      db:\n        condition: service_healthy\n      migrate:\n\
         \x20       condition: service_completed_successfully\n        restart: true\n      optional:\n        condition: service_started\n        required: false\n\
         \x20 migrate:\n    image: x\n    depends_on: [db]\n  db:\n    image: x\n",
    );
    let deps = &p.services["web"].depends_on;
    assert_eq!(deps["db"].condition, Condition::ServiceHealthy);
    assert_eq!(
        deps["migrate"].condition,
        Condition::ServiceCompletedSuccessfully
    );
    assert!(deps["migrate"].restart);
    assert!(
        !deps.contains_key("optional"),
        "an undefined optional dependency is dropped"
    );
    assert_eq!(
        p.services["migrate"].depends_on["db"].condition,
        Condition::ServiceStarted
    );
    assert_eq!(p.start_order(), ["db", "migrate", "web"]);

    let message = error("services:\n  a:\n    image: x\n    depends_on:\n      b:\n        condition: service_ready\n  b:\n    image: x\n");
    assert_error(
        &message,
        6,
        "services.a.depends_on.b.condition",
        "the condition must be",
    );
}

#[test]
fn other_service_fields() {
    let s = one(
        "services:\n  w:\n    image: x\n    container_name: c\n    restart: on-failure:3\n    labels: [a=1, b]\n\
         \x20   user: 1000\n    working_dir: /app\n    hostname: h\n    extra_hosts: [\"gw:10.0.0.1\", \"v6=::1\"]\n\
         \x20   logging:\n      driver: json-file\n      options:\n        max-file: 3\n\
         \x20   ulimits:\n      nproc: 100\n      nofile: {soft: 1, hard: 2}\n    mem_limit: 1.5g\n    shm_size: 1024\n\
         \x20   cpus: \"0.5\"\n    init: true\n    stop_signal: SIGINT\n    stop_grace_period: 1m\n    tmpfs: /run\n\
         \x20   cap_add: [NET_ADMIN]\n    cap_drop: [ALL]\n    read_only: true\n    sysctls:\n      net.core.somaxconn: 1024\n\
         \x20   dns: 1.1.1.1\n    pull_policy: if_not_present\n    x-anything: {ignored: true}\n",
    );
    assert_eq!(s.container_name.as_deref(), Some("c"));
    assert_eq!(
        s.restart,
        Some(Restart::OnFailure {
            max_retries: Some(3)
        })
    );
    assert_eq!(s.labels["a"], "1");
    assert_eq!(s.labels["b"], "");
    assert_eq!(s.user.as_deref(), Some("1000"));
    assert_eq!(
        s.extra_hosts,
        [
            ExtraHost {
                host: "gw".into(),
                ip: "10.0.0.1".into()
            },
            ExtraHost {
                host: "v6".into(),
                ip: "::1".into()
            }
        ]
    );
    let logging = s.logging.unwrap();
    assert_eq!(logging.driver.as_deref(), Some("json-file"));
    assert_eq!(logging.options["max-file"], "3");
    assert_eq!(
        s.ulimits["nproc"],
        Ulimit {
            soft: 100,
            hard: 100,
            single: true,
        }
    );
    assert_eq!(
        s.ulimits["nofile"],
        Ulimit {
            soft: 1,
            hard: 2,
            single: false,
        }
    );
    assert_eq!(s.mem_limit, Some(3 << 29));
    assert_eq!(s.shm_size, Some(1024));
    assert_eq!(s.cpus, Some(0.5));
    assert_eq!(s.init, Some(true));
    assert_eq!(s.stop_grace_period, Some(Duration::from_secs(60)));
    assert_eq!(s.tmpfs, ["/run"]);
    assert_eq!(s.read_only, Some(true));
    assert_eq!(s.sysctls["net.core.somaxconn"], "1024");
    assert_eq!(s.dns, ["1.1.1.1"]);
    assert_eq!(s.pull_policy, Some(PullPolicy::Missing));
    let cast = |n: &str| match n {
        "INIT" => Some("true".to_string()),
        "RO" => Some("off".to_string()),
        other => vars(other),
    };
    let p = load_with(
        "services:\n  w:\n    image: x\n    init: ${INIT}\n    read_only: ${RO}\n    cpus: ${TAG}\n    healthcheck:\n      retries: \"${NOPE:-3}\"\n",
        &cast,
    );
    let p = p.unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(
        (p.services["w"].init, p.services["w"].read_only),
        (Some(true), Some(false))
    );
    assert_eq!(p.services["w"].cpus, Some(1.2));
    let message = error(
        "services:\n  w:\n    image: x\n    init: maybe\n    healthcheck:\n      retries: ${TAG}\n",
    );
    assert_error(
        &message,
        4,
        "services.w.init",
        "expected true or false, found a string",
    );
    assert_error(
        &message,
        6,
        "services.w.healthcheck.retries",
        "expected a whole number",
    );
    assert_eq!(
        one("services:\n  w:\n    image: x\n    restart: \"no\"\n").restart,
        Some(Restart::No)
    );
}

#[test]
fn anchors_and_merge_keys() {
    let p = load(
        "x-common: &common\n  restart: always\n  labels:\n    team: shop\nx-env: &env\n  A: \"1\"\n\
         services:\n  a:\n    <<: *common\n    image: a\n  b:\n    <<: [*common]\n    image: b\n    restart: \"no\"\n    environment: *env\n",
    );
    assert_eq!(p.services["a"].restart, Some(Restart::Always));
    assert_eq!(p.services["a"].labels["team"], "shop");
    assert_eq!(
        p.services["b"].restart,
        Some(Restart::No),
        "a key of the service wins over the merge"
    );
    assert_eq!(p.services["b"].environment["A"].value.expose(), "1");
}

#[test]
fn profiles_leave_services_out_unless_active() {
    let text = "services:\n  app:\n    image: x\n  debug:\n    image: x\n    profiles: [debug]\n  tools:\n    image: x\n    profiles: [tools, ops]\n";
    let names = |lookup: &dyn Fn(&str) -> Option<String>| -> Vec<String> {
        load_with(text, lookup)
            .unwrap()
            .services
            .keys()
            .cloned()
            .collect()
    };
    assert_eq!(names(&vars), ["app"]);
    assert_eq!(
        names(&|n: &str| (n == "COMPOSE_PROFILES").then(|| "ops".to_string())),
        ["app", "tools"]
    );
    assert_eq!(
        names(&|n: &str| (n == "COMPOSE_PROFILES").then(|| "*".to_string())),
        ["app", "debug", "tools"]
    );

    let message = error("services:\n  app:\n    image: x\n    depends_on: [debug]\n  debug:\n    image: x\n    profiles: [debug]\n");
    assert_error(
        &message,
        4,
        "services.app.depends_on[0]",
        "which its `profiles` leave out",
    );
}

#[test]
fn unsupported_keys_name_the_key_the_service_and_the_line() {
    let message = error(
        "version: \"3.8\"\nservices:\n  web:\n    image: x\n    build: .\n    x-ok: 1\n    deploy:\n      replicas: 2\n\
         \x20   networks:\n      front:\n        ipv4_address: 10.0.0.2\n        interface_name: eth1\nnetworks:\n  front:\n    bogus: true\nconfigs:\n  c: {}\n",
    );
    assert_error(
        &message,
        5,
        "services.web.build",
        "unsupported key `build` in service web: kicky-agent runs prebuilt images",
    );
    assert_error(
        &message,
        8,
        "services.web.deploy.replicas",
        "replicas must be 1",
    );
    assert_error(
        &message,
        12,
        "services.web.networks.front.interface_name",
        "unsupported key `interface_name`",
    );
    assert_error(
        &message,
        15,
        "networks.front.bogus",
        "unsupported key `bogus` in network front",
    );
    assert_error(
        &message,
        16,
        "configs",
        "unsupported key `configs` in the compose file's top level",
    );
    assert!(message.starts_with("5 problems:"), "{message}");
    assert!(
        !message.contains("version"),
        "version is a warning: {message}"
    );

    // A key merged in from an anchor is pointed at the `<<` that brings it.
    let message = error(
        "x-base: &base\n  volumes_from: [db]\nservices:\n  web:\n    image: x\n    <<: *base\n",
    );
    assert_error(
        &message,
        6,
        "services.web.volumes_from",
        "unsupported key `volumes_from` in service web",
    );

    // Written without a value, an unsupported key is refused all the same.
    let message = error(
        "services:\n  web:\n    image: x\n    volumes_from:\n    command:\nnetworks:\n  n:\n    bogus:\n",
    );
    assert_error(
        &message,
        4,
        "services.web.volumes_from",
        "unsupported key `volumes_from` in service web",
    );
    assert_error(
        &message,
        8,
        "networks.n.bogus",
        "unsupported key `bogus` in network n",
    );
    assert!(!message.contains("command"), "{message}");

    let message = error("services:\n  web:\n    image: x\n    !!binary tag: 1\n");
    assert!(message.contains("services.web"), "{message}");
}

#[test]
fn cross_service_errors() {
    let message = error(
        "services:\n  a:\n    image: x\n    depends_on: [b]\n  b:\n    image: x\n    depends_on:\n      a:\n        condition: service_started\n\
         \x20 c:\n    image: x\n    depends_on: [c]\n",
    );
    assert_error(
        &message,
        8,
        "services.b.depends_on.a",
        "`depends_on` makes a cycle: a -> b -> a",
    );
    assert_error(
        &message,
        12,
        "services.c.depends_on[0]",
        "`depends_on` makes a cycle: c -> c",
    );

    let message = error("services:\n  a:\n    image: x\n    depends_on: [nope]\n");
    assert_error(
        &message,
        4,
        "services.a.depends_on[0]",
        "service a depends on nope, which is not defined",
    );

    let message = error(
        "services:\n  a:\n    image: x\n    networks: [front, missing]\n    volumes:\n      - data:/data\n      - gone:/gone\n\
         volumes:\n  data:\nnetworks:\n  front:\n",
    );
    assert_error(
        &message,
        4,
        "services.a.networks[1]",
        "uses network missing, which the top-level `networks` does not define",
    );
    assert_error(
        &message,
        7,
        "services.a.volumes[1]",
        "uses volume gone, which the top-level `volumes` does not define",
    );

    let message = error("services:\n  a:\n    image: x\n    container_name: app\n  b:\n    image: x\n    container_name: app\n");
    assert_error(
        &message,
        7,
        "services.b.container_name",
        "container name app is also the container name of service a",
    );

    let message = error(
        "services:\n  a:\n    image: x\n    ports: [\"8080:80\", \"127.0.0.1:9000-9010:9000-9010\", \"53:53/udp\"]\n\
         \x20 b:\n    image: x\n    ports:\n      - \"127.0.0.1:8080:80\"\n      - 53:53\n      - \"127.0.0.2:9005:9005\"\n      - target: 1\n        published: 9010-9020\n        host_ip: 127.0.0.1\n",
    );
    assert_error(
        &message,
        8,
        "services.b.ports[0]",
        "host port 8080/tcp is also published by service a (services.a.ports[0])",
    );
    assert_error(
        &message,
        11,
        "services.b.ports[3]",
        "host port 9010-9020/tcp is also published by service a (services.a.ports[1])",
    );
    assert!(
        !message.contains("services.b.ports[1]"),
        "53/tcp and 53/udp do not clash: {message}"
    );
    assert!(
        !message.contains("services.b.ports[2]"),
        "127.0.0.1 and 127.0.0.2 do not clash: {message}"
    );
}

#[test]
fn shape_errors() {
    assert_error(
        &error("services: {}\n"),
        1,
        "services",
        "defines no service",
    );
    let empty = error("");
    assert!(empty.contains("has no `services`"), "{empty}");
    assert!(error("# nothing\nversion: '3'\n").contains("has no `services`"));
    assert_error(
        &error("services:\n  web:\n"),
        2,
        "services.web",
        "service web is empty",
    );
    assert_error(
        &error("services:\n  web:\n    command: [x]\n"),
        2,
        "services.web",
        "has no `image`",
    );
    assert_error(
        &error("services:\n  bad name:\n    image: x\n"),
        2,
        "services.bad name",
        "invalid service name",
    );
    assert_error(
        &error("services:\n  w:\n    image: [x]\n"),
        3,
        "services.w.image",
        "expected a string, found a list",
    );
    assert_error(
        &error("services:\n  w:\n    image: x\n    mem_limit: lots\n"),
        4,
        "services.w.mem_limit",
        "invalid size `lots`",
    );
    assert_error(
        &error("services:\n  w:\n    image: x\n    cpus: many\n"),
        4,
        "services.w.cpus",
        "cpus must be a number",
    );
    assert_error(
        &error("services:\n  w:\n    image: x\n    pull_policy: build\n"),
        4,
        "services.w.pull_policy",
        "not supported",
    );
    let message = error("services:\n  w:\n    image: x\n   bad: indent\n");
    assert!(message.contains(&format!("{FILE}:4:")), "{message}");
    let message = error("services:\n  w:\n    image: x\n    image: y\n");
    assert!(message.contains("duplicate"), "{message}");
}

#[test]
fn harmless_keys_are_warnings() {
    let p = load("version: \"3.9\"\nname: other\nx-top: 1\nservices:\n  w:\n    image: x\n    x-svc: {a: b}\n");
    assert_eq!(p.name, "proj", "the agent's project name wins");
    assert_eq!(p.working_dir, PathBuf::from("/srv/app"));
}

#[test]
fn render_masks_every_value_that_is_not_literal() {
    let p = load(
        "services:\n  w:\n    image: app:${TAG}\n    command: [\"--password=${PASSWORD}\"]\n    environment:\n      LITERAL: plain\n      DOLLAR: a$$b\n\
         \x20     FROM_VAR: ${PASSWORD}\n      DEFAULTED: ${NOPE:-fallback}\n      TAG:\n",
    );
    let value = to_value(&p);
    let env = &value["services"]["w"]["environment"];
    assert_eq!(env["LITERAL"], Value::from("plain"));
    assert_eq!(
        env["DOLLAR"],
        Value::from("a$$b"),
        "printed escaped, as compose does"
    );
    for key in ["FROM_VAR", "DEFAULTED", "TAG"] {
        assert_eq!(env[key], Value::from(MASK), "{key}");
    }
    // Every other field that came from a variable is masked whole, short values included.
    assert_eq!(value["services"]["w"]["image"], Value::from(MASK));
    assert_eq!(value["services"]["w"]["command"][0], Value::from(MASK));
    for text in [to_json(&p), to_yaml(&p)] {
        assert!(!text.contains("hunter2") && !text.contains("1.2"), "{text}");
    }
}

/// A value from a variable is masked where it is printed, whatever shape the file gave it: a
/// string printed as a list or a long form is masked whole; a list printed as a mapping, or a
/// mapping printed as a list, has the scalars that hold the value masked. What the file spells
/// out (and what the agent adds, such as a port's protocol) is printed as it is.
#[test]
fn render_masks_values_from_variables_in_every_shape() {
    let p = load(
        "services:\n  w:\n    image: app\n    entrypoint: sh -c \"run ${TAG}\"\n    command: [serve, \"${PASSWORD}\"]\n\
         \x20   ports: [\"${PORT}:80\", \"9090:90\"]\n    labels: [\"owner=x-${PASSWORD}\", tier=web]\n\
         \x20   extra_hosts: {db: \"${PASSWORD}\", cache: 10.0.0.9}\n    healthcheck:\n      test: [CMD, check, \"${PASSWORD}\"]\n\
         \x20   logging:\n      options: {tag: \"${TAG}\", max-size: 10m}\n",
    );
    let w = &to_value(&p)["services"]["w"];
    let masked = Value::from(MASK);
    assert_eq!(w["entrypoint"], masked, "a string printed as a list");
    assert_eq!(w["ports"][0], masked, "a short port printed long");
    assert_eq!(w["ports"][1]["published"], Value::from("9090"));
    assert_eq!(w["command"][0], Value::from("serve"));
    assert_eq!(w["command"][1], masked);
    assert_eq!(w["labels"]["owner"], masked, "a list printed as a mapping");
    assert_eq!(w["labels"]["tier"], Value::from("web"));
    assert_eq!(w["extra_hosts"][0], masked, "a mapping printed as a list");
    assert_eq!(w["extra_hosts"][1], Value::from("cache=10.0.0.9"));
    assert_eq!(w["healthcheck"]["test"][1], Value::from("check"));
    assert_eq!(w["healthcheck"]["test"][2], masked);
    assert_eq!(w["logging"]["options"]["tag"], masked);
    assert_eq!(w["logging"]["options"]["max-size"], Value::from("10m"));
    assert_eq!(w["image"], Value::from("app"));
}

#[test]
fn render_yaml_reads_back_as_the_same_tree() {
    let p = load(
        "services:\n  web:\n    image: x\n    command: [\"no\", \"on\", \"1:30\", \"0x1F\", \"1e3\", \"-\", \"- x\", \"a: b\", \"#c\", \"\", \"  pad\", \"multi\\nline\", \"tab\\there\", \"quote\\\"s\", \"back\\\\slash\", \"@at\", \"*star\", \"1.5\", \".5\", \"::1\", \"null\", \"~\", \"-jar\", \"8.8.8.8\", \"3000\", \"ünïcødé\"]\n\
         \x20   restart: \"no\"\n    labels:\n      \"yes\": \"true\"\n      \"123\": \"1.0\"\n",
    );
    let yaml = to_yaml(&p);
    let back: Value = serde_norway::from_str(&yaml).unwrap();
    assert_eq!(back, to_value(&p), "{yaml}");
    assert!(yaml.contains("restart: \"no\"\n"), "{yaml}");
    assert!(yaml.contains("      - \"1:30\"\n"), "{yaml}");
    assert!(yaml.contains("      - -jar\n"), "{yaml}");
}

#[test]
fn render_shape_is_compose_v2() {
    let p = load(
        "services:\n  web:\n    image: x\n    ports: [\"127.0.0.1:8080:80\"]\n    volumes: [\"./a:/a:ro\", \"data:/data\"]\n\
         \x20   depends_on: [db]\n    mem_limit: 512m\n    stop_grace_period: 90s\n    ulimits:\n      nofile: {soft: 1, hard: 2}\n      nproc: 5\n\
         \x20 db:\n    image: y\nvolumes:\n  data:\n",
    );
    let yaml = to_yaml(&p);
    let expected = "name: proj
networks:
  default:
    name: proj_default
    ipam: {}
services:
  db:
    command: null
    entrypoint: null
    image: \"y\"
    networks:
      default: null
  web:
    command: null
    depends_on:
      db:
        condition: service_started
        required: true
    entrypoint: null
    image: x
    mem_limit: \"536870912\"
    networks:
      default: null
    ports:
      - mode: ingress
        host_ip: 127.0.0.1
        target: 80
        published: \"8080\"
        protocol: tcp
    stop_grace_period: 1m30s
    ulimits:
      nofile:
        soft: 1
        hard: 2
      nproc: 5
    volumes:
      - type: bind
        source: /srv/app/a
        target: /a
        read_only: true
        bind:
          create_host_path: true
      - type: volume
        source: data
        target: /data
        volume: {}
volumes:
  data:
    name: proj_data
";
    assert_eq!(yaml, expected);
}

#[test]
fn load_reads_the_env_file_then_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let compose = dir.path().join("docker-compose.yml");
    let env_file = dir.path().join(".env");
    std::fs::write(
        &compose,
        "services:\n  w:\n    image: ${KICKY_TEST_IMAGE}:${KICKY_TEST_TAG:-none}\n",
    )
    .unwrap();
    std::fs::write(&env_file, "KICKY_TEST_IMAGE=from-file\n").unwrap();
    let p = load_file(&compose, "proj", Some(&env_file)).unwrap();
    assert_eq!(p.services["w"].image, "from-file:none");
    let p = load_file(&compose, "proj", Some(&dir.path().join("absent.env"))).unwrap();
    assert_eq!(
        p.services["w"].image, ":none",
        "no env file yet: variables are unset"
    );

    std::fs::write(&env_file, "BROKEN='never closed\n").unwrap();
    let err = load_file(&compose, "proj", Some(&env_file)).unwrap_err();
    assert_eq!(exit_status(&err), 2);
    assert!(format!("{err:#}").contains(".env: line 1"), "{err:#}");

    let err = load_file(&dir.path().join("absent.yml"), "proj", None).unwrap_err();
    assert_eq!(exit_status(&err), 2);
    assert!(format!("{err:#}").contains("does not exist"), "{err:#}");
}

/// Forms compose-go reads that the agent once read otherwise (issue 11).
#[test]
fn forms_read_as_compose_go_reads_them() {
    let hosts = |s: &Service| -> Vec<(String, String)> {
        s.extra_hosts
            .iter()
            .map(|h| (h.host.clone(), h.ip.clone()))
            .collect()
    };
    let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
        list.iter()
            .map(|(h, i)| (h.to_string(), i.to_string()))
            .collect()
    };
    let s = one(
        "services:\n  web:\n    image: busybox\n    extra_hosts:\n      - myhost=1.2.3.4\n      - gw:10.0.0.1\n\
         \x20     - multi=10.0.0.2,10.0.0.3\n      - v6=[::1]\n      - v6b:[fe80::1]\n",
    );
    assert_eq!(
        hosts(&s),
        pairs(&[
            ("myhost", "1.2.3.4"),
            ("gw", "10.0.0.1"),
            ("multi", "10.0.0.2"),
            ("multi", "10.0.0.3"),
            ("v6", "::1"),
            ("v6b", "fe80::1"),
        ])
    );
    let s = one("services:\n  web:\n    image: busybox\n    extra_hosts:\n      both: [10.0.0.1, '[::2]']\n");
    assert_eq!(hosts(&s), pairs(&[("both", "10.0.0.1"), ("both", "::2")]));
    let message = error("services:\n  web:\n    image: busybox\n    extra_hosts: ['nohost']\n");
    assert_error(
        &message,
        4,
        "services.web.extra_hosts[0]",
        "invalid extra host",
    );

    // `dns` from an unset variable is no server at all, not an empty one.
    let s = one("services:\n  web:\n    image: busybox\n    dns: ${NOPE}\n");
    assert!(s.dns.is_empty(), "{:?}", s.dns);
    let s = one("services:\n  web:\n    image: busybox\n    dns: [1.1.1.1, '${NOPE}']\n");
    assert_eq!(s.dns, vec!["1.1.1.1".to_string()]);

    // COMPOSE_PROJECT_NAME is the project's name.
    let s = one(
        "services:\n  web:\n    image: busybox\n    labels:\n      p: ${COMPOSE_PROJECT_NAME}\n",
    );
    assert_eq!(s.labels["p"], "proj");
}

/// `~` without a HOME (a systemd unit has none) is refused, never read as a directory named `~`.
#[test]
fn a_tilde_without_home_is_refused() {
    let text = "services:\n  web:\n    image: busybox\n    volumes:\n      - ~/data:/data\n";
    let err = from_str_home(text, Path::new(FILE), "proj", &vars, None).expect_err("refused");
    let message = format!("{err:#}");
    assert!(message.contains("the agent has no HOME"), "{message}");
    assert!(message.contains(&format!("{FILE}:5:")), "{message}");
}

/// The keys compose v2 honours that EC2 applications use (issue 11): read, and rendered as
/// `docker compose config` prints them.
#[test]
fn keys_compose_honours() {
    let text = "\
services:
  web:
    image: x
    expose: [80, '9000/udp', 7000-7001]
    platform: linux/arm64
    stdin_open: true
    tty: true
    privileged: false
    ipc: host
    group_add: [1000, audio]
    security_opt: [no-new-privileges:true]
    dns_search: example.internal
    pids_limit: 100
    mem_reservation: 64m
    memswap_limit: -1
    deploy:
      replicas: 1
      resources:
        limits: { cpus: '0.5', memory: 256M, pids: 50 }
        reservations:
          memory: 128M
          devices: [{ capabilities: [gpu], driver: nvidia, count: all }]
      restart_policy: { condition: on-failure, max_attempts: 3, delay: 5s }
    networks:
      front: { ipv4_address: 10.5.0.9 }
    healthcheck:
      start_period: 30s
      start_interval: 2s
  agent:
    image: x
    network_mode: host
  sidecar:
    image: x
    network_mode: service:web
networks:
  front:
    ipam:
      config: [{ subnet: 10.5.0.0/24, gateway: 10.5.0.1 }]
";
    let project = load(text);
    let web = &project.services["web"];
    assert_eq!(web.expose, ["80/tcp", "9000/udp", "7000/tcp", "7001/tcp"]);
    assert_eq!(web.platform.as_deref(), Some("linux/arm64"));
    assert_eq!(
        (web.flags.stdin_open, web.flags.tty),
        (Some(true), Some(true))
    );
    assert_eq!(web.flags.group_add, ["1000", "audio"]);
    assert_eq!(web.flags.mem_reservation, Some(64 * 1024 * 1024));
    assert_eq!(web.flags.memswap_limit, Some(-1));
    let deploy = web.deploy.as_ref().unwrap();
    assert_eq!(deploy.limits.memory, Some(256 * 1024 * 1024));
    assert_eq!(deploy.reservations.devices[0].count, Some(-1));
    assert_eq!(
        deploy.restart_policy.as_ref().unwrap().max_attempts,
        Some(3)
    );
    assert_eq!(
        web.networks["front"].ipv4_address.as_deref(),
        Some("10.5.0.9")
    );
    assert_eq!(
        project.networks["front"].ipam.as_ref().unwrap().config[0]
            .gateway
            .as_deref(),
        Some("10.5.0.1")
    );
    let agent = &project.services["agent"];
    assert!(
        agent.networks.is_empty(),
        "network_mode: no project network"
    );
    let sidecar = &project.services["sidecar"];
    assert!(
        sidecar.depends_on.contains_key("web"),
        "network_mode: service:web starts after web"
    );
    assert!(
        !project.networks.contains_key("default")
            || project
                .services
                .values()
                .any(|s| s.networks.contains_key("default"))
    );

    let rendered = to_yaml(&project);
    for line in [
        "      - \"80\"",
        "      - 9000/udp",
        "    platform: linux/arm64",
        "    network_mode: host",
        "    network_mode: service:web",
        "    stdin_open: true",
        "        ipv4_address: 10.5.0.9",
        "      start_interval: 2s",
        "        condition: on-failure",
        "        - subnet: 10.5.0.0/24",
    ] {
        assert!(rendered.contains(line), "{line:?} in:\n{rendered}");
    }

    // Both network_mode and networks; an unknown mode.
    let message = error("services:\n  web:\n    image: x\n    network_mode: host\n    networks: [a]\nnetworks:\n  a: {}\n");
    assert_error(
        &message,
        4,
        "services.web.network_mode",
        "exclude each other",
    );
    let message = error("services:\n  web:\n    image: x\n    network_mode: sideways\n");
    assert_error(
        &message,
        4,
        "services.web.network_mode",
        "invalid network_mode",
    );
}

#[test]
fn pull_policies_with_a_period() {
    let policy = |p: &str| {
        one(&format!(
            "services:\n  w:\n    image: x\n    pull_policy: {p}\n"
        ))
        .pull_policy
        .unwrap()
    };
    let hours = |h: u64| PullPolicy::Refresh(Duration::from_secs(h * 3600));
    assert_eq!(policy("daily"), hours(24));
    assert_eq!(policy("weekly"), hours(7 * 24));
    assert_eq!(policy("every_12h"), hours(12));
    assert_eq!(policy("every_2d"), hours(48));
    assert_eq!(policy("every_1w"), hours(7 * 24));
    assert_eq!(
        policy("every_1h30m"),
        PullPolicy::Refresh(Duration::from_secs(5400))
    );
    assert_eq!(policy("refresh"), PullPolicy::Missing);
    assert_eq!(hours(24).spelled(), "daily");
    assert_eq!(hours(12).spelled(), "every_12h");
    // In the units compose reads back (`every_([0-9]+[wdhms])+`), never humantime's `2days`.
    for (text, spelled) in [
        ("every_2d", "every_2d"),
        ("every_48h", "every_2d"),
        ("every_1w3d", "every_1w3d"),
        ("every_14d", "every_2w"),
        ("every_1h30m", "every_1h30m"),
        ("every_90s", "every_1m30s"),
        ("every_25h", "every_1d1h"),
    ] {
        assert_eq!(policy(text).spelled(), spelled, "{text}");
    }
    for bad in ["every_", "every_0h", "every_soon", "hourly"] {
        let message = error(&format!(
            "services:\n  w:\n    image: x\n    pull_policy: {bad}\n"
        ));
        assert!(
            message.contains("services.w.pull_policy"),
            "{bad}: {message}"
        );
    }
}

#[test]
fn secrets_short_and_long_with_their_sources() {
    let p = load(
        "services:\n  app:\n    image: a\n    secrets:\n      - db\n      - source: key\n        target: /etc/app/key.pem\n        uid: \"103\"\n        gid: 104\n        mode: 0440\n      - source: db\n        target: copy\n        mode: 0o400\n\
         secrets:\n  db:\n    environment: DB_PASSWORD\n  key:\n    file: ./tls/key.pem\n",
    );
    let secret = |source: &str, target: &str, ids: Option<(u32, u32)>, mode| ServiceSecret {
        source: source.into(),
        target: target.into(),
        uid: ids.map(|i| i.0),
        gid: ids.map(|i| i.1),
        mode,
        host: None,
    };
    assert_eq!(
        p.services["app"].secrets,
        vec![
            secret("db", "/run/secrets/db", None, None),
            secret("key", "/etc/app/key.pem", Some((103, 104)), Some(0o440)),
            secret("db", "/run/secrets/copy", None, Some(0o400)),
        ]
    );
    assert_eq!(
        p.secrets["db"],
        SecretSource::Environment("DB_PASSWORD".into())
    );
    assert_eq!(
        p.secrets["key"],
        SecretSource::File(PathBuf::from("/srv/app/tls/key.pem"))
    );
    let rendered = to_yaml(&p);
    assert!(rendered.contains("target: /etc/app/key.pem"), "{rendered}");
    assert!(rendered.contains("environment: DB_PASSWORD"), "{rendered}");
}

#[test]
fn secrets_errors_are_located() {
    let cases = [
        (
            "services:\n  app:\n    image: a\n    secrets: [nope]\n",
            4,
            "services.app.secrets[0]",
            "uses secret nope, which the top-level `secrets` does not define",
        ),
        (
            "services:\n  app:\n    image: a\nsecrets:\n  db:\n    external: true\n",
            6,
            "secrets.db.external",
            "exists only in swarm mode",
        ),
        (
            "services:\n  app:\n    image: a\nsecrets:\n  db:\n    file: ./a\n    environment: A\n",
            5,
            "secrets.db",
            "needs exactly one of `file` or `environment`",
        ),
        (
            "services:\n  app:\n    image: a\n    secrets:\n      - db\n      - source: db\n        target: /run/secrets/db\nsecrets:\n  db:\n    environment: A\n",
            6,
            "services.app.secrets[1]",
            "mounts two secrets at /run/secrets/db",
        ),
        (
            "services:\n  app:\n    image: a\n    secrets:\n      - source: db\n        mode: rw\nsecrets:\n  db:\n    environment: A\n",
            6,
            "services.app.secrets[0].mode",
            "expected a file mode",
        ),
        (
            "services:\n  app:\n    image: a\n    secrets:\n      - source: db\n        uid: root\nsecrets:\n  db:\n    environment: A\n",
            6,
            "services.app.secrets[0].uid",
            "expected a numeric id",
        ),
    ];
    for (text, line, path, message) in cases {
        assert_error(&error(text), line, path, message);
    }
}

#[test]
fn a_services_readiness_probe_is_read_from_the_agents_extension() {
    let web = one(
        "services:\n  web:\n    image: app\n    x-kicky-agent:\n      ready:\n        http: {port: 8080, path: /actuator/health, body: '\"status\":\"UP\"'}\n        interval: 500ms\n",
    );
    let probe = web.ready.expect("the probe");
    assert_eq!(probe.describe(), "http :8080/actuator/health");
    assert_eq!(probe.interval, Duration::from_millis(500));
    // Other extensions are compose's business; the agent's own is checked.
    assert_eq!(
        one("services:\n  web:\n    image: app\n    x-other: {ready: 1}\n").ready,
        None
    );
    let message = error(
        "services:\n  web:\n    image: app\n    x-kicky-agent:\n      ready: {tcp: {port: 80}, http: {port: 80}}\n      probe: {}\n",
    );
    assert_error(
        &message,
        5,
        "services.web.x-kicky-agent.ready",
        "invalid readiness probe: a ready probe has exactly one of `http`, `tcp` and `exec`",
    );
    assert_error(
        &message,
        6,
        "services.web.x-kicky-agent.probe",
        "unknown key `probe` in x-kicky-agent (it has `ready`)",
    );
}
