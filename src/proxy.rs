//! Proxy mode (SPEC §3.5): a second listener that forwards every request an agent's OpenTrain
//! tool makes to the OpenTrain origin, streams the answer back as OpenTrain sent it, and takes in
//! what the owner needs on the way through.
//!
//! What it forwards: the method, the path and query, the headers (hop-by-hop ones aside, `Host`
//! rewritten to the origin's) and the body, streamed. Paths under `/api/` go to the origin as
//! they are (a tool whose base is `http://127.0.0.1:8751/api/public/v1`); any other path is taken
//! as relative to the public API and gets `/api/public/v1` put in front (a tool whose base is
//! `http://127.0.0.1:8751`). No redirect is followed and nothing is decompressed, so the agent
//! gets OpenTrain's status, headers and bytes. One request header is changed: on a write
//! (anything but `GET` and `HEAD`) and on `GET /updates`, the answers that may be read,
//! `Accept-Encoding` becomes `identity`, since countersign does not decompress; what the agent
//! gets is still exactly what OpenTrain sent.
//!
//! What it reads, and only when it cannot hurt:
//! - a `202` JSON answer, not content-encoded, of at most [`CAPTURE_LIMIT`] bytes, holding an
//!   `approval`: handed to the hook's intake ([`accept_submission`]: same validation, dedupe and
//!   durable store, then the same verification against OpenTrain), named after the agent's
//!   `User-Agent`;
//! - the JSON body (at most [`CAPTURE_LIMIT`]) of `POST /proposals/{id}/hire`: the milestone
//!   terms the agent asked for, added to that hire's 202 as `context.milestone`;
//! - a `200` JSON answer of `GET /updates` of at most [`UPDATES_LIMIT`]: each
//!   `approval.confirmed` event rings that approval's doorbell (the cursor is the agent's, not
//!   countersign's, so it is not saved).
//!
//! Everything else streams straight through unread. Whatever is read is passed on unchanged
//! first; intake and doorbells run in their own task, so the agent never waits on them and their
//! failures are only logged. The agent's `Authorization` header goes to OpenTrain and nowhere
//! else, and no header or body is ever logged.
//!
//! Failures of the upstream hop answer like a gateway: `502 {"error":"bad_gateway",...}` when
//! OpenTrain cannot be reached, `504 {"error":"gateway_timeout",...}` when it does not answer in
//! time. Timeouts: [`CONNECT_TIMEOUT`] to connect, then [`READ_TIMEOUT`] for the answer's headers
//! and between any two pieces of its body; there is no cap on a whole body, so a slow large
//! download is not cut while it keeps moving.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt, stream};
use reqwest::Url;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::approval::ApprovalId;
use crate::config::ListenerLimits;
use crate::intake::accept_submission;
use crate::serve::is_body_timeout;
use crate::store::Store;
use crate::text::error_chain;
use crate::worker::now_ms;

/// OpenTrain's public API prefix: put in front of paths that are not under `/api/`.
pub const API_PREFIX: &str = "/api/public/v1";
/// The largest answer (or hire request body) read for an approval; larger ones stream unread.
pub const CAPTURE_LIMIT: usize = 64 * 1024;
/// The largest `/updates` page read for doorbells (200 events fit well within it).
pub const UPDATES_LIMIT: usize = 1024 * 1024;
/// How long connecting to OpenTrain may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long OpenTrain may take to send its answer's headers, and then each piece of its body.
pub const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest agent name taken from a `User-Agent`.
const MAX_AGENT_CHARS: usize = 120;

/// Headers that describe one connection, not the message: never forwarded either way (RFC 9110
/// §7.6.1), nor any header the `Connection` header names. `Expect` is answered by this server
/// itself, so it is not passed on either.
const HOP_BY_HOP: [&str; 10] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "expect",
];

pub struct Proxy {
    pub store: Store,
    /// `opentrain.app_url`, for validating captured approvals like hook submissions.
    pub app_url: String,
    /// The OpenTrain origin (scheme, host and port of `opentrain.api_url`).
    pub origin: Url,
    /// `proxy.read_timeout_secs` and `proxy.max_connections`.
    pub limits: ListenerLimits,
}

