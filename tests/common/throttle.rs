//! The rig's throttling proxy (`tests/rig/throttle.py`) in front of moto, of a test's own: it
//! answers chosen actions as the service does when a caller goes over its quota (Auto Scaling's
//! `Throttling`, SSM's `ThrottlingException`), for their first requests or for a while, and can
//! rewrite a string in an action's answers. Every call it saw is read back from its ledger.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::Rig;

/// A throttling proxy of the test's own, stopped by PID when dropped.
pub struct ThrottleProxy {
    child: Child,
    pub url: String,
    ledger: PathBuf,
    log: PathBuf,
}

/// One call the proxy saw.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Call {
    /// Seconds since the proxy started.
    pub at: f64,
    pub service: String,
    pub action: String,
    pub throttled: bool,
    pub status: u16,
}

impl ThrottleProxy {
    /// `rules`: `service:Action:count=N` (its first N requests) or `...:seconds=S` (all in the
    /// first S seconds). `rewrites`: `service:Action:FROM=>TO` in that action's answers.
    pub fn start(rig: &Rig, dir: &Path, rules: &[&str], rewrites: &[&str]) -> ThrottleProxy {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/rig/throttle.py");
        let port_file = dir.join("throttle.port");
        let ledger = dir.join("throttle.jsonl");
        let log = dir.join("throttle.log");
        let mut cmd = Command::new(&rig.python);
        cmd.arg(script)
            .args(["--moto", &rig.moto_url, "--port-file"])
            .arg(&port_file)
            .arg("--ledger")
            .arg(&ledger);
        for rule in rules {
            cmd.args(["--rule", rule]);
        }
        for rewrite in rewrites {
            cmd.args(["--rewrite", rewrite]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start the throttling proxy");
        let mut proxy = ThrottleProxy {
            child,
            url: String::new(),
            ledger,
            log,
        };
        let started = Instant::now();
        let port = loop {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                break text.trim().to_string();
            }
            if let Ok(Some(status)) = proxy.child.try_wait() {
                panic!(
                    "the throttling proxy exited ({status}): {}",
                    std::fs::read_to_string(&proxy.log).unwrap_or_default()
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the throttling proxy did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        proxy.url = format!("http://127.0.0.1:{port}");
        proxy
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        std::fs::read_to_string(&self.ledger)
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).expect("a ledger line"))
            .collect()
    }

    /// How many calls of `action` were throttled, and how many answered.
    pub fn count(&self, action: &str) -> (usize, usize) {
        let calls: Vec<Call> = self
            .calls()
            .into_iter()
            .filter(|c| c.action == action)
            .collect();
        let throttled = calls.iter().filter(|c| c.throttled).count();
        (throttled, calls.len() - throttled)
    }
}

impl Drop for ThrottleProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
