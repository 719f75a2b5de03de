//! The Discord notifier on its own, the way the app builds it (serenity's requests to
//! `https://discord.com` over TLS, the client resolving the name to the fake), through each
//! answer Discord gives: post, DM channel, edit, delete-then-edit (10008), reminders, 429s with
//! and without `global`, Discord's buckets, 50007, 50013, a revoked token, 5xx, a stalled
//! connection, an unreachable host, and `countersign check`'s probe.

use std::time::Duration;

use chrono::Utc;
use countersign::approval::Usd;
use countersign::config::{DiscordSettings, DiscordTarget, SecretString};
use countersign::notify::discord::{Discord, client_builder};
use countersign::notify::render::{Amount, AmountSource};
use countersign::notify::{Card, CardState, Fact, Notifier, NotifyError};
use countersign_fakes::FakeDiscord;

use super::{RED, assert_no_mentions_allowed, embed};
use crate::support::*;

/// Settings as production has them: no `api_url`, so requests go to https://discord.com.
fn settings(target: DiscordTarget) -> DiscordSettings {
    DiscordSettings {
        bot_token: SecretString::new(DC_TOKEN.into()),
        target,
        api_url: None,
        min_send_interval: Duration::ZERO,
    }
}

/// The notifier as the app builds it, its client resolving discord.com to `fake`.
fn notifier(fake: &FakeDiscord, target: DiscordTarget) -> Discord {
    Discord::with_client(&settings(target), discord_client(fake)).unwrap()
}

async fn fake_discord() -> FakeDiscord {
    FakeDiscord::start(DC_TOKEN, DC_OWNER, DC_CHANNEL).await
}

pub(super) fn card(state: CardState) -> Card {
    let now = Utc::now();
    Card {
        approval_id: "apr_dc_1".into(),
        headline: "Fund milestone".into(),
        state,
        amount: Some(Amount {
            value: Usd::from_cents(45000),
            source: AmountSource::OpenTrain,
            fees: None,
        }),
        facts: vec![Fact {
            label: "Agent",
            value: "a".into(),
            from_agent: true,
        }],
        expires_at: Some(now + chrono::Duration::hours(3)),
        link: format!("{APP_URL}/approvals/apr_dc_1"),
        now,
        zone: jiff::tz::TimeZone::UTC,
        silent: false,
    }
}

fn message_ids(m: &countersign::notify::MessageRef) -> (u64, u64) {
    let (c, id) = (&m.chat, &m.message);
    (c.parse().unwrap(), id.parse().unwrap())
}

/// Every request reached the fake as `discord.com` over TLS.
fn assert_all_over_tls(fake: &FakeDiscord) {
    let requests = fake.requests();
    assert!(!requests.is_empty());
    for r in requests {
        assert!(r.tls && r.path.starts_with("/api/v10/"), "{r:?}");
    }
}

/// When the `n`th request (from 0) reached the fake, after the first.
fn arrival(fake: &FakeDiscord, n: usize) -> Duration {
    let requests = fake.requests();
    requests[n].at.duration_since(requests[0].at)
}

#[tokio::test]
async fn discord_notifier_posts_edits_and_reminds_in_reply() {
    let fake = fake_discord().await;
    let discord = notifier(&fake, DiscordTarget::User(DC_OWNER));
    assert_eq!(discord.channel(), "discord");
    let pending = card(CardState::Pending);
    let message = discord.post(&pending).await.expect("posted");
    let (channel, id) = message_ids(&message);
    assert_eq!(
        Some(channel),
        fake.dm_channel_of(DC_OWNER),
        "the DM was opened"
    );
    // A repeated post (its answer lost) comes back as the same message, not a second one.
    let again = discord.post(&pending).await.expect("posted again");
    assert_eq!(again, message);
    assert_eq!(fake.messages(channel).len(), 1);

    discord.remind(&message, &pending).await.expect("reminded");
    let msgs = fake.messages(channel);
    assert_eq!(msgs.len(), 2);
    assert!(msgs[1].content.contains("Reminder"), "{}", msgs[1].content);
    assert!(msgs[1].content.contains("<t:"), "{}", msgs[1].content);
    assert_no_mentions_allowed(&msgs[1]);
    assert_eq!(
        msgs[1].reply_to,
        Some(id),
        "the reminder replies to the approval"
    );

    let done = card(CardState::Declined {
        resolved_at: Some(Utc::now()),
    });
    discord.edit(&message, &done).await.expect("edited");
    assert_eq!(embed(&fake.messages(channel)[0])["color"], RED);
    discord
        .edit(&message, &done)
        .await
        .expect("an unchanged edit is a success");
    // Deleted by the owner: Discord's 10008 means the message is gone for good.
    fake.delete_message(channel, id);
    let err = discord.edit(&message, &done).await.unwrap_err();
    assert!(
        matches!(&err, NotifyError::Gone(e) if e.contains("10008")),
        "{err:?}"
    );
    // A reminder still reaches the owner when the original is gone.
    discord
        .remind(&message, &pending)
        .await
        .expect("reminded alone");
    assert_eq!(fake.messages(channel).last().unwrap().reply_to, None);
    assert_eq!(
        fake.count("POST", "/users/@me/channels"),
        1,
        "the DM channel is opened once"
    );
    assert_all_over_tls(&fake);
}

