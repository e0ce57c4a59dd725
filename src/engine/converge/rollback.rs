//! The rollback of a sync whose services did not get healthy: each service given a new container
//! is put back on the one it had, and waited for.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::ops::{run_ops, Waits};
use super::unix_now;
use crate::compose::Project;
use crate::engine::api::Engine;
use crate::engine::decide::{Action, ServicePlan};
use crate::engine::health::{self, Target};
use crate::engine::switch::{self, Mode, Op, Slots};

/// Puts back, for every service given a new container in this sync, the container it had before
/// (or none, for a service new in this sync), and waits (within `bound`) until those run healthy
/// again. The undo is decided from what the engine shows now, as after an interruption.
pub(super) async fn roll_back(
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
        let waits = Waits::of(plan, since, Instant::now() + bound);
        match run_ops(engine, &ops, &waits).await {
            Ok(()) => {
                if let Some(old) = &plan.existing {
                    restored.push(Target {
                        service: plan.service.clone(),
                        name: plan.container.clone(),
                        id: old.clone(),
                        completes: plan.one_shot,
                        probe: plan.ready.clone(),
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
