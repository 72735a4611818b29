//! JSON wire types of the İYS REST API (version 3.2.0), shared by the mock server and the
//! İYS client. Field names follow İYS's camelCase exactly; see `API-NOTES.md` for sources.
//!
//! Conventions:
//! * optional fields are **omitted** when `None` (İYS rejects `null` and empty strings);
//! * request bodies that İYS validates strictly (`Consent`) use `deny_unknown_fields`, so a
//!   client that deserialises its own request fails loudly. The mock does not deserialise
//!   requests through these types: it validates the raw JSON field by field, which is how an
//!   unknown field becomes `H118` (and a bad enum value `H115`/`H116`/`H117`) instead of a
//!   generic parse error;
//! * response types do **not** deny unknown fields, so a client survives İYS adding fields;
//! * `type`, `status` and `recipientType` are the domain's [`Channel`], [`ConsentStatus`] and
//!   [`RecipientType`] (re-exported here), which serialise as İYS spells them; `source` stays
//!   text, since İYS may add `IYS_*` sources (see `crate::domain::Source`).
//!
//! Over 600 lines on purpose: every İYS request and answer body in one place, so they can be held against the OpenAPI document.

use serde::{Deserialize, Serialize};

pub use crate::domain::{Channel, ConsentStatus, RecipientType};

/// İYS date-time text (`YYYY-MM-DD HH:mm:ss`, Turkey time); see `crate::domain::time`.
pub type IysDateTime = String;

/// The field names İYS accepts in a consent body (anything else is H118).
pub const CONSENT_FIELDS: [&str; 8] = [
    "recipient",
    "type",
    "source",
    "status",
    "consentDate",
    "recipientType",
    "retailerCode",
    "retailerAccess",
];

/// One consent, as sent to single add (v1/v2) and as an item of the batch array.
///
/// `source` and `consentDate` are required except on the **first** `TACIR` record, hence
/// `Option` (İYS answers H463/H462 when a TACIR update omits them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Consent {
    pub recipient: String,
    #[serde(rename = "type")]
    pub consent_type: Channel,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub status: ConsentStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent_date: Option<IysDateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient_type: Option<RecipientType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retailer_code: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retailer_access: Option<Vec<u64>>,
}

/// One element of a `location` path: a field name or a 0-based list index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LocationPart {
    Index(u64),
    Field(String),
}

impl From<&str> for LocationPart {
    fn from(field: &str) -> Self {
        Self::Field(field.to_owned())
    }
}

impl From<usize> for LocationPart {
    fn from(index: usize) -> Self {
        Self::Index(index as u64)
    }
}

/// One entry of the `errors` array.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IysError {
    pub code: String,
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Vec<LocationPart>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
    /// 0-based position in a batch or list; only on batch/list validation errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u64>,
}

/// The error body of every non-token endpoint: `{"errors":[…]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorsBody {
    pub errors: Vec<IysError>,
}

/// `POST /oauth2/token` body (JSON or form). Use [`TokenRequest::password`] or
/// [`TokenRequest::refresh`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRequest {
    pub grant_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
}

impl TokenRequest {
    pub fn password(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            grant_type: "password".to_owned(),
            username: Some(username.into()),
            password: Some(password.into()),
            refresh_token: None,
        }
    }

    pub fn refresh(refresh_token: impl Into<String>) -> Self {
        Self {
            grant_type: "refresh_token".to_owned(),
            username: None,
            password: None,
            refresh_token: Some(refresh_token.into()),
        }
    }
}

/// `POST /oauth2/token` 200 body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub refresh_token: String,
    /// Seconds; İYS gives 7200.
    pub expires_in: u64,
    /// Seconds; İYS gives 14400.
    pub refresh_expires_in: u64,
    /// `"bearer"`.
    pub token_type: String,
}

/// `POST /oauth2/token` 400 body (OAuth style, not `errors[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OAuthError {
    /// `invalid_request` or `invalid_grant`.
    pub error: String,
    pub error_description: String,
}

/// Single add (v1 and v2) 200 body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AddConsentResponse {
    pub transaction_id: String,
    pub creation_date: IysDateTime,
}

