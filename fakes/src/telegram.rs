//! A fake Telegram Bot API server that is as strict as the real one wherever countersign could trip.
//!
//! teloxide 0.17 requests `POST {api_url}/bot<token>/<Method>` with a JSON body and a PascalCase
//! method name (`SendMessage`); Telegram matches method names case-insensitively, so this fake does
//! too. Answers use Telegram's envelope: `{"ok":true,"result":...}` or
//! `{"ok":false,"error_code":N,"description":"..."}` (429 adds `"parameters":{"retry_after":N}`).
//! teloxide only looks at the body, except that a 5xx status makes it sleep 10 s, so this fake never
//! answers 5xx unless a test asks for it with [`FakeTelegram::fail_next`].
//!
//! The description strings are the exact ones teloxide maps to `ApiError` variants (see
//! teloxide-core 0.13 `errors.rs`), so the daemon's error handling sees what production sees.
//!
//! Order of checks for message methods, mirroring where Telegram does them: first what the Bot API
//! server / TDLib checks locally (token, method, chat, text and HTML, keyboard, message lookup), then
//! flood control, then what the Telegram servers answer (blocked by the user, "not modified").
//!
//! Where this fake is knowingly stricter or looser than Telegram, a comment says so.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Map, Value, json};
use tokio::sync::Notify;

pub mod autolink;

/// Telegram's limit on a message's visible text ("1-4096 characters after entities parsing"),
/// counted here in UTF-16 code units like entity offsets.
pub const MAX_TEXT_UTF16: usize = 4096;

/// Exact description teloxide maps to `ApiError::MessageNotModified`.
pub const NOT_MODIFIED: &str = "Bad Request: message is not modified: specified new message content and reply markup are exactly the same as a current content and reply markup of the message";
const EDIT_NOT_FOUND: &str = "Bad Request: message to edit not found";
const CHAT_NOT_FOUND: &str = "Bad Request: chat not found";
const BOT_BLOCKED: &str = "Forbidden: bot was blocked by the user";
/// What Telegram really answers when the user never pressed Start. teloxide 0.17 expects an
/// `Unauthorized: ...` prefix for `CantInitiateConversation`, so it surfaces as `ApiError::Unknown`.
const CANT_INITIATE: &str = "Forbidden: bot can't initiate conversation with a user";
const MARKUP_JSON: &str = "can't parse reply keyboard markup JSON object";

const BOT_FIRST_NAME: &str = "Countersign";
const BOT_USERNAME: &str = "countersign_test_bot";

/// Methods this fake implements, lowercased.
const METHODS: &[&str] = &[
    "getme",
    "sendmessage",
    "sendchataction",
    "editmessagetext",
    "editmessagereplymarkup",
    "deletemessage",
    "getupdates",
    "getwebhookinfo",
    "deletewebhook",
    "setmycommands",
    "getmycommands",
    "getchat",
    "answercallbackquery",
];

/// The optional fields of an InlineKeyboardButton, of which exactly one must be set.
const BUTTON_ACTIONS: &[&str] = &[
    "url",
    "callback_data",
    "web_app",
    "login_url",
    "switch_inline_query",
    "switch_inline_query_current_chat",
    "switch_inline_query_chosen_chat",
    "copy_text",
    "callback_game",
    "pay",
];

/// A fake Telegram Bot API server on `127.0.0.1`. Cheap to clone; all clones share one state.
#[derive(Clone)]
pub struct FakeTelegram {
    inner: Arc<Inner>,
}

/// One message the bot sent, in its current state.
#[derive(Clone, Debug)]
pub struct FakeMessage {
    pub message_id: i32,
    pub chat_id: i64,
    /// Exactly what the bot sent (with tags).
    pub raw_text: String,
    /// The visible text after HTML parsing (tags removed, entities decoded): what the owner sees.
    pub text: String,
    /// Telegram MessageEntity objects (bold/italic/code/pre/text_link{url}/...), UTF-16 offsets,
    /// with the url, email and mention entities Telegram finds in plain text ([`autolink`]).
    pub entities: Vec<Value>,
    pub parse_mode: Option<String>,
    /// Current inline keyboard; `None` when there is none (never sent, removed, or empty).
    pub reply_markup: Option<Value>,
    pub link_preview_disabled: bool,
    /// Sent with `disable_notification`: it arrived without a sound (edits never notify).
    pub disable_notification: bool,
    /// Number of successful edits (text or keyboard).
    pub edits: usize,
    pub deleted: bool,
}

/// One request the fake answered.
#[derive(Clone, Debug)]
pub struct RecordedCall {
    /// Lowercased method name (`sendmessage`); for a path that is not `/bot<token>/<method>`, the path.
    pub method: String,
    /// The parameters as JSON (form bodies and query strings are turned into an object);
    /// `Null` when the body could not be parsed.
    pub body: Value,
    /// The HTTP status answered.
    pub status: u16,
    /// The error description, for failures.
    pub description: Option<String>,
}

struct Inner {
    state: Mutex<TgState>,
    /// Wakes long-polling getUpdates calls when an update is queued.
    notify: Notify,
    addr: SocketAddr,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChatKind {
    /// A user who has pressed Start.
    Private,
    /// A user who exists but never pressed Start: the bot cannot message them.
    Unstarted,
    Group,
    Supergroup,
}

impl ChatKind {
    /// Telegram's id conventions: users are positive, basic groups negative, supergroups and
    /// channels `-100xxxxxxxxxx`.
    fn for_id(id: i64) -> ChatKind {
        if id > 0 {
            ChatKind::Private
        } else if id <= -1_000_000_000_000 {
            ChatKind::Supergroup
        } else {
            ChatKind::Group
        }
    }
}

struct ChatState {
    kind: ChatKind,
    blocked: bool,
    /// Message ids are per chat and shared by both sides of the conversation.
    last_message_id: i32,
    messages: Vec<StoredMessage>,
    /// Ids of messages the user sent (queued updates): the bot may not edit those.
    incoming: HashSet<i32>,
}

impl ChatState {
    fn new(kind: ChatKind) -> ChatState {
        ChatState {
            kind,
            blocked: false,
            last_message_id: 0,
            messages: Vec::new(),
            incoming: HashSet::new(),
        }
    }

    fn message(&self, message_id: i64) -> Option<&StoredMessage> {
        self.messages
            .iter()
            .find(|m| i64::from(m.msg.message_id) == message_id)
    }

    fn message_mut(&mut self, message_id: i64) -> Option<&mut StoredMessage> {
        self.messages
            .iter_mut()
            .find(|m| i64::from(m.msg.message_id) == message_id)
    }
}

struct StoredMessage {
    msg: FakeMessage,
    date: i64,
    edit_date: Option<i64>,
}

/// A queued forced answer (from `force_retry_after` or `fail_next`).
struct Fault {
    status: u16,
    description: String,
    retry_after: Option<u32>,
    remaining: usize,
}

struct TgState {
    token: String,
    bot_id: i64,
    chats: HashMap<i64, ChatState>,
    min_interval: Duration,
    /// When the last send/edit to each chat was accepted (for flood control).
    last_accepted: HashMap<i64, Instant>,
    /// Telegram's limit on group chats (`set_group_limit`): at most `.0` sends/edits in any
    /// `.1`; and when each recent one to each group was accepted.
    group_limit: Option<(usize, Duration)>,
    group_accepted: HashMap<i64, VecDeque<Instant>>,
    /// Forced answers per lowercased method, consumed in the order they were queued.
    faults: HashMap<String, VecDeque<Fault>>,
    calls: Vec<RecordedCall>,
    rate_limited: usize,
    commands: Vec<Value>,
    updates: VecDeque<(i64, Value)>,
    next_update_id: i64,
    open_callback_queries: HashSet<String>,
}

/// A Telegram error answer.
#[derive(Debug)]
struct ApiError {
    status: u16,
    description: String,
    retry_after: Option<u32>,
}

impl ApiError {
    fn new(status: u16, description: impl Into<String>) -> ApiError {
        ApiError {
            status,
            description: description.into(),
            retry_after: None,
        }
    }

    /// 400 with the `Bad Request: ` prefix Telegram puts on every 400 description.
    fn bad(what: impl AsRef<str>) -> ApiError {
        ApiError::new(400, format!("Bad Request: {}", what.as_ref()))
    }

    fn retry_after(secs: u32) -> ApiError {
        ApiError {
            status: 429,
            description: format!("Too Many Requests: retry after {secs}"),
            retry_after: Some(secs),
        }
    }

