//! One convergence pass: what `sync` does, and what `plan` previews without changing anything.
//!
//! Everything is fetched first, concurrently: the parameters (rendered into the env file's new
//! content) and the S3 files (streamed into temp files beside their targets). Only when all of it
//! is in hand is anything committed, so a failure anywhere leaves every file as it was. The
//! outcome, good or bad, is recorded in the state file for `status`: the pass collects what it
//! changed ([`state::Changes`]) and [`State::record`] alone writes it into the state.

pub mod files;
pub mod fleet;
pub mod leftovers;
pub mod lock;
pub mod metrics;
pub mod params;
pub mod pin;
pub mod plan;
pub mod release;
pub mod report;
pub mod secret_files;
pub mod state;

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::atomic::{self, Written};
use crate::aws::{self, s3::ObjectStore, s3::S3Store, ssm::ParameterStore, ssm::SsmStore};
use crate::config::RegistryAuth;
use crate::config::{EnvSettings, Settings};
use crate::engine::{self, api::Engine, converge::EngineReport, registry::Registries};
use crate::envfile;
use crate::error::input_error;
use crate::release::{Manifest, ReleaseId};
use files::Change;
use release::{FailedRelease, Fingerprint, Snapshot};
use state::{now, Changes, Ended, Outcome, RunningRelease, State, SyncRecord};

/// What a sync did.
#[derive(Debug, Serialize)]
pub struct SyncReport {
    /// Set when the desired release is one that failed before and is held: the sync wrote
    /// nothing and checked the last good release still runs. Says which release and why.
    pub held: Option<String>,
    pub env: Option<EnvReport>,
    pub files: Vec<FileReport>,
    pub containers: Option<EngineReport>,
}

#[derive(Debug, Serialize)]
pub struct EnvReport {
    pub path: PathBuf,
    pub variables: usize,
    pub result: &'static str,
}

#[derive(Debug, Serialize)]
pub struct FileReport {
    pub path: PathBuf,
    pub source: String,
    pub change: Change,
}

/// Which release a sync applies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Target {
    /// With `release.store`, the promoted release; without, the latest of every source.
    #[default]
    Configured,
    /// Exactly this release, however the sources and the pointer moved since.
    Release(ReleaseId),
}

/// Converges once with the real services, and records the outcome in the state file.
pub async fn run(settings: &Settings, target: &Target) -> Result<SyncReport> {
    let config = aws::sdk_config(&settings.aws).await?;
    // The launch hook (if any), looked up while the sync runs, gets heartbeats, then CONTINUE or
    // ABANDON.
    let discovery = crate::lifecycle::discover(settings, &config);
    let clients = Clients::new(settings, &config);
    let sync = run_with(settings, &clients, Held::Retry, target);
    let (result, sent) = crate::lifecycle::around_sync(discovery, sync).await;
    if let Some(record) = sent {
        state::record_lifecycle(settings, record).await;
    }
    result
}

/// What to do with a desired release that failed before and has not changed since.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// Apply it again: an operator asked (`kicky-agent sync`, `resync`).
    Retry,
    /// Keep serving the last good release until it changes, or until `after` (doubled for each
    /// failed try, a day at most) has passed since it failed: what the daemon does on its own.
    Hold { after: std::time::Duration },
}

/// The clients a sync talks through. The daemon keeps one set for its life (one credential
/// cache, one HTTPS pool, one engine connection). Generic over the traits, so that a pass can be
/// driven with fakes (see the tests); AWS and Docker otherwise.
pub struct Clients<P = SsmStore, O = S3Store, E = engine::docker::DockerEngine> {
    pub ssm: P,
    pub s3: O,
    pub ecr: Option<aws_sdk_ecr::Client>,
    /// `None`: connected by the sync itself when the config has a compose project.
    pub engine: Option<E>,
}

