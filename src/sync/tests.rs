//! The sync's rules, one whole pass ([`run_with`]) at a time, on fakes: Parameter Store and S3 in
//! memory ([`super::fakes`]), the engine's fake, a temp dir for the workdir and the state. What
//! is held and what is applied again, what a release manifest pins, and when a promote counts as
//! seen. The same passes run against the rig in `tests/releases.rs` and `tests/rollout.rs`.

use std::time::{Duration, SystemTime};

use super::fakes::{FakeObjects, FakeParams};
use super::*;
use crate::engine::api::EngineError;
use crate::engine::fake::{Behaviour, FakeEngine, PullOutcome};
use crate::release::{Manifest, PinnedCompose, PinnedFile, Pointer, ReleaseId, SCHEMA};

/// The compose file, fetched from S3: its image's tag comes from the parameter.
const COMPOSE: &str = "services:\n  web:\n    image: web:${TAG}\n";
const COMPOSE_URI: &str = "s3://files/docker-compose.yml";
const PARAM: &str = "/orange/env";
const HOUR: Duration = Duration::from_secs(3600);

/// One instance: its config (in a temp dir), and the fakes it syncs from.
struct Instance {
    dir: tempfile::TempDir,
    settings: Settings,
    clients: Clients<FakeParams, FakeObjects, FakeEngine>,
}

/// An engine with `web:1` and `web:2` good, `web:bad` never healthy, `web:gone` refused by its
/// registry and `web:far` on a registry that cannot be reached.
fn engine() -> FakeEngine {
    let engine = FakeEngine::new();
    engine.image("web:1", Behaviour::Healthy);
    engine.remote_image("web:2", Behaviour::Healthy);
    engine.remote_image("web:bad", Behaviour::Unhealthy);
    engine.state.lock().unwrap().pulls.insert(
        "web:far".into(),
        PullOutcome::Fails(EngineError::Unreachable(
            "registry.example: i/o timeout".into(),
        )),
    );
    engine
}

fn instance(release_store: bool) -> Instance {
    instance_with(release_store, COMPOSE)
}

/// An instance whose compose file (in S3) is `compose`.
fn instance_with(release_store: bool, compose: &str) -> Instance {
    // On a tmpfs: where the compose file's `secrets:` may be written.
    let dir = tempfile::tempdir_in("/dev/shm").expect("/dev/shm (a tmpfs)");
    let release = match release_store {
        true => "release:\n  store: s3://releases/orange/\n",
        false => "",
    };
    let yaml = format!(
        "project: orange\nworkdir: {0}/srv\nstate_dir: {0}/state\n\
         env:\n  parameters:\n    - name: {PARAM}\n      format: dotenv\n\
         files:\n  - source: {COMPOSE_URI}\n    path: docker-compose.yml\n\
         compose:\n  file: docker-compose.yml\n  healthy_timeout: 30s\n  secrets_dir: {0}/secrets\n\
         {release}",
        dir.path().display()
    );
    std::fs::create_dir_all(dir.path().join("srv")).unwrap();
    let config = dir.path().join("agent.yaml");
    std::fs::write(&config, yaml).unwrap();
    let settings = crate::config::load(&config).unwrap();
    let clients = Clients {
        ssm: FakeParams::default(),
        s3: FakeObjects::default(),
        ecr: None,
        engine: Some(engine()),
    };
    clients.s3.put(COMPOSE_URI, compose.as_bytes());
    Instance {
        dir,
        settings,
        clients,
    }
}

impl Instance {
    async fn sync(&self, held: Held) -> Result<SyncReport> {
        self.sync_to(held, &Target::Configured).await
    }

    async fn sync_to(&self, held: Held, target: &Target) -> Result<SyncReport> {
        run_with(&self.settings, &self.clients, held, target).await
    }

    fn tag(&self, tag: &str) -> i64 {
        self.clients.ssm.put(PARAM, &format!("TAG={tag}\n"))
    }

    fn state(&self) -> State {
        State::load(&State::path(&self.settings)).unwrap()
    }

