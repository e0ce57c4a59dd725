//! Converging the engine to the project, replacing only what changed, safely.
//!
//! 1. Every image is pulled first; a pull that fails changes nothing that runs.
//! 2. Each service's desired container is compared with the one running (by config hash): kept,
//!    started, created or recreated (with the sections that changed); containers of services no
//!    longer in the file are removed at the end.
//! 3. New containers are created under a temporary name before any running one is stopped, so the
//!    engine validates every spec first.
//! 4. In `depends_on` order, each old container is stopped and renamed aside (kept, not removed),
//!    the new one takes its name and starts.
//! 5. Everything is waited for until running and healthy; on failure every service switched in
//!    this sync is switched back to its previous container, which runs again.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bollard::models::{
    ContainerStateStatusEnum, ContainerSummary, NetworkConnectRequest, NetworkCreateRequest,
    VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptions, ListContainersOptions, RemoveContainerOptions, RemoveImageOptions,
    RenameContainerOptions, StopContainerOptions,
};
use bollard::Docker;
use serde::Serialize;
use tokio::time::Instant;

use super::engine_message;
use super::health::{self, Target};
use super::pull::{self, ImagePlan};
use super::registry::Registries;
use super::spec::{self, Desired};
use crate::compose::{Condition, Project};
use crate::config::ComposeSettings;

const NEW_SUFFIX: &str = "-kicky-new";
const OLD_SUFFIX: &str = "-kicky-old";

/// Marks a failed sync whose services were switched back to their previous containers (the
/// metrics count these).
#[derive(Debug)]
pub struct RolledBack(pub String);

impl std::fmt::Display for RolledBack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What happens to one service's container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum Action {
    Keep,
    /// The container matches but is not running.
    Start,
    Create,
    Recreate {
        reasons: Vec<String>,
    },
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::Keep => f.write_str("keep"),
            Action::Start => f.write_str("start"),
            Action::Create => f.write_str("create"),
            Action::Recreate { reasons } => write!(f, "recreate ({} changed)", reasons.join(", ")),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ServicePlan {
    pub service: String,
    pub container: String,
    #[serde(flatten)]
    pub action: Action,
    #[serde(skip)]
    desired: Desired,
    #[serde(skip)]
    existing: Option<String>,
}

