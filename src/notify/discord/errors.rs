//! Discord's answers sorted into what delivery should do next: wait (429), try again later
//! (network, 5xx), give up on that message (it is gone), or stop until the operator acts (bad
//! token, missing permission, closed DMs). Every text names the setting to fix and never holds
//! the token.

use std::time::Duration;

use serenity::http::{ErrorResponse, HttpError};

use crate::config::DiscordTarget;
use crate::notify::NotifyError;
use crate::notify::render::clean;

/// What a request was for; the same Discord error can mean different things for each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    /// `GET /users/@me` (`countersign check`).
    Me,
    /// `GET /channels/{id}` (`countersign check`).
    Channel,
    OpenDm,
    Post,
    Edit,
    /// A reply to a posted message.
    Remind,
}

/// Why countersign did not send a request at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Withheld {
    /// Discord refused the bot token: nothing is sent to Discord until a restart.
    Token,
    /// Discord refused this very request (403) less than a minute ago.
    Refused,
}

/// A failed request, before classification.
#[derive(Debug)]
pub(super) enum Failure {
    /// A 429, or Discord's limits say to wait this long before sending.
    RateLimited(Duration),
    /// Discord answered with a non-2xx status.
    Api(ErrorResponse),
    /// Not sent: the same refusal as last time stands (see [`Withheld`]).
    Withheld(ErrorResponse, Withheld),
    /// The request did not get an answer (connect, TLS, timeout, reset).
    Network(reqwest::Error),
    /// A 2xx whose body could not be read.
    Decode(String),
    /// Anything else serenity reports (a bad header value, a bad URL).
    Other(String),
}

impl From<serenity::Error> for Failure {
    fn from(e: serenity::Error) -> Failure {
        match e {
            serenity::Error::Http(HttpError::UnsuccessfulRequest(response)) => {
                Failure::Api(response)
            }
            serenity::Error::Http(HttpError::Request(e)) => Failure::Network(e),
            serenity::Error::Json(e) => Failure::Decode(e.to_string()),
            other => Failure::Other(other.to_string()),
        }
    }
}

/// The error and its causes on one line, without the request URL.
fn network_text(e: reqwest::Error) -> String {
    let timed_out = e.is_timeout();
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    if timed_out && !text.contains("timed out") {
        text.push_str(" (timed out)");
    }
    text
}

pub(super) fn classify(failure: Failure, op: Op, target: DiscordTarget) -> NotifyError {
    match failure {
        Failure::RateLimited(wait) => NotifyError::RateLimited(wait),
        Failure::Network(e) => NotifyError::Transient(format!(
            "network error talking to Discord: {}",
            network_text(e)
        )),
        Failure::Decode(e) => {
            NotifyError::Transient(format!("Discord's answer could not be read: {e}"))
        }
        Failure::Other(e) => NotifyError::Permanent(format!("Discord request not sent: {e}")),
        Failure::Api(response) => classify_response(&response, op, target),
        Failure::Withheld(response, why) => {
            let note = match why {
                Withheld::Token => "not sent: Discord refused the bot token earlier",
                Withheld::Refused => {
                    "not sent again: Discord refused the same request less than a minute ago"
                }
            };
            match classify_response(&response, op, target) {
                NotifyError::Permanent(e) => NotifyError::Permanent(format!("{e} ({note})")),
                NotifyError::Gone(e) => NotifyError::Gone(format!("{e} ({note})")),
                other => other,
            }
        }
    }
}

fn classify_response(response: &ErrorResponse, op: Op, target: DiscordTarget) -> NotifyError {
    let mut detail = match response.error.code {
        // Not Discord's JSON (a proxy's or Cloudflare's page): the status says it all.
        -1 => String::new(),
        0 => clean(&response.error.message, 200),
        code => format!("{} (code {code})", clean(&response.error.message, 200)),
    };
    for e in response.error.errors.iter().take(5) {
        detail.push_str(&format!(
            "; {}: {}",
            clean(&e.path, 100),
            clean(&e.message, 200)
        ));
    }
    classify_api(
        response.status_code.as_u16(),
        response.error.code,
        &detail,
        op,
        target,
    )
}

