//! Every integration test, in one binary: one link of the agent and its dependencies instead of
//! one per file (ten links and about 0.4 GB more under `target/`). Each file is a module: run one
//! file's tests with `tests/run --test integration engine::`.
//!
//! Tests print (their figures, a daemon's log when they fail) with `println!`: what the agent
//! writes is checked free of secrets by the tests themselves (`assert_free_of`, `assert_same!`).

#![allow(clippy::disallowed_macros)]

#[macro_use]
mod common;

mod access;
mod bucket_owner;
mod compose_keys;
mod compose_parity;
mod compose_render;
mod daemon;
mod daemon_loop;
mod doctor;
mod engine;
mod env_file;
mod fleet;
mod iam;
mod import;
mod lifecycle;
mod managed_files;
mod mirror;
mod overrides;
mod packaging;
mod policy;
mod ready;
mod releases;
mod report;
mod retries;
mod rollout;
mod s3_files;
mod secrets;
mod simulated_instance;
mod storm;
mod waves;
