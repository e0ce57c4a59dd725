//! Reading values out of the tree: strings, booleans, numbers, lists and mappings as compose casts
//! them, durations and sizes, host paths, and the problems and warnings, which quote a value
//! only when the compose file spells it out.

use std::path::PathBuf;

use indexmap::IndexMap;
use serde_norway::{Mapping, Value};

use super::{clean, Ctx};
use crate::compose::tree::{join_index, join_key, key_text};
use crate::compose::units;
use crate::compose::Problem;

/// Why a key is refused, for the keys people most often write.
fn unsupported_hint(key: &str) -> &'static str {
    match key {
        "build" => ": kicky-agent runs prebuilt images; build and push in CI, then set `image`",
        "deploy" => ": swarm deployment settings are not supported; use `mem_limit` and `cpus`",
        "configs" => ": not supported; mount a file the agent fetches (`files:`) instead",
        "network_mode" => {
            ": only the networks declared under the top-level `networks` are supported"
        }
        "extends" | "include" => ": the agent reads one self-contained compose file",
        _ => "",
    }
}

pub(super) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

impl Ctx<'_> {
    pub(super) fn problem(&mut self, path: &str, message: impl Into<String>) {
        self.problems.push(Problem::new(path, message));
    }

    pub(super) fn warn(&mut self, path: &str, message: impl Into<String>) {
        self.warnings.push(Problem::new(path, message));
    }

    pub(super) fn expected(&mut self, path: &str, what: &str, value: &Value) {
        self.problem(path, format!("expected {what}, found {}", kind(value)));
    }

    /// `value` quoted for an error message, or a placeholder when it came from a variable.
    pub(super) fn shown(&self, path: &str, value: &str) -> String {
        if self.tainted.contains_key(path) {
            "(a value from a variable, not shown)".to_string()
        } else {
            format!("`{value}`")
        }
    }

    pub(super) fn unsupported(&mut self, path: &str, key: &str, owner: &str) {
        let message = format!(
            "unsupported key `{key}` in {owner}{}",
            unsupported_hint(key)
        );
        self.problem(path, message);
    }

    pub(super) fn string(&mut self, value: &Value, path: &str) -> Option<String> {
        match value {
            Value::String(s) => Some(s.clone()),
            other => {
                self.expected(path, "a string", other);
                None
            }
        }
    }

    /// A string, or a number or boolean taken as its text (`user: 1000`).
    pub(super) fn scalar(&mut self, value: &Value, path: &str) -> Option<String> {
        match value {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            other => {
                self.expected(path, "a string", other);
                None
            }
        }
    }

    /// A boolean, or a string that interpolation left as one (`init: ${INIT}`), which compose
    /// casts the same way.
    pub(super) fn boolean(&mut self, value: &Value, path: &str) -> Option<bool> {
        let parsed = match value {
            Value::Bool(b) => Some(*b),
            Value::String(s) => match s.to_ascii_lowercase().as_str() {
                "true" | "yes" | "y" | "on" => Some(true),
                "false" | "no" | "n" | "off" => Some(false),
                _ => None,
            },
            _ => None,
        };
        if parsed.is_none() {
            self.expected(path, "true or false", value);
        }
        parsed
    }

    /// A whole number, written as a number or as a string of digits.
    pub(super) fn integer(&mut self, value: &Value, path: &str) -> Option<i64> {
        let parsed = match value {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        };
        if parsed.is_none() {
            self.expected(path, "a whole number", value);
        }
        parsed
    }

    pub(super) fn list<'v>(&mut self, value: &'v Value, path: &str) -> Option<&'v [Value]> {
        match value {
            Value::Sequence(items) => Some(items),
            other => {
                self.expected(path, "a list", other);
                None
            }
        }
    }

    /// The entries of a mapping as `(key, key path, value)`.
    pub(super) fn entries<'v>(
        &mut self,
        value: &'v Value,
        path: &str,
    ) -> Option<Vec<(String, String, &'v Value)>> {
        let Value::Mapping(map) = value else {
            self.expected(path, "a mapping", value);
            return None;
        };
        Some(self.mapping_entries(map, path))
    }

    fn mapping_entries<'v>(
        &mut self,
        map: &'v Mapping,
        path: &str,
    ) -> Vec<(String, String, &'v Value)> {
        let mut out = Vec::with_capacity(map.len());
        for (key, value) in map {
            match key_text(key) {
                Some(key) => {
                    let key_path = join_key(path, &key);
                    out.push((key, key_path, value));
                }
                None => self.problem(path, format!("a key must be a string, found {}", kind(key))),
            }
        }
        out
    }

    /// A list of scalars, each as its text (`expose: [80, "443/tcp"]`, `group_add: [1000]`).
    pub(super) fn scalars(&mut self, value: &Value, path: &str) -> Option<Vec<String>> {
        let items = self.list(value, path)?;
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            out.push(self.scalar(item, &join_index(path, i))?);
        }
        Some(out)
    }

    /// A list of strings.
    pub(super) fn strings(&mut self, value: &Value, path: &str) -> Option<Vec<String>> {
        let items = self.list(value, path)?;
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            out.push(self.string(item, &join_index(path, i))?);
        }
        Some(out)
    }

    pub(super) fn string_or_list(&mut self, value: &Value, path: &str) -> Option<Vec<String>> {
        match value {
            Value::String(s) => Some(vec![s.clone()]),
            _ => self.strings(value, path),
        }
    }

    /// `labels`, `sysctls`, `driver_opts`, logging `options`: a list of `KEY=VALUE` (a bare `KEY`
    /// is an empty value) or a mapping of scalars.
    pub(super) fn string_map(
        &mut self,
        value: &Value,
        path: &str,
    ) -> Option<IndexMap<String, String>> {
        let mut out = IndexMap::new();
        match value {
            Value::Sequence(items) => {
                for (i, item) in items.iter().enumerate() {
                    let item = self.string(item, &join_index(path, i))?;
                    let (key, value) = item.split_once('=').unwrap_or((&item, ""));
                    out.insert(key.to_string(), value.to_string());
                }
            }
            Value::Mapping(_) => {
                for (key, key_path, value) in self.entries(value, path)? {
                    let value = match value {
                        Value::Null => String::new(),
                        other => self.scalar(other, &key_path)?,
                    };
                    out.insert(key, value);
                }
            }
            other => {
                self.expected(path, "a list of KEY=VALUE or a mapping", other);
                return None;
            }
        }
        Some(out)
    }

    pub(super) fn duration(&mut self, value: &Value, path: &str) -> Option<std::time::Duration> {
        let text = self.scalar(value, path)?;
        let parsed = units::parse_duration(&text);
        if parsed.is_none() {
            let shown = self.shown(path, &text);
            self.problem(path, format!("invalid duration {shown}: expected a number with a unit, such as 30s, 1m30s or 500ms"));
        }
        parsed
    }

    pub(super) fn bytes(&mut self, value: &Value, path: &str) -> Option<u64> {
        let parsed = match value {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => units::parse_bytes(s),
            _ => None,
        };
        if parsed.is_none() {
            let shown = match value {
                Value::String(s) => self.shown(path, s),
                other => kind(other).to_string(),
            };
            self.problem(path, format!("invalid size {shown}: expected bytes, or a number with a unit b, k, m or g (such as 512m)"));
        }
        parsed
    }

    /// A host path of a bind mount or an env file: `~` is `$HOME`, a relative path is relative to
    /// the compose file's directory.
    /// A host path of the file: relative to its directory, `~` to `$HOME`. Without a `HOME` (a
    /// systemd unit has none), `~` is refused rather than read as a directory named `~`.
    pub(super) fn host_path(&self, path: &str) -> Result<PathBuf, String> {
        let expanded = match (path.strip_prefix('~'), &self.home) {
            (Some(rest), Some(home)) if rest.is_empty() || rest.starts_with('/') => {
                PathBuf::from(format!("{home}{rest}"))
            }
            (Some(rest), None) if rest.is_empty() || rest.starts_with('/') => {
                return Err(format!(
                    "`~` has no meaning here: the agent has no HOME (systemd sets none for it); write the absolute path of {path}"
                ))
            }
            _ => PathBuf::from(path),
        };
        Ok(clean(&self.dir.join(expanded)))
    }
}
