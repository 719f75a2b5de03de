//! The raw, serde-facing shape of the settings: every key of `config.example.toml`, nothing
//! else, with its default, layered from the defaults, the TOML text and the environment. It is
//! turned into [`Settings`](super::Settings) by `validate.rs`, which names the key of every
//! failure.

use std::collections::HashMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::{ConfigError, ENV_PREFIX, Grouping};

mod validate;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawSettings {
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

/// Layers defaults, the TOML text and the environment into the raw, unvalidated settings.
pub(super) fn raw_settings(
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
