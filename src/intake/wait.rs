//! `GET /v1/approvals/{id}?wait=SECS`: the long poll (SPEC §3.3, §3.7).
//!
//! The answer is held until the approval's status is final ([`Outcome::is_final`]: it ended, or
//! its stored record could not be read and it was set aside as `failed`), the time is up, or the
//! daemon shuts down, and is then the usual body with the state as it is at that
//! moment. A waiter is woken by the store's own announcement of a status change (see
//! `store::StatusWatch`), never by polling, and holds nothing but its connection and one
//! subscription while it waits. An unknown id answers 404 at once; a bad `wait` answers 400.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::Query;
use axum::extract::rejection::QueryRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::sync::{OnceCell, Semaphore};

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
        let current = shared_view(state, id, changes.generation()).await?;
        if current.is_final {
            return Ok(current.response());
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

/// One approval's view as its waiters share it: whether it is final, and the answer's body.
#[derive(Clone)]
struct SharedView {
    is_final: bool,
    body: axum::body::Bytes,
}

impl SharedView {
    fn of(view: &ApprovalView) -> Result<SharedView, ApiError> {
        let body = serde_json::to_vec(view).map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("cannot encode the approval: {e}"),
            )
        })?;
        Ok(SharedView {
            is_final: Outcome::of(&view.status, view.resolved_at.is_some()).is_final(),
            body: body.into(),
        })
    }

    fn response(self) -> Response {
        (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            self.body,
        )
            .into_response()
    }
}

/// The read in progress or just made, per approval, for the waiters of one change.
struct Shared {
    generation: u64,
    since: tokio::time::Instant,
    read: Arc<OnceCell<SharedView>>,
}

/// How long a shared read serves later waiters of the same change: long enough for a herd woken
/// together, short enough that no one is answered with what is no longer true (a view holds
/// more than the status, e.g. where its messages stand).
const SHARE_FOR: Duration = Duration::from_secs(1);
/// Past this many approvals with a recent read, the table is swept of the stale ones.
const SHARED_SWEEP: usize = 1_024;

static SHARED: LazyLock<Mutex<HashMap<ApprovalId, Shared>>> = LazyLock::new(Mutex::default);

/// The approval's view for a waiter that has seen `generation` changes of it. Waiters woken by
/// the same change share one store read and one encoding: 10,000 agents waiting on one approval
/// cost one read per change, not 10,000. A waiter never gets a view read before the change it
/// was woken for: the read it shares started after that change was announced.
async fn shared_view(
    state: &HookState,
    id: &ApprovalId,
    generation: u64,
) -> Result<SharedView, ApiError> {
    let read = {
        let mut shared = SHARED.lock().expect("shared reads lock");
        let now = tokio::time::Instant::now();
        match shared.get(id) {
            Some(s) if s.generation == generation && now - s.since < SHARE_FOR => s.read.clone(),
            _ => {
                if shared.len() >= SHARED_SWEEP {
                    shared.retain(|_, s| now - s.since < SHARE_FOR);
                }
                let read = Arc::new(OnceCell::new());
                shared.insert(
                    id.clone(),
                    Shared {
                        generation,
                        since: now,
                        read: read.clone(),
                    },
                );
                read
            }
        }
    };
    read.get_or_try_init(|| async { SharedView::of(&view_in_lane(state, id).await?) })
        .await
        .cloned()
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
