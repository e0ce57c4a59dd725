//! The daemon's decisions, with no I/O: a state machine that takes what happened (a sync or a
//! watch ended, a client asked for a resync, a timer came due) and returns what to do next. The
//! loop in `daemon/mod.rs` carries the effects out, each in a task of its own, and feeds their
//! results back as events; so nothing here waits on the network, and every rule (backoff, the
//! ABANDON count, resync coalescing, holding a failed release, the unhealthy timer) is tested on
//! paused time.

use std::time::Duration;

use tokio::time::Instant;

use crate::instance::spot::Seen;
use crate::instance::TargetState;
use crate::lifecycle::LaunchPolicy;

/// A `resync` client waiting for its result.
pub type ClientId = u64;

/// The settings the decisions depend on (read again from the config after each sync).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timing {
    /// Zero: no watching.
    pub watch_interval: Duration,
    /// Failed first syncs before ABANDON.
    pub abandon_after: u32,
    /// How often the application's health is looked at, when `unhealthy_after` is set.
    pub health_every: Duration,
    /// How often the target lifecycle state is read (instance metadata, no AWS call) while the
    /// instance waits in a warm pool or its group has a termination hook.
    pub target_every: Duration,
    /// How often Spot notices are read (instance metadata); zero: never.
    pub spot_every: Duration,
    /// A rebalance recommendation drains the instance as an interruption notice does (else it
    /// is reported only: the group's Capacity Rebalancing replaces the instance through its
    /// termination hook).
    pub drain_on_rebalance: bool,
}

/// How a sync ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncOutcome {
    /// 0 converged (or held the last good release), 1 failed, 2 bad input.
    pub status: u8,
    /// The summary, or the whole error chain: what a `resync` client is told.
    pub text: String,
    /// One line of it, for `STATUS=`.
    pub line: String,
    /// When it ended (RFC 3339).
    pub at: String,
    /// A failed release is held (this sync's, or an earlier one's): what to say about it.
    pub held: Option<String>,
    /// The instance was going into a warm pool: everything prepared, nothing started.
    pub warm: bool,
}

/// What a watch check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchOutcome {
    Unchanged,
    /// Changes to apply (`watch.apply: auto`).
    Changed(Vec<String>),
    /// Changes to report only (`watch.apply: report`).
    Report(Vec<String>),
    /// The only change is a release that failed and is held.
    Held(String),
    Failed(String),
}

/// What the lifecycle lookup found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaunchFound {
    /// A launch action waits for CONTINUE or ABANDON.
    pub pending: bool,
    pub heartbeat: Duration,
    /// Mark the instance unhealthy once the application stays unhealthy this long.
    pub unhealthy_after: Option<Duration>,
    /// The group has a termination hook: watch for the instance's termination.
    pub terminate: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Synced(SyncOutcome),
    Watched(WatchOutcome),
    /// A health check ended: whether every container is well.
    Health(bool),
    /// `resync` from a client (waiting for the result), or SIGHUP (`None`).
    Resync(Option<ClientId>),
    /// The lifecycle lookup ended (`None`: no hook).
    Launch(Option<LaunchFound>),
    /// The config was read again.
    Timing(Timing),
    /// The target lifecycle state was read (`None`: none known).
    Target(Option<TargetState>),
    /// What the last look for Spot notices found (`None`: the look failed).
    Spot(Option<crate::instance::spot::Seen>),
    /// The containers were stopped for the termination (and the hook completed): how it went.
    Drained(String),
    /// The launch action is settled: CompleteLifecycleAction was taken (or refused for good), or
    /// a heartbeat found the instance past the hook. Its heartbeats stop.
    LaunchSettled,
    /// A timer may be due.
    Tick,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Start a sync; `retry_held`: apply even a release that failed and is held (asked for).
    Sync {
        retry_held: bool,
    },
    Watch,
    CheckHealth,
    Heartbeat,
    /// `READY=1`.
    Ready,
    /// `STATUS=`.
    Status(String),
    /// CONTINUE (true) or ABANDON the launch action.
    CompleteLaunch(bool),
    MarkUnhealthy,
    /// Read the target lifecycle state.
    PollTarget,
    /// Look for a Spot interruption notice or rebalance recommendation.
    PollSpot,
    /// The instance is terminating: from now on nothing is created or started; stop the
    /// containers (reverse dependency order, each within its grace), then complete the
    /// termination hook with CONTINUE. `after_sync`: a sync runs, to be ended first (its waits
    /// cut short, bounded) so that nothing it does comes after the stops.
    Drain {
        after_sync: bool,
        /// Complete the termination hook once stopped (a Spot notice comes before any hook).
        hook: bool,
    },
    /// Look for the launch action again (the instance left the warm pool: a new one is pending).
    DiscoverLaunch,
    /// Tell these clients how the sync they waited for ended, and let them go.
    Reply {
        clients: Vec<ClientId>,
        status: u8,
        text: String,
    },
}

