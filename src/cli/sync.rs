//! `kicky-agent sync`: converge once in the foreground and exit (0 converged, 1 failed).

use std::path::Path;

use anyhow::Result;
use clap::Args;

/// Converge once: read the parameters and write the env file, then exit.
#[derive(Debug, Args)]
pub struct SyncCmd {}

impl SyncCmd {
    pub fn run(self, config: &Path) -> Result<()> {
        let settings = super::load(config)?;
        let report = super::block_on(crate::sync::run(&settings))??;
        match report.env {
            Some(env) => println!(
                "env file {}: {} ({} variables)",
                env.path.display(),
                env.result,
                env.variables
            ),
            None => println!("nothing to do: the config has no env section"),
        }
        Ok(())
    }
}
