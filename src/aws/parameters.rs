//! Reading parameters by name, many at once: what the env file's sources and the registries'
//! credentials both read.

use std::collections::BTreeMap;

use anyhow::{anyhow, Result};
use futures::future::try_join_all;

use super::ssm::{Parameter, ParameterStore, GET_PARAMETERS_MAX};

/// Reads the named parameters in as few calls as GetParameters allows, all at once. Any that
/// Parameter Store does not have is an error naming it. A name may be a `name:version` selector
/// (a release's pin): it is found under its name.
pub async fn get_all(
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
        let hint = match missing.iter().any(|m| m.contains(':')) {
            // Names never hold `:`: these are versions a release pinned.
            true => " (name:version; Parameter Store keeps only a parameter's last 100 versions)",
            false => "",
        };
        return Err(anyhow!(
            "parameter{s} not found: {}{hint}",
            missing.join(", ")
        ));
    }
    Ok(by_name)
}