/// An engine a sync connects to by itself when it was given none (see [`Clients::engine`]).
pub trait Connect: Engine + Sized {
    fn open() -> impl std::future::Future<Output = Result<Self>> + Send;
}

impl Connect for engine::docker::DockerEngine {
    async fn open() -> Result<Self> {
        engine::docker::connect(engine::docker::ENGINE_WAIT).await
    }
}

/// The daemon's syncs run behind the drain's fence; one that connects by itself, behind a fence
/// never shut.
impl<E: Connect> Connect for engine::fence::Fenced<E> {
    async fn open() -> Result<Self> {
        let engine = E::open().await?;
        Ok(engine::fence::Fenced::new(
            engine,
            engine::fence::Fence::open(),
        ))
    }
}

/// The engine of one pass: the one the clients hold, or one the pass connected to.
enum EngineOf<'a, E> {
    Given(&'a E),
    Connected(E),
}

impl<E> EngineOf<'_, E> {
    fn get(&self) -> &E {
        match self {
            EngineOf::Given(engine) => engine,
            EngineOf::Connected(engine) => engine,
        }
    }
}

impl Clients {
    pub fn new(settings: &Settings, config: &aws_config::SdkConfig) -> Clients {
        let uses_ecr = settings
            .registries
            .iter()
            .any(|r| r.auth == RegistryAuth::Ecr);
        Clients {
            ssm: SsmStore::new(config),
            s3: S3Store::new(config, &settings.aws),
            ecr: uses_ecr.then(|| aws_sdk_ecr::Client::new(config)),
            engine: None,
        }
    }
}

/// One sync, holding the project's lock, recorded in the state file (and the metrics).
pub async fn run_with<P: ParameterStore, O: ObjectStore, E: Connect>(
    settings: &Settings,
    clients: &Clients<P, O, E>,
    held: Held,
    target: &Target,
) -> Result<SyncReport> {
    let locked = lock::acquire(
        &settings.state_dir,
        &settings.project,
        settings.lock_timeout,
    )
    .await?;
    leftovers::clean(settings);
    let state_path = State::path(settings);
    let mut state = State::load(&state_path)?;
    let started = now();
    let clock = std::time::Instant::now();
    let mut changes = Changes::default();
    let origin_ms = state::unix_ms();
    let converging = converge(settings, clients, held, target, &state, &mut changes);
    let (result, mut record) = crate::timeline::recording(converging).await;
    state.timeline = std::mem::take(&mut record.spans);
    state.failure_logs = record.logs.clone();
    state.timeline_origin_ms = origin_ms;
    let outcome = Outcome {
        changes,
        took: clock.elapsed(),
        finished_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        ended: ended(&result),
        sync: SyncRecord {
            started,
            finished: now(),
            ok: result.is_ok(),
            error: result
                .as_ref()
                .err()
                .map(|e| crate::engine::api::printable(&format!("{e:#}"), 4000)),
        },
    };
    let error = outcome.sync.error.clone();
    state.record(outcome);
    if let Some(error) = &error {
        if let Some(mark) = report::send(settings, &clients.s3, &state, error, &record).await {
            state.last_report = Some(mark);
        }
    }
    state.save(&state_path, &locked)?;
    metrics::refresh(settings, clients.engine.as_ref()).await;
    result
}

/// How a pass ended, as the state counts it.
fn ended(result: &Result<SyncReport>) -> Ended {
    match result {
        Ok(report) => Ended::Ok {
            held: report.held.is_some(),
            pulls: report
                .containers
                .as_ref()
                .map_or(0, |c| c.pulled.len() as u64),
        },
        Err(err) => Ended::Failed {
            rolled_back: err
                .downcast_ref::<crate::engine::converge::RolledBack>()
                .is_some(),
        },
    }
}

