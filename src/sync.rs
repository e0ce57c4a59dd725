//! One convergence pass: what `sync` does, and what `plan` previews without changing anything.
//! For now the pass writes the env file; files, images and containers join it in later stages.

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::atomic::{self, Written};
use crate::aws::{self, ssm::ParameterStore, ssm::SsmStore};
use crate::config::{EnvSettings, Settings};
use crate::envfile;
use crate::error::input_error;
use crate::params;

/// What a sync did.
#[derive(Debug, Serialize)]
pub struct SyncReport {
    pub env: Option<EnvReport>,
}

#[derive(Debug, Serialize)]
pub struct EnvReport {
    pub path: PathBuf,
    pub variables: usize,
    pub result: &'static str,
}

/// Converges once.
pub async fn run(settings: &Settings) -> Result<SyncReport> {
    let env = match &settings.env {
        Some(env) => {
            let config = aws::sdk_config(&settings.aws).await?;
            Some(write_env(&SsmStore::new(&config), env).await?)
        }
        None => None,
    };
    Ok(SyncReport { env })
}

/// The env file's new content, rendered from Parameter Store. Nothing is written.
pub async fn desired_env(
    store: &impl ParameterStore,
    env: &EnvSettings,
) -> Result<(String, usize)> {
    let resolved = params::resolve(store, &env.sources).await?;
    let text = envfile::render(&resolved.vars)
        .map_err(|e| input_error(format!("cannot write {}: {e}", env.path.display())))?;
    Ok((text, resolved.vars.len()))
}

/// Reads every parameter, then replaces the env file atomically if its content changed.
/// Any failure before the rename leaves the previous file exactly as it was.
pub async fn write_env(store: &impl ParameterStore, env: &EnvSettings) -> Result<EnvReport> {
    let (text, variables) = desired_env(store, env).await?;
    let written = atomic::write_if_changed(&env.path, text.as_bytes(), env.mode)
        .with_context(|| format!("failed to write the env file {}", env.path.display()))?;
    let result = match written {
        Written::Unchanged => "unchanged",
        Written::ModeFixed => "mode corrected",
        Written::Replaced => "written",
    };
    tracing::info!(path = %env.path.display(), variables, result, "env file");
    Ok(EnvReport {
        path: env.path.clone(),
        variables,
        result,
    })
}
