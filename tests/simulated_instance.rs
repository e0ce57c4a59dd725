//! The AMI boot, simulated end to end (the slow group: `tests/run --test integration
//! simulated_instance::`). A Debian 12 root file system with systemd (tests/sim/image.sh,
//! debootstrap, cached per machine) boots as a container with systemd as PID 1, on the host's
//! network and Docker socket; the .deb is installed with `dpkg -i` as an AMI build would, and the
//! launch template's user data (a `#kicky-agent` override of the AMI's sample config) comes from an
//! IMDS layer of the test's own. Then what an operator sees on a real instance: the unit enabled
//! and not started by the install; after a boot, `activating` until the stack is healthy, then
//! `active` with the agent's STATUS; `systemctl reload` resyncing; the SSM document's command;
//! a bad config not restart-looping; a hung loop restarted by the watchdog; a reboot converging
//! again without touching the containers.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use aws_sdk_ssm::types::ParameterType;
use common::imds::OwnImds;
use common::stack::{docker, inspect, running_healthy};
use common::{Rig, Scratch};

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// A simulated instance, removed (by name) when dropped.
struct Instance {
    name: String,
}

impl Instance {
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

    // The launch template's user data: the AMI's sample config, pointed at this application.
    let s = Scratch::new();
    let user_data = format!(
        "#kicky-agent\nproject: {project}\nworkdir: /srv/{project}\naws:\n  endpoint_url: {moto}\n  s3_force_path_style: true\n\
         env:\n  parameters:\n    - name: /kt/{project}/env\n      format: dotenv\n\
         files:\n  - source: s3://{bucket}/docker-compose.yml\n    path: docker-compose.yml\n\
         compose:\n  file: docker-compose.yml\n  pull: missing\n  prune: false\n  healthy_timeout: 60s\n\
         registries:\n  - server: {registry}\n    username: tester\n    password: {{ parameter: /kt/{project}/registry }}\n\
         lifecycle:\n  hook: off\nwatch:\n  interval: 0\n",
        moto = rig.moto_url,
        registry = stack.registry,
    );
    let fixture = s.path("imds-fixture");
    std::fs::create_dir_all(&fixture).unwrap();
    std::fs::write(fixture.join("user-data"), &user_data).unwrap();
    std::fs::write(fixture.join("region"), &rig.region).unwrap();
    let imds = OwnImds::start(&rig, &rig.moto_url, s.dir.path(), &fixture);

    let deb = tokio::task::block_in_place(|| common::build_deb(s.dir.path()));
    let image = tokio::task::block_in_place(sim_image);
    let i = Instance {
        name: format!("kt-sim-{project}"),
    };
    docker(&["rm", "-f", &i.name]);
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
        .args(["--stop-signal", "SIGRTMIN+3", &image, "/sbin/init"])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let booted = |i: &Instance| {
        let state = i.exec("systemctl is-system-running").1;
        state == "running" || state == "degraded"
    };
    assert!(
        i.until(Duration::from_secs(60), booted),
        "systemd did not boot"
    );

    // The AMI build: dpkg -i; the unit enabled, not started. The only change for the rig: where
    // instance metadata is (169.254.169.254 on EC2).
    let copied = Command::new("docker")
        .arg("cp")
        .arg(&deb)
        .arg(format!("{}:/tmp/kicky-agent.deb", i.name))
        .status()
        .unwrap();
    assert!(copied.success());
    let (status, text) = i.exec("dpkg -i /tmp/kicky-agent.deb");
    assert_eq!(status, 0, "{text}");
    assert_eq!(i.exec("systemctl is-enabled kicky-agent").1, "enabled");
    assert_eq!(
        i.exec("systemctl is-active kicky-agent").1,
        "inactive",
        "the install started it"
    );
    let dropin = format!(
        "mkdir -p /etc/systemd/system/kicky-agent.service.d && printf '[Service]\\nEnvironment=AWS_EC2_METADATA_SERVICE_ENDPOINT={}\\n' > /etc/systemd/system/kicky-agent.service.d/rig.conf",
        imds.url
    );
    assert_eq!(i.exec(&dropin).0, 0);

    // First boot of the instance: the enabled unit starts; `activating` until the stack is healthy.
    let web = format!("{project}-web-1");
    let booted_at = Instant::now();
    docker(&["restart", "-t", "10", &i.name]);
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
    docker(&["restart", "-t", "10", &i.name]);
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
