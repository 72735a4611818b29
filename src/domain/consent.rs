//! Consent events and the one rule that orders them: the latest event wins, ordered by
//! consentDate, then İYS creationDate, then transactionId. Every store applies events through
//! [`ConsentRecord::apply`], so a repeated or late event changes nothing, whatever the order
//! of arrival. [`ConsentEvent::order_key`] writes that order as text, for Redis to compare.

use std::cmp::Ordering;

use super::recipient::Recipient;
use super::time::TurkeyTime;
use super::types::{Channel, ConsentStatus, RecipientType, Source};

/// The key İYS keeps one record for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConsentKey {
    pub brand: u32,
    pub recipient: Recipient,
    pub recipient_type: RecipientType,
    pub channel: Channel,
}

/// Whether İYS has accepted an event.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Registration {
    /// In İYS: it has a creationDate and a transactionId (64 hex characters today; older
    /// records carry UUIDs, so the text is kept as İYS sent it).
    Registered {
        creation_date: TurkeyTime,
        transaction_id: Box<str>,
    },
    /// Collected by the company and not yet accepted by İYS.
    Pending,
}

/// One consent event (ONAY or RET) for a key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConsentEvent {
    pub status: ConsentStatus,
    pub source: Source,
    pub consent_date: TurkeyTime,
    pub registration: Registration,
    /// Retailer (bayi) codes this consent grants access to.
    pub retailer_access: Vec<u32>,
}

impl ConsentEvent {
    /// The total order of events for one key: consentDate first. Between events with the same
    /// consentDate a RET wins (the safe side: a RET the company recorded stands whatever İYS
    /// says at that instant), then creationDate and transactionId, where a pending event sorts
    /// before a registered one so İYS's acceptance of a collected event supersedes it. The
    /// remaining fields make the order total, so the outcome never depends on arrival order.
    #[allow(clippy::type_complexity)]
    fn order(&self) -> (TurkeyTime, bool, Option<(TurkeyTime, &str)>, u8, &[u32]) {
        let registered = match &self.registration {
            Registration::Registered {
                creation_date,
                transaction_id,
            } => Some((*creation_date, &**transaction_id)),
            Registration::Pending => None,
        };
        (
            self.consent_date,
            self.status == ConsentStatus::Ret,
            registered,
            self.source.code(),
            &self.retailer_access,
        )
    }

    /// True when `self` is newer than `other` and must replace it.
    pub fn supersedes(&self, other: &ConsentEvent) -> bool {
        self.order().cmp(&other.order()) == Ordering::Greater
    }

    /// [`Self::order`] as text: two keys compared byte by byte compare as their events do,
    /// so a store that cannot run this code (the Redis publish script, `shared.rs`) decides
    /// "newer" exactly as [`Self::supersedes`] does. Distinct events have distinct keys.
    ///
    /// The fields of `order()`, in its order, each of fixed width or terminated:
    /// consentDate as `YYYYMMDDhhmmss`; `1` for RET, `0` for ONAY; `0` when pending, else `1`,
    /// the creationDate, and the transactionId escaped and terminated (below); the source code
    /// as two hex digits; each retailer code as eight hex digits (last, so a shorter list that
    /// is a prefix of a longer one sorts first, as slices do).
    ///
    /// The transactionId is free text (UUIDs in older records), so it must not end where a
    /// longer id goes on: each character up to U+0020 becomes a space followed by the
    /// character 0x21 above it, and the id ends with two spaces, which sort below every escape
    /// and every other character. Dates count whole seconds in years 0–9999: all that the İYS date format,
    /// and so the record in Redis, carries.
    pub fn order_key(&self) -> String {
        use std::fmt::Write;
        fn date(key: &mut String, t: TurkeyTime) {
            use chrono::{Datelike, Timelike};
            let _ = write!(
                key,
                "{:04}{:02}{:02}{:02}{:02}{:02}",
                t.year().clamp(0, 9999),
                t.month(),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            );
        }
        let mut key = String::with_capacity(104 + 8 * self.retailer_access.len());
        date(&mut key, self.consent_date);
        key.push(if self.status == ConsentStatus::Ret {
            '1'
        } else {
            '0'
        });
        match &self.registration {
            Registration::Pending => key.push('0'),
            Registration::Registered {
                creation_date,
                transaction_id,
            } => {
                key.push('1');
                date(&mut key, *creation_date);
                for c in transaction_id.chars() {
                    if c <= ' ' {
                        key.push(' ');
                        key.push(char::from(b'!' + c as u8));
                    } else {
                        key.push(c);
                    }
                }
                key.push_str("  ");
            }
        }
        let _ = write!(key, "{:02x}", self.source.code());
        for code in &self.retailer_access {
            let _ = write!(key, "{code:08x}");
        }
        key
    }

    pub fn is_pending(&self) -> bool {
        matches!(self.registration, Registration::Pending)
    }
}

