//! Discord, through serenity's REST client only (no gateway): one embed per approval, posted to a
//! DM with the owner (`discord.user_id`) or to a channel (`discord.channel_id`), and PATCHed in
//! place when the approval resolves.
//!
//! What the owner sees: an embed whose title says what is asked and the amount, one field per
//! piece of context, the expiry (UTC and Discord's live relative timestamp), the approval id in
//! the footer, a colour for the status (amber pending, green confirmed, red declined, grey
//! otherwise) and, while pending, a link button (style 5) to the approval. Every request carries
//! an empty `allowed_mentions`, so nothing in a message can ping anyone. Outside text is escaped
//! for Discord's markdown, agent text is shown verbatim as inline code, every `@` is followed by
//! a zero-width space, and every value is cut to Discord's limits (title 256, field name 256,
//! field value 1024, 25 fields, 6000 in all), so an approval is never refused for its size.
//!
//! Transport. With `discord.api_url` unset (the real Discord) requests go through serenity's
//! `Http` with its own rate limiter on: it buckets requests per route and waits out every 429
//! that carries `Retry-After` before retrying by itself. With `discord.api_url` set (tests, or an
//! HTTP proxy in front of Discord) serenity's ratelimiter cannot be used (it ignores the proxy),
//! so the same serenity `Request` (route, headers, JSON body) is built against that origin and
//! sent with our own `reqwest` client; this lets a 429 be read in full and its `retry_after`
//! honoured exactly. A 429 whose wait cannot be read (serenity drops a 429's headers when its
//! ratelimiter did not handle it, e.g. a Cloudflare ban) is waited out for 2 s, doubling while
//! they follow each other, up to 10 min.
//!
//! The bot token only travels in the `Authorization` header, never in a URL; no error built here
//! contains it, and every error text is scrubbed of it anyway.

use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serenity::all::{
    ChannelId, Colour, CreateActionRow, CreateAllowedMentions, CreateButton, CreateEmbed,
    CreateEmbedFooter, CreateMessage, EditMessage, MessageId, MessageReference,
    MessageReferenceKind, Nonce, UserId,
};
use serenity::http::{ErrorResponse, Http, HttpBuilder, HttpError, LightMethod, Request, Route};
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use super::render::{AmountSource, clean, format_utc};
use super::{Card, CardState, MessageRef, Notifier, NotifyError};
use crate::config::{DiscordSettings, DiscordTarget, Secret};

/// Embed colours by status.
pub const AMBER: u32 = 0xF5A623;
pub const GREEN: u32 = 0x2ECC71;
pub const RED: u32 = 0xE74C3C;
pub const GREY: u32 = 0x95A5A6;

/// Discord's limits on an embed (documented; the API refuses a message that exceeds them).
pub const MAX_TITLE: usize = 256;
pub const MAX_FIELDS: usize = 25;
pub const MAX_FIELD_NAME: usize = 256;
pub const MAX_FIELD_VALUE: usize = 1024;
pub const MAX_FOOTER: usize = 2048;
/// What the footer is cut to (an approval id is short; the rest of the budget is the fields').
const FOOTER_CHARS: usize = 256;
pub const MAX_EMBED_TOTAL: usize = 6000;

const BUTTON_LABEL: &str = "Review and sign in OpenTrain";
/// The path serenity puts in front of every route; `discord.api_url` must end with it.
const API_PATH: &str = "/api/v10";
/// The wait after a 429 whose `retry_after` could not be read, doubled per 429 in a row; no
/// 429 is waited out longer than `MAX_429_WAIT` before trying again.
const BLIND_429_WAIT: Duration = Duration::from_secs(2);
const MAX_429_WAIT: Duration = Duration::from_secs(600);
const ZWSP: char = '\u{200B}';

pub struct Discord {
    http: Http,
    /// Set when `discord.api_url` is not Discord itself: requests go to `base` through `client`.
    direct: Option<Direct>,
    target: DiscordTarget,
    /// The DM channel with the owner, opened once (DM mode only).
    dm: OnceCell<ChannelId>,
    min_interval: Duration,
    /// 429s in a row whose wait was unknown.
    blind_429s: AtomicU32,
    /// The token as configured, only to scrub it from error texts.
    token: Secret,
}

struct Direct {
    client: reqwest::Client,
    /// Scheme, host, port and any path before `/api/v10`, e.g. `http://127.0.0.1:4000`.
    base: String,
}

