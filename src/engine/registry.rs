//! Registry credentials: a username and password read from Parameter Store, or an ECR token asked
//! of ECR with the instance role and kept until shortly before it expires.

use std::time::{Duration, SystemTime};

use anyhow::{anyhow, Context, Result};
use base64::Engine;
use bollard::auth::DockerCredentials;
use tokio::sync::Mutex;

use crate::aws::parameters;
use crate::aws::ssm::ParameterStore;
use crate::config::{Credential, Registry, RegistryAuth};
use crate::redact::Secret;

/// A token is fetched again this long before ECR says it expires.
const ECR_MARGIN: Duration = Duration::from_secs(300);

pub struct Registries {
    entries: Vec<(String, Source)>,
    ecr: Option<EcrTokens>,
}

enum Source {
    Password { username: String, password: Secret },
    Ecr,
}

impl Registries {
    /// No credentials: every pull is anonymous.
    pub fn none() -> Registries {
        Registries {
            entries: Vec::new(),
            ecr: None,
        }
    }

    /// Reads the configured usernames and passwords from Parameter Store (in as few calls as it
    /// allows); ECR tokens are asked for on first use.
    pub async fn resolve(
        configured: &[Registry],
        ssm: &impl ParameterStore,
        ecr: Option<aws_sdk_ecr::Client>,
    ) -> Result<Registries> {
        let names: Vec<String> = crate::inputs::Inputs::of_registries(configured)
            .parameter_names()
            .map(str::to_string)
            .collect();
        let values = if names.is_empty() {
            Default::default()
        } else {
            parameters::get_all(ssm, names)
                .await
                .context("failed to read registry credentials")?
        };
        let value = |name: &str| {
            values
                .get(name)
                .map(|p| p.value.clone())
                .ok_or_else(|| anyhow!("parameter {name} was not returned"))
        };
        let mut entries = Vec::new();
        for registry in configured {
            let source = match &registry.auth {
                // An anonymous mirror: its pulls go without credentials, as for a registry the
                // config does not name.
                RegistryAuth::Anonymous => continue,
                RegistryAuth::Ecr => Source::Ecr,
                RegistryAuth::Password { username, password } => Source::Password {
                    username: match username {
                        Credential::Literal(name) => name.clone(),
                        Credential::Parameter { parameter } => {
                            value(parameter.as_str())?.expose().to_string()
                        }
                    },
                    password: value(password.as_str())?,
                },
            };
            entries.push((registry.server.as_str().to_string(), source));
        }
        let ecr = ecr.map(|client| EcrTokens {
            client,
            cached: Mutex::new(None),
        });
        Ok(Registries { entries, ecr })
    }

    /// The credentials for an image on `registry` (a host as the image reference names it), or
    /// `None` when the config has none for it (an anonymous pull).
    pub async fn credentials(&self, registry: &str) -> Result<Option<DockerCredentials>> {
        let Some((host, source)) = self.entries.iter().find(|(host, _)| host == registry) else {
            return Ok(None);
        };
        let (username, password) = match source {
            Source::Password { username, password } => (username.clone(), password.clone()),
            Source::Ecr => {
                let tokens = self
                    .ecr
                    .as_ref()
                    .ok_or_else(|| anyhow!("no ECR client for {host}"))?;
                tokens
                    .get()
                    .await
                    .with_context(|| format!("failed to get an ECR token for {host}"))?
            }
        };
        Ok(Some(DockerCredentials {
            username: Some(username),
            password: Some(password.expose().to_string()),
            serveraddress: Some(host.clone()),
            ..Default::default()
        }))
    }
}

/// ECR authorization tokens for the role's own account, cached until shortly before expiry.
struct EcrTokens {
    client: aws_sdk_ecr::Client,
    cached: Mutex<Option<(String, Secret, SystemTime)>>,
}

impl EcrTokens {
    async fn get(&self) -> Result<(String, Secret)> {
        let mut cached = self.cached.lock().await;
        if let Some((user, password, expires)) = cached.as_ref() {
            if SystemTime::now() + ECR_MARGIN < *expires {
                return Ok((user.clone(), password.clone()));
            }
        }
        let out = self
            .client
            .get_authorization_token()
            .send()
            .await
            .map_err(|e| anyhow!(crate::aws::describe(&e)))
            .context("GetAuthorizationToken failed")?;
        let data = out
            .authorization_data()
            .first()
            .ok_or_else(|| anyhow!("ECR returned no authorization data"))?;
        let token = data
            .authorization_token()
            .ok_or_else(|| anyhow!("ECR returned no token"))?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(token)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(|| anyhow!("ECR returned a token that is not base64 user:password"))?;
        let (user, password) = decoded
            .split_once(':')
            .ok_or_else(|| anyhow!("ECR returned a token without user:password"))?;
        let expires = data
            .expires_at()
            .and_then(|t| SystemTime::try_from(*t).ok())
            .unwrap_or_else(|| SystemTime::now() + Duration::from_secs(3600));
        crate::redact::learn(token);
        let entry = (user.to_string(), Secret::fetched(password), expires);
        *cached = Some(entry.clone());
        Ok((entry.0, entry.1))
    }
}
