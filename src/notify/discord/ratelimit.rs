//! Discord's rate limits, read and kept by countersign alone: the one place that decides whether
//! a Discord request may go now. serenity's own ratelimiter is switched off: it sleeps and retries
//! 429s inside the call without bound, ignores `discord.api_url`, and never paces the global
//! limit.
//!
//! Invariants:
//! - **Proactive.** No request goes into a bucket that the last answer said is empty before the
//!   bucket resets (`X-RateLimit-Remaining` / `-Reset-After`, buckets shared as
//!   `X-RateLimit-Bucket` says), none beyond the global 50 requests per second per bot, and none
//!   into a limit a 429 said to wait out (`retry_after`, `global`).
//! - **Bounded.** Nothing here sleeps: [`Limiter::admit`] says how long to wait, and the transport
//!   either waits a little or hands the wait to delivery as a `RateLimited` verdict. No 429 is
//!   waited out longer than 10 minutes before one request tries again.
//! - **Far from the invalid-request ban** (10,000 answers of 401/403/429 in 10 minutes ban the
//!   bot's IP): after a 401 nothing more is sent until a restart; after a 403 the same request is
//!   not sent again for a minute; a 429 is never followed by a request into the same limit before
//!   its wait is over.
//!
//! The global limit is kept without trusting clocks or latency: a request takes a slot from
//! when it is admitted until one second after its answer arrived, so no one-second window at
//! Discord can see more than 50 of them, however their arrival times spread.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use reqwest::header::HeaderMap;
use serde::Deserialize;
use serenity::http::ErrorResponse;
use tokio::time::Instant;

use super::errors::Withheld;

/// Discord's global limit: requests per second per bot.
pub(super) const GLOBAL_LIMIT: usize = 50;
const GLOBAL_WINDOW: Duration = Duration::from_secs(1);
/// How long a request Discord refused with 403 is not sent again.
pub(super) const REFUSED_FOR: Duration = Duration::from_secs(60);
/// The wait after a 429 that does not say how long (not Discord's own answer: a proxy's, or
/// Cloudflare's ban), doubled for each such 429 in a row.
const BLIND_429_WAIT: Duration = Duration::from_secs(2);
/// The longest any 429 is waited out before one request tries again.
pub(super) const MAX_429_WAIT: Duration = Duration::from_secs(600);

/// A rate-limit route: the method and path template, and its major parameter (the channel, or
/// 0), e.g. `("POST /channels/{id}/messages", 5551)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Route {
    pub name: &'static str,
    pub major: u64,
}

/// Whether a request may go.
pub(super) enum Admission<'a> {
    Go(Permit<'a>),
    /// Not before this much time has passed.
    Wait(Duration),
    /// Not at all: the refusal that stands.
    Withheld(ErrorResponse, Withheld),
}

/// A request on its way. Dropping it (answered, failed or cancelled) frees its place.
pub(super) struct Permit<'a> {
    limiter: &'a Limiter,
    route: Route,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.limiter.finish(self.route, Instant::now());
    }
}

#[derive(Default)]
pub(super) struct Limiter {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Route name -> Discord's bucket id, once an answer said it.
    bucket_of: HashMap<&'static str, String>,
    /// (bucket id, or the route name until the id is known; major parameter) -> bucket.
    buckets: HashMap<(String, u64), Bucket>,
    /// Nothing at all is sent before this (a global 429, or a 429 that was not Discord's).
    hold: Option<Instant>,
    /// Requests admitted and not yet finished.
    in_flight: usize,
    /// When the requests of the last `GLOBAL_WINDOW` finished, oldest first.
    finished: VecDeque<Instant>,
    /// 429s in a row that did not say how long to wait.
    blind_429s: u32,
    /// Discord refused the bot token: nothing more is sent.
    halted: Option<ErrorResponse>,
    /// Requests (method and URL) Discord refused with 403, and until when that stands.
    refused: HashMap<String, (Instant, ErrorResponse)>,
}

