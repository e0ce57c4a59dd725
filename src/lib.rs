//! kicky-agent: the EC2 boot agent that replaces the user-data script. It reads SSM parameters
//! into an env file, fetches files from S3, converges a compose project through the Docker Engine
//! API, and (as `kicky-agent run`) keeps it so under systemd.
//!
//! `main.rs` only parses the command line and reports errors; everything else lives here so the
//! integration tests drive the same code.
//!
//! The modules are layers; each uses only its own layer and those below it, and no two modules
//! use each other in a cycle (the `layers` test checks both):
//!
//! | layer      | modules                                                        |
//! |------------|----------------------------------------------------------------|
//! | cli        | [`cli`]                                                        |
//! | daemon     | [`daemon`]                                                     |
//! | drivers    | [`sync`], [`lifecycle`]                                        |
//! | world      | [`aws`], [`engine`]                                            |
//! | pure logic | [`compose`], [`envfile`], [`inputs`], [`interpolate`], [`iam`], [`release`] |
//! | config     | [`config`]                                                     |
//! | instance   | [`instance`]                                                   |
//! | base       | [`atomic`], [`digest`], [`error`], [`harden`], [`logging`], [`progress`], [`redact`], [`retry`], [`timeline`], [`yaml`] |

pub mod atomic;
pub mod aws;
pub mod cli;
pub mod compose;
pub mod config;
pub mod daemon;
pub mod digest;
pub mod engine;
pub mod envfile;
pub mod error;
pub mod harden;
pub mod iam;
pub mod inputs;
pub mod instance;
pub mod interpolate;
pub mod lifecycle;
pub mod logging;
pub mod progress;
pub mod redact;
pub mod release;
pub mod retry;
pub mod sync;
pub mod timeline;
pub mod yaml;

#[cfg(test)]
mod layers;
#[cfg(test)]
mod properties;
