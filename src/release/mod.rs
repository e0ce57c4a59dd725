//! Releases: what an instance runs, named and pinned. A release manifest lists every input of a
//! sync at one version (each parameter by version, each secret by version id, each S3 file by
//! version id and SHA-256, each image by digest, the compose file by digest), never a value. It
//! is written once under `release.store` and never changed; one small pointer object names the
//! promoted release, which a plain sync (a new instance, the daemon's watch) applies.
//!
//! The manifest's schema is [`Manifest`] (version [`SCHEMA`]); docs/operator-guide.md ("Releases
//! and fleet rollouts") shows one. This module is the value, with no I/O; the store in S3 is
//! [`crate::aws::releases`], and `release create` (the latest of every input, pinned) is
//! [`crate::sync::pin`].

pub mod fleet;
pub mod signature;

use std::collections::BTreeMap;
use std::fmt;

use anyhow::{anyhow, bail, Result};
use serde::{Deserialize, Serialize};

use crate::config::types::S3Uri;
use crate::config::Settings;
use crate::error::input_error;

/// The manifest schema this agent writes and reads. A manifest of a later schema is refused
/// (the agent is older than the release), never half read.
pub const SCHEMA: u32 = 1;

/// A release's id: its creation time (UTC, to the millisecond) and 6 random hex digits, so ids
/// sort by time and two releases created in the same millisecond differ:
/// `20261207T163000123Z-3f9a1c`. It ends
/// up in an S3 key and on command lines, so nothing else is accepted.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReleaseId(String);

impl ReleaseId {
    pub fn parse(s: &str) -> Result<ReleaseId, String> {
        match crate::config::types::is_release_id(s) {
            true => Ok(ReleaseId(s.to_string())),
            false => Err(format!(
                "{:?} is not a release id (like 20261207T163000123Z-3f9a1c)",
                s.chars().take(80).collect::<String>()
            )),
        }
    }

