//! The daemon's rules over time, on paused time: what it does tick after tick.

use super::*;

fn timing() -> Timing {
    Timing {
        watch_interval: Duration::from_secs(60),
        abandon_after: 3,
        health_every: Duration::from_secs(10),
        target_every: Duration::from_secs(5),
        spot_every: Duration::ZERO,
        drain_on_rebalance: false,
    }
}

fn ok(at: &str) -> SyncOutcome {
    SyncOutcome {
        status: 0,
        text: "in sync: 1 containers, 0 changed".into(),
        line: "in sync".into(),
        at: at.into(),
        held: None,
        warm: false,
    }
}

fn failed(line: &str, held: Option<&str>) -> SyncOutcome {
    SyncOutcome {
        status: 1,
        text: format!("{line}\n -> more"),
        line: line.into(),
        at: "t".into(),
        held: held.map(str::to_string),
        warm: false,
    }
}

/// The machine, driven as the loop drives it: events now, and the timers as time passes.
struct Daemon {
    machine: Machine,
    effects: Vec<Effect>,
}

impl Daemon {
    fn start() -> Daemon {
        let (machine, effects) = Machine::new(timing());
        Daemon { machine, effects }
    }

    fn on(&mut self, event: Event) -> Vec<Effect> {
        let effects = self.machine.handle(event, Instant::now());
        self.effects.extend(effects.clone());
        effects
    }

    /// Lets `span` of time pass, firing every timer that comes due on the way.
    async fn wait(&mut self, span: Duration) -> Vec<Effect> {
        let end = Instant::now() + span;
        let mut effects = Vec::new();
        loop {
            match self.machine.next_deadline() {
                Some(at) if at <= end => {
                    tokio::time::sleep_until(at).await;
                    effects.extend(self.on(Event::Tick));
                }
                _ => break,
            }
        }
        tokio::time::sleep_until(end).await;
        effects
    }
}

fn syncs(effects: &[Effect]) -> usize {
    effects
        .iter()
        .filter(|e| matches!(e, Effect::Sync { .. }))
        .count()
}

fn statuses(effects: &[Effect]) -> Vec<&str> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Status(s) => Some(s.as_str()),
            _ => None,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn the_first_sync_is_retried_with_backoff_and_abandoned_once() {
    let mut d = Daemon::start();
    assert_eq!(syncs(&d.effects), 1);
    d.on(Event::Launch(Some(LaunchFound {
        pending: true,
        heartbeat: Duration::from_secs(1),
        unhealthy_after: None,
        terminate: false,
    })));
    let mut retried_at = Vec::new();
    for attempt in 1..=5u32 {
        let effects = d.on(Event::Synced(failed("SSM is down", None)));
        assert!(statuses(&effects)[0].starts_with(&format!(
            "first sync failed (attempt {attempt}), retrying in"
        )));
        assert_eq!(
            effects.contains(&Effect::CompleteLaunch(false)),
            attempt == 3,
            "ABANDON after abandon_after failures, once"
        );
        let before = Instant::now();
        let mut waited = Vec::new();
        while syncs(&waited) == 0 {
            waited = d.wait(Duration::from_millis(500)).await;
        }
        retried_at.push(Instant::now() - before);
    }
    // 2 s doubling to 60 s with full jitter, never under a second.
    assert!(retried_at
        .iter()
        .all(|d| *d >= Duration::from_secs(1) && *d <= Duration::from_secs(61)));
    assert!(!d.effects.contains(&Effect::Ready));
    // Heartbeats went out while the launch was pending, until ABANDON.
    let beats = d
        .effects
        .iter()
        .filter(|e| **e == Effect::Heartbeat)
        .count();
    assert!(beats >= 1, "{beats}");

    let effects = d.on(Event::Synced(ok("2026-12-01T10:00:00Z")));
    assert!(effects.contains(&Effect::Ready));
    assert!(
        !effects.contains(&Effect::CompleteLaunch(true)),
        "the launch was abandoned already"
    );
    assert_eq!(
        statuses(&effects),
        vec!["in sync since 2026-12-01T10:00:00Z"]
    );
}

