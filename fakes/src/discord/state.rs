//! What the fake Discord remembers (the bot's token, who and where it may write, the messages it
//! holds, the faults queued by the test, every request it was sent), and how Discord shows it.

use std::collections::{HashMap, HashSet};

use chrono::Utc;
use serde_json::{Value, json};

use super::ratelimit::Limits;
use super::{FAKE_BOT_USER_ID, FakeDiscordMessage, RecordedDiscordCall};

const BOT_USERNAME: &str = "countersign-fake-bot";
/// DM channels and messages get ids above this one, always increasing, like real snowflakes.
const FIRST_GENERATED_ID: u64 = 1_300_000_000_000_000_000;

pub(super) struct StoredMessage {
    pub msg: FakeDiscordMessage,
    pub tts: bool,
    pub flags: u64,
    pub nonce: Option<Value>,
    pub timestamp: String,
    pub edited_timestamp: Option<String>,
}

/// An answer forced on the next `remaining` requests (`FakeDiscord::fail_next`).
pub(super) struct Failure {
    pub remaining: usize,
    pub status: u16,
    pub code: i64,
    pub message: String,
}

pub(super) struct State {
    pub token: String,
    pub owner_user_id: u64,
    pub guild_channel_id: u64,
    /// Users who share a server with the bot, so a DM can be opened with them.
    pub users: HashSet<u64>,
    /// user id -> DM channel id; Discord hands back the same channel every time.
    pub dm_channels: HashMap<u64, u64>,
    pub closed_dms: HashSet<u64>,
    /// Channels where the bot may not send messages (403 50013).
    pub denied: HashSet<u64>,
    pub messages: Vec<StoredMessage>,
    pub last_id: u64,
    pub limits: Limits,
    pub failure: Option<Failure>,
    /// Requests still to be left without an answer.
    pub hang: usize,
    pub requests: Vec<RecordedDiscordCall>,
}

impl State {
    pub fn new(token: &str, owner_user_id: u64, guild_channel_id: u64) -> State {
        State {
            token: token.to_owned(),
            owner_user_id,
            guild_channel_id,
            users: HashSet::from([owner_user_id]),
            dm_channels: HashMap::new(),
            closed_dms: HashSet::new(),
            denied: HashSet::new(),
            messages: Vec::new(),
            last_id: FIRST_GENERATED_ID,
            limits: Limits::default(),
            failure: None,
            hang: 0,
            requests: Vec::new(),
        }
    }

    pub fn next_id(&mut self) -> u64 {
        self.last_id += 1;
        self.last_id
    }

    pub fn channel_exists(&self, channel_id: u64) -> bool {
        channel_id == self.guild_channel_id || self.dm_recipient(channel_id).is_some()
    }

    pub fn dm_recipient(&self, channel_id: u64) -> Option<u64> {
        self.dm_channels
            .iter()
            .find(|&(_, &c)| c == channel_id)
            .map(|(&user, _)| user)
    }
}

/// Discord's timestamp format, e.g. `2024-01-01T00:00:00.000000+00:00`.
pub(super) fn discord_timestamp() -> String {
    Utc::now().format("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string()
}

pub(super) fn user_json(id: u64, username: &str, bot: bool) -> Value {
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
pub(super) fn bot_user_json(me: bool) -> Value {
    let mut user = user_json(FAKE_BOT_USER_ID, BOT_USERNAME, true);
    if me {
        user["mfa_enabled"] = json!(false);
        user["locale"] = json!("en-US");
        user["verified"] = json!(true);
        user["email"] = Value::Null;
    }
    user
}

pub(super) fn message_json(stored: &StoredMessage) -> Value {
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