    fn body(&self) -> Value {
        let mut body = json!({
            "ok": false,
            "error_code": self.status,
            "description": self.description,
        });
        if let Some(secs) = self.retry_after {
            body["parameters"] = json!({ "retry_after": secs });
        }
        body
    }
}

type ApiResult = Result<Value, ApiError>;
type Params = Map<String, Value>;

impl FakeTelegram {
    /// Binds 127.0.0.1:0 and serves on the current tokio runtime. Only `token` is valid; `chat_id`
    /// is the one chat that exists (the owner's private chat, Start already pressed). Other chat ids
    /// answer 400 "Bad Request: chat not found". The bot's user id is the token's numeric prefix.
    pub async fn start(token: &str, chat_id: i64) -> FakeTelegram {
        let bot_id = token
            .split(':')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1);
        let mut chats = HashMap::new();
        chats.insert(chat_id, ChatState::new(ChatKind::for_id(chat_id)));
        let state = TgState {
            token: token.to_string(),
            bot_id,
            chats,
            min_interval: Duration::ZERO,
            last_accepted: HashMap::new(),
            group_limit: None,
            group_accepted: HashMap::new(),
            faults: HashMap::new(),
            calls: Vec::new(),
            rate_limited: 0,
            commands: Vec::new(),
            updates: VecDeque::new(),
            next_update_id: 1,
            open_callback_queries: HashSet::new(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0 for FakeTelegram");
        let addr = listener.local_addr().expect("FakeTelegram local addr");
        let fake = FakeTelegram {
            inner: Arc::new(Inner {
                state: Mutex::new(state),
                notify: Notify::new(),
                addr,
            }),
        };
        // Telegram accepts GET as well as POST for every method.
        let app = Router::new()
            .route("/{bot}/{method}", get(handle).post(handle))
            .fallback(fallback)
            .with_state(fake.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        fake
    }

    /// `http://127.0.0.1:PORT`, to give to `Bot::set_api_url` (teloxide appends `/bot<token>/<Method>`).
    pub fn api_url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    // --- strictness knobs ---

    /// Per-chat flood control: a sendMessage/editMessageText/editMessageReplyMarkup to a chat less
    /// than `d` after the previous accepted one to that chat answers 429 "Too Many Requests: retry
    /// after N" with `parameters.retry_after = N` (whole seconds, rounded up, at least 1) and is not
    /// applied. `Duration::ZERO` (the default) turns it off.
    pub fn set_min_interval(&self, d: Duration) {
        self.lock().min_interval = d;
    }

    /// Telegram's pace in groups, on top of [`FakeTelegram::set_min_interval`]: a group or
    /// supergroup chat accepts at most `n` sends/edits in any `window` (Telegram: 20 a minute);
    /// one more answers 429 "Too Many Requests: retry after N", N the whole seconds until the
    /// oldest of them leaves the window (at least 1), and is not applied. Off by default.
    pub fn set_group_limit(&self, n: usize, window: Duration) {
        self.lock().group_limit = Some((n, window));
    }

    /// The next `n` requests of `method` (case-insensitive, e.g. "sendMessage") answer 429 with
    /// `retry_after = secs`. Forced answers are consumed in the order they were queued, together
    /// with those from [`FakeTelegram::fail_next`], and apply to any method, before validation.
    pub fn force_retry_after(&self, method: &str, n: usize, secs: u32) {
        self.push_fault(
            method,
            Fault {
                status: 429,
                description: format!("Too Many Requests: retry after {secs}"),
                retry_after: Some(secs),
                remaining: n,
            },
        );
    }

    /// Answer the next `n` requests of `method` with this error, e.g.
    /// `(403, "Forbidden: bot was blocked by the user")`. A 5xx status is allowed here (teloxide
    /// then sleeps 10 s); it is the only way this fake ever answers 5xx.
    pub fn fail_next(&self, method: &str, n: usize, status: u16, description: &str) {
        self.push_fault(
            method,
            Fault {
                status,
                description: description.to_string(),
                retry_after: None,
                remaining: n,
            },
        );
    }

    fn push_fault(&self, method: &str, fault: Fault) {
        if fault.remaining == 0 {
            return;
        }
        self.lock()
            .faults
            .entry(method.to_ascii_lowercase())
            .or_default()
            .push_back(fault);
    }

    /// Simulate the owner deleting a message: later edits answer 400 "Bad Request: message to edit
    /// not found". Does nothing if there is no such message.
    pub fn delete_message(&self, chat_id: i64, message_id: i32) {
        let mut st = self.lock();
        if let Some(m) = st
            .chats
            .get_mut(&chat_id)
            .and_then(|c| c.message_mut(i64::from(message_id)))
        {
            m.msg.deleted = true;
        }
    }

    /// Simulate the owner blocking the bot: sends and edits to that chat answer 403
    /// "Forbidden: bot was blocked by the user". Creates the chat if it does not exist.
    pub fn block(&self, chat_id: i64) {
        let mut st = self.lock();
        st.chats
            .entry(chat_id)
            .or_insert_with(|| ChatState::new(ChatKind::for_id(chat_id)))
            .blocked = true;
    }

    /// Undo [`FakeTelegram::block`]: the owner unblocked the bot.
    pub fn unblock(&self, chat_id: i64) {
        if let Some(chat) = self.lock().chats.get_mut(&chat_id) {
            chat.blocked = false;
        }
    }

    /// Make an extra chat exist: a positive id is a user who pressed Start, a negative one a group
    /// (`-100...` a supergroup) the bot is a member of. An unstarted user becomes started.
    pub fn add_chat(&self, chat_id: i64) {
        let mut st = self.lock();
        let chat = st
            .chats
            .entry(chat_id)
            .or_insert_with(|| ChatState::new(ChatKind::for_id(chat_id)));
        if chat.kind == ChatKind::Unstarted {
            chat.kind = ChatKind::Private;
        }
    }

    /// Make a user exist who never pressed Start: sends answer 403 "Forbidden: bot can't initiate
    /// conversation with a user", getChat answers "chat not found".
    pub fn add_unstarted_user(&self, chat_id: i64) {
        self.lock()
            .chats
            .insert(chat_id, ChatState::new(ChatKind::Unstarted));
    }

    /// Queue an incoming update for getUpdates: a text message from `from_user_id` in `chat_id`
    /// (a leading `/command` gets a `bot_command` entity, as Telegram adds). Returns the update id.
    pub fn push_text_update(&self, chat_id: i64, from_user_id: i64, text: &str) -> i64 {
        let update_id = {
            let mut st = self.lock();
            let chat = st
                .chats
                .entry(chat_id)
                .or_insert_with(|| ChatState::new(ChatKind::for_id(chat_id)));
            // A user who writes to the bot can be answered.
            if chat.kind == ChatKind::Unstarted {
                chat.kind = ChatKind::Private;
            }
            chat.last_message_id += 1;
            let message_id = chat.last_message_id;
            chat.incoming.insert(message_id);
            let kind = chat.kind;
            let mut message = json!({
                "message_id": message_id,
                "date": unix_now(),
                "chat": chat_json(chat_id, kind),
                "from": { "id": from_user_id, "is_bot": false, "first_name": "Owner" },
                "text": text,
            });
            if text.starts_with('/') {
                let command = text.split(char::is_whitespace).next().unwrap_or(text);
                message["entities"] = json!([{
                    "type": "bot_command", "offset": 0, "length": utf16_len(command),
                }]);
            }
            let update_id = st.next_update_id;
            st.next_update_id += 1;
            st.updates.push_back((
                update_id,
                json!({ "update_id": update_id, "message": message }),
            ));
            update_id
        };
        self.inner.notify.notify_waiters();
        update_id
    }

    /// Queue a callback query (the owner pressed an inline button with `data` under the bot's
    /// message `message_id`). Returns the callback query id, which answerCallbackQuery accepts once.
    pub fn push_callback_update(
        &self,
        chat_id: i64,
        from_user_id: i64,
        message_id: i32,
        data: &str,
    ) -> String {
        let query_id = {
            let mut st = self.lock();
            let update_id = st.next_update_id;
            st.next_update_id += 1;
            let query_id = format!("fakecbq{update_id}");
            let bot_id = st.bot_id;
            let message = st.chats.get(&chat_id).and_then(|chat| {
                chat.message(i64::from(message_id))
                    .map(|m| message_json(bot_id, chat.kind, m))
            });
            let mut query = json!({
                "id": query_id,
                "from": { "id": from_user_id, "is_bot": false, "first_name": "Owner" },
                "chat_instance": format!("fake{chat_id}"),
                "data": data,
            });
            if let Some(message) = message {
                query["message"] = message;
            }
            st.open_callback_queries.insert(query_id.clone());
            st.updates.push_back((
                update_id,
                json!({ "update_id": update_id, "callback_query": query }),
            ));
            query_id
        };
        self.inner.notify.notify_waiters();
        query_id
    }

    // --- inspection ---

    /// Current state of every message the bot sent to the chat, in order (deleted ones included,
    /// flagged). Messages the user sent are not listed.
    pub fn messages(&self, chat_id: i64) -> Vec<FakeMessage> {
        self.lock()
            .chats
            .get(&chat_id)
            .map(|c| c.messages.iter().map(|m| m.msg.clone()).collect())
            .unwrap_or_default()
    }

    /// Every answered call in order of completion (a long-polling getUpdates is recorded when it
    /// returns).
    pub fn requests(&self) -> Vec<RecordedCall> {
        self.lock().calls.clone()
    }

    /// Calls of that method (case-insensitive), whatever the outcome.
    pub fn count(&self, method: &str) -> usize {
        let method = method.to_ascii_lowercase();
        self.lock()
            .calls
            .iter()
            .filter(|c| c.method == method)
            .count()
    }

    /// How many 429s were answered (flood control and forced ones).
    pub fn rate_limited_count(&self) -> usize {
        self.lock().rate_limited
    }

    /// The last list given to setMyCommands, normalised as getMyCommands returns it
    /// (`{"command","description"}`, no leading slash).
    pub fn commands(&self) -> Vec<Value> {
        self.lock().commands.clone()
    }

    fn lock(&self) -> MutexGuard<'_, TgState> {
        // A test that panicked while holding the lock must not hide the state from the others.
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    async fn dispatch(
        &self,
        bot: &str,
        method: &str,
        params: Result<Params, ApiError>,
    ) -> ApiResult {
        {
            let mut st = self.lock();
            if bot.strip_prefix("bot") != Some(st.token.as_str()) {
                return Err(ApiError::new(401, "Unauthorized"));
            }
            if !METHODS.contains(&method) {
                return Err(ApiError::new(404, "Not Found"));
            }
            if let Some(err) = st.take_fault(method) {
                return Err(err);
            }
        }
        let p = params?;
        if method == "getupdates" {
            return self.get_updates(&p).await;
        }
        let mut st = self.lock();
        match method {
            "getme" => Ok(st.me_json()),
            "sendmessage" => st.send_message(&p),
            "sendchataction" => st.send_chat_action(&p),
            "editmessagetext" => st.edit_message_text(&p),
            "editmessagereplymarkup" => st.edit_message_reply_markup(&p),
            "deletemessage" => st.delete_message(&p),
            "getwebhookinfo" => Ok(json!({
                "url": "", "has_custom_certificate": false, "pending_update_count": st.updates.len(),
            })),
            "deletewebhook" => Ok(Value::Bool(true)),
            "setmycommands" => st.set_my_commands(&p),
            "getmycommands" => Ok(Value::Array(st.commands.clone())),
            "getchat" => st.get_chat(&p),
            "answercallbackquery" => st.answer_callback_query(&p),
            _ => Err(ApiError::new(404, "Not Found")),
        }
    }

    /// Long polling: confirm (drop) updates below `offset`, return the rest; if there are none, wait
    /// up to min(timeout, 1) s for one (shorter than Telegram's wait, to keep tests fast).
    async fn get_updates(&self, p: &Params) -> ApiResult {
        let offset = int_param(p, "offset");
        // Telegram clamps limit to 1..=100.
        let limit = int_param(p, "limit").unwrap_or(100).clamp(1, 100) as usize;
        let timeout = int_param(p, "timeout").unwrap_or(0).clamp(0, 1) as u64;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
        loop {
            // Register interest before looking, so an update pushed in between is not missed.
            let notified = self.inner.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let batch = self.lock().take_updates(offset, limit);
            if !batch.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(Value::Array(batch));
            }
            let _ = tokio::time::timeout_at(deadline, notified).await;
        }
    }

    fn finish(&self, method: String, body: Value, result: ApiResult) -> Response {
        let (status, answer, description) = match result {
            Ok(v) => (200, json!({ "ok": true, "result": v }), None),
            Err(e) => (e.status, e.body(), Some(e.description)),
        };
        {
            let mut st = self.lock();
            if status == 429 {
                st.rate_limited += 1;
            }
            st.calls.push(RecordedCall {
                method,
                body,
                status,
                description,
            });
        }
        let code = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
        (
            code,
            [(header::CONTENT_TYPE, "application/json")],
            answer.to_string(),
        )
            .into_response()
    }
}

async fn handle(
    State(fake): State<FakeTelegram>,
    Path((bot, method)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let method = method.to_ascii_lowercase();
    let params = parse_params(&headers, query.as_deref(), &body);
    let recorded = params
        .as_ref()
        .map(|p| Value::Object(p.clone()))
        .unwrap_or(Value::Null);
    let result = fake.dispatch(&bot, &method, params).await;
    fake.finish(method, recorded, result)
}

/// Any path that is not `/<something>/<method>`: Telegram answers 404 "Not Found".
async fn fallback(State(fake): State<FakeTelegram>, uri: Uri) -> Response {
    fake.finish(
        uri.path().to_ascii_lowercase(),
        Value::Null,
        Err(ApiError::new(404, "Not Found")),
    )
}

impl TgState {
    fn take_fault(&mut self, method: &str) -> Option<ApiError> {
        let queue = self.faults.get_mut(method)?;
        let fault = queue.front_mut()?;
        fault.remaining -= 1;
        let err = ApiError {
            status: fault.status,
            description: fault.description.clone(),
            retry_after: fault.retry_after,
        };
        if fault.remaining == 0 {
            queue.pop_front();
        }
        Some(err)
    }

    fn me_json(&self) -> Value {
        // teloxide's `Me` needs every one of these fields (has_main_web_app included).
        json!({
            "id": self.bot_id,
            "is_bot": true,
            "first_name": BOT_FIRST_NAME,
            "username": BOT_USERNAME,
            "can_join_groups": true,
            "can_read_all_group_messages": false,
            "supports_inline_queries": false,
            "can_connect_to_business": false,
            "has_main_web_app": false,
        })
    }

    /// Chat exists and the bot may write to it (apart from being blocked, checked later).
    fn writable_chat(&self, chat_id: i64) -> Result<(), ApiError> {
        match self.chats.get(&chat_id) {
            None => Err(ApiError::new(400, CHAT_NOT_FOUND)),
            Some(c) if c.kind == ChatKind::Unstarted => Err(ApiError::new(403, CANT_INITIATE)),
            Some(_) => Ok(()),
        }
    }

    fn check_blocked(&self, chat_id: i64) -> Result<(), ApiError> {
        if self.chats.get(&chat_id).is_some_and(|c| c.blocked) {
            return Err(ApiError::new(403, BOT_BLOCKED));
        }
        Ok(())
    }

    fn flood_check(&self, chat_id: i64) -> Result<(), ApiError> {
        self.group_check(chat_id)?;
        if self.min_interval.is_zero() {
            return Ok(());
        }
        if let Some(last) = self.last_accepted.get(&chat_id) {
            let elapsed = last.elapsed();
            if elapsed < self.min_interval {
                let remaining = self.min_interval - elapsed;
                let secs = (remaining.as_secs_f64().ceil() as u32).max(1);
                return Err(ApiError::retry_after(secs));
            }
        }
        Ok(())
    }

    /// A group's window is full (`set_group_limit`): 429 until its oldest send leaves it.
    fn group_check(&self, chat_id: i64) -> Result<(), ApiError> {
        let (Some((n, window)), Some(sent)) = (self.group_limit, self.group_accepted.get(&chat_id))
        else {
            return Ok(());
        };
        let recent: Vec<&Instant> = sent.iter().filter(|t| t.elapsed() < window).collect();
        if recent.len() < n {
            return Ok(());
        }
        let remaining = window.saturating_sub(recent[recent.len() - n].elapsed());
        let secs = (remaining.as_secs_f64().ceil() as u32).max(1);
        Err(ApiError::retry_after(secs))
    }

    /// A send or edit to `chat_id` was accepted: it counts towards the chat's pace.
    fn accepted(&mut self, chat_id: i64) {
        let now = Instant::now();
        self.last_accepted.insert(chat_id, now);
        let is_group = self
            .chats
            .get(&chat_id)
            .is_some_and(|c| matches!(c.kind, ChatKind::Group | ChatKind::Supergroup));
        if let (Some((_, window)), true) = (self.group_limit, is_group) {
            let sent = self.group_accepted.entry(chat_id).or_default();
            sent.retain(|t| t.elapsed() < window);
            sent.push_back(now);
        }
    }

    /// The bot's own, not deleted message `message_id` in `chat_id`, for an edit.
    fn locate_for_edit(&self, p: &Params) -> Result<(i64, i64), ApiError> {
        let chat_id = chat_id_param(p)?;
        let chat = self
            .chats
            .get(&chat_id)
            .ok_or_else(|| ApiError::new(400, CHAT_NOT_FOUND))?;
        let message_id = int_param(p, "message_id")
            .ok_or_else(|| ApiError::bad("message identifier is not specified"))?;
        if chat.incoming.contains(&(message_id as i32)) {
            return Err(ApiError::bad("message can't be edited"));
        }
        match chat.message(message_id) {
            Some(m) if !m.msg.deleted => Ok((chat_id, message_id)),
            _ => Err(ApiError::new(400, EDIT_NOT_FOUND)),
        }
    }

    fn send_message(&mut self, p: &Params) -> ApiResult {
        let chat_id = chat_id_param(p)?;
        self.writable_chat(chat_id)?;
        let content = parse_content(p)?;
        let reply_markup = parse_reply_markup(p)?;
        self.flood_check(chat_id)?;
        self.check_blocked(chat_id)?;
        self.accepted(chat_id);
        let bot_id = self.bot_id;
        let chat = self.chats.get_mut(&chat_id).expect("checked above");
        chat.last_message_id += 1;
        chat.messages.push(StoredMessage {
            msg: FakeMessage {
                message_id: chat.last_message_id,
                chat_id,
                raw_text: content.raw_text,
                text: content.text,
                entities: content.entities,
                parse_mode: content.parse_mode,
                reply_markup,
                link_preview_disabled: link_preview_disabled(p),
                disable_notification: truthy(p.get("disable_notification")),
                edits: 0,
                deleted: false,
            },
            date: unix_now(),
            edit_date: None,
        });
        let stored = chat.messages.last().expect("just pushed");
        Ok(message_json(bot_id, chat.kind, stored))
    }

    /// "typing…" and friends: needs the same right to write to the chat as a message, which is
    /// what makes it a probe that sends the owner nothing.
    fn send_chat_action(&mut self, p: &Params) -> ApiResult {
        let chat_id = chat_id_param(p)?;
        self.writable_chat(chat_id)?;
        self.check_blocked(chat_id)?;
        const ACTIONS: &[&str] = &[
            "typing",
            "upload_photo",
            "record_video",
            "upload_video",
            "record_voice",
            "upload_voice",
            "upload_document",
            "choose_sticker",
            "find_location",
            "record_video_note",
            "upload_video_note",
        ];
        match p.get("action").and_then(Value::as_str) {
            Some(a) if ACTIONS.contains(&a) => Ok(Value::Bool(true)),
            Some(_) => Err(ApiError::bad("wrong parameter action in request")),
            None => Err(ApiError::bad("parameter \"action\" is required")),
        }
    }

    fn edit_message_text(&mut self, p: &Params) -> ApiResult {
        let (chat_id, message_id) = self.locate_for_edit(p)?;
        let content = parse_content(p)?;
        // Telegram drops the inline keyboard when editMessageText carries no reply_markup.
        let reply_markup = parse_reply_markup(p)?;
        self.flood_check(chat_id)?;
        self.check_blocked(chat_id)?;
        let bot_id = self.bot_id;
        let chat = self.chats.get_mut(&chat_id).expect("located above");
        let kind = chat.kind;
        let stored = chat.message_mut(message_id).expect("located above");
        if stored.msg.text == content.text
            && stored.msg.entities == content.entities
            && stored.msg.reply_markup == reply_markup
        {
            return Err(ApiError::new(400, NOT_MODIFIED));
        }
        stored.msg.raw_text = content.raw_text;
        stored.msg.text = content.text;
        stored.msg.entities = content.entities;
        stored.msg.parse_mode = content.parse_mode;
        stored.msg.reply_markup = reply_markup;
        stored.msg.link_preview_disabled = link_preview_disabled(p);
        stored.msg.edits += 1;
        stored.edit_date = Some(unix_now());
        let answer = message_json(bot_id, kind, stored);
        self.accepted(chat_id);
        Ok(answer)
    }

    fn edit_message_reply_markup(&mut self, p: &Params) -> ApiResult {
        let (chat_id, message_id) = self.locate_for_edit(p)?;
        // Absent reply_markup removes the keyboard.
        let reply_markup = parse_reply_markup(p)?;
        self.flood_check(chat_id)?;
        self.check_blocked(chat_id)?;
        let bot_id = self.bot_id;
        let chat = self.chats.get_mut(&chat_id).expect("located above");
        let kind = chat.kind;
        let stored = chat.message_mut(message_id).expect("located above");
        if stored.msg.reply_markup == reply_markup {
            return Err(ApiError::new(400, NOT_MODIFIED));
        }
        stored.msg.reply_markup = reply_markup;
        stored.msg.edits += 1;
        stored.edit_date = Some(unix_now());
        let answer = message_json(bot_id, kind, stored);
        self.accepted(chat_id);
        Ok(answer)
    }

    fn delete_message(&mut self, p: &Params) -> ApiResult {
        let chat_id = chat_id_param(p)?;
        let chat = self
            .chats
            .get_mut(&chat_id)
            .ok_or_else(|| ApiError::new(400, CHAT_NOT_FOUND))?;
        let message_id = int_param(p, "message_id")
            .ok_or_else(|| ApiError::bad("message identifier is not specified"))?;
        // In a private chat the bot may delete the user's messages too.
        if chat.incoming.remove(&(message_id as i32)) {
            return Ok(Value::Bool(true));
        }
        match chat.message_mut(message_id) {
            Some(m) if !m.msg.deleted => {
                m.msg.deleted = true;
                Ok(Value::Bool(true))
            }
            _ => Err(ApiError::bad("message to delete not found")),
        }
    }

    fn get_chat(&self, p: &Params) -> ApiResult {
        let chat_id = chat_id_param(p)?;
        match self.chats.get(&chat_id) {
            // The bot cannot see a user who never talked to it.
            Some(c) if c.kind != ChatKind::Unstarted => {
                // teloxide's ChatFullInfo needs accepted_gift_types and max_reaction_count.
                let mut info = chat_json(chat_id, c.kind);
                info["accent_color_id"] = json!(0);
                info["max_reaction_count"] = json!(11);
                info["accepted_gift_types"] = json!({
                    "unlimited_gifts": true, "limited_gifts": true,
                    "unique_gifts": true, "premium_subscription": true,
                });
                Ok(info)
            }
            _ => Err(ApiError::new(400, CHAT_NOT_FOUND)),
        }
    }

    fn set_my_commands(&mut self, p: &Params) -> ApiResult {
        let Some(commands) = p.get("commands").filter(|v| !v.is_null()) else {
            return Err(ApiError::bad("parameter \"commands\" is required"));
        };
        let Value::Array(commands) = commands else {
            return Err(ApiError::bad("can't parse commands JSON object"));
        };
        if commands.len() > 100 {
            return Err(ApiError::bad("BOT_COMMANDS_TOO_MUCH"));
        }
        let mut stored = Vec::with_capacity(commands.len());
        for c in commands {
            let (Some(command), Some(description)) = (
                c.get("command").and_then(Value::as_str),
                c.get("description").and_then(Value::as_str),
            ) else {
                return Err(ApiError::bad("can't parse BotCommand"));
            };
            // Telegram trims and strips one leading slash (teloxide's BotCommands derive sends
            // "/help"), then wants 1-32 of [a-z0-9_].
            let command = command.trim();
            let command = command.strip_prefix('/').unwrap_or(command);
            let command_ok = (1..=32).contains(&command.len())
                && command
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !command_ok {
                return Err(ApiError::bad("BOT_COMMAND_INVALID"));
            }
            let description = description.trim();
            if !(1..=256).contains(&description.chars().count()) {
                return Err(ApiError::bad("BOT_COMMAND_DESCRIPTION_INVALID"));
            }
            stored.push(json!({ "command": command, "description": description }));
        }
        self.commands = stored;
        Ok(Value::Bool(true))
    }

    fn answer_callback_query(&mut self, p: &Params) -> ApiResult {
        let id = str_param(p, "callback_query_id").unwrap_or_default();
        if let Some(text) = str_param(p, "text")
            && text.chars().count() > 200
        {
            return Err(ApiError::bad("MESSAGE_TOO_LONG"));
        }
        // A query can be answered once; unknown ids get Telegram's "too old" error.
        if self.open_callback_queries.remove(&id) {
            Ok(Value::Bool(true))
        } else {
            Err(ApiError::bad(
                "query is too old and response timeout expired or query id is invalid",
            ))
        }
    }

    fn take_updates(&mut self, offset: Option<i64>, limit: usize) -> Vec<Value> {
        match offset {
            // A negative offset keeps only the last -offset updates; the rest are forgotten.
            Some(off) if off < 0 => {
                let keep = off.unsigned_abs() as usize;
                while self.updates.len() > keep {
                    self.updates.pop_front();
                }
            }
            // Updates below offset are confirmed and never returned again.
            Some(off) => {
                while self.updates.front().is_some_and(|(id, _)| *id < off) {
                    self.updates.pop_front();
                }
            }
            None => {}
        }
        self.updates
            .iter()
            .take(limit)
            .map(|(_, u)| u.clone())
            .collect()
    }
}

fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn utf16_len(s: &str) -> usize {
    s.encode_utf16().count()
}

fn chat_json(chat_id: i64, kind: ChatKind) -> Value {
    match kind {
        ChatKind::Private | ChatKind::Unstarted => {
            json!({ "id": chat_id, "type": "private", "first_name": "Owner" })
        }
        ChatKind::Group => json!({ "id": chat_id, "type": "group", "title": "Fake group" }),
        ChatKind::Supergroup => {
            json!({ "id": chat_id, "type": "supergroup", "title": "Fake supergroup" })
        }
    }
}

/// A Message as Telegram answers it; teloxide 0.17 deserialises this shape (tested below).
fn message_json(bot_id: i64, kind: ChatKind, m: &StoredMessage) -> Value {
    let mut v = json!({
        "message_id": m.msg.message_id,
        "date": m.date,
        "chat": chat_json(m.msg.chat_id, kind),
        "from": {
            "id": bot_id, "is_bot": true, "first_name": BOT_FIRST_NAME, "username": BOT_USERNAME,
        },
        "text": m.msg.text,
    });
    // Telegram omits empty optional fields.
    if !m.msg.entities.is_empty() {
        v["entities"] = Value::Array(m.msg.entities.clone());
    }
    if let Some(markup) = &m.msg.reply_markup {
        v["reply_markup"] = markup.clone();
    }
    if let Some(edit_date) = m.edit_date {
        v["edit_date"] = json!(edit_date);
    }
    if m.msg.link_preview_disabled {
        v["link_preview_options"] = json!({ "is_disabled": true });
    }
    v
}

// --- request parameters ---

/// Parameters from the query string and the body (JSON object, or form-urlencoded), as one object.
/// Looser than Telegram: a body without a JSON content type is still read as JSON.
fn parse_params(headers: &HeaderMap, query: Option<&str>, body: &[u8]) -> Result<Params, ApiError> {
    let mut params = Map::new();
    if let Some(q) = query {
        for (k, v) in parse_urlencoded(q)? {
            params.insert(k, form_value(v));
        }
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(params);
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if content_type.starts_with("application/x-www-form-urlencoded") {
        let s = std::str::from_utf8(body)
            .map_err(|_| ApiError::bad("strings must be encoded in UTF-8"))?;
        for (k, v) in parse_urlencoded(s)? {
            params.insert(k, form_value(v));
        }
    } else if content_type.starts_with("multipart/") {
        // Stricter than Telegram: only file uploads need multipart, and countersign sends none.
        return Err(ApiError::bad(
            "multipart bodies are not supported by FakeTelegram",
        ));
    } else {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(o)) => params.extend(o),
            _ => return Err(ApiError::bad("can't parse JSON object")),
        }
    }
    Ok(params)
}

/// In form bodies, objects and arrays (reply_markup, entities, commands) arrive JSON-serialised.
fn form_value(v: String) -> Value {
    if (v.starts_with('{') || v.starts_with('['))
        && let Ok(parsed) = serde_json::from_str(&v)
    {
        return parsed;
    }
    Value::String(v)
}

fn parse_urlencoded(s: &str) -> Result<Vec<(String, String)>, ApiError> {
    s.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((percent_decode(k)?, percent_decode(v)?))
        })
        .collect()
}

