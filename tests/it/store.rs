//! The store's failure paths (issue #11): one bad record never stops the rest, a failing store
//! never spins, leases outlast the work, the writer says what went wrong, and old store files
//! still open.

use std::path::Path;
use std::time::{Duration, Instant};

use countersign::approval::{AgentContext, Kind, WireApproval};
use countersign::config::Synchronous;
use countersign::store::{NewSubmission, Store, StoreOptions};
use countersign::verify::Verifier;
use serde_json::{Value, json};

use crate::support::*;

/// A connection of its own to a store file, as an operator's `sqlite3` would have.
fn outside(path: &Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(path).expect("open the store file");
    c.busy_timeout(Duration::from_secs(5)).unwrap();
    c
}

/// The value of one sample in the hook's `/metrics` (0 when absent).
async fn metric(app: &TestApp, sample: &str) -> f64 {
    let text = app
        .client
        .get(format!("{}/metrics", app.hook))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Waits until no daemon holds the store at `path` (its writer has closed the database).
async fn released(path: &Path) {
    let mut lock = path.as_os_str().to_owned();
    lock.push(".lock");
    eventually("the daemon lets go of the store", || async {
        let file = std::fs::File::open(&lock).ok()?;
        file.try_lock().ok()
    })
    .await;
}

fn submission(body: &Value, now: i64) -> NewSubmission {
    let approval: WireApproval = serde_json::from_value(body["approval"].clone()).unwrap();
    NewSubmission {
        kind: Kind::parse(&approval.kind).unwrap(),
        approval,
        agent: AgentContext::default(),
        now,
    }
}

/// A fund request for the store alone (no OpenTrain behind it), received at time 0.
fn fund(id: &str) -> NewSubmission {
    let body = json!({"approval": {
        "id": id, "type": "milestone_fund", "status": "pending",
        "contractId": "ctr_1", "milestoneId": "ms_1",
        "approvalUrl": format!("{APP_URL}/approvals/{id}"),
        "expiresAt": "2099-01-01T00:00:00.000Z"
    }});
    submission(&body, 0)
}

async fn open_store(path: &Path) -> Store {
    Store::open(&StoreOptions::new(path, Synchronous::Full))
        .await
        .expect("store opens")
}

// ------------------------------------------------------------------ 1. poison rows

#[tokio::test]
async fn a_poison_row_first_in_the_verify_queue_is_set_aside_and_the_others_are_verified() {
    let mut app = spawn_app().await;
    app.stop().await;
    let bodies: Vec<Value> = (0..3)
        .map(|i| app.fund_request(&format!("ctr_{i}"), &format!("ms_{i}")))
        .collect();
    let poison = approval_id(&bodies[0]);
    {
        let store = open_store(&app.store_path).await;
        for (i, body) in bodies.iter().enumerate() {
            // The poison is the oldest, so it comes first in claim order.
            store
                .insert_submission(submission(body, 1_000 + i as i64))
                .await
                .unwrap();
        }
    }
    // As if a later version had written a field this one cannot read.
    outside(&app.store_path)
        .execute(
            "UPDATE approvals SET agent_json = '{\"agent\": 42}' WHERE id = ?1",
            [&poison],
        )
        .unwrap();
    let app = app.restart().await;

    let msgs = messages(&app, 2).await;
    for body in &bodies[1..] {
        let id = approval_id(body);
        assert!(
            msgs.iter().any(|m| m.text.contains(&id)),
            "{id} was not posted"
        );
    }
    let view = eventually("the poison row marked failed", || async {
        let v = app.approval(&poison).await;
        (v["status"] == "failed").then_some(v)
    })
    .await;
    let reason = view["reason"].as_str().unwrap();
    assert!(
        reason.contains("cannot be read") && reason.contains("agent_json"),
        "{reason}"
    );
    assert_eq!(
        metric(
            &app,
            "countersign_unreadable_records_total{queue=\"verify\"}"
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(&app, "countersign_approvals{status=\"failed\"}").await,
        1.0
    );
    let listed = countersign::store::list_read_only(&app.store_path, false, 100).unwrap();
    let table = countersign::list::table(&listed.approvals);
    let line = table.lines().find(|l| l.contains(&poison)).expect("listed");
    assert!(
        line.contains("failed (the stored record cannot be read"),
        "{line}"
    );

    // Re-submitting it is the repair: stored again, verified, posted.
    let (status, answer) = app.submit(&bodies[0]).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["duplicate"], false);
    let msgs = messages(&app, 3).await;
    assert!(msgs.iter().any(|m| m.text.contains(&poison)));
    assert_eq!(
        app.opentrain
            .count("GET", &format!("/api/public/v1/approvals/{poison}")),
        1,
        "it was verified once, after the repair"
    );
}

#[tokio::test]
async fn a_poison_row_first_in_a_delivery_queue_is_set_aside_and_the_other_edits_go_out() {
    let mut app = spawn_app().await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let body = app.fund_request(&format!("ctr_{i}"), &format!("ms_{i}"));
        ids.push(approval_id(&body));
        assert_eq!(app.submit(&body).await.0, 202);
        messages(&app, i + 1).await;
    }
    app.stop().await;
    {
        let c = outside(&app.store_path);
        // Every message needs an edit; the first in claim order cannot be rendered.
        c.execute_batch(
            "UPDATE approvals SET version = version + 1;
             UPDATE deliveries SET due = 1;",
        )
        .unwrap();
        c.execute(
            "UPDATE approvals SET context_json = '{\"amount\": [1]}' WHERE id = ?1",
            [&ids[0]],
        )
        .unwrap();
    }
    let edits_before = app.telegram.count("editMessageText");
    let app = app.restart().await;

    for id in &ids[1..] {
        eventually(&format!("{id} edited"), || async {
            let v = app.approval(id).await;
            (v["deliveries"][0]["up_to_date"] == true).then_some(())
        })
        .await;
    }
    assert!(app.telegram.count("editMessageText") >= edits_before + 2);
    let view = eventually("the poison delivery marked failed", || async {
        let v = app.approval(&ids[0]).await;
        (v["deliveries"][0]["state"] == "failed").then_some(v)
    })
    .await;
    let error = view["deliveries"][0]["last_error"].as_str().unwrap();
    assert!(
        error.contains("cannot be read") && error.contains("context_json"),
        "{error}"
    );
    // The view itself still shows the row, saying what is wrong with it.
    assert!(
        view["reason"]
            .as_str()
            .is_some_and(|r| r.contains("context_json")),
        "{view}"
    );
    assert_eq!(
        metric(
            &app,
            "countersign_unreadable_records_total{queue=\"delivery\"}"
        )
        .await,
        1.0
    );
}

