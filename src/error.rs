//! Exit statuses and the error kind that selects them.
//!
//! Every failure is an `anyhow::Error` whose chain names the file, parameter or object concerned.
//! Bad input (the config, a compose file, parameter names, an unparsable value) carries an
//! [`InputError`] somewhere in its chain and exits 2; everything else (network, access, a missing
//! parameter) exits 1, as the command table of docs/contract.md says.

use std::fmt;
use std::process::ExitCode;

/// Bad input: the operator has to change a file or a parameter, retrying will not help.
#[derive(Debug)]
pub struct InputError(pub String);

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InputError {}

/// Shorthand for an `anyhow::Error` that exits 2.
pub fn input_error(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(InputError(message.into()))
}

pub const EXIT_FAILED: u8 = 1;
pub const EXIT_BAD_INPUT: u8 = 2;

/// The exit status for an error: 2 when bad input is anywhere in its chain, else 1.
pub fn exit_status(err: &anyhow::Error) -> u8 {
    if err.chain().any(|cause| cause.is::<InputError>()) {
        EXIT_BAD_INPUT
    } else {
        EXIT_FAILED
    }
}

/// Every failure of a group of independent operations (files, pulls, creates, starts) as one
/// error, so the operator sees all of them at once: the error itself when there is only one, else
/// "2 of 5 files failed:" with one line each. Bad input in any of them makes it bad input.
/// `None` when nothing failed.
pub fn all_of(errors: Vec<anyhow::Error>, total: usize, what: &str) -> Option<anyhow::Error> {
    if errors.len() <= 1 {
        return errors.into_iter().next();
    }
    let input = errors
        .iter()
        .any(|e| e.chain().any(|cause| cause.is::<InputError>()));
    let lines: Vec<String> = errors.iter().map(|e| format!("  - {e:#}")).collect();
    let message = format!("{} of {total} {what}:\n{}", errors.len(), lines.join("\n"));
    Some(if input {
        input_error(message)
    } else {
        anyhow::anyhow!(message)
    })
}

/// Prints `error: top` then ` -> cause` per line on stderr (redacted) and picks the exit code.
pub fn report(err: &anyhow::Error) -> ExitCode {
    // Under journald, an error's lines are filed as errors (`journalctl -p err`).
    let priority = if crate::logging::under_journal() {
        "<3>"
    } else {
        ""
    };
    let mut chain = err.chain();
    if let Some(top) = chain.next() {
        crate::eoutln!("{priority}error: {top}");
    }
    for cause in chain {
        crate::eoutln!("{priority} -> {cause}");
    }
    ExitCode::from(exit_status(err))
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn input_error_anywhere_in_the_chain_exits_2() {
        let err = Err::<(), _>(input_error("bad key"))
            .context("failed to load /etc/kicky-agent/agent.yaml")
            .unwrap_err();
        assert_eq!(exit_status(&err), 2);
        let err = anyhow::anyhow!("connection refused").context("failed to read parameter /a");
        assert_eq!(exit_status(&err), 1);
    }

    #[test]
    fn all_of_names_every_failure() {
        assert!(all_of(Vec::new(), 3, "files failed").is_none());
        let one = all_of(vec![anyhow::anyhow!("a is gone")], 3, "files failed").unwrap();
        assert_eq!(one.to_string(), "a is gone");
        let two = all_of(
            vec![anyhow::anyhow!("a is gone"), input_error("b: bad key")],
            5,
            "files failed",
        )
        .unwrap();
        assert_eq!(
            two.to_string(),
            "2 of 5 files failed:\n  - a is gone\n  - b: bad key"
        );
        assert_eq!(exit_status(&two), 2);
    }
}
