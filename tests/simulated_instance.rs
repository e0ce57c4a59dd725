//! The AMI boot, simulated end to end (the slow group: `tests/run --test integration
//! simulated_instance::`). A Debian 12 root file system with systemd (tests/sim/image.sh,
//! debootstrap, cached per machine) boots as a container with systemd as PID 1, on the host's
//! network and Docker socket; the .deb is installed with `dpkg -i` as an AMI build would, and the
//! launch template's user data (a `#kicky-agent` override of the AMI's sample config) comes from an
//! IMDS layer of the test's own. Then what an operator sees on a real instance: the unit enabled
//! and not started by the install; after a boot, `activating` until the stack is healthy, then
//! `active` with the agent's STATUS; `systemctl reload` resyncing; the SSM document's command;
//! a bad config not restart-looping; a hung loop restarted by the watchdog; a reboot converging
//! again without touching the containers. Then the boot of an application that never gets healthy
//! (multi-user.target and cloud-init's final stage do not wait for it), and a package upgrade and
//! removal (dpkg returns at once, the agent is restarted or stopped, no container and not Docker
//! are touched).

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use aws_sdk_ssm::types::ParameterType;
use common::imds::OwnImds;
use common::stack::{docker, id_of, inspect, running_healthy, started_at};
use common::{Rig, Scratch};

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// A simulated instance, removed (by name) when dropped.
struct Instance {
    name: String,
}

impl Instance {
    /// Runs the image with systemd as PID 1 (on the host's network and Docker socket), and waits
    /// until it booted.
    fn boot(name: String, image: &str) -> Instance {
        docker(&["rm", "-f", &name]);
        let i = Instance { name };
        let run = Command::new("docker")
            .args([
                "run",
                "-d",
                "--name",
                &i.name,
                "--network",
                "host",
                "--cap-add",
                "SYS_ADMIN",
            ])
            .args([
                "-v",
                "/sys/fs/cgroup:/sys/fs/cgroup:rw",
                "--tmpfs",
                "/run",
                "--tmpfs",
                "/run/lock",
            ])
            .args(["-v", "/var/run/docker.sock:/var/run/docker.sock"])
            .args(["--stop-signal", "SIGRTMIN+3", image, "/sbin/init"])
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        assert!(
            i.until(Duration::from_secs(60), booted),
            "systemd did not boot"
        );
        i
    }

    /// `docker cp` of a host file into the instance.
    fn copy_in(&self, from: &Path, to: &str) {
        let copied = Command::new("docker")
            .arg("cp")
            .arg(from)
            .arg(format!("{}:{to}", self.name))
            .status()
            .unwrap();
        assert!(copied.success());
    }

    /// The only change for the rig: where instance metadata is (169.254.169.254 on EC2).
    fn point_at(&self, imds: &OwnImds) {
        let dropin = format!(
            "mkdir -p /etc/systemd/system/kicky-agent.service.d && printf '[Service]\\nEnvironment=AWS_EC2_METADATA_SERVICE_ENDPOINT={}\\n' > /etc/systemd/system/kicky-agent.service.d/rig.conf",
            imds.url
        );
        assert_eq!(self.exec(&dropin).0, 0);
    }

    /// A boot of the instance: the container restarted, as a reboot.
    fn reboot(&self) {
        docker(&["restart", "-t", "10", &self.name]);
    }

    fn is_active(&self, unit: &str) -> String {
        self.exec(&format!("systemctl is-active {unit}")).1
    }

    /// The instance's monotonic clock (as systemd's `*TimestampMonotonic`), in microseconds.
    fn monotonic_us(&self) -> u64 {
        let uptime = self.exec("cut -d' ' -f1 /proc/uptime").1;
        (uptime.parse::<f64>().unwrap() * 1e6) as u64
    }

    /// Runs `script`, timed: its status, output and how long it took.
    fn timed(&self, script: &str) -> (i32, String, Duration) {
        let started = Instant::now();
        let (status, text) = self.exec(script);
        (status, text, started.elapsed())
    }

    fn exec(&self, script: &str) -> (i32, String) {
        let out = Command::new("docker")
            .args(["exec", &self.name, "sh", "-c", script])
            .output()
            .expect("docker exec");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), text.trim().to_string())
    }

    fn unit(&self, property: &str) -> String {
        self.exec(&format!(
            "systemctl show -p {property} --value kicky-agent.service"
        ))
        .1
    }

    fn journal(&self) -> String {
        self.exec("journalctl -u kicky-agent.service --no-pager -o cat")
            .1
    }

    /// Polls `done` every 100 ms for `bound`; whether it held.
    fn until(&self, bound: Duration, mut done: impl FnMut(&Instance) -> bool) -> bool {
        let started = Instant::now();
        while started.elapsed() < bound {
            if done(self) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        docker(&["rm", "-f", &self.name]);
    }
}

