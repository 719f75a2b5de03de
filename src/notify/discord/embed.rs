//! The embed that shows one approval: a title that says what is asked and the amount, one
//! field per piece of context, the expiry (UTC and Discord's live relative timestamp), the
//! approval id in the footer, a colour for the status (amber pending, green confirmed, red
//! declined, grey otherwise) and, while pending, a link button (style 5) to the approval: the only
//! link in the message.
//!
//! Every value is cut to Discord's limits (title 256, field name 256, field value 1024, 25 fields,
//! 6000 in all), long values sharing what the short ones leave, so an approval is never refused
//! for its size. Text countersign did not write is shown as code ([`super::markdown`]).

use serenity::all::{Colour, CreateActionRow, CreateButton, CreateEmbed, CreateEmbedFooter};

use super::markdown::{chars, cut, escape_markdown, inline_code};
use crate::notify::render::{AmountSource, GROUP_CUTS as CUTS, clean, format_utc};
use crate::notify::{Card, CardState, Group};

/// Embed colours by status.
pub const AMBER: u32 = 0xF5A623;
pub const GREEN: u32 = 0x2ECC71;
pub const RED: u32 = 0xE74C3C;
pub const GREY: u32 = 0x95A5A6;

/// Discord's limits on an embed (documented; the API refuses a message that exceeds them).
pub const MAX_TITLE: usize = 256;
pub const MAX_FIELDS: usize = 25;
pub const MAX_FIELD_NAME: usize = 256;
pub const MAX_FIELD_VALUE: usize = 1024;
pub const MAX_FOOTER: usize = 2048;
/// What the footer is cut to (an approval id is short; the rest of the budget is the fields').
const FOOTER_CHARS: usize = 256;
pub const MAX_EMBED_TOTAL: usize = 6000;

pub const MAX_CONTENT: usize = 2000;
/// Discord's limits on components: action rows, link buttons in a row, a button's label.
pub const MAX_ROWS: usize = 5;
pub const MAX_ROW_BUTTONS: usize = 5;
pub const MAX_LABEL: usize = 80;

const BUTTON_LABEL: &str = "Review and sign in OpenTrain";

/// A reminder naming every approval of `group` (one: exactly [`reminder_text`]) by its line in
/// the message it replies to, within Discord's 2000 characters of content.
pub fn group_reminder_text(group: &Group) -> String {
    if let Some(card) = group.single() {
        return reminder_text(card);
    }
    let head = format!(
        "⏰ **Reminder**: {} approvals still wait for you",
        group.len()
    );
    let line = |n: usize, card: &Card, id_chars: usize| {
        let mut out = format!("{n}\\. {}", escape_markdown(&card.headline, 100));
        if let Some(a) = &card.amount {
            out.push_str(&format!(" · {}", a.value));
        }
        if let Some(t) = card.expires_at {
            out.push_str(&format!(" expires <t:{}:R>", t.timestamp()));
        }
        out.push_str(&format!(
            " · approval {}",
            inline_code(&card.approval_id, id_chars)
        ));
        out
    };
    for (_, id_chars) in CUTS {
        let mut text = head.clone();
        for (n, card) in group.entries() {
            text.push('\n');
            text.push_str(&line(*n, card, id_chars));
        }
        if chars(&text) <= MAX_CONTENT {
            return text;
        }
    }
    // Still too long (it cannot be with 25 lines, but never refuse): name as many as fit.
    let mut lines = vec![head];
    let entries = group.entries();
    for (i, (n, card)) in entries.iter().enumerate() {
        let more = format!("\n… and {} more", entries.len() - i);
        let next = line(*n, card, 24);
        if chars(&lines.join("\n")) + 1 + chars(&next) + chars(&more) > MAX_CONTENT {
            lines.push(more.trim_start().to_string());
            break;
        }
        lines.push(next);
    }
    cut(&lines.join("\n"), MAX_CONTENT)
}

