//! After a healthy sync: the containers of services no longer in the file, and the images this
//! project pulled that nothing uses any more.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{anyhow, Result};

use crate::engine::api::Engine;
use crate::error::all_of;

pub(super) async fn remove_orphans(
    engine: &impl Engine,
    orphans: &[(String, String)],
) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    let mut errors = Vec::new();
    for (id, name) in orphans {
        let gone = async {
            engine.stop(id, Duration::from_secs(10)).await?;
            engine.remove(id).await
        };
        match gone.await {
            Ok(()) => {
                crate::progress::step(format!("removed {name}: its service left the compose file"));
                removed.push(name.clone());
            }
            Err(err) => {
                errors.push(anyhow!(err).context(format!("failed to remove container {name}")))
            }
        }
    }
    match all_of(
        errors,
        orphans.len(),
        "containers of removed services could not be removed",
    ) {
        Some(err) => Err(err),
        None => Ok(removed),
    }
}

/// Removes the images this project pulled that no container uses any more: their references
/// (tags), so an image another project also tagged stays for it. Never one of the images the
/// project runs now, and never one a container (a rollback's included) still uses.
pub(super) async fn prune(
    engine: &impl Engine,
    pulled_before: &BTreeMap<String, String>,
    now: &BTreeMap<String, String>,
) -> Vec<String> {
    let current: BTreeSet<&String> = now.values().collect();
    let candidates: Vec<(&String, &String)> = pulled_before
        .iter()
        .filter(|(_, id)| !current.contains(id))
        .collect();
    if candidates.is_empty() {
        return Vec::new();
    }
    let in_use = match engine.images_in_use().await {
        Ok(in_use) => in_use,
        Err(err) => {
            tracing::warn!("not pruning: {err}");
            return Vec::new();
        }
    };
    let mut pruned = Vec::new();
    for (reference, id) in candidates {
        if in_use.contains(id) {
            continue;
        }
        // Only while the reference still names what this project pulled.
        match engine.image_id(reference).await {
            Ok(Some(local)) if &local == id => {}
            _ => {
                pruned.push(reference.clone());
                continue;
            }
        }
        match engine.remove_image(reference).await {
            Ok(()) => {
                crate::progress::step(format!("pruned {reference}"));
                pruned.push(reference.clone());
            }
            Err(err) => tracing::warn!(image = %reference, "not pruned: {err}"),
        }
    }
    pruned
}
