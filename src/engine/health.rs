//! Waiting, with a bound, until containers are running and healthy, learning of changes from the
//! engine's event stream rather than by polling: every second waited here is a second the instance
//! stays out of service.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bollard::models::{ContainerStateStatusEnum, HealthStatusEnum};
use bollard::query_parameters::EventsOptions;
use bollard::Docker;
use futures::StreamExt;
use tokio::time::Instant;

/// A container without a healthcheck counts as ready once it has been running this long.
pub const SETTLE: Duration = Duration::from_secs(1);

/// A container to wait for.
#[derive(Debug, Clone)]
pub struct Target {
    pub service: String,
    pub name: String,
    pub id: String,
}

enum Assessment {
    Ready,
    /// Not yet; look again by then at the latest (a settle time running out).
    Pending(Option<Instant>),
    Failed(String),
}

/// Waits until every target is ready, or fails naming the first that cannot be (exited, unhealthy,
/// or not ready by `deadline`). `since` (Unix seconds) must be taken before the targets were
/// started, so that no event between their start and this call is missed.
pub async fn wait_ready(
    docker: &Docker,
    targets: &[Target],
    since: i64,
    deadline: Instant,
) -> Result<()> {
    if targets.is_empty() {
        return Ok(());
    }
    let filters = HashMap::from([
        ("type".to_string(), vec!["container".to_string()]),
        (
            "container".to_string(),
            targets.iter().map(|t| t.id.clone()).collect(),
        ),
    ]);
    let options = EventsOptions {
        since: Some(since.to_string()),
        until: None,
        filters: Some(filters),
    };
    let mut events = docker.events(Some(options));
    let mut pending: BTreeMap<&str, (&Target, Option<Instant>)> = BTreeMap::new();
    for target in targets {
        match assess(docker, target).await? {
            Assessment::Ready => {}
            Assessment::Pending(recheck) => {
                pending.insert(target.id.as_str(), (target, recheck));
            }
            Assessment::Failed(why) => bail!(failure(target, &why)),
        }
    }
    while !pending.is_empty() {
        let recheck = pending
            .values()
            .filter_map(|(_, at)| *at)
            .min()
            .unwrap_or(deadline)
            .min(deadline);
        let id: Option<String> = tokio::select! {
            event = events.next() => match event {
                Some(Ok(event)) => event.actor.and_then(|a| a.id),
                Some(Err(err)) => return Err(err).context("the Docker event stream failed"),
                None => bail!("the Docker event stream ended"),
            },
            _ = tokio::time::sleep_until(recheck) => None,
        };
        let due: Vec<&Target> = pending
            .values()
            .filter(|(target, at)| {
                Some(&target.id) == id.as_ref() || at.is_some_and(|at| at <= Instant::now())
            })
            .map(|(target, _)| *target)
            .collect();
        for target in due {
            match assess(docker, target).await? {
                Assessment::Ready => {
                    tracing::info!(service = %target.service, container = %target.name, "ready");
                    pending.remove(target.id.as_str());
                }
                Assessment::Pending(at) => {
                    pending.insert(target.id.as_str(), (target, at));
                }
                Assessment::Failed(why) => bail!(failure(target, &why)),
            }
        }
        if Instant::now() >= deadline {
            let (target, _) = pending.values().next().expect("pending is not empty");
            let why = match last_health_output(docker, &target.id).await {
                Some(output) => format!("not healthy in time; last health check: {output}"),
                None => "not running and healthy in time".to_string(),
            };
            bail!(failure(target, &why));
        }
    }
    Ok(())
}

fn failure(target: &Target, why: &str) -> String {
    format!(
        "service {} (container {}): {why}; see `docker logs {}`",
        target.service, target.name, target.name
    )
}

async fn assess(docker: &Docker, target: &Target) -> Result<Assessment> {
    let inspect = docker
        .inspect_container(&target.id, None)
        .await
        .with_context(|| format!("failed to inspect container {}", target.name))?;
    let state = inspect.state.unwrap_or_default();
    match state.status {
        Some(ContainerStateStatusEnum::EXITED) | Some(ContainerStateStatusEnum::DEAD) => {
            return Ok(Assessment::Failed(format!(
                "exited with code {}",
                state.exit_code.unwrap_or(-1)
            )));
        }
        Some(ContainerStateStatusEnum::RUNNING) => {}
        _ => return Ok(Assessment::Pending(None)),
    }
    match state.health.as_ref().and_then(|h| h.status) {
        Some(HealthStatusEnum::HEALTHY) => Ok(Assessment::Ready),
        Some(HealthStatusEnum::UNHEALTHY) => {
            let last = state
                .health
                .and_then(|h| h.log)
                .and_then(|log| log.last().cloned());
            let detail = match last {
                Some(check) => format!(
                    "unhealthy: last health check exited {} with output: {}",
                    check.exit_code.unwrap_or(-1),
                    check.output.unwrap_or_default().trim()
                ),
                None => "unhealthy".to_string(),
            };
            Ok(Assessment::Failed(detail))
        }
        Some(HealthStatusEnum::STARTING) => Ok(Assessment::Pending(None)),
        // No healthcheck: ready once it has stayed up for the settle time.
        _ => {
            let started = state
                .started_at
                .as_deref()
                .and_then(|t| humantime::parse_rfc3339(t).ok())
                .unwrap_or_else(std::time::SystemTime::now);
            let settled_at = started
                .checked_add(SETTLE)
                .ok_or_else(|| anyhow!("bad start time"))?;
            match settled_at.duration_since(std::time::SystemTime::now()) {
                Ok(wait) => Ok(Assessment::Pending(Some(Instant::now() + wait))),
                Err(_) => Ok(Assessment::Ready),
            }
        }
    }
}

async fn last_health_output(docker: &Docker, id: &str) -> Option<String> {
    let inspect = docker.inspect_container(id, None).await.ok()?;
    let check = inspect.state?.health?.log?.last()?.clone();
    Some(format!(
        "exit {} output: {}",
        check.exit_code.unwrap_or(-1),
        check.output.unwrap_or_default().trim()
    ))
}
