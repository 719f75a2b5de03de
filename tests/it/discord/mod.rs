//! Discord: the same end-to-end cases as Telegram, against the strict fake Discord REST server,
//! reached the production way (serenity's requests to `https://discord.com`, over TLS, which the
//! test client resolves to the fake). What the owner sees (one embed, edited in place, colour
//! and button following the status), DM and channel modes, both chats at once, text nobody at
//! countersign wrote shown so it cannot link or mention, Discord's rate limits kept without a
//! single 429, the invalid-request ban kept far away, deleted messages, closed DMs, lost
//! permissions, outages, stalls, and the token staying secret. [`notifier`] drives the notifier
//! alone through each of Discord's answers; [`text`] feeds it any text at all.

mod notifier;
mod text;

use std::time::Duration;

use chrono::Utc;
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
    // OpenTrain's titles and names are people's words: shown as code, like the agent's.
    assert_eq!(
        field(&msg, "Contract"),
        "`Spanish Sentiment Labeling Contract`"
    );
    assert!(field(&msg, "Milestone").starts_with("`First labeling batch"));
    assert_eq!(field(&msg, "Trainer"), "`Maria G.`");
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
    assert_eq!(msg.autolinks(), Vec::<String>::new());
    // The token travels only as the Authorization header, over TLS to discord.com.
    for r in app.discord.requests() {
        assert_eq!(
            r.authorization.as_deref(),
            Some(&*format!("Bot {DC_TOKEN}"))
        );
        assert!(!r.path.contains(DC_TOKEN));
        assert!(r.tls, "{r:?}");
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
    no_due_work(&app).await;
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
    no_due_work(&app).await;
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
    no_due_work(&app).await;
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
async fn discord_a_burst_of_200_approvals_is_delivered_in_full_without_429s() {
    // No pace of countersign's own: only Discord's limits, read from the answers, keep it from
    // a 429. The fake holds the channel's bucket to 5 per 100 ms and the bot to Discord's real
    // global limit of 50 requests in any second, both at once.
    let app = spawn_app_with(Options {
        telegram: false,
        discord: Some(DiscordMode::Channel),
        discord_interval_ms: 0,
        ..Options::default()
    })
    .await;
    app.discord.set_bucket(5, Duration::from_millis(100));
    let bodies: Vec<Value> = (0..200)
        .map(|i| app.fund_request(&format!("ctr_{i}"), &format!("ms_{i}")))
        .collect();
    let answers = futures_util::future::join_all(bodies.iter().map(|b| app.submit(b))).await;
    assert!(answers.iter().all(|(s, _)| *s == 202), "{answers:?}");
    let msgs = eventually("all 200 Discord messages", || async {
        let m = app.discord.messages(DC_CHANNEL);
        (m.len() >= 200).then_some(m)
    })
    .await;
    assert_eq!(
        app.discord.rate_limited_count(),
        0,
        "a request went into a limit Discord had said was used up"
    );
    for b in &bodies {
        let footer = format!("approval {}", approval_id(b));
        assert_eq!(
            msgs.iter()
                .filter(|m| embed(m)["footer"]["text"] == footer.as_str())
                .count(),
            1,
            "{footer}"
        );
    }
}

/// Submits one funding request and waits for its Discord delivery's first error.
async fn first_error(app: &TestApp) -> String {
    let body = app.fund_request("ctr_1", "ms_1");
    let id = approval_id(&body);
    assert_eq!(app.submit(&body).await.0, 202);
    eventually("the delivery has failed at least once", || async {
        let v = app.approval(&id).await;
        v["deliveries"][0]["last_error"].as_str().map(str::to_owned)
    })
    .await
}

#[tokio::test]
async fn discord_a_429_storm_blocks_neither_the_worker_nor_shutdown() {
    let mut app = discord_app(DiscordMode::Channel).await;
    // Every post is refused with an hour's global wait.
    app.discord.force_rate_limit(usize::MAX, 3600.0, true);
    let error = first_error(&app).await;
    assert!(error.contains("rate limited"), "{error}");
    // The worker is not stuck inside the call: shutdown finishes at once.
    tokio::time::timeout(Duration::from_secs(10), app.stop())
        .await
        .expect("shutdown waited on Discord's 429");
    assert_eq!(app.discord.requests().len(), 1, "hammered a 429");
}

#[tokio::test]
async fn discord_third_party_text_can_never_link_mention_or_format() {
    let app = discord_app(DiscordMode::Dm).await;
    let title = "Pay at https://evil.example/pay @everyone **now** <@123>";
    let trainer = "@here [support](https://evil.example) <#42>";
    app.opentrain.add_simple_contract(
        "ctr_1",
        title,
        trainer,
        &[("ms_1", "`x` https://a.b/c ||spoiler||", 450.0, "NOT_FUNDED")],
    );
    let body = app
        .opentrain
        .create_approval("milestone_fund", Some("ctr_1"), Some("ms_1"), None);
    let body = with_agent(&body, "agent", json!({"note": "see https://c.d <@&1>"}));
    assert_eq!(app.submit(&body).await.0, 202);
    let msg = dc_messages(&app, DiscordMode::Dm, 1).await.remove(0);
    assert_eq!(
        msg.autolinks(),
        Vec::<String>::new(),
        "{}",
        embed_text(&msg)
    );
    // Still readable: verbatim, in code, with `@` kept from pinging.
    assert_eq!(
        field(&msg, "Contract"),
        format!("`{}`", title.replace('@', "@\u{200B}"))
    );
    assert_eq!(
        field(&msg, "Trainer"),
        format!("`{}`", trainer.replace('@', "@\u{200B}"))
    );
    assert!(
        field(&msg, "Milestone").starts_with("`` `x` https://a.b/c ||spoiler||"),
        "{}",
        field(&msg, "Milestone")
    );
    // The only link is the approval button.
    assert_eq!(buttons(&msg).len(), 1);
    assert!(embed(&msg).get("url").is_none_or(Value::is_null));
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
    no_due_work(&app).await;
    assert_eq!(message_posts(&app), 1, "re-posted a deleted message");
    assert_eq!(
        message_edits(&app),
        1,
        "retried an edit of a deleted message"
    );
}

/// Submits `n` funding requests and waits until every one's Discord delivery has failed.
async fn all_fail(app: &TestApp, n: usize) -> Vec<Value> {
    let mut ids = Vec::new();
    for i in 0..n {
        let body = app.fund_request(&format!("ctr_{i}"), &format!("ms_{i}"));
        ids.push(approval_id(&body));
        assert_eq!(app.submit(&body).await.0, 202);
    }
    let mut views = Vec::new();
    for id in ids {
        views.push(
            eventually(
                &format!("the delivery of {id} is marked failed"),
                || async {
                    let v = app.approval(&id).await;
                    (v["deliveries"][0]["state"] == "failed").then_some(v)
                },
            )
            .await,
        );
    }
    views
}

#[tokio::test]
async fn discord_an_owner_with_closed_dms_fails_once_without_a_retry_loop() {
    let app = discord_app(DiscordMode::Dm).await;
    app.discord.close_dms(DC_OWNER);
    let views = all_fail(&app, 3).await;
    let error = views[0]["deliveries"][0]["last_error"].as_str().unwrap();
    assert!(
        error.contains("50007") && error.contains("direct messages"),
        "{error}"
    );
    // A 403 counts towards Discord's invalid-request ban: the same post is not tried again
    // within the minute, whichever approval it is for.
    assert_eq!(message_posts(&app), 1);
    assert_eq!(app.discord.invalid_request_count(), 1);
    let later = views[2]["deliveries"][0]["last_error"].as_str().unwrap();
    assert!(later.contains("not sent again"), "{later}");
}

#[tokio::test]
async fn discord_a_lost_permission_is_not_retried_within_a_minute() {
    let app = discord_app(DiscordMode::Channel).await;
    app.discord.deny_posting(DC_CHANNEL);
    let views = all_fail(&app, 4).await;
    for view in &views {
        let error = view["deliveries"][0]["last_error"].as_str().unwrap();
        assert!(
            error.contains("50013") && error.contains("discord.channel_id"),
            "{error}"
        );
    }
    assert_eq!(message_posts(&app), 1, "a refused post was sent again");
    assert_eq!(app.discord.invalid_request_count(), 1);
}

#[tokio::test]
async fn discord_a_refused_token_stops_every_discord_request_until_a_restart() {
    let app = discord_app(DiscordMode::Dm).await;
    // The token was reset on Discord's side.
    app.discord.set_token("MTIz.another-token");
    let views = all_fail(&app, 3).await;
    for view in &views {
        let error = view["deliveries"][0]["last_error"].as_str().unwrap();
        assert!(error.contains("discord.bot_token"), "{error}");
        assert!(!error.contains(DC_TOKEN), "{error}");
    }
    assert_eq!(
        app.discord.requests().len(),
        1,
        "a request after Discord refused the token"
    );
    assert_eq!(app.discord.invalid_request_count(), 1);

    // The operator fixes the token and restarts: everything is delivered.
    app.discord.set_token(DC_TOKEN);
    let app = app.restart().await;
    dc_messages(&app, DiscordMode::Dm, 3).await;
    assert_eq!(app.discord.invalid_request_count(), 1);
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
    no_due_work(&app).await;
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
    ring(&app, &id).await;
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

// ---- secrets -------------------------------------------------------------------------------

// current_thread (the default): every task of the app runs on this thread, so the scoped
// subscriber below sees their log lines.
#[tokio::test]
async fn discord_errors_and_logs_never_reveal_the_token() {
    let logs = capture_logs();

    // First Discord cannot be reached: every send is a transport error.
    let app = discord_app(DiscordMode::Dm).await;
    app.discord.set_unreachable(true);
    let error = first_error(&app).await;
    assert!(error.contains("network error"), "{error}");
    let (_, list) = app.get("/v1/approvals").await;
    assert_no_secret("GET /v1/approvals", &list.to_string());
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
