//! The agent touches only what is its own, against the real services: a container that can write
//! a managed file's directory (a bind mount) cannot make the agent, which runs as root, read a host
//! file into the container's view, write through a link to the host, or hang on a FIFO; and the
//! secret files' prune removes only the files the agent made, in a directory it made.

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aws_sdk_ssm::types::ParameterType;
use common::stack::{docker, Stack};
use common::{files_under, Rig, Run, Scratch};

/// Runs the agent with `args`, killed (by its PID) if it has not ended within `bound`: a run that
/// hangs fails the test instead of hanging it.
fn bounded(s: &Scratch, rig: &Rig, args: &[&str], bound: Duration) -> Run {
    let mut agent = s.spawn_agent(rig, args, &[]);
    let started = Instant::now();
    while agent
        .child
        .try_wait()
        .expect("wait for the agent")
        .is_none()
    {
        if started.elapsed() > bound {
            agent.kill();
            let run = agent.wait();
            panic!(
                "`kicky-agent {}` still ran after {bound:?}; its output:\n{}",
                args.join(" "),
                run.all()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    agent.wait()
}

fn mkfifo(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
}

fn is_regular(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_file())
}

/// A file of the host's that the agent must never carry anywhere: `text`, mode 0600.
fn host_file(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// Whether `value` is in any regular file under `dir` (links are not followed).
fn anywhere_under(dir: &Path, value: &str) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            if let Some(found) = anywhere_under(&path, value) {
                return Some(found);
            }
        } else if meta.is_file()
            && String::from_utf8_lossy(&std::fs::read(&path).unwrap()).contains(value)
        {
            return Some(path);
        }
    }
    None
}

/// The env file's directory is bind-mounted writable into a container, and a release failed (it
/// is held). The container puts a link to a host file (another project's env file, 0600) where
/// the env file was; the daemon restarts. Its first sync serves the last good release from disk:
/// the link counts as no env file, never as the host file's content, and no byte of the host file
/// reaches anything the container can read (its mount, its environment) or the log.
#[tokio::test(flavor = "multi_thread")]
async fn a_link_in_the_env_files_place_never_carries_a_host_file_to_a_container() {
    let rig = Rig::get();
    let stack = Stack::new(&rig, "envlink").await;
    let param = format!("/kt/{}/env", stack.project);
    stack.env(&rig, "HEALTH_PATH=health\n").await;
    let compose = "services:\n  web:\n    image: {registry}/tester/web:1\n    volumes:\n      - ./conf:/conf\n\
                   \x20   healthcheck:\n      test: [CMD, wget, -q, -O, /dev/null, 'http://127.0.0.1:8080/${HEALTH_PATH}']\n      interval: 1s\n      retries: 2\n";
    let extra = format!(
        "watch:\n  interval: 1h\ncontrol_socket: {}\nlifecycle:\n  hook: off\n",
        stack.scratch.path("run/control.sock").display()
    );
    stack.compose_with_env_file(&rig, compose, Some("conf/.env"), &extra);
    let (run, stack, rig) = stack.sync(rig).await;
    run.expect(0);
    // The broken release: rolled back, and held from now on.
    rig.put(&param, "HEALTH_PATH=nope\n", ParameterType::SecureString)
        .await;
    let (run, stack, rig) = stack.sync(rig).await;
    run.expect(1);

    let host = stack.scratch.path("other-project/.env");
    host_file(&host, "DB_PASSWORD=host-secret-7c7c\n");
    let web = stack.container("web");
    let plant = format!("rm -f /conf/.env && ln -s {} /conf/.env", host.display());
    docker(&["exec", &web, "sh", "-c", &plant]);
    let env_path = stack.scratch.workdir().join("conf/.env");
    assert!(
        std::fs::symlink_metadata(&env_path).is_ok_and(|m| m.file_type().is_symlink()),
        "the container planted its link"
    );

    let s = &stack.scratch;
    let (daemon, notify) = common::systemd::start(s, &rig.imds_url, &[], &["host-secret-7c7c"]);
    // The first sync ends (served, or failed): READY=1 or a STATUS= that says it failed.
    let started = Instant::now();
    let ended = || {
        notify
            .lines()
            .iter()
            .any(|l| l == "READY=1" || l.starts_with("STATUS=first sync failed"))
    };
    while !ended() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the daemon's first sync did not end: {:?}",
            notify.lines()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = std::fs::read_to_string(s.path("daemon.log")).unwrap();
    // The leak first: the log is shown below only once it is known to be free of the host file.
    assert!(
        !log.contains("host-secret-7c7c"),
        "the host file's content reached the log"
    );
    assert!(
        log.contains("not applying it again"),
        "the first sync held the failed release: {log}"
    );
    drop(daemon);

    assert_same!(
        std::fs::read_to_string(&host).unwrap(),
        "DB_PASSWORD=host-secret-7c7c\n",
        "the host file changed"
    );
    assert_eq!(common::mode_of(&host), 0o600);
    let conf = s.workdir().join("conf");
    assert_eq!(
        anywhere_under(&conf, "host-secret-7c7c"),
        None,
        "the host file's content reached the container's mount"
    );
    // `/conf/*` does not match the dotfile: the env file's own place is read by its name.
    let in_container = docker(&[
        "exec",
        &web,
        "sh",
        "-c",
        "cat /conf/.env /conf/* 2>/dev/null; env",
    ]);
    assert!(
        !in_container.contains("host-secret-7c7c"),
        "the host file's content reached the container"
    );
}