impl Discord {
    pub fn new(settings: &DiscordSettings) -> Result<Discord, String> {
        let token = settings.bot_token.expose().trim();
        if token.is_empty() {
            return Err("discord.bot_token: empty".into());
        }
        let (http, direct) = match &settings.api_url {
            None => (Http::new(token), None),
            Some(url) => {
                let base = proxy_base(url)?;
                let client = reqwest::Client::builder()
                    .use_rustls_tls()
                    .connect_timeout(Duration::from_secs(10))
                    .build()
                    .map_err(|e| format!("discord: cannot build an HTTP client: {e}"))?;
                let http = HttpBuilder::new(token)
                    .client(client.clone())
                    .proxy(base.clone())
                    .ratelimiter_disabled(true)
                    .build();
                (http, Some(Direct { client, base }))
            }
        };
        Ok(Discord {
            http,
            direct,
            target: settings.target,
            dm: OnceCell::new(),
            min_interval: settings.min_send_interval,
            blind_429s: AtomicU32::new(0),
            token: Secret::new(token),
        })
    }

    /// serenity's client, e.g. for `countersign check`.
    pub fn http(&self) -> &Http {
        &self.http
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
                        let body = serde_json::json!({ "recipient_id": user.to_string() });
                        let request = Request::new(Route::UserMeDmChannels, LightMethod::Post)
                            .body(Some(body.to_string().into_bytes()));
                        let dm: DmChannel = self.fire(request, Op::OpenDm).await?;
                        Ok(dm.id)
                    })
                    .await
                    .copied()
            }
        }
    }

    /// Sends one request and decodes its answer, classifying any failure.
    async fn fire<T: DeserializeOwned>(
        &self,
        request: Request<'_>,
        op: Op,
    ) -> Result<T, NotifyError> {
        let result = match &self.direct {
            Some(direct) => self.fire_direct(direct, request).await,
            None => self.http.fire(request).await.map_err(Failure::from),
        };
        match result {
            Ok(value) => {
                self.blind_429s.store(0, Ordering::Relaxed);
                Ok(value)
            }
            Err(Failure::RateLimited(Some(wait))) => Err(NotifyError::RateLimited(wait)),
            Err(Failure::RateLimited(None)) => Err(NotifyError::RateLimited(self.blind_wait())),
            Err(Failure::Api(response))
                if response.status_code == StatusCode::TOO_MANY_REQUESTS =>
            {
                Err(NotifyError::RateLimited(self.blind_wait()))
            }
            Err(failure) => Err(self.scrub(classify(failure, op, self.target))),
        }
    }

    /// What serenity's `Http::request` does without a ratelimiter, except that a 429 is read
    /// before its body is turned into an error (serenity would drop `retry_after`).
    async fn fire_direct<T: DeserializeOwned>(
        &self,
        direct: &Direct,
        request: Request<'_>,
    ) -> Result<T, Failure> {
        let method = request.method_ref().reqwest_method();
        let built = request
            .build(&direct.client, self.http.token(), Some(&direct.base))
            .map_err(Failure::from)?
            .build()
            .map_err(Failure::Network)?;
        let response = direct
            .client
            .execute(built)
            .await
            .map_err(Failure::Network)?;
        let status = response.status();
        if status == StatusCode::TOO_MANY_REQUESTS {
            let header = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<f64>().ok());
            #[derive(Deserialize)]
            struct Limited {
                retry_after: Option<f64>,
            }
            let body = response
                .json::<Limited>()
                .await
                .ok()
                .and_then(|l| l.retry_after);
            // The body's value is exact; the header is rounded up to whole seconds.
            let wait = body
                .or(header)
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(|s| Duration::from_secs_f64(s.min(MAX_429_WAIT.as_secs_f64())));
            return Err(Failure::RateLimited(wait));
        }
        if !status.is_success() {
            return Err(Failure::Api(
                ErrorResponse::from_response(response, method).await,
            ));
        }
        let bytes = response.bytes().await.map_err(Failure::Network)?;
        serde_json::from_slice(&bytes).map_err(|e| Failure::Decode(e.to_string()))
    }

    /// The wait after a 429 of unknown length: 2 s, doubled per such 429 in a row.
    fn blind_wait(&self) -> Duration {
        let streak = self.blind_429s.fetch_add(1, Ordering::Relaxed).min(16);
        BLIND_429_WAIT.saturating_mul(1 << streak).min(MAX_429_WAIT)
    }

    fn scrub(&self, e: NotifyError) -> NotifyError {
        let clean = |s: String| s.replace(self.token.expose(), "[redacted]");
        match e {
            NotifyError::Transient(s) => NotifyError::Transient(clean(s)),
            NotifyError::Gone(s) => NotifyError::Gone(clean(s)),
            NotifyError::Permanent(s) => NotifyError::Permanent(clean(s)),
            limited @ NotifyError::RateLimited(_) => limited,
        }
    }
}

