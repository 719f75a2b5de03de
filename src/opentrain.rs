//! The OpenTrain public API client: the only code that calls OpenTrain. It makes one request per
//! call and classifies failures; retrying (with backoff, durably scheduled) is the caller's job,
//! so no worker ever holds work while it sleeps.

use std::time::Duration;

use reqwest::{StatusCode, Url};
use serde::Deserialize;
use serde_json::Value;

use crate::approval::WireApproval;
use crate::config::{ExposeSecret, OpenTrainSettings, SecretString};
use crate::notices::Problems;

/// How a 404 reads in a stored reason: [`crate::store::Store::hidden_approvals`] counts on it.
pub const NOT_FOUND_TEXT: &str = "OpenTrain answered 404 NOT_FOUND";

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("OpenTrain answered 404 NOT_FOUND{}", request_id_suffix(.request_id))]
    NotFound { request_id: Option<String> },
    #[error("OpenTrain rejected countersign's token ({status} {code}): {message}{}", request_id_suffix(.request_id))]
    Auth {
        status: u16,
        code: String,
        message: String,
        request_id: Option<String>,
    },
    #[error("OpenTrain is rate limiting countersign (429){}", request_id_suffix(.request_id))]
    RateLimited {
        retry_after: Option<Duration>,
        request_id: Option<String>,
    },
    #[error("OpenTrain answered {status} {code}: {message}{}", request_id_suffix(.request_id))]
    Status {
        status: u16,
        code: String,
        message: String,
        request_id: Option<String>,
    },
    #[error("cannot reach OpenTrain: {0}")]
    Transport(String),
    #[error("OpenTrain's answer could not be read: {0}")]
    Decode(String),
}

fn request_id_suffix(id: &Option<String>) -> String {
    id.as_ref()
        .map(|id| format!(" (requestId {id})"))
        .unwrap_or_default()
}

impl UpstreamError {
    /// Whether trying again later can succeed without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        match self {
            UpstreamError::RateLimited { .. } | UpstreamError::Transport(_) => true,
            UpstreamError::Status { status, .. } => *status >= 500 || *status == 408,
            UpstreamError::Decode(_) => true,
            UpstreamError::NotFound { .. } | UpstreamError::Auth { .. } => false,
        }
    }

    /// Whether OpenTrain refused the request itself (a 4xx other than 401, 403 and 429): for
    /// `/updates`, the cursor it was given.
    pub fn is_refusal(&self) -> bool {
        match self {
            UpstreamError::NotFound { .. } => true,
            UpstreamError::Status { status, .. } => (400..500).contains(status) && *status != 408,
            _ => false,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            UpstreamError::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// A short label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            UpstreamError::NotFound { .. } => "not_found",
            UpstreamError::Auth { .. } => "auth",
            UpstreamError::RateLimited { .. } => "rate_limited",
            UpstreamError::Status { .. } => "server",
            UpstreamError::Transport(_) => "transport",
            UpstreamError::Decode(_) => "decode",
        }
    }
}

/// The error envelope of every non-2xx answer.
#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    code: Option<String>,
    #[serde(rename = "requestId", default)]
    request_id: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Event {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(rename = "resourceId", default)]
    pub resource_id: Option<String>,
    #[serde(default)]
    pub data: Value,
}

impl Event {
    /// The approval an `approval.confirmed` event is about (the name is a trap: it fires for
    /// every terminal status; the status itself is always re-read).
    pub fn approval_id(&self) -> Option<&str> {
        if self.kind != "approval.confirmed" {
            return None;
        }
        self.data
            .get("approvalId")
            .and_then(Value::as_str)
            .or(self.resource_id.as_deref())
    }
}

/// One `/updates` page. Events are decoded one by one: one that does not decode (a numeric `id`,
/// a missing `type`) is counted in `skipped`, never fatal to the page.
#[derive(Debug)]
pub struct UpdatesPage {
    pub events: Vec<Event>,
    pub skipped: usize,
    pub next_cursor: Option<String>,
    pub has_more: bool,
}