/// The container swaps a directory of its writable mount (the env file's) for a link to a host
/// directory that holds another project's env file. The next sync neither reads that file, nor
/// writes or replaces anything there: it refuses, naming the link.
#[tokio::test(flavor = "multi_thread")]
async fn a_directory_swapped_for_a_link_redirects_no_read_or_write() {
    let rig = Rig::get();
    let stack = Stack::new(&rig, "dirlink").await;
    stack.env(&rig, "GREETING=hello\n").await;
    let bucket = rig.bucket("dirlink", false).await;
    rig.put_object(&bucket, "app.yml", b"app: 1\n".to_vec())
        .await;
    let compose =
        "services:\n  web:\n    image: {registry}/tester/web:1\n    volumes:\n      - ./conf:/conf\n";
    let extra = format!(
        "files:\n  - source: s3://{bucket}/app.yml\n    path: conf/app.yml\n    mode: \"0644\"\nlifecycle:\n  hook: off\n"
    );
    stack.compose_with_env_file(&rig, compose, Some("conf/sub/.env"), &extra);
    let (run, stack, rig) = stack.sync(rig).await;
    run.expect(0);

    let other = stack.scratch.path("other-project");
    host_file(&other.join(".env"), "DB_PASSWORD=host-secret-5d5d\n");
    let plant = format!("rm -rf /conf/sub && ln -s {} /conf/sub", other.display());
    docker(&["exec", &stack.container("web"), "sh", "-c", &plant]);

    let (run, stack, _rig) = stack.sync(rig).await;
    // The leak first: the output is shown below only once it is known to be free of the file.
    run.assert_free_of(&["host-secret-5d5d"]);
    assert_ne!(run.status, 0, "{}", run.all());
    assert!(
        run.stderr.contains("conf/sub") && run.stderr.contains("link"),
        "the error names the link: {}",
        run.stderr
    );
    let names: Vec<String> = std::fs::read_dir(&other)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, [".env"], "nothing was written in the host directory");
    assert_same!(
        std::fs::read_to_string(other.join(".env")).unwrap(),
        "DB_PASSWORD=host-secret-5d5d\n",
        "the host directory's env file changed"
    );
    assert_eq!(common::mode_of(&other.join(".env")), 0o600);
    let state =
        std::fs::read_to_string(stack.scratch.path(&format!("state/{}.json", stack.project)))
            .unwrap();
    assert!(!state.contains("host-secret-5d5d"), "the state file");
}

