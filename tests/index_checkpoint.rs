//! A replica starting from the leader's index checkpoint (real Redis at `REDIS_URL`): it
//! answers every check as the leader does before it has a single full record (phones of both
//! recipient types, e-mails under the replica's own index key, retailer access, pending and
//! registered consents); while its records are partial no write moves the index to an older
//! state; once the records are in they match the leader's and the index is rebuilt from
//! them; and a replica started through `follow` converges with the leader, a change
//! published after the checkpoint included. These tests need Redis and fail (never skip) without it.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use iysgate::check::Query;
use iysgate::domain::recipient::normalise_email;
use iysgate::domain::time::parse_iys;
use iysgate::domain::{
    Channel, ConsentEvent, ConsentKey, ConsentRecord, ConsentStatus, PhoneNumber, Purpose,
    Recipient, RecipientType, Registration, Source,
};
use tokio_util::sync::CancellationToken;

use common::{Node, node_keyed, prefix, shared, wait_for, wipe};

const BRAND: u32 = 600_001;

fn event(status: ConsentStatus, date: &str, registered: bool, retailers: &[u32]) -> ConsentEvent {
    let consent_date = parse_iys(date).unwrap();
    ConsentEvent {
        status,
        source: Source::HsWeb,
        consent_date,
        registration: if registered {
            Registration::Registered {
                creation_date: consent_date,
                transaction_id: format!("tx-{date}").into(),
            }
        } else {
            Registration::Pending
        },
        retailer_access: retailers.to_vec(),
    }
}

fn phone(i: u64) -> Recipient {
    Recipient::Phone(PhoneNumber::from_e164_digits(905_327_000_000 + i).unwrap())
}

fn email(i: u64) -> Recipient {
    Recipient::Email(normalise_email(&format!("Alici{i}@Example.com")).unwrap())
}

/// The leader's records: phones of both types on both channels, e-mails, a TACIR record with
/// retailer access, and consents registered and pending.
fn records() -> Vec<(ConsentKey, ConsentEvent)> {
    let mut out = Vec::new();
    for i in 0..400 {
        let status = if i % 3 == 0 {
            ConsentStatus::Ret
        } else {
            ConsentStatus::Onay
        };
        let key = |recipient, recipient_type, channel| ConsentKey {
            brand: BRAND,
            recipient,
            recipient_type,
            channel,
        };
        let date = format!("2026-05-{:02} 10:{:02}:00", 1 + i % 28, i % 60);
        let registered = i % 7 != 0;
        out.push((
            key(phone(i), RecipientType::Bireysel, Channel::Mesaj),
            event(status, &date, registered, &[]),
        ));
        if i % 2 == 0 {
            out.push((
                key(phone(i), RecipientType::Bireysel, Channel::Arama),
                event(ConsentStatus::Onay, &date, true, &[]),
            ));
        }
        if i % 5 == 0 {
            out.push((
                key(phone(i), RecipientType::Tacir, Channel::Mesaj),
                event(ConsentStatus::Onay, &date, true, &[7, 9]),
            ));
        }
        out.push((
            key(email(i), RecipientType::Bireysel, Channel::Eposta),
            event(status, &date, registered, &[]),
        ));
    }
    out
}

/// Every answer a gateway could ask about these records, as the node gives it.
fn answers(n: &Node) -> Vec<String> {
    n.freshness.mark_confirmed(Utc::now());
    let mut out = Vec::new();
    for i in 0..401 {
        let (p, e) = (phone(i).to_string(), email(i).to_string());
        let asks = [
            (p.as_str(), Channel::Mesaj, RecipientType::Bireysel, None),
            (p.as_str(), Channel::Arama, RecipientType::Bireysel, None),
            (p.as_str(), Channel::Mesaj, RecipientType::Tacir, None),
            (p.as_str(), Channel::Mesaj, RecipientType::Tacir, Some(7)),
            (p.as_str(), Channel::Mesaj, RecipientType::Tacir, Some(8)),
            (e.as_str(), Channel::Eposta, RecipientType::Bireysel, None),
        ];
        for (recipient, channel, recipient_type, retailer) in asks {
            let q = Query {
                brand: BRAND,
                recipient,
                channel,
                recipient_type,
                retailer,
                purpose: Purpose::Commercial,
            };
            let decision = n.checker.check(&q).map(|a| a.decision);
            out.push(format!(
                "{recipient} {channel} {recipient_type} {retailer:?}: {decision:?}"
            ));
        }
    }
    out
}

