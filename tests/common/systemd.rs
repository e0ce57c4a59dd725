//! A fake systemd for the daemon tests: the notify socket (READY, STATUS, WATCHDOG, STOPPING with
//! their times) and the daemon process, killed and its log shown if a test fails.

use std::os::unix::net::UnixDatagram;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

pub struct Daemon {
    pub child: Child,
    pub log: std::path::PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The agent's log holds no secret (the tests check its outputs): show it on failure.
        if std::thread::panicking() {
            eprintln!(
                "--- daemon log ---\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}
