//! `kicky-agent run`: the daemon systemd starts (Type=notify). See `crate::daemon`.

use std::path::Path;

use anyhow::Result;
use clap::Args;

/// The daemon: converge, report ready to systemd, then watch and serve `resync`.
#[derive(Debug, Args)]
pub struct RunCmd {}

impl RunCmd {
    pub fn run(self, config: &Path) -> Result<()> {
        super::block_on(crate::daemon::run(config))?
    }
}
