//! The one place managed files are opened, read and written: the env file, the fetched files, the
//! secret files, the state file, the snapshots of the last good release, the compose file and the
//! env files it names.
//!
//! The agent runs as root, and a managed file's directory may be writable by a container (a bind
//! mount): whatever a container puts on a managed path must not make the agent read or write
//! anything else. So a path is never handed to the kernel whole. Its directory is opened from `/`
//! one component at a time, each with `O_NOFOLLOW | O_DIRECTORY` (a link anywhere on the way is an
//! error that names it: a container that swapped a directory for a link to the host redirects
//! nothing), and the file is opened, created, renamed and removed relative to that handle. In the
//! file's own place, anything but a regular file (a link, a FIFO, a device, a directory) counts as
//! absent: it is never read (a FIFO would block the sync for good) nor followed, and a write
//! replaces it.
//!
//! Writes are atomic and durable: a temp file is created in the target's own directory (so the
//! rename cannot cross file systems), given its final mode before any byte is written, filled,
//! `fsync`ed, renamed over the target, and then the directory is `fsync`ed so the rename itself
//! survives a power cut. A reader sees the old file or the new one, never a mix; a failure at any
//! step leaves the old file as it was.

use std::ffi::{OsStr, OsString};
use std::fs::{File, Permissions};
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::fcntl::{openat, renameat, AtFlags, OFlag, AT_FDCWD};
use nix::sys::stat::{fstatat, mkdirat, FileStat, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};

use crate::error::input_error;

/// What a text file the agent reads (the env file, the compose file and its env files, the state
/// file) may weigh: far above any real one, far below what would hurt.
pub const MAX_TEXT: u64 = 16 * 1024 * 1024;

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

/// A directory opened without following a link anywhere on its path (see the module's doc).
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

impl Dir {
    /// Opens the directory at `path`; `None` when it, or a directory on the way, does not exist.
    pub fn open(path: &Path) -> io::Result<Option<Dir>> {
        Dir::walk(path, None)
    }

    /// Opens the directory at `path`, first creating what is missing of it with `mode` (less the
    /// umask).
    pub fn create(path: &Path, mode: u32) -> io::Result<Dir> {
        Dir::walk(path, Some(mode))?.ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }

    fn walk(path: &Path, create: Option<u32>) -> io::Result<Option<Dir>> {
        let start = if path.is_absolute() { "/" } else { "." };
        let mut fd = openat(AT_FDCWD, start, DIR_FLAGS, Mode::empty())?;
        let mut walked = PathBuf::from(start);
        for component in path.components() {
            let name = match component {
                Component::RootDir | Component::CurDir => continue,
                Component::Normal(name) => name,
                Component::ParentDir | Component::Prefix(_) => {
                    let message = format!("{} contains `..`", path.display());
                    return Err(io::Error::new(io::ErrorKind::InvalidInput, message));
                }
            };
            walked.push(name);
            let mut next = openat(&fd, name, DIR_FLAGS, Mode::empty());
            if let (Err(Errno::ENOENT), Some(mode)) = (&next, create) {
                match mkdirat(&fd, name, Mode::from_bits_truncate(mode)) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(e.into()),
                }
                next = openat(&fd, name, DIR_FLAGS, Mode::empty());
            }
            fd = match next {
                Ok(next) => next,
                Err(Errno::ENOENT) => return Ok(None),
                Err(Errno::ENOTDIR | Errno::ELOOP) => {
                    return Err(not_a_directory(&fd, name, &walked))
                }
                Err(e) => return Err(e.into()),
            };
        }
        Ok(Some(Dir {
            fd,
            path: path.to_path_buf(),
        }))
    }

    /// The regular file `name` in this directory, opened to read; `None` when there is none, or
    /// something else in its place (a link, a FIFO, a device, a directory).
    fn open_file(&self, name: &OsStr) -> io::Result<Option<File>> {
        // Looked at first, so that a FIFO or a device is never opened at all.
        if !self
            .stat(name)?
            .is_some_and(|st| is_kind(&st, SFlag::S_IFREG))
        {
            return Ok(None);
        }
        let flags = OFlag::O_RDONLY
            | OFlag::O_NOFOLLOW
            | OFlag::O_NONBLOCK
            | OFlag::O_NOCTTY
            | OFlag::O_CLOEXEC;
        let file = match openat(&self.fd, name, flags, Mode::empty()) {
            Ok(fd) => File::from(fd),
            Err(Errno::ENOENT | Errno::ELOOP) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        // Swapped between the look and the open: O_NONBLOCK kept a FIFO from blocking.
        Ok(file.metadata()?.is_file().then_some(file))
    }

    /// The directory `name` in this one; `None` when there is none, or something else in its
    /// place (a link to a directory included).
    pub fn child(&self, name: &OsStr) -> io::Result<Option<Dir>> {
        match openat(&self.fd, name, DIR_FLAGS, Mode::empty()) {
            Ok(fd) => Ok(Some(Dir {
                fd,
                path: self.path.join(name),
            })),
            Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// What is at `name`, the entry itself (a link is not followed); `None` when nothing.
    pub fn kind(&self, name: &OsStr) -> io::Result<Option<Kind>> {
        Ok(self.stat(name)?.map(|st| {
            if is_kind(&st, SFlag::S_IFREG) {
                Kind::File
            } else if is_kind(&st, SFlag::S_IFDIR) {
                Kind::Dir
            } else {
                Kind::Other
            }
        }))
    }

    fn stat(&self, name: &OsStr) -> io::Result<Option<FileStat>> {
        match fstatat(&self.fd, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The directory's own owner, mode and type.
    pub fn meta(&self) -> io::Result<FileStat> {
        Ok(nix::sys::stat::fstat(&self.fd)?)
    }

    /// Whether the directory is on a tmpfs (or a ramfs): what is written there never reaches a
    /// disk.
    pub fn on_tmpfs(&self) -> io::Result<bool> {
        const RAMFS_MAGIC: i64 = 0x8584_58f6;
        let kind = nix::sys::statfs::fstatfs(&self.fd)?.filesystem_type();
        Ok(kind == nix::sys::statfs::TMPFS_MAGIC || kind.0 as i64 == RAMFS_MAGIC)
    }

    /// The names in the directory (not `.` and `..`).
    pub fn names(&self) -> io::Result<Vec<OsString>> {
        let mut dir = nix::dir::Dir::openat(&self.fd, ".", DIR_FLAGS, Mode::empty())?;
        let mut names = Vec::new();
        for entry in dir.iter() {
            let name = entry?.file_name().to_bytes().to_vec();
            if name != b"." && name != b".." {
                names.push(OsStr::from_bytes(&name).to_os_string());
            }
        }
        Ok(names)
    }

    /// Removes the entry `name` (a file, a link: never what it points to).
    pub fn remove(&self, name: &OsStr) -> io::Result<()> {
        Ok(unlinkat(&self.fd, name, UnlinkatFlags::NoRemoveDir)?)
    }

    /// Removes the directory `name` if it is empty.
    pub fn remove_dir(&self, name: &OsStr) -> io::Result<()> {
        Ok(unlinkat(&self.fd, name, UnlinkatFlags::RemoveDir)?)
    }

    fn sync(&self) -> io::Result<()> {
        Ok(nix::unistd::fsync(&self.fd)?)
    }
}

/// What an entry of a [`Dir`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    /// A link, a FIFO, a device, a socket.
    Other,
}

fn is_kind(st: &FileStat, kind: SFlag) -> bool {
    st.st_mode & SFlag::S_IFMT.bits() == kind.bits()
}

/// Why the directory on the way, `name` in `parent`, was not opened.
fn not_a_directory(parent: &OwnedFd, name: &OsStr, path: &Path) -> io::Error {
    let link = fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW)
        .is_ok_and(|st| is_kind(&st, SFlag::S_IFLNK));
    let message = match link {
        true => format!(
            "{} is a symbolic link: the agent never follows a link to a managed file's directory (whoever can write the directory above could point it at the host); make it the directory itself",
            path.display()
        ),
        false => format!("{} is not a directory", path.display()),
    };
    io::Error::new(io::ErrorKind::NotADirectory, message)
}

/// A managed file's directory and name.
fn split(path: &Path) -> io::Result<(&Path, &OsStr)> {
    let name = path.file_name().ok_or_else(|| {
        let message = format!("{} does not name a file", path.display());
        io::Error::new(io::ErrorKind::InvalidInput, message)
    })?;
    Ok((parent_dir(path), name))
}

/// Opens the regular file at `path` to read, never through a link (see the module's doc):
/// `Ok(None)` when there is nothing there, or something other than a regular file (which a write
/// then replaces whole). A link on the way to it is an error.
pub fn open_regular(path: &Path) -> io::Result<Option<File>> {
    let (dir, name) = split(path)?;
    match Dir::open(dir)? {
        Some(dir) => dir.open_file(name),
        None => Ok(None),
    }
}

/// Reads the managed text file at `path`, opened as [`open_regular`] does: `None` when it is
/// absent. More than `limit` bytes is bad input.
pub fn read_text(path: &Path, limit: u64) -> Result<Option<String>> {
    match open_regular(path).with_context(|| format!("failed to open {}", path.display()))? {
        Some(file) => text_of(&file, path, limit).map(Some),
        None => Ok(None),
    }
}

/// The text of `file`, opened by [`open_regular`] from `path`. More than `limit` bytes is bad
/// input.
pub fn text_of(file: &File, path: &Path, limit: u64) -> Result<String> {
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("failed to read {}", path.display()))?;
    if bytes.len() as u64 > limit {
        return Err(input_error(format!(
            "{} is larger than {} MiB: refused",
            path.display(),
            limit / (1024 * 1024)
        )));
    }
    String::from_utf8(bytes)
        .map_err(|_| input_error(format!("{} is not UTF-8 text", path.display())))
}

/// Whether the managed file at `path` holds exactly `contents` (read no further than that).
pub fn holds(path: &Path, contents: &[u8]) -> Result<bool> {
    match open_regular(path).with_context(|| format!("failed to open {}", path.display()))? {
        Some(mut file) => same_bytes(&mut file, contents)
            .with_context(|| format!("failed to read {}", path.display())),
        None => Ok(false),
    }
}

pub(crate) fn same_bytes(file: &mut File, contents: &[u8]) -> io::Result<bool> {
    let mut current = Vec::with_capacity(contents.len());
    file.take(contents.len() as u64 + 1)
        .read_to_end(&mut current)?;
    Ok(current == contents)
}

/// Removes what is at `path` (a file, a link: never what it points to); nothing there is fine.
pub fn remove(path: &Path) -> io::Result<()> {
    let (dir, name) = split(path)?;
    let Some(dir) = Dir::open(dir)? else {
        return Ok(());
    };
    match dir.remove(name) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// A file being written: nothing is visible at `target` until [`AtomicFile::commit`].
/// Dropped without a commit, the temp file is removed and the target is untouched.
pub struct AtomicFile {
    dir: Dir,
    name: OsString,
    temp: OsString,
    file: File,
    target: PathBuf,
    committed: bool,
}

impl AtomicFile {
    /// Starts a new version of `target`, creating its directory when missing.
    pub fn create(target: &Path, mode: u32) -> Result<Self> {
        let (dir, name) = split(target)?;
        let dir = Dir::create(dir, 0o777).map_err(|err| {
            let hint = read_only_hint(&err);
            anyhow::Error::new(err).context(format!(
                "failed to create directory {}{hint}",
                dir.display()
            ))
        })?;
        let (temp, file) = create_temp(&dir, name, mode).map_err(|err| {
            let hint = read_only_hint(&err);
            anyhow::Error::new(err).context(format!(
                "failed to create a temp file next to {}{hint}",
                target.display()
            ))
        })?;
        let new = AtomicFile {
            dir,
            name: name.to_os_string(),
            temp,
            file,
            target: target.to_path_buf(),
            committed: false,
        };
        // The umask may have narrowed the mode given at creation: set it exactly.
        new.file
            .set_permissions(Permissions::from_mode(mode))
            .with_context(|| {
                format!(
                    "failed to set the mode of a temp file for {}",
                    target.display()
                )
            })?;
        Ok(new)
    }

    pub fn file(&mut self) -> &mut File {
        &mut self.file
    }

    pub fn target(&self) -> &Path {
        &self.target
    }

    /// What was written so far, read back through the temp file's own handle (never by name).
    pub fn written(&self) -> io::Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let file = &self.file;
        let mut bytes = vec![0; file.metadata()?.len() as usize];
        file.read_exact_at(&mut bytes, 0)?;
        Ok(bytes)
    }

    /// Makes the new content durable and visible at the target.
    pub fn commit(mut self) -> Result<()> {
        let target = self.target.display().to_string();
        self.file
            .sync_all()
            .with_context(|| format!("failed to fsync the new {target}"))?;
        renameat(&self.dir.fd, &*self.temp, &self.dir.fd, &*self.name)
            .map_err(io::Error::from)
            .with_context(|| format!("failed to rename the new file over {target}"))?;
        self.committed = true;
        self.dir
            .sync()
            .with_context(|| format!("failed to fsync directory {}", self.dir.path.display()))
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = self.dir.remove(&self.temp);
        }
    }
}

