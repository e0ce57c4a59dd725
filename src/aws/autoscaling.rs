//! Auto Scaling behind a narrow trait: the few calls the launch lifecycle hook needs (which group
//! an instance is in, the group's launch hooks, heartbeat, complete) and SetInstanceHealth.
//!
//! Each failure says whether it may pass ([`is_retryable`]: throttling, a 5xx, a timeout, the
//! network), after the SDK's own retries: the lifecycle calls are tried again until they are
//! answered, since giving up on them gets a healthy instance terminated.

use std::future::Future;
use std::time::Duration;

use anyhow::{Context, Result};
use aws_sdk_autoscaling::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_autoscaling::Client;

/// The transition a launch hook is for.
pub const LAUNCHING: &str = "autoscaling:EC2_INSTANCE_LAUNCHING";
/// The transition a termination hook is for.
pub const TERMINATING: &str = "autoscaling:EC2_INSTANCE_TERMINATING";

/// One lifecycle action: an instance held by a hook of its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Action<'a> {
    pub group: &'a str,
    pub hook: &'a str,
    pub instance: &'a str,
}

/// One of a group's lifecycle hooks, as DescribeLifecycleHooks lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    pub name: String,
    /// [`LAUNCHING`] or [`TERMINATING`].
    pub transition: String,
    /// How long an action of this hook waits without a heartbeat before its default result
    /// applies (30 s to 2 h; AWS's default is 1 h).
    pub heartbeat_timeout: Option<Duration>,
}

/// A failed Auto Scaling call, in one printable line, and whether trying again may help.
#[derive(Debug, thiserror::Error)]
#[error("{text}")]
pub struct CallFailed {
    pub text: String,
    /// Throttled, a 5xx, a timeout or the network: the same call may pass later. Anything else
    /// (AccessDenied, a validation error) is final.
    pub retryable: bool,
}

/// Whether `err` (a failed Auto Scaling call, with context) may pass if tried again.
pub fn is_retryable(err: &anyhow::Error) -> bool {
    err.chain()
        .filter_map(|e| e.downcast_ref::<CallFailed>())
        .any(|f| f.retryable)
}

/// The error codes of a call refused for its rate or a passing conflict (HTTP 400 for most).
const RETRYABLE_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "RequestThrottled",
    "ResourceContention",
    "ServiceUnavailable",
    "InternalFailure",
];

fn failed<E>(err: &SdkError<E, aws_sdk_autoscaling::config::http::HttpResponse>) -> anyhow::Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let retryable = match err {
        SdkError::ServiceError(e) => {
            let status = e.raw().status().as_u16();
            status >= 500
                || status == 429
                || e.err().code().is_some_and(|c| RETRYABLE_CODES.contains(&c))
        }
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) => true,
        // An answer cut short or garbled on the way.
        SdkError::ResponseError(_) => true,
        _ => false,
    };
    anyhow::Error::new(CallFailed {
        text: super::describe(err),
        retryable,
    })
}

/// What CompleteLifecycleAction tells the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Put the instance in service.
    Continue,
    /// Terminate the instance (the group launches another).
    Abandon,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Continue => "CONTINUE",
            Outcome::Abandon => "ABANDON",
        }
    }
}

/// What a heartbeat found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heartbeat {
    /// The action is pending and its timeout starts again.
    Recorded,
    /// No action of this hook is pending for the instance: it was completed, it timed out, or the
    /// instance is long in service (a `sync` run by hand).
    NotPending,
}

/// CompleteLifecycleAction's "No active Lifecycle Action found": the action is not pending, or
/// not yet (Auto Scaling records a new action a moment after the instance can already ask).
#[derive(Debug, thiserror::Error)]
#[error(
    "Auto Scaling has no active lifecycle action for {instance} (hook {hook} of group {group})"
)]
pub struct NoActiveAction {
    pub group: String,
    pub hook: String,
    pub instance: String,
}

impl NoActiveAction {
    pub fn of(action: Action<'_>) -> Self {
        NoActiveAction {
            group: action.group.to_string(),
            hook: action.hook.to_string(),
            instance: action.instance.to_string(),
        }
    }
}

