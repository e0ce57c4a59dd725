//! The part of the Docker Engine API the agent uses, as a narrow trait owned by this crate. The
//! converge logic runs against the real engine (bollard, in `docker.rs`) and, in unit tests,
//! against an in-memory fake: what it decides and how it switches and rolls back can be tested
//! at every step without an engine.
//!
//! What the engine reports comes back as plain values ([`Container`]), read once; its errors are
//! mapped to [`EngineError`] in one place (`docker.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::{Duration, SystemTime};

use bollard::auth::DockerCredentials;
use bollard::models::{
    ContainerCreateBody, EndpointSettings, NetworkCreateRequest, VolumeCreateRequest,
};
use futures::stream::BoxStream;

/// An engine call that failed, in the engine's (or the registry's) own words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineError {
    /// No such container, image, network or volume (HTTP 404).
    NotFound(String),
    /// The engine refused the call (a name in use, a bad spec, a registry's refusal relayed).
    /// `status` is the HTTP status, `None` for an error reported inside a pull's progress stream.
    Refused {
        status: Option<u16>,
        message: String,
    },
    /// No answer: the socket is gone, the connection closed, the call timed out.
    Unreachable(String),
}

impl std::fmt::Display for EngineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EngineError::NotFound(message) => f.write_str(message),
            EngineError::Refused {
                status: Some(status),
                message,
            } => write!(f, "{message} (HTTP {status})"),
            EngineError::Refused {
                status: None,
                message,
            } => f.write_str(message),
            EngineError::Unreachable(message) => {
                write!(f, "the Docker Engine did not answer: {message}")
            }
        }
    }
}

impl std::error::Error for EngineError {}

pub type EngineResult<T> = Result<T, EngineError>;

/// What a container is doing, as the engine says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RunState {
    #[default]
    Created,
    Running,
    Paused,
    Restarting,
    Exited,
    Dead,
    Removing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Starting,
    Healthy,
    Unhealthy,
}

/// One container as the engine reports it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Container {
    pub id: String,
    /// Without the engine's leading `/`.
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub state: RunState,
    pub exit_code: Option<i64>,
    /// `None`: no healthcheck.
    pub health: Option<Health>,
    /// The last health check's exit code and output, made printable (a container writes it).
    pub last_check: Option<(i64, String)>,
    pub started_at: Option<SystemTime>,
    /// The image reference it was created from, and the ID that resolved to.
    pub image: String,
    pub image_id: String,
    /// Its addresses on its networks, sorted (a readiness probe reaches it there).
    pub addresses: Vec<std::net::IpAddr>,
    /// It shares the host's network namespace (`network_mode: host`).
    pub host_network: bool,
}

impl Container {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }

    pub fn is_running(&self) -> bool {
        self.state == RunState::Running
    }

    /// Exited with status 0.
    pub fn completed(&self) -> bool {
        self.state == RunState::Exited && self.exit_code == Some(0)
    }
}

/// One message of a pull's progress stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullProgress {
    pub layer: Option<String>,
    pub status: Option<String>,
    /// Bytes done and total, when the engine says.
    pub bytes: Option<(i64, i64)>,
}

