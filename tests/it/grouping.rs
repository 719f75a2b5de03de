//! Bursts (SPEC §3.9): waiting approvals go out together, one message of up to
//! `grouping.max_batch`, and each approval in it keeps its own life — its line and its button
//! follow it, across a restart too, within every limit of Telegram and Discord.
//!
//! To make a burst wait, the chat holds the first post back with a 429: everything submitted
//! meanwhile is verified and waits to be posted when the chat lets go, as in a real burst.

use std::collections::HashMap;
use std::time::Duration;

use chrono::Utc;
use countersign::Settings;
use countersign_fakes::telegram::FakeMessage;
use serde_json::Value;

use crate::support::*;

/// How long the chat holds the first post back (a 429's `retry_after`), in seconds.
const HOLD_SECS: u32 = 2;

async fn grouped(min_batch: usize, max_batch: usize) -> TestApp {
    spawn_app_with(Options {
        grouping: Some((min_batch, max_batch)),
        ..Options::default()
    })
    .await
}

fn link(id: &str) -> String {
    format!("{APP_URL}/approvals/{id}")
}

/// The message's buttons as (label, url).
fn buttons(m: &FakeMessage) -> Vec<(String, String)> {
    let Some(keyboard) = &m.reply_markup else {
        return Vec::new();
    };
    keyboard["inline_keyboard"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row.as_array().unwrap().iter())
        .map(|b| {
            (
                b["text"].as_str().unwrap().to_string(),
                b["url"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn links(m: &FakeMessage) -> Vec<String> {
    buttons(m).into_iter().map(|(_, url)| url).collect()
}

/// The line of a group message that names `id`.
fn line_of<'a>(m: &'a FakeMessage, id: &str) -> &'a str {
    let marker = format!("approval {id}");
    m.text
        .lines()
        .find(|l| l.ends_with(&marker))
        .unwrap_or_else(|| panic!("no line for {id} in {:?}", m.text))
}

/// `message` as it is once `check` holds for it.
async fn once_it(
    app: &TestApp,
    message: &FakeMessage,
    what: &str,
    check: impl Fn(&FakeMessage) -> bool,
) -> FakeMessage {
    eventually(&format!("the group message {what}"), || async {
        app.telegram
            .messages(CHAT)
            .into_iter()
            .find(|m| m.message_id == message.message_id && check(m))
    })
    .await
}

/// A line's number, as `3.` (lines follow the order the approvals were verified in).
fn number(line: &str) -> &str {
    line.split_once(' ').unwrap().0
}

/// A fund request ($450) expiring `expires_in` from now (OpenTrain's own 72 h when `None`).
fn fund(app: &TestApp, tag: &str, expires_in: Option<chrono::Duration>) -> Value {
    let mut body = app.fund_request(&format!("ctr_{tag}"), &format!("ms_{tag}"));
    if let Some(d) = expires_in {
        let id = approval_id(&body);
        app.opentrain.set_expires_at(&id, Utc::now() + d);
        body["approval"] = app.opentrain.approval(&id).unwrap();
    }
    body
}

/// Submits `bodies` while the Telegram chat holds the first post back, and waits until every
/// one is verified: they all wait to be posted together. Returns their ids in order.
async fn submit_held(app: &TestApp, bodies: &[Value]) -> Vec<String> {
    app.telegram.force_retry_after("sendMessage", 1, HOLD_SECS);
    submit_verified(app, bodies).await
}

async fn submit_verified(app: &TestApp, bodies: &[Value]) -> Vec<String> {
    let mut ids = Vec::new();
    for body in bodies {
        assert_eq!(app.submit(body).await.0, 202);
        ids.push(approval_id(body));
    }
    for id in &ids {
        eventually(&format!("{id} verified"), || async {
            (app.approval(id).await["status"] == "pending").then_some(())
        })
        .await;
    }
    ids
}

/// The Telegram messages, once every approval of `ids` has its link in one.
async fn posted(app: &TestApp, ids: &[String]) -> Vec<FakeMessage> {
    eventually("every approval's link in the chat", || async {
        let msgs = app.telegram.messages(CHAT);
        let shown: Vec<String> = msgs.iter().flat_map(links).collect();
        ids.iter()
            .all(|id| shown.contains(&link(id)))
            .then_some(msgs)
    })
    .await
}

/// The one message holding every approval of `ids`, once posted.
async fn group_message(app: &TestApp, ids: &[String]) -> FakeMessage {
    let msgs = posted(app, ids).await;
    let holding: Vec<&FakeMessage> = msgs
        .iter()
        .filter(|m| ids.iter().any(|id| links(m).contains(&link(id))))
        .collect();
    assert_eq!(holding.len(), 1, "not one message: {holding:#?}");
    holding[0].clone()
}

#[tokio::test]
async fn a_burst_goes_out_in_messages_of_at_most_max_batch() {
    let app = grouped(4, 10).await;
    let bodies: Vec<Value> = (0..25).map(|i| fund(&app, &i.to_string(), None)).collect();
    let ids = submit_held(&app, &bodies).await;
    let msgs = posted(&app, &ids).await;
    let mut sizes: Vec<usize> = msgs.iter().map(|m| links(m).len()).collect();
    sizes.sort_unstable();
    assert_eq!(sizes, [5, 10, 10], "{msgs:#?}");
    for id in &ids {
        let holding = msgs
            .iter()
            .filter(|m| m.text.contains(&format!("approval {id}")));
        assert_eq!(holding.count(), 1, "{id} is not in exactly one message");
    }
    // Only the 429 the test forced: the chat's pace was kept.
    assert_eq!(app.telegram.rate_limited_count(), 1);

    let full = msgs.iter().find(|m| links(m).len() == 10).unwrap();
    let header = full.text.lines().next().unwrap();
    assert_eq!(header, "🔔 10 approvals needed · $4,500.00 in total");
    assert_eq!(full.text.lines().count(), 11, "{}", full.text);
    for (n, (label, url)) in buttons(full).iter().enumerate() {
        assert_eq!(label, &format!("{}. Fund milestone · $450.00", n + 1));
        let id = url.rsplit('/').next().unwrap();
        let line = line_of(full, id);
        assert!(
            line.starts_with(&format!("{}. 🔔 Fund milestone · $450.00 · ", n + 1)),
            "{line}"
        );
        assert!(
            line.contains("Spanish Sentiment Labeling Contract"),
            "{line}"
        );
        assert!(line.contains(" · expires "), "{line}");
    }
    // Outside text stays code in a group too.
    let code: Vec<&Value> = full
        .entities
        .iter()
        .filter(|e| e["type"] == "code")
        .collect();
    assert_eq!(code.len(), 10);
}

#[tokio::test]
async fn a_lone_approval_and_fewer_than_min_batch_are_posted_on_their_own() {
    let app = grouped(4, 10).await;
    let ids = submit_verified(&app, &[fund(&app, "a", None)]).await;
    let lone = group_message(&app, &ids).await;
    assert!(
        lone.text.starts_with("🔔 Fund milestone · $450.00\n"),
        "{}",
        lone.text
    );
    assert_eq!(
        buttons(&lone),
        [("Review and sign in OpenTrain".to_string(), link(&ids[0]))]
    );
    // Three waiting: below min_batch, so three messages of their own.
    let bodies: Vec<Value> = (0..3).map(|i| fund(&app, &format!("b{i}"), None)).collect();
    let ids = submit_held(&app, &bodies).await;
    let msgs = posted(&app, &ids).await;
    assert_eq!(msgs.len(), 4);
    for m in &msgs {
        assert_eq!(buttons(m).len(), 1);
        assert!(!m.text.contains("approvals needed"), "{}", m.text);
    }
}

#[tokio::test]
async fn one_approval_of_a_group_resolving_changes_only_its_line_and_button() {
    let app = grouped(4, 10).await;
    let bodies: Vec<Value> = (0..4).map(|i| fund(&app, &i.to_string(), None)).collect();
    let ids = submit_held(&app, &bodies).await;
    let before = group_message(&app, &ids).await;
    assert_eq!(links(&before).len(), 4);

    app.opentrain.resolve(&ids[1], "confirmed", None);
    let after = once_it(&app, &before, "shows the outcome", |m| links(m).len() == 3).await;
    assert_eq!(app.telegram.messages(CHAT).len(), 1, "nothing new posted");
    assert_eq!(
        after.text.lines().next().unwrap(),
        "🔔 4 approvals, 3 still waiting · $1,800.00 in total"
    );
    let resolved = line_of(&after, &ids[1]);
    assert!(
        resolved.starts_with(&format!(
            "{} ✅ Confirmed · Fund milestone · $450.00 · ",
            number(line_of(&before, &ids[1]))
        )),
        "{resolved}"
    );
    assert!(!resolved.contains("expires"), "{resolved}");
    for id in [&ids[0], &ids[2], &ids[3]] {
        assert_eq!(line_of(&after, id), line_of(&before, id));
    }
    let kept: Vec<(String, String)> = buttons(&before)
        .into_iter()
        .filter(|(_, url)| *url != link(&ids[1]))
        .collect();
    assert_eq!(buttons(&after), kept);
}

#[tokio::test]
async fn when_every_approval_of_a_group_has_resolved_the_header_says_so() {
    let app = grouped(4, 10).await;
    let bodies: Vec<Value> = (0..4).map(|i| fund(&app, &i.to_string(), None)).collect();
    let ids = submit_held(&app, &bodies).await;
    let posted = group_message(&app, &ids).await;
    let outcomes = [
        ("confirmed", "✅ Confirmed"),
        ("declined", "❌ Declined"),
        ("expired", "⌛ Expired"),
        ("declined", "❌ Declined"),
    ];
    for (id, (status, _)) in ids.iter().zip(outcomes) {
        app.opentrain.resolve(id, status, None);
    }
    let done = once_it(&app, &posted, "shows every outcome", |m| {
        m.text.starts_with("☑️ All 4 approvals resolved")
    })
    .await;
    assert_eq!(
        done.text.lines().next().unwrap(),
        "☑️ All 4 approvals resolved · $1,800.00 in total"
    );
    assert!(done.reply_markup.is_none(), "buttons left: {done:?}");
    assert_eq!(app.telegram.messages(CHAT).len(), 1);
    for (id, (_, shown)) in ids.iter().zip(outcomes) {
        let line = line_of(&done, id);
        let n = number(line_of(&posted, id));
        assert!(line.starts_with(&format!("{n} {shown} · ")), "{line}");
    }
}

/// `approval_id -> message_ref` on `channel`, read from the store file.
fn message_refs(app: &TestApp, channel: &str) -> HashMap<String, Option<String>> {
    let db = rusqlite::Connection::open(&app.store_path).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    db.prepare("SELECT approval_id, message_ref FROM deliveries WHERE channel = ?1")
        .unwrap()
        .query_map([channel], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[tokio::test]
async fn a_crash_between_a_group_post_and_its_record_repeats_one_message_and_no_approval_is_in_two()
{
    let app = grouped(4, 10).await;
    let bodies: Vec<Value> = (0..5).map(|i| fund(&app, &i.to_string(), None)).collect();
    let ids = submit_held(&app, &bodies).await;
    let first = group_message(&app, &ids).await;
    no_due_work(&app).await;
    let mut app = app;
    app.stop().await;
    // What a crash in the instant after the send leaves: the message is in the chat, the store
    // never recorded it (the claim's lease dies with the process).
    {
        let db = rusqlite::Connection::open(&app.store_path).unwrap();
        db.busy_timeout(Duration::from_secs(5)).unwrap();
        db.execute(
            "UPDATE deliveries SET message_ref = NULL, shown_version = 0, reminded_seq = 0,
                 posted_at = NULL, due = 1, lease_until = 9999999999999",
            [],
        )
        .unwrap();
    }
    let app = app.restart().await;
    let msgs = eventually("the group posted again", || async {
        let m = app.telegram.messages(CHAT);
        (m.len() >= 2).then_some(m)
    })
    .await;
    no_due_work(&app).await;
    assert_eq!(app.telegram.messages(CHAT).len(), 2, "more than one repeat");
    let again = &msgs[1];
    let mut a = links(&first);
    let mut b = links(again);
    a.sort();
    b.sort();
    assert_eq!(a, b, "the repeat holds the same approvals");
    // Every approval is in exactly one live message: the repeat, which the store now holds.
    let refs = message_refs(&app, "telegram");
    let live = format!("{CHAT}:{}", again.message_id);
    for id in &ids {
        assert_eq!(refs[id].as_deref(), Some(live.as_str()), "{id}");
    }
    // And only that message follows the approvals from now on.
    app.opentrain.resolve(&ids[0], "declined", None);
    eventually("the live message shows the outcome", || async {
        let m = app.telegram.messages(CHAT);
        (links(&m[1]).len() == 4).then_some(())
    })
    .await;
    no_due_work(&app).await;
    let m = app.telegram.messages(CHAT);
    assert_eq!(m[0].edits, 0, "the orphan was edited");
    assert_eq!(links(&m[0]).len(), 5);
}

/// A title no message could show whole, full of what Discord and Telegram treat as markup.
fn hostile(i: usize) -> String {
    format!(
        "{i} **Spanish** `Sentiment` @everyone <@123> [link](https://evil.example) {}",
        "_~|>#".repeat(60)
    )
}

#[tokio::test]
async fn a_group_of_25_fits_every_limit_of_discord_and_telegram() {
    let app = spawn_app_with(Options {
        discord: Some(DiscordMode::Channel),
        grouping: Some((4, 25)),
        ..Options::default()
    })
    .await;
    let bodies: Vec<Value> = (0..25)
        .map(|i| {
            let (c, m) = (format!("ctr_{i}"), format!("ms_{i}"));
            app.opentrain.add_simple_contract(
                &c,
                &hostile(i),
                &hostile(i),
                &[(m.as_str(), &hostile(i), 123456.78, "NOT_FUNDED")],
            );
            app.opentrain
                .create_approval("milestone_fund", Some(&c), Some(&m), None)
        })
        .collect();
    app.discord.force_rate_limit(1, f64::from(HOLD_SECS), false);
    let ids = submit_held(&app, &bodies).await;

    let tg = group_message(&app, &ids).await;
    assert_eq!(links(&tg).len(), 25);
    assert!(tg.text.encode_utf16().count() <= 4096);
    assert!(!tg.entities.iter().any(|e| e["type"] == "url"
        || e["type"] == "mention"
        || e["type"] == "text_link" && e["url"].as_str().is_some_and(|u| u.contains("evil"))));

    let dc = eventually("the Discord group message", || async {
        app.discord
            .messages(DC_CHANNEL)
            .into_iter()
            .find(|m| !m.components.is_empty())
    })
    .await;
    let embed = &dc.embeds[0];
    let fields = embed["fields"].as_array().unwrap();
    assert_eq!(fields.len(), 25);
    let rows = &dc.components;
    assert_eq!(rows.len(), 5);
    let urls: Vec<&str> = rows
        .iter()
        .flat_map(|r| r["components"].as_array().unwrap())
        .map(|b| b["url"].as_str().unwrap())
        .collect();
    assert_eq!(urls.len(), 25);
    for id in &ids {
        assert!(urls.contains(&link(id).as_str()), "{id}");
    }
    // The fake refuses anything over Discord's limits (400); nothing was refused.
    assert_eq!(refused(&app), 0);
    let chars = |v: &Value| v.as_str().map(|s| s.chars().count()).unwrap_or(0);
    let total = chars(&embed["title"])
        + chars(&embed["footer"]["text"])
        + fields
            .iter()
            .map(|f| chars(&f["name"]) + chars(&f["value"]))
            .sum::<usize>();
    assert!(total <= 6000, "{total}");
    for (_, text) in dc.rendered_text() {
        assert!(!text.contains("@everyone"), "{text}");
    }

    // One resolves: its field says so and its button goes, on both.
    app.opentrain.resolve(&ids[7], "confirmed", None);
    let edited = eventually("the Discord group edited", || async {
        let m = app
            .discord
            .messages(DC_CHANNEL)
            .into_iter()
            .find(|m| m.id == dc.id)?;
        (m.edits >= 1).then_some(m)
    })
    .await;
    let buttons: usize = edited
        .components
        .iter()
        .map(|r| r["components"].as_array().unwrap().len())
        .sum();
    assert_eq!(buttons, 24);
    let name = edited.embeds[0]["fields"][7]["name"].as_str().unwrap();
    assert!(
        name.starts_with("8. ✅ Confirmed · Fund milestone"),
        "{name}"
    );
    eventually("the Telegram group edited", || async {
        let m = app.telegram.messages(CHAT);
        m.iter()
            .any(|m| m.message_id == tg.message_id && links(m).len() == 24)
            .then_some(())
    })
    .await;
    assert_eq!(refused(&app), 0);
}

/// Requests the fake Discord refused as malformed or over a limit.
fn refused(app: &TestApp) -> usize {
    app.discord
        .requests()
        .iter()
        .filter(|c| c.status == 400)
        .count()
}

/// `HH:MM-HH:MM` on a UTC clock, from `from` to `to` hours after now.
fn range_from_now(from: i64, to: i64) -> String {
    let hm = |h: i64| (Utc::now() + chrono::Duration::hours(h)).format("%H:%M");
    format!("{}-{}", hm(from), hm(to))
}

#[tokio::test]
async fn in_quiet_hours_a_group_is_one_message_that_rings_only_if_one_of_its_approvals_must() {
    let app = spawn_app_with(Options {
        grouping: Some((4, 10)),
        extra_toml: format!(
            "[owner]\nquiet_hours = \"{}\"\n[reminders]\nbefore_expiry = [\"24h\", \"1h\"]\n",
            range_from_now(-2, 2)
        ),
        ..Options::default()
    })
    .await;
    // 72 h left each: reminders are still to come, so the group is silent.
    let quiet: Vec<Value> = (0..4).map(|i| fund(&app, &format!("q{i}"), None)).collect();
    let quiet = submit_held(&app, &quiet).await;
    let first = group_message(&app, &quiet).await;
    assert!(
        first.disable_notification,
        "a group with reminders to come rang"
    );
    // One of these expires before any reminder: it must ring, so the group rings, once.
    let mut ringing: Vec<Value> = (0..3).map(|i| fund(&app, &format!("r{i}"), None)).collect();
    ringing.push(fund(&app, "r3", Some(chrono::Duration::minutes(30))));
    let ringing = submit_held(&app, &ringing).await;
    let second = group_message(&app, &ringing).await;
    assert!(
        !second.disable_notification,
        "the last message before expiry was silent"
    );
    assert_eq!(app.telegram.messages(CHAT).len(), 2);
}

#[tokio::test]
async fn a_reminder_replies_to_the_group_message_naming_its_approvals() {
    let app = spawn_app_with(Options {
        grouping: Some((4, 10)),
        extra_toml: "[reminders]\nbefore_expiry = [\"5s\"]\n".into(),
        ..Options::default()
    })
    .await;
    let expires = Utc::now() + chrono::Duration::seconds(12);
    let bodies: Vec<Value> = (0..4)
        .map(|i| {
            let mut body = app.fund_request(&format!("ctr_{i}"), &format!("ms_{i}"));
            let id = approval_id(&body);
            app.opentrain.set_expires_at(&id, expires);
            body["approval"] = app.opentrain.approval(&id).unwrap();
            body
        })
        .collect();
    let ids = submit_held(&app, &bodies).await;
    let group = group_message(&app, &ids).await;
    let reminder = eventually("the reminder", || async {
        app.telegram
            .messages(CHAT)
            .into_iter()
            .find(|m| m.message_id != group.message_id)
    })
    .await;
    assert!(
        reminder
            .text
            .starts_with("⏰ Reminder: 4 approvals still wait for you"),
        "{}",
        reminder.text
    );
    for id in &ids {
        assert!(reminder.text.contains(&format!("approval {id}")), "{id}");
    }
    let sent = app
        .telegram
        .requests()
        .into_iter()
        .filter(|c| c.method == "sendmessage" && c.status == 200)
        .find(|c| c.body.get("reply_parameters").is_some())
        .expect("the reminder replies");
    assert_eq!(
        sent.body["reply_parameters"]["message_id"],
        group.message_id
    );
    no_due_work(&app).await;
    assert_eq!(
        app.telegram
            .messages(CHAT)
            .iter()
            .filter(|m| m.message_id != group.message_id)
            .count(),
        1,
        "one reminder for the group, not one per approval"
    );
}

#[test]
fn grouping_keys_out_of_range_are_refused_at_start_up_naming_the_key() {
    let cases = [
        ("max_batch = 0", "grouping.max_batch"),
        ("max_batch = 26", "grouping.max_batch"),
        ("min_batch = 1", "grouping.min_batch"),
        ("min_batch = 11\nmax_batch = 10", "grouping.min_batch"),
        ("min_batch = -1", "grouping.min_batch"),
    ];
    for (lines, key) in cases {
        let toml = format!("[hook]\ntoken = \"t\"\n[grouping]\n{lines}\n");
        let err = Settings::from_toml_and_env(Some(&toml), HashMap::new()).expect_err(&toml);
        assert!(err.to_string().contains(key), "{toml:?}: {err}");
    }
    let settings = |lines: &str| {
        let toml = format!("[hook]\ntoken = \"t\"\n[grouping]\n{lines}\n");
        Settings::from_toml_and_env(Some(&toml), HashMap::new())
            .unwrap()
            .grouping
    };
    let default = settings("");
    assert_eq!((default.min_batch, default.max_batch), (4, 10));
    let off = settings("min_batch = 0\nmax_batch = 25");
    assert!(!off.is_on());
    assert!(settings("min_batch = 25\nmax_batch = 25").is_on());
}

#[tokio::test]
async fn a_superseded_hire_in_a_group_shows_it_on_its_line_and_loses_its_button() {
    let app = grouped(4, 10).await;
    app.opentrain
        .add_simple_proposal("prop_1", "Spanish Sentiment Labeling", "Maria G.");
    let mut bodies: Vec<Value> = (0..3).map(|i| fund(&app, &i.to_string(), None)).collect();
    bodies.push(crate::reliability::hire(&app, "prop_1", 300).await);
    let ids = submit_held(&app, &bodies).await;
    let group = group_message(&app, &ids).await;
    assert_eq!(links(&group).len(), 4);
    // The agent asks again with other terms: the newer request replaces the grouped one, and
    // goes out on its own (it waits alone).
    let newer = crate::reliability::hire(&app, "prop_1", 450).await;
    let newer = submit_verified(&app, &[newer]).await;
    let alone = group_message(&app, &newer).await;
    assert_ne!(alone.message_id, group.message_id);
    let edited = once_it(&app, &group, "shows the hire superseded", |m| {
        links(m).len() == 3
    })
    .await;
    let line = line_of(&edited, &ids[3]);
    assert!(line.contains("↪ Superseded · Hire"), "{line}");
    assert!(!links(&edited).contains(&link(&ids[3])));
    assert_eq!(app.telegram.messages(CHAT).len(), 2);
}

#[tokio::test]
async fn in_a_group_chat_a_burst_waits_one_interval_for_company_and_goes_out_in_full_messages() {
    const GROUP: i64 = -1_001_234_567_890;
    let app = spawn_app_with(Options {
        grouping: Some((4, 10)),
        telegram_chat: Some(GROUP),
        // The daemon's default pace; a group's messages are precious (20 a minute).
        telegram_interval_ms: 1_000,
        ..Options::default()
    })
    .await;
    app.telegram.set_group_limit(20, Duration::from_secs(60));
    let bodies: Vec<Value> = (0..25).map(|i| fund(&app, &i.to_string(), None)).collect();
    let mut ids = Vec::new();
    for body in &bodies {
        assert_eq!(app.submit(body).await.0, 202);
        ids.push(approval_id(body));
    }
    let msgs = eventually("every approval's link in the group", || async {
        let msgs = app.telegram.messages(GROUP);
        let shown: Vec<String> = msgs.iter().flat_map(links).collect();
        ids.iter()
            .all(|id| shown.contains(&link(id)))
            .then_some(msgs)
    })
    .await;
    let sizes: Vec<usize> = msgs.iter().map(|m| links(m).len()).collect();
    // Without the wait the first approval verified would go alone, and the burst would take a
    // fourth message of the group's twenty a minute.
    assert_eq!(sizes, [10, 10, 5], "{msgs:#?}");
    assert_eq!(app.telegram.rate_limited_count(), 0);
}
