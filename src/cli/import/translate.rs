//! A user-data script's commands turned into what the agent's config says: which parameters go
//! to the env file, which objects become files, which compose project runs where, which
//! registries the script logged in to; and, for every line that says more than the config can
//! (or that the agent does differently), a note quoting it, secrets masked.
//!
//! The script is followed as the shell would run it, line by line: `cd` moves the working
//! directory relative paths resolve against, and a variable the script sets to a literal is
//! replaced by its value. What stays unknown offline (a variable set outside the script) is kept
//! as `${NAME}` for the operator to fill in.

use std::collections::{HashMap, HashSet};

use super::commands::{
    is_assignment, is_docker_login, is_ecr_get_login, is_ecr_login_password, nested_shell, output,
    ssm_substitution, variable_name, without_prefixes, AwsArgs, ComposeFlags, LoginArgs,
};
use super::mask;
use super::model::{Auth, Compose, File, Import, Note, NoteKind, Parameter, Registry, Username};
use super::script::{self, Command, Line, Redirect};
use crate::config::types::{is_valid_key, Account, FileMode};

/// What became of one pipeline of a line.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Done(Vec<String>),
    NotTranslated(Vec<String>),
}

use Outcome::{Done, NotTranslated};

fn done() -> Outcome {
    Done(Vec::new())
}

fn done_with(message: impl Into<String>) -> Outcome {
    Done(vec![message.into()])
}

fn not_translated(message: impl Into<String>) -> Outcome {
    NotTranslated(vec![message.into()])
}

const DOCKER_PULL: &str = "the agent pulls the compose file's images itself, with the credentials of registries[]; compose.pull: always pulls them at every sync, as this line did at every boot";
const PRUNE: &str = "compose.prune: true removes the images this project pulled and no longer uses, after a healthy sync; never an image of anything else";
const SYSTEM_PRUNE: &str = "docker system prune also removed stopped containers, unused networks and the build cache: the agent does not";
const MKDIR: &str =
    "nothing to translate: the agent creates the directories of the files it writes";
const S3_PREFIX: &str = "the agent fetches objects, not prefixes: list each object under files[] (source: s3://bucket/key, path:)";
const DOCKER_LOGIN: &str = "docker login: use registries[], which logs in with a password from Parameter Store (password: { parameter: /name }), never one written in the config: put the password in a SecureString parameter";
const LITERAL_VARIABLE: &str = "a literal variable: the agent writes the env file from Parameter Store and Secrets Manager only; put it in the dotenv document of a parameter, or in the compose file's environment:";
const INSTANCE_REGION: &str =
    "the instance's own region: the agent's default, so aws.region is left out";

/// Reads `script` into what the agent's config says of it.
pub fn translate(script: &str) -> Import {
    let mut translator = Translator::default();
    for line in script::logical_lines(script) {
        translator.line(&line);
    }
    translator.finish()
}

/// A variable the script reads a parameter into (`PW=$(aws ssm get-parameter ...)`).
#[derive(Debug)]
struct ParameterVariable {
    parameter: String,
    line: usize,
    shown: String,
    used: bool,
}

#[derive(Debug)]
struct Translator {
    /// The working directory (user data runs in `/`).
    cwd: String,
    /// Variables the script sets to a literal.
    known: HashMap<String, String>,
    parameter_variables: HashMap<String, ParameterVariable>,
    /// Variables that hold the instance's region (read from instance metadata).
    instance_region: HashSet<String>,
    /// Directories the script makes or enters.
    dirs: HashSet<String>,
    /// Placeholders handed out, by name, so that each is named once.
    placeholders: HashMap<String, usize>,
    /// How the current line is shown (for notes made while reading it).
    shown: String,
    line: usize,
    out: Import,
}

impl Default for Translator {
    fn default() -> Self {
        Translator {
            cwd: "/".into(),
            known: HashMap::new(),
            parameter_variables: HashMap::new(),
            instance_region: HashSet::new(),
            dirs: HashSet::new(),
            placeholders: HashMap::new(),
            shown: String::new(),
            line: 0,
            out: Import::default(),
        }
    }
}

impl Translator {
    fn line(&mut self, line: &Line) {
        let Some(words) = &line.words else {
            let shown = "(not shown: it is not shell words, a quote does not close)".to_string();
            self.note(line.number, shown, vec![NotTranslated(Vec::new())]);
            return;
        };
        if words.is_empty() {
            return;
        }
        self.line = line.number;
        self.shown = shown(line, words);
        let expanded: Vec<String> = words
            .iter()
            .map(|w| script::expand(w, &self.known))
            .collect();
        let mut outcomes: Vec<Outcome> = script::pipelines(&expanded)
            .iter()
            .map(|p| self.pipeline(&p.commands))
            .collect();
        if line.here_document > 0 {
            outcomes.push(not_translated(format!(
                "its here-document ({} lines, not shown) is not translated: keep the file in S3 and list it under files[]",
                line.here_document
            )));
        }
        self.note(line.number, self.shown.clone(), outcomes);
    }

