//! AWS access: one SDK configuration from the default chain, and narrow traits over the services
//! the agent uses.
//!
//! Credentials come from the SDK's default chain: on an instance that is the role through IMDSv2
//! (`AWS_EC2_METADATA_SERVICE_ENDPOINT` points it elsewhere in tests); nothing is ever written to
//! disk. Retries are the SDK's standard mode (exponential backoff with jitter on throttling,
//! 5xx and network errors), bounded here in attempts and in total time per call.

pub mod s3;
pub mod ssm;

use std::time::Duration;

use anyhow::{bail, Result};
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};

use crate::config::AwsSettings;
use crate::error::input_error;

/// Attempts per call, the first included.
pub const MAX_ATTEMPTS: u32 = 5;
/// Bound on one call, retries and backoff included.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(60);

/// The SDK configuration for `settings`: region and endpoint overrides on top of the default chain.
pub async fn sdk_config(settings: &AwsSettings) -> Result<SdkConfig> {
    let retry = RetryConfig::standard()
        .with_max_attempts(MAX_ATTEMPTS)
        .with_initial_backoff(Duration::from_millis(200))
        .with_max_backoff(Duration::from_secs(8));
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(3))
        .operation_attempt_timeout(Duration::from_secs(15))
        .operation_timeout(OPERATION_TIMEOUT)
        .build();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(retry)
        .timeout_config(timeouts);
    if let Some(region) = &settings.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(url) = &settings.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    let config = loader.load().await;
    if config.region().is_none() {
        if settings.region.is_none() {
            return Err(input_error(
                "no AWS region: set `aws.region`, or AWS_REGION, or run where instance metadata answers",
            ));
        }
        bail!("the SDK lost the configured region");
    }
    Ok(config)
}
