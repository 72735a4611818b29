//! The panel's import over HTTP: a file with good and bad rows uploaded as a browser sends it,
//! its progress polled, the summary with the refused rows by line and field (and as CSV), the
//! imported consents in force in checks before the import ends, the same file again storing
//! nothing twice, and who may not import or see an import.

mod panel_support;

use std::time::Duration;

use iysgate::write::import::HEADER;
use panel_support::{Browser, Page, TestPanel, start};

fn reason(p: &TestPanel, phone: &str) -> String {
    panel_support::check_reason(p, 600001, phone)
}

/// Three good rows (an ONAY, a RET, a quoted location with a comma) and two bad ones (line 3:
/// an unknown channel; line 5: a consent date in the future).
fn file(p: &TestPanel) -> String {
    let clock = p.panel.service.checker().clock();
    let fmt = |t: chrono::NaiveDateTime| t.format("%Y-%m-%d %H:%M:%S").to_string();
    let past = fmt(clock.now_turkey() - chrono::Duration::hours(2));
    let future = fmt(clock.now_turkey() + chrono::Duration::days(3));
    format!(
        "{HEADER}\n\
         +905551110001,BIREYSEL,MESAJ,ONAY,HS_FIZIKSEL_ORTAM,{past},,imzalı form,Kadıköy,F-1,pos\n\
         +905551110002,BIREYSEL,FAKS,ONAY,HS_FIZIKSEL_ORTAM,{past},,imzalı form,Kadıköy,F-2,pos\n\
         +905551110003,BIREYSEL,MESAJ,RET,HS_FIZIKSEL_ORTAM,{past},,imzalı form,Kadıköy,F-3,pos\n\
         +905551110004,BIREYSEL,MESAJ,ONAY,HS_FIZIKSEL_ORTAM,{future},,imzalı form,Kadıköy,F-4,pos\n\
         +905551110005,BIREYSEL,MESAJ,ONAY,HS_FIZIKSEL_ORTAM,{past},,imzalı form,\"Moda, Kadıköy\",F-5,pos\n"
    )
}

/// Uploads `content` for `brand` with the import page's form token and returns the answer.
async fn upload(b: &mut Browser, brand: &str, content: &str) -> Page {
    let csrf = b.get("/import").await.csrf();
    b.post_file(
        "/import",
        &[("_csrf", &csrf), ("brand", brand)],
        "file",
        "izinler.csv",
        content.as_bytes(),
    )
    .await
}

