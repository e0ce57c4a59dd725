//! A service's `volumes`: bind mounts, named volumes and tmpfs, in the short syntax
//! (`SOURCE:TARGET[:OPTIONS]`) and the long one with its per-kind options.

use serde_norway::Value;

use super::{container_path, valid_name, Ctx};
use crate::compose::model::*;
use crate::compose::tree::{join_index, join_key};

/// The `volumes` list: each mount, with its entry's path for later errors. Two entries on one
/// container path: the last one wins, in the place of the first, as docker compose keeps it (the
/// engine would refuse both: "Duplicate mount point").
pub(super) fn volumes(
    value: &Value,
    path: &str,
    ctx: &mut Ctx,
    out: &mut Vec<Mount>,
    paths: &mut Vec<String>,
) {
    for (i, item) in ctx.list(value, path).unwrap_or_default().iter().enumerate() {
        let item_path = join_index(path, i);
        if let Some(mount) = mount(item, &item_path, ctx) {
            match out.iter().position(|m| m.target == mount.target) {
                Some(at) => {
                    out[at] = mount;
                    paths[at] = item_path;
                }
                None => {
                    out.push(mount);
                    paths.push(item_path);
                }
            }
        }
    }
}

/// The short syntax `SOURCE:TARGET[:OPTIONS]` or `TARGET` (an anonymous volume).
pub(super) fn volume_spec(spec: &str, ctx: &Ctx) -> Result<Mount, String> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (source, target, options) = match parts.as_slice() {
        [target] => (None, *target, ""),
        [source, target] => (Some(*source), *target, ""),
        [source, target, options] => (Some(*source), *target, *options),
        _ => return Err("expected SOURCE:TARGET[:OPTIONS] or TARGET".into()),
    };
    if !target.starts_with('/') {
        return Err("the target must be an absolute path in the container".into());
    }
    let mut mount = Mount {
        kind: MountKind::Volume,
        source: None,
        target: container_path(target),
        read_only: false,
        create_host_path: false,
        create_host_path_written: false,
        options_section: true,
        propagation: None,
        nocopy: false,
        tmpfs_size: None,
        selinux: None,
    };
    match source {
        None => {}
        Some("") => return Err("the source is empty".into()),
        Some(source) if source.starts_with(['/', '.', '~']) => {
            mount.kind = MountKind::Bind;
            mount.source = Some(ctx.host_path(source)?.display().to_string());
            // The short syntax has always created a missing host directory (docker's `-v`).
            mount.create_host_path = true;
            mount.create_host_path_written = true;
        }
        Some(source) if valid_name(source) => mount.source = Some(source.to_string()),
        Some(_) => {
            return Err("a named volume's name takes letters, digits, `_`, `.` and `-` (a host path starts with /, . or ~)".into())
        }
    }
    for option in options.split(',').filter(|o| !o.is_empty()) {
        match option {
            "ro" => mount.read_only = true,
            "rw" => mount.read_only = false,
            "nocopy" if mount.kind == MountKind::Volume => mount.nocopy = true,
            "z" | "Z" if mount.kind == MountKind::Bind => mount.selinux = Some(option.to_string()),
            "z" | "Z" => return Err("SELinux relabelling (:z, :Z) applies to a host path".into()),
            propagation @ ("shared" | "rshared" | "slave" | "rslave" | "private" | "rprivate")
                if mount.kind == MountKind::Bind =>
            {
                mount.propagation = Some(propagation.to_string())
            }
            _ => {
                return Err("unknown option: expected ro or rw, nocopy for a volume, or a bind propagation (rslave...)".into())
            }
        }
    }
    Ok(mount)
}

fn mount(item: &Value, path: &str, ctx: &mut Ctx) -> Option<Mount> {
    match item {
        Value::String(spec) => match volume_spec(spec, ctx) {
            Ok(mount) => Some(mount),
            Err(why) => {
                let shown = ctx.shown(path, spec);
                ctx.problem(path, format!("invalid volume {shown}: {why}"));
                None
            }
        },
        Value::Mapping(_) => long_mount(item, path, ctx),
        other => {
            ctx.expected(path, "a volume specification or a mapping", other);
            None
        }
    }
}

