//! `countersign check`: validate the config, then try each credential against its service, one
//! line per check. Nothing is sent to the owner: Telegram is probed with a chat action (the
//! "typing…" hint), which needs the same right to write as a message.

use std::fmt;

use teloxide::prelude::*;
use teloxide::types::{ChatAction, ChatId};
use teloxide::{ApiError, RequestError};

use crate::config::Settings;
use crate::notify::NotifyError;
use crate::notify::discord::Discord;
use crate::notify::telegram::Telegram;
use crate::opentrain::{OpenTrain, UpstreamError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckLine {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

impl fmt::Display for CheckLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<4}  {:<9}  {}",
            if self.ok { "ok" } else { "FAIL" },
            self.name,
            self.detail
        )
    }
}

fn line(name: &'static str, result: Result<String, String>) -> CheckLine {
    match result {
        Ok(detail) => CheckLine {
            name,
            ok: true,
            detail,
        },
        Err(detail) => CheckLine {
            name,
            ok: false,
            detail,
        },
    }
}

/// Runs every check that applies to `settings` (already validated).
pub async fn run(settings: &Settings) -> Vec<CheckLine> {
    let mut channels = Vec::new();
    if settings.telegram.is_some() {
        channels.push("telegram");
    }
    if settings.discord.is_some() {
        channels.push("discord");
    }
    if settings.console {
        channels.push("console");
    }
    let mut lines = vec![line(
        "config",
        Ok(format!(
            "hook on {}, store {}, channels: {}",
            settings.hook.listen,
            settings.store.path.display(),
            if channels.is_empty() {
                "none".to_string()
            } else {
                channels.join(", ")
            }
        )),
    )];
    lines.push(line("opentrain", check_opentrain(settings).await));
    if let Some(tg) = &settings.telegram {
        lines.push(line(
            "telegram",
            check_telegram(&Telegram::new(tg), tg.chat_id).await,
        ));
    }
    if let Some(dc) = &settings.discord {
        lines.push(line("discord", check_discord(dc).await));
    }
    if !settings.has_chat() && !settings.console {
        lines.push(line(
            "channels",
            Err("no chat is configured and the console is off: nobody would see anything".into()),
        ));
    }
    lines
}

async fn check_opentrain(settings: &Settings) -> Result<String, String> {
    let token = settings.opentrain_token().map_err(|e| e.to_string())?;
    let client = OpenTrain::new(&settings.opentrain, token.clone())?;
    let me = client.me().await.map_err(|e| match e {
        UpstreamError::Auth { status: 401, .. } => {
            "OpenTrain refused opentrain.token (401): is it the owner's ot_pat_ token, not revoked?"
                .to_string()
        }
        other => format!("GET /auth/me failed: {other}"),
    })?;
    let scopes: Vec<&str> = me
        .pointer("/token/scopes")
        .and_then(|s| s.as_array())
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    let has = |want: &str| {
        let write = want.replace(":read", ":write");
        scopes.iter().any(|s| *s == want || *s == write)
    };
    if !has("payments:read") {
        return Err(format!(
            "the token lacks payments:read (it has: {}); countersign cannot read approvals",
            scopes.join(", ")
        ));
    }
    let who = me
        .pointer("/actor/email")
        .or_else(|| me.pointer("/actor/fullName"))
        .and_then(|v| v.as_str())
        .unwrap_or("unknown user");
    let mut detail = format!("token of {who}, scopes {}", scopes.join(", "));
    if !has("proposals:read") {
        detail.push_str("; without proposals:read, hire requests show no candidate or job");
    }
    if let Some(role) = me.pointer("/account/memberRole").and_then(|v| v.as_str())
        && role != "OWNER"
    {
        detail.push_str(&format!(
            "; member role is {role}, not OWNER: approvals requested by other tokens may be invisible"
        ));
    }
    Ok(detail)
}

async fn check_telegram(telegram: &Telegram, chat_id: i64) -> Result<String, String> {
    let bot = telegram.bot();
    let me = bot.get_me().await.map_err(|e| match e {
        RequestError::Api(ApiError::InvalidToken) => {
            "Telegram refused telegram.bot_token (Unauthorized): copy it again from @BotFather"
                .to_string()
        }
        other => format!("getMe failed: {}", crate::notify::telegram::classify(other)),
    })?;
    let name = crate::notify::telegram::bot_name(&me);
    bot.send_chat_action(ChatId(chat_id), ChatAction::Typing)
        .await
        .map_err(|e| match e {
            RequestError::Api(ApiError::Unknown(text))
                if text.contains("bot can't initiate conversation") =>
            {
                format!(
                    "the owner has not started the bot: open {name} in Telegram and press Start \
                     (or run `countersign pair`)"
                )
            }
            RequestError::Api(ApiError::ChatNotFound) => format!(
                "chat {chat_id} not found: check telegram.chat_id, or run `countersign pair` \
                 and send /start to {name}"
            ),
            RequestError::Api(ApiError::BotBlocked) => {
                format!("the owner has blocked {name}: unblock it in Telegram")
            }
            other => format!(
                "cannot write to chat {chat_id}: {}",
                crate::notify::telegram::classify(other)
            ),
        })?;
    Ok(format!("bot {name} can write to chat {chat_id}"))
}

async fn check_discord(dc: &crate::config::DiscordSettings) -> Result<String, String> {
    // The notifier's own requests and verdicts, so `check` says what delivery would hit.
    let discord = Discord::new(dc)?;
    discord.probe().await.map_err(|e| match e {
        NotifyError::Transient(e) => format!("cannot reach Discord: {e}"),
        NotifyError::RateLimited(wait) => {
            format!("Discord asks to wait {wait:?} before the next request; try again then")
        }
        NotifyError::Gone(e) | NotifyError::Permanent(e) => e,
    })
}