/// A leader node holding `records()`, published to Redis and checkpointed.
async fn leader(p: &str) -> Node {
    let leader = node_keyed(BRAND, [1; 16]);
    let shared = shared(p).await;
    shared.ensure_epoch().await.unwrap();
    let mut published = Vec::new();
    for (key, event) in records() {
        leader.consents.apply(key.clone(), event.clone()).unwrap();
        published.push((key, ConsentRecord { current: event }));
    }
    shared
        .publish_many(published.iter().map(|(k, r)| (k, r)))
        .await
        .unwrap();
    shared
        .write_checkpoint(&leader.consents, "0-0")
        .await
        .unwrap();
    leader
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_answers_from_the_index_checkpoint_before_its_records_then_loads_them() {
    let p = prefix("index-ckpt");
    let leader = leader(&p).await;
    let shared = shared(&p).await;
    let replica = node_keyed(BRAND, [2; 16]);

    let (meta, entries) = shared
        .load_index_checkpoint(&replica.consents)
        .await
        .unwrap()
        .expect("the leader wrote an index checkpoint");
    assert_eq!(entries, records().len());
    assert!(
        replica.consents.records().is_empty(),
        "no record decoded yet"
    );
    assert!(!replica.consents.records_complete());
    assert_eq!(answers(&replica), answers(&leader));

    // While partial, a write older than what the index holds leaves the index alone (the
    // replica has no record to compare with), and a newer one reaches it.
    let older_onay = ConsentKey {
        brand: BRAND,
        recipient: phone(0),
        recipient_type: RecipientType::Bireysel,
        channel: Channel::Mesaj,
    };
    replica
        .consents
        .apply(
            older_onay.clone(),
            event(ConsentStatus::Onay, "2026-04-01 09:00:00", true, &[]),
        )
        .unwrap();
    assert_eq!(
        answers(&replica),
        answers(&leader),
        "an older ONAY changed the index"
    );
    let newer_ret = ConsentKey {
        recipient: phone(1),
        ..older_onay.clone()
    };
    let ret = event(ConsentStatus::Ret, "2026-06-01 09:00:00", true, &[]);
    replica
        .consents
        .apply(newer_ret.clone(), ret.clone())
        .unwrap();
    leader.consents.apply(newer_ret, ret).unwrap();
    assert_eq!(
        answers(&replica),
        answers(&leader),
        "a newer RET missed the index"
    );

    shared
        .load_records_later(
            Arc::clone(&replica.consents),
            meta,
            CancellationToken::new(),
        )
        .await;
    assert!(replica.consents.records_complete());
    assert_eq!(replica.records(), leader.records());
    assert_eq!(answers(&replica), answers(&leader));
    wipe(&p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_following_replica_starts_from_the_index_and_converges_with_later_changes() {
    let p = prefix("index-follow");
    let leader = leader(&p).await;
    let shared = shared(&p).await;
    // Published after the checkpoint: the replica must take it from the stream.
    let key = ConsentKey {
        brand: BRAND,
        recipient: phone(2),
        recipient_type: RecipientType::Bireysel,
        channel: Channel::Mesaj,
    };
    let ret = event(ConsentStatus::Ret, "2026-07-01 09:00:00", true, &[]);
    leader.consents.apply(key.clone(), ret.clone()).unwrap();
    shared
        .publish_many([(&key, &ConsentRecord { current: ret })])
        .await
        .unwrap();

    let replica = Arc::new(node_keyed(BRAND, [3; 16]));
    let stop = CancellationToken::new();
    let (c, f, s, stop2) = (
        Arc::clone(&replica.consents),
        Arc::clone(&replica.freshness),
        shared.clone(),
        stop.clone(),
    );
    tokio::spawn(async move { s.follow(c, f, stop2).await.unwrap() });
    wait_for("the records to load", Duration::from_secs(20), || {
        replica.consents.records_complete() && replica.records() == leader.records()
    })
    .await;
    assert_eq!(answers(&replica), answers(&leader));
    stop.cancel();
    wipe(&p).await;
}
