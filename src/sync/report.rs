//! The report of a failed sync, which outlives the instance: the failing step, the error chain,
//! the last lines of each container the sync failed on, the agent's version and the release, all
//! through the redactor. It goes to the console (`report.console`: the unit sends the daemon's
//! stdout to the serial console, which `aws ec2 get-console-output` shows after termination)
//! and, with `report.store`, to S3 as `<prefix><caller id>/<time>.txt`: the caller id is the
//! role's id and the instance's (`AROA…:i-0abc…`), the IAM policy variable `${aws:userid}` that
//! lets each instance write under its own name only.
//!
//! A failure that repeats (the daemon's retries) is reported once an hour, not at every try.

use std::io::Write;
use std::time::Duration;
#[cfg(test)]
use std::time::SystemTime;

use anyhow::{Context, Result};

use crate::config::{ConsoleChoice, Settings};
use crate::timeline::ContainerLog;

/// A failure reported this recently, with the same error, is not reported again.
pub const REPEAT_AFTER: Duration = Duration::from_secs(3600);

/// What a report says.
#[derive(Debug, Clone, Default)]
pub struct Facts<'a> {
    pub project: &'a str,
    pub instance: Option<&'a str>,
    pub release: Option<String>,
    pub at: String,
    /// The phase the sync was in when it failed.
    pub step: Option<&'a str>,
    /// The error chain (`{:#}`).
    pub error: &'a str,
    pub logs: &'a [ContainerLog],
}

/// The report, every line marked (a console carries the kernel's lines too) and redacted.
pub fn render(facts: &Facts) -> String {
    let mut lines = vec![
        "===== kicky-agent: a sync failed =====".to_string(),
        format!(
            "project {} on instance {}, kicky-agent {}, release {}",
            facts.project,
            facts.instance.unwrap_or("unknown"),
            env!("CARGO_PKG_VERSION"),
            facts
                .release
                .as_deref()
                .unwrap_or("none (the latest of every source)")
        ),
        format!("at {}", facts.at),
        format!("failed step: {}", facts.step.unwrap_or("starting")),
        "error:".to_string(),
    ];
    lines.extend(facts.error.lines().map(|l| format!("  {l}")));
    for log in facts.logs {
        lines.push(format!(
            "container {} (service {}), its last {} lines:",
            log.container,
            log.service,
            log.lines.len()
        ));
        lines.extend(log.lines.iter().map(|l| format!("  | {l}")));
    }
    lines.push("===== end of the report (`kicky-agent status` says more) =====".to_string());
    let text: String = lines
        .iter()
        .map(|l| format!("kicky-agent: {l}\n"))
        .collect();
    crate::redact::text(&text).into_owned()
}

/// Reports the failed sync `record` (its error chain `error`), unless the same failure was
/// reported within the hour (`state.last_report`): to the console, and with `report.store` to S3.
/// The mark to keep for the next one (`None`: nothing was reported). A report that cannot be
/// written is logged: the sync's own outcome stands.
pub async fn send(
    settings: &Settings,
    store: &impl crate::aws::s3::ObjectStore,
    state: &super::state::State,
    error: &str,
    record: &crate::timeline::Record,
) -> Option<(String, u64)> {
    let now = super::state::unix_ms() / 1000;
    if !is_news(error, state.last_report.as_ref(), now) {
        tracing::info!("the same failure was reported less than an hour ago: not reported again");
        return None;
    }
    let instance = match crate::instance::imds::disabled() {
        true => None,
        false => {
            let bound = Duration::from_secs(5);
            let read = crate::instance::identity::identity_document();
            match tokio::time::timeout(bound, read).await {
                Ok(Ok(document)) => document["instanceId"].as_str().map(str::to_string),
                _ => None,
            }
        }
    };
    let text = render(&Facts {
        project: &settings.project,
        instance: instance.as_deref(),
        release: state.release.as_ref().map(|r| r.id.to_string()),
        at: super::state::now(),
        step: record.phase.as_deref(),
        error,
        logs: &record.logs,
    });
    if let Err(err) = to_console(&settings.report.console, &text) {
        tracing::warn!("could not write the failure report to the console: {err:#}");
    }
    if let Some(prefix) = &settings.report.store {
        let bound = Duration::from_secs(30);
        match tokio::time::timeout(bound, store.put_report(prefix, text)).await {
            Ok(Ok(uri)) => tracing::info!("failure report written to {uri}"),
            Ok(Err(err)) => tracing::warn!("could not write the failure report: {err:#}"),
            Err(_) => tracing::warn!("could not write the failure report: no answer in {bound:?}"),
        }
    }
    Some((fingerprint(error), now))
}