/// The Docker Engine calls the agent makes. `start`, `stop` and `remove` succeed when the
/// container already is as asked (running, stopped, gone).
pub trait Engine: Send + Sync {
    /// The Engine API version agreed with the engine, such as (1, 41).
    fn api_version(&self) -> (usize, usize);
    /// Every container (running or not) with the label `com.docker.compose.project=<project>`.
    fn project_containers(
        &self,
        project: &str,
    ) -> impl Future<Output = EngineResult<Vec<Container>>> + Send;
    /// One container by name or ID; `None` when there is none.
    fn container(&self, id: &str) -> impl Future<Output = EngineResult<Option<Container>>> + Send;
    /// The ID of the local image `reference` names; `None` when it is not present.
    fn image_id(
        &self,
        reference: &str,
    ) -> impl Future<Output = EngineResult<Option<String>>> + Send;
    /// The image IDs that any container on the engine (any project's) uses.
    fn images_in_use(&self) -> impl Future<Output = EngineResult<BTreeSet<String>>> + Send;
    /// Removes the tag `reference` (and the image, when it was its last tag).
    fn remove_image(&self, reference: &str) -> impl Future<Output = EngineResult<()>> + Send;
    /// Pulls `from_image:tag` (for `platform`, `os/arch[/variant]`, when given); the stream ends
    /// when the pull is done.
    fn pull(
        &self,
        from_image: &str,
        tag: &str,
        credentials: Option<DockerCredentials>,
        platform: Option<&str>,
    ) -> BoxStream<'static, EngineResult<PullProgress>>;
    /// Creates a container (for `platform`, when given); its ID.
    fn create(
        &self,
        name: &str,
        body: ContainerCreateBody,
        platform: Option<&str>,
    ) -> impl Future<Output = EngineResult<String>> + Send;
    fn start(&self, id: &str) -> impl Future<Output = EngineResult<()>> + Send;
    fn stop(&self, id: &str, grace: Duration) -> impl Future<Output = EngineResult<()>> + Send;
    fn rename(&self, id: &str, name: &str) -> impl Future<Output = EngineResult<()>> + Send;
    /// Removes a container, running or not.
    fn remove(&self, id: &str) -> impl Future<Output = EngineResult<()>> + Send;
    /// The last `lines` lines of the container's output (stdout and stderr, as the engine keeps
    /// them), made printable line by line and bounded: a failure report's evidence.
    fn logs(
        &self,
        id: &str,
        lines: usize,
    ) -> impl Future<Output = EngineResult<Vec<String>>> + Send;
    /// Runs `command` in the running container `id` (no shell, no TTY): its exit code and the
    /// end of its output, made printable.
    fn exec(
        &self,
        id: &str,
        command: &[String],
    ) -> impl Future<Output = EngineResult<(i64, String)>> + Send;
    fn connect(
        &self,
        network: &str,
        container: &str,
        endpoint: EndpointSettings,
    ) -> impl Future<Output = EngineResult<()>> + Send;
    fn network_exists(&self, name: &str) -> impl Future<Output = EngineResult<bool>> + Send;
    fn create_network(
        &self,
        request: NetworkCreateRequest,
    ) -> impl Future<Output = EngineResult<()>> + Send;
    fn volume_exists(&self, name: &str) -> impl Future<Output = EngineResult<bool>> + Send;
    fn create_volume(
        &self,
        request: VolumeCreateRequest,
    ) -> impl Future<Output = EngineResult<()>> + Send;
    /// The IDs of the containers among `ids` whose state changes, as it happens, from `since`
    /// (Unix seconds) on.
    fn container_events(
        &self,
        ids: &[String],
        since: i64,
    ) -> BoxStream<'static, EngineResult<String>>;
}

/// What a container wrote (its health check's output), in an error's chain: told to whoever
/// reads the whole error (`sync`, `status`, the log), never put in a one-line summary such as
/// systemd's `STATUS=`. Made printable and bounded when read from the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerOutput(pub String);

impl std::fmt::Display for ContainerOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the last health check said: {}", self.0)
    }
}

impl std::error::Error for ContainerOutput {}

/// An error in one line for a summary (systemd's `STATUS=`, the state of a held release): its
/// chain up to what a container wrote, made printable, at most `max` characters.
pub fn summary(err: &anyhow::Error, max: usize) -> String {
    let parts: Vec<String> = err
        .chain()
        .take_while(|cause| !cause.is::<ContainerOutput>())
        .map(|cause| cause.to_string())
        .collect();
    printable(&parts.join(": "), max)
}

/// Text a container wrote (health check output, an engine message quoting it), made safe to
/// print: redacted (before it is cut, so that no part of a value is left), control characters
/// become spaces and it is cut to `max` characters.
pub fn printable(text: &str, max: usize) -> String {
    let clean: String = crate::redact::text(text)
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if clean.chars().count() > max {
        let cut: String = clean.chars().take(max).collect();
        format!("{cut}…")
    } else {
        clean
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_strips_escapes_and_bounds_length() {
        assert_eq!(printable("ok\x1b[2J\r\nnext", 100), "ok [2J  next");
        assert_eq!(
            printable(&"x".repeat(300), 10),
            format!("{}…", "x".repeat(10))
        );
    }
}
