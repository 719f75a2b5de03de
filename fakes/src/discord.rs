//! A strict local fake of Discord's REST API v10, for the routes countersign uses through
//! serenity 0.12: `GET /users/@me`, open a DM (`POST /users/@me/channels`), post a message
//! (`POST /channels/{c}/messages`), edit it (`PATCH /channels/{c}/messages/{m}`), and read or
//! delete one message. It speaks Discord's wire format: string snowflakes, `{"code", "message"}`
//! error bodies, 50035 "Invalid Form Body" with an `errors` tree naming the field, 429s with the
//! `X-RateLimit-*` headers, and the bot token in `Authorization: Bot <token>`.
//!
//! serenity reaches it with `HttpBuilder::new(token).proxy(base_url).ratelimiter_disabled(true)`:
//! the proxy replaces only scheme and host, so paths arrive as `/api/v10/...`. The ratelimiter
//! must be off because serenity's ratelimiter ignores the proxy.
//!
//! Limits come from Discord's OpenAPI spec (`shared/discord-openapi.json`) and its docs. Where
//! Discord's exact error `code` string for a form error is not documented, the fake uses the best
//! known one; the status (400), the JSON code (50035) and the field path are what a client can
//! rely on. Every place the fake is knowingly looser than Discord is marked `LOOSER:`.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State as AxumState};
use axum::http::{Method, StatusCode, header};
use axum::response::Response;
use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::{Map, Value, json};

/// The guild the fake guild text channel belongs to.
pub const FAKE_GUILD_ID: u64 = 777_000_000_000_000_001;
/// The fake bot's own user id: the author of every message the fake stores.
pub const FAKE_BOT_USER_ID: u64 = 1_100_000_000_000_000_001;
const BOT_USERNAME: &str = "countersign-fake-bot";
/// DM channels and messages get ids above this one, always increasing, like real snowflakes.
const FIRST_GENERATED_ID: u64 = 1_300_000_000_000_000_000;
const API_PREFIX: &str = "/api/v10/";
/// `X-RateLimit-Bucket` values of the two rate-limited routes (opaque, like Discord's hashes).
const CREATE_MESSAGE_BUCKET: &str = "80c17d2f1b6e4a93";
const EDIT_MESSAGE_BUCKET: &str = "5b8e2d7c0f3a6194";
const BODY_LIMIT: usize = 8 << 20;

// Limits from the docs and the OpenAPI spec (bots get 2000 content chars; the spec's 4000 is
// for Nitro users).
const MAX_CONTENT: usize = 2000;
const MAX_EMBEDS: usize = 10;
const MAX_EMBED_TOTAL: usize = 6000;
const MAX_TITLE: usize = 256;
const MAX_DESCRIPTION: usize = 4096;
const MAX_FIELDS: usize = 25;
const MAX_FIELD_NAME: usize = 256;
const MAX_FIELD_VALUE: usize = 1024;
const MAX_FOOTER: usize = 2048;
const MAX_AUTHOR: usize = 256;
const MAX_EMBED_URL: usize = 2048;
const MAX_ROWS: usize = 5;
const MAX_BUTTONS: usize = 5;
const MAX_LABEL: usize = 80;
const MAX_CUSTOM_ID: usize = 100;
const MAX_BUTTON_URL: usize = 512;
const MAX_COLOR: i64 = 0xFF_FFFF;

/// Message flags a bot may set on create (SUPPRESS_EMBEDS, SUPPRESS_NOTIFICATIONS) and the one
/// it may toggle on edit (SUPPRESS_EMBEDS). Other bits are dropped, as Discord does.
const CREATE_FLAGS: u64 = (1 << 2) | (1 << 12);
const EDIT_FLAGS: u64 = 1 << 2;

/// Handle to a running fake. Cheap to clone; all clones share one state.
#[derive(Clone)]
pub struct FakeDiscord {
    inner: Arc<Mutex<State>>,
    addr: SocketAddr,
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

/// One request as the fake received it, with the status it answered.
#[derive(Clone, Debug)]
pub struct RecordedDiscordCall {
    pub method: String,
    /// The URI path, e.g. `/api/v10/channels/5/messages` (no query string).
    pub path: String,
    /// Parsed JSON body; `None` when empty or not JSON.
    pub body: Option<Value>,
    pub status: u16,
    pub authorization: Option<String>,
}

struct StoredMessage {
    msg: FakeDiscordMessage,
    tts: bool,
    flags: u64,
    nonce: Option<Value>,
    timestamp: String,
    edited_timestamp: Option<String>,
}

struct Failure {
    remaining: usize,
    status: u16,
    code: i64,
    message: String,
}

struct ForcedLimit {
    remaining: usize,
    retry_after: f64,
    global: bool,
}

struct State {
    token: String,
    owner_user_id: u64,
    guild_channel_id: u64,
    /// Users who share a server with the bot, so a DM can be opened with them.
    users: HashSet<u64>,
    /// user id -> DM channel id; Discord hands back the same channel every time.
    dm_channels: HashMap<u64, u64>,
    closed_dms: HashSet<u64>,
    messages: Vec<StoredMessage>,
    last_id: u64,
    min_interval: Duration,
    /// Per channel: when the last message create/edit was accepted.
    last_accepted: HashMap<u64, Instant>,
    forced_limit: Option<ForcedLimit>,
    failure: Option<Failure>,
    requests: Vec<RecordedDiscordCall>,
}

/// What the fake answers: status, optional JSON body, extra headers.
struct Reply {
    status: u16,
    body: Option<Value>,
    headers: Vec<(&'static str, String)>,
}

impl Reply {
    fn json(status: u16, body: Value) -> Reply {
        Reply {
            status,
            body: Some(body),
            headers: Vec::new(),
        }
    }

    /// Discord's plain error body: `{"code": N, "message": "..."}`.
    fn error(status: u16, code: i64, message: &str) -> Reply {
        Reply::json(status, json!({"code": code, "message": message}))
    }

    /// 400 50035 with the `errors` tree built by the validators.
    fn form(errors: Value) -> Reply {
        Reply::json(
            400,
            json!({"code": 50035, "message": "Invalid Form Body", "errors": errors}),
        )
    }

    fn no_content() -> Reply {
        Reply {
            status: 204,
            body: None,
            headers: Vec::new(),
        }
    }

    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut builder = Response::builder().status(status);
        for (name, value) in self.headers {
            builder = builder.header(name, value);
        }
        let built = match self.body {
            Some(body) => builder
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string())),
            None => builder.body(Body::empty()),
        };
        built.unwrap_or_else(|_| Response::new(Body::empty()))
    }
}

fn unknown_channel() -> Reply {
    Reply::error(404, 10003, "Unknown Channel")
}

fn unknown_message() -> Reply {
    Reply::error(404, 10008, "Unknown Message")
}

/// The routes the fake serves; path segments are still raw strings (validated per route).
enum Route<'a> {
    GetMe,
    CreateDm,
    CreateMessage(&'a str),
    GetChannel(&'a str),
    GetMessage(&'a str, &'a str),
    EditMessage(&'a str, &'a str),
    DeleteMessage(&'a str, &'a str),
}

impl Route<'_> {
    /// `X-RateLimit-Bucket` value: an opaque per-route string, like Discord's hashes.
    fn bucket(&self) -> &'static str {
        match self {
            Route::GetMe => "4a1f0c2e9b7d3c55",
            Route::CreateDm => "9e3b51d07a2c4f18",
            Route::CreateMessage(_) => CREATE_MESSAGE_BUCKET,
            Route::GetChannel(_) => "b8c9d0e1f2a3b4c5",
            Route::GetMessage(..) => "d2a4c6e8f0b13579",
            Route::EditMessage(..) => EDIT_MESSAGE_BUCKET,
            Route::DeleteMessage(..) => "e7f6a5b4c3d2e1f0",
        }
    }
}

fn route<'a>(method: &Method, path: &'a str) -> Option<Route<'a>> {
    let rest = path.strip_prefix(API_PREFIX)?;
    let segments: Vec<&'a str> = rest.split('/').collect();
    let route = match segments.as_slice() {
        ["users", "@me"] if method == Method::GET => Route::GetMe,
        ["users", "@me", "channels"] if method == Method::POST => Route::CreateDm,
        ["channels", c] if method == Method::GET => Route::GetChannel(c),
        ["channels", c, "messages"] if method == Method::POST => Route::CreateMessage(c),
        ["channels", c, "messages", m] if method == Method::GET => Route::GetMessage(c, m),
        ["channels", c, "messages", m] if method == Method::PATCH => Route::EditMessage(c, m),
        ["channels", c, "messages", m] if method == Method::DELETE => Route::DeleteMessage(c, m),
        // LOOSER: routes Discord has but countersign does not use (list messages, reactions,
        // ...) answer 404 here instead of working.
        _ => return None,
    };
    Some(route)
}

/// The request body as received.
enum Parsed {
    Empty,
    Json(Value),
    Invalid,
}

