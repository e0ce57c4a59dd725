//! What the agent remembers between runs: the last sync, each parameter's version, and each
//! fetched file's ETag, version and content hash. One JSON file per project under `state_dir`,
//! written atomically (0600). It holds names, versions and hashes, never a value: its messages
//! (the last error, why a release is held) are redacted as it is written, by the process that
//! knew the values, so the next one (`status`, a restarted daemon) never reads one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::lock::SyncLock;
use crate::atomic;
use crate::config::Settings;
pub use crate::lifecycle::LifecycleRecord;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    #[serde(default)]
    pub last_sync: Option<SyncRecord>,
    #[serde(default)]
    pub counters: Counters,
    /// Parameter name → version, as of the last good sync.
    #[serde(default)]
    pub parameters: BTreeMap<String, super::params::Version>,
    /// Absolute file path → what was fetched there.
    #[serde(default)]
    pub files: BTreeMap<PathBuf, FileRecord>,
    /// Service → image ID of its container, as of the last good sync.
    #[serde(default)]
    pub images: BTreeMap<String, String>,
    /// Image references this project pulled and has not pruned, with the ID each pointed to:
    /// the only images `prune` may remove.
    #[serde(default)]
    pub pulled: BTreeMap<String, String>,
    /// Image reference → when this project last pulled it (RFC 3339), for `pull_policy: daily`
    /// and the like.
    #[serde(default)]
    pub pulled_at: BTreeMap<String, String>,
    /// Images the last sync used from the local store because their registry could not be
    /// reached: possibly stale.
    #[serde(default)]
    pub stale_images: std::collections::BTreeSet<String>,
    /// When the last good sync ended (RFC 3339): the release the instance serves.
    #[serde(default)]
    pub last_good_at: Option<String>,
    /// A release that failed and is held (not applied again until it changes, `resync`, or a
    /// backoff).
    #[serde(default)]
    pub failed: Option<super::release::FailedRelease>,
    /// The last Auto Scaling lifecycle action the agent sent.
    #[serde(default)]
    pub lifecycle: Option<LifecycleRecord>,
    /// `service:target` → the secret file its container mounts, as of the last good sync (a
    /// path: its name tells nothing of the value).
    #[serde(default)]
    pub secret_files: BTreeMap<String, PathBuf>,
    /// With `release.store`: the release the last good sync applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<RunningRelease>,
    /// With `release.store`: the promoted release as the last sync saw it. The watch applies a
    /// promote it has not seen yet; an instance moved to another release on purpose (`sync
    /// --release`: a wave) stays there until the next promote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promoted_seen: Option<crate::release::ReleaseId>,
    /// Where the last sync spent its time (the lifecycle call appended when it is sent).
    #[serde(default)]
    pub timeline: Vec<crate::timeline::Span>,
    /// When the last sync began, in Unix milliseconds (what the timeline's starts count from).
    #[serde(default)]
    pub timeline_origin_ms: u64,
    /// The last lines of the containers the last sync failed on (redacted); empty after a
    /// good sync.
    #[serde(default)]
    pub failure_logs: Vec<crate::timeline::ContainerLog>,
    /// The last failure report: a fingerprint of its error and when (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_report: Option<(String, u64)>,
}

/// The release an instance runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningRelease {
    pub id: crate::release::ReleaseId,
    /// Each image as the compose file names it → the digest the release pinned: what a held
    /// release's last good containers are checked against.
    pub images: BTreeMap<String, String>,
}

/// What the metrics count, kept across restarts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    pub syncs: u64,
    pub failures: u64,
    pub rollbacks: u64,
    pub pulls: u64,
    pub last_duration_seconds: f64,
    pub last_success_unix: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncRecord {
    pub started: String,
    pub finished: String,
    pub ok: bool,
    /// The error chain when the sync failed (names, never values).
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    pub source: String,
    pub etag: Option<String>,
    pub version_id: Option<String>,
    /// Hex SHA-256 of the content written.
    pub sha256: String,
    pub size: u64,
    /// The written file's identity: unchanged metadata means unchanged content, without hashing.
    pub inode: u64,
    pub mtime_ns: i128,
    /// When the body was last transferred.
    pub fetched_at: String,
    /// When S3 was last asked whether it changed.
    pub checked_at: String,
}

