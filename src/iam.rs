//! The least-privilege IAM policy for a config: what `kicky-agent iam-policy` prints, for the
//! instance role. A pure function of the settings and of where the instance is (partition, region,
//! account, group); one statement per job, each with the exact actions the agent calls and the
//! exact resources it calls them on, so that taking any one away breaks that job and only it.
//!
//! What each statement is for (the calls in `src/aws/` and `src/engine/registry.rs`):
//! - `ReadParameters`: GetParameters (with decryption) of each `name:` entry and of registry
//!   credentials, by exact ARN; `ReadParameterPaths`: GetParametersByPath of each `path:` entry,
//!   the one place with a wildcard (what is under the path). `WatchParameterVersions`:
//!   DescribeParameters, which takes no resource, when the daemon watches.
//! - `DecryptViaServices`: kms:Decrypt for SecureStrings and secrets under a customer key, only
//!   when SSM or Secrets Manager asks on the agent's behalf (`kms:ViaService`).
//! - `ReadSecrets`: GetSecretValue (and DescribeSecret, to watch versions) on each secret;
//!   `BatchReadSecrets`: BatchGetSecretValue, which takes no resource (each secret in the batch
//!   is still checked against `ReadSecrets`).
//! - `ReadFiles`: s3:GetObject on each object (HeadObject, to watch ETags, is the same action);
//!   `ReadPinnedFileVersions`: s3:GetObjectVersion on the objects pinned to a version.
//! - `EcrToken` and `EcrPull`: when a registry has `ecr: true`.
//! - `FindLifecycleHook`, `CompleteLifecycleAction`, `ReportInstanceHealth`: when the lifecycle
//!   hook is on (and `unhealthy_after` is set), on the group.

use serde_json::{json, Value};

use crate::config::{Credential, HookChoice, ParamSource, RegistryAuth, Settings};

/// Where the instance is: what the ARNs are built from. `*` where unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub partition: String,
    pub region: String,
    pub account: String,
    /// The Auto Scaling group's name.
    pub group: String,
}

