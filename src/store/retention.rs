//! Retention: settled approvals, and their deliveries, are deleted once they have been settled
//! for longer than `store.retention`.
//!
//! Invariant: **only what is settled goes, oldest first, a little at a time.** An approval that
//! still needs work (verifying, tracked, or set aside as failed) is never pruned; each call
//! deletes one small batch in one short write, so intake never waits long behind it. The
//! cutoff is remembered, so `list` can say how far back the store reaches.

use rusqlite::{OptionalExtension, params};

use super::{Store, StoreError};

impl Store {
    /// Deletes up to `batch` approvals settled before `cutoff` (ms since the epoch), oldest
    /// first, with their deliveries, and records `cutoff` as how far back the store reaches.
    /// Returns how many approvals were deleted: fewer than `batch` means none is left.
    pub async fn prune_settled(&self, cutoff: i64, batch: usize) -> Result<usize, StoreError> {
        self.write(move |c| {
            let ids: Vec<String> = c
                .prepare_cached(
                    "SELECT id FROM approvals WHERE phase = 'done' AND updated_at < ?1
                     ORDER BY updated_at LIMIT ?2",
                )?
                .query_map(params![cutoff, batch as i64], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            let mut deliveries = c.prepare_cached("DELETE FROM deliveries WHERE approval_id = ?1")?;
            let mut approvals = c.prepare_cached("DELETE FROM approvals WHERE id = ?1")?;
            for id in &ids {
                deliveries.execute([id])?;
                approvals.execute([id])?;
            }
            c.execute(
                "INSERT INTO kv (key, value) VALUES ('pruned_before', ?1)
                 ON CONFLICT(key) DO UPDATE SET value = MAX(CAST(value AS INTEGER), excluded.value)",
                [cutoff],
            )?;
            Ok(ids.len())
        })
        .await
    }
}

/// Approvals settled before this time (ms since the epoch) have been pruned; None when none
/// ever was.
pub(super) fn pruned_before(c: &rusqlite::Connection) -> Result<Option<i64>, StoreError> {
    let value: Option<String> = c
        .query_row(
            "SELECT value FROM kv WHERE key = 'pruned_before'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    Ok(value.and_then(|v| v.parse().ok()))
}
