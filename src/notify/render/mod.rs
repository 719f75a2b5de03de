//! What a message says, independent of the platform: a [`Card`] built from the stored approval.
//!
//! The invariant every platform relies on: the only text in a card that does not come from
//! countersign itself is in [`Fact::value`], in the confirmed evidence values and in
//! `Superseded::by`. Those are outside text — the agent's words, or fields other people wrote on
//! OpenTrain (contract and job titles, milestone names, a trainer's display name) — and are
//! cleaned and cut here; each platform must then show them so that they can never become a link,
//! a mention or markup, including the links and mentions a chat app finds in plain text on its own
//! (`evil.example/x`, `https://…`, `@name`, `a@b.co`): Telegram shows them as code. Everything
//! else (headline, labels, amounts, times, ids, OpenTrain's enum values) is countersign's own text
//! or reduced here to characters that cannot link ([`identifier`]).
//!
//! A message that holds several approvals is a [`Group`] of cards (`group.rs`).

use chrono::{DateTime, Utc};

use crate::approval::{Kind, Status, Usd, parse_time};
use crate::store::ApprovalRecord;
use crate::text::cut;

mod group;
pub use group::{GROUP_CONTEXT_CHARS, GROUP_CUTS, Group};

/// OpenTrain's fees on a hire: 10 % marketplace fee plus a $9.95 contract initiation fee.
const HIRE_FEE_PERCENT: u32 = 10;
const HIRE_INITIATION_FEE_CENTS: i64 = 995;

/// Longest a single value may be on any platform (Discord's field value limit is 1024).
pub const MAX_VALUE_CHARS: usize = 300;
/// A free-text note from the agent may be longer.
pub const MAX_NOTE_CHARS: usize = 800;

#[derive(Debug, Clone, PartialEq)]
pub enum CardState {
    Pending,
    Confirmed {
        resolved_at: Option<DateTime<Utc>>,
        /// The result's ids (invoice, payment intent, contract…), as OpenTrain gave them.
        evidence: Vec<(String, String)>,
    },
    Declined {
        resolved_at: Option<DateTime<Utc>>,
    },
    Expired {
        resolved_at: Option<DateTime<Utc>>,
    },
    Superseded {
        by: Option<String>,
    },
    /// A status OpenTrain did not document, shown raw.
    Other {
        status: String,
        resolved_at: Option<DateTime<Utc>>,
    },
}

impl CardState {
    pub fn is_pending(&self) -> bool {
        matches!(self, CardState::Pending)
    }

    /// The status line's symbol and word.
    pub fn label(&self) -> (&'static str, String) {
        match self {
            CardState::Pending => ("🔔", "Approval needed".into()),
            CardState::Confirmed { .. } => ("✅", "Confirmed".into()),
            CardState::Declined { .. } => ("❌", "Declined".into()),
            CardState::Expired { .. } => ("⌛", "Expired".into()),
            CardState::Superseded { .. } => ("↪", "Superseded".into()),
            CardState::Other { status, .. } => {
                ("❔", format!("Status: {}", identifier(status, 40)))
            }
        }
    }

    pub fn resolved_at(&self) -> Option<DateTime<Utc>> {
        match self {
            CardState::Confirmed { resolved_at, .. }
            | CardState::Declined { resolved_at }
            | CardState::Expired { resolved_at }
            | CardState::Other { resolved_at, .. } => *resolved_at,
            CardState::Pending | CardState::Superseded { .. } => None,
        }
    }
}

