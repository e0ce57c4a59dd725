//! Resolves the configured parameter sources into the env file's variables.
//!
//! All names are fetched first, in as few calls as the API allows (GetParameters takes 10 names;
//! each path is one paginated GetParametersByPath), all concurrently; then the sources are applied
//! in config order, a later variable replacing an earlier one of the same name.

use std::collections::BTreeMap;

use anyhow::{anyhow, Result};
use futures::future::try_join_all;
use indexmap::IndexMap;

use crate::aws::ssm::{Parameter, ParameterStore, GET_PARAMETERS_MAX};
use crate::config::ParamSource;
use crate::envfile;
use crate::error::input_error;
use crate::redact::Secret;

/// The variables of the env file, in order, and the version of every parameter read.
#[derive(Debug, Default)]
pub struct Resolved {
    pub vars: Vec<(String, Secret)>,
    pub versions: BTreeMap<String, i64>,
}

pub async fn resolve(store: &impl ParameterStore, sources: &[ParamSource]) -> Result<Resolved> {
    let names: Vec<String> = sources
        .iter()
        .filter_map(|s| match s {
            ParamSource::Document { name } | ParamSource::Single { name, .. } => {
                Some(name.as_str().to_string())
            }
            ParamSource::Path { .. } => None,
        })
        .collect();
    let paths = try_join_all(sources.iter().filter_map(|s| match s {
        ParamSource::Path { path, recursive } => Some(store.get_path(path.as_str(), *recursive)),
        _ => None,
    }));
    let (by_name, mut path_results) = futures::try_join!(fetch(store, names), paths)?;

    let mut resolved = Resolved::default();
    let mut vars: IndexMap<String, Secret> = IndexMap::new();
    let mut path_results = path_results.drain(..);
    for source in sources {
        match source {
            ParamSource::Single { name, key } => {
                let p = take(&by_name, name.as_str())?;
                resolved.versions.insert(p.name.clone(), p.version);
                vars.insert(key.as_str().to_string(), p.value.clone());
            }
            ParamSource::Document { name } => {
                let p = take(&by_name, name.as_str())?;
                resolved.versions.insert(p.name.clone(), p.version);
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
                    vars.insert(key, Secret::new(value));
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
                    vars.insert(key.to_string(), p.value.clone());
                    resolved.versions.insert(p.name.clone(), p.version);
                }
            }
        }
    }
    resolved.vars = vars.into_iter().collect();
    Ok(resolved)
}

/// Reads the named parameters in as few calls as GetParameters allows, all at once. Any that
/// Parameter Store does not have is an error naming it.
pub async fn fetch(
    store: &impl ParameterStore,
    mut names: Vec<String>,
) -> Result<BTreeMap<String, Parameter>> {
    names.sort();
    names.dedup();
    let batches = try_join_all(
        names
            .chunks(GET_PARAMETERS_MAX)
            .map(|chunk| store.get_batch(chunk)),
    )
    .await?;
    let mut by_name: BTreeMap<String, Parameter> = BTreeMap::new();
    let mut missing = Vec::new();
    for batch in batches {
        missing.extend(batch.missing);
        by_name.extend(batch.found.into_iter().map(|p| (p.name.clone(), p)));
    }
    if !missing.is_empty() {
        missing.sort();
        let s = if missing.len() == 1 { "" } else { "s" };
        return Err(anyhow!("parameter{s} not found: {}", missing.join(", ")));
    }
    Ok(by_name)
}

fn take<'a>(by_name: &'a BTreeMap<String, Parameter>, name: &str) -> Result<&'a Parameter> {
    by_name
        .get(name)
        .ok_or_else(|| anyhow!("Parameter Store did not return parameter {name}"))
}

#[cfg(test)]
mod tests;
