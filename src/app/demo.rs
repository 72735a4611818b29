//! A generated, realistic data set for the embedded default: several brands, all statuses
//! and sources, both recipient types, pending uploads inside and past their deadline, and
//! retailers. Deterministic for a seed, so a newcomer's numbers repeat. All addresses are
//! synthetic.

use std::fmt::Write as _;

use chrono::Duration;

use crate::auth::to_hex;
use crate::check::store::Consents;
use crate::domain::time::TurkeyTime;
use crate::domain::{
    BrandPolicy, Channel, ConsentEvent, ConsentKey, ConsentStatus, EmailAddress, PhoneNumber,
    Recipient, RecipientType, Registration, Source, recipient::normalise_email,
};

/// A demo brand.
#[derive(Debug, Clone, Copy)]
pub struct DemoBrand {
    pub code: u32,
    pub name: &'static str,
    pub policy: BrandPolicy,
    /// Share of generated records, in percent.
    weight: u32,
}

/// The demo's service provider (iysCode) owning its brands.
pub const IYS_CODE: u32 = 600_000;

pub const BRANDS: [DemoBrand; 4] = [
    DemoBrand {
        code: 600_001,
        name: "Anadolu Market",
        policy: BrandPolicy {
            allow_unregistered_tacir: false,
        },
        weight: 40,
    },
    DemoBrand {
        code: 600_002,
        name: "Anadolu Market Online",
        policy: BrandPolicy {
            allow_unregistered_tacir: false,
        },
        weight: 20,
    },
    DemoBrand {
        code: 610_001,
        name: "Boğaziçi Telekom",
        policy: BrandPolicy {
            allow_unregistered_tacir: false,
        },
        weight: 30,
    },
    DemoBrand {
        code: 620_001,
        name: "Ege Tekstil Toptan",
        policy: BrandPolicy {
            allow_unregistered_tacir: true,
        },
        weight: 10,
    },
];

/// Retailer codes of the demo brands (8 digits, as İYS assigns them).
pub const RETAILERS: [u32; 4] = [10_000_001, 10_000_002, 10_000_003, 10_000_004];

use crate::rng::SplitMix64 as Rng;

/// Kinds of outcome worth showing a newcomer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Sample {
    Allowed,
    RejectedInIys,
    LocalRet,
    Pending,
    PendingExpired,
    WithRetailer,
    AllowedEmail,
}

/// What was generated, with one synthetic example of each outcome for brand 600001.
#[derive(Debug, Default)]
pub struct Summary {
    pub records: usize,
    pub events: usize,
    pub samples: std::collections::BTreeMap<Sample, (Recipient, Channel)>,
}

/// Generates `records` records into `consents` and rebuilds the index. `now` is Turkey time.
pub fn generate(consents: &Consents, records: usize, seed: u64, now: TurkeyTime) -> Summary {
    let mut rng = Rng::new(seed);
    let mut summary = Summary {
        records,
        ..Summary::default()
    };
    let total_weight: u32 = BRANDS.iter().map(|b| b.weight).sum();
    let mut email_buf = String::new();
    for n in 0..records {
        let pick = rng.below(u64::from(total_weight)) as u32;
        let mut acc = 0;
        let brand = BRANDS
            .iter()
            .find(|b| {
                acc += b.weight;
                pick < acc
            })
            .expect("pick is below the total weight");
        let rtype = if rng.percent() < 12 {
            RecipientType::Tacir
        } else {
            RecipientType::Bireysel
        };
        let is_email = rng.percent() < 15;
        let (recipient, channels): (Recipient, Vec<Channel>) = if is_email {
            email_buf.clear();
            let _ = write!(email_buf, "{}", synthetic_email(&mut rng, n));
            let email: EmailAddress =
                normalise_email(&email_buf).expect("generated addresses are valid");
            (Recipient::Email(email), vec![Channel::Eposta])
        } else {
            let mut channels = Vec::with_capacity(2);
            if rng.percent() < 90 {
                channels.push(Channel::Mesaj);
            }
            if rng.percent() < 50 || channels.is_empty() {
                channels.push(Channel::Arama);
            }
            (Recipient::Phone(synthetic_phone(&mut rng)), channels)
        };
        for channel in channels {
            let (event, sample) = synthetic_event(&mut rng, now);
            let key = ConsentKey {
                brand: brand.code,
                recipient: recipient.clone(),
                recipient_type: rtype,
                channel,
            };
            if brand.code == BRANDS[0].code && rtype == RecipientType::Bireysel {
                let sample = match (sample, &recipient) {
                    (Sample::Allowed, Recipient::Email(_)) => Sample::AllowedEmail,
                    (Sample::Allowed, _) if !event.retailer_access.is_empty() => {
                        Sample::WithRetailer
                    }
                    (s, _) => s,
                };
                summary
                    .samples
                    .entry(sample)
                    .or_insert_with(|| (recipient.clone(), channel));
            }
            // Records only: the index is built once, in bulk, below.
            consents.records().apply(key, event);
            summary.events += 1;
        }
    }
    consents.rebuild_index();
    summary
}

