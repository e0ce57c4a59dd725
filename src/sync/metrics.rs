//! Prometheus metrics in the text exposition format, written after every sync to the file that
//! node_exporter's textfile collector reads (`metrics.textfile`): syncs, failures, durations,
//! pulls, rollbacks and each service's health. The counters live in the state file, so they
//! survive restarts of the agent.

use std::fmt::Write;
use std::path::Path;

use anyhow::{Context, Result};

use super::state::State;
use crate::atomic;
use crate::engine::containers::ContainerStatus;

/// The exposition text for `project`.
pub fn render(project: &str, state: &State, containers: &[ContainerStatus]) -> String {
    let c = &state.counters;
    let label = format!("project=\"{}\"", escape(project));
    let last_ok = state
        .last_sync
        .as_ref()
        .map(|s| u8::from(s.ok))
        .unwrap_or(0);
    let mut out = String::new();
    for (name, kind, help, value) in [
        (
            "kicky_agent_syncs_total",
            "counter",
            "Syncs run, successful or not.",
            c.syncs.to_string(),
        ),
        (
            "kicky_agent_sync_failures_total",
            "counter",
            "Syncs that failed.",
            c.failures.to_string(),
        ),
        (
            "kicky_agent_rollbacks_total",
            "counter",
            "Failed syncs rolled back to the last good release.",
            c.rollbacks.to_string(),
        ),
        (
            "kicky_agent_image_pulls_total",
            "counter",
            "Images pulled.",
            c.pulls.to_string(),
        ),
        (
            "kicky_agent_release_held",
            "gauge",
            "1 while a release that failed is held and the last good one serves.",
            u8::from(state.failed.is_some()).to_string(),
        ),
        (
            "kicky_agent_stale_images",
            "gauge",
            "Images the last sync used from the local store because their registry could not be reached.",
            state.stale_images.len().to_string(),
        ),
        (
            "kicky_agent_last_sync_duration_seconds",
            "gauge",
            "How long the last sync took.",
            format!("{:.3}", c.last_duration_seconds),
        ),
        (
            "kicky_agent_last_sync_success",
            "gauge",
            "1 when the last sync converged and was healthy.",
            last_ok.to_string(),
        ),
        (
            "kicky_agent_last_success_timestamp_seconds",
            "gauge",
            "When the last good sync ended (Unix time).",
            c.last_success_unix.to_string(),
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{{label}}} {value}"
        );
    }
    // The release running (with `release.store`): one series, its id as a label, as Prometheus'
    // `*_info` metrics name a version.
    if let Some(release) = &state.release {
        let _ = writeln!(
            out,
            "# HELP kicky_agent_release_info The release the last good sync applied.\n\
             # TYPE kicky_agent_release_info gauge\n\
             kicky_agent_release_info{{{label},release=\"{}\"}} 1",
            escape(release.id.as_str())
        );
    }
    if !state.timeline.is_empty() {
        let _ = writeln!(
            out,
            "# HELP kicky_agent_last_sync_phase_seconds How long each phase of the last sync took (status --timeline).\n\
             # TYPE kicky_agent_last_sync_phase_seconds gauge"
        );
        for span in &state.timeline {
            let _ = writeln!(
                out,
                "kicky_agent_last_sync_phase_seconds{{{label},phase=\"{}\",target=\"{}\"}} {:.3}",
                escape(&span.kind),
                escape(&span.what),
                span.ms as f64 / 1000.0
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP kicky_agent_service_healthy 1 when the service's container runs (and is healthy, with a healthcheck).\n\
         # TYPE kicky_agent_service_healthy gauge"
    );
    // A container's name may come from a variable (`container_name: ${APP}`): it is redacted. The
    // project and the services are named by the config and the compose file's keys, never by a
    // value, and kept as they are (a series must not change its labels).
    for container in containers {
        let _ = writeln!(
            out,
            "kicky_agent_service_healthy{{{label},service=\"{}\",container=\"{}\"}} {}",
            escape(&container.service),
            escape(&crate::redact::text(&container.name)),
            u8::from(container.is_well())
        );
    }
    let _ = writeln!(
        out,
        "# HELP kicky_agent_service_readiness_checked 0 when nothing checks that the service serves (no healthcheck, no ready probe): its healthy 1 only means running.\n\
         # TYPE kicky_agent_service_readiness_checked gauge"
    );
    for container in containers.iter().filter(|c| !c.one_shot) {
        let _ = writeln!(
            out,
            "kicky_agent_service_readiness_checked{{{label},service=\"{}\",container=\"{}\"}} {}",
            escape(&container.service),
            escape(&crate::redact::text(&container.name)),
            u8::from(container.readiness != "none")
        );
    }
    out
}

/// Writes the metrics of `settings` as they stand now: the state file's counters and timeline,
/// and the containers' health as the engine says (and the probes find) at this moment. Nothing
/// when the config has no `metrics.textfile`; a failure is logged.
pub async fn refresh(
    settings: &crate::config::Settings,
    engine: Option<&impl crate::engine::api::Engine>,
) {
    let Some(path) = &settings.metrics_textfile else {
        return;
    };
    let state = match State::load(&State::path(settings)) {
        Ok(state) => state,
        Err(err) => {
            tracing::warn!("metrics: {err:#}");
            return;
        }
    };
    let probes = crate::compose::probes(settings);
    let containers = match (&settings.compose, engine) {
        (Some(_), Some(engine)) => {
            crate::engine::containers::containers(engine, &settings.project, &probes)
                .await
                .unwrap_or_default()
        }
        (Some(_), None) => {
            crate::engine::containers::containers_now(&settings.project, &probes).await
        }
        _ => Vec::new(),
    };
    let text = render(&settings.project, &state, &containers);
    if let Err(err) = write_textfile(path, &text) {
        tracing::warn!("{err:#}");
    }
}

/// Writes the metrics where the textfile collector reads them, atomically, mode 0644.
pub fn write_textfile(path: &Path, text: &str) -> Result<()> {
    atomic::write_if_changed(path, text.as_bytes(), 0o644)
        .with_context(|| format!("failed to write the metrics to {}", path.display()))?;
    Ok(())
}

/// A label's value, escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::state::{Counters, SyncRecord};

    #[test]
    fn exposition_format() {
        let state = State {
            counters: Counters {
                syncs: 3,
                failures: 1,
                rollbacks: 1,
                pulls: 2,
                last_duration_seconds: 1.5,
                last_success_unix: 1700000000,
            },
            last_sync: Some(SyncRecord {
                started: "a".into(),
                finished: "b".into(),
                ok: true,
                error: None,
            }),
            ..Default::default()
        };
        let containers = vec![ContainerStatus {
            name: "orange".into(),
            service: "spring_server".into(),
            image: "x".into(),
            state: "running".into(),
            health: Some("healthy".into()),
            readiness: "healthcheck".into(),
            one_shot: false,
            exit_code: None,
        }];
        let text = render("orange", &state, &containers);
        assert!(
            !text.contains("kicky_agent_release_info"),
            "no release: no series"
        );
        let released = State {
            release: Some(crate::sync::state::RunningRelease {
                id: crate::release::ReleaseId::parse("20261207T163000000Z-3f9a1c").unwrap(),
                images: Default::default(),
            }),
            ..state.clone()
        };
        assert!(render("orange", &released, &containers).contains(
            "# TYPE kicky_agent_release_info gauge\nkicky_agent_release_info{project=\"orange\",release=\"20261207T163000000Z-3f9a1c\"} 1\n"
        ));
        assert!(text.contains("# TYPE kicky_agent_syncs_total counter\nkicky_agent_syncs_total{project=\"orange\"} 3\n"), "{text}");
        assert!(text.contains("kicky_agent_rollbacks_total{project=\"orange\"} 1\n"));
        assert!(text.contains("kicky_agent_last_sync_success{project=\"orange\"} 1\n"));
        assert!(text.contains(
            "kicky_agent_service_healthy{project=\"orange\",service=\"spring_server\",container=\"orange\"} 1\n"
        ));
        assert!(text.contains(
            "kicky_agent_service_readiness_checked{project=\"orange\",service=\"spring_server\",container=\"orange\"} 1\n"
        ));
        let unchecked = vec![ContainerStatus {
            readiness: "none".into(),
            health: None,
            ..containers[0].clone()
        }];
        let timed = State {
            timeline: vec![crate::timeline::Span {
                kind: "pull".into(),
                what: "registry.example/web:2".into(),
                start_ms: 120,
                ms: 2345,
                ok: true,
            }],
            ..state.clone()
        };
        assert!(render("orange", &timed, &containers).contains(
            "# TYPE kicky_agent_last_sync_phase_seconds gauge\nkicky_agent_last_sync_phase_seconds{project=\"orange\",phase=\"pull\",target=\"registry.example/web:2\"} 2.345\n"
        ));
        let text = render("orange", &state, &unchecked);
        assert!(
            text.contains("service=\"spring_server\",container=\"orange\"} 0\n"),
            "{text}"
        );
        // A label from a variable (a `container_name: ${APP}`) is redacted, then escaped.
        let value = format!("metrics-app-{}", std::process::id());
        crate::redact::learn(&value);
        let named = vec![ContainerStatus {
            name: format!("{value}-\"1\""),
            ..containers.into_iter().next().unwrap()
        }];
        let text = render("orange", &state, &named);
        assert!(!text.contains(&value), "{text}");
        assert!(
            text.contains("container=\"<redacted>-\\\"1\\\"\"} 1\n"),
            "{text}"
        );
        // Every sample line is `name{labels} value`.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').unwrap();
            assert!(
                series.ends_with('}') && value.parse::<f64>().is_ok(),
                "{line}"
            );
        }
    }
}
