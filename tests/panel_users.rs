//! The Users and Audit pages over HTTP: an admin adds an account that can then log in, grants
//! and revokes brands, resets a password (which ends that account's sessions); the audit log
//! lists the changes newest first; neither page opens for anyone but an admin.

mod panel_support;

use panel_support::{Browser, PASSWORD, start};

/// The password shown once on a page.
fn shown_password(body: &str) -> String {
    let start = body
        .find("<code class=\"secret\">")
        .expect("the page shows a password once")
        + "<code class=\"secret\">".len();
    body[start..start + body[start..].find('<').unwrap()].to_owned()
}

#[tokio::test]
async fn an_admin_adds_an_account_that_can_then_log_in() {
    let p = start("users-add", 10, &[]).await;
    let mut admin = Browser::logged_in(&p.base, "admin").await;
    let page = admin.get("/users").await;
    assert_eq!(page.status, 200, "{}", page.body);
    for shown in ["uyum", "izleyici", "Hesap ekle", "600001"] {
        assert!(page.body.contains(shown), "{shown}: {}", page.body);
    }

    // A bad name and a short password: the form again, with the errors by the fields.
    let page = admin
        .submit(
            "/users",
            "/users/add",
            &[
                ("name", "Ayşe K"),
                ("role", "viewer"),
                ("password", "short"),
            ],
        )
        .await;
    assert_eq!(page.status, 422, "{}", page.body);
    assert!(page.body.contains("küçük harf, rakam"), "{}", page.body);
    assert!(page.body.contains("En az karakter: 10"), "{}", page.body);
    assert!(p.panel.store.user("Ayşe K").await.unwrap().is_none());

    // A name taken already.
    let page = admin
        .submit(
            "/users",
            "/users/add",
            &[("name", "uyum"), ("role", "viewer"), ("password", "")],
        )
        .await;
    assert_eq!(page.status, 422);
    assert!(
        page.body.contains("Bu adla bir hesap zaten var"),
        "{}",
        page.body
    );

    let page = admin
        .submit(
            "/users",
            "/users/add",
            &[
                ("name", "ayse"),
                ("role", "compliance"),
                ("brand", "600002"),
                ("password", ""),
            ],
        )
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("Hesap eklendi: ayse"), "{}", page.body);
    let password = shown_password(&page.body);
    assert_eq!(password.len(), 16, "a generated password: {password}");
    let user = p.panel.store.user("ayse").await.unwrap().unwrap();
    assert_eq!(user.role, iysgate::panel::store::Role::Compliance);
    assert!(user.may_see(600002) && !user.may_see(600001));

    let mut ayse = Browser::new(&p.base);
    assert_eq!(ayse.login("ayse", "wrong password!").await.status, 401);
    assert_eq!(ayse.login("ayse", &password).await.status, 303);
    let home = ayse.get("/").await;
    assert_eq!(home.status, 200);
    assert!(home.body.contains("ayse (compliance)"), "{}", home.body);

    // Grant and revoke: a redirect to the list with a notice, and the grant in the store.
    let page = admin
        .submit(
            "/users",
            "/users/grant",
            &[("name", "ayse"), ("brand", "600001")],
        )
        .await;
    assert_eq!(page.status, 303);
    let list = admin.get(page.location().unwrap()).await;
    assert!(
        list.body.contains("Marka yetkisi verildi ayse: 600001"),
        "{}",
        list.body
    );
    assert!(
        p.panel
            .store
            .user("ayse")
            .await
            .unwrap()
            .unwrap()
            .may_see(600001)
    );
    let page = admin
        .submit(
            "/users",
            "/users/grant",
            &[("name", "ayse"), ("brand", "600001"), ("revoke", "1")],
        )
        .await;
    assert_eq!(page.status, 303);
    assert!(
        !p.panel
            .store
            .user("ayse")
            .await
            .unwrap()
            .unwrap()
            .may_see(600001)
    );
    // A brand that does not exist is not granted.
    let page = admin
        .submit(
            "/users",
            "/users/grant",
            &[("name", "ayse"), ("brand", "999999")],
        )
        .await;
    assert_eq!(page.status, 400);
}

