//! The agent's configuration: `agent.yaml`, then every `agent.d/*.yaml` merged over it in name
//! order, checked into typed [`Settings`].
//!
//! Each file is first read on its own into the serde layer (`raw`), so an unknown key, a wrong type or an
//! impossible value is reported with that file's name, line and key. The files are then merged as
//! YAML (mappings key by key, lists and scalars replaced whole) and checked as a whole: what only
//! the merged config can show (no `project` anywhere) is reported with the list of files.
//!
//! On an instance, the launch template's overrides ([`overrides`]: a `#kicky-agent` document in
//! the user data, then `kicky-agent:<key>` tags) are merged over the files as two more layers,
//! each named in errors and in `status` ("user data", "tag kicky-agent:project").
//!
//! Loading is pure: [`load_with`] and [`check_with`] read the files and take the overrides as an
//! input. Only [`read_overrides`] (and the `*_effective` functions built on it) asks the instance,
//! through [`crate::instance`], the one layer below; the config knows nothing above it.

mod confine;
pub mod overrides;
pub mod probe;
mod raw;
pub mod types;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_norway::Value;

use crate::error::input_error;
pub use crate::instance::Overrides;
use raw::RawConfig;
/// The settings' own value types (read as written: plain enums and structs with no serde quirks).
pub use raw::{
    Allowance, ComposePolicy, ConsoleChoice, Credential, HookChoice, Mirror, Namespace,
    ParamSource, PullPolicy, RawRegistry as Registry, RegistryAuth, SecretFormat, Source,
    SpotChoice, WatchApply,
};
use types::S3Uri;

/// Defaults, in one place.
pub mod defaults {
    pub const CONFIG_PATH: &str = "/etc/kicky-agent/agent.yaml";
    pub const FRAGMENTS_DIR: &str = "agent.d";
    pub const ENV_FILE: &str = ".env";
    pub const ENV_MODE: u32 = 0o600;
    pub const FILE_MODE: u32 = 0o644;
    pub const STATE_DIR: &str = "/var/lib/kicky-agent";
    pub const COMPOSE_FILE: &str = "docker-compose.yml";
    pub const HEALTHY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);
    /// A pull without a progress message this long is cut and retried (the ECS agent's default).
    pub const PULL_STALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
    pub const PULL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20 * 60);
    /// How long a sync waits for another sync of the same project.
    pub const LOCK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10 * 60);
    pub const HEARTBEAT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);
    /// Failed first syncs after which the daemon abandons the launch.
    pub const ABANDON_AFTER: u32 = 5;
    pub const WATCH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);
    /// With a release marker, every source is still looked at this often.
    pub const WATCH_FULL_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);
    /// A failed release is tried again by the daemon on its own after this (doubled per try).
    pub const RETRY_FAILED_AFTER: std::time::Duration = std::time::Duration::from_secs(3600);
    pub const CONTROL_SOCKET: &str = "/run/kicky-agent/control.sock";
    /// A tmpfs (the unit's RuntimeDirectory): secret files never reach the disk.
    pub const SECRETS_DIR: &str = "/run/kicky-agent/secrets";
    /// `workdir` when the config has none: `/srv/<project>`.
    pub const WORKDIR_PARENT: &str = "/srv";
}

/// The shortest durations the config takes (whichever layer sets them): below them a fleet
/// hammers an API with no gain.
pub mod floors {
    use std::time::Duration;
    /// `watch.interval` (or 0, off): a watch costs a few calls per instance.
    pub const WATCH_INTERVAL: Duration = Duration::from_secs(5);
    /// `watch.full_every`: a full look costs a call per source.
    pub const WATCH_FULL_EVERY: Duration = Duration::from_secs(60);
    pub const RETRY_FAILED_AFTER: Duration = Duration::from_secs(60);
    /// `lifecycle.heartbeat_interval`: Auto Scaling's API is throttled per account.
    pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
}