#[derive(Debug)]
pub struct Machine {
    timing: Timing,
    ready: bool,
    /// Failed first syncs in a row.
    failures: u32,
    syncing: bool,
    /// A resync asked during a sync: another one follows it.
    again: bool,
    /// Clients of the running sync, and of the one that follows it.
    listening: Vec<ClientId>,
    waiting: Vec<ClientId>,
    watching: bool,
    checking: bool,
    retry_at: Option<Instant>,
    watch_at: Option<Instant>,
    health_at: Option<Instant>,
    heartbeat_at: Option<Instant>,
    unwell_since: Option<Instant>,
    launch: LaunchPolicy,
    heartbeat: Duration,
    unhealthy_after: Option<Duration>,
    /// The last sync prepared a warm-pool instance: it starts when the instance goes in service.
    warm: bool,
    /// The group has a termination hook.
    terminate: bool,
    target_at: Option<Instant>,
    polling: bool,
    /// Stopping for the termination: nothing else starts.
    draining: bool,
    spot_at: Option<Instant>,
    spot_polling: bool,
    /// A rebalance recommendation was reported (once is enough).
    rebalance_seen: bool,
    /// Drained for a Spot notice: the termination hook, if one comes, is still to complete.
    spot_drained: bool,
    /// The watch interval's multiplier while AWS throttles the watch (1, 2, 4, 8).
    watch_backoff: u32,
    /// Where the jitter comes from: seeded from the process's generator, or given (a simulation
    /// that must reproduce).
    rng: fastrand::Rng,
}

impl Machine {
    /// The daemon at start: its first sync begins at once.
    pub fn new(timing: Timing) -> (Machine, Vec<Effect>) {
        Machine::with_rng(timing, fastrand::Rng::new())
    }

    /// [`Machine::new`], its jitter drawn from `rng`.
    pub fn with_rng(timing: Timing, rng: fastrand::Rng) -> (Machine, Vec<Effect>) {
        let machine = Machine {
            ready: false,
            failures: 0,
            syncing: true,
            again: false,
            listening: Vec::new(),
            waiting: Vec::new(),
            watching: false,
            checking: false,
            retry_at: None,
            watch_at: None,
            health_at: None,
            heartbeat_at: None,
            unwell_since: None,
            launch: LaunchPolicy::default(),
            heartbeat: Duration::from_secs(60),
            unhealthy_after: None,
            warm: false,
            terminate: false,
            target_at: None,
            polling: false,
            draining: false,
            spot_at: None,
            spot_polling: !timing.spot_every.is_zero(),
            rebalance_seen: false,
            spot_drained: false,
            watch_backoff: 1,
            timing,
            rng,
        };
        let mut effects = vec![
            Effect::Status("first sync: starting".into()),
            Effect::Sync { retry_held: false },
        ];
        if machine.spot_polling {
            effects.push(Effect::PollSpot);
        }
        (machine, effects)
    }

    /// The clients that hear the running sync's progress.
    pub fn listening(&self) -> &[ClientId] {
        &self.listening
    }

    pub fn is_syncing(&self) -> bool {
        self.syncing
    }

