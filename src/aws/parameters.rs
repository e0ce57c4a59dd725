//! Reading parameters by name, many at once: what the env file's sources and the registries'
//! credentials both read.

use std::collections::BTreeMap;

use anyhow::{anyhow, Result};
use futures::future::try_join_all;

use super::ssm::{Parameter, ParameterStore, GET_PARAMETERS_MAX};

/// Reads the named parameters in as few calls as GetParameters allows, all at once. Any that
/// Parameter Store does not have is an error naming it.
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
        return Err(anyhow!("parameter{s} not found: {}", missing.join(", ")));
    }
    Ok(by_name)
}
