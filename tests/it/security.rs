//! Secrets stay secret: no token in an error, a log line, or the hook's answers.

use countersign::config::SecretString;
use serde_json::json;

use crate::support::*;

// current_thread (the default): every task of the app runs on this thread, so the scoped
// subscriber below sees their log lines.
#[tokio::test]
async fn forced_errors_on_every_outbound_client_reveal_no_token() {
    let logs = capture_logs();

    // Telegram's API address is a port nobody listens on: every send is a transport error.
    let dead = closed_address();
    let app = spawn_app_with(Options {
        telegram: false,
        extra_toml: format!(
            "[telegram]\nbot_token = \"{TG_TOKEN}\"\nchat_id = {CHAT}\napi_url = \"{dead}\"\nmin_send_interval_ms = 10\n"
        ),
        ..Options::default()
    })
    .await;

    // OpenTrain fails too: first a 500, then it refuses the token.
    app.opentrain.fail_next(1, 500, None);
    let body = app.fund_request("ctr_1", "ms_1");
    let id = approval_id(&body);
    assert_eq!(app.submit(&body).await.0, 202);
    let view = eventually("the delivery has failed at least once", || async {
        let v = app.approval(&id).await;
        v["deliveries"][0]["last_error"].is_string().then_some(v)
    })
    .await;
    assert_no_secret("GET /v1/approvals/{id}", &view.to_string());
    let (_, list) = app.get("/v1/approvals").await;
    assert_no_secret("GET /v1/approvals", &list.to_string());

    app.opentrain.fail_next(50, 401, None);
    let second = app.fund_request("ctr_2", "ms_2");
    let second_id = approval_id(&second);
    assert_eq!(app.submit(&second).await.0, 202);
    let view = eventually("verification has failed on the token", || async {
        let v = app.approval(&second_id).await;
        v["reason"]
            .as_str()
            .is_some_and(|r| r.contains("401"))
            .then_some(v)
    })
    .await;
    assert_no_secret("the rejection reason", &view.to_string());

    let text = logs.text();
    assert!(
        text.contains("delivery failed"),
        "the transport error was not logged:\n{text}"
    );
    assert!(
        text.contains("401"),
        "the token refusal was not logged:\n{text}"
    );
    assert_no_secret("the logs", &text);
}

/// Settings holding the hook, OpenTrain and Telegram tokens of the tests.
fn settings_with_secrets() -> countersign::Settings {
    countersign::Settings::from_toml_and_env(
        Some(&format!(
            "[hook]\ntoken = \"{HOOK_TOKEN}\"\n[opentrain]\ntoken = \"{OT_TOKEN}\"\n\
             [telegram]\nbot_token = \"{TG_TOKEN}\"\nchat_id = 1\n"
        )),
        Default::default(),
    )
    .unwrap()
}

#[test]
fn secrets_print_as_redacted() {
    let s = SecretString::new(OT_TOKEN.into());
    assert_no_secret("a SecretString's Debug", &format!("{s:?}"));
    let settings = settings_with_secrets();
    assert_no_secret("Settings' Debug", &format!("{settings:?}"));
}

/// teloxide's `Bot` prints its token in `Debug`; the app's clients that hold one must not.
#[tokio::test]
async fn no_client_of_the_app_prints_a_token_in_debug() {
    let dir = tempfile::tempdir().unwrap();
    let settings = settings_with_secrets();
    let telegram =
        countersign::notify::telegram::Telegram::new(settings.telegram.as_ref().unwrap());
    assert!(
        format!("{:?}", telegram.bot()).contains(TG_TOKEN),
        "teloxide's Bot no longer prints its token: this test no longer needs the hand-written Debug"
    );
    assert_no_secret("Telegram's Debug", &format!("{telegram:?}"));
    let commands = countersign::notify::telegram_commands::OwnerCommands {
        bot: telegram.bot().clone(),
        chat: teloxide::types::ChatId(1),
        store: countersign::store::Store::open(&countersign::store::StoreOptions::new(
            dir.path().join("x.db"),
            countersign::config::Synchronous::Normal,
        ))
        .unwrap(),
        app_url: APP_URL.into(),
        pacer: countersign::worker::Pacer::new(std::time::Duration::ZERO),
    };
    assert_no_secret("OwnerCommands' Debug", &format!("{commands:?}"));
    let opentrain = countersign::opentrain::OpenTrain::new(
        &settings.opentrain,
        settings.opentrain_token().unwrap().clone(),
    )
    .unwrap();
    assert_no_secret("OpenTrain's Debug", &format!("{opentrain:?}"));
}

