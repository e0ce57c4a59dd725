//! The project's containers as the engine reports them now: for `status`, the metrics and the
//! daemon's health watch.

use anyhow::{Context, Result};

use super::api::{Engine, Health};
use super::spec;
use super::switch::{NEW_SUFFIX, OLD_SUFFIX};

/// One container of the project, as the engine reports it now.
#[derive(Debug, serde::Serialize)]
pub struct ContainerStatus {
    pub name: String,
    pub service: String,
    pub image: String,
    pub state: String,
    /// `None` when the image has no healthcheck.
    pub health: Option<String>,
    /// Others wait for it to complete (`service_completed_successfully`): exited 0 is its
    /// success, not a failure.
    pub one_shot: bool,
    pub exit_code: Option<i64>,
}

/// The project's containers (the services' own; not those a sync keeps aside while it switches).
pub async fn containers(engine: &impl Engine, project: &str) -> Result<Vec<ContainerStatus>> {
    let all = engine
        .project_containers(project)
        .await
        .context("failed to list the project's containers")?;
    let one_shots = spec::one_shots(&all);
    let mut out: Vec<ContainerStatus> = all
        .iter()
        .filter(|c| !c.name.ends_with(NEW_SUFFIX) && !c.name.ends_with(OLD_SUFFIX))
        .map(|c| {
            let service = c.label(spec::SERVICE).unwrap_or_default().to_string();
            ContainerStatus {
                name: c.name.clone(),
                one_shot: one_shots.contains(service.as_str()),
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
    out.sort_by(|a, b| a.service.cmp(&b.service));
    Ok(out)
}

/// The project's containers, from a connection of its own, or none when the engine does not answer
/// within 2 s (for the metrics, which must not hold anything up).
pub async fn containers_now(project: &str) -> Vec<ContainerStatus> {
    match super::docker::connect(std::time::Duration::from_secs(2)).await {
        Ok(engine) => containers(&engine, project).await.unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}

impl ContainerStatus {
    /// Running, and healthy when it has a healthcheck; a one-shot service that completed.
    pub fn is_well(&self) -> bool {
        if self.one_shot && self.state == "exited" && self.exit_code == Some(0) {
            return true;
        }
        self.state == "running" && self.health.as_deref().is_none_or(|h| h == "healthy")
    }
}
