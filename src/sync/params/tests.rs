//! Resolution logic against an in-memory store: batching, order, precedence and the errors.
//! The same paths run against moto in `tests/env_file.rs`.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::*;
use crate::aws::ssm::{Batch, GET_PARAMETERS_MAX};
use crate::config::types::{EnvKey, ParamName, ParamPath, SecretId, VersionStage};

#[derive(Default)]
struct FakeStore {
    params: BTreeMap<String, String>,
    /// Secrets by id (or `id@stage`): their version id and value.
    secrets: BTreeMap<String, (String, String)>,
    calls: Mutex<Vec<String>>,
}

impl FakeStore {
    fn with(params: &[(&str, &str)]) -> Self {
        FakeStore {
            params: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..FakeStore::default()
        }
    }

    fn with_secrets(mut self, secrets: &[(&str, &str, &str)]) -> Self {
        for (id, version, value) in secrets {
            self.secrets
                .insert(id.to_string(), (version.to_string(), value.to_string()));
        }
        self
    }

    fn secret(&self, key: &str, id: &str) -> Option<SecretValue> {
        let (version, value) = self.secrets.get(key)?;
        Some(SecretValue {
            id: id.to_string(),
            version_id: version.clone(),
            value: Secret::new(value.clone()),
        })
    }

    fn param(&self, name: &str) -> Parameter {
        Parameter {
            name: name.to_string(),
            value: Secret::new(self.params[name].clone()),
            version: 1,
        }
    }
}

impl ParameterStore for FakeStore {
    async fn get_secrets(&self, ids: &[String]) -> Result<crate::aws::secrets::SecretBatch> {
        assert!(ids.len() <= BATCH_MAX, "a batch takes at most 20 secrets");
        self.calls
            .lock()
            .unwrap()
            .push(format!("secrets {}", ids.len()));
        let mut batch = crate::aws::secrets::SecretBatch::default();
        for id in ids {
            match self.secret(id, id) {
                Some(secret) => batch.found.push(secret),
                None => batch.missing.push(id.clone()),
            }
        }
        Ok(batch)
    }

    async fn get_secret_staged(&self, id: &str, stage: &str) -> Result<SecretValue> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("secret {id}@{stage}"));
        self.secret(&format!("{id}@{stage}"), id)
            .ok_or_else(|| anyhow!("no stage {stage} of {id}"))
    }

    async fn get_secret_version(&self, id: &str, version_id: &str) -> Result<SecretValue> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("secret {id}#{version_id}"));
        self.secret(&format!("{id}#{version_id}"), id)
            .ok_or_else(|| anyhow!("no version {version_id} of {id}"))
    }

    async fn secret_version(&self, id: &str, _: &str) -> Result<Option<String>> {
        Ok(self.secrets.get(id).map(|(v, _)| v.clone()))
    }

    async fn versions(
        &self,
        names: &[String],
        _: &[(String, bool)],
    ) -> Result<BTreeMap<String, i64>> {
        Ok(names
            .iter()
            .filter(|n| self.params.contains_key(*n))
            .map(|n| (n.clone(), 1))
            .collect())
    }

    async fn get_batch(&self, names: &[String]) -> Result<Batch> {
        assert!(
            names.len() <= GET_PARAMETERS_MAX,
            "a GetParameters call takes at most 10 names"
        );
        self.calls
            .lock()
            .unwrap()
            .push(format!("batch {}", names.len()));
        let mut batch = Batch::default();
        for name in names {
            if self.params.contains_key(name) {
                batch.found.push(self.param(name));
            } else {
                batch.missing.push(name.clone());
            }
        }
        Ok(batch)
    }

    async fn get_path(&self, path: &str, recursive: bool) -> Result<Vec<Parameter>> {
        self.calls.lock().unwrap().push(format!("path {path}"));
        let prefix = format!("{path}/");
        Ok(self
            .params
            .keys()
            .filter(|n| n.starts_with(&prefix) && (recursive || !n[prefix.len()..].contains('/')))
            .map(|n| self.param(n))
            .collect())
    }
}

fn entry(from: ParamSource) -> Source {
    Source {
        from,
        env_file: true,
    }
}

fn single(name: &str, key: &str) -> Source {
    entry(ParamSource::Single {
        name: ParamName::parse(name).unwrap(),
        key: EnvKey::parse(key).unwrap(),
    })
}

fn document(name: &str) -> Source {
    entry(ParamSource::Document {
        name: ParamName::parse(name).unwrap(),
    })
}

fn path(p: &str, recursive: bool) -> Source {
    entry(ParamSource::Path {
        path: ParamPath::parse(p).unwrap(),
        recursive,
    })
}

