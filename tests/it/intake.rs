//! The hook: what agents may hand over, what they get back, and that a refusal changes nothing.

use std::time::Duration;

use countersign::config::Synchronous;
use countersign::store::{Store, StoreOptions};
use serde_json::{Value, json};

use crate::support::*;

#[tokio::test]
async fn accepted_approval_is_posted_with_amount_context_and_link() {
    let app = spawn_app().await;
    let body = with_agent(
        &app.fund_request("ctr_1", "ms_1"),
        "scout-agent",
        json!({"note": "first batch is ready"}),
    );
    let id = approval_id(&body);

    let (status, answer) = app.submit(&body).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(
        answer,
        json!({"approvalId": id, "status": "verifying", "duplicate": false})
    );

    let msg = &messages(&app, 1).await[0];
    for expected in [
        "Fund milestone",
        "$450.00",
        "Spanish Sentiment Labeling Contract",
        "First labeling batch",
        "Maria G.",
        "scout-agent",
        "first batch is ready",
        &format!("approval {id}"),
    ] {
        assert!(
            msg.text.contains(expected),
            "{expected:?} missing from {:?}",
            msg.text
        );
    }
    assert!(msg.text.contains("Expires: "), "{}", msg.text);
    assert!(
        msg.text.contains("(in 7"),
        "relative expiry (72 h) missing: {}",
        msg.text
    );
    assert_eq!(msg.parse_mode.as_deref(), Some("HTML"));
    assert!(msg.link_preview_disabled);
    let markup = msg.reply_markup.as_ref().expect("a link button");
    assert_eq!(
        markup["inline_keyboard"][0][0]["url"],
        json!(format!("{APP_URL}/approvals/{id}"))
    );

    // The chat holds the message a moment before the store records it.
    let view = eventually("the post recorded", || async {
        let v = app.approval(&id).await;
        (v["deliveries"][0]["posted"] == true).then_some(v)
    })
    .await;
    assert_eq!(view["status"], "pending");
    assert_eq!(view["deliveries"][0]["channel"], "telegram");
}

#[tokio::test]
async fn the_bare_approval_object_is_accepted_too() {
    let app = spawn_app().await;
    let body = app.fund_request("ctr_1", "ms_1");
    let (status, _) = app.submit(&bare(&body)).await;
    assert_eq!(status, 202);
    messages(&app, 1).await;
}

#[tokio::test]
async fn duplicate_submission_answers_200_and_posts_one_message() {
    let app = spawn_app().await;
    let body = app.fund_request("ctr_1", "ms_1");
    assert_eq!(app.submit(&body).await.0, 202);
    messages(&app, 1).await;
    let (status, answer) = app.submit(&body).await;
    assert_eq!(status, 200);
    assert_eq!(answer["duplicate"], true);
    assert_eq!(answer["status"], "pending");
    no_due_work(&app).await;
    assert_eq!(app.telegram.messages(CHAT).len(), 1);
    assert_eq!(app.telegram.count("sendMessage"), 1);
}

#[tokio::test]
async fn ten_concurrent_submissions_of_one_approval_post_one_message() {
    let app = spawn_app().await;
    let body = app.fund_request("ctr_1", "ms_1");
    // All ten in flight at once.
    let results = futures_util::future::join_all((0..10).map(|_| app.submit(&body))).await;
    let created = results.iter().filter(|(s, _)| *s == 202).count();
    let duplicates = results
        .iter()
        .filter(|(s, b)| *s == 200 && b["duplicate"] == true)
        .count();
    assert_eq!((created, duplicates), (1, 9), "{results:?}");
    messages(&app, 1).await;
    no_due_work(&app).await;
    assert_eq!(app.telegram.messages(CHAT).len(), 1);
    assert_eq!(app.telegram.count("sendMessage"), 1);
    // Verified once: one read of the approval, one of its contract.
    assert_eq!(app.opentrain.count("GET", "/api/public/v1/approvals/"), 1);
    assert_eq!(app.opentrain.count("GET", "/api/public/v1/contracts/"), 1);
}

