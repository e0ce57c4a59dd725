//! S3 behind a narrow trait: a conditional, streaming GET and a HEAD, nothing else; each sends
//! the account expected to own the bucket.

use std::future::Future;
use std::io::Write;

use anyhow::{anyhow, bail, Context, Result};
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::types::ChecksumMode;
use aws_sdk_s3::Client;

use crate::config::types::S3Uri;
use crate::config::AwsSettings;

/// What to fetch: an object, optionally a pinned version, optionally only if its ETag changed.
#[derive(Debug, Clone, Copy)]
pub struct ObjectRequest<'a> {
    pub uri: &'a S3Uri,
    /// The AWS account that must own the bucket (`None`: the instance's).
    pub owner: Option<&'a str>,
    pub version_id: Option<&'a str>,
    pub if_none_match: Option<&'a str>,
}

/// What S3 says about an object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectMeta {
    pub etag: Option<String>,
    pub version_id: Option<String>,
    pub length: Option<u64>,
    /// Base64 SHA-256 of the whole object, when S3 holds one (not a composite multipart checksum).
    pub sha256: Option<String>,
}

#[derive(Debug)]
pub enum Fetched {
    /// The ETag still matches: no body was sent.
    NotModified,
    /// The body was written to the sink.
    Written(ObjectMeta),
}

/// A failure worth trying again (the body stream broke off), as opposed to an answer from S3.
#[derive(Debug)]
pub struct Transient;

impl std::fmt::Display for Transient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("transient")
    }
}

impl std::error::Error for Transient {}

/// S3 answered that the object does not exist.
#[derive(Debug)]
pub struct Missing;

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("no such object (NoSuchKey)")
    }
}

impl std::error::Error for Missing {}

/// Whether `err` says the object does not exist.
pub fn is_missing(err: &anyhow::Error) -> bool {
    err.chain().any(|e| e.is::<Missing>())
}

/// The account release commands run as (STS), where no account is configured and this is no
/// EC2 instance: set once by the `release` commands (see [`expected_owner`]).
static CALLER_ACCOUNT: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Off EC2 (`release create` in CI), buckets are expected to belong to the caller's own account.
pub fn expect_caller_account(account: &str) {
    let _ = CALLER_ACCOUNT.set(account.to_string());
}

/// The calls the agent makes to S3.
pub trait ObjectStore: Sync {
    /// GETs the object, streaming its body into `sink` unless it is not modified.
    fn get(
        &self,
        req: ObjectRequest<'_>,
        sink: &mut (dyn Write + Send),
    ) -> impl Future<Output = Result<Fetched>> + Send;
    /// HEADs the object: its ETag and version without the body. `owner` as in [`ObjectRequest`].
    fn head(
        &self,
        uri: &S3Uri,
        owner: Option<&str>,
        version_id: Option<&str>,
    ) -> impl Future<Output = Result<ObjectMeta>> + Send;
    /// Writes a failure report under `store`, named after the caller and the time (see
    /// [`crate::sync::report`]); where it went. A store that keeps none refuses.
    fn put_report(
        &self,
        store: &crate::config::types::S3Prefix,
        text: String,
    ) -> impl Future<Output = Result<S3Uri>> + Send {
        let _ = (store, text);
        async { Err(anyhow!("this store keeps no reports")) }
    }
}

/// The account every S3 call expects to own the bucket (S3's `ExpectedBucketOwner`): `owner` as
/// configured, else the instance's, from its identity document. A bucket is trusted by who owns
/// it, never by its name alone: a deleted or mistyped name can be registered by anyone, and S3
/// then answers 403 instead of serving their object. Where no account is known (instance
/// metadata disabled or not answering, as off EC2), the call is refused rather than sent
/// without the check.
async fn expected_owner(uri: &S3Uri, owner: Option<&str>) -> Result<String> {
    match owner.or(CALLER_ACCOUNT.get().map(String::as_str)) {
        Some(owner) => Ok(owner.to_string()),
        None => crate::instance::identity::instance_account().await.map(str::to_string).with_context(|| {
            format!(
                "the account that must own the bucket of {uri} is not known: name it with `expected_owner` (files) or `watch.marker_expected_owner`"
            )
        }),
    }
}

/// The report's key under the store: the caller's id, then the time.
pub fn report_key(user_id: &str, at: std::time::SystemTime) -> Result<String> {
    // The same check as a fleet record's name: nothing that could leave the prefix.
    crate::release::fleet::record_key(user_id)?;
    let time = humantime::format_rfc3339_millis(at)
        .to_string()
        .replace(':', "");
    Ok(format!("{user_id}/{time}.txt"))
}

