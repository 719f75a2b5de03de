//! Tracking to a terminal status, and the edit that shows it, across restarts and outages.

use std::time::Duration;

use serde_json::json;

use crate::support::*;

async fn posted(app: &TestApp) -> (String, i32) {
    let body = app.fund_request("ctr_1", "ms_1");
    let id = approval_id(&body);
    assert_eq!(app.submit(&body).await.0, 202);
    let msg = messages(app, 1).await.remove(0);
    (id, msg.message_id)
}

/// Waits until the message has been edited to show `word`.
async fn edited_to(
    app: &TestApp,
    message_id: i32,
    word: &str,
) -> countersign_fakes::telegram::FakeMessage {
    eventually(&format!("the message edited to {word}"), || async {
        app.telegram
            .messages(CHAT)
            .into_iter()
            .find(|m| m.message_id == message_id && m.text.contains(word))
    })
    .await
}

#[tokio::test]
async fn confirmed_approval_is_edited_in_place_with_its_evidence() {
    let app = spawn_app().await;
    let (id, message_id) = posted(&app).await;
    app.opentrain.resolve(
        &id,
        "confirmed",
        Some(json!({"invoiceId": "inv_77", "paymentIntentId": "pi_88"})),
    );
    let msg = edited_to(&app, message_id, "Confirmed").await;
    assert!(msg.text.starts_with("✅"), "{}", msg.text);
    for expected in [
        "inv_77",
        "pi_88",
        "$450.00",
        "First labeling batch",
        "Resolved: ",
    ] {
        assert!(
            msg.text.contains(expected),
            "{expected:?} missing from {:?}",
            msg.text
        );
    }
    assert!(
        msg.reply_markup.is_none(),
        "the link button must be gone: {:?}",
        msg.reply_markup
    );
    assert_eq!(
        app.telegram.messages(CHAT).len(),
        1,
        "a new message instead of an edit"
    );
    assert_eq!(app.approval(&id).await["status"], "confirmed");
    // Verify, context, final status: three reads of OpenTrain for the approval's whole life.
    settle().await;
    let reads = app.opentrain.count("GET", "/api/public/v1/approvals/")
        + app.opentrain.count("GET", "/api/public/v1/contracts/");
    assert_eq!(reads, 3);
}

#[tokio::test]
async fn declined_approval_is_edited_in_place() {
    let app = spawn_app().await;
    let (id, message_id) = posted(&app).await;
    app.opentrain.resolve(&id, "declined", None);
    let msg = edited_to(&app, message_id, "Declined").await;
    assert!(msg.text.starts_with("❌"), "{}", msg.text);
    assert!(msg.reply_markup.is_none());
    assert_eq!(app.telegram.messages(CHAT).len(), 1);
}

#[tokio::test]
async fn expired_approval_is_read_after_expires_at_and_edited_in_place() {
    let app = spawn_app().await;
    let body = app.fund_request("ctr_1", "ms_1");
    let id = approval_id(&body);
    // Expiry is lazy upstream: nothing announces it; countersign must read the approval.
    app.opentrain.set_expires_at(
        &id,
        chrono::Utc::now() + chrono::Duration::milliseconds(1500),
    );
    let mut body = body;
    body["approval"] = app.opentrain.approval(&id).unwrap();
    assert_eq!(app.submit(&body).await.0, 202);
    let message_id = messages(&app, 1).await[0].message_id;
    let msg = edited_to(&app, message_id, "Expired").await;
    assert!(msg.text.starts_with("⌛"), "{}", msg.text);
    assert!(msg.reply_markup.is_none());
    assert_eq!(app.approval(&id).await["status"], "expired");
}

#[tokio::test]
async fn an_agents_event_is_a_doorbell_that_rereads_at_once() {
    // A poll interval far beyond the test: only the doorbell can bring the news.
    let app = spawn_app_with(Options {
        poll_interval_secs: 3600,
        ..Options::default()
    })
    .await;
    let (id, message_id) = posted(&app).await;
    app.opentrain.resolve(&id, "declined", None);
    // The event says "confirmed": the status shown must come from OpenTrain, not the event.
    let event = json!({"id": "99", "type": "approval.confirmed", "apiVersion": "v1",
        "createdAt": "2026-06-12T10:05:00.000Z", "resourceId": id, "jobId": null,
        "data": {"approvalId": id, "status": "confirmed"}});
    let (status, answer) = app
        .post_json("/v1/events", Some(HOOK_TOKEN), json_body(event))
        .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["rang"], true);
    let msg = edited_to(&app, message_id, "Declined").await;
    assert!(!msg.text.contains("Confirmed"));
}

