//! What the fake Discord accepts, refuses and answers: auth, routes, DM channels, message
//! bodies and their limits, edits, deletions, replies and nonces.

use super::*;

#[tokio::test]
async fn request_without_or_with_wrong_token_is_401() {
    let fake = fake().await;
    let (status, _, body) = call(&fake, Method::GET, "/users/@me", None, None).await;
    assert_eq!(status, 401);
    assert_eq!(body, json!({"message": "401: Unauthorized", "code": 0}));
    let (status, _, _) = call(&fake, Method::GET, "/users/@me", None, Some(TOKEN)).await;
    assert_eq!(status, 401, "a token without the `Bot ` prefix is refused");
    let (status, _, _) = call(&fake, Method::GET, "/users/@me", None, Some("Bot other")).await;
    assert_eq!(status, 401);
    let (status, _, body) = bot(&fake, Method::GET, "/users/@me", None).await;
    assert_eq!(status, 200);
    assert_eq!(body["bot"], json!(true));
    assert_eq!(body["id"], json!(FAKE_BOT_USER_ID.to_string()));

    let requests = fake.requests();
    assert_eq!(requests.len(), 4);
    assert_eq!(requests[0].authorization, None);
    assert_eq!(
        requests[3].authorization.as_deref(),
        Some("Bot FAKE.DISCORD.TOKEN")
    );
    assert_eq!(requests[0].status, 401);
}

#[tokio::test]
async fn unknown_route_is_discords_404() {
    let fake = fake().await;
    let (status, _, body) = bot(&fake, Method::GET, "/gateway/bot", None).await;
    assert_eq!(status, 404);
    assert_eq!(body, json!({"message": "404: Not Found", "code": 0}));
}

#[tokio::test]
async fn dm_channel_is_the_same_every_time_and_unknown_users_are_refused() {
    let fake = fake().await;
    let open = |recipient: Value| {
        let fake = fake.clone();
        async move {
            bot(
                &fake,
                Method::POST,
                "/users/@me/channels",
                Some(json!({"recipient_id": recipient})),
            )
            .await
        }
    };
    let (status, _, first) = open(json!(OWNER.to_string())).await;
    assert_eq!(status, 200);
    assert_eq!(first["type"], json!(1));
    assert_eq!(first["recipients"][0]["id"], json!(OWNER.to_string()));
    assert!(first["id"].is_string(), "snowflakes are strings");
    let (_, _, second) = open(json!(OWNER)).await;
    assert_eq!(
        first["id"], second["id"],
        "a number id opens the same channel"
    );
    assert_eq!(
        fake.dm_channel_of(OWNER).map(|c| c.to_string()),
        first["id"].as_str().map(str::to_owned)
    );

    let (status, _, body) = open(json!("999")).await;
    assert_eq!((status, body["code"].clone()), (400, json!(50033)));
    let (status, _, body) = open(json!("abc")).await;
    assert_eq!(status, 400);
    assert_eq!(body["code"], json!(50035));
    assert_eq!(
        body["errors"]["recipient_id"]["_errors"][0]["code"],
        json!("NUMBER_TYPE_COERCE")
    );
}

