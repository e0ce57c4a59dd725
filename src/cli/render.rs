//! `kicky-agent render`: the compose project as the agent understands it, interpolated and
//! normalized, in the shape `docker compose config` prints. Exit 2 when the compose file is wrong.

use std::path::Path;

use anyhow::{Context, Result};
use clap::Args;

/// Print the compose project as the agent understands it: interpolated and normalized, in the
/// shape `docker compose config` prints (YAML, or JSON with --json).
///
/// Variables come from the env file the agent writes (`env.file`; without `env:`, the `.env`
/// beside the compose file), then the agent's environment. An `environment` value is printed
/// only when the compose file writes it out literally; a value from an `env_file`, from a
/// variable or inherited from the environment is printed as "********", because it may be an
/// SSM secret. Every other field is printed interpolated. Like compose, `$` is printed `$$`.
#[derive(Debug, Args)]
pub struct RenderCmd {
    /// Print JSON instead of YAML.
    #[arg(long)]
    json: bool,
}

impl RenderCmd {
    pub fn run(self, config: &Path) -> Result<()> {
        let settings = super::load(config)?;
        // As written: `validate` and every sync judge it against `compose.policy`.
        let project =
            crate::compose::load_as_written(&settings).with_context(|| {
                match &settings.compose {
                    Some(compose) => format!("invalid compose file {}", compose.file.display()),
                    None => "nothing to render".to_string(),
                }
            })?;
        if self.json {
            println!("{}", crate::compose::to_json(&project));
        } else {
            print!("{}", crate::compose::to_yaml(&project));
        }
        Ok(())
    }
}
