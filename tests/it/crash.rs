//! SPEC §4.1–4.2 under the worst conditions: the real binary is killed with SIGKILL at random
//! moments during bursts of submissions and resolutions, and restarted on the same store. Every
//! approval that got a 2xx must reach the chat (at most one duplicate per crash) and end edited
//! to its final status. Leases left by the dead process must not strand anything.
//!
//! `COUNTERSIGN_CRASH_CYCLES` sets the number of kills (default 4; CI may run more).

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use countersign_fakes::{FakeOpenTrain, FakeTelegram};
use serde_json::Value;
use tokio::process::{Child, Command};

use crate::support::*;

const PER_BURST: usize = 15;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start_daemon(config: &Path, log: &Path, hook: &str, client: &reqwest::Client) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_countersign"))
        .args(["run", "-c"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .expect("the countersign binary starts");
    eventually("the daemon answers /healthz", || async {
        client
            .get(format!("{hook}/healthz"))
            .send()
            .await
            .ok()
            .filter(|r| r.status().is_success())
            .map(|_| ())
    })
    .await;
    child
}

async fn submit(client: &reqwest::Client, hook: &str, body: &Value) -> Option<u16> {
    let resp = client
        .post(format!("{hook}/v1/approvals"))
        .bearer_auth(HOOK_TOKEN)
        .json(body)
        .send()
        .await
        .ok()?;
    Some(resp.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_no_accepted_approval() {
    let cycles: usize = std::env::var("COUNTERSIGN_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let opentrain = FakeOpenTrain::start(OT_TOKEN, APP_URL).await;
    let telegram = FakeTelegram::start(TG_TOKEN, CHAT).await;
    telegram.set_min_interval(Duration::from_millis(15));
    let dir = tempfile::tempdir().unwrap();
    let hook = format!("http://127.0.0.1:{}", free_port());
    let config = dir.path().join("countersign.toml");
    let log = dir.path().join("daemon.log");
    std::fs::write(
        &config,
        format!(
            "[hook]\nlisten = \"{}\"\ntoken = \"{HOOK_TOKEN}\"\n\
             [opentrain]\napi_url = \"{}\"\napp_url = \"{APP_URL}\"\ntoken = \"{OT_TOKEN}\"\npoll_interval_secs = 1\n\
             [store]\npath = \"{}\"\n\
             [telegram]\nbot_token = \"{TG_TOKEN}\"\nchat_id = {CHAT}\napi_url = \"{}\"\nmin_send_interval_ms = 20\n\
             [reminders]\nbefore_expiry = []\n",
            hook.trim_start_matches("http://"),
            opentrain.api_url(),
            dir.path().join("countersign.db").display(),
            telegram.api_url(),
        ),
    )
    .unwrap();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();

    let mut accepted: Vec<String> = Vec::new();
    let mut resolved: HashMap<String, &'static str> = HashMap::new();
    for cycle in 0..cycles {
        let mut child = start_daemon(&config, &log, &hook, &client).await;
        // Resolve some of what is already accepted, so edits are in flight too.
        let open: Vec<String> = accepted
            .iter()
            .filter(|id| !resolved.contains_key(*id))
            .take(PER_BURST / 2)
            .cloned()
            .collect();
        for id in open {
            let status = if fastrand::bool() {
                "confirmed"
            } else {
                "declined"
            };
            opentrain.resolve(&id, status, None);
            resolved.insert(id, status);
        }
        let bodies: Vec<Value> = (0..PER_BURST)
            .map(|i| {
                let (c, m) = (format!("ctr_{cycle}_{i}"), format!("ms_{cycle}_{i}"));
                opentrain.add_simple_contract(
                    &c,
                    "Crash test contract",
                    "Maria G.",
                    &[(m.as_str(), "Batch", 100.0, "NOT_FUNDED")],
                );
                opentrain.create_approval("milestone_fund", Some(&c), Some(&m), None)
            })
            .collect();
        let burst = {
            let (client, hook, bodies) = (client.clone(), hook.clone(), bodies.clone());
            tokio::spawn(async move {
                let answers = futures_util::future::join_all(
                    bodies.iter().map(|b| submit(&client, &hook, b)),
                )
                .await;
                bodies
                    .iter()
                    .map(approval_id)
                    .zip(answers)
                    .collect::<Vec<_>>()
            })
        };
        // A kill at a random real moment of the burst: the real clock is the point.
        tokio::time::sleep(Duration::from_millis(fastrand::u64(30..700))).await;
        child.start_kill().expect("SIGKILL");
        child.wait().await.unwrap();
        for (id, answer) in burst.await.unwrap() {
            if matches!(answer, Some(200 | 202)) {
                accepted.push(id);
            }
        }
    }
    assert!(
        !accepted.is_empty(),
        "no submission was accepted: the test proves nothing"
    );

    // One last, undisturbed run must finish everything the dead processes left.
    let mut child = start_daemon(&config, &log, &hook, &client).await;
    let expect = |m: &countersign_fakes::telegram::FakeMessage, id: &str| {
        m.text.contains(&format!("approval {id}"))
    };
    // Finished: every accepted approval has a message, and a resolved one's tracked message
    // shows the outcome. (A duplicate posted in the instant before a crash is unknown to the
    // store — Telegram has no idempotency key — so only the tracked message is edited.)
    let unfinished = |msgs: &[countersign_fakes::telegram::FakeMessage]| -> Vec<String> {
        accepted
            .iter()
            .filter(|id| {
                let mine: Vec<_> = msgs.iter().filter(|m| expect(m, id)).collect();
                let word = match resolved.get(*id) {
                    None => "",
                    Some(&"confirmed") => "Confirmed",
                    Some(_) => "Declined",
                };
                !mine.iter().any(|m| m.text.contains(word))
            })
            .cloned()
            .collect()
    };
    let outcome = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            let msgs = telegram.messages(CHAT);
            if unfinished(&msgs).is_empty() {
                return msgs;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    child.start_kill().ok();
    let msgs = match outcome {
        Ok(m) => m,
        Err(_) => {
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: String = tail.lines().rev().take(40).collect::<Vec<_>>().join("\n");
            let left = unfinished(&telegram.messages(CHAT));
            panic!(
                "{} of {} accepted approvals never reached their final message: {:?}\ndaemon log (newest first):\n{tail}",
                left.len(),
                accepted.len(),
                &left[..left.len().min(10)]
            );
        }
    };
    // A repeat is a message whose approvals an earlier message already held: a crash between a
    // send and its record repeats one message, of one approval or of a group (SPEC §3.9).
    let duplicates = msgs
        .iter()
        .enumerate()
        .filter(|(i, m)| {
            accepted
                .iter()
                .any(|id| expect(m, id) && msgs[..*i].iter().any(|e| expect(e, id)))
        })
        .count();
    assert!(
        duplicates <= cycles,
        "{duplicates} duplicate messages after {cycles} crashes (at most one per crash)"
    );
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    for secret in [OT_TOKEN, TG_TOKEN, HOOK_TOKEN] {
        assert!(!log_text.contains(secret), "the daemon logged a secret");
    }
}