// ------------------------------------------------------------------ 2. no spinning

/// CPU time this thread has used (Linux), if the kernel says.
fn thread_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = stat.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

#[tokio::test]
async fn a_failing_reminder_write_backs_off_instead_of_spinning() {
    // The app runs on this test's thread, so its CPU time and its logs are this thread's.
    let logs = capture_logs();
    let app = spawn_app_with(Options {
        extra_toml: "[reminders]\nbefore_expiry = [\"1h\"]\n".into(),
        ..Options::default()
    })
    .await;
    // From now on, writing a reminder fails, as on a full disk (verification, which writes
    // the count of reminders already due, still succeeds).
    outside(&app.store_path)
        .execute_batch(
            "CREATE TRIGGER fail_reminders BEFORE UPDATE OF reminder_seq ON approvals
             WHEN NEW.reminder_seq > OLD.reminder_seq
             BEGIN SELECT RAISE(ABORT, 'disk I/O error (injected)'); END;",
        )
        .unwrap();
    let mut body = app.fund_request("ctr_1", "ms_1");
    let id = approval_id(&body);
    // The 1 h reminder falls due two seconds from now.
    app.opentrain.set_expires_at(
        &id,
        chrono::Utc::now() + chrono::Duration::seconds(3600 + 2),
    );
    body["approval"] = app.opentrain.approval(&id).unwrap();
    assert_eq!(app.submit(&body).await.0, 202);
    messages(&app, 1).await;

    let errors = "countersign_store_write_errors_total";
    let first = eventually("the first failed reminder write", || async {
        let n = metric(&app, errors).await;
        (n >= 1.0).then_some(n)
    })
    .await;
    let (started, cpu_before) = (Instant::now(), thread_cpu());
    let lines_before = logs.text().lines().count();
    eventually("two more attempts", || async {
        (metric(&app, errors).await >= first + 2.0).then_some(())
    })
    .await;
    let elapsed = started.elapsed();
    // Backing off from 1 s (jittered to at least half), two retries take over a second; a
    // loop without a pause makes them in milliseconds.
    assert!(
        elapsed >= Duration::from_secs(1),
        "retried {} times in {elapsed:?}",
        metric(&app, errors).await - first
    );
    if let (Some(before), Some(after)) = (cpu_before, thread_cpu()) {
        let used = after - before;
        assert!(
            used < elapsed / 5,
            "the app used {used:?} of CPU in {elapsed:?} while the store failed"
        );
    }
    let text = logs.text();
    // (The capture holds every crate's TRACE lines, the test's own requests included; what an
    // operator's log would show is WARN and ERROR.)
    let loud: Vec<&str> = text
        .lines()
        .skip(lines_before)
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    assert!(
        loud.is_empty(),
        "the log grew while the store kept failing:\n{}",
        loud.join("\n")
    );
    assert_eq!(
        text.matches("cannot claim work from the store").count(),
        1,
        "one line for the streak, not one per failure:\n{text}"
    );

    // When the store takes writes again, the reminder goes out.
    outside(&app.store_path)
        .execute_batch("DROP TRIGGER fail_reminders")
        .unwrap();
    let msgs = messages(&app, 2).await;
    assert!(msgs[1].text.contains("Reminder"), "{}", msgs[1].text);
    assert!(logs.text().contains("the store answers again"));
}

