//! The compose model: the agent reads the compose file itself (no docker-compose binary) and
//! understands it as docker compose v2 does, for the part of the Compose Specification that EC2
//! application stacks use, refusing clearly what it does not support.
//!
//! Loading goes text → YAML tree (anchors and `<<` merge keys resolved) → interpolation of every
//! string value (`tree`) → typed, normalized [`Project`] (`parse`) → cross-service checks
//! (`validate`). Every problem is reported with the file, line and key path, and never with a
//! value that came from a variable: those are SSM parameters, possibly secret.
//!
//! Variables come from the env file the agent writes (`env.file`), then the agent's own
//! environment. The env file wins, unlike docker compose where the shell wins: on an instance the
//! parameters in SSM are the source of truth, not whatever the unit's environment holds.

pub mod mirror;
mod model;
mod parse;
mod policy;
pub mod reference;
mod render;
mod tree;
pub mod units;
mod validate;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::Result;
use indexmap::IndexMap;
use serde_norway::Value;

use crate::config::Settings;
use crate::error::input_error;

pub use model::*;
pub use parse::{NETWORK_KEYS, SERVICE_KEYS, VOLUME_KEYS};
pub use render::{
    config_hash, config_hash_input, network_hash, to_json, to_value, to_yaml, volume_hash, MASK,
};

/// Something wrong (or worth a warning) at a key path of the compose file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    /// Such as `services.web.ports[1]`; empty for the document itself.
    pub path: String,
    pub message: String,
}

impl Problem {
    pub(crate) fn new(path: &str, message: impl Into<String>) -> Problem {
        Problem {
            path: path.to_string(),
            message: message.into(),
        }
    }
}

/// The env file whose variables interpolate the compose file: the agent's `env.file`, or, when
/// the config writes none, the `.env` beside the compose file (where docker compose looks).
pub fn env_file_of(settings: &Settings) -> Option<PathBuf> {
    match (&settings.env, &settings.compose) {
        (Some(env), _) => Some(env.path.clone()),
        (None, Some(compose)) => compose.file.parent().map(|dir| dir.join(".env")),
        (None, None) => None,
    }
}

/// Loads the compose file of `settings` as the agent runs it: interpolated with the env file's
/// variables, then the agent's environment, and judged against `compose.policy` (exit 2 when the
/// config has no `compose:` section).
pub fn load(settings: &Settings) -> Result<Project> {
    load_with(settings, env_variables(settings)?)
}

/// [`load`], with `variables` in place of the env file's (a plan reads the env file a sync would
/// write, in memory).
pub fn load_with(settings: &Settings, variables: IndexMap<String, String>) -> Result<Project> {
    let text = read_compose(&section(settings)?.file)?;
    load_text(settings, &text, variables, &read_managed)
}

/// [`load`] of `text`, what the compose file of `settings` holds or is about to hold, with
/// `variables`, reading the `env_file`s it names through `read`: a sync judges the release it
/// fetched before it writes any of it. Images are routed through their registry's mirror
/// ([`mirror`]).
pub fn load_text(
    settings: &Settings,
    text: &str,
    variables: IndexMap<String, String>,
    read: &ReadText,
) -> Result<Project> {
    let compose = section(settings)?;
    let rules = policy::Rules::of(settings);
    let reading = Reading {
        file: &compose.file,
        project: &settings.project,
        lookup: &then_environment(&variables),
        home: std::env::var("HOME").ok(),
        rules: Some(&rules),
        read,
    };
    let mut project = read_text(text, &reading)?;
    mirror::Mirrors::of(&settings.registries).apply(&mut project);
    for (name, probe) in &compose.ready {
        let service = project.services.get_mut(name).ok_or_else(|| {
            input_error(format!(
                "compose.ready.{name}: the compose file {} has no service {name}",
                compose.file.display()
            ))
        })?;
        service.ready = Some(probe.clone());
    }
    Ok(project)
}

/// The compose file of `settings` as written, not judged against `compose.policy`: what `render`
/// prints, and what the daemon reads for the pull policies and the order to stop in (`validate`
/// and every sync judge it, before it is written).
pub fn load_as_written(settings: &Settings) -> Result<Project> {
    load_file(
        &section(settings)?.file,
        &settings.project,
        env_file_of(settings).as_deref(),
    )
}

/// The readiness probes of the services, as the compose file on disk and the config say: what
/// `status`, the metrics and the daemon's health watch probe. None when there is no compose file
/// to read (yet), or it cannot be read (a sync says why).
pub fn probes(settings: &Settings) -> BTreeMap<String, crate::config::probe::Probe> {
    let mut probes: BTreeMap<_, _> = load_as_written(settings)
        .map(|project| {
            project
                .services
                .into_values()
                .filter_map(|s| Some((s.name, s.ready?)))
                .collect()
        })
        .unwrap_or_default();
    if let Some(compose) = &settings.compose {
        probes.extend(compose.ready.clone());
    }
    probes
}

fn section(settings: &Settings) -> Result<&crate::config::ComposeSettings> {
    settings.compose.as_ref().ok_or_else(|| {
        input_error("the config has no `compose:` section: there is no compose file to read")
    })
}

