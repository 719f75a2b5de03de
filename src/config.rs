//! Settings: built-in defaults, then the TOML file, then `COUNTERSIGN__SECTION__KEY` environment
//! variables, validated once at start-up. Every failure names the key the operator has to fix, and
//! no secret ever leaves this module in a printable form: tokens are [`SecretString`]s, whose
//! `Debug` prints `[REDACTED]` and which have no `Display`; code that needs the value calls
//! [`ExposeSecret::expose_secret`].

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Url;
pub use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

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

// ---- the raw, serde-facing shape: every key of config.example.toml, nothing else ----

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawSettings {
    hook: RawHook,
    opentrain: RawOpenTrain,
    store: RawStore,
    telegram: RawTelegram,
    discord: RawDiscord,
    console: RawConsole,
    reminders: RawReminders,
    proxy: RawProxy,
    log: RawLog,
    owner: RawOwner,
    notices: RawNotices,
    grouping: RawGrouping,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawHook {
    listen: String,
    token: Option<String>,
    token_file: Option<PathBuf>,
    allow_anonymous_loopback: bool,
    max_body_bytes: u64,
    read_timeout_secs: u64,
    max_connections: u64,
}

impl Default for RawHook {
    fn default() -> Self {
        RawHook {
            listen: "127.0.0.1:8750".into(),
            token: None,
            token_file: None,
            allow_anonymous_loopback: false,
            max_body_bytes: 65536,
            read_timeout_secs: 10,
            max_connections: 256,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawOpenTrain {
    api_url: String,
    app_url: String,
    token: Option<String>,
    token_file: Option<PathBuf>,
    poll_interval_secs: u64,
    webhook_secret: Option<String>,
    webhook_secret_file: Option<PathBuf>,
    request_timeout_secs: u64,
    not_found_secs: u64,
}

impl Default for RawOpenTrain {
    fn default() -> Self {
        RawOpenTrain {
            api_url: "https://app.opentrain.ai/api/public/v1".into(),
            app_url: "https://app.opentrain.ai".into(),
            token: None,
            token_file: None,
            poll_interval_secs: 15,
            webhook_secret: None,
            webhook_secret_file: None,
            request_timeout_secs: 30,
            not_found_secs: 120,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawStore {
    path: PathBuf,
    synchronous: String,
    group_commit: bool,
    retention: String,
}

impl Default for RawStore {
    fn default() -> Self {
        RawStore {
            path: "countersign.db".into(),
            synchronous: "full".into(),
            group_commit: true,
            retention: "90d".into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawTelegram {
    bot_token: Option<String>,
    bot_token_file: Option<PathBuf>,
    chat_id: Option<i64>,
    api_url: String,
    min_send_interval_ms: Option<u64>,
    owner_commands: bool,
}

impl Default for RawTelegram {
    fn default() -> Self {
        RawTelegram {
            bot_token: None,
            bot_token_file: None,
            chat_id: None,
            api_url: "https://api.telegram.org".into(),
            min_send_interval_ms: None,
            owner_commands: true,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawDiscord {
    bot_token: Option<String>,
    bot_token_file: Option<PathBuf>,
    user_id: Option<u64>,
    channel_id: Option<u64>,
    api_url: String,
    min_send_interval_ms: u64,
}

impl Default for RawDiscord {
    fn default() -> Self {
        RawDiscord {
            bot_token: None,
            bot_token_file: None,
            user_id: None,
            channel_id: None,
            api_url: "https://discord.com/api/v10".into(),
            min_send_interval_ms: 250,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawConsole {
    enabled: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawReminders {
    #[serde(deserialize_with = "list_or_comma_separated")]
    before_expiry: Vec<String>,
}

impl Default for RawReminders {
    fn default() -> Self {
        RawReminders {
            before_expiry: vec!["24h".into(), "1h".into()],
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawProxy {
    enabled: bool,
    listen: String,
    allow_remote: bool,
    read_timeout_secs: u64,
    max_connections: u64,
}

impl Default for RawProxy {
    fn default() -> Self {
        RawProxy {
            enabled: false,
            listen: "127.0.0.1:8751".into(),
            allow_remote: false,
            read_timeout_secs: 30,
            max_connections: 256,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawNotices {
    after: String,
}

impl Default for RawNotices {
    fn default() -> Self {
        RawNotices {
            after: "10m".into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawGrouping {
    min_batch: u64,
    max_batch: u64,
}

impl Default for RawGrouping {
    fn default() -> Self {
        let d = Grouping::default();
        RawGrouping {
            min_batch: d.min_batch as u64,
            max_batch: d.max_batch as u64,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawOwner {
    timezone: String,
    quiet_hours: Option<String>,
}

impl Default for RawOwner {
    fn default() -> Self {
        RawOwner {
            timezone: "UTC".into(),
            quiet_hours: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLog {
    format: String,
    level: String,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            format: "human".into(),
            level: "info".into(),
        }
    }
}

/// Lists come as TOML arrays from the file, and as `24h,1h` from an environment variable.
fn list_or_comma_separated<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrString {
        List(Vec<String>),
        String(String),
    }
    Ok(match ListOrString::deserialize(d)? {
        ListOrString::List(v) => v,
        ListOrString::String(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
    })
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
        raw_settings(toml, env)?.validate()
    }

    /// What `countersign pair` needs: the Telegram bot token and API URL, before any chat id is
    /// known (the rest of the config is validated as usual, except that `telegram.chat_id` may be
    /// missing).
    pub fn load_for_pairing(path: Option<&Path>) -> Result<(SecretString, Url), ConfigError> {
        let (toml, env) = read_sources(path)?;
        let raw = raw_settings(toml.as_deref(), env)?;
        let token = secret(
            "telegram.bot_token",
            raw.telegram.bot_token.clone(),
            raw.telegram.bot_token_file.clone(),
        )?
        .ok_or_else(|| {
            ConfigError::new(
                "telegram.bot_token",
                "not set: create a bot with @BotFather and put its token in telegram.bot_token \
                 (or COUNTERSIGN__TELEGRAM__BOT_TOKEN) before pairing",
            )
        })?;
        let api_url = http_url("telegram.api_url", &raw.telegram.api_url)?;
        Ok((token, api_url))
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

/// Layers defaults, the TOML text and the environment into the raw, unvalidated settings.
fn raw_settings(
    toml: Option<&str>,
    env: HashMap<String, String>,
) -> Result<RawSettings, ConfigError> {
    let mut builder = config::Config::builder();
    if let Some(text) = toml {
        builder = builder.add_source(config::File::from_str(text, config::FileFormat::Toml));
    }
    builder = builder.add_source(
        config::Environment::with_prefix(ENV_PREFIX)
            .separator("__")
            .source(Some(env.into_iter().collect())),
    );
    builder
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(config_crate_error)
}

/// The `config` crate already names the key in most of its messages ("... for key `hook.listen`");
/// unknown keys come from serde as "unknown field `x`".
fn config_crate_error(e: config::ConfigError) -> ConfigError {
    let text = e.to_string();
    let key = text
        .split("for key `")
        .nth(1)
        .and_then(|rest| rest.split('`').next())
        .or_else(|| {
            text.split("unknown field `")
                .nth(1)
                .and_then(|rest| rest.split('`').next())
        })
        .unwrap_or("the config file")
        .to_string();
    ConfigError::new(key, text)
}

/// A secret given either inline or as a `*_file` sibling, never both.
fn secret(
    key: &str,
    inline: Option<String>,
    file: Option<PathBuf>,
) -> Result<Option<SecretString>, ConfigError> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(ConfigError::new(
            key,
            format!("both {key} and {key}_file are set; give only one"),
        )),
        (Some(v), None) => {
            if v.trim().is_empty() {
                Err(ConfigError::new(key, "is empty"))
            } else {
                Ok(Some(SecretString::new(v)))
            }
        }
        (None, Some(path)) => {
            let text = std::fs::read_to_string(&path).map_err(|e| {
                ConfigError::new(
                    format!("{key}_file"),
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            let v = text.trim_end_matches(['\n', '\r']).to_string();
            if v.trim().is_empty() {
                return Err(ConfigError::new(
                    format!("{key}_file"),
                    format!("{} is empty", path.display()),
                ));
            }
            Ok(Some(SecretString::new(v)))
        }
        (None, None) => Ok(None),
    }
}

fn socket_addr(key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| {
        ConfigError::new(
            key,
            format!("{value:?} is not an address like 127.0.0.1:8750"),
        )
    })
}

/// An `https` URL, or `http` to a loopback host: tokens travel in these requests (the Telegram
/// token in the path, OpenTrain's in a header) and the owner signs in at the app URL, so none of
/// them may cross a network in clear text.
fn http_url(key: &str, value: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(value)
        .map_err(|e| ConfigError::new(key, format!("{value:?} is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(ConfigError::new(
            key,
            format!("{value:?} must be an http(s) URL with a host"),
        ));
    }
    if url.scheme() == "http" && !is_loopback_host(&url) {
        return Err(ConfigError::new(
            key,
            format!(
                "{value:?} must be https: plain http is allowed only to a loopback address \
                 (127.0.0.1, ::1, localhost), so no token crosses a network in clear text"
            ),
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ConfigError::new(
            key,
            format!("{value:?} must not have a query or fragment"),
        ));
    }
    Ok(url)
}

fn is_loopback_host(url: &Url) -> bool {
    // The URL parser has already normalised IPv4 forms ("127.1") and brackets IPv6 hosts.
    let host = url.host_str().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `<section>.read_timeout_secs` (1 to 300) and `<section>.max_connections` (1 to 65536).
fn listener_limits(
    section: &str,
    read_timeout_secs: u64,
    max_connections: u64,
) -> Result<ListenerLimits, ConfigError> {
    if !(1..=300).contains(&read_timeout_secs) {
        return Err(ConfigError::new(
            format!("{section}.read_timeout_secs"),
            "must be between 1 and 300",
        ));
    }
    if !(1..=65536).contains(&max_connections) {
        return Err(ConfigError::new(
            format!("{section}.max_connections"),
            "must be between 1 and 65536",
        ));
    }
    Ok(ListenerLimits {
        read_timeout: Duration::from_secs(read_timeout_secs),
        max_connections: max_connections as usize,
    })
}

/// Parses `24h`, `90m`, `1h 30m` (humantime).
fn duration(key: &str, value: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(value).map_err(|e| {
        ConfigError::new(
            key,
            format!("{value:?} is not a duration like \"24h\" or \"90m\": {e}"),
        )
    })
}

impl RawSettings {
    fn validate(self) -> Result<Settings, ConfigError> {
        // hook
        let listen = socket_addr("hook.listen", &self.hook.listen)?;
        let hook_token = secret("hook.token", self.hook.token, self.hook.token_file)?;
        if hook_token.is_none()
            && !(self.hook.allow_anonymous_loopback && listen.ip().is_loopback())
        {
            return Err(ConfigError::new(
                "hook.token",
                if self.hook.allow_anonymous_loopback {
                    format!(
                        "not set, and hook.listen ({listen}) is not a loopback address: agents must authenticate"
                    )
                } else {
                    "not set: agents authenticate with this bearer token; set hook.token (or hook.token_file), \
                     or hook.allow_anonymous_loopback = true with a loopback hook.listen"
                        .to_string()
                },
            ));
        }
        if self.hook.max_body_bytes < 1024 || self.hook.max_body_bytes > 16 * 1024 * 1024 {
            return Err(ConfigError::new(
                "hook.max_body_bytes",
                "must be between 1024 and 16777216",
            ));
        }
        let hook_limits = listener_limits(
            "hook",
            self.hook.read_timeout_secs,
            self.hook.max_connections,
        )?;

        // opentrain
        let api_url = http_url("opentrain.api_url", &self.opentrain.api_url)?;
        let app_url = http_url("opentrain.app_url", &self.opentrain.app_url)?;
        let app_url = app_url.as_str().trim_end_matches('/').to_string();
        let token = secret(
            "opentrain.token",
            self.opentrain.token,
            self.opentrain.token_file,
        )?;
        if self.opentrain.poll_interval_secs == 0 || self.opentrain.poll_interval_secs > 3600 {
            return Err(ConfigError::new(
                "opentrain.poll_interval_secs",
                "must be between 1 and 3600",
            ));
        }
        if self.opentrain.request_timeout_secs == 0 || self.opentrain.request_timeout_secs > 300 {
            return Err(ConfigError::new(
                "opentrain.request_timeout_secs",
                "must be between 1 and 300",
            ));
        }
        if self.opentrain.not_found_secs == 0 || self.opentrain.not_found_secs > 3600 {
            return Err(ConfigError::new(
                "opentrain.not_found_secs",
                "must be between 1 and 3600",
            ));
        }
        let webhook_secret = secret(
            "opentrain.webhook_secret",
            self.opentrain.webhook_secret,
            self.opentrain.webhook_secret_file,
        )?;

        // store
        if self.store.path.as_os_str().is_empty() {
            return Err(ConfigError::new("store.path", "is empty"));
        }
        let synchronous = match self.store.synchronous.to_ascii_lowercase().as_str() {
            "full" => Synchronous::Full,
            "normal" => Synchronous::Normal,
            other => {
                return Err(ConfigError::new(
                    "store.synchronous",
                    format!(
                        "{other:?} is not one of \"full\" (durable, the default) or \"normal\""
                    ),
                ));
            }
        };

        // telegram: both keys or neither
        let tg_token = secret(
            "telegram.bot_token",
            self.telegram.bot_token,
            self.telegram.bot_token_file,
        )?;
        let telegram = match (tg_token, self.telegram.chat_id) {
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "telegram.chat_id",
                    "not set, but telegram.bot_token is: both are needed to enable Telegram \
                     (`countersign pair` finds your chat id)",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "telegram.bot_token",
                    "not set, but telegram.chat_id is: both are needed to enable Telegram",
                ));
            }
            (Some(bot_token), Some(chat_id)) => {
                let api_url = http_url("telegram.api_url", &self.telegram.api_url)?;
                // Telegram allows about 1 message/s in a chat; a group's 20 a minute are
                // counted by the pacer's window (`Telegram::window`), not by spacing.
                let default_ms = 1000;
                Some(TelegramSettings {
                    bot_token,
                    chat_id,
                    api_url,
                    min_send_interval: Duration::from_millis(
                        self.telegram.min_send_interval_ms.unwrap_or(default_ms),
                    ),
                    owner_commands: self.telegram.owner_commands,
                })
            }
        };

        // discord: a token and exactly one target
        let dc_token = secret(
            "discord.bot_token",
            self.discord.bot_token,
            self.discord.bot_token_file,
        )?;
        let discord = match (dc_token, self.discord.user_id, self.discord.channel_id) {
            (None, None, None) => None,
            (None, _, _) => {
                return Err(ConfigError::new(
                    "discord.bot_token",
                    "not set, but discord.user_id or discord.channel_id is",
                ));
            }
            (Some(_), Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    "discord.user_id",
                    "discord.user_id and discord.channel_id are both set: give exactly one \
                     (user_id for a direct message, channel_id for a channel)",
                ));
            }
            (Some(_), None, None) => {
                return Err(ConfigError::new(
                    "discord.user_id",
                    "discord.bot_token is set but neither discord.user_id (a direct message) \
                     nor discord.channel_id (a channel) is: give exactly one",
                ));
            }
            (Some(_), Some(0), _) => {
                return Err(ConfigError::new(
                    "discord.user_id",
                    "must be a Discord user id (a snowflake), not 0",
                ));
            }
            (Some(_), _, Some(0)) => {
                return Err(ConfigError::new(
                    "discord.channel_id",
                    "must be a Discord channel id (a snowflake), not 0",
                ));
            }
            (Some(bot_token), user, channel) => {
                let target = match (user, channel) {
                    (Some(u), None) => DiscordTarget::User(u),
                    (None, Some(c)) => DiscordTarget::Channel(c),
                    _ => unreachable!("both and neither are handled above"),
                };
                let api_url = http_url("discord.api_url", &self.discord.api_url)?;
                let is_real = api_url.host_str() == Some("discord.com");
                Some(DiscordSettings {
                    bot_token,
                    target,
                    api_url: (!is_real).then_some(api_url),
                    min_send_interval: Duration::from_millis(self.discord.min_send_interval_ms),
                })
            }
        };

        let console = self
            .console
            .enabled
            .unwrap_or(telegram.is_none() && discord.is_none());

        let mut reminders = Vec::new();
        for (i, text) in self.reminders.before_expiry.iter().enumerate() {
            let d = duration(&format!("reminders.before_expiry[{i}]"), text)?;
            if d.is_zero() {
                return Err(ConfigError::new(
                    format!("reminders.before_expiry[{i}]"),
                    "must be more than zero",
                ));
            }
            reminders.push(d);
        }

        let owner = crate::quiet::Owner {
            zone: crate::quiet::Owner::zone_named(self.owner.timezone.trim())
                .map_err(|e| ConfigError::new("owner.timezone", e))?,
            quiet: match &self.owner.quiet_hours {
                None => None,
                Some(q) => Some(
                    q.parse()
                        .map_err(|e| ConfigError::new("owner.quiet_hours", e))?,
                ),
            },
        };
        reminders.sort_unstable_by(|a, b| b.cmp(a));
        reminders.dedup();

        let grouping = self.grouping.validate()?;

        let proxy = ProxySettings {
            enabled: self.proxy.enabled,
            listen: socket_addr("proxy.listen", &self.proxy.listen)?,
            limits: listener_limits(
                "proxy",
                self.proxy.read_timeout_secs,
                self.proxy.max_connections,
            )?,
        };
        // Whoever reaches the proxy can have approvals taken in and shown to the owner.
        if !proxy.listen.ip().is_loopback() && !self.proxy.allow_remote {
            return Err(ConfigError::new(
                "proxy.listen",
                format!(
                    "{} is not a loopback address: anyone who can reach it could send requests through \
                     it and have approvals shown to the owner; listen on 127.0.0.1, or set \
                     proxy.allow_remote = true if that is really meant",
                    proxy.listen
                ),
            ));
        }

        let format = match self.log.format.to_ascii_lowercase().as_str() {
            "human" | "text" => LogFormat::Human,
            "json" => LogFormat::Json,
            other => {
                return Err(ConfigError::new(
                    "log.format",
                    format!("{other:?} is not one of \"human\" or \"json\""),
                ));
            }
        };
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(ConfigError::new(
                "log.level",
                format!(
                    "{:?} is not a level or filter like \"info\" or \"countersign=debug\"",
                    self.log.level
                ),
            ));
        }

        Ok(Settings {
            hook: HookSettings {
                listen,
                token: hook_token,
                allow_anonymous_loopback: self.hook.allow_anonymous_loopback,
                max_body_bytes: self.hook.max_body_bytes as usize,
                limits: hook_limits,
            },
            opentrain: OpenTrainSettings {
                api_url,
                app_url,
                token,
                poll_interval: Duration::from_secs(self.opentrain.poll_interval_secs),
                webhook_secret,
                request_timeout: Duration::from_secs(self.opentrain.request_timeout_secs),
                not_found_for: Duration::from_secs(self.opentrain.not_found_secs),
            },
            store: StoreSettings {
                path: self.store.path,
                synchronous,
                group_commit: self.store.group_commit,
                retention: Some(duration("store.retention", &self.store.retention)?)
                    .filter(|d| !d.is_zero()),
            },
            telegram,
            discord,
            console,
            reminders,
            proxy,
            log: LogSettings {
                format,
                level: self.log.level,
            },
            owner,
            notices_after: duration("notices.after", &self.notices.after)?,
            grouping,
        })
    }
}

impl RawGrouping {
    /// `max_batch` 1..=25: Discord shows at most 25 link buttons (and 25 fields) in a message.
    /// `min_batch` 0 (off), or 2..=`max_batch`: one waiting approval always goes alone, and a
    /// threshold no message could reach would turn grouping off without saying so.
    fn validate(&self) -> Result<Grouping, ConfigError> {
        if !(1..=MAX_BATCH_LIMIT).contains(&self.max_batch) {
            return Err(ConfigError::new(
                "grouping.max_batch",
                format!(
                    "{} is out of range: must be between 1 and {MAX_BATCH_LIMIT} (Discord shows at \
                     most {MAX_BATCH_LIMIT} buttons in a message)",
                    self.max_batch
                ),
            ));
        }
        if self.min_batch == 1 || self.min_batch > self.max_batch {
            return Err(ConfigError::new(
                "grouping.min_batch",
                format!(
                    "{} is out of range: must be 0 (grouping off) or between 2 and \
                     grouping.max_batch ({}); a single approval is always posted on its own",
                    self.min_batch, self.max_batch
                ),
            ));
        }
        Ok(Grouping {
            min_batch: self.min_batch as usize,
            max_batch: self.max_batch as usize,
        })
    }
}
