//! Text nobody at countersign wrote, whatever it is, never becomes a link or a mention on
//! Discord: titles and names from OpenTrain, the agent's words, an undocumented type or status,
//! the keys and values of OpenTrain's result. The fake Discord's scanner says what Discord would
//! link or mention; the embed must hold none of it, and must stay within Discord's limits.

use countersign::notify::discord::{EmbedView, reminder_text};
use countersign::notify::{CardState, Fact};
use countersign_fakes::discord::autolinks;
use proptest::prelude::*;

use super::notifier::card;

/// Strings made of the pieces Discord turns into links, mentions and markup, and anything else.
fn hostile() -> impl Strategy<Value = String> {
    const PIECES: &[&str] = &[
        "https://",
        "http://",
        "steam://",
        "@everyone",
        "@here",
        "<@",
        "<@!",
        "<@&",
        "<#",
        "</",
        ">",
        ":",
        "`",
        "```",
        "\\",
        "[x](",
        ")",
        "\u{200B}",
        "\n",
        " ",
        "1",
        "42",
        "a.b",
        "/c",
    ];
    let piece = prop_oneof![
        3 => prop::sample::select(PIECES).prop_map(str::to_string),
        1 => any::<char>().prop_map(String::from),
    ];
    prop::collection::vec(piece, 0..30).prop_map(|pieces| pieces.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn discord_never_shows_a_link_or_mention_from_anyone_elses_text(
        title in hostile(),
        trainer in hostile(),
        note in hostile(),
        kind in hostile(),
        status in hostile(),
        key in hostile(),
        value in hostile(),
    ) {
        let fact = |label, value: &String, from_agent| Fact { label, value: value.clone(), from_agent };
        let mut c = card(CardState::Pending);
        c.headline = kind;
        c.facts = vec![
            fact("Contract", &title, false),
            fact("Trainer", &trainer, false),
            fact("Agent's note", &note, true),
        ];
        let states = [
            CardState::Pending,
            CardState::Other { status, resolved_at: None },
            CardState::Confirmed { resolved_at: None, evidence: vec![(key, value.clone())] },
            CardState::Superseded { by: Some(value) },
        ];
        for state in states {
            c.state = state;
            let view = EmbedView::of(&c);
            let mut texts = vec![view.title.clone(), reminder_text(&c)];
            for (name, value, _) in &view.fields {
                texts.push(name.clone());
                texts.push(value.clone());
            }
            for text in &texts {
                prop_assert!(autolinks(text).is_empty(), "{:?} in {:?}", autolinks(text), text);
            }
            prop_assert!(view.total_chars() <= 6000);
            prop_assert!(view.fields.iter().all(|(n, v, _)| !n.is_empty() && !v.is_empty()));
        }
    }
}