    /// Records a note for the line unless every command of it was translated as it is.
    fn note(&mut self, line: usize, shown: String, outcomes: Vec<Outcome>) {
        let any_done = outcomes.iter().any(|o| matches!(o, Done(_)));
        let any_not = outcomes.iter().any(|o| matches!(o, NotTranslated(_)));
        let mut messages = Vec::new();
        for outcome in outcomes {
            let (Done(m) | NotTranslated(m)) = outcome;
            messages.extend(m);
        }
        let kind = match (any_done, any_not) {
            (_, false) if messages.is_empty() => return,
            (_, false) => NoteKind::Translated,
            (true, true) => NoteKind::Partly,
            (false, true) => NoteKind::NotTranslated,
        };
        messages.dedup();
        self.out.notes.push(Note {
            line,
            shown,
            kind,
            messages,
        });
    }

    fn finish(mut self) -> Import {
        let mut unused: Vec<&ParameterVariable> = self
            .parameter_variables
            .values()
            .filter(|v| !v.used)
            .collect();
        unused.sort_by_key(|v| v.line);
        let notes: Vec<Note> = unused
            .iter()
            .map(|v| Note {
                line: v.line,
                shown: v.shown.clone(),
                kind: NoteKind::NotTranslated,
                messages: vec![format!(
                    "reads parameter {} into a shell variable that no translated line uses",
                    v.parameter
                )],
            })
            .collect();
        self.out.notes.extend(notes);
        self.out.notes.sort_by_key(|n| n.line);
        self.out
    }

    fn pipeline(&mut self, commands: &[Command]) -> Outcome {
        let commands: Vec<Command> = commands.iter().map(without_prefixes).collect();
        if let Some(at) = commands.iter().position(is_docker_login) {
            let stdin = at.checked_sub(1).map(|i| &commands[i]);
            return self.docker_login(&commands[at].words, stdin);
        }
        let Some(first) = commands.first() else {
            return done();
        };
        let output = output(&commands);
        let words = first.words.as_slice();
        match words.first().map(String::as_str) {
            None => done(),
            Some("aws") => self.aws(&words[1..], &commands[1..], output.as_ref()),
            Some("cd") => self.cd(words.get(1)),
            Some("docker") => self.docker(&words[1..]),
            Some("docker-compose") => self.compose(&words[1..]),
            Some("echo") => self.echo(&words[1..], output.as_ref()),
            Some("mkdir") => self.mkdir(&words[1..]),
            Some("chmod") => self.chmod(&words[1..]),
            Some("chown") => self.chown(&words[1..]),
            Some("export") => self.assign(&words[1..], true),
            Some(word) if is_assignment(word) => self.assign(words, false),
            // Error handling: the agent stops and retries by itself.
            Some("exit") | Some("true") | Some(":") => done(),
            Some(word) if is_ecr_get_login(word) => not_translated(
                "aws ecr get-login: list the registry under registries[] with ecr: true (a token from the instance role)",
            ),
            Some(_) => match nested_shell(words) {
                Some((text, cwd)) => self.nested(&text, cwd),
                None => NotTranslated(Vec::new()),
            },
        }
    }

    /// The commands of `bash -c '...'` or `su - user -c '...'`, run in `cwd` when it says one;
    /// the working directory they move to is theirs.
    fn nested(&mut self, text: &str, cwd: Option<String>) -> Outcome {
        let Ok(words) = shell_words::split(text) else {
            return NotTranslated(Vec::new());
        };
        let saved = self.cwd.clone();
        if let Some(cwd) = cwd {
            self.cwd = cwd;
        }
        let expanded: Vec<String> = words
            .iter()
            .map(|w| script::expand(w, &self.known))
            .collect();
        let outcomes: Vec<Outcome> = script::pipelines(&expanded)
            .iter()
            .map(|p| self.pipeline(&p.commands))
            .collect();
        self.cwd = saved;
        merge(outcomes)
    }

    /// `NAME=value ...` (with `export`: the variables go to the commands' environment).
    fn assign(&mut self, words: &[String], exported: bool) -> Outcome {
        let mut outcomes = Vec::new();
        for word in words.iter().filter(|w| !w.starts_with('-')) {
            let Some((name, value)) = word.split_once('=') else {
                continue;
            };
            outcomes.push(self.assign_one(name, value, exported));
        }
        match outcomes.is_empty() {
            true => NotTranslated(Vec::new()),
            false => merge(outcomes),
        }
    }