/// The checked configuration the agent runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub project: String,
    pub workdir: PathBuf,
    pub aws: AwsSettings,
    /// `None` when the config has no `env:` section: no env file is written.
    pub env: Option<EnvSettings>,
    pub files: Vec<FileSettings>,
    /// `None` when the config has no `compose:` section: no containers are managed.
    pub compose: Option<ComposeSettings>,
    pub registries: Vec<Registry>,
    pub lifecycle: LifecycleSettings,
    /// How often the daemon looks for changed parameters and objects; zero turns watching off.
    pub watch_interval: std::time::Duration,
    pub watch_apply: WatchApply,
    /// The release marker: each watch HEADs only this object, and looks at every source when its
    /// ETag changed or `watch_full_every` passed.
    pub watch_marker: Option<S3Uri>,
    /// The AWS account that must own the marker's bucket (`None`: the instance's).
    pub watch_marker_owner: Option<String>,
    pub watch_full_every: std::time::Duration,
    /// Releases (`release.store`): a plain sync applies the promoted release.
    pub release: Option<ReleaseSettings>,
    /// How long a failed release is held before the daemon tries it again by itself (doubled
    /// for each failed try, a day at most).
    pub watch_retry_failed_after: std::time::Duration,
    pub control_socket: PathBuf,
    /// Where the Prometheus metrics are written after each sync (`None`: not written).
    pub metrics_textfile: Option<PathBuf>,
    /// Where a failed sync's report goes, besides the log.
    pub report: ReportSettings,
    pub state_dir: PathBuf,
    /// How long a sync waits for another sync of the same project to finish.
    pub lock_timeout: std::time::Duration,
    /// Which layer set each key (dotted path), for `status`: a file, `user data` or a tag.
    pub origins: BTreeMap<String, PathBuf>,
    /// The layers the settings were read from, in merge order (files, then `user data` and tags).
    pub sources: Vec<PathBuf>,
    /// Whether the launch template's user data may override the files.
    pub overrides_user_data: bool,
    /// Which keys the instance's tags may set (the baked config's `overrides.tags`).
    pub tag_policy: overrides::TagPolicy,
    /// The tags that were not applied, each with its reason ("tag kicky-agent:aws.region: ..."),
    /// for `validate`, `status` and the log.
    pub ignored_tags: Vec<String>,
    /// Where Auto Scaling is taking the instance, read with the overrides (`None`: unknown).
    pub target_state: Option<crate::instance::TargetState>,
}

impl Settings {
    /// The instance is going into a warm pool: prepare everything, start nothing.
    pub fn is_warm(&self) -> bool {
        self.target_state
            .as_ref()
            .is_some_and(crate::instance::TargetState::is_warm)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AwsSettings {
    /// `None`: the SDK's chain (AWS_REGION, profile, instance metadata).
    pub region: Option<String>,
    /// `None`: the SDK's default (which honours AWS_ENDPOINT_URL).
    pub endpoint_url: Option<String>,
    pub s3_force_path_style: bool,
}

#[derive(Debug, Clone)]
pub struct EnvSettings {
    /// Absolute path of the env file.
    pub path: PathBuf,
    pub mode: u32,
    pub sources: Vec<Source>,
}

impl Settings {
    /// The file that set `key` (a dotted path such as `env.mode`), or the key it is part of.
    pub fn origin(&self, key: &str) -> Option<&Path> {
        let mut key = key;
        loop {
            if let Some(path) = self.origins.get(key) {
                return Some(path);
            }
            key = &key[..key.rfind('.')?];
        }
    }
}

/// Where a failed sync's report goes (`report`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportSettings {
    /// Each report is also written under it: `<prefix><caller id>/<time>.txt`.
    pub store: Option<types::S3Prefix>,
    pub console: ConsoleChoice,
}

/// Where releases are kept (see [`crate::release`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseSettings {
    pub store: types::S3Prefix,
    /// The AWS account that must own the store's bucket (`None`: the instance's).
    pub expected_owner: Option<String>,
    /// The KMS key `release create` signs with.
    pub signing_key: Option<String>,
    /// The DER public key (SubjectPublicKeyInfo, ECDSA P-256) every applied release must be
    /// signed with (baked config only).
    pub public_key: Option<Vec<u8>>,
    /// The release a plain sync applies instead of the promoted one; the watch then follows no
    /// promote (a release id, checked).
    pub pin: Option<String>,
}

/// One file fetched from S3.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSettings {
    pub source: S3Uri,
    pub version_id: Option<String>,
    /// Absolute, confined to `workdir` or `files_allowed_dirs`.
    pub path: PathBuf,
    pub mode: u32,
    pub owner: Option<String>,
    pub group: Option<String>,
    /// The AWS account that must own the bucket (`None`: the instance's).
    pub expected_owner: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComposeSettings {
    /// Absolute path of the compose file.
    pub file: PathBuf,
    pub pull: PullPolicy,
    pub prune: bool,
    pub healthy_timeout: std::time::Duration,
    pub pull_stall_timeout: std::time::Duration,
    pub pull_timeout: std::time::Duration,
    /// Where the files of the compose file's `secrets:` are written, under `<project>/`: a tmpfs.
    pub secrets_dir: PathBuf,
    /// What the compose file may ask of the host beyond the defaults (`compose::policy`).
    pub policy: ComposePolicy,
    /// By service name: readiness probes that replace the compose file's (`compose.ready`).
    pub ready: BTreeMap<String, crate::config::probe::Probe>,
}

