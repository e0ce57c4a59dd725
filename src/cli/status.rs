//! `kicky-agent status`: the last sync, parameter versions and fetched files, from the state file.
//! Exit 1 when the last sync failed. Never a value: the state holds names, versions and hashes.

use std::path::Path;

use anyhow::{bail, Result};
use clap::Args;
use serde_json::json;

use crate::state::State;

/// Show the last sync, parameter versions and fetched files; exit 1 when the last sync failed.
#[derive(Debug, Args)]
pub struct StatusCmd {
    /// Print the status as JSON.
    #[arg(long)]
    json: bool,
}

impl StatusCmd {
    pub fn run(self, config: &Path) -> Result<()> {
        let settings = super::load(config)?;
        let path = State::path(&settings);
        let state = State::load(&path)?;
        if self.json {
            let value = json!({
                "project": settings.project,
                "state_file": path,
                "last_sync": state.last_sync,
                "parameters": state.parameters,
                "files": state.files,
            });
            println!("{}", serde_json::to_string_pretty(&value)?);
        } else {
            print_text(&settings.project, &path, &state);
        }
        match &state.last_sync {
            Some(last) if !last.ok => bail!("the last sync failed"),
            _ => Ok(()),
        }
    }
}

fn print_text(project: &str, path: &Path, state: &State) {
    println!("project {project} (state {})", path.display());
    match &state.last_sync {
        None => println!("last sync: never"),
        Some(s) if s.ok => println!("last sync: ok, {} to {}", s.started, s.finished),
        Some(s) => {
            println!("last sync: FAILED, {} to {}", s.started, s.finished);
            if let Some(error) = &s.error {
                println!("  {error}");
            }
        }
    }
    if !state.parameters.is_empty() {
        println!("parameters (as of the last good sync):");
        for (name, version) in &state.parameters {
            println!("  {name}  version {version}");
        }
    }
    if !state.files.is_empty() {
        println!("files:");
        for (path, f) in &state.files {
            println!("  {}  from {}", path.display(), f.source);
            println!(
                "    etag {}  version {}  sha256 {}  {} bytes",
                f.etag.as_deref().unwrap_or("-"),
                f.version_id.as_deref().unwrap_or("-"),
                f.sha256,
                f.size
            );
            println!("    fetched {}  checked {}", f.fetched_at, f.checked_at);
        }
    }
}
