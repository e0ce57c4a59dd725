//! The real engine behind [`Engine`]: bollard on `DOCKER_HOST` or the local socket, waited for at
//! boot, with the API version negotiated down to what the engine speaks (1.41 for Debian's 20.10).
//! The one place where bollard's errors become [`EngineError`]s.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use anyhow::{Context, Result};
use bollard::auth::DockerCredentials;
use bollard::models::{
    ContainerCreateBody, ContainerStateStatusEnum, EndpointSettings, HealthStatusEnum,
    NetworkConnectRequest, NetworkCreateRequest, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, EventsOptions, ListContainersOptions,
    RemoveContainerOptions, RemoveImageOptions, RenameContainerOptions, StopContainerOptions,
};
use bollard::Docker;
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::time::Instant;

use super::api::{
    printable, Container, Engine, EngineError, EngineResult, Health, PullProgress, RunState,
};
use super::spec;

/// How long to wait for an engine that is not up yet (its socket absent at boot).
pub const ENGINE_WAIT: Duration = Duration::from_secs(60);

/// The Docker Engine, through bollard.
#[derive(Clone)]
pub struct DockerEngine {
    docker: Docker,
}

/// Connects, waiting up to `wait` for the engine to answer.
pub async fn connect(wait: Duration) -> Result<DockerEngine> {
    let docker = Docker::connect_with_defaults()
        .context(
            "failed to set up a Docker Engine connection (DOCKER_HOST or /var/run/docker.sock)",
        )?
        .with_request_modifier(url_safe_registry_auth)
        .with_timeout(Duration::from_secs(300));
    let started = Instant::now();
    let mut logged = false;
    loop {
        match docker.ping().await {
            Ok(_) => break,
            Err(err) if started.elapsed() < wait => {
                if !logged {
                    tracing::info!("waiting for the Docker Engine: {err}");
                    logged = true;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(err) => {
                return Err(err)
                    .with_context(|| format!("the Docker Engine did not answer within {wait:?}"));
            }
        }
    }
    let docker = docker
        .negotiate_version()
        .await
        .context("failed to agree on an API version with the Docker Engine")?;
    Ok(DockerEngine { docker })
}

/// Engines up to 20.10 decode `X-Registry-Auth` as URL-safe base64 (as the docker CLI sends it);
/// bollard sends the standard alphabet, so a password whose encoding has `+` or `/` would arrive
/// garbled and the pull go out unauthenticated. Same bytes, URL-safe alphabet.
fn url_safe_registry_auth(mut request: bollard::BollardRequest) -> bollard::BollardRequest {
    if let Some(value) = request
        .headers()
        .get("X-Registry-Auth")
        .and_then(|v| v.to_str().ok())
    {
        let fixed = value.replace('+', "-").replace('/', "_");
        if let Ok(fixed) = http::HeaderValue::from_str(&fixed) {
            request.headers_mut().insert("X-Registry-Auth", fixed);
        }
    }
    request
}

/// bollard's error as the engine's own words.
fn engine_error(err: bollard::errors::Error) -> EngineError {
    use bollard::errors::Error as E;
    match err {
        // The engine's words may quote what a container or a registry said: made printable
        // and bounded, like everything from outside.
        E::DockerResponseServerError {
            status_code: 404,
            message,
        } => EngineError::NotFound(printable(&message, 1000)),
        E::DockerResponseServerError {
            status_code,
            message,
        } => EngineError::Refused {
            status: Some(status_code),
            message: printable(&message, 1000),
        },
        E::DockerStreamError { error } => EngineError::Refused {
            status: None,
            message: printable(&error, 1000),
        },
        other @ (E::RequestTimeoutError
        | E::IOError { .. }
        | E::HyperResponseError { .. }
        | E::HyperLegacyError { .. }
        | E::SocketNotFoundError(_)) => EngineError::Unreachable(other.to_string()),
        other => EngineError::Refused {
            status: None,
            message: other.to_string(),
        },
    }
}

/// 404 as "there is none".
fn found<T>(result: Result<T, bollard::errors::Error>) -> EngineResult<Option<T>> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(None),
        Err(err) => Err(engine_error(err)),
    }
}

