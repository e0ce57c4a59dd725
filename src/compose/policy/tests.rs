use std::path::{Path, PathBuf};

use super::*;
use crate::compose::{read_text, Reading};

const WORKDIR: &str = "/srv/orange";
const STATE: &str = "/var/lib/kicky-agent";

fn policy(yaml: &str) -> ComposePolicy {
    serde_norway::from_str(yaml).unwrap()
}

fn rules(policy: &ComposePolicy) -> Rules {
    let own = [
        (PathBuf::from("/etc/kicky-agent"), "the agent's config"),
        (PathBuf::from(STATE), "the agent's state"),
        (
            PathBuf::from("/run/kicky-agent/secrets"),
            "the secret files the agent writes",
        ),
    ];
    Rules::new(policy, Path::new(WORKDIR), &own)
}

/// The problems of `compose` (one service, `web`, unless it says otherwise) under `rules`, as
/// `(line, key path)`, and their messages.
fn judged_in(dir: &Path, compose: &str, rules: &Rules) -> (Vec<(usize, String)>, String) {
    let text = if compose.lines().any(|l| l == "services:") {
        compose.to_string()
    } else {
        format!("services:\n  web:\n    image: web:1\n{compose}")
    };
    let reading = Reading {
        file: &dir.join("docker-compose.yml"),
        project: "orange",
        lookup: &|name| match name {
            "ROOT" => Some("/".to_string()),
            "SECCOMP" => Some("unconfined".to_string()),
            "CAP" => Some("SYS_ADMIN".to_string()),
            _ => None,
        },
        home: None,
        rules: Some(rules),
        read: &|_| Ok(Some("A=1\n".to_string())),
    };
    let Err(err) = read_text(&text, &reading) else {
        return (Vec::new(), String::new());
    };
    let message = format!("{err:#}");
    let found = message
        .lines()
        .filter_map(|line| {
            let rest = line
                .trim()
                .strip_prefix(&format!("{}:", dir.join("docker-compose.yml").display()))?;
            let (line, rest) = rest.split_once(':')?;
            let (_, rest) = rest.split_once(": ")?;
            let (key, _) = rest.split_once(": ")?;
            Some((line.parse().ok()?, key.to_string()))
        })
        .collect();
    (found, message)
}

fn judged(compose: &str, rules: &Rules) -> (Vec<(usize, String)>, String) {
    judged_in(Path::new(WORKDIR), compose, rules)
}

