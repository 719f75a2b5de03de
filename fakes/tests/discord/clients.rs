//! Real clients against the fake Discord: reqwest over TLS as `discord.com`, serenity over TLS
//! and through a proxy base, and the scanner that flags what Discord would link or mention.

use super::*;

#[tokio::test]
async fn the_fake_answers_as_discord_com_over_tls_and_nothing_else_trusts_it() {
    let fake = fake().await;
    let response = tls_client(&fake)
        .get("https://discord.com/api/v10/users/@me")
        .header("Authorization", format!("Bot {TOKEN}"))
        .send()
        .await
        .expect("TLS request to the fake");
    assert_eq!(response.status().as_u16(), 200);
    let requests = fake.requests();
    assert!(requests[0].tls && requests[0].path == "/api/v10/users/@me");

    // Without the fake's CA the certificate is refused: the trust is real, not switched off.
    let untrusting = reqwest::Client::builder()
        .use_rustls_tls()
        .resolve("discord.com", fake.tls_addr())
        .build()
        .unwrap();
    let error = untrusting
        .get("https://discord.com/api/v10/users/@me")
        .send()
        .await
        .unwrap_err();
    assert!(error.is_connect(), "{error:?}");
    assert_eq!(fake.requests().len(), 1);
}

/// countersign's client path: serenity's `Http` with its own client, its ratelimiter off, and
/// every URL left as `https://discord.com/...`.
#[tokio::test]
async fn serenity_round_trip_against_the_fake_discord_over_tls() {
    use serenity::all::{
        ChannelId, Colour, CreateActionRow, CreateButton, CreateEmbed, CreateEmbedFooter,
        CreateMessage, EditMessage, Timestamp, UserId,
    };
    use serenity::http::{HttpBuilder, HttpError};

    let fake = fake().await;
    let http = HttpBuilder::new(TOKEN)
        .client(tls_client(&fake))
        .ratelimiter_disabled(true)
        .build();

    let me = http.get_current_user().await.expect("GET /users/@me");
    assert!(me.bot);
    assert_eq!(me.id.get(), FAKE_BOT_USER_ID);

    let dm = UserId::new(OWNER)
        .create_dm_channel(&http)
        .await
        .expect("open DM");
    assert_eq!(Some(dm.id.get()), fake.dm_channel_of(OWNER));
    assert_eq!(dm.recipient.id.get(), OWNER);

    let link = "https://example.com/a/1";
    let embed = CreateEmbed::new()
        .title("Approval needed")
        .url(link)
        .description("buy domain")
        .field("Amount", "12.50 USD", true)
        .colour(Colour::ORANGE)
        .timestamp(Timestamp::now())
        .footer(CreateEmbedFooter::new("req #1"));
    let row = CreateActionRow::Buttons(vec![CreateButton::new_link(link).label("Review")]);
    let message = dm
        .id
        .send_message(
            &http,
            CreateMessage::new()
                .content("Approval request")
                .embed(embed)
                .components(vec![row]),
        )
        .await
        .expect("send message");
    assert_eq!(message.channel_id, dm.id);
    assert_eq!(message.embeds[0].title.as_deref(), Some("Approval needed"));
    assert_eq!(message.components.len(), 1);
    assert!(message.edited_timestamp.is_none());
    assert_eq!(
        fake.messages(dm.id.get())[0].components[0]["components"][0]["url"],
        json!(link)
    );

    let edited = dm
        .id
        .edit_message(
            &http,
            message.id,
            EditMessage::new()
                .content("Approved")
                .embed(
                    CreateEmbed::new()
                        .title("Approved")
                        .colour(Colour::DARK_GREEN),
                )
                .components(vec![]),
        )
        .await
        .expect("edit message");
    assert_eq!(edited.content, "Approved");
    assert!(edited.edited_timestamp.is_some());
    assert!(edited.components.is_empty());
    assert_eq!(fake.messages(dm.id.get())[0].edits, 1);

    // The owner deleted it: serenity surfaces Discord's 10008.
    fake.delete_message(dm.id.get(), message.id.get());
    let error = dm
        .id
        .edit_message(&http, message.id, EditMessage::new().content("x"))
        .await
        .unwrap_err();
    match error {
        serenity::Error::Http(HttpError::UnsuccessfulRequest(response)) => {
            assert_eq!(response.status_code.as_u16(), 404);
            assert_eq!(response.error.code, 10008);
            assert_eq!(response.error.message, "Unknown Message");
        }
        other => panic!("expected UnsuccessfulRequest, got {other:?}"),
    }

    // A form error surfaces with its field path.
    let bad = CreateEmbed::new()
        .title("t")
        .url("http://localhost/approval");
    let error = ChannelId::new(CHANNEL)
        .send_message(&http, CreateMessage::new().embed(bad))
        .await
        .unwrap_err();
    match error {
        serenity::Error::Http(HttpError::UnsuccessfulRequest(response)) => {
            assert_eq!(response.status_code.as_u16(), 400);
            assert_eq!(response.error.code, 50035);
            assert_eq!(response.error.errors[0].path, "embeds.0.url");
            assert_eq!(response.error.errors[0].code, "URL_TYPE_INVALID_URL");
        }
        other => panic!("expected UnsuccessfulRequest, got {other:?}"),
    }

    // A 429: Discord's body has no `code`, so serenity cannot decode it into
    // DiscordJsonError and reports code -1; retry_after and the headers are not exposed.
    fake.force_rate_limit(1, 2.5, false);
    let error = ChannelId::new(CHANNEL).say(&http, "hi").await.unwrap_err();
    match error {
        serenity::Error::Http(HttpError::UnsuccessfulRequest(response)) => {
            assert_eq!(response.status_code.as_u16(), 429);
            assert_eq!(response.error.code, -1);
            assert!(
                response.error.message.contains("Could not decode json"),
                "{}",
                response.error.message
            );
        }
        other => panic!("expected UnsuccessfulRequest, got {other:?}"),
    }

    // Closed DMs: 403 50007.
    fake.close_dms(OWNER);
    let error = dm.id.say(&http, "hi").await.unwrap_err();
    match error {
        serenity::Error::Http(HttpError::UnsuccessfulRequest(response)) => {
            assert_eq!(
                (response.status_code.as_u16(), response.error.code),
                (403, 50007)
            );
        }
        other => panic!("expected UnsuccessfulRequest, got {other:?}"),
    }
    let posts = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .count();
    assert_eq!(
        posts, 5,
        "DM open, send, bad send, 429 send, closed-DM send"
    );
}

