//! Verify and enrich: read each accepted approval back from OpenTrain with countersign's own token
//! and fetch its money context. An approval OpenTrain does not know is marked `rejected` and never
//! shown; a 404 is read again for about two minutes first ([`not_found_wait`]), since OpenTrain
//! may not show a just-created approval at once. At most two reads happen here (the approval, then its contract or proposal); OpenTrain's
//! answer is kept between them so a retried context fetch does not read the approval again.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use tokio_util::sync::CancellationToken;

use crate::approval::{AgentContext, Kind, MoneyContext, Status, Usd, WireApproval};
use crate::metrics::Metrics;
use crate::opentrain::{OpenTrain, UpstreamError, backoff};
use crate::reminders;
use crate::store::{Store, VerifyJob, VerifyOutcome};
use crate::worker::{self, Lease, now_ms};

/// How many verifications run at once.
const CONCURRENCY: usize = 8;
/// After `expiresAt`, wait this long before forcing OpenTrain's lazy expiry with a read.
pub const EXPIRY_GRACE_MS: i64 = 1_000;
/// How long to leave work alone after OpenTrain refused countersign's token.
pub const AUTH_RETRY: Duration = Duration::from_secs(15 * 60);

pub struct Verifier {
    pub store: Store,
    pub opentrain: OpenTrain,
    pub channels: Vec<&'static str>,
    /// `reminders.before_expiry`.
    pub reminders: Vec<Duration>,
    pub metrics: Arc<Metrics>,
    /// How long one verification may take: see [`Verifier::lease`].
    pub lease: Lease,
    /// `opentrain.not_found_secs`: how long a 404 is read again before rejecting.
    pub not_found_for: Duration,
}

