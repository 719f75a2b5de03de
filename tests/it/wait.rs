//! SPEC §3.7: the agent learns the outcome. The long poll (`GET /v1/approvals/{id}?wait=`)
//! against the running app, and `countersign submit --wait` / `countersign wait` through the
//! real binary: every exit code, and a wait that spans a daemon restart.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use crate::reliability::hire;
use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_countersign");

/// Longer than any test here may take: a long poll answered only by its timeout fails the test.
const HOLD_SECS: u64 = 120;

/// `GET /v1/approvals/{id}?wait=SECS` in the background: (status, body, how long it took).
fn long_poll(app: &TestApp, id: &str, secs: u64) -> JoinHandle<(u16, Value, Duration)> {
    let request = app
        .client
        .get(format!("{}/v1/approvals/{id}?wait={secs}", app.hook))
        .bearer_auth(HOOK_TOKEN);
    tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        let resp = request.send().await.expect("hook reachable");
        let status = resp.status().as_u16();
        let body = resp.json().await.unwrap_or(Value::Null);
        (status, body, started.elapsed())
    })
}

/// The answer of a long poll, failing the test if it is not answered within `PATIENCE`.
async fn answered(poll: JoinHandle<(u16, Value, Duration)>) -> (u16, Value, Duration) {
    tokio::time::timeout(PATIENCE, poll)
        .await
        .expect("the long poll was answered")
        .expect("the long poll task")
}

/// Waits until the hook holds `n` long polls (`countersign_hook_long_polls`).
async fn held(app: &TestApp, n: usize) {
    let line = format!("countersign_hook_long_polls {n}\n");
    eventually(&format!("{n} long poll(s) held"), || async {
        let text = app
            .client
            .get(format!("{}/metrics", app.hook))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.contains(&line).then_some(())
    })
    .await;
}

/// A fund request submitted and posted to the owner: its id.
async fn posted(app: &TestApp) -> String {
    let body = app.fund_request("ctr_1", "ms_1");
    let id = approval_id(&body);
    assert_eq!(app.submit(&body).await.0, 202);
    messages(app, 1).await;
    id
}

#[tokio::test]
async fn long_poll_answers_as_soon_as_the_approval_is_resolved() {
    let app = spawn_app().await;
    let body = app.fund_request("ctr_1", "ms_1");
    let id = approval_id(&body);
    assert_eq!(app.submit(&body).await.0, 202);
    // Held from `verifying`: being verified (now `pending`) is a change, but not an outcome.
    let poll = long_poll(&app, &id, HOLD_SECS);
    held(&app, 1).await;
    messages(&app, 1).await;
    assert_eq!(app.approval(&id).await["status"], "pending");
    app.opentrain.resolve(&id, "confirmed", None);
    let (status, view, _) = answered(poll).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["id"], id.as_str());
    assert_eq!(view["status"], "confirmed", "{view}");
    assert!(view["resolved_at"].is_string(), "{view}");
    held(&app, 0).await;
}

#[tokio::test]
async fn every_waiter_on_one_approval_is_answered() {
    let app = spawn_app().await;
    let id = posted(&app).await;
    let polls: Vec<_> = (0..50).map(|_| long_poll(&app, &id, HOLD_SECS)).collect();
    held(&app, 50).await;
    app.opentrain.resolve(&id, "declined", None);
    for poll in polls {
        let (status, view, _) = answered(poll).await;
        assert_eq!((status, view["status"].as_str()), (200, Some("declined")));
    }
}

#[tokio::test]
async fn long_poll_answers_with_the_open_state_when_its_time_is_up() {
    let app = spawn_app().await;
    let id = posted(&app).await;
    let (status, view, took) = answered(long_poll(&app, &id, 1)).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["status"], "pending", "{view}");
    assert!(took >= Duration::from_secs(1), "answered after {took:?}");
    assert_eq!(view, app.approval(&id).await, "the usual body");
}

#[tokio::test]
async fn long_poll_on_a_final_approval_answers_at_once() {
    let app = spawn_app().await;
    let id = posted(&app).await;
    app.opentrain.resolve(&id, "declined", None);
    eventually("the approval is declined", || async {
        (app.approval(&id).await["status"] == "declined").then_some(())
    })
    .await;
    let (status, view, _) = answered(long_poll(&app, &id, HOLD_SECS)).await;
    assert_eq!((status, view["status"].as_str()), (200, Some("declined")));
}

