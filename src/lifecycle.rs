//! The Auto Scaling launch lifecycle hook: the group keeps a new instance in `Pending:Wait` (out
//! of its load balancers) until the agent says the stack is healthy (CONTINUE) or that the first
//! sync failed for good (ABANDON: the group terminates the instance and launches another).
//!
//! Which hook: with `lifecycle.hook: auto`, this instance's group (the instance tag
//! `aws:autoscaling:groupName` from instance metadata, else DescribeAutoScalingInstances) and that
//! group's one launch hook (DescribeLifecycleHooks); or the hook named in the config. Discovery
//! ends with a heartbeat, which also tells whether an action is pending at all: a `sync` run by
//! hand on an instance long in service has none, and sends nothing.
//!
//! With `auto`, discovery fails soft only where there truly is no hook: without instance metadata
//! (a laptop, a test), in no group, a group without a launch hook, or without the rights to ask
//! (AccessDenied is final). Once instance metadata gave an instance id, a call that fails for a
//! reason that may pass (throttling, a 5xx, a timeout, the network) is tried again with jittered
//! backoff (1 s doubling to 20 s) until it is answered: carrying on without the hook would let it
//! time out, and its `ABANDON` terminate a healthy instance. With a hook named in the config, an
//! instance in a group whose hook cannot be reached fails the sync. Discovery runs alongside the
//! sync, not before it: on a real instance it is a few round trips (about 100 ms) that the boot
//! need not wait for.
//!
//! Heartbeats go out every third of the hook's own `HeartbeatTimeout` (never more than
//! `lifecycle.heartbeat_interval`), and go on until CompleteLifecycleAction is taken (itself
//! retried while throttled) or the instance is seen past the hook.

use std::future::Future;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use futures::future::Either;
use serde::{Deserialize, Serialize};

use crate::aws::autoscaling::{
    is_retryable, Action, AsgClient, Heartbeat, Hook, LifecycleApi, NoActiveAction, Outcome,
    LAUNCHING, TERMINATING,
};
use crate::config::HookChoice;
use crate::config::{LifecycleSettings, Settings};
use crate::instance::imds::{Imds, InstanceMetadata, Tag};
use crate::retry::Backoff;

/// The instance tag Auto Scaling puts on the instances it launches.
pub const GROUP_TAG: &str = "aws:autoscaling:groupName";

/// This instance's Auto Scaling group: from its `aws:autoscaling:groupName` tag, else from Auto
/// Scaling. `None`: in no group.
async fn group_of(
    api: &impl LifecycleApi,
    metadata: &impl InstanceMetadata,
    instance: &str,
) -> Result<Option<String>> {
    match metadata.tag(GROUP_TAG).await {
        Ok(Tag::Value(group)) => return Ok(Some(group)),
        // Auto Scaling tags every instance it launches, and `aws:` tags cannot be removed.
        Ok(Tag::Absent) => {
            tracing::info!(
                instance,
                "no lifecycle hook: the instance is in no Auto Scaling group (no {GROUP_TAG} tag)"
            );
            return Ok(None);
        }
        Ok(Tag::Unavailable) => {}
        Err(e) => tracing::debug!("instance tags unreadable ({e:#}); asking Auto Scaling"),
    }
    let group = persist("DescribeAutoScalingInstances", || {
        api.describe_instance(instance)
    })
    .await?
    .map(|(group, _)| group);
    if group.is_none() {
        tracing::info!(
            instance,
            "no lifecycle hook: the instance is in no Auto Scaling group"
        );
    }
    Ok(group)
}

/// The group's one hook for `transition` among `hooks`; `None` when it has none, or several (the
/// config must name it).
fn one_hook<'h>(hooks: &'h [Hook], group: &str, transition: &str) -> Option<&'h Hook> {
    let found: Vec<&Hook> = hooks
        .iter()
        .filter(|h| h.transition == transition)
        .collect();
    let kind = match transition {
        TERMINATING => "termination",
        _ => "launch",
    };
    match found.as_slice() {
        [] => {
            tracing::info!(group, "no {kind} lifecycle hook on the group");
            None
        }
        [one] => Some(one),
        many => {
            let key = match transition {
                TERMINATING => "lifecycle.terminate_hook",
                _ => "lifecycle.hook",
            };
            let names: Vec<&str> = many.iter().map(|h| h.name.as_str()).collect();
            tracing::warn!(
                group,
                "the group has {kind} hooks {}: set {key} to the one the agent completes",
                names.join(", ")
            );
            None
        }
    }
}

/// The fewest seconds between two heartbeats, however short a hook's timeout: the floor of
/// `lifecycle.heartbeat_interval`.
const MIN_HEARTBEAT: Duration = crate::config::floors::HEARTBEAT_INTERVAL;

/// How often a hook whose actions time out after `timeout` gets a heartbeat: a third of it, so
/// that two heartbeats in a row may be lost (throttled, unanswered) before it times out; never
/// more than `configured` (`lifecycle.heartbeat_interval`), never under 5 s. A 30 s hook (AWS's
/// least) gets one every 10 s; the default 1 h hook, `configured` (60 s by default). Without the
/// hook's timeout (both hooks named: DescribeLifecycleHooks is not asked), `configured`.
pub fn heartbeat_interval(configured: Duration, timeout: Option<Duration>) -> Duration {
    match timeout {
        Some(timeout) => configured.min((timeout / 3).max(MIN_HEARTBEAT)),
        None => configured,
    }
}

/// Whether an instance in Auto Scaling's lifecycle `state` is being launched, its launch action
/// pending or about to be recorded (the launch race): `Pending`, `Pending:Wait`, and the warm
/// pool's `Warmed:Pending`, `Warmed:Pending:Wait` (an instance launched into a warm pool waits
/// for the launch hook there first).
pub fn is_launching(state: &str) -> bool {
    state.starts_with("Pending") || state.starts_with("Warmed:Pending")
}

/// `op`, an Auto Scaling call, tried again with [`Backoff::patient`] while it fails for a
/// reason that may pass; the first final error, or the answer.
async fn persist<T, F, Fut>(what: &str, op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    Backoff::patient().retry(what, is_retryable, op).await
}

/// When the launch action is completed, for `sync` and the daemon alike: once both the first
/// sync's outcome and the hook are known, whichever comes first; once only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaunchPolicy {
    /// The lookup runs; an outcome decided meanwhile waits for it.
    Looking {
        decided: Option<bool>,
    },
    /// An action waits for the outcome (heartbeats keep it alive).
    Pending,
    Done,
}

