//! The systemd unit and the AMI install script: what an image build bakes in.

use std::path::Path;
use std::process::Command;

const AGENT: &str = env!("CARGO_BIN_EXE_kicky-agent");

fn repo(rel: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

#[test]
fn the_unit_passes_systemd_analyze_verify() {
    let unit = std::fs::read_to_string(repo("systemd/kicky-agent.service")).unwrap();
    // verify checks that the ExecStart binaries exist: point them at the binary under test.
    let unit = unit.replace("/usr/bin/kicky-agent", AGENT);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kicky-agent.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify: {stderr}"
    );
}

/// The exposure `systemd-analyze security` gives the unit stays where the README says (2.2; it
/// was 4.3 before the unit was hardened): a setting dropped or loosened shows here.
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
        ("-rw-r--r--", "./etc/kicky-agent/agent.yaml"),
        ("-rw-r--r--", "./usr/share/doc/kicky-agent/README.md"),
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
    assert!(
        postinst.contains("deb-systemd-helper enable kicky-agent.service"),
        "{postinst}"
    );
    assert!(
        postinst.contains("install -d -m 0755 /etc/kicky-agent/agent.d"),
        "{postinst}"
    );
    assert!(postinst.contains("install -d -m 0755 /srv"), "{postinst}");
    // Never started by the install; an upgrade (`$2` set) restarts it only if it runs.
    assert!(!postinst.contains("deb-systemd-invoke start"), "{postinst}");
    assert!(!postinst.contains("#DEBHELPER#"), "{postinst}");
    let restart = postinst
        .find("try-restart kicky-agent.service")
        .expect("try-restart on upgrade");
    assert!(
        postinst[..restart].contains("if [ -n \"$2\" ]"),
        "{postinst}"
    );
    let prerm = read("prerm");
    assert!(
        prerm.contains("[ \"$1\" = remove ]")
            && prerm.contains("deb-systemd-invoke stop kicky-agent.service"),
        "{prerm}"
    );
    // The unit in the package runs the binary where the package puts it.
    let unit = std::fs::read_to_string(repo("systemd/kicky-agent.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/bin/kicky-agent run"),
        "{unit}"
    );
}
