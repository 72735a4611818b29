//! İYS error codes used by the mock: HTTP status and Turkish message as in the SPEC's
//! "HATA KODLARI" table and path examples, and the error response type.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::iys::wire::{ErrorsBody, IysError, LocationPart};

/// Code used for "single status: no such consent" (404). SPEC does not document the
/// not-found answer; this existing code's text says "recipient not found in the system".
pub const NOT_FOUND_CODE: &str = "H1084";

/// HTTP status and message of a code. Codes the mock never emits fall back to 400 + H085 text.
pub fn describe(code: &str) -> (StatusCode, &'static str) {
    let (status, message) = match code {
        "H014" => (400, "Gönderilen istek JSON formatına uygun olmalıdır."),
        "H015" => (500, "Beklenmedik bir hata oluştu."),
        "H084" => (
            429,
            "Saatte kabul edilen kimlik doğrulama istek limitine ulaşıldı. Lütfen daha sonra \
             tekrar deneyiniz.",
        ),
        "H086" => (
            429,
            "Saatte kabul edilen tekil izin durumu sorgulama istek limitine ulaşıldı. Lütfen \
             daha sonra tekrar deneyiniz.",
        ),
        "H089" => (
            429,
            "Saatte kabul edilen izin geçmişi listeleme istek limitine ulaşıldı. Lütfen daha \
             sonra tekrar deneyiniz.",
        ),
        "H091" => (422, "İzin ekleme sayısı en fazla 1000 olmalıdır."),
        "H092" => (400, "Çoklu izin ekleme isteği geçerli olmalıdır."),
        "H093" => (422, "Kullanıcı adı (username) bulunamadı."),
        "H097" => (400, "İzin sorgulama isteği geçerli olmalıdır."),
        "H098" => (
            400,
            "Günlük izin değişim sorgulama isteği geçerli olmalıdır.",
        ),
        "H110" => (422, "Durum (status) bulunamadı."),
        "H111" => (422, "İzin tipi (type) bulunamadı."),
        "H112" => (422, "İzin tarihi (consentDate) bulunamadı."),
        "H113" | "H506" => (422, "İzin kaynağı (source) bulunamadı."),
        "H114" => (422, "Alıcı (recipient) bulunamadı."),
        "H115" => (422, "Durum (status) için uygun değerler: ONAY, RET"),
        "H116" => (
            422,
            "Alıcı tipi (recipientType) için uygun değerler: BIREYSEL, TACIR",
        ),
        "H117" => (
            422,
            "İzin tipi (type) için uygun değerler: ARAMA, MESAJ, EPOSTA",
        ),
        "H118" => (
            422,
            "kabul edilemedi. İstek gövdesinde bulunabilecek değerler: recipientType, \
             retailerAccess, recipient, retailerCode, source, type, consentDate, status \
             olmalıdır.",
        ),
        "H119" => (
            422,
            "İzin kaynağı (source) için uygun değerler: HS_FIZIKSEL_ORTAM, HS_ISLAK_IMZA, \
             HS_WEB, HS_CAGRI_MERKEZI, HS_SOSYAL_MEDYA, HS_EPOSTA, HS_MESAJ, HS_MOBIL, \
             HS_EORTAM, HS_ETKINLIK, HS_2015, HS_ATM, HS_KARAR",
        ),
        "H120" => (
            422,
            "Alıcı (recipient) kabul edilemedi. Geçerli bir eposta adresi giriniz.",
        ),
        "H121" => (
            422,
            "Alıcı (recipient) için E164 uluslararası([+][country code][area code][local phone \
             number]) formatına uygun bir telefon numarası girilmelidir. (örn. +905992000000)",
        ),
        "H122" => (
            422,
            "Alıcı (recipient) için E164 uluslararası ([+][country code][area code][local \
             phone number]) formatına uygun bir telefon numarası (örn. +905992000000) ya da \
             geçerli bir e-posta adresi girilmelidir.",
        ),
        "H124" => (
            429,
            "Saniyede kabul edilen istek limitine ulaşıldı. Lütfen daha sonra tekrar deneyiniz.",
        ),
        "H126" => (
            422,
            "İzin erişimi olan bayilerin (retailer) liste uzunluğu en fazla 100 olmalıdır.",
        ),
        "H127" => (
            422,
            "Alıcı listesi (recipients) uzunluğu en fazla 1000 olmalıdır.",
        ),
        "H155" => (
            422,
            "İzin kaynağı “1 Mayıs 2015 öncesi” olan izinler için, izin tarihi sadece \
             2015-05-01 00:00:00 olabilir.",
        ),
        "H156" => (
            422,
            "İzinler için 1 Mayıs 2015’den önceki tarihler kabul edilmemektedir.",
        ),
        "H157" => (422, "Geçerli bir tarih girilmelidir."),
        "H158" => (422, "İzin tarihi yyyy-mm-dd hh:mm:ss formatında olmalıdır."),
        "H160" => (
            422,
            "Alıcı için telefon numaraları 15 karakterden uzun olmamalıdır.",
        ),
        "H162" => (
            422,
            "Mevcut tarih ve saatten ileri bir tarih ve saat girilmemelidir.",
        ),
        "H163" => (
            422,
            "İzin erişimi olan bayilerin (retailer) listesi boş olmamalıdır.",
        ),
        "H164" => (
            422,
            "Alıcı listesi (recipients) kabul edilemedi. Liste boş olmamalıdır.",
        ),
        "H166" => (
            422,
            "Alıcı (recipient) kabul edilemedi. Telefon numaraları 15 karakterden uzun olamaz.",
        ),
        "H168" => (422, "Alıcı listesi (recipients) bulunamadı."),
        "H169" => (
            422,
            "İzin erişimi olan bayiler (retailerAccess) bulunamadı.",
        ),
        "H170" => (422, "Alıcı tipi (recipientType) bulunamadı."),
        "H174" => (
            400,
            "İzin durumu (status) güncellemesi için farklı bir durum girilmelidir. İzin durumu: \
             ONAY / RET",
        ),
        "H175" => (
            400,
            "İlk defa kaydedilen bir iznin durum (status) bilgisi RET olmamalıdır.",
        ),
        "H178" => (
            400,
            "Sistemdeki iznin tarihinden önceki tarihli izinlerle güncelleme yapılamaz.",
        ),
        "H182" => (422, "limit değeri geçerli olmalıdır."),
        "H183" => (422, "offset değeri geçerli olmalıdır."),
        "H186" => (422, "Sayfalama (pagination) değeri en fazla 100 olabilir."),
        "H187" => (422, "Limit değerleri sıfır olmamalıdır."),
        "H190" => (422, "iysCode integer bir değer olmalıdır."),
        "H191" => (422, "brandCode integer bir değer olmalıdır."),
        "H192" => (503, "İstek zaman aşımına uğradı."),
        "H193" => (422, "Alıcı (recipient) değeri liste içinde tekrarlanamaz."),
        "H194" => (
            422,
            "İzin listede daha önce tanımlandı. Liste içinde izinler alıcı tipi \
             (recipientType), tip (type) ve alıcı (recipient) değerleri için tekrarlanamaz.",
        ),
        "H198" => (422, "requestId 36 karakterden daha uzun olamaz."),
        "H199" => (422, "requestId sadece harflerden meydana gelemez."),
        "H267" => (400, "retailerCode değeri boş string olmamalıdır!"),
        "H351" => (401, "Eksik veya geçersiz jeton!"),
        "H353" => (403, "Alan, kullanıcı izinleriyle eşleştirilemiyor"),
        "H400" => (422, "requestId sadece sayılardan meydana gelemez."),
        "H408" => (
            422,
            "HS_KARAR kaynağından iletilen izinler için durum bilgisi RET olmalıdır.",
        ),
        "H462" => (
            400,
            "TACIR izinleri güncellenirken izin tarihi (consentDate) verilmelidir",
        ),
        "H463" => (
            400,
            "TACIR izinleri güncellenirken izin kaynağı (source) verilmelidir.",
        ),
        "H464" => (
            422,
            "İzin tipi (type) MESAJ için, alıcı (recipient) telefon formatında olmalıdır.",
        ),
        "H467" => (422, "Üç iş günü öncesinde alınan izinler kaydedilemez."),
        "H478" => (422, "Alıcı listesi (recipients) liste olmalıdır."),
        "H501" => (422, "Tarih formatı yyyy-aa-gg şeklinde olmalıdır."),
        "H502" => (422, "reportDate alanı en fazla 7 gün önce olabilir."),
        "H507" => (422, "limit alanı için karakter üst sınırı 1000 olmalıdır."),
        "H512" => (422, "false kabul edilemedi. İzin verilen değerler: true"),
        "H530" => (422, "Bağlantı oluşturulamadı."),
        "H531" => (422, "Bağlantı linki (url) https ile başlamalıdır."),
        NOT_FOUND_CODE => (404, "Alıcı (recipient) sistemde bulunamadı."),
        _ => (400, "İzin ekleme isteği geçerli olmalıdır."),
    };
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        message,
    )
}

/// A bare error entry with the catalogue message.
pub fn entry(code: &str) -> IysError {
    IysError {
        code: code.to_owned(),
        message: describe(code).1.to_owned(),
        location: None,
        value: None,
        index: None,
    }
}

/// An entry with `location` (one field) and, when given, the offending `value`.
pub fn at(code: &str, field: &str, value: Option<&Value>) -> IysError {
    IysError {
        location: Some(vec![LocationPart::from(field)]),
        value: value.cloned(),
        ..entry(code)
    }
}

/// An error answer: HTTP status plus the `{"errors":[…]}` body.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub errors: Vec<IysError>,
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// One error with the catalogue status and message.
    pub fn code(code: &str) -> Self {
        Self::one(entry(code))
    }

    /// One prepared entry; the status comes from its code.
    pub fn one(error: IysError) -> Self {
        Self {
            status: describe(&error.code).0,
            errors: vec![error],
            retry_after: None,
        }
    }

    /// Several entries under one status (422 validation lists).
    pub fn many(status: StatusCode, errors: Vec<IysError>) -> Self {
        Self {
            status,
            errors,
            retry_after: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            axum::Json(ErrorsBody {
                errors: self.errors,
            }),
        )
            .into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