/// What the proxy's requests share.
struct Shared {
    proxy: Arc<Proxy>,
    client: reqwest::Client,
    /// Intake and doorbell tasks, waited for at shutdown.
    tasks: TaskTracker,
}

type ByteStream<E> = Pin<Box<dyn Stream<Item = Result<Bytes, E>> + Send>>;

impl Proxy {
    /// The upstream client: no redirects, no decompression, no added `User-Agent`, and the
    /// timeouts described in the module documentation.
    pub fn client() -> reqwest::Result<reqwest::Client> {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_gzip()
            .no_brotli()
            .no_deflate()
            .no_zstd()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .build()
    }

    /// Serves until `cancel`, then waits for the intake tasks already started.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        cancel: CancellationToken,
    ) -> std::io::Result<()> {
        let client = Self::client().map_err(std::io::Error::other)?;
        let tasks = TaskTracker::new();
        let shared = Arc::new(Shared {
            proxy: self,
            client,
            tasks: tasks.clone(),
        });
        let addr = listener.local_addr()?;
        tracing::info!(proxy = %addr, "proxy mode: forwarding agents' OpenTrain requests");
        if !addr.ip().is_loopback() {
            tracing::warn!(
                proxy = %addr,
                "proxy.listen is not a loopback address: anyone who can reach it can send requests \
                 to OpenTrain through it (with their own token) and have approvals taken in"
            );
        }
        let limits = shared.proxy.limits;
        let router = Router::new().fallback(forward).with_state(shared);
        let served = crate::serve::serve(listener, router, limits, cancel).await;
        tasks.close();
        tasks.wait().await;
        served
    }

    /// The upstream URL for what the agent asked (see [`target_url`]).
    pub fn target(&self, uri: &Uri) -> Option<Url> {
        target_url(&self.origin, uri)
    }
}

/// The upstream URL for a request target: the origin, the path (with `/api/public/v1` in front
/// unless it is under `/api/`) and the query as they came. The scheme, host and port always come
/// from the origin, whatever the request says. `None` for a target that is not a path (`*`, or
/// an authority for `CONNECT`).
pub fn target_url(origin: &Url, uri: &Uri) -> Option<Url> {
    let path = uri.path();
    if !path.starts_with('/') {
        return None;
    }
    let mut url = origin.clone();
    if path == "/api" || path.starts_with("/api/") {
        url.set_path(path);
    } else {
        url.set_path(&format!("{API_PREFIX}{path}"));
    }
    url.set_query(uri.query());
    url.set_fragment(None);
    Some(url)
}

/// What is read of one exchange on its way through.
#[derive(Debug, Clone, PartialEq)]
enum Capture {
    /// A 202 answer that may hold an approval; for a hire, the terms the agent asked for.
    Approval { terms: Option<Value> },
    /// A `/updates` page: its `approval.confirmed` events are doorbells.
    Updates,
}

/// `POST /api/public/v1/proposals/{id}/hire`.
fn is_hire(method: &Method, path: &str) -> bool {
    if method != Method::POST {
        return false;
    }
    let Some(rest) = path.strip_prefix(API_PREFIX) else {
        return false;
    };
    matches!(
        rest.split('/').collect::<Vec<_>>().as_slice(),
        ["", "proposals", id, "hire"] if !id.is_empty()
    )
}

fn is_updates(method: &Method, path: &str) -> bool {
    method == Method::GET && path.strip_prefix(API_PREFIX) == Some("/updates")
}

/// Whether the answer may be read: a write's answer (a 202 with an approval comes only from
/// writes; write answers are small) or an `/updates` page.
fn may_be_read(method: &Method, path: &str) -> bool {
    !matches!(*method, Method::GET | Method::HEAD) || is_updates(method, path)
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            let essence = v.split(';').next().unwrap_or_default().trim();
            essence.eq_ignore_ascii_case("application/json")
                || essence.to_ascii_lowercase().ends_with("+json")
        })
        .unwrap_or(false)
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// A copy of `headers` without the hop-by-hop ones.
fn end_to_end(headers: &HeaderMap) -> HeaderMap {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    let mut out = headers.clone();
    for name in HOP_BY_HOP {
        out.remove(name);
    }
    for name in named {
        out.remove(name);
    }
    out
}

