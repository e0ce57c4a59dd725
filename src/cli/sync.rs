//! `kicky-agent sync`: converge once in the foreground and exit (0 converged, 1 failed).

use std::path::Path;

use anyhow::Result;
use clap::Args;

use crate::outln;

/// Converge once: env file from SSM, files from S3, containers; exit 0 only when all are healthy.
#[derive(Debug, Args, Default)]
pub struct SyncCmd {
    /// Apply exactly this release (with `release.store`), however the sources moved since.
    #[arg(long, value_name = "ID")]
    pub release: Option<String>,
}

impl SyncCmd {
    pub fn run(self, config: &Path) -> Result<()> {
        let target = super::target(self.release.as_deref())?;
        let settings = super::load(config)?;
        let report = super::block_on(crate::sync::run(&settings, &target))??;
        if let Some(env) = &report.env {
            outln!(
                "env file {}: {} ({} variables)",
                env.path.display(),
                env.result,
                env.variables
            );
        }
        for file in &report.files {
            outln!(
                "file {}: {} (from {})",
                file.path.display(),
                file.change.as_str(),
                file.source
            );
        }
        if let Some(engine) = &report.containers {
            for image in &engine.pulled {
                outln!("image {image}: pulled");
            }
            for plan in &engine.services {
                outln!(
                    "container {} (service {}): {}",
                    plan.container,
                    plan.service,
                    plan.action
                );
            }
            for name in &engine.removed {
                outln!("container {name}: removed (its service left the compose file)");
            }
            for id in &engine.pruned {
                outln!("image {id}: pruned");
            }
        }
        if report.env.is_none() && report.files.is_empty() && report.containers.is_none() {
            outln!("nothing to do: the config has no env file and no files");
        }
        Ok(())
    }
}
