//! Discord: the same end-to-end cases as Telegram, against the strict fake Discord REST server.
//! What the owner sees (one embed, edited in place, colour and button following the status),
//! DM and channel modes, both chats at once, neutralised agent text, 429s, deleted messages,
//! closed DMs, outages, and the token staying secret.

use std::time::Duration;

use chrono::Utc;
use countersign::approval::Usd;
use countersign::config::{DiscordSettings, DiscordTarget, Secret};
use countersign::notify::discord::Discord;
use countersign::notify::render::{Amount, AmountSource};
use countersign::notify::{Card, CardState, Fact, Notifier, NotifyError};
use countersign_fakes::FakeDiscord;
use countersign_fakes::discord::FakeDiscordMessage;
use serde_json::{Value, json};

use crate::support::*;

const AMBER: u64 = 0xF5A623;
const GREEN: u64 = 0x2ECC71;
const RED: u64 = 0xE74C3C;
const GREY: u64 = 0x95A5A6;

async fn discord_app(mode: DiscordMode) -> TestApp {
    spawn_app_with(Options {
        telegram: false,
        discord: Some(mode),
        ..Options::default()
    })
    .await
}

/// The channel the owner reads: the DM (once opened) or the configured channel.
fn owner_channel(app: &TestApp, mode: DiscordMode) -> Option<u64> {
    match mode {
        DiscordMode::Dm => app.discord.dm_channel_of(DC_OWNER),
        DiscordMode::Channel => Some(DC_CHANNEL),
    }
}

/// The owner's Discord channel, once it holds `n` messages.
async fn dc_messages(app: &TestApp, mode: DiscordMode, n: usize) -> Vec<FakeDiscordMessage> {
    eventually(&format!("{n} Discord message(s)"), || async {
        let m = app.discord.messages(owner_channel(app, mode)?);
        (m.len() >= n).then_some(m)
    })
    .await
}

/// The one embed of a message.
fn embed(m: &FakeDiscordMessage) -> &Value {
    assert_eq!(m.embeds.len(), 1, "one embed per message: {:?}", m.embeds);
    &m.embeds[0]
}

/// Every visible piece of text in the embed, one per line (title, fields, footer).
fn embed_text(m: &FakeDiscordMessage) -> String {
    let e = embed(m);
    let mut out = vec![e["title"].as_str().unwrap_or_default().to_string()];
    for f in e["fields"].as_array().into_iter().flatten() {
        out.push(format!(
            "{}: {}",
            f["name"].as_str().unwrap_or_default(),
            f["value"].as_str().unwrap_or_default()
        ));
    }
    out.push(e["footer"]["text"].as_str().unwrap_or_default().to_string());
    out.join("\n")
}

fn field<'a>(m: &'a FakeDiscordMessage, name: &str) -> &'a str {
    embed(m)["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == name)
        .unwrap_or_else(|| panic!("no field {name:?} in {}", embed_text(m)))["value"]
        .as_str()
        .unwrap()
}

