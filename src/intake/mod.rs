//! The hook: a small HTTP API on `hook.listen` for agents (submissions, events, reads, health,
//! metrics) and, when `opentrain.webhook_secret` is set, OpenTrain's signed webhooks.
//!
//! Every error is `{"error": "<code>", "message": "<sentence>"}` with its status, and a refused
//! request changes nothing. A 2xx from `POST /v1/approvals` is sent only after the store has
//! committed the approval to disk.

pub mod signature;
pub mod submission;
pub mod wait;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::approval::ApprovalId;
use crate::config::{ExposeSecret, SecretString};
use crate::metrics::Metrics;
use crate::serve::is_body_timeout;
use crate::store::{NewSubmission, Store};
use crate::worker::now_ms;
use submission::{Rejection, parse_event, parse_submission};

/// What the hook's handlers share.
pub struct HookState {
    pub store: Store,
    pub metrics: Arc<Metrics>,
    /// `GET /metrics` without a token: only when the hook listens on loopback.
    pub metrics_open: bool,
    pub token: Option<SecretString>,
    /// `opentrain.webhook_secret`: when set, `POST /v1/opentrain/webhook` takes signed deliveries.
    pub webhook_secret: Option<SecretString>,
    pub app_url: String,
    pub max_body_bytes: usize,
    /// Cancelled at shutdown: held long polls answer at once.
    pub shutdown: tokio_util::sync::CancellationToken,
}

/// An error answer: a status and the JSON error body.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    /// A 400 for a request axum could not extract (its own rejection is plain text; every error
    /// here has the JSON shape).
    fn unreadable(code: &'static str, what: &str, why: String) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            code,
            format!("the {what} is not valid: {why}"),
        )
    }

    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"error": self.code, "message": self.message})),
        )
            .into_response()
    }
}

impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> Self {
        match r {
            Rejection::Malformed(m) => ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", m),
            Rejection::Unacceptable { code, message } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
            }
        }
    }
}

fn store_error(e: crate::store::StoreError) -> ApiError {
    tracing::error!(error = %e, "hook: the store failed");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
        "the store could not commit the request; nothing was accepted, try again",
    )
}

pub fn router(state: Arc<HookState>) -> Router {
    let mut router = Router::new();
    if state.webhook_secret.is_some() {
        router = router.route("/v1/opentrain/webhook", post(webhook));
    }
    router
        .route("/metrics", get(metrics))
        .route("/v1/approvals", post(submit).get(list))
        .route("/v1/approvals/{id}", get(show))
        .route("/v1/events", post(event))
        .route("/healthz", get(healthz))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method",
            )
        })
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Times every request for `countersign_hook_request_duration_seconds`.
async fn observe(
    State(state): State<Arc<HookState>>,
    route: Option<MatchedPath>,
    request: Request,
    next: Next,
) -> Response {
    let started = std::time::Instant::now();
    let route = route
        .map(|r| r.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let response = next.run(request).await;
    state
        .metrics
        .hook_requests
        .with_label_values(&[&route, response.status().as_str()])
        .observe(started.elapsed().as_secs_f64());
    response
}

/// `GET /metrics`: Prometheus text format.
async fn metrics(
    State(state): State<Arc<HookState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if !state.metrics_open {
        authorize(&state, &headers)?;
    }
    let text = state
        .metrics
        .render(&state.store)
        .await
        .map_err(store_error)?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

/// `Authorization: Bearer <hook.token>`. The SHA-256 digests of the given and the expected token
/// are compared, in constant time: neither the token's content nor its length shows in how long a
/// refusal takes. Without a configured token (only allowed on loopback) every caller is let in.
fn authorize(state: &HookState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = &state.token else {
        return Ok(());
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    match given {
        Some(token) if same_token(token, expected.expose_secret()) => Ok(()),
        Some(_) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the bearer token is not the hook's token",
        )),
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send Authorization: Bearer <hook.token>",
        )),
    }
}

