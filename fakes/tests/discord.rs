//! The fake Discord's own tests: it must refuse what Discord refuses, answer in Discord's
//! shapes, enforce Discord's limits, and fail on demand, over plain HTTP and over TLS as
//! `discord.com`.

use std::time::Duration;

use countersign_fakes::FakeDiscord;
use countersign_fakes::discord::FAKE_BOT_USER_ID;
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

const TOKEN: &str = "FAKE.DISCORD.TOKEN";
const OWNER: u64 = 222_000_000_000_000_222;
const CHANNEL: u64 = 555_000_000_000_000_555;

/// A fake with room in every bucket: most tests here are about bodies and answers; the limits
/// have tests of their own, with Discord's real bucket shape.
async fn fake() -> FakeDiscord {
    let fake = FakeDiscord::start(TOKEN, OWNER, CHANNEL).await;
    fake.set_bucket(1000, Duration::from_secs(5));
    fake
}

/// One raw HTTP call: (status, headers, JSON body or Null).
async fn call(
    fake: &FakeDiscord,
    method: Method,
    path: &str,
    body: Option<Value>,
    auth: Option<&str>,
) -> (u16, HeaderMap, Value) {
    let client = reqwest::Client::new();
    let mut request = client.request(method, format!("{}{path}", fake.api_url()));
    if let Some(auth) = auth {
        request = request.header("Authorization", auth);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request to the fake");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).expect("JSON body")
    };
    (status, headers, body)
}

async fn bot(
    fake: &FakeDiscord,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, HeaderMap, Value) {
    call(fake, method, path, body, Some(&format!("Bot {TOKEN}"))).await
}

async fn post_message(fake: &FakeDiscord, channel: u64, body: Value) -> (u16, HeaderMap, Value) {
    bot(
        fake,
        Method::POST,
        &format!("/channels/{channel}/messages"),
        Some(body),
    )
    .await
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

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
async fn closed_dms_refuse_posts_with_50007() {
    let fake = fake().await;
    let (_, _, dm) = bot(
        &fake,
        Method::POST,
        "/users/@me/channels",
        Some(json!({"recipient_id": OWNER.to_string()})),
    )
    .await;
    let dm: u64 = dm["id"].as_str().unwrap().parse().unwrap();
    fake.close_dms(OWNER);
    let (status, _, reply) = post_message(&fake, dm, json!({"content": "hi"})).await;
    assert_eq!(
        (status, reply),
        (
            403,
            json!({"code": 50007, "message": "Cannot send messages to this user"})
        )
    );
    fake.open_dms(OWNER);
    assert_eq!(
        post_message(&fake, dm, json!({"content": "hi"})).await.0,
        200
    );
}

#[tokio::test]
async fn forced_429_carries_discords_headers_and_body() {
    let fake = fake().await;
    fake.force_rate_limit(1, 1.5, false);
    let (status, headers, body) = post_message(&fake, CHANNEL, json!({"content": "a"})).await;
    assert_eq!(status, 429);
    assert_eq!(
        body,
        json!({"message": "You are being rate limited.", "retry_after": 1.5, "global": false})
    );
    assert_eq!(header(&headers, "retry-after"), "2");
    assert_eq!(header(&headers, "x-ratelimit-remaining"), "0");
    assert_eq!(header(&headers, "x-ratelimit-reset-after"), "1.500");
    assert_eq!(header(&headers, "x-ratelimit-scope"), "user");
    assert!(!header(&headers, "x-ratelimit-limit").is_empty());
    assert!(!header(&headers, "x-ratelimit-bucket").is_empty());
    assert!(headers.get("x-ratelimit-global").is_none());
    assert!(fake.messages(CHANNEL).is_empty(), "a 429 is not applied");
    assert_eq!(
        post_message(&fake, CHANNEL, json!({"content": "a"}))
            .await
            .0,
        200
    );

    fake.force_rate_limit(1, 3.0, true);
    let (status, headers, body) = post_message(&fake, CHANNEL, json!({"content": "b"})).await;
    assert_eq!(status, 429);
    assert_eq!(body["global"], json!(true));
    assert_eq!(header(&headers, "x-ratelimit-global"), "true");
    assert_eq!(header(&headers, "x-ratelimit-scope"), "global");
    assert_eq!(header(&headers, "retry-after"), "3");
    assert_eq!(fake.rate_limited_count(), 2);
}

#[tokio::test]
async fn each_route_and_channel_has_a_bucket_that_counts_down() {
    // Discord's own shape for the message routes: 5 per 5 s.
    let fake = FakeDiscord::start(TOKEN, OWNER, CHANNEL).await;
    for expected_remaining in ["4", "3", "2", "1", "0"] {
        let (status, headers, _) = post_message(&fake, CHANNEL, json!({"content": "a"})).await;
        assert_eq!(status, 200);
        assert_eq!(header(&headers, "x-ratelimit-limit"), "5");
        assert_eq!(
            header(&headers, "x-ratelimit-remaining"),
            expected_remaining
        );
        let reset_after: f64 = header(&headers, "x-ratelimit-reset-after").parse().unwrap();
        assert!(reset_after > 4.0 && reset_after <= 5.0, "{reset_after}");
    }
    let (status, headers, body) = post_message(&fake, CHANNEL, json!({"content": "b"})).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["global"], json!(false));
    let retry_after = body["retry_after"].as_f64().unwrap();
    assert!(retry_after > 4.0 && retry_after <= 5.0, "{retry_after}");
    assert_eq!(header(&headers, "retry-after"), "5");
    assert_eq!(header(&headers, "x-ratelimit-remaining"), "0");
    assert_eq!(header(&headers, "x-ratelimit-scope"), "user");
    assert_eq!(fake.messages(CHANNEL).len(), 5, "a 429 is not applied");

    // An edit is another route, with its own bucket.
    let id = fake.messages(CHANNEL)[0].id;
    let path = format!("/channels/{CHANNEL}/messages/{id}");
    let (status, headers, _) =
        bot(&fake, Method::PATCH, &path, Some(json!({"content": "c"}))).await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "x-ratelimit-remaining"), "4");
    // Another channel has its own bucket for the same route.
    let (_, _, dm) = bot(
        &fake,
        Method::POST,
        "/users/@me/channels",
        Some(json!({"recipient_id": OWNER.to_string()})),
    )
    .await;
    let dm: u64 = dm["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        post_message(&fake, dm, json!({"content": "a"})).await.0,
        200
    );
}

