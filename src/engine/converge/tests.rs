//! The whole converge against the in-memory engine: over several syncs, with the agent "killed"
//! between any two engine calls, with failing and hanging registries.

use std::path::Path;
use std::time::Duration;

use super::*;
use crate::compose::Project;
use crate::config::PullPolicy as DefaultPolicy;
use crate::engine::api::EngineError;
use crate::engine::fake::{Behaviour, FakeEngine, PullOutcome};

fn settings(pull: DefaultPolicy) -> ComposeSettings {
    ComposeSettings {
        file: "/srv/t/docker-compose.yml".into(),
        pull,
        prune: false,
        healthy_timeout: Duration::from_secs(30),
        pull_stall_timeout: Duration::from_secs(60),
        pull_timeout: Duration::from_secs(600),
        secrets_dir: "/run/kicky-agent/secrets".into(),
        policy: Default::default(),
        ready: Default::default(),
    }
}

fn project(compose: &str) -> Project {
    crate::compose::from_str(
        compose,
        Path::new("/srv/t/docker-compose.yml"),
        "t",
        &|_| None,
    )
    .unwrap()
}

async fn sync(engine: &FakeEngine, compose: &str, pull: DefaultPolicy) -> Result<EngineReport> {
    converge(
        engine,
        &project(compose),
        &settings(pull),
        &Registries::none(),
        PulledBefore {
            ids: &BTreeMap::new(),
            at: &BTreeMap::new(),
        },
        &AgentFiles::new(),
    )
    .await
}

fn web(image: &str) -> String {
    format!("services:\n  web:\n    image: {image}\n    ports: ['8080:8080']\n  side:\n    image: side:1\n")
}

fn engine() -> FakeEngine {
    let engine = FakeEngine::new();
    engine.image("web:1", Behaviour::Healthy);
    engine.image("side:1", Behaviour::Plain);
    engine.remote_image("web:2", Behaviour::Healthy);
    engine.remote_image("web:bad", Behaviour::Unhealthy);
    engine
}

/// The service's containers are settled: one under its name, running, none staged or aside.
fn settled(engine: &FakeEngine) -> Container {
    let names = engine.names();
    assert_eq!(names, vec!["t-side-1", "t-web-1"], "leftovers: {names:?}");
    let web = engine.named("t-web-1").unwrap();
    assert!(web.is_running());
    web
}

use crate::engine::api::Container;

#[tokio::test(start_paused = true)]
async fn a_change_is_switched_in_and_a_second_sync_changes_nothing() {
    let engine = engine();
    sync(&engine, &web("web:1"), DefaultPolicy::Missing)
        .await
        .unwrap();
    let first = settled(&engine);
    sync(&engine, &web("web:2"), DefaultPolicy::Missing)
        .await
        .unwrap();
    let second = settled(&engine);
    assert_ne!(first.id, second.id);
    assert_eq!(second.image, "web:2");
    let calls = engine.calls().len();
    let report = sync(&engine, &web("web:2"), DefaultPolicy::Missing)
        .await
        .unwrap();
    assert!(report.services.iter().all(|s| s.action == Action::Keep));
    assert_eq!(
        engine.calls().len(),
        calls,
        "a sync with nothing to do changes nothing"
    );
}

#[tokio::test(start_paused = true)]
async fn a_release_that_never_gets_healthy_is_rolled_back_on_every_try() {
    let engine = engine();
    sync(&engine, &web("web:1"), DefaultPolicy::Missing)
        .await
        .unwrap();
    let good = settled(&engine);
    for _ in 0..3 {
        let err = sync(&engine, &web("web:bad"), DefaultPolicy::Missing)
            .await
            .unwrap_err();
        let message = format!("{err:#}");
        assert!(
            message.contains("rolled back: the previous containers of web run again"),
            "{message}"
        );
        assert_eq!(settled(&engine).id, good.id);
    }
}