#[derive(Default)]
struct Bucket {
    /// What the last answer said, once one did.
    known: Option<Known>,
    /// Requests admitted into this bucket and not yet finished.
    in_flight: u32,
}

struct Known {
    limit: u32,
    remaining: u32,
    reset_at: Instant,
    /// How long a whole window lasts, as far as seen.
    window: Duration,
}

impl State {
    fn bucket_key(&self, route: Route) -> (String, u64) {
        let id = self
            .bucket_of
            .get(route.name)
            .cloned()
            .unwrap_or_else(|| route.name.to_owned());
        (id, route.major)
    }

    fn bucket(&mut self, route: Route) -> &mut Bucket {
        let key = self.bucket_key(route);
        self.buckets.entry(key).or_default()
    }

    fn forget_finished_before(&mut self, now: Instant) {
        while self
            .finished
            .front()
            .is_some_and(|t| now.duration_since(*t) >= GLOBAL_WINDOW)
        {
            self.finished.pop_front();
        }
    }
}

impl Limiter {
    /// May a request on `route` (whose method and URL are `request`) go now?
    pub fn admit(&self, route: Route, request: &str) -> Admission<'_> {
        let now = Instant::now();
        let mut state = self.lock();
        if let Some(error) = &state.halted {
            return Admission::Withheld(error.clone(), Withheld::Token);
        }
        match state.refused.get(request) {
            Some((until, error)) if now < *until => {
                return Admission::Withheld(error.clone(), Withheld::Refused);
            }
            Some(_) => {
                state.refused.remove(request);
            }
            None => {}
        }
        if let Some(hold) = state.hold.filter(|hold| now < *hold) {
            return Admission::Wait(hold - now);
        }
        state.forget_finished_before(now);
        if state.in_flight + state.finished.len() >= GLOBAL_LIMIT {
            let wait = match state.finished.front() {
                Some(oldest) => (*oldest + GLOBAL_WINDOW).saturating_duration_since(now),
                // All of them still on their way: a second at least.
                None => GLOBAL_WINDOW,
            };
            return Admission::Wait(wait.max(Duration::from_millis(1)));
        }
        let bucket = state.bucket(route);
        if let Some(known) = bucket.known.as_mut() {
            if now >= known.reset_at {
                // A new window: full again, until an answer says otherwise.
                known.remaining = known.limit;
                known.reset_at = now + known.window;
            }
            if known.remaining == 0 {
                return Admission::Wait(known.reset_at - now);
            }
            known.remaining -= 1;
        }
        bucket.in_flight += 1;
        state.in_flight += 1;
        Admission::Go(Permit {
            limiter: self,
            route,
        })
    }

    /// Takes in what any answer says about its bucket.
    pub fn learn(&self, route: Route, headers: &HeaderMap, success: bool) {
        let now = Instant::now();
        let mut state = self.lock();
        if success {
            state.blind_429s = 0;
        }
        if let Some(id) = text(headers, "x-ratelimit-bucket")
            && state.bucket_of.get(route.name) != Some(&id)
        {
            // The route turns out to be (part of) this bucket: carry what is on its way.
            let old = state.bucket_key(route);
            state.bucket_of.insert(route.name, id.clone());
            let in_flight = state.buckets.remove(&old).map_or(0, |b| b.in_flight);
            state
                .buckets
                .entry((id, route.major))
                .or_default()
                .in_flight += in_flight;
        }
        let limit = number::<u32>(headers, "x-ratelimit-limit");
        let remaining = number::<u32>(headers, "x-ratelimit-remaining");
        let reset_after = number::<f64>(headers, "x-ratelimit-reset-after").and_then(seconds);
        let (Some(limit), Some(remaining), Some(reset_after)) = (limit, remaining, reset_after)
        else {
            return;
        };
        let bucket = state.bucket(route);
        // The answer counted this request; the others on their way may not be counted yet.
        let remaining = remaining.saturating_sub(bucket.in_flight.saturating_sub(1));
        let window = bucket
            .known
            .as_ref()
            .map_or(reset_after, |k| k.window.max(reset_after));
        bucket.known = Some(Known {
            limit: limit.max(1),
            remaining,
            reset_at: now + reset_after,
            window,
        });
    }

    /// A 429: how long to wait, which is also when the limit it names may be used again.
    pub fn limited(&self, route: Route, headers: &HeaderMap, body: &[u8]) -> Duration {
        #[derive(Deserialize)]
        struct Limited {
            retry_after: Option<f64>,
            #[serde(default)]
            global: bool,
        }
        let now = Instant::now();
        let answer: Option<Limited> = serde_json::from_slice(body).ok();
        // The body's value is exact; the header is rounded up to whole seconds.
        let said = answer
            .as_ref()
            .and_then(|a| a.retry_after)
            .or_else(|| number::<f64>(headers, "retry-after"))
            .and_then(seconds);
        let mut state = self.lock();
        let wait = match said {
            Some(wait) => wait,
            None => {
                let streak = state.blind_429s.min(16);
                state.blind_429s += 1;
                BLIND_429_WAIT.saturating_mul(1 << streak)
            }
        }
        .min(MAX_429_WAIT);
        // Not Discord's JSON (Cloudflare, a proxy) limits the whole client, like a global 429.
        let global =
            answer.as_ref().is_none_or(|a| a.global) || headers.contains_key("x-ratelimit-global");
        if global {
            state.hold = Some(state.hold.map_or(now + wait, |h| h.max(now + wait)));
        } else {
            let bucket = state.bucket(route);
            let known = bucket.known.get_or_insert(Known {
                limit: 1,
                remaining: 0,
                reset_at: now,
                window: wait,
            });
            known.remaining = 0;
            known.reset_at = known.reset_at.max(now + wait);
        }
        wait
    }

    /// A 401 or 403: not to be sent again soon (403, this request) or at all (401, anything).
    pub fn refused(&self, request: &str, error: &ErrorResponse) {
        let now = Instant::now();
        let mut state = self.lock();
        match error.status_code.as_u16() {
            401 => state.halted = Some(error.clone()),
            403 => {
                state.refused.retain(|_, (until, _)| now < *until);
                state
                    .refused
                    .insert(request.to_owned(), (now + REFUSED_FOR, error.clone()));
            }
            _ => {}
        }
    }

    /// Discord refused the bot token: every request is withheld from now on.
    pub fn halted(&self) -> bool {
        self.lock().halted.is_some()
    }

    fn finish(&self, route: Route, now: Instant) {
        let mut state = self.lock();
        state.in_flight = state.in_flight.saturating_sub(1);
        state.finished.push_back(now);
        let bucket = state.bucket(route);
        bucket.in_flight = bucket.in_flight.saturating_sub(1);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_owned())
}

