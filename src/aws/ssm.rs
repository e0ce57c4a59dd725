//! SSM Parameter Store behind a narrow trait, so that resolving the env file's variables can be
//! tested with a fake as well as against moto.

use std::collections::BTreeMap;
use std::future::Future;

use anyhow::{Context, Result};
use aws_sdk_ssm::types::Parameter as SdkParameter;
use aws_sdk_ssm::Client;

use super::secrets::{SecretBatch, SecretValue, SecretsStore};
use crate::redact::Secret;

/// GetParameters' limit on names per call.
pub const GET_PARAMETERS_MAX: usize = 10;

/// One parameter as read, its value decrypted.
#[derive(Debug, Clone, PartialEq)]
pub struct Parameter {
    pub name: String,
    pub value: Secret,
    pub version: i64,
}

/// What one GetParameters call found.
#[derive(Debug, Default)]
pub struct Batch {
    pub found: Vec<Parameter>,
    /// Names the store does not have (or does not show this role).
    pub missing: Vec<String>,
}

/// The calls the agent makes for the env file's variables: to Parameter Store, and to Secrets
/// Manager for the config's `secret:` entries.
pub trait ParameterStore: Sync {
    /// Reads up to [`GET_PARAMETERS_MAX`] parameters by name, decrypted.
    fn get_batch(&self, names: &[String]) -> impl Future<Output = Result<Batch>> + Send;
    /// Reads every parameter under `path` (all pages), decrypted.
    fn get_path(
        &self,
        path: &str,
        recursive: bool,
    ) -> impl Future<Output = Result<Vec<Parameter>>> + Send;
    /// The current version of the named parameters and of every parameter under the paths,
    /// without their values (DescribeParameters): what the daemon's watch compares.
    fn versions(
        &self,
        names: &[String],
        paths: &[(String, bool)],
    ) -> impl Future<Output = Result<BTreeMap<String, i64>>> + Send;
    /// Reads up to [`super::secrets::BATCH_MAX`] secrets at their current version.
    fn get_secrets(&self, ids: &[String]) -> impl Future<Output = Result<SecretBatch>> + Send;
    /// Reads one secret at the version a stage points to.
    fn get_secret_staged(
        &self,
        id: &str,
        stage: &str,
    ) -> impl Future<Output = Result<SecretValue>> + Send;
    /// Reads one secret at a version id (a release's pin).
    fn get_secret_version(
        &self,
        id: &str,
        version_id: &str,
    ) -> impl Future<Output = Result<SecretValue>> + Send;
    /// The version a stage of the secret points to, without its value.
    fn secret_version(
        &self,
        id: &str,
        stage: &str,
    ) -> impl Future<Output = Result<Option<String>>> + Send;
}

/// Parameter Store (and Secrets Manager) through the AWS SDK.
pub struct SsmStore {
    client: Client,
    secrets: SecretsStore,
}

impl SsmStore {
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        SsmStore {
            client: Client::new(config),
            secrets: SecretsStore::new(config),
        }
    }
}

impl ParameterStore for SsmStore {
    async fn get_secrets(&self, ids: &[String]) -> Result<SecretBatch> {
        self.secrets.get_batch(ids).await
    }

    async fn get_secret_staged(&self, id: &str, stage: &str) -> Result<SecretValue> {
        self.secrets.get_staged(id, stage).await
    }

    async fn get_secret_version(&self, id: &str, version_id: &str) -> Result<SecretValue> {
        self.secrets.get_version(id, version_id).await
    }

    async fn secret_version(&self, id: &str, stage: &str) -> Result<Option<String>> {
        self.secrets.version(id, stage).await
    }

    async fn get_batch(&self, names: &[String]) -> Result<Batch> {
        let out = self
            .client
            .get_parameters()
            .set_names(Some(names.to_vec()))
            .with_decryption(true)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!(super::describe(&e)))
            .with_context(|| {
                format!(
                    "failed to read parameter{} {}",
                    plural(names.len()),
                    names.join(", ")
                )
            })?;
        let found = out
            .parameters()
            .iter()
            .map(convert)
            .collect::<Result<_>>()?;
        Ok(Batch {
            found,
            missing: out.invalid_parameters().to_vec(),
        })
    }

    async fn get_path(&self, path: &str, recursive: bool) -> Result<Vec<Parameter>> {
        let mut pages = self
            .client
            .get_parameters_by_path()
            .path(path)
            .recursive(recursive)
            .with_decryption(true)
            .into_paginator()
            .send();
        let mut params = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page
                .map_err(|e| anyhow::anyhow!(super::describe(&e)))
                .with_context(|| format!("failed to read the parameters under {path}"))?;
            for p in page.parameters() {
                params.push(convert(p)?);
            }
        }
        Ok(params)
    }

    async fn versions(
        &self,
        names: &[String],
        paths: &[(String, bool)],
    ) -> Result<BTreeMap<String, i64>> {
        use aws_sdk_ssm::types::ParameterStringFilter;
        let mut filters = Vec::new();
        for chunk in names.chunks(50) {
            filters.push(
                ParameterStringFilter::builder()
                    .key("Name")
                    .option("Equals")
                    .set_values(Some(chunk.to_vec()))
                    .build()?,
            );
        }
        for (path, recursive) in paths {
            let option = if *recursive { "Recursive" } else { "OneLevel" };
            filters.push(
                ParameterStringFilter::builder()
                    .key("Path")
                    .option(option)
                    .values(path)
                    .build()?,
            );
        }
        let mut versions = BTreeMap::new();
        // One filter per call: DescribeParameters ANDs the filters of a call.
        for filter in filters {
            let mut pages = self
                .client
                .describe_parameters()
                .parameter_filters(filter)
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                let page = page
                    .map_err(|e| anyhow::anyhow!(super::describe(&e)))
                    .context("failed to look up parameter versions")?;
                for p in page.parameters() {
                    if let Some(name) = p.name() {
                        versions.insert(name.to_string(), p.version());
                    }
                }
            }
        }
        Ok(versions)
    }
}

fn convert(p: &SdkParameter) -> Result<Parameter> {
    let name = p
        .name()
        .context("Parameter Store returned a parameter without a name")?
        .to_string();
    let value = p
        .value()
        .with_context(|| format!("Parameter Store returned {name} without a value"))?;
    Ok(Parameter {
        value: Secret::fetched(value),
        version: p.version(),
        name,
    })
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