fn same_token(given: &str, expected: &str) -> bool {
    let given = Sha256::digest(given.as_bytes());
    let expected = Sha256::digest(expected.as_bytes());
    bool::from(given.ct_eq(&expected))
}

/// Reads the body, refusing it with 413 as soon as it passes the limit (without buffering more),
/// and with 408 when it does not arrive within the read timeout.
async fn read_body(
    state: &HookState,
    headers: &HeaderMap,
    body: Body,
) -> Result<Vec<u8>, ApiError> {
    let limit = state.max_body_bytes;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the body is larger than hook.max_body_bytes ({limit} bytes)"),
        )
    };
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > limit as u64
    {
        return Err(too_large());
    }
    let mut out = Vec::new();
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            if is_body_timeout(&e) {
                ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "request_timeout",
                    format!("{e}: send the whole request at once (hook.read_timeout_secs)"),
                )
            } else {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "unreadable_body",
                    format!("the body could not be read: {e}"),
                )
            }
        })?;
        if out.len() + chunk.len() > limit {
            return Err(too_large());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// `POST /v1/approvals`.
async fn submit(
    State(state): State<Arc<HookState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let bytes = read_body(&state, &headers, body).await?;
    let accepted = accept_submission(&state.store, &state.app_url, &bytes, None).await;
    let outcome = match &accepted {
        Ok(a) if a.new => "accepted",
        Ok(_) => "duplicate",
        Err(e) if e.status.is_client_error() => "refused",
        Err(_) => "failed",
    };
    state
        .metrics
        .submissions
        .with_label_values(&[outcome])
        .inc();
    let accepted = accepted?;
    Ok((accepted.status, Json(accepted.body)).into_response())
}

/// What intake answered for one submission.
pub struct Accepted {
    pub status: StatusCode,
    pub body: serde_json::Value,
    pub new: bool,
}

/// Validates and durably stores one submission: the body of `POST /v1/approvals`, or a 202 body
/// captured some other way (proxy mode). `agent` names the agent when the body does not.
/// Answers only after the store has committed it.
pub async fn accept_submission(
    store: &Store,
    app_url: &str,
    bytes: &[u8],
    agent: Option<&str>,
) -> Result<Accepted, ApiError> {
    let mut sub = parse_submission(bytes, app_url).inspect_err(|r| {
        tracing::info!(rejection = ?r, "hook: submission refused");
    })?;
    if sub.context.agent.is_none() {
        sub.context.agent = agent.map(String::from);
    }
    let id = sub.id.clone();
    let agent = sub.context.agent.clone().unwrap_or_default();
    let inserted = store
        .insert_submission(NewSubmission {
            approval: sub.approval,
            kind: sub.kind,
            agent: sub.context,
            now: now_ms(),
        })
        .await
        .map_err(store_error)?;
    let body = json!({
        "approvalId": id.as_str(),
        "status": inserted.status,
        "duplicate": !inserted.new,
    });
    if inserted.new {
        tracing::info!(approval_id = %id, kind = sub.kind.as_str(), agent = %agent, "accepted");
    } else {
        tracing::debug!(approval_id = %id, "already tracked; duplicate submission");
    }
    Ok(Accepted {
        status: if inserted.new {
            StatusCode::ACCEPTED
        } else {
            StatusCode::OK
        },
        body,
        new: inserted.new,
    })
}

/// `POST /v1/events`: an OpenTrain event an agent saw. Only a doorbell: the status is re-read.
async fn event(
    State(state): State<Arc<HookState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let bytes = read_body(&state, &headers, body).await?;
    let id = parse_event(&bytes)?;
    let rung = match &id {
        Some(id) => {
            state
                .store
                .ring_and_save_cursor(vec![id.clone()], None, now_ms())
                .await
                .map_err(store_error)?
                > 0
        }
        None => false,
    };
    if let (Some(id), true) = (&id, rung) {
        tracing::info!(approval_id = %id, "doorbell from an agent's event; re-reading");
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"accepted": true, "rang": rung})),
    )
        .into_response())
}

