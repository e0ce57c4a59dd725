//! AWS access: one SDK configuration from the default chain, and narrow traits over the services
//! the agent uses.
//!
//! Credentials come from the SDK's default chain: on an instance that is the role through IMDSv2
//! (`AWS_EC2_METADATA_SERVICE_ENDPOINT` points it elsewhere in tests); nothing is ever written to
//! disk. Retries are the SDK's standard mode (exponential backoff with jitter on throttling,
//! 5xx and network errors), bounded here in attempts and in total time per call.

pub mod autoscaling;
pub mod parameters;
pub mod releases;
pub mod s3;
pub mod secrets;
pub mod ssm;

use std::error::Error as StdError;

use std::time::Duration;

use anyhow::{bail, Result};
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};

use crate::config::AwsSettings;
use crate::error::input_error;

/// Attempts per call, the first included.
pub const MAX_ATTEMPTS: u32 = 5;
/// The first wait after a throttling answer: a random time up to this, doubling with each retry
/// (up to 1, 2, 4, 8 s: about 15 s of spread for a fleet that boots at once into a quota).
/// Other transient errors start from the SDK's own 50 ms.
pub const THROTTLED_BACKOFF: Duration = Duration::from_secs(1);
/// Bound on one call, retries and backoff included.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(60);

/// The SDK configuration for `settings`: region and endpoint overrides on top of the default chain.
pub async fn sdk_config(settings: &AwsSettings) -> Result<SdkConfig> {
    let retry = RetryConfig::standard()
        .with_max_attempts(MAX_ATTEMPTS)
        .with_initial_backoff(THROTTLED_BACKOFF)
        .with_max_backoff(Duration::from_secs(20));
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

/// An SDK error in one line that is safe to print: the service's error code and message, or what
/// went wrong on the way. Never the raw response: an unparsable answer to GetParameters would
/// carry parameter values in its body, and the SDK's own Display of such errors includes it.
pub fn describe<E>(
    err: &aws_sdk_ssm::error::SdkError<E, aws_sdk_ssm::config::http::HttpResponse>,
) -> String
where
    E: aws_sdk_ssm::error::ProvideErrorMetadata + StdError + 'static,
{
    use aws_sdk_ssm::error::{DisplayErrorContext, SdkError};
    match err {
        SdkError::ServiceError(e) => {
            let status = e.raw().status().as_u16();
            match (e.err().code(), e.err().message()) {
                (Some(code), Some(message)) => format!("{code}: {message}"),
                (Some(code), None) => format!("{code} (HTTP {status})"),
                (None, _) => format!("HTTP {status} without an error code"),
            }
        }
        SdkError::ResponseError(e) => {
            format!("an unreadable answer (HTTP {})", e.raw().status().as_u16())
        }
        SdkError::TimeoutError(_) => "timed out".to_string(),
        SdkError::DispatchFailure(e) => match e.as_connector_error() {
            Some(c) => format!("could not reach the service: {}", DisplayErrorContext(c)),
            None => "could not reach the service".to_string(),
        },
        SdkError::ConstructionFailure(_) => "could not build the request".to_string(),
        _ => "an unexpected SDK error".to_string(),
    }
}