    fn assign_one(&mut self, name: &str, value: &str, exported: bool) -> Outcome {
        self.known.remove(name);
        if let Some(parameter) = ssm_substitution(value) {
            let used = exported;
            if exported {
                self.add_parameter(Parameter::Single {
                    name: parameter.clone(),
                    key: name.to_string(),
                });
            }
            self.parameter_variables.insert(
                name.to_string(),
                ParameterVariable {
                    parameter,
                    line: self.line,
                    shown: self.shown.clone(),
                    used,
                },
            );
            return match exported {
                true => done_with(format!("an exported variable compose read from the shell: the agent writes {name} to the env file, which compose reads the same way")),
                false => done(),
            };
        }
        if reads_instance_region(value) {
            self.instance_region.insert(name.to_string());
            return done_with(INSTANCE_REGION);
        }
        if refers_to_any(value, &self.instance_region) {
            self.instance_region.insert(name.to_string());
            return done();
        }
        if value.contains(METADATA) {
            return match value.contains("/api/token") {
                true => done_with(
                    "an instance metadata token: the agent reads instance metadata itself",
                ),
                false => not_translated(
                    "reads instance metadata: the agent's config has no place for it",
                ),
            };
        }
        if script::substitution(value).is_some() {
            return NotTranslated(Vec::new());
        }
        match name {
            "AWS_REGION" | "AWS_DEFAULT_REGION" => return self.region(value),
            "AWS_ENDPOINT_URL" => {
                self.out.endpoint_url = Some(value.to_string());
                return done();
            }
            "AWS_ACCESS_KEY_ID" | "AWS_SECRET_ACCESS_KEY" | "AWS_SESSION_TOKEN" | "AWS_PROFILE" => {
                return not_translated("AWS credentials in user data: the agent uses the instance role; remove them (and rotate the key: user data is readable by anyone with ec2:DescribeInstanceAttribute)");
            }
            _ => {}
        }
        self.known.insert(name.to_string(), value.to_string());
        match exported {
            true => not_translated("an exported variable compose would read from the shell: put it in the dotenv document of a parameter, or in the compose file's environment:"),
            false => done(),
        }
    }

    fn cd(&mut self, dir: Option<&String>) -> Outcome {
        self.cwd = match dir.map(String::as_str) {
            None | Some("~") => "${HOME}".to_string(),
            Some("-") => {
                return not_translated("cd -: the directory it goes back to is not followed")
            }
            Some(dir) => self.resolve(dir),
        };
        self.dirs.insert(self.cwd.clone());
        done()
    }

    fn mkdir(&mut self, args: &[String]) -> Outcome {
        for dir in args.iter().filter(|a| !a.starts_with('-')) {
            let dir = self.resolve(dir);
            self.dirs.insert(dir);
        }
        done_with(MKDIR)
    }

    /// `aws [options] <service> <operation> [options]`.
    fn aws(&mut self, args: &[String], rest: &[Command], output: Option<&Redirect>) -> Outcome {
        let aws = AwsArgs::parse(args);
        let mut messages = Vec::new();
        if let Some(region) = aws.option("region") {
            let (Done(m) | NotTranslated(m)) = self.region(region);
            messages.extend(m);
        }
        if let Some(url) = aws.option("endpoint-url") {
            self.out.endpoint_url = Some(url.to_string());
        }
        if aws.option("profile").is_some() {
            messages.push("--profile: the agent uses the instance role".to_string());
        }
        let outcome = match (aws.service(), aws.operation()) {
            ("ssm", "get-parameter") => self.get_parameter(&aws, output),
            ("ssm", "get-parameters-by-path") => self.get_parameters_by_path(&aws, output),
            ("ssm", "get-parameters") => self.get_parameters(&aws, rest, output),
            ("secretsmanager", "get-secret-value") => self.get_secret_value(&aws, rest, output),
            ("s3", "cp") => self.s3_cp(&aws),
            ("s3", "sync") => not_translated(format!("aws s3 sync: {S3_PREFIX}")),
            _ => NotTranslated(Vec::new()),
        };
        match outcome {
            Done(m) => Done(messages.into_iter().chain(m).collect()),
            NotTranslated(m) => NotTranslated(messages.into_iter().chain(m).collect()),
        }
    }

    /// The region a command names: `aws.region`, unless it is the instance's own.
    fn region(&mut self, region: &str) -> Outcome {
        // Said once, where the script reads it from instance metadata.
        if script::references(region)
            .iter()
            .any(|name| self.instance_region.contains(name))
        {
            return done();
        }
        match &self.out.region {
            None => {
                self.out.region = Some(region.to_string());
                done()
            }
            Some(known) if known == region => done(),
            Some(known) => not_translated(format!(
                "the agent uses one region (aws.region: {known}), not {region}"
            )),
        }
    }

    fn get_parameter(&mut self, aws: &AwsArgs, output: Option<&Redirect>) -> Outcome {
        let Some(name) = aws.option("name") else {
            return NotTranslated(Vec::new());
        };
        if let Err(why) = self.env_target(output) {
            return not_translated(why);
        }
        self.add_parameter(Parameter::Document {
            name: name.to_string(),
        });
        done()
    }

    fn get_parameters_by_path(&mut self, aws: &AwsArgs, output: Option<&Redirect>) -> Outcome {
        let Some(path) = aws.option("path") else {
            return NotTranslated(Vec::new());
        };
        if let Err(why) = self.env_target(output) {
            return not_translated(why);
        }
        let recursive = aws.flag("recursive");
        self.add_parameter(Parameter::Path {
            path: path.to_string(),
            recursive,
        });
        done_with("each variable is named by the part of its parameter's name below the path (a name nested deeper is refused)")
    }