fn sim_image() -> String {
    let out = Command::new(repo("tests/sim/image.sh"))
        .output()
        .expect("tests/sim/image.sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The launch template's user data: the AMI's sample config, pointed at this application (its
/// compose file in `bucket`, the rig's registry), the lifecycle hook and the watch off.
fn user_data(
    rig: &Rig,
    stack: &common::stack::Stack,
    bucket: &str,
    healthy_timeout: &str,
) -> String {
    let project = &stack.project;
    format!(
        "#kicky-agent\nproject: {project}\nworkdir: /srv/{project}\naws:\n  endpoint_url: {moto}\n  s3_force_path_style: true\n\
         env:\n  parameters:\n    - name: /kt/{project}/env\n      format: dotenv\n\
         files:\n  - source: s3://{bucket}/docker-compose.yml\n    path: docker-compose.yml\n\
         compose:\n  file: docker-compose.yml\n  pull: missing\n  prune: false\n  healthy_timeout: {healthy_timeout}\n\
         registries:\n  - server: {registry}\n    username: tester\n    password: {{ parameter: /kt/{project}/registry }}\n\
         lifecycle:\n  hook: off\nwatch:\n  interval: 0\n",
        moto = rig.moto_url,
        registry = stack.registry,
    )
}

/// The rig's side of an instance: instance metadata serving `user_data` (stopped when dropped),
/// and a scratch directory for the packages.
struct Launch {
    s: Scratch,
    imds: OwnImds,
}

impl Launch {
    fn new(rig: &Rig, user_data: &str) -> Launch {
        let s = Scratch::new();
        let fixture = s.path("imds-fixture");
        std::fs::create_dir_all(&fixture).unwrap();
        std::fs::write(fixture.join("user-data"), user_data).unwrap();
        std::fs::write(fixture.join("region"), &rig.region).unwrap();
        let imds = OwnImds::start(rig, &rig.moto_url, s.dir.path(), &fixture);
        Launch { s, imds }
    }
}

/// An instance as an AMI build leaves it: the .deb installed with `dpkg -i` (enabled, not
/// started), pointed at the rig's instance metadata; not booted yet.
fn baked(name: String, launch: &Launch, extra: &str) -> Instance {
    let deb = tokio::task::block_in_place(|| common::build_deb(launch.s.dir.path()));
    let image = tokio::task::block_in_place(sim_image);
    let i = Instance::boot(name, &image);
    assert_eq!(i.exec(extra).0, 0, "{extra}");
    i.copy_in(&deb, "/tmp/kicky-agent.deb");
    let (status, text) = i.exec("dpkg -i /tmp/kicky-agent.deb");
    assert_eq!(status, 0, "{text}");
    assert_eq!(i.exec("systemctl is-enabled kicky-agent").1, "enabled");
    assert_eq!(
        i.is_active("kicky-agent"),
        "inactive",
        "the install started it"
    );
    i.point_at(&launch.imds);
    i
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ami_boots_to_a_healthy_stack_under_systemd() {
    let rig = Rig::get();
    let stack = common::stack::Stack::new(&rig, "sim").await;
    let project = stack.project.clone();
    stack.env(&rig, "GREETING=from-ssm\n").await;
    let bucket = rig.bucket("sim", false).await;
    let compose = format!(
        "services:\n  web:\n    image: {}/tester/web:1\n    env_file: .env\n",
        stack.registry
    );
    rig.put_object(&bucket, "docker-compose.yml", compose.into_bytes())
        .await;
    rig.put(&format!("/kt/{project}/bad"), "x", ParameterType::String)
        .await;

    // The AMI build: dpkg -i; the unit enabled, not started.
    let launch = Launch::new(&rig, &user_data(&rig, &stack, &bucket, "60s"));
    let i = baked(format!("kt-sim-{project}"), &launch, "true");

    // First boot of the instance: the enabled unit starts; `activating` until the stack is healthy.
    let web = format!("{project}-web-1");
    let booted_at = Instant::now();
    i.reboot();
    let mut seen_activating = false;
    let became_active = i.until(Duration::from_secs(120), |i| {
        let state = i.exec("systemctl is-active kicky-agent").1;
        if state == "activating" {
            seen_activating = true;
        }
        if state == "active" {
            assert!(
                running_healthy(&web),
                "active before the stack was healthy:\n{}",
                i.journal()
            );
            return true;
        }
        false
    });
    let boot_to_healthy = booted_at.elapsed();
    assert!(became_active, "not active:\n{}", i.journal());
    assert!(seen_activating, "never seen activating:\n{}", i.journal());
    let status = i.exec("systemctl status kicky-agent --no-pager").1;
    assert!(status.contains("Status: \"in sync since"), "{status}");
    let journal = i.journal();
    assert!(!journal.contains("from-ssm"), "a value in the journal");
    println!(
        "simulated instance: boot (container restart) to healthy in {:.1} s",
        boot_to_healthy.as_secs_f64()
    );

    // The sandbox is in effect on the running agent, not only written in the unit: the kernel's
    // view of its main process, and systemd's own audit of the unit.
    let pid = i.unit("MainPID");
    let proc_status = i.exec(&format!("cat /proc/{pid}/status")).1;
    let field = |name: &str| {
        proc_status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .map(str::trim)
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status:\n{proc_status}"))
            .to_string()
    };
    assert_eq!(field("NoNewPrivs"), "1", "NoNewPrivileges=yes");
    assert_eq!(field("Seccomp"), "2", "SystemCallFilter: a seccomp filter");
    // CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER (bits 0 to 3) of what the
    // machine has: exactly those the instance's PID 1 holds (this container lacks
    // CAP_DAC_READ_SEARCH, which an EC2 instance has), nothing else.
    let hex = |text: &str| u64::from_str_radix(text, 16).unwrap();
    let init = i.exec("grep CapBnd /proc/1/status").1;
    let init = hex(init.split_whitespace().nth(1).expect("PID 1's CapBnd"));
    assert_eq!(hex(&field("CapBnd")), init & 0xf, "CapabilityBoundingSet");
    let (_, audit) = i.exec("systemd-analyze security kicky-agent.service --no-pager");
    let exposure: f64 = audit
        .lines()
        .rev()
        .find_map(|l| l.split("exposure level for kicky-agent.service:").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{audit}"));
    println!("simulated instance: systemd-analyze security exposure {exposure}");
    assert!(exposure <= 3.0, "exposure {exposure}:\n{audit}");

    // `systemctl reload` resyncs and waits for it; so does the SSM document's command.
    let (status, text) = i.exec("systemctl reload kicky-agent");
    assert_eq!(status, 0, "{text}\n{}", i.journal());
    assert!(
        i.journal()
            .contains("resync requested over the control socket"),
        "{}",
        i.journal()
    );
    // As the resync document runs it, no release named: the configured one.
    let (status, text) = i.exec("kicky-agent resync --timeout 15min --release ''");
    assert_eq!(status, 0, "{text}");
    let web_id = inspect(&web).unwrap()["Id"].clone();

    // A bad config: the daemon exits 2 and systemd does not restart it, however long one waits.
    let bad = "printf 'watch:\\n  interval: soon\\n' > /etc/kicky-agent/agent.d/90-bad.yaml";
    assert_eq!(i.exec(bad).0, 0);
    i.exec("systemctl restart kicky-agent");
    let failed = i.until(Duration::from_secs(20), |i| {
        i.exec("systemctl is-active kicky-agent").1 == "failed"
    });
    assert!(failed, "{}", i.journal());
    let restarts = i.unit("NRestarts");
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(
        i.unit("NRestarts"),
        restarts,
        "restart-looped:\n{}",
        i.journal()
    );
    assert_eq!(i.unit("ExecMainStatus"), "2");
    assert!(i.journal().contains("90-bad.yaml"), "{}", i.journal());
    // journald read each line's priority: the error is among the errors, a sync's progress is
    // not, and no `<N>` prefix is left in the text.
    let errors = i
        .exec("journalctl -u kicky-agent.service --no-pager -o cat -p err")
        .1;
    assert!(errors.contains("90-bad.yaml"), "{errors}");
    assert!(
        !errors.contains("fetching parameters and files"),
        "{errors}"
    );
    let journal = i.journal();
    assert!(
        journal.contains("fetching parameters and files"),
        "{journal}"
    );
    let prefixed: Vec<&str> = journal
        .lines()
        .filter(|l| l.len() > 3 && l.starts_with('<') && l.as_bytes()[2] == b'>')
        .collect();
    assert!(
        prefixed.is_empty(),
        "priorities left in the text: {prefixed:?}"
    );
    assert!(
        running_healthy(&web),
        "the application stopped with the agent"
    );
    i.exec("rm /etc/kicky-agent/agent.d/90-bad.yaml; systemctl reset-failed kicky-agent; systemctl start kicky-agent");
    assert!(
        i.until(Duration::from_secs(60), |i| i
            .exec("systemctl is-active kicky-agent")
            .1
            == "active"),
        "{}",
        i.journal()
    );

    // A hung loop: the watchdog (shortened here to 6 s) kills and restarts it.
    let short = "printf '[Service]\\nWatchdogSec=6\\nTimeoutAbortSec=2\\n' > /etc/systemd/system/kicky-agent.service.d/watchdog.conf && systemctl daemon-reload && systemctl restart kicky-agent";
    assert_eq!(i.exec(short).0, 0);
    assert!(i.until(Duration::from_secs(60), |i| i
        .exec("systemctl is-active kicky-agent")
        .1
        == "active"));
    let pid = i.unit("MainPID");
    let restarts = i.unit("NRestarts");
    assert_eq!(i.exec(&format!("kill -STOP {pid}")).0, 0);
    let restarted = i.until(Duration::from_secs(60), |i| {
        i.unit("NRestarts") != restarts && i.exec("systemctl is-active kicky-agent").1 == "active"
    });
    assert!(restarted, "{}", i.journal());
    assert!(i.journal().contains("Watchdog timeout"), "{}", i.journal());
    assert_ne!(i.unit("MainPID"), pid);

    // A reboot: the agent comes back, and the running containers are left as they were.
    i.reboot();
    assert!(
        i.until(Duration::from_secs(120), |i| i
            .exec("systemctl is-active kicky-agent")
            .1
            == "active"),
        "{}",
        i.journal()
    );
    assert_eq!(
        inspect(&web).unwrap()["Id"],
        web_id,
        "the reboot recreated the container"
    );
    assert!(running_healthy(&web));
}

/// Stand-ins, in the instance, for what an EC2 instance has around the agent: Docker's unit (the
/// engine itself is the host's, through its socket), so that what the package does to
/// docker.service shows; kicky-agent-imds-guard's rule made a no-op (no iptables here); and
/// cloud-init's final stage, ordered as Debian's cloud-final.service is: after multi-user.target.
const AROUND: &str = "set -e
printf '[Unit]\\nDescription=Docker (stand-in)\\n[Service]\\nExecStart=/bin/sleep infinity\\n[Install]\\nWantedBy=multi-user.target\\n' > /etc/systemd/system/docker.service
mkdir -p /etc/systemd/system/kicky-agent-imds-guard.service.d
printf '[Service]\\nExecStart=\\nExecStart=/bin/true\\n' > /etc/systemd/system/kicky-agent-imds-guard.service.d/sim.conf
printf '[Unit]\\nDescription=cloud-init final stage (stand-in)\\nAfter=multi-user.target\\n[Service]\\nType=oneshot\\nRemainAfterExit=yes\\nExecStart=/bin/true\\n[Install]\\nWantedBy=multi-user.target\\n' > /etc/systemd/system/cloud-final.service
systemctl daemon-reload
systemctl enable docker.service cloud-final.service 2>/dev/null";

/// With READY=1 only once the application is healthy, the boot must not be ordered after the
/// agent: multi-user.target and cloud-init's final stage are reached while the agent still waits
/// for an application that never gets healthy.
#[tokio::test(flavor = "multi_thread")]
async fn the_boot_does_not_wait_for_an_application_that_never_gets_healthy() {
    let rig = Rig::get();
    let stack = common::stack::Stack::new(&rig, "simboot").await;
    let project = stack.project.clone();
    stack.env(&rig, "GREETING=hello\n").await;
    let bucket = rig.bucket("simboot", false).await;
    let compose = format!(
        "services:\n  web:\n    image: {}/tester/unhealthy:1\n",
        stack.registry
    );
    rig.put_object(&bucket, "docker-compose.yml", compose.into_bytes())
        .await;
    let launch = Launch::new(&rig, &user_data(&rig, &stack, &bucket, "10s"));
    let i = baked(format!("kt-sim-{project}"), &launch, AROUND);

    let booted_at = Instant::now();
    i.reboot();
    let reached = i.until(Duration::from_secs(60), |i| {
        i.is_active("multi-user.target") == "active" && i.is_active("cloud-final") == "active"
    });
    assert!(
        reached,
        "multi-user.target: {}, cloud-final: {}, jobs:\n{}\n{}",
        i.is_active("multi-user.target"),
        i.is_active("cloud-final"),
        i.exec("systemctl list-jobs --no-pager").1,
        i.journal()
    );
    println!(
        "simulated instance: boot to multi-user.target and cloud-final with an application that never gets healthy: {:.1} s",
        booted_at.elapsed().as_secs_f64()
    );
    // The agent is still at it, and says why; it stays so, however long one waits.
    // (10 s of health wait once the image is pulled and started: well under the bound, which
    // leaves room for a machine loaded by the rest of the suite.)
    assert!(
        i.until(Duration::from_secs(180), |i| i
            .unit("StatusText")
            .contains("first sync failed")),
        "no failed first sync within 180 s; status {:?}\n{}\nprocesses:\n{}\nthe boot's journal:\n{}",
        i.unit("StatusText"),
        i.journal(),
        i.exec("ps -eo pid,stat,etime,wchan:20,cmd").1,
        i.exec("journalctl -b --no-pager -n 60").1
    );
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(i.is_active("kicky-agent"), "activating", "{}", i.journal());
    // It goes on retrying, and each failure says why (between two, STATUS= is the retry's phase:
    // looking once at a fixed moment would race the retries).
    assert!(
        i.until(Duration::from_secs(90), |i| {
            let status = i.unit("StatusText");
            status.contains("unhealthy") && !status.contains("(attempt 1)")
        }),
        "{}\n{}",
        i.unit("StatusText"),
        i.journal()
    );
    // The manager's job queue still holds the agent's start job: the system says `starting`
    // (docs/operator-guide.md tells operators to read it as the application's boot).
    assert_eq!(i.exec("systemctl is-system-running").1, "starting");
    let enter = i
        .exec("systemctl show -p ActiveEnterTimestampMonotonic --value multi-user.target")
        .1;
    assert_ne!(enter, "0", "multi-user.target never entered active");
}

/// A package upgrade: `dpkg -i` of a newer build returns at once even while the application is
/// unhealthy; the agent is restarted into the new build; no container is recreated or restarted,
/// and neither is Docker. Then `dpkg -r`: the agent stops, the application and Docker go on, and
/// Docker can still start without the package.
#[tokio::test(flavor = "multi_thread")]
async fn an_upgrade_and_a_removal_restart_and_stop_the_agent_and_leave_the_containers_alone() {
    let rig = Rig::get();
    let stack = common::stack::Stack::new(&rig, "simdpkg").await;
    let project = stack.project.clone();
    stack.env(&rig, "GREETING=hello\n").await;
    let bucket = rig.bucket("simdpkg", false).await;
    // web's health is what the test says it is: unhealthy while /www/sick exists.
    let compose = format!(
        "services:\n  web:\n    image: {registry}/tester/web:1\n    healthcheck:\n      test: [\"CMD\", \"/bin/sh\", \"-c\", \"test ! -e /www/sick\"]\n      interval: 1s\n      timeout: 1s\n      retries: 1\n  side:\n    image: {registry}/tester/web:1\n",
        registry = stack.registry
    );
    rig.put_object(&bucket, "docker-compose.yml", compose.into_bytes())
        .await;
    let launch = Launch::new(&rig, &user_data(&rig, &stack, &bucket, "5min"));
    let newer =
        tokio::task::block_in_place(|| common::build_deb_as(launch.s.dir.path(), Some("99.0.0-1")));
    let i = baked(format!("kt-sim-{project}"), &launch, AROUND);
    i.reboot();
    assert!(
        i.until(Duration::from_secs(120), |i| i.is_active("kicky-agent")
            == "active"),
        "{}",
        i.journal()
    );
    let containers = [format!("{project}-web-1"), format!("{project}-side-1")];
    let seen = || -> Vec<(String, String, bool)> {
        containers
            .iter()
            .map(|c| (id_of(c), started_at(c), running(c)))
            .collect()
    };
    let before = seen();
    assert!(
        before.iter().all(|(id, _, up)| !id.is_empty() && *up),
        "{before:?}"
    );
    let docker_pid = i.exec("systemctl show -p MainPID --value docker.service").1;
    assert_ne!(docker_pid, "0");
    let old_pid = i.unit("MainPID");

    // The application turns unhealthy: a restarted agent cannot be ready until it is well again.
    assert_eq!(docker(&["exec", &containers[0], "touch", "/www/sick"]), "");
    assert!(
        i.until(Duration::from_secs(30), |_| health(&containers[0])
            == "unhealthy"),
        "{}",
        health(&containers[0])
    );

    // The upgrade: dpkg returns at once; the restart it queued follows.
    i.copy_in(&newer, "/tmp/kicky-agent-newer.deb");
    let dpkg_began = i.monotonic_us();
    let (status, text, took) = i.timed("timeout 60 dpkg -i /tmp/kicky-agent-newer.deb");
    assert_eq!(status, 0, "{text}");
    assert!(
        took < Duration::from_secs(20),
        "dpkg -i took {took:?}: {text}"
    );
    println!(
        "simulated instance: dpkg -i of a newer build in {:.1} s",
        took.as_secs_f64()
    );
    assert_eq!(
        i.exec("dpkg-query -W -f '${Version}' kicky-agent").1,
        "99.0.0-1"
    );
    let restarted = i.until(Duration::from_secs(60), |i| {
        let pid = i.unit("MainPID");
        pid != old_pid && pid != "0" && i.is_active("kicky-agent") == "activating"
    });
    assert!(restarted, "{}\n{}", i.unit("ActiveState"), i.journal());
    let new_pid = i.unit("MainPID");
    // The new process started after dpkg began, so from the file it unpacked (the agent is not
    // dumpable: /proc/<pid>/exe cannot be read here).
    let started: u64 = i.unit("ExecMainStartTimestampMonotonic").parse().unwrap();
    assert!(started > dpkg_began, "{started} <= {dpkg_began}");
    // It stays short of ready while the application is unhealthy, touching nothing.
    assert!(
        i.until(Duration::from_secs(30), |i| i
            .unit("StatusText")
            .contains("first sync failed")),
        "{}",
        i.journal()
    );
    assert_eq!(i.is_active("kicky-agent"), "activating");
    assert_eq!(seen(), before, "the upgrade touched a container");
    assert_eq!(
        i.exec("systemctl show -p MainPID --value docker.service").1,
        docker_pid,
        "the upgrade restarted Docker"
    );

    // Well again: the new agent becomes ready, still without touching a container.
    assert_eq!(docker(&["exec", &containers[0], "rm", "/www/sick"]), "");
    assert!(
        i.until(Duration::from_secs(90), |i| i.is_active("kicky-agent")
            == "active"),
        "{}",
        i.journal()
    );
    assert_eq!(i.unit("MainPID"), new_pid);
    assert_eq!(seen(), before, "the restarted agent touched a container");

    // The removal: the agent stops; the application and Docker go on.
    let (status, text, took) = i.timed("timeout 60 dpkg -r kicky-agent");
    assert_eq!(status, 0, "{text}");
    assert!(
        took < Duration::from_secs(20),
        "dpkg -r took {took:?}: {text}"
    );
    assert_eq!(i.exec("pgrep -x kicky-agent").0, 1, "the agent still runs");
    assert_eq!(seen(), before, "the removal touched a container");
    assert!(containers.iter().all(|c| running_healthy(c)));
    assert_eq!(
        i.exec("systemctl show -p MainPID --value docker.service").1,
        docker_pid,
        "the removal stopped Docker"
    );
    // Docker starts without the package (at the next boot): nothing requires the guard any more.
    let (status, text) = i.exec("systemctl restart docker.service");
    assert_eq!(status, 0, "{text}");
    // Installed again, the guard is required by Docker again.
    let (status, text) = i.exec("dpkg -i /tmp/kicky-agent-newer.deb");
    assert_eq!(status, 0, "{text}");
    assert_eq!(
        i.exec("systemctl is-enabled kicky-agent-imds-guard kicky-agent")
            .1,
        "enabled\nenabled"
    );
    assert!(i
        .exec("systemctl show -p Requires --value docker.service")
        .1
        .contains("kicky-agent-imds-guard.service"));
}

fn running(name: &str) -> bool {
    inspect(name).is_some_and(|c| c["State"]["Running"] == true)
}

fn health(name: &str) -> String {
    inspect(name)
        .and_then(|c| c["State"]["Health"]["Status"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Files served over HTTP from 127.0.0.1 (a free port) while it lives: `GET /<path>` answers the
/// file `root/<path>`, 404 otherwise. Stands in for AWS's bucket of SSM Agent packages.
struct FileServer {
    url: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl FileServer {
    fn start(root: &Path) -> FileServer {
        use std::io::{BufRead, BufReader, Write};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (root, stopped) = (root.to_path_buf(), stop.clone());
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                let Ok((stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                stream.set_nonblocking(false).unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                let _ = reader.read_line(&mut line);
                let path = line
                    .split(' ')
                    .nth(1)
                    .unwrap_or("/")
                    .trim_start_matches('/');
                let body = (!path.contains(".."))
                    .then(|| std::fs::read(root.join(path)).ok())
                    .flatten();
                let mut stream = stream;
                let _ = match body {
                    Some(body) => stream
                        .write_all(
                            format!(
                                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                                body.len()
                            )
                            .as_bytes(),
                        )
                        .and_then(|()| stream.write_all(&body)),
                    None => stream.write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    ),
                };
            }
        });
        FileServer { url, stop }
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

fn booted(i: &Instance) -> bool {
    let state = i.exec("systemctl is-system-running").1;
    state == "running" || state == "degraded"
}

/// Runs `cmd`, asserting it succeeds; its stdout.
fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A throwaway OpenPGP signing key in its own GnuPG home under `dir`: (home, fingerprint).
fn throwaway_key(dir: &Path, name: &str) -> (PathBuf, String) {
    let home = dir.join(format!("gnupg-{name}"));
    std::fs::create_dir_all(&home).unwrap();
    let gpg = || {
        let mut cmd = Command::new("gpg");
        cmd.arg("--homedir").arg(&home).arg("--batch");
        cmd
    };
    run_ok(
        gpg()
            .args(["--passphrase", "", "--quick-gen-key"])
            .arg(format!("{name} <{name}@example.invalid>"))
            .args(["ed25519", "sign", "1d"]),
    );
    let colons = run_ok(gpg().args(["--with-colons", "--list-keys"]));
    let fingerprint = colons
        .lines()
        .find_map(|l| l.strip_prefix("fpr:"))
        .and_then(|l| l.split(':').find(|f| f.len() == 40))
        .expect("fingerprint")
        .to_string();
    (home, fingerprint)
}

fn sign(home: &Path, file: &Path) {
    let sig = format!("{}.sig", file.display());
    run_ok(
        Command::new("gpg")
            .arg("--homedir")
            .arg(home)
            .args(["--batch", "--yes", "--detach-sign", "-o", &sig])
            .arg(file),
    );
}

/// A stand-in `amazon-ssm-agent` package (the real one cannot be fetched here): a binary that
/// sleeps, and the unit that runs it, as the real package's `amazon-ssm-agent.service` does.
fn stand_in_agent_deb(dir: &Path, out: &Path, binary: &str) {
    let root = dir.join(format!("deb-{}", fastrand::u32(..)));
    std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    std::fs::create_dir_all(root.join("lib/systemd/system")).unwrap();
    std::fs::write(
        root.join("DEBIAN/control"),
        "Package: amazon-ssm-agent\nVersion: 3.3.0.0-standin\nArchitecture: amd64\n\
         Maintainer: kicky-agent tests <tests@example.invalid>\n\
         Description: stand-in for AWS's SSM Agent (tests only)\n",
    )
    .unwrap();
    std::fs::write(root.join("usr/bin/amazon-ssm-agent"), binary).unwrap();
    run_ok(
        Command::new("chmod")
            .arg("0755")
            .arg(root.join("usr/bin/amazon-ssm-agent")),
    );
    std::fs::write(
        root.join("lib/systemd/system/amazon-ssm-agent.service"),
        "[Unit]\nDescription=amazon-ssm-agent (stand-in)\n\n[Service]\nExecStart=/usr/bin/amazon-ssm-agent\n\n\
         [Install]\nWantedBy=multi-user.target\n",
    )
    .unwrap();
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    run_ok(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "--build"])
            .arg(&root)
            .arg(out),
    );
}

/// ami/install-ssm-agent.sh on a simulated Debian 12 instance (what the Packer build runs), with
/// its download URL and key pointed at a stand-in package signed by a throwaway key and served
/// from 127.0.0.1. It proves the script's logic (fetch, gpgv, the pinned fingerprint, refuse or
/// install and enable), not AWS's real package or key, which cannot be fetched here; AWS's key as
/// the script embeds it is checked to decode, and to refuse what another key signed.
#[tokio::test(flavor = "multi_thread")]
async fn the_ssm_agent_is_installed_only_with_a_good_signature_and_starts_at_boot() {
    let dir = tempfile::tempdir().unwrap();
    let (good_home, good_fpr) = throwaway_key(dir.path(), "signer");
    let (other_home, other_fpr) = throwaway_key(dir.path(), "intruder");
    let key = dir.path().join("key.asc");
    let exported = run_ok(
        Command::new("gpg")
            .arg("--homedir")
            .arg(&good_home)
            .args(["--batch", "--armor", "--export", &good_fpr]),
    );
    std::fs::write(&key, exported).unwrap();
    let other_key = dir.path().join("other.asc");
    let exported = run_ok(
        Command::new("gpg")
            .arg("--homedir")
            .arg(&other_home)
            .args(["--batch", "--armor", "--export", &other_fpr]),
    );
    std::fs::write(&other_key, exported).unwrap();

    // Three buckets: the package as signed; the package changed after it was signed; the package
    // signed by another key.
    let served = dir.path().join("served");
    let deb = |bucket: &str| {
        served
            .join(bucket)
            .join("latest/debian_amd64/amazon-ssm-agent.deb")
    };
    let agent = "#!/bin/sh\nexec sleep infinity\n";
    stand_in_agent_deb(dir.path(), &deb("good"), agent);
    sign(&good_home, &deb("good"));
    stand_in_agent_deb(dir.path(), &deb("tampered"), agent);
    sign(&good_home, &deb("tampered"));
    stand_in_agent_deb(
        dir.path(),
        &deb("tampered"),
        "#!/bin/sh\necho pwned\nexec sleep infinity\n",
    );
    stand_in_agent_deb(dir.path(), &deb("foreign"), agent);
    sign(&other_home, &deb("foreign"));
    let server = FileServer::start(&served);

    let image = tokio::task::block_in_place(sim_image);
    let i = Instance::boot(
        format!("kt-sim-ssm-{}", fastrand::u32(..) % 1_000_000),
        &image,
    );
    for (from, to) in [
        (
            repo("ami/install-ssm-agent.sh"),
            "/tmp/install-ssm-agent.sh",
        ),
        (key.clone(), "/tmp/key.asc"),
        (other_key.clone(), "/tmp/other.asc"),
    ] {
        let copied = Command::new("docker")
            .arg("cp")
            .arg(&from)
            .arg(format!("{}:{to}", i.name))
            .status()
            .unwrap();
        assert!(copied.success());
    }
    let install = |bucket: &str, key: &str, fingerprint: &str| {
        i.exec(&format!(
            "SSM_AGENT_BASE_URL={}/{bucket} SSM_AGENT_KEY={key} SSM_AGENT_FINGERPRINT={fingerprint} sh /tmp/install-ssm-agent.sh",
            server.url
        ))
    };
    let nothing_installed = |i: &Instance, why: &str| {
        let (status, text) = i.exec("dpkg-query -W amazon-ssm-agent");
        assert_ne!(status, 0, "{why}: installed anyway: {text}");
        let (status, _) = i.exec("systemctl cat amazon-ssm-agent.service");
        assert_ne!(status, 0, "{why}: a unit appeared");
    };

    // Changed after signing: refused.
    let (status, text) = install("tampered", "/tmp/key.asc", &good_fpr);
    assert_eq!(status, 1, "{text}");
    assert!(text.contains("refused"), "{text}");
    assert!(
        text.contains("BAD signature") || text.contains("BADSIG"),
        "{text}"
    );
    nothing_installed(&i, "tampered");
    // Signed by another key, with that key offered but the pinned fingerprint ours: refused.
    let (status, text) = install("foreign", "/tmp/other.asc", &good_fpr);
    assert_eq!(status, 1, "{text}");
    assert!(
        text.contains(&format!("not signed by the key {good_fpr}")),
        "{text}"
    );
    nothing_installed(&i, "foreign key");
    // AWS's own key (the script's default) decodes, and refuses what our throwaway key signed.
    let (status, text) = i.exec(&format!(
        "SSM_AGENT_BASE_URL={}/good sh /tmp/install-ssm-agent.sh",
        server.url
    ));
    assert_eq!(status, 1, "{text}");
    assert!(
        text.contains("not signed by the key DE92C7DA3E56E92331D62A36BC1F495C97DD04ED"),
        "{text}"
    );
    nothing_installed(&i, "AWS's key");

    // Signed by the pinned key: installed, enabled and running.
    let (status, text) = install("good", "/tmp/key.asc", &good_fpr.to_lowercase());
    assert_eq!(status, 0, "{text}");
    assert!(text.contains("signature good"), "{text}");
    assert_eq!(
        i.exec("dpkg-query -W -f '${Status}' amazon-ssm-agent").1,
        "install ok installed"
    );
    assert_eq!(i.exec("systemctl is-enabled amazon-ssm-agent").1, "enabled");
    assert!(
        i.until(Duration::from_secs(20), |i| i
            .exec("systemctl is-active amazon-ssm-agent")
            .1
            == "active"),
        "{}",
        i.exec("systemctl status amazon-ssm-agent --no-pager").1
    );
    // A boot of the image starts it: enabled means at every boot.
    docker(&["restart", "-t", "10", &i.name]);
    assert!(i.until(Duration::from_secs(60), booted), "no boot");
    assert!(
        i.until(Duration::from_secs(20), |i| i
            .exec("systemctl is-active amazon-ssm-agent")
            .1
            == "active"),
        "not started at boot: {}",
        i.exec("systemctl status amazon-ssm-agent --no-pager").1
    );
    drop(server);
}
