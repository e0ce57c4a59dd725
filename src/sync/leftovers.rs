//! What a sync killed half-way leaves on disk: temp files beside the files it writes (which may
//! hold the env file's secrets) and copies of the last good release under `state_dir`. Removed at
//! the start of the next sync, under the project's lock, so no sync is writing them then. Only
//! names the agent makes are touched, and a link is removed, never followed.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use crate::atomic::{Dir, Kind};
use crate::config::Settings;

/// Removes the leftovers of `settings`' files; returns what it removed.
pub fn clean(settings: &Settings) -> Vec<PathBuf> {
    let mut targets: Vec<PathBuf> = settings.files.iter().map(|f| f.path.clone()).collect();
    targets.extend(settings.env.as_ref().map(|e| e.path.clone()));
    targets.push(super::state::State::path(settings));
    let mut removed = Vec::new();
    for target in &targets {
        let (Some(dir), Some(name)) = (target.parent(), target.file_name()) else {
            continue;
        };
        let name = name.to_string_lossy();
        removed.extend(remove_matching(dir, |entry, is_dir| {
            !is_dir && crate::atomic::temp_target(entry) == Some(&*name)
        }));
    }
    removed.extend(remove_matching(&settings.state_dir, |entry, is_dir| {
        is_dir && entry.starts_with(".last-good.")
    }));
    for path in &removed {
        tracing::info!("removed {}, left by an interrupted sync", path.display());
    }
    removed
}

/// Removes the entries of `dir` that `matches` (name, is a directory) picks; a directory only
/// with the files in it (a snapshot holds nothing else), never recursively.
fn remove_matching(dir: &Path, matches: impl Fn(&str, bool) -> bool) -> Vec<PathBuf> {
    let Ok(Some(handle)) = Dir::open(dir) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for name in handle.names().unwrap_or_default() {
        // The entry itself, not what a link points to.
        let Ok(Some(kind)) = handle.kind(&name) else {
            continue;
        };
        let is_dir = kind == Kind::Dir;
        if !matches(&name.to_string_lossy(), is_dir) {
            continue;
        }
        let path = dir.join(&name);
        let gone = match is_dir {
            true => remove_flat_dir(&handle, &name),
            false => handle.remove(&name),
        };
        match gone {
            Ok(()) => removed.push(path),
            Err(err) => tracing::warn!("could not remove {}: {err}", path.display()),
        }
    }
    removed
}

fn remove_flat_dir(parent: &Dir, name: &OsStr) -> std::io::Result<()> {
    if let Some(dir) = parent.child(name)? {
        for entry in dir.names()? {
            dir.remove(&entry)?;
        }
    }
    parent.remove_dir(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_agents_own_leftovers_go() {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        let state = dir.path().join("state");
        std::fs::create_dir_all(&work).unwrap();
        std::fs::create_dir_all(state.join(".last-good.AbC123")).unwrap();
        std::fs::write(state.join(".last-good.AbC123/0"), "API_KEY=old-secret").unwrap();
        std::fs::write(work.join("..env.XyZ789.tmp"), "API_KEY=new-secret").unwrap();
        std::fs::write(work.join(".app.yml.QwE456.tmp"), "half").unwrap();
        std::fs::write(work.join(".env.keep"), "not ours").unwrap();
        std::fs::write(work.join("other.tmp"), "not ours").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", work.join("..env.LnK000.tmp")).unwrap();
        let config = dir.path().join("agent.yaml");
        let text = format!(
            "project: o\nworkdir: {}\nstate_dir: {}\nenv:\n  parameters:\n    - name: /o/env\n      format: dotenv\nfiles:\n  - source: s3://bucket-o/app.yml\n    path: app.yml\n",
            work.display(),
            state.display()
        );
        std::fs::write(&config, text).unwrap();
        let settings = crate::config::load(&config).unwrap();
        let removed = clean(&settings);
        assert_eq!(removed.len(), 4, "{removed:?}");
        assert!(!state.join(".last-good.AbC123").exists());
        assert!(!work.join("..env.XyZ789.tmp").exists());
        assert!(work.join(".env.keep").exists() && work.join("other.tmp").exists());
        assert!(
            std::fs::symlink_metadata(work.join("..env.LnK000.tmp")).is_err(),
            "the link went"
        );
        assert!(
            std::path::Path::new("/etc/passwd").exists(),
            "not what it pointed to"
        );
    }
}
