//! countersign's integration tests: one binary, the real `App` against local fakes.

mod support;

mod config;
mod delivery;
mod discord;
mod intake;
mod proxy;
mod reliability;
mod security;
mod tracking;