/// Where the amount comes from: OpenTrain's own records, or only the agent's word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AmountSource {
    OpenTrain,
    Agent,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Amount {
    pub value: Usd,
    pub source: AmountSource,
    /// For a hire: the fees OpenTrain adds and the total charged on confirmation.
    pub fees: Option<HireFees>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HireFees {
    pub marketplace: Usd,
    pub initiation: Usd,
    pub total: Usd,
}

/// One line of context. The label is countersign's; the value is always outside text (see the
/// module documentation): the agent's words when `from_agent`, else what OpenTrain holds, most of
/// it written by third parties. Platforms render every value so that it cannot link or format.
#[derive(Debug, Clone, PartialEq)]
pub struct Fact {
    pub label: &'static str,
    pub value: String,
    pub from_agent: bool,
}

/// Everything a message shows, for every platform.
#[derive(Debug, Clone, PartialEq)]
pub struct Card {
    pub approval_id: String,
    /// The request in words ("Fund milestone"), or the raw type if OpenTrain sent an unknown one.
    pub headline: String,
    pub state: CardState,
    pub amount: Option<Amount>,
    pub facts: Vec<Fact>,
    pub expires_at: Option<DateTime<Utc>>,
    /// Always `<app_url>/approvals/<id>`, built here, never taken from input.
    pub link: String,
    /// When the card was rendered, for "in 71 h".
    pub now: DateTime<Utc>,
    /// The owner's time zone (`owner.timezone`), which times are shown in where the platform
    /// does not show its own local timestamps.
    pub zone: jiff::tz::TimeZone,
    /// Sent without a sound or a vibration (quiet hours, [`crate::quiet`]). Only posts and
    /// reminders ring at all; edits never do.
    pub silent: bool,
}

/// Makes outside text safe to place on one line: control characters become spaces, runs of
/// whitespace collapse, and the result is cut to `max` characters with an ellipsis.
pub fn clean(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max * 4));
    let mut last_space = true;
    let mut count = 0;
    for c in s.chars() {
        let c = if c.is_control() || c.is_whitespace() {
            ' '
        } else {
            c
        };
        // Bidirectional overrides and zero-width characters can disguise text; drop them.
        if matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
        {
            continue;
        }
        if c == ' ' {
            if last_space {
                continue;
            }
            last_space = true;
        } else {
            last_space = false;
        }
        if count == max {
            let trimmed = out.trim_end().len();
            out.truncate(trimmed);
            out.push('…');
            return out;
        }
        out.push(c);
        count += 1;
    }
    out.trim_end().to_string()
}

/// An OpenTrain enum value or key shown raw (`milestone_fund`, `invoiceId`): letters, digits, `_`
/// and `-` are kept, anything else becomes `_`, so that no value can read as a link, a mention or
/// markup on any platform.
pub fn identifier(s: &str, max: usize) -> String {
    let safe: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    cut(&safe, max)
}

