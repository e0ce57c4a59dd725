//! The fixtures of `tests/fixtures/import/` (the seed's script and two variants), each read into
//! what the config says of it, rendered, and loaded by the config's own loader once its
//! variables are filled in.

use super::*;
use crate::config::{ParamSource, RegistryAuth, Source};

/// One fixture and what `import` must make of it.
struct Case {
    name: &'static str,
    script: &'static str,
    want: Import,
    /// Each note's line and kind, in order.
    notes: Vec<(usize, NoteKind)>,
    /// The variables left in the output, and a value for each to load it with.
    fill: &'static [(&'static str, &'static str)],
    /// What must never be printed.
    secrets: &'static [&'static str],
}

fn s(text: &str) -> String {
    text.to_string()
}

fn file(source: &str, path: &str, mode: Option<&str>) -> File {
    File {
        source: s(source),
        path: s(path),
        mode: mode.map(s),
        owner: None,
        group: None,
    }
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "seed.sh",
            script: include_str!("../../../tests/fixtures/import/seed.sh"),
            want: Import {
                compose: Some(Compose {
                    dir: s("/home/ubuntu"),
                    file: s("/home/ubuntu/docker-compose.yml"),
                    project: s("ubuntu"),
                }),
                region: Some(s("ap-northeast-2")),
                env_file: Some(s("/home/ubuntu/.env")),
                parameters: vec![Parameter::Document {
                    name: s("${PARAMETER_NAME}"),
                }],
                files: vec![
                    file(
                        "s3://${S3_BUCKET}/docker-compose.yml",
                        "/home/ubuntu/docker-compose.yml",
                        None,
                    ),
                    file(
                        "s3://${S3_BUCKET}/promtail-config.yml",
                        "/home/ubuntu/promtail-config.yml",
                        None,
                    ),
                ],
                pull_always: true,
                prune: true,
                ..Import::default()
            },
            notes: vec![(7, NoteKind::Translated), (10, NoteKind::Translated)],
            fill: &[
                ("PARAMETER_NAME", "/orange/prod/env"),
                ("S3_BUCKET", "amzn-s3-demo-bucket"),
            ],
            secrets: &[],
        },
        Case {
            name: "lemon.sh",
            script: include_str!("../../../tests/fixtures/import/lemon.sh"),
            want: Import {
                compose: Some(Compose {
                    dir: s("/opt/lemon"),
                    file: s("/opt/lemon/compose.prod.yml"),
                    project: s("lemon"),
                }),
                region: Some(s("eu-west-1")),
                env_file: Some(s("/opt/lemon/app.env")),
                parameters: vec![Parameter::Path {
                    path: s("/lemon/prod/"),
                    recursive: true,
                }],
                files: vec![
                    file(
                        "s3://amzn-s3-demo-bucket/lemon/compose.prod.yml",
                        "/opt/lemon/compose.prod.yml",
                        None,
                    ),
                    file(
                        "s3://amzn-s3-demo-bucket/lemon/nginx.conf",
                        "/opt/lemon/conf/nginx.conf",
                        Some("0640"),
                    ),
                ],
                registries: vec![Registry {
                    server: s("registry.example.com"),
                    auth: Auth::Password {
                        username: Username::Literal(s("lemonbot")),
                        parameter: s("${REGISTRY_PASSWORD_PARAMETER}"),
                    },
                }],
                ..Import::default()
            },
            notes: vec![
                (3, NoteKind::NotTranslated),
                (4, NoteKind::NotTranslated),
                (6, NoteKind::Translated),
                (8, NoteKind::Translated),
                (14, NoteKind::Translated),
                (15, NoteKind::NotTranslated),
            ],
            fill: &[("REGISTRY_PASSWORD_PARAMETER", "/lemon/registry/password")],
            secrets: &["S3cr3t-Pa55word!"],
        },
        Case {
            name: "lime.sh",
            script: include_str!("../../../tests/fixtures/import/lime.sh"),
            want: Import {
                compose: Some(Compose {
                    dir: s("/srv/lime"),
                    file: s("/srv/lime/docker-compose.yml"),
                    project: s("lime"),
                }),
                env_file: Some(s("/srv/lime/.env")),
                parameters: vec![
                    Parameter::Document {
                        name: s("/lime/prod/env"),
                    },
                    Parameter::Single {
                        name: s("/lime/prod/DB_PASSWORD"),
                        key: s("DB_PASSWORD"),
                    },
                    Parameter::Single {
                        name: s("/lime/prod/api-token"),
                        key: s("API_TOKEN"),
                    },
                ],
                files: vec![file(
                    "s3://${CONFIG_BUCKET}/lime/docker-compose.yml",
                    "/srv/lime/docker-compose.yml",
                    None,
                )],
                registries: vec![Registry {
                    server: s("123456789012.dkr.ecr.eu-central-1.amazonaws.com"),
                    auth: Auth::Ecr,
                }],
                pull_always: true,
                prune: true,
                ..Import::default()
            },
            notes: vec![
                (4, NoteKind::Translated),
                (5, NoteKind::Translated),
                (12, NoteKind::NotTranslated),
                (13, NoteKind::NotTranslated),
                (17, NoteKind::Translated),
                (19, NoteKind::Translated),
            ],
            fill: &[("CONFIG_BUCKET", "amzn-s3-demo-bucket")],
            secrets: &["hunter2-literal"],
        },
    ]
}

