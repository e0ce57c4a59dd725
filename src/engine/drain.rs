//! Stopping the project's containers when the instance is terminated: in reverse dependency order
//! (what depends on a service stops before it), each within its `stop_grace_period`, so requests
//! in flight finish and a database outlives the app that writes to it.

use std::time::Duration;

use anyhow::Result;

use super::api::{Container, Engine, RunState};
use super::spec::SERVICE;
use crate::compose::Project;

/// The engine's default grace (`docker stop`), for a service that sets none.
const DEFAULT_GRACE: Duration = Duration::from_secs(10);

/// One container to stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stop {
    pub id: String,
    pub name: String,
    pub grace: Duration,
}

/// The running containers of the project in the order to stop them: those of no service in the
/// project first (orphans), then the services in reverse start order. Without the project (its
/// compose file unreadable) every container gets the default grace, in name order.
pub fn stop_order(project: Option<&Project>, containers: &[Container]) -> Vec<Stop> {
    let running: Vec<&Container> = containers
        .iter()
        .filter(|c| {
            matches!(
                c.state,
                RunState::Running | RunState::Restarting | RunState::Paused
            )
        })
        .collect();
    let stop = |c: &Container, grace: Option<Duration>| Stop {
        id: c.id.clone(),
        name: c.name.clone(),
        grace: grace.unwrap_or(DEFAULT_GRACE),
    };
    let Some(project) = project else {
        let mut all: Vec<Stop> = running.iter().map(|c| stop(c, None)).collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        return all;
    };
    let order: Vec<&str> = project.start_order().into_iter().rev().collect();
    let rank = |c: &Container| {
        c.label(SERVICE)
            .and_then(|s| order.iter().position(|o| *o == s))
            .map_or(0, |i| i + 1)
    };
    let mut sorted = running;
    sorted.sort_by(|a, b| rank(a).cmp(&rank(b)).then(a.name.cmp(&b.name)));
    sorted
        .into_iter()
        .map(|c| {
            let grace = c
                .label(SERVICE)
                .and_then(|s| project.services.get(s))
                .and_then(|s| s.stop_grace_period);
            stop(c, grace)
        })
        .collect()
}

/// Stops the project's containers one after the other in [`stop_order`]; the names stopped. A
/// container that will not stop is logged and the next one stopped all the same.
pub async fn stop_all(
    engine: &impl Engine,
    project: Option<&Project>,
    name: &str,
) -> Result<Vec<String>> {
    let containers = engine.project_containers(name).await?;
    let mut stopped = Vec::new();
    for step in stop_order(project, &containers) {
        tracing::info!(
            container = step.name.as_str(),
            "stopping (grace {}s)",
            step.grace.as_secs()
        );
        match engine.stop(&step.id, step.grace).await {
            Ok(()) => stopped.push(step.name),
            Err(e) => tracing::warn!(container = step.name.as_str(), "could not stop it: {e:#}"),
        }
    }
    Ok(stopped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(name: &str, service: &str, state: RunState) -> Container {
        Container {
            id: format!("id-{name}"),
            name: name.into(),
            labels: [(SERVICE.to_string(), service.to_string())].into(),
            state,
            exit_code: None,
            health: None,
            last_check: None,
            started_at: None,
            image: String::new(),
            image_id: String::new(),
            ..Default::default()
        }
    }

    #[test]
    fn dependents_stop_first_each_within_its_grace() {
        let yaml = "services:\n  db:\n    image: db\n    stop_grace_period: 30s\n  app:\n    image: app\n    depends_on: [db]\n  proxy:\n    image: proxy\n    depends_on: [app]\n    stop_grace_period: 3s\n";
        let file = std::path::Path::new("/srv/orange/docker-compose.yml");
        let project = crate::compose::from_str(yaml, file, "orange", &|_| None).unwrap();
        let containers = [
            container("orange-db-1", "db", RunState::Running),
            container("orange-app-1", "app", RunState::Running),
            container("orange-old-1", "gone", RunState::Running),
            container("orange-proxy-1", "proxy", RunState::Running),
            container("orange-job-1", "app", RunState::Exited),
        ];
        let order: Vec<(String, u64)> = stop_order(Some(&project), &containers)
            .into_iter()
            .map(|s| (s.name, s.grace.as_secs()))
            .collect();
        let want = [
            ("orange-old-1", 10),
            ("orange-proxy-1", 3),
            ("orange-app-1", 10),
            ("orange-db-1", 30),
        ];
        let want: Vec<(String, u64)> = want.iter().map(|(n, g)| (n.to_string(), *g)).collect();
        assert_eq!(order, want);
        let blind: Vec<String> = stop_order(None, &containers)
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(
            blind,
            [
                "orange-app-1",
                "orange-db-1",
                "orange-old-1",
                "orange-proxy-1"
            ]
        );
    }
}
