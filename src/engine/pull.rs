//! Pulling images: concurrently, with the credentials of their registry, retried with backoff when
//! the failure looks transient (a registry that is down or slow), never when the registry said no.
//!
//! Every pull is bounded twice: by progress (no message from the engine for `pull_stall_timeout`
//! ends the attempt, which is retried) and overall (`pull_timeout`, retries included): the
//! engine's own connection to a registry that accepts and never answers has no deadline.
//!
//! When the registry cannot be reached (refused, reset, DNS, 5xx, 429, stalled) and the image is
//! in the local store, the local image is used, as the ECS agent does by default: an instance
//! baked with its images still comes up while Docker Hub is down. It is reported as possibly
//! stale. A registry that answers no (bad credentials, unknown manifest) stays an error.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use futures::StreamExt;
use tokio::time::Instant;

use super::api::{Engine, EngineError};
use super::registry::Registries;
use crate::compose::reference::ImageRef;
use crate::compose::{Project, PullPolicy};
use crate::config::PullPolicy as DefaultPolicy;
use crate::retry::Backoff;

/// An image the project needs, and what a pull would do with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImagePlan {
    pub image: String,
    /// The first `platform` of the services that run it.
    pub platform: Option<String>,
    pub policy: PullPolicy,
    /// The local image's ID, when there is one.
    pub local: Option<String>,
    /// `pull_policy: daily` (or weekly, every_…): the period has passed since the last pull.
    pub due: bool,
}

impl ImagePlan {
    pub fn will_pull(&self) -> bool {
        match self.policy {
            PullPolicy::Always => true,
            PullPolicy::Missing => self.local.is_none(),
            PullPolicy::Never => false,
            PullPolicy::Refresh(_) => self.local.is_none() || self.due,
        }
    }
}

/// How long a pull may go without progress, and take in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PullLimits {
    pub stall: Duration,
    pub overall: Duration,
}

/// What the pulls gave: image → local ID, and the images used from the local store because
/// their registry could not be reached.
#[derive(Debug, Clone, Default)]
pub struct Pulled {
    pub ids: BTreeMap<String, String>,
    pub stale: Vec<String>,
}

/// Every distinct image of the project, with its policy (the service's `pull_policy`, else the
/// config's `compose.pull`) and what is present locally (`local`: image → local ID). `pulled_at`
/// (image → RFC 3339) says when this project last pulled each, for the `daily`-like policies.
pub fn plan(
    project: &Project,
    default: DefaultPolicy,
    local: &BTreeMap<String, Option<String>>,
    pulled_at: &BTreeMap<String, String>,
    now: std::time::SystemTime,
) -> Vec<ImagePlan> {
    let mut images: BTreeMap<String, PullPolicy> = BTreeMap::new();
    let mut platforms: BTreeMap<String, String> = BTreeMap::new();
    for service in project.services.values() {
        if let Some(platform) = &service.platform {
            platforms
                .entry(service.image.clone())
                .or_insert_with(|| platform.clone());
        }
        let policy = service.pull_policy.unwrap_or(match default {
            DefaultPolicy::Always => PullPolicy::Always,
            DefaultPolicy::Missing => PullPolicy::Missing,
        });
        // The strictest wins when two services share an image.
        let entry = images.entry(service.image.clone()).or_insert(policy);
        if strictness(policy) > strictness(*entry) {
            *entry = policy;
        }
    }
    images
        .into_iter()
        .map(|(image, policy)| ImagePlan {
            local: local.get(&image).cloned().flatten(),
            platform: platforms.get(&image).cloned(),
            due: refresh_due(policy, pulled_at.get(&image), now),
            image,
            policy,
        })
        .collect()
}

/// How strict a policy is about asking the registry: the strictest of a shared image's wins.
fn strictness(policy: PullPolicy) -> (u8, std::cmp::Reverse<std::time::Duration>) {
    match policy {
        PullPolicy::Never => (0, std::cmp::Reverse(std::time::Duration::MAX)),
        PullPolicy::Missing => (1, std::cmp::Reverse(std::time::Duration::MAX)),
        PullPolicy::Refresh(period) => (2, std::cmp::Reverse(period)),
        PullPolicy::Always => (3, std::cmp::Reverse(std::time::Duration::ZERO)),
    }
}

/// Whether a `daily`-like policy's period has passed since `last` (never pulled: it has).
pub fn refresh_due(policy: PullPolicy, last: Option<&String>, now: std::time::SystemTime) -> bool {
    let PullPolicy::Refresh(period) = policy else {
        return false;
    };
    match last.and_then(|at| humantime::parse_rfc3339(at).ok()) {
        Some(at) => now.duration_since(at).is_ok_and(|since| since >= period),
        None => true,
    }
}