/// The release a sync applies (`None`: the latest of every source), and the promoted one as seen
/// now (when it could be read).
pub async fn choose(
    settings: &Settings,
    s3: &impl aws::s3::ObjectStore,
    target: &Target,
) -> Result<Option<(Manifest, Option<ReleaseId>)>> {
    let Some(at) = &settings.release else {
        return match target {
            Target::Configured => Ok(None),
            Target::Release(id) => Err(input_error(format!(
                "--release {id}: the config has no release.store"
            ))),
        };
    };
    let store = crate::aws::releases::Store { s3, at };
    crate::progress::phase("reading the release");
    let pinned = at.pin.as_deref().map(ReleaseId::parse).transpose();
    let pinned = pinned.map_err(|why| input_error(format!("release.pin: {why}")))?;
    let id = match (target, &pinned) {
        (Target::Configured, None) => {
            let (pointer, manifest) = store.promoted_manifest().await?;
            return Ok(Some((manifest, Some(pointer.release))));
        }
        // `--release`, or the release the config pins (the launch template's).
        (Target::Release(id), _) | (Target::Configured, Some(id)) => id,
    };
    let (manifest, promoted) = futures::join!(store.manifest(id), store.promoted());
    let promoted = promoted
        .map_err(|err| tracing::warn!("{err:#}"))
        .ok()
        .flatten()
        .map(|p| p.release);
    Ok(Some((manifest?, promoted)))
}

async fn converge<P: ParameterStore, O: ObjectStore, E: Connect>(
    settings: &Settings,
    clients: &Clients<P, O, E>,
    held: Held,
    target: &Target,
    state: &State,
    changes: &mut Changes,
) -> Result<SyncReport> {
    let chosen = choose(settings, &clients.s3, target).await?;
    let release = chosen.as_ref().map(|(manifest, _)| manifest);
    if let Some(release) = release {
        crate::progress::step(format!("release {}", release.id));
    }
    let settings = &*pinned(settings, release)?;
    let (env, staged, engine) = fetch(settings, clients, state, release).await?;
    let pass = Pass {
        settings,
        clients,
        engine: engine.as_ref().map(EngineOf::get),
        state,
    };
    let attempt = Fingerprint {
        parameters: env.as_ref().map(|e| e.versions.clone()).unwrap_or_default(),
        objects: staged
            .iter()
            .map(|s| {
                let r = s.record();
                let id = Fingerprint::object_id(r.etag.as_deref(), r.version_id.as_deref());
                (s.path.clone(), id)
            })
            .collect(),
        release: release.map(|r| r.id.clone()),
    };
    if let (Held::Hold { after }, Some(failed)) = (held, &state.failed) {
        if failed.fingerprint == attempt && !failed.due(after, std::time::SystemTime::now()) {
            let why = failed.describe(state.last_good_at.as_deref());
            crate::progress::warn(format!("not applying it again: {why}"));
            // Nothing fetched is written: the engine is checked against the last good release
            // on disk (after a restart, it may need starting).
            drop(staged);
            let on_disk = env_on_disk(settings, state)?;
            let mut report = apply(&pass, changes, on_disk, Vec::new(), None).await?;
            report.held = Some(why);
            return Ok(report);
        }
    }
    // A file that is not the content its release pinned is refused like any bad input: held.
    let checked = release.map_or(Ok(()), |release| {
        staged
            .iter()
            .try_for_each(|file| release.check_file(&file.source, &file.record().sha256))
    });
    let result = match checked {
        Ok(()) => apply_release(&pass, changes, env, staged, release).await,
        Err(err) => Err(err),
    };
    match &result {
        Ok(_) => {
            changes.release = Some(release.map(|r| RunningRelease {
                id: r.id.clone(),
                images: r.images.clone(),
            }));
        }
        Err(err) => changes.failed = to_hold(state, changes, attempt, err),
    }
    // The promote is acted on once applied, or when an operator chose another release (a wave):
    // a promoted release that failed is tried again after the backoff, as any other.
    if let Some((_, Some(promoted))) = &chosen {
        if result.is_ok() || matches!(target, Target::Release(_)) {
            changes.promoted_seen = Some(promoted.clone());
        }
    }
    result
}