    /// `get-parameters --names A B`: one variable each when the script writes `NAME=value`
    /// lines of them (a `--query` of names and values through a command that writes `=`).
    fn get_parameters(
        &mut self,
        aws: &AwsArgs,
        rest: &[Command],
        output: Option<&Redirect>,
    ) -> Outcome {
        let names = aws.values("names");
        let query = aws.option("query").unwrap_or_default();
        let pairs = query.contains("Name")
            && query.contains("Value")
            && rest
                .iter()
                .any(|c| c.words.iter().skip(1).any(|w| w.contains('=')));
        if names.is_empty() || !pairs {
            return not_translated("aws ssm get-parameters: the values are not written as NAME=value lines here; list each parameter under env.parameters with name: and key:");
        }
        if let Err(why) = self.env_target(output) {
            return not_translated(why);
        }
        let mut messages = Vec::new();
        for name in names {
            let key = name.rsplit('/').next().unwrap_or(name);
            if is_valid_key(key) {
                self.add_parameter(Parameter::Single {
                    name: name.to_string(),
                    key: key.to_string(),
                });
            } else {
                messages.push(format!(
                    "{name}: {key:?} is not a variable name; list it with key:"
                ));
            }
        }
        messages.push("each variable is named by the last segment of its parameter's name (key:): check that the names match the script's".to_string());
        Done(messages)
    }

    fn get_secret_value(
        &mut self,
        aws: &AwsArgs,
        rest: &[Command],
        output: Option<&Redirect>,
    ) -> Outcome {
        let Some(id) = aws.option("secret-id") else {
            return NotTranslated(Vec::new());
        };
        if let Err(why) = self.env_target(output) {
            return not_translated(why);
        }
        let dotenv = rest.is_empty();
        self.add_parameter(Parameter::Secret {
            id: id.to_string(),
            dotenv,
        });
        match dotenv {
            true => done(),
            false => done_with("read as a JSON object, each key a variable (format: json); say format: dotenv if the secret is a dotenv document"),
        }
    }

    /// `aws s3 cp s3://bucket/key DEST`.
    fn s3_cp(&mut self, aws: &AwsArgs) -> Outcome {
        let (Some(source), Some(dest)) = (aws.positional.get(2), aws.positional.get(3)) else {
            return NotTranslated(Vec::new());
        };
        if !source.starts_with("s3://") {
            return not_translated("an upload to S3: not the agent's job");
        }
        if aws.flag("recursive") || source.ends_with('/') {
            return not_translated(format!("aws s3 cp --recursive: {S3_PREFIX}"));
        }
        if dest == "-" {
            return not_translated("copies the object to standard output: not translated");
        }
        let resolved = self.resolve(dest);
        let into_dir = dest.ends_with('/')
            || dest == "."
            || resolved == self.cwd
            || self.dirs.contains(&resolved);
        let path = match into_dir {
            true => join(&resolved, source.rsplit('/').next().unwrap_or_default()),
            false => resolved,
        };
        if self.out.files.iter().any(|f| f.path == path) {
            return not_translated(format!("{path} is already fetched by an earlier line"));
        }
        if self.out.env_file.as_deref() == Some(path.as_str()) {
            return not_translated(format!("{path} is the env file, written from parameters"));
        }
        self.out.files.push(File {
            source: source.to_string(),
            path,
            mode: None,
            owner: None,
            group: None,
        });
        done()
    }

    /// `echo "KEY=$(aws ssm get-parameter --name /x ...)" >> .env`.
    fn echo(&mut self, args: &[String], output: Option<&Redirect>) -> Outcome {
        let args: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
        let assignments: Vec<(&str, &str)> = args
            .iter()
            .filter_map(|a| a.split_once('='))
            .filter(|(key, _)| is_valid_key(key))
            .collect();
        if args.is_empty() || assignments.len() != args.len() {
            return NotTranslated(Vec::new());
        }
        let any_parameter = assignments.iter().any(|(_, value)| {
            ssm_substitution(value).is_some() || self.is_parameter_variable(value)
        });
        if !any_parameter {
            let to_env = output.is_some_and(|o| looks_like_env_file(&self.resolve(&o.path)));
            return match to_env {
                true => not_translated(LITERAL_VARIABLE),
                false => NotTranslated(Vec::new()),
            };
        }
        if let Err(why) = self.env_target(output) {
            return not_translated(why);
        }
        let mut outcomes = Vec::new();
        for (key, value) in assignments {
            let parameter = ssm_substitution(value).or_else(|| self.parameter_variable(value));
            outcomes.push(match parameter {
                Some(name) => {
                    self.add_parameter(Parameter::Single {
                        name,
                        key: key.to_string(),
                    });
                    done()
                }
                None => not_translated(LITERAL_VARIABLE),
            });
        }
        merge(outcomes)
    }

    /// `chmod 600 FILE`: the mode of the env file or of a fetched file.
    fn chmod(&mut self, args: &[String]) -> Outcome {
        let args: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
        let Some((mode, paths)) = args.split_first() else {
            return NotTranslated(Vec::new());
        };
        let Ok(parsed) = FileMode::parse(mode) else {
            return not_translated(
                "chmod: only an octal mode of permission bits (such as 600) is translated",
            );
        };
        let mode = format!("{:04o}", parsed.0);
        let mut outcomes = Vec::new();
        for path in paths {
            let path = self.resolve(path);
            if self.out.env_file.as_deref() == Some(path.as_str()) {
                self.out.env_mode = Some(mode.clone());
                outcomes.push(done());
            } else if let Some(file) = self.out.files.iter_mut().find(|f| f.path == path) {
                file.mode = Some(mode.clone());
                outcomes.push(done());
            } else {
                outcomes.push(not_translated(format!(
                    "{path} is not a file the agent writes"
                )));
            }
        }
        merge(outcomes)
    }

