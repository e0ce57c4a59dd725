//! `kicky-agent import`: the seed's user-data script and two variants (`tests/fixtures/import/`)
//! printed as configs that `kicky-agent validate` accepts once the variables they leave are
//! filled in; a file that cannot be read is bad input (exit 2) naming it.

use std::path::PathBuf;

use crate::common::{Rig, Scratch};

/// A fixture, the values of the variables its config leaves, and what it must never print.
struct Case {
    script: &'static str,
    fill: &'static [(&'static str, &'static str)],
    secrets: &'static [&'static str],
}

const CASES: &[Case] = &[
    Case {
        script: "seed.sh",
        fill: &[
            ("PARAMETER_NAME", "/orange/prod/env"),
            ("S3_BUCKET", "amzn-s3-demo-bucket"),
        ],
        secrets: &[],
    },
    Case {
        script: "lemon.sh",
        fill: &[("REGISTRY_PASSWORD_PARAMETER", "/lemon/registry/password")],
        secrets: &["S3cr3t-Pa55word!"],
    },
    Case {
        script: "lime.sh",
        fill: &[("CONFIG_BUCKET", "amzn-s3-demo-bucket")],
        secrets: &["hunter2-literal"],
    },
];

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/import")
        .join(name)
}

#[test]
fn each_imported_script_validates_once_its_variables_are_filled() {
    let rig = Rig::get();
    for Case {
        script: name,
        fill,
        secrets,
    } in CASES
    {
        let s = Scratch::new();
        let script = fixture(name);
        let run = s.agent(&rig, &["import", &script.display().to_string()]);
        run.expect(0);
        run.assert_free_of(secrets);
        let mut config = run.stdout.clone();
        for (variable, value) in fill.iter() {
            let placeholder = format!("${{{variable}}}");
            assert!(
                config.contains(&placeholder),
                "{name}: {placeholder} is not left:\n{config}"
            );
            config = config.replace(&placeholder, value);
        }
        // Comments quote the script as written, its variables included.
        let unfilled = config
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .any(|l| l.contains("${"));
        assert!(!unfilled, "{name}: a variable is left unfilled:\n{config}");
        s.config(&rig, &config);
        let run = s.agent(&rig, &["validate"]);
        run.expect(0);
        assert!(
            run.stdout.contains("config is valid"),
            "{name}: {}",
            run.stdout
        );
    }
}

#[test]
fn an_unreadable_script_is_bad_input_naming_it() {
    let rig = Rig::get();
    let s = Scratch::new();
    let missing = s.path("no-such-user-data.sh");
    let run = s.agent(&rig, &["import", &missing.display().to_string()]);
    run.expect(2);
    assert!(
        run.stderr.contains(&missing.display().to_string()),
        "{}",
        run.stderr
    );
    assert!(run.stdout.is_empty(), "{}", run.stdout);
}