#[tokio::test]
async fn a_bucket_refills_when_its_window_ends() {
    let fake = FakeDiscord::start(TOKEN, OWNER, CHANNEL).await;
    fake.set_bucket(2, Duration::from_millis(300));
    assert_eq!(
        post_message(&fake, CHANNEL, json!({"content": "a"}))
            .await
            .0,
        200
    );
    let (_, headers, _) = post_message(&fake, CHANNEL, json!({"content": "b"})).await;
    let reset_after: f64 = header(&headers, "x-ratelimit-reset-after").parse().unwrap();
    let (status, _, body) = post_message(&fake, CHANNEL, json!({"content": "c"})).await;
    assert_eq!(status, 429);
    let retry_after = body["retry_after"].as_f64().unwrap();
    assert!(retry_after <= reset_after, "{retry_after} > {reset_after}");
    // Waiting what the headers said is enough.
    tokio::time::sleep(Duration::from_secs_f64(reset_after)).await;
    let (status, headers, _) = post_message(&fake, CHANNEL, json!({"content": "d"})).await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "x-ratelimit-remaining"), "1");
}

#[tokio::test]
async fn more_than_the_global_limit_in_one_second_is_a_global_429() {
    let fake = fake().await;
    fake.set_global_limit(3);
    for _ in 0..3 {
        assert_eq!(bot(&fake, Method::GET, "/users/@me", None).await.0, 200);
    }
    let (status, headers, body) = bot(&fake, Method::GET, "/users/@me", None).await;
    assert_eq!(status, 429);
    assert_eq!(body["global"], json!(true));
    assert!(body["retry_after"].as_f64().unwrap() <= 1.0, "{body}");
    assert_eq!(header(&headers, "x-ratelimit-global"), "true");
    assert_eq!(header(&headers, "x-ratelimit-scope"), "global");
    assert!(headers.get("x-ratelimit-bucket").is_none());
}

