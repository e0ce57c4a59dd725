//! `kicky-agent validate`: check the config and, when present, the compose file, offline;
//! 0 valid, 2 invalid.

use std::path::Path;

use anyhow::{Context, Result};
use clap::Args;

/// Check the agent config and, when present, the compose file offline; exit 0 when valid, 2 when
/// not.
#[derive(Debug, Args)]
pub struct ValidateCmd {}

impl ValidateCmd {
    pub fn run(self, config: &Path) -> Result<()> {
        let settings = super::load(config)?;
        let files: Vec<String> = settings
            .sources
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        println!("config is valid: {}", files.join(" + "));
        println!(
            "project {} in {}",
            settings.project,
            settings.workdir.display()
        );
        if let Some(env) = &settings.env {
            println!(
                "env file {} (mode {:04o}) from {} parameter source{}",
                env.path.display(),
                env.mode,
                env.sources.len(),
                if env.sources.len() == 1 { "" } else { "s" }
            );
        }
        if let Some(compose) = &settings.compose {
            if compose.file.exists() {
                let project = crate::compose::load(&settings)
                    .with_context(|| format!("invalid compose file {}", compose.file.display()))?;
                println!(
                    "compose file is valid: {} ({} service{}: {})",
                    compose.file.display(),
                    project.services.len(),
                    if project.services.len() == 1 { "" } else { "s" },
                    project.start_order().join(", ")
                );
            } else {
                println!(
                    "compose file {} is not there yet: not checked",
                    compose.file.display()
                );
            }
        }
        Ok(())
    }
}