/// What every step of a pass reads: the config (pinned by the release applied, if any), the
/// clients, the engine, and the state as it was loaded (the pass's changes are apart, in
/// [`Changes`]).
struct Pass<'a, P, O, E> {
    settings: &'a Settings,
    clients: &'a Clients<P, O, E>,
    engine: Option<&'a E>,
    state: &'a State,
}

/// Fetches the parameters (rendered into the env file's content) and the files (staged beside
/// their targets), concurrently. Meanwhile, the engine: a switch an earlier sync left half done
/// (the agent was killed) is set right first, whatever happens to the fetching, so the last good
/// containers serve.
async fn fetch<'a, P: ParameterStore, O: ObjectStore, E: Connect>(
    settings: &Settings,
    clients: &'a Clients<P, O, E>,
    state: &State,
    release: Option<&Manifest>,
) -> Result<(
    Option<DesiredEnv>,
    Vec<files::Staged>,
    Option<EngineOf<'a, E>>,
)> {
    let env = async {
        match &settings.env {
            Some(env) => desired_env(&clients.ssm, env, release).await.map(Some),
            None => Ok(None),
        }
    };
    crate::progress::phase("fetching parameters and files");
    let staged = files::stage_all(&clients.s3, &settings.files, &state.files);
    let engine = async {
        let Some(compose) = &settings.compose else {
            return Ok(None);
        };
        let engine = match &clients.engine {
            Some(engine) => EngineOf::Given(engine),
            None => EngineOf::Connected(E::open().await?),
        };
        engine::converge::recover_interrupted(
            engine.get(),
            &settings.project,
            compose.healthy_timeout,
        )
        .await?;
        Ok::<_, anyhow::Error>(Some(engine))
    };
    let (env, staged, engine) = futures::join!(env, staged, engine);
    Ok((env?, staged?, engine?))
}

/// Applies a new release, keeping what it replaces until it is healthy: the last good release.
/// Once a sync has succeeded, the disk holds the last good release (a failed sync puts it back),
/// also after a failed sync: a second bad release in a row is undone like the first.
async fn apply_release<P: ParameterStore, O: ObjectStore, E: Engine>(
    pass: &Pass<'_, P, O, E>,
    changes: &mut Changes,
    env: Option<DesiredEnv>,
    staged: Vec<files::Staged>,
    release: Option<&Manifest>,
) -> Result<SyncReport> {
    let (settings, state) = (pass.settings, pass.state);
    let project = judge_release(settings, env.as_ref(), &staged, release)?;
    let last_good =
        state.last_sync.as_ref().is_some_and(|s| s.ok) || state.counters.last_success_unix > 0;
    let mut replaced: Vec<PathBuf> = staged
        .iter()
        .filter(|s| s.replaces())
        .map(|s| s.path.clone())
        .collect();
    if let (Some(env), Some(desired)) = (&settings.env, &env) {
        if !atomic::holds(&env.path, desired.text.as_bytes())? {
            replaced.push(env.path.clone());
        }
    }
    let snapshot = match (last_good, replaced.is_empty()) {
        (true, false) => Some(Snapshot::take(&settings.state_dir, &replaced)?),
        _ => None,
    };
    let err = match apply(pass, changes, env, staged, project).await {
        Ok(report) => return Ok(report),
        Err(err) => err,
    };
    let Some(snapshot) = snapshot else {
        return Err(err);
    };
    // The last good files are put back: so are their records.
    (changes.files, changes.parameters) = (None, None);
    Err(match snapshot.restore() {
        Ok(paths) => {
            let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
            crate::progress::warn(format!(
                "restored the last good release: {}",
                names.join(", ")
            ));
            err.context(format!(
                "the last good env file and files were restored ({})",
                names.join(", ")
            ))
        }
        Err(restore) => err.context(format!(
            "restoring the last good files failed too: {restore:#}"
        )),
    })
}

