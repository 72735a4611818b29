//! The panel's Home, Brands and API clients pages over HTTP: what each role sees, what it may
//! change, that changes reach the gRPC-served keys and the checker, and the audit log.

mod panel_support;

use iysgate::pb;
use iysgate::pb::consent_check_server::ConsentCheck;
use panel_support::{Browser, TestPanel, start};

/// A Check of a demo-format phone for `brand` with `key`: the gRPC code of a refusal, if any.
async fn check_code(p: &TestPanel, key: &str, brand: u32) -> Option<tonic::Code> {
    let mut req = tonic::Request::new(pb::CheckRequest {
        brand_code: brand.into(),
        recipient: "+905331234505".into(),
        channel: pb::Channel::Mesaj.into(),
        ..Default::default()
    });
    req.metadata_mut().insert("x-api-key", key.parse().unwrap());
    ConsentCheck::check(&*p.panel.service, req)
        .await
        .err()
        .map(|s| s.code())
}

async fn audit_actions(p: &TestPanel) -> Vec<(String, String, Option<u32>, String)> {
    p.panel
        .store
        .audit_log(1000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.actor, e.action, e.brand, e.detail))
        .collect()
}

#[tokio::test]
async fn admin_adds_a_brand_sees_it_and_changes_its_policy() {
    let p = start("acc-brand", 50, &[]).await;
    let mut b = Browser::logged_in(&p.base, "admin").await;

    let page = b
        .submit(
            "/brands",
            "/brands",
            &[("iys_code", "7770001"), ("brand_code", "abc"), ("name", "")],
        )
        .await;
    assert_eq!(page.status, 422, "{}", page.body);
    assert!(
        page.body.contains("Pozitif bir sayı olmalı"),
        "{}",
        page.body
    );
    assert!(page.body.contains("Gerekli."));
    assert!(
        page.body.contains("value=\"7770001\""),
        "the form keeps what was typed"
    );

    let page = b
        .submit(
            "/brands",
            "/brands",
            &[
                ("iys_code", "7770001"),
                ("brand_code", "600099"),
                ("name", "Ege Kahve"),
            ],
        )
        .await;
    assert_eq!(page.status, 303, "{}", page.body);
    assert_eq!(page.location(), Some("/brands?done=added"));
    let list = b.get("/brands?done=added").await;
    assert_eq!(list.status, 200);
    assert!(list.body.contains("Marka eklendi."));
    assert!(list.body.contains("Ege Kahve") && list.body.contains("600099"));
    assert!(list.body.contains("7770001"), "its new provider is shown");
    assert!(
        list.body
            .contains("İYS'de kaydı olmayan TACIR'e gönderilmez"),
        "the default TACIR rule"
    );
    let stored = p.panel.evidence.brands().await.unwrap();
    assert!(
        stored
            .iter()
            .any(|x| x.brand_code == 600_099 && x.iys_code == 7_770_001)
    );
    assert!(
        p.panel
            .evidence
            .providers()
            .await
            .unwrap()
            .iter()
            .any(|x| x.iys_code == 7_770_001),
        "the provider was made"
    );

    let again = b
        .submit(
            "/brands",
            "/brands",
            &[
                ("iys_code", "7770001"),
                ("brand_code", "600099"),
                ("name", "Ege Kahve 2"),
            ],
        )
        .await;
    assert_eq!(again.status, 422);
    assert!(again.body.contains("Bu marka kodu zaten kayıtlı."));

    // The policy reaches this replica's checks: a TACIR without a record for the new brand.
    let made = b
        .submit(
            "/clients",
            "/clients",
            &[("name", "ege-gw"), ("brand", "600099"), ("retailers", "")],
        )
        .await;
    assert_eq!(made.status, 200);
    let at = made.body.find("iysk_").unwrap();
    let key = &made.body[at..at + "iysk_".len() + 48];
    assert_eq!(tacir_reason(&p, key, 600_099).await, pb::Reason::NoConsent);
    let page = b
        .submit(
            "/brands/600099",
            "/brands/600099/policy",
            &[("allow_unregistered_tacir", "on")],
        )
        .await;
    assert_eq!(page.status, 303, "{}", page.body);
    assert_eq!(
        tacir_reason(&p, key, 600_099).await,
        pb::Reason::TacirOptOutPolicy,
        "the checker applies it at once"
    );
    let show = b.get("/brands/600099?done=policy").await;
    assert!(show.body.contains("Politika kaydedildi ve uygulandı."));
    assert!(
        show.body
            .contains("İYS'de kaydı olmayan TACIR'e gönderilebilir")
    );
    let stored = p.panel.evidence.brands().await.unwrap();
    assert!(
        stored
            .iter()
            .find(|x| x.brand_code == 600_099)
            .unwrap()
            .policy
            .allow_unregistered_tacir
    );

    let log = audit_actions(&p).await;
    assert!(log.iter().any(|(who, what, brand, detail)| who == "admin"
        && what == "brand.add"
        && *brand == Some(600_099)
        && detail.contains("7770001")));
    assert!(
        log.iter()
            .any(|(_, what, brand, _)| what == "brand.policy" && *brand == Some(600_099))
    );
}