/// What a sync pass changes in the state, collected as the pass goes: what it did before a
/// failure counts too (a file committed, a pull attempt noted). `None`: left as it was.
#[derive(Debug, Default)]
pub struct Changes {
    /// Every file's record once this pass's files are committed (see [`State::files_after`]).
    pub files: Option<BTreeMap<PathBuf, FileRecord>>,
    /// The versions of the parameters the env file written holds.
    pub parameters: Option<BTreeMap<String, super::params::Version>>,
    /// Image reference → when a due `daily`-like pull was attempted (noted before it happens).
    pub refresh_attempts: BTreeMap<String, String>,
    /// What the engine did, once it converged.
    pub engine: Option<EngineChanges>,
    /// The release applied (`Some(None)`: the latest of every source, no release).
    pub release: Option<Option<RunningRelease>>,
    /// A release that failed for good, to hold.
    pub failed: Option<super::release::FailedRelease>,
    /// The promoted release, seen.
    pub promoted_seen: Option<crate::release::ReleaseId>,
}

/// What a converged engine leaves to remember.
#[derive(Debug)]
pub struct EngineChanges {
    /// Image reference → ID of what this pass pulled.
    pub pulled_ids: BTreeMap<String, String>,
    /// When they were pulled (RFC 3339).
    pub pulled_at: String,
    /// Image references pruned.
    pub pruned: Vec<String>,
    /// Service → image ID now running.
    pub images: BTreeMap<String, String>,
    pub stale_images: std::collections::BTreeSet<String>,
    /// The secret files the release mounts: the only ones kept.
    pub secret_files: BTreeMap<String, PathBuf>,
}

/// One sync pass, ended: what [`State::record`] writes into the state.
#[derive(Debug)]
pub struct Outcome {
    pub changes: Changes,
    pub sync: SyncRecord,
    pub took: std::time::Duration,
    /// When it ended (Unix seconds).
    pub finished_unix: u64,
    pub ended: Ended,
}

/// How a sync pass ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Applied; `held`: a failed release held, the last good one checked instead.
    Ok {
        held: bool,
        pulls: u64,
    },
    Failed {
        rolled_back: bool,
    },
}

impl State {
    /// The release the last good sync applied, as the watch sees releases.
    pub fn last_good(&self) -> super::release::Fingerprint {
        fingerprint_of(&self.parameters, &self.files, self.release.as_ref())
    }

    /// The files' records once `committed` are written: each replaced, and those no longer
    /// configured forgotten (they are left on disk: the agent never deletes them).
    pub fn files_after(
        &self,
        committed: impl IntoIterator<Item = (PathBuf, FileRecord)>,
        configured: &[crate::config::FileSettings],
    ) -> BTreeMap<PathBuf, FileRecord> {
        let mut files = self.files.clone();
        files.extend(committed);
        files.retain(|path, _| configured.iter().any(|f| &f.path == path));
        files
    }

    /// Records a sync pass: the one place a sync changes the state (saved by the caller, under
    /// the project's lock).
    pub fn record(&mut self, outcome: Outcome) {
        let Outcome {
            changes,
            sync,
            took,
            finished_unix,
            ended,
        } = outcome;
        if let Some(files) = changes.files {
            self.files = files;
        }
        if let Some(parameters) = changes.parameters {
            self.parameters = parameters;
        }
        self.pulled_at.extend(changes.refresh_attempts);
        if let Some(engine) = changes.engine {
            for (image, id) in engine.pulled_ids {
                self.pulled_at
                    .insert(image.clone(), engine.pulled_at.clone());
                self.pulled.insert(image, id);
            }
            for reference in &engine.pruned {
                self.pulled.remove(reference);
                self.pulled_at.remove(reference);
            }
            self.images = engine.images;
            self.stale_images = engine.stale_images;
            self.secret_files = engine.secret_files;
        }
        if let Some(release) = changes.release {
            self.release = release;
        }
        if let Some(failed) = changes.failed {
            self.failed = Some(failed);
        }
        if let Some(promoted) = changes.promoted_seen {
            self.promoted_seen = Some(promoted);
        }
        let counters = &mut self.counters;
        counters.syncs += 1;
        counters.last_duration_seconds = took.as_secs_f64();
        match ended {
            Ended::Ok { held, pulls } => {
                counters.pulls += pulls;
                counters.last_success_unix = finished_unix;
                if !held {
                    self.failed = None;
                    self.last_good_at = Some(sync.finished.clone());
                }
            }
            Ended::Failed { rolled_back } => {
                counters.failures += 1;
                if rolled_back {
                    counters.rollbacks += 1;
                }
            }
        }
        self.last_sync = Some(sync);
    }

