//! The config file as written: every key optional, unknown keys refused. One file (agent.yaml or
//! a fragment of agent.d) is read into these types alone first, so its mistakes are reported with
//! its own name and line; then the files are merged and read again as a whole.

use serde::Deserialize;

use super::types::{
    AbsolutePath, Account, AwsAccountId, Capability, DurationText, EndpointUrl, EnvKey, FileMode,
    FilePath, ParamName, ParamPath, ProjectName, RegionName, RegistryHost, RepositoryPrefix,
    S3Prefix, S3Uri, SecretId, VersionId, VersionStage,
};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub project: Option<ProjectName>,
    pub workdir: Option<AbsolutePath>,
    pub aws: Option<RawAws>,
    pub env: Option<RawEnv>,
    pub files: Option<Vec<RawFile>>,
    pub compose: Option<RawCompose>,
    pub registries: Option<Vec<RawRegistry>>,
    pub lifecycle: Option<RawLifecycle>,
    pub watch: Option<RawWatch>,
    pub release: Option<RawRelease>,
    pub metrics: Option<RawMetrics>,
    pub report: Option<RawReport>,
    /// The daemon's control socket (`kicky-agent resync` connects to it).
    pub control_socket: Option<AbsolutePath>,
    /// Absolute directories outside `workdir` that `files[].path` may write to.
    pub files_allowed_dirs: Option<Vec<AbsolutePath>>,
    /// Where the agent keeps what it last fetched (ETags, versions, hashes) and the last sync.
    pub state_dir: Option<AbsolutePath>,
    /// How long a sync waits for another sync of the same project (the daemon's, a manual one)
    /// to finish before it gives up.
    pub lock_timeout: Option<DurationText>,
    /// Whether the launch template may override this config (baked config only).
    pub overrides: Option<RawOverrides>,
}

/// Which of the launch template's overrides the agent reads: user data by default, tags only when
/// the baked config turns them on.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOverrides {
    /// The `#kicky-agent` document of the user data.
    pub user_data: Option<bool>,
    /// The instance's `kicky-agent:<key>` tags: `false` (the default), `true` (the documented
    /// allow-list), or a list of the keys they may set.
    pub tags: Option<TagsChoice>,
}

/// `overrides.tags` as written: off, on with the default allow-list, or a list of keys
/// (dotted, `*` for any list index, such as `env.parameters.*.name`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagsChoice {
    Switch(bool),
    Keys(Vec<String>),
}

impl<'de> Deserialize<'de> for TagsChoice {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TagsVisitor;
        impl<'de> serde::de::Visitor<'de> for TagsVisitor {
            type Value = TagsChoice;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("`true`, `false` or a list of keys such as [watch.interval]")
            }
            fn visit_bool<E: serde::de::Error>(self, b: bool) -> Result<TagsChoice, E> {
                Ok(TagsChoice::Switch(b))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<TagsChoice, A::Error> {
                let mut keys = Vec::new();
                while let Some(key) = seq.next_element::<String>()? {
                    super::overrides::check_tag_pattern(&key).map_err(serde::de::Error::custom)?;
                    keys.push(key);
                }
                Ok(TagsChoice::Keys(keys))
            }
        }
        d.deserialize_any(TagsVisitor)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCompose {
    pub file: Option<FilePath>,
    pub pull: Option<PullPolicy>,
    pub prune: Option<bool>,
    pub healthy_timeout: Option<DurationText>,
    /// A pull that makes no progress this long is cut and retried.
    pub pull_stall_timeout: Option<DurationText>,
    /// A pull (its retries included) that is not done in this time fails.
    pub pull_timeout: Option<DurationText>,
    /// Where the files of the compose file's `secrets:` are written (a tmpfs).
    pub secrets_dir: Option<AbsolutePath>,
    /// What the compose file may ask of the host beyond the defaults (baked config only).
    pub policy: Option<ComposePolicy>,
    /// By service name: its readiness probe, over the compose file's `x-kicky-agent.ready`.
    pub ready: Option<std::collections::BTreeMap<String, crate::config::probe::RawProbe>>,
}

/// `compose.policy`: what the compose file may ask of the host that the defaults refuse
/// (`privileged`, host namespaces, capabilities and confinement options that reach past the
/// container, binds of the host's own paths, secret files outside the workdir). Whoever writes
/// the compose file (the deploy bucket) gets only what this allows; see `compose::policy`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComposePolicy {
    /// By service name: what that service may do beyond the defaults.
    #[serde(default)]
    pub allow: std::collections::BTreeMap<String, Allowance>,
    /// When set, the only host paths (each with what is below it) that binds and `env_file`s may
    /// use, in place of the built-in list of the host's protected paths. The agent's own paths
    /// and the engine's socket stay refused unless a service's `allow` names them.
    pub binds: Option<Vec<AbsolutePath>>,
    /// Host files (or directories) outside the workdir that `secrets.*.file` may read.
    #[serde(default)]
    pub secret_files: Vec<AbsolutePath>,
}

