//! The least-privilege IAM policy for a config: what `kicky-agent iam-policy` prints, for the
//! instance role. A pure function of the settings, of where the instance is (partition, region,
//! account, group) and of the compose file's images; one statement per job, each with the exact
//! actions the agent calls and the exact resources it calls them on, so that taking any one
//! away breaks that job and only it (`tests/iam.rs` checks both against every call the agent
//! makes).
//!
//! What each statement is for (the calls in `src/aws/` and `src/engine/registry.rs`):
//! - `ReadParameters`: GetParameters (with decryption) of each `name:` entry and of registry
//!   credentials, by exact ARN; `ReadParameterPaths`: GetParametersByPath of each `path:` entry
//!   (the path, and what is under it: the one wildcard of a resource).
//!   `WatchParameterVersions`: DescribeParameters, which takes no resource, when the daemon
//!   watches.
//! - `DecryptParameters`, `DecryptSecrets`: kms:Decrypt of SecureStrings and secrets under a
//!   customer key, only when SSM or Secrets Manager asks on the agent's behalf (`kms:ViaService`)
//!   and only for the configured parameters and secrets (the encryption context those services
//!   put on every Decrypt: `PARAMETER_ARN`, `SecretARN`).
//! - `ReadSecrets`: GetSecretValue (and DescribeSecret, to watch versions) on each secret;
//!   `BatchReadSecrets`: BatchGetSecretValue, which takes no resource (each secret in the batch
//!   is still checked against `ReadSecrets`).
//! - `ReadFiles`: s3:GetObject on each object (HeadObject, to watch ETags, is the same action);
//!   `ReadPinnedFileVersions`: s3:GetObjectVersion on the objects pinned to a version;
//!   `WatchReleaseMarker`: s3:GetObject on `watch.marker` (each watch HEADs it). Each only in
//!   buckets of the expected owners (`s3:ResourceAccount`), as the calls themselves require.
//! - With `release.store`, every input is read at the version the release pins, so the
//!   statements narrow to those calls: `ReadParameters` also covers the parameters under each
//!   path (GetParameters of the names the manifest lists: no `ReadParameterPaths`), `ReadSecrets`
//!   is GetSecretValue alone (by version id: no batch, no DescribeSecret), every file is in
//!   `ReadPinnedFileVersions` (none in `ReadFiles`), and the watch reads nothing but the store
//!   (no `WatchParameterVersions`). `ReadReleases`: s3:GetObject on the promoted pointer (each
//!   watch HEADs it) and on the manifests (`releases/*`), in buckets of the store's owner.
//!   `ReportToFleet`: s3:PutObject on the instance's own fleet record,
//!   `fleet/${aws:userid}.json` (see [`crate::release::fleet`]).
//! - `ReportFailures`: with `report.store`, s3:PutObject under the instance's own name,
//!   `<prefix>${aws:userid}/*` (see [`crate::sync::report`]).
//!   What the config reads is [`crate::inputs::Inputs`].
//! - `EcrToken` and `EcrPull`: when a registry has `ecr: true`: the token, and the pull actions
//!   (BatchGetImage, GetDownloadUrlForLayer) on the repositories of the compose file's images.
//!   `EcrPullThroughCache`: when that registry is a mirror (`mirror_of`, an ECR pull through
//!   cache), what a pull of an image not cached yet needs besides: BatchImportUpstreamImage (ECR
//!   fetches it from the upstream) and CreateRepository (the cache's repository, on its first
//!   pull), on the repositories under the mirror's prefix.
//! - `FindLifecycleHook`, `CompleteLifecycleAction`, `ReportInstanceHealth`: when the lifecycle
//!   hook is on (and `unhealthy_after` is set), on the group.
//!
//! A condition value with a wildcard is written under `StringLike`: `StringEquals` compares
//! literally and would never match it.

use anyhow::Result;
use serde_json::{json, Map, Value};

use crate::compose::reference::ImageRef;
use crate::config::types::S3Uri;
use crate::config::{HookChoice, RegistryAuth, Settings};
use crate::error::input_error;
use crate::inputs::{Inputs, Object};

/// Where the instance is: what the ARNs are built from. `*` for an unknown region or account; the
/// group is `None` when unknown, and `*` only when asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub partition: String,
    pub region: String,
    pub account: String,
    /// The Auto Scaling group's name (`*`: any group of the account, when asked for).
    pub group: Option<String>,
}

impl Place {
    pub fn new(region: Option<&str>, account: Option<&str>, group: Option<&str>) -> Place {
        let region = region.unwrap_or("*");
        Place {
            partition: partition_of(region).to_string(),
            region: region.to_string(),
            account: account.unwrap_or("*").to_string(),
            group: group.map(str::to_string),
        }
    }

