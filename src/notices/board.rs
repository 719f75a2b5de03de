//! One channel's notice board: it posts the notices of that channel and keeps them true.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{Notice, Problem};
use crate::failures::Streak;
use crate::notify::{MessageRef, Notifier, NotifyError};
use crate::quiet::Owner;
use crate::store::{NoticeRow, Store};
use crate::worker::{Pacer, earliest, idle_for, now_ms};

/// One channel's notices: posts a notice for every problem that has lasted `after` (except its
/// own), edits it when the problem clears (or begins again), one request at a time at the chat's
/// pace.
pub struct NoticeBoard<N: Notifier> {
    pub notifier: Arc<N>,
    pub store: Store,
    pub pacer: Pacer,
    pub after: Duration,
    /// The owner's zone (times shown) and quiet hours (a notice then arrives silently).
    pub owner: Owner,
    pub changed: watch::Receiver<()>,
}

/// What a board does about one problem now.
enum Step {
    Post,
    Edit(MessageRef),
}

impl<N: Notifier> NoticeBoard<N> {
    pub async fn run(mut self, cancel: CancellationToken) {
        let channel = self.notifier.channel();
        // Per problem: failed attempts in a row, and when to try again.
        let mut retry: HashMap<String, (Streak, i64)> = HashMap::new();
        let mut store_failures = Streak::default();
        loop {
            let next_at = match self.pass(&mut retry, &cancel).await {
                Ok(next_at) => {
                    store_failures.recovered();
                    next_at
                }
                Err(e) => {
                    if store_failures.failed() {
                        tracing::error!(channel, error = %e, "notices: cannot read the store");
                    }
                    let wait =
                        store_failures.backoff(Duration::from_secs(1), Duration::from_secs(60));
                    Some(now_ms() + wait.as_millis() as i64)
                }
            };
            let wait = idle_for(next_at);
            tokio::select! {
                changed = self.changed.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep(wait) => {}
                _ = cancel.cancelled() => return,
            }
        }
    }

    /// Brings this channel's notices up to date; returns when something next falls due.
    async fn pass(
        &self,
        retry: &mut HashMap<String, (Streak, i64)>,
        cancel: &CancellationToken,
    ) -> Result<Option<i64>, crate::store::StoreError> {
        let channel = self.notifier.channel();
        let problems = self.store.problems().await?;
        let notices: HashMap<String, NoticeRow> = self
            .store
            .notices(channel)
            .await?
            .into_iter()
            .map(|n| (n.problem.clone(), n))
            .collect();
        retry.retain(|k, _| problems.iter().any(|p| &p.problem == k));
        // A channel that refuses messages is not sent new notices: the others tell the owner.
        let refusing = problems.iter().any(|p| {
            p.cleared_at.is_none()
                && Problem::from_key(&p.problem).and_then(|p| p.channel()) == Some(channel)
        });
        let after = self.after.as_millis() as i64;
        let mut next_at: Option<i64> = None;
        for row in &problems {
            let Some(problem) = Problem::from_key(&row.problem) else {
                continue;
            };
            if problem.channel() == Some(channel) {
                continue;
            }
            let lasting = row.cleared_at.is_none();
            let step = match notices.get(&row.problem) {
                None if lasting && !refusing => {
                    if now_ms() < row.since + after {
                        earliest(&mut next_at, row.since + after);
                        continue;
                    }
                    Step::Post
                }
                Some(n) if n.shows_cleared == lasting => Step::Edit(n.message_ref.clone()),
                _ => continue,
            };
            if let Some((_, at)) = retry.get(&row.problem)
                && *at > now_ms()
            {
                earliest(&mut next_at, *at);
                continue;
            }
            if !self.pacer.wait(cancel).await {
                return Ok(None);
            }
            let notice = Notice::from_row(row, problem, &self.owner);
            let sent = self.send(&step, &notice, &row.problem, cancel).await;
            self.pacer.done();
            match sent {
                Ok(()) => {
                    retry.remove(&row.problem);
                }
                Err(e) => {
                    if let NotifyError::RateLimited(d) = &e {
                        self.pacer.hold_for(*d);
                    }
                    let (streak, at) = retry.entry(row.problem.clone()).or_default();
                    let log = streak.failed();
                    let wait = match &e {
                        NotifyError::RateLimited(d) => *d,
                        _ => streak.backoff(Duration::from_secs(5), Duration::from_secs(3_600)),
                    };
                    if log {
                        tracing::warn!(channel, problem = %row.problem, error = %e, retry_in_s = wait.as_secs(), "notices: cannot post or edit a service notice; will retry");
                    }
                    *at = now_ms() + wait.as_millis() as i64;
                    earliest(&mut next_at, *at);
                }
            }
        }
        Ok(next_at)
    }

