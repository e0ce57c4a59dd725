//! The compose file's `secrets:` as files: the agent writes each service's secret on a tmpfs
//! (`compose.secrets_dir`, by default `/run/kicky-agent/secrets`, then `<project>/<service>/`),
//! owned and moded as asked, and the container mounts it read-only at `/run/secrets/<name>` (or
//! its `target`). A value never reaches the disk, `docker inspect` (which shows the file's path)
//! or the container's environment.
//!
//! A file is never changed in place: its name carries a keyed hash of its content, owner and
//! mode, so a new value is a new file, the service's mount changes and only the services using
//! it are recreated, while a container still running (or rolled back to) keeps the file it
//! mounted. The hash is keyed (a random key in `state_dir`, made once) so that the name, which
//! `docker inspect` shows, tells nothing about the value; being the same for the same content, a
//! host restart (which empties the tmpfs) rewrites the same files and recreates nothing. Files no
//! container of the last good release mounts are removed after a sync succeeds: only files of
//! the agent's own names, in a directory it made (see [`prune`]).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use crate::atomic;
use crate::compose::{Project, SecretSource, Service};
use crate::error::input_error;
use crate::redact::Secret;

/// A secret's content may be this large (swarm allows 500 KB).
const MAX_BYTES: u64 = 1024 * 1024;

/// One file to write for one service's secret.
#[derive(Debug)]
pub struct SecretFile {
    pub path: PathBuf,
    content: Secret,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

/// The directory of the project's secret files.
pub fn project_dir(secrets_dir: &Path, project: &str) -> PathBuf {
    secrets_dir.join(project)
}

/// Answers an `environment:` secret's variable: from the `env_file: false` sources (the last
/// wins), then the env file's variables, then the agent's environment.
pub fn variables<'a>(
    secret_only: &'a [(String, Secret)],
    env_file: &'a indexmap::IndexMap<String, String>,
) -> impl Fn(&str) -> Option<Secret> + 'a {
    move |name| {
        secret_only
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .or_else(|| env_file.get(name).map(Secret::new))
            .or_else(|| std::env::var(name).ok().map(Secret::fetched))
    }
}

/// `service:target` → the file each service secret mounts (once [`prepare`]d).
pub fn mounted(project: &Project) -> BTreeMap<String, PathBuf> {
    project
        .services
        .values()
        .flat_map(|s| {
            s.secrets.iter().filter_map(|secret| {
                let path = secret.host.clone()?;
                Some((format!("{}:{}", s.name, secret.target), path))
            })
        })
        .collect()
}

/// Decides every service secret's file: its content (from its source), owner and mode, and its
/// path, which it sets on the service (`host`) so that the container spec mounts it. Nothing is
/// written. `variables` answers `environment:` sources.
///
/// The owner defaults to the service's `user` when it is numeric (`1000`, `1000:1000`), else
/// root; the mode to 0400, or 0444 when the service runs as a user named by name (whose id the
/// host cannot know), so that it can read the file.
///
/// `kept` (for a release held after it failed: the env file on disk is the last good one, but
/// the values of `env_file: false` sources are not kept anywhere) gives the file of a secret whose
/// variable is not known, by `service:target`, when it is still there.
pub fn prepare(
    project: &mut Project,
    dir: &Path,
    key: &[u8],
    variables: &dyn Fn(&str) -> Option<Secret>,
    kept: Option<&BTreeMap<String, PathBuf>>,
) -> Result<Vec<SecretFile>> {
    let mut files = Vec::new();
    let sources = project.secrets.clone();
    for service in project.services.values_mut() {
        let (default_uid, default_gid, default_mode) = defaults(service);
        let name = service.name.clone();
        for secret in &mut service.secrets {
            let source = sources.get(&secret.source).with_context(|| {
                format!("service {name}: secret {} is not defined", secret.source)
            })?;
            let still_there = kept
                .and_then(|kept| kept.get(&format!("{name}:{}", secret.target)))
                .filter(|path| matches!(atomic::open_regular(path), Ok(Some(_))));
            let content = match (content_of(&secret.source, source, variables), still_there) {
                (Ok(content), _) => content,
                (Err(_), Some(path)) => {
                    secret.host = Some(path.clone());
                    continue;
                }
                (Err(err), None) => return Err(err),
            };
            let uid = secret.uid.unwrap_or(default_uid);
            let gid = secret.gid.unwrap_or(default_gid);
            let mode = secret.mode.unwrap_or(default_mode);
            let base = Path::new(&secret.target)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| secret.source.clone());
            let id = keyed_id(key, uid, gid, mode, content.expose().as_bytes());
            let path = dir.join(&name).join(format!("{base}.{id}"));
            secret.host = Some(path.clone());
            files.push(SecretFile {
                path,
                content,
                uid,
                gid,
                mode,
            });
        }
    }
    Ok(files)
}