/// Loads the compose project a release would run, as it will be once written: the fetched
/// compose file (or the one on disk), interpolated with the env file about to be written, its
/// `env_file`s as they will be. Nothing is written yet, so a release the agent refuses (bad
/// input, such as what `compose.policy` does not allow: exit 2) leaves every file and container
/// as it was. With a release manifest, the compose file must be the one it pinned, and every
/// image runs by the digest it pinned. `None`: no compose file (yet).
fn judge_release(
    settings: &Settings,
    env: Option<&DesiredEnv>,
    staged: &[files::Staged],
    release: Option<&Manifest>,
) -> Result<Option<Judged>> {
    let fetched = |path: &std::path::Path| format!("failed to read the new {}", path.display());
    let pending = |path: &std::path::Path| -> Option<Result<String>> {
        let bytes = staged.iter().find(|s| s.path == path)?.pending()?;
        Some(
            bytes
                .and_then(|b| {
                    String::from_utf8(b)
                        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
                })
                .with_context(|| fetched(path)),
        )
    };
    judge(settings, env.map(|e| e.text.as_str()), &pending, release)
}

/// The compose project a release runs, judged: read with `env_text` and what `pending` holds in
/// place of the disk's files (the sync: its staged files; `plan`: the bodies it fetched), the
/// compose file checked against the release's pin and its images pinned to their digests. What
/// the sync applies and what `plan` previews, by the same code.
pub(crate) fn judge(
    settings: &Settings,
    env_text: Option<&str>,
    pending: &dyn Fn(&std::path::Path) -> Option<Result<String>>,
    release: Option<&Manifest>,
) -> Result<Option<Judged>> {
    let Some(loaded) = load_project(settings, env_text, pending)? else {
        return Ok(None);
    };
    let mut project = loaded.project;
    if let Some(release) = release {
        release.check_compose(&loaded.text)?;
        release.pin_images(&mut project)?;
    }
    Ok(Some(Judged {
        project,
        variables: loaded.variables,
    }))
}

/// `settings` as a release reads them: every file at the version it pins (`None`: as they are).
pub fn pinned<'a>(
    settings: &'a Settings,
    release: Option<&Manifest>,
) -> Result<std::borrow::Cow<'a, Settings>> {
    Ok(match release {
        Some(manifest) => std::borrow::Cow::Owned(manifest.pin_settings(settings)?),
        None => std::borrow::Cow::Borrowed(settings),
    })
}

/// A release's compose project, as it will run, with the variables of the env file it is
/// interpolated with: read once per sync, from the env file about to be written (or, for a held
/// release, the last good one on disk), and used again for the `secrets:` files.
pub(crate) struct Judged {
    pub project: crate::compose::Project,
    pub variables: indexmap::IndexMap<String, String>,
}

/// What [`load_project`] reads.
struct Loaded {
    project: crate::compose::Project,
    /// The compose file's text.
    text: String,
    /// The env file's variables, as the compose file is interpolated with them.
    variables: indexmap::IndexMap<String, String>,
}

/// The compose project (and the compose file's text) as it reads with the env file's text
/// `env_text` and, where `pending` has one, a file's content about to be written in place of
/// what the disk holds: judged against `compose.policy`. `None`: no compose file.
pub fn project_of(
    settings: &Settings,
    env_text: Option<&str>,
    pending: &dyn Fn(&std::path::Path) -> Option<Result<String>>,
) -> Result<Option<(crate::compose::Project, String)>> {
    let loaded = load_project(settings, env_text, pending)?;
    Ok(loaded.map(|l| (l.project, l.text)))
}

