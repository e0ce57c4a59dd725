//! What `import` makes of a user-data script: the parts of the agent's config it says, and the
//! lines the operator should read.

/// What a user-data script does, as far as the agent's config can say it. Paths are absolute,
/// resolved against the script's working directory, unless they start with a variable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Import {
    /// The compose project the script starts (`docker compose up`).
    pub compose: Option<Compose>,
    /// `aws.region`: a `--region` or `AWS_REGION` the script names (not the instance's own).
    pub region: Option<String>,
    /// `aws.endpoint_url`: an `--endpoint-url` the script names.
    pub endpoint_url: Option<String>,
    /// The file the script writes parameters to.
    pub env_file: Option<String>,
    /// Its mode (`chmod 600 .env`), as an octal string.
    pub env_mode: Option<String>,
    /// Where the env file's variables come from, in the script's order.
    pub parameters: Vec<Parameter>,
    /// The objects the script copies from S3.
    pub files: Vec<File>,
    /// The registries the script logs in to.
    pub registries: Vec<Registry>,
    /// The script pulls images at every boot (`docker pull`, `docker compose pull`).
    pub pull_always: bool,
    /// The script prunes images (`docker image prune`).
    pub prune: bool,
    /// The lines that need the operator's eye, in the script's order.
    pub notes: Vec<Note>,
}

/// The compose project of `docker compose up`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compose {
    /// The project directory (the directory of the compose file, or where compose ran).
    pub dir: String,
    /// The compose file.
    pub file: String,
    /// The project name (`-p`, else the directory's name as compose makes it a name).
    pub project: String,
}

/// One source of the env file's variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parameter {
    /// `name:` with `format: dotenv`: one parameter whose value is the whole file.
    Document { name: String },
    /// `path:`: every parameter under a path.
    Path { path: String, recursive: bool },
    /// `name:` with `key:`: one parameter as one variable.
    Single { name: String, key: String },
    /// `secret:`: a Secrets Manager secret, a dotenv document or a JSON object.
    Secret { id: String, dotenv: bool },
}

/// One object copied from S3.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    pub source: String,
    pub path: String,
    pub mode: Option<String>,
    pub owner: Option<String>,
    pub group: Option<String>,
}

/// A registry the script logs in to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registry {
    pub server: String,
    pub auth: Auth,
}

/// How the agent logs in to a registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// `ecr: true`: a token from the instance role.
    Ecr,
    /// A username and the Parameter Store parameter that holds the password.
    Password {
        username: Username,
        parameter: String,
    },
}

/// A registry's username: written in the config, or read from a parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Username {
    Literal(String),
    Parameter(String),
}

/// A script line the operator should read: quoted (secrets masked) with what became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// Its first line number in the script.
    pub line: usize,
    /// The line as shown.
    pub shown: String,
    pub kind: NoteKind,
    /// What the operator should know, one sentence each.
    pub messages: Vec<String>,
}

/// How much of a line the config says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoteKind {
    /// All of it, differently: read the messages.
    Translated,
    /// Some of its commands.
    Partly,
    /// None of it.
    NotTranslated,
}