/// Each thing the defaults refuse, by the line and key it is named at.
#[test]
fn the_defaults_refuse_what_hands_over_the_host() {
    let rules = rules(&ComposePolicy::default());
    let cases: &[(&str, &str)] = &[
        ("    privileged: true\n", "services.web.privileged"),
        ("    network_mode: host\n", "services.web.network_mode"),
        ("    pid: host\n", "services.web.pid"),
        ("    ipc: host\n", "services.web.ipc"),
        ("    userns_mode: host\n", "services.web.userns_mode"),
        ("    cap_add: [ALL]\n", "services.web.cap_add[0]"),
        ("    cap_add: [NET_ADMIN, cap_sys_admin]\n", "services.web.cap_add[1]"),
        ("    cap_add: [SYS_MODULE]\n", "services.web.cap_add[0]"),
        ("    cap_add: [DAC_READ_SEARCH]\n", "services.web.cap_add[0]"),
        ("    security_opt: ['seccomp:unconfined']\n", "services.web.security_opt[0]"),
        ("    security_opt: [apparmor=unconfined]\n", "services.web.security_opt[0]"),
        ("    security_opt: ['label:disable']\n", "services.web.security_opt[0]"),
        ("    security_opt: [systempaths=unconfined]\n", "services.web.security_opt[0]"),
        ("    volumes: ['/:/host']\n", "services.web.volumes[0]"),
        ("    volumes: ['/:/host:ro']\n", "services.web.volumes[0]"),
        ("    volumes: ['/etc:/etc:ro']\n", "services.web.volumes[0]"),
        ("    volumes: ['/etc/cron.d:/x']\n", "services.web.volumes[0]"),
        ("    volumes: ['/etc/shadow:/x:ro']\n", "services.web.volumes[0]"),
        ("    volumes: ['/root/.aws:/x:ro']\n", "services.web.volumes[0]"),
        ("    volumes: ['/home:/x']\n", "services.web.volumes[0]"),
        ("    volumes: ['/boot:/x:ro']\n", "services.web.volumes[0]"),
        ("    volumes: ['/proc/sys:/x']\n", "services.web.volumes[0]"),
        ("    volumes: ['/proc/1/root:/x:ro']\n", "services.web.volumes[0]"),
        ("    volumes: ['/sys/kernel:/x']\n", "services.web.volumes[0]"),
        ("    volumes: ['/dev:/dev']\n", "services.web.volumes[0]"),
        ("    volumes: ['/usr/local/bin:/x']\n", "services.web.volumes[0]"),
        ("    volumes: ['/var/run/docker.sock:/var/run/docker.sock:ro']\n", "services.web.volumes[0]"),
        ("    volumes: ['/run/docker.sock:/s']\n", "services.web.volumes[0]"),
        ("    volumes: ['/run:/run']\n", "services.web.volumes[0]"),
        ("    volumes: ['/var:/x:ro']\n", "services.web.volumes[0]"),
        ("    volumes: ['/var/lib/docker/containers:/x:ro']\n", "services.web.volumes[0]"),
        ("    volumes: ['/etc/kicky-agent:/x:ro']\n", "services.web.volumes[0]"),
        ("    volumes: ['/var/lib/kicky-agent/state.json:/x:ro']\n", "services.web.volumes[0]"),
        ("    volumes: ['/run/kicky-agent:/x']\n", "services.web.volumes[0]"),
        ("    volumes: ['/var/lib:/x']\n", "services.web.volumes[0]"),
        ("    volumes: ['../../..:/x']\n", "services.web.volumes[0]"),
        ("    volumes: ['./../../etc:/x']\n", "services.web.volumes[0]"),
        ("    volumes: ['${ROOT}:/x']\n", "services.web.volumes[0]"),
        ("    volumes: [{type: bind, source: /, target: /host, read_only: true}]\n", "services.web.volumes[0]"),
        ("    volumes: ['root:/host']\nvolumes:\n  root:\n    driver_opts: {type: none, o: bind, device: /}\n", "services.web.volumes[0]"),
        ("    env_file: /root/.aws/credentials\n", "services.web.env_file"),
        ("    env_file: [{path: /etc/shadow}]\n", "services.web.env_file[0]"),
        ("    secrets: [x]\nsecrets:\n  x:\n    file: /etc/shadow\n", "secrets.x.file"),
        ("    secrets: [x]\nsecrets:\n  x:\n    file: ../other/key.pem\n", "secrets.x.file"),
    ];
    for (compose, key) in cases {
        let (found, message) = judged(compose, &rules);
        assert_eq!(found.len(), 1, "{compose}: {message}");
        assert_eq!(found[0].1, *key, "{compose}: {message}");
        assert!(message.contains("refused by compose.policy"), "{message}");
    }
}

/// What the defaults let through: ordinary stacks, and what only looks like the refused.
#[test]
fn the_defaults_let_ordinary_stacks_through() {
    let rules = rules(&ComposePolicy::default());
    let seed = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/seed-stack/docker-compose.yml"),
    )
    .unwrap();
    let (found, message) = judged(&seed, &rules);
    assert!(found.is_empty() && message.is_empty(), "{message}");
    for compose in [
        "    privileged: false\n",
        "    network_mode: none\n",
        "    pid: service:db\n",
        "    ipc: private\n",
        "    cap_add: [NET_ADMIN, NET_BIND_SERVICE, IPC_LOCK, SYS_NICE]\n",
        "    cap_drop: [ALL]\n",
        "    security_opt: ['no-new-privileges:true', 'seccomp=/srv/orange/profile.json']\n",
        "    volumes: ['./data:/data', 'cache:/cache', '/var/log/app:/var/log/app']\nvolumes:\n  cache: {}\n",
        "    volumes: ['/etc/localtime:/etc/localtime:ro', '/etc/ssl/certs:/certs:ro', '/sys/fs/cgroup:/cg:ro']\n",
        "    volumes: ['/home/ubuntu/data:/data', '/tmp/x:/x', '/run/user/1000/app:/a']\n",
        "    volumes: [{type: tmpfs, target: /tmp}]\n",
        "    env_file: [.env, ../.env, /etc/app/app.env]\n",
        "    secrets: [x]\nsecrets:\n  x:\n    file: ./keys/x.pem\n",
        "    secrets: [x]\nsecrets:\n  x:\n    environment: X\n",
    ] {
        let (found, message) = judged(compose, &rules);
        assert!(found.is_empty() && message.is_empty(), "{compose}: {message}");
    }
}

