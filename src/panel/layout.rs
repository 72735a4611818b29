//! How every page looks: the language (Turkish by default, English by a switch kept in a
//! cookie), the page shell with its navigation, and the small formatting rules shared by the
//! pages (Turkey time, masked recipients, numbers). İYS's own words (ONAY, RET, MESAJ, H-codes)
//! stay as İYS spells them in both languages.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use http::HeaderMap;
use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::auth::Viewer;
use super::store::Role;

/// The language cookie's name.
pub const LANG_COOKIE: &str = "iysgate_lang";

/// The panel's languages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lang {
    #[default]
    Tr,
    En,
}

impl Lang {
    /// The language chosen by the cookie, Turkish without one.
    pub fn of(headers: &HeaderMap) -> Lang {
        let chosen = headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == LANG_COOKIE)
            .map(|(_, value)| value);
        if chosen == Some("en") {
            Lang::En
        } else {
            Lang::Tr
        }
    }

    /// The Turkish or the English text.
    pub fn t<'a>(self, tr: &'a str, en: &'a str) -> &'a str {
        match self {
            Lang::Tr => tr,
            Lang::En => en,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Lang::Tr => "tr",
            Lang::En => "en",
        }
    }
}

/// A time in Turkey time, `02.12.2026 14:05`.
pub fn turkey_time(at: DateTime<Utc>) -> String {
    crate::domain::time::to_turkey(at)
        .format("%d.%m.%Y %H:%M")
        .to_string()
}

/// A Turkey-time date-time as stored (`NaiveDateTime`), `02.12.2026 14:05`.
pub fn turkey_local(at: chrono::NaiveDateTime) -> String {
    at.format("%d.%m.%Y %H:%M").to_string()
}

/// A recipient as the viewer may see it: masked (`+90533*****05`) unless `reveal`.
pub fn recipient(text: &str, reveal: bool) -> String {
    if reveal {
        text.to_owned()
    } else {
        crate::write::reconcile::mask(text)
    }
}

/// `1 234 567`: thousands grouped with a thin space, as Turkish and English readers both read.
pub fn number(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push('\u{202f}');
        }
        out.push(c);
    }
    out
}

/// Percent-encodes a query value.
pub fn url_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The form token field every POST form carries.
pub fn csrf_field(viewer: &Viewer) -> Markup {
    html! { input type="hidden" name="_csrf" value=(viewer.csrf()); }
}

/// The navigation: (path, Turkish, English, who sees it).
const NAV: &[(&str, &str, &str, Option<Role>)] = &[
    ("/", "Özet", "Home", None),
    ("/lookup", "Alıcı sorgula", "Look up", None),
    ("/record", "İzin kaydet", "Record", None),
    ("/uploads", "Yüklemeler", "Uploads", None),
    ("/import", "İçe aktar", "Import", None),
    ("/reports", "Günlük raporlar", "Daily reports", None),
    ("/brands", "Markalar", "Brands", None),
    (
        "/clients",
        "API istemcileri",
        "API clients",
        Some(Role::Admin),
    ),
    ("/users", "Kullanıcılar", "Users", Some(Role::Admin)),
    ("/audit", "Denetim kaydı", "Audit log", Some(Role::Admin)),
];

/// A whole page for a logged-in viewer: `current` is the path of the navigation entry to mark.
pub fn page(lang: Lang, viewer: &Viewer, current: &str, title: &str, body: &Markup) -> Markup {
    let other = match lang {
        Lang::Tr => ("en", "English"),
        Lang::En => ("tr", "Türkçe"),
    };
    html! {
        (DOCTYPE)
        html lang=(lang.code()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · iysgate" }
                link rel="stylesheet" href="/static/panel.css";
                script src="/static/panel.js" defer {}
            }
            body {
                a.skip href="#main" { (lang.t("İçeriğe geç", "Skip to content")) }
                header.top {
                    span.brand { "iysgate" }
                    nav aria-label=(lang.t("Ana menü", "Main menu")) {
                        ul {
                            @for (path, tr, en, only) in NAV {
                                @if only.is_none_or(|r| r == viewer.user.role) {
                                    li {
                                        @if *path == current {
                                            a href=(path) aria-current="page" { (lang.t(tr, en)) }
                                        } @else {
                                            a href=(path) { (lang.t(tr, en)) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    div.who {
                        span { (viewer.user.name) " (" (viewer.user.role.as_str()) ")" }
                        a href={ "/lang?to=" (other.0) } lang=(other.0) { (other.1) }
                        form method="post" action="/logout" {
                            (csrf_field(viewer))
                            button type="submit" { (lang.t("Çıkış", "Log out")) }
                        }
                    }
                }
                main #main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// A page without the navigation (login, errors).
pub fn bare(lang: Lang, title: &str, body: &Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang=(lang.code()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · iysgate" }
                link rel="stylesheet" href="/static/panel.css";
            }
            body.bare {
                main #main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// The page of a refusal or a failure, in both languages (the viewer's may be unknown).
pub fn error_page(tr: &str, en: &str, detail: &str) -> Markup {
    bare(
        Lang::Tr,
        "iysgate",
        &html! {
            p role="alert" { (tr) " " (detail) }
            p lang="en" { (en) " " (detail) }
            p { a href="/" { "Özet / Home" } }
        },
    )
}

/// A notice above a page's content: `ok` green, else red; read out by screen readers.
pub fn notice(ok: bool, text: &str) -> Markup {
    html! {
        @if ok {
            p.notice.ok role="status" { (text) }
        } @else {
            p.notice.bad role="alert" { (text) }
        }
    }
}

/// Raw markup already escaped (the SVG charts build their own).
pub fn raw(text: String) -> Markup {
    PreEscaped(text)
}

pub const CSS: &str = include_str!("static/panel.css");
pub const JS: &str = include_str!("static/panel.js");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_group_thousands_and_recipients_mask() {
        assert_eq!(number(0), "0");
        assert_eq!(number(999), "999");
        assert_eq!(number(1_234_567), "1\u{202f}234\u{202f}567");
        assert_eq!(recipient("+905331234505", false), "+90533*****05");
        assert_eq!(recipient("+905331234505", true), "+905331234505");
        assert_eq!(url_encode("/a b?c=ş"), "/a%20b%3Fc%3D%C5%9F");
    }

    #[test]
    fn the_language_is_turkish_unless_the_cookie_says_english() {
        let mut headers = HeaderMap::new();
        assert_eq!(Lang::of(&headers), Lang::Tr);
        headers.insert(http::header::COOKIE, "iysgate_lang=en".parse().unwrap());
        assert_eq!(Lang::of(&headers), Lang::En);
        assert_eq!(Lang::En.t("Giriş", "Log in"), "Log in");
    }
}