    /// The env file's variables (its header comment left out).
    fn env_file(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("srv/.env")).unwrap();
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect()
    }

    /// The image the `web` container runs.
    fn running(&self) -> String {
        let engine = self.clients.engine.as_ref().unwrap();
        engine.named("orange-web-1").expect("a web container").image
    }

    /// How many containers the engine was asked to create so far: a release applied (again)
    /// creates one.
    fn creates(&self) -> usize {
        let engine = self.clients.engine.as_ref().unwrap();
        engine
            .calls()
            .iter()
            .filter(|c| c.starts_with("create "))
            .count()
    }
}

/// How a new release fails, and whether the failure is for good (the release is held).
struct Failure {
    name: &'static str,
    /// Moves the sources to the failing release.
    make: fn(&Instance),
    /// The failure is the one meant.
    is: fn(&anyhow::Error) -> bool,
    for_good: bool,
}

fn rolled_back(err: &anyhow::Error) -> bool {
    err.downcast_ref::<engine::converge::RolledBack>().is_some()
}

fn refused(err: &anyhow::Error) -> bool {
    err.downcast_ref::<engine::pull::Refused>().is_some()
}

fn bad_input(err: &anyhow::Error) -> bool {
    crate::error::exit_status(err) == crate::error::EXIT_BAD_INPUT
}

const FAILURES: &[Failure] = &[
    Failure {
        name: "rolled back (never healthy)",
        make: |i| {
            i.tag("bad");
        },
        is: rolled_back,
        for_good: true,
    },
    Failure {
        name: "bad input (the compose file asks what the policy refuses)",
        make: |i| {
            let compose = format!("{COMPOSE}    privileged: true\n");
            i.clients.s3.put(COMPOSE_URI, compose.as_bytes());
        },
        is: bad_input,
        for_good: true,
    },
    Failure {
        name: "refused by the registry",
        make: |i| {
            i.tag("gone");
        },
        is: refused,
        for_good: true,
    },
    Failure {
        name: "the registry cannot be reached",
        make: |i| {
            i.tag("far");
        },
        is: |err| !(rolled_back(err) || refused(err) || bad_input(err)),
        for_good: false,
    },
];

/// A release that fails for good is held under `Held::Hold` (the daemon): not applied again until
/// its backoff passed or it changes, while the last good one serves; `Held::Retry` (an operator's
/// `sync`, `resync`) applies it again. A failure that may pass holds nothing. Each time, the env
/// file and the state keep the last good release.
#[tokio::test(start_paused = true)]
async fn a_release_that_failed_for_good_is_held_until_it_changes_or_its_backoff_passed() {
    for case in FAILURES {
        let name = case.name;
        let i = instance(false);
        i.tag("1");
        i.sync(Held::Hold { after: HOUR }).await.unwrap();
        assert_eq!(i.running(), "web:1");
        let good = i.state();
        assert!(good.failed.is_none(), "{name}");

        (case.make)(&i);
        let err = i.sync(Held::Hold { after: HOUR }).await.unwrap_err();
        assert!((case.is)(&err), "{name}: {err:#}");
        let state = i.state();
        assert_eq!(state.failed.is_some(), case.for_good, "{name}: {err:#}");
        assert_eq!(i.running(), "web:1", "{name}: the last good release serves");
        assert_eq!(i.env_file(), "TAG=1\n", "{name}: the env file is put back");
        assert_eq!(state.parameters, good.parameters, "{name}");
        assert_eq!(state.files, good.files, "{name}");
        assert_eq!(state.last_good_at, good.last_good_at, "{name}");
        assert_eq!(state.counters.failures, 1, "{name}");

        // The daemon's next pass: a held release is not tried again; one that may pass is.
        let creates = i.creates();
        let again = i.sync(Held::Hold { after: HOUR }).await;
        match case.for_good {
            true => {
                let report = again.unwrap();
                let why = report.held.expect("held");
                assert!(why.contains("failed"), "{name}: {why}");
                assert_eq!(i.creates(), creates, "{name}: not applied again");
                assert_eq!(i.state().failed.unwrap().attempts, 1, "{name}");
                assert_eq!(i.env_file(), "TAG=1\n", "{name}");
            }
            false => {
                again.unwrap_err();
                assert!(i.state().failed.is_none(), "{name}");
            }
        }
        if !case.for_good {
            continue;
        }

        // Its backoff passed: tried again, failed again, held longer.
        i.sync(Held::Hold {
            after: Duration::ZERO,
        })
        .await
        .unwrap_err();
        assert_eq!(i.state().failed.unwrap().attempts, 2, "{name}");

        // An operator's sync applies it whatever the backoff.
        i.sync(Held::Retry).await.unwrap_err();
        assert_eq!(i.state().failed.unwrap().attempts, 3, "{name}");
        assert_eq!(i.running(), "web:1", "{name}");

        // It changed (a fix): applied at once, and nothing is held any more.
        i.clients.s3.put(COMPOSE_URI, COMPOSE.as_bytes());
        let fixed = i.tag("2");
        let report = i.sync(Held::Hold { after: HOUR }).await.unwrap();
        assert!(report.held.is_none(), "{name}");
        assert_eq!(i.running(), "web:2", "{name}");
        let state = i.state();
        assert!(state.failed.is_none(), "{name}");
        assert_eq!(
            state.parameters[PARAM],
            params::Version::Number(fixed),
            "{name}"
        );
        assert_eq!(i.env_file(), "TAG=2\n", "{name}");
    }
}

