//! Prometheus metrics, one registry per running app. Counters end in `_total`, durations are in
//! seconds and say so; gauges of the store's contents are read from the store at scrape time, so
//! they are right after a restart too.

use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::opentrain::UpstreamError;
use crate::store::{Store, StoreError};

pub struct Metrics {
    registry: Registry,
    /// Submissions to the hook (or captured by the proxy) by outcome: accepted, duplicate, refused.
    pub submissions: IntCounterVec,
    /// Posts, edits and reminders by channel, action and outcome.
    pub deliveries: IntCounterVec,
    /// Errors from OpenTrain by reason (not_found, auth, rate_limited, server, transport, decode).
    pub opentrain_errors: IntCounterVec,
    /// Errors from a chat platform by channel and reason (rate_limited, transient, gone, permanent).
    pub chat_errors: IntCounterVec,
    /// Hook request latency by route and status.
    pub hook_requests: HistogramVec,
    /// From OpenTrain's createdAt to countersign seeing the approval's terminal status.
    pub resolution: Histogram,
    /// Long polls (`GET /v1/approvals/{id}?wait=`) being held.
    pub long_polls: IntGauge,
    approvals: IntGaugeVec,
    pending: IntGauge,
    unreadable: IntCounterVec,
    store_write_errors: IntCounter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            register(
                &registry,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let submissions = counter(
            "countersign_submissions_total",
            "Approval submissions by outcome (accepted, duplicate, refused, failed).",
            &["outcome"],
        );
        let deliveries = counter(
            "countersign_deliveries_total",
            "Posts, edits and reminders by channel, action and outcome.",
            &["channel", "action", "outcome"],
        );
        let opentrain_errors = counter(
            "countersign_opentrain_errors_total",
            "Errors from the OpenTrain API by reason.",
            &["reason"],
        );
        let unreadable = counter(
            "countersign_unreadable_records_total",
            "Stored records that could not be read back, by queue; each was marked failed.",
            &["queue"],
        );
        let store_write_errors = register(
            &registry,
            IntCounter::new(
                "countersign_store_write_errors_total",
                "Writes the store could not commit (a full disk, an I/O error, a lock).",
            )
            .expect("valid metric"),
        );
        let chat_errors = counter(
            "countersign_chat_errors_total",
            "Errors from a chat platform by channel and reason.",
            &["channel", "reason"],
        );
        let hook_requests = register(
            &registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "countersign_hook_request_duration_seconds",
                    "Hook request latency by route and status.",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ]),
                &["route", "status"],
            )
            .expect("valid metric"),
        );
        let resolution = register(
            &registry,
            Histogram::with_opts(
                HistogramOpts::new(
                    "countersign_approval_resolution_seconds",
                    "Time from an approval's createdAt to countersign seeing its terminal status.",
                )
                .buckets(vec![
                    60.0,
                    300.0,
                    900.0,
                    3600.0,
                    4.0 * 3600.0,
                    12.0 * 3600.0,
                    24.0 * 3600.0,
                    48.0 * 3600.0,
                    72.0 * 3600.0,
                    96.0 * 3600.0,
                ]),
            )
            .expect("valid metric"),
        );
        let approvals = register(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    "countersign_approvals",
                    "Tracked approvals by countersign status.",
                ),
                &["status"],
            )
            .expect("valid metric"),
        );
        let pending = register(
            &registry,
            IntGauge::new(
                "countersign_pending_approvals",
                "Approvals waiting for the owner (verifying or pending).",
            )
            .expect("valid metric"),
        );
        let long_polls = register(
            &registry,
            IntGauge::new(
                "countersign_hook_long_polls",
                "Agents waiting on GET /v1/approvals/{id}?wait= right now.",
            )
            .expect("valid metric"),
        );
        Metrics {
            registry,
            submissions,
            deliveries,
            opentrain_errors,
            chat_errors,
            hook_requests,
            resolution,
            long_polls,
            approvals,
            pending,
            unreadable,
            store_write_errors,
        }
    }

    pub fn opentrain_error(&self, e: &UpstreamError) {
        self.opentrain_errors.with_label_values(&[e.reason()]).inc();
    }

    /// The text exposition, with the store's gauges read now.
    pub async fn render(&self, store: &Store) -> Result<String, StoreError> {
        let counts = store.count_by_status().await?;
        self.approvals.reset();
        let mut pending = 0;
        for (status, n) in counts {
            if status == "pending" || status == "verifying" {
                pending += n;
            }
            self.approvals.with_label_values(&[&status]).set(n);
        }
        self.pending.set(pending);
        // The store counts since it was opened; the counters catch up with it.
        let errors = store.write_errors();
        self.store_write_errors
            .inc_by(errors.saturating_sub(self.store_write_errors.get()));
        for (queue, n) in store.unreadable_counts() {
            let counter = self.unreadable.with_label_values(&[queue.as_str()]);
            counter.inc_by(n.saturating_sub(counter.get()));
        }
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding of gathered metrics");
        Ok(String::from_utf8(out).expect("the text format is UTF-8"))
    }
}

/// Adds `metric` to `registry` and hands it back.
fn register<M: Collector + Clone + 'static>(registry: &Registry, metric: M) -> M {
    registry
        .register(Box::new(metric.clone()))
        .expect("unique metric");
    metric
}
