//! The check's decision rules 3–8 of DESIGN.md, as one pure function. Rules 1 (the API key's
//! grants) and 2 (input validation) are applied before this by the API layer; rule 7's
//! freshness is passed in. Nothing here does I/O or looks at the clock itself.

use super::calendar::BusinessCalendar;
use super::time::TurkeyTime;
use super::types::{RecipientType, Source};

/// Why a message is sent. Only purposes the regulation exempts from prior consent are listed
/// besides `Commercial`; greetings and campaigns are commercial.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Purpose {
    #[default]
    Commercial,
    Transactional,
    Information,
    DebtReminder,
    DeliveryNotice,
    DataUpdate,
    LegalNotice,
}

impl Purpose {
    pub fn is_exempt(self) -> bool {
        self != Purpose::Commercial
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Commercial => "COMMERCIAL",
            Purpose::Transactional => "TRANSACTIONAL",
            Purpose::Information => "INFORMATION",
            Purpose::DebtReminder => "DEBT_REMINDER",
            Purpose::DeliveryNotice => "DELIVERY_NOTICE",
            Purpose::DataUpdate => "DATA_UPDATE",
            Purpose::LegalNotice => "LEGAL_NOTICE",
        }
    }
}

/// The state of the record a decision is made on, as the index holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordStatus {
    /// ONAY registered in İYS.
    Onay,
    /// RET registered in İYS.
    Ret,
    /// ONAY the company collected; İYS has not accepted it yet.
    OnayPending,
    /// RET the company collected; not yet confirmed by İYS. Denies at once.
    RetPending,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView {
    pub status: RecordStatus,
    pub source: Option<Source>,
    pub consent_date: TurkeyTime,
}

/// Per-brand policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BrandPolicy {
    /// Allow TACIR recipients with no record (the opt-out reading of the law). Off unless set.
    pub allow_unregistered_tacir: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    AllowExempt,
    Deny,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    ConsentRegistered,
    ExemptPurpose,
    TacirOptOutPolicy,
    LocalRet,
    Rejected,
    PendingRegistration,
    RegistrationExpired,
    NoConsent,
    RetailerNotGranted,
}

