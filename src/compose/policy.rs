//! `compose.policy`: what a compose file may ask of the host.
//!
//! The agent runs as root and starts containers as root, so whoever writes the compose file (the
//! deploy bucket; through interpolation, Parameter Store) would otherwise own every instance: a
//! privileged container, the host's namespaces, `cap_add: [ALL]`, seccomp turned off, a bind of
//! `/` or of the Docker socket, a secret file read from `/etc/shadow` are each root on the host.
//! The defaults refuse them, as Bottlerocket (`settings.ecs.allow-privileged-containers: false`,
//! the ECS agent's `ECS_DISABLE_PRIVILEGED`) and Kubernetes' baseline Pod Security Standard do;
//! the baked config, never user data or a tag, allows what one service needs, by its name.
//!
//! Host paths are judged as the engine will mount them: relative to the compose file's
//! directory, `..` resolved, and the links of what exists today followed, so a link planted in a
//! bind-mounted directory counts as what it points to.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;

use super::model::{FromVariable, MountKind, Project, SecretSource, Service};
use super::parse::{clean, Paths};
use super::tree::{join_index, join_key};
use super::Problem;
use crate::config::types::Capability;
use crate::config::{Allowance, ComposePolicy, Namespace, Settings};

/// What may be bound below a protected path (the path itself and its parents never may).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Below {
    /// Anything: only the path itself and its parents hand the host over (`/`, `/home`).
    Anything,
    /// Read-only binds: a writable one changes how the host runs (`/etc/cron.d`, `/usr/bin`).
    ReadOnly,
    /// Nothing: even reading below it hands over the host or its secrets (`/proc/1/root`).
    Nothing,
}

/// The host's own paths, refused by default; `compose.policy.binds` replaces this list.
const HOST: &[(&str, Below, &str)] = &[
    ("/", Below::Anything, "the host's root"),
    ("/home", Below::Anything, "every user's home"),
    ("/etc", Below::ReadOnly, "the host's configuration"),
    ("/usr", Below::ReadOnly, "the host's programs"),
    ("/bin", Below::ReadOnly, "the host's programs"),
    ("/sbin", Below::ReadOnly, "the host's programs"),
    ("/lib", Below::ReadOnly, "the host's libraries"),
    ("/sys", Below::ReadOnly, "the kernel's settings"),
    ("/dev", Below::ReadOnly, "the host's devices"),
    ("/etc/shadow", Below::Nothing, "the host's password hashes"),
    ("/etc/gshadow", Below::Nothing, "the host's password hashes"),
    ("/etc/ssh", Below::Nothing, "the host's SSH keys"),
    ("/root", Below::Nothing, "root's home"),
    ("/boot", Below::Nothing, "the kernel and its boot loader"),
    (
        "/proc",
        Below::Nothing,
        "the host's processes and kernel settings",
    ),
];

/// The container engine's paths: whoever reaches them runs anything as root. Refused whatever
/// `compose.policy.binds` says, unless a service's allowance names them.
const ENGINE: &[(&str, &str)] = &[
    ("/var/run/docker.sock", "the Docker Engine's socket"),
    ("/run/docker.sock", "the Docker Engine's socket"),
    ("/run/docker", "the Docker Engine's runtime directory"),
    ("/run/containerd", "containerd's socket"),
    (
        "/var/lib/docker",
        "the Docker Engine's data (every container's configuration and volumes)",
    ),
    ("/var/lib/containerd", "containerd's data"),
];

/// Capabilities that reach past the container's namespaces, refused by default, with why.
const CAPABILITIES: &[(&str, &str)] = &[
    ("ALL", "every capability, SYS_ADMIN among them"),
    (
        "SYS_ADMIN",
        "mounts, namespaces and most of what root can do",
    ),
    ("SYS_MODULE", "loads kernel modules"),
    ("SYS_RAWIO", "raw access to the host's devices and memory"),
    (
        "SYS_PTRACE",
        "traces and reads the memory of other processes",
    ),
    ("SYS_BOOT", "reboots the host"),
    ("SYS_TIME", "sets the host's clock"),
    ("DAC_READ_SEARCH", "opens any host file by its handle"),
    ("BPF", "loads programs into the kernel"),
    ("PERFMON", "reads the kernel's performance data"),
    ("MAC_ADMIN", "changes AppArmor or SELinux policy"),
    ("MAC_OVERRIDE", "bypasses AppArmor or SELinux"),
];