impl<'de> Deserialize<'de> for UpdatesPage {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Raw {
            #[serde(default)]
            events: Vec<Value>,
            #[serde(rename = "nextCursor", default)]
            next_cursor: Option<String>,
            #[serde(rename = "hasMore", default)]
            has_more: bool,
        }
        let raw = Raw::deserialize(d)?;
        let total = raw.events.len();
        let events: Vec<Event> = raw
            .events
            .into_iter()
            .filter_map(|e| serde_json::from_value(e).ok())
            .collect();
        Ok(UpdatesPage {
            skipped: total - events.len(),
            events,
            next_cursor: raw.next_cursor,
            has_more: raw.has_more,
        })
    }
}

#[derive(Clone, Debug)]
pub struct OpenTrain {
    http: reqwest::Client,
    base: Url,
    token: SecretString,
    /// Told what every answer says about OpenTrain (reachable? token accepted?), for §3.8.
    problems: Problems,
}

impl OpenTrain {
    pub fn new(settings: &OpenTrainSettings, token: SecretString) -> Result<OpenTrain, String> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("countersign/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(5))
            .timeout(settings.request_timeout)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        // A base with a trailing slash makes Url::join keep its last segment.
        let mut base = settings.api_url.clone();
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        Ok(OpenTrain {
            http,
            base,
            token,
            problems: Problems::detached(),
        })
    }

    /// Reports what every answer says about OpenTrain to `problems` (service notices).
    pub fn reporting_to(mut self, problems: Problems) -> OpenTrain {
        self.problems = problems;
        self
    }

    fn url(&self, path: &str) -> Url {
        self.base
            .join(path)
            .expect("relative API paths built from validated ids always join")
    }

    async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, UpstreamError> {
        let answer = self.request(path, query).await;
        self.problems.opentrain_answered(&answer);
        answer
    }

    async fn request(&self, path: &str, query: &[(&str, String)]) -> Result<Value, UpstreamError> {
        let response = self
            .http
            .get(self.url(path))
            .bearer_auth(self.token.expose_secret())
            .query(query)
            .send()
            .await
            // reqwest's errors carry the URL, never the Authorization header.
            .map_err(|e| UpstreamError::Transport(e.without_url().to_string()))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = response
            .bytes()
            .await
            .map_err(|e| UpstreamError::Transport(e.without_url().to_string()))?;
        if status.is_success() {
            return serde_json::from_slice(&body).map_err(|e| UpstreamError::Decode(e.to_string()));
        }
        let envelope: Option<Envelope> = serde_json::from_slice(&body).ok();
        let code = envelope
            .as_ref()
            .and_then(|e| e.code.clone())
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_string());
        let message = envelope
            .as_ref()
            .and_then(|e| e.error.clone())
            .unwrap_or_default();
        let request_id = envelope.and_then(|e| e.request_id);
        Err(match status {
            StatusCode::NOT_FOUND => UpstreamError::NotFound { request_id },
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => UpstreamError::Auth {
                status: status.as_u16(),
                code,
                message,
                request_id,
            },
            StatusCode::TOO_MANY_REQUESTS => UpstreamError::RateLimited {
                retry_after,
                request_id,
            },
            _ => UpstreamError::Status {
                status: status.as_u16(),
                code,
                message,
                request_id,
            },
        })
    }

    /// `GET /approvals/{id}`. The id must already be validated ([`crate::approval::ApprovalId`]).
    pub async fn approval(&self, id: &str) -> Result<WireApproval, UpstreamError> {
        let body = self.get(&format!("approvals/{id}"), &[]).await?;
        let approval = body
            .get("approval")
            .cloned()
            .ok_or_else(|| UpstreamError::Decode("no `approval` in the answer".into()))?;
        serde_json::from_value(approval).map_err(|e| UpstreamError::Decode(e.to_string()))
    }

    /// `GET /contracts/{id}`: the contract object.
    pub async fn contract(&self, id: &str) -> Result<Value, UpstreamError> {
        let body = self.get(&format!("contracts/{}", segment(id)), &[]).await?;
        body.get("contract")
            .cloned()
            .ok_or_else(|| UpstreamError::Decode("no `contract` in the answer".into()))
    }

    /// `GET /proposals/{id}`: the proposal object.
    pub async fn proposal(&self, id: &str) -> Result<Value, UpstreamError> {
        let body = self.get(&format!("proposals/{}", segment(id)), &[]).await?;
        body.get("proposal")
            .cloned()
            .ok_or_else(|| UpstreamError::Decode("no `proposal` in the answer".into()))
    }

    /// `GET /updates`: one page from `cursor`.
    pub async fn updates(
        &self,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<UpdatesPage, UpstreamError> {
        let mut query = vec![("limit", limit.to_string())];
        if let Some(c) = cursor {
            query.push(("cursor", c.to_string()));
        }
        let body = self.get("updates", &query).await?;
        serde_json::from_value(body).map_err(|e| UpstreamError::Decode(e.to_string()))
    }

    /// `GET /auth/me`.
    pub async fn me(&self) -> Result<Value, UpstreamError> {
        self.get("auth/me", &[]).await
    }
}