#[tokio::test(start_paused = true)]
async fn a_sync_done_before_the_lookup_completes_the_launch_when_it_ends() {
    let mut d = Daemon::start();
    let effects = d.on(Event::Synced(ok("t")));
    assert!(effects.contains(&Effect::Ready));
    assert!(!effects
        .iter()
        .any(|e| matches!(e, Effect::CompleteLaunch(_))));
    let effects = d.on(Event::Launch(Some(LaunchFound {
        pending: true,
        heartbeat: Duration::from_secs(30),
        unhealthy_after: None,
        terminate: false,
    })));
    assert_eq!(effects, vec![Effect::CompleteLaunch(true)]);
    // CompleteLifecycleAction may take a while (throttled, the launch race): heartbeats go on
    // until it is settled, then stop.
    let meanwhile = d.wait(Duration::from_secs(65)).await;
    let beats = |e: &[Effect]| e.iter().filter(|e| **e == Effect::Heartbeat).count();
    assert_eq!(beats(&meanwhile), 2, "{meanwhile:?}");
    d.on(Event::LaunchSettled);
    let later = d.wait(Duration::from_secs(120)).await;
    assert_eq!(beats(&later), 0, "no heartbeat once settled");
}

#[tokio::test(start_paused = true)]
async fn resyncs_asked_during_a_sync_share_one_sync_after_it() {
    let mut d = Daemon::start();
    assert!(
        d.on(Event::Resync(Some(1))).is_empty(),
        "no second sync at once"
    );
    assert!(d.on(Event::Resync(Some(2))).is_empty());
    assert!(d.on(Event::Resync(None)).is_empty());
    let effects = d.on(Event::Synced(ok("t")));
    assert_eq!(
        effects.iter().find(|e| matches!(e, Effect::Reply { .. })),
        Some(&Effect::Reply {
            clients: vec![],
            status: 0,
            text: "in sync: 1 containers, 0 changed".into()
        }),
        "the first sync had no client"
    );
    assert!(effects.contains(&Effect::Sync { retry_held: true }));
    assert_eq!(d.machine.listening(), &[1, 2]);
    let effects = d.on(Event::Synced(failed("rolled back", None)));
    assert_eq!(
        effects[0],
        Effect::Reply {
            clients: vec![1, 2],
            status: 1,
            text: "rolled back\n -> more".into()
        }
    );
    assert_eq!(syncs(&effects), 0);
}

/// A release that failed is not applied again on every watch tick: the watch reports it held,
/// and the daemon says so, for as long as it stays the same. A change, or a resync, applies.
#[tokio::test(start_paused = true)]
async fn a_failed_release_is_held_watch_after_watch() {
    let mut d = Daemon::start();
    d.on(Event::Synced(ok("2026-12-01T10:00:00Z")));
    // The watch finds a change: applied; it fails and is rolled back.
    let effects = d.wait(Duration::from_secs(70)).await;
    assert_eq!(effects, vec![Effect::Watch]);
    let effects = d.on(Event::Watched(WatchOutcome::Changed(vec![
        "parameter /a: version 1 -> 2".into(),
    ])));
    assert_eq!(effects, vec![Effect::Sync { retry_held: false }]);
    let held = "release of 2026-12-01T10:05:00Z failed (service web: unhealthy); serving the release of 2026-12-01T10:00:00Z";
    let effects = d.on(Event::Synced(failed("service web: unhealthy", Some(held))));
    assert_eq!(statuses(&effects), vec![format!("degraded: {held}")]);
    // An hour of watches: each finds only the held release, and nothing is synced.
    let mut watches = 0;
    for _ in 0..60 {
        for effect in d.wait(Duration::from_secs(60)).await {
            if effect == Effect::Watch {
                watches += 1;
                let effects = d.on(Event::Watched(WatchOutcome::Held(held.into())));
                assert_eq!(statuses(&effects), vec![format!("degraded: {held}")]);
                assert_eq!(syncs(&effects), 0);
            }
        }
    }
    assert!(watches >= 30, "{watches}");
    // An operator's resync applies it all the same.
    assert_eq!(
        d.on(Event::Resync(Some(7))),
        vec![Effect::Sync { retry_held: true }]
    );
    d.on(Event::Synced(failed("service web: unhealthy", Some(held))));
    // A new change is applied.
    let effects = d.wait(Duration::from_secs(70)).await;
    assert_eq!(effects, vec![Effect::Watch]);
    let effects = d.on(Event::Watched(WatchOutcome::Changed(vec![
        "parameter /a: version 2 -> 3".into(),
    ])));
    assert_eq!(syncs(&effects), 1);
}