/// The agent's name: its `User-Agent`, cut to a sane length.
fn agent_name(headers: &HeaderMap) -> Option<String> {
    let ua = headers.get(header::USER_AGENT)?.to_str().ok()?.trim();
    (!ua.is_empty()).then(|| ua.chars().take(MAX_AGENT_CHARS).collect())
}

/// The requested milestone terms of a hire request body, keeping only the fields intake knows,
/// with the types it takes (anything else is left out rather than risk the approval).
fn hire_terms(body: &[u8]) -> Option<Value> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let milestone = value.get("milestone")?.as_object()?;
    let mut terms = Map::new();
    for key in ["name", "description", "dueDate"] {
        if let Some(Value::String(s)) = milestone.get(key) {
            terms.insert(key.to_string(), Value::String(s.clone()));
        }
    }
    if let Some(amount) = milestone.get("amount").filter(|a| a.is_number()) {
        terms.insert("amount".to_string(), amount.clone());
    }
    (!terms.is_empty()).then_some(Value::Object(terms))
}

/// The approvals an `/updates` page announces with `approval.confirmed` events.
fn confirmed_ids(page: &[u8]) -> Vec<ApprovalId> {
    let Ok(value) = serde_json::from_slice::<Value>(page) else {
        return Vec::new();
    };
    let Some(events) = value.get("events").and_then(Value::as_array) else {
        return Vec::new();
    };
    events
        .iter()
        .filter(|e| e.get("type").and_then(Value::as_str) == Some("approval.confirmed"))
        .filter_map(|e| {
            e.get("data")
                .and_then(|d| d.get("approvalId"))
                .or_else(|| e.get("resourceId"))
                .and_then(Value::as_str)
        })
        .filter_map(|id| ApprovalId::parse(id).ok())
        .collect()
}

/// Reading the start of a body.
enum Head<E> {
    /// The whole body, which ended within the limit.
    Whole(Bytes),
    /// More than the limit: what was read so far and the rest, still to be streamed.
    Partial(Vec<Bytes>, ByteStream<E>),
}

/// Reads `body` until it ends or passes `limit`.
async fn read_head<E>(mut body: ByteStream<E>, limit: usize) -> Result<Head<E>, E> {
    let mut chunks = Vec::new();
    let mut len = 0;
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        len += chunk.len();
        chunks.push(chunk);
        if len > limit {
            return Ok(Head::Partial(chunks, body));
        }
    }
    Ok(Head::Whole(match chunks.len() {
        1 => chunks.pop().unwrap_or_default(),
        _ => chunks.concat().into(),
    }))
}

/// A body read in part, whole again: the chunks read, then the rest.
fn rejoin<E: Send + 'static>(read: Vec<Bytes>, rest: ByteStream<E>) -> ByteStream<E> {
    Box::pin(stream::iter(read.into_iter().map(Ok)).chain(rest))
}

/// A gateway error, in countersign's error shape.
fn gateway_error(status: StatusCode, code: &str, message: String) -> Response {
    (
        status,
        axum::Json(json!({"error": code, "message": message})),
    )
        .into_response()
}