/// The agent killed after every possible number of engine calls of a sync that switches `web`
/// to a new image: the next sync (the agent restarted) ends with the last good container serving
/// when the new image is bad, and with the new one when it is good, with nothing left over.
#[tokio::test(start_paused = true)]
async fn the_agent_killed_between_any_two_engine_calls_loses_nothing() {
    for (image, good) in [("web:2", true), ("web:bad", false)] {
        let engine = engine();
        sync(&engine, &web("web:1"), DefaultPolicy::Missing)
            .await
            .unwrap();
        let before = engine.snapshot();
        let last_good = settled(&engine).id;
        // How many changing calls the whole sync makes.
        let _ = sync(&engine, &web(image), DefaultPolicy::Missing).await;
        let total = engine.calls().len() - before.calls.len();
        assert!(total >= 5, "{:?}", engine.calls());
        for killed_after in 0..total {
            engine.restore(before.clone());
            engine.die_after(killed_after);
            assert!(sync(&engine, &web(image), DefaultPolicy::Missing)
                .await
                .is_err());
            engine.revive();
            let result = sync(&engine, &web(image), DefaultPolicy::Missing).await;
            let case = format!("{image}, killed after {killed_after} of {total} calls");
            assert_eq!(result.is_ok(), good, "{case}: {result:?}");
            let live = settled(&engine);
            if good {
                assert_eq!(live.image, image, "{case}");
            } else {
                assert_eq!(
                    live.id, last_good,
                    "{case}: the last good container must serve"
                );
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_one_shot_service_completes_once_and_is_not_run_again() {
    let engine = engine();
    engine.image("migrate:1", Behaviour::Exits(0));
    let compose = "services:\n  migrate:\n    image: migrate:1\n  web:\n    image: web:1\n    depends_on:\n      migrate: { condition: service_completed_successfully }\n";
    sync(&engine, compose, DefaultPolicy::Missing)
        .await
        .unwrap();
    let migrate = engine.named("t-migrate-1").unwrap();
    assert!(migrate.completed());
    let starts = |engine: &FakeEngine| {
        engine
            .calls()
            .iter()
            .filter(|c| c.starts_with(&format!("start {}", migrate.id)))
            .count()
    };
    assert_eq!(starts(&engine), 1);
    for _ in 0..3 {
        let report = sync(&engine, compose, DefaultPolicy::Missing)
            .await
            .unwrap();
        let actions: Vec<&Action> = report.services.iter().map(|s| &s.action).collect();
        assert_eq!(actions, vec![&Action::Done, &Action::Keep]);
    }
    assert_eq!(starts(&engine), 1, "a completed one-shot is not run again");

    // A one-shot that fails stops its dependants, and the sync.
    engine.image("migrate:2", Behaviour::Exits(3));
    let failing = compose.replace("migrate:1", "migrate:2");
    let err = sync(&engine, &failing, DefaultPolicy::Missing)
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("did not complete successfully (exit 3)"),
        "{err:#}"
    );
    let back = engine.named("t-migrate-1").unwrap();
    assert_eq!(
        back.id, migrate.id,
        "the previous one-shot container is back"
    );
    assert!(back.completed(), "put back, not run again");
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_registry_falls_back_to_the_local_image() {
    for (outcome, falls_back) in [
        (
            PullOutcome::Fails(EngineError::Refused {
                status: Some(500),
                message: "received unexpected HTTP status: 503 Service Unavailable".into(),
            }),
            true,
        ),
        (PullOutcome::Hangs, true),
        (
            PullOutcome::Fails(EngineError::Refused {
                status: Some(500),
                message: "unauthorized: authentication required".into(),
            }),
            false,
        ),
    ] {
        let engine = engine();
        engine
            .state
            .lock()
            .unwrap()
            .pulls
            .insert("web:1".into(), outcome.clone());
        let result = sync(&engine, &web("web:1"), DefaultPolicy::Always).await;
        match (result, falls_back) {
            (Ok(report), true) => {
                assert_eq!(report.stale, vec!["web:1".to_string()]);
                assert!(report.pulled.iter().all(|i| i != "web:1"));
                settled(&engine);
            }
            (Err(err), false) => assert!(format!("{err:#}").contains("unauthorized"), "{err:#}"),
            (result, _) => panic!("{outcome:?}: {result:?}"),
        }
    }
    // Not present locally: nothing to fall back on.
    let engine = engine();
    engine
        .state
        .lock()
        .unwrap()
        .pulls
        .insert("web:2".into(), PullOutcome::Hangs);
    let err = sync(&engine, &web("web:2"), DefaultPolicy::Always)
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("no progress for 1m"), "{err:#}");
}

#[tokio::test(start_paused = true)]
async fn every_failed_create_is_told_and_nothing_is_left() {
    let engine = engine();
    sync(&engine, &web("web:1"), DefaultPolicy::Missing)
        .await
        .unwrap();
    let good = settled(&engine);
    {
        let mut state = engine.state.lock().unwrap();
        state.refuse_create.insert("t-web-1-kicky-new".into());
        state.refuse_create.insert("t-side-1-kicky-new".into());
    }
    let compose = web("web:2").replace("side:1\n", "side:1\n    environment: { A: b }\n");
    let err = sync(&engine, &compose, DefaultPolicy::Missing)
        .await
        .unwrap_err();
    let message = format!("{err:#}");
    assert!(
        message.contains("2 of 2 containers could not be created"),
        "{message}"
    );
    assert!(
        message.contains("service web") && message.contains("service side"),
        "{message}"
    );
    assert_eq!(settled(&engine).id, good.id);
}

/// `healthcheck.start_interval` on an engine older than API 1.44 (the fake speaks 1.41, as
/// Debian's 20.10 does): refused as bad input before anything changes, never dropped silently.
#[tokio::test(start_paused = true)]
async fn start_interval_on_an_older_engine_is_refused() {
    let engine = engine();
    sync(&engine, &web("web:1"), DefaultPolicy::Missing)
        .await
        .unwrap();
    let calls = engine.calls().len();
    let compose = format!(
        "{}    healthcheck: {{ start_period: 30s, start_interval: 2s }}\n",
        web("web:2").replace("  side:\n    image: side:1\n", "")
    );
    let err = sync(&engine, &compose, DefaultPolicy::Missing)
        .await
        .unwrap_err();
    assert_eq!(crate::error::exit_status(&err), 2);
    assert!(format!("{err:#}").contains("start_interval needs Docker Engine 25 or later (API 1.44); this engine speaks API 1.41"), "{err:#}");
    assert_eq!(engine.calls().len(), calls, "nothing changed");
}

/// The drain begins while a rollout waits for a new container's health (`Terminated` arrives
/// mid-rollout): the wait ends at once, and from then on nothing is created or started, by the
/// rollout or by its rollback, which would otherwise start the previous container again.
#[tokio::test(start_paused = true)]
async fn a_drain_during_a_rollout_stops_every_create_and_start_the_rollback_included() {
    use crate::engine::fence::{Fenced, Gate};
    let engine = engine();
    engine.remote_image("web:slow", Behaviour::Starting);
    sync(&engine, &web("web:1"), DefaultPolicy::Missing)
        .await
        .unwrap();
    let good = settled(&engine);
    let gate = Gate::new();
    let fenced = Fenced::new(engine, gate.fence());
    let started = tokio::time::Instant::now();
    let compose = web("web:slow");
    let (project, settings) = (project(&compose), settings(DefaultPolicy::Missing));
    let (registries, none, files) = (Registries::none(), BTreeMap::new(), AgentFiles::new());
    let before = PulledBefore {
        ids: &none,
        at: &none,
    };
    let rollout = converge(&fenced, &project, &settings, &registries, before, &files);
    let drain = async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let at_drain = fenced.inner.calls().len();
        // The new container was started and is being waited for.
        assert!(
            fenced.inner.calls().iter().any(|c| c.starts_with("start")),
            "{:?}",
            fenced.inner.calls()
        );
        gate.shut();
        at_drain
    };
    let (result, at_drain) = futures::join!(rollout, drain);
    let message = format!("{:#}", result.unwrap_err());
    assert!(message.contains("the instance is terminating"), "{message}");
    // Not the 30 s healthy_timeout: the wait ended with the fence.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let after: Vec<String> = fenced.inner.calls()[at_drain..].to_vec();
    assert!(
        after
            .iter()
            .all(|c| !c.starts_with("create") && !c.starts_with("start")),
        "created or started after the drain began: {after:?}"
    );
    // The previous container was not started again.
    let previous = fenced.inner.container(&good.id).await.unwrap();
    assert!(
        previous.is_none_or(|c| !c.is_running()),
        "the rollback started the previous container: {after:?}"
    );
}
