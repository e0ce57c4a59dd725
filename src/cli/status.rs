//! `kicky-agent status`: the last sync, parameter versions and fetched files, from the state file.
//! Exit 1 when the last sync failed. Never a value: the state holds names, versions and hashes.

use std::path::Path;

use anyhow::{bail, Result};
use clap::Args;
use serde_json::json;

use crate::instance::TargetState;
use crate::outln;
use crate::sync::state::State;

/// Show the last sync, parameter versions and fetched files; exit 1 when the last sync failed.
#[derive(Debug, Args)]
pub struct StatusCmd {
    /// Print the status as JSON.
    #[arg(long)]
    json: bool,
    /// Show where the last sync spent its time: each phase with its start and duration (the
    /// JSON always has it, as `timeline`).
    #[arg(long)]
    timeline: bool,
}

impl StatusCmd {
    pub fn run(self, config: &Path) -> Result<()> {
        let settings = super::load(config)?;
        let path = State::path(&settings);
        let state = State::load(&path)?;
        let containers = match &settings.compose {
            Some(_) => Some(super::block_on(async {
                let engine =
                    crate::engine::docker::connect(std::time::Duration::from_secs(2)).await?;
                let probes = crate::compose::probes(&settings);
                crate::engine::containers::containers(&engine, &settings.project, &probes).await
            })??),
            None => None,
        };
        let promoted = settings.release.as_ref().map(|at| promoted(&settings, at));
        let spot = spot_notice(&settings);
        if self.json {
            let value = json!({
                "project": settings.project,
                "release": state.release.as_ref().map(|r| &r.id),
                "promoted": promoted,
                "state_file": path,
                "last_sync": state.last_sync,
                "lifecycle": state.lifecycle,
                "target_lifecycle_state": settings.target_state.as_ref().map(|t| t.as_str()),
                "spot_notice": spot,
                "warm_pool": settings.is_warm(),
                "parameters": state.parameters,
                "files": state.files,
                "images": state.images,
                "stale_images": state.stale_images,
                "held_release": state.failed,
                "last_good_at": state.last_good_at,
                "config_origins": settings.origins,
                "ignored_tags": settings.ignored_tags,
                "containers": containers,
                "timeline": state.timeline,
                "failure_logs": state.failure_logs,
            });
            outln!("{}", serde_json::to_string_pretty(&value)?);
        } else {
            print_text(&settings.project, &path, &state);
            if let Some(notice) = &spot {
                let doing = match settings.lifecycle.spot {
                    crate::config::SpotChoice::DrainOnRebalance => "the containers are stopped",
                    _ if notice.contains("interruption") => "the containers are stopped",
                    _ => "reported only (lifecycle.spot: drain_on_rebalance would stop the containers)",
                };
                outln!("instance: {notice}: {doing}");
            }
            if let Some(line) = instance_line(settings.target_state.as_ref()) {
                outln!("{line}");
            }
            if let Some(promoted) = &promoted {
                let running = state.release.as_ref().map(|r| r.id.to_string());
                let pinned = settings
                    .release
                    .as_ref()
                    .and_then(|at| at.pin.as_deref())
                    .map(|pin| format!("pinned: {pin}; "))
                    .unwrap_or_default();
                outln!(
                    "release: {} ({pinned}promoted: {promoted})",
                    running.as_deref().unwrap_or("none applied yet")
                );
            }
            if self.timeline {
                print_timeline(&state);
            }
            super::print_origins(&settings);
            if let Some(containers) = &containers {
                let mirrors = crate::compose::mirror::Mirrors::of(&settings.registries);
                print_containers(containers, &state, &mirrors);
            }
        }
        if let Some(failed) = &state.failed {
            bail!(
                "degraded: {}",
                failed.describe(state.last_good_at.as_deref())
            );
        }
        if let Some(last) = &state.last_sync {
            if !last.ok {
                bail!("the last sync failed");
            }
        }
        let unwell: Vec<&str> = containers
            .iter()
            .flatten()
            .filter(|c| !c.is_well())
            .map(|c| c.name.as_str())
            .collect();
        if !unwell.is_empty() {
            bail!("not running and healthy: {}", unwell.join(", "));
        }
        Ok(())
    }
}

/// Where Auto Scaling is taking the instance, when that explains what runs: in a warm pool
/// nothing is started (an empty container list is right), terminating the containers are being
/// stopped.
fn instance_line(target: Option<&TargetState>) -> Option<String> {
    match target? {
        TargetState::Warmed(state) => Some(format!(
            "instance: waiting in the warm pool (target lifecycle state {state}): parameters, files and images are prepared, no container is started; they start when the instance goes in service"
        )),
        TargetState::Terminated => Some(
            "instance: terminating (target lifecycle state Terminated): the containers are stopped, then the termination hook is completed".into(),
        ),
        TargetState::InService | TargetState::Other(_) => None,
    }
}

/// A Spot notice that stands, in words (instance metadata, a few seconds at most); none on an
/// instance that is not Spot, with `lifecycle.spot: off`, or without instance metadata.
fn spot_notice(settings: &crate::config::Settings) -> Option<String> {
    use crate::instance::spot::{self, Seen};
    if settings.lifecycle.spot == crate::config::SpotChoice::Off
        || crate::instance::imds::disabled()
    {
        return None;
    }
    let look = async {
        match spot::is_spot().await {
            Ok(true) => spot::look().await.ok(),
            _ => None,
        }
    };
    let bounded = async { tokio::time::timeout(std::time::Duration::from_secs(10), look).await };
    match super::block_on(bounded) {
        Ok(Ok(Some(seen @ (Seen::Interruption { .. } | Seen::Rebalance { .. })))) => {
            Some(seen.describe())
        }
        _ => None,
    }
}

