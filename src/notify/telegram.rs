//! Telegram, through teloxide: HTML parse mode with every dynamic value escaped, every piece of
//! outside text (the agent's words and what third parties wrote on OpenTrain, see
//! [`super::render`]) shown as code — Telegram finds links, bare domains, e-mail addresses and
//! `@mentions` in plain text by itself, but never inside code — a URL button to the approval as the
//! only link, and no link preview. The bot token sits in the request path; teloxide scrubs it from its network errors and
//! nothing here formats a request URL.

use std::fmt;
use std::time::Duration;

use teloxide::prelude::*;
use teloxide::types::{
    ChatId, InlineKeyboardButton, InlineKeyboardMarkup, LinkPreviewOptions, MessageId, ParseMode,
    ReplyParameters,
};
use teloxide::{ApiError, RequestError};

use super::render::AmountSource;
use super::{Card, CardState, MessageRef, Notice, Notifier, NotifyError, Span};
use crate::config::{ExposeSecret, TelegramSettings};
use crate::text::html_escape as esc;

pub struct Telegram {
    bot: Bot,
    chat: ChatId,
    min_interval: Duration,
}

/// Written by hand: teloxide's `Bot` derives `Debug` with the token in it.
impl fmt::Debug for Telegram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Telegram")
            .field("chat", &self.chat.0)
            .field("min_interval", &self.min_interval)
            .finish_non_exhaustive()
    }
}

impl Telegram {
    pub fn new(settings: &TelegramSettings) -> Telegram {
        // teloxide appends `/bot<token>/<Method>` to the path; a trailing slash would double it.
        let mut url = settings.api_url.clone();
        let trimmed = url.path().trim_end_matches('/').to_string();
        url.set_path(&trimmed);
        Telegram {
            bot: Bot::new(settings.bot_token.expose_secret()).set_api_url(url),
            chat: ChatId(settings.chat_id),
            min_interval: settings.min_send_interval,
        }
    }

    pub fn bot(&self) -> &Bot {
        &self.bot
    }
}

fn no_preview() -> LinkPreviewOptions {
    LinkPreviewOptions {
        is_disabled: true,
        url: None,
        prefer_small_media: false,
        prefer_large_media: false,
        show_above_text: false,
    }
}

fn keyboard(card: &Card) -> InlineKeyboardMarkup {
    match (card.state.is_pending(), reqwest::Url::parse(&card.link)) {
        (true, Ok(url)) => InlineKeyboardMarkup::new(vec![vec![InlineKeyboardButton::url(
            "Review and sign in OpenTrain",
            url,
        )]]),
        // An empty keyboard removes the button from an edited message.
        _ => InlineKeyboardMarkup::default(),
    }
}

/// Outside text as Telegram shows it literally: escaped, in code, where Telegram neither formats
/// nor finds links or mentions.
fn code(s: &str) -> String {
    format!("<code>{}</code>", esc(s))
}

