//! Compose interpolation on any text, with every variable unset and with every one set.
#![no_main]

use kicky_agent::interpolate::substitute;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = substitute(text, &|_: &str| None);
    let _ = substitute(text, &|name: &str| Some(format!("<{name}>")));
});
