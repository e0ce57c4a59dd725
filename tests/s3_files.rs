//! `files:` from moto's S3: bytes and modes, conditional fetches that transfer no body, restores
//! of hand-edited files, confinement, all-or-none failures, integrity, streaming of large
//! objects, pinned versions and owners.

use crate::common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::proxy::{Fault, Proxy};
use common::{inode_of, mode_of, Rig, Scratch};

fn seed_file(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/seed-stack")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One MiB that compresses badly, so a transfer of it cannot hide in the headers.
fn blob() -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(42);
    (0..1 << 20).map(|_| rng.u8(..)).collect()
}

fn files_config(endpoint: &str, bucket: &str, extra: &str) -> String {
    format!(
        "project: orange\nworkdir: {{workdir}}\naws:\n  endpoint_url: {endpoint}\n  s3_force_path_style: true\n\
         files:\n\
         \x20 - source: s3://{bucket}/docker-compose.yml\n    path: docker-compose.yml\n\
         \x20 - source: s3://{bucket}/promtail-config.yml\n    path: promtail-config.yml\n    mode: \"0644\"\n\
         \x20 - source: s3://{bucket}/deploy/conf/app.yml\n    path: conf/nested/app.yml\n    mode: \"0640\"\n\
         \x20 - source: s3://{bucket}/blob.bin\n    path: data/blob.bin\n\
         {extra}"
    )
}

/// A config with one file, `s3://{bucket}/{key}` at `{path}`, and `extra` lines under it.
fn one_file(endpoint: &str, bucket: &str, key: &str, path: &str, extra: &str) -> String {
    format!(
        "project: orange\nworkdir: {{workdir}}\naws:\n  endpoint_url: {endpoint}\n  s3_force_path_style: true\n\
         files:\n  - source: s3://{bucket}/{key}\n    path: {path}\n{extra}"
    )
}

async fn seed_bucket(rig: &Rig, test: &str) -> String {
    let bucket = rig.bucket(test, false).await;
    rig.put_object(
        &bucket,
        "docker-compose.yml",
        seed_file("docker-compose.yml"),
    )
    .await;
    rig.put_object(
        &bucket,
        "promtail-config.yml",
        seed_file("promtail-config.yml"),
    )
    .await;
    rig.put_object(
        &bucket,
        "deploy/conf/app.yml",
        b"server:\n  port: 8080\n".to_vec(),
    )
    .await;
    rig.put_object(&bucket, "blob.bin", blob()).await;
    bucket
}

async fn agent(s: Scratch, rig: Rig, args: &'static [&'static str]) -> (common::Run, Scratch, Rig) {
    tokio::task::spawn_blocking(move || (s.agent(&rig, args), s, rig))
        .await
        .unwrap()
}

