//! Which file each service secret gets (content, owner, mode, name), and writing and pruning
//! them on a tmpfs.

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use super::*;

const COMPOSE: &str = "\
services:
  api:
    image: api:1
    user: \"1000:2000\"
    secrets:
      - db_password
      - source: tls_key
        target: /etc/api/key.pem
        mode: 0440
  web:
    image: web:1
    secrets:
      - source: db_password
        target: password
        uid: \"33\"
  named:
    image: web:1
    user: app
    secrets: [db_password]
  plain:
    image: web:1
secrets:
  db_password:
    environment: DB_PASSWORD
  tls_key:
    file: ./tls/key.pem
";

struct Case {
    dir: tempfile::TempDir,
    project: Project,
}

fn case(compose: &str) -> Case {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("tls")).unwrap();
    std::fs::write(dir.path().join("tls/key.pem"), "-----KEY-----\n").unwrap();
    let file = dir.path().join("docker-compose.yml");
    let project = crate::compose::from_str(compose, &file, "orange", &|_| None).unwrap();
    Case { dir, project }
}

fn variables(values: &[(&str, &str)]) -> impl Fn(&str) -> Option<Secret> {
    let map: BTreeMap<String, String> = values
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name: &str| map.get(name).map(Secret::new)
}

fn by_service(project: &Project) -> BTreeMap<String, Vec<(String, PathBuf)>> {
    project
        .services
        .values()
        .map(|s| {
            let files = s
                .secrets
                .iter()
                .map(|x| (x.target.clone(), x.host.clone().unwrap()))
                .collect();
            (s.name.clone(), files)
        })
        .collect()
}

#[test]
fn each_service_secret_gets_its_file_owner_and_mode() {
    let mut c = case(COMPOSE);
    let dir = Path::new("/run/kicky-agent/secrets/orange");
    let vars = variables(&[("DB_PASSWORD", "pw-1")]);
    let files = prepare(&mut c.project, dir, &[7; 32], &vars, None).unwrap();
    let seen: Vec<(String, String, u32, u32, u32)> = files
        .iter()
        .map(|f| {
            let rel = f.path.strip_prefix(dir).unwrap().display().to_string();
            let (name, _id) = rel.rsplit_once('.').unwrap();
            (
                name.to_string(),
                f.content.expose().to_string(),
                f.uid,
                f.gid,
                f.mode,
            )
        })
        .collect();
    let want = [
        ("api/db_password", "pw-1", 1000, 2000, 0o400),
        ("api/key.pem", "-----KEY-----\n", 1000, 2000, 0o440),
        ("web/password", "pw-1", 33, 0, 0o400),
        // A user by name: its id is the image's to know, so the file is readable by all.
        ("named/db_password", "pw-1", 0, 0, 0o444),
    ];
    let want: Vec<(String, String, u32, u32, u32)> = want
        .iter()
        .map(|(n, c, u, g, m)| (n.to_string(), c.to_string(), *u, *g, *m))
        .collect();
    assert_eq!(seen, want);
    let targets: Vec<String> = c.project.services["api"]
        .secrets
        .iter()
        .map(|s| s.target.clone())
        .collect();
    assert_eq!(targets, ["/run/secrets/db_password", "/etc/api/key.pem"]);
    assert!(c.project.services["plain"].secrets.is_empty());
}

/// The same content gives the same name (a host restart recreates nothing); a new value gives a
/// new name to the services that use it, and only to them; the name says nothing about the
/// value without the key.
#[test]
fn names_follow_the_content_and_the_key() {
    let dir = Path::new("/s");
    let name_of = |key: &[u8], value: &str| {
        let mut c = case(COMPOSE);
        prepare(
            &mut c.project,
            dir,
            key,
            &variables(&[("DB_PASSWORD", value)]),
            None,
        )
        .unwrap();
        by_service(&c.project)
    };
    let first = name_of(&[1; 32], "pw-1");
    assert_eq!(first, name_of(&[1; 32], "pw-1"));
    let changed = name_of(&[1; 32], "pw-2");
    assert_ne!(first["web"], changed["web"]);
    assert_ne!(first["api"][0], changed["api"][0]);
    assert_eq!(
        first["api"][1], changed["api"][1],
        "the key file did not change"
    );
    assert_ne!(first["web"], name_of(&[2; 32], "pw-1")["web"]);
}

