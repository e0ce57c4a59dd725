//! What a sync would change, by name only: env keys are listed, values never.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::aws::{self, ssm::ParameterStore, ssm::SsmStore};
use crate::config::{EnvSettings, Settings};
use crate::envfile;
use crate::sync::desired_env;

#[derive(Debug, Serialize)]
pub struct Plan {
    pub env: Option<EnvPlan>,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct EnvPlan {
    pub path: PathBuf,
    pub exists: bool,
    pub add: Vec<String>,
    pub change: Vec<String>,
    pub remove: Vec<String>,
    pub unchanged: usize,
    /// The file would be rewritten (new values, or the same values spelled differently).
    pub rewrite: bool,
    /// `(current, configured)` when only the mode differs or it differs too.
    pub mode: Option<(String, String)>,
}

impl Plan {
    pub fn changes_anything(&self) -> bool {
        self.env
            .as_ref()
            .is_some_and(|e| e.rewrite || e.mode.is_some())
    }
}

pub async fn run(settings: &Settings) -> Result<Plan> {
    let env = match &settings.env {
        Some(env) => {
            let config = aws::sdk_config(&settings.aws).await?;
            Some(plan_env(&SsmStore::new(&config), env).await?)
        }
        None => None,
    };
    Ok(Plan { env })
}

pub async fn plan_env(store: &impl ParameterStore, env: &EnvSettings) -> Result<EnvPlan> {
    let (text, _) = desired_env(store, env).await?;
    let no_lookup = |_: &str| None;
    let desired: BTreeMap<String, String> = envfile::parse(&text, &no_lookup)
        .context("the rendered env file does not read back")?
        .into_iter()
        .collect();
    let (exists, current_text, current_mode) = match std::fs::read_to_string(&env.path) {
        Ok(t) => {
            let mode = std::fs::metadata(&env.path)?.permissions().mode() & 0o7777;
            (true, t, Some(mode))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (false, String::new(), None),
        Err(e) => return Err(e).with_context(|| format!("failed to read {}", env.path.display())),
    };
    // A hand-edited file that no longer parses is planned as a full replacement.
    let current: BTreeMap<String, String> = envfile::parse(&current_text, &no_lookup)
        .map(|v| v.into_iter().collect())
        .unwrap_or_default();
    let mut plan = EnvPlan {
        path: env.path.clone(),
        exists,
        add: vec![],
        change: vec![],
        remove: vec![],
        unchanged: 0,
        rewrite: current_text != text,
        mode: current_mode
            .filter(|&m| m != env.mode)
            .map(|m| (format!("{m:04o}"), format!("{:04o}", env.mode))),
    };
    for (key, value) in &desired {
        match current.get(key) {
            None => plan.add.push(key.clone()),
            Some(v) if v != value => plan.change.push(key.clone()),
            Some(_) => plan.unchanged += 1,
        }
    }
    plan.remove = current
        .keys()
        .filter(|k| !desired.contains_key(*k))
        .cloned()
        .collect();
    Ok(plan)
}

impl std::fmt::Display for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Some(env) = &self.env else {
            return writeln!(f, "no env file configured: nothing to do");
        };
        let path = env.path.display();
        if !env.rewrite && env.mode.is_none() {
            return writeln!(
                f,
                "env file {path}: no change ({} variables)",
                env.unchanged
            );
        }
        if !env.exists {
            writeln!(f, "env file {path}: create")?;
        } else if env.rewrite {
            writeln!(f, "env file {path}: update")?;
        } else {
            writeln!(f, "env file {path}: mode only")?;
        }
        for (sign, keys) in [("+", &env.add), ("~", &env.change), ("-", &env.remove)] {
            for key in keys {
                writeln!(f, "  {sign} {key}")?;
            }
        }
        if env.rewrite && env.add.is_empty() && env.change.is_empty() && env.remove.is_empty() {
            writeln!(f, "  (same variables, rewritten in the agent's spelling)")?;
        }
        if let Some((from, to)) = &env.mode {
            writeln!(f, "  mode {from} -> {to}")?;
        }
        writeln!(f, "  {} unchanged", env.unchanged)
    }
}