/// One echoed item of a batch 202 response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubRequest {
    /// İYS's schema spells it `subrequestId`; examples use `subRequestId`. Accept both.
    #[serde(alias = "subrequestId")]
    pub sub_request_id: String,
    #[serde(rename = "type")]
    pub consent_type: Channel,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub recipient: String,
    pub status: ConsentStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent_date: Option<IysDateTime>,
    pub recipient_type: RecipientType,
    pub creation_date: IysDateTime,
}

/// Batch add 202 body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchResponse {
    pub request_id: String,
    pub sub_requests: Vec<SubRequest>,
}

/// State of one batch item when polled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PollStatus {
    Success,
    Failure,
    Enqueue,
}

/// `{code, message}` of a failed batch item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeMessage {
    pub code: String,
    pub message: String,
}

/// v2 poll: where an identical, already stored consent came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OriginalRequestInformation {
    pub request_id: String,
    #[serde(alias = "subrequestId")]
    pub sub_request_id: String,
}

/// One element of the poll (`GET …/consents/request/{requestId}`) array.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PollItem {
    pub index: u64,
    pub status: PollStatus,
    #[serde(alias = "subrequestId")]
    pub sub_request_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
    /// Only on `success`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_date: Option<IysDateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<CodeMessage>,
    /// v2 only. The SPEC example shows the string `"true"`, the notes a boolean: keep it raw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_add_consent_v2_service: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_request_information: Option<OriginalRequestInformation>,
}

/// Body of single status, history and retailer-access list queries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusRequest {
    pub recipient: String,
    pub recipient_type: RecipientType,
    #[serde(rename = "type")]
    pub consent_type: Channel,
}

/// `POST …/consents/status` 200 body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusResponse {
    pub recipient: String,
    pub recipient_type: RecipientType,
    #[serde(rename = "type")]
    pub consent_type: Channel,
    pub status: ConsentStatus,
    pub source: String,
    /// Absent for a TACIR record first inserted without a date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent_date: Option<IysDateTime>,
    pub creation_date: IysDateTime,
    pub transaction_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retailer_code: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retailer_title: Option<String>,
    #[serde(default)]
    pub retailer_access_count: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retailer_access: Option<Vec<u64>>,
}

/// `POST …/consents/{recipientType}/status/{type}` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MultiStatusRequest {
    pub recipients: Vec<String>,
}

/// `POST …/consents/{recipientType}/status/{type}` 200 body: only the recipients in ONAY.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MultiStatusResponse {
    pub request_id: String,
    pub list: Vec<String>,
}

/// One consent movement, as listed by pull (`changes`) and history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangeItem {
    /// May be absent (or empty) for `IYS_AHS_HAT_KAPATMA` on a TACIR record without a date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent_date: Option<IysDateTime>,
    pub creation_date: IysDateTime,
    pub source: String,
    pub recipient: String,
    pub recipient_type: RecipientType,
    pub status: ConsentStatus,
    #[serde(rename = "type")]
    pub consent_type: Channel,
    pub transaction_id: String,
    /// Only with `IYS_WEB_YENI` on `source=IYS` pulls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub citizen_name: Option<String>,
}

/// `GET …/consents/changes` 200 body. 204 (no body) when there is nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangesPage {
    /// Opaque cursor; pass it back as `after`.
    pub after: String,
    pub list: Vec<ChangeItem>,
}

/// `pagination` of history and other paged lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pagination {
    pub offset: u64,
    pub page_size: u64,
    pub total_count: u64,
}

/// `POST …/consents/history` 200 body, newest consentDate first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryResponse {
    pub list: Vec<ChangeItem>,
    pub pagination: Pagination,
}

/// One push connection (registration body element and unregistration body).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushConnection {
    pub url: String,
    #[serde(rename = "type")]
    pub consent_type: Channel,
    pub username: String,
    pub password: String,
}

/// `POST …/push/registration` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushRegistrationRequest {
    pub connection: Vec<PushConnection>,
}

/// One element of `GET …/push/registration`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PushRegistration {
    pub url: String,
    #[serde(rename = "type")]
    pub consent_type: Channel,
    /// Free Turkish text, e.g. "Bağlantı Oluşturuldu".
    pub status: String,
    pub register_time: IysDateTime,
}

/// `{"message": …}` bodies (push registration and unregistration).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageResponse {
    pub message: String,
}