/// What one service may do beyond the defaults of [`ComposePolicy`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Allowance {
    /// `privileged: true`.
    #[serde(default)]
    pub privileged: bool,
    /// `network_mode: host`, `pid: host`, `ipc: host`, `userns_mode: host`.
    #[serde(default)]
    pub host_namespaces: Vec<Namespace>,
    /// Capabilities of `cap_add` the defaults refuse (`ALL`, `SYS_ADMIN`...).
    #[serde(default)]
    pub cap_add: Vec<Capability>,
    /// `security_opt` entries the defaults refuse, as written (`seccomp=unconfined`).
    #[serde(default)]
    pub security_opt: Vec<String>,
    /// Host paths the service may bind (or read as an `env_file`), with what is below them.
    #[serde(default)]
    pub binds: Vec<AbsolutePath>,
}

/// A host namespace a container may share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Namespace {
    Network,
    Pid,
    Ipc,
    Userns,
}

impl Namespace {
    /// The compose key that asks for it (with the value `host`).
    pub fn key(self) -> &'static str {
        match self {
            Namespace::Network => "network_mode",
            Namespace::Pid => "pid",
            Namespace::Ipc => "ipc",
            Namespace::Userns => "userns_mode",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Namespace::Network => "network",
            Namespace::Pid => "pid",
            Namespace::Ipc => "ipc",
            Namespace::Userns => "userns",
        }
    }
}

/// Credentials for one registry: a username and password from Parameter Store, or an ECR token
/// from the instance role. With `mirror_of`, the registry also stands in for another one (an ECR
/// pull through cache in front of Docker Hub): every image of that registry is pulled from this
/// one, under `prefix`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawRegistryEntry")]
pub struct RawRegistry {
    pub server: RegistryHost,
    pub auth: RegistryAuth,
    pub mirror: Option<Mirror>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryAuth {
    Password {
        username: Credential,
        password: ParamName,
    },
    Ecr,
    /// No credentials: a mirror that serves anonymous pulls (only with `mirror_of`).
    Anonymous,
}

/// What a registry mirrors: the upstream registry, and the repository prefix the mirror keeps
/// its images under (`docker-hub`: `docker.io/library/nginx` is `<server>/docker-hub/library/nginx`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    pub of: RegistryHost,
    pub prefix: Option<RepositoryPrefix>,
}

