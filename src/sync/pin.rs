//! `release create` (pinning): every input of the config resolved at its latest version, into a manifest.
//! It reads what a sync reads (the values too, in memory only: the compose file is interpolated
//! with them to know its images), and keeps only names, versions and digests.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Result};

use crate::aws::releases::Caller;
use crate::aws::s3::{Fetched, ObjectRequest, ObjectStore};
use crate::aws::ssm::ParameterStore;
use crate::compose::reference::ImageRef;
use crate::config::Settings;
use crate::digest::{hex, HashingWriter};
use crate::engine::docker::DockerEngine;
use crate::engine::registry::Registries;
use crate::inputs::Object;
use crate::release::{Manifest, PinnedCompose, PinnedFile, ReleaseId, SCHEMA};
use crate::sync::params::Version;

/// What a new release is made from, besides the config.
pub struct Resolvers<'a, P, O> {
    pub ssm: &'a P,
    pub s3: &'a O,
    /// Asked for each image's digest; `None` when the config has no compose file.
    pub engine: Option<&'a DockerEngine>,
    pub registries: &'a Registries,
    pub caller: &'a Caller,
    pub parent: Option<ReleaseId>,
    pub note: String,
}

/// Resolves the latest version of every input of `settings` into a new release (not yet
/// stored).
pub async fn resolve<P: ParameterStore, O: ObjectStore>(
    settings: &Settings,
    inputs: Resolvers<'_, P, O>,
) -> Result<Manifest> {
    let env = async {
        match &settings.env {
            Some(env) => crate::sync::desired_env(inputs.ssm, env, None)
                .await
                .map(Some),
            None => Ok(None),
        }
    };
    let objects = crate::inputs::Inputs::of(settings).files;
    let files = futures::future::try_join_all(objects.iter().map(|o| pin_file(inputs.s3, o)));
    let (env, files) = futures::try_join!(env, files)?;
    let mut parameters = BTreeMap::new();
    let mut secrets = BTreeMap::new();
    for (key, version) in env.as_ref().map(|e| e.versions.clone()).unwrap_or_default() {
        match (key.strip_prefix("secret:"), version) {
            (Some(secret), Version::Id(id)) => {
                secrets.insert(secret.to_string(), id);
            }
            (None, Version::Number(n)) => {
                parameters.insert(key, n);
            }
            (_, version) => bail!("{key}: unexpected version {version}"),
        }
    }
    // The compose file as the instance will read it: the fetched files in place of the disk's.
    let texts: BTreeMap<PathBuf, Vec<u8>> = settings
        .files
        .iter()
        .zip(&files)
        .filter_map(|(f, (_, body))| Some((f.path.clone(), body.clone()?)))
        .collect();
    let pending = |path: &std::path::Path| -> Option<Result<String>> {
        let bytes = texts.get(path)?;
        Some(
            String::from_utf8(bytes.clone())
                .map_err(|_| anyhow!("{} (fetched) is not UTF-8 text", path.display())),
        )
    };
    let project =
        crate::sync::project_of(settings, env.as_ref().map(|e| e.text.as_str()), &pending)?;
    let mut images = BTreeMap::new();
    let mut compose = None;
    if let Some((project, text)) = &project {
        compose = Some(PinnedCompose {
            sha256: crate::release::sha256_hex(text.as_bytes()),
        });
        let engine = inputs
            .engine
            .ok_or_else(|| anyhow!("no Docker engine to ask the registries for digests"))?;
        // Pinned under the name the compose file gives, asked of the registry the instances
        // pull from (a mirror, when the config has one for it).
        for service in project.services.values() {
            if images.contains_key(service.written_image()) {
                continue;
            }
            let image = ImageRef::parse(&service.image).map_err(|e| anyhow!(e))?;
            let digest = match &image.digest {
                Some(digest) => digest.clone(),
                None => {
                    let credentials = inputs.registries.credentials(&image.registry).await?;
                    engine.registry_digest(&service.image, credentials).await?
                }
            };
            images.insert(service.written_image().to_string(), digest);
        }
    }
    let created = std::time::SystemTime::now();
    Ok(Manifest {
        schema: SCHEMA,
        id: ReleaseId::new(created),
        created: humantime::format_rfc3339_seconds(created).to_string(),
        by: inputs.caller.arn.clone(),
        parent: inputs.parent,
        note: inputs.note,
        project: settings.project.clone(),
        parameters,
        secrets,
        files: settings
            .files
            .iter()
            .zip(files)
            .map(|(f, (pin, _))| (f.source.to_string(), pin))
            .collect(),
        compose,
        images,
    })
}

/// The text files a compose file may read are kept in memory (its `env_file`s, the compose file
/// itself); a larger object is only hashed.
const KEEP_UP_TO: u64 = crate::atomic::MAX_TEXT;

/// Pins a file at the version S3 serves now: its version id (the bucket must be versioned, or a
/// release could not bring it back) and its content's SHA-256.
async fn pin_file(
    s3: &impl ObjectStore,
    file: &Object<'_>,
) -> Result<(PinnedFile, Option<Vec<u8>>)> {
    let owner = file.owner;
    let meta = s3.head(file.uri, owner, file.version).await?;
    let version_id = match meta.version_id.as_deref() {
        Some(v) if !v.is_empty() && v != "null" => v.to_string(),
        _ => bail!(
            "bucket {} has no versioning (S3 gave {} no version id): a release pins each file by version, so turn versioning on (aws s3api put-bucket-versioning --bucket {} --versioning-configuration Status=Enabled) and upload the file again",
            file.uri.bucket,
            file.uri,
            file.uri.bucket
        ),
    };
    let mut sink = HashingWriter::new(KeepUpTo(Some(Vec::new())));
    let req = ObjectRequest {
        uri: file.uri,
        owner,
        version_id: Some(&version_id),
        if_none_match: None,
    };
    match s3.get(req, &mut sink).await? {
        Fetched::Written(_) => {}
        Fetched::NotModified => bail!("{}: S3 answered 304 to an unconditional GET", file.uri),
    }
    let (size, digest, KeepUpTo(kept)) = sink.finish();
    let pin = PinnedFile {
        version_id,
        sha256: hex(&digest),
        size,
    };
    Ok((pin, kept))
}

/// Keeps what is written, until it grows past [`KEEP_UP_TO`]: then nothing.
struct KeepUpTo(Option<Vec<u8>>);

impl std::io::Write for KeepUpTo {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let grown = self.0.as_ref().map_or(0, Vec::len) + buf.len();
        match &mut self.0 {
            Some(_) if grown as u64 > KEEP_UP_TO => self.0 = None,
            Some(kept) => kept.extend_from_slice(buf),
            None => {}
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
