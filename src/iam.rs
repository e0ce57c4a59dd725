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
//! - `EcrToken` and `EcrPull`: when a registry has `ecr: true`: the token, and the pull actions
//!   (BatchGetImage, GetDownloadUrlForLayer) on the repositories of the compose file's images.
//! - `FindLifecycleHook`, `CompleteLifecycleAction`, `ReportInstanceHealth`: when the lifecycle
//!   hook is on (and `unhealthy_after` is set), on the group.
//!
//! A condition value with a wildcard is written under `StringLike`: `StringEquals` compares
//! literally and would never match it.

use anyhow::Result;
use serde_json::{json, Map, Value};

use crate::compose::reference::ImageRef;
use crate::config::{Credential, HookChoice, ParamSource, RegistryAuth, Settings};
use crate::error::input_error;

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
    let anything = || vec!["*".to_string()];

    let mut names: Vec<String> = Vec::new();
    let mut paths: Vec<String> = Vec::new();
    let mut under_paths: Vec<String> = Vec::new();
    let mut secrets: Vec<String> = Vec::new();
    let mut batched = false;
    for source in settings.env.iter().flat_map(|e| &e.sources) {
        match &source.from {
            ParamSource::Document { name } | ParamSource::Single { name, .. } => {
                names.push(parameter_arn(place, name.as_str()))
            }
            ParamSource::Path { path, .. } => {
                // The path's own ARN, and what is under it: the path as the agent sends it may
                // end in `/`.
                let (base, under) = path_arns(place, path.as_str());
                paths.extend([base, under.clone()]);
                under_paths.push(under);
            }
            ParamSource::Secret { id, stage, .. } => {
                secrets.push(secret_arn(place, id.as_str()));
                batched |= stage.is_none();
            }
        }
    }
    for registry in &settings.registries {
        if let RegistryAuth::Password { username, password } = &registry.auth {
            names.push(parameter_arn(place, password.as_str()));
            if let Credential::Parameter { parameter } = username {
                names.push(parameter_arn(place, parameter.as_str()));
            }
        }
    }
    let reads_ssm = !names.is_empty() || !paths.is_empty();
    let decrypted: Vec<String> = names.iter().chain(&under_paths).cloned().collect();
    out.allow("ReadParameters", &["ssm:GetParameters"], names);
    out.allow("ReadParameterPaths", &["ssm:GetParametersByPath"], paths);
    if watching && reads_ssm {
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

    let secret_actions: &[&str] = match watching {
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

    files_statements(&mut out, settings, place, watching);
    ecr_statements(&mut out, settings, place, images);
    lifecycle_statements(&mut out, settings, place)?;
    Ok(json!({ "Version": "2012-10-17", "Statement": out.0 }))
}

/// `ReadFiles`, `ReadPinnedFileVersions`, `WatchReleaseMarker`: each object by ARN, in buckets of
/// the accounts the calls expect to own them.
fn files_statements(out: &mut Statements, settings: &Settings, place: &Place, watching: bool) {
    let object = |uri: &crate::config::types::S3Uri| {
        format!("arn:{}:s3:::{}/{}", place.partition, uri.bucket, uri.key)
    };
    let owner = |owner: &Option<String>| owner.clone().unwrap_or_else(|| place.account.clone());
    let mut statement = |sid: &str, action: &str, objects: Vec<(String, String)>| {
        let (arns, owners): (Vec<String>, Vec<String>) = objects.into_iter().unzip();
        let when = Conditions::default().string("s3:ResourceAccount", owners);
        out.allow_if(sid, &[action], arns, when);
    };
    let files = &settings.files;
    let all = files
        .iter()
        .map(|f| (object(&f.source), owner(&f.expected_owner)));
    statement("ReadFiles", "s3:GetObject", all.collect());
    let pinned = files
        .iter()
        .filter(|f| f.version_id.is_some())
        .map(|f| (object(&f.source), owner(&f.expected_owner)));
    statement(
        "ReadPinnedFileVersions",
        "s3:GetObjectVersion",
        pinned.collect(),
    );
    let marker = settings
        .watch_marker
        .as_ref()
        .filter(|_| watching)
        .map(|m| (object(m), owner(&settings.watch_marker_owner)));
    statement(
        "WatchReleaseMarker",
        "s3:GetObject",
        marker.into_iter().collect(),
    );
}

/// `EcrToken` and `EcrPull`: the token, and the pull actions on the repositories of the compose
/// file's images in the `ecr: true` registries (every repository of those registries when the
/// images are not known).
fn ecr_statements(out: &mut Statements, settings: &Settings, place: &Place, images: &Images) {
    let mut repositories: Vec<String> = Vec::new();
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
        match images {
            Images::Known(images) => repositories.extend(
                images
                    .iter()
                    .filter(|image| image.registry == host)
                    .map(|image| repository(&image.repository)),
            ),
            Images::Unknown => repositories.push(repository("*")),
        }
    }
    if !repositories.is_empty() {
        out.allow("EcrToken", &["ecr:GetAuthorizationToken"], vec!["*".into()]);
    }
    let pull = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"];
    out.allow("EcrPull", &pull, repositories);
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