/// `yaml` with each `${NAME}` of `fill` replaced by its value.
fn filled(yaml: &str, fill: &[(&str, &str)]) -> String {
    fill.iter().fold(yaml.to_string(), |text, (name, value)| {
        text.replace(&format!("${{{name}}}"), value)
    })
}

/// Loads `yaml` as the agent's config, as `validate` and every sync read it.
fn load(yaml: &str) -> anyhow::Result<crate::config::Settings> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("agent.yaml");
    std::fs::write(&path, yaml)?;
    crate::config::load(&path)
}

#[test]
fn each_fixture_is_read_into_the_config_it_says() {
    for case in cases() {
        let import = translate(case.script);
        let got = Import {
            notes: Vec::new(),
            ..import.clone()
        };
        assert_eq!(got, case.want, "{}", case.name);
        let notes: Vec<(usize, NoteKind)> = import.notes.iter().map(|n| (n.line, n.kind)).collect();
        assert_eq!(notes, case.notes, "{}: {:#?}", case.name, import.notes);
    }
}

#[test]
fn each_fixture_renders_a_config_the_agent_loads_once_its_variables_are_filled() {
    for case in cases() {
        let import = translate(case.script);
        let yaml = render(&import, case.name).unwrap();
        // YAML as it is, comments and variables included.
        serde_norway::from_str::<serde_norway::Value>(&yaml)
            .unwrap_or_else(|e| panic!("{}: not YAML: {e}\n{yaml}", case.name));
        for (name, _) in case.fill {
            assert!(
                yaml.contains(&format!("${{{name}}}")),
                "{}: {name} is not left\n{yaml}",
                case.name
            );
            assert!(
                yaml.lines()
                    .any(|l| l.starts_with('#') && l.contains(&format!("${{{name}}}"))),
                "{}: {name} is not in the comment of variables to fill\n{yaml}",
                case.name
            );
        }
        if !case.fill.is_empty() {
            assert!(
                load(&yaml).is_err(),
                "{}: loads with variables left",
                case.name
            );
        }
        let settings = load(&filled(&yaml, case.fill))
            .unwrap_or_else(|e| panic!("{}: {e:#}\n{yaml}", case.name));
        let compose = case.want.compose.as_ref().unwrap();
        assert_eq!(settings.project, compose.project, "{}", case.name);
        assert_eq!(
            settings.workdir.to_str(),
            Some(compose.dir.as_str()),
            "{}",
            case.name
        );
        let compose_settings = settings.compose.as_ref().unwrap();
        assert_eq!(compose_settings.file.to_str(), Some(compose.file.as_str()));
        assert_eq!(compose_settings.prune, case.want.prune, "{}", case.name);
        assert_eq!(settings.aws.region, case.want.region, "{}", case.name);
        let env = settings.env.as_ref().unwrap();
        assert_eq!(
            env.path.to_str(),
            case.want.env_file.as_deref(),
            "{}",
            case.name
        );
        assert_eq!(
            env.sources.len(),
            case.want.parameters.len(),
            "{}",
            case.name
        );
        let paths: Vec<String> = settings
            .files
            .iter()
            .map(|f| f.path.display().to_string())
            .collect();
        let want: Vec<String> = case.want.files.iter().map(|f| f.path.clone()).collect();
        assert_eq!(paths, want, "{}", case.name);
        assert_eq!(
            settings.registries.len(),
            case.want.registries.len(),
            "{}",
            case.name
        );
    }
}

