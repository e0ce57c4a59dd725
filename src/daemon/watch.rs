//! What the daemon looks at between syncs: the versions of the parameters and secrets and the
//! ETags of the objects, without fetching a value or a body (DescribeParameters, DescribeSecret
//! and HeadObject), compared with the last good release and with a release that failed and is
//! held.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use anyhow::Result;

use super::machine::WatchOutcome;
use crate::aws::s3::ObjectStore;
use crate::aws::ssm::ParameterStore;
use crate::config::{Settings, Source, WatchApply};
use crate::inputs::Inputs;
use crate::release::ReleaseId;
use crate::sync::files::{self, Change};
use crate::sync::params::{describe_key, Version};
use crate::sync::release::Fingerprint;
use crate::sync::state::State;

/// With a release marker: whether this watch looks at every source, given the marker's ETag now
/// and what the last full check saw (its ETag, and when). A first watch, a changed marker, or a
/// full check `full_every` ago: yes; else the one HEAD was the whole watch.
pub fn full_check_due(
    seen: Option<&(String, tokio::time::Instant)>,
    marker: &str,
    now: tokio::time::Instant,
    full_every: Duration,
) -> bool {
    match seen {
        None => true,
        Some((etag, at)) => etag != marker || now.duration_since(*at) >= full_every,
    }
}

/// With a release marker: whether a full check's finding lets the marker count as seen (the
/// next watches are one HEAD again). A change still to apply, or a check that failed for a
/// passing reason, keeps every watch a full check until it is done.
pub fn marker_settled(found: &WatchOutcome) -> bool {
    matches!(
        found,
        WatchOutcome::Unchanged | WatchOutcome::Held(_) | WatchOutcome::Report(_)
    )
}

/// With `release.store`, what the HEAD of the promoted pointer leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PointerHead {
    /// Its ETag is the one last seen: the watch is over, nothing changed.
    Unchanged,
    /// It moved, or was never seen: read it (one GET) and [`decide_release`].
    Read,
}

/// With `release.store`: what to do after the HEAD of the promoted pointer, given the ETag it
/// had when it last counted as seen ([`pointer_settled`]) and the one it has now.
pub fn after_pointer_head(seen: Option<&str>, etag: &str) -> PointerHead {
    match seen {
        Some(seen) if seen == etag => PointerHead::Unchanged,
        _ => PointerHead::Read,
    }
}

/// With `release.store`: whether [`decide_release`]'s finding lets the pointer count as seen.
/// A promote applied, or one only reported, needs nothing more until it moves; a change to apply
/// (or a sync of it that failed for a passing reason) and a held release are decided again at
/// every watch, so the instance keeps trying, and a hold's backoff ends on time.
pub fn pointer_settled(found: &WatchOutcome) -> bool {
    matches!(found, WatchOutcome::Unchanged | WatchOutcome::Report(_))
}

/// Looks for changes since the last good sync: what the daemon should do about them.
pub async fn check(
    settings: &Settings,
    state: &State,
    ssm: &impl ParameterStore,
    s3: &impl ObjectStore,
    retry_failed_after: Duration,
) -> Result<WatchOutcome> {
    let (changes, now) = changes(settings, state, ssm, s3).await?;
    Ok(decide(
        settings.watch_apply,
        state,
        changes,
        &now,
        retry_failed_after,
        SystemTime::now(),
    ))
}

/// What to do about `changes`, given the release that the watch sees now (`now`).
fn decide(
    apply: WatchApply,
    state: &State,
    changes: Vec<String>,
    now: &Fingerprint,
    retry_failed_after: Duration,
    at: SystemTime,
) -> WatchOutcome {
    if changes.is_empty() {
        return WatchOutcome::Unchanged;
    }
    if let Some(failed) = &state.failed {
        if &failed.fingerprint == now && !failed.due(retry_failed_after, at) {
            return WatchOutcome::Held(failed.describe(state.last_good_at.as_deref()));
        }
    }
    match apply {
        WatchApply::Auto => WatchOutcome::Changed(changes),
        WatchApply::Report => WatchOutcome::Report(changes),
    }
}