/// The Auto Scaling launch lifecycle hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifecycleSettings {
    pub hook: HookChoice,
    /// The termination hook (`auto`: the group's one): on `Terminating:Wait` the containers are
    /// stopped, then it is completed. `hook: off` turns it off too.
    pub terminate_hook: HookChoice,
    /// The longest between two heartbeats that keep a hook from timing out while a sync pulls
    /// and waits; a hook whose `HeartbeatTimeout` is shorter than three of these gets one every
    /// third of it (`lifecycle::heartbeat_interval`).
    pub heartbeat_interval: std::time::Duration,
    /// Mark the instance unhealthy (the group replaces it) once the stack stays unhealthy this long.
    pub unhealthy_after: Option<std::time::Duration>,
    /// Failed first syncs after which the daemon sends ABANDON (it keeps retrying).
    pub abandon_after: u32,
    /// What Spot notices do (`lifecycle.spot`).
    pub spot: SpotChoice,
}

/// One config file (or user data) as read, kept to point later errors at their line; or one tag.
struct Layer {
    /// The file, or `user data`, or `tag kicky-agent:<key>`.
    path: PathBuf,
    text: String,
    /// For a tag: the dotted key it sets.
    tag: Option<String>,
}

/// Reads and checks the config at `path`, its fragments, and the launch template's overrides
/// from instance metadata (unless the files turn them off); what every command and the daemon
/// run with.
pub async fn load_effective(path: &Path) -> Result<Settings> {
    let overrides = read_overrides(path, None).await?;
    load_with(path, &overrides)
}

/// Logs each tag the config did not apply, with its reason: whoever set it should hear why.
pub fn warn_ignored_tags(settings: &Settings) {
    for ignored in &settings.ignored_tags {
        tracing::warn!("{ignored}");
    }
}

/// [`check`] with the launch template's overrides, as `validate` shows them.
pub async fn check_effective(path: &Path) -> Result<(Settings, Vec<String>)> {
    let overrides = read_overrides(path, None).await?;
    check_with(path, &overrides)
}

/// What instance metadata says about the config at `path`: user data, tags and the target
/// lifecycle state, as far as the baked config lets them count. With `known` (user data and tags
/// read before: the daemon reads them again only when asked to resync), only the target
/// lifecycle state is read again.
pub async fn read_overrides(path: &Path, known: Option<&Overrides>) -> Result<Overrides> {
    let (baked, _) = check(path)?;
    let lifecycle = baked.lifecycle.hook != HookChoice::Off;
    let Some(known) = known else {
        let user_data = baked.overrides_user_data;
        // Tags are read whenever instance metadata is read anyway (the reads run at once), so
        // that a tag the baked config does not let count is reported rather than silently dropped.
        let tags = user_data || lifecycle || baked.tag_policy != overrides::TagPolicy::Off;
        return Ok(crate::instance::read_overrides(user_data, tags, lifecycle).await);
    };
    let mut overrides = known.clone();
    overrides.target_state = match lifecycle {
        true => crate::instance::target_state().await.ok().flatten(),
        false => None,
    };
    Ok(overrides)
}

/// Reads and checks the config at `path` and the fragments in `agent.d/` beside it.
pub fn load(path: &Path) -> Result<Settings> {
    load_with(path, &Overrides::default())
}

/// [`load`], with `overrides` merged over the files.
pub fn load_with(path: &Path, overrides: &Overrides) -> Result<Settings> {
    let (settings, problems) = check_with(path, overrides)?;
    match problems.as_slice() {
        [] => Ok(settings),
        [one] => Err(input_error(one.clone())),
        many => Err(input_error(format!(
            "{} problems:\n  {}",
            many.len(),
            many.join("\n  ")
        ))),
    }
}

/// Reads the config at `path` and its fragments, and lists every problem of them (each with its
/// file, line and key), not only the first; the settings are what the rest makes of them. An
/// error only when the config cannot be read at all. Tags that are not applied are not problems:
/// they are listed in the settings' `ignored_tags`.
pub fn check(path: &Path) -> Result<(Settings, Vec<String>)> {
    check_with(path, &Overrides::default())
}

