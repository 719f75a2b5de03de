//! Routing and answers: which routes exist, in what order Discord checks a request (ban, faults,
//! route, token, global limit, bucket, then the route itself), what each route does to the state,
//! and the JSON it answers with.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State as AxumState};
use axum::http::{Method, StatusCode, header};
use axum::response::Response;
use serde_json::{Map, Value, json};

use super::form::{
    FormErrors, array_of, body_object, check_bool, error_tree, is_empty_message, object_at,
    path_snowflake, plain, snowflake_value,
};
use super::state::{
    State, StoredMessage, bot_user_json, discord_timestamp, message_json, user_json,
};
use super::validate::validate_message_fields;
use super::{FAKE_GUILD_ID, FakeDiscordMessage, RecordedDiscordCall, lock};

const API_PREFIX: &str = "/api/v10/";
const BODY_LIMIT: usize = 8 << 20;

/// Message flags a bot may set on create (SUPPRESS_EMBEDS, SUPPRESS_NOTIFICATIONS) and the one
/// it may toggle on edit (SUPPRESS_EMBEDS). Other bits are dropped, as Discord does.
const CREATE_FLAGS: u64 = (1 << 2) | (1 << 12);
const EDIT_FLAGS: u64 = 1 << 2;

/// What the fake answers: status, body, extra headers.
pub(super) struct Reply {
    pub status: u16,
    pub body: ReplyBody,
    pub headers: Vec<(&'static str, String)>,
}

pub(super) enum ReplyBody {
    Empty,
    Json(Value),
    /// Not JSON: what a proxy in front of Discord (Cloudflare) answers.
    Text(&'static str),
}

impl Reply {
    pub fn json(status: u16, body: Value) -> Reply {
        Reply {
            status,
            body: ReplyBody::Json(body),
            headers: Vec::new(),
        }
    }

    pub fn text(status: u16, body: &'static str) -> Reply {
        Reply {
            status,
            body: ReplyBody::Text(body),
            headers: Vec::new(),
        }
    }

    /// Discord's plain error body: `{"code": N, "message": "..."}`.
    pub fn error(status: u16, code: i64, message: &str) -> Reply {
        Reply::json(status, json!({"code": code, "message": message}))
    }

    /// 400 50035 with the `errors` tree built by the validators.
    pub fn form(errors: Value) -> Reply {
        Reply::json(
            400,
            json!({"code": 50035, "message": "Invalid Form Body", "errors": errors}),
        )
    }

    fn no_content() -> Reply {
        Reply {
            status: 204,
            body: ReplyBody::Empty,
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
            ReplyBody::Json(body) => builder
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string())),
            ReplyBody::Text(text) => builder
                .header(header::CONTENT_TYPE, "text/plain; charset=UTF-8")
                .body(Body::from(text)),
            ReplyBody::Empty => builder.body(Body::empty()),
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

fn missing_permissions() -> Reply {
    Reply::error(403, 50013, "Missing Permissions")
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
            Route::CreateMessage(_) => "80c17d2f1b6e4a93",
            Route::GetChannel(_) => "b8c9d0e1f2a3b4c5",
            Route::GetMessage(..) => "d2a4c6e8f0b13579",
            Route::EditMessage(..) => "5b8e2d7c0f3a6194",
            Route::DeleteMessage(..) => "e7f6a5b4c3d2e1f0",
        }
    }

    /// The major parameter buckets are kept per: the channel, or 0 for the user routes.
    /// A malformed channel id is the 400 Discord gives for it.
    fn major(&self) -> Result<u64, Reply> {
        match self {
            Route::GetMe | Route::CreateDm => Ok(0),
            Route::CreateMessage(c)
            | Route::GetChannel(c)
            | Route::GetMessage(c, _)
            | Route::EditMessage(c, _)
            | Route::DeleteMessage(c, _) => path_snowflake("channel_id", c),
        }
    }

    fn writes_a_message(&self) -> bool {
        matches!(self, Route::CreateMessage(_) | Route::EditMessage(..))
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

/// A fallback-only router: routing is done by hand so that faults, auth and the error bodies for
/// unknown routes all follow Discord's order and shapes.
pub(super) fn router(state: Arc<Mutex<State>>) -> Router {
    Router::new().fallback(handle).with_state(state)
}

/// Whether the request came in over TLS; set by the listener on every request.
#[derive(Clone, Copy)]
pub(super) struct OverTls(pub bool);

async fn handle(AxumState(state): AxumState<Arc<Mutex<State>>>, req: Request) -> Response {
    let now = Instant::now();
    let tls = req.extensions().get::<OverTls>().is_some_and(|t| t.0);
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
    let body = match &parsed {
        Parsed::Json(v) => Some(v.clone()),
        Parsed::Empty | Parsed::Invalid => None,
    };
    let mut call = RecordedDiscordCall {
        method: method.to_string(),
        path,
        body,
        status: 0,
        authorization,
        at: now,
        tls,
    };
    let reply = {
        let mut state = lock(&state);
        if state.hang > 0 {
            state.hang -= 1;
            state.requests.push(call);
            None
        } else {
            let reply = state.answer(
                &method,
                &call.path,
                call.authorization.as_deref(),
                &parsed,
                now,
            );
            state.limits.answered(reply.status, now);
            call.status = reply.status;
            state.requests.push(call);
            Some(reply)
        }
    };
    match reply {
        Some(reply) => reply.into_response(),
        None => {
            // Never answered: the client has to give up by itself. (The task ends with the
            // runtime, or when the connection is dropped.)
            std::future::pending::<()>().await;
            unreachable!("a pending future never completes")
        }
    }
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
        // A banned client never reaches Discord: Cloudflare answers first.
        if let Some(banned) = self.limits.banned(now) {
            return banned;
        }
        // Injected faults come next: they stand for Discord failing before the request is
        // even routed.
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
        if let Some(limited) = self.limits.global(now) {
            return limited;
        }
        let major = match route.major() {
            Ok(major) => major,
            Err(bad_id) => return bad_id,
        };
        // Discord checks the bucket before it looks at the channel or the body.
        if route.writes_a_message()
            && let Some(limited) = self.limits.forced(route.bucket())
        {
            return limited;
        }
        if let Err(limited) = self.limits.take(route.bucket(), major, now) {
            return limited;
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
            Route::CreateMessage(c) => self.create_message(c, body),
            Route::GetChannel(c) => self.get_channel(c),
            Route::GetMessage(c, m) => self.get_message(c, m),
            Route::EditMessage(c, m) => self.edit_message(c, m, body),
            Route::DeleteMessage(c, m) => self.delete_message(c, m),
        };
        let mut reply = result.unwrap_or_else(|error| error);
        // Discord sends the bucket headers on every routed answer.
        let headers = self.limits.headers(route.bucket(), major, now);
        reply.headers.extend(headers);
        reply
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

    fn create_message(&mut self, channel_raw: &str, body: Option<&Value>) -> Result<Reply, Reply> {
        let channel_id = path_snowflake("channel_id", channel_raw)?;
        if !self.channel_exists(channel_id) {
            return Err(unknown_channel());
        }
        if self.denied.contains(&channel_id) {
            return Err(missing_permissions());
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
            return Ok(Reply::json(200, message_json(existing)));
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
    ) -> Result<Reply, Reply> {
        let channel_id = path_snowflake("channel_id", channel_raw)?;
        path_snowflake("message_id", message_raw)?;
        if self.channel_exists(channel_id) && self.denied.contains(&channel_id) {
            return Err(missing_permissions());
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
        Ok(Reply::json(200, message_json(stored)))
    }
}
