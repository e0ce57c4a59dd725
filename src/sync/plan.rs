//! What a sync would change, by name only: env keys are listed, values never; files by path, from
//! a HEAD of their object (no body is transferred).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::Serialize;

use super::desired_env;
use super::files::{self, Change};
use super::state::State;
use crate::aws::{self, s3::ObjectStore, s3::S3Store, ssm::ParameterStore, ssm::SsmStore};
use crate::config::{EnvSettings, Settings};
use crate::engine::{self, converge::EnginePlan};
use crate::envfile;
use crate::redact::Secret;
use crate::release::Manifest;

#[derive(Debug, Serialize)]
pub struct Plan {
    pub env: Option<EnvPlan>,
    pub files: Vec<FilePlan>,
    /// Planned from the compose file the sync would run (the one it would fetch, else the one on
    /// disk), interpolated with the env file it would write and judged as the sync judges it.
    pub containers: Option<EnginePlan>,
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
    /// `(current, configured)` when the mode differs.
    pub mode: Option<(String, String)>,
    /// The content a sync would write (never printed).
    #[serde(skip)]
    pub rendered: Secret,
    /// The variables of `env_file: false` sources, for the compose file's `secrets:` (never
    /// printed).
    #[serde(skip)]
    pub secret_only: Vec<(String, Secret)>,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct FilePlan {
    pub path: PathBuf,
    pub source: String,
    pub change: Change,
}

pub async fn run(settings: &Settings, target: &super::Target) -> Result<Plan> {
    let config = aws::sdk_config(&settings.aws).await?;
    let s3 = S3Store::new(&config, &settings.aws);
    let chosen = super::choose(settings, &s3, target).await?;
    let release = chosen.as_ref().map(|(manifest, _)| manifest);
    let settings = &*super::pinned(settings, release)?;
    run_with(settings, &SsmStore::new(&config), &s3, release).await
}

/// The plan, with the inputs pinned by `release` (`None`: the latest), `settings` as
/// [`super::pinned`] made them.
pub async fn run_with(
    settings: &Settings,
    ssm: &impl ParameterStore,
    s3: &impl ObjectStore,
    release: Option<&Manifest>,
) -> Result<Plan> {
    let state = State::load(&State::path(settings))?;
    let env = async {
        match &settings.env {
            Some(env) => plan_env(ssm, env, release).await.map(Some),
            None => Ok(None),
        }
    };
    let files = futures::future::try_join_all(settings.files.iter().map(|file| async {
        let (change, _) = files::plan(s3, file, state.files.get(&file.path)).await?;
        Ok::<_, anyhow::Error>(FilePlan {
            path: file.path.clone(),
            source: file.source.to_string(),
            change,
        })
    }));
    let (env, files) = futures::try_join!(env, files)?;
    let containers = match &settings.compose {
        Some(compose) => {
            // The compose file as the sync would judge it: the one it would fetch (read here in
            // memory), interpolated with the env file it would write; nothing is written.
            let fetched = fetched_compose(settings, s3, &files).await?;
            let pending = |path: &std::path::Path| -> Option<Result<String>> {
                let (at, text) = fetched.as_ref()?;
                (at == path).then(|| Ok(text.clone()))
            };
            let env_text = env.as_ref().map(|e| e.rendered.expose());
            match super::judge(settings, env_text, &pending, release)? {
                Some(judged) => Some(
                    plan_containers(settings, compose, &state, env.as_ref(), &files, judged)
                        .await?,
                ),
                None => None,
            }
        }
        None => None,
    };
    Ok(Plan {
        env,
        files,
        containers,
    })
}

/// The compose file's new text, when the sync would fetch it (it is one of `files` and changes):
/// its path and content. Otherwise the sync reads it from the disk, and so does the plan.
async fn fetched_compose(
    settings: &Settings,
    s3: &impl ObjectStore,
    plans: &[FilePlan],
) -> Result<Option<(std::path::PathBuf, String)>> {
    let Some(compose) = &settings.compose else {
        return Ok(None);
    };
    let Some(file) = settings.files.iter().find(|f| f.path == compose.file) else {
        return Ok(None);
    };
    let unchanged = plans
        .iter()
        .any(|p| p.path == file.path && p.change == Change::Unchanged);
    if unchanged {
        return Ok(None);
    }
    let (bytes, _) = aws::s3::read_small(
        s3,
        &file.source,
        file.expected_owner.as_deref(),
        file.version_id.as_deref(),
        crate::atomic::MAX_TEXT as usize,
    )
    .await?
    .with_context(|| format!("{} is gone", file.source))?;
    let text = String::from_utf8(bytes).with_context(|| format!("{} is not text", file.source))?;
    Ok(Some((file.path.clone(), text)))
}

/// What the engine would do with the judged project.
async fn plan_containers(
    settings: &Settings,
    compose: &crate::config::ComposeSettings,
    state: &State,
    env: Option<&EnvPlan>,
    files: &[FilePlan],
    judged: super::Judged,
) -> Result<EnginePlan> {
    let (mut project, variables) = (judged.project, judged.variables);
    // The secret files' names, as the sync would make them (nothing is written).
    let secret_only = env.map_or(&[][..], |e| &e.secret_only[..]);
    let lookup = super::secret_files::variables(secret_only, &variables);
    super::secret_files::prepare(
        &mut project,
        &super::secret_files::project_dir(&compose.secrets_dir, &settings.project),
        &super::secret_files::key_if_any(&settings.state_dir),
        &lookup,
        None,
    )?;
    // What the files will hold: a file about to be fetched counts as changed.
    let mut agent_files = super::agent_files(
        settings,
        &state.files,
        env.map(|e| engine::spec::sha256_hex(e.rendered.expose().as_bytes()))
            .as_deref(),
    );
    for file in files {
        if matches!(file.change, Change::Create | Change::Update) {
            agent_files.insert(file.path.clone(), "changed".to_string());
        }
    }
    let engine = engine::docker::connect(std::time::Duration::from_secs(5)).await?;
    let mut plan =
        engine::converge::plan(&engine, &project, compose, &agent_files, &state.pulled_at).await?;
    // An image pulled through a mirror is named as the compose file knows it, and the mirror.
    let mirrors = crate::compose::mirror::Mirrors::of(&settings.registries);
    for image in &mut plan.pull {
        *image = mirrors.describe(image);
    }
    Ok(plan)
}

pub async fn plan_env(
    store: &impl ParameterStore,
    env: &EnvSettings,
    release: Option<&Manifest>,
) -> Result<EnvPlan> {
    let desired_env = desired_env(store, env, release).await?;
    let text = desired_env.text;
    let no_lookup = |_: &str| None;
    let desired: BTreeMap<String, String> = envfile::parse(&text, &no_lookup)
        .context("the rendered env file does not read back")?
        .into_iter()
        .collect();
    // What is there now, never through a link: a link or a FIFO in its place is no env file.
    let current = crate::atomic::open_regular(&env.path)
        .with_context(|| format!("failed to open {}", env.path.display()))?;
    let (exists, current_text, current_mode) = match current {
        Some(file) => {
            let meta = file
                .metadata()
                .with_context(|| format!("failed to stat {}", env.path.display()))?;
            let text = crate::atomic::text_of(&file, &env.path, crate::atomic::MAX_TEXT)?;
            (true, text, Some(meta.permissions().mode() & 0o7777))
        }
        None => (false, String::new(), None),
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
        rendered: Secret::new(text.clone()),
        secret_only: desired_env.secret_only,
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
        if self.env.is_none() && self.files.is_empty() && self.containers.is_none() {
            return writeln!(
                f,
                "no env file, files or compose project configured: nothing to do"
            );
        }
        if let Some(env) = &self.env {
            env.fmt(f)?;
        }
        for file in &self.files {
            writeln!(
                f,
                "file {}: {} (from {})",
                file.path.display(),
                file.change.as_str(),
                file.source
            )?;
        }
        if let Some(containers) = &self.containers {
            for image in &containers.pull {
                writeln!(f, "image {image}: pull")?;
            }
            for service in &containers.interrupted {
                writeln!(
                    f,
                    "service {service}: its last switch was cut short; the next sync finishes or undoes it first"
                )?;
            }
            for plan in &containers.services {
                writeln!(
                    f,
                    "container {} (service {}): {}",
                    plan.container, plan.service, plan.action
                )?;
            }
            for name in &containers.remove {
                writeln!(
                    f,
                    "container {name}: remove (its service left the compose file)"
                )?;
            }
        }
        Ok(())
    }
}

impl std::fmt::Display for EnvPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = self.path.display();
        if !self.rewrite && self.mode.is_none() {
            return writeln!(
                f,
                "env file {path}: no change ({} variables)",
                self.unchanged
            );
        }
        let what = match (self.exists, self.rewrite) {
            (false, _) => "create",
            (true, true) => "update",
            (true, false) => "mode only",
        };
        writeln!(f, "env file {path}: {what}")?;
        for (sign, keys) in [("+", &self.add), ("~", &self.change), ("-", &self.remove)] {
            for key in keys {
                writeln!(f, "  {sign} {key}")?;
            }
        }
        if self.rewrite && self.add.is_empty() && self.change.is_empty() && self.remove.is_empty() {
            writeln!(f, "  (same variables, rewritten in the agent's spelling)")?;
        }
        if let Some((from, to)) = &self.mode {
            writeln!(f, "  mode {from} -> {to}")?;
        }
        writeln!(f, "  {} unchanged", self.unchanged)
    }
}
