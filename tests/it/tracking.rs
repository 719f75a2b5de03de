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
    no_due_work(&app).await;
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
    assert_eq!(ring(&app, &id).await["rang"], true);
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
    // A verification has been tried and has failed: by then a post that did not wait for
    // verification would be due or sent.
    let view = eventually("the failed verification recorded", || async {
        let v = app.approval(&id).await;
        v["reason"].is_string().then_some(v)
    })
    .await;
    assert_eq!(view["status"], "verifying");
    assert_eq!(
        view["deliveries"],
        json!([]),
        "a post scheduled before verification"
    );
    assert_eq!(
        app.telegram.count("sendMessage"),
        0,
        "posted before verification"
    );
    app.opentrain.set_down(false);
    let msg = messages(&app, 1).await.remove(0);
    app.opentrain.resolve(&id, "confirmed", None);
    edited_to(&app, msg.message_id, "Confirmed").await;
}

/// How many times OpenTrain was asked for approval `id`.
fn reads_of(app: &TestApp, id: &str) -> usize {
    app.opentrain
        .count("GET", &format!("/api/public/v1/approvals/{id}"))
}

/// Waits until OpenTrain has been asked for `id` more than `before` times; returns the count.
async fn read_after(app: &TestApp, id: &str, before: usize) -> usize {
    eventually(&format!("approval {id} read again"), || async {
        let n = reads_of(app, id);
        (n > before).then_some(n)
    })
    .await
}

#[tokio::test]
async fn an_approval_opentrain_shows_late_is_still_verified_and_posted() {
    let app = spawn_app().await;
    let body = app.fund_request("ctr_1", "ms_1");
    let id = approval_id(&body);
    app.opentrain.set_visible(&id, false);
    assert_eq!(app.submit(&body).await.0, 202);
    read_after(&app, &id, 1).await;
    assert_eq!(
        app.approval(&id).await["status"],
        "verifying",
        "a 404 is not a verdict"
    );
    app.opentrain.set_visible(&id, true);
    let msg = messages(&app, 1).await.remove(0);
    assert!(msg.text.contains("$450.00"), "{}", msg.text);
    assert_eq!(app.approval(&id).await["status"], "pending");
}

#[tokio::test]
async fn a_rejected_approval_is_verified_again_when_resubmitted() {
    let app = spawn_app().await;
    let body = app.fund_request("ctr_1", "ms_1");
    let id = approval_id(&body);
    app.opentrain.set_visible(&id, false);
    assert_eq!(app.submit(&body).await.0, 202);
    eventually("the approval is rejected", || async {
        (app.approval(&id).await["status"] == "rejected").then_some(())
    })
    .await;
    assert!(
        reads_of(&app, &id) >= 4,
        "rejected after only {} reads",
        reads_of(&app, &id)
    );
    assert_eq!(app.telegram.count("sendMessage"), 0);
    // OpenTrain shows it now (or the token was fixed): the agent's retry verifies it again.
    app.opentrain.set_visible(&id, true);
    let (status, answer) = app.submit(&body).await;
    assert_eq!(
        (status, &answer["duplicate"]),
        (202, &json!(false)),
        "{answer}"
    );
    messages(&app, 1).await;
    assert_eq!(app.approval(&id).await["status"], "pending");
}

#[tokio::test]
async fn a_message_survives_404_401_and_403_on_a_reread() {
    // No ledger polls after the first: every request after it is a re-read of the approval.
    let app = spawn_app_with(Options {
        poll_interval_secs: 3600,
        ..Options::default()
    })
    .await;
    let (id, message_id) = posted(&app).await;
    let shown = app.telegram.messages(CHAT).remove(0).text;
    type Fault = fn(&TestApp, &str, bool);
    let faults: [(&str, Fault); 3] = [
        ("404", |app, id, on| app.opentrain.set_visible(id, !on)),
        ("401", |app, _, on| {
            app.opentrain
                .set_token(if on { "a-revoked-token" } else { OT_TOKEN })
        }),
        ("403", |app, _, on| {
            if on {
                app.opentrain.fail_next(1, 403, None)
            }
        }),
    ];
    for (what, fault) in faults {
        fault(&app, &id, true);
        let before = reads_of(&app, &id);
        ring(&app, &id).await;
        let refused = read_after(&app, &id, before).await;
        fault(&app, &id, false);
        // The retry answers 200 pending: only then may the message change, and it need not.
        read_after(&app, &id, refused).await;
        eventually(
            &format!("the read after the {what} is recorded"),
            || async {
                let v = app.approval(&id).await;
                (v["status"] == "pending" && v["reason"].is_null()).then_some(())
            },
        )
        .await;
        let msg = app.telegram.messages(CHAT).remove(0);
        assert_eq!(msg.text, shown, "a {what} changed the message");
        assert!(msg.reply_markup.is_some(), "a {what} removed the button");
    }
    app.opentrain.resolve(&id, "confirmed", None);
    ring(&app, &id).await;
    edited_to(&app, message_id, "Confirmed").await;
}