fn percent_decode(s: &str) -> Result<String, ApiError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit) =>
            {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("ascii hex");
                out.push(u8::from_str_radix(hex, 16).expect("hex digits"));
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| ApiError::bad("strings must be encoded in UTF-8"))
}

/// `chat_id`: an integer or a numeric string. `@channelusername` names no chat here.
fn chat_id_param(p: &Params) -> Result<i64, ApiError> {
    match p.get("chat_id") {
        None | Some(Value::Null) => Err(ApiError::bad("chat_id is empty")),
        Some(Value::String(s)) if s.trim().is_empty() => Err(ApiError::bad("chat_id is empty")),
        Some(Value::String(s)) => s
            .trim()
            .parse()
            .map_err(|_| ApiError::new(400, CHAT_NOT_FOUND)),
        Some(Value::Number(n)) => n.as_i64().ok_or_else(|| ApiError::new(400, CHAT_NOT_FOUND)),
        Some(_) => Err(ApiError::new(400, CHAT_NOT_FOUND)),
    }
}

fn int_param(p: &Params, name: &str) -> Option<i64> {
    match p.get(name)? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn str_param(p: &Params, name: &str) -> Option<String> {
    match p.get(name)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn truthy(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true") || s == "1",
        Some(Value::Number(n)) => n.as_i64() == Some(1),
        _ => false,
    }
}

/// `link_preview_options.is_disabled`, or the deprecated `disable_web_page_preview` that Telegram
/// still accepts.
fn link_preview_disabled(p: &Params) -> bool {
    let options = match p.get("link_preview_options") {
        Some(Value::String(s)) => serde_json::from_str(s).unwrap_or(Value::Null),
        Some(v) => v.clone(),
        None => Value::Null,
    };
    truthy(options.get("is_disabled")) || truthy(p.get("disable_web_page_preview"))
}

// --- message content ---

#[derive(Debug)]
struct Content {
    raw_text: String,
    text: String,
    entities: Vec<Value>,
    parse_mode: Option<String>,
}

/// `text` + `parse_mode` (or explicit `entities`) → what the owner sees, with Telegram's checks.
fn parse_content(p: &Params) -> Result<Content, ApiError> {
    let raw_text = str_param(p, "text").unwrap_or_default();
    let parse_mode = str_param(p, "parse_mode").filter(|m| !m.is_empty());
    let explicit = p.get("entities").filter(|v| !v.is_null());
    let (text, entities) = if let Some(entities) = explicit {
        // Telegram uses explicit entities instead of parse_mode when both are given.
        (raw_text.clone(), check_entities(&raw_text, entities)?)
    } else {
        match parse_mode
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None => (raw_text.clone(), Vec::new()),
            Some("html") => parse_html(&raw_text)
                .map_err(|reason| ApiError::bad(format!("can't parse entities: {reason}")))?,
            // Stricter than Telegram: countersign uses HTML, so Markdown is not implemented.
            Some("markdown" | "markdownv2") => {
                return Err(ApiError::bad(
                    "can't parse entities: Markdown parse modes are not implemented by FakeTelegram",
                ));
            }
            Some(_) => return Err(ApiError::bad("unsupported parse_mode")),
        }
    };
    let (text, entities) = trim_message(&text, entities);
    let entities = with_automatic_entities(&text, entities);
    if text.is_empty() {
        return Err(ApiError::bad("message text is empty"));
    }
    if utf16_len(&text) > MAX_TEXT_UTF16 {
        return Err(ApiError::bad("message is too long"));
    }
    Ok(Content {
        raw_text,
        text,
        entities,
        parse_mode,
    })
}