#[tokio::test(start_paused = true)]
async fn watching_waits_for_the_sync_and_reports_what_it_does_not_apply() {
    let mut d = Daemon::start();
    assert!(
        d.wait(Duration::from_secs(300)).await.is_empty(),
        "no watch before the first sync ends"
    );
    d.on(Event::Synced(ok("t")));
    let first = d.wait(Duration::from_secs(66)).await;
    assert_eq!(first, vec![Effect::Watch], "the interval give or take 10%");
    // A watch still running is never doubled.
    assert!(d.wait(Duration::from_secs(300)).await.is_empty());
    let effects = d.on(Event::Watched(WatchOutcome::Report(vec![
        "file a: update".into()
    ])));
    assert_eq!(
        statuses(&effects),
        vec!["changes pending (watch.apply: report): file a: update"]
    );
    assert_eq!(d.wait(Duration::from_secs(66)).await, vec![Effect::Watch]);
    d.on(Event::Watched(WatchOutcome::Failed("S3 timed out".into())));
    assert_eq!(
        d.wait(Duration::from_secs(66)).await,
        vec![Effect::Watch],
        "a failed watch is tried again"
    );
}

#[tokio::test(start_paused = true)]
async fn an_application_unhealthy_long_enough_gets_the_instance_replaced() {
    let mut d = Daemon::start();
    d.on(Event::Launch(Some(LaunchFound {
        pending: false,
        heartbeat: Duration::from_secs(30),
        unhealthy_after: Some(Duration::from_secs(60)),
        terminate: false,
    })));
    d.on(Event::Synced(ok("t")));
    let mut marked = 0;
    let mut checks = 0;
    for step in 0..30 {
        for effect in d.wait(Duration::from_secs(10)).await {
            if effect == Effect::CheckHealth {
                checks += 1;
                // Well for a while, then unwell from the 10th check on.
                let effects = d.on(Event::Health(step < 10));
                marked += effects
                    .iter()
                    .filter(|e| **e == Effect::MarkUnhealthy)
                    .count();
            }
            if effect == Effect::Watch {
                d.on(Event::Watched(WatchOutcome::Unchanged));
            }
        }
        if marked > 0 {
            assert!(step >= 15, "marked after {step} checks: too early");
            break;
        }
    }
    assert_eq!(marked, 1, "after {checks} checks");
}

fn polls(effects: &[Effect]) -> usize {
    effects.iter().filter(|e| **e == Effect::PollTarget).count()
}

