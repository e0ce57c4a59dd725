//! The manifest's rules: ids, schema, what a release refuses to apply, and the diff.

use super::*;

const A: &str = "20261207T163000000Z-3f9a1c";
const B: &str = "20261207T170000000Z-00ff00";
const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn id(s: &str) -> ReleaseId {
    ReleaseId::parse(s).unwrap()
}

fn manifest(id_: &str) -> Manifest {
    Manifest {
        schema: SCHEMA,
        id: id(id_),
        created: "2026-12-07T16:30:00Z".into(),
        by: "arn:aws:iam::123456789012:user/ci".into(),
        parent: None,
        note: String::new(),
        project: "orange".into(),
        parameters: [("/orange/prod/env".to_string(), 3)].into(),
        secrets: [("prod/db".to_string(), "v-1".to_string())].into(),
        files: [(
            "s3://amzn-s3-demo-bucket/docker-compose.yml".to_string(),
            PinnedFile {
                version_id: "ver1".into(),
                sha256: "ab".repeat(32),
                size: 10,
            },
        )]
        .into(),
        compose: Some(PinnedCompose {
            sha256: "cd".repeat(32),
        }),
        images: [(
            "127.0.0.1:5001/tester/web:1".to_string(),
            DIGEST.to_string(),
        )]
        .into(),
    }
}

#[test]
fn ids_sort_by_time_and_accept_nothing_else() {
    let new = ReleaseId::new(std::time::SystemTime::UNIX_EPOCH);
    assert!(new.as_str().starts_with("19700101T000000000Z-"), "{new}");
    assert_eq!(ReleaseId::parse(new.as_str()), Ok(new));
    assert!(id(A) < id(B));
    for bad in [
        "",
        "latest",
        "20261207T163000000Z-3F9A1C",
        "20261207T163000000Z-3f9a1",
        "20261207T163000000Z-3f9a1c/../x",
        "20261207T163000Z-3f9a1c",
        "2026120XT163000Z-3f9a1c",
        "20261207T163000Z_3f9a1c",
        "../releases/20261207T163000000Z-3f9a1c",
    ] {
        assert!(ReleaseId::parse(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn a_manifest_reads_back_and_refuses_what_it_does_not_know() {
    let m = manifest(A);
    assert_eq!(Manifest::from_json(&m.to_json(), &id(A)).unwrap(), m);
    let err = Manifest::from_json(&m.to_json(), &id(B)).unwrap_err();
    assert!(format!("{err}").contains("says it is release"), "{err}");
    let mut later: serde_json::Value = serde_json::from_slice(&m.to_json()).unwrap();
    later["schema"] = 2.into();
    let err = Manifest::from_json(later.to_string().as_bytes(), &id(A)).unwrap_err();
    assert!(format!("{err}").contains("upgrade the agent"), "{err}");
    let mut unknown: serde_json::Value = serde_json::from_slice(&m.to_json()).unwrap();
    unknown["values"] = serde_json::json!({"A": "x"});
    assert!(Manifest::from_json(unknown.to_string().as_bytes(), &id(A)).is_err());
    assert!(Manifest::from_json(b"not json", &id(A)).is_err());
}

#[test]
fn images_run_by_the_pinned_digest() {
    let table = [
        ("127.0.0.1:5001/tester/web:1", "127.0.0.1:5001/tester/web@"),
        ("nginx", "nginx@"),
        ("nginx:1.27", "nginx@"),
        ("ghcr.io/a/b:v2", "ghcr.io/a/b@"),
    ];
    for (reference, want) in table {
        assert_eq!(
            by_digest(reference, DIGEST).unwrap(),
            format!("{want}{DIGEST}")
        );
    }
    assert!(by_digest("nginx", "sha256:short").is_err());
    assert!(by_digest("nginx", "md5:0123").is_err());
}

#[test]
fn the_compose_file_and_the_files_must_be_the_pinned_ones() {
    let m = manifest(A);
    let source = "s3://amzn-s3-demo-bucket/docker-compose.yml";
    assert!(m.check_file(source, &"ab".repeat(32)).is_ok());
    assert!(m.check_file(source, &"ee".repeat(32)).is_err());
    assert!(m
        .check_file("s3://amzn-s3-demo-bucket/other", &"ab".repeat(32))
        .is_err());
    let err = m.check_compose("services: {}\n").unwrap_err();
    assert_eq!(
        crate::error::exit_status(&err),
        crate::error::EXIT_BAD_INPUT
    );
}

#[test]
fn a_diff_names_what_moved_and_never_a_value() {
    let a = manifest(A);
    let mut b = manifest(B);
    b.parameters.insert("/orange/prod/env".into(), 4);
    b.parameters.insert("/orange/prod/vars/NEW".into(), 1);
    b.secrets.clear();
    b.images.insert(
        "127.0.0.1:5001/tester/web:1".into(),
        DIGEST.replace("0123", "4567"),
    );
    let lines = diff(&a, &b);
    assert_eq!(
        lines,
        vec![
            "parameter /orange/prod/env: 3 -> 4".to_string(),
            "parameter /orange/prod/vars/NEW: (none) -> 1".to_string(),
            "secret prod/db: v-1 -> (none)".to_string(),
            format!(
                "image 127.0.0.1:5001/tester/web:1: {DIGEST} -> {}",
                DIGEST.replace("0123", "4567")
            ),
        ]
    );
    assert!(
        diff(&a, &manifest(B)).is_empty(),
        "ids and times are not inputs"
    );
}