impl FakeDiscord {
    /// Binds 127.0.0.1:0 and serves on the current tokio runtime. `token` is the bot token
    /// (without "Bot "). `owner_user_id` shares a server with the bot (DMs open); `channel_id`
    /// is a guild text channel the bot can post in.
    pub async fn start(token: &str, owner_user_id: u64, channel_id: u64) -> FakeDiscord {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0 for the fake Discord");
        let addr = listener
            .local_addr()
            .expect("local address of the fake Discord");
        let state = State {
            token: token.to_owned(),
            owner_user_id,
            guild_channel_id: channel_id,
            users: HashSet::from([owner_user_id]),
            dm_channels: HashMap::new(),
            closed_dms: HashSet::new(),
            messages: Vec::new(),
            last_id: FIRST_GENERATED_ID,
            min_interval: Duration::ZERO,
            last_accepted: HashMap::new(),
            forced_limit: None,
            failure: None,
            requests: Vec::new(),
        };
        let fake = FakeDiscord {
            inner: Arc::new(Mutex::new(state)),
            addr,
        };
        // A fallback-only router: routing is done by hand so that faults, auth and the error
        // bodies for unknown routes all follow Discord's order and shapes.
        let router = Router::new().fallback(handle).with_state(fake.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                eprintln!("fake Discord stopped: {e}");
            }
        });
        fake
    }

    /// `http://127.0.0.1:PORT`, what serenity's `HttpBuilder::proxy` takes.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:PORT/api/v10`.
    pub fn api_url(&self) -> String {
        format!("http://{}/api/v10", self.addr)
    }

    /// The bot's own user id (author of every message).
    pub fn bot_user_id(&self) -> u64 {
        FAKE_BOT_USER_ID
    }

    /// Per-channel bucket: a message create/edit sooner than `d` after the last accepted one
    /// to that channel gets a 429 and is not applied. `Duration::ZERO` (the default) turns it off.
    pub fn set_min_interval(&self, d: Duration) {
        self.lock().min_interval = d;
    }

    /// The next `n` message create/edit requests get a 429 with this `retry_after`; `global`
    /// makes it the global limit (`X-RateLimit-Global: true`, scope `global`).
    pub fn force_rate_limit(&self, n: usize, retry_after_secs: f64, global: bool) {
        self.lock().forced_limit = Some(ForcedLimit {
            remaining: n,
            retry_after: retry_after_secs,
            global,
        });
    }

    /// The next `n` requests, on any route and before auth, answer `status` with
    /// `{"code": code, "message": message}`.
    pub fn fail_next(&self, n: usize, status: u16, code: i64, message: &str) {
        self.lock().failure = Some(Failure {
            remaining: n,
            status,
            code,
            message: message.to_owned(),
        });
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
        self.lock()
            .requests
            .iter()
            .filter(|r| r.status == 429)
            .count()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

async fn handle(AxumState(fake): AxumState<FakeDiscord>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let parsed = match to_bytes(req.into_body(), BODY_LIMIT).await {
        Ok(bytes) if bytes.is_empty() => Parsed::Empty,
        Ok(bytes) => serde_json::from_slice(&bytes).map_or(Parsed::Invalid, Parsed::Json),
        Err(_) => Parsed::Invalid,
    };
    let reply = {
        let mut state = fake.lock();
        let reply = state.answer(
            &method,
            &path,
            authorization.as_deref(),
            &parsed,
            Instant::now(),
        );
        let body = match parsed {
            Parsed::Json(v) => Some(v),
            Parsed::Empty | Parsed::Invalid => None,
        };
        state.requests.push(RecordedDiscordCall {
            method: method.to_string(),
            path,
            body,
            status: reply.status,
            authorization,
        });
        reply
    };
    reply.into_response()
}

impl State {
    fn answer(
        &mut self,
        method: &Method,
        path: &str,
        authorization: Option<&str>,
        parsed: &Parsed,
        now: Instant,
    ) -> Reply {
        // Injected faults come first: they stand for Discord or Cloudflare failing before
        // the request is even routed.
        if let Some(failure) = self.failure.as_mut()
            && failure.remaining > 0
        {
            failure.remaining -= 1;
            return Reply::error(failure.status, failure.code, &failure.message);
        }
        let Some(route) = route(method, path) else {
            return Reply::json(404, json!({"message": "404: Not Found", "code": 0}));
        };
        if authorization != Some(format!("Bot {}", self.token).as_str()) {
            return Reply::json(401, json!({"message": "401: Unauthorized", "code": 0}));
        }
        let body = match parsed {
            Parsed::Empty => None,
            Parsed::Json(v) => Some(v),
            Parsed::Invalid => {
                return Reply::error(400, 50109, "The request body contains invalid JSON.");
            }
        };
        let result = match route {
            Route::GetMe => Ok(Reply::json(200, bot_user_json(true))),
            Route::CreateDm => self.create_dm(body),
            Route::CreateMessage(c) => self.create_message(c, body, now),
            Route::GetChannel(c) => self.get_channel(c),
            Route::GetMessage(c, m) => self.get_message(c, m),
            Route::EditMessage(c, m) => self.edit_message(c, m, body, now),
            Route::DeleteMessage(c, m) => self.delete_message(c, m),
        };
        let mut reply = result.unwrap_or_else(|error| error);
        // Discord sends the bucket headers on every routed answer; a 429 already has its own.
        if reply.status != 429 {
            let (limit, remaining, reset_after) = self.bucket_state(&route);
            reply.headers.extend(bucket_headers(
                route.bucket(),
                limit,
                remaining,
                reset_after,
            ));
        }
        reply
    }

    /// Values for the success headers. They are plausible rather than exact: with a min
    /// interval set the bucket allows one request per interval, otherwise 5 per 5 s with
    /// room left (the fake does not count down).
    fn bucket_state(&self, route: &Route<'_>) -> (u32, u32, f64) {
        let message_route = matches!(route, Route::CreateMessage(_) | Route::EditMessage(..));
        if message_route && !self.min_interval.is_zero() {
            (1, 0, self.min_interval.as_secs_f64())
        } else {
            (5, 4, 5.0)
        }
    }

    fn next_id(&mut self) -> u64 {
        self.last_id += 1;
        self.last_id
    }

    fn channel_exists(&self, channel_id: u64) -> bool {
        channel_id == self.guild_channel_id || self.dm_recipient(channel_id).is_some()
    }

    fn dm_recipient(&self, channel_id: u64) -> Option<u64> {
        self.dm_channels
            .iter()
            .find(|&(_, &c)| c == channel_id)
            .map(|(&user, _)| user)
    }

    /// The 429 that applies to a message create/edit in this channel, if any.
    fn rate_limit(&mut self, channel_id: u64, bucket: &str, now: Instant) -> Option<Reply> {
        if let Some(forced) = self.forced_limit.as_mut()
            && forced.remaining > 0
        {
            forced.remaining -= 1;
            return Some(too_many_requests(forced.retry_after, forced.global, bucket));
        }
        if self.min_interval.is_zero() {
            return None;
        }
        let last = self.last_accepted.get(&channel_id)?;
        let elapsed = now.duration_since(*last);
        if elapsed >= self.min_interval {
            return None;
        }
        let wait = (self.min_interval - elapsed).as_secs_f64().max(0.001);
        Some(too_many_requests(wait, false, bucket))
    }

    fn create_dm(&mut self, body: Option<&Value>) -> Result<Reply, Reply> {
        let obj = body_object(body)?;
        let user_id = match obj.get("recipient_id") {
            // Discord's answer when no recipient is given (discord-api-docs#5868).
            None | Some(Value::Null) => {
                return Err(Reply::form(json!({"_errors": [{
                    "code": "CHANNEL_RECIPIENT_REQUIRED",
                    "message": "At least one channel recipient is required."
                }]})));
            }
            Some(v) => snowflake_value(v).ok_or_else(|| {
                Reply::form(error_tree(
                    &["recipient_id"],
                    "NUMBER_TYPE_COERCE",
                    &format!("Value \"{}\" is not snowflake.", plain(v)),
                ))
            })?,
        };
        // A well-formed id of a user the bot cannot reach (no shared server, deleted, the bot
        // itself): Discord answers 400 50033 "Invalid Recipient(s)" on this route, not 10013
        // Unknown User (that one belongs to GET /users/{id}); see discord-api-docs#8274 and
        // discordgo#953.
        if !self.users.contains(&user_id) {
            return Err(Reply::error(400, 50033, "Invalid Recipient(s)"));
        }
        let channel_id = match self.dm_channels.get(&user_id) {
            Some(&c) => c,
            None => {
                let c = self.next_id();
                self.dm_channels.insert(user_id, c);
                c
            }
        };
        Ok(Reply::json(200, self.dm_channel_json(channel_id, user_id)))
    }

    fn dm_channel_json(&self, channel_id: u64, user_id: u64) -> Value {
        let last_message_id = self
            .messages
            .iter()
            .rev()
            .find(|s| s.msg.channel_id == channel_id && !s.msg.deleted)
            .map(|s| Value::String(s.msg.id.to_string()))
            .unwrap_or(Value::Null);
        let username = if user_id == self.owner_user_id {
            "owner".to_owned()
        } else {
            format!("user{user_id}")
        };
        json!({
            "id": channel_id.to_string(),
            "type": 1,
            "last_message_id": last_message_id,
            "flags": 0,
            "recipients": [user_json(user_id, &username, false)],
        })
    }

    fn create_message(
        &mut self,
        channel_raw: &str,
        body: Option<&Value>,
        now: Instant,
    ) -> Result<Reply, Reply> {
        let channel_id = path_snowflake("channel_id", channel_raw)?;
        // Discord checks the bucket before it looks at the channel or the body.
        if let Some(limited) = self.rate_limit(channel_id, CREATE_MESSAGE_BUCKET, now) {
            return Err(limited);
        }
        if !self.channel_exists(channel_id) {
            return Err(unknown_channel());
        }
        if let Some(user) = self.dm_recipient(channel_id)
            && self.closed_dms.contains(&user)
        {
            return Err(Reply::error(
                403,
                50007,
                "Cannot send messages to this user",
            ));
        }
        let obj = body_object(body)?;
        let mut errors = FormErrors::default();
        validate_message_fields(&obj, &mut errors);
        errors.into_result()?;

        let content = obj
            .get("content")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let embeds = array_of(&obj, "embeds");
        let components = array_of(&obj, "components");
        let stickers = array_of(&obj, "sticker_ids");
        let attachments = array_of(&obj, "attachments");
        if is_empty_message(&content, &embeds, &components)
            && stickers.is_empty()
            && attachments.is_empty()
        {
            return Err(Reply::error(400, 50006, "Cannot send an empty message"));
        }
        // The fake knows no stickers, so any sticker id is one the bot cannot use.
        if !stickers.is_empty() {
            return Err(Reply::error(400, 50081, "Invalid sticker sent"));
        }
        let reply_to = self.message_reference(channel_id, &obj)?;
        let nonce = obj.get("nonce").filter(|v| !v.is_null()).cloned();
        // enforce_nonce: a message by the same author with the same nonce in the last few
        // minutes is returned instead of creating a second one (the fake ignores the window).
        if obj.get("enforce_nonce") == Some(&Value::Bool(true))
            && let Some(nonce) = &nonce
            && let Some(existing) = self.messages.iter().find(|s| {
                s.msg.channel_id == channel_id && !s.msg.deleted && s.nonce.as_ref() == Some(nonce)
            })
        {
            let reply = Reply::json(200, message_json(existing));
            self.last_accepted.insert(channel_id, now);
            return Ok(reply);
        }
        let id = self.next_id();
        let stored = StoredMessage {
            msg: FakeDiscordMessage {
                id,
                channel_id,
                content,
                embeds,
                components,
                allowed_mentions: obj
                    .get("allowed_mentions")
                    .filter(|v| !v.is_null())
                    .cloned(),
                reply_to,
                edits: 0,
                deleted: false,
            },
            tts: obj.get("tts").and_then(Value::as_bool).unwrap_or(false),
            flags: obj.get("flags").and_then(Value::as_u64).unwrap_or(0) & CREATE_FLAGS,
            nonce,
            timestamp: discord_timestamp(),
            edited_timestamp: None,
        };
        let reply = Reply::json(200, message_json(&stored));
        self.messages.push(stored);
        self.last_accepted.insert(channel_id, now);
        Ok(reply)
    }

    /// A reply's `message_reference` (type 0): the replied-to message must be a live one in the
    /// same channel; when it is not, Discord refuses the message unless `fail_if_not_exists` is
    /// `false`, in which case it is sent as a plain message. Forwards (type 1) are refused: the
    /// fake does not model them. The form error codes are the best known ones.
    fn message_reference(
        &self,
        channel_id: u64,
        obj: &Map<String, Value>,
    ) -> Result<Option<u64>, Reply> {
        let Some(reference) = obj.get("message_reference").filter(|v| !v.is_null()) else {
            return Ok(None);
        };
        let mut errors = FormErrors::default();
        let Some(reference) = object_at(reference, &["message_reference"], &mut errors) else {
            return Err(errors.into_result().unwrap_err());
        };
        match reference.get("type") {
            None | Some(Value::Null) => {}
            Some(v) if v == &json!(0) => {}
            Some(_) => errors.add(
                &["message_reference", "type"],
                "FAKE_UNSUPPORTED",
                "countersign-fakes: only replies (type 0) are supported by the fake Discord",
            ),
        }
        check_bool(
            reference,
            "fail_if_not_exists",
            &["message_reference", "fail_if_not_exists"],
            &mut errors,
        );
        let snowflake_at = |key: &str, errors: &mut FormErrors| match reference.get(key) {
            None | Some(Value::Null) => None,
            Some(v) => {
                let id = snowflake_value(v);
                if id.is_none() {
                    errors.add(
                        &["message_reference", key],
                        "NUMBER_TYPE_COERCE",
                        &format!("Value \"{}\" is not snowflake.", plain(v)),
                    );
                }
                id
            }
        };
        let message_id = snowflake_at("message_id", &mut errors);
        let reference_channel = snowflake_at("channel_id", &mut errors);
        snowflake_at("guild_id", &mut errors);
        if message_id.is_none() && !errors.tree.contains_key("message_reference") {
            errors.add(
                &["message_reference", "message_id"],
                "BASE_TYPE_REQUIRED",
                "This field is required",
            );
        }
        if reference_channel.is_some_and(|c| c != channel_id) {
            errors.add(
                &["message_reference"],
                "REPLIES_CANNOT_REFERENCE_OTHER_CHANNEL",
                "Cannot reply to a message in a different channel",
            );
        }
        errors.into_result()?;
        let message_id = message_id.unwrap_or_default();
        let exists = self
            .messages
            .iter()
            .any(|s| s.msg.id == message_id && s.msg.channel_id == channel_id && !s.msg.deleted);
        if exists {
            return Ok(Some(message_id));
        }
        if reference.get("fail_if_not_exists") == Some(&Value::Bool(false)) {
            return Ok(None);
        }
        Err(Reply::form(error_tree(
            &["message_reference"],
            "REPLIES_UNKNOWN_MESSAGE",
            "Unknown message",
        )))
    }

    /// Index of a live message, or the error Discord gives for it.
    fn find_message(&self, channel_raw: &str, message_raw: &str) -> Result<usize, Reply> {
        let channel_id = path_snowflake("channel_id", channel_raw)?;
        let message_id = path_snowflake("message_id", message_raw)?;
        if !self.channel_exists(channel_id) {
            return Err(unknown_channel());
        }
        self.messages
            .iter()
            .position(|s| {
                s.msg.id == message_id && s.msg.channel_id == channel_id && !s.msg.deleted
            })
            .ok_or_else(unknown_message)
    }

    /// `GET /channels/{id}`: the guild text channel or a DM channel the bot opened.
    fn get_channel(&self, channel_raw: &str) -> Result<Reply, Reply> {
        let channel_id = path_snowflake("channel_id", channel_raw)?;
        if channel_id == self.guild_channel_id {
            return Ok(Reply::json(
                200,
                json!({
                    "id": channel_id.to_string(),
                    "type": 0,
                    "guild_id": FAKE_GUILD_ID.to_string(),
                    "name": "approvals",
                    "position": 0,
                    "permission_overwrites": [],
                    "nsfw": false,
                    "parent_id": null,
                    "topic": null,
                    "rate_limit_per_user": 0,
                    "last_message_id": null,
                    "flags": 0,
                }),
            ));
        }
        match self.dm_channels.iter().find(|(_, c)| **c == channel_id) {
            Some((user, _)) => Ok(Reply::json(200, self.dm_channel_json(channel_id, *user))),
            None => Err(unknown_channel()),
        }
    }

    fn get_message(&self, channel_raw: &str, message_raw: &str) -> Result<Reply, Reply> {
        let index = self.find_message(channel_raw, message_raw)?;
        Ok(Reply::json(200, message_json(&self.messages[index])))
    }

    fn delete_message(&mut self, channel_raw: &str, message_raw: &str) -> Result<Reply, Reply> {
        let index = self.find_message(channel_raw, message_raw)?;
        self.messages[index].msg.deleted = true;
        Ok(Reply::no_content())
    }

    fn edit_message(
        &mut self,
        channel_raw: &str,
        message_raw: &str,
        body: Option<&Value>,
        now: Instant,
    ) -> Result<Reply, Reply> {
        let channel_id = path_snowflake("channel_id", channel_raw)?;
        path_snowflake("message_id", message_raw)?;
        if let Some(limited) = self.rate_limit(channel_id, EDIT_MESSAGE_BUCKET, now) {
            return Err(limited);
        }
        // LOOSER: edits in the DM of a user who closed DMs are accepted; Discord's behaviour
        // there is undocumented.
        let index = self.find_message(channel_raw, message_raw)?;
        let obj = body_object(body)?;
        let mut errors = FormErrors::default();
        validate_message_fields(&obj, &mut errors);
        errors.into_result()?;

        // PATCH semantics: an absent field stays; `null` or an empty value clears it.
        let current = &self.messages[index];
        let content = match obj.get("content") {
            None => current.msg.content.clone(),
            Some(v) => v.as_str().unwrap_or("").to_owned(),
        };
        let embeds = if obj.contains_key("embeds") {
            array_of(&obj, "embeds")
        } else {
            current.msg.embeds.clone()
        };
        let components = if obj.contains_key("components") {
            array_of(&obj, "components")
        } else {
            current.msg.components.clone()
        };
        // An edit may not leave the message with nothing to show (Discord answers 50006 too).
        if is_empty_message(&content, &embeds, &components) {
            return Err(Reply::error(400, 50006, "Cannot send an empty message"));
        }
        let stored = &mut self.messages[index];
        stored.msg.content = content;
        stored.msg.embeds = embeds;
        stored.msg.components = components;
        if let Some(mentions) = obj.get("allowed_mentions") {
            stored.msg.allowed_mentions = Some(mentions.clone()).filter(|v| !v.is_null());
        }
        if let Some(flags) = obj.get("flags").and_then(Value::as_u64) {
            stored.flags = (stored.flags & !EDIT_FLAGS) | (flags & EDIT_FLAGS);
        }
        stored.msg.edits += 1;
        stored.edited_timestamp = Some(discord_timestamp());
        let reply = Reply::json(200, message_json(stored));
        self.last_accepted.insert(channel_id, now);
        Ok(reply)
    }
}

/// The 429 Discord sends. Per-route limits carry the bucket headers and scope `user`; the
/// global limit carries only `Retry-After`, `X-RateLimit-Global` and scope `global` (as in the
/// rate-limits doc's examples). The body never has a `code` (the doc marks it optional, "for
/// some limits").
fn too_many_requests(retry_after: f64, global: bool, bucket: &str) -> Reply {
    let retry_after = (retry_after * 1000.0).ceil() / 1000.0;
    // The header is whole seconds, rounded up (doc example: 64.57 -> "65").
    let retry_after_header = format!("{}", retry_after.ceil() as u64);
    let mut headers = vec![("Retry-After", retry_after_header)];
    if global {
        headers.push(("X-RateLimit-Global", "true".to_owned()));
        headers.push(("X-RateLimit-Scope", "global".to_owned()));
    } else {
        headers.extend(bucket_headers(bucket, 5, 0, retry_after));
        headers.push(("X-RateLimit-Scope", "user".to_owned()));
    }
    Reply {
        status: 429,
        body: Some(json!({
            "message": "You are being rate limited.",
            "retry_after": retry_after,
            "global": global,
        })),
        headers,
    }
}

fn bucket_headers(
    bucket: &str,
    limit: u32,
    remaining: u32,
    reset_after: f64,
) -> Vec<(&'static str, String)> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    vec![
        ("X-RateLimit-Limit", limit.to_string()),
        ("X-RateLimit-Remaining", remaining.to_string()),
        ("X-RateLimit-Reset", format!("{:.3}", now + reset_after)),
        ("X-RateLimit-Reset-After", format!("{reset_after:.3}")),
        ("X-RateLimit-Bucket", bucket.to_owned()),
    ]
}