/// What a sync does (or would do) to the engine.
#[derive(Debug, Clone, Serialize)]
pub struct EnginePlan {
    pub pull: Vec<String>,
    pub services: Vec<ServicePlan>,
    /// Containers of services no longer in the compose file.
    pub remove: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EngineReport {
    pub pulled: Vec<String>,
    pub services: Vec<ServicePlan>,
    pub removed: Vec<String>,
    pub pruned: Vec<String>,
    /// Service → image ID now running.
    #[serde(skip)]
    pub images: BTreeMap<String, String>,
    /// Image reference → ID of what this sync pulled (the only images a later prune may remove).
    #[serde(skip)]
    pub pulled_ids: BTreeMap<String, String>,
}

/// The plan, from what is present locally (nothing is pulled).
pub async fn plan(
    docker: &Docker,
    project: &Project,
    settings: &ComposeSettings,
) -> Result<EnginePlan> {
    let images = pull::plan(docker, project, settings.pull).await?;
    let ids: BTreeMap<String, String> = images
        .iter()
        .map(|i| {
            (
                i.image.clone(),
                i.local.clone().unwrap_or_else(|| "not pulled yet".into()),
            )
        })
        .collect();
    let (services, orphans) = decide(docker, project, &ids).await?;
    Ok(EnginePlan {
        pull: images
            .iter()
            .filter(|i| i.will_pull())
            .map(|i| i.image.clone())
            .collect(),
        services,
        remove: orphans.iter().map(|(_, name)| name.clone()).collect(),
    })
}

/// Converges the engine to `project`. `pulled_before` (image references this project pulled
/// before, with their IDs) bounds what `prune` may remove.
pub async fn converge(
    docker: &Docker,
    project: &Project,
    settings: &ComposeSettings,
    registries: &Registries,
    pulled_before: &BTreeMap<String, String>,
) -> Result<EngineReport> {
    let images: Vec<ImagePlan> = pull::plan(docker, project, settings.pull).await?;
    let to_pull = images.iter().filter(|i| i.will_pull()).count();
    if to_pull > 0 {
        tracing::info!(phase = %format!("pulling {to_pull} image{}", if to_pull == 1 { "" } else { "s" }), "pulling");
    }
    // Volumes first: the engine would make a missing named volume itself, unlabelled, at create.
    ensure_volumes(docker, project).await?;
    // Networks are created while the images come and the containers are created: the engine lets
    // a container name a network that does not exist yet (it resolves it at start), and adding a
    // network touches nothing that runs, so a failed pull still changes nothing.
    let prepare = async {
        let ids = pull::pull_all(docker, &images, registries).await?;
        recover_interrupted(docker, project).await?;
        let (services, orphans) = decide(docker, project, &ids).await?;
        let created = create_all(docker, &services).await?;
        Ok::<_, anyhow::Error>((ids, services, orphans, created))
    };
    let (ids, services, orphans, created) =
        match futures::join!(prepare, ensure_networks(docker, project)) {
            (Ok(prepared), Ok(())) => prepared,
            (Ok((.., created)), Err(err)) => {
                remove_all(docker, &created).await;
                return Err(err);
            }
            (Err(err), _) => return Err(err),
        };
    if let Err(err) = connect_more_networks(docker, &services, &created).await {
        remove_all(docker, &created).await;
        return Err(err);
    }

    let since = unix_now() - 1;
    let deadline = Instant::now() + settings.healthy_timeout;
    let mut switched: Vec<&ServicePlan> = Vec::new();
    let result = start_in_order(
        docker,
        project,
        &services,
        &created,
        &mut switched,
        since,
        deadline,
    )
    .await;
    let result = match result {
        Ok(()) => {
            let targets = targets(docker, &services).await?;
            let names: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
            tracing::info!(phase = %format!("waiting for {} to be healthy", names.join(", ")), "waiting");
            health::wait_ready(docker, &targets, since, deadline).await
        }
        Err(err) => Err(err),
    };
    if let Err(err) = result {
        let rolled_back = roll_back(docker, &switched, settings.healthy_timeout).await;
        return Err(err.context(RolledBack(rolled_back)));
    }

    // Healthy: the previous containers and the orphans go.
    for plan in &services {
        if matches!(plan.action, Action::Recreate { .. }) {
            if let Some(old) = &plan.existing {
                remove_quietly(docker, old).await;
            }
        }
    }
    let mut removed = Vec::new();
    for (id, name) in &orphans {
        stop(docker, id, Duration::from_secs(10)).await?;
        docker
            .remove_container(
                id,
                Some(RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                }),
            )
            .await
            .with_context(|| format!("failed to remove container {name}"))?;
        tracing::info!(container = %name, "removed: its service left the compose file");
        removed.push(name.clone());
    }
    let images_now: BTreeMap<String, String> = project
        .services
        .values()
        .filter_map(|s| ids.get(&s.image).map(|id| (s.name.clone(), id.clone())))
        .collect();
    let pruned = if settings.prune {
        prune(docker, pulled_before, &images_now).await
    } else {
        Vec::new()
    };
    let pulled: Vec<String> = images
        .iter()
        .filter(|i| i.will_pull())
        .map(|i| i.image.clone())
        .collect();
    Ok(EngineReport {
        pulled_ids: pulled
            .iter()
            .filter_map(|image| Some((image.clone(), ids.get(image)?.clone())))
            .collect(),
        pulled,
        services,
        removed,
        pruned,
        images: images_now,
    })
}