fn number<T: std::str::FromStr>(headers: &HeaderMap, name: &str) -> Option<T> {
    text(headers, name).and_then(|v| v.parse().ok())
}

/// Seconds as a duration; `None` for what no server means (negative, NaN, infinite, absurd).
fn seconds(s: f64) -> Option<Duration> {
    (s.is_finite() && s >= 0.0).then(|| Duration::from_secs_f64(s.min(1e9)))
}

#[cfg(test)]
mod tests {
    use reqwest::StatusCode;
    use reqwest::header::HeaderValue;

    use super::*;

    const POST: Route = Route {
        name: "POST /channels/{id}/messages",
        major: 7,
    };
    const EDIT: Route = Route {
        name: "PATCH /channels/{id}/messages/{id}",
        major: 7,
    };
    const OTHER_CHANNEL: Route = Route {
        name: "POST /channels/{id}/messages",
        major: 8,
    };

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn bucket(id: &str, limit: &str, remaining: &str, reset_after: &str) -> HeaderMap {
        headers(&[
            ("x-ratelimit-bucket", id),
            ("x-ratelimit-limit", limit),
            ("x-ratelimit-remaining", remaining),
            ("x-ratelimit-reset-after", reset_after),
        ])
    }

    fn wait(admission: Admission<'_>) -> Duration {
        match admission {
            Admission::Wait(d) => d,
            Admission::Go(_) => panic!("admitted"),
            Admission::Withheld(e, why) => panic!("withheld ({why:?}): {e:?}"),
        }
    }

