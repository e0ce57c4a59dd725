//! Keeps the files the agent writes where the operator expects them: inside `workdir`, or inside a
//! directory listed under `files_allowed_dirs`. A path with `..`, an absolute path elsewhere, or a
//! path through a symlink that leads out is refused; and the secrets directory, where the agent
//! removes files, overlaps no other place it writes.

use std::path::{Component, Path, PathBuf};

/// The absolute path a configured `path` resolves to, or why it is refused.
pub fn confine(path: &Path, workdir: &Path, allowed: &[PathBuf]) -> Result<PathBuf, String> {
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(format!(
            "{} contains `..`: files stay inside workdir",
            path.display()
        ));
    }
    let (full, roots): (PathBuf, Vec<&Path>) = if path.is_absolute() {
        let roots: Vec<&Path> = allowed
            .iter()
            .map(PathBuf::as_path)
            .filter(|dir| path.starts_with(dir))
            .collect();
        if roots.is_empty() {
            return Err(format!(
                "{} is outside workdir {}; list its directory under `files_allowed_dirs` to allow it",
                path.display(),
                workdir.display()
            ));
        }
        (path.to_path_buf(), roots)
    } else {
        (workdir.join(path), vec![workdir])
    };
    // What exists of its directory today, symlinks resolved, must still be inside a root (or be
    // one of the root's own ancestors, when the root is not created yet). The file's own name is
    // not resolved: whatever is there (a link a container put in its place) is replaced by the
    // agent, never followed.
    let dir = full.parent().unwrap_or(&full);
    let Some(existing) = dir.ancestors().find(|a| a.symlink_metadata().is_ok()) else {
        return Ok(full);
    };
    let real = existing
        .canonicalize()
        .map_err(|e| format!("cannot resolve {}: {e}", existing.display()))?;
    let inside = roots.iter().any(|root| match root.canonicalize() {
        Ok(root) => real.starts_with(root),
        // The root is not created yet: what exists is one of its ancestors, nothing below can lead out.
        Err(_) => root.starts_with(existing),
    });
    if inside {
        Ok(full)
    } else {
        Err(format!(
            "{} leads to {} through a symlink, outside the allowed directories",
            full.display(),
            real.display()
        ))
    }
}

/// Whether `a` and `b` overlap: one of them is the other, or contains it (by their components).
fn overlap(a: &Path, b: &Path) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// Why `secrets_dir` may not be the compose file's secrets directory, if so: it overlaps one of
/// `places` (what they are, the directory). The agent removes old secret files in it, so it must be
/// a directory of its own; removing only what it made is the second line of defence.
pub fn secrets_dir_clash(secrets_dir: &Path, places: &[(&str, PathBuf)]) -> Option<String> {
    let (what, place) = places.iter().find(|(_, dir)| overlap(secrets_dir, dir))?;
    Some(format!(
        "{} overlaps {what} {} (one contains the other): the agent removes old secret files there, so it must be a directory of its own on a tmpfs, such as the default {}",
        secrets_dir.display(),
        place.display(),
        super::defaults::SECRETS_DIR
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn overlapping_directories() {
        let cases = [
            ("/srv", "/srv/orange", true),
            ("/srv/orange", "/srv", true),
            ("/srv/orange", "/srv/orange", true),
            ("/srv/orange/", "/srv/./orange", true),
            ("/", "/run/kicky-agent/secrets", true),
            ("/run/kicky-agent/secrets", "/srv/orange", false),
            ("/srv/orange", "/srv/orange-data", false),
            (
                "/run/kicky-agent/secrets",
                "/run/kicky-agent/secrets-old",
                false,
            ),
            ("/var/lib/kicky-agent", "/run/kicky-agent/secrets", false),
        ];
        for (a, b, want) in cases {
            assert_eq!(overlap(Path::new(a), Path::new(b)), want, "{a} and {b}");
            assert_eq!(overlap(Path::new(b), Path::new(a)), want, "{b} and {a}");
        }
        let places = [
            ("the workdir", PathBuf::from("/srv/orange")),
            ("state_dir", PathBuf::from("/var/lib/k")),
        ];
        let why = secrets_dir_clash(Path::new("/srv"), &places).unwrap();
        assert!(why.contains("overlaps the workdir /srv/orange"), "{why}");
        assert!(secrets_dir_clash(Path::new("/run/k/secrets"), &places).is_none());
    }

    #[test]
    fn relative_paths_stay_in_workdir() {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        std::fs::create_dir_all(work.join("conf")).unwrap();
        assert_eq!(
            confine(Path::new("conf/a.yml"), &work, &[]),
            Ok(work.join("conf/a.yml"))
        );
        assert_eq!(
            confine(Path::new("new/dir/a.yml"), &work, &[]),
            Ok(work.join("new/dir/a.yml"))
        );
        assert!(confine(Path::new("../a.yml"), &work, &[])
            .unwrap_err()
            .contains("`..`"));
        assert!(confine(Path::new("conf/../../a.yml"), &work, &[]).is_err());
        // A workdir that does not exist yet cannot be escaped from.
        assert!(confine(Path::new("a.yml"), &dir.path().join("later"), &[]).is_ok());
    }

    #[test]
    fn absolute_paths_need_an_allowed_dir() {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        let logs = dir.path().join("logs");
        std::fs::create_dir_all(&logs).unwrap();
        let target = logs.join("promtail.yml");
        assert!(confine(&target, &work, &[])
            .unwrap_err()
            .contains("files_allowed_dirs"));
        assert_eq!(
            confine(&target, &work, std::slice::from_ref(&logs)),
            Ok(target.clone())
        );
        assert!(confine(Path::new("/etc/passwd"), &work, &[logs]).is_err());
    }

    #[test]
    fn symlinks_that_lead_out_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&work).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        symlink(&outside, work.join("conf")).unwrap();
        let err = confine(Path::new("conf/a.yml"), &work, &[]).unwrap_err();
        assert!(err.contains("through a symlink"), "{err}");
        // A link in the file's own place is the agent's to replace, not a way out.
        symlink(outside.join("x"), work.join("file.yml")).unwrap();
        assert_eq!(
            confine(Path::new("file.yml"), &work, &[]),
            Ok(work.join("file.yml"))
        );
        // A symlink that stays inside is fine.
        std::fs::create_dir_all(work.join("real")).unwrap();
        symlink(work.join("real"), work.join("alias")).unwrap();
        assert!(confine(Path::new("alias/a.yml"), &work, &[]).is_ok());
    }
}
