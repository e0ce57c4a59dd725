//! The env file reader (both formats) on any text; what it reads, the writer writes back so that
//! it reads the same.
#![no_main]

use kicky_agent::envfile;
use kicky_agent::redact::Secret;
use libfuzzer_sys::fuzz_target;

fn no_env(_: &str) -> Option<String> {
    None
}

fuzz_target!(|text: &str| {
    let _ = envfile::parse_raw(text, &no_env);
    let Ok(vars) = envfile::parse(text, &no_env) else {
        return;
    };
    let secrets: Vec<(String, Secret)> = vars
        .iter()
        .map(|(k, v)| (k.clone(), Secret::new(v.as_str())))
        .collect();
    // A value with NUL cannot be written; anything else must read back exactly.
    if let Ok(written) = envfile::render(&secrets) {
        let back = envfile::parse(&written, &no_env).expect("what the writer writes parses");
        assert_eq!(back, vars, "the env file did not read back");
    }
});