/// [`check`], with `overrides` merged over the files.
pub fn check_with(path: &Path, overrides: &Overrides) -> Result<(Settings, Vec<String>)> {
    let files = config_files(path)?;
    let mut merged = Value::Mapping(Default::default());
    let mut layers = Vec::new();
    let mut origins = BTreeMap::new();
    let mut problems = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("failed to read {}", file.display()))?;
        if let Some(who) = writable_by_others(&file) {
            tracing::warn!(
                "{} is writable by {who}: whoever can write it can make the agent, which runs as root, fetch and run anything; chmod go-w, owned by root",
                file.display()
            );
        }
        let value = if text.trim().is_empty() {
            Value::Mapping(Default::default())
        } else {
            // Each file alone against the schema, so its problems carry its name and line.
            let (left, errors) = crate::yaml::check_all::<RawConfig>(&text, &file);
            problems.extend(errors.iter().map(ToString::to_string));
            left.unwrap_or(Value::Mapping(Default::default()))
        };
        merge(&mut merged, value, &file, "", &mut origins);
        layers.push(Layer {
            path: file,
            text,
            tag: None,
        });
    }
    // What tags may set is the baked config's to say (user data and tags cannot set `overrides`).
    let tag_policy = overrides::TagPolicy::from_choice(
        merged
            .get("overrides")
            .and_then(|o| o.get("tags"))
            .and_then(|t| serde_norway::from_value(t.clone()).ok())
            .as_ref(),
    );
    if let Some(text) = &overrides.user_data {
        let file = PathBuf::from(overrides::USER_DATA);
        let (left, errors) = crate::yaml::check_all::<RawConfig>(text, &file);
        problems.extend(errors.iter().map(ToString::to_string));
        let value = left.unwrap_or(Value::Mapping(Default::default()));
        let value = match refused_in_overrides(&value) {
            Some(why) => {
                problems.push(format!("{}: {why}", overrides::USER_DATA));
                Value::Mapping(Default::default())
            }
            None => value,
        };
        merge(&mut merged, value, &file, "", &mut origins);
        layers.push(Layer {
            path: file,
            text: text.clone(),
            tag: None,
        });
    }
    let mut ignored_tags = Vec::new();
    for (key, value) in &overrides.tags {
        let layer = PathBuf::from(overrides::tag_layer(key));
        let applied = match tag_policy.refusal(key) {
            Some(why) => Err(format!("{}: {why}", layer.display())),
            None => tag_over(&mut merged, key, value, &layer),
        };
        match applied {
            Ok(set) => {
                origins.retain(|k, _| !k.starts_with(&format!("{set}.")));
                origins.insert(set.clone(), layer.clone());
                layers.push(Layer {
                    path: layer,
                    text: String::new(),
                    tag: Some(set),
                });
            }
            Err(why) => ignored_tags.push(format!("{why}: ignored")),
        }
    }
    let raw: RawConfig = match serde_norway::from_value(merged) {
        Ok(raw) => raw,
        Err(e) => {
            problems.push(format!("{}: {e}", describe(&layers)));
            RawConfig::default()
        }
    };
    let mut settings = validate(raw, &layers, &mut problems);
    settings.origins = origins;
    settings.target_state = overrides.target_state.clone();
    settings.ignored_tags = ignored_tags;
    Ok((settings, problems))
}

/// Sets one tag's key in `merged`, unless the config would then no longer read or no longer
/// check (a value of the wrong type, a duration under its floor): then `merged` is as it was,
/// and the reason, named by the tag's `layer`, is returned.
fn tag_over(merged: &mut Value, key: &str, value: &str, layer: &Path) -> Result<String, String> {
    let named = |why: String| format!("{}: {why}", layer.display());
    let mut next = merged.clone();
    let set = overrides::set_by_tag(&mut next, key, value).map_err(named)?;
    let mut alone = Value::Null;
    overrides::set_by_tag(&mut alone, &set, value).ok();
    if let Some(why) = overrides::looks_secret(&alone) {
        return Err(named(format!(
            "{set}: the value looks like {why}; tags are readable by anyone who can describe the instance"
        )));
    }
    // Problems are named as the tag's, whichever key they are about.
    let layers = [Layer {
        path: layer.to_path_buf(),
        text: String::new(),
        tag: Some(set.clone()),
    }];
    let problems_of = |config: &Value| -> Result<Vec<String>, String> {
        let raw = serde_norway::from_value::<RawConfig>(config.clone())
            .map_err(|e| named(format!("{set}: {e}")))?;
        let mut problems = Vec::new();
        validate(raw, &layers, &mut problems);
        Ok(problems)
    };
    let before = problems_of(merged).unwrap_or_default();
    let new: Vec<String> = problems_of(&next)?
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    if let Some(first) = new.first() {
        return Err(first.clone());
    }
    *merged = next;
    Ok(set)
}

