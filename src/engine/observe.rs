//! What the engine holds of the project, read once into plain values: the decisions of a sync
//! are taken from this, never by asking the engine again halfway.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result};
use futures::future::try_join_all;

use super::api::{Container, Engine};
use super::spec;
use crate::compose::Project;

#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Every container labelled as the project's, running or not, in every slot.
    pub containers: Vec<Container>,
    /// Each image the project names → the ID of the local image, when there is one.
    pub images: BTreeMap<String, Option<String>>,
    /// The engine names of the project's networks and volumes that exist.
    pub networks: BTreeSet<String>,
    pub volumes: BTreeSet<String>,
    /// Containers that are not the project's but hold a name one of its services needs: name →
    /// their project, if any.
    pub foreign: BTreeMap<String, Option<String>>,
}

/// Reads what the engine has of `project`, all at once.
pub async fn observe(engine: &impl Engine, project: &Project) -> Result<Observed> {
    let containers = async {
        engine
            .project_containers(&project.name)
            .await
            .context("failed to list the project's containers")
    };
    let images: BTreeSet<&str> = project
        .services
        .values()
        .map(|s| s.image.as_str())
        .collect();
    let images = try_join_all(images.into_iter().map(|image| async move {
        let id = engine
            .image_id(image)
            .await
            .with_context(|| format!("failed to inspect image {image}"))?;
        Ok::<_, anyhow::Error>((image.to_string(), id))
    }));
    let networks = try_join_all(project.networks.values().map(|n| async move {
        let exists = engine
            .network_exists(&n.name)
            .await
            .with_context(|| format!("failed to inspect network {}", n.name))?;
        Ok::<_, anyhow::Error>(exists.then(|| n.name.clone()))
    }));
    let volumes = try_join_all(project.volumes.values().map(|v| async move {
        let exists = engine
            .volume_exists(&v.name)
            .await
            .with_context(|| format!("failed to inspect volume {}", v.name))?;
        Ok::<_, anyhow::Error>(exists.then(|| v.name.clone()))
    }));
    let (containers, images, networks, volumes) =
        futures::try_join!(containers, images, networks, volumes)?;

    // A name no container of the project holds may be held by another's.
    let names: Vec<String> = project
        .services
        .values()
        .map(|s| spec::container_name(project, s))
        .filter(|name| !containers.iter().any(|c| &c.name == name))
        .collect();
    let foreign = try_join_all(names.into_iter().map(|name| async move {
        let found = engine
            .container(&name)
            .await
            .with_context(|| format!("failed to inspect container {name}"))?;
        Ok::<_, anyhow::Error>(found.map(|c| (name, c.label(spec::PROJECT).map(str::to_string))))
    }))
    .await?;
    Ok(Observed {
        containers,
        images: images.into_iter().collect(),
        networks: networks.into_iter().flatten().collect(),
        volumes: volumes.into_iter().flatten().collect(),
        foreign: foreign.into_iter().flatten().collect(),
    })
}
