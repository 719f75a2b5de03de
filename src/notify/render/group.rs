//! A message's approvals (SPEC §3.9): one card per line, the header's count and total, and the
//! cuts a platform makes to fit its limits.

use super::{AmountSource, Card};
use crate::approval::Usd;
use crate::text::cut;

/// What one message shows: the approvals it holds, each with its line number (SPEC §3.9). A
/// lone approval is a group of one, which every platform renders exactly as the card on its own.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    entries: Vec<(usize, Card)>,
}

/// How much of an approval's context a line of a group shows at most; platforms cut further
/// when the whole message would not fit their limits.
pub const GROUP_CONTEXT_CHARS: usize = 80;

/// The cuts a platform tries, in order, until a group fits its limits: (context, approval id)
/// characters per line — ever shorter context first, then ids.
pub const GROUP_CUTS: [(usize, usize); 5] = [
    (GROUP_CONTEXT_CHARS, usize::MAX),
    (48, usize::MAX),
    (24, usize::MAX),
    (0, usize::MAX),
    (0, 24),
];

impl Group {
    /// The approvals of one message, numbered from 1 in line order.
    pub fn new(cards: Vec<Card>) -> Group {
        Group {
            entries: cards
                .into_iter()
                .enumerate()
                .map(|(i, c)| (i + 1, c))
                .collect(),
        }
    }

    /// A lone approval: a group of one.
    pub fn one(card: &Card) -> Group {
        Group::new(vec![card.clone()])
    }

    /// Keeps only the approvals `keep` accepts, with their line numbers (a reminder names only
    /// the approvals it is about).
    pub fn retain(&mut self, mut keep: impl FnMut(&Card) -> bool) {
        self.entries.retain(|(_, c)| keep(c));
    }

    /// The one card of a group of one.
    pub fn single(&self) -> Option<&Card> {
        match self.entries.as_slice() {
            [(_, card)] => Some(card),
            _ => None,
        }
    }

    /// Each approval with its line number.
    pub fn entries(&self) -> &[(usize, Card)] {
        &self.entries
    }

    pub fn cards(&self) -> impl Iterator<Item = &Card> {
        self.entries.iter().map(|(_, c)| c)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The message arrives silently unless one of its approvals must ring (quiet hours: the last
    /// message about an approval before it expires always rings).
    pub fn silent(&self) -> bool {
        self.cards().all(|c| c.silent)
    }

    /// How many are still waiting for the owner.
    pub fn waiting(&self) -> usize {
        self.cards().filter(|c| c.state.is_pending()).count()
    }

    /// The sum of the amounts shown, if any approval has one.
    pub fn total(&self) -> Option<Usd> {
        self.cards()
            .filter_map(|c| c.amount.as_ref().map(|a| a.value))
            .try_fold(None::<Usd>, |sum, v| match sum {
                None => Some(Some(v)),
                Some(s) => s.checked_add(v).map(Some),
            })
            .flatten()
    }

    /// The header's symbol and words: how many, and whether any still waits.
    pub fn header(&self) -> (&'static str, String) {
        let (n, waiting) = (self.len(), self.waiting());
        if waiting == n {
            ("🔔", format!("{n} approvals needed"))
        } else if waiting > 0 {
            ("🔔", format!("{n} approvals, {waiting} still waiting"))
        } else {
            ("☑️", format!("All {n} approvals resolved"))
        }
    }

    /// The header's amount: "$4,500.00 in total".
    pub fn total_line(&self) -> Option<String> {
        self.total().map(|t| format!("{t} in total"))
    }
}

impl Card {
    /// A short context for a line of a group, at most `max` characters (empty for 0): the
    /// contract or job, and the milestone. Outside text, like every fact value.
    pub fn short_context(&self, max: usize) -> String {
        let parts: Vec<&str> = self
            .facts
            .iter()
            .filter(|f| matches!(f.label, "Contract" | "Job" | "Milestone"))
            .map(|f| f.value.as_str())
            .collect();
        if max == 0 || parts.is_empty() {
            return String::new();
        }
        cut(&parts.join(" · "), max)
    }

    /// The amount as a line of a group shows it: `$450.00`, marked when only the agent says so.
    pub fn short_amount(&self) -> Option<String> {
        self.amount.as_ref().map(|a| match a.source {
            AmountSource::OpenTrain => a.value.to_string(),
            AmountSource::Agent => format!("{} (requested by agent)", a.value),
        })
    }

    /// What a group's button for this approval says: its line number, the action and the
    /// amount, at most `max` characters.
    pub fn button_label(&self, number: usize, max: usize) -> String {
        let mut label = format!("{number}. {}", self.headline);
        if let Some(a) = &self.amount {
            label.push_str(&format!(" · {}", a.value));
        }
        cut(&label, max)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{CardState, fixtures};
    use super::*;

    #[test]
    fn a_group_counts_totals_and_says_when_all_are_resolved() {
        let mut group = fixtures::worst_group(3);
        assert_eq!(group.total().unwrap().to_string(), "$2,999,999,999.97");
        assert_eq!(group.header().1, "3 approvals needed");
        assert!(group.silent());
        let mut cards: Vec<Card> = group.cards().cloned().collect();
        cards[1].state = CardState::Declined { resolved_at: None };
        cards[2].silent = false;
        group = Group::new(cards.clone());
        assert_eq!(group.header().1, "3 approvals, 2 still waiting");
        assert!(!group.silent(), "one that must ring rings the message");
        for c in &mut cards {
            c.state = CardState::Expired { resolved_at: None };
        }
        assert_eq!(
            Group::new(cards).header(),
            ("☑️", "All 3 approvals resolved".into())
        );
        let mut some = fixtures::worst_group(4);
        some.retain(|c| c.approval_id.starts_with('2'));
        assert_eq!(some.entries()[0].0, 3, "a reminder keeps the line numbers");
        assert!(some.single().is_some());
    }
}