impl Place {
    pub fn new(region: Option<&str>, account: Option<&str>, group: Option<&str>) -> Place {
        let region = region.unwrap_or("*");
        Place {
            partition: partition_of(region).to_string(),
            region: region.to_string(),
            account: account.unwrap_or("*").to_string(),
            group: group.unwrap_or("*").to_string(),
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

/// A secret's ARN. By name, Secrets Manager appends `-` and six random characters.
fn secret_arn(place: &Place, id: &str) -> String {
    if id.starts_with("arn:") {
        return id.to_string();
    }
    place.arn("secretsmanager", &format!("secret:{id}-??????"))
}

/// Statements, each added only when it has a resource.
#[derive(Default)]
struct Statements(Vec<Value>);

impl Statements {
    fn allow(&mut self, sid: &str, actions: &[&str], mut resources: Vec<String>) {
        resources.sort();
        resources.dedup();
        if !resources.is_empty() {
            self.0.push(json!({
                "Sid": sid,
                "Effect": "Allow",
                "Action": actions,
                "Resource": resources,
            }));
        }
    }
}

/// The policy document for `settings`.
pub fn policy(settings: &Settings, place: &Place) -> Value {
    let mut out = Statements::default();
    let watching = !settings.watch_interval.is_zero();
    let anything = || vec!["*".to_string()];

    let mut names: Vec<String> = Vec::new();
    let mut paths: Vec<String> = Vec::new();
    let mut secrets: Vec<String> = Vec::new();
    let mut batched = false;
    for source in settings.env.iter().flat_map(|e| &e.sources) {
        match &source.from {
            ParamSource::Document { name } | ParamSource::Single { name, .. } => {
                names.push(parameter_arn(place, name.as_str()))
            }
            ParamSource::Path { path, .. } => {
                let base = parameter_arn(place, path.as_str().trim_end_matches('/'));
                paths.push(format!("{base}/*"));
                paths.push(base);
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
    let reads_secrets = !secrets.is_empty();
    out.allow("ReadParameters", &["ssm:GetParameters"], names);
    out.allow("ReadParameterPaths", &["ssm:GetParametersByPath"], paths);
    if watching && reads_ssm {
        out.allow(
            "WatchParameterVersions",
            &["ssm:DescribeParameters"],
            anything(),
        );
    }
    let secret_actions: &[&str] = match watching {
        true => &[
            "secretsmanager:GetSecretValue",
            "secretsmanager:DescribeSecret",
        ],
        false => &["secretsmanager:GetSecretValue"],
    };
    out.allow("ReadSecrets", secret_actions, secrets);
    if reads_secrets && batched {
        out.allow(
            "BatchReadSecrets",
            &["secretsmanager:BatchGetSecretValue"],
            anything(),
        );
    }
    let via: Vec<String> = [
        reads_ssm.then(|| format!("ssm.{}.amazonaws.com", place.region)),
        reads_secrets.then(|| format!("secretsmanager.{}.amazonaws.com", place.region)),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !via.is_empty() {
        out.0.push(json!({
            "Sid": "DecryptViaServices",
            "Effect": "Allow",
            "Action": ["kms:Decrypt"],
            "Resource": [place.arn("kms", "key/*")],
            "Condition": { "StringEquals": { "kms:ViaService": via } },
        }));
    }

    let object = |f: &crate::config::FileSettings| {
        let (bucket, key) = (&f.source.bucket, &f.source.key);
        format!("arn:{}:s3:::{bucket}/{key}", place.partition)
    };
    let objects = settings.files.iter().map(object).collect();
    let pinned = settings
        .files
        .iter()
        .filter(|f| f.version_id.is_some())
        .map(object);
    out.allow("ReadFiles", &["s3:GetObject"], objects);
    out.allow(
        "ReadPinnedFileVersions",
        &["s3:GetObjectVersion"],
        pinned.collect(),
    );

    let repositories: Vec<String> = settings
        .registries
        .iter()
        .filter(|r| r.auth == RegistryAuth::Ecr)
        .map(|r| ecr_repositories(r.server.as_str(), &place.region))
        .collect();
    if !repositories.is_empty() {
        out.allow("EcrToken", &["ecr:GetAuthorizationToken"], anything());
    }
    let pull = [
        "ecr:BatchCheckLayerAvailability",
        "ecr:BatchGetImage",
        "ecr:GetDownloadUrlForLayer",
    ];
    out.allow("EcrPull", &pull, repositories);

    if settings.lifecycle.hook != HookChoice::Off {
        let group = format!("autoScalingGroup:*:autoScalingGroupName/{}", place.group);
        let group = place.arn("autoscaling", &group);
        let find: &[&str] = match settings.lifecycle.hook {
            HookChoice::Auto => &[
                "autoscaling:DescribeAutoScalingInstances",
                "autoscaling:DescribeLifecycleHooks",
            ],
            _ => &["autoscaling:DescribeAutoScalingInstances"],
        };
        out.allow("FindLifecycleHook", find, anything());
        let complete = [
            "autoscaling:CompleteLifecycleAction",
            "autoscaling:RecordLifecycleActionHeartbeat",
        ];
        out.allow("CompleteLifecycleAction", &complete, vec![group.clone()]);
        if settings.lifecycle.unhealthy_after.is_some() {
            let health = ["autoscaling:SetInstanceHealth"];
            out.allow("ReportInstanceHealth", &health, vec![group]);
        }
    }
    json!({ "Version": "2012-10-17", "Statement": out.0 })
}

/// The repositories of an ECR registry host (`<account>.dkr.ecr.<region>.amazonaws.com`): its own
/// account and region, whatever the instance's.
fn ecr_repositories(host: &str, region: &str) -> String {
    let parts: Vec<&str> = host.split('.').collect();
    let account = parts.first().copied().unwrap_or("*");
    let region = parts.get(3).copied().unwrap_or(region);
    let partition = partition_of(region);
    format!("arn:{partition}:ecr:{region}:{account}:repository/*")
}

#[cfg(test)]
mod tests;
