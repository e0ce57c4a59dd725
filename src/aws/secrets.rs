//! AWS Secrets Manager: secrets at their current version read in batches (BatchGetSecretValue,
//! 20 a call), a secret pinned to a version stage read alone (GetSecretValue: the batch call
//! serves the current version only), and the version a stage points to (DescribeSecret, no
//! value) for the daemon's watch.

use anyhow::{anyhow, Context, Result};
use aws_sdk_secretsmanager::Client;

use crate::error::input_error;
use crate::redact::Secret;

/// BatchGetSecretValue's limit on secret ids per call.
pub const BATCH_MAX: usize = 20;

/// One secret as read.
#[derive(Debug, Clone, PartialEq)]
pub struct SecretValue {
    /// The id as the config gives it (a name, or a full or partial ARN).
    pub id: String,
    pub version_id: String,
    pub value: Secret,
}

/// What one batch call found.
#[derive(Debug, Default)]
pub struct SecretBatch {
    pub found: Vec<SecretValue>,
    /// Ids Secrets Manager does not have (or does not show this role), with why.
    pub missing: Vec<String>,
}

/// Secrets Manager through the AWS SDK.
pub struct SecretsStore {
    client: Client,
}

impl SecretsStore {
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        SecretsStore {
            client: Client::new(config),
        }
    }

    /// Reads up to [`BATCH_MAX`] secrets at their current version.
    pub async fn get_batch(&self, ids: &[String]) -> Result<SecretBatch> {
        let mut batch = SecretBatch::default();
        let mut token = None;
        loop {
            let out = self
                .client
                .batch_get_secret_value()
                .set_secret_id_list(Some(ids.to_vec()))
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| anyhow!(super::describe(&e)))
                .with_context(|| format!("failed to read secrets {}", ids.join(", ")))?;
            for entry in out.secret_values() {
                let (name, arn) = (entry.name().unwrap_or(""), entry.arn().unwrap_or(""));
                let Some(id) = ids.iter().find(|id| same_secret(id, name, arn)) else {
                    continue;
                };
                batch.found.push(SecretValue {
                    id: id.clone(),
                    version_id: entry.version_id().unwrap_or_default().to_string(),
                    value: text_of(id, entry.secret_string(), entry.secret_binary().is_some())?,
                });
            }
            for error in out.errors() {
                let id = error.secret_id().unwrap_or("(no id)");
                batch.missing.push(match error.error_code() {
                    Some("ResourceNotFoundException") | None => id.to_string(),
                    Some(code) => format!("{id} ({code})"),
                });
            }
            token = out.next_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        Ok(batch)
    }

    /// Reads one secret at the version `stage` points to.
    pub async fn get_staged(&self, id: &str, stage: &str) -> Result<SecretValue> {
        let out = self
            .client
            .get_secret_value()
            .secret_id(id)
            .version_stage(stage)
            .send()
            .await
            .map_err(|e| anyhow!(super::describe(&e)))
            .with_context(|| format!("failed to read secret {id} (version stage {stage})"))?;
        Ok(SecretValue {
            id: id.to_string(),
            version_id: out.version_id().unwrap_or_default().to_string(),
            value: text_of(id, out.secret_string(), out.secret_binary().is_some())?,
        })
    }

    /// Reads one secret at a version id.
    pub async fn get_version(&self, id: &str, version_id: &str) -> Result<SecretValue> {
        let out = self
            .client
            .get_secret_value()
            .secret_id(id)
            .version_id(version_id)
            .send()
            .await
            .map_err(|e| anyhow!(super::describe(&e)))
            .with_context(|| {
                format!("failed to read secret {id} at version {version_id} (Secrets Manager may remove versions that have no staging label)")
            })?;
        Ok(SecretValue {
            id: id.to_string(),
            version_id: out.version_id().unwrap_or_default().to_string(),
            value: text_of(id, out.secret_string(), out.secret_binary().is_some())?,
        })
    }

    /// The version `stage` of the secret points to, without its value; `None` when no version
    /// has that stage.
    pub async fn version(&self, id: &str, stage: &str) -> Result<Option<String>> {
        let out = self
            .client
            .describe_secret()
            .secret_id(id)
            .send()
            .await
            .map_err(|e| anyhow!(super::describe(&e)))
            .with_context(|| format!("failed to look up the version of secret {id}"))?;
        Ok(out.version_ids_to_stages().and_then(|versions| {
            versions
                .iter()
                .find(|(_, stages)| stages.iter().any(|s| s == stage))
                .map(|(version, _)| version.clone())
        }))
    }
}

/// Whether a secret the service answered with (its name and full ARN) is the one the config asked
/// for by `id`: its name, its full ARN, or a partial ARN (without the random suffix).
fn same_secret(id: &str, name: &str, arn: &str) -> bool {
    id == name || id == arn || (id.starts_with("arn:") && arn.starts_with(&format!("{id}-")))
}

/// A secret's text; a binary secret cannot become variables.
fn text_of(id: &str, text: Option<&str>, binary: bool) -> Result<Secret> {
    match text {
        Some(text) => Ok(Secret::fetched(text)),
        None if binary => Err(input_error(format!(
            "secret {id} holds a binary value (SecretBinary): only a text secret can become variables"
        ))),
        None => Err(anyhow!("Secrets Manager returned secret {id} without a value")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_matched_to_the_ids_asked_for() {
        let arn = "arn:aws:secretsmanager:ap-northeast-2:123456789012:secret:prod/db-a1B2c3";
        assert!(same_secret("prod/db", "prod/db", arn));
        assert!(same_secret(arn, "prod/db", arn));
        let partial = "arn:aws:secretsmanager:ap-northeast-2:123456789012:secret:prod/db";
        assert!(same_secret(partial, "prod/db", arn));
        assert!(!same_secret("prod/d", "prod/db", arn));
        let other = "arn:aws:secretsmanager:ap-northeast-2:123456789012:secret:prod/d";
        assert!(!same_secret(other, "prod/db", arn));
    }
}
