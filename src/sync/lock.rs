//! One sync at a time per project. A manual `kicky-agent sync` while the daemon syncs (or two
//! daemons given one config) would act on the same containers and remove each other's new or
//! rollback containers. Each sync holds an exclusive `flock` on `<state_dir>/<project>.lock`; the
//! kernel drops it when the process dies, so a killed sync never leaves a stale lock. Who holds it
//! is written beside it, for the message of the sync that waited in vain.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use tokio::time::Instant;

/// Held while a sync runs; released when dropped (or when the process dies).
pub struct SyncLock {
    holder: PathBuf,
    _lock: Flock<File>,
}

impl Drop for SyncLock {
    fn drop(&mut self) {
        // Before the lock goes: the next holder writes its own.
        let _ = std::fs::remove_file(&self.holder);
    }
}

/// Takes the lock of `project`, waiting up to `wait` for the sync that holds it.
pub async fn acquire(state_dir: &Path, project: &str, wait: Duration) -> Result<SyncLock> {
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("failed to create {}", state_dir.display()))?;
    let path = state_dir.join(format!("{project}.lock"));
    let holder = state_dir.join(format!("{project}.lock.holder"));
    let started = Instant::now();
    let mut told = false;
    loop {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
            .open(&path)
            .with_context(|| format!("failed to open the lock file {}", path.display()))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => {
                let me = format!(
                    "pid {} (`{}`) since {}\n",
                    std::process::id(),
                    command_line(),
                    super::state::now()
                );
                if let Err(err) = crate::atomic::write_if_changed(&holder, me.as_bytes(), 0o600) {
                    tracing::debug!("could not record the lock's holder: {err:#}");
                }
                return Ok(SyncLock {
                    holder,
                    _lock: lock,
                });
            }
            Err((_, Errno::EWOULDBLOCK)) => {}
            Err((_, errno)) => {
                return Err(errno).with_context(|| format!("failed to lock {}", path.display()))
            }
        }
        let who = crate::atomic::read_text(&holder, 4096)
            .ok()
            .flatten()
            .map(|text| text.trim().to_string())
            .unwrap_or_else(|| "a process that did not say who it is".to_string());
        if started.elapsed() >= wait {
            bail!(
                "another sync of project {project} is running: {who}; gave up after waiting {} (lock_timeout)",
                humantime::format_duration(wait)
            );
        }
        if !told {
            tracing::info!("another sync of project {project} is running ({who}): waiting for it");
            told = true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `kicky-agent sync`, as the process was started (the program's file name, then its arguments).
fn command_line() -> String {
    let mut args = std::env::args();
    let program = args
        .next()
        .map(|p| {
            Path::new(&p)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or(p)
        })
        .unwrap_or_default();
    std::iter::once(program)
        .chain(args)
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_sync_waits_then_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let first = acquire(dir.path(), "orange", Duration::from_secs(1))
            .await
            .unwrap();
        let err = acquire(dir.path(), "orange", Duration::from_millis(300))
            .await
            .err()
            .expect("the lock is held");
        let message = format!("{err:#}");
        assert!(
            message.contains("another sync of project orange is running"),
            "{message}"
        );
        assert!(
            message.contains(&format!("pid {}", std::process::id())),
            "{message}"
        );
        // Another project is not held up.
        acquire(dir.path(), "lemon", Duration::ZERO).await.unwrap();
        drop(first);
        acquire(dir.path(), "orange", Duration::ZERO).await.unwrap();
    }
}
