//! Resolution logic against an in-memory store: batching, order, precedence and the errors.
//! The same paths run against moto in `tests/env_file.rs`.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::*;
use crate::aws::ssm::Batch;
use crate::config::types::{EnvKey, ParamName, ParamPath};

#[derive(Default)]
struct FakeStore {
    params: BTreeMap<String, String>,
    calls: Mutex<Vec<String>>,
}

impl FakeStore {
    fn with(params: &[(&str, &str)]) -> Self {
        FakeStore {
            params: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            calls: Mutex::default(),
        }
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

fn single(name: &str, key: &str) -> ParamSource {
    ParamSource::Single {
        name: ParamName::parse(name).unwrap(),
        key: EnvKey::parse(key).unwrap(),
    }
}

fn document(name: &str) -> ParamSource {
    ParamSource::Document {
        name: ParamName::parse(name).unwrap(),
    }
}

fn path(p: &str, recursive: bool) -> ParamSource {
    ParamSource::Path {
        path: ParamPath::parse(p).unwrap(),
        recursive,
    }
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
    let resolved = resolve(&store, &sources).await.unwrap();
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
    let sources: Vec<ParamSource> = params.iter().map(|(k, _)| single(k, &k[3..])).collect();
    let resolved = resolve(&store, &sources).await.unwrap();
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
    )
    .await
    .unwrap_err();
    assert_eq!(err.to_string(), "parameters not found: /b, /c");
    assert_eq!(crate::error::exit_status(&err), 1);
}

#[tokio::test]
async fn an_empty_path_is_an_error() {
    let store = FakeStore::with(&[("/a", "1")]);
    let err = resolve(&store, &[path("/nothing/here", true)])
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
    let resolved = resolve(&store, &[path("/app/vars", false)]).await.unwrap();
    assert_eq!(vars(&resolved), vec![("OK", "1")]);
    let err = resolve(&store, &[path("/app/vars", true)])
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
    let err = resolve(&store, &[document("/app/env")]).await.unwrap_err();
    let msg = err.to_string();
    assert_eq!(msg, "parameter /app/env is not a valid dotenv document: line 2: a quoted value without its closing quote");
    assert_eq!(crate::error::exit_status(&err), 2);
}
