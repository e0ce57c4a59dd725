//! Buckets are trusted by the account that owns them, never by their name: a deleted or mistyped
//! bucket name can be registered by anyone, who would then serve the compose file. Every S3 call
//! sends the account expected to own the bucket (the instance's, from its identity document, or
//! `expected_owner`), and S3 refuses it (403) when another account owns the bucket.
//!
//! moto 5.2 ignores that header: the rig's moto answers it as S3 does (`s3_expected_bucket_owner`
//! in `tests/rig/moto_server.py`), so these tests start a moto of their own from this tree.

use crate::common;

use common::moto::OwnMoto;
use common::{Rig, Scratch};

/// The account the rig's identity document names (moto's default account).
const INSTANCE_ACCOUNT: &str = "123456789012";
/// Someone else's account.
const OTHER_ACCOUNT: &str = "111111111111";

/// An S3 client that acts as `account` in moto (its `x-moto-account-id` header).
async fn put_as(rig: &Rig, account: &str, bucket: &str, key: &str, body: &[u8]) {
    use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
    let s3 = rig.s3();
    let account = account.to_string();
    let as_account = move |req: &mut aws_sdk_s3::config::http::HttpRequest| {
        req.headers_mut()
            .insert("x-moto-account-id", account.clone());
    };
    let location = CreateBucketConfiguration::builder()
        .location_constraint(BucketLocationConstraint::from(rig.region.as_str()))
        .build();
    s3.create_bucket()
        .bucket(bucket)
        .create_bucket_configuration(location)
        .customize()
        .mutate_request(as_account.clone())
        .send()
        .await
        .expect("create bucket");
    s3.put_object()
        .bucket(bucket)
        .key(key)
        .body(body.to_vec().into())
        .customize()
        .mutate_request(as_account)
        .send()
        .await
        .expect("put object");
}

fn config(endpoint: &str, mine: &str, theirs: &str, theirs_extra: &str) -> String {
    format!(
        "project: orange\nworkdir: {{workdir}}\naws:\n  endpoint_url: {endpoint}\n  s3_force_path_style: true\n\
         files:\n\
         \x20 - source: s3://{mine}/docker-compose.yml\n    path: docker-compose.yml\n\
         \x20 - source: s3://{theirs}/promtail-config.yml\n    path: promtail-config.yml\n{theirs_extra}"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bucket_of_another_account_is_refused_and_nothing_is_written() {
    let rig = Rig::get();
    let s = Scratch::new();
    let moto = OwnMoto::start(&rig, s.dir.path(), None);
    let own = Rig {
        moto_url: moto.url.clone(),
        ..Rig::get()
    };
    let n = fastrand::u32(..);
    let (mine, theirs) = (format!("kt-owner-mine-{n}"), format!("kt-owner-theirs-{n}"));
    put_as(
        &own,
        INSTANCE_ACCOUNT,
        &mine,
        "docker-compose.yml",
        b"services: {}\n",
    )
    .await;
    // The attack: the deploy bucket's name, registered by another account, serving its own file.
    put_as(
        &own,
        OTHER_ACCOUNT,
        &theirs,
        "promtail-config.yml",
        b"attacker: 1\n",
    )
    .await;
    let written = |name: &str| s.workdir().join(name).exists();

    // The instance's account (from the rig's identity document) is expected of every bucket.
    s.config(&rig, &config(&moto.url, &mine, &theirs, ""));
    let run = tokio::task::block_in_place(|| s.agent(&rig, &["sync"]));
    run.expect(1);
    let uri = format!("s3://{theirs}/promtail-config.yml");
    assert!(
        run.stderr.contains(&format!("failed to fetch {uri}"))
            && run.stderr.contains("AccessDenied")
            && run.stderr.contains(&format!("account {INSTANCE_ACCOUNT}")),
        "{}",
        run.stderr
    );
    assert!(
        !written("promtail-config.yml") && !written("docker-compose.yml"),
        "a file was written from a sync that failed"
    );
    // `plan` (a HEAD) refuses it too, naming it.
    let plan = tokio::task::block_in_place(|| s.agent(&rig, &["plan"]));
    assert!(
        plan.status != 0 && plan.stderr.contains(&format!("failed to look up {uri}")),
        "{}",
        plan.all()
    );

    // Naming the other account is how a bucket of another account is read.
    let named = format!("    expected_owner: \"{OTHER_ACCOUNT}\"\n");
    s.config(&rig, &config(&moto.url, &mine, &theirs, &named));
    let run = tokio::task::block_in_place(|| s.agent(&rig, &["sync"]));
    run.expect(0);
    assert_eq!(
        std::fs::read(s.workdir().join("promtail-config.yml")).unwrap(),
        b"attacker: 1\n"
    );
    // ...and then the bucket it names is refused if another account owns it.
    let wrong = "    expected_owner: \"222222222222\"\n";
    s.config(&rig, &config(&moto.url, &mine, &theirs, wrong));
    let run = tokio::task::block_in_place(|| s.agent(&rig, &["sync"]));
    run.expect(1);
    assert!(
        run.stderr.contains("account 222222222222"),
        "{}",
        run.stderr
    );

    // Where no account is known (instance metadata off), nothing is fetched without the check.
    let _ = std::fs::remove_dir_all(s.workdir());
    let _ = std::fs::remove_dir_all(s.path("state"));
    s.config(&rig, &config(&moto.url, &mine, &theirs, &named));
    let env = [
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_REGION", rig.region.as_str()),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
    ];
    let run = tokio::task::block_in_place(|| s.agent_with(&rig, &["sync"], &env));
    run.expect(1);
    assert!(
        run.stderr.contains(&format!(
            "the account that must own the bucket of s3://{mine}/docker-compose.yml is not known"
        )),
        "{}",
        run.stderr
    );
    assert!(!written("promtail-config.yml") && !written("docker-compose.yml"));

    // An expected owner that is not an account id is bad input, named by key.
    let bad = "    expected_owner: \"12345\"\n";
    s.config(&rig, &config(&moto.url, &mine, &theirs, bad));
    let run = s.agent_with(&rig, &["validate"], &env);
    run.expect(2);
    assert!(
        run.stderr.contains("files[1].expected_owner") && run.stderr.contains("12 digits"),
        "{}",
        run.stderr
    );
}
