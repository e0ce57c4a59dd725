//! Auto Scaling behind a narrow trait: the few calls the launch lifecycle hook needs (which group
//! an instance is in, the group's launch hooks, heartbeat, complete) and SetInstanceHealth.

use std::future::Future;

use anyhow::{anyhow, Context, Result};
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
    /// The group's lifecycle hooks (DescribeLifecycleHooks): name and transition.
    fn hooks(&self, group: &str) -> impl Future<Output = Result<Vec<(String, String)>>> + Send;
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
            .map_err(|e| anyhow!(super::describe(&e)))
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

    async fn hooks(&self, group: &str) -> Result<Vec<(String, String)>> {
        let out = self
            .client
            .describe_lifecycle_hooks()
            .auto_scaling_group_name(group)
            .send()
            .await
            .map_err(|e| anyhow!(super::describe(&e)))
            .with_context(|| format!("failed to list the lifecycle hooks of group {group}"))?;
        Ok(out
            .lifecycle_hooks()
            .iter()
            .filter_map(|h| {
                let name = h.lifecycle_hook_name()?.to_string();
                Some((name, h.lifecycle_transition()?.to_string()))
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
            Err(e) => Err(anyhow!(super::describe(&e))).with_context(|| {
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
                false => anyhow!(super::describe(&e)),
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
            .map_err(|e| anyhow!(super::describe(&e)))
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
