//! What the integration tests share: the rig's addresses (from `tests/rig/up.sh`, exported by
//! `tests/run`), an SSM client to seed moto, and a way to run the agent binary as an instance
//! would: no credentials in its environment, the instance role through the IMDSv2 layer.

#![allow(dead_code)]

pub mod asg;
pub mod docker_proxy;
pub mod iam_eval;
pub mod imds;
pub mod moto;
pub mod proxy;
pub mod recorder;
pub mod stack;
pub mod systemd;
pub mod throttle;

/// `assert_eq!` for values that may hold a secret (an env file, a container's environment): on
/// failure it says what differs, never the values.
#[macro_export]
macro_rules! assert_same {
    ($a:expr, $b:expr $(,)?) => {
        $crate::assert_same!($a, $b, "values differ")
    };
    ($a:expr, $b:expr, $($message:tt)+) => {
        if $a != $b {
            panic!("{} (the values are not shown: they may be secrets)", format!($($message)+));
        }
    };
}

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use aws_sdk_ssm::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_ssm::types::ParameterType;

/// The rig's services. Tests fail, never skip, when the rig is not up.
pub struct Rig {
    pub moto_url: String,
    pub imds_url: String,
    pub region: String,
    pub python: String,
    /// The rig's awscli, for setup the agent's own SDK crates cannot do (IAM).
    pub aws: String,
}

impl Rig {
    pub fn get() -> Rig {
        let var = |name: &str| {
            std::env::var(name).unwrap_or_else(|_| {
                panic!("{name} is not set: the integration tests need the rig; run them with `tests/run`")
            })
        };
        Rig {
            moto_url: var("KICKY_RIG_MOTO_URL"),
            imds_url: var("KICKY_RIG_IMDS_URL"),
            region: var("KICKY_RIG_REGION"),
            python: var("KICKY_RIG_PYTHON"),
            aws: var("KICKY_RIG_AWS"),
        }
    }

