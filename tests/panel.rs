//! The panel's sign-in, sessions and form tokens over HTTP (the browser suite drives the same
//! through Chromium: tests/browser).

mod panel_support;

use panel_support::{Browser, PASSWORD, start};

#[tokio::test]
async fn a_page_needs_a_login_and_a_login_opens_it() {
    let p = start("login", 100, &[]).await;
    let mut b = Browser::new(&p.base);
    let page = b.get("/?brand=600001").await;
    assert_eq!(page.status, 303);
    assert_eq!(page.location(), Some("/login?next=/%3Fbrand%3D600001"));

    let page = b.login("admin", "wrong password!").await;
    assert_eq!(page.status, 401);
    assert!(
        page.body.contains("Kullanıcı adı ya da parola yanlış"),
        "{}",
        page.body
    );

    let page = b.login("admin", PASSWORD).await;
    assert_eq!(page.status, 303);
    let cookie = page.headers.get("set-cookie").unwrap().to_str().unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let home = b.get("/").await;
    assert_eq!(home.status, 200, "{}", home.body);
    assert!(home.body.contains("Özet"));
    let csp = home.headers.get("content-security-policy").unwrap();
    assert!(csp.to_str().unwrap().contains("script-src 'self'"));
}

#[tokio::test]
async fn a_post_without_the_form_token_is_refused_and_logout_ends_the_session() {
    let p = start("csrf", 100, &[]).await;
    let mut b = Browser::logged_in(&p.base, "admin").await;
    let page = b.post("/logout", &[]).await;
    assert_eq!(page.status, 403, "no form token");
    let page = b.post("/logout", &[("_csrf", "0000")]).await;
    assert_eq!(page.status, 403, "a wrong form token");
    assert_eq!(b.get("/").await.status, 200, "still logged in");

    let page = b.submit("/", "/logout", &[]).await;
    assert_eq!(page.status, 303);
    assert_eq!(page.location(), Some("/login"));
    assert_eq!(b.get("/").await.status, 303, "the session is over");
}

#[tokio::test]
async fn failed_logins_are_limited_per_account() {
    let p = start("limit", 10, &[]).await;
    let mut b = Browser::new(&p.base);
    for _ in 0..iysgate::panel::auth::MAX_FAILURES_PER_ACCOUNT {
        assert_eq!(b.login("uyum", "not the password").await.status, 401);
    }
    let page = b.login("uyum", PASSWORD).await;
    assert_eq!(
        page.status, 429,
        "even the right password waits: {}",
        page.body
    );
    assert!(page.body.contains("Çok fazla hatalı deneme"));
    assert_eq!(
        b.login("admin", PASSWORD).await.status,
        303,
        "other accounts go on"
    );
}

#[tokio::test]
async fn the_language_switch_keeps_english_until_switched_back() {
    let p = start("lang", 10, &[]).await;
    let mut b = Browser::logged_in(&p.base, "admin").await;
    let page = b.get("/lang?to=en&back=/").await;
    assert_eq!(page.status, 303);
    let home = b.get("/").await;
    assert!(home.body.contains("<html lang=\"en\""), "{}", home.body);
    assert!(home.body.contains("Log out"));
    b.get("/lang?to=tr&back=/").await;
    assert!(b.get("/").await.body.contains("Çıkış"));
}
