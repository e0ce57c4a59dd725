//! An in-memory Docker Engine for unit tests of the converge logic. Containers behave as their
//! image says (healthy once started, unhealthy, exiting with a code); pulls can fail or hang; and
//! the engine can "kill the agent" after any number of changing calls: every call after that
//! fails, as if the process had died there, until [`FakeEngine::revive`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use bollard::auth::DockerCredentials;
use bollard::models::{
    ContainerCreateBody, EndpointSettings, NetworkCreateRequest, VolumeCreateRequest,
};
use futures::stream::BoxStream;
use futures::StreamExt;

use super::api::{Container, Engine, EngineError, EngineResult, Health, PullProgress, RunState};

/// What a container of an image does once started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    Healthy,
    Unhealthy,
    /// Exits at once with this code.
    Exits(i64),
    /// Runs, with no healthcheck.
    Plain,
    /// Runs, its healthcheck `starting` for ever.
    Starting,
}

/// How a pull of an image goes.
#[derive(Debug, Clone)]
pub enum PullOutcome {
    Ok,
    Fails(EngineError),
    /// Never a message, never an end.
    Hangs,
}

#[derive(Debug, Clone, Default)]
pub struct State {
    pub containers: Vec<Container>,
    /// Reference → image ID, for the images present.
    pub images: BTreeMap<String, String>,
    pub behaviours: BTreeMap<String, Behaviour>,
    pub pulls: BTreeMap<String, PullOutcome>,
    /// Container names whose create the engine refuses.
    pub refuse_create: BTreeSet<String>,
    pub networks: BTreeSet<String>,
    pub volumes: BTreeSet<String>,
    /// Every changing call, in order (`start web`, `rename <id> web-kicky-old`, ...).
    pub calls: Vec<String>,
    /// Changing calls allowed before the agent "dies"; `None`: no limit.
    pub die_after: Option<usize>,
    next_id: u64,
}

#[derive(Default)]
pub struct FakeEngine {
    pub state: Mutex<State>,
}

impl FakeEngine {
    pub fn new() -> FakeEngine {
        FakeEngine::default()
    }

    /// An image present locally, whose containers behave so.
    pub fn image(&self, reference: &str, behaviour: Behaviour) {
        let mut state = self.state.lock().unwrap();
        state
            .images
            .insert(reference.to_string(), format!("sha256:{reference}"));
        state.behaviours.insert(reference.to_string(), behaviour);
    }

    /// An image the registry has (pulling it succeeds) but that is not present yet.
    pub fn remote_image(&self, reference: &str, behaviour: Behaviour) {
        self.state
            .lock()
            .unwrap()
            .behaviours
            .insert(reference.to_string(), behaviour);
    }

    pub fn snapshot(&self) -> State {
        self.state.lock().unwrap().clone()
    }

    pub fn restore(&self, state: State) {
        *self.state.lock().unwrap() = state;
    }

    /// Every changing call after the next `calls` fails, as if the agent died there.
    pub fn die_after(&self, calls: usize) {
        let mut state = self.state.lock().unwrap();
        state.die_after = Some(state.calls.len() + calls);
    }

    pub fn revive(&self) {
        self.state.lock().unwrap().die_after = None;
    }

    pub fn calls(&self) -> Vec<String> {
        self.state.lock().unwrap().calls.clone()
    }

    /// The container named `name`.
    pub fn named(&self, name: &str) -> Option<Container> {
        let state = self.state.lock().unwrap();
        state.containers.iter().find(|c| c.name == name).cloned()
    }

    pub fn names(&self) -> Vec<String> {
        let state = self.state.lock().unwrap();
        let mut names: Vec<String> = state.containers.iter().map(|c| c.name.clone()).collect();
        names.sort();
        names
    }