/// `entities` plus the url, email and mention entities Telegram finds in the text by itself
/// (see [`autolink`]), sorted.
fn with_automatic_entities(text: &str, mut entities: Vec<Value>) -> Vec<Value> {
    let found = autolink::find(text, &entities);
    entities.extend(found);
    sort_entities(&mut entities);
    entities
}

/// What the owner sees of an HTML message: [`parse_html`], then the entities Telegram adds by
/// itself ([`autolink`]): the text and every entity, links found in plain text included.
pub fn parse_html_message(src: &str) -> Result<(String, Vec<Value>), String> {
    let (text, entities) = parse_html(src)?;
    let entities = with_automatic_entities(&text, entities);
    Ok((text, entities))
}

/// Explicit `entities`: each needs a type and an offset/length inside the text (UTF-16 units).
fn check_entities(text: &str, entities: &Value) -> Result<Vec<Value>, ApiError> {
    let Value::Array(list) = entities else {
        return Err(ApiError::bad("can't parse entities JSON object"));
    };
    let len = utf16_len(text) as i64;
    let mut out = Vec::new();
    for e in list {
        let (Some(_), Some(offset), Some(length)) = (
            e.get("type").and_then(Value::as_str),
            e.get("offset").and_then(Value::as_i64),
            e.get("length").and_then(Value::as_i64),
        ) else {
            return Err(ApiError::bad("can't parse MessageEntity"));
        };
        if offset < 0 || length < 0 || offset + length > len {
            return Err(ApiError::bad(
                "can't parse entities: entity is out of the text",
            ));
        }
        if length > 0 {
            out.push(e.clone());
        }
    }
    sort_entities(&mut out);
    Ok(out)
}

