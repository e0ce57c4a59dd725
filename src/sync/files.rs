//! Files from S3: fetched conditionally, verified, staged next to their targets, and committed
//! together only once every one of them (and the env file) is ready.
//!
//! A file is fetched with `If-None-Match` when the local copy is still what the agent wrote last
//! time (same inode, size and mtime, or failing that the same SHA-256); an unchanged object then
//! costs no body and no write. A local copy that was edited or deleted is fetched again whole.
//! Bodies stream into a temp file beside the target while they are hashed; a body whose length or
//! SHA-256 disagrees with what S3 announced is rejected and never becomes the file.

use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine;
use serde::Serialize;

use super::state::{now, FileRecord};
use crate::atomic::AtomicFile;
use crate::aws::s3::{Fetched, ObjectMeta, ObjectRequest, ObjectStore, Transient};
use crate::config::FileSettings;
use crate::digest::{hex, HashingWriter};
use crate::error::input_error;
use crate::retry::Backoff;

/// What a sync does, did, or would do to one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    Unchanged,
    Create,
    Update,
    /// The object did not change but the local copy was edited or deleted.
    Restore,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Unchanged => "unchanged",
            Change::Create => "create",
            Change::Update => "update",
            Change::Restore => "restore",
        }
    }
}

/// A file ready to be committed.
pub struct Staged {
    pub path: PathBuf,
    pub change: Change,
    pub source: String,
    /// `None` when the file stays as it is.
    temp: Option<AtomicFile>,
    record: FileRecord,
    mode: u32,
    owner: Option<(Option<u32>, Option<u32>)>,
}

impl Staged {
    /// The object as fetched (ETag, version, hash).
    pub fn record(&self) -> &FileRecord {
        &self.record
    }

    /// Whether committing replaces (or creates) the file at `path`.
    pub fn replaces(&self) -> bool {
        self.temp.is_some()
    }

    /// What committing will put at `path`; `None` when the file stays as it is.
    pub fn pending(&self) -> Option<io::Result<Vec<u8>>> {
        self.temp.as_ref().map(AtomicFile::written)
    }
}

/// Fetches every file concurrently. Nothing is visible at any target until [`commit`]; on error
/// every temp file is dropped and every target stays as it was. Every failure is reported, not
/// only the first.
pub async fn stage_all(
    store: &impl ObjectStore,
    files: &[FileSettings],
    previous: &std::collections::BTreeMap<PathBuf, FileRecord>,
) -> Result<Vec<Staged>> {
    let results = futures::future::join_all(files.iter().map(|file| {
        let source = file.source.to_string();
        crate::timeline::timed("file", source, stage(store, file, previous.get(&file.path)))
    }))
    .await;
    let mut staged = Vec::new();
    let mut errors = Vec::new();
    for result in results {
        match result {
            Ok(file) => staged.push(file),
            Err(err) => errors.push(err),
        }
    }
    match crate::error::all_of(errors, files.len(), "files failed") {
        Some(err) => Err(err),
        None => Ok(staged),
    }
}

async fn stage(
    store: &impl ObjectStore,
    file: &FileSettings,
    previous: Option<&FileRecord>,
) -> Result<Staged> {
    let owner = resolve_owner(file)?;
    let source = file.source.to_string();
    // The previous record counts only for the same object (and the same pinned version).
    let previous = previous.filter(|p| {
        p.source == source && (file.version_id.is_none() || p.version_id == file.version_id)
    });
    let local_intact = match previous {
        Some(p) => local_matches(&file.path, p)?,
        None => false,
    };
    let if_none_match = if local_intact {
        previous.and_then(|p| p.etag.as_deref())
    } else {
        None
    };
    let request = ObjectRequest {
        uri: &file.source,
        owner: file.expected_owner.as_deref(),
        version_id: file.version_id.as_deref(),
        if_none_match,
    };
    let transient = |e: &anyhow::Error| e.chain().any(|c| c.is::<Transient>());
    Backoff::default()
        .retry(&format!("fetching {source}"), transient, || async {
            let mut temp = AtomicFile::create(&file.path, file.mode)?;
            let mut sink = HashingWriter::new(temp.file());
            let meta = match store.get(request, &mut sink).await? {
                Fetched::NotModified => {
                    let mut record = previous.cloned().ok_or_else(|| anyhow!("S3 said {source} is not modified, but nothing was asked"))?;
                    record.checked_at = now();
                    return Ok(Staged { path: file.path.clone(), change: Change::Unchanged, source: source.clone(), temp: None, record, mode: file.mode, owner });
                }
                Fetched::Written(meta) => meta,
            };
            let (size, digest, _) = sink.finish();
            if let Some(expected) = meta.length {
                if expected != size {
                    return Err(anyhow!(Transient).context(format!("{source}: received {size} bytes, S3 announced {expected}; the body is rejected")));
                }
            }
            let sha256_b64 = base64::engine::general_purpose::STANDARD.encode(digest);
            if let Some(expected) = &meta.sha256 {
                if *expected != sha256_b64 {
                    bail!("{source}: the body's SHA-256 is {sha256_b64} but S3 holds {expected}; the body is rejected");
                }
            }
            let sha256 = hex(&digest);
            let same_content = previous.is_some_and(|p| p.sha256 == sha256);
            let change = match previous {
                _ if !is_there(&file.path)? && !same_content => Change::Create,
                None => Change::Update,
                Some(_) if same_content && local_intact => Change::Unchanged,
                Some(_) if same_content => Change::Restore,
                Some(_) => Change::Update,
            };
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::fchown(temp.file(), uid, gid)
                    .with_context(|| format!("failed to set the owner of the new {}", file.path.display()))?;
            }
            let at = now();
            // The object's ETag changed but not its bytes (a re-upload): the local file stays.
            let temp = if change == Change::Unchanged { None } else { Some(temp) };
            let record = FileRecord {
                source: source.clone(),
                etag: meta.etag,
                version_id: meta.version_id,
                sha256,
                size,
                inode: 0,
                mtime_ns: 0,
                fetched_at: at.clone(),
                checked_at: at,
            };
            Ok(Staged { path: file.path.clone(), change, source: source.clone(), temp, record, mode: file.mode, owner })
        })
        .await
}

