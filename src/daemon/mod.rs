//! `kicky-agent run`: the long-running service systemd starts on every boot.
//!
//! It syncs at once, retrying with backoff until the first sync converges and every service is
//! healthy; only then does it send `READY=1`. Then it watches parameter versions and object ETags
//! every `watch.interval` (with jitter), applying or reporting what changed (but never a release
//! that failed again and again: it is held, see [`crate::sync::Held`]), and syncs again on
//! `kicky-agent resync` (the control socket) or SIGHUP.
//!
//! The decisions are [`machine::Machine`]'s, a state machine with no I/O. This loop carries its
//! effects out, each network or engine call in a task of its own, bounded, that reports back as
//! an event: the loop itself never waits on I/O, so `WATCHDOG=1` keeps its beat whatever endpoint
//! hangs, and a hung loop (the only thing the watchdog should catch) trips it.
//! The AWS clients and the engine connection are made once and kept for the daemon's life.

pub mod control;
pub mod machine;
pub mod notify;
pub mod watch;

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc::{self, UnboundedSender};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::{self, Settings, SpotChoice};
use crate::engine::docker::DockerEngine;
use crate::engine::fence::{Fence, Fenced, Gate};
use crate::lifecycle::{Beat, Lifecycle};
use crate::progress::Progress;
use crate::sync::state::{now, record_lifecycle, State};
use crate::sync::{Clients, Held, SyncReport, Target};
use control::{ClientMessage, ControlServer};
use machine::{ClientId, Effect, Event, LaunchFound, Machine, SyncOutcome, Timing, WatchOutcome};

/// How long a sync in flight may take to finish after SIGTERM (systemd's TimeoutStopSec is 30 s).
const STOP_GRACE: Duration = Duration::from_secs(20);
/// How often the application's health is looked at when `lifecycle.unhealthy_after` is set.
const HEALTH_EVERY: Duration = Duration::from_secs(10);
/// How often the metrics file is rewritten between syncs (the health gauges stay current).
const METRICS_EVERY: Duration = Duration::from_secs(15);
const METRICS_BOUND: Duration = Duration::from_secs(30);
/// Bounds on the calls the daemon makes between syncs.
const WATCH_BOUND: Duration = Duration::from_secs(60);
const HEALTH_BOUND: Duration = Duration::from_secs(10);
/// Bound on SetInstanceHealth. The launch hook's calls have none: they are tried again until
/// answered (giving up lets the hook time out and terminate a healthy instance), each in a task
/// of its own that the loop does not wait for.
const SET_HEALTH_BOUND: Duration = Duration::from_secs(30);
/// How often the target lifecycle state is read while it matters (warm pool, termination hook):
/// a local instance metadata read (no AWS call), cheap enough to be often; it is part of the time
/// from `InService` to serving.
const TARGET_EVERY: Duration = Duration::from_secs(2);
const TARGET_BOUND: Duration = Duration::from_secs(10);
/// How often a Spot instance's notices are read: AWS suggests every 5 s of the two minutes.
const SPOT_EVERY: Duration = Duration::from_secs(5);
/// Above the three reads' own bounds (2 s a request, tried twice): the machine hears every look.
const SPOT_BOUND: Duration = Duration::from_secs(30);
/// Stopping every container for a termination; beyond it the hook is completed all the same.
const DRAIN_BOUND: Duration = Duration::from_secs(15 * 60);
/// How long the drain waits for a sync in flight to end once the fence is shut (its health waits
/// end at once; a stop it began takes up to its grace). Then it is cut short: nothing it does
/// can create or start a container any more, so cutting it loses nothing.
const SYNC_END_BOUND: Duration = Duration::from_secs(60);

/// What the tasks report to the loop.
enum Report {
    Machine(Event),
    /// The lifecycle lookup ended.
    Lifecycle(Option<Lifecycle>),
    /// A `resync` client connected, asking for a release; its messages go to the sender.
    Client(mpsc::Sender<ClientMessage>, Target),
    /// The config as read again after a sync (files and overrides).
    Settings(Box<Settings>),
    /// A task's failure worth a line in the log (never a value).
    Failed(String),
}