/// A username: written in the config, or read from a parameter.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Credential {
    Parameter { parameter: ParamName },
    Literal(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegistryEntry {
    server: RegistryHost,
    username: Option<Credential>,
    password: Option<Credential>,
    ecr: Option<bool>,
    mirror_of: Option<RegistryHost>,
    prefix: Option<RepositoryPrefix>,
}

impl TryFrom<RawRegistryEntry> for RawRegistry {
    type Error = String;

    fn try_from(raw: RawRegistryEntry) -> Result<Self, String> {
        let mirror = match (raw.mirror_of, raw.prefix) {
            (Some(of), _) if of == raw.server => {
                return Err(format!(
                    "`mirror_of: {}` names the registry itself",
                    of.as_str()
                ))
            }
            (Some(of), prefix) => Some(Mirror { of, prefix }),
            (None, Some(_)) => return Err(
                "`prefix` is where a mirror keeps another registry's images: it needs `mirror_of`"
                    .into(),
            ),
            (None, None) => None,
        };
        let auth = match (raw.ecr.unwrap_or(false), raw.username, raw.password) {
            (false, None, None) if mirror.is_some() => RegistryAuth::Anonymous,
            (true, None, None) => RegistryAuth::Ecr,
            (true, _, _) => return Err("`ecr: true` takes its token from the instance role: drop `username` and `password`".into()),
            (false, Some(username), Some(Credential::Parameter { parameter })) => {
                RegistryAuth::Password { username, password: parameter }
            }
            (false, _, Some(Credential::Literal(_))) => {
                return Err("`password` must come from Parameter Store: `password: { parameter: /name }`".into())
            }
            (false, _, _) => return Err("a registry needs `username` and `password`, or `ecr: true`".into()),
        };
        Ok(RawRegistry {
            server: raw.server,
            auth,
            mirror,
        })
    }
}

/// `report`: where the report of a failed sync goes, besides the log.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReport {
    /// `s3://bucket/prefix/`: each report is written to `<prefix><caller id>/<time>.txt`.
    pub store: Option<S3Prefix>,
    /// `stdout` (the default: the unit sends it to the serial console too), `off`, or a file
    /// or device to append it to.
    pub console: Option<ConsoleChoice>,
}

/// `report.console`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsoleChoice {
    Stdout,
    Off,
    Path(std::path::PathBuf),
}

impl<'de> Deserialize<'de> for ConsoleChoice {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        match text.as_str() {
            "stdout" => Ok(ConsoleChoice::Stdout),
            "off" => Ok(ConsoleChoice::Off),
            path if path.starts_with('/') => Ok(ConsoleChoice::Path(path.into())),
            other => Err(serde::de::Error::custom(format!(
                "{other:?} is not `stdout`, `off` or an absolute path (such as /dev/ttyS0)"
            ))),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    /// Written after every sync, for node_exporter's textfile collector.
    pub textfile: Option<AbsolutePath>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWatch {
    pub interval: Option<DurationText>,
    pub apply: Option<WatchApply>,
    /// A release that failed is held this long (doubled per failed try) before the daemon tries
    /// it again on its own.
    pub retry_failed_after: Option<DurationText>,
    /// One S3 object whose ETag changes with every release: each watch asks only for it (a full
    /// check when it changed, and at least every `full_every`).
    pub marker: Option<S3Uri>,
    /// The AWS account that must own the marker's bucket (default: the instance's).
    pub marker_expected_owner: Option<AwsAccountId>,
    pub full_every: Option<DurationText>,
}

/// Releases: where their manifests and the promoted pointer are kept.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRelease {
    pub store: Option<S3Prefix>,
    /// The AWS account that must own the store's bucket (default: the instance's).
    pub expected_owner: Option<AwsAccountId>,
    /// The KMS key `release create` signs releases with (an id, ARN or alias).
    pub signing_key: Option<String>,
    /// The signing key's public key (PEM): with it, an instance applies only releases it signed.
    pub public_key: Option<String>,
    /// The release a plain sync applies instead of the promoted one (the launch template's user
    /// data pins it: an AMI rollout by instance refresh).
    pub pin: Option<String>,
}

/// What the daemon does with a change it notices: sync it, or only report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WatchApply {
    Auto,
    Report,
}

/// The Auto Scaling launch lifecycle hook the agent completes once the stack is healthy.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLifecycle {
    pub hook: Option<HookChoice>,
    pub terminate_hook: Option<HookChoice>,
    pub heartbeat_interval: Option<DurationText>,
    pub unhealthy_after: Option<DurationText>,
    pub abandon_after: Option<u32>,
    /// What a Spot instance's notices do: `drain` (the default) stops the containers on an
    /// interruption notice, and on a rebalance recommendation too with `drain_on_rebalance`;
    /// `off` reads none.
    pub spot: Option<SpotChoice>,
}