/// The message text in Telegram's HTML.
pub fn html(card: &Card) -> String {
    let mut out = String::new();
    let (symbol, word) = card.state.label();
    let amount = card.amount.as_ref().map(|a| a.value.to_string());
    if card.state.is_pending() {
        out.push_str(&format!("{symbol} <b>{}</b>", esc(&card.headline)));
        if let Some(a) = &amount {
            out.push_str(&format!(" · <b>{}</b>", esc(a)));
        }
    } else {
        out.push_str(&format!(
            "{symbol} <b>{}</b> · {}",
            esc(&word),
            esc(&card.headline)
        ));
        if let Some(a) = &amount {
            out.push_str(&format!(" · {}", esc(a)));
        }
    }
    out.push('\n');
    if let Some(line) = card.amount_line() {
        let line = match card.amount.as_ref().map(|a| a.source) {
            Some(AmountSource::Agent) => format!("Amount: {} ⚠️", esc(&line)),
            _ => format!("Amount: {}", esc(&line)),
        };
        out.push_str(&line);
        out.push('\n');
    }
    for fact in &card.facts {
        out.push_str(&format!("{}: {}\n", fact.label, code(&fact.value)));
    }
    match &card.state {
        CardState::Pending => {
            if let Some(line) = card.expiry_line() {
                out.push_str(&format!("Expires: {}\n", esc(&line)));
            }
        }
        CardState::Confirmed { evidence, .. } => {
            for (k, v) in evidence {
                out.push_str(&format!("{}: {}\n", esc(k), code(v)));
            }
        }
        CardState::Superseded { by } => {
            out.push_str("Replaced by a newer hire request for the same proposal");
            if let Some(by) = by {
                out.push_str(&format!(" ({})", code(by)));
            }
            out.push('\n');
        }
        _ => {}
    }
    if let Some(t) = card.state.resolved_at() {
        out.push_str(&format!("Resolved: {}\n", esc(&card.local_time(t))));
    }
    out.push_str(&format!("<i>approval {}</i>", esc(&card.approval_id)));
    out
}

impl Notifier for Telegram {
    fn channel(&self) -> &'static str {
        "telegram"
    }

    fn min_interval(&self) -> Duration {
        self.min_interval
    }

    async fn post(&self, card: &Card) -> Result<MessageRef, NotifyError> {
        let message = self
            .bot
            .send_message(self.chat, html(card))
            .parse_mode(ParseMode::Html)
            .link_preview_options(no_preview())
            .reply_markup(keyboard(card))
            .disable_notification(card.silent)
            .await
            .map_err(classify)?;
        Ok(MessageRef::new(message.chat.id.0, message.id.0))
    }

    async fn edit(&self, message: &MessageRef, card: &Card) -> Result<(), NotifyError> {
        let (chat, id) = parse_ref(message)?;
        let result = self
            .bot
            .edit_message_text(chat, id, html(card))
            .parse_mode(ParseMode::Html)
            .link_preview_options(no_preview())
            .reply_markup(keyboard(card))
            .await;
        match result {
            Ok(_) => Ok(()),
            // The message already shows this: the edit's goal is met.
            Err(RequestError::Api(ApiError::MessageNotModified)) => Ok(()),
            Err(e) => Err(classify(e)),
        }
    }

    async fn remind(&self, message: &MessageRef, card: &Card) -> Result<(), NotifyError> {
        let (chat, id) = parse_ref(message)?;
        self.bot
            .send_message(chat, reminder_html(card))
            .parse_mode(ParseMode::Html)
            .link_preview_options(no_preview())
            .disable_notification(card.silent)
            // If the owner deleted the original, the reminder still stands on its own.
            .reply_parameters(ReplyParameters::new(id).allow_sending_without_reply())
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn post_notice(&self, notice: &Notice) -> Result<MessageRef, NotifyError> {
        let message = self
            .bot
            .send_message(self.chat, notice_html(notice))
            .parse_mode(ParseMode::Html)
            .link_preview_options(no_preview())
            .disable_notification(notice.silent)
            .await
            .map_err(classify)?;
        Ok(MessageRef::new(message.chat.id.0, message.id.0))
    }

    async fn edit_notice(&self, message: &MessageRef, notice: &Notice) -> Result<(), NotifyError> {
        let (chat, id) = parse_ref(message)?;
        let result = self
            .bot
            .edit_message_text(chat, id, notice_html(notice))
            .parse_mode(ParseMode::Html)
            .link_preview_options(no_preview())
            .await;
        match result {
            Ok(_) | Err(RequestError::Api(ApiError::MessageNotModified)) => Ok(()),
            Err(e) => Err(classify(e)),
        }
    }
}