/// The calls the agent makes to Auto Scaling.
pub trait LifecycleApi: Sync {
    /// The group `instance` belongs to and its lifecycle state (`Pending`, `Pending:Wait`,
    /// `InService`...), from DescribeAutoScalingInstances; `None` when in no group.
    fn describe_instance(
        &self,
        instance: &str,
    ) -> impl Future<Output = Result<Option<(String, String)>>> + Send;
    /// The group's lifecycle hooks (DescribeLifecycleHooks).
    fn hooks(&self, group: &str) -> impl Future<Output = Result<Vec<Hook>>> + Send;
    /// RecordLifecycleActionHeartbeat.
    fn heartbeat(&self, action: Action<'_>) -> impl Future<Output = Result<Heartbeat>> + Send;
    /// CompleteLifecycleAction; a [`NoActiveAction`] error when none is pending.
    fn complete(
        &self,
        action: Action<'_>,
        outcome: Outcome,
    ) -> impl Future<Output = Result<()>> + Send;
    /// SetInstanceHealth Unhealthy: the group replaces the instance.
    fn set_unhealthy(&self, instance: &str) -> impl Future<Output = Result<()>> + Send;
}

/// Auto Scaling through the AWS SDK.
#[derive(Debug)]
pub struct AsgClient {
    client: Client,
}

impl AsgClient {
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        AsgClient {
            client: Client::new(config),
        }
    }
}

impl LifecycleApi for AsgClient {
    async fn describe_instance(&self, instance: &str) -> Result<Option<(String, String)>> {
        let out = self
            .client
            .describe_auto_scaling_instances()
            .instance_ids(instance)
            .send()
            .await
            .map_err(|e| failed(&e))
            .with_context(|| format!("failed to look up the Auto Scaling group of {instance}"))?;
        Ok(out
            .auto_scaling_instances()
            .iter()
            .find(|i| i.instance_id() == Some(instance))
            .and_then(|i| {
                let group = i.auto_scaling_group_name()?.to_string();
                Some((group, i.lifecycle_state().unwrap_or_default().to_string()))
            }))
    }

    async fn hooks(&self, group: &str) -> Result<Vec<Hook>> {
        let out = self
            .client
            .describe_lifecycle_hooks()
            .auto_scaling_group_name(group)
            .send()
            .await
            .map_err(|e| failed(&e))
            .with_context(|| format!("failed to list the lifecycle hooks of group {group}"))?;
        Ok(out
            .lifecycle_hooks()
            .iter()
            .filter_map(|h| {
                Some(Hook {
                    name: h.lifecycle_hook_name()?.to_string(),
                    transition: h.lifecycle_transition()?.to_string(),
                    heartbeat_timeout: h
                        .heartbeat_timeout()
                        .and_then(|s| u64::try_from(s).ok())
                        .map(Duration::from_secs),
                })
            })
            .collect())
    }

    async fn heartbeat(&self, action: Action<'_>) -> Result<Heartbeat> {
        let sent = self
            .client
            .record_lifecycle_action_heartbeat()
            .auto_scaling_group_name(action.group)
            .lifecycle_hook_name(action.hook)
            .instance_id(action.instance)
            .send()
            .await;
        match sent {
            Ok(_) => Ok(Heartbeat::Recorded),
            Err(e) if no_pending_action(&e) => Ok(Heartbeat::NotPending),
            Err(e) => Err(failed(&e)).with_context(|| {
                format!(
                    "failed to record a heartbeat for {} (hook {} of group {})",
                    action.instance, action.hook, action.group
                )
            }),
        }
    }

    async fn complete(&self, action: Action<'_>, outcome: Outcome) -> Result<()> {
        self.client
            .complete_lifecycle_action()
            .auto_scaling_group_name(action.group)
            .lifecycle_hook_name(action.hook)
            .instance_id(action.instance)
            .lifecycle_action_result(outcome.as_str())
            .send()
            .await
            .map_err(|e| match no_pending_action(&e) {
                true => anyhow::Error::new(NoActiveAction::of(action)),
                false => failed(&e),
            })
            .with_context(|| {
                format!(
                    "failed to complete the lifecycle action of {} with {} (hook {} of group {})",
                    action.instance,
                    outcome.as_str(),
                    action.hook,
                    action.group
                )
            })?;
        Ok(())
    }

    async fn set_unhealthy(&self, instance: &str) -> Result<()> {
        self.client
            .set_instance_health()
            .instance_id(instance)
            .health_status("Unhealthy")
            .send()
            .await
            .map_err(|e| failed(&e))
            .with_context(|| format!("failed to mark {instance} unhealthy"))?;
        Ok(())
    }
}

/// AWS answers a heartbeat for an action that is not (or no longer) pending with a
/// ValidationError "No active Lifecycle Action found with instance ID ...".
fn no_pending_action<E, R>(err: &SdkError<E, R>) -> bool
where
    E: ProvideErrorMetadata,
{
    match err {
        SdkError::ServiceError(e) => {
            e.err().code() == Some("ValidationError")
                && e.err()
                    .message()
                    .is_some_and(|m| m.contains("No active Lifecycle Action"))
        }
        _ => false,
    }
}
