//! `countersign demo`, run as the real binary: three sample approvals from post to outcome on the
//! console or a (fake) Telegram, marked as a demo, never touching the configured store or
//! OpenTrain.

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use countersign_fakes::{FakeOpenTrain, FakeTelegram};
use serde_json::Value;
use tokio::process::Command;

use crate::support::*;

const OUTCOMES: [&str; 3] = ["Confirmed", "Declined", "Expired"];

/// Runs `countersign demo -c <dir>/countersign.toml --pace 200ms` in `dir` with `config`, with no
/// `COUNTERSIGN__*` variable from the test's own environment.
async fn demo(dir: &Path, config: &str, extra: &[&str]) -> Output {
    let path = dir.join("countersign.toml");
    std::fs::write(&path, config).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_countersign"));
    command
        .arg("demo")
        .arg("-c")
        .arg(&path)
        .args(["--pace", "200ms"])
        .args(extra)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("COUNTERSIGN__")) {
        command.env_remove(key);
    }
    tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .expect("the demo ends by itself")
        .expect("the countersign binary runs")
}

/// The owner's config with the fake Telegram as their chat.
fn telegram_config(telegram: &FakeTelegram) -> String {
    format!(
        "[telegram]\nbot_token = \"{TG_TOKEN}\"\nchat_id = {CHAT}\napi_url = \"{}\"\nmin_send_interval_ms = 60\n",
        telegram.api_url()
    )
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_on_the_console_shows_three_messages_and_their_three_outcomes() {
    // The owner's config names a store and an OpenTrain, and no token at all: the demo must
    // need neither token and touch neither.
    let configured = FakeOpenTrain::start(OT_TOKEN, APP_URL).await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("owner.db");
    let config = format!(
        "[opentrain]\napi_url = \"{}\"\n[store]\npath = \"{}\"\n",
        configured.api_url(),
        store.display()
    );
    let out = demo(dir.path(), &config, &[]).await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{out:?}");

    let blocks: Vec<&str> = stdout.split("── ").skip(1).collect();
    let posts: Vec<&&str> = blocks
        .iter()
        .filter(|b| b.starts_with("new message"))
        .collect();
    let edits: Vec<&&str> = blocks.iter().filter(|b| b.starts_with("edit of")).collect();
    assert_eq!(posts.len(), 3, "{stdout}");
    assert!(posts.iter().all(|b| b.contains("🔔 Approval needed")));
    for outcome in OUTCOMES {
        let shown = edits
            .iter()
            .filter(|b| b.lines().nth(1).is_some_and(|l| l.contains(outcome)))
            .count();
        assert_eq!(shown, 1, "one message ends {outcome}: {stdout}");
    }
    for block in posts.iter().chain(&edits) {
        assert!(block.contains("DEMO"), "every message says DEMO: {block}");
    }
    for link in stdout
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Review and sign: "))
    {
        assert!(
            link.starts_with("http://127.0.0.1:") && link.contains("/approvals/apr_"),
            "links go to the demo's own page only: {link}"
        );
    }
    assert!(
        configured.requests().is_empty(),
        "the configured OpenTrain was asked"
    );
    assert!(!store.exists(), "the configured store was created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_on_telegram_posts_and_edits_there_marked_as_a_demo() {
    let telegram = FakeTelegram::start(TG_TOKEN, CHAT).await;
    telegram.set_min_interval(Duration::from_millis(40));
    let dir = tempfile::tempdir().unwrap();
    let out = demo(dir.path(), &telegram_config(&telegram), &[]).await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        !stdout.contains("── new message"),
        "with a chat configured the console stays quiet: {stdout}"
    );

    let messages = telegram.messages(CHAT);
    assert_eq!(messages.len(), 3, "{messages:?}");
    let mut ended: Vec<&str> = Vec::new();
    for m in &messages {
        assert!(m.edits >= 1, "edited to its outcome: {m:?}");
        assert!(m.reply_markup.is_none(), "the button is gone: {m:?}");
        assert!(m.text.contains("DEMO"), "{}", m.text);
        ended.extend(OUTCOMES.iter().filter(|o| m.text.contains(*o)));
    }
    ended.sort_unstable();
    assert_eq!(ended, ["Confirmed", "Declined", "Expired"]);

    // Every version of every message said DEMO, and every button opened the demo's own page
    // for that very approval.
    let calls = telegram.requests();
    let sent: Vec<&Value> = calls
        .iter()
        .filter(|c| c.method == "sendmessage" || c.method == "editmessagetext")
        .map(|c| &c.body)
        .collect();
    assert_eq!(
        calls.iter().filter(|c| c.method == "sendmessage").count(),
        3
    );
    for body in &sent {
        let text = body["text"].as_str().unwrap_or_default();
        assert!(text.contains("DEMO"), "{text}");
        if let Some(url) = body["reply_markup"]["inline_keyboard"][0][0]["url"].as_str() {
            let id = url.rsplit('/').next().unwrap();
            assert!(url.starts_with("http://127.0.0.1:"), "{url}");
            assert!(url.ends_with(&format!("/approvals/{id}")), "{url}");
            assert!(text.contains(&format!("approval {id}")), "{url} vs {text}");
        }
    }
    assert_eq!(
        telegram.count("getUpdates"),
        0,
        "the bot's updates are left alone"
    );
    assert_eq!(telegram.count("setMyCommands"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_says_which_chat_refused_it_and_fails() {
    let telegram = FakeTelegram::start(TG_TOKEN, CHAT).await;
    // What Telegram is reported to answer for a button to a local address.
    telegram.fail_next("sendMessage", 3, 400, "Bad Request: BUTTON_URL_INVALID");
    let dir = tempfile::tempdir().unwrap();
    let out = demo(dir.path(), &telegram_config(&telegram), &[]).await;
    let stdout = text(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.contains("telegram refused the demo's message")
            && stdout.contains("BUTTON_URL_INVALID"),
        "{stdout}"
    );
    assert!(stdout.contains("countersign demo --console"), "{stdout}");
    assert!(telegram.messages(CHAT).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_with_console_flag_ignores_the_configured_chat() {
    let telegram = FakeTelegram::start(TG_TOKEN, CHAT).await;
    let dir = tempfile::tempdir().unwrap();
    let out = demo(dir.path(), &telegram_config(&telegram), &["--console"]).await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout.matches("── new message").count(), 3, "{stdout}");
    assert!(telegram.requests().is_empty());
}
