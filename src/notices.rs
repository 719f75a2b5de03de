//! Service notices (§3.8): when something keeps the owner's messages from being true or from
//! arriving — OpenTrain refusing countersign's token or out of reach, a chat refusing its
//! messages — for longer than `notices.after`, the owner is told once, on every channel that
//! still works, and that same message is edited when the problem clears.
//!
//! - [`Problems`] is how the rest of the daemon reports: the OpenTrain client after every call,
//!   delivery after every send. Only a change (a problem starting or ending) costs anything: it
//!   is stored by [`keep`], in order, from its first sighting, so a restart neither forgets how
//!   long a problem has lasted nor posts its notice twice.
//! - A [`NoticeBoard`] per channel posts and edits that channel's notices at the chat's pace.
//!   A channel is never told about its own failure: the others are, and the log.
//!
//! One notice per problem (four kinds at most, one per channel for chats), never per approval.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeZone as _, Utc};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::failures::Streak;
use crate::notify::{MessageRef, Notifier, NotifyError};
use crate::opentrain::UpstreamError;
use crate::quiet::Owner;
use crate::store::{NoticeRow, ProblemRow, Store};
use crate::worker::{MAX_IDLE, Pacer, now_ms};

/// Something that keeps the owner's messages from being true or from arriving.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Problem {
    /// OpenTrain answers 401 or 403: countersign cannot verify or track anything.
    OpenTrainRefusesToken,
    /// OpenTrain cannot be reached, or answers only server errors.
    OpenTrainUnreachable,
    /// OpenTrain answers 404 for approvals it showed before (a token of another account,
    /// an approval gone): their messages keep their last status.
    OpenTrainHidesApprovals,
    /// A chat refuses countersign's messages for good (bot blocked, permission removed, token
    /// refused); the name is the channel's.
    ChannelRefuses(&'static str),
}

/// The channels a stored problem can name (a `&'static str`, as the notifiers name themselves).
const CHANNELS: [&str; 3] = ["telegram", "discord", "console"];

impl Problem {
    /// How it is stored.
    pub fn key(&self) -> String {
        match self {
            Problem::OpenTrainRefusesToken => "opentrain_token".into(),
            Problem::OpenTrainUnreachable => "opentrain_unreachable".into(),
            Problem::OpenTrainHidesApprovals => "opentrain_hides".into(),
            Problem::ChannelRefuses(c) => format!("channel:{c}"),
        }
    }

    /// Reads a stored key; `None` for one this version does not know.
    pub fn from_key(key: &str) -> Option<Problem> {
        match key {
            "opentrain_token" => Some(Problem::OpenTrainRefusesToken),
            "opentrain_unreachable" => Some(Problem::OpenTrainUnreachable),
            "opentrain_hides" => Some(Problem::OpenTrainHidesApprovals),
            _ => {
                let name = key.strip_prefix("channel:")?;
                CHANNELS
                    .iter()
                    .find(|c| **c == name)
                    .map(|c| Problem::ChannelRefuses(c))
            }
        }
    }

    /// The channel this problem is about, if it is about one.
    pub fn channel(&self) -> Option<&'static str> {
        match self {
            Problem::ChannelRefuses(c) => Some(c),
            _ => None,
        }
    }
}

/// Where a report goes: to [`keep`], which stores it.
enum Change {
    Raise(Problem, String, i64),
    Clear(Problem, i64),
}

/// The daemon's reports of problems starting and ending; cheap to clone and to call after every
/// request: only a change is passed on.
#[derive(Clone)]
pub struct Problems {
    inner: Arc<ProblemsInner>,
}

struct ProblemsInner {
    /// The problems lasting now, as last reported.
    lasting: Mutex<HashSet<Problem>>,
    /// `None`: reports go nowhere (`check`, the demo, unit tests).
    changes: Option<mpsc::UnboundedSender<Change>>,
}

impl std::fmt::Debug for Problems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Problems").finish_non_exhaustive()
    }
}

impl Problems {
    /// Reports that go nowhere.
    pub fn detached() -> Problems {
        Problems {
            inner: Arc::new(ProblemsInner {
                lasting: Mutex::default(),
                changes: None,
            }),
        }
    }