/// Sorts one Discord error answer (status, JSON `code`, readable detail) into what delivery
/// should do next. (A 429 never gets here: the transport reads its wait first.)
pub(super) fn classify_api(
    status: u16,
    code: isize,
    detail: &str,
    op: Op,
    target: DiscordTarget,
) -> NotifyError {
    let answered = if detail.is_empty() {
        format!("Discord answered {status}")
    } else {
        format!("Discord answered {status}: {detail}")
    };
    let key = match target {
        DiscordTarget::User(_) => "discord.user_id",
        DiscordTarget::Channel(_) => "discord.channel_id",
    };
    match (status, code) {
        (_, 10008) => NotifyError::Gone(format!("{answered}: the message was deleted")),
        // The message's channel is gone (a deleted channel, a closed thread).
        (_, 10003) if matches!(op, Op::Edit | Op::Remind) => {
            NotifyError::Gone(format!("{answered}: the message's channel is gone"))
        }
        (_, 50005) => NotifyError::Gone(format!("{answered}: the message cannot be edited")),
        (_, 10003) => NotifyError::Permanent(format!(
            "{answered}: Discord does not know the channel in {key}; check the id"
        )),
        (_, 50007) => NotifyError::Permanent(format!(
            "{answered}: the owner does not accept direct messages from the bot; they must share \
             a server with it and allow DMs from that server's members (or set \
             discord.channel_id instead)"
        )),
        (_, 10013 | 50033) => NotifyError::Permanent(format!(
            "{answered}: Discord cannot open a DM with {key}; check the id, and that the user \
             shares a server with the bot"
        )),
        (401, _) => NotifyError::Permanent(format!(
            "{answered}: Discord rejected discord.bot_token (401 Unauthorized); check the token. \
             countersign sends nothing more to Discord until it is restarted"
        )),
        (_, 50001) => NotifyError::Permanent(format!(
            "{answered}: the bot cannot see the channel in {key} (Missing Access); add it to the \
             server and give it View Channel"
        )),
        (_, 50013) => NotifyError::Permanent(format!(
            "{answered}: the bot lacks a permission in {key}; it needs View Channel, Send \
             Messages and Embed Links"
        )),
        (403, _) => NotifyError::Permanent(format!("{answered}: refused")),
        (408 | 429 | 500..=599, _) => NotifyError::Transient(answered),
        // Any other 4xx means the request itself is wrong (a bug here): retrying cannot help.
        _ => NotifyError::Permanent(format!("{answered}: the request was refused")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_sorted_into_verdicts() {
        let dm = DiscordTarget::User(1);
        let ch = DiscordTarget::Channel(1);
        let v = |status, code, op, target| classify_api(status, code, "x", op, target);
        assert!(matches!(v(404, 10008, Op::Edit, dm), NotifyError::Gone(_)));
        assert!(matches!(v(404, 10003, Op::Edit, ch), NotifyError::Gone(_)));
        assert!(
            matches!(v(404, 10003, Op::Post, ch), NotifyError::Permanent(e) if e.contains("discord.channel_id"))
        );
        assert!(
            matches!(v(403, 50007, Op::Post, dm), NotifyError::Permanent(e) if e.contains("direct messages"))
        );
        assert!(
            matches!(v(401, 0, Op::Post, dm), NotifyError::Permanent(e) if e.contains("discord.bot_token"))
        );
        assert!(matches!(
            v(403, 50013, Op::Post, ch),
            NotifyError::Permanent(_)
        ));
        assert!(matches!(
            v(403, 50001, Op::Post, ch),
            NotifyError::Permanent(_)
        ));
        assert!(matches!(
            v(400, 50035, Op::Post, ch),
            NotifyError::Permanent(_)
        ));
        assert!(matches!(
            v(502, -1, Op::Post, ch),
            NotifyError::Transient(_)
        ));
        assert!(matches!(v(500, 0, Op::Edit, ch), NotifyError::Transient(_)));
    }
}
