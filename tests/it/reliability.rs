//! SPEC §4: the owner's chat always tells the truth, and nothing accepted is lost — webhooks,
//! superseded hires, reminders, faults and bursts.

use std::time::Duration;

use countersign::intake::signature::sign;
use serde_json::{Value, json};

use crate::support::*;

const WEBHOOK_SECRET: &str = "whsec_S3CR3T-webhook-0005";

async fn webhook_post(
    app: &TestApp,
    body: &[u8],
    signature: Option<String>,
    delivery: &str,
) -> (u16, Value) {
    let mut req = app
        .client
        .post(format!("{}/v1/opentrain/webhook", app.hook))
        .header("content-type", "application/json")
        .header("x-opentrain-event", "approval.confirmed")
        .header("x-opentrain-delivery", delivery)
        .body(body.to_vec());
    if let Some(s) = signature {
        req = req.header("x-opentrain-signature", s);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn event_for(id: &str, status: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": "1043", "type": "approval.confirmed", "apiVersion": "v1",
        "createdAt": "2026-06-12T10:05:00.000Z", "resourceId": id, "jobId": null,
        "data": {"approvalId": id, "status": status}
    }))
    .unwrap()
}

async fn spawn_with_webhook() -> TestApp {
    // The secret goes in through the config file like an operator's would.
    let app = spawn_app_with(Options {
        // Only a doorbell can bring news within the test.
        poll_interval_secs: 3600,
        ..Options::default()
    })
    .await;
    let mut toml = app.toml.clone();
    toml = toml.replace(
        "request_timeout_secs = 5\n",
        &format!("request_timeout_secs = 5\nwebhook_secret = \"{WEBHOOK_SECRET}\"\n"),
    );
    let mut app = app;
    app.toml = toml;
    app.restart().await
}

fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

#[tokio::test]
async fn signed_webhook_is_a_doorbell_and_the_message_is_edited_at_once() {
    let app = spawn_with_webhook().await;
    let body = app.fund_request("ctr_1", "ms_1");
    let id = approval_id(&body);
    assert_eq!(app.submit(&body).await.0, 202);
    let msg = messages(&app, 1).await.remove(0);
    app.opentrain.resolve(&id, "declined", None);
    let event = event_for(&id, "declined");
    let (status, answer) = webhook_post(
        &app,
        &event,
        Some(sign(WEBHOOK_SECRET.as_bytes(), now_secs(), &event)),
        "dlv_1",
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["rang"], true);
    eventually("the message edited to Declined", || async {
        app.telegram
            .messages(CHAT)
            .into_iter()
            .find(|m| m.message_id == msg.message_id && m.text.contains("Declined"))
    })
    .await;
}

#[tokio::test]
async fn webhook_with_a_bad_or_stale_signature_gets_400_and_changes_nothing() {
    let app = spawn_with_webhook().await;
    let body = app.fund_request("ctr_1", "ms_1");
    let id = approval_id(&body);
    assert_eq!(app.submit(&body).await.0, 202);
    messages(&app, 1).await;
    app.opentrain.resolve(&id, "confirmed", None);
    let reads_before = app.opentrain.count("GET", "/api/public/v1/approvals/");
    let event = event_for(&id, "confirmed");
    let t = now_secs();
    let cases = [
        ("no signature", None),
        ("wrong secret", Some(sign(b"whsec_other", t, &event))),
        (
            "stale",
            Some(sign(WEBHOOK_SECRET.as_bytes(), t - 301, &event)),
        ),
        (
            "from the future",
            Some(sign(WEBHOOK_SECRET.as_bytes(), t + 301, &event)),
        ),
        ("garbage", Some("t=abc,v1=xyz".to_string())),
        (
            "signed another body",
            Some(sign(WEBHOOK_SECRET.as_bytes(), t, b"{}")),
        ),
    ];
    for (what, signature) in cases {
        let (status, answer) = webhook_post(&app, &event, signature, what).await;
        assert_eq!(status, 400, "{what}: {answer}");
        assert_eq!(answer["error"], "bad_signature", "{what}");
        assert!(!answer.to_string().contains(WEBHOOK_SECRET));
    }
    no_due_work(&app).await;
    assert_eq!(
        app.opentrain.count("GET", "/api/public/v1/approvals/"),
        reads_before,
        "a refused delivery caused a read"
    );
    assert_eq!(app.approval(&id).await["status"], "pending");
}

