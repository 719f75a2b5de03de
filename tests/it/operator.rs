//! The operator's surface: `check`, `list`, `pair`, owner commands, metrics, shutdown — each
//! through the real binary or the running app, against the local fakes.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_countersign");

/// Runs the binary to completion (the fakes keep serving meanwhile).
async fn countersign(args: &[&str]) -> (i32, String, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        Command::new(BIN).args(args).env_remove("RUST_LOG").output(),
    )
    .await
    .expect("the command finished")
    .expect("the binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write_config(app: &TestApp, replace: &[(&str, &str)]) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut toml = app.toml.clone();
    for (from, to) in replace {
        assert!(toml.contains(from), "{from} not in the config");
        toml = toml.replace(from, to);
    }
    let path = dir.path().join("countersign.toml");
    std::fs::write(&path, toml).unwrap();
    (dir, path.display().to_string())
}

#[tokio::test]
async fn check_prints_one_line_per_check_and_sends_the_owner_nothing() {
    let app = spawn_app().await;
    let (_dir, config) = write_config(&app, &[]);
    let (code, out, err) = countersign(&["check", "-c", &config]).await;
    assert_eq!(code, 0, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].starts_with("ok") && lines[0].contains("config"),
        "{out}"
    );
    assert!(
        lines[1].starts_with("ok")
            && lines[1].contains("opentrain")
            && lines[1].contains("payments:read"),
        "{out}"
    );
    assert!(
        lines[2].starts_with("ok")
            && lines[2].contains("telegram")
            && lines[2].contains(&CHAT.to_string()),
        "{out}"
    );
    assert_eq!(
        app.telegram.count("sendMessage"),
        0,
        "check sent the owner a message"
    );
    assert_no_secret("the output", &out);
    assert_no_secret("the output", &err);
}

#[tokio::test]
async fn check_explains_each_common_misconfiguration_and_exits_non_zero() {
    let app = spawn_app().await;
    app.telegram.add_unstarted_user(5555);
    let chat_line = format!("chat_id = {CHAT}");
    // (config replacements, the failing check, what its line must say)
    type Case<'a> = (Vec<(&'a str, String)>, &'a str, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec![(OT_TOKEN, "ot_pat_revoked".to_string())],
            "opentrain",
            "refused opentrain.token",
        ),
        (
            vec![(TG_TOKEN, "123456:wrong".to_string())],
            "telegram",
            "telegram.bot_token",
        ),
        (
            vec![(&chat_line, "chat_id = 5555".to_string())],
            "telegram",
            "press Start",
        ),
        (
            vec![(&chat_line, "chat_id = 31337".to_string())],
            "telegram",
            "not found",
        ),
    ];
    for (replace, name, says) in cases {
        let replace: Vec<(&str, &str)> = replace.iter().map(|(a, b)| (*a, b.as_str())).collect();
        let (_dir, config) = write_config(&app, &replace);
        let (code, out, _) = countersign(&["check", "-c", &config]).await;
        assert_eq!(code, 1, "{out}");
        let failed = out
            .lines()
            .find(|l| l.starts_with("FAIL"))
            .unwrap_or_else(|| panic!("no FAIL line:\n{out}"));
        assert!(
            failed.contains(name) && failed.contains(says),
            "expected {name}: {says:?}, got:\n{out}"
        );
        assert_no_secret("the output", &out);
    }
    app.opentrain.set_scopes(&["proposals:read"]);
    let (_dir, config) = write_config(&app, &[]);
    let (code, out, _) = countersign(&["check", "-c", &config]).await;
    assert_eq!(code, 1);
    assert!(out.contains("lacks payments:read"), "{out}");
    // A broken config is a check failure too, naming the key.
    let (_dir, config) = write_config(
        &app,
        &[("listen = \"127.0.0.1:0\"", "listen = \"nowhere\"")],
    );
    let (code, out, _) = countersign(&["check", "-c", &config]).await;
    assert_eq!(code, 1);
    assert!(
        out.starts_with("FAIL") && out.contains("hook.listen"),
        "{out}"
    );
}

