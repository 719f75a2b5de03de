//! Secrets stay secret: no token in an error, a log line, or the hook's answers.

use countersign::config::Secret;
use serde_json::json;

use crate::support::*;

fn assert_no_secret(what: &str, text: &str) {
    for secret in [OT_TOKEN, TG_TOKEN, HOOK_TOKEN, "S3CR3T", "s3cr3t"] {
        assert!(
            !text.contains(secret),
            "{what} reveals a secret ({secret}):\n{text}"
        );
    }
}

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

#[test]
fn secrets_print_as_redacted() {
    let s = Secret::new("ot_pat_abc");
    assert_eq!(format!("{s}"), "[redacted]");
    assert_eq!(format!("{s:?}"), "[redacted]");
    let settings = countersign::Settings::from_toml_and_env(
        Some(&format!(
            "[hook]\ntoken = \"{HOOK_TOKEN}\"\n[opentrain]\ntoken = \"{OT_TOKEN}\"\n\
             [telegram]\nbot_token = \"{TG_TOKEN}\"\nchat_id = 1\n"
        )),
        Default::default(),
    )
    .unwrap();
    assert_no_secret("Settings' Debug", &format!("{settings:?}"));
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
