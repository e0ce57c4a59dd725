//! `kicky-agent render`: the compose project as the agent understands it, interpolated and
//! normalized, in the shape `docker compose config` prints. Exit 2 when the compose file is wrong.

use std::path::Path;

use anyhow::{Context, Result};
use clap::Args;

/// Print the compose project as the agent understands it: interpolated and normalized, in the
/// shape `docker compose config` prints (YAML, or JSON with --json).
///
/// Variables come from the env file the agent writes (`env.file`; without `env:`, the `.env`
/// beside the compose file), then the agent's environment. Every value that came from a variable
/// (an image tag, a command, a label...), and an `environment` value from an `env_file` or
/// inherited from the environment, is printed as "********", because it may be an SSM secret;
/// what the compose file spells out is printed as it is. Like compose, `$` is printed `$$`.
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
        let text = match self.json {
            true => format!("{}\n", crate::compose::to_json(&project)),
            false => crate::compose::to_yaml(&project),
        };
        // Not through the text redactor (`out!`): the project is masked where values came from
        // variables, exactly, short ones too (`compose::render`), and what the compose file
        // spells out is printed as the file spells it, even where a value of the env file
        // happens to equal it (the seed stack's `TZ`).
        crate::redact::to_stdout_exact(&text);
        Ok(())
    }
}