/// `discord.api_url` minus `/api/v10`: what serenity puts in place of `https://discord.com`.
fn proxy_base(url: &reqwest::Url) -> Result<String, String> {
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!(
            "discord.api_url: {url} is not an http(s) URL with a host"
        ));
    }
    let path = url.path().trim_end_matches('/');
    let prefix = if path.is_empty() {
        ""
    } else if let Some(prefix) = path.strip_suffix(API_PATH) {
        prefix
    } else {
        return Err(format!(
            "discord.api_url: the path must end with {API_PATH} (serenity speaks API v10), got {path:?}"
        ));
    };
    let mut origin = url.origin().ascii_serialization();
    origin.push_str(prefix);
    Ok(origin)
}

fn permanent_bad_id(key: &str) -> NotifyError {
    NotifyError::Permanent(format!(
        "{key} is not a valid Discord id (it must not be 0)"
    ))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    OpenDm,
    Post,
    Edit,
    /// A reply to a posted message.
    Remind,
}

/// A failed request, before classification.
#[derive(Debug)]
enum Failure {
    /// A 429; the wait when the answer said it.
    RateLimited(Option<Duration>),
    /// Discord answered with a non-2xx status.
    Api(ErrorResponse),
    /// The request did not get an answer (connect, TLS, timeout, reset).
    Network(reqwest::Error),
    /// A 2xx whose body could not be read.
    Decode(String),
    /// Anything else serenity reports (a bad header value, a bad URL).
    Other(String),
}

impl From<serenity::Error> for Failure {
    fn from(e: serenity::Error) -> Failure {
        match e {
            serenity::Error::Http(HttpError::UnsuccessfulRequest(response)) => {
                Failure::Api(response)
            }
            serenity::Error::Http(HttpError::Request(e)) => Failure::Network(e),
            serenity::Error::Json(e) => Failure::Decode(e.to_string()),
            other => Failure::Other(other.to_string()),
        }
    }
}