impl Default for LaunchPolicy {
    fn default() -> Self {
        LaunchPolicy::Looking { decided: None }
    }
}

impl LaunchPolicy {
    /// The outcome is known (`ok`: CONTINUE, else ABANDON): `Some` when it is to be sent now.
    /// The first outcome is the one sent.
    pub fn decided(&mut self, ok: bool) -> Option<bool> {
        match *self {
            LaunchPolicy::Looking { decided: None } => {
                *self = LaunchPolicy::Looking { decided: Some(ok) };
                None
            }
            LaunchPolicy::Looking { .. } | LaunchPolicy::Done => None,
            LaunchPolicy::Pending => {
                *self = LaunchPolicy::Done;
                Some(ok)
            }
        }
    }

    /// The lookup ended (`pending`: an action waits): `Some` when an outcome is to be sent now.
    pub fn found(&mut self, pending: bool) -> Option<bool> {
        let decided = match *self {
            LaunchPolicy::Looking { decided } => decided,
            _ => None,
        };
        *self = match (pending, decided) {
            (true, None) => LaunchPolicy::Pending,
            _ => LaunchPolicy::Done,
        };
        decided.filter(|_| pending)
    }

    pub fn is_pending(&self) -> bool {
        *self == LaunchPolicy::Pending
    }
}

/// This instance's place in its Auto Scaling group, and the launch action pending for it.
#[derive(Debug)]
pub struct Lifecycle<A = AsgClient> {
    api: A,
    group: String,
    instance: String,
    /// The launch hook holding this instance in `Pending:Wait`; `None` when no action is pending.
    hook: Option<String>,
    /// The group's termination hook: the daemon stops the containers, then completes it.
    terminate_hook: Option<String>,
    /// Between heartbeats for the launch hook, and for the termination hook ([`heartbeat_interval`]).
    heartbeat_interval: Duration,
    terminate_heartbeat: Duration,
    unhealthy_after: Option<Duration>,
}

/// A CompleteLifecycleAction the agent sent: to which hook, for which instance, with what result.
/// Kept in the state file (by the caller, under the project's lock) for `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifecycleRecord {
    pub group: String,
    pub hook: String,
    pub instance: String,
    /// `CONTINUE` or `ABANDON`.
    pub action: String,
    pub at: String,
    /// Why Auto Scaling did not take it, when it did not.
    #[serde(default)]
    pub error: Option<String>,
    /// How long the call took, its retries included, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ms: Option<u64>,
}

/// What a heartbeat for the launch action found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Beat {
    /// Recorded: the hook's timeout starts again.
    Recorded,
    /// No action yet, but the instance is still being launched (the launch race): go on.
    NotYet,
    /// The instance is past the launch hook (its lifecycle state now, or why there is none): the
    /// action was completed, or timed out. No more heartbeats.
    Past(String),
}

/// A CompleteLifecycleAction sent: the record for the state file, and whether it was taken.
#[derive(Debug)]
pub struct Completion {
    pub record: LifecycleRecord,
    pub sent: Result<()>,
}

/// CompleteLifecycleAction, tried again until Auto Scaling takes it or the answer is final:
/// - throttled, a 5xx, a timeout: again, with [`Backoff::patient`];
/// - "no active lifecycle action" while the instance is still being launched ([`is_launching`]):
///   again, with the same backoff. Auto Scaling records a new action a moment after the instance
///   can already ask (the launch race), and the instance leaves these states only once the action
///   is completed or times out, so this ends;
/// - "no active lifecycle action" otherwise (in service, terminating: completed elsewhere or timed
///   out), or any other error (AccessDenied): final.
async fn complete_patiently<A: LifecycleApi>(
    api: &A,
    action: Action<'_>,
    outcome: Outcome,
    waiting: fn(&str) -> bool,
) -> Result<()> {
    let backoff = Backoff::patient();
    let mut retry = 0;
    loop {
        retry += 1;
        let err = match api.complete(action, outcome).await {
            Ok(()) => return Ok(()),
            Err(err) => err,
        };
        let why = if err.downcast_ref::<NoActiveAction>().is_some() {
            let state = persist("DescribeAutoScalingInstances", || {
                api.describe_instance(action.instance)
            })
            .await;
            match state {
                Ok(Some((_, state))) if waiting(&state) => {
                    format!("no active lifecycle action yet (the instance is {state})")
                }
                Ok(Some((_, state))) => {
                    return Err(err.context(format!("the instance is {state}")));
                }
                Ok(None) | Err(_) => return Err(err),
            }
        } else if is_retryable(&err) {
            format!("{err:#}")
        } else {
            return Err(err);
        };
        let delay = backoff.delay(retry);
        tracing::info!(
            hook = action.hook,
            "CompleteLifecycleAction {}: {why}; asking again in {delay:?}",
            outcome.as_str()
        );
        tokio::time::sleep(delay).await;
    }
}

/// Whether an instance in `state` is still held by its termination hook.
fn terminating(state: &str) -> bool {
    state.starts_with("Terminating:Wait") || state.starts_with("Warmed:Terminating:Wait")
}

/// The lifecycle of this instance with the real services: IMDS and Auto Scaling through `config`.
pub async fn discover(
    settings: &Settings,
    config: &aws_config::SdkConfig,
) -> Result<Option<Lifecycle>> {
    if settings.lifecycle.hook == HookChoice::Off {
        tracing::debug!("lifecycle.hook is off: no lifecycle hook");
        return Ok(None);
    }
    let imds = Imds::new();
    Lifecycle::discover(&settings.lifecycle, AsgClient::new(config), imds.as_ref()).await
}

/// How long a one-shot sync waits for the lifecycle lookup once the sync itself ended (the
/// daemon's lookup runs in the background, unbounded).
pub const LOOKUP_AFTER_SYNC: Duration = Duration::from_secs(5 * 60);

