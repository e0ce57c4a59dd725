//! Waiting, with a bound, until containers are running and healthy (or, for a one-shot service,
//! have exited 0), learning of changes from the engine's event stream rather than by polling:
//! every second waited here is a second the instance stays out of service.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, bail, Context, Result};
use futures::StreamExt;
use tokio::time::Instant;

use super::api::{Container, ContainerOutput, Engine, Health, RunState};
use super::ready::{self, Probe};

/// A container without a healthcheck counts as ready once it has been running this long.
pub const SETTLE: Duration = Duration::from_secs(1);

/// A container to wait for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub service: String,
    pub name: String,
    pub id: String,
    /// A one-shot service (others wait for it to complete): ready once it has exited 0.
    pub completes: bool,
    /// Ready only once this probe passes too (`ready:`); without it or a healthcheck, running
    /// for [`SETTLE`] is all the agent can know.
    pub probe: Option<Probe>,
}

enum Assessment {
    Ready,
    /// Running for [`SETTLE`], with neither a healthcheck nor a probe: as ready as the agent can
    /// tell, which is not healthy.
    Unchecked,
    /// Not yet; look again by then at the latest (a settle time running out).
    Pending(Option<Instant>),
    /// Running, but its readiness probe has not passed: look again then; what the probe said.
    Probing(Instant, String),
    /// Why, and what the container's health check last said (if anything).
    Failed(String, Option<String>),
}

/// Waits until every target is ready, or fails naming the first that cannot be (exited, unhealthy,
/// or not ready by `deadline`). `since` (Unix seconds) must be taken before the targets were
/// started, so that no event between their start and this call is missed.
pub async fn wait_ready(
    engine: &impl Engine,
    targets: &[Target],
    since: i64,
    deadline: Instant,
) -> Result<()> {
    if targets.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> = targets.iter().map(|t| t.id.clone()).collect();
    let mut events = engine.container_events(&ids, since);
    let mut pending: BTreeMap<&str, (&Target, Option<Instant>)> = BTreeMap::new();
    // What each probe said last: the failure at the deadline says it.
    let mut said: BTreeMap<&str, String> = BTreeMap::new();
    // All at once: a sync that changed nothing still looks at every container, and twenty
    // inspects one after another cost the no-op most of its time.
    let first = futures::future::join_all(targets.iter().map(|t| assess(engine, t))).await;
    for (target, assessment) in targets.iter().zip(first) {
        match assessment? {
            Assessment::Ready => {}
            Assessment::Unchecked => unchecked(target),
            Assessment::Pending(recheck) => {
                pending.insert(target.id.as_str(), (target, recheck));
            }
            Assessment::Probing(at, why) => {
                pending.insert(target.id.as_str(), (target, Some(at)));
                said.insert(target.id.as_str(), why);
            }
            Assessment::Failed(why, output) => return Err(failure(target, &why, output)),
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
                Some(Ok(id)) => Some(id),
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
            let assessment = assess(engine, target).await?;
            if let Assessment::Unchecked = assessment {
                unchecked(target);
            }
            match assessment {
                Assessment::Ready | Assessment::Unchecked => {
                    crate::progress::step(format!(
                        "{} is ready (container {})",
                        target.service, target.name
                    ));
                    pending.remove(target.id.as_str());
                }
                Assessment::Pending(at) => {
                    pending.insert(target.id.as_str(), (target, at));
                }
                Assessment::Probing(at, why) => {
                    pending.insert(target.id.as_str(), (target, Some(at)));
                    said.insert(target.id.as_str(), why);
                }
                Assessment::Failed(why, output) => return Err(failure(target, &why, output)),
            }
        }
        if Instant::now() >= deadline {
            let (target, _) = pending.values().next().expect("pending is not empty");
            let last = engine
                .container(&target.id)
                .await
                .ok()
                .flatten()
                .and_then(|c| c.last_check);
            let probe = target.probe.as_ref().map(|p| p.describe());
            let (why, output) = match (target.completes, last) {
                (true, _) => ("did not complete in time".to_string(), None),
                (false, _) if said.contains_key(target.id.as_str()) => (
                    format!(
                        "not ready in time; its readiness probe ({}) last said: {}",
                        probe.unwrap_or_default(),
                        said[target.id.as_str()]
                    ),
                    None,
                ),
                (false, Some((code, output))) => (
                    format!("not healthy in time; the last health check exited {code}"),
                    Some(output),
                ),
                (false, None) => ("not running and healthy in time".to_string(), None),
            };
            return Err(failure(target, &why, output));
        }
    }
    Ok(())
}