    /// When the next timer is due.
    pub fn next_deadline(&self) -> Option<Instant> {
        [
            self.retry_at,
            self.watch_at,
            self.health_at,
            self.heartbeat_at,
            self.target_at,
            self.spot_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Effect> {
        let mut effects = Vec::new();
        if self.draining {
            self.while_draining(event, now, &mut effects);
            return effects;
        }
        match event {
            Event::Synced(outcome) => self.synced(outcome, now, &mut effects),
            Event::Watched(found) => self.watched(found, now, &mut effects),
            Event::Health(well) => self.health(well, now, &mut effects),
            Event::Resync(client) => {
                if self.syncing {
                    self.again = true;
                    self.waiting.extend(client);
                } else {
                    self.listening.extend(client);
                    self.start_sync(true, &mut effects);
                }
            }
            Event::Launch(found) => self.launch_found(found, now, &mut effects),
            Event::Timing(timing) => self.timing = timing,
            Event::Target(state) => self.target(state, now, &mut effects),
            Event::Spot(seen) => self.spot(seen, now, &mut effects),
            Event::Drained(_) => {}
            Event::LaunchSettled => {
                if self.launch == LaunchPolicy::Done {
                    self.heartbeat_at = None;
                }
            }
            Event::Tick => self.tick(now, &mut effects),
        }
        effects
    }

    /// Terminating: syncs, watches and health checks are over; a client asking for a resync is
    /// told so; the end of the draining is reported.
    fn while_draining(&mut self, event: Event, now: Instant, effects: &mut Vec<Effect>) {
        match event {
            // Stopped for a Spot notice: the termination hook, when the group has one and
            // the instance reaches it, is completed (the stops again first, which find nothing
            // left to stop unless something started since).
            Event::Launch(Some(found)) if self.spot_drained => {
                self.terminate = found.terminate;
                self.schedule_target(now);
            }
            Event::Tick
                if self.spot_drained
                    && self.target_at.is_some_and(|at| at <= now)
                    && !self.polling =>
            {
                self.target_at = None;
                self.polling = true;
                effects.push(Effect::PollTarget);
            }
            Event::Target(state) if self.spot_drained => {
                self.polling = false;
                match state {
                    Some(TargetState::Terminated) if self.terminate => {
                        self.spot_drained = false;
                        effects.push(Effect::Drain {
                            after_sync: false,
                            hook: true,
                        });
                    }
                    _ => self.schedule_target(now),
                }
            }
            Event::Resync(Some(client)) => effects.push(Effect::Reply {
                clients: vec![client],
                status: 1,
                text: "the instance is terminating: the containers are being stopped".into(),
            }),
            Event::Synced(outcome) => {
                self.syncing = false;
                effects.push(Effect::Reply {
                    clients: std::mem::take(&mut self.listening),
                    status: outcome.status,
                    text: outcome.text,
                });
            }
            Event::Drained(how) => effects.push(Effect::Status(how)),
            _ => {}
        }
    }

    fn target(&mut self, state: Option<TargetState>, now: Instant, effects: &mut Vec<Effect>) {
        self.polling = false;
        match state {
            Some(TargetState::Terminated) if self.terminate => {
                self.begin_draining();
                self.target_at = None;
                effects.push(Effect::Status(
                    "terminating: stopping the containers, then completing the termination hook"
                        .into(),
                ));
                effects.push(Effect::Drain {
                    after_sync: self.syncing,
                    hook: true,
                });
                return;
            }
            Some(TargetState::InService) if self.warm && !self.syncing => {
                // Out of the warm pool: start what was prepared, and complete the launch hook
                // that holds the instance in Pending:Wait again.
                self.warm = false;
                self.launch = LaunchPolicy::default();
                effects.push(Effect::Status("in service: starting the containers".into()));
                effects.push(Effect::DiscoverLaunch);
                self.start_sync(false, effects);
            }
            _ => {}
        }
        self.schedule_target(now);
    }

    /// A Spot notice: an interruption drains at once (two minutes, no hook to wait for); a
    /// rebalance recommendation is reported, or drains when so configured. Not a Spot instance:
    /// nothing more to read.
    fn spot(&mut self, seen: Option<Seen>, now: Instant, effects: &mut Vec<Effect>) {
        self.spot_polling = false;
        let drain = match &seen {
            Some(Seen::NotSpot) => return,
            Some(Seen::Interruption { .. }) => true,
            Some(Seen::Rebalance { .. }) if self.timing.drain_on_rebalance => true,
            Some(Seen::Rebalance { .. }) if !self.rebalance_seen => {
                self.rebalance_seen = true;
                effects.push(Effect::Status(format!(
                    "{}: the group may replace this instance (lifecycle.spot: drain_on_rebalance stops the containers now)",
                    seen.as_ref().map(Seen::describe).unwrap_or_default()
                )));
                false
            }
            _ => false,
        };
        if !drain {
            self.spot_at = Some(now + self.timing.spot_every);
            return;
        }
        self.begin_draining();
        self.spot_drained = true;
        effects.push(Effect::Status(format!(
            "{}: stopping the containers",
            seen.as_ref().map(Seen::describe).unwrap_or_default()
        )));
        effects.push(Effect::Drain {
            after_sync: self.syncing,
            hook: false,
        });
        // A termination hook may still come: the target state is read on.
        self.schedule_target(now);
    }

    /// From now on nothing but the drain: no retry, watch, health check or launch heartbeat.
    fn begin_draining(&mut self) {
        self.draining = true;
        self.retry_at = None;
        self.watch_at = None;
        self.health_at = None;
        self.heartbeat_at = None;
    }

    fn start_sync(&mut self, retry_held: bool, effects: &mut Vec<Effect>) {
        self.syncing = true;
        self.retry_at = None;
        self.watch_at = None;
        effects.push(Effect::Sync { retry_held });
    }

    fn synced(&mut self, outcome: SyncOutcome, now: Instant, effects: &mut Vec<Effect>) {
        self.syncing = false;
        effects.push(Effect::Reply {
            clients: std::mem::take(&mut self.listening),
            status: outcome.status,
            text: outcome.text.clone(),
        });
        if outcome.status == 0 && outcome.warm {
            self.failures = 0;
            self.warm = true;
            if !self.ready {
                self.ready = true;
                effects.push(Effect::Ready);
            }
            // The launch hook lets the instance into the warm pool.
            self.complete_launch(true, now, effects);
            effects.push(Effect::Status(
                "warm pool: parameters, files and images ready; the containers start when the instance goes in service".into(),
            ));
            self.schedule_target(now);
        } else if outcome.status == 0 {
            self.warm = false;
            self.failures = 0;
            if !self.ready {
                self.ready = true;
                effects.push(Effect::Ready);
            }
            // Once per launch action: the first, or the one of leaving the warm pool.
            self.complete_launch(true, now, effects);
            effects.push(Effect::Status(match &outcome.held {
                Some(held) => format!("degraded: {held}"),
                None => format!("in sync since {}", outcome.at),
            }));
            self.unwell_since = None;
            self.schedule_health(now);
        } else if !self.ready {
            self.failures += 1;
            if self.failures == self.timing.abandon_after {
                // The group replaces the instance; the agent itself keeps retrying.
                tracing::error!(
                    "the first sync failed {} times: abandoning the launch",
                    self.failures
                );
                self.complete_launch(false, now, effects);
            }
            let delay = first_sync_backoff(self.failures, &mut self.rng);
            self.retry_at = Some(now + delay);
            effects.push(Effect::Status(format!(
                "first sync failed (attempt {}), retrying in {}s: {}",
                self.failures,
                delay.as_secs(),
                outcome.line
            )));
        } else {
            effects.push(Effect::Status(format!(
                "degraded: {}",
                outcome.held.as_deref().unwrap_or(&outcome.line)
            )));
        }
        if self.again {
            self.again = false;
            self.listening = std::mem::take(&mut self.waiting);
            self.start_sync(true, effects);
        } else if self.ready {
            self.schedule_watch(now);
        }
    }

    fn watched(&mut self, found: WatchOutcome, now: Instant, effects: &mut Vec<Effect>) {
        self.watching = false;
        // Throttled: the next watches come later (up to 8 intervals), so a fleet backs off
        // together instead of retrying into the quota; any other answer resets it.
        self.watch_backoff = match &found {
            WatchOutcome::Failed(why) if is_throttling(why) => (self.watch_backoff * 2).min(8),
            _ => 1,
        };
        match found {
            WatchOutcome::Changed(_) if !self.syncing => {
                self.start_sync(false, effects);
                return;
            }
            WatchOutcome::Report(changes) => effects.push(Effect::Status(format!(
                "changes pending (watch.apply: report): {}",
                changes.join("; ")
            ))),
            WatchOutcome::Held(held) => effects.push(Effect::Status(format!("degraded: {held}"))),
            _ => {}
        }
        if !self.syncing {
            self.schedule_watch(now);
        }
    }

    fn health(&mut self, well: bool, now: Instant, effects: &mut Vec<Effect>) {
        self.checking = false;
        self.schedule_health(now);
        if well {
            self.unwell_since = None;
            return;
        }
        let since = *self.unwell_since.get_or_insert(now);
        if let Some(after) = self.unhealthy_after {
            if now.duration_since(since) >= after {
                effects.push(Effect::MarkUnhealthy);
                self.unwell_since = None;
            }
        }
    }

    fn launch_found(
        &mut self,
        found: Option<LaunchFound>,
        now: Instant,
        effects: &mut Vec<Effect>,
    ) {
        let pending = found.is_some_and(|f| f.pending);
        if let Some(found) = found {
            self.heartbeat = found.heartbeat;
            self.unhealthy_after = found.unhealthy_after;
            self.terminate = found.terminate;
            self.schedule_target(now);
            if self.ready {
                self.schedule_health(now);
            }
        }
        match self.launch.found(pending) {
            Some(ok) => self.send_completion(ok, now, effects),
            None if self.launch.is_pending() => self.heartbeat_at = Some(now + self.heartbeat),
            None => {}
        }
    }

    /// CONTINUE or ABANDON, once; kept for later while the lookup runs.
    fn complete_launch(&mut self, ok: bool, now: Instant, effects: &mut Vec<Effect>) {
        if let Some(ok) = self.launch.decided(ok) {
            self.send_completion(ok, now, effects);
        }
    }

    /// CompleteLifecycleAction is tried until taken (throttled, the launch race): heartbeats go
    /// on meanwhile, until [`Event::LaunchSettled`].
    fn send_completion(&mut self, ok: bool, now: Instant, effects: &mut Vec<Effect>) {
        effects.push(Effect::CompleteLaunch(ok));
        if self.heartbeat_at.is_none() {
            self.heartbeat_at = Some(now + self.heartbeat);
        }
    }

    fn tick(&mut self, now: Instant, effects: &mut Vec<Effect>) {
        let due = |at: Option<Instant>| at.is_some_and(|at| at <= now);
        if due(self.heartbeat_at) {
            self.heartbeat_at = Some(now + self.heartbeat);
            effects.push(Effect::Heartbeat);
        }
        if due(self.target_at) && !self.polling {
            self.target_at = None;
            self.polling = true;
            effects.push(Effect::PollTarget);
        }
        if due(self.spot_at) && !self.spot_polling {
            self.spot_at = None;
            self.spot_polling = true;
            effects.push(Effect::PollSpot);
        }
        if self.syncing {
            return;
        }
        if due(self.retry_at) {
            self.start_sync(false, effects);
            return;
        }
        if due(self.watch_at) && !self.watching {
            self.watch_at = None;
            self.watching = true;
            effects.push(Effect::Watch);
        }
        if due(self.health_at) && !self.checking {
            self.health_at = None;
            self.checking = true;
            effects.push(Effect::CheckHealth);
        }
    }

    /// The next watch, `watch_interval` from now give or take 10%, so instances started together
    /// spread out.
    fn schedule_watch(&mut self, now: Instant) {
        let interval = self.timing.watch_interval * self.watch_backoff;
        let jitter = 0.9 + 0.2 * self.rng.f64();
        self.watch_at = (!interval.is_zero()).then(|| now + interval.mul_f64(jitter));
    }

    /// The next read of the target lifecycle state, while it matters: in a warm pool, or with a
    /// termination hook to complete.
    fn schedule_target(&mut self, now: Instant) {
        if (self.warm || self.terminate) && !self.polling && self.target_at.is_none() {
            self.target_at = Some(now + self.timing.target_every);
        }
    }

    fn schedule_health(&mut self, now: Instant) {
        if self.ready && self.unhealthy_after.is_some() && !self.checking {
            self.health_at = Some(now + self.timing.health_every);
        }
    }
}

/// Whether a failed watch was refused for its rate (SSM's ThrottlingException, S3's SlowDown, a
/// 429 or 503 from either), as the SDK reports it after its own retries.
fn is_throttling(why: &str) -> bool {
    [
        "Throttl",
        "SlowDown",
        "Rate exceeded",
        "TooManyRequests",
        "RequestLimitExceeded",
    ]
    .iter()
    .any(|w| why.contains(w))
}

/// 2 s doubling to 60 s, full jitter, never under a second.
fn first_sync_backoff(failures: u32, rng: &mut fastrand::Rng) -> Duration {
    let backoff = crate::retry::Backoff {
        initial: Duration::from_secs(2),
        max_delay: Duration::from_secs(60),
        ..Default::default()
    };
    backoff
        .ceiling(failures)
        .mul_f64(rng.f64())
        .max(Duration::from_secs(1))
}

#[cfg(test)]
mod fleet;
#[cfg(test)]
mod tests;
