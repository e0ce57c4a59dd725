//! Converging the engine to the project, replacing only what changed, safely: observe → decide →
//! execute.
//!
//! 1. What the engine holds of the project is read once ([`observe`]). A switch an earlier sync
//!    left half done (the agent was killed) is undone, or finished when its new container already
//!    serves healthy ([`decide::recovery`]), before anything else: whatever fails later, the last
//!    good containers serve.
//! 2. Every image is pulled first; a pull that fails changes nothing that runs.
//! 3. Each service's action is decided ([`decide::decide`]): kept, started, created or recreated
//!    (with the sections that changed); containers of services no longer in the file are removed
//!    at the end.
//! 4. New containers are created under a temporary name before any running one is stopped, so the
//!    engine validates every spec first.
//! 5. Level by level of `depends_on`, each service is switched to its new container
//!    ([`switch::switch`]); the old one is kept aside.
//! 6. Everything is waited for until running and healthy (one-shot services: exited 0); on
//!    failure every service touched by this sync is put back to its previous container, which runs
//!    again. On success the previous containers and the orphans go.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, Context, Result};
use bollard::models::{NetworkCreateRequest, VolumeCreateRequest};
use serde::Serialize;
use tokio::time::Instant;

use super::api::Engine;
use super::decide::{self, Action, ServicePlan};
use super::health::{self, Target};
use super::observe::observe;
use super::pull::{self, PullLimits};
use super::registry::Registries;
use super::spec::{self, AgentFiles};
use super::switch::{self, Mode, Op, Slots};
use crate::compose::{Condition, Project};
use crate::config::ComposeSettings;
use crate::error::all_of;

/// Marks a failed sync whose services were switched back to their previous containers (the
/// metrics count these).
#[derive(Debug)]
pub struct RolledBack(pub String);

impl std::fmt::Display for RolledBack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the project pulled before: image → ID (the only images a prune may remove) and
/// image → when (RFC 3339), for the `daily`-like pull policies.
#[derive(Debug, Clone, Copy)]
pub struct PulledBefore<'a> {
    pub ids: &'a BTreeMap<String, String>,
    pub at: &'a BTreeMap<String, String>,
}

