//! What a config reads remotely, listed once: the parameters it reads by name (and why), the
//! parameter paths, the secrets, the S3 files, the watch's marker and the release store's
//! objects. A pure function of the settings, with no I/O.
//!
//! Every part of the agent that reads, watches, checks, pins or authorizes these reads takes the
//! list from here rather than walking the config itself: the sync (`sync::params` batches the
//! names), the daemon's watch (`daemon::watch`), `iam-policy` (`iam`), `doctor` and
//! `release create` (`sync::pin`), and the registries' credentials (`engine::registry`). A new
//! kind of source is then added in one place, and none of them can forget it.

use crate::config::types::{ParamPath, S3Uri, SecretId, VersionStage};
use crate::config::{Credential, ParamSource, Registry, RegistryAuth, ReleaseSettings, Settings};
use crate::config::{FileSettings, Source};

/// Where, under `release.store`, the promoted pointer is: the one object a promote rewrites and
/// each watch HEADs.
pub const POINTER: &str = "promoted.json";
/// Where, under `release.store`, the manifests are: `releases/<id>.json`.
pub const MANIFESTS: &str = "releases/";

/// Why a parameter is read by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParameterUse {
    /// An env source whose value is a dotenv document.
    Document,
    /// An env source that is one variable.
    Single,
    /// A registry's password.
    RegistryPassword,
    /// A registry's username, when it is read from a parameter.
    RegistryUsername,
}

impl ParameterUse {
    /// Whether the parameter is one of the env file's sources (a release pins these).
    pub fn is_env(self) -> bool {
        matches!(self, ParameterUse::Document | ParameterUse::Single)
    }
}

/// A parameter read by name (GetParameters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parameter<'a> {
    pub name: &'a str,
    pub used: ParameterUse,
}

/// The parameters under a path (GetParametersByPath; with a release, by name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Path<'a> {
    pub path: &'a ParamPath,
    pub recursive: bool,
}

/// A Secrets Manager secret, at its current version or at a version stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Secret<'a> {
    pub id: &'a SecretId,
    pub stage: Option<&'a VersionStage>,
}

impl Secret<'_> {
    /// The stage it is read at (`AWSCURRENT` unless the config names another).
    pub fn stage_name(&self) -> &str {
        self.stage.map_or(VersionStage::CURRENT, |s| s.as_str())
    }

    /// Read at its current version: what BatchGetSecretValue serves.
    pub fn is_current(&self) -> bool {
        self.stage_name() == VersionStage::CURRENT
    }

    /// The key its version is remembered under: see [`secret_key`].
    pub fn key(&self) -> String {
        secret_key(self.id, self.stage)
    }
}

/// The key a secret's version is remembered under, beside the parameters' names (which never
/// start with `secret:`): `secret:<id>`, or `secret:<id>@<stage>` for a stage other than the
/// current one.
pub fn secret_key(id: &SecretId, stage: Option<&VersionStage>) -> String {
    match stage.map(VersionStage::as_str) {
        Some(stage) if stage != VersionStage::CURRENT => format!("secret:{}@{stage}", id.as_str()),
        _ => format!("secret:{}", id.as_str()),
    }
}

/// An S3 object, in a bucket of the expected owner (`None`: the instance's account).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Object<'a> {
    pub uri: &'a S3Uri,
    pub owner: Option<&'a str>,
    /// The version the config pins it to (a release pins every file).
    pub version: Option<&'a str>,
}

/// The release store's objects (`release.store`): the promoted pointer, and the manifests under
/// [`MANIFESTS`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseObjects<'a> {
    pub pointer: S3Uri,
    /// The manifests' common prefix, as an object whose key ends in `/`.
    pub manifests: S3Uri,
    /// The fleet records' common prefix (`fleet/`), as an object whose key ends in `/`.
    pub fleet: S3Uri,
    pub owner: Option<&'a str>,
}

