//! The fake Discord's own tests: it must refuse what Discord refuses, answer in Discord's
//! shapes, enforce Discord's limits, and fail on demand, over plain HTTP and over TLS as
//! `discord.com`. [`messages`]: what it accepts and answers; [`limits`]: its rate limits and the
//! failures it produces on demand; [`clients`]: real clients (reqwest over TLS, serenity) against
//! it, and its markup scanner.

mod clients;
mod limits;
mod messages;

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

/// A client that resolves `discord.com` to the fake and trusts the fake's CA.
fn tls_client(fake: &FakeDiscord) -> reqwest::Client {
    reqwest::Client::builder()
        .use_rustls_tls()
        .resolve("discord.com", fake.tls_addr())
        .add_root_certificate(reqwest::Certificate::from_der(&fake.ca_certificate_der()).unwrap())
        .build()
        .unwrap()
}