/// Runs `sync` while `discovery` looks for the launch hook: discovery is a few round trips to
/// IMDS and Auto Scaling that the boot need not wait for. Heartbeats go out from when the hook is
/// found; once both are done, the pending launch action is completed by the sync's outcome. A
/// sync that converged but whose CONTINUE Auto Scaling refused fails: the group will not put the
/// instance in service. So does one whose named hook could not be reached (after the sync, which
/// is never cut short). Returns the sync's result and the record of the action sent, if one was,
/// for the caller to keep in the state file. A lookup still running [`LOOKUP_AFTER_SYNC`] after
/// the sync ended is given up (an error, logged).
pub async fn around_sync<T, A: LifecycleApi>(
    discovery: impl Future<Output = Result<Option<Lifecycle<A>>>>,
    sync: impl Future<Output = Result<T>>,
) -> (Result<T>, Option<LifecycleRecord>) {
    let mut policy = LaunchPolicy::default();
    let mut sync = std::pin::pin!(sync);
    let discovery = std::pin::pin!(discovery);
    let (found, result) = match futures::future::select(discovery, sync.as_mut()).await {
        Either::Left((found, _)) => {
            let pending = matches!(&found, Ok(Some(l)) if l.hook().is_some());
            policy.found(pending);
            let result = match &found {
                Ok(Some(lifecycle)) => lifecycle.while_running(sync).await,
                _ => sync.await,
            };
            (found, result)
        }
        Either::Right((result, discovery)) => {
            policy.decided(result.is_ok());
            // The lookup asks again while AWS cannot be reached; a `sync` run by hand waits for
            // it only so long once its own work is done.
            let found = tokio::time::timeout(LOOKUP_AFTER_SYNC, discovery)
                .await
                .unwrap_or_else(|_| {
                    Err(anyhow!(
                        "the lifecycle hook lookup did not end {LOOKUP_AFTER_SYNC:?} after the sync"
                    ))
                });
            (found, result)
        }
    };
    let (lifecycle, result) = match (found, result) {
        (Ok(Some(lifecycle)), result) => (lifecycle, result),
        (Ok(None), result) => return (result, None),
        (Err(e), Ok(_)) => {
            let e = e.context("the sync converged, but the lifecycle hook was not found");
            return (Err(e), None);
        }
        (Err(e), Err(sync)) => {
            tracing::error!("{e:#}");
            return (Err(sync), None);
        }
    };
    let send = match policy {
        LaunchPolicy::Looking { .. } => policy.found(lifecycle.hook().is_some()),
        _ => policy.decided(result.is_ok()),
    };
    let Some(ok) = send else {
        return (result, None);
    };
    // Heartbeats go on while CompleteLifecycleAction is tried again (throttled, the launch race).
    let Some(completion) = lifecycle.while_running(lifecycle.complete(ok)).await else {
        return (result, None);
    };
    let result = match (result, completion.sent) {
        (Ok(_), Err(e)) => {
            Err(e.context("the sync converged, but the lifecycle hook was not completed"))
        }
        (result, _) => result,
    };
    (result, Some(completion.record))
}

impl<A: LifecycleApi> Lifecycle<A> {
    /// Finds this instance's group and pending launch action. `None` when `hook` is off, or there
    /// is nothing to do: no instance metadata (with `auto`), no group, no launch hook and no
    /// `unhealthy_after`. Each reason is logged.
    pub async fn discover(
        settings: &LifecycleSettings,
        api: A,
        metadata: Option<&impl InstanceMetadata>,
    ) -> Result<Option<Self>> {
        let named = match &settings.hook {
            HookChoice::Off => return Ok(None),
            HookChoice::Auto => None,
            HookChoice::Named(name) => Some(name.clone()),
        };
        // With `auto`, a failure to find out means "no hook"; with a named hook it is an error.
        let soft = |e: anyhow::Error| -> Result<Option<Self>> {
            match &named {
                None => {
                    tracing::warn!("carrying on without a lifecycle hook: {e:#}");
                    Ok(None)
                }
                Some(name) => Err(e.context(format!("lifecycle.hook {name}"))),
            }
        };
        let Some(metadata) = metadata else {
            return soft(anyhow!(
                "instance metadata is disabled (AWS_EC2_METADATA_DISABLED)"
            ));
        };
        let instance = match metadata.instance_id().await {
            Ok(id) => id,
            Err(e) if named.is_none() => {
                // Not on EC2 (a laptop, a test): expected, so not a warning.
                tracing::info!("no lifecycle hook: {e:#}");
                return Ok(None);
            }
            Err(e) => return soft(e),
        };
        let group = match group_of(&api, metadata, &instance).await {
            Ok(Some(group)) => group,
            Ok(None) => return Ok(None),
            Err(e) => return soft(e),
        };
        let terminate_named = match &settings.terminate_hook {
            HookChoice::Named(name) => Some(Some(name.clone())),
            HookChoice::Off => Some(None),
            HookChoice::Auto => None,
        };
        let hooks = match (&named, &terminate_named) {
            (Some(_), Some(_)) => Vec::new(),
            _ => match persist("DescribeLifecycleHooks", || api.hooks(&group)).await {
                Ok(hooks) => hooks,
                Err(e) => return soft(e),
            },
        };
        let launch = match &named {
            Some(name) => hooks
                .iter()
                .find(|h| &h.name == name)
                .cloned()
                .or(Some(Hook {
                    name: name.clone(),
                    transition: LAUNCHING.into(),
                    heartbeat_timeout: None,
                })),
            None => one_hook(&hooks, &group, LAUNCHING).cloned(),
        };
        let terminate = match terminate_named {
            Some(Some(name)) => Some(hooks.iter().find(|h| h.name == name).cloned().unwrap_or(
                Hook {
                    name,
                    transition: TERMINATING.into(),
                    heartbeat_timeout: None,
                },
            )),
            Some(None) => None,
            None => one_hook(&hooks, &group, TERMINATING).cloned(),
        };
        let every = |hook: &Option<Hook>| {
            heartbeat_interval(
                settings.heartbeat_interval,
                hook.as_ref().and_then(|h| h.heartbeat_timeout),
            )
        };
        let mut lifecycle = Lifecycle {
            heartbeat_interval: every(&launch),
            terminate_heartbeat: every(&terminate),
            api,
            group,
            instance,
            hook: launch.map(|h| h.name),
            terminate_hook: terminate.map(|h| h.name),
            unhealthy_after: settings.unhealthy_after,
        };
        if let Err(e) = lifecycle.confirm_pending().await {
            match named {
                Some(_) => return soft(e),
                // Perhaps only this call is refused: CompleteLifecycleAction will still be tried.
                None => tracing::warn!("{e:#}"),
            }
        }
        if lifecycle.hook.is_none()
            && lifecycle.unhealthy_after.is_none()
            && lifecycle.terminate_hook.is_none()
        {
            return Ok(None);
        }
        if let Some(action) = lifecycle.action() {
            tracing::info!(
                group = action.group,
                hook = action.hook,
                instance = action.instance,
                heartbeat_every = ?lifecycle.heartbeat_interval,
                "launch lifecycle action pending: completing it after the sync"
            );
        }
        Ok(Some(lifecycle))
    }