/// 304 (already started, already stopped) is what was asked.
fn done_if_not_modified(result: Result<(), bollard::errors::Error>) -> EngineResult<()> {
    match result {
        Ok(())
        | Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 304, ..
        }) => Ok(()),
        Err(err) => Err(engine_error(err)),
    }
}

fn run_state(status: Option<ContainerStateStatusEnum>) -> RunState {
    use ContainerStateStatusEnum as S;
    match status {
        Some(S::RUNNING) => RunState::Running,
        Some(S::PAUSED) => RunState::Paused,
        Some(S::RESTARTING) => RunState::Restarting,
        Some(S::EXITED) => RunState::Exited,
        Some(S::DEAD) => RunState::Dead,
        Some(S::REMOVING) => RunState::Removing,
        _ => RunState::Created,
    }
}

fn container_of(inspect: bollard::models::ContainerInspectResponse) -> Container {
    let state = inspect.state.unwrap_or_default();
    let health = state.health.as_ref().and_then(|h| match h.status {
        Some(HealthStatusEnum::STARTING) => Some(Health::Starting),
        Some(HealthStatusEnum::HEALTHY) => Some(Health::Healthy),
        Some(HealthStatusEnum::UNHEALTHY) => Some(Health::Unhealthy),
        _ => None,
    });
    let last_check = state
        .health
        .as_ref()
        .and_then(|h| h.log.as_ref())
        .and_then(|log| log.last())
        .map(|check| {
            (
                check.exit_code.unwrap_or(-1),
                printable(check.output.as_deref().unwrap_or_default(), 200),
            )
        });
    let config = inspect.config.unwrap_or_default();
    let mut addresses: Vec<std::net::IpAddr> = inspect
        .network_settings
        .and_then(|n| n.networks)
        .into_iter()
        .flatten()
        .filter_map(|(_, endpoint)| endpoint.ip_address?.parse().ok())
        .collect();
    addresses.sort();
    let host_network = inspect
        .host_config
        .and_then(|h| h.network_mode)
        .is_some_and(|mode| mode == "host");
    Container {
        id: inspect.id.unwrap_or_default(),
        name: inspect
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string(),
        labels: config.labels.unwrap_or_default().into_iter().collect(),
        state: run_state(state.status),
        exit_code: state.exit_code,
        health,
        last_check,
        started_at: state
            .started_at
            .as_deref()
            .and_then(|t| humantime::parse_rfc3339(t).ok()),
        image: config.image.unwrap_or_default(),
        image_id: inspect.image.unwrap_or_default(),
        addresses,
        host_network,
    }
}

impl DockerEngine {
    /// Where the engine keeps images and containers (`DockerRootDir`).
    pub async fn root_dir(&self) -> Result<String> {
        let info = self.docker.info().await.context("docker info")?;
        info.docker_root_dir
            .ok_or_else(|| anyhow::anyhow!("the engine does not say where it keeps images"))
    }
}

impl DockerEngine {
    /// The digest the registry serves `reference` at now (the engine asks it: `GET
    /// /distribution/{name}/json`), with `credentials` for a private registry. For a
    /// multi-platform image it is the index's digest, which serves every platform.
    pub async fn registry_digest(
        &self,
        reference: &str,
        credentials: Option<bollard::auth::DockerCredentials>,
    ) -> Result<String> {
        let found = self
            .docker
            .inspect_registry_image(reference, credentials)
            .await
            .map_err(engine_error)
            .with_context(|| format!("failed to ask the registry for the digest of {reference}"))?;
        let digest = found.descriptor.digest.unwrap_or_default();
        if !digest.starts_with("sha256:") {
            anyhow::bail!("the registry gave no sha256 digest for {reference} ({digest:?})");
        }
        Ok(digest)
    }
}