fn vars(resolved: &Resolved) -> Vec<(&str, &str)> {
    resolved
        .vars
        .iter()
        .map(|(k, v)| (k.as_str(), v.expose()))
        .collect()
}

#[tokio::test]
async fn later_sources_win_and_order_is_kept() {
    let store = FakeStore::with(&[
        ("/app/env", "A=1\nB=from-doc\nC=${A}-x\n"),
        ("/app/vars/B", "from-path"),
        ("/app/vars/D", "d"),
        ("/app/SECRET", "s3cr3t"),
    ]);
    let sources = [
        document("/app/env"),
        path("/app/vars/", false),
        single("/app/SECRET", "B"),
    ];
    let resolved = resolve(&store, &sources, None).await.unwrap();
    assert_eq!(
        vars(&resolved),
        vec![("A", "1"), ("B", "s3cr3t"), ("C", "1-x"), ("D", "d")]
    );
    assert_eq!(resolved.versions.len(), 4);
}

#[tokio::test]
async fn names_are_fetched_ten_per_call() {
    let params: Vec<(String, String)> = (0..23)
        .map(|i| (format!("/p/K{i:02}"), format!("v{i}")))
        .collect();
    let refs: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let store = FakeStore::with(&refs);
    let sources: Vec<Source> = params.iter().map(|(k, _)| single(k, &k[3..])).collect();
    let resolved = resolve(&store, &sources, None).await.unwrap();
    assert_eq!(resolved.vars.len(), 23);
    let mut calls = store.calls.lock().unwrap().clone();
    calls.sort();
    assert_eq!(calls, vec!["batch 10", "batch 10", "batch 3"]);
}

#[tokio::test]
async fn missing_parameters_are_named() {
    let store = FakeStore::with(&[("/a", "1")]);
    let err = resolve(
        &store,
        &[single("/a", "A"), single("/b", "B"), single("/c", "C")],
        None,
    )
    .await
    .unwrap_err();
    assert_eq!(err.to_string(), "parameters not found: /b, /c");
    assert_eq!(crate::error::exit_status(&err), 1);
}

#[tokio::test]
async fn an_empty_path_is_an_error() {
    let store = FakeStore::with(&[("/a", "1")]);
    let err = resolve(&store, &[path("/nothing/here", true)], None)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "no parameters found under path /nothing/here"
    );
}

#[tokio::test]
async fn nested_names_under_a_recursive_path_are_refused_by_name() {
    let store = FakeStore::with(&[("/app/vars/OK", "1"), ("/app/vars/db/URL", "jdbc:secret")]);
    let resolved = resolve(&store, &[path("/app/vars", false)], None)
        .await
        .unwrap();
    assert_eq!(vars(&resolved), vec![("OK", "1")]);
    let err = resolve(&store, &[path("/app/vars", true)], None)
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("parameter /app/vars/db/URL: \"db/URL\""),
        "{msg}"
    );
    assert!(!msg.contains("jdbc:secret"));
    assert_eq!(crate::error::exit_status(&err), 2);
}

#[tokio::test]
async fn a_broken_document_names_the_parameter_and_line_not_the_value() {
    let store = FakeStore::with(&[("/app/env", "GOOD=1\nBAD='unterminated-secret\n")]);
    let err = resolve(&store, &[document("/app/env")], None)
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert_eq!(msg, "parameter /app/env is not a valid dotenv document: line 2: a quoted value without its closing quote");
    assert_eq!(crate::error::exit_status(&err), 2);
}

fn secret(id: &str, stage: Option<&str>, format: SecretFormat) -> Source {
    entry(ParamSource::Secret {
        id: SecretId::parse(id).unwrap(),
        stage: stage.map(|s| VersionStage::parse(s).unwrap()),
        format,
    })
}

fn json(prefix: &str) -> SecretFormat {
    SecretFormat::Json {
        prefix: prefix.to_string(),
    }
}