/// A Parameter Store that cannot be reached fails the pass before anything is written: nothing
/// is held, and the next pass tries again.
#[tokio::test(start_paused = true)]
async fn a_network_failure_holds_nothing() {
    let i = instance(false);
    i.tag("1");
    i.sync(Held::Hold { after: HOUR }).await.unwrap();
    i.tag("2");
    i.clients.ssm.set_down(true);
    let err = i.sync(Held::Hold { after: HOUR }).await.unwrap_err();
    assert!(
        format!("{err:#}").contains("connection timed out"),
        "{err:#}"
    );
    let state = i.state();
    assert!(state.failed.is_none());
    assert_eq!(state.last_sync.as_ref().map(|s| s.ok), Some(false));
    i.clients.ssm.set_down(false);
    i.sync(Held::Hold { after: HOUR }).await.unwrap();
    assert_eq!(i.running(), "web:2");
}

/// The good release is never held: not the one the instance serves (its image gone and refused
/// on a resync), nor anything while no release ever served (the first sync of an instance).
#[tokio::test(start_paused = true)]
async fn the_good_release_is_never_held() {
    let i = instance(false);
    i.tag("gone");
    i.sync(Held::Hold { after: HOUR }).await.unwrap_err();
    assert!(i.state().failed.is_none(), "nothing serves yet: not held");

    let i = instance(false);
    i.tag("1");
    i.sync(Held::Hold { after: HOUR }).await.unwrap();
    // The image of the release that serves is removed, and its registry now refuses it.
    let engine = i.clients.engine.as_ref().unwrap();
    engine.state.lock().unwrap().images.remove("web:1");
    engine.state.lock().unwrap().behaviours.remove("web:1");
    let err = i.sync(Held::Retry).await.unwrap_err();
    assert!(refused(&err), "{err:#}");
    assert!(i.state().failed.is_none(), "the good release is not held");
}

/// A release of the store, pinning the parameter at `version`, the compose file at `compose`
/// (its version id in the fake bucket) and `web:<tag>` at a digest the engine has.
fn manifest(i: &Instance, at: u64, version: i64, compose: &str, tag: &str) -> Manifest {
    let id = ReleaseId::new(SystemTime::UNIX_EPOCH + Duration::from_secs(at));
    let body = COMPOSE.as_bytes();
    let digest = format!("sha256:{}", crate::release::sha256_hex(tag.as_bytes()));
    let image = format!("web:{tag}");
    let engine = i.clients.engine.as_ref().unwrap();
    engine.image(
        &crate::release::by_digest(&image, &digest).unwrap(),
        Behaviour::Healthy,
    );
    Manifest {
        schema: SCHEMA,
        id,
        created: "2026-01-01T00:00:00Z".into(),
        by: "arn:aws:iam::123456789012:role/ci".into(),
        parent: None,
        note: String::new(),
        project: "orange".into(),
        parameters: [(PARAM.to_string(), version)].into(),
        secrets: Default::default(),
        files: [(
            COMPOSE_URI.to_string(),
            PinnedFile {
                version_id: compose.into(),
                sha256: crate::release::sha256_hex(body),
                size: body.len() as u64,
            },
        )]
        .into(),
        compose: Some(PinnedCompose {
            sha256: crate::release::sha256_hex(body),
        }),
        images: [(image, digest)].into(),
    }
}