fn synthetic_phone(rng: &mut Rng) -> PhoneNumber {
    // Turkish mobile ranges 530–559: +90 5xx xxx xx xx.
    let operator = 530 + rng.below(30);
    let subscriber = rng.below(10_000_000);
    let digits = 90_000_000_000 * 10 + operator * 10_000_000 + subscriber;
    PhoneNumber::from_e164_digits(digits).expect("generated numbers are valid Turkish mobiles")
}

fn synthetic_email(rng: &mut Rng, n: usize) -> String {
    const NAMES: [&str; 8] = [
        "ayse", "mehmet", "fatma", "mustafa", "zeynep", "ahmet", "elif", "emre",
    ];
    const DOMAINS: [&str; 5] = [
        "example.com.tr",
        "example.com",
        "posta.example.net",
        "firma.example.org",
        "mail.example.com",
    ];
    let name = NAMES[rng.below(NAMES.len() as u64) as usize];
    let domain = DOMAINS[rng.below(DOMAINS.len() as u64) as usize];
    format!("{name}.{n}@{domain}")
}

fn iys_source(rng: &mut Rng) -> Source {
    const IYS: [Source; 6] = [
        Source::IysWeb,
        Source::IysMobil,
        Source::IysKisamesaj,
        Source::IysCm,
        Source::IysWebYeni,
        Source::IysAhsHatKapatma,
    ];
    IYS[rng.below(IYS.len() as u64) as usize]
}

fn hs_source(rng: &mut Rng) -> Source {
    const HS: [Source; 6] = [
        Source::HsWeb,
        Source::HsFizikselOrtam,
        Source::HsCagriMerkezi,
        Source::HsMobil,
        Source::HsIslakImza,
        Source::HsEtkinlik,
    ];
    HS[rng.below(HS.len() as u64) as usize]
}

fn synthetic_event(rng: &mut Rng, now: TurkeyTime) -> (ConsentEvent, Sample) {
    let roll = rng.percent();
    let registered = |rng: &mut Rng, consent: TurkeyTime| {
        let creation = consent + Duration::seconds(rng.below(3 * 86_400) as i64);
        let mut tx = [0u8; 32];
        for chunk in tx.chunks_mut(8) {
            chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
        }
        Registration::Registered {
            creation_date: creation.min(now),
            transaction_id: to_hex(&tx).into(),
        }
    };
    let past = |rng: &mut Rng, max_days: u64| {
        now - Duration::seconds(rng.below(max_days * 86_400) as i64 + 60)
    };
    let (status, source, consent_date, registration, sample) = match roll {
        0..72 => {
            let d = past(rng, 3 * 365);
            (
                ConsentStatus::Onay,
                hs_source(rng),
                d,
                registered(rng, d),
                Sample::Allowed,
            )
        }
        72..90 => {
            let d = past(rng, 2 * 365);
            let source = if rng.percent() < 60 {
                iys_source(rng)
            } else {
                hs_source(rng)
            };
            (
                ConsentStatus::Ret,
                source,
                d,
                registered(rng, d),
                Sample::RejectedInIys,
            )
        }
        90..97 => {
            // Collected ONAYs waiting for İYS: most inside their window, some past it.
            let d = past(rng, 7);
            (
                ConsentStatus::Onay,
                hs_source(rng),
                d,
                Registration::Pending,
                Sample::Pending,
            )
        }
        _ => {
            let d = past(rng, 2);
            (
                ConsentStatus::Ret,
                hs_source(rng),
                d,
                Registration::Pending,
                Sample::LocalRet,
            )
        }
    };
    let retailer_access = if status == ConsentStatus::Onay && rng.percent() < 5 {
        RETAILERS[..=(rng.below(3) as usize)].to_vec()
    } else {
        Vec::new()
    };
    let event = ConsentEvent {
        status,
        source,
        consent_date,
        registration,
        retailer_access,
    };
    (event, sample)
}