#[tokio::test]
async fn embed_title_over_256_is_a_form_error_naming_the_field() {
    let fake = fake().await;
    let (status, _, body) = post_message(
        &fake,
        CHANNEL,
        json!({"embeds": [{"title": "t".repeat(257)}]}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"code": 50035, "message": "Invalid Form Body", "errors": {"embeds": {"0": {"title": {"_errors": [
            {"code": "BASE_TYPE_MAX_LENGTH", "message": "Must be 256 or fewer in length."}
        ]}}}}})
    );
    assert!(fake.messages(CHANNEL).is_empty());
    let (status, _, _) = post_message(
        &fake,
        CHANNEL,
        json!({"embeds": [{"title": "t".repeat(256)}]}),
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn embeds_over_6000_characters_in_total_are_refused() {
    let fake = fake().await;
    // Each embed is within its own limits; together they are 4096 + 1905 = 6001.
    let body = json!({"embeds": [
        {"description": "a".repeat(4096)},
        {"description": "b".repeat(1900), "footer": {"text": "12345"}},
    ]});
    let (status, _, reply) = post_message(&fake, CHANNEL, body).await;
    assert_eq!(status, 400);
    assert_eq!(
        reply["errors"]["embeds"]["_errors"][0]["code"],
        json!("MAX_EMBED_SIZE_EXCEEDED")
    );
    let body = json!({"embeds": [
        {"description": "a".repeat(4096)},
        {"description": "b".repeat(1900), "footer": {"text": "1234"}},
    ]});
    let (status, _, _) = post_message(&fake, CHANNEL, body).await;
    assert_eq!(status, 200, "exactly 6000 is allowed");
}

#[tokio::test]
async fn other_limits_are_enforced() {
    let fake = fake().await;
    let cases = [
        (json!({"content": "x".repeat(2001)}), "content"),
        (
            json!({"embeds": [{"title": "a", "color": 0x0100_0000}]}),
            "color",
        ),
        (json!({"embeds": [{"title": "a", "color": -1}]}), "color"),
        (
            json!({"embeds": [{"title": "a", "url": "ftp://example.com"}]}),
            "URL_TYPE_INVALID_SCHEME",
        ),
        (
            json!({"embeds": [{"title": "a", "url": "http://localhost:8080/x"}]}),
            "URL_TYPE_INVALID_URL",
        ),
        (
            json!({"embeds": [{"fields": [{"name": "", "value": "v"}]}]}),
            "BASE_TYPE_REQUIRED",
        ),
        (
            json!({"embeds": [{"fields": [{"name": "n", "value": "v".repeat(1025)}]}]}),
            "value",
        ),
        (
            json!({"embeds": [{"title": "a", "fields": vec![json!({"name": "n", "value": "v"}); 26]}]}),
            "fields",
        ),
        (
            json!({"embeds": vec![json!({"title": "a"}); 11]}),
            "Must be 10 or fewer",
        ),
        (
            json!({"embeds": [{"footer": {"text": "f".repeat(2049)}}]}),
            "footer",
        ),
        (
            json!({"embeds": [{"author": {"name": "n".repeat(257)}}]}),
            "author",
        ),
        (
            json!({"embeds": [{"title": "a", "timestamp": "yesterday"}]}),
            "timestamp",
        ),
    ];
    for (body, expected) in cases {
        let (status, _, reply) = post_message(&fake, CHANNEL, body.clone()).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(reply["code"], json!(50035), "{body}");
        assert!(
            reply["errors"].to_string().contains(expected),
            "{body} -> {reply}"
        );
    }
    let (status, _, reply) = post_message(&fake, CHANNEL, json!({"content": ""})).await;
    assert_eq!(
        (status, reply),
        (
            400,
            json!({"code": 50006, "message": "Cannot send an empty message"})
        )
    );
    let (status, _, reply) = post_message(&fake, CHANNEL, json!({"embeds": [{"color": 5}]})).await;
    assert_eq!(
        (status, reply["code"].clone()),
        (400, json!(50006)),
        "an embed with nothing to show is empty"
    );
    let (status, _, reply) = bot(
        &fake,
        Method::POST,
        &format!("/channels/{CHANNEL}/messages"),
        None,
    )
    .await;
    assert_eq!((status, reply["code"].clone()), (400, json!(50006)));
    assert!(fake.messages(CHANNEL).is_empty());
}

#[tokio::test]
async fn link_buttons_need_a_url_and_no_custom_id() {
    let fake = fake().await;
    let row = |button: Value| json!({"content": "c", "components": [{"type": 1, "components": [button]}]});
    let bad = [
        (json!({"type": 2, "style": 5, "label": "Review"}), "url"),
        (
            json!({"type": 2, "style": 5, "url": "https://example.com/a", "custom_id": "x"}),
            "custom_id",
        ),
        (
            json!({"type": 2, "style": 1, "label": "Approve"}),
            "custom_id",
        ),
        (
            json!({"type": 2, "style": 1, "custom_id": "a", "url": "https://example.com"}),
            "url",
        ),
        (
            json!({"type": 2, "style": 1, "custom_id": "a".repeat(101)}),
            "custom_id",
        ),
        (
            json!({"type": 2, "style": 5, "url": "https://example.com", "label": "l".repeat(81)}),
            "label",
        ),
        (json!({"type": 2, "style": 9, "custom_id": "a"}), "style"),
    ];
    for (button, field) in bad {
        let (status, _, reply) = post_message(&fake, CHANNEL, row(button.clone())).await;
        assert_eq!(status, 400, "{button}");
        let leaf = &reply["errors"]["components"]["0"]["components"]["0"][field]["_errors"];
        assert!(leaf.is_array(), "{button} -> {reply}");
    }
    let link = json!({"type": 2, "style": 5, "url": "https://example.com/a/1", "label": "Review", "disabled": false});
    let (status, _, reply) = post_message(&fake, CHANNEL, row(link.clone())).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["components"][0]["components"][0], link);

    // Row and button counts, and duplicate custom ids.
    let six_rows = json!({"components": vec![json!({"type": 1, "components": [link.clone()]}); 6]});
    let (status, _, reply) = post_message(&fake, CHANNEL, six_rows).await;
    assert_eq!(status, 400);
    assert!(reply["errors"]["components"]["_errors"].is_array());
    let six_buttons = json!({"components": [{"type": 1, "components": vec![link.clone(); 6]}]});
    let (status, _, reply) = post_message(&fake, CHANNEL, six_buttons).await;
    assert_eq!(status, 400);
    assert_eq!(
        reply["errors"]["components"]["0"]["components"]["_errors"][0]["code"],
        json!("BASE_TYPE_BAD_LENGTH")
    );
    let twins = json!({"components": [{"type": 1, "components": [
        {"type": 2, "style": 3, "custom_id": "approve", "label": "Approve"},
        {"type": 2, "style": 4, "custom_id": "approve", "label": "Deny"},
    ]}]});
    let (status, _, reply) = post_message(&fake, CHANNEL, twins).await;
    assert_eq!(status, 400);
    assert_eq!(
        reply["errors"]["components"]["0"]["components"]["1"]["custom_id"]["_errors"][0]["code"],
        json!("COMPONENT_CUSTOM_ID_DUPLICATED")
    );
}