// ------------------------------------------------------------------ 3. leases

#[tokio::test]
async fn a_verification_stays_claimed_for_two_full_request_timeouts() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir.path().join("countersign.db")).await;
    store.insert_submission(fund("apr_slow")).await.unwrap();
    // opentrain.request_timeout_secs may be 300, and a verification makes two calls.
    let lease = Verifier::lease(Duration::from_secs(300));
    let t0 = 1_000_000;
    assert_eq!(
        store
            .claim_verifications(t0, lease.duration(), 8)
            .await
            .unwrap()
            .len(),
        1
    );
    // The worker may still be waiting for its second call to time out: nobody else takes it
    // (a fixed 90-second lease gave it away here).
    let both_calls = t0 + 600_000;
    assert!(
        store
            .claim_verifications(both_calls, lease.duration(), 8)
            .await
            .unwrap()
            .is_empty(),
        "claimed twice while the first worker could still be verifying it"
    );
    // A worker that died holding it gives it back once the lease is over.
    let after = t0 + lease.duration().as_millis() as i64;
    assert_eq!(
        store.next_verification_at().await.unwrap(),
        Some(after),
        "the pool sleeps until the lease ends"
    );
    assert_eq!(
        store
            .claim_verifications(after, lease.duration(), 8)
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn a_slow_opentrain_gets_each_approval_verified_once() {
    let app = spawn_app_with(Options {
        poll_interval_secs: 3600,
        ..Options::default()
    })
    .await;
    let mut app = app;
    app.toml = app
        .toml
        .replace("request_timeout_secs = 5", "request_timeout_secs = 3");
    let app = app.restart().await;
    // Each answer takes 1.8 s: well within the 3 s timeout, but the two calls of a
    // verification together take longer than one timeout.
    app.opentrain.set_latency(Duration::from_millis(1800));
    let bodies: Vec<Value> = (0..4)
        .map(|i| app.fund_request(&format!("ctr_{i}"), &format!("ms_{i}")))
        .collect();
    for body in &bodies {
        // Each submission wakes the pool to claim while the earlier ones are in flight.
        assert_eq!(app.submit(body).await.0, 202);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    messages(&app, 4).await;
    for (i, body) in bodies.iter().enumerate() {
        let id = approval_id(body);
        for read in [
            format!("/api/public/v1/approvals/{id}"),
            format!("/api/public/v1/contracts/ctr_{i}"),
        ] {
            assert_eq!(
                app.opentrain.count("GET", &read),
                1,
                "{read} was read more than once: verification started over"
            );
        }
    }
    assert_eq!(app.telegram.count("sendMessage"), 4);
}

#[tokio::test]
async fn a_doorbell_outlives_a_read_that_never_finished_and_a_ring_during_the_read_is_kept() {
    use countersign::approval::Status;
    use countersign::store::ReadOutcome;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("countersign.db");
    let store = open_store(&path).await;
    store.insert_submission(fund("apr_bell")).await.unwrap();
    outside(&path)
        .execute_batch("UPDATE approvals SET phase = 'track', status = 'pending'")
        .unwrap();
    let ring = || store.ring_and_save_cursor(vec![approval("apr_bell")], None, 0);
    let still_pending = || ReadOutcome::Status {
        upstream: None,
        status: Status::Pending,
        terminal: false,
        next_read_at: None,
        backing_off: false,
    };
    let lease = Duration::from_secs(60);
    assert_eq!(ring().await.unwrap(), 1);
    let t0 = 1_000_000;
    assert_eq!(store.claim_reads(t0, lease, 8).await.unwrap().len(), 1);
    assert!(
        store
            .claim_reads(t0 + 1, lease, 8)
            .await
            .unwrap()
            .is_empty(),
        "claimed again while its read is in flight"
    );
    // The worker died mid-read (a crash, a stuck call): once its lease is over, the doorbell
    // it never answered is still ringing.
    let t1 = t0 + 60_000;
    let reads = store.claim_reads(t1, lease, 8).await.unwrap();
    assert_eq!(reads.len(), 1, "the doorbell was lost with the read");
    // It rings again during this read: the recorded read answers only the ring it saw.
    assert_eq!(ring().await.unwrap(), 1);
    store
        .finish_read(&reads[0], still_pending(), t1 + 1)
        .await
        .unwrap();
    // It is answered once the spacing between two reads of one approval has passed.
    let spacing = countersign::store::READ_SPACING.as_millis() as i64;
    assert!(
        store
            .claim_reads(t1 + 2, lease, 8)
            .await
            .unwrap()
            .is_empty(),
        "read again sooner than READ_SPACING after a read"
    );
    let t2 = t1 + 1 + spacing;
    let again = store.claim_reads(t2, lease, 8).await.unwrap();
    assert_eq!(again.len(), 1, "the ring during the read was lost");
    store
        .finish_read(&again[0], still_pending(), t2 + 1)
        .await
        .unwrap();
    assert!(
        store
            .claim_reads(t2 + 2 + spacing, lease, 8)
            .await
            .unwrap()
            .is_empty()
    );
}

// ------------------------------------------------------------------ 4. the writer's errors

/// `/healthz` asks [`Store::health`]: a store that cannot commit is reported, by one probe
/// write whose answer stands for a while (so a caller in a loop cannot load the disk), and a
/// store that commits again is reported healthy once that while is over.
#[tokio::test]
async fn health_probes_at_most_once_per_window_and_reports_a_store_that_cannot_commit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("countersign.db");
    let mut options = StoreOptions::new(&path, Synchronous::Full);
    options.busy_timeout = Duration::from_millis(50);
    let store = Store::open(&options).await.unwrap();
    let window = countersign::store::HEALTH_FRESH.as_millis() as i64;
    let now = countersign::worker::now_ms();

    let other = outside(&path);
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    store
        .health(now)
        .await
        .expect_err("a locked store is not healthy");
    other.execute_batch("COMMIT").unwrap();
    // Within the window the probe's answer stands: no second probe.
    store
        .health(now + 1)
        .await
        .expect_err("the probe's answer stands");
    assert!(
        other
            .query_row("SELECT value FROM kv WHERE key = 'healthcheck'", [], |r| {
                r.get::<_, String>(0)
            })
            .is_err(),
        "no probe write succeeded yet"
    );
    // After it, one new probe finds the store writable.
    store
        .health(now + window + 1)
        .await
        .expect("writable again");
}

#[tokio::test]
async fn a_transaction_that_cannot_begin_reports_why_and_the_writer_reopens() {
    let logs = capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("countersign.db");
    let mut options = StoreOptions::new(&path, Synchronous::Full);
    options.busy_timeout = Duration::from_millis(50);
    let store = Store::open(&options).await.unwrap();
    store.healthcheck(1).await.unwrap();

    // Another process holds the write lock: every transaction the writer begins fails.
    let other = outside(&path);
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let error = store.healthcheck(2).await.unwrap_err().to_string();
    assert!(
        error.contains("cannot start a transaction") && error.contains("locked"),
        "{error}"
    );
    assert!(!error.contains("stopped"), "{error}");
    for _ in 0..2 {
        store.healthcheck(3).await.unwrap_err();
    }
    eventually("the writer reopens its connection", || async {
        logs.text()
            .contains("reopened the database connection")
            .then_some(())
    })
    .await;
    other.execute_batch("COMMIT").unwrap();
    store.healthcheck(4).await.expect("writes succeed again");
    let text = eventually("the writer says it recovered", || async {
        let text = logs.text();
        text.contains("transactions commit again").then_some(text)
    })
    .await;
    assert_eq!(
        text.matches("a transaction failed").count(),
        1,
        "one line for the streak:\n{text}"
    );
    assert_eq!(store.write_errors(), 3);
}

// ------------------------------------------------------------------ 5. upgrades

const FIXTURE: &str = "tests/fixtures/store-v2.sqlite3";

#[tokio::test]
async fn a_v2_store_is_migrated_and_serves_its_approvals() {
    let mut app = spawn_app().await;
    app.stop().await;
    released(&app.store_path).await;
    for stale in ["-wal", "-shm"] {
        let mut p = app.store_path.as_os_str().to_owned();
        p.push(stale);
        let _ = std::fs::remove_file(p);
    }
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURE),
        &app.store_path,
    )
    .unwrap();
    let app = app.restart().await;

    for (id, status, kind) in [
        ("apr_1ri762b7nuptx", "pending", "milestone_fund"),
        ("apr_2b7ug4mw9w6tx", "confirmed", "milestone_fund"),
        ("apr_15muv3i6dk2v", "pending", "proposal_hire"),
        ("apr_fixture_unknown", "rejected", "milestone_fund"),
    ] {
        let v = app.approval(id).await;
        assert_eq!(v["status"], status, "{v}");
        assert_eq!(v["type"], kind, "{v}");
    }
    let pending = app.approval("apr_1ri762b7nuptx").await;
    assert_eq!(pending["agent"], "fixture-agent");
    assert_eq!(pending["amount"], "450");
    assert_eq!(pending["expires_at"], "2099-01-01T00:00:00Z");
    assert_eq!(pending["deliveries"][0]["channel"], "telegram");
    assert_eq!(pending["deliveries"][0]["posted"], true);
    assert_eq!(pending["deliveries"][0]["up_to_date"], true);
    let hire = app.approval("apr_15muv3i6dk2v").await;
    assert_eq!(hire["amount"], "300");
    let rejected = app.approval("apr_fixture_unknown").await;
    assert!(rejected["reason"].as_str().unwrap().contains("404"));
    // The counts /metrics shows were taken over from the old file.
    assert_eq!(
        metric(&app, "countersign_approvals{status=\"pending\"}").await,
        2.0
    );
    assert_eq!(
        metric(&app, "countersign_approvals{status=\"confirmed\"}").await,
        1.0
    );

    // The approval that was still verifying goes back to OpenTrain to be verified, and
    // nothing already shown is posted again.
    eventually("the verifying approval is read from OpenTrain", || async {
        (app.opentrain
            .count("GET", "/api/public/v1/approvals/apr_1v3mm4lokytjs")
            >= 1)
            .then_some(())
    })
    .await;
    assert_eq!(app.telegram.count("sendMessage"), 0);

    // The schema is current, and the index migration 2 made redundant is gone.
    let c = outside(&app.store_path);
    let version: i64 = c
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, 6);
    let redundant: i64 = c
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE name = 'approvals_phase_run'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(redundant, 0);
    // The claims still use an index rather than visiting every approval.
    let plan: Vec<String> = c
        .prepare(
            "EXPLAIN QUERY PLAN SELECT id FROM approvals
             WHERE phase = 'verify' AND run_after <= 1 AND lease_until <= 1
             ORDER BY run_after, received_at LIMIT 8",
        )
        .unwrap()
        .query_map([], |r| r.get::<_, String>(3))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(
        plan.iter().any(|p| p.contains("approvals_verify_queue")),
        "{plan:?}"
    );

    // A re-submission of a stored approval is a duplicate, and `list` reads the file.
    let id = "apr_1ri762b7nuptx";
    let again = json!({"approval": {
        "id": id, "type": "milestone_fund", "status": "pending",
        "contractId": "ctr_a", "milestoneId": "ms_a",
        "approvalUrl": format!("{APP_URL}/approvals/{id}"),
        "expiresAt": "2099-01-01T00:00:00.000Z"
    }});
    let (status, answer) = app.submit(&again).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["duplicate"], true);
    assert_eq!(answer["status"], "pending");
    let listed = countersign::store::list_read_only(&app.store_path, true, 100).unwrap();
    assert_eq!(listed.approvals.len(), 5);
}