/// A protected host path.
#[derive(Debug)]
struct Protected {
    /// As listed, and with its links followed (`/var/run` is a link to `/run`).
    path: PathBuf,
    real: PathBuf,
    below: Below,
    what: String,
}

impl Protected {
    fn new(path: &Path, below: Below, what: &str) -> Protected {
        Protected {
            path: path.to_path_buf(),
            real: resolve(path),
            below,
            what: what.to_string(),
        }
    }
}

/// `compose.policy` with the paths it protects on this host, ready to judge projects.
#[derive(Debug)]
pub(super) struct Rules {
    policy: ComposePolicy,
    /// The workdir, links followed: secret files are read from below it.
    workdir: PathBuf,
    protected: Vec<Protected>,
    /// `compose.policy.binds`, links followed: when set, binds may use only these.
    binds: Option<Vec<PathBuf>>,
}

impl Rules {
    /// The rules for the compose file of `settings`: its policy, and the host's protected paths
    /// with the agent's own (config, state, runtime and secrets directories) and the engine's.
    pub fn of(settings: &Settings) -> Rules {
        let mut own: Vec<(PathBuf, &str)> = vec![(
            Path::new(crate::config::defaults::CONFIG_PATH)
                .parent()
                .unwrap_or(Path::new("/"))
                .to_path_buf(),
            "the agent's config",
        )];
        for source in settings.sources.iter().filter(|s| s.is_absolute()) {
            if let Some(dir) = source.parent() {
                own.push((dir.to_path_buf(), "the agent's config"));
            }
        }
        own.push((settings.state_dir.clone(), "the agent's state"));
        let runtime = Path::new(crate::config::defaults::CONTROL_SOCKET).parent();
        own.extend(runtime.map(|dir| (dir.to_path_buf(), "the agent's runtime directory")));
        let socket = settings.control_socket.parent();
        own.extend(socket.map(|dir| (dir.to_path_buf(), "the agent's control socket")));
        let none = ComposePolicy::default();
        let policy = match &settings.compose {
            Some(compose) => {
                own.push((
                    compose.secrets_dir.clone(),
                    "the secret files the agent writes",
                ));
                &compose.policy
            }
            None => &none,
        };
        // The engine the agent itself talks to, wherever DOCKER_HOST puts its socket.
        let docker_host = std::env::var("DOCKER_HOST").ok();
        let engine_socket = docker_host
            .as_deref()
            .and_then(|host| host.strip_prefix("unix://"))
            .map(|path| (PathBuf::from(path), "the Docker Engine's socket"));
        own.extend(engine_socket);
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let hidden = private_dirs(&mountinfo).into_iter().map(|dir| {
            let what = "a directory the agent's unit gives it a private copy of (PrivateTmp): where the host's links there lead cannot be judged";
            (dir, what)
        });
        own.extend(hidden);
        Rules::new(policy, &settings.workdir, &own)
    }

    /// The rules of `policy` for `workdir`, with `own` (the agent's paths) and the engine's
    /// protected whatever the policy says.
    fn new(policy: &ComposePolicy, workdir: &Path, own: &[(PathBuf, &str)]) -> Rules {
        let binds = policy
            .binds
            .as_ref()
            .map(|binds| binds.iter().map(|b| resolve(b.as_path())).collect());
        let host = match binds {
            Some(_) => &[][..],
            None => HOST,
        };
        let mut protected: Vec<Protected> = host
            .iter()
            .map(|(path, below, what)| Protected::new(Path::new(path), *below, what))
            .collect();
        let engine = ENGINE.iter().map(|(path, what)| (Path::new(path), *what));
        let own = own.iter().map(|(path, what)| (path.as_path(), *what));
        protected.extend(
            engine
                .chain(own)
                .map(|(path, what)| Protected::new(path, Below::Nothing, what)),
        );
        Rules {
            policy: policy.clone(),
            workdir: resolve(workdir),
            protected,
            binds,
        }
    }
}

