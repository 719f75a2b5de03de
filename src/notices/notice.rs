//! What a service notice says: what is wrong, since when, the fix — or that it cleared — as
//! spans of countersign's own words and outside text, which each platform renders literally.

use chrono::{DateTime, TimeZone as _, Utc};

use super::Problem;
use crate::quiet::Owner;
use crate::store::ProblemRow;

/// One notice as a channel shows it: what is wrong, since when, the fix — or that it cleared.
#[derive(Debug, Clone)]
pub struct Notice {
    pub problem: Problem,
    /// What was seen (an error from OpenTrain or a chat): never markup, shown as code.
    pub detail: String,
    pub since: DateTime<Utc>,
    pub cleared_at: Option<DateTime<Utc>>,
    /// The owner's zone, for the times shown.
    pub zone: jiff::tz::TimeZone,
    /// Posted inside the owner's quiet hours: it arrives without a sound (§3.6).
    pub silent: bool,
}

/// A piece of a notice's text: countersign's own words, or outside text to show literally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Span {
    Text(String),
    Code(String),
}

impl Notice {
    pub(super) fn from_row(row: &ProblemRow, problem: Problem, owner: &Owner) -> Notice {
        Notice {
            problem,
            detail: row.detail.clone(),
            since: ms_to_time(row.since),
            cleared_at: row.cleared_at.map(ms_to_time),
            zone: owner.zone.clone(),
            silent: owner.is_quiet(Utc::now()),
        }
    }

    /// The first line: what is wrong, or that it is fixed.
    pub fn title(&self) -> String {
        let cleared = self.cleared_at.is_some();
        match (self.problem, cleared) {
            (Problem::OpenTrainRefusesToken, false) => {
                "OpenTrain refuses countersign's token".into()
            }
            (Problem::OpenTrainRefusesToken, true) => {
                "Resolved: OpenTrain accepts countersign's token again".into()
            }
            (Problem::OpenTrainUnreachable, false) => "OpenTrain cannot be reached".into(),
            (Problem::OpenTrainUnreachable, true) => "Resolved: OpenTrain answers again".into(),
            (Problem::OpenTrainHidesApprovals, false) => {
                "OpenTrain no longer shows some approvals to countersign".into()
            }
            (Problem::OpenTrainHidesApprovals, true) => {
                "Resolved: OpenTrain shows every tracked approval again".into()
            }
            (Problem::ChannelRefuses(c), false) => {
                format!("{} refuses countersign's messages", platform(c))
            }
            (Problem::ChannelRefuses(c), true) => {
                format!(
                    "Resolved: {} takes countersign's messages again",
                    platform(c)
                )
            }
        }
    }

    /// The lines under the title.
    pub fn lines(&self) -> Vec<Vec<Span>> {
        let since = crate::quiet::format_in(&self.zone, self.since);
        let text = |s: &str| Span::Text(s.to_string());
        if let Some(cleared) = self.cleared_at {
            let cleared = crate::quiet::format_in(&self.zone, cleared);
            return vec![
                vec![text(&format!("From {since} to {cleared}."))],
                vec![text(match self.problem {
                    Problem::ChannelRefuses(_) => {
                        "Messages that could not be sent or updated meanwhile are caught up now."
                    }
                    _ => "Approval messages are being brought up to date.",
                })],
            ];
        }
        let (effect, seen, fix): (String, &str, Vec<Span>) = match self.problem {
            Problem::OpenTrainRefusesToken => (
                "approvals cannot be verified or tracked, so messages may not show their latest status.".into(),
                "OpenTrain said: ",
                vec![
                    text("Fix: give countersign a valid OpenTrain API key with the payments:read scope ("),
                    Span::Code("opentrain.token".into()),
                    text(") and restart it. Nothing is lost meanwhile."),
                ],
            ),
            Problem::OpenTrainUnreachable => (
                "new approvals wait to be verified and messages may not show their latest status.".into(),
                "Last error: ",
                vec![
                    text("Fix: check this machine's network and "),
                    Span::Code("opentrain.api_url".into()),
                    text(". countersign keeps trying; nothing is lost meanwhile."),
                ],
            ),
            Problem::OpenTrainHidesApprovals => (
                "approvals OpenTrain showed before now answer 404, so their messages keep their last status.".into(),
                "First seen: ",
                vec![
                    text("Fix: check that "),
                    Span::Code("opentrain.token".into()),
                    text(" belongs to the account the agents work for, and open the approval links to see their status. countersign keeps reading them."),
                ],
            ),
            Problem::ChannelRefuses(c) => (
                format!(
                    "approvals may not reach {}, or their messages there may not be updated.",
                    platform(c)
                ),
                "The error: ",
                vec![text(channel_fix(c))],
            ),
        };
        vec![
            vec![text(&format!("Since {since}: {effect}"))],
            vec![text(seen), Span::Code(self.detail.clone())],
            fix,
        ]
    }
}

fn platform(channel: &str) -> &'static str {
    match channel {
        "telegram" => "Telegram",
        "discord" => "Discord",
        _ => "The console",
    }
}

fn channel_fix(channel: &str) -> &'static str {
    match channel {
        "telegram" => {
            "Fix: unblock the bot (or press Start in its chat), or give it back the right to post in the configured chat. countersign retries by itself; no restart is needed."
        }
        "discord" => {
            "Fix: give the bot back View Channel, Send Messages and Embed Links in the configured channel, or let it send you direct messages. A refused bot token needs a new one and a restart."
        }
        _ => "Fix: make countersign's standard output writable.",
    }
}

fn ms_to_time(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notices::Problem;

    #[test]
    fn outside_text_in_a_notice_is_code_on_every_platform() {
        let notice = Notice {
            problem: Problem::ChannelRefuses("telegram"),
            detail: "<b>@everyone</b> see https://evil.example".into(),
            since: ms_to_time(1_780_000_000_000),
            cleared_at: None,
            zone: jiff::tz::TimeZone::UTC,
            silent: false,
        };
        let html = crate::notify::telegram::notice_html(&notice);
        assert!(
            html.contains("<code>&lt;b&gt;@everyone&lt;/b&gt; see https://evil.example</code>"),
            "{html}"
        );
        let discord = crate::notify::discord::notice_text(&notice);
        assert!(
            !discord.contains("@everyone"),
            "a mention is broken up: {discord}"
        );
        assert!(discord.contains('`'), "{discord}");
        let cleared = Notice {
            cleared_at: Some(ms_to_time(1_780_000_600_000)),
            ..notice
        };
        assert!(cleared.title().starts_with("Resolved: "));
        assert!(
            crate::notify::console::notice_text(&cleared).contains(" to 2026-"),
            "the time it lasted"
        );
    }
}
