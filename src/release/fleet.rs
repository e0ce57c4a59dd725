//! The fleet view: what each instance runs and how it went, as the instances themselves report it.
//!
//! Each daemon with `release.store` writes one small object after every sync,
//! `<store>/fleet/<caller id>.json`, where the caller id is IAM's `aws:userid` of its role
//! session: `<role id>:<instance id>` on EC2, whose role sessions are named after the instance.
//! The instance policy lets a role session write that one key and no other (`${aws:userid}` in
//! the resource), so the instance id a record is filed under is one the writer cannot choose:
//! it comes from the key, not from the record. `release status` reads them all and groups them
//! by release ([`view`]). An operator can read the same objects with `aws s3`.
//!
//! This module is the value and the grouping, with no I/O; writing and listing are
//! [`crate::aws::releases`], the record of a sync [`crate::sync::fleet`].

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, bail, Result};
use serde::{Deserialize, Serialize};

use super::ReleaseId;

/// The record schema this agent writes and reads.
pub const RECORD_SCHEMA: u32 = 1;

/// Where the records are, under `release.store`.
pub const PREFIX: &str = "fleet/";

/// A record not written again for this long belongs to an instance that stopped reporting
/// (terminated without a drain, stopped, or cut off): listed apart, whatever it said. A daemon
/// writes after every sync and at least every [`REFRESH`].
pub const SILENT_AFTER: Duration = Duration::from_secs(3 * 3600);

/// How often a daemon writes its record again when nothing changed, so that [`SILENT_AFTER`]
/// means something.
pub const REFRESH: Duration = Duration::from_secs(3600);

/// What one instance reports about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub schema: u32,
    /// The release its containers run (the last good sync's); `None` before any.
    pub release: Option<ReleaseId>,
    /// Whether its last sync converged with every service healthy.
    pub healthy: bool,
    /// Its last failure, while it stands (a later good sync of the same release clears it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<Failure>,
    /// When it wrote this (RFC 3339).
    pub at: String,
    /// The agent's version.
    pub agent: String,
}

/// A sync that failed: which release it was applying and why, in one line (names, never values).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Failure {
    pub release: Option<ReleaseId>,
    pub at: String,
    pub reason: String,
}

/// The key of the record of the caller `user_id` (IAM's `aws:userid`), under the store.
pub fn record_key(user_id: &str) -> Result<String> {
    // IAM's unique ids and EC2 instance ids: letters, digits, and the `:` between role id and
    // session name. Nothing that could leave the prefix or need escaping.
    let ok = !user_id.is_empty()
        && user_id.len() <= 128
        && user_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '-' | '_' | '.' | '@'));
    if !ok {
        bail!("the caller id {user_id:?} cannot name a fleet record");
    }
    Ok(format!("{PREFIX}{user_id}.json"))
}

/// The instance a record's key names: the role session's name after the role id (on EC2, the
/// instance id), else the whole caller id. `None` for a key that is not a record's.
pub fn instance_of(key_in_store: &str) -> Option<&str> {
    let user_id = key_in_store.strip_prefix(PREFIX)?.strip_suffix(".json")?;
    record_key(user_id).ok()?;
    Some(
        user_id
            .rsplit_once(':')
            .map_or(user_id, |(_, session)| session),
    )
}

impl Record {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("a record serializes")
    }

    pub fn from_json(bytes: &[u8], at: &str) -> Result<Record> {
        let record: Record = serde_json::from_slice(bytes)
            .map_err(|e| anyhow!("{at} is not a fleet record: {e}"))?;
        if record.schema != RECORD_SCHEMA {
            bail!(
                "{at}: record schema {}; this agent reads schema {RECORD_SCHEMA}",
                record.schema
            );
        }
        Ok(record)
    }
}

/// How an instance stands against the promoted release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Standing {
    /// Runs the promoted release, and its last sync went well.
    Healthy,
    /// Its last sync failed: listed under the release it was applying.
    Failed,
    /// Runs a release other than the promoted one (behind it, or ahead in a wave), and its last
    /// sync went well.
    Drifting,
}

