//! İYS's JSON bodies as the client reads and sends them, with İYS's exact field names.
//! Channel/status/recipient type/source stay strings here; the worker converts them with the
//! `FromStr` impls of `crate::domain::types`.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// One entry of İYS's `errors[]` (§3). `Debug` redacts `value`, which can echo a recipient.
#[derive(Clone, PartialEq, Deserialize, Default)]
pub struct ErrorItem {
    /// `Hxxx`. Some spec examples spell the key `"code:"`; both are accepted.
    #[serde(default, alias = "code:")]
    pub code: String,
    #[serde(default)]
    pub message: String,
    /// Path to the offending field, e.g. `["retailerAccess", 0]`.
    #[serde(default, deserialize_with = "location")]
    pub location: Vec<PathSegment>,
    /// 0-based item index in batch validation errors.
    #[serde(default)]
    pub index: Option<u32>,
    /// The rejected value (may be a recipient: never log it).
    #[serde(default)]
    pub value: Option<serde_json::Value>,
}

impl fmt::Debug for ErrorItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ErrorItem")
            .field("code", &self.code)
            .field("message", &self.message)
            .field("location", &self.location)
            .field("index", &self.index)
            .field("value", &self.value.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// One step of an error `location`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum PathSegment {
    Index(u64),
    Field(String),
}

fn location<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PathSegment>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Loc {
        Many(Vec<PathSegment>),
        One(PathSegment),
    }
    Ok(match Option::<Loc>::deserialize(d)? {
        Some(Loc::Many(v)) => v,
        Some(Loc::One(s)) => vec![s],
        None => Vec::new(),
    })
}

/// `null`, missing and `""` all become `None` (`consentDate` of `IYS_AHS_HAT_KAPATMA` TACIR
/// rows may be empty).
pub(super) fn non_empty<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.filter(|s| !s.is_empty()))
}

/// `true`, `"true"` (a spec example sends the string) and missing.
fn lenient_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum B {
        Bool(bool),
        Text(String),
    }
    Ok(match Option::<B>::deserialize(d)? {
        Some(B::Bool(b)) => Some(b),
        Some(B::Text(t)) => t.trim().parse().ok(),
        None => None,
    })
}

#[expect(
    clippy::ref_option,
    reason = "serde's skip_serializing_if passes &Option"
)]
fn absent(v: &Option<String>) -> bool {
    v.as_deref().is_none_or(str::is_empty)
}

pub(super) struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// One row of a pull page (§5.8).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    /// Empty for some `IYS_AHS_HAT_KAPATMA` TACIR rows.
    #[serde(default, deserialize_with = "non_empty")]
    pub consent_date: Option<String>,
    pub creation_date: String,
    /// `HS_*` or any `IYS_*` (İYS adds new ones).
    pub source: String,
    pub recipient: String,
    pub recipient_type: String,
    pub status: String,
    /// İYS `type`: ARAMA, MESAJ or EPOSTA.
    #[serde(rename = "type")]
    pub channel: String,
    pub transaction_id: String,
    /// Only on `IYS_WEB_YENI` rows.
    #[serde(default, deserialize_with = "non_empty")]
    pub citizen_name: Option<String>,
}

impl fmt::Debug for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Change")
            .field("consent_date", &self.consent_date)
            .field("creation_date", &self.creation_date)
            .field("source", &self.source)
            .field("recipient", &Redacted)
            .field("recipient_type", &self.recipient_type)
            .field("status", &self.status)
            .field("channel", &self.channel)
            .field("transaction_id", &self.transaction_id)
            .field(
                "citizen_name",
                &self.citizen_name.as_ref().map(|_| Redacted),
            )
            .finish()
    }
}

/// A pull page. `after: None` with an empty list is İYS's 204: nothing new, and the
/// caller must KEEP its previous cursor (never store `None` over it).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct ChangesPage {
    #[serde(default, deserialize_with = "non_empty")]
    pub after: Option<String>,
    #[serde(default)]
    pub list: Vec<Change>,
}

/// Body of single add, and one item of a batch (§5.2). Optional fields that are `None`
/// or empty are omitted (İYS rejects empty strings and nulls: H267/H118).
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsentRequest {
    pub recipient: String,
    #[serde(rename = "type")]
    pub channel: String,
    /// Required except on a first TACIR insert.
    #[serde(skip_serializing_if = "absent")]
    pub source: Option<String>,
    pub status: String,
    /// `YYYY-MM-DD HH:mm:ss`, Turkey time. Required except on a first TACIR insert.
    #[serde(skip_serializing_if = "absent")]
    pub consent_date: Option<String>,
    /// İYS defaults to BIREYSEL when omitted.
    #[serde(skip_serializing_if = "absent")]
    pub recipient_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retailer_code: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retailer_access: Option<Vec<u64>>,
}

impl fmt::Debug for ConsentRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsentRequest")
            .field("recipient", &Redacted)
            .field("channel", &self.channel)
            .field("source", &self.source)
            .field("status", &self.status)
            .field("consent_date", &self.consent_date)
            .field("recipient_type", &self.recipient_type)
            .field("retailer_code", &self.retailer_code)
            .field("retailer_access", &self.retailer_access)
            .finish()
    }
}