/// Telegram trims leading and trailing whitespace from message text, moving and clipping entities.
/// (Approximation: TDLib's exact rules differ in corner cases, e.g. around leading spaces.)
fn trim_message(text: &str, entities: Vec<Value>) -> (String, Vec<Value>) {
    let is_ws = |c: char| matches!(c, ' ' | '\t' | '\r' | '\n' | '\u{b}' | '\0');
    let start_trimmed = text.trim_start_matches(is_ws);
    // The trimmed characters are ASCII: bytes == UTF-16 units.
    let lead = (text.len() - start_trimmed.len()) as i64;
    let body = start_trimmed.trim_end_matches(is_ws);
    let body_len = utf16_len(body) as i64;
    let entities = entities
        .into_iter()
        .filter_map(|mut e| {
            let offset = e.get("offset")?.as_i64()?;
            let length = e.get("length")?.as_i64()?;
            let start = (offset - lead).max(0);
            let end = (offset + length - lead).min(body_len);
            if end <= start {
                return None;
            }
            e["offset"] = json!(start);
            e["length"] = json!(end - start);
            Some(e)
        })
        .collect();
    (body.to_string(), entities)
}

fn sort_entities(entities: &mut [Value]) {
    // Telegram lists entities by offset, longer (outer) ones first on ties.
    entities.sort_by_key(|e| {
        (
            e["offset"].as_i64().unwrap_or(0),
            -e["length"].as_i64().unwrap_or(0),
        )
    });
}

// --- inline keyboards ---

/// `reply_markup` → the keyboard to store: `None` when absent or without buttons.
/// Stricter than Telegram: reply keyboards / ForceReply / ReplyKeyboardRemove (valid for
/// sendMessage) are rejected, since countersign only uses inline keyboards.
fn parse_reply_markup(p: &Params) -> Result<Option<Value>, ApiError> {
    let markup = match p.get("reply_markup") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => {
            serde_json::from_str::<Value>(s).map_err(|_| ApiError::bad(MARKUP_JSON))?
        }
        Some(v) => v.clone(),
    };
    let Some(keyboard) = markup.get("inline_keyboard") else {
        return Err(ApiError::bad(MARKUP_JSON));
    };
    let rows_err = || {
        ApiError::bad(
            "field \"inline_keyboard\" of the InlineKeyboardMarkup should be an Array of Arrays",
        )
    };
    let Value::Array(rows) = keyboard else {
        return Err(rows_err());
    };
    let mut out_rows = Vec::new();
    for row in rows {
        let Value::Array(buttons) = row else {
            return Err(rows_err());
        };
        let mut out = Vec::new();
        for button in buttons {
            out.push(check_button(button)?);
        }
        if !out.is_empty() {
            out_rows.push(Value::Array(out));
        }
    }
    if out_rows.is_empty() {
        // An empty keyboard removes the keyboard.
        return Ok(None);
    }
    Ok(Some(json!({ "inline_keyboard": out_rows })))
}

fn check_button(button: &Value) -> Result<Value, ApiError> {
    let Value::Object(fields) = button else {
        return Err(ApiError::bad(
            "can't parse inline keyboard button: InlineKeyboardButton must be an Object",
        ));
    };
    let Some(text) = fields.get("text").and_then(Value::as_str) else {
        return Err(ApiError::bad(
            "can't parse inline keyboard button: Field \"text\" must be of type String",
        ));
    };
    if text.trim().is_empty() {
        return Err(ApiError::bad("BUTTON_TEXT_INVALID"));
    }
    let actions: Vec<&str> = BUTTON_ACTIONS
        .iter()
        .copied()
        .filter(|k| fields.get(*k).is_some_and(|v| !v.is_null()))
        .collect();
    match actions.as_slice() {
        [] => {
            return Err(ApiError::bad(
                "can't parse inline keyboard button: Text buttons are unallowed in the inline keyboard",
            ));
        }
        // Stricter than Telegram, which silently picks one of several fields.
        [_, _, ..] => {
            return Err(ApiError::bad(
                "can't parse inline keyboard button: exactly one of the optional fields must be used",
            ));
        }
        ["url"] => {
            if !fields["url"].as_str().is_some_and(valid_button_url) {
                return Err(ApiError::bad("BUTTON_URL_INVALID"));
            }
        }
        ["callback_data"] => {
            let ok = fields["callback_data"]
                .as_str()
                .is_some_and(|d| (1..=64).contains(&d.len()));
            if !ok {
                return Err(ApiError::bad("BUTTON_DATA_INVALID"));
            }
        }
        [_] => {}
    }
    // Keep the button as sent, without null fields, so comparisons see what Telegram stores.
    Ok(Value::Object(
        fields
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    ))
}

/// A URL button must be an absolute `http(s)://` URL whose host has a dot and is not `localhost`
/// (Telegram answers BUTTON_URL_INVALID otherwise), or a `tg://` link.
/// Stricter than Telegram: a URL without a scheme ("example.com") is rejected, though Telegram may
/// prepend http://. Looser: IP-address hosts such as 127.0.0.1 pass (they contain dots).
fn valid_button_url(url: &str) -> bool {
    if url.is_empty() || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return false;
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return false;
    };
    match scheme.to_ascii_lowercase().as_str() {
        "tg" => !rest.is_empty(),
        "http" | "https" => {
            let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
            let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            let host = match host_port.rsplit_once(':') {
                Some((host, port)) => {
                    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
                        return false;
                    }
                    host
                }
                None => host_port,
            };
            let host = host.to_ascii_lowercase();
            !host.is_empty()
                && host != "localhost"
                && host.contains('.')
                && !host.starts_with('.')
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b >= 0x80)
        }
        _ => false,
    }
}

// --- Telegram's HTML parse mode ---

/// Parse Telegram HTML the way TDLib's `parse_html` does: returns the visible text and the entities
/// (UTF-16 offsets, sorted), or the reason Telegram gives after "can't parse entities: ".
///
/// Supported: b/strong, i/em, u/ins, s/strike/del, tg-spoiler and span class="tg-spoiler",
/// a href, code (class="language-x" inside pre), pre, blockquote [expandable], tg-emoji emoji-id.
/// Tag names are case-insensitive, end tags must match exactly, `</>` closes the innermost tag.
/// Attribute values are quoted strings or bare name tokens (letters, digits, '.', '-'), as in TDLib;
/// so an unquoted URL fails with "Unexpected end of name token".
///
/// Stricter than Telegram, on purpose (it catches missing escaping): an `&` that does not start
/// `&lt;` `&gt;` `&amp;` `&quot;` `&#NN;` or `&#xHH;` *with* the `;` is an error
/// ("Unsupported HTML entity"), in text and in attribute values; Telegram keeps such an `&`
/// literally and accepts entities without `;`.
/// Looser: TDLib's later cleanup (dropping entities nested in code/pre, link normalisation such as a
/// trailing '/', tg://user links becoming text_mention) is not reproduced. The url, email and
/// mention entities Telegram finds in plain text are added after parsing, for every message
/// ([`parse_html_message`], [`autolink`]).
pub fn parse_html(src: &str) -> Result<(String, Vec<Value>), String> {
    struct Open {
        tag: String,
        argument: String,
        /// UTF-16 offset of the entity in the visible text.
        offset: i64,
        /// Byte position in the visible text (for `<a>` without href).
        text_pos: usize,
    }

    let b = src.as_bytes();
    // TDLib walks a NUL-terminated string; 0 past the end keeps the same logic.
    let at = |i: usize| -> u8 { b.get(i).copied().unwrap_or(0) };
    let is_space = |c: u8| matches!(c, b' ' | b'\t' | b'\r' | b'\n' | 0 | 0x0b);

    let mut text = String::with_capacity(src.len());
    let mut utf16: i64 = 0;
    let mut entities: Vec<Value> = Vec::new();
    let mut open: Vec<Open> = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'&' => {
                let (ch, next) = decode_entity(b, i)
                    .ok_or_else(|| format!("Unsupported HTML entity at byte offset {i}"))?;
                text.push(ch);
                utf16 += ch.len_utf16() as i64;
                i = next;
            }
            b'<' if at(i + 1) != b'/' => {
                // Start tag.
                let begin = i;
                i += 1;
                while !is_space(at(i)) && at(i) != b'>' {
                    i += 1;
                }
                if i >= b.len() {
                    return Err(format!("Unclosed start tag at byte offset {begin}"));
                }
                let tag = src[begin + 1..i].to_ascii_lowercase();
                const TAGS: &[&str] = &[
                    "a",
                    "b",
                    "strong",
                    "i",
                    "em",
                    "s",
                    "strike",
                    "del",
                    "u",
                    "ins",
                    "tg-spoiler",
                    "tg-emoji",
                    "span",
                    "pre",
                    "code",
                    "blockquote",
                ];
                if !TAGS.contains(&tag.as_str()) {
                    return Err(format!(
                        "Unsupported start tag \"{tag}\" at byte offset {begin}"
                    ));
                }
                let mut argument = String::new();
                while at(i) != b'>' {
                    while i < b.len() && is_space(at(i)) {
                        i += 1;
                    }
                    if at(i) == b'>' {
                        break;
                    }
                    let name_begin = i;
                    while !is_space(at(i)) && at(i) != b'=' && at(i) != b'>' {
                        i += 1;
                    }
                    let name = &src[name_begin..i];
                    if name.is_empty() {
                        return Err(format!(
                            "Empty attribute name in the tag \"{tag}\" at byte offset {begin}"
                        ));
                    }
                    while i < b.len() && is_space(at(i)) {
                        i += 1;
                    }
                    if at(i) != b'=' {
                        if tag == "blockquote" && name == "expandable" {
                            argument = "1".to_string();
                            continue;
                        }
                        return Err(format!(
                            "Expected equal sign in declaration of an attribute of the tag \"{tag}\" at byte offset {begin}"
                        ));
                    }
                    i += 1;
                    while i < b.len() && is_space(at(i)) {
                        i += 1;
                    }
                    if i >= b.len() {
                        return Err(format!(
                            "Unclosed start tag \"{tag}\" at byte offset {begin}"
                        ));
                    }
                    let value = if at(i) == b'"' || at(i) == b'\'' {
                        let quote = at(i);
                        i += 1;
                        let mut value = String::new();
                        while i < b.len() && at(i) != quote {
                            if at(i) == b'&' {
                                let (ch, next) = decode_entity(b, i).ok_or_else(|| {
                                    format!("Unsupported HTML entity at byte offset {i}")
                                })?;
                                value.push(ch);
                                i = next;
                            } else {
                                let ch = src[i..].chars().next().expect("char boundary");
                                value.push(ch);
                                i += ch.len_utf8();
                            }
                        }
                        if at(i) == quote {
                            i += 1;
                        }
                        value
                    } else {
                        // A name token; case-insensitive, so lowercased like TDLib.
                        let token_begin = i;
                        while at(i).is_ascii_alphanumeric() || at(i) == b'.' || at(i) == b'-' {
                            i += 1;
                        }
                        if !is_space(at(i)) && at(i) != b'>' {
                            return Err(format!(
                                "Unexpected end of name token at byte offset {token_begin}"
                            ));
                        }
                        src[token_begin..i].to_ascii_lowercase()
                    };
                    if i >= b.len() {
                        return Err(format!("Unclosed start tag at byte offset {begin}"));
                    }
                    match (tag.as_str(), name) {
                        ("a", "href") | ("tg-emoji", "emoji-id") => argument = value,
                        ("code", "class") if value.starts_with("language-") => {
                            argument = value["language-".len()..].to_string();
                        }
                        ("span", "class") if value.starts_with("tg-") => {
                            argument = value["tg-".len()..].to_string();
                        }
                        ("blockquote", "expandable") => argument = "1".to_string(),
                        // Other attributes are ignored, as Telegram does.
                        _ => {}
                    }
                }
                if tag == "span" && argument != "spoiler" {
                    return Err(format!(
                        "Tag \"span\" must have class \"tg-spoiler\" at byte offset {begin}"
                    ));
                }
                open.push(Open {
                    tag,
                    argument,
                    offset: utf16,
                    text_pos: text.len(),
                });
                i += 1; // past '>'
            }
            b'<' => {
                // End tag.
                let begin = i;
                if open.is_empty() {
                    return Err(format!("Unexpected end tag at byte offset {begin}"));
                }
                i += 2;
                while !is_space(at(i)) && at(i) != b'>' {
                    i += 1;
                }
                let end_name = &src[begin + 2..i.min(b.len())];
                while i < b.len() && is_space(at(i)) {
                    i += 1;
                }
                if at(i) != b'>' {
                    return Err(format!("Unclosed end tag at byte offset {begin}"));
                }
                let top = open.pop().expect("checked non-empty");
                if !end_name.is_empty() && end_name != top.tag {
                    return Err(format!(
                        "Unmatched end tag at byte offset {begin}, expected \"</{}>\", found \"</{end_name}>\"",
                        top.tag
                    ));
                }
                if utf16 > top.offset {
                    close_entity(
                        &mut entities,
                        top.tag.as_str(),
                        top.argument,
                        top.offset,
                        utf16 - top.offset,
                        &text[top.text_pos..],
                    )?;
                }
                i += 1; // past '>'
            }
            _ => {
                let ch = src[i..].chars().next().expect("char boundary");
                text.push(ch);
                utf16 += ch.len_utf16() as i64;
                i += ch.len_utf8();
            }
        }
    }
    if let Some(top) = open.last() {
        return Err(format!(
            "Can't find end tag corresponding to start tag \"{}\"",
            top.tag
        ));
    }
    // A `code` entity has no language in the Bot API (only pre has one).
    for e in &mut entities {
        if e["type"] == "code"
            && let Some(obj) = e.as_object_mut()
        {
            obj.remove("language");
        }
    }
    sort_entities(&mut entities);
    Ok((text, entities))
}