/// Runs until `shutdown` (SIGTERM or SIGINT) completes. A bad config at start is an input error
/// (exit 2: systemd does not restart it); later, a bad config is reported and the last one kept.
pub async fn run(config_path: &Path, shutdown: impl Future<Output = ()>) -> Result<()> {
    let overrides = config::read_overrides(config_path, None).await?;
    let settings = config::load_with(config_path, &overrides)?;
    config::warn_ignored_tags(&settings);
    crate::compose::learn_env_file(&settings);
    let control = ControlServer::bind(&settings.control_socket)?;
    let mut hup = signal(SignalKind::hangup()).context("failed to catch SIGHUP")?;
    let watchdog = notify::watchdog_interval();
    let mut watchdog_tick = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
    let (reports_tx, mut reports) = mpsc::unbounded_channel::<Report>();
    let (progress_tx, mut progress) = mpsc::unbounded_channel::<Progress>();
    tracing::info!("kicky-agent {} started", env!("CARGO_PKG_VERSION"));

    let mut io = Io::new(config_path, settings, reports_tx, progress_tx);
    *io.shared.overrides.lock().await = Some(overrides);
    io.spawn(control::serve(control, io.client_sender()));
    io.discover_lifecycle();
    io.refresh_metrics();
    let (mut machine, effects) = Machine::new(io.timing());
    io.carry_out(effects);

    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let deadline = machine.next_deadline();
        let effects = tokio::select! {
            _ = &mut shutdown => break,
            _ = watchdog_tick.tick(), if watchdog.is_some() => {
                notify::watchdog();
                continue;
            }
            _ = hup.recv() => {
                tracing::info!("SIGHUP: syncing now");
                io.requested = Target::Configured;
                machine.handle(Event::Resync(None), Instant::now())
            }
            Some(report) = reports.recv() => io.absorb(report, &mut machine),
            Some(progress) = progress.recv() => {
                io.progress(progress, &machine);
                continue;
            }
            _ = sleep_until(deadline) => machine.handle(Event::Tick, Instant::now()),
        };
        io.carry_out(effects);
    }
    notify::stopping();
    // A sync in flight may have stopped an old container and not yet started (or rolled back to)
    // the new one: let it finish, within systemd's stop timeout; the next start repairs the rest.
    if let Some(sync) = io.sync_task.take() {
        tracing::info!("stopping: letting the sync in flight finish (at most {STOP_GRACE:?})");
        if tokio::time::timeout(STOP_GRACE, sync).await.is_err() {
            tracing::warn!(
                "the sync in flight did not finish in time; the next start sets it right"
            );
        }
    }
    tracing::info!("stopping; the application's containers keep running");
    Ok(())
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The clients the daemon keeps for its life, shared by its tasks.
#[derive(Default)]
struct Shared {
    /// The AWS SDK config (credential cache, HTTPS pool), with the settings it was made from:
    /// made again only when `aws:` changes.
    aws: tokio::sync::Mutex<Option<(config::AwsSettings, aws_config::SdkConfig)>>,
    engine: tokio::sync::OnceCell<DockerEngine>,
    /// The launch template's user data and tags, read at start and again on each resync (user
    /// data cannot change while the instance runs; a tag change applies on `resync`). Syncs
    /// read only the target lifecycle state again; watches read no instance metadata at all.
    overrides: tokio::sync::Mutex<Option<config::Overrides>>,
    /// The release marker's ETag at the last full watch, or the promoted pointer's when it last
    /// counted as seen ([`watch::pointer_settled`]), and when that was.
    marker: tokio::sync::Mutex<Option<(String, tokio::time::Instant)>>,
    /// With `release.store`: who this instance is to IAM (`aws:userid`, asked of STS once),
    /// and when its fleet record was last written.
    fleet: tokio::sync::Mutex<(Option<String>, Option<tokio::time::Instant>)>,
}

impl Shared {
    async fn aws(&self, settings: &config::AwsSettings) -> Result<aws_config::SdkConfig> {
        let mut cached = self.aws.lock().await;
        if let Some((made_for, config)) = cached.as_ref() {
            if made_for == settings {
                return Ok(config.clone());
            }
        }
        let config = crate::aws::sdk_config(settings).await?;
        *cached = Some((settings.clone(), config.clone()));
        Ok(config)
    }