#[tokio::test]
async fn a_bad_wait_is_a_400_with_the_usual_json_error() {
    let app = spawn_app().await;
    let id = posted(&app).await;
    for wait in [
        "0",
        "301",
        "-1",
        "1.5",
        "abc",
        "",
        "99999999999999999999999",
    ] {
        let (status, body) = app.get(&format!("/v1/approvals/{id}?wait={wait}")).await;
        assert_eq!(status, 400, "wait={wait}: {body}");
        assert_eq!(body["error"], "bad_wait", "wait={wait}: {body}");
        assert!(body["message"].as_str().unwrap().contains("300"), "{body}");
    }
    // The token is checked first: a bad wait tells a stranger nothing.
    let resp = app
        .client
        .get(format!("{}/v1/approvals/{id}?wait=0", app.hook))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    // The edges are fine.
    assert_eq!(app.get(&format!("/v1/approvals/{id}?wait=1")).await.0, 200);
    held(&app, 0).await;
}

#[tokio::test]
async fn a_long_poll_on_an_unknown_id_is_a_404_at_once() {
    let app = spawn_app().await;
    for id in ["apr_never_submitted", "not an id"] {
        let (status, body, _) = answered(long_poll(&app, id, 300)).await;
        assert_eq!(status, 404, "{body}");
        assert_eq!(body["error"], "not_found", "{body}");
    }
}

#[tokio::test]
async fn shutdown_answers_every_held_long_poll_with_the_current_state() {
    let mut app = spawn_app().await;
    let id = posted(&app).await;
    let polls: Vec<_> = (0..3).map(|_| long_poll(&app, &id, 300)).collect();
    held(&app, 3).await;
    // Shutdown waits for open requests: it finishes only because the long polls answer.
    tokio::time::timeout(PATIENCE, app.stop())
        .await
        .expect("shutdown did not wait for the long polls");
    for poll in polls {
        let (status, view, _) = answered(poll).await;
        assert_eq!((status, view["status"].as_str()), (200, Some("pending")));
    }
}

// ------------------------------------------------------------------------------------------
// the binary: `submit --wait` and `wait`

/// The app's config with the hook's real address instead of port 0: what the binary reads, and
/// what a restart must bind again.
fn pinned_toml(app: &TestApp) -> String {
    let addr = app.hook.trim_start_matches("http://");
    let toml = app.toml.replace(
        "[hook]\nlisten = \"127.0.0.1:0\"",
        &format!("[hook]\nlisten = \"{addr}\""),
    );
    assert!(toml.contains(&format!("listen = \"{addr}\"")), "{toml}");
    toml
}

/// The app's config for the binary.
fn config_file(app: &TestApp) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("countersign.toml");
    std::fs::write(&path, pinned_toml(app)).unwrap();
    (dir, path)
}

/// Starts `countersign <args> -c <config>` with its output captured.
fn countersign(config: &PathBuf, args: &[&str]) -> Child {
    Command::new(BIN)
        .args(args)
        .arg("-c")
        .arg(config)
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the countersign binary starts")
}

/// Waits for the command to exit: its code, its stdout (which must be exactly one JSON object)
/// and its stderr.
async fn exited(child: Child) -> (i32, Value, String) {
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the command finished")
        .expect("the command ran");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}):\n{stdout}\n{stderr}"));
    assert!(json.is_object(), "{stdout}");
    assert_no_secret("the output", &format!("{stdout}{stderr}"));
    (out.status.code().unwrap_or(-1), json, stderr)
}

fn body_file(dir: &tempfile::TempDir, body: &Value) -> String {
    let path = dir.path().join("response.json");
    std::fs::write(&path, serde_json::to_vec(body).unwrap()).unwrap();
    path.display().to_string()
}

#[tokio::test]
async fn submit_wait_exits_0_when_the_owner_confirms() {
    let app = spawn_app().await;
    let (dir, config) = config_file(&app);
    let body = app.fund_request("ctr_1", "ms_1");
    let id = approval_id(&body);
    let file = body_file(&dir, &body);
    let child = countersign(&config, &["submit", "--wait", &file]);
    messages(&app, 1).await;
    app.opentrain.resolve(&id, "confirmed", None);
    let (code, state, err) = exited(child).await;
    assert_eq!(code, 0, "{state} {err}");
    assert_eq!(state["id"], id.as_str());
    assert_eq!(state["status"], "confirmed");
    assert_eq!(state["type"], "milestone_fund");
}

#[tokio::test]
async fn wait_exits_3_when_the_owner_declines() {
    let app = spawn_app().await;
    let (_dir, config) = config_file(&app);
    let id = posted(&app).await;
    let child = countersign(&config, &["wait", &id]);
    held(&app, 1).await;
    app.opentrain.resolve(&id, "declined", None);
    let (code, state, err) = exited(child).await;
    assert_eq!(code, 3, "{state} {err}");
    assert_eq!(state["status"], "declined");
}