/// Loads `file` as project `project`, with the variables of `env_file` (when it exists; before the
/// first sync it may not), then the agent's environment.
pub fn load_file(file: &Path, project: &str, env_file: Option<&Path>) -> Result<Project> {
    let variables = match env_file {
        Some(path) => read_env_file(path)?,
        None => IndexMap::new(),
    };
    load_file_with(file, project, variables)
}

/// Loads `file` as project `project`, with `variables` (an env file's, already read), then the
/// agent's environment.
pub fn load_file_with(
    file: &Path,
    project: &str,
    variables: IndexMap<String, String>,
) -> Result<Project> {
    let text = read_compose(file)?;
    from_str(&text, file, project, &then_environment(&variables))
}

/// `variables`, then the agent's environment.
fn then_environment(variables: &IndexMap<String, String>) -> impl Fn(&str) -> Option<String> + '_ {
    |name| {
        variables
            .get(name)
            .cloned()
            .or_else(|| std::env::var(name).ok())
    }
}

/// Reads a text file a compose file names (an `env_file`): `None` when there is no regular file
/// there.
pub type ReadText<'a> = dyn Fn(&Path) -> Result<Option<String>> + 'a;

/// Reads a managed text file as every reader of the agent does: never through a link, never a
/// FIFO (which would hang the sync); either counts as no file.
pub fn read_managed(path: &Path) -> Result<Option<String>> {
    crate::atomic::read_text(path, crate::atomic::MAX_TEXT)
}

fn read_compose(file: &Path) -> Result<String> {
    read_managed(file)?.ok_or_else(|| {
        input_error(format!(
            "compose file {} does not exist or is not a regular file (a sync fetches it when `files` lists it)",
            file.display()
        ))
    })
}

/// The variables of the env file of `settings` (none when there is none yet), as the compose file
/// is interpolated with them.
pub fn env_variables(settings: &Settings) -> Result<IndexMap<String, String>> {
    match env_file_of(settings) {
        Some(path) => read_env_file(&path),
        None => Ok(IndexMap::new()),
    }
}

/// How many times the variables of each env file were read from the disk: what a test of a
/// sync counts (a sync reads the env file it writes from memory).
#[cfg(test)]
pub static ENV_FILE_READS: std::sync::Mutex<std::collections::BTreeMap<PathBuf, usize>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// The variables of the env file; none when it does not exist yet.
fn read_env_file(path: &Path) -> Result<IndexMap<String, String>> {
    #[cfg(test)]
    {
        let mut reads = ENV_FILE_READS.lock().unwrap();
        *reads.entry(path.to_path_buf()).or_default() += 1;
    }
    let Some(text) = read_managed(path)? else {
        tracing::warn!(
            "env file {} does not exist (yet), or is not a regular file: the compose file is interpolated from the agent's environment only",
            path.display()
        );
        return Ok(IndexMap::new());
    };
    variables_of(path, &text)
}

/// The variables of `text`, what the env file at `path` holds or is about to hold (learned by
/// the redactor).
pub fn variables_of(path: &Path, text: &str) -> Result<IndexMap<String, String>> {
    let process = |name: &str| std::env::var(name).ok();
    let vars = crate::envfile::parse(text, &process)
        .map_err(|e| input_error(format!("env file {}: {e}", path.display())))?;
    crate::redact::learn_all(vars.iter().map(|(_, value)| value.as_str()));
    Ok(vars.into_iter().collect())
}

/// Teaches the redactor the values of the env file on disk, when there is one: a command that
/// fetches nothing (`status`, before a sync) still masks them in what it prints (a container's
/// name or image from a variable, as the engine reports it).
pub fn learn_env_file(settings: &Settings) {
    if env_file_of(settings).is_some_and(|path| path.is_file()) {
        let _ = env_variables(settings);
    }
}

/// Loads compose-file `text`, read from `file` (relative paths resolve against its directory),
/// as project `project`, with `lookup` answering variables.
pub fn from_str(
    text: &str,
    file: &Path,
    project: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Project> {
    from_str_home(text, file, project, lookup, std::env::var("HOME").ok())
}

/// [`from_str`] with `home` for `~` (`None`: there is none, as under systemd).
fn from_str_home(
    text: &str,
    file: &Path,
    project: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    home: Option<String>,
) -> Result<Project> {
    let reading = Reading {
        file,
        project,
        lookup,
        home,
        rules: None,
        read: &read_managed,
    };
    read_text(text, &reading)
}

/// How a compose file's text is read: where from, as which project, with which variables.
struct Reading<'a> {
    /// Relative paths resolve against its directory.
    file: &'a Path,
    project: &'a str,
    lookup: &'a dyn Fn(&str) -> Option<String>,
    /// For `~` (`None`: there is none, as under systemd).
    home: Option<String>,
    /// `compose.policy` on this host; `None`: the file as written, not judged.
    rules: Option<&'a policy::Rules>,
    /// Reads an `env_file`.
    read: &'a ReadText<'a>,
}

