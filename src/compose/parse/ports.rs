//! Published and exposed ports: `ports` in the short syntax (ports or ranges, expanded as docker's
//! `nat.ParsePortSpec` does) and the long one, and `expose`.

use serde_norway::Value;

use super::Ctx;
use crate::compose::model::*;
use crate::compose::tree::join_index;

/// The `ports` list: each entry's ports, with the entry's path for later errors.
pub(super) fn ports(
    value: &Value,
    path: &str,
    ctx: &mut Ctx,
    out: &mut Vec<Port>,
    paths: &mut Vec<String>,
) {
    for (i, item) in ctx.list(value, path).unwrap_or_default().iter().enumerate() {
        let item_path = join_index(path, i);
        for port in port(item, &item_path, ctx) {
            out.push(port);
            paths.push(item_path.clone());
        }
    }
}

fn protocol(text: &str) -> Option<Protocol> {
    match text.to_ascii_lowercase().as_str() {
        "tcp" => Some(Protocol::Tcp),
        "udp" => Some(Protocol::Udp),
        "sctp" => Some(Protocol::Sctp),
        _ => None,
    }
}

fn port_number(text: &str) -> Option<u16> {
    text.parse::<u16>().ok().filter(|p| *p > 0)
}

fn port_range(text: &str) -> Option<PortRange> {
    match text.split_once('-') {
        None => port_number(text).map(PortRange::single),
        Some((start, end)) => {
            let (start, end) = (port_number(start)?, port_number(end)?);
            (start <= end).then_some(PortRange { start, end })
        }
    }
}

/// The short syntax `[[HOST_IP:]HOST_PORT:]CONTAINER_PORT[/PROTOCOL]`, ports or ranges, expanded
/// into one [`Port`] per container port as compose (docker's `nat.ParsePortSpec`) does.
pub(in crate::compose) fn port_spec(spec: &str) -> Result<Vec<Port>, &'static str> {
    const SYNTAX: &str = "expected [[HOST_IP:]HOST_PORT:]CONTAINER_PORT[/PROTOCOL], ports or ranges such as 8000-8010";
    let (rest, protocol) = match spec.rsplit_once('/') {
        Some((rest, p)) => (
            rest,
            protocol(p).ok_or("the protocol must be tcp, udp or sctp")?,
        ),
        None => (spec, Protocol::Tcp),
    };
    let (bracketed_ip, rest) = match rest.strip_prefix('[') {
        Some(after) => {
            let (ip, rest) = after.split_once("]:").ok_or(SYNTAX)?;
            (Some(ip), rest)
        }
        None => (None, rest),
    };
    let parts: Vec<&str> = rest.rsplitn(3, ':').collect();
    let (ip, host, container) = match (bracketed_ip, parts.as_slice()) {
        (None, [container]) => (None, None, *container),
        (None, [container, host]) => (None, Some(*host), *container),
        (None, [container, host, ip]) => (Some(*ip), Some(*host), *container),
        (Some(ip), [container, host]) => (Some(ip), Some(*host), *container),
        _ => return Err(SYNTAX),
    };
    let host_ip = ip.filter(|ip| !ip.is_empty()).map(str::to_string);
    let container = port_range(container).ok_or(SYNTAX)?;
    let host = match host.filter(|h| !h.is_empty()) {
        Some(h) => Some(port_range(h).ok_or(SYNTAX)?),
        None => None,
    };
    let port = |target: u16, published: Option<PortRange>| Port {
        host_ip: host_ip.clone(),
        published,
        target,
        protocol,
        mode: PortMode::Ingress,
    };
    let targets = container.start..=container.end;
    match host {
        None => Ok(targets.map(|t| port(t, None)).collect()),
        Some(host) if container.start == container.end => {
            Ok(vec![port(container.start, Some(host))])
        }
        Some(host) if host.end - host.start == container.end - container.start => Ok(targets
            .zip(host.start..=host.end)
            .map(|(t, h)| port(t, Some(PortRange::single(h))))
            .collect()),
        Some(_) => Err("a container port range needs a host port range of the same length"),
    }
}