    /// `problem` is happening; `detail` says what was seen (it is shown as-is, as code).
    pub fn raise(&self, problem: Problem, detail: impl std::fmt::Display) {
        let Some(changes) = &self.inner.changes else {
            return;
        };
        let mut lasting = self.inner.lasting.lock().expect("problems lock");
        if lasting.insert(problem) {
            let detail = crate::text::cut(&detail.to_string(), 300);
            tracing::warn!(problem = %problem.key(), %detail, "a problem began; the owner is told if it lasts");
            let _ = changes.send(Change::Raise(problem, detail, now_ms()));
        }
    }

    /// Whether `problem` is lasting, as last reported.
    pub fn is_lasting(&self, problem: Problem) -> bool {
        self.inner
            .lasting
            .lock()
            .expect("problems lock")
            .contains(&problem)
    }

    /// `problem` is not happening (any more).
    pub fn clear(&self, problem: Problem) {
        let Some(changes) = &self.inner.changes else {
            return;
        };
        let mut lasting = self.inner.lasting.lock().expect("problems lock");
        if lasting.remove(&problem) {
            tracing::info!(problem = %problem.key(), "a problem cleared");
            let _ = changes.send(Change::Clear(problem, now_ms()));
        }
    }

    /// Clears the problems of every channel not in `configured`: a chat the operator removed
    /// cannot report that it works again, and its notice would stand for ever.
    pub fn forget_channels_except(&self, configured: &[&'static str]) {
        for c in CHANNELS {
            if !configured.contains(&c) {
                self.clear(Problem::ChannelRefuses(c));
            }
        }
    }

    /// What one OpenTrain call says about OpenTrain: an answer proves it is reachable, any
    /// answer but 401/403 that the token is accepted.
    pub fn opentrain_answered<T>(&self, result: &Result<T, UpstreamError>) {
        match result {
            Err(e @ UpstreamError::Auth { .. }) => {
                self.clear(Problem::OpenTrainUnreachable);
                self.raise(Problem::OpenTrainRefusesToken, e);
            }
            Err(e) if is_unreachable(e) => self.raise(Problem::OpenTrainUnreachable, e),
            _ => {
                self.clear(Problem::OpenTrainUnreachable);
                self.clear(Problem::OpenTrainRefusesToken);
            }
        }
    }
}

fn is_unreachable(e: &UpstreamError) -> bool {
    match e {
        UpstreamError::Transport(_) => true,
        UpstreamError::Status { status, .. } => *status >= 500 || *status == 408,
        _ => false,
    }
}

/// Starts the reports: the stored problems that still last are known as lasting (so the first
/// answer after a restart clears them), and the returned receiver goes to [`keep`].
pub async fn start(store: &Store) -> Result<(Problems, Keeper), crate::store::StoreError> {
    let stored = store.problems().await?;
    let lasting = stored
        .iter()
        .filter(|p| p.cleared_at.is_none())
        .filter_map(|p| Problem::from_key(&p.problem))
        .collect();
    let (tx, rx) = mpsc::unbounded_channel();
    let (changed, _) = watch::channel(());
    Ok((
        Problems {
            inner: Arc::new(ProblemsInner {
                lasting: Mutex::new(lasting),
                changes: Some(tx),
            }),
        },
        Keeper {
            changes: rx,
            changed,
        },
    ))
}

/// Stores the reports, in order, and wakes the boards.
pub struct Keeper {
    changes: mpsc::UnboundedReceiver<Change>,
    changed: watch::Sender<()>,
}

impl Keeper {
    /// What the boards watch.
    pub fn subscribe(&self) -> watch::Receiver<()> {
        self.changed.subscribe()
    }
}

/// Stores every report until shutdown. A write that fails is tried again (the store may be
/// briefly locked); reports wait in order meanwhile.
pub async fn keep(mut keeper: Keeper, store: Store, cancel: CancellationToken) {
    let mut failures = Streak::default();
    loop {
        let change = tokio::select! {
            c = keeper.changes.recv() => match c { Some(c) => c, None => return },
            _ = cancel.cancelled() => return,
        };
        loop {
            let written = match &change {
                Change::Raise(p, detail, at) => store.raise_problem(&p.key(), detail, *at).await,
                Change::Clear(p, at) => store.clear_problem(&p.key(), *at).await,
            };
            match written {
                Ok(()) => {
                    failures.recovered();
                    break;
                }
                Err(e) => {
                    if failures.failed() {
                        tracing::error!(error = %e, "notices: cannot record a problem; trying again");
                    }
                    let wait = failures.backoff(Duration::from_secs(1), Duration::from_secs(60));
                    if !crate::worker::sleep_or_cancel(wait, &cancel).await {
                        return;
                    }
                }
            }
        }
        keeper.changed.send_replace(());
    }
}

/// One notice as a channel shows it: what is wrong, since when, the fix — or that it cleared.
#[derive(Debug, Clone)]
pub struct Notice {
    pub problem: Problem,
    /// What was seen (an error from OpenTrain or a chat): never markup, shown as code.
    pub detail: String,
    pub since: DateTime<Utc>,
    pub cleared_at: Option<DateTime<Utc>>,
    /// The owner's zone, for the times shown.
    pub zone: jiff::tz::TimeZone,
    /// Posted inside the owner's quiet hours: it arrives without a sound (§3.6).
    pub silent: bool,
}

/// A piece of a notice's text: countersign's own words, or outside text to show literally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Span {
    Text(String),
    Code(String),
}