/// The reason Check gives for a TACIR phone without a record.
async fn tacir_reason(p: &TestPanel, key: &str, brand: u32) -> pb::Reason {
    let mut req = tonic::Request::new(pb::CheckRequest {
        brand_code: brand.into(),
        recipient: "+905559990011".into(),
        channel: pb::Channel::Mesaj.into(),
        recipient_type: pb::RecipientType::Tacir.into(),
        ..Default::default()
    });
    req.metadata_mut().insert("x-api-key", key.parse().unwrap());
    let d = ConsentCheck::check(&*p.panel.service, req)
        .await
        .unwrap()
        .into_inner()
        .decision
        .unwrap();
    d.reason()
}

#[tokio::test]
async fn a_compliance_user_sees_only_its_brand_and_is_refused_the_others() {
    let p = start("acc-scope", 200, &[]).await;
    let mut b = Browser::logged_in(&p.base, "uyum").await;

    let home = b.get("/").await;
    assert_eq!(home.status, 200, "{}", home.body);
    assert!(home.body.contains("Anadolu Market") && home.body.contains("600001"));
    for other in ["600002", "600003", "600004"] {
        assert!(!home.body.contains(other), "home shows {other}");
    }
    let brands = b.get("/brands").await;
    assert_eq!(brands.status, 200);
    assert!(brands.body.contains("600001"));
    assert!(!brands.body.contains("600002"));
    assert!(
        !brands.body.contains("Marka ekle"),
        "no add form for compliance"
    );
    assert_eq!(b.get("/brands/600001").await.status, 200);
    assert!(
        !b.get("/brands/600001").await.body.contains("/policy"),
        "read only"
    );

    for path in ["/brands/600002", "/?brand=600002", "/clients"] {
        let page = b.get(path).await;
        assert_eq!(page.status, 403, "{path}: {}", page.body);
        assert!(page.body.contains("erişim yetkiniz yok"));
    }
    assert_eq!(b.get("/?brand=600001").await.status, 200);

    let page = b
        .submit(
            "/brands",
            "/brands",
            &[("iys_code", "1"), ("brand_code", "600100"), ("name", "x")],
        )
        .await;
    assert_eq!(page.status, 403, "compliance may not add brands");
    assert!(
        !p.panel
            .evidence
            .brands()
            .await
            .unwrap()
            .iter()
            .any(|x| x.brand_code == 600_100)
    );
}

