//! In-memory Parameter Store and S3, with versions, for unit tests of a whole sync pass (see
//! `sync::tests`): what [`super::Clients`] is generic over, next to the engine's own fake
//! (`engine::fake`).

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use anyhow::{anyhow, bail, Result};
use base64::Engine as _;

use crate::aws::s3::{Fetched, Missing, ObjectMeta, ObjectRequest, ObjectStore};
use crate::aws::secrets::{SecretBatch, SecretValue};
use crate::aws::ssm::{Batch, Parameter, ParameterStore};
use crate::config::types::S3Uri;
use crate::redact::Secret;

/// Parameters, each with its history (version 1 first). No secrets.
#[derive(Default)]
pub struct FakeParams {
    params: Mutex<BTreeMap<String, Vec<String>>>,
    /// Every name (or `name:version` selector) asked for, in order.
    pub asked: Mutex<Vec<String>>,
    /// Every call fails, as when the network is down.
    pub down: AtomicBool,
}

impl FakeParams {
    /// Writes a new version of `name`; returns its number.
    pub fn put(&self, name: &str, value: &str) -> i64 {
        let mut params = self.params.lock().unwrap();
        let versions = params.entry(name.to_string()).or_default();
        versions.push(value.to_string());
        versions.len() as i64
    }

    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    fn reachable(&self) -> Result<()> {
        match self.down.load(Ordering::SeqCst) {
            true => bail!("failed to read parameters: dispatch failure (connection timed out)"),
            false => Ok(()),
        }
    }

    /// `name` (latest) or `name:version`, as GetParameters reads it.
    fn read(&self, selector: &str) -> Option<Parameter> {
        let (name, version) = match selector.split_once(':') {
            Some((name, version)) => (name, Some(version.parse::<i64>().ok()?)),
            None => (selector, None),
        };
        let params = self.params.lock().unwrap();
        let versions = params.get(name)?;
        let version = version.unwrap_or(versions.len() as i64);
        let value = versions.get(usize::try_from(version).ok()?.checked_sub(1)?)?;
        Some(Parameter {
            name: name.to_string(),
            value: Secret::new(value.clone()),
            version,
        })
    }
}

impl ParameterStore for FakeParams {
    async fn get_batch(&self, names: &[String]) -> Result<Batch> {
        self.reachable()?;
        self.asked.lock().unwrap().extend(names.iter().cloned());
        let mut batch = Batch::default();
        for name in names {
            match self.read(name) {
                Some(p) => batch.found.push(p),
                None => batch.missing.push(name.clone()),
            }
        }
        Ok(batch)
    }

    async fn get_path(&self, path: &str, recursive: bool) -> Result<Vec<Parameter>> {
        self.reachable()?;
        let prefix = format!("{}/", path.trim_end_matches('/'));
        let names: Vec<String> = self.params.lock().unwrap().keys().cloned().collect();
        Ok(names
            .iter()
            .filter(|n| n.starts_with(&prefix) && (recursive || !n[prefix.len()..].contains('/')))
            .filter_map(|n| self.read(n))
            .collect())
    }

    async fn versions(
        &self,
        names: &[String],
        _: &[(String, bool)],
    ) -> Result<BTreeMap<String, i64>> {
        self.reachable()?;
        Ok(names
            .iter()
            .filter_map(|n| self.read(n).map(|p| (n.clone(), p.version)))
            .collect())
    }

    async fn get_secrets(&self, ids: &[String]) -> Result<SecretBatch> {
        Ok(SecretBatch {
            missing: ids.to_vec(),
            ..SecretBatch::default()
        })
    }

    async fn get_secret_staged(&self, id: &str, _: &str) -> Result<SecretValue> {
        Err(anyhow!("no secret {id} in this fake"))
    }

    async fn get_secret_version(&self, id: &str, _: &str) -> Result<SecretValue> {
        Err(anyhow!("no secret {id} in this fake"))
    }

    async fn secret_version(&self, _: &str, _: &str) -> Result<Option<String>> {
        Ok(None)
    }
}

/// Objects of a versioned bucket: each `s3://bucket/key` with its versions (`v1` first). The
/// ETag is derived from the content, as S3's is.
#[derive(Default)]
pub struct FakeObjects {
    objects: Mutex<BTreeMap<String, Vec<Vec<u8>>>>,
    /// Every GET, `uri` or `uri?versionId=…`, in order.
    pub gets: Mutex<Vec<String>>,
}

impl FakeObjects {
    /// Writes a new version of the object at `uri`; returns its version id.
    pub fn put(&self, uri: &str, body: &[u8]) -> String {
        let mut objects = self.objects.lock().unwrap();
        let versions = objects.entry(uri.to_string()).or_default();
        versions.push(body.to_vec());
        format!("v{}", versions.len())
    }

    fn find(&self, uri: &S3Uri, version_id: Option<&str>) -> Result<(Vec<u8>, ObjectMeta)> {
        let objects = self.objects.lock().unwrap();
        let versions = objects
            .get(&uri.to_string())
            .ok_or_else(|| anyhow!(Missing).context(format!("{uri}")))?;
        let n = match version_id {
            Some(id) => id
                .strip_prefix('v')
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|n| (1..=versions.len()).contains(n))
                .ok_or_else(|| anyhow!("{uri}: no version {id}"))?,
            None => versions.len(),
        };
        let body = versions[n - 1].clone();
        let sha = <sha2::Sha256 as sha2::Digest>::digest(&body);
        let meta = ObjectMeta {
            etag: Some(format!("\"{}\"", &crate::release::sha256_hex(&body)[..32])),
            version_id: Some(format!("v{n}")),
            length: Some(body.len() as u64),
            sha256: Some(base64::engine::general_purpose::STANDARD.encode(sha)),
        };
        Ok((body, meta))
    }
}

impl ObjectStore for FakeObjects {
    async fn get(&self, req: ObjectRequest<'_>, sink: &mut (dyn Write + Send)) -> Result<Fetched> {
        let asked = match req.version_id {
            Some(id) => format!("{}?versionId={id}", req.uri),
            None => req.uri.to_string(),
        };
        self.gets.lock().unwrap().push(asked);
        let (body, meta) = self.find(req.uri, req.version_id)?;
        if req.if_none_match.is_some() && req.if_none_match == meta.etag.as_deref() {
            return Ok(Fetched::NotModified);
        }
        sink.write_all(&body)?;
        Ok(Fetched::Written(meta))
    }

    async fn head(
        &self,
        uri: &S3Uri,
        _: Option<&str>,
        version_id: Option<&str>,
    ) -> Result<ObjectMeta> {
        Ok(self.find(uri, version_id)?.1)
    }
}

/// The fake engine is always given to the pass ([`super::Clients::engine`]): there is none to
/// connect to.
impl super::Connect for crate::engine::fake::FakeEngine {
    async fn open() -> Result<Self> {
        bail!("no Docker Engine in a test: give the pass a fake one")
    }
}
