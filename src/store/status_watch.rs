//! Status changes, for whoever waits on one approval (the hook's long poll).
//!
//! Invariant: **no change is missed.** A waiter subscribes *before* it reads the approval, and
//! the store announces a change only *after* the commit that made it. So a change is either
//! already visible to that read, or announced to the subscription later; never lost between
//! the two. Waiters are woken by the store itself, not by polling.
//!
//! Memory: one entry per approval that someone waits on, shared by all its waiters and removed
//! with the last of them. An approval nobody waits on costs nothing, and announcing a change to
//! it is one hash lookup.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;

use super::Store;

/// Who waits on which approval.
#[derive(Default)]
pub struct StatusWatch {
    /// Per approval someone waits on: the number of the last change announced for it.
    watched: Mutex<HashMap<Box<str>, watch::Sender<u64>>>,
    /// Every change announced, watched or not, numbered: a number is never seen twice, so two
    /// waiters that saw the same one were woken by the same change.
    announced: AtomicU64,
}

impl StatusWatch {
    /// Starts watching `id`. Subscribe first, then read the approval: a change committed after
    /// the subscription wakes [`StatusChanges::changed`].
    pub fn subscribe(&self, id: &str) -> StatusChanges<'_> {
        let rx = self
            .watched
            .lock()
            .expect("status watch lock")
            .entry(id.into())
            .or_insert_with(|| watch::channel(self.announced.load(Ordering::SeqCst)).0)
            .subscribe();
        StatusChanges {
            watch: self,
            id: id.into(),
            rx: Some(rx),
        }
    }

    /// Wakes every waiter of `id`. Called after the commit that changed its status.
    pub(super) fn announce(&self, id: &str) {
        let number = self.announced.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(tx) = self.watched.lock().expect("status watch lock").get(id) {
            tx.send_replace(number);
        }
    }

    /// How many approvals have at least one waiter.
    pub fn watched(&self) -> usize {
        self.watched.lock().expect("status watch lock").len()
    }
}

/// One waiter's subscription to one approval's status changes.
pub struct StatusChanges<'a> {
    watch: &'a StatusWatch,
    id: Box<str>,
    /// Always `Some` until dropped.
    rx: Option<watch::Receiver<u64>>,
}

impl StatusChanges<'_> {
    /// The number of the last change this subscription has heard of (at first, the last change
    /// announced for any approval): waiters that see the same number were woken by the same
    /// change, or by none since, and can share one read.
    pub fn generation(&self) -> u64 {
        *self.rx.as_ref().expect("a live subscription").borrow()
    }

    /// Resolves once the approval's status has changed since the subscription, or since the
    /// last time this resolved.
    pub async fn changed(&mut self) {
        let rx = self.rx.as_mut().expect("a live subscription");
        if rx.changed().await.is_err() {
            // The sender lives as long as any subscription (see Drop); should it ever be gone,
            // there is nothing more to hear, so never resolve rather than spin.
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for StatusChanges<'_> {
    fn drop(&mut self) {
        let mut watched = self.watch.watched.lock().expect("status watch lock");
        // Under the lock, so no subscription can be made between the count and the removal.
        drop(self.rx.take());
        if watched
            .get(&self.id)
            .is_some_and(|tx| tx.receiver_count() == 0)
        {
            watched.remove(&self.id);
        }
    }
}

impl Store {
    /// Subscribes to status changes of approval `id`; see [`StatusWatch::subscribe`].
    pub fn watch_status(&self, id: &str) -> StatusChanges<'_> {
        self.inner.signals.status.subscribe(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_change_announced_after_subscribing_is_heard_even_before_waiting() {
        let watch = StatusWatch::default();
        let mut changes = watch.subscribe("apr_1");
        // Announced between "subscribe" and "start waiting" (while the waiter reads the row).
        watch.announce("apr_1");
        tokio::time::timeout(std::time::Duration::from_secs(5), changes.changed())
            .await
            .expect("the change was heard");
    }

    #[test]
    fn a_change_nobody_waited_for_still_moves_the_number_a_later_waiter_sees() {
        // A waiter's number must never match one read before a change it did not hear of, or
        // it could be handed a view from before that change (see `intake::wait`).
        let watch = StatusWatch::default();
        let first = watch.subscribe("apr_1");
        let before = first.generation();
        drop(first);
        watch.announce("apr_1");
        let later = watch.subscribe("apr_1");
        assert!(later.generation() > before);
        let other = watch.subscribe("apr_2");
        assert_eq!(
            other.generation(),
            later.generation(),
            "one count for every approval"
        );
    }

    #[tokio::test]
    async fn waiters_share_one_entry_that_goes_with_the_last_of_them() {
        let watch = StatusWatch::default();
        watch.announce("apr_nobody_waits");
        assert_eq!(watch.watched(), 0, "announcing creates nothing");
        let a = watch.subscribe("apr_1");
        let b = watch.subscribe("apr_1");
        let c = watch.subscribe("apr_2");
        assert_eq!(watch.watched(), 2);
        drop(a);
        assert_eq!(watch.watched(), 2);
        drop(b);
        drop(c);
        assert_eq!(watch.watched(), 0);
    }
}