/// What applying an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The event is now the current record.
    Changed,
    /// The event is older than the current record, or is the current record again.
    Ignored,
}

/// The current record of one key: its latest event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentRecord {
    pub current: ConsentEvent,
}

impl ConsentRecord {
    /// Applies `event` to an optional current record by the latest-event-wins rule.
    pub fn apply(slot: &mut Option<ConsentRecord>, event: ConsentEvent) -> Applied {
        match slot {
            Some(record) if !event.supersedes(&record.current) => Applied::Ignored,
            _ => {
                *slot = Some(ConsentRecord { current: event });
                Applied::Changed
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::time::parse_iys;
    use proptest::prelude::*;

    fn event(status: ConsentStatus, date: &str, creation: Option<(&str, &str)>) -> ConsentEvent {
        ConsentEvent {
            status,
            source: Source::HsWeb,
            consent_date: parse_iys(date).unwrap(),
            registration: match creation {
                Some((c, tx)) => Registration::Registered {
                    creation_date: parse_iys(c).unwrap(),
                    transaction_id: tx.into(),
                },
                None => Registration::Pending,
            },
            retailer_access: vec![],
        }
    }

    #[test]
    fn ret_after_onay_wins_and_onay_before_ret_is_ignored() {
        let onay = event(
            ConsentStatus::Onay,
            "2026-01-01 10:00:00",
            Some(("2026-01-01 10:00:05", "a")),
        );
        let ret = event(
            ConsentStatus::Ret,
            "2026-01-02 10:00:00",
            Some(("2026-01-02 10:00:05", "b")),
        );
        let mut slot = None;
        assert_eq!(
            ConsentRecord::apply(&mut slot, onay.clone()),
            Applied::Changed
        );
        assert_eq!(
            ConsentRecord::apply(&mut slot, ret.clone()),
            Applied::Changed
        );
        // The older ONAY arriving late (a repeated page, a slow push) changes nothing.
        assert_eq!(ConsentRecord::apply(&mut slot, onay), Applied::Ignored);
        assert_eq!(slot.unwrap().current, ret);
    }

    #[test]
    fn same_transaction_twice_is_applied_once() {
        let ret = event(
            ConsentStatus::Ret,
            "2026-01-02 10:00:00",
            Some(("2026-01-02 10:00:05", "b")),
        );
        let mut slot = None;
        assert_eq!(
            ConsentRecord::apply(&mut slot, ret.clone()),
            Applied::Changed
        );
        assert_eq!(ConsentRecord::apply(&mut slot, ret), Applied::Ignored);
    }

    #[test]
    fn same_consent_date_is_ordered_by_creation_date() {
        let first = event(
            ConsentStatus::Onay,
            "2026-01-01 10:00:00",
            Some(("2026-01-01 10:00:01", "b")),
        );
        let mut second = event(
            ConsentStatus::Onay,
            "2026-01-01 10:00:00",
            Some(("2026-01-01 10:00:02", "a")),
        );
        second.source = Source::IysWeb;
        assert!(second.supersedes(&first));
        assert!(!first.supersedes(&second));
        // ...but at the same consentDate a RET wins whatever its creationDate.
        let ret = event(
            ConsentStatus::Ret,
            "2026-01-01 10:00:00",
            Some(("2026-01-01 09:00:00", "c")),
        );
        assert!(ret.supersedes(&second));
    }

    #[test]
    fn registration_supersedes_the_pending_event_it_confirms() {
        let pending = event(ConsentStatus::Onay, "2026-01-01 10:00:00", None);
        let registered = event(
            ConsentStatus::Onay,
            "2026-01-01 10:00:00",
            Some(("2026-01-01 10:03:00", "x")),
        );
        assert!(registered.supersedes(&pending));
        assert!(!pending.supersedes(&registered));
    }

    fn arb_event() -> impl Strategy<Value = ConsentEvent> {
        (
            any::<bool>(),
            0u32..5,
            proptest::option::of((0u32..5, 0u8..3)),
        )
            .prop_map(|(onay, day, reg)| {
                let date = format!("2026-01-0{} 10:00:00", day + 1);
                let status = if onay {
                    ConsentStatus::Onay
                } else {
                    ConsentStatus::Ret
                };
                let creation = reg
                    .map(|(d, tx)| (format!("2026-01-0{} 11:00:00", d + 1), format!("{tx:064x}")));
                event(
                    status,
                    &date,
                    creation.as_ref().map(|(c, t)| (c.as_str(), t.as_str())),
                )
            })
    }

    proptest! {
        /// The final record does not depend on the order events arrive in.
        #[test]
        fn arrival_order_does_not_change_the_outcome(
            events in proptest::collection::vec(arb_event(), 1..12),
            seed in any::<u64>(),
        ) {
            let mut shuffled = events.clone();
            // Deterministic Fisher–Yates driven by the seed.
            let mut state = seed | 1;
            for i in (1..shuffled.len()).rev() {
                state ^= state << 13; state ^= state >> 7; state ^= state << 17;
                shuffled.swap(i, (state % (i as u64 + 1)) as usize);
            }
            let mut a = None;
            let mut b = None;
            for e in events { ConsentRecord::apply(&mut a, e); }
            for e in shuffled { ConsentRecord::apply(&mut b, e); }
            prop_assert_eq!(a, b);
        }
    }

    /// Events that tie on as many fields as possible, so every step of the order is reached.
    fn arb_close_event() -> impl Strategy<Value = ConsentEvent> {
        let tx = proptest::sample::select(vec![
            "",
            "a",
            "ab",
            "a ",
            "a!",
            "a\u{0}",
            "a\u{1f}",
            "aA",
            "a b",
            "ş",
            "a\u{7f}",
            "b",
            "0000000000000000000000000000000000000000000000000000000000000001",
            "1b4e28ba-2fa1-11d2-883f-0016d3cca427",
        ]);
        let retailers = proptest::sample::select(vec![
            vec![],
            vec![0],
            vec![7],
            vec![7, 0],
            vec![7, 8],
            vec![u32::MAX],
            vec![0x1000_0000],
        ]);
        (
            any::<bool>(),
            0u32..2,
            0u32..60,
            proptest::option::of((0u32..2, tx)),
            proptest::sample::select(Source::ALL.to_vec()),
            retailers,
        )
            .prop_map(|(ret, day, second, reg, source, retailers)| ConsentEvent {
                status: if ret {
                    ConsentStatus::Ret
                } else {
                    ConsentStatus::Onay
                },
                source,
                consent_date: parse_iys(&format!("2026-01-0{} 10:00:{:02}", day + 1, second % 2))
                    .unwrap(),
                registration: reg.map_or(Registration::Pending, |(c, tx)| {
                    Registration::Registered {
                        creation_date: parse_iys(&format!("2026-01-0{} 11:00:00", c + 1)).unwrap(),
                        transaction_id: tx.into(),
                    }
                }),
                retailer_access: retailers,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20_000))]
        /// Comparing order keys byte by byte is comparing the events.
        #[test]
        fn order_keys_compare_as_the_events_do(a in arb_close_event(), b in arb_close_event()) {
            let (ka, kb) = (a.order_key(), b.order_key());
            prop_assert_eq!(ka.as_bytes().cmp(kb.as_bytes()), a.order().cmp(&b.order()), "{} / {}", ka, kb);
            prop_assert_eq!(ka == kb, a == b);
        }
    }

    #[test]
    fn order_keys_of_every_close_pair_compare_as_the_events_do() {
        // Every pair of a fixed grid, as a check the random pairs cannot miss by chance.
        let date = |s: &str| parse_iys(s).unwrap();
        let mut events = Vec::new();
        for consent_date in ["2025-12-31 23:59:59", "2026-01-01 00:00:00"] {
            for status in [ConsentStatus::Onay, ConsentStatus::Ret] {
                for reg in [
                    None,
                    Some(("2026-01-01 00:00:00", "")),
                    Some(("2026-01-01 00:00:00", "a")),
                    Some(("2026-01-01 00:00:00", "a ")),
                    Some(("2026-01-01 00:00:00", "a\u{0}")),
                    Some(("2026-01-01 00:00:00", "ab")),
                    Some(("2026-01-01 00:00:01", "")),
                ] {
                    for source in [Source::HsWeb, Source::IysWeb] {
                        for retailers in [&[][..], &[1], &[1, 0], &[2]] {
                            events.push(ConsentEvent {
                                status,
                                source,
                                consent_date: date(consent_date),
                                registration: reg.map_or(Registration::Pending, |(c, tx)| {
                                    Registration::Registered {
                                        creation_date: date(c),
                                        transaction_id: tx.into(),
                                    }
                                }),
                                retailer_access: retailers.to_vec(),
                            });
                        }
                    }
                }
            }
        }
        let keys: Vec<String> = events.iter().map(ConsentEvent::order_key).collect();
        for (a, ka) in events.iter().zip(&keys) {
            for (b, kb) in events.iter().zip(&keys) {
                assert_eq!(ka.cmp(kb), a.order().cmp(&b.order()), "{ka:?} / {kb:?}");
            }
        }
        assert_eq!(
            keys[0], "202512312359590003",
            "pending ONAY from HS_WEB, no retailers"
        );
    }

    #[test]
    fn exact_ties_break_towards_ret() {
        let onay = event(ConsentStatus::Onay, "2026-01-01 10:00:00", None);
        let ret = event(ConsentStatus::Ret, "2026-01-01 10:00:00", None);
        assert!(ret.supersedes(&onay));
        assert!(!onay.supersedes(&ret));
    }
}
