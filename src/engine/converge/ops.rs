//! Running a switch's operations ([`Op`]) against the engine, each failure naming its container,
//! and describing them for a person.

use anyhow::{Context, Result};
use tokio::time::Instant;

use crate::config::probe::Probe;
use crate::engine::api::Engine;
use crate::engine::decide::ServicePlan;
use crate::engine::health::{self, Target};
use crate::engine::switch::Op;

/// What a `WaitReady` of one service's operations waits for, and until when.
pub(super) struct Waits<'a> {
    pub(super) service: &'a str,
    pub(super) one_shot: bool,
    probe: Option<&'a Probe>,
    since: i64,
    deadline: Instant,
}

impl<'a> Waits<'a> {
    pub(super) fn new(
        service: &'a str,
        one_shot: bool,
        since: i64,
        deadline: Instant,
    ) -> Waits<'a> {
        Waits {
            service,
            one_shot,
            probe: None,
            since,
            deadline,
        }
    }

    /// The waits of `plan`'s service, its probe included.
    pub(super) fn of(plan: &'a ServicePlan, since: i64, deadline: Instant) -> Waits<'a> {
        Waits {
            probe: plan.ready.as_ref(),
            ..Waits::new(&plan.service, plan.one_shot, since, deadline)
        }
    }
}

/// Runs `ops` in order, stopping at the first that fails.
pub(super) async fn run_ops(engine: &impl Engine, ops: &[Op], waits: &Waits<'_>) -> Result<()> {
    for op in ops {
        run_op(engine, op, waits).await?;
    }
    Ok(())
}

pub(super) async fn run_op(engine: &impl Engine, op: &Op, waits: &Waits<'_>) -> Result<()> {
    match op {
        Op::Start { id, name } => crate::timeline::timed("start", name.as_str(), engine.start(id))
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
                probe: waits.probe.cloned(),
            };
            health::wait_ready(engine, &[target], waits.since, waits.deadline).await
        }
    }
}

pub(super) fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

pub(super) fn describe(ops: &[Op]) -> String {
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
