//! Discord's three limits, as the fake enforces them:
//!
//! - **Per-route buckets.** Each route and major parameter (the channel) has a bucket of
//!   `bucket_limit` requests per `bucket_window`; the window starts with the first request after
//!   the previous one ended. Every answer carries `X-RateLimit-Limit`, `-Remaining`, `-Reset`,
//!   `-Reset-After` and `-Bucket`; a request into an empty bucket gets a 429 (scope `user`) and
//!   is not applied.
//! - **The global limit.** At most `global_limit` requests in any one second (a sliding window,
//!   the strictest reading of Discord's "50 requests per second"); beyond it a 429 with
//!   `X-RateLimit-Global: true` and scope `global`.
//! - **The invalid-request limit.** `invalid_limit` answers of 401, 403 or 429 within
//!   `invalid_window` ban the client for `ban`: every request then gets Cloudflare's 429, whose
//!   body is not JSON and which carries no rate-limit headers (best known shape: "error code:
//!   1015").

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;

use super::routes::Reply;

const GLOBAL_WINDOW: Duration = Duration::from_secs(1);

/// 429s forced on the next message creates and edits (`FakeDiscord::force_rate_limit`).
pub(super) struct ForcedLimit {
    pub remaining: usize,
    pub retry_after: f64,
    pub global: bool,
}

/// One bucket's current window.
struct Window {
    started: Instant,
    used: u32,
}

pub(super) struct Limits {
    pub bucket_limit: u32,
    pub bucket_window: Duration,
    windows: HashMap<(&'static str, u64), Window>,
    pub global_limit: usize,
    /// Arrival times of the requests of the last `GLOBAL_WINDOW`.
    arrivals: VecDeque<Instant>,
    pub invalid_limit: usize,
    pub invalid_window: Duration,
    pub ban: Duration,
    /// Times of the 401/403/429 answers of the last `invalid_window`.
    invalid: VecDeque<Instant>,
    banned_until: Option<Instant>,
    pub forced: Option<ForcedLimit>,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            bucket_limit: 5,
            bucket_window: Duration::from_secs(5),
            windows: HashMap::new(),
            global_limit: 50,
            arrivals: VecDeque::new(),
            invalid_limit: 10_000,
            invalid_window: Duration::from_secs(600),
            ban: Duration::from_secs(3600),
            invalid: VecDeque::new(),
            banned_until: None,
            forced: None,
        }
    }
}

impl Limits {
    /// Cloudflare's answer while the client is banned.
    pub fn banned(&self, now: Instant) -> Option<Reply> {
        self.banned_until
            .filter(|until| now < *until)
            .map(|_| Reply::text(429, "error code: 1015"))
    }

    /// Counts this request against the global limit; the global 429 when it is one too many.
    pub fn global(&mut self, now: Instant) -> Option<Reply> {
        while self
            .arrivals
            .front()
            .is_some_and(|t| now.duration_since(*t) >= GLOBAL_WINDOW)
        {
            self.arrivals.pop_front();
        }
        let full = self.arrivals.len() >= self.global_limit;
        let retry_after = self
            .arrivals
            .front()
            .map(|t| (*t + GLOBAL_WINDOW).saturating_duration_since(now))
            .unwrap_or(GLOBAL_WINDOW);
        self.arrivals.push_back(now);
        full.then(|| too_many_requests(retry_after.as_secs_f64(), true, None))
    }

    /// Takes one request from the bucket `(bucket, major)`, or the 429 when it is empty.
    pub fn take(&mut self, bucket: &'static str, major: u64, now: Instant) -> Result<(), Reply> {
        let (limit, length) = (self.bucket_limit, self.bucket_window);
        let window = self.window(bucket, major, now);
        if window.used >= limit {
            let reset_after = (window.started + length).saturating_duration_since(now);
            let headers = bucket_headers(bucket, limit, 0, reset_after.as_secs_f64());
            return Err(too_many_requests(
                reset_after.as_secs_f64(),
                false,
                Some(headers),
            ));
        }
        window.used += 1;
        Ok(())
    }

