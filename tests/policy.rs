//! `compose.policy` against the rig: whoever can write the deploy bucket gets only what the baked
//! config allows. A compose file that asks for the host (privileged, the host's pid namespace,
//! every capability, the host's root and the Docker socket bound, a host file read as a secret)
//! is refused by `validate`, `plan` and `sync`, every problem named with its line and what to
//! write to allow it, and nothing already running or written changes. The baked config allows
//! one thing for one service.

use crate::common;

use common::stack::{docker, inspect, running_healthy, Stack};
use common::Rig;

/// What whoever can write the deploy bucket puts there.
fn attack(registry: &str) -> String {
    format!(
        "services:\n  web:\n    image: {registry}/tester/web:1\n    privileged: true\n    pid: host\n    cap_add: [ALL]\n\
         \x20   volumes:\n      - /:/host\n      - /var/run/docker.sock:/var/run/docker.sock\n    secrets: [x]\n\
         secrets:\n  x:\n    file: /etc/shadow\n"
    )
}

/// Each thing [`attack`] asks for: its line and its key.
const REFUSED: [(usize, &str); 6] = [
    (4, "services.web.privileged"),
    (5, "services.web.pid"),
    (6, "services.web.cap_add[0]"),
    (8, "services.web.volumes[0]"),
    (9, "services.web.volumes[1]"),
    (13, "secrets.x.file"),
];

/// Whether `output` names every one of `refused` in `file`, at its line.
fn names_each(output: &str, file: &str, refused: &[(usize, &str)]) -> Result<(), String> {
    for (line, key) in refused {
        let at = format!("{file}:{line}:");
        let named = output
            .lines()
            .any(|l| l.contains(&at) && l.contains(&format!(": {key}: ")));
        if !named {
            return Err(format!("{key} is not named at line {line}:\n{output}"));
        }
    }
    if !output.contains("refused by compose.policy (to allow it, the baked config sets") {
        return Err(format!("no remedy given:\n{output}"));
    }
    Ok(())
}

/// The attack from the bucket: refused before anything is written, on a first sync and after a
/// good one; the last good compose file, env file and container stay as they were.
#[tokio::test]
async fn a_compose_file_from_the_bucket_that_asks_for_the_host_is_refused_whole() {
    let rig = Rig::get();
    let stack = Stack::new(&rig, "policy").await;
    stack.env(&rig, "API_KEY=good-7a7a\n").await;
    let bucket = rig.bucket("policy", true).await;
    let registry = stack.registry.clone();
    let good = format!("services:\n  web:\n    image: {registry}/tester/web:1\n");
    rig.put_object(
        &bucket,
        "docker-compose.yml",
        attack(&registry).into_bytes(),
    )
    .await;
    let p = stack.project.clone();
    // A tmpfs, as the agent requires for secret files.
    let shm = tempfile::tempdir_in("/dev/shm").expect("/dev/shm (a tmpfs)");
    let secrets_dir = shm.path().to_path_buf();
    stack.scratch.config(
        &rig,
        &format!(
            "project: {p}\nworkdir: {{workdir}}\naws:\n  endpoint_url: {{moto}}\n  s3_force_path_style: true\n\
             env:\n  parameters:\n    - name: /kt/{p}/env\n      format: dotenv\n\
             files:\n  - source: s3://{bucket}/docker-compose.yml\n    path: docker-compose.yml\n\
             compose:\n  file: docker-compose.yml\n  healthy_timeout: 30s\n  secrets_dir: {}\n\
             registries:\n  - server: {registry}\n    username: tester\n    password: {{ parameter: /kt/{p}/registry }}\n",
            secrets_dir.display()
        ),
    );
    let workdir = stack.scratch.workdir();
    let compose_file = workdir.join("docker-compose.yml").display().to_string();
    let project_filter = format!("label=com.docker.compose.project={p}");
    let containers = move || docker(&["ps", "-aq", "--filter", &project_filter]);

    // A first sync: nothing is written, nothing started.
    let (run, stack, rig) = stack.sync(rig).await;
    run.expect(2);
    run.assert_free_of(&["good-7a7a"]);
    names_each(&run.stderr, &compose_file, &REFUSED).unwrap();
    assert!(
        !workdir.join("docker-compose.yml").exists(),
        "the refused file is not written"
    );
    assert!(!workdir.join(".env").exists(), "nor the env file");
    assert_eq!(containers().trim(), "", "no container was created");

    // A good release, then the attack over it.
    rig.put_object(&bucket, "docker-compose.yml", good.into_bytes())
        .await;
    let (run, stack, rig) = stack.sync(rig).await;
    run.expect(0);
    let web = stack.container("web");
    let before = stack.release("web");
    stack.env(&rig, "API_KEY=bad-8b8b\n").await;
    rig.put_object(
        &bucket,
        "docker-compose.yml",
        attack(&registry).into_bytes(),
    )
    .await;
    let (run, stack, _rig) = stack.sync(rig).await;
    run.expect(2);
    run.assert_free_of(&["good-7a7a", "bad-8b8b"]);
    names_each(&run.stderr, &compose_file, &REFUSED).unwrap();
    assert!(
        stack.release("web") == before,
        "the env file, the compose file and the container are the last good ones"
    );
    assert!(running_healthy(&web));
    let host_config = &inspect(&web).unwrap()["HostConfig"];
    assert_eq!(host_config["Privileged"], false);
    assert_eq!(containers().split_whitespace().count(), 1);
    assert_eq!(
        common::files_under(&secrets_dir),
        Default::default(),
        "no secret file was written"
    );
}

