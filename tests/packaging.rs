//! The systemd unit and the AMI install script: what an image build bakes in.

use std::path::Path;
use std::process::Command;

const AGENT: &str = env!("CARGO_BIN_EXE_kicky-agent");

fn repo(rel: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

#[test]
fn the_units_pass_systemd_analyze_verify() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["kicky-agent.service", "kicky-agent-imds-guard.service"] {
        let unit = std::fs::read_to_string(repo(&format!("systemd/{name}"))).unwrap();
        // verify checks that the ExecStart programs exist: point them at the ones under test.
        let guard = repo("ami/imds-guard.sh").display().to_string();
        let unit = unit
            .replace("/usr/lib/kicky-agent/imds-guard", &guard)
            .replace("/usr/bin/kicky-agent", AGENT);
        let path = dir.path().join(name);
        std::fs::write(&path, unit).unwrap();
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&path)
            .output()
            .expect("systemd-analyze");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.trim().is_empty(),
            "systemd-analyze verify {name}: {stderr}"
        );
    }
    // The guard runs before Docker, again with it, and Docker does not start without it.
    let guard = std::fs::read_to_string(repo("systemd/kicky-agent-imds-guard.service")).unwrap();
    for directive in [
        "Before=docker.service",
        "PartOf=docker.service",
        "RequiredBy=docker.service",
        "Type=oneshot",
        "RemainAfterExit=yes",
        "ExecStart=/usr/lib/kicky-agent/imds-guard kicky-imds",
    ] {
        assert!(
            guard.lines().any(|l| l == directive),
            "{directive}: {guard}"
        );
    }
}

/// The exposure `systemd-analyze security` gives the unit stays where docs/how-it-works.md says
/// (Security: 2.2; it was 4.3 before the unit was hardened): a setting dropped or loosened shows
/// here.
#[test]
fn the_unit_stays_hardened() {
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(repo("systemd/kicky-agent.service"))
        .output()
        .expect("systemd-analyze");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let exposure: f64 = stdout
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for kicky-agent.service: "))
        .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in: {stdout}"));
    assert!(exposure <= 2.2, "the unit's exposure rose to {exposure}");
}

#[test]
fn the_ami_script_installs_binary_unit_and_a_valid_config() {
    let root = tempfile::tempdir().unwrap();
    let out = Command::new(repo("ami/install.sh"))
        .arg(root.path())
        .env("KICKY_AGENT_BIN", AGENT)
        .output()
        .expect("ami/install.sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = |rel: &str| root.path().join(rel);
    use std::os::unix::fs::PermissionsExt;
    let mode = |rel: &str| std::fs::metadata(r(rel)).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode("usr/bin/kicky-agent"), 0o755);
    assert_eq!(mode("etc/systemd/system/kicky-agent.service"), 0o644);
    assert_eq!(
        mode("etc/systemd/system/kicky-agent-imds-guard.service"),
        0o644
    );
    assert_eq!(mode("usr/lib/kicky-agent/imds-guard"), 0o755);
    assert_eq!(
        std::fs::read_link(r(
            "etc/systemd/system/docker.service.requires/kicky-agent-imds-guard.service"
        ))
        .unwrap(),
        Path::new("/etc/systemd/system/kicky-agent-imds-guard.service")
    );
    // The unit's ReadWritePaths=/srv: the default workdirs' parent exists in the image.
    assert_eq!(mode("srv"), 0o755);
    assert_eq!(
        std::fs::read_link(r(
            "etc/systemd/system/multi-user.target.wants/kicky-agent.service"
        ))
        .unwrap(),
        Path::new("/etc/systemd/system/kicky-agent.service")
    );
    let validate = Command::new(r("usr/bin/kicky-agent"))
        .args([
            "--config",
            &r("etc/kicky-agent/agent.yaml").display().to_string(),
            "validate",
        ])
        .output()
        .unwrap();
    assert!(
        validate.status.success(),
        "{}",
        String::from_utf8_lossy(&validate.stderr)
    );

    // An operator's config already in the image is kept.
    std::fs::write(r("etc/kicky-agent/agent.yaml"), "project: lemon\n").unwrap();
    let again = Command::new(repo("ami/install.sh"))
        .arg(root.path())
        .env("KICKY_AGENT_BIN", AGENT)
        .output()
        .unwrap();
    assert!(again.status.success());
    assert_eq!(
        std::fs::read_to_string(r("etc/kicky-agent/agent.yaml")).unwrap(),
        "project: lemon\n"
    );
}