fn read_text(text: &str, reading: &Reading) -> Result<Project> {
    let Reading {
        file,
        project,
        lookup,
        ..
    } = *reading;
    let at = |problems: Vec<Problem>| located(text, file, problems);
    // Compose sets COMPOSE_PROJECT_NAME to the project's name for the file's interpolation.
    let lookup = &|name: &str| match name {
        "COMPOSE_PROJECT_NAME" => Some(project.to_string()),
        _ => lookup(name),
    };
    let mut root: Value =
        crate::yaml::from_str(text, file).map_err(|e| input_error(e.to_string()))?;
    root.apply_merge()
        .map_err(|e| input_error(format!("{}: invalid merge key (`<<`): {e}", file.display())))?;

    let interpolated = tree::interpolate(&mut root, lookup);
    if !interpolated.problems.is_empty() {
        return Err(at(interpolated.problems));
    }
    for (name, path) in &interpolated.unset {
        let message = format!("variable {name} is not set: substituting an empty string");
        warn(text, file, &Problem::new(path, message));
    }

    let dir = file.parent().unwrap_or(Path::new("/"));
    let mut ctx = parse::Ctx {
        project,
        dir,
        home: reading.home.clone(),
        lookup,
        tainted: &interpolated.tainted,
        read: reading.read,
        problems: Vec::new(),
        warnings: Vec::new(),
    };
    let parsed = parse::document(&root, &mut ctx);
    for warning in &ctx.warnings {
        warn(text, file, warning);
    }
    if !ctx.problems.is_empty() {
        return Err(at(ctx.problems));
    }

    let active = active_profiles(lookup);
    let mut project = Project {
        name: project.to_string(),
        working_dir: dir.to_path_buf(),
        file: file.to_path_buf(),
        services: IndexMap::new(),
        networks: parsed.networks,
        volumes: parsed.volumes,
        secrets: parsed.secrets,
        from_variables: interpolated.tainted,
    };
    let mut paths = IndexMap::new();
    let mut disabled = HashSet::new();
    for (name, (service, service_paths)) in parsed.services {
        let enabled = service.profiles.is_empty()
            || service.profiles.iter().any(|p| active.contains(p))
            || active.contains("*");
        if enabled {
            project.services.insert(name.clone(), service);
            paths.insert(name, service_paths);
        } else {
            disabled.insert(name);
        }
    }
    let uses_default = project
        .services
        .values()
        .any(|s| s.networks.contains_key("default"));
    if uses_default && !project.networks.contains_key("default") {
        let network = Network {
            name: parse::resource_name(&project.name, "default", false, None),
            ..Network::default()
        };
        project.networks.insert("default".to_string(), network);
    }

    let mut checked = validate::check(&mut project, &paths, &disabled);
    for warning in &checked.warnings {
        warn(text, file, warning);
    }
    if let Some(rules) = reading.rules {
        let refused = policy::judge(&project, &paths, rules);
        checked.problems.extend(refused);
    }
    if !checked.problems.is_empty() {
        return Err(at(checked.problems));
    }
    Ok(project)
}

/// `COMPOSE_PROFILES`, comma-separated, as docker compose reads it (here from the env file too).
fn active_profiles(lookup: &dyn Fn(&str) -> Option<String>) -> HashSet<String> {
    lookup("COMPOSE_PROFILES")
        .unwrap_or_default()
        .split(',')
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// The line and column of `path` in `text`. A key that came from a `<<` merge is written
/// elsewhere: then the `<<` that brought it, or the nearest ancestor the text spells out.
fn position(text: &str, path: &str) -> (usize, usize) {
    let mut path = path;
    loop {
        if let Some(at) = crate::yaml::position_of(text, path) {
            return at;
        }
        if let Some((parent, _)) = path.rsplit_once('.') {
            if let Some(at) = crate::yaml::position_of(text, &format!("{parent}.<<")) {
                return at;
            }
        }
        match path.rfind(['.', '[']) {
            Some(cut) => path = &path[..cut],
            None if !path.is_empty() => path = "",
            None => return (1, 1),
        }
    }
}

fn describe(text: &str, file: &Path, problem: &Problem) -> String {
    let (line, column) = position(text, &problem.path);
    if problem.path.is_empty() {
        format!("{}:{line}:{column}: {}", file.display(), problem.message)
    } else {
        format!(
            "{}:{line}:{column}: {}: {}",
            file.display(),
            problem.path,
            problem.message
        )
    }
}

fn warn(text: &str, file: &Path, problem: &Problem) {
    tracing::warn!("{}", describe(text, file, problem));
}

/// One input error (exit 2) naming every problem, in the order of the file.
fn located(text: &str, file: &Path, problems: Vec<Problem>) -> anyhow::Error {
    let mut lines: Vec<((usize, usize), String)> = problems
        .iter()
        .map(|p| (position(text, &p.path), describe(text, file, p)))
        .collect();
    lines.sort();
    lines.dedup();
    let lines: Vec<String> = lines.into_iter().map(|(_, line)| line).collect();
    match lines.as_slice() {
        [one] => input_error(one.clone()),
        many => input_error(format!("{} problems:\n  {}", many.len(), many.join("\n  "))),
    }
}

#[cfg(test)]
mod tests;