    /// `chown user[:group] FILE`: the owner of a fetched file.
    fn chown(&mut self, args: &[String]) -> Outcome {
        let args: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
        let Some((owner, paths)) = args.split_first() else {
            return NotTranslated(Vec::new());
        };
        let (user, group) = match owner.split_once([':', '.']) {
            Some((u, g)) => (u, Some(g)),
            None => (owner.as_str(), None),
        };
        let valid = |s: &str| s.is_empty() || Account::parse(s).is_ok();
        if !valid(user) || !group.is_none_or(valid) {
            return NotTranslated(Vec::new());
        }
        let mut outcomes = Vec::new();
        for path in paths {
            let path = self.resolve(path);
            let Some(file) = self.out.files.iter_mut().find(|f| f.path == path) else {
                outcomes.push(not_translated(format!(
                    "{path} is not a file the agent fetches (the env file stays root's, mode env.mode)"
                )));
                continue;
            };
            file.owner = Some(user.to_string()).filter(|u| !u.is_empty());
            file.group = group.map(str::to_string).filter(|g| !g.is_empty());
            outcomes.push(done());
        }
        merge(outcomes)
    }

    /// `docker ...` (compose, pull, prune; login is read with its pipeline).
    fn docker(&mut self, args: &[String]) -> Outcome {
        let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or_default();
        match (arg(0), arg(1)) {
            ("compose", _) => self.compose(&args[1..]),
            ("pull", _) | ("image", "pull") => {
                self.out.pull_always = true;
                done_with(DOCKER_PULL)
            }
            ("image", "prune") => {
                self.out.prune = true;
                done_with(PRUNE)
            }
            ("system", "prune") => {
                self.out.prune = true;
                Done(vec![PRUNE.to_string(), SYSTEM_PRUNE.to_string()])
            }
            ("run", _) | ("container", "run") => not_translated(
                "docker run: describe the container as a service of the compose file",
            ),
            _ => NotTranslated(Vec::new()),
        }
    }

    /// `docker compose [-f FILE] [-p NAME] up -d` and `pull`.
    fn compose(&mut self, args: &[String]) -> Outcome {
        let mut flags = ComposeFlags::default();
        let mut i = 0;
        while i < args.len() && args[i].starts_with('-') {
            i += flags.read(&args[i..]);
        }
        let command = args.get(i).map(String::as_str).unwrap_or_default();
        match command {
            "up" => self.compose_up(&flags, &args[i + 1..]),
            "pull" => {
                self.out.pull_always = true;
                done_with(DOCKER_PULL)
            }
            _ => NotTranslated(Vec::new()),
        }
    }

    fn compose_up(&mut self, flags: &ComposeFlags, args: &[String]) -> Outcome {
        let mut messages = flags.messages.clone();
        messages.extend(self.compose_up_options(args));
        if self.out.compose.is_some() {
            return not_translated("the agent runs one compose project");
        }
        let files: Vec<String> = flags.files.iter().map(|f| self.resolve(f)).collect();
        if files.len() > 1 {
            messages.push(
                "the agent reads one compose file (compose.file): merge the others into the first"
                    .to_string(),
            );
        }
        let dir = match (&flags.project_directory, files.first()) {
            (Some(dir), _) => self.resolve(dir),
            (None, Some(file)) => parent(file),
            (None, None) => self.cwd.clone(),
        };
        let file = files
            .first()
            .cloned()
            .unwrap_or_else(|| self.default_compose_file(&dir));
        let name = flags
            .project
            .clone()
            .or_else(|| self.known.get("COMPOSE_PROJECT_NAME").cloned())
            .unwrap_or_else(|| basename(&dir).to_string());
        let project = match project_name(&name) {
            Some(project) => project,
            None => {
                messages.push(format!(
                    "compose names the project after {dir}: set project: to that name (lowercase letters, digits, _ and -)"
                ));
                "${PROJECT_NAME}".to_string()
            }
        };
        if let Some(env_file) = &flags.env_file {
            let env_file = self.resolve(env_file);
            if self.out.env_file.as_deref() != Some(env_file.as_str()) {
                messages.push(format!("--env-file {env_file}: the agent reads the compose file's variables from env.file"));
            }
        }
        self.out.compose = Some(Compose { dir, file, project });
        Done(messages)
    }

