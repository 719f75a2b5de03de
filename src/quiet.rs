//! The owner's time: the zone times are shown in (`owner.timezone`) and the quiet hours
//! (`owner.quiet_hours`) during which posts and reminders arrive silently.
//!
//! Invariant: quiet hours never let an approval expire unseen. Inside them a message is silent
//! unless it is the last one about its approval before `expiresAt` — the last configured
//! reminder that will still fire, or the post itself when no reminder is left — and that one
//! always rings. [`rings`] decides it from the store's data and `now` alone, so a restart
//! decides the same way, and every channel gets the same answer.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use jiff::tz::TimeZone;

use crate::notify::Card;
use crate::reminders;

/// A daily range of local time, `start` inclusive, `end` exclusive, in minutes after midnight.
/// `start > end` wraps midnight (`22:00-07:00`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietHours {
    start: u16,
    end: u16,
}

impl QuietHours {
    /// Whether `minute` (after local midnight) falls inside the range.
    pub fn contains(&self, minute: u16) -> bool {
        if self.start < self.end {
            self.start <= minute && minute < self.end
        } else {
            minute >= self.start || minute < self.end
        }
    }
}

impl FromStr for QuietHours {
    type Err = String;

    /// `"HH:MM-HH:MM"`; the same start and end is refused (all day or never: say which).
    fn from_str(s: &str) -> Result<QuietHours, String> {
        let bad = || format!("{s:?} is not a range \"HH:MM-HH:MM\" (e.g. \"22:00-07:00\")");
        let (a, b) = s.trim().split_once('-').ok_or_else(bad)?;
        let start = minute_of_day(a.trim()).ok_or_else(bad)?;
        let end = minute_of_day(b.trim()).ok_or_else(bad)?;
        if start == end {
            return Err(format!(
                "{s:?} starts and ends at the same time; leave owner.quiet_hours unset for no quiet hours"
            ));
        }
        Ok(QuietHours { start, end })
    }
}

impl fmt::Display for QuietHours {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:02}:{:02}-{:02}:{:02}",
            self.start / 60,
            self.start % 60,
            self.end / 60,
            self.end % 60
        )
    }
}

/// `"HH:MM"` (two digits each, 00:00 to 23:59) as minutes after midnight.
fn minute_of_day(s: &str) -> Option<u16> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 || !(h.bytes().chain(m.bytes())).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

/// The owner's zone and quiet hours (`owner.*`).
#[derive(Debug, Clone, PartialEq)]
pub struct Owner {
    pub zone: TimeZone,
    pub quiet: Option<QuietHours>,
}

impl Default for Owner {
    fn default() -> Self {
        Owner {
            zone: TimeZone::UTC,
            quiet: None,
        }
    }
}

impl Owner {
    /// An IANA zone name from the bundled database (`Europe/Berlin`, `UTC`).
    pub fn zone_named(name: &str) -> Result<TimeZone, String> {
        TimeZone::get(name).map_err(|_| format!("{name:?} is not a known IANA time zone name"))
    }

    /// `t` on the owner's clock, the zone named: "2026-06-15 19:00 JST".
    pub fn format(&self, t: DateTime<Utc>) -> String {
        format_in(&self.zone, t)
    }

    /// Whether `now` falls inside the quiet hours, read on the owner's clock.
    pub fn is_quiet(&self, now: DateTime<Utc>) -> bool {
        let Some(quiet) = self.quiet else {
            return false;
        };
        let local = local(&self.zone, now);
        quiet.contains(local.hour() as u16 * 60 + local.minute() as u16)
    }
}

/// What a delivery worker needs to dress a card for the owner: their clock and quiet hours,
/// and the reminder thresholds that say which message is the last.
#[derive(Debug, Clone, Default)]
pub struct OwnerTime {
    pub owner: Owner,
    pub reminders: Vec<Duration>,
}

impl OwnerTime {
    /// Shows the card's times in the owner's zone and makes it silent when [`rings`] says so,
    /// as of the card's own `now` (the delivery's clock).
    pub fn apply(&self, card: &mut Card) {
        card.zone = self.owner.zone.clone();
        card.silent = !rings(card.now, &self.owner, card.expires_at, &self.reminders);
    }
}

/// `t` in `zone` as "2026-06-15 19:00 JST" (the zone's abbreviation, or its offset when it has
/// none).
pub fn format_in(zone: &TimeZone, t: DateTime<Utc>) -> String {
    local(zone, t).strftime("%Y-%m-%d %H:%M %Z").to_string()
}

fn local(zone: &TimeZone, t: DateTime<Utc>) -> jiff::ZonedDateTime {
    // chrono's range lies within jiff's for any time OpenTrain or a clock can give; the
    // fallback only keeps a wild value from panicking.
    jiff::Timestamp::from_millisecond(t.timestamp_millis())
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .to_zoned_datetime(zone.clone())
}

