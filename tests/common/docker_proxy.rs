//! A proxy in front of the Docker Engine's socket that kills the agent (SIGKILL) as it sends its
//! n-th changing request (POST or DELETE), before the engine sees it: the agent dies between two
//! engine calls, at the step the test chooses. Or, without killing, it closes that connection
//! unanswered: the engine's socket closing mid-sync. It also records the changing requests it
//! passed.
//!
//! Plain threads and blocking sockets: the test itself blocks waiting for the agent.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

pub struct DockerProxy {
    /// `unix://...`, for the agent's `DOCKER_HOST`.
    pub host: String,
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    /// The agent's PID (0: kill no one, only close the connection).
    victim: AtomicU32,
    /// Kill when the changing request with this number (1-based) arrives; 0: never.
    kill_at: AtomicUsize,
    /// `METHOD path` of each changing request passed on.
    changes: Mutex<Vec<String>>,
    /// Whether the armed step came since the last arm.
    fired: std::sync::atomic::AtomicBool,
}

impl DockerProxy {
    pub fn start(dir: &Path) -> DockerProxy {
        let upstream: PathBuf = std::env::var("DOCKER_HOST")
            .ok()
            .and_then(|h| h.strip_prefix("unix://").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("/var/run/docker.sock"));
        let socket = dir.join(format!("docker-proxy-{}.sock", fastrand::u32(..)));
        let listener = UnixListener::bind(&socket).expect("bind the docker proxy");
        let shared = Arc::new(Shared::default());
        let state = shared.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let (state, upstream) = (state.clone(), upstream.clone());
                std::thread::spawn(move || serve(client, &upstream, &state));
            }
        });
        DockerProxy {
            host: format!("unix://{}", socket.display()),
            shared,
        }
    }

    /// The next agent started (`pid`) is killed at its `n`-th changing request (0: never).
    pub fn arm(&self, pid: u32, n: usize) {
        self.shared.changes.lock().unwrap().clear();
        self.shared.fired.store(false, Ordering::SeqCst);
        self.shared.victim.store(pid, Ordering::SeqCst);
        self.shared.kill_at.store(n, Ordering::SeqCst);
    }

    /// The `n`-th changing request from now on is not passed on: its connection is closed
    /// unanswered (0: never).
    pub fn cut(&self, n: usize) {
        self.arm(0, n);
    }

    /// Whether the armed step came (the agent was killed, or the connection cut, there).
    pub fn fired(&self) -> bool {
        self.shared.fired.load(Ordering::SeqCst)
    }

    pub fn changes(&self) -> Vec<String> {
        self.shared.changes.lock().unwrap().clone()
    }
}

fn serve(client: UnixStream, upstream: &Path, state: &Shared) {
    let Ok(server) = UnixStream::connect(upstream) else {
        return;
    };
    let (Ok(mut to_client), Ok(mut from_server)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from_server, &mut to_client);
        let _ = to_client.shutdown(std::net::Shutdown::Both);
    });
    let mut reader = BufReader::new(client);
    let mut server = server;
    loop {
        // One request: its head, then a body of Content-Length bytes or chunks.
        let mut head = Vec::new();
        loop {
            let mut line = Vec::new();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let end = line == b"\r\n";
            head.extend_from_slice(&line);
            if end {
                break;
            }
        }
        let text = String::from_utf8_lossy(&head).into_owned();
        let request = text.lines().next().unwrap_or_default().to_string();
        let method = request.split(' ').next().unwrap_or_default();
        if method == "POST" || method == "DELETE" {
            let mut changes = state.changes.lock().unwrap();
            let n = changes.len() + 1;
            if state.kill_at.load(Ordering::SeqCst) == n {
                let pid = state.victim.load(Ordering::SeqCst);
                if pid != 0 {
                    let _ = std::process::Command::new("kill")
                        .args(["-KILL", &pid.to_string()])
                        .status();
                }
                // Passed at most once: the next attempt at this step goes through.
                state.kill_at.store(0, Ordering::SeqCst);
                state.fired.store(true, Ordering::SeqCst);
                let _ = server.shutdown(std::net::Shutdown::Both);
                return;
            }
            let path = request.split(' ').nth(1).unwrap_or_default();
            changes.push(format!("{method} {path}"));
        }
        if server.write_all(&head).is_err() {
            return;
        }
        let header = |name: &str| {
            text.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
        };
        if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            loop {
                let mut size_line = Vec::new();
                if reader.read_until(b'\n', &mut size_line).unwrap_or(0) == 0 {
                    return;
                }
                let size = usize::from_str_radix(String::from_utf8_lossy(&size_line).trim(), 16)
                    .unwrap_or(0);
                let mut chunk = vec![0; size + 2];
                if reader.read_exact(&mut chunk).is_err()
                    || server.write_all(&size_line).is_err()
                    || server.write_all(&chunk).is_err()
                {
                    return;
                }
                if size == 0 {
                    break;
                }
            }
        } else if let Some(length) = header("content-length").and_then(|v| v.parse::<usize>().ok())
        {
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() || server.write_all(&body).is_err() {
                return;
            }
        }
    }
}