#[tokio::test]
async fn approval_unknown_to_opentrain_is_never_posted() {
    let app = spawn_app().await;
    let id = "apr_never_requested";
    let body = json!({"approval": {
        "id": id, "type": "milestone_fund", "status": "pending",
        "contractId": "ctr_x", "milestoneId": "ms_x", "jobId": "job_x",
        "approvalUrl": format!("{APP_URL}/approvals/{id}"),
        "expiresAt": "2030-01-01T00:00:00.000Z"
    }});
    assert_eq!(
        app.submit(&body).await.0,
        202,
        "accepted first: it is durable before verification"
    );
    let view = eventually("the approval is rejected", || async {
        let v = app.approval(id).await;
        (v["status"] == "rejected").then_some(v)
    })
    .await;
    assert!(view["reason"].as_str().unwrap().contains("404"), "{view}");
    assert_eq!(view["deliveries"], json!([]));
    no_due_work(&app).await;
    assert_eq!(app.telegram.count("sendMessage"), 0);
    assert!(app.telegram.messages(CHAT).is_empty());
}

#[tokio::test]
async fn approval_url_on_another_host_or_for_another_id_gets_422_and_posts_nothing() {
    let app = spawn_app().await;
    let body = app.fund_request("ctr_1", "ms_1");
    let id = approval_id(&body);
    let other = app
        .opentrain
        .create_approval("milestone_fund", Some("ctr_1"), Some("ms_1"), None);
    for url in [
        format!("https://evil.example/approvals/{id}"),
        format!("{APP_URL}/approvals/{}", approval_id(&other)),
        format!("{APP_URL}.evil.example/approvals/{id}"),
    ] {
        let mut b = body.clone();
        b["approval"]["approvalUrl"] = json!(url);
        let (status, answer) = app.submit(&b).await;
        assert_eq!(status, 422, "{url}: {answer}");
        assert_eq!(answer["error"], "bad_approval_url");
        assert!(answer["message"].as_str().unwrap().contains("approvalUrl"));
    }
    assert_eq!(app.get(&format!("/v1/approvals/{id}")).await.0, 404);
    no_due_work(&app).await;
    assert_eq!(app.telegram.count("sendMessage"), 0);
    assert_eq!(app.opentrain.count("GET", "/api/public/v1/approvals/"), 0);
}

#[tokio::test]
async fn bad_requests_get_a_clear_4xx_with_the_error_body_and_store_nothing() {
    let app = spawn_app().await;
    let body = app.fund_request("ctr_1", "ms_1");
    let good = json_body(body.clone());

    // (what, bearer token, body, expected status, expected error code)
    type Case<'a> = (&'a str, Option<&'a str>, Vec<u8>, u16, &'a str);
    let cases: Vec<Case> = vec![
        ("no token", None, good.clone(), 401, "unauthorized"),
        (
            "wrong token",
            Some("nope"),
            good.clone(),
            401,
            "unauthorized",
        ),
        (
            "broken JSON",
            Some(HOOK_TOKEN),
            b"{\"approval\": {".to_vec(),
            400,
            "malformed_json",
        ),
        (
            "not an object",
            Some(HOOK_TOKEN),
            b"[1,2]".to_vec(),
            422,
            "not_an_object",
        ),
        (
            "too large",
            Some(HOOK_TOKEN),
            vec![b' '; 70_000],
            413,
            "body_too_large",
        ),
        (
            "direct-mode 200 body",
            Some(HOOK_TOKEN),
            json_body(json!({"ok": true, "contractId": "ctr_1", "status": "ended"})),
            422,
            "no_approval",
        ),
        (
            "unknown type",
            Some(HOOK_TOKEN),
            json_body({
                let mut b = body.clone();
                b["approval"]["type"] = json!("transfer_everything");
                b
            }),
            422,
            "unknown_type",
        ),
        (
            "bad expiry",
            Some(HOOK_TOKEN),
            json_body({
                let mut b = body.clone();
                b["approval"]["expiresAt"] = json!("tomorrow");
                b
            }),
            422,
            "invalid_approval",
        ),
    ];
    for (what, token, bytes, status, code) in cases {
        let (got, answer) = app.post_json("/v1/approvals", token, bytes).await;
        assert_eq!(got, status, "{what}: {answer}");
        assert_eq!(answer["error"], code, "{what}: {answer}");
        assert!(
            answer["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: {answer}"
        );
    }
    let (status, list) = app.get("/v1/approvals").await;
    assert_eq!(status, 200);
    assert_eq!(
        list["approvals"],
        json!([]),
        "a refused request stored something"
    );
    no_due_work(&app).await;
    assert_eq!(app.telegram.count("sendMessage"), 0);
}