/// A group's buttons: one link per approval still pending, labelled with its line number,
/// action and amount, five to a row (at most 25: `grouping.max_batch` is at most that). A lone
/// approval keeps its card's one button.
pub(super) fn group_components(group: &Group) -> Vec<CreateActionRow> {
    if let Some(card) = group.single() {
        return components(card);
    }
    let buttons: Vec<CreateButton> = group
        .entries()
        .iter()
        .filter(|(_, card)| card.state.is_pending())
        .take(MAX_ROWS * MAX_ROW_BUTTONS)
        .map(|(n, card)| CreateButton::new_link(&card.link).label(card.button_label(*n, MAX_LABEL)))
        .collect();
    // No row left removes the buttons from an edited message.
    buttons
        .chunks(MAX_ROW_BUTTONS)
        .map(|row| CreateActionRow::Buttons(row.to_vec()))
        .collect()
}

/// The embed for a message: a lone approval's card as on its own, or a group's header as the
/// title and one field per approval.
pub fn group_embed(group: &Group) -> CreateEmbed {
    build(EmbedView::of_group(group))
}

pub fn reminder_text(card: &Card) -> String {
    let mut out = format!("⏰ **Reminder**: {}", escape_markdown(&card.headline, 100));
    if let Some(a) = &card.amount {
        out.push_str(&format!(" · {}", a.value));
    }
    if let Some(t) = card.expires_at {
        out.push_str(&format!(
            " expires <t:{}:R> ({})",
            t.timestamp(),
            format_utc(t)
        ));
    }
    out.push_str(&format!(
        " · approval {}",
        escape_markdown(&card.approval_id, 200)
    ));
    out
}

pub(super) fn components(card: &Card) -> Vec<CreateActionRow> {
    if card.state.is_pending() {
        vec![CreateActionRow::Buttons(vec![
            CreateButton::new_link(&card.link).label(BUTTON_LABEL),
        ])]
    } else {
        // An empty list removes the button from an edited message.
        Vec::new()
    }
}

pub fn colour(state: &CardState) -> u32 {
    match state {
        CardState::Pending => AMBER,
        CardState::Confirmed { .. } => GREEN,
        CardState::Declined { .. } => RED,
        CardState::Expired { .. } | CardState::Superseded { .. } | CardState::Other { .. } => GREY,
    }
}

/// The embed for `card`, within Discord's limits.
pub fn embed(card: &Card) -> CreateEmbed {
    build(EmbedView::of(card))
}

fn build(view: EmbedView) -> CreateEmbed {
    CreateEmbed::new()
        .title(view.title)
        .colour(Colour::new(view.colour))
        .fields(view.fields)
        .footer(CreateEmbedFooter::new(view.footer))
}

/// A group's colour: amber while any approval waits, else the colour all share, else grey.
fn group_colour(group: &Group) -> u32 {
    let mut colours = group.cards().map(|c| colour(&c.state));
    let first = colours.next().unwrap_or(GREY);
    if group.waiting() > 0 {
        AMBER
    } else if colours.all(|c| c == first) {
        first
    } else {
        GREY
    }
}

/// The embed's text, rendered and cut to Discord's limits.
#[derive(Debug, Clone, PartialEq)]

pub struct EmbedView {
    pub title: String,
    pub colour: u32,
    pub fields: Vec<(String, String, bool)>,
    pub footer: String,
}

/// A field value before rendering, so that it can be rendered again shorter.
enum Text {
    /// Our own text (amounts, times, timestamp markup): shown as is.
    Ours(String),
    /// Anyone else's words, and ids: verbatim, as inline code.
    Code(String),
}

impl Text {
    fn render(&self, max: usize) -> String {
        match self {
            Text::Ours(s) => cut(s, max),
            Text::Code(s) => inline_code(s, max),
        }
    }
}