#[tokio::test]
async fn files_arrive_with_their_bytes_and_modes_and_a_second_sync_transfers_no_body() {
    let rig = Rig::get();
    let bucket = seed_bucket(&rig, "fetch").await;
    let proxy = Proxy::start(&rig.moto_url, Fault::None).await;
    let s = Scratch::new();
    s.config(&rig, &files_config(&proxy.url, &bucket, ""));

    let (run, s, rig) = agent(s, rig, &["sync"]).await;
    run.expect(0);
    assert_eq!(
        run.stdout.matches(": create (from s3://").count(),
        4,
        "{}",
        run.stdout
    );
    let w = s.workdir();
    assert_eq!(
        std::fs::read(w.join("docker-compose.yml")).unwrap(),
        seed_file("docker-compose.yml")
    );
    assert_eq!(
        std::fs::read(w.join("promtail-config.yml")).unwrap(),
        seed_file("promtail-config.yml")
    );
    assert_eq!(
        std::fs::read(w.join("conf/nested/app.yml")).unwrap(),
        b"server:\n  port: 8080\n"
    );
    assert_eq!(std::fs::read(w.join("data/blob.bin")).unwrap(), blob());
    assert_eq!(mode_of(&w.join("docker-compose.yml")), 0o644);
    assert_eq!(mode_of(&w.join("conf/nested/app.yml")), 0o640);
    let inodes: Vec<_> = ["docker-compose.yml", "data/blob.bin"]
        .iter()
        .map(|p| inode_of(&w.join(p)))
        .collect();

    let before = proxy.bytes_down();
    let (run, s, rig) = agent(s, rig, &["sync"]).await;
    run.expect(0);
    assert_eq!(
        run.stdout.matches(": unchanged (from s3://").count(),
        4,
        "{}",
        run.stdout
    );
    let transferred = proxy.bytes_down() - before;
    assert!(
        transferred < 16 * 1024,
        "a no-change sync moved {transferred} bytes from S3"
    );
    let after: Vec<_> = ["docker-compose.yml", "data/blob.bin"]
        .iter()
        .map(|p| inode_of(&w.join(p)))
        .collect();
    assert_eq!(inodes, after, "unchanged files are not rewritten");

    let (status, _s, rig) = agent(s, rig, &["status", "--json"]).await;
    status.expect(0);
    let v: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    let head = rig
        .s3()
        .head_object()
        .bucket(&bucket)
        .key("blob.bin")
        .send()
        .await
        .unwrap();
    let record = &v["files"][w.join("data/blob.bin").display().to_string()];
    assert_eq!(record["etag"].as_str(), head.e_tag());
    assert_eq!(record["source"], format!("s3://{bucket}/blob.bin"));
    assert!(record["fetched_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(v["last_sync"]["ok"], true);
}

#[tokio::test]
async fn changes_in_s3_and_hand_edits_are_planned_and_applied() {
    let rig = Rig::get();
    let bucket = seed_bucket(&rig, "changes").await;
    let s = Scratch::new();
    s.config(&rig, &files_config(&rig.moto_url, &bucket, ""));
    let (run, s, rig) = agent(s, rig, &["sync"]).await;
    run.expect(0);
    let w = s.workdir();

    rig.put_object(&bucket, "docker-compose.yml", b"services: {}\n".to_vec())
        .await;
    std::fs::write(w.join("promtail-config.yml"), b"edited by hand\n").unwrap();
    std::fs::remove_file(w.join("conf/nested/app.yml")).unwrap();

    let (plan, s, rig) = agent(s, rig, &["plan"]).await;
    plan.expect(0);
    for line in [
        format!("file {}: update", w.join("docker-compose.yml").display()),
        format!("file {}: restore", w.join("promtail-config.yml").display()),
        format!("file {}: restore", w.join("conf/nested/app.yml").display()),
        format!("file {}: unchanged", w.join("data/blob.bin").display()),
    ] {
        assert!(
            plan.stdout.contains(&line),
            "missing {line:?} in:\n{}",
            plan.stdout
        );
    }
    assert_eq!(
        std::fs::read(w.join("promtail-config.yml")).unwrap(),
        b"edited by hand\n",
        "plan changes nothing"
    );

    let (run, _s, _rig) = agent(s, rig, &["sync"]).await;
    run.expect(0);
    assert_eq!(
        std::fs::read(w.join("docker-compose.yml")).unwrap(),
        b"services: {}\n"
    );
    assert_eq!(
        std::fs::read(w.join("promtail-config.yml")).unwrap(),
        seed_file("promtail-config.yml")
    );
    assert_eq!(
        std::fs::read(w.join("conf/nested/app.yml")).unwrap(),
        b"server:\n  port: 8080\n"
    );
}

#[tokio::test]
async fn paths_that_escape_workdir_are_refused_with_exit_2() {
    let rig = Rig::get();
    let s = Scratch::new();
    let outside = s.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::create_dir_all(s.workdir()).unwrap();
    std::os::unix::fs::symlink(&outside, s.workdir().join("linked")).unwrap();
    let cases = [
        ("../escape.yml", "contains `..`"),
        ("conf/../../escape.yml", "contains `..`"),
        (
            &*outside.join("abs.yml").display().to_string(),
            "files_allowed_dirs",
        ),
        ("linked/escape.yml", "through a symlink"),
    ];
    for (path, why) in cases {
        let config = s.config(
            &rig,
            &format!(
                "project: orange\nworkdir: {{workdir}}\nfiles:\n  - source: s3://bucket/a.yml\n    path: {path}\n"
            ),
        );
        for command in ["validate", "sync"] {
            let run = s.agent(&rig, &[command]);
            run.expect(2);
            let at = format!("{}:5:5: files[0].path: ", config.display());
            assert!(
                run.stderr.contains(&at) && run.stderr.contains(why),
                "{path}: {}",
                run.stderr
            );
        }
    }
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing was written outside"
    );

    // An absolute path is fine once its directory is allowed.
    let bucket = rig.bucket("allowed", false).await;
    rig.put_object(&bucket, "a.yml", b"a: 1\n".to_vec()).await;
    s.config(
        &rig,
        &one_file(
            &rig.moto_url,
            &bucket,
            "a.yml",
            &outside.join("abs.yml").display().to_string(),
            &format!("files_allowed_dirs: [{}]\n", outside.display()),
        ),
    );
    s.agent(&rig, &["sync"]).expect(0);
    assert_eq!(std::fs::read(outside.join("abs.yml")).unwrap(), b"a: 1\n");
}

#[tokio::test]
async fn a_missing_object_fails_the_sync_and_no_file_is_replaced() {
    let rig = Rig::get();
    let bucket = seed_bucket(&rig, "missing").await;
    let s = Scratch::new();
    s.config(&rig, &files_config(&rig.moto_url, &bucket, ""));
    let (run, s, rig) = agent(s, rig, &["sync"]).await;
    run.expect(0);
    let w = s.workdir();
    let compose = w.join("docker-compose.yml");
    let before = (std::fs::read(&compose).unwrap(), inode_of(&compose));

    // One object changed, one missing: the changed one must not be written either.
    rig.put_object(
        &bucket,
        "docker-compose.yml",
        b"services: {changed: {}}\n".to_vec(),
    )
    .await;
    let extra = "  - source: s3://BUCKET/not-there.yml\n    path: not-there.yml\n"
        .replace("BUCKET", &bucket);
    s.config(&rig, &files_config(&rig.moto_url, &bucket, &extra));
    let (run, s, rig) = agent(s, rig, &["sync"]).await;
    run.expect(1);
    assert!(
        run.stderr
            .contains(&format!("failed to fetch s3://{bucket}/not-there.yml"))
            && run.stderr.contains("no such object"),
        "{}",
        run.stderr
    );
    assert_eq!(
        (std::fs::read(&compose).unwrap(), inode_of(&compose)),
        before
    );
    assert!(!w.join("not-there.yml").exists());
    let leftovers: Vec<PathBuf> = walk(&w)
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "temp files left behind: {leftovers:?}"
    );

    let (status, s, rig) = agent(s, rig, &["status"]).await;
    status.expect(1);
    assert!(
        status.stdout.contains("last sync: FAILED"),
        "{}",
        status.stdout
    );
    assert!(status.stdout.contains("not-there.yml"), "{}", status.stdout);

    // A missing bucket is named too.
    let extra = "  - source: s3://kt-no-such-bucket-0/x.yml\n    path: x.yml\n";
    s.config(&rig, &files_config(&rig.moto_url, &bucket, extra));
    let (run, _s, _rig) = agent(s, rig, &["sync"]).await;
    run.expect(1);
    assert!(
        run.stderr.contains("s3://kt-no-such-bucket-0/x.yml")
            && run.stderr.contains("no such bucket"),
        "{}",
        run.stderr
    );
    assert_eq!(
        (std::fs::read(&compose).unwrap(), inode_of(&compose)),
        before
    );
}

