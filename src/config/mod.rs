//! The agent's configuration: `agent.yaml`, then every `agent.d/*.yaml` merged over it in name
//! order, checked into typed [`Settings`].
//!
//! Each file is first read on its own into [`raw::RawConfig`], so an unknown key, a wrong type or an
//! impossible value is reported with that file's name, line and key. The files are then merged as
//! YAML (mappings key by key, lists and scalars replaced whole) and checked as a whole: what only
//! the merged config can show (no `project` anywhere) is reported with the list of files.

pub mod raw;
pub mod types;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_norway::Value;

use crate::error::input_error;
use raw::{ParamSource, RawConfig};

/// Defaults, in one place.
pub mod defaults {
    pub const CONFIG_PATH: &str = "/etc/kicky-agent/agent.yaml";
    pub const FRAGMENTS_DIR: &str = "agent.d";
    pub const ENV_FILE: &str = ".env";
    pub const ENV_MODE: u32 = 0o600;
    /// `workdir` when the config has none: `/srv/<project>`.
    pub const WORKDIR_PARENT: &str = "/srv";
}

/// The checked configuration the agent runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub project: String,
    pub workdir: PathBuf,
    pub aws: AwsSettings,
    /// `None` when the config has no `env:` section: no env file is written.
    pub env: Option<EnvSettings>,
    /// The files the settings were read from, in merge order.
    pub sources: Vec<PathBuf>,
}

#[derive(Debug, Clone, Default)]
pub struct AwsSettings {
    /// `None`: the SDK's chain (AWS_REGION, profile, instance metadata).
    pub region: Option<String>,
    /// `None`: the SDK's default (which honours AWS_ENDPOINT_URL).
    pub endpoint_url: Option<String>,
    pub s3_force_path_style: bool,
}

#[derive(Debug, Clone)]
pub struct EnvSettings {
    /// Absolute path of the env file.
    pub path: PathBuf,
    pub mode: u32,
    pub sources: Vec<ParamSource>,
}

/// Reads and checks the config at `path` and the fragments in `agent.d/` beside it.
pub fn load(path: &Path) -> Result<Settings> {
    let files = config_files(path)?;
    let mut merged = Value::Mapping(Default::default());
    for file in &files {
        merge(&mut merged, read_file(file)?);
    }
    let raw: RawConfig = serde_norway::from_value(merged)
        .map_err(|e| input_error(format!("{}: {e}", describe(&files))))?;
    validate(raw, files)
}

/// `path`, then `agent.d/*.yaml` beside it in name order.
fn config_files(path: &Path) -> Result<Vec<PathBuf>> {
    if !path.is_file() {
        return Err(input_error(format!(
            "config file {} does not exist or is not a file",
            path.display()
        )));
    }
    let mut files = vec![path.to_path_buf()];
    let dir = path
        .parent()
        .unwrap_or(Path::new("."))
        .join(defaults::FRAGMENTS_DIR);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(files),
        Err(e) => return Err(e).with_context(|| format!("failed to list {}", dir.display())),
    };
    let mut fragments = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("failed to list {}", dir.display()))?;
        let p = entry.path();
        if p.extension().is_some_and(|ext| ext == "yaml") && p.is_file() {
            fragments.push(p);
        }
    }
    fragments.sort();
    files.extend(fragments);
    Ok(files)
}

/// Reads one file, checking it alone against the schema so errors carry its name and line.
fn read_file(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("failed to read {}", path.display()))?;
    if text.trim().is_empty() {
        return Ok(Value::Mapping(Default::default()));
    }
    let bad = |e: crate::yaml::YamlError| input_error(e.to_string());
    crate::yaml::from_str::<RawConfig>(&text, path).map_err(bad)?;
    crate::yaml::from_str::<Value>(&text, path).map_err(bad)
}

/// Merges `over` into `base`: mappings key by key, anything else replaced.
fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Mapping(base), Value::Mapping(over)) => {
            for (key, value) in over {
                match base.get_mut(&key) {
                    Some(existing) => merge(existing, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, over) => *base = over,
    }
}

fn describe(files: &[PathBuf]) -> String {
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    names.join(" + ")
}

/// Checks what only the merged config shows and fills in defaults.
fn validate(raw: RawConfig, files: Vec<PathBuf>) -> Result<Settings> {
    let project = raw
        .project
        .ok_or_else(|| input_error(format!("{}: `project` is required", describe(&files))))?
        .as_str()
        .to_string();
    let workdir = match raw.workdir {
        Some(dir) => dir.into_path(),
        None => Path::new(defaults::WORKDIR_PARENT).join(&project),
    };
    let aws = raw.aws.unwrap_or_default();
    let aws = AwsSettings {
        region: aws.region.map(|r| r.into_string()),
        endpoint_url: aws.endpoint_url.map(|u| u.into_string()),
        s3_force_path_style: aws.s3_force_path_style.unwrap_or(false),
    };
    let env = match raw.env {
        None => None,
        Some(env) => {
            let sources = env.parameters.unwrap_or_default();
            if sources.is_empty() {
                return Err(input_error(format!(
                    "{}: `env.parameters` is empty: list the parameters to write to the env file, or drop `env:`",
                    describe(&files)
                )));
            }
            let file = env
                .file
                .map(|f| f.into_path())
                .unwrap_or_else(|| PathBuf::from(defaults::ENV_FILE));
            Some(EnvSettings {
                path: workdir.join(file),
                mode: env.mode.map(|m| m.0).unwrap_or(defaults::ENV_MODE),
                sources,
            })
        }
    };
    Ok(Settings {
        project,
        workdir,
        aws,
        env,
        sources: files,
    })
}

#[cfg(test)]
mod tests;
