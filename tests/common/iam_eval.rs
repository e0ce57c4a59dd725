//! An offline evaluator of IAM identity policies, for the calls the agent makes: moto checks the
//! action of every call but the resource of S3 calls only, and no condition at all, so the
//! generated policy's ARNs and conditions are checked here, by IAM's documented rules:
//! - `Action`: the service prefix and action name, case-insensitive, with `*` (any run of
//!   characters) and `?` (any one character);
//! - `Resource`: `*` alone matches everything; otherwise each of the ARN's six colon-separated
//!   parts is matched on its own, case-sensitive, with `*` and `?` (the last part, the resource,
//!   may itself hold colons: `*` there spans them, as a `*` ending a segment does);
//!   A policy variable (`${aws:userid}`) in a resource is filled from the request context; one
//!   the context lacks matches nothing.
//! - `Condition`: every operator and every key in it must hold (AND), any of a key's values may
//!   match (OR); a key absent from the request's context fails it. Operators: `StringEquals`
//!   (exact, case-sensitive: a `*` in the value is a literal star), `StringLike` (`*` and `?`
//!   anywhere), `ArnLike` (as `Resource`). Key names are case-insensitive. Any other operator is
//!   an error, never a silent match.
//! - An explicit `Deny` wins over any `Allow`; with no `Allow`, the call is denied.
//! - `NotAction` and `NotResource` (which grant by exclusion) are an error, never ignored.

use std::collections::BTreeMap;

use serde_json::Value;

/// One authorized call: the IAM action, the resource's exact ARN (`*` for actions without a
/// resource type) and the request context's keys.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Call {
    pub action: String,
    pub resource: String,
    pub context: BTreeMap<String, String>,
}

impl Call {
    pub fn new(action: &str, resource: &str) -> Call {
        Call {
            action: action.to_string(),
            resource: resource.to_string(),
            context: BTreeMap::new(),
        }
    }

    pub fn with(mut self, key: &str, value: &str) -> Call {
        self.context.insert(key.to_string(), value.to_string());
        self
    }
}

impl std::fmt::Display for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} on {}", self.action, self.resource)?;
        for (k, v) in &self.context {
            write!(f, " [{k}={v}]")?;
        }
        Ok(())
    }
}

/// Whether `policy` allows `call`.
pub fn allows(policy: &Value, call: &Call) -> bool {
    let statements = match &policy["Statement"] {
        Value::Array(all) => all.clone(),
        one => vec![one.clone()],
    };
    let matching: Vec<&Value> = statements.iter().filter(|s| applies(s, call)).collect();
    let denied = matching.iter().any(|s| s["Effect"] == "Deny");
    !denied && matching.iter().any(|s| s["Effect"] == "Allow")
}

/// The values of a policy element that may be one string or a list of them.
fn strings(value: &Value) -> Vec<&str> {
    match value {
        Value::String(s) => vec![s.as_str()],
        Value::Array(all) => all.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

fn applies(statement: &Value, call: &Call) -> bool {
    for element in ["NotAction", "NotResource"] {
        assert!(
            statement.get(element).is_none(),
            "{element} (grants by exclusion) is not one this evaluator knows: {statement}"
        );
    }
    let action = strings(&statement["Action"])
        .iter()
        .any(|pattern| glob(&pattern.to_lowercase(), &call.action.to_lowercase()));
    let resource = strings(&statement["Resource"])
        .iter()
        .filter_map(|pattern| resolve(pattern, call))
        .any(|pattern| arn_like(&pattern, &call.resource));
    action && resource && conditions_hold(&statement["Condition"], call)
}

/// A resource with its policy variables (`${aws:userid}`) filled from the request context; `None`
/// when one is not in it (IAM: the statement then matches nothing).
fn resolve(pattern: &str, call: &Call) -> Option<String> {
    let mut out = String::new();
    let mut rest = pattern;
    while let Some(start) = rest.find("${") {
        let end = start + rest[start..].find('}')?;
        let key = rest[start + 2..end].to_lowercase();
        let value = call
            .context
            .iter()
            .find(|(k, _)| k.to_lowercase() == key)?
            .1;
        out.push_str(&rest[..start]);
        out.push_str(value);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Some(out)
}

fn conditions_hold(conditions: &Value, call: &Call) -> bool {
    let Some(operators) = conditions.as_object() else {
        return true;
    };
    let context: BTreeMap<String, &str> = call
        .context
        .iter()
        .map(|(k, v)| (k.to_lowercase(), v.as_str()))
        .collect();
    operators.iter().all(|(operator, keys)| {
        let test: fn(&str, &str) -> bool = match operator.as_str() {
            "StringEquals" => |pattern, value| pattern == value,
            "StringLike" => glob,
            "ArnLike" => arn_like,
            other => panic!("condition operator {other} is not one this evaluator knows"),
        };
        keys.as_object().unwrap().iter().all(|(key, values)| {
            match context.get(&key.to_lowercase()) {
                Some(value) => strings(values).iter().any(|p| test(p, value)),
                None => false,
            }
        })
    })
}

/// An ARN against a pattern, part by part (`*` alone matches everything).
pub fn arn_like(pattern: &str, arn: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    let patterns: Vec<&str> = pattern.splitn(6, ':').collect();
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    patterns.len() == 6 && parts.len() == 6 && patterns.iter().zip(&parts).all(|(p, v)| glob(p, v))
}

/// `*` matches any run of characters, `?` any one character; everything else itself.
pub fn glob(pattern: &str, value: &str) -> bool {
    let (p, v): (Vec<char>, Vec<char>) = (pattern.chars().collect(), value.chars().collect());
    // The classic two-pointer match, backtracking to the last `*`.
    let (mut i, mut j) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while j < v.len() {
        if i < p.len() && (p[i] == '?' || p[i] == v[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some((i, j));
            i += 1;
        } else if let Some((si, sj)) = star {
            i = si + 1;
            j = sj + 1;
            star = Some((si, sj + 1));
        } else {
            return false;
        }
    }
    p[i..].iter().all(|c| *c == '*')
}