#[tokio::test]
async fn a_store_from_a_newer_countersign_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("countersign.db");
    drop(open_store(&path).await);
    // Wait for the writer to let go of the file, then stamp a future schema on it.
    let c = outside(&path);
    c.pragma_update(None, "user_version", 99).unwrap();
    drop(c);
    let error = Store::open(&StoreOptions::new(&path, Synchronous::Full))
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(
        error.contains("newer countersign") && error.contains("schema 99"),
        "{error}"
    );
}

// ------------------------------------------------------------------ 6. retention

#[tokio::test]
async fn settled_approvals_are_pruned_oldest_first_in_batches_and_open_ones_stay() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("countersign.db");
    let store = open_store(&path).await;
    let id = |i: usize| format!("apr_r{i}");
    for i in 0..8 {
        store.insert_submission(fund(&id(i))).await.unwrap();
    }
    // 0-4 settled long ago (each with a delivery), 5 settled recently, 6 still tracked though
    // old, 7 set aside as failed.
    {
        let c = outside(&path);
        for i in 0..5 {
            c.execute(
                "UPDATE approvals SET phase = 'done', status = 'confirmed', updated_at = ?2
                 WHERE id = ?1",
                rusqlite::params![id(i), 1_000 + i as i64],
            )
            .unwrap();
            c.execute(
                "INSERT INTO deliveries (approval_id, channel, state, updated_at)
                 VALUES (?1, 'telegram', 'active', 0)",
                [id(i)],
            )
            .unwrap();
        }
        c.execute_batch(
            "UPDATE approvals SET phase = 'done', status = 'declined', updated_at = 9000
                 WHERE id = 'apr_r5';
             UPDATE approvals SET phase = 'track', status = 'pending', updated_at = 0
                 WHERE id = 'apr_r6';
             UPDATE approvals SET phase = 'failed', status = 'failed', updated_at = 0
                 WHERE id = 'apr_r7';",
        )
        .unwrap();
    }
    let cutoff = 5_000;
    let mut batches = Vec::new();
    loop {
        let n = store.prune_settled(cutoff, 2).await.unwrap();
        batches.push(n);
        if n < 2 {
            break;
        }
    }
    assert_eq!(batches, vec![2, 2, 1]);
    for i in 0..5 {
        assert!(
            store.get(&approval(&id(i))).await.unwrap().is_none(),
            "{}",
            id(i)
        );
    }
    for i in 5..8 {
        assert!(
            store.get(&approval(&id(i))).await.unwrap().is_some(),
            "{}",
            id(i)
        );
    }
    let c = outside(&path);
    let deliveries: i64 = c
        .query_row("SELECT COUNT(*) FROM deliveries", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        deliveries, 0,
        "the pruned approvals' deliveries went with them"
    );
    let counts = store.count_by_status().await.unwrap();
    assert!(!counts.iter().any(|(s, _)| s == "confirmed"), "{counts:?}");
    assert!(counts.contains(&("declined".into(), 1)), "{counts:?}");

    let listing = countersign::store::list_read_only(&path, true, 100).unwrap();
    assert_eq!(listing.approvals.len(), 3);
    assert_eq!(
        listing.pruned_before.map(|t| t.timestamp_millis()),
        Some(cutoff)
    );
    let reach = countersign::list::reach(Some(Duration::from_secs(90 * 86_400)), &listing);
    assert_eq!(
        reach,
        "Settled approvals are kept for 90d (store.retention): none settled before 1970-01-01 00:00 UTC is listed."
    );
}