impl Reason {
    pub const ALL: [Reason; 9] = [
        Reason::ConsentRegistered,
        Reason::ExemptPurpose,
        Reason::TacirOptOutPolicy,
        Reason::LocalRet,
        Reason::Rejected,
        Reason::PendingRegistration,
        Reason::RegistrationExpired,
        Reason::NoConsent,
        Reason::RetailerNotGranted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::ConsentRegistered => "CONSENT_REGISTERED",
            Reason::ExemptPurpose => "EXEMPT_PURPOSE",
            Reason::TacirOptOutPolicy => "TACIR_OPT_OUT_POLICY",
            Reason::LocalRet => "LOCAL_RET",
            Reason::Rejected => "REJECTED",
            Reason::PendingRegistration => "PENDING_REGISTRATION",
            Reason::RegistrationExpired => "REGISTRATION_EXPIRED",
            Reason::NoConsent => "NO_CONSENT",
            Reason::RetailerNotGranted => "RETAILER_NOT_GRANTED",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    pub reason: Reason,
    pub record: Option<RecordView>,
    /// For a pending ONAY: when its 3-business-day registration window closes.
    pub registration_deadline: Option<TurkeyTime>,
}

/// The data is too old (or not loaded) to ALLOW: answer UNAVAILABLE, retryable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("consent data is not fresh enough to allow")]
pub struct Stale;

/// Everything a decision depends on besides the calendar and the retailer grant.
#[derive(Debug, Clone, Copy)]
pub struct CheckInput {
    pub recipient_type: RecipientType,
    pub purpose: Purpose,
    /// The retailer (bayi) the message is sent through, if any.
    pub retailer: Option<u32>,
    pub record: Option<RecordView>,
    pub policy: BrandPolicy,
    pub now: TurkeyTime,
    /// Whether the index is loaded and younger than `max_staleness` (rule 7).
    pub fresh: bool,
}

/// Decides rules 3–8. `retailer_granted` is asked only when a retailer is named and the
/// answer would otherwise be ALLOW (the lookup is rare and kept off the common path).
pub fn decide(
    input: &CheckInput,
    calendar: &BusinessCalendar,
    retailer_granted: impl FnOnce(u32) -> bool,
) -> Result<Decision, Stale> {
    let deny = |reason, deadline| Decision {
        verdict: Verdict::Deny,
        reason,
        record: input.record,
        registration_deadline: deadline,
    };
    // Rule 3: a declared exempt purpose needs no consent (and no fresh data).
    if input.purpose.is_exempt() {
        return Ok(Decision {
            verdict: Verdict::AllowExempt,
            reason: Reason::ExemptPurpose,
            record: input.record,
            registration_deadline: None,
        });
    }
    let allow_reason = match input.record {
        None if input.recipient_type == RecipientType::Tacir
            && input.policy.allow_unregistered_tacir =>
        {
            Reason::TacirOptOutPolicy
        }
        None => return Ok(deny(Reason::NoConsent, None)),
        // Rule 4: the company's own RET denies at once, before İYS confirms it.
        Some(RecordView {
            status: RecordStatus::RetPending,
            ..
        }) => {
            return Ok(deny(Reason::LocalRet, None));
        }
        Some(RecordView {
            status: RecordStatus::Ret,
            ..
        }) => {
            return Ok(deny(Reason::Rejected, None));
        }
        Some(RecordView {
            status: RecordStatus::OnayPending,
            consent_date,
            ..
        }) => {
            let deadline = calendar.registration_deadline(consent_date);
            let reason = if input.now > deadline {
                Reason::RegistrationExpired
            } else {
                Reason::PendingRegistration
            };
            return Ok(deny(reason, Some(deadline)));
        }
        Some(RecordView {
            status: RecordStatus::Onay,
            ..
        }) => Reason::ConsentRegistered,
    };
    // Rule 6: a named retailer needs the consent to grant it access.
    if let Some(retailer) = input.retailer
        && !retailer_granted(retailer)
    {
        return Ok(deny(Reason::RetailerNotGranted, None));
    }
    // Rule 7: ALLOW only from fresh data; every DENY above may be served stale.
    if !input.fresh {
        return Err(Stale);
    }
    Ok(Decision {
        verdict: Verdict::Allow,
        reason: allow_reason,
        record: input.record,
        registration_deadline: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::time::parse_iys;

    fn t(s: &str) -> TurkeyTime {
        parse_iys(s).unwrap()
    }

    fn input(record: Option<RecordView>) -> CheckInput {
        CheckInput {
            recipient_type: RecipientType::Bireysel,
            purpose: Purpose::Commercial,
            retailer: None,
            record,
            policy: BrandPolicy::default(),
            now: t("2026-05-21 12:00:00"),
            fresh: true,
        }
    }

    #[allow(clippy::unnecessary_wraps)] // reads as the `record` field it fills
    fn record(status: RecordStatus, date: &str) -> Option<RecordView> {
        Some(RecordView {
            status,
            source: Some(Source::HsWeb),
            consent_date: t(date),
        })
    }

    fn run(input: &CheckInput) -> Result<Decision, Stale> {
        decide(input, &BusinessCalendar::embedded(), |_| false)
    }

    fn reason(input: &CheckInput) -> Reason {
        run(input).unwrap().reason
    }

    #[test]
    fn registered_onay_allows() {
        let d = run(&input(record(RecordStatus::Onay, "2026-05-01 10:00:00"))).unwrap();
        assert_eq!(
            (d.verdict, d.reason),
            (Verdict::Allow, Reason::ConsentRegistered)
        );
    }

    #[test]
    fn ret_denies_and_local_ret_denies_first() {
        assert_eq!(
            reason(&input(record(RecordStatus::Ret, "2026-05-01 10:00:00"))),
            Reason::Rejected
        );
        assert_eq!(
            reason(&input(record(
                RecordStatus::RetPending,
                "2026-05-01 10:00:00"
            ))),
            Reason::LocalRet
        );
    }

    #[test]
    fn no_record_denies_for_tacir_too_unless_the_brand_allows_it() {
        let mut i = input(None);
        assert_eq!(reason(&i), Reason::NoConsent);
        i.recipient_type = RecipientType::Tacir;
        assert_eq!(reason(&i), Reason::NoConsent);
        i.policy.allow_unregistered_tacir = true;
        let d = run(&i).unwrap();
        assert_eq!(
            (d.verdict, d.reason),
            (Verdict::Allow, Reason::TacirOptOutPolicy)
        );
        // The policy is about TACIR only.
        i.recipient_type = RecipientType::Bireysel;
        assert_eq!(reason(&i), Reason::NoConsent);
    }

    #[test]
    fn pending_onay_denies_until_and_after_its_deadline() {
        // Captured Wed 2026-05-20; strict deadline Sat 2026-05-23 23:59:59.
        let mut i = input(record(RecordStatus::OnayPending, "2026-05-20 09:00:00"));
        i.now = t("2026-05-23 23:59:59");
        let d = run(&i).unwrap();
        assert_eq!(d.reason, Reason::PendingRegistration);
        assert_eq!(d.registration_deadline, Some(t("2026-05-23 23:59:59")));
        i.now = t("2026-05-24 00:00:00");
        assert_eq!(reason(&i), Reason::RegistrationExpired);
    }

    #[test]
    fn pending_deadline_at_13_on_a_half_day() {
        // Captured Fri 2025-10-24; 28 October is a half day: deadline Tue 13:00.
        let mut i = input(record(RecordStatus::OnayPending, "2025-10-24 16:30:00"));
        i.now = t("2025-10-28 13:00:00");
        assert_eq!(reason(&i), Reason::PendingRegistration);
        i.now = t("2025-10-28 13:00:01");
        assert_eq!(reason(&i), Reason::RegistrationExpired);
    }

    #[test]
    fn retailer_needs_a_grant() {
        let mut i = input(record(RecordStatus::Onay, "2026-05-01 10:00:00"));
        i.retailer = Some(12_345_678);
        let cal = BusinessCalendar::embedded();
        let d = decide(&i, &cal, |_| false).unwrap();
        assert_eq!(
            (d.verdict, d.reason),
            (Verdict::Deny, Reason::RetailerNotGranted)
        );
        let d = decide(&i, &cal, |r| r == 12_345_678).unwrap();
        assert_eq!(d.verdict, Verdict::Allow);
    }

    #[test]
    fn stale_data_never_allows_but_still_denies() {
        let mut i = input(record(RecordStatus::Onay, "2026-05-01 10:00:00"));
        i.fresh = false;
        assert_eq!(run(&i), Err(Stale));
        let mut i = input(record(RecordStatus::Ret, "2026-05-01 10:00:00"));
        i.fresh = false;
        assert_eq!(reason(&i), Reason::Rejected);
        let mut i = input(None);
        i.fresh = false;
        assert_eq!(reason(&i), Reason::NoConsent);
    }

    #[test]
    fn exempt_purpose_allows_even_over_ret() {
        let mut i = input(record(RecordStatus::Ret, "2026-05-01 10:00:00"));
        i.purpose = Purpose::DebtReminder;
        i.fresh = false;
        let d = run(&i).unwrap();
        assert_eq!(
            (d.verdict, d.reason),
            (Verdict::AllowExempt, Reason::ExemptPurpose)
        );
        assert!(!Purpose::Commercial.is_exempt());
    }
}
