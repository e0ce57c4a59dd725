//! The daemon's control socket: `kicky-agent resync` asks the running daemon to sync now, and the
//! daemon streams its progress lines and the result back. A unix socket, mode 0600.
//!
//! The protocol is lines: the client sends `resync`; the daemon answers `progress: <line>` any
//! number of times, then `result: <exit status> <summary or error>` and closes.
//!
//! Each connection is served by a task of its own, and every read and write is bounded: a client
//! that connects and says nothing, says too much, or stops reading holds up no one else. The
//! socket is never given up on an accept error, and binding it never touches what the agent did
//! not make: a directory it did not create keeps its mode, and a file that is not a stale socket
//! is an error, never deleted.
//!
//! Both ends check who is on the other one (`SO_PEERCRED`) before trusting it: the daemon runs
//! as root, so `resync` believes only an answer from a root process (a socket at the configured
//! path served by anyone else, say a leftover path in a world-writable directory, could print a
//! forged "converged" and exit 0), and the daemon serves only root's clients. A process running
//! as the same user as the other end is trusted too: that user could forge nothing they cannot
//! already do (a developer's daemon and client, both unprivileged).

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;

use crate::release::ReleaseId;
use crate::sync::Target;

/// A request is one short line, sent at once.
const REQUEST_LIMIT: u64 = 256;
const REQUEST_WAIT: Duration = Duration::from_secs(5);
/// A client that does not take a line in this time is let go.
const WRITE_WAIT: Duration = Duration::from_secs(10);

pub struct ControlServer {
    listener: UnixListener,
    path: PathBuf,
}

/// What the daemon tells a waiting client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessage {
    Progress(String),
    Result(u8, String),
}