/// The name of the file a temp file named `entry` was made for (`.<name>.<6 letters or
/// digits>.tmp`, as [`AtomicFile::create`] names them), if it is one: what a killed sync leaves.
pub fn temp_target(entry: &str) -> Option<&str> {
    let (name, random) = entry
        .strip_prefix('.')?
        .strip_suffix(".tmp")?
        .rsplit_once('.')?;
    let random_ok = random.len() == 6 && random.bytes().all(|b| b.is_ascii_alphanumeric());
    (random_ok && !name.is_empty()).then_some(name)
}

/// Creates `.<name>.<six random letters or digits>.tmp` in `dir`, never through a link: the
/// names [`temp_target`] reads ([`crate::sync::leftovers`] looks for them).
fn create_temp(dir: &Dir, name: &OsStr, mode: u32) -> io::Result<(OsString, File)> {
    // Read and write: a sync reads back what it fetched (`AtomicFile::written`) to judge it.
    let flags =
        OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut tries = 0;
    loop {
        let mut temp = OsString::from(".");
        temp.push(name);
        temp.push(format!(
            ".{}.tmp",
            std::iter::repeat_with(fastrand::alphanumeric)
                .take(6)
                .collect::<String>()
        ));
        match openat(&dir.fd, &*temp, flags, Mode::from_bits_truncate(mode)) {
            Ok(fd) => return Ok((temp, File::from(fd))),
            Err(Errno::EEXIST) if tries < 100 => tries += 1,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Writes `contents` to `target` atomically unless it already holds exactly those bytes, in which
/// case the file is left alone (only its mode is corrected when it differs, on the file itself:
/// a link there is replaced, never followed).
pub fn write_if_changed(target: &Path, contents: &[u8], mode: u32) -> Result<Written> {
    if let Some(mut file) =
        open_regular(target).with_context(|| format!("failed to open {}", target.display()))?
    {
        let same = same_bytes(&mut file, contents)
            .with_context(|| format!("failed to read {}", target.display()))?;
        if same {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn temp_names_read_back_to_their_target() {
        for (entry, want) in [
            (".env.aB3xY9.tmp", Some("env")),
            ("..env.aB3xY9.tmp", Some(".env")),
            (".app.yml.000000.tmp", Some("app.yml")),
            (".env.aB3xY.tmp", None),
            (".env.aB3x-9.tmp", None),
            ("env.aB3xY9.tmp", None),
            (".env.aB3xY9", None),
            ("..aB3xY9.tmp", None),
        ] {
            assert_eq!(temp_target(entry), want, "{entry}");
        }
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

    /// A directory on the way swapped for a link (to a host directory holding a file of the same
    /// name): no read, no write, no temp file goes through it; the error names the link.
    #[test]
    fn a_link_on_the_way_is_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("host");
        fs::create_dir_all(&host).unwrap();
        fs::write(host.join(".env"), b"HOST=secret\n").unwrap();
        fs::create_dir_all(dir.path().join("work")).unwrap();
        std::os::unix::fs::symlink(&host, dir.path().join("work/conf")).unwrap();
        let path = dir.path().join("work/conf/.env");
        let link = dir.path().join("work/conf").display().to_string();
        let named = |err: String| {
            assert!(
                err.contains(&link) && err.contains("symbolic link"),
                "{err}"
            )
        };
        named(open_regular(&path).unwrap_err().to_string());
        named(format!("{:#}", read_text(&path, MAX_TEXT).unwrap_err()));
        named(format!(
            "{:#}",
            write_if_changed(&path, b"A=1\n", 0o600).unwrap_err()
        ));
        named(format!(
            "{:#}",
            AtomicFile::create(&path, 0o600).err().unwrap()
        ));
        named(format!("{:#}", remove(&path).unwrap_err()));
        assert_eq!(fs::read(host.join(".env")).unwrap(), b"HOST=secret\n");
        assert_eq!(
            fs::read_dir(&host).unwrap().count(),
            1,
            "nothing written there"
        );
        // A file where a directory should be is said so too.
        fs::write(dir.path().join("work/file"), b"").unwrap();
        let err = open_regular(&dir.path().join("work/file/x")).unwrap_err();
        assert!(err.to_string().contains("is not a directory"), "{err}");
        // What is missing on the way is no file, and is made for a write.
        assert!(open_regular(&dir.path().join("work/new/dir/f"))
            .unwrap()
            .is_none());
        let deep = dir.path().join("work/new/dir/f");
        assert_eq!(
            write_if_changed(&deep, b"x", 0o600).unwrap(),
            Written::Replaced
        );
        assert!(
            Dir::open(Path::new("/tmp/../etc")).is_err(),
            "`..` is refused"
        );
    }

    /// A FIFO or a device where a managed file belongs is no file: never opened to read (a FIFO
    /// would block), and a write replaces it.
    #[test]
    fn a_fifo_or_a_device_counts_as_absent() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join(".env");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(open_regular(&fifo).unwrap().is_none());
        assert_eq!(read_text(&fifo, MAX_TEXT).unwrap(), None);
        assert!(!holds(&fifo, b"").unwrap());
        assert_eq!(
            write_if_changed(&fifo, b"A=1\n", 0o600).unwrap(),
            Written::Replaced
        );
        assert_eq!(
            read_text(&fifo, MAX_TEXT).unwrap().as_deref(),
            Some("A=1\n")
        );
        assert!(open_regular(Path::new("/dev/null")).unwrap().is_none());
        let root = Dir::open(Path::new("/")).unwrap().unwrap();
        assert_eq!(root.kind(OsStr::new("dev")).unwrap(), Some(Kind::Dir));
    }

    /// A text file over the limit is refused as bad input, never read whole.
    #[test]
    fn a_text_file_is_read_up_to_its_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        fs::write(&path, vec![b'a'; 2 * 1024 * 1024 + 1]).unwrap();
        let err = read_text(&path, 2 * 1024 * 1024).unwrap_err();
        assert!(err.to_string().contains("larger than 2 MiB"), "{err}");
        assert_eq!(crate::error::exit_status(&err), 2);
        assert_eq!(
            read_text(&path, 3 * 1024 * 1024).unwrap().unwrap().len(),
            2 * 1024 * 1024 + 1
        );
        assert!(holds(&path, &vec![b'a'; 2 * 1024 * 1024 + 1]).unwrap());
        assert!(!holds(&path, &vec![b'a'; 2 * 1024 * 1024]).unwrap());
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