/// The agent's request body could not be read: 408 when it was too slow, else 400.
fn unreadable_body(e: &(dyn std::error::Error + 'static)) -> Response {
    if is_body_timeout(e) {
        gateway_error(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            "the request body did not arrive in time (proxy.read_timeout_secs)".into(),
        )
    } else {
        gateway_error(
            StatusCode::BAD_REQUEST,
            "unreadable_body",
            "the request body could not be read".into(),
        )
    }
}

/// A 502 or 504 for a failed upstream exchange. The URL is left out of the message (it may
/// carry a query the agent would not want repeated) and headers never appear in errors.
fn upstream_failure(method: &Method, path: &str, e: reqwest::Error) -> Response {
    let timeout = e.is_timeout();
    let reason = error_chain(&e.without_url());
    if timeout {
        tracing::warn!(%method, path, error = %reason, "proxy: OpenTrain did not answer in time; answered 504");
        gateway_error(
            StatusCode::GATEWAY_TIMEOUT,
            "gateway_timeout",
            format!("OpenTrain did not answer in time (through countersign's proxy): {reason}"),
        )
    } else {
        tracing::warn!(%method, path, error = %reason, "proxy: OpenTrain could not be reached; answered 502");
        gateway_error(
            StatusCode::BAD_GATEWAY,
            "bad_gateway",
            format!("countersign's proxy could not reach OpenTrain: {reason}"),
        )
    }
}

/// The one handler: every method, every path.
async fn forward(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let method = parts.method;
    if method == Method::CONNECT {
        return gateway_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "countersign's proxy forwards requests to OpenTrain; it does not open tunnels".into(),
        );
    }
    let Some(url) = shared.proxy.target(&parts.uri) else {
        return gateway_error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the request target must be a path".into(),
        );
    };
    let path = url.path().to_string();
    let mut headers = end_to_end(&parts.headers);
    headers.remove(header::HOST);
    if may_be_read(&method, &path) {
        // An answer that may be read must come uncompressed (countersign does not decompress);
        // it is still exactly what OpenTrain sent, and every HTTP client takes identity.
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
    }

    // The request body: streamed, except a hire's small body, read for its terms (when it is
    // JSON) and forwarded as the same bytes.
    let mut terms = None;
    let upstream_body = if body.is_end_stream() {
        None
    } else if is_hire(&method, &path)
        && content_length(&parts.headers).is_none_or(|n| n <= CAPTURE_LIMIT as u64)
    {
        match read_head(Box::pin(body.into_data_stream()), CAPTURE_LIMIT).await {
            Ok(Head::Whole(bytes)) => {
                terms = hire_terms(&bytes);
                Some(reqwest::Body::from(bytes))
            }
            Ok(Head::Partial(read, rest)) => Some(reqwest::Body::wrap_stream(rejoin(read, rest))),
            Err(e) => {
                tracing::info!(%method, path, error = %e, "proxy: the agent's request body broke off");
                return unreadable_body(&e);
            }
        }
    } else {
        Some(reqwest::Body::wrap_stream(body.into_data_stream()))
    };

    let mut upstream = shared.client.request(method.clone(), url).headers(headers);
    if let Some(body) = upstream_body {
        upstream = upstream.body(body);
    }
    let answer = match upstream.send().await {
        Ok(answer) => answer,
        // The agent's own body failed on the way (it was too slow): that is not OpenTrain's fault.
        Err(e) if is_body_timeout(&e) => {
            tracing::info!(%method, path, "proxy: the agent's request body did not arrive in time");
            return unreadable_body(&e);
        }
        Err(e) => return upstream_failure(&method, &path, e),
    };

    let status = answer.status();
    let answer_headers = end_to_end(answer.headers());
    let encoded = answer_headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
    let capture = if method == Method::HEAD || encoded || !is_json(&answer_headers) {
        None
    } else if status == StatusCode::ACCEPTED {
        Some((Capture::Approval { terms }, CAPTURE_LIMIT))
    } else if status == StatusCode::OK && is_updates(&method, &path) {
        Some((Capture::Updates, UPDATES_LIMIT))
    } else {
        None
    };
    let capture = capture
        .filter(|(_, limit)| content_length(&answer_headers).is_none_or(|n| n <= *limit as u64));

    let stream: ByteStream<reqwest::Error> = Box::pin(answer.bytes_stream());
    let (body, captured) = match capture {
        None => (streamed(stream, &method, &path), false),
        Some((what, limit)) => match read_head(stream, limit).await {
            Ok(Head::Whole(bytes)) => {
                shared.tasks.spawn(take_in(
                    shared.proxy.clone(),
                    what,
                    bytes.clone(),
                    agent_name(&parts.headers),
                    path.clone(),
                ));
                (Body::from(bytes), true)
            }
            Ok(Head::Partial(read, rest)) => {
                tracing::debug!(%method, path, "proxy: answer too large to read; streamed unread");
                (streamed(rejoin(read, rest), &method, &path), false)
            }
            Err(e) => return upstream_failure(&method, &path, e),
        },
    };
    if captured {
        tracing::info!(%method, path, status = status.as_u16(), captured, "proxy: forwarded");
    } else {
        tracing::debug!(%method, path, status = status.as_u16(), captured, "proxy: forwarded");
    }
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = answer_headers;
    response
}