/// Decides each service's action against the containers of the project, and lists orphans.
async fn decide(
    docker: &Docker,
    project: &Project,
    ids: &BTreeMap<String, String>,
) -> Result<(Vec<ServicePlan>, Vec<(String, String)>)> {
    let existing = project_containers(docker, &project.name).await?;
    let mut plans = Vec::new();
    for name in project.start_order() {
        let service = &project.services[name];
        let image_id = ids.get(&service.image).cloned().unwrap_or_default();
        let desired = spec::desired(project, service, &image_id);
        let current = existing.iter().find(|c| {
            label(c, spec::SERVICE) == Some(name) && names(c).iter().any(|n| n == &desired.name)
        });
        if current.is_none() {
            ensure_name_free(docker, &desired.name, &project.name).await?;
        }
        let action = match current {
            None => Action::Create,
            Some(c) if label(c, spec::CONFIG_HASH) == Some(desired.hash.as_str()) => {
                if c.state == Some(bollard::models::ContainerSummaryStateEnum::RUNNING) {
                    Action::Keep
                } else {
                    Action::Start
                }
            }
            Some(c) => Action::Recreate {
                reasons: spec::changed_sections(label(c, spec::SECTIONS), &desired.sections),
            },
        };
        plans.push(ServicePlan {
            service: name.to_string(),
            container: desired.name.clone(),
            action,
            existing: current.and_then(|c| c.id.clone()),
            desired,
        });
    }
    let orphans = existing
        .iter()
        .filter(|c| {
            let service = label(c, spec::SERVICE).unwrap_or_default();
            let ours = plans
                .iter()
                .any(|p| p.service == service && names(c).contains(&p.container));
            !ours
                && !names(c)
                    .iter()
                    .any(|n| n.ends_with(NEW_SUFFIX) || n.ends_with(OLD_SUFFIX))
        })
        .map(|c| {
            (
                c.id.clone().unwrap_or_default(),
                names(c).first().cloned().unwrap_or_default(),
            )
        })
        .collect();
    Ok((plans, orphans))
}

async fn start_in_order<'a>(
    docker: &Docker,
    project: &Project,
    services: &'a [ServicePlan],
    created: &HashMap<String, String>,
    switched: &mut Vec<&'a ServicePlan>,
    since: i64,
    deadline: Instant,
) -> Result<()> {
    // Services that do not depend on each other start together, level by level.
    for level in levels(project, services) {
        let results = futures::future::join_all(
            level
                .iter()
                .map(|plan| switch(docker, project, services, plan, created, since, deadline)),
        )
        .await;
        let mut first_error = None;
        for (plan, (began, result)) in level.iter().zip(results) {
            if began {
                switched.push(plan);
            }
            if let Err(err) = result {
                first_error.get_or_insert(err);
            }
        }
        if let Some(err) = first_error {
            return Err(err);
        }
    }
    Ok(())
}

/// The services by dependency depth: those depending on nothing first, then those whose
/// dependencies are all in earlier levels. Each level keeps the start order.
fn levels<'a>(project: &Project, services: &'a [ServicePlan]) -> Vec<Vec<&'a ServicePlan>> {
    let mut depth: HashMap<&str, usize> = HashMap::new();
    let mut levels: Vec<Vec<&ServicePlan>> = Vec::new();
    // `services` is in start order: dependencies come before their dependants.
    for plan in services {
        let service = &project.services[&plan.service];
        let level = service
            .depends_on
            .keys()
            .filter_map(|dep| depth.get(dep.as_str()))
            .map(|d| d + 1)
            .max()
            .unwrap_or(0);
        depth.insert(plan.service.as_str(), level);
        if levels.len() <= level {
            levels.resize_with(level + 1, Vec::new);
        }
        levels[level].push(plan);
    }
    levels
}

