//! What a sync does to the engine, decided from the desired project and what the engine holds
//! ([`Observed`]), with no I/O: keep, start, create or recreate each service (saying which part
//! of its config changed), remove the containers of services that left the file, create the
//! missing networks and volumes, and first of all, undo or finish a switch an earlier sync left
//! half done.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, Result};
use serde::Serialize;

use super::api::Container;
use super::observe::Observed;
use super::spec::{self, AgentFiles, Desired};
use super::switch::{self, Mode, Op, Slots};
use crate::compose::Project;

/// What happens to one service's container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum Action {
    Keep,
    /// The container matches but is not running.
    Start,
    Create,
    Recreate {
        reasons: Vec<String>,
    },
    /// A one-shot service whose container matches and has completed: not run again.
    Done,
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::Keep => f.write_str("keep"),
            Action::Start => f.write_str("start"),
            Action::Create => f.write_str("create"),
            Action::Recreate { reasons } => write!(f, "recreate ({} changed)", reasons.join(", ")),
            Action::Done => f.write_str("keep (completed successfully; not run again)"),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ServicePlan {
    pub service: String,
    pub container: String,
    #[serde(flatten)]
    pub action: Action,
    #[serde(skip)]
    pub desired: Desired,
    /// The ID of the container the service has now, if any.
    #[serde(skip)]
    pub existing: Option<String>,
    /// Others wait for it to complete: ready once it has exited 0.
    #[serde(skip)]
    pub one_shot: bool,
    /// The new container can start beside the old one: no fixed host port or address, not
    /// the host's or another container's network namespace.
    #[serde(skip)]
    pub side_by_side: bool,
    #[serde(skip)]
    pub grace: Duration,
    /// Created only once the service whose network namespace it joins has its new container
    /// (the engine resolves `container:<name>` when it creates).
    #[serde(skip)]
    pub deferred: bool,
    /// Its readiness probe (`ready:`), when it has one.
    #[serde(skip)]
    pub ready: Option<crate::config::probe::Probe>,
}

/// What a sync does (or would do) to the engine's containers.
#[derive(Debug, Clone, Default)]
pub struct Decision {
    /// In start order: dependencies before their dependants.
    pub services: Vec<ServicePlan>,
    /// Containers of services no longer in the compose file: (ID, name).
    pub remove: Vec<(String, String)>,
}

/// Keys of the project's networks and volumes to create, in file order. An external one that
/// does not exist is an error. Those no service uses are left alone, as compose v2 does: not
/// created, and an unused external one need not exist.
pub fn missing_resources(
    project: &Project,
    observed: &Observed,
) -> Result<(Vec<String>, Vec<String>)> {
    let used_network = |key: &str| {
        project
            .services
            .values()
            .any(|s| s.networks.contains_key(key))
    };
    let used_volume = |key: &str| {
        project.services.values().any(|s| {
            s.volumes.iter().any(|m| {
                m.kind == crate::compose::MountKind::Volume && m.source.as_deref() == Some(key)
            })
        })
    };
    let mut problems = Vec::new();
    let mut networks = Vec::new();
    for (key, network) in &project.networks {
        if observed.networks.contains(&network.name) || !used_network(key) {
            continue;
        }
        if network.external {
            problems.push(format!("external network {} does not exist", network.name));
        } else {
            networks.push(key.clone());
        }
    }
    let mut volumes = Vec::new();
    for (key, volume) in &project.volumes {
        if observed.volumes.contains(&volume.name) || !used_volume(key) {
            continue;
        }
        if volume.external {
            problems.push(format!("external volume {} does not exist", volume.name));
        } else {
            volumes.push(key.clone());
        }
    }
    match problems.as_slice() {
        [] => Ok((networks, volumes)),
        _ => Err(anyhow!("{}", problems.join("; "))),
    }
}

/// Each service's action, from its desired container (whose image resolved to `image_ids`) and
/// the one the engine has; and the orphans.
pub fn decide(
    project: &Project,
    observed: &Observed,
    image_ids: &BTreeMap<String, String>,
    files: &AgentFiles,
) -> Result<Decision> {
    let mut problems = Vec::new();
    let mut services = Vec::new();
    for name in project.start_order() {
        let service = &project.services[name];
        let image_id = image_ids
            .get(&service.image)
            .map(String::as_str)
            .unwrap_or_default();
        let desired = spec::desired(project, service, image_id, files);
        let one_shot = project.is_one_shot(name);
        let current = observed
            .containers
            .iter()
            .find(|c| c.label(spec::SERVICE) == Some(name) && c.name == desired.name);
        if current.is_none() {
            if let Some(owner) = observed.foreign.get(&desired.name) {
                problems.push(format!(
                    "the container name {} is taken by a container of {}; remove it (`docker rm -f {}`) or set another container_name",
                    desired.name,
                    owner.as_ref().map(|p| format!("project {p}")).unwrap_or_else(|| "no compose project".into()),
                    desired.name,
                ));
            }
        }
        let action = action_of(current, &desired, one_shot);
        services.push(ServicePlan {
            service: name.to_string(),
            container: desired.name.clone(),
            action,
            existing: current.map(|c| c.id.clone()),
            one_shot,
            side_by_side: side_by_side(service),
            grace: service.stop_grace_period.unwrap_or(Duration::from_secs(10)),
            deferred: false,
            ready: service.ready.clone(),
            desired,
        });
    }
    follow_shared_namespaces(project, &mut services);
    if !problems.is_empty() {
        return Err(anyhow!("{}", problems.join("; ")).context(format!(
            "cannot create the containers of project {}",
            project.name
        )));
    }
    let remove = observed
        .containers
        .iter()
        .filter(|c| {
            let ours = services.iter().any(|p| {
                c.label(spec::SERVICE) == Some(p.service.as_str()) && c.name == p.container
            });
            let leftover =
                c.name.ends_with(switch::NEW_SUFFIX) || c.name.ends_with(switch::OLD_SUFFIX);
            !ours && !leftover
        })
        .map(|c| (c.id.clone(), c.name.clone()))
        .collect();
    Ok(Decision { services, remove })
}

