//! Checks across services, on the parsed project: references to undefined services, networks and
//! volumes, `depends_on` cycles, duplicate container names, and host ports published twice. Each
//! problem points at the key that causes it.

use std::collections::HashSet;

use indexmap::IndexMap;

use super::model::{MountKind, PortRange, Project, Protocol};
use super::parse::Paths;
use super::Problem;

#[derive(Debug, Default)]
pub(super) struct Checked {
    pub problems: Vec<Problem>,
    pub warnings: Vec<Problem>,
}

/// Checks `project`, dropping the optional (`required: false`) dependencies that are not defined,
/// as compose does.
pub(super) fn check(
    project: &mut Project,
    paths: &IndexMap<String, Paths>,
    disabled: &HashSet<String>,
) -> Checked {
    let mut out = Checked::default();
    dependencies(project, paths, disabled, &mut out);
    if out.problems.is_empty() {
        cycles(project, paths, &mut out);
    }
    references(project, paths, &mut out);
    container_names(project, paths, &mut out);
    host_ports(project, paths, &mut out);
    out
}

fn dependencies(
    project: &mut Project,
    paths: &IndexMap<String, Paths>,
    disabled: &HashSet<String>,
    out: &mut Checked,
) {
    let defined: HashSet<String> = project.services.keys().cloned().collect();
    for (name, service) in project.services.iter_mut() {
        let mut dropped = Vec::new();
        for (dependency, settings) in &service.depends_on {
            let path = &paths[name].depends_on[dependency];
            if defined.contains(dependency) {
                continue;
            }
            let why = if disabled.contains(dependency) {
                format!("service {name} depends on {dependency}, which its `profiles` leave out (set COMPOSE_PROFILES to enable it)")
            } else {
                format!("service {name} depends on {dependency}, which is not defined")
            };
            if settings.required {
                out.problems.push(Problem::new(path, why));
            } else {
                out.warnings.push(Problem::new(
                    path,
                    format!("{why}; ignored (`required: false`)"),
                ));
                dropped.push(dependency.clone());
            }
        }
        for dependency in dropped {
            service.depends_on.shift_remove(&dependency);
        }
    }
}

/// Reports each `depends_on` cycle once, at the dependency that closes it.
fn cycles(project: &Project, paths: &IndexMap<String, Paths>, out: &mut Checked) {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    fn visit<'a>(
        project: &'a Project,
        name: &'a str,
        marks: &mut IndexMap<&'a str, Mark>,
        stack: &mut Vec<&'a str>,
        paths: &IndexMap<String, Paths>,
        out: &mut Checked,
    ) {
        marks.insert(name, Mark::Active);
        stack.push(name);
        for dependency in project.services[name].depends_on.keys() {
            match marks.get(dependency.as_str()).copied().unwrap_or(Mark::New) {
                Mark::Done => {}
                Mark::Active => {
                    let start = stack.iter().position(|s| *s == dependency).unwrap_or(0);
                    let mut cycle: Vec<&str> = stack[start..].to_vec();
                    cycle.push(dependency);
                    let path = &paths[name].depends_on[dependency];
                    let message = format!("`depends_on` makes a cycle: {}", cycle.join(" -> "));
                    out.problems.push(Problem::new(path, message));
                }
                Mark::New => visit(project, dependency, marks, stack, paths, out),
            }
        }
        stack.pop();
        marks.insert(name, Mark::Done);
    }
    let mut marks: IndexMap<&str, Mark> = IndexMap::new();
    for name in project.services.keys() {
        if marks.get(name.as_str()).copied().unwrap_or(Mark::New) == Mark::New {
            visit(project, name, &mut marks, &mut Vec::new(), paths, out);
        }
    }
}

fn references(project: &Project, paths: &IndexMap<String, Paths>, out: &mut Checked) {
    for (name, service) in &project.services {
        for network in service.networks.keys() {
            if !project.networks.contains_key(network) {
                let path = paths[name]
                    .networks
                    .get(network)
                    .cloned()
                    .unwrap_or_else(|| paths[name].service.clone());
                let message = format!("service {name} uses network {network}, which the top-level `networks` does not define");
                out.problems.push(Problem::new(&path, message));
            }
        }
        for (i, mount) in service.volumes.iter().enumerate() {
            let Some(volume) = mount
                .source
                .as_ref()
                .filter(|_| mount.kind == MountKind::Volume)
            else {
                continue;
            };
            if !project.volumes.contains_key(volume) {
                let message = format!("service {name} uses volume {volume}, which the top-level `volumes` does not define");
                out.problems
                    .push(Problem::new(&paths[name].volumes[i], message));
            }
        }
        let mut targets = HashSet::new();
        for (i, secret) in service.secrets.iter().enumerate() {
            let path = &paths[name].secrets[i];
            if !project.secrets.contains_key(&secret.source) {
                let message = format!(
                    "service {name} uses secret {}, which the top-level `secrets` does not define",
                    secret.source
                );
                out.problems.push(Problem::new(path, message));
            }
            if !targets.insert(secret.target.as_str()) {
                let message = format!("service {name} mounts two secrets at {}", secret.target);
                out.problems.push(Problem::new(path, message));
            }
        }
    }
}

fn container_names(project: &Project, paths: &IndexMap<String, Paths>, out: &mut Checked) {
    let mut seen: IndexMap<&str, &str> = IndexMap::new();
    for (name, service) in &project.services {
        let Some(container) = service.container_name.as_deref() else {
            continue;
        };
        match seen.get(container) {
            Some(other) => {
                let path = paths[name]
                    .container_name
                    .as_deref()
                    .unwrap_or(&paths[name].service);
                let message = format!(
                    "container name {container} is also the container name of service {other}"
                );
                out.problems.push(Problem::new(path, message));
            }
            None => {
                seen.insert(container, name);
            }
        }
    }
}

/// Two bindings of the same host port and protocol on addresses that overlap (an unset host IP,
/// 0.0.0.0 or :: is every address) cannot both be made.
fn host_ports(project: &Project, paths: &IndexMap<String, Paths>, out: &mut Checked) {
    struct Binding<'a> {
        service: &'a str,
        path: &'a str,
        ip: Option<&'a str>,
        ports: PortRange,
        protocol: Protocol,
    }
    let everywhere = |ip: Option<&str>| matches!(ip, None | Some("0.0.0.0" | "::" | "[::]"));
    let mut seen: Vec<Binding> = Vec::new();
    for (name, service) in &project.services {
        for (i, port) in service.ports.iter().enumerate() {
            let Some(ports) = port.published else {
                continue;
            };
            let binding = Binding {
                service: name,
                path: &paths[name].ports[i],
                ip: port.host_ip.as_deref(),
                ports,
                protocol: port.protocol,
            };
            let clash = seen.iter().find(|other| {
                other.protocol == binding.protocol
                    && other.ports.overlaps(&binding.ports)
                    && (everywhere(binding.ip) || everywhere(other.ip) || binding.ip == other.ip)
            });
            match clash {
                Some(other) => {
                    let message = format!(
                        "host port {}/{} is also published by service {} ({})",
                        binding.ports,
                        binding.protocol.as_str(),
                        other.service,
                        other.path
                    );
                    out.problems.push(Problem::new(binding.path, message));
                }
                None => seen.push(binding),
            }
        }
    }
}