/// A FIFO where a managed file belongs (put there by whoever can write its directory) never
/// hangs a sync: the env file, a fetched file and the state file are replaced; a compose file, and
/// an env file the compose file names, are missing (exit 2, naming the file). Each run is bounded.
#[tokio::test(flavor = "multi_thread")]
async fn a_fifo_in_a_managed_files_place_never_hangs_a_sync() {
    let rig = Rig::get();
    let bound = Duration::from_secs(60);
    let prefix = common::unique_prefix("fifo");
    rig.put(
        &format!("{prefix}/env"),
        "GREETING=hello\n",
        ParameterType::SecureString,
    )
    .await;
    let bucket = rig.bucket("fifo", false).await;
    rig.put_object(&bucket, "app.yml", b"app: 1\n".to_vec())
        .await;
    let config = format!(
        "project: fifo\nworkdir: {{workdir}}\naws:\n  endpoint_url: {{moto}}\n  s3_force_path_style: true\n\
         env:\n  parameters:\n    - name: {prefix}/env\n      format: dotenv\n\
         files:\n  - source: s3://{bucket}/app.yml\n    path: conf/app.yml\nlifecycle:\n  hook: off\n"
    );
    tokio::task::block_in_place(|| {
        // The env file, a fetched file and the state file, each before a first sync and after one.
        for (fifo, after_a_sync) in [
            ("work/.env", false),
            ("work/conf/app.yml", false),
            ("state/fifo.json", false),
            ("work/.env", true),
            ("work/conf/app.yml", true),
            ("state/fifo.json", true),
        ] {
            let s = Scratch::new();
            s.config(&rig, &config);
            if after_a_sync {
                bounded(&s, &rig, &["sync"], bound).expect(0);
                std::fs::remove_file(s.path(fifo)).unwrap();
            }
            mkfifo(&s.path(fifo));
            let run = bounded(&s, &rig, &["sync"], bound);
            run.expect(0);
            assert!(is_regular(&s.path(fifo)), "{fifo}: replaced");
            let env = std::fs::read_to_string(s.path("work/.env")).unwrap();
            assert!(env.ends_with("\nGREETING=hello\n"), "the env file");
            assert_eq!(
                std::fs::read_to_string(s.path("work/conf/app.yml")).unwrap(),
                "app: 1\n"
            );
            bounded(&s, &rig, &["plan"], bound).expect(0);
        }

        // The compose file, and an env file it names: missing, said so, exit 2.
        let compose = "services:\n  web:\n    image: x\n    env_file: app.env\n";
        for fifo in ["docker-compose.yml", "app.env"] {
            let s = Scratch::new();
            s.config(
                &rig,
                "project: fifo\nworkdir: {workdir}\ncompose:\n  file: docker-compose.yml\nlifecycle:\n  hook: off\n",
            );
            std::fs::create_dir_all(s.workdir()).unwrap();
            if fifo != "docker-compose.yml" {
                std::fs::write(s.workdir().join("docker-compose.yml"), compose).unwrap();
            }
            mkfifo(&s.workdir().join(fifo));
            for args in [&["validate"][..], &["render"]] {
                let run = bounded(&s, &rig, args, bound);
                run.expect(2);
                assert!(
                    run.stderr
                        .contains(&s.workdir().join(fifo).display().to_string())
                        && run.stderr.contains("not a regular file"),
                    "{fifo}: {}",
                    run.stderr
                );
            }
        }
    });
}

/// A project in `workdir` whose service `web` mounts `./data` and the secret `db_password` (the
/// parameter `/kt/<project>/DB_PASSWORD`, set to `value`, `env_file: false`), with its secret files
/// in `secrets_dir` (line 14 of the config); the config's path.
async fn secret_project(
    stack: &Stack,
    rig: &Rig,
    workdir: &Path,
    secrets_dir: &Path,
    value: &str,
) -> PathBuf {
    let p = &stack.project;
    stack.env(rig, "GREETING=hello\n").await;
    let secret = format!("/kt/{p}/DB_PASSWORD");
    rig.put(&secret, value, ParameterType::SecureString).await;
    std::fs::create_dir_all(workdir).unwrap();
    std::fs::write(
        workdir.join("docker-compose.yml"),
        format!(
            "services:\n  web:\n    image: {}/tester/web:1\n    volumes: ['./data:/data']\n    secrets: [db_password]\n\
             secrets:\n  db_password:\n    environment: DB_PASSWORD\n",
            stack.registry
        ),
    )
    .unwrap();
    stack.scratch.config(
        rig,
        &format!(
            "project: {p}\nworkdir: {}\naws:\n  endpoint_url: {{moto}}\n\
             env:\n  parameters:\n    - name: /kt/{p}/env\n      format: dotenv\n    - name: {secret}\n      env_file: false\n\
             compose:\n  pull: missing\n  healthy_timeout: 30s\n  secrets_dir: {}\n\
             registries:\n  - server: {}\n    username: tester\n    password: {{ parameter: /kt/{p}/registry }}\n\
             lifecycle:\n  hook: off\n",
            workdir.display(),
            secrets_dir.display(),
            stack.registry
        ),
    )
}

