//! Log setup: text for a terminal or the journal, JSON lines for promtail.
//!
//! Under journald (`JOURNAL_STREAM` set: systemd connected stderr to the journal) every line of
//! text starts with its syslog priority (`<3>` error, `<4>` warning, `<6>` info, `<7>` debug),
//! which journald reads and strips: `journalctl -p warning` shows the warnings and errors only.
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

/// Whether stderr is the journal's stream (systemd sets `JOURNAL_STREAM` for a unit whose output
/// goes to journald).
pub fn under_journal() -> bool {
    std::env::var_os("JOURNAL_STREAM").is_some()
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
    let journal = under_journal();
    let prefixed = journal && format == LogFormat::Text;
    let fmt = tracing_subscriber::fmt::layer().with_writer(MakeRedacting { prefixed });
    let fmt = match format {
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .boxed(),
        // The priority prefix says the level (`journalctl -o verbose` shows it as PRIORITY=).
        LogFormat::Text if journal => fmt
            .with_ansi(false)
            .with_target(verbose > 0)
            .with_level(false)
            .without_time()
            .boxed(),
        LogFormat::Text => fmt.with_ansi(terminal).with_target(verbose > 0).boxed(),
    };
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .init();
}

/// Makes one [`Redacting`] writer per event, with the event's journal priority when `prefixed`.
struct MakeRedacting {
    prefixed: bool,
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for MakeRedacting {
    type Writer = Redacting;

    fn make_writer(&'a self) -> Redacting {
        Redacting::default()
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Redacting {
        Redacting {
            text: Vec::new(),
            priority: self.prefixed.then(|| priority(meta.level())),
        }
    }
}

/// The syslog priority journald files a line of `level` under.
fn priority(level: &tracing::Level) -> u8 {
    match *level {
        tracing::Level::ERROR => 3,
        tracing::Level::WARN => 4,
        tracing::Level::INFO => 6,
        _ => 7,
    }
}

/// `text` with `<priority>` before each of its lines (journald reads the prefix line by line).
fn with_priority(text: &str, priority: u8) -> String {
    text.split_inclusive('\n')
        .map(|line| format!("<{priority}>{line}"))
        .collect()
}

/// The log's writer: an event is formatted into it whole, then written to stderr with every value
/// the agent fetched masked ([`crate::redact::text`]), whatever the format (JSON escapes included).
#[derive(Default)]
struct Redacting {
    text: Vec<u8>,
    priority: Option<u8>,
}

impl Write for Redacting {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.text.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Redacting {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.text);
        match self.priority {
            Some(priority) => crate::redact::to_stderr(&with_priority(&text, priority)),
            None => crate::redact::to_stderr(&text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_line_carries_its_events_journal_priority() {
        let cases = [
            (tracing::Level::ERROR, "failed\n", "<3>failed\n"),
            (tracing::Level::WARN, "a\n -> b\n", "<4>a\n<4> -> b\n"),
            (tracing::Level::INFO, "in sync\n", "<6>in sync\n"),
            (tracing::Level::DEBUG, "x", "<7>x"),
            (tracing::Level::TRACE, "y\n", "<7>y\n"),
        ];
        for (level, text, want) in cases {
            assert_eq!(with_priority(text, priority(&level)), want);
        }
    }
}