pub struct S3Store {
    client: Client,
    /// Who the caller is (GetCallerIdentity needs no right): a report is named after it.
    sts: aws_sdk_sts::Client,
}

impl S3Store {
    pub fn new(config: &aws_config::SdkConfig, settings: &AwsSettings) -> Self {
        let conf = aws_sdk_s3::config::Builder::from(config)
            .force_path_style(settings.s3_force_path_style)
            .build();
        S3Store {
            client: Client::from_conf(conf),
            sts: aws_sdk_sts::Client::new(config),
        }
    }
}

impl ObjectStore for S3Store {
    async fn put_report(
        &self,
        store: &crate::config::types::S3Prefix,
        text: String,
    ) -> Result<S3Uri> {
        let caller = self
            .sts
            .get_caller_identity()
            .send()
            .await
            .map_err(|e| anyhow!(super::describe(&e)))
            .context("failed to ask STS who the caller is (GetCallerIdentity)")?;
        let user_id = caller.user_id().unwrap_or_default();
        let key = report_key(user_id, std::time::SystemTime::now())?;
        let uri = store.object(&key);
        self.put_as(
            &uri,
            None,
            text.into_bytes(),
            true,
            "text/plain; charset=utf-8",
        )
        .await?;
        Ok(uri)
    }

    async fn get(&self, req: ObjectRequest<'_>, sink: &mut (dyn Write + Send)) -> Result<Fetched> {
        let owner = expected_owner(req.uri, req.owner).await?;
        let out = self
            .client
            .get_object()
            .bucket(&req.uri.bucket)
            .key(&req.uri.key)
            .expected_bucket_owner(&owner)
            .set_version_id(req.version_id.map(str::to_string))
            .set_if_none_match(req.if_none_match.map(str::to_string))
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await;
        let mut out = match out {
            Ok(out) => out,
            Err(err) if status(&err) == Some(304) => return Ok(Fetched::NotModified),
            Err(err) => {
                let err = explain(&err, req.uri, &owner, req.version_id.is_some());
                return Err(err).with_context(|| format!("failed to fetch {}", req.uri));
            }
        };
        let meta = ObjectMeta {
            etag: out.e_tag().map(str::to_string),
            version_id: out.version_id().map(str::to_string),
            length: out.content_length().and_then(|l| u64::try_from(l).ok()),
            sha256: full_object_checksum(out.checksum_sha256()),
        };
        while let Some(chunk) = out.body.next().await {
            let chunk = chunk.map_err(|e| {
                let why = DisplayErrorContext(&e);
                anyhow!(Transient).context(format!("reading the body of {} failed: {why}", req.uri))
            })?;
            sink.write_all(&chunk)
                .with_context(|| format!("failed to write the body of {}", req.uri))?;
        }
        Ok(Fetched::Written(meta))
    }

    async fn head(
        &self,
        uri: &S3Uri,
        owner: Option<&str>,
        version_id: Option<&str>,
    ) -> Result<ObjectMeta> {
        let owner = expected_owner(uri, owner).await?;
        let out = self
            .client
            .head_object()
            .bucket(&uri.bucket)
            .key(&uri.key)
            .expected_bucket_owner(&owner)
            .set_version_id(version_id.map(str::to_string))
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await
            .map_err(|err| explain(&err, uri, &owner, version_id.is_some()))
            .with_context(|| format!("failed to look up {uri}"))?;
        Ok(ObjectMeta {
            etag: out.e_tag().map(str::to_string),
            version_id: out.version_id().map(str::to_string),
            length: out.content_length().and_then(|l| u64::try_from(l).ok()),
            sha256: full_object_checksum(out.checksum_sha256()),
        })
    }
}

impl S3Store {
    /// Writes `body` to the object; with `create_only`, only if no object has that key
    /// (`If-None-Match: *`): `Ok(false)` when one had.
    pub async fn put(
        &self,
        uri: &S3Uri,
        owner: Option<&str>,
        body: Vec<u8>,
        create_only: bool,
    ) -> Result<bool> {
        self.put_as(uri, owner, body, create_only, "application/json")
            .await
    }