/// Discord's timestamp format, e.g. `2024-01-01T00:00:00.000000+00:00`.
fn discord_timestamp() -> String {
    Utc::now().format("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string()
}

fn user_json(id: u64, username: &str, bot: bool) -> Value {
    let mut user = json!({
        "id": id.to_string(),
        "username": username,
        "discriminator": "0",
        "global_name": null,
        "avatar": null,
        "public_flags": 0,
        "flags": 0,
        "banner": null,
        "accent_color": null,
        "avatar_decoration_data": null,
        "collectibles": null,
        "primary_guild": null,
    });
    // Discord omits `bot` for humans.
    if bot {
        user["bot"] = json!(true);
    }
    user
}

/// The bot user; `me` adds the private fields `GET /users/@me` returns.
fn bot_user_json(me: bool) -> Value {
    let mut user = user_json(FAKE_BOT_USER_ID, BOT_USERNAME, true);
    if me {
        user["mfa_enabled"] = json!(false);
        user["locale"] = json!("en-US");
        user["verified"] = json!(true);
        user["email"] = Value::Null;
    }
    user
}

fn message_json(stored: &StoredMessage) -> Value {
    let embeds: Vec<Value> = stored
        .msg
        .embeds
        .iter()
        .map(|embed| {
            let mut embed = embed.clone();
            if let Value::Object(map) = &mut embed {
                map.entry("type").or_insert_with(|| json!("rich"));
            }
            embed
        })
        .collect();
    let mut message = json!({
        "id": stored.msg.id.to_string(),
        "channel_id": stored.msg.channel_id.to_string(),
        "type": 0,
        "author": bot_user_json(false),
        "content": stored.msg.content,
        "timestamp": stored.timestamp,
        "edited_timestamp": stored.edited_timestamp,
        "tts": stored.tts,
        "mention_everyone": false,
        "mentions": [],
        "mention_roles": [],
        "attachments": [],
        "embeds": embeds,
        "components": stored.msg.components,
        "pinned": false,
        "flags": stored.flags,
    });
    if let Some(nonce) = &stored.nonce {
        message["nonce"] = nonce.clone();
    }
    // A reply is message type 19 with the reference. LOOSER: Discord also embeds the replied-to
    // message as `referenced_message`.
    if let Some(reply_to) = stored.msg.reply_to {
        message["type"] = json!(19);
        message["message_reference"] = json!({
            "type": 0,
            "channel_id": stored.msg.channel_id.to_string(),
            "message_id": reply_to.to_string(),
        });
    }
    message
}

/// The top-level body must be a JSON object; an absent body counts as `{}`.
fn body_object(body: Option<&Value>) -> Result<Map<String, Value>, Reply> {
    match body {
        None => Ok(Map::new()),
        Some(Value::Object(map)) => Ok(map.clone()),
        Some(_) => Err(Reply::form(json!({"_errors": [{
            "code": "MODEL_TYPE_CONVERT",
            "message": "Only dictionaries may be used in a ModelType"
        }]}))),
    }
}

/// A snowflake in a JSON body: a string of digits or a non-negative integer.
fn snowflake_value(v: &Value) -> Option<u64> {
    match v {
        Value::String(s) => parse_snowflake(s),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

fn parse_snowflake(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// A snowflake in the path; Discord rejects a malformed one as a form error on that name.
fn path_snowflake(name: &str, raw: &str) -> Result<u64, Reply> {
    parse_snowflake(raw).ok_or_else(|| {
        Reply::form(error_tree(
            &[name],
            "NUMBER_TYPE_COERCE",
            &format!("Value \"{raw}\" is not snowflake."),
        ))
    })
}

/// A JSON value as Discord quotes it in messages (strings without their quotes).
fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The array under `key`; absent, `null` or not an array gives an empty list.
fn array_of(obj: &Map<String, Value>, key: &str) -> Vec<Value> {
    obj.get(key)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// Nothing a reader could see: no content, no embed with anything in it, no components.
/// An embed with only a colour or a URL shows nothing, and Discord treats `[{}]` as empty.
fn is_empty_message(content: &str, embeds: &[Value], components: &[Value]) -> bool {
    const VISIBLE: [&str; 8] = [
        "title",
        "description",
        "footer",
        "author",
        "image",
        "thumbnail",
        "timestamp",
        "video",
    ];
    let embed_has_content = |embed: &Value| {
        let Some(map) = embed.as_object() else {
            return false;
        };
        let fields = map
            .get("fields")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        fields
            || VISIBLE
                .iter()
                .any(|key| map.get(*key).is_some_and(|v| !v.is_null()))
    };
    content.is_empty() && !embeds.iter().any(embed_has_content) && components.is_empty()
}

/// One error tree with a single leaf, for errors raised outside the validators.
fn error_tree(path: &[&str], code: &str, message: &str) -> Value {
    let mut errors = FormErrors::default();
    errors.add(path, code, message);
    Value::Object(errors.tree)
}

/// Discord's 50035 `errors` tree: nested objects keyed by field name or list index, with
/// `{"_errors": [{"code", "message"}]}` at each failing field. Every failing field is
/// reported, not only the first.
#[derive(Default)]
struct FormErrors {
    tree: Map<String, Value>,
}

impl FormErrors {
    fn add(&mut self, path: &[&str], code: &str, message: &str) {
        let mut node = &mut self.tree;
        for segment in path {
            let child = node.entry(*segment).or_insert_with(|| json!({}));
            node = match child {
                Value::Object(map) => map,
                _ => unreachable!("error tree nodes are objects"),
            };
        }
        if let Value::Array(list) = node.entry("_errors").or_insert_with(|| json!([])) {
            list.push(json!({"code": code, "message": message}));
        }
    }

    fn into_result(self) -> Result<(), Reply> {
        if self.tree.is_empty() {
            Ok(())
        } else {
            Err(Reply::form(Value::Object(self.tree)))
        }
    }
}

fn char_len(s: &str) -> usize {
    s.chars().count()
}

/// A string field with a maximum length. Returns the string (even when too long) so callers
/// can count it towards the embed total; `None` when it is not a string.
///
/// The codes for a wrong JSON type are the best known ones, not confirmed against Discord.
fn string_at<'a>(
    v: &'a Value,
    path: &[&str],
    max: usize,
    errors: &mut FormErrors,
) -> Option<&'a str> {
    match v {
        Value::String(s) => {
            if char_len(s) > max {
                errors.add(
                    path,
                    "BASE_TYPE_MAX_LENGTH",
                    &format!("Must be {max} or fewer in length."),
                );
            }
            Some(s)
        }
        other => {
            errors.add(
                path,
                "BASE_TYPE_STRING",
                &format!("Could not interpret \"{}\" as string.", plain(other)),
            );
            None
        }
    }
}

/// An optional string field: absent or `null` is fine.
fn optional_string<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    path: &[&str],
    max: usize,
    errors: &mut FormErrors,
) -> Option<&'a str> {
    match obj.get(key) {
        None | Some(Value::Null) => None,
        Some(v) => string_at(v, path, max, errors),
    }
}

/// A required string field: absent, `null` or empty is "This field is required".
fn required_string<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    path: &[&str],
    max: usize,
    errors: &mut FormErrors,
) -> Option<&'a str> {
    match obj.get(key) {
        None | Some(Value::Null) => {
            errors.add(path, "BASE_TYPE_REQUIRED", "This field is required");
            None
        }
        Some(Value::String(s)) if s.is_empty() => {
            errors.add(path, "BASE_TYPE_REQUIRED", "This field is required");
            Some(s)
        }
        Some(v) => string_at(v, path, max, errors),
    }
}