impl Verifier {
    /// A verification makes two OpenTrain calls (the approval, then its money context), each
    /// cut off at `request_timeout`.
    pub fn lease(request_timeout: Duration) -> Lease {
        Lease::for_calls(2, request_timeout)
    }

    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let store = &self.store;
        let lease = self.lease;
        worker::pool(
            "verify",
            CONCURRENCY,
            &store.signals().verify,
            &cancel,
            |room| store.claim_verifications(now_ms(), lease.duration(), room),
            || async { store.next_verification_at().await.ok().flatten() },
            |job| {
                let me = self.clone();
                async move { me.verify(job).await }
            },
        )
        .await;
    }

    async fn verify(&self, job: VerifyJob) {
        let id = job.id.clone();
        let attempts = job.attempts;
        // Never past the lease: past it, another worker could take the same approval.
        let outcome = match tokio::time::timeout(self.lease.work(), self.outcome(job)).await {
            Ok(outcome) => outcome,
            Err(_) => VerifyOutcome::Retry {
                at: now_ms()
                    + backoff(attempts, Duration::from_secs(2), Duration::from_secs(300))
                        .as_millis() as i64,
                error: format!(
                    "OpenTrain did not answer within {:?}; will retry",
                    self.lease.work()
                ),
            },
        };
        if let VerifyOutcome::Rejected { .. } = &outcome {
            self.metrics
                .opentrain_errors
                .with_label_values(&["not_found"])
                .inc();
        }
        match &outcome {
            VerifyOutcome::Verified { status, .. } => {
                tracing::info!(approval_id = %id, %status, "verified with OpenTrain")
            }
            VerifyOutcome::Rejected { reason } => {
                tracing::warn!(approval_id = %id, %reason, "rejected: it will not be shown")
            }
            VerifyOutcome::Retry { error, at } => {
                tracing::warn!(approval_id = %id, %error, retry_in_ms = at - now_ms(), "verification will be retried")
            }
        }
        match self
            .store
            .finish_verification(&id, outcome, &self.channels, now_ms())
            .await
        {
            Ok(recorded) => {
                for (old, new) in recorded.superseded {
                    tracing::info!(approval_id = %old, superseded_by = %new, "a newer hire request for the same proposal replaces it");
                }
            }
            Err(e) => {
                tracing::error!(approval_id = %id, error = %e, "cannot record the verification; it will be redone")
            }
        }
    }

    async fn outcome(&self, job: VerifyJob) -> VerifyOutcome {
        let upstream = match job.upstream {
            Some(u) => u,
            None => match self.opentrain.approval(job.id.as_str()).await {
                Ok(a) if a.id != job.id.as_str() => {
                    return VerifyOutcome::Rejected {
                        reason: format!(
                            "OpenTrain answered with a different approval id ({:?})",
                            a.id
                        ),
                    };
                }
                Ok(a) => {
                    if let Err(e) = self.store.record_upstream(&job.id, &a, now_ms()).await {
                        tracing::warn!(approval_id = %job.id, error = %e, "cannot keep OpenTrain's answer; it may be read again");
                    }
                    a
                }
                Err(UpstreamError::NotFound { .. }) => {
                    return match not_found_wait(job.attempts, self.not_found_for) {
                        Some(wait) => VerifyOutcome::Retry {
                            at: now_ms() + wait.as_millis() as i64,
                            error:
                                "OpenTrain does not show this approval yet (404); reading it again"
                                    .into(),
                        },
                        None => VerifyOutcome::Rejected {
                            reason: format!(
                                "OpenTrain does not know this approval (404 for countersign's \
                                 token, {} reads over {:?})",
                                job.attempts, self.not_found_for
                            ),
                        },
                    };
                }
                Err(e) => {
                    self.metrics.opentrain_error(&e);
                    return retry(&e, job.attempts);
                }
            },
        };
        let context = match self.context(&upstream, &job.agent).await {
            Ok(c) => c,
            Err(e) => {
                self.metrics.opentrain_error(&e);
                return retry(&e, job.attempts);
            }
        };
        let status = Status::from_upstream(upstream.status.as_deref());
        let expires = upstream.expires_at().map(|t| t.timestamp_millis());
        let next_read_at = expires.map(|t| t + EXPIRY_GRACE_MS);
        let (reminder_seq, next_reminder_at) = match expires {
            Some(exp) => reminders::plan(exp, &self.reminders, now_ms()),
            None => (0, None),
        };
        VerifyOutcome::Verified {
            upstream,
            context,
            status,
            next_read_at,
            reminder_seq,
            next_reminder_at,
        }
    }

    /// The money context for the approval's type. A missing contract, milestone or proposal is
    /// shown as missing, not retried; only transient failures are errors.
    async fn context(
        &self,
        a: &WireApproval,
        _agent: &AgentContext,
    ) -> Result<MoneyContext, UpstreamError> {
        let mut ctx = MoneyContext::default();
        match Kind::parse(&a.kind) {
            Some(kind @ (Kind::MilestoneFund | Kind::MilestoneApprove | Kind::ContractEnd)) => {
                let Some(contract_id) = &a.contract_id else {
                    ctx.missing = Some("OpenTrain gave no contract for this approval".into());
                    return Ok(ctx);
                };
                let contract = match self.opentrain.contract(contract_id).await {
                    Ok(c) => c,
                    Err(UpstreamError::NotFound { .. }) => {
                        ctx.missing = Some("the contract is not visible on OpenTrain".into());
                        return Ok(ctx);
                    }
                    Err(e) => return Err(e),
                };
                ctx.contract_title = str_at(&contract, &["title"]);
                ctx.trainer = str_at(&contract, &["freelancer", "displayName"]);
                let milestones = contract
                    .get("milestones")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                if kind == Kind::ContractEnd {
                    ctx.amount = contract
                        .pointer("/budget/fundedAmountUsd")
                        .and_then(Usd::from_json)
                        .map(|u| u.as_decimal().to_string());
                    ctx.funded_milestones = Some(
                        milestones
                            .iter()
                            .filter(|m| {
                                m.get("status").and_then(Value::as_str) == Some("ACTIVE_FUNDED")
                            })
                            .count() as u32,
                    );
                } else {
                    let wanted = a.milestone_id.as_deref();
                    match milestones
                        .iter()
                        .find(|m| wanted.is_some() && m.get("id").and_then(Value::as_str) == wanted)
                    {
                        Some(m) => {
                            ctx.amount = m
                                .get("amountUsd")
                                .and_then(Usd::from_json)
                                .map(|u| u.as_decimal().to_string());
                            ctx.milestone_name = str_at(m, &["name"]);
                            ctx.milestone_due = str_at(m, &["dueDate"]);
                        }
                        None => {
                            ctx.missing = Some(
                                "the milestone is not in the contract (cancelled or refunded?)"
                                    .into(),
                            );
                        }
                    }
                }
            }
            Some(Kind::ProposalHire) => {
                let Some(proposal_id) = &a.proposal_id else {
                    ctx.missing = Some("OpenTrain gave no proposal for this hire".into());
                    return Ok(ctx);
                };
                let proposal = match self.opentrain.proposal(proposal_id).await {
                    Ok(p) => p,
                    Err(UpstreamError::NotFound { .. }) => {
                        ctx.missing = Some("the proposal is not visible on OpenTrain".into());
                        return Ok(ctx);
                    }
                    Err(e) => return Err(e),
                };
                ctx.job_title = str_at(&proposal, &["jobTitle"]);
                ctx.trainer = str_at(&proposal, &["candidate", "displayName"]);
                ctx.bid = proposal
                    .pointer("/bid/amountUsd")
                    .and_then(Usd::from_json)
                    .map(
                        |u| match proposal.pointer("/bid/unit").and_then(Value::as_str) {
                            Some(unit) => {
                                format!("{u} {}", unit.to_ascii_lowercase().replace('_', " "))
                            }
                            None => u.to_string(),
                        },
                    );
            }
            None => {}
        }
        Ok(ctx)
    }
}