/// SPEC guarantee 13: an agent that rings in a loop (buggy or hostile) cannot spend
/// countersign's OpenTrain quota. Rings that come too soon after a read are deferred, not
/// dropped: the one that matters is still answered within a few seconds.
#[tokio::test]
async fn a_doorbell_rung_in_a_loop_costs_one_read_per_few_seconds_and_none_is_lost() {
    let app = spawn_app_with(Options {
        poll_interval_secs: 3600,
        ..Options::default()
    })
    .await;
    let (id, message_id) = posted(&app).await;
    let read = format!("/api/public/v1/approvals/{id}");
    let verified_with = app.opentrain.count("GET", &read);
    let event = json!({"id": "98", "type": "approval.confirmed", "apiVersion": "v1",
        "createdAt": "2026-06-12T10:05:00.000Z", "resourceId": id, "jobId": null,
        "data": {"approvalId": id}});
    let ring = || async {
        let (status, answer) = app
            .post_json("/v1/events", Some(HOOK_TOKEN), json_body(event.clone()))
            .await;
        assert_eq!(status, 202, "{answer}");
    };
    // The first ring is answered at once; wait for that read so the loop below rings after it.
    ring().await;
    eventually("the first doorbell's read", || async {
        (app.opentrain.count("GET", &read) > verified_with).then_some(())
    })
    .await;
    for _ in 0..40 {
        ring().await;
    }
    // The owner confirms after the loop; the deferred rings must still bring the news.
    app.opentrain.resolve(&id, "confirmed", None);
    let started = std::time::Instant::now();
    edited_to(&app, message_id, "Confirmed").await;
    let reads = app.opentrain.count("GET", &read) - verified_with;
    // One read for the first ring, one for everything rung during the spacing (plus one more
    // should the loop have straddled two spacings on a slow machine).
    assert!(
        reads <= 3,
        "41 rings cost {reads} reads of the approval in {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn restart_resumes_tracking_without_reposting_or_replaying_the_cursor() {
    let app = spawn_app().await;
    let (id, message_id) = posted(&app).await;
    // Something happens on the account, and a poll after it saves the cursor past it.
    let seen = app.opentrain.push_event(
        "proposal.received",
        "prop_9",
        json!({"proposalId": "prop_9"}),
    );
    app.opentrain.clear_requests();
    eventually("two polls of /updates after the event", || async {
        (app.opentrain.count("GET", "/api/public/v1/updates") >= 2).then_some(())
    })
    .await;
    let mut app = app;
    app.stop().await;
    app.opentrain.resolve(&id, "confirmed", None);
    app.opentrain.clear_requests();

    let app = app.restart().await;
    edited_to(&app, message_id, "Confirmed").await;
    assert_eq!(
        app.telegram.count("sendMessage"),
        1,
        "re-posted after restart"
    );
    let first_poll = app
        .opentrain
        .requests()
        .into_iter()
        .find(|r| r.path.ends_with("/updates"))
        .expect("polled after restart");
    let query = first_poll.query.unwrap_or_default();
    assert!(
        query.contains(&format!("cursor={seen}")),
        "did not resume from the saved cursor {seen}: {query}"
    );
}

#[tokio::test]
async fn opentrain_outage_delays_but_loses_nothing() {
    let app = spawn_app().await;
    app.opentrain.set_down(true);
    let body = app.fund_request("ctr_1", "ms_1");
    let id = approval_id(&body);
    assert_eq!(
        app.submit(&body).await.0,
        202,
        "intake does not depend on OpenTrain"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        app.telegram.count("sendMessage"),
        0,
        "posted before verification"
    );
    let view = app.approval(&id).await;
    assert_eq!(view["status"], "verifying");
    app.opentrain.set_down(false);
    let msg = messages(&app, 1).await.remove(0);
    app.opentrain.resolve(&id, "confirmed", None);
    edited_to(&app, msg.message_id, "Confirmed").await;
}
