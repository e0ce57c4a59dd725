//! `kicky-agent sync` converging real containers on the machine's Docker Engine, pulling from the
//! rig's registry with credentials from moto's SSM: healthy stacks, idempotence, recreating only
//! what changed, and failures that leave the previous stack serving.

use crate::common;

use std::process::Command;

use aws_sdk_ssm::types::ParameterType;
use common::stack::{docker, env_of, id_of, inspect, running_healthy, started_at, Stack};
use common::Rig;

const TWO_SERVICES: &str = "\
services:
  a:
    image: {registry}/tester/web:1
    environment:
      API_KEY: ${API_KEY}
  b:
    image: {registry}/tester/web:1
    environment:
      FIXED: \"1\"
    depends_on:
      a:
        condition: service_healthy
";

#[tokio::test]
async fn a_stack_comes_up_healthy_and_a_second_sync_touches_nothing() {
    let rig = Rig::get();
    let stack = Stack::new(&rig, "idem").await;
    stack.env(&rig, "API_KEY=key-one-5c5c\n").await;
    stack.compose(&rig, TWO_SERVICES, "");
    let (run, stack, rig) = stack.sync(rig).await;
    run.expect(0);
    run.assert_free_of(&["key-one-5c5c", "pw+/=?>"]);
    let (a, b) = (stack.container("a"), stack.container("b"));
    assert!(running_healthy(&a) && running_healthy(&b), "{}", run.all());
    assert_same!(
        env_of(&a).get("API_KEY").map(String::as_str),
        Some("key-one-5c5c")
    );
    let labels = inspect(&a).unwrap()["Config"]["Labels"].clone();
    assert_eq!(labels["com.docker.compose.project"], stack.project.as_str());
    assert_eq!(labels["com.docker.compose.service"], "a");
    assert_eq!(labels["com.docker.compose.oneoff"], "False");
    let network = format!("{}_default", stack.project);
    assert!(inspect(&a).unwrap()["NetworkSettings"]["Networks"]
        .get(&network)
        .is_some());
    let ids = (id_of(&a), id_of(&b));

    let (run, stack, rig) = stack.sync(rig).await;
    run.expect(0);
    assert!(
        run.stdout
            .contains(&format!("container {a} (service a): keep")),
        "{}",
        run.stdout
    );
    assert_eq!(
        (id_of(&a), id_of(&b)),
        ids,
        "a second sync must touch no container"
    );

    let (status, _stack, _rig) = stack.run(rig, &["status"]).await;
    status.expect(0);
    assert!(
        status
            .stdout
            .contains(&format!("{a} (service a): running, healthy")),
        "{}",
        status.stdout
    );
}

#[tokio::test]
async fn a_changed_parameter_recreates_only_the_services_that_use_it() {
    let rig = Rig::get();
    let stack = Stack::new(&rig, "changed").await;
    stack.env(&rig, "API_KEY=key-one-6d6d\n").await;
    stack.compose(&rig, TWO_SERVICES, "");
    let (run, stack, rig) = stack.sync(rig).await;
    run.expect(0);
    let (a, b) = (stack.container("a"), stack.container("b"));
    let (a_before, b_before) = (id_of(&a), id_of(&b));

    stack.env(&rig, "API_KEY=key-two-7e7e\n").await;
    let (plan, stack, rig) = stack.run(rig, &["plan"]).await;
    plan.expect(0);
    assert!(
        plan.stdout.contains(&format!(
            "container {a} (service a): recreate (environment changed)"
        )),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout
            .contains(&format!("container {b} (service b): keep")),
        "{}",
        plan.stdout
    );
    plan.assert_free_of(&["key-one-6d6d", "key-two-7e7e"]);
    assert_eq!(id_of(&a), a_before, "plan changes nothing");

    let (run, _stack, _rig) = stack.sync(rig).await;
    run.expect(0);
    run.assert_free_of(&["key-one-6d6d", "key-two-7e7e"]);
    assert_ne!(id_of(&a), a_before, "a uses the parameter: recreated");
    assert_eq!(id_of(&b), b_before, "b does not: kept");
    assert_same!(
        env_of(&a).get("API_KEY").map(String::as_str),
        Some("key-two-7e7e")
    );
    assert!(running_healthy(&a) && running_healthy(&b));
    // The previous container is gone once the new one is healthy.
    assert!(inspect(&format!("{a}-kicky-old")).is_none());
}

