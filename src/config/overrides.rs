//! The launch template's overrides: a `#kicky-agent` YAML document in the instance's user data,
//! and instance tags `kicky-agent:<key>` that set one key each. Both are read from instance
//! metadata by [`crate::instance`] and merged here over the baked config (`agent.yaml` and
//! `agent.d/`): user data first, then the tags.
//!
//! Each channel counts for what whoever can write it deserves. The baked config (root's files
//! in the AMI) sets everything. User data is root's equal (cloud-init runs it as root) and sets
//! all but [`BAKED_ONLY`]. Tags, which `ec2:CreateTags` can write, are off unless the baked config
//! turns them on, then set only an allow-list, which can never include [`NEVER_BY_TAG`]; a tag
//! that is refused is reported and skipped, never the reason an instance stops.
//!
//! User data is readable by anyone with `ec2:DescribeInstanceAttribute` and tags by anyone who can
//! describe the instance, so neither may carry a secret: the config takes secrets only by
//! reference (a parameter or secret name), and what looks like a credential is refused.

use serde_norway::Value;

use crate::instance::TAG_PREFIX;

/// The layer names errors and `status` use.
pub const USER_DATA: &str = "user data";

/// Keys no tag may ever set, whatever the baked config lists: whom the agent talks to (endpoints,
/// registries, buckets), where on the host it writes or listens (paths, modes, sockets, the
/// secrets directory, and `project`, which names the default workdir and the state file), what
/// the compose file may do, which lifecycle hook it completes, and the overrides themselves.
/// `ec2:CreateTags` is often granted far wider than IAM rights, and the agent runs as root.
pub const NEVER_BY_TAG: &[&str] = &[
    "project",
    "workdir",
    "aws",
    "env.file",
    "env.mode",
    "files",
    "files_allowed_dirs",
    "state_dir",
    "control_socket",
    "metrics",
    "compose.file",
    "compose.secrets_dir",
    "compose.policy",
    "compose.ready",
    "report",
    "registries",
    "lifecycle.hook",
    "watch.marker",
    "watch.marker_expected_owner",
    "release",
    "overrides",
];

/// What tags may set with `overrides.tags: true`: which parameters and secrets the existing
/// sources read (the instance role's IAM policy bounds what they can reach), and the watch's pace.
pub const TAGS_DEFAULT: &[&str] = &[
    "env.parameters.*.name",
    "env.parameters.*.path",
    "env.parameters.*.secret",
    "watch.interval",
    "watch.apply",
];

/// Keys only the baked config (root's files in the AMI) may set: not user data, not tags.
pub const BAKED_ONLY: &[&str] = &["overrides", "compose.policy", "release.public_key"];

/// Which tags count, as the baked config says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagPolicy {
    /// Tags are read only to be reported as ignored.
    Off,
    /// Tags may set these keys (patterns: `*` is any one step, a key covers what is below it).
    Keys(Vec<String>),
}

impl TagPolicy {
    pub fn from_choice(choice: Option<&super::raw::TagsChoice>) -> TagPolicy {
        use super::raw::TagsChoice;
        match choice {
            None | Some(TagsChoice::Switch(false)) => TagPolicy::Off,
            Some(TagsChoice::Switch(true)) => {
                TagPolicy::Keys(TAGS_DEFAULT.iter().map(|k| k.to_string()).collect())
            }
            Some(TagsChoice::Keys(keys)) => TagPolicy::Keys(keys.clone()),
        }
    }

    /// Why a tag setting `key` is not applied, if it is not.
    pub fn refusal(&self, key: &str) -> Option<String> {
        let TagPolicy::Keys(keys) = self else {
            return Some(
                "tags are off: the baked config turns them on with `overrides.tags: true` (or a list of keys)".into(),
            );
        };
        if let Some(never) = never_by_tag(key) {
            return Some(format!(
                "`{key}` can never be set by a tag (`{never}` decides whom the agent talks to, where on the host it writes or listens, or what it may run): set it in the baked config or the user data"
            ));
        }
        (!keys.iter().any(|k| covers(k, key))).then(|| {
            format!(
                "`{key}` is not in the tags' allow-list (`overrides.tags`: {})",
                keys.join(", ")
            )
        })
    }
}

/// The entry of [`NEVER_BY_TAG`] that `key` would set, or set part of.
pub fn never_by_tag(key: &str) -> Option<&'static str> {
    NEVER_BY_TAG
        .iter()
        .copied()
        .find(|never| overlaps(never, key))
}