/// Waits for the conditions `plan`'s service asks of its dependencies, then switches it to its
/// new container. The flag says whether the switch began (so a rollback must undo it).
async fn switch(
    docker: &Docker,
    project: &Project,
    services: &[ServicePlan],
    plan: &ServicePlan,
    created: &HashMap<String, String>,
    since: i64,
    deadline: Instant,
) -> (bool, Result<()>) {
    let service = &project.services[&plan.service];
    let ready = async {
        let mut healthy_deps = Vec::new();
        for (dep, dependency) in &service.depends_on {
            let Some(dep_plan) = services.iter().find(|p| &p.service == dep) else {
                continue;
            };
            match dependency.condition {
                Condition::ServiceStarted => {}
                Condition::ServiceHealthy => healthy_deps.push(dep_plan.clone()),
                Condition::ServiceCompletedSuccessfully => {
                    wait_completed(docker, dep_plan, deadline).await?
                }
            }
        }
        let healthy_targets = targets(docker, &healthy_deps).await?;
        health::wait_ready(docker, &healthy_targets, since, deadline).await
    };
    if let Err(err) = ready.await {
        return (false, Err(err));
    }
    match &plan.action {
        Action::Keep => (false, Ok(())),
        Action::Start => {
            let id = plan.existing.as_deref().unwrap_or(&plan.container);
            (false, start(docker, id, &plan.container).await)
        }
        Action::Create => (
            true,
            start(docker, &created[&plan.service], &plan.container).await,
        ),
        Action::Recreate { reasons } => {
            tracing::info!(service = %plan.service, changed = %reasons.join(", "), "recreating");
            let new = &created[&plan.service];
            let result = async {
                let old = plan
                    .existing
                    .as_deref()
                    .ok_or_else(|| anyhow!("no previous container"))?;
                let grace = service.stop_grace_period.unwrap_or(Duration::from_secs(10));
                // Without a fixed host port the two can run side by side: the new one starts
                // beside the old, which keeps serving until the new one is healthy.
                let side_by_side = service.ports.iter().all(|p| p.published.is_none());
                if side_by_side {
                    let temporary = format!("{}{NEW_SUFFIX}", plan.container);
                    start(docker, new, &temporary).await?;
                    let target = Target {
                        service: plan.service.clone(),
                        name: temporary,
                        id: new.clone(),
                    };
                    health::wait_ready(docker, std::slice::from_ref(&target), since, deadline)
                        .await?;
                }
                stop(docker, old, grace).await?;
                rename(docker, old, &format!("{}{OLD_SUFFIX}", plan.container)).await?;
                rename(docker, new, &plan.container).await?;
                if !side_by_side {
                    start(docker, new, &plan.container).await?;
                }
                Ok(())
            };
            (true, result.await)
        }
    }
}

/// Puts back, for every service switched in this sync, the container it had before, and waits
/// (within `bound`) until those run healthy again.
async fn roll_back(docker: &Docker, switched: &[&ServicePlan], bound: Duration) -> String {
    let since = unix_now() - 1;
    let mut restored = Vec::new();
    for plan in switched.iter().rev() {
        // The new container holds the service's name now (or still its temporary one).
        for name in [
            plan.container.clone(),
            format!("{}{NEW_SUFFIX}", plan.container),
        ] {
            if let Ok(c) = docker.inspect_container(&name, None).await {
                let hash = c
                    .config
                    .and_then(|c| c.labels)
                    .and_then(|l| l.get(spec::CONFIG_HASH).cloned());
                if hash.as_deref() == Some(plan.desired.hash.as_str()) {
                    remove_quietly(docker, &name).await;
                }
            }
        }
        let Some(old) = &plan.existing else { continue };
        let back = async {
            if let Ok(c) = docker.inspect_container(old, None).await {
                if c.name.as_deref() != Some(&format!("/{}", plan.container)) {
                    rename(docker, old, &plan.container).await?;
                }
            }
            start(docker, old, &plan.container).await
        };
        match back.await {
            Ok(()) => restored.push(Target {
                service: plan.service.clone(),
                name: plan.container.clone(),
                id: old.clone(),
            }),
            Err(err) => {
                tracing::error!(service = %plan.service, "could not bring the previous container back: {err:#}")
            }
        }
    }
    if restored.is_empty() {
        return "the sync was rolled back: no previous container to restore".to_string();
    }
    let services: Vec<&str> = restored.iter().map(|t| t.service.as_str()).collect();
    match health::wait_ready(docker, &restored, since, Instant::now() + bound).await {
        Ok(()) => format!(
            "rolled back: the previous containers of {} run again",
            services.join(", ")
        ),
        Err(err) => format!(
            "rolled back to the previous containers of {}, but they are not healthy: {err:#}",
            services.join(", ")
        ),
    }
}

