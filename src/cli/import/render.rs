//! An [`Import`] written as `agent.yaml`: comments first (the variables to fill in, then each
//! line that needs the operator's eye), then the config, every key one the agent reads.

use anyhow::{Context, Result};
use serde::Serialize;

use super::model::{Auth, Import, NoteKind, Parameter, Username};
use super::script;
use super::translate::parent;

/// The config, as `agent.yaml` spells it (`config::raw`), for what an import can fill in.
#[derive(Debug, Serialize)]
struct Config {
    project: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    workdir: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aws: Option<Aws>,
    #[serde(skip_serializing_if = "Option::is_none")]
    env: Option<Env>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    files: Vec<File>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    files_allowed_dirs: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    compose: Option<Compose>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    registries: Vec<Registry>,
}

#[derive(Debug, Serialize)]
struct Aws {
    #[serde(skip_serializing_if = "Option::is_none")]
    region: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    endpoint_url: Option<String>,
}

#[derive(Debug, Serialize)]
struct Env {
    file: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    mode: Option<String>,
    parameters: Vec<Source>,
}

/// One entry of `env.parameters`.
#[derive(Debug, Default, Serialize)]
struct Source {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    recursive: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    format: Option<&'static str>,
}

#[derive(Debug, Serialize)]
struct File {
    source: String,
    path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    mode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    owner: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<String>,
}

#[derive(Debug, Serialize)]
struct Compose {
    file: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pull: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prune: Option<bool>,
}

#[derive(Debug, Serialize)]
struct Registry {
    server: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<Credential>,
    #[serde(skip_serializing_if = "Option::is_none")]
    password: Option<Credential>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ecr: Option<bool>,
}

/// A literal, or `{ parameter: /name }`.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Credential {
    Literal(String),
    Parameter { parameter: String },
}

/// `import` as `agent.yaml`: the comments, then the config. `source` names the script.
pub fn render(import: &Import, source: &str) -> Result<String> {
    let config = config(import);
    let yaml = serde_norway::to_string(&config).context("failed to write the config as YAML")?;
    let mut out = header(source);
    out.push_str(&variables(&yaml));
    out.push_str(&notes(import));
    out.push_str(&yaml);
    Ok(out)
}

fn header(source: &str) -> String {
    let source = script::one_line(source);
    format!(
        "# agent.yaml for the user-data script {source}, written by `kicky-agent import`.\n\
         # Review it, then check it with `kicky-agent validate`.\n"
    )
}

/// The comment that lists the variables left in the config, if any.
fn variables(yaml: &str) -> String {
    let names = script::references(yaml);
    if names.is_empty() {
        return String::new();
    }
    let listed: Vec<String> = names.iter().map(|n| format!("${{{n}}}")).collect();
    let mut out = String::from(
        "#\n# Replace these with their values: the agent's config does not expand variables.\n",
    );
    for line in wrap(&listed.join(", "), WIDTH - 4) {
        out.push_str(&format!("#   {line}\n"));
    }
    out
}

/// One comment per line that needs the operator's eye.
fn notes(import: &Import) -> String {
    let mut out = String::new();
    for note in &import.notes {
        out.push_str("#\n");
        let heading = match note.kind {
            NoteKind::Translated => format!("line {}", note.line),
            NoteKind::Partly => format!("partly translated (line {})", note.line),
            NoteKind::NotTranslated => format!("not translated (line {})", note.line),
        };
        out.push_str(&format!("# {heading}: {}\n", note.shown));
        for message in &note.messages {
            for line in wrap(&script::one_line(message), WIDTH - 4) {
                out.push_str(&format!("#   {line}\n"));
            }
        }
    }
    if !out.is_empty() {
        out.push_str("#\n");
    }
    out
}

/// The width comments are wrapped at (a quoted line is never wrapped).
const WIDTH: usize = 100;

/// `text` in lines of at most `width` characters, broken at spaces (a longer word stays whole).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    lines.extend((!line.is_empty()).then_some(line));
    lines
}

