//! The launch template's overrides: a `#kicky-agent` YAML document in the instance's user data
//! (alone, one part of a cloud-init multipart MIME document, or gzip-compressed), and instance
//! tags `kicky-agent:<key>` that set one key each. Both come from instance metadata and are merged
//! over the baked config (`agent.yaml` and `agent.d/`): user data first, then the tags.
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

use std::io::Read;

use anyhow::{bail, Context, Result};
use serde_norway::Value;

/// The first line of a user-data document (or part) meant for the agent.
pub const MARKER: &str = "#kicky-agent";
/// Instance tags whose key starts with this set one config key each.
pub const TAG_PREFIX: &str = "kicky-agent:";
/// The layer names errors and `status` use.
pub const USER_DATA: &str = "user data";

/// User data is at most 16 KiB; compressed, it may not expand beyond this.
const MAX_EXPANDED: u64 = 1 << 20;

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
pub const BAKED_ONLY: &[&str] = &["overrides", "compose.policy"];

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

/// What instance metadata says to change in the baked config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// The `#kicky-agent` document of the user data, the marker line included.
    pub user_data: Option<String>,
    /// `kicky-agent:<key>` tags, the prefix taken off, in key order.
    pub tags: Vec<(String, String)>,
    /// Not an override, but read from instance metadata with them: where Auto Scaling is taking
    /// the instance (a warm pool, service, termination), which decides what a sync does.
    pub target_state: Option<crate::lifecycle::TargetState>,
}

/// The `#kicky-agent` document in `raw` user data: the whole of it, or the part of a MIME
/// multipart document that starts with the marker; gzip-compressed or not. `None` when there is
/// none (a plain shell script or cloud-config: not the agent's).
pub fn extract(raw: &[u8]) -> Result<Option<String>> {
    let raw = gunzip_if_compressed(raw).context("user data is gzip data that does not expand")?;
    let raw = raw.as_slice();
    let text = String::from_utf8_lossy(raw);
    if starts_with_marker(&text) {
        return whole_text(raw).map(Some);
    }
    if !looks_like_mime(&text) {
        return Ok(None);
    }
    let Some(message) = mail_parser::MessageParser::default().parse(raw) else {
        return Ok(None);
    };
    for part in message.parts.iter() {
        if matches!(part.body, mail_parser::PartType::Multipart(_)) {
            continue;
        }
        // Without a transfer encoding, the part's bytes as they are: the parser's text reading
        // folds lines as mail does, which would take YAML's indentation away.
        let body = match part.encoding {
            mail_parser::Encoding::None => {
                let (start, end) = (part.offset_body as usize, part.offset_end as usize);
                raw.get(start..end).unwrap_or_default().to_vec()
            }
            _ => part.contents().to_vec(),
        };
        let body = match gunzip_if_compressed(&body) {
            Ok(body) => body,
            Err(_) => continue,
        };
        if starts_with_marker(&String::from_utf8_lossy(&body)) {
            return whole_text(&body).map(Some);
        }
    }
    Ok(None)
}

fn starts_with_marker(text: &str) -> bool {
    let first = text.trim_start_matches('\u{feff}').lines().next();
    first.is_some_and(|line| line.trim_end() == MARKER)
}

fn looks_like_mime(text: &str) -> bool {
    text.lines().take(20).any(|l| {
        l.to_ascii_lowercase()
            .starts_with("content-type: multipart/")
    })
}

fn whole_text(raw: &[u8]) -> Result<String> {
    match std::str::from_utf8(raw) {
        Ok(text) => Ok(text.trim_start_matches('\u{feff}').replace("\r\n", "\n")),
        Err(e) => bail!(
            "the {MARKER} document in user data is not UTF-8 (byte {})",
            e.valid_up_to()
        ),
    }
}

