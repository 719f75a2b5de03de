//! Notifiers put a [`Card`] in front of the owner and later edit it. Each integration is thin: it
//! renders the card for its platform and classifies its platform's errors into a
//! [`NotifyError`] that says whether and when to try again. Pacing, retries, leases and
//! bookkeeping live in [`crate::delivery`], the same for every channel.

pub mod console;
pub mod discord;
pub mod render;
pub mod telegram;
pub mod telegram_commands;

use std::future::Future;
use std::time::Duration;

pub use crate::notices::{Notice, Span};
pub use render::{Card, CardState, Fact, Group};

/// Where a posted message lives (a chat and a message in it); the store keeps it and hands it
/// back for edits and reminders.
pub use crate::store::MessageRef;

/// Why a post or an edit did not happen, and what to do about it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NotifyError {
    /// The platform asked us to wait; nothing may be sent to that chat before `0` has passed.
    #[error("rate limited: retry after {0:?}")]
    RateLimited(Duration),
    /// A network failure or a server-side error: try again with backoff.
    #[error("transient: {0}")]
    Transient(String),
    /// The message no longer exists (the owner deleted it) or can no longer be edited. Final for
    /// that message: it is never re-posted.
    #[error("message gone: {0}")]
    Gone(String),
    /// A configuration or permission problem (bad token, unknown chat, bot blocked). Retrying
    /// cannot help until the operator acts; it is retried once at the next start.
    #[error("permanent: {0}")]
    Permanent(String),
}

/// One chat integration. Implementations must never put a secret in an error.
pub trait Notifier: Send + Sync + 'static {
    /// The channel's name in the store and in `list` (`telegram`, `discord`, `console`).
    fn channel(&self) -> &'static str;

    /// The least time between two requests to the owner's chat.
    fn min_interval(&self) -> Duration;

    /// Posts a new message showing every approval of `group`, silently when `group.silent()`
    /// (quiet hours). A group of one is exactly [`Notifier::post`] of its card.
    fn post_group(
        &self,
        group: &Group,
    ) -> impl Future<Output = Result<MessageRef, NotifyError>> + Send;

    /// Edits the message at `message` to show `group`, every approval it holds (a group of one:
    /// exactly [`Notifier::edit`]).
    fn edit_group(
        &self,
        message: &MessageRef,
        group: &Group,
    ) -> impl Future<Output = Result<(), NotifyError>> + Send;

    /// Replies to `message` with one reminder naming every approval of `group` (of one: exactly
    /// [`Notifier::remind`]).
    fn remind_group(
        &self,
        message: &MessageRef,
        group: &Group,
    ) -> impl Future<Output = Result<(), NotifyError>> + Send;

    /// Posts a new message showing `card`, silently when `card.silent` (quiet hours): a group
    /// of one.
    fn post(&self, card: &Card) -> impl Future<Output = Result<MessageRef, NotifyError>> + Send {
        async move { self.post_group(&Group::one(card)).await }
    }

    /// Edits the message at `message` to show `card`. An edit that changes nothing is a success.
    fn edit(
        &self,
        message: &MessageRef,
        card: &Card,
    ) -> impl Future<Output = Result<(), NotifyError>> + Send {
        async move { self.edit_group(message, &Group::one(card)).await }
    }

    /// Sends one short reminder that notifies the owner (silently when `card.silent`), in reply
    /// to `message`, while the approval is still pending (the message itself is edited to show
    /// the time left).
    fn remind(
        &self,
        message: &MessageRef,
        card: &Card,
    ) -> impl Future<Output = Result<(), NotifyError>> + Send;

    /// Posts a service notice (§3.8): a problem that keeps messages from being true, and its
    /// fix; silently when `notice.silent` (quiet hours).
    fn post_notice(
        &self,
        notice: &Notice,
    ) -> impl Future<Output = Result<MessageRef, NotifyError>> + Send;

    /// Edits a service notice, e.g. to say that its problem cleared. An edit that changes
    /// nothing is a success.
    fn edit_notice(
        &self,
        message: &MessageRef,
        notice: &Notice,
    ) -> impl Future<Output = Result<(), NotifyError>> + Send;
}

/// A notifier shared by the channel's delivery and its notice board (one pace, one client).
impl<N: Notifier> Notifier for std::sync::Arc<N> {
    fn channel(&self) -> &'static str {
        (**self).channel()
    }

    fn min_interval(&self) -> Duration {
        (**self).min_interval()
    }

    fn post_group(
        &self,
        group: &Group,
    ) -> impl Future<Output = Result<MessageRef, NotifyError>> + Send {
        (**self).post_group(group)
    }

    fn edit_group(
        &self,
        message: &MessageRef,
        group: &Group,
    ) -> impl Future<Output = Result<(), NotifyError>> + Send {
        (**self).edit_group(message, group)
    }

    fn remind_group(
        &self,
        message: &MessageRef,
        group: &Group,
    ) -> impl Future<Output = Result<(), NotifyError>> + Send {
        (**self).remind_group(message, group)
    }

    fn post(&self, card: &Card) -> impl Future<Output = Result<MessageRef, NotifyError>> + Send {
        (**self).post(card)
    }

    fn edit(
        &self,
        message: &MessageRef,
        card: &Card,
    ) -> impl Future<Output = Result<(), NotifyError>> + Send {
        (**self).edit(message, card)
    }

    fn remind(
        &self,
        message: &MessageRef,
        card: &Card,
    ) -> impl Future<Output = Result<(), NotifyError>> + Send {
        (**self).remind(message, card)
    }

    fn post_notice(
        &self,
        notice: &Notice,
    ) -> impl Future<Output = Result<MessageRef, NotifyError>> + Send {
        (**self).post_notice(notice)
    }

    fn edit_notice(
        &self,
        message: &MessageRef,
        notice: &Notice,
    ) -> impl Future<Output = Result<(), NotifyError>> + Send {
        (**self).edit_notice(message, notice)
    }
}