/// Polls the job's status until it says done, then returns its page and last status.
async fn finished_with_status(b: &mut Browser, job: &str) -> (Page, serde_json::Value) {
    for _ in 0..200 {
        let status = b.get(&format!("{job}/status")).await;
        assert_eq!(status.status, 200, "{}", status.body);
        let s: serde_json::Value = serde_json::from_str(&status.body).unwrap();
        assert!(s["total_bytes"].as_u64().unwrap() > 0);
        if s["done"] == true {
            return (b.get(job).await, s);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the import did not finish in 10 s");
}

async fn finished(b: &mut Browser, job: &str) -> Page {
    finished_with_status(b, job).await.0
}

#[tokio::test]
async fn an_import_with_bad_rows_stores_the_rest_and_names_each_refusal() {
    let p = start("import", 200, &[]).await;
    let mut b = Browser::logged_in(&p.base, "uyum").await;
    let form = b.get("/import").await;
    assert_eq!(form.status, 200);
    assert!(form.body.contains("enctype=\"multipart/form-data\""));
    assert_eq!(reason(&p, "+905551110003"), "NO_CONSENT");

    let content = file(&p);
    let answer = upload(&mut b, "600001", &content).await;
    assert_eq!(answer.status, 303, "{}", answer.body);
    let job = answer.location().unwrap().to_owned();
    assert!(job.starts_with("/import/"), "{job}");
    let (page, status) = finished_with_status(&mut b, &job).await;
    assert_eq!(
        status["bytes"], status["total_bytes"],
        "the whole file was read"
    );
    assert_eq!(status["rows"], 5);
    assert_eq!(page.status, 200);
    assert!(page.body.contains("5 satır"), "{}", page.body);
    assert!(page.body.contains("3 kaydedildi"), "{}", page.body);
    assert!(page.body.contains("2 reddedildi"), "{}", page.body);
    // The refused rows by line and field, İYS's code with its text.
    assert!(
        page.body
            .contains("<td class=\"num\">3</td><td><code>channel</code>")
    );
    assert!(
        page.body
            .contains("<td class=\"num\">5</td><td><code>consent_date</code>")
    );

    // In force in checks already: the RET denies, the ONAYs wait for İYS.
    assert_eq!(reason(&p, "+905551110003"), "LOCAL_RET");
    assert_eq!(reason(&p, "+905551110001"), "PENDING_REGISTRATION");
    assert_eq!(reason(&p, "+905551110005"), "PENDING_REGISTRATION");
    assert_eq!(reason(&p, "+905551110002"), "NO_CONSENT");

    // The refused rows as CSV, every one.
    let csv = b.get(&format!("{job}/refused.csv")).await;
    assert_eq!(csv.status, 200);
    assert!(
        csv.headers[http::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let lines: Vec<&str> = csv.body.lines().collect();
    assert_eq!(lines[0], "line,field,reason");
    assert_eq!(lines.len(), 3, "{}", csv.body);
    assert!(lines[1].starts_with("3,channel,"), "{}", lines[1]);
    assert!(lines[2].starts_with("5,consent_date,"), "{}", lines[2]);

    // The evidence holds the three, with the quoted location whole.
    let events = p
        .panel
        .evidence
        .events_between(
            600001,
            p.panel.now() - chrono::Duration::days(1),
            p.panel.now() + chrono::Duration::days(1),
        )
        .await
        .unwrap();
    assert_eq!(events.len(), 3);
    assert!(
        events
            .iter()
            .any(|e| e.event.evidence.location == "Moda, Kadıköy")
    );

    // The same file again: nothing stored twice.
    let again = upload(&mut b, "600001", &content).await;
    assert_eq!(again.status, 303, "{}", again.body);
    let page = finished(&mut b, again.location().unwrap()).await;
    assert!(page.body.contains("0 kaydedildi"), "{}", page.body);
    assert!(
        page.body.contains("3 önceden kaydedilmişti"),
        "{}",
        page.body
    );

    // Both imports are listed, and both are in the audit log.
    let list = b.get("/import").await;
    assert_eq!(list.body.matches("izinler.csv").count(), 2);
    let audit = p.panel.store.audit_log(100).await.unwrap();
    let actions: Vec<&str> = audit
        .iter()
        .filter(|e| e.actor == "uyum")
        .map(|e| e.action.as_str())
        .collect();
    assert_eq!(
        actions.iter().filter(|a| **a == "import.start").count(),
        2,
        "{actions:?}"
    );
    assert_eq!(
        actions.iter().filter(|a| **a == "import.done").count(),
        2,
        "{actions:?}"
    );
    assert!(
        audit
            .iter()
            .all(|e| !e.detail.contains("+905551110001") && !e.detail.contains("5551110001")),
        "no recipient in the audit log"
    );
}

#[tokio::test]
async fn a_wrong_header_stops_the_import_and_says_why() {
    let p = start("import-header", 10, &[]).await;
    let mut b = Browser::logged_in(&p.base, "uyum").await;
    let answer = upload(&mut b, "600001", "phone,status\n+905551110001,ONAY\n").await;
    assert_eq!(answer.status, 303, "{}", answer.body);
    let page = finished(&mut b, answer.location().unwrap()).await;
    assert!(page.body.contains("İçe aktarma durdu"), "{}", page.body);
    assert!(page.body.contains(HEADER));
    assert!(
        !page.body.contains("iysgate-import-"),
        "no temporary path shown"
    );
}

#[tokio::test]
async fn who_may_not_import_or_see_an_import() {
    let p = start("import-refusals", 10, &[]).await;
    let content = file(&p);

    // No form token, or another session's: refused before anything is read.
    let mut uyum = Browser::logged_in(&p.base, "uyum").await;
    let plain = uyum
        .post_file("/import", &[("brand", "600001")], "file", "x.csv", b"x")
        .await;
    assert_eq!(plain.status, 403);
    let wrong = uyum
        .post_file(
            "/import",
            &[("_csrf", "not-the-token"), ("brand", "600001")],
            "file",
            "x.csv",
            content.as_bytes(),
        )
        .await;
    assert_eq!(wrong.status, 403);

    // A brand not granted, and a viewer.
    assert_eq!(upload(&mut uyum, "600002", &content).await.status, 403);
    let mut viewer = Browser::logged_in(&p.base, "izleyici").await;
    assert_eq!(upload(&mut viewer, "600001", &content).await.status, 403);
    let audit = p.panel.store.audit_log(100).await.unwrap();
    assert!(
        audit.iter().all(|e| e.action != "import.start"),
        "no refused upload started an import"
    );

    // An admin's import of brand 600002: not there for the compliance user of 600001.
    let mut admin = Browser::logged_in(&p.base, "admin").await;
    let answer = upload(&mut admin, "600002", &content.replace("+90555", "+90544")).await;
    assert_eq!(answer.status, 303, "{}", answer.body);
    let job = answer.location().unwrap().to_owned();
    finished(&mut admin, &job).await;
    for path in [
        job.clone(),
        format!("{job}/status"),
        format!("{job}/refused.csv"),
    ] {
        assert_eq!(uyum.get(&path).await.status, 404, "{path}");
    }
    assert!(!uyum.get("/import").await.body.contains(&job));
    assert!(admin.get("/import").await.body.contains(&job));
}
