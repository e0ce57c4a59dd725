//! The user-data reader on any bytes (plain, MIME multipart, gzip): the `#kicky-agent` document,
//! none, or an error; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = kicky_agent::instance::user_data::extract(data);
});