    /// An SSM client for seeding moto (the test's own credentials, not the agent's).
    pub fn ssm(&self) -> aws_sdk_ssm::Client {
        let config = aws_sdk_ssm::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(self.region.clone()))
            .endpoint_url(&self.moto_url)
            .credentials_provider(Credentials::new("testing", "testing", None, None, "rig"))
            .build();
        aws_sdk_ssm::Client::from_conf(config)
    }

    pub async fn put(&self, name: &str, value: &str, kind: ParameterType) {
        self.ssm()
            .put_parameter()
            .name(name)
            .value(value)
            .r#type(kind)
            .overwrite(true)
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "seeding {name}: {}",
                    aws_sdk_ssm::error::DisplayErrorContext(e)
                )
            });
    }

    /// An STS client, with the test's credentials.
    pub fn sts(&self) -> aws_sdk_sts::Client {
        use aws_sdk_sts::config::{BehaviorVersion, Credentials, Region};
        let config = aws_sdk_sts::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(self.region.clone()))
            .endpoint_url(&self.moto_url)
            .credentials_provider(Credentials::new("testing", "testing", None, None, "rig"))
            .build();
        aws_sdk_sts::Client::from_conf(config)
    }

    /// A Secrets Manager client for seeding moto.
    pub fn secrets(&self) -> aws_sdk_secretsmanager::Client {
        use aws_sdk_secretsmanager::config::{BehaviorVersion, Credentials, Region};
        let config = aws_sdk_secretsmanager::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(self.region.clone()))
            .endpoint_url(&self.moto_url)
            .credentials_provider(Credentials::new("testing", "testing", None, None, "rig"))
            .build();
        aws_sdk_secretsmanager::Client::from_conf(config)
    }

    /// Creates the secret, or gives it a new current version; the version's id.
    pub async fn put_secret(&self, name: &str, value: &str) -> String {
        let client = self.secrets();
        let exists = client
            .describe_secret()
            .secret_id(name)
            .send()
            .await
            .is_ok();
        let fail = |e: &dyn std::fmt::Display| -> ! { panic!("seeding secret {name}: {e}") };
        let version = if exists {
            let out = client
                .put_secret_value()
                .secret_id(name)
                .secret_string(value)
                .send()
                .await
                .unwrap_or_else(|e| fail(&aws_sdk_secretsmanager::error::DisplayErrorContext(e)));
            out.version_id().map(str::to_string)
        } else {
            let out = client
                .create_secret()
                .name(name)
                .secret_string(value)
                .send()
                .await
                .unwrap_or_else(|e| fail(&aws_sdk_secretsmanager::error::DisplayErrorContext(e)));
            out.version_id().map(str::to_string)
        };
        version.expect("a version id")
    }

    /// An S3 client for seeding moto, path-style as the agent is configured in tests.
    pub fn s3(&self) -> aws_sdk_s3::Client {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new(self.region.clone()))
            .endpoint_url(&self.moto_url)
            .force_path_style(true)
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                "testing", "testing", None, None, "rig",
            ))
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    /// Creates a bucket of its own for a test.
    pub async fn bucket(&self, test: &str, versioned: bool) -> String {
        use aws_sdk_s3::types::{BucketVersioningStatus, VersioningConfiguration};
        let name = format!("kt-{}-{}", test.replace('_', "-"), fastrand::u32(..));
        self.bucket_named(&name).await;
        if versioned {
            let versioning = VersioningConfiguration::builder()
                .status(BucketVersioningStatus::Enabled)
                .build();
            self.s3()
                .put_bucket_versioning()
                .bucket(&name)
                .versioning_configuration(versioning)
                .send()
                .await
                .expect("enable versioning");
        }
        name
    }

    pub async fn bucket_named(&self, name: &str) -> String {
        use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
        let location = CreateBucketConfiguration::builder()
            .location_constraint(BucketLocationConstraint::from(self.region.as_str()))
            .build();
        self.s3()
            .create_bucket()
            .bucket(name)
            .create_bucket_configuration(location)
            .send()
            .await
            .expect("create bucket");
        name.to_string()
    }

    /// Puts an object with a SHA-256 checksum S3 keeps; returns its version id.
    pub async fn put_object(&self, bucket: &str, key: &str, body: Vec<u8>) -> Option<String> {
        self.s3()
            .put_object()
            .bucket(bucket)
            .key(key)
            .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Sha256)
            .body(body.into())
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "put s3://{bucket}/{key}: {}",
                    aws_sdk_s3::error::DisplayErrorContext(e)
                )
            })
            .version_id()
            .map(str::to_string)
    }

    pub async fn delete(&self, name: &str) {
        self.ssm()
            .delete_parameter()
            .name(name)
            .send()
            .await
            .expect("delete parameter");
    }
}

/// A parameter prefix no other test uses, so tests can share one moto.
pub fn unique_prefix(test: &str) -> String {
    format!("/kt/{test}-{}", fastrand::u64(..))
}

