//! A fake systemd for the daemon tests: the notify socket (READY, STATUS, WATCHDOG, STOPPING with
//! their times) and the daemon process, killed and its log shown (masked) if a test fails.

use std::os::unix::net::UnixDatagram;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::Scratch;

/// What the fake systemd received, with when.
#[derive(Clone, Default)]
pub struct Notifications(Arc<Mutex<Vec<(Instant, String)>>>);

impl Notifications {
    pub fn listen(path: &std::path::Path) -> Notifications {
        let socket = UnixDatagram::bind(path).unwrap();
        let seen = Notifications::default();
        let sink = seen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = socket.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                for line in text.lines() {
                    sink.0
                        .lock()
                        .unwrap()
                        .push((Instant::now(), line.to_string()));
                }
            }
        });
        seen
    }

    pub fn all(&self) -> Vec<(Instant, String)> {
        self.0.lock().unwrap().clone()
    }

    pub fn first(&self, prefix: &str) -> Option<Instant> {
        self.all()
            .into_iter()
            .find(|(_, l)| l.starts_with(prefix))
            .map(|(t, _)| t)
    }

    pub fn wait_for(&self, prefix: &str, bound: Duration) -> Instant {
        let started = Instant::now();
        loop {
            if let Some(at) = self.first(prefix) {
                return at;
            }
            assert!(
                started.elapsed() < bound,
                "no {prefix} within {bound:?}; got: {:?}",
                self.lines()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn lines(&self) -> Vec<String> {
        self.all().into_iter().map(|(_, l)| l).collect()
    }
}

/// `kicky-agent run` under the fake systemd, stopped by its PID when dropped.
pub struct Daemon {
    pub child: Child,
    pub log: std::path::PathBuf,
    /// What the test seeded and checks the log for (a host file's content, a secret): when the
    /// test fails, the log is shown with each of these masked, so a leak is never shown again.
    pub masked: Vec<String>,
}

/// Starts `kicky-agent run` for `s` as systemd would (see [`Scratch::spawn_daemon`]), with a
/// notify socket of its own in the scratch directory and `env` added; the daemon and what it
/// notifies. Its log is shown if the test fails, with `masked` masked.
pub fn start(
    s: &Scratch,
    imds_url: &str,
    env: &[(&str, &str)],
    masked: &[&str],
) -> (Daemon, Notifications) {
    let socket = s.path(&format!("notify-{}.sock", fastrand::u32(..)));
    let notify = Notifications::listen(&socket);
    let socket = socket.display().to_string();
    let mut env = env.to_vec();
    env.push(("NOTIFY_SOCKET", &socket));
    let daemon = Daemon {
        child: s.spawn_daemon(imds_url, &env),
        log: s.path("daemon.log"),
        masked: masked.iter().map(|m| m.to_string()).collect(),
    };
    (daemon, notify)
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let mut log = std::fs::read_to_string(&self.log).unwrap_or_default();
            // The longest first, so a value inside another is never left half shown.
            let mut masked = self.masked.clone();
            masked.sort_by_key(|m| std::cmp::Reverse(m.len()));
            for value in masked.iter().filter(|m| !m.is_empty()) {
                log = log.replace(value.as_str(), "<masked by the test>");
            }
            eprintln!("--- daemon log ---\n{log}");
        }
    }
}
