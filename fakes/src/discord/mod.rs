//! A strict local fake of Discord's REST API v10, for the routes countersign uses through
//! serenity 0.12: `GET /users/@me`, open a DM (`POST /users/@me/channels`), read a channel, post a
//! message (`POST /channels/{c}/messages`), edit it (`PATCH /channels/{c}/messages/{m}`), and read
//! or delete one message. It speaks Discord's wire format: string snowflakes, `{"code",
//! "message"}` error bodies, 50035 "Invalid Form Body" with an `errors` tree naming the field, the
//! bot token in `Authorization: Bot <token>`, and Discord's limits with their headers.
//!
//! Two ways in, one state:
//! - **HTTPS as `discord.com`** ([`FakeDiscord::tls_addr`]): a client that resolves
//!   `discord.com` to that address and trusts [`FakeDiscord::ca_certificate_der`] runs exactly
//!   as it does in production, URL and TLS included.
//! - **Plain HTTP** ([`FakeDiscord::api_url`]), for clients configured with another API base
//!   (countersign's `discord.api_url`, serenity's `HttpBuilder::proxy`), e.g. a child process.
//!
//! Rate limits (`ratelimit.rs`) are enforced as Discord does: a bucket per route and major
//! parameter (5 requests per 5 s unless a test scales it), the global 50 requests/s per bot, and
//! the invalid-request limit (10,000 answers of 401/403/429 in 10 minutes get the client banned
//! for a while, with a non-JSON 429, as Cloudflare does).
//!
//! Levers for every failure countersign must survive: forced 429s (per route or global), any
//! status on the next requests, a request that never gets an answer, a host that drops every
//! connection, a revoked token, a missing permission, a deleted message, closed DMs.
//!
//! Limits come from Discord's OpenAPI spec (`shared/discord-openapi.json`) and its docs. Where
//! Discord's exact error `code` string for a form error is not documented, the fake uses the best
//! known one; the status (400), the JSON code (50035) and the field path are what a client can
//! rely on. Every place the fake is knowingly looser than Discord is marked `LOOSER:`.
//! [`markup::autolinks`] flags text Discord would turn into a link or a mention.

mod form;
pub mod markup;
mod ratelimit;
mod routes;
mod state;
mod tls;
mod validate;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;

pub use markup::autolinks;
use state::State;

/// The guild the fake guild text channel belongs to.
pub const FAKE_GUILD_ID: u64 = 777_000_000_000_000_001;
/// The fake bot's own user id: the author of every message the fake stores.
pub const FAKE_BOT_USER_ID: u64 = 1_100_000_000_000_000_001;
/// The host name the TLS certificate is made for.
pub const DISCORD_HOST: &str = "discord.com";

/// Handle to a running fake. Cheap to clone; all clones share one state.
#[derive(Clone)]
pub struct FakeDiscord {
    inner: Arc<Mutex<State>>,
    plain: SocketAddr,
    tls: SocketAddr,
    network: Arc<tls::Network>,
}

/// A message as the fake holds it now (after edits and deletions).
#[derive(Clone, Debug)]
pub struct FakeDiscordMessage {
    pub id: u64,
    pub channel_id: u64,
    pub content: String,
    /// The embeds exactly as last sent (the response adds `"type": "rich"` where absent).
    pub embeds: Vec<Value>,
    pub components: Vec<Value>,
    /// `allowed_mentions` as last sent; `None` when never sent (or sent as `null`).
    pub allowed_mentions: Option<Value>,
    /// The message this one replies to (`message_reference` on create, when it resolved).
    pub reply_to: Option<u64>,
    /// Number of accepted PATCHes.
    pub edits: usize,
    /// Deleted by the owner (`FakeDiscord::delete_message`) or by a `DELETE` request.
    pub deleted: bool,
}

impl FakeDiscordMessage {
    /// Every piece of the message Discord renders as markdown (the content, and each embed's
    /// title, description, field names and values), as (where, text).
    pub fn rendered_text(&self) -> Vec<(String, String)> {
        let mut out = vec![("content".to_owned(), self.content.clone())];
        for (i, embed) in self.embeds.iter().enumerate() {
            let mut take = |name: String, v: &Value| {
                if let Some(s) = v.as_str() {
                    out.push((name, s.to_owned()));
                }
            };
            take(format!("embeds[{i}].title"), &embed["title"]);
            take(format!("embeds[{i}].description"), &embed["description"]);
            for (f, field) in embed["fields"].as_array().into_iter().flatten().enumerate() {
                take(format!("embeds[{i}].fields[{f}].name"), &field["name"]);
                take(format!("embeds[{i}].fields[{f}].value"), &field["value"]);
            }
        }
        out
    }