    /// The config for a sync: the overrides as known, read again when `refresh` (a resync), and
    /// the target lifecycle state as it is now.
    async fn settings(&self, path: &Path, refresh: bool) -> Result<Settings> {
        let mut known = self.overrides.lock().await;
        let fresh = match (refresh, known.as_ref()) {
            (false, Some(known)) => config::read_overrides(path, Some(known)).await?,
            _ => config::read_overrides(path, None).await?,
        };
        *known = Some(fresh.clone());
        let settings = config::load_with(path, &fresh)?;
        if refresh {
            config::warn_ignored_tags(&settings);
        }
        Ok(settings)
    }

    /// The config for a watch, with the overrides as known (no instance metadata read).
    async fn settings_known(&self, path: &Path) -> Result<Settings> {
        let known = self.overrides.lock().await.clone().unwrap_or_default();
        config::load_with(path, &known)
    }

    async fn engine(&self, wait: Duration) -> Result<DockerEngine> {
        self.engine
            .get_or_try_init(|| crate::engine::docker::connect(wait))
            .await
            .cloned()
    }
}

/// The loop's side of the effects: the tasks it starts and what they report.
struct Io {
    config_path: PathBuf,
    /// The config as last read well.
    settings: Rc<Settings>,
    shared: Rc<Shared>,
    reports: UnboundedSender<Report>,
    progress: UnboundedSender<Progress>,
    lifecycle: Option<Rc<Lifecycle>>,
    clients: HashMap<ClientId, mpsc::Sender<ClientMessage>>,
    next_client: ClientId,
    sync_task: Option<JoinHandle<()>>,
    /// Shut when the drain begins: the syncs' engines create and start nothing from then on.
    gate: Gate,
    /// Whether this is a Spot instance, once known (instance metadata says it once).
    spot: Rc<std::cell::OnceCell<bool>>,
    /// The release the last `resync` asked for: what the next resync applies.
    requested: Target,
}

impl Io {
    fn new(
        config_path: &Path,
        settings: Settings,
        reports: UnboundedSender<Report>,
        progress: UnboundedSender<Progress>,
    ) -> Io {
        Io {
            config_path: config_path.to_path_buf(),
            settings: Rc::new(settings),
            shared: Rc::new(Shared::default()),
            reports,
            progress,
            lifecycle: None,
            clients: HashMap::new(),
            next_client: 1,
            sync_task: None,
            gate: Gate::new(),
            spot: Rc::default(),
            requested: Target::Configured,
        }
    }

    fn timing(&self) -> Timing {
        Timing {
            watch_interval: self.settings.watch_interval,
            abandon_after: self.settings.lifecycle.abandon_after,
            health_every: HEALTH_EVERY,
            target_every: TARGET_EVERY,
            spot_every: match self.settings.lifecycle.spot {
                SpotChoice::Off => Duration::ZERO,
                _ if crate::instance::imds::disabled() => Duration::ZERO,
                _ => SPOT_EVERY,
            },
            drain_on_rebalance: self.settings.lifecycle.spot == SpotChoice::DrainOnRebalance,
        }
    }

    fn spawn(&self, task: impl Future<Output = ()> + 'static) -> JoinHandle<()> {
        tokio::task::spawn_local(task)
    }