/// The error and its causes on one line, without the request URL.
fn network_text(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn classify(failure: Failure, op: Op, target: DiscordTarget) -> NotifyError {
    match failure {
        Failure::RateLimited(wait) => NotifyError::RateLimited(wait.unwrap_or(BLIND_429_WAIT)),
        Failure::Network(e) => NotifyError::Transient(format!(
            "network error talking to Discord: {}",
            network_text(e)
        )),
        Failure::Decode(e) => {
            NotifyError::Transient(format!("Discord's answer could not be read: {e}"))
        }
        Failure::Other(e) => NotifyError::Permanent(format!("Discord request not sent: {e}")),
        Failure::Api(response) => {
            let mut detail = match response.error.code {
                // Not Discord's JSON (a proxy's or Cloudflare's page): the status says it all.
                -1 => String::new(),
                0 => clean(&response.error.message, 200),
                code => format!("{} (code {code})", clean(&response.error.message, 200)),
            };
            for e in response.error.errors.iter().take(5) {
                detail.push_str(&format!(
                    "; {}: {}",
                    clean(&e.path, 100),
                    clean(&e.message, 200)
                ));
            }
            classify_api(
                response.status_code.as_u16(),
                response.error.code,
                &detail,
                op,
                target,
            )
        }
    }
}

/// Sorts one Discord error answer (status, JSON `code`, readable detail) into what delivery
/// should do next.
fn classify_api(
    status: u16,
    code: isize,
    detail: &str,
    op: Op,
    target: DiscordTarget,
) -> NotifyError {
    let answered = if detail.is_empty() {
        format!("Discord answered {status}")
    } else {
        format!("Discord answered {status}: {detail}")
    };
    let key = match target {
        DiscordTarget::User(_) => "discord.user_id",
        DiscordTarget::Channel(_) => "discord.channel_id",
    };
    match (status, code) {
        (429, _) => NotifyError::RateLimited(BLIND_429_WAIT),
        (_, 10008) => NotifyError::Gone(format!("{answered}: the message was deleted")),
        // The message's channel is gone (a deleted channel, a closed thread).
        (_, 10003) if matches!(op, Op::Edit | Op::Remind) => {
            NotifyError::Gone(format!("{answered}: the message's channel is gone"))
        }
        (_, 50005) => NotifyError::Gone(format!("{answered}: the message cannot be edited")),
        (_, 10003) => NotifyError::Permanent(format!(
            "{answered}: Discord does not know the channel in {key}; check the id"
        )),
        (_, 50007) => NotifyError::Permanent(format!(
            "{answered}: the owner does not accept direct messages from the bot; they must share \
             a server with it and allow DMs from that server's members (or set \
             discord.channel_id instead)"
        )),
        (_, 10013 | 50033) => NotifyError::Permanent(format!(
            "{answered}: Discord cannot open a DM with {key}; check the id, and that the user \
             shares a server with the bot"
        )),
        (401, _) => NotifyError::Permanent(format!(
            "{answered}: Discord rejected discord.bot_token (401 Unauthorized); check the token"
        )),
        (_, 50001) => NotifyError::Permanent(format!(
            "{answered}: the bot cannot see the channel in {key} (Missing Access); add it to the \
             server and give it View Channel"
        )),
        (_, 50013) => NotifyError::Permanent(format!(
            "{answered}: the bot lacks a permission in {key}; it needs View Channel, Send \
             Messages and Embed Links"
        )),
        (403, _) => NotifyError::Permanent(format!("{answered}: refused")),
        (408 | 500..=599, _) => NotifyError::Transient(answered),
        // Any other 4xx means the request itself is wrong (a bug here): retrying cannot help.
        _ => NotifyError::Permanent(format!("{answered}: the request was refused")),
    }
}

impl Notifier for Discord {
    fn channel(&self) -> &'static str {
        "discord"
    }

    fn min_interval(&self) -> Duration {
        self.min_interval
    }

    async fn post(&self, card: &Card) -> Result<MessageRef, NotifyError> {
        let channel = self.target_channel().await?;
        let body = CreateMessage::new()
            .embed(embed(card))
            .components(components(card))
            .allowed_mentions(CreateAllowedMentions::new())
            // A post repeated after a lost answer returns the first message instead of a
            // second one (Discord remembers nonces for a few minutes).
            .nonce(Nonce::String(nonce(&card.approval_id)))
            .enforce_nonce(true);
        let request = Request::new(
            Route::ChannelMessages {
                channel_id: channel,
            },
            LightMethod::Post,
        )
        .body(Some(to_body(&body)?));
        let posted: Posted = self.fire(request, Op::Post).await?;
        Ok(MessageRef::new(posted.channel_id, posted.id))
    }

    async fn edit(&self, message: &MessageRef, card: &Card) -> Result<(), NotifyError> {
        let (channel, id) = parse_ref(message)?;
        let body = EditMessage::new()
            .embed(embed(card))
            .components(components(card))
            .allowed_mentions(CreateAllowedMentions::new());
        let request = Request::new(
            Route::ChannelMessage {
                channel_id: channel,
                message_id: id,
            },
            LightMethod::Patch,
        )
        .body(Some(to_body(&body)?));
        let _: serde::de::IgnoredAny = self.fire(request, Op::Edit).await?;
        Ok(())
    }

    async fn remind(&self, message: &MessageRef, card: &Card) -> Result<(), NotifyError> {
        let (channel, id) = parse_ref(message)?;
        let body = CreateMessage::new()
            .content(reminder_text(card))
            // If the owner deleted the original, the reminder still stands on its own.
            .reference_message(
                MessageReference::new(MessageReferenceKind::Default, channel)
                    .message_id(id)
                    .fail_if_not_exists(false),
            )
            .allowed_mentions(CreateAllowedMentions::new());
        let request = Request::new(
            Route::ChannelMessages {
                channel_id: channel,
            },
            LightMethod::Post,
        )
        .body(Some(to_body(&body)?));
        let _: serde::de::IgnoredAny = self.fire(request, Op::Remind).await?;
        Ok(())
    }
}

/// The short nudge sent as a reply: what, how much, how long is left (Discord's live relative
/// time), which approval.
pub fn reminder_text(card: &Card) -> String {
    let mut out = format!("⏰ **Reminder**: {}", escape_markdown(&card.headline, 100));
    if let Some(a) = &card.amount {
        out.push_str(&format!(" · {}", a.value));
    }
    if let Some(t) = card.expires_at {
        out.push_str(&format!(
            " expires <t:{}:R> ({})",
            t.timestamp(),
            format_utc(t)
        ));
    }
    out.push_str(&format!(
        " · approval {}",
        escape_markdown(&card.approval_id, 200)
    ));
    out
}

#[derive(Deserialize)]
struct Posted {
    id: MessageId,
    channel_id: ChannelId,
}

fn to_body(body: &impl serde::Serialize) -> Result<Vec<u8>, NotifyError> {
    serde_json::to_vec(body)
        .map_err(|e| NotifyError::Permanent(format!("cannot encode the Discord message: {e}")))
}