    /// A changing call: recorded, or refused once the agent is "dead".
    fn change(&self, call: String) -> EngineResult<std::sync::MutexGuard<'_, State>> {
        let mut state = self.state.lock().unwrap();
        if state
            .die_after
            .is_some_and(|limit| state.calls.len() >= limit)
        {
            return Err(EngineError::Unreachable("the agent died here".into()));
        }
        state.calls.push(call);
        Ok(state)
    }

    fn read(&self) -> EngineResult<std::sync::MutexGuard<'_, State>> {
        let state = self.state.lock().unwrap();
        if state
            .die_after
            .is_some_and(|limit| state.calls.len() >= limit)
        {
            return Err(EngineError::Unreachable("the agent died here".into()));
        }
        Ok(state)
    }
}

fn find<'a>(state: &'a mut State, id: &str) -> EngineResult<&'a mut Container> {
    state
        .containers
        .iter_mut()
        .find(|c| c.id == id || c.name == id)
        .ok_or_else(|| EngineError::NotFound(format!("No such container: {id}")))
}

fn in_use(state: &State, name: &str) -> EngineResult<()> {
    if state.containers.iter().any(|c| c.name == name) {
        return Err(EngineError::Refused {
            status: Some(409),
            message: format!("Conflict. The container name \"/{name}\" is already in use"),
        });
    }
    Ok(())
}

impl Engine for FakeEngine {
    fn api_version(&self) -> (usize, usize) {
        (1, 41)
    }

    async fn project_containers(&self, project: &str) -> EngineResult<Vec<Container>> {
        let state = self.read()?;
        let mut found: Vec<Container> = state
            .containers
            .iter()
            .filter(|c| c.label(super::spec::PROJECT) == Some(project))
            .cloned()
            .collect();
        found.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(found)
    }

    async fn container(&self, id: &str) -> EngineResult<Option<Container>> {
        let state = self.read()?;
        Ok(state
            .containers
            .iter()
            .find(|c| c.id == id || c.name == id)
            .cloned())
    }

    async fn image_id(&self, reference: &str) -> EngineResult<Option<String>> {
        Ok(self.read()?.images.get(reference).cloned())
    }

    async fn images_in_use(&self) -> EngineResult<BTreeSet<String>> {
        Ok(self
            .read()?
            .containers
            .iter()
            .map(|c| c.image_id.clone())
            .collect())
    }

    async fn remove_image(&self, reference: &str) -> EngineResult<()> {
        self.change(format!("rmi {reference}"))?
            .images
            .remove(reference);
        Ok(())
    }