    /// Posts or edits one notice and records it.
    async fn send(
        &self,
        step: &Step,
        notice: &Notice,
        key: &str,
        cancel: &CancellationToken,
    ) -> Result<(), NotifyError> {
        let channel = self.notifier.channel();
        let cleared = notice.cleared_at.is_some();
        let message = match step {
            Step::Post => {
                let m = self.notifier.post_notice(notice).await?;
                tracing::info!(channel, problem = key, title = %notice.title(), "service notice posted");
                m
            }
            Step::Edit(m) => {
                match self.notifier.edit_notice(m, notice).await {
                    // The owner deleted it: there is nothing left to keep true.
                    Ok(()) | Err(NotifyError::Gone(_)) => {}
                    Err(e) => return Err(e),
                }
                tracing::info!(channel, problem = key, title = %notice.title(), "service notice edited");
                m.clone()
            }
        };
        let recorded = self
            .store
            .record_notice(key, channel, &message, cleared)
            .await
            .map_err(|e| NotifyError::Transient(format!("cannot record the notice: {e}")))?;
        if !recorded && !cleared {
            // The problem cleared (and was forgotten) while this notice was on its way: say so
            // at once, or the notice would claim a problem that is gone.
            let mut done = notice.clone();
            done.cleared_at = Some(Utc::now());
            self.pacer.done();
            if self.pacer.wait(cancel).await {
                self.notifier.edit_notice(&message, &done).await?;
            }
        }
        Ok(())
    }
}

/// The console log's share of the notices (§3.8: "and the console log"): every problem that has
/// lasted `after` is logged once as an error with the notice's whole text, and once more when it
/// clears, whether or not any chat still works. It keeps no record: after a restart a problem
/// that still lasts is logged again, which suits a log.
pub async fn log_notices(
    store: Store,
    after: Duration,
    owner: Owner,
    mut changed: watch::Receiver<()>,
    cancel: CancellationToken,
) {
    let after = after.as_millis() as i64;
    // Logged problems, by key, with the start they were logged for.
    let mut logged: HashMap<String, i64> = HashMap::new();
    loop {
        let mut next_at: Option<i64> = None;
        if let Ok(problems) = store.problems().await {
            let now = now_ms();
            for row in &problems {
                let Some(problem) = Problem::from_key(&row.problem) else {
                    continue;
                };
                let notice = Notice::from_row(row, problem, &owner);
                let told = logged.get(&row.problem) == Some(&row.since);
                match row.cleared_at {
                    None if !told && now >= row.since + after => {
                        tracing::error!(problem = %row.problem, notice = %crate::notify::console::notice_text(&notice), "service notice");
                        logged.insert(row.problem.clone(), row.since);
                    }
                    None if !told => earliest(&mut next_at, row.since + after),
                    Some(_) if told => {
                        tracing::info!(problem = %row.problem, notice = %crate::notify::console::notice_text(&notice), "service notice: resolved");
                        logged.remove(&row.problem);
                    }
                    _ => {}
                }
            }
            // Forgotten by the store (cleared and told everywhere) before this saw it clear.
            logged.retain(|key, _| {
                let known = problems.iter().any(|p| &p.problem == key);
                if !known {
                    tracing::info!(problem = %key, "service notice: resolved");
                }
                known
            });
        }
        let wait = idle_for(next_at);
        tokio::select! {
            c = changed.changed() => if c.is_err() { return },
            _ = tokio::time::sleep(wait) => {}
            _ = cancel.cancelled() => return,
        }
    }
}
