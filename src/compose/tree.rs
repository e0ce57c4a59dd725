//! The compose file as a YAML tree, before typing: merge keys applied, then every string value
//! interpolated, as compose does (keys are never interpolated; numbers and booleans are left as
//! they are).
//!
//! Which values used a variable is remembered by key path, with what they became, so `render`
//! can mask every one of them, and errors can leave such values out.

use std::cell::RefCell;
use std::collections::HashMap;

use serde_norway::Value;

use super::{FromVariable, Problem};
use crate::interpolate::{self, InterpolationError};
use crate::redact::Secret;

/// What interpolating a tree found out.
#[derive(Debug, Default)]
pub(super) struct Interpolated {
    /// The string values that referred to at least one variable, by key path.
    pub tainted: HashMap<String, FromVariable>,
    /// `(variable, key path)` for each variable used unset and without a default.
    pub unset: Vec<(String, String)>,
    pub problems: Vec<Problem>,
}

/// `path.key`, the way [`crate::yaml::position_of`] reads key paths.
pub(super) fn join_key(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// `path[index]`.
pub(super) fn join_index(path: &str, index: usize) -> String {
    format!("{path}[{index}]")
}

/// A mapping key as text (YAML allows numbers and booleans as keys).
pub(super) fn key_text(key: &Value) -> Option<String> {
    match key {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Interpolates every string value of `value` in place.
pub(super) fn interpolate(
    value: &mut Value,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Interpolated {
    let mut out = Interpolated::default();
    walk(value, "", ("", false), lookup, &mut out);
    out
}

/// `place`: the key path of the collection `value` is in, and whether that is a list.
fn walk(
    value: &mut Value,
    path: &str,
    place: (&str, bool),
    lookup: &dyn Fn(&str) -> Option<String>,
    out: &mut Interpolated,
) {
    match value {
        Value::String(text) if text.contains('$') => {
            let looked_up = RefCell::new(Vec::<String>::new());
            let tracking = |name: &str| {
                looked_up.borrow_mut().push(name.to_string());
                lookup(name)
            };
            match interpolate::substitute(text, &tracking) {
                Ok(substituted) => {
                    *text = substituted.value;
                    if !looked_up.borrow().is_empty() {
                        let (parent, in_list) = place;
                        let from = FromVariable {
                            parent: parent.to_string(),
                            in_list,
                            value: Secret::new(text.clone()),
                        };
                        out.tainted.insert(path.to_string(), from);
                    }
                    for name in substituted.unset {
                        out.unset.push((name, path.to_string()));
                    }
                }
                Err(err) => out
                    .problems
                    .push(Problem::new(path, describe(&err, &looked_up.borrow()))),
            }
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                walk(item, &join_index(path, i), (path, true), lookup, out);
            }
        }
        Value::Mapping(map) => {
            for (key, item) in map.iter_mut() {
                let key = key_text(key).unwrap_or_else(|| "?".to_string());
                walk(item, &join_key(path, &key), (path, false), lookup, out);
            }
        }
        Value::Tagged(_) => out.problems.push(Problem::new(
            path,
            "YAML tags (such as !reset or !override) are not supported",
        )),
        _ => {}
    }
}

/// The error without any value: a `${VAR:?message}` message is compose-file text and shown, but
/// only when it refers to no other variable (whose value might be a secret).
fn describe(err: &InterpolationError, looked_up: &[String]) -> String {
    match err {
        InterpolationError::Required { name, message }
            if !message.is_empty() && looked_up.iter().all(|n| n == name) =>
        {
            format!("required variable {name} is missing a value: {message}")
        }
        InterpolationError::Required { name, .. } => {
            format!("required variable {name} is missing a value")
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "TAG" => Some("1.2".into()),
            "PASSWORD" => Some("hunter2".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    fn run(yaml: &str) -> (Value, Interpolated) {
        let mut value: Value = serde_norway::from_str(yaml).unwrap();
        let found = interpolate(&mut value, &env);
        (value, found)
    }

    #[test]
    fn values_are_interpolated_keys_are_not() {
        let (value, found) = run(
            "services:\n  web:\n    image: app:${TAG}\n    environment:\n      $$KEY: $$literal\n      P: $PASSWORD\n      N: 5\n    command: [echo, '${NOPE:-none}', $$HOME]\n",
        );
        let web = &value["services"]["web"];
        assert_eq!(web["image"], Value::from("app:1.2"));
        assert_eq!(web["environment"]["$$KEY"], Value::from("$literal"));
        assert_eq!(web["environment"]["P"], Value::from("hunter2"));
        assert_eq!(web["environment"]["N"], Value::from(5));
        assert_eq!(web["command"][1], Value::from("none"));
        assert_eq!(web["command"][2], Value::from("$HOME"));
        let mut tainted: Vec<_> = found.tainted.keys().cloned().collect();
        tainted.sort();
        assert_eq!(
            tainted,
            [
                "services.web.command[1]",
                "services.web.environment.P",
                "services.web.image"
            ]
        );
        assert!(found.problems.is_empty());
    }

    #[test]
    fn unset_variables_are_reported_with_their_path() {
        let (value, found) = run("a:\n  - x$NOPE\n");
        assert_eq!(value["a"][0], Value::from("x"));
        assert_eq!(found.unset, vec![("NOPE".to_string(), "a[0]".to_string())]);
    }

    #[test]
    fn errors_name_the_variable_and_path_never_a_value() {
        let (_, found) = run("s:\n  x: ${NOPE:?set NOPE in SSM}\n  y: ${PASSWORD}${EMPTY:?needs ${PASSWORD}}\n  z: ${oops\n");
        let messages: Vec<String> = found
            .problems
            .iter()
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect();
        assert_eq!(
            messages[0],
            "s.x: required variable NOPE is missing a value: set NOPE in SSM"
        );
        assert_eq!(
            messages[1],
            "s.y: required variable EMPTY is missing a value"
        );
        assert!(
            messages[2].starts_with("s.z: `${` without a closing `}`"),
            "{}",
            messages[2]
        );
        assert!(!messages.concat().contains("hunter2"));
    }
}
