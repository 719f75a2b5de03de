//! Delivery to Telegram: what the owner sees, escaping, pacing, 429s and deleted messages.

use std::time::Duration;

use countersign::approval::WireApproval;
use countersign::approval::{AgentContext, ApprovalId, RequestedMilestone, Status};
use countersign::config::SecretString;
use countersign::config::TelegramSettings;
use countersign::notify::telegram::Telegram;
use countersign::notify::{Card, Notifier, NotifyError};
use countersign::store::ApprovalRecord;
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn agent_text_with_markup_links_and_mentions_arrives_escaped() {
    let app = spawn_app().await;
    let hostile =
        r#"<a href="https://evil.example/pay">Click to approve</a> & <b>now</b> @everyone &amp;"#;
    let body = with_agent(
        &app.fund_request("ctr_1", "ms_1"),
        "<i>bot</i> @admin",
        json!({"note": hostile}),
    );
    assert_eq!(app.submit(&body).await.0, 202);
    let msg = &messages(&app, 1).await[0];
    // The owner sees the agent's text literally: no tag was interpreted, no entity decoded.
    assert!(msg.text.contains(hostile), "{:?}", msg.text);
    assert!(msg.text.contains("<i>bot</i> @admin"), "{:?}", msg.text);
    // And nothing in the message links anywhere but the approval button.
    for entity in &msg.entities {
        assert_ne!(entity["type"], "text_link", "injected link: {entity}");
        assert!(entity.get("url").is_none(), "injected link: {entity}");
    }
    assert!(
        !msg.raw_text.contains("evil.example/pay\">"),
        "{}",
        msg.raw_text
    );
    let markup = msg.reply_markup.as_ref().unwrap();
    let buttons: Vec<_> = markup["inline_keyboard"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap())
        .collect();
    assert_eq!(buttons.len(), 1);
    assert!(buttons[0]["url"].as_str().unwrap().starts_with(APP_URL));
}

#[tokio::test]
async fn hire_shows_the_agents_requested_amount_with_opentrains_fees() {
    let app = spawn_app().await;
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
    let msg = &messages(&app, 1).await[0];
    for expected in [
        "Hire",
        "$300.00 (requested by agent)",
        "$30.00 marketplace fee",
        "$9.95 contract fee",
        "= $339.95",
        "Spanish Sentiment Labeling",
        "Maria G.",
        "Pilot batch",
    ] {
        assert!(
            msg.text.contains(expected),
            "{expected:?} missing from {:?}",
            msg.text
        );
    }
}

#[tokio::test]
async fn telegram_429_is_waited_out_and_nothing_is_lost() {
    let app = spawn_app().await;
    app.telegram.force_retry_after("sendMessage", 1, 1);
    let first = app.fund_request("ctr_1", "ms_1");
    let second = app.fund_request("ctr_2", "ms_2");
    assert_eq!(app.submit(&first).await.0, 202);
    assert_eq!(app.submit(&second).await.0, 202);
    let started = tokio::time::Instant::now();
    let msgs = messages(&app, 2).await;
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "retry_after was not honoured"
    );
    assert_eq!(msgs.len(), 2);
    assert_eq!(
        app.telegram.rate_limited_count(),
        1,
        "a 429 storm: the app kept sending"
    );
    no_due_work(&app).await;
    assert_eq!(
        app.telegram.messages(CHAT).len(),
        2,
        "an approval was posted twice"
    );
}

#[tokio::test]
async fn sends_are_paced_per_chat_so_a_burst_draws_no_429() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for i in 0..12 {
        let body = app.fund_request(&format!("ctr_{i}"), &format!("ms_{i}"));
        ids.push(approval_id(&body));
        assert_eq!(app.submit(&body).await.0, 202);
    }
    let msgs = messages(&app, 12).await;
    assert_eq!(app.telegram.rate_limited_count(), 0);
    for id in ids {
        assert_eq!(
            msgs.iter()
                .filter(|m| m.text.contains(&format!("approval {id}")))
                .count(),
            1,
            "{id} not posted exactly once"
        );
    }
}

#[tokio::test]
async fn a_deleted_message_is_never_reposted() {
    let app = spawn_app().await;
    let body = app.fund_request("ctr_1", "ms_1");
    let id = approval_id(&body);
    assert_eq!(app.submit(&body).await.0, 202);
    let msg = messages(&app, 1).await.remove(0);
    app.telegram.delete_message(CHAT, msg.message_id);
    app.opentrain.resolve(&id, "declined", None);
    let view = eventually("the delivery is marked gone", || async {
        let v = app.approval(&id).await;
        (v["deliveries"][0]["state"] == "gone").then_some(v)
    })
    .await;
    assert_eq!(view["status"], "declined");
    no_due_work(&app).await;
    assert_eq!(
        app.telegram.count("sendMessage"),
        1,
        "re-posted a deleted message"
    );
    assert_eq!(
        app.telegram.count("editMessageText"),
        1,
        "retried an edit of a deleted message"
    );
}

fn record(id: &str, status: Status) -> ApprovalRecord {
    let wire: WireApproval = serde_json::from_value(json!({
        "id": id, "type": "milestone_fund", "status": status.as_str(),
        "expiresAt": "2030-01-01T00:00:00.000Z", "resolvedAt": null
    }))
    .unwrap();
    ApprovalRecord {
        id: ApprovalId::parse(id).unwrap(),
        kind: "milestone_fund".into(),
        status,
        version: 1,
        reminder_seq: 0,
        submitted: wire.clone(),
        agent: AgentContext {
            agent: Some("a".into()),
            note: None,
            milestone: Some(RequestedMilestone::default()),
        },
        upstream: Some(wire),
        context: None,
        superseded_by: None,
    }
}

#[tokio::test]
async fn edit_with_unchanged_text_counts_as_success() {
    let tg = countersign_fakes::FakeTelegram::start(TG_TOKEN, CHAT).await;
    let telegram = Telegram::new(&TelegramSettings {
        bot_token: SecretString::new(TG_TOKEN.into()),
        chat_id: CHAT,
        api_url: tg.api_url().parse().unwrap(),
        min_send_interval: Duration::ZERO,
        owner_commands: false,
    });
    let now = chrono::Utc::now();
    let card = Card::from_record(&record("apr_1", Status::Pending), APP_URL, now);
    let message = telegram.post(&card).await.expect("posted");
    // Same card twice: the fake answers "message is not modified" the second time.
    let done = Card::from_record(&record("apr_1", Status::Declined), APP_URL, now);
    telegram.edit(&message, &done).await.expect("first edit");
    telegram
        .edit(&message, &done)
        .await
        .expect("an unchanged edit is a success");
    let calls = tg.requests();
    let last = calls.last().unwrap();
    assert_eq!(last.method, "editmessagetext");
    assert_eq!(last.status, 400, "the fake did refuse the unchanged edit");
    assert!(
        last.description
            .as_deref()
            .unwrap()
            .contains("message is not modified")
    );

    tg.delete_message(CHAT, tg.messages(CHAT)[0].message_id);
    let err = telegram.edit(&message, &card).await.unwrap_err();
    assert!(matches!(err, NotifyError::Gone(_)), "{err:?}");
}
