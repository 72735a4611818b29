//! The panel's daily reports over HTTP against the mock İYS: the calendar and the 30-day charts,
//! a reconciliation run from the page that finds and repairs what the index missed (withheld),
//! run again to confirm the agreement, the day downloaded as CSV and JSON, and who may not see
//! or run any of it; without an İYS account the page says why it cannot reconcile.

mod panel_support;

use std::sync::Arc;

use iysgate::clock::SystemClock;
use iysgate::domain::{Channel, Clock, ConsentStatus, RecipientType};
use iysgate::iys::mock::{Account, MockConfig, MockIys, SeedRecord};
use panel_support::{Browser, TestPanel, start};

const PASSWORD: &str = "mock-iys-password";

/// A mock İYS for the demo provider (600000) and its brands, holding four changes of
/// yesterday for brand 600001 that the index does not: three RETs given in İYS and one ONAY
/// sent by another channel of the provider.
async fn mock_iys() -> String {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let mock = MockIys::new(MockConfig {
        accounts: vec![Account::new(
            "demo",
            PASSWORD,
            600_000,
            vec![600_001, 600_002, 610_001, 620_001],
        )],
        ..MockConfig::for_tests(Arc::clone(&clock))
    });
    let at = (clock.now_turkey() - chrono::Duration::days(1))
        .date()
        .and_hms_opt(11, 0, 0)
        .unwrap();
    let rows = [
        ("+905559000001", ConsentStatus::Ret, "IYS_WEB"),
        ("+905559000002", ConsentStatus::Ret, "IYS_MOBIL"),
        ("+905559000003", ConsentStatus::Ret, "IYS_KISAMESAJ"),
        ("+905559000004", ConsentStatus::Onay, "HS_WEB"),
    ];
    mock.seed(
        600_001,
        rows.iter().map(|(recipient, status, source)| SeedRecord {
            recipient: (*recipient).to_owned(),
            recipient_type: RecipientType::Bireysel,
            consent_type: Channel::Mesaj,
            status: *status,
            source: (*source).to_owned(),
            consent_date: Some(at),
            creation_date: Some(at),
        }),
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(mock.serve(listener));
    url
}

async fn with_iys(test: &str) -> TestPanel {
    let url = mock_iys().await;
    start(
        test,
        50,
        &[
            "--iys-url",
            &url,
            "--iys-code",
            "600000",
            "--iys-username",
            "demo",
            "--iys-password",
            PASSWORD,
        ],
    )
    .await
}

fn yesterday(p: &TestPanel) -> String {
    let today = iysgate::domain::time::to_turkey(p.panel.now()).date();
    (today - chrono::Duration::days(1)).to_string()
}

fn reason(p: &TestPanel, phone: &str) -> String {
    panel_support::check_reason(p, 600001, phone)
}

/// Posts the day's reconciliation form (with `confirm` ticked or not).
async fn run(b: &mut Browser, day_page: &str, confirm: bool) -> panel_support::Page {
    let csrf = b.get(day_page).await.csrf();
    let mut fields = vec![("_csrf", csrf.as_str())];
    if confirm {
        fields.push(("confirm", "1"));
    }
    b.post(&format!("{day_page}/reconcile"), &fields).await
}

#[tokio::test]
async fn a_reconciliation_from_the_page_repairs_then_confirms_and_the_charts_show_it() {
    let p = with_iys("reports").await;
    let day = yesterday(&p);
    let day_page = format!("/reports/600001/{day}");
    let mut b = Browser::logged_in(&p.base, "uyum").await;

    // One brand granted: the reports open on it.
    let list = b.get("/reports").await;
    assert_eq!(list.status, 303);
    assert_eq!(list.location(), Some("/reports/600001"));
    let month = b.get("/reports/600001").await;
    assert_eq!(month.status, 200, "{}", month.body);
    assert!(
        month.body.contains("mutabakat yapılmadı"),
        "yesterday is not reconciled yet"
    );
    for chart in [
        "chart-approvals",
        "chart-rejections",
        "chart-rets",
        "chart-uploads",
    ] {
        assert!(month.body.contains(&format!("id=\"{chart}\"")), "{chart}");
    }
    assert_eq!(reason(&p, "+905559000001"), "NO_CONSENT");

    // The first run finds the four changes the index lacked and repairs them: withheld.
    let ran = run(&mut b, &day_page, false).await;
    assert_eq!(ran.status, 303, "{}", ran.body);
    assert_eq!(ran.location(), Some(format!("{day_page}?ran=1").as_str()));
    let page = b.get(ran.location().unwrap()).await;
    assert!(
        page.body.contains("4 satır, SHA-384 doğrulandı"),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("Uyuşmazlık: 4, giderilen: 4"),
        "{}",
        page.body
    );
    assert!(page.body.contains("uyuşmazlık var: onaylanmadı"));
    assert!(page.body.contains("+90555*****01"), "recipients masked");
    assert!(!page.body.contains("+905559000001"));
    // Repaired means enforced: the RET given in İYS denies now.
    assert_eq!(reason(&p, "+905559000001"), "REJECTED");

    // Run again, asking to confirm: nothing differs now, so İYS gets the agreement.
    let again = run(&mut b, &day_page, true).await;
    assert_eq!(again.status, 303, "{}", again.body);
    let page = b.get(&day_page).await;
    assert!(
        page.body.contains("Uyuşmazlık: 0, giderilen: 0"),
        "{}",
        page.body
    );
    assert!(page.body.contains("mutabakat onaylandı"), "{}", page.body);

    // The calendar and the charts: yesterday confirmed, its four changes drawn.
    let month = b.get("/reports/600001").await;
    assert!(month.body.contains("mutabakat onaylandı"));
    let short = chrono::NaiveDate::parse_from_str(&day, "%Y-%m-%d")
        .unwrap()
        .format("%d.%m")
        .to_string();
    assert!(
        month
            .body
            .contains(&format!("<title>{short} İYS'den gelen yeni RET: 3</title>")),
        "{}",
        month.body
    );
    assert!(
        month
            .body
            .contains(&format!("<title>{short} MESAJ IYS: 3</title>"))
    );
    assert!(
        month
            .body
            .contains(&format!("<title>{short} MESAJ HS: 1</title>"))
    );

    // The day as CSV and as JSON.
    let csv = b.get(&format!("{day_page}.csv")).await;
    assert_eq!(csv.status, 200);
    assert!(
        csv.headers[http::header::CONTENT_DISPOSITION]
            .to_str()
            .unwrap()
            .contains(&format!("iysgate-600001-{day}.csv"))
    );
    assert!(csv.body.starts_with("section,key,count\n"));
    assert!(
        csv.body.contains("reconciliation,new_rets_from_iys,3\n"),
        "{}",
        csv.body
    );
    assert!(csv.body.contains("agreement,confirmed,1\n"), "{}", csv.body);
    let json = b.get(&format!("{day_page}.json")).await;
    assert_eq!(json.status, 200);
    let v: serde_json::Value = serde_json::from_str(&json.body).unwrap();
    assert_eq!(v["brand"], 600001);
    assert_eq!(v["reconciliation"]["agreement"], "confirmed");
    assert_eq!(v["reconciliation"]["file_rows"], 4);

    // Both runs are in the audit log, by the person who ran them.
    let audit = p.panel.store.audit_log(50).await.unwrap();
    let runs: Vec<_> = audit
        .iter()
        .filter(|e| e.action == "report.reconcile")
        .collect();
    assert_eq!(runs.len(), 2);
    assert!(
        runs.iter()
            .all(|e| e.actor == "uyum" && e.brand == Some(600001))
    );
}

#[tokio::test]
async fn who_may_not_see_or_run_a_report() {
    let p = with_iys("reports-refusals").await;
    let day = yesterday(&p);
    let mut uyum = Browser::logged_in(&p.base, "uyum").await;
    // Another brand: the page, its downloads and its form all refuse.
    for path in [
        "/reports/600002".to_owned(),
        format!("/reports/600002/{day}"),
        format!("/reports/600002/{day}.csv"),
        format!("/reports/600002/{day}.json"),
    ] {
        assert_eq!(uyum.get(&path).await.status, 403, "{path}");
    }
    let csrf = uyum.get("/reports/600001").await.csrf();
    let foreign = uyum
        .post(
            &format!("/reports/600002/{day}/reconcile"),
            &[("_csrf", &csrf)],
        )
        .await;
    assert_eq!(foreign.status, 403);
    // No form token.
    let plain = uyum
        .post(&format!("/reports/600001/{day}/reconcile"), &[])
        .await;
    assert_eq!(plain.status, 403);
    // A viewer reads the report but has no form, and a forged POST is refused.
    let mut viewer = Browser::logged_in(&p.base, "izleyici").await;
    let page = viewer.get(&format!("/reports/600001/{day}")).await;
    assert_eq!(page.status, 200);
    assert!(!page.body.contains("/reconcile\""));
    let csrf = page.csrf();
    let forged = viewer
        .post(
            &format!("/reports/600001/{day}/reconcile"),
            &[("_csrf", &csrf)],
        )
        .await;
    assert_eq!(forged.status, 403);
    // Today is not over: the page says so, and a run is refused with İYS's reason.
    let today = iysgate::domain::time::to_turkey(p.panel.now()).date();
    let today_page = format!("/reports/600001/{today}");
    assert!(uyum.get(&today_page).await.body.contains("Gün bitmeden"));
    let early = run(&mut uyum, &today_page, false).await;
    assert_eq!(early.status, 409);
    assert!(early.body.contains("not over yet"), "{}", early.body);
    // An unknown brand, and a date that is not one.
    let mut admin = Browser::logged_in(&p.base, "admin").await;
    assert_eq!(admin.get("/reports/699999").await.status, 404);
    assert_eq!(admin.get("/reports/600001/2026-13-01").await.status, 400);
    assert!(
        p.panel
            .store
            .audit_log(50)
            .await
            .unwrap()
            .iter()
            .all(|e| e.action != "report.reconcile")
    );
}

#[tokio::test]
async fn without_an_iys_account_the_page_says_why_it_cannot_reconcile() {
    let p = start("reports-no-iys", 50, &[]).await;
    let day = yesterday(&p);
    let day_page = format!("/reports/600001/{day}");
    let mut b = Browser::logged_in(&p.base, "uyum").await;
    let page = b.get(&day_page).await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("İYS hesabı tanımlı değil"),
        "{}",
        page.body
    );
    assert!(!page.body.contains("/reconcile\""));
    let refused = run(&mut b, &day_page, false).await;
    assert_eq!(refused.status, 409);
    assert!(refused.body.contains("İYS hesabı tanımlı değil"));
}