/// One change as İYS POSTs it to a push URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PushItem {
    pub iys_code: u64,
    pub brand_code: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent_date: Option<IysDateTime>,
    pub creation_date: IysDateTime,
    pub source: String,
    pub recipient: String,
    pub recipient_type: RecipientType,
    pub status: ConsentStatus,
    #[serde(rename = "type")]
    pub consent_type: Channel,
    pub transaction_id: String,
}

/// The body İYS POSTs to a push URL: `{"list":[…]}` (only `IYS_*` sources).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushPayload {
    pub list: Vec<PushItem>,
}

/// Counts of one source in a day's change statistics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceStats {
    /// `HS` or `IYS`.
    pub source: String,
    pub approval: u64,
    pub rejection: u64,
    pub pending: u64,
    pub total: u64,
}

/// Per-type statistics of `GET …/changes/{reportDate}/recipients/{recipientType}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypeStats {
    #[serde(rename = "type")]
    pub consent_type: Channel,
    pub consents: Vec<SourceStats>,
}

/// `GET …/changes/{reportDate}/recipients/{recipientType}` 200 body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangeStatsResponse {
    pub change_stats: Vec<TypeStats>,
}

/// `GET …/agreements/{reportDate}` 200 body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgreementResponse {
    /// `queued`, `inprogress`, `completed` or `error`.
    pub process_status: String,
    /// Lower-case hex SHA-384 of the day's CSV file.
    pub hash_value: String,
    /// `"SHA-384"`.
    pub hash_method: String,
    pub agreement_status: bool,
}

/// `PUT …/agreements/{reportDate}` body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgreementRequest {
    pub agreement_status: bool,
}

/// `PUT …/agreements/{reportDate}` 200 body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgreementCaptured {
    pub agreement_captured: bool,
}

/// One element of `GET /sps/{iysCode}/brands`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Brand {
    pub brand_code: u64,
    pub name: String,
    pub master: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<serde_json::Value>,
}

/// Columns of the daily reconciliation CSV, in order.
pub const RECONCILIATION_CSV_HEADER: &str =
    "creationDate,transactionId,recipient,recipientType,type,status,consentDate,source";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consent_round_trips_in_camel_case_and_omits_none() {
        let consent = Consent {
            recipient: "+905551112233".into(),
            consent_type: Channel::Mesaj,
            source: Some("HS_WEB".into()),
            status: ConsentStatus::Onay,
            consent_date: Some("2026-01-02 10:00:00".into()),
            recipient_type: None,
            retailer_code: None,
            retailer_access: None,
        };
        let json = serde_json::to_value(&consent).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"recipient":"+905551112233","type":"MESAJ","source":"HS_WEB",
                "status":"ONAY","consentDate":"2026-01-02 10:00:00"})
        );
        assert_eq!(serde_json::from_value::<Consent>(json).unwrap(), consent);
        let unknown = serde_json::json!({"recipient":"a@bb.cc","type":"EPOSTA","status":"ONAY",
            "extra":1});
        assert!(serde_json::from_value::<Consent>(unknown).is_err());
    }

    #[test]
    fn errors_and_poll_items_parse_spec_examples() {
        let body: ErrorsBody = serde_json::from_str(
            r#"{"errors":[{"index":0,"code":"H467","location":["consentDate"],
            "message":"x","value":"2020-01-13 13:35:13"},
            {"code":"H180","message":"y","location":["retailerAccess",0],"value":12786531}]}"#,
        )
        .unwrap();
        assert_eq!(body.errors[0].index, Some(0));
        assert_eq!(
            body.errors[1].location,
            Some(vec![
                LocationPart::from("retailerAccess"),
                LocationPart::Index(0)
            ])
        );
        let items: Vec<PollItem> = serde_json::from_str(
            r#"[{"subRequestId":"a","index":0,"status":"failure","error":{"code":"H175","message":"m"}},
            {"index":2,"status":"enqueue","subrequestId":"b"},
            {"requestId":"r","subRequestId":"c","index":1,"transactionId":"t","status":"success",
             "creationDate":"2020-08-21 14:45:24","isAddConsentV2Service":"true",
             "originalRequestInformation":{"requestId":"o","subRequestId":"p"}}]"#,
        )
        .unwrap();
        assert_eq!(items[1].sub_request_id, "b");
        assert_eq!(items[2].status, PollStatus::Success);
    }
}
