//! Discord, through serenity's REST side only (no gateway): one embed per approval, posted to a
//! DM with the owner (`discord.user_id`) or to a channel (`discord.channel_id`), and PATCHed in
//! place when the approval resolves.
//!
//! - [`embed`](mod@embed): what the owner sees; [`markdown`]: how text is kept literal
//!   (nothing anyone but countersign wrote can link, mention or format).
//! - `transport`: the one path every request takes, production and tests alike;
//!   `ratelimit`: Discord's limits, kept by countersign alone; `errors`: Discord's answers
//!   sorted into verdicts.
//!
//! Every request carries an empty `allowed_mentions`, so nothing in a message can ping anyone.
//! No error built here contains the bot token, and every error text is scrubbed of it anyway.

pub mod embed;
mod errors;
pub mod markdown;
mod ratelimit;
mod transport;

use std::num::NonZeroU64;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{DeserializeOwned, IgnoredAny};
use serenity::all::{
    ChannelId, CreateAllowedMentions, CreateMessage, EditMessage, MessageFlags, MessageId,
    MessageReference, MessageReferenceKind, Nonce, UserId,
};
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

pub use embed::{EmbedView, colour, embed, group_embed, group_reminder_text, reminder_text};
pub use markdown::{escape_markdown, inline_code};
pub use transport::client_builder;

use super::{Card, Group, MessageRef, Notice, Notifier, NotifyError, Span};
use crate::config::{DiscordSettings, DiscordTarget, ExposeSecret};
use errors::{Op, classify};
use transport::{Call, Transport};

pub struct Discord {
    transport: Transport,
    target: DiscordTarget,
    /// The DM channel with the owner, opened once (DM mode only).
    dm: OnceCell<ChannelId>,
    min_interval: Duration,
}

impl Discord {
    /// The notifier as production runs it: Discord at `discord.com` (or `discord.api_url`).
    pub fn new(settings: &DiscordSettings) -> Result<Discord, String> {
        let client = client_builder()
            .build()
            .map_err(|e| format!("discord: cannot build an HTTP client: {e}"))?;
        Discord::with_client(settings, client)
    }

    /// The same notifier with its HTTP client given: tests hand one that resolves `discord.com`
    /// to a local fake and trusts its certificate (start from [`client_builder`]).
    pub fn with_client(
        settings: &DiscordSettings,
        client: reqwest::Client,
    ) -> Result<Discord, String> {
        let token = settings.bot_token.expose_secret().trim();
        if token.is_empty() {
            return Err("discord.bot_token: empty".into());
        }
        Ok(Discord {
            transport: Transport::new(token, settings.api_url.as_ref(), client)?,
            target: settings.target,
            dm: OnceCell::new(),
            min_interval: settings.min_send_interval,
        })
    }

    /// For `countersign check`: who the bot is and whether it can reach the owner's chat (the DM
    /// channel opens, or the channel is visible). Sends the owner nothing.
    pub async fn probe(&self) -> Result<String, NotifyError> {
        #[derive(Deserialize)]
        struct Me {
            username: String,
        }
        let me: Me = self.fire(Call::Me, Op::Me).await?;
        let target = match self.target {
            DiscordTarget::User(user) => {
                let dm = self.target_channel().await?;
                format!("direct messages to user {user} (channel {dm})")
            }
            DiscordTarget::Channel(channel) => {
                let id =
                    snowflake(channel).ok_or_else(|| permanent_bad_id("discord.channel_id"))?;
                let _: IgnoredAny = self.fire(Call::Channel(id), Op::Channel).await?;
                format!("channel {channel}")
            }
        };
        Ok(format!("bot {} can reach {target}", me.username))
    }

    /// Discord refused the bot token: no request is sent any more (until a restart).
    pub fn halted(&self) -> bool {
        self.transport.halted()
    }

