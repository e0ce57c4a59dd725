//! `kicky-agent resync`: ask the running daemon to sync now and print its progress and result;
//! with no daemon running, sync here (and say so). Exit status as `sync`.

use std::path::Path;

use anyhow::Result;
use clap::Args;

use crate::outln;

/// Ask the running daemon to converge now and print its progress; without one, sync here.
#[derive(Debug, Args)]
pub struct ResyncCmd {
    /// Give up waiting for the daemon's result after this long (the sync goes on): a duration
    /// such as 90s or 15m. `systemctl reload` runs `resync` with the unit's bound.
    #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
    timeout: std::time::Duration,
    /// Apply exactly this release (with `release.store`): what a Run Command wave runs.
    #[arg(long, value_name = "ID")]
    release: Option<String>,
}

impl ResyncCmd {
    pub fn run(self, config: &Path) -> Result<()> {
        let target = super::target(self.release.as_deref())?;
        let settings = super::load(config)?;
        let socket = settings.control_socket.clone();
        let answer = super::block_on(crate::daemon::control::resync(
            &socket,
            self.timeout,
            &target,
            |line| outln!("{line}"),
        ))??;
        match answer {
            Some(0) => Ok(()),
            Some(status) => {
                // The daemon already printed why; exit as `sync` would have.
                std::process::exit(i32::from(status));
            }
            None => {
                outln!(
                    "no kicky-agent daemon is running (no socket at {}): syncing here",
                    socket.display()
                );
                super::sync::SyncCmd {
                    release: self.release,
                }
                .run(config)
            }
        }
    }
}