fn long_mount(item: &Value, path: &str, ctx: &mut Ctx) -> Option<Mount> {
    let before = ctx.problems.len();
    let mut kind = None;
    let mut source = None;
    let mut target = None;
    let mut mount = Mount {
        kind: MountKind::Volume,
        source: None,
        target: String::new(),
        read_only: false,
        create_host_path: false,
        create_host_path_written: false,
        options_section: false,
        propagation: None,
        nocopy: false,
        tmpfs_size: None,
        selinux: None,
    };
    let mut options = Vec::new();
    for (key, key_path, value) in ctx.entries(item, path)? {
        let p = key_path.as_str();
        match key.as_str() {
            "type" => match ctx.string(value, p).as_deref() {
                Some("bind") => kind = Some(MountKind::Bind),
                Some("volume") => kind = Some(MountKind::Volume),
                Some("tmpfs") => kind = Some(MountKind::Tmpfs),
                Some(other) => {
                    let message = format!(
                        "volume type `{other}` is not supported: use bind, volume or tmpfs"
                    );
                    ctx.problem(p, message)
                }
                None => {}
            },
            "source" => source = ctx.string(value, p),
            "target" => target = ctx.string(value, p),
            "read_only" => mount.read_only = ctx.boolean(value, p).unwrap_or(false),
            "bind" | "volume" | "tmpfs" if !value.is_null() => {
                options.push((key.clone(), key_path.clone(), value))
            }
            "bind" | "volume" | "tmpfs" => {}
            key if key.starts_with("x-") => {}
            other => ctx.unsupported(p, other, "a volume"),
        }
    }
    let Some(kind) = kind else {
        if ctx.problems.len() == before {
            ctx.problem(
                path,
                "a volume in the long syntax needs a `type` (bind, volume or tmpfs)",
            );
        }
        return None;
    };
    mount.kind = kind;
    // A missing host path is created unless `bind.create_host_path: false` (compose's default).
    mount.create_host_path = kind == MountKind::Bind;
    mount_options(&mut mount, options, ctx);
    match target {
        Some(target) if target.starts_with('/') => mount.target = container_path(&target),
        Some(_) => ctx.problem(
            &join_key(path, "target"),
            "the target must be an absolute path in the container",
        ),
        None => ctx.problem(path, "a volume needs a `target`"),
    }
    mount.source = mount_source(kind, source, path, ctx);
    (ctx.problems.len() == before).then_some(mount)
}

/// The `bind:`, `volume:` or `tmpfs:` options of a long-syntax mount (only its own kind's apply).
fn mount_options(mount: &mut Mount, options: Vec<(String, String, &Value)>, ctx: &mut Ctx) {
    let kind = mount.kind;
    for (section, section_path, value) in options {
        if section == kind.as_str() {
            mount.options_section = true;
        }
        if section != kind.as_str() {
            let message = format!(
                "`{section}` options do not apply to a {} mount",
                kind.as_str()
            );
            ctx.problem(&section_path, message);
            continue;
        }
        for (key, key_path, value) in ctx.entries(value, &section_path).unwrap_or_default() {
            let p = key_path.as_str();
            match (kind, key.as_str()) {
                (MountKind::Bind, "create_host_path") => {
                    mount.create_host_path = ctx.boolean(value, p).unwrap_or(false);
                    mount.create_host_path_written = mount.create_host_path;
                }
                (MountKind::Bind, "selinux") => match ctx.string(value, p).as_deref() {
                    Some(label @ ("z" | "Z")) => mount.selinux = Some(label.to_string()),
                    Some(_) => ctx.problem(p, "selinux must be z or Z"),
                    None => {}
                },
                (MountKind::Bind, "propagation") => match ctx.string(value, p).as_deref() {
                    Some(
                        mode @ ("shared" | "rshared" | "slave" | "rslave" | "private" | "rprivate"),
                    ) => mount.propagation = Some(mode.to_string()),
                    Some(_) => ctx.problem(
                        p,
                        "propagation must be shared, rshared, slave, rslave, private or rprivate",
                    ),
                    None => {}
                },
                (MountKind::Volume, "nocopy") => {
                    mount.nocopy = ctx.boolean(value, p).unwrap_or(false)
                }
                (MountKind::Tmpfs, "size") => mount.tmpfs_size = ctx.bytes(value, p),
                (_, other) => {
                    ctx.unsupported(p, other, &format!("the {section} options of a volume"))
                }
            }
        }
    }
}

/// A long-syntax mount's `source`, checked for its kind.
fn mount_source(
    kind: MountKind,
    source: Option<String>,
    path: &str,
    ctx: &mut Ctx,
) -> Option<String> {
    match (kind, source) {
        (MountKind::Bind, Some(source)) if !source.is_empty() => match ctx.host_path(&source) {
            Ok(path) => return Some(path.display().to_string()),
            Err(why) => ctx.problem(&join_key(path, "source"), why),
        },
        (MountKind::Bind, _) => ctx.problem(path, "a bind mount needs a `source`"),
        (MountKind::Volume, Some(source)) if source.is_empty() => {}
        (MountKind::Volume, Some(source)) if valid_name(&source) => return Some(source),
        (MountKind::Volume, Some(_)) => ctx.problem(
            &join_key(path, "source"),
            "a volume's name takes letters, digits, `_`, `.` and `-`",
        ),
        (MountKind::Volume, None) => {}
        (MountKind::Tmpfs, Some(_)) => {
            ctx.problem(&join_key(path, "source"), "a tmpfs mount has no `source`")
        }
        (MountKind::Tmpfs, None) => {}
    }
    None
}
