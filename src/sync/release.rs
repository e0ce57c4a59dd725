//! The last good release, kept while a sync replaces it: a copy of the env file and of every
//! fetched file this sync is about to change. When the sync then fails (a pull, a container that
//! never gets healthy), they are all put back together, while the engine puts back the previous
//! containers: the instance runs the last good release again, whole.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::atomic::AtomicFile;

pub struct Snapshot {
    dir: tempfile::TempDir,
    /// Each target, with where its previous content was copied (`None`: it did not exist).
    saved: Vec<(PathBuf, Option<Saved>)>,
}

struct Saved {
    copy: PathBuf,
    mode: u32,
    uid: u32,
    gid: u32,
}

impl Snapshot {
    /// Copies each of `targets` (those that exist) into a private directory under `state_dir`.
    pub fn take(state_dir: &Path, targets: &[PathBuf]) -> Result<Snapshot> {
        fs::create_dir_all(state_dir)
            .with_context(|| format!("failed to create {}", state_dir.display()))?;
        let dir = tempfile::Builder::new()
            .prefix(".last-good.")
            .tempdir_in(state_dir)
            .with_context(|| {
                format!(
                    "failed to create a snapshot directory in {}",
                    state_dir.display()
                )
            })?;
        let mut saved = Vec::new();
        for (i, target) in targets.iter().enumerate() {
            // The file itself, never what a link there points to: what is not a regular file the
            // agent wrote is not kept, and is removed if the sync fails.
            let Some(mut file) = crate::atomic::open_regular(target)
                .with_context(|| format!("failed to open {}", target.display()))?
            else {
                saved.push((target.clone(), None));
                continue;
            };
            let meta = file
                .metadata()
                .with_context(|| format!("failed to stat {}", target.display()))?;
            let copy = dir.path().join(i.to_string());
            let mut kept = fs::File::create(&copy)
                .with_context(|| format!("failed to keep a copy of {}", target.display()))?;
            io::copy(&mut file, &mut kept)
                .with_context(|| format!("failed to keep a copy of {}", target.display()))?;
            let mode = meta.permissions().mode() & 0o7777;
            saved.push((
                target.clone(),
                Some(Saved {
                    copy,
                    mode,
                    uid: meta.uid(),
                    gid: meta.gid(),
                }),
            ));
        }
        Ok(Snapshot { dir, saved })
    }

