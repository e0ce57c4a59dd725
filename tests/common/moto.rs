//! A moto server of a test's own, for tests that turn IAM enforcement on (which the shared one
//! must never have).

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use super::Rig;

/// A moto server of this test's own, stopped by PID when dropped.
pub struct OwnMoto {
    child: Child,
    pub url: String,
}

impl OwnMoto {
    /// `unchecked`: how many requests moto answers before it checks every one against IAM
    /// (`None`: it never does, as the shared one).
    pub fn start(rig: &Rig, dir: &Path, unchecked: Option<usize>) -> OwnMoto {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/rig/moto_server.py");
        let port_file = dir.join("moto.port");
        let mut cmd = Command::new(&rig.python);
        if let Some(n) = unchecked {
            cmd.env("INITIAL_NO_AUTH_ACTION_COUNT", n.to_string());
        }
        let child = cmd
            .arg(script)
            .args(["--port", "0", "--port-file"])
            .arg(&port_file)
            .stderr(std::fs::File::create(dir.join("moto.log")).unwrap())
            .spawn()
            .expect("start moto");
        let started = Instant::now();
        let port = loop {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                break text.trim().to_string();
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "moto did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        OwnMoto {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for OwnMoto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
