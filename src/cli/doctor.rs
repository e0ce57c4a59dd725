//! `kicky-agent doctor`: one line per check, with a hint for each that fails: instance metadata,
//! the role's credentials, the region, the promoted release's pointer (with `release.store`),
//! each parameter, secret and object the config names (by name, never a value; with a release,
//! read as the sync reads them: at the versions it pins), the Docker socket and its API version,
//! free disk for images, the unit, and the clock. Exit 0 when every check passes (or does not apply here), 1 when any fails.
//! Each check is bounded in time, so a service that hangs is a failed line, not a hung doctor.

use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;

use crate::aws::releases::Store;
use crate::aws::s3::{ObjectStore, S3Store};
use crate::aws::ssm::{ParameterStore, SsmStore, GET_PARAMETERS_MAX};
use crate::config::types::ParamPath;
use crate::config::{ReleaseSettings, Settings};
use crate::inputs::{Inputs, ParameterUse, ReleaseObjects};
use crate::out;
use crate::release::Manifest;

/// Check what the agent needs on this instance, one line each with a hint; exit 1 when any fails.
#[derive(Debug, Args)]
pub struct DoctorCmd {}

/// Bound on each check.
const BOUND: Duration = Duration::from_secs(10);
/// Less free space than this where the engine keeps images fails (a pull of a JVM image needs
/// hundreds of megabytes, and a full disk stops the engine).
const MIN_FREE: u64 = 2 << 30;
/// A clock further off than this breaks AWS's request signing (the limit is 5 minutes).
const MAX_SKEW: Duration = Duration::from_secs(60);

/// How one check went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Pass(String),
    Fail {
        what: String,
        hint: String,
    },
    /// Does not apply here (no systemd, nothing configured to check).
    Skip(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: String,
    pub verdict: Verdict,
}

impl Check {
    fn pass(name: impl Into<String>, what: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            verdict: Verdict::Pass(what.into()),
        }
    }

    fn fail(name: impl Into<String>, what: impl Into<String>, hint: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            verdict: Verdict::Fail {
                what: what.into(),
                hint: hint.into(),
            },
        }
    }

    fn skip(name: impl Into<String>, why: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            verdict: Verdict::Skip(why.into()),
        }
    }
}

/// The report, a line per check (and its hint under a failure).
pub fn render(checks: &[Check]) -> String {
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    let mut out = String::new();
    for check in checks {
        let (tag, what) = match &check.verdict {
            Verdict::Pass(what) => ("ok  ", what.as_str()),
            Verdict::Fail { what, .. } => ("FAIL", what.as_str()),
            Verdict::Skip(why) => ("skip", why.as_str()),
        };
        let what = crate::engine::api::printable(what, 300);
        out.push_str(&format!("{tag}  {:width$}  {what}\n", check.name));
        if let Verdict::Fail { hint, .. } = &check.verdict {
            out.push_str(&format!("      {:width$}  hint: {hint}\n", ""));
        }
    }
    out
}

impl DoctorCmd {
    pub fn run(self, config: &Path) -> Result<()> {
        let settings = super::load(config)?;
        let checks = super::block_on(checks(&settings))?;
        out!("{}", render(&checks));
        let failed = checks
            .iter()
            .filter(|c| matches!(c.verdict, Verdict::Fail { .. }))
            .count();
        if failed > 0 {
            bail!(
                "{failed} check{} failed",
                if failed == 1 { "" } else { "s" }
            );
        }
        Ok(())
    }
}

/// `work`, or a failed check when it does not end within [`BOUND`].
async fn bounded<F: Future<Output = Vec<Check>>>(name: &str, work: F) -> Vec<Check> {
    match tokio::time::timeout(BOUND, work).await {
        Ok(checks) => checks,
        Err(_) => vec![Check::fail(
            name,
            format!("no answer within {BOUND:?}"),
            "the service hangs or a firewall drops the traffic",
        )],
    }
}

async fn checks(settings: &Settings) -> Vec<Check> {
    let mut out = Vec::new();
    out.extend(bounded("imds", imds()).await);
    let config = match crate::aws::sdk_config(&settings.aws).await {
        Ok(config) => {
            let region = config.region().map(|r| r.to_string()).unwrap_or_default();
            out.push(Check::pass("region", region));
            Some(config)
        }
        Err(e) => {
            out.push(Check::fail(
                "region",
                format!("{e:#}"),
                "set aws.region, or run where instance metadata answers",
            ));
            None
        }
    };
    if let Some(config) = &config {
        out.extend(bounded("credentials", credentials(config)).await);
        let inputs = Inputs::of(settings);
        let mut promoted = None;
        if let Some(at) = &settings.release {
            out.extend(bounded("release", release(settings, at, config, &mut promoted)).await);
        }
        let skew = Arc::new(Mutex::new(None));
        let parameters = parameters(&inputs, promoted.as_ref(), config, skew.clone());
        out.extend(bounded("parameters", parameters).await);
        out.extend(bounded("objects", objects(settings, promoted.as_ref(), config)).await);
        out.push(clock(*skew.lock().unwrap()));
    }
    out.extend(bounded("docker", docker(settings)).await);
    out.push(unit());
    out
}

