//! The one place files are written: atomically, durably, with the mode asked for.
//!
//! A temp file is created in the target's own directory (so the rename cannot cross file systems),
//! given its final mode before any byte is written, filled, `fsync`ed, renamed over the target, and
//! then the directory is `fsync`ed so the rename itself survives a power cut. A reader sees the old
//! file or the new one, never a mix; a failure at any step leaves the old file as it was.

use std::fs::{self, File, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// What [`write_if_changed`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Same bytes and mode already there: the file was not touched.
    Unchanged,
    /// Same bytes, but the mode differed and was set.
    ModeFixed,
    /// The file was created or replaced.
    Replaced,
}

/// A file being written: nothing is visible at `target` until [`AtomicFile::commit`].
/// Dropped without a commit, the temp file is removed and the target is untouched.
pub struct AtomicFile {
    tmp: tempfile::NamedTempFile,
    target: PathBuf,
}

impl AtomicFile {
    /// Starts a new version of `target`, creating its directory when missing.
    pub fn create(target: &Path, mode: u32) -> Result<Self> {
        let dir = parent_dir(target);
        fs::create_dir_all(dir)
            .with_context(|| format!("failed to create directory {}", dir.display()))?;
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".tmp")
            .permissions(Permissions::from_mode(mode))
            .tempfile_in(dir)
            .with_context(|| {
                format!("failed to create a temp file next to {}", target.display())
            })?;
        // The umask may have narrowed the mode given at creation: set it exactly.
        tmp.as_file()
            .set_permissions(Permissions::from_mode(mode))
            .with_context(|| {
                format!(
                    "failed to set the mode of a temp file for {}",
                    target.display()
                )
            })?;
        Ok(AtomicFile {
            tmp,
            target: target.to_path_buf(),
        })
    }

    pub fn file(&mut self) -> &mut File {
        self.tmp.as_file_mut()
    }

    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Makes the new content durable and visible at the target.
    pub fn commit(self) -> Result<()> {
        let target = self.target;
        self.tmp
            .as_file()
            .sync_all()
            .with_context(|| format!("failed to fsync the new {}", target.display()))?;
        self.tmp
            .persist(&target)
            .map_err(|e| e.error)
            .with_context(|| format!("failed to rename the new file over {}", target.display()))?;
        sync_dir(parent_dir(&target))
    }
}

/// Writes `contents` to `target` atomically unless it already holds exactly those bytes, in which
/// case the file is left alone (only its mode is corrected when it differs).
pub fn write_if_changed(target: &Path, contents: &[u8], mode: u32) -> Result<Written> {
    match fs::read(target) {
        Ok(current) if current == contents => {
            let meta = fs::metadata(target)
                .with_context(|| format!("failed to stat {}", target.display()))?;
            if meta.permissions().mode() & 0o7777 == mode {
                return Ok(Written::Unchanged);
            }
            fs::set_permissions(target, Permissions::from_mode(mode))
                .with_context(|| format!("failed to set the mode of {}", target.display()))?;
            return Ok(Written::ModeFixed);
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("failed to read {}", target.display())),
    }
    let mut file = AtomicFile::create(target, mode)?;
    file.file()
        .write_all(contents)
        .with_context(|| format!("failed to write the new {}", target.display()))?;
    file.commit()?;
    Ok(Written::Replaced)
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("failed to fsync directory {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn writes_with_mode_and_skips_identical_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/.env");
        assert_eq!(
            write_if_changed(&path, b"A=1\n", 0o600).unwrap(),
            Written::Replaced
        );
        assert_eq!(fs::read(&path).unwrap(), b"A=1\n");
        assert_eq!(mode_of(&path), 0o600);

        let inode = std::os::unix::fs::MetadataExt::ino(&fs::metadata(&path).unwrap());
        assert_eq!(
            write_if_changed(&path, b"A=1\n", 0o600).unwrap(),
            Written::Unchanged
        );
        assert_eq!(
            std::os::unix::fs::MetadataExt::ino(&fs::metadata(&path).unwrap()),
            inode
        );

        assert_eq!(
            write_if_changed(&path, b"A=1\n", 0o640).unwrap(),
            Written::ModeFixed
        );
        assert_eq!(mode_of(&path), 0o640);

        assert_eq!(
            write_if_changed(&path, b"A=2\n", 0o600).unwrap(),
            Written::Replaced
        );
        assert_eq!(fs::read(&path).unwrap(), b"A=2\n");
        assert_eq!(mode_of(&path), 0o600);
        // No temp file is left behind.
        assert_eq!(fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
    }

    #[test]
    fn an_uncommitted_file_leaves_the_target_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"old").unwrap();
        {
            let mut f = AtomicFile::create(&path, 0o644).unwrap();
            f.file().write_all(b"new").unwrap();
        }
        assert_eq!(fs::read(&path).unwrap(), b"old");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