/// The link buttons of a message, as (style, url, label).
fn buttons(m: &FakeDiscordMessage) -> Vec<(u64, String, String)> {
    m.components
        .iter()
        .flat_map(|row| row["components"].as_array().cloned().unwrap_or_default())
        .map(|b| {
            (
                b["style"].as_u64().unwrap(),
                b["url"].as_str().unwrap_or_default().to_string(),
                b["label"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Every request that carried a message (post or edit) said: mention no one.
fn assert_every_message_request_mentions_no_one(app: &TestApp) {
    let mut seen = 0;
    for r in app.discord.requests() {
        if r.path.contains("/messages") {
            let body = r.body.as_ref().expect("a JSON body");
            assert_eq!(body["allowed_mentions"]["parse"], json!([]), "{body}");
            seen += 1;
        }
    }
    assert!(seen > 0);
}

fn assert_no_mentions_allowed(m: &FakeDiscordMessage) {
    let allowed = m.allowed_mentions.as_ref().expect("allowed_mentions sent");
    assert_eq!(allowed["parse"], json!([]), "{allowed}");
    assert!(
        allowed
            .get("users")
            .is_none_or(|u| u.as_array().is_some_and(Vec::is_empty))
    );
    assert!(
        allowed
            .get("roles")
            .is_none_or(|r| r.as_array().is_some_and(Vec::is_empty))
    );
    assert_ne!(allowed["replied_user"], json!(true));
}

/// Posts the standard $450 funding request and returns its id and the posted message.
async fn posted(app: &TestApp, mode: DiscordMode) -> (String, FakeDiscordMessage) {
    let body = app.fund_request("ctr_1", "ms_1");
    let id = approval_id(&body);
    assert_eq!(app.submit(&body).await.0, 202);
    let msg = dc_messages(app, mode, 1).await.remove(0);
    (id, msg)
}

/// Waits until message `message_id` has been edited to show `word` in its title.
async fn edited_to(
    app: &TestApp,
    mode: DiscordMode,
    message_id: u64,
    word: &str,
) -> FakeDiscordMessage {
    eventually(&format!("the Discord message edited to {word}"), || async {
        app.discord
            .messages(owner_channel(app, mode)?)
            .into_iter()
            .find(|m| {
                m.id == message_id
                    && m.edits > 0
                    && m.embeds
                        .first()
                        .and_then(|e| e["title"].as_str())
                        .is_some_and(|t| t.contains(word))
            })
    })
    .await
}

fn message_posts(app: &TestApp) -> usize {
    app.discord
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/messages"))
        .count()
}

fn message_edits(app: &TestApp) -> usize {
    app.discord.count("PATCH", "/messages/")
}

#[tokio::test]
async fn discord_pending_message_shows_amount_context_expiry_and_a_link_button() {
    let app = discord_app(DiscordMode::Dm).await;
    let (id, msg) = posted(&app, DiscordMode::Dm).await;
    let e = embed(&msg);
    assert_eq!(e["title"], "🔔 Fund milestone · $450.00");
    assert_eq!(e["color"], AMBER);
    assert_eq!(e["footer"]["text"], format!("approval {id}"));
    assert!(
        e.get("url").is_none_or(Value::is_null),
        "no link but the button"
    );
    assert_eq!(field(&msg, "Amount"), "$450.00 (from OpenTrain)");
    assert_eq!(
        field(&msg, "Contract"),
        "Spanish Sentiment Labeling Contract"
    );
    assert!(field(&msg, "Milestone").starts_with("First labeling batch"));
    assert_eq!(field(&msg, "Trainer"), "Maria G.");
    let expires = field(&msg, "Expires");
    assert!(
        expires.contains(" UTC (<t:") && expires.ends_with(":R>)"),
        "{expires}"
    );
    assert_eq!(
        buttons(&msg),
        vec![(
            5,
            format!("{APP_URL}/approvals/{id}"),
            "Review and sign in OpenTrain".to_string()
        )]
    );
    assert!(msg.content.is_empty(), "{:?}", msg.content);
    assert_no_mentions_allowed(&msg);
    // The token travels only as the Authorization header.
    for r in app.discord.requests() {
        assert_eq!(
            r.authorization.as_deref(),
            Some(&*format!("Bot {DC_TOKEN}"))
        );
        assert!(!r.path.contains(DC_TOKEN));
    }
}

#[tokio::test]
async fn discord_confirmed_approval_is_edited_in_place_with_its_evidence() {
    let app = discord_app(DiscordMode::Dm).await;
    let (id, msg) = posted(&app, DiscordMode::Dm).await;
    app.opentrain.resolve(
        &id,
        "confirmed",
        Some(json!({"invoiceId": "inv_77", "paymentIntentId": "pi_88"})),
    );
    let edited = edited_to(&app, DiscordMode::Dm, msg.id, "Confirmed").await;
    let e = embed(&edited);
    assert!(
        e["title"].as_str().unwrap().starts_with("✅ Confirmed"),
        "{e}"
    );
    assert_eq!(e["color"], GREEN);
    let text = embed_text(&edited);
    for expected in [
        "inv_77",
        "pi_88",
        "$450.00",
        "First labeling batch",
        "Resolved: ",
        &format!("approval {id}"),
    ] {
        assert!(text.contains(expected), "{expected:?} missing from {text}");
    }
    assert!(!text.contains("Expires"), "{text}");
    assert!(
        edited.components.is_empty(),
        "the link button must be gone: {:?}",
        edited.components
    );
    assert_no_mentions_allowed(&edited);
    assert_every_message_request_mentions_no_one(&app);
    let dm = app.discord.dm_channel_of(DC_OWNER).unwrap();
    assert_eq!(
        app.discord.messages(dm).len(),
        1,
        "a new message instead of an edit"
    );
    assert_eq!(app.approval(&id).await["status"], "confirmed");
    settle().await;
    assert_eq!(message_posts(&app), 1);
    assert_eq!(message_edits(&app), 1);
}

#[tokio::test]
async fn discord_declined_approval_is_edited_in_place() {
    let app = discord_app(DiscordMode::Dm).await;
    let (id, msg) = posted(&app, DiscordMode::Dm).await;
    app.opentrain.resolve(&id, "declined", None);
    let edited = edited_to(&app, DiscordMode::Dm, msg.id, "Declined").await;
    let e = embed(&edited);
    assert!(e["title"].as_str().unwrap().starts_with("❌"), "{e}");
    assert_eq!(e["color"], RED);
    assert!(edited.components.is_empty());
    assert!(embed_text(&edited).contains("$450.00"));
    assert_eq!(message_posts(&app), 1);
}

#[tokio::test]
async fn discord_expired_approval_is_read_after_expires_at_and_edited_in_place() {
    let app = discord_app(DiscordMode::Dm).await;
    let body = app.fund_request("ctr_1", "ms_1");
    let id = approval_id(&body);
    app.opentrain
        .set_expires_at(&id, Utc::now() + chrono::Duration::milliseconds(1500));
    let mut body = body;
    body["approval"] = app.opentrain.approval(&id).unwrap();
    assert_eq!(app.submit(&body).await.0, 202);
    let msg = dc_messages(&app, DiscordMode::Dm, 1).await.remove(0);
    let edited = edited_to(&app, DiscordMode::Dm, msg.id, "Expired").await;
    let e = embed(&edited);
    assert!(e["title"].as_str().unwrap().starts_with("⌛"), "{e}");
    assert_eq!(e["color"], GREY);
    assert!(edited.components.is_empty());
    assert_eq!(app.approval(&id).await["status"], "expired");
    assert_eq!(message_posts(&app), 1);
}

#[tokio::test]
async fn discord_channel_mode_posts_to_the_channel_without_opening_a_dm() {
    let app = discord_app(DiscordMode::Channel).await;
    let (id, msg) = posted(&app, DiscordMode::Channel).await;
    assert_eq!(msg.channel_id, DC_CHANNEL);
    assert_eq!(app.discord.count("POST", "/users/@me/channels"), 0);
    assert_eq!(app.discord.dm_channel_of(DC_OWNER), None);
    app.opentrain.resolve(&id, "declined", None);
    let edited = edited_to(&app, DiscordMode::Channel, msg.id, "Declined").await;
    assert_eq!(embed(&edited)["color"], RED);
    assert_eq!(app.discord.messages(DC_CHANNEL).len(), 1);
}

#[tokio::test]
async fn discord_dm_channel_is_opened_once_and_remembered() {
    let app = discord_app(DiscordMode::Dm).await;
    for i in 0..3 {
        let body = app.fund_request(&format!("ctr_{i}"), &format!("ms_{i}"));
        assert_eq!(app.submit(&body).await.0, 202);
    }
    dc_messages(&app, DiscordMode::Dm, 3).await;
    assert_eq!(app.discord.count("POST", "/users/@me/channels"), 1);
}

#[tokio::test]
async fn telegram_and_discord_together_each_get_one_message_and_both_are_edited() {
    let app = spawn_app_with(Options {
        telegram: true,
        discord: Some(DiscordMode::Dm),
        ..Options::default()
    })
    .await;
    let body = app.fund_request("ctr_1", "ms_1");
    let id = approval_id(&body);
    assert_eq!(app.submit(&body).await.0, 202);
    let tg = messages(&app, 1).await.remove(0);
    let dc = dc_messages(&app, DiscordMode::Dm, 1).await.remove(0);
    app.opentrain
        .resolve(&id, "confirmed", Some(json!({"invoiceId": "inv_1"})));
    edited_to(&app, DiscordMode::Dm, dc.id, "Confirmed").await;
    eventually("the Telegram message edited to Confirmed", || async {
        app.telegram
            .messages(CHAT)
            .into_iter()
            .find(|m| m.message_id == tg.message_id && m.text.contains("Confirmed"))
    })
    .await;
    let view = eventually("both deliveries up to date", || async {
        let v = app.approval(&id).await;
        let d = v["deliveries"].as_array()?.clone();
        (d.len() == 2 && d.iter().all(|d| d["up_to_date"] == true)).then_some(v)
    })
    .await;
    let mut channels: Vec<&str> = view["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["channel"].as_str().unwrap())
        .collect();
    channels.sort();
    assert_eq!(channels, ["discord", "telegram"]);
    settle().await;
    assert_eq!(app.telegram.count("sendMessage"), 1);
    assert_eq!(app.telegram.messages(CHAT).len(), 1);
    assert_eq!(message_posts(&app), 1);
    assert_eq!(message_edits(&app), 1);
}

#[tokio::test]
async fn discord_agent_text_with_mentions_markdown_and_links_arrives_neutralised() {
    let app = discord_app(DiscordMode::Dm).await;
    let hostile =
        "@everyone **bold** [link](https://evil.example/pay) <@123> @here ||spoiler|| `code` # big";
    let body = with_agent(
        &app.fund_request("ctr_1", "ms_1"),
        "<@&456> _agent_",
        json!({"note": hostile}),
    );
    assert_eq!(app.submit(&body).await.0, 202);
    let msg = dc_messages(&app, DiscordMode::Dm, 1).await.remove(0);
    let note = field(&msg, "Agent's note");
    // Shown verbatim inside a code span that nothing in it can close (it holds a backtick, so
    // the span uses two), with every `@` broken by a zero-width space.
    let shown = hostile.replace('@', "@\u{200B}");
    assert_eq!(note, format!("``{shown}``"));
    assert_eq!(
        field(&msg, "Agent"),
        "`<@\u{200B}&456> _agent_`",
        "the agent's name is code too"
    );
    let raw = serde_json::to_string(&msg.embeds).unwrap();
    for forbidden in ["@everyone", "@here", "<@123>", "<@&456>"] {
        assert!(!raw.contains(forbidden), "{forbidden} in {raw}");
    }
    assert!(msg.content.is_empty());
    assert_no_mentions_allowed(&msg);
    // The only link is the approval button.
    let e = embed(&msg);
    assert!(e.get("url").is_none_or(Value::is_null));
    let links = buttons(&msg);
    assert_eq!(links.len(), 1);
    assert!(links[0].1.starts_with(APP_URL));
    assert_every_message_request_mentions_no_one(&app);
}

#[tokio::test]
async fn discord_hire_shows_the_agents_requested_amount_with_opentrains_fees() {
    let app = discord_app(DiscordMode::Dm).await;
    app.opentrain.add_simple_proposal(
        "prop_1",
        "Spanish Sentiment Labeling — Social Media",
        "Maria G.",
    );
    let body = app
        .opentrain
        .create_approval("proposal_hire", None, None, Some("prop_1"));
    let body = with_agent(
        &body,
        "hiring-agent",
        json!({"milestone": {"name": "Pilot batch", "description": "500 posts", "amount": 300, "dueDate": "2026-07-01"}}),
    );
    assert_eq!(app.submit(&body).await.0, 202);
    let msg = dc_messages(&app, DiscordMode::Dm, 1).await.remove(0);
    let text = embed_text(&msg);
    for expected in [
        "Hire · $300.00",
        "$300.00 (requested by agent)",
        "$30.00 marketplace fee",
        "$9.95 contract fee",
        "= $339.95",
        "Spanish Sentiment Labeling",
        "Maria G",
        "`Pilot batch`",
    ] {
        assert!(text.contains(expected), "{expected:?} missing from {text}");
    }
}

#[tokio::test]
async fn discord_429_is_waited_out_and_nothing_is_lost() {
    let app = discord_app(DiscordMode::Dm).await;
    app.discord.force_rate_limit(1, 1.0, false);
    let first = app.fund_request("ctr_1", "ms_1");
    let second = app.fund_request("ctr_2", "ms_2");
    assert_eq!(app.submit(&first).await.0, 202);
    assert_eq!(app.submit(&second).await.0, 202);
    let started = tokio::time::Instant::now();
    let msgs = dc_messages(&app, DiscordMode::Dm, 2).await;
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "retry_after was not honoured"
    );
    assert_eq!(msgs.len(), 2);
    assert_eq!(
        app.discord.rate_limited_count(),
        1,
        "a 429 storm: the app kept sending"
    );
    settle().await;
    assert_eq!(message_posts(&app), 3, "two posts and the one refused");
    assert_eq!(
        app.discord
            .messages(owner_channel(&app, DiscordMode::Dm).unwrap())
            .len(),
        2,
        "an approval was posted twice"
    );
}

#[tokio::test]
async fn discord_global_429_on_an_edit_is_waited_out() {
    let app = discord_app(DiscordMode::Channel).await;
    let (id, msg) = posted(&app, DiscordMode::Channel).await;
    app.discord.force_rate_limit(1, 1.0, true);
    let started = tokio::time::Instant::now();
    app.opentrain.resolve(&id, "declined", None);
    edited_to(&app, DiscordMode::Channel, msg.id, "Declined").await;
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(app.discord.rate_limited_count(), 1);
    assert_eq!(
        message_edits(&app),
        2,
        "the refused edit and the one after the wait"
    );
}

#[tokio::test]
async fn discord_sends_are_paced_so_a_burst_draws_no_429() {
    let app = discord_app(DiscordMode::Channel).await;
    let mut ids = Vec::new();
    for i in 0..12 {
        let body = app.fund_request(&format!("ctr_{i}"), &format!("ms_{i}"));
        ids.push(approval_id(&body));
        assert_eq!(app.submit(&body).await.0, 202);
    }
    let msgs = dc_messages(&app, DiscordMode::Channel, 12).await;
    assert_eq!(app.discord.rate_limited_count(), 0);
    for id in ids {
        let footer = format!("approval {id}");
        assert_eq!(
            msgs.iter()
                .filter(|m| embed(m)["footer"]["text"] == footer.as_str())
                .count(),
            1,
            "{id} not posted exactly once"
        );
    }
}

#[tokio::test]
async fn discord_a_deleted_message_is_marked_gone_and_never_reposted() {
    let app = discord_app(DiscordMode::Dm).await;
    let (id, msg) = posted(&app, DiscordMode::Dm).await;
    app.discord.delete_message(msg.channel_id, msg.id);
    app.opentrain.resolve(&id, "declined", None);
    let view = eventually("the delivery is marked gone", || async {
        let v = app.approval(&id).await;
        (v["deliveries"][0]["state"] == "gone").then_some(v)
    })
    .await;
    assert_eq!(view["status"], "declined");
    assert!(
        view["deliveries"][0]["last_error"]
            .as_str()
            .unwrap()
            .contains("10008"),
        "{view}"
    );
    settle().await;
    assert_eq!(message_posts(&app), 1, "re-posted a deleted message");
    assert_eq!(
        message_edits(&app),
        1,
        "retried an edit of a deleted message"
    );
}

#[tokio::test]
async fn discord_an_owner_with_closed_dms_fails_once_without_a_retry_loop() {
    let app = {
        let app = discord_app(DiscordMode::Dm).await;
        app.discord.close_dms(DC_OWNER);
        app
    };
    let body = app.fund_request("ctr_1", "ms_1");
    let id = approval_id(&body);
    assert_eq!(app.submit(&body).await.0, 202);
    let view = eventually("the delivery is marked failed", || async {
        let v = app.approval(&id).await;
        (v["deliveries"][0]["state"] == "failed").then_some(v)
    })
    .await;
    let error = view["deliveries"][0]["last_error"].as_str().unwrap();
    assert!(
        error.contains("50007") && error.contains("direct messages"),
        "{view}"
    );
    settle().await;
    assert_eq!(message_posts(&app), 1);
}

#[tokio::test]
async fn discord_a_refused_token_is_a_clear_configuration_error() {
    let app = discord_app(DiscordMode::Channel).await;
    app.discord.fail_next(1, 401, 0, "401: Unauthorized");
    let body = app.fund_request("ctr_1", "ms_1");
    let id = approval_id(&body);
    assert_eq!(app.submit(&body).await.0, 202);
    let view = eventually("the delivery is marked failed", || async {
        let v = app.approval(&id).await;
        (v["deliveries"][0]["state"] == "failed").then_some(v)
    })
    .await;
    let error = view["deliveries"][0]["last_error"].as_str().unwrap();
    assert!(error.contains("discord.bot_token"), "{view}");
    assert!(!error.contains(DC_TOKEN), "{view}");
    settle().await;
    assert_eq!(message_posts(&app), 1, "retried a refused token");
}

#[tokio::test]
async fn discord_outage_delays_but_loses_nothing() {
    let app = discord_app(DiscordMode::Channel).await;
    app.discord.fail_next(2, 502, 0, "Bad Gateway");
    let (id, _) = posted(&app, DiscordMode::Channel).await;
    assert_eq!(message_posts(&app), 3, "two 502s, then the post");
    // The fake holds the message a moment before the store records it.
    eventually("the post recorded", || async {
        (app.approval(&id).await["deliveries"][0]["posted"] == true).then_some(())
    })
    .await;
    settle().await;
    assert_eq!(app.discord.messages(DC_CHANNEL).len(), 1);
}

#[tokio::test]
async fn discord_an_agents_event_is_a_doorbell_that_rereads_at_once() {
    let app = spawn_app_with(Options {
        poll_interval_secs: 3600,
        telegram: false,
        discord: Some(DiscordMode::Dm),
        ..Options::default()
    })
    .await;
    let (id, msg) = posted(&app, DiscordMode::Dm).await;
    app.opentrain.resolve(&id, "declined", None);
    let event = json!({"id": "99", "type": "approval.confirmed", "apiVersion": "v1",
        "createdAt": "2026-06-12T10:05:00.000Z", "resourceId": id, "jobId": null,
        "data": {"approvalId": id, "status": "confirmed"}});
    let (status, answer) = app
        .post_json("/v1/events", Some(HOOK_TOKEN), json_body(event))
        .await;
    assert_eq!(status, 202, "{answer}");
    let edited = edited_to(&app, DiscordMode::Dm, msg.id, "Declined").await;
    assert!(!embed_text(&edited).contains("Confirmed"));
}

#[tokio::test]
async fn discord_restart_edits_the_same_message_without_reopening_the_dm() {
    let mut app = discord_app(DiscordMode::Dm).await;
    let (id, msg) = posted(&app, DiscordMode::Dm).await;
    app.stop().await;
    app.opentrain.resolve(&id, "confirmed", None);
    let app = app.restart().await;
    edited_to(&app, DiscordMode::Dm, msg.id, "Confirmed").await;
    assert_eq!(message_posts(&app), 1, "re-posted after restart");
    assert_eq!(
        app.discord.count("POST", "/users/@me/channels"),
        1,
        "the edit needs only the stored message reference"
    );
}

// ---- the notifier on its own, against the fake -------------------------------------------

fn settings(fake: &FakeDiscord, target: DiscordTarget) -> DiscordSettings {
    DiscordSettings {
        bot_token: Secret::new(DC_TOKEN),
        target,
        api_url: Some(fake.api_url().parse().unwrap()),
        min_send_interval: Duration::ZERO,
    }
}

fn card(state: CardState) -> Card {
    let now = Utc::now();
    Card {
        approval_id: "apr_dc_1".into(),
        headline: "Fund milestone".into(),
        state,
        amount: Some(Amount {
            value: Usd::from_cents(45000),
            source: AmountSource::OpenTrain,
            fees: None,
        }),
        facts: vec![Fact {
            label: "Agent",
            value: "a".into(),
            from_agent: true,
        }],
        expires_at: Some(now + chrono::Duration::hours(3)),
        link: format!("{APP_URL}/approvals/apr_dc_1"),
        now,
    }
}

fn message_ids(m: &countersign::notify::MessageRef) -> (u64, u64) {
    (m.chat.parse().unwrap(), m.message.parse().unwrap())
}

#[tokio::test]
async fn discord_notifier_reads_retry_after_from_the_429_itself() {
    let fake = FakeDiscord::start(DC_TOKEN, DC_OWNER, DC_CHANNEL).await;
    let discord = Discord::new(&settings(&fake, DiscordTarget::Channel(DC_CHANNEL))).unwrap();
    assert_eq!(discord.channel(), "discord");
    fake.force_rate_limit(1, 1.25, false);
    let err = discord.post(&card(CardState::Pending)).await.unwrap_err();
    assert!(
        matches!(err, NotifyError::RateLimited(d) if d == Duration::from_millis(1250)),
        "{err:?}"
    );
    fake.force_rate_limit(1, 3.5, true);
    let err = discord.post(&card(CardState::Pending)).await.unwrap_err();
    assert!(
        matches!(err, NotifyError::RateLimited(d) if d == Duration::from_millis(3500)),
        "{err:?}"
    );
    // A 429 that does not say how long (not Discord's body) is waited out conservatively, and
    // longer each time in a row.
    fake.fail_next(2, 429, 0, "You are being rate limited.");
    let first = discord.post(&card(CardState::Pending)).await.unwrap_err();
    let second = discord.post(&card(CardState::Pending)).await.unwrap_err();
    match (first, second) {
        (NotifyError::RateLimited(a), NotifyError::RateLimited(b)) => {
            assert!(a >= Duration::from_secs(1) && b > a, "{a:?} then {b:?}")
        }
        other => panic!("{other:?}"),
    }
    let message = discord
        .post(&card(CardState::Pending))
        .await
        .expect("posted");
    assert_eq!(message_ids(&message).0, DC_CHANNEL);
}

#[tokio::test]
async fn discord_notifier_posts_edits_and_reminds_in_reply() {
    let fake = FakeDiscord::start(DC_TOKEN, DC_OWNER, DC_CHANNEL).await;
    let discord = Discord::new(&settings(&fake, DiscordTarget::User(DC_OWNER))).unwrap();
    let pending = card(CardState::Pending);
    let message = discord.post(&pending).await.expect("posted");
    let (channel, id) = message_ids(&message);
    assert_eq!(Some(channel), fake.dm_channel_of(DC_OWNER));
    // A repeated post (its answer lost) comes back as the same message, not a second one.
    let again = discord.post(&pending).await.expect("posted again");
    assert_eq!(again, message);
    assert_eq!(fake.messages(channel).len(), 1);

    discord.remind(&message, &pending).await.expect("reminded");
    let msgs = fake.messages(channel);
    assert_eq!(msgs.len(), 2);
    assert!(msgs[1].content.contains("Reminder"), "{}", msgs[1].content);
    assert!(msgs[1].content.contains("<t:"), "{}", msgs[1].content);
    assert_no_mentions_allowed(&msgs[1]);
    assert_eq!(
        msgs[1].reply_to,
        Some(id),
        "the reminder replies to the approval"
    );

    let done = card(CardState::Declined {
        resolved_at: Some(Utc::now()),
    });
    discord.edit(&message, &done).await.expect("edited");
    discord
        .edit(&message, &done)
        .await
        .expect("an unchanged edit is a success");
    fake.delete_message(channel, id);
    let err = discord.edit(&message, &done).await.unwrap_err();
    assert!(matches!(err, NotifyError::Gone(_)), "{err:?}");
    // A reminder still reaches the owner when the original is gone.
    discord
        .remind(&message, &pending)
        .await
        .expect("reminded alone");
    assert_eq!(fake.messages(channel).last().unwrap().reply_to, None);
    assert_eq!(
        fake.count("POST", "/users/@me/channels"),
        1,
        "the DM channel is opened once"
    );
}

// ---- secrets -------------------------------------------------------------------------------

// current_thread (the default): every task of the app runs on this thread, so the scoped
// subscriber below sees their log lines.
#[tokio::test]
async fn discord_errors_and_logs_never_reveal_the_token() {
    let logs = capture_logs();

    // First Discord's address is a port nobody listens on: every send is a transport error.
    let dead = format!("{}/api/v10", closed_address());
    let app = spawn_app_with(Options {
        telegram: false,
        extra_toml: format!(
            "[discord]\nbot_token = \"{DC_TOKEN}\"\nuser_id = {DC_OWNER}\napi_url = \"{dead}\"\nmin_send_interval_ms = 10\n"
        ),
        ..Options::default()
    })
    .await;
    let body = app.fund_request("ctr_1", "ms_1");
    let id = approval_id(&body);
    assert_eq!(app.submit(&body).await.0, 202);
    let view = eventually("the delivery has failed at least once", || async {
        let v = app.approval(&id).await;
        v["deliveries"][0]["last_error"].is_string().then_some(v)
    })
    .await;
    assert!(
        view["deliveries"][0]["last_error"]
            .as_str()
            .unwrap()
            .contains("network error"),
        "{view}"
    );
    assert_no_secret("GET /v1/approvals/{id}", &view.to_string());
    drop(app);

    // Then a live fake that refuses everything: 5xx, a refused token, a form error.
    let app = discord_app(DiscordMode::Channel).await;
    app.discord.fail_next(1, 500, 0, "Internal Server Error");
    let body = app.fund_request("ctr_2", "ms_2");
    assert_eq!(app.submit(&body).await.0, 202);
    dc_messages(&app, DiscordMode::Channel, 1).await;
    app.discord.fail_next(1, 401, 0, "401: Unauthorized");
    let second = app.fund_request("ctr_3", "ms_3");
    let second_id = approval_id(&second);
    assert_eq!(app.submit(&second).await.0, 202);
    let view = eventually("the delivery has failed on the token", || async {
        let v = app.approval(&second_id).await;
        (v["deliveries"][0]["state"] == "failed").then_some(v)
    })
    .await;
    assert_no_secret("GET /v1/approvals/{id}", &view.to_string());
    let (_, list) = app.get("/v1/approvals").await;
    assert_no_secret("GET /v1/approvals", &list.to_string());

    let text = logs.text();
    assert!(
        text.contains("delivery failed"),
        "the errors were not logged:\n{text}"
    );
    assert!(
        text.contains("discord.bot_token"),
        "the token refusal was not logged clearly:\n{text}"
    );
    assert_no_secret("the logs", &text);
}