#[tokio::test]
async fn submit_wait_from_stdin_exits_4_when_nobody_answers_in_time() {
    let app = spawn_app().await;
    let (_dir, config) = config_file(&app);
    let mut body = app.fund_request("ctr_1", "ms_1");
    let id = approval_id(&body);
    app.opentrain.set_expires_at(
        &id,
        chrono::Utc::now() + chrono::Duration::milliseconds(1500),
    );
    body["approval"] = app.opentrain.approval(&id).unwrap();
    // The agent's three lines: `curl … | countersign submit --wait -`.
    let mut child = countersign(&config, &["submit", "--wait", "-"]);
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(&serde_json::to_vec(&body).unwrap())
        .await
        .unwrap();
    drop(stdin);
    let (code, state, err) = exited(child).await;
    assert_eq!(code, 4, "{state} {err}");
    assert_eq!(state["status"], "expired");
}

#[tokio::test]
async fn wait_exits_5_when_a_newer_request_supersedes_the_approval() {
    let app = spawn_app().await;
    let (_dir, config) = config_file(&app);
    app.opentrain
        .add_simple_proposal("prop_1", "Spanish Sentiment Labeling", "Maria G.");
    let old = hire(&app, "prop_1", 300).await;
    let old_id = approval_id(&old);
    assert_eq!(app.submit(&old).await.0, 202);
    messages(&app, 1).await;
    let child = countersign(&config, &["wait", &old_id]);
    held(&app, 1).await;
    let new = hire(&app, "prop_1", 450).await;
    assert_eq!(app.submit(&new).await.0, 202);
    let (code, state, err) = exited(child).await;
    assert_eq!(code, 5, "{state} {err}");
    assert_eq!(state["status"], "superseded");
    assert_eq!(state["superseded_by"], approval_id(&new).as_str());
}

#[tokio::test]
async fn submit_wait_exits_6_when_opentrain_does_not_know_the_approval() {
    let app = spawn_app().await;
    let (dir, config) = config_file(&app);
    let id = "apr_never_requested";
    let body = json!({"approval": {
        "id": id, "type": "milestone_fund", "status": "pending",
        "contractId": "ctr_x", "milestoneId": "ms_x", "jobId": "job_x",
        "approvalUrl": format!("{APP_URL}/approvals/{id}"),
        "expiresAt": "2030-01-01T00:00:00.000Z"
    }});
    let file = body_file(&dir, &body);
    let (code, state, err) = exited(countersign(&config, &["submit", "--wait", &file])).await;
    assert_eq!(code, 6, "{state} {err}");
    assert_eq!(state["status"], "rejected");
    assert!(state["reason"].as_str().unwrap().contains("404"), "{state}");
}

#[tokio::test]
async fn wait_exits_7_when_its_time_is_up_first() {
    let app = spawn_app().await;
    let (dir, config) = config_file(&app);
    let id = posted(&app).await;
    let (code, state, err) = exited(countersign(&config, &["wait", "--timeout", "1s", &id])).await;
    assert_eq!(code, 7, "{state} {err}");
    assert_eq!(state["status"], "pending");
    // `submit --wait=DURATION` the same way (a duplicate submission: it waits all the same).
    let file = body_file(
        &dir,
        &json!({"approval": app.opentrain.approval(&id).unwrap()}),
    );
    let (code, state, err) = exited(countersign(&config, &["submit", "--wait=1s", &file])).await;
    assert_eq!(code, 7, "{state} {err}");
    assert_eq!(state["status"], "pending");
}

#[tokio::test]
async fn wait_exits_8_for_a_final_status_it_does_not_know() {
    let app = spawn_app().await;
    let (_dir, config) = config_file(&app);
    let id = posted(&app).await;
    // OpenTrain's statuses are only partly documented: one it resolved but countersign does not
    // know is final, shown raw, and never taken for another outcome.
    app.opentrain.resolve(&id, "cancelled", None);
    let (code, state, err) = exited(countersign(&config, &["wait", &id])).await;
    assert_eq!(code, 8, "{state} {err}");
    assert_eq!(state["status"], "cancelled");
}