/// Every way `project` asks more of the host than `rules` allow, each at its key path. `paths`
/// are where each service's parts are written; values that came from a variable (the project's
/// `from_variables`) are not shown.
pub(super) fn judge(
    project: &Project,
    paths: &IndexMap<String, Paths>,
    rules: &Rules,
) -> Vec<Problem> {
    let tainted = &project.from_variables;
    let mut problems = Vec::new();
    let none = Allowance::default();
    for (name, service) in &project.services {
        let Some(paths) = paths.get(name) else {
            continue;
        };
        let allowed = rules.policy.allow.get(name).unwrap_or(&none);
        let judge = Judge {
            name,
            at: &paths.service,
            allowed,
            rules,
            tainted,
        };
        judge.flags(service, &mut problems);
        judge.mounts(project, service, paths, &mut problems);
    }
    for (name, source) in &project.secrets {
        let SecretSource::File(file) = source else {
            continue;
        };
        let real = resolve(file);
        let listed = rules.policy.secret_files.iter();
        let allowed = listed
            .map(|a| resolve(a.as_path()))
            .any(|a| real.starts_with(a));
        if real.starts_with(&rules.workdir) || allowed {
            continue;
        }
        let at = format!("secrets.{name}.file");
        let hidden = tainted.contains_key(&at);
        let message = format!(
            "secret {name} reads {}, outside the workdir {}: the agent reads it as root and hands it to the containers; refused by compose.policy (to allow it, the baked config sets compose.policy.secret_files: [{}])",
            shown_path(file, &real, hidden),
            rules.workdir.display(),
            allowed_path(&real, hidden),
        );
        problems.push(Problem::new(&at, message));
    }
    problems
}

/// One service judged.
struct Judge<'a> {
    name: &'a str,
    /// The service's key path.
    at: &'a str,
    allowed: &'a Allowance,
    rules: &'a Rules,
    tainted: &'a HashMap<String, FromVariable>,
}

