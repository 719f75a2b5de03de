//! countersign puts an AI agent's pending OpenTrain spending approvals in front of the account's
//! owner, in the chat they already read, and keeps those messages true until each approval is
//! settled.
//!
//! The flow, one module per step:
//!
//! ```text
//! agent ─POST /v1/approvals─▶ intake ─▶ store ─▶ verify ─▶ delivery ─▶ notify (Telegram, console)
//!                                         ▲                    ▲
//!                                         └── tracker ─────────┘  (/updates, doorbells, expiry → edit)
//! ```
//!
//! - [`intake`]: the hook; a 2xx means the approval is on disk.
//! - [`store`]: SQLite (WAL, group commit); work is claimed with leases, never held across I/O.
//! - [`verify`]: reads each approval back from OpenTrain and fetches its money context; an
//!   approval OpenTrain does not know is never shown.
//! - [`delivery`] and [`notify`]: post, then edit, each message, paced per chat, at least once.
//! - [`tracker`]: learns terminal statuses from `/updates`, doorbells and expiry re-reads.
//!
//! Guarantees are listed in the README and SPEC §4; each module states the invariant it carries.

pub mod app;
pub mod approval;
pub mod check;
pub mod config;
pub mod delivery;
pub mod failures;
pub mod intake;
pub mod list;
pub mod metrics;
pub mod notify;
pub mod opentrain;
pub mod pair;
pub mod proxy;
pub mod reminders;
pub mod retention;
pub mod store;
pub mod tracker;
pub mod verify;
pub mod worker;

pub use app::App;
pub use config::Settings;
