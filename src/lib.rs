//! countersign puts an AI agent's pending OpenTrain spending approvals in front of the account's
//! owner, in the chat they already read, and keeps those messages true until each approval is
//! settled.
//!
//! The flow, one module per step:
//!
//! ```text
//! agent ─POST /v1/approvals─▶ intake ─▶ store ─▶ verify ─▶ delivery ─▶ notify (Telegram, Discord, console)
//!   (or its OpenTrain tool ─▶ proxy ─┘    ▲                    ▲
//!                                         └── tracker ─────────┘  (/updates, doorbells, expiry → edit)
//! ```
//!
//! - [`intake`]: the hook (approvals, events, OpenTrain webhooks, reads); a 2xx means the
//!   approval is on disk. [`proxy`] feeds the same intake from an agent's own OpenTrain calls.
//! - [`store`]: SQLite (WAL, group commit), the only module that speaks SQL; work is claimed
//!   with leases, never held across I/O, and one unreadable record never stops the rest.
//! - [`verify`]: reads each approval back from OpenTrain ([`opentrain`]) and fetches its money
//!   context; an approval OpenTrain does not know is never shown.
//! - [`delivery`] and [`notify`]: post, then edit, each message, paced per chat, at least once.
//! - [`tracker`]: learns terminal statuses from `/updates`, doorbells and expiry re-reads, and
//!   fires [`reminders`] before expiry.
//! - [`worker`] and [`failures`]: what the background loops share — leases, the claim pool,
//!   idling, and backing off (one log line, not one per failure) when something keeps failing.
//! - [`retention`]: prunes approvals settled longer ago than `store.retention`.
//! - [`app`] wires it together; [`list`], [`check`] and [`pair`] serve the command line.
//!
//! Guarantees are listed in the README and SPEC §4; each module states the invariant it carries.

pub mod app;
pub mod approval;
pub mod check;
pub mod client;
pub mod config;
pub mod delivery;
#[cfg(feature = "demo")]
pub mod demo;
pub mod failures;
pub mod init;
pub mod intake;
pub mod list;
pub mod metrics;
pub mod notices;
pub mod notify;
pub mod opentrain;
pub mod outcome;
pub mod pair;
pub mod proxy;
pub mod quiet;
pub mod reminders;
pub mod retention;
pub mod serve;
pub mod store;
pub mod text;
pub mod tracker;
pub mod verify;
pub mod worker;

pub use app::App;
pub use config::Settings;