    pub fn path(settings: &Settings) -> PathBuf {
        settings
            .state_dir
            .join(format!("{}.json", settings.project))
    }

    /// The state at `path`; empty when there is none yet. A state file that does not parse is
    /// set aside (everything is then fetched again), never a reason to fail.
    pub fn load(path: &Path) -> Result<State> {
        let text = atomic::read_text(path, atomic::MAX_TEXT)
            .with_context(|| format!("failed to read the state file {}", path.display()))?;
        let Some(text) = text else {
            return Ok(State::default());
        };
        match serde_json::from_str(&text) {
            Ok(state) => Ok(state),
            Err(e) => {
                tracing::warn!(path = %path.display(), "the state file is unreadable ({e}); starting afresh");
                Ok(State::default())
            }
        }
    }

    /// Writes the state to `path`, only ever under the project's lock (`_held`): a state loaded,
    /// changed and saved by one process never overwrites what another saved meanwhile.
    pub fn save(&self, path: &Path, _held: &SyncLock) -> Result<()> {
        let mut text = serde_json::to_string_pretty(&self.redacted())
            .context("failed to serialize the state")?;
        text.push('\n');
        atomic::write_if_changed(path, text.as_bytes(), 0o600)
            .with_context(|| format!("failed to write the state file {}", path.display()))?;
        Ok(())
    }

    /// The state as it lands on disk: its messages with every value the agent fetched masked.
    /// Names, versions and hashes are kept as they are: the agent reads them back.
    fn redacted(&self) -> State {
        let mut state = self.clone();
        let messages = [
            state.last_sync.as_mut().and_then(|s| s.error.as_mut()),
            state.failed.as_mut().map(|f| &mut f.reason),
            state.lifecycle.as_mut().and_then(|l| l.error.as_mut()),
        ];
        for message in messages.into_iter().flatten() {
            *message = crate::redact::text(message).into_owned();
        }
        state
    }
}

/// A release as the watch sees it, from its parameters' versions, its files' records and the
/// release it was.
pub fn fingerprint_of(
    parameters: &BTreeMap<String, super::params::Version>,
    files: &BTreeMap<PathBuf, FileRecord>,
    release: Option<&RunningRelease>,
) -> super::release::Fingerprint {
    super::release::Fingerprint {
        parameters: parameters.clone(),
        objects: files
            .iter()
            .map(|(path, f)| {
                let id = super::release::Fingerprint::object_id(
                    f.etag.as_deref(),
                    f.version_id.as_deref(),
                );
                (path.clone(), id)
            })
            .collect(),
        release: release.map(|r| r.id.clone()),
    }
}

/// Changes the state of `settings`' project outside a sync: under its lock (waiting as a sync
/// would, up to `lock_timeout`), loaded, changed by `change`, and saved.
pub async fn update(settings: &Settings, change: impl FnOnce(&mut State)) -> Result<()> {
    let held = super::lock::acquire(
        &settings.state_dir,
        &settings.project,
        settings.lock_timeout,
    )
    .await?;
    let path = State::path(settings);
    let mut state = State::load(&path)?;
    change(&mut state);
    state.save(&path, &held)
}

/// Keeps the lifecycle action sent in the state file, for `status`. A failure is logged: the
/// action was sent all the same.
pub async fn record_lifecycle(settings: &Settings, record: LifecycleRecord) {
    let change = |state: &mut State| {
        lifecycle_span(state, &record);
        state.lifecycle = Some(record);
    };
    if let Err(e) = update(settings, change).await {
        tracing::warn!("could not record the lifecycle action: {e:#}");
    }
}

/// The lifecycle call, at the end of the last sync's timeline: it is sent once the sync is over
/// (a record of another time, with no sync before it that day, has no place there).
fn lifecycle_span(state: &mut State, record: &LifecycleRecord) {
    let Some(ms) = record.ms else {
        return;
    };
    let start = unix_ms()
        .saturating_sub(ms)
        .checked_sub(state.timeline_origin_ms);
    if let Some(start_ms) = start.filter(|s| state.timeline_origin_ms > 0 && *s < 86_400_000) {
        state.timeline.push(crate::timeline::Span {
            kind: "lifecycle".into(),
            what: format!("{} to hook {}", record.action, record.hook),
            start_ms,
            ms,
            ok: record.error.is_none(),
        });
    }
}

/// Now, in Unix milliseconds.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, crate::timeline::millis)
}