/// Whether a new container can start beside the old one: not with a fixed host port, a fixed
/// address on a network, or the host's (or another container's) network namespace, which the
/// old one holds until it goes.
fn side_by_side(service: &crate::compose::Service) -> bool {
    service.ports.iter().all(|p| p.published.is_none())
        && service
            .networks
            .values()
            .all(|n| n.ipv4_address.is_none() && n.ipv6_address.is_none())
        && service
            .network_mode
            .as_deref()
            .is_none_or(|m| m == "none" || m == "bridge")
}

/// A container in another service's network namespace (`network_mode: service:NAME`) joined that
/// service's container: when it gets a new one, this one must follow. `services` is in start
/// order, so a chain follows in one pass.
fn follow_shared_namespaces(project: &Project, services: &mut [ServicePlan]) {
    for i in 0..services.len() {
        let mode = project.services[&services[i].service]
            .network_mode
            .as_deref();
        let Some(other) = mode.and_then(|m| m.strip_prefix("service:")) else {
            continue;
        };
        let renewed = services.iter().any(|p| {
            p.service == other && matches!(p.action, Action::Create | Action::Recreate { .. })
        });
        if renewed && matches!(services[i].action, Action::Keep | Action::Start) {
            services[i].action = Action::Recreate {
                reasons: vec![format!("network_mode: service {other}'s container")],
            };
        }
        services[i].deferred = renewed;
    }
}

/// The agent's hash of a container: its own label, or compose's for a container an agent made
/// before it had its own (so an upgrade of the agent recreates nothing).
fn agent_hash(c: &Container) -> Option<&str> {
    c.label(spec::HASH).or_else(|| c.label(spec::CONFIG_HASH))
}

/// What to do with a service's `current` container, given what is `desired` of it.
fn action_of(current: Option<&Container>, desired: &Desired, one_shot: bool) -> Action {
    match current {
        None => Action::Create,
        Some(c) if agent_hash(c) == Some(desired.hash.as_str()) => {
            if one_shot && c.completed() {
                Action::Done
            } else if c.is_running() {
                Action::Keep
            } else {
                Action::Start
            }
        }
        Some(c) => Action::Recreate {
            reasons: spec::changed_sections(c.label(spec::SECTIONS), c.label(spec::FILES), desired),
        },
    }
}

/// What an interrupted sync left among the project's `containers`, to set right before anything
/// else happens: per service with a staged or aside container, the operations that undo its
/// switch, or finish it when the new container already took the name and is ready. Decided from
/// the containers' names and labels alone, so it runs before the compose file is even read.
pub fn recovery(containers: &[Container], now: SystemTime) -> Vec<(String, Vec<Op>)> {
    let one_shots = spec::one_shots(containers);
    let mut plans = Vec::new();
    let mut seen = BTreeSet::new();
    for c in containers {
        let Some(base) = c
            .name
            .strip_suffix(switch::NEW_SUFFIX)
            .or_else(|| c.name.strip_suffix(switch::OLD_SUFFIX))
        else {
            continue;
        };
        if !seen.insert(base) {
            continue;
        }
        let service = c.label(spec::SERVICE).unwrap_or(base).to_string();
        let one_shot = one_shots.contains(service.as_str());
        let ops = switch::recover(
            base,
            Slots::of(base, containers),
            one_shot,
            Mode::Recover,
            now,
        );
        plans.push((service, ops));
    }
    plans.sort_by(|a, b| a.0.cmp(&b.0));
    plans
}

/// The services by dependency depth (indexes into `services`): those depending on nothing
/// first, then those whose dependencies are all in earlier levels. Each level keeps the order.
pub fn levels(project: &Project, services: &[ServicePlan]) -> Vec<Vec<usize>> {
    let mut depth: HashMap<&str, usize> = HashMap::new();
    let mut levels: Vec<Vec<usize>> = Vec::new();
    // `services` is in start order: dependencies come before their dependants.
    for (i, plan) in services.iter().enumerate() {
        let service = &project.services[&plan.service];
        let level = service
            .depends_on
            .keys()
            .filter_map(|dep| depth.get(dep.as_str()))
            .map(|d| d + 1)
            .max()
            .unwrap_or(0);
        depth.insert(plan.service.as_str(), level);
        if levels.len() <= level {
            levels.resize_with(level + 1, Vec::new);
        }
        levels[level].push(i);
    }
    levels
}

#[cfg(test)]
mod tests;
