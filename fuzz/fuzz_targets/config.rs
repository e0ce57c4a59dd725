//! The config loader on any agent.yaml: settings and problems, or an error naming the file;
//! never a panic. (The input is split at the first NUL into agent.yaml and an agent.d fragment,
//! so the merge is fuzzed too.)
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn dir() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("agent.d")).unwrap();
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let (main, fragment) = match data.iter().position(|b| *b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let path = dir().path().join("agent.yaml");
    std::fs::write(&path, main).unwrap();
    std::fs::write(dir().path().join("agent.d/10.yaml"), fragment).unwrap();
    if let Err(e) = kicky_agent::config::check(&path) {
        let message = format!("{e:#}");
        assert!(message.contains("agent.yaml") || message.contains("10.yaml"), "{message}");
    }
});
