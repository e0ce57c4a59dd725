//! The list of what a config reads, for each kind of source.

use super::*;

fn settings(yaml: &str) -> Settings {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.yaml");
    std::fs::write(&path, yaml).unwrap();
    crate::config::load(&path).unwrap()
}

const CONFIG: &str = "\
project: orange
workdir: /srv/orange
env:
  parameters:
    - name: /orange/prod/env
      format: dotenv
    - path: /orange/prod/vars/
      recursive: true
    - secret: prod/orange/db
    - secret: prod/orange/old
      version_stage: AWSPREVIOUS
      format: value
      key: OLD
    - name: /orange/prod/SERVER_SECRET
      key: SERVER_SECRET
files:
  - source: s3://bucket/docker-compose.yml
    path: docker-compose.yml
  - source: s3://other/promtail-config.yml
    path: promtail-config.yml
    version_id: v1
    expected_owner: \"111122223333\"
registries:
  - server: docker.io
    username: { parameter: /orange/dockerhub/username }
    password: { parameter: /orange/dockerhub/token }
  - server: ghcr.io
    username: bot
    password: { parameter: /orange/ghcr/token }
";

#[test]
fn every_source_of_the_config_is_listed_in_its_order() {
    let settings = settings(CONFIG);
    let inputs = Inputs::of(&settings);
    let parameters: Vec<(&str, ParameterUse)> =
        inputs.parameters.iter().map(|p| (p.name, p.used)).collect();
    assert_eq!(
        parameters,
        [
            ("/orange/prod/env", ParameterUse::Document),
            ("/orange/prod/SERVER_SECRET", ParameterUse::Single),
            ("/orange/dockerhub/token", ParameterUse::RegistryPassword),
            ("/orange/dockerhub/username", ParameterUse::RegistryUsername),
            ("/orange/ghcr/token", ParameterUse::RegistryPassword),
        ]
    );
    let paths: Vec<(&str, bool)> = inputs
        .paths
        .iter()
        .map(|p| (p.path.as_str(), p.recursive))
        .collect();
    assert_eq!(paths, [("/orange/prod/vars", true)]);
    let secrets: Vec<(String, &str, bool)> = inputs
        .secrets
        .iter()
        .map(|s| (s.key(), s.stage_name(), s.is_current()))
        .collect();
    assert_eq!(
        secrets,
        [
            ("secret:prod/orange/db".to_string(), "AWSCURRENT", true),
            (
                "secret:prod/orange/old@AWSPREVIOUS".to_string(),
                "AWSPREVIOUS",
                false
            ),
        ]
    );
    let files: Vec<(String, Option<&str>, Option<&str>)> = inputs
        .files
        .iter()
        .map(|f| (f.uri.to_string(), f.owner, f.version))
        .collect();
    assert_eq!(
        files,
        [
            ("s3://bucket/docker-compose.yml".to_string(), None, None),
            (
                "s3://other/promtail-config.yml".to_string(),
                Some("111122223333"),
                Some("v1")
            ),
        ]
    );
    assert!(inputs.marker.is_none() && inputs.release.is_none());
    assert!(inputs.reads_ssm());
}

#[test]
fn the_release_store_is_its_pointer_and_its_manifests() {
    let yaml = "project: orange\nworkdir: /srv/orange\nrelease:\n  store: s3://rel/orange/\n  expected_owner: \"111122223333\"\n";
    let settings = settings(yaml);
    let inputs = Inputs::of(&settings);
    let release = inputs.release.clone().expect("release objects");
    assert_eq!(release.pointer.to_string(), "s3://rel/orange/promoted.json");
    assert_eq!(release.manifests.to_string(), "s3://rel/orange/releases/");
    assert_eq!(
        release.manifest("20250101T000000.000Z").to_string(),
        "s3://rel/orange/releases/20250101T000000.000Z.json"
    );
    assert_eq!(release.owner, Some("111122223333"));
    assert!(!inputs.reads_ssm() && inputs.files.is_empty());
}

#[test]
fn the_marker_is_listed_with_its_owner() {
    let yaml = "project: orange\nworkdir: /srv/orange\nwatch:\n  marker: s3://marker-bucket/release.marker\n";
    let settings = settings(yaml);
    let marker = Inputs::of(&settings).marker.expect("the marker");
    assert_eq!(marker.uri.to_string(), "s3://marker-bucket/release.marker");
    assert_eq!((marker.owner, marker.version), (None, None));
}