impl Instance {
    fn store(&self) -> crate::aws::releases::Store<'_, FakeObjects> {
        crate::aws::releases::Store {
            s3: &self.clients.s3,
            at: self.settings.release.as_ref().unwrap(),
        }
    }

    fn publish(&self, manifest: &Manifest) {
        let uri = self.store().manifest_uri(&manifest.id).to_string();
        self.clients.s3.put(&uri, &manifest.to_json());
    }

    fn promote(&self, id: &ReleaseId) {
        let pointer = Pointer {
            schema: SCHEMA,
            release: id.clone(),
            promoted: "2026-01-01T00:00:00Z".into(),
            by: "arn:aws:iam::123456789012:role/ci".into(),
        };
        let uri = self.store().pointer_uri().to_string();
        self.clients
            .s3
            .put(&uri, &serde_json::to_vec(&pointer).unwrap());
    }
}

/// With a release manifest, the parameters are read by `name:version` and the files at their
/// pinned version, however they moved since; the images run by digest.
#[tokio::test(start_paused = true)]
async fn a_release_is_applied_at_exactly_its_pinned_versions() {
    let i = instance(true);
    let v1 = i.tag("1");
    let first = manifest(&i, 1, v1, "v1", "1");
    i.publish(&first);
    // The sources move on after the release was made.
    i.tag("2");
    i.clients.s3.put(COMPOSE_URI, b"services: {}\n");

    let target = Target::Release(first.id.clone());
    i.sync_to(Held::Retry, &target).await.unwrap();
    assert_eq!(i.env_file(), "TAG=1\n");
    let asked = i.clients.ssm.asked.lock().unwrap().clone();
    assert_eq!(asked, vec![format!("{PARAM}:{v1}")]);
    let gets = i.clients.s3.gets.lock().unwrap().clone();
    assert!(
        gets.contains(&format!("{COMPOSE_URI}?versionId=v1")),
        "{gets:?}"
    );
    assert_eq!(i.running(), format!("web@{}", first.images["web:1"]));
    let state = i.state();
    assert_eq!(state.release.as_ref().map(|r| &r.id), Some(&first.id));
    assert_eq!(state.parameters[PARAM], params::Version::Number(v1));
}

/// A file whose content is not what the release pinned is refused as bad input (exit 2: held
/// like any, nothing written); an input the config reads and the release does not pin is bad
/// input too.
#[tokio::test(start_paused = true)]
async fn what_a_release_does_not_pin_exactly_is_refused() {
    let i = instance(true);
    let v1 = i.tag("1");
    let mut other = manifest(&i, 1, v1, "v1", "1");
    other.files.get_mut(COMPOSE_URI).unwrap().sha256 = "0".repeat(64);
    i.publish(&other);
    let err = i
        .sync_to(Held::Retry, &Target::Release(other.id.clone()))
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("not the"), "{err:#}");
    assert_eq!(
        crate::error::exit_status(&err),
        crate::error::EXIT_BAD_INPUT,
        "the manifest is bad input: held, not fetched again on every watch"
    );
    assert!(
        !i.dir.path().join("srv/.env").exists(),
        "nothing is written"
    );
    assert!(!i.dir.path().join("srv/docker-compose.yml").exists());

    type Unpin = fn(&mut Manifest);
    let cases: [(&str, Unpin); 3] = [
        ("parameter", |m| m.parameters.clear()),
        ("file", |m| m.files.clear()),
        ("image", |m| m.images.clear()),
    ];
    for (what, unpin) in cases {
        let mut release = manifest(&i, 2, v1, "v1", "1");
        unpin(&mut release);
        i.publish(&release);
        let err = i
            .sync_to(Held::Retry, &Target::Release(release.id.clone()))
            .await
            .unwrap_err();
        let message = format!("{err:#}");
        assert!(
            message.contains(&format!("does not pin {what}")),
            "{message}"
        );
        assert_eq!(crate::error::exit_status(&err), 2, "{message}");
    }
}

