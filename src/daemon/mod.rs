//! `kicky-agent run`: the long-running service systemd starts on every boot.
//!
//! It syncs at once, retrying with backoff until the first sync converges and every service is
//! healthy; only then does it send `READY=1`. Then it watches parameter versions and object ETags
//! every `watch.interval` (with jitter), applying or reporting what changed, and syncs again on
//! `kicky-agent resync` (the control socket) or SIGHUP. `WATCHDOG=1` comes from this loop, so a
//! hung loop trips systemd's watchdog. SIGTERM stops the agent, never the application.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::lifecycle::Lifecycle;
use crate::logging::Progress;
use crate::sync::state::{now, State};
use crate::sync::SyncReport;
use crate::{aws, config, error, retry};
use control::{Client, ControlServer};

pub mod control;
pub mod notify;
pub mod watch;

use notify as systemd;

type Job = Pin<Box<dyn Future<Output = Result<SyncReport>>>>;

/// How long a sync in flight may take to finish after SIGTERM (systemd's TimeoutStopSec is 30 s).
const STOP_GRACE: Duration = Duration::from_secs(20);
/// How often the application's health is looked at when `lifecycle.unhealthy_after` is set.
const HEALTH_EVERY: Duration = Duration::from_secs(10);

/// Runs until SIGTERM or SIGINT.
pub async fn run(config_path: &Path) -> Result<()> {
    let settings = config::load(config_path)?;
    let control = ControlServer::bind(&settings.control_socket)?;
    // Requests are read off the socket by their own task, so nothing here is cut off half-read.
    let (requests_tx, mut requests) = mpsc::channel::<Client>(16);
    tokio::spawn(async move {
        while let Ok(client) = control.accept().await {
            if requests_tx.send(client).await.is_err() {
                break;
            }
        }
    });
    let mut term = signal(SignalKind::terminate()).context("failed to catch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("failed to catch SIGINT")?;
    let mut hup = signal(SignalKind::hangup()).context("failed to catch SIGHUP")?;
    let watchdog = systemd::watchdog_interval();
    let mut watchdog_tick = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
    let mut progress = crate::logging::subscribe();

    // The launch hook is this process's to complete, once, after the first sync; it is looked up
    // while the first sync runs.
    let mut launch = Launch::new(&settings);
    let mut heartbeat_tick = tokio::time::interval(Duration::from_secs(3600));
    let mut health_tick = tokio::time::interval(HEALTH_EVERY);
    let mut unwell_since: Option<Instant> = None;

    let config_path = config_path.to_path_buf();
    let mut job: Option<Job> = Some(start(&config_path));
    let mut again = false;
    // Clients of the running sync, and those waiting for the next one (a resync asked during a
    // sync gets a sync that starts after its request).
    let mut clients: Vec<Client> = Vec::new();
    let mut waiting: Vec<Client> = Vec::new();
    let mut ready = false;
    let mut failures = 0u32;
    let mut retry_at: Option<Instant> = None;
    let mut watch_at: Option<Instant> = None;
    systemd::status("first sync: starting");
    tracing::info!("kicky-agent {} started", env!("CARGO_PKG_VERSION"));

    loop {
        tokio::select! {
            _ = watchdog_tick.tick(), if watchdog.is_some() => systemd::watchdog(),
            found = next(&mut launch.discovery) => {
                if let Some(every) = launch.found(found, &settings).await {
                    heartbeat_tick = tokio::time::interval_at(Instant::now() + every, every);
                }
            }
            _ = heartbeat_tick.tick(), if launch.pending => {
                if let Some(lifecycle) = &launch.lifecycle {
                    if let Err(err) = lifecycle.heartbeat().await {
                        tracing::warn!("lifecycle heartbeat: {err:#}");
                    }
                }
            }
            _ = health_tick.tick(), if ready && launch.unhealthy_after().is_some() && job.is_none() => {
                let all = crate::engine::containers::containers_now(&settings.project).await;
                let well = !all.is_empty() && all.iter().all(|c| c.is_well());
                match unwell_since {
                    _ if well => unwell_since = None,
                    None => unwell_since = Some(Instant::now()),
                    Some(since) if since.elapsed() >= launch.unhealthy_after().unwrap_or_default() => {
                        tracing::error!(
                            "the application stayed unhealthy for {:?}: asking the group to replace this instance",
                            since.elapsed()
                        );
                        if let Some(lifecycle) = &launch.lifecycle {
                            if let Err(err) = lifecycle.mark_unhealthy().await {
                                tracing::error!("SetInstanceHealth failed: {err:#}");
                            }
                        }
                        unwell_since = None;
                    }
                    Some(_) => {}
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                tracing::info!("SIGHUP: syncing now");
                request(&mut job, &mut again, &config_path);
            }
            Some(client) = requests.recv() => {
                tracing::info!("resync requested over the control socket");
                if job.is_some() {
                    waiting.push(client);
                    again = true;
                } else {
                    clients.push(client);
                    job = Some(start(&config_path));
                }
            }
            message = progress.recv() => match message {
                Ok(Progress::Phase(phase)) => systemd::status(&phase),
                Ok(Progress::Line(line)) => {
                    for client in &mut clients {
                        client.progress(&line).await;
                    }
                }
                Err(_) => {}
            },
            result = next(&mut job) => {
                job = None;
                let reloaded = config::load(&config_path).ok();
                let status = match &result {
                    Ok(_) => 0,
                    Err(err) => error::exit_status(err),
                };
                let text = match &result {
                    Ok(report) => summary(report),
                    Err(err) => format!("{err:#}"),
                };
                match &result {
                    Ok(_) => {
                        failures = 0;
                        if !ready {
                            systemd::ready();
                            ready = true;
                            tracing::info!("first sync converged and healthy: ready");
                            launch.complete(true, reloaded.as_ref().unwrap_or(&settings)).await;
                        }
                        systemd::status(&format!("in sync since {}", now()));
                    }
                    Err(err) if !ready => {
                        failures += 1;
                        let current = reloaded.as_ref().unwrap_or(&settings);
                        // The launch is abandoned (the group replaces the instance); the agent
                        // itself keeps retrying.
                        if failures == current.lifecycle.abandon_after && launch.may_be_pending() {
                            tracing::error!("the first sync failed {failures} times: abandoning the launch");
                            launch.complete(false, current).await;
                        }
                        let delay = first_sync_backoff(failures);
                        retry_at = Some(Instant::now() + delay);
                        tracing::error!("first sync failed (attempt {failures}), retrying in {delay:?}: {err:#}");
                        systemd::status(&format!(
                            "first sync failed (attempt {failures}), retrying in {}s: {}",
                            delay.as_secs(),
                            first_line(err)
                        ));
                    }
                    Err(err) => {
                        tracing::error!("sync failed: {err:#}");
                        systemd::status(&format!("degraded: {}", first_line(err)));
                    }
                }
                for client in clients.drain(..) {
                    client.result(status, &text).await;
                }
                if again {
                    again = false;
                    clients.append(&mut waiting);
                    job = Some(start(&config_path));
                } else if ready {
                    watch_at = reloaded.as_ref().and_then(|s| next_watch(s.watch_interval));
                }
            }
            _ = sleep_until(retry_at), if job.is_none() => {
                retry_at = None;
                job = Some(start(&config_path));
            }
            _ = sleep_until(watch_at), if job.is_none() => {
                watch_at = None;
                match config::load(&config_path) {
                    Ok(settings) => {
                        if check(&settings).await {
                            job = Some(start(&config_path));
                        } else {
                            watch_at = next_watch(settings.watch_interval);
                        }
                    }
                    Err(err) => {
                        systemd::status(&format!("degraded: {}", first_line(&err)));
                        watch_at = next_watch(crate::config::defaults::WATCH_INTERVAL);
                    }
                }
            }
        }
    }
    systemd::stopping();
    // A sync in flight may have stopped an old container and not yet started (or rolled back to)
    // the new one: let it finish, within systemd's stop timeout, rather than leave a service down.
    if let Some(job) = job {
        tracing::info!("stopping: letting the sync in flight finish (at most {STOP_GRACE:?})");
        if tokio::time::timeout(STOP_GRACE, job).await.is_err() {
            tracing::warn!(
                "the sync in flight did not finish in time; the next start repairs what it left"
            );
        }
    }
    tracing::info!("stopping; the application's containers keep running");
    Ok(())
}

/// The launch lifecycle action: looked up while the first sync runs, completed once.
struct Launch<'a> {
    discovery: Option<Pin<Box<dyn Future<Output = Option<Lifecycle>> + 'a>>>,
    lifecycle: Option<Lifecycle>,
    /// The outcome of the first sync(s), when it came before discovery ended.
    decided: Option<bool>,
    /// A launch action may be waiting for CONTINUE or ABANDON.
    pending: bool,
}

impl<'a> Launch<'a> {
    fn new(settings: &'a config::Settings) -> Self {
        let discovery = async move {
            let found = match aws::sdk_config(&settings.aws).await {
                Ok(config) => crate::lifecycle::discover(settings, &config).await,
                Err(err) => Err(err),
            };
            found.unwrap_or_else(|err| {
                tracing::error!("no lifecycle hook: {err:#}");
                None
            })
        };
        Launch {
            discovery: Some(Box::pin(discovery)),
            lifecycle: None,
            decided: None,
            pending: false,
        }
    }

    fn may_be_pending(&self) -> bool {
        self.discovery.is_some() || self.pending
    }

    fn unhealthy_after(&self) -> Option<Duration> {
        self.lifecycle.as_ref().and_then(|l| l.unhealthy_after())
    }

    /// Discovery ended: completes an outcome already decided; else the heartbeat interval.
    async fn found(
        &mut self,
        found: Option<Lifecycle>,
        settings: &config::Settings,
    ) -> Option<Duration> {
        self.discovery = None;
        self.pending = found.is_some();
        self.lifecycle = found;
        match self.decided.take() {
            Some(ok) => {
                self.complete(ok, settings).await;
                None
            }
            None => self.lifecycle.as_ref().map(|l| l.heartbeat_interval()),
        }
    }

    /// CONTINUE (`ok`) or ABANDON, once; kept for later while discovery runs.
    async fn complete(&mut self, ok: bool, settings: &config::Settings) {
        if self.discovery.is_some() {
            self.decided = Some(ok);
            return;
        }
        if let (true, Some(lifecycle)) = (self.pending, &self.lifecycle) {
            crate::lifecycle::finish(lifecycle, settings, ok).await;
        }
        self.pending = false;
    }
}

/// Starts a sync now, or once the one running ends.
fn request(job: &mut Option<Job>, again: &mut bool, config_path: &Path) {
    match job {
        Some(_) => *again = true,
        None => *job = Some(start(config_path)),
    }
}

fn start(config_path: &Path) -> Job {
    let path: PathBuf = config_path.to_path_buf();
    Box::pin(async move {
        let settings =
            config::load(&path).with_context(|| format!("invalid config {}", path.display()))?;
        let config = aws::sdk_config(&settings.aws).await?;
        crate::sync::run_without_hook(&settings, &config).await
    })
}

/// The output of the future in flight (a sync, the lifecycle lookup); never ready without one.
async fn next<F: Future + Unpin>(slot: &mut Option<F>) -> F::Output {
    match slot {
        Some(future) => future.await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Looks for changes; true when a sync should apply them now (`watch.apply: auto`).
async fn check(settings: &config::Settings) -> bool {
    let result = async {
        let config = aws::sdk_config(&settings.aws).await?;
        let ssm = aws::ssm::SsmStore::new(&config);
        let s3 = aws::s3::S3Store::new(&config, &settings.aws);
        let state = State::load(&State::path(settings))?;
        watch::changes(settings, &state, &ssm, &s3).await
    };
    match tokio::time::timeout(Duration::from_secs(60), result).await {
        Ok(Ok(changes)) if changes.is_empty() => false,
        Ok(Ok(changes)) => {
            for change in &changes {
                tracing::info!("changed: {change}");
            }
            match settings.watch_apply {
                config::WatchApply::Auto => true,
                config::WatchApply::Report => {
                    systemd::status(&format!(
                        "changes pending (watch.apply: report): {}",
                        changes.join("; ")
                    ));
                    false
                }
            }
        }
        Ok(Err(err)) => {
            tracing::warn!("could not look for changes: {err:#}");
            false
        }
        Err(_) => {
            tracing::warn!("looking for changes took over 60 s; trying again later");
            false
        }
    }
}

/// The next watch, `interval` from now give or take 10%, so instances started together spread out.
fn next_watch(interval: Duration) -> Option<Instant> {
    if interval.is_zero() {
        return None;
    }
    Some(Instant::now() + interval.mul_f64(0.9 + 0.2 * fastrand::f64()))
}

fn first_sync_backoff(failures: u32) -> Duration {
    let backoff = retry::Backoff {
        initial: Duration::from_secs(2),
        max_delay: Duration::from_secs(60),
        ..Default::default()
    };
    // Full jitter, but never retry sooner than a second.
    backoff.delay(failures).max(Duration::from_secs(1))
}

fn first_line(err: &anyhow::Error) -> String {
    format!("{err:#}")
        .lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(200)
        .collect()
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
            .filter(|s| s.action != crate::engine::decide::Action::Keep)
            .count();
        parts.push(format!(
            "{} containers, {changed} changed",
            engine.services.len()
        ));
    }
    format!("in sync: {}", parts.join(", "))
}