#[tokio::test]
async fn webhook_retries_of_one_delivery_are_deduplicated() {
    let app = spawn_with_webhook().await;
    let body = app.fund_request("ctr_1", "ms_1");
    let id = approval_id(&body);
    assert_eq!(app.submit(&body).await.0, 202);
    messages(&app, 1).await;
    // Only an unrelated event this time, so the approval stays pending and a second ring would
    // cost a second read.
    let event = event_for(&id, "confirmed");
    let first = webhook_post(
        &app,
        &event,
        Some(sign(WEBHOOK_SECRET.as_bytes(), now_secs(), &event)),
        "dlv_same",
    )
    .await;
    assert_eq!(first.1["duplicate"], false);
    let reads = eventually("the doorbell's re-read", || async {
        let n = app.opentrain.count("GET", "/api/public/v1/approvals/");
        (n >= 2).then_some(n)
    })
    .await;
    let again = webhook_post(
        &app,
        &event,
        Some(sign(WEBHOOK_SECRET.as_bytes(), now_secs(), &event)),
        "dlv_same",
    )
    .await;
    assert_eq!(again.0, 200, "a retry is acknowledged");
    assert_eq!(again.1["duplicate"], true);
    no_due_work(&app).await;
    assert_eq!(
        app.opentrain.count("GET", "/api/public/v1/approvals/"),
        reads
    );
}

#[tokio::test]
async fn webhook_route_is_absent_without_a_secret() {
    let app = spawn_app().await;
    let event = event_for("apr_x", "confirmed");
    let (status, answer) =
        webhook_post(&app, &event, Some(sign(b"x", now_secs(), &event)), "d").await;
    assert_eq!(status, 404, "{answer}");
}

