//! The end-of-day reconciliation against the mock İYS over real HTTP, on both evidence stores
//! (a file, and PostgreSQL at `DATABASE_URL`; see `tests/uploader_support`):
//! - a day with planted mismatches: a RET the recipient gave in İYS that the index never heard
//!   of (for a number the index would ALLOW), one for a number it has no record of, and an
//!   upload the store holds as registered that İYS's file lacks. All three are found and
//!   reported (masked), the two RETs are repaired (DENY afterwards), the agreement withheld;
//! - a clean day is agreed and confirmed with İYS, and a day without a file reports so;
//! - a file cut in transit fails its SHA-384 and nothing is compared; fetched whole on the
//!   second try it verifies.

mod common;
#[macro_use]
mod uploader_support;

use std::sync::Arc;
use std::time::Duration;

use iysgate::check::index::{ConsentIndex, EmailKeyer};
use iysgate::check::store::Consents;
use iysgate::domain::time::parse_iys;
use iysgate::domain::{Channel, Clock, ConsentKey, ConsentStatus, ManualClock, RecipientType};
use iysgate::iys::mock::{CitizenSource, Faults, TruncateMode};
use iysgate::write::evidence::{EvidenceStore, UploadAnswer, UploadOutcome, UploadState};
use iysgate::write::reconcile::{Agreement, Holdings, MismatchKind, Target, reconcile};
use uploader_support::{
    BRAND, Harness, IYS_CODE, Schema, config, file_store, mock_config, onay, phone,
};

const DAY: &str = "2026-05-20";

fn consents() -> Consents {
    Consents::new(
        Arc::new(ConsentIndex::new()),
        Arc::new(EmailKeyer::new([7; 16])),
    )
}

fn key(recipient: &str) -> ConsentKey {
    ConsentKey {
        brand: BRAND,
        recipient: iysgate::domain::recipient::normalise_recipient(
            recipient,
            Channel::Mesaj.address_kind(),
        )
        .unwrap(),
        recipient_type: RecipientType::Bireysel,
        channel: Channel::Mesaj,
    }
}

fn target(date: &str, confirm: bool) -> Target {
    Target {
        iys_code: IYS_CODE,
        brand: BRAND,
        date: date.parse().unwrap(),
        confirm,
    }
}

/// Reconciles `date` of the harness's brand at the clock's now.
async fn run(
    h: &Harness,
    index: &Consents,
    date: &str,
    confirm: bool,
    clock: &ManualClock,
) -> Result<iysgate::write::reconcile::Reconciliation, iysgate::write::reconcile::ReconcileError> {
    reconcile(
        &h.client,
        &h.store,
        index,
        target(date, confirm),
        clock.now_utc(),
    )
    .await
}

/// The mock and the store on a manual clock at 10:00 of `DAY`; one ONAY uploaded through the
/// uploader and applied to `index` as the server would.
async fn day_with_one_upload(store: EvidenceStore) -> (Harness, Arc<ManualClock>, Consents) {
    let clock = Arc::new(ManualClock::at_turkey(
        parse_iys(&format!("{DAY} 10:00:00")).unwrap(),
    ));
    let h = Harness::new(store, mock_config(clock.clone()), clock.clone()).await;
    let id = h
        .record_one(&onay(1, parse_iys(&format!("{DAY} 09:00:00")).unwrap()))
        .await;
    let running = h.start(config());
    h.wait_settled(&[id], Duration::from_secs(20)).await;
    running.stop().await;
    assert!(matches!(h.state(id).await, UploadState::Registered { .. }));
    let index = consents();
    let registered: Vec<_> = h.registered.lock().unwrap().drain(..).collect();
    for (k, e) in registered {
        index.repair(k, e).await;
    }
    (h, clock, index)
}

