//! This instance's fleet record (see [`crate::release::fleet`]): what its state says of the last
//! sync, written under the release store for `release status`.

use std::time::SystemTime;

use anyhow::Result;

use super::state::State;
use crate::aws::releases::Store;
use crate::aws::s3::S3Store;
use crate::release::fleet::{Failure, Record, RECORD_SCHEMA};

/// The record of an instance whose state is `state`, as of `now`.
pub fn record_of(state: &State, now: SystemTime) -> Record {
    let at = humantime::format_rfc3339_seconds(now).to_string();
    let ok = state.last_sync.as_ref().is_some_and(|s| s.ok);
    // The cause is at the end of an error chain (the outer parts say what was done about it).
    let last_error = state
        .last_sync
        .as_ref()
        .filter(|s| !s.ok)
        .map(|s| tail(s.error.as_deref().unwrap_or("failed"), 200));
    let failed = match (&state.failed, &state.last_sync) {
        // A release that failed and is held: the reason is names only.
        (Some(f), _) => Some(Failure {
            release: f.fingerprint.release.clone(),
            at: f.at.clone(),
            reason: last_error.unwrap_or_else(|| crate::engine::api::printable(&f.reason, 200)),
        }),
        (None, Some(last)) if !last.ok => Some(Failure {
            release: None,
            at: last.finished.clone(),
            reason: last_error.unwrap_or_default(),
        }),
        _ => None,
    };
    Record {
        schema: RECORD_SCHEMA,
        release: state.release.as_ref().map(|r| r.id.clone()),
        healthy: ok,
        failed,
        at,
        agent: env!("CARGO_PKG_VERSION").to_string(),
    }
}

/// The last `max` characters of `text`, printable and on one line.
fn tail(text: &str, max: usize) -> String {
    let clean = crate::engine::api::printable(text, usize::MAX);
    let count = clean.chars().count();
    match count > max {
        true => format!("…{}", clean.chars().skip(count - max).collect::<String>()),
        false => clean,
    }
}

/// Writes `state`'s record as the caller `user_id`'s.
pub async fn report(store: &Store<'_, S3Store>, user_id: &str, state: &State) -> Result<()> {
    store
        .put_record(user_id, &record_of(state, SystemTime::now()))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::release::ReleaseId;
    use crate::sync::release::{FailedRelease, Fingerprint};
    use crate::sync::state::{RunningRelease, SyncRecord};

    fn id(n: u32) -> ReleaseId {
        ReleaseId::parse(&format!("2026120{n}T100000000Z-00000{n}")).unwrap()
    }

    fn last(ok: bool, error: Option<&str>) -> Option<SyncRecord> {
        Some(SyncRecord {
            started: "2026-12-07T10:00:00Z".into(),
            finished: "2026-12-07T10:00:05Z".into(),
            ok,
            error: error.map(str::to_string),
        })
    }

    /// The state after each kind of sync → the record the fleet sees.
    #[test]
    fn the_record_says_what_runs_and_the_failure_that_stands() {
        let running = Some(RunningRelease {
            id: id(1),
            images: Default::default(),
        });
        let held = Some(FailedRelease {
            at: "2026-12-07T10:00:05Z".into(),
            reason: "service web: unhealthy".into(),
            fingerprint: Fingerprint {
                release: Some(id(2)),
                ..Fingerprint::default()
            },
            attempts: 1,
        });
        let now = SystemTime::now();
        // (release running, last sync, held failure) → (release, healthy, failed release, reason)
        let table = [
            (
                running.clone(),
                last(true, None),
                None,
                (Some(1), true, None),
            ),
            // A wave's release failed and was rolled back: runs 1, failed 2.
            (
                running.clone(),
                last(
                    false,
                    Some("files restored: rolled back: service web: unhealthy"),
                ),
                held.clone(),
                (
                    Some(1),
                    false,
                    Some((
                        Some(2),
                        "files restored: rolled back: service web: unhealthy",
                    )),
                ),
            ),
            // Held: the sync served the last good release.
            (
                running.clone(),
                last(true, None),
                held.clone(),
                (Some(1), true, Some((Some(2), "service web: unhealthy"))),
            ),
            // The first sync failed: nothing runs.
            (
                None,
                last(false, Some("GetParameters: throttled\nagain")),
                None,
                (None, false, Some((None, "GetParameters: throttled again"))),
            ),
            (None, None, None, (None, false, None)),
        ];
        for (release, last_sync, failed, (want_release, healthy, want_failed)) in table {
            let state = State {
                release,
                last_sync,
                failed,
                ..State::default()
            };
            let r = record_of(&state, now);
            assert_eq!(r.release, want_release.map(id));
            assert_eq!(r.healthy, healthy);
            let got = r.failed.map(|f| (f.release, f.reason));
            let want =
                want_failed.map(|(rel, why): (Option<u32>, &str)| (rel.map(id), why.to_string()));
            assert_eq!(got, want);
            assert_eq!(r.schema, RECORD_SCHEMA);
        }
        // A long chain keeps its end: the cause.
        let long = format!("{}: service web: unhealthy", "restored ".repeat(40));
        let state = State {
            last_sync: last(false, Some(&long)),
            ..State::default()
        };
        let reason = record_of(&state, now).failed.unwrap().reason;
        assert!(reason.starts_with('…') && reason.ends_with("service web: unhealthy"));
        assert_eq!(reason.chars().count(), 201);
    }
}
