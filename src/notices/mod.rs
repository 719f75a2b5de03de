//! Service notices (§3.8): when something keeps the owner's messages from being true or from
//! arriving — OpenTrain refusing countersign's token or out of reach, a chat refusing its
//! messages — for longer than `notices.after`, the owner is told once, on every channel that
//! still works, and that same message is edited when the problem clears.
//!
//! - [`Problems`] is how the rest of the daemon reports: the OpenTrain client after every call,
//!   the tracker after a re-read that OpenTrain answers 404, delivery after every send. Only a change (a problem starting or ending) costs anything: it
//!   is stored by [`keep`], in order, from its first sighting, so a restart neither forgets how
//!   long a problem has lasted nor posts its notice twice.
//! - A [`NoticeBoard`] per channel posts and edits that channel's notices at the chat's pace.
//!   A channel is never told about its own failure: the others are, and the log.
//!
//! One notice per problem (three about OpenTrain, one per chat), never per approval. What a
//! notice says is in `notice.rs`; posting and editing it, per channel, in `board.rs`.

mod board;
mod notice;

pub use board::{NoticeBoard, log_notices};
pub use notice::{Notice, Span};

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::failures::Streak;
use crate::opentrain::UpstreamError;
use crate::store::Store;
use crate::worker::now_ms;

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
}