impl EmbedView {
    pub fn of(card: &Card) -> EmbedView {
        let (symbol, word) = card.state.label();
        let amount = card.amount.as_ref().map(|a| a.value.to_string());
        let (prefix, suffix) = {
            let prefix = if card.state.is_pending() {
                format!("{symbol} ")
            } else {
                // The word of an undocumented status is OpenTrain's, not ours.
                format!("{symbol} {} · ", escape_markdown(&word, MAX_TITLE / 2))
            };
            let suffix = amount.map(|a| format!(" · {a}")).unwrap_or_default();
            (prefix, suffix)
        };
        let room = MAX_TITLE.saturating_sub(chars(&prefix) + chars(&suffix));
        let title = cut(
            &format!("{prefix}{}{suffix}", escape_markdown(&card.headline, room)),
            MAX_TITLE,
        );

        let mut fields: Vec<(String, Text, bool)> = Vec::new();
        if let Some(line) = card.amount_line() {
            let line = match card.amount.as_ref().map(|a| a.source) {
                Some(AmountSource::Agent) => format!("{line} ⚠️"),
                _ => line,
            };
            fields.push(("Amount".into(), Text::Ours(line), false));
        }
        // Every piece of context is someone else's words (the agent's, or a title or a name
        // written on OpenTrain): all of it is shown as code.
        for fact in &card.facts {
            fields.push((
                fact.label.to_string(),
                Text::Code(fact.value.clone()),
                false,
            ));
        }
        match &card.state {
            CardState::Pending => {
                if let Some(t) = card.expires_at {
                    // A UTC time everyone reads the same, and Discord's live "in 3 hours".
                    let value = format!("{} (<t:{}:R>)", format_utc(t), t.timestamp());
                    fields.push(("Expires".into(), Text::Ours(value), false));
                }
            }
            CardState::Confirmed { evidence, .. } => {
                for (k, v) in evidence {
                    // Discord refuses a field without a name.
                    let name = escape_markdown(k, MAX_FIELD_NAME);
                    let name = if name.trim().is_empty() {
                        "Result".to_string()
                    } else {
                        name
                    };
                    fields.push((name, Text::Code(v.clone()), true));
                }
            }
            CardState::Superseded { by } => {
                let mut value = "a newer hire request for the same proposal".to_string();
                if let Some(by) = by {
                    value.push_str(&format!(" ({})", inline_code(&clean(by, 120), 200)));
                }
                fields.push(("Replaced by".into(), Text::Ours(value), false));
            }
            _ => {}
        }
        if let Some(t) = card.state.resolved_at() {
            fields.push(("Resolved".into(), Text::Ours(format_utc(t)), false));
        }
        fields.truncate(MAX_FIELDS);

        let footer = cut(&format!("approval {}", card.approval_id), FOOTER_CHARS);
        let names: Vec<String> = fields
            .iter()
            .map(|(n, _, _)| cut(n, MAX_FIELD_NAME))
            .collect();
        let fixed = chars(&title) + chars(&footer) + names.iter().map(|n| chars(n)).sum::<usize>();
        let budget = MAX_EMBED_TOTAL.saturating_sub(fixed);
        let full: Vec<String> = fields
            .iter()
            .map(|(_, v, _)| v.render(MAX_FIELD_VALUE))
            .collect();
        let cap = fair_cap(&full.iter().map(|v| chars(v)).collect::<Vec<_>>(), budget);
        let fields = fields
            .iter()
            .zip(names)
            .zip(full)
            .map(|(((_, text, inline), name), full)| {
                let value = if chars(&full) <= cap {
                    full
                } else {
                    text.render(cap.max(1))
                };
                (name, value, *inline)
            })
            .collect();
        EmbedView {
            title,
            colour: colour(&card.state),
            fields,
            footer,
        }
    }

    /// A group's embed within Discord's limits: a lone approval's card exactly as on its own;
    /// for more, each line's context, and then its approval id, are cut until the whole fits.
    pub fn of_group(group: &Group) -> EmbedView {
        if let Some(card) = group.single() {
            return EmbedView::of(card);
        }
        let mut view = EmbedView::group_at(group, CUTS[0].0, CUTS[0].1);
        for (context, id_chars) in CUTS.into_iter().skip(1) {
            if view.total_chars() <= MAX_EMBED_TOTAL {
                break;
            }
            view = EmbedView::group_at(group, context, id_chars);
        }
        view
    }

