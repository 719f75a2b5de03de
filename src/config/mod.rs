//! Settings: built-in defaults, then the TOML file, then `COUNTERSIGN__SECTION__KEY` environment
//! variables, validated once at start-up. Every failure names the key the operator has to fix, and
//! no secret ever leaves this module in a printable form: tokens are [`SecretString`]s, whose
//! `Debug` prints `[REDACTED]` and which have no `Display`; code that needs the value calls
//! [`ExposeSecret::expose_secret`].
//!
//! This file holds the validated settings the rest of the daemon reads; `raw.rs` the serde shape
//! of every key with its default; `raw/validate.rs` the checks from one to the other.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Url;
pub use secrecy::{ExposeSecret, SecretString};

mod raw;

/// The config file `run` and the other commands read when `-c` is not given.
pub const DEFAULT_CONFIG_FILE: &str = "countersign.toml";
/// The prefix of environment overrides: `COUNTERSIGN__TELEGRAM__BOT_TOKEN` sets `telegram.bot_token`.
pub const ENV_PREFIX: &str = "COUNTERSIGN";

/// A configuration problem, always tied to the key that causes it.
#[derive(Debug, thiserror::Error)]
#[error("config: {key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synchronous {
    Full,
    Normal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone)]
pub struct HookSettings {
    pub listen: SocketAddr,
    pub token: Option<SecretString>,
    pub allow_anonymous_loopback: bool,
    pub max_body_bytes: usize,
    pub limits: ListenerLimits,
}

/// How a listener (the hook, the proxy) protects itself from slow clients; see [`crate::serve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerLimits {
    /// The time a client has for a request's headers, and again for its body.
    pub read_timeout: Duration,
    /// The most connections served at once.
    pub max_connections: usize,
}

#[derive(Debug, Clone)]
pub struct OpenTrainSettings {
    pub api_url: Url,
    /// Without a trailing slash: links are `<app_url>/approvals/<id>`.
    pub app_url: String,
    pub token: Option<SecretString>,
    pub poll_interval: Duration,
    pub webhook_secret: Option<SecretString>,
    pub request_timeout: Duration,
    /// How long a 404 at verification is read again before the approval is `rejected`.
    pub not_found_for: Duration,
}

#[derive(Debug, Clone)]
pub struct StoreSettings {
    pub path: PathBuf,
    pub synchronous: Synchronous,
    /// Batch concurrent commits into one transaction. Off only to measure what it buys.
    pub group_commit: bool,
    /// How long settled approvals are kept; `None` (`"0"`) keeps everything.
    pub retention: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct TelegramSettings {
    pub bot_token: SecretString,
    pub chat_id: i64,
    pub api_url: Url,
    /// The least time between two requests to the owner's chat (Telegram allows about one message
    /// a second in a private chat and twenty a minute in a group).
    pub min_send_interval: Duration,
    /// Answer `/pending` and `/help` from the owner's chat (long-polls `getUpdates`).
    pub owner_commands: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscordTarget {
    /// A direct message to this user.
    User(u64),
    /// A message in this channel.
    Channel(u64),
}

#[derive(Debug, Clone)]
pub struct DiscordSettings {
    pub bot_token: SecretString,
    pub target: DiscordTarget,
    /// `None` means the real Discord, with serenity's own rate limiter.
    pub api_url: Option<Url>,
    pub min_send_interval: Duration,
}

#[derive(Debug, Clone)]
pub struct ProxySettings {
    pub enabled: bool,
    /// Loopback unless `proxy.allow_remote = true` (checked in [`RawSettings::validate`]).
    pub listen: SocketAddr,
    pub limits: ListenerLimits,
}

#[derive(Debug, Clone)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
}

/// Validated settings. Construct with [`Settings::load`] or [`Settings::from_toml_and_env`].
#[derive(Debug, Clone)]
pub struct Settings {
    pub hook: HookSettings,
    pub opentrain: OpenTrainSettings,
    pub store: StoreSettings,
    pub telegram: Option<TelegramSettings>,
    pub discord: Option<DiscordSettings>,
    /// Print each message and edit to stdout.
    pub console: bool,
    /// How long before `expiresAt` a still-pending approval is brought back to the owner's attention.
    pub reminders: Vec<Duration>,
    pub proxy: ProxySettings,
    pub log: LogSettings,
    /// The owner's time zone and quiet hours (§3.6).
    pub owner: crate::quiet::Owner,
    /// How long a problem must last before the owner gets a service notice (§3.8).
    pub notices_after: Duration,
    /// How many waiting approvals share one message (§3.9).
    pub grouping: Grouping,
}

/// How the chat's messages group approvals (`grouping.*`, SPEC §3.9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grouping {
    /// At least this many waiting approvals go out as one message; 0 turns grouping off.
    pub min_batch: usize,
    /// At most this many approvals in one message.
    pub max_batch: usize,
}