fn gunzip_if_compressed(raw: &[u8]) -> Result<Vec<u8>> {
    if !raw.starts_with(&[0x1f, 0x8b]) {
        return Ok(raw.to_vec());
    }
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(raw)
        .take(MAX_EXPANDED + 1)
        .read_to_end(&mut out)?;
    if out.len() as u64 > MAX_EXPANDED {
        bail!("it expands beyond {MAX_EXPANDED} bytes");
    }
    Ok(out)
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

/// Reads the overrides from instance metadata: user data (when `user_data`), the
/// `kicky-agent:` tags (when `tags`), and the target lifecycle state (when `lifecycle`). Where
/// instance metadata does not answer (not on EC2), or is disabled, there are none; that is
/// logged, not an error.
pub async fn fetch(user_data: bool, tags: bool, lifecycle: bool) -> Overrides {
    let mut overrides = Overrides::default();
    if !user_data && !tags && !lifecycle {
        return overrides;
    }
    let Some(imds) = crate::aws::imds::Imds::new() else {
        return overrides;
    };
    // The three reads at once: off EC2 each waits out its bound, and a command should wait one.
    let user_data = async { user_data.then_some(imds.user_data().await) };
    let tags = async { tags.then_some(imds.tags_with_prefix(TAG_PREFIX).await) };
    let target = async { lifecycle.then_some(crate::lifecycle::target_state().await) };
    let (user_data, tags, target) = futures::join!(user_data, tags, target);
    match user_data {
        Some(Ok(Some(raw))) => match extract(&raw) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    const DOC: &str = "#kicky-agent\nproject: lemon\nenv:\n  file: app.env\n";

    const MULTIPART: &str = "Content-Type: multipart/mixed; boundary=\"==BOUNDARY==\"\r\n\
MIME-Version: 1.0\r\n\
\r\n\
--==BOUNDARY==\r\n\
Content-Type: text/cloud-config; charset=\"us-ascii\"\r\n\
\r\n\
#cloud-config\r\n\
packages: [htop]\r\n\
\r\n\
--==BOUNDARY==\r\n\
Content-Type: text/x-kicky-agent; charset=\"us-ascii\"\r\n\
\r\n\
#kicky-agent\r\n\
project: lemon\r\n\
env:\r\n\
\x20 file: app.env\r\n\
\r\n\
--==BOUNDARY==\r\n\
Content-Type: text/x-shellscript\r\n\
\r\n\
#!/bin/sh\r\n\
echo hello\r\n\
--==BOUNDARY==--\r\n";

    #[test]
    fn the_document_is_found_however_user_data_carries_it() {
        let want = Some(DOC.to_string());
        assert_eq!(extract(DOC.as_bytes()).unwrap(), want, "alone");
        assert_eq!(extract(&gzip(DOC.as_bytes())).unwrap(), want, "gzip");
        let part = extract(MULTIPART.as_bytes()).unwrap().unwrap();
        assert!(
            part.starts_with("#kicky-agent\nproject: lemon\nenv:\n  file: app.env"),
            "{part:?}"
        );
        let part = extract(&gzip(MULTIPART.as_bytes())).unwrap().unwrap();
        assert!(part.contains("project: lemon"), "multipart, gzip: {part}");
        // A base64-encoded part, as some tools write them.
        use base64::Engine;
        let encoded = base64::engine::general_purpose::STANDARD.encode(DOC);
        let b64 = MULTIPART.replace(
            "Content-Type: text/x-kicky-agent; charset=\"us-ascii\"\r\n\r\n#kicky-agent\r\nproject: lemon\r\nenv:\r\n  file: app.env\r\n",
            &format!("Content-Type: text/x-kicky-agent\r\nContent-Transfer-Encoding: base64\r\n\r\n{encoded}\r\n"),
        );
        assert_ne!(b64, MULTIPART);
        assert_eq!(extract(b64.as_bytes()).unwrap(), want, "base64 part");
    }

    #[test]
    fn user_data_that_is_not_the_agents_is_no_override() {
        for other in [
            "#!/bin/bash\naws ssm get-parameter ...\n",
            "#cloud-config\npackages: [htop]\n",
            "",
            "#kicky-agents\nproject: x\n",
            "project: x\n",
        ] {
            assert_eq!(extract(other.as_bytes()).unwrap(), None, "{other:?}");
        }
    }

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

    #[test]
    fn a_gzip_bomb_is_refused() {
        let bomb = gzip(&vec![b'#'; (MAX_EXPANDED + 10) as usize]);
        assert!(bomb.len() < 16 * 1024);
        let err = extract(&bomb).unwrap_err();
        assert!(format!("{err:#}").contains("expands beyond"), "{err:#}");
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
