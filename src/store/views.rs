//! Views: approvals as `list`, `GET /v1/approvals` and `/metrics` show them.
//!
//! Invariant: **read-only and secret-free.** Nothing here writes, and a view holds nothing the
//! store does not (the store keeps no secret), so it is safe to print or serve.

use std::path::Path;
use std::time::Duration;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, Row, params};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Store, StoreError, migrations, retention, unreadable_reason};
use crate::approval::{AgentContext, ApprovalId, MoneyContext};

impl Store {
    pub async fn get(&self, id: &ApprovalId) -> Result<Option<ApprovalView>, StoreError> {
        let id = id.clone();
        self.read(move |c| load_view(c, &id)).await
    }

    /// Tracked approvals, newest first. `status` filters on countersign's status.
    pub async fn list(
        &self,
        status: Option<String>,
        limit: usize,
    ) -> Result<Vec<ApprovalView>, StoreError> {
        self.read(move |c| list_views(c, status.as_deref(), limit))
            .await
    }

    /// How many approvals have each status. Kept by triggers (migration 3), so a scrape reads a
    /// handful of rows, not every approval.
    pub async fn count_by_status(&self) -> Result<Vec<(String, i64)>, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached("SELECT status, n FROM status_counts WHERE n > 0")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }
}

/// What `countersign list` shows: the approvals, and how far back the store reaches.
#[derive(Debug, Clone)]
pub struct Listing {
    pub approvals: Vec<ApprovalView>,
    /// Approvals settled before this time were pruned (`store.retention`); None when none was.
    pub pruned_before: Option<chrono::DateTime<chrono::Utc>>,
}

/// For `countersign list`: reads the store at `path` without the daemon's lock, safely while a
/// daemon runs (WAL readers never block the writer). `all` includes settled approvals.
pub fn list_read_only(path: &Path, all: bool, limit: usize) -> Result<Listing, StoreError> {
    if !path.exists() {
        return Err(StoreError::Open(format!(
            "no store at {} (has `countersign run` started with this config?)",
            path.display()
        )));
    }
    let c = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    c.busy_timeout(Duration::from_secs(5))?;
    let version: i64 = c.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version != migrations::MIGRATIONS.len() as i64 {
        return Err(StoreError::Open(format!(
            "the store at {} has schema {version}; this countersign reads schema {} (start the daemon once to migrate)",
            path.display(),
            migrations::MIGRATIONS.len()
        )));
    }
    let approvals = if all {
        list_views(&c, None, limit)?
    } else {
        query_views(
            &c,
            "WHERE a.phase != 'done' OR EXISTS (SELECT 1 FROM deliveries d
                 WHERE d.approval_id = a.id AND d.state = 'failed')
             ORDER BY a.received_at DESC, a.id LIMIT ?1",
            params![limit as i64],
        )?
    };
    Ok(Listing {
        approvals,
        pruned_before: retention::pruned_before(&c)?
            .and_then(chrono::DateTime::from_timestamp_millis),
    })
}

