//! The panel's lookup, hand-recorded consents and upload outbox over HTTP: the same answers
//! as the checker, the same validation as RecordConsent, recipients masked, reveals audited.

mod panel_support;

use panel_support::{Browser, check_reason, start};

fn form<'a>(phone: &'a str, status: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("brand", "600001"),
        ("recipient", phone),
        ("channel", "MESAJ"),
        ("recipient_type", "BIREYSEL"),
        ("status", status),
        ("source", "HS_FIZIKSEL_ORTAM"),
        ("consent_date", "2026-12-01T10:00"),
        ("retailer_access", ""),
        ("method", "imzalı kağıt form"),
        ("location", "Kadıköy mağazası"),
        ("document_ref", "F-2026-001"),
        ("capturing_system", "iysgate-panel"),
    ]
}

#[tokio::test]
async fn a_bad_field_is_named_and_nothing_is_stored_then_a_good_one_is_enforced() {
    let p = start("record", 50, &[]).await;
    let mut b = Browser::logged_in(&p.base, "uyum").await;
    let mut bad = form("+905329990001", "RET");
    bad.retain(|(k, _)| *k != "source");
    bad.push(("source", "IYS_WEB"));
    let page = b.submit("/record", "/record", &bad).await;
    assert_eq!(page.status, 422, "{}", page.body);
    assert!(
        page.body.contains("nothing was stored") || page.body.contains("hiçbir şey kaydedilmedi")
    );
    assert!(
        page.body.contains("id=\"source-error\""),
        "the error sits next to the source field"
    );
    assert_eq!(
        check_reason(&p, 600001, "+905329990001"),
        "NO_CONSENT",
        "nothing stored"
    );

    let page = b
        .submit("/record", "/record", &form("+905329990001", "RET"))
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("Kaydedildi"), "{}", page.body);
    assert!(page.body.contains("+90532*****01"), "masked in the answer");
    assert!(
        !page.body.contains("+905329990001"),
        "never in clear on the page"
    );
    assert_eq!(
        check_reason(&p, 600001, "+905329990001"),
        "LOCAL_RET",
        "enforced at once"
    );

    let uploads = b.get("/uploads?brand=600001&state=pending").await;
    assert_eq!(uploads.status, 200);
    assert!(uploads.body.contains("+90532*****01"), "{}", uploads.body);
    let audit = p.panel.store.audit_log(10).await.unwrap();
    assert!(audit.iter().any(|e| e.action == "consent.record"
        && e.actor == "uyum"
        && e.detail.contains("+90532*****01")
        && !e.detail.contains("+905329990001")));
}

#[tokio::test]
async fn the_lookup_gives_checks_reasons_masked_and_an_audited_reveal() {
    let p = start("lookup", 50, &[]).await;
    let mut b = Browser::logged_in(&p.base, "uyum").await;
    b.submit("/record", "/record", &form("+905329990002", "ONAY"))
        .await;
    b.submit("/record", "/record", &form("+905329990003", "RET"))
        .await;
    for phone in ["+905329990002", "+905329990003", "+905329990004"] {
        let reason = check_reason(&p, 600001, phone);
        let page = b
            .get(&format!(
                "/lookup?brand=600001&recipient=%2B{}",
                &phone[1..]
            ))
            .await;
        assert_eq!(page.status, 200, "{}", page.body);
        assert!(
            page.body.contains(&format!("<code>{reason}</code>")),
            "{phone}: {reason} in {}",
            page.body
        );
        let masked = format!("{}*****{}", &phone[..6], &phone[phone.len() - 2..]);
        assert!(
            page.body.contains(&format!("— {masked}</h2>")),
            "masked by default: {}",
            page.body
        );
    }
    let page = b
        .get("/lookup?brand=600001&recipient=%2B905329990003")
        .await;
    assert!(
        page.body.contains("imzalı kağıt form"),
        "the event trail shows the evidence"
    );
    let csrf = page.csrf();
    let page = b
        .post(
            "/lookup",
            &[
                ("brand", "600001"),
                ("recipient", "+905329990003"),
                ("_csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("+905329990003"), "revealed");
    let audit = p.panel.store.audit_log(10).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|e| e.action == "recipient.reveal" && e.detail == "+90532*****03")
    );

    let page = b.get("/lookup?brand=600001&recipient=not-a-phone").await;
    assert!(page.body.contains("recipient"), "the field is named");
}

#[tokio::test]
async fn a_viewer_cannot_record_or_reveal_and_nobody_sees_another_brand() {
    let p = start("roles", 50, &[]).await;
    let mut v = Browser::logged_in(&p.base, "izleyici").await;
    assert_eq!(v.get("/record").await.status, 403);
    let page = v
        .get("/lookup?brand=600001&recipient=%2B905329990005")
        .await;
    assert_eq!(page.status, 200);
    assert!(
        !page.body.contains("Açık göster"),
        "no reveal button for a viewer"
    );
    let csrf = page.csrf();
    let page = v
        .post(
            "/lookup",
            &[
                ("brand", "600001"),
                ("recipient", "+905329990005"),
                ("_csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(page.status, 403);
    let mut fields = form("+905329990005", "ONAY");
    fields.push(("_csrf", &csrf));
    assert_eq!(v.post("/record", &fields).await.status, 403);

    let mut c = Browser::logged_in(&p.base, "uyum").await;
    assert_eq!(
        c.get("/lookup?brand=600002&recipient=%2B905329990005")
            .await
            .status,
        403
    );
    assert_eq!(c.get("/uploads?brand=600002").await.status, 403);
    let mut other = form("+905329990005", "ONAY");
    other[0] = ("brand", "600002");
    assert_eq!(c.submit("/record", "/record", &other).await.status, 403);
}

#[tokio::test]
async fn home_counts_each_brands_uploads_on_its_card_and_hides_the_deployments_from_others() {
    let p = start("home-uploads", 50, &[]).await;
    let mut b = Browser::logged_in(&p.base, "uyum").await;
    let now = iysgate::domain::time::to_turkey(p.panel.now()) - chrono::Duration::hours(1);
    let date = now.format("%Y-%m-%dT%H:%M").to_string();
    for (phone, status) in [("+905329990011", "ONAY"), ("+905329990012", "RET")] {
        let mut f = form(phone, status);
        f.retain(|(k, _)| *k != "consent_date");
        f.push(("consent_date", &date));
        let page = b.submit("/record", "/record", &f).await;
        assert_eq!(page.status, 200, "{}", page.body);
    }
    let home = b.get("/").await;
    assert!(
        home.body
            .contains("href=\"/uploads?brand=600001&amp;state=pending\">bekliyor</a>: 2"),
        "{}",
        home.body
    );
    assert!(home.body.contains("href=\"/reports/600001\""));
    // The deployment's totals are for admins: they count other brands too.
    assert!(!home.body.contains("Yüklemeler (tüm markalar)"));
    let mut admin = Browser::logged_in(&p.base, "admin").await;
    let home = admin.get("/").await;
    assert!(home.body.contains("Yüklemeler (tüm markalar)"));
    assert!(
        home.body
            .contains("href=\"/uploads?brand=600002&amp;state=pending\">bekliyor</a>: 0")
    );
}