#[tokio::test]
async fn a_viewer_cannot_post_any_change() {
    let p = start("acc-viewer", 20, &[]).await;
    let mut admin = Browser::logged_in(&p.base, "admin").await;
    let made = admin
        .submit(
            "/clients",
            "/clients",
            &[
                ("name", "viewer-test-gw"),
                ("brand", "600001"),
                ("retailers", ""),
            ],
        )
        .await;
    assert_eq!(made.status, 200);
    let before = audit_actions(&p).await.len();

    let mut b = Browser::logged_in(&p.base, "izleyici").await;
    let changes: [(&str, Vec<(&str, &str)>); 5] = [
        (
            "/brands",
            vec![("iys_code", "1"), ("brand_code", "600101"), ("name", "x")],
        ),
        (
            "/brands/600001/policy",
            vec![("allow_unregistered_tacir", "on")],
        ),
        ("/clients", vec![("name", "not-made")]),
        (
            "/clients/grant",
            vec![
                ("client", "viewer-test-gw"),
                ("brand", "600002"),
                ("retailers", "*"),
            ],
        ),
        (
            "/clients/revoke",
            vec![("client", "viewer-test-gw"), ("brand", "600001")],
        ),
    ];
    for (path, fields) in &changes {
        let page = b.submit("/", path, fields).await;
        assert_eq!(page.status, 403, "{path}: {}", page.body);
    }
    assert_eq!(b.get("/clients").await.status, 403);
    let log = audit_actions(&p).await;
    assert_eq!(log.len(), before + 1, "only the viewer's login: {log:?}");
    assert!(
        !log.iter()
            .any(|(who, what, ..)| who == "izleyici" && what != "session.login")
    );
    let clients = p.panel.evidence.clients().await.unwrap();
    let gw = clients.iter().find(|c| c.name == "viewer-test-gw").unwrap();
    assert_eq!(gw.grants.len(), 1, "the grant is untouched");
    assert!(!clients.iter().any(|c| c.name == "not-made"));
    assert!(
        !p.panel
            .evidence
            .brands()
            .await
            .unwrap()
            .iter()
            .any(|x| x.brand_code == 600_101)
    );
}