#[tokio::test]
async fn list_shows_tracked_approvals_while_the_daemon_runs() {
    let app = spawn_app().await;
    let first = app.fund_request("ctr_1", "ms_1");
    let second = app.fund_request("ctr_2", "ms_2");
    let (a, b) = (approval_id(&first), approval_id(&second));
    assert_eq!(app.submit(&first).await.0, 202);
    assert_eq!(app.submit(&second).await.0, 202);
    messages(&app, 2).await;
    app.opentrain.resolve(&a, "confirmed", None);
    eventually("the first approval confirmed", || async {
        (app.approval(&a).await["status"] == "confirmed").then_some(())
    })
    .await;
    no_due_work(&app).await;

    let (_dir, config) = write_config(&app, &[]);
    let (code, out, err) = countersign(&["list", "-c", &config]).await;
    assert_eq!(code, 0, "{err}");
    let header = out.lines().next().unwrap();
    for column in ["ID", "TYPE", "AMOUNT", "STATUS", "EXPIRES", "DELIVERY"] {
        assert!(header.contains(column), "{out}");
    }
    assert!(
        out.contains(&b) && !out.contains(&a),
        "open ones only without --all:\n{out}"
    );
    let row = out.lines().find(|l| l.contains(&b)).unwrap();
    for cell in ["milestone_fund", "$450.00", "pending", "telegram:shown"] {
        assert!(row.contains(cell), "{cell} missing: {row}");
    }
    let (_, all, _) = countersign(&["list", "-c", &config, "--all"]).await;
    assert!(all.contains(&a) && all.contains("confirmed"), "{all}");
    // Newest first.
    assert!(all.find(&b).unwrap() < all.find(&a).unwrap(), "{all}");
    let (_, json, _) = countersign(&["list", "-c", &config, "--all", "--json"]).await;
    let parsed: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(parsed.as_array().unwrap().len(), 2);
    assert_no_secret("the output", &all);
    assert_no_secret("the output", &json);
}