/// The rest of an answer, streamed to the agent; a break upstream is logged (the agent sees the
/// connection end early, as it would talking to OpenTrain directly).
fn streamed(stream: ByteStream<reqwest::Error>, method: &Method, path: &str) -> Body {
    let (method, path) = (method.clone(), path.to_string());
    Body::from_stream(stream.inspect(move |chunk| {
        if let Err(e) = chunk {
            let timeout = e.is_timeout();
            tracing::warn!(%method, path, timeout, "proxy: OpenTrain's answer broke off mid-body");
        }
    }))
}

/// Hands what was read to intake, or rings doorbells. Runs after the agent has its answer.
async fn take_in(
    proxy: Arc<Proxy>,
    what: Capture,
    body: Bytes,
    agent: Option<String>,
    path: String,
) {
    match what {
        Capture::Approval { terms } => capture_approval(&proxy, &body, agent, terms, &path).await,
        Capture::Updates => {
            let ids = confirmed_ids(&body);
            if ids.is_empty() {
                return;
            }
            match proxy.store.ring_and_save_cursor(ids, None, now_ms()).await {
                Ok(0) => {}
                Ok(rung) => {
                    tracing::info!(
                        rung,
                        "proxy: doorbells from an agent's /updates page; re-reading"
                    )
                }
                Err(e) => {
                    tracing::warn!(error = %e, "proxy: could not ring the doorbells of an /updates page")
                }
            }
        }
    }
}

async fn capture_approval(
    proxy: &Proxy,
    body: &[u8],
    agent: Option<String>,
    terms: Option<Value>,
    path: &str,
) {
    let Ok(Value::Object(mut top)) = serde_json::from_slice::<Value>(body) else {
        tracing::debug!(
            path,
            "proxy: a 202 answer that is not a JSON object; nothing to take in"
        );
        return;
    };
    if !top.get("approval").is_some_and(Value::is_object) {
        tracing::debug!(
            path,
            "proxy: a 202 answer without an approval; nothing to take in"
        );
        return;
    }
    let agent = agent.as_deref();
    if let Some(terms) = terms {
        top.insert("context".into(), json!({ "milestone": terms }));
        let with_terms = serde_json::to_vec(&top).unwrap_or_default();
        match accept_submission(&proxy.store, &proxy.app_url, &with_terms, agent).await {
            Ok(accepted) => {
                log_accepted(&accepted.body, accepted.new, path);
                return;
            }
            Err(e) => tracing::warn!(
                path,
                error = ?e,
                "proxy: the hire's requested terms were refused; taking the approval without them"
            ),
        }
    }
    match accept_submission(&proxy.store, &proxy.app_url, body, agent).await {
        Ok(accepted) => log_accepted(&accepted.body, accepted.new, path),
        Err(e) => tracing::warn!(
            path,
            error = ?e,
            "proxy: could not take in an approval the agent received (the agent's answer was unaffected)"
        ),
    }
}

