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
//!
//! This module holds the entry points ([`plan`], [`converge`]) and what they report; the steps
//! live beside it: `prepare` (everything before a running container is touched, and the warm
//! pool's preparation), `rollout` (the switch, level by level), `ops` (running a switch's
//! operations), `rollback`, `recovery` (of an interrupted switch) and `cleanup` (orphans
//! and the images a prune may remove).

mod cleanup;
mod ops;
mod prepare;
mod recovery;
mod rollback;
mod rollout;

use std::collections::BTreeMap;
use std::time::SystemTime;

use anyhow::Result;
use serde::Serialize;
use tokio::time::Instant;

use super::api::Engine;
use super::decide::{self, Action, ServicePlan};
use super::health::{self, Target};
use super::observe::observe;
use super::pull;
use super::registry::Registries;
use super::spec::AgentFiles;
use super::switch;
use crate::compose::Project;
use crate::config::ComposeSettings;

use cleanup::{prune, remove_orphans};
use ops::{run_op, Waits};
use prepare::prepare;
pub use prepare::prepare_warm;
pub use recovery::recover_interrupted;
use recovery::set_right;
use rollback::roll_back;
use rollout::{start_in_order, target};

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
        let waiting = health::wait_ready(engine, &targets, since, deadline);
        crate::timeline::timed("health", names.join(", "), waiting).await
    }
    .await;
    if let Err(err) = result {
        keep_logs(engine, services, &created).await;
        let bound = settings.healthy_timeout;
        let rolled_back = roll_back(engine, project, services, &created, bound).await;
        return Err(err.context(RolledBack(rolled_back)));
    }

    // Healthy: the previous containers and the orphans go.
    for plan in services {
        if let (Action::Recreate { .. }, Some(old)) = (&plan.action, &plan.existing) {
            let waits = Waits::of(plan, since, deadline);
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

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// How many of a failed container's last lines a failure report shows.
pub const REPORT_LINES: usize = 50;

/// Before a rollback removes them: the last lines of the containers this sync created, and of
/// any other that is not running and healthy, kept for the failure report (at most five, each
/// read within 5 s).
async fn keep_logs(
    engine: &impl Engine,
    services: &[ServicePlan],
    created: &std::collections::HashMap<String, String>,
) {
    let mut suspects = Vec::new();
    for plan in services {
        let id = match created.get(&plan.service).or(plan.existing.as_ref()) {
            Some(id) => id,
            None => continue,
        };
        let new = created.contains_key(&plan.service);
        let unwell = match engine.container(id).await {
            Ok(Some(c)) => !c.is_running() || c.health == Some(super::api::Health::Unhealthy),
            _ => false,
        };
        if new || unwell {
            suspects.push((plan, id.clone()));
        }
    }
    let reads = suspects.into_iter().take(5).map(|(plan, id)| async move {
        let bound = std::time::Duration::from_secs(5);
        match tokio::time::timeout(bound, engine.logs(&id, REPORT_LINES)).await {
            Ok(Ok(lines)) => crate::timeline::keep_logs(&plan.service, &plan.container, lines),
            Ok(Err(err)) => {
                tracing::warn!("could not read the output of {}: {err}", plan.container)
            }
            Err(_) => tracing::warn!(
                "could not read the output of {}: no answer in {bound:?}",
                plan.container
            ),
        }
    });
    futures::future::join_all(reads).await;
}

#[cfg(test)]
mod tests;