#[tokio::test]
async fn a_corrupted_body_is_rejected_and_never_written() {
    let rig = Rig::get();
    let bucket = rig.bucket("corrupt", false).await;
    rig.put_object(&bucket, "app.yml", b"the: original\n".to_vec())
        .await;
    let s = Scratch::new();
    s.config(
        &rig,
        &one_file(&rig.moto_url, &bucket, "app.yml", "app.yml", ""),
    );
    let (run, s, rig) = agent(s, rig, &["sync"]).await;
    run.expect(0);
    let before = std::fs::read(s.workdir().join("app.yml")).unwrap();

    rig.put_object(&bucket, "app.yml", b"the: update\n".to_vec())
        .await;
    let proxy = Proxy::start(&rig.moto_url, Fault::Corrupt).await;
    s.config(
        &rig,
        &one_file(&proxy.url, &bucket, "app.yml", "app.yml", ""),
    );
    let (run, s, _rig) = agent(s, rig, &["sync"]).await;
    run.expect(1);
    assert!(
        run.stderr.to_lowercase().contains("checksum"),
        "{}",
        run.stderr
    );
    assert_eq!(std::fs::read(s.workdir().join("app.yml")).unwrap(), before);
}

#[tokio::test]
async fn a_large_object_streams_through_bounded_memory() {
    const SIZE: usize = 256 << 20;
    let rig = Rig::get();
    let bucket = rig.bucket("large", false).await;
    let s = Scratch::new();
    let source = s.path("large.bin");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&source).unwrap());
        let mut rng = fastrand::Rng::with_seed(1);
        let mut block = vec![0u8; 1 << 20];
        for _ in 0..SIZE >> 20 {
            rng.fill(&mut block);
            f.write_all(&block).unwrap();
        }
    }
    let body = aws_sdk_s3::primitives::ByteStream::from_path(&source)
        .await
        .unwrap();
    rig.s3()
        .put_object()
        .bucket(&bucket)
        .key("large.bin")
        .body(body)
        .send()
        .await
        .expect("put the large object");
    s.config(
        &rig,
        &one_file(&rig.moto_url, &bucket, "large.bin", "large.bin", ""),
    );
    // GNU time reports the agent's peak resident memory.
    let (run, s, _rig) = tokio::task::spawn_blocking(move || {
        let time = format!("{}", s.path("time.out").display());
        let run = s.agent_via(&rig, &["/usr/bin/time", "-o", &time, "-f", "%M"], &["sync"]);
        (run, s, rig)
    })
    .await
    .unwrap();
    run.expect(0);
    let max_rss_kb: u64 = std::fs::read_to_string(s.path("time.out"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        max_rss_kb < 64 * 1024,
        "peak memory {max_rss_kb} KiB for a {} MiB object",
        SIZE >> 20
    );
    let target = s.workdir().join("large.bin");
    assert_eq!(std::fs::metadata(&target).unwrap().len(), SIZE as u64);
    assert!(
        files_equal(&source, &target),
        "the large object arrived altered"
    );
}