/// The changes since the last good sync, in words (names and versions, never values), and the
/// release as it stands now.
pub async fn changes(
    settings: &Settings,
    state: &State,
    ssm: &impl ParameterStore,
    s3: &impl ObjectStore,
) -> Result<(Vec<String>, Fingerprint)> {
    let mut found = Vec::new();
    let mut now = Fingerprint::default();
    if let Some(env) = &settings.env {
        now.parameters = source_versions(ssm, &env.sources).await?;
        for (key, version) in &now.parameters {
            let what = describe_key(key);
            match state.parameters.get(key) {
                Some(old) if old == version => {}
                Some(old) => found.push(format!("{what}: version {old} -> {version}")),
                None => found.push(format!("{what}: new (version {version})")),
            }
        }
        for key in state
            .parameters
            .keys()
            .filter(|n| !now.parameters.contains_key(*n))
        {
            found.push(format!("{}: gone", describe_key(key)));
        }
    }
    for file in &settings.files {
        let (change, meta) = files::plan(s3, file, state.files.get(&file.path)).await?;
        let id = Fingerprint::object_id(meta.etag.as_deref(), meta.version_id.as_deref());
        now.objects.insert(file.path.clone(), id);
        if change != Change::Unchanged {
            found.push(format!(
                "file {}: {} (from {})",
                file.path.display(),
                change.as_str(),
                file.source
            ));
        }
    }
    found.extend(refreshes_due(settings, state, SystemTime::now()));
    Ok((found, now))
}

/// The versions of every parameter and secret the sources name, without their values: the
/// parameters' by DescribeParameters, each secret's by DescribeSecret (concurrently).
async fn source_versions(
    ssm: &impl ParameterStore,
    sources: &[Source],
) -> Result<BTreeMap<String, Version>> {
    let inputs = Inputs::of_sources(sources);
    let names: Vec<String> = inputs.parameter_names().map(str::to_string).collect();
    let paths: Vec<(String, bool)> = inputs
        .paths
        .iter()
        .map(|p| (p.path.as_str().to_string(), p.recursive))
        .collect();
    let secrets = futures::future::try_join_all(inputs.secrets.iter().map(|secret| async move {
        let version = ssm
            .secret_version(secret.id.as_str(), secret.stage_name())
            .await?;
        Ok::<_, anyhow::Error>((secret.key(), version))
    }));
    let (parameters, secrets) = futures::try_join!(ssm.versions(&names, &paths), secrets)?;
    let mut versions: BTreeMap<String, Version> = parameters
        .into_iter()
        .map(|(name, v)| (name, Version::Number(v)))
        .collect();
    versions.extend(
        secrets
            .into_iter()
            .filter_map(|(key, version)| Some((key, Version::Id(version?)))),
    );
    Ok(versions)
}

/// With `release.store`: what to do now that `promoted` is the promoted release. A release the
/// instance runs, or a promote it already acted on (an operator then moved it to another release
/// on purpose: a wave), needs nothing; a promoted release that failed here is held until its
/// backoff has passed.
pub fn decide_release(
    apply: WatchApply,
    state: &State,
    promoted: &ReleaseId,
    retry_failed_after: Duration,
    at: SystemTime,
) -> WatchOutcome {
    let running = state.release.as_ref().map(|r| &r.id);
    if running == Some(promoted) || state.promoted_seen.as_ref() == Some(promoted) {
        return WatchOutcome::Unchanged;
    }
    if let Some(failed) = &state.failed {
        if failed.fingerprint.release.as_ref() == Some(promoted)
            && !failed.due(retry_failed_after, at)
        {
            return WatchOutcome::Held(failed.describe(state.last_good_at.as_deref()));
        }
    }
    let change = match running {
        Some(running) => format!("release {running} -> {promoted} (promoted)"),
        None => format!("release {promoted} (promoted)"),
    };
    match apply {
        WatchApply::Auto => WatchOutcome::Changed(vec![change]),
        WatchApply::Report => WatchOutcome::Report(vec![change]),
    }
}

