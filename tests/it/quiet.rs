//! Quiet hours (SPEC §3.6) end to end, on Telegram and Discord at once: what arrives silently at
//! night, the last message before expiry that always rings, across a restart, and the owner's
//! zone in the text. The quiet range is placed around (or away from) the owner's local time at
//! the start of each test, so no test waits for the wall clock; the boundaries themselves
//! (22:00–07:00 at 23:30, 06:59, 07:00) are tested on an injected `now` in `countersign::quiet`.

use std::collections::HashMap;

use chrono::{Duration, Utc};
use countersign::Settings;

use crate::support::*;

/// Discord's `SUPPRESS_NOTIFICATIONS` message flag.
const SUPPRESS_NOTIFICATIONS: u64 = 1 << 12;
const ZONE: &str = "Asia/Tokyo";

/// `HH:MM-HH:MM` on the owner's clock, from `from` to `to` hours after now (may wrap midnight).
fn range_from_now(from: i64, to: i64) -> String {
    let zone = jiff::tz::TimeZone::get(ZONE).unwrap();
    let hm = |h: i64| {
        let t = Utc::now() + Duration::hours(h);
        let local = jiff::Timestamp::from_millisecond(t.timestamp_millis())
            .unwrap()
            .to_zoned_datetime(zone.clone());
        format!("{:02}:{:02}", local.hour(), local.minute())
    };
    format!("{}-{}", hm(from), hm(to))
}

/// Telegram and a Discord channel, the owner in Tokyo, with these quiet hours and reminders.
async fn app(quiet_hours: &str, reminders: &str) -> TestApp {
    spawn_app_with(Options {
        discord: Some(DiscordMode::Channel),
        extra_toml: format!(
            "[owner]\ntimezone = \"{ZONE}\"\nquiet_hours = \"{quiet_hours}\"\n\
             [reminders]\nbefore_expiry = {reminders}\n"
        ),
        ..Options::default()
    })
    .await
}

/// Submits a fund request that expires `expires_in` from now; returns its id.
async fn submit_expiring(app: &TestApp, expires_in: Duration) -> String {
    let mut body = app.fund_request("ctr_q", "ms_q");
    let id = approval_id(&body);
    app.opentrain.set_expires_at(&id, Utc::now() + expires_in);
    body["approval"] = app.opentrain.approval(&id).unwrap();
    assert_eq!(app.submit(&body).await.0, 202);
    id
}

/// Whether each message in the owner's Telegram chat rang, once there are `n`.
async fn telegram_rang(app: &TestApp, n: usize) -> Vec<bool> {
    let msgs = messages(app, n).await;
    assert_eq!(msgs.len(), n, "unexpected messages: {msgs:?}");
    msgs.iter().map(|m| !m.disable_notification).collect()
}

/// Whether each message in the Discord channel rang, once there are `n`.
async fn discord_rang(app: &TestApp, n: usize) -> Vec<bool> {
    let msgs = eventually(&format!("{n} Discord message(s)"), || async {
        let m = app.discord.messages(DC_CHANNEL);
        (m.len() >= n).then_some(m)
    })
    .await;
    assert_eq!(msgs.len(), n, "unexpected Discord messages");
    msgs.iter()
        .map(|m| app.discord.flags(m.id).unwrap() & SUPPRESS_NOTIFICATIONS == 0)
        .collect()
}

/// Whether the last post or reminder rang, per channel, as the store records it.
async fn recorded_rang(app: &TestApp, want: i64) {
    eventually(
        &format!("the store records last_rang = {want} on both channels"),
        || async {
            let c = rusqlite::Connection::open(&app.store_path).unwrap();
            c.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
            let rows: Vec<(String, Option<i64>)> = c
                .prepare("SELECT channel, last_rang FROM deliveries ORDER BY channel")
                .unwrap()
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            (rows
                == [
                    ("discord".to_string(), Some(want)),
                    ("telegram".to_string(), Some(want)),
                ])
            .then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn a_post_inside_quiet_hours_is_silent_and_shows_the_owner_zone() {
    let app = app(&range_from_now(-2, 2), "[\"24h\", \"1h\"]").await;
    // 72 h left: two reminders are still to come, so the post is not the last message.
    submit_expiring(&app, Duration::hours(72)).await;
    assert_eq!(telegram_rang(&app, 1).await, [false]);
    assert_eq!(discord_rang(&app, 1).await, [false]);
    let text = &app.telegram.messages(CHAT)[0].text;
    assert!(text.contains(" JST (in 71 h)"), "{text}");
    no_due_work(&app).await;
    assert_eq!(app.telegram.count("sendMessage"), 1);
}

#[tokio::test]
async fn with_one_reminder_left_the_post_is_silent_and_the_reminder_rings_even_after_a_restart() {
    let app = app(&range_from_now(-2, 2), "[\"4s\"]").await;
    let id = submit_expiring(&app, Duration::seconds(9)).await;
    assert_eq!(telegram_rang(&app, 1).await, [false]);
    assert_eq!(discord_rang(&app, 1).await, [false]);
    recorded_rang(&app, 0).await;
    // What was sent is in the store; the new process decides the reminder the same way.
    let app = app.restart().await;
    assert_eq!(telegram_rang(&app, 2).await, [false, true]);
    assert_eq!(discord_rang(&app, 2).await, [false, true]);
    recorded_rang(&app, 1).await;
    let reminder = &app.telegram.messages(CHAT)[1];
    assert!(reminder.text.contains(&id), "{}", reminder.text);
}

#[tokio::test]
async fn an_approval_that_expires_before_any_reminder_rings_on_its_post() {
    let app = app(&range_from_now(-2, 2), "[\"1h\"]").await;
    submit_expiring(&app, Duration::minutes(30)).await;
    assert_eq!(telegram_rang(&app, 1).await, [true]);
    assert_eq!(discord_rang(&app, 1).await, [true]);
}

#[tokio::test]
async fn outside_quiet_hours_every_post_and_reminder_rings() {
    let app = app(&range_from_now(2, 4), "[\"3s\"]").await;
    submit_expiring(&app, Duration::seconds(6)).await;
    assert_eq!(telegram_rang(&app, 2).await, [true, true]);
    assert_eq!(discord_rang(&app, 2).await, [true, true]);
}

#[test]
fn an_unknown_zone_or_a_bad_range_is_refused_at_start_up_naming_the_key() {
    let cases = [
        ("timezone = \"Mars/Olympus_Mons\"", "owner.timezone"),
        ("timezone = \"JST\"", "owner.timezone"),
        ("quiet_hours = \"22:00\"", "owner.quiet_hours"),
        ("quiet_hours = \"22:00-22:00\"", "owner.quiet_hours"),
        ("quiet_hours = \"25:00-07:00\"", "owner.quiet_hours"),
    ];
    for (line, key) in cases {
        let toml = format!("[hook]\ntoken = \"t\"\n[owner]\n{line}\n");
        let err = Settings::from_toml_and_env(Some(&toml), HashMap::new()).expect_err(&toml);
        assert!(err.to_string().contains(key), "{toml:?}: {err}");
    }
    let ok = "[hook]\ntoken = \"t\"\n[owner]\ntimezone = \"Europe/Berlin\"\nquiet_hours = \"22:00-07:00\"\n";
    let s = Settings::from_toml_and_env(Some(ok), HashMap::new()).unwrap();
    assert_eq!(s.owner.quiet.unwrap().to_string(), "22:00-07:00");
    let default = Settings::from_toml_and_env(Some("[hook]\ntoken = \"t\"\n"), HashMap::new());
    assert_eq!(default.unwrap().owner, countersign::quiet::Owner::default());
}