fn object_at<'a>(
    v: &'a Value,
    path: &[&str],
    errors: &mut FormErrors,
) -> Option<&'a Map<String, Value>> {
    let map = v.as_object();
    if map.is_none() {
        errors.add(
            path,
            "MODEL_TYPE_CONVERT",
            "Only dictionaries may be used in a ModelType",
        );
    }
    map
}

/// A list with a maximum length; the items are returned even when there are too many so that
/// each one is still validated.
fn list_at<'a>(
    v: &'a Value,
    path: &[&str],
    max: usize,
    errors: &mut FormErrors,
) -> Option<&'a Vec<Value>> {
    let Some(list) = v.as_array() else {
        errors.add(
            path,
            "LIST_TYPE_CONVERT",
            "Only iterables may be used in a ListType.",
        );
        return None;
    };
    if list.len() > max {
        errors.add(
            path,
            "BASE_TYPE_MAX_LENGTH",
            &format!("Must be {max} or fewer in length."),
        );
    }
    Some(list)
}

fn check_bool(obj: &Map<String, Value>, key: &str, path: &[&str], errors: &mut FormErrors) {
    if let Some(v) = obj.get(key)
        && !v.is_null()
        && !v.is_boolean()
    {
        errors.add(path, "BASE_TYPE_BOOLEAN", "Must be either true or false.");
    }
}

/// An integer field within `min..=max`.
fn check_int(v: &Value, path: &[&str], min: i64, max: i64, errors: &mut FormErrors) {
    let too_big = || format!("int value should be less than or equal to {max}.");
    match v {
        Value::Number(n) if n.is_i64() => {
            let i = n.as_i64().unwrap_or_default();
            if i < min {
                let message = format!("int value should be greater than or equal to {min}.");
                errors.add(path, "NUMBER_TYPE_MIN", &message);
            } else if i > max {
                errors.add(path, "NUMBER_TYPE_MAX", &too_big());
            }
        }
        // Integers above i64::MAX.
        Value::Number(n) if n.is_u64() => errors.add(path, "NUMBER_TYPE_MAX", &too_big()),
        other => errors.add(
            path,
            "NUMBER_TYPE_COERCE",
            &format!("Value \"{}\" is not int.", plain(other)),
        ),
    }
}

/// A URL field: http(s) only, with a host that has a dot. Discord rejects hosts without a
/// TLD such as `http://localhost/` or `http://alertmanager:9093/` as "Not a well formed URL."
/// (alertmanager-discord#19, bugsink#280, JDA#699). `attachment://` is allowed for images.
fn check_url(
    v: &Value,
    path: &[&str],
    max: usize,
    allow_attachment: bool,
    errors: &mut FormErrors,
) {
    let Some(url) = string_at(v, path, max, errors) else {
        return;
    };
    if allow_attachment && url.starts_with("attachment://") {
        return;
    }
    let scheme = url.split_once(':').map_or("", |(scheme, _)| scheme);
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        let message = format!(
            "Scheme \"{scheme}\" is not supported. Scheme must be one of ('http', 'https')."
        );
        errors.add(path, "URL_TYPE_INVALID_SCHEME", &message);
        return;
    }
    if !is_well_formed_http_url(&url[scheme.len() + 1..]) {
        errors.add(path, "URL_TYPE_INVALID_URL", "Not a well formed URL.");
    }
}

/// `rest` is what follows `http:`. LOOSER: an IPv4 literal such as 127.0.0.1 passes (it has
/// dots); whether Discord accepts IP hosts is not known.
fn is_well_formed_http_url(rest: &str) -> bool {
    let Some(rest) = rest.strip_prefix("//") else {
        return false;
    };
    if rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return false;
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or("");
    if host_port.starts_with('[') {
        // An IPv6 literal.
        return host_port.contains(']');
    }
    let host = host_port.split(':').next().unwrap_or("");
    let labels_ok = host
        .split('.')
        .all(|label| !label.is_empty() && label.chars().all(|c| c.is_alphanumeric() || c == '-'));
    host.contains('.') && labels_ok
}

/// The message fields shared by create and edit. Absent and `null` fields are not checked.
fn validate_message_fields(obj: &Map<String, Value>, errors: &mut FormErrors) {
    optional_string(obj, "content", &["content"], MAX_CONTENT, errors);
    if let Some(v) = obj.get("embeds").filter(|v| !v.is_null()) {
        validate_embeds(v, errors);
    }
    if let Some(v) = obj.get("components").filter(|v| !v.is_null()) {
        validate_components(v, errors);
    }
    if let Some(v) = obj.get("allowed_mentions").filter(|v| !v.is_null()) {
        validate_allowed_mentions(v, errors);
    }
    if let Some(v) = obj.get("sticker_ids").filter(|v| !v.is_null()) {
        list_at(v, &["sticker_ids"], 3, errors);
    }
    if let Some(v) = obj.get("attachments").filter(|v| !v.is_null())
        && let Some(list) = list_at(v, &["attachments"], 10, errors)
        && !list.is_empty()
    {
        // LOOSER (and different): the fake takes no file uploads, so it cannot tell a valid
        // attachment reference from an invalid one. countersign never sends attachments.
        errors.add(
            &["attachments"],
            "FAKE_UNSUPPORTED",
            "countersign-fakes: attachments are not supported by the fake Discord",
        );
    }
    check_bool(obj, "tts", &["tts"], errors);
    check_bool(obj, "enforce_nonce", &["enforce_nonce"], errors);
    if let Some(v) = obj.get("flags").filter(|v| !v.is_null()) {
        check_int(v, &["flags"], 0, i64::MAX, errors);
    }
    match obj.get("nonce") {
        None | Some(Value::Null) => {}
        Some(Value::Number(n)) if n.is_i64() => {}
        Some(Value::String(s)) if char_len(s) <= 25 => {}
        Some(Value::String(_)) => {
            errors.add(
                &["nonce"],
                "BASE_TYPE_MAX_LENGTH",
                "Must be 25 or fewer in length.",
            );
        }
        Some(_) => errors.add(
            &["nonce"],
            "NONCE_TYPE_INVALID_TYPE",
            "This field must be a string or integer.",
        ),
    }
    // LOOSER: `poll` and `flags` bits are not checked. (`message_reference` is checked in
    // `message_reference`, where the replied-to message can be looked up.)
}