/// Brings up one healthy `web` service, then changes its image (pulled always, with a wrong
/// registry password when asked) and checks that the sync fails with `message` and the previous
/// container still serves.
async fn failed_change_leaves_the_previous_stack(
    test: &str,
    image: &str,
    wrong_password: bool,
    message: &[&str],
) {
    let rig = Rig::get();
    let stack = Stack::new(&rig, test).await;
    stack.env(&rig, "GREETING=hello\n").await;
    let compose = |image: &str| {
        format!(
            "services:\n  web:\n    image: {image}\n    pull_policy: always\n    environment:\n      GREETING: ${{GREETING}}\n"
        )
    };
    stack.compose(&rig, &compose("{registry}/tester/web:1"), "");
    let (run, stack, rig) = stack.sync(rig).await;
    run.expect(0);
    let web = stack.container("web");
    let before = id_of(&web);
    let started = started_at(&web);

    if wrong_password {
        rig.put(
            &format!("/kt/{}/registry", stack.project),
            "not-the-password",
            ParameterType::SecureString,
        )
        .await;
    }
    stack.compose(&rig, &compose(image), "");
    let (run, stack, _rig) = stack.sync(rig).await;
    run.expect(1);
    run.assert_free_of(&["pw+/=?>"]);
    for m in message {
        assert!(run.stderr.contains(m), "expected {m:?} in:\n{}", run.stderr);
    }
    assert_eq!(
        id_of(&web),
        before,
        "the previous container must be the one serving"
    );
    assert_eq!(
        started_at(&web),
        started,
        "the previous container served throughout: never stopped"
    );
    assert!(
        running_healthy(&web),
        "the previous container must run healthy"
    );
    let leftovers = docker(&[
        "ps",
        "-a",
        "--filter",
        &format!("name={web}-kicky"),
        "--format",
        "{{.Names}}",
    ]);
    assert!(leftovers.trim().is_empty(), "left behind: {leftovers}");
    drop(stack);
}

#[tokio::test]
async fn a_bad_tag_fails_the_pull_and_changes_nothing() {
    failed_change_leaves_the_previous_stack(
        "badtag",
        "{registry}/tester/web:no-such-tag",
        false,
        &[
            "failed to pull",
            "tester/web:no-such-tag",
            "manifest unknown",
        ],
    )
    .await;
}

#[tokio::test]
async fn a_wrong_password_fails_the_pull_and_changes_nothing() {
    failed_change_leaves_the_previous_stack(
        "wrongpw",
        "{registry}/tester/web:2",
        true,
        &["failed to pull", "tester/web:2", "unauthorized"],
    )
    .await;
}

#[tokio::test]
async fn a_registry_that_is_down_fails_the_pull_and_changes_nothing() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let image = format!("127.0.0.1:{closed}/tester/web:1");
    failed_change_leaves_the_previous_stack("regdown", &image, false, &["failed to pull", &image])
        .await;
}

#[tokio::test]
async fn an_image_that_never_gets_healthy_is_rolled_back() {
    failed_change_leaves_the_previous_stack(
        "unhealthy",
        "{registry}/tester/unhealthy:1",
        false,
        &[
            "service web",
            "unhealthy",
            "health: backend not ready",
            "rolled back: the previous containers of web run again",
        ],
    )
    .await;
}

#[tokio::test]
async fn an_image_that_exits_at_once_is_rolled_back() {
    failed_change_leaves_the_previous_stack(
        "crash",
        "{registry}/tester/crash:1",
        false,
        &[
            "service web",
            "exited with code 3",
            "rolled back: the previous containers of web run again",
        ],
    )
    .await;
}

#[tokio::test]
async fn ecr_tokens_from_the_instance_role_authenticate_pulls() {
    let rig = Rig::get();
    let stack = Stack::new(&rig, "ecr").await;
    stack.env(&rig, "GREETING=hello\n").await;
    // The rig's registry knows moto's ECR token (user AWS): the agent must get it from ECR.
    let compose =
        "services:\n  web:\n    image: {registry}/tester/web:2\n    pull_policy: always\n";
    stack.compose(&rig, compose, "");
    let p = &stack.project;
    stack.scratch.config(
        &rig,
        &format!(
            "project: {p}\nworkdir: {{workdir}}\naws:\n  endpoint_url: {{moto}}\n\
             compose:\n  file: docker-compose.yml\n  healthy_timeout: 30s\n\
             registries:\n  - server: {}\n    ecr: true\n",
            stack.registry
        ),
    );
    let (run, stack, _rig) = stack.sync(rig).await;
    run.expect(0);
    run.assert_free_of(&["123456789012-auth-token"]);
    assert!(running_healthy(&stack.container("web")));
}