#[test]
fn a_source_that_cannot_be_read_names_the_secret() {
    let mut c = case(COMPOSE);
    let err = prepare(
        &mut c.project,
        Path::new("/s"),
        &[0; 32],
        &variables(&[]),
        None,
    )
    .unwrap_err();
    assert_eq!(crate::error::exit_status(&err), 2);
    assert!(
        err.to_string()
            .contains("secret db_password: variable DB_PASSWORD is not set"),
        "{err}"
    );

    let mut c = case(COMPOSE);
    std::fs::remove_file(c.dir.path().join("tls/key.pem")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", c.dir.path().join("tls/key.pem")).unwrap();
    let vars = variables(&[("DB_PASSWORD", "x")]);
    let err = prepare(&mut c.project, Path::new("/s"), &[0; 32], &vars, None).unwrap_err();
    assert!(
        format!("{err:#}").contains("is not a regular file"),
        "a link is not followed: {err:#}"
    );
}

/// Written on a tmpfs with the owner and mode asked, once; a directory that is not a tmpfs is
/// refused before anything is written; pruning keeps only what is asked, never following links.
#[test]
fn files_are_written_on_a_tmpfs_only_and_pruned() {
    let shm = tempfile::tempdir_in("/dev/shm").expect("/dev/shm (a tmpfs)");
    let dir = shm.path().join("orange");
    let mut c = case(COMPOSE);
    let vars = variables(&[("DB_PASSWORD", "pw-1")]);
    let files = prepare(&mut c.project, &dir, &[3; 32], &vars, None).unwrap();
    write(&dir, &files).unwrap();
    for f in &files {
        let meta = std::fs::symlink_metadata(&f.path).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid(), meta.mode() & 0o7777),
            (f.uid, f.gid, f.mode)
        );
        assert_eq!(
            std::fs::read_to_string(&f.path).unwrap(),
            f.content.expose()
        );
    }
    assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o7777, 0o700);
    let inode = std::fs::metadata(&files[0].path).unwrap().ino();
    write(&dir, &files).unwrap();
    assert_eq!(std::fs::metadata(&files[0].path).unwrap().ino(), inode);

    let on_disk = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
    let kind = nix::sys::statfs::statfs(on_disk.path())
        .unwrap()
        .filesystem_type();
    assert!(
        kind != nix::sys::statfs::TMPFS_MAGIC,
        "the crate is on a tmpfs"
    );
    let err = write(&on_disk.path().join("orange"), &files).unwrap_err();
    assert!(err.to_string().contains("is not on a tmpfs"), "{err}");
    assert_eq!(crate::error::exit_status(&err), 2);
    assert!(std::fs::read_dir(on_disk.path().join("orange"))
        .unwrap()
        .next()
        .is_none());

    // A link of the agent's own name is not a file it wrote: neither it nor what it points to goes.
    let victim = shm.path().join("victim");
    std::fs::write(&victim, "keep me").unwrap();
    let link = dir.join("api/link.0123456789abcdef");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let keep: BTreeSet<PathBuf> = files[..1].iter().map(|f| f.path.clone()).collect();
    prune(&dir, &keep);
    assert!(files[0].path.exists());
    assert!(!files[1].path.exists() && !files[2].path.exists());
    assert!(!dir.join("web").exists(), "an emptied directory is removed");
    assert!(std::fs::symlink_metadata(&link).is_ok());
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
}

