//! Resolves the configured sources (parameters and secrets) into the env file's variables.
//!
//! Everything is fetched first, in as few calls as the APIs allow (GetParameters takes 10 names;
//! each path is one paginated GetParametersByPath; BatchGetSecretValue takes 20 secrets at their
//! current version; a secret pinned to another stage is one GetSecretValue), all concurrently;
//! then the sources are applied in config order, a later variable replacing an earlier one of the
//! same name.

use std::collections::BTreeMap;

use anyhow::{anyhow, Result};
use futures::future::try_join_all;
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use crate::aws::parameters::get_all;
use crate::aws::secrets::{SecretValue, BATCH_MAX};
use crate::aws::ssm::{Parameter, ParameterStore};
use crate::config::types::ParamPath;
use crate::config::{ParamSource, SecretFormat, Source};
use crate::envfile;
use crate::error::input_error;
pub use crate::inputs::secret_key;
use crate::inputs::{Inputs, Secret as SecretInput};
use crate::redact::Secret;
use crate::release::Manifest;
use crate::timeline::{timed, timed_if};

/// The version of a parameter (a number) or of a secret (its version id), as remembered in the
/// state file and compared by the daemon's watch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Version {
    Number(i64),
    Id(String),
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Version::Number(n) => write!(f, "{n}"),
            Version::Id(id) => f.write_str(id),
        }
    }
}

/// A remembered version's key in words: `parameter /a/b`, `secret prod/db`.
pub fn describe_key(key: &str) -> String {
    match key.strip_prefix("secret:") {
        Some(secret) => format!("secret {secret}"),
        None => format!("parameter {key}"),
    }
}

/// The variables of the env file, in order, those only the compose file's `secrets:` may use
/// (sources with `env_file: false`), and the version of every parameter and secret read.
#[derive(Debug, Default)]
pub struct Resolved {
    pub vars: Vec<(String, Secret)>,
    pub secret_only: Vec<(String, Secret)>,
    pub versions: BTreeMap<String, Version>,
}

/// Resolves `sources`: at their latest versions, or with `pins` at exactly the versions a release
/// names (a parameter by `name:version`, a path as the names and versions it held, a secret by
/// its version id), however they moved since.
pub async fn resolve(
    store: &impl ParameterStore,
    sources: &[Source],
    pins: Option<&Manifest>,
) -> Result<Resolved> {
    let inputs = Inputs::of_sources(sources);
    let mut names: Vec<String> = Vec::new();
    let mut pinned_paths: Vec<Vec<String>> = Vec::new();
    for parameter in &inputs.parameters {
        names.push(match pins {
            Some(m) => selector(m, parameter.name)?,
            None => parameter.name.to_string(),
        });
    }
    if let Some(m) = pins {
        for path in &inputs.paths {
            let under = pinned_under(m, path.path, path.recursive)?;
            for name in &under {
                names.push(selector(m, name)?);
            }
            pinned_paths.push(under);
        }
    }
    // Pinned, a path is read as the names it held (with the names above); else by path.
    let paths = try_join_all(inputs.paths.iter().filter(|_| pins.is_none()).map(|p| {
        let path = p.path.as_str();
        timed("parameters", path, store.get_path(path, p.recursive))
    }));
    let (named, secret_count) = (names.len(), inputs.secrets.len());
    let by_name = format!("{named} by name");
    let by_name = timed_if(named > 0, "parameters", by_name, get_all(store, names));
    let secrets_what = format!("{secret_count} secrets");
    let secrets = fetch_secrets(store, &inputs.secrets, pins);
    let secrets = timed_if(secret_count > 0, "secrets", secrets_what, secrets);
    let (by_name, mut path_results, secrets) = futures::try_join!(by_name, paths, secrets)?;
    if pins.is_some() {
        path_results = pinned_paths
            .iter()
            .map(|under| {
                under
                    .iter()
                    .filter_map(|n| by_name.get(n).cloned())
                    .collect()
            })
            .collect();
    }

    let mut resolved = Resolved::default();
    let mut vars: IndexMap<String, Secret> = IndexMap::new();
    let mut secret_only: IndexMap<String, Secret> = IndexMap::new();
    let mut path_results = path_results.drain(..);
    for source in sources {
        let mut found: Vec<(String, Secret)> = Vec::new();
        match &source.from {
            ParamSource::Single { name, key } => {
                let p = take(&by_name, name.as_str())?;
                resolved
                    .versions
                    .insert(p.name.clone(), Version::Number(p.version));
                found.push((key.as_str().to_string(), p.value.clone()));
            }
            ParamSource::Document { name } => {
                let p = take(&by_name, name.as_str())?;
                resolved
                    .versions
                    .insert(p.name.clone(), Version::Number(p.version));
                let lookup = |k: &str| vars.get(k).map(|v| v.expose().to_string());
                let parsed = envfile::parse(p.value.expose(), &lookup).map_err(|e| {
                    input_error(format!(
                        "parameter {} is not a valid dotenv document: {e}",
                        p.name
                    ))
                })?;
                for (key, value) in parsed {
                    if !envfile::is_valid_key(&key) {
                        return Err(input_error(format!(
                            "parameter {}: {key:?} is not a valid variable name ({})",
                            p.name,
                            envfile::KEY_RULE
                        )));
                    }
                    found.push((key, Secret::fetched(value)));
                }
            }
            ParamSource::Path { path, .. } => {
                let mut params = path_results.next().unwrap_or_default();
                if params.is_empty() {
                    return Err(anyhow!("no parameters found under path {}", path.as_str()));
                }
                params.sort_by(|a, b| a.name.cmp(&b.name));
                for p in params {
                    let key = path.relative(&p.name).unwrap_or(&p.name);
                    if !envfile::is_valid_key(key) {
                        return Err(input_error(format!(
                            "parameter {}: {key:?} (its name below {}) is not a valid variable name ({})",
                            p.name,
                            path.as_str(),
                            envfile::KEY_RULE
                        )));
                    }
                    found.push((key.to_string(), p.value.clone()));
                    resolved
                        .versions
                        .insert(p.name.clone(), Version::Number(p.version));
                }
            }
            ParamSource::Secret { id, stage, format } => {
                let key = secret_key(id, stage.as_ref());
                let secret = secrets.get(&key).ok_or_else(|| {
                    anyhow!("Secrets Manager did not return secret {}", id.as_str())
                })?;
                resolved
                    .versions
                    .insert(key, Version::Id(secret.version_id.clone()));
                found = secret_variables(secret, format, &vars)?;
            }
        }
        let into = if source.env_file {
            &mut vars
        } else {
            &mut secret_only
        };
        into.extend(found);
    }
    resolved.vars = vars.into_iter().collect();
    resolved.secret_only = secret_only.into_iter().collect();
    Ok(resolved)
}