/// A warm-pool instance: prepared, ready, the launch hook completed (into the pool); then, tick
/// after tick, it reads where Auto Scaling is taking it, and starts once that is service: a full
/// sync, and the launch action looked for again (leaving the pool holds it in Pending:Wait).
#[tokio::test(start_paused = true)]
async fn a_warm_instance_waits_for_service_then_starts() {
    let mut d = Daemon::start();
    d.on(Event::Launch(Some(LaunchFound {
        pending: true,
        heartbeat: Duration::from_secs(60),
        unhealthy_after: None,
        terminate: false,
    })));
    let effects = d.on(Event::Synced(SyncOutcome {
        warm: true,
        ..ok("t0")
    }));
    assert!(effects.contains(&Effect::Ready));
    assert!(effects.contains(&Effect::CompleteLaunch(true)));
    assert!(statuses(&effects)[0].starts_with("warm pool:"));
    for _ in 0..3 {
        let effects = d.wait(Duration::from_secs(5)).await;
        assert_eq!(polls(&effects), 1, "a read every 5 s");
        let effects = d.on(Event::Target(Some(TargetState::Warmed(
            "Warmed:Running".into(),
        ))));
        assert_eq!(syncs(&effects), 0, "nothing starts in the pool");
    }
    d.wait(Duration::from_secs(5)).await;
    let effects = d.on(Event::Target(Some(TargetState::InService)));
    assert_eq!(syncs(&effects), 1);
    assert!(effects.contains(&Effect::DiscoverLaunch));
    // The new launch action is completed by this sync's outcome, once found.
    d.on(Event::Launch(Some(LaunchFound {
        pending: true,
        heartbeat: Duration::from_secs(60),
        unhealthy_after: None,
        terminate: false,
    })));
    let effects = d.on(Event::Synced(ok("t1")));
    assert!(effects.contains(&Effect::CompleteLaunch(true)));
    assert_eq!(statuses(&effects), ["in sync since t1"]);
    // In service and no termination hook: no more reads.
    let effects = d.wait(Duration::from_secs(60)).await;
    assert_eq!(polls(&effects), 0);
}

/// With a termination hook, the target state is read every 5 s; `Terminated` stops everything
/// else and drains once; a resync asked meanwhile is refused, not started.
#[tokio::test(start_paused = true)]
async fn termination_drains_once_and_nothing_else_starts() {
    let mut d = Daemon::start();
    d.on(Event::Synced(ok("t0")));
    d.on(Event::Launch(Some(LaunchFound {
        pending: false,
        heartbeat: Duration::from_secs(60),
        unhealthy_after: None,
        terminate: true,
    })));
    let effects = d.wait(Duration::from_secs(5)).await;
    assert_eq!(polls(&effects), 1);
    d.on(Event::Target(Some(TargetState::InService)));
    let effects = d.wait(Duration::from_secs(5)).await;
    assert_eq!(polls(&effects), 1);
    let effects = d.on(Event::Target(Some(TargetState::Terminated)));
    assert_eq!(
        effects,
        [
            Effect::Status(
                "terminating: stopping the containers, then completing the termination hook".into()
            ),
            Effect::Drain {
                after_sync: false,
                hook: true
            }
        ]
    );
    let effects = d.on(Event::Resync(Some(7)));
    assert!(matches!(&effects[..], [Effect::Reply { status: 1, .. }]));
    let effects = d.wait(Duration::from_secs(600)).await;
    assert!(effects.is_empty(), "nothing after the drain: {effects:?}");
    let effects = d.on(Event::Drained("terminating: 2 containers stopped".into()));
    assert_eq!(statuses(&effects), ["terminating: 2 containers stopped"]);
    // Without a termination hook, `Terminated` drains nothing (the group does not wait).
    let mut d = Daemon::start();
    d.on(Event::Synced(ok("t0")));
    let effects = d.on(Event::Target(Some(TargetState::Terminated)));
    assert!(!effects.iter().any(|e| matches!(e, Effect::Drain { .. })));
}

