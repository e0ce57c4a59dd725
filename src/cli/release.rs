//! `kicky-agent release`: create, promote, list, show and compare releases (see
//! [`crate::release`]). Run from CI or a laptop with the operator's credentials and the config
//! (and user data) the fleet uses; never prints a value.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use futures::{StreamExt, TryStreamExt};

use crate::aws::releases::Store;
use crate::aws::releases::{self, Caller};
use crate::aws::s3::S3Store;
use crate::config::{self, ReleaseSettings, Settings};
use crate::error::input_error;
use crate::outln;
use crate::release::{Manifest, ReleaseId};
use crate::sync::pin;

/// Releases: pin every input in an immutable manifest, promote one, list and compare them.
#[derive(Debug, Args)]
pub struct ReleaseCmd {
    /// The launch template's user data (a file), merged over the config as on the instances:
    /// instance metadata is not read by release commands.
    #[arg(long, global = true)]
    user_data: Option<PathBuf>,

    #[command(subcommand)]
    command: ReleaseCommand,
}

#[derive(Debug, Subcommand)]
enum ReleaseCommand {
    /// Pin the latest version of every input into a new release and print its id.
    Create {
        /// A note kept in the manifest (what changed, a ticket).
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Make ID the release a plain sync applies (new instances, the daemon's watch).
    Promote { id: String },
    /// The releases in the store, oldest first, the promoted one marked.
    List {
        #[arg(long)]
        json: bool,
    },
    /// One release: what it pins (names, versions, digests; never a value).
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// What differs between two releases, by name and version.
    Diff { a: String, b: String },
    /// The promoted release, and every instance by the release it runs (healthy, failed,
    /// drifting), as the instances report it under `release.store`.
    Status {
        #[arg(long)]
        json: bool,
    },
}

impl ReleaseCmd {
    pub fn run(self, config: &Path) -> Result<()> {
        let settings = load(config, self.user_data.as_deref())?;
        let at = settings.release.clone().ok_or_else(|| {
            input_error(format!(
                "{}: no release.store: releases are off",
                config.display()
            ))
        })?;
        super::block_on(run(self.command, &settings, &at))?
    }
}

/// The config as the fleet reads it: the files, then the given user data; no instance metadata.
fn load(path: &Path, user_data: Option<&Path>) -> Result<Settings> {
    let mut overrides = crate::instance::Overrides::default();
    if let Some(file) = user_data {
        let raw = std::fs::read(file)
            .with_context(|| format!("failed to read the user data {}", file.display()))
            .map_err(|e| input_error(format!("{e:#}")))?;
        overrides.user_data = crate::instance::user_data::extract(&raw)
            .with_context(|| format!("user data {}", file.display()))
            .map_err(|e| input_error(format!("{e:#}")))?;
    }
    let settings = config::load_with(path, &overrides)
        .with_context(|| format!("invalid config {}", path.display()))?;
    crate::compose::learn_env_file(&settings);
    Ok(settings)
}

async fn run(command: ReleaseCommand, settings: &Settings, at: &ReleaseSettings) -> Result<()> {
    let config = crate::aws::sdk_config(&settings.aws).await?;
    let caller = releases::caller(&config).await?;
    // Off EC2, the buckets are expected to be the caller's account's (unless configured).
    crate::aws::s3::expect_caller_account(&caller.account);
    let s3 = S3Store::new(&config, &settings.aws);
    let store = Store { s3: &s3, at };
    let id = |s: &str| ReleaseId::parse(s).map_err(input_error);
    match command {
        ReleaseCommand::Create { note } => {
            let manifest = new_release(settings, &config, &store, &caller, note).await?;
            let signature = match &at.signing_key {
                Some(key) => {
                    Some(releases::sign(&config, key, &manifest.id, &manifest.to_json()).await?)
                }
                None => None,
            };
            store.put_new(&manifest, signature.as_ref()).await?;
            tracing::info!(
                "release {} created: {} parameters, {} secrets, {} files, {} images",
                manifest.id,
                manifest.parameters.len(),
                manifest.secrets.len(),
                manifest.files.len(),
                manifest.images.len()
            );
            outln!("{}", manifest.id);
        }
        ReleaseCommand::Promote { id: wanted } => {
            let pointer = store.promote(&id(&wanted)?, &caller.arn).await?;
            outln!("promoted {} ({})", pointer.release, store.pointer_uri());
        }
        ReleaseCommand::List { json } => {
            let ids = store.ids().await?;
            let promoted = store.promoted().await?.map(|p| p.release);
            let manifests: Vec<Manifest> = futures::stream::iter(ids.iter())
                .map(|id| store.manifest(id))
                .buffered(8)
                .try_collect()
                .await?;
            if json {
                let list: Vec<_> = manifests
                    .iter()
                    .map(|m| {
                        serde_json::json!({
                            "id": m.id,
                            "created": m.created,
                            "by": m.by,
                            "parent": m.parent,
                            "note": m.note,
                            "promoted": Some(&m.id) == promoted.as_ref(),
                        })
                    })
                    .collect();
                outln!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                for m in &manifests {
                    let mark = if Some(&m.id) == promoted.as_ref() {
                        "*"
                    } else {
                        " "
                    };
                    outln!("{mark} {}  {}  {}  {}", m.id, m.created, m.by, m.note);
                }
            }
        }
        ReleaseCommand::Show { id: wanted, json } => {
            let manifest = store.manifest(&id(&wanted)?).await?;
            match json {
                true => outln!(
                    "{}",
                    String::from_utf8_lossy(&manifest.to_json()).trim_end()
                ),
                false => show(&manifest),
            }
        }
        ReleaseCommand::Diff { a, b } => {
            let (a, b) = (id(&a)?, id(&b)?);
            let (a, b) = futures::try_join!(store.manifest(&a), store.manifest(&b))?;
            let lines = crate::release::diff(&a, &b);
            if lines.is_empty() {
                outln!("releases {} and {} pin the same inputs", a.id, b.id);
            }
            for line in lines {
                outln!("{line}");
            }
        }
        ReleaseCommand::Status { json } => {
            let (promoted, (records, skipped)) =
                futures::try_join!(store.promoted(), store.records())?;
            let state = crate::sync::state::State::load(&crate::sync::state::State::path(settings))
                .unwrap_or_default();
            let running = state.release.as_ref().map(|r| &r.id);
            let view = crate::release::fleet::view(
                promoted.as_ref().map(|p| &p.release),
                records,
                std::time::SystemTime::now(),
            );
            if json {
                let value = serde_json::json!({
                    "promoted": promoted,
                    "running": running,
                    "fleet": view,
                    "skipped": skipped,
                });
                outln!("{}", serde_json::to_string_pretty(&value)?);
            } else {
                match &promoted {
                    Some(p) => outln!("promoted: {} (at {} by {})", p.release, p.promoted, p.by),
                    None => outln!("promoted: none"),
                }
                if let Some(id) = running {
                    outln!("this instance runs: {id}");
                }
                for line in view.lines() {
                    outln!("{line}");
                }
                for line in skipped {
                    outln!("skipped: {line}");
                }
            }
        }
    }
    Ok(())
}

async fn new_release(
    settings: &Settings,
    config: &aws_config::SdkConfig,
    store: &Store<'_, S3Store>,
    caller: &Caller,
    note: String,
) -> Result<Manifest> {
    let ssm = crate::aws::ssm::SsmStore::new(config);
    let uses_ecr = settings
        .registries
        .iter()
        .any(|r| r.auth == config::RegistryAuth::Ecr);
    let ecr = uses_ecr.then(|| aws_sdk_ecr::Client::new(config));
    let engine = match &settings.compose {
        Some(_) => Some(crate::engine::docker::connect(crate::engine::docker::ENGINE_WAIT).await?),
        None => None,
    };
    let (registries, parent) = futures::try_join!(
        crate::engine::registry::Registries::resolve(&settings.registries, &ssm, ecr),
        store.promoted()
    )?;
    pin::resolve(
        settings,
        pin::Resolvers {
            ssm: &ssm,
            s3: store.s3,
            engine: engine.as_ref(),
            registries: &registries,
            caller,
            parent: parent.map(|p| p.release),
            note,
        },
    )
    .await
}

fn show(m: &Manifest) {
    outln!("release {}", m.id);
    outln!("  created: {} by {}", m.created, m.by);
    outln!(
        "  parent: {}",
        m.parent
            .as_ref()
            .map_or("none".to_string(), ToString::to_string)
    );
    if !m.note.is_empty() {
        outln!("  note: {}", m.note);
    }
    outln!("  project: {}", m.project);
    for (name, version) in &m.parameters {
        outln!("  parameter {name}: version {version}");
    }
    for (name, version) in &m.secrets {
        outln!("  secret {name}: version {version}");
    }
    for (source, pin) in &m.files {
        outln!(
            "  file {source}: version {} sha256 {} ({} bytes)",
            pin.version_id,
            pin.sha256,
            pin.size
        );
    }
    if let Some(compose) = &m.compose {
        outln!("  compose file: sha256 {}", compose.sha256);
    }
    for (image, digest) in &m.images {
        outln!("  image {image}: {digest}");
    }
}