/// Picks one pending ONAY inside its registration window and one past it (the generator
/// does not know the calendar, so it classifies afterwards).
pub fn pick_pending_samples(
    summary: &mut Summary,
    consents: &Consents,
    calendar: &crate::domain::BusinessCalendar,
    now: TurkeyTime,
) {
    summary.samples.remove(&Sample::Pending);
    consents.records().for_each(|key, record| {
        let e = &record.current;
        if key.brand != BRANDS[0].code
            || key.recipient_type != RecipientType::Bireysel
            || !e.is_pending()
            || e.status != ConsentStatus::Onay
        {
            return;
        }
        let sample = if calendar.is_expired(e.consent_date, now) {
            Sample::PendingExpired
        } else {
            Sample::Pending
        };
        summary
            .samples
            .entry(sample)
            .or_insert_with(|| (key.recipient.clone(), key.channel));
    });
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::check::index::{ConsentIndex, EmailKeyer, IndexAddress};
    use crate::check::store::channel_state;
    use crate::check::{Checker, Freshness, Query};
    use crate::domain::time::parse_iys;
    use crate::domain::{BusinessCalendar, ManualClock, Reason};

    #[test]
    fn generated_data_covers_every_outcome_and_the_index_matches_the_records() {
        let now = parse_iys("2026-11-28 12:00:00").unwrap();
        let index = Arc::new(ConsentIndex::new());
        let keyer = Arc::new(EmailKeyer::new([1; 16]));
        let consents = Consents::new(Arc::clone(&index), Arc::clone(&keyer));
        let calendar = Arc::new(BusinessCalendar::embedded());
        let mut summary = generate(&consents, 20_000, 7, now);
        pick_pending_samples(&mut summary, &consents, &calendar, now);
        assert_eq!(summary.records, 20_000);
        assert!(summary.events > 20_000, "phones carry one or two channels");

        // Every record's index state is what its current event says (incremental writes
        // and the bulk rebuild agree).
        let mut checked = 0;
        consents.records().for_each(|key, record| {
            let address = match &key.recipient {
                Recipient::Phone(p) => IndexAddress::Phone(p.digits()),
                Recipient::Email(e) => {
                    IndexAddress::Email(keyer.key(key.recipient_type, e.as_str()))
                }
            };
            let state = index.state(key.brand, key.recipient_type, address, key.channel);
            assert_eq!(state, channel_state(&record.current));
            checked += 1;
        });
        assert!(checked > 20_000, "{checked} records compared");

        // Each sample decides as its name says.
        let clock = Arc::new(ManualClock::at_turkey(now));
        let freshness = Arc::new(Freshness::new());
        freshness.mark_confirmed(crate::domain::Clock::now_utc(&*clock));
        let checker = Checker::new(
            index,
            keyer,
            freshness,
            calendar,
            clock,
            Duration::from_secs(30),
        );
        let expected = [
            (Sample::Allowed, Reason::ConsentRegistered),
            (Sample::AllowedEmail, Reason::ConsentRegistered),
            (Sample::RejectedInIys, Reason::Rejected),
            (Sample::LocalRet, Reason::LocalRet),
            (Sample::Pending, Reason::PendingRegistration),
            (Sample::PendingExpired, Reason::RegistrationExpired),
            (Sample::WithRetailer, Reason::ConsentRegistered),
        ];
        for (sample, reason) in expected {
            let (recipient, channel) = summary
                .samples
                .get(&sample)
                .unwrap_or_else(|| panic!("{sample:?} missing"));
            let text = recipient.to_string();
            let retailer = (sample == Sample::WithRetailer).then_some(RETAILERS[0]);
            let q = Query {
                brand: BRANDS[0].code,
                recipient: &text,
                channel: *channel,
                recipient_type: RecipientType::Bireysel,
                retailer,
                purpose: crate::domain::Purpose::Commercial,
            };
            assert_eq!(
                checker.check(&q).unwrap().decision.reason,
                reason,
                "{sample:?}"
            );
        }
    }
}