#[tokio::test]
async fn discord_notifier_honours_a_routes_429_on_that_route_only() {
    let fake = fake_discord().await;
    let discord = notifier(&fake, DiscordTarget::Channel(DC_CHANNEL));
    let message = discord.post(&card(CardState::Pending)).await.unwrap();
    fake.force_rate_limit(1, 1.5, false);
    let err = discord.post(&card(CardState::Pending)).await.unwrap_err();
    assert!(
        matches!(err, NotifyError::RateLimited(d) if d == Duration::from_millis(1500)),
        "{err:?}"
    );
    // Another route goes at once; the limited one not before its retry_after.
    discord
        .edit(&message, &card(CardState::Pending))
        .await
        .unwrap();
    discord.post(&card(CardState::Pending)).await.unwrap();
    let requests = fake.requests();
    let after_429 = |n: usize| requests[n].at.duration_since(requests[1].at);
    assert!(
        after_429(2) < Duration::from_millis(1500),
        "the edit waited"
    );
    assert!(
        after_429(3) >= Duration::from_millis(1500),
        "{:?}",
        after_429(3)
    );
    assert_eq!(fake.rate_limited_count(), 1);
    assert_all_over_tls(&fake);
}

#[tokio::test]
async fn discord_notifier_honours_a_global_429_on_every_route() {
    let fake = fake_discord().await;
    let discord = notifier(&fake, DiscordTarget::Channel(DC_CHANNEL));
    let message = discord.post(&card(CardState::Pending)).await.unwrap();
    fake.force_rate_limit(1, 0.4, true);
    let err = discord
        .edit(&message, &card(CardState::Pending))
        .await
        .unwrap_err();
    assert!(
        matches!(err, NotifyError::RateLimited(d) if d == Duration::from_millis(400)),
        "{err:?}"
    );
    discord.post(&card(CardState::Pending)).await.unwrap();
    let wait = fake.requests()[2].at.duration_since(fake.requests()[1].at);
    assert!(wait >= Duration::from_millis(400), "{wait:?}");
    assert_eq!(fake.rate_limited_count(), 1);
}

#[tokio::test]
async fn discord_notifier_waits_out_a_429_that_does_not_say_how_long() {
    let fake = fake_discord().await;
    let discord = notifier(&fake, DiscordTarget::Channel(DC_CHANNEL));
    // A proxy's or Cloudflare's 429: no retry_after anywhere.
    fake.fail_next(1, 429, 0, "You are being rate limited.");
    let err = discord.post(&card(CardState::Pending)).await.unwrap_err();
    assert!(
        matches!(err, NotifyError::RateLimited(d) if d >= Duration::from_secs(2)),
        "{err:?}"
    );
    assert_eq!(fake.requests().len(), 1);
}

#[tokio::test]
async fn discord_notifier_stays_under_discords_limits_without_a_429() {
    let fake = fake_discord().await;
    // A bucket of 5 that resets in a minute. The sixth post is not sent into it: a wait that
    // long goes back to delivery, which holds the chat.
    fake.set_bucket(5, Duration::from_secs(60));
    let discord = notifier(&fake, DiscordTarget::Channel(DC_CHANNEL));
    for _ in 0..5 {
        discord.post(&card(CardState::Pending)).await.unwrap();
    }
    let err = discord.post(&card(CardState::Pending)).await.unwrap_err();
    assert!(
        matches!(err, NotifyError::RateLimited(d) if d > Duration::from_secs(59)),
        "{err:?}"
    );
    assert_eq!(fake.requests().len(), 5, "a post into an empty bucket");
    // Scaled down, the wait happens in place and the post goes through.
    let fake = fake_discord().await;
    fake.set_bucket(2, Duration::from_millis(300));
    let discord = notifier(&fake, DiscordTarget::Channel(DC_CHANNEL));
    for _ in 0..5 {
        discord.post(&card(CardState::Pending)).await.unwrap();
    }
    assert_eq!(fake.rate_limited_count(), 0);
    assert!(arrival(&fake, 4) >= Duration::from_millis(600));
}