impl Judge<'_> {
    fn refuse(&self, problems: &mut Vec<Problem>, path: &str, what: String, allow: String) {
        let message = format!(
            "{what}; refused by compose.policy (to allow it, the baked config sets compose.policy.allow.{}: {{{allow}}})",
            self.name
        );
        problems.push(Problem::new(path, message));
    }

    /// `value`, written at `path`, for a message: a placeholder when a variable gave it.
    fn shown(&self, path: &str, value: &str) -> String {
        match self.tainted.contains_key(path) {
            true => "THAT_VALUE (from a variable, not shown)".to_string(),
            false => value.to_string(),
        }
    }

    /// `privileged`, host namespaces, capabilities and `security_opt`.
    fn flags(&self, service: &Service, problems: &mut Vec<Problem>) {
        let flags = &service.flags;
        if flags.privileged == Some(true) && !self.allowed.privileged {
            let what =
                "privileged: true hands the container the host (every capability, every device)";
            let path = join_key(self.at, "privileged");
            self.refuse(problems, &path, what.into(), "privileged: true".into());
        }
        let namespaces = [
            (Namespace::Network, &service.network_mode),
            (Namespace::Pid, &flags.pid),
            (Namespace::Ipc, &flags.ipc),
            (Namespace::Userns, &flags.userns_mode),
        ];
        for (namespace, mode) in namespaces {
            if mode.as_deref() != Some("host") || self.allowed.host_namespaces.contains(&namespace)
            {
                continue;
            }
            let key = namespace.key();
            let what = format!(
                "{key}: host shares the host's {} namespace with the container",
                namespace.as_str()
            );
            let allow = format!("host_namespaces: [{}]", namespace.as_str());
            self.refuse(problems, &join_key(self.at, key), what, allow);
        }
        let allowed_caps: Vec<&str> = self.allowed.cap_add.iter().map(|c| c.as_str()).collect();
        for (i, cap) in service.cap_add.iter().enumerate() {
            let Ok(cap) = Capability::parse(cap) else {
                continue;
            };
            let name = cap.as_str();
            let Some((_, why)) = CAPABILITIES.iter().find(|(c, _)| *c == name) else {
                continue;
            };
            if allowed_caps.contains(&name) || allowed_caps.contains(&"ALL") {
                continue;
            }
            let path = join_index(&join_key(self.at, "cap_add"), i);
            let name = self.shown(&path, name);
            let what = format!("cap_add {name}: {why}");
            self.refuse(problems, &path, what, format!("cap_add: [{name}]"));
        }
        for (i, option) in flags.security_opt.iter().enumerate() {
            let option = security_opt(option);
            let allowed = self.allowed.security_opt.iter().map(|o| security_opt(o));
            if !unconfined(&option) || allowed.into_iter().any(|o| o == option) {
                continue;
            }
            let path = join_index(&join_key(self.at, "security_opt"), i);
            let option = self.shown(&path, &option);
            let what = format!("security_opt {option} lifts a confinement of the container");
            self.refuse(problems, &path, what, format!("security_opt: [{option}]"));
        }
    }

    /// Binds (and named volumes that are binds), and `env_file`s, which the agent reads as root.
    fn mounts(
        &self,
        project: &Project,
        service: &Service,
        paths: &Paths,
        problems: &mut Vec<Problem>,
    ) {
        for (mount, path) in service.volumes.iter().zip(&paths.volumes) {
            let source = mount.source.as_deref().unwrap_or_default();
            let hidden = self.tainted.contains_key(path)
                || self.tainted.contains_key(&join_key(path, "source"));
            let (host, read_only, how) = match mount.kind {
                MountKind::Bind => (PathBuf::from(source), mount.read_only, "binds".to_string()),
                MountKind::Volume => {
                    let volume = project.volumes.get(source);
                    let Some((device, read_only)) = volume.and_then(bind_device) else {
                        continue;
                    };
                    let how = format!("mounts volume {source}, whose driver_opts bind");
                    (device, mount.read_only || read_only, how)
                }
                MountKind::Tmpfs => continue,
            };
            self.host_path(problems, path, &host, read_only, &how, hidden);
        }
        for (file, path) in &paths.env_files {
            let hidden = self.tainted.contains_key(path);
            let how = "reads, as root, into the container's environment";
            self.host_path(problems, path, file, true, how, hidden);
        }
    }

    /// Judges one use of a host path (`how` the service uses it).
    fn host_path(
        &self,
        problems: &mut Vec<Problem>,
        path: &str,
        host: &Path,
        read_only: bool,
        how: &str,
        hidden: bool,
    ) {
        let real = resolve(host);
        let allowed = self.allowed.binds.iter();
        if allowed
            .map(|a| resolve(a.as_path()))
            .any(|a| real.starts_with(a))
        {
            return;
        }
        let Some(why) = refusal(self.rules, &real, read_only) else {
            return;
        };
        let what = format!("{how} {}: {why}", shown_path(host, &real, hidden));
        let allow = format!("binds: [{}]", allowed_path(&real, hidden));
        self.refuse(problems, path, what, allow);
    }
}

/// Why a use of host path `real` (links followed) hands over the host, if it does.
fn refusal(rules: &Rules, real: &Path, read_only: bool) -> Option<String> {
    for protected in &rules.protected {
        for form in [&protected.path, &protected.real] {
            let what = &protected.what;
            if form == real {
                return Some(format!("{} is {what}", form.display()));
            }
            if form.starts_with(real) {
                return Some(format!("it holds {} ({what})", form.display()));
            }
            if !real.starts_with(form) {
                continue;
            }
            match protected.below {
                Below::Anything => {}
                Below::ReadOnly if read_only => {}
                Below::ReadOnly => {
                    return Some(format!(
                        "it is below {} ({what}) and writable (a read-only bind, `:ro`, may be)",
                        form.display()
                    ))
                }
                Below::Nothing => return Some(format!("it is below {} ({what})", form.display())),
            }
        }
    }
    match &rules.binds {
        Some(binds) if !binds.iter().any(|b| real.starts_with(b)) => {
            Some("it is not below any path of compose.policy.binds".to_string())
        }
        _ => None,
    }
}