    fn pull(
        &self,
        from_image: &str,
        tag: &str,
        _credentials: Option<DockerCredentials>,
        _platform: Option<&str>,
    ) -> BoxStream<'static, EngineResult<PullProgress>> {
        let reference = format!("{from_image}:{tag}");
        let mut state = match self.change(format!("pull {reference}")) {
            Ok(state) => state,
            Err(err) => return futures::stream::once(async move { Err(err) }).boxed(),
        };
        match state
            .pulls
            .get(&reference)
            .cloned()
            .unwrap_or(PullOutcome::Ok)
        {
            PullOutcome::Ok => {
                if !state.behaviours.contains_key(&reference) {
                    let err = EngineError::NotFound(format!(
                        "manifest for {reference} not found: manifest unknown"
                    ));
                    return futures::stream::once(async move { Err(err) }).boxed();
                }
                let id = format!("sha256:{reference}");
                state.images.insert(reference, id);
                futures::stream::once(async { Ok(PullProgress::default()) }).boxed()
            }
            PullOutcome::Fails(err) => futures::stream::once(async move { Err(err) }).boxed(),
            PullOutcome::Hangs => futures::stream::pending().boxed(),
        }
    }

    async fn create(
        &self,
        name: &str,
        body: ContainerCreateBody,
        _platform: Option<&str>,
    ) -> EngineResult<String> {
        let mut state = self.change(format!("create {name}"))?;
        if state.refuse_create.contains(name) {
            return Err(EngineError::Refused {
                status: Some(400),
                message: format!("invalid mount config for {name}"),
            });
        }
        in_use(&state, name)?;
        state.next_id += 1;
        let image = body.image.clone().unwrap_or_default();
        let container = Container {
            id: format!("{:064x}", state.next_id),
            name: name.to_string(),
            labels: body.labels.unwrap_or_default().into_iter().collect(),
            state: RunState::Created,
            exit_code: None,
            health: None,
            last_check: None,
            started_at: None,
            image_id: state.images.get(&image).cloned().unwrap_or_default(),
            image,
            ..Default::default()
        };
        let id = container.id.clone();
        state.containers.push(container);
        Ok(id)
    }

    async fn start(&self, id: &str) -> EngineResult<()> {
        let mut state = self.change(format!("start {id}"))?;
        let behaviour = {
            let c = find(&mut state, id)?;
            c.image.clone()
        };
        let behaviour = state
            .behaviours
            .get(&behaviour)
            .copied()
            .unwrap_or(Behaviour::Plain);
        let c = find(&mut state, id)?;
        if c.is_running() {
            return Ok(());
        }
        c.started_at = Some(SystemTime::now() - Duration::from_secs(10));
        c.state = RunState::Running;
        c.exit_code = None;
        match behaviour {
            Behaviour::Healthy => c.health = Some(Health::Healthy),
            Behaviour::Unhealthy => {
                c.health = Some(Health::Unhealthy);
                c.last_check = Some((1, "backend not ready".into()));
            }
            Behaviour::Exits(code) => {
                c.state = RunState::Exited;
                c.exit_code = Some(code);
            }
            Behaviour::Plain => c.health = None,
            Behaviour::Starting => c.health = Some(Health::Starting),
        }
        Ok(())
    }

    async fn stop(&self, id: &str, _grace: Duration) -> EngineResult<()> {
        let mut state = self.change(format!("stop {id}"))?;
        let c = find(&mut state, id)?;
        if c.is_running() {
            c.state = RunState::Exited;
            c.exit_code = Some(143);
        }
        Ok(())
    }

    async fn rename(&self, id: &str, name: &str) -> EngineResult<()> {
        let mut state = self.change(format!("rename {id} {name}"))?;
        in_use(&state, name)?;
        find(&mut state, id)?.name = name.to_string();
        Ok(())
    }

    async fn remove(&self, id: &str) -> EngineResult<()> {
        let mut state = self.change(format!("remove {id}"))?;
        state.containers.retain(|c| c.id != id && c.name != id);
        Ok(())
    }

    /// Not a change: not among the calls the tests count.
    async fn logs(&self, id: &str, _lines: usize) -> EngineResult<Vec<String>> {
        Ok(vec![format!("output of {id}")])
    }

    /// Every command succeeds, without output (probes are tested against the real engine).
    async fn exec(&self, id: &str, _command: &[String]) -> EngineResult<(i64, String)> {
        drop(self.change(format!("exec {id}"))?);
        Ok((0, String::new()))
    }

    async fn connect(
        &self,
        network: &str,
        container: &str,
        _endpoint: EndpointSettings,
    ) -> EngineResult<()> {
        drop(self.change(format!("connect {container} {network}"))?);
        Ok(())
    }

    async fn network_exists(&self, name: &str) -> EngineResult<bool> {
        Ok(self.read()?.networks.contains(name))
    }

    async fn create_network(&self, request: NetworkCreateRequest) -> EngineResult<()> {
        let mut state = self.change(format!("network {}", request.name))?;
        state.networks.insert(request.name);
        Ok(())
    }

    async fn volume_exists(&self, name: &str) -> EngineResult<bool> {
        Ok(self.read()?.volumes.contains(name))
    }

    async fn create_volume(&self, request: VolumeCreateRequest) -> EngineResult<()> {
        let name = request.name.unwrap_or_default();
        let mut state = self.change(format!("volume {name}"))?;
        state.volumes.insert(name);
        Ok(())
    }

    fn container_events(
        &self,
        _ids: &[String],
        _since: i64,
    ) -> BoxStream<'static, EngineResult<String>> {
        // Containers here reach their state as they start: nothing to tell later.
        futures::stream::pending().boxed()
    }
}