#[tokio::test]
async fn the_hook_never_echoes_the_token_it_was_sent() {
    let app = spawn_app().await;
    let (status, answer) = app
        .post_json(
            "/v1/approvals",
            Some("S3CR3T-wrong-token"),
            json_body(json!({})),
        )
        .await;
    assert_eq!(status, 401);
    assert_no_secret("the 401 answer", &answer.to_string());
}

#[tokio::test]
async fn an_unreachable_opentrain_and_a_bad_webhook_signature_reveal_no_secret() {
    let logs = capture_logs();
    const WEBHOOK_SECRET: &str = "whsec_S3CR3T-webhook-0006";
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    // OpenTrain's address is a port nobody listens on: every read is a transport error.
    let toml = app
        .toml
        .replace(
            &app.opentrain.api_url(),
            &format!("{}/api/public/v1", closed_address()),
        )
        .replace(
            &app.store_path.display().to_string(),
            &dir.path().join("other.db").display().to_string(),
        )
        .replace(
            "request_timeout_secs = 5\n",
            &format!("request_timeout_secs = 5\nwebhook_secret = \"{WEBHOOK_SECRET}\"\n"),
        );
    let settings =
        countersign::Settings::from_toml_and_env(Some(&toml), Default::default()).unwrap();
    let other = countersign::App::build(settings).await.unwrap();
    let hook = format!("http://{}", other.hook_addr());
    let stop = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(other.run_until(stop.clone()));

    let body = app.fund_request("ctr_1", "ms_1");
    let id = approval_id(&body);
    let resp = app
        .client
        .post(format!("{hook}/v1/approvals"))
        .bearer_auth(HOOK_TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let view = eventually("verification failed on the transport", || async {
        let v: serde_json::Value = app
            .client
            .get(format!("{hook}/v1/approvals/{id}"))
            .bearer_auth(HOOK_TOKEN)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        v["reason"]
            .as_str()
            .is_some_and(|r| r.contains("cannot reach OpenTrain"))
            .then_some(v)
    })
    .await;
    assert_no_secret("the reason", &view.to_string());
    let resp = app
        .client
        .post(format!("{hook}/v1/opentrain/webhook"))
        .header("x-opentrain-signature", "t=1,v1=00")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let answer = resp.text().await.unwrap();
    stop.cancel();
    running.await.unwrap().unwrap();
    let text = logs.text();
    assert!(text.contains("cannot reach OpenTrain"), "{text}");
    assert!(text.contains("webhook: delivery refused"), "{text}");
    for shown in [&text, &answer] {
        assert_no_secret("logs and answers", shown);
        assert!(!shown.contains(WEBHOOK_SECRET));
    }
}

/// Titles, milestone names and display names come from OpenTrain but are written by other
/// people. Telegram makes links, e-mail addresses and mentions of plain text by itself; in a card
/// they stay text, and the approval button stays the only link.
#[tokio::test]
async fn third_party_text_that_reads_like_a_link_never_links_on_telegram() {
    let app = spawn_app().await;
    let lures = [
        "Pay now at evil.example/x",
        "https://app-opentrain.support/approve",
        "@everyone — billing@opentrain-pay.co",
    ];
    app.opentrain.add_simple_contract(
        "ctr_1",
        lures[0],
        lures[1],
        &[("ms_1", lures[2], 450.0, "NOT_FUNDED")],
    );
    let body = app
        .opentrain
        .create_approval("milestone_fund", Some("ctr_1"), Some("ms_1"), None);
    assert_eq!(app.submit(&body).await.0, 202);
    let msg = &messages(&app, 1).await[0];
    for lure in lures {
        assert!(
            msg.text.contains(lure),
            "{lure:?} is not shown as written: {:?}",
            msg.text
        );
    }
    for entity in &msg.entities {
        let kind = entity["type"].as_str().unwrap();
        assert!(
            !["url", "email", "mention", "text_link", "text_mention"].contains(&kind),
            "the card links: {entity} in {:?}",
            msg.text
        );
    }
    let buttons = msg.reply_markup.as_ref().unwrap()["inline_keyboard"].to_string();
    assert_eq!(buttons.matches("\"url\"").count(), 1, "{buttons}");
    assert!(
        buttons.contains(&format!("{APP_URL}/approvals/")),
        "{buttons}"
    );
}