/// The host path a local volume binds (`driver_opts: {type: none, o: bind, device: PATH}`), and
/// whether its options make it read-only; `None` for any other volume.
fn bind_device(volume: &super::model::Volume) -> Option<(PathBuf, bool)> {
    let local = volume.driver.as_deref().is_none_or(|d| d == "local");
    if volume.external || !local {
        return None;
    }
    let options = volume.driver_opts.get("o")?;
    let options: Vec<&str> = options.split(',').map(str::trim).collect();
    if !options.iter().any(|o| *o == "bind" || *o == "rbind") {
        return None;
    }
    let device = volume.driver_opts.get("device")?;
    Some((clean(&Path::new("/").join(device)), options.contains(&"ro")))
}

/// A `security_opt` entry in one spelling: docker takes `key:value` and `key=value` alike.
fn security_opt(option: &str) -> String {
    match option.split_once([':', '=']) {
        Some((key, value)) => format!("{}={}", key.trim(), value.trim()),
        None => option.trim().to_string(),
    }
}

/// Whether a `security_opt` entry turns a confinement off: seccomp, AppArmor or the masked
/// system paths `unconfined`, or SELinux labelling disabled.
fn unconfined(option: &str) -> bool {
    option.ends_with("=unconfined") || option == "label=disable"
}

/// A host path for a message: as written, with what its links lead to; or not at all when a
/// variable gave it.
fn shown_path(written: &Path, real: &Path, hidden: bool) -> String {
    match hidden {
        true => "a host path from a variable (not shown)".to_string(),
        false if written == real => written.display().to_string(),
        false => format!("{} (which is {})", written.display(), real.display()),
    }
}

/// The directories the agent sees a private copy of, from its `/proc/self/mountinfo`: the
/// shipped unit's `PrivateTmp` mounts a directory of its own on `/tmp` and `/var/tmp` (a mount
/// whose root is not its file system's `/`), so the host's content there, which the engine binds,
/// is not what the agent sees.
fn private_dirs(mountinfo: &str) -> Vec<PathBuf> {
    let private = |line: &str| {
        let mut fields = line.split(' ').skip(3);
        let (root, point) = (fields.next()?, fields.next()?);
        let temp = matches!(point, "/tmp" | "/var/tmp");
        (temp && root != "/").then(|| PathBuf::from(point))
    };
    mountinfo.lines().filter_map(private).collect()
}

/// A host path for the allowance a message suggests.
fn allowed_path(real: &Path, hidden: bool) -> String {
    match hidden {
        true => "THAT_PATH".to_string(),
        false => real.display().to_string(),
    }
}

/// `path` as the engine will reach it: the longest part that exists with its links followed
/// (a dangling link by what it names), the rest as written, `..` resolved.
fn resolve(path: &Path) -> PathBuf {
    let mut head = clean(path);
    let mut rest: Vec<std::ffi::OsString> = Vec::new();
    // Bounded as the kernel bounds links (40), and by the path's depth.
    for _ in 0..64 {
        if let Ok(real) = head.canonicalize() {
            return clean(&rest.iter().rev().fold(real, |p, name| p.join(name)));
        }
        if let Ok(target) = std::fs::read_link(&head) {
            let parent = head.parent().unwrap_or(Path::new("/"));
            head = clean(&parent.join(target));
            continue;
        }
        match (head.parent(), head.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                head = parent.to_path_buf();
            }
            _ => break,
        }
    }
    clean(path)
}

#[cfg(test)]
mod tests;
