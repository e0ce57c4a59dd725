//! The daemon's control socket: `kicky-agent resync` asks the running daemon to sync now, and the
//! daemon streams its progress lines and the result back. A unix socket, mode 0600, in a
//! directory only root can enter.
//!
//! The protocol is lines: the client sends `resync`; the daemon answers `progress: <line>` any
//! number of times, then `result: <exit status> <summary or error>` and closes.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

pub struct ControlServer {
    listener: UnixListener,
    path: PathBuf,
}

impl ControlServer {
    /// Binds the socket, replacing a stale one left by a daemon that died.
    pub fn bind(path: &Path) -> Result<ControlServer> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("failed to create {}", dir.display()))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .with_context(|| format!("failed to restrict {}", dir.display()))?;
        }
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("failed to remove the stale socket {}", path.display())
                })
            }
        }
        let listener = UnixListener::bind(path)
            .with_context(|| format!("failed to listen on {}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("failed to restrict {}", path.display()))?;
        Ok(ControlServer {
            listener,
            path: path.to_path_buf(),
        })
    }

    /// The next client that asked for a resync.
    pub async fn accept(&self) -> Result<Client> {
        loop {
            let (stream, _) = self
                .listener
                .accept()
                .await
                .context("the control socket failed")?;
            let mut reader = BufReader::new(stream);
            let mut request = String::new();
            if reader.read_line(&mut request).await.is_err() {
                continue;
            }
            if request.trim() == "resync" {
                return Ok(Client {
                    stream: reader.into_inner(),
                });
            }
            let mut stream = reader.into_inner();
            let _ = stream.write_all(b"result: 2 unknown request\n").await;
        }
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A `resync` client waiting for the result.
pub struct Client {
    stream: UnixStream,
}

impl Client {
    /// Sends a progress line; a client that went away is not an error.
    pub async fn progress(&mut self, line: &str) {
        let _ = self
            .stream
            .write_all(format!("progress: {line}\n").as_bytes())
            .await;
    }

    pub async fn result(mut self, status: u8, text: &str) {
        let one_line = text.replace('\n', " / ");
        let _ = self
            .stream
            .write_all(format!("result: {status} {one_line}\n").as_bytes())
            .await;
    }
}

/// Asks the daemon at `path` to resync, printing its progress as it comes. `Ok(None)` when no
/// daemon listens there.
pub async fn resync(path: &Path, mut print: impl FnMut(&str)) -> Result<Option<u8>> {
    let stream = match UnixStream::connect(path).await {
        Ok(stream) => stream,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None)
        }
        Err(e) => {
            return Err(e)
                .with_context(|| format!("failed to reach the daemon at {}", path.display()))
        }
    };
    let (read, mut write) = stream.into_split();
    write
        .write_all(b"resync\n")
        .await
        .context("failed to ask the daemon for a resync")?;
    let mut lines = BufReader::new(read).lines();
    while let Some(line) = lines
        .next_line()
        .await
        .context("the daemon's answer broke off")?
    {
        if let Some(progress) = line.strip_prefix("progress: ") {
            print(progress);
        } else if let Some(result) = line.strip_prefix("result: ") {
            let (status, text) = result.split_once(' ').unwrap_or((result, ""));
            print(text);
            return Ok(Some(status.parse().unwrap_or(1)));
        }
    }
    bail!("the daemon closed the connection without a result")
}
