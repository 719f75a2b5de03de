//! From the raw settings to [`Settings`]: every value checked, and every failure naming the key
//! the operator has to fix.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use reqwest::Url;

use super::super::{
    ConfigError, DiscordSettings, DiscordTarget, Grouping, HookSettings, ListenerLimits, LogFormat,
    LogSettings, MAX_BATCH_LIMIT, OpenTrainSettings, ProxySettings, SecretString, Settings,
    StoreSettings, Synchronous, TelegramSettings,
};
use super::{RawGrouping, RawSettings};

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
    pub(in crate::config) fn validate(self) -> Result<Settings, ConfigError> {
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

impl RawSettings {
    /// What `countersign pair` needs: the Telegram bot token and API URL, before any chat id is
    /// known.
    pub(in crate::config) fn pairing(self) -> Result<(SecretString, Url), ConfigError> {
        let token = secret(
            "telegram.bot_token",
            self.telegram.bot_token.clone(),
            self.telegram.bot_token_file.clone(),
        )?
        .ok_or_else(|| {
            ConfigError::new(
                "telegram.bot_token",
                "not set: create a bot with @BotFather and put its token in telegram.bot_token \
                 (or COUNTERSIGN__TELEGRAM__BOT_TOKEN) before pairing",
            )
        })?;
        let api_url = http_url("telegram.api_url", &self.telegram.api_url)?;
        Ok((token, api_url))
    }
}