/// The prune removes only what the agent made: in the directory it made (with its marker), only
/// regular files of its own names that no container mounts; from a directory that was there
/// before it (with something in it, so no marker), from a directory others may read, or one off
/// a tmpfs, nothing at all. Nothing is removed recursively.
#[test]
fn the_prune_removes_only_what_the_agent_made() {
    let shm = tempfile::tempdir_in("/dev/shm").expect("/dev/shm (a tmpfs)");
    let foreign = [
        "README",
        "web/notes.txt",
        "web/password",
        "web/password.0123456789ABCDEF",
        "web/.password.tmp",
        "web/deep/password.0123456789abcdef",
    ];
    let put = |dir: &Path, names: &[&str]| {
        for name in names {
            let path = dir.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, "not the agent's").unwrap();
        }
    };
    let mut c = case(COMPOSE);
    let vars = variables(&[("DB_PASSWORD", "pw-1")]);

    // The agent's own directory: its stale files go, nothing else.
    let own = shm.path().join("own");
    let files = prepare(&mut c.project, &own, &[3; 32], &vars, None).unwrap();
    write(&own, &files).unwrap();
    assert!(
        own.join(MARKER).is_file(),
        "the agent marks the directory it makes"
    );
    put(&own, &foreign);
    let stale = own.join("web/password.fedcba9876543210");
    let stale_temp = own.join("web/.password.fedcba9876543210.Ab12Cd.tmp");
    put(
        &own,
        &[stale.to_str().unwrap(), stale_temp.to_str().unwrap()],
    );
    let keep: BTreeSet<PathBuf> = files.iter().map(|f| f.path.clone()).collect();
    prune(&own, &keep);
    assert!(
        !stale.exists() && !stale_temp.exists(),
        "its own stale files go"
    );
    for name in foreign.iter().chain(&[MARKER]) {
        assert!(own.join(name).exists(), "{name} stays");
    }
    assert!(
        files.iter().all(|f| f.path.exists()),
        "what is mounted stays"
    );

    // Someone else's directory, there before the agent: written to, never pruned.
    let theirs = shm.path().join("theirs");
    put(&theirs, &foreign);
    std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o700)).unwrap();
    let files = prepare(&mut c.project, &theirs, &[3; 32], &vars, None).unwrap();
    write(&theirs, &files).unwrap();
    assert!(
        !theirs.join(MARKER).exists(),
        "no marker on a directory it did not make"
    );
    put(&theirs, &["web/password.fedcba9876543210"]);
    prune(&theirs, &BTreeSet::new());
    for name in foreign.iter().chain(&["web/password.fedcba9876543210"]) {
        assert!(theirs.join(name).exists(), "{name} stays");
    }
    assert!(files.iter().all(|f| f.path.exists()));

    // The agent's directory, opened to others afterwards: nothing goes, and no file is written.
    std::fs::set_permissions(&own, std::fs::Permissions::from_mode(0o755)).unwrap();
    put(&own, &[stale.to_str().unwrap()]);
    prune(&own, &keep);
    assert!(stale.exists());
    let err = write(&own, &files).unwrap_err();
    assert!(err.to_string().contains("mode 0755"), "{err}");
}

/// The names the agent gives secret files, and their temp files: the only names it prunes.
#[test]
fn the_agents_own_names() {
    let cases = [
        ("password.0123456789abcdef", true),
        ("key.pem.0123456789abcdef", true),
        (".password.0123456789abcdef.Ab12Cd.tmp", true),
        (".key.pem.0123456789abcdef.000000.tmp", true),
        ("password", false),
        ("password.0123456789ABCDEF", false),
        ("password.0123456789abcde", false),
        ("password.0123456789abcdef0", false),
        (".0123456789abcdef", false),
        ("0123456789abcdef", false),
        (".password.0123456789abcdef.tmp", false),
        (".password.0123456789abcdef.Ab12C.tmp", false),
        ("password.0123456789abcdef.tmp", false),
        (".kicky-agent-secrets", false),
        ("notes.txt", false),
    ];
    for (name, want) in cases {
        assert_eq!(is_secret_file_name(OsStr::new(name)), want, "{name}");
    }
}

/// A release held after it failed is applied from what is on disk: a variable of an
/// `env_file: false` source is not kept anywhere, so its service keeps the file of the last good
/// release while that file is still there; without it, the error stands.
#[test]
fn a_held_release_keeps_the_last_good_files() {
    let shm = tempfile::tempdir_in("/dev/shm").expect("/dev/shm (a tmpfs)");
    let dir = shm.path().join("orange");
    let mut good = case(COMPOSE);
    let vars = variables(&[("DB_PASSWORD", "pw-1")]);
    let files = prepare(&mut good.project, &dir, &[3; 32], &vars, None).unwrap();
    write(&dir, &files).unwrap();
    let kept = mounted(&good.project);

    let mut held = case(COMPOSE);
    let files = prepare(
        &mut held.project,
        &dir,
        &[3; 32],
        &variables(&[]),
        Some(&kept),
    )
    .unwrap();
    // Only the file-sourced secret is made again; the others are the files already there.
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].content.expose(), "-----KEY-----\n");
    assert_eq!(mounted(&held.project), kept);

    std::fs::remove_dir_all(&dir).unwrap();
    let mut gone = case(COMPOSE);
    let err = prepare(
        &mut gone.project,
        &dir,
        &[3; 32],
        &variables(&[]),
        Some(&kept),
    )
    .unwrap_err();
    assert!(err.to_string().contains("DB_PASSWORD is not set"), "{err}");
}