async fn imds() -> Vec<Check> {
    let hint = "on EC2: the launch template's metadata options (HttpEndpoint enabled, IMDSv2); elsewhere AWS_EC2_METADATA_SERVICE_ENDPOINT, or AWS_EC2_METADATA_DISABLED=true";
    match crate::instance::imds::raw_get("/latest/meta-data/instance-id").await {
        Ok(Some(id)) => vec![Check::pass(
            "imds",
            format!(
                "IMDSv2 answers: instance {}; containers reach it only with the launch template's HttpPutResponseHopLimit 2 or more",
                String::from_utf8_lossy(&id).trim()
            ),
        )],
        Ok(None) => vec![Check::fail("imds", "no instance id in instance metadata", hint)],
        Err(e) if crate::instance::imds::disabled() => {
            vec![Check::skip("imds", format!("disabled ({e:#})"))]
        }
        Err(e) => vec![Check::fail("imds", format!("{e:#}"), hint)],
    }
}

async fn credentials(config: &aws_config::SdkConfig) -> Vec<Check> {
    use aws_sdk_ssm::config::ProvideCredentials;
    let Some(provider) = config.credentials_provider() else {
        return vec![Check::fail(
            "credentials",
            "no credentials provider",
            "the instance needs an instance profile (IAM role)",
        )];
    };
    match provider.provide_credentials().await {
        Ok(creds) => {
            let expiry = match creds.expiry() {
                Some(at) => format!(
                    "temporary, expiring at {}",
                    aws_sdk_ssm::primitives::DateTime::from(at)
                        .fmt(aws_sdk_ssm::primitives::DateTimeFormat::DateTime)
                        .unwrap_or_default()
                ),
                None => "long-lived keys: on an instance, use a role instead".into(),
            };
            vec![Check::pass("credentials", expiry)]
        }
        Err(e) => vec![Check::fail(
            "credentials",
            format!("{}", aws_sdk_ssm::error::DisplayErrorContext(&e)),
            "attach an instance profile to the launch template; `kicky-agent iam-policy` prints its policy",
        )],
    }
}

/// The `Date` of an AWS answer against the local clock, once.
#[derive(Debug)]
struct DateProbe(Arc<Mutex<Option<i64>>>);

impl aws_sdk_ssm::config::Intercept for DateProbe {
    fn name(&self) -> &'static str {
        "DateProbe"
    }

    fn read_after_transmit(
        &self,
        context: &aws_sdk_ssm::config::interceptors::BeforeDeserializationInterceptorContextRef<'_>,
        _: &aws_sdk_ssm::config::RuntimeComponents,
        _: &mut aws_sdk_ssm::config::ConfigBag,
    ) -> Result<(), aws_sdk_ssm::error::BoxError> {
        use aws_sdk_ssm::primitives::{DateTime, DateTimeFormat};
        let date = context.response().headers().get("date");
        if let Some(Ok(date)) = date.map(|d| DateTime::from_str(d, DateTimeFormat::HttpDate)) {
            let now = DateTime::from(std::time::SystemTime::now());
            *self.0.lock().unwrap() = Some(now.secs() - date.secs());
        }
        Ok(())
    }
}

fn clock(skew: Option<i64>) -> Check {
    match skew {
        None => Check::skip("clock", "no AWS answer to compare with"),
        Some(s) if s.unsigned_abs() > MAX_SKEW.as_secs() => Check::fail(
            "clock",
            format!("{s:+} s off AWS's clock"),
            "AWS refuses requests signed more than 5 minutes off: check chrony/systemd-timesyncd (169.254.169.123)",
        ),
        Some(s) => Check::pass("clock", format!("{s:+} s from AWS's clock")),
    }
}

