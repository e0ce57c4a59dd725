//! A service's environment: `environment` (a list or a mapping), its `env_file`s, and the two
//! resolved as compose v2 does (each file in order, then `environment` over them; a bare `KEY`
//! from the variables, or left out).

use std::path::PathBuf;

use indexmap::IndexMap;
use serde_norway::Value;

use super::Ctx;
use crate::compose::model::*;
use crate::compose::tree::join_index;
use crate::redact::Secret;

pub(super) enum EnvEntry {
    Set(String, EnvOrigin),
    /// A bare `KEY`: its value comes from the variables, or it is left out.
    Inherit,
}

pub(super) struct EnvFileRef {
    pub(super) path: PathBuf,
    required: bool,
    /// `format: raw`: `KEY=VALUE` lines taken as they are (docker's `--env-file`), no quotes,
    /// no interpolation.
    raw: bool,
    pub(super) key_path: String,
}

pub(super) fn env_entries(value: &Value, path: &str, ctx: &mut Ctx) -> Vec<(String, EnvEntry)> {
    let origin = |ctx: &Ctx, p: &str| {
        if ctx.tainted.contains_key(p) {
            EnvOrigin::Interpolated
        } else {
            EnvOrigin::Literal
        }
    };
    let mut out = Vec::new();
    match value {
        Value::Sequence(items) => {
            for (i, item) in items.iter().enumerate() {
                let item_path = join_index(path, i);
                let Some(text) = ctx.string(item, &item_path) else {
                    continue;
                };
                let entry = match text.split_once('=') {
                    Some((key, value)) => (
                        key.to_string(),
                        EnvEntry::Set(value.to_string(), origin(ctx, &item_path)),
                    ),
                    None => (text, EnvEntry::Inherit),
                };
                if entry.0.is_empty() {
                    ctx.problem(&item_path, "a variable without a name");
                    continue;
                }
                out.push(entry);
            }
        }
        Value::Mapping(_) => {
            for (key, key_path, value) in ctx.entries(value, path).unwrap_or_default() {
                let entry = match value {
                    Value::Null => EnvEntry::Inherit,
                    Value::String(_) | Value::Number(_) | Value::Bool(_) => {
                        let Some(text) = ctx.scalar(value, &key_path) else {
                            continue;
                        };
                        EnvEntry::Set(text, origin(ctx, &key_path))
                    }
                    other => {
                        ctx.expected(&key_path, "a string, a number or null", other);
                        continue;
                    }
                };
                out.push((key, entry));
            }
        }
        other => ctx.expected(path, "a list of KEY=VALUE or a mapping", other),
    }
    out
}

pub(super) fn env_file_refs(value: &Value, path: &str, ctx: &mut Ctx) -> Vec<EnvFileRef> {
    let mut out = Vec::new();
    let mut push =
        |ctx: &mut Ctx, file: &str, required: bool, raw: bool, key_path: String| match ctx
            .host_path(file)
        {
            Ok(path) => out.push(EnvFileRef {
                path,
                required,
                raw,
                key_path,
            }),
            Err(why) => ctx.problem(&key_path, why),
        };
    match value {
        Value::String(file) => push(ctx, file, true, false, path.to_string()),
        Value::Sequence(items) => {
            for (i, item) in items.iter().enumerate() {
                let item_path = join_index(path, i);
                match item {
                    Value::String(file) => push(ctx, file, true, false, item_path),
                    Value::Mapping(_) => {
                        let mut file = None;
                        let mut required = true;
                        let mut raw = false;
                        for (key, key_path, value) in
                            ctx.entries(item, &item_path).unwrap_or_default()
                        {
                            match key.as_str() {
                                "path" => file = ctx.string(value, &key_path),
                                "required" => {
                                    required = ctx.boolean(value, &key_path).unwrap_or(true)
                                }
                                "format" => match ctx.string(value, &key_path).as_deref() {
                                    Some("raw") => raw = true,
                                    Some("dotenv") | Some("") | None => {}
                                    Some(_) => ctx.problem(
                                        &key_path,
                                        "unsupported env_file format: use dotenv (the default) or raw",
                                    ),
                                },
                                other => ctx.unsupported(&key_path, other, "an env_file entry"),
                            }
                        }
                        match file {
                            Some(file) => push(ctx, &file, required, raw, item_path),
                            None => ctx.problem(&item_path, "an env_file entry needs a `path`"),
                        }
                    }
                    other => ctx.expected(&item_path, "a path or a mapping with `path`", other),
                }
            }
        }
        other => ctx.expected(path, "a path or a list of paths", other),
    }
    out
}

/// The service's environment: each env file in order, then `environment` over them (compose v2).
pub(super) fn resolve_environment(
    files: Vec<EnvFileRef>,
    entries: Vec<(String, EnvEntry)>,
    ctx: &mut Ctx,
) -> (IndexMap<String, EnvValue>, Vec<String>) {
    let lookup = ctx.lookup;
    let mut env: IndexMap<String, EnvValue> = IndexMap::new();
    let mut unset: Vec<String> = Vec::new();
    for file in files {
        // Never through a link, never a FIFO: either counts as no file.
        let text = match (ctx.read)(&file.path) {
            Ok(Some(text)) => text,
            Ok(None) if !file.required => continue,
            Ok(None) => {
                let message = format!(
                    "env file {} does not exist or is not a regular file",
                    file.path.display()
                );
                ctx.problem(&file.key_path, message);
                continue;
            }
            Err(e) => {
                let message = format!("cannot read env file {}: {e:#}", file.path.display());
                ctx.problem(&file.key_path, message);
                continue;
            }
        };
        // compose-go resolves a file's references against the files before it, then the project's
        // variables.
        let parsed = {
            let known = |name: &str| {
                env.get(name)
                    .map(|v| v.value.expose().to_string())
                    .or_else(|| lookup(name))
            };
            match file.raw {
                true => crate::envfile::parse_raw(&text, &known),
                false => crate::envfile::parse(&text, &known),
            }
        };
        match parsed {
            Ok(vars) => {
                for (key, value) in vars {
                    let value = EnvValue {
                        value: Secret::fetched(value),
                        origin: EnvOrigin::EnvFile,
                    };
                    env.insert(key, value);
                }
            }
            Err(e) => {
                let message = format!("env file {}: {e}", file.path.display());
                ctx.problem(&file.key_path, message);
            }
        }
    }
    for (key, entry) in entries {
        match entry {
            EnvEntry::Set(value, origin) => {
                unset.retain(|k| *k != key);
                env.insert(
                    key,
                    EnvValue {
                        value: Secret::new(value),
                        origin,
                    },
                );
            }
            EnvEntry::Inherit => match lookup(&key) {
                Some(value) => {
                    unset.retain(|k| *k != key);
                    let value = EnvValue {
                        value: Secret::new(value),
                        origin: EnvOrigin::Inherited,
                    };
                    env.insert(key, value);
                }
                // Unset: the container does not get it, whatever an env file said (compose v2).
                None => {
                    env.shift_remove(&key);
                    if !unset.contains(&key) {
                        unset.push(key);
                    }
                }
            },
        }
    }
    (env, unset)
}
