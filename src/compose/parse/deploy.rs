//! `deploy`: what docker compose v2 applies outside swarm (resource limits and reservations,
//! devices, the restart policy), and `cpus`, which it shares with the service.

use serde_norway::Value;

use super::Ctx;
use crate::compose::model::*;
use crate::compose::tree::join_index;

/// `deploy`: what docker compose v2 applies outside swarm (`resources`, `restart_policy`); the
/// swarm-only keys are ignored with a warning, as compose ignores them.
pub(super) fn deploy(value: &Value, path: &str, ctx: &mut Ctx) -> Option<Deploy> {
    let mut deploy = Deploy::default();
    for (key, p, value) in ctx.entries(value, path)? {
        match key.as_str() {
            _ if value.is_null() => {}
            "replicas" => match ctx.integer(value, &p) {
                Some(1) => deploy.replicas = Some(1),
                Some(_) => ctx.problem(
                    &p,
                    "kicky-agent runs one container per service: replicas must be 1 (scale with the Auto Scaling group)",
                ),
                None => {}
            },
            "mode" => match ctx.string(value, &p).as_deref() {
                Some("replicated") | None => {}
                // Outside swarm, "one on every node" is one here, as docker compose runs it.
                Some("global") => ctx.warn(&p, "deploy.mode global: one container on this instance"),
                Some(_) => ctx.problem(&p, "deploy.mode must be replicated or global"),
            },
            "resources" => {
                for (kind, kp, value) in ctx.entries(value, &p).unwrap_or_default() {
                    match kind.as_str() {
                        _ if value.is_null() => {}
                        "limits" => deploy.limits = resources(value, &kp, false, ctx),
                        "reservations" => deploy.reservations = resources(value, &kp, true, ctx),
                        other => ctx.unsupported(&kp, other, "deploy.resources"),
                    }
                }
            }
            "restart_policy" => deploy.restart_policy = deploy_restart(value, &p, ctx),
            "labels" | "placement" | "update_config" | "rollback_config" | "endpoint_mode" => {
                ctx.warn(&p, format!("deploy.{key} applies to swarm only: ignored, as docker compose ignores it"))
            }
            key if key.starts_with("x-") => {}
            other => ctx.unsupported(&p, other, "deploy"),
        }
    }
    Some(deploy)
}

fn resources(value: &Value, path: &str, reservation: bool, ctx: &mut Ctx) -> Resources {
    let mut out = Resources::default();
    for (key, p, value) in ctx.entries(value, path).unwrap_or_default() {
        match key.as_str() {
            _ if value.is_null() => {}
            "cpus" => out.cpus = cpus(value, &p, ctx),
            "memory" => out.memory = ctx.bytes(value, &p),
            "pids" if !reservation => out.pids = ctx.integer(value, &p),
            "devices" if reservation => {
                for (i, item) in ctx.list(value, &p).unwrap_or_default().iter().enumerate() {
                    if let Some(device) = device_request(item, &join_index(&p, i), ctx) {
                        out.devices.push(device);
                    }
                }
            }
            other => ctx.unsupported(&p, other, path),
        }
    }
    out
}

fn device_request(value: &Value, path: &str, ctx: &mut Ctx) -> Option<DeviceRequest> {
    let mut device = DeviceRequest::default();
    for (key, p, value) in ctx.entries(value, path)? {
        match key.as_str() {
            "capabilities" => device.capabilities = ctx.strings(value, &p).unwrap_or_default(),
            "driver" => device.driver = ctx.string(value, &p),
            "count" => match value {
                Value::String(all) if all == "all" => device.count = None,
                _ => device.count = ctx.integer(value, &p),
            },
            "device_ids" => device.device_ids = ctx.strings(value, &p).unwrap_or_default(),
            "options" => device.options = ctx.string_map(value, &p).unwrap_or_default(),
            other => ctx.unsupported(&p, other, "a device"),
        }
    }
    if device.capabilities.is_empty() {
        ctx.problem(path, "a device needs its `capabilities`, such as [gpu]");
        return None;
    }
    if device.device_ids.is_empty() && device.count.is_none() {
        device.count = Some(-1);
    }
    Some(device)
}

fn deploy_restart(value: &Value, path: &str, ctx: &mut Ctx) -> Option<DeployRestart> {
    let mut policy = DeployRestart::default();
    for (key, p, value) in ctx.entries(value, path)? {
        match key.as_str() {
            _ if value.is_null() => {}
            "condition" => match ctx.string(value, &p) {
                Some(c) if ["none", "on-failure", "any"].contains(&c.as_str()) => {
                    policy.condition = Some(c)
                }
                Some(_) => ctx.problem(&p, "condition must be none, on-failure or any"),
                None => {}
            },
            "max_attempts" => match ctx.integer(value, &p).map(u32::try_from) {
                Some(Ok(n)) => policy.max_attempts = Some(n),
                Some(Err(_)) => ctx.problem(&p, "max_attempts must be 0 or more"),
                None => {}
            },
            "delay" | "window" => ctx.warn(
                &p,
                format!("deploy.restart_policy.{key} applies to swarm only: ignored, as docker compose ignores it"),
            ),
            other => ctx.unsupported(&p, other, "deploy.restart_policy"),
        }
    }
    Some(policy)
}

pub(super) fn cpus(value: &Value, path: &str, ctx: &mut Ctx) -> Option<f64> {
    let parsed = match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    match parsed {
        Some(n) if n.is_finite() && n >= 0.0 => Some(n),
        _ => {
            ctx.problem(path, "cpus must be a number of CPUs, such as 0.5 or 2");
            None
        }
    }
}
