//! Pulling images: concurrently, with the credentials of their registry, retried with backoff when
//! the failure looks transient (a registry that is down or slow), never when the registry said no.

use std::collections::BTreeMap;
use std::io::IsTerminal;

use anyhow::{anyhow, bail, Context, Result};
use bollard::query_parameters::CreateImageOptions;
use bollard::Docker;
use futures::future::try_join_all;
use futures::StreamExt;

use super::engine_message;
use super::reference::ImageRef;
use super::registry::Registries;
use crate::compose::{Project, PullPolicy};
use crate::config::raw::PullPolicy as DefaultPolicy;
use crate::retry::Backoff;

/// An image the project needs, and what a pull would do with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImagePlan {
    pub image: String,
    pub policy: PullPolicy,
    /// The local image's ID, when there is one.
    pub local: Option<String>,
}

impl ImagePlan {
    pub fn will_pull(&self) -> bool {
        match self.policy {
            PullPolicy::Always => true,
            PullPolicy::Missing => self.local.is_none(),
            PullPolicy::Never => false,
        }
    }
}

/// Every distinct image of the project, with its policy (the service's `pull_policy`, else the
/// config's `compose.pull`) and what is present locally.
pub async fn plan(
    docker: &Docker,
    project: &Project,
    default: DefaultPolicy,
) -> Result<Vec<ImagePlan>> {
    let mut images: BTreeMap<String, PullPolicy> = BTreeMap::new();
    for service in project.services.values() {
        let policy = service.pull_policy.unwrap_or(match default {
            DefaultPolicy::Always => PullPolicy::Always,
            DefaultPolicy::Missing => PullPolicy::Missing,
        });
        // The strictest wins when two services share an image.
        let entry = images.entry(service.image.clone()).or_insert(policy);
        if policy == PullPolicy::Always {
            *entry = PullPolicy::Always;
        }
    }
    try_join_all(
        images
            .into_iter()
            .map(|(image, policy): (String, PullPolicy)| async move {
                let local = local_id(docker, &image).await?;
                Ok::<_, anyhow::Error>(ImagePlan {
                    image,
                    policy,
                    local,
                })
            }),
    )
    .await
}

/// Pulls what `plans` say to pull, all at once; returns image → local image ID. Nothing else is
/// touched, so a failure here leaves every running container as it was.
pub async fn pull_all(
    docker: &Docker,
    plans: &[ImagePlan],
    registries: &Registries,
) -> Result<BTreeMap<String, String>> {
    let ids = try_join_all(plans.iter().map(|plan| async move {
        if plan.will_pull() {
            pull(docker, &plan.image, registries).await?;
        } else if plan.local.is_none() {
            bail!(
                "image {} is not present and its pull_policy is never",
                plan.image
            );
        }
        let id = local_id(docker, &plan.image)
            .await?
            .ok_or_else(|| anyhow!("image {} is still missing after the pull", plan.image))?;
        Ok((plan.image.clone(), id))
    }))
    .await?;
    Ok(ids.into_iter().collect())
}

async fn local_id(docker: &Docker, image: &str) -> Result<Option<String>> {
    match docker.inspect_image(image).await {
        Ok(inspect) => Ok(inspect.id),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(None),
        Err(err) => Err(err).with_context(|| format!("failed to inspect image {image}")),
    }
}

async fn pull(docker: &Docker, image: &str, registries: &Registries) -> Result<()> {
    let reference = ImageRef::parse(image).map_err(crate::error::input_error)?;
    let credentials = registries.credentials(&reference.registry).await?;
    let started = std::time::Instant::now();
    let progress = std::io::stderr().is_terminal();
    Backoff::default()
        .retry(&format!("pulling {image}"), is_transient, || async {
            let options = CreateImageOptions {
                from_image: Some(reference.from_image()),
                tag: Some(reference.tag_or_digest()),
                ..Default::default()
            };
            let mut stream = docker.create_image(Some(options), None, credentials.clone());
            while let Some(item) = stream.next().await {
                let info = item.map_err(|e| anyhow!("{}", engine_message(&e)))?;
                if progress {
                    if let (Some(status), Some(id)) = (&info.status, &info.id) {
                        let done = info
                            .progress_detail
                            .as_ref()
                            .and_then(|p| Some((p.current?, p.total?)));
                        let bytes = done
                            .map(|(c, t)| format!(" {}/{} kB", c / 1000, t / 1000))
                            .unwrap_or_default();
                        eprint!("\r\x1b[K{image}: {id} {status}{bytes}");
                    }
                }
            }
            if progress {
                eprint!("\r\x1b[K");
            }
            Ok(())
        })
        .await
        .with_context(|| format!("failed to pull {image}"))?;
    tracing::info!(image, seconds = started.elapsed().as_secs_f32(), "pulled");
    Ok(())
}

/// A registry that answered no (bad credentials, no such image) will answer no again.
fn is_transient(err: &anyhow::Error) -> bool {
    let text = format!("{err:#}").to_lowercase();
    let permanent = [
        "unauthorized",
        "authentication required",
        "no basic auth credentials",
        "denied",
        "manifest unknown",
        "not found",
        "invalid reference",
        "does not exist",
    ];
    !permanent.iter().any(|p| text.contains(p))
}