#[tokio::test]
async fn pinned_versions_and_owners_are_honoured() {
    let rig = Rig::get();
    let bucket = rig.bucket("pinned", true).await;
    let v1 = rig
        .put_object(&bucket, "app.yml", b"version: 1\n".to_vec())
        .await
        .expect("a version id");
    rig.put_object(&bucket, "app.yml", b"version: 2\n".to_vec())
        .await;
    let s = Scratch::new();
    let moto = rig.moto_url.clone();
    let config = |version: &str| {
        let extra = format!("    version_id: {version}\n    owner: nobody\n    group: nogroup\n    mode: \"0600\"\n");
        one_file(&moto, &bucket, "app.yml", "app.yml", &extra)
    };
    s.config(&rig, &config(&v1));
    let (run, s, rig) = agent(s, rig, &["sync"]).await;
    run.expect(0);
    let path = s.workdir().join("app.yml");
    assert_eq!(std::fs::read(&path).unwrap(), b"version: 1\n");
    let meta = std::fs::metadata(&path).unwrap();
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    assert_eq!(
        (meta.uid(), meta.mode() & 0o7777),
        (nobody.uid.as_raw(), 0o600)
    );

    let (status, s, rig) = agent(s, rig, &["status"]).await;
    status.expect(0);
    assert!(
        status.stdout.contains(&format!("version {v1}")),
        "{}",
        status.stdout
    );

    s.config(&rig, &config("no-such-version-id"));
    let (run, s, _rig) = agent(s, rig, &["sync"]).await;
    run.expect(1);
    assert!(
        run.stderr.contains(&format!("s3://{bucket}/app.yml")),
        "{}",
        run.stderr
    );
    assert_eq!(
        std::fs::read(s.workdir().join("app.yml")).unwrap(),
        b"version: 1\n"
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn files_equal(a: &Path, b: &Path) -> bool {
    use std::io::Read;
    let (mut fa, mut fb) = (
        std::fs::File::open(a).unwrap(),
        std::fs::File::open(b).unwrap(),
    );
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let na = fa.read(&mut ba).unwrap();
        let nb = fb
            .read_exact(&mut bb[..na])
            .map(|_| na)
            .unwrap_or(usize::MAX);
        if na != nb || ba[..na] != bb[..na] {
            return false;
        }
        if na == 0 {
            return fb.read(&mut bb).unwrap() == 0;
        }
    }
}

#[tokio::test]
async fn network_failures_are_retried_and_an_unreachable_s3_fails_naming_the_object() {
    let rig = Rig::get();
    let bucket = rig.bucket("network", false).await;
    rig.put_object(&bucket, "app.yml", b"app: 1\n".to_vec())
        .await;
    // No lifecycle hook: with every AWS endpoint unreachable, its lookup (asked again while
    // the network fails, as on an instance) would hold the second sync for its bound.
    let config = |endpoint: &str| {
        one_file(
            endpoint,
            &bucket,
            "app.yml",
            "app.yml",
            "lifecycle:\n  hook: off\n",
        )
    };
    let proxy = Proxy::start(&rig.moto_url, Fault::Drop(2)).await;
    let s = Scratch::new();
    s.config(&rig, &config(&proxy.url));
    let (run, s, rig) = agent(s, rig, &["sync"]).await;
    run.expect(0);
    assert!(
        proxy.connections() >= 3,
        "the dropped connections were retried"
    );
    assert_eq!(
        std::fs::read(s.workdir().join("app.yml")).unwrap(),
        b"app: 1\n"
    );

    // Nothing listens on this port any more.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    rig.put_object(&bucket, "app.yml", b"app: 2\n".to_vec())
        .await;
    s.config(&rig, &config(&closed));
    let (run, s, _rig) = agent(s, rig, &["sync"]).await;
    run.expect(1);
    assert!(
        run.stderr
            .contains(&format!("failed to fetch s3://{bucket}/app.yml"))
            && run.stderr.contains("could not reach"),
        "{}",
        run.stderr
    );
    assert_eq!(
        std::fs::read(s.workdir().join("app.yml")).unwrap(),
        b"app: 1\n"
    );
}