    /// Drops the hook when no launch action is pending for it (a heartbeat says), so that a
    /// `sync` run by hand on an instance long in service sends nothing.
    async fn confirm_pending(&mut self) -> Result<()> {
        let Some(action) = self.action() else {
            return Ok(());
        };
        let beat = persist("RecordLifecycleActionHeartbeat", || {
            self.api.heartbeat(action)
        })
        .await?;
        if beat == Heartbeat::NotPending {
            // Just launched, Auto Scaling may not have recorded the action yet (the launch race):
            // the instance is still `Pending` (or `Warmed:Pending` into a warm pool). Completing
            // it is then tried with backoff.
            let state = persist("DescribeAutoScalingInstances", || {
                self.api.describe_instance(action.instance)
            })
            .await?;
            if let Some((_, state)) = state.filter(|(_, s)| is_launching(s)) {
                tracing::info!(
                    hook = action.hook,
                    state = state.as_str(),
                    "the launch action is not recorded yet: completing it once it is"
                );
                return Ok(());
            }
            tracing::info!(
                group = action.group,
                hook = action.hook,
                instance = action.instance,
                "no launch action pending (the instance is in service, or the hook timed out): nothing to complete"
            );
            self.hook = None;
        }
        Ok(())
    }

    pub fn group(&self) -> &str {
        &self.group
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The launch hook whose action is pending, if any.
    pub fn hook(&self) -> Option<&str> {
        self.hook.as_deref()
    }

    pub fn heartbeat_interval(&self) -> Duration {
        self.heartbeat_interval
    }

    /// The group's termination hook, if it has one.
    pub fn terminate_hook(&self) -> Option<&str> {
        self.terminate_hook.as_deref()
    }

    fn terminate_action(&self) -> Option<Action<'_>> {
        Some(Action {
            group: &self.group,
            hook: self.terminate_hook.as_deref()?,
            instance: &self.instance,
        })
    }

    /// Runs `work` (stopping the containers) with a heartbeat for the termination action every
    /// third of its hook's timeout, then completes the action with CONTINUE (tried again while
    /// throttled): the instance terminates.
    pub async fn while_terminating<F: Future>(&self, work: F) -> (F::Output, Result<()>) {
        let Some(action) = self.terminate_action() else {
            return (work.await, Ok(()));
        };
        let beats = async {
            loop {
                tokio::time::sleep(self.terminate_heartbeat).await;
                match self.api.heartbeat(action).await {
                    Ok(_) => tracing::debug!(hook = action.hook, "termination heartbeat"),
                    Err(e) => tracing::warn!("termination heartbeat: {e:#}"),
                }
            }
        };
        let out = tokio::select! {
            out = work => out,
            _ = beats => unreachable!("heartbeats go on until the work ends"),
        };
        let sent = complete_patiently(&self.api, action, Outcome::Continue, terminating).await;
        match &sent {
            Ok(()) => tracing::info!(
                group = action.group,
                hook = action.hook,
                instance = action.instance,
                "termination lifecycle action completed: CONTINUE"
            ),
            Err(e) => tracing::error!("{e:#}"),
        }
        (out, sent)
    }

    /// How long the stack may stay unhealthy before [`Self::mark_unhealthy`] is due.
    pub fn unhealthy_after(&self) -> Option<Duration> {
        self.unhealthy_after
    }