pub fn format_utc(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// "in 71 h", "in 35 min", "3 h ago".
pub fn relative(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (t - now).num_seconds();
    let (future, secs) = (secs >= 0, secs.unsigned_abs());
    let text = if secs >= 2 * 3600 {
        format!("{} h", secs / 3600)
    } else if secs >= 60 {
        format!("{} min", secs / 60)
    } else {
        "less than a minute".to_string()
    };
    if future {
        format!("in {text}")
    } else {
        format!("{text} ago")
    }
}

fn usd_text(s: &str) -> Option<Usd> {
    Usd::from_json(&serde_json::from_str::<serde_json::Value>(s).ok()?)
}

fn date_only(s: &str) -> String {
    match parse_time(s) {
        Some(t) => t.format("%Y-%m-%d").to_string(),
        None => clean(s, 40),
    }
}

impl Card {
    /// Builds the card for a stored approval. `app_url` has no trailing slash.
    pub fn from_record(record: &ApprovalRecord, app_url: &str, now: DateTime<Utc>) -> Card {
        let upstream = record.upstream.as_ref();
        let kind_raw = upstream.map(|u| u.kind.as_str()).unwrap_or(&record.kind);
        let kind = Kind::parse(kind_raw);
        let headline = match kind {
            Some(k) => k.headline().to_string(),
            None => identifier(kind_raw, 40),
        };
        let resolved_at = upstream.and_then(|u| u.resolved_at());
        let state = match &record.status {
            Status::Pending | Status::Verifying => CardState::Pending,
            Status::Confirmed => CardState::Confirmed {
                resolved_at,
                evidence: upstream
                    .and_then(|u| u.result.as_ref())
                    .map(evidence)
                    .unwrap_or_default(),
            },
            Status::Declined => CardState::Declined { resolved_at },
            Status::Expired => CardState::Expired { resolved_at },
            Status::Superseded => CardState::Superseded {
                by: record.superseded_by.clone(),
            },
            Status::Rejected => CardState::Other {
                status: "rejected".into(),
                resolved_at: None,
            },
            Status::Other(s) => CardState::Other {
                status: s.clone(),
                resolved_at,
            },
        };

        let ctx = record.context.clone().unwrap_or_default();
        let agent = &record.agent;
        let mut facts = Vec::new();
        let mut fact = |label: &'static str, value: Option<&String>, max: usize, from_agent| {
            if let Some(v) = value {
                let v = clean(v, max);
                if !v.is_empty() {
                    facts.push(Fact {
                        label,
                        value: v,
                        from_agent,
                    });
                }
            }
        };

        let amount = match (kind, ctx.amount.as_deref().and_then(usd_text)) {
            (_, Some(value)) => Some(Amount {
                value,
                source: AmountSource::OpenTrain,
                fees: None,
            }),
            (Some(Kind::ProposalHire), None) => agent
                .milestone
                .as_ref()
                .and_then(|m| m.amount.as_deref())
                .and_then(usd_text)
                .map(|value| Amount {
                    value,
                    source: AmountSource::Agent,
                    fees: hire_fees(value),
                }),
            _ => None,
        };

        fact(
            "Contract",
            ctx.contract_title.as_ref(),
            MAX_VALUE_CHARS,
            false,
        );
        fact("Job", ctx.job_title.as_ref(), MAX_VALUE_CHARS, false);
        if let Some(name) = &ctx.milestone_name {
            let mut v = clean(name, MAX_VALUE_CHARS);
            if let Some(due) = &ctx.milestone_due {
                v.push_str(&format!(", due {}", date_only(due)));
            }
            fact("Milestone", Some(&v), MAX_VALUE_CHARS + 20, false);
        }
        if let Some(n) = ctx.funded_milestones {
            fact("Funded milestones", Some(&n.to_string()), 10, false);
        }
        fact("Trainer", ctx.trainer.as_ref(), MAX_VALUE_CHARS, false);
        fact("Candidate's bid", ctx.bid.as_ref(), MAX_VALUE_CHARS, false);
        if let Some(m) = &agent.milestone {
            fact(
                "Requested milestone",
                m.name.as_ref(),
                MAX_VALUE_CHARS,
                true,
            );
            fact(
                "Requested scope",
                m.description.as_ref(),
                MAX_VALUE_CHARS,
                true,
            );
            fact("Requested due date", m.due_date.as_ref(), 40, true);
        }
        fact("Missing", ctx.missing.as_ref(), MAX_VALUE_CHARS, false);
        fact("Agent", agent.agent.as_ref(), 100, true);
        fact("Agent's note", agent.note.as_ref(), MAX_NOTE_CHARS, true);

        let expires_at = upstream
            .and_then(|u| u.expires_at())
            .or_else(|| record.submitted.expires_at());

        Card {
            approval_id: record.id.to_string(),
            headline,
            state,
            amount,
            facts,
            expires_at,
            link: format!("{app_url}/approvals/{}", record.id),
            now,
            zone: jiff::tz::TimeZone::UTC,
            silent: false,
        }
    }

    /// "$450.00 (OpenTrain)" or "$300.00 requested by the agent + fees = $339.95".
    pub fn amount_line(&self) -> Option<String> {
        let a = self.amount.as_ref()?;
        Some(match (&a.source, &a.fees) {
            (AmountSource::OpenTrain, _) => format!("{} (from OpenTrain)", a.value),
            (AmountSource::Agent, None) => format!("{} (requested by agent)", a.value),
            (AmountSource::Agent, Some(f)) => format!(
                "{} (requested by agent) + {} marketplace fee + {} contract fee = {}",
                a.value, f.marketplace, f.initiation, f.total
            ),
        })
    }

    /// `t` on the owner's clock, the zone named: "2026-06-15 19:00 JST".
    pub fn local_time(&self, t: DateTime<Utc>) -> String {
        crate::quiet::format_in(&self.zone, t)
    }

    /// "2026-06-15 19:00 JST (in 71 h)".
    pub fn expiry_line(&self) -> Option<String> {
        let t = self.expires_at?;
        Some(format!(
            "{} ({})",
            self.local_time(t),
            relative(t, self.now)
        ))
    }
}