impl Grouping {
    pub const OFF: Grouping = Grouping {
        min_batch: 0,
        max_batch: 1,
    };

    pub fn is_on(&self) -> bool {
        self.min_batch >= 2 && self.max_batch >= self.min_batch
    }
}

/// The most approvals one message may hold: Discord's 25 buttons (and 25 embed fields).
pub const MAX_BATCH_LIMIT: u64 = 25;

impl Default for Grouping {
    fn default() -> Self {
        Grouping {
            min_batch: 4,
            max_batch: 10,
        }
    }
}

impl Settings {
    /// Loads `path` (which must exist) or, without one, `countersign.toml` in the working
    /// directory if there is one, then the process environment.
    pub fn load(path: Option<&Path>) -> Result<Settings, ConfigError> {
        let (toml, env) = read_sources(path)?;
        Settings::from_toml_and_env(toml.as_deref(), env)
    }

    /// Builds settings from TOML text and a set of environment variables (only those starting
    /// with `COUNTERSIGN__` are read). Tests use this to avoid touching the process environment.
    pub fn from_toml_and_env(
        toml: Option<&str>,
        env: HashMap<String, String>,
    ) -> Result<Settings, ConfigError> {
        raw::raw_settings(toml, env)?.validate()
    }

    /// What `countersign pair` needs: the Telegram bot token and API URL, before any chat id is
    /// known (the rest of the config is validated as usual, except that `telegram.chat_id` may be
    /// missing).
    pub fn load_for_pairing(path: Option<&Path>) -> Result<(SecretString, Url), ConfigError> {
        let (toml, env) = read_sources(path)?;
        raw::raw_settings(toml.as_deref(), env)?.pairing()
    }

    /// The token countersign itself uses against OpenTrain; `run` and `check` cannot work without it.
    pub fn opentrain_token(&self) -> Result<&SecretString, ConfigError> {
        self.opentrain.token.as_ref().ok_or_else(|| {
            ConfigError::new(
                "opentrain.token",
                "not set: countersign needs the owner's ot_pat_ token (scopes payments:read, proposals:read) \
                 to verify approvals; set opentrain.token or opentrain.token_file in the config file, \
                 or COUNTERSIGN__OPENTRAIN__TOKEN",
            )
        })
    }

    /// Whether any chat (not the console) is configured.
    pub fn has_chat(&self) -> bool {
        self.telegram.is_some() || self.discord.is_some()
    }
}

/// The config file's text (if any) and the `COUNTERSIGN__*` environment.
pub(crate) fn read_sources(
    path: Option<&Path>,
) -> Result<(Option<String>, HashMap<String, String>), ConfigError> {
    let (file, required) = match path {
        Some(p) => (p.to_path_buf(), true),
        None => (PathBuf::from(DEFAULT_CONFIG_FILE), false),
    };
    let text = match std::fs::read_to_string(&file) {
        Ok(text) => Some(text),
        Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(ConfigError::new(
                "config file",
                format!("cannot read {}: {e}", file.display()),
            ));
        }
    };
    let env: HashMap<String, String> = std::env::vars()
        .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}__")))
        .collect();
    Ok((text, env))
}
