//! What the process does, first thing, to keep the secrets it will hold: no core dump (it would
//! hold every parameter value and registry password), and not dumpable, so no other process of the
//! same user can attach to it or read its memory through `/proc`.

/// Turns core dumps off and makes the process non-dumpable. A failure is told, not fatal.
pub fn no_core_dumps() {
    use nix::sys::resource::{setrlimit, Resource};
    if let Err(err) = setrlimit(Resource::RLIMIT_CORE, 0, 0) {
        tracing::warn!("could not turn core dumps off: {err}");
    }
    if let Err(err) = nix::sys::prctl::set_dumpable(false) {
        tracing::warn!("could not make the process non-dumpable: {err}");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn core_dumps_are_off() {
        super::no_core_dumps();
        let (soft, hard) =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_CORE).unwrap();
        assert_eq!((soft, hard), (0, 0));
        assert!(!nix::sys::prctl::get_dumpable().unwrap());
    }
}