/// A scratch directory with an agent config in it.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Scratch {
        Scratch {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn workdir(&self) -> PathBuf {
        self.path("work")
    }

    /// Writes `agent.yaml`; `{workdir}`, `{scratch}` and `{moto}` in `text` are replaced, and
    /// `state_dir` is set inside the scratch directory unless the text sets it.
    pub fn config(&self, rig: &Rig, text: &str) -> PathBuf {
        let mut text = text
            .replace("{workdir}", &self.workdir().display().to_string())
            .replace("{scratch}", &self.dir.path().display().to_string())
            .replace("{moto}", &rig.moto_url);
        if !text.contains("state_dir:") && text.contains("project:") {
            text.push_str(&format!("state_dir: {}\n", self.path("state").display()));
        }
        let path = self.path("etc/agent.yaml");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Runs the agent binary like an instance would: credentials and region from IMDS only.
    pub fn agent(&self, rig: &Rig, args: &[&str]) -> Run {
        self.agent_with(rig, args, &[])
    }

    pub fn agent_with(&self, rig: &Rig, args: &[&str], env: &[(&str, &str)]) -> Run {
        self.run_agent(rig, &[], args, env)
    }

    /// Starts `kicky-agent run` as systemd would, with nothing in its environment but `env` and
    /// the instance metadata endpoint; its log goes to `daemon.log` in the scratch directory.
    pub fn spawn_daemon(&self, imds_url: &str, env: &[(&str, &str)]) -> std::process::Child {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kicky-agent"));
        cmd.args([
            "--config",
            &self.path("etc/agent.yaml").display().to_string(),
            "run",
        ])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", self.dir.path())
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds_url)
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(self.path("daemon.log")).expect("daemon.log"));
        cmd.spawn().expect("start kicky-agent run")
    }

    /// Runs the agent under a wrapper command (such as `/usr/bin/time -f %M`).
    pub fn agent_via(&self, rig: &Rig, wrapper: &[&str], args: &[&str]) -> Run {
        self.run_agent(rig, wrapper, args, &[])
    }

    /// [`Scratch::agent_via`] with `env` added to its environment.
    pub fn agent_via_with(
        &self,
        rig: &Rig,
        wrapper: &[&str],
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Run {
        self.run_agent(rig, wrapper, args, env)
    }

    fn run_agent(&self, rig: &Rig, wrapper: &[&str], args: &[&str], env: &[(&str, &str)]) -> Run {
        let output = self
            .agent_command(rig, wrapper, args, env)
            .output()
            .expect("run kicky-agent");
        Run::from(output)
    }

    /// Starts the agent in the background (as [`Scratch::agent_with`] runs it); its output goes to
    /// files until [`Background::wait`].
    pub fn spawn_agent(&self, rig: &Rig, args: &[&str], env: &[(&str, &str)]) -> Background {
        self.spawn_agent_via(rig, &[], args, env)
    }

    /// [`Scratch::spawn_agent`] under a wrapper command (such as `strace -f`).
    pub fn spawn_agent_via(
        &self,
        rig: &Rig,
        wrapper: &[&str],
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Background {
        let n = fastrand::u32(..);
        let stdout = self.path(&format!("agent-{n}.out"));
        let stderr = self.path(&format!("agent-{n}.err"));
        let child = self
            .agent_command(rig, wrapper, args, env)
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("start kicky-agent");
        Background {
            child,
            stdout,
            stderr,
        }
    }

    fn agent_command(
        &self,
        rig: &Rig,
        wrapper: &[&str],
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Command {
        let agent = env!("CARGO_BIN_EXE_kicky-agent");
        let mut cmd = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut cmd = Command::new(program);
                cmd.args(rest).arg(agent);
                cmd
            }
            None => Command::new(agent),
        };
        cmd.args([
            "--config",
            &self.path("etc/agent.yaml").display().to_string(),
        ])
        .args(args);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("AWS_CONFIG_FILE", self.path("no-aws-config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                self.path("no-aws-credentials"),
            )
            .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", &rig.imds_url);
        if let Ok(host) = std::env::var("DOCKER_HOST") {
            cmd.env("DOCKER_HOST", host);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }
}

/// An agent running in the background.
pub struct Background {
    pub child: std::process::Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Background {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for it to end; its output as a [`Run`] (status -1 when it was killed by a signal).
    pub fn wait(mut self) -> Run {
        let status = self.child.wait().expect("wait for kicky-agent");
        Run {
            status: status.code().unwrap_or(-1),
            stdout: std::fs::read_to_string(&self.stdout).unwrap_or_default(),
            stderr: std::fs::read_to_string(&self.stderr).unwrap_or_default(),
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
    }
}

/// A finished agent run.
pub struct Run {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            status: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Run {
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// Asserts the exit status. On failure prints the agent's output, which the agent guarantees
    /// to be free of secrets (and the secrecy tests check).
    pub fn expect(&self, status: i32) -> &Run {
        assert_eq!(
            self.status,
            status,
            "unexpected exit status; output:\n{}",
            self.all()
        );
        self
    }

    /// Asserts that none of `secrets` appears anywhere in the output, without printing them.
    pub fn assert_free_of(&self, secrets: &[&str]) {
        let all = self.all();
        for (i, secret) in secrets.iter().enumerate() {
            assert!(
                !all.contains(secret),
                "secret #{i} leaked into the agent's output"
            );
        }
    }
}

/// The env file read back by an independent reader: python-dotenv, without interpolation.
pub fn python_dotenv(rig: &Rig, path: &Path) -> HashMap<String, String> {
    let script = "import json,sys\nfrom dotenv import dotenv_values\n\
                  print(json.dumps(dotenv_values(sys.argv[1], interpolate=False)))";
    let out = Command::new(&rig.python)
        .args(["-c", script])
        .arg(path)
        .output()
        .expect("run python-dotenv");
    assert!(
        out.status.success(),
        "python-dotenv failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("python-dotenv json")
}

/// The values docker compose v2 (the rig's) reads for `keys` from the env file at `path`, given
/// as `--env-file`: each key is interpolated into a service's environment, read back from
/// `docker compose config --format json` (which prints a `$` as `$$`).
pub fn compose_v2_env<'a>(
    path: &Path,
    keys: impl IntoIterator<Item = &'a String>,
) -> HashMap<String, String> {
    let dir = tempfile::tempdir().unwrap();
    let mut compose = String::from("services:\n  probe:\n    image: probe\n    environment:\n");
    for key in keys {
        compose.push_str(&format!("      {key}: ${{{key}}}\n"));
    }
    std::fs::write(dir.path().join("docker-compose.yml"), compose).unwrap();
    let out = Command::new(std::env::var("KICKY_RIG_COMPOSE_V2").expect("KICKY_RIG_COMPOSE_V2"))
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .args(["-p", "probe", "--env-file"])
        .arg(path)
        .args(["config", "--format", "json"])
        .output()
        .expect("run docker compose v2");
    assert!(
        out.status.success(),
        "docker compose config failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    config["services"]["probe"]["environment"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            let value = v.as_str().unwrap_or_default().replace("$$", "$");
            (k.clone(), value)
        })
        .collect()
}

/// Every file under `dir` (a link counts as a file, never followed).
pub fn files_under(dir: &Path) -> std::collections::BTreeSet<PathBuf> {
    let mut found = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if entry.file_type().unwrap().is_dir() {
            found.extend(files_under(&path));
        } else {
            found.insert(path);
        }
    }
    found
}

pub fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o7777
}

pub fn inode_of(path: &Path) -> (u64, i64, i64) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).expect("stat");
    (m.ino(), m.mtime(), m.mtime_nsec())
}