    /// What `up`'s options ask beyond what the agent does anyway.
    fn compose_up_options(&mut self, args: &[String]) -> Vec<String> {
        let mut messages = Vec::new();
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "-d"
                | "--detach"
                | "--remove-orphans"
                | "--quiet-pull"
                | "--no-color"
                | "--wait"
                | "--no-build"
                | "--force-recreate"
                | "--renew-anon-volumes"
                | "-V" => {}
                "--pull" => {
                    if args.next().is_some_and(|v| v == "always") {
                        self.out.pull_always = true;
                    }
                }
                "--pull=always" => self.out.pull_always = true,
                "--build" => {
                    messages.push("--build: the agent runs images, it builds none".to_string())
                }
                flag if flag.starts_with('-') => {
                    messages.push(format!("docker compose up {flag}: not translated"));
                }
                service => messages.push(format!(
                    "the agent runs every service of the compose file, not only {service}"
                )),
            }
        }
        messages
    }

    /// The compose file compose finds in `dir`: one the script fetched there, in compose's
    /// order, else `docker-compose.yml`.
    fn default_compose_file(&self, dir: &str) -> String {
        let names = [
            "compose.yaml",
            "compose.yml",
            "docker-compose.yaml",
            "docker-compose.yml",
        ];
        names
            .iter()
            .map(|name| join(dir, name))
            .find(|path| self.out.files.iter().any(|f| &f.path == path))
            .unwrap_or_else(|| join(dir, "docker-compose.yml"))
    }

    /// `... | docker login [-u USER] [-p PW | --password-stdin] [SERVER]`.
    fn docker_login(&mut self, words: &[String], stdin: Option<&Command>) -> Outcome {
        let login = LoginArgs::parse(words.get(2..).unwrap_or_default());
        let server = registry_host(login.server.as_deref().unwrap_or("docker.io"));
        if self.out.registries.iter().any(|r| r.server == server) {
            return not_translated(format!("registry {server} is already listed"));
        }
        let password = match (&login.password, login.stdin, stdin) {
            (Some(password), _, _) => self.password_source(password),
            (None, true, Some(writer)) => self.piped_password(writer),
            _ => Password::Unknown,
        };
        let mut messages = Vec::new();
        let auth = match password {
            Password::Ecr => Auth::Ecr,
            Password::Parameter(parameter) => Auth::Password {
                username: self.username(login.username.as_deref(), &mut messages),
                parameter,
            },
            Password::Unknown => {
                let parameter = self.placeholder("REGISTRY_PASSWORD_PARAMETER");
                messages.push(format!("{DOCKER_LOGIN}; name it in place of {parameter}"));
                Auth::Password {
                    username: self.username(login.username.as_deref(), &mut messages),
                    parameter,
                }
            }
        };
        self.out.registries.push(Registry { server, auth });
        Done(messages)
    }

    fn username(&mut self, given: Option<&str>, messages: &mut Vec<String>) -> Username {
        let Some(given) = given else {
            messages.push(
                "docker login without a username: name it in registries[].username".to_string(),
            );
            return Username::Literal(self.placeholder("REGISTRY_USERNAME"));
        };
        match ssm_substitution(given).or_else(|| self.parameter_variable(given)) {
            Some(parameter) => Username::Parameter(parameter),
            None => Username::Literal(given.to_string()),
        }
    }

    /// Where a `-p` password comes from.
    fn password_source(&mut self, password: &str) -> Password {
        if let Some(parameter) =
            ssm_substitution(password).or_else(|| self.parameter_variable(password))
        {
            return Password::Parameter(parameter);
        }
        match script::substitution(password) {
            Some((_, inner, _)) if is_ecr_login_password(&script::inner_pipelines(inner)) => {
                Password::Ecr
            }
            _ => Password::Unknown,
        }
    }

    /// Where a password piped into `--password-stdin` comes from.
    fn piped_password(&mut self, writer: &Command) -> Password {
        let words = writer.words.as_slice();
        match words.first().map(String::as_str) {
            Some("aws") => {
                let aws = AwsArgs::parse(&words[1..]);
                match (aws.service(), aws.operation(), aws.option("name")) {
                    ("ecr", "get-login-password", _) => Password::Ecr,
                    ("ssm", "get-parameter", Some(name)) => Password::Parameter(name.to_string()),
                    _ => Password::Unknown,
                }
            }
            Some("echo") | Some("printf") => match words.last() {
                Some(word) if words.len() > 1 => self.password_source(word),
                _ => Password::Unknown,
            },
            _ => Password::Unknown,
        }
    }

    /// The parameter a `$VAR` or `${VAR}` reads, when the script read one into it; the
    /// variable counts as used.
    fn parameter_variable(&mut self, value: &str) -> Option<String> {
        let variable = self.parameter_variables.get_mut(variable_name(value)?)?;
        variable.used = true;
        Some(variable.parameter.clone())
    }

    fn is_parameter_variable(&self, value: &str) -> bool {
        variable_name(value).is_some_and(|name| self.parameter_variables.contains_key(name))
    }

    /// A placeholder variable for the operator to fill in (`${NAME}`, `${NAME_2}`...).
    fn placeholder(&mut self, name: &str) -> String {
        let count = self.placeholders.entry(name.to_string()).or_default();
        *count += 1;
        match *count {
            1 => format!("${{{name}}}"),
            n => format!("${{{name}_{n}}}"),
        }
    }

    /// Where the script writes a parameter: the env file, if `output` is one.
    fn env_target(&mut self, output: Option<&Redirect>) -> Result<String, String> {
        let Some(output) = output else {
            return Err("its output goes to no file: only what the script writes to its env file is translated".into());
        };
        let path = self.resolve(&output.path);
        if !looks_like_env_file(&path) {
            return Err(format!("writes {path}, which is not an env file: the agent writes parameters to its env file only; keep such a file in S3 and list it under files[]"));
        }
        if self.out.files.iter().any(|f| f.path == path) {
            return Err(format!("{path} is also a file fetched from S3"));
        }
        match &self.out.env_file {
            None => {
                self.out.env_file = Some(path.clone());
                Ok(path)
            }
            Some(known) if *known == path => Ok(path),
            Some(known) => Err(format!(
                "the agent writes one env file ({known}), not {path}"
            )),
        }
    }

    fn add_parameter(&mut self, parameter: Parameter) {
        if !self.out.parameters.contains(&parameter) {
            self.out.parameters.push(parameter);
        }
    }

    /// A path of the script, absolute: relative ones against the working directory; one that
    /// starts with a variable is kept as it is.
    fn resolve(&self, path: &str) -> String {
        let path = match path.strip_prefix('~') {
            Some(rest) if rest.is_empty() || rest.starts_with('/') => format!("${{HOME}}{rest}"),
            _ => path.to_string(),
        };
        if path.starts_with('/') || path.starts_with('$') {
            normalize(&path)
        } else {
            normalize(&join(&self.cwd, &path))
        }
    }
}

