//! The command line: global flags, one file per subcommand, each with `run`.
//! Only commands that work are listed; the contract's others (docs/contract.md) arrive with their
//! stages.

mod doctor;
mod iam_policy;
pub mod import;
mod plan;
mod release;
mod render;
mod resync;
mod run;
mod status;
mod sync;
mod validate;

use std::future::Future;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use crate::config::{self, defaults, Settings};
use crate::logging::LogFormat;
use crate::outln;

#[derive(Debug, Parser)]
#[command(
    name = "kicky-agent",
    version,
    about = "EC2 boot agent: SSM parameters into an env file, S3 files and a compose stack"
)]
pub struct Cli {
    /// The agent's config file; `agent.d/*.yaml` beside it is merged over it.
    #[arg(long, global = true, env = "KICKY_AGENT_CONFIG", default_value = defaults::CONFIG_PATH)]
    pub config: PathBuf,

    /// Log line format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// More log detail: -v debug, -vv trace, -vvv with the libraries' debug logs.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Run(run::RunCmd),
    Sync(sync::SyncCmd),
    Resync(resync::ResyncCmd),
    Plan(plan::PlanCmd),
    Render(render::RenderCmd),
    Status(status::StatusCmd),
    Validate(validate::ValidateCmd),
    IamPolicy(iam_policy::IamPolicyCmd),
    Doctor(doctor::DoctorCmd),
    Release(release::ReleaseCmd),
    Import(import::ImportCmd),
}

impl Cli {
    pub fn run(self) -> Result<()> {
        match self.command {
            Command::Run(cmd) => cmd.run(&self.config),
            Command::Sync(cmd) => cmd.run(&self.config),
            Command::Resync(cmd) => cmd.run(&self.config),
            Command::Plan(cmd) => cmd.run(&self.config),
            Command::Render(cmd) => cmd.run(&self.config),
            Command::Status(cmd) => cmd.run(&self.config),
            Command::Validate(cmd) => cmd.run(&self.config),
            Command::IamPolicy(cmd) => cmd.run(&self.config),
            Command::Doctor(cmd) => cmd.run(&self.config),
            Command::Release(cmd) => cmd.run(&self.config),
            Command::Import(cmd) => cmd.run(&self.config),
        }
    }
}

/// The config as the daemon reads it: the files, then the launch template's overrides.
/// The effective config; the values of the env file on disk are learned by the redactor, so
/// that a command that fetches nothing masks them too.
fn load(path: &std::path::Path) -> Result<Settings> {
    let settings = block_on(config::load_effective(path))?
        .with_context(|| format!("invalid config {}", path.display()))?;
    config::warn_ignored_tags(&settings);
    crate::compose::learn_env_file(&settings);
    Ok(settings)
}

/// `--release ID`, checked: what `sync`, `resync` and `plan` apply or preview.
/// An empty id is no id: the resync document passes `--release '{{ release }}'`, empty unless a
/// wave names one.
fn target(release: Option<&str>) -> Result<crate::sync::Target> {
    match release {
        None | Some("") => Ok(crate::sync::Target::Configured),
        Some(id) => crate::release::ReleaseId::parse(id)
            .map(crate::sync::Target::Release)
            .map_err(crate::error::input_error),
    }
}

/// Which layer (a file, `user data`, a tag) set each key of the config.
fn print_origins(settings: &Settings) {
    outln!("config (where each value came from):");
    for (key, layer) in &settings.origins {
        outln!("  {key}: {}", layer.display());
    }
    if !settings.ignored_tags.is_empty() {
        outln!("ignored (not applied):");
        for ignored in &settings.ignored_tags {
            outln!("  {ignored}");
        }
    }
}

/// Runs a future on a single-threaded runtime: the agent's work is I/O-bound and a small runtime
/// keeps its memory low.
fn block_on<F: Future>(future: F) -> Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    Ok(runtime.block_on(future))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn an_empty_release_is_the_configured_one() {
        use crate::sync::Target;
        assert_eq!(target(None).unwrap(), Target::Configured);
        assert_eq!(target(Some("")).unwrap(), Target::Configured);
        let id = "20261207T163000000Z-3f9a1c";
        assert!(matches!(target(Some(id)).unwrap(), Target::Release(_)));
        let err = target(Some("x")).unwrap_err();
        assert_eq!(
            crate::error::exit_status(&err),
            crate::error::EXIT_BAD_INPUT
        );
    }
}
