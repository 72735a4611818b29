//! Per-key order of uploads in one process: an event of a key is not sent while an earlier
//! event of the same key is still open here (retrying, or inside a batch that İYS has not
//! processed yet).
//!
//! Why: İYS applies what arrives, in arrival order. If a collected ONAY fails with a 5xx and
//! the RET collected after it is sent meanwhile, İYS refuses the RET (H175, no record yet),
//! then accepts the ONAY on its retry, and ends up holding ONAY although the recipient's
//! last word to the company was RET. Holding the later event until the earlier one is
//! settled keeps İYS in the company's order.
//!
//! Scope: this process only. Within one round the events of a key are sent one after the
//! other in this order anyway; the holds cover what outlives a round. Two uploaders that
//! claim events of the same key at the same moment are not ordered against each other (see
//! the uploader's notes).

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use crate::domain::{ConsentKey, ConsentStatus, TurkeyTime};
use crate::write::evidence::{EventId, NewEvent};

/// Where an event stands among the events of its key: consent date, then RET after ONAY
/// at the same instant (the domain's tie rule: the RET is the later word), then recording
/// order.
pub(crate) type Rank = (TurkeyTime, bool, EventId);

pub(crate) fn rank(id: EventId, event: &NewEvent) -> Rank {
    (event.consent_date, event.status == ConsentStatus::Ret, id)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Hold {
    rank: Rank,
    /// When the held event is due again (its retry, or the end of its batch's lease).
    due: DateTime<Utc>,
    /// After this the hold is forgotten: the event should have been claimed and settled
    /// again by then (if it was not, it expired or another uploader holds it).
    until: DateTime<Utc>,
}

/// Open events by key.
#[derive(Debug, Default)]
pub(crate) struct KeyOrder {
    holds: HashMap<ConsentKey, Vec<Hold>>,
}

impl KeyOrder {
    /// Marks an event of `key` open until `due` (and forgets it at `until`), replacing an
    /// earlier hold of the same event.
    pub fn hold(&mut self, key: &ConsentKey, rank: Rank, due: DateTime<Utc>, until: DateTime<Utc>) {
        let holds = self.holds.entry(key.clone()).or_default();
        holds.retain(|h| h.rank.2 != rank.2);
        holds.push(Hold { rank, due, until });
    }

    /// The event is settled (registered, rejected, expired): later events may go.
    pub fn release(&mut self, key: &ConsentKey, id: EventId) {
        if let Some(holds) = self.holds.get_mut(key) {
            holds.retain(|h| h.rank.2 != id);
            if holds.is_empty() {
                self.holds.remove(key);
            }
        }
    }

    /// `None` when the event ranked `rank` may be sent at `now`; otherwise the latest
    /// instant an earlier open event of its key is due again, after which it may try again.
    pub fn blocked(
        &mut self,
        key: &ConsentKey,
        rank: Rank,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let holds = self.holds.get_mut(key)?;
        holds.retain(|h| h.until > now);
        let blocking = holds.iter().filter(|h| h.rank < rank).map(|h| h.due).max();
        if holds.is_empty() {
            self.holds.remove(key);
        }
        blocking
    }

    /// Drops every hold past its `until` (holds of events that never came back, e.g.
    /// expired ones, or ones whose answer could not be recorded).
    pub fn forget_stale(&mut self, now: DateTime<Utc>) {
        self.holds.retain(|_, holds| {
            holds.retain(|h| h.until > now);
            !holds.is_empty()
        });
    }

    /// Keys with an open event.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.holds.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::recipient::normalise_phone;
    use crate::domain::time::{from_turkey, parse_iys};
    use crate::domain::{Channel, Recipient, RecipientType};

    fn key() -> ConsentKey {
        ConsentKey {
            brand: 1,
            recipient: Recipient::Phone(normalise_phone("+905321234567").unwrap()),
            recipient_type: RecipientType::Bireysel,
            channel: Channel::Mesaj,
        }
    }

    fn at(text: &str) -> DateTime<Utc> {
        from_turkey(parse_iys(text).unwrap())
    }

    fn r(date: &str, ret: bool, id: i64) -> Rank {
        (parse_iys(date).unwrap(), ret, EventId(id))
    }

    #[test]
    fn a_later_event_waits_for_an_open_earlier_one() {
        let mut order = KeyOrder::default();
        let k = key();
        let now = at("2026-05-20 10:00:00");
        let onay = r("2026-05-20 09:00:00", false, 1);
        let ret = r("2026-05-20 09:30:00", true, 2);
        assert_eq!(order.blocked(&k, ret, now), None, "nothing open");
        let due = at("2026-05-20 10:00:10");
        order.hold(&k, onay, due, at("2026-05-20 10:05:10"));
        assert_eq!(order.blocked(&k, ret, now), Some(due));
        // The earlier event itself is not blocked by its own hold, nor by later ones.
        order.hold(&k, ret, due, at("2026-05-20 10:05:10"));
        assert_eq!(order.blocked(&k, onay, now), None);
        order.release(&k, EventId(1));
        assert_eq!(order.blocked(&k, ret, now), None);
        order.release(&k, EventId(2));
        assert_eq!(order.len(), 0);
    }

    #[test]
    fn ties_put_ret_after_onay_and_holds_are_forgotten() {
        let mut order = KeyOrder::default();
        let k = key();
        let onay = r("2026-05-20 09:00:00", false, 5);
        let ret = r("2026-05-20 09:00:00", true, 4);
        let now = at("2026-05-20 10:00:00");
        order.hold(&k, onay, now, at("2026-05-20 10:01:00"));
        assert!(
            order.blocked(&k, ret, now).is_some(),
            "same date: RET goes after"
        );
        // Past `until` the hold no longer blocks (and is dropped).
        assert_eq!(order.blocked(&k, ret, at("2026-05-20 10:01:00")), None);
        assert_eq!(order.len(), 0);
        order.hold(&k, onay, now, at("2026-05-20 10:01:00"));
        order.forget_stale(at("2026-05-20 10:00:59"));
        assert_eq!(order.len(), 1);
        order.forget_stale(at("2026-05-20 10:01:00"));
        assert_eq!(order.len(), 0);
    }

    #[test]
    fn a_new_hold_replaces_the_old_one_of_the_same_event() {
        let mut order = KeyOrder::default();
        let k = key();
        let onay = r("2026-05-20 09:00:00", false, 1);
        let later = r("2026-05-20 09:10:00", false, 2);
        let now = at("2026-05-20 10:00:00");
        order.hold(
            &k,
            onay,
            at("2026-05-20 10:00:05"),
            at("2026-05-20 10:10:00"),
        );
        order.hold(
            &k,
            onay,
            at("2026-05-20 10:00:30"),
            at("2026-05-20 10:10:00"),
        );
        assert_eq!(
            order.blocked(&k, later, now),
            Some(at("2026-05-20 10:00:30"))
        );
    }
}