/// 200 of single add.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AddResult {
    pub transaction_id: String,
    pub creation_date: String,
}

/// 202 of batch add: the list was accepted, NOT written; poll `request_id` (≥ 300 s later).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchAccepted {
    pub request_id: String,
    #[serde(default)]
    pub sub_requests: Vec<SubRequest>,
}

/// One echoed item of an accepted batch.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubRequest {
    #[serde(default, rename = "subRequestId", alias = "subrequestId")]
    pub sub_request_id: Option<String>,
    #[serde(default)]
    pub recipient: String,
    #[serde(default, rename = "type")]
    pub channel: String,
    #[serde(default)]
    pub status: String,
    #[serde(default, deserialize_with = "non_empty")]
    pub source: Option<String>,
    #[serde(default, deserialize_with = "non_empty")]
    pub consent_date: Option<String>,
    #[serde(default, deserialize_with = "non_empty")]
    pub recipient_type: Option<String>,
    #[serde(default, deserialize_with = "non_empty")]
    pub creation_date: Option<String>,
}

impl fmt::Debug for SubRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubRequest")
            .field("sub_request_id", &self.sub_request_id)
            .field("recipient", &Redacted)
            .field("channel", &self.channel)
            .field("status", &self.status)
            .field("source", &self.source)
            .field("consent_date", &self.consent_date)
            .field("recipient_type", &self.recipient_type)
            .field("creation_date", &self.creation_date)
            .finish()
    }
}

/// Status of one batch item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BatchItemStatus {
    Success,
    Failure,
    /// Not processed yet: poll again later.
    Enqueue,
    #[serde(other)]
    Unknown,
}

/// One item of a batch poll (§5.4, v2).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchItemResult {
    /// 0-based position in the submitted array.
    pub index: u32,
    pub status: BatchItemStatus,
    /// The spec spells it both `subRequestId` and `subrequestId`.
    #[serde(default, rename = "subRequestId", alias = "subrequestId")]
    pub sub_request_id: Option<String>,
    #[serde(default)]
    pub request_id: Option<String>,
    #[serde(default)]
    pub transaction_id: Option<String>,
    /// Only for `success`.
    #[serde(default, deserialize_with = "non_empty")]
    pub creation_date: Option<String>,
    /// Only for `failure`: `{code, message}`.
    #[serde(default)]
    pub error: Option<ErrorItem>,
    #[serde(default, deserialize_with = "lenient_bool")]
    pub is_add_consent_v2_service: Option<bool>,
    /// Set when this item repeated one already stored by an earlier request.
    #[serde(default)]
    pub original_request_information: Option<OriginalRequest>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OriginalRequest {
    #[serde(default)]
    pub request_id: Option<String>,
    #[serde(default, rename = "subRequestId", alias = "subrequestId")]
    pub sub_request_id: Option<String>,
}

/// 200 of the single status query (§5.5).
#[derive(Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusRecord {
    pub recipient: String,
    #[serde(default)]
    pub recipient_type: Option<String>,
    #[serde(rename = "type")]
    pub channel: String,
    pub status: String,
    #[serde(default, deserialize_with = "non_empty")]
    pub source: Option<String>,
    #[serde(default, deserialize_with = "non_empty")]
    pub consent_date: Option<String>,
    #[serde(default, deserialize_with = "non_empty")]
    pub creation_date: Option<String>,
    #[serde(default, deserialize_with = "non_empty")]
    pub transaction_id: Option<String>,
    #[serde(default)]
    pub retailer_code: Option<u64>,
    #[serde(default)]
    pub retailer_title: Option<String>,
    #[serde(default)]
    pub retailer_access_count: Option<u32>,
    /// Shape undocumented (DEV example only), kept raw.
    #[serde(default)]
    pub retailer_access: Option<serde_json::Value>,
}

impl fmt::Debug for StatusRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StatusRecord")
            .field("recipient", &Redacted)
            .field("recipient_type", &self.recipient_type)
            .field("channel", &self.channel)
            .field("status", &self.status)
            .field("source", &self.source)
            .field("consent_date", &self.consent_date)
            .field("creation_date", &self.creation_date)
            .field("transaction_id", &self.transaction_id)
            .field("retailer_code", &self.retailer_code)
            .field("retailer_access_count", &self.retailer_access_count)
            .finish_non_exhaustive()
    }
}

/// 200 of the reconciliation query (§5.12).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Agreement {
    /// `queued`, `inprogress`, `completed` or `error`.
    #[serde(default)]
    pub process_status: String,
    /// Lower-case hex SHA-384 of the daily CSV.
    #[serde(default, deserialize_with = "non_empty")]
    pub hash_value: Option<String>,
    #[serde(default, deserialize_with = "non_empty")]
    pub hash_method: Option<String>,
    #[serde(default)]
    pub agreement_status: bool,
}

/// 200 of the agreement confirmation (§5.12).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgreementCaptured {
    #[serde(default)]
    pub agreement_captured: bool,
}

/// `{"consentDate": …}` body of the single status query.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct StatusQuery<'a> {
    pub recipient: &'a str,
    pub recipient_type: &'a str,
    #[serde(rename = "type")]
    pub channel: &'a str,
}
