//! What the script's commands say, read as their programs read their arguments: `aws`'s
//! options and operation, `docker login`'s credentials, `docker compose`'s global options; and
//! what runs a command (`sudo`, `su -c`, `bash -c`) or takes its output (`tee`).

use super::script::{self, Command, Redirect};

/// `docker login`'s arguments.
#[derive(Debug, Default)]
pub(super) struct LoginArgs {
    pub(super) username: Option<String>,
    pub(super) password: Option<String>,
    pub(super) stdin: bool,
    pub(super) server: Option<String>,
}

impl LoginArgs {
    pub(super) fn parse(args: &[String]) -> LoginArgs {
        let mut login = LoginArgs::default();
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((flag, value)) if flag.starts_with("--") => (flag, Some(value.to_string())),
                _ => (arg.as_str(), None),
            };
            let mut value = || inline.clone().or_else(|| args.next().cloned());
            match flag {
                "-u" | "--username" => login.username = value(),
                "-p" | "--password" => login.password = value(),
                "--password-stdin" => login.stdin = true,
                _ if flag.starts_with("-u") => login.username = Some(flag[2..].to_string()),
                _ if flag.starts_with("-p") => login.password = Some(flag[2..].to_string()),
                _ if flag.starts_with('-') => {}
                _ => login.server = Some(arg.clone()),
            }
        }
        login
    }
}

/// The global options of `docker compose` read before its command.
#[derive(Debug, Default)]
pub(super) struct ComposeFlags {
    pub(super) files: Vec<String>,
    pub(super) project: Option<String>,
    pub(super) project_directory: Option<String>,
    pub(super) env_file: Option<String>,
    pub(super) messages: Vec<String>,
}

impl ComposeFlags {
    /// Reads the option at the start of `args`; how many words it took.
    pub(super) fn read(&mut self, args: &[String]) -> usize {
        let Some(first) = args.first() else {
            return 1;
        };
        let (flag, inline) = match first.split_once('=') {
            Some((flag, value)) => (flag, Some(value.to_string())),
            None => (first.as_str(), None),
        };
        let takes_value = [
            "-f",
            "--file",
            "-p",
            "--project-name",
            "--project-directory",
            "--env-file",
            "--profile",
            "--ansi",
            "--progress",
            "--parallel",
            "-H",
            "--host",
            "-c",
            "--context",
        ]
        .contains(&flag);
        let (value, used) = match (takes_value, inline) {
            (true, Some(value)) => (value, 1),
            (true, None) => (args.get(1).cloned().unwrap_or_default(), 2),
            (false, _) => (String::new(), 1),
        };
        match flag {
            "-f" | "--file" => self.files.push(value),
            "-p" | "--project-name" => self.project = Some(value),
            "--project-directory" => self.project_directory = Some(value),
            "--env-file" => self.env_file = Some(value),
            "--profile" => self.messages.push(format!(
                "--profile {value}: the agent runs every service, profiles or not"
            )),
            _ => {}
        }
        used
    }
}

/// `aws` arguments: options by name, and the positional words (service, operation, then the
/// operation's own, such as `s3 cp`'s source and destination).
#[derive(Debug, Default)]
pub(super) struct AwsArgs {
    pub(super) options: Vec<(String, Vec<String>)>,
    pub(super) positional: Vec<String>,
}

/// `aws` options that take no value.
const AWS_SWITCHES: &[&str] = &[
    "with-decryption",
    "no-with-decryption",
    "recursive",
    "debug",
    "no-paginate",
    "no-verify-ssl",
    "no-sign-request",
    "dryrun",
    "quiet",
    "no-cli-pager",
    "only-show-errors",
    "no-progress",
    "no-include-email",
    "follow-symlinks",
    "no-follow-symlinks",
    "delete",
    "exact-timestamps",
    "size-only",
    "no-guess-mime-type",
];

impl AwsArgs {
    pub(super) fn parse(args: &[String]) -> AwsArgs {
        let mut aws = AwsArgs::default();
        let mut i = 0;
        while i < args.len() {
            let arg = &args[i];
            i += 1;
            let Some(option) = arg.strip_prefix("--") else {
                aws.positional.push(arg.clone());
                continue;
            };
            if let Some((name, value)) = option.split_once('=') {
                aws.options
                    .push((name.to_string(), vec![value.to_string()]));
                continue;
            }
            let mut values = Vec::new();
            if !AWS_SWITCHES.contains(&option) {
                let many = option == "names";
                while i < args.len() && !args[i].starts_with("--") {
                    values.push(args[i].clone());
                    i += 1;
                    if !many {
                        break;
                    }
                }
            }
            aws.options.push((option.to_string(), values));
        }
        aws
    }

    pub(super) fn service(&self) -> &str {
        self.positional
            .first()
            .map(String::as_str)
            .unwrap_or_default()
    }

    pub(super) fn operation(&self) -> &str {
        self.positional
            .get(1)
            .map(String::as_str)
            .unwrap_or_default()
    }

