//! What the agent reads about the instance it runs on, from instance metadata: who it is
//! ([`identity`]: account, region, instance id), its user data ([`user_data`]), its tags, and where
//! Auto Scaling is taking it ([`TargetState`]).
//!
//! The layer just above the base: the config takes what is read here as an input ([`Overrides`],
//! merged over its files by `config::load_with`) and nothing here knows the config, so loading
//! the config from its files reads no network, and what reads the instance depends on nothing
//! that reads the config.

pub mod identity;
pub mod imds;
pub mod spot;
pub mod user_data;

use anyhow::Result;

use imds::Imds;

/// Instance tags whose key starts with this set one config key each.
pub const TAG_PREFIX: &str = "kicky-agent:";

/// What instance metadata says to change in the baked config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// The `#kicky-agent` document of the user data, the marker line included.
    pub user_data: Option<String>,
    /// `kicky-agent:<key>` tags, the prefix taken off, in key order.
    pub tags: Vec<(String, String)>,
    /// Not an override, but read from instance metadata with them: where Auto Scaling is taking
    /// the instance (a warm pool, service, termination), which decides what a sync does.
    pub target_state: Option<TargetState>,
}

/// Where Auto Scaling is taking this instance: instance metadata's
/// `autoscaling/target-lifecycle-state`, polled by the daemon (a local read, no AWS call).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetState {
    InService,
    /// Into the warm pool: `Warmed:Stopped`, `Warmed:Running`, `Warmed:Hibernated`.
    Warmed(String),
    /// Scale-in, instance refresh, or a replacement: the instance is on its way out.
    Terminated,
    Other(String),
}

impl TargetState {
    pub fn parse(text: &str) -> TargetState {
        match text.trim() {
            "InService" => TargetState::InService,
            "Terminated" | "Warmed:Terminated" => TargetState::Terminated,
            warm if warm.starts_with("Warmed:") => TargetState::Warmed(warm.to_string()),
            other => TargetState::Other(other.to_string()),
        }
    }

    pub fn is_warm(&self) -> bool {
        matches!(self, TargetState::Warmed(_))
    }

    /// As instance metadata says it.
    pub fn as_str(&self) -> &str {
        match self {
            TargetState::InService => "InService",
            TargetState::Terminated => "Terminated",
            TargetState::Warmed(state) | TargetState::Other(state) => state,
        }
    }
}

/// This instance's target lifecycle state; `None` where instance metadata has none (not in an
/// Auto Scaling group, or not on EC2).
pub async fn target_state() -> Result<Option<TargetState>> {
    let raw = imds::raw_get("/latest/meta-data/autoscaling/target-lifecycle-state").await?;
    Ok(raw.map(|raw| TargetState::parse(&String::from_utf8_lossy(&raw))))
}

/// Reads the overrides from instance metadata: user data (when `user_data`), the
/// `kicky-agent:` tags (when `tags`), and the target lifecycle state (when `lifecycle`). Where
/// instance metadata does not answer (not on EC2), or is disabled, there are none; that is
/// logged, not an error.
pub async fn read_overrides(user_data: bool, tags: bool, lifecycle: bool) -> Overrides {
    let mut overrides = Overrides::default();
    if !user_data && !tags && !lifecycle {
        return overrides;
    }
    let Some(imds) = Imds::new() else {
        return overrides;
    };
    // The three reads at once: off EC2 each waits out its bound, and a command should wait one.
    let user_data = async { user_data.then_some(imds.user_data().await) };
    let tags = async { tags.then_some(imds.tags_with_prefix(TAG_PREFIX).await) };
    let target = async { lifecycle.then_some(target_state().await) };
    let (user_data, tags, target) = futures::join!(user_data, tags, target);
    match user_data {
        Some(Ok(Some(raw))) => match user_data::extract(&raw) {
            Ok(doc) => overrides.user_data = doc,
            Err(e) => tracing::warn!("user data ignored: {e:#}"),
        },
        Some(Err(e)) => tracing::info!("no launch-template overrides: {e:#}"),
        _ => {}
    }
    match tags {
        Some(Ok(found)) => overrides.tags = found,
        Some(Err(e)) => tracing::debug!("no tag overrides: {e:#}"),
        None => {}
    }
    match target {
        Some(Ok(state)) => overrides.target_state = state,
        Some(Err(e)) => tracing::debug!("no target lifecycle state: {e:#}"),
        None => {}
    }
    overrides
}