/// With `release.store`: the promoted pointer reads, and the manifest it names (kept in
/// `promoted`: the other checks then read what that release pins, as a sync would).
async fn release(
    settings: &Settings,
    at: &ReleaseSettings,
    config: &aws_config::SdkConfig,
    promoted: &mut Option<Manifest>,
) -> Vec<Check> {
    let s3 = S3Store::new(config, &settings.aws);
    let store = Store { s3: &s3, at };
    let pointer = store.pointer_uri();
    let denied = format!(
        "give the role s3:GetObject on {pointer} and {}* (`kicky-agent iam-policy`), or fix release.store (and release.expected_owner)",
        ReleaseObjects::of(at).manifests
    );
    let read = match store.promoted().await {
        Ok(Some(read)) => read,
        Ok(None) => {
            return vec![Check::fail(
                "release",
                format!("{pointer}: no release is promoted"),
                "run `kicky-agent release create`, then `kicky-agent release promote ID`",
            )]
        }
        Err(e) => return vec![Check::fail("release", format!("{e:#}"), denied)],
    };
    match store.manifest(&read.release).await {
        Ok(manifest) => {
            *promoted = Some(manifest);
            vec![Check::pass(
                "release",
                format!("{pointer}: release {} is promoted", read.release),
            )]
        }
        Err(e) => vec![Check::fail("release", format!("{e:#}"), denied)],
    }
}

async fn parameters(
    inputs: &Inputs<'_>,
    promoted: Option<&Manifest>,
    config: &aws_config::SdkConfig,
    skew: Arc<Mutex<Option<i64>>>,
) -> Vec<Check> {
    let mut out = Vec::new();
    let store = SsmStore::new(config);
    let denied_hint =
        "the instance role needs the statement `kicky-agent iam-policy` prints for it";
    // A registry's username parameter is not checked (as before the list moved to `inputs`).
    let mut names: Vec<String> = inputs
        .parameters
        .iter()
        .filter(|p| p.used != ParameterUse::RegistryUsername)
        .map(|p| p.name.to_string())
        .collect();
    names.sort();
    names.dedup();
    // The clock is read off the first answer.
    if let Some(first) = names.first() {
        let probe = aws_sdk_ssm::Client::new(config)
            .get_parameters()
            .names(first)
            .customize()
            .interceptor(DateProbe(skew))
            .send()
            .await;
        drop(probe);
    }
    for chunk in names.chunks(GET_PARAMETERS_MAX) {
        match store.get_batch(chunk).await {
            Ok(batch) => {
                for p in &batch.found {
                    out.push(Check::pass(
                        "parameter",
                        format!("{} (version {})", p.name, p.version),
                    ));
                }
                for name in &batch.missing {
                    out.push(Check::fail("parameter", format!("{name}: not found"), "create it, or fix its name (names are case-sensitive); a parameter the role may not read answers the same"));
                }
            }
            Err(e) => out.push(Check::fail("parameter", format!("{e:#}"), denied_hint)),
        }
    }
    for path in &inputs.paths {
        let (name, recursive) = (path.path.as_str(), path.recursive);
        let found = match promoted {
            // As the sync reads them: the names the release pinned under the path, by version.
            Some(release) => pinned_path(&store, release, path.path, recursive).await,
            None => store
                .get_path(name, recursive)
                .await
                .map(|found| found.len()),
        };
        match found {
            Ok(0) => out.push(Check::fail(
                "parameters",
                format!("{name}: no parameter under the path"),
                "create them, or fix the path (and `recursive:`)",
            )),
            Ok(found) => out.push(Check::pass(
                "parameters",
                format!("{name}: {found} parameters"),
            )),
            Err(e) => out.push(Check::fail("parameters", format!("{e:#}"), denied_hint)),
        }
    }
    for secret in &inputs.secrets {
        let stage = secret.stage_name();
        match store.get_secret_staged(secret.id.as_str(), stage).await {
            Ok(_) => out.push(Check::pass(
                "secret",
                format!("{} ({stage})", secret.id.as_str()),
            )),
            Err(e) => out.push(Check::fail("secret", format!("{e:#}"), denied_hint)),
        }
    }
    out
}

/// How many of the parameters `release` pinned under `path` read at their pinned versions.
async fn pinned_path(
    store: &SsmStore,
    release: &Manifest,
    path: &ParamPath,
    recursive: bool,
) -> Result<usize> {
    let names = crate::sync::params::pinned_selectors(release, path, recursive)?;
    let mut found = 0;
    for chunk in names.chunks(GET_PARAMETERS_MAX) {
        let batch = store.get_batch(chunk).await?;
        if !batch.missing.is_empty() {
            bail!("not found: {}", batch.missing.join(", "));
        }
        found += batch.found.len();
    }
    Ok(found)
}