#[tokio::test]
async fn pair_prints_the_chat_id_of_whoever_sends_the_code_and_nobody_else() {
    let app = spawn_app_with(Options {
        telegram: false,
        ..Options::default()
    })
    .await;
    app.telegram.add_chat(777);
    app.telegram.add_chat(888);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pair.toml");
    // Only a bot token: the chat id is what pairing finds.
    std::fs::write(
        &config,
        format!(
            "[hook]\ntoken = \"t\"\n[telegram]\nbot_token = \"{TG_TOKEN}\"\napi_url = \"{}\"\n",
            app.telegram.api_url()
        ),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args(["pair", "-c", config.to_str().unwrap(), "--timeout", "30"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut code = None;
    while let Some(line) = lines.next_line().await.unwrap() {
        if let Some(c) = line.trim().strip_prefix("/start ") {
            code = Some(c.to_string());
            break;
        }
    }
    let code = code.expect("a code was printed");
    app.telegram.push_text_update(888, 888, "/start");
    app.telegram.push_text_update(888, 888, "/start WRONGCODE");
    app.telegram
        .push_text_update(777, 777, &format!("/start {code}"));
    let mut rest = String::new();
    while let Some(line) = lines.next_line().await.unwrap() {
        rest.push_str(&line);
        rest.push('\n');
    }
    let status = child.wait().await.unwrap();
    assert!(status.success(), "{rest}");
    assert!(rest.contains("chat_id = 777"), "{rest}");
    assert!(!rest.contains("chat_id = 888"), "{rest}");
    assert_eq!(
        rest.matches("Ignored a message from chat 888").count(),
        2,
        "{rest}"
    );
}

#[tokio::test]
async fn owner_commands_answer_only_the_configured_chat() {
    let app = spawn_app().await;
    let body = app.fund_request("ctr_1", "ms_1");
    let id = approval_id(&body);
    assert_eq!(app.submit(&body).await.0, 202);
    messages(&app, 1).await;
    eventually("the command menu", || async {
        let c = app.telegram.commands();
        (c.len() == 2).then_some(c)
    })
    .await;

    app.telegram.add_chat(999);
    app.telegram.push_text_update(999, 999, "/pending");
    app.telegram.push_text_update(CHAT, CHAT, "/pending");
    let reply = messages(&app, 2).await.remove(1);
    assert!(reply.text.contains("1 pending approval"), "{}", reply.text);
    assert!(
        reply.text.contains(&id)
            && reply.text.contains("$450.00")
            && reply.text.contains(" UTC (in "),
        "{}",
        reply.text
    );
    let link = reply
        .entities
        .iter()
        .find(|e| e["type"] == "text_link")
        .expect("a link to the approval");
    assert_eq!(link["url"], format!("{APP_URL}/approvals/{id}"));

    app.telegram.push_text_update(CHAT, CHAT, "/help");
    let help = messages(&app, 3).await.remove(2);
    assert!(help.text.contains("/pending"), "{}", help.text);
    // Updates are handled one at a time, in order: the answers to the owner's later commands
    // show that the stranger's earlier message was handled already.
    assert!(app.telegram.messages(999).is_empty(), "answered a stranger");
}

#[tokio::test]
async fn metrics_count_what_happened_in_a_scripted_run() {
    let app = spawn_app().await;
    let body = app.fund_request("ctr_1", "ms_1");
    let id = approval_id(&body);
    assert_eq!(app.submit(&body).await.0, 202);
    assert_eq!(app.submit(&body).await.0, 200);
    assert_eq!(
        app.post_json("/v1/approvals", Some(HOOK_TOKEN), b"{".to_vec())
            .await
            .0,
        400
    );
    let msg = messages(&app, 1).await.remove(0);
    app.opentrain.resolve(&id, "confirmed", None);
    eventually("the edit", || async {
        app.telegram
            .messages(CHAT)
            .into_iter()
            .find(|m| m.message_id == msg.message_id && m.text.contains("Confirmed"))
    })
    .await;
    no_due_work(&app).await;
    let resp = app
        .client
        .get(format!("{}/metrics", app.hook))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "no token needed on loopback");
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = resp.text().await.unwrap();
    for expected in [
        "countersign_submissions_total{outcome=\"accepted\"} 1",
        "countersign_submissions_total{outcome=\"duplicate\"} 1",
        "countersign_submissions_total{outcome=\"refused\"} 1",
        "countersign_deliveries_total{action=\"post\",channel=\"telegram\",outcome=\"ok\"} 1",
        "countersign_deliveries_total{action=\"edit\",channel=\"telegram\",outcome=\"ok\"} 1",
        "countersign_approvals{status=\"confirmed\"} 1",
        "countersign_pending_approvals 0",
        "countersign_hook_request_duration_seconds_count{route=\"/v1/approvals\",status=\"202\"} 1",
        "countersign_approval_resolution_seconds_count 1",
    ] {
        assert!(text.contains(expected), "{expected} missing from:\n{text}");
    }
    assert_no_secret("the output", &text);
}

#[tokio::test]
async fn sigterm_stops_the_daemon_cleanly_and_work_resumes_at_the_next_start() {
    let mut app = spawn_app_with(Options {
        telegram: false,
        // JSON logs, to check their shape too.
        extra_toml: "[log]\nformat = \"json\"\n".into(),
        ..Options::default()
    })
    .await;
    app.toml = app
        .toml
        .replace("[console]\nenabled = false", "[console]\nenabled = true");
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (_cfg_dir, config) = write_config(
        &app,
        &[
            (
                "listen = \"127.0.0.1:0\"",
                &format!("listen = \"127.0.0.1:{port}\""),
            ),
            (
                &app.store_path.display().to_string(),
                &dir.path().join("term.db").display().to_string(),
            ),
        ],
    );
    let spawn = || {
        Command::new(BIN)
            .args(["run", "-c", &config])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    };
    let hook = format!("http://127.0.0.1:{port}");
    let up = || async {
        eventually("the daemon answers", || async {
            app.client
                .get(format!("{hook}/healthz"))
                .send()
                .await
                .ok()
                .filter(|r| r.status() == 200)
                .map(|_| ())
        })
        .await
    };
    let mut child = spawn();
    up().await;
    // OpenTrain is down: the approval is accepted and must wait in the store.
    app.opentrain.set_down(true);
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
    let pid = child.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("stopped in time")
        .unwrap();
    assert!(status.success(), "exit status {status}");
    let mut log = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut child.stderr.take().unwrap(), &mut log)
        .await
        .unwrap();
    assert!(log.contains("countersign stopped"), "{log}");
    // log.format = "json": one JSON object a line, and the approval's lines carry its id.
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let accepted = lines
        .iter()
        .find(|l| l["fields"]["message"] == "accepted")
        .unwrap_or_else(|| panic!("no 'accepted' line:\n{log}"));
    assert_eq!(accepted["fields"]["approval_id"], id.as_str());

    app.opentrain.set_down(false);
    let mut child = spawn();
    up().await;
    let view = eventually("verified after the restart", || async {
        let v: Value = app
            .client
            .get(format!("{hook}/v1/approvals/{id}"))
            .bearer_auth(HOOK_TOKEN)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (v["status"] == "pending").then_some(v)
    })
    .await;
    assert_eq!(view["deliveries"][0]["channel"], "console");
    child.start_kill().ok();
}

#[tokio::test]
async fn check_covers_discord_in_dm_and_channel_mode() {
    for mode in [DiscordMode::Dm, DiscordMode::Channel] {
        let app = spawn_app_with(Options {
            discord: Some(mode),
            ..Options::default()
        })
        .await;
        let (_dir, config) = write_config(&app, &[]);
        let (code, out, err) = countersign(&["check", "-c", &config]).await;
        assert_eq!(code, 0, "{mode:?}: {out}{err}");
        let line = out
            .lines()
            .find(|l| l.contains("discord"))
            .unwrap_or_else(|| panic!("{out}"));
        assert!(line.starts_with("ok"), "{line}");
        assert_eq!(
            app.discord.count("POST", "/messages"),
            0,
            "check posted to Discord"
        );
        let (_dir, config) = write_config(&app, &[(DC_TOKEN, "MTIz.wrong")]);
        let (code, out, _) = countersign(&["check", "-c", &config]).await;
        assert_eq!(code, 1);
        assert!(
            out.lines()
                .any(|l| l.starts_with("FAIL") && l.contains("discord.bot_token")),
            "{out}"
        );
        assert!(!out.contains(DC_TOKEN));
    }
}