fn port(item: &Value, path: &str, ctx: &mut Ctx) -> Vec<Port> {
    match item {
        Value::Number(n) => match n
            .as_u64()
            .and_then(|n| u16::try_from(n).ok())
            .filter(|n| *n > 0)
        {
            Some(target) => vec![Port {
                host_ip: None,
                published: None,
                target,
                protocol: Protocol::Tcp,
                mode: PortMode::Ingress,
            }],
            None => {
                ctx.problem(path, "a port must be between 1 and 65535");
                Vec::new()
            }
        },
        Value::String(spec) => match port_spec(spec.trim()) {
            Ok(ports) => ports,
            Err(why) => {
                let shown = ctx.shown(path, spec);
                ctx.problem(path, format!("invalid port {shown}: {why}"));
                Vec::new()
            }
        },
        Value::Mapping(_) => long_port(item, path, ctx).into_iter().collect(),
        other => {
            ctx.expected(path, "a port specification or a mapping", other);
            Vec::new()
        }
    }
}

fn long_port(item: &Value, path: &str, ctx: &mut Ctx) -> Option<Port> {
    let mut port = Port {
        host_ip: None,
        published: None,
        target: 0,
        protocol: Protocol::Tcp,
        mode: PortMode::Ingress,
    };
    let before = ctx.problems.len();
    for (key, key_path, value) in ctx.entries(item, path)? {
        let p = key_path.as_str();
        match key.as_str() {
            "target" => match ctx
                .integer(value, p)
                .map(|n| u16::try_from(n).ok().filter(|n| *n > 0))
            {
                Some(Some(n)) => port.target = n,
                Some(None) => ctx.problem(p, "the target port must be between 1 and 65535"),
                None => {}
            },
            "published" => {
                let text = match value {
                    Value::Number(n) => n.to_string(),
                    other => ctx.string(other, p).unwrap_or_default(),
                };
                match port_range(&text) {
                    Some(range) => port.published = Some(range),
                    None if text.is_empty() => {}
                    None => {
                        let shown = ctx.shown(p, &text);
                        ctx.problem(p, format!("invalid published port {shown}: expected a port or a range such as 8000-8010"));
                    }
                }
            }
            "host_ip" => port.host_ip = ctx.string(value, p).filter(|ip| !ip.is_empty()),
            "protocol" => match ctx.string(value, p).map(|s| protocol(&s)) {
                Some(Some(protocol)) => port.protocol = protocol,
                Some(None) => ctx.problem(p, "the protocol must be tcp, udp or sctp"),
                None => {}
            },
            "mode" => match ctx.string(value, p).as_deref() {
                Some("host") => port.mode = PortMode::Host,
                Some("ingress") => port.mode = PortMode::Ingress,
                Some(_) => ctx.problem(p, "the mode must be host or ingress"),
                None => {}
            },
            key if key.starts_with("x-") => {}
            other => ctx.unsupported(p, other, "a port"),
        }
    }
    if port.target == 0 && ctx.problems.len() == before {
        ctx.problem(path, "a port needs a `target`");
    }
    (ctx.problems.len() == before).then_some(port)
}

/// `expose`: ports (`80`), with a protocol (`80/udp`), or ranges (`8000-8010`), each one key of
/// the engine's `ExposedPorts`.
pub(super) fn expose(value: &Value, path: &str, ctx: &mut Ctx) -> Vec<String> {
    let mut out = Vec::new();
    for (i, item) in ctx
        .scalars(value, path)
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        let item_path = join_index(path, i);
        let (ports, protocol) = item.split_once('/').unwrap_or((&item, "tcp"));
        let range = match ports.split_once('-') {
            Some((a, b)) => a.parse::<u16>().ok().zip(b.parse::<u16>().ok()),
            None => ports.parse::<u16>().ok().map(|p| (p, p)),
        };
        match (range, protocol) {
            (Some((start, end)), "tcp" | "udp" | "sctp") if start > 0 && start <= end => {
                out.extend((start..=end).map(|port| format!("{port}/{protocol}")));
            }
            _ => {
                let shown = ctx.shown(&item_path, &item);
                ctx.problem(
                    &item_path,
                    format!("invalid port {shown} to expose: expected PORT[/PROTOCOL] or a range START-END"),
                );
            }
        }
    }
    out
}