/// Images whose `pull_policy: daily` (weekly, every_…) period has passed since the last pull:
/// the registry is asked on that schedule, and a new image is applied like any change.
fn refreshes_due(settings: &Settings, state: &State, at: SystemTime) -> Vec<String> {
    if settings.compose.as_ref().is_none_or(|c| !c.file.exists()) {
        return Vec::new();
    }
    // Only the pull policies: the file on disk was judged against `compose.policy` before it was
    // written.
    let mut project = match crate::compose::load_as_written(settings) {
        Ok(project) => project,
        Err(err) => {
            tracing::debug!("not looking for images to refresh: {err:#}");
            return Vec::new();
        }
    };
    // As a sync pulls them (and records when): through their mirrors.
    crate::compose::mirror::Mirrors::of(&settings.registries).apply(&mut project);
    let mut due: Vec<String> = project
        .services
        .values()
        .filter_map(|s| Some((s, s.pull_policy?)))
        .filter(|(s, policy)| {
            crate::engine::pull::refresh_due(*policy, state.pulled_at.get(&s.image), at)
        })
        .map(|(s, policy)| format!("image {}: pull_policy {} is due", s.image, policy.spelled()))
        .collect();
    due.sort();
    due.dedup();
    due
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::release::FailedRelease;

    /// `pull_policy: daily`: the watch asks again once a day has passed since the last pull.
    #[test]
    fn a_daily_image_is_due_once_a_day() {
        let dir = tempfile::tempdir().unwrap();
        let compose = dir.path().join("docker-compose.yml");
        std::fs::write(
            &compose,
            "services:\n  web:\n    image: web:1\n    pull_policy: daily\n  db:\n    image: db:1\n",
        )
        .unwrap();
        let config = dir.path().join("agent.yaml");
        let text = format!(
            "project: o\nworkdir: {}\ncompose:\n  file: docker-compose.yml\n",
            dir.path().display()
        );
        std::fs::write(&config, text).unwrap();
        let settings = crate::config::load(&config).unwrap();
        let now = SystemTime::now();
        let at = |t: SystemTime| humantime::format_rfc3339_seconds(t).to_string();
        let mut state = State::default();
        assert_eq!(
            refreshes_due(&settings, &state, now),
            vec!["image web:1: pull_policy daily is due".to_string()],
            "never pulled"
        );
        state
            .pulled_at
            .insert("web:1".into(), at(now - Duration::from_secs(3600)));
        assert!(
            refreshes_due(&settings, &state, now).is_empty(),
            "pulled an hour ago"
        );
        state
            .pulled_at
            .insert("web:1".into(), at(now - Duration::from_secs(25 * 3600)));
        assert_eq!(refreshes_due(&settings, &state, now).len(), 1, "a day ago");
    }

    #[test]
    fn only_the_held_release_is_held() {
        let at = SystemTime::now();
        let release = |v: i64| Fingerprint {
            parameters: [("/a".to_string(), crate::sync::params::Version::Number(v))].into(),
            objects: Default::default(),
            release: None,
        };
        let state = State {
            failed: Some(FailedRelease {
                at: humantime::format_rfc3339_seconds(at).to_string(),
                reason: "service web: unhealthy".into(),
                fingerprint: release(2),
                attempts: 1,
            }),
            ..State::default()
        };
        let hour = Duration::from_secs(3600);
        let change = || vec!["parameter /a: version 1 -> 2".to_string()];
        let decide =
            |now: &Fingerprint, when| decide(WatchApply::Auto, &state, change(), now, hour, when);
        assert!(matches!(decide(&release(2), at), WatchOutcome::Held(_)));
        assert!(
            matches!(decide(&release(3), at), WatchOutcome::Changed(_)),
            "it changed again"
        );
        assert!(
            matches!(decide(&release(2), at + hour), WatchOutcome::Changed(_)),
            "after the backoff it is tried again"
        );
        assert_eq!(
            super::decide(WatchApply::Auto, &state, Vec::new(), &release(2), hour, at),
            WatchOutcome::Unchanged
        );
        assert!(matches!(
            super::decide(WatchApply::Report, &state, change(), &release(3), hour, at),
            WatchOutcome::Report(_)
        ));
    }

    #[test]
    fn a_promote_is_applied_once_and_a_wave_is_left_alone() {
        use crate::sync::state::RunningRelease;
        let id = |s: &str| ReleaseId::parse(s).unwrap();
        let (a, b, c) = (
            id("20261207T160000000Z-aaaaaa"),
            id("20261207T170000000Z-bbbbbb"),
            id("20261207T180000000Z-cccccc"),
        );
        let at = SystemTime::now();
        let hour = Duration::from_secs(3600);
        let running = |r: &ReleaseId| {
            Some(RunningRelease {
                id: r.clone(),
                images: Default::default(),
            })
        };
        let failed = |r: &ReleaseId| {
            Some(FailedRelease {
                at: humantime::format_rfc3339_seconds(at).to_string(),
                reason: "service web: unhealthy".into(),
                fingerprint: Fingerprint {
                    release: Some(r.clone()),
                    ..Fingerprint::default()
                },
                attempts: 1,
            })
        };
        let state = |run: Option<RunningRelease>, seen: Option<&ReleaseId>, fail| State {
            release: run,
            promoted_seen: seen.cloned(),
            failed: fail,
            ..State::default()
        };
        use WatchOutcome::*;
        let changed = |s: &str| Changed(vec![s.to_string()]);
        // (state, promoted, how long after the failure, what the watch does)
        let table = [
            (
                state(running(&a), Some(&a), None),
                &a,
                Duration::ZERO,
                Unchanged,
            ),
            (
                state(running(&a), Some(&a), None),
                &b,
                Duration::ZERO,
                changed(&format!("release {a} -> {b} (promoted)")),
            ),
            (
                state(None, None, None),
                &a,
                Duration::ZERO,
                changed(&format!("release {a} (promoted)")),
            ),
            // A wave moved this instance to c by `resync --release`: the promote of b it
            // already acted on does not undo it; the next promote does.
            (
                state(running(&c), Some(&b), None),
                &b,
                Duration::ZERO,
                Unchanged,
            ),
            (
                state(running(&c), Some(&b), None),
                &a,
                Duration::ZERO,
                changed(&format!("release {c} -> {a} (promoted)")),
            ),
            // b failed here and was rolled back to a: held, then tried again after the backoff.
            (
                state(running(&a), Some(&a), failed(&b)),
                &b,
                Duration::ZERO,
                Held(String::new()),
            ),
            (
                state(running(&a), Some(&a), failed(&b)),
                &b,
                hour,
                changed(&format!("release {a} -> {b} (promoted)")),
            ),
            (
                state(running(&a), Some(&a), failed(&b)),
                &c,
                Duration::ZERO,
                changed(&format!("release {a} -> {c} (promoted)")),
            ),
        ];
        for (i, (state, promoted, later, want)) in table.into_iter().enumerate() {
            let got = decide_release(WatchApply::Auto, &state, promoted, hour, at + later);
            match (&got, &want) {
                (Held(_), Held(_)) => {}
                _ => assert_eq!(got, want, "row {i}"),
            }
        }
        let report = decide_release(
            WatchApply::Report,
            &state(running(&a), Some(&a), None),
            &b,
            hour,
            at,
        );
        assert_eq!(
            report,
            Report(vec![format!("release {a} -> {b} (promoted)")])
        );
    }

    #[test]
    fn the_pointer_is_read_when_it_moved_and_seen_once_it_needs_nothing() {
        assert_eq!(after_pointer_head(None, "\"a\""), PointerHead::Read);
        assert_eq!(
            after_pointer_head(Some("\"a\""), "\"a\""),
            PointerHead::Unchanged
        );
        assert_eq!(
            after_pointer_head(Some("\"a\""), "\"b\""),
            PointerHead::Read
        );
        use WatchOutcome::*;
        let table = [
            (Unchanged, true, true),
            (Report(vec![]), true, true),
            (Changed(vec![]), false, false),
            (Held(String::new()), false, true),
            (Failed(String::new()), false, false),
        ];
        for (found, pointer, marker) in table {
            assert_eq!(pointer_settled(&found), pointer, "{found:?}");
            assert_eq!(marker_settled(&found), marker, "{found:?}");
        }
    }

    #[test]
    fn the_marker_decides_when_every_source_is_looked_at() {
        let t0 = tokio::time::Instant::now();
        let hour = Duration::from_secs(3600);
        let seen = ("\"a\"".to_string(), t0);
        let table = [
            (None, "\"a\"", Duration::ZERO, true),
            (Some(&seen), "\"a\"", Duration::from_secs(59), false),
            (Some(&seen), "\"b\"", Duration::from_secs(1), true),
            (Some(&seen), "\"a\"", hour, true),
        ];
        for (seen, marker, later, due) in table {
            assert_eq!(
                full_check_due(seen, marker, t0 + later, hour),
                due,
                "{seen:?} {marker} {later:?}"
            );
        }
    }
}