/// How a line is shown in a note: as written, or rebuilt from its words with secrets masked.
fn shown(line: &Line, words: &[String]) -> String {
    match mask::mask_words(words) {
        (masked, true) => mask::show(&masked),
        (_, false) => line.text.clone(),
    }
}

/// The outcomes of parts of one command as one.
fn merge(outcomes: Vec<Outcome>) -> Outcome {
    let any_not = outcomes.iter().any(|o| matches!(o, NotTranslated(_)));
    let messages: Vec<String> = outcomes
        .into_iter()
        .flat_map(|o| match o {
            Done(m) | NotTranslated(m) => m,
        })
        .collect();
    match any_not {
        true => NotTranslated(messages),
        false => Done(messages),
    }
}

/// Where a registry password comes from.
enum Password {
    Ecr,
    Parameter(String),
    Unknown,
}

/// Whether a file the script writes parameters to is an env file (`.env`, `app.env`,
/// `env.list`...), not a file of another kind that holds a parameter's value.
fn looks_like_env_file(path: &str) -> bool {
    basename(path).to_ascii_lowercase().contains("env")
}

/// Instance metadata's address.
const METADATA: &str = "169.254.169.254";

/// Whether a value reads the instance's region (or zone) from instance metadata.
fn reads_instance_region(value: &str) -> bool {
    let from_metadata = value.contains(METADATA)
        && (value.contains("placement/region") || value.contains("availability-zone"));
    let ec2_metadata = value.contains("ec2-metadata") && value.contains("availability-zone");
    from_metadata || ec2_metadata
}

/// Whether a value refers to one of `names` (`${AZ%?}` to `AZ`).
fn refers_to_any(value: &str, names: &HashSet<String>) -> bool {
    script::references(value)
        .iter()
        .any(|name| names.contains(name))
}

/// A registry host as `docker login` names it, without scheme or trailing `/`.
fn registry_host(server: &str) -> String {
    let host = server
        .strip_prefix("https://")
        .or_else(|| server.strip_prefix("http://"))
        .unwrap_or(server);
    let host = host.split('/').next().unwrap_or(host);
    match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        other => other.to_string(),
    }
}

/// A project name as compose makes it of a directory's name: lowercase, only letters, digits,
/// `_` and `-`, starting with a letter or digit. `None` when nothing is left, or the name holds
/// a variable.
fn project_name(name: &str) -> Option<String> {
    if name.contains('$') {
        return None;
    }
    let name: String = name
        .to_ascii_lowercase()
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == '-')
        .collect();
    let name = name.trim_start_matches(['_', '-']);
    (!name.is_empty()).then(|| name.to_string())
}

/// `path` with `.`, `..` and repeated `/` taken out, without a trailing `/`.
fn normalize(path: &str) -> String {
    let absolute = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    match absolute {
        true => format!("/{}", parts.join("/")),
        false => parts.join("/"),
    }
}

fn join(dir: &str, name: &str) -> String {
    match dir.ends_with('/') {
        true => format!("{dir}{name}"),
        false => format!("{dir}/{name}"),
    }
}