/// Up to 25 characters, the same for every post of one approval.
fn nonce(approval_id: &str) -> String {
    let digest = Sha256::digest(format!("countersign:{approval_id}").as_bytes());
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

fn components(card: &Card) -> Vec<CreateActionRow> {
    if card.state.is_pending() {
        vec![CreateActionRow::Buttons(vec![
            CreateButton::new_link(&card.link).label(BUTTON_LABEL),
        ])]
    } else {
        // An empty list removes the button from an edited message.
        Vec::new()
    }
}

pub fn colour(state: &CardState) -> u32 {
    match state {
        CardState::Pending => AMBER,
        CardState::Confirmed { .. } => GREEN,
        CardState::Declined { .. } => RED,
        CardState::Expired { .. } | CardState::Superseded { .. } | CardState::Other { .. } => GREY,
    }
}

/// The embed for `card`, within Discord's limits.
pub fn embed(card: &Card) -> CreateEmbed {
    let view = EmbedView::of(card);
    CreateEmbed::new()
        .title(view.title)
        .colour(Colour::new(view.colour))
        .fields(view.fields)
        .footer(CreateEmbedFooter::new(view.footer))
}

/// The embed's text, rendered and cut to Discord's limits.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbedView {
    pub title: String,
    pub colour: u32,
    pub fields: Vec<(String, String, bool)>,
    pub footer: String,
}

/// A field value before rendering, so that it can be rendered again shorter.
enum Text {
    /// Our own text (amounts, times, timestamp markup): shown as is.
    Ours(String),
    /// Outside text (OpenTrain's titles, names, ids): markdown escaped.
    Escaped(String),
    /// The agent's words, or ids: verbatim, as inline code.
    Code(String),
}

impl Text {
    fn render(&self, max: usize) -> String {
        match self {
            Text::Ours(s) => cut(s, max),
            Text::Escaped(s) => escape_markdown(s, max),
            Text::Code(s) => inline_code(s, max),
        }
    }
}

impl EmbedView {
    pub fn of(card: &Card) -> EmbedView {
        let (symbol, word) = card.state.label();
        let amount = card.amount.as_ref().map(|a| a.value.to_string());
        let (prefix, suffix) = {
            let prefix = if card.state.is_pending() {
                format!("{symbol} ")
            } else {
                format!("{symbol} {word} · ")
            };
            let suffix = amount.map(|a| format!(" · {a}")).unwrap_or_default();
            (prefix, suffix)
        };
        let room = MAX_TITLE.saturating_sub(chars(&prefix) + chars(&suffix));
        let title = cut(
            &format!("{prefix}{}{suffix}", escape_markdown(&card.headline, room)),
            MAX_TITLE,
        );

        let mut fields: Vec<(String, Text, bool)> = Vec::new();
        if let Some(line) = card.amount_line() {
            let line = match card.amount.as_ref().map(|a| a.source) {
                Some(AmountSource::Agent) => format!("{line} ⚠️"),
                _ => line,
            };
            fields.push(("Amount".into(), Text::Ours(line), false));
        }
        for fact in &card.facts {
            let value = if fact.from_agent {
                Text::Code(fact.value.clone())
            } else {
                Text::Escaped(fact.value.clone())
            };
            fields.push((fact.label.to_string(), value, false));
        }
        match &card.state {
            CardState::Pending => {
                if let Some(t) = card.expires_at {
                    // A UTC time everyone reads the same, and Discord's live "in 3 hours".
                    let value = format!("{} (<t:{}:R>)", format_utc(t), t.timestamp());
                    fields.push(("Expires".into(), Text::Ours(value), false));
                }
            }
            CardState::Confirmed { evidence, .. } => {
                for (k, v) in evidence {
                    fields.push((
                        escape_markdown(k, MAX_FIELD_NAME),
                        Text::Code(v.clone()),
                        true,
                    ));
                }
            }
            CardState::Superseded { by } => {
                let mut value = "a newer hire request for the same proposal".to_string();
                if let Some(by) = by {
                    value.push_str(&format!(" ({})", inline_code(&clean(by, 120), 200)));
                }
                fields.push(("Replaced by".into(), Text::Ours(value), false));
            }
            _ => {}
        }
        if let Some(t) = card.state.resolved_at() {
            fields.push(("Resolved".into(), Text::Ours(format_utc(t)), false));
        }
        fields.truncate(MAX_FIELDS);

        let footer = cut(&format!("approval {}", card.approval_id), FOOTER_CHARS);
        let names: Vec<String> = fields
            .iter()
            .map(|(n, _, _)| cut(n, MAX_FIELD_NAME))
            .collect();
        let fixed = chars(&title) + chars(&footer) + names.iter().map(|n| chars(n)).sum::<usize>();
        let budget = MAX_EMBED_TOTAL.saturating_sub(fixed);
        let full: Vec<String> = fields
            .iter()
            .map(|(_, v, _)| v.render(MAX_FIELD_VALUE))
            .collect();
        let cap = fair_cap(&full.iter().map(|v| chars(v)).collect::<Vec<_>>(), budget);
        let fields = fields
            .iter()
            .zip(names)
            .zip(full)
            .map(|(((_, text, inline), name), full)| {
                let value = if chars(&full) <= cap {
                    full
                } else {
                    text.render(cap.max(1))
                };
                (name, value, *inline)
            })
            .collect();
        EmbedView {
            title,
            colour: colour(&card.state),
            fields,
            footer,
        }
    }

