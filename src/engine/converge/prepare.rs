//! Getting ready without touching what runs: the named volumes and networks, the pulls, the
//! decision and the new containers (created, not started), all undone but the volumes and networks
//! on a failure; and, for an instance in a warm pool, the same short of the containers.

use std::collections::HashMap;
use std::time::SystemTime;

use anyhow::{Context, Result};
use bollard::models::{NetworkCreateRequest, VolumeCreateRequest};

use super::ops::short;
use super::{EngineReport, PulledBefore};
use crate::compose::Project;
use crate::config::ComposeSettings;
use crate::engine::api::Engine;
use crate::engine::decide::{self, Action, ServicePlan};
use crate::engine::observe::{observe, Observed};
use crate::engine::pull::{self, PullLimits};
use crate::engine::registry::Registries;
use crate::engine::spec::{self, AgentFiles};
use crate::engine::switch;
use crate::error::all_of;

/// For an instance in a warm pool: everything slow, nothing that serves. The images are pulled
/// (with the same policy and limits as a sync), the networks and named volumes created; no
/// container is created or started. When the instance goes in service, the sync that follows
/// only creates and starts the containers. (Containers created now and started later would look,
/// to the crash recovery of the next sync, like a switch a killed sync left half done.)
pub async fn prepare_warm(
    engine: &impl Engine,
    project: &Project,
    settings: &ComposeSettings,
    registries: &Registries,
    before: PulledBefore<'_>,
) -> Result<EngineReport> {
    let observed = observe(engine, project).await?;
    let images = pull::plan(
        project,
        settings.pull,
        &observed.images,
        before.at,
        SystemTime::now(),
    );
    let (networks, volumes) = decide::missing_resources(project, &observed)?;
    create_volumes(engine, project, &volumes).await?;
    create_networks(engine, project, &networks).await?;
    let limits = PullLimits {
        stall: settings.pull_stall_timeout,
        overall: settings.pull_timeout,
    };
    let pulled = pull::pull_all(engine, &images, registries, limits).await?;
    Ok(EngineReport::pulled(&images, pulled))
}

/// Everything before the first running container is touched: volumes, networks, pulls, the
/// decision and the new containers (created, not started). On a failure nothing is left behind
/// (networks and volumes, which touch nothing that runs, stay).
pub(super) async fn prepare(
    engine: &impl Engine,
    project: &Project,
    settings: &ComposeSettings,
    registries: &Registries,
    files: &AgentFiles,
    observed: &Observed,
    images: &[pull::ImagePlan],
) -> Result<(pull::Pulled, decide::Decision, HashMap<String, String>)> {
    let to_pull = images.iter().filter(|i| i.will_pull()).count();
    if to_pull > 0 {
        let plural = if to_pull == 1 { "" } else { "s" };
        crate::progress::phase(format!("pulling {to_pull} image{plural}"));
    }
    let (networks, volumes) = decide::missing_resources(project, observed)?;
    // Volumes first: the engine would make a missing named volume itself, unlabelled, at create.
    create_volumes(engine, project, &volumes).await?;
    // Networks are created while the images come and the containers are created: the engine lets
    // a container name a network that does not exist yet (it resolves it at start), and adding a
    // network touches nothing that runs, so a failed pull still changes nothing.
    let limits = PullLimits {
        stall: settings.pull_stall_timeout,
        overall: settings.pull_timeout,
    };
    let made = async {
        let pulled = pull::pull_all(engine, images, registries, limits).await?;
        let decision = decide::decide(project, observed, &pulled.ids, files)?;
        let created = create_all(engine, &decision.services).await?;
        Ok::<_, anyhow::Error>((pulled, decision, created))
    };
    let (pulled, decision, created) =
        match futures::join!(made, create_networks(engine, project, &networks)) {
            (Ok(made), Ok(())) => made,
            (Ok((_, _, created)), Err(err)) => {
                discard(engine, &created).await;
                return Err(err);
            }
            (Err(err), _) => return Err(err),
        };
    if let Err(err) = connect_more_networks(engine, &decision.services, &created).await {
        discard(engine, &created).await;
        return Err(err);
    }
    Ok((pulled, decision, created))
}

/// Creates every new container (and so has the engine validate it) before anything stops, all at
/// once: service → container ID. On a failure none is left behind, and every failure is told.
async fn create_all(
    engine: &impl Engine,
    services: &[ServicePlan],
) -> Result<HashMap<String, String>> {
    let wanted: Vec<&ServicePlan> = services
        .iter()
        .filter(|plan| matches!(plan.action, Action::Create | Action::Recreate { .. }))
        .filter(|plan| !plan.deferred)
        .collect();
    let creations =
        futures::future::join_all(wanted.iter().map(|plan| create_one(engine, plan))).await;
    let mut created: HashMap<String, String> = HashMap::new();
    let mut errors = Vec::new();
    for result in creations {
        match result {
            Ok((service, id)) => {
                created.insert(service, id);
            }
            Err(err) => errors.push(err),
        }
    }
    match all_of(errors, wanted.len(), "containers could not be created") {
        None => Ok(created),
        Some(err) => {
            discard(engine, &created).await;
            Err(err)
        }
    }
}