    fn go(admission: Admission<'_>) -> Permit<'_> {
        match admission {
            Admission::Go(permit) => permit,
            Admission::Wait(d) => panic!("told to wait {d:?}"),
            Admission::Withheld(e, why) => panic!("withheld ({why:?}): {e:?}"),
        }
    }

    /// serenity's error type can only be made from a response.
    async fn error(status: u16) -> ErrorResponse {
        let response = reqwest::Response::from(
            axum::http::Response::builder()
                .status(status)
                .body(r#"{"code": 50013, "message": "Missing Permissions"}"#)
                .unwrap(),
        );
        ErrorResponse::from_response(response, reqwest::Method::POST).await
    }

    #[tokio::test(start_paused = true)]
    async fn an_empty_bucket_is_not_used_before_it_resets() {
        let limiter = Limiter::default();
        let permit = go(limiter.admit(POST, "a"));
        limiter.learn(POST, &bucket("b1", "5", "0", "2.5"), true);
        drop(permit);
        assert_eq!(wait(limiter.admit(POST, "a")), Duration::from_millis(2500));
        // Other routes and other channels have their own buckets.
        drop(go(limiter.admit(EDIT, "b")));
        drop(go(limiter.admit(OTHER_CHANNEL, "c")));
        tokio::time::advance(Duration::from_millis(2500)).await;
        // A new window: the limit is known, so five go before the next answer.
        let permits: Vec<_> = (0..5).map(|_| go(limiter.admit(POST, "a"))).collect();
        assert!(wait(limiter.admit(POST, "a")) > Duration::ZERO);
        drop(permits);
    }

    #[tokio::test(start_paused = true)]
    async fn answers_count_the_requests_still_on_their_way() {
        let limiter = Limiter::default();
        let first = go(limiter.admit(POST, "a"));
        let second = go(limiter.admit(POST, "a"));
        // The first answer says one is left, but the second request will take it.
        limiter.learn(POST, &bucket("b1", "2", "1", "1"), true);
        drop(first);
        assert_eq!(wait(limiter.admit(POST, "a")), Duration::from_secs(1));
        drop(second);
    }

    #[tokio::test(start_paused = true)]
    async fn routes_that_share_a_bucket_share_its_count() {
        let limiter = Limiter::default();
        let p = go(limiter.admit(POST, "a"));
        limiter.learn(POST, &bucket("shared", "2", "1", "1"), true);
        drop(p);
        let p = go(limiter.admit(EDIT, "b"));
        limiter.learn(EDIT, &bucket("shared", "2", "0", "0.9"), true);
        drop(p);
        assert!(wait(limiter.admit(POST, "a")) > Duration::ZERO);
        assert!(wait(limiter.admit(EDIT, "b")) > Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn no_more_than_fifty_requests_in_any_second() {
        let limiter = Limiter::default();
        for i in 0..GLOBAL_LIMIT as u64 {
            let route = Route {
                name: "GET /channels/{id}",
                major: i,
            };
            drop(go(limiter.admit(route, "a")));
            tokio::time::advance(Duration::from_millis(10)).await;
        }
        // The first finished 500 ms ago: a slot frees in another 500 ms.
        assert_eq!(
            wait(limiter.admit(OTHER_CHANNEL, "x")),
            Duration::from_millis(500)
        );
        tokio::time::advance(Duration::from_millis(500)).await;
        drop(go(limiter.admit(OTHER_CHANNEL, "x")));
        // Requests still on their way hold their slot until they finish.
        let limiter = Limiter::default();
        let held: Vec<_> = (0..GLOBAL_LIMIT)
            .map(|_| go(limiter.admit(OTHER_CHANNEL, "x")))
            .collect();
        assert_eq!(wait(limiter.admit(POST, "y")), GLOBAL_WINDOW);
        drop(held);
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_holds_its_limit_for_retry_after() {
        let limiter = Limiter::default();
        let body =
            br#"{"message": "You are being rate limited.", "retry_after": 1.25, "global": false}"#;
        assert_eq!(
            limiter.limited(POST, &HeaderMap::new(), body),
            Duration::from_millis(1250)
        );
        assert_eq!(wait(limiter.admit(POST, "a")), Duration::from_millis(1250));
        drop(go(limiter.admit(OTHER_CHANNEL, "b")));

        let body =
            br#"{"message": "You are being rate limited.", "retry_after": 3.5, "global": true}"#;
        assert_eq!(
            limiter.limited(OTHER_CHANNEL, &HeaderMap::new(), body),
            Duration::from_millis(3500)
        );
        assert_eq!(wait(limiter.admit(EDIT, "c")), Duration::from_millis(3500));
        tokio::time::advance(Duration::from_millis(3500)).await;
        drop(go(limiter.admit(POST, "a")));
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_that_does_not_say_how_long_is_waited_out_longer_each_time() {
        let limiter = Limiter::default();
        let first = limiter.limited(POST, &HeaderMap::new(), b"error code: 1015");
        let second = limiter.limited(POST, &HeaderMap::new(), b"error code: 1015");
        assert_eq!((first, second), (BLIND_429_WAIT, BLIND_429_WAIT * 2));
        // Not Discord's answer: the whole client waits.
        assert_eq!(wait(limiter.admit(OTHER_CHANNEL, "x")), second);
        for _ in 0..20 {
            limiter.limited(POST, &HeaderMap::new(), b"");
        }
        assert_eq!(limiter.limited(POST, &HeaderMap::new(), b""), MAX_429_WAIT);
        let header = headers(&[("retry-after", "7")]);
        assert_eq!(
            limiter.limited(POST, &header, b"not json"),
            Duration::from_secs(7)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_403_is_not_sent_again_for_a_minute_and_a_401_stops_everything() {
        let limiter = Limiter::default();
        let forbidden = error(403).await;
        assert_eq!(forbidden.status_code, StatusCode::FORBIDDEN);
        limiter.refused(
            "POST https://discord.com/api/v10/channels/7/messages",
            &forbidden,
        );
        let again = limiter.admit(POST, "POST https://discord.com/api/v10/channels/7/messages");
        assert!(matches!(again, Admission::Withheld(_, Withheld::Refused)));
        drop(go(limiter.admit(
            OTHER_CHANNEL,
            "POST https://discord.com/api/v10/channels/8/messages",
        )));
        tokio::time::advance(REFUSED_FOR - Duration::from_millis(1)).await;
        let again = limiter.admit(POST, "POST https://discord.com/api/v10/channels/7/messages");
        assert!(matches!(again, Admission::Withheld(..)));
        tokio::time::advance(Duration::from_millis(1)).await;
        drop(go(limiter.admit(
            POST,
            "POST https://discord.com/api/v10/channels/7/messages",
        )));

        assert!(!limiter.halted());
        limiter.refused(
            "GET https://discord.com/api/v10/users/@me",
            &error(401).await,
        );
        assert!(limiter.halted());
        tokio::time::advance(Duration::from_secs(24 * 3600)).await;
        let anything = limiter.admit(OTHER_CHANNEL, "z");
        assert!(matches!(anything, Admission::Withheld(_, Withheld::Token)));
    }
}