/// One instance in the view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Member {
    pub instance: String,
    pub standing: Standing,
    /// Why it failed, for a failed one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When it last reported.
    pub at: String,
}

/// The instances of one release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Group {
    /// `None`: instances that run no release yet.
    pub release: Option<ReleaseId>,
    pub promoted: bool,
    pub members: Vec<Member>,
}

impl Group {
    pub fn count(&self, standing: Standing) -> usize {
        self.members
            .iter()
            .filter(|m| m.standing == standing)
            .count()
    }
}

/// The whole fleet as its records tell it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct View {
    pub promoted: Option<ReleaseId>,
    /// The promoted release first, then the others newest first.
    pub releases: Vec<Group>,
    /// Instances whose record is older than [`SILENT_AFTER`]: not counted above.
    pub silent: Vec<Silent>,
}

/// An instance that stopped reporting, with what it last said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Silent {
    pub instance: String,
    pub last: Record,
}

/// Groups `records` (instance, record) by release, against the `promoted` one, as of `now`.
pub fn view(promoted: Option<&ReleaseId>, records: Vec<(String, Record)>, now: SystemTime) -> View {
    let mut groups: BTreeMap<Option<ReleaseId>, Vec<Member>> = BTreeMap::new();
    let mut silent = Vec::new();
    for (instance, record) in records {
        let age = humantime::parse_rfc3339(&record.at)
            .ok()
            .and_then(|at| now.duration_since(at).ok());
        // A record with no readable time, or older than the bound, tells nothing current.
        if age.is_none_or(|age| age > SILENT_AFTER) {
            silent.push(Silent {
                instance,
                last: record,
            });
            continue;
        }
        let (release, standing, reason) = match (&record.failed, record.healthy) {
            (Some(f), _) => (
                f.release.clone().or(record.release.clone()),
                Standing::Failed,
                Some(f.reason.clone()),
            ),
            (None, false) => (record.release.clone(), Standing::Failed, None),
            (None, true) if record.release.as_ref() == promoted => {
                (record.release.clone(), Standing::Healthy, None)
            }
            (None, true) => (record.release.clone(), Standing::Drifting, None),
        };
        groups.entry(release).or_default().push(Member {
            instance,
            standing,
            reason,
            at: record.at,
        });
    }
    if let Some(p) = promoted {
        groups.entry(Some(p.clone())).or_default();
    }
    let mut releases: Vec<Group> = groups
        .into_iter()
        .map(|(release, mut members)| {
            members.sort_by(|a, b| (a.standing, &a.instance).cmp(&(b.standing, &b.instance)));
            Group {
                promoted: release.is_some() && release.as_ref() == promoted,
                release,
                members,
            }
        })
        .collect();
    // Promoted first, then newest first (ids sort by time), no release last.
    releases.sort_by(|a, b| {
        (!a.promoted, a.release.is_none())
            .cmp(&(!b.promoted, b.release.is_none()))
            .then_with(|| b.release.cmp(&a.release))
    });
    silent.sort_by(|a, b| a.instance.cmp(&b.instance));
    View {
        promoted: promoted.cloned(),
        releases,
        silent,
    }
}