/// Ids that come from OpenTrain's own answers (contract, proposal) are opaque: percent-encode
/// anything that could change the path.
fn segment(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Jittered exponential backoff: attempt 1 waits about `base`, doubling up to `cap`, each wait
/// drawn between half and the whole of it so that many retries do not fire together.
pub fn backoff(attempt: u32, base: Duration, cap: Duration) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let full = exp.min(cap);
    let half = full / 2;
    half + Duration::from_millis(fastrand::u64(0..=half.as_millis() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_that_does_not_decode_is_skipped_not_fatal_to_its_page() {
        let page: UpdatesPage = serde_json::from_value(serde_json::json!({
            "events": [
                {"id": 1001, "type": "approval.confirmed", "data": {"approvalId": "apr_a"}},
                {"id": "1002", "type": "approval.confirmed", "data": null, "resourceId": "apr_b"},
                {"id": "1003", "type": "something.new", "data": {}},
                {"id": "1004", "data": {}},
                {"id": "1005", "type": "approval.confirmed", "data": {"approvalId": "apr_c"}}
            ],
            "nextCursor": "1005", "hasMore": false
        }))
        .unwrap();
        assert_eq!(page.skipped, 2);
        let ids: Vec<_> = page.events.iter().filter_map(Event::approval_id).collect();
        assert_eq!(ids, ["apr_b", "apr_c"]);
        assert_eq!(page.next_cursor.as_deref(), Some("1005"));
    }

    #[test]
    fn a_404_reads_as_the_text_hidden_approvals_are_counted_by() {
        let e = UpstreamError::NotFound {
            request_id: Some("req_1".into()),
        };
        assert!(e.to_string().starts_with(NOT_FOUND_TEXT), "{e}");
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let base = Duration::from_secs(1);
        let cap = Duration::from_secs(60);
        for _ in 0..100 {
            let d1 = backoff(1, base, cap);
            assert!(d1 >= Duration::from_millis(500) && d1 <= base);
            let d3 = backoff(3, base, cap);
            assert!(d3 >= Duration::from_secs(2) && d3 <= Duration::from_secs(4));
            let d30 = backoff(30, base, cap);
            assert!(d30 >= Duration::from_secs(30) && d30 <= cap);
        }
    }

    #[test]
    fn opaque_ids_stay_one_path_segment() {
        assert_eq!(segment("c_1-2"), "c_1-2");
        assert_eq!(segment("../x?y"), "%2E%2E%2Fx%3Fy");
    }
}
