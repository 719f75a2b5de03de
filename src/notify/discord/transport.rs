//! The one way countersign talks to Discord, the same in production and in tests.
//!
//! Every request is one of [`Call`]'s few kinds. serenity builds it (route, `Authorization: Bot
//! <token>`, user agent, JSON body) with its `Request::build`, exactly as its own `Http` does when
//! its ratelimiter is off, and countersign's [`Limiter`] decides when it may go; the reqwest client
//! serenity was handed sends it, and serenity decodes Discord's error bodies. Reading the answer
//! here rather than through `Http::request` is what lets the rate-limit headers of every answer,
//! and the `retry_after` of a 429, be seen: serenity drops them.
//!
//! Production reaches `https://discord.com`; `discord.api_url` (a Discord-compatible gateway)
//! only changes that origin, never the path a request takes. Tests run this same code against a
//! local fake that serves TLS as `discord.com`: their client resolves the name to the fake and
//! trusts its certificate, nothing else differs.
//!
//! The bot token only travels in the `Authorization` header, never in a URL; it is kept in
//! serenity's `Http` (a secret that does not print) and scrubbed from every error text anyway.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serenity::all::{ChannelId, MessageId, UserId};
use serenity::http::{ErrorResponse, Http, HttpBuilder, LightMethod, Request, Route as Endpoint};

use super::errors::Failure;
use super::ratelimit::{Admission, Limiter, Route};
use crate::notify::NotifyError;

/// The path serenity puts in front of every route; `discord.api_url` must end with it.
const API_PATH: &str = "/api/v10";
/// The longest the transport itself waits for Discord's limits before a request; a longer wait
/// goes back to delivery as `RateLimited`, which holds the chat's pace without holding a worker.
pub(super) const MAX_INLINE_WAIT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest one request may take, answer included (delivery gives a whole attempt 30 s).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// How the HTTP client for Discord is set up: rustls, and timeouts so that a stalled connection
/// costs one attempt, not a worker. Tests add their resolver and trusted root to this builder.
pub fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .use_rustls_tls()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
}

/// Every request countersign makes to Discord.
pub(super) enum Call {
    /// `GET /users/@me`: who the bot is (`countersign check`).
    Me,
    /// `GET /channels/{id}`: the configured channel (`countersign check`).
    Channel(ChannelId),
    /// `POST /users/@me/channels`: the DM channel with the owner.
    OpenDm(UserId),
    /// `POST /channels/{id}/messages`: a new message, or a reminder replying to one.
    Post(ChannelId, Vec<u8>),
    /// `PATCH /channels/{id}/messages/{id}`.
    Edit(ChannelId, MessageId, Vec<u8>),
}

impl Call {
    fn request(&self) -> Request<'_> {
        match self {
            Call::Me => Request::new(Endpoint::UserMe, LightMethod::Get),
            Call::Channel(channel_id) => Request::new(
                Endpoint::Channel {
                    channel_id: *channel_id,
                },
                LightMethod::Get,
            ),
            Call::OpenDm(user) => {
                let body = serde_json::json!({ "recipient_id": user.to_string() });
                Request::new(Endpoint::UserMeDmChannels, LightMethod::Post)
                    .body(Some(body.to_string().into_bytes()))
            }
            Call::Post(channel_id, body) => Request::new(
                Endpoint::ChannelMessages {
                    channel_id: *channel_id,
                },
                LightMethod::Post,
            )
            .body(Some(body.clone())),
            Call::Edit(channel_id, message_id, body) => Request::new(
                Endpoint::ChannelMessage {
                    channel_id: *channel_id,
                    message_id: *message_id,
                },
                LightMethod::Patch,
            )
            .body(Some(body.clone())),
        }
    }

    /// Its rate-limit route: Discord keeps limits per route and major parameter (the channel).
    fn route(&self) -> Route {
        let (name, major) = match self {
            Call::Me => ("GET /users/@me", 0),
            Call::Channel(c) => ("GET /channels/{id}", c.get()),
            Call::OpenDm(_) => ("POST /users/@me/channels", 0),
            Call::Post(c, _) => ("POST /channels/{id}/messages", c.get()),
            Call::Edit(c, _, _) => ("PATCH /channels/{id}/messages/{id}", c.get()),
        };
        Route { name, major }
    }
}

pub(super) struct Transport {
    /// serenity's client: keeps the token (prefixed `Bot `) and the origin to use instead of
    /// `https://discord.com`, if any. Its own ratelimiter is off; [`Limiter`] is the only one.
    http: Http,
    /// The client `http` was built with, which sends every request.
    client: reqwest::Client,
    limits: Limiter,
}