fn validate_embeds(v: &Value, errors: &mut FormErrors) {
    let Some(embeds) = list_at(v, &["embeds"], MAX_EMBEDS, errors) else {
        return;
    };
    let mut total = 0;
    for (i, embed) in embeds.iter().enumerate() {
        total += validate_embed(embed, &i.to_string(), errors);
    }
    if total > MAX_EMBED_TOTAL {
        errors.add(
            &["embeds"],
            "MAX_EMBED_SIZE_EXCEEDED",
            "Embed size exceeds maximum size of 6000",
        );
    }
}

/// Validates one embed and returns the characters it counts towards the 6000 total: title,
/// description, field names and values, footer text and author name.
fn validate_embed(v: &Value, i: &str, errors: &mut FormErrors) -> usize {
    let Some(embed) = object_at(v, &["embeds", i], errors) else {
        return 0;
    };
    let mut size = 0;
    let count = |s: Option<&str>| s.map_or(0, char_len);
    size += count(optional_string(
        embed,
        "title",
        &["embeds", i, "title"],
        MAX_TITLE,
        errors,
    ));
    size += count(optional_string(
        embed,
        "description",
        &["embeds", i, "description"],
        MAX_DESCRIPTION,
        errors,
    ));
    if let Some(url) = embed.get("url").filter(|v| !v.is_null()) {
        check_url(url, &["embeds", i, "url"], MAX_EMBED_URL, false, errors);
    }
    if let Some(color) = embed.get("color").filter(|v| !v.is_null()) {
        check_int(color, &["embeds", i, "color"], 0, MAX_COLOR, errors);
    }
    if let Some(ts) = embed.get("timestamp").filter(|v| !v.is_null()) {
        check_timestamp(ts, &["embeds", i, "timestamp"], errors);
    }
    if let Some(fields) = embed.get("fields").filter(|v| !v.is_null())
        && let Some(fields) = list_at(fields, &["embeds", i, "fields"], MAX_FIELDS, errors)
    {
        for (f, field) in fields.iter().enumerate() {
            let f = f.to_string();
            let Some(field) = object_at(field, &["embeds", i, "fields", &f], errors) else {
                continue;
            };
            let name_path = ["embeds", i, "fields", &f, "name"];
            size += count(required_string(
                field,
                "name",
                &name_path,
                MAX_FIELD_NAME,
                errors,
            ));
            let value_path = ["embeds", i, "fields", &f, "value"];
            size += count(required_string(
                field,
                "value",
                &value_path,
                MAX_FIELD_VALUE,
                errors,
            ));
            check_bool(
                field,
                "inline",
                &["embeds", i, "fields", &f, "inline"],
                errors,
            );
        }
    }
    if let Some(footer) = embed.get("footer").filter(|v| !v.is_null())
        && let Some(footer) = object_at(footer, &["embeds", i, "footer"], errors)
    {
        let text_path = ["embeds", i, "footer", "text"];
        size += count(required_string(
            footer, "text", &text_path, MAX_FOOTER, errors,
        ));
        if let Some(icon) = footer.get("icon_url").filter(|v| !v.is_null()) {
            check_url(
                icon,
                &["embeds", i, "footer", "icon_url"],
                MAX_EMBED_URL,
                true,
                errors,
            );
        }
    }
    if let Some(author) = embed.get("author").filter(|v| !v.is_null())
        && let Some(author) = object_at(author, &["embeds", i, "author"], errors)
    {
        let name_path = ["embeds", i, "author", "name"];
        size += count(required_string(
            author, "name", &name_path, MAX_AUTHOR, errors,
        ));
        if let Some(url) = author.get("url").filter(|v| !v.is_null()) {
            check_url(
                url,
                &["embeds", i, "author", "url"],
                MAX_EMBED_URL,
                false,
                errors,
            );
        }
        if let Some(icon) = author.get("icon_url").filter(|v| !v.is_null()) {
            check_url(
                icon,
                &["embeds", i, "author", "icon_url"],
                MAX_EMBED_URL,
                true,
                errors,
            );
        }
    }
    for key in ["image", "thumbnail"] {
        if let Some(media) = embed.get(key).filter(|v| !v.is_null())
            && let Some(media) = object_at(media, &["embeds", i, key], errors)
        {
            match media.get("url").filter(|v| !v.is_null()) {
                Some(url) => {
                    check_url(url, &["embeds", i, key, "url"], MAX_EMBED_URL, true, errors)
                }
                None => errors.add(
                    &["embeds", i, key, "url"],
                    "BASE_TYPE_REQUIRED",
                    "This field is required",
                ),
            }
        }
    }
    // LOOSER: `provider` and `video` (ignored by Discord for bots) are not checked.
    size
}

/// ISO 8601, as serenity's `Timestamp` and chrono produce it. The error code is the best known.
fn check_timestamp(v: &Value, path: &[&str], errors: &mut FormErrors) {
    let ok = v.as_str().is_some_and(|s| {
        DateTime::parse_from_rfc3339(s).is_ok()
            || NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").is_ok()
    });
    if !ok {
        let message = format!("Could not parse {}. Should be ISO8601.", plain(v));
        errors.add(path, "DATE_TIME_TYPE_PARSE", &message);
    }
}

/// Legacy message components: up to 5 action rows (type 1) of up to 5 buttons (type 2).
/// STRICTER than Discord: select menus and Components V2 (flag 1 << 15) are refused, because
/// countersign sends neither and the fake does not model them.
fn validate_components(v: &Value, errors: &mut FormErrors) {
    let Some(rows) = list_at(v, &["components"], MAX_ROWS, errors) else {
        return;
    };
    let mut custom_ids = HashSet::new();
    for (r, row) in rows.iter().enumerate() {
        let r = r.to_string();
        let Some(row) = object_at(row, &["components", &r], errors) else {
            continue;
        };
        if row.get("type") != Some(&json!(1)) {
            errors.add(
                &["components", &r, "type"],
                "BASE_TYPE_CHOICES",
                "Value must be one of {1}.",
            );
            continue;
        }
        let buttons = match row.get("components") {
            None | Some(Value::Null) => {
                errors.add(
                    &["components", &r, "components"],
                    "BASE_TYPE_REQUIRED",
                    "This field is required",
                );
                continue;
            }
            Some(v) => match v.as_array() {
                Some(list) => list,
                None => {
                    errors.add(
                        &["components", &r, "components"],
                        "LIST_TYPE_CONVERT",
                        "Only iterables may be used in a ListType.",
                    );
                    continue;
                }
            },
        };
        if buttons.is_empty() || buttons.len() > MAX_BUTTONS {
            errors.add(
                &["components", &r, "components"],
                "BASE_TYPE_BAD_LENGTH",
                &format!("Must be between 1 and {MAX_BUTTONS} in length."),
            );
        }
        for (b, button) in buttons.iter().enumerate() {
            let b = b.to_string();
            validate_button(
                button,
                &["components", &r, "components", &b],
                &mut custom_ids,
                errors,
            );
        }
    }
}

/// Link buttons (style 5) need a `url` and no `custom_id`; premium buttons (style 6) need a
/// `sku_id`; the others need a `custom_id` (1..=100 chars, unique in the message) and no `url`.
/// Codes for the mutual-exclusion errors are not documented by Discord; the messages are the
/// ones clients report.
fn validate_button(
    v: &Value,
    path: &[&str],
    custom_ids: &mut HashSet<String>,
    errors: &mut FormErrors,
) {
    let Some(button) = object_at(v, path, errors) else {
        return;
    };
    let at = |field: &'static str| -> Vec<&str> {
        let mut p = path.to_vec();
        p.push(field);
        p
    };
    if button.get("type") != Some(&json!(2)) {
        errors.add(
            &at("type"),
            "BASE_TYPE_CHOICES",
            "Value must be one of {2}.",
        );
        return;
    }
    let style = button.get("style").and_then(Value::as_u64);
    let Some(style @ 1..=6) = style else {
        errors.add(
            &at("style"),
            "BASE_TYPE_CHOICES",
            "Value must be one of {1, 2, 3, 4, 5, 6}.",
        );
        return;
    };
    optional_string(button, "label", &at("label"), MAX_LABEL, errors);
    check_bool(button, "disabled", &at("disabled"), errors);
    let present = |key: &str| button.get(key).is_some_and(|v| !v.is_null());
    match style {
        5 => {
            match button.get("url").filter(|v| !v.is_null()) {
                Some(url) => check_url(url, &at("url"), MAX_BUTTON_URL, false, errors),
                None => errors.add(&at("url"), "BASE_TYPE_REQUIRED", "This field is required"),
            }
            if present("custom_id") {
                errors.add(
                    &at("custom_id"),
                    "COMPONENT_CUSTOM_ID_NOT_ALLOWED",
                    "A custom id and url cannot both be specified",
                );
            }
        }
        6 => {
            if !present("sku_id") {
                errors.add(
                    &at("sku_id"),
                    "BASE_TYPE_REQUIRED",
                    "This field is required",
                );
            }
            for key in ["custom_id", "url"] {
                if present(key) {
                    errors.add(
                        &at(key),
                        "COMPONENT_FIELD_NOT_ALLOWED",
                        "Premium buttons cannot have this field",
                    );
                }
            }
        }
        _ => {
            if present("url") {
                errors.add(
                    &at("url"),
                    "COMPONENT_URL_NOT_ALLOWED",
                    "A custom id and url cannot both be specified",
                );
            }
            if let Some(id) =
                required_string(button, "custom_id", &at("custom_id"), MAX_CUSTOM_ID, errors)
                && !id.is_empty()
                && !custom_ids.insert(id.to_owned())
            {
                errors.add(
                    &at("custom_id"),
                    "COMPONENT_CUSTOM_ID_DUPLICATED",
                    "Component custom id cannot be duplicated",
                );
            }
        }
    }
    // LOOSER: a button with neither label nor emoji, and `emoji` contents, are not checked.
}

