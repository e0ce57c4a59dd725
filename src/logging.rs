//! Log setup: text for a terminal or the journal, JSON lines for promtail.
//!
//! Logs go to stderr; results (`plan`, `sync` summaries) go to stdout. Secrets never reach a log:
//! they travel as [`crate::redact::Secret`], and the libraries below the agent (the AWS SDK, hyper)
//! are kept at `info` unless `-vvv` asks for their debug output, which they redact themselves.

use std::io::IsTerminal;

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `-v` turns on the agent's debug logs, `-vv` its trace logs, `-vvv` its dependencies' debug logs.
pub fn init(format: LogFormat, verbose: u8) {
    let directives = match verbose {
        0 => "info",
        1 => "info,kicky_agent=debug",
        2 => "info,kicky_agent=trace",
        _ => "debug,kicky_agent=trace",
    };
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let filter = EnvFilter::new(directives);
    let terminal = std::io::stderr().is_terminal();
    // journald stamps each line itself.
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
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
        .with(ProgressLayer)
        .init();
}

/// What the running daemon tells whoever listens (a `resync` client, `STATUS=`): each log line of
/// the agent at `info` and above, and the phases (events with a `phase` field).
#[derive(Debug, Clone)]
pub enum Progress {
    Line(String),
    Phase(String),
}

static PROGRESS: std::sync::OnceLock<tokio::sync::broadcast::Sender<Progress>> =
    std::sync::OnceLock::new();

fn progress_sender() -> &'static tokio::sync::broadcast::Sender<Progress> {
    PROGRESS.get_or_init(|| tokio::sync::broadcast::channel(256).0)
}

/// Listens to the agent's progress from now on.
pub fn subscribe() -> tokio::sync::broadcast::Receiver<Progress> {
    progress_sender().subscribe()
}

/// The layer that feeds [`subscribe`]: cheap when nobody listens.
struct ProgressLayer;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for ProgressLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let meta = event.metadata();
        if *meta.level() > tracing::Level::INFO || !meta.target().starts_with("kicky_agent") {
            return;
        }
        let sender = progress_sender();
        if sender.receiver_count() == 0 {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        if let Some(phase) = &fields.phase {
            let _ = sender.send(Progress::Phase(phase.clone()));
        }
        let _ = sender.send(Progress::Line(format!(
            "{} {}{}",
            meta.level(),
            fields.message,
            fields.rest
        )));
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    phase: Option<String>,
    rest: String,
}

impl tracing::field::Visit for Fields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        match field.name() {
            "message" => self.message = value.to_string(),
            "phase" => self.phase = Some(value.to_string()),
            name => self.rest.push_str(&format!(" {name}={value}")),
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "phase" => self.phase = Some(format!("{value:?}").trim_matches('"').to_string()),
            name => self.rest.push_str(&format!(" {name}={value:?}")),
        }
    }
}