/// Every refusal in one run, each named by its line, with what to write to allow it.
#[test]
fn every_refusal_is_named_with_its_line_and_its_remedy() {
    let compose = "services:\n  worker:\n    image: web:1\n    network_mode: host\n\
                   \x20   security_opt: [no-new-privileges, 'seccomp:unconfined']\n    env_file: /root/.env\n\
                   \x20   volumes:\n      - ./data:/data\n      - root:/host:ro\n      - /var/run/docker.sock:/var/run/docker.sock\n\
                   \x20   secrets: [x]\nvolumes:\n  root:\n    driver_opts: {type: none, o: bind, device: /}\n\
                   secrets:\n  x:\n    file: /etc/shadow\n";
    let (found, message) = judged(compose, &rules(&ComposePolicy::default()));
    let want: Vec<(usize, String)> = [
        (4, "services.worker.network_mode"),
        (5, "services.worker.security_opt[1]"),
        (6, "services.worker.env_file"),
        (9, "services.worker.volumes[1]"),
        (10, "services.worker.volumes[2]"),
        (17, "secrets.x.file"),
    ]
    .iter()
    .map(|(l, k)| (*l, k.to_string()))
    .collect();
    assert_eq!(found, want, "{message}");
    for remedy in [
        "compose.policy.allow.worker: {host_namespaces: [network]}",
        "compose.policy.allow.worker: {security_opt: [seccomp=unconfined]}",
        "compose.policy.allow.worker: {binds: [/root/.env]}",
        "compose.policy.allow.worker: {binds: [/]}",
        "compose.policy.allow.worker: {binds: [/run/docker.sock]}",
        "compose.policy.secret_files: [/etc/shadow]",
    ] {
        assert!(message.contains(remedy), "{remedy}: {message}");
    }
    assert!(message.contains("/ is the host's root"), "{message}");
    assert!(
        message.contains("mounts volume root, whose driver_opts bind /"),
        "{message}"
    );
}

/// Each remedy the messages give, written in the policy, lets that one thing through, for that
/// service only.
#[test]
fn allowances_are_per_service() {
    let compose = "services:\n  web:\n    image: web:1\n    privileged: true\n    pid: host\n    network_mode: host\n\
                   \x20   cap_add: [SYS_ADMIN]\n    security_opt: ['seccomp:unconfined']\n\
                   \x20   volumes: ['/:/host:ro', '/var/run/docker.sock:/var/run/docker.sock']\n\
                   \x20   secrets: [x]\n  other:\n    image: web:1\n    privileged: true\n\
                   secrets:\n  x:\n    file: /etc/ssl/private/x.pem\n";
    let allowing = policy(
        "allow:\n  web:\n    privileged: true\n    host_namespaces: [pid, network]\n    cap_add: [cap_sys_admin]\n\
         \x20   security_opt: ['seccomp=unconfined']\n    binds: [/, /run/docker.sock]\n\
         secret_files: [/etc/ssl/private]\n",
    );
    let (found, message) = judged(compose, &rules(&allowing));
    assert_eq!(
        found,
        vec![(13, "services.other.privileged".to_string())],
        "{message}"
    );
    let (found, _) = judged(compose, &rules(&ComposePolicy::default()));
    assert_eq!(found.len(), 9);
}

/// `compose.policy.binds` replaces the host's list with an allow-list; the agent's own paths
/// and the engine's stay refused.
#[test]
fn binds_may_be_an_allow_list() {
    let rules = rules(&policy(
        "binds: [/srv, /var/log, /var/run, /etc/kicky-agent]\n",
    ));
    for (compose, refused) in [
        (
            "    volumes: ['/srv/orange/data:/data', '/var/log/app:/log']\n",
            false,
        ),
        ("    volumes: ['/srv:/srv']\n", false),
        ("    volumes: ['/opt/app:/app']\n", true),
        ("    volumes: ['/var/run/docker.sock:/s']\n", true),
        ("    volumes: ['/etc/kicky-agent:/s:ro']\n", true),
        ("    env_file: /opt/app.env\n", true),
    ] {
        let (found, message) = judged(compose, &rules);
        assert_eq!(!found.is_empty(), refused, "{compose}: {message}");
    }
}