#[tokio::test]
async fn discord_notifier_closed_dms_and_lost_permissions_are_asked_once_a_minute() {
    let fake = fake_discord().await;
    fake.close_dms(DC_OWNER);
    let discord = notifier(&fake, DiscordTarget::User(DC_OWNER));
    for _ in 0..3 {
        let err = discord.post(&card(CardState::Pending)).await.unwrap_err();
        assert!(
            matches!(&err, NotifyError::Permanent(e) if e.contains("50007") && e.contains("direct messages")),
            "{err:?}"
        );
    }
    assert_eq!(fake.count("POST", "/messages"), 1);

    fake.deny_posting(DC_CHANNEL);
    let discord = notifier(&fake, DiscordTarget::Channel(DC_CHANNEL));
    for _ in 0..3 {
        let err = discord.post(&card(CardState::Pending)).await.unwrap_err();
        assert!(
            matches!(&err, NotifyError::Permanent(e) if e.contains("50013") && e.contains("Send Messages")),
            "{err:?}"
        );
    }
    assert_eq!(fake.count("POST", &format!("/channels/{DC_CHANNEL}/")), 1);
    assert_eq!(fake.invalid_request_count(), 2);
}

#[tokio::test]
async fn discord_notifier_stops_for_good_after_a_refused_token() {
    let fake = fake_discord().await;
    let discord = notifier(&fake, DiscordTarget::Channel(DC_CHANNEL));
    let message = discord.post(&card(CardState::Pending)).await.unwrap();
    fake.set_token("MTIz.reset-token");
    let err = discord
        .edit(&message, &card(CardState::Pending))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, NotifyError::Permanent(e) if e.contains("discord.bot_token")),
        "{err:?}"
    );
    assert!(discord.halted());
    fake.set_token(DC_TOKEN);
    for _ in 0..3 {
        let err = discord.post(&card(CardState::Pending)).await.unwrap_err();
        assert!(
            matches!(&err, NotifyError::Permanent(e) if e.contains("not sent")),
            "{err:?}"
        );
    }
    assert_eq!(
        fake.requests().len(),
        2,
        "requests after Discord refused the token"
    );
}

#[tokio::test]
async fn discord_notifier_5xx_stalls_and_outages_are_transient() {
    let fake = fake_discord().await;
    // Short timeouts so a stall costs this test little; the code is the production code.
    let client = discord_client_with(&fake, client_builder().timeout(Duration::from_millis(800)));
    let discord =
        Discord::with_client(&settings(DiscordTarget::Channel(DC_CHANNEL)), client).unwrap();

    fake.fail_next(1, 502, 0, "Bad Gateway");
    let err = discord.post(&card(CardState::Pending)).await.unwrap_err();
    assert!(
        matches!(&err, NotifyError::Transient(e) if e.contains("502")),
        "{err:?}"
    );

    fake.hang_next(1);
    let err = discord.post(&card(CardState::Pending)).await.unwrap_err();
    assert!(
        matches!(&err, NotifyError::Transient(e) if e.contains("network error") && e.contains("timed out")),
        "{err:?}"
    );

    fake.set_unreachable(true);
    let err = discord.post(&card(CardState::Pending)).await.unwrap_err();
    assert!(
        matches!(&err, NotifyError::Transient(e) if e.contains("network error")),
        "{err:?}"
    );
    fake.set_unreachable(false);

    discord
        .post(&card(CardState::Pending))
        .await
        .expect("posted once Discord is back");
    assert_eq!(fake.messages(DC_CHANNEL).len(), 1);
    assert_all_over_tls(&fake);
}

#[tokio::test]
async fn discord_check_probe_reaches_the_dm_or_the_channel_and_posts_nothing() {
    let fake = fake_discord().await;
    let line = notifier(&fake, DiscordTarget::User(DC_OWNER))
        .probe()
        .await
        .unwrap();
    assert!(
        line.contains("countersign-fake-bot") && line.contains("direct messages"),
        "{line}"
    );
    let line = notifier(&fake, DiscordTarget::Channel(DC_CHANNEL))
        .probe()
        .await
        .unwrap();
    assert!(line.contains(&format!("channel {DC_CHANNEL}")), "{line}");
    let err = notifier(&fake, DiscordTarget::Channel(42))
        .probe()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, NotifyError::Permanent(e) if e.contains("10003")),
        "{err:?}"
    );
    assert_eq!(fake.count("POST", "/messages"), 0);
    assert_all_over_tls(&fake);
}