fn approval(id: &str) -> countersign::approval::ApprovalId {
    countersign::approval::ApprovalId::parse(id).unwrap()
}

#[tokio::test]
async fn the_daemon_prunes_what_settled_before_the_retention_and_list_says_how_far_back_it_reaches()
{
    let mut app = spawn_app().await;
    app.toml = app
        .toml
        .replace("[store]\n", "[store]\nretention = \"1s\"\n");
    let app = app.restart().await;
    let settled = app.fund_request("ctr_1", "ms_1");
    let settled_id = approval_id(&settled);
    assert_eq!(app.submit(&settled).await.0, 202);
    let msg = messages(&app, 1).await.remove(0);
    app.opentrain.resolve(&settled_id, "confirmed", None);
    eventually("the message edited", || async {
        app.telegram
            .messages(CHAT)
            .into_iter()
            .find(|m| m.message_id == msg.message_id && m.text.contains("Confirmed"))
    })
    .await;
    let open = app.fund_request("ctr_2", "ms_2");
    let open_id = approval_id(&open);
    assert_eq!(app.submit(&open).await.0, 202);
    messages(&app, 2).await;
    // A second after it settled, the next pass (one runs at every start) prunes it.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let app = app.restart().await;
    eventually("the settled approval is pruned", || async {
        let (status, _) = app.get(&format!("/v1/approvals/{settled_id}")).await;
        (status == 404).then_some(())
    })
    .await;
    assert_eq!(app.approval(&open_id).await["status"], "pending");

    let settings =
        countersign::Settings::from_toml_and_env(Some(&app.toml), Default::default()).unwrap();
    let out = countersign::list::render(&settings, true, false, 100).unwrap();
    assert!(out.contains(&open_id), "{out}");
    assert!(!out.contains(&settled_id), "{out}");
    assert!(
        out.contains("Settled approvals are kept for 1s (store.retention): none settled before"),
        "{out}"
    );
}

#[test]
fn retention_is_ninety_days_by_default_and_zero_keeps_everything() {
    use countersign::Settings;
    let load = |store: &str| {
        Settings::from_toml_and_env(
            Some(&format!(
                "[hook]\nallow_anonymous_loopback = true\n[store]\n{store}\n"
            )),
            Default::default(),
        )
    };
    assert_eq!(
        load("").unwrap().store.retention,
        Some(Duration::from_secs(90 * 86_400))
    );
    assert_eq!(load("retention = \"0\"").unwrap().store.retention, None);
    let error = load("retention = \"soon\"").unwrap_err().to_string();
    assert!(error.contains("store.retention"), "{error}");
}