    pub(super) fn option(&self, name: &str) -> Option<&str> {
        self.options
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.first())
            .map(String::as_str)
    }

    pub(super) fn values(&self, name: &str) -> Vec<&str> {
        self.options
            .iter()
            .filter(|(n, _)| n == name)
            .flat_map(|(_, v)| v.iter().map(String::as_str))
            .collect()
    }

    pub(super) fn flag(&self, name: &str) -> bool {
        self.options.iter().any(|(n, _)| n == name)
    }
}

/// A command without what runs it as someone else (`sudo -u ubuntu`, `env A=b`, `nohup`) or
/// sets its environment only (`A=b cmd`).
pub(super) fn without_prefixes(command: &Command) -> Command {
    let words = &command.words;
    let mut i = 0;
    while i < words.len() {
        match words[i].as_str() {
            "sudo" => {
                i += 1;
                while i < words.len() && words[i].starts_with('-') {
                    let takes_value = ["-u", "-g", "-C", "-D", "-h", "-p", "-r", "-t", "-U"]
                        .contains(&words[i].as_str());
                    i += if takes_value { 2 } else { 1 };
                }
            }
            "env" | "nohup" | "time" | "command" => i += 1,
            word if is_assignment(word) && words[i + 1..].iter().any(|w| !is_assignment(w)) => {
                i += 1
            }
            _ => break,
        }
    }
    Command {
        words: words[i.min(words.len())..].to_vec(),
        stdout: command.stdout.clone(),
    }
}

/// The name of a variable `value` only refers to (`$NAME`, `${NAME}`).
pub(super) fn variable_name(value: &str) -> Option<&str> {
    value
        .strip_prefix("${")
        .and_then(|v| v.strip_suffix('}'))
        .or_else(|| value.strip_prefix('$'))
        .filter(|name| is_assignment(&format!("{name}=")))
}

/// Whether a word is awscli v1's `$(aws ecr get-login ...)`, run for the `docker login` it prints.
pub(super) fn is_ecr_get_login(word: &str) -> bool {
    script::substitution(word).is_some_and(|(_, inner, _)| {
        let words: Vec<&str> = inner.split_whitespace().collect();
        words.first() == Some(&"aws") && words.windows(2).any(|w| w == ["ecr", "get-login"])
    })
}

/// The commands a shell runs for this one, and where: `bash -c TEXT`, `sh -c TEXT`, `su [-]
/// [user] -c TEXT` and `runuser -l user -c TEXT` (a login shell starts in the user's home).
pub(super) fn nested_shell(words: &[String]) -> Option<(String, Option<String>)> {
    let (program, args) = words.split_first()?;
    let at = args.iter().position(|a| a == "-c")?;
    let text = args.get(at + 1)?.clone();
    match program.as_str() {
        "bash" | "sh" => Some((text, None)),
        "su" | "runuser" => {
            let login = args[..at]
                .iter()
                .any(|a| a == "-" || a == "-l" || a == "--login");
            let user = args[..at]
                .iter()
                .find(|a| !a.starts_with('-'))
                .map(String::as_str);
            let home = match user {
                None | Some("root") => "/root".to_string(),
                Some(user) => format!("/home/{user}"),
            };
            Some((text, login.then_some(home)))
        }
        _ => None,
    }
}

/// Whether a word sets a variable (`NAME=value`).
pub(super) fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty()
            && name.starts_with(|c: char| c == '_' || c.is_ascii_alphabetic())
            && name.chars().all(|c| c == '_' || c.is_ascii_alphanumeric())
    })
}

pub(super) fn is_docker_login(command: &Command) -> bool {
    let w = &command.words;
    w.len() >= 2 && w[0] == "docker" && w[1] == "login"
}

/// Where a pipeline's output goes: its last command's `>`, or the file of a `tee` it ends with.
pub(super) fn output(commands: &[Command]) -> Option<Redirect> {
    let last = commands.last()?;
    let tee = last.words.first().is_some_and(|w| w == "tee");
    if !tee {
        return last.stdout.clone();
    }
    let args = &last.words[1..];
    let append = args.iter().any(|a| a == "-a" || a == "--append");
    let path = args.iter().find(|a| !a.starts_with('-'))?;
    Some(Redirect {
        path: path.clone(),
        append,
    })
}

/// The parameter a `$(aws ssm get-parameter --name /x ...)` reads.
pub(super) fn ssm_substitution(value: &str) -> Option<String> {
    let (_, inner, _) = script::substitution(value)?;
    let pipelines = script::inner_pipelines(inner);
    let command = pipelines.first()?.commands.first()?;
    let command = without_prefixes(command);
    let (program, args) = command.words.split_first()?;
    if program != "aws" {
        return None;
    }
    let aws = AwsArgs::parse(args);
    match (aws.service(), aws.operation()) {
        ("ssm", "get-parameter") => aws.option("name").map(str::to_string),
        _ => None,
    }
}

/// Whether a pipeline is `aws ecr get-login-password`.
pub(super) fn is_ecr_login_password(pipelines: &[script::Pipeline]) -> bool {
    pipelines
        .first()
        .and_then(|p| p.commands.first())
        .is_some_and(|c| {
            let aws = AwsArgs::parse(c.words.get(1..).unwrap_or_default());
            c.words.first().is_some_and(|w| w == "aws")
                && aws.service() == "ecr"
                && aws.operation() == "get-login-password"
        })
}
