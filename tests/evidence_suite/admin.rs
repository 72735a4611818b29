//! Administration: providers, brands and their policies, API clients and grants (what the
//! check path's keys are built from), sync cursors and daily reports.

use iysgate::auth::{RetailerGrant, hash_key};
use iysgate::domain::BrandPolicy;
use iysgate::iys::client::PullSource;
use iysgate::sync::{BrandRef, Cursor};
use iysgate::write::evidence::{Brand, EvidenceError, EvidenceStore, api_keys};

use super::{BRAND, IYS_CODE, OTHER_BRAND, at, setup};

/// Brands, providers, API clients and their grants: what the check path's keys are built from.
pub async fn brands_and_clients(store: EvidenceStore) {
    setup(&store).await;
    let now = at("2026-05-20 10:00:00");
    let brands = store.brands().await.unwrap();
    assert_eq!(
        brands.iter().map(|b| b.brand_code).collect::<Vec<_>>(),
        vec![BRAND, OTHER_BRAND]
    );
    assert_eq!(
        store.providers().await.unwrap()[0].credentials_ref,
        "env:IYS_PASSWORD"
    );
    let dup = Brand {
        brand_code: BRAND,
        iys_code: IYS_CODE,
        name: "again".into(),
        policy: BrandPolicy::default(),
    };
    let err = store.add_brand(&dup, now).await.unwrap_err();
    assert!(
        matches!(err, EvidenceError::AlreadyExists { what: "brand", .. }),
        "{err}"
    );
    let orphan = Brand {
        brand_code: 700_001,
        iys_code: 700_000,
        ..dup
    };
    let err = store.add_brand(&orphan, now).await.unwrap_err();
    assert!(
        matches!(err, EvidenceError::UnknownProvider(700_000)),
        "{err}"
    );

    let tacir = BrandPolicy {
        allow_unregistered_tacir: true,
    };
    store.set_brand_policy(OTHER_BRAND, tacir).await.unwrap();
    assert_eq!(store.brands().await.unwrap()[1].policy, tacir);
    assert!(matches!(
        store.set_brand_policy(1, tacir).await.unwrap_err(),
        EvidenceError::UnknownBrand(1)
    ));

    store
        .add_client("sms-gw", hash_key("iysk_a"), now)
        .await
        .unwrap();
    store
        .add_client("crm", hash_key("iysk_b"), now)
        .await
        .unwrap();
    let err = store
        .add_client("sms-gw", hash_key("iysk_c"), now)
        .await
        .unwrap_err();
    assert!(matches!(err, EvidenceError::AlreadyExists { .. }), "{err}");
    let err = store
        .add_client("other", hash_key("iysk_a"), now)
        .await
        .unwrap_err();
    assert!(matches!(err, EvidenceError::KeyInUse(_)), "{err}");

    store
        .grant("sms-gw", BRAND, &RetailerGrant::Any, now)
        .await
        .unwrap();
    store
        .grant("sms-gw", OTHER_BRAND, &RetailerGrant::None, now)
        .await
        .unwrap();
    let only = RetailerGrant::Only(vec![12_345_678]);
    store
        .grant("sms-gw", OTHER_BRAND, &only, now)
        .await
        .unwrap();
    store
        .grant("crm", BRAND, &RetailerGrant::None, now)
        .await
        .unwrap();
    let err = store
        .grant("nobody", BRAND, &RetailerGrant::None, now)
        .await
        .unwrap_err();
    assert!(matches!(err, EvidenceError::UnknownClient(_)), "{err}");
    let err = store
        .grant("crm", 1, &RetailerGrant::None, now)
        .await
        .unwrap_err();
    assert!(matches!(err, EvidenceError::UnknownBrand(1)), "{err}");
    assert!(store.revoke("crm", BRAND).await.unwrap());
    assert!(!store.revoke("crm", BRAND).await.unwrap());

    let clients = store.clients().await.unwrap();
    assert_eq!(clients.len(), 2);
    assert_eq!(
        (clients[0].name.as_str(), clients[0].grants.len()),
        ("crm", 0)
    );
    assert_eq!(
        clients[1].grants,
        vec![(BRAND, RetailerGrant::Any), (OTHER_BRAND, only)]
    );
    let keys = api_keys(&clients).unwrap();
    let gw = keys
        .authenticate("iysk_a")
        .expect("stored digest authenticates");
    assert!(gw.may(BRAND, Some(1)) && gw.may(OTHER_BRAND, Some(12_345_678)));
    assert!(!gw.may(OTHER_BRAND, Some(1)));
    let crm = keys.authenticate("iysk_b").unwrap();
    assert!(!crm.may(BRAND, None), "revoked");
}

/// Sync cursors and daily reports are kept and replaced.
pub async fn cursors_and_reports(store: EvidenceStore) {
    setup(&store).await;
    let now = at("2026-05-20 10:00:00");
    let brand = BrandRef {
        iys_code: IYS_CODE,
        brand_code: BRAND,
    };
    assert_eq!(store.cursor(brand, PullSource::Iys).await.unwrap(), None);
    let cursor = Cursor {
        after: Some("1597740617_abc".into()),
        caught_up_at: Some(now),
    };
    store
        .set_cursor(brand, PullSource::Iys, &cursor, now)
        .await
        .unwrap();
    let next = Cursor {
        after: Some("1597740999_def".into()),
        caught_up_at: None,
    };
    store
        .set_cursor(brand, PullSource::Iys, &next, now)
        .await
        .unwrap();
    store
        .set_cursor(brand, PullSource::Hs, &cursor, now)
        .await
        .unwrap();
    assert_eq!(
        store.cursor(brand, PullSource::Iys).await.unwrap(),
        Some(next)
    );
    assert_eq!(
        store.cursor(brand, PullSource::Hs).await.unwrap(),
        Some(cursor)
    );

    let day = chrono::NaiveDate::from_ymd_opt(2026, 5, 20).unwrap();
    assert_eq!(store.report(BRAND, day).await.unwrap(), None);
    let first = serde_json::json!({"calendar": "display", "pending": 3, "expired": []});
    let second = serde_json::json!({"calendar": "display", "pending": 0, "expired": [12]});
    store.save_report(BRAND, day, &first, now).await.unwrap();
    store.save_report(BRAND, day, &second, now).await.unwrap();
    assert_eq!(store.report(BRAND, day).await.unwrap(), Some(second));
    let err = store.save_report(1, day, &first, now).await.unwrap_err();
    assert!(matches!(err, EvidenceError::UnknownBrand(1)), "{err}");
}
