//! The Docker Engine side: converging the engine to the compose project through the Engine API
//! (bollard; no docker CLI), replacing only what changed, and proving it healthy.
//!
//! observe (what the engine holds, read once) → decide (a pure function of that and the project)
//! → execute (`converge`: pulls, the switch, the health wait and the rollback), with the engine
//! behind the [`api::Engine`] trait.

pub mod api;
pub mod containers;
pub mod converge;
pub mod decide;
pub mod docker;
pub mod drain;
#[cfg(test)]
pub mod fake;
pub mod fence;
pub mod health;
pub mod observe;
pub mod pull;
pub mod ready;
pub mod registry;
pub mod spec;
pub mod switch;