/// Whether a post or reminder sent at `now` rings the owner's phone: always outside quiet
/// hours; inside them only when it is the last message about the approval before it expires,
/// i.e. no configured reminder (`thresholds` before `expires_at`) is still to fire after `now`.
/// An approval with no known expiry has no last message and stays silent at night.
pub fn rings(
    now: DateTime<Utc>,
    owner: &Owner,
    expires_at: Option<DateTime<Utc>>,
    thresholds: &[Duration],
) -> bool {
    if !owner.is_quiet(now) {
        return true;
    }
    match expires_at {
        None => false,
        Some(expires) => {
            let (_, next) = reminders::plan(
                expires.timestamp_millis(),
                thresholds,
                now.timestamp_millis(),
            );
            next.is_none()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn owner(zone: &str, quiet: &str) -> Owner {
        Owner {
            zone: Owner::zone_named(zone).unwrap(),
            quiet: Some(quiet.parse().unwrap()),
        }
    }

    const H: u64 = 3600;

    fn th() -> Vec<Duration> {
        vec![Duration::from_secs(24 * H), Duration::from_secs(H)]
    }

    #[test]
    fn a_wrapped_range_holds_both_sides_of_midnight_and_ends_on_its_end() {
        let o = owner("UTC", "22:00-07:00");
        assert!(o.is_quiet(at("2026-06-15T23:30:00Z")));
        assert!(o.is_quiet(at("2026-06-16T06:59:59Z")));
        assert!(!o.is_quiet(at("2026-06-16T07:00:00Z")));
        assert!(o.is_quiet(at("2026-06-15T22:00:00Z")));
        assert!(!o.is_quiet(at("2026-06-15T21:59:00Z")));
        assert!(!o.is_quiet(at("2026-06-15T12:00:00Z")));
    }

    #[test]
    fn a_plain_range_is_read_on_the_owner_clock() {
        // 13:00-15:00 in Tokyo (UTC+9) is 04:00-06:00 UTC.
        let o = owner("Asia/Tokyo", "13:00-15:00");
        assert!(o.is_quiet(at("2026-06-15T04:00:00Z")));
        assert!(!o.is_quiet(at("2026-06-15T06:00:00Z")));
        assert!(!o.is_quiet(at("2026-06-15T13:30:00Z")));
    }

    #[test]
    fn malformed_or_empty_ranges_are_refused() {
        for bad in [
            "22:00",
            "22-07",
            "24:00-07:00",
            "22:60-07:00",
            "7:00-8:00",
            "a",
            "",
            "22:00-22:00",
        ] {
            assert!(bad.parse::<QuietHours>().is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            " 22:00 - 07:00 ".parse::<QuietHours>().unwrap().to_string(),
            "22:00-07:00"
        );
    }

    #[test]
    fn times_are_shown_on_the_owner_clock_with_the_zone_named() {
        let t = at("2026-06-15T10:00:00Z");
        assert_eq!(
            Owner::default().format(t),
            "2026-06-15 10:00 UTC".to_string()
        );
        let tokyo = owner("Asia/Tokyo", "22:00-07:00");
        assert_eq!(tokyo.format(t), "2026-06-15 19:00 JST");
        assert!(Owner::zone_named("Mars/Olympus_Mons").is_err());
    }

    #[test]
    fn inside_quiet_hours_only_the_last_message_before_expiry_rings() {
        let o = owner("UTC", "22:00-07:00");
        let night = at("2026-06-15T23:30:00Z");
        // 72 h left, two reminders to come: silent.
        assert!(!rings(
            night,
            &o,
            Some(night + chrono::Duration::hours(72)),
            &th()
        ));
        // 10 h left: the 1 h reminder is still to come, so the post is silent...
        assert!(!rings(
            night,
            &o,
            Some(night + chrono::Duration::hours(10)),
            &th()
        ));
        // ...and that reminder, the last message, rings even at night.
        let expires = at("2026-06-16T03:00:00Z");
        assert!(rings(at("2026-06-16T02:00:00Z"), &o, Some(expires), &th()));
        // 30 min left: no reminder is left, so the post itself rings.
        assert!(rings(
            night,
            &o,
            Some(night + chrono::Duration::minutes(30)),
            &th()
        ));
        // Reminders off: the post is the last message.
        assert!(rings(
            night,
            &o,
            Some(night + chrono::Duration::hours(72)),
            &[]
        ));
        // No known expiry: nothing is last; stays quiet.
        assert!(!rings(night, &o, None, &th()));
    }

    #[test]
    fn outside_quiet_hours_everything_rings() {
        let o = owner("UTC", "22:00-07:00");
        let day = at("2026-06-15T12:00:00Z");
        assert!(rings(
            day,
            &o,
            Some(day + chrono::Duration::hours(72)),
            &th()
        ));
        assert!(rings(day, &o, None, &th()));
        assert!(rings(day, &Owner::default(), None, &th()));
    }
}