    /// A new id for a release created at `at`.
    pub fn new(at: std::time::SystemTime) -> ReleaseId {
        let time = humantime::format_rfc3339_millis(at).to_string();
        let stamp: String = time
            .chars()
            .filter(|c| !matches!(c, '-' | ':' | '.'))
            .collect();
        ReleaseId(format!("{stamp}-{:06x}", fastrand::u32(..0x0100_0000)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ReleaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for ReleaseId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ReleaseId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ReleaseId::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// One release: every input of a sync, pinned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub schema: u32,
    pub id: ReleaseId,
    /// When it was created (RFC 3339, UTC).
    pub created: String,
    /// Who created it: the caller's ARN (STS GetCallerIdentity).
    pub by: String,
    /// The release promoted when it was created.
    pub parent: Option<ReleaseId>,
    #[serde(default)]
    pub note: String,
    /// The config's `project`: a release is applied to the project it was made for only.
    pub project: String,
    /// Each parameter read (by name, by a `path:` source's path) → its version.
    pub parameters: BTreeMap<String, i64>,
    /// Each Secrets Manager secret (as the config names it, `@stage` when not `AWSCURRENT`) →
    /// its version id.
    pub secrets: BTreeMap<String, String>,
    /// Each S3 file (`s3://bucket/key`) → its version and content.
    pub files: BTreeMap<String, PinnedFile>,
    /// The compose file, as read before interpolation.
    pub compose: Option<PinnedCompose>,
    /// Each image as the compose file names it (interpolated) → its digest in its registry
    /// (`sha256:…`; a multi-platform image's is its index's).
    pub images: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinnedFile {
    pub version_id: String,
    /// Hex SHA-256 of the object's content.
    pub sha256: String,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinnedCompose {
    /// Hex SHA-256 of the compose file's text.
    pub sha256: String,
}

impl Manifest {
    /// Reads a manifest, refusing one of a later schema, one whose id is not `expected`, or a
    /// malformed one (its bytes come from the bucket: whoever can write there).
    pub fn from_json(bytes: &[u8], expected: &ReleaseId) -> Result<Manifest> {
        let what = || format!("release {expected}");
        let value: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|e| anyhow!("{}: the manifest is not JSON: {e}", what()))?;
        match value.get("schema").and_then(serde_json::Value::as_u64) {
            Some(n) if n == u64::from(SCHEMA) => {}
            Some(n) => bail!(
                "{}: manifest schema {n}; this agent reads schema {SCHEMA} (upgrade the agent)",
                what()
            ),
            None => bail!("{}: the manifest has no schema number", what()),
        }
        let manifest: Manifest = serde_json::from_value(value)
            .map_err(|e| anyhow!("{}: the manifest does not read: {e}", what()))?;
        if &manifest.id != expected {
            bail!(
                "{}: the manifest says it is release {}",
                what(),
                manifest.id
            );
        }
        Ok(manifest)
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut text = serde_json::to_vec_pretty(self).expect("a manifest serializes");
        text.push(b'\n');
        text
    }

    /// `settings` with every S3 file pinned to this release's version. A configured file the
    /// release does not pin is an input error: the release was made with another config.
    pub fn pin_settings(&self, settings: &Settings) -> Result<Settings> {
        self.check_project(settings)?;
        let mut pinned = settings.clone();
        for file in &mut pinned.files {
            let source = file.source.to_string();
            let pin = self
                .files
                .get(&source)
                .ok_or_else(|| self.not_pinned(format!("file {source}")))?;
            file.version_id = Some(pin.version_id.clone());
        }
        Ok(pinned)
    }

    fn check_project(&self, settings: &Settings) -> Result<()> {
        if self.project != settings.project {
            return Err(input_error(format!(
                "release {} is for project {}, not {}",
                self.id, self.project, settings.project
            )));
        }
        Ok(())
    }

    /// The error for an input the config reads and the release does not pin.
    pub fn not_pinned(&self, what: String) -> anyhow::Error {
        input_error(format!(
            "release {} does not pin {what}: the config reads it, so the release was created with another config (create a new release with this one)",
            self.id
        ))
    }

    /// Checks a file fetched for this release is the content the release pinned.
    pub fn check_file(&self, source: &str, sha256: &str) -> Result<()> {
        let pin = self
            .files
            .get(source)
            .ok_or_else(|| self.not_pinned(format!("file {source}")))?;
        if pin.sha256 != sha256 {
            return Err(input_error(format!(
                "{source} (version {}) has SHA-256 {sha256}, not the {} release {} pinned",
                pin.version_id, pin.sha256, self.id
            )));
        }
        Ok(())
    }

    /// Checks the compose file (its text, before interpolation) is the one the release pinned.
    pub fn check_compose(&self, text: &str) -> Result<()> {
        let sha256 = sha256_hex(text.as_bytes());
        match &self.compose {
            Some(pin) if pin.sha256 == sha256 => Ok(()),
            Some(pin) => Err(input_error(format!(
                "the compose file has SHA-256 {sha256}, not the {} release {} pinned (a compose file that is not fetched from S3 must not change after `release create`)",
                pin.sha256, self.id
            ))),
            None => Err(self.not_pinned("the compose file".to_string())),
        }
    }

    /// Runs every service of `project` on the digest the release pinned for its image (as the
    /// compose file names it: through the instance's mirror, when it has one).
    pub fn pin_images(&self, project: &mut crate::compose::Project) -> Result<()> {
        for service in project.services.values_mut() {
            let written = service.written_image();
            let digest = self
                .images
                .get(written)
                .ok_or_else(|| self.not_pinned(format!("image {written}")))?;
            service.image = by_digest(&service.image, digest)?;
        }
        Ok(())
    }
}

/// `reference` pulled by `digest`: `registry/repository@sha256:…` (the tag dropped: the digest
/// alone says what runs).
pub fn by_digest(reference: &str, digest: &str) -> Result<String> {
    let image = crate::compose::reference::ImageRef::parse(reference).map_err(|e| anyhow!(e))?;
    let valid = digest
        .strip_prefix("sha256:")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|c| c.is_ascii_hexdigit()));
    if !valid {
        bail!("{digest:?} (the digest pinned for image {reference}) is not sha256:<64 hex digits>");
    }
    Ok(format!("{}@{digest}", image.from_image()))
}

pub use crate::digest::sha256_hex;

/// The promoted pointer: which release a plain sync applies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pointer {
    pub schema: u32,
    pub release: ReleaseId,
    /// When it was promoted, and by whom (the caller's ARN).
    pub promoted: String,
    pub by: String,
}

impl Pointer {
    pub fn from_json(bytes: &[u8], at: &S3Uri) -> Result<Pointer> {
        let pointer: Pointer = serde_json::from_slice(bytes)
            .map_err(|e| anyhow!("{at} is not a release pointer: {e}"))?;
        if pointer.schema != SCHEMA {
            bail!(
                "{at}: pointer schema {}; this agent reads schema {SCHEMA} (upgrade the agent)",
                pointer.schema
            );
        }
        Ok(pointer)
    }
}

/// What differs between two releases, in names and versions (never a value), one line each.
pub fn diff(a: &Manifest, b: &Manifest) -> Vec<String> {
    let mut lines = Vec::new();
    changes(&mut lines, "parameter", &a.parameters, &b.parameters, |v| {
        v.to_string()
    });
    changes(&mut lines, "secret", &a.secrets, &b.secrets, |v| v.clone());
    changes(&mut lines, "file", &a.files, &b.files, |f| {
        format!("version {} sha256 {}", f.version_id, short(&f.sha256))
    });
    changes(&mut lines, "image", &a.images, &b.images, |d| d.clone());
    let compose = |m: &Manifest| m.compose.as_ref().map(|c| c.sha256.clone());
    if compose(a) != compose(b) {
        let show = |s: Option<String>| s.map_or("none".to_string(), |s| short(&s).to_string());
        lines.push(format!(
            "compose file: sha256 {} -> {}",
            show(compose(a)),
            show(compose(b))
        ));
    }
    lines
}

fn short(hex: &str) -> &str {
    &hex[..hex.len().min(12)]
}

fn changes<V: PartialEq>(
    lines: &mut Vec<String>,
    what: &str,
    a: &BTreeMap<String, V>,
    b: &BTreeMap<String, V>,
    show: impl Fn(&V) -> String,
) {
    for (name, old) in a {
        match b.get(name) {
            Some(new) if new == old => {}
            Some(new) => lines.push(format!("{what} {name}: {} -> {}", show(old), show(new))),
            None => lines.push(format!("{what} {name}: {} -> (none)", show(old))),
        }
    }
    for (name, new) in b.iter().filter(|(n, _)| !a.contains_key(*n)) {
        lines.push(format!("{what} {name}: (none) -> {}", show(new)));
    }
}

#[cfg(test)]
mod tests;