#[tokio::test]
async fn serenity_create_message_body_is_accepted_and_recorded() {
    // The exact body serenity 0.12 sent in the probe (shared/chat-platforms.md §2.2).
    let fake = fake().await;
    let body = json!({"content":"Approval request","tts":false,"embeds":[{"title":"Approval needed","type":"rich","description":"...","url":"https://example.com/a/1","timestamp":"2023-11-14T22:13:20Z","color":15105570,"footer":{"text":"req #1"},"fields":[{"name":"Amount","value":"12.50 USD","inline":true},{"name":"Context","value":"buy domain","inline":false}]}],"components":[{"type":1,"components":[{"type":2,"style":5,"url":"https://example.com/a/1","label":"Review","disabled":false}]}],"sticker_ids":[],"attachments":[],"enforce_nonce":false,"allowed_mentions":{"parse":[]}});
    let (status, headers, reply) = post_message(&fake, CHANNEL, body.clone()).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["author"]["bot"], json!(true));
    assert_eq!(reply["edited_timestamp"], Value::Null);
    assert_eq!(reply["embeds"][0]["type"], json!("rich"));
    assert!(!header(&headers, "x-ratelimit-bucket").is_empty());
    assert_eq!(header(&headers, "x-ratelimit-limit"), "1000");
    let stored = fake.messages(CHANNEL);
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].content, "Approval request");
    assert_eq!(stored[0].allowed_mentions, Some(json!({"parse": []})));
    assert_eq!(stored[0].id.to_string(), reply["id"].as_str().unwrap());
    assert_eq!(fake.requests()[0].body, Some(body));
    assert_eq!(fake.count("post", "/messages"), 1);
}