    fn client_sender(&self) -> impl Fn(mpsc::Sender<ClientMessage>, Target) + 'static {
        let reports = self.reports.clone();
        move |client, target| {
            let _ = reports.send(Report::Client(client, target));
        }
    }

    /// Starts a task whose result becomes an event, unless it outlives `bound`.
    fn task<F>(&self, what: &'static str, bound: Duration, work: F, event: fn(F::Output) -> Event)
    where
        F: Future + 'static,
    {
        let reports = self.reports.clone();
        self.spawn(async move {
            let report = match tokio::time::timeout(bound, work).await {
                Ok(out) => Report::Machine(event(out)),
                Err(_) => Report::Failed(format!("{what} took over {bound:?}: given up")),
            };
            let _ = reports.send(report);
        });
    }

    /// Turns a task's report into the machine's event (or handles it here).
    fn absorb(&mut self, report: Report, machine: &mut Machine) -> Vec<Effect> {
        let now = Instant::now();
        match report {
            Report::Machine(Event::Synced(outcome)) => {
                self.sync_task = None;
                let mut effects = machine.handle(Event::Timing(self.timing()), now);
                effects.extend(machine.handle(Event::Synced(outcome), now));
                effects
            }
            Report::Machine(event) => machine.handle(event, now),
            // The config may have changed: the next decisions use it.
            Report::Settings(settings) => {
                self.settings = Rc::new(*settings);
                Vec::new()
            }
            Report::Lifecycle(found) => {
                let info = found.as_ref().map(|l| LaunchFound {
                    terminate: l.terminate_hook().is_some(),
                    pending: l.hook().is_some(),
                    heartbeat: l.heartbeat_interval(),
                    unhealthy_after: l.unhealthy_after(),
                });
                self.lifecycle = found.map(Rc::new);
                machine.handle(Event::Launch(info), now)
            }
            Report::Client(sender, target) => {
                let id = self.next_client;
                self.next_client += 1;
                self.clients.insert(id, sender);
                match &target {
                    Target::Release(release) => tracing::info!(
                        "resync of release {release} requested over the control socket"
                    ),
                    Target::Configured => {
                        tracing::info!("resync requested over the control socket")
                    }
                }
                self.requested = target;
                machine.handle(Event::Resync(Some(id)), now)
            }
            Report::Failed(why) => {
                tracing::warn!("{why}");
                Vec::new()
            }
        }
    }

    /// A sync's progress: its phase to systemd, and every line to the clients waiting for it.
    fn progress(&mut self, progress: Progress, machine: &Machine) {
        let line = match progress {
            Progress::Phase(phase) => {
                notify::status(&phase);
                phase
            }
            Progress::Step(step) => step,
        };
        for id in machine.listening() {
            if let Some(client) = self.clients.get(id) {
                // A client too slow to read misses progress lines, never the result.
                let _ = client.try_send(ClientMessage::Progress(line.clone()));
            }
        }
    }

    fn carry_out(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Sync { retry_held } => self.sync(retry_held),
                Effect::Watch => self.watch(),
                Effect::CheckHealth => self.check_health(),
                Effect::Heartbeat => self.heartbeat(),
                Effect::Ready => {
                    notify::ready();
                    match self.settings.is_warm() {
                        true => tracing::info!(
                            "first sync done in the warm pool (nothing started): ready"
                        ),
                        false => tracing::info!("first sync converged and healthy: ready"),
                    }
                }
                Effect::Status(status) => {
                    tracing::info!("status: {status}");
                    notify::status(&status);
                }
                Effect::CompleteLaunch(ok) => self.complete_launch(ok),
                Effect::MarkUnhealthy => self.mark_unhealthy(),
                Effect::PollTarget => self.task(
                    "reading the target lifecycle state",
                    TARGET_BOUND,
                    crate::instance::target_state(),
                    |state| Event::Target(state.unwrap_or_default()),
                ),
                Effect::Drain { after_sync, hook } => self.drain(after_sync, hook),
                Effect::PollSpot => self.poll_spot(),
                Effect::DiscoverLaunch => self.discover_lifecycle(),
                Effect::Reply {
                    clients,
                    status,
                    text,
                } => {
                    for id in clients {
                        if let Some(client) = self.clients.remove(&id) {
                            // Its own task writes it, bounded. A client whose queue is full has
                            // stopped reading for a long while: it is let go without the result.
                            let _ = client.try_send(ClientMessage::Result(status, text.clone()));
                        }
                    }
                }
            }
        }
    }

    fn sync(&mut self, retry_held: bool) {
        // A resync applies what it asked for; the daemon's own syncs, the configured release.
        let target = match retry_held {
            true => std::mem::take(&mut self.requested),
            false => Target::Configured,
        };
        let config_path = self.config_path.clone();
        let shared = self.shared.clone();
        let reports = self.reports.clone();
        let listener = self.progress.clone();
        let fence = self.gate.fence();
        self.sync_task = Some(self.spawn(async move {
            let sync = sync(&config_path, &shared, retry_held, &target, &reports, fence);
            let result = crate::progress::reporting(listener, sync).await;
            let _ = reports.send(Report::Machine(Event::Synced(result)));
        }));
    }

    fn watch(&self) {
        let (config_path, shared) = (self.config_path.clone(), self.shared.clone());
        let settings = self.settings.clone();
        let found = watch_once(config_path, settings, shared);
        self.task("looking for changes", WATCH_BOUND, found, |found| {
            Event::Watched(found.unwrap_or_else(|err| {
                tracing::warn!("could not look for changes: {err:#}");
                WatchOutcome::Failed(format!("{err:#}"))
            }))
        });
    }

    fn check_health(&self) {
        let project = self.settings.project.clone();
        let shared = self.shared.clone();
        let probes = crate::compose::probes(&self.settings);
        let check = async move {
            let engine = shared.engine(HEALTH_BOUND).await?;
            let all = crate::engine::containers::containers(&engine, &project, &probes).await?;
            Ok::<_, anyhow::Error>(!all.is_empty() && all.iter().all(|c| c.is_well()))
        };
        self.task("the health check", HEALTH_BOUND, check, |well| {
            Event::Health(well.unwrap_or(false))
        });
    }

    fn discover_lifecycle(&self) {
        let settings = self.settings.clone();
        let shared = self.shared.clone();
        let reports = self.reports.clone();
        self.spawn(async move {
            let found = async {
                let config = shared.aws(&settings.aws).await?;
                crate::lifecycle::discover(&settings, &config).await
            };
            // No bound: a call that may pass is tried again until answered (see
            // `lifecycle`), and nothing waits for this task but the launch action.
            let found = match found.await {
                Ok(found) => found,
                Err(err) => {
                    tracing::error!("no lifecycle hook: {err:#}");
                    None
                }
            };
            let _ = reports.send(Report::Lifecycle(found));
        });
    }

    /// Stops the containers for the termination, with heartbeats for the termination hook, then
    /// completes it with CONTINUE. The gate is shut first, here in the loop: from this moment no
    /// sync creates or starts a container (a rollout, its rollback); a sync in flight (`after_sync`)
    /// is let end, bounded, before the stops, so that nothing it does comes after them.
    fn drain(&mut self, after_sync: bool, hook: bool) {
        self.gate.shut();
        let running = self.sync_task.take().filter(|_| after_sync);
        let settings = self.settings.clone();
        let shared = self.shared.clone();
        let lifecycle = self.lifecycle.clone();
        let reports = self.reports.clone();
        self.spawn(async move {
            let ended = async {
                let Some(mut sync) = running else {
                    return true;
                };
                tracing::info!(
                    "terminating: ending the sync in flight first (nothing starts from now on)"
                );
                match tokio::time::timeout(SYNC_END_BOUND, &mut sync).await {
                    Ok(_) => true,
                    Err(_) => {
                        tracing::warn!(
                            "the sync in flight did not end in {SYNC_END_BOUND:?}: cut short"
                        );
                        sync.abort();
                        false
                    }
                }
            };
            let stop = async {
                let ended = ended.await;
                let engine = shared.engine(crate::engine::docker::ENGINE_WAIT).await?;
                let project = match &settings.compose {
                    Some(_) => crate::compose::load_as_written(&settings)
                        .inspect_err(|e| {
                            tracing::warn!("stopping without the compose file's order: {e:#}")
                        })
                        .ok(),
                    None => None,
                };
                let mut stopped =
                    crate::engine::drain::stop_all(&engine, project.as_ref(), &settings.project)
                        .await?;
                if !ended {
                    // A start the cut sync had sent before the gate shut may have landed since.
                    let again = crate::engine::drain::stop_all(
                        &engine,
                        project.as_ref(),
                        &settings.project,
                    )
                    .await?;
                    stopped.extend(again);
                }
                Ok::<_, anyhow::Error>(stopped)
            };
            let bounded = async {
                match tokio::time::timeout(DRAIN_BOUND, stop).await {
                    Ok(stopped) => stopped,
                    Err(_) => Err(anyhow::anyhow!("stopping took over {DRAIN_BOUND:?}")),
                }
            };
            let (stopped, completed) = match (&lifecycle, hook) {
                (Some(lifecycle), true) => lifecycle.while_terminating(bounded).await,
                _ => (bounded.await, Ok(())),
            };
            let how = match (stopped, completed) {
                (Ok(names), Ok(())) => format!(
                    "terminating: {} container{} stopped{}",
                    names.len(),
                    if names.len() == 1 { "" } else { "s" },
                    match hook {
                        true => ", termination hook completed",
                        false => " (Spot notice; the instance stays up until EC2 acts)",
                    }
                ),
                (Err(e), _) => format!("terminating: could not stop the containers: {e:#}"),
                (Ok(_), Err(e)) => format!("terminating: containers stopped; {e:#}"),
            };
            let _ = reports.send(Report::Machine(Event::Drained(how)));
        });
    }

    /// With `metrics.textfile`: the health gauges (and the rest) rewritten every
    /// [`METRICS_EVERY`] while the daemon runs, not only after a sync, each refresh bounded.
    fn refresh_metrics(&self) {
        if self.settings.metrics_textfile.is_none() {
            return;
        }
        let (settings, shared) = (self.settings.clone(), self.shared.clone());
        self.spawn(async move {
            let mut every = tokio::time::interval(METRICS_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            every.tick().await;
            loop {
                every.tick().await;
                let refresh = async {
                    let engine = shared.engine(HEALTH_BOUND).await.ok();
                    crate::sync::metrics::refresh(&settings, engine.as_ref()).await;
                };
                if tokio::time::timeout(METRICS_BOUND, refresh).await.is_err() {
                    tracing::warn!("refreshing the metrics took over {METRICS_BOUND:?}: given up");
                }
            }
        });
    }

    /// One look for Spot notices; the first finds out whether this is a Spot instance at all.
    fn poll_spot(&mut self) {
        let known = self.spot.clone();
        let look = async move {
            use crate::instance::spot;
            if known.get().is_none() {
                let _ = known.set(spot::is_spot().await?);
            }
            match known.get() {
                Some(true) => spot::look().await,
                _ => Ok(spot::Seen::NotSpot),
            }
        };
        self.task("reading Spot notices", SPOT_BOUND, look, |seen| {
            Event::Spot(
                seen.inspect_err(|e| tracing::debug!("could not read Spot notices: {e:#}"))
                    .ok(),
            )
        });
    }

    /// One heartbeat for the launch action, bounded by the interval (the next one is due then).
    /// Once the instance is seen past the hook, the heartbeats stop.
    fn heartbeat(&self) {
        let Some(lifecycle) = self.lifecycle.clone() else {
            return;
        };
        let bound = lifecycle.heartbeat_interval();
        let reports = self.reports.clone();
        self.spawn(async move {
            let report = match tokio::time::timeout(bound, lifecycle.heartbeat()).await {
                Ok(Ok(Beat::Past(_))) => Report::Machine(Event::LaunchSettled),
                Ok(Ok(_)) => return,
                Ok(Err(err)) => Report::Failed(format!("lifecycle heartbeat: {err:#}")),
                Err(_) => Report::Failed(format!("lifecycle heartbeat: no answer in {bound:?}")),
            };
            let _ = reports.send(report);
        });
    }

    /// CONTINUE or ABANDON, tried until Auto Scaling takes it or refuses it for good (heartbeats
    /// go on meanwhile); then the record goes to the state file and the heartbeats stop.
    fn complete_launch(&self, ok: bool) {
        let Some(lifecycle) = self.lifecycle.clone() else {
            return;
        };
        let settings = self.settings.clone();
        let reports = self.reports.clone();
        self.spawn(async move {
            if let Some(sent) = lifecycle.complete(ok).await {
                record_lifecycle(&settings, sent.record).await;
            }
            let _ = reports.send(Report::Machine(Event::LaunchSettled));
        });
    }

    fn mark_unhealthy(&self) {
        let Some(lifecycle) = self.lifecycle.clone() else {
            return;
        };
        tracing::error!(
            "the application stayed unhealthy: asking the group to replace this instance"
        );
        self.spawn(async move {
            match tokio::time::timeout(SET_HEALTH_BOUND, lifecycle.mark_unhealthy()).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => tracing::error!("SetInstanceHealth failed: {err:#}"),
                Err(_) => {
                    tracing::error!("SetInstanceHealth got no answer in {SET_HEALTH_BOUND:?}")
                }
            }
        });
    }
}