/// `discord.api_url` and serenity's `proxy` put another origin in front of `/api/v10`: the plain
/// listener serves the same state.
#[tokio::test]
async fn serenity_through_a_proxy_base_reaches_the_plain_listener() {
    use serenity::http::HttpBuilder;
    let fake = fake().await;
    let http = HttpBuilder::new(TOKEN)
        .proxy(fake.base_url())
        .ratelimiter_disabled(true)
        .build();
    let me = http.get_current_user().await.expect("GET /users/@me");
    assert_eq!(me.id.get(), FAKE_BOT_USER_ID);
    assert!(!fake.requests()[0].tls);
}

#[tokio::test]
async fn stored_messages_report_what_discord_would_link_or_mention() {
    let fake = fake().await;
    let body = json!({
        "content": "see https://evil.example",
        "embeds": [{"title": "`https://fine.example`", "fields": [
            {"name": "Trainer", "value": "<@123> and `@everyone`"},
            {"name": "Contract", "value": "https\\://escaped.example"},
        ]}],
    });
    assert_eq!(post_message(&fake, CHANNEL, body).await.0, 200);
    let found = fake.messages(CHANNEL)[0].autolinks();
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found[0].starts_with("content: URL"), "{found:?}");
    assert!(
        found[1].starts_with("embeds[0].fields[0].value: mention"),
        "{found:?}"
    );
}
