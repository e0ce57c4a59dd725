//! `kicky-agent validate`: check the config offline; 0 valid, 2 invalid.

use std::path::Path;

use anyhow::Result;
use clap::Args;

/// Check the agent config offline and exit 0 when valid, 2 when not.
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
        Ok(())
    }
}
