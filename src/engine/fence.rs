//! The drain's fence around a sync's engine. Once the instance is terminating (the drain began),
//! a [`Fenced`] engine refuses to create or start anything, whoever asks: the rollout, the
//! rollback of a rollout cut short, the recovery of an interrupted switch. Its pulls and its
//! event streams end at once with the same refusal, so a sync waiting for a new container's
//! health fails in moments instead of waiting out `healthy_timeout`, and the drain stops what
//! runs without anything starting behind it. Stops, renames, removals and reads go through: they
//! only ever take the stack down.

use std::time::Duration;

use bollard::auth::DockerCredentials;
use bollard::models::{
    ContainerCreateBody, EndpointSettings, NetworkCreateRequest, VolumeCreateRequest,
};
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::sync::watch;

use super::api::{Container, Engine, EngineError, EngineResult, PullProgress};

/// What a [`Fenced`] engine checks before every create and start. Clones see the same fence.
#[derive(Debug, Clone)]
pub struct Fence {
    /// `None`: never shut (a `sync` run by hand has no drain to wait for).
    shut: Option<watch::Receiver<bool>>,
}

/// The drain's side of the fence: [`Gate::shut`] once the instance is terminating.
#[derive(Debug)]
pub struct Gate {
    tx: watch::Sender<bool>,
}

impl Gate {
    pub fn new() -> Gate {
        Gate {
            tx: watch::Sender::new(false),
        }
    }

    /// A fence that this gate shuts.
    pub fn fence(&self) -> Fence {
        Fence {
            shut: Some(self.tx.subscribe()),
        }
    }

    /// From now on, nothing is created or started through the fences of this gate.
    pub fn shut(&self) {
        self.tx.send_replace(true);
    }
}

impl Default for Gate {
    fn default() -> Self {
        Gate::new()
    }
}

impl Fence {
    /// A fence never shut.
    pub fn open() -> Fence {
        Fence { shut: None }
    }

    pub fn is_shut(&self) -> bool {
        self.shut.as_ref().is_some_and(|rx| *rx.borrow())
    }

    /// Resolves once the fence is shut (never, for an open one).
    pub async fn wait_shut(self) {
        if let Some(mut rx) = self.shut {
            if rx.wait_for(|shut| *shut).await.is_ok() {
                return;
            }
        }
        std::future::pending::<()>().await
    }

    fn check(&self, what: &str) -> EngineResult<()> {
        match self.is_shut() {
            true => Err(refused(what)),
            false => Ok(()),
        }
    }
}

/// The answer to a call made after the drain began.
pub fn refused(what: &str) -> EngineError {
    EngineError::Refused {
        status: None,
        message: format!(
            "the instance is terminating: not {what} (nothing is created or started once the drain began)"
        ),
    }
}

/// `stream`, cut off with a refusal as soon as `fence` shuts.
fn fenced_stream<T: Send + 'static>(
    stream: BoxStream<'static, EngineResult<T>>,
    fence: &Fence,
    what: &'static str,
) -> BoxStream<'static, EngineResult<T>> {
    if fence.is_shut() {
        return futures::stream::once(async move { Err(refused(what)) }).boxed();
    }
    let (until, after) = (fence.clone(), fence.clone());
    let refusal = futures::stream::once(async move { after.is_shut() })
        .filter_map(move |shut| async move { shut.then(|| Err(refused(what))) });
    stream.take_until(until.wait_shut()).chain(refusal).boxed()
}

/// An engine whose creates and starts stop once its [`Fence`] is shut.
#[derive(Debug, Clone)]
pub struct Fenced<E> {
    pub inner: E,
    pub fence: Fence,
}

impl<E> Fenced<E> {
    pub fn new(inner: E, fence: Fence) -> Fenced<E> {
        Fenced { inner, fence }
    }
}

impl<E: Engine> Engine for Fenced<E> {
    fn api_version(&self) -> (usize, usize) {
        self.inner.api_version()
    }

    async fn project_containers(&self, project: &str) -> EngineResult<Vec<Container>> {
        self.inner.project_containers(project).await
    }

    async fn container(&self, id: &str) -> EngineResult<Option<Container>> {
        self.inner.container(id).await
    }

    async fn image_id(&self, reference: &str) -> EngineResult<Option<String>> {
        self.inner.image_id(reference).await
    }

    async fn images_in_use(&self) -> EngineResult<std::collections::BTreeSet<String>> {
        self.inner.images_in_use().await
    }

    async fn remove_image(&self, reference: &str) -> EngineResult<()> {
        self.inner.remove_image(reference).await
    }

    fn pull(
        &self,
        from_image: &str,
        tag: &str,
        credentials: Option<DockerCredentials>,
        platform: Option<&str>,
    ) -> BoxStream<'static, EngineResult<PullProgress>> {
        if self.fence.is_shut() {
            return futures::stream::once(async { Err(refused("pulling")) }).boxed();
        }
        let pull = self.inner.pull(from_image, tag, credentials, platform);
        fenced_stream(pull, &self.fence, "pulling")
    }

    async fn create(
        &self,
        name: &str,
        body: ContainerCreateBody,
        platform: Option<&str>,
    ) -> EngineResult<String> {
        self.fence.check(&format!("creating {name}"))?;
        self.inner.create(name, body, platform).await
    }

    async fn start(&self, id: &str) -> EngineResult<()> {
        self.fence
            .check(&format!("starting {}", &id[..id.len().min(12)]))?;
        self.inner.start(id).await
    }

    async fn stop(&self, id: &str, grace: Duration) -> EngineResult<()> {
        self.inner.stop(id, grace).await
    }

    async fn rename(&self, id: &str, name: &str) -> EngineResult<()> {
        self.inner.rename(id, name).await
    }

    async fn remove(&self, id: &str) -> EngineResult<()> {
        self.inner.remove(id).await
    }

    async fn logs(&self, id: &str, lines: usize) -> EngineResult<Vec<String>> {
        self.inner.logs(id, lines).await
    }

    async fn exec(&self, id: &str, command: &[String]) -> EngineResult<(i64, String)> {
        self.fence
            .check(&format!("probing {}", &id[..id.len().min(12)]))?;
        self.inner.exec(id, command).await
    }

    async fn connect(
        &self,
        network: &str,
        container: &str,
        endpoint: EndpointSettings,
    ) -> EngineResult<()> {
        self.fence
            .check(&format!("connecting {container} to {network}"))?;
        self.inner.connect(network, container, endpoint).await
    }

    async fn network_exists(&self, name: &str) -> EngineResult<bool> {
        self.inner.network_exists(name).await
    }

    async fn create_network(&self, request: NetworkCreateRequest) -> EngineResult<()> {
        self.fence.check("creating a network")?;
        self.inner.create_network(request).await
    }

    async fn volume_exists(&self, name: &str) -> EngineResult<bool> {
        self.inner.volume_exists(name).await
    }

    async fn create_volume(&self, request: VolumeCreateRequest) -> EngineResult<()> {
        self.fence.check("creating a volume")?;
        self.inner.create_volume(request).await
    }

    fn container_events(
        &self,
        ids: &[String],
        since: i64,
    ) -> BoxStream<'static, EngineResult<String>> {
        let events = self.inner.container_events(ids, since);
        fenced_stream(events, &self.fence, "waiting for health")
    }
}