/// The directory of a path (`/` for a file at the root).
pub fn parent(path: &str) -> String {
    match path.rsplit_once('/') {
        Some(("", _)) => "/".to_string(),
        Some((dir, _)) => dir.to_string(),
        None => ".".to_string(),
    }
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_names_are_made_as_compose_makes_them() {
        let table = [
            ("ubuntu", Some("ubuntu")),
            ("My App.v2", Some("myappv2")),
            ("_x", Some("x")),
            ("", None),
            ("${APP}", None),
        ];
        for (dir, want) in table {
            assert_eq!(project_name(dir).as_deref(), want, "{dir}");
        }
    }

    #[test]
    fn paths_resolve_against_the_working_directory() {
        let mut t = Translator::default();
        t.cd(Some(&"/home/ubuntu/".to_string()));
        let table = [
            (".env", "/home/ubuntu/.env"),
            ("./conf/../a.yml", "/home/ubuntu/a.yml"),
            ("/etc//x/", "/etc/x"),
            ("~/x", "${HOME}/x"),
            ("${APP_DIR}/x", "${APP_DIR}/x"),
        ];
        for (path, want) in table {
            assert_eq!(t.resolve(path), want, "{path}");
        }
    }

    #[test]
    fn get_parameters_is_one_variable_each_only_when_written_as_pairs() {
        let pairs = "aws ssm get-parameters --names /a/DB_URL /a/DB_USER --with-decryption \
            --query 'Parameters[*].[Name,Value]' --output text \
            | awk '{ n = split($1, p, \"/\"); print p[n] \"=\" $2 }' > /srv/a/.env\n\
            cd /srv/a && docker compose up -d\n";
        let import = translate(pairs);
        assert_eq!(
            import.parameters,
            vec![
                Parameter::Single {
                    name: "/a/DB_URL".into(),
                    key: "DB_URL".into()
                },
                Parameter::Single {
                    name: "/a/DB_USER".into(),
                    key: "DB_USER".into()
                },
            ]
        );
        let values = "aws ssm get-parameters --names /a/X /a/Y --query 'Parameters[*].Value' --output text > /srv/a/.env\n";
        let import = translate(values);
        assert!(import.parameters.is_empty());
        assert_eq!(import.notes[0].kind, NoteKind::NotTranslated);
    }

    #[test]
    fn logins_map_to_parameters_ecr_or_a_placeholder() {
        let script = "\
PW=$(aws ssm get-parameter --name /a/hub/token --with-decryption --query Parameter.Value --output text)
echo \"$PW\" | docker login -u bot --password-stdin
aws ecr get-login-password | docker login -u AWS --password-stdin 1.dkr.ecr.x.amazonaws.com
docker login -u \"$(aws ssm get-parameter --name /a/q/user --query Parameter.Value --output text)\" -p \"$(aws ssm get-parameter --name /a/q/pw --with-decryption --query Parameter.Value --output text)\" quay.io
docker login -u me --password=Hunter2 https://ghcr.io/
docker login registry.example.com
";
        let import = translate(script);
        let want = vec![
            Registry {
                server: "docker.io".into(),
                auth: Auth::Password {
                    username: Username::Literal("bot".into()),
                    parameter: "/a/hub/token".into(),
                },
            },
            Registry {
                server: "1.dkr.ecr.x.amazonaws.com".into(),
                auth: Auth::Ecr,
            },
            Registry {
                server: "quay.io".into(),
                auth: Auth::Password {
                    username: Username::Parameter("/a/q/user".into()),
                    parameter: "/a/q/pw".into(),
                },
            },
            Registry {
                server: "ghcr.io".into(),
                auth: Auth::Password {
                    username: Username::Literal("me".into()),
                    parameter: "${REGISTRY_PASSWORD_PARAMETER}".into(),
                },
            },
            Registry {
                server: "registry.example.com".into(),
                auth: Auth::Password {
                    username: Username::Literal("${REGISTRY_USERNAME}".into()),
                    parameter: "${REGISTRY_PASSWORD_PARAMETER_2}".into(),
                },
            },
        ];
        assert_eq!(import.registries, want);
        let notes: Vec<(usize, &str)> = import
            .notes
            .iter()
            .map(|n| (n.line, n.shown.as_str()))
            .collect();
        assert_eq!(
            notes,
            vec![
                (5, "docker login -u me --password=******** https://ghcr.io/"),
                (6, "docker login registry.example.com"),
            ]
        );
    }

    #[test]
    fn commands_run_through_tee_su_or_bash_are_read_too() {
        let script = "\
aws ssm get-parameter --name /a/env --query Parameter.Value --output text | sudo tee /home/ubuntu/.env > /dev/null
sudo su - ubuntu -c 'docker compose up -d'
bash -c \"cd /tmp && ls\"
";
        let import = translate(script);
        assert_eq!(import.env_file.as_deref(), Some("/home/ubuntu/.env"));
        assert_eq!(
            import.parameters,
            vec![Parameter::Document {
                name: "/a/env".into()
            }]
        );
        let compose = import.compose.unwrap();
        assert_eq!(
            (compose.dir.as_str(), compose.project.as_str()),
            ("/home/ubuntu", "ubuntu")
        );
        let notes: Vec<(usize, NoteKind)> = import.notes.iter().map(|n| (n.line, n.kind)).collect();
        assert_eq!(notes, vec![(3, NoteKind::NotTranslated)]);
    }

    #[test]
    fn an_exported_parameter_goes_to_the_env_file() {
        let script = "export DB_URL=$(aws ssm get-parameter --name /a/db-url --query Parameter.Value --output text)\n\
                      UNUSED=$(aws ssm get-parameter --name /a/unused --query Parameter.Value --output text)\n\
                      export SPRING_PROFILES_ACTIVE=prod\n\
                      export AWS_SECRET_ACCESS_KEY=abc\n";
        let import = translate(script);
        assert_eq!(
            import.parameters,
            vec![Parameter::Single {
                name: "/a/db-url".into(),
                key: "DB_URL".into()
            }]
        );
        let kinds: Vec<(usize, NoteKind)> = import.notes.iter().map(|n| (n.line, n.kind)).collect();
        assert_eq!(
            kinds,
            vec![
                (1, NoteKind::Translated),
                (2, NoteKind::NotTranslated),
                (3, NoteKind::NotTranslated),
                (4, NoteKind::NotTranslated),
            ]
        );
        assert_eq!(
            import.notes[3].shown,
            "export AWS_SECRET_ACCESS_KEY=********"
        );
    }
}
