//! A service's networking: the networks it joins (with aliases and addresses), `network_mode`
//! and `extra_hosts`.

use indexmap::IndexMap;
use serde_norway::Value;

use super::Ctx;
use crate::compose::model::*;
use crate::compose::tree::join_index;

pub(super) fn service_networks(
    value: &Value,
    path: &str,
    ctx: &mut Ctx,
    out: &mut IndexMap<String, ServiceNetwork>,
    paths: &mut IndexMap<String, String>,
) {
    match value {
        Value::Sequence(items) => {
            for (i, item) in items.iter().enumerate() {
                let item_path = join_index(path, i);
                if let Some(name) = ctx.string(item, &item_path) {
                    out.insert(name.clone(), ServiceNetwork::default());
                    paths.insert(name, item_path);
                }
            }
        }
        Value::Mapping(_) => {
            for (name, key_path, value) in ctx.entries(value, path).unwrap_or_default() {
                let mut network = ServiceNetwork::default();
                if !value.is_null() {
                    network.configured = true;
                    for (key, p, value) in ctx.entries(value, &key_path).unwrap_or_default() {
                        match key.as_str() {
                            "aliases" => {
                                network.aliases = ctx.strings(value, &p).unwrap_or_default()
                            }
                            "ipv4_address" => network.ipv4_address = ctx.string(value, &p),
                            "ipv6_address" => network.ipv6_address = ctx.string(value, &p),
                            "priority" => network.priority = ctx.integer(value, &p),
                            key if key.starts_with("x-") => {}
                            other => {
                                ctx.unsupported(&p, other, &format!("network {name} of a service"))
                            }
                        }
                    }
                }
                out.insert(name.clone(), network);
                paths.insert(name, key_path);
            }
        }
        other => ctx.expected(path, "a list of network names or a mapping", other),
    }
}

/// `extra_hosts` as compose-go reads it: a list of `HOST=IP` or `HOST:IP` (the first `=`, else
/// the first `:`; several addresses separated by commas), or a mapping of a host to an address or
/// a list of them. Brackets around an IPv6 address are dropped (the engine takes `host:::1`).
pub(super) fn extra_hosts(value: &Value, path: &str, ctx: &mut Ctx) -> Vec<ExtraHost> {
    let mut pairs: Vec<(String, String, String)> = Vec::new();
    match value {
        Value::Sequence(items) => {
            for (i, item) in items.iter().enumerate() {
                let item_path = join_index(path, i);
                let Some(text) = ctx.string(item, &item_path) else {
                    continue;
                };
                match text.split_once('=').or_else(|| text.split_once(':')) {
                    Some((host, ips)) if !ips.is_empty() => {
                        for ip in ips.split(',') {
                            pairs.push((host.to_string(), ip.to_string(), item_path.clone()));
                        }
                    }
                    _ => {
                        let shown = ctx.shown(&item_path, &text);
                        let message =
                            format!("invalid extra host {shown}: expected HOST=IP or HOST:IP");
                        ctx.problem(&item_path, message);
                    }
                }
            }
        }
        Value::Mapping(_) => {
            for (host, key_path, value) in ctx.entries(value, path).unwrap_or_default() {
                let ips = match value {
                    Value::Sequence(_) => ctx.strings(value, &key_path).unwrap_or_default(),
                    other => ctx.string(other, &key_path).into_iter().collect(),
                };
                for ip in ips {
                    pairs.push((host.clone(), ip, key_path.clone()));
                }
            }
        }
        other => ctx.expected(path, "a list of HOST=IP or a mapping", other),
    }
    let mut out = Vec::new();
    for (host, ip, item_path) in pairs {
        if host.is_empty() || host.contains([':', '=']) {
            let shown = ctx.shown(&item_path, &host);
            ctx.problem(&item_path, format!("bad host name {shown} in extra_hosts"));
            continue;
        }
        let ip = ip.trim();
        let ip = ip
            .strip_prefix('[')
            .and_then(|i| i.strip_suffix(']'))
            .unwrap_or(ip);
        if ip.is_empty() {
            ctx.problem(&item_path, format!("extra host {host} has no address"));
            continue;
        }
        out.push(ExtraHost {
            host,
            ip: ip.to_string(),
        });
    }
    out
}

/// `network_mode`: `host`, `none`, `bridge`, `container:<name>` or `service:<name>`.
pub(super) fn network_mode(value: &Value, path: &str, ctx: &mut Ctx) -> Option<String> {
    let mode = ctx.string(value, path)?;
    let valid = match mode.split_once(':') {
        Some(("service" | "container", name)) => !name.is_empty(),
        Some(_) => false,
        None => matches!(mode.as_str(), "host" | "none" | "bridge"),
    };
    if !valid {
        let shown = ctx.shown(path, &mode);
        let message = format!("invalid network_mode {shown}: expected host, none, bridge, service:NAME or container:NAME");
        ctx.problem(path, message);
        return None;
    }
    Some(mode)
}
