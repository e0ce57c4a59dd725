//! Registry mirrors against the rig: a compose file that names Docker Hub images (`name:tag`,
//! `docker.io/user/repo:tag`) with a `mirror_of: docker.io` entry for the rig's registry, under a
//! prefix, as an ECR pull through cache serves them. The images are pulled from the mirror and
//! run from it; the engine is never asked for Docker Hub (every image create the agent sends is
//! recorded at the engine's socket); `plan` and `status` name the images as written, via the
//! mirror; a release pins the image under its written name and runs it by digest through the
//! mirror.

use std::path::Path;

use crate::common::docker_proxy::DockerProxy;
use crate::common::stack::{docker, inspect, push_as, Stack};
use crate::common::Rig;

/// Makes the config's registry (the entry `Stack` writes) a mirror of Docker Hub under `prefix`.
fn mirror_docker_hub(config: &Path, prefix: &str) {
    let text = std::fs::read_to_string(config).unwrap();
    let entry = text
        .lines()
        .find(|l| l.trim_start().starts_with("password: { parameter: /kt/"))
        .unwrap_or_else(|| panic!("no registry entry in {text}"));
    let text = text.replacen(
        &format!("{entry}\n"),
        &format!("{entry}\n    mirror_of: docker.io\n    prefix: {prefix}\n"),
        1,
    );
    std::fs::write(config, text).unwrap();
}