/// One sync, with the config read again and the daemon's clients.
/// One sync. A `resync` (`retry_held`) also reads the launch template's overrides again. The
/// config it read goes to the loop (the next decisions use it).
async fn sync(
    config_path: &Path,
    shared: &Shared,
    retry_held: bool,
    target: &Target,
    reports: &UnboundedSender<Report>,
    fence: Fence,
) -> SyncOutcome {
    let result = async {
        let settings = shared
            .settings(config_path, retry_held)
            .await
            .with_context(|| format!("invalid config {}", config_path.display()))?;
        let _ = reports.send(Report::Settings(Box::new(settings.clone())));
        let config = shared.aws(&settings.aws).await?;
        let made = Clients::new(&settings, &config);
        let mut clients = Clients {
            ssm: made.ssm,
            s3: made.s3,
            ecr: made.ecr,
            engine: None,
        };
        if settings.compose.is_some() {
            let engine = shared.engine(crate::engine::docker::ENGINE_WAIT).await?;
            clients.engine = Some(Fenced::new(engine, fence));
        }
        let held = match retry_held {
            true => Held::Retry,
            false => Held::Hold {
                after: settings.watch_retry_failed_after,
            },
        };
        let report = crate::sync::run_with(&settings, &clients, held, target).await;
        let state = State::load(&State::path(&settings)).unwrap_or_default();
        if let Some(at) = &settings.release {
            report_to_fleet(shared, &config, &clients.s3, at, &state).await;
        }
        let held = state
            .failed
            .as_ref()
            .map(|f| f.describe(state.last_good_at.as_deref()));
        Ok::<_, anyhow::Error>((report, held, settings.is_warm()))
    }
    .await;
    let (report, held, warm) = match result {
        Ok((report, held, warm)) => (report, held, warm),
        Err(err) => (Err(err), None, false),
    };
    match report {
        Ok(report) => SyncOutcome {
            status: 0,
            text: summary(&report),
            line: summary(&report),
            at: now(),
            held: report.held.or(held),
            warm,
        },
        Err(err) => {
            tracing::error!("sync failed: {err:#}");
            SyncOutcome {
                status: crate::error::exit_status(&err),
                text: format!("{err:#}"),
                // Never what a container wrote: systemd shows it to anyone who asks.
                line: crate::engine::api::summary(&err, 200),
                at: now(),
                held,
                warm: false,
            }
        }
    }
}