/// `lifecycle.spot`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpotChoice {
    #[default]
    Drain,
    DrainOnRebalance,
    Off,
}

/// Which launch hook to complete: `auto` (the one launch hook of this instance's group), `off`, or
/// a hook's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookChoice {
    Auto,
    Off,
    Named(String),
}

impl HookChoice {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(HookChoice::Auto),
            "off" => Ok(HookChoice::Off),
            // Auto Scaling's own rule for hook names.
            _ if !s.is_empty()
                && s.len() <= 255
                && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_/".contains(c)) =>
            {
                Ok(HookChoice::Named(s.to_string()))
            }
            _ => Err(format!(
                "{s:?} is not `auto`, `off` or a lifecycle hook name (letters, digits, `-`, `_`, `/`; at most 255)"
            )),
        }
    }
}

impl<'de> Deserialize<'de> for HookChoice {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct HookVisitor;
        impl serde::de::Visitor<'_> for HookVisitor {
            type Value = HookChoice;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("`auto`, `off` or a lifecycle hook name")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<HookChoice, E> {
                HookChoice::parse(s).map_err(E::custom)
            }
            // YAML 1.1 readers (and habit) spell `off` as `false`.
            fn visit_bool<E: serde::de::Error>(self, b: bool) -> Result<HookChoice, E> {
                match b {
                    false => Ok(HookChoice::Off),
                    true => Err(E::custom(
                        "`hook: true` is ambiguous: write `auto` or a hook name",
                    )),
                }
            }
        }
        d.deserialize_any(HookVisitor)
    }
}