/// `POST /v1/opentrain/webhook`: a signed OpenTrain delivery, used only as a doorbell. The
/// signature is checked on the raw bytes before anything is parsed; the answer comes at once
/// (the re-read happens in the background). A bad signature is a 400 and changes nothing.
async fn webhook(
    State(state): State<Arc<HookState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_body(&state, &headers, body).await?;
    let secret = state
        .webhook_secret
        .as_ref()
        .expect("the route exists only with a secret");
    let header = headers
        .get("x-opentrain-signature")
        .and_then(|v| v.to_str().ok());
    let now = now_ms() / 1000;
    if let Err(e) = signature::verify(&[secret.expose_secret().as_bytes()], header, &bytes, now) {
        tracing::warn!(reason = %e, "webhook: delivery refused");
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_signature",
            e.to_string(),
        ));
    }
    let delivery = headers
        .get("x-opentrain-delivery")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.chars().take(200).collect::<String>());
    // A signed body that is not an approval event is acknowledged and skipped: OpenTrain counts
    // a 4xx toward disabling the webhook.
    let id = match parse_event(&bytes) {
        Ok(id) => id,
        Err(r) => {
            tracing::warn!(rejection = ?r, "webhook: signed delivery is not an event countersign reads; skipped");
            None
        }
    };
    let (duplicate, rung) = state
        .store
        .webhook_doorbell(delivery, id.clone(), now_ms())
        .await
        .map_err(store_error)?;
    if let (Some(id), true) = (&id, rung) {
        tracing::info!(approval_id = %id, duplicate, "doorbell from an OpenTrain webhook; re-reading");
    }
    Ok((
        StatusCode::OK,
        Json(json!({"accepted": true, "rang": rung, "duplicate": duplicate})),
    )
        .into_response())
}

#[derive(Deserialize)]
struct ListQuery {
    status: Option<String>,
    limit: Option<usize>,
}

/// `GET /v1/approvals[?status=pending]`.
async fn list(
    State(state): State<Arc<HookState>>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    // axum's own rejection is plain text; every error here has the JSON shape.
    let Query(q) =
        query.map_err(|e| ApiError::unreadable("bad_query", "query string", e.body_text()))?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let views = state
        .store
        .list(q.status, limit)
        .await
        .map_err(store_error)?;
    Ok(Json(json!({ "approvals": views })).into_response())
}

/// `GET /v1/approvals/{id}[?wait=SECS]`; the long poll is in [`wait`].
async fn show(
    State(state): State<Arc<HookState>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<wait::ShowQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let Path(id) = path.map_err(|e| ApiError::unreadable("bad_path", "path", e.body_text()))?;
    let wait = wait::requested(query)?;
    let id =
        ApprovalId::parse(&id).map_err(|e| ApiError::new(StatusCode::NOT_FOUND, "not_found", e))?;
    wait::show(&state, &id, wait).await
}

/// `GET /healthz`: 200 when the store takes a durable write.
async fn healthz(State(state): State<Arc<HookState>>) -> Response {
    // No token is needed here, so it must stay cheap: no fsync per call.
    match state.store.health(now_ms()).await {
        Ok(()) => (StatusCode::OK, Json(json!({"status": "ok"}))).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "healthz: the store is not writable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"error": "store_unavailable", "message": "the store is not writable"})),
            )
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_whole_token_matches_whatever_the_lengths() {
        let token = "hook-token-0001";
        assert!(same_token(token, token));
        for other in [
            "",
            "hook-token-000",
            "hook-token-00011",
            "HOOK-TOKEN-0001",
            "x",
        ] {
            assert!(!same_token(other, token), "{other:?}");
        }
    }
}