impl Engine for DockerEngine {
    fn api_version(&self) -> (usize, usize) {
        let version = self.docker.client_version();
        (version.major_version, version.minor_version)
    }

    async fn project_containers(&self, project: &str) -> EngineResult<Vec<Container>> {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![format!("{}={project}", spec::PROJECT)],
        )]);
        let listed = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .map_err(engine_error)?;
        let inspected = futures::future::join_all(
            listed
                .iter()
                .filter_map(|c| c.id.as_deref())
                .map(|id| self.container(id)),
        )
        .await;
        let mut containers = Vec::new();
        for found in inspected {
            // A container removed between the list and the inspect is simply gone.
            if let Some(c) = found? {
                containers.push(c);
            }
        }
        containers.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(containers)
    }

    async fn container(&self, id: &str) -> EngineResult<Option<Container>> {
        Ok(found(self.docker.inspect_container(id, None).await)?.map(container_of))
    }

    async fn image_id(&self, reference: &str) -> EngineResult<Option<String>> {
        Ok(found(self.docker.inspect_image(reference).await)?.and_then(|i| i.id))
    }

    async fn images_in_use(&self) -> EngineResult<BTreeSet<String>> {
        let all = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                ..Default::default()
            }))
            .await
            .map_err(engine_error)?;
        Ok(all.into_iter().filter_map(|c| c.image_id).collect())
    }

    async fn remove_image(&self, reference: &str) -> EngineResult<()> {
        self.docker
            .remove_image(reference, None::<RemoveImageOptions>, None)
            .await
            .map(|_| ())
            .map_err(engine_error)
    }

    fn pull(
        &self,
        from_image: &str,
        tag: &str,
        credentials: Option<DockerCredentials>,
        platform: Option<&str>,
    ) -> BoxStream<'static, EngineResult<PullProgress>> {
        let options = CreateImageOptions {
            from_image: Some(from_image.to_string()),
            tag: Some(tag.to_string()),
            platform: platform.unwrap_or_default().to_string(),
            ..Default::default()
        };
        self.docker
            .create_image(Some(options), None, credentials)
            .map(|item| {
                let info = item.map_err(engine_error)?;
                Ok(PullProgress {
                    layer: info.id,
                    status: info.status,
                    bytes: info
                        .progress_detail
                        .and_then(|p| Some((p.current?, p.total?))),
                })
            })
            .boxed()
    }

    async fn create(
        &self,
        name: &str,
        body: ContainerCreateBody,
        platform: Option<&str>,
    ) -> EngineResult<String> {
        let options = CreateContainerOptions {
            name: Some(name.to_string()),
            platform: platform.unwrap_or_default().to_string(),
        };
        self.docker
            .create_container(Some(options), body)
            .await
            .map(|created| created.id)
            .map_err(engine_error)
    }

    async fn start(&self, id: &str) -> EngineResult<()> {
        done_if_not_modified(self.docker.start_container(id, None).await)
    }

    async fn stop(&self, id: &str, grace: Duration) -> EngineResult<()> {
        let options = StopContainerOptions {
            t: Some(grace.as_secs().min(i32::MAX as u64) as i32),
            signal: None,
        };
        done_if_not_modified(self.docker.stop_container(id, Some(options)).await)
    }

    async fn rename(&self, id: &str, name: &str) -> EngineResult<()> {
        let options = RenameContainerOptions {
            name: name.to_string(),
        };
        self.docker
            .rename_container(id, options)
            .await
            .map_err(engine_error)
    }

    async fn remove(&self, id: &str) -> EngineResult<()> {
        let options = RemoveContainerOptions {
            force: true,
            ..Default::default()
        };
        found(self.docker.remove_container(id, Some(options)).await).map(|_| ())
    }

    async fn logs(&self, id: &str, lines: usize) -> EngineResult<Vec<String>> {
        let options = bollard::query_parameters::LogsOptions {
            stdout: true,
            stderr: true,
            tail: lines.to_string(),
            ..Default::default()
        };
        let mut stream = self.docker.logs(id, Some(options));
        let mut text = Vec::new();
        // A container that wrote megabytes in one line: what a report shows is bounded.
        while let Some(chunk) = stream.next().await {
            text.extend_from_slice(&chunk.map_err(engine_error)?.into_bytes());
            if text.len() > 256 * 1024 {
                break;
            }
        }
        let text = String::from_utf8_lossy(&text);
        let all: Vec<String> = text.lines().map(|l| printable(l, 300)).collect();
        Ok(all[all.len().saturating_sub(lines)..].to_vec())
    }

    async fn exec(&self, id: &str, command: &[String]) -> EngineResult<(i64, String)> {
        use bollard::exec::{StartExecOptions, StartExecResults};
        let config = bollard::models::ExecConfig {
            cmd: Some(command.to_vec()),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            ..Default::default()
        };
        let created = self
            .docker
            .create_exec(id, config)
            .await
            .map_err(engine_error)?;
        let options = StartExecOptions {
            detach: false,
            tty: false,
            output_capacity: None,
        };
        let mut output = Vec::new();
        if let StartExecResults::Attached {
            output: mut stream, ..
        } = self
            .docker
            .start_exec(&created.id, Some(options))
            .await
            .map_err(engine_error)?
        {
            // The end is what says why; a chatty command keeps only its last 4 KiB.
            while let Some(chunk) = stream.next().await {
                output.extend_from_slice(&chunk.map_err(engine_error)?.into_bytes());
                let excess = output.len().saturating_sub(4096);
                output.drain(..excess);
            }
        }
        let inspect = self
            .docker
            .inspect_exec(&created.id)
            .await
            .map_err(engine_error)?;
        let text = String::from_utf8_lossy(&output);
        Ok((inspect.exit_code.unwrap_or(-1), printable(text.trim(), 200)))
    }

    async fn connect(
        &self,
        network: &str,
        container: &str,
        endpoint: EndpointSettings,
    ) -> EngineResult<()> {
        let request = NetworkConnectRequest {
            container: container.to_string(),
            endpoint_config: Some(endpoint),
        };
        self.docker
            .connect_network(network, request)
            .await
            .map_err(engine_error)
    }

    async fn network_exists(&self, name: &str) -> EngineResult<bool> {
        Ok(found(self.docker.inspect_network(name, None).await)?.is_some())
    }

    async fn create_network(&self, request: NetworkCreateRequest) -> EngineResult<()> {
        self.docker
            .create_network(request)
            .await
            .map(|_| ())
            .map_err(engine_error)
    }

    async fn volume_exists(&self, name: &str) -> EngineResult<bool> {
        Ok(found(self.docker.inspect_volume(name).await)?.is_some())
    }

    async fn create_volume(&self, request: VolumeCreateRequest) -> EngineResult<()> {
        self.docker
            .create_volume(request)
            .await
            .map(|_| ())
            .map_err(engine_error)
    }

    fn container_events(
        &self,
        ids: &[String],
        since: i64,
    ) -> BoxStream<'static, EngineResult<String>> {
        let filters = HashMap::from([
            ("type".to_string(), vec!["container".to_string()]),
            ("container".to_string(), ids.to_vec()),
        ]);
        let options = EventsOptions {
            since: Some(since.to_string()),
            until: None,
            filters: Some(filters),
        };
        self.docker
            .events(Some(options))
            .filter_map(|event| async move {
                match event {
                    Ok(event) => event.actor.and_then(|a| a.id).map(Ok),
                    Err(err) => Some(Err(engine_error(err))),
                }
            })
            .boxed()
    }
}
