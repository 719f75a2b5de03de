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

use super::render::{AmountSource, GROUP_CUTS};
use super::{Card, CardState, Group, MessageRef, Notice, Notifier, NotifyError, Span};
use crate::config::{ExposeSecret, TelegramSettings};
use crate::text::{cut, html_escape as esc};
use crate::worker::Window;

/// Telegram's limit on a message's text, in UTF-16 units after the HTML is parsed.
pub const MAX_TEXT_UTF16: usize = 4096;
/// What a group's button says at most (Telegram cuts long labels on screen anyway).
const BUTTON_CHARS: usize = 64;

pub struct Telegram {
    bot: Bot,
    chat: ChatId,
    min_interval: Duration,
}

/// Telegram lets a bot send at most 20 messages a minute to one group (any chat with a negative
/// id); a burst may go at the chat's interval until the minute is full.
pub const GROUP_WINDOW: Window = Window {
    limit: 20,
    period: Duration::from_secs(60),
};

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

    /// The group's per-minute limit, when the owner's chat is a group.
    pub fn window(&self) -> Option<Window> {
        (self.chat.0 < 0).then_some(GROUP_WINDOW)
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

/// A group's keyboard: one row per approval still pending, each its own link, labelled with
/// its line number, action and amount. A lone approval keeps its card's one button.
fn group_keyboard(group: &Group) -> InlineKeyboardMarkup {
    if let Some(card) = group.single() {
        return keyboard(card);
    }
    let rows: Vec<Vec<InlineKeyboardButton>> = group
        .entries()
        .iter()
        .filter(|(_, card)| card.state.is_pending())
        .filter_map(|(n, card)| {
            let url = reqwest::Url::parse(&card.link).ok()?;
            Some(vec![InlineKeyboardButton::url(
                card.button_label(*n, BUTTON_CHARS),
                url,
            )])
        })
        .collect();
    // No row left removes the keyboard from an edited message.
    InlineKeyboardMarkup::new(rows)
}

/// The message for `group` in Telegram's HTML: a lone approval's card exactly as on its own, or
/// a header and one line per approval. A line's context, and then its approval id, are cut
/// until the whole fits Telegram's limit: a group is never refused for its size.
pub fn group_html(group: &Group) -> String {
    if let Some(card) = group.single() {
        return html(card);
    }
    fit(|context, id| group_html_at(group, context, id))
}

/// The first rendering that fits Telegram's limit, trying ever shorter context, then ids.
fn fit(render: impl Fn(usize, usize) -> String) -> String {
    let mut text = String::new();
    for (context, id) in GROUP_CUTS {
        text = render(context, id);
        if visible_len(&text) <= MAX_TEXT_UTF16 {
            break;
        }
    }
    text
}

fn group_html_at(group: &Group, context: usize, id_chars: usize) -> String {
    let (symbol, header) = group.header();
    let mut out = format!("{symbol} <b>{}</b>", esc(&header));
    if let Some(total) = group.total_line() {
        out.push_str(&format!(" · <b>{}</b>", esc(&total)));
    }
    for (n, card) in group.entries() {
        let (symbol, word) = card.state.label();
        if card.state.is_pending() {
            out.push_str(&format!("\n{n}. {symbol} <b>{}</b>", esc(&card.headline)));
        } else {
            out.push_str(&format!(
                "\n{n}. {symbol} {} · {}",
                esc(&word),
                esc(&card.headline)
            ));
        }
        if let Some(a) = card.short_amount() {
            out.push_str(&format!(" · {}", esc(&a)));
        }
        let context = card.short_context(context);
        if !context.is_empty() {
            out.push_str(&format!(" · {}", code(&context)));
        }
        if card.state.is_pending()
            && let Some(line) = card.expiry_line()
        {
            out.push_str(&format!(" · expires {}", esc(&line)));
        }
        out.push_str(&format!(
            " · <i>approval {}</i>",
            esc(&cut(&card.approval_id, id_chars))
        ));
    }
    out
}

/// The length Telegram counts: UTF-16 units of the text once tags are parsed away and entities
/// decoded (every `<` and `&` of the text itself is escaped, so each one opens a tag or an
/// entity).
fn visible_len(html: &str) -> usize {
    let mut n = 0;
    let mut chars = html.chars();
    while let Some(c) = chars.next() {
        match c {
            '<' => chars.by_ref().take_while(|&c| c != '>').for_each(drop),
            '&' => {
                chars.by_ref().take_while(|&c| c != ';').for_each(drop);
                n += 1;
            }
            c => n += c.len_utf16(),
        }
    }
    n
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

    async fn remind(&self, message: &MessageRef, card: &Card) -> Result<(), NotifyError> {
        self.remind_group(message, &Group::one(card)).await
    }

    async fn post_group(&self, group: &Group) -> Result<MessageRef, NotifyError> {
        let message = self
            .bot
            .send_message(self.chat, group_html(group))
            .parse_mode(ParseMode::Html)
            .link_preview_options(no_preview())
            .reply_markup(group_keyboard(group))
            .disable_notification(group.silent())
            .await
            .map_err(classify)?;
        Ok(MessageRef::new(message.chat.id.0, message.id.0))
    }

    async fn edit_group(&self, message: &MessageRef, group: &Group) -> Result<(), NotifyError> {
        let (chat, id) = parse_ref(message)?;
        let result = self
            .bot
            .edit_message_text(chat, id, group_html(group))
            .parse_mode(ParseMode::Html)
            .link_preview_options(no_preview())
            .reply_markup(group_keyboard(group))
            .await;
        match result {
            Ok(_) => Ok(()),
            // The message already shows this: the edit's goal is met.
            Err(RequestError::Api(ApiError::MessageNotModified)) => Ok(()),
            Err(e) => Err(classify(e)),
        }
    }

    async fn remind_group(&self, message: &MessageRef, group: &Group) -> Result<(), NotifyError> {
        let (chat, id) = parse_ref(message)?;
        self.bot
            .send_message(chat, group_reminder_html(group))
            .parse_mode(ParseMode::Html)
            .link_preview_options(no_preview())
            .disable_notification(group.silent())
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

/// A reminder naming every approval of `group` (one: exactly [`reminder_html`]), by its line
/// in the message it replies to.
pub fn group_reminder_html(group: &Group) -> String {
    if let Some(card) = group.single() {
        return reminder_html(card);
    }
    fit(|_, id_chars| {
        let mut out = format!(
            "⏰ <b>Reminder</b>: {} approvals still wait for you",
            group.len()
        );
        for (n, card) in group.entries() {
            out.push_str(&format!("\n{n}. {}", reminded(card, id_chars)));
        }
        out
    })
}

/// The short nudge sent as a reply: what, how much, how long is left.
pub fn reminder_html(card: &Card) -> String {
    format!("⏰ <b>Reminder</b>: {}", reminded(card, usize::MAX))
}

/// What a reminder says of one approval, its id cut to `id_chars`.
fn reminded(card: &Card, id_chars: usize) -> String {
    let mut out = esc(&card.headline);
    if let Some(a) = &card.amount {
        out.push_str(&format!(" · {}", esc(&a.value.to_string())));
    }
    if let Some(t) = card.expires_at {
        out.push_str(&format!(
            " expires {}",
            esc(&super::render::relative(t, card.now))
        ));
    }
    out.push_str(&format!(
        " · <i>approval {}</i>",
        esc(&cut(&card.approval_id, id_chars))
    ));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::render::fixtures::worst_group;

    #[test]
    fn a_group_of_25_of_the_worst_fits_telegrams_limit_with_every_line_and_button() {
        let group = worst_group(25);
        let text = group_html(&group);
        assert!(
            visible_len(&text) <= MAX_TEXT_UTF16,
            "{}",
            visible_len(&text)
        );
        assert_eq!(text.lines().count(), 26);
        for n in 1..=25 {
            assert!(text.contains(&format!("\n{n}. 🔔 <b>")), "line {n}");
        }
        assert!(!text.contains("<b>Spanish") && !text.contains("@everyone <"));
        assert_eq!(group_keyboard(&group).inline_keyboard.len(), 25);
        let reminder = group_reminder_html(&group);
        assert!(visible_len(&reminder) <= MAX_TEXT_UTF16);
        // What Telegram counts: text without tags, entities as one character.
        assert_eq!(visible_len("<b>a&amp;b</b> <code>&lt;é</code>"), 6);
    }
}