/// `name:version`, as GetParameters reads a parameter at the version `release` pinned.
fn selector(release: &Manifest, name: &str) -> Result<String> {
    match release.parameters.get(name) {
        Some(version) => Ok(format!("{name}:{version}")),
        None => Err(release.not_pinned(format!("parameter {name}"))),
    }
}

/// The parameters `release` pinned under `path`, each as the `name:version` GetParameters reads
/// it at.
pub fn pinned_selectors(
    release: &Manifest,
    path: &ParamPath,
    recursive: bool,
) -> Result<Vec<String>> {
    pinned_under(release, path, recursive)?
        .iter()
        .map(|name| selector(release, name))
        .collect()
}

/// The parameters `release` pinned under `path` (one level, unless `recursive`): those the path
/// held when it was created.
fn pinned_under(release: &Manifest, path: &ParamPath, recursive: bool) -> Result<Vec<String>> {
    let under: Vec<String> = release
        .parameters
        .keys()
        .filter(|name| {
            path.relative(name)
                .is_some_and(|rest| recursive || !rest.contains('/'))
        })
        .cloned()
        .collect();
    if under.is_empty() {
        return Err(release.not_pinned(format!("any parameter under {}", path.as_str())));
    }
    Ok(under)
}

/// Reads `secrets`: those at their current version in batches, each at another stage alone;
/// keyed by [`secret_key`]. A secret Secrets Manager does not have is an error naming it.
async fn fetch_secrets(
    store: &impl ParameterStore,
    secrets: &[SecretInput<'_>],
    pins: Option<&Manifest>,
) -> Result<BTreeMap<String, SecretValue>> {
    if let Some(release) = pins {
        return fetch_pinned_secrets(store, secrets, release).await;
    }
    let mut current: Vec<String> = Vec::new();
    let mut staged = Vec::new();
    for secret in secrets {
        match secret.is_current() {
            true => current.push(secret.id.as_str().to_string()),
            false => staged.push((secret.key(), secret.id, secret.stage_name())),
        }
    }
    current.sort();
    current.dedup();
    staged.sort();
    staged.dedup();
    let batches = try_join_all(
        current
            .chunks(BATCH_MAX)
            .map(|chunk| store.get_secrets(chunk)),
    );
    let staged = try_join_all(staged.iter().map(|(key, id, stage)| async move {
        let value = store.get_secret_staged(id.as_str(), stage).await?;
        Ok::<_, anyhow::Error>((key.clone(), value))
    }));
    let (batches, staged) = futures::try_join!(batches, staged)?;
    let mut found: BTreeMap<String, SecretValue> = staged.into_iter().collect();
    let mut missing = Vec::new();
    for batch in batches {
        missing.extend(batch.missing);
        for secret in batch.found {
            found.insert(format!("secret:{}", secret.id), secret);
        }
    }
    if !missing.is_empty() {
        missing.sort();
        let s = if missing.len() == 1 { "" } else { "s" };
        return Err(anyhow!("secret{s} not found: {}", missing.join(", ")));
    }
    Ok(found)
}

/// Reads each of `secrets` at the version id `release` pinned (one GetSecretValue each: the
/// batch call serves current versions only).
async fn fetch_pinned_secrets(
    store: &impl ParameterStore,
    secrets: &[SecretInput<'_>],
    release: &Manifest,
) -> Result<BTreeMap<String, SecretValue>> {
    let mut wanted = Vec::new();
    for secret in secrets {
        let key = secret.key();
        let name = &key["secret:".len()..];
        let version = release
            .secrets
            .get(name)
            .ok_or_else(|| release.not_pinned(format!("secret {name}")))?;
        wanted.push((key, secret.id, version));
    }
    wanted.sort();
    wanted.dedup();
    let found = try_join_all(wanted.into_iter().map(|(key, id, version)| async move {
        let value = store.get_secret_version(id.as_str(), version).await?;
        Ok::<_, anyhow::Error>((key, value))
    }))
    .await?;
    Ok(found.into_iter().collect())
}

/// The variables a secret's value holds, as its format reads it. A value that does not read is an
/// input error naming the secret (and the key, position or type), never quoting the value.
fn secret_variables(
    secret: &SecretValue,
    format: &SecretFormat,
    vars: &IndexMap<String, Secret>,
) -> Result<Vec<(String, Secret)>> {
    let id = &secret.id;
    let text = secret.value.expose();
    let variables = match format {
        SecretFormat::Value { key } => vec![(key.as_str().to_string(), secret.value.clone())],
        SecretFormat::Dotenv => {
            let lookup = |k: &str| vars.get(k).map(|v| v.expose().to_string());
            envfile::parse(text, &lookup)
                .map_err(|e| {
                    input_error(format!("secret {id} is not a valid dotenv document: {e}"))
                })?
                .into_iter()
                .map(|(k, v)| (k, Secret::fetched(v)))
                .collect()
        }
        SecretFormat::Json { prefix } => {
            // Parsed as any JSON first: serde's errors for a wrong type would quote the value.
            let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
                input_error(format!(
                    "secret {id} is not valid JSON (line {}, column {}); set `format: value` or `format: dotenv` for a secret that is not a JSON object",
                    e.line(),
                    e.column()
                ))
            })?;
            let serde_json::Value::Object(object) = value else {
                return Err(input_error(format!(
                    "secret {id} is JSON but not an object of keys and values; set `format: value` to take it whole"
                )));
            };
            let mut variables = Vec::new();
            for (key, value) in object {
                let text = match value {
                    serde_json::Value::String(s) => s,
                    serde_json::Value::Number(n) => n.to_string(),
                    serde_json::Value::Bool(b) => b.to_string(),
                    serde_json::Value::Null => String::new(),
                    serde_json::Value::Array(_) | serde_json::Value::Object(_) => {
                        return Err(input_error(format!(
                            "secret {id}: the value of key {key:?} is a nested array or object; only strings, numbers, booleans and null become variables"
                        )))
                    }
                };
                variables.push((format!("{prefix}{key}"), Secret::fetched(text)));
            }
            variables
        }
    };
    for (key, _) in &variables {
        if !envfile::is_valid_key(key) {
            return Err(input_error(format!(
                "secret {id}: {key:?} is not a valid variable name ({})",
                envfile::KEY_RULE
            )));
        }
    }
    Ok(variables)
}

fn take<'a>(by_name: &'a BTreeMap<String, Parameter>, name: &str) -> Result<&'a Parameter> {
    by_name
        .get(name)
        .ok_or_else(|| anyhow!("Parameter Store did not return parameter {name}"))
}

#[cfg(test)]
mod tests;
