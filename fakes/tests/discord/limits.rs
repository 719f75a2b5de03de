//! The fake Discord's limits (buckets, the global limit, the invalid-request ban) and the
//! failures it produces on demand.

use super::*;

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