/// The launch action's heartbeats, decision by decision: they start when an action is found
/// pending, go on after CONTINUE or ABANDON is sent (it is tried until taken), and stop only when
/// the action is settled; a settlement heard before the outcome was sent stops nothing.
#[tokio::test(start_paused = true)]
async fn launch_heartbeats_last_until_the_action_is_settled() {
    let found = |pending| {
        Event::Launch(Some(LaunchFound {
            pending,
            heartbeat: Duration::from_secs(10),
            unhealthy_after: None,
            terminate: false,
        }))
    };
    let beats = |e: &[Effect]| e.iter().filter(|e| **e == Effect::Heartbeat).count();
    // (action pending, the sync's outcome, settled after the completion was sent, beats in the
    // 60 s after the sync, in the 60 s after that).
    for (pending, synced_ok, settled, first, second) in [
        (true, true, true, 6, 0),
        (true, false, true, 6, 0),
        (true, true, false, 6, 6),
        (false, true, false, 0, 0),
    ] {
        let case = format!("pending {pending}, ok {synced_ok}, settled {settled}");
        let mut d = Daemon::start();
        d.on(found(pending));
        // An early settlement (a heartbeat's "past the hook" from before) stops nothing.
        d.on(Event::LaunchSettled);
        let before = d.wait(Duration::from_secs(30)).await;
        assert_eq!(beats(&before), if pending { 3 } else { 0 }, "{case}");
        let outcome = match synced_ok {
            true => ok("t"),
            false => failed("down", None),
        };
        let mut effects = d.on(Event::Synced(outcome.clone()));
        if !synced_ok {
            // ABANDON comes with the `abandon_after`th failure.
            for _ in 1..timing().abandon_after {
                d.wait(Duration::from_secs(61)).await;
                effects = d.on(Event::Synced(outcome.clone()));
            }
        }
        assert_eq!(
            effects.contains(&Effect::CompleteLaunch(synced_ok)),
            pending,
            "{case}: {effects:?}"
        );
        if settled {
            d.on(Event::LaunchSettled);
        }
        let after = d.wait(Duration::from_secs(60)).await;
        let later = d.wait(Duration::from_secs(60)).await;
        match settled {
            true => assert_eq!((beats(&after), beats(&later)), (0, 0), "{case}"),
            false => assert_eq!((beats(&after), beats(&later)), (first, second), "{case}"),
        }
    }
}

/// `Terminated` while a sync runs: the drain is told to end it first; idle, not.
#[test]
fn a_drain_during_a_sync_ends_the_sync_first() {
    let terminate = || {
        Event::Launch(Some(LaunchFound {
            pending: false,
            heartbeat: Duration::from_secs(60),
            unhealthy_after: None,
            terminate: true,
        }))
    };
    let now = Instant::now();
    for (mid_rollout, after_sync) in [(true, true), (false, false)] {
        let (mut m, _) = Machine::new(timing());
        m.handle(Event::Synced(ok("t0")), now);
        m.handle(terminate(), now);
        if mid_rollout {
            m.handle(Event::Resync(Some(1)), now);
            assert!(m.is_syncing());
        }
        let effects = m.handle(Event::Target(Some(TargetState::Terminated)), now);
        assert!(
            effects.contains(&Effect::Drain {
                after_sync,
                hook: true
            }),
            "{mid_rollout}: {effects:?}"
        );
        // The sync ends (rolled back, refused by the fence): its client hears so, and nothing
        // follows it.
        if mid_rollout {
            let effects = m.handle(
                Event::Synced(failed("the instance is terminating", None)),
                now,
            );
            assert!(
                effects
                    .iter()
                    .all(|e| matches!(e, Effect::Reply { status: 1, .. })),
                "{effects:?}"
            );
        }
    }
}

/// A throttled watch pushes the next ones back, doubling to 8 intervals; an answer resets it.
#[tokio::test(start_paused = true)]
async fn a_throttled_watch_backs_off_and_recovers() {
    let mut d = Daemon::start();
    d.on(Event::Synced(ok("t0")));
    let watch_after = |effects: &[Effect]| effects.contains(&Effect::Watch);
    let mut gaps = Vec::new();
    for answer in [
        WatchOutcome::Failed("ThrottlingException: Rate exceeded".into()),
        WatchOutcome::Failed("SlowDown (HTTP 503)".into()),
        WatchOutcome::Failed("ThrottlingException".into()),
        WatchOutcome::Failed("ThrottlingException".into()),
        WatchOutcome::Unchanged,
        WatchOutcome::Unchanged,
    ] {
        let started = Instant::now();
        let mut waited = Vec::new();
        while !watch_after(&waited) {
            waited = d.wait(Duration::from_secs(1)).await;
        }
        gaps.push((Instant::now() - started).as_secs());
        d.on(Event::Watched(answer));
    }
    // 60 s ± 10 % at first; after 1, 2, 3 throttled answers 2x, 4x, 8x; still 8x after a
    // fourth; back to 1x after an answer.
    let within = |gap: u64, times: u64| gap >= 54 * times - 1 && gap <= 66 * times + 1;
    let expect = [1, 2, 4, 8, 8, 1];
    for (gap, times) in gaps.iter().zip(expect) {
        assert!(within(*gap, times), "gaps {gaps:?}");
    }
}