impl<'a> ReleaseObjects<'a> {
    pub fn of(at: &'a ReleaseSettings) -> ReleaseObjects<'a> {
        ReleaseObjects {
            pointer: at.store.object(POINTER),
            manifests: at.store.object(MANIFESTS),
            fleet: at.store.object(crate::release::fleet::PREFIX),
            owner: at.expected_owner.as_deref(),
        }
    }

    /// The manifest of the release `id`.
    pub fn manifest(&self, id: &str) -> S3Uri {
        S3Uri {
            bucket: self.manifests.bucket.clone(),
            key: format!("{}{id}.json", self.manifests.key),
        }
    }
}

/// Everything a config reads remotely. Each list keeps the config's order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inputs<'a> {
    /// The env file's `name:` sources, then the registries' credentials.
    pub parameters: Vec<Parameter<'a>>,
    pub paths: Vec<Path<'a>>,
    pub secrets: Vec<Secret<'a>>,
    pub files: Vec<Object<'a>>,
    /// `watch.marker`: HEADed by each watch (when the daemon watches).
    pub marker: Option<Object<'a>>,
    /// `release.store`: read by every sync and each watch.
    pub release: Option<ReleaseObjects<'a>>,
}

impl<'a> Inputs<'a> {
    /// What `settings` reads remotely.
    pub fn of(settings: &'a Settings) -> Inputs<'a> {
        let sources = settings.env.as_ref().map_or(&[][..], |e| &e.sources);
        let mut inputs = Inputs::of_sources(sources);
        inputs
            .parameters
            .extend(Inputs::of_registries(&settings.registries).parameters);
        inputs.files = settings.files.iter().map(file).collect();
        inputs.marker = settings.watch_marker.as_ref().map(|uri| Object {
            uri,
            owner: settings.watch_marker_owner.as_deref(),
            version: None,
        });
        inputs.release = settings.release.as_ref().map(ReleaseObjects::of);
        inputs
    }

    /// What the env file's `sources` read: parameters by name, paths and secrets.
    pub fn of_sources(sources: &'a [Source]) -> Inputs<'a> {
        let mut inputs = Inputs::default();
        for source in sources {
            match &source.from {
                ParamSource::Document { name } => inputs.parameters.push(Parameter {
                    name: name.as_str(),
                    used: ParameterUse::Document,
                }),
                ParamSource::Single { name, .. } => inputs.parameters.push(Parameter {
                    name: name.as_str(),
                    used: ParameterUse::Single,
                }),
                ParamSource::Path { path, recursive } => inputs.paths.push(Path {
                    path,
                    recursive: *recursive,
                }),
                ParamSource::Secret { id, stage, .. } => inputs.secrets.push(Secret {
                    id,
                    stage: stage.as_ref(),
                }),
            }
        }
        inputs
    }

    /// The parameters the registries' credentials are read from: each password, and each
    /// username given as a parameter.
    pub fn of_registries(registries: &'a [Registry]) -> Inputs<'a> {
        let mut inputs = Inputs::default();
        for registry in registries {
            if let RegistryAuth::Password { username, password } = &registry.auth {
                inputs.parameters.push(Parameter {
                    name: password.as_str(),
                    used: ParameterUse::RegistryPassword,
                });
                if let Credential::Parameter { parameter } = username {
                    inputs.parameters.push(Parameter {
                        name: parameter.as_str(),
                        used: ParameterUse::RegistryUsername,
                    });
                }
            }
        }
        inputs
    }

    /// The names of the parameters read by name, in order (repeats kept).
    pub fn parameter_names(&self) -> impl Iterator<Item = &'a str> + '_ {
        self.parameters.iter().map(|p| p.name)
    }

    /// Whether anything is read from Parameter Store.
    pub fn reads_ssm(&self) -> bool {
        !self.parameters.is_empty() || !self.paths.is_empty()
    }
}

fn file(file: &FileSettings) -> Object<'_> {
    Object {
        uri: &file.source,
        owner: file.expected_owner.as_deref(),
        version: file.version_id.as_deref(),
    }
}

#[cfg(test)]
mod tests;
