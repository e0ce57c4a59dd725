//! How a service is started, kept running and judged: `restart`, `healthcheck`, `depends_on`
//! (with its conditions) and `pull_policy`.

use std::time::Duration;

use indexmap::IndexMap;
use serde_norway::Value;

use super::{Ctx, Paths};
use crate::compose::model::*;
use crate::compose::tree::join_index;

pub(super) fn restart(value: &Value, path: &str, ctx: &mut Ctx) -> Option<Restart> {
    let text = ctx.string(value, path)?;
    let policy = match text.as_str() {
        "no" => Some(Restart::No),
        "always" => Some(Restart::Always),
        "unless-stopped" => Some(Restart::UnlessStopped),
        "on-failure" => Some(Restart::OnFailure { max_retries: None }),
        other => other
            .strip_prefix("on-failure:")
            .and_then(|n| n.parse().ok())
            .map(|n| Restart::OnFailure {
                max_retries: Some(n),
            }),
    };
    if policy.is_none() {
        let shown = ctx.shown(path, &text);
        ctx.problem(path, format!("invalid restart policy {shown}: expected \"no\", always, on-failure[:N] or unless-stopped"));
    }
    policy
}

const HEALTHCHECK_KEYS: &[&str] = &[
    "test",
    "interval",
    "timeout",
    "start_period",
    "start_interval",
    "retries",
    "disable",
];

pub(super) fn healthcheck(value: &Value, path: &str, ctx: &mut Ctx) -> Option<Healthcheck> {
    let mut check = Healthcheck::default();
    let mut disabled = false;
    for (key, key_path, value) in ctx.entries(value, path)? {
        let p = key_path.as_str();
        if value.is_null() && HEALTHCHECK_KEYS.contains(&key.as_str()) {
            continue;
        }
        match key.as_str() {
            "test" => match value {
                Value::String(command) => {
                    check.test = vec!["CMD-SHELL".to_string(), command.clone()]
                }
                Value::Sequence(_) => {
                    let test = ctx.strings(value, p).unwrap_or_default();
                    match test.first().map(String::as_str) {
                        Some("CMD" | "CMD-SHELL" | "NONE") => check.test = test,
                        _ => ctx.problem(p, "a test list starts with CMD, CMD-SHELL or NONE"),
                    }
                }
                other => ctx.expected(p, "a command string or a list", other),
            },
            "interval" => check.interval = ctx.duration(value, p),
            "timeout" => check.timeout = ctx.duration(value, p),
            "start_period" => check.start_period = ctx.duration(value, p),
            "start_interval" => check.start_interval = ctx.duration(value, p),
            "retries" => match ctx.integer(value, p).map(u64::try_from) {
                Some(Ok(n)) => check.retries = Some(n),
                Some(Err(_)) => ctx.problem(p, "retries must be 0 or more"),
                None => {}
            },
            "disable" => disabled = ctx.boolean(value, p).unwrap_or(false),
            key if key.starts_with("x-") => {}
            other => ctx.unsupported(p, other, "a healthcheck"),
        }
    }
    if disabled {
        return Some(Healthcheck {
            test: vec!["NONE".to_string()],
            disable: true,
            ..Healthcheck::default()
        });
    }
    Some(check)
}

fn condition(text: &str) -> Option<Condition> {
    match text {
        "service_started" => Some(Condition::ServiceStarted),
        "service_healthy" => Some(Condition::ServiceHealthy),
        "service_completed_successfully" => Some(Condition::ServiceCompletedSuccessfully),
        _ => None,
    }
}

pub(super) fn depends_on(
    value: &Value,
    path: &str,
    ctx: &mut Ctx,
    out: &mut IndexMap<String, Dependency>,
    paths: &mut Paths,
) {
    let started = Dependency {
        condition: Condition::ServiceStarted,
        restart: false,
        required: true,
    };
    match value {
        Value::Sequence(items) => {
            for (i, item) in items.iter().enumerate() {
                let item_path = join_index(path, i);
                if let Some(name) = ctx.string(item, &item_path) {
                    out.insert(name.clone(), started);
                    paths.depends_on.insert(name, item_path);
                }
            }
        }
        Value::Mapping(_) => {
            for (name, key_path, value) in ctx.entries(value, path).unwrap_or_default() {
                let mut dependency = started;
                if !value.is_null() {
                    for (key, p, value) in ctx.entries(value, &key_path).unwrap_or_default() {
                        match key.as_str() {
                            "condition" => match ctx.string(value, &p).as_deref().map(condition) {
                                Some(Some(c)) => dependency.condition = c,
                                Some(None) => ctx.problem(
                                    &p,
                                    "the condition must be service_started, service_healthy or service_completed_successfully",
                                ),
                                None => {}
                            },
                            "restart" => dependency.restart = ctx.boolean(value, &p).unwrap_or(false),
                            "required" => dependency.required = ctx.boolean(value, &p).unwrap_or(true),
                            key if key.starts_with("x-") => {}
                            other => ctx.unsupported(&p, other, &format!("the dependency on {name}")),
                        }
                    }
                }
                out.insert(name.clone(), dependency);
                paths.depends_on.insert(name, key_path);
            }
        }
        other => ctx.expected(path, "a list of service names or a mapping", other),
    }
}

pub(super) fn pull_policy(value: &Value, path: &str, ctx: &mut Ctx) -> Option<PullPolicy> {
    match ctx.string(value, path)?.as_str() {
        "always" => Some(PullPolicy::Always),
        "never" => Some(PullPolicy::Never),
        // `refresh` with no period is `missing`, as docker compose reads it.
        "missing" | "if_not_present" | "refresh" => Some(PullPolicy::Missing),
        "daily" => Some(PullPolicy::Refresh(Duration::from_secs(24 * 3600))),
        "weekly" => Some(PullPolicy::Refresh(Duration::from_secs(7 * 24 * 3600))),
        every if every.starts_with("every_") => match refresh_period(&every["every_".len()..]) {
            Some(period) => Some(PullPolicy::Refresh(period)),
            None => {
                ctx.problem(
                    path,
                    "every_<duration> takes a duration such as 12h, 2d or 1w",
                );
                None
            }
        },
        "build" => {
            ctx.problem(
                path,
                "pull_policy `build` is not supported: kicky-agent runs prebuilt images",
            );
            None
        }
        _ => {
            ctx.problem(
                path,
                "pull_policy must be always, never, missing, daily, weekly or every_<duration>",
            );
            None
        }
    }
}

/// A period such as `12h`, `2d`, `1w` or `1h30m` (compose's units: w, d, h, m, s); never zero.
fn refresh_period(text: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let n: u64 = std::mem::take(&mut number).parse().ok()?;
        let unit = match c {
            'w' => 7 * 24 * 3600,
            'd' => 24 * 3600,
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return None,
        };
        total += Duration::from_secs(n.checked_mul(unit)?);
    }
    (number.is_empty() && !total.is_zero()).then_some(total)
}
