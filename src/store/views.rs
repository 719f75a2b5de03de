//! Views: approvals as `list`, `GET /v1/approvals` and `/metrics` show them.
//!
//! Invariant: **read-only and secret-free.** Nothing here writes, and a view holds nothing the
//! store does not (the store keeps no secret), so it is safe to print or serve.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde::Serialize;

use super::{Store, StoreError, migrations};
use crate::approval::{AgentContext, MoneyContext};

impl Store {
    pub async fn get(&self, id: &str) -> Result<Option<ApprovalView>, StoreError> {
        let id = id.to_string();
        self.read(move |c| {
            let exists: Option<i64> = c
                .query_row("SELECT 1 FROM approvals WHERE id = ?1", [&id], |r| r.get(0))
                .optional()?;
            if exists.is_none() {
                return Ok(None);
            }
            Ok(Some(load_view(c, &id)?))
        })
        .await
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

    /// How many approvals have each status.
    pub async fn count_by_status(&self) -> Result<Vec<(String, i64)>, StoreError> {
        self.read(|c| {
            let mut stmt =
                c.prepare_cached("SELECT status, COUNT(*) FROM approvals GROUP BY status")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }
}

/// For `countersign list`: reads the store at `path` without the daemon's lock, safely while a
/// daemon runs (WAL readers never block the writer). `all` includes settled approvals.
pub fn list_read_only(
    path: &Path,
    all: bool,
    limit: usize,
) -> Result<Vec<ApprovalView>, StoreError> {
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
    if all {
        list_views(&c, None, limit)
    } else {
        query_views(
            &c,
            "WHERE a.phase != 'done' OR EXISTS (SELECT 1 FROM deliveries d
                 WHERE d.approval_id = a.id AND d.state = 'failed')
             ORDER BY a.received_at DESC, a.id LIMIT ?1",
            params![limit as i64],
        )
    }
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

fn load_view(c: &Connection, id: &str) -> Result<ApprovalView, StoreError> {
    let mut views = query_views(c, "WHERE a.id = ?1", params![id])?;
    views
        .pop()
        .ok_or(StoreError::Sqlite(rusqlite::Error::QueryReturnedNoRows))
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
    let rows = stmt.query_map(args, |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, Option<String>>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, Option<i64>>(5)?,
            r.get::<_, Option<i64>>(6)?,
            r.get::<_, i64>(7)?,
            r.get::<_, Option<String>>(8)?,
            r.get::<_, Option<String>>(9)?,
            r.get::<_, i64>(10)?,
        ))
    })?;
    let mut views = Vec::new();
    let mut dstmt = c.prepare_cached(
        "SELECT channel, state, message_ref IS NOT NULL, shown_version, attempts, last_error
         FROM deliveries WHERE approval_id = ?1 ORDER BY channel",
    )?;
    for row in rows {
        let (id, kind, status, context, agent, expires, resolved, received, reason, sup, version) =
            row?;
        let context: Option<MoneyContext> =
            context.map(|c| serde_json::from_str(&c)).transpose()?;
        let agent: AgentContext = serde_json::from_str(&agent)?;
        let amount = context
            .as_ref()
            .and_then(|c| c.amount.clone())
            .or_else(|| agent.milestone.as_ref().and_then(|m| m.amount.clone()));
        let deliveries = dstmt
            .query_map([&id], |r| {
                let shown: i64 = r.get(3)?;
                Ok(DeliveryView {
                    channel: r.get(0)?,
                    state: r.get(1)?,
                    posted: r.get(2)?,
                    up_to_date: shown >= version,
                    attempts: r.get(4)?,
                    last_error: r.get(5)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        views.push(ApprovalView {
            id,
            kind,
            status,
            amount,
            expires_at: ms_to_rfc3339(expires),
            resolved_at: ms_to_rfc3339(resolved),
            received_at: ms_to_rfc3339(Some(received)).unwrap_or_default(),
            agent: agent.agent,
            reason,
            superseded_by: sup,
            deliveries,
        });
    }
    Ok(views)
}