#[tokio::test]
async fn admin_creates_a_client_sees_the_key_once_and_grants_and_revokes() {
    let p = start("acc-client", 50, &[]).await;
    let mut b = Browser::logged_in(&p.base, "admin").await;

    let bad = b
        .submit(
            "/clients",
            "/clients",
            &[
                ("name", "kasa-gw"),
                ("brand", "600001"),
                ("retailers", "x1"),
            ],
        )
        .await;
    assert_eq!(bad.status, 422);
    assert!(bad.body.contains("virgülle ayrılmış bayi kodları"));
    assert!(p.panel.evidence.clients().await.unwrap().is_empty());

    let made = b
        .submit(
            "/clients",
            "/clients",
            &[("name", "kasa-gw"), ("brand", "600001"), ("retailers", "*")],
        )
        .await;
    assert_eq!(made.status, 200, "{}", made.body);
    assert!(
        made.body
            .contains("yalnızca bu sayfada, bir kez gösterilir")
    );
    let at = made.body.find("iysk_").expect("the key is shown");
    let key: String = made.body[at..]
        .chars()
        .take_while(char::is_ascii_alphanumeric_or_underscore)
        .collect();
    assert_eq!(key.len(), "iysk_".len() + 48, "{key}");

    let stored = p.panel.evidence.clients().await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(
        stored[0].key_sha256,
        iysgate::auth::hash_key(&key),
        "only the SHA-256 is stored"
    );

    let list = b.get("/clients").await;
    assert_eq!(list.status, 200);
    assert!(list.body.contains("kasa-gw"));
    assert!(
        !list.body.contains(&key),
        "the list never shows the key again"
    );
    assert!(!list.body.contains("iysk_"));
    assert!(list.body.contains("tüm bayiler (*)"));

    assert_eq!(check_code(&p, &key, 600_001).await, None, "served at once");
    assert_eq!(
        check_code(&p, &key, 600_002).await,
        Some(tonic::Code::PermissionDenied)
    );
    assert_eq!(
        check_code(&p, "iysk_not-a-key", 600_001).await,
        Some(tonic::Code::Unauthenticated)
    );

    let page = b
        .submit(
            "/clients",
            "/clients/grant",
            &[
                ("client", "kasa-gw"),
                ("brand", "600002"),
                ("retailers", "12, 13"),
            ],
        )
        .await;
    assert_eq!(page.status, 303, "{}", page.body);
    assert_eq!(page.location(), Some("/clients?done=granted"));
    assert_eq!(
        check_code(&p, &key, 600_002).await,
        None,
        "the grant is served"
    );
    let list = b.get("/clients?done=granted").await;
    assert!(list.body.contains("Yetki verildi."));
    assert!(list.body.contains("600002: 12, 13"), "{}", list.body);

    let page = b
        .submit(
            "/clients",
            "/clients/revoke",
            &[("client", "kasa-gw"), ("brand", "600001")],
        )
        .await;
    assert_eq!(page.status, 303);
    assert_eq!(page.location(), Some("/clients?done=revoked"));
    assert_eq!(
        check_code(&p, &key, 600_001).await,
        Some(tonic::Code::PermissionDenied),
        "a revoked grant stops at once"
    );
    let list = b.get("/clients?done=revoked").await;
    assert!(list.body.contains("Yetki kaldırıldı."));
    assert!(!list.body.contains("600001: tüm bayiler"));

    // Five checks so far: two refused by rule 1 (the unknown key never reached a client).
    let counts = iysgate::auth::CallCounts::of("kasa-gw");
    assert_eq!(counts.calls.load(std::sync::atomic::Ordering::Relaxed), 4);
    assert_eq!(counts.refused.load(std::sync::atomic::Ordering::Relaxed), 2);
    assert!(
        list.body.contains("<td class=\"num\">4</td>"),
        "{}",
        list.body
    );
    assert!(list.body.contains("<td class=\"num\">2</td>"));
    assert!(list.body.contains("bu sunucu (replika) başladığından beri"));

    let log = audit_actions(&p).await;
    for action in ["client.add", "client.grant", "client.revoke"] {
        assert!(
            log.iter().any(|(who, what, _, detail)| who == "admin"
                && what == action
                && detail.contains("kasa-gw")),
            "{action}: {log:?}"
        );
    }
    assert!(
        log.iter().all(|(.., detail)| !detail.contains(&key)),
        "the key is never in the audit log"
    );
}

trait KeyChar {
    fn is_ascii_alphanumeric_or_underscore(&self) -> bool;
}

impl KeyChar for char {
    fn is_ascii_alphanumeric_or_underscore(&self) -> bool {
        self.is_ascii_alphanumeric() || *self == '_'
    }
}

#[tokio::test]
async fn home_puts_what_needs_a_person_first_then_each_brand() {
    let p = start("acc-home", 300, &[]).await;
    let mut b = Browser::logged_in(&p.base, "admin").await;
    let home = b.get("/").await;
    assert_eq!(home.status, 200, "{}", home.body);
    let todo = home
        .body
        .find("Bugün bir kişinin bakması gerekenler")
        .unwrap();
    let first_card = home.body.find("Güncel kayıtlar").unwrap();
    assert!(todo < first_card, "the list comes first");
    assert!(
        home.body.contains("dünün mutabakatı yapılmadı"),
        "no reconciliation has run"
    );
    for brand in iysgate::app::demo::BRANDS {
        assert!(home.body.contains(&brand.code.to_string()));
    }
    assert!(home.body.contains("<th scope=\"row\">MESAJ</th>"));
    assert!(home.body.contains("Bugün kaydedilen izinler"));
    assert!(home.body.contains("Yüklemeler (tüm markalar)"));
    assert!(home.body.contains("Son eşitleme IYS") && home.body.contains("Son eşitleme HS"));

    b.get("/lang?to=en&back=/").await;
    let home = b.get("/").await;
    assert!(home.body.contains("Needs a person today"));
    assert!(home.body.contains("yesterday's reconciliation is missing"));
}
