//! The Docker Engine side: converging the engine to the compose project through the Engine API
//! (bollard; no docker CLI), replacing only what changed, and proving it healthy.

pub mod converge;
pub mod docker;
pub mod health;
pub mod pull;
pub mod reference;
pub mod registry;
pub mod spec;
