//! `kicky-agent iam-policy`: the least-privilege IAM policy JSON for the effective config, for
//! the instance role. The ARNs need the partition, region, account and Auto Scaling group: from
//! the flags, else from the config (region) and instance metadata (the identity document, the
//! `aws:autoscaling:groupName` tag), else `*` (said on stderr).

use std::path::Path;

use anyhow::Result;
use clap::Args;

use crate::aws::imds::{Imds, InstanceMetadata, Tag};
use crate::eoutln;
use crate::iam::{policy, Place};
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
    /// The Auto Scaling group (default: the instance's).
    #[arg(long)]
    group: Option<String>,
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
            ("Auto Scaling group", &group, "--group"),
        ] {
            if value.is_none() {
                eoutln!(
                    "kicky-agent: the {what} is not known here: `*` in its ARNs ({flag} sets it)"
                );
            }
        }
        let place = Place::new(region.as_deref(), account.as_deref(), group.as_deref());
        let policy = serde_json::to_string_pretty(&policy(&settings, &place))?;
        crate::redact::to_stdout_exact(&format!("{policy}\n"));
        Ok(())
    }
}

/// Region, account and group from instance metadata, where it answers.
async fn instance_place() -> (Option<String>, Option<String>, Option<String>) {
    let document = crate::aws::imds::raw_get("/latest/dynamic/instance-identity/document").await;
    let document: Option<serde_json::Value> = document
        .ok()
        .flatten()
        .and_then(|raw| serde_json::from_slice(&raw).ok());
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