fn defaults(service: &Service) -> (u32, u32, u32) {
    let Some(user) = service.user.as_deref() else {
        return (0, 0, 0o400);
    };
    let (uid, gid) = user.split_once(':').unwrap_or((user, ""));
    match (uid.parse::<u32>(), gid.parse::<u32>()) {
        (Ok(uid), Ok(gid)) => (uid, gid, 0o400),
        (Ok(uid), Err(_)) if gid.is_empty() => (uid, uid, 0o400),
        _ if uid == "root" => (0, 0, 0o400),
        _ => (0, 0, 0o444),
    }
}

fn content_of(
    name: &str,
    source: &SecretSource,
    variables: &dyn Fn(&str) -> Option<Secret>,
) -> Result<Secret> {
    match source {
        SecretSource::Environment(variable) => variables(variable).ok_or_else(|| {
            input_error(format!(
                "secret {name}: variable {variable} is not set (not in the env file, not from an `env_file: false` source, not in the agent's environment)"
            ))
        }),
        SecretSource::File(path) => {
            let text = atomic::read_text(path, MAX_BYTES)
                .with_context(|| format!("secret {name}"))?
                .ok_or_else(|| {
                    input_error(format!(
                        "secret {name}: file {} does not exist or is not a regular file",
                        path.display()
                    ))
                })?;
            Ok(Secret::fetched(text))
        }
    }
}

