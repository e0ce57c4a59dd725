//! From the interpolated YAML tree to the typed model: every long and short form of the Compose
//! Specification the agent supports, normalized as compose normalizes it, and every other key
//! refused with its path.
//!
//! Problems are collected, not returned at the first one, so one run names every mistake. Error
//! messages quote a value only when the compose file spells it out: a value interpolated from a
//! variable may be a secret.
//!
//! This module holds what parsing shares ([`Ctx`], where things were written) and the document's
//! top level; each part of the file is read in its own module: `service` (one service's keys),
//! `values` (the scalar, list and mapping readers), `environment`, `ports`, `mounts`,
//! `networks`, `secrets`, `lifecycle` (restart, healthcheck, depends_on, pull_policy),
//! `deploy` and `resources` (the top-level networks and volumes).

mod deploy;
mod environment;
mod lifecycle;
mod mounts;
mod networks;
mod ports;
mod resources;
mod secrets;
mod service;
mod values;

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use indexmap::IndexMap;
use serde_norway::Value;

use super::model::*;
use super::Problem;

use resources::{network, volume};
use secrets::secret;
use service::service;
use values::kind;

#[cfg(test)]
pub(super) use ports::port_spec;
pub(super) use resources::resource_name;
pub use resources::{NETWORK_KEYS, VOLUME_KEYS};
pub use service::SERVICE_KEYS;

/// What parsing needs besides the tree.
pub(super) struct Ctx<'a> {
    pub project: &'a str,
    /// The compose file's directory: relative paths resolve here.
    pub dir: &'a Path,
    /// `~` in a bind source.
    pub home: Option<String>,
    /// The variables: the env file's, then the agent's environment.
    pub lookup: &'a dyn Fn(&str) -> Option<String>,
    /// Paths of values that came from variables.
    pub tainted: &'a HashMap<String, FromVariable>,
    /// Reads an `env_file` (a sync about to write one reads what it will hold): `None` when
    /// there is no regular file there.
    pub read: &'a super::ReadText<'a>,
    pub problems: Vec<Problem>,
    pub warnings: Vec<Problem>,
}

/// Where the parts of a service were written, to point cross-service errors at their line.
#[derive(Debug, Default)]
pub(super) struct Paths {
    pub service: String,
    pub container_name: Option<String>,
    /// One per [`Service::ports`] entry.
    pub ports: Vec<String>,
    /// One per [`Service::volumes`] entry.
    pub volumes: Vec<String>,
    pub networks: IndexMap<String, String>,
    pub depends_on: IndexMap<String, String>,
    /// One per [`Service::secrets`] entry.
    pub secrets: Vec<String>,
    /// The `env_file`s the service read: each host path, and where the file names it.
    pub env_files: Vec<(PathBuf, String)>,
}

/// The whole file, every service included (profiles are applied later).
#[derive(Debug, Default)]
pub(super) struct Parsed {
    pub services: IndexMap<String, (Service, Paths)>,
    pub networks: IndexMap<String, Network>,
    pub volumes: IndexMap<String, Volume>,
    pub secrets: IndexMap<String, SecretSource>,
}

/// `path` with `.` and `..` resolved lexically, as compose (Go's `filepath.Clean`) does.
pub(super) fn clean(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
                if out.as_os_str().is_empty() {
                    out.push("/");
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// A mount target without `.`, `..` or a trailing `/`: docker reads it so, and compose prints it so.
fn container_path(target: &str) -> String {
    clean(Path::new(target)).display().to_string()
}

/// Parses the whole (interpolated) document.
pub(super) fn document(root: &Value, ctx: &mut Ctx) -> Parsed {
    let mut parsed = Parsed::default();
    if !matches!(root, Value::Mapping(_)) {
        let found = kind(root);
        ctx.problem(
            "",
            format!("the compose file has no `services`: expected a mapping, found {found}"),
        );
        return parsed;
    }
    let Some(entries) = ctx.entries(root, "") else {
        return parsed;
    };
    let mut services = None;
    for (key, path, value) in entries {
        match key.as_str() {
            "services" => services = Some((path, value)),
            "networks" if !value.is_null() => {
                if let Some(networks) = ctx.entries(value, &path) {
                    for (name, path, value) in networks {
                        if let Some(network) = network(&name, value, &path, ctx) {
                            parsed.networks.insert(name, network);
                        }
                    }
                }
            }
            "volumes" if !value.is_null() => {
                if let Some(volumes) = ctx.entries(value, &path) {
                    for (name, path, value) in volumes {
                        if let Some(volume) = volume(&name, value, &path, ctx) {
                            parsed.volumes.insert(name, volume);
                        }
                    }
                }
            }
            "secrets" if !value.is_null() => {
                if let Some(secrets) = ctx.entries(value, &path) {
                    for (name, path, value) in secrets {
                        if let Some(secret) = secret(&name, value, &path, ctx) {
                            parsed.secrets.insert(name, secret);
                        }
                    }
                }
            }
            "networks" | "volumes" | "secrets" => {}
            "version" => ctx.warn(
                &path,
                "`version` is obsolete and ignored (as docker compose v2 does)",
            ),
            "name" => {
                if let Some(name) = ctx.string(value, &path) {
                    if name != ctx.project {
                        let message = format!("the project is named {} by the agent's config, not by the compose file's `name`", ctx.project);
                        ctx.warn(&path, message);
                    }
                }
            }
            key if key.starts_with("x-") => {}
            key => ctx.unsupported(&path, key, "the compose file's top level"),
        }
    }
    match services {
        None => ctx.problem("", "the compose file has no `services`"),
        Some((path, value)) => {
            if let Some(entries) = ctx.entries(value, &path) {
                if entries.is_empty() {
                    ctx.problem(&path, "the compose file defines no service");
                }
                for (name, path, value) in entries {
                    if let Some(service) = service(&name, value, &path, ctx) {
                        parsed.services.insert(name, service);
                    }
                }
            }
        }
    }
    parsed
}

/// Service, network and volume names: what compose accepts.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}