/// Whether a failure with `error` is reported, given the last report (a hash of its error and
/// when it was made).
pub fn is_news(error: &str, last: Option<&(String, u64)>, now_unix: u64) -> bool {
    match last {
        Some((hash, at)) if *hash == fingerprint(error) => {
            now_unix.saturating_sub(*at) >= REPEAT_AFTER.as_secs()
        }
        _ => true,
    }
}

/// What tells two reports' errors apart (the state file keeps it, never the text).
pub fn fingerprint(error: &str) -> String {
    crate::digest::sha256_hex(error.as_bytes())[..16].to_string()
}

/// Writes the report to the console `choice` names: stdout, or appended to a file or device,
/// opened without following a link, without blocking (a FIFO or a stuck serial port is not
/// waited for) and never created.
pub fn to_console(choice: &ConsoleChoice, text: &str) -> Result<()> {
    match choice {
        ConsoleChoice::Off => Ok(()),
        ConsoleChoice::Stdout => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())?;
            out.flush()?;
            Ok(())
        }
        ConsoleChoice::Path(path) => {
            use std::os::unix::fs::OpenOptionsExt;
            let mut file = std::fs::OpenOptions::new()
                .append(true)
                .custom_flags(libc_flags())
                .open(path)
                .with_context(|| format!("report.console {}", path.display()))?;
            file.write_all(text.as_bytes())
                .with_context(|| format!("report.console {}", path.display()))
        }
    }
}

fn libc_flags() -> i32 {
    use nix::fcntl::OFlag;
    (OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY).bits()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_says_the_step_the_error_and_the_containers_last_lines() {
        let logs = [ContainerLog {
            container: "orange-web-1".into(),
            service: "web".into(),
            lines: vec!["starting".into(), "Caused by: port 8080 in use".into()],
        }];
        let text = render(&Facts {
            project: "orange",
            instance: Some("i-0abc"),
            release: None,
            at: "2026-12-08T02:30:00Z".into(),
            step: Some("waiting for orange-web-1 to be healthy"),
            error: "the sync was rolled back\n -> service web: exited with code 1",
            logs: &logs,
        });
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines.iter().all(|l| l.starts_with("kicky-agent: ")),
            "{text}"
        );
        for part in [
            "project orange on instance i-0abc",
            "failed step: waiting for orange-web-1 to be healthy",
            "  the sync was rolled back",
            "   -> service web: exited with code 1",
            "container orange-web-1 (service web), its last 2 lines:",
            "  | Caused by: port 8080 in use",
            "===== end of the report",
        ] {
            assert!(text.contains(part), "{part:?} in:\n{text}");
        }
    }

    #[test]
    fn a_repeated_failure_is_reported_once_an_hour() {
        let last = (fingerprint("boom"), 1_000);
        let cases = [
            ("boom", None, 1_000, true),
            ("boom", Some(&last), 1_000 + 60, false),
            ("boom", Some(&last), 1_000 + 3_600, true),
            ("other", Some(&last), 1_000 + 60, true),
        ];
        for (error, last, now, news) in cases {
            assert_eq!(is_news(error, last, now), news, "{error} at {now}");
        }
    }

    #[test]
    fn the_key_is_the_callers_and_the_time() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_000_000_123);
        let key = crate::aws::s3::report_key;
        assert_eq!(
            key("AROAEXAMPLE:i-0abc", at).unwrap(),
            "AROAEXAMPLE:i-0abc/2026-11-30T005320.123Z.txt"
        );
        assert!(key("../x", at).is_err());
    }

    #[test]
    fn the_console_is_appended_to_never_created_never_through_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let console = dir.path().join("ttyS0");
        std::fs::write(&console, "boot\n").unwrap();
        to_console(&ConsoleChoice::Path(console.clone()), "report\n").unwrap();
        assert_eq!(std::fs::read_to_string(&console).unwrap(), "boot\nreport\n");
        let missing = ConsoleChoice::Path(dir.path().join("nothing"));
        assert!(to_console(&missing, "x").is_err());
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&console, &link).unwrap();
        assert!(to_console(&ConsoleChoice::Path(link), "x").is_err());
        assert_eq!(std::fs::read_to_string(&console).unwrap(), "boot\nreport\n");
    }
}
