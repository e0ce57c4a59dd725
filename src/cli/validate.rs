//! `kicky-agent validate`: check the config and, when present, the compose file, offline;
//! 0 valid, 2 invalid.

use std::path::Path;

use anyhow::{Context, Result};
use clap::Args;

use crate::config;
use crate::error::input_error;
use crate::outln;

/// Check the agent config and, when present, the compose file offline; exit 0 when valid, 2 when
/// not.
#[derive(Debug, Args)]
pub struct ValidateCmd {}

impl ValidateCmd {
    pub fn run(self, path: &Path) -> Result<()> {
        // Every problem of the config and of the compose file, in one run.
        let (settings, mut problems) = super::block_on(config::check_effective(path))?
            .with_context(|| format!("invalid config {}", path.display()))?;
        config::warn_ignored_tags(&settings);
        if let Some(compose) = &settings.compose {
            if compose.file.exists() {
                if let Err(err) = crate::compose::load(&settings) {
                    problems.extend(problem_lines(&format!("{err:#}")));
                }
            }
        }
        if !problems.is_empty() {
            return Err(input_error(format!(
                "{} problem{}:\n  {}",
                problems.len(),
                if problems.len() == 1 { "" } else { "s" },
                problems.join("\n  ")
            )))
            .with_context(|| format!("invalid config {}", path.display()));
        }
        let files: Vec<String> = settings
            .sources
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        outln!("config is valid: {}", files.join(" + "));
        outln!(
            "project {} in {}",
            settings.project,
            settings.workdir.display()
        );
        super::print_origins(&settings);
        if let Some(env) = &settings.env {
            outln!(
                "env file {} (mode {:04o}) from {} parameter source{}",
                env.path.display(),
                env.mode,
                env.sources.len(),
                if env.sources.len() == 1 { "" } else { "s" }
            );
        }
        if let Some(compose) = &settings.compose {
            if compose.file.exists() {
                let project = crate::compose::load(&settings)?;
                outln!(
                    "compose file is valid: {} ({} service{}: {})",
                    compose.file.display(),
                    project.services.len(),
                    if project.services.len() == 1 { "" } else { "s" },
                    project.start_order().join(", ")
                );
            } else {
                outln!(
                    "compose file {} is not there yet: not checked",
                    compose.file.display()
                );
            }
        }
        Ok(())
    }
}

/// The problems of a compose file's error: its lines, without the "N problems:" heading.
fn problem_lines(message: &str) -> Vec<String> {
    let mut lines = message.lines();
    let first = lines.next().unwrap_or_default();
    let listed = first
        .split_once(' ')
        .is_some_and(|(n, rest)| n.parse::<usize>().is_ok() && rest == "problems:");
    if listed {
        lines.map(|l| l.trim().to_string()).collect()
    } else {
        vec![message.to_string()]
    }
}
