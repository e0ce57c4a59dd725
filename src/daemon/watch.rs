//! What the daemon looks at between syncs: the versions of the parameters and the ETags of the
//! objects, without fetching a value or a body (DescribeParameters and HeadObject).

use anyhow::Result;

use crate::aws::s3::ObjectStore;
use crate::aws::ssm::ParameterStore;
use crate::config::ParamSource;
use crate::config::Settings;
use crate::sync::files::{self, Change};
use crate::sync::state::State;

/// The changes since the last good sync, in words (names and versions, never values).
pub async fn changes(
    settings: &Settings,
    state: &State,
    ssm: &impl ParameterStore,
    s3: &impl ObjectStore,
) -> Result<Vec<String>> {
    let mut found = Vec::new();
    if let Some(env) = &settings.env {
        let mut names = Vec::new();
        let mut paths = Vec::new();
        for source in &env.sources {
            match source {
                ParamSource::Document { name } | ParamSource::Single { name, .. } => {
                    names.push(name.as_str().to_string())
                }
                ParamSource::Path { path, recursive } => {
                    paths.push((path.as_str().to_string(), *recursive))
                }
            }
        }
        let now = ssm.versions(&names, &paths).await?;
        for (name, version) in &now {
            match state.parameters.get(name) {
                Some(old) if old == version => {}
                Some(old) => found.push(format!("parameter {name}: version {old} -> {version}")),
                None => found.push(format!("parameter {name}: new (version {version})")),
            }
        }
        for name in state.parameters.keys().filter(|n| !now.contains_key(*n)) {
            found.push(format!("parameter {name}: gone"));
        }
    }
    for file in &settings.files {
        let change = files::plan(s3, file, state.files.get(&file.path)).await?;
        if change != Change::Unchanged {
            found.push(format!(
                "file {}: {} (from {})",
                file.path.display(),
                change.as_str(),
                file.source
            ));
        }
    }
    Ok(found)
}
