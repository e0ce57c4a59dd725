//! Spot interruptions: EC2 puts an interruption notice in instance metadata
//! (`spot/instance-action`) two minutes before it stops, hibernates or terminates a Spot
//! instance, and a rebalance recommendation (`events/recommendations/rebalance`) when the
//! instance is at elevated risk of one. Both are local reads (no AWS call, no IAM right); AWS
//! suggests reading every 5 seconds. On an instance that is not Spot
//! (`instance-life-cycle` says `on-demand` or `scheduled`) neither ever comes, and nothing is read
//! again.

use anyhow::Result;
use serde::Deserialize;

use super::imds::raw_get;

/// What one look at instance metadata found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// Not a Spot instance: nothing to watch.
    NotSpot,
    Quiet,
    /// `spot/instance-action`: the action (`terminate`, `stop`, `hibernate`) and when.
    Interruption {
        action: String,
        time: String,
    },
    /// `events/recommendations/rebalance`: when the recommendation was made.
    Rebalance {
        notice_time: String,
    },
}

impl Seen {
    /// In words, for the journal and `STATUS=`.
    pub fn describe(&self) -> String {
        match self {
            Seen::NotSpot => "not a Spot instance".to_string(),
            Seen::Quiet => "no notice".to_string(),
            Seen::Interruption { action, time } => {
                format!("Spot interruption notice: {action} at {time}")
            }
            Seen::Rebalance { notice_time } => {
                format!("Spot rebalance recommendation (at {notice_time})")
            }
        }
    }
}

#[derive(Deserialize)]
struct InstanceAction {
    action: String,
    time: String,
}

#[derive(Deserialize)]
struct Rebalance {
    #[serde(rename = "noticeTime")]
    notice_time: String,
}

/// Whether this is a Spot instance (`instance-life-cycle`); `false` where metadata has no such
/// path.
pub async fn is_spot() -> Result<bool> {
    let raw = raw_get("/latest/meta-data/instance-life-cycle").await?;
    Ok(raw.is_some_and(|raw| String::from_utf8_lossy(&raw).trim() == "spot"))
}

/// The notice that stands: an interruption first, then a rebalance recommendation.
pub async fn look() -> Result<Seen> {
    if let Some(raw) = raw_get("/latest/meta-data/spot/instance-action").await? {
        return Ok(interruption(&raw));
    }
    match raw_get("/latest/meta-data/events/recommendations/rebalance").await? {
        Some(raw) => Ok(rebalance(&raw)),
        None => Ok(Seen::Quiet),
    }
}

/// An interruption notice; one that cannot be read is an interruption all the same (its time
/// unknown): two minutes are not spent arguing with metadata.
fn interruption(raw: &[u8]) -> Seen {
    match serde_json::from_slice::<InstanceAction>(raw) {
        Ok(notice) => Seen::Interruption {
            action: printable(&notice.action),
            time: printable(&notice.time),
        },
        Err(_) => Seen::Interruption {
            action: "an action".to_string(),
            time: "an unreadable time".to_string(),
        },
    }
}

fn rebalance(raw: &[u8]) -> Seen {
    let notice_time = serde_json::from_slice::<Rebalance>(raw)
        .map(|r| printable(&r.notice_time))
        .unwrap_or_else(|_| "an unreadable time".to_string());
    Seen::Rebalance { notice_time }
}

/// What EC2 wrote, made printable and cut short.
fn printable(text: &str) -> String {
    text.trim()
        .chars()
        .take(64)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_are_read_as_ec2_writes_them() {
        assert_eq!(
            interruption(br#"{"action": "terminate", "time": "2026-12-08T08:22:00Z"}"#),
            Seen::Interruption {
                action: "terminate".into(),
                time: "2026-12-08T08:22:00Z".into()
            }
        );
        assert_eq!(
            interruption(b"garbage").describe(),
            "Spot interruption notice: an action at an unreadable time"
        );
        assert_eq!(
            rebalance(br#"{"noticeTime": "2026-12-08T08:17:00Z"}"#),
            Seen::Rebalance {
                notice_time: "2026-12-08T08:17:00Z".into()
            }
        );
        assert_eq!(
            interruption(b"{\"action\": \"stop\\u001b[2J\", \"time\": \"t\"}").describe(),
            "Spot interruption notice: stop [2J at t",
        );
    }
}
