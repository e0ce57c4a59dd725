//! The top-level `networks` and `volumes`: their keys, `external`, a network's `ipam`, and the
//! name the engine knows each by.

use serde_norway::Value;

use super::{valid_name, Ctx};
use crate::compose::model::*;
use crate::compose::tree::join_index;

/// The keys of a top-level network the agent supports.
pub const NETWORK_KEYS: &[&str] = &[
    "ipam",
    "enable_ipv6",
    "driver",
    "driver_opts",
    "labels",
    "name",
    "external",
    "internal",
    "attachable",
];

/// The keys of a top-level volume the agent supports.
pub const VOLUME_KEYS: &[&str] = &["driver", "driver_opts", "labels", "name", "external"];

/// A network's `ipam`: its driver, address pools and options.
fn ipam(value: &Value, path: &str, ctx: &mut Ctx) -> Option<Ipam> {
    let mut ipam = Ipam::default();
    for (key, p, value) in ctx.entries(value, path)? {
        match key.as_str() {
            _ if value.is_null() => {}
            "driver" => ipam.driver = ctx.string(value, &p),
            "options" => ipam.options = ctx.string_map(value, &p).unwrap_or_default(),
            "config" => {
                for (i, item) in ctx.list(value, &p).unwrap_or_default().iter().enumerate() {
                    let item_path = join_index(&p, i);
                    let mut pool = IpamPool::default();
                    for (k, kp, v) in ctx.entries(item, &item_path).unwrap_or_default() {
                        match k.as_str() {
                            "subnet" => pool.subnet = ctx.string(v, &kp),
                            "ip_range" => pool.ip_range = ctx.string(v, &kp),
                            "gateway" => pool.gateway = ctx.string(v, &kp),
                            "aux_addresses" => {
                                pool.aux_addresses = ctx.string_map(v, &kp).unwrap_or_default()
                            }
                            other => ctx.unsupported(&kp, other, "an ipam pool"),
                        }
                    }
                    ipam.config.push(pool);
                }
            }
            other => ctx.unsupported(&p, other, "ipam"),
        }
    }
    Some(ipam)
}

/// `external: true`, or the legacy `external: {name: N}`; the name it gives, if any.
fn external(value: &Value, path: &str, ctx: &mut Ctx) -> (bool, Option<String>) {
    match value {
        Value::Mapping(_) => {
            let mut name = None;
            for (key, p, value) in ctx.entries(value, path).unwrap_or_default() {
                match key.as_str() {
                    "name" => name = ctx.string(value, &p),
                    other => ctx.unsupported(&p, other, "`external`"),
                }
            }
            (true, name)
        }
        other => (ctx.boolean(other, path).unwrap_or(false), None),
    }
}

pub(super) fn network(key: &str, value: &Value, path: &str, ctx: &mut Ctx) -> Option<Network> {
    if !valid_name(key) {
        ctx.problem(
            path,
            format!("invalid network name `{key}`: use letters, digits, `_`, `.` and `-`"),
        );
    }
    let mut network = Network::default();
    let mut name = None;
    let mut external_name = None;
    if !value.is_null() {
        let owner = format!("network {key}");
        for (k, p, value) in ctx.entries(value, path)? {
            if value.is_null() && NETWORK_KEYS.contains(&k.as_str()) {
                continue;
            }
            match k.as_str() {
                "driver" => network.driver = ctx.string(value, &p),
                "driver_opts" => {
                    network.driver_opts = ctx.string_map(value, &p).unwrap_or_default()
                }
                "labels" => network.labels = ctx.string_map(value, &p).unwrap_or_default(),
                "name" => name = ctx.string(value, &p),
                "external" => (network.external, external_name) = external(value, &p, ctx),
                "internal" => network.internal = ctx.boolean(value, &p).unwrap_or(false),
                "attachable" => network.attachable = ctx.boolean(value, &p).unwrap_or(false),
                "ipam" => network.ipam = ipam(value, &p, ctx),
                "enable_ipv6" => network.enable_ipv6 = ctx.boolean(value, &p),
                k if k.starts_with("x-") => {}
                other => ctx.unsupported(&p, other, &owner),
            }
        }
    }
    network.name = resource_name(ctx.project, key, network.external, name.or(external_name));
    Some(network)
}

pub(super) fn volume(key: &str, value: &Value, path: &str, ctx: &mut Ctx) -> Option<Volume> {
    if !valid_name(key) {
        ctx.problem(
            path,
            format!("invalid volume name `{key}`: use letters, digits, `_`, `.` and `-`"),
        );
    }
    let mut volume = Volume::default();
    let mut name = None;
    let mut external_name = None;
    if !value.is_null() {
        let owner = format!("volume {key}");
        for (k, p, value) in ctx.entries(value, path)? {
            if value.is_null() && VOLUME_KEYS.contains(&k.as_str()) {
                continue;
            }
            match k.as_str() {
                "driver" => volume.driver = ctx.string(value, &p),
                "driver_opts" => volume.driver_opts = ctx.string_map(value, &p).unwrap_or_default(),
                "labels" => volume.labels = ctx.string_map(value, &p).unwrap_or_default(),
                "name" => name = ctx.string(value, &p),
                "external" => (volume.external, external_name) = external(value, &p, ctx),
                k if k.starts_with("x-") => {}
                other => ctx.unsupported(&p, other, &owner),
            }
        }
    }
    volume.name = resource_name(ctx.project, key, volume.external, name.or(external_name));
    Some(volume)
}

/// The engine's name of a network or volume, as compose names it.
pub(in crate::compose) fn resource_name(
    project: &str,
    key: &str,
    external: bool,
    name: Option<String>,
) -> String {
    match name {
        Some(name) => name,
        None if external => key.to_string(),
        None => format!("{project}_{key}"),
    }
}