/// Pulls what `plans` say to pull, all at once. Nothing else is touched, so a failure here leaves
/// every running container as it was. Every failure is reported, not only the first.
pub async fn pull_all(
    engine: &impl Engine,
    plans: &[ImagePlan],
    registries: &Registries,
    limits: PullLimits,
) -> Result<Pulled> {
    let results = futures::future::join_all(plans.iter().map(|plan| async move {
        let mut stale = false;
        if plan.will_pull() {
            let pulling = pull(engine, plan, registries, limits);
            match crate::timeline::timed("pull", plan.image.as_str(), pulling).await {
                Ok(()) => {}
                Err(err) if plan.local.is_some() && registry_unavailable(&err) => {
                    crate::progress::warn(format!(
                        "{}: the registry cannot be reached; using the local image, which may be stale: {err:#}",
                        plan.image
                    ));
                    stale = true;
                }
                Err(err) if refused(&err) => return Err(err.context(Refused)),
                Err(err) => return Err(err),
            }
        } else if plan.local.is_none() {
            return Err(anyhow!(
                "image {} is not present and its pull_policy is never",
                plan.image
            ));
        }
        let id = engine
            .image_id(&plan.image)
            .await
            .with_context(|| format!("failed to inspect image {}", plan.image))?
            .ok_or_else(|| anyhow!("image {} is still missing after the pull", plan.image))?;
        Ok((plan.image.clone(), id, stale))
    }))
    .await;
    let mut pulled = Pulled::default();
    let mut errors = Vec::new();
    for result in results {
        match result {
            Ok((image, id, stale)) => {
                if stale {
                    pulled.stale.push(image.clone());
                }
                pulled.ids.insert(image, id);
            }
            Err(err) => errors.push(err),
        }
    }
    match crate::error::all_of(errors, plans.len(), "images failed to pull") {
        Some(err) => Err(err),
        None => Ok(pulled),
    }
}

/// Marks a pull the registry refused (bad credentials, no such image): trying the same release
/// again will not help.
#[derive(Debug)]
pub struct Refused;

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the registry refused the pull")
    }
}

/// A pull that made no progress for the stall time, or ran out of its overall time.
#[derive(Debug)]
struct Stalled(String);

impl std::fmt::Display for Stalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Stalled {}

async fn pull(
    engine: &impl Engine,
    plan: &ImagePlan,
    registries: &Registries,
    limits: PullLimits,
) -> Result<()> {
    let image = plan.image.as_str();
    let reference = ImageRef::parse(image).map_err(crate::error::input_error)?;
    let credentials = registries.credentials(&reference.registry).await?;
    let started = Instant::now();
    let deadline = started + limits.overall;
    let progress = std::io::stderr().is_terminal();
    let backoff = Backoff {
        deadline: limits.overall,
        ..Backoff::default()
    };
    backoff
        .retry(&format!("pulling {image}"), is_transient, || async {
            let mut stream = engine.pull(
                &reference.from_image(),
                &reference.tag_or_digest(),
                credentials.clone(),
                plan.platform.as_deref(),
            );
            loop {
                let bound = (Instant::now() + limits.stall).min(deadline);
                let item = match tokio::time::timeout_at(bound, stream.next()).await {
                    Ok(Some(item)) => item,
                    Ok(None) => break,
                    Err(_) if bound == deadline => {
                        return Err(anyhow!(Stalled(format!(
                            "not done within pull_timeout ({})",
                            humantime::format_duration(limits.overall)
                        ))))
                    }
                    Err(_) => {
                        return Err(anyhow!(Stalled(format!(
                            "no progress for {} (pull_stall_timeout)",
                            humantime::format_duration(limits.stall)
                        ))))
                    }
                };
                let info = item?;
                if progress {
                    if let (Some(status), Some(id)) = (&info.status, &info.layer) {
                        let bytes = info
                            .bytes
                            .map(|(c, t)| format!(" {}/{} kB", c / 1000, t / 1000))
                            .unwrap_or_default();
                        crate::eout!("\r\x1b[K{image}: {id} {status}{bytes}");
                    }
                }
            }
            if progress {
                crate::eout!("\r\x1b[K");
            }
            Ok(())
        })
        .await
        .with_context(|| format!("failed to pull {image}"))?;
    crate::progress::step(format!(
        "pulled {image} in {:.1}s",
        started.elapsed().as_secs_f32()
    ));
    Ok(())
}

