//! Log setup: text for a terminal or the journal, JSON lines for promtail.
//!
//! Logs go to stderr; results (`plan`, `sync` summaries) go to stdout. Secrets never reach a log:
//! they travel as [`crate::redact::Secret`], the libraries below the agent (the AWS SDK, hyper)
//! are kept at `info` unless `-vvv` asks for their debug output, which they redact themselves, and
//! every line, whoever wrote it, passes through the redactor on its way out (`Redacting`).

use std::io::{IsTerminal, Write};

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `-v` turns on the agent's debug logs, `-vv` its trace logs, `-vvv` its dependencies' debug logs
/// (but bollard's, which would print container environments).
pub fn init(format: LogFormat, verbose: u8) {
    let directives = match verbose {
        0 => "info",
        1 => "info,kicky_agent=debug",
        2 => "info,kicky_agent=trace",
        // bollard logs every request body (a container's create body holds its environment, so
        // the secrets) and every decoded answer at debug: it stays at info at any verbosity.
        _ => "debug,kicky_agent=trace,bollard=info",
    };
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let filter = EnvFilter::new(directives);
    let terminal = std::io::stderr().is_terminal();
    // journald stamps each line itself.
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let fmt = tracing_subscriber::fmt::layer().with_writer(Redacting::default);
    let fmt = match format {
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .boxed(),
        LogFormat::Text if journal => fmt
            .with_ansi(false)
            .with_target(verbose > 0)
            .without_time()
            .boxed(),
        LogFormat::Text => fmt.with_ansi(terminal).with_target(verbose > 0).boxed(),
    };
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .init();
}

/// The log's writer: an event is formatted into it whole, then written to stderr with every value
/// the agent fetched masked ([`crate::redact::text`]), whatever the format (JSON escapes included).
#[derive(Default)]
struct Redacting(Vec<u8>);

impl Write for Redacting {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Redacting {
    fn drop(&mut self) {
        crate::redact::to_stderr(&String::from_utf8_lossy(&self.0));
    }
}