    /// Puts every target back as it was, each atomically; returns the paths restored.
    pub fn restore(&self) -> Result<Vec<PathBuf>> {
        let mut restored = Vec::new();
        for (target, saved) in &self.saved {
            match saved {
                Some(saved) => {
                    let mut file = AtomicFile::create(target, saved.mode)?;
                    let kept = || format!("failed to read the kept copy of {}", target.display());
                    let mut copy = crate::atomic::open_regular(&saved.copy)
                        .with_context(kept)?
                        .with_context(kept)?;
                    io::copy(&mut copy, file.file())
                        .with_context(|| format!("failed to restore {}", target.display()))?;
                    std::os::unix::fs::fchown(file.file(), Some(saved.uid), Some(saved.gid))
                        .with_context(|| {
                            format!("failed to restore the owner of {}", target.display())
                        })?;
                    file.commit()?;
                }
                None => crate::atomic::remove(target)
                    .with_context(|| format!("failed to remove {}", target.display()))?,
            }
            restored.push(target.clone());
        }
        let _ = &self.dir;
        Ok(restored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A container that can write the directory of a managed file swaps it for a link to a host
    /// file, before the snapshot or after it: the host file is never copied in, never written.
    #[test]
    fn a_link_swapped_in_is_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let shadow = dir.path().join("shadow");
        fs::write(&shadow, b"root:secret-hash").unwrap();
        let target = dir.path().join("app.yml");

        // Before the snapshot: nothing is kept, and the failed sync removes the link.
        std::os::unix::fs::symlink(&shadow, &target).unwrap();
        let snapshot =
            Snapshot::take(&dir.path().join("state"), std::slice::from_ref(&target)).unwrap();
        fs::remove_file(&target).unwrap();
        fs::write(&target, b"new release").unwrap();
        snapshot.restore().unwrap();
        assert!(
            fs::symlink_metadata(&target).is_err(),
            "the link was not kept"
        );
        assert_eq!(fs::read(&shadow).unwrap(), b"root:secret-hash");

        // After the snapshot: the restore replaces the link, it does not write through it.
        fs::write(&target, b"good release").unwrap();
        let snapshot =
            Snapshot::take(&dir.path().join("state"), std::slice::from_ref(&target)).unwrap();
        fs::remove_file(&target).unwrap();
        std::os::unix::fs::symlink(&shadow, &target).unwrap();
        snapshot.restore().unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"good release");
        assert!(!fs::symlink_metadata(&target)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(
            fs::read(&shadow).unwrap(),
            b"root:secret-hash",
            "never written through"
        );
    }

    #[test]
    fn restores_contents_modes_and_absence() {
        let dir = tempfile::tempdir().unwrap();
        let kept = dir.path().join("kept.yml");
        let added = dir.path().join("added.yml");
        fs::write(&kept, b"old").unwrap();
        fs::set_permissions(&kept, fs::Permissions::from_mode(0o640)).unwrap();
        let snapshot =
            Snapshot::take(&dir.path().join("state"), &[kept.clone(), added.clone()]).unwrap();
        fs::write(&kept, b"new").unwrap();
        fs::set_permissions(&kept, fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(&added, b"new file").unwrap();
        let restored = snapshot.restore().unwrap();
        assert_eq!(restored.len(), 2);
        assert_eq!(fs::read(&kept).unwrap(), b"old");
        assert_eq!(
            fs::metadata(&kept).unwrap().permissions().mode() & 0o7777,
            0o640
        );
        assert!(!added.exists());
        drop(snapshot);
        assert_eq!(
            fs::read_dir(dir.path().join("state")).unwrap().count(),
            0,
            "the copies go with the snapshot"
        );
    }
}

/// A release as the watch can see it without fetching a value or a body: each parameter's
/// version and each object's ETag (or version ID).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Fingerprint {
    pub parameters: std::collections::BTreeMap<String, super::params::Version>,
    pub objects: std::collections::BTreeMap<PathBuf, String>,
    /// With `release.store`: the release (which also pins image digests, invisible above).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<crate::release::ReleaseId>,
}

impl Fingerprint {
    /// An object's identity: its ETag, else its version ID.
    pub fn object_id(etag: Option<&str>, version_id: Option<&str>) -> String {
        etag.or(version_id).unwrap_or_default().to_string()
    }
}

/// A release that failed (rolled back, or never healthy), held so that it is not applied again
/// and again: only once it changes, on `resync`, or after a backoff.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FailedRelease {
    /// When it last failed (RFC 3339).
    pub at: String,
    /// Why, in one line (names, never values).
    pub reason: String,
    pub fingerprint: Fingerprint,
    /// How many syncs of it failed.
    pub attempts: u32,
}

/// The longest a failed release is held before it is tried again, however often it failed.
const MAX_HOLD: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

impl FailedRelease {
    /// Whether it is time to try it again: `retry_after`, doubled for each earlier failed try
    /// (at most a day), since it last failed.
    pub fn due(&self, retry_after: std::time::Duration, now: std::time::SystemTime) -> bool {
        let factor = 1u32 << self.attempts.saturating_sub(1).min(16);
        let hold = retry_after.saturating_mul(factor).min(MAX_HOLD);
        match humantime::parse_rfc3339(&self.at) {
            Ok(at) => now.duration_since(at).is_ok_and(|held| held >= hold),
            Err(_) => true,
        }
    }

    /// `release of <time> failed (<reason>); serving the release of <time>`.
    pub fn describe(&self, serving_since: Option<&str>) -> String {
        format!(
            "release of {} failed ({}); serving the release of {}",
            self.at,
            self.reason,
            serving_since.unwrap_or("an earlier sync")
        )
    }
}

#[cfg(test)]
mod held_tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    #[test]
    fn a_failed_release_is_held_longer_after_each_failed_try() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut failed = FailedRelease {
            at: humantime::format_rfc3339_seconds(at).to_string(),
            reason: "service web: unhealthy".into(),
            fingerprint: Fingerprint::default(),
            attempts: 1,
        };
        let hour = Duration::from_secs(3600);
        assert!(!failed.due(hour, at + Duration::from_secs(3599)));
        assert!(failed.due(hour, at + hour));
        failed.attempts = 3;
        assert!(!failed.due(hour, at + 3 * hour));
        assert!(failed.due(hour, at + 4 * hour));
        failed.attempts = 40;
        assert!(
            failed.due(hour, at + MAX_HOLD),
            "never held more than a day"
        );
        assert_eq!(
            failed.describe(Some("2026-12-01T10:00:00Z")),
            format!("release of {} failed (service web: unhealthy); serving the release of 2026-12-01T10:00:00Z", failed.at)
        );
    }
}
