//! The connection to the Docker Engine: `DOCKER_HOST` or the local socket, waited for at boot,
//! with the API version negotiated down to what the engine speaks (1.41 for Debian's 20.10).

use std::time::Duration;

use anyhow::{Context, Result};
use bollard::Docker;
use tokio::time::Instant;

/// How long to wait for an engine that is not up yet (its socket absent at boot).
pub const ENGINE_WAIT: Duration = Duration::from_secs(60);

/// Connects, waiting up to `wait` for the engine to answer.
pub async fn connect(wait: Duration) -> Result<Docker> {
    let docker = Docker::connect_with_defaults()
        .context(
            "failed to set up a Docker Engine connection (DOCKER_HOST or /var/run/docker.sock)",
        )?
        .with_request_modifier(url_safe_registry_auth)
        .with_timeout(Duration::from_secs(300));
    let started = Instant::now();
    let mut logged = false;
    loop {
        match docker.ping().await {
            Ok(_) => break,
            Err(err) if started.elapsed() < wait => {
                if !logged {
                    tracing::info!("waiting for the Docker Engine: {err}");
                    logged = true;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(err) => {
                return Err(err)
                    .with_context(|| format!("the Docker Engine did not answer within {wait:?}"));
            }
        }
    }
    docker
        .negotiate_version()
        .await
        .context("failed to agree on an API version with the Docker Engine")
}

/// Engines up to 20.10 decode `X-Registry-Auth` as URL-safe base64 (as the docker CLI sends it);
/// bollard sends the standard alphabet, so a password whose encoding has `+` or `/` would arrive
/// garbled and the pull go out unauthenticated. Same bytes, URL-safe alphabet.
fn url_safe_registry_auth(mut request: bollard::BollardRequest) -> bollard::BollardRequest {
    if let Some(value) = request
        .headers()
        .get("X-Registry-Auth")
        .and_then(|v| v.to_str().ok())
    {
        let fixed = value.replace('+', "-").replace('/', "_");
        if let Ok(fixed) = http::HeaderValue::from_str(&fixed) {
            request.headers_mut().insert("X-Registry-Auth", fixed);
        }
    }
    request
}