#[tokio::test]
async fn message_ids_increase() {
    let fake = fake().await;
    let (_, _, a) = post_message(&fake, CHANNEL, json!({"content": "a"})).await;
    let (_, _, b) = post_message(&fake, CHANNEL, json!({"content": "b"})).await;
    let id = |v: &Value| v["id"].as_str().unwrap().parse::<u64>().unwrap();
    assert!(id(&b) > id(&a));
}

#[tokio::test]
async fn patch_keeps_absent_fields_and_clears_empty_ones() {
    let fake = fake().await;
    let body = json!({"content": "pending", "embeds": [{"title": "Approval"}],
        "components": [{"type": 1, "components": [{"type": 2, "style": 5, "url": "https://example.com", "label": "Review"}]}]});
    let (_, _, created) = post_message(&fake, CHANNEL, body).await;
    let path = format!(
        "/channels/{CHANNEL}/messages/{}",
        created["id"].as_str().unwrap()
    );

    let (status, _, edited) = bot(
        &fake,
        Method::PATCH,
        &path,
        Some(json!({"content": "approved"})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(edited["content"], json!("approved"));
    assert_eq!(
        edited["embeds"][0]["title"],
        json!("Approval"),
        "absent embeds stay"
    );
    assert!(edited["edited_timestamp"].is_string());

    let (status, _, edited) = bot(
        &fake,
        Method::PATCH,
        &path,
        Some(json!({"embeds": [], "components": []})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(edited["embeds"], json!([]));
    assert_eq!(edited["components"], json!([]));

    let (status, _, reply) = bot(&fake, Method::PATCH, &path, Some(json!({"content": null}))).await;
    assert_eq!(
        (status, reply["code"].clone()),
        (400, json!(50006)),
        "nothing would be left"
    );
    let (status, _, _) = bot(
        &fake,
        Method::PATCH,
        &path,
        Some(json!({"content": "x".repeat(2001)})),
    )
    .await;
    assert_eq!(status, 400);

    let stored = &fake.messages(CHANNEL)[0];
    assert_eq!((stored.content.as_str(), stored.edits), ("approved", 2));
    assert!(stored.embeds.is_empty() && stored.components.is_empty());
}

#[tokio::test]
async fn patch_after_the_owner_deleted_the_message_is_10008() {
    let fake = fake().await;
    let (_, _, created) = post_message(&fake, CHANNEL, json!({"content": "pending"})).await;
    let id: u64 = created["id"].as_str().unwrap().parse().unwrap();
    fake.delete_message(CHANNEL, id);
    let (status, _, reply) = bot(
        &fake,
        Method::PATCH,
        &format!("/channels/{CHANNEL}/messages/{id}"),
        Some(json!({"content": "x"})),
    )
    .await;
    assert_eq!(
        (status, reply),
        (404, json!({"code": 10008, "message": "Unknown Message"}))
    );
    assert!(fake.messages(CHANNEL)[0].deleted);

    let (status, _, reply) = bot(
        &fake,
        Method::PATCH,
        &format!("/channels/42/messages/{id}"),
        Some(json!({"content": "x"})),
    )
    .await;
    assert_eq!((status, reply["code"].clone()), (404, json!(10003)));
    let (status, _, reply) = post_message(&fake, 42, json!({"content": "x"})).await;
    assert_eq!(
        (status, reply),
        (404, json!({"code": 10003, "message": "Unknown Channel"}))
    );

    // DELETE over HTTP, then the message is gone for reads too.
    let (_, _, other) = post_message(&fake, CHANNEL, json!({"content": "other"})).await;
    let path = format!(
        "/channels/{CHANNEL}/messages/{}",
        other["id"].as_str().unwrap()
    );
    assert_eq!(bot(&fake, Method::GET, &path, None).await.0, 200);
    assert_eq!(bot(&fake, Method::DELETE, &path, None).await.0, 204);
    assert_eq!(bot(&fake, Method::GET, &path, None).await.0, 404);
}

#[tokio::test]
async fn invalid_json_is_50109() {
    let fake = fake().await;
    let response = reqwest::Client::new()
        .post(format!("{}/channels/{CHANNEL}/messages", fake.api_url()))
        .header("Authorization", format!("Bot {TOKEN}"))
        .header("Content-Type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], json!(50109));
}

#[tokio::test]
async fn enforce_nonce_returns_the_first_message() {
    let fake = fake().await;
    let body = json!({"content": "a", "nonce": "approval-17", "enforce_nonce": true});
    let (_, _, first) = post_message(&fake, CHANNEL, body.clone()).await;
    let (status, _, second) = post_message(&fake, CHANNEL, body).await;
    assert_eq!(status, 200);
    assert_eq!(first["id"], second["id"]);
    assert_eq!(fake.messages(CHANNEL).len(), 1);
}

#[tokio::test]
async fn replies_must_reference_a_live_message_in_the_same_channel() {
    let fake = fake().await;
    let (_, _, first) = post_message(&fake, CHANNEL, json!({"content": "pending"})).await;
    let id: u64 = first["id"].as_str().unwrap().parse().unwrap();
    let reply = |message_id: u64, extra: Value| {
        let mut reference = json!({"type": 0, "message_id": message_id.to_string(),
            "channel_id": CHANNEL.to_string(), "guild_id": null});
        if let (Value::Object(r), Value::Object(e)) = (&mut reference, extra) {
            r.extend(e);
        }
        json!({"content": "reminder", "message_reference": reference})
    };
    let (status, _, created) = post_message(&fake, CHANNEL, reply(id, json!({}))).await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["type"], json!(19));
    assert_eq!(
        created["message_reference"]["message_id"],
        json!(id.to_string())
    );
    assert_eq!(fake.messages(CHANNEL)[1].reply_to, Some(id));

    // The replied-to message is gone: refused, unless the sender said it may stand alone.
    fake.delete_message(CHANNEL, id);
    let (status, _, refused) = post_message(&fake, CHANNEL, reply(id, json!({}))).await;
    assert_eq!((status, refused["code"].clone()), (400, json!(50035)));
    assert_eq!(
        refused["errors"]["message_reference"]["_errors"][0]["code"],
        json!("REPLIES_UNKNOWN_MESSAGE")
    );
    let (status, _, alone) = post_message(
        &fake,
        CHANNEL,
        reply(id, json!({"fail_if_not_exists": false})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(alone["type"], json!(0));
    assert_eq!(fake.messages(CHANNEL).last().unwrap().reply_to, None);

    // Another channel's message, a malformed id, and no id at all.
    let (_, _, other) = post_message(&fake, CHANNEL, json!({"content": "x"})).await;
    let other: u64 = other["id"].as_str().unwrap().parse().unwrap();
    let (status, _, _) =
        post_message(&fake, CHANNEL, reply(other, json!({"channel_id": "42"}))).await;
    assert_eq!(status, 400);
    let (status, _, bad) = post_message(
        &fake,
        CHANNEL,
        json!({"content": "x", "message_reference": {"message_id": "abc"}}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        bad["errors"]["message_reference"]["message_id"]["_errors"][0]["code"],
        json!("NUMBER_TYPE_COERCE")
    );
    let (status, _, _) = post_message(
        &fake,
        CHANNEL,
        json!({"content": "x", "message_reference": {}}),
    )
    .await;
    assert_eq!(status, 400);
}
