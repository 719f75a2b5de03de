//! countersign's integration tests: one binary, the real `App` against local fakes.

mod support;

mod config;
mod delivery;
mod intake;
mod security;
mod tracking;