#[tokio::test]
async fn unknown_ids_and_routes_get_404_with_the_error_body() {
    let app = spawn_app().await;
    let (status, body) = app.get("/v1/approvals/apr_nope").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"], "not_found");
    let (status, body) = app.get("/v2/whatever").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"], "not_found");
}

#[tokio::test]
async fn healthz_answers_ok_without_auth() {
    let app = spawn_app().await;
    let resp = app
        .client
        .get(format!("{}/healthz", app.hook))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap()["status"], "ok");
}

/// `/healthz` needs no token, so it must not be a way to load the disk: however often it is
/// called, it makes at most one probe write per freshness window (and none while the writer
/// has just committed something anyway).
#[tokio::test]
async fn healthz_called_in_a_loop_writes_nothing_more_to_the_store() {
    let app = spawn_app().await;
    let probe = || {
        let c = rusqlite::Connection::open_with_flags(
            &app.store_path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap();
        c.query_row("SELECT value FROM kv WHERE key = 'healthcheck'", [], |r| {
            r.get::<_, String>(0)
        })
        .ok()
    };
    let healthz = || async {
        app.client
            .get(format!("{}/healthz", app.hook))
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(healthz().await, 200);
    let first = probe();
    for _ in 0..100 {
        assert_eq!(healthz().await, 200);
    }
    assert_eq!(probe(), first, "a /healthz call wrote to the store");
}

/// A probe's answer stands for `HEALTH_FRESH` (30 s), but not past a failure: a write that fails
/// after a healthy probe makes that answer stale, and the next `/healthz` probes again. Driven on
/// the store `/healthz` asks, alone, so no background write of a running app can refresh the
/// answer in between; with a short busy timeout, so a locked file fails a write at once.
#[tokio::test]
async fn healthz_reports_a_failure_that_came_after_its_last_healthy_probe() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("countersign.db");
    let mut options = StoreOptions::new(&path, Synchronous::Full);
    options.busy_timeout = Duration::from_millis(200);
    let store = Store::open(&options).await.expect("store opens");
    // Another process (an operator's `sqlite3`) holding the write lock makes every write fail.
    let outside = rusqlite::Connection::open(&path).unwrap();
    let now = || chrono::Utc::now().timestamp_millis();

    outside.execute_batch("BEGIN IMMEDIATE").unwrap();
    assert!(store.healthcheck(now()).await.is_err(), "a write failed");
    outside.execute_batch("COMMIT").unwrap();
    // A failure since the last commit: `/healthz` probes, and the store takes the probe.
    store
        .health(now())
        .await
        .expect("healthy once the lock is gone");

    // Within the probe's 30 s, the store breaks again and a write fails.
    outside.execute_batch("BEGIN IMMEDIATE").unwrap();
    assert!(store.healthcheck(now()).await.is_err(), "a write failed");
    assert!(
        store.health(now()).await.is_err(),
        "/healthz gave the healthy probe's answer from before the failure"
    );
    outside.execute_batch("COMMIT").unwrap();

    // Once a write commits again, healthy at once.
    store.healthcheck(now()).await.expect("the lock is gone");
    store.health(now()).await.expect("healthy again");
}