/// Containers left by a sync that was interrupted: a new one not yet switched in is removed; an
/// old one renamed aside whose service has no container any more is put back.
async fn recover_interrupted(docker: &Docker, project: &Project) -> Result<()> {
    let containers = project_containers(docker, &project.name).await?;
    for c in &containers {
        let id = c.id.clone().unwrap_or_default();
        for name in names(c) {
            if let Some(base) = name.strip_suffix(NEW_SUFFIX) {
                tracing::warn!(container = %base, "removing a new container left by an interrupted sync");
                remove_quietly(docker, &id).await;
            } else if let Some(base) = name.strip_suffix(OLD_SUFFIX) {
                let taken = containers
                    .iter()
                    .any(|o| names(o).iter().any(|n| n == base));
                if taken {
                    remove_quietly(docker, &id).await;
                } else {
                    tracing::warn!(container = %base, "restoring a container left aside by an interrupted sync");
                    rename(docker, &id, base).await?;
                }
            }
        }
    }
    Ok(())
}

/// Creates every new container (and so has the engine validate it) before anything stops, all at
/// once: service → container ID. On a failure none is left behind.
async fn create_all(docker: &Docker, services: &[ServicePlan]) -> Result<HashMap<String, String>> {
    let creations = futures::future::join_all(
        services
            .iter()
            .filter(|plan| matches!(plan.action, Action::Create | Action::Recreate { .. }))
            .map(|plan| async move {
                let name = match plan.action {
                    Action::Create => plan.container.clone(),
                    _ => format!("{}{NEW_SUFFIX}", plan.container),
                };
                (
                    plan.service.clone(),
                    create(docker, &plan.desired, &name).await,
                )
            }),
    )
    .await;
    let mut created: HashMap<String, String> = HashMap::new();
    let mut failure = None;
    for (service, result) in creations {
        match result {
            Ok(id) => {
                created.insert(service, id);
            }
            Err(err) => {
                failure.get_or_insert(err);
            }
        }
    }
    match failure {
        None => Ok(created),
        Some(err) => {
            remove_all(docker, &created).await;
            Err(err)
        }
    }
}

async fn remove_all(docker: &Docker, created: &HashMap<String, String>) {
    for id in created.values() {
        remove_quietly(docker, id).await;
    }
}

/// Connects the new containers to their networks after the first (which they were created
/// with), once every network exists.
async fn connect_more_networks(
    docker: &Docker,
    services: &[ServicePlan],
    created: &HashMap<String, String>,
) -> Result<()> {
    for plan in services {
        let Some(id) = created.get(&plan.service) else {
            continue;
        };
        for (network, endpoint) in &plan.desired.more_networks {
            let request = NetworkConnectRequest {
                container: id.clone(),
                endpoint_config: Some(endpoint.clone()),
            };
            docker
                .connect_network(network, request)
                .await
                .map_err(|e| anyhow!("{}", engine_message(&e)))
                .with_context(|| {
                    format!(
                        "failed to connect service {} to network {network}",
                        plan.service
                    )
                })?;
        }
    }
    Ok(())
}

