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
        fs::create_dir_all(dir).map_err(|err| {
            let hint = read_only_hint(&err);
            anyhow::Error::new(err).context(format!(
                "failed to create directory {}{hint}",
                dir.display()
            ))
        })?;
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".tmp")
            .permissions(Permissions::from_mode(mode))
            .tempfile_in(dir)
            .map_err(|err| {
                let hint = read_only_hint(&err);
                anyhow::Error::new(err).context(format!(
                    "failed to create a temp file next to {}{hint}",
                    target.display()
                ))
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

    /// What was written so far, read back through the temp file's own handle (never by name).
    pub fn written(&self) -> io::Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let file = self.tmp.as_file();
        let mut bytes = vec![0; file.metadata()?.len() as usize];
        file.read_exact_at(&mut bytes, 0)?;
        Ok(bytes)
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

/// Opens the regular file at `path` to read, never through a symbolic link: a directory the
/// agent writes to may be writable by a container, which could put a link to a host file where a
/// managed file was. `Ok(None)` when there is nothing there, or something other than a regular
/// file (which the agent then replaces whole, never follows).
pub fn open_regular(path: &Path) -> io::Result<Option<File>> {
    use std::os::unix::fs::OpenOptionsExt;
    let opened = fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC | nix::libc::O_NONBLOCK)
        .open(path);
    let file = match opened {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        // ELOOP: a symbolic link.
        Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(file.metadata()?.is_file().then_some(file))
}

/// Writes `contents` to `target` atomically unless it already holds exactly those bytes, in which
/// case the file is left alone (only its mode is corrected when it differs, on the file itself:
/// a link there is replaced, never followed).
pub fn write_if_changed(target: &Path, contents: &[u8], mode: u32) -> Result<Written> {
    if let Some(mut file) =
        open_regular(target).with_context(|| format!("failed to open {}", target.display()))?
    {
        let mut current = Vec::new();
        io::Read::read_to_end(&mut file, &mut current)
            .with_context(|| format!("failed to read {}", target.display()))?;
        if current == contents {
            let meta = file
                .metadata()
                .with_context(|| format!("failed to stat {}", target.display()))?;
            if meta.permissions().mode() & 0o7777 == mode {
                return Ok(Written::Unchanged);
            }
            file.set_permissions(Permissions::from_mode(mode))
                .with_context(|| format!("failed to set the mode of {}", target.display()))?;
            return Ok(Written::ModeFixed);
        }
    }
    let mut file = AtomicFile::create(target, mode)?;
    file.file()
        .write_all(contents)
        .with_context(|| format!("failed to write the new {}", target.display()))?;
    file.commit()?;
    Ok(Written::Replaced)
}

/// What to do about a directory that is read-only: under the systemd unit (`ProtectSystem=strict`)
/// every directory but the ones it lists in `ReadWritePaths=` is.
fn read_only_hint(err: &io::Error) -> &'static str {
    if err.raw_os_error() == Some(nix::libc::EROFS) {
        " (read-only here: the kicky-agent unit lets the agent write only under /srv, \
         /var/lib/kicky-agent and /run/kicky-agent; add this directory with `ReadWritePaths=` in \
         a drop-in, `systemctl edit kicky-agent`)"
    } else {
        ""
    }
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

    /// A link put where the file was (by a container that can write the directory) is replaced,
    /// never followed: what it points to keeps its mode and content.
    #[test]
    fn a_link_in_place_of_the_file_is_replaced_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("host-secret");
        fs::write(&host, b"A=1\n").unwrap();
        fs::set_permissions(&host, Permissions::from_mode(0o600)).unwrap();
        let path = dir.path().join(".env");
        std::os::unix::fs::symlink(&host, &path).unwrap();
        // Same bytes, another mode: the mode fix must not reach the host file.
        assert_eq!(
            write_if_changed(&path, b"A=1\n", 0o644).unwrap(),
            Written::Replaced
        );
        assert_eq!(mode_of(&host), 0o600);
        assert!(!fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_symlink());
        std::os::unix::fs::symlink(&host, dir.path().join("other")).unwrap();
        assert!(open_regular(&dir.path().join("other")).unwrap().is_none());
    }

    #[test]
    fn a_read_only_directory_says_how_to_allow_it() {
        let read_only = io::Error::from_raw_os_error(nix::libc::EROFS);
        assert!(read_only_hint(&read_only).contains("ReadWritePaths="));
        let denied = io::Error::from_raw_os_error(nix::libc::EACCES);
        assert_eq!(read_only_hint(&denied), "");
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
