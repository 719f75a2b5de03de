//! Owner commands on Telegram: `/pending` (the pending approvals, each with its link and time
//! left) and `/help`, answered only in the configured chat. Messages from any other chat are
//! ignored and logged once per chat. The command menu is registered with `setMyCommands`.
//!
//! Updates come by long polling `getUpdates`; only one program may poll a bot, so
//! `telegram.owner_commands = false` turns this off for a bot shared with something else.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use teloxide::prelude::*;
use teloxide::types::{
    AllowedUpdate, BotCommand, ChatId, LinkPreviewOptions, ParseMode, UpdateKind,
};
use teloxide::{ApiError, RequestError};
use tokio_util::sync::CancellationToken;

use crate::approval::{Kind, Usd, parse_time};
use crate::failures::Streak;
use crate::notify::render::{identifier, relative};
use crate::store::{ApprovalView, Store};
use crate::text::html_escape as esc;
use crate::worker::{Pacer, sleep_or_cancel};

/// How many approvals one `/pending` answer lists (Telegram's 4096-character limit).
const MAX_LISTED: usize = 20;

pub struct OwnerCommands {
    pub bot: Bot,
    pub chat: ChatId,
    pub store: Store,
    pub app_url: String,
    /// The chat's pace, shared with delivery: an answer waits its turn like any message.
    pub pacer: Pacer,
    /// The owner's time zone (`owner.timezone`), for the expiry times listed.
    pub zone: jiff::tz::TimeZone,
}

/// Written by hand: teloxide's `Bot` derives `Debug` with the token in it.
impl std::fmt::Debug for OwnerCommands {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnerCommands")
            .field("chat", &self.chat.0)
            .field("app_url", &self.app_url)
            .finish_non_exhaustive()
    }
}

/// The answer to `/help`.
pub fn help_html() -> String {
    "<b>countersign</b> brings your agents' OpenTrain spending requests here for you to sign.\n\
     Each request is a message with its amount, context and a button to review it in OpenTrain; \
     when you confirm or decline there, the message is updated.\n\n\
     /pending — the requests still waiting for you\n\
     /help — this text"
        .to_string()
}

/// The answer to `/pending` at `now`, expiry times on the owner's clock (`zone`).
pub fn pending_html(
    views: &[ApprovalView],
    app_url: &str,
    zone: &jiff::tz::TimeZone,
    now: DateTime<Utc>,
) -> String {
    if views.is_empty() {
        return "✅ Nothing is waiting for you.".to_string();
    }
    let mut out = format!(
        "🔔 <b>{} pending approval{}</b>\n",
        views.len(),
        if views.len() == 1 { "" } else { "s" }
    );
    for v in views.iter().take(MAX_LISTED) {
        let what = Kind::parse(&v.kind)
            .map(|k| k.headline().to_string())
            .unwrap_or_else(|| identifier(&v.kind, 40));
        let amount = v
            .amount
            .as_deref()
            .and_then(|a| serde_json::from_str::<serde_json::Value>(a).ok())
            .and_then(|a| Usd::from_json(&a))
            .map(|a| format!(" · {a}"))
            .unwrap_or_default();
        let left = v
            .expires_at
            .as_deref()
            .and_then(parse_time)
            .map(|t| {
                format!(
                    " · expires {} ({})",
                    crate::quiet::format_in(zone, t),
                    relative(t, now)
                )
            })
            .unwrap_or_default();
        // The link is built here from the app URL and a validated id, never taken from input;
        // the id is safe inside an attribute (letters, digits, '_' and '-').
        out.push_str(&format!(
            "\n• <a href=\"{}/approvals/{}\">{}</a>{}{} (<code>{}</code>)",
            esc(app_url),
            esc(&v.id),
            esc(&what),
            esc(&amount),
            esc(&left),
            esc(&v.id)
        ));
    }
    if views.len() > MAX_LISTED {
        out.push_str(&format!("\n\n…and {} more", views.len() - MAX_LISTED));
    }
    out
}