/// [`project_of`], with the env file's variables it was interpolated with.
fn load_project(
    settings: &Settings,
    env_text: Option<&str>,
    pending: &dyn Fn(&std::path::Path) -> Option<Result<String>>,
) -> Result<Option<Loaded>> {
    let Some(compose) = &settings.compose else {
        return Ok(None);
    };
    // What a path is about to hold: the env file about to be written, or a file fetched.
    let pending = |path: &std::path::Path| -> Option<Result<String>> {
        if let (Some(env_file), Some(text)) = (&settings.env, env_text) {
            if env_file.path == path {
                return Some(Ok(text.to_string()));
            }
        }
        pending(path)
    };
    let read = |path: &std::path::Path| match pending(path) {
        Some(text) => text.map(Some),
        None => crate::compose::read_managed(path),
    };
    let Some(text) = read(&compose.file)? else {
        return Ok(None);
    };
    let env_file = crate::compose::env_file_of(settings);
    let variables = match env_file
        .as_deref()
        .and_then(|path| Some((path, pending(path)?)))
    {
        Some((path, text)) => crate::compose::variables_of(path, &text?)?,
        None => crate::compose::env_variables(settings)?,
    };
    let project = crate::compose::load_text(settings, &text, variables.clone(), &read)?;
    Ok(Some(Loaded {
        project,
        text,
        variables,
    }))
}

/// The release to hold, when one failed for good while a good one serves: rolled back (its
/// containers did not get healthy), refused as bad input, or refused by the registry. A failure
/// that may pass (the network, a registry outage, the engine) holds nothing: the next watch tries
/// again, and no container was touched. Nor is the good release itself ever held (as it is once
/// this pass's `changes` are recorded).
fn to_hold(
    state: &State,
    changes: &Changes,
    attempt: Fingerprint,
    err: &anyhow::Error,
) -> Option<FailedRelease> {
    let for_good = err.downcast_ref::<engine::converge::RolledBack>().is_some()
        || err.downcast_ref::<engine::pull::Refused>().is_some()
        || crate::error::exit_status(err) == crate::error::EXIT_BAD_INPUT;
    let serving = state.counters.last_success_unix > 0;
    let last_good = state::fingerprint_of(
        changes.parameters.as_ref().unwrap_or(&state.parameters),
        changes.files.as_ref().unwrap_or(&state.files),
        state.release.as_ref(),
    );
    if !for_good || !serving || attempt == last_good {
        return None;
    }
    let attempts = match &state.failed {
        Some(failed) if failed.fingerprint == attempt => failed.attempts + 1,
        _ => 1,
    };
    let reason = crate::engine::api::summary(err, 200);
    Some(FailedRelease {
        at: now(),
        reason,
        fingerprint: attempt,
        attempts,
    })
}

/// The env file as it is on disk, as a release to apply (it is then left as it is). A link or a
/// FIFO in its place (a container that can write its directory) is no env file.
fn env_on_disk(settings: &Settings, state: &State) -> Result<Option<DesiredEnv>> {
    let Some(env) = &settings.env else {
        return Ok(None);
    };
    let text = atomic::read_text(&env.path, atomic::MAX_TEXT)?;
    Ok(text.map(|text| DesiredEnv {
        text,
        variables: 0,
        secret_only: Vec::new(),
        versions: state.parameters.clone(),
    }))
}

