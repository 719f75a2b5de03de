//! Retention: approvals settled longer ago than `store.retention` are pruned, with their
//! deliveries, in small batches off the hot path — once shortly after start, then hourly. Each
//! batch is one short write; between batches the pruner steps aside so intake's writes go
//! first. What is pruned and what stays is the store's decision ([`Store::prune_settled`]).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::failures::Streak;
use crate::store::Store;
use crate::worker::{now_ms, sleep_or_cancel};

/// Approvals deleted per write.
pub const BATCH: usize = 200;
/// The pause between two batches of one pass.
const BETWEEN_BATCHES: Duration = Duration::from_millis(100);
/// How often a pass runs.
const EVERY: Duration = Duration::from_secs(3600);

/// Prunes until shutdown.
pub async fn run(store: Store, retention: Duration, cancel: CancellationToken) {
    let mut failures = Streak::default();
    loop {
        match prune(&store, retention, &cancel).await {
            Ok(0) => {}
            Ok(pruned) => tracing::info!(
                pruned,
                retention = %humantime::format_duration(retention),
                "pruned approvals settled longer ago than store.retention"
            ),
            Err(e) => {
                if failures.failed() {
                    tracing::warn!(error = %e, failures = failures.count(), "cannot prune settled approvals; will try again");
                }
            }
        }
        if !sleep_or_cancel(EVERY, &cancel).await {
            return;
        }
    }
}

/// One pass: batches until none is left (or shutdown). Returns how many were pruned.
pub async fn prune(
    store: &Store,
    retention: Duration,
    cancel: &CancellationToken,
) -> Result<usize, crate::store::StoreError> {
    let cutoff = now_ms() - retention.as_millis() as i64;
    let mut pruned = 0;
    loop {
        let n = store.prune_settled(cutoff, BATCH).await?;
        pruned += n;
        if n < BATCH || !sleep_or_cancel(BETWEEN_BATCHES, cancel).await {
            return Ok(pruned);
        }
    }
}
