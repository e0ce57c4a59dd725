//! The release store in S3, and who the caller is. Under `release.store` (`s3://bucket/prefix/`): each manifest at
//! `releases/<id>.json`, written once (a conditional put: never overwritten), and the pointer
//! `promoted.json`, the one object a promote rewrites and each watch HEADs.

use anyhow::{anyhow, bail, Context, Result};

use super::s3::{self, ObjectStore, S3Store};
use crate::config::types::S3Uri;
use crate::config::ReleaseSettings;
use crate::inputs::ReleaseObjects;
use crate::release::fleet::{self, Record};
use crate::release::signature::{self, Signature};
use crate::release::{Manifest, Pointer, ReleaseId, SCHEMA};

/// A manifest lists names, versions and digests: far below this, whatever the bucket holds.
const MAX_MANIFEST: usize = 4 << 20;
const MAX_POINTER: usize = 64 << 10;
/// A fleet record is a few hundred bytes.
const MAX_RECORD: usize = 16 << 10;

/// Where the releases of a config are.
pub struct Store<'a, S> {
    pub s3: &'a S,
    pub at: &'a ReleaseSettings,
}

impl<S: ObjectStore> Store<'_, S> {
    fn owner(&self) -> Option<&str> {
        self.at.expected_owner.as_deref()
    }

    pub fn manifest_uri(&self, id: &ReleaseId) -> S3Uri {
        ReleaseObjects::of(self.at).manifest(id.as_str())
    }

    /// The promoted pointer's object: the watch's marker.
    pub fn pointer_uri(&self) -> S3Uri {
        pointer_uri(self.at)
    }

    /// Where release `id`'s signature is, beside its manifest.
    pub fn signature_uri(&self, id: &ReleaseId) -> S3Uri {
        self.at.store.object(&format!("releases/{id}.sig"))
    }

    /// The release `id`: an error naming it when the store does not have it. With
    /// `release.public_key`, only a release signed by that key: checked offline, before its
    /// manifest is read.
    pub async fn manifest(&self, id: &ReleaseId) -> Result<Manifest> {
        let uri = self.manifest_uri(id);
        let read = s3::read_small(self.s3, &uri, self.owner(), None, MAX_MANIFEST);
        let signature = async {
            match &self.at.public_key {
                Some(_) => {
                    let uri = self.signature_uri(id);
                    s3::read_small(self.s3, &uri, self.owner(), None, MAX_POINTER).await
                }
                None => Ok(None),
            }
        };
        let (read, signature) = futures::join!(read, signature);
        let (bytes, _) = read
            .with_context(|| format!("failed to read release {id}"))?
            .ok_or_else(|| anyhow!("no release {id} in {} (no {uri})", self.at.store))?;
        if let Some(key) = &self.at.public_key {
            let signature = signature
                .with_context(|| format!("failed to read the signature of release {id}"))?;
            let signature = signature.as_ref().map(|(bytes, _)| bytes.as_slice());
            crate::release::signature::verify(key, id, &bytes, signature)?;
        }
        Manifest::from_json(&bytes, id)
    }

    /// The promoted pointer; `None` when nothing was ever promoted.
    pub async fn promoted(&self) -> Result<Option<Pointer>> {
        let uri = self.pointer_uri();
        let read = s3::read_small(self.s3, &uri, self.owner(), None, MAX_POINTER)
            .await
            .context("failed to read the promoted release's pointer")?;
        read.map(|(bytes, _)| Pointer::from_json(&bytes, &uri))
            .transpose()
    }

    /// The promoted release: an error when none is.
    pub async fn promoted_manifest(&self) -> Result<(Pointer, Manifest)> {
        let pointer = self.promoted().await?.ok_or_else(|| {
            anyhow!(
                "no release is promoted in {} (release.store): run `kicky-agent release create` and `kicky-agent release promote ID`",
                self.at.store
            )
        })?;
        let manifest = self.manifest(&pointer.release).await?;
        Ok((pointer, manifest))
    }
}

impl Store<'_, S3Store> {
    /// Writes a new release; never replaces one (S3's `If-None-Match: *`).
    pub async fn put_new(&self, manifest: &Manifest, signature: Option<&Signature>) -> Result<()> {
        let id = &manifest.id;
        let uri = self.manifest_uri(id);
        let written = self
            .s3
            .put(&uri, self.owner(), manifest.to_json(), true)
            .await
            .with_context(|| format!("failed to write release {id}"))?;
        if !written {
            bail!("release {id} already exists at {uri}: not overwritten");
        }
        if let Some(signature) = signature {
            let uri = self.signature_uri(id);
            let written = self
                .s3
                .put(&uri, self.owner(), signature.to_json(), true)
                .await
                .with_context(|| format!("failed to write the signature of release {id}"))?;
            if !written {
                bail!("the signature of release {id} already exists at {uri}: not overwritten");
            }
        }
        Ok(())
    }

    /// Makes `id` the promoted release (after checking the store has it and it reads).
    pub async fn promote(&self, id: &ReleaseId, by: &str) -> Result<Pointer> {
        self.manifest(id).await?;
        let pointer = Pointer {
            schema: SCHEMA,
            release: id.clone(),
            promoted: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            by: by.to_string(),
        };
        let mut body = serde_json::to_vec_pretty(&pointer).expect("a pointer serializes");
        body.push(b'\n');
        self.s3
            .put(&self.pointer_uri(), self.owner(), body, false)
            .await
            .with_context(|| format!("failed to promote release {id}"))?;
        Ok(pointer)
    }

    /// The ids of the releases in the store, oldest first (ids sort by time). Keys under
    /// `releases/` that are no release id are skipped: the listing never decides what runs.
    pub async fn ids(&self) -> Result<Vec<ReleaseId>> {
        let prefix = ReleaseObjects::of(self.at).manifests.key;
        let keys = self
            .s3
            .list(&self.at.store.bucket, &prefix, self.owner())
            .await?;
        let mut ids: Vec<ReleaseId> = keys
            .iter()
            .filter_map(|k| k.strip_prefix(&prefix)?.strip_suffix(".json"))
            .filter_map(|id| ReleaseId::parse(id).ok())
            .collect();
        ids.sort();
        Ok(ids)
    }
}

