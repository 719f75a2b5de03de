//! countersign's integration tests: one binary, the real `App` against local fakes.

mod support;

mod config;
mod crash;
mod delivery;
#[cfg(feature = "demo")]
mod demo;
mod discord;
mod grouping;
mod init;
mod intake;
mod notices;
mod operator;
mod properties;
mod proxy;
mod quiet;
mod reliability;
mod security;
mod store;
mod tracking;
mod wait;