/// Now, as RFC 3339 in UTC to the second.
pub fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::params::Version;

    async fn lock_of(dir: &Path) -> SyncLock {
        super::super::lock::acquire(dir, "orange", std::time::Duration::ZERO)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn round_trips_and_tolerates_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("orange.json");
        let held = lock_of(dir.path()).await;
        assert_eq!(State::load(&path).unwrap(), State::default());
        let mut state = State::default();
        state
            .parameters
            .insert("/orange/prod/env".into(), Version::Number(3));
        state.parameters.insert(
            "secret:prod/orange/db".into(),
            Version::Id("8a1c6f0e-2b3d-4e5f-9a7b-1c2d3e4f5a6b".into()),
        );
        state.save(&path, &held).unwrap();
        assert_eq!(State::load(&path).unwrap(), state);
        std::fs::write(&path, "{ not json").unwrap();
        assert_eq!(State::load(&path).unwrap(), State::default());
        // A state file from before secrets (versions were numbers only) still reads.
        std::fs::write(&path, r#"{"parameters": {"/orange/prod/env": 7}}"#).unwrap();
        assert_eq!(
            State::load(&path).unwrap().parameters["/orange/prod/env"],
            Version::Number(7)
        );
    }

    /// The process that knew the values writes the state redacted: the next one (`status`, a
    /// restarted daemon) never reads a value. Names are kept: the agent reads them back.
    #[tokio::test]
    async fn messages_are_written_redacted() {
        let value = format!("state-pw-\"{}\"", std::process::id());
        crate::redact::learn(&value);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("orange.json");
        let held = lock_of(dir.path()).await;
        let said = format!("the last health check said: postgres://app:{value}@db");
        let state = State {
            last_sync: Some(SyncRecord {
                started: "a".into(),
                finished: "b".into(),
                ok: false,
                error: Some(said.clone()),
            }),
            failed: Some(crate::sync::release::FailedRelease {
                at: "c".into(),
                reason: said.clone(),
                fingerprint: Default::default(),
                attempts: 1,
            }),
            lifecycle: Some(LifecycleRecord {
                group: "g".into(),
                hook: "h".into(),
                instance: "i".into(),
                action: "ABANDON".into(),
                at: "d".into(),
                error: Some(said.clone()),
                ms: None,
            }),
            parameters: [("/orange/prod/env".to_string(), Version::Number(3))].into(),
            ..State::default()
        };
        state.save(&path, &held).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let escaped = serde_json::to_string(&value).unwrap();
        assert!(!text.contains(&value) && !text.contains(escaped.trim_matches('"')));
        let back = State::load(&path).unwrap();
        let masked = "the last health check said: postgres://app:<redacted>@db";
        assert_eq!(back.last_sync.unwrap().error.as_deref(), Some(masked));
        assert_eq!(back.failed.unwrap().reason, masked);
        assert_eq!(back.lifecycle.unwrap().error.as_deref(), Some(masked));
        assert_eq!(back.parameters, state.parameters);
        assert_eq!(
            state.last_sync.unwrap().error,
            Some(said),
            "the state in memory is left as it is"
        );
    }

    /// What is written outside a sync (the lifecycle action sent) waits for the sync's lock, and
    /// keeps what the sync saved meanwhile: neither overwrites the other.
    #[tokio::test]
    async fn an_update_waits_for_the_sync_and_keeps_what_it_saved() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("agent.yaml");
        let yaml = format!(
            "project: orange\nworkdir: {0}\nstate_dir: {0}\n",
            dir.path().display()
        );
        std::fs::write(&config, yaml).unwrap();
        let settings = crate::config::load(&config).unwrap();
        let path = State::path(&settings);
        let sync = lock_of(dir.path()).await;
        let mut state = State::load(&path).unwrap();
        let record = LifecycleRecord {
            group: "web".into(),
            hook: "launch".into(),
            instance: "i-0abc".into(),
            action: "CONTINUE".into(),
            at: now(),
            error: None,
            ms: None,
        };
        let recorded = record_lifecycle(&settings, record.clone());
        let synced = async {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            state
                .parameters
                .insert("/orange/prod/env".into(), Version::Number(4));
            state.save(&path, &sync).unwrap();
            drop(sync);
        };
        futures::join!(recorded, synced);
        let back = State::load(&path).unwrap();
        assert_eq!(back.lifecycle, Some(record));
        assert_eq!(back.parameters["/orange/prod/env"], Version::Number(4));
    }
}