impl Store<'_, S3Store> {
    /// Writes the fleet record of the caller `user_id` (its own key: see [`fleet`]).
    pub async fn put_record(&self, user_id: &str, record: &Record) -> Result<()> {
        let uri = self.at.store.object(&fleet::record_key(user_id)?);
        self.s3
            .put(&uri, self.owner(), record.to_json(), false)
            .await
            .with_context(|| format!("failed to write this instance's fleet record {uri}"))?;
        Ok(())
    }

    /// Every instance's fleet record (instance, record), and a line for each object under
    /// `fleet/` that is not one (skipped: the view never trusts what it cannot read).
    pub async fn records(&self) -> Result<(Vec<(String, Record)>, Vec<String>)> {
        use futures::StreamExt;
        let prefix = self.at.store.object(fleet::PREFIX).key;
        let keys = self
            .s3
            .list(&self.at.store.bucket, &prefix, self.owner())
            .await
            .context("failed to list the fleet records")?;
        let base = self.at.store.prefix.clone();
        let reads = keys.into_iter().map(|key| {
            let uri = S3Uri {
                bucket: self.at.store.bucket.clone(),
                key: key.clone(),
            };
            let instance = key
                .strip_prefix(&base)
                .and_then(fleet::instance_of)
                .map(str::to_string);
            async move {
                let Some(instance) = instance else {
                    return Some(Err(format!("{uri}: not a fleet record's key (skipped)")));
                };
                match s3::read_small(self.s3, &uri, self.owner(), None, MAX_RECORD).await {
                    Ok(Some((bytes, _))) => Some(
                        Record::from_json(&bytes, &uri.to_string())
                            .map(|r| (instance, r))
                            .map_err(|e| format!("{e:#} (skipped)")),
                    ),
                    // Deleted since the listing.
                    Ok(None) => None,
                    Err(e) => Some(Err(format!("{uri}: {e:#} (skipped)"))),
                }
            }
        });
        let read: Vec<_> = futures::stream::iter(reads)
            .buffer_unordered(32)
            .filter_map(|r| async { r })
            .collect()
            .await;
        let (mut records, mut problems) = (Vec::new(), Vec::new());
        for r in read {
            match r {
                Ok(r) => records.push(r),
                Err(p) => problems.push(p),
            }
        }
        problems.sort();
        Ok((records, problems))
    }
}

pub fn pointer_uri(at: &ReleaseSettings) -> S3Uri {
    ReleaseObjects::of(at).pointer
}

/// Who runs a command, as STS says.
#[derive(Debug, Clone)]
pub struct Caller {
    pub arn: String,
    pub account: String,
    /// IAM's `aws:userid`: `<role id>:<session name>` for a role session (on EC2, the session
    /// is named after the instance).
    pub user_id: String,
}

/// The caller's identity (STS GetCallerIdentity): a manifest's `by`, and off EC2 the account
/// that must own the buckets.
pub async fn caller(config: &aws_config::SdkConfig) -> Result<Caller> {
    let out = aws_sdk_sts::Client::new(config)
        .get_caller_identity()
        .send()
        .await
        .map_err(|e| anyhow!(super::describe(&e)))
        .context("failed to ask STS who the caller is (GetCallerIdentity)")?;
    Ok(Caller {
        arn: out.arn().unwrap_or_default().to_string(),
        account: out.account().unwrap_or_default().to_string(),
        user_id: out.user_id().unwrap_or_default().to_string(),
    })
}

/// Signs release `id`'s manifest (its exact bytes) with the KMS key `key` (ECC_NIST_P256,
/// SIGN_VERIFY): KMS Sign of the short statement that names them, as a raw message.
pub async fn sign(
    config: &aws_config::SdkConfig,
    key: &str,
    id: &ReleaseId,
    manifest: &[u8],
) -> Result<Signature> {
    use aws_sdk_kms::types::{MessageType, SigningAlgorithmSpec};
    let out = aws_sdk_kms::Client::new(config)
        .sign()
        .key_id(key)
        .message(signature::statement(id, manifest).into())
        .message_type(MessageType::Raw)
        .signing_algorithm(SigningAlgorithmSpec::from(signature::ALGORITHM))
        .send()
        .await
        .map_err(|e| anyhow!(super::describe(&e)))
        .with_context(|| format!("failed to sign release {id} with KMS key {key} (kms:Sign, a key of spec ECC_NIST_P256)"))?;
    let der = out
        .signature()
        .with_context(|| format!("KMS returned no signature for release {id}"))?;
    let arn = out.key_id().unwrap_or(key).to_string();
    Ok(Signature::new(id, manifest, arn, der.as_ref()))
}
