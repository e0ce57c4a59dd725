//! `kicky-agent run`: the daemon systemd starts (Type=notify). See `crate::daemon`.

use std::path::Path;

use anyhow::{Context, Result};
use clap::Args;
use tokio::signal::unix::{signal, SignalKind};

/// The daemon: converge, report ready to systemd, then watch and serve `resync`.
#[derive(Debug, Args)]
pub struct RunCmd {}

impl RunCmd {
    pub fn run(self, config: &Path) -> Result<()> {
        super::block_on(async {
            let mut term = signal(SignalKind::terminate()).context("failed to catch SIGTERM")?;
            let mut int = signal(SignalKind::interrupt()).context("failed to catch SIGINT")?;
            let shutdown = async move {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            };
            // The daemon's tasks are local to its one thread.
            tokio::task::LocalSet::new()
                .run_until(crate::daemon::run(config, shutdown))
                .await
        })?
    }
}