    fn arn(&self, service: &str, resource: &str) -> String {
        format!(
            "arn:{}:{service}:{}:{}:{resource}",
            self.partition, self.region, self.account
        )
    }
}

/// The partition a region is in.
pub fn partition_of(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

/// A parameter's ARN: `parameter` then the name, which has a leading `/` or is given one.
fn parameter_arn(place: &Place, name: &str) -> String {
    let name = name.trim_start_matches('/');
    place.arn("ssm", &format!("parameter/{name}"))
}

/// A `path:` source's ARN (what GetParametersByPath is authorized on) and the pattern of the
/// parameters under it (their ARNs, in the encryption context of their decryption). The root
/// path `/` is `parameter/`, and what is under it `parameter/*`.
fn path_arns(place: &Place, path: &str) -> (String, String) {
    let base = parameter_arn(place, path.trim_end_matches('/'));
    let under = match base.ends_with('/') {
        true => format!("{base}*"),
        false => format!("{base}/*"),
    };
    (base, under)
}

/// A secret's ARN. By name, Secrets Manager appends `-` and six random characters.
fn secret_arn(place: &Place, id: &str) -> String {
    if id.starts_with("arn:") {
        return id.to_string();
    }
    place.arn("secretsmanager", &format!("secret:{id}-??????"))
}

/// The images of the compose file, when it could be read: which ECR repositories are pulled.
#[derive(Debug, Clone)]
pub enum Images {
    Known(Vec<ImageRef>),
    /// No compose file to read: every repository of each ECR registry.
    Unknown,
}

/// Statements, each added only when it has a resource.
#[derive(Default)]
struct Statements(Vec<Value>);

impl Statements {
    fn allow(&mut self, sid: &str, actions: &[&str], resources: Vec<String>) {
        self.allow_if(sid, actions, resources, Conditions::default());
    }

    fn allow_if(&mut self, sid: &str, actions: &[&str], resources: Vec<String>, when: Conditions) {
        let resources = sorted(resources);
        if resources.is_empty() {
            return;
        }
        let mut statement = json!({
            "Sid": sid,
            "Effect": "Allow",
            "Action": actions,
            "Resource": resources,
        });
        if !when.0.is_empty() {
            statement["Condition"] = Value::Object(when.0);
        }
        self.0.push(statement);
    }
}

fn sorted(mut values: Vec<String>) -> Vec<String> {
    values.sort();
    values.dedup();
    values
}

/// A statement's `Condition`: operator → key → values (any value matches; every key must).
#[derive(Default)]
struct Conditions(Map<String, Value>);

impl Conditions {
    /// `key` is one of `values`: `StringEquals`, or `StringLike` when a value has a wildcard.
    fn string(mut self, key: &str, values: Vec<String>) -> Self {
        let values = sorted(values);
        let wildcard = values.iter().any(|v| v.contains(['*', '?']));
        let operator = if wildcard {
            "StringLike"
        } else {
            "StringEquals"
        };
        let keys = self
            .0
            .entry(operator)
            .or_insert_with(|| Value::Object(Map::new()));
        keys[key] = json!(values);
        self
    }
}

/// The policy document for `settings`. Bad input (exit 2): the lifecycle hook is on and the
/// group is not known.
pub fn policy(settings: &Settings, place: &Place, images: &Images) -> Result<Value> {
    let mut out = Statements::default();
    let watching = !settings.watch_interval.is_zero();
    let inputs = Inputs::of(settings);
    // With a release, every input is read at the version it pins: parameters by name (those of
    // a path too, as the manifest lists them), secrets by version id, files by version; the
    // watch reads only the release store.
    let pinned = inputs.release.is_some();
    let anything = || vec!["*".to_string()];

    let mut names: Vec<String> = inputs
        .parameter_names()
        .map(|name| parameter_arn(place, name))
        .collect();
    let mut paths: Vec<String> = Vec::new();
    let mut under_paths: Vec<String> = Vec::new();
    for path in &inputs.paths {
        // The path's own ARN, and what is under it: the path as the agent sends it may end in
        // `/`.
        let (base, under) = path_arns(place, path.path.as_str());
        match pinned {
            true => names.push(under.clone()),
            false => paths.extend([base, under.clone()]),
        }
        under_paths.push(under);
    }
    let secrets: Vec<String> = inputs
        .secrets
        .iter()
        .map(|s| secret_arn(place, s.id.as_str()))
        .collect();
    let batched = !pinned && inputs.secrets.iter().any(|s| s.stage.is_none());
    let reads_ssm = inputs.reads_ssm();
    // (With a release, `names` holds the paths' patterns too: the condition's values are
    // deduplicated.)
    let decrypted: Vec<String> = names.iter().chain(&under_paths).cloned().collect();
    out.allow("ReadParameters", &["ssm:GetParameters"], names);
    out.allow("ReadParameterPaths", &["ssm:GetParametersByPath"], paths);
    if watching && reads_ssm && !pinned {
        out.allow(
            "WatchParameterVersions",
            &["ssm:DescribeParameters"],
            anything(),
        );
    }
    let decrypt = |service: &str, context: &str, arns: Vec<String>| {
        let via = format!("{service}.{}.amazonaws.com", place.region);
        Conditions::default()
            .string("kms:ViaService", vec![via])
            .string(&format!("kms:EncryptionContext:{context}"), arns)
    };
    let keys = || vec![place.arn("kms", "key/*")];
    if reads_ssm {
        let when = decrypt("ssm", "PARAMETER_ARN", decrypted);
        out.allow_if("DecryptParameters", &["kms:Decrypt"], keys(), when);
    }

    let secret_actions: &[&str] = match watching && !pinned {
        true => &[
            "secretsmanager:GetSecretValue",
            "secretsmanager:DescribeSecret",
        ],
        false => &["secretsmanager:GetSecretValue"],
    };
    if !secrets.is_empty() {
        let when = decrypt("secretsmanager", "SecretARN", secrets.clone());
        out.allow("ReadSecrets", secret_actions, secrets);
        if batched {
            out.allow(
                "BatchReadSecrets",
                &["secretsmanager:BatchGetSecretValue"],
                anything(),
            );
        }
        out.allow_if("DecryptSecrets", &["kms:Decrypt"], keys(), when);
    }

    files_statements(&mut out, &inputs, place, watching);
    if let Some(store) = &settings.report.store {
        // Under the caller's own name (`${aws:userid}`: `<role id>:<instance id>`): an instance
        // writes its reports and no other's, and reads none.
        let reports = format!(
            "arn:{}:s3:::{}/{}${{aws:userid}}/*",
            place.partition, store.bucket, store.prefix
        );
        let when = Conditions::default().string("s3:ResourceAccount", vec![place.account.clone()]);
        out.allow_if("ReportFailures", &["s3:PutObject"], vec![reports], when);
    }
    ecr_statements(&mut out, settings, place, images);
    lifecycle_statements(&mut out, settings, place)?;
    Ok(json!({ "Version": "2012-10-17", "Statement": out.0 }))
}

/// `ReadFiles`, `ReadPinnedFileVersions`, `WatchReleaseMarker`, `ReadReleases`: each object by
/// ARN, in buckets of the accounts the calls expect to own them. With a release every file is
/// read at the version it pins (`ReadPinnedFileVersions` only), and the release store is read
/// by every sync and each watch: the pointer, and the manifests (`releases/*`).
fn files_statements(out: &mut Statements, inputs: &Inputs, place: &Place, watching: bool) {
    let arn = |uri: &S3Uri| format!("arn:{}:s3:::{}/{}", place.partition, uri.bucket, uri.key);
    let owner = |owner: Option<&str>| owner.map_or_else(|| place.account.clone(), str::to_string);
    let object = |o: &Object| (arn(o.uri), owner(o.owner));
    let mut statement = |sid: &str, action: &str, objects: Vec<(String, String)>| {
        let (arns, owners): (Vec<String>, Vec<String>) = objects.into_iter().unzip();
        let when = Conditions::default().string("s3:ResourceAccount", owners);
        out.allow_if(sid, &[action], arns, when);
    };
    let pinned = inputs.release.is_some();
    let all = inputs.files.iter().filter(|_| !pinned).map(object);
    statement("ReadFiles", "s3:GetObject", all.collect());
    let versions = inputs
        .files
        .iter()
        .filter(|f| pinned || f.version.is_some())
        .map(object);
    statement(
        "ReadPinnedFileVersions",
        "s3:GetObjectVersion",
        versions.collect(),
    );
    let marker = inputs.marker.as_ref().filter(|_| watching).map(object);
    statement(
        "WatchReleaseMarker",
        "s3:GetObject",
        marker.into_iter().collect(),
    );
    if let Some(release) = &inputs.release {
        let owner = owner(release.owner);
        let manifests = format!("{}*", arn(&release.manifests));
        let objects = vec![
            (arn(&release.pointer), owner.clone()),
            (manifests, owner.clone()),
        ];
        statement("ReadReleases", "s3:GetObject", objects);
        // IAM fills `${aws:userid}` with the caller's id: for an instance role, `<role
        // id>:<instance id>`. Each instance writes its own record and no other's.
        let record = format!("{}${{aws:userid}}.json", arn(&release.fleet));
        statement("ReportToFleet", "s3:PutObject", vec![(record, owner)]);
    }
}

/// `EcrToken` and `EcrPull`: the token, and the pull actions on the repositories of the compose
/// file's images in the `ecr: true` registries (every repository of those registries when the
/// images are not known); `EcrPullThroughCache` on those an `ecr: true` mirror caches.
fn ecr_statements(out: &mut Statements, settings: &Settings, place: &Place, images: &Images) {
    let mut repositories: Vec<String> = Vec::new();
    let mut cached: Vec<String> = Vec::new();
    for registry in settings.registries.iter() {
        if registry.auth != RegistryAuth::Ecr {
            continue;
        }
        let host = registry.server.as_str();
        let (account, region) = ecr_host(host).unwrap_or((&place.account, &place.region));
        let repository = |name: &str| {
            let partition = partition_of(region);
            format!("arn:{partition}:ecr:{region}:{account}:repository/{name}")
        };
        // A pull through cache's repositories: under its prefix (all of them without one).
        let prefix = registry
            .mirror
            .as_ref()
            .map(|m| m.prefix.as_ref().map(|p| format!("{}/", p.as_str())));
        let is_cached = |name: &str| match &prefix {
            Some(Some(prefix)) => name.starts_with(prefix.as_str()),
            Some(None) => true,
            None => false,
        };
        match images {
            Images::Known(images) => {
                for image in images.iter().filter(|image| image.registry == host) {
                    repositories.push(repository(&image.repository));
                    if is_cached(&image.repository) {
                        cached.push(repository(&image.repository));
                    }
                }
            }
            Images::Unknown => {
                repositories.push(repository("*"));
                if let Some(prefix) = &prefix {
                    cached.push(repository(&format!("{}*", prefix.as_deref().unwrap_or(""))));
                }
            }
        }
    }
    if !repositories.is_empty() {
        out.allow("EcrToken", &["ecr:GetAuthorizationToken"], vec!["*".into()]);
    }
    let pull = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"];
    out.allow("EcrPull", &pull, repositories);
    let import = ["ecr:BatchImportUpstreamImage", "ecr:CreateRepository"];
    out.allow("EcrPullThroughCache", &import, cached);
}

/// The account and region of an ECR registry host (`<account>.dkr.ecr[-fips].<region>.amazonaws.com`
/// and its China form); `None` for any other host (a registry that stands in for ECR: the
/// instance's account and region).
fn ecr_host(host: &str) -> Option<(&str, &str)> {
    let parts: Vec<&str> = host.split('.').collect();
    let account = parts.first()?;
    let is_ecr = parts.len() >= 6
        && crate::config::types::AwsAccountId::parse(account).is_ok()
        && parts[1] == "dkr"
        && parts[2].starts_with("ecr")
        && parts[4] == "amazonaws";
    is_ecr.then(|| (*account, parts[3]))
}

/// `FindLifecycleHook`, `CompleteLifecycleAction`, `ReportInstanceHealth`, on the group.
fn lifecycle_statements(out: &mut Statements, settings: &Settings, place: &Place) -> Result<()> {
    if settings.lifecycle.hook == HookChoice::Off {
        return Ok(());
    }
    let Some(group) = &place.group else {
        return Err(input_error(
            "the Auto Scaling group is not known here (instance metadata has no `aws:autoscaling:groupName` tag): \
             name it with `--group NAME`, or `--group '*'` for every group of the account (or turn the hook off: `lifecycle.hook: off`)",
        ));
    };
    let group = format!("autoScalingGroup:*:autoScalingGroupName/{group}");
    let group = place.arn("autoscaling", &group);
    let find: &[&str] = match settings.lifecycle.hook {
        HookChoice::Auto => &[
            "autoscaling:DescribeAutoScalingInstances",
            "autoscaling:DescribeLifecycleHooks",
        ],
        _ => &["autoscaling:DescribeAutoScalingInstances"],
    };
    out.allow("FindLifecycleHook", find, vec!["*".into()]);
    let complete = [
        "autoscaling:CompleteLifecycleAction",
        "autoscaling:RecordLifecycleActionHeartbeat",
    ];
    out.allow("CompleteLifecycleAction", &complete, vec![group.clone()]);
    if settings.lifecycle.unhealthy_after.is_some() {
        let health = ["autoscaling:SetInstanceHealth"];
        out.allow("ReportInstanceHealth", &health, vec![group]);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