    /// [`S3Store::put`] of a body of `content_type`.
    pub async fn put_as(
        &self,
        uri: &S3Uri,
        owner: Option<&str>,
        body: Vec<u8>,
        create_only: bool,
        content_type: &str,
    ) -> Result<bool> {
        let owner = expected_owner(uri, owner).await?;
        let out = self
            .client
            .put_object()
            .bucket(&uri.bucket)
            .key(&uri.key)
            .expected_bucket_owner(&owner)
            .content_type(content_type)
            .set_if_none_match(create_only.then(|| "*".to_string()))
            .body(body.into())
            .send()
            .await;
        match out {
            Ok(_) => Ok(true),
            Err(err) if create_only && status(&err) == Some(412) => Ok(false),
            Err(err) => Err(anyhow!(super::describe(&err)))
                .with_context(|| format!("failed to write {uri} (the bucket must belong to account {owner}; the caller needs s3:PutObject on it)")),
        }
    }

    /// The keys under `prefix` in `bucket`, every page.
    pub async fn list(
        &self,
        bucket: &str,
        prefix: &str,
        owner: Option<&str>,
    ) -> Result<Vec<String>> {
        let uri = S3Uri {
            bucket: bucket.to_string(),
            key: prefix.to_string(),
        };
        let owner = expected_owner(&uri, owner).await?;
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .expected_bucket_owner(&owner)
            .into_paginator()
            .send();
        let mut keys = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page
                .map_err(|e| anyhow!(super::describe(&e)))
                .with_context(|| format!("failed to list s3://{bucket}/{prefix}"))?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_string)),
            );
        }
        Ok(keys)
    }
}

/// Reads a small object whole (a release manifest, the pointer): `None` when it does not exist.
/// More than `max` bytes is refused: whoever writes the bucket does not choose our memory.
pub async fn read_small(
    store: &impl ObjectStore,
    uri: &S3Uri,
    owner: Option<&str>,
    version_id: Option<&str>,
    max: usize,
) -> Result<Option<(Vec<u8>, ObjectMeta)>> {
    let mut sink = Bounded {
        bytes: Vec::new(),
        max,
    };
    let req = ObjectRequest {
        uri,
        owner,
        version_id,
        if_none_match: None,
    };
    match store.get(req, &mut sink).await {
        Ok(Fetched::Written(meta)) => Ok(Some((sink.bytes, meta))),
        Ok(Fetched::NotModified) => bail!("{uri}: S3 answered 304 to an unconditional GET"),
        Err(err) if is_missing(&err) => Ok(None),
        Err(err) => Err(err),
    }
}

struct Bounded {
    bytes: Vec<u8>,
    max: usize,
}

impl Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + buf.len() > self.max {
            return Err(std::io::Error::other(format!(
                "larger than {} bytes",
                self.max
            )));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// S3 reports multipart checksums as `<base64>-<parts>`: a checksum of checksums, not of the body.
fn full_object_checksum(value: Option<&str>) -> Option<String> {
    value.filter(|v| !v.contains('-')).map(str::to_string)
}

fn status<E>(err: &SdkError<E, HttpResponse>) -> Option<u16> {
    err.raw_response().map(|r| r.status().as_u16())
}

/// An S3 error in words an operator acts on. HEAD answers carry no error code, only a status. A
/// denial names the action and the object's ARN, as the instance role's policy spells them, and
/// the account the bucket must belong to (S3 answers 403 as well when another account owns it).
fn explain<E>(
    err: &SdkError<E, HttpResponse>,
    uri: &S3Uri,
    owner: &str,
    pinned: bool,
) -> anyhow::Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let code = match err {
        SdkError::ServiceError(e) => e.err().code(),
        _ => None,
    };
    let what = match (code, status(err)) {
        (Some("NoSuchKey" | "NotFound"), _) | (None, Some(404)) => return anyhow!(Missing),
        (Some("NoSuchBucket"), _) => "no such bucket (NoSuchBucket)",
        // S3 answers a throttled HEAD with 503 and no body (a HEAD has none): no error code
        // to read, but the same "slow down" as a GET's `SlowDown`.
        (None, Some(503)) => "SlowDown (HTTP 503 without a body: S3 throttles this request rate)",
        (Some("NoSuchVersion"), _) => {
            "no such version: the pinned version_id is gone (NoSuchVersion)"
        }
        (Some("AccessDenied"), _) | (None, Some(403)) => {
            let action = match pinned {
                true => "s3:GetObjectVersion",
                false => "s3:GetObject",
            };
            let arn = format!("arn:aws:s3:::{}/{}", uri.bucket, uri.key);
            return anyhow!(
                "access denied (AccessDenied): the bucket must belong to account {owner} (the expected owner), and the instance role needs {action} on {arn} (`kicky-agent iam-policy` prints the policy)"
            );
        }
        _ => return anyhow!(super::describe(err)),
    };
    anyhow!("{what}")
}