async fn planted_mismatches_are_found_reported_and_the_rets_repaired(store: EvidenceStore) {
    let (h, clock, index) = day_with_one_upload(store).await;
    // An upload the store holds as registered, with a transactionId İYS never gave.
    let ghost = h
        .record_one(&onay(2, parse_iys(&format!("{DAY} 09:30:00")).unwrap()))
        .await;
    let claim = h
        .store
        .claim_uploads(10, Duration::from_mins(1), clock.now_utc())
        .await
        .unwrap();
    assert_eq!(claim.len(), 1);
    h.store
        .finish_upload(
            ghost,
            claim[0].attempt,
            &UploadAnswer {
                http_status: Some(200),
                outcome: UploadOutcome::Registered {
                    transaction_id: "f".repeat(64),
                    creation_date: parse_iys(&format!("{DAY} 10:00:00")).unwrap(),
                },
            },
            clock.now_utc(),
        )
        .await
        .unwrap();
    // Recipients' RETs in İYS that nothing brought to the index.
    clock.set_turkey(parse_iys(&format!("{DAY} 15:00:00")).unwrap());
    for i in [1, 3] {
        h.mock
            .citizen_change(
                u64::from(BRAND),
                &phone(i),
                RecipientType::Bireysel,
                Channel::Mesaj,
                ConsentStatus::Ret,
                CitizenSource::Mobil,
            )
            .unwrap();
    }
    assert_eq!(
        index.current(&key(&phone(1))).unwrap().status,
        ConsentStatus::Onay,
        "the index would ALLOW the number İYS holds a RET for"
    );

    clock.set_turkey(parse_iys("2026-05-21 02:30:00").unwrap());
    let r = run(&h, &index, DAY, true, &clock).await.unwrap();
    assert!(r.file_verified);
    assert_eq!(r.file_rows, 3, "our ONAY and two RETs from İYS");
    assert_eq!(r.uploads_matched, 1);
    assert_eq!(r.hs_from_elsewhere, 0);
    assert_eq!(r.new_rets_from_iys, 2);
    assert_eq!(r.changes["MESAJ BIREYSEL HS"].approvals, 1);
    assert_eq!(r.changes["MESAJ BIREYSEL IYS"].rejections, 2);
    let kinds: Vec<_> = r.mismatches.iter().map(|m| (m.kind, m.repaired)).collect();
    assert_eq!(
        kinds,
        [
            (MismatchKind::NotInIndex, true),
            (MismatchKind::NotInIndex, true),
            (MismatchKind::MissingAtIys, false)
        ],
        "{:#?}",
        r.mismatches
    );
    assert_eq!(r.repaired, 2);
    let missing = &r.mismatches[2];
    assert_eq!(missing.event_id, Some(ghost.0));
    assert_eq!(missing.transaction_id, "f".repeat(64));
    for m in &r.mismatches {
        assert!(
            !m.recipient.contains(&phone(1)[6..]) && !m.recipient.contains(&phone(3)[6..]),
            "recipients are masked: {}",
            m.recipient
        );
    }
    assert_eq!(
        r.agreement,
        Agreement::Withheld,
        "mismatches: not confirmed"
    );
    for i in [1, 3] {
        assert_eq!(
            index.current(&key(&phone(i))).unwrap().status,
            ConsentStatus::Ret,
            "the RET is in force after the run"
        );
    }
}

async fn a_clean_day_is_agreed_and_a_quiet_day_has_no_file(store: EvidenceStore) {
    let (h, clock, index) = day_with_one_upload(store).await;
    clock.set_turkey(parse_iys("2026-05-21 02:30:00").unwrap());
    let asked = run(&h, &index, DAY, false, &clock).await.unwrap();
    assert!(asked.clean(), "{:#?}", asked.mismatches);
    assert_eq!(asked.agreement, Agreement::NotRequested);
    let r = run(&h, &index, DAY, true, &clock).await.unwrap();
    assert!(r.clean() && r.file_verified && r.uploads_matched == 1);
    assert_eq!(r.agreement, Agreement::Confirmed);
    let again = run(&h, &index, DAY, true, &clock).await.unwrap();
    assert_eq!(again.agreement, Agreement::AlreadyConfirmed, "İYS kept it");
    let quiet = run(&h, &index, "2026-05-19", true, &clock).await.unwrap();
    assert_eq!((quiet.agreement, quiet.file_rows), (Agreement::NoFile, 0));
    assert!(quiet.clean());
    let today = run(&h, &index, "2026-05-21", true, &clock)
        .await
        .unwrap_err();
    assert!(today.to_string().contains("not over"), "{today}");
}

async fn a_file_cut_in_transit_fails_its_hash_and_nothing_is_compared(store: EvidenceStore) {
    let (h, clock, index) = day_with_one_upload(store).await;
    clock.set_turkey(parse_iys("2026-05-21 02:30:00").unwrap());
    let cut = |n| Faults {
        truncate: n,
        truncate_mode: TruncateMode::CutJson,
        path_contains: Some("/file".into()),
        ..Faults::default()
    };
    h.mock.set_faults(cut(2));
    let r = run(&h, &index, DAY, true, &clock).await.unwrap();
    assert!(!r.file_verified && r.sha384.is_some());
    assert_eq!((r.file_rows, r.uploads_matched), (0, 0), "nothing compared");
    assert_eq!(r.agreement, Agreement::Withheld);
    assert!(!r.clean());
    h.mock.set_faults(cut(1));
    let r = run(&h, &index, DAY, true, &clock).await.unwrap();
    assert!(r.file_verified && r.clean(), "second fetch whole");
    assert_eq!(r.agreement, Agreement::Confirmed);
}

on_both_stores!(
    planted_mismatches_are_found_reported_and_the_rets_repaired,
    a_clean_day_is_agreed_and_a_quiet_day_has_no_file,
    a_file_cut_in_transit_fails_its_hash_and_nothing_is_compared,
);