#[tokio::test]
async fn too_many_invalid_requests_get_the_client_banned() {
    let fake = fake().await;
    fake.set_invalid_request_limit(3, Duration::from_secs(600), Duration::from_secs(3600));
    for _ in 0..3 {
        let (status, _, _) = call(&fake, Method::GET, "/users/@me", None, Some("Bot wrong")).await;
        assert_eq!(status, 401);
    }
    assert_eq!(fake.invalid_request_count(), 3);
    // Banned: even a good request gets Cloudflare's 429, which is not JSON.
    let response = reqwest::Client::new()
        .get(format!("{}/users/@me", fake.api_url()))
        .header("Authorization", format!("Bot {TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 429);
    assert!(response.headers().get("x-ratelimit-bucket").is_none());
    assert_eq!(response.text().await.unwrap(), "error code: 1015");
}

#[tokio::test]
async fn a_revoked_token_and_a_lost_permission_are_refused() {
    let fake = fake().await;
    fake.deny_posting(CHANNEL);
    let (status, _, body) = post_message(&fake, CHANNEL, json!({"content": "a"})).await;
    assert_eq!(
        (status, body),
        (
            403,
            json!({"code": 50013, "message": "Missing Permissions"})
        )
    );
    fake.allow_posting(CHANNEL);
    assert_eq!(
        post_message(&fake, CHANNEL, json!({"content": "a"}))
            .await
            .0,
        200
    );

    fake.set_token("a-new-token");
    let (status, _, body) = post_message(&fake, CHANNEL, json!({"content": "b"})).await;
    assert_eq!((status, body["code"].clone()), (401, json!(0)));
    assert_eq!(fake.messages(CHANNEL).len(), 1);
}

#[tokio::test]
async fn a_hung_request_gets_no_answer_and_the_next_one_does() {
    let fake = fake().await;
    fake.hang_next(1);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let url = format!("{}/users/@me", fake.api_url());
    let auth = format!("Bot {TOKEN}");
    let error = client
        .get(&url)
        .header("Authorization", &auth)
        .send()
        .await
        .unwrap_err();
    assert!(error.is_timeout(), "{error}");
    let response = client.get(&url).header("Authorization", &auth).send().await;
    assert_eq!(response.unwrap().status().as_u16(), 200);
    let statuses: Vec<u16> = fake.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [0, 200]);
}

#[tokio::test]
async fn an_unreachable_host_drops_open_and_new_connections() {
    let fake = fake().await;
    let client = reqwest::Client::new();
    let url = format!("{}/users/@me", fake.api_url());
    let auth = format!("Bot {TOKEN}");
    // A pooled connection exists before the host goes away.
    assert!(
        client
            .get(&url)
            .header("Authorization", &auth)
            .send()
            .await
            .is_ok()
    );
    fake.set_unreachable(true);
    for _ in 0..2 {
        let result = client.get(&url).header("Authorization", &auth).send().await;
        assert!(result.is_err(), "{result:?}");
    }
    fake.set_unreachable(false);
    let response = client.get(&url).header("Authorization", &auth).send().await;
    assert_eq!(response.unwrap().status().as_u16(), 200);
    assert_eq!(
        fake.requests().len(),
        2,
        "nothing arrived while unreachable"
    );
}

/// A client that resolves `discord.com` to the fake and trusts the fake's CA.
fn tls_client(fake: &FakeDiscord) -> reqwest::Client {
    reqwest::Client::builder()
        .use_rustls_tls()
        .resolve("discord.com", fake.tls_addr())
        .add_root_certificate(reqwest::Certificate::from_der(&fake.ca_certificate_der()).unwrap())
        .build()
        .unwrap()
}

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

#[tokio::test]
async fn injected_failures_come_before_auth_and_routing() {
    let fake = fake().await;
    fake.fail_next(2, 502, 0, "Bad Gateway");
    let (status, _, body) = call(&fake, Method::GET, "/users/@me", None, None).await;
    assert_eq!(
        (status, body),
        (502, json!({"code": 0, "message": "Bad Gateway"}))
    );
    assert_eq!(
        post_message(&fake, CHANNEL, json!({"content": "a"}))
            .await
            .0,
        502
    );
    assert_eq!(
        post_message(&fake, CHANNEL, json!({"content": "a"}))
            .await
            .0,
        200
    );
    assert_eq!(fake.count("POST", "/messages"), 2);
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