    /// A 429 forced by the test on a message create or edit, if one is queued.
    pub fn forced(&mut self, bucket: &'static str) -> Option<Reply> {
        let forced = self.forced.as_mut().filter(|f| f.remaining > 0)?;
        forced.remaining -= 1;
        let headers = (!forced.global)
            .then(|| bucket_headers(bucket, self.bucket_limit, 0, forced.retry_after));
        Some(too_many_requests(
            forced.retry_after,
            forced.global,
            headers,
        ))
    }

    /// The bucket headers every routed answer carries.
    pub fn headers(&mut self, bucket: &'static str, major: u64, now: Instant) -> Headers {
        let (limit, window) = (self.bucket_limit, self.bucket_window);
        let current = self.window(bucket, major, now);
        let reset_after = (current.started + window).saturating_duration_since(now);
        bucket_headers(
            bucket,
            limit,
            limit.saturating_sub(current.used),
            reset_after.as_secs_f64(),
        )
    }

    /// Counts an answer towards the invalid-request limit, banning the client when it is reached.
    pub fn answered(&mut self, status: u16, now: Instant) {
        if !matches!(status, 401 | 403 | 429) {
            return;
        }
        while self
            .invalid
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.invalid_window)
        {
            self.invalid.pop_front();
        }
        self.invalid.push_back(now);
        if self.invalid.len() >= self.invalid_limit {
            self.banned_until = Some(now + self.ban);
        }
    }

    fn window(&mut self, bucket: &'static str, major: u64, now: Instant) -> &mut Window {
        let length = self.bucket_window;
        let window = self.windows.entry((bucket, major)).or_insert(Window {
            started: now,
            used: 0,
        });
        if now.duration_since(window.started) >= length {
            *window = Window {
                started: now,
                used: 0,
            };
        }
        window
    }
}

pub(super) type Headers = Vec<(&'static str, String)>;

/// The 429 Discord sends. Per-route limits carry the bucket headers and scope `user`; the
/// global limit carries only `Retry-After`, `X-RateLimit-Global` and scope `global` (as in the
/// rate-limits doc's examples). The body never has a `code` (the doc marks it optional, "for
/// some limits").
fn too_many_requests(retry_after: f64, global: bool, bucket: Option<Headers>) -> Reply {
    // Discord gives milliseconds; never 0, or a client would not wait at all.
    let retry_after = ((retry_after * 1000.0).ceil() / 1000.0).max(0.001);
    // The header is whole seconds, rounded up (doc example: 64.57 -> "65").
    let mut headers = vec![("Retry-After", format!("{}", retry_after.ceil() as u64))];
    if global {
        headers.push(("X-RateLimit-Global", "true".to_owned()));
        headers.push(("X-RateLimit-Scope", "global".to_owned()));
    } else {
        headers.extend(bucket.unwrap_or_default());
        headers.push(("X-RateLimit-Scope", "user".to_owned()));
    }
    let mut reply = Reply::json(
        429,
        json!({
            "message": "You are being rate limited.",
            "retry_after": retry_after,
            "global": global,
        }),
    );
    reply.headers = headers;
    reply
}

fn bucket_headers(bucket: &str, limit: u32, remaining: u32, reset_after: f64) -> Headers {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    // Rounded up to the millisecond, so a client that waits what it is told is never early.
    let reset_after = (reset_after * 1000.0).ceil() / 1000.0;
    vec![
        ("X-RateLimit-Limit", limit.to_string()),
        ("X-RateLimit-Remaining", remaining.to_string()),
        ("X-RateLimit-Reset", format!("{:.3}", now + reset_after)),
        ("X-RateLimit-Reset-After", format!("{reset_after:.3}")),
        ("X-RateLimit-Bucket", bucket.to_owned()),
    ]
}
