//! The Docker Engine side: converging the engine to the compose project through the Engine API
//! (bollard; no docker CLI), replacing only what changed, and proving it healthy.

pub mod converge;
pub mod docker;
pub mod health;
pub mod pull;
pub mod reference;
pub mod registry;
pub mod spec;
pub mod status;

/// The engine's own words for an error, without bollard's wrapping: the registry's or the
/// daemon's message and the HTTP status.
pub(crate) fn engine_message(err: &bollard::errors::Error) -> String {
    match err {
        bollard::errors::Error::DockerStreamError { error } => error.clone(),
        bollard::errors::Error::DockerResponseServerError {
            status_code,
            message,
        } => {
            format!("{message} (HTTP {status_code})")
        }
        other => other.to_string(),
    }
}
