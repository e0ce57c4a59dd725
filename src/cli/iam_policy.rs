//! `kicky-agent iam-policy`: the least-privilege IAM policy JSON for the effective config, for
//! the instance role. The ARNs need the partition, region, account and Auto Scaling group: from
//! the flags, else from the config (region) and instance metadata (the identity document, the
//! `aws:autoscaling:groupName` tag). An unknown region or account is `*` (said on stderr); an
//! unknown group is an error when the lifecycle hook is on (`--group '*'` asks for any group).
//! The ECR repositories are those of the compose file's images (`--compose`, else the config's
//! compose file when it is there; without one, every repository of the registry, said on stderr),
//! as they are pulled: through their registry's mirror, when the config has one.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;

use crate::compose::reference::ImageRef;
use crate::config::{RegistryAuth, Settings};
use crate::eoutln;
use crate::iam::{policy, Images, Place};
use crate::instance::imds::{Imds, InstanceMetadata, Tag};
use crate::lifecycle::GROUP_TAG;

/// Print the least-privilege IAM policy (JSON) for this config's instance role.
#[derive(Debug, Args)]
pub struct IamPolicyCmd {
    /// The AWS account id of the parameters, secrets and group (default: the instance's).
    #[arg(long)]
    account: Option<String>,
    /// The region (default: `aws.region`, else the instance's).
    #[arg(long)]
    region: Option<String>,
    /// The Auto Scaling group (default: the instance's); `'*'` for any group of the account.
    #[arg(long)]
    group: Option<String>,
    /// The compose file whose images name the ECR repositories (default: the config's).
    #[arg(long)]
    compose: Option<PathBuf>,
}

impl IamPolicyCmd {
    pub fn run(self, config: &Path) -> Result<()> {
        let settings = super::load(config)?;
        let region = self.region.or_else(|| settings.aws.region.clone());
        let needs_instance = region.is_none() || self.account.is_none() || self.group.is_none();
        let (found_region, account, group) = match needs_instance {
            true => super::block_on(instance_place())?,
            false => (None, None, None),
        };
        let region = region.or(found_region);
        let account = self.account.or(account);
        let group = self.group.or(group);
        for (what, value, flag) in [
            ("region", &region, "--region"),
            ("account", &account, "--account"),
        ] {
            if value.is_none() {
                eoutln!(
                    "kicky-agent: the {what} is not known here: `*` in its ARNs ({flag} sets it)"
                );
            }
        }
        let place = Place::new(region.as_deref(), account.as_deref(), group.as_deref());
        let images = images(&settings, self.compose.as_deref())?;
        let document = policy(&settings, &place, &images)?;
        let policy = serde_json::to_string_pretty(&document)?;
        crate::redact::to_stdout_exact(&format!("{policy}\n"));
        Ok(())
    }
}

/// The images of the compose file (`explicit`, else the config's), when an `ecr: true` registry
/// needs them.
fn images(settings: &Settings, explicit: Option<&Path>) -> Result<Images> {
    if !settings
        .registries
        .iter()
        .any(|r| r.auth == RegistryAuth::Ecr)
    {
        return Ok(Images::Known(Vec::new()));
    }
    let file = match (explicit, &settings.compose) {
        (Some(file), _) => file.to_path_buf(),
        (None, Some(compose)) if compose.file.exists() => compose.file.clone(),
        (None, _) => {
            eoutln!(
                "kicky-agent: no compose file here to name the ECR repositories: every repository of each `ecr: true` registry (`repository/*`; --compose FILE names them)"
            );
            return Ok(Images::Unknown);
        }
    };
    let variables = crate::compose::env_variables(settings)?;
    let mut project = crate::compose::load_file_with(&file, &settings.project, variables)?;
    // The images as they are pulled: through their mirrors.
    crate::compose::mirror::Mirrors::of(&settings.registries).apply(&mut project);
    let images = project
        .services
        .values()
        .map(|service| {
            ImageRef::parse(&service.image)
                .map_err(|e| crate::error::input_error(format!("{}: {e}", file.display())))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Images::Known(images))
}

/// Region, account and group from instance metadata, where it answers.
async fn instance_place() -> (Option<String>, Option<String>, Option<String>) {
    let document = crate::instance::identity::identity_document().await.ok();
    let field = |name: &str| {
        document
            .as_ref()
            .and_then(|d| d[name].as_str())
            .map(str::to_string)
    };
    let group = match Imds::new() {
        Some(imds) => match imds.tag(GROUP_TAG).await {
            Ok(Tag::Value(group)) => Some(group),
            _ => None,
        },
        None => None,
    };
    (field("region"), field("accountId"), group)
}