/// When images are pulled: `always` (every sync, so a moved tag is noticed) or `missing`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PullPolicy {
    Always,
    Missing,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFile {
    pub source: S3Uri,
    /// Pins an object version; without it the latest version is fetched.
    pub version_id: Option<VersionId>,
    pub path: FilePath,
    pub mode: Option<FileMode>,
    pub owner: Option<Account>,
    pub group: Option<Account>,
    /// The AWS account that must own the bucket (default: the instance's).
    pub expected_owner: Option<AwsAccountId>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAws {
    pub region: Option<RegionName>,
    pub endpoint_url: Option<EndpointUrl>,
    pub s3_force_path_style: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEnv {
    pub file: Option<FilePath>,
    pub mode: Option<FileMode>,
    pub parameters: Option<Vec<Source>>,
}

/// One entry of `env.parameters`: where variables come from, and whether they go to the env file
/// (`env_file: false`: only to the compose file's `secrets:`). Checked while reading so that a
/// wrong combination of keys is reported at its line.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawParamSource")]
pub struct Source {
    pub from: ParamSource,
    pub env_file: bool,
}

/// Where variables come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamSource {
    /// One parameter whose value is a whole dotenv document.
    Document { name: ParamName },
    /// Every parameter under a path; each variable is named by the part of its name below it.
    Path { path: ParamPath, recursive: bool },
    /// One parameter as one variable.
    Single { name: ParamName, key: EnvKey },
    /// A Secrets Manager secret, at its current version or at a pinned version stage.
    Secret {
        id: SecretId,
        stage: Option<VersionStage>,
        format: SecretFormat,
    },
}

/// How a secret's value becomes variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretFormat {
    /// A JSON object: each key a variable, its name prefixed.
    Json { prefix: String },
    /// A dotenv document.
    Dotenv,
    /// One variable.
    Value { key: EnvKey },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamFormat {
    /// The value is a dotenv document of variables.
    Dotenv,
    /// The value is one variable's value (the default for parameters).
    Value,
    /// The value is a JSON object of variables (the default for secrets).
    Json,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawParamSource {
    name: Option<ParamName>,
    path: Option<ParamPath>,
    secret: Option<SecretId>,
    recursive: Option<bool>,
    key: Option<EnvKey>,
    format: Option<ParamFormat>,
    prefix: Option<EnvKey>,
    version_stage: Option<VersionStage>,
    env_file: Option<bool>,
}

impl TryFrom<RawParamSource> for Source {
    type Error = String;

    fn try_from(raw: RawParamSource) -> Result<Self, String> {
        let env_file = raw.env_file.unwrap_or(true);
        Ok(Source {
            from: ParamSource::try_from(raw)?,
            env_file,
        })
    }
}

impl TryFrom<RawParamSource> for ParamSource {
    type Error = String;

    fn try_from(raw: RawParamSource) -> Result<Self, String> {
        if let Some(id) = raw.secret.clone() {
            return secret_source(id, raw);
        }
        if raw.prefix.is_some() || raw.version_stage.is_some() {
            return Err("`prefix` and `version_stage` apply to `secret`, not to parameters".into());
        }
        if raw.format == Some(ParamFormat::Json) {
            return Err("`format: json` applies to `secret`, not to parameters".into());
        }
        match (raw.name, raw.path) {
            (Some(_), Some(_)) | (None, None) => {
                Err("an entry needs exactly one of `name` (one parameter), `path` (a hierarchy) or `secret` (a Secrets Manager secret)".into())
            }
            (None, Some(path)) => {
                if raw.key.is_some() {
                    return Err("`key` names one parameter's variable; it does not apply to `path`".into());
                }
                if raw.format == Some(ParamFormat::Dotenv) {
                    return Err("`format: dotenv` applies to `name`, not to `path`".into());
                }
                Ok(ParamSource::Path { path, recursive: raw.recursive.unwrap_or(false) })
            }
            (Some(name), None) => {
                if raw.recursive.is_some() {
                    return Err("`recursive` applies to `path`, not to `name`".into());
                }
                match raw.format.unwrap_or(ParamFormat::Value) {
                    ParamFormat::Dotenv if raw.key.is_some() => Err(
                        "`key` and `format: dotenv` exclude each other: a dotenv document names its own variables".into(),
                    ),
                    ParamFormat::Dotenv => Ok(ParamSource::Document { name }),
                    ParamFormat::Value | ParamFormat::Json => {
                        let key = match raw.key {
                            Some(key) => key,
                            None => EnvKey::parse(name.basename())
                                .map_err(|e| format!("{e}; set `key:` to name the variable of {}", name.as_str()))?,
                        };
                        Ok(ParamSource::Single { name, key })
                    }
                }
            }
        }
    }
}

fn secret_source(id: SecretId, raw: RawParamSource) -> Result<ParamSource, String> {
    if raw.name.is_some() || raw.path.is_some() {
        return Err("an entry needs exactly one of `name`, `path` or `secret`".into());
    }
    if raw.recursive.is_some() {
        return Err("`recursive` applies to `path`, not to `secret`".into());
    }
    let format = match raw.format.unwrap_or(ParamFormat::Json) {
        ParamFormat::Json => {
            if raw.key.is_some() {
                return Err("`key` names the variable of `format: value`; a JSON secret's keys name its variables (add `prefix:` to prefix them)".into());
            }
            SecretFormat::Json {
                prefix: raw
                    .prefix
                    .map(|p| p.as_str().to_string())
                    .unwrap_or_default(),
            }
        }
        ParamFormat::Dotenv | ParamFormat::Value if raw.prefix.is_some() => {
            return Err("`prefix` applies to `format: json` only".into());
        }
        ParamFormat::Dotenv if raw.key.is_some() => {
            return Err("`key` and `format: dotenv` exclude each other: a dotenv document names its own variables".into());
        }
        ParamFormat::Dotenv => SecretFormat::Dotenv,
        ParamFormat::Value => SecretFormat::Value {
            key: match raw.key {
                Some(key) => key,
                None => EnvKey::parse(id.basename()).map_err(|e| {
                    format!(
                        "{e}; set `key:` to name the variable of secret {}",
                        id.as_str()
                    )
                })?,
            },
        },
    };
    Ok(ParamSource::Secret {
        id,
        stage: raw.version_stage,
        format,
    })
}
