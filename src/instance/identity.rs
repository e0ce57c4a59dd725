//! Who this instance is: its identity document (account, region, instance id), and the account
//! id as a checked value, which the config also reads (the expected owner of a bucket).

use anyhow::{Context, Result};
use serde::{de, Deserialize, Deserializer};

use super::imds::raw_get;

/// An AWS account id: exactly 12 digits (the expected owner of a bucket).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsAccountId(String);

impl AwsAccountId {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.len() == 12 && s.chars().all(|c| c.is_ascii_digit()) {
            Ok(AwsAccountId(s.to_string()))
        } else {
            Err(format!(
                "{s:?} is not an AWS account id (12 digits; quote it in YAML: \"012345678901\")"
            ))
        }
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// As the config's values are read: refused while the YAML is read, so the error has its line.
impl<'de> Deserialize<'de> for AwsAccountId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        AwsAccountId::parse(&s).map_err(de::Error::custom)
    }
}

/// This instance's identity document (account, region, instance id...), as JSON.
pub async fn identity_document() -> Result<serde_json::Value> {
    let raw = raw_get("/latest/dynamic/instance-identity/document")
        .await?
        .context("instance metadata has no identity document")?;
    serde_json::from_slice(&raw).context("the identity document is not JSON")
}

/// The AWS account this instance runs in, from its identity document; read once per process
/// (an instance never changes account), so the daemon's watch asks instance metadata nothing.
pub async fn instance_account() -> Result<&'static str> {
    static ACCOUNT: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    let account = ACCOUNT
        .get_or_try_init(|| async {
            let document = identity_document().await?;
            let account = document["accountId"].as_str().unwrap_or_default();
            let id = AwsAccountId::parse(account)
                .map_err(|e| anyhow::anyhow!("the identity document's accountId: {e}"))?;
            Ok::<_, anyhow::Error>(id.into_string())
        })
        .await
        .context("failed to read this instance's account from its identity document")?;
    Ok(account)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_account_ids_are_twelve_digits() {
        assert!(AwsAccountId::parse("012345678901").is_ok());
        for bad in [
            "",
            "12345678901",
            "1234567890123",
            "12345678901a",
            " 123456789012",
            "*",
        ] {
            assert!(AwsAccountId::parse(bad).is_err(), "{bad}");
        }
    }
}