#[tokio::test]
async fn exit_1_when_countersign_cannot_be_asked() {
    let app = spawn_app().await;
    let (dir, config) = config_file(&app);
    let id = posted(&app).await;

    // An unknown id, a wrong token, a body the hook refuses: the hook's own JSON error.
    let (code, answer, _) = exited(countersign(&config, &["wait", "apr_unknown"])).await;
    assert_eq!((code, answer["error"].as_str()), (1, Some("not_found")));
    let toml = std::fs::read_to_string(&config).unwrap();
    let wrong = dir.path().join("wrong-token.toml");
    std::fs::write(&wrong, toml.replace(HOOK_TOKEN, "not-the-token")).unwrap();
    let (code, answer, _) = exited(countersign(&wrong, &["wait", &id])).await;
    assert_eq!((code, answer["error"].as_str()), (1, Some("unauthorized")));
    let file = body_file(
        &dir,
        &json!({"approval": {"id": "apr_1", "type": "teleport"}}),
    );
    let (code, answer, err) = exited(countersign(&config, &["submit", "--wait", &file])).await;
    assert_eq!(code, 1, "{answer} {err}");
    assert!(answer["error"].is_string(), "{answer}");

    // No daemon at the configured address: said at once, not waited on.
    let closed = closed_address();
    let nowhere = dir.path().join("nowhere.toml");
    let addr = app.hook.trim_start_matches("http://");
    std::fs::write(
        &nowhere,
        toml.replace(addr, closed.trim_start_matches("http://")),
    )
    .unwrap();
    for args in [
        vec!["wait", id.as_str()],
        vec!["submit", "--wait", file.as_str()],
    ] {
        let (code, answer, err) = exited(countersign(&nowhere, &args)).await;
        assert_eq!(code, 1, "{args:?}: {answer} {err}");
        assert_eq!(answer["error"], "unreachable", "{answer}");
        assert!(err.contains("countersign run"), "{err}");
    }
}

/// An approval whose stored record cannot be read any more is set aside as `failed`: countersign
/// can no longer tell how it ends. A held long poll answers at once with that state and its
/// reason, and `countersign wait` exits 1 (an error, not an outcome the owner gave) saying how
/// to repair it.
#[tokio::test]
async fn a_record_set_aside_as_unreadable_ends_the_wait_with_exit_1() {
    let app = spawn_app_with(Options {
        poll_interval_secs: 3600,
        ..Options::default()
    })
    .await;
    let (_dir, config) = config_file(&app);
    let id = posted(&app).await;
    let poll = long_poll(&app, &id, HOLD_SECS);
    let child = countersign(&config, &["wait", &id]);
    held(&app, 2).await;

    // As if another version of countersign had written bytes where this one reads text; the
    // approval's next read (a doorbell) claims it and sets it aside.
    let db = rusqlite::Connection::open(&app.store_path).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    db.execute(
        "UPDATE approvals SET superseded_by = x'2a' WHERE id = ?1",
        [&id],
    )
    .unwrap();
    let event = json!({"id": "77", "type": "approval.confirmed", "apiVersion": "v1",
        "createdAt": "2026-06-12T10:05:00.000Z", "resourceId": id, "jobId": null,
        "data": {"approvalId": id}});
    let (status, answer) = app
        .post_json("/v1/events", Some(HOOK_TOKEN), json_body(event))
        .await;
    assert_eq!(status, 202, "{answer}");

    let (status, view, _) = answered(poll).await;
    assert_eq!(
        (status, view["status"].as_str()),
        (200, Some("failed")),
        "{view}"
    );
    assert!(
        view["reason"]
            .as_str()
            .is_some_and(|r| r.contains("cannot be read")),
        "{view}"
    );
    let (code, state, err) = exited(child).await;
    assert_eq!(code, 1, "{state} {err}");
    assert_eq!(state["status"], "failed");
    assert_eq!(state["reason"], view["reason"]);
    assert!(err.contains("submitting the same body again"), "{err}");
}

#[tokio::test]
async fn a_wait_rides_out_a_daemon_restart() {
    let mut app = spawn_app().await;
    // The restarted daemon must come back on the same address, as a real one would.
    app.toml = pinned_toml(&app);
    let hook = app.hook.clone();
    let (_dir, config) = config_file(&app);
    let id = posted(&app).await;
    let mut child = countersign(&config, &["wait", &id]);
    held(&app, 1).await;

    app.stop().await;
    // The wait saw the daemon go (its long poll answered at shutdown, the next one refused) and
    // keeps waiting.
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = String::new();
    tokio::time::timeout(PATIENCE, async {
        while let Some(line) = stderr.next_line().await.unwrap() {
            seen.push_str(&line);
            if line.contains("still waiting") {
                return;
            }
        }
        panic!("the wait ended: {seen}");
    })
    .await
    .unwrap_or_else(|_| panic!("the wait never noticed the daemon was gone: {seen}"));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the wait gave up on a restart"
    );

    let app = app.restart().await;
    assert_eq!(app.hook, hook);
    held(&app, 1).await;
    app.opentrain.resolve(&id, "confirmed", None);
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("the wait finished")
        .unwrap();
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0), "{stdout} {seen}");
    let state: Value = serde_json::from_str(&stdout).expect("one JSON object");
    assert_eq!(state["status"], "confirmed");
}