/// A sync refused for its rate (the watch found a promote) is tried again at the next watch, an
/// interval later, never pushed back: the quota is shared out over the fleet's watches, and a
/// fleet applies a release in about the time SSM's quota allows (see `fleet.rs`).
#[tokio::test(start_paused = true)]
async fn a_throttled_sync_is_tried_again_at_the_next_watch() {
    let mut d = Daemon::start();
    d.on(Event::Synced(ok("t0")));
    for _ in 0..3 {
        let started = Instant::now();
        let mut effects = Vec::new();
        while !effects.contains(&Effect::Watch) {
            effects = d.wait(Duration::from_secs(1)).await;
        }
        let gap = (Instant::now() - started).as_secs();
        assert!((53..=67).contains(&gap), "{gap}");
        let effects = d.on(Event::Watched(WatchOutcome::Changed(vec![
            "release a -> b (promoted)".into(),
        ])));
        assert_eq!(effects, vec![Effect::Sync { retry_held: false }]);
        d.on(Event::Synced(failed(
            "ThrottlingException: Rate exceeded",
            None,
        )));
    }
}

/// The jitter comes from the machine's own generator: the same seed, the same schedule.
#[test]
fn the_same_seed_gives_the_same_watches() {
    let now = Instant::now();
    let schedule = |seed| {
        let (mut m, _) = Machine::with_rng(timing(), fastrand::Rng::with_seed(seed));
        m.handle(Event::Synced(ok("t0")), now);
        let first = m.next_deadline();
        m.handle(Event::Tick, first.unwrap());
        m.handle(Event::Watched(WatchOutcome::Unchanged), first.unwrap());
        (first, m.next_deadline())
    };
    assert_eq!(schedule(1), schedule(1));
    assert_ne!(schedule(1), schedule(2));
}

fn spot_reads(effects: &[Effect]) -> usize {
    effects.iter().filter(|e| **e == Effect::PollSpot).count()
}

fn spot_timing(drain_on_rebalance: bool) -> Timing {
    Timing {
        spot_every: Duration::from_secs(5),
        drain_on_rebalance,
        ..timing()
    }
}

fn interruption() -> Seen {
    Seen::Interruption {
        action: "terminate".into(),
        time: "2026-12-08T08:22:00Z".into(),
    }
}

/// Spot notices are read from the start, every 5 s, whatever else runs; an instance that is not
/// Spot is read once; a failed read is tried again at the next turn.
#[tokio::test(start_paused = true)]
async fn spot_notices_are_read_every_5_s_and_never_on_an_instance_that_is_not_spot() {
    let (machine, effects) = Machine::new(spot_timing(false));
    assert_eq!(spot_reads(&effects), 1, "at once, during the first sync");
    let mut d = Daemon { machine, effects };
    let effects = d.wait(Duration::from_secs(30)).await;
    assert_eq!(spot_reads(&effects), 0, "one read at a time");
    d.on(Event::Spot(Some(Seen::Quiet)));
    let effects = d.wait(Duration::from_secs(5)).await;
    assert_eq!(spot_reads(&effects), 1);
    d.on(Event::Spot(None));
    let effects = d.wait(Duration::from_secs(5)).await;
    assert_eq!(spot_reads(&effects), 1, "a failed read is tried again");
    d.on(Event::Spot(Some(Seen::NotSpot)));
    d.on(Event::Synced(ok("t0")));
    let effects = d.wait(Duration::from_secs(600)).await;
    assert_eq!(spot_reads(&effects), 0, "not Spot: never again");
}