    fn action(&self) -> Option<Action<'_>> {
        Some(Action {
            group: &self.group,
            hook: self.hook.as_deref()?,
            instance: &self.instance,
        })
    }

    /// One heartbeat for the launch action: the hook's timeout starts again. When Auto Scaling
    /// says no action is pending, whether the instance is still being launched (the launch race:
    /// go on) or past the hook.
    pub async fn heartbeat(&self) -> Result<Beat> {
        let Some(action) = self.action() else {
            return Ok(Beat::Past("no launch action is pending".into()));
        };
        match self.api.heartbeat(action).await? {
            Heartbeat::Recorded => {
                tracing::debug!(hook = action.hook, "lifecycle heartbeat");
                Ok(Beat::Recorded)
            }
            Heartbeat::NotPending => match self.api.describe_instance(action.instance).await? {
                Some((_, state)) if is_launching(&state) => Ok(Beat::NotYet),
                found => {
                    let state = found.map_or("in no group".into(), |(_, state)| state);
                    tracing::info!(
                        group = action.group,
                        hook = action.hook,
                        instance = action.instance,
                        state = state.as_str(),
                        "the launch action is no longer pending: no more heartbeats"
                    );
                    Ok(Beat::Past(state))
                }
            },
        }
    }

    /// Runs `work` with a heartbeat every `heartbeat_interval`, until the instance is seen past
    /// the launch hook; a failed heartbeat is logged, and the next one tried on time.
    pub async fn while_running<F: Future>(&self, work: F) -> F::Output {
        let beats = async {
            loop {
                tokio::time::sleep(self.heartbeat_interval).await;
                match self.heartbeat().await {
                    Ok(Beat::Past(_)) => break,
                    Ok(_) => {}
                    Err(e) => tracing::warn!("lifecycle heartbeat: {e:#}"),
                }
            }
            std::future::pending::<()>().await;
        };
        tokio::select! {
            out = work => out,
            _ = beats => unreachable!("heartbeats go on until the work ends"),
        }
    }

    /// CONTINUE when `ok`, else ABANDON. `None` when no action is pending (nothing is sent).
    pub async fn complete(&self, ok: bool) -> Option<Completion> {
        let action = self.action()?;
        let outcome = if ok {
            Outcome::Continue
        } else {
            Outcome::Abandon
        };
        let began = std::time::Instant::now();
        let sent = complete_patiently(&self.api, action, outcome, is_launching).await;
        let ms = crate::timeline::millis(began.elapsed());
        match &sent {
            Ok(()) => tracing::info!(
                group = action.group,
                hook = action.hook,
                instance = action.instance,
                "lifecycle action completed: {}",
                outcome.as_str()
            ),
            Err(e) => tracing::error!("{e:#}"),
        }
        let record = LifecycleRecord {
            group: action.group.to_string(),
            hook: action.hook.to_string(),
            instance: action.instance.to_string(),
            action: outcome.as_str().to_string(),
            at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            error: sent.as_ref().err().map(|e| format!("{e:#}")),
            ms: Some(ms),
        };
        Some(Completion { record, sent })
    }

    /// SetInstanceHealth Unhealthy: the group terminates this instance and launches another.
    pub async fn mark_unhealthy(&self) -> Result<()> {
        self.api
            .set_unhealthy(&self.instance)
            .await
            .with_context(|| format!("group {}", self.group))?;
        tracing::warn!(
            group = self.group.as_str(),
            instance = self.instance.as_str(),
            "marked the instance unhealthy: the group will replace it"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use anyhow::bail;

    use super::*;
    use crate::aws::autoscaling::CallFailed;

    /// Auto Scaling as far as one instance sees it; every call is logged.
    #[derive(Debug, Default)]
    struct FakeAsg {
        /// instance → group, for DescribeAutoScalingInstances.
        groups: HashMap<String, String>,
        /// group → launch hooks.
        hooks: HashMap<String, Vec<String>>,
        /// hook → its HeartbeatTimeout, as DescribeLifecycleHooks tells it.
        timeouts: HashMap<String, Duration>,
        /// (group, hook, instance) of the pending action.
        pending: Mutex<Option<(String, String, String)>>,
        refuse: Option<&'static str>,
        /// Call kind (`describe-hooks`, `complete`...) → how many more times it is throttled.
        throttled: Mutex<HashMap<&'static str, u32>>,
        calls: Mutex<Vec<String>>,
        /// CompleteLifecycleAction answers "no active action" this many times less one (the race
        /// at launch), or always.
        not_yet: Mutex<u32>,
        not_yet_forever: bool,
        /// The lifecycle state while the action is not recorded yet: `Pending` unless set.
        launching_as: Option<&'static str>,
        /// The group's termination hooks.
        terminating: Vec<String>,
    }

    impl FakeAsg {
        fn in_group(instance: &str, group: &str, hooks: &[&str]) -> Self {
            let pending = hooks
                .first()
                .map(|h| (group.to_string(), h.to_string(), instance.to_string()));
            FakeAsg {
                groups: HashMap::from([(instance.into(), group.into())]),
                hooks: HashMap::from([(
                    group.into(),
                    hooks.iter().map(|h| h.to_string()).collect(),
                )]),
                pending: Mutex::new(pending),
                ..FakeAsg::default()
            }
        }

        /// Throttles the next `times` calls of `kind`.
        fn throttle(self, kind: &'static str, times: u32) -> Self {
            self.throttled.lock().unwrap().insert(kind, times);
            self
        }

        fn log(&self, call: String) -> Result<()> {
            let refused = self.refuse.is_some_and(|r| call.starts_with(r));
            let throttled = {
                let mut throttled = self.throttled.lock().unwrap();
                let left = throttled
                    .iter_mut()
                    .find(|(kind, _)| call.starts_with(**kind))
                    .map(|(_, left)| left)
                    .filter(|left| **left > 0);
                left.map(|left| *left -= 1).is_some()
            };
            self.calls.lock().unwrap().push(call.clone());
            if throttled {
                return Err(anyhow::Error::new(CallFailed {
                    text: "Throttling: Rate exceeded".into(),
                    retryable: true,
                })
                .context(format!("failed: {call}")));
            }
            if refused {
                bail!("AccessDenied: {call}");
            }
            Ok(())
        }

        fn calls(&self) -> Vec<String> {
            self.calls.lock().unwrap().clone()
        }

        fn count(&self, kind: &str) -> usize {
            self.calls().iter().filter(|c| c.starts_with(kind)).count()
        }

        fn is_pending(&self, a: Action<'_>) -> bool {
            let pending = self.pending.lock().unwrap();
            pending.as_ref().is_some_and(|(g, h, i)| {
                (g.as_str(), h.as_str(), i.as_str()) == (a.group, a.hook, a.instance)
            })
        }
    }

    impl LifecycleApi for FakeAsg {
        async fn describe_instance(&self, instance: &str) -> Result<Option<(String, String)>> {
            self.log(format!("describe-instances {instance}"))?;
            let recorded = *self.not_yet.lock().unwrap() == 0 && !self.not_yet_forever;
            let state = match (recorded, self.pending.lock().unwrap().is_some()) {
                (false, _) => self.launching_as.unwrap_or("Pending"),
                (true, true) => "Pending:Wait",
                (true, false) => "InService",
            };
            Ok(self
                .groups
                .get(instance)
                .map(|g| (g.clone(), state.to_string())))
        }

        async fn hooks(&self, group: &str) -> Result<Vec<Hook>> {
            self.log(format!("describe-hooks {group}"))?;
            let launch = self.hooks.get(group).cloned().unwrap_or_default();
            let launch = launch.into_iter().map(|h| (h, LAUNCHING));
            let terminate = self.terminating.iter().map(|h| (h.clone(), TERMINATING));
            Ok(launch
                .chain(terminate)
                .map(|(name, transition)| Hook {
                    heartbeat_timeout: self.timeouts.get(&name).copied(),
                    name,
                    transition: transition.into(),
                })
                .collect())
        }

        async fn heartbeat(&self, a: Action<'_>) -> Result<Heartbeat> {
            self.log(format!("heartbeat {} {} {}", a.group, a.hook, a.instance))?;
            let recorded = *self.not_yet.lock().unwrap() == 0 && !self.not_yet_forever;
            Ok(if recorded && self.is_pending(a) {
                Heartbeat::Recorded
            } else {
                Heartbeat::NotPending
            })
        }

        async fn complete(&self, a: Action<'_>, outcome: Outcome) -> Result<()> {
            self.log(format!(
                "complete {} {} {} {}",
                a.group,
                a.hook,
                a.instance,
                outcome.as_str()
            ))?;
            let early = {
                let mut early = self.not_yet.lock().unwrap();
                *early = early.saturating_sub(1);
                *early > 0 || self.not_yet_forever
            };
            if early || !self.is_pending(a) {
                return Err(NoActiveAction::of(a).into());
            }
            *self.pending.lock().unwrap() = None;
            Ok(())
        }

        async fn set_unhealthy(&self, instance: &str) -> Result<()> {
            self.log(format!("unhealthy {instance}"))
        }
    }

    /// Instance metadata: an instance id (or none: not on EC2) and tags (or none: disabled).
    struct FakeImds {
        id: Option<&'static str>,
        tags: Option<HashMap<String, String>>,
    }

    impl FakeImds {
        fn with_group_tag(id: &'static str, group: &str) -> Self {
            FakeImds {
                id: Some(id),
                tags: Some(HashMap::from([(GROUP_TAG.to_string(), group.to_string())])),
            }
        }

        fn without_tags(id: &'static str) -> Self {
            FakeImds {
                id: Some(id),
                tags: None,
            }
        }
    }

    impl InstanceMetadata for FakeImds {
        async fn instance_id(&self) -> Result<String> {
            self.id
                .map(str::to_string)
                .context("instance metadata does not answer (not on EC2?)")
        }

        async fn tag(&self, key: &str) -> Result<Tag> {
            Ok(match &self.tags {
                None => Tag::Unavailable,
                Some(tags) => tags.get(key).cloned().map_or(Tag::Absent, Tag::Value),
            })
        }
    }

    fn settings_of(hook: HookChoice) -> LifecycleSettings {
        LifecycleSettings {
            hook,
            terminate_hook: HookChoice::Auto,
            heartbeat_interval: Duration::from_secs(60),
            unhealthy_after: None,
            abandon_after: crate::config::defaults::ABANDON_AFTER,
            spot: Default::default(),
        }
    }

    const I: &str = "i-0abc";

    /// The lifecycle `hook: auto` finds, which the test expects there to be.
    async fn discover_auto(asg: FakeAsg, imds: &FakeImds) -> Lifecycle<FakeAsg> {
        Lifecycle::discover(&settings_of(HookChoice::Auto), asg, Some(imds))
            .await
            .unwrap()
            .expect("a lifecycle hook")
    }

    #[tokio::test]
    async fn auto_finds_the_group_by_tag_and_its_one_launch_hook() {
        let asg = FakeAsg::in_group(I, "web", &["launch"]);
        let imds = FakeImds::with_group_tag(I, "web");
        let l = discover_auto(asg, &imds).await;
        assert_eq!(
            (l.group(), l.hook(), l.instance()),
            ("web", Some("launch"), I)
        );
        // The tag spared DescribeAutoScalingInstances; the heartbeat checked an action is pending.
        assert_eq!(
            l.api.calls(),
            ["describe-hooks web", "heartbeat web launch i-0abc"]
        );

        let done = l.complete(true).await.unwrap();
        assert!(done.sent.is_ok());
        let r = &done.record;
        assert_eq!(
            (r.group.as_str(), r.hook.as_str(), r.instance.as_str()),
            ("web", "launch", I)
        );
        assert_eq!((r.action.as_str(), r.error.as_ref()), ("CONTINUE", None));
        assert_eq!(
            l.api.calls().last().unwrap(),
            "complete web launch i-0abc CONTINUE"
        );
    }

    #[tokio::test]
    async fn without_tags_the_group_comes_from_auto_scaling() {
        let asg = FakeAsg::in_group(I, "web", &["launch"]);
        let imds = FakeImds::without_tags(I);
        let l = discover_auto(asg, &imds).await;
        assert_eq!(l.group(), "web");
        assert_eq!(l.api.calls()[0], "describe-instances i-0abc");
        let done = l.complete(false).await.unwrap();
        assert_eq!(done.record.action, "ABANDON");
        assert!(l.api.pending.lock().unwrap().is_none());
    }

    #[tokio::test]
    async fn nothing_to_do_is_none_and_sends_nothing() {
        let auto = settings_of(HookChoice::Auto);
        // Off: not even instance metadata is asked.
        let asg = FakeAsg::in_group(I, "web", &["launch"]);
        let off = Lifecycle::discover(&settings_of(HookChoice::Off), asg, None::<&FakeImds>)
            .await
            .unwrap();
        assert!(off.is_none());
        // Not on EC2, or metadata disabled.
        let not_ec2 = FakeImds {
            id: None,
            tags: None,
        };
        let asg = FakeAsg::default();
        assert!(Lifecycle::discover(&auto, asg, Some(&not_ec2))
            .await
            .unwrap()
            .is_none());
        assert!(
            Lifecycle::discover(&auto, FakeAsg::default(), None::<&FakeImds>)
                .await
                .unwrap()
                .is_none()
        );
        // In no group.
        let asg = FakeAsg::default();
        let l = Lifecycle::discover(&auto, asg, Some(&FakeImds::without_tags(I)))
            .await
            .unwrap();
        assert!(l.is_none());
        // Tags in metadata, none of them the group's: in no group, without asking Auto Scaling.
        let asg = FakeAsg::in_group(I, "web", &["launch"]);
        let untagged = FakeImds {
            id: Some(I),
            tags: Some(HashMap::new()),
        };
        let l = Lifecycle::discover(&auto, asg, Some(&untagged))
            .await
            .unwrap();
        assert!(l.is_none());
        // A group without a launch hook.
        let asg = FakeAsg::in_group(I, "web", &[]);
        assert!(
            Lifecycle::discover(&auto, asg, Some(&FakeImds::without_tags(I)))
                .await
                .unwrap()
                .is_none()
        );
        // Two launch hooks: `auto` does not guess.
        let asg = FakeAsg::in_group(I, "web", &["a", "b"]);
        assert!(
            Lifecycle::discover(&auto, asg, Some(&FakeImds::without_tags(I)))
                .await
                .unwrap()
                .is_none()
        );
        // The action is no longer pending (a sync run by hand on an instance in service).
        let asg = FakeAsg::in_group(I, "web", &["launch"]);
        *asg.pending.lock().unwrap() = None;
        assert!(
            Lifecycle::discover(&auto, asg, Some(&FakeImds::without_tags(I)))
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn auto_fails_soft_a_named_hook_does_not() {
        let refused = || FakeAsg {
            refuse: Some("describe-instances"),
            ..FakeAsg::in_group(I, "web", &["launch"])
        };
        let imds = FakeImds::without_tags(I);
        assert!(
            Lifecycle::discover(&settings_of(HookChoice::Auto), refused(), Some(&imds))
                .await
                .unwrap()
                .is_none()
        );
        let named = settings_of(HookChoice::Named("launch".into()));
        let err = Lifecycle::discover(&named, refused(), Some(&imds))
            .await
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("lifecycle.hook launch"),
            "{err:#}"
        );
        let not_ec2 = FakeImds {
            id: None,
            tags: None,
        };
        assert!(Lifecycle::discover(&named, refused(), Some(&not_ec2))
            .await
            .is_err());
    }

    /// Both hooks named: no DescribeLifecycleHooks. A named launch hook with `terminate_hook:
    /// auto` still looks for the group's one termination hook.
    #[tokio::test]
    async fn named_hooks_skip_describe_lifecycle_hooks() {
        let imds = FakeImds::with_group_tag(I, "web");
        let mut named = settings_of(HookChoice::Named("mine".into()));
        named.terminate_hook = HookChoice::Named("drain".into());
        let asg = FakeAsg::in_group(I, "web", &["mine", "theirs"]);
        let l = Lifecycle::discover(&named, asg, Some(&imds))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (l.hook(), l.terminate_hook()),
            (Some("mine"), Some("drain"))
        );
        assert_eq!(l.api.calls(), ["heartbeat web mine i-0abc"]);

        named.terminate_hook = HookChoice::Auto;
        let asg = FakeAsg {
            terminating: vec!["drain".into()],
            ..FakeAsg::in_group(I, "web", &["mine", "theirs"])
        };
        let l = Lifecycle::discover(&named, asg, Some(&imds))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (l.hook(), l.terminate_hook()),
            (Some("mine"), Some("drain"))
        );
        assert_eq!(
            l.api.calls(),
            ["describe-hooks web", "heartbeat web mine i-0abc"]
        );

        // Terminate hook only: the lifecycle is kept (to drain), with no launch action.
        let auto = settings_of(HookChoice::Auto);
        let asg = FakeAsg {
            terminating: vec!["drain".into()],
            ..FakeAsg::in_group(I, "web", &[])
        };
        let l = Lifecycle::discover(&auto, asg, Some(&imds))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((l.hook(), l.terminate_hook()), (None, Some("drain")));
    }

    #[tokio::test]
    async fn unhealthy_after_keeps_the_group_without_a_pending_action() {
        let asg = FakeAsg::in_group(I, "web", &[]);
        let mut s = settings_of(HookChoice::Auto);
        s.unhealthy_after = Some(Duration::from_secs(600));
        let l = Lifecycle::discover(&s, asg, Some(&FakeImds::without_tags(I)))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(l.hook(), None);
        assert!(l.complete(true).await.is_none());
        l.heartbeat().await.unwrap();
        l.mark_unhealthy().await.unwrap();
        assert_eq!(l.api.calls().last().unwrap(), "unhealthy i-0abc");
    }

    #[tokio::test]
    async fn a_refused_completion_is_recorded_with_its_error() {
        let asg = FakeAsg {
            refuse: Some("complete"),
            ..FakeAsg::in_group(I, "web", &["launch"])
        };
        let imds = FakeImds::without_tags(I);
        let l = discover_auto(asg, &imds).await;
        let done = l.complete(true).await.unwrap();
        assert!(done.sent.is_err());
        assert!(done
            .record
            .error
            .as_deref()
            .unwrap()
            .contains("AccessDenied"));
    }

    #[tokio::test(start_paused = true)]
    async fn heartbeats_go_out_on_time_while_the_work_runs() {
        let asg = FakeAsg::in_group(I, "web", &["launch"]);
        let imds = FakeImds::without_tags(I);
        let l = discover_auto(asg, &imds).await;
        let out = l.while_running(async {
            tokio::time::sleep(Duration::from_secs(150)).await;
            7
        });
        assert_eq!(out.await, 7);
        let beats = l
            .api
            .calls()
            .iter()
            .filter(|c| c.starts_with("heartbeat"))
            .count();
        // The one of discovery, then at 60 s and 120 s.
        assert_eq!(beats, 3);
    }

    /// A lookup that never ends (AWS unreachable, asked again and again) holds a one-shot sync
    /// only [`LOOKUP_AFTER_SYNC`] past its end: the sync's own error is what it returns.
    #[tokio::test(start_paused = true)]
    async fn a_one_shot_sync_waits_for_a_stuck_lookup_only_so_long() {
        let started = tokio::time::Instant::now();
        let discovery = std::future::pending::<Result<Option<Lifecycle<FakeAsg>>>>();
        let sync = async {
            tokio::time::sleep(Duration::from_secs(3)).await;
            Err::<(), _>(anyhow!("could not reach S3"))
        };
        let (result, record) = around_sync(discovery, sync).await;
        assert!(format!("{:#}", result.unwrap_err()).contains("could not reach S3"));
        assert!(record.is_none());
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(3) + LOOKUP_AFTER_SYNC
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_sync_done_before_discovery_still_completes_the_launch() {
        for (ok, outcome) in [(true, "CONTINUE"), (false, "ABANDON")] {
            let started = tokio::time::Instant::now();
            let discovery = async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let asg = FakeAsg::in_group(I, "web", &["launch"]);
                let imds = FakeImds::without_tags(I);
                Lifecycle::discover(&settings_of(HookChoice::Auto), asg, Some(&imds)).await
            };
            let synced_at = std::cell::Cell::new(None);
            let sync = async {
                synced_at.set(Some(started.elapsed()));
                if ok {
                    Ok(7)
                } else {
                    Err(anyhow!("the sync failed"))
                }
            };
            let (result, record) = around_sync(discovery, sync).await;
            assert_eq!(result.is_ok(), ok);
            // The sync did not wait for discovery; the completion did.
            assert_eq!(synced_at.get(), Some(Duration::ZERO));
            let record = record.expect("the completion is returned, for the state file");
            assert_eq!(
                (record.hook.as_str(), record.action.as_str()),
                ("launch", outcome)
            );
        }
    }

    /// Auto Scaling answers "No active Lifecycle Action" a moment after launch (the instance is
    /// still `Pending`, or `Warmed:Pending` into a warm pool): discovery keeps the hook, and
    /// CompleteLifecycleAction is asked again with backoff until the action is there; while the
    /// instance stays in those states it is never given up. An instance already past the hook
    /// (in service: completed elsewhere, or timed out) is a final answer, at the first try.
    #[tokio::test(start_paused = true)]
    async fn an_action_not_yet_active_is_completed_once_it_is() {
        for (early, launching_as) in [
            (0, "Pending"),
            (3, "Pending"),
            (6, "Pending"),
            (3, "Warmed:Pending"),
            (3, "Warmed:Pending:Wait"),
        ] {
            let asg = FakeAsg {
                launching_as: Some(launching_as),
                ..FakeAsg::in_group(I, "web", &["launch"])
            };
            *asg.not_yet.lock().unwrap() = early;
            let l = discover_auto(asg, &FakeImds::without_tags(I)).await;
            let done = l.complete(true).await.unwrap();
            assert!(done.sent.is_ok(), "{early} {launching_as}: {:?}", done.sent);
            assert_eq!(
                l.api.count("complete"),
                (early as usize).max(1),
                "{early} {launching_as}"
            );
        }

        // Never recorded while the instance stays Pending: still asking after ten minutes.
        let asg = FakeAsg {
            not_yet_forever: true,
            ..FakeAsg::in_group(I, "web", &["launch"])
        };
        let l = discover_auto(asg, &FakeImds::without_tags(I)).await;
        let asking = tokio::time::timeout(Duration::from_secs(600), l.complete(true)).await;
        assert!(asking.is_err(), "gave up on a pending instance");
        assert!(l.api.count("complete") > 30, "{}", l.api.count("complete"));

        // In service with no action: final, at once.
        let asg = FakeAsg::in_group(I, "web", &["launch"]);
        let l = discover_auto(asg, &FakeImds::without_tags(I)).await;
        *l.api.pending.lock().unwrap() = None;
        let started = tokio::time::Instant::now();
        let done = l.complete(true).await.unwrap();
        let message = format!("{:#}", done.sent.unwrap_err());
        assert!(message.contains("no active lifecycle action"), "{message}");
        assert!(message.contains("InService"), "{message}");
        assert_eq!(l.api.count("complete"), 1);
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    /// Throttled (or a 5xx, a timeout) at any step of discovery: the step is asked again, with
    /// backoff, until answered, and the hook is found; never "carrying on without a hook".
    #[tokio::test(start_paused = true)]
    async fn throttled_discovery_is_tried_again_until_the_hook_is_found() {
        for kind in ["describe-instances", "describe-hooks", "heartbeat"] {
            let asg = FakeAsg::in_group(I, "web", &["launch"]).throttle(kind, 12);
            let started = tokio::time::Instant::now();
            let l = discover_auto(asg, &FakeImds::without_tags(I)).await;
            assert_eq!(l.hook(), Some("launch"), "{kind}");
            assert_eq!(l.api.count(kind), 13, "{kind}: {:?}", l.api.calls());
            // Backoff, capped: more than nothing, less than 12 waits of 20 s.
            let took = started.elapsed();
            assert!(
                took > Duration::ZERO && took <= Duration::from_secs(12 * 20),
                "{kind}: {took:?}"
            );
        }
        // A final refusal is not retried: `auto` carries on without a hook, as before.
        let asg = FakeAsg {
            refuse: Some("describe-hooks"),
            ..FakeAsg::in_group(I, "web", &["launch"])
        };
        let found = Lifecycle::discover(
            &settings_of(HookChoice::Auto),
            asg,
            Some(&FakeImds::with_group_tag(I, "web")),
        )
        .await
        .unwrap();
        assert!(found.is_none());
    }

    /// A throttled CompleteLifecycleAction is asked again until taken, and recorded as taken.
    #[tokio::test(start_paused = true)]
    async fn a_throttled_completion_is_sent_again_until_taken() {
        let asg = FakeAsg::in_group(I, "web", &["launch"]).throttle("complete", 8);
        let l = discover_auto(asg, &FakeImds::without_tags(I)).await;
        let done = l.complete(true).await.unwrap();
        assert!(done.sent.is_ok(), "{:?}", done.sent);
        assert_eq!(done.record.error, None);
        assert_eq!(l.api.count("complete"), 9);
        assert!(l.api.pending.lock().unwrap().is_none());
    }

    #[test]
    fn the_heartbeat_interval_follows_the_hooks_timeout() {
        let s = Duration::from_secs;
        for (configured, timeout, every) in [
            (60, None, 60),
            (60, Some(3600), 60),
            (60, Some(30), 10),
            (60, Some(90), 30),
            (20, Some(300), 20),
            (60, Some(6), 5),
            (5, Some(30), 5),
        ] {
            assert_eq!(
                heartbeat_interval(s(configured), timeout.map(s)),
                s(every),
                "{configured} {timeout:?}"
            );
        }
    }

    /// A 30 s hook (AWS's shortest) gets a heartbeat every 10 s, the default setting (60 s)
    /// notwithstanding; each hook by its own timeout.
    #[tokio::test(start_paused = true)]
    async fn a_30_s_hook_gets_its_heartbeats_in_time() {
        let asg = FakeAsg {
            timeouts: HashMap::from([
                ("launch".to_string(), Duration::from_secs(30)),
                ("drain".to_string(), Duration::from_secs(7200)),
            ]),
            terminating: vec!["drain".into()],
            ..FakeAsg::in_group(I, "web", &["launch"])
        };
        let l = discover_auto(asg, &FakeImds::without_tags(I)).await;
        assert_eq!(l.heartbeat_interval(), Duration::from_secs(10));
        assert_eq!(l.terminate_heartbeat, Duration::from_secs(60));
        let out = l.while_running(async {
            tokio::time::sleep(Duration::from_secs(95)).await;
            7
        });
        assert_eq!(out.await, 7);
        // The one of discovery, then every 10 s: never 30 s without one.
        assert_eq!(l.api.count("heartbeat"), 1 + 9);
    }

    /// Heartbeats stop once the instance is seen past the launch hook (in service), not before.
    #[tokio::test(start_paused = true)]
    async fn heartbeats_stop_once_the_instance_is_past_the_hook() {
        let asg = FakeAsg::in_group(I, "web", &["launch"]);
        let l = discover_auto(asg, &FakeImds::without_tags(I)).await;
        assert_eq!(l.heartbeat().await.unwrap(), Beat::Recorded);
        *l.api.not_yet.lock().unwrap() = 1;
        assert_eq!(l.heartbeat().await.unwrap(), Beat::NotYet);
        *l.api.not_yet.lock().unwrap() = 0;
        *l.api.pending.lock().unwrap() = None;
        assert_eq!(l.heartbeat().await.unwrap(), Beat::Past("InService".into()));
        let before = l.api.count("heartbeat");
        l.while_running(tokio::time::sleep(Duration::from_secs(600)))
            .await;
        assert_eq!(l.api.count("heartbeat"), before + 1, "one, then none");
    }
}