async fn ensure_networks(docker: &Docker, project: &Project) -> Result<()> {
    for (key, network) in &project.networks {
        if docker.inspect_network(&network.name, None).await.is_ok() {
            continue;
        }
        if network.external {
            bail!("external network {} does not exist", network.name);
        }
        let mut labels: HashMap<String, String> = network.labels.clone().into_iter().collect();
        labels.insert(spec::PROJECT.into(), project.name.clone());
        labels.insert(spec::NETWORK.into(), key.clone());
        labels.insert(spec::VERSION.into(), spec::COMPOSE_VERSION.into());
        let request = NetworkCreateRequest {
            name: network.name.clone(),
            driver: Some(network.driver.clone().unwrap_or_else(|| "bridge".into())),
            internal: Some(network.internal),
            attachable: Some(network.attachable),
            options: Some(network.driver_opts.clone().into_iter().collect()),
            labels: Some(labels),
            ..Default::default()
        };
        docker
            .create_network(request)
            .await
            .with_context(|| format!("failed to create network {}", network.name))?;
        tracing::info!(network = %network.name, "created");
    }
    Ok(())
}

async fn ensure_volumes(docker: &Docker, project: &Project) -> Result<()> {
    for (key, volume) in &project.volumes {
        if docker.inspect_volume(&volume.name).await.is_ok() {
            continue;
        }
        if volume.external {
            bail!("external volume {} does not exist", volume.name);
        }
        let mut labels: HashMap<String, String> = volume.labels.clone().into_iter().collect();
        labels.insert(spec::PROJECT.into(), project.name.clone());
        labels.insert(spec::VOLUME.into(), key.clone());
        labels.insert(spec::VERSION.into(), spec::COMPOSE_VERSION.into());
        let request = VolumeCreateRequest {
            name: Some(volume.name.clone()),
            driver: volume.driver.clone(),
            driver_opts: Some(volume.driver_opts.clone().into_iter().collect()),
            labels: Some(labels),
            ..Default::default()
        };
        docker
            .create_volume(request)
            .await
            .with_context(|| format!("failed to create volume {}", volume.name))?;
        tracing::info!(volume = %volume.name, "created");
    }
    Ok(())
}

async fn create(docker: &Docker, desired: &Desired, name: &str) -> Result<String> {
    let options = CreateContainerOptions {
        name: Some(name.to_string()),
        ..Default::default()
    };
    let created = docker
        .create_container(Some(options), desired.body.clone())
        .await
        .map_err(|e| anyhow!("{}", engine_message(&e)))
        .with_context(|| {
            format!(
                "failed to create the container of service {}",
                desired.service
            )
        })?;
    Ok(created.id)
}

async fn start(docker: &Docker, id: &str, name: &str) -> Result<()> {
    match docker.start_container(id, None).await {
        // Already running (a rollback to a container that was never stopped).
        Ok(())
        | Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 304, ..
        }) => Ok(()),
        Err(err) => Err(anyhow!("{}", engine_message(&err)))
            .with_context(|| format!("failed to start container {name}")),
    }
}

async fn stop(docker: &Docker, id: &str, grace: Duration) -> Result<()> {
    let options = StopContainerOptions {
        t: Some(grace.as_secs() as i32),
        signal: None,
    };
    match docker.stop_container(id, Some(options)).await {
        Ok(())
        | Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 304, ..
        }) => Ok(()),
        Err(err) => Err(anyhow!("{}", engine_message(&err))).context("failed to stop a container"),
    }
}

async fn rename(docker: &Docker, id: &str, name: &str) -> Result<()> {
    docker
        .rename_container(
            id,
            RenameContainerOptions {
                name: name.to_string(),
            },
        )
        .await
        .map_err(|e| anyhow!("{}", engine_message(&e)))
        .with_context(|| format!("failed to rename a container to {name}"))
}

async fn remove_quietly(docker: &Docker, id: &str) {
    let options = RemoveContainerOptions {
        force: true,
        ..Default::default()
    };
    if let Err(err) = docker.remove_container(id, Some(options)).await {
        tracing::warn!(container = %id, "could not remove: {err}");
    }
}