impl OwnerCommands {
    pub async fn run(self, cancel: CancellationToken) {
        let menu = vec![
            BotCommand::new("pending", "Requests still waiting for you"),
            BotCommand::new("help", "What this bot does"),
        ];
        if let Err(e) = self.bot.set_my_commands(menu).await {
            tracing::warn!(error = %e, "telegram: could not register the command menu");
        }
        let mut offset: i32 = 0;
        let mut ignored: HashSet<i64> = HashSet::new();
        let mut failures = Streak::default();
        while !cancel.is_cancelled() {
            let request = self
                .bot
                .get_updates()
                .offset(offset)
                .timeout(10)
                .allowed_updates(vec![AllowedUpdate::Message]);
            let result = tokio::select! {
                r = request => r,
                _ = cancel.cancelled() => break,
            };
            match result {
                Ok(updates) => {
                    failures.recovered();
                    for update in updates {
                        offset = offset.max(update.id.0 as i32 + 1);
                        if let UpdateKind::Message(message) = update.kind {
                            self.handle(&message, &mut ignored, &cancel).await;
                        }
                    }
                }
                Err(RequestError::Api(ApiError::CantGetUpdates)) => {
                    tracing::error!(
                        "telegram: a webhook is set on this bot, so owner commands cannot be read; \
                         remove the webhook or set telegram.owner_commands = false"
                    );
                    return;
                }
                Err(RequestError::RetryAfter(s)) => {
                    sleep_or_cancel(s.duration(), &cancel).await;
                }
                Err(e) => {
                    if failures.failed() {
                        let e = crate::notify::telegram::classify(e);
                        tracing::warn!(error = %e, failures = failures.count(), "telegram: reading owner commands failed; backing off");
                    }
                    let wait = failures.backoff(Duration::from_secs(1), Duration::from_secs(60));
                    sleep_or_cancel(wait, &cancel).await;
                }
            }
        }
    }

    async fn handle(
        &self,
        message: &Message,
        ignored: &mut HashSet<i64>,
        cancel: &CancellationToken,
    ) {
        if message.chat.id != self.chat {
            if ignored.insert(message.chat.id.0) {
                tracing::warn!(
                    chat_id = message.chat.id.0,
                    "telegram: ignoring messages from a chat that is not telegram.chat_id"
                );
            }
            return;
        }
        let Some(text) = message.text() else { return };
        // "/pending", "/pending@my_bot", "/pending extra words".
        let command = text
            .split_whitespace()
            .next()
            .unwrap_or("")
            .split('@')
            .next()
            .unwrap_or("");
        let reply = match command {
            "/pending" => match self.store.list(Some("pending".into()), 1000).await {
                Ok(views) => pending_html(&views, &self.app_url, &self.zone, Utc::now()),
                Err(e) => {
                    tracing::error!(error = %e, "telegram: /pending could not read the store");
                    "⚠️ countersign could not read its store; see its logs.".to_string()
                }
            },
            "/help" | "/start" => help_html(),
            _ => return,
        };
        // A few tries: the owner is waiting for this answer, but it is not worth more.
        for _ in 0..3 {
            if !self.pacer.wait(cancel).await {
                return;
            }
            let sent = self
                .bot
                .send_message(self.chat, reply.clone())
                .parse_mode(ParseMode::Html)
                .link_preview_options(LinkPreviewOptions {
                    is_disabled: true,
                    url: None,
                    prefer_small_media: false,
                    prefer_large_media: false,
                    show_above_text: false,
                })
                .await;
            self.pacer.done();
            match sent {
                Ok(_) => return,
                Err(RequestError::RetryAfter(s)) => self.pacer.hold_for(s.duration()),
                Err(e) => {
                    let e = crate::notify::telegram::classify(e);
                    tracing::warn!(error = %e, command, "telegram: could not answer an owner command");
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_shows_expiry_on_the_owner_clock_with_the_zone_named() {
        let view = ApprovalView {
            id: "apr_1".into(),
            kind: "milestone_funding".into(),
            status: "pending".into(),
            amount: None,
            expires_at: Some("2026-06-15T10:00:00Z".into()),
            resolved_at: None,
            received_at: "2026-06-12T11:00:00Z".into(),
            agent: None,
            reason: None,
            superseded_by: None,
            deliveries: Vec::new(),
        };
        let now = parse_time("2026-06-12T11:00:00Z").unwrap();
        let tokyo = jiff::tz::TimeZone::get("Asia/Tokyo").unwrap();
        let out = pending_html(&[view], "https://app.opentrain.test", &tokyo, now);
        assert!(
            out.contains("expires 2026-06-15 19:00 JST (in 71 h)"),
            "{out}"
        );
    }
}
