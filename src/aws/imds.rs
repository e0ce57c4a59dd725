//! The instance metadata the agent reads itself (the SDK reads credentials and region on its own):
//! this instance's id and its tags, through IMDSv2. The SDK's client finds the service as the SDK
//! does everywhere: `AWS_EC2_METADATA_SERVICE_ENDPOINT`, the profile's
//! `ec2_metadata_service_endpoint`, else 169.254.169.254.

use std::future::Future;

use anyhow::{bail, Context, Result};
use aws_config::imds::client::error::ImdsError;
use aws_config::imds::Client;

/// What the agent asks instance metadata.
pub trait InstanceMetadata: Sync {
    /// This instance's id (`i-...`).
    fn instance_id(&self) -> impl Future<Output = Result<String>> + Send;
    /// One tag of this instance.
    fn tag(&self, key: &str) -> impl Future<Output = Result<Tag>> + Send;
}

/// What instance metadata says about one tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tag {
    Value(String),
    /// Tags are in instance metadata, and this one is not among them.
    Absent,
    /// Tags in instance metadata are disabled (the launch template's `InstanceMetadataTags`).
    Unavailable,
}

/// Instance metadata through the SDK's IMDSv2 client (token, retries, timeouts).
pub struct Imds {
    client: Client,
}

impl Imds {
    /// `None` when `AWS_EC2_METADATA_DISABLED` is true, as the SDK's own providers read it.
    pub fn new() -> Option<Self> {
        let disabled = std::env::var("AWS_EC2_METADATA_DISABLED")
            .is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"));
        (!disabled).then(|| Imds {
            client: Client::builder().build(),
        })
    }
}

impl InstanceMetadata for Imds {
    async fn instance_id(&self) -> Result<String> {
        let id = self
            .client
            .get("/latest/meta-data/instance-id")
            .await
            .map_err(|e| anyhow::anyhow!(explain(&e)))
            .context("failed to read the instance id from instance metadata")?;
        let id = id.as_ref().trim();
        if !id.starts_with("i-") || id.contains(char::is_whitespace) {
            bail!("instance metadata answered {id:?} for the instance id");
        }
        Ok(id.to_string())
    }

    async fn tag(&self, key: &str) -> Result<Tag> {
        let path = format!("/latest/meta-data/tags/instance/{key}");
        let failed = || format!("failed to read the instance tag {key}");
        match self.client.get(path).await {
            Ok(value) => return Ok(Tag::Value(value.as_ref().to_string())),
            Err(e) if !not_found(&e) => {
                return Err(anyhow::anyhow!(explain(&e))).with_context(failed)
            }
            Err(_) => {}
        }
        // A missing tag and disabled tags are both a 404 for the key; the list tells them apart.
        match self.client.get("/latest/meta-data/tags/instance").await {
            Ok(_) => Ok(Tag::Absent),
            Err(e) if not_found(&e) => Ok(Tag::Unavailable),
            Err(e) => Err(anyhow::anyhow!(explain(&e))).with_context(failed),
        }
    }
}

fn not_found(err: &ImdsError) -> bool {
    matches!(err, ImdsError::ErrorResponse(e) if e.response().status().as_u16() == 404)
}

/// An IMDS error in one line: each cause's Display, never the SDK's `DisplayErrorContext` or the
/// Display of an error response, which print the whole response with it.
fn explain(err: &ImdsError) -> String {
    match err {
        ImdsError::ErrorResponse(e) => {
            format!(
                "instance metadata answered HTTP {}",
                e.response().status().as_u16()
            )
        }
        ImdsError::FailedToLoadToken(e) if e.is_dispatch_failure() => {
            "instance metadata does not answer (not on EC2?)".to_string()
        }
        _ => {
            let mut words = err.to_string();
            let mut cause = std::error::Error::source(err);
            while let Some(c) = cause {
                words.push_str(": ");
                words.push_str(&c.to_string());
                cause = c.source();
            }
            words
        }
    }
}