fn log_accepted(answer: &Value, new: bool, path: &str) {
    let id = answer["approvalId"].as_str().unwrap_or_default();
    if new {
        tracing::info!(approval_id = id, path, "proxy: captured an approval");
    } else {
        tracing::debug!(approval_id = id, path, "proxy: approval already tracked");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(origin: &str, uri: &str) -> Option<String> {
        let origin = Url::parse(origin).unwrap();
        let uri: Uri = uri.parse().unwrap();
        target_url(&origin, &uri).map(|u| u.to_string())
    }

    #[test]
    fn both_base_shapes_reach_the_public_api() {
        let o = "http://127.0.0.1:9000/";
        assert_eq!(
            target(o, "/api/public/v1/milestones/m1/fund").as_deref(),
            Some("http://127.0.0.1:9000/api/public/v1/milestones/m1/fund")
        );
        assert_eq!(
            target(o, "/milestones/m1/fund").as_deref(),
            Some("http://127.0.0.1:9000/api/public/v1/milestones/m1/fund")
        );
        assert_eq!(
            target(o, "/updates?cursor=12&limit=50").as_deref(),
            Some("http://127.0.0.1:9000/api/public/v1/updates?cursor=12&limit=50")
        );
        assert_eq!(
            target(o, "/api/agent/claim").as_deref(),
            Some("http://127.0.0.1:9000/api/agent/claim")
        );
        // The host never comes from the request.
        assert_eq!(
            target(o, "//evil.example/x").as_deref(),
            Some("http://127.0.0.1:9000/api/public/v1//evil.example/x")
        );
        assert_eq!(
            target(o, "http://evil.example/updates").as_deref(),
            Some("http://127.0.0.1:9000/api/public/v1/updates")
        );
        assert_eq!(target(o, "*"), None);
    }

    #[test]
    fn hop_by_hop_headers_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Hop"),
        );
        h.insert("x-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        h.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
        let out = end_to_end(&h);
        let mut names: Vec<&str> = out.keys().map(|k| k.as_str()).collect();
        names.sort();
        assert_eq!(names, ["accept-encoding", "authorization"]);
    }

    #[test]
    fn only_the_hire_route_gives_terms_and_only_updates_gives_doorbells() {
        assert!(is_hire(&Method::POST, "/api/public/v1/proposals/p1/hire"));
        assert!(!is_hire(&Method::GET, "/api/public/v1/proposals/p1/hire"));
        assert!(!is_hire(&Method::POST, "/api/public/v1/proposals//hire"));
        assert!(!is_hire(
            &Method::POST,
            "/api/public/v1/proposals/p1/hire/x"
        ));
        assert!(is_updates(&Method::GET, "/api/public/v1/updates"));
        assert!(!is_updates(&Method::GET, "/api/public/v1/updates/x"));

        let t = hire_terms(
            br#"{"milestone":{"name":"M1","amount":300,"dueDate":"2026-07-01","extra":1,"description":5}}"#,
        )
        .unwrap();
        assert_eq!(
            t,
            json!({"name": "M1", "amount": 300, "dueDate": "2026-07-01"})
        );
        assert_eq!(hire_terms(b"not json"), None);
        assert_eq!(hire_terms(br#"{"milestone": 3}"#), None);
    }

    #[test]
    fn doorbells_come_only_from_approval_events_with_valid_ids() {
        let page = json!({"events": [
            {"id": "1", "type": "approval.confirmed", "data": {"approvalId": "apr_1", "status": "declined"}},
            {"id": "2", "type": "proposal.received", "resourceId": "apr_2", "data": {}},
            {"id": "3", "type": "approval.confirmed", "resourceId": "apr_3", "data": {}},
            {"id": "4", "type": "approval.confirmed", "data": {"approvalId": "../x"}},
        ], "nextCursor": "4", "hasMore": false});
        assert_eq!(
            confirmed_ids(&serde_json::to_vec(&page).unwrap())
                .iter()
                .map(ApprovalId::as_str)
                .collect::<Vec<_>>(),
            ["apr_1", "apr_3"]
        );
        assert!(confirmed_ids(b"[1,2]").is_empty());
    }

    #[test]
    fn json_is_recognised_by_its_media_type() {
        let mut h = HeaderMap::new();
        assert!(!is_json(&h));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        assert!(is_json(&h));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        assert!(is_json(&h));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv"));
        assert!(!is_json(&h));
    }
}
