//! `kicky-agent import FILE`: the `agent.yaml` a user-data script of the seed's shape (`aws ssm
//! get-parameter ... > .env`, `aws s3 cp`, `docker login`, `cd DIR && docker-compose up -d`) comes
//! to, on stdout, with a comment for each line it could not translate. Exit 2 when the file
//! cannot be read.
//!
//! Pure but for reading the file: `script` reads the shell (and `commands` the arguments of its
//! programs), [`translate()`] says what the config makes of it, [`render()`] writes it; the
//! output is checked by the config's own loader (tests).

mod commands;
mod mask;
mod model;
mod render;
mod script;
mod translate;

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;

use crate::error::input_error;

pub use model::{Auth, Compose, File, Import, Note, NoteKind, Parameter, Registry, Username};
pub use render::render;
pub use translate::translate;

/// Print the agent.yaml equivalent to a user-data shell script, with a comment for each line it
/// could not translate (secrets masked); exit 2 when the file cannot be read.
///
/// The file may be gzip-compressed or a cloud-init multipart document (its first part that starts
/// with `#!` is read). Shell variables the script does not set are kept as `${NAME}`: replace
/// them, then check the result with `kicky-agent validate`.
#[derive(Debug, Args)]
pub struct ImportCmd {
    /// The user-data script.
    file: PathBuf,
}

impl ImportCmd {
    pub fn run(self, _config: &Path) -> Result<()> {
        let script = read_script(&self.file)?;
        let name = self.file.file_name().map_or_else(
            || self.file.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let yaml = render(&translate(&script), &name)?;
        // The script's secrets are masked where its lines are quoted (`mask`).
        crate::redact::to_stdout(&yaml);
        Ok(())
    }
}

/// The shell script in the file at `path`; an input error naming it when it cannot be read or
/// holds no shell script.
fn read_script(path: &Path) -> Result<String> {
    let raw = std::fs::read(path)
        .map_err(|e| input_error(format!("cannot read {}: {e}", path.display())))?;
    let script = crate::instance::user_data::shell_script(&raw)
        .map_err(|e| input_error(format!("cannot read {}: {e:#}", path.display())))?;
    let Some(script) = script else {
        return Err(input_error(format!(
            "{}: a multipart document without a shell script part (one that starts with #!)",
            path.display()
        )));
    };
    let first = script
        .trim_start()
        .lines()
        .next()
        .unwrap_or_default()
        .trim_end();
    if first == "#cloud-config" || first == crate::instance::user_data::MARKER {
        return Err(input_error(format!(
            "{}: a {first} document, not a shell script: import reads the user-data script the agent replaces",
            path.display()
        )));
    }
    Ok(script)
}

#[cfg(test)]
mod tests;