/// Runs a program that must succeed; its standard output.
pub fn command_ok(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `cargo deb` over the test build's binary (`--no-build`, dev profile, not stripped): the
/// package an AMI build installs, built in seconds. cargo-deb comes from tests/rig/install.sh.
pub fn build_deb(dir: &Path) -> PathBuf {
    build_deb_as(dir, None)
}

/// [`build_deb`], with another package version than Cargo.toml's (`cargo deb --deb-version`): an
/// upgrade, as far as dpkg can tell.
pub fn build_deb_as(dir: &Path, version: Option<&str>) -> PathBuf {
    let deb = dir.join(match version {
        Some(version) => format!("kicky-agent_{version}.deb"),
        None => "kicky-agent.deb".to_string(),
    });
    let out = Command::new("cargo")
        .args([
            "deb",
            "--no-build",
            "--profile",
            "dev",
            "--no-strip",
            "--fast",
        ])
        .args(version.map(|v| ["--deb-version", v]).into_iter().flatten())
        .arg("-o")
        .arg(&deb)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo deb (tests/rig/install.sh installs cargo-deb)");
    assert!(
        out.status.success(),
        "cargo deb: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    deb
}

/// A finished command's exit status (-1 for a signal) and its stdout then stderr, as one text.
pub fn status_and_text(out: &Output) -> (i32, String) {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}