impl View {
    /// The view as `release status` prints it: a line per release with its counts, then the
    /// instances of each standing.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        for group in &self.releases {
            let name = group
                .release
                .as_ref()
                .map_or("no release".to_string(), ToString::to_string);
            let mark = if group.promoted { " (promoted)" } else { "" };
            let counts: Vec<String> = [Standing::Healthy, Standing::Failed, Standing::Drifting]
                .into_iter()
                .map(|s| (s, group.count(s)))
                .filter(|(_, n)| *n > 0)
                .map(|(s, n)| format!("{n} {}", standing_word(s)))
                .collect();
            let counts = match counts.is_empty() {
                true => "no instance".to_string(),
                false => counts.join(", "),
            };
            out.push(format!("release {name}{mark}: {counts}"));
            for standing in [Standing::Healthy, Standing::Failed, Standing::Drifting] {
                let members: Vec<&Member> = group
                    .members
                    .iter()
                    .filter(|m| m.standing == standing)
                    .collect();
                if members.is_empty() {
                    continue;
                }
                if standing == Standing::Failed {
                    for m in members {
                        let why = m.reason.as_deref().unwrap_or("unhealthy");
                        out.push(format!("  failed: {} ({why})", m.instance));
                    }
                } else {
                    let ids: Vec<&str> = members.iter().map(|m| m.instance.as_str()).collect();
                    out.push(format!("  {}: {}", standing_word(standing), ids.join(", ")));
                }
            }
        }
        for Silent {
            instance,
            last: record,
        } in &self.silent
        {
            let release = record
                .release
                .as_ref()
                .map_or("no release".to_string(), ToString::to_string);
            out.push(format!(
                "silent: {instance} (last report {} on {release}; none for over {})",
                record.at,
                humantime::format_duration(SILENT_AFTER)
            ));
        }
        out
    }
}