    /// What Discord would show as a link or a mention in this message's text, outside inline
    /// code (see [`markup::autolinks`]), as "where: what". Buttons are not text and not included.
    pub fn autolinks(&self) -> Vec<String> {
        self.rendered_text()
            .into_iter()
            .flat_map(|(at, text)| {
                autolinks(&text)
                    .into_iter()
                    .map(move |found| format!("{at}: {found}"))
            })
            .collect()
    }
}

/// One request as the fake received it, with the status it answered.
#[derive(Clone, Debug)]
pub struct RecordedDiscordCall {
    pub method: String,
    /// The URI path, e.g. `/api/v10/channels/5/messages` (no query string).
    pub path: String,
    /// Parsed JSON body; `None` when empty or not JSON.
    pub body: Option<Value>,
    /// The status answered; 0 for a request the fake never answered (`hang_next`).
    pub status: u16,
    pub authorization: Option<String>,
    /// When the request arrived.
    pub at: Instant,
    /// Whether it came over TLS (as `discord.com`) rather than plain HTTP.
    pub tls: bool,
}

impl FakeDiscord {
    /// Binds two listeners on 127.0.0.1 (HTTPS as `discord.com`, and plain HTTP) and serves on
    /// the current tokio runtime. `token` is the bot token (without "Bot "). `owner_user_id`
    /// shares a server with the bot (DMs open); `channel_id` is a guild text channel the bot can
    /// post in.
    pub async fn start(token: &str, owner_user_id: u64, channel_id: u64) -> FakeDiscord {
        let inner = Arc::new(Mutex::new(State::new(token, owner_user_id, channel_id)));
        let network = Arc::new(tls::Network::default());
        let router = routes::router(inner.clone());
        let plain = tls::serve(router.clone(), None, network.clone()).await;
        let tls = tls::serve(router, Some(tls::acceptor()), network.clone()).await;
        FakeDiscord {
            inner,
            plain,
            tls,
            network,
        }
    }