/// 16 hex digits of SHA-256 over the key, then the owner, mode and content: the same for the same
/// file, and nothing about the content without the key.
fn keyed_id(key: &[u8], uid: u32, gid: u32, mode: u32, content: &[u8]) -> String {
    let mut hash = Sha256::new();
    hash.update(key);
    hash.update(format!("{uid}:{gid}:{mode:o}:").as_bytes());
    hash.update(content);
    let digest = hash.finalize();
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The key of the file names: made once (32 random bytes, 0600), kept in `state_dir`.
pub fn key(state_dir: &Path) -> Result<Vec<u8>> {
    let path = state_dir.join("secret-files.key");
    if let Some(mut file) =
        atomic::open_regular(&path).with_context(|| format!("failed to open {}", path.display()))?
    {
        let mut key = Vec::new();
        file.read_to_end(&mut key)
            .with_context(|| format!("failed to read {}", path.display()))?;
        if key.len() == 32 {
            return Ok(key);
        }
    }
    let mut key = vec![0u8; 32];
    getrandom::getrandom(&mut key)
        .map_err(|e| anyhow::anyhow!("no random bytes for the secret files' key: {e}"))?;
    atomic::write_if_changed(&path, &key, 0o600)?;
    Ok(key)
}

/// The key when it exists, else a throwaway one (for `plan`, which writes nothing: every
/// secret then shows as new, as it is before a first sync).
pub fn key_if_any(state_dir: &Path) -> Vec<u8> {
    let path = state_dir.join("secret-files.key");
    match atomic::open_regular(&path) {
        Ok(Some(mut file)) => {
            let mut key = Vec::new();
            if file.read_to_end(&mut key).is_ok() && key.len() == 32 {
                return key;
            }
            Vec::new()
        }
        _ => Vec::new(),
    }
}

/// Written in the project's directory of secret files when the agent makes it: only a directory
/// with it is ever pruned.
pub const MARKER: &str = ".kicky-agent-secrets";

/// Writes the files that are not there yet, on a tmpfs only. The directories are root's (0700):
/// a container sees its file through its mount, never the directory.
pub fn write(dir: &Path, files: &[SecretFile]) -> Result<()> {
    if files.is_empty() {
        return Ok(());
    }
    own_dir(dir)?;
    for file in files {
        if let Some(mut existing) = atomic::open_regular(&file.path)
            .with_context(|| format!("failed to open {}", file.path.display()))?
        {
            let meta = existing.metadata()?;
            let same = meta.uid() == file.uid
                && meta.gid() == file.gid
                && meta.mode() & 0o7777 == file.mode
                && atomic::same_bytes(&mut existing, file.content.expose().as_bytes())?;
            if same {
                continue;
            }
        }
        let parent = file.path.parent().unwrap_or(dir);
        atomic::Dir::create(parent, 0o700)
            .with_context(|| format!("failed to create {}", parent.display()))?;
        let mut new = atomic::AtomicFile::create(&file.path, file.mode)?;
        new.file()
            .write_all(file.content.expose().as_bytes())
            .with_context(|| format!("failed to write {}", file.path.display()))?;
        std::os::unix::fs::fchown(new.file(), Some(file.uid), Some(file.gid))
            .with_context(|| format!("failed to set the owner of {}", file.path.display()))?;
        new.commit()?;
    }
    Ok(())
}

/// Makes (or finds) the project's directory of secret files, and makes sure it may hold them: a
/// directory (never through a link) of the agent's own user, closed to others, on a tmpfs, so that
/// no value reaches a disk or another user. One the agent makes (or finds empty) gets the
/// [`MARKER`]; one that was there before with something in it is used, but never pruned.
fn own_dir(dir: &Path) -> Result<()> {
    let handle = atomic::Dir::create(dir, 0o700)
        .with_context(|| format!("failed to create {}", dir.display()))?;
    let meta = handle
        .meta()
        .with_context(|| format!("failed to look at {}", dir.display()))?;
    if !private(&meta) {
        return Err(input_error(format!(
            "{} is not the agent's own directory (owner {}, mode {:04o}; the agent needs its own user and 0700): the compose file's secrets would be readable by others; remove it, or point `compose.secrets_dir` at another directory",
            dir.display(),
            meta.st_uid,
            meta.st_mode & 0o7777
        )));
    }
    if !handle
        .on_tmpfs()
        .with_context(|| format!("failed to look at {}", dir.display()))?
    {
        return Err(input_error(format!(
            "{} is not on a tmpfs: the compose file's secrets would reach the disk; point `compose.secrets_dir` at a tmpfs (the default, /run/kicky-agent/secrets, is one)",
            dir.display()
        )));
    }
    let names = handle
        .names()
        .with_context(|| format!("failed to list {}", dir.display()))?;
    if names.is_empty() {
        let text = "made by kicky-agent: the secret files of the compose file's `secrets:`; the agent removes those no container of the last good release mounts\n";
        atomic::write_if_changed(&dir.join(MARKER), text.as_bytes(), 0o600)?;
    } else if !names.iter().any(|n| n == MARKER) {
        tracing::warn!(
            "{} was not made by kicky-agent (no {MARKER} in it): the secret files are written there, but nothing in it is ever removed; remove the directory for the agent to make its own",
            dir.display()
        );
    }
    Ok(())
}

/// Whether a directory is the agent's own user's and closed to everyone else.
fn private(meta: &nix::sys::stat::FileStat) -> bool {
    meta.st_uid == nix::unistd::geteuid().as_raw() && meta.st_mode & 0o077 == 0
}

/// Removes the project's secret files that are not in `keep` (and service directories left
/// empty), only from a directory the agent made ([`MARKER`], its own user, 0700, on a tmpfs), and
/// only files named as the agent names them (`<name>.<16 hex digits>`): never a file it did not
/// write, never a directory's content recursively, never through a link.
pub fn prune(dir: &Path, keep: &BTreeSet<PathBuf>) {
    if let Err(err) = prune_own(dir, keep) {
        tracing::warn!(
            "could not remove old secret files from {}: {err:#}",
            dir.display()
        );
    }
}

fn prune_own(dir: &Path, keep: &BTreeSet<PathBuf>) -> Result<()> {
    let Some(project) = atomic::Dir::open(dir)? else {
        return Ok(());
    };
    let meta = project.meta()?;
    let mine = project.kind(OsStr::new(MARKER))? == Some(atomic::Kind::File)
        && private(&meta)
        && project.on_tmpfs()?;
    if !mine {
        tracing::info!(
            "{} is not a directory kicky-agent made: no old secret file is removed from it",
            dir.display()
        );
        return Ok(());
    }
    for service in project.names()? {
        // What is not a directory at the top (the marker, a link) is not a service's.
        let Some(files) = project.child(&service)? else {
            continue;
        };
        for name in files.names()? {
            let path = dir.join(&service).join(&name);
            let stale = is_secret_file_name(&name)
                && !keep.contains(&path)
                && files.kind(&name)? == Some(atomic::Kind::File);
            if stale {
                if let Err(err) = files.remove(&name) {
                    tracing::warn!("could not remove {}: {err}", path.display());
                }
            }
        }
        // Only when nothing is left in it.
        let _ = project.remove_dir(&service);
    }
    Ok(())
}

/// Whether `name` is one the agent gives a secret file: `<name>.<16 hex digits>` (see
/// [`keyed_id`]), or the temp file of one (`.<that>.<6 letters or digits>.tmp`, left by a sync
/// killed while writing it).
fn is_secret_file_name(name: &OsStr) -> bool {
    let Some(name) = name.to_str() else {
        return false;
    };
    let name = match name.ends_with(".tmp") {
        true => match atomic::temp_target(name) {
            Some(name) => name,
            None => return false,
        },
        false => name,
    };
    let hex = |id: &str| {
        id.len() == 16
            && id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    name.rsplit_once('.')
        .is_some_and(|(base, id)| !base.is_empty() && hex(id))
}

#[cfg(test)]
mod tests;
