//! Secrets: the top-level ones (a `file` or an `environment` variable; swarm's refused) and a
//! service's `secrets` with their target, owner and mode.

use serde_norway::Value;

use super::{container_path, valid_name, Ctx};
use crate::compose::model::*;
use crate::compose::tree::join_index;

/// A top-level secret: exactly one of `file` or `environment`. `external` (and `name`, which
/// only names an external one) are swarm's: refused.
pub(super) fn secret(name: &str, value: &Value, path: &str, ctx: &mut Ctx) -> Option<SecretSource> {
    if !valid_name(name) {
        let message =
            format!("invalid secret name `{name}`: use letters, digits, `_`, `.` and `-`");
        ctx.problem(path, message);
        return None;
    }
    let mut found = Vec::new();
    for (key, p, value) in ctx.entries(value, path)? {
        match key.as_str() {
            "file" => {
                let file = ctx.string(value, &p)?;
                match ctx.host_path(&file) {
                    Ok(file) => found.push(SecretSource::File(file)),
                    Err(message) => ctx.problem(&p, message),
                }
            }
            "environment" => {
                let variable = ctx.string(value, &p)?;
                found.push(SecretSource::Environment(variable));
            }
            "external" | "name" => ctx.problem(
                &p,
                format!("secret {name}: `{key}` names a swarm secret, which exists only in swarm mode; give a `file` or an `environment` variable"),
            ),
            "labels" | "driver" | "driver_opts" | "template_driver" => ctx.problem(
                &p,
                format!("secret {name}: `{key}` applies to swarm secrets only"),
            ),
            other => ctx.unsupported(&p, other, &format!("secret {name}")),
        }
    }
    if found.len() != 1 {
        let message = format!("secret {name} needs exactly one of `file` or `environment`");
        ctx.problem(path, message);
        return None;
    }
    found.pop()
}

/// A service's `secrets`: names (short syntax) or `{source, target, uid, gid, mode}`.
pub(super) fn service_secrets(
    value: &Value,
    path: &str,
    ctx: &mut Ctx,
    out: &mut Vec<ServiceSecret>,
    paths: &mut Vec<String>,
) {
    let Some(items) = ctx.list(value, path) else {
        return;
    };
    for (i, item) in items.iter().enumerate() {
        let p = join_index(path, i);
        let secret = match item {
            Value::String(source) => Some(ServiceSecret {
                source: source.clone(),
                target: source.clone(),
                ..ServiceSecret::default()
            }),
            Value::Mapping(_) => long_secret(item, &p, ctx),
            other => {
                ctx.expected(&p, "a secret's name or a mapping", other);
                None
            }
        };
        if let Some(mut secret) = secret {
            secret.target = if secret.target.starts_with('/') {
                container_path(&secret.target)
            } else {
                container_path(&format!("/run/secrets/{}", secret.target))
            };
            out.push(secret);
            paths.push(p);
        }
    }
}

fn long_secret(item: &Value, path: &str, ctx: &mut Ctx) -> Option<ServiceSecret> {
    let mut secret = ServiceSecret::default();
    let mut target = None;
    for (key, p, value) in ctx.entries(item, path)? {
        match key.as_str() {
            "source" => secret.source = ctx.string(value, &p)?,
            "target" => target = ctx.string(value, &p),
            "uid" => secret.uid = id_number(value, &p, ctx),
            "gid" => secret.gid = id_number(value, &p, ctx),
            "mode" => secret.mode = file_mode(value, &p, ctx),
            other => ctx.unsupported(&p, other, "a service's secret"),
        }
    }
    if secret.source.is_empty() {
        ctx.problem(path, "a secret needs its `source`");
        return None;
    }
    secret.target = target.unwrap_or_else(|| secret.source.clone());
    Some(secret)
}

/// A user or group id: a number, or a string of digits (`uid: "103"`, as compose writes it).
fn id_number(value: &Value, path: &str, ctx: &mut Ctx) -> Option<u32> {
    let text = ctx.scalar(value, path)?;
    let parsed = text.parse::<u32>().ok();
    if parsed.is_none() {
        ctx.problem(
            path,
            format!("expected a numeric id, found {}", ctx.shown(path, &text)),
        );
    }
    parsed
}

/// A file mode: a number as YAML reads it (`0o440`, or `288`), or octal digits (`0440`, which
/// YAML 1.2 leaves a string and compose reads as octal).
fn file_mode(value: &Value, path: &str, ctx: &mut Ctx) -> Option<u32> {
    let parsed = match value {
        Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        Value::String(s) => {
            let digits = s.strip_prefix("0o").unwrap_or(s);
            u32::from_str_radix(digits, 8).ok()
        }
        _ => None,
    }
    .filter(|mode| *mode <= 0o7777);
    if parsed.is_none() {
        ctx.expected(path, "a file mode such as 0440", value);
    }
    parsed
}
