//! An IMDSv2 layer of a test's own (`tests/rig/imds.py`), for tests that set the instance's
//! metadata (its id, tags, user data, lifecycle state) without touching the rig's shared one.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::Rig;

/// An IMDSv2 layer of the test's own, serving `fixture`, stopped by PID when dropped.
pub struct OwnImds {
    child: Child,
    pub url: String,
    log: PathBuf,
}

impl OwnImds {
    pub fn start(rig: &Rig, moto_url: &str, dir: &Path, fixture: &Path) -> OwnImds {
        let script = std::env::var("KICKY_RIG_IMDS_SCRIPT")
            .expect("KICKY_RIG_IMDS_SCRIPT is not set: run the tests with `tests/run`");
        let port_file = dir.join("imds.port");
        let log = dir.join("imds.log");
        let child = Command::new(&rig.python)
            .arg(script)
            .args(["--moto", moto_url, "--fixture"])
            .arg(fixture)
            .args(["--port", "0", "--port-file"])
            .arg(&port_file)
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start the IMDS layer");
        let mut imds = OwnImds {
            child,
            url: String::new(),
            log,
        };
        let started = Instant::now();
        let port = loop {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                break text.trim().to_string();
            }
            if let Ok(Some(status)) = imds.child.try_wait() {
                panic!("the IMDS layer exited ({status}): {}", imds.log_text());
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the IMDS layer did not start: {}",
                imds.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        imds.url = format!("http://127.0.0.1:{port}");
        imds
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for OwnImds {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