#[tokio::test]
async fn secrets_become_variables_in_each_format_and_order() {
    let store = FakeStore::with(&[("/app/A", "from-parameter")]).with_secrets(&[
        (
            "prod/db",
            "v-db",
            r#"{"username": "app", "password": "p\"w\nline2", "port": 5432, "tls": true, "note": null}"#,
        ),
        ("prod/env", "v-env", "A=from-secret\nB=${A}-b\n"),
        ("prod/token", "v-token", "t0k3n"),
        ("prod/token@AWSPREVIOUS", "v-old", "old-t0k3n"),
    ]);
    let sources = [
        single("/app/A", "A"),
        secret("prod/db", None, json("DB_")),
        secret("prod/env", None, SecretFormat::Dotenv),
        secret(
            "prod/token",
            None,
            SecretFormat::Value {
                key: EnvKey::parse("TOKEN").unwrap(),
            },
        ),
        secret(
            "prod/token",
            Some("AWSPREVIOUS"),
            SecretFormat::Value {
                key: EnvKey::parse("OLD_TOKEN").unwrap(),
            },
        ),
    ];
    let resolved = resolve(&store, &sources, None).await.unwrap();
    assert_eq!(
        vars(&resolved),
        vec![
            ("A", "from-secret"),
            ("DB_note", ""),
            ("DB_password", "p\"w\nline2"),
            ("DB_port", "5432"),
            ("DB_tls", "true"),
            ("DB_username", "app"),
            ("B", "from-secret-b"),
            ("TOKEN", "t0k3n"),
            ("OLD_TOKEN", "old-t0k3n"),
        ]
    );
    let version = |key: &str| resolved.versions[key].to_string();
    assert_eq!(version("secret:prod/db"), "v-db");
    assert_eq!(version("secret:prod/token"), "v-token");
    assert_eq!(version("secret:prod/token@AWSPREVIOUS"), "v-old");
    assert_eq!(version("/app/A"), "1");
    // The three current secrets in one batch; the pinned one alone.
    let mut calls = store.calls.lock().unwrap().clone();
    calls.sort();
    assert_eq!(
        calls,
        vec!["batch 1", "secret prod/token@AWSPREVIOUS", "secrets 3"]
    );
}

#[tokio::test]
async fn secrets_are_fetched_twenty_per_call_and_missing_ones_named() {
    let ids: Vec<String> = (0..45).map(|i| format!("s/{i:02}")).collect();
    let secrets: Vec<(&str, &str, &str)> = ids
        .iter()
        .map(|id| (id.as_str(), "v1", r#"{"K": "v"}"#))
        .collect();
    let store = FakeStore::default().with_secrets(&secrets);
    let sources: Vec<Source> = ids.iter().map(|id| secret(id, None, json(""))).collect();
    resolve(&store, &sources, None).await.unwrap();
    let mut calls = store.calls.lock().unwrap().clone();
    calls.sort();
    assert_eq!(calls, vec!["secrets 20", "secrets 20", "secrets 5"]);

    let sources = [
        secret("s/00", None, json("")),
        secret("nope", None, json("")),
    ];
    let err = resolve(&store, &sources, None).await.unwrap_err();
    assert_eq!(err.to_string(), "secret not found: nope");
}

/// A secret whose value does not read as its format says is an input error naming the secret,
/// and never quoting the value.
#[tokio::test]
async fn a_secret_that_does_not_read_names_the_secret_not_the_value() {
    let cases = [
        (
            r#"{"password": "hunter2""#,
            json(""),
            "is not valid JSON (line 1, column 22)",
        ),
        (r#""hunter2""#, json(""), "is JSON but not an object"),
        (
            r#"{"db": {"password": "hunter2"}}"#,
            json(""),
            "the value of key \"db\" is a nested",
        ),
        (
            r#"{"bad key": "hunter2"}"#,
            json(""),
            "\"bad key\" is not a valid variable name",
        ),
        (
            "password='hunter2",
            SecretFormat::Dotenv,
            "is not a valid dotenv document: line 1",
        ),
    ];
    for (value, format, expected) in cases {
        let store = FakeStore::default().with_secrets(&[("prod/db", "v1", value)]);
        let err = resolve(&store, &[secret("prod/db", None, format)], None)
            .await
            .unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("secret prod/db") && msg.contains(expected),
            "{msg}"
        );
        assert!(!msg.contains("hunter2"), "{msg}");
        assert_eq!(crate::error::exit_status(&err), 2, "{msg}");
    }
}

#[tokio::test]
async fn a_source_kept_out_of_the_env_file_is_resolved_for_secrets_only() {
    let store = FakeStore::with(&[("/app/A", "a"), ("/app/DB_PASSWORD", "pw")]);
    let mut hidden = single("/app/DB_PASSWORD", "DB_PASSWORD");
    hidden.env_file = false;
    let resolved = resolve(&store, &[single("/app/A", "A"), hidden], None)
        .await
        .unwrap();
    assert_eq!(vars(&resolved), vec![("A", "a")]);
    let only: Vec<(&str, &str)> = resolved
        .secret_only
        .iter()
        .map(|(k, v)| (k.as_str(), v.expose()))
        .collect();
    assert_eq!(only, vec![("DB_PASSWORD", "pw")]);
    // Watched like any other source.
    assert!(resolved.versions.contains_key("/app/DB_PASSWORD"));
}