async fn watch_once(
    config_path: PathBuf,
    last_read: Rc<Settings>,
    shared: Rc<Shared>,
) -> Result<WatchOutcome> {
    // The config as it is now: a change to it is a change to look for too.
    let settings = match shared.settings_known(&config_path).await {
        Ok(settings) => settings,
        Err(_) => (*last_read).clone(),
    };
    let config = shared.aws(&settings.aws).await?;
    let clients = Clients::new(&settings, &config);
    if let Some(at) = &settings.release {
        return watch_release(&settings, &config, at, &clients, &shared).await;
    }
    // With a release marker, one HEAD is the whole watch unless it changed (or a full check is due).
    let marker = match &settings.watch_marker {
        Some(uri) => {
            use crate::aws::s3::ObjectStore;
            let owner = settings.watch_marker_owner.as_deref();
            let etag = clients
                .s3
                .head(uri, owner, None)
                .await?
                .etag
                .unwrap_or_default();
            let now = tokio::time::Instant::now();
            let seen = shared.marker.lock().await.clone();
            if !watch::full_check_due(seen.as_ref(), &etag, now, settings.watch_full_every) {
                return Ok(WatchOutcome::Unchanged);
            }
            Some((etag, now))
        }
        None => None,
    };
    let state = State::load(&State::path(&settings))?;
    let found = watch::check(
        &settings,
        &state,
        &clients.ssm,
        &clients.s3,
        settings.watch_retry_failed_after,
    )
    .await?;
    log_found(&found);
    if marker.is_some() && watch::marker_settled(&found) {
        *shared.marker.lock().await = marker;
    }
    Ok(found)
}