    /// The channel new messages go to; in DM mode the DM channel is opened once and remembered.
    async fn target_channel(&self) -> Result<ChannelId, NotifyError> {
        match self.target {
            DiscordTarget::Channel(c) => {
                snowflake(c).ok_or_else(|| permanent_bad_id("discord.channel_id"))
            }
            DiscordTarget::User(u) => {
                let user: UserId =
                    snowflake(u).ok_or_else(|| permanent_bad_id("discord.user_id"))?;
                self.dm
                    .get_or_try_init(|| async {
                        #[derive(Deserialize)]
                        struct DmChannel {
                            id: ChannelId,
                        }
                        let dm: DmChannel = self.fire(Call::OpenDm(user), Op::OpenDm).await?;
                        Ok(dm.id)
                    })
                    .await
                    .copied()
            }
        }
    }

    /// Sends one request and decodes its answer, classifying any failure.
    async fn fire<T: DeserializeOwned>(&self, call: Call, op: Op) -> Result<T, NotifyError> {
        self.transport
            .send(&call)
            .await
            .map_err(|failure| self.transport.scrub(classify(failure, op, self.target)))
    }
}

fn permanent_bad_id(key: &str) -> NotifyError {
    NotifyError::Permanent(format!(
        "{key} is not a valid Discord id (it must not be 0)"
    ))
}

impl Notifier for Discord {
    fn channel(&self) -> &'static str {
        "discord"
    }

    fn min_interval(&self) -> Duration {
        self.min_interval
    }

    async fn remind(&self, message: &MessageRef, card: &Card) -> Result<(), NotifyError> {
        self.remind_group(message, &Group::one(card)).await
    }

    async fn post_group(&self, group: &Group) -> Result<MessageRef, NotifyError> {
        let channel = self.target_channel().await?;
        let body = CreateMessage::new()
            .embed(group_embed(group))
            .components(embed::group_components(group))
            .allowed_mentions(CreateAllowedMentions::new())
            // A post repeated after a lost answer returns the first message instead of a
            // second one (Discord remembers nonces for a few minutes).
            .nonce(Nonce::String(nonce(group)))
            .enforce_nonce(true)
            .flags(flags(group));
        let posted: Posted = self
            .fire(Call::Post(channel, to_body(&body)?), Op::Post)
            .await?;
        Ok(MessageRef::new(posted.channel_id, posted.id))
    }

    async fn edit_group(&self, message: &MessageRef, group: &Group) -> Result<(), NotifyError> {
        let (channel, id) = parse_ref(message)?;
        let body = EditMessage::new()
            .embed(group_embed(group))
            .components(embed::group_components(group))
            .allowed_mentions(CreateAllowedMentions::new());
        let _: IgnoredAny = self
            .fire(Call::Edit(channel, id, to_body(&body)?), Op::Edit)
            .await?;
        Ok(())
    }

    async fn remind_group(&self, message: &MessageRef, group: &Group) -> Result<(), NotifyError> {
        let (channel, id) = parse_ref(message)?;
        let body = CreateMessage::new()
            .content(group_reminder_text(group))
            // If the owner deleted the original, the reminder still stands on its own.
            .reference_message(
                MessageReference::new(MessageReferenceKind::Default, channel)
                    .message_id(id)
                    .fail_if_not_exists(false),
            )
            .allowed_mentions(CreateAllowedMentions::new())
            .flags(flags(group));
        let _: IgnoredAny = self
            .fire(Call::Post(channel, to_body(&body)?), Op::Remind)
            .await?;
        Ok(())
    }

    async fn post_notice(&self, notice: &Notice) -> Result<MessageRef, NotifyError> {
        let channel = self.target_channel().await?;
        let body = CreateMessage::new()
            .content(notice_text(notice))
            .allowed_mentions(CreateAllowedMentions::new())
            .flags(if notice.silent {
                MessageFlags::SUPPRESS_NOTIFICATIONS
            } else {
                MessageFlags::empty()
            });
        let posted: Posted = self
            .fire(Call::Post(channel, to_body(&body)?), Op::Post)
            .await?;
        Ok(MessageRef::new(posted.channel_id, posted.id))
    }

    async fn edit_notice(&self, message: &MessageRef, notice: &Notice) -> Result<(), NotifyError> {
        let (channel, id) = parse_ref(message)?;
        let body = EditMessage::new()
            .content(notice_text(notice))
            .allowed_mentions(CreateAllowedMentions::new());
        let _: IgnoredAny = self
            .fire(Call::Edit(channel, id, to_body(&body)?), Op::Edit)
            .await?;
        Ok(())
    }
}