#[tokio::test]
async fn prune_removes_the_images_the_project_no_longer_uses() {
    let rig = Rig::get();
    let stack = Stack::new(&rig, "prune").await;
    stack.env(&rig, "GREETING=hello\n").await;
    let old = format!("{}/tester/prune:1", stack.registry);
    docker(&["rmi", &old]);
    let compose = |tag: &str| format!("services:\n  web:\n    image: {{registry}}/tester/{tag}\n");
    stack.compose(&rig, &compose("prune:1"), "  prune: true\n");
    let (run, stack, rig) = stack.sync(rig).await;
    run.expect(0);
    assert!(inspect(&old).is_some(), "pulled");

    stack.compose(&rig, &compose("web:2"), "  prune: true\n");
    let (run, stack, _rig) = stack.sync(rig).await;
    run.expect(0);
    assert!(
        run.stdout.contains(&format!("image {old}: pruned")),
        "{}",
        run.stdout
    );
    assert!(
        inspect(&old).is_none(),
        "the image the project no longer uses is removed"
    );
    assert!(
        inspect(&format!("{}/tester/web:2", stack.registry)).is_some(),
        "the one it runs stays"
    );
}

/// The seed stack of docs/contract.md, unchanged, from S3, with its .env from one SecureString, as
/// `tests/demo` runs it. Its container names and ports are fixed: one user at a time.
#[tokio::test]
async fn the_seed_stack_comes_up_healthy_with_its_ssm_values_inside() {
    let _lock = seed_stack_lock();
    let rig = Rig::get();
    let stack = Stack::new(&rig, "seed").await;
    docker(&["rm", "-f", "orange", "promtail"]);
    let registry = stack.registry.clone();
    let env = format!(
        "DOCKERHUB_USERNAME={registry}/tester\nLOKI_URL=http://127.0.0.1:3100\nSERVER_SECRET='seed-secret-9f9f'\n"
    );
    stack.env(&rig, &env).await;
    let bucket = rig.bucket("seed", false).await;
    let fixtures =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/seed-stack");
    for file in ["docker-compose.yml", "promtail-config.yml"] {
        rig.put_object(&bucket, file, std::fs::read(fixtures.join(file)).unwrap())
            .await;
    }
    // grafana/promtail cannot be pulled here: the rig's stand-in takes its name.
    let config_dir = std::env::var("KICKY_RIG_DIR").unwrap() + "/docker-config";
    let pulled = Command::new("docker")
        .env("DOCKER_CONFIG", &config_dir)
        .args(["pull", "-q", &format!("{registry}/tester/promtail:1")])
        .output()
        .unwrap();
    assert!(pulled.status.success());
    docker(&[
        "tag",
        &format!("{registry}/tester/promtail:1"),
        "grafana/promtail:latest",
    ]);
    let p = &stack.project;
    stack.scratch.config(
        &rig,
        &format!(
            "project: {p}\nworkdir: {{workdir}}\naws:\n  endpoint_url: {{moto}}\n  s3_force_path_style: true\n\
             env:\n  parameters:\n    - name: /kt/{p}/env\n      format: dotenv\n\
             files:\n  - source: s3://{bucket}/docker-compose.yml\n    path: app/docker-compose.yml\n\
             \x20 - source: s3://{bucket}/promtail-config.yml\n    path: app/promtail-config.yml\n\
             compose:\n  file: app/docker-compose.yml\n  healthy_timeout: 60s\n\
             registries:\n  - server: {registry}\n    username: tester\n    password: {{ parameter: /kt/{p}/registry }}\n"
        ),
    );
    let (run, stack, rig) = stack.sync(rig).await;
    run.expect(0);
    run.assert_free_of(&["seed-secret-9f9f"]);
    assert!(
        running_healthy("orange") && running_healthy("promtail"),
        "{}",
        run.all()
    );
    assert_same!(
        env_of("orange").get("SERVER_SECRET").map(String::as_str),
        Some("seed-secret-9f9f")
    );
    assert_same!(
        env_of("promtail").get("SERVER_SECRET").map(String::as_str),
        Some("seed-secret-9f9f")
    );
    // The application answers on the published port, with the value from SSM in its environment.
    let body = http_get("127.0.0.1:8080", "/cgi-bin/env");
    assert!(
        body.contains("SERVER_SECRET=seed-secret-9f9f"),
        "the app does not see its secret"
    );
    let ids = (id_of("orange"), id_of("promtail"));

    let (run, _stack, _rig) = stack.sync(rig).await;
    run.expect(0);
    assert_eq!(
        (id_of("orange"), id_of("promtail")),
        ids,
        "a second sync touches no container"
    );
    docker(&["rm", "-f", "orange", "promtail"]);
}