async fn wait_completed(docker: &Docker, plan: &ServicePlan, deadline: Instant) -> Result<()> {
    loop {
        let c = docker.inspect_container(&plan.container, None).await?;
        let state = c.state.unwrap_or_default();
        if state.status == Some(ContainerStateStatusEnum::EXITED) {
            return match state.exit_code {
                Some(0) => Ok(()),
                code => bail!(
                    "service {} did not complete successfully (exit {})",
                    plan.service,
                    code.unwrap_or(-1)
                ),
            };
        }
        if Instant::now() >= deadline {
            bail!("service {} did not complete in time", plan.service);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The containers to wait for: one per service, by its final name.
async fn targets(docker: &Docker, services: &[ServicePlan]) -> Result<Vec<Target>> {
    let mut targets = Vec::new();
    for plan in services {
        let c = docker
            .inspect_container(&plan.container, None)
            .await
            .with_context(|| format!("failed to inspect container {}", plan.container))?;
        targets.push(Target {
            service: plan.service.clone(),
            name: plan.container.clone(),
            id: c.id.unwrap_or_default(),
        });
    }
    Ok(targets)
}

/// Removes the images this project pulled that no container uses any more: their references
/// (tags), so an image another project also tagged stays for it. Never one of the images the
/// project runs now, and never one a container (a rollback's included) still uses.
async fn prune(
    docker: &Docker,
    pulled_before: &BTreeMap<String, String>,
    now: &BTreeMap<String, String>,
) -> Vec<String> {
    let current: BTreeSet<&String> = now.values().collect();
    let candidates: Vec<(&String, &String)> = pulled_before
        .iter()
        .filter(|(_, id)| !current.contains(id))
        .collect();
    if candidates.is_empty() {
        return Vec::new();
    }
    let in_use: BTreeSet<String> = match docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            ..Default::default()
        }))
        .await
    {
        Ok(all) => all.into_iter().filter_map(|c| c.image_id).collect(),
        Err(err) => {
            tracing::warn!("not pruning: {err}");
            return Vec::new();
        }
    };
    let mut pruned = Vec::new();
    for (reference, id) in candidates {
        if in_use.contains(id) {
            continue;
        }
        // Only while the reference still names what this project pulled.
        match docker.inspect_image(reference).await {
            Ok(image) if image.id.as_ref() == Some(id) => {}
            _ => {
                pruned.push(reference.clone());
                continue;
            }
        }
        match docker
            .remove_image(reference, None::<RemoveImageOptions>, None)
            .await
        {
            Ok(_) => {
                tracing::info!(image = %reference, "pruned");
                pruned.push(reference.clone());
            }
            Err(err) => tracing::warn!(image = %reference, "not pruned: {err}"),
        }
    }
    pruned
}

async fn project_containers(docker: &Docker, project: &str) -> Result<Vec<ContainerSummary>> {
    let filters = HashMap::from([(
        "label".to_string(),
        vec![format!("{}={project}", spec::PROJECT)],
    )]);
    docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await
        .context("failed to list the project's containers")
}

/// A container with the name but not of this project would make the create fail: say so first.
async fn ensure_name_free(docker: &Docker, name: &str, project: &str) -> Result<()> {
    match docker.inspect_container(name, None).await {
        Ok(c) => {
            let owner = c
                .config
                .and_then(|c| c.labels)
                .and_then(|l| l.get(spec::PROJECT).cloned());
            Err(anyhow!(
                "the container name {name} is taken by a container of {}; remove it (`docker rm -f {name}`) or set another container_name",
                owner.map(|p| format!("project {p}")).unwrap_or_else(|| "no compose project".into())
            ))
            .with_context(|| format!("cannot create the containers of project {project}"))
        }
        Err(_) => Ok(()),
    }
}

fn label<'a>(c: &'a ContainerSummary, key: &str) -> Option<&'a str> {
    c.labels
        .as_ref()
        .and_then(|l| l.get(key))
        .map(String::as_str)
}

fn names(c: &ContainerSummary) -> Vec<String> {
    c.names
        .iter()
        .flatten()
        .map(|n| n.trim_start_matches('/').to_string())
        .collect()
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
