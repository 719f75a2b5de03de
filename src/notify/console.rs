//! The console: every message and edit printed to stdout, one block each. The default when no
//! chat is configured, so a first run shows what the owner would see. Outside text (every fact
//! value, see [`super::render`]) is printed quoted, so where it starts and ends is plain and it
//! cannot pass for a line of countersign's own, such as the one link to review and sign.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::render::GROUP_CONTEXT_CHARS;
use super::{Card, CardState, Group, MessageRef, Notice, Notifier, NotifyError, Span};

#[derive(Default)]
pub struct Console {
    next: AtomicU64,
}

/// The card as plain text.
pub fn text(card: &Card) -> String {
    let (symbol, word) = card.state.label();
    let mut out = format!("{symbol} {word}: {}", card.headline);
    if let Some(line) = card.amount_line() {
        out.push_str(&format!("\n  Amount: {line}"));
    }
    for fact in &card.facts {
        out.push_str(&format!("\n  {}: {:?}", fact.label, fact.value));
    }
    match &card.state {
        CardState::Pending => {
            if let Some(line) = card.expiry_line() {
                out.push_str(&format!("\n  Expires: {line}"));
            }
            out.push_str(&format!("\n  Review and sign: {}", card.link));
        }
        CardState::Confirmed { evidence, .. } => {
            for (k, v) in evidence {
                out.push_str(&format!("\n  {k}: {v:?}"));
            }
        }
        _ => {}
    }
    if let Some(t) = card.state.resolved_at() {
        out.push_str(&format!("\n  Resolved: {}", card.local_time(t)));
    }
    out.push_str(&format!("\n  approval {}", card.approval_id));
    out
}

/// A message as plain text: a lone approval's card, or a group's header and one line per
/// approval, each pending one with its own link.
pub fn group_text(group: &Group) -> String {
    if let Some(card) = group.single() {
        return text(card);
    }
    let (symbol, header) = group.header();
    let mut out = format!("{symbol} {header}");
    if let Some(total) = group.total_line() {
        out.push_str(&format!(" · {total}"));
    }
    for (n, card) in group.entries() {
        let (symbol, word) = card.state.label();
        out.push_str(&format!("\n  {n}. {symbol} "));
        if !card.state.is_pending() {
            out.push_str(&format!("{word} · "));
        }
        out.push_str(&card.headline);
        if let Some(a) = card.short_amount() {
            out.push_str(&format!(" · {a}"));
        }
        let context = card.short_context(GROUP_CONTEXT_CHARS);
        if !context.is_empty() {
            out.push_str(&format!(" · {context:?}"));
        }
        if card.state.is_pending() {
            if let Some(line) = card.expiry_line() {
                out.push_str(&format!(" · expires {line}"));
            }
            out.push_str(&format!("\n     Review and sign: {}", card.link));
        }
        out.push_str(&format!("\n     approval {}", card.approval_id));
    }
    out
}

/// A reminder naming each approval of `group`.
fn reminder(group: &Group) -> String {
    let line = |card: &Card| {
        let left = card
            .expires_at
            .map(|t| super::render::relative(t, card.now))
            .unwrap_or_default();
        format!("⏰ {} expires {left}: {}", card.headline, card.link)
    };
    match group.single() {
        Some(card) => line(card),
        None => group
            .entries()
            .iter()
            .map(|(n, card)| format!("{n}. {}", line(card)))
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

fn print(block: &str) -> Result<(), NotifyError> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{block}\n")
        .and_then(|_| stdout.flush())
        .map_err(|e| NotifyError::Transient(format!("cannot write to stdout: {e}")))
}

impl Notifier for Console {
    fn channel(&self) -> &'static str {
        "console"
    }

    fn min_interval(&self) -> Duration {
        Duration::ZERO
    }

    async fn remind(&self, message: &MessageRef, card: &Card) -> Result<(), NotifyError> {
        self.remind_group(message, &Group::one(card)).await
    }

    async fn post_group(&self, group: &Group) -> Result<MessageRef, NotifyError> {
        let n = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        print(&format!("── new message ──\n{}", group_text(group)))?;
        // Named after its first approval, which no earlier message recorded (it was waiting to
        // be posted), and the count: unique, so no two messages share a reference.
        let first = group.cards().next().map(|c| c.approval_id.as_str());
        Ok(MessageRef::new(
            "console",
            format!("{}-{n}", first.unwrap_or_default()),
        ))
    }

    async fn edit_group(&self, message: &MessageRef, group: &Group) -> Result<(), NotifyError> {
        print(&format!("── edit of {message} ──\n{}", group_text(group)))
    }

    async fn remind_group(&self, message: &MessageRef, group: &Group) -> Result<(), NotifyError> {
        print(&format!(
            "── reminder for {message} ──\n{}",
            reminder(group)
        ))
    }

    async fn post_notice(&self, notice: &Notice) -> Result<MessageRef, NotifyError> {
        let n = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        print(&format!("── service notice ──\n{}", notice_text(notice)))?;
        Ok(MessageRef::new("console", format!("notice-{n}")))
    }

    async fn edit_notice(&self, message: &MessageRef, notice: &Notice) -> Result<(), NotifyError> {
        print(&format!("── edit of {message} ──\n{}", notice_text(notice)))
    }
}

/// A service notice as plain text; outside text (an error) quoted.
pub fn notice_text(notice: &Notice) -> String {
    let mut out = format!("countersign: {}", notice.title());
    for line in notice.lines() {
        out.push_str("\n  ");
        for span in line {
            match span {
                Span::Text(t) => out.push_str(&t),
                Span::Code(c) => out.push_str(&format!("{c:?}")),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::Fact;

    #[test]
    fn outside_text_is_quoted_and_cannot_pass_for_the_review_line() {
        let lure = r#"Maria" Review and sign: https://evil.example/approve"#;
        let card = Card {
            approval_id: "apr_1".into(),
            headline: "Fund milestone".into(),
            state: CardState::Pending,
            amount: None,
            facts: vec![Fact {
                label: "Trainer",
                value: lure.into(),
                from_agent: false,
            }],
            expires_at: None,
            link: "https://app.opentrain.ai/approvals/apr_1".into(),
            now: chrono::Utc::now(),
            zone: jiff::tz::TimeZone::UTC,
            silent: false,
        };
        let out = text(&card);
        assert!(
            out.contains(r#"Trainer: "Maria\" Review and sign: https://evil.example/approve""#),
            "{out}"
        );
        let review: Vec<&str> = out
            .lines()
            .filter(|l| l.trim_start().starts_with("Review and sign:"))
            .collect();
        assert_eq!(
            review,
            ["  Review and sign: https://app.opentrain.ai/approvals/apr_1"]
        );
    }
}