/// A host path is judged where the engine will mount it: links that exist today followed.
#[test]
fn links_are_followed_as_the_engine_follows_them() {
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/", dir.path().join("up")).unwrap();
    std::os::unix::fs::symlink("/etc/cron.d/planted", dir.path().join("dangling")).unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    let rules = Rules::new(&ComposePolicy::default(), dir.path(), &[]);
    for (compose, refused) in [
        ("    volumes: ['./up:/host']\n", true),
        ("    volumes: ['./up/etc:/x']\n", true),
        ("    volumes: ['./up/tmp:/x']\n", false),
        ("    volumes: ['./dangling:/x']\n", true),
        (
            "    volumes: ['./data:/x', './data/new/deeper:/y']\n",
            false,
        ),
        (
            "    secrets: [x]\nsecrets:\n  x:\n    file: ./up/etc/shadow\n",
            true,
        ),
        (
            "    secrets: [x]\nsecrets:\n  x:\n    file: ./data/x\n",
            false,
        ),
    ] {
        let (found, message) = judged_in(dir.path(), compose, &rules);
        assert_eq!(!found.is_empty(), refused, "{compose}: {message}");
        if refused {
            assert!(message.contains("(which is /"), "{message}");
        }
    }
}

/// A value from a variable may be a secret: what it asks for is refused all the same, named by
/// its key, never shown.
#[test]
fn a_value_from_a_variable_is_refused_but_not_shown() {
    let rules = rules(&ComposePolicy::default());
    let (found, message) = judged("    volumes: ['${ROOT}:/x']\n", &rules);
    assert_eq!(found.len(), 1, "{message}");
    assert!(message.contains("a host path from a variable"), "{message}");
    assert!(message.contains("binds: [THAT_PATH]"), "{message}");
    let compose = "    security_opt: ['seccomp=${SECCOMP}']\n    cap_add: ['${CAP}']\n";
    let (found, message) = judged(compose, &rules);
    assert_eq!(found.len(), 2, "{message}");
    assert!(
        !message.contains("unconfined") && !message.contains("SYS_ADMIN"),
        "{message}"
    );
}

#[test]
fn paths_resolve_through_links_and_dots() {
    assert_eq!(
        resolve(Path::new("/var/run/docker.sock")),
        resolve(Path::new("/run/docker.sock"))
    );
    assert_eq!(
        resolve(Path::new("/no/such/../dir")),
        PathBuf::from("/no/dir")
    );
}

/// Under the shipped unit (`PrivateTmp`), the agent's /tmp is not the host's.
#[test]
fn a_private_tmp_is_found_in_mountinfo() {
    let host =
        "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n30 27 0:27 / /tmp rw - tmpfs tmpfs rw\n";
    assert!(private_dirs(host).is_empty());
    let unit = "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n\
                301 27 254:0 /tmp/systemd-private-1a-kicky-agent.service-Xy/tmp /tmp rw - ext4 /dev/vda rw\n\
                302 27 254:0 /var/tmp/systemd-private-1a-kicky-agent.service-Zz/tmp /var/tmp rw - ext4 /dev/vda rw\n";
    assert_eq!(
        private_dirs(unit),
        vec![PathBuf::from("/tmp"), PathBuf::from("/var/tmp")]
    );
}

/// The policy as the baked config writes it: capabilities in any spelling, and every mistake
/// named with its line and key.
#[test]
fn the_policy_reads_as_written_and_refuses_mistakes() {
    let read = |text: &str| crate::yaml::from_str::<ComposePolicy>(text, Path::new("agent.yaml"));
    let policy = read(
        "allow:\n  web:\n    cap_add: [cap_sys_admin, NET_ADMIN]\n    host_namespaces: [pid]\n",
    )
    .unwrap();
    let caps: Vec<&str> = policy.allow["web"]
        .cap_add
        .iter()
        .map(|c| c.as_str())
        .collect();
    assert_eq!(caps, ["SYS_ADMIN", "NET_ADMIN"]);
    for (text, line, key) in [
        (
            "allow:\n  web:\n    privileged: yes please\n",
            3,
            "allow.web.privileged",
        ),
        (
            "allow:\n  web:\n    host_namespaces: [uts]\n",
            3,
            "allow.web.host_namespaces[0]",
        ),
        (
            "allow:\n  web:\n    cap_add: [SYS ADMIN]\n",
            3,
            "allow.web.cap_add[0]",
        ),
        (
            "allow:\n  web:\n    binds: [data]\n",
            3,
            "allow.web.binds[0]",
        ),
        ("allow:\n  web:\n    bind: [/data]\n", 3, "allow.web.bind"),
        ("binds: [/srv/../etc]\n", 1, "binds[0]"),
        ("secret_file: [/etc/x]\n", 1, "secret_file"),
    ] {
        let e = read(text).unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (line, key), "{text}: {e}");
    }
}
