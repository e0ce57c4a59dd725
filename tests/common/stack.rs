//! A compose project of one test on the machine's Docker Engine, and the docker CLI calls the
//! tests check the engine with (the agent itself never uses the CLI).

use std::collections::BTreeMap;
use std::process::Command;

use aws_sdk_ssm::types::ParameterType;
use serde_json::Value;

use super::{Rig, Run, Scratch};

/// A compose project of one test: a unique name, its containers removed at the end.
pub struct Stack {
    pub project: String,
    pub scratch: Scratch,
    pub registry: String,
}

impl Stack {
    pub async fn new(rig: &Rig, test: &str) -> Stack {
        let project = format!(
            "kt{}{}",
            test.replace(['_', '-'], ""),
            fastrand::u32(..) % 100_000
        );
        let registry =
            std::env::var("KICKY_RIG_REGISTRY").expect("KICKY_RIG_REGISTRY (run tests/run)");
        let password =
            std::env::var("KICKY_RIG_REGISTRY_PASSWORD").expect("KICKY_RIG_REGISTRY_PASSWORD");
        rig.put(
            &format!("/kt/{project}/registry"),
            &password,
            ParameterType::SecureString,
        )
        .await;
        Stack {
            project,
            scratch: Scratch::new(),
            registry,
        }
    }

    /// Seeds the project's dotenv parameter.
    pub async fn env(&self, rig: &Rig, text: &str) {
        rig.put(
            &format!("/kt/{}/env", self.project),
            text,
            ParameterType::SecureString,
        )
        .await;
    }

    /// Writes the compose file (`{registry}` replaced) and an agent config around it.
    pub fn compose(&self, rig: &Rig, compose: &str, extra_config: &str) {
        self.compose_with_env_file(rig, compose, None, extra_config)
    }

    /// [`Stack::compose`] with `env.file` set to `env_file` (relative to the workdir).
    pub fn compose_with_env_file(
        &self,
        rig: &Rig,
        compose: &str,
        env_file: Option<&str>,
        extra_config: &str,
    ) {
        let workdir = self.scratch.workdir();
        std::fs::create_dir_all(&workdir).unwrap();
        std::fs::write(
            workdir.join("docker-compose.yml"),
            compose.replace("{registry}", &self.registry),
        )
        .unwrap();
        let p = &self.project;
        let env_file = env_file
            .map(|f| format!("  file: {f}\n"))
            .unwrap_or_default();
        self.scratch.config(
            rig,
            &format!(
                "project: {p}\nworkdir: {{workdir}}\naws:\n  endpoint_url: {{moto}}\n  s3_force_path_style: true\n\
                 env:\n{env_file}  parameters:\n    - name: /kt/{p}/env\n      format: dotenv\n\
                 compose:\n  file: docker-compose.yml\n  pull: missing\n  healthy_timeout: 30s\n{extra_config}\
                 registries:\n  - server: {}\n    username: tester\n    password: {{ parameter: /kt/{p}/registry }}\n",
                self.registry
            ),
        );
    }

    pub async fn sync(self, rig: Rig) -> (Run, Stack, Rig) {
        self.run(rig, &["sync"]).await
    }

    /// A sync that talks to the Docker Engine at `docker_host` (a proxy, or nothing at all).
    pub async fn sync_on(self, rig: Rig, docker_host: String) -> (Run, Stack, Rig) {
        tokio::task::spawn_blocking(move || {
            let run = self
                .scratch
                .agent_with(&rig, &["sync"], &[("DOCKER_HOST", &docker_host)]);
            (run, self, rig)
        })
        .await
        .unwrap()
    }

    pub async fn run(self, rig: Rig, args: &'static [&'static str]) -> (Run, Stack, Rig) {
        tokio::task::spawn_blocking(move || {
            let run = self.scratch.agent(&rig, args);
            (run, self, rig)
        })
        .await
        .unwrap()
    }

    pub fn container(&self, service: &str) -> String {
        format!("{}-{service}-1", self.project)
    }

    /// The release as it stands: the env file, the compose file and the id of the container
    /// serving `service`.
    pub fn release(&self, service: &str) -> (Vec<u8>, Vec<u8>, String) {
        let workdir = self.scratch.workdir();
        (
            std::fs::read(workdir.join(".env")).unwrap(),
            std::fs::read(workdir.join("docker-compose.yml")).unwrap(),
            id_of(&self.container(service)),
        )
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        remove_project(&self.project);
    }
}

/// Removes a project's containers and networks when dropped, whatever the test did: for a test
/// that runs a project without a [`Stack`].
pub struct ProjectRemoval(pub String);

impl Drop for ProjectRemoval {
    fn drop(&mut self) {
        remove_project(&self.0);
    }
}

/// Removes every container and network of `project`, found by compose's project label.
pub fn remove_project(project: &str) {
    let filter = format!("label=com.docker.compose.project={project}");
    let ids = docker(&["ps", "-aq", "--filter", &filter]);
    let ids: Vec<&str> = ids.split_whitespace().collect();
    if !ids.is_empty() {
        let mut args = vec!["rm", "-f"];
        args.extend(ids);
        docker(&args);
    }
    let networks = docker(&["network", "ls", "-q", "--filter", &filter]);
    for id in networks.split_whitespace() {
        docker(&["network", "rm", id]);
    }
}

pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("docker CLI");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn inspect(name: &str) -> Option<Value> {
    let out = Command::new("docker")
        .args(["inspect", name])
        .output()
        .expect("docker inspect");
    let list: Value = serde_json::from_slice(&out.stdout).ok()?;
    list.get(0).cloned()
}

pub fn id_of(name: &str) -> String {
    inspect(name)
        .and_then(|c| c["Id"].as_str().map(str::to_string))
        .unwrap_or_default()
}

pub fn started_at(name: &str) -> String {
    inspect(name)
        .and_then(|c| c["State"]["StartedAt"].as_str().map(str::to_string))
        .unwrap_or_default()
}

pub fn running_healthy(name: &str) -> bool {
    inspect(name).is_some_and(|c| {
        c["State"]["Running"] == true
            && c["State"]["Health"]["Status"]
                .as_str()
                .is_none_or(|s| s == "healthy")
    })
}

/// The container's own environment, as a map (values compared, never printed).
pub fn env_of(name: &str) -> BTreeMap<String, String> {
    let c = inspect(name).unwrap_or_default();
    c["Config"]["Env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            e.as_str()?
                .split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

/// Pushes the content of `from` (an image of the rig) under `to`: a tag that moves.
pub fn push_as(registry: &str, from: &str, to: &str) -> String {
    let config = std::env::var("KICKY_RIG_DIR").unwrap() + "/docker-config";
    let cli = |args: &[&str]| {
        let out = Command::new("docker")
            .env("DOCKER_CONFIG", &config)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let (from, to) = (format!("{registry}/{from}"), format!("{registry}/{to}"));
    cli(&["pull", "-q", &from]);
    cli(&["tag", &from, &to]);
    cli(&["push", "-q", &to]);
    // The digest the registry now serves the tag at, as the agent must pin it.
    let digests = docker(&["image", "inspect", "-f", "{{json .RepoDigests}}", &to]);
    let repo = to.rsplit_once(':').unwrap().0.to_string();
    let digest = serde_json::from_str::<Vec<String>>(&digests)
        .unwrap()
        .into_iter()
        .find_map(|d| d.strip_prefix(&format!("{repo}@")).map(str::to_string))
        .expect("a repo digest");
    docker(&["rmi", &to]);
    let _ = Command::new("docker").args(["rmi", &from]).output();
    digest
}