impl Notice {
    fn from_row(row: &ProblemRow, problem: Problem, owner: &Owner) -> Notice {
        Notice {
            problem,
            detail: row.detail.clone(),
            since: ms_to_time(row.since),
            cleared_at: row.cleared_at.map(ms_to_time),
            zone: owner.zone.clone(),
            silent: owner.is_quiet(Utc::now()),
        }
    }

    /// The first line: what is wrong, or that it is fixed.
    pub fn title(&self) -> String {
        let cleared = self.cleared_at.is_some();
        match (self.problem, cleared) {
            (Problem::OpenTrainRefusesToken, false) => {
                "OpenTrain refuses countersign's token".into()
            }
            (Problem::OpenTrainRefusesToken, true) => {
                "Resolved: OpenTrain accepts countersign's token again".into()
            }
            (Problem::OpenTrainUnreachable, false) => "OpenTrain cannot be reached".into(),
            (Problem::OpenTrainUnreachable, true) => "Resolved: OpenTrain answers again".into(),
            (Problem::OpenTrainHidesApprovals, false) => {
                "OpenTrain no longer shows some approvals to countersign".into()
            }
            (Problem::OpenTrainHidesApprovals, true) => {
                "Resolved: OpenTrain shows every tracked approval again".into()
            }
            (Problem::ChannelRefuses(c), false) => {
                format!("{} refuses countersign's messages", platform(c))
            }
            (Problem::ChannelRefuses(c), true) => {
                format!(
                    "Resolved: {} takes countersign's messages again",
                    platform(c)
                )
            }
        }
    }