/// `cargo deb` (here over the test build's binary, `--no-build`): the agent in /usr/bin, the unit,
/// the sample config as a conffile; the install enables the unit and never starts it, an upgrade
/// restarts it only if it runs, and a removal stops it (the containers are dockerd's).
#[test]
fn the_deb_carries_the_agent_and_enables_it_without_starting() {
    let dir = tempfile::tempdir().unwrap();
    let deb = crate::common::build_deb(dir.path());
    let dpkg = |args: &[&str]| {
        let out = Command::new("dpkg-deb")
            .args(args)
            .arg(&deb)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let contents = dpkg(&["-c"]);
    for (mode, path) in [
        ("-rwxr-xr-x", "./usr/bin/kicky-agent"),
        ("-rw-r--r--", "./usr/lib/systemd/system/kicky-agent.service"),
        (
            "-rw-r--r--",
            "./usr/lib/systemd/system/kicky-agent-imds-guard.service",
        ),
        ("-rwxr-xr-x", "./usr/lib/kicky-agent/imds-guard"),
        ("-rw-r--r--", "./etc/kicky-agent/agent.yaml"),
        ("-rw-r--r--", "./usr/share/doc/kicky-agent/README.md"),
        ("-rw-r--r--", "./usr/share/doc/kicky-agent/CHANGELOG.md"),
        (
            "-rw-r--r--",
            "./usr/share/doc/kicky-agent/docs/operator-guide.md",
        ),
    ] {
        let line = contents
            .lines()
            .find(|l| l.ends_with(path))
            .unwrap_or_else(|| panic!("{path} not in\n{contents}"));
        assert!(line.starts_with(mode), "{line}");
    }
    let info = dpkg(&["-f"]);
    assert!(info.contains("Package: kicky-agent"), "{info}");
    assert!(info.contains("Recommends: docker.io | docker-ce"), "{info}");
    let control = dir.path().join("control");
    let out = Command::new("dpkg-deb")
        .arg("-e")
        .arg(&deb)
        .arg(&control)
        .output()
        .unwrap();
    assert!(out.status.success());
    let read = |name: &str| std::fs::read_to_string(control.join(name)).unwrap_or_default();
    assert_eq!(read("conffiles").trim(), "/etc/kicky-agent/agent.yaml");
    let postinst = read("postinst");
    for unit in ["kicky-agent.service", "kicky-agent-imds-guard.service"] {
        assert!(
            postinst.contains(&format!("deb-systemd-helper enable {unit}")),
            "{postinst}"
        );
    }
    assert!(
        postinst.contains("install -d -m 0755 /etc/kicky-agent/agent.d"),
        "{postinst}"
    );
    assert!(postinst.contains("install -d -m 0755 /srv"), "{postinst}");
    // Never started by the install; an upgrade (`$2` set) restarts it only if it runs, and
    // without waiting for it (its READY=1 waits for a healthy application).
    assert!(!postinst.contains("deb-systemd-invoke start"), "{postinst}");
    assert!(!postinst.contains("#DEBHELPER#"), "{postinst}");
    let restarts: Vec<&str> = postinst
        .lines()
        .filter(|l| l.contains("restart") && !l.trim_start().starts_with('#'))
        .filter(|l| l.contains("systemctl") || l.contains("deb-systemd-invoke"))
        .collect();
    assert_eq!(
        restarts,
        ["                systemctl --system --no-block try-restart kicky-agent.service || true"],
        "{postinst}"
    );
    let restart = postinst.find("--no-block try-restart").unwrap();
    assert!(
        postinst[..restart].contains("if [ -n \"$2\" ]"),
        "{postinst}"
    );
    // Stopped on removal only; the guard never (docker.service requires it: Docker would stop).
    let prerm = read("prerm");
    let stops: Vec<&str> = prerm
        .lines()
        .filter(|l| l.contains("stop ") && !l.trim_start().starts_with('#'))
        .collect();
    assert_eq!(
        stops,
        ["    deb-systemd-invoke stop kicky-agent.service >/dev/null || true"],
        "{prerm}"
    );
    assert!(prerm.contains("[ \"$1\" = remove ]"), "{prerm}");
    // On removal the guard is disabled, so that Docker's next start does not require it.
    let postrm = read("postrm");
    let purge = postrm
        .find("deb-systemd-helper purge kicky-agent-imds-guard.service")
        .expect("the guard disabled");
    assert!(
        postrm[..purge].contains("if [ \"$1\" = remove ]"),
        "{postrm}"
    );
    // The boot is not ordered after the agent.
    let unit = std::fs::read_to_string(repo("systemd/kicky-agent.service")).unwrap();
    for directive in [
        "DefaultDependencies=no",
        "Requires=sysinit.target",
        "After=sysinit.target basic.target",
        "Conflicts=shutdown.target",
        "Before=shutdown.target",
        "WantedBy=multi-user.target",
    ] {
        assert!(unit.lines().any(|l| l == directive), "{directive}");
    }
    // The unit in the package runs the binary where the package puts it.
    let unit = std::fs::read_to_string(repo("systemd/kicky-agent.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/bin/kicky-agent run"),
        "{unit}"
    );
}

/// Network namespaces made for one test: a "host" with two Docker-like bridges, a container on
/// each, and instance metadata one hop away, as on an instance. The host's own tables are never
/// touched; the namespaces and the processes in them (stopped by PID) go when this is dropped.
struct Instance {
    prefix: String,
    metadata: Option<std::process::Child>,
    _docroot: tempfile::TempDir,
}

/// The topology: `h` routes between `kicky-imds` (container `a`, 10.201.1.2), `br-other`
/// (container `b`, 10.201.2.2) and `m`, which holds 169.254.169.254 and, to show that only the
/// metadata address is cut, 192.0.2.10. FORWARD drops by default, as dockerd leaves it, and
/// accepts each bridge's traffic out and its replies back, as dockerd's own rules do.
const TOPOLOGY: &str = r#"
set -eu
p=$1
x() { ns=$1; shift; ip netns exec "$p$ns" "$@"; }
for n in h a b m; do ip netns add "$p$n"; x "$n" ip link set lo up; done
x h sysctl -qw net.ipv4.ip_forward=1
link() { # bridge, container, address, gateway
    x h ip link add "$1" type bridge 2>/dev/null || true
    x h ip addr add "$4/24" dev "$1" 2>/dev/null || true
    x h ip link set "$1" up
    x h ip link add "v$2" type veth peer name eth0 netns "$p$2"
    x h ip link set "v$2" master "$1" up
    x "$2" ip addr add "$3/24" dev eth0
    x "$2" ip link set eth0 up
    x "$2" ip route add default via "$4"
    x h iptables -A FORWARD -i "$1" ! -o "$1" -j ACCEPT
    x h iptables -A FORWARD -o "$1" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
}
x h iptables -P FORWARD DROP
link kicky-imds a 10.201.1.2 10.201.1.1
link br-other b 10.201.2.2 10.201.2.1
x h ip link add vm type veth peer name eth0 netns "${p}m"
x h ip addr add 169.254.0.1/16 dev vm
x h ip link set vm up
x h ip route add 192.0.2.10/32 dev vm
x m ip addr add 169.254.169.254/16 dev eth0
x m ip addr add 192.0.2.10/32 dev eth0
x m ip link set eth0 up
x m ip route add 10.201.0.0/16 via 169.254.0.1
"#;

/// What the guard says when it is done.
const GUARDED: &str =
    "kicky-agent-imds-guard: containers reach 169.254.169.254/32 only from the bridge kicky-imds\n";

/// What dockerd does to DOCKER-USER each time it starts (libnetwork's arrangeUserFilterRule):
/// makes the chain if it is missing, appends a RETURN if there is none, and puts the jump to it
/// first in FORWARD. It never flushes the chain nor changes what is in it.
const DOCKERD_STARTS: &str = r#"
set -eu
iptables -N DOCKER-USER 2>/dev/null || true
iptables -C DOCKER-USER -j RETURN 2>/dev/null || iptables -A DOCKER-USER -j RETURN
iptables -D FORWARD -j DOCKER-USER 2>/dev/null || true
iptables -I FORWARD -j DOCKER-USER
"#;

impl Instance {
    fn new() -> Instance {
        let prefix = format!("kt{}", fastrand::u32(..) % 1_000_000);
        let docroot = tempfile::tempdir().unwrap();
        std::fs::create_dir(docroot.path().join("latest")).unwrap();
        std::fs::write(docroot.path().join("latest/index.html"), "meta-data\n").unwrap();
        let mut instance = Instance {
            prefix,
            metadata: None,
            _docroot: docroot,
        };
        let (status, text) = instance.sh("", TOPOLOGY);
        assert_eq!(status, 0, "the test's namespaces: {text}");
        // Instance metadata: busybox's httpd, in the foreground, so its PID is ours to stop.
        instance.metadata = Some(
            instance
                .cmd("m", "busybox")
                .args(["httpd", "-f", "-p", "80", "-h"])
                .arg(instance._docroot.path())
                .spawn()
                .expect("busybox httpd"),
        );
        instance
    }

    /// A command run in namespace `ns` of this instance ("" for the test's own).
    fn cmd(&self, ns: &str, program: &str) -> Command {
        if ns.is_empty() {
            return Command::new(program);
        }
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &format!("{}{ns}", self.prefix), program]);
        cmd
    }

    /// `script` run by sh in namespace `ns`, with the namespaces' prefix as $1.
    fn sh(&self, ns: &str, script: &str) -> (i32, String) {
        let out = self
            .cmd(ns, "sh")
            .args(["-c", script, "sh", &self.prefix])
            .output()
            .unwrap();
        crate::common::status_and_text(&out)
    }

    /// The guard, as its unit runs it, with `bridge`, on the host of this instance.
    fn guard(&self, bridge: &str) -> (i32, String) {
        let out = self
            .cmd("h", "sh")
            .arg(repo("ami/imds-guard.sh"))
            .arg(bridge)
            .output()
            .unwrap();
        crate::common::status_and_text(&out)
    }

    /// Whether the container `ns` gets an answer from `address` (curl, 2 s).
    fn reaches(&self, ns: &str, address: &str) -> bool {
        let url = format!("http://{address}/latest/");
        let out = self
            .cmd(ns, "curl")
            .args(["-s", "--noproxy", "*", "-m", "2", &url])
            .output()
            .unwrap();
        out.status.success() && out.stdout == b"meta-data\n"
    }

    fn rules(&self, chain: &str) -> Vec<String> {
        let (status, text) = self.sh("h", &format!("iptables -S {chain}"));
        assert_eq!(status, 0, "{text}");
        text.lines().map(str::to_string).collect()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(mut child) = self.metadata.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for n in ["h", "a", "b", "m"] {
            let _ = Command::new("ip")
                .args(["netns", "del", &format!("{}{n}", self.prefix)])
                .output();
        }
    }
}