/// A service notice as plain content: countersign's words escaped, outside text (an error) as
/// inline code, so nothing in it can link, mention or format.
pub fn notice_text(notice: &Notice) -> String {
    let symbol = if notice.cleared_at.is_some() {
        "✅"
    } else {
        "⚠️"
    };
    let mut out = format!(
        "{symbol} **countersign: {}**",
        escape_markdown(&notice.title(), 200)
    );
    for line in notice.lines() {
        out.push('\n');
        for span in line {
            match span {
                Span::Text(t) => out.push_str(&escape_markdown(&t, 400)),
                Span::Code(c) => out.push_str(&inline_code(&c, 400)),
            }
        }
    }
    // Under Discord's 2,000 characters: a title, four short lines and a detail of at most 300.
    out
}

/// A silent message (quiet hours) goes out with `SUPPRESS_NOTIFICATIONS`: it appears, but does
/// not ring.
fn flags(group: &Group) -> MessageFlags {
    if group.silent() {
        MessageFlags::SUPPRESS_NOTIFICATIONS
    } else {
        MessageFlags::empty()
    }
}

/// What countersign reads of a posted message. Only the ids: a post that succeeded must never
/// look failed because some other field changed shape.
#[derive(Deserialize)]
struct Posted {
    id: MessageId,
    channel_id: ChannelId,
}

fn to_body(body: &impl serde::Serialize) -> Result<Vec<u8>, NotifyError> {
    serde_json::to_vec(body)
        .map_err(|e| NotifyError::Permanent(format!("cannot encode the Discord message: {e}")))
}

/// Up to 25 characters, the same for every post of the same approvals (of one approval, the
/// same as before messages held several).
fn nonce(group: &Group) -> String {
    let ids: Vec<&str> = group.cards().map(|c| c.approval_id.as_str()).collect();
    approvals_nonce(&ids.join(","))
}

fn approvals_nonce(approval_ids: &str) -> String {
    let digest = Sha256::digest(format!("countersign:{approval_ids}").as_bytes());
    hex::encode(digest)[..25].to_string()
}

fn parse_ref(message: &MessageRef) -> Result<(ChannelId, MessageId), NotifyError> {
    let bad = || {
        NotifyError::Gone(format!(
            "unreadable Discord message reference {:?}",
            message.to_string()
        ))
    };
    let channel: u64 = message.chat.parse().map_err(|_| bad())?;
    let id: u64 = message.message.parse().map_err(|_| bad())?;
    Ok((
        snowflake(channel).ok_or_else(bad)?,
        snowflake(id).ok_or_else(bad)?,
    ))
}

/// A serenity id; `None` for 0 (serenity's `From<u64>` would panic).
fn snowflake<T: From<NonZeroU64>>(id: u64) -> Option<T> {
    NonZeroU64::new(id).map(T::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonce_is_stable_and_short() {
        assert_eq!(approvals_nonce("apr_1"), approvals_nonce("apr_1"));
        assert_ne!(approvals_nonce("apr_1"), approvals_nonce("apr_2"));
        assert_ne!(approvals_nonce("apr_1"), approvals_nonce("apr_1,apr_2"));
        assert_eq!(approvals_nonce("apr_1").len(), 25);
    }
}