#[tokio::test]
async fn a_clock_skew_costs_a_handful_of_reads_not_hundreds() {
    let app = spawn_app().await;
    // OpenTrain's clock is an hour behind: past countersign's expiresAt it still says pending.
    app.opentrain.set_clock_behind(Duration::from_secs(3600));
    let body = app.fund_request("ctr_1", "ms_1");
    let id = approval_id(&body);
    app.opentrain
        .set_expires_at(&id, chrono::Utc::now() + chrono::Duration::seconds(1));
    assert_eq!(app.submit(&body).await.0, 202);
    messages(&app, 1).await;
    // The verification, then three reads past expiresAt.
    let mut reads = 1;
    while reads < 4 {
        reads = read_after(&app, &id, reads).await;
    }
    let db = rusqlite::Connection::open(&app.store_path).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    let (attempts, gap): (i64, i64) = eventually("the third late read is recorded", || async {
        db.query_row(
            "SELECT attempts, next_read_at - updated_at FROM approvals
             WHERE id = ?1 AND lease_until = 0",
            [&id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .ok()
        .filter(|(attempts, _): &(i64, i64)| *attempts >= 3)
    })
    .await;
    // Each late read waits twice as long as the one before (5 s, 10 s, 20 s … an hour), so
    // minutes of skew cost a handful of reads; the next wait is at least 10 s by now.
    assert!(
        gap >= 10_000,
        "after {attempts} late reads the next is due in {gap} ms"
    );
    assert_eq!(app.approval(&id).await["status"], "pending");
}

/// Resolves the approval on OpenTrain without any event: only a re-read can find out.
fn declined_silently(app: &TestApp, id: &str) {
    app.opentrain
        .set_approval_field(id, "status", json!("declined"));
    app.opentrain
        .set_approval_field(id, "resolvedAt", json!("2026-06-12T10:05:00.000Z"));
}

#[tokio::test]
async fn the_ledger_survives_events_that_do_not_decode_and_rereads_what_is_pending() {
    let app = spawn_app().await;
    let (id, message_id) = posted(&app).await;
    declined_silently(&app, &id);
    // A page whose events cannot be read: a numeric id, a missing type, a null payload.
    let page = json!({"events": [
        {"id": 1001, "type": "approval.confirmed", "data": {"approvalId": id}},
        {"id": "1002", "data": {"approvalId": id}},
        {"id": "1003", "type": "approval.confirmed", "data": null, "resourceId": null}
    ], "nextCursor": "1003", "hasMore": false});
    app.opentrain.serve_raw(
        "GET",
        "/api/public/v1/updates",
        200,
        "application/json",
        page.to_string(),
    );
    edited_to(&app, message_id, "Declined").await;
}

#[tokio::test]
async fn the_ledger_survives_a_refused_cursor_and_rereads_what_is_pending() {
    let mut app = spawn_app().await;
    let (id, message_id) = posted(&app).await;
    app.stop().await;
    // A cursor OpenTrain no longer accepts (its retention moved on, a restored backup).
    let db = rusqlite::Connection::open(&app.store_path).unwrap();
    db.execute(
        "INSERT INTO kv (key, value) VALUES ('updates_cursor', 'not-a-cursor')
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [],
    )
    .unwrap();
    drop(db);
    declined_silently(&app, &id);
    app.opentrain.clear_requests();
    let app = app.restart().await;
    edited_to(&app, message_id, "Declined").await;
    // The saved cursor was asked for and refused; then the ledger starts again without one.
    let polls = || -> Vec<String> {
        app.opentrain
            .requests()
            .into_iter()
            .filter(|r| r.path == "/api/public/v1/updates")
            .map(|r| r.query.unwrap_or_default())
            .collect()
    };
    assert!(polls()[0].contains("cursor=not-a-cursor"), "{:?}", polls());
    eventually("a poll without the refused cursor", || async {
        polls().iter().any(|q| !q.contains("cursor=")).then_some(())
    })
    .await;
}

#[tokio::test]
async fn the_ledger_survives_a_long_outage_and_rereads_what_is_pending() {
    let app = spawn_app().await;
    let (id, message_id) = posted(&app).await;
    let polls = || app.opentrain.count("GET", "/api/public/v1/updates");
    // OpenTrain is down for more than four poll intervals (1 s here); what happened meanwhile
    // may never reach the ledger.
    app.opentrain.set_down(true);
    let down_at = std::time::Instant::now();
    let before = polls();
    eventually("polls failing through the outage", || async {
        (polls() >= before + 3 && down_at.elapsed() > Duration::from_secs(5)).then_some(())
    })
    .await;
    declined_silently(&app, &id);
    app.opentrain.set_down(false);
    edited_to(&app, message_id, "Declined").await;
}