/// `compose.secrets_dir` set to the workdir's parent (an operator who keeps the workdir on a
/// tmpfs): the prune of old secret files would empty the workdir. `validate` and `sync` refuse it
/// (exit 2, naming the file, line and key) and nothing is deleted.
#[tokio::test(flavor = "multi_thread")]
async fn a_secrets_dir_over_the_workdir_is_refused_and_deletes_nothing() {
    let rig = Rig::get();
    let stack = Stack::new(&rig, "overlap").await;
    let shm = tempfile::tempdir_in("/dev/shm").expect("/dev/shm (a tmpfs)");
    let work = shm.path().join(&stack.project);
    std::fs::create_dir_all(work.join("data")).unwrap();
    std::fs::write(work.join("data/db.bin"), "the application's data").unwrap();
    let config = secret_project(&stack, &rig, &work, shm.path(), "s3cr3t-ov-1").await;
    let before = files_under(&work);
    for args in [&["validate"][..], &["sync"]] {
        let run = tokio::task::block_in_place(|| stack.scratch.agent(&rig, args));
        run.expect(2);
        assert!(
            run.stderr.contains(&format!("{}:14:", config.display()))
                && run.stderr.contains("compose.secrets_dir")
                && run.stderr.contains(&work.display().to_string()),
            "{args:?}: {}",
            run.stderr
        );
        run.assert_free_of(&["s3cr3t-ov"]);
        assert_eq!(files_under(&work), before, "{args:?}: nothing deleted");
    }
    assert_eq!(
        std::fs::read_to_string(work.join("data/db.bin")).unwrap(),
        "the application's data"
    );
}

/// A secrets directory that was there before the agent (not made by it, with files of others in
/// it) is written to but never pruned; in the directory the agent makes, only its own old secret
/// files go, never a file it did not write.
#[tokio::test(flavor = "multi_thread")]
async fn the_secret_prune_removes_only_what_the_agent_made() {
    let rig = Rig::get();
    let stack = Stack::new(&rig, "prune").await;
    let p = stack.project.clone();
    let secret = format!("/kt/{p}/DB_PASSWORD");
    let shm = tempfile::tempdir_in("/dev/shm").expect("/dev/shm (a tmpfs)");
    let work = stack.scratch.workdir();
    secret_project(&stack, &rig, &work, shm.path(), "s3cr3t-pr-1").await;
    // Someone else's directory where the project's secret files go: root's, 0700, on the tmpfs.
    let dir = shm.path().join(&p);
    let foreign = [
        "notes.txt",
        "web/foreign.txt",
        "web/db_password.0123456789abcdef",
        "data/db.bin",
    ];
    for name in foreign {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, format!("not the agent's: {name}")).unwrap();
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let (run, stack, rig) = stack.sync(rig).await;
    run.expect(0);
    rig.put(&secret, "s3cr3t-pr-2", ParameterType::SecureString)
        .await;
    let (run, stack, rig) = stack.sync(rig).await;
    run.assert_free_of(&["s3cr3t-pr"]);
    run.expect(0);
    for name in foreign {
        assert_eq!(
            std::fs::read_to_string(dir.join(name)).ok(),
            Some(format!("not the agent's: {name}")),
            "{name} was removed"
        );
    }
    let web = stack.container("web");
    let read = || docker(&["exec", &web, "cat", "/run/secrets/db_password"]);
    assert_same!(read(), "s3cr3t-pr-2", "the container's secret file");

    // The directory the agent makes (after a host restart emptied the tmpfs): its own old file
    // goes, what another process put there stays.
    std::fs::remove_dir_all(&dir).unwrap();
    rig.put(&secret, "s3cr3t-pr-3", ParameterType::SecureString)
        .await;
    let (run, stack, rig) = stack.sync(rig).await;
    run.expect(0);
    let mine = files_under(&dir);
    std::fs::write(dir.join("web/notes.txt"), "not the agent's").unwrap();
    std::fs::write(dir.join("README"), "not the agent's").unwrap();
    rig.put(&secret, "s3cr3t-pr-4", ParameterType::SecureString)
        .await;
    let (run, stack, _rig) = stack.sync(rig).await;
    run.expect(0);
    assert_same!(read(), "s3cr3t-pr-4", "the container's secret file");
    let now = files_under(&dir);
    let old: Vec<&PathBuf> = mine
        .iter()
        .filter(|f| f.starts_with(dir.join("web")))
        .collect();
    assert_eq!(old.len(), 1, "{mine:?}");
    assert!(!now.contains(old[0]), "the old secret file went: {now:?}");
    assert!(now.contains(&dir.join("web/notes.txt")) && now.contains(&dir.join("README")));
    drop(stack);
}