pub(crate) async fn hire(app: &TestApp, proposal: &str, amount: u32) -> Value {
    let (status, body) = app
        .opentrain_post(
            &format!("/proposals/{proposal}/hire"),
            json!({"milestone": {"name": format!("Pilot {amount}"), "amount": amount, "dueDate": "2026-07-01"}}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    with_agent(
        &body,
        "hiring-agent",
        json!({"milestone": {"name": format!("Pilot {amount}"), "amount": amount}}),
    )
}

async fn supersede_case(app: &TestApp) -> (String, String) {
    app.opentrain
        .add_simple_proposal("prop_1", "Spanish Sentiment Labeling", "Maria G.");
    let old = hire(app, "prop_1", 300).await;
    let old_id = approval_id(&old);
    assert_eq!(app.submit(&old).await.0, 202);
    let first = messages(app, 1).await.remove(0);
    // The agent asks again with other terms: OpenTrain replaces the old request.
    let new = hire(app, "prop_1", 450).await;
    let new_id = approval_id(&new);
    assert_ne!(old_id, new_id);
    assert_eq!(app.submit(&new).await.0, 202);
    let msgs = messages(app, 2).await;
    assert!(msgs[1].text.contains("$450.00"), "{}", msgs[1].text);
    let edited = eventually("the old message shows it was superseded", || async {
        app.telegram
            .messages(CHAT)
            .into_iter()
            .find(|m| m.message_id == first.message_id && m.text.contains("Superseded"))
    })
    .await;
    assert!(edited.reply_markup.is_none(), "the old link must go");
    assert!(edited.text.contains(&new_id), "{}", edited.text);
    (old_id, new_id)
}

#[tokio::test]
async fn a_newer_hire_request_supersedes_the_old_message() {
    let app = spawn_app().await;
    let (old_id, new_id) = supersede_case(&app).await;
    assert_eq!(app.approval(&old_id).await["status"], "superseded");
    assert_eq!(app.approval(&new_id).await["status"], "pending");
    assert_eq!(app.telegram.count("sendMessage"), 2);
}

#[tokio::test]
async fn a_replaced_hire_is_shown_superseded_even_while_opentrain_still_calls_it_pending() {
    let app = spawn_app().await;
    app.opentrain.set_supersede_status("pending");
    let (old_id, _) = supersede_case(&app).await;
    assert_eq!(app.approval(&old_id).await["status"], "superseded");
}

#[tokio::test]
async fn a_reminder_refreshes_the_message_and_nudges_once_even_across_a_restart() {
    let app = spawn_app_with(Options {
        extra_toml: "[reminders]\nbefore_expiry = [\"3s\"]\n".into(),
        ..Options::default()
    })
    .await;
    let mut body = app.fund_request("ctr_1", "ms_1");
    let id = approval_id(&body);
    app.opentrain
        .set_expires_at(&id, chrono::Utc::now() + chrono::Duration::seconds(5));
    body["approval"] = app.opentrain.approval(&id).unwrap();
    assert_eq!(app.submit(&body).await.0, 202);
    let first = messages(&app, 1).await.remove(0);
    let msgs = messages(&app, 2).await;
    let nudge = &msgs[1];
    assert!(
        nudge.text.contains("Reminder") && nudge.text.contains(&id),
        "{}",
        nudge.text
    );
    let refreshed = app
        .telegram
        .messages(CHAT)
        .into_iter()
        .find(|m| m.message_id == first.message_id)
        .unwrap();
    // Refreshed with the time left (here the text may be unchanged — "less than a minute" both
    // times — and Telegram answers "not modified", which counts as done).
    assert!(
        app.telegram.count("editMessageText") >= 1,
        "the message was not refreshed"
    );
    assert!(
        refreshed.reply_markup.is_some(),
        "a pending approval keeps its button"
    );

    let app = app.restart().await;
    // Then it expires: the message ends as Expired, and the reminder was never repeated.
    eventually("the message edited to Expired", || async {
        app.telegram
            .messages(CHAT)
            .into_iter()
            .find(|m| m.message_id == first.message_id && m.text.contains("Expired"))
    })
    .await;
    assert_eq!(
        app.telegram.count("sendMessage"),
        2,
        "a reminder was sent twice"
    );
}

/// An app whose first /updates poll is over, so injected faults hit the approval reads.
async fn quiet_app() -> TestApp {
    let app = spawn_app_with(Options {
        poll_interval_secs: 3600,
        ..Options::default()
    })
    .await;
    eventually("the first poll", || async {
        (app.opentrain.count("GET", "/api/public/v1/updates") >= 1).then_some(())
    })
    .await;
    // Faults are drawn as requests arrive: the poll that has arrived can no longer take one.
    app
}

#[tokio::test]
async fn opentrain_429_is_waited_out_as_its_retry_after_says() {
    let app = quiet_app().await;
    app.opentrain.fail_next(1, 429, Some(2));
    let body = app.fund_request("ctr_1", "ms_1");
    let started = tokio::time::Instant::now();
    assert_eq!(app.submit(&body).await.0, 202);
    messages(&app, 1).await;
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "Retry-After: 2 was not honoured"
    );
}

#[tokio::test]
async fn opentrain_5xx_is_retried_until_it_answers() {
    let app = quiet_app().await;
    app.opentrain.fail_next(2, 503, None);
    let body = app.fund_request("ctr_1", "ms_1");
    assert_eq!(app.submit(&body).await.0, 202);
    messages(&app, 1).await;
    assert_eq!(
        app.opentrain.count("GET", "/api/public/v1/approvals/"),
        2 + 1
    );
}

#[tokio::test]
async fn a_refused_opentrain_token_stops_that_work_with_a_visible_reason_and_no_retry_loop() {
    let app = quiet_app().await;
    app.opentrain.fail_next(1000, 401, None);
    let body = app.fund_request("ctr_1", "ms_1");
    let id = approval_id(&body);
    assert_eq!(app.submit(&body).await.0, 202);
    let view = eventually("the reason is visible", || async {
        let v = app.approval(&id).await;
        v["reason"]
            .as_str()
            .is_some_and(|r| r.contains("401"))
            .then_some(v)
    })
    .await;
    assert_eq!(
        view["status"], "verifying",
        "not lost: it waits for a fixed token"
    );
    assert_eq!(
        app.opentrain.count("GET", "/api/public/v1/approvals/"),
        1,
        "retried in a loop"
    );
    // And none is scheduled soon: the store holds the next try about a quarter of an hour out.
    let db = rusqlite::Connection::open(&app.store_path).unwrap();
    let (run_after, refused_at): (i64, i64) = db
        .query_row(
            "SELECT run_after, updated_at FROM approvals WHERE id = ?1",
            [&id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let wait = run_after - refused_at;
    assert!(wait >= 14 * 60 * 1000, "next try in {wait} ms");
}

#[tokio::test]
async fn a_burst_of_200_approvals_is_delivered_in_full_without_429s() {
    // Telegram's real pace (one message a second) scaled down 40 times, with no slack: the
    // fake refuses anything that arrives sooner than 25 ms after the last accepted request,
    // and the app is told to pace at exactly 25 ms.
    let app = spawn_app_with(Options {
        telegram_interval_ms: 25,
        ..Options::default()
    })
    .await;
    app.telegram.set_min_interval(Duration::from_millis(25));
    let bodies: Vec<Value> = (0..200)
        .map(|i| app.fund_request(&format!("ctr_{i}"), &format!("ms_{i}")))
        .collect();
    let answers = futures_util::future::join_all(bodies.iter().map(|b| app.submit(b))).await;
    assert!(answers.iter().all(|(s, _)| *s == 202), "{answers:?}");
    let msgs = eventually("all 200 messages", || async {
        let m = app.telegram.messages(CHAT);
        (m.len() >= 200).then_some(m)
    })
    .await;
    assert_eq!(
        app.telegram.rate_limited_count(),
        0,
        "throttled: the app sent faster than the chat allows"
    );
    for b in &bodies {
        let id = approval_id(b);
        assert_eq!(
            msgs.iter()
                .filter(|m| m.text.contains(&format!("approval {id}")))
                .count(),
            1,
            "{id}"
        );
    }
}

/// One delivery's schedule as the store holds it: (state, run_after, hold_until, updated_at).
fn delivery_row(app: &TestApp, id: &str) -> Option<(String, i64, i64, i64)> {
    let db = rusqlite::Connection::open(&app.store_path).ok()?;
    db.busy_timeout(Duration::from_secs(5)).ok()?;
    db.query_row(
        "SELECT state, run_after, hold_until, updated_at FROM deliveries
         WHERE approval_id = ?1 AND lease_until = 0",
        [id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )
    .ok()
}

#[tokio::test]
async fn a_message_the_chat_refused_is_posted_once_the_cause_is_fixed_without_a_restart() {
    let app = spawn_app().await;
    app.telegram.block(CHAT);
    let body = app.fund_request("ctr_1", "ms_1");
    let id = approval_id(&body);
    assert_eq!(app.submit(&body).await.0, 202);
    let view = eventually("the refusal is recorded", || async {
        let v = app.approval(&id).await;
        v["deliveries"][0]["last_error"].is_string().then_some(v)
    })
    .await;
    assert!(
        view["deliveries"][0]["last_error"]
            .as_str()
            .unwrap()
            .contains("blocked"),
        "{view}"
    );
    // Not given up on (it stays due), and not hammered either: the next try is about a minute out.
    let (state, run_after, _, refused_at) = delivery_row(&app, &id).unwrap();
    assert_eq!(state, "failed", "shown as failed while refused");
    let wait = run_after - refused_at;
    assert!((30_000..=60_000).contains(&wait), "next try in {wait} ms");
    // The owner unblocks the bot; about a minute later the message arrives, no restart needed.
    app.telegram.unblock(CHAT);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while app.telegram.messages(CHAT).is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "never retried");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        app.telegram.count("sendMessage"),
        2,
        "one refused, one delivered: no retry loop"
    );
}

#[tokio::test]
async fn a_chats_429_hold_outlives_a_status_change() {
    let app = spawn_app().await;
    let body = app.fund_request("ctr_1", "ms_1");
    let id = approval_id(&body);
    assert_eq!(app.submit(&body).await.0, 202);
    messages(&app, 1).await;
    // A status OpenTrain has not resolved makes an edit due; the chat answers it with a long 429.
    app.telegram.force_retry_after("editMessageText", 1, 3600);
    app.opentrain
        .set_approval_field(&id, "status", json!("on_hold"));
    app.opentrain
        .push_event("approval.confirmed", &id, json!({"approvalId": id}));
    let (_, _, hold, _) = eventually("the 429 hold is stored", || async {
        delivery_row(&app, &id).filter(|(_, _, hold, _)| *hold > 0)
    })
    .await;
    // The status changes again: the edit is due at once, but not before the chat allows.
    app.opentrain
        .set_approval_field(&id, "status", json!("pending"));
    app.opentrain
        .push_event("approval.confirmed", &id, json!({"approvalId": id}));
    eventually("the change back is read", || async {
        (app.approval(&id).await["status"] == "pending").then_some(())
    })
    .await;
    let (_, run_after, _, _) = delivery_row(&app, &id).unwrap();
    assert!(
        run_after >= hold,
        "the hold was wiped: {run_after} < {hold}"
    );
    assert_eq!(
        app.telegram.count("editMessageText"),
        1,
        "sent inside the hold"
    );
}

#[tokio::test]
async fn a_card_held_back_by_a_429_shows_the_approval_as_it_is_when_sent() {
    let app = spawn_app().await;
    let first = app.fund_request("ctr_1", "ms_1");
    let second = app.fund_request("ctr_2", "ms_2");
    // The chat holds the first post back for a while; the other waits behind the hold.
    app.telegram.force_retry_after("sendMessage", 1, 8);
    assert_eq!(app.submit(&first).await.0, 202);
    assert_eq!(app.submit(&second).await.0, 202);
    let ids = [approval_id(&first), approval_id(&second)];
    let held = eventually("a post answered 429", || async {
        for id in &ids {
            let v = app.approval(id).await;
            if v["deliveries"][0]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("rate limited"))
            {
                return Some(id.clone());
            }
        }
        None
    })
    .await;
    let waiting = ids.iter().find(|id| **id != held).unwrap();
    // While it waits, the owner declines it on OpenTrain.
    app.opentrain.resolve(waiting, "declined", None);
    eventually("the decline is read", || async {
        (app.approval(waiting).await["status"] == "declined").then_some(())
    })
    .await;
    messages(&app, 2).await;
    no_due_work(&app).await;
    let shown = app
        .telegram
        .messages(CHAT)
        .into_iter()
        .find(|m| m.text.contains(waiting.as_str()))
        .unwrap();
    assert!(shown.text.contains("Declined"), "{}", shown.text);
    assert_eq!(
        app.telegram.count("editMessageText"),
        0,
        "posted as it was when claimed, then corrected"
    );
}