/// An interruption notice during the first sync drains at once, without the termination hook
/// (none is pending yet); the hook, when the group has one and the instance reaches it, is
/// completed afterwards, once.
#[tokio::test(start_paused = true)]
async fn a_spot_interruption_drains_at_once_and_the_termination_hook_is_completed_after() {
    let (machine, effects) = Machine::new(spot_timing(false));
    let mut d = Daemon { machine, effects };
    let effects = d.on(Event::Spot(Some(interruption())));
    assert_eq!(
        effects,
        [
            Effect::Status(
                "Spot interruption notice: terminate at 2026-12-08T08:22:00Z: stopping the containers"
                    .into()
            ),
            Effect::Drain {
                after_sync: true,
                hook: false
            }
        ]
    );
    let effects = d.on(Event::Resync(Some(3)));
    assert!(matches!(&effects[..], [Effect::Reply { status: 1, .. }]));
    d.on(Event::Synced(failed("cut short", None)));
    let effects = d.on(Event::Drained("terminating: 2 containers stopped".into()));
    assert_eq!(statuses(&effects), ["terminating: 2 containers stopped"]);
    // No termination hook known: nothing more, ever.
    let effects = d.wait(Duration::from_secs(600)).await;
    assert!(effects.is_empty(), "{effects:?}");
    // The lookup ends late and finds a termination hook: the target state is read on.
    d.on(Event::Launch(Some(LaunchFound {
        pending: false,
        heartbeat: Duration::from_secs(60),
        unhealthy_after: None,
        terminate: true,
    })));
    let effects = d.wait(Duration::from_secs(5)).await;
    assert_eq!(polls(&effects), 1);
    d.on(Event::Target(Some(TargetState::InService)));
    let effects = d.wait(Duration::from_secs(5)).await;
    assert_eq!(polls(&effects), 1);
    let effects = d.on(Event::Target(Some(TargetState::Terminated)));
    assert_eq!(
        effects,
        [Effect::Drain {
            after_sync: false,
            hook: true
        }]
    );
    let effects = d.wait(Duration::from_secs(600)).await;
    assert!(
        effects.is_empty(),
        "the hook is completed once: {effects:?}"
    );
}

/// A rebalance recommendation is said once and the reads go on (an interruption may follow);
/// with `drain_on_rebalance` it drains as an interruption does.
#[tokio::test(start_paused = true)]
async fn a_rebalance_recommendation_is_reported_or_drains_as_configured() {
    let rebalance = || {
        Event::Spot(Some(Seen::Rebalance {
            notice_time: "2026-12-08T08:17:00Z".into(),
        }))
    };
    let (machine, effects) = Machine::new(spot_timing(false));
    let mut d = Daemon { machine, effects };
    d.on(Event::Synced(ok("t0")));
    let effects = d.on(rebalance());
    assert_eq!(
        statuses(&effects),
        ["Spot rebalance recommendation (at 2026-12-08T08:17:00Z): the group may replace this instance (lifecycle.spot: drain_on_rebalance stops the containers now)"]
    );
    let effects = d.wait(Duration::from_secs(5)).await;
    assert_eq!(spot_reads(&effects), 1);
    let effects = d.on(rebalance());
    assert!(effects.is_empty(), "said once: {effects:?}");
    d.wait(Duration::from_secs(5)).await;
    let effects = d.on(Event::Spot(Some(interruption())));
    assert!(effects.contains(&Effect::Drain {
        after_sync: false,
        hook: false
    }));

    let (machine, effects) = Machine::new(spot_timing(true));
    let mut d = Daemon { machine, effects };
    d.on(Event::Synced(ok("t0")));
    let effects = d.on(rebalance());
    assert!(effects.contains(&Effect::Drain {
        after_sync: false,
        hook: false
    }));
}