/// Why the user data's document may not be merged, if so: it sets what only the baked config may
/// set, or carries what looks like a credential (user data is readable by anyone with
/// `ec2:DescribeInstanceAttribute`).
fn refused_in_overrides(value: &Value) -> Option<String> {
    for key in overrides::BAKED_ONLY {
        let mut node = Some(value);
        for step in key.split('.') {
            node = node.and_then(|n| n.get(step));
        }
        if node.is_some() {
            return Some(format!("{key}: can be set in the baked config only"));
        }
    }
    overrides::looks_secret(value).map(|why| {
        format!("a value looks like {why}; user data is readable by anyone with ec2:DescribeInstanceAttribute, so secrets go in Parameter Store or Secrets Manager and the config names them: refused")
    })
}

/// Who other than root may write the config file at `path` (or its directory), if anyone.
fn writable_by_others(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let mut places = vec![path.to_path_buf()];
    places.extend(path.parent().map(Path::to_path_buf));
    for place in places {
        let Ok(meta) = std::fs::metadata(&place) else {
            continue;
        };
        let mode = meta.mode();
        let sticky = mode & 0o1000 != 0;
        if mode & 0o002 != 0 && !sticky {
            return Some(format!(
                "everyone ({} is mode {:04o})",
                place.display(),
                mode & 0o7777
            ));
        }
        if mode & 0o020 != 0 && meta.gid() != 0 {
            return Some(format!("group {} ({})", meta.gid(), place.display()));
        }
        if meta.uid() != 0 && nix::unistd::geteuid().is_root() {
            return Some(format!(
                "user {} ({} is theirs)",
                meta.uid(),
                place.display()
            ));
        }
    }
    None
}

/// `path`, then `agent.d/*.yaml` beside it in name order.
fn config_files(path: &Path) -> Result<Vec<PathBuf>> {
    if !path.is_file() {
        return Err(input_error(format!(
            "config file {} does not exist or is not a file",
            path.display()
        )));
    }
    let mut files = vec![path.to_path_buf()];
    let dir = path
        .parent()
        .unwrap_or(Path::new("."))
        .join(defaults::FRAGMENTS_DIR);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(files),
        Err(e) => return Err(e).with_context(|| format!("failed to list {}", dir.display())),
    };
    let mut fragments = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("failed to list {}", dir.display()))?;
        let p = entry.path();
        if p.extension().is_some_and(|ext| ext == "yaml") && p.is_file() {
            fragments.push(p);
        }
    }
    fragments.sort();
    files.extend(fragments);
    Ok(files)
}