/// A promote counts as seen once applied, or when an operator chose another release (a wave);
/// a promoted release that failed is not seen: the watch tries it again.
#[tokio::test(start_paused = true)]
async fn a_promote_is_seen_once_applied_or_when_another_release_was_chosen() {
    let i = instance(true);
    let v1 = i.tag("1");
    let good = manifest(&i, 1, v1, "v1", "1");
    i.publish(&good);
    i.promote(&good.id);
    i.sync(Held::Hold { after: HOUR }).await.unwrap();
    assert_eq!(i.state().promoted_seen, Some(good.id.clone()));

    // A promoted release that never gets healthy: not seen.
    let v2 = i.tag("bad");
    let mut bad = manifest(&i, 2, v2, "v1", "1");
    bad.images = [("web:bad".to_string(), format!("sha256:{}", "b".repeat(64)))].into();
    let engine = i.clients.engine.as_ref().unwrap();
    engine.image(
        &crate::release::by_digest("web:bad", &bad.images["web:bad"]).unwrap(),
        Behaviour::Unhealthy,
    );
    i.publish(&bad);
    i.promote(&bad.id);
    i.sync(Held::Hold { after: HOUR }).await.unwrap_err();
    let state = i.state();
    assert_eq!(state.promoted_seen, Some(good.id.clone()));
    assert_eq!(state.release.map(|r| r.id), Some(good.id.clone()));
    assert!(state.failed.is_some());

    // An operator applies another release while the bad one is promoted (a wave): the promote
    // is seen, whether that release is applied or fails.
    i.sync_to(Held::Retry, &Target::Release(good.id.clone()))
        .await
        .unwrap();
    assert_eq!(i.state().promoted_seen, Some(bad.id.clone()));
    i.promote(&good.id);
    i.sync_to(Held::Retry, &Target::Release(bad.id.clone()))
        .await
        .unwrap_err();
    let state = i.state();
    assert_eq!(state.promoted_seen, Some(good.id.clone()));
    assert_eq!(state.release.map(|r| r.id), Some(good.id));
}

/// A release pinned by the config (the launch template's user data) is what a plain sync applies,
/// whatever is promoted; a pin the store does not have fails naming it, and nothing is written.
#[tokio::test(start_paused = true)]
async fn a_pinned_release_is_applied_whatever_is_promoted() {
    let mut i = instance(true);
    let v1 = i.tag("1");
    let first = manifest(&i, 1, v1, "v1", "1");
    let v2 = i.tag("2");
    let second = manifest(&i, 2, v2, "v2", "2");
    i.publish(&first);
    i.publish(&second);
    i.promote(&second.id);
    i.settings.release.as_mut().unwrap().pin = Some(first.id.to_string());
    i.sync(Held::Hold { after: HOUR }).await.unwrap();
    let state = i.state();
    assert_eq!(state.release.map(|r| r.id), Some(first.id.clone()));
    assert_eq!(state.promoted_seen, Some(second.id.clone()));

    let mut missing = instance(true);
    missing.publish(&first);
    missing.promote(&first.id);
    let absent = ReleaseId::parse("20261207T000000000Z-000000").unwrap();
    missing.settings.release.as_mut().unwrap().pin = Some(absent.to_string());
    let err = missing.sync(Held::Hold { after: HOUR }).await.unwrap_err();
    assert!(format!("{err:#}").contains(absent.as_str()), "{err:#}");
    assert!(!missing.dir.path().join("srv/.env").exists());
}

/// The files under `dir`, recursively.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten() {
        let path = entry.unwrap().path();
        match path.is_dir() {
            true => files.extend(files_under(&path)),
            false => files.push(path),
        }
    }
    files
}