/// Commits the env file and the files, then converges the engine with `judged`, the project
/// [`judge_release`] read from what was just committed. Without it (`None`), the release applied
/// is the last good one, on disk, in place of one that failed (see [`secret_files::prepare`]),
/// and the project is read from the disk.
async fn apply<P: ParameterStore, O: ObjectStore, E: Engine>(
    pass: &Pass<'_, P, O, E>,
    changes: &mut Changes,
    env: Option<DesiredEnv>,
    staged: Vec<files::Staged>,
    judged: Option<Judged>,
) -> Result<SyncReport> {
    let (settings, clients, engine, state) = (pass.settings, pass.clients, pass.engine, pass.state);
    let held = judged.is_none();
    let (env_report, secret_only, env_text) = match (&settings.env, env) {
        (Some(settings), Some(desired)) => (
            Some(write_env(settings, &desired)?),
            desired.secret_only,
            Some(desired.text),
        ),
        _ => (None, Vec::new(), None),
    };
    let mut file_reports = Vec::new();
    let mut committed = Vec::new();
    for (path, change, record) in files::commit(staged)? {
        file_reports.push(FileReport {
            path: path.clone(),
            source: record.source.clone(),
            change,
        });
        committed.push((path, record));
    }
    let files_now = state.files_after(committed, &settings.files);
    changes.files = Some(files_now.clone());
    if let Some(env) = &env_report {
        changes.parameters = Some(env.versions.clone());
    }
    // The compose file and the env file it interpolates from are in place: converge the engine.
    let containers = match (&settings.compose, engine) {
        (Some(compose), Some(engine)) => {
            let Judged {
                mut project,
                variables,
            } = match judged {
                Some(judged) => judged,
                None => held_project(settings, state, env_text.as_deref())?,
            };
            let secrets_dir = secret_files::project_dir(&compose.secrets_dir, &settings.project);
            let kept = held.then(|| state.secret_files.clone());
            write_secret_files(
                settings,
                &mut project,
                &secrets_dir,
                &secret_only,
                &variables,
                kept.as_ref(),
            )?;
            note_refresh_attempts(&project, state, changes);
            let registries =
                Registries::resolve(&settings.registries, &clients.ssm, clients.ecr.clone())
                    .await?;
            let files = agent_files(
                settings,
                &files_now,
                env_report.as_ref().map(|e| e.sha256.as_str()),
            );
            let before = engine::converge::PulledBefore {
                ids: &state.pulled,
                at: &state.pulled_at,
            };
            let report = match settings.is_warm() {
                true => {
                    crate::progress::phase("warm pool: pulling, not starting");
                    engine::converge::prepare_warm(engine, &project, compose, &registries, before)
                        .await?
                }
                false => {
                    engine::converge::converge(
                        engine,
                        &project,
                        compose,
                        &registries,
                        before,
                        &files,
                    )
                    .await?
                }
            };
            // The release is good: the secret files it mounts are the only ones kept.
            let mounted = secret_files::mounted(&project);
            if !mounted.is_empty() {
                secret_files::prune(&secrets_dir, &mounted.values().cloned().collect());
            }
            changes.engine = Some(state::EngineChanges {
                pulled_ids: report.pulled_ids.clone(),
                pulled_at: now(),
                pruned: report.pruned.clone(),
                images: report.images.clone(),
                stale_images: report.stale.iter().cloned().collect(),
                secret_files: mounted,
            });
            Some(report)
        }
        _ => None,
    };
    Ok(SyncReport {
        held: None,
        env: env_report.map(|e| e.report),
        files: file_reports,
        containers,
    })
}

/// The last good release, from the disk, in place of one that failed and is held: its images by
/// the digests its release pinned, when it was one. `env_text`: the env file as it is on disk,
/// already read (see [`env_on_disk`]).
fn held_project(settings: &Settings, state: &State, env_text: Option<&str>) -> Result<Judged> {
    let variables = match (&settings.env, env_text) {
        (Some(env), Some(text)) => crate::compose::variables_of(&env.path, text)?,
        _ => crate::compose::env_variables(settings)?,
    };
    let mut project = crate::compose::load_with(settings, variables.clone())?;
    if let Some(running) = &state.release {
        for service in project.services.values_mut() {
            if let Some(digest) = running.images.get(service.written_image()) {
                service.image = crate::release::by_digest(&service.image, digest)?;
            }
        }
    }
    Ok(Judged { project, variables })
}

