//! The compose parser on any text: a project, or an error that names the file; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let file = std::path::Path::new("/srv/p/docker-compose.yml");
    if let Err(e) = kicky_agent::compose::from_str(text, file, "p", &|_: &str| None) {
        let message = format!("{e:#}");
        assert!(message.contains("docker-compose.yml"), "{message}");
    }
});
