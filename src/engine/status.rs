//! The project's containers as the engine reports them now: for `status`, the metrics and the
//! daemon's health watch.

use anyhow::Result;

/// One container of the project, as the engine reports it now.
#[derive(Debug, serde::Serialize)]
pub struct ContainerStatus {
    pub name: String,
    pub service: String,
    pub image: String,
    pub state: String,
    /// `None` when the image has no healthcheck.
    pub health: Option<String>,
}

pub async fn containers(project: &str) -> Result<Vec<ContainerStatus>> {
    use std::collections::HashMap;
    let docker = crate::engine::docker::connect(std::time::Duration::from_secs(2)).await?;
    let filters = HashMap::from([(
        "label".to_string(),
        vec![format!("{}={project}", crate::engine::spec::PROJECT)],
    )]);
    let options = bollard::query_parameters::ListContainersOptions {
        all: true,
        filters: Some(filters),
        ..Default::default()
    };
    let mut out = Vec::new();
    for c in docker.list_containers(Some(options)).await? {
        let id = c.id.clone().unwrap_or_default();
        let inspect = docker.inspect_container(&id, None).await?;
        let state = inspect.state.unwrap_or_default();
        out.push(ContainerStatus {
            name: inspect
                .name
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_string(),
            service: c
                .labels
                .as_ref()
                .and_then(|l| l.get(crate::engine::spec::SERVICE))
                .cloned()
                .unwrap_or_default(),
            image: c.image.unwrap_or_default(),
            state: state.status.map(|s| s.to_string()).unwrap_or_default(),
            health: state
                .health
                .and_then(|h| h.status)
                .map(|h| h.to_string())
                .filter(|h| !h.is_empty() && h != "none"),
        });
    }
    out.sort_by(|a, b| a.service.cmp(&b.service));
    Ok(out)
}

impl ContainerStatus {
    /// Running, and healthy when it has a healthcheck.
    pub fn is_well(&self) -> bool {
        self.state == "running" && self.health.as_deref().is_none_or(|h| h == "healthy")
    }
}