fn standing_word(s: Standing) -> &'static str {
    match s {
        Standing::Healthy => "healthy",
        Standing::Failed => "failed",
        Standing::Drifting => "drifting",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> ReleaseId {
        ReleaseId::parse(&format!("2026120{n}T100000000Z-00000{n}")).unwrap()
    }

    fn at(seconds_ago: u64, now: SystemTime) -> String {
        humantime::format_rfc3339_seconds(now - Duration::from_secs(seconds_ago)).to_string()
    }

    fn record(release: Option<u32>, healthy: bool, failed: Option<u32>, at: String) -> Record {
        Record {
            schema: RECORD_SCHEMA,
            release: release.map(id),
            healthy,
            failed: failed.map(|f| Failure {
                release: Some(id(f)),
                at: at.clone(),
                reason: "web never became healthy".into(),
            }),
            at,
            agent: "0.1.0".into(),
        }
    }

    /// Each record's standing and group, against the promoted release.
    #[test]
    fn each_instance_stands_under_the_release_it_runs_or_failed_to_apply() {
        let now = SystemTime::now();
        let fresh = || at(60, now);
        // (instance, record) → (group, standing), with release 2 promoted.
        let table = [
            (
                "i-a",
                record(Some(2), true, None, fresh()),
                Some(2),
                Standing::Healthy,
            ),
            (
                "i-b",
                record(Some(1), true, None, fresh()),
                Some(1),
                Standing::Drifting,
            ),
            // A wave ahead of the promoted release drifts too.
            (
                "i-c",
                record(Some(3), true, None, fresh()),
                Some(3),
                Standing::Drifting,
            ),
            // Failed to apply 3, rolled back to 1: listed under 3.
            (
                "i-d",
                record(Some(1), true, Some(3), fresh()),
                Some(3),
                Standing::Failed,
            ),
            // Never converged at all.
            (
                "i-e",
                record(None, false, None, fresh()),
                None,
                Standing::Failed,
            ),
            (
                "i-f",
                record(None, true, None, fresh()),
                None,
                Standing::Drifting,
            ),
        ];
        let records = table
            .iter()
            .map(|(i, r, _, _)| (i.to_string(), r.clone()))
            .collect();
        let v = view(Some(&id(2)), records, now);
        for (instance, _, release, standing) in &table {
            let group = v
                .releases
                .iter()
                .find(|g| g.members.iter().any(|m| m.instance == *instance))
                .unwrap_or_else(|| panic!("{instance} in no group"));
            assert_eq!(group.release, release.map(id), "{instance}");
            let member = group
                .members
                .iter()
                .find(|m| m.instance == *instance)
                .unwrap();
            assert_eq!(member.standing, *standing, "{instance}");
        }
        // The promoted release first, then newest first, no release last.
        let order: Vec<Option<ReleaseId>> = v.releases.iter().map(|g| g.release.clone()).collect();
        assert_eq!(order, [Some(id(2)), Some(id(3)), Some(id(1)), None]);
        assert!(v.releases[0].promoted && !v.releases[1].promoted);
        assert!(v.silent.is_empty());
    }

    #[test]
    fn an_old_or_undated_record_is_silent_not_counted() {
        let now = SystemTime::now();
        let records = vec![
            (
                "i-old".to_string(),
                record(Some(2), true, None, at(4 * 3600, now)),
            ),
            (
                "i-bad".to_string(),
                record(Some(2), true, None, "yesterday".into()),
            ),
            (
                "i-new".to_string(),
                record(Some(2), true, None, at(10, now)),
            ),
        ];
        let v = view(Some(&id(2)), records, now);
        let silent: Vec<&str> = v.silent.iter().map(|s| s.instance.as_str()).collect();
        assert_eq!(silent, ["i-bad", "i-old"]);
        assert_eq!(v.releases.len(), 1);
        assert_eq!(v.releases[0].count(Standing::Healthy), 1);
    }

    #[test]
    fn the_promoted_release_is_listed_even_with_no_instance() {
        let v = view(Some(&id(2)), Vec::new(), SystemTime::now());
        assert_eq!(
            v.lines(),
            [format!("release {} (promoted): no instance", id(2))]
        );
    }

    #[test]
    fn lines_name_every_instance_and_why_it_failed() {
        let now = SystemTime::now();
        let records = vec![
            ("i-a".to_string(), record(Some(2), true, None, at(5, now))),
            (
                "i-d".to_string(),
                record(Some(1), true, Some(2), at(5, now)),
            ),
            ("i-b".to_string(), record(Some(1), true, None, at(5, now))),
        ];
        let lines = view(Some(&id(2)), records, now).lines();
        assert_eq!(
            lines,
            [
                format!("release {} (promoted): 1 healthy, 1 failed", id(2)),
                "  healthy: i-a".to_string(),
                "  failed: i-d (web never became healthy)".to_string(),
                format!("release {}: 1 drifting", id(1)),
                "  drifting: i-b".to_string(),
            ]
        );
    }

    /// The instance comes from the key (which IAM lets only that role session write), never from
    /// the record; a key that is not a record's names nothing.
    #[test]
    fn the_instance_is_the_keys_session_name() {
        for (key, instance) in [
            ("fleet/AROAEXAMPLE:i-0abc.json", Some("i-0abc")),
            ("fleet/AIDAEXAMPLE.json", Some("AIDAEXAMPLE")),
            ("fleet/AROAEXAMPLE:i-0abc.txt", None),
            ("fleet/../promoted.json", None),
            ("fleet/a/b.json", None),
            ("releases/x.json", None),
            ("fleet/.json", None),
        ] {
            assert_eq!(instance_of(key), instance, "{key}");
        }
        assert_eq!(
            record_key("AROAEXAMPLE:i-0abc").unwrap(),
            "fleet/AROAEXAMPLE:i-0abc.json"
        );
        assert!(record_key("a/b").is_err() && record_key("").is_err());
    }

    #[test]
    fn a_record_reads_back_and_refuses_what_it_does_not_know() {
        let now = SystemTime::now();
        let r = record(Some(1), true, Some(2), at(0, now));
        assert_eq!(Record::from_json(&r.to_json(), "k").unwrap(), r);
        let mut v: serde_json::Value = serde_json::from_slice(&r.to_json()).unwrap();
        v["extra"] = 1.into();
        assert!(Record::from_json(&serde_json::to_vec(&v).unwrap(), "k").is_err());
        v = serde_json::from_slice(&r.to_json()).unwrap();
        v["schema"] = 2.into();
        let err = Record::from_json(&serde_json::to_vec(&v).unwrap(), "k").unwrap_err();
        assert!(err.to_string().contains("schema 2"), "{err}");
    }
}