/// What a sync would do to the engine, for `plan`.
#[derive(Debug, Clone, Serialize)]
pub struct EnginePlan {
    pub pull: Vec<String>,
    pub services: Vec<ServicePlan>,
    /// Containers of services no longer in the compose file.
    pub remove: Vec<String>,
    /// Services whose last switch was cut short (the agent stopped): the next sync sets them
    /// right first.
    pub interrupted: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EngineReport {
    pub pulled: Vec<String>,
    pub services: Vec<ServicePlan>,
    pub removed: Vec<String>,
    pub pruned: Vec<String>,
    /// Images used from the local store because their registry could not be reached.
    pub stale: Vec<String>,
    /// Service → image ID now running.
    #[serde(skip)]
    pub images: BTreeMap<String, String>,
    /// Image reference → ID of what this sync pulled (the only images a later prune may remove).
    #[serde(skip)]
    pub pulled_ids: BTreeMap<String, String>,
}

/// The plan, from what is present locally (nothing is pulled, nothing changes).
pub async fn plan(
    engine: &impl Engine,
    project: &Project,
    settings: &ComposeSettings,
    files: &AgentFiles,
    pulled_at: &BTreeMap<String, String>,
) -> Result<EnginePlan> {
    secrets_written(project)?;
    let observed = observe(engine, project).await?;
    let images = pull::plan(
        project,
        settings.pull,
        &observed.images,
        pulled_at,
        SystemTime::now(),
    );
    let ids: BTreeMap<String, String> = images
        .iter()
        .map(|i| {
            (
                i.image.clone(),
                i.local.clone().unwrap_or_else(|| "not pulled yet".into()),
            )
        })
        .collect();
    let decision = decide::decide(project, &observed, &ids, files)?;
    Ok(EnginePlan {
        pull: images
            .iter()
            .filter(|i| i.will_pull())
            .map(|i| i.image.clone())
            .collect(),
        services: decision.services,
        remove: decision.remove.into_iter().map(|(_, name)| name).collect(),
        interrupted: decide::recovery(&observed.containers, SystemTime::now())
            .into_iter()
            .map(|(service, _)| service)
            .collect(),
    })
}

/// Converges the engine to `project`. `pulled_before` (image references this project pulled
/// before, with their IDs) bounds what `prune` may remove; `files` are the agent's files, whose
/// content counts in the hash of the services that mount them.
pub async fn converge(
    engine: &impl Engine,
    project: &Project,
    settings: &ComposeSettings,
    registries: &Registries,
    before: PulledBefore<'_>,
    files: &AgentFiles,
) -> Result<EngineReport> {
    secrets_written(project)?;
    let mut observed = observe(engine, project).await?;
    // Normally done already, first thing in the sync (`recover_interrupted`); cheap to be sure.
    if set_right(engine, &observed.containers, settings.healthy_timeout).await? {
        observed = observe(engine, project).await?;
    }
    supported_by(engine, project)?;
    let images = pull::plan(
        project,
        settings.pull,
        &observed.images,
        before.at,
        SystemTime::now(),
    );
    let (pulled, decision, mut created) = prepare(
        engine, project, settings, registries, files, &observed, &images,
    )
    .await?;
    let services = &decision.services;

    let since = unix_now() - 1;
    let deadline = Instant::now() + settings.healthy_timeout;
    let result = async {
        start_in_order(engine, project, services, &mut created, since, deadline).await?;
        let targets: Vec<Target> = services.iter().map(|p| target(p, &created)).collect();
        let names: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
        crate::progress::phase(format!("waiting for {} to be healthy", names.join(", ")));
        health::wait_ready(engine, &targets, since, deadline).await
    }
    .await;
    if let Err(err) = result {
        let bound = settings.healthy_timeout;
        let rolled_back = roll_back(engine, project, services, &created, bound).await;
        return Err(err.context(RolledBack(rolled_back)));
    }

    // Healthy: the previous containers and the orphans go.
    for plan in services {
        if let (Action::Recreate { .. }, Some(old)) = (&plan.action, &plan.existing) {
            let waits = Waits::new(&plan.service, plan.one_shot, since, deadline);
            if let Err(err) = run_op(engine, &switch::finish(old), &waits).await {
                tracing::warn!(service = %plan.service, "could not remove the previous container: {err:#}");
            }
        }
    }
    let removed = remove_orphans(engine, &decision.remove).await?;
    let images_now: BTreeMap<String, String> = project
        .services
        .values()
        .filter_map(|s| Some((s.name.clone(), pulled.ids.get(&s.image)?.clone())))
        .collect();
    let pruned = match settings.prune {
        true => prune(engine, before.ids, &images_now).await,
        false => Vec::new(),
    };
    Ok(EngineReport {
        services: decision.services,
        removed,
        pruned,
        images: images_now,
        ..EngineReport::pulled(&images, pulled)
    })
}

impl EngineReport {
    /// What was pulled (the images whose pull went through, with their IDs), and nothing else.
    fn pulled(images: &[pull::ImagePlan], pulled: pull::Pulled) -> EngineReport {
        let refs: Vec<String> = images
            .iter()
            .filter(|i| i.will_pull() && !pulled.stale.contains(&i.image))
            .map(|i| i.image.clone())
            .collect();
        EngineReport {
            pulled_ids: refs
                .iter()
                .filter_map(|image| Some((image.clone(), pulled.ids.get(image)?.clone())))
                .collect(),
            pulled: refs,
            services: Vec::new(),
            removed: Vec::new(),
            pruned: Vec::new(),
            stale: pulled.stale,
            images: BTreeMap::new(),
        }
    }
}

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

/// What the project asks that this engine's API cannot do, refused before anything changes.
/// Every secret a service mounts has its file (named by the sync, before the engine is touched):
/// a container is never created without one.
fn secrets_written(project: &Project) -> Result<()> {
    for service in project.services.values() {
        if let Some(secret) = service.secrets.iter().find(|s| s.host.is_none()) {
            anyhow::bail!(
                "service {}: secret {} has no file yet; the sync writes it before the engine is touched",
                service.name,
                secret.source
            );
        }
    }
    Ok(())
}

fn supported_by(engine: &impl Engine, project: &Project) -> Result<()> {
    let version = engine.api_version();
    let problems: Vec<String> = project
        .services
        .values()
        .filter(|s| s.healthcheck.as_ref().is_some_and(|h| h.start_interval.is_some()))
        .filter(|_| version < (1, 44))
        .map(|s| {
            format!(
                "service {}: healthcheck.start_interval needs Docker Engine 25 or later (API 1.44); this engine speaks API {}.{}: drop it (start_period still applies)",
                s.name, version.0, version.1
            )
        })
        .collect();
    match problems.as_slice() {
        [] => Ok(()),
        _ => Err(crate::error::input_error(problems.join("; "))),
    }
}

/// Everything before the first running container is touched: volumes, networks, pulls, the
/// decision and the new containers (created, not started). On a failure nothing is left behind
/// (networks and volumes, which touch nothing that runs, stay).
async fn prepare(
    engine: &impl Engine,
    project: &Project,
    settings: &ComposeSettings,
    registries: &Registries,
    files: &AgentFiles,
    observed: &super::observe::Observed,
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

/// Finishes or undoes what an interrupted sync left of `project`'s containers (see
/// [`decide::recovery`]); returns the services it set right. The first thing a sync does, before
/// it fetches anything: whatever fails later, the last good containers serve.
pub async fn recover_interrupted(
    engine: &impl Engine,
    project: &str,
    bound: Duration,
) -> Result<Vec<String>> {
    let containers = engine
        .project_containers(project)
        .await
        .context("failed to list the project's containers")?;
    let plans = decide::recovery(&containers, SystemTime::now());
    run_recovery(engine, &plans, bound).await?;
    Ok(plans.into_iter().map(|(service, _)| service).collect())
}

/// [`recover_interrupted`] on containers already listed; whether anything was done.
async fn set_right(
    engine: &impl Engine,
    containers: &[super::api::Container],
    bound: Duration,
) -> Result<bool> {
    let plans = decide::recovery(containers, SystemTime::now());
    run_recovery(engine, &plans, bound).await?;
    Ok(!plans.is_empty())
}

async fn run_recovery(
    engine: &impl Engine,
    plans: &[(String, Vec<Op>)],
    bound: Duration,
) -> Result<()> {
    for (service, ops) in plans {
        crate::progress::warn(format!(
            "service {service}: an earlier sync was cut short; setting it right: {}",
            describe(ops)
        ));
        let waits = Waits::new(service, false, 0, Instant::now() + bound);
        run_ops(engine, ops, &waits).await.with_context(|| {
            format!("failed to set right the interrupted switch of service {service}")
        })?;
    }
    Ok(())
}

/// The container a service runs once switched: the one created for it, else the one it had.
fn final_id(plan: &ServicePlan, created: &HashMap<String, String>) -> String {
    created
        .get(&plan.service)
        .or(plan.existing.as_ref())
        .cloned()
        .unwrap_or_default()
}

fn target(plan: &ServicePlan, created: &HashMap<String, String>) -> Target {
    Target {
        service: plan.service.clone(),
        name: plan.container.clone(),
        id: final_id(plan, created),
        completes: plan.one_shot,
    }
}

/// What a `WaitReady` of one service's operations waits for, and until when.
struct Waits<'a> {
    service: &'a str,
    one_shot: bool,
    since: i64,
    deadline: Instant,
}

impl<'a> Waits<'a> {
    fn new(service: &'a str, one_shot: bool, since: i64, deadline: Instant) -> Waits<'a> {
        Waits {
            service,
            one_shot,
            since,
            deadline,
        }
    }
}

/// Runs `ops` in order, stopping at the first that fails.
async fn run_ops(engine: &impl Engine, ops: &[Op], waits: &Waits<'_>) -> Result<()> {
    for op in ops {
        run_op(engine, op, waits).await?;
    }
    Ok(())
}

async fn run_op(engine: &impl Engine, op: &Op, waits: &Waits<'_>) -> Result<()> {
    match op {
        Op::Start { id, name } => engine
            .start(id)
            .await
            .with_context(|| format!("failed to start container {name}")),
        Op::Stop { id, grace } => engine
            .stop(id, *grace)
            .await
            .with_context(|| format!("failed to stop container {}", short(id))),
        Op::Rename { id, to } => engine
            .rename(id, to)
            .await
            .with_context(|| format!("failed to rename container {} to {to}", short(id))),
        Op::Remove { id } => engine
            .remove(id)
            .await
            .with_context(|| format!("failed to remove container {}", short(id))),
        Op::WaitReady { id, name } => {
            let target = Target {
                service: waits.service.to_string(),
                name: name.clone(),
                id: id.clone(),
                completes: waits.one_shot,
            };
            health::wait_ready(engine, &[target], waits.since, waits.deadline).await
        }
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

fn describe(ops: &[Op]) -> String {
    let words: Vec<String> = ops
        .iter()
        .map(|op| match op {
            Op::Start { name, .. } => format!("start {name}"),
            Op::Stop { id, .. } => format!("stop {}", short(id)),
            Op::Rename { id, to } => format!("rename {} to {to}", short(id)),
            Op::Remove { id } => format!("remove {}", short(id)),
            Op::WaitReady { name, .. } => format!("wait for {name}"),
        })
        .collect();
    words.join(", ")
}

async fn start_in_order(
    engine: &impl Engine,
    project: &Project,
    services: &[ServicePlan],
    created: &mut HashMap<String, String>,
    since: i64,
    deadline: Instant,
) -> Result<()> {
    // Services that do not depend on each other start together, level by level.
    for level in decide::levels(project, services) {
        // Those that join another's network namespace are created now that it has its new
        // container (it is in an earlier level).
        for &i in &level {
            if services[i].deferred {
                let (service, id) = create_one(engine, &services[i]).await?;
                created.insert(service, id);
            }
        }
        let created = &*created;
        let results = futures::future::join_all(level.iter().map(|&i| {
            switch_service(
                engine,
                project,
                services,
                &services[i],
                created,
                since,
                deadline,
            )
        }))
        .await;
        let errors: Vec<anyhow::Error> = results.into_iter().filter_map(Result::err).collect();
        if let Some(err) = all_of(errors, level.len(), "services failed to start") {
            return Err(err);
        }
    }
    Ok(())
}

/// Waits for the conditions `plan`'s service asks of its dependencies, then switches it to its
/// new container.
async fn switch_service(
    engine: &impl Engine,
    project: &Project,
    services: &[ServicePlan],
    plan: &ServicePlan,
    created: &HashMap<String, String>,
    since: i64,
    deadline: Instant,
) -> Result<()> {
    let service = &project.services[&plan.service];
    let mut dependencies = Vec::new();
    for (dep, dependency) in &service.depends_on {
        let Some(dep_plan) = services.iter().find(|p| &p.service == dep) else {
            continue;
        };
        let mut target = target(dep_plan, created);
        match dependency.condition {
            Condition::ServiceStarted => continue,
            Condition::ServiceHealthy => target.completes = false,
            Condition::ServiceCompletedSuccessfully => target.completes = true,
        }
        dependencies.push(target);
    }
    health::wait_ready(engine, &dependencies, since, deadline).await?;
    let own = Waits::new(&plan.service, plan.one_shot, since, deadline);
    match &plan.action {
        Action::Keep | Action::Done => Ok(()),
        Action::Start | Action::Create => {
            let start = Op::Start {
                id: final_id(plan, created),
                name: plan.container.clone(),
            };
            run_op(engine, &start, &own).await
        }
        Action::Recreate { reasons } => {
            crate::progress::step(format!(
                "recreating {} ({} changed)",
                plan.service,
                reasons.join(", ")
            ));
            let old = plan
                .existing
                .as_deref()
                .ok_or_else(|| anyhow!("no previous container"))?;
            let ops = switch::switch(
                &plan.container,
                old,
                &created[&plan.service],
                plan.side_by_side,
                plan.grace,
            );
            run_ops(engine, &ops, &own).await
        }
    }
}

/// Puts back, for every service given a new container in this sync, the container it had before
/// (or none, for a service new in this sync), and waits (within `bound`) until those run healthy
/// again. The undo is decided from what the engine shows now, as after an interruption.
async fn roll_back(
    engine: &impl Engine,
    project: &Project,
    services: &[ServicePlan],
    created: &HashMap<String, String>,
    bound: Duration,
) -> String {
    let since = unix_now() - 1;
    let containers = match engine.project_containers(&project.name).await {
        Ok(containers) => containers,
        Err(err) => {
            return format!(
                "the rollback could not list the containers ({err}); the next sync sets them right"
            )
        }
    };
    let mut restored = Vec::new();
    let mut failed = Vec::new();
    for plan in services
        .iter()
        .rev()
        .filter(|p| created.contains_key(&p.service))
    {
        let slots = Slots::of(&plan.container, &containers);
        let ops = match &plan.action {
            Action::Recreate { .. } => switch::recover(
                &plan.container,
                slots,
                plan.one_shot,
                Mode::Undo,
                SystemTime::now(),
            ),
            _ => vec![Op::Remove {
                id: created[&plan.service].clone(),
            }],
        };
        let waits = Waits::new(&plan.service, plan.one_shot, since, Instant::now() + bound);
        match run_ops(engine, &ops, &waits).await {
            Ok(()) => {
                if let Some(old) = &plan.existing {
                    restored.push(Target {
                        service: plan.service.clone(),
                        name: plan.container.clone(),
                        id: old.clone(),
                        completes: plan.one_shot,
                    });
                }
            }
            Err(err) => {
                tracing::error!(service = %plan.service, "could not bring the previous container back: {err:#}");
                failed.push(plan.service.as_str());
            }
        }
    }
    let failed = match failed.as_slice() {
        [] => String::new(),
        some => format!(
            "; the previous containers of {} could not be brought back (the next sync sets them right)",
            some.join(", ")
        ),
    };
    if restored.is_empty() {
        return format!("the sync was rolled back: no previous container to restore{failed}");
    }
    let names: Vec<&str> = restored.iter().map(|t| t.service.as_str()).collect();
    match health::wait_ready(engine, &restored, since, Instant::now() + bound).await {
        Ok(()) => format!(
            "rolled back: the previous containers of {} run again{failed}",
            names.join(", ")
        ),
        Err(err) => format!(
            "rolled back to the previous containers of {}, but they are not healthy: {err:#}{failed}",
            names.join(", ")
        ),
    }
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
async fn create_one(engine: &impl Engine, plan: &ServicePlan) -> Result<(String, String)> {
    let name = match plan.action {
        Action::Create => plan.container.clone(),
        _ => switch::staged_name(&plan.container),
    };
    let id = engine
        .create(
            &name,
            plan.desired.body.clone(),
            plan.desired.platform.as_deref(),
        )
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

async fn remove_orphans(engine: &impl Engine, orphans: &[(String, String)]) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    let mut errors = Vec::new();
    for (id, name) in orphans {
        let gone = async {
            engine.stop(id, Duration::from_secs(10)).await?;
            engine.remove(id).await
        };
        match gone.await {
            Ok(()) => {
                crate::progress::step(format!("removed {name}: its service left the compose file"));
                removed.push(name.clone());
            }
            Err(err) => {
                errors.push(anyhow!(err).context(format!("failed to remove container {name}")))
            }
        }
    }
    match all_of(
        errors,
        orphans.len(),
        "containers of removed services could not be removed",
    ) {
        Some(err) => Err(err),
        None => Ok(removed),
    }
}

/// Removes the images this project pulled that no container uses any more: their references
/// (tags), so an image another project also tagged stays for it. Never one of the images the
/// project runs now, and never one a container (a rollback's included) still uses.
async fn prune(
    engine: &impl Engine,
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
    let in_use = match engine.images_in_use().await {
        Ok(in_use) => in_use,
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
        match engine.image_id(reference).await {
            Ok(Some(local)) if &local == id => {}
            _ => {
                pruned.push(reference.clone());
                continue;
            }
        }
        match engine.remove_image(reference).await {
            Ok(()) => {
                crate::progress::step(format!("pruned {reference}"));
                pruned.push(reference.clone());
            }
            Err(err) => tracing::warn!(image = %reference, "not pruned: {err}"),
        }
    }
    pruned
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