/// What a registry says when it answered no: asking again will not change its mind.
const REFUSALS: &[&str] = &[
    "unauthorized",
    "authentication required",
    "no basic auth credentials",
    "denied",
    "manifest unknown",
    "not found",
    "invalid reference",
    "does not exist",
];

fn refused(err: &anyhow::Error) -> bool {
    let text = format!("{err:#}").to_lowercase();
    REFUSALS.iter().any(|p| text.contains(p))
        || err.chain().any(|c| {
            matches!(
                c.downcast_ref::<EngineError>(),
                Some(EngineError::NotFound(_))
            )
        })
}

/// A registry that answered no (bad credentials, no such image) will answer no again.
fn is_transient(err: &anyhow::Error) -> bool {
    !refused(err)
}

/// The registry could not be reached or did not serve (refused connection, DNS, 5xx, 429, a
/// stall), as opposed to a registry that answered no, or an engine that did not answer.
fn registry_unavailable(err: &anyhow::Error) -> bool {
    if refused(err) {
        return false;
    }
    err.chain().any(|c| {
        c.is::<Stalled>()
            || matches!(
                c.downcast_ref::<EngineError>(),
                Some(EngineError::Refused { .. })
            )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(message: &str, status: Option<u16>) -> anyhow::Error {
        anyhow::Error::new(EngineError::Refused {
            status,
            message: message.to_string(),
        })
        .context("failed to pull 127.0.0.1:5000/tester/web:1")
    }

    /// The engine's own words for each case (Docker 20.10 and later), and what the agent makes of
    /// them: fall back to the local image, or fail.
    #[test]
    fn registry_outages_fall_back_and_refusals_do_not() {
        let cases: &[(anyhow::Error, bool)] = &[
            (refusal("Get \"https://127.0.0.1:1/v2/\": dial tcp 127.0.0.1:1: connect: connection refused", Some(500)), true),
            (refusal("Get \"https://registry-1.docker.io/v2/\": dial tcp: lookup registry-1.docker.io: no such host", Some(500)), true),
            (refusal("received unexpected HTTP status: 503 Service Unavailable", Some(500)), true),
            (refusal("toomanyrequests: You have reached your pull rate limit.", Some(500)), true),
            (refusal("Get \"https://registry-1.docker.io/v2/\": net/http: request canceled while waiting for connection (Client.Timeout exceeded while awaiting headers)", Some(500)), true),
            (anyhow!(Stalled("no progress for 60s".into())), true),
            (refusal("unauthorized: authentication required", Some(500)), false),
            (refusal("Head \"https://127.0.0.1:5000/v2/tester/web/manifests/2\": no basic auth credentials", Some(500)), false),
            (refusal("denied: Your authorization token has expired.", None), false),
            (refusal("manifest for 127.0.0.1:5000/tester/web:nope not found: manifest unknown: manifest unknown", Some(404)), false),
            (anyhow::Error::new(EngineError::NotFound("pull access denied".into())), false),
            (anyhow::Error::new(EngineError::Unreachable("connection reset".into())), false),
        ];
        for (err, falls_back) in cases {
            assert_eq!(registry_unavailable(err), *falls_back, "{err:#}");
        }
    }

    #[test]
    fn a_refresh_policy_pulls_once_per_period() {
        let day = std::time::Duration::from_secs(24 * 3600);
        let now = std::time::SystemTime::UNIX_EPOCH + 100 * day;
        let at = |t: std::time::SystemTime| humantime::format_rfc3339_seconds(t).to_string();
        let daily = PullPolicy::Refresh(day);
        assert!(refresh_due(daily, None, now), "never pulled");
        assert!(!refresh_due(daily, Some(&at(now - day / 2)), now));
        assert!(refresh_due(daily, Some(&at(now - day)), now));
        assert!(
            !refresh_due(PullPolicy::Always, None, now),
            "not a refresh policy"
        );
        // The strictest of a shared image's policies wins.
        let hourly = PullPolicy::Refresh(std::time::Duration::from_secs(3600));
        assert!(strictness(hourly) > strictness(daily));
        assert!(strictness(PullPolicy::Always) > strictness(hourly));
        assert!(strictness(daily) > strictness(PullPolicy::Missing));
    }

    #[test]
    fn refusals_are_not_retried() {
        assert!(!is_transient(&refusal(
            "unauthorized: authentication required",
            Some(500)
        )));
        assert!(is_transient(&refusal(
            "received unexpected HTTP status: 502 Bad Gateway",
            Some(500)
        )));
    }
}