/// `%XX` decoded.
fn decode(text: &str) -> String {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match std::str::from_utf8(bytes.get(i + 1..i + 3).unwrap_or_default())
            .ok()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            Some(byte) if bytes[i] == b'%' => {
                out.push(byte);
                i += 3;
            }
            _ => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

/// The images the agent asked the engine to pull (`fromImage:tag`), in order.
fn pulls_asked(proxy: &DockerProxy) -> Vec<String> {
    proxy
        .changes()
        .iter()
        .filter_map(|c| c.strip_prefix("POST ")?.split_once("/images/create?"))
        .map(|(_, query)| {
            let field = |name: &str| {
                query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                    .map(decode)
                    .unwrap_or_default()
            };
            format!("{}:{}", field("fromImage"), field("tag"))
        })
        .collect()
}

/// Every local image's repository names (`docker images`), to see that none is Docker Hub's.
fn local_repositories() -> Vec<String> {
    docker(&["images", "--format", "{{.Repository}}"])
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn docker_hub_images_are_pulled_and_run_through_the_mirror_alone() {
    let rig = Rig::get();
    let stack = Stack::new(&rig, "mirror").await;
    let registry = stack.registry.clone();
    let n = fastrand::u32(..) % 1_000_000;
    let prefix = format!("hub{n}");
    // Where a pull through cache keeps Docker Hub's `ktofficial{n}:1` (an official image: under
    // `library/`) and `kt{n}/web:2` (a user's).
    let mirrored = format!("{registry}/{prefix}");
    let official = push_as(
        &registry,
        "tester/web:1",
        &format!("{prefix}/library/ktofficial{n}:1"),
    );
    let user = push_as(&registry, "tester/web:2", &format!("{prefix}/kt{n}/web:2"));
    stack.env(&rig, "GREETING=hello\n").await;
    stack.compose(
        &rig,
        &format!(
            "services:\n  official:\n    image: ktofficial{n}:1\n  user:\n    image: docker.io/kt{n}/web:2\n"
        ),
        "",
    );
    mirror_docker_hub(&stack.scratch.path("etc/agent.yaml"), &prefix);

    // The plan names each image as written, via the mirror.
    let plan = stack.scratch.agent(&rig, &["plan"]);
    plan.expect(0);
    for image in [format!("ktofficial{n}:1"), format!("kt{n}/web:2")] {
        assert!(
            plan.stdout
                .contains(&format!("image {image} via {mirrored}: pull")),
            "{}",
            plan.stdout
        );
    }

    let proxy = DockerProxy::start(stack.scratch.dir.path());
    let host = proxy.host.clone();
    let (run, stack, rig) = stack.sync_on(rig, host).await;
    run.expect(0);

    // Only the mirror was asked for, with the tags as written.
    let mut asked = pulls_asked(&proxy);
    asked.sort();
    assert_eq!(
        asked,
        vec![
            format!("{mirrored}/kt{n}/web:2"),
            format!("{mirrored}/library/ktofficial{n}:1"),
        ],
        "{:?}",
        proxy.changes()
    );
    // The containers run the mirror's images: their config, and the images' digests.
    for (service, image, digest) in [
        (
            "official",
            format!("{mirrored}/library/ktofficial{n}:1"),
            &official,
        ),
        ("user", format!("{mirrored}/kt{n}/web:2"), &user),
    ] {
        let container = inspect(&stack.container(service)).expect("the container");
        assert_eq!(container["Config"]["Image"], image.as_str(), "{service}");
        let repo_digests = docker(&["image", "inspect", "-f", "{{json .RepoDigests}}", &image]);
        let repo = image.rsplit_once(':').unwrap().0;
        // The mirror's name for it, and no Docker Hub name (other names of the rig's registry
        // may share the image: tests push the same content under several).
        let repo_digests: Vec<String> = serde_json::from_str(&repo_digests).unwrap();
        assert!(
            repo_digests.contains(&format!("{repo}@{digest}"))
                && repo_digests.iter().all(|d| {
                    // Some registry's name (a host with a port, as every rig's is; another
                    // rig's registry on this engine may share the content), never Docker Hub's.
                    let host = d.split('/').next().unwrap_or_default();
                    host.starts_with("127.0.0.1:") && d.contains('/')
                }),
            "{service}: {repo_digests:?}"
        );
    }
    let repositories = local_repositories();
    assert!(
        repositories
            .iter()
            .all(|r| !r.contains(&format!("ktofficial{n}")) || r.starts_with(&mirrored))
            && repositories
                .iter()
                .all(|r| !r.contains(&format!("kt{n}/")) || r.starts_with(&mirrored)),
        "an image named as Docker Hub's: {repositories:?}"
    );

    // `status` shows what runs as the compose file names it, via the mirror.
    let status = stack.scratch.agent(&rig, &["status"]);
    status.expect(0);
    assert!(
        status
            .stdout
            .contains(&format!("ktofficial{n}:1 via {mirrored}")),
        "{}",
        status.stdout
    );
    for image in [
        format!("{mirrored}/library/ktofficial{n}:1"),
        format!("{mirrored}/kt{n}/web:2"),
    ] {
        docker(&["rmi", "-f", &image]);
    }
}

/// A mirror that does not answer: the sync fails naming the mirror's image, and Docker Hub is not
/// tried instead.
#[tokio::test(flavor = "multi_thread")]
async fn a_mirror_that_is_down_is_not_bypassed() {
    let rig = Rig::get();
    let stack = Stack::new(&rig, "mirrordown").await;
    let n = fastrand::u32(..) % 1_000_000;
    stack.env(&rig, "GREETING=hello\n").await;
    stack.compose(
        &rig,
        &format!("services:\n  web:\n    image: ktdown{n}:1\n"),
        "  pull_timeout: 20s\n  pull_stall_timeout: 5s\n",
    );
    // The same entry, moved to a port where nothing listens.
    let config = stack.scratch.path("etc/agent.yaml");
    let text = std::fs::read_to_string(&config).unwrap();
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let text = text.replace(
        &format!("server: {}", stack.registry),
        &format!("server: 127.0.0.1:{closed}"),
    );
    std::fs::write(&config, text).unwrap();
    mirror_docker_hub(&config, "hub");

    let proxy = DockerProxy::start(stack.scratch.dir.path());
    let host = proxy.host.clone();
    let (run, stack, _rig) = stack.sync_on(rig, host).await;
    assert_ne!(run.status, 0, "{}", run.all());
    let mirror_image = format!("127.0.0.1:{closed}/hub/library/ktdown{n}");
    assert!(run.stderr.contains(&mirror_image), "{}", run.stderr);
    let asked = pulls_asked(&proxy);
    assert!(
        !asked.is_empty() && asked.iter().all(|a| a.starts_with(&mirror_image)),
        "{asked:?}"
    );
    assert!(inspect(&stack.container("web")).is_none(), "nothing runs");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_release_pins_the_written_name_and_runs_it_by_digest_through_the_mirror() {
    let rig = Rig::get();
    let stack = Stack::new(&rig, "mirrorrelease").await;
    let registry = stack.registry.clone();
    let n = fastrand::u32(..) % 1_000_000;
    let prefix = format!("hub{n}");
    let mirrored = format!("{registry}/{prefix}/library/ktrel{n}");
    let bucket = rig.bucket("mirror-release", true).await;
    stack.env(&rig, "GREETING=hello\n").await;
    stack.compose(
        &rig,
        &format!("services:\n  web:\n    image: ktrel{n}:live\n"),
        &format!("release:\n  store: s3://{bucket}/orange/\nlifecycle:\n  hook: off\n"),
    );
    mirror_docker_hub(&stack.scratch.path("etc/agent.yaml"), &prefix);

    let first = push_as(
        &registry,
        "tester/web:1",
        &format!("{prefix}/library/ktrel{n}:live"),
    );
    let created = stack
        .scratch
        .agent(&rig, &["release", "create", "--note", "mirrored"]);
    created.expect(0);
    let id = created.stdout.trim().to_string();
    // Pinned under the name the compose file gives, at the digest the mirror serves.
    let show = stack.scratch.agent(&rig, &["release", "show", &id]);
    show.expect(0);
    assert!(
        show.stdout
            .contains(&format!("image ktrel{n}:live: {first}")),
        "{}",
        show.stdout
    );

    // The tag moves on the mirror; the release still runs what it pinned, through the mirror.
    let second = push_as(
        &registry,
        "tester/web:2",
        &format!("{prefix}/library/ktrel{n}:live"),
    );
    assert_ne!(first, second, "the tag moved");
    let proxy = DockerProxy::start(stack.scratch.dir.path());
    let host = proxy.host.clone();
    let stack = tokio::task::spawn_blocking(move || {
        stack
            .scratch
            .agent_with(&rig, &["sync", "--release", &id], &[("DOCKER_HOST", &host)])
            .expect(0);
        stack
    })
    .await
    .unwrap();
    let container = inspect(&stack.container("web")).expect("the web container");
    assert_eq!(
        container["Config"]["Image"],
        format!("{mirrored}@{first}").as_str()
    );
    assert_eq!(
        pulls_asked(&proxy),
        vec![format!("{mirrored}:{first}")],
        "pulled by digest, from the mirror alone"
    );
    docker(&["rmi", "-f", &format!("{mirrored}@{first}")]);
}