impl ControlServer {
    /// Binds the socket, replacing a stale one left by a daemon that died.
    pub fn bind(path: &Path) -> Result<ControlServer> {
        if let Some(dir) = path.parent() {
            if !dir.exists() {
                // Made here, so private: only root may reach the socket.
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("failed to create {}", dir.display()))?;
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                    .with_context(|| format!("failed to restrict {}", dir.display()))?;
            }
        }
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => {
                if std::os::unix::net::UnixStream::connect(path).is_ok() {
                    bail!(
                        "{} is the control socket of a kicky-agent daemon that is running: one daemon per config",
                        path.display()
                    );
                }
                std::fs::remove_file(path).with_context(|| {
                    format!("failed to remove the stale socket {}", path.display())
                })?;
            }
            Ok(_) => bail!(
                "{} exists and is not a socket: control_socket must name a path of its own",
                path.display()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e).with_context(|| format!("failed to look at {}", path.display()))
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
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Whether a process running as `peer` at the other end of the control socket may be trusted by
/// this one, running as `own`: root always, else only the same user.
fn trusted(peer: u32, own: u32) -> bool {
    peer == 0 || peer == own
}

/// Who is at the other end of `stream`, and whether this process may trust it.
fn peer_of(stream: &UnixStream) -> Result<(tokio::net::unix::UCred, bool)> {
    let peer = stream
        .peer_cred()
        .context("failed to read the other end's credentials (SO_PEERCRED)")?;
    let own = nix::unistd::geteuid().as_raw();
    Ok((peer, trusted(peer.uid(), own)))
}

fn pid_of(peer: &tokio::net::unix::UCred) -> String {
    peer.pid()
        .map_or_else(|| "unknown".into(), |pid| pid.to_string())
}

/// Serves the socket for the daemon's life: each client that asks for a resync is handed to
/// `on_client` as the sender of its messages.
pub async fn serve(
    server: ControlServer,
    on_client: impl Fn(mpsc::Sender<ClientMessage>, Target) + 'static,
) {
    let on_client = std::rc::Rc::new(on_client);
    loop {
        let stream = match server.listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                // Out of descriptors, a client gone before it was accepted: not the socket's end.
                tracing::warn!("control socket: accept failed: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let on_client = on_client.clone();
        tokio::task::spawn_local(async move {
            if let Err(err) = converse(stream, &*on_client).await {
                tracing::debug!("control client: {err:#}");
            }
        });
    }
}

async fn converse(
    stream: UnixStream,
    on_client: &dyn Fn(mpsc::Sender<ClientMessage>, Target),
) -> Result<()> {
    let (peer, trusted) = peer_of(&stream)?;
    let (read, mut write) = stream.into_split();
    let mut request = String::new();
    let mut reader = BufReader::new(read.take(REQUEST_LIMIT));
    tokio::time::timeout(REQUEST_WAIT, reader.read_line(&mut request))
        .await
        .context("no request in time")?
        .context("the request could not be read")?;
    // Refused after the request is read: closing with it unread would reset the connection, and
    // the client would never see why.
    let target = request_target(&request);
    let refusal = if !trusted {
        tracing::warn!(
            "control socket: refused a client running as uid {} (pid {}): only root may ask this daemon for a resync",
            peer.uid(),
            pid_of(&peer)
        );
        Some("result: 1 refused: only root may ask this daemon for a resync\n")
    } else if target.is_none() {
        Some(if request.ends_with('\n') {
            "result: 2 unknown request (the one request is `resync`, or `resync <release id>`)\n"
        } else {
            "result: 2 no request line (one line, `resync`)\n"
        })
    } else {
        None
    };
    if let Some(answer) = refusal {
        let _ = tokio::time::timeout(WRITE_WAIT, write.write_all(answer.as_bytes())).await;
        return Ok(());
    }
    let (tx, mut rx) = mpsc::channel(64);
    on_client(tx, target.unwrap_or_default());
    while let Some(message) = rx.recv().await {
        let (line, last) = match message {
            ClientMessage::Progress(line) => (format!("progress: {}\n", one_line(&line)), false),
            ClientMessage::Result(status, text) => {
                (format!("result: {status} {}\n", one_line(&text)), true)
            }
        };
        tokio::time::timeout(WRITE_WAIT, write.write_all(line.as_bytes()))
            .await
            .context("the client stopped reading")?
            .context("the client went away")?;
        if last {
            break;
        }
    }
    Ok(())
}

/// What a request line asks for: `resync` (the configured release) or `resync <id>`.
fn request_target(request: &str) -> Option<Target> {
    let request = request.strip_suffix('\n')?;
    match request.split_once(' ') {
        None if request == "resync" => Some(Target::Configured),
        Some(("resync", id)) => ReleaseId::parse(id).ok().map(Target::Release),
        _ => None,
    }
}

/// What the daemon says to a client: redacted (the client's process knows no value), one line.
fn one_line(text: &str) -> String {
    crate::redact::text(text).replace('\n', " / ")
}

/// Asks the daemon at `path` to resync, printing its progress as it comes, for at most `bound`.
/// `Ok(None)` when no daemon listens there; an error, before a word is sent or read, when the
/// process listening there is not root's (nor this user's own).
pub async fn resync(
    path: &Path,
    bound: Duration,
    target: &Target,
    mut print: impl FnMut(&str),
) -> Result<Option<u8>> {
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
    let (peer, trusted) = peer_of(&stream)
        .with_context(|| format!("failed to check who serves {}", path.display()))?;
    if !trusted {
        bail!(
            "{} is served by a process running as uid {} (pid {}), not root: a kicky-agent daemon runs as root, so its answer is not trusted (a socket left or bound there by another user?); remove it, or set control_socket to a path only root can create (the default is {})",
            path.display(),
            peer.uid(),
            pid_of(&peer),
            crate::config::defaults::CONTROL_SOCKET
        );
    }
    let conversation = async {
        let (read, mut write) = stream.into_split();
        let request = match target {
            Target::Configured => "resync\n".to_string(),
            Target::Release(id) => format!("resync {id}\n"),
        };
        write
            .write_all(request.as_bytes())
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
    };
    match tokio::time::timeout(bound, conversation).await {
        Ok(result) => result,
        Err(_) => bail!(
            "no result from the daemon within {} (--timeout); the sync may still be running: see `kicky-agent status`",
            humantime::format_duration(bound)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn send(path: &Path, bytes: &[u8]) -> String {
        let mut stream = UnixStream::connect(path).await.unwrap();
        stream.write_all(bytes).await.unwrap();
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer).await;
        answer
    }

    const RELEASE: &str = "20261207T163000000Z-3f9a1c";

    #[test]
    fn requests_name_a_release_or_none() {
        let release = Target::Release(ReleaseId::parse(RELEASE).unwrap());
        let table = [
            ("resync\n", Some(Target::Configured)),
            (&*format!("resync {RELEASE}\n"), Some(release)),
            ("resync", None),
            ("resync ../../x\n", None),
            ("resync  \n", None),
            ("sync\n", None),
        ];
        for (request, want) in table {
            assert_eq!(request_target(request), want, "{request:?}");
        }
    }

    /// A client that says nothing, or too much, holds up no other; a resync gets its lines.
    #[tokio::test]
    async fn a_silent_or_garbled_client_wedges_nothing() {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("run/control.sock");
                let server = ControlServer::bind(&path).unwrap();
                let (clients_tx, mut clients) = mpsc::unbounded_channel();
                tokio::task::spawn_local(serve(server, move |tx, target| {
                    let _ = clients_tx.send((tx, target));
                }));
                let _silent = UnixStream::connect(&path).await.unwrap();
                let unknown = send(&path, b"hello\n").await;
                assert!(
                    unknown.starts_with("result: 2 unknown request"),
                    "{unknown:?}"
                );
                // An endless request is cut off at its limit: the connection ends, at once.
                let endless =
                    tokio::time::timeout(Duration::from_secs(2), send(&path, &[b'x'; 4096]));
                assert!(endless.await.is_ok(), "an oversized request must not hang");
                let resync = tokio::task::spawn_local({
                    let path = path.clone();
                    async move {
                        let mut lines = Vec::new();
                        let target = Target::Release(ReleaseId::parse(RELEASE).unwrap());
                        let status = resync(&path, Duration::from_secs(5), &target, |l| {
                            lines.push(l.to_string())
                        })
                        .await;
                        (status.unwrap(), lines)
                    }
                });
                let (client, target) = clients.recv().await.unwrap();
                assert_eq!(
                    target,
                    Target::Release(ReleaseId::parse(RELEASE).unwrap()),
                    "the release asked for reaches the daemon"
                );
                client
                    .send(ClientMessage::Progress("pulling 1 image".into()))
                    .await
                    .unwrap();
                client
                    .send(ClientMessage::Result(1, "failed\n -> why".into()))
                    .await
                    .unwrap();
                let (status, lines) = resync.await.unwrap();
                assert_eq!(status, Some(1));
                assert_eq!(lines, vec!["pulling 1 image", "failed /  -> why"]);
            })
            .await;
    }

    /// Root is trusted by anyone; anyone else only by a process of the same user. A root client
    /// trusts no other user's socket; a root daemon serves no other user's client.
    #[test]
    fn only_root_or_the_same_user_is_trusted() {
        for (peer, own, want) in [
            (0, 0, true),
            (0, 1000, true),
            (1000, 1000, true),
            (65534, 0, false),
            (1000, 0, false),
            (1001, 1000, false),
        ] {
            assert_eq!(trusted(peer, own), want, "peer {peer}, own {own}");
        }
    }

    #[tokio::test]
    async fn binding_never_touches_what_the_agent_did_not_make() {
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
        let file = shared.join("not-a-socket");
        std::fs::write(&file, "precious").unwrap();
        let err = ControlServer::bind(&file).err().expect("refused");
        assert!(format!("{err:#}").contains("is not a socket"), "{err:#}");
        assert_eq!(std::fs::read(&file).unwrap(), b"precious");
        let server = ControlServer::bind(&shared.join("control.sock")).unwrap();
        let mode = std::fs::metadata(&shared).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            mode, 0o755,
            "a directory the agent did not make keeps its mode"
        );
        // A second daemon on the same socket is refused; the first keeps it.
        let err = ControlServer::bind(&shared.join("control.sock"))
            .err()
            .expect("refused");
        assert!(
            format!("{err:#}").contains("daemon that is running"),
            "{err:#}"
        );
        drop(server);
        // A stale socket (its daemon died) is replaced.
        let stale = std::os::unix::net::UnixListener::bind(shared.join("stale.sock")).unwrap();
        drop(stale);
        ControlServer::bind(&shared.join("stale.sock")).unwrap();
    }
}