fn str_at(v: &Value, path: &[&str]) -> Option<String> {
    let mut cur = v;
    for key in path {
        cur = cur.get(key)?;
    }
    cur.as_str().map(String::from)
}

/// How many reads a 404 at verification gets before the approval is rejected.
pub const NOT_FOUND_READS: u32 = 7;

/// How long to wait after the `attempts`-th read answered 404, or `None` to reject now. OpenTrain
/// may not show a just-created approval at once (and a wrong token answers 404 too), so a 404 is
/// read again, doubling: for the default `window` of two minutes at 2, 4, 8, 16, 32 and 60 s,
/// seven reads in all.
pub fn not_found_wait(attempts: u32, window: Duration) -> Option<Duration> {
    (attempts < NOT_FOUND_READS).then(|| {
        (window / 60)
            .saturating_mul(1 << attempts.saturating_sub(1).min(16))
            .min(window / 2)
    })
}

/// When to try a failed OpenTrain call again: as OpenTrain asks, after a backoff, or (when the
/// token itself was refused) after a long pause, with one clear reason recorded.
pub fn retry_at(e: &UpstreamError, attempts: u32) -> i64 {
    let wait = if let Some(d) = e.retry_after() {
        d
    } else if e.is_transient() {
        backoff(attempts, Duration::from_secs(2), Duration::from_secs(300))
    } else {
        AUTH_RETRY
    };
    now_ms() + wait.as_millis() as i64
}

fn retry(e: &UpstreamError, attempts: u32) -> VerifyOutcome {
    if !e.is_transient() {
        tracing::error!(error = %e, "OpenTrain refused countersign's token: fix opentrain.token; retrying in 15 minutes");
    }
    VerifyOutcome::Retry {
        at: retry_at(e, attempts),
        error: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_404_is_read_again_for_about_two_minutes_before_rejecting() {
        let window = Duration::from_secs(120);
        let waits: Vec<Duration> = (1..).map_while(|a| not_found_wait(a, window)).collect();
        assert!(waits.len() + 1 >= 4, "at least four reads before rejecting");
        let total: Duration = waits.iter().sum();
        assert!(
            total >= Duration::from_secs(100) && total <= Duration::from_secs(180),
            "about two minutes, not {total:?}"
        );
        assert!(
            waits.windows(2).all(|w| w[0] <= w[1]),
            "never sooner than before"
        );
        assert_eq!(not_found_wait(NOT_FOUND_READS, window), None);
    }
}
