//! The daemon over time and against endpoints that hang, under a fake systemd: a failed release
//! is held instead of applied on every watch tick (and a restart does not forget it); a hanging
//! SSM never delays a watchdog ping; a silent control client wedges no `resync`; one AWS config
//! for the daemon's life; a bad config is not restart-looped.

use crate::common;

use std::time::{Duration, Instant};

use aws_sdk_ssm::types::ParameterType;
use common::proxy::{Fault, Proxy};
use common::stack::{id_of, running_healthy, Stack};
use common::systemd::{Daemon, Notifications};
use common::{Rig, Scratch};

fn wait_until(bound: Duration, what: &str, mut ok: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ok() {
        assert!(
            started.elapsed() < bound,
            "{what} did not happen within {bound:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Starts `kicky-agent run` for `s` under the fake systemd (watchdog every second); its log, if
/// shown, has `masked` masked.
fn start(s: &Scratch, imds: &str, masked: &[&str]) -> (Daemon, Notifications) {
    common::systemd::start(s, imds, &[("WATCHDOG_USEC", "2000000")], masked)
}

/// A config that writes one parameter (`<prefix>/TOKEN`) to the env file, read from `endpoint`,
/// watched every `watch`, with no lifecycle hook.
fn one_parameter(endpoint: &str, prefix: &str, watch: &str, socket: &std::path::Path) -> String {
    format!(
        "project: orange\nworkdir: {{workdir}}\naws:\n  endpoint_url: {endpoint}\nenv:\n  parameters:\n    - name: {prefix}/TOKEN\n\
         watch:\n  interval: {watch}\nlifecycle:\n  hook: off\ncontrol_socket: {}\n",
        socket.display()
    )
}

fn log_of(s: &Scratch) -> String {
    std::fs::read_to_string(s.path("daemon.log")).unwrap_or_default()
}

/// How many lines of the daemon's log say `what`.
fn logged(s: &Scratch, what: &str) -> usize {
    log_of(s).matches(what).count()
}

fn metric(s: &Scratch, series: &str) -> Option<f64> {
    let text = std::fs::read_to_string(s.path("metrics.prom")).ok()?;
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit_once(' '))
        .and_then(|(_, v)| v.parse().ok())
}

/// A release that never gets healthy, on a service with a fixed host port: applied once,
/// rolled back, then held (not applied on every watch tick, not after a restart) and said so in
/// `STATUS=`, `status` and the metrics; applied again on `resync`, and when it changes.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_release_is_held_not_applied_on_every_watch() {
    let rig = Rig::get();
    let stack = Stack::new(&rig, "held").await;
    let param = format!("/kt/{}/env", stack.project);
    stack.env(&rig, "HEALTH_PATH=health\n").await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let compose = format!(
        "services:\n  web:\n    image: {{registry}}/tester/web:1\n    ports: ['127.0.0.1:{port}:8080']\n    healthcheck:\n      test: [CMD, wget, -q, -O, /dev/null, 'http://127.0.0.1:8080/${{HEALTH_PATH}}']\n      interval: 1s\n      retries: 2\n"
    );
    let extra = format!(
        "watch:\n  interval: 5s\ncontrol_socket: {}\nmetrics:\n  textfile: {}\nlifecycle:\n  hook: off\n",
        stack.scratch.path("run/control.sock").display(),
        stack.scratch.path("metrics.prom").display()
    );
    stack.compose(&rig, &compose, &extra);
    let s = &stack.scratch;
    let (daemon, notify) = start(s, &rig.imds_url, &[]);
    tokio::task::block_in_place(|| notify.wait_for("READY=1", Duration::from_secs(60)));
    let web = stack.container("web");
    let good = id_of(&web);

    // The broken release: the health check asks for a page that does not exist.
    rig.put(&param, "HEALTH_PATH=nope\n", ParameterType::SecureString)
        .await;
    tokio::task::block_in_place(|| {
        notify.wait_for("STATUS=degraded: release of", Duration::from_secs(60))
    });
    let status = notify
        .lines()
        .into_iter()
        .find(|l| l.starts_with("STATUS=degraded: release of"))
        .unwrap();
    assert!(
        status.contains("failed (") && status.contains("serving the release of"),
        "{status}"
    );
    // Two watch ticks later (each logs that it holds the release; an applying one would have
    // recreated web again), it was applied once, no sync even started, and the good container
    // served throughout.
    let synced = logged(s, "fetching parameters");
    tokio::task::block_in_place(|| {
        wait_until(Duration::from_secs(30), "two watch ticks", || {
            logged(s, "not applying it again") >= 2 || logged(s, "recreating web") > 1
        })
    });
    let log = log_of(s);
    assert_eq!(
        log.matches("recreating web").count(),
        1,
        "applied once only:\n{log}"
    );
    assert_eq!(
        logged(s, "fetching parameters"),
        synced,
        "a held release starts no sync:\n{log}"
    );
    assert_eq!(id_of(&web), good);
    assert!(running_healthy(&web));
    let (status_run, stack, rig) = stack.run(rig, &["status"]).await;
    status_run.expect(1);
    assert!(
        status_run.stdout.contains("release held: release of"),
        "{}",
        status_run.stdout
    );
    assert_eq!(
        metric(&stack.scratch, "kicky_agent_release_held"),
        Some(1.0)
    );

    // A restart does not forget it: the first sync holds it too, and so does the first watch
    // after it (both say so in the log), and the good container serves.
    drop(daemon);
    let s = &stack.scratch;
    std::fs::write(s.path("daemon.log"), "").unwrap();
    let (daemon, notify) = start(s, &rig.imds_url, &[]);
    tokio::task::block_in_place(|| {
        notify.wait_for("READY=1", Duration::from_secs(60));
        wait_until(Duration::from_secs(20), "a watch after the restart", || {
            logged(s, "not applying it again") >= 2 || logged(s, "recreating web") > 0
        })
    });
    let log = log_of(s);
    assert_eq!(
        log.matches("recreating web").count(),
        0,
        "held after a restart:\n{log}"
    );
    assert!(notify
        .lines()
        .iter()
        .any(|l| l.starts_with("STATUS=degraded: release of")));
    assert_eq!(id_of(&web), good);

    // An operator's resync applies it again (and it fails again).
    let resync = tokio::task::block_in_place(|| s.agent(&rig, &["resync", "--timeout", "60s"]));
    resync.expect(1);
    assert_eq!(log_of(s).matches("recreating web").count(), 1);
    assert_eq!(id_of(&web), good);

    // Fixed (here: back to the good value, so the container the good release runs stays): the
    // watch applies the new release, and nothing is held any more.
    rig.put(&param, "HEALTH_PATH=health\n", ParameterType::SecureString)
        .await;
    tokio::task::block_in_place(|| {
        wait_until(Duration::from_secs(60), "the fixed release applied", || {
            metric(s, "kicky_agent_release_held") == Some(0.0)
        })
    });
    assert_eq!(
        id_of(&web),
        good,
        "the same config as the good release: kept"
    );
    assert!(running_healthy(&web));
    let (status_run, stack, _rig) = stack.run(Rig::get(), &["status"]).await;
    status_run.expect(0);
    assert_eq!(
        metric(&stack.scratch, "kicky_agent_release_held"),
        Some(0.0)
    );
    drop(daemon);
}

/// The watchdog's pings keep their beat while every call to SSM hangs (a proxy that reads each
/// request and never answers): the watch checks wait in their own tasks, bounded. Measured from
/// the moment a watch's call is held, for six seconds (the watch waits up to a minute).
#[tokio::test(flavor = "multi_thread")]
async fn a_hanging_endpoint_never_delays_the_watchdog() {
    let rig = Rig::get();
    let s = Scratch::new();
    let proxy = Proxy::start(&rig.moto_url, Fault::None).await;
    let prefix = common::unique_prefix("hang");
    rig.put(
        &format!("{prefix}/TOKEN"),
        "hang-secret-6b6b",
        ParameterType::SecureString,
    )
    .await;
    s.config(
        &rig,
        &one_parameter(&proxy.url, &prefix, "5s", &s.path("run/control.sock")),
    );
    let (_daemon, notify) = start(&s, &rig.imds_url, &["hang-secret-6b6b"]);
    tokio::task::block_in_place(|| notify.wait_for("READY=1", Duration::from_secs(30)));
    let asked = proxy.requests().len();
    proxy.hang(true);
    let hung = tokio::task::block_in_place(|| {
        wait_until(Duration::from_secs(20), "a watch asking SSM", || {
            proxy.requests().len() > asked
        });
        let hung = Instant::now();
        std::thread::sleep(Duration::from_secs(6));
        hung
    });
    assert_kept_its_beat(&notify, hung, "SSM");
}

/// The same with instance metadata hanging, not SSM: a `resync` reads the launch template's user
/// data and tags again from instance metadata, which accepts and never answers; while that
/// request is held (and the watches go on), the watchdog keeps its beat.
#[tokio::test(flavor = "multi_thread")]
async fn hanging_instance_metadata_never_delays_the_watchdog() {
    let rig = Rig::get();
    let s = Scratch::new();
    let imds = Proxy::start(&rig.imds_url, Fault::None).await;
    let prefix = common::unique_prefix("imdshang");
    rig.put(
        &format!("{prefix}/TOKEN"),
        "imdshang-secret-8d8d",
        ParameterType::SecureString,
    )
    .await;
    s.config(
        &rig,
        &one_parameter(&rig.moto_url, &prefix, "5s", &s.path("run/control.sock")),
    );
    let (_daemon, notify) = start(&s, &imds.url, &["imdshang-secret-8d8d"]);
    tokio::task::block_in_place(|| notify.wait_for("READY=1", Duration::from_secs(30)));
    let asked = imds.requests().len();
    imds.hang(true);
    let mut resync = s.spawn_agent(&rig, &["resync"], &[]);
    let hung = tokio::task::block_in_place(|| {
        wait_until(
            Duration::from_secs(20),
            "the resync asking instance metadata",
            || imds.requests().len() > asked,
        );
        let hung = Instant::now();
        std::thread::sleep(Duration::from_secs(6));
        hung
    });
    resync.kill();
    assert_kept_its_beat(&notify, hung, "instance metadata");
}

/// The watchdog pinged at least 5 times in the 6 s since `hung`, never more than 1.6 s apart
/// (every second under the fake systemd).
fn assert_kept_its_beat(notify: &Notifications, hung: Instant, what: &str) {
    let pings: Vec<Instant> = notify
        .all()
        .into_iter()
        .filter(|(at, l)| l == "WATCHDOG=1" && *at >= hung)
        .map(|(at, _)| at)
        .collect();
    assert!(
        pings.len() >= 5,
        "watchdog pings while {what} hangs: {}",
        pings.len()
    );
    let longest = pings.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    assert!(
        longest < Duration::from_millis(1600),
        "a ping was held up {longest:?} while {what} hangs"
    );
}

/// A client that connects to the control socket and says nothing does not hold up a `resync`;
/// a `control_socket` that names a file of someone else's is refused, and the file kept.
#[tokio::test(flavor = "multi_thread")]
async fn a_silent_control_client_wedges_no_resync() {
    let rig = Rig::get();
    let s = Scratch::new();
    let prefix = common::unique_prefix("silent");
    rig.put(
        &format!("{prefix}/TOKEN"),
        "silent-secret-7c7c",
        ParameterType::SecureString,
    )
    .await;
    let socket = s.path("run/control.sock");
    let config = |socket: &std::path::Path| one_parameter(&rig.moto_url, &prefix, "0s", socket);
    s.config(&rig, &config(&socket));
    let (_daemon, notify) = start(&s, &rig.imds_url, &["silent-secret-7c7c"]);
    tokio::task::block_in_place(|| notify.wait_for("READY=1", Duration::from_secs(30)));
    let _silent = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    let started = Instant::now();
    let mut resync = s.spawn_agent(&rig, &["resync"], &[]);
    tokio::task::block_in_place(|| {
        while resync.child.try_wait().unwrap().is_none() {
            if started.elapsed() > Duration::from_secs(20) {
                resync.kill();
                panic!("resync hung behind a client that said nothing");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let resync = resync.wait();
    resync.expect(0);
    resync.assert_free_of(&["silent-secret-7c7c"]);

    // Another daemon's config naming a file that is not a socket: refused, the file kept.
    let other = Scratch::new();
    let precious = other.path("precious.txt");
    std::fs::write(&precious, "keep me").unwrap();
    other.config(&rig, &config(&precious));
    let run = tokio::task::block_in_place(|| other.agent(&rig, &["run"]));
    assert_ne!(run.status, 0);
    assert!(run.stderr.contains("is not a socket"), "{}", run.stderr);
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep me");
}

/// One AWS config (credential cache, HTTPS pool) for the daemon's life: three watch checks in a
/// row do not go back to instance metadata for credentials (a config of their own would, each
/// on a connection of its own). The checks are counted by what they report: each logs the
/// change that `watch.apply: report` leaves pending.
#[tokio::test(flavor = "multi_thread")]
async fn one_aws_config_for_the_daemon_life() {
    let rig = Rig::get();
    let s = Scratch::new();
    let imds = Proxy::start(&rig.imds_url, Fault::None).await;
    let prefix = common::unique_prefix("once");
    rig.put(
        &format!("{prefix}/TOKEN"),
        "once-secret-8d8d",
        ParameterType::SecureString,
    )
    .await;
    let config = one_parameter(&rig.moto_url, &prefix, "5s", &s.path("run/control.sock"))
        .replace("watch:\n", "watch:\n  apply: report\n");
    s.config(&rig, &config);
    let (_daemon, notify) = start(&s, &imds.url, &["once-secret-8d8d", "once-secret-9e9e"]);
    tokio::task::block_in_place(|| notify.wait_for("READY=1", Duration::from_secs(30)));
    let after_ready = imds.connections();
    rig.put(
        &format!("{prefix}/TOKEN"),
        "once-secret-9e9e",
        ParameterType::SecureString,
    )
    .await;
    tokio::task::block_in_place(|| {
        wait_until(Duration::from_secs(40), "three watch checks", || {
            logged(&s, "changed: parameter") >= 3
        })
    });
    let log = log_of(&s);
    assert!(!log.contains("could not look for changes"), "{log}");
    assert!(
        imds.connections() <= after_ready + 1,
        "instance metadata asked again: {} connections after ready, {} now",
        after_ready,
        imds.connections()
    );
}

/// A config with a mistake: `run` exits 2 (bad input) naming it, and the unit does not restart
/// on 2, nor runs `validate` as a separate step whose failure would restart-loop.
#[test]
fn a_bad_config_is_not_restart_looped() {
    let rig = Rig::get();
    let s = Scratch::new();
    s.config(
        &rig,
        "project: orange\nworkdir: {workdir}\nwatch:\n  interval: soon\n",
    );
    let run = s.agent(&rig, &["run"]);
    run.expect(2);
    assert!(run.stderr.contains("watch.interval"), "{}", run.stderr);
    let unit = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/kicky-agent.service"),
    )
    .unwrap();
    let directives: Vec<&str> = unit.lines().filter(|l| !l.starts_with('#')).collect();
    assert!(directives.contains(&"RestartPreventExitStatus=2"), "{unit}");
    assert!(
        !directives.iter().any(|l| l.starts_with("ExecStartPre=")),
        "{unit}"
    );
    assert!(
        directives
            .iter()
            .any(|l| l.starts_with("ExecReload=") && l.contains("--timeout")),
        "systemctl reload must be bounded: {unit}"
    );
}

/// A release marker: each watch HEADs one object. A parameter changed without the marker is not
/// noticed (its version is not even asked for: a proxy in front of moto sees only the HEAD) until
/// the marker's ETag changes; then the watch looks at every source and syncs.
#[tokio::test(flavor = "multi_thread")]
async fn a_release_marker_is_the_only_thing_each_watch_asks_for() {
    let rig = Rig::get();
    let s = Scratch::new();
    let proxy = Proxy::start(&rig.moto_url, Fault::None).await;
    let prefix = common::unique_prefix("marker");
    let token = format!("{prefix}/TOKEN");
    rig.put(&token, "marker-v1", ParameterType::SecureString)
        .await;
    let bucket = rig.bucket("marker", false).await;
    rig.put_object(&bucket, "release", b"r1\n".to_vec()).await;
    let config = one_parameter(&proxy.url, &prefix, "5s", &s.path("run/control.sock"))
        .replace(
            "watch:\n",
            &format!("watch:\n  marker: s3://{bucket}/release\n"),
        )
        .replace("aws:\n", "aws:\n  s3_force_path_style: true\n");
    s.config(&rig, &config);
    let (_daemon, notify) = start(&s, &rig.imds_url, &["marker-v1", "marker-v2"]);
    tokio::task::block_in_place(|| notify.wait_for("READY=1", Duration::from_secs(30)));
    let env = s.workdir().join(".env");
    let token_now = || {
        let text = std::fs::read_to_string(&env).unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix("TOKEN="))
            .map(str::to_string)
    };
    assert_same!(token_now(), Some("marker-v1".to_string()));
    let head = format!("HEAD /{bucket}/release");
    let asked_since = |from: usize| proxy.requests().split_off(from);
    // The first watch after a start looks at everything (the marker's last ETag is not known):
    // the marker's HEAD, then SSM. A second later it is over (the next is 4.5 s on at the soonest).
    let booted = proxy.requests().len();
    tokio::task::block_in_place(|| {
        wait_until(Duration::from_secs(20), "the first watch", || {
            let asked = asked_since(booted);
            let at = asked.iter().position(|r| *r == head);
            at.is_some_and(|at| asked[at..].iter().any(|r| r.starts_with("POST ")))
        });
        std::thread::sleep(Duration::from_secs(1));
    });

    let quiet = proxy.requests().len();
    rig.put(&token, "marker-v2", ParameterType::SecureString)
        .await;
    // The next watch: its HEAD, and a second later (what would follow it comes within
    // milliseconds) still nothing else asked, nothing noticed.
    tokio::task::block_in_place(|| {
        wait_until(Duration::from_secs(20), "the next watch", || {
            asked_since(quiet).contains(&head)
        });
        std::thread::sleep(Duration::from_secs(1));
    });
    let asked = asked_since(quiet);
    assert!(
        asked.iter().all(|r| *r == head),
        "a watch asked for more than the marker: {asked:?}"
    );
    assert_same!(
        token_now(),
        Some("marker-v1".to_string()),
        "noticed without the marker"
    );
    assert!(!log_of(&s).contains("changed:"), "{}", log_of(&s));

    rig.put_object(&bucket, "release", b"r2\n".to_vec()).await;
    let started = Instant::now();
    while token_now() != Some("marker-v2".to_string())
        && started.elapsed() < Duration::from_secs(15)
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_same!(
        token_now(),
        Some("marker-v2".to_string()),
        "the marker's change was not followed"
    );
    assert!(log_of(&s).contains("changed: parameter"), "{}", log_of(&s));
}

/// A directory anyone may create files in, as /tmp (mode 1777): where another user can bind a
/// socket at a path the config names.
fn shared_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("kt-shared")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    dir
}

/// Debian's python3 run as nobody (uid and gid 65534, no groups) by `setpriv`, with `code` and
/// `arg`; stopped by its PID when dropped. Its stdout is read line by line.
struct Nobody {
    child: std::process::Child,
    stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl Nobody {
    fn run(code: &str, arg: &std::path::Path) -> Nobody {
        let mut child = std::process::Command::new("setpriv")
            .args([
                "--reuid",
                "65534",
                "--regid",
                "65534",
                "--clear-groups",
                "/usr/bin/python3",
                "-c",
                code,
            ])
            .arg(arg)
            .current_dir("/")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("setpriv and /usr/bin/python3");
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        Nobody { child, stdout }
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut self.stdout, &mut line).unwrap();
        line
    }
}

impl Drop for Nobody {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A socket at `argv[1]` that answers what a daemon would, "converged" (forged), after
/// printing what it was asked.
const FORGER: &str = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
s.listen(8)
print("listening", flush=True)
while True:
    c, _ = s.accept()
    c.settimeout(5)
    try:
        got = c.recv(256)
    except OSError:
        got = b"?"
    print("received", repr(got), flush=True)
    try:
        c.sendall(b"progress: pulling 0 images\nresult: 0 converged and healthy (forged)\n")
    except OSError:
        pass
    c.close()
"#;

/// A control client: asks the socket at `argv[1]` for a resync and prints the answer.
const CLIENT: &str = r#"
import socket, sys
c = socket.socket(socket.AF_UNIX)
c.connect(sys.argv[1])
c.sendall(b"resync\n")
print(c.makefile().read(), end="", flush=True)
"#;

/// A socket at the control path served by another user (a leftover path in a world-writable
/// directory, a configured path someone else bound first) cannot make `resync` print a forged
/// "converged" and exit 0: `resync` checks who serves the socket (SO_PEERCRED) before it sends or
/// reads a word, and refuses anyone but root.
#[tokio::test(flavor = "multi_thread")]
async fn resync_believes_no_daemon_but_root() {
    let rig = Rig::get();
    let s = Scratch::new();
    let shared = shared_dir();
    let socket = shared.path().join("control.sock");
    // A parameter to write: `resync` with no daemon syncs here, and that writes the env file.
    let prefix = common::unique_prefix("not-root");
    rig.put(
        &format!("{prefix}/TOKEN"),
        "notroot-secret-4a4a",
        ParameterType::SecureString,
    )
    .await;
    s.config(&rig, &one_parameter(&rig.moto_url, &prefix, "0s", &socket));
    let mut forged = Nobody::run(FORGER, &socket);
    assert_eq!(forged.line(), "listening\n");
    let run = tokio::task::block_in_place(|| s.agent(&rig, &["resync", "--timeout", "10s"]));
    run.assert_free_of(&["notroot-secret-4a4a"]);
    run.expect(1);
    assert!(!run.all().contains("forged"), "{}", run.all());
    assert!(!run.all().contains("pulling"), "{}", run.all());
    assert!(
        run.stderr.contains("uid 65534") && run.stderr.contains("not root"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(&socket.display().to_string()),
        "{}",
        run.stderr
    );
    // Nothing was asked: the forger saw the connection close without a request.
    assert_eq!(forged.line(), "received b''\n");
    // Nor taken for "no daemon": no sync ran here instead.
    assert!(!run.all().contains("syncing here"), "{}", run.all());
    assert!(!s.workdir().join(".env").exists(), "it synced here anyway");

    // The check can fail: with no socket at all, `resync` syncs here and writes the env file.
    drop(forged);
    std::fs::remove_file(&socket).unwrap();
    let run = tokio::task::block_in_place(|| s.agent(&rig, &["resync", "--timeout", "10s"]));
    run.assert_free_of(&["notroot-secret-4a4a"]);
    run.expect(0);
    assert!(run.stdout.contains("syncing here"), "{}", run.stdout);
    assert!(s.workdir().join(".env").exists(), "no env file written");
}

/// The daemon serves only root: a client of another user that reaches the socket (mode changed
/// by hand, an ACL) is answered "refused", and no resync is run.
#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_serves_no_client_but_root() {
    use std::os::unix::fs::PermissionsExt;
    let rig = Rig::get();
    let s = Scratch::new();
    let shared = shared_dir();
    let socket = shared.path().join("control.sock");
    let prefix = common::unique_prefix("peer");
    rig.put(
        &format!("{prefix}/TOKEN"),
        "peer-secret-5b5b",
        ParameterType::SecureString,
    )
    .await;
    s.config(&rig, &one_parameter(&rig.moto_url, &prefix, "0s", &socket));
    let (_daemon, notify) = start(&s, &rig.imds_url, &["peer-secret-5b5b"]);
    tokio::task::block_in_place(|| notify.wait_for("READY=1", Duration::from_secs(30)));
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let answer = tokio::task::block_in_place(|| {
        let mut nobody = Nobody::run(CLIENT, &socket);
        let answer = nobody.line();
        let _ = nobody.child.wait();
        answer
    });
    assert_eq!(
        answer,
        "result: 1 refused: only root may ask this daemon for a resync\n"
    );
    let log = log_of(&s);
    // The leak first: the log is shown below only once it is known to be free of the secret.
    assert!(
        !log.contains("peer-secret-5b5b"),
        "the secret reached the log"
    );
    assert!(
        log.contains("refused a client running as uid 65534"),
        "{log}"
    );
    assert!(!log.contains("resync requested"), "{log}");
    // Root's own resync is served as before.
    let run = tokio::task::block_in_place(|| s.agent(&rig, &["resync", "--timeout", "60s"]));
    run.expect(0);
    run.assert_free_of(&["peer-secret-5b5b"]);
}

/// S3 throttles a HEAD with 503 and no body (a HEAD has none): no error code reaches the agent,
/// yet the watch must read it as throttling and back off (2, 4, 8 intervals), not HEAD the marker
/// again every interval into the quota. On the wire, through the rig's throttling proxy.
///
/// Measured by the longest quiet time between HEADs (the end of the window counting as one):
/// without the backoff, no HEAD waits more than an interval (5 s ±10 %) or one of the SDK's own
/// retry waits (at most 8 s); with it, the wait of 4 intervals after the second failed watch is
/// at least 18 s, and starts before 46 s whatever the SDK's retries took (a watch's five attempts
/// take at most 15 s of backoff).
#[tokio::test(flavor = "multi_thread")]
async fn a_throttled_marker_head_without_a_body_backs_the_watch_off() {
    let rig = Rig::get();
    let s = Scratch::new();
    let prefix = common::unique_prefix("head503");
    let token = format!("{prefix}/TOKEN");
    rig.put(&token, "head503-v1", ParameterType::SecureString)
        .await;
    let bucket = rig.bucket("head503", false).await;
    rig.put_object(&bucket, "release", b"r1\n".to_vec()).await;
    // Every HEAD of an object is throttled; GETs and SSM go through.
    let proxy = common::throttle::ThrottleProxy::start(
        &rig,
        s.dir.path(),
        &["s3:HEAD object:seconds=3600"],
        &[],
    );
    let config = one_parameter(&proxy.url, &prefix, "5s", &s.path("run/control.sock"))
        .replace(
            "watch:\n",
            &format!("watch:\n  marker: s3://{bucket}/release\n"),
        )
        .replace("aws:\n", "aws:\n  s3_force_path_style: true\n");
    s.config(&rig, &config);
    let (_daemon, notify) = start(&s, &rig.imds_url, &["head503-v1"]);
    tokio::task::block_in_place(|| notify.wait_for("READY=1", Duration::from_secs(30)));
    let ready = proxy.calls().iter().map(|c| c.at).fold(0.0_f64, f64::max);
    let window = 75.0;
    tokio::task::block_in_place(|| std::thread::sleep(Duration::from_secs_f64(window)));
    let heads: Vec<f64> = proxy
        .calls()
        .iter()
        .filter(|c| c.service == "s3" && c.action == "HEAD object" && c.at >= ready)
        .inspect(|c| assert!(c.throttled && c.status == 503, "{c:?}"))
        .map(|c| c.at)
        .filter(|at| *at < ready + window)
        .collect();
    let mut times = heads.clone();
    times.push(ready + window);
    let longest = times.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
    assert!(
        !heads.is_empty() && longest >= 15.0,
        "the longest quiet time between HEADs is {longest:.1} s (HEADs at {heads:?}); log:\n{}",
        log_of(&s)
    );
    assert!(log_of(&s).contains("SlowDown"), "{}", log_of(&s));
}

/// The health gauges follow the containers between syncs: with no watch and no sync after the
/// first, a container that stops shows as unhealthy in the metrics file within the refresh
/// interval (15 s), and one that starts again as healthy.
#[tokio::test(flavor = "multi_thread")]
async fn the_health_gauges_are_refreshed_between_syncs() {
    let rig = Rig::get();
    let stack = Stack::new(&rig, "gauges").await;
    stack.env(&rig, "A=1\n").await;
    let extra = format!(
        "watch:\n  interval: 0\ncontrol_socket: {}\nmetrics:\n  textfile: {}\nlifecycle:\n  hook: off\n",
        stack.scratch.path("run/control.sock").display(),
        stack.scratch.path("metrics.prom").display()
    );
    stack.compose(
        &rig,
        "services:\n  web:\n    image: {registry}/tester/web:1\n",
        &extra,
    );
    let s = &stack.scratch;
    let (daemon, notify) = start(s, &rig.imds_url, &[]);
    tokio::task::block_in_place(|| notify.wait_for("READY=1", Duration::from_secs(60)));
    let web = stack.container("web");
    let series = format!(
        "kicky_agent_service_healthy{{project=\"{}\",service=\"web\",container=\"{web}\"}}",
        stack.project
    );
    assert_eq!(metric(s, &series), Some(1.0));
    let synced = logged(s, "fetching parameters");

    common::stack::docker(&["stop", "-t", "1", &web]);
    let stopped = Instant::now();
    tokio::task::block_in_place(|| {
        wait_until(Duration::from_secs(40), "the gauge at 0", || {
            metric(s, &series) == Some(0.0)
        })
    });
    println!(
        "gauges: a stopped container shown unhealthy after {:.1?}",
        stopped.elapsed()
    );
    common::stack::docker(&["start", &web]);
    tokio::task::block_in_place(|| {
        wait_until(Duration::from_secs(40), "the gauge back at 1", || {
            metric(s, &series) == Some(1.0)
        })
    });
    assert_eq!(
        logged(s, "fetching parameters"),
        synced,
        "no sync ran: the daemon refreshed the gauges itself\n{}",
        log_of(s)
    );
    drop(daemon);
}