/// Makes every staged file visible, and returns the records to remember.
pub fn commit(staged: Vec<Staged>) -> Result<Vec<(PathBuf, Change, FileRecord)>> {
    let mut done = Vec::with_capacity(staged.len());
    for s in staged {
        match s.temp {
            Some(temp) => temp.commit()?,
            // Content intact: only the mode and owner are brought in line with the config.
            None => fix_metadata(&s.path, s.mode, s.owner)?,
        }
        let mut record = s.record;
        let meta = regular_file(&s.path)?
            .metadata()
            .with_context(|| format!("failed to stat {}", s.path.display()))?;
        record.inode = meta.ino();
        record.mtime_ns = mtime_ns(&meta);
        crate::progress::step(format!(
            "file {}: {} (from {})",
            s.path.display(),
            s.change.as_str(),
            s.source
        ));
        done.push((s.path, s.change, record));
    }
    Ok(done)
}

/// What staging a file would do, without transferring a body: a HEAD and a look at the local
/// file. With the object's ETag and version as S3 has them now.
pub async fn plan(
    store: &impl ObjectStore,
    file: &FileSettings,
    previous: Option<&FileRecord>,
) -> Result<(Change, ObjectMeta)> {
    let meta = store
        .head(
            &file.source,
            file.expected_owner.as_deref(),
            file.version_id.as_deref(),
        )
        .await?;
    let change = change_of(file, previous, &meta)?;
    Ok((change, meta))
}

fn change_of(
    file: &FileSettings,
    previous: Option<&FileRecord>,
    meta: &ObjectMeta,
) -> Result<Change> {
    let source = file.source.to_string();
    let Some(previous) = previous.filter(|p| p.source == source) else {
        return Ok(if is_there(&file.path)? {
            Change::Update
        } else {
            Change::Create
        });
    };
    let same_object = meta.etag.is_some() && meta.etag == previous.etag;
    Ok(match (local_matches(&file.path, previous)?, same_object) {
        (false, true) => Change::Restore,
        (true, true) => Change::Unchanged,
        (_, false) => Change::Update,
    })
}

/// Whether a regular file is at `path` (what else is there is replaced as if nothing were).
fn is_there(path: &Path) -> Result<bool> {
    let file = crate::atomic::open_regular(path)
        .with_context(|| format!("failed to open {}", path.display()))?;
    Ok(file.is_some())
}

/// Whether the file at `path` still holds what `record` says was written there.
fn local_matches(path: &Path, record: &FileRecord) -> Result<bool> {
    let Some(mut file) = crate::atomic::open_regular(path)
        .with_context(|| format!("failed to open {}", path.display()))?
    else {
        return Ok(false);
    };
    let meta = file
        .metadata()
        .with_context(|| format!("failed to stat {}", path.display()))?;
    if meta.len() != record.size {
        return Ok(false);
    }
    if meta.ino() == record.inode && mtime_ns(&meta) == record.mtime_ns {
        return Ok(true);
    }
    let mut sink = HashingWriter::new(io::sink());
    io::copy(&mut file, &mut sink).with_context(|| format!("failed to read {}", path.display()))?;
    Ok(hex(&sink.finish().1) == record.sha256)
}

/// Sets the mode and owner of the file at `path`, on the file itself (opened without following a
/// link, then `fchmod`/`fchown`): a link swapped in meanwhile is refused, never followed.
fn fix_metadata(path: &Path, mode: u32, owner: Option<(Option<u32>, Option<u32>)>) -> Result<()> {
    let file = regular_file(path)?;
    let meta = file
        .metadata()
        .with_context(|| format!("failed to stat {}", path.display()))?;
    if meta.permissions().mode() & 0o7777 != mode {
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("failed to set the mode of {}", path.display()))?;
    }
    if let Some((uid, gid)) = owner {
        if uid.is_some_and(|u| u != meta.uid()) || gid.is_some_and(|g| g != meta.gid()) {
            std::os::unix::fs::fchown(&file, uid, gid)
                .with_context(|| format!("failed to set the owner of {}", path.display()))?;
        }
    }
    Ok(())
}