/// Merges `over` into `base`: mappings key by key, anything else replaced.
/// Records in `origins` which file set each key it writes (by dotted path).
fn merge(
    base: &mut Value,
    over: Value,
    origin: &Path,
    path: &str,
    origins: &mut BTreeMap<String, PathBuf>,
) {
    match (base, over) {
        (Value::Mapping(base), Value::Mapping(over)) => {
            for (key, value) in over {
                let name = key
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("{key:?}"));
                let child = if path.is_empty() {
                    name
                } else {
                    format!("{path}.{name}")
                };
                match base.get_mut(&key) {
                    Some(existing) => merge(existing, value, origin, &child, origins),
                    None => {
                        origins.insert(child, origin.to_path_buf());
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, over) => {
            // Replaced whole: what an earlier file set below this key is gone.
            origins.retain(|k, _| !k.starts_with(&format!("{path}.")));
            origins.insert(path.to_string(), origin.to_path_buf());
            *base = over;
        }
    }
}

fn describe(layers: &[Layer]) -> String {
    let names: Vec<String> = layers
        .iter()
        .map(|l| l.path.display().to_string())
        .collect();
    names.join(" + ")
}

/// A problem with `key` of the merged config, pointed at the last layer that sets it.
fn key_problem(layers: &[Layer], key: &str, message: impl std::fmt::Display) -> String {
    for layer in layers.iter().rev() {
        if let Some(tag) = &layer.tag {
            let within = |a: &str, b: &str| a == b || a.starts_with(&format!("{b}."));
            if within(key, tag) || within(tag, key) {
                return format!("{}: {key}: {message}", layer.path.display());
            }
            continue;
        }
        if let Some((line, column)) = crate::yaml::position_of(&layer.text, key) {
            return format!("{}:{line}:{column}: {key}: {message}", layer.path.display());
        }
    }
    format!("{}: {key}: {message}", describe(layers))
}

/// Checks what only the merged config shows and fills in defaults; every problem goes to
/// `problems` and the settings go on with a default in its place.
fn validate(raw: RawConfig, layers: &[Layer], problems: &mut Vec<String>) -> Settings {
    let mut check = Check { layers, problems };
    let project = match raw.project {
        Some(project) => project.as_str().to_string(),
        None => {
            check
                .problems
                .push(format!("{}: `project` is required", describe(layers)));
            String::new()
        }
    };
    let workdir = match raw.workdir {
        Some(dir) => dir.into_path(),
        None => Path::new(defaults::WORKDIR_PARENT).join(&project),
    };
    let aws = raw.aws.unwrap_or_default();
    let env = raw.env.map(|env| check.env(env, &workdir));
    let allowed: Vec<PathBuf> = raw
        .files_allowed_dirs
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.into_path())
        .collect();
    let files = check.files(
        raw.files.unwrap_or_default(),
        &workdir,
        &allowed,
        env.as_ref(),
    );
    let compose = raw.compose.map(|c| check.compose(c, &workdir));
    let lifecycle = check.lifecycle(raw.lifecycle.unwrap_or_default());
    let watch = raw.watch.unwrap_or_default();
    let release = raw.release.and_then(|r| {
        let public_key = match r.public_key.as_deref().map(types::release_public_key) {
            Some(Ok(der)) => Some(der),
            Some(Err(why)) => {
                check.problem("release.public_key", why);
                None
            }
            None => None,
        };
        if let Some(key) = &r.signing_key {
            if key.is_empty() || key.len() > 2048 || key.contains(char::is_whitespace) {
                check.problem("release.signing_key", "is not a KMS key id, ARN or alias");
            }
        }
        // Empty is none: a launch template's user data says `pin: ""` when it pins nothing.
        let pin = r.pin.filter(|pin| !pin.is_empty()).filter(|pin| {
            let ok = types::is_release_id(pin);
            if !ok {
                check.problem(
                    "release.pin",
                    format!(
                        "{:?} is not a release id (like 20261207T163000123Z-3f9a1c)",
                        pin.chars().take(80).collect::<String>()
                    ),
                );
            }
            ok
        });
        Some(ReleaseSettings {
            store: r.store?,
            expected_owner: r.expected_owner.map(|a| a.into_string()),
            signing_key: r.signing_key,
            public_key,
            pin,
        })
    });
    if release.is_some() && watch.marker.is_some() {
        check.problem(
            "watch.marker",
            "with release.store, the promoted release's pointer is the watch's marker: remove watch.marker",
        );
    }
    let or = |value: Option<types::DurationText>, default| value.map_or(default, |d| d.0);
    let settings = Settings {
        project,
        workdir,
        aws: AwsSettings {
            region: aws.region.map(|r| r.into_string()),
            endpoint_url: aws.endpoint_url.map(|u| u.into_string()),
            s3_force_path_style: aws.s3_force_path_style.unwrap_or(false),
        },
        env,
        files,
        compose,
        registries: check.registries(raw.registries.unwrap_or_default()),
        lifecycle,
        watch_interval: match watch.interval.map(|d| d.0) {
            Some(off) if off.is_zero() => off,
            _ => check.at_least(
                "watch.interval",
                watch.interval,
                defaults::WATCH_INTERVAL,
                floors::WATCH_INTERVAL,
            ),
        },
        watch_apply: watch.apply.unwrap_or(WatchApply::Auto),
        watch_marker: watch.marker,
        watch_marker_owner: watch.marker_expected_owner.map(|a| a.into_string()),
        release,
        watch_full_every: check.at_least(
            "watch.full_every",
            watch.full_every,
            defaults::WATCH_FULL_EVERY,
            floors::WATCH_FULL_EVERY,
        ),
        watch_retry_failed_after: check.at_least(
            "watch.retry_failed_after",
            watch.retry_failed_after,
            defaults::RETRY_FAILED_AFTER,
            floors::RETRY_FAILED_AFTER,
        ),
        metrics_textfile: raw.metrics.and_then(|m| m.textfile).map(|p| p.into_path()),
        report: ReportSettings {
            store: raw.report.as_ref().and_then(|r| r.store.clone()),
            console: raw
                .report
                .and_then(|r| r.console)
                .unwrap_or(ConsoleChoice::Stdout),
        },
        control_socket: raw.control_socket.map_or_else(
            || PathBuf::from(defaults::CONTROL_SOCKET),
            |p| p.into_path(),
        ),
        state_dir: raw
            .state_dir
            .map_or_else(|| PathBuf::from(defaults::STATE_DIR), |d| d.into_path()),
        lock_timeout: or(raw.lock_timeout, defaults::LOCK_TIMEOUT),
        origins: BTreeMap::new(),
        sources: layers.iter().map(|l| l.path.clone()).collect(),
        overrides_user_data: raw
            .overrides
            .as_ref()
            .and_then(|o| o.user_data)
            .unwrap_or(true),
        tag_policy: overrides::TagPolicy::from_choice(
            raw.overrides.as_ref().and_then(|o| o.tags.as_ref()),
        ),
        ignored_tags: Vec::new(),
        target_state: None,
    };
    check.secrets_dir(&settings);
    settings
}

/// The merged config's sections checked one by one, each problem noted with its file and line.
struct Check<'a> {
    layers: &'a [Layer],
    problems: &'a mut Vec<String>,
}