/// The warning for a service the agent can only see running.
fn unchecked(target: &Target) {
    tracing::warn!(
        service = %target.service,
        "service {} (container {}) is running, no readiness check: it has no healthcheck and no `ready:` probe, so the agent cannot tell when it serves; add `x-kicky-agent: {{ready: ...}}` to the service (or `compose.ready.{}` to the agent's config)",
        target.service,
        target.name,
        target.service,
    );
}

fn failure(target: &Target, why: &str, output: Option<String>) -> anyhow::Error {
    let message = format!(
        "service {} (container {}): {why}; see `docker logs {}`",
        target.service, target.name, target.name
    );
    match output.filter(|o| !o.is_empty()) {
        Some(output) => anyhow::Error::new(ContainerOutput(output)).context(message),
        None => anyhow!(message),
    }
}

async fn assess(engine: &impl Engine, target: &Target) -> Result<Assessment> {
    let c = engine
        .container(&target.id)
        .await
        .with_context(|| format!("failed to inspect container {}", target.name))?
        .ok_or_else(|| anyhow!("container {} is gone", target.name))?;
    let probe = match &target.probe {
        Some(probe) if !target.completes => probe,
        _ => return Ok(judge(&c, target.completes, SystemTime::now())),
    };
    // The container's own healthcheck (if any) first, then the probe; no settle time: the probe
    // is what says the application listens.
    match judge(&c, false, SystemTime::now()) {
        Assessment::Ready | Assessment::Unchecked | Assessment::Pending(Some(_)) => {}
        other => return Ok(other),
    }
    Ok(match ready::attempt(engine, &c, probe).await {
        Ok(()) => Assessment::Ready,
        Err(why) => Assessment::Probing(Instant::now() + probe.interval, why),
    })
}

/// What one look at a container says, at `now`.
fn judge(c: &Container, completes: bool, now: SystemTime) -> Assessment {
    let code = c.exit_code.unwrap_or(-1);
    match c.state {
        RunState::Exited | RunState::Dead if completes && code == 0 => return Assessment::Ready,
        RunState::Exited | RunState::Dead if completes => {
            return Assessment::Failed(format!("did not complete successfully (exit {code})"), None)
        }
        RunState::Exited | RunState::Dead => {
            return Assessment::Failed(format!("exited with code {code}"), None)
        }
        RunState::Running => {}
        _ => return Assessment::Pending(None),
    }
    if completes {
        return Assessment::Pending(None);
    }
    match c.health {
        Some(Health::Healthy) => Assessment::Ready,
        Some(Health::Unhealthy) => match &c.last_check {
            Some((code, output)) => Assessment::Failed(
                format!("unhealthy: the last health check exited {code}"),
                Some(output.clone()),
            ),
            None => Assessment::Failed("unhealthy".to_string(), None),
        },
        Some(Health::Starting) => Assessment::Pending(None),
        // No healthcheck: ready once it has stayed up for the settle time.
        None => {
            let settled_at = c.started_at.unwrap_or(now) + SETTLE;
            match settled_at.duration_since(now) {
                Ok(wait) if !wait.is_zero() => Assessment::Pending(Some(Instant::now() + wait)),
                _ => Assessment::Unchecked,
            }
        }
    }
}
