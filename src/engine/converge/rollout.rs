//! The rollout: level by level of `depends_on`, each service waits for the conditions it asks of
//! its dependencies, then is started or switched to its new container.

use std::collections::HashMap;

use anyhow::{anyhow, Result};
use tokio::time::Instant;

use super::ops::{run_op, run_ops, Waits};
use super::prepare::create_one;
use crate::compose::{Condition, Project};
use crate::engine::api::Engine;
use crate::engine::decide::{self, Action, ServicePlan};
use crate::engine::health::{self, Target};
use crate::engine::switch::{self, Op};
use crate::error::all_of;

/// The container a service runs once switched: the one created for it, else the one it had.
fn final_id(plan: &ServicePlan, created: &HashMap<String, String>) -> String {
    created
        .get(&plan.service)
        .or(plan.existing.as_ref())
        .cloned()
        .unwrap_or_default()
}

pub(super) fn target(plan: &ServicePlan, created: &HashMap<String, String>) -> Target {
    Target {
        service: plan.service.clone(),
        name: plan.container.clone(),
        id: final_id(plan, created),
        completes: plan.one_shot,
        probe: plan.ready.clone(),
    }
}

pub(super) async fn start_in_order(
    engine: &impl Engine,
    project: &Project,
    services: &[ServicePlan],
    created: &mut HashMap<String, String>,
    since: i64,
    deadline: Instant,
) -> Result<()> {
    // Services that do not depend on each other start together, level by level.
    for level in decide::levels(project, services) {
        // Those that join another's network namespace are created now that it has its new
        // container (it is in an earlier level).
        for &i in &level {
            if services[i].deferred {
                let (service, id) = create_one(engine, &services[i]).await?;
                created.insert(service, id);
            }
        }
        let created = &*created;
        let results = futures::future::join_all(level.iter().map(|&i| {
            switch_service(
                engine,
                project,
                services,
                &services[i],
                created,
                since,
                deadline,
            )
        }))
        .await;
        let errors: Vec<anyhow::Error> = results.into_iter().filter_map(Result::err).collect();
        if let Some(err) = all_of(errors, level.len(), "services failed to start") {
            return Err(err);
        }
    }
    Ok(())
}

/// Waits for the conditions `plan`'s service asks of its dependencies, then switches it to its
/// new container.
async fn switch_service(
    engine: &impl Engine,
    project: &Project,
    services: &[ServicePlan],
    plan: &ServicePlan,
    created: &HashMap<String, String>,
    since: i64,
    deadline: Instant,
) -> Result<()> {
    let service = &project.services[&plan.service];
    let mut dependencies = Vec::new();
    for (dep, dependency) in &service.depends_on {
        let Some(dep_plan) = services.iter().find(|p| &p.service == dep) else {
            continue;
        };
        let mut target = target(dep_plan, created);
        match dependency.condition {
            Condition::ServiceStarted => continue,
            Condition::ServiceHealthy => target.completes = false,
            Condition::ServiceCompletedSuccessfully => target.completes = true,
        }
        dependencies.push(target);
    }
    health::wait_ready(engine, &dependencies, since, deadline).await?;
    let own = Waits::of(plan, since, deadline);
    match &plan.action {
        Action::Keep | Action::Done => Ok(()),
        Action::Start | Action::Create => {
            let start = Op::Start {
                id: final_id(plan, created),
                name: plan.container.clone(),
            };
            run_op(engine, &start, &own).await
        }
        Action::Recreate { reasons } => {
            crate::progress::step(format!(
                "recreating {} ({} changed)",
                plan.service,
                reasons.join(", ")
            ));
            let old = plan
                .existing
                .as_deref()
                .ok_or_else(|| anyhow!("no previous container"))?;
            let ops = switch::switch(
                &plan.container,
                old,
                &created[&plan.service],
                plan.side_by_side,
                plan.grace,
            );
            run_ops(engine, &ops, &own).await
        }
    }
}