#[tokio::test]
async fn only_admins_open_users_and_audit() {
    let p = start("users-forbidden", 10, &[]).await;
    for name in ["uyum", "izleyici"] {
        let mut b = Browser::logged_in(&p.base, name).await;
        for path in ["/users", "/audit"] {
            let page = b.get(path).await;
            assert_eq!(page.status, 403, "{name} {path}");
            assert!(page.body.contains("erişim yetkiniz yok"), "{}", page.body);
        }
        // Nor may they change an account, with a valid form token of their own.
        let page = b
            .submit(
                "/",
                "/users/add",
                &[("name", "sneaky"), ("role", "admin"), ("password", "")],
            )
            .await;
        assert_eq!(page.status, 403);
        let page = b.submit("/", "/users/reset", &[("name", "admin")]).await;
        assert_eq!(page.status, 403);
        let home = b.get("/").await;
        assert!(!home.body.contains("href=\"/users\""), "no menu entry");
    }
    assert!(p.panel.store.user("sneaky").await.unwrap().is_none());
    let mut anonymous = Browser::new(&p.base);
    assert_eq!(anonymous.get("/audit").await.status, 303, "to the login");
}

#[tokio::test]
async fn a_reset_ends_the_accounts_sessions_and_the_old_password() {
    let p = start("users-reset", 10, &[]).await;
    let mut admin = Browser::logged_in(&p.base, "admin").await;
    let mut uyum = Browser::logged_in(&p.base, "uyum").await;
    let mut uyum2 = Browser::logged_in(&p.base, "uyum").await;
    assert_eq!(uyum.get("/").await.status, 200);

    let page = admin
        .submit("/users", "/users/reset", &[("name", "uyum")])
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("Parola sıfırlandı"), "{}", page.body);
    let password = shown_password(&page.body);

    for b in [&mut uyum, &mut uyum2] {
        let page = b.get("/").await;
        assert_eq!(page.status, 303, "the session has ended");
        assert!(page.location().unwrap().starts_with("/login"));
    }
    assert_eq!(
        uyum.login("uyum", PASSWORD).await.status,
        401,
        "old password"
    );
    assert_eq!(
        uyum.login("uyum", &password).await.status,
        303,
        "new password"
    );
    assert_eq!(admin.get("/users").await.status, 200, "the admin goes on");
}

#[tokio::test]
async fn the_audit_page_lists_changes_newest_first_and_filters() {
    let p = start("users-audit", 10, &[]).await;
    let mut admin = Browser::logged_in(&p.base, "admin").await;
    admin
        .submit(
            "/users",
            "/users/add",
            &[
                ("name", "mehmet"),
                ("role", "viewer"),
                ("brand", "600001"),
                ("password", "mehmet-parola-1"),
            ],
        )
        .await;
    admin
        .submit(
            "/users",
            "/users/grant",
            &[("name", "mehmet"), ("brand", "600002")],
        )
        .await;
    admin
        .submit("/users", "/users/reset", &[("name", "mehmet")])
        .await;

    let page = admin.get("/audit").await;
    assert_eq!(page.status, 200, "{}", page.body);
    let body = &page.body;
    let at = |s: &str| body.find(s).unwrap_or_else(|| panic!("{s} in {body}"));
    // Newest first: the reset, then the grant, then the add, then the admin's login.
    assert!(at("user.reset") < at("user.grant"));
    assert!(at("user.grant") < at("user.add"));
    assert!(at("user.add") < at("session.login"));
    assert!(body.contains("account mehmet role viewer brands 600001"));
    assert!(!body.contains("mehmet-parola-1"), "no password in the log");
    // Turkey time: the login's minute as Istanbul shows it.
    let now = iysgate::domain::time::to_turkey(chrono::Utc::now());
    assert!(
        body.contains(&now.format("%d.%m.%Y").to_string()),
        "Turkey date: {body}"
    );

    let page = admin.get("/audit?action=user.&brand=600002").await;
    assert!(page.body.contains("user.grant"), "{}", page.body);
    assert!(!page.body.contains("user.add"), "{}", page.body);
    assert!(!page.body.contains("session.login"));
    let page = admin.get("/audit?actor=uyum").await;
    assert!(
        page.body.contains("Bu süzgece uyan kayıt yok"),
        "{}",
        page.body
    );
    assert_eq!(admin.get("/audit?brand=abc").await.status, 400);
}