/// Serializes the users of the seed stack's fixed names and ports (this test, tests/demo and
/// tests/bench/boot).
fn seed_stack_lock() -> nix::fcntl::Flock<std::fs::File> {
    let file = std::fs::File::create("/tmp/kicky-seed-stack.lock").unwrap();
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .unwrap()
}

fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).unwrap();
    body
}

/// A release that fails (a new parameter value and a new compose file whose image never gets
/// healthy) is undone whole: the env file, the compose file and the containers of the last good
/// sync are back, and `status` says what failed and that it was rolled back.
#[tokio::test]
async fn a_failed_release_is_rolled_back_whole() {
    let rig = Rig::get();
    let stack = Stack::new(&rig, "release").await;
    stack.env(&rig, "API_KEY=good-1c1c\n").await;
    let bucket = rig.bucket("release", true).await;
    let registry = stack.registry.clone();
    let compose = |image: &str| {
        format!("services:\n  web:\n    image: {registry}/tester/{image}\n    environment:\n      API_KEY: ${{API_KEY}}\n")
    };
    rig.put_object(&bucket, "docker-compose.yml", compose("web:1").into_bytes())
        .await;
    let p = stack.project.clone();
    stack.scratch.config(
        &rig,
        &format!(
            "project: {p}\nworkdir: {{workdir}}\naws:\n  endpoint_url: {{moto}}\n  s3_force_path_style: true\n\
             env:\n  parameters:\n    - name: /kt/{p}/env\n      format: dotenv\n\
             files:\n  - source: s3://{bucket}/docker-compose.yml\n    path: docker-compose.yml\n\
             compose:\n  file: docker-compose.yml\n  healthy_timeout: 30s\n\
             registries:\n  - server: {}\n    username: tester\n    password: {{ parameter: /kt/{p}/registry }}\n",
            stack.registry
        ),
    );
    let (run, stack, rig) = stack.sync(rig).await;
    run.expect(0);
    let web = stack.container("web");
    let good = stack.release("web");

    stack.env(&rig, "API_KEY=bad-2d2d\n").await;
    rig.put_object(
        &bucket,
        "docker-compose.yml",
        compose("unhealthy:1").into_bytes(),
    )
    .await;
    let (run, stack, rig) = stack.sync(rig).await;
    run.expect(1);
    run.assert_free_of(&["good-1c1c", "bad-2d2d"]);
    assert!(
        run.stderr
            .contains("the last good env file and files were restored"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("rolled back: the previous containers of web run again"),
        "{}",
        run.stderr
    );
    assert!(
        stack.release("web") == good,
        "the env file, the compose file and the container are the last good ones"
    );
    assert!(running_healthy(&web));
    assert_same!(
        env_of(&web).get("API_KEY").map(String::as_str),
        Some("good-1c1c")
    );

    let (status, stack, rig) = stack.run(rig, &["status"]).await;
    status.expect(1);
    assert!(
        status.stdout.contains("last sync: FAILED") && status.stdout.contains("restored"),
        "{}",
        status.stdout
    );
    status.assert_free_of(&["good-1c1c", "bad-2d2d"]);

    // A second bad release in a row (a tag the registry does not have): the disk holds the last
    // good release again, so it is kept and restored again.
    stack.env(&rig, "API_KEY=bad-3e3e\n").await;
    rig.put_object(
        &bucket,
        "docker-compose.yml",
        compose("web:no-such-tag").into_bytes(),
    )
    .await;
    let (run, stack, rig) = stack.sync(rig).await;
    run.expect(1);
    run.assert_free_of(&["good-1c1c", "bad-3e3e"]);
    assert!(
        stack.release("web") == good,
        "after a second failed release, the env file, the compose file and the container are still the last good ones"
    );

    // A compose file the agent refuses (a key it does not support) is bad input: exit 2, naming
    // the key and its line, and again nothing on disk or in the engine changes.
    stack.env(&rig, "API_KEY=bad-4f4f\n").await;
    let refused = format!("{}    volumes_from: [db]\n", compose("web:1"));
    rig.put_object(&bucket, "docker-compose.yml", refused.into_bytes())
        .await;
    let (run, stack, _rig) = stack.sync(rig).await;
    run.expect(2);
    run.assert_free_of(&["good-1c1c", "bad-4f4f"]);
    assert!(
        run.stderr.contains("docker-compose.yml:6") && run.stderr.contains("volumes_from"),
        "{}",
        run.stderr
    );
    assert!(
        stack.release("web") == good,
        "after a refused compose file, the env file, the compose file and the container are still the last good ones"
    );
}