impl Check<'_> {
    fn problem(&mut self, key: &str, message: impl std::fmt::Display) {
        self.problems.push(key_problem(self.layers, key, message));
    }

    /// A duration that may not be shorter than `floor`: what keeps a fleet from hammering an API
    /// because one layer (a tag, a typo) said `1ms`.
    fn at_least(
        &mut self,
        key: &str,
        value: Option<types::DurationText>,
        default: std::time::Duration,
        floor: std::time::Duration,
    ) -> std::time::Duration {
        match value.map(|d| d.0) {
            Some(d) if d < floor => {
                let floor = humantime::format_duration(floor);
                self.problem(key, format!("must be at least {floor}"));
                default
            }
            Some(d) => d,
            None => default,
        }
    }

    /// A duration that must not be zero.
    fn positive(
        &mut self,
        key: &str,
        value: Option<types::DurationText>,
        default: std::time::Duration,
    ) -> std::time::Duration {
        match value.map(|d| d.0) {
            Some(d) if d.is_zero() => {
                self.problem(key, "must be longer than 0");
                default
            }
            Some(d) => d,
            None => default,
        }
    }

    /// One mirror per upstream registry, and no mirror of a mirror: an image is pulled from one
    /// place, known from the config alone.
    fn registries(&mut self, registries: Vec<Registry>) -> Vec<Registry> {
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, registry) in registries.iter().enumerate() {
            let Some(mirror) = &registry.mirror else {
                continue;
            };
            let of = mirror.of.as_str();
            let key = format!("registries[{i}].mirror_of");
            if let Some(first) = seen.insert(of, i) {
                self.problem(
                    &key,
                    format!("registries[{first}] already mirrors {of}: one mirror per registry"),
                );
            }
            if let Some(j) = registries
                .iter()
                .position(|r| r.mirror.is_some() && r.server.as_str() == of)
            {
                self.problem(
                    &key,
                    format!(
                        "{of} is itself a mirror (registries[{j}]): name what it mirrors instead"
                    ),
                );
            }
        }
        registries
    }

    fn env(&mut self, env: raw::RawEnv, workdir: &Path) -> EnvSettings {
        let sources = env.parameters.unwrap_or_default();
        if sources.is_empty() {
            self.problem(
                "env",
                "`env.parameters` is empty: list the parameters to write to the env file, or drop `env:`",
            );
        }
        let file = env
            .file
            .map_or_else(|| PathBuf::from(defaults::ENV_FILE), |f| f.into_path());
        if file
            .components()
            .any(|c| c == std::path::Component::ParentDir)
        {
            let message = format!(
                "{} contains `..`: name the env file's path without it",
                file.display()
            );
            self.problem("env.file", message);
        }
        EnvSettings {
            path: workdir.join(file),
            mode: env.mode.map_or(defaults::ENV_MODE, |m| m.0),
            sources,
        }
    }

    fn files(
        &mut self,
        raw: Vec<raw::RawFile>,
        workdir: &Path,
        allowed: &[PathBuf],
        env: Option<&EnvSettings>,
    ) -> Vec<FileSettings> {
        let mut files: Vec<FileSettings> = Vec::new();
        for (i, file) in raw.into_iter().enumerate() {
            let key = format!("files[{i}].path");
            let path = match confine::confine(&file.path.into_path(), workdir, allowed) {
                Ok(path) => path,
                Err(e) => {
                    self.problem(&key, e);
                    continue;
                }
            };
            if env.is_some_and(|env| env.path == path) {
                self.problem(&key, format!("{} is also the env file", path.display()));
                continue;
            }
            if let Some(j) = files.iter().position(|f| f.path == path) {
                let message = format!("{} is also the path of files[{j}]", path.display());
                self.problem(&key, message);
                continue;
            }
            files.push(FileSettings {
                source: file.source,
                version_id: file.version_id.map(|v| v.into_string()),
                path,
                mode: file.mode.map_or(defaults::FILE_MODE, |m| m.0),
                owner: file.owner.map(|o| o.as_str().to_string()),
                group: file.group.map(|g| g.as_str().to_string()),
                expected_owner: file.expected_owner.map(|a| a.into_string()),
            });
        }
        files
    }

    fn compose(&mut self, c: raw::RawCompose, workdir: &Path) -> ComposeSettings {
        ComposeSettings {
            file: workdir.join(
                c.file
                    .map_or_else(|| PathBuf::from(defaults::COMPOSE_FILE), |f| f.into_path()),
            ),
            pull: c.pull.unwrap_or(PullPolicy::Missing),
            prune: c.prune.unwrap_or(false),
            healthy_timeout: c.healthy_timeout.map_or(defaults::HEALTHY_TIMEOUT, |d| d.0),
            pull_stall_timeout: self.positive(
                "compose.pull_stall_timeout",
                c.pull_stall_timeout,
                defaults::PULL_STALL_TIMEOUT,
            ),
            pull_timeout: self.positive(
                "compose.pull_timeout",
                c.pull_timeout,
                defaults::PULL_TIMEOUT,
            ),
            secrets_dir: c
                .secrets_dir
                .map_or_else(|| PathBuf::from(defaults::SECRETS_DIR), |d| d.into_path()),
            policy: c.policy.unwrap_or_default(),
            ready: self.probes(c.ready.unwrap_or_default()),
        }
    }

    fn probes(
        &mut self,
        raw: BTreeMap<String, crate::config::probe::RawProbe>,
    ) -> BTreeMap<String, crate::config::probe::Probe> {
        let mut probes = BTreeMap::new();
        for (service, raw) in raw {
            match crate::config::probe::Probe::try_from(raw) {
                Ok(probe) => {
                    probes.insert(service, probe);
                }
                Err(err) => self.problem(&format!("compose.ready.{service}"), err),
            }
        }
        probes
    }

    /// The compose file's secrets directory, where the agent removes files, overlaps no other
    /// place it writes (see [`confine::secrets_dir_clash`]).
    fn secrets_dir(&mut self, s: &Settings) {
        let Some(compose) = &s.compose else {
            return;
        };
        let dir_of = |what, path: &Path| path.parent().map(|dir| (what, dir.to_path_buf()));
        let mut places = vec![
            ("the workdir", s.workdir.clone()),
            ("state_dir", s.state_dir.clone()),
        ];
        places.extend(
            s.env
                .as_ref()
                .and_then(|e| dir_of("the env file's directory", &e.path)),
        );
        places.extend(
            s.files
                .iter()
                .filter_map(|f| dir_of("a file's directory", &f.path)),
        );
        places.extend(dir_of("the compose file's directory", &compose.file));
        let metrics = s.metrics_textfile.as_deref();
        places.extend(metrics.and_then(|p| dir_of("the metrics textfile's directory", p)));
        if let Some(why) = confine::secrets_dir_clash(&compose.secrets_dir, &places) {
            self.problem("compose.secrets_dir", why);
        }
    }

    fn lifecycle(&mut self, l: raw::RawLifecycle) -> LifecycleSettings {
        let heartbeat_interval = self.at_least(
            "lifecycle.heartbeat_interval",
            l.heartbeat_interval,
            defaults::HEARTBEAT_INTERVAL,
            floors::HEARTBEAT_INTERVAL,
        );
        let unhealthy_after = match l.unhealthy_after.map(|d| d.0) {
            Some(d) if d.is_zero() => {
                let message =
                    "must be longer than 0; drop the key to never mark the instance unhealthy";
                self.problem("lifecycle.unhealthy_after", message);
                None
            }
            other => other,
        };
        let abandon_after = match l.abandon_after {
            None => defaults::ABANDON_AFTER,
            Some(0) => {
                let message = "must be at least 1 (failed first syncs before ABANDON)";
                self.problem("lifecycle.abandon_after", message);
                defaults::ABANDON_AFTER
            }
            Some(n) => n,
        };
        LifecycleSettings {
            hook: l.hook.unwrap_or(HookChoice::Auto),
            terminate_hook: l.terminate_hook.unwrap_or(HookChoice::Auto),
            heartbeat_interval,
            unhealthy_after,
            abandon_after,
            spot: l.spot.unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests;