/// An approval as `list` and `GET /v1/approvals` show it. Holds no secret.
#[derive(Debug, Clone, Serialize)]
pub struct ApprovalView {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub status: String,
    pub amount: Option<String>,
    pub expires_at: Option<String>,
    pub resolved_at: Option<String>,
    pub received_at: String,
    pub agent: Option<String>,
    pub reason: Option<String>,
    pub superseded_by: Option<String>,
    pub deliveries: Vec<DeliveryView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeliveryView {
    pub channel: String,
    pub state: String,
    pub posted: bool,
    pub up_to_date: bool,
    pub attempts: i64,
    pub last_error: Option<String>,
}

fn ms_to_rfc3339(ms: Option<i64>) -> Option<String> {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

fn load_view(c: &Connection, id: &ApprovalId) -> Result<Option<ApprovalView>, StoreError> {
    Ok(query_views(c, "WHERE a.id = ?1", params![id])?.pop())
}

fn list_views(
    c: &Connection,
    status: Option<&str>,
    limit: usize,
) -> Result<Vec<ApprovalView>, StoreError> {
    match status {
        Some(s) => query_views(
            c,
            "WHERE a.status = ?1 ORDER BY a.received_at DESC, a.id LIMIT ?2",
            params![s, limit as i64],
        ),
        None => query_views(
            c,
            "ORDER BY a.received_at DESC, a.id LIMIT ?1",
            params![limit as i64],
        ),
    }
}

/// Any stored value as text, whatever its type: a view shows a hand-edited row as it is rather
/// than failing the whole list.
fn text(r: &Row, i: usize) -> Option<String> {
    match r.get_ref(i).ok()? {
        ValueRef::Null => None,
        ValueRef::Integer(n) => Some(n.to_string()),
        ValueRef::Real(x) => Some(x.to_string()),
        ValueRef::Text(t) | ValueRef::Blob(t) => Some(String::from_utf8_lossy(t).into_owned()),
    }
}

fn int(r: &Row, i: usize) -> Option<i64> {
    r.get::<_, Option<i64>>(i).ok().flatten()
}

fn query_views(
    c: &Connection,
    tail: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<ApprovalView>, StoreError> {
    let sql = format!(
        "SELECT a.id, a.kind, a.status, a.context_json, a.agent_json, a.expires_at,
                a.resolved_at, a.received_at, a.reason, a.superseded_by, a.version
         FROM approvals a {tail}"
    );
    let mut stmt = c.prepare(&sql)?;
    let rows = stmt.query_map(args, |r| Ok(view_row(r)))?;
    let mut views = Vec::new();
    let mut dstmt = c.prepare_cached(
        "SELECT channel, state, message_ref IS NOT NULL, shown_version, attempts, last_error
         FROM deliveries WHERE approval_id = ?1 ORDER BY channel",
    )?;
    for row in rows {
        let (mut view, version) = row?;
        view.deliveries = dstmt
            .query_map([&view.id], |r| {
                Ok(DeliveryView {
                    channel: text(r, 0).unwrap_or_default(),
                    state: text(r, 1).unwrap_or_default(),
                    posted: int(r, 2) == Some(1),
                    up_to_date: int(r, 3).unwrap_or(0) >= version,
                    attempts: int(r, 4).unwrap_or(0),
                    last_error: text(r, 5),
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        views.push(view);
    }
    Ok(views)
}

/// One approval row as a view (without its deliveries), and its version. JSON that does not
/// decode leaves its fields empty and says so in `reason`.
fn view_row(r: &Row) -> (ApprovalView, i64) {
    let mut problem = None;
    let context: Option<MoneyContext> = lenient(r, 3, "context_json", &mut problem);
    let agent: Option<AgentContext> = lenient(r, 4, "agent_json", &mut problem);
    let amount = context.as_ref().and_then(|c| c.amount.clone()).or_else(|| {
        agent
            .as_ref()
            .and_then(|a| a.milestone.as_ref())
            .and_then(|m| m.amount.clone())
    });
    let view = ApprovalView {
        id: text(r, 0).unwrap_or_default(),
        kind: text(r, 1).unwrap_or_default(),
        status: text(r, 2).unwrap_or_default(),
        amount,
        expires_at: ms_to_rfc3339(int(r, 5)),
        resolved_at: ms_to_rfc3339(int(r, 6)),
        received_at: ms_to_rfc3339(int(r, 7)).unwrap_or_default(),
        agent: agent.and_then(|a| a.agent),
        reason: text(r, 8).or(problem),
        superseded_by: text(r, 9),
        deliveries: Vec::new(),
    };
    (view, int(r, 10).unwrap_or(0))
}

/// A stored JSON column decoded, or None; a value that does not decode is noted in `problem`.
fn lenient<T: DeserializeOwned>(
    r: &Row,
    i: usize,
    name: &str,
    problem: &mut Option<String>,
) -> Option<T> {
    super::decode(name, &text(r, i)?)
        .inspect_err(|e| *problem = Some(unreadable_reason(e)))
        .ok()
}