/// Turn a closed tag into a MessageEntity, as TDLib does when it meets the end tag.
fn close_entity(
    entities: &mut Vec<Value>,
    tag: &str,
    argument: String,
    offset: i64,
    length: i64,
    inner_text: &str,
) -> Result<(), String> {
    let same_range = |e: &Value| e["offset"] == json!(offset) && e["length"] == json!(length);
    let entity = match tag {
        "b" | "strong" => json!({ "type": "bold" }),
        "i" | "em" => json!({ "type": "italic" }),
        "u" | "ins" => json!({ "type": "underline" }),
        "s" | "strike" | "del" => json!({ "type": "strikethrough" }),
        "tg-spoiler" | "span" => json!({ "type": "spoiler" }),
        "blockquote" if argument == "1" => json!({ "type": "expandable_blockquote" }),
        "blockquote" => json!({ "type": "blockquote" }),
        "tg-emoji" => {
            if !argument.parse::<i64>().is_ok_and(|id| id != 0) {
                return Err("Invalid custom emoji identifier specified".to_string());
            }
            json!({ "type": "custom_emoji", "custom_emoji_id": argument })
        }
        "a" => {
            // Without href the link is the text itself; an invalid link is dropped silently.
            let url = if argument.is_empty() {
                inner_text.to_string()
            } else {
                argument
            };
            match normalize_link(&url) {
                Some(url) => json!({ "type": "text_link", "url": url }),
                None => return Ok(()),
            }
        }
        "pre" => {
            // <pre><code class="language-x">…</code></pre>: the code entity just closed over the
            // same range carries the language; together they are one pre entity.
            if let Some(last) = entities.last_mut()
                && last["type"] == "code"
                && same_range(last)
                && last.get("language").is_some()
            {
                last["type"] = json!("pre");
                return Ok(());
            }
            json!({ "type": "pre" })
        }
        "code" => {
            if let Some(last) = entities.last_mut()
                && last["type"] == "pre"
                && same_range(last)
                && !argument.is_empty()
            {
                last["language"] = json!(argument);
                return Ok(());
            }
            if argument.is_empty() {
                json!({ "type": "code" })
            } else {
                // Kept for an enclosing </pre>; parse_html drops it from lone code entities.
                json!({ "type": "code", "language": argument })
            }
        }
        _ => return Ok(()),
    };
    let mut entity = entity;
    entity["offset"] = json!(offset);
    entity["length"] = json!(length);
    entities.push(entity);
    Ok(())
}

/// Approximation of TDLib's link check: http(s)/tg/ton links pass, a link without scheme gets
/// `http://`, anything with spaces or another scheme is not a link.
fn normalize_link(url: &str) -> Option<String> {
    let url = url.trim();
    if url.is_empty() || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    match url.split_once(':') {
        Some((scheme, _))
            if scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'-' || b == b'.') =>
        {
            match scheme.to_ascii_lowercase().as_str() {
                "http" | "https" | "tg" | "ton" => Some(url.to_string()),
                // "example.com:8080/x" has a port, not a scheme.
                _ if url.contains("://") => None,
                _ => Some(format!("http://{url}")),
            }
        }
        _ => Some(format!("http://{url}")),
    }
}

