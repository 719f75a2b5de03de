//! `countersign pair`: find the owner's Telegram chat id without knowing it. Prints a one-time
//! code, waits for `/start <code>` sent to the bot, and prints the `chat_id` line to configure.
//! A message with a wrong or missing code pairs nobody. Run it while the daemon is stopped: only
//! one program may read a bot's updates at a time.

use std::io::Write;
use std::time::Duration;

use teloxide::prelude::*;
use teloxide::types::{AllowedUpdate, UpdateKind};
use teloxide::{ApiError, RequestError};

use crate::config::{ExposeSecret, SecretString};

/// What pairing found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paired {
    pub chat_id: i64,
    pub who: String,
}

/// A code that is easy to type on a phone and hard to guess: 8 characters from an alphabet
/// without look-alikes (40 bits), drawn from the operating system's random source (a seeded
/// generator's output could be predicted from other values it gave out).
pub fn new_code() -> std::io::Result<String> {
    // 32 letters: a byte modulo 32 picks each with the same chance.
    const ALPHABET: &[u8; 32] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes)
        .map_err(|e| std::io::Error::other(format!("the OS's random source failed: {e}")))?;
    Ok(bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect())
}

/// Whether `text` is exactly `/start <code>` (Telegram's deep-link form, also typed by hand;
/// `/start@bot <code>` too). Codes are compared without regard to case.
pub fn is_pairing_message(text: &str, code: &str) -> bool {
    let mut words = text.split_whitespace();
    let command = words.next().unwrap_or("");
    let command = command.split('@').next().unwrap_or("");
    command == "/start"
        && words.next().is_some_and(|w| w.eq_ignore_ascii_case(code))
        && words.next().is_none()
}

/// Waits up to `timeout` for `/start <code>`; writes progress to `out`.
pub async fn pair(
    token: &SecretString,
    api_url: reqwest::Url,
    code: &str,
    timeout: Duration,
    out: &mut (dyn Write + Send),
) -> Result<Paired, String> {
    let mut url = api_url;
    let trimmed = url.path().trim_end_matches('/').to_string();
    url.set_path(&trimmed);
    let bot = Bot::new(token.expose_secret()).set_api_url(url);
    let me = bot.get_me().await.map_err(|e| match e {
        RequestError::Api(ApiError::InvalidToken) => {
            "Telegram refused telegram.bot_token (Unauthorized): copy it again from @BotFather"
                .to_string()
        }
        other => format!(
            "cannot reach Telegram: {}",
            crate::notify::telegram::classify(other)
        ),
    })?;
    let name = crate::notify::telegram::bot_name(&me);
    let _ = writeln!(
        out,
        "Open {name} in Telegram and send:\n\n    /start {code}\n\nWaiting up to {} minutes…",
        timeout.as_secs().div_ceil(60)
    );
    let deadline = tokio::time::Instant::now() + timeout;
    let mut offset: i32 = 0;
    while tokio::time::Instant::now() < deadline {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let updates = bot
            .get_updates()
            .offset(offset)
            .timeout(left.as_secs().clamp(1, 10) as u32)
            .allowed_updates(vec![AllowedUpdate::Message])
            .await;
        let updates = match updates {
            Ok(u) => u,
            Err(RequestError::Api(ApiError::TerminatedByOtherGetUpdates)) => {
                return Err(
                    "another program is reading this bot's updates (is `countersign run` running? stop it while pairing)"
                        .into(),
                );
            }
            Err(RequestError::Api(ApiError::CantGetUpdates)) => {
                return Err("a webhook is set on this bot; remove it before pairing".into());
            }
            Err(RequestError::RetryAfter(s)) => {
                tokio::time::sleep(s.duration()).await;
                continue;
            }
            Err(e) => {
                let _ = writeln!(
                    out,
                    "(Telegram: {}; trying again)",
                    crate::notify::telegram::classify(e)
                );
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
        };
        for update in updates {
            offset = offset.max(update.id.0 as i32 + 1);
            let UpdateKind::Message(message) = update.kind else {
                continue;
            };
            let text = message.text().unwrap_or("");
            if is_pairing_message(text, code) {
                // Acknowledge what was read, so the daemon does not see it again.
                let _ = bot.get_updates().offset(offset).timeout(0).await;
                let who = message
                    .from
                    .as_ref()
                    .map(|u| match &u.username {
                        Some(name) => format!("{} (@{name})", u.first_name),
                        None => u.first_name.clone(),
                    })
                    .unwrap_or_else(|| "the owner".into());
                return Ok(Paired {
                    chat_id: message.chat.id.0,
                    who,
                });
            }
            let _ = writeln!(
                out,
                "Ignored a message from chat {} (not /start with the code).",
                message.chat.id.0
            );
        }
    }
    Err(format!(
        "no /start {code} arrived in time; run `countersign pair` again"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_code_pairs() {
        assert!(is_pairing_message("/start K7Q2M9XA", "K7Q2M9XA"));
        assert!(is_pairing_message("/start@my_bot k7q2m9xa", "K7Q2M9XA"));
        assert!(!is_pairing_message("/start", "K7Q2M9XA"));
        assert!(!is_pairing_message("/start K7Q2M9XB", "K7Q2M9XA"));
        assert!(!is_pairing_message("/start K7Q2M9XA extra", "K7Q2M9XA"));
        assert!(!is_pairing_message("K7Q2M9XA", "K7Q2M9XA"));
    }

    #[test]
    fn codes_are_eight_unambiguous_characters() {
        let c = new_code().unwrap();
        assert_eq!(c.len(), 8);
        assert!(
            c.chars()
                .all(|ch| ch.is_ascii_alphanumeric() && !"01OI".contains(ch))
        );
        assert_ne!(new_code().unwrap(), new_code().unwrap());
    }
}