/// What a watch found, in the journal.
fn log_found(found: &WatchOutcome) {
    match found {
        WatchOutcome::Changed(changes) | WatchOutcome::Report(changes) => {
            for change in changes {
                tracing::info!("changed: {change}");
            }
        }
        WatchOutcome::Held(why) => tracing::info!("not applying it again: {why}"),
        _ => {}
    }
}

/// With `release.store`: one HEAD of the promoted pointer; when its ETag changed, one GET of it,
/// and the promoted release compared with the one running. No source is looked at: the release
/// pins them all.
async fn watch_release(
    settings: &Settings,
    config: &aws_config::SdkConfig,
    at: &crate::config::ReleaseSettings,
    clients: &Clients,
    shared: &Shared,
) -> Result<WatchOutcome> {
    use crate::aws::s3::ObjectStore;
    // The fleet record, written again once an hour when nothing happened: a record that stops
    // moving is an instance that stopped reporting.
    let due = shared
        .fleet
        .lock()
        .await
        .1
        .is_none_or(|at| at.elapsed() >= crate::release::fleet::REFRESH);
    if due {
        let state = State::load(&State::path(settings))?;
        report_to_fleet(shared, config, &clients.s3, at, &state).await;
    }
    // Pinned by the launch template: the promoted release is not this instance's to follow (a
    // new launch template version, rolled by instance refresh, moves it).
    if at.pin.is_some() {
        return Ok(WatchOutcome::Unchanged);
    }
    let store = crate::aws::releases::Store {
        s3: &clients.s3,
        at,
    };
    let owner = at.expected_owner.as_deref();
    let etag = clients
        .s3
        .head(&store.pointer_uri(), owner, None)
        .await?
        .etag
        .unwrap_or_default();
    let seen = shared
        .marker
        .lock()
        .await
        .as_ref()
        .map(|(seen, _)| seen.clone());
    if watch::after_pointer_head(seen.as_deref(), &etag) == watch::PointerHead::Unchanged {
        return Ok(WatchOutcome::Unchanged);
    }
    let pointer = store
        .promoted()
        .await?
        .with_context(|| format!("{} is gone", store.pointer_uri()))?;
    let state = State::load(&State::path(settings))?;
    let found = watch::decide_release(
        settings.watch_apply,
        &state,
        &pointer.release,
        settings.watch_retry_failed_after,
        std::time::SystemTime::now(),
    );
    log_found(&found);
    if watch::pointer_settled(&found) {
        *shared.marker.lock().await = Some((etag, tokio::time::Instant::now()));
    }
    Ok(found)
}

