//! The recovery of a switch an interrupted sync (the agent was killed) left half done: undone, or
//! finished when its new container already serves healthy.

use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use tokio::time::Instant;

use super::ops::{describe, run_ops, Waits};
use crate::engine::api::{Container, Engine};
use crate::engine::decide;
use crate::engine::switch::Op;

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
pub(super) async fn set_right(
    engine: &impl Engine,
    containers: &[Container],
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
