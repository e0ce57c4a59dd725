//! Auto Scaling groups in the rig's moto, as the lifecycle tests need them: a group whose new
//! instance waits for its launch hook.

use std::time::Duration;

use aws_sdk_autoscaling::config::{BehaviorVersion, Credentials, Region};

use super::Rig;

/// The launch hook's name.
pub const HOOK: &str = "launch";

/// An AMI moto knows.
const AMI: &str = "ami-12c6146b";

pub fn autoscaling(rig: &Rig) -> aws_sdk_autoscaling::Client {
    let config = aws_sdk_autoscaling::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(rig.region.clone()))
        .endpoint_url(&rig.moto_url)
        .credentials_provider(Credentials::new("testing", "testing", None, None, "rig"))
        .build();
    aws_sdk_autoscaling::Client::from_conf(config)
}

/// A group of one instance with a launch hook, as an ASG scaling out makes it: the group first
/// (empty), then the hook, then the capacity. Returns the instance moto launched.
pub async fn group_with_launch_hook(asg: &aws_sdk_autoscaling::Client, group: &str) -> String {
    group_with_launch_hook_after(asg, group, None).await
}

/// [`group_with_launch_hook`], where Auto Scaling records the launch action only `delay` after
/// the instance exists (the launch race; the rig's `kicky-rig:action-delay` group tag).
pub async fn group_with_launch_hook_after(
    asg: &aws_sdk_autoscaling::Client,
    group: &str,
    delay: Option<Duration>,
) -> String {
    group_with_hook(asg, group, delay, 300).await
}

/// [`group_with_launch_hook_after`], with the hook's HeartbeatTimeout (seconds; AWS allows 30
/// to 7200): the rig's moto applies the hook's default result (ABANDON) once that passes
/// without a heartbeat.
pub async fn group_with_hook(
    asg: &aws_sdk_autoscaling::Client,
    group: &str,
    delay: Option<Duration>,
    heartbeat_timeout: i32,
) -> String {
    asg.create_launch_configuration()
        .launch_configuration_name(group)
        .image_id(AMI)
        .instance_type("t3.small")
        .send()
        .await
        .expect("create launch configuration");
    let delay_tag = delay.map(|d| {
        aws_sdk_autoscaling::types::Tag::builder()
            .resource_id(group)
            .resource_type("auto-scaling-group")
            .key("kicky-rig:action-delay")
            .value(d.as_secs_f64().to_string())
            .propagate_at_launch(false)
            .build()
    });
    asg.create_auto_scaling_group()
        .auto_scaling_group_name(group)
        .launch_configuration_name(group)
        .min_size(0)
        .max_size(1)
        .desired_capacity(0)
        .availability_zones("ap-northeast-2a")
        .set_tags(delay_tag.map(|t| vec![t]))
        .send()
        .await
        .expect("create group");
    asg.put_lifecycle_hook()
        .auto_scaling_group_name(group)
        .lifecycle_hook_name(HOOK)
        .lifecycle_transition("autoscaling:EC2_INSTANCE_LAUNCHING")
        .heartbeat_timeout(heartbeat_timeout)
        .default_result("ABANDON")
        .send()
        .await
        .expect("put lifecycle hook");
    asg.set_desired_capacity()
        .auto_scaling_group_name(group)
        .desired_capacity(1)
        .send()
        .await
        .expect("set desired capacity");
    let out = asg
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(group)
        .send()
        .await
        .expect("describe group");
    let instances = out.auto_scaling_groups()[0].instances();
    assert_eq!(instances.len(), 1, "{instances:?}");
    instances[0].instance_id().unwrap().to_string()
}