/// How long writing the fleet record may take: it is for the operator's view, never a reason
/// to hold a sync or a watch.
const FLEET_BOUND: Duration = Duration::from_secs(10);

/// Writes this instance's fleet record ([`crate::release::fleet`]) under the release store. A
/// failure is a warning: the next sync or watch writes it again.
async fn report_to_fleet(
    shared: &Shared,
    config: &aws_config::SdkConfig,
    s3: &crate::aws::s3::S3Store,
    at: &crate::config::ReleaseSettings,
    state: &State,
) {
    let store = crate::aws::releases::Store { s3, at };
    let write = async {
        let mut fleet = shared.fleet.lock().await;
        let user_id = match &fleet.0 {
            Some(id) => id.clone(),
            None => crate::aws::releases::caller(config).await?.user_id,
        };
        fleet.0 = Some(user_id.clone());
        crate::sync::fleet::report(&store, &user_id, state).await?;
        fleet.1 = Some(tokio::time::Instant::now());
        Ok::<_, anyhow::Error>(())
    };
    match tokio::time::timeout(FLEET_BOUND, write).await {
        Ok(Ok(())) => tracing::debug!("fleet record written"),
        Ok(Err(err)) => tracing::warn!("the fleet record was not written: {err:#}"),
        Err(_) => tracing::warn!("the fleet record was not written in {FLEET_BOUND:?}"),
    }
}

fn summary(report: &SyncReport) -> String {
    let mut parts = Vec::new();
    if let Some(env) = &report.env {
        parts.push(format!("env file {}", env.result));
    }
    if !report.files.is_empty() {
        parts.push(format!("{} files", report.files.len()));
    }
    if let Some(engine) = &report.containers {
        let changed = engine
            .services
            .iter()
            .filter(|s| {
                !matches!(
                    s.action,
                    crate::engine::decide::Action::Keep | crate::engine::decide::Action::Done
                )
            })
            .count();
        parts.push(format!(
            "{} containers, {changed} changed",
            engine.services.len()
        ));
    }
    match &report.held {
        Some(held) => format!("held: {held}"),
        None => format!("in sync: {}", parts.join(", ")),
    }
}