/// Names and writes the files of the compose file's `secrets:` (see [`secret_files`]): their
/// variables are the `env_file: false` sources', then the env file's (`env`, as the compose file
/// was interpolated with them), then the agent's own.
fn write_secret_files(
    settings: &Settings,
    project: &mut crate::compose::Project,
    dir: &std::path::Path,
    secret_only: &[(String, crate::redact::Secret)],
    env: &indexmap::IndexMap<String, String>,
    kept: Option<&std::collections::BTreeMap<String, PathBuf>>,
) -> Result<()> {
    if project.services.values().all(|s| s.secrets.is_empty()) {
        return Ok(());
    }
    let key = secret_files::key(&settings.state_dir)?;
    let lookup = secret_files::variables(secret_only, env);
    let files = secret_files::prepare(project, dir, &key, &lookup, kept)?;
    secret_files::write(dir, &files)
}

/// A `daily`-like pull that is due is attempted now: noted before it happens, so that a failed
/// attempt (a registry down, an image that never gets healthy) is made again after the next
/// period, or on `resync`, never on every watch tick.
fn note_refresh_attempts(project: &crate::compose::Project, state: &State, changes: &mut Changes) {
    let attempt = now();
    let at = std::time::SystemTime::now();
    for service in project.services.values() {
        let Some(policy) = service.pull_policy else {
            continue;
        };
        let last = (changes.refresh_attempts.get(&service.image))
            .or_else(|| state.pulled_at.get(&service.image));
        if engine::pull::refresh_due(policy, last, at) {
            changes
                .refresh_attempts
                .insert(service.image.clone(), attempt.clone());
        }
    }
}

/// The files the agent writes, with the hash of what they hold after this sync: the fetched files
/// (from their records, `records`) and the env file (`env_sha256`, of the content just written).
pub fn agent_files(
    settings: &Settings,
    records: &std::collections::BTreeMap<PathBuf, state::FileRecord>,
    env_sha256: Option<&str>,
) -> engine::spec::AgentFiles {
    let mut files: engine::spec::AgentFiles = records
        .iter()
        .map(|(path, record)| (path.clone(), record.sha256.clone()))
        .collect();
    if let (Some(env), Some(hash)) = (&settings.env, env_sha256) {
        files.insert(env.path.clone(), hash.to_string());
    }
    files
}

/// The env file's new content, rendered from Parameter Store. Nothing is written.
pub struct DesiredEnv {
    pub text: String,
    pub variables: usize,
    /// The variables of `env_file: false` sources: for the compose file's `secrets:` only.
    pub secret_only: Vec<(String, crate::redact::Secret)>,
    pub versions: std::collections::BTreeMap<String, params::Version>,
}

pub async fn desired_env(
    store: &impl ParameterStore,
    env: &EnvSettings,
    release: Option<&Manifest>,
) -> Result<DesiredEnv> {
    let resolved = params::resolve(store, &env.sources, release).await?;
    let text = envfile::render(&resolved.vars)
        .map_err(|e| input_error(format!("cannot write {}: {e}", env.path.display())))?;
    Ok(DesiredEnv {
        text,
        variables: resolved.vars.len(),
        secret_only: resolved.secret_only,
        versions: resolved.versions,
    })
}

struct WrittenEnv {
    report: EnvReport,
    versions: std::collections::BTreeMap<String, params::Version>,
    sha256: String,
}

/// Replaces the env file atomically if its content changed.
fn write_env(env: &EnvSettings, desired: &DesiredEnv) -> Result<WrittenEnv> {
    let written = atomic::write_if_changed(&env.path, desired.text.as_bytes(), env.mode)
        .with_context(|| format!("failed to write the env file {}", env.path.display()))?;
    let result = match written {
        Written::Unchanged => "unchanged",
        Written::ModeFixed => "mode corrected",
        Written::Replaced => "written",
    };
    crate::progress::step(format!("env file {}: {result}", env.path.display()));
    Ok(WrittenEnv {
        report: EnvReport {
            path: env.path.clone(),
            variables: desired.variables,
            result,
        },
        versions: desired.versions.clone(),
        sha256: engine::spec::sha256_hex(desired.text.as_bytes()),
    })
}

#[cfg(test)]
pub mod fakes;
#[cfg(test)]
mod tests;