/// A service notice: countersign's words escaped, outside text (an error) as code, so nothing
/// in it can link or format.
pub fn notice_html(notice: &Notice) -> String {
    let symbol = if notice.cleared_at.is_some() {
        "✅"
    } else {
        "⚠️"
    };
    let mut out = format!("{symbol} <b>countersign: {}</b>", esc(&notice.title()));
    for line in notice.lines() {
        out.push('\n');
        for span in line {
            match span {
                Span::Text(t) => out.push_str(&esc(&t)),
                Span::Code(c) => out.push_str(&format!("<code>{}</code>", esc(&c))),
            }
        }
    }
    out
}

/// The short nudge sent as a reply: what, how much, how long is left.
pub fn reminder_html(card: &Card) -> String {
    let mut out = format!("⏰ <b>Reminder</b>: {}", esc(&card.headline));
    if let Some(a) = &card.amount {
        out.push_str(&format!(" · {}", esc(&a.value.to_string())));
    }
    if let Some(t) = card.expires_at {
        out.push_str(&format!(
            " expires {}",
            esc(&super::render::relative(t, card.now))
        ));
    }
    out.push_str(&format!(" · <i>approval {}</i>", esc(&card.approval_id)));
    out
}

/// How to name the bot to its owner: `@username`, else its first name.
pub fn bot_name(me: &teloxide::types::Me) -> String {
    me.user
        .username
        .clone()
        .map(|u| format!("@{u}"))
        .unwrap_or_else(|| me.user.first_name.clone())
}

fn parse_ref(message: &MessageRef) -> Result<(ChatId, MessageId), NotifyError> {
    let bad = || {
        NotifyError::Gone(format!(
            "unreadable Telegram message reference {:?}",
            message.to_string()
        ))
    };
    Ok((
        ChatId(message.chat.parse().map_err(|_| bad())?),
        MessageId(message.message.parse().map_err(|_| bad())?),
    ))
}

/// Sorts teloxide's errors into what delivery should do next.
pub fn classify(e: RequestError) -> NotifyError {
    match e {
        RequestError::RetryAfter(s) => NotifyError::RateLimited(s.duration()),
        RequestError::Network(e) => NotifyError::Transient(format!("network error: {e}")),
        RequestError::InvalidJson { .. } => {
            NotifyError::Transient("Telegram's answer was not valid JSON".into())
        }
        RequestError::Io(e) => NotifyError::Transient(format!("I/O error: {e}")),
        RequestError::MigrateToChatId(id) => NotifyError::Permanent(format!(
            "the group became a supergroup: set telegram.chat_id = {}",
            id.0
        )),
        RequestError::Api(api) => classify_api(api),
    }
}

fn classify_api(api: ApiError) -> NotifyError {
    match api {
        ApiError::MessageToEditNotFound | ApiError::MessageCantBeEdited => {
            NotifyError::Gone(api.to_string())
        }
        ApiError::InvalidToken => {
            NotifyError::Permanent("Telegram rejected telegram.bot_token (Unauthorized)".into())
        }
        ApiError::ChatNotFound => NotifyError::Permanent(
            "Telegram does not know telegram.chat_id (chat not found): check the id, \
             and that the owner has opened the bot and pressed Start"
                .into(),
        ),
        ApiError::BotBlocked => {
            NotifyError::Permanent("the owner has blocked the bot in Telegram".into())
        }
        ApiError::Unknown(text) => {
            if text.contains("bot can't initiate conversation") {
                NotifyError::Permanent(
                    "the owner has not started the bot: open it in Telegram and press Start".into(),
                )
            } else if text.starts_with("Bad Request")
                || text.starts_with("Forbidden")
                || text.starts_with("Unauthorized")
            {
                NotifyError::Permanent(format!("Telegram refused: {text}"))
            } else {
                // "Internal Server Error", "Bad Gateway" and the like.
                NotifyError::Transient(format!("Telegram answered: {text}"))
            }
        }
        other => NotifyError::Permanent(format!("Telegram refused: {other}")),
    }
}