/// kicky-agent-imds-guard, run as its unit runs it (before dockerd, and again whenever Docker
/// restarts), in namespaces of the test's own with a real iptables: the container on the
/// `kicky-imds` network reaches instance metadata, the other does not (but reaches everything
/// else); dockerd starting again keeps the rule; running the guard again leaves one copy of it,
/// first. The host's own DOCKER-USER is the same afterwards, and it has no KICKY-IMDS.
#[test]
fn the_imds_guard_lets_only_the_named_bridge_reach_instance_metadata() {
    // What the guard would change on the host: DOCKER-USER, and a KICKY-IMDS chain. (The rest of
    // the host's tables changes under other tests, as dockerd makes and removes networks.)
    let host_rules = |chain: &str| {
        let out = Command::new("iptables")
            .args(["-S", chain])
            .output()
            .expect("iptables (tests/rig/install.sh installs it)");
        crate::common::status_and_text(&out)
    };
    let before = (host_rules("DOCKER-USER"), host_rules("KICKY-IMDS"));
    assert_ne!(
        before.1 .0, 0,
        "the host has a KICKY-IMDS chain: {}",
        before.1 .1
    );
    {
        let i = Instance::new();
        let all_reach = ["a", "b"]
            .iter()
            .all(|c| i.reaches(c, "169.254.169.254") && i.reaches(c, "192.0.2.10"));
        assert!(all_reach, "without the guard, every container reaches both");

        // Boot: the guard, then dockerd.
        assert_eq!(i.guard("kicky-imds"), (0, GUARDED.to_string()));
        assert_eq!(i.sh("h", DOCKERD_STARTS).0, 0);
        let check = |when: &str| {
            assert!(
                i.reaches("a", "169.254.169.254"),
                "{when}: kicky-imds cut off"
            );
            assert!(
                !i.reaches("b", "169.254.169.254"),
                "{when}: another network reached instance metadata"
            );
            assert!(
                i.reaches("b", "192.0.2.10"),
                "{when}: more than metadata cut"
            );
        };
        check("at boot");
        // dockerd restarts alone: DOCKER-USER keeps the rule.
        assert_eq!(i.sh("h", DOCKERD_STARTS).0, 0);
        check("after dockerd restarted");
        // The unit runs again with Docker (PartOf=docker.service): one jump, first; one chain.
        assert_eq!(i.guard("kicky-imds"), (0, GUARDED.to_string()));
        assert_eq!(i.sh("h", DOCKERD_STARTS).0, 0);
        check("after the guard ran again");
        assert_eq!(
            i.rules("DOCKER-USER"),
            [
                "-N DOCKER-USER",
                "-A DOCKER-USER -d 169.254.169.254/32 -j KICKY-IMDS",
                "-A DOCKER-USER -j RETURN",
            ]
        );
        assert_eq!(
            i.rules("KICKY-IMDS"),
            [
                "-N KICKY-IMDS",
                "-A KICKY-IMDS -i kicky-imds -j RETURN",
                "-A KICKY-IMDS -j DROP",
            ]
        );
        // A name iptables would read as syntax is refused, and changes nothing.
        let (status, text) = i.guard("-j ACCEPT");
        assert_eq!(status, 2, "{text}");
        assert!(text.contains("not a bridge interface name"), "{text}");
        check("after a refused name");
    }
    assert_eq!(
        (host_rules("DOCKER-USER"), host_rules("KICKY-IMDS")),
        before,
        "the host's own tables changed"
    );
}
