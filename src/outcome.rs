//! How an approval ended, as an agent's shell sees it (SPEC §3.7): the one rule for when an
//! approval's status is final, and the exit code of each outcome. The hook's long poll holds its
//! answer until [`Outcome::is_final`]; `countersign wait` and `submit --wait` keep waiting until
//! then and exit with [`Outcome::code`]. Keeping both in one place is what makes the long poll
//! and the exit code agree.

use crate::approval::Status;

/// An outcome and its exit code. "Nobody answered" ([`Outcome::Expired`]) and "the owner said
/// no" ([`Outcome::Declined`]) are never the same code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 0: the action has executed.
    Confirmed,
    /// 1: countersign could not be asked (hook unreachable, refused, bad input).
    NotAsked,
    /// 3: the owner declined.
    Declined,
    /// 4: nobody answered in time.
    Expired,
    /// 5: a newer request for the same thing replaced it.
    Superseded,
    /// 6: OpenTrain does not know this approval (never did, or no longer shows it).
    Rejected,
    /// 7: still open when the wait ended.
    StillOpen,
    /// 8: ended with a status this countersign does not know; the JSON shows it raw.
    Unrecognised,
    /// 1: countersign's own record of the approval cannot be read (status `failed`, with the
    /// reason), so it can no longer tell how the approval ends. An error, not an outcome the
    /// owner gave, and not a status countersign does not know: its own word for that error.
    Unreadable,
}

/// The status countersign records when OpenTrain stops showing an approval it had verified
/// (see `tracker.rs`): final, and for the agent the same fact as `rejected`.
const WITHDRAWN: &str = "not_found";
/// The status countersign records when it sets an approval aside because its stored record
/// cannot be read (see `store::Store::set_aside`). Nothing changes it but a re-submission, so a
/// wait on it is over.
const UNREADABLE: &str = "failed";

impl Outcome {
    /// The outcome of an approval whose countersign status is `status` (as the hook shows it);
    /// `resolved` tells whether OpenTrain gave it a `resolvedAt`, which makes a status this
    /// countersign does not know final.
    pub fn of(status: &str, resolved: bool) -> Outcome {
        match status {
            WITHDRAWN => return Outcome::Rejected,
            UNREADABLE => return Outcome::Unreadable,
            _ => {}
        }
        match Status::parse(status) {
            Status::Confirmed => Outcome::Confirmed,
            Status::Declined => Outcome::Declined,
            Status::Expired => Outcome::Expired,
            Status::Superseded => Outcome::Superseded,
            Status::Rejected => Outcome::Rejected,
            other if other.is_terminal(resolved) => Outcome::Unrecognised,
            _ => Outcome::StillOpen,
        }
    }

    /// Whether a wait on the approval is over: it has ended, or countersign can no longer follow
    /// it (only a re-submission changes an [`Outcome::Unreadable`] one).
    pub fn is_final(self) -> bool {
        !matches!(self, Outcome::StillOpen | Outcome::NotAsked)
    }

    /// The exit code (SPEC §3.7).
    pub fn code(self) -> u8 {
        match self {
            Outcome::Confirmed => 0,
            Outcome::NotAsked | Outcome::Unreadable => 1,
            Outcome::Declined => 3,
            Outcome::Expired => 4,
            Outcome::Superseded => 5,
            Outcome::Rejected => 6,
            Outcome::StillOpen => 7,
            Outcome::Unrecognised => 8,
        }
    }
}

impl Outcome {
    /// What the agent's shell is told on stderr besides the JSON, when the outcome needs it.
    pub fn note(self) -> Option<&'static str> {
        (self == Outcome::Unreadable).then_some(
            "countersign's stored record of this approval cannot be read (see `reason`), so it \
             cannot tell how the approval ends; submitting the same body again repairs it",
        )
    }
}

impl From<Outcome> for std::process::ExitCode {
    fn from(o: Outcome) -> Self {
        std::process::ExitCode::from(o.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_has_its_own_code_and_only_open_ones_keep_a_wait_going() {
        let cases = [
            ("confirmed", false, 0, true),
            ("declined", true, 3, true),
            ("expired", false, 4, true),
            ("superseded", false, 5, true),
            ("rejected", false, 6, true),
            ("not_found", false, 6, true),
            ("verifying", false, 7, false),
            ("pending", false, 7, false),
            // OpenTrain's enums are only partly documented: an unknown status is final only
            // once OpenTrain resolved it.
            ("cancelled", true, 8, true),
            ("cancelled", false, 7, false),
            // countersign's own record cannot be read: an error, and the end of the wait.
            ("failed", false, 1, true),
        ];
        for (status, resolved, code, is_final) in cases {
            let o = Outcome::of(status, resolved);
            assert_eq!(
                (o.code(), o.is_final()),
                (code, is_final),
                "{status} resolved={resolved}"
            );
        }
        assert!(!Outcome::NotAsked.is_final());
        assert_eq!(Outcome::NotAsked.code(), 1);
    }
}