impl Transport {
    /// `api_url`: `None` for Discord itself.
    pub fn new(
        token: &str,
        api_url: Option<&reqwest::Url>,
        client: reqwest::Client,
    ) -> Result<Transport, String> {
        let mut builder = HttpBuilder::new(token)
            .client(client.clone())
            .ratelimiter_disabled(true);
        if let Some(url) = api_url {
            builder = builder.proxy(proxy_base(url)?);
        }
        Ok(Transport {
            http: builder.build(),
            client,
            limits: Limiter::default(),
        })
    }

    /// Sends one request when Discord's limits allow, and decodes its answer.
    pub async fn send<T: DeserializeOwned>(&self, call: &Call) -> Result<T, Failure> {
        let route = call.route();
        let request = call.request();
        let method = request.method_ref().reqwest_method();
        // What a 403 is remembered by: this very request (method and URL).
        let identity = format!("{method} {}", request.route_ref().path());
        let waited_until = tokio::time::Instant::now() + MAX_INLINE_WAIT;
        let permit = loop {
            match self.limits.admit(route, &identity) {
                Admission::Go(permit) => break permit,
                Admission::Withheld(error, why) => return Err(Failure::Withheld(error, why)),
                Admission::Wait(wait) => {
                    if tokio::time::Instant::now() + wait > waited_until {
                        return Err(Failure::RateLimited(wait));
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        };
        let built = request
            .build(&self.client, self.http.token(), self.http.proxy.as_deref())
            .map_err(Failure::from)?
            .build()
            .map_err(Failure::Network)?;
        let response = self.client.execute(built).await.map_err(Failure::Network)?;
        let status = response.status();
        self.limits
            .learn(route, response.headers(), status.is_success());
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            let headers = response.headers().clone();
            let body = response.bytes().await.unwrap_or_default();
            return Err(Failure::RateLimited(
                self.limits.limited(route, &headers, &body),
            ));
        }
        if !status.is_success() {
            let error = ErrorResponse::from_response(response, method).await;
            if matches!(status.as_u16(), 401 | 403) {
                self.limits.refused(&identity, &error);
            }
            return Err(Failure::Api(error));
        }
        let bytes = response.bytes().await.map_err(Failure::Network)?;
        drop(permit);
        serde_json::from_slice(&bytes).map_err(|e| Failure::Decode(e.to_string()))
    }

    /// Discord refused the bot token: nothing more is sent until a restart.
    pub fn halted(&self) -> bool {
        self.limits.halted()
    }

    /// The error with the token cut out of its text, should it ever be there.
    pub fn scrub(&self, e: NotifyError) -> NotifyError {
        let header = self.http.token();
        let token = header.strip_prefix("Bot ").unwrap_or(header);
        let clean = |s: String| s.replace(token, "[redacted]");
        match e {
            NotifyError::Transient(s) => NotifyError::Transient(clean(s)),
            NotifyError::Gone(s) => NotifyError::Gone(clean(s)),
            NotifyError::Permanent(s) => NotifyError::Permanent(clean(s)),
            limited @ NotifyError::RateLimited(_) => limited,
        }
    }
}

/// `discord.api_url` minus `/api/v10`: what serenity puts in place of `https://discord.com`.
fn proxy_base(url: &reqwest::Url) -> Result<String, String> {
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!(
            "discord.api_url: {url} is not an http(s) URL with a host"
        ));
    }
    let path = url.path().trim_end_matches('/');
    let prefix = if path.is_empty() {
        ""
    } else if let Some(prefix) = path.strip_suffix(API_PATH) {
        prefix
    } else {
        return Err(format!(
            "discord.api_url: the path must end with {API_PATH} (serenity speaks API v10), got {path:?}"
        ));
    };
    let mut origin = url.origin().ascii_serialization();
    origin.push_str(prefix);
    Ok(origin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_url_becomes_serenitys_proxy_base() {
        let base = |s: &str| proxy_base(&s.parse().unwrap());
        assert_eq!(
            base("http://127.0.0.1:4000/api/v10").unwrap(),
            "http://127.0.0.1:4000"
        );
        assert_eq!(
            base("http://127.0.0.1:4000/api/v10/").unwrap(),
            "http://127.0.0.1:4000"
        );
        assert_eq!(
            base("https://proxy.example/").unwrap(),
            "https://proxy.example"
        );
        assert_eq!(
            base("https://gw.example/discord/api/v10").unwrap(),
            "https://gw.example/discord"
        );
        assert!(base("https://gw.example/api/v9").is_err());
    }
}