    /// The lines under the title.
    pub fn lines(&self) -> Vec<Vec<Span>> {
        let since = crate::quiet::format_in(&self.zone, self.since);
        let text = |s: &str| Span::Text(s.to_string());
        if let Some(cleared) = self.cleared_at {
            let cleared = crate::quiet::format_in(&self.zone, cleared);
            return vec![
                vec![text(&format!("From {since} to {cleared}."))],
                vec![text(match self.problem {
                    Problem::ChannelRefuses(_) => {
                        "Messages that could not be sent or updated meanwhile are caught up now."
                    }
                    _ => "Approval messages are being brought up to date.",
                })],
            ];
        }
        let (effect, seen, fix): (String, &str, Vec<Span>) = match self.problem {
            Problem::OpenTrainRefusesToken => (
                "approvals cannot be verified or tracked, so messages may not show their latest status.".into(),
                "OpenTrain said: ",
                vec![
                    text("Fix: give countersign a valid OpenTrain API key with the payments:read scope ("),
                    Span::Code("opentrain.token".into()),
                    text(") and restart it. Nothing is lost meanwhile."),
                ],
            ),
            Problem::OpenTrainUnreachable => (
                "new approvals wait to be verified and messages may not show their latest status.".into(),
                "Last error: ",
                vec![
                    text("Fix: check this machine's network and "),
                    Span::Code("opentrain.api_url".into()),
                    text(". countersign keeps trying; nothing is lost meanwhile."),
                ],
            ),
            Problem::OpenTrainHidesApprovals => (
                "approvals OpenTrain showed before now answer 404, so their messages keep their last status.".into(),
                "First seen: ",
                vec![
                    text("Fix: check that "),
                    Span::Code("opentrain.token".into()),
                    text(" belongs to the account the agents work for, and open the approval links to see their status. countersign keeps reading them."),
                ],
            ),
            Problem::ChannelRefuses(c) => (
                format!(
                    "approvals may not reach {}, or their messages there may not be updated.",
                    platform(c)
                ),
                "The error: ",
                vec![text(channel_fix(c))],
            ),
        };
        vec![
            vec![text(&format!("Since {since}: {effect}"))],
            vec![text(seen), Span::Code(self.detail.clone())],
            fix,
        ]
    }
}

fn platform(channel: &str) -> &'static str {
    match channel {
        "telegram" => "Telegram",
        "discord" => "Discord",
        _ => "The console",
    }
}

fn channel_fix(channel: &str) -> &'static str {
    match channel {
        "telegram" => {
            "Fix: unblock the bot (or press Start in its chat), or give it back the right to post in the configured chat. countersign retries by itself; no restart is needed."
        }
        "discord" => {
            "Fix: give the bot back View Channel, Send Messages and Embed Links in the configured channel, or let it send you direct messages. A refused bot token needs a new one and a restart."
        }
        _ => "Fix: make countersign's standard output writable.",
    }
}

fn ms_to_time(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

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
            let wait = next_at
                .map(|at| Duration::from_millis((at - now_ms()).max(0) as u64))
                .unwrap_or(MAX_IDLE)
                .min(MAX_IDLE);
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
        let mut soonest = |at: i64| next_at = Some(next_at.map_or(at, |n: i64| n.min(at)));
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
                        soonest(row.since + after);
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
                soonest(*at);
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
                    soonest(*at);
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
                tracing::error!(channel, problem = key, title = %notice.title(), "service notice posted");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_keys_read_back_and_unknown_ones_are_skipped() {
        for p in [
            Problem::OpenTrainRefusesToken,
            Problem::OpenTrainUnreachable,
            Problem::OpenTrainHidesApprovals,
            Problem::ChannelRefuses("telegram"),
            Problem::ChannelRefuses("discord"),
            Problem::ChannelRefuses("console"),
        ] {
            assert_eq!(Problem::from_key(&p.key()), Some(p));
        }
        assert_eq!(Problem::from_key("channel:slack"), None);
        assert_eq!(Problem::from_key("disk_full"), None);
    }

    #[test]
    fn outside_text_in_a_notice_is_code_on_every_platform() {
        let notice = Notice {
            problem: Problem::ChannelRefuses("telegram"),
            detail: "<b>@everyone</b> see https://evil.example".into(),
            since: ms_to_time(1_780_000_000_000),
            cleared_at: None,
            zone: jiff::tz::TimeZone::UTC,
            silent: false,
        };
        let html = crate::notify::telegram::notice_html(&notice);
        assert!(
            html.contains("<code>&lt;b&gt;@everyone&lt;/b&gt; see https://evil.example</code>"),
            "{html}"
        );
        let discord = crate::notify::discord::notice_text(&notice);
        assert!(
            !discord.contains("@everyone"),
            "a mention is broken up: {discord}"
        );
        assert!(discord.contains('`'), "{discord}");
        let cleared = Notice {
            cleared_at: Some(ms_to_time(1_780_000_600_000)),
            ..notice
        };
        assert!(cleared.title().starts_with("Resolved: "));
        assert!(
            crate::notify::console::notice_text(&cleared).contains(" to 2026-"),
            "the time it lasted"
        );
    }
}
