//! What the fake Discord remembers: the bot's token, who and where it may write, the messages it
//! holds, the faults queued by the test, and every request it was sent.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use super::ratelimit::Limits;
use super::{FakeDiscordMessage, RecordedDiscordCall};

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
