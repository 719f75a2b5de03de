//! `GET /v1/approvals/{id}?wait=SECS`: the long poll (SPEC §3.3, §3.7).
//!
//! The answer is held until the approval's status is final ([`Outcome::is_final`]: it ended, or
//! its stored record could not be read and it was set aside as `failed`), the time is up, or the
//! daemon shuts down, and is then the usual body with the state as it is at that
//! moment. A waiter is woken by the store's own announcement of a status change (see
//! `store::StatusWatch`), never by polling, and holds nothing but its connection and one
//! subscription while it waits. An unknown id answers 404 at once; a bad `wait` answers 400.

use std::time::Duration;

use axum::Json;
use axum::extract::Query;
use axum::extract::rejection::QueryRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::sync::Semaphore;

use super::{ApiError, HookState, store_error};
use crate::approval::ApprovalId;
use crate::outcome::Outcome;
use crate::store::ApprovalView;

/// The longest a long poll may be held, in seconds.
pub const MAX_WAIT_SECS: u64 = 300;

/// Store reads by long polls at once. Thousands of waiters arrive, or are woken, together; each
/// read is a blocking task on a pooled SQLite connection, and the pool keeps every connection it
/// ever opened. Unbounded, one wake of 10,000 waiters would leave hundreds of threads' worth of
/// connections behind; a few lanes answer them just as fast on a machine of a few cores.
static WAITER_READS: Semaphore = Semaphore::const_new(4);

/// The query of `GET /v1/approvals/{id}`.
#[derive(Deserialize)]
pub struct ShowQuery {
    wait: Option<String>,
}

/// How long the caller asked to wait: `None` without `wait`, else 1–300 seconds. Anything else
/// is a 400 with the usual JSON error.
pub fn requested(
    query: Result<Query<ShowQuery>, QueryRejection>,
) -> Result<Option<Duration>, ApiError> {
    let bad = |message: String| ApiError::new(StatusCode::BAD_REQUEST, "bad_wait", message);
    let Query(query) = query.map_err(|e| bad(format!("the query string is invalid: {e}")))?;
    let Some(raw) = query.wait else {
        return Ok(None);
    };
    match raw.parse::<u64>() {
        Ok(secs @ 1..=MAX_WAIT_SECS) => Ok(Some(Duration::from_secs(secs))),
        _ => Err(bad(format!(
            "wait must be a whole number of seconds from 1 to {MAX_WAIT_SECS}, not {:?}",
            raw.chars().take(40).collect::<String>()
        ))),
    }
}

/// Answers with the approval's view: at once without `wait`, else once it is final, the time is
/// up, or the daemon is shutting down (an agent's `countersign wait` then asks again).
pub async fn show(
    state: &HookState,
    id: &ApprovalId,
    wait: Option<Duration>,
) -> Result<Response, ApiError> {
    let Some(wait) = wait else {
        return view(state, id).await.map(answer);
    };

    let deadline = tokio::time::Instant::now() + wait;
    // Subscribe before reading: a change committed after this point wakes the wait below, and
    // one committed before it is visible to the read.
    let mut changes = state.store.watch_status(id.as_str());
    let _waiting = Waiting::start(state);
    loop {
        let current = view_in_lane(state, id).await?;
        if Outcome::of(&current.status, current.resolved_at.is_some()).is_final() {
            return Ok(answer(current));
        }
        drop(current);
        let changed = tokio::select! {
            _ = changes.changed() => true,
            _ = tokio::time::sleep_until(deadline) => false,
            _ = state.shutdown.cancelled() => false,
        };
        if !changed {
            // Time is up, or shutdown: the state as it is now (it may have changed meanwhile).
            return view_in_lane(state, id).await.map(answer);
        }
    }
}

async fn view(state: &HookState, id: &ApprovalId) -> Result<ApprovalView, ApiError> {
    state
        .store
        .get(id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("approval {id} was never submitted"),
            )
        })
}

/// [`view`] for a long poll: in one of the [`WAITER_READS`] lanes.
async fn view_in_lane(state: &HookState, id: &ApprovalId) -> Result<ApprovalView, ApiError> {
    let _lane = WAITER_READS
        .acquire()
        .await
        .expect("the semaphore is never closed");
    view(state, id).await
}

fn answer(view: ApprovalView) -> Response {
    Json(view).into_response()
}

/// Counts a held long poll in `countersign_hook_long_polls` for as long as it lives.
struct Waiting<'a>(&'a prometheus::IntGauge);

impl<'a> Waiting<'a> {
    fn start(state: &'a HookState) -> Self {
        state.metrics.long_polls.inc();
        Waiting(&state.metrics.long_polls)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}