/// `parse` may hold "roles", "users", "everyone"; `users`/`roles` at most 100 ids each, and
/// `parse: ["users"]` excludes an explicit `users` list (likewise roles).
fn validate_allowed_mentions(v: &Value, errors: &mut FormErrors) {
    let Some(mentions) = object_at(v, &["allowed_mentions"], errors) else {
        return;
    };
    let mut parsed = Vec::new();
    if let Some(parse) = mentions.get("parse").filter(|v| !v.is_null())
        && let Some(list) = list_at(parse, &["allowed_mentions", "parse"], 3, errors)
    {
        for (i, item) in list.iter().enumerate() {
            match item.as_str() {
                Some(kind @ ("roles" | "users" | "everyone")) => parsed.push(kind),
                _ => errors.add(
                    &["allowed_mentions", "parse", &i.to_string()],
                    "BASE_TYPE_CHOICES",
                    "Value must be one of ('roles', 'users', 'everyone').",
                ),
            }
        }
    }
    for kind in ["users", "roles"] {
        let Some(list) = mentions.get(kind).filter(|v| !v.is_null()) else {
            continue;
        };
        let Some(list) = list_at(list, &["allowed_mentions", kind], 100, errors) else {
            continue;
        };
        if !list.is_empty() && parsed.contains(&kind) {
            errors.add(
                &["allowed_mentions"],
                "MESSAGE_ALLOWED_MENTIONS_PARSE_EXCLUSIVE",
                &format!("parse:[\"{kind}\"] and {kind}: [ids...] are mutually exclusive."),
            );
        }
    }
    check_bool(
        mentions,
        "replied_user",
        &["allowed_mentions", "replied_user"],
        errors,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderMap;

    const TOKEN: &str = "FAKE.DISCORD.TOKEN";
    const OWNER: u64 = 222_000_000_000_000_222;
    const CHANNEL: u64 = 555_000_000_000_000_555;

    async fn fake() -> FakeDiscord {
        FakeDiscord::start(TOKEN, OWNER, CHANNEL).await
    }

    /// One raw HTTP call: (status, headers, JSON body or Null).
    async fn call(
        fake: &FakeDiscord,
        method: Method,
        path: &str,
        body: Option<Value>,
        auth: Option<&str>,
    ) -> (u16, HeaderMap, Value) {
        let client = reqwest::Client::new();
        let mut request = client.request(method, format!("{}{path}", fake.api_url()));
        if let Some(auth) = auth {
            request = request.header("Authorization", auth);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request to the fake");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).expect("JSON body")
        };
        (status, headers, body)
    }

    async fn bot(
        fake: &FakeDiscord,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, HeaderMap, Value) {
        call(fake, method, path, body, Some(&format!("Bot {TOKEN}"))).await
    }

    async fn post_message(
        fake: &FakeDiscord,
        channel: u64,
        body: Value,
    ) -> (u16, HeaderMap, Value) {
        bot(
            fake,
            Method::POST,
            &format!("/channels/{channel}/messages"),
            Some(body),
        )
        .await
    }

    fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn request_without_or_with_wrong_token_is_401() {
        let fake = fake().await;
        let (status, _, body) = call(&fake, Method::GET, "/users/@me", None, None).await;
        assert_eq!(status, 401);
        assert_eq!(body, json!({"message": "401: Unauthorized", "code": 0}));
        let (status, _, _) = call(&fake, Method::GET, "/users/@me", None, Some(TOKEN)).await;
        assert_eq!(status, 401, "a token without the `Bot ` prefix is refused");
        let (status, _, _) = call(&fake, Method::GET, "/users/@me", None, Some("Bot other")).await;
        assert_eq!(status, 401);
        let (status, _, body) = bot(&fake, Method::GET, "/users/@me", None).await;
        assert_eq!(status, 200);
        assert_eq!(body["bot"], json!(true));
        assert_eq!(body["id"], json!(FAKE_BOT_USER_ID.to_string()));

        let requests = fake.requests();
        assert_eq!(requests.len(), 4);
        assert_eq!(requests[0].authorization, None);
        assert_eq!(
            requests[3].authorization.as_deref(),
            Some("Bot FAKE.DISCORD.TOKEN")
        );
        assert_eq!(requests[0].status, 401);
    }

    #[tokio::test]
    async fn unknown_route_is_discords_404() {
        let fake = fake().await;
        let (status, _, body) = bot(&fake, Method::GET, "/gateway/bot", None).await;
        assert_eq!(status, 404);
        assert_eq!(body, json!({"message": "404: Not Found", "code": 0}));
    }

    #[tokio::test]
    async fn dm_channel_is_the_same_every_time_and_unknown_users_are_refused() {
        let fake = fake().await;
        let open = |recipient: Value| {
            let fake = fake.clone();
            async move {
                bot(
                    &fake,
                    Method::POST,
                    "/users/@me/channels",
                    Some(json!({"recipient_id": recipient})),
                )
                .await
            }
        };
        let (status, _, first) = open(json!(OWNER.to_string())).await;
        assert_eq!(status, 200);
        assert_eq!(first["type"], json!(1));
        assert_eq!(first["recipients"][0]["id"], json!(OWNER.to_string()));
        assert!(first["id"].is_string(), "snowflakes are strings");
        let (_, _, second) = open(json!(OWNER)).await;
        assert_eq!(
            first["id"], second["id"],
            "a number id opens the same channel"
        );
        assert_eq!(
            fake.dm_channel_of(OWNER).map(|c| c.to_string()),
            first["id"].as_str().map(str::to_owned)
        );

        let (status, _, body) = open(json!("999")).await;
        assert_eq!((status, body["code"].clone()), (400, json!(50033)));
        let (status, _, body) = open(json!("abc")).await;
        assert_eq!(status, 400);
        assert_eq!(body["code"], json!(50035));
        assert_eq!(
            body["errors"]["recipient_id"]["_errors"][0]["code"],
            json!("NUMBER_TYPE_COERCE")
        );
    }

    #[tokio::test]
    async fn embed_title_over_256_is_a_form_error_naming_the_field() {
        let fake = fake().await;
        let (status, _, body) = post_message(
            &fake,
            CHANNEL,
            json!({"embeds": [{"title": "t".repeat(257)}]}),
        )
        .await;
        assert_eq!(status, 400);
        assert_eq!(
            body,
            json!({"code": 50035, "message": "Invalid Form Body", "errors": {"embeds": {"0": {"title": {"_errors": [
                {"code": "BASE_TYPE_MAX_LENGTH", "message": "Must be 256 or fewer in length."}
            ]}}}}})
        );
        assert!(fake.messages(CHANNEL).is_empty());
        let (status, _, _) = post_message(
            &fake,
            CHANNEL,
            json!({"embeds": [{"title": "t".repeat(256)}]}),
        )
        .await;
        assert_eq!(status, 200);
    }

    #[tokio::test]
    async fn embeds_over_6000_characters_in_total_are_refused() {
        let fake = fake().await;
        // Each embed is within its own limits; together they are 4096 + 1905 = 6001.
        let body = json!({"embeds": [
            {"description": "a".repeat(4096)},
            {"description": "b".repeat(1900), "footer": {"text": "12345"}},
        ]});
        let (status, _, reply) = post_message(&fake, CHANNEL, body).await;
        assert_eq!(status, 400);
        assert_eq!(
            reply["errors"]["embeds"]["_errors"][0]["code"],
            json!("MAX_EMBED_SIZE_EXCEEDED")
        );
        let body = json!({"embeds": [
            {"description": "a".repeat(4096)},
            {"description": "b".repeat(1900), "footer": {"text": "1234"}},
        ]});
        let (status, _, _) = post_message(&fake, CHANNEL, body).await;
        assert_eq!(status, 200, "exactly 6000 is allowed");
    }

    #[tokio::test]
    async fn other_limits_are_enforced() {
        let fake = fake().await;
        let cases = [
            (json!({"content": "x".repeat(2001)}), "content"),
            (
                json!({"embeds": [{"title": "a", "color": 0x0100_0000}]}),
                "color",
            ),
            (json!({"embeds": [{"title": "a", "color": -1}]}), "color"),
            (
                json!({"embeds": [{"title": "a", "url": "ftp://example.com"}]}),
                "URL_TYPE_INVALID_SCHEME",
            ),
            (
                json!({"embeds": [{"title": "a", "url": "http://localhost:8080/x"}]}),
                "URL_TYPE_INVALID_URL",
            ),
            (
                json!({"embeds": [{"fields": [{"name": "", "value": "v"}]}]}),
                "BASE_TYPE_REQUIRED",
            ),
            (
                json!({"embeds": [{"fields": [{"name": "n", "value": "v".repeat(1025)}]}]}),
                "value",
            ),
            (
                json!({"embeds": [{"title": "a", "fields": vec![json!({"name": "n", "value": "v"}); 26]}]}),
                "fields",
            ),
            (
                json!({"embeds": vec![json!({"title": "a"}); 11]}),
                "Must be 10 or fewer",
            ),
            (
                json!({"embeds": [{"footer": {"text": "f".repeat(2049)}}]}),
                "footer",
            ),
            (
                json!({"embeds": [{"author": {"name": "n".repeat(257)}}]}),
                "author",
            ),
            (
                json!({"embeds": [{"title": "a", "timestamp": "yesterday"}]}),
                "timestamp",
            ),
        ];
        for (body, expected) in cases {
            let (status, _, reply) = post_message(&fake, CHANNEL, body.clone()).await;
            assert_eq!(status, 400, "{body}");
            assert_eq!(reply["code"], json!(50035), "{body}");
            assert!(
                reply["errors"].to_string().contains(expected),
                "{body} -> {reply}"
            );
        }
        let (status, _, reply) = post_message(&fake, CHANNEL, json!({"content": ""})).await;
        assert_eq!(
            (status, reply),
            (
                400,
                json!({"code": 50006, "message": "Cannot send an empty message"})
            )
        );
        let (status, _, reply) =
            post_message(&fake, CHANNEL, json!({"embeds": [{"color": 5}]})).await;
        assert_eq!(
            (status, reply["code"].clone()),
            (400, json!(50006)),
            "an embed with nothing to show is empty"
        );
        let (status, _, reply) = bot(
            &fake,
            Method::POST,
            &format!("/channels/{CHANNEL}/messages"),
            None,
        )
        .await;
        assert_eq!((status, reply["code"].clone()), (400, json!(50006)));
        assert!(fake.messages(CHANNEL).is_empty());
    }

    #[tokio::test]
    async fn link_buttons_need_a_url_and_no_custom_id() {
        let fake = fake().await;
        let row = |button: Value| json!({"content": "c", "components": [{"type": 1, "components": [button]}]});
        let bad = [
            (json!({"type": 2, "style": 5, "label": "Review"}), "url"),
            (
                json!({"type": 2, "style": 5, "url": "https://example.com/a", "custom_id": "x"}),
                "custom_id",
            ),
            (
                json!({"type": 2, "style": 1, "label": "Approve"}),
                "custom_id",
            ),
            (
                json!({"type": 2, "style": 1, "custom_id": "a", "url": "https://example.com"}),
                "url",
            ),
            (
                json!({"type": 2, "style": 1, "custom_id": "a".repeat(101)}),
                "custom_id",
            ),
            (
                json!({"type": 2, "style": 5, "url": "https://example.com", "label": "l".repeat(81)}),
                "label",
            ),
            (json!({"type": 2, "style": 9, "custom_id": "a"}), "style"),
        ];
        for (button, field) in bad {
            let (status, _, reply) = post_message(&fake, CHANNEL, row(button.clone())).await;
            assert_eq!(status, 400, "{button}");
            let leaf = &reply["errors"]["components"]["0"]["components"]["0"][field]["_errors"];
            assert!(leaf.is_array(), "{button} -> {reply}");
        }
        let link = json!({"type": 2, "style": 5, "url": "https://example.com/a/1", "label": "Review", "disabled": false});
        let (status, _, reply) = post_message(&fake, CHANNEL, row(link.clone())).await;
        assert_eq!(status, 200, "{reply}");
        assert_eq!(reply["components"][0]["components"][0], link);

        // Row and button counts, and duplicate custom ids.
        let six_rows =
            json!({"components": vec![json!({"type": 1, "components": [link.clone()]}); 6]});
        let (status, _, reply) = post_message(&fake, CHANNEL, six_rows).await;
        assert_eq!(status, 400);
        assert!(reply["errors"]["components"]["_errors"].is_array());
        let six_buttons = json!({"components": [{"type": 1, "components": vec![link.clone(); 6]}]});
        let (status, _, reply) = post_message(&fake, CHANNEL, six_buttons).await;
        assert_eq!(status, 400);
        assert_eq!(
            reply["errors"]["components"]["0"]["components"]["_errors"][0]["code"],
            json!("BASE_TYPE_BAD_LENGTH")
        );
        let twins = json!({"components": [{"type": 1, "components": [
            {"type": 2, "style": 3, "custom_id": "approve", "label": "Approve"},
            {"type": 2, "style": 4, "custom_id": "approve", "label": "Deny"},
        ]}]});
        let (status, _, reply) = post_message(&fake, CHANNEL, twins).await;
        assert_eq!(status, 400);
        assert_eq!(
            reply["errors"]["components"]["0"]["components"]["1"]["custom_id"]["_errors"][0]["code"],
            json!("COMPONENT_CUSTOM_ID_DUPLICATED")
        );
    }

    #[tokio::test]
    async fn serenity_create_message_body_is_accepted_and_recorded() {
        // The exact body serenity 0.12 sent in the probe (shared/chat-platforms.md §2.2).
        let fake = fake().await;
        let body = json!({"content":"Approval request","tts":false,"embeds":[{"title":"Approval needed","type":"rich","description":"...","url":"https://example.com/a/1","timestamp":"2023-11-14T22:13:20Z","color":15105570,"footer":{"text":"req #1"},"fields":[{"name":"Amount","value":"12.50 USD","inline":true},{"name":"Context","value":"buy domain","inline":false}]}],"components":[{"type":1,"components":[{"type":2,"style":5,"url":"https://example.com/a/1","label":"Review","disabled":false}]}],"sticker_ids":[],"attachments":[],"enforce_nonce":false,"allowed_mentions":{"parse":[]}});
        let (status, headers, reply) = post_message(&fake, CHANNEL, body.clone()).await;
        assert_eq!(status, 200, "{reply}");
        assert_eq!(reply["author"]["bot"], json!(true));
        assert_eq!(reply["edited_timestamp"], Value::Null);
        assert_eq!(reply["embeds"][0]["type"], json!("rich"));
        assert!(!header(&headers, "x-ratelimit-bucket").is_empty());
        assert_eq!(header(&headers, "x-ratelimit-limit"), "5");
        let stored = fake.messages(CHANNEL);
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].content, "Approval request");
        assert_eq!(stored[0].allowed_mentions, Some(json!({"parse": []})));
        assert_eq!(stored[0].id.to_string(), reply["id"].as_str().unwrap());
        assert_eq!(fake.requests()[0].body, Some(body));
        assert_eq!(fake.count("post", "/messages"), 1);
    }

    #[tokio::test]
    async fn message_ids_increase() {
        let fake = fake().await;
        let (_, _, a) = post_message(&fake, CHANNEL, json!({"content": "a"})).await;
        let (_, _, b) = post_message(&fake, CHANNEL, json!({"content": "b"})).await;
        let id = |v: &Value| v["id"].as_str().unwrap().parse::<u64>().unwrap();
        assert!(id(&b) > id(&a));
    }

    #[tokio::test]
    async fn patch_keeps_absent_fields_and_clears_empty_ones() {
        let fake = fake().await;
        let body = json!({"content": "pending", "embeds": [{"title": "Approval"}],
            "components": [{"type": 1, "components": [{"type": 2, "style": 5, "url": "https://example.com", "label": "Review"}]}]});
        let (_, _, created) = post_message(&fake, CHANNEL, body).await;
        let path = format!(
            "/channels/{CHANNEL}/messages/{}",
            created["id"].as_str().unwrap()
        );

        let (status, _, edited) = bot(
            &fake,
            Method::PATCH,
            &path,
            Some(json!({"content": "approved"})),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(edited["content"], json!("approved"));
        assert_eq!(
            edited["embeds"][0]["title"],
            json!("Approval"),
            "absent embeds stay"
        );
        assert!(edited["edited_timestamp"].is_string());

        let (status, _, edited) = bot(
            &fake,
            Method::PATCH,
            &path,
            Some(json!({"embeds": [], "components": []})),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(edited["embeds"], json!([]));
        assert_eq!(edited["components"], json!([]));

        let (status, _, reply) =
            bot(&fake, Method::PATCH, &path, Some(json!({"content": null}))).await;
        assert_eq!(
            (status, reply["code"].clone()),
            (400, json!(50006)),
            "nothing would be left"
        );
        let (status, _, _) = bot(
            &fake,
            Method::PATCH,
            &path,
            Some(json!({"content": "x".repeat(2001)})),
        )
        .await;
        assert_eq!(status, 400);

        let stored = &fake.messages(CHANNEL)[0];
        assert_eq!((stored.content.as_str(), stored.edits), ("approved", 2));
        assert!(stored.embeds.is_empty() && stored.components.is_empty());
    }

    #[tokio::test]
    async fn patch_after_the_owner_deleted_the_message_is_10008() {
        let fake = fake().await;
        let (_, _, created) = post_message(&fake, CHANNEL, json!({"content": "pending"})).await;
        let id: u64 = created["id"].as_str().unwrap().parse().unwrap();
        fake.delete_message(CHANNEL, id);
        let (status, _, reply) = bot(
            &fake,
            Method::PATCH,
            &format!("/channels/{CHANNEL}/messages/{id}"),
            Some(json!({"content": "x"})),
        )
        .await;
        assert_eq!(
            (status, reply),
            (404, json!({"code": 10008, "message": "Unknown Message"}))
        );
        assert!(fake.messages(CHANNEL)[0].deleted);

        let (status, _, reply) = bot(
            &fake,
            Method::PATCH,
            &format!("/channels/42/messages/{id}"),
            Some(json!({"content": "x"})),
        )
        .await;
        assert_eq!((status, reply["code"].clone()), (404, json!(10003)));
        let (status, _, reply) = post_message(&fake, 42, json!({"content": "x"})).await;
        assert_eq!(
            (status, reply),
            (404, json!({"code": 10003, "message": "Unknown Channel"}))
        );

        // DELETE over HTTP, then the message is gone for reads too.
        let (_, _, other) = post_message(&fake, CHANNEL, json!({"content": "other"})).await;
        let path = format!(
            "/channels/{CHANNEL}/messages/{}",
            other["id"].as_str().unwrap()
        );
        assert_eq!(bot(&fake, Method::GET, &path, None).await.0, 200);
        assert_eq!(bot(&fake, Method::DELETE, &path, None).await.0, 204);
        assert_eq!(bot(&fake, Method::GET, &path, None).await.0, 404);
    }

    #[tokio::test]
    async fn closed_dms_refuse_posts_with_50007() {
        let fake = fake().await;
        let (_, _, dm) = bot(
            &fake,
            Method::POST,
            "/users/@me/channels",
            Some(json!({"recipient_id": OWNER.to_string()})),
        )
        .await;
        let dm: u64 = dm["id"].as_str().unwrap().parse().unwrap();
        fake.close_dms(OWNER);
        let (status, _, reply) = post_message(&fake, dm, json!({"content": "hi"})).await;
        assert_eq!(
            (status, reply),
            (
                403,
                json!({"code": 50007, "message": "Cannot send messages to this user"})
            )
        );
        fake.open_dms(OWNER);
        assert_eq!(
            post_message(&fake, dm, json!({"content": "hi"})).await.0,
            200
        );
    }

    #[tokio::test]
    async fn forced_429_carries_discords_headers_and_body() {
        let fake = fake().await;
        fake.force_rate_limit(1, 1.5, false);
        let (status, headers, body) = post_message(&fake, CHANNEL, json!({"content": "a"})).await;
        assert_eq!(status, 429);
        assert_eq!(
            body,
            json!({"message": "You are being rate limited.", "retry_after": 1.5, "global": false})
        );
        assert_eq!(header(&headers, "retry-after"), "2");
        assert_eq!(header(&headers, "x-ratelimit-remaining"), "0");
        assert_eq!(header(&headers, "x-ratelimit-reset-after"), "1.500");
        assert_eq!(header(&headers, "x-ratelimit-scope"), "user");
        assert!(!header(&headers, "x-ratelimit-limit").is_empty());
        assert!(!header(&headers, "x-ratelimit-bucket").is_empty());
        assert!(headers.get("x-ratelimit-global").is_none());
        assert!(fake.messages(CHANNEL).is_empty(), "a 429 is not applied");
        assert_eq!(
            post_message(&fake, CHANNEL, json!({"content": "a"}))
                .await
                .0,
            200
        );

        fake.force_rate_limit(1, 3.0, true);
        let (status, headers, body) = post_message(&fake, CHANNEL, json!({"content": "b"})).await;
        assert_eq!(status, 429);
        assert_eq!(body["global"], json!(true));
        assert_eq!(header(&headers, "x-ratelimit-global"), "true");
        assert_eq!(header(&headers, "x-ratelimit-scope"), "global");
        assert_eq!(header(&headers, "retry-after"), "3");
        assert_eq!(fake.rate_limited_count(), 2);
    }

    #[tokio::test]
    async fn min_interval_limits_each_channel_separately() {
        let fake = fake().await;
        fake.set_min_interval(Duration::from_secs(60));
        assert_eq!(
            post_message(&fake, CHANNEL, json!({"content": "a"}))
                .await
                .0,
            200
        );
        let (status, headers, body) = post_message(&fake, CHANNEL, json!({"content": "b"})).await;
        assert_eq!(status, 429);
        let retry_after = body["retry_after"].as_f64().unwrap();
        assert!(retry_after > 59.0 && retry_after <= 60.0, "{retry_after}");
        assert_eq!(header(&headers, "retry-after"), "60");
        // An edit in the same channel shares the wait.
        let id = fake.messages(CHANNEL)[0].id;
        let path = format!("/channels/{CHANNEL}/messages/{id}");
        assert_eq!(
            bot(&fake, Method::PATCH, &path, Some(json!({"content": "c"})))
                .await
                .0,
            429
        );
        assert_eq!(fake.messages(CHANNEL).len(), 1);
        assert_eq!(fake.messages(CHANNEL)[0].content, "a");

        // Another channel has its own bucket.
        let (_, _, dm) = bot(
            &fake,
            Method::POST,
            "/users/@me/channels",
            Some(json!({"recipient_id": OWNER.to_string()})),
        )
        .await;
        let dm: u64 = dm["id"].as_str().unwrap().parse().unwrap();
        assert_eq!(
            post_message(&fake, dm, json!({"content": "a"})).await.0,
            200
        );

        fake.set_min_interval(Duration::ZERO);
        assert_eq!(
            post_message(&fake, CHANNEL, json!({"content": "b"}))
                .await
                .0,
            200
        );
    }

    #[tokio::test]
    async fn injected_failures_come_before_auth_and_routing() {
        let fake = fake().await;
        fake.fail_next(2, 502, 0, "Bad Gateway");
        let (status, _, body) = call(&fake, Method::GET, "/users/@me", None, None).await;
        assert_eq!(
            (status, body),
            (502, json!({"code": 0, "message": "Bad Gateway"}))
        );
        assert_eq!(
            post_message(&fake, CHANNEL, json!({"content": "a"}))
                .await
                .0,
            502
        );
        assert_eq!(
            post_message(&fake, CHANNEL, json!({"content": "a"}))
                .await
                .0,
            200
        );
        assert_eq!(fake.count("POST", "/messages"), 2);
    }

    #[tokio::test]
    async fn invalid_json_is_50109() {
        let fake = fake().await;
        let response = reqwest::Client::new()
            .post(format!("{}/channels/{CHANNEL}/messages", fake.api_url()))
            .header("Authorization", format!("Bot {TOKEN}"))
            .header("Content-Type", "application/json")
            .body("{not json")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 400);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], json!(50109));
    }

    #[tokio::test]
    async fn enforce_nonce_returns_the_first_message() {
        let fake = fake().await;
        let body = json!({"content": "a", "nonce": "approval-17", "enforce_nonce": true});
        let (_, _, first) = post_message(&fake, CHANNEL, body.clone()).await;
        let (status, _, second) = post_message(&fake, CHANNEL, body).await;
        assert_eq!(status, 200);
        assert_eq!(first["id"], second["id"]);
        assert_eq!(fake.messages(CHANNEL).len(), 1);
    }

    #[tokio::test]
    async fn replies_must_reference_a_live_message_in_the_same_channel() {
        let fake = fake().await;
        let (_, _, first) = post_message(&fake, CHANNEL, json!({"content": "pending"})).await;
        let id: u64 = first["id"].as_str().unwrap().parse().unwrap();
        let reply = |message_id: u64, extra: Value| {
            let mut reference = json!({"type": 0, "message_id": message_id.to_string(),
                "channel_id": CHANNEL.to_string(), "guild_id": null});
            if let (Value::Object(r), Value::Object(e)) = (&mut reference, extra) {
                r.extend(e);
            }
            json!({"content": "reminder", "message_reference": reference})
        };
        let (status, _, created) = post_message(&fake, CHANNEL, reply(id, json!({}))).await;
        assert_eq!(status, 200, "{created}");
        assert_eq!(created["type"], json!(19));
        assert_eq!(
            created["message_reference"]["message_id"],
            json!(id.to_string())
        );
        assert_eq!(fake.messages(CHANNEL)[1].reply_to, Some(id));

        // The replied-to message is gone: refused, unless the sender said it may stand alone.
        fake.delete_message(CHANNEL, id);
        let (status, _, refused) = post_message(&fake, CHANNEL, reply(id, json!({}))).await;
        assert_eq!((status, refused["code"].clone()), (400, json!(50035)));
        assert_eq!(
            refused["errors"]["message_reference"]["_errors"][0]["code"],
            json!("REPLIES_UNKNOWN_MESSAGE")
        );
        let (status, _, alone) = post_message(
            &fake,
            CHANNEL,
            reply(id, json!({"fail_if_not_exists": false})),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(alone["type"], json!(0));
        assert_eq!(fake.messages(CHANNEL).last().unwrap().reply_to, None);

        // Another channel's message, a malformed id, and no id at all.
        let (_, _, other) = post_message(&fake, CHANNEL, json!({"content": "x"})).await;
        let other: u64 = other["id"].as_str().unwrap().parse().unwrap();
        let (status, _, _) =
            post_message(&fake, CHANNEL, reply(other, json!({"channel_id": "42"}))).await;
        assert_eq!(status, 400);
        let (status, _, bad) = post_message(
            &fake,
            CHANNEL,
            json!({"content": "x", "message_reference": {"message_id": "abc"}}),
        )
        .await;
        assert_eq!(status, 400);
        assert_eq!(
            bad["errors"]["message_reference"]["message_id"]["_errors"][0]["code"],
            json!("NUMBER_TYPE_COERCE")
        );
        let (status, _, _) = post_message(
            &fake,
            CHANNEL,
            json!({"content": "x", "message_reference": {}}),
        )
        .await;
        assert_eq!(status, 400);
    }

    /// countersign's real client path: serenity's `Http` through `proxy`, ratelimiter off.
    #[tokio::test]
    async fn serenity_round_trip_against_the_fake_discord() {
        use serenity::all::{
            ChannelId, Colour, CreateActionRow, CreateButton, CreateEmbed, CreateEmbedFooter,
            CreateMessage, EditMessage, Timestamp, UserId,
        };
        use serenity::http::{HttpBuilder, HttpError};

        let fake = fake().await;
        let http = HttpBuilder::new(TOKEN)
            .proxy(fake.base_url())
            .ratelimiter_disabled(true)
            .build();

        let me = http.get_current_user().await.expect("GET /users/@me");
        assert!(me.bot);
        assert_eq!(me.id.get(), FAKE_BOT_USER_ID);

        let dm = UserId::new(OWNER)
            .create_dm_channel(&http)
            .await
            .expect("open DM");
        assert_eq!(Some(dm.id.get()), fake.dm_channel_of(OWNER));
        assert_eq!(dm.recipient.id.get(), OWNER);

        let link = "https://example.com/a/1";
        let embed = CreateEmbed::new()
            .title("Approval needed")
            .url(link)
            .description("buy domain")
            .field("Amount", "12.50 USD", true)
            .colour(Colour::ORANGE)
            .timestamp(Timestamp::now())
            .footer(CreateEmbedFooter::new("req #1"));
        let row = CreateActionRow::Buttons(vec![CreateButton::new_link(link).label("Review")]);
        let message = dm
            .id
            .send_message(
                &http,
                CreateMessage::new()
                    .content("Approval request")
                    .embed(embed)
                    .components(vec![row]),
            )
            .await
            .expect("send message");
        assert_eq!(message.channel_id, dm.id);
        assert_eq!(message.embeds[0].title.as_deref(), Some("Approval needed"));
        assert_eq!(message.components.len(), 1);
        assert!(message.edited_timestamp.is_none());
        assert_eq!(
            fake.messages(dm.id.get())[0].components[0]["components"][0]["url"],
            json!(link)
        );

        let edited = dm
            .id
            .edit_message(
                &http,
                message.id,
                EditMessage::new()
                    .content("Approved")
                    .embed(
                        CreateEmbed::new()
                            .title("Approved")
                            .colour(Colour::DARK_GREEN),
                    )
                    .components(vec![]),
            )
            .await
            .expect("edit message");
        assert_eq!(edited.content, "Approved");
        assert!(edited.edited_timestamp.is_some());
        assert!(edited.components.is_empty());
        assert_eq!(fake.messages(dm.id.get())[0].edits, 1);

        // The owner deleted it: serenity surfaces Discord's 10008.
        fake.delete_message(dm.id.get(), message.id.get());
        let error = dm
            .id
            .edit_message(&http, message.id, EditMessage::new().content("x"))
            .await
            .unwrap_err();
        match error {
            serenity::Error::Http(HttpError::UnsuccessfulRequest(response)) => {
                assert_eq!(response.status_code.as_u16(), 404);
                assert_eq!(response.error.code, 10008);
                assert_eq!(response.error.message, "Unknown Message");
            }
            other => panic!("expected UnsuccessfulRequest, got {other:?}"),
        }

        // A form error surfaces with its field path.
        let bad = CreateEmbed::new()
            .title("t")
            .url("http://localhost/approval");
        let error = ChannelId::new(CHANNEL)
            .send_message(&http, CreateMessage::new().embed(bad))
            .await
            .unwrap_err();
        match error {
            serenity::Error::Http(HttpError::UnsuccessfulRequest(response)) => {
                assert_eq!(response.status_code.as_u16(), 400);
                assert_eq!(response.error.code, 50035);
                assert_eq!(response.error.errors[0].path, "embeds.0.url");
                assert_eq!(response.error.errors[0].code, "URL_TYPE_INVALID_URL");
            }
            other => panic!("expected UnsuccessfulRequest, got {other:?}"),
        }

        // A 429: Discord's body has no `code`, so serenity cannot decode it into
        // DiscordJsonError and reports code -1; retry_after and the headers are not exposed.
        fake.force_rate_limit(1, 2.5, false);
        let error = ChannelId::new(CHANNEL).say(&http, "hi").await.unwrap_err();
        match error {
            serenity::Error::Http(HttpError::UnsuccessfulRequest(response)) => {
                assert_eq!(response.status_code.as_u16(), 429);
                assert_eq!(response.error.code, -1);
                assert!(
                    response.error.message.contains("Could not decode json"),
                    "{}",
                    response.error.message
                );
            }
            other => panic!("expected UnsuccessfulRequest, got {other:?}"),
        }

        // Closed DMs: 403 50007.
        fake.close_dms(OWNER);
        let error = dm.id.say(&http, "hi").await.unwrap_err();
        match error {
            serenity::Error::Http(HttpError::UnsuccessfulRequest(response)) => {
                assert_eq!(
                    (response.status_code.as_u16(), response.error.code),
                    (403, 50007)
                );
            }
            other => panic!("expected UnsuccessfulRequest, got {other:?}"),
        }
        let posts = fake
            .requests()
            .into_iter()
            .filter(|r| r.method == "POST")
            .count();
        assert_eq!(
            posts, 5,
            "DM open, send, bad send, 429 send, closed-DM send"
        );
    }
}