/// Decode `&lt;` `&gt;` `&amp;` `&quot;` `&#NN;` `&#xHH;` at `pos`; returns the char and the index
/// after the `;`. `None` for anything else (the caller makes that an error: see [`parse_html`]).
fn decode_entity(b: &[u8], pos: usize) -> Option<(char, usize)> {
    let mut end = pos + 1;
    let code = if b.get(end) == Some(&b'#') {
        end += 1;
        let hex = b.get(end) == Some(&b'x');
        if hex {
            end += 1;
        }
        let start = end;
        while b.get(end).is_some_and(|c| {
            if hex {
                c.is_ascii_hexdigit()
            } else {
                c.is_ascii_digit()
            }
        }) {
            end += 1;
        }
        let digits = std::str::from_utf8(&b[start..end]).ok()?;
        u32::from_str_radix(digits, if hex { 16 } else { 10 }).ok()?
    } else {
        while b.get(end).is_some_and(u8::is_ascii_alphabetic) {
            end += 1;
        }
        match &b[pos + 1..end] {
            b"lt" => u32::from('<'),
            b"gt" => u32::from('>'),
            b"amp" => u32::from('&'),
            b"quot" => u32::from('"'),
            _ => return None,
        }
    };
    if b.get(end) != Some(&b';') || code == 0 {
        return None;
    }
    Some((char::from_u32(code)?, end + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ents(v: &[Value]) -> Vec<(String, i64, i64)> {
        v.iter()
            .map(|e| {
                (
                    e["type"].as_str().unwrap().to_string(),
                    e["offset"].as_i64().unwrap(),
                    e["length"].as_i64().unwrap(),
                )
            })
            .collect()
    }

    // --- HTML parser ---

    #[test]
    fn html_valid_nesting_and_link() {
        let (text, e) = parse_html(
            "<b>bold <i>both</i></b> plain <a href=\"https://example.com/x?a=1&amp;b=2\">link</a>",
        )
        .unwrap();
        assert_eq!(text, "bold both plain link");
        assert_eq!(
            ents(&e),
            vec![
                ("bold".to_string(), 0, 9),
                ("italic".to_string(), 5, 4),
                ("text_link".to_string(), 16, 4),
            ]
        );
        assert_eq!(e[2]["url"], "https://example.com/x?a=1&b=2");
    }

    #[test]
    fn html_unclosed_tag() {
        assert_eq!(
            parse_html("<b>Approval").unwrap_err(),
            "Can't find end tag corresponding to start tag \"b\""
        );
    }

    #[test]
    fn html_mismatched_end_tag() {
        assert_eq!(
            parse_html("<b><i>x</b></i>").unwrap_err(),
            "Unmatched end tag at byte offset 7, expected \"</i>\", found \"</b>\""
        );
        assert_eq!(
            parse_html("x</b>").unwrap_err(),
            "Unexpected end tag at byte offset 1"
        );
    }

    #[test]
    fn html_unsupported_tag() {
        assert_eq!(
            parse_html("a <x>y</x>").unwrap_err(),
            "Unsupported start tag \"x\" at byte offset 2"
        );
        assert_eq!(
            parse_html("line<br>next").unwrap_err(),
            "Unsupported start tag \"br\" at byte offset 4"
        );
    }

    #[test]
    fn html_bare_lt_is_an_error() {
        assert_eq!(
            parse_html("amount 1 < 2").unwrap_err(),
            "Unsupported start tag \"\" at byte offset 9"
        );
        assert_eq!(
            parse_html("ends with <").unwrap_err(),
            "Unclosed start tag at byte offset 10"
        );
    }

    #[test]
    fn html_bare_amp_is_an_error() {
        assert_eq!(
            parse_html("R&D").unwrap_err(),
            "Unsupported HTML entity at byte offset 1"
        );
        // Stricter than Telegram: the ';' is required.
        assert!(parse_html("a &amp b").is_err());
        assert!(parse_html("&nbsp;").is_err());
    }

    #[test]
    fn html_entities_decoded() {
        let (text, e) = parse_html("&lt;b&gt; &amp; &quot;q&quot; &#65;&#x42; &#x1F600;").unwrap();
        assert_eq!(text, "<b> & \"q\" AB 😀");
        assert!(e.is_empty());
    }

    #[test]
    fn html_offsets_are_utf16() {
        // 😀 is two UTF-16 code units, é one.
        let (text, e) = parse_html("😀é <b>x</b>").unwrap();
        assert_eq!(text, "😀é x");
        assert_eq!(ents(&e), vec![("bold".to_string(), 4, 1)]);
    }

    #[test]
    fn html_pre_code_language_and_spoiler() {
        let (text, e) =
            parse_html("<pre><code class=\"language-rust\">fn main</code></pre> <code>x</code>")
                .unwrap();
        assert_eq!(text, "fn main x");
        assert_eq!(
            e[0],
            json!({"type": "pre", "offset": 0, "length": 7, "language": "rust"})
        );
        assert_eq!(e[1], json!({"type": "code", "offset": 8, "length": 1}));
        assert_eq!(
            parse_html("<span class=\"x\">s</span>").unwrap_err(),
            "Tag \"span\" must have class \"tg-spoiler\" at byte offset 0"
        );
        let (_, e) =
            parse_html("<span class=\"tg-spoiler\">s</span><tg-spoiler>t</tg-spoiler>").unwrap();
        assert_eq!(
            ents(&e),
            vec![("spoiler".to_string(), 0, 1), ("spoiler".to_string(), 1, 1)]
        );
    }

    #[test]
    fn html_attribute_rules() {
        // Unquoted URLs stop at ':' like in TDLib.
        assert_eq!(
            parse_html("<a href=https://x.org>l</a>").unwrap_err(),
            "Unexpected end of name token at byte offset 8"
        );
        assert!(parse_html("<a href=\"https://x.org\" target=\"_blank\">l</a>").is_ok());
        let (_, e) = parse_html("<blockquote expandable>q</blockquote>").unwrap();
        assert_eq!(e[0]["type"], "expandable_blockquote");
        // Uppercase start tags are fine, but the end tag must match the lowercased name.
        assert!(parse_html("<B>x</b>").is_ok());
        assert!(parse_html("<B>x</B>").is_err());
    }

    #[test]
    fn message_text_trimmed_and_limited() {
        let p = |text: &str, mode: Option<&str>| {
            let mut m = Map::new();
            m.insert("text".into(), json!(text));
            if let Some(mode) = mode {
                m.insert("parse_mode".into(), json!(mode));
            }
            parse_content(&m)
        };
        let c = p("\n <b>Hi</b> there \n", Some("HTML")).unwrap();
        assert_eq!(c.text, "Hi there");
        assert_eq!(ents(&c.entities), vec![("bold".to_string(), 0, 2)]);
        assert_eq!(
            p("<b> </b>", Some("html")).unwrap_err().description,
            "Bad Request: message text is empty"
        );
        // 2048 emoji = 4096 UTF-16 units: fits; one more does not, though only 2049 chars.
        assert!(p(&"😀".repeat(2048), None).is_ok());
        assert_eq!(
            p(&"😀".repeat(2049), None).unwrap_err().description,
            "Bad Request: message is too long"
        );
        // Without parse_mode tags are literal text.
        assert_eq!(p("<b>x</b> & y", None).unwrap().text, "<b>x</b> & y");
        assert_eq!(
            p("1 < 2", Some("HTML")).unwrap_err().description,
            "Bad Request: can't parse entities: Unsupported start tag \"\" at byte offset 2"
        );
    }

    #[test]
    fn button_urls() {
        assert!(valid_button_url("https://example.com/a/1"));
        assert!(valid_button_url("http://user@app.example.org:8443/x?y#z"));
        assert!(valid_button_url("tg://resolve?domain=x"));
        assert!(!valid_button_url("http://localhost:8080/a"));
        assert!(!valid_button_url("http://intranet/a"));
        assert!(!valid_button_url("example.com/a"));
        assert!(!valid_button_url("ftp://example.com/a"));
        assert!(!valid_button_url("https://exa mple.com"));
    }

    // --- HTTP level ---

    const TOKEN: &str = "123456:TESTTOKEN";
    const OWNER: i64 = 42;

    async fn call(fake: &FakeTelegram, method: &str, body: Value) -> (u16, Value) {
        let resp = reqwest::Client::new()
            .post(format!("{}/bot{TOKEN}/{method}", fake.api_url()))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap())
    }

    fn approval(text: &str) -> Value {
        json!({
            "chat_id": OWNER, "text": text, "parse_mode": "HTML",
            "link_preview_options": {"is_disabled": true},
            "reply_markup": {"inline_keyboard": [[{"text": "Review", "url": "https://example.com/a/1"}]]},
        })
    }

    #[tokio::test]
    async fn method_names_are_case_insensitive() {
        let fake = FakeTelegram::start(TOKEN, OWNER).await;
        for (i, method) in ["SendMessage", "sendMessage", "SENDMESSAGE"]
            .iter()
            .enumerate()
        {
            let (status, body) =
                call(&fake, method, approval("<b>Approval</b> &lt;12.50&gt;")).await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["ok"], true);
            assert_eq!(body["result"]["message_id"], i as i64 + 1);
            assert_eq!(body["result"]["text"], "Approval <12.50>");
            assert_eq!(
                body["result"]["entities"],
                json!([{"type": "bold", "offset": 0, "length": 8}])
            );
        }
        assert_eq!(fake.count("sendMessage"), 3);
        let msgs = fake.messages(OWNER);
        assert_eq!(msgs.len(), 3);
        assert!(msgs[0].link_preview_disabled);
        assert_eq!(msgs[0].raw_text, "<b>Approval</b> &lt;12.50&gt;");
        assert_eq!(msgs[0].parse_mode.as_deref(), Some("HTML"));
        assert!(msgs[0].reply_markup.is_some());

        let (status, body) = call(&fake, "GetMe", json!({})).await;
        assert_eq!(status, 200);
        assert_eq!(body["result"]["id"], 123456);
        assert_eq!(body["result"]["has_main_web_app"], false);
    }

    #[tokio::test]
    async fn bad_token_and_unknown_method() {
        let fake = FakeTelegram::start(TOKEN, OWNER).await;
        let client = reqwest::Client::new();
        let resp = client
            .post(format!("{}/bot123456:WRONG/GetMe", fake.api_url()))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 401);
        assert_eq!(
            resp.json::<Value>().await.unwrap(),
            json!({"ok": false, "error_code": 401, "description": "Unauthorized"})
        );
        let (status, body) = call(&fake, "SendRocket", json!({})).await;
        assert_eq!(status, 404);
        assert_eq!(
            body,
            json!({"ok": false, "error_code": 404, "description": "Not Found"})
        );
        // GET works too, as on Telegram.
        let resp = client
            .get(format!("{}/bot{TOKEN}/getMe", fake.api_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
    }

    #[tokio::test]
    async fn chat_checks() {
        let fake = FakeTelegram::start(TOKEN, OWNER).await;
        let (status, body) = call(&fake, "SendMessage", json!({"chat_id": 7, "text": "hi"})).await;
        assert_eq!(
            (status, body["description"].as_str().unwrap()),
            (400, CHAT_NOT_FOUND)
        );
        // A numeric string is a valid chat_id.
        let (status, _) = call(&fake, "SendMessage", json!({"chat_id": "42", "text": "hi"})).await;
        assert_eq!(status, 200);
        fake.add_unstarted_user(8);
        let (status, body) = call(&fake, "SendMessage", json!({"chat_id": 8, "text": "hi"})).await;
        assert_eq!(
            (status, body["description"].as_str().unwrap()),
            (403, CANT_INITIATE)
        );
        fake.block(OWNER);
        let (status, body) = call(&fake, "SendMessage", json!({"chat_id": 42, "text": "hi"})).await;
        assert_eq!(
            (status, body["description"].as_str().unwrap()),
            (403, BOT_BLOCKED)
        );
        let (status, body) = call(&fake, "SendMessage", json!({"chat_id": 42, "text": "  "})).await;
        assert_eq!(
            (status, body["description"].as_str().unwrap()),
            (400, "Bad Request: message text is empty")
        );
    }

    #[tokio::test]
    async fn edit_not_modified_and_keyboard_removal() {
        let fake = FakeTelegram::start(TOKEN, OWNER).await;
        let (_, sent) = call(&fake, "SendMessage", approval("<b>Approval</b> 12.50")).await;
        let id = sent["result"]["message_id"].clone();

        // Same text, entities and keyboard: not modified.
        let mut same = approval("<b>Approval</b> 12.50");
        same["message_id"] = id.clone();
        let (status, body) = call(&fake, "EditMessageText", same.clone()).await;
        assert_eq!(
            (status, body["description"].as_str().unwrap()),
            (400, NOT_MODIFIED)
        );
        // Same visible text, different markup (<i> instead of <b>): modified.
        let mut italic = same.clone();
        italic["text"] = json!("<i>Approval</i> 12.50");
        let (status, _) = call(&fake, "EditMessageText", italic).await;
        assert_eq!(status, 200);

        // No reply_markup: the keyboard goes away, so this is a modification.
        let (status, body) = call(
            &fake,
            "EditMessageText",
            json!({"chat_id": OWNER, "message_id": id, "text": "<i>Approval</i> 12.50", "parse_mode": "HTML"}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert!(body["result"].get("reply_markup").is_none());
        assert!(body["result"]["edit_date"].is_i64());
        let msg = &fake.messages(OWNER)[0];
        assert_eq!(msg.reply_markup, None);
        assert_eq!(msg.edits, 2);

        // Removing a keyboard that is already gone: not modified.
        let (status, body) = call(
            &fake,
            "EditMessageReplyMarkup",
            json!({"chat_id": OWNER, "message_id": id, "reply_markup": {"inline_keyboard": []}}),
        )
        .await;
        assert_eq!(
            (status, body["description"].as_str().unwrap()),
            (400, NOT_MODIFIED)
        );
    }

    #[tokio::test]
    async fn a_group_takes_at_most_its_limit_per_window_and_a_private_chat_is_not_counted() {
        const GROUP: i64 = -1_001_234_567_890;
        let fake = FakeTelegram::start(TOKEN, OWNER).await;
        fake.add_chat(GROUP);
        fake.set_group_limit(2, Duration::from_millis(1_500));
        let to_group = |text: &str| {
            let mut body = approval(text);
            body["chat_id"] = json!(GROUP);
            body
        };
        for text in ["one", "two"] {
            assert_eq!(call(&fake, "SendMessage", to_group(text)).await.0, 200);
        }
        let (status, body) = call(&fake, "SendMessage", to_group("three")).await;
        assert_eq!(status, 429);
        assert_eq!(body["parameters"]["retry_after"], 2);
        assert_eq!(fake.messages(GROUP).len(), 2, "a 429 is not applied");
        // An edit counts like a send.
        let edit = json!({"chat_id": GROUP, "message_id": 1, "text": "edited"});
        assert_eq!(call(&fake, "EditMessageText", edit.clone()).await.0, 429);
        // The private chat has no such limit.
        for text in ["a", "b", "c"] {
            assert_eq!(call(&fake, "SendMessage", approval(text)).await.0, 200);
        }
        tokio::time::sleep(Duration::from_millis(1_600)).await;
        assert_eq!(call(&fake, "EditMessageText", edit).await.0, 200);
    }

    #[tokio::test]
    async fn retry_after_parameters() {
        let fake = FakeTelegram::start(TOKEN, OWNER).await;
        fake.set_min_interval(Duration::from_millis(9_500));
        let (status, _) = call(&fake, "SendMessage", approval("one")).await;
        assert_eq!(status, 200);
        let (status, body) = call(&fake, "SendMessage", approval("two")).await;
        assert_eq!(status, 429);
        assert_eq!(
            body,
            json!({"ok": false, "error_code": 429, "description": "Too Many Requests: retry after 10",
                   "parameters": {"retry_after": 10}})
        );
        assert_eq!(fake.messages(OWNER).len(), 1, "a 429 is not applied");

        fake.set_min_interval(Duration::ZERO);
        fake.force_retry_after("editMessageText", 1, 5);
        let edit = json!({"chat_id": OWNER, "message_id": 1, "text": "edited"});
        let (status, body) = call(&fake, "EditMessageText", edit.clone()).await;
        assert_eq!(status, 429);
        assert_eq!(body["parameters"]["retry_after"], 5);
        assert_eq!(body["description"], "Too Many Requests: retry after 5");
        let (status, _) = call(&fake, "EditMessageText", edit).await;
        assert_eq!(status, 200);
        assert_eq!(fake.rate_limited_count(), 2);

        fake.fail_next("sendMessage", 1, 403, BOT_BLOCKED);
        let (status, body) = call(&fake, "SendMessage", approval("three")).await;
        assert_eq!(
            (status, body["description"].as_str().unwrap()),
            (403, BOT_BLOCKED)
        );
    }

    #[tokio::test]
    async fn message_to_edit_not_found() {
        let fake = FakeTelegram::start(TOKEN, OWNER).await;
        let edit = json!({"chat_id": OWNER, "message_id": 1, "text": "Approved"});
        let (status, body) = call(&fake, "EditMessageText", edit.clone()).await;
        assert_eq!(
            (status, body["description"].as_str().unwrap()),
            (400, EDIT_NOT_FOUND)
        );
        call(&fake, "SendMessage", approval("Approval")).await;
        fake.delete_message(OWNER, 1);
        let (status, body) = call(&fake, "EditMessageText", edit).await;
        assert_eq!(
            (status, body["description"].as_str().unwrap()),
            (400, EDIT_NOT_FOUND)
        );
        let (status, body) = call(
            &fake,
            "EditMessageReplyMarkup",
            json!({"chat_id": OWNER, "message_id": 1}),
        )
        .await;
        assert_eq!(
            (status, body["description"].as_str().unwrap()),
            (400, EDIT_NOT_FOUND)
        );
        assert!(fake.messages(OWNER)[0].deleted);
    }

    #[tokio::test]
    async fn button_validation() {
        let fake = FakeTelegram::start(TOKEN, OWNER).await;
        let with_button = |button: Value| json!({"chat_id": OWNER, "text": "x", "reply_markup": {"inline_keyboard": [[button]]}});
        let (status, body) = call(
            &fake,
            "SendMessage",
            with_button(json!({"text": "Review", "url": "http://localhost:8080/a/1"})),
        )
        .await;
        assert_eq!(
            (status, body["description"].as_str().unwrap()),
            (400, "Bad Request: BUTTON_URL_INVALID")
        );
        let (status, body) = call(
            &fake,
            "SendMessage",
            with_button(json!({"text": "Approve", "callback_data": "a".repeat(65)})),
        )
        .await;
        assert_eq!(
            (status, body["description"].as_str().unwrap()),
            (400, "Bad Request: BUTTON_DATA_INVALID")
        );
        let (status, _) = call(&fake, "SendMessage", with_button(json!({"text": "Plain"}))).await;
        assert_eq!(status, 400);
        let (status, _) = call(
            &fake,
            "SendMessage",
            with_button(json!({"text": "Approve", "callback_data": "approve:1"})),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(fake.messages(OWNER).len(), 1);
    }

    #[tokio::test]
    async fn updates_and_commands() {
        let fake = FakeTelegram::start(TOKEN, OWNER).await;
        let (_, body) = call(&fake, "GetUpdates", json!({"timeout": 0})).await;
        assert_eq!(body["result"], json!([]));
        let first = fake.push_text_update(OWNER, OWNER, "/status now");
        let (_, body) = call(&fake, "GetUpdates", json!({"timeout": 10})).await;
        assert_eq!(body["result"][0]["update_id"], first);
        assert_eq!(body["result"][0]["message"]["text"], "/status now");
        assert_eq!(body["result"][0]["message"]["entities"][0]["length"], 7);
        // Confirming with offset drops it.
        let (_, body) = call(&fake, "GetUpdates", json!({"offset": first + 1})).await;
        assert_eq!(body["result"], json!([]));
        // A long poll returns as soon as an update arrives.
        let pusher = fake.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            pusher.push_text_update(OWNER, OWNER, "hi");
        });
        let started = Instant::now();
        let (_, body) = call(
            &fake,
            "GetUpdates",
            json!({"offset": first + 1, "timeout": 10}),
        )
        .await;
        assert_eq!(body["result"][0]["message"]["text"], "hi");
        assert!(started.elapsed() < Duration::from_millis(900));

        let (status, _) = call(
            &fake,
            "SetMyCommands",
            json!({"commands": [{"command": "/status", "description": "Show pending approvals"}]}),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(
            fake.commands(),
            vec![json!({"command": "status", "description": "Show pending approvals"})]
        );
        let (status, body) = call(
            &fake,
            "SetMyCommands",
            json!({"commands": [{"command": "Status", "description": "x"}]}),
        )
        .await;
        assert_eq!(
            (status, body["description"].as_str().unwrap()),
            (400, "Bad Request: BOT_COMMAND_INVALID")
        );
    }

    // --- teloxide 0.17 talks to the fake and deserialises every answer ---

    #[tokio::test]
    async fn teloxide_round_trip() {
        use teloxide::prelude::*;
        use teloxide::types::{
            BotCommand, InlineKeyboardButton, InlineKeyboardMarkup, LinkPreviewOptions,
            MessageEntityKind, MessageId, ParseMode, UpdateKind,
        };
        use teloxide::{ApiError, RequestError};

        let fake = FakeTelegram::start(TOKEN, OWNER).await;
        let bot = Bot::new(TOKEN).set_api_url(fake.api_url().parse().unwrap());
        let me = bot.get_me().await.unwrap();
        assert_eq!(me.username(), BOT_USERNAME);

        let keyboard = InlineKeyboardMarkup::new([[InlineKeyboardButton::url(
            "Review",
            "https://example.com/a/1".parse().unwrap(),
        )]]);
        let preview = LinkPreviewOptions {
            is_disabled: true,
            url: None,
            prefer_small_media: false,
            prefer_large_media: false,
            show_above_text: false,
        };
        let msg = bot
            .send_message(
                ChatId(OWNER),
                "<b>Approval</b> <a href=\"https://example.com/a/1\">12.50 &amp; co</a>",
            )
            .parse_mode(ParseMode::Html)
            .link_preview_options(preview)
            .reply_markup(keyboard.clone())
            .await
            .unwrap();
        assert_eq!(msg.chat.id, ChatId(OWNER));
        assert_eq!(msg.id, MessageId(1));
        assert_eq!(msg.text(), Some("Approval 12.50 & co"));
        let entities = msg.entities().unwrap();
        assert_eq!(entities[0].kind, MessageEntityKind::Bold);
        assert!(
            matches!(&entities[1].kind, MessageEntityKind::TextLink { url } if url.as_str() == "https://example.com/a/1")
        );
        assert_eq!(msg.reply_markup(), Some(&keyboard));

        let err = bot
            .edit_message_text(
                ChatId(OWNER),
                msg.id,
                "<b>Approval</b> <a href=\"https://example.com/a/1\">12.50 &amp; co</a>",
            )
            .parse_mode(ParseMode::Html)
            .reply_markup(keyboard.clone())
            .await
            .unwrap_err();
        assert!(
            matches!(err, RequestError::Api(ApiError::MessageNotModified)),
            "{err:?}"
        );

        let edited = bot
            .edit_message_text(ChatId(OWNER), msg.id, "Approved")
            .reply_markup(InlineKeyboardMarkup::default())
            .await
            .unwrap();
        assert_eq!(edited.text(), Some("Approved"));
        assert!(edited.edit_date().is_some());

        fake.force_retry_after("EditMessageText", 1, 5);
        let err = bot
            .edit_message_text(ChatId(OWNER), msg.id, "Approved again")
            .await
            .unwrap_err();
        assert!(
            matches!(err, RequestError::RetryAfter(s) if s.seconds() == 5),
            "{err:?}"
        );

        fake.delete_message(OWNER, 1);
        let err = bot
            .edit_message_reply_markup(ChatId(OWNER), msg.id)
            .await
            .unwrap_err();
        assert!(
            matches!(err, RequestError::Api(ApiError::MessageToEditNotFound)),
            "{err:?}"
        );

        let err = bot
            .send_message(ChatId(OWNER), "a <b>b")
            .parse_mode(ParseMode::Html)
            .await
            .unwrap_err();
        assert!(
            matches!(err, RequestError::Api(ApiError::CantParseEntities(_))),
            "{err:?}"
        );
        let err = bot.send_message(ChatId(7), "x").await.unwrap_err();
        assert!(
            matches!(err, RequestError::Api(ApiError::ChatNotFound)),
            "{err:?}"
        );

        let chat = bot.get_chat(ChatId(OWNER)).await.unwrap();
        assert_eq!(chat.id, ChatId(OWNER));
        bot.set_my_commands([BotCommand::new("status", "Show pending approvals")])
            .await
            .unwrap();
        bot.delete_webhook().await.unwrap();
        assert!(bot.get_webhook_info().await.unwrap().url.is_none());

        fake.push_text_update(OWNER, OWNER, "/status");
        let sent = bot.send_message(ChatId(OWNER), "plain").await.unwrap();
        let query = fake.push_callback_update(OWNER, OWNER, sent.id.0, "approve:1");
        let updates = bot.get_updates().timeout(1).await.unwrap();
        assert_eq!(updates.len(), 2);
        match &updates[0].kind {
            UpdateKind::Message(m) => {
                assert_eq!(m.text(), Some("/status"));
                assert_eq!(m.from.as_ref().unwrap().id, UserId(OWNER as u64));
            }
            other => panic!("unexpected update {other:?}"),
        }
        match &updates[1].kind {
            UpdateKind::CallbackQuery(q) => {
                assert_eq!(q.data.as_deref(), Some("approve:1"));
                assert_eq!(q.id.0, query);
            }
            other => panic!("unexpected update {other:?}"),
        }
        bot.answer_callback_query(teloxide::types::CallbackQueryId(query))
            .await
            .unwrap();

        fake.block(OWNER);
        let err = bot.send_message(ChatId(OWNER), "x").await.unwrap_err();
        assert!(
            matches!(err, RequestError::Api(ApiError::BotBlocked)),
            "{err:?}"
        );
    }
}