    fn group_at(group: &Group, context: usize, id_chars: usize) -> EmbedView {
        let (symbol, header) = group.header();
        let total = group
            .total_line()
            .map(|t| format!(" · {t}"))
            .unwrap_or_default();
        let title = cut(&format!("{symbol} {header}{total}"), MAX_TITLE);
        let fields = group
            .entries()
            .iter()
            .take(MAX_FIELDS)
            .map(|(n, card)| {
                let (symbol, word) = card.state.label();
                let mut name = format!("{n}. {symbol} ");
                if !card.state.is_pending() {
                    name.push_str(&format!("{} · ", escape_markdown(&word, 60)));
                }
                name.push_str(&escape_markdown(&card.headline, 100));
                if let Some(a) = card.short_amount() {
                    name.push_str(&format!(" · {a}"));
                }
                let mut lines = Vec::new();
                let context = card.short_context(context);
                if !context.is_empty() {
                    lines.push(inline_code(&context, MAX_FIELD_VALUE / 2));
                }
                match (&card.state, card.expires_at, card.state.resolved_at()) {
                    (CardState::Pending, Some(t), _) => lines.push(format!(
                        "Expires {} (<t:{}:R>)",
                        format_utc(t),
                        t.timestamp()
                    )),
                    (_, _, Some(t)) => lines.push(format!("Resolved {}", format_utc(t))),
                    _ => {}
                }
                lines.push(format!(
                    "approval {}",
                    inline_code(&card.approval_id, id_chars.saturating_add(8))
                ));
                (
                    cut(&name, MAX_FIELD_NAME),
                    cut(&lines.join("\n"), MAX_FIELD_VALUE),
                    false,
                )
            })
            .collect();
        EmbedView {
            title,
            colour: group_colour(group),
            fields,
            footer: format!("{} approvals in this message", group.len()),
        }
    }

    /// The characters Discord counts towards the 6000 limit.
    pub fn total_chars(&self) -> usize {
        chars(&self.title)
            + chars(&self.footer)
            + self
                .fields
                .iter()
                .map(|(n, v, _)| chars(n) + chars(v))
                .sum::<usize>()
    }
}

