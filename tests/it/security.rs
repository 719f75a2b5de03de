//! Secrets stay secret: no token in an error, a log line, or the hook's answers.

use std::time::Duration;

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

/// A second daemon on the fakes of a test app, with its own store and the app's config changed
/// by `edit`.
struct Variant {
    hook: String,
    /// The proxy's base URL, when the edited config turns proxy mode on.
    proxy: Option<String>,
    stop: tokio_util::sync::CancellationToken,
    running: tokio::task::JoinHandle<Result<(), countersign::app::StartError>>,
    _dir: tempfile::TempDir,
}

impl Variant {
    async fn start(app: &TestApp, edit: impl FnOnce(String) -> String) -> Variant {
        let dir = tempfile::tempdir().unwrap();
        let toml = edit(app.toml.replace(
            &app.store_path.display().to_string(),
            &dir.path().join("other.db").display().to_string(),
        ));
        let settings =
            countersign::Settings::from_toml_and_env(Some(&toml), Default::default()).unwrap();
        let other = countersign::App::build(settings).await.unwrap();
        let hook = format!("http://{}", other.hook_addr());
        let proxy = other.proxy_addr().map(|a| format!("http://{a}"));
        let stop = tokio_util::sync::CancellationToken::new();
        let running = tokio::spawn(other.run_until(stop.clone()));
        Variant {
            hook,
            proxy,
            stop,
            running,
            _dir: dir,
        }
    }

    async fn stop(self) {
        self.stop.cancel();
        self.running.await.unwrap().unwrap();
    }
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
        .await
        .unwrap(),
        app_url: APP_URL.into(),
        pacer: countersign::worker::Pacer::new(Duration::ZERO),
        zone: jiff::tz::TimeZone::UTC,
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
    // OpenTrain's address is a port nobody listens on: every read is a transport error.
    let other = Variant::start(&app, |toml| {
        toml.replace(
            &app.opentrain.api_url(),
            &format!("{}/api/public/v1", closed_address()),
        )
        .replace(
            "request_timeout_secs = 5\n",
            &format!("request_timeout_secs = 5\nwebhook_secret = \"{WEBHOOK_SECRET}\"\n"),
        )
    })
    .await;
    let hook = other.hook.clone();

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
    other.stop().await;
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

/// How a slow client misbehaves.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Slow {
    /// Sends its request headers a byte at a time.
    Headers,
    /// Sends complete headers, then its body a byte at a time.
    Body,
    /// Connects and sends nothing.
    Idle,
}

/// A connection that misbehaves until the server closes it.
struct SlowClient {
    how: Slow,
    /// What the server sent, and when it closed the connection.
    ended: tokio::task::JoinHandle<(Vec<u8>, tokio::time::Instant)>,
}

impl SlowClient {
    async fn connect(base: &str, path: &str, how: Slow) -> SlowClient {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let stream = tokio::net::TcpStream::connect(base.trim_start_matches("http://"))
            .await
            .unwrap();
        let (mut reader, mut writer) = stream.into_split();
        let (head, trickle): (String, &[u8]) = match how {
            Slow::Headers => (
                format!("POST {path} HTTP/1.1\r\n"),
                b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            ),
            Slow::Body => (
                format!(
                    "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {HOOK_TOKEN}\r\n\
                     Content-Type: application/json\r\nContent-Length: 200\r\n\r\n"
                ),
                b"{\"approval\": {\"id\": \"apr_slow\", \"type\": \"milestone_fund\"}                 ",
            ),
            Slow::Idle => (String::new(), b""),
        };
        writer.write_all(head.as_bytes()).await.unwrap();
        let ended = tokio::spawn(async move {
            let trickling = async {
                for byte in trickle {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    if writer.write_all(&[*byte]).await.is_err() {
                        break;
                    }
                }
                std::future::pending::<()>().await
            };
            let mut received = Vec::new();
            let reading = async {
                let mut buf = [0u8; 1024];
                while let Ok(n @ 1..) = reader.read(&mut buf).await {
                    received.extend_from_slice(&buf[..n]);
                }
            };
            tokio::select! {
                _ = trickling => unreachable!("trickling never ends by itself"),
                _ = reading => {}
            }
            (received, tokio::time::Instant::now())
        });
        SlowClient { how, ended }
    }