/// The config `import` says, paths made relative to the workdir where they are under it.
fn config(import: &Import) -> Config {
    let workdir = workdir(import);
    let within = |path: &str| relative(path, workdir.as_deref());
    let mut allowed: Vec<String> = Vec::new();
    let files: Vec<File> = import
        .files
        .iter()
        .map(|f| {
            let path = within(&f.path);
            if path.starts_with('/') {
                let dir = parent(&path);
                if !allowed.contains(&dir) {
                    allowed.push(dir);
                }
            }
            File {
                source: f.source.clone(),
                path,
                mode: f.mode.clone(),
                owner: f.owner.clone(),
                group: f.group.clone(),
            }
        })
        .collect();
    let project = match (&import.compose, &workdir) {
        (Some(compose), _) => compose.project.clone(),
        (None, Some(dir)) => dir
            .rsplit('/')
            .next()
            .filter(|n| is_project_name(n))
            .unwrap_or("${PROJECT_NAME}")
            .to_string(),
        (None, None) => "${PROJECT_NAME}".to_string(),
    };
    Config {
        project,
        aws: aws(import),
        env: env(import, &within),
        files,
        files_allowed_dirs: allowed,
        compose: import.compose.as_ref().map(|c| Compose {
            file: within(&c.file),
            pull: import.pull_always.then_some("always"),
            prune: import.prune.then_some(true),
        }),
        registries: import.registries.iter().map(registry).collect(),
        workdir,
    }
}

/// The workdir: the compose project's directory, else the env file's, else the first file's.
fn workdir(import: &Import) -> Option<String> {
    let dir = match (&import.compose, &import.env_file, import.files.first()) {
        (Some(compose), _, _) => compose.dir.clone(),
        (None, Some(env), _) if !import.parameters.is_empty() => parent(env),
        (None, _, Some(file)) => parent(&file.path),
        _ => return None,
    };
    Some(dir)
}

fn aws(import: &Import) -> Option<Aws> {
    if import.region.is_none() && import.endpoint_url.is_none() {
        return None;
    }
    Some(Aws {
        region: import.region.clone(),
        endpoint_url: import.endpoint_url.clone(),
    })
}

fn env(import: &Import, within: &dyn Fn(&str) -> String) -> Option<Env> {
    if import.parameters.is_empty() {
        return None;
    }
    Some(Env {
        file: import
            .env_file
            .as_deref()
            .map_or_else(|| ".env".to_string(), within),
        mode: import.env_mode.clone(),
        parameters: import.parameters.iter().map(source).collect(),
    })
}

fn source(parameter: &Parameter) -> Source {
    match parameter {
        Parameter::Document { name } => Source {
            name: Some(name.clone()),
            format: Some("dotenv"),
            ..Source::default()
        },
        Parameter::Path { path, recursive } => Source {
            path: Some(path.clone()),
            recursive: recursive.then_some(true),
            ..Source::default()
        },
        Parameter::Single { name, key } => Source {
            name: Some(name.clone()),
            key: Some(key.clone()),
            ..Source::default()
        },
        Parameter::Secret { id, dotenv } => Source {
            secret: Some(id.clone()),
            format: dotenv.then_some("dotenv"),
            ..Source::default()
        },
    }
}

fn registry(registry: &super::model::Registry) -> Registry {
    let (username, password, ecr) = match &registry.auth {
        Auth::Ecr => (None, None, Some(true)),
        Auth::Password {
            username,
            parameter,
        } => (
            Some(match username {
                Username::Literal(name) => Credential::Literal(name.clone()),
                Username::Parameter(parameter) => Credential::Parameter {
                    parameter: parameter.clone(),
                },
            }),
            Some(Credential::Parameter {
                parameter: parameter.clone(),
            }),
            None,
        ),
    };
    Registry {
        server: registry.server.clone(),
        username,
        password,
        ecr,
    }
}

/// `path` relative to `workdir` when it is under it, else as it is.
fn relative(path: &str, workdir: Option<&str>) -> String {
    let Some(dir) = workdir else {
        return path.to_string();
    };
    let prefix = match dir.ends_with('/') {
        true => dir.to_string(),
        false => format!("{dir}/"),
    };
    match path.strip_prefix(&prefix) {
        Some(rest) if !rest.is_empty() => rest.to_string(),
        _ => path.to_string(),
    }
}

fn is_project_name(name: &str) -> bool {
    crate::config::types::ProjectName::parse(name).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_wrap_at_spaces_and_keep_long_words_whole() {
        assert_eq!(wrap("aa bb cc", 5), vec!["aa bb", "cc"]);
        assert_eq!(wrap("a verylongword b", 4), vec!["a", "verylongword", "b"]);
        assert!(wrap("", 10).is_empty());
    }

    #[test]
    fn paths_under_the_workdir_are_relative_and_the_others_allowed() {
        let import = super::super::translate(
            "cd /srv/app\naws s3 cp s3://b-1/a.yml conf/a.yml\naws s3 cp s3://b-1/b.pem /etc/ssl/app/b.pem\ndocker compose up -d\n",
        );
        let config = config(&import);
        let paths: Vec<&str> = config.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, vec!["conf/a.yml", "/etc/ssl/app/b.pem"]);
        assert_eq!(config.files_allowed_dirs, vec!["/etc/ssl/app"]);
    }
}