/// The largest per-value length at which all values fit in `budget` (values shorter than it
/// are kept whole): the long values share what the short ones leave.
fn fair_cap(lengths: &[usize], budget: usize) -> usize {
    if lengths.iter().sum::<usize>() <= budget {
        return usize::MAX;
    }
    let mut sorted = lengths.to_vec();
    sorted.sort_unstable();
    let mut left = budget;
    for (i, &len) in sorted.iter().enumerate() {
        let rest = sorted.len() - i;
        if len * rest > left {
            return left / rest;
        }
        left -= len;
    }
    usize::MAX
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::approval::Usd;
    use crate::notify::Fact;
    use crate::notify::render::{Amount, AmountSource};

    fn card(state: CardState) -> Card {
        let now = Utc.with_ymd_and_hms(2026, 6, 12, 10, 0, 0).unwrap();
        Card {
            approval_id: "apr_123".into(),
            headline: "Fund milestone".into(),
            state,
            amount: Some(Amount {
                value: Usd::from_cents(45000),
                source: AmountSource::OpenTrain,
                fees: None,
            }),
            facts: vec![
                Fact {
                    label: "Contract",
                    value: "Spanish *Sentiment* Labeling".into(),
                    from_agent: false,
                },
                Fact {
                    label: "Agent's note",
                    value: "@everyone **bold** [link](https://evil.example) <@123>".into(),
                    from_agent: true,
                },
            ],
            expires_at: Some(now + chrono::Duration::hours(72)),
            link: "https://app.opentrain.test/approvals/apr_123".into(),
            now,
            zone: jiff::tz::TimeZone::UTC,
            silent: false,
        }
    }

    fn value<'a>(view: &'a EmbedView, name: &str) -> &'a str {
        &view
            .fields
            .iter()
            .find(|(n, _, _)| n == name)
            .unwrap_or_else(|| panic!("no field {name}: {view:?}"))
            .1
    }

    #[test]
    fn pending_card_shows_amount_context_expiry_and_id() {
        let view = EmbedView::of(&card(CardState::Pending));
        assert_eq!(view.title, "🔔 Fund milestone · $450.00");
        assert_eq!(view.colour, AMBER);
        assert_eq!(value(&view, "Amount"), "$450.00 (from OpenTrain)");
        assert_eq!(value(&view, "Contract"), "`Spanish *Sentiment* Labeling`");
        let expires = value(&view, "Expires");
        assert!(
            expires.starts_with("2026-06-15 10:00 UTC (<t:"),
            "{expires}"
        );
        assert!(expires.ends_with(":R>)"), "{expires}");
        assert_eq!(view.footer, "approval apr_123");
        assert_eq!(components(&card(CardState::Pending)).len(), 1);
    }

    #[test]
    fn colour_and_button_follow_the_status() {
        let confirmed = CardState::Confirmed {
            resolved_at: None,
            evidence: vec![("invoiceId".into(), "inv_77".into())],
        };
        let view = EmbedView::of(&card(confirmed.clone()));
        assert_eq!(view.colour, GREEN);
        assert!(
            view.title.starts_with("✅ Confirmed · Fund milestone"),
            "{}",
            view.title
        );
        assert_eq!(value(&view, "invoiceId"), "`inv_77`");
        assert!(components(&card(confirmed)).is_empty());
        assert_eq!(colour(&CardState::Declined { resolved_at: None }), RED);
        assert_eq!(colour(&CardState::Expired { resolved_at: None }), GREY);
        assert_eq!(colour(&CardState::Superseded { by: None }), GREY);
    }

    #[test]
    fn agent_text_is_code_that_cannot_mention_format_or_link() {
        let view = EmbedView::of(&card(CardState::Pending));
        let note = value(&view, "Agent's note");
        assert_eq!(
            note,
            "`@\u{200B}everyone **bold** [link](https://evil.example) <@\u{200B}123>`"
        );
        assert!(!note.contains("@everyone") && !note.contains("<@1"));
    }

    #[test]
    fn a_worst_case_card_stays_within_discords_limits() {
        let hostile = "*_`|>@<[]():~#-\\".repeat(100);
        let mut c = card(CardState::Confirmed {
            resolved_at: Some(Utc::now()),
            evidence: (0..10)
                .map(|i| (format!("{i}{}", "_".repeat(40)), "`@".repeat(60)))
                .collect(),
        });
        c.headline = hostile.clone();
        c.approval_id = "a".repeat(3000);
        c.facts = (0..30)
            .map(|i| Fact {
                label: "Agent's note",
                value: hostile.clone(),
                from_agent: i % 2 == 0,
            })
            .collect();
        let view = EmbedView::of(&c);
        assert!(chars(&view.title) <= MAX_TITLE);
        assert!(chars(&view.footer) <= MAX_FOOTER);
        assert!(view.fields.len() <= MAX_FIELDS);
        for (name, value, _) in &view.fields {
            assert!(!name.is_empty() && chars(name) <= MAX_FIELD_NAME, "{name}");
            assert!(
                !value.is_empty() && chars(value) <= MAX_FIELD_VALUE,
                "{value}"
            );
        }
        assert!(
            view.total_chars() <= MAX_EMBED_TOTAL,
            "{}",
            view.total_chars()
        );
        // Values were shared fairly, not dropped: each field still shows something.
        assert!(view.fields.iter().all(|(_, v, _)| chars(v) > 20));
        // And a cut code span is still closed, with nothing able to mention.
        for (_, value, _) in &view.fields {
            assert!(!value.contains("@<") && !value.contains("@e"), "{value}");
        }
        let json = serde_json::to_value(embed(&c)).unwrap();
        assert_eq!(json["fields"].as_array().unwrap().len(), view.fields.len());
    }

    #[test]
    fn a_group_of_25_of_the_worst_stays_within_discords_limits() {
        let group = crate::notify::render::fixtures::worst_group(25);
        let view = EmbedView::of_group(&group);
        assert_eq!(view.fields.len(), MAX_FIELDS);
        assert!(
            view.total_chars() <= MAX_EMBED_TOTAL,
            "{}",
            view.total_chars()
        );
        assert!(chars(&view.title) <= MAX_TITLE);
        for (name, value, _) in &view.fields {
            assert!(!name.is_empty() && chars(name) <= MAX_FIELD_NAME, "{name}");
            assert!(
                !value.is_empty() && chars(value) <= MAX_FIELD_VALUE,
                "{value}"
            );
            assert!(!value.contains("@e") && !value.contains("@<"), "{value}");
        }
        let rows = group_components(&group);
        assert_eq!(rows.len(), MAX_ROWS);
        let json = serde_json::to_value(&rows).unwrap();
        for row in json.as_array().unwrap() {
            let buttons = row["components"].as_array().unwrap();
            assert_eq!(buttons.len(), MAX_ROW_BUTTONS);
            for b in buttons {
                assert!(chars(b["label"].as_str().unwrap()) <= MAX_LABEL);
            }
        }
        assert!(chars(&group_reminder_text(&group)) <= MAX_CONTENT);
    }

    #[test]
    fn fair_cap_shares_the_budget() {
        assert_eq!(fair_cap(&[10, 10], 100), usize::MAX);
        assert_eq!(fair_cap(&[10, 1000, 1000], 1010), 500);
        assert_eq!(fair_cap(&[0, 0], 0), usize::MAX);
    }
}