/// Each file's object: HEADed at the version the promoted release pins it to, when there is
/// one (as the sync reads it), else at the config's.
async fn objects(
    settings: &Settings,
    promoted: Option<&Manifest>,
    config: &aws_config::SdkConfig,
) -> Vec<Check> {
    let store = S3Store::new(config, &settings.aws);
    let mut out = Vec::new();
    let pinned;
    let settings = match promoted.map(|release| release.pin_settings(settings)) {
        Some(Ok(settings)) => {
            pinned = settings;
            &pinned
        }
        Some(Err(e)) => {
            return vec![Check::fail(
                "object",
                format!("{e:#}"),
                "create and promote a release with this config",
            )]
        }
        None => settings,
    };
    for file in &Inputs::of(settings).files {
        match store.head(file.uri, file.owner, file.version).await {
            Ok(meta) => out.push(Check::pass(
                "object",
                format!("{} ({} bytes)", file.uri, meta.length.unwrap_or(0)),
            )),
            Err(e) => {
                let action = match file.version {
                    Some(_) => "s3:GetObjectVersion",
                    None => "s3:GetObject",
                };
                out.push(Check::fail(
                    "object",
                    format!("{e:#}"),
                    format!("fix the bucket or key, or give the role {action} on it (`kicky-agent iam-policy`)"),
                ))
            }
        }
    }
    out
}

async fn docker(settings: &Settings) -> Vec<Check> {
    if settings.compose.is_none() {
        return vec![Check::skip("docker", "no compose: section")];
    }
    let engine = match crate::engine::docker::connect(Duration::from_secs(2)).await {
        Ok(engine) => engine,
        Err(e) => {
            return vec![Check::fail(
                "docker",
                format!("{e:#}"),
                "start the engine (systemctl start docker), or set DOCKER_HOST",
            )]
        }
    };
    use crate::engine::api::Engine;
    let (major, minor) = engine.api_version();
    let mut out = vec![Check::pass(
        "docker",
        format!("Docker Engine API {major}.{minor}"),
    )];
    match engine.root_dir().await {
        Ok(root) => match nix::sys::statvfs::statvfs(root.as_str()) {
            Ok(fs) => {
                let free = fs.blocks_available() * fs.fragment_size();
                let gib = free as f64 / (1u64 << 30) as f64;
                let what = format!("{gib:.1} GiB free in {root}");
                out.push(match free >= MIN_FREE {
                    true => Check::pass("disk", what),
                    false => Check::fail(
                        "disk",
                        what,
                        "grow the EBS volume, or set compose.prune: true",
                    ),
                });
            }
            Err(e) => out.push(Check::skip("disk", format!("{root}: {e}"))),
        },
        Err(e) => out.push(Check::skip("disk", format!("{e:#}"))),
    }
    out
}

fn unit() -> Check {
    if !Path::new("/run/systemd/system").exists() {
        return Check::skip("unit", "systemd is not running here");
    }
    let out = std::process::Command::new("systemctl")
        .args(["is-active", "kicky-agent.service"])
        .output();
    match out {
        Ok(out) => {
            let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
            match state.as_str() {
                "active" | "reloading" | "activating" => {
                    Check::pass("unit", format!("kicky-agent.service {state}"))
                }
                _ => Check::fail(
                    "unit",
                    format!("kicky-agent.service {state}"),
                    "systemctl enable --now kicky-agent; journalctl -u kicky-agent says why it stopped",
                ),
            }
        }
        Err(e) => Check::skip("unit", format!("systemctl: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_check_is_one_line_and_a_failure_has_its_hint() {
        let checks = [
            Check::pass("imds", "IMDSv2 answers"),
            Check::fail("parameter", "/a/b: not found\x1b[31m", "create it"),
            Check::skip("unit", "systemd is not running here"),
        ];
        let text = render(&checks);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].starts_with("ok    imds"), "{text}");
        assert!(
            lines[1].starts_with("FAIL  parameter  /a/b: not found"),
            "{text}"
        );
        assert!(!text.contains('\x1b'), "control characters are stripped");
        assert!(
            lines[2].trim_start().starts_with("hint: create it"),
            "{text}"
        );
        assert!(lines[3].starts_with("skip  unit"), "{text}");
    }

    #[test]
    fn the_clock_fails_beyond_a_minute() {
        assert!(matches!(clock(Some(3)).verdict, Verdict::Pass(_)));
        assert!(matches!(clock(Some(-400)).verdict, Verdict::Fail { .. }));
        assert!(matches!(clock(None).verdict, Verdict::Skip(_)));
    }
}
