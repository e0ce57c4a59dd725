//! Instance metadata through IMDSv2, as the agent reads it itself (the SDK reads credentials and
//! region on its own): this instance's id, its tags, and any path as bytes. The SDK's client finds the
//! service as the SDK does everywhere: `AWS_EC2_METADATA_SERVICE_ENDPOINT`, the profile's
//! `ec2_metadata_service_endpoint`, else 169.254.169.254.
//!
//! User data is the one read the SDK's client cannot make: it is bytes (often gzip), and the
//! client answers only UTF-8. It goes through [`raw_get`], a two-request IMDSv2 exchange (token,
//! then the path) on the same endpoint.

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

/// `AWS_EC2_METADATA_DISABLED` is true, as the SDK's own providers read it.
pub fn disabled() -> bool {
    std::env::var("AWS_EC2_METADATA_DISABLED").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// Where instance metadata is: the SDK's environment variables, else the link-local address.
fn endpoint() -> String {
    if let Ok(url) = std::env::var("AWS_EC2_METADATA_SERVICE_ENDPOINT") {
        if !url.trim().is_empty() {
            return url.trim().trim_end_matches('/').to_string();
        }
    }
    let ipv6 = std::env::var("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE")
        .is_ok_and(|m| m.trim().eq_ignore_ascii_case("ipv6"));
    match ipv6 {
        true => "http://[fd00:ec2::254]".to_string(),
        false => "http://169.254.169.254".to_string(),
    }
}

/// One IMDSv2 read of `path` as bytes: `None` on 404. Each request is bounded (a host that is not
/// on EC2 answers nothing at 169.254.169.254) and tried twice.
pub async fn raw_get(path: &str) -> Result<Option<Vec<u8>>> {
    use http_body_util::{BodyExt, Empty};
    use hyper::body::Bytes;
    const BOUND: std::time::Duration = std::time::Duration::from_secs(2);
    if disabled() {
        bail!("instance metadata is disabled (AWS_EC2_METADATA_DISABLED)");
    }
    let base = endpoint();
    let client: hyper_util::client::legacy::Client<_, Empty<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let request = |method: http::Method, path: &str, header: (&'static str, String)| {
        http::Request::builder()
            .method(method)
            .uri(format!("{base}{path}"))
            .header(header.0, header.1)
            .body(Empty::<Bytes>::new())
            .context("instance metadata endpoint is not a URL")
    };
    let send = |req: http::Request<Empty<Bytes>>| {
        let client = client.clone();
        async move {
            let answer = tokio::time::timeout(BOUND, async {
                let resp = client.request(req).await?;
                let status = resp.status();
                let body = resp.into_body().collect().await?.to_bytes();
                Ok::<_, anyhow::Error>((status, body))
            })
            .await;
            match answer {
                Ok(answer) => answer,
                Err(_) => bail!("instance metadata does not answer (not on EC2?)"),
            }
        }
    };
    let mut last = None;
    for _ in 0..2 {
        let attempt = async {
            let token = request(
                http::Method::PUT,
                "/latest/api/token",
                ("x-aws-ec2-metadata-token-ttl-seconds", "60".into()),
            )?;
            let (status, token) = send(token).await?;
            if !status.is_success() {
                bail!(
                    "instance metadata answered HTTP {} for a token",
                    status.as_u16()
                );
            }
            let token = String::from_utf8(token.to_vec()).context("a token that is not text")?;
            let get = request(http::Method::GET, path, ("x-aws-ec2-metadata-token", token))?;
            let (status, body) = send(get).await?;
            match status.as_u16() {
                200 => Ok(Some(body.to_vec())),
                404 => Ok(None),
                code => bail!("instance metadata answered HTTP {code} for {path}"),
            }
        };
        match attempt.await {
            Ok(found) => return Ok(found),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no attempt made")))
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
        (!disabled()).then(|| Imds {
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

impl Imds {
    /// This instance's user data, as bytes; `None` when it has none.
    pub async fn user_data(&self) -> Result<Option<Vec<u8>>> {
        raw_get("/latest/user-data")
            .await
            .context("failed to read the user data")
    }

    /// The tags whose key starts with `prefix`, the prefix taken off, in key order; none when tags
    /// are not in instance metadata.
    pub async fn tags_with_prefix(&self, prefix: &str) -> Result<Vec<(String, String)>> {
        let keys = match self.client.get("/latest/meta-data/tags/instance").await {
            Ok(keys) => keys,
            Err(e) if not_found(&e) => return Ok(Vec::new()),
            Err(e) => {
                return Err(anyhow::anyhow!(explain(&e))).context("failed to list instance tags")
            }
        };
        let mut found = Vec::new();
        for key in keys.as_ref().lines().map(str::trim) {
            let Some(short) = key.strip_prefix(prefix) else {
                continue;
            };
            if let Tag::Value(value) = self.tag(key).await? {
                found.push((short.to_string(), value));
            }
        }
        found.sort();
        Ok(found)
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