#[test]
fn each_line_not_translated_is_quoted_in_a_comment_and_secrets_never_are() {
    for case in cases() {
        let import = translate(case.script);
        let yaml = render(&import, case.name).unwrap();
        for note in &import.notes {
            let heading = match note.kind {
                NoteKind::Translated => format!("# line {}: ", note.line),
                NoteKind::Partly => format!("# partly translated (line {}): ", note.line),
                NoteKind::NotTranslated => format!("# not translated (line {}): ", note.line),
            };
            assert!(
                yaml.contains(&format!("{heading}{}\n", note.shown)),
                "{}: line {} is not quoted\n{yaml}",
                case.name,
                note.line
            );
        }
        for secret in case.secrets {
            assert!(
                case.script.contains(secret),
                "{}: the test's secret is not in the script",
                case.name
            );
            assert!(
                !yaml.contains(secret),
                "{}: a secret is printed\n{yaml}",
                case.name
            );
        }
    }
}

#[test]
fn the_parameters_load_as_the_sources_they_were_read_as() {
    let case = &cases()[2];
    let yaml = render(&translate(case.script), case.name).unwrap();
    let settings = load(&filled(&yaml, case.fill)).unwrap();
    let sources: Vec<ParamSource> = settings
        .env
        .unwrap()
        .sources
        .into_iter()
        .map(|Source { from, .. }| from)
        .collect();
    let shown: Vec<String> = sources
        .iter()
        .map(|s| match s {
            ParamSource::Document { name } => format!("document {}", name.as_str()),
            ParamSource::Single { name, key } => format!("{} as {}", name.as_str(), key.as_str()),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        shown,
        vec![
            "document /lime/prod/env",
            "/lime/prod/DB_PASSWORD as DB_PASSWORD",
            "/lime/prod/api-token as API_TOKEN",
        ]
    );
    assert_eq!(settings.registries[0].auth, RegistryAuth::Ecr);
    assert_eq!(
        settings.compose.unwrap().pull,
        crate::config::PullPolicy::Always
    );
}

/// The seed's script, whole: what the report and the README show.
#[test]
fn the_seed_script_renders_as_shown() {
    let yaml = render(&translate(cases()[0].script), "user-data.sh").unwrap();
    assert_eq!(yaml, SEED_YAML, "\n{yaml}");
}

const SEED_YAML: &str = "\
# agent.yaml for the user-data script user-data.sh, written by `kicky-agent import`.
# Review it, then check it with `kicky-agent validate`.
#
# Replace these with their values: the agent's config does not expand variables.
#   ${PARAMETER_NAME}, ${S3_BUCKET}
#
# line 7: sudo docker pull \"${DOCKERHUB_NAME}/orange\"
#   the agent pulls the compose file's images itself, with the credentials of registries[];
#   compose.pull: always pulls them at every sync, as this line did at every boot
#
# line 10: sudo docker image prune -f
#   compose.prune: true removes the images this project pulled and no longer uses, after a healthy
#   sync; never an image of anything else
#
project: ubuntu
workdir: /home/ubuntu
aws:
  region: ap-northeast-2
env:
  file: .env
  parameters:
  - name: ${PARAMETER_NAME}
    format: dotenv
files:
- source: s3://${S3_BUCKET}/docker-compose.yml
  path: docker-compose.yml
- source: s3://${S3_BUCKET}/promtail-config.yml
  path: promtail-config.yml
compose:
  file: docker-compose.yml
  pull: always
  prune: true
";

#[test]
fn an_unreadable_file_is_bad_input_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.sh");
    let cloud_config = dir.path().join("cloud.yaml");
    std::fs::write(&cloud_config, "#cloud-config\npackages: [jq]\n").unwrap();
    for path in [missing, cloud_config, dir.path().to_path_buf()] {
        let err = read_script(&path).unwrap_err();
        assert_eq!(
            crate::error::exit_status(&err),
            crate::error::EXIT_BAD_INPUT
        );
        assert!(
            format!("{err:#}").contains(&path.display().to_string()),
            "{err:#}"
        );
    }
}

#[test]
fn a_script_without_the_seeds_shape_is_all_comments_and_a_placeholder_project() {
    let import = translate("#!/bin/sh\napt-get install -y nginx\nsystemctl start nginx\n");
    let yaml = render(&import, "x.sh").unwrap();
    assert!(
        yaml.contains("# not translated (line 2): apt-get install -y nginx\n"),
        "{yaml}"
    );
    assert!(
        yaml.contains("# not translated (line 3): systemctl start nginx\n"),
        "{yaml}"
    );
    assert!(yaml.contains("project: ${PROJECT_NAME}"), "{yaml}");
    let settings = load(&filled(&yaml, &[("PROJECT_NAME", "web")])).unwrap();
    assert_eq!(settings.project, "web");
}