fn hire_fees(amount: Usd) -> Option<HireFees> {
    let marketplace = amount.percent(HIRE_FEE_PERCENT)?;
    let initiation = Usd::from_cents(HIRE_INITIATION_FEE_CENTS);
    let total = amount.checked_add(marketplace)?.checked_add(initiation)?;
    Some(HireFees {
        marketplace,
        initiation,
        total,
    })
}

/// The scalar entries of a confirmed approval's `result`, sorted by key (`invoiceId` …).
fn evidence(result: &serde_json::Value) -> Vec<(String, String)> {
    let Some(map) = result.as_object() else {
        return Vec::new();
    };
    let mut out: Vec<(String, String)> = map
        .iter()
        .filter_map(|(k, v)| {
            let v = match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                _ => return None,
            };
            Some((identifier(k, 40), clean(&v, 120)))
        })
        .take(10)
        .collect();
    out.sort();
    out
}

/// Cards for the platforms' tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    /// A group of `n` pending approvals as long and hostile as they come: the longest ids,
    /// context full of markup, mentions and links, the largest amounts.
    pub fn worst_group(n: usize) -> Group {
        let now = Utc::now();
        let hostile = "*_`|>@everyone <@1> [x](https://evil.example) &<b>".repeat(20);
        Group::new(
            (0..n)
                .map(|i| Card {
                    approval_id: format!("{i}{}", "a".repeat(127)),
                    headline: "Release milestone payment".into(),
                    state: CardState::Pending,
                    amount: Some(Amount {
                        value: Usd::from_cents(99_999_999_999),
                        source: AmountSource::Agent,
                        fees: None,
                    }),
                    facts: ["Contract", "Milestone", "Agent's note"]
                        .into_iter()
                        .map(|label| Fact {
                            label,
                            value: clean(&hostile, MAX_VALUE_CHARS),
                            from_agent: true,
                        })
                        .collect(),
                    expires_at: Some(now + chrono::Duration::hours(71)),
                    link: format!("https://app.opentrain.ai/approvals/{i}"),
                    now,
                    zone: jiff::tz::TimeZone::UTC,
                    silent: true,
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_flattens_cuts_and_drops_invisible_characters() {
        assert_eq!(clean("  a\n\tb  ", 10), "a b");
        assert_eq!(clean("abcdef", 3), "abc…");
        assert_eq!(clean("a\u{202E}b\u{200B}c", 10), "abc");
        assert_eq!(clean("ééééé", 2), "éé…");
    }

    #[test]
    fn identifiers_keep_only_characters_that_cannot_link() {
        assert_eq!(identifier("milestone_fund", 40), "milestone_fund");
        assert_eq!(identifier("evil.example/@x", 40), "evil_example__x");
        assert_eq!(identifier("abcdef", 4), "abc…");
    }

    #[test]
    fn relative_times_read_naturally() {
        let now = Utc::now();
        assert_eq!(relative(now + chrono::Duration::hours(71), now), "in 71 h");
        assert_eq!(
            relative(now + chrono::Duration::minutes(35), now),
            "in 35 min"
        );
        assert_eq!(relative(now - chrono::Duration::hours(3), now), "3 h ago");
    }

    #[test]
    fn hire_fees_add_ten_percent_and_the_initiation_fee() {
        let f = hire_fees(Usd::from_cents(30000)).unwrap();
        assert_eq!(f.marketplace.to_string(), "$30.00");
        assert_eq!(f.total.to_string(), "$339.95");
    }
}