/// `validate` and `plan` refuse the file where it lies, naming each problem; the baked config
/// allowing one of them lets that one through, and only that one.
#[tokio::test]
async fn validate_and_plan_refuse_it_and_the_baked_config_allows_one_thing() {
    let rig = Rig::get();
    let stack = Stack::new(&rig, "policyallow").await;
    stack.env(&rig, "API_KEY=plain\n").await;
    let registry = stack.registry.clone();
    let shm = tempfile::tempdir_in("/dev/shm").expect("/dev/shm (a tmpfs)");
    let secrets = format!("  secrets_dir: {}\n", shm.path().display());
    stack.compose(&rig, &attack(&registry), &secrets);
    let compose_file = stack.scratch.workdir().join("docker-compose.yml");
    let compose_file = compose_file.display().to_string();
    let (run, stack, rig) = stack.run(rig, &["validate"]).await;
    run.expect(2);
    names_each(&run.stderr, &compose_file, &REFUSED).unwrap();
    assert!(
        run.stderr
            .contains("compose.policy.allow.web: {privileged: true}")
            && run
                .stderr
                .contains("compose.policy.allow.web: {host_namespaces: [pid]}")
            && run
                .stderr
                .contains("compose.policy.allow.web: {binds: [/]}")
            && run
                .stderr
                .contains("compose.policy.secret_files: [/etc/shadow]"),
        "{}",
        run.stderr
    );
    let (run, stack, rig) = stack.run(rig, &["plan"]).await;
    run.expect(2);
    names_each(&run.stderr, &compose_file, &REFUSED).unwrap();

    // The baked config allows the host's pid namespace to web: that one passes, the rest not.
    let allow =
        format!("{secrets}  policy:\n    allow:\n      web:\n        host_namespaces: [pid]\n");
    stack.compose(&rig, &attack(&registry), &allow);
    let (run, stack, rig) = stack.run(rig, &["validate"]).await;
    run.expect(2);
    let rest: Vec<(usize, &str)> = REFUSED.iter().copied().filter(|(l, _)| *l != 5).collect();
    names_each(&run.stderr, &compose_file, &rest).unwrap();
    assert!(!run.stderr.contains("services.web.pid"), "{}", run.stderr);

    // A compose file asking only for that: it runs, with the host's pid namespace.
    let compose = format!("services:\n  web:\n    image: {registry}/tester/web:1\n    pid: host\n");
    stack.compose(&rig, &compose, &allow);
    let (run, stack, _rig) = stack.sync(rig).await;
    run.expect(0);
    let web = stack.container("web");
    assert_eq!(inspect(&web).unwrap()["HostConfig"]["PidMode"], "host");
}