/// A sync has the variables of the env file it writes in memory: they interpolate the compose
/// file and fill its `secrets:` files, with no read of the env file back from the disk. A held
/// release reads the last good env file on disk once, as text (not counted here), and takes its
/// variables from that text.
#[tokio::test(start_paused = true)]
async fn the_env_file_is_never_read_back() {
    let compose = "services:\n  web:\n    image: web:${TAG}\n    secrets: [token]\n\
                   secrets:\n  token:\n    environment: TOKEN\n";
    let i = instance_with(false, compose);
    let token = |tag: &str| format!("TAG={tag}\nTOKEN=t0k3n-{tag}\n");
    i.clients.ssm.put(PARAM, &token("1"));
    i.sync(Held::Hold { after: HOUR }).await.unwrap();
    let secrets = i.dir.path().join("secrets");
    let written = |value: &str| {
        files_under(&secrets)
            .iter()
            .any(|f| std::fs::read_to_string(f).is_ok_and(|text| text == value))
    };
    assert!(written("t0k3n-1"), "{:?}", files_under(&secrets));
    i.clients.ssm.put(PARAM, &token("bad"));
    i.sync(Held::Hold { after: HOUR }).await.unwrap_err();
    let report = i.sync(Held::Hold { after: HOUR }).await.unwrap();
    assert!(report.held.is_some());
    assert!(written("t0k3n-1"));
    let env_file = i.dir.path().join("srv/.env");
    let reads = crate::compose::ENV_FILE_READS
        .lock()
        .unwrap()
        .get(&env_file)
        .copied();
    assert_eq!(
        reads, None,
        "the env file's variables were read back from the disk"
    );
}

/// Whoever writes the release store does not choose the agent's memory, nor another project's
/// release: an oversized manifest or pointer is refused unread, a manifest of another project is
/// bad input, and a manifest that names itself another id is refused.
#[tokio::test]
async fn the_store_is_read_as_hostile() {
    use crate::aws::releases::Store;
    use crate::config::types::S3Prefix;
    use crate::config::ReleaseSettings;
    use crate::release::{Manifest, ReleaseId};
    let s3 = crate::sync::fakes::FakeObjects::default();
    let at = ReleaseSettings {
        store: S3Prefix::parse("s3://amzn-s3-demo-bucket/app/").unwrap(),
        expected_owner: Some("123456789012".into()),
        signing_key: None,
        public_key: None,
        pin: None,
    };
    let store = Store { s3: &s3, at: &at };
    let id = ReleaseId::parse("20261207T163000000Z-3f9a1c").unwrap();
    let huge = vec![b' '; 5 << 20];
    s3.put(&store.manifest_uri(&id).to_string(), &huge);
    let err = store.manifest(&id).await.unwrap_err();
    assert!(format!("{err:#}").contains("larger than"), "{err:#}");
    s3.put(&store.pointer_uri().to_string(), &huge[..100 << 10]);
    assert!(store.promoted().await.is_err());

    let other = ReleaseId::parse("20261207T163000000Z-000000").unwrap();
    let manifest = |id: &ReleaseId, project: &str| Manifest {
        schema: crate::release::SCHEMA,
        id: id.clone(),
        created: "2026-12-07T16:30:00Z".into(),
        by: "arn:aws:iam::123456789012:user/ci".into(),
        parent: None,
        note: String::new(),
        project: project.into(),
        parameters: Default::default(),
        secrets: Default::default(),
        files: Default::default(),
        compose: None,
        images: Default::default(),
    };
    s3.put(
        &store.manifest_uri(&id).to_string(),
        &manifest(&other, "o").to_json(),
    );
    let err = store.manifest(&id).await.unwrap_err();
    assert!(format!("{err:#}").contains("says it is release"), "{err:#}");

    let i = instance(true);
    let err = manifest(&id, "someone-else")
        .pin_settings(&i.settings)
        .unwrap_err();
    assert_eq!(
        crate::error::exit_status(&err),
        crate::error::EXIT_BAD_INPUT
    );
    assert!(
        format!("{err}").contains("is for project someone-else"),
        "{err}"
    );
}
