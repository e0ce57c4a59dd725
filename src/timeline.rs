//! Where a sync spent its time: each phase (a parameter source, a file, a pull, a container's
//! create and start, the health wait, the lifecycle call) with its start and duration, for
//! `status --timeline` and the metrics. Like [`crate::progress`], the recorder is scoped to the
//! sync's task ([`recording`]): the code deep in a sync times its work without a handle passed
//! down, and work done outside a recording (a `plan`, a watch) is only done.

use std::cell::RefCell;
use std::future::Future;
use tokio::time::Instant;

use serde::{Deserialize, Serialize};

/// One phase of a sync.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    /// `parameters`, `file`, `pull`, `create`, `start`, `health`, `lifecycle`...
    pub kind: String,
    /// What it worked on: a parameter source, a file, an image, a container.
    pub what: String,
    /// Milliseconds from the start of the sync.
    pub start_ms: u64,
    pub ms: u64,
    pub ok: bool,
}

/// The last lines of a container's output, kept when a sync failed on it (before a rollback
/// removes it): the failure report's evidence, and `status`'s.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerLog {
    pub container: String,
    pub service: String,
    pub lines: Vec<String>,
}

/// What a sync left for its report: its phases, the phase it was in last, the logs it kept.
#[derive(Debug, Default)]
pub struct Record {
    pub spans: Vec<Span>,
    pub phase: Option<String>,
    pub logs: Vec<ContainerLog>,
}

struct Recorder {
    origin: Instant,
    record: Record,
}

tokio::task_local! {
    static RECORDER: RefCell<Recorder>;
}

/// Runs `sync`, recording the phases it times (in the order they began), the phase it is in and
/// the logs it keeps.
pub async fn recording<F: Future>(sync: F) -> (F::Output, Record) {
    let recorder = RefCell::new(Recorder {
        origin: Instant::now(),
        record: Record::default(),
    });
    let (out, mut record) = RECORDER
        .scope(recorder, async {
            let out = sync.await;
            let record = RECORDER.with(|r| std::mem::take(&mut r.borrow_mut().record));
            (out, record)
        })
        .await;
    record.spans.sort_by_key(|s| s.start_ms);
    (out, record)
}

/// The phase the recording sync is in now (what [`crate::progress::phase`] says).
pub fn phase(text: &str) {
    let _ = RECORDER.try_with(|r| r.borrow_mut().record.phase = Some(text.to_string()));
}

/// Keeps a container's last lines for the recording sync's report, redacted (its name too).
pub fn keep_logs(service: &str, container: &str, lines: Vec<String>) {
    let lines = lines
        .iter()
        .map(|l| crate::redact::text(l).into_owned())
        .collect();
    // A container's name may come from a variable (`container_name: ${APP}`).
    let log = ContainerLog {
        container: crate::redact::text(container).into_owned(),
        service: service.to_string(),
        lines,
    };
    let _ = RECORDER.try_with(|r| r.borrow_mut().record.logs.push(log));
}

/// Runs `work`, timed as one phase of the recording sync (if any): `kind` and `what` it worked on.
pub async fn timed<T, E, F>(kind: &str, what: impl Into<String>, work: F) -> Result<T, E>
where
    F: Future<Output = Result<T, E>>,
{
    timed_if(true, kind, what, work).await
}

/// [`timed`] when `record`, else only run: work that has nothing to do (no secret to read) is no
/// phase.
pub async fn timed_if<T, E, F>(
    record: bool,
    kind: &str,
    what: impl Into<String>,
    work: F,
) -> Result<T, E>
where
    F: Future<Output = Result<T, E>>,
{
    let began = Instant::now();
    let out = work.await;
    if !record {
        return out;
    }
    let ok = out.is_ok();
    let _ = RECORDER.try_with(|r| {
        let mut r = r.borrow_mut();
        let start_ms = millis(began.saturating_duration_since(r.origin));
        r.record.spans.push(Span {
            kind: kind.to_string(),
            what: crate::redact::text(&what.into()).into_owned(),
            start_ms,
            ms: millis(began.elapsed()),
            ok,
        });
    });
    out
}

pub fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn phases_are_recorded_in_their_sync_only_with_start_and_duration() {
        let (out, record) = recording(async {
            phase("pulling 2 images");
            tokio::time::sleep(Duration::from_millis(100)).await;
            let pulls = futures::future::join(
                timed("pull", "web:2", async {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    Ok::<_, ()>(())
                }),
                timed("pull", "db:1", async {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    Err::<(), _>("denied")
                }),
            )
            .await;
            let _ = timed("health", "web", async { Ok::<_, ()>(()) }).await;
            pulls
        })
        .await;
        assert_eq!(out, (Ok(()), Err("denied")));
        assert_eq!(record.phase.as_deref(), Some("pulling 2 images"));
        let got: Vec<(&str, &str, u64, u64, bool)> = record
            .spans
            .iter()
            .map(|s| (s.kind.as_str(), s.what.as_str(), s.start_ms, s.ms, s.ok))
            .collect();
        assert_eq!(
            got,
            [
                ("pull", "db:1", 100, 200, false),
                ("pull", "web:2", 100, 300, true),
                ("health", "web", 400, 0, true),
            ]
        );
        // Outside a recording, the work is only done.
        assert_eq!(timed("pull", "x", async { Ok::<_, ()>(1) }).await, Ok(1));
    }
}