    /// The characters Discord counts towards the 6000 limit.
    pub fn total_chars(&self) -> usize {
        chars(&self.title)
            + chars(&self.footer)
            + self
                .fields
                .iter()
                .map(|(n, v, _)| chars(n) + chars(v))
                .sum::<usize>()
    }
}

/// The largest per-value length at which all values fit in `budget` (values shorter than it
/// are kept whole): the long values share what the short ones leave.
fn fair_cap(lengths: &[usize], budget: usize) -> usize {
    if lengths.iter().sum::<usize>() <= budget {
        return usize::MAX;
    }
    let mut sorted = lengths.to_vec();
    sorted.sort_unstable();
    let mut left = budget;
    for (i, &len) in sorted.iter().enumerate() {
        let rest = sorted.len() - i;
        if len * rest > left {
            return left / rest;
        }
        left -= len;
    }
    usize::MAX
}

fn chars(s: &str) -> usize {
    s.chars().count()
}

/// Cuts to `max` characters, ending with an ellipsis when something was cut.
fn cut(s: &str, max: usize) -> String {
    if chars(s) <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Characters that mean something to Discord's markdown anywhere in a line: emphasis, code,
/// spoilers, masked links, `<@mentions>`, `<t:timestamps>`, `:emoji:` and `https:` (a
/// backslash before the colon stops the autolink).
fn is_markdown(c: char) -> bool {
    matches!(
        c,
        '\\' | '*' | '_' | '~' | '`' | '|' | '<' | '[' | ']' | '(' | ')' | ':'
    )
}

/// Characters that mean something only at the start of a line: quotes, headings, lists.
fn is_line_start_markdown(c: char) -> bool {
    matches!(c, '>' | '#' | '-' | '+')
}

/// Outside text (one line, as `clean` makes it) as Discord shows it literally: markdown
/// characters escaped with a backslash, as is a leading quote, heading or list marker (`>`,
/// `#`, `-`, `+`, `1.`), and a zero-width space after every `@` (so `@everyone` does not even
/// look like a ping). At most `max` characters, an escape never split.
pub fn escape_markdown(s: &str, max: usize) -> String {
    let mut out = String::new();
    let mut count = 0;
    let mut leading_digits = true;
    let total = s.chars().count();
    for (i, c) in s.chars().enumerate() {
        let mut piece = String::new();
        if is_markdown(c)
            || (i == 0 && is_line_start_markdown(c))
            || (c == '.' && leading_digits && i > 0)
        {
            piece.push('\\');
        }
        piece.push(c);
        if c == '@' {
            piece.push(ZWSP);
        }
        leading_digits = leading_digits && c.is_ascii_digit();
        let len = chars(&piece);
        // Keep room for the ellipsis unless this is the last character.
        let reserve = usize::from(i + 1 < total);
        if count + len + reserve > max {
            if max > 0 {
                out.push('…');
            }
            return out;
        }
        out.push_str(&piece);
        count += len;
    }
    out
}

/// The agent's text shown verbatim as inline code: delimited by one more backtick than the
/// longest run inside it (padded with a space where it starts or ends with one), with a
/// zero-width space after every `@`. Nothing inside code is formatted, linked or mentioned.
pub fn inline_code(s: &str, max: usize) -> String {
    let text: String = s
        .chars()
        .flat_map(|c| if c == '@' { vec![c, ZWSP] } else { vec![c] })
        .collect();
    let longest_run = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let ticks = "`".repeat(longest_run + 1);
    let wrap = |body: &str| {
        let pad_start = if body.starts_with('`') { " " } else { "" };
        let pad_end = if body.ends_with('`') { " " } else { "" };
        format!("{ticks}{pad_start}{body}{pad_end}{ticks}")
    };
    let whole = wrap(&text);
    if chars(&whole) <= max {
        return whole;
    }
    // Delimiters, the ellipsis (which ends the body, so no end pad) and a start pad if needed.
    let pad_start = usize::from(text.starts_with('`'));
    let room = max.saturating_sub(2 * ticks.len() + 1 + pad_start);
    if room == 0 {
        return cut("…", max);
    }
    let mut body: String = text.chars().take(room).collect();
    // Never end on half of an `@` + zero-width-space pair.
    if body.ends_with('@') {
        body.pop();
    }
    body.push('…');
    cut(&wrap(&body), max)
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::approval::Usd;
    use crate::notify::Fact;
    use crate::notify::render::{Amount, AmountSource};

    fn card(state: CardState) -> Card {
        let now = Utc.with_ymd_and_hms(2026, 6, 12, 10, 0, 0).unwrap();
        Card {
            approval_id: "apr_123".into(),
            headline: "Fund milestone".into(),
            state,
            amount: Some(Amount {
                value: Usd::from_cents(45000),
                source: AmountSource::OpenTrain,
                fees: None,
            }),
            facts: vec![
                Fact {
                    label: "Contract",
                    value: "Spanish *Sentiment* Labeling".into(),
                    from_agent: false,
                },
                Fact {
                    label: "Agent's note",
                    value: "@everyone **bold** [link](https://evil.example) <@123>".into(),
                    from_agent: true,
                },
            ],
            expires_at: Some(now + chrono::Duration::hours(72)),
            link: "https://app.opentrain.test/approvals/apr_123".into(),
            now,
        }
    }

    fn value<'a>(view: &'a EmbedView, name: &str) -> &'a str {
        &view
            .fields
            .iter()
            .find(|(n, _, _)| n == name)
            .unwrap_or_else(|| panic!("no field {name}: {view:?}"))
            .1
    }

    #[test]
    fn pending_card_shows_amount_context_expiry_and_id() {
        let view = EmbedView::of(&card(CardState::Pending));
        assert_eq!(view.title, "🔔 Fund milestone · $450.00");
        assert_eq!(view.colour, AMBER);
        assert_eq!(value(&view, "Amount"), "$450.00 (from OpenTrain)");
        assert_eq!(value(&view, "Contract"), "Spanish \\*Sentiment\\* Labeling");
        let expires = value(&view, "Expires");
        assert!(
            expires.starts_with("2026-06-15 10:00 UTC (<t:"),
            "{expires}"
        );
        assert!(expires.ends_with(":R>)"), "{expires}");
        assert_eq!(view.footer, "approval apr_123");
        assert_eq!(components(&card(CardState::Pending)).len(), 1);
    }

    #[test]
    fn colour_and_button_follow_the_status() {
        let confirmed = CardState::Confirmed {
            resolved_at: None,
            evidence: vec![("invoiceId".into(), "inv_77".into())],
        };
        let view = EmbedView::of(&card(confirmed.clone()));
        assert_eq!(view.colour, GREEN);
        assert!(
            view.title.starts_with("✅ Confirmed · Fund milestone"),
            "{}",
            view.title
        );
        assert_eq!(value(&view, "invoiceId"), "`inv_77`");
        assert!(components(&card(confirmed)).is_empty());
        assert_eq!(colour(&CardState::Declined { resolved_at: None }), RED);
        assert_eq!(colour(&CardState::Expired { resolved_at: None }), GREY);
        assert_eq!(colour(&CardState::Superseded { by: None }), GREY);
    }

    #[test]
    fn agent_text_is_code_that_cannot_mention_format_or_link() {
        let view = EmbedView::of(&card(CardState::Pending));
        let note = value(&view, "Agent's note");
        assert_eq!(
            note,
            "`@\u{200B}everyone **bold** [link](https://evil.example) <@\u{200B}123>`"
        );
        assert!(!note.contains("@everyone") && !note.contains("<@1"));
    }

    #[test]
    fn backticks_in_agent_text_cannot_close_the_code_span() {
        assert_eq!(inline_code("a`b", 100), "``a`b``");
        assert_eq!(inline_code("``x", 100), "``` ``x```");
        assert_eq!(inline_code("x`", 100), "``x` ``");
        let cut = inline_code(&"y".repeat(50), 20);
        assert_eq!(chars(&cut), 20, "{cut}");
        assert!(cut.starts_with('`') && cut.ends_with("…`"), "{cut}");
    }

    #[test]
    fn outside_text_is_escaped_and_never_cut_inside_an_escape() {
        assert_eq!(
            escape_markdown("# **x** <@1> @here https://a.b 1. c - d > e", 200),
            "\\# \\*\\*x\\*\\* \\<@\u{200B}1> @\u{200B}here https\\://a.b 1. c - d > e"
        );
        assert_eq!(escape_markdown("1. list", 50), "1\\. list");
        assert_eq!(escape_markdown("- item", 50), "\\- item");
        assert_eq!(escape_markdown(">>> quote", 50), "\\>>> quote");
        assert_eq!(escape_markdown("due 2026-07-01", 50), "due 2026-07-01");
        let cut = escape_markdown(&"*".repeat(100), 11);
        assert_eq!(cut, format!("{}…", "\\*".repeat(5)));
        assert_eq!(escape_markdown("abc", 3), "abc");
        assert_eq!(escape_markdown("abcd", 3), "ab…");
    }

    #[test]
    fn a_worst_case_card_stays_within_discords_limits() {
        let hostile = "*_`|>@<[]():~#-\\".repeat(100);
        let mut c = card(CardState::Confirmed {
            resolved_at: Some(Utc::now()),
            evidence: (0..10)
                .map(|i| (format!("{i}{}", "_".repeat(40)), "`@".repeat(60)))
                .collect(),
        });
        c.headline = hostile.clone();
        c.approval_id = "a".repeat(3000);
        c.facts = (0..30)
            .map(|i| Fact {
                label: "Agent's note",
                value: hostile.clone(),
                from_agent: i % 2 == 0,
            })
            .collect();
        let view = EmbedView::of(&c);
        assert!(chars(&view.title) <= MAX_TITLE);
        assert!(chars(&view.footer) <= MAX_FOOTER);
        assert!(view.fields.len() <= MAX_FIELDS);
        for (name, value, _) in &view.fields {
            assert!(!name.is_empty() && chars(name) <= MAX_FIELD_NAME, "{name}");
            assert!(
                !value.is_empty() && chars(value) <= MAX_FIELD_VALUE,
                "{value}"
            );
        }
        assert!(
            view.total_chars() <= MAX_EMBED_TOTAL,
            "{}",
            view.total_chars()
        );
        // Values were shared fairly, not dropped: each field still shows something.
        assert!(view.fields.iter().all(|(_, v, _)| chars(v) > 20));
        // And a cut code span is still closed, with nothing able to mention.
        for (_, value, _) in &view.fields {
            assert!(!value.contains("@<") && !value.contains("@e"), "{value}");
        }
        let json = serde_json::to_value(embed(&c)).unwrap();
        assert_eq!(json["fields"].as_array().unwrap().len(), view.fields.len());
    }

    #[test]
    fn fair_cap_shares_the_budget() {
        assert_eq!(fair_cap(&[10, 10], 100), usize::MAX);
        assert_eq!(fair_cap(&[10, 1000, 1000], 1010), 500);
        assert_eq!(fair_cap(&[0, 0], 0), usize::MAX);
    }

    #[test]
    fn errors_are_sorted_into_verdicts() {
        let dm = DiscordTarget::User(1);
        let ch = DiscordTarget::Channel(1);
        let v = |status, code, op, target| classify_api(status, code, "x", op, target);
        assert!(matches!(v(404, 10008, Op::Edit, dm), NotifyError::Gone(_)));
        assert!(matches!(v(404, 10003, Op::Edit, ch), NotifyError::Gone(_)));
        assert!(
            matches!(v(404, 10003, Op::Post, ch), NotifyError::Permanent(e) if e.contains("discord.channel_id"))
        );
        assert!(
            matches!(v(403, 50007, Op::Post, dm), NotifyError::Permanent(e) if e.contains("direct messages"))
        );
        assert!(
            matches!(v(401, 0, Op::Post, dm), NotifyError::Permanent(e) if e.contains("discord.bot_token"))
        );
        assert!(matches!(
            v(403, 50013, Op::Post, ch),
            NotifyError::Permanent(_)
        ));
        assert!(matches!(
            v(403, 50001, Op::Post, ch),
            NotifyError::Permanent(_)
        ));
        assert!(matches!(
            v(400, 50035, Op::Post, ch),
            NotifyError::Permanent(_)
        ));
        assert!(matches!(
            v(429, -1, Op::Post, ch),
            NotifyError::RateLimited(_)
        ));
        assert!(matches!(
            v(502, -1, Op::Post, ch),
            NotifyError::Transient(_)
        ));
        assert!(matches!(v(500, 0, Op::Edit, ch), NotifyError::Transient(_)));
    }

    #[test]
    fn api_url_becomes_serenitys_proxy_base() {
        let base = |s: &str| proxy_base(&s.parse().unwrap());
        assert_eq!(
            base("http://127.0.0.1:4000/api/v10").unwrap(),
            "http://127.0.0.1:4000"
        );
        assert_eq!(
            base("http://127.0.0.1:4000/api/v10/").unwrap(),
            "http://127.0.0.1:4000"
        );
        assert_eq!(
            base("https://proxy.example/").unwrap(),
            "https://proxy.example"
        );
        assert_eq!(
            base("https://gw.example/discord/api/v10").unwrap(),
            "https://gw.example/discord"
        );
        assert!(base("https://gw.example/api/v9").is_err());
    }

    #[test]
    fn nonce_is_stable_and_short() {
        assert_eq!(nonce("apr_1"), nonce("apr_1"));
        assert_ne!(nonce("apr_1"), nonce("apr_2"));
        assert_eq!(nonce("apr_1").len(), 25);
    }
}