    /// Waits until the server has closed the connection, checks what it answered (a 408 to a
    /// slow body, nothing otherwise) and says when it closed it.
    async fn closed(self) -> tokio::time::Instant {
        let how = self.how;
        let (received, at) = tokio::time::timeout(PATIENCE, self.ended)
            .await
            .unwrap_or_else(|_| panic!("a {how:?} client was never closed"))
            .unwrap();
        let received = String::from_utf8_lossy(&received);
        if how == Slow::Body {
            assert!(
                received.starts_with("HTTP/1.1 408") && received.contains("request_timeout"),
                "{received}"
            );
        } else {
            assert!(received.is_empty(), "a {how:?} client got {received}");
        }
        at
    }
}

/// A daemon (no Telegram) whose config has `from` replaced by `to`, on the fakes of a test app.
async fn daemon_with(from: &str, to: &str) -> (TestApp, Variant) {
    let app = spawn_app_with(Options {
        telegram: false,
        ..Options::default()
    })
    .await;
    let daemon = Variant::start(&app, |toml| toml.replace(from, to)).await;
    (app, daemon)
}

/// SPEC §4 guarantee 13: a few dozen connections that send a byte every so often do not keep an
/// agent out, and the hook closes them when their time is up, storing nothing.
#[tokio::test]
async fn slow_clients_are_closed_and_a_normal_request_gets_through_meanwhile() {
    let (app, daemon) = daemon_with(
        "[hook]\n",
        "[hook]\nread_timeout_secs = 3\nmax_connections = 100\n",
    )
    .await;
    let mut slow = Vec::new();
    for i in 0..64 {
        let how = [Slow::Headers, Slow::Body][i % 2];
        slow.push(SlowClient::connect(&daemon.hook, "/v1/approvals", how).await);
    }

    let body = app.fund_request("ctr_1", "ms_1");
    let response = app
        .client
        .post(format!("{}/v1/approvals", daemon.hook))
        .bearer_auth(HOOK_TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let answered = tokio::time::Instant::now();
    for client in slow {
        assert!(
            client.closed().await > answered,
            "a slow client was closed before the normal request was answered"
        );
    }

    // A new connection: the one the request above used has been idle as long as the slow ones,
    // and is being closed just now too.
    let list: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/v1/approvals", daemon.hook))
        .bearer_auth(HOOK_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = list["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [approval_id(&body)],
        "only the normal request was stored"
    );
    daemon.stop().await;
}

/// With every connection slot taken, a new client waits in the accept queue (it is not refused)
/// and is served as soon as the read timeout frees a slot.
#[tokio::test]
async fn at_the_connection_limit_a_client_is_served_once_a_slot_frees() {
    let (app, daemon) = daemon_with(
        "[hook]\n",
        "[hook]\nread_timeout_secs = 1\nmax_connections = 2\n",
    )
    .await;
    let idle = [
        SlowClient::connect(&daemon.hook, "/", Slow::Idle).await,
        SlowClient::connect(&daemon.hook, "/", Slow::Idle).await,
    ];
    let response = app
        .client
        .get(format!("{}/v1/approvals", daemon.hook))
        .bearer_auth(HOOK_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answered = tokio::time::Instant::now();
    let [first, second] = idle;
    let first_closed = first.closed().await.min(second.closed().await);
    assert!(
        first_closed <= answered,
        "the request was served while both slots were taken"
    );
    daemon.stop().await;
}

/// The proxy is bounded the same way: a slow request body gets a 408, a trickled header is cut
/// off, and other agents are served meanwhile.
#[tokio::test]
async fn slow_clients_of_the_proxy_are_cut_off_and_others_served() {
    let (app, daemon) = daemon_with(
        "[console]\n",
        "[proxy]\nenabled = true\nlisten = \"127.0.0.1:0\"\nread_timeout_secs = 1\n[console]\n",
    )
    .await;
    let proxy = daemon.proxy.clone().expect("proxy mode is on");
    let fund = "/milestones/ms_1/fund";
    let slow = [
        SlowClient::connect(&proxy, fund, Slow::Headers).await,
        SlowClient::connect(&proxy, fund, Slow::Body).await,
    ];
    let me = app
        .client
        .get(format!("{proxy}/auth/me"))
        .bearer_auth(OT_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    for client in slow {
        client.closed().await;
    }
    daemon.stop().await;
}