/// The file the agent wrote at `path`, opened without following a link.
fn regular_file(path: &Path) -> Result<std::fs::File> {
    crate::atomic::open_regular(path)
        .with_context(|| format!("failed to open {}", path.display()))?
        .ok_or_else(|| {
            anyhow!(
                "{} is no longer the regular file the agent wrote (a link, a FIFO or a directory took its place): refused",
                path.display()
            )
        })
}

/// The uid and gid `owner:` and `group:` name, looked up on this machine.
fn resolve_owner(file: &FileSettings) -> Result<Option<(Option<u32>, Option<u32>)>> {
    if file.owner.is_none() && file.group.is_none() {
        return Ok(None);
    }
    let user = |name: &str| Ok(nix::unistd::User::from_name(name)?.map(|u| u.uid.as_raw()));
    let group = |name: &str| Ok(nix::unistd::Group::from_name(name)?.map(|g| g.gid.as_raw()));
    let uid = lookup_id(file, "owner", file.owner.as_deref(), user)?;
    let gid = lookup_id(file, "group", file.group.as_deref(), group)?;
    Ok(Some((uid, gid)))
}

/// A numeric id as it is, or a name looked up with `find`; an unknown name is bad input.
fn lookup_id(
    file: &FileSettings,
    what: &str,
    name: Option<&str>,
    find: impl Fn(&str) -> nix::Result<Option<u32>>,
) -> Result<Option<u32>> {
    let Some(name) = name else { return Ok(None) };
    if let Ok(id) = name.parse::<u32>() {
        return Ok(Some(id));
    }
    match find(name).with_context(|| format!("failed to look up {what} {name}"))? {
        Some(id) => Ok(Some(id)),
        None => Err(input_error(format!(
            "{}: {what} {name:?} does not exist on this machine",
            file.path.display()
        ))),
    }
}

fn mtime_ns(meta: &std::fs::Metadata) -> i128 {
    i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::s3::ObjectMeta;
    use crate::config::types::S3Uri;
    use sha2::{Digest, Sha256};
    use std::io::Write;

    /// Serves one body with whatever metadata the test claims for it.
    struct LyingStore {
        body: &'static [u8],
        meta: ObjectMeta,
    }

    impl ObjectStore for LyingStore {
        async fn get(
            &self,
            _: ObjectRequest<'_>,
            sink: &mut (dyn Write + Send),
        ) -> Result<Fetched> {
            sink.write_all(self.body)?;
            Ok(Fetched::Written(self.meta.clone()))
        }
        async fn head(&self, _: &S3Uri, _: Option<&str>, _: Option<&str>) -> Result<ObjectMeta> {
            Ok(self.meta.clone())
        }
    }

    fn file(dir: &Path) -> FileSettings {
        FileSettings {
            source: S3Uri::parse("s3://bucket/app.yml").unwrap(),
            version_id: None,
            path: dir.join("app.yml"),
            mode: 0o644,
            owner: None,
            group: None,
            expected_owner: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn bodies_that_disagree_with_s3_are_never_written() {
        let dir = tempfile::tempdir().unwrap();
        let f = file(dir.path());
        std::fs::write(&f.path, b"old").unwrap();
        let sha_of_other =
            base64::engine::general_purpose::STANDARD.encode(Sha256::digest(b"other"));
        let cases = [
            (
                ObjectMeta {
                    sha256: Some(sha_of_other),
                    ..Default::default()
                },
                "SHA-256",
            ),
            (
                ObjectMeta {
                    length: Some(99),
                    ..Default::default()
                },
                "S3 announced 99",
            ),
        ];
        for (meta, why) in cases {
            let store = LyingStore {
                body: b"new body",
                meta,
            };
            let err = match stage_all(&store, std::slice::from_ref(&f), &Default::default()).await {
                Ok(_) => panic!("a body that disagrees with S3 was accepted"),
                Err(err) => format!("{err:#}"),
            };
            assert!(err.contains(why), "{err}");
            assert_eq!(std::fs::read(&f.path).unwrap(), b"old");
            assert_eq!(
                std::fs::read_dir(dir.path()).unwrap().count(),
                1,
                "a temp file was left"
            );
        }
    }

    #[tokio::test]
    async fn a_matching_body_is_staged_then_committed() {
        let dir = tempfile::tempdir().unwrap();
        let f = file(dir.path());
        let sha = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(b"new body"));
        let meta = ObjectMeta {
            etag: Some("\"e1\"".into()),
            length: Some(8),
            sha256: Some(sha),
            version_id: None,
        };
        let store = LyingStore {
            body: b"new body",
            meta,
        };
        let staged = stage_all(&store, std::slice::from_ref(&f), &Default::default())
            .await
            .unwrap();
        assert!(!f.path.exists(), "nothing is visible before the commit");
        let done = commit(staged).unwrap();
        assert_eq!(std::fs::read(&f.path).unwrap(), b"new body");
        assert_eq!(done[0].1, Change::Create);
        assert_eq!(done[0].2.etag.as_deref(), Some("\"e1\""));
    }
}
