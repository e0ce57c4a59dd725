//! The project's containers as the engine reports them now: for `status`, the metrics and the
//! daemon's health watch. A service with a readiness probe is probed once, now.

use std::collections::BTreeMap;

use anyhow::{Context, Result};

use super::api::{Engine, Health};
use super::ready::{self, Probe};
use super::spec;
use super::switch::{NEW_SUFFIX, OLD_SUFFIX};

/// One container of the project, as the engine reports it now.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ContainerStatus {
    pub name: String,
    pub service: String,
    pub image: String,
    pub state: String,
    /// `healthy`, `unhealthy`, `starting` (its healthcheck), then, with a probe, `ready` or
    /// `not ready: <why>`; `None` when nothing checks it.
    pub health: Option<String>,
    /// What says it is ready: `healthcheck`, `probe <what>` (both, joined with `and`), or `none`.
    pub readiness: String,
    /// Others wait for it to complete (`service_completed_successfully`): exited 0 is its
    /// success, not a failure.
    pub one_shot: bool,
    pub exit_code: Option<i64>,
}

/// The project's containers (the services' own; not those a sync keeps aside while it switches).
pub async fn containers(
    engine: &impl Engine,
    project: &str,
    probes: &BTreeMap<String, Probe>,
) -> Result<Vec<ContainerStatus>> {
    let all = engine
        .project_containers(project)
        .await
        .context("failed to list the project's containers")?;
    let one_shots = spec::one_shots(&all);
    let kept: Vec<&super::api::Container> = all
        .iter()
        .filter(|c| !c.name.ends_with(NEW_SUFFIX) && !c.name.ends_with(OLD_SUFFIX))
        .collect();
    let mut out: Vec<ContainerStatus> = kept
        .iter()
        .map(|c| {
            let service = c.label(spec::SERVICE).unwrap_or_default().to_string();
            let probe = probes.get(&service);
            let readiness = match (c.health.is_some(), probe) {
                (true, Some(p)) => format!("healthcheck and probe {}", p.describe()),
                (false, Some(p)) => format!("probe {}", p.describe()),
                (true, None) => "healthcheck".to_string(),
                (false, None) => "none".to_string(),
            };
            ContainerStatus {
                name: c.name.clone(),
                one_shot: one_shots.contains(service.as_str()),
                readiness,
                service,
                image: c.image.clone(),
                state: format!("{:?}", c.state).to_lowercase(),
                health: c.health.map(|h| {
                    match h {
                        Health::Starting => "starting",
                        Health::Healthy => "healthy",
                        Health::Unhealthy => "unhealthy",
                    }
                    .to_string()
                }),
                exit_code: c.exit_code,
            }
        })
        .collect();
    // Probed together, each within its own timeout: a status is a few seconds at most.
    let probed = kept.iter().zip(out.iter_mut()).filter_map(|(c, status)| {
        let probe = probes.get(&status.service)?;
        let checkable = c.is_running() && !status.one_shot && c.health != Some(Health::Unhealthy);
        checkable.then_some(async move {
            let said = ready::attempt(engine, c, probe).await;
            let healthcheck_passes = c.health.is_none_or(|h| h == Health::Healthy);
            status.health = Some(match (said, healthcheck_passes) {
                (Ok(()), true) => "ready".to_string(),
                (Ok(()), false) => "starting".to_string(),
                (Err(why), _) => format!("not ready: {why}"),
            });
        })
    });
    futures::future::join_all(probed).await;
    out.sort_by(|a, b| a.service.cmp(&b.service));
    Ok(out)
}

/// The project's containers, from a connection of its own, or none when the engine does not answer
/// within 2 s (for the metrics, which must not hold anything up).
pub async fn containers_now(
    project: &str,
    probes: &BTreeMap<String, Probe>,
) -> Vec<ContainerStatus> {
    match super::docker::connect(std::time::Duration::from_secs(2)).await {
        Ok(engine) => containers(&engine, project, probes)
            .await
            .unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}

impl ContainerStatus {
    /// Running, and healthy (or ready) when something checks it; a one-shot service that
    /// completed.
    pub fn is_well(&self) -> bool {
        if self.one_shot && self.state == "exited" && self.exit_code == Some(0) {
            return true;
        }
        self.state == "running"
            && self
                .health
                .as_deref()
                .is_none_or(|h| h == "healthy" || h == "ready")
    }

    /// Running with nothing to say it serves: no healthcheck, no probe.
    pub fn is_unchecked(&self) -> bool {
        self.state == "running" && !self.one_shot && self.readiness == "none"
    }
}