    /// `http://127.0.0.1:PORT` (plain HTTP), what serenity's `HttpBuilder::proxy` takes.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.plain)
    }

    /// `http://127.0.0.1:PORT/api/v10` (plain HTTP), what countersign's `discord.api_url` takes.
    pub fn api_url(&self) -> String {
        format!("{}/api/v10", self.base_url())
    }

    /// The HTTPS listener: resolve `discord.com` to it (e.g. reqwest's `ClientBuilder::resolve`).
    pub fn tls_addr(&self) -> SocketAddr {
        self.tls
    }

    /// The DER certificate of the CA that signed the fake's `discord.com` certificate: add it as
    /// a trusted root (reqwest's `Certificate::from_der` + `add_root_certificate`).
    pub fn ca_certificate_der(&self) -> Vec<u8> {
        tls::ca_certificate_der()
    }

    /// The bot's own user id (author of every message).
    pub fn bot_user_id(&self) -> u64 {
        FAKE_BOT_USER_ID
    }

    /// Every route's bucket (per route and major parameter): at most `limit` requests per
    /// `window`, counted from the first request after the previous window ended, as Discord's
    /// `X-RateLimit-*` headers describe. Discord's message routes allow 5 per 5 s, the default;
    /// tests scale it down.
    pub fn set_bucket(&self, limit: u32, window: Duration) {
        let mut state = self.lock();
        state.limits.bucket_limit = limit.max(1);
        state.limits.bucket_window = window;
    }

    /// The global limit: at most `per_second` requests in any one second (Discord: 50 per bot).
    pub fn set_global_limit(&self, per_second: usize) {
        self.lock().limits.global_limit = per_second.max(1);
    }

    /// The invalid-request limit: `limit` answers of 401, 403 or 429 within `window` ban the
    /// client for `ban` (Discord: 10,000 in 10 minutes, then a Cloudflare ban of about an hour).
    pub fn set_invalid_request_limit(&self, limit: usize, window: Duration, ban: Duration) {
        let mut state = self.lock();
        state.limits.invalid_limit = limit.max(1);
        state.limits.invalid_window = window;
        state.limits.ban = ban;
    }

    /// The next `n` message create/edit requests get a 429 with this `retry_after`; `global`
    /// makes it the global limit (`X-RateLimit-Global: true`, scope `global`).
    pub fn force_rate_limit(&self, n: usize, retry_after_secs: f64, global: bool) {
        self.lock().limits.forced = Some(ratelimit::ForcedLimit {
            remaining: n,
            retry_after: retry_after_secs,
            global,
        });
    }

    /// The next `n` requests, on any route and before auth, answer `status` with
    /// `{"code": code, "message": message}`.
    pub fn fail_next(&self, n: usize, status: u16, code: i64, message: &str) {
        self.lock().failure = Some(state::Failure {
            remaining: n,
            status,
            code,
            message: message.to_owned(),
        });
    }

    /// The next `n` requests are read and then never answered (the connection stays open), as
    /// when Discord or a proxy in front of it stalls. They are recorded with status 0.
    pub fn hang_next(&self, n: usize) {
        self.lock().hang = n;
    }

    /// `true`: the host drops every connection (those open now, and each new one before TLS),
    /// as when Discord cannot be reached. `false` serves again.
    pub fn set_unreachable(&self, unreachable: bool) {
        self.network.set_unreachable(unreachable);
    }

    /// The bot's token is now `token`: requests with the old one get 401 (a revoked or reset
    /// token).
    pub fn set_token(&self, token: &str) {
        self.lock().token = token.to_owned();
    }

    /// The bot lost Send Messages in this channel: posts and edits there get 403 50013
    /// "Missing Permissions". `allow_posting` undoes it.
    pub fn deny_posting(&self, channel_id: u64) {
        self.lock().denied.insert(channel_id);
    }

    /// Undoes `deny_posting`.
    pub fn allow_posting(&self, channel_id: u64) {
        self.lock().denied.remove(&channel_id);
    }

    /// The owner deleted the message: later edits or reads get 404 10008 Unknown Message.
    /// Panics if the fake never stored that message, which would be a broken test.
    pub fn delete_message(&self, channel_id: u64, message_id: u64) {
        let mut state = self.lock();
        let stored = state
            .messages
            .iter_mut()
            .find(|s| s.msg.id == message_id && s.msg.channel_id == channel_id)
            .unwrap_or_else(|| {
                panic!("fake Discord has no message {message_id} in channel {channel_id}")
            });
        stored.msg.deleted = true;
    }

    /// The user closed their DMs (or blocked the bot): posting to their DM channel gets
    /// 403 50007 "Cannot send messages to this user". Opening the DM channel still works.
    pub fn close_dms(&self, user_id: u64) {
        self.lock().closed_dms.insert(user_id);
    }

    /// Undoes `close_dms`.
    pub fn open_dms(&self, user_id: u64) {
        self.lock().closed_dms.remove(&user_id);
    }

    /// Another user who shares a server with the bot (a DM can be opened with them).
    pub fn add_user(&self, user_id: u64) {
        self.lock().users.insert(user_id);
    }

    /// Messages of one channel, deleted ones included (flagged), oldest first.
    pub fn messages(&self, channel_id: u64) -> Vec<FakeDiscordMessage> {
        self.lock()
            .messages
            .iter()
            .filter(|s| s.msg.channel_id == channel_id)
            .map(|s| s.msg.clone())
            .collect()
    }

    /// The flags of message `id` as Discord keeps them (`SUPPRESS_NOTIFICATIONS` = 4096 when
    /// it was created silent); `None` for an unknown message.
    pub fn flags(&self, id: u64) -> Option<u64> {
        self.lock()
            .messages
            .iter()
            .find(|s| s.msg.id == id)
            .map(|s| s.flags)
    }

    /// The DM channel opened with this user, if one was opened.
    pub fn dm_channel_of(&self, user_id: u64) -> Option<u64> {
        self.lock().dm_channels.get(&user_id).copied()
    }

    /// Every request received, oldest first, with the status it got.
    pub fn requests(&self) -> Vec<RecordedDiscordCall> {
        self.lock().requests.clone()
    }

    /// Requests with this method (case-insensitive) whose path contains `path_contains`,
    /// whatever their answer.
    pub fn count(&self, method: &str, path_contains: &str) -> usize {
        self.lock()
            .requests
            .iter()
            .filter(|r| r.method.eq_ignore_ascii_case(method) && r.path.contains(path_contains))
            .count()
    }

    /// Requests answered 429.
    pub fn rate_limited_count(&self) -> usize {
        self.answered(&[429])
    }

    /// Requests answered 401, 403 or 429: what Discord's invalid-request limit counts.
    pub fn invalid_request_count(&self) -> usize {
        self.answered(&[401, 403, 429])
    }

    fn answered(&self, statuses: &[u16]) -> usize {
        self.lock()
            .requests
            .iter()
            .filter(|r| statuses.contains(&r.status))
            .count()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.inner)
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}