/// Checks one entry of `overrides.tags`: a dotted key whose steps are names, list indexes or `*`.
pub fn check_tag_pattern(pattern: &str) -> Result<(), String> {
    let well_formed = pattern.split('.').all(|step| {
        !step.is_empty()
            && (step == "*"
                || step
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
    });
    if !well_formed {
        return Err(format!(
            "{pattern:?} is not a dotted key such as `watch.interval` or `env.parameters.*.name`"
        ));
    }
    match never_by_tag(pattern) {
        Some(never) => Err(format!(
            "`{pattern}` can never be set by a tag (it includes or is part of `{never}`)"
        )),
        None => Ok(()),
    }
}

/// One of `a` and `b` lies below (or is) the other: each step of the shorter matches the other's
/// (`*`: any one).
fn overlaps(a: &str, b: &str) -> bool {
    a.split('.')
        .zip(b.split('.'))
        .all(|(a, b)| a == "*" || b == "*" || a == b)
}

/// `pattern` covers `key`: the key is the pattern or lies below it.
fn covers(pattern: &str, key: &str) -> bool {
    pattern.split('.').count() <= key.split('.').count() && overlaps(pattern, key)
}

/// The layer name of one tag, for errors and `status`.
pub fn tag_layer(key: &str) -> String {
    format!("tag {TAG_PREFIX}{key}")
}

/// A tag's value as the config reads it: `true` and `false`, a plain integer, and a flow list or
/// mapping (`[a, b]`) are what they look like; anything else is the text itself (`0640` stays a
/// mode, `30s` a duration, `off` a word).
fn tag_value(text: &str) -> Value {
    let t = text.trim();
    let string = || Value::String(text.to_string());
    // Read within the bounds of every YAML the agent reads: what does not pass stays text.
    let yaml =
        || crate::yaml::from_str(t, std::path::Path::new("tag")).unwrap_or_else(|_| string());
    match t {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ if t.starts_with('[') || t.starts_with('{') => yaml(),
        _ if !t.is_empty()
            && t.bytes().all(|b| b.is_ascii_digit())
            && (t == "0" || !t.starts_with('0')) =>
        {
            yaml()
        }
        _ => string(),
    }
}

/// Sets `key` (dotted: mapping keys, and list indexes of entries that exist, such as
/// `env.parameters.0.name`) in `config` to the tag's `value`, read as a YAML value (so `true`,
/// `30s` and `[a, b]` are what they look like). Returns the dotted path of what was set, as
/// `status` names keys.
pub fn set_by_tag(config: &mut Value, key: &str, value: &str) -> Result<String, String> {
    let steps: Vec<&str> = key.split('.').collect();
    if steps.iter().any(|s| s.is_empty()) {
        return Err(format!(
            "{key:?} is not a dotted key (such as `project` or `env.parameters.0.name`)"
        ));
    }
    let value = tag_value(value);
    let mut node = config;
    let mut path = String::new();
    for (i, step) in steps.iter().enumerate() {
        let last = i + 1 == steps.len();
        if !path.is_empty() {
            path.push('.');
        }
        if let Value::Sequence(items) = node {
            let len = items.len();
            let index = step
                .parse::<usize>()
                .ok()
                .filter(|&n| n < len)
                .ok_or_else(|| {
                    format!(
                        "{} is a list of {len}: `{step}` is not the index of one of its entries",
                        path.trim_end_matches('.')
                    )
                })?;
            path.push_str(step);
            node = &mut items[index];
            if last {
                *node = value;
                return Ok(path);
            }
            continue;
        }
        if matches!(node, Value::Null) {
            *node = Value::Mapping(Default::default());
        }
        let Value::Mapping(map) = node else {
            return Err(format!(
                "{} is not a mapping or a list: {key} cannot be set",
                path.trim_end_matches('.')
            ));
        };
        path.push_str(step);
        let k = Value::String(step.to_string());
        if last {
            map.insert(k, value);
            return Ok(path);
        }
        node = map.entry(k).or_insert(Value::Null);
    }
    unreachable!("a key has at least one step")
}

/// Why `value` (from user data or a tag, which others can read) looks like a credential, if it
/// does: an AWS access key id, or a URL with a password in it. The config takes secrets only by
/// reference, so a real config never trips this.
pub fn looks_secret(value: &Value) -> Option<&'static str> {
    match value {
        Value::String(s) => {
            let access_key = s.split(|c: char| !c.is_ascii_alphanumeric()).any(|w| {
                w.len() == 20
                    && (w.starts_with("AKIA") || w.starts_with("ASIA"))
                    && w.chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
            });
            if access_key {
                return Some("an AWS access key id");
            }
            let userinfo = s.split_once("://").is_some_and(|(_, rest)| {
                let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
                authority
                    .rsplit_once('@')
                    .is_some_and(|(user, _)| user.contains(':'))
            });
            userinfo.then_some("a URL with a password in it")
        }
        Value::Sequence(items) => items.iter().find_map(looks_secret),
        Value::Mapping(map) => map.values().find_map(looks_secret),
        Value::Tagged(tagged) => looks_secret(&tagged.value),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tag holds at most 256 characters: enough for eight levels of eight aliases each.
    #[test]
    fn a_tag_value_is_read_within_the_yaml_bounds() {
        let mut bomb = String::from("{a: &a [x,x,x,x,x,x,x,x]");
        for (prev, next) in ('a'..='g').zip('b'..='h') {
            bomb.push_str(&format!(
                ", {next}: &{next} [{}]",
                vec![format!("*{prev}"); 8].join(",")
            ));
        }
        bomb.push('}');
        assert!(bomb.len() <= 256, "{}", bomb.len());
        let mut config = Value::Null;
        let started = std::time::Instant::now();
        set_by_tag(&mut config, "x", &bomb).unwrap();
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        assert_eq!(config["x"], Value::String(bomb.clone()), "left as text");
        set_by_tag(&mut config, "y", "[a, b]").unwrap();
        assert!(config["y"].is_sequence());
    }

    fn yaml(text: &str) -> Value {
        serde_norway::from_str(text).unwrap()
    }

    #[test]
    fn tags_set_one_key_each() {
        let mut config = yaml("project: orange\nenv:\n  parameters:\n    - name: /a/b\n");
        let table = [
            ("project", "lemon", "project: lemon"),
            ("watch.interval", "30s", "interval: 30s"),
            ("compose.prune", "true", "prune: true"),
            ("env.parameters.0.name", "/lemon/env", "name: /lemon/env"),
        ];
        for (key, value, expect) in table {
            let set = set_by_tag(&mut config, key, value).unwrap();
            assert_eq!(set, key);
            let text = serde_norway::to_string(&config).unwrap();
            assert!(text.contains(expect), "{key}: {text}");
        }
        assert_eq!(config["compose"]["prune"], Value::Bool(true));
        set_by_tag(&mut config, "env.mode", "0640").unwrap();
        assert_eq!(config["env"]["mode"], Value::String("0640".into()));
        set_by_tag(&mut config, "lifecycle.abandon_after", "3").unwrap();
        assert_eq!(config["lifecycle"]["abandon_after"], Value::from(3));
        set_by_tag(&mut config, "files_allowed_dirs", "[/etc/promtail, /opt]").unwrap();
        assert_eq!(
            config["files_allowed_dirs"][1],
            Value::String("/opt".into())
        );
    }

    #[test]
    fn a_tag_that_cannot_be_set_says_why() {
        let mut config = yaml("project: orange\nenv:\n  parameters:\n    - name: /a/b\n");
        let table = [
            ("env.parameters.3.name", "list of 1"),
            ("env.parameters.x", "not the index"),
            ("project.name", "not a mapping"),
            ("env..file", "not a dotted key"),
        ];
        for (key, expect) in table {
            let err = set_by_tag(&mut config, key, "x").unwrap_err();
            assert!(err.contains(expect), "{key}: {err}");
        }
    }

    #[test]
    fn the_allow_list_covers_keys_below_it_and_never_what_tags_never_set() {
        let default = TagPolicy::from_choice(Some(&super::super::raw::TagsChoice::Switch(true)));
        let listed = TagPolicy::Keys(vec!["env.parameters".into(), "compose.pull".into()]);
        // (key, refused by default, refused by the list)
        let table = [
            ("env.parameters.0.name", false, false),
            ("env.parameters.12.path", false, false),
            ("env.parameters.0.secret", false, false),
            ("env.parameters.0.key", true, false),
            ("env.parameters.0", true, false),
            ("env.parameters", true, false),
            ("env", true, true),
            ("env.file", true, true),
            ("env.mode", true, true),
            ("watch.interval", false, true),
            ("watch.apply", false, true),
            ("watch.marker", true, true),
            ("watch.marker_expected_owner", true, true),
            ("watch", true, true),
            ("compose.pull", true, false),
            ("compose", true, true),
            ("compose.secrets_dir", true, true),
            ("aws.endpoint_url", true, true),
            ("registries.0.server", true, true),
            ("files.0.path", true, true),
            ("files_allowed_dirs", true, true),
            ("project", true, true),
            ("overrides.tags", true, true),
            ("lifecycle.hook", true, true),
        ];
        for (key, by_default, by_list) in table {
            assert_eq!(default.refusal(key).is_some(), by_default, "default: {key}");
            assert_eq!(listed.refusal(key).is_some(), by_list, "listed: {key}");
            assert!(TagPolicy::Off
                .refusal(key)
                .unwrap()
                .contains("tags are off"));
        }
        for pattern in TAGS_DEFAULT {
            assert_eq!(check_tag_pattern(pattern), Ok(()), "{pattern}");
        }
        for never in NEVER_BY_TAG {
            assert!(check_tag_pattern(never).is_err(), "{never}");
        }
    }

    #[test]
    fn what_looks_like_a_credential_is_named() {
        let table = [
            ("AKIAIOSFODNN7EXAMPLE", Some("an AWS access key id")),
            ("key=ASIAIOSFODNN7EXAMPLE;", Some("an AWS access key id")),
            (
                "https://user:hunter2@example.com/x",
                Some("a URL with a password in it"),
            ),
            ("https://user@example.com/x", None),
            ("http://127.0.0.1:5000", None),
            ("/orange/prod/env", None),
            ("AKIAshort", None),
        ];
        for (text, expect) in table {
            assert_eq!(looks_secret(&Value::String(text.into())), expect, "{text}");
        }
        let nested = yaml("aws:\n  endpoint_url: http://a:b@host:1\n");
        assert_eq!(looks_secret(&nested), Some("a URL with a password in it"));
    }
}