/// Creates `plan`'s new container: under the service's name for a new service, else beside the
/// one it replaces. (service, container ID).
pub(super) async fn create_one(
    engine: &impl Engine,
    plan: &ServicePlan,
) -> Result<(String, String)> {
    let name = match plan.action {
        Action::Create => plan.container.clone(),
        _ => switch::staged_name(&plan.container),
    };
    let create = engine.create(
        &name,
        plan.desired.body.clone(),
        plan.desired.platform.as_deref(),
    );
    let id = crate::timeline::timed("create", name.as_str(), create)
        .await
        .with_context(|| format!("failed to create the container of service {}", plan.service))?;
    Ok((plan.service.clone(), id))
}

/// Removes containers created by this sync that never ran.
async fn discard(engine: &impl Engine, created: &HashMap<String, String>) {
    for id in created.values() {
        if let Err(err) = engine.remove(id).await {
            tracing::warn!(container = %short(id), "could not remove: {err}");
        }
    }
}

/// Connects the new containers to their networks after the first (which they were created
/// with), once every network exists.
async fn connect_more_networks(
    engine: &impl Engine,
    services: &[ServicePlan],
    created: &HashMap<String, String>,
) -> Result<()> {
    for plan in services {
        let Some(id) = created.get(&plan.service) else {
            continue;
        };
        for (network, endpoint) in &plan.desired.more_networks {
            engine
                .connect(network, id, endpoint.clone())
                .await
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

async fn create_networks(engine: &impl Engine, project: &Project, keys: &[String]) -> Result<()> {
    for key in keys {
        let network = &project.networks[key];
        let mut labels: HashMap<String, String> = network.labels.clone().into_iter().collect();
        labels.insert(spec::PROJECT.into(), project.name.clone());
        labels.insert(spec::NETWORK.into(), key.clone());
        labels.insert(spec::VERSION.into(), spec::COMPOSE_VERSION.into());
        labels.insert(
            spec::CONFIG_HASH.into(),
            crate::compose::network_hash(network),
        );
        let request = NetworkCreateRequest {
            name: network.name.clone(),
            driver: Some(network.driver.clone().unwrap_or_else(|| "bridge".into())),
            internal: Some(network.internal),
            enable_ipv6: network.enable_ipv6,
            attachable: Some(network.attachable),
            options: Some(network.driver_opts.clone().into_iter().collect()),
            labels: Some(labels),
            ipam: network.ipam.as_ref().map(|ipam| bollard::models::Ipam {
                driver: ipam.driver.clone(),
                config: Some(
                    ipam.config
                        .iter()
                        .map(|pool| bollard::models::IpamConfig {
                            subnet: pool.subnet.clone(),
                            ip_range: pool.ip_range.clone(),
                            gateway: pool.gateway.clone(),
                            auxiliary_addresses: (!pool.aux_addresses.is_empty())
                                .then(|| pool.aux_addresses.clone().into_iter().collect()),
                        })
                        .collect(),
                ),
                options: (!ipam.options.is_empty())
                    .then(|| ipam.options.clone().into_iter().collect()),
            }),
            ..Default::default()
        };
        engine
            .create_network(request)
            .await
            .with_context(|| format!("failed to create network {}", network.name))?;
        tracing::info!(network = %network.name, "created");
    }
    Ok(())
}

async fn create_volumes(engine: &impl Engine, project: &Project, keys: &[String]) -> Result<()> {
    for key in keys {
        let volume = &project.volumes[key];
        let mut labels: HashMap<String, String> = volume.labels.clone().into_iter().collect();
        labels.insert(spec::PROJECT.into(), project.name.clone());
        labels.insert(spec::VOLUME.into(), key.clone());
        labels.insert(spec::VERSION.into(), spec::COMPOSE_VERSION.into());
        labels.insert(
            spec::CONFIG_HASH.into(),
            crate::compose::volume_hash(volume),
        );
        let request = VolumeCreateRequest {
            name: Some(volume.name.clone()),
            driver: volume.driver.clone(),
            driver_opts: Some(volume.driver_opts.clone().into_iter().collect()),
            labels: Some(labels),
            ..Default::default()
        };
        engine
            .create_volume(request)
            .await
            .with_context(|| format!("failed to create volume {}", volume.name))?;
        tracing::info!(volume = %volume.name, "created");
    }
    Ok(())
}