/// The promoted release, as its pointer says now (a few seconds at most), or why it is not known.
fn promoted(settings: &crate::config::Settings, at: &crate::config::ReleaseSettings) -> String {
    let read = async {
        let config = crate::aws::sdk_config(&settings.aws).await?;
        let s3 = crate::aws::s3::S3Store::new(&config, &settings.aws);
        let store = crate::aws::releases::Store { s3: &s3, at };
        store.promoted().await
    };
    let bounded = async {
        tokio::time::timeout(std::time::Duration::from_secs(10), read)
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer in 10 s")))
    };
    match super::block_on(bounded) {
        Ok(Ok(Some(pointer))) => pointer.release.to_string(),
        Ok(Ok(None)) => "none".to_string(),
        Ok(Err(err)) | Err(err) => format!("unknown ({})", crate::engine::api::summary(&err, 200)),
    }
}

/// The last sync's phases, in the order they began: start, duration, what.
fn print_timeline(state: &State) {
    let total = state
        .timeline
        .iter()
        .map(|s| s.start_ms + s.ms)
        .max()
        .unwrap_or(0);
    outln!(
        "timeline of the last sync ({} phases, {:.1} s):",
        state.timeline.len(),
        total as f64 / 1000.0
    );
    if state.timeline.is_empty() {
        outln!("  none recorded");
    }
    for span in &state.timeline {
        let failed = if span.ok { "" } else { "  FAILED" };
        outln!(
            "  +{:>7.3}s {:>8.3}s  {:<10} {}{failed}",
            span.start_ms as f64 / 1000.0,
            span.ms as f64 / 1000.0,
            span.kind,
            span.what
        );
    }
}

fn print_containers(
    containers: &[crate::engine::containers::ContainerStatus],
    state: &State,
    mirrors: &crate::compose::mirror::Mirrors,
) {
    outln!("containers:");
    if containers.is_empty() {
        outln!("  none");
    }
    for c in containers {
        let health = match (&c.health, c.one_shot, c.state.as_str(), c.exit_code) {
            (_, true, "exited", Some(0)) => ", completed (one-shot)".to_string(),
            (Some(h), ..) if c.readiness.contains("probe") => {
                format!(", {h} ({})", c.readiness)
            }
            (Some(h), ..) => format!(", {h}"),
            _ if c.is_unchecked() => ", no readiness check".to_string(),
            _ => String::new(),
        };
        let digest = state
            .images
            .get(&c.service)
            .map(|id| format!("  image {id}"))
            .unwrap_or_default();
        outln!(
            "  {} (service {}): {}{health}  {}{digest}",
            c.name,
            c.service,
            c.state,
            mirrors.describe(&c.image)
        );
    }
    for image in &state.stale_images {
        let image = mirrors.describe(image);
        outln!(
            "  image {image}: possibly stale (its registry could not be reached at the last sync; the local copy runs)"
        );
    }
}

fn print_text(project: &str, path: &Path, state: &State) {
    outln!("project {project} (state {})", path.display());
    match &state.last_sync {
        None => outln!("last sync: never"),
        Some(s) if s.ok => outln!("last sync: ok, {} to {}", s.started, s.finished),
        Some(s) => {
            outln!("last sync: FAILED, {} to {}", s.started, s.finished);
            if let Some(error) = &s.error {
                outln!("  {error}");
            }
            for log in &state.failure_logs {
                outln!(
                    "  container {} (service {}), its last {} lines:",
                    log.container,
                    log.service,
                    log.lines.len()
                );
                for line in &log.lines {
                    outln!("    | {line}");
                }
            }
        }
    }
    if let Some(failed) = &state.failed {
        outln!(
            "release held: {} (tried {} time{}; applied again when it changes, on resync, or after watch.retry_failed_after)",
            failed.describe(state.last_good_at.as_deref()),
            failed.attempts,
            if failed.attempts == 1 { "" } else { "s" }
        );
    }
    if let Some(l) = &state.lifecycle {
        let failed = l
            .error
            .as_deref()
            .map(|e| format!(", NOT TAKEN: {e}"))
            .unwrap_or_default();
        outln!(
            "lifecycle: {} sent for {} to hook {} of group {} at {}{failed}",
            l.action,
            l.instance,
            l.hook,
            l.group,
            l.at
        );
    }
    if !state.parameters.is_empty() {
        outln!("parameters and secrets (as of the last good sync):");
        for (key, version) in &state.parameters {
            outln!(
                "  {}  version {version}",
                crate::sync::params::describe_key(key)
            );
        }
    }
    if !state.files.is_empty() {
        outln!("files:");
        for (path, f) in &state.files {
            outln!("  {}  from {}", path.display(), f.source);
            outln!(
                "    etag {}  version {}  sha256 {}  {} bytes",
                f.etag.as_deref().unwrap_or("-"),
                f.version_id.as_deref().unwrap_or("-"),
                f.sha256,
                f.size
            );
            outln!("    fetched {}  checked {}", f.fetched_at, f.checked_at);
        }
    }
}
