//! `kicky-agent plan`: what a sync would change, changing nothing. Env keys by name, never values.

use std::path::Path;

use anyhow::Result;
use clap::Args;

use crate::{out, outln};

/// Print what a sync would change (env keys by name only) and change nothing.
#[derive(Debug, Args)]
pub struct PlanCmd {
    /// Print the plan as JSON.
    #[arg(long)]
    json: bool,
    /// Preview exactly this release (with `release.store`).
    #[arg(long, value_name = "ID")]
    release: Option<String>,
}

impl PlanCmd {
    pub fn run(self, config: &Path) -> Result<()> {
        let target = super::target(self.release.as_deref())?;
        let settings = super::load(config)?;
        let plan = super::block_on(crate::sync::plan::run(&settings, &target))??;
        if self.json {
            outln!("{}", serde_json::to_string_pretty(&plan)?);
        } else {
            out!("{plan}");
        }
        Ok(())
    }
}
